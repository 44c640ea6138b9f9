//! `rhi`: the BGP settings of route health injection.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_saphyr::Spanned;

use super::Normaliser;
use crate::config::ConfigError;
use crate::config::lexical::quoted;
use crate::config::model::{DEFAULT_HOLD_TIME, Rhi};
use crate::config::raw::RawRhi;

impl Normaliser<'_> {
    pub(super) fn rhi(&self, raw: RawRhi) -> Result<Rhi, ConfigError> {
        let as_number = match &raw.as_number {
            None => 0,
            Some(a) => self.u32(a, "as_number")?,
        };
        // Sets beside the lists keep every duplicate check linear: a list can be
        // as long as the node budget allows.
        let mut peers: Vec<IpAddr> = Vec::new();
        let mut seen_peers = HashSet::new();
        if let Some(list) = &raw.peers {
            let items = self.items(list, "peers", true)?;
            for item in items {
                let peer = self.unicast(item, "peer address")?;
                if !seen_peers.insert(peer) {
                    return Err(self.err(item.referenced, format!("peer {peer} is listed twice")));
                }
                peers.push(peer);
            }
            if as_number == 0
                && let Some(first) = items.first()
            {
                let at = raw
                    .as_number
                    .as_ref()
                    .map_or(first.referenced, |a| a.referenced);
                return Err(self.err(at, "rhi.peers need a non-zero rhi.as_number"));
            }
        }
        let hold_time = match &raw.hold_time {
            None => DEFAULT_HOLD_TIME,
            Some(h) => {
                let t = self.int(h, "hold_time")?;
                match u16::try_from(t) {
                    Ok(t) if t == 0 || t >= 3 => t,
                    _ => {
                        return Err(self.err(
                            h.referenced,
                            format!(
                                "hold_time {t} is invalid: it must be 0 or between 3 and 65535 seconds"
                            ),
                        ));
                    }
                }
            }
        };
        let communities = match &raw.communities {
            None => Vec::new(),
            Some(list) => self
                .items(list, "communities", true)?
                .iter()
                .map(|c| self.community(c))
                .collect::<Result<_, _>>()?,
        };
        let next_hop6 = match &raw.next_hop6 {
            None => None,
            Some(n) => match self.unicast(
                &Spanned::new(self.text(n, "next_hop6")?, n.referenced, n.defined),
                "next_hop6",
            )? {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(v4) => {
                    return Err(self.err(
                        n.referenced,
                        format!("next_hop6 {v4} is not an IPv6 address"),
                    ));
                }
            },
        };
        Ok(Rhi {
            as_number,
            peers,
            hold_time,
            communities,
            med: raw.med.as_ref().map(|m| self.u32(m, "med")).transpose()?,
            local_pref: raw
                .local_pref
                .as_ref()
                .map(|l| self.u32(l, "local_pref"))
                .transpose()?,
            next_hop6,
        })
    }

    fn community(&self, raw: &Spanned<String>) -> Result<(u16, u16), ConfigError> {
        let parsed = raw
            .value
            .split_once(':')
            .and_then(|(a, v)| Some((a.trim().parse().ok()?, v.trim().parse().ok()?)));
        parsed.ok_or_else(|| {
            self.err(
                raw.referenced,
                format!(
                    "invalid community {}: expected ASN:VALUE with both 0..=65535, e.g. \"65000:100\"",
                    quoted(&raw.value)
                ),
            )
        })
    }
}
