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

/// Layer-2 next hop of a real: where frames for it go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2 {
    pub mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub ifindex: u32,
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
    pub reals: Vec<RealSpec>,
}

type SvcId = (IpAddr, u16, u8);

/// A table to build: the service, its previous table and candidates if
/// known, and its candidates now.
type TableJob<'a> = (
    SvcId,
    Option<&'a Table>,
    Option<&'a [Candidate]>,
    &'a [Candidate],
);

fn svc_name(id: &SvcId) -> String {
    let proto = if id.2 == TCP { "tcp" } else { "udp" };
    match id.0 {
        IpAddr::V4(a) => format!("{a}:{}/{proto}", id.1),
        IpAddr::V6(a) => format!("[{a}]:{}/{proto}", id.1),
    }
}

/// Allocates small integer ids, cycling through the whole range before an
/// id is reused, so that flows still pointing at a freed backend id find
/// it unusable (and move) rather than finding a new real behind it.
#[derive(Debug, Clone)]
struct Ids {
    used: HashSet<u32>,
    next: u32,
    max: u32,
}

impl Ids {
    fn new(max: u32) -> Self {
        Ids {
            used: HashSet::new(),
            next: 1,
            max,
        }
    }
    fn take(&mut self, id: u32) {
        self.used.insert(id);
        if id >= self.next {
            self.next = id + 1;
        }
    }
    fn alloc(&mut self) -> Option<u32> {
        if self.used.len() + 1 >= self.max as usize {
            return None;
        }
        loop {
            if self.next >= self.max {
                self.next = 1;
            }
            let id = self.next;
            self.next += 1;
            if self.used.insert(id) {
                return Some(id);
            }
        }
    }
    fn free(&mut self, id: u32) {
        self.used.remove(&id);
    }
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
}

#[derive(Debug, Clone)]
struct SvcState {
    index: u16,
    vip: u16,
    /// The table as last written, and the candidates it was built from
    /// (None after a restart: the next build is a full one).
    table: Option<Box<Table>>,
    cands: Option<Vec<Candidate>>,
}

/// Counters of one real of one service, summed over CPUs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RealStats {
    pub addr: IpAddr,
    pub usable: bool,
    pub counters: BackendStats,
}

/// Counters of one service.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceStats {
    pub vip: IpAddr,
    pub port: u16,
    pub proto: u8,
    /// Sum over its reals, including reals since removed.
    pub counters: BackendStats,
    /// Packets dropped for want of a usable real.
    pub dropped: Counter,
    pub reals: Vec<RealStats>,
}

/// Everything the data plane counts, summed over CPUs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub global: BTreeMap<Reason, Counter>,
    pub services: Vec<ServiceStats>,
    /// New flows the insert limit kept out of the flow table.
    pub inserts_refused: u64,
    /// Inserts that overwrote an idle flow, both sets being full.
    pub flows_evicted: u64,
    /// Inserts refused because both sets were full of flows seen within
    /// [`EVICT_AGE`].
    pub flows_refused_full: u64,
}

impl Stats {
    /// Per-VIP totals, summed from its services.
    pub fn vips(&self) -> BTreeMap<IpAddr, BackendStats> {
        let mut m: BTreeMap<IpAddr, BackendStats> = BTreeMap::new();
        for s in &self.services {
            *m.entry(s.vip).or_default() += s.counters;
        }
        m
    }
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

/// What `attach` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub ifname: String,
    /// The mode asked for, or "pinned" when an existing link was reused
    /// (its mode is the one it was created with).
    pub mode: String,
    pub reused: bool,
}

/// An error and its sources, for a log line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Is `dir` (or its nearest existing ancestor) on a bpffs?
fn on_bpffs(dir: &Path) -> std::io::Result<bool> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let mut p = dir.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return Ok(false);
        }
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Key and value sizes of a map, in bytes.
type KeyValue = (usize, usize);

