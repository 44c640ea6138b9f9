//! `#[repr(C)]` mirrors of the map keys and values in `bpf/shared.h`, and
//! the constants of `bpf/consts.h`.
//!
//! The layouts are an ABI shared with the kernel side and with pinned maps
//! that outlive a vc5d process, so padding is explicit. The size and every
//! field offset of each mirror are pinned at compile time at the end of
//! this file, by the same numbers as the `_Static_assert`s at the end of
//! `shared.h`, so that a change on one side alone fails the build; the
//! test `btf_layout` also checks them against the object's BTF (bpftool).

use std::net::IpAddr;

/// log2 of the service slots in each half of `svc_slots`.
pub const SLOT_BITS: u32 = 16;
/// Service slots in each half of `svc_slots`.
pub const SLOTS: u32 = 1 << SLOT_BITS;
/// Slots probed at most for one key; user space picks a seed that keeps
/// every key within this distance of its hash.
pub const PROBES: u32 = 8;
/// Buckets in each service's lookup table.
pub const TABLE_SIZE: usize = 4096;
/// Default `max_entries` of `tables` (and the limit on services).
pub const MAX_SERVICES: u32 = 4096;
/// Default `max_entries` of `backends` (and the limit on service × real).
pub const MAX_BACKENDS: u32 = 65536;

/// Seconds for which a CPU's flow-cache entry vouches for a flow the flow table
/// lost (`VC5_CACHE_TRUST`): it must stay below the sweep's idle timeout
/// less a clock tick, or a deleted dead flow comes back from a cache.
pub const CACHE_TRUST: u32 = 300;

/// One packet in this many (per CPU) of those that may insert a flow looks
/// its flow up where the bucket is clean (`VC5_SAMPLE`).
pub const SAMPLE: u32 = 64;
/// Bits of the shared map of SYNs whose flows are still to be inserted
/// (`VC5_PENDING_BITS`): indexed by the flow hash's top bits.
pub const PENDING_BITS: u32 = 20;
/// The program's insert bound per CPU and clock tick where user space
/// sets none (`VC5_INSERT_LIMIT`); [`crate::DataPlane`] writes it into
/// fresh maps.
pub const INSERT_LIMIT: u32 = 100_000;

/// `Backend::flags`: MAC resolved and the real not failed.
pub const BACKEND_USABLE: u16 = 0x1;
/// `Backend::flags`: a tunnel's outer header is IPv6.
pub const BACKEND_OUTER6: u16 = 0x2;
/// `Backend::flags`: `vlan` is the real's tagging (its VID, 0 untagged);
/// without it a layer-2 frame keeps the tag it came with (vlan.h).
pub const BACKEND_VLAN: u16 = 0x4;

/// `Backend::tunnel` (`VC5_TUNNEL_*`): how a packet reaches the real.
pub const TUNNEL_NONE: u8 = 0;
pub const TUNNEL_IPIP: u8 = 1;
pub const TUNNEL_GRE: u8 = 2;
pub const TUNNEL_FOU: u8 = 3;
pub const TUNNEL_GUE: u8 = 4;
/// What an ICMP "too big" answer quotes of the packet at most
/// (`VC5_TOO_BIG_QUOTE`).
pub const TOO_BIG_QUOTE: usize = 128;

/// Why a packet got its verdict: the index of the global `stats` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u32)]
pub enum Reason {
    /// Not IPv4/IPv6; passed to the kernel.
    PassNotIp = 0,
    /// Frame ends before the IP destination; passed.
    PassShort,
    /// Not addressed to a VIP service; passed.
    PassNotVip,
    /// Sent to a real on the same interface (XDP_TX).
    Tx,
    /// Sent to a real behind another interface (redirect).
    Redirect,
    /// An IP fragment addressed to a VIP; dropped.
    DropFragment,
    /// Addressed to a VIP with an invalid or cut L3/L4 header; dropped.
    DropMalformed,
    /// The service had no usable real; dropped.
    DropNoBackend,
    /// An ICMP error quoting a VIP flow, sent to the flow's real.
    IcmpTx,
    /// Too big for its tunnel: answered with ICMP "too big" (XDP_TX).
    TooBigTx,
    /// Too big for its tunnel and not to be answered (IPv4 without DF, an
    /// ICMP error); dropped.
    DropTooBig,
}

