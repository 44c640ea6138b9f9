//! Health probes through the VIP, the data plane's side (`bpf/probe.h`).
//!
//! vc5d's checks "via the VIP" run in a network namespace of vc5d's own,
//! joined to this host by a veth pair. Inside it each (VIP, real) pair has
//! a NAT address ([`nat_addr`]); the program `vc5_probe` on the veth's host
//! end turns a probe to it into a client's packet from this host to the
//! VIP, sent the way the real's clients' packets go ([`ProbeSpec`]: the
//! same MACs, VLAN and tunnel, from [`super::program::fill_way`]), and the
//! main program hands the real's answer back into the namespace.

use super::program::fill_way;
use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The namespace's own addresses, which replies are addressed to (inside).
pub const PROBE_NS4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const PROBE_NS6: Ipv6Addr = Ipv6Addr::new(0xfd76, 0x6335, 0x7072, 0, 0, 0, 0, 1);
/// The NAT prefixes (RFC 2544's benchmarking range and a ULA): they exist
/// only inside the namespace, which routes them to its veth.
pub const NAT4_PREFIX: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 19, 0, 0), 16);
pub const NAT6_PREFIX: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd76, 0x6335, 0x7072, 1, 0, 0, 0, 0), 64);

/// The NAT address of pair `index` (1..=65535) for a VIP of the family
/// `v6` says.
pub fn nat_addr(index: u16, v6: bool) -> IpAddr {
    if v6 {
        let mut o = NAT6_PREFIX.0.octets();
        o[14..].copy_from_slice(&index.to_be_bytes());
        IpAddr::V6(o.into())
    } else {
        let mut o = NAT4_PREFIX.0.octets();
        o[2..].copy_from_slice(&index.to_be_bytes());
        IpAddr::V4(o.into())
    }
}

/// The probe namespace as the program needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// The veth's host end, where `vc5_probe` runs and replies go.
    pub host_ifindex: u32,
    pub host_mac: [u8; 6],
    /// The namespace end's MAC, replies' destination.
    pub ns_mac: [u8; 6],
    /// Where a probe leaves when its way names no interface (a VLAN
    /// trunk's real): the first interface the program is attached to.
    pub trunk: u32,
    /// This host's addresses probes leave from, per VIP family (the
    /// reals answer them as they answer clients). A VIP of a family
    /// without one cannot be probed through.
    pub src4: Option<Ipv4Addr>,
    pub src6: Option<Ipv6Addr>,
}

/// One (VIP, real) pair that checks probe through the VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSpec {
    /// The NAT address's index, 1..=65535 (see [`nat_addr`]).
    pub index: u16,
    pub vip: IpAddr,
    /// A port of the VIP's service, for log messages.
    pub port: u16,
    pub real: IpAddr,
    /// The service's forwarding, and the real's next hop as its
    /// backends have it: known whatever the real's health.
    pub forward: Forward,
    pub l2: Option<L2>,
}

impl DataPlane {
    /// Points the program at the probe namespace (None: no namespace, and
    /// replies are no longer looked for).
    pub fn set_probe_config(&mut self, cfg: Option<&ProbeConfig>) -> Result<(), Error> {
        let v = match cfg {
            None => ProbeCfg::default(),
            Some(c) => ProbeCfg {
                ifindex: c.host_ifindex,
                trunk: c.trunk,
                ns_mac: c.ns_mac,
                host_mac: c.host_mac,
                src4: c.src4.map_or(0, |a| u32::from_ne_bytes(a.octets())),
                ns4: u32::from_ne_bytes(PROBE_NS4.octets()),
                src6: c.src6.map_or([0; 16], |a| a.octets()),
                ns6: PROBE_NS6.octets(),
                _pad: 0,
            },
        };
        self.maps
            .probe_cfg
            .set(0, v, 0)
            .map_err(map_err("probe_cfg"))
    }

    /// Makes `probes` hold exactly `specs`: changed entries written,
    /// others cleared (after a restart, whatever the previous vc5d left).
    pub fn set_probes(&mut self, specs: &[ProbeSpec]) -> Result<(), Error> {
        let mut want: HashMap<u16, Probe> = HashMap::with_capacity(specs.len());
        for s in specs {
            let mut way = Backend {
                addr: addr16(s.real),
                ..Backend::default()
            };
            fill_way(
                &mut way,
                s.forward,
                s.real,
                s.l2.as_ref(),
                s.vip,
                s.port,
                false,
            );
            want.insert(
                s.index,
                Probe {
                    way,
                    vip: addr16(s.vip),
                },
            );
        }
        if !self.probes_synced {
            for i in 1..self.maps.probes.len() {
                let have = self.maps.probes.get(&i, 0).map_err(map_err("probes"))?;
                if have != Probe::default() {
                    self.probes.insert(i as u16, have);
                }
            }
            self.probes_synced = true;
        }
        for (i, p) in &want {
            if self.probes.get(i) != Some(p) {
                self.maps
                    .probes
                    .set(*i as u32, *p, 0)
                    .map_err(map_err("probes"))?;
            }
        }
        for i in self.probes.keys().filter(|i| !want.contains_key(i)) {
            self.maps
                .probes
                .set(*i as u32, Probe::default(), 0)
                .map_err(map_err("probes"))?;
        }
        self.probes = want;
        Ok(())
    }

    /// The pairs `probes` holds (for tests and the status).
    pub fn probe(&self, index: u16) -> Result<Probe, Error> {
        self.maps
            .probes
            .get(&(index as u32), 0)
            .map_err(map_err("probes"))
    }

    /// `probe_stats` summed over CPUs, by `PROBE_*` reason.
    pub fn probe_stats(&self) -> Result<[Counter; PROBE_REASONS as usize], Error> {
        let mut out = [Counter::default(); PROBE_REASONS as usize];
        for (i, o) in out.iter_mut().enumerate() {
            let per = self
                .maps
                .probe_stats
                .get(&(i as u32), 0)
                .map_err(map_err("probe_stats"))?;
            for c in per.iter() {
                o.packets += c.packets;
                o.bytes += c.bytes;
            }
        }
        Ok(out)
    }

    /// Attaches `vc5_probe` to the veth's host end, in generic mode: its
    /// packets then leave by the kernel's transmit path, which any egress
    /// interface takes, whatever its driver's XDP support. The link is not
    /// pinned: it goes with the veth, which goes with the namespace.
    pub fn attach_probe(&mut self, ifindex: u32) -> Result<(), Error> {
        self.attach_named(PROBE_PROGRAM, ifindex, AyaMode::Skb)
    }

    /// Attaches `vc5_pass` (XDP_PASS) natively to the namespace's end of
    /// the veth, before it moves there: a native program on the receiving
    /// end is what lets the main program redirect replies into a veth.
    pub fn attach_pass(&mut self, ifindex: u32) -> Result<(), Error> {
        self.attach_named(PASS_PROGRAM, ifindex, AyaMode::Driver)
    }

    fn attach_named(
        &mut self,
        name: &'static str,
        ifindex: u32,
        mode: AyaMode,
    ) -> Result<(), Error> {
        self.xdp_named(name)?.attach_to_if_index(ifindex, mode)?;
        Ok(())
    }
}

/// The programs of `bpf/vc5.c` for the probe veth's two ends.
pub const PROBE_PROGRAM: &str = "vc5_probe";
pub const PASS_PROGRAM: &str = "vc5_pass";
