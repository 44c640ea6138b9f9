//! Health checks: the port, the keys that apply to each kind of check, the HTTP
//! request and the DNS query, timing, and the health monitor's own validation of
//! the result.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde_saphyr::{Location, Spanned};
use vc5_health::spec::{
    DEFAULT_FALL, DEFAULT_INTERVAL, DEFAULT_RISE, DEFAULT_TIMEOUT, MAX_RCODE, parse_qtype,
    parse_rcode,
};
use vc5_health::{
    CheckKind, CheckSpec, DnsCheck, DnsTransport, HttpCheck, Prober, SpecError, TlsVerify,
};

use super::Normaliser;
use crate::config::ConfigError;
use crate::config::lexical::{format_duration, is_dns_name, is_http_host, quoted};
use crate::config::model::{
    Check, DEFAULT_PROBE, MAX_INTERVAL, MIN_INTERVAL, MIN_TIMEOUT, ProbeVia, Protocol,
};
use crate::config::raw::{CheckType, RawCheck};
use crate::config::spanned::Text;

impl Normaliser<'_> {
    pub(super) fn check(
        &self,
        raw: Spanned<RawCheck>,
        ports: &[u16],
        probe_target: IpAddr,
    ) -> Result<Check, ConfigError> {
        let check_at = raw.referenced;
        let raw = raw.value;
        let kind = raw.kind;

        let port = match &raw.port {
            Some(p) => {
                let port = self.port(p)?;
                if !ports.contains(&port) {
                    return Err(self.err(
                        p.referenced,
                        format!(
                            "check port {port} is not one of the service's ports ({})",
                            list_ports(ports)
                        ),
                    ));
                }
                port
            }
            None => match ports {
                [only] => *only,
                _ => {
                    return Err(self.err(
                        check_at,
                        format!(
                            "the check needs a `port`: the service has several ({})",
                            list_ports(ports)
                        ),
                    ));
                }
            },
        };

        // Keys of another kind of check are refused rather than ignored: a `path` on a
        // tcp check means the operator believes something is checked that is not.
        let wrong_kind = |key: &str, at: Location, applies: &str| {
            self.err(
                at,
                format!("`{key}` applies only to {applies} checks, not {kind}"),
            )
        };
        if !kind.is_http() {
            let http_keys = [
                ("path", raw.path.as_ref().map(|v| v.referenced)),
                ("host", raw.host.as_ref().map(|v| v.referenced)),
                ("method", raw.method.as_ref().map(|v| v.referenced)),
                ("expect", raw.expect.as_ref().map(|v| v.at)),
            ];
            if let Some((key, Some(at))) = http_keys.into_iter().find(|(_, at)| at.is_some()) {
                return Err(wrong_kind(key, at, "http and https"));
            }
        }
        if kind != CheckType::Https
            && let Some(v) = &raw.verify
        {
            return Err(wrong_kind("verify", v.referenced, "https"));
        }
        if kind != CheckType::Dns {
            let dns_keys = [
                ("query", raw.query.as_ref().map(|v| v.referenced)),
                ("qtype", raw.qtype.as_ref().map(|v| v.referenced)),
                ("transport", raw.transport.as_ref().map(|v| v.referenced)),
                ("rcode", raw.rcode.as_ref().map(|v| v.referenced)),
            ];
            if let Some((key, Some(at))) = dns_keys.into_iter().find(|(_, at)| at.is_some()) {
                return Err(wrong_kind(key, at, "dns"));
            }
        }

        let name = match &raw.name {
            Some(n) => {
                let name = self.text(n, "name")?;
                self.label(&name, n.referenced, "the check name")?;
                name
            }
            None => format!("{kind}:{port}"),
        };

        let kind = match kind {
            CheckType::Tcp => CheckKind::Tcp,
            CheckType::Http => CheckKind::Http(self.http(&raw, port, probe_target)?),
            CheckType::Https => CheckKind::Https {
                http: self.http(&raw, port, probe_target)?,
                verify: match &raw.verify {
                    None => TlsVerify::default(),
                    Some(v) if self.boolean(v, "verify")? => TlsVerify::WebPki,
                    Some(_) => TlsVerify::None,
                },
            },
            CheckType::Dns => CheckKind::Dns(self.dns(&raw)?),
        };

        let interval = match &raw.interval {
            None => DEFAULT_INTERVAL,
            Some(d) => self.duration(d, "interval", MIN_INTERVAL, MAX_INTERVAL)?,
        };
        let timeout = match &raw.timeout {
            None => DEFAULT_TIMEOUT,
            Some(d) => self.duration(d, "timeout", MIN_TIMEOUT, MAX_INTERVAL)?,
        };
        if timeout >= interval {
            let at = raw
                .timeout
                .as_ref()
                .or(raw.interval.as_ref())
                .map_or(check_at, |d| d.referenced);
            return Err(self.err(
                at,
                format!(
                    "timeout ({}) must be shorter than interval ({})",
                    format_duration(timeout),
                    format_duration(interval)
                ),
            ));
        }
        let rise = match &raw.rise {
            None => DEFAULT_RISE,
            Some(r) => self.count(r, "rise")?,
        };
        let fall = match &raw.fall {
            None => DEFAULT_FALL,
            Some(f) => self.count(f, "fall")?,
        };
        let probe = match &raw.probe {
            None => DEFAULT_PROBE,
            Some(v) => match self.text(v, "probe")?.as_str() {
                "real" => ProbeVia::Real,
                "vip" => ProbeVia::Vip,
                other => {
                    return Err(self.err(
                        v.referenced,
                        format!(
                            "unknown probe {}: expected one of {}",
                            quoted(other),
                            ProbeVia::NAMES.join(", ")
                        ),
                    ));
                }
            },
        };
        let check = Check {
            name,
            port,
            kind,
            interval,
            timeout,
            rise,
            fall,
            probe,
        };
        // Everything the monitor checks when it is given the check: timing, the
        // request, the TLS set-up and the DNS query's encoding.
        if let Err(e) = Prober::new(Arc::new(check.spec(probe_target, None))) {
            return Err(self.err(check_at, format!("the check cannot run: {e}")));
        }
        Ok(check)
    }

    /// The request of an http or https check: vc5-health's defaults, with what
    /// the file gives.
    fn http(
        &self,
        raw: &RawCheck,
        port: u16,
        probe_target: IpAddr,
    ) -> Result<HttpCheck, ConfigError> {
        // Path, host and method go into the request; the health crate says what it
        // can send, and each is asked about alone so the error names the key.
        let http_part = |key: &str,
                         raw: &Option<Spanned<Text>>,
                         part: fn(&mut HttpCheck, String)| {
            let Some(v) = raw else {
                return Ok(None);
            };
            let text = self.text(v, key)?;
            let mut http = HttpCheck::default();
            part(&mut http, text.clone());
            let spec = CheckSpec::new(SocketAddr::new(probe_target, port), CheckKind::Http(http));
            match spec.validate() {
                // The health crate's message names the key and quotes the value.
                Err(SpecError::Http(why)) => Err(self.err(v.referenced, why)),
                Err(e) => Err(self.err(v.referenced, e.to_string())),
                Ok(()) => Ok(Some(text)),
            }
        };
        let mut http = HttpCheck::default();
        if let Some(path) = http_part("path", &raw.path, |h, v| h.path = v)? {
            http.path = path;
        }
        http.host = http_part("host", &raw.host, |h, v| h.host = Some(v))?;
        if let (Some(h), Some(raw_host)) = (&http.host, &raw.host)
            && !is_http_host(h)
        {
            return Err(self.err(
                raw_host.referenced,
                format!(
                    "invalid host {}: expected a domain name or an IP address, optionally with :PORT",
                    quoted(h)
                ),
            ));
        }
        if let Some(method) = http_part("method", &raw.method, |h, v| h.method = v)? {
            http.method = method;
        }
        if let Some(list) = &raw.expect {
            let items = self.items(list, "expect", false)?;
            let mut codes = Vec::new();
            let mut seen_codes = HashSet::new();
            for item in items {
                let code = self.int(item, "expect")?;
                match u16::try_from(code) {
                    Ok(code @ 100..=599) => {
                        if seen_codes.insert(code) {
                            codes.push(code);
                        }
                    }
                    _ => {
                        return Err(self.err(
                            item.referenced,
                            format!("expect {code} is not an HTTP status code (100..=599)"),
                        ));
                    }
                }
            }
            http.expect = codes;
        }
        Ok(http)
    }

    /// The query of a dns check: vc5-health's defaults, with what the file gives.
    fn dns(&self, raw: &RawCheck) -> Result<DnsCheck, ConfigError> {
        let mut dns = DnsCheck::default();
        if let Some(q) = &raw.query {
            let query = self.text(q, "query")?;
            if !is_dns_name(&query) {
                return Err(self.err(
                    q.referenced,
                    format!("query {} is not a domain name", quoted(&query)),
                ));
            }
            dns.query = query;
        }
        if let Some(t) = &raw.qtype {
            let text = self.text(t, "qtype")?;
            dns.qtype = parse_qtype(&text).ok_or_else(|| {
                self.err(
                    t.referenced,
                    format!(
                        "unknown qtype {}: expected a record type such as A, AAAA, NS, SOA or TYPEnnn",
                        quoted(&text)
                    ),
                )
            })?;
        }
        if let Some(t) = &raw.transport {
            dns.transport = match t.value {
                Protocol::Udp => DnsTransport::Udp,
                Protocol::Tcp => DnsTransport::Tcp,
            };
        }
        if let Some(r) = &raw.rcode {
            let text = self.text(r, "rcode")?;
            dns.rcode = parse_rcode(&text).ok_or_else(|| {
                self.err(
                    r.referenced,
                    format!(
                        "unknown rcode {}: expected 0..={MAX_RCODE} or a name such as NOERROR or NXDOMAIN",
                        quoted(&text)
                    ),
                )
            })?;
        }
        Ok(dns)
    }
}

fn list_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
