//! The second pass: validation and normalisation, from the raw structs of the
//! first to the model. Each part of the file has its own file here: the top level
//! (flow sync, the flow-table limit, the services' names and the data plane's
//! limits) in this one, `rhi`, `services` (with the real groups), `checks`, and
//! `values`, the readers of a single node that the others share.

mod checks;
mod rhi;
mod services;
mod values;
mod vlans;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde_saphyr::{Location, Spanned};

use super::ConfigError;
use super::lexical::{char_name, forbidden_char, quoted};
use super::model::{
    Config, DEFAULT_FLOW_INSERT_LIMIT, DEFAULT_FLOW_SYNC_RATE, DEFAULT_FLOW_SYNC_RESYNC_RATE,
    DEFAULT_FLOW_SYNC_WAIT, MAX_BACKENDS, MAX_FLOW_INSERT_LIMIT, MAX_FLOW_SYNC_WAIT,
    MIN_FLOW_SYNC_WAIT, Protocol,
};
use super::raw::RawConfig;
use super::spanned::{Int, Text};

/// The second pass over one file; `file` names it in errors.
pub(super) struct Normaliser<'a> {
    pub(super) file: &'a str,
}

impl Normaliser<'_> {
    fn err(&self, at: Location, message: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.file, at, message)
    }

    pub(super) fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let multicast = raw
            .multicast
            .as_ref()
            .map(|m| self.multicast(m))
            .transpose()?;
        let flow_sync_key = match &raw.flow_sync_key {
            Some(key) => {
                let path = self.text(key, "flow_sync_key")?;
                if path.is_empty() {
                    return Err(self.err(key.referenced, "flow_sync_key is empty"));
                }
                if let Some(c) = path.chars().find(|&c| forbidden_char(c)) {
                    return Err(self.err(
                        key.referenced,
                        format!("flow_sync_key contains the character {}", char_name(c)),
                    ));
                }
                Some(PathBuf::from(path))
            }
            None => None,
        };
        if let Some(key) = &raw.flow_sync_key
            && raw.multicast.is_none()
        {
            return Err(self.err(
                key.referenced,
                "flow_sync_key needs multicast (the flow-sync group, e.g. 224.0.0.1:9999)",
            ));
        }
        let flow_sync = multicast.is_some() && flow_sync_key.is_some();
        // A setting that would do nothing is a mistake to point out, as an
        // unknown key is.
        let unused = |at: Location, key: &str| {
            self.err(
                at,
                format!("{key} has no effect: flow sync needs both multicast and flow_sync_key"),
            )
        };
        let flow_sync_wait = match &raw.flow_sync_wait {
            None => DEFAULT_FLOW_SYNC_WAIT,
            Some(w) if !flow_sync => return Err(unused(w.referenced, "flow_sync_wait")),
            Some(w) => {
                self.duration(w, "flow_sync_wait", MIN_FLOW_SYNC_WAIT, MAX_FLOW_SYNC_WAIT)?
            }
        };
        let rate = |raw: &Option<Spanned<Int>>, key: &str, default: u32| match raw {
            None => Ok(default),
            Some(r) if !flow_sync => Err(unused(r.referenced, key)),
            Some(r) => self.rate(r, key),
        };
        let flow_sync_rate = rate(
            &raw.flow_sync_rate,
            "flow_sync_rate",
            DEFAULT_FLOW_SYNC_RATE,
        )?;
        let flow_sync_resync_rate = rate(
            &raw.flow_sync_resync_rate,
            "flow_sync_resync_rate",
            DEFAULT_FLOW_SYNC_RESYNC_RATE,
        )?;
        let flow_insert_limit = match &raw.flow_insert_limit {
            None => DEFAULT_FLOW_INSERT_LIMIT,
            Some(r) => {
                let n = self.int(r, "flow_insert_limit")?;
                match u32::try_from(n) {
                    Ok(n) if n <= MAX_FLOW_INSERT_LIMIT => n,
                    _ => {
                        return Err(self.err(
                            r.referenced,
                            format!(
                                "flow_insert_limit must be between 0 (no bound) and {MAX_FLOW_INSERT_LIMIT} flows per second, not {n}"
                            ),
                        ));
                    }
                }
            }
        };
        let rhi = raw
            .rhi
            .map(|r| self.rhi(r))
            .transpose()?
            .unwrap_or_default();
        let vlans = raw
            .vlans
            .map(|v| self.vlans(v))
            .transpose()?
            .unwrap_or_default();
        let mut reals = BTreeMap::new();
        // Where each real is first written, for errors about it in a service.
        let mut real_at: HashMap<IpAddr, Location> = HashMap::new();
        for (name, group) in raw.reals.0 {
            self.label(&name.value, name.referenced, "a real group name")?;
            let group = self.group(&name.value, group, &mut real_at)?;
            reals.insert(name.value, group);
        }
        let mut services = Vec::with_capacity(raw.services.len());
        let mut names: HashMap<String, Location> = HashMap::new();
        let mut endpoints: HashMap<(IpAddr, u16, Protocol), (String, Location)> = HashMap::new();
        let mut pairs = 0usize;
        for raw_service in raw.services {
            let name_at = raw_service.value.name.referenced;
            let name = self.text(&raw_service.value.name, "name")?;
            if let Some(first) = names.get(&name) {
                return Err(self.err(
                    name_at,
                    format!(
                        "service name {} is already used at line {}",
                        quoted(&name),
                        first.line()
                    ),
                ));
            }
            names.insert(name, name_at);
            let service_at = raw_service.referenced;
            let service = self.service(raw_service, &reals, &mut endpoints)?;
            self.service_vlans(&service, &vlans, &real_at)?;
            pairs = pairs.saturating_add(service.endpoints().len() * service.reals.len());
            if pairs > MAX_BACKENDS {
                return Err(self.err(
                    service_at,
                    format!(
                        "with this service there are {pairs} (endpoint, real) pairs; the data plane holds at most {MAX_BACKENDS}"
                    ),
                ));
            }
            services.push(service);
        }
        Ok(Config {
            multicast,
            flow_sync_key,
            flow_sync_wait,
            flow_sync_rate,
            flow_sync_resync_rate,
            flow_insert_limit,
            rhi,
            services,
            reals,
            vlans,
        })
    }

    fn multicast(&self, raw: &Spanned<Text>) -> Result<SocketAddr, ConfigError> {
        let at = raw.referenced;
        let text = self.text(raw, "multicast")?;
        let addr: SocketAddr = text.parse().map_err(|_| {
            self.err(
                at,
                format!(
                    "invalid multicast address {}: expected IP:PORT, e.g. 224.0.0.1:9999 or \"[ff02::1234]:9999\" (an IPv6 group quoted, or YAML reads a list)",
                    quoted(&text)
                ),
            )
        })?;
        if !addr.ip().is_multicast() {
            return Err(self.err(at, format!("{} is not a multicast address", addr.ip())));
        }
        if addr.port() == 0 {
            return Err(self.err(at, "the multicast port must not be 0"));
        }
        Ok(addr)
    }
}
