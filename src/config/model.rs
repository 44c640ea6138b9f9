//! The normalised configuration that [`load`](super::load) and
//! [`parse`](super::parse) return, and the named defaults and bounds its rules
//! apply. Nothing here reads the file; the types are what the daemon uses.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use vc5_health::spec::qtype_name;
use vc5_health::{CheckKind, CheckSpec, TlsVerify};
pub use vc5_xdp::Forward;

/// Healthy reals a service needs when `need` is not given: the original's default.
pub const DEFAULT_NEED: usize = 1;
/// A real's weight when `weight` is not given.
pub const DEFAULT_WEIGHT: u16 = 1;
/// Transport of a service when `protocol` is not given, as in the original, which
/// knew only TCP.
pub const DEFAULT_PROTOCOL: Protocol = Protocol::Tcp;
/// How a service reaches its reals when `forward` is not given: layer-2 DSR,
/// the original's only method.
pub const DEFAULT_FORWARD: Forward = Forward::L2;
/// Where a check goes when its `probe` is not given: the real's own address,
/// as the checks of every configuration written before `probe` existed did.
/// A probe through the VIP is the stronger check (it fails a real that lost
/// the VIP, as its clients would find), but it needs the real's service to
/// answer on the VIP at the check's port, which a health endpoint bound to
/// the real's own address does not: turning it on for every existing check
/// could take a whole fleet out of service on upgrade. So it is asked for,
/// check by check (`probe: vip`).
pub const DEFAULT_PROBE: ProbeVia = ProbeVia::Real;
/// BGP hold time in seconds when `rhi.hold_time` is not given: the value RFC 4271
/// suggests.
pub const DEFAULT_HOLD_TIME: u16 = 90;
/// How long vc5d holds its announcements at start for vc5-flowsync's resync when
/// `flow_sync_wait` is not given.
pub const DEFAULT_FLOW_SYNC_WAIT: Duration = vc5_xdp::flowsync::settings::DEFAULT_WAIT;
/// Shortest `flow_sync_wait`: vc5-flowsync reports its resync done 1.5 s after its
/// start at the earliest, so a shorter wait would always run out first.
pub const MIN_FLOW_SYNC_WAIT: Duration = Duration::from_secs(2);
/// Longest `flow_sync_wait`.
pub const MAX_FLOW_SYNC_WAIT: Duration = vc5_xdp::flowsync::settings::MAX_WAIT;
/// `flow_sync_rate` when not given: records per second accepted from one peer.
pub const DEFAULT_FLOW_SYNC_RATE: u32 = vc5_xdp::flowsync::settings::DEFAULT_RATE;
/// `flow_sync_resync_rate` when not given: records per second sent in a resync.
pub const DEFAULT_FLOW_SYNC_RESYNC_RATE: u32 = vc5_xdp::flowsync::settings::DEFAULT_RESYNC_RATE;
/// Bounds of `flow_sync_rate` and `flow_sync_resync_rate`.
pub const MIN_FLOW_SYNC_RATE: u32 = vc5_xdp::flowsync::settings::MIN_RATE;
pub const MAX_FLOW_SYNC_RATE: u32 = vc5_xdp::flowsync::settings::MAX_RATE;

/// `flow_insert_limit` when not given: the data plane's own default.
pub const DEFAULT_FLOW_INSERT_LIMIT: u32 = vc5_xdp::maps::INSERT_LIMIT;
/// Largest `flow_insert_limit` (0, no bound, is allowed too).
pub const MAX_FLOW_INSERT_LIMIT: u32 = 100_000_000;