impl Reason {
    /// Every reason, in map order.
    pub const ALL: [Reason; 11] = [
        Reason::PassNotIp,
        Reason::PassShort,
        Reason::PassNotVip,
        Reason::Tx,
        Reason::Redirect,
        Reason::DropFragment,
        Reason::DropMalformed,
        Reason::DropNoBackend,
        Reason::IcmpTx,
        Reason::TooBigTx,
        Reason::DropTooBig,
    ];

    /// The verdict this reason implies.
    pub fn verdict(self) -> &'static str {
        match self {
            Reason::PassNotIp | Reason::PassShort | Reason::PassNotVip => "pass",
            Reason::Tx | Reason::IcmpTx | Reason::TooBigTx => "tx",
            Reason::Redirect => "redirect",
            Reason::DropFragment
            | Reason::DropMalformed
            | Reason::DropNoBackend
            | Reason::DropTooBig => "drop",
        }
    }
}

/// `settings[0]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    pub active: u32,
    pub seed: [u32; 2],
    /// Seconds of CLOCK_BOOTTIME as user space last set it (0: never);
    /// flows are stamped with it ([`Flow::seen`]).
    pub clock: u32,
    /// Bumped by vc5d after every programming that changed a service, a
    /// table or a backend; vc5-flowsync re-reads them when it moves.
    pub generation: u32,
    /// Flows one CPU may insert per second (0: no bound); a
    /// packet over it is forwarded all the same, its flow not inserted.
    pub insert_limit: u32,
}

/// A service endpoint as the program sees it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SvcKey {
    /// IPv6, or IPv4 as `::ffff:a.b.c.d`.
    pub addr: [u8; 16],
    /// Network byte order, as on the wire.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl SvcKey {
    pub fn new(addr: IpAddr, port: u16, proto: u8) -> Self {
        SvcKey {
            addr: addr16(addr),
            port: port.to_be(),
            proto,
            _pad: 0,
        }
    }

    /// The VIP's marker entry (port 0, proto 0).
    pub fn marker(addr: IpAddr) -> Self {
        SvcKey::new(addr, 0, 0)
    }

    pub fn addr(&self) -> IpAddr {
        ip_from16(self.addr)
    }

    pub fn port(&self) -> u16 {
        u16::from_be(self.port)
    }
}

/// One slot of `svc_slots`; `vip == 0` is empty.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SvcSlot {
    pub key: SvcKey,
    pub service: u16,
    pub vip: u16,
}

/// Words of `Table::moved`.
pub const MOVED_WORDS: usize = TABLE_SIZE / 64;

/// `tables[service]`: the real of each bucket, and which buckets have
/// moved while flows may still be pinned to a former real (see shared.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    pub backend: [u16; TABLE_SIZE],
    pub moved: [u64; MOVED_WORDS],
}

impl Default for Table {
    fn default() -> Self {
        Table {
            backend: [0; TABLE_SIZE],
            moved: [0; MOVED_WORDS],
        }
    }
}

impl Table {
    pub fn is_moved(&self, bucket: usize) -> bool {
        self.moved[bucket / 64] >> (bucket % 64) & 1 == 1
    }

    pub fn set_moved(&mut self, bucket: usize) {
        self.moved[bucket / 64] |= 1 << (bucket % 64);
    }

    /// How many buckets are marked moved.
    pub fn moved_count(&self) -> usize {
        self.moved.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// `backends[index]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backend {
    pub mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub ifindex: u32,
    pub flags: u16,
    pub service: u16,
    pub addr: [u8; 16],
    /// Bumped with every change of the entry, so that CPUs' flow caches
    /// made before it are stale (see shared.h).
    pub epoch: u16,
    /// FOU/GUE: the real's UDP port, network byte order.
    pub tunnel_port: u16,
    /// Tunnels: the outer source, this host's address (as [`addr16`]).
    pub src_addr: [u8; 16],
    /// Tunnels: the egress MTU (0: not checked).
    pub mtu: u16,
    /// 802.1Q VLAN ID to send with (0: untagged; see [`BACKEND_VLAN`]).
    pub vlan: u16,
    /// `TUNNEL_*`.
    pub tunnel: u8,
    pub _pad: [u8; 3],
}

/// Key of `flows_tcp4` / `flows_udp4`, network byte order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flow4 {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
}

/// Key of `flows_tcp6` / `flows_udp6`, network byte order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flow6 {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

/// The value of one way of this host's flow tables (`vc5_fval`): backend
/// 0 marks a free way; `seen` is the low 16 bits of [`Settings::clock`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowVal {
    pub backend: u16,
    pub seen: u16,
}

