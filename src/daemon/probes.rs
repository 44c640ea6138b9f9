//! Health probes through the VIP: vc5d's probe namespace, and which NAT
//! address names which (service, VIP, real) pair.
//!
//! A check with `probe: vip` runs in a network namespace that vc5d makes
//! at start: a thread of vc5d lives in it (`vc5_health::Netns`), so it
//! lasts exactly as long as vc5d. A veth pair joins it to this host: the
//! host end runs the data plane's `vc5_probe` (generic XDP), the namespace
//! end `vc5_pass` (native, so that the main program can redirect replies
//! into it). Inside, each pair has a NAT address
//! (`vc5_xdp::dataplane::nat_addr`), routed to the veth; `vc5_probe` turns
//! a probe to it into a client's packet to the VIP, sent to the real the
//! way the real's clients' packets go (see `vc5-xdp/bpf/probe.h`).
//!
//! Lifetime: nothing of it is bind-mounted or pinned, so when vc5d exits,
//! however it exits, the kernel deletes the namespace and the veth pair
//! with it. A start after a crash first deletes a leftover of its own name
//! (the kernel's clean-up of a dead namespace is asynchronous), then makes
//! a fresh one. The names are derived from `--bpffs`, so two vc5d
//! instances of one host (each with its own data plane) do not clash.

use super::control::Plane;
use super::derive::{NextHop, reach};
use crate::config::{Config, ProbeVia};
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use tracing::{info, warn};
use vc5_health::Netns;
use vc5_xdp::dataplane::{
    NAT4_PREFIX, NAT6_PREFIX, PROBE_NS4, PROBE_NS6, ProbeConfig, ProbeSpec, nat_addr,
};
use vc5_xdp::{DataPlane, netlink};

/// A (service, VIP, real) pair that checks probe through the VIP.
type Pair = (String, IpAddr, IpAddr);

/// The probe namespace and the NAT addresses of the pairs.
pub(super) struct Probes {
    ns: Netns,
    /// The veth's host end (deleted on drop; its peer goes with it).
    host: String,
    config: ProbeConfig,
    pairs: Pairs,
}

/// Which NAT address index each pair has.
#[derive(Debug, Default)]
pub(super) struct Pairs(BTreeMap<Pair, u16>);

impl Pairs {
    /// Gives every pair of `cfg` that a check probes through a NAT
    /// address: pairs that stay keep theirs (so their checks go on
    /// unchanged), new ones take the lowest free, gone ones free theirs.
    pub(super) fn assign(&mut self, cfg: &Config) {
        let want: BTreeSet<Pair> = cfg
            .services
            .iter()
            .filter(|s| s.checks.iter().any(|c| c.probe == ProbeVia::Vip))
            .flat_map(|s| {
                s.addrs
                    .iter()
                    .flat_map(move |v| s.reals.iter().map(move |r| (s.name.clone(), *v, r.addr)))
            })
            .collect();
        self.0.retain(|p, _| want.contains(p));
        let used: BTreeSet<u16> = self.0.values().copied().collect();
        let mut free = (1..=u16::MAX).filter(|i| !used.contains(i));
        for p in want {
            if let std::collections::btree_map::Entry::Vacant(e) = self.0.entry(p) {
                match free.next() {
                    Some(i) => {
                        e.insert(i);
                    }
                    None => {
                        let (s, v, r) = e.key();
                        warn!(service = %s, vip = %v, real = %r, "no NAT address left for a probe through the VIP");
                    }
                }
            }
        }
    }

