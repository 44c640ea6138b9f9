//! Services and the real groups they use: addresses, ports, the endpoints no
//! two services may share, the reals of a service's groups, `need` and `quorum`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use serde_saphyr::{Location, Spanned};

use super::Normaliser;
use crate::config::ConfigError;
use crate::config::lexical::{char_name, forbidden_char, quoted};
use crate::config::model::{
    DEFAULT_FORWARD, DEFAULT_NEED, DEFAULT_PROTOCOL, DEFAULT_WEIGHT, Forward, MAX_DESC_CHARS,
    MAX_ENDPOINTS, Protocol, Real, Service,
};
use crate::config::raw::{RawReal, RawService};

impl Normaliser<'_> {
    pub(super) fn service(
        &self,
        raw: Spanned<RawService>,
        groups: &BTreeMap<String, Vec<Real>>,
        endpoints: &mut HashMap<(IpAddr, u16, Protocol), (String, Location)>,
    ) -> Result<Service, ConfigError> {
        let service_at = raw.referenced;
        let raw = raw.value;
        let name = self.text(&raw.name, "name")?;
        self.label(&name, raw.name.referenced, "the service name")?;
        let desc = match &raw.desc {
            None => String::new(),
            Some(d) => {
                let desc = self.text(d, "desc")?;
                if desc.chars().count() > MAX_DESC_CHARS {
                    return Err(self.err(
                        d.referenced,
                        format!("desc is longer than {MAX_DESC_CHARS} characters"),
                    ));
                }
                if let Some(c) = desc.chars().find(|&c| forbidden_char(c)) {
                    return Err(self.err(
                        d.referenced,
                        format!("desc contains the character {}", char_name(c)),
                    ));
                }
                desc
            }
        };

        let mut addrs: Vec<(IpAddr, Location)> = Vec::new();
        let mut seen_addrs = HashSet::new();
        for item in self.items(&raw.addr, "addr", false)? {
            let addr = self.unicast(item, "service address")?;
            if !seen_addrs.insert(addr) {
                return Err(self.err(item.referenced, format!("address {addr} is listed twice")));
            }
            addrs.push((addr, item.referenced));
        }

        let mut ports: Vec<u16> = Vec::new();
        let mut seen_ports = HashSet::new();
        for item in self.items(&raw.port, "port", false)? {
            let port = self.port(item)?;
            if !seen_ports.insert(port) {
                return Err(self.err(item.referenced, format!("port {port} is listed twice")));
            }
            ports.push(port);
        }

        let protocol = raw.protocol.unwrap_or(DEFAULT_PROTOCOL);
        let forward = self.forward(&raw, &addrs, service_at)?;
        // The data plane's tables are sized at load time; a file it cannot hold
        // must be refused here, not after XDP has been attached. Checked before
        // the endpoints are built, so a huge cross product is never allocated.
        let total = endpoints
            .len()
            .saturating_add(addrs.len().saturating_mul(ports.len()));
        if total > MAX_ENDPOINTS {
            return Err(self.err(
                service_at,
                format!(
                    "with this service there are {total} VIP:port endpoints; the data plane holds at most {MAX_ENDPOINTS}"
                ),
            ));
        }
        for &(addr, at) in &addrs {
            for &port in &ports {
                if let Some((other, other_at)) = endpoints.get(&(addr, port, protocol)) {
                    let endpoint = SocketAddr::new(addr, port);
                    return Err(self.err(
                        at,
                        format!(
                            "{endpoint}/{protocol} is already served by service {} (line {})",
                            quoted(other),
                            other_at.line()
                        ),
                    ));
                }
            }
        }
        for &(addr, _) in &addrs {
            for &port in &ports {
                endpoints.insert((addr, port, protocol), (name.clone(), service_at));
            }
        }

        let mut real_groups: Vec<String> = Vec::new();
        let mut reals: Vec<Real> = Vec::new();
        let mut real_index: HashMap<IpAddr, usize> = HashMap::new();
        let mut seen_groups: HashSet<&str> = HashSet::new();
        for item in self.items(&raw.real, "real", false)? {
            let group_name = &item.value;
            let Some(group) = groups.get(group_name) else {
                // A few names help; thousands would bury the message.
                let known: Vec<&str> = groups.keys().take(10).map(String::as_str).collect();
                let known = match groups.len() {
                    0 => "there are none".to_owned(),
                    n if n > known.len() => {
                        format!(
                            "defined: {}, and {} more",
                            known.join(", "),
                            n - known.len()
                        )
                    }
                    _ => format!("defined: {}", known.join(", ")),
                };
                return Err(self.err(
                    item.referenced,
                    format!("undefined real group {} ({known})", quoted(group_name)),
                ));
            };
            if !seen_groups.insert(group_name.as_str()) {
                return Err(self.err(
                    item.referenced,
                    format!("real group {} is listed twice", quoted(group_name)),
                ));
            }
            for real in group {
                // A real that is its own VIP would receive its own frames back.
                if seen_addrs.contains(&real.addr) {
                    return Err(self.err(
                        item.referenced,
                        format!(
                            "real {} of group {} is also an address of this service",
                            real.addr,
                            quoted(group_name)
                        ),
                    ));
                }
                match real_index.get(&real.addr).map(|&i| &reals[i]) {
                    None => {
                        real_index.insert(real.addr, reals.len());
                        reals.push(real.clone());
                    }
                    Some(seen) if seen == real => {}
                    // One service cannot give a real two weights; silently picking
                    // one would hide the operator's mistake.
                    Some(_) => {
                        return Err(self.err(
                            item.referenced,
                            format!(
                                "real {} is in group {} with a different weight or disabled setting than in an earlier group of this service",
                                real.addr,
                                quoted(group_name)
                            ),
                        ));
                    }
                }
            }
            real_groups.push(group_name.clone());
        }

        // `need` is compared with every real, disabled or not: disabling a real is an
        // operational act and must not turn a valid configuration into an invalid one.
        let need = match &raw.need {
            None => DEFAULT_NEED,
            Some(n) => self.positive(n, "need")?,
        };
        if need > reals.len() {
            let at = raw.need.as_ref().map_or(raw.real.at, |n| n.referenced);
            return Err(self.err(
                at,
                format!(
                    "need is {need} but the service has only {} real{}",
                    reals.len(),
                    if reals.len() == 1 { "" } else { "s" }
                ),
            ));
        }

        // The health monitor's own validation runs against a real of the service
        // (or its VIP when it has none), so what it would refuse at run time is
        // refused here, with a position, by `--check`, start and reload alike.
        let probe_target = reals.first().map_or(addrs[0].0, |r| r.addr);
        // A check is known by its service, real and name (in the status, the logs
        // and over a reload), so names are unique within a service. Two checks
        // left to the default name `TYPE:PORT` collide when they share type and
        // port; they are refused rather than numbered, since a number taken from
        // the list's order would hand one check's state to the other when the two
        // are reordered.
        let mut checks = Vec::with_capacity(raw.checks.len());
        let mut check_names: HashMap<String, Location> = HashMap::new();
        for c in raw.checks {
            let named_at = c.value.name.as_ref().map(|n| n.referenced);
            let at = named_at.unwrap_or(c.referenced);
            let check = self.check(c, &ports, probe_target)?;
            if let Some(first) = check_names.get(&check.name) {
                let what = match named_at {
                    Some(_) => format!("check name {}", quoted(&check.name)),
                    None => format!("the default check name {} (TYPE:PORT)", quoted(&check.name)),
                };
                return Err(self.err(
                    at,
                    format!(
                        "{what} is already used at line {} in service {}; give the checks distinct `name`s",
                        first.line(),
                        quoted(&name)
                    ),
                ));
            }
            check_names.insert(check.name.clone(), at);
            checks.push(check);
        }

        let quorum = match &raw.quorum {
            None => None,
            Some(q) => {
                let k = self.positive(q, "quorum")?;
                if k > checks.len() {
                    return Err(self.err(
                        q.referenced,
                        format!(
                            "quorum is {k} but the service has only {} check{}",
                            checks.len(),
                            if checks.len() == 1 { "" } else { "s" }
                        ),
                    ));
                }
                Some(k)
            }
        };

        Ok(Service {
            name,
            desc,
            addrs: addrs.into_iter().map(|(a, _)| a).collect(),
            ports,
            protocol,
            forward,
            real_groups,
            reals,
            need,
            quorum,
            checks,
        })
    }

    /// `forward` and `tunnel_port`: a method the data plane has, a port
    /// exactly when the method is carried in UDP, and VIP families the
    /// method can carry to one real.
    fn forward(
        &self,
        raw: &RawService,
        addrs: &[(IpAddr, Location)],
        service_at: Location,
    ) -> Result<Forward, ConfigError> {
        let (name, at) = match &raw.forward {
            None => (DEFAULT_FORWARD.name().to_owned(), service_at),
            Some(f) => (self.text(f, "forward")?, f.referenced),
        };
        let port = match &raw.tunnel_port {
            None => None,
            Some(p) => {
                let n = self.int(p, "tunnel_port")?;
                match u16::try_from(n) {
                    Ok(port) if port > 0 => Some((port, p.referenced)),
                    _ => {
                        return Err(self.err(
                            p.referenced,
                            format!("tunnel_port {n} is out of range 1..=65535"),
                        ));
                    }
                }
            }
        };
        let udp = |make: fn(u16) -> Forward| match port {
            Some((port, _)) => Ok(make(port)),
            // The reals' decapsulating listener is configured with a port
            // of the operator's choosing; a default guessed here would
            // silently miss it.
            None => Err(self.err(
                at,
                format!("forward: {name} needs tunnel_port, the UDP port the reals decapsulate on"),
            )),
        };
        let forward = match name.as_str() {
            "l2" => Forward::L2,
            "ipip" => Forward::Ipip,
            "gre" => Forward::Gre,
            "fou" => udp(|port| Forward::Fou { port })?,
            "gue" => udp(|port| Forward::Gue { port })?,
            other => {
                return Err(self.err(
                    at,
                    format!(
                        "unknown forward {}: expected one of {}",
                        quoted(other),
                        Forward::NAMES.join(", ")
                    ),
                ));
            }
        };
        if let Some((_, port_at)) = port
            && forward.port().is_none()
        {
            return Err(self.err(
                port_at,
                format!(
                    "tunnel_port has no effect with forward: {name} (only fou and gue are carried in UDP)"
                ),
            ));
        }
        // A FOU port carries one inner protocol (the reals' `ip fou add
        // port N ipproto 4|41`) and the packet says nothing of its own, so
        // IPv4 and IPv6 VIPs cannot share one. GUE names the protocol in
        // its header; IPIP and GRE in theirs.
        if let Forward::Fou { .. } = forward
            && let Some((v6, v6_at)) = addrs.iter().find(|(a, _)| a.is_ipv6())
            && let Some((v4, _)) = addrs.iter().find(|(a, _)| a.is_ipv4())
        {
            return Err(self.err(
                *v6_at,
                format!(
                    "forward: fou carries one inner family per port, and this service has IPv4 ({v4}) and IPv6 ({v6}) addresses; use gue, or one service per family"
                ),
            ));
        }
        Ok(forward)
    }

    /// With `vlans`, a layer-2 service reaches each real on the VLAN whose
    /// prefix holds it, so every real must have one. A tunnel's VLAN is its
    /// next hop's, which only the routing table knows: checked at run time.
    pub(super) fn service_vlans(
        &self,
        service: &Service,
        vlans: &BTreeMap<u16, Vec<ipnet::IpNet>>,
        real_at: &HashMap<IpAddr, Location>,
    ) -> Result<(), ConfigError> {
        if vlans.is_empty() || service.forward.is_tunnel() {
            return Ok(());
        }
        for r in &service.reals {
            if crate::config::model::vlan_of(vlans, r.addr).is_none() {
                let at = real_at[&r.addr];
                return Err(self.err(
                    at,
                    format!(
                        "real {} of service {} is in no VLAN of `vlans`: forward: l2 reaches a real on the VLAN whose prefix holds it",
                        r.addr,
                        quoted(&service.name)
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn group(
        &self,
        name: &str,
        raw: Vec<Spanned<RawReal>>,
        real_at: &mut HashMap<IpAddr, Location>,
    ) -> Result<Vec<Real>, ConfigError> {
        let mut reals: Vec<Real> = Vec::with_capacity(raw.len());
        let mut seen = HashSet::new();
        for item in raw {
            let addr_at = item.value.addr_at.unwrap_or(item.referenced);
            let addr = self.text(&Spanned::new(item.value.addr, addr_at, addr_at), "addr")?;
            let addr = self.unicast(&Spanned::new(addr, addr_at, addr_at), "real address")?;
            if !seen.insert(addr) {
                return Err(self.err(
                    addr_at,
                    format!("real {addr} is listed twice in group {}", quoted(name)),
                ));
            }
            real_at.entry(addr).or_insert(addr_at);
            let weight = match item.value.weight {
                None => DEFAULT_WEIGHT,
                Some(w) => {
                    let n = self.int(&w, "weight")?;
                    match u16::try_from(n) {
                        Ok(0) => {
                            return Err(self.err(
                                w.referenced,
                                "weight must be at least 1; use `disabled: true` to take a real out of service",
                            ));
                        }
                        Ok(v) => v,
                        Err(_) => {
                            return Err(self.err(
                                w.referenced,
                                format!("weight {n} is out of range 1..=65535"),
                            ));
                        }
                    }
                }
            };
            reals.push(Real {
                addr,
                weight,
                disabled: match &item.value.disabled {
                    None => false,
                    Some(d) => self.boolean(d, "disabled")?,
                },
            });
        }
        Ok(reals)
    }
}