/// Largest configuration file read, in bytes (16 MiB). The README's benchmark
/// scale, 1,000 services of 64 reals written as maps, takes about 2.6 MB, and the
/// most the data plane holds (65,535 service × real pairs) written out in full
/// with comments stays well below.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Most YAML nodes (scalars, lists and maps) a file may hold, aliases expanded:
/// enough for the limits below written out in full, small enough that a hostile
/// file cannot make the loader allocate without bound.
pub const MAX_NODES: usize = 1_000_000;
/// Shortest check interval: shorter ones load the reals more than they tell.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest check interval, and longest timeout.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest check timeout.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Largest `rise` or `fall`: at the longest interval, 100 runs are four days.
pub const MAX_RISE_FALL: u32 = 100;
/// Longest name (service, real group, check), in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest service description, in characters.
pub const MAX_DESC_CHARS: usize = 1024;
/// Most (VIP, port, protocol) endpoints over all services: what the data plane's
/// service table holds (index 0 is reserved).
pub const MAX_ENDPOINTS: usize = vc5_xdp::maps::MAX_SERVICES as usize - 1;
/// Most (endpoint, real) pairs over all services: what the data plane's backend
/// table holds (index 0 is reserved).
pub const MAX_BACKENDS: usize = vc5_xdp::maps::MAX_BACKENDS as usize - 1;

/// The whole normalised configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Multicast group and port that vc5-flowsync uses; `None` disables flow sync.
    pub multicast: Option<SocketAddr>,
    /// File holding the key that authenticates flow-sync datagrams. [`load`](super::load) makes a
    /// relative path relative to the configuration file's directory.
    pub flow_sync_key: Option<PathBuf>,
    /// How long vc5d holds its VIP announcements at start until vc5-flowsync has
    /// resynced (only when flow sync is configured).
    #[serde(rename = "flow_sync_wait_ms", serialize_with = "serialize_millis")]
    pub flow_sync_wait: Duration,
    /// Flow records per second vc5-flowsync accepts from one peer.
    pub flow_sync_rate: u32,
    /// Flow records per second vc5-flowsync sends when a peer asks for all.
    pub flow_sync_resync_rate: u32,
    /// New flows one CPU may insert into the flow table per second (0: no
    /// bound); over it a flow is forwarded by the lookup table, not pinned.
    pub flow_insert_limit: u32,
    /// Route health injection (BGP) settings.
    pub rhi: Rhi,
    /// The services, in file order.
    pub services: Vec<Service>,
    /// The real server groups, by name.
    pub reals: BTreeMap<String, Vec<Real>>,
    /// 802.1Q VLANs by ID, each with the prefixes of its subnets (no two
    /// VLANs overlap). Empty: untagged, frames keep the tag they came with.
    pub vlans: BTreeMap<u16, Vec<IpNet>>,
}

impl Config {
    /// Whether flow sync runs: `multicast` and `flow_sync_key` are both given.
    pub fn flow_sync(&self) -> bool {
        self.multicast.is_some() && self.flow_sync_key.is_some()
    }

    /// The VLAN whose prefix holds `addr`, if any.
    pub fn vlan_of(&self, addr: IpAddr) -> Option<u16> {
        vlan_of(&self.vlans, addr)
    }

    /// The normalised configuration as pretty-printed JSON, as `vc5d --check` prints it.
    pub fn to_json(&self) -> String {
        // Every map in the model is keyed by strings and every value is plain data,
        // so serialisation cannot fail; the fallback only keeps this function total.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
    }
}

/// The VLAN of `vlans` whose prefix holds `addr`.
pub(super) fn vlan_of(vlans: &BTreeMap<u16, Vec<IpNet>>, addr: IpAddr) -> Option<u16> {
    vlans
        .iter()
        .find(|(_, nets)| nets.iter().any(|n| n.contains(&addr)))
        .map(|(id, _)| *id)
}

/// Route health injection: how VIPs are announced over BGP.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rhi {
    /// Our AS number; 0 means no BGP.
    pub as_number: u32,
    /// BGP peers the built-in speaker connects to.
    pub peers: Vec<IpAddr>,
    /// Proposed BGP hold time in seconds: 0 (no keepalives) or 3..=65535 (RFC 4271).
    pub hold_time: u16,
    /// Communities attached to announcements, as (AS, value).
    #[serde(serialize_with = "serialize_communities")]
    pub communities: Vec<(u16, u16)>,
    /// MULTI_EXIT_DISC attached to announcements.
    pub med: Option<u32>,
    /// LOCAL_PREF attached to announcements (iBGP only).
    pub local_pref: Option<u32>,
    /// Next hop for IPv6 VIPs when this host's `--address` is IPv4.
    pub next_hop6: Option<Ipv6Addr>,
}

