//! Loading, attaching and programming the XDP data plane.
//!
//! Everything lives under one bpffs directory (`--bpffs`): the maps in
//! `maps/`, one link per interface in `links/`. A link holds the program on
//! its interface even after vc5d exits, and the maps hold the services,
//! tables and flows, so a crash or restart of vc5d breaks no connection: the
//! next vc5d loads the program against the same maps, recovers its index
//! allocation from them, and swaps its program into the links atomically.
//! `rm -r` of the directory detaches everything.
//!
//! [`DataPlane::program`] takes the whole desired state and applies the
//! difference in an order that never lets a packet see a real before it is
//! usable or a service table that points at a freed real.
//!
//! The modules: `load` (loading, pinning, checking pinned maps, attaching),
//! `program` (writing services, backends and tables), `counters`
//! (counters and published status), `flows` (the flow tables from user
//! space), `sweep` (clearing moved marks and dead flows).

mod counters;
mod flows;
mod load;
mod probes;
mod program;
mod sweep;

pub use counters::{RealStats, ServiceStats, Stats};
pub use load::Attached;
pub use probes::{
    NAT4_PREFIX, NAT6_PREFIX, PASS_PROGRAM, PROBE_NS4, PROBE_NS6, PROBE_PROGRAM, ProbeConfig,
    ProbeSpec, nat_addr,
};
pub use sweep::{Sweep, SweepResult};

use program::{Ids, SvcId, SvcState, backend16};

use crate::flowtable::{FlowTable, Put, widen};
use crate::maps::*;
use crate::table::{self, Candidate};
use aya::maps::{
    Array, HashMap as BpfHashMap, MapData, MapInfo, MapType, PerCpuArray, PerCpuValues,
};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{Xdp, XdpMode as AyaMode, xdp::XdpLink};
use aya::{Ebpf, EbpfLoader};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{info, warn};

/// The XDP program, built by `build.rs`.
pub static VC5_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vc5.o"));
/// The XDP program with the benchmark's wrapper `vc5_bench_fresh`.
pub static VC5_BENCH_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vc5_bench.o"));
/// [`VC5_BENCH_OBJ`] built with `-DVC5_NO_FLOWSYNC`: the program as it was
/// before flow sync (no peer lookups, no flow events), for the benchmark's
/// before/after rows. Same maps, so it loads like the others.
pub static VC5_NOSYNC_BENCH_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vc5_nosync_bench.o"));
/// The benchmark's build without probes through the VIP (`-DVC5_NO_PROBES`).
pub static VC5_NOPROBE_BENCH_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vc5_noprobe_bench.o"));
/// [`VC5_BENCH_OBJ`] built with `-DVC5_EVENT_WAKE=0`: flow events wake
/// their reader whenever it had caught up (the ring's adaptive default)
/// instead of once per 256 (see vc5.c), for the benchmark's comparison.
pub static VC5_ADAPTIVE_BENCH_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vc5_adaptive_bench.o"));
/// [`VC5_BENCH_OBJ`] built with `-DVC5_BENCH_PENDING`: every packet that
/// may insert its flow counts as the first after the flow's SYN, so each
/// repetition of `vc5_bench_fresh` inserts a flow the way a handshake's
/// last ACK does.
pub static VC5_PENDING_BENCH_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vc5_pending_bench.o"));
/// [`VC5_BENCH_OBJ`] built with `-DVC5_SAMPLE_BITS=0`: every packet is a
/// sampled one, which looks its flow up (and inserts it if missing, as for
/// a flow whose handshake this host did not see).
pub static VC5_SAMPLE_BENCH_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vc5_sample_bench.o"));
/// The benchmark's floor program (swap MACs, XDP_TX).
pub static FLOOR_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor.o"));

const PROGRAM: &str = "vc5_xdp";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the XDP program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error(
        "pinned map {path} does not match this vc5 ({what}); stop vc5d and remove {dir} to start afresh (this drops established flows)"
    )]
    Incompatible {
        path: PathBuf,
        dir: PathBuf,
        what: String,
    },
    #[error("{dir} is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)")]
    NotBpffs { dir: PathBuf },
    #[error("interface {0} does not exist")]
    NoInterface(String),
    #[error("attaching to {ifname} in {mode} mode: {source}")]
    Attach {
        ifname: String,
        mode: XdpMode,
        source: aya::programs::ProgramError,
    },
    #[error("pinning: {0}")]
    Pin(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("too many {what}: {have} (at most {max})")]
    Full {
        what: &'static str,
        have: usize,
        max: usize,
    },
    #[error("service {0} is given twice")]
    Duplicate(String),
    #[error("no hash seed places the {0} service keys within {PROBES} probes")]
    Slots(usize),
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> Error {
    move |source| Error::Map { name, source }
}

/// `--xdp-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native, falling back to generic with a warning.
    #[default]
    Auto,
    Native,
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