    pub(super) fn get(&self, service: &str, vip: IpAddr, real: IpAddr) -> Option<u16> {
        self.0.get(&(service.to_string(), vip, real)).copied()
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// The veth's names for the data plane pinned in `bpffs`: `vc5p` (host
/// end) and `vc5q` (namespace end) and 8 hex digits of a hash of the path
/// (interface names have 15 bytes).
pub(super) fn veth_names(bpffs: &Path) -> (String, String) {
    // FNV-1a: stable across builds and runs, unlike std's hasher.
    let h = bpffs
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0x811c9dc5u32, |h, b| {
            (h ^ u32::from(*b)).wrapping_mul(0x01000193)
        });
    (format!("vc5p{h:08x}"), format!("vc5q{h:08x}"))
}

/// Whether any check of `cfg` probes through the VIP.
pub(super) fn wanted(cfg: &Config) -> bool {
    cfg.services
        .iter()
        .any(|s| s.checks.iter().any(|c| c.probe == ProbeVia::Vip))
}

impl Probes {
    /// Makes the namespace and the veth pair, attaches the programs, and
    /// points the data plane at them. `trunk` is where probes to reals on a
    /// VLAN trunk leave (the first `--interface`); `address` is
    /// `--address`, the source of probes to VIPs of its family.
    pub(super) fn start(
        dp: &mut DataPlane,
        bpffs: &Path,
        trunk: u32,
        address: Option<IpAddr>,
        cfg: &Config,
    ) -> Result<Probes> {
        let (host, peer) = veth_names(bpffs);
        let ns = Netns::new().context("creating the probe namespace")?;
        // A leftover of a vc5d that died: its namespace may not be gone yet.
        for name in [&host, &peer] {
            if netlink::delete_link(name).with_context(|| format!("deleting a stale {name}"))? {
                warn!(interface = %name, "deleted a probe veth a previous vc5d left");
            }
        }
        netlink::create_veth(&host, &peer, ns.host_ns())
            .with_context(|| format!("creating the probe veth {host}"))?;
        let mut probes = Probes {
            ns,
            host: host.clone(),
            config: ProbeConfig {
                host_ifindex: 0,
                host_mac: [0; 6],
                ns_mac: [0; 6],
                trunk,
                src4: None,
                src6: None,
            },
            pairs: Pairs::default(),
        };
        // From here on a failure deletes the pair (Drop).
        let h = netlink::interface_by_name(&host)?;
        let p = netlink::interface_by_name(&peer)?;
        dp.attach_pass(p.index)
            .context("attaching vc5_pass to the probe veth")?;
        netlink::set_link_netns(&peer, probes.ns.ns_fd())
            .context("moving the probe veth into its namespace")?;
        let peer_in = peer.clone();
        let ns_side = probes
            .ns
            .run(move || -> Result<netlink::Interface> {
                let peer = peer_in;
                netlink::set_link(&peer, true, Some(true))?;
                // The namespace's stack must checksum its probes in full:
                // vc5_probe updates checksums, it does not complete them.
                netlink::set_tx_checksum(&peer, false)?;
                let i = netlink::interface_by_name(&peer)?;
                netlink::add_address(i.index, PROBE_NS4.into(), 32)?;
                netlink::add_address(i.index, PROBE_NS6.into(), 128)?;
                netlink::add_route(NAT4_PREFIX.0.into(), NAT4_PREFIX.1, i.index)?;
                netlink::add_route(NAT6_PREFIX.0.into(), NAT6_PREFIX.1, i.index)?;
                Ok(i)
            })
            .context("the probe namespace's thread")?
            .context("setting up the probe namespace")?;
        netlink::set_link(&host, true, None)?;
        dp.attach_probe(h.index)
            .context("attaching vc5_probe to the probe veth")?;
        probes.config.host_ifindex = h.index;
        probes.config.host_mac = h.mac;
        probes.config.ns_mac = ns_side.mac;
        probes.set_sources(address, cfg);
        dp.set_probe_config(Some(&probes.config))?;
        probes.assign(cfg);
        info!(veth = %host, "probe namespace ready");
        Ok(probes)
    }

    /// The source of probes to VIPs of each family: `--address` for its
    /// own, and for the other the address the kernel would send from to
    /// the first real, else the first VIP, of that family, if any.
    fn set_sources(&mut self, address: Option<IpAddr>, cfg: &Config) {
        let pick = |v6: bool| -> Option<IpAddr> {
            if let Some(a) = address.filter(|a| a.is_ipv6() == v6) {
                return Some(a);
            }
            // The reals of that family first (the replies' senders), then
            // its VIPs (a layer-2 real of the other family still answers
            // the VIP's family on the LAN).
            let reals = cfg
                .services
                .iter()
                .flat_map(|s| s.reals.iter().map(|r| r.addr));
            let vips = cfg.services.iter().flat_map(|s| s.addrs.iter().copied());
            reals
                .chain(vips)
                .filter(|a| a.is_ipv6() == v6)
                .find_map(|a| netlink::route_to(a).ok().and_then(|r| r.prefsrc))
        };
        self.config.src4 = match pick(false) {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        };
        self.config.src6 = match pick(true) {
            Some(IpAddr::V6(a)) => Some(a),
            _ => None,
        };
    }

    /// Sources re-picked for a new configuration (its reals may bring the
    /// first of a family).
    pub(super) fn reconfigure<P: Plane>(
        &mut self,
        dp: &mut P,
        address: Option<IpAddr>,
        cfg: &Config,
    ) -> Result<()> {
        let before = self.config;
        self.set_sources(address, cfg);
        if self.config != before {
            dp.set_probe_config(Some(&self.config))?;
        }
        Ok(())
    }

    /// NAT addresses for the pairs of `cfg` (see [`Pairs::assign`]).
    pub(super) fn assign(&mut self, cfg: &Config) {
        self.pairs.assign(cfg);
    }

    /// The NAT address the checks of a pair connect to.
    pub(super) fn target(&self, service: &str, vip: IpAddr, real: IpAddr) -> Option<IpAddr> {
        self.pairs
            .get(service, vip, real)
            .map(|i| nat_addr(i, vip.is_ipv6()))
    }

    pub(super) fn netns(&self) -> &Netns {
        &self.ns
    }