/// What a pinned map must look like to be re-used by this build: name,
/// type and, where they mean something, key and value sizes (a ring
/// buffer has neither).
fn expected_maps() -> [(&'static str, MapType, Option<KeyValue>); 20] {
    use std::mem::size_of;
    let array = |v: usize| Some((4, v));
    let flows4 = Some((size_of::<Flow4>(), size_of::<Flow>()));
    let flows6 = Some((size_of::<Flow6>(), size_of::<Flow>()));
    let sets4 = array(size_of::<Set4>());
    let sets6 = array(size_of::<Set6>());
    [
        ("settings", MapType::Array, array(size_of::<Settings>())),
        ("svc_slots", MapType::Array, array(size_of::<SvcSlot>())),
        ("tables", MapType::Array, array(size_of::<Table>())),
        ("backends", MapType::Array, array(size_of::<Backend>())),
        ("stats", MapType::PerCpuArray, array(size_of::<Counter>())),
        (
            "backend_stats",
            MapType::PerCpuArray,
            array(size_of::<BackendStats>()),
        ),
        (
            "service_drops",
            MapType::PerCpuArray,
            array(size_of::<Counter>()),
        ),
        ("flows_tcp4", MapType::Array, sets4),
        ("flows_udp4", MapType::Array, sets4),
        ("flows_tcp6", MapType::Array, sets6),
        ("flows_udp6", MapType::Array, sets6),
        ("peer_tcp4", MapType::LruHash, flows4),
        ("peer_udp4", MapType::LruHash, flows4),
        ("peer_tcp6", MapType::LruHash, flows6),
        ("peer_udp6", MapType::LruHash, flows6),
        ("peer_moved", MapType::Array, array(size_of::<PeerMoved>())),
        ("flow_events", MapType::RingBuf, None),
        (
            "flow_events_lost",
            MapType::PerCpuArray,
            array(size_of::<u64>()),
        ),
        (
            "sync_status",
            MapType::Array,
            array(size_of::<SyncStatus>()),
        ),
        (
            "cpu_state",
            MapType::PerCpuArray,
            array(size_of::<CpuState>()),
        ),
    ]
}

fn check_pinned(dir: &Path) -> Result<(), Error> {
    let maps = dir.join("maps");
    for (name, ty, kv) in expected_maps() {
        let path = maps.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(map_err(name))?;
        let have_ty = info.map_type().map_err(map_err(name))?;
        let mut what = Vec::new();
        if have_ty != ty {
            what.push(format!("type {have_ty:?}, expected {ty:?}"));
        }
        if let Some((k, v)) = kv {
            if info.key_size() as usize != k {
                what.push(format!("key size {}, expected {k}", info.key_size()));
            }
            if info.value_size() as usize != v {
                what.push(format!("value size {}, expected {v}", info.value_size()));
            }
        }
        if name.starts_with("flows_") {
            if info.map_flags() & BPF_F_MMAPABLE == 0 {
                what.push("not mmapable".to_string());
            }
            if !info.max_entries().is_power_of_two() {
                what.push(format!("{} sets, not a power of two", info.max_entries()));
            }
        }
        if name == "svc_slots" && info.max_entries() != 2 * SLOTS {
            what.push(format!(
                "{} entries, expected {}",
                info.max_entries(),
                2 * SLOTS
            ));
        }
        if !what.is_empty() {
            return Err(Error::Incompatible {
                path,
                dir: dir.to_path_buf(),
                what: what.join(", "),
            });
        }
    }
    Ok(())
}

/// A backend index as a flow table holds it (16 bits; 0 is no real).
fn backend16(b: u32) -> Result<u16, Error> {
    u16::try_from(b)
        .ok()
        .filter(|b| *b != 0)
        .ok_or_else(|| Error::Pin(format!("backend index {b} does not fit a flow table")))
}

/// `BPF_F_MMAPABLE`, which the flow tables must have.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// A flow table of the loaded object, mapped into memory.
fn mapped<K: crate::flowtable::WayKey>(
    ebpf: &Ebpf,
    name: &'static str,
    sets: u32,
    proto: u8,
) -> Result<Arc<FlowTable<K>>, Error> {
    use std::os::fd::AsFd;
    let m = ebpf.map(name).ok_or(Error::Map {
        name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    })?;
    let data = match m {
        aya::maps::Map::Array(d) => d,
        _ => return Err(Error::Pin(format!("{name} is not an array"))),
    };
    let t = FlowTable::map(data.fd().as_fd(), sets, proto)?;
    Ok(Arc::new(t))
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = ebpf.take_map(name).ok_or(Error::Map {
        name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    })?;
    T::try_from(m).map_err(map_err(name))
}

impl DataPlane {
    /// Loads the program against the maps pinned under `dir` (creating
    /// them, with `sizes`, when absent) and recovers the index allocation
    /// a previous vc5d left in them. Nothing is attached yet.
    pub fn open(dir: &Path, sizes: MapSizes) -> Result<Self, Error> {
        Self::open_object(dir, sizes, VC5_OBJ)
    }

    /// [`DataPlane::open`] with another build of the program (the benchmark's).
    pub fn open_object(dir: &Path, sizes: MapSizes, object: &[u8]) -> Result<Self, Error> {
        if !on_bpffs(dir)? {
            return Err(Error::NotBpffs {
                dir: dir.to_path_buf(),
            });
        }
        std::fs::create_dir_all(dir.join("maps"))?;
        std::fs::create_dir_all(dir.join("links"))?;
        check_pinned(dir)?;

        let maps_dir = dir.join("maps");
        // Sets of each flow table: the pinned table's, or the size asked.
        let sets = |name: &str, flows: u32| -> Result<u32, Error> {
            let path = maps_dir.join(name);
            if path.exists() {
                let info = MapInfo::from_pin(&path).map_err(map_err("flows"))?;
                return Ok(info.max_entries());
            }
            let n = (flows / WAYS as u32).max(1);
            if !n.is_power_of_two() {
                return Err(Error::Pin(format!(
                    "{name}: {flows} flows is not {WAYS} ways times a power of two"
                )));
            }
            Ok(n)
        };
        let flow_sets = [
            sets("flows_tcp4", sizes.flows_tcp4)?,
            sets("flows_udp4", sizes.flows_udp4)?,
            sets("flows_tcp6", sizes.flows_tcp6)?,
            sets("flows_udp6", sizes.flows_udp6)?,
        ];
        let masks = flow_sets.map(|n| n - 1);
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .override_global("vc5_flow_mask", &masks, true)
            .map_max_entries("tables", sizes.services)
            .map_max_entries("service_drops", sizes.services)
            .map_max_entries("backends", sizes.backends)
            .map_max_entries("backend_stats", sizes.backends)
            .map_max_entries("flows_tcp4", flow_sets[0])
            .map_max_entries("flows_udp4", flow_sets[1])
            .map_max_entries("flows_tcp6", flow_sets[2])
            .map_max_entries("flows_udp6", flow_sets[3])
            // Room for every peer's flows as for our own: a flow a peer
            // holds is one this host may have to take over.
            .map_max_entries("peer_tcp4", sizes.flows_tcp4)
            .map_max_entries("peer_tcp6", sizes.flows_tcp6)
            .map_max_entries("peer_udp4", sizes.flows_udp4)
            .map_max_entries("peer_udp6", sizes.flows_udp6)
            .map_max_entries("peer_moved", sizes.services)
            .load(object)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| Error::Pin(format!("no program {PROGRAM} in the object")))?
            .try_into()?;
        prog.load()?;

        let maps = Maps {
            settings: take(&mut ebpf, "settings")?,
            slots: take(&mut ebpf, "svc_slots")?,
            tables: take(&mut ebpf, "tables")?,
            backends: take(&mut ebpf, "backends")?,
            stats: take(&mut ebpf, "stats")?,
            backend_stats: take(&mut ebpf, "backend_stats")?,
            service_drops: take(&mut ebpf, "service_drops")?,
            flows_tcp4: mapped(&ebpf, "flows_tcp4", flow_sets[0], TCP)?,
            flows_tcp6: mapped(&ebpf, "flows_tcp6", flow_sets[2], TCP)?,
            flows_udp4: mapped(&ebpf, "flows_udp4", flow_sets[1], UDP)?,
            flows_udp6: mapped(&ebpf, "flows_udp6", flow_sets[3], UDP)?,
            peer_tcp4: take(&mut ebpf, "peer_tcp4")?,
            peer_tcp6: take(&mut ebpf, "peer_tcp6")?,
            peer_udp4: take(&mut ebpf, "peer_udp4")?,
            peer_udp6: take(&mut ebpf, "peer_udp6")?,
            peer_moved: take(&mut ebpf, "peer_moved")?,
            sync_status: take(&mut ebpf, "sync_status")?,
            flow_events_lost: take(&mut ebpf, "flow_events_lost")?,
            cpu_state: take(&mut ebpf, "cpu_state")?,
        };
        // The sizes in force are those of the (possibly older) pinned maps.
        let sizes = MapSizes {
            services: maps.tables.len(),
            backends: maps.backends.len(),
            ..sizes
        };
        let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::Io(e))?;
        let mut dp = DataPlane {
            ebpf,
            dir: dir.to_path_buf(),
            maps,
            sizes,
            nr_cpus,
            services: HashMap::new(),
            vips: HashMap::new(),
            backends: HashMap::new(),
            service_ids: Ids::new(sizes.services.min(u16::MAX as u32 + 1)),
            vip_ids: Ids::new(u16::MAX as u32 + 1),
            backend_ids: Ids::new(sizes.backends.min(u16::MAX as u32 + 1)),
            retired: HashMap::new(),
            moved_since: HashMap::new(),
            moved_at: HashMap::new(),
            half_used: [None, None],
            settings: Settings::default(),
            clock_start: 0,
            idle_timeout: TCP_IDLE_TIMEOUT,
        };
        dp.recover()?;
        if dp.settings.generation == 0 && dp.settings.insert_limit == 0 {
            // Maps never programmed: the program's default bound.
            let mut s = dp.settings;
            s.insert_limit = INSERT_LIMIT;
            dp.write_settings(s)?;
        }
        let now = boot_seconds();
        dp.set_clock(now)?;
        dp.clock_start = now;
        Ok(dp)
    }

    /// Rebuilds the allocation from what the maps hold: the live half of
    /// the service slots and every backend entry.
    fn recover(&mut self) -> Result<(), Error> {
        self.settings = self.maps.settings.get(&0, 0).map_err(map_err("settings"))?;
        let half = self.settings.active & 1;
        let mut used = HashSet::new();
        let mut by_index: HashMap<u16, SvcId> = HashMap::new();
        for i in 0..SLOTS {
            let idx = (half << SLOT_BITS) | i;
            let s = self.maps.slots.get(&idx, 0).map_err(map_err("svc_slots"))?;
            if s.vip == 0 {
                continue;
            }
            used.insert(idx);
            let addr = s.key.addr();
            self.vips.insert(addr, s.vip);
            self.vip_ids.take(s.vip as u32);
            if s.service != 0 {
                let id = (addr, s.key.port(), s.key.proto);
                self.service_ids.take(s.service as u32);
                by_index.insert(s.service, id);
                // The table as written, moved marks included: the next
                // programming compares against it.
                let table = self
                    .maps
                    .tables
                    .get(&(s.service as u32), 0)
                    .map_err(map_err("tables"))?;
                self.services.insert(
                    id,
                    SvcState {
                        index: s.service,
                        vip: s.vip,
                        table: Some(Box::new(table)),
                        cands: None,
                    },
                );
            }
        }
        self.half_used[half as usize] = Some(used);
        for i in 1..self.sizes.backends.min(u16::MAX as u32 + 1) {
            let b = self.maps.backends.get(&i, 0).map_err(map_err("backends"))?;
            if b.service == 0 || !by_index.contains_key(&b.service) {
                continue;
            }
            self.backend_ids.take(i);
            self.backends
                .insert((b.service, ip_from16(b.addr)), (i as u16, b));
        }
        if !self.services.is_empty() {
            info!(
                services = self.services.len(),
                backends = self.backends.len(),
                "recovered data-plane state from pinned maps"
            );
        }
        Ok(())
    }

    /// Sets the clock the program stamps flows with (seconds). vc5d ticks
    /// it with [`DataPlane::tick_clock`]; tests set it to age flows.
    pub fn set_clock(&mut self, now: u32) -> Result<(), Error> {
        let mut s = self.settings;
        s.clock = now;
        // Only the clock differs from what is in the map: a packet that
        // reads the entry meanwhile sees the same slots either way.
        self.write_settings(s)
    }

    /// Writes `settings[0]` and keeps our copy of it.
    fn write_settings(&mut self, s: Settings) -> Result<(), Error> {
        self.maps
            .settings
            .set(0, s, 0)
            .map_err(map_err("settings"))?;
        self.settings = s;
        Ok(())
    }

    /// Sets the clock to [`boot_seconds`]. Call it regularly (vc5d does at
    /// every sweep interval): a flow's `seen` stamp is only as fine as this.
    pub fn tick_clock(&mut self) -> Result<(), Error> {
        self.set_clock(boot_seconds())
    }

    /// The clock as last set.
    pub fn clock(&self) -> u32 {
        self.settings.clock
    }

    /// The map sizes in force.
    pub fn sizes(&self) -> MapSizes {
        self.sizes
    }

    /// The pin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, Error> {
        Ok(self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| Error::Pin(format!("no program {PROGRAM}")))?
            .try_into()?)
    }

    /// Attaches the program to `ifname`: into the pinned link if one exists
    /// (an atomic swap: no packet is missed), else by a new link, pinned.
    pub fn attach(&mut self, ifname: &str, mode: XdpMode) -> Result<Attached, Error> {
        let cname =
            std::ffi::CString::new(ifname).map_err(|_| Error::NoInterface(ifname.into()))?;
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(Error::NoInterface(ifname.into()));
        }
        let pin = self.dir.join("links").join(ifname);
        if pin.exists() {
            match self.swap_into(&pin) {
                Ok(()) => {
                    return Ok(Attached {
                        ifname: ifname.into(),
                        mode: "pinned".into(),
                        reused: true,
                    });
                }
                Err(e) => {
                    // The interface was recreated, or the link is defunct.
                    warn!(%ifname, error = %e, "pinned XDP link unusable, attaching afresh");
                    std::fs::remove_file(&pin)?;
                }
            }
        }
        let tries: &[(XdpMode, AyaMode)] = match mode {
            XdpMode::Auto => &[
                (XdpMode::Native, AyaMode::Driver),
                (XdpMode::Generic, AyaMode::Skb),
            ],
            XdpMode::Native => &[(XdpMode::Native, AyaMode::Driver)],
            XdpMode::Generic => &[(XdpMode::Generic, AyaMode::Skb)],
        };
        let mut last = None;
        for &(m, am) in tries {
            let prog = self.program_mut()?;
            match prog.attach_to_if_index(ifindex, am) {
                Ok(id) => {
                    let link = prog.take_link(id)?;
                    let fd: FdLink = link.try_into().map_err(|e| {
                        Error::Pin(format!("XDP link of {ifname} is not a bpf_link: {e}"))
                    })?;
                    fd.pin(&pin)
                        .map_err(|e| Error::Pin(format!("{}: {e}", pin.display())))?;
                    if mode == XdpMode::Auto && m == XdpMode::Generic {
                        warn!(%ifname, "native XDP refused; running in generic mode");
                    }
                    return Ok(Attached {
                        ifname: ifname.into(),
                        mode: m.to_string(),
                        reused: false,
                    });
                }
                Err(e) => {
                    if mode == XdpMode::Auto {
                        warn!(%ifname, mode = %m, error = %chain(&e), "XDP attach refused");
                    }
                    last = Some((m, e));
                }
            }
        }
        let (m, source) = last.expect("at least one mode tried");
        Err(Error::Attach {
            ifname: ifname.into(),
            mode: m,
            source,
        })
    }

    fn swap_into(&mut self, pin: &Path) -> Result<(), Error> {
        let pinned = PinnedLink::from_pin(pin).map_err(|e| Error::Pin(e.to_string()))?;
        let fd: FdLink = pinned.into();
        let link = XdpLink::try_from(fd).map_err(|e| Error::Pin(e.to_string()))?;
        let prog = self.program_mut()?;
        let id = prog.attach_to_link(link)?;
        // The pin keeps the link; our handle may go.
        let link = prog.take_link(id)?;
        drop(link);
        Ok(())
    }

    /// Removes the link of `ifname` (detaching the program there).
    pub fn detach(&mut self, ifname: &str) -> Result<(), Error> {
        let pin = self.dir.join("links").join(ifname);
        if pin.exists() {
            std::fs::remove_file(pin)?;
        }
        Ok(())
    }

    /// Removes the links of interfaces not in `keep` (a previous vc5d was
    /// attached to them); returns their names.
    pub fn detach_others(&mut self, keep: &[String]) -> Result<Vec<String>, Error> {
        let mut gone = Vec::new();
        for e in std::fs::read_dir(self.dir.join("links"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                std::fs::remove_file(e.path())?;
                gone.push(name);
            }
        }
        Ok(gone)
    }

    /// Applies the desired state: services, their reals, each real's mode
    /// and layer-2 next hop. Only differences are written. When any
    /// service slot, table or backend changed (even if a later write
    /// failed), `settings.generation` is bumped last, so vc5-flowsync
    /// re-reads what it caches of them once they are in place. The first
    /// programming of new maps sets it even when it wrote nothing (no
    /// services): 0 means "never programmed", which vc5-flowsync waits out
    /// before it asks its peers for their flows, or it could place none.
    pub fn program(&mut self, specs: &[ServiceSpec]) -> Result<(), Error> {
        let mut changed = false;
        let r = self.apply(specs, &mut changed);
        if changed || self.settings.generation == 0 {
            let mut s = self.settings;
            s.generation = s.generation.wrapping_add(1).max(1);
            self.write_settings(s)?;
        }
        r
    }

    /// The programming of [`DataPlane::program`]; sets `changed` with
    /// the first write to a map.
    fn apply(&mut self, specs: &[ServiceSpec], changed: &mut bool) -> Result<(), Error> {
        // Validate before touching any map.
        let mut want: HashMap<SvcId, &ServiceSpec> = HashMap::new();
        for s in specs {
            let id = (s.vip, s.port, s.proto);
            if want.insert(id, s).is_some() {
                return Err(Error::Duplicate(svc_name(&id)));
            }
        }
        let max_services = self.sizes.services.min(u16::MAX as u32 + 1) as usize - 1;
        if want.len() > max_services {
            return Err(Error::Full {
                what: "services",
                have: want.len(),
                max: max_services,
            });
        }
        let nb: usize = specs.iter().map(|s| s.reals.len()).sum();
        let max_backends = self.sizes.backends.min(u16::MAX as u32 + 1) as usize - 1;
        if nb > max_backends {
            return Err(Error::Full {
                what: "reals over all services",
                have: nb,
                max: max_backends,
            });
        }

        // Allocate ids for new services and VIPs.
        let mut slots_changed = false;
        let mut want_vips: HashSet<IpAddr> = HashSet::new();
        for (id, _) in want.iter() {
            want_vips.insert(id.0);
        }
        for vip in &want_vips {
            if !self.vips.contains_key(vip) {
                let v = self.vip_ids.alloc().ok_or(Error::Full {
                    what: "VIPs",
                    have: want_vips.len(),
                    max: u16::MAX as usize,
                })?;
                self.vips.insert(*vip, v as u16);
                slots_changed = true;
            }
        }
        let mut ids: Vec<SvcId> = want.keys().copied().collect();
        ids.sort();
        for id in &ids {
            if !self.services.contains_key(id) {
                let index = self.service_ids.alloc().ok_or(Error::Full {
                    what: "services",
                    have: want.len(),
                    max: max_services,
                })?;
                let vip = self.vips[&id.0];
                self.services.insert(
                    *id,
                    SvcState {
                        index: index as u16,
                        vip,
                        table: None,
                        cands: None,
                    },
                );
                slots_changed = true;
            }
        }

        // Backends: compute each one's value; write the usable ones first.
        let mut live: HashSet<(u16, IpAddr)> = HashSet::new();
        let mut later: Vec<(u16, Backend)> = Vec::new();
        let mut candidates: HashMap<SvcId, Vec<Candidate>> = HashMap::new();
        for id in &ids {
            let spec = want[id];
            let sidx = self.services[id].index;
            let mut cands = Vec::new();
            for r in &spec.reals {
                let key = (sidx, r.addr);
                if !live.insert(key) {
                    continue; // the same real listed twice
                }
                let bidx = match self.backends.get(&key) {
                    Some((b, _)) => *b,
                    None => {
                        let b = self.backend_ids.alloc().ok_or(Error::Full {
                            what: "reals over all services",
                            have: nb,
                            max: max_backends,
                        })? as u16;
                        // The index's epoch goes on from its former user,
                        // whose flows CPUs may still have cached.
                        let epoch = self
                            .maps
                            .backends
                            .get(&(b as u32), 0)
                            .map_err(map_err("backends"))?
                            .epoch;
                        let placeholder = Backend {
                            epoch,
                            ..Backend::default()
                        };
                        self.backends.insert(key, (b, placeholder));
                        b
                    }
                };
                let old = self.backends[&key].1;
                let mut v = Backend {
                    service: sidx,
                    addr: addr16(r.addr),
                    epoch: old.epoch,
                    ..Backend::default()
                };
                let usable = match r.l2 {
                    Some(l2) if r.mode != RealMode::Down && l2.mac != [0; 6] => {
                        v.mac = l2.mac;
                        v.src_mac = l2.src_mac;
                        v.ifindex = l2.ifindex;
                        v.flags = BACKEND_USABLE;
                        true
                    }
                    _ => false,
                };
                if usable && r.mode == RealMode::Serve && r.weight > 0 {
                    cands.push(Candidate {
                        addr: r.addr,
                        weight: r.weight,
                        backend: bidx,
                    });
                }
                if old != v {
                    // Any change (a failure, a recovery, a new MAC) makes
                    // the CPUs' cached copies of its flows stale: another
                    // CPU may re-pin a flow while the real is unusable.
                    // (A drain changes nothing here: drained reals keep
                    // their flows, and the caches with them.)
                    v.epoch = old.epoch.wrapping_add(1);
                    if usable {
                        *changed = true;
                        self.maps
                            .backends
                            .set(bidx as u32, v, 0)
                            .map_err(map_err("backends"))?;
                    } else {
                        later.push((bidx, v));
                    }
                    self.backends.insert(key, (bidx, v));
                }
            }
            candidates.insert(*id, cands);
        }

        // Tables: built in parallel (a full build of a 64-real service is
        // a quarter-million hashes), incrementally where the previous
        // table and its candidates are known; then written in order.
        let jobs: Vec<TableJob> = ids
            .iter()
            .map(|id| {
                let st = &self.services[id];
                let cands = &candidates[id][..];
                (*id, st.table.as_deref(), st.cands.as_deref(), cands)
            })
            .filter(|(_, _, old, new)| *old != Some(*new))
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        let chunk = jobs.len().div_ceil(threads).max(1);
        let built: Vec<(SvcId, Box<Table>)> = std::thread::scope(|sc| {
            let handles: Vec<_> = jobs
                .chunks(chunk)
                .map(|part| {
                    sc.spawn(move || {
                        part.iter()
                            .map(|(id, old, old_cands, new)| {
                                let seed = table::service_seed(id.0, id.1, id.2);
                                let t = match (old, old_cands) {
                                    (Some(t), Some(c)) => table::rebuild(seed, t, c, new),
                                    _ => table::build(seed, new),
                                };
                                (*id, t)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("table build panicked"))
                .collect()
        });
        let now = self.settings.clock;
        for (id, mut t) in built {
            let st = self.services.get_mut(&id).expect("allocated above");
            if let Some(old) = st.table.as_deref() {
                // A bucket whose real changes may have flows pinned to the
                // old one: mark it before the change is visible.
                t.moved = old.moved;
                let since = self.moved_since.entry(id).or_insert([0; MOVED_WORDS]);
                for k in 0..TABLE_SIZE {
                    if old.backend[k] != t.backend[k] {
                        t.set_moved(k);
                        since[k / 64] |= 1 << (k % 64);
                        self.moved_at
                            .entry(id)
                            .or_insert_with(|| Box::new([0; TABLE_SIZE]))[k] = now;
                    }
                }
                if old.backend != t.backend && old.moved != t.moved {
                    let mut marked = *old;
                    marked.moved = t.moved;
                    *changed = true;
                    self.maps
                        .tables
                        .set(st.index as u32, marked, 0)
                        .map_err(map_err("tables"))?;
                }
            }
            if st.table.as_deref() != Some(&t) {
                *changed = true;
                self.maps
                    .tables
                    .set(st.index as u32, *t, 0)
                    .map_err(map_err("tables"))?;
                st.table = Some(t);
            }
            st.cands = Some(candidates[&id].clone());
        }

        // Services and VIPs that go.
        let gone: Vec<SvcId> = self
            .services
            .keys()
            .filter(|id| !want.contains_key(id))
            .copied()
            .collect();
        if !gone.is_empty() {
            slots_changed = true;
        }
        let gone_vips: Vec<IpAddr> = self
            .vips
            .keys()
            .filter(|v| !want_vips.contains(v))
            .copied()
            .collect();
        if !gone_vips.is_empty() {
            slots_changed = true;
        }

        // Slots: write the idle half, then flip.
        if slots_changed || self.half_used[(self.settings.active & 1) as usize].is_none() {
            let mut entries: Vec<SvcSlot> = Vec::new();
            for id in &ids {
                let st = &self.services[id];
                entries.push(SvcSlot {
                    key: SvcKey::new(id.0, id.1, id.2),
                    service: st.index,
                    vip: st.vip,
                });
            }
            for vip in &want_vips {
                entries.push(SvcSlot {
                    key: SvcKey::marker(*vip),
                    service: 0,
                    vip: self.vips[vip],
                });
            }
            *changed = true;
            self.write_slots(&entries)?;
        }

        // Now nothing routes to what goes: retire it.
        for id in gone {
            if let Some(st) = self.services.remove(&id) {
                self.service_ids.free(st.index as u32);
            }
        }
        for v in gone_vips {
            if let Some(i) = self.vips.remove(&v) {
                self.vip_ids.free(i as u32);
            }
        }
        for (bidx, v) in later {
            *changed = true;
            self.maps
                .backends
                .set(bidx as u32, v, 0)
                .map_err(map_err("backends"))?;
        }
        let stale: Vec<(u16, IpAddr)> = self
            .backends
            .keys()
            .filter(|k| !live.contains(k))
            .copied()
            .collect();
        let by_index: HashMap<u16, SvcId> =
            self.services.iter().map(|(id, s)| (s.index, *id)).collect();
        for key in stale {
            let (bidx, old) = self.backends.remove(&key).expect("listed above");
            let counters = self.backend_counters(bidx)?;
            if let Some(id) = by_index.get(&key.0) {
                *self.retired.entry(*id).or_default() += counters;
            }
            let freed = Backend {
                epoch: old.epoch.wrapping_add(1),
                ..Backend::default()
            };
            *changed = true;
            self.maps
                .backends
                .set(bidx as u32, freed, 0)
                .map_err(map_err("backends"))?;
            let zero = PerCpuValues::try_from(vec![BackendStats::default(); self.nr_cpus])?;
            self.maps
                .backend_stats
                .set(bidx as u32, zero, 0)
                .map_err(map_err("backend_stats"))?;
            self.backend_ids.free(bidx as u32);
        }
        self.retired.retain(|id, _| want.contains_key(id));
        Ok(())
    }

    /// Places `entries` in the idle half with a seed that keeps every key
    /// within PROBES slots, then makes that half live.
    fn write_slots(&mut self, entries: &[SvcSlot]) -> Result<(), Error> {
        let idle = (self.settings.active & 1) ^ 1;
        let base = idle << SLOT_BITS;
        let mut placed: Option<(u32, HashMap<u32, SvcSlot>)> = None;
        let mut seed = self.settings.seed[idle as usize].wrapping_add(0x9e37_79b9) | 1;
        'seeds: for _ in 0..64 {
            let mut m: HashMap<u32, SvcSlot> = HashMap::new();
            for e in entries {
                let h = crate::hash::slot_hash(&e.key, seed);
                let mut ok = false;
                for p in 0..PROBES {
                    let i = (h.wrapping_add(p)) & (SLOTS - 1);
                    if let std::collections::hash_map::Entry::Vacant(v) = m.entry(i) {
                        v.insert(*e);
                        ok = true;
                        break;
                    }
                }
                if !ok {
                    seed = crate::hash::mix(seed.wrapping_add(1)) | 1;
                    continue 'seeds;
                }
            }
            placed = Some((seed, m));
            break;
        }
        let (seed, m) = placed.ok_or(Error::Slots(entries.len()))?;

        // Clear what the idle half held, then write the new entries.
        let old = match self.half_used[idle as usize].take() {
            Some(u) => u,
            None => (0..SLOTS).map(|i| base | i).collect(),
        };
        for idx in old {
            if !m.contains_key(&(idx & (SLOTS - 1))) {
                self.maps
                    .slots
                    .set(idx, SvcSlot::default(), 0)
                    .map_err(map_err("svc_slots"))?;
            }
        }
        let mut used = HashSet::new();
        for (i, e) in &m {
            self.maps
                .slots
                .set(base | i, e, 0)
                .map_err(map_err("svc_slots"))?;
            used.insert(base | i);
        }
        self.half_used[idle as usize] = Some(used);

        // Seed first (the live half's seed is untouched), then the flip:
        // each write changes one field a packet reads, so none sees a mix.
        let mut s = self.settings;
        s.seed[idle as usize] = seed;
        self.write_settings(s)?;
        s.active = idle;
        self.write_settings(s)
    }

    fn backend_counters(&self, bidx: u16) -> Result<BackendStats, Error> {
        let v = self
            .maps
            .backend_stats
            .get(&(bidx as u32), 0)
            .map_err(map_err("backend_stats"))?;
        let mut sum = BackendStats::default();
        for c in v.iter() {
            sum += *c;
        }
        Ok(sum)
    }

    /// Reads and sums every counter.
    pub fn stats(&self) -> Result<Stats, Error> {
        let mut global = BTreeMap::new();
        for r in Reason::ALL {
            let v = self
                .maps
                .stats
                .get(&(r as u32), 0)
                .map_err(map_err("stats"))?;
            let mut sum = Counter::default();
            for c in v.iter() {
                sum += *c;
            }
            global.insert(r, sum);
        }
        let mut services = Vec::new();
        let mut ids: Vec<(&SvcId, &SvcState)> = self.services.iter().collect();
        ids.sort_by_key(|(id, _)| **id);
        for (id, st) in ids {
            let mut reals = Vec::new();
            let mut total = self.retired.get(id).copied().unwrap_or_default();
            let mut mine: Vec<(IpAddr, u16, u16)> = self
                .backends
                .iter()
                .filter(|((s, _), _)| *s == st.index)
                .map(|((_, addr), (bidx, v))| (*addr, *bidx, v.flags))
                .collect();
            mine.sort();
            for (addr, bidx, flags) in mine {
                let c = self.backend_counters(bidx)?;
                total += c;
                reals.push(RealStats {
                    addr,
                    usable: flags & BACKEND_USABLE != 0,
                    counters: c,
                });
            }
            let d = self
                .maps
                .service_drops
                .get(&(st.index as u32), 0)
                .map_err(map_err("service_drops"))?;
            let mut dropped = Counter::default();
            for c in d.iter() {
                dropped += *c;
            }
            services.push(ServiceStats {
                vip: id.0,
                port: id.1,
                proto: id.2,
                counters: total,
                dropped,
                reals,
            });
        }
        let (flows_evicted, flows_refused_full) = self.flow_table_pressure()?;
        Ok(Stats {
            global,
            services,
            inserts_refused: self.inserts_refused()?,
            flows_evicted,
            flows_refused_full,
        })
    }

    /// Buckets marked moved over all services; a sweep is worth running
    /// while this is not zero.
    pub fn moved_buckets(&self) -> usize {
        self.services
            .values()
            .filter_map(|s| s.table.as_deref())
            .map(Table::moved_count)
            .sum()
    }

    /// Starts a sweep of the flow tables (ours and the peers'): snapshots the tables that
    /// have moved buckets and opens the pinned flow maps for a walk on
    /// another thread ([`Sweep::run`]). None when nothing is marked.
    pub fn sweep_begin(&mut self) -> Result<Option<Sweep>, Error> {
        let snapshot: SweptTables = self
            .services
            .iter()
            .filter_map(|(id, st)| {
                let t = st.table.as_deref()?;
                (t.moved_count() > 0).then(|| {
                    let at = self.moved_at.get(id).cloned();
                    (*id, (st.index, Box::new(t.backend), at))
                })
            })
            .collect();
        if snapshot.is_empty() {
            return Ok(None);
        }
        self.moved_since.clear();
        // Services gone, or with no mark left, need no change times.
        let services = &self.services;
        self.moved_at.retain(|id, _| {
            services
                .get(id)
                .and_then(|s| s.table.as_deref())
                .is_some_and(|t| t.moved_count() > 0)
        });
        let open = |name: &'static str| -> Result<aya::maps::Map, Error> {
            let data =
                MapData::from_pin(self.dir.join("maps").join(name)).map_err(map_err(name))?;
            Ok(aya::maps::Map::LruHashMap(data))
        };
        // Flows last seen before this are dead; none is until the clock
        // has run in this process for a whole timeout, since flows stamped
        // under an older clock may have had packets it did not record.
        let now = self.settings.clock;
        let dead_before = now
            .checked_sub(self.idle_timeout)
            .filter(|t| self.clock_start != 0 && *t >= self.clock_start);
        let v4 = |name| -> Result<SweptTable, Error> {
            Ok(SweptTable::Peer4(
                BpfHashMap::try_from(open(name)?).map_err(map_err(name))?,
            ))
        };
        let v6 = |name| -> Result<SweptTable, Error> {
            Ok(SweptTable::Peer6(
                BpfHashMap::try_from(open(name)?).map_err(map_err(name))?,
            ))
        };
        let m = &self.maps;
        Ok(Some(Sweep {
            snapshot,
            dead_before,
            clock: now,
            tables: vec![
                (TCP, false, SweptTable::Local4(m.flows_tcp4.clone())),
                (TCP, false, SweptTable::Local6(m.flows_tcp6.clone())),
                (UDP, false, SweptTable::Local4(m.flows_udp4.clone())),
                (UDP, false, SweptTable::Local6(m.flows_udp6.clone())),
                (TCP, true, v4("peer_tcp4")?),
                (TCP, true, v6("peer_tcp6")?),
                (UDP, true, v4("peer_udp4")?),
                (UDP, true, v6("peer_udp6")?),
            ],
        }))
    }

    /// Applies a finished sweep: each swept service's moved marks become
    /// those its flows still need, plus buckets that moved meanwhile, plus
    /// any the program set meanwhile. Returns how many marks were cleared.
    pub fn sweep_end(&mut self, r: SweepResult) -> Result<usize, Error> {
        let mut cleared = 0;
        for (id, (index, needed)) in r.moved {
            let Some(st) = self.services.get_mut(&id) else {
                continue;
            };
            if st.index != index {
                continue; // the service was replaced during the sweep
            }
            let Some(ours) = st.table.as_deref() else {
                continue;
            };
            let live = self
                .maps
                .tables
                .get(&(index as u32), 0)
                .map_err(map_err("tables"))?;
            let since = self
                .moved_since
                .get(&id)
                .copied()
                .unwrap_or([0; MOVED_WORDS]);
            let mut t = *ours;
            for w in 0..MOVED_WORDS {
                let by_program = live.moved[w] & !ours.moved[w];
                t.moved[w] = needed[w] | since[w] | by_program;
            }
            if t.moved != ours.moved {
                cleared += ours.moved_count().saturating_sub(t.moved_count());
                self.maps
                    .tables
                    .set(index as u32, t, 0)
                    .map_err(map_err("tables"))?;
                st.table = Some(Box::new(t));
            }
        }
        Ok(cleared)
    }

    /// What vc5-flowsync last published: entry 0 is this host's
    /// vc5-flowsync (all zero when it never ran against these maps), then
    /// the peers it heard, in the order first heard.
    pub fn sync_status(&self) -> Result<(SyncStatus, Vec<SyncStatus>), Error> {
        let own = self
            .maps
            .sync_status
            .get(&0, 0)
            .map_err(map_err("sync_status"))?;
        let mut peers = Vec::new();
        for i in 1..=SYNC_PEERS {
            let p = self
                .maps
                .sync_status
                .get(&i, 0)
                .map_err(map_err("sync_status"))?;
            if p.state != 0 {
                peers.push(p);
            }
        }
        Ok((own, peers))
    }

    /// Flow events the program could not write because the ring was full,
    /// summed over CPUs (vc5-flowsync publishes the same in
    /// `sync_status[0].lost`).
    pub fn flow_events_lost(&self) -> Result<u64, Error> {
        let v = self
            .maps
            .flow_events_lost
            .get(&0, 0)
            .map_err(map_err("flow_events_lost"))?;
        Ok(v.iter().sum())
    }

    /// Sets how many flows one CPU may insert per second (0: no
    /// bound). Over it, a packet that would insert its flow is forwarded
    /// by the table without one ([`DataPlane::inserts_refused`]).
    pub fn set_insert_limit(&mut self, limit: u32) -> Result<(), Error> {
        let mut s = self.settings;
        s.insert_limit = limit;
        self.write_settings(s)
    }

    /// The bound in force ([`DataPlane::set_insert_limit`]).
    pub fn insert_limit(&self) -> u32 {
        self.settings.insert_limit
    }

    /// Inserts the bound refused, summed over the CPUs.
    pub fn inserts_refused(&self) -> Result<u64, Error> {
        let v = self
            .maps
            .cpu_state
            .get(&0, 0)
            .map_err(map_err("cpu_state"))?;
        Ok(v.iter().map(|c| c.refused).sum())
    }

    /// Inserts into two full sets, summed over CPUs: those that overwrote
    /// an idle flow, and those refused because every flow there was seen
    /// within [`EVICT_AGE`]. Either is a sign the flow tables are too small
    /// for the site (or of a flood of new flows).
    pub fn flow_table_pressure(&self) -> Result<(u64, u64), Error> {
        let v = self
            .maps
            .cpu_state
            .get(&0, 0)
            .map_err(map_err("cpu_state"))?;
        Ok((
            v.iter().map(|c| c.evicted as u64).sum(),
            v.iter().map(|c| c.full as u64).sum(),
        ))
    }

    /// Each CPU's guess that its next insert needs the flow's second set
    /// (`cpu_state.deep`, set by its last insert), which makes the program
    /// load that set early.
    pub fn insert_hints(&self) -> Result<Vec<bool>, Error> {
        let v = self
            .maps
            .cpu_state
            .get(&0, 0)
            .map_err(map_err("cpu_state"))?;
        Ok(v.iter().map(|c| c.deep != 0).collect())
    }

    /// Sets every CPU's `cpu_state.deep`: for tests that show the early
    /// load changes no placement. A packet running meanwhile may lose its
    /// CPU's counts.
    pub fn set_insert_hints(&mut self, deep: bool) -> Result<(), Error> {
        let mut v: Vec<CpuState> = self
            .maps
            .cpu_state
            .get(&0, 0)
            .map_err(map_err("cpu_state"))?
            .to_vec();
        for c in v.iter_mut() {
            c.deep = deep as u32;
        }
        let v = PerCpuValues::try_from(v)?;
        self.maps
            .cpu_state
            .set(0, v, 0)
            .map_err(map_err("cpu_state"))
    }

    /// `settings.generation`: bumped by every [`DataPlane::program`] that
    /// changed a service slot, a table or a backend.
    pub fn generation(&self) -> u32 {
        self.settings.generation
    }

    /// Sets `sync_status[0].on`, which makes the program write flow
    /// events. In production only vc5-flowsync writes `sync_status`: this
    /// is for tests and the benchmark.
    pub fn set_sync_on(&mut self, on: bool) -> Result<(), Error> {
        let mut st = self
            .maps
            .sync_status
            .get(&0, 0)
            .map_err(map_err("sync_status"))?;
        st.on = on as u32;
        self.maps
            .sync_status
            .set(0, st, 0)
            .map_err(map_err("sync_status"))
    }

    /// Writes a peer's IPv4 flow into `peer_tcp4`/`peer_udp4`. In
    /// production only vc5-flowsync writes the peer tables (after setting
    /// the bucket's `peer_moved` bit when the flow's real is not the
    /// bucket's): this is for tests.
    pub fn insert_peer_flow4(&mut self, tcp: bool, key: &Flow4, flow: Flow) -> Result<(), Error> {
        let m = if tcp {
            &mut self.maps.peer_tcp4
        } else {
            &mut self.maps.peer_udp4
        };
        m.insert(key, flow, 0).map_err(map_err("peer flows"))
    }

    /// [`DataPlane::insert_peer_flow4`] for IPv6.
    pub fn insert_peer_flow6(&mut self, tcp: bool, key: &Flow6, flow: Flow) -> Result<(), Error> {
        let m = if tcp {
            &mut self.maps.peer_tcp6
        } else {
            &mut self.maps.peer_udp6
        };
        m.insert(key, flow, 0).map_err(map_err("peer flows"))
    }

    /// A peer's IPv4 flow, if the peer table holds it.
    pub fn peer_flow4(&self, tcp: bool, key: &Flow4) -> Option<Flow> {
        let m = if tcp {
            &self.maps.peer_tcp4
        } else {
            &self.maps.peer_udp4
        };
        m.get(key, 0).ok()
    }

    /// A peer's IPv6 flow, if the peer table holds it.
    pub fn peer_flow6(&self, tcp: bool, key: &Flow6) -> Option<Flow> {
        let m = if tcp {
            &self.maps.peer_tcp6
        } else {
            &self.maps.peer_udp6
        };
        m.get(key, 0).ok()
    }

    /// `peer_moved[index]` of a service (by [`DataPlane::service_index`]).
    pub fn peer_moved(&self, index: u16) -> Result<PeerMoved, Error> {
        self.maps
            .peer_moved
            .get(&(index as u32), 0)
            .map_err(map_err("peer_moved"))
    }

    /// Writes `peer_moved[index]`. In production only vc5-flowsync writes
    /// it: this is for tests.
    pub fn set_peer_moved(&mut self, index: u16, moved: PeerMoved) -> Result<(), Error> {
        self.maps
            .peer_moved
            .set(index as u32, moved, 0)
            .map_err(map_err("peer_moved"))
    }

    /// The index of a service (its `tables`, `peer_moved` and
    /// `service_drops` entry), if it is programmed.
    pub fn service_index(&self, vip: IpAddr, port: u16, proto: u8) -> Option<u16> {
        self.services.get(&(vip, port, proto)).map(|s| s.index)
    }

    /// The backend index of a real of a service, if it has one.
    pub fn backend_index(&self, vip: IpAddr, port: u16, proto: u8, real: IpAddr) -> Option<u16> {
        let st = self.services.get(&(vip, port, proto))?;
        self.backends.get(&(st.index, real)).map(|(b, _)| *b)
    }

    /// The table currently written for a service.
    pub fn table(&self, vip: IpAddr, port: u16, proto: u8) -> Option<&Table> {
        self.services.get(&(vip, port, proto))?.table.as_deref()
    }

    /// A service's table as the map holds it now, with the marks the
    /// program set itself since (for tests).
    pub fn live_table(&self, vip: IpAddr, port: u16, proto: u8) -> Option<Table> {
        let index = self.services.get(&(vip, port, proto))?.index;
        self.maps.tables.get(&(index as u32), 0).ok()
    }

    /// Number of entries in each flow table (walks the tables: for tests
    /// and occasional status, not for a hot loop).
    pub fn flow_counts(&self) -> [(&'static str, usize); 4] {
        [
            ("tcp4", self.maps.flows_tcp4.len()),
            ("udp4", self.maps.flows_udp4.len()),
            ("tcp6", self.maps.flows_tcp6.len()),
            ("udp6", self.maps.flows_udp6.len()),
        ]
    }

    fn table4(&self, tcp: bool) -> &FlowTable<Flow4> {
        if tcp {
            &self.maps.flows_tcp4
        } else {
            &self.maps.flows_udp4
        }
    }

    fn table6(&self, tcp: bool) -> &FlowTable<Flow6> {
        if tcp {
            &self.maps.flows_tcp6
        } else {
            &self.maps.flows_udp6
        }
    }

    /// An entry as user space reports it: its stamp widened to the clock.
    fn flow_of(&self, v: FlowVal) -> Flow {
        Flow {
            backend: v.backend as u32,
            seen: widen(v.seen, self.settings.clock),
        }
    }

    /// The backend index a TCP/IPv4 flow is pinned to, if any.
    pub fn flow4(&self, tcp: bool, key: &Flow4) -> Option<u32> {
        self.flow_entry4(tcp, key).map(|f| f.backend)
    }

    /// A TCP/IPv4 flow's entry (its backend and "seen" stamp), if any.
    pub fn flow_entry4(&self, tcp: bool, key: &Flow4) -> Option<Flow> {
        self.table4(tcp).get(key).map(|v| self.flow_of(v))
    }

    /// Writes an IPv4 flow entry where the program would (for tests and
    /// the benchmark).
    pub fn insert_flow4(&mut self, tcp: bool, key: &Flow4, flow: Flow) -> Result<Put, Error> {
        let b = backend16(flow.backend)?;
        Ok(self.table4(tcp).insert(key, b, flow.seen as u16))
    }

    /// Writes an IPv6 flow entry where the program would.
    pub fn insert_flow6(&mut self, tcp: bool, key: &Flow6, flow: Flow) -> Result<Put, Error> {
        let b = backend16(flow.backend)?;
        Ok(self.table6(tcp).insert(key, b, flow.seen as u16))
    }

    /// The backend index an IPv6 flow is pinned to, if any.
    pub fn flow6(&self, tcp: bool, key: &Flow6) -> Option<u32> {
        self.table6(tcp).get(key).map(|v| v.backend as u32)
    }

    /// Forgets an IPv4 flow (its next packet is treated as new).
    pub fn remove_flow4(&mut self, tcp: bool, key: &Flow4) -> Result<(), Error> {
        self.table4(tcp).remove(key);
        Ok(())
    }

    /// Forgets an IPv6 flow.
    pub fn remove_flow6(&mut self, tcp: bool, key: &Flow6) -> Result<(), Error> {
        self.table6(tcp).remove(key);
        Ok(())
    }

    /// The mapped IPv4 flow table of TCP or UDP (for the benchmark and tools).
    pub fn flow_table4(&self, tcp: bool) -> Arc<FlowTable<Flow4>> {
        if tcp {
            self.maps.flows_tcp4.clone()
        } else {
            self.maps.flows_udp4.clone()
        }
    }

    /// The mapped IPv6 flow table of TCP or UDP.
    pub fn flow_table6(&self, tcp: bool) -> Arc<FlowTable<Flow6>> {
        if tcp {
            self.maps.flows_tcp6.clone()
        } else {
            self.maps.flows_udp6.clone()
        }
    }

    /// The loaded XDP program, for `BPF_PROG_TEST_RUN`.
    pub fn xdp(&mut self) -> Result<&mut Xdp, Error> {
        self.program_mut()
    }

    /// Another program of the object (loaded on first use), sharing the
    /// maps: the benchmark's wrapper.
    pub fn xdp_named(&mut self, name: &str) -> Result<&mut Xdp, Error> {
        let p: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| Error::Pin(format!("no program {name}")))?
            .try_into()?;
        if p.fd().is_err() {
            p.load()?;
        }
        Ok(p)
    }
}

/// Per swept service: its index, its table's reals, and when each bucket's
/// real last changed (None: not in this process).
type SweptTables = HashMap<SvcId, (u16, Box<[u16; TABLE_SIZE]>, Option<Box<[u32; TABLE_SIZE]>>)>;

/// A walk of the flow tables, to find which moved buckets still have
/// live flows pinned to another real than the bucket's; dead ones (idle
/// past the timeout) are deleted instead. The peers' flow tables are
/// walked too: a live peer's flow pinned elsewhere keeps its bucket's mark
/// (peer_moved may not have it: vc5-flowsync set that bitmap against the
/// table before it changed), a dead one is ignored but left to
/// vc5-flowsync, which owns those maps. Runs without the [`DataPlane`], on
/// its own map handles, so the control loop goes on.
pub struct Sweep {
    snapshot: SweptTables,
    dead_before: Option<u32>,
    /// settings.clock when the sweep began: this host's flows' 16-bit
    /// stamps are widened against it.
    clock: u32,
    /// The flow tables, TCP and UDP (a UDP service's marks are as much
    /// needed by its flows, since ICMP errors skip the flow table where the
    /// bucket is clean, as a TCP one's), and whether it is a peers' table.
    tables: Vec<(u8, bool, SweptTable)>,
}

/// One flow table of a [`Sweep`]: this host's (mapped), or a peers' map.
enum SweptTable {
    Local4(Arc<FlowTable<Flow4>>),
    Local6(Arc<FlowTable<Flow6>>),
    Peer4(BpfHashMap<MapData, Flow4, Flow>),
    Peer6(BpfHashMap<MapData, Flow6, Flow>),
}

/// What a [`Sweep`] found.
pub struct SweepResult {
    /// Per swept service (and its index then): the buckets still needed.
    moved: HashMap<SvcId, (u16, [u64; MOVED_WORDS])>,
    /// Local flows walked.
    pub flows: usize,
    /// Peers' flows walked.
    pub peer_flows: usize,
    /// Dead flows deleted because they alone kept a bucket marked.
    pub dead: usize,
}

impl Sweep {
    /// Walks the flows (blocking; reads them in batches of thousands per
    /// system call: about a hundred milliseconds for two million).
    pub fn run(self) -> SweepResult {
        let mut moved: HashMap<SvcId, (u16, [u64; MOVED_WORDS])> = self
            .snapshot
            .iter()
            .map(|(id, (index, _, _))| (*id, (*index, [0; MOVED_WORDS])))
            .collect();
        let (mut flows, mut peer_flows) = (0, 0);
        let dead_before = self.dead_before;
        // Is this flow pinned elsewhere than its bucket's real? Then it
        // keeps the bucket marked if alive, and goes if dead (a peer's:
        // is ignored).
        let mut visit = |proto: u8,
                         peer: bool,
                         saddr: [u8; 16],
                         daddr: [u8; 16],
                         sport: u16,
                         dport: u16,
                         f: &Flow|
         -> bool {
            if peer {
                peer_flows += 1;
            } else {
                flows += 1;
            }
            let id = (ip_from16(daddr), u16::from_be(dport), proto);
            let Some((_, table, moved_at)) = self.snapshot.get(&id) else {
                return false;
            };
            let k = crate::hash::flow_hash(&saddr, &daddr, sport, dport, proto) as usize
                & (TABLE_SIZE - 1);
            if table[k] as u32 == f.backend {
                return false;
            }
            // Dead: no packet stamped it for a timeout, and its bucket has
            // been moved (so every packet stamps) for a timeout too.
            let stamped_since = moved_at.as_ref().map_or(0, |m| m[k]);
            if dead_before.is_some_and(|t| f.seen < t && stamped_since < t) {
                return !peer;
            }
            let m = &mut moved.get_mut(&id).expect("same keys").1;
            m[k / 64] |= 1 << (k % 64);
            false
        };
        // Entries that vanish during the walk are skipped; entries added
        // during it are pinned to their bucket's real, or marked by the
        // program itself.
        let a = |x: u32| addr16(IpAddr::V4(std::net::Ipv4Addr::from(x.to_ne_bytes())));
        let mut read = Ok(());
        let mut dead = 0;
        for (proto, peer, table) in &self.tables {
            let (proto, peer) = (*proto, *peer);
            let clock = self.clock;
            let r = match table {
                SweptTable::Local4(t) => {
                    let mut n = 0;
                    dead += t.walk(
                        0,
                        t.sets(),
                        |k, v| {
                            let f = Flow {
                                backend: v.backend as u32,
                                seen: widen(v.seen, clock),
                            };
                            visit(proto, peer, a(k.saddr), a(k.daddr), k.sport, k.dport, &f)
                        },
                        &mut n,
                    );
                    Ok(())
                }
                SweptTable::Local6(t) => {
                    let mut n = 0;
                    dead += t.walk(
                        0,
                        t.sets(),
                        |k, v| {
                            let f = Flow {
                                backend: v.backend as u32,
                                seen: widen(v.seen, clock),
                            };
                            visit(proto, peer, k.saddr, k.daddr, k.sport, k.dport, &f)
                        },
                        &mut n,
                    );
                    Ok(())
                }
                SweptTable::Peer4(m) => {
                    crate::sys::lookup_all::<Flow4, Flow>(m.fd_raw(), |k, v| {
                        visit(proto, peer, a(k.saddr), a(k.daddr), k.sport, k.dport, v);
                    })
                }
                SweptTable::Peer6(m) => {
                    crate::sys::lookup_all::<Flow6, Flow>(m.fd_raw(), |k, v| {
                        visit(proto, peer, k.saddr, k.daddr, k.sport, k.dport, v);
                    })
                }
            };
            read = read.and(r);
        }
        // A map the walk could not read keeps all its marks: report every
        // swept bucket as still needed rather than clear one wrongly.
        if let Err(e) = read {
            warn!(error = %e, "flow-table sweep: reading the flows failed");
            for (_, m) in moved.values_mut() {
                *m = [u64::MAX; MOVED_WORDS];
            }
        }
        SweepResult {
            moved,
            flows,
            peer_flows,
            dead,
        }
    }
}

/// Raw fd of a flow map, for the batch commands of `crate::sys`.
trait RawMapFd {
    fn fd_raw(&self) -> std::os::fd::RawFd;
}

impl<K: aya::Pod, V: aya::Pod> RawMapFd for BpfHashMap<MapData, K, V> {
    fn fd_raw(&self) -> std::os::fd::RawFd {
        use aya::maps::IterableMap;
        use std::os::fd::{AsFd, AsRawFd};
        self.map().fd().as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TempBpffs, require_root};

    #[test]
    fn every_pinned_map_is_checked_on_reuse() {
        require_root();
        let fs = TempBpffs::new().unwrap();
        let dir = fs.path().join("vc5");
        let _dp = DataPlane::open(&dir, MapSizes::small()).unwrap();
        let mut pinned: Vec<String> = std::fs::read_dir(dir.join("maps"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        pinned.sort();
        let mut checked: Vec<String> = expected_maps().iter().map(|m| m.0.to_string()).collect();
        checked.sort();
        assert_eq!(pinned, checked);
    }

    /// Opens, closes, then puts `from`'s pin where `to`'s was: the next
    /// open must refuse the directory, naming the map and what differs.
    fn refused(from: &str, to: &str) -> String {
        require_root();
        let fs = TempBpffs::new().unwrap();
        let dir = fs.path().join("vc5");
        let dp = DataPlane::open(&dir, MapSizes::small()).unwrap();
        let sizes = dp.sizes();
        drop(dp);
        let maps = dir.join("maps");
        std::fs::remove_file(maps.join(to)).unwrap();
        std::fs::rename(maps.join(from), maps.join(to)).unwrap();
        match DataPlane::open(&dir, sizes) {
            Err(e @ Error::Incompatible { .. }) => e.to_string(),
            Err(e) => panic!("{to}: another error: {e}"),
            Ok(_) => panic!("{to}: a foreign map was accepted"),
        }
    }

    #[test]
    fn pinned_flow_sync_maps_of_another_layout_are_refused() {
        let e = refused("flow_events_lost", "flow_events");
        assert!(e.contains("flow_events") && e.contains("RingBuf"), "{e}");
        let e = refused("sync_status", "peer_moved");
        assert!(e.contains("peer_moved") && e.contains("value size"), "{e}");
        let e = refused("flows_tcp6", "peer_tcp4");
        assert!(e.contains("peer_tcp4") && e.contains("key size"), "{e}");
        let e = refused("settings", "flow_events_lost");
        assert!(
            e.contains("flow_events_lost") && e.contains("PerCpuArray"),
            "{e}"
        );
    }

    #[test]
    fn peer_tables_are_sized_like_the_flow_tables() {
        require_root();
        let fs = TempBpffs::new().unwrap();
        let dir = fs.path().join("vc5");
        let sizes = MapSizes {
            services: 32,
            flows_tcp4: 8192,
            flows_tcp6: 2048,
            flows_udp4: 1024,
            flows_udp6: 512,
            ..MapSizes::small()
        };
        let _dp = DataPlane::open(&dir, sizes).unwrap();
        let max = |name: &str| {
            MapInfo::from_pin(dir.join("maps").join(name))
                .unwrap()
                .max_entries()
        };
        assert_eq!(max("peer_tcp4"), 8192);
        assert_eq!(max("peer_tcp6"), 2048);
        assert_eq!(max("peer_udp4"), 1024);
        assert_eq!(max("peer_udp6"), 512);
        assert_eq!(max("peer_moved"), 32);
        assert_eq!(max("flow_events"), FLOW_EVENTS);
        assert_eq!(max("sync_status"), 1 + SYNC_PEERS);
        // The peer tables share one LRU (one writer fills them all); the
        // local ones are mapped into user space, in sets of WAYS.
        let flags = |name: &str| {
            MapInfo::from_pin(dir.join("maps").join(name))
                .unwrap()
                .map_flags()
        };
        const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
        assert_eq!(flags("peer_tcp4") & BPF_F_NO_COMMON_LRU, 0);
        assert_ne!(flags("flows_tcp4") & BPF_F_MMAPABLE, 0);
        assert_eq!(max("flows_tcp4"), 8192 / WAYS as u32, "sets of WAYS flows");
    }
}