impl std::str::FromStr for XdpMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(XdpMode::Auto),
            "native" => Ok(XdpMode::Native),
            "generic" => Ok(XdpMode::Generic),
            _ => Err(format!("unknown XDP mode {s:?} (auto, native or generic)")),
        }
    }
}

/// Map sizes chosen at first load. Pinned maps keep the size they were
/// created with; the sizes actually in force are read back from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    pub services: u32,
    pub backends: u32,
    pub flows_tcp4: u32,
    pub flows_tcp6: u32,
    pub flows_udp4: u32,
    pub flows_udp6: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes {
            services: MAX_SERVICES,
            backends: MAX_BACKENDS,
            flows_tcp4: 1 << 21,
            flows_tcp6: 1 << 20,
            flows_udp4: 1 << 18,
            flows_udp6: 1 << 18,
        }
    }
}

impl MapSizes {
    /// Small maps, for tests and benchmarks that load many copies.
    pub fn small() -> Self {
        MapSizes {
            services: 64,
            backends: 1024,
            flows_tcp4: 4096,
            flows_tcp6: 4096,
            flows_udp4: 4096,
            flows_udp6: 4096,
        }
    }
}

/// The way to a real: the next hop of its frames, and for a tunnel the
/// outer header's source and the MTU it must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct L2 {
    /// The next hop's MAC: the real's when it is on-link, else the
    /// gateway's (tunnels only: layer-2 DSR needs the real on-link).
    pub mac: [u8; 6],
    /// The egress interface's MAC.
    pub src_mac: [u8; 6],
    /// The egress interface (0: the one packets come in on).
    pub ifindex: u32,
    /// Tunnels: this host's address towards the real, of the real's
    /// family (the outer source); without it a tunnel real is unusable.
    pub src: Option<IpAddr>,
    /// Tunnels: the egress MTU (0: not checked).
    pub mtu: u16,
    /// The 802.1Q VLAN of the real's way: `Some(1..=4094)`, frames to the
    /// real carry a tag of that VID (the incoming tag's PCP and DEI kept,
    /// 0 if it came untagged); `Some(0)`, untagged (an incoming tag is
    /// removed). `None`, vc5's rule before per-real VLANs: a layer-2
    /// frame keeps the tag it came with (the real on the ingress VLAN) and
    /// a tunnel's outer frame is untagged. Any other VID (4095 and above)
    /// makes the real unusable, with a warning: it gets no packets.
    pub vlan: Option<u16>,
}

/// The highest 802.1Q VLAN ID a real may have (4095 is reserved).
pub const VLAN_MAX: u16 = 4094;

/// How a service's packets reach its reals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    /// Layer-2 DSR: new MACs, the packet unchanged; reals on-link.
    #[default]
    L2,
    /// IP in IP: IPv4 (protocol 4) or IPv6 (41) inside IPv4 or IPv6.
    Ipip,
    /// GRE (RFC 2784), no key, checksum or sequence number.
    Gre,
    /// Foo over UDP: the packet right after a UDP header to this port.
    Fou { port: u16 },
    /// Generic UDP Encapsulation, variant 0 with no options, to this port.
    Gue { port: u16 },
}

impl Forward {
    /// Every method, by the name the configuration and the status use.
    pub const NAMES: [&'static str; 5] = ["l2", "ipip", "gre", "fou", "gue"];

    /// The method's name: `l2`, `ipip`, `gre`, `fou` or `gue`.
    pub fn name(self) -> &'static str {
        match self {
            Forward::L2 => "l2",
            Forward::Ipip => "ipip",
            Forward::Gre => "gre",
            Forward::Fou { .. } => "fou",
            Forward::Gue { .. } => "gue",
        }
    }

    /// The UDP port of fou and gue.
    pub fn port(self) -> Option<u16> {
        match self {
            Forward::Fou { port } | Forward::Gue { port } => Some(port),
            _ => None,
        }
    }

    /// Whether packets are encapsulated (anything but layer 2).
    pub fn is_tunnel(self) -> bool {
        self != Forward::L2
    }

    /// The program's `VC5_TUNNEL_*` and UDP port (network order).
    pub(crate) fn wire(self) -> (u8, u16) {
        match self {
            Forward::L2 => (TUNNEL_NONE, 0),
            Forward::Ipip => (TUNNEL_IPIP, 0),
            Forward::Gre => (TUNNEL_GRE, 0),
            Forward::Fou { port } => (TUNNEL_FOU, port.to_be()),
            Forward::Gue { port } => (TUNNEL_GUE, port.to_be()),
        }
    }

    /// Bytes the encapsulation adds to a packet with an outer header of
    /// this family (0 for layer 2).
    pub fn overhead(self, outer_v6: bool) -> usize {
        let ip = if outer_v6 { 40 } else { 20 };
        match self {
            Forward::L2 => 0,
            Forward::Ipip => ip,
            Forward::Gre => ip + 4,
            Forward::Fou { .. } => ip + 8,
            Forward::Gue { .. } => ip + 12,
        }
    }
}