/// One way of `flows_tcp4` / `flows_udp4` (see [`crate::flowtable`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Way4 {
    pub key: Flow4,
    pub v: FlowVal,
}

/// One way of `flows_tcp6` / `flows_udp6`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Way6 {
    pub key: Flow6,
    pub v: FlowVal,
}

/// Ways per set of a flow table (`VC5_WAYS`).
pub const WAYS: usize = 4;

/// Seconds a flow's stamp must be old before a new flow may overwrite it
/// in two full sets (`VC5_EVICT_AGE`).
pub const EVICT_AGE: u32 = 120;

/// A set of `flows_tcp4` / `flows_udp4`: one cache line.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Set4 {
    pub way: [Way4; WAYS],
}

/// A set of `flows_tcp6` / `flows_udp6`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Set6 {
    pub way: [Way6; WAYS],
}

/// A flow as user space sees it: a peer's entry (`peer_*` maps, this
/// layout) or one of this host's flow tables' ways, its stamp widened.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    pub backend: u32,
    /// [`Settings::clock`] when a packet last touched the entry (at least
    /// once per clock tick while the flow has packets); 0 for entries
    /// older than this field.
    pub seen: u32,
}

/// An entry of the per-CPU flow caches `flow_cache4` (user space never
/// writes them; mirrored for tests and tools).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cache4 {
    pub key: Flow4,
    pub proto: u8,
    pub _pad: u8,
    pub hits: u16,
    pub backend: u16,
    /// [`Backend::epoch`] when the entry was made.
    pub epoch: u16,
    /// [`Settings::clock`] when the entry was made.
    pub clock: u32,
}

/// An entry of `flow_cache6`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cache6 {
    pub key: Flow6,
    pub proto: u8,
    pub _pad: u8,
    pub hits: u16,
    pub backend: u16,
    pub epoch: u16,
    pub clock: u32,
}

/// `peer_moved[service]`: buckets where a flow learned from a peer may be
/// pinned to another real than the bucket's (owned by vc5-flowsync).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerMoved {
    pub bits: [u64; MOVED_WORDS],
}

impl Default for PeerMoved {
    fn default() -> Self {
        PeerMoved {
            bits: [0; MOVED_WORDS],
        }
    }
}

impl PeerMoved {
    pub fn is_set(&self, bucket: usize) -> bool {
        self.bits[bucket / 64] >> (bucket % 64) & 1 != 0
    }
    pub fn set(&mut self, bucket: usize) {
        self.bits[bucket / 64] |= 1 << (bucket % 64);
    }
    pub fn count(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// `flow_event.kind`: a flow inserted (new, or restored from a CPU's cache).
pub const EVENT_NEW: u8 = 1;
/// A flow whose real was unusable, pinned to its bucket's real.
pub const EVENT_REPIN: u8 = 2;
/// A flow found in a peer's table and now in the local one.
pub const EVENT_TAKEOVER: u8 = 3;
/// A flow's first packet in a new clock tick (the periodic re-report).
pub const EVENT_REFRESH: u8 = 4;

/// Size in bytes of the `flow_events` ring buffer.
pub const FLOW_EVENTS: u32 = 16 << 20;
/// Peers `sync_status` has room for (entries 1..=SYNC_PEERS).
pub const SYNC_PEERS: u32 = 32;
/// Reject reasons counted per peer in [`SyncStatus::rejects`].
pub const SYNC_REASONS: usize = 16;

/// `SyncStatus::state` of entry 0: vc5-flowsync is not listening yet.
pub const SYNC_STARTING: u32 = 0;
/// It has asked its peers for their flows and waits for them.
pub const SYNC_RESYNCING: u32 = 1;
/// Every peer heard has sent its flows, or none answered.
pub const SYNC_SYNCED: u32 = 2;

/// A record of the `flow_events` ring buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowEvent {
    pub kind: u8,
    /// 1: `key` is a [`Flow6`]; 0: a [`Flow4`] in its first 12 bytes.
    pub v6: u8,
    pub proto: u8,
    pub _pad: u8,
    pub backend: u32,
    pub key: [u8; 36],
}

impl FlowEvent {
    /// Parses a ring-buffer record (None when it is too short).
    pub fn from_bytes(b: &[u8]) -> Option<FlowEvent> {
        if b.len() < std::mem::size_of::<FlowEvent>() {
            return None;
        }
        // SAFETY: FlowEvent is plain old data of this many bytes; the read
        // is unaligned because ring-buffer records are only 8-byte aligned.
        Some(unsafe { std::ptr::read_unaligned(b.as_ptr() as *const FlowEvent) })
    }