    /// What the data plane's `probes` map must hold: each pair's VIP and
    /// the way to its real from `hops` (the resolver's), whatever the
    /// real's health: the way its clients' packets would take.
    pub(super) fn specs(
        &self,
        cfg: &Config,
        hops: &HashMap<IpAddr, Option<NextHop>>,
    ) -> Vec<ProbeSpec> {
        let mut out = Vec::with_capacity(self.pairs.len());
        for s in &cfg.services {
            for r in &s.reals {
                let hop = hops.get(&r.addr).copied().flatten();
                let l2 = reach(cfg, s.forward, r.addr, hop.as_ref()).ok();
                for vip in &s.addrs {
                    if let Some(index) = self.pairs.get(&s.name, *vip, r.addr) {
                        out.push(ProbeSpec {
                            index,
                            vip: *vip,
                            port: s.ports.first().copied().unwrap_or(0),
                            real: r.addr,
                            forward: s.forward,
                            l2,
                        });
                    }
                }
            }
        }
        out
    }

    /// Detaches the data plane from the namespace before vc5d goes.
    pub(super) fn stop(self, dp: &mut DataPlane) {
        if let Err(e) = dp.set_probe_config(None) {
            warn!("clearing the probe configuration: {e}");
        }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        // The namespace goes with its thread; deleting the host end now
        // spares waiting for the kernel to notice.
        if let Err(e) = netlink::delete_link(&self.host) {
            warn!(veth = %self.host, "deleting the probe veth: {e}");
        }
    }
}

/// Refuses a configuration with checks through the VIP when there is no
/// probe namespace (`why` it could not be made).
pub(super) fn require(cfg: &Config, probes: Option<&Probes>, why: Option<&str>) -> Result<()> {
    if probes.is_none() && wanted(cfg) {
        bail!(
            "checks with `probe: vip` need vc5d's probe namespace, which could not be set up: {}",
            why.unwrap_or("not started")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn cfg(services: &str) -> Config {
        config::parse(services, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    const TWO: &str = "services:\n\
        \x20 - {name: a, addr: [192.0.2.1, \"2001:db8::1\"], port: 80, real: r, checks: [{type: tcp, probe: vip}]}\n\
        \x20 - {name: b, addr: 192.0.2.2, port: 80, real: r, checks: [{type: tcp}]}\n\
        reals:\n  r: [10.0.0.1, 10.0.0.2]\n";

    /// Pairs are (service, VIP, real) of services with a check through the
    /// VIP; those that stay over a reload keep their index, new ones take
    /// the lowest free, gone ones free theirs.
    #[test]
    fn pairs_keep_their_addresses_over_reloads() {
        let mut p = Pairs::default();
        p.assign(&cfg(TWO));
        assert_eq!(p.len(), 4, "two VIPs of a, two reals; none of b");
        let a = |p: &Pairs, vip: &str, real: &str| {
            p.get("a", vip.parse().unwrap(), real.parse().unwrap())
        };
        let before = a(&p, "2001:db8::1", "10.0.0.2").unwrap();
        let gone = a(&p, "192.0.2.1", "10.0.0.1").unwrap();
        let indexes: BTreeSet<u16> = p.0.values().copied().collect();
        assert_eq!(indexes, BTreeSet::from([1, 2, 3, 4]));
        // 10.0.0.1 leaves, 10.0.0.3 comes: the others keep theirs, and the
        // newcomers take the freed indexes.
        p.assign(&cfg(
            &TWO.replace("[10.0.0.1, 10.0.0.2]", "[10.0.0.2, 10.0.0.3]")
        ));
        assert_eq!(p.len(), 4);
        assert_eq!(a(&p, "2001:db8::1", "10.0.0.2"), Some(before));
        assert_eq!(a(&p, "192.0.2.1", "10.0.0.1"), None);
        let new: BTreeSet<u16> = [
            a(&p, "192.0.2.1", "10.0.0.3"),
            a(&p, "2001:db8::1", "10.0.0.3"),
        ]
        .into_iter()
        .flatten()
        .collect();
        assert!(new.contains(&gone), "a freed index is reused: {new:?}");
        // No check through the VIP: no pairs.
        p.assign(&cfg(&TWO.replace(", probe: vip", "")));
        assert_eq!(p.len(), 0);
        assert!(!wanted(&cfg(&TWO.replace(", probe: vip", ""))));
        assert!(wanted(&cfg(TWO)));
    }

    /// Without a namespace, a configuration that needs one is refused, with
    /// why there is none; one that does not is served.
    #[test]
    fn checks_through_the_vip_need_the_namespace() {
        let e = require(&cfg(TWO), None, Some("EPERM")).unwrap_err();
        assert!(
            format!("{e:#}").contains("probe: vip") && format!("{e:#}").contains("EPERM"),
            "{e:#}"
        );
        require(&cfg(&TWO.replace(", probe: vip", "")), None, Some("EPERM")).unwrap();
    }

    #[test]
    fn veth_names_fit_and_follow_the_bpffs_dir() {
        let (h, p) = veth_names(Path::new("/sys/fs/bpf/vc5"));
        assert!(h.len() < 16 && p.len() < 16 && h.starts_with("vc5p") && p.starts_with("vc5q"));
        assert_eq!(h[4..], p[4..]);
        assert_eq!(veth_names(Path::new("/sys/fs/bpf/vc5")).0, h, "stable");
        assert_ne!(veth_names(Path::new("/sys/fs/bpf/other")).0, h);
    }
}