impl Default for Rhi {
    fn default() -> Self {
        Rhi {
            as_number: 0,
            peers: Vec::new(),
            hold_time: DEFAULT_HOLD_TIME,
            communities: Vec::new(),
            med: None,
            local_pref: None,
            next_hop6: None,
        }
    }
}

impl Rhi {
    /// Whether BGP announcements are configured at all.
    pub fn enabled(&self) -> bool {
        self.as_number != 0
    }
}

/// A transport protocol: of a service, and as the file writes a dns check's
/// `transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A load-balanced service: a set of VIPs and ports served by the same reals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub desc: String,
    /// The VIPs, in file order, without duplicates.
    pub addrs: Vec<IpAddr>,
    /// The ports, in file order, without duplicates.
    pub ports: Vec<u16>,
    /// Transport of every port of the service.
    pub protocol: Protocol,
    /// How packets reach the reals: layer 2, or a tunnel (`--check` prints
    /// it as the file writes it: `forward`, and `tunnel_port` for fou and gue).
    #[serde(flatten, serialize_with = "serialize_forward")]
    pub forward: Forward,
    /// Names of the real groups the service uses, in file order.
    pub real_groups: Vec<String>,
    /// The reals of all the groups, first occurrence of each address kept, in order.
    pub reals: Vec<Real>,
    /// Healthy reals needed for the service to be healthy.
    pub need: usize,
    /// How many checks must pass for a real to be healthy; `None`: all of them.
    pub quorum: Option<usize>,
    /// Health checks run against every real.
    pub checks: Vec<Check>,
}

impl Service {
    /// Every (VIP, port, protocol) the service answers on: each address with each port.
    pub fn endpoints(&self) -> Vec<(IpAddr, u16, Protocol)> {
        self.addrs
            .iter()
            .flat_map(|&addr| {
                self.ports
                    .iter()
                    .map(move |&port| (addr, port, self.protocol))
            })
            .collect()
    }

    /// How many checks must pass for a real to be healthy.
    pub fn checks_needed(&self) -> usize {
        self.quorum.unwrap_or(self.checks.len())
    }
}

/// A real server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Real {
    /// Its address on the LAN.
    pub addr: IpAddr,
    /// Relative share of new flows, 1..=65535.
    pub weight: u16,
    /// Administratively out of service: it gets no new flows.
    pub disabled: bool,
}

/// Where a check's probes go (`probe` in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeVia {
    /// To the real's own address.
    #[default]
    Real,
    /// To the service's VIP on the real, carried as the real's clients'
    /// packets are (its MACs, VLAN and tunnel), from vc5d's probe
    /// namespace: a real that lost the VIP fails. With several VIPs the
    /// check goes through each and passes when every one does.
    Vip,
}

impl ProbeVia {
    /// The names the file may use.
    pub const NAMES: [&'static str; 2] = ["real", "vip"];
}

/// A health check, run against every real of its service: what it does is
/// vc5-health's own [`CheckKind`], defaults filled in from vc5-health's; the
/// configuration adds only the name, the port and the timing.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Identifies the check within its service (in the status, the logs, and
    /// over a reload); unique within the service. Defaults to `TYPE:PORT`, e.g.
    /// `http:80`.
    pub name: String,
    /// Port on the real, always one of the service's ports.
    pub port: u16,
    /// What the check does (`type` in the file, with its keys).
    pub kind: CheckKind,
    /// Time between the starts of two runs.
    pub interval: Duration,
    /// Time a run may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive passes that make a failed real healthy.
    pub rise: u32,
    /// Consecutive failures that make a healthy real fail.
    pub fall: u32,
    /// Where the probes go: the real's own address, or the VIP on it.
    pub probe: ProbeVia,
}