    pub fn flow4(&self) -> Flow4 {
        // SAFETY: the first 12 bytes of key are a Flow4 when v6 == 0.
        unsafe { std::ptr::read_unaligned(self.key.as_ptr() as *const Flow4) }
    }

    pub fn flow6(&self) -> Flow6 {
        // SAFETY: key is exactly a Flow6.
        unsafe { std::ptr::read_unaligned(self.key.as_ptr() as *const Flow6) }
    }
}

/// An entry of `sync_status`: 0 is this host's vc5-flowsync, 1.. its peers.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// Entry 0: vc5-flowsync runs and wants flow events.
    pub on: u32,
    /// Entry 0: `SYNC_*`; a peer: 1 while the entry is in use.
    pub state: u32,
    pub sender: u64,
    pub epoch: u64,
    /// The peer's source address (entry 0: ours), IPv4 mapped.
    pub addr: [u8; 16],
    pub started_ms: u64,
    /// Entry 0: heartbeat; a peer: when it was last heard.
    pub updated_ms: u64,
    pub datagrams: u64,
    pub records: u64,
    pub written: u64,
    pub gaps: u64,
    pub unknown_real: u64,
    pub rate_limited: u64,
    pub lost: u64,
    pub delay_p50_us: u64,
    pub delay_p99_us: u64,
    pub delay_max_us: u64,
    pub rejects: [u64; SYNC_REASONS],
}

/// `cpu_state[0]`, per CPU: the program's insert budget, its sampling
/// counter and the inserts the budget refused.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuState {
    pub clock: u32,
    pub inserts: u32,
    pub sample: u32,
    pub evicted: u32,
    pub refused: u64,
    pub full: u32,
    /// 1 if this CPU's last insert read its flow's second set: the next
    /// loads that set early.
    pub deep: u32,
}

/// Per-CPU packet and byte counter (`stats`, `service_drops`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Per-CPU counters of one backend (`backend_stats`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackendStats {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

/// `probe_cfg[0]`: vc5d's probe namespace (see `bpf/probe.h`); IPv4
/// addresses in network byte order, IPv6 as on the wire.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeCfg {
    /// The probe veth's host end (0: probes are off).
    pub ifindex: u32,
    /// Where a probe leaves when its way names no interface.
    pub trunk: u32,
    pub ns_mac: [u8; 6],
    pub host_mac: [u8; 6],
    /// This host's address probes to IPv4 VIPs leave from (0: none).
    pub src4: u32,
    /// The namespace's own IPv4 address.
    pub ns4: u32,
    pub src6: [u8; 16],
    pub ns6: [u8; 16],
    pub _pad: u32,
}

/// `probes[index]`: the (VIP, real) pair a NAT address names.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probe {
    /// The way to the real, as its clients' packets take it; flags has
    /// [`BACKEND_USABLE`] while it is known, whatever the real's health.
    pub way: Backend,
    /// The VIP, as [`addr16`].
    pub vip: [u8; 16],
}

/// Key of `probe_replies`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    pub vip: [u8; 16],
    pub vport: u16,
    pub lport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// `probe_stats` indexes (`enum vc5_probe_reason`).
pub const PROBE_SENT: u32 = 0;
pub const PROBE_REPLY: u32 = 1;
pub const PROBE_NO_WAY: u32 = 2;
pub const PROBE_NOT_PROBE: u32 = 3;
pub const PROBE_REASONS: u32 = 4;
/// Pairs a NAT address can name (`VC5_MAX_PROBES`); index 0 is never used.
pub const MAX_PROBES: u32 = 65536;

// The ABI, pinned: the size and field offsets of every mirror, the same
// numbers as the VC5_ABI_SIZE / VC5_ABI_AT assertions at the end of
// bpf/shared.h. A change here must change both, and is a change of the
// pinned maps' layout. FlowEvent is pinned only here and there: a ring
// buffer's records leave no type in the BTF for `btf_layout` to read.
macro_rules! abi {
    ($t:ty, $size:literal $(, $f:ident = $off:literal)* $(,)?) => {
        const _: () = assert!(
            core::mem::size_of::<$t>() == $size,
            concat!("size of ", stringify!($t), " != ", stringify!($size)),
        );
        $(const _: () = assert!(
            core::mem::offset_of!($t, $f) == $off,
            concat!("offset of ", stringify!($t), ".", stringify!($f), " != ", stringify!($off)),
        );)*
    };
}

