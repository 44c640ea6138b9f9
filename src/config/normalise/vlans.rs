//! `vlans`: 802.1Q VLAN IDs and the prefixes of their subnets.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::Normaliser;
use crate::config::ConfigError;
use crate::config::lexical::quoted;
use crate::config::raw::RawVlans;

/// The highest VLAN ID (4095 is reserved, 0 means "no VLAN").
const MAX_VLAN: i64 = vc5_xdp::dataplane::VLAN_MAX as i64;

impl Normaliser<'_> {
    /// Each VLAN ID once, 1 to 4094, with at least one prefix; prefixes
    /// written as networks (no host bits) and overlapping no other VLAN's,
    /// so an address names at most one VLAN.
    pub(super) fn vlans(
        &self,
        raw: Spanned<RawVlans>,
    ) -> Result<BTreeMap<u16, Vec<IpNet>>, ConfigError> {
        let mut vlans: BTreeMap<u16, Vec<IpNet>> = BTreeMap::new();
        let mut seen: Vec<(IpNet, u16)> = Vec::new();
        for (id, prefixes) in raw.value.0 {
            let n = self.int(&id, "a VLAN ID")?;
            let vid = match u16::try_from(n) {
                Ok(v) if (1..=MAX_VLAN).contains(&n) => v,
                _ => {
                    return Err(self.err(
                        id.referenced,
                        format!("VLAN ID {n} is out of range 1..={MAX_VLAN}"),
                    ));
                }
            };
            if vlans.contains_key(&vid) {
                return Err(self.err(id.referenced, format!("VLAN {vid} is listed twice")));
            }
            let mut nets = Vec::new();
            for item in self.items(&prefixes, &format!("VLAN {vid}"), false)? {
                let text = item.value.trim();
                let net: IpNet = text.parse().map_err(|_| {
                    self.err(
                        item.referenced,
                        format!(
                            "invalid prefix {} for VLAN {vid}: expected ADDRESS/LENGTH, e.g. 10.1.10.0/24 or \"2001:db8:10::/64\" (quoted: YAML reads a bare IPv6 prefix oddly)",
                            quoted(text)
                        ),
                    )
                })?;
                if net.trunc() != net {
                    return Err(self.err(
                        item.referenced,
                        format!(
                            "prefix {net} of VLAN {vid} has host bits set: the network is {}",
                            net.trunc()
                        ),
                    ));
                }
                if let Some((other, other_vid)) = seen
                    .iter()
                    .find(|(o, _)| o.contains(&net) || net.contains(o))
                {
                    return Err(self.err(
                        item.referenced,
                        format!(
                            "prefix {net} of VLAN {vid} overlaps {other} of VLAN {other_vid}: an address must name one VLAN"
                        ),
                    ));
                }
                seen.push((net, vid));
                nets.push(net);
            }
            vlans.insert(vid, nets);
        }
        Ok(vlans)
    }
}