/// What a real may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RealMode {
    /// Takes new flows and keeps its flows.
    Serve,
    /// Takes no new flows, keeps its established ones.
    Drain,
    /// Failed: its flows move to other reals.
    Down,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RealSpec {
    pub addr: IpAddr,
    pub weight: u32,
    pub mode: RealMode,
    /// None until the real's MAC is resolved: then it is not usable.
    pub l2: Option<L2>,
}

/// Protocol numbers as on the wire.
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub vip: IpAddr,
    pub port: u16,
    pub proto: u8,
    /// How packets reach the reals.
    pub forward: Forward,
    pub reals: Vec<RealSpec>,
}

struct Maps {
    settings: Array<MapData, Settings>,
    slots: Array<MapData, SvcSlot>,
    tables: Array<MapData, Table>,
    backends: Array<MapData, Backend>,
    stats: PerCpuArray<MapData, Counter>,
    backend_stats: PerCpuArray<MapData, BackendStats>,
    service_drops: PerCpuArray<MapData, Counter>,
    /// This host's flow tables, mapped into memory (shared with sweeps).
    flows_tcp4: Arc<FlowTable<Flow4>>,
    flows_tcp6: Arc<FlowTable<Flow6>>,
    flows_udp4: Arc<FlowTable<Flow4>>,
    flows_udp6: Arc<FlowTable<Flow6>>,
    /// Flows learned from peers, `peer_moved` and `sync_status`: written
    /// by vc5-flowsync alone in production. vc5d reads them (the sweep
    /// walks the peer tables, [`DataPlane::sync_status`]); the writers
    /// here are for tests.
    peer_tcp4: BpfHashMap<MapData, Flow4, Flow>,
    peer_tcp6: BpfHashMap<MapData, Flow6, Flow>,
    peer_udp4: BpfHashMap<MapData, Flow4, Flow>,
    peer_udp6: BpfHashMap<MapData, Flow6, Flow>,
    peer_moved: Array<MapData, PeerMoved>,
    sync_status: Array<MapData, SyncStatus>,
    flow_events_lost: PerCpuArray<MapData, u64>,
    cpu_state: PerCpuArray<MapData, CpuState>,
    probe_cfg: Array<MapData, ProbeCfg>,
    probes: Array<MapData, Probe>,
    probe_stats: PerCpuArray<MapData, Counter>,
}

/// The loaded program and its maps.
pub struct DataPlane {
    ebpf: Ebpf,
    dir: PathBuf,
    maps: Maps,
    sizes: MapSizes,
    nr_cpus: usize,
    services: HashMap<SvcId, SvcState>,
    vips: HashMap<IpAddr, u16>,
    backends: HashMap<(u16, IpAddr), (u16, Backend)>,
    service_ids: Ids,
    vip_ids: Ids,
    backend_ids: Ids,
    /// `probes` as last written, and whether it has been read back since
    /// the program was opened (a previous vc5d's entries are cleared).
    probes: HashMap<u16, Probe>,
    probes_synced: bool,
    /// Counters of backends since freed, per service, so totals never fall.
    retired: HashMap<SvcId, BackendStats>,
    /// Buckets that moved since the last sweep began, per service.
    moved_since: HashMap<SvcId, [u64; MOVED_WORDS]>,
    /// The clock when each bucket's real last changed, per service with
    /// marks. A flow's "seen" stamp is exact only from then on: in a
    /// clean bucket the program stamps it on sampled packets alone, so a
    /// live flow's stamp may be old when its bucket moves.
    moved_at: HashMap<SvcId, Box<[u32; TABLE_SIZE]>>,
    /// Occupied slot indexes of each half, so a rewrite clears only those.
    half_used: [Option<HashSet<u32>>; 2],
    settings: Settings,
    /// The clock when this process first set it: flows stamped before
    /// may have had packets since that an older clock did not record.
    clock_start: u32,
    /// Seconds without a packet after which a sweep deems a TCP flow dead.
    idle_timeout: u32,
}

/// How long a TCP flow may go without a packet before a sweep deems it
/// dead: a dead flow pinned elsewhere than its bucket's real no longer
/// keeps the bucket marked moved, and is deleted. The value of IPVS's
/// established-TCP timeout; a connection idle longer than this without
/// keepalives may be sent to another real (its 4-tuple is free again).
pub const TCP_IDLE_TIMEOUT: u32 = 900;
// A deleted dead flow must be older than any cache entry that could put it
// back, with room for vc5d's clock tick (30 s).
const _: () = assert!(TCP_IDLE_TIMEOUT > CACHE_TRUST + 60);

/// Seconds of CLOCK_BOOTTIME: the data plane's clock (it counts across
/// restarts of vc5d and through suspend). Never 0, which means "unset".
pub fn boot_seconds() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u32).max(1)
}