abi!(
    Settings,
    24,
    active = 0,
    seed = 4,
    clock = 12,
    generation = 16,
    insert_limit = 20
);
abi!(SvcKey, 20, addr = 0, port = 16, proto = 18, _pad = 19);
abi!(SvcSlot, 24, key = 0, service = 20, vip = 22);
abi!(Table, 8704, backend = 0, moved = 8192);
abi!(
    Backend,
    64,
    mac = 0,
    src_mac = 6,
    ifindex = 12,
    flags = 16,
    service = 18,
    addr = 20,
    epoch = 36,
    tunnel_port = 38,
    src_addr = 40,
    mtu = 56,
    vlan = 58,
    tunnel = 60,
    _pad = 61
);
abi!(
    ProbeCfg,
    64,
    ifindex = 0,
    trunk = 4,
    ns_mac = 8,
    host_mac = 14,
    src4 = 20,
    ns4 = 24,
    src6 = 28,
    ns6 = 44,
    _pad = 60
);
abi!(Probe, 80, way = 0, vip = 64);
abi!(
    ProbeKey,
    24,
    vip = 0,
    vport = 16,
    lport = 18,
    proto = 20,
    _pad = 21
);
abi!(Flow4, 12, saddr = 0, daddr = 4, sport = 8, dport = 10);
abi!(Flow6, 36, saddr = 0, daddr = 16, sport = 32, dport = 34);
abi!(Flow, 8, backend = 0, seen = 4);
abi!(FlowVal, 4, backend = 0, seen = 2);
abi!(Way4, 16, key = 0, v = 12);
abi!(Way6, 40, key = 0, v = 36);
abi!(Set4, 64, way = 0);
abi!(Set6, 160, way = 0);
abi!(
    Cache4,
    24,
    key = 0,
    proto = 12,
    _pad = 13,
    hits = 14,
    backend = 16,
    epoch = 18,
    clock = 20
);
abi!(
    Cache6,
    48,
    key = 0,
    proto = 36,
    _pad = 37,
    hits = 38,
    backend = 40,
    epoch = 42,
    clock = 44
);
abi!(PeerMoved, 512, bits = 0);
abi!(
    FlowEvent,
    44,
    kind = 0,
    v6 = 1,
    proto = 2,
    _pad = 3,
    backend = 4,
    key = 8
);
// FlowEvent::key, its last field, holds a whole Flow6.
const _: () = assert!(
    core::mem::size_of::<FlowEvent>() - core::mem::offset_of!(FlowEvent, key)
        == core::mem::size_of::<Flow6>()
);
abi!(
    SyncStatus,
    264,
    on = 0,
    state = 4,
    sender = 8,
    epoch = 16,
    addr = 24,
    started_ms = 40,
    updated_ms = 48,
    datagrams = 56,
    records = 64,
    written = 72,
    gaps = 80,
    unknown_real = 88,
    rate_limited = 96,
    lost = 104,
    delay_p50_us = 112,
    delay_p99_us = 120,
    delay_max_us = 128,
    rejects = 136
);
abi!(
    CpuState,
    32,
    clock = 0,
    inserts = 4,
    sample = 8,
    evicted = 12,
    refused = 16,
    full = 24,
    deep = 28
);
abi!(Counter, 16, packets = 0, bytes = 8);
abi!(BackendStats, 24, packets = 0, bytes = 8, new_flows = 16);

/// Marks map keys and values as [`aya::Pod`].
macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: plain old data: integers and byte arrays with explicit
            // padding, valid for every bit pattern (the size asserts and the
            // BTF layout test hold them to the C structs).
            unsafe impl aya::Pod for $t {}
        )*
    };
}

pod!(
    ProbeCfg,
    Probe,
    ProbeKey,
    Settings,
    CpuState,
    SvcKey,
    SvcSlot,
    Table,
    Backend,
    Flow4,
    Set4,
    Set6,
    Flow6,
    Flow,
    Counter,
    Cache4,
    Cache6,
    BackendStats,
    PeerMoved,
    FlowEvent,
    SyncStatus,
);

/// An address as the program stores it: IPv6, or IPv4 mapped.
pub fn addr16(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The inverse of [`addr16`].
pub fn ip_from16(a: [u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

impl std::ops::AddAssign for Counter {
    fn add_assign(&mut self, o: Counter) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

impl std::ops::AddAssign for BackendStats {
    fn add_assign(&mut self, o: BackendStats) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.new_flows += o.new_flows;
    }
}