impl Check {
    /// The check as the health monitor runs it against `real`, sending from
    /// `source` when given. Validation runs the monitor's own checks on this, so
    /// the daemon must build its checks with this function too.
    pub fn spec(&self, real: IpAddr, source: Option<IpAddr>) -> CheckSpec {
        let spec = CheckSpec::new(SocketAddr::new(real, self.port), self.kind.clone())
            .with_timing(self.interval, self.timeout)
            .with_rise_fall(self.rise, self.fall);
        match source {
            Some(s) => spec.with_source(s),
            None => spec,
        }
    }

    /// The check as the monitor runs it through `vip` (`probe: vip`): to
    /// the pair's NAT address `nat` in the probe namespace `ns`. An http or
    /// https check without a `host` names the VIP, as a client would, not
    /// the NAT address, which only the namespace knows.
    pub fn spec_via(&self, nat: IpAddr, vip: IpAddr, ns: vc5_health::Netns) -> CheckSpec {
        let mut kind = self.kind.clone();
        if let CheckKind::Http(http) | CheckKind::Https { http, .. } = &mut kind
            && http.host.is_none()
        {
            let default_port = if matches!(self.kind, CheckKind::Https { .. }) {
                443
            } else {
                80
            };
            let addr = match vip {
                IpAddr::V4(a) => a.to_string(),
                IpAddr::V6(a) => format!("[{a}]"),
            };
            http.host = Some(if self.port == default_port {
                addr
            } else {
                format!("{addr}:{}", self.port)
            });
        }
        CheckSpec::new(SocketAddr::new(nat, self.port), kind)
            .with_timing(self.interval, self.timeout)
            .with_rise_fall(self.rise, self.fall)
            .with_netns(ns)
    }
}

/// `--check` prints a check as `name`, `type`, `port`, the keys of its type
/// (`path`, `host`, `method`, `expect` for http and https, `verify_tls` for https,
/// `dns` for dns), then `interval_ms`, `timeout_ms`, `rise` and `fall`.
impl Serialize for Check {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("type", self.kind.name())?;
        m.serialize_entry("port", &self.port)?;
        match &self.kind {
            CheckKind::Tcp => {}
            CheckKind::Http(http) | CheckKind::Https { http, .. } => {
                m.serialize_entry("path", &http.path)?;
                m.serialize_entry("host", &http.host)?;
                m.serialize_entry("method", &http.method)?;
                m.serialize_entry("expect", &http.expect)?;
            }
            CheckKind::Dns(dns) => {
                #[derive(Serialize)]
                struct Dns<'a> {
                    query: &'a str,
                    qtype: String,
                    transport: String,
                    rcode: u16,
                }
                m.serialize_entry(
                    "dns",
                    &Dns {
                        query: &dns.query,
                        qtype: qtype_name(dns.qtype),
                        transport: dns.transport.to_string(),
                        rcode: u16::from(dns.rcode),
                    },
                )?;
            }
        }
        if let CheckKind::Https { verify, .. } = &self.kind {
            m.serialize_entry("verify_tls", &(*verify != TlsVerify::None))?;
        }
        m.serialize_entry(
            "interval_ms",
            &u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
        )?;
        m.serialize_entry(
            "timeout_ms",
            &u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
        )?;
        m.serialize_entry("rise", &self.rise)?;
        m.serialize_entry("fall", &self.fall)?;
        m.serialize_entry("probe", &self.probe)?;
        m.end()
    }
}

fn serialize_forward<S: Serializer>(f: &Forward, s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(None)?;
    m.serialize_entry("forward", f.name())?;
    if let Some(port) = f.port() {
        m.serialize_entry("tunnel_port", &port)?;
    }
    m.end()
}

fn serialize_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn serialize_communities<S: Serializer>(c: &[(u16, u16)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(c.iter().map(|(asn, value)| format!("{asn}:{value}")))
}
