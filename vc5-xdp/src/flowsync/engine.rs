//! The logic of `vc5-flowsync`, free of sockets and maps so that it tests
//! without root: the event loop ([`super::run`]) feeds it datagrams, flow
//! events, map entries and the clock, and carries out what it returns.
//!
//! - [`Resolver`]: this host's services and reals as the pinned maps hold
//!   them, to turn a peer's record (VIP, port, protocol, real address) into
//!   a local backend index, and a local flow into a record.
//! - [`Engine`]: the protocol. Peers are known by the datagrams' source
//!   address; each has a token bucket, sequence-gap and delay accounting and
//!   the reject counters of its `sync_status` entry. It runs the resync
//!   (hello, the peers' dumps, dump end), schedules the dumps this host
//!   sends at `resync_rate`, keeps the `peer_moved` bitmaps it owns and
//!   walks the peer tables in steps ([`Sweep`]).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::keys::Keyring;
use super::replay::{ReplayGuard, START_SLACK_MS};
use super::status::reason_index;
use super::wire::{Datagram, DumpEnd, FlowRecord, MessageType, Op, Opener, Sealer, parse_header};
use crate::dataplane::{TCP, TCP_IDLE_TIMEOUT, UDP};
use crate::hash::flow_hash;
use crate::maps::{
    Backend, Flow, Flow4, Flow6, FlowEvent, PeerMoved, SYNC_PEERS, SYNC_REASONS, SYNC_RESYNCING,
    SYNC_SYNCED, SvcKey, SvcSlot, SyncStatus, TABLE_SIZE, Table, addr16, ip_from16,
};

/// Hello (while resyncing) and alive are sent this often.
pub const HELLO_INTERVAL_MS: u64 = 1000;
pub const ALIVE_INTERVAL_MS: u64 = 1000;
/// The resync is never declared done sooner: time to hear every live peer's
/// alive at least once.
pub const SYNC_MIN_MS: u64 = 1500;
/// How often the end of the resync is re-checked once it may end.
pub const RESYNC_RECHECK_MS: u64 = 100;
/// A peer silent this long is not waited for (it died during our resync).
pub const PEER_SILENT_MS: u64 = 3500;
/// A peer silent this long is forgotten and its status entry freed.
pub const PEER_FORGET_MS: u64 = 300_000;
/// Peers tracked at most (the first [`SYNC_PEERS`] get a status entry).
pub const MAX_PEERS: usize = 256;
/// Datagrams whose send time is further than this from our clock are stale.
pub const MAX_SKEW_MS: u64 = 10_000;
/// Propagation delays kept per peer for the percentiles.
pub const DELAY_WINDOW: usize = 1024;
/// Datagram size for what this host sends.
pub const MAX_LEN: usize = super::wire::DEFAULT_MAX_LEN;

/// The sender id a host derives from its address: IPv4 as a number, IPv6
/// as the xor of its two halves.
pub fn sender_id(addr: IpAddr) -> u64 {
    match addr {
        IpAddr::V4(a) => u32::from(a) as u64,
        IpAddr::V6(a) => {
            let v = u128::from(a);
            (v >> 64) as u64 ^ v as u64
        }
    }
}

/// How [`Sealer::seal_flows`] splits `records` into datagrams of at most
/// `max_len` bytes: the records in each (it packs greedily, in order).
fn pack_counts(records: &[FlowRecord], max_len: usize) -> Vec<u32> {
    use super::wire::{HEADER_LEN, TAG_LEN};
    let room = max_len.saturating_sub(HEADER_LEN + 2 + TAG_LEN);
    let mut out = Vec::new();
    let (mut used, mut n) = (0, 0u32);
    for r in records {
        if n > 0 && used + r.wire_len() > room {
            out.push(n);
            (used, n) = (0, 0);
        }
        used += r.wire_len();
        n += 1;
    }
    if n > 0 {
        out.push(n);
    }
    out
}

/// One of the four flow tables of each kind (local `flows_*`, `peer_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowMap {
    Tcp4 = 0,
    Udp4 = 1,
    Tcp6 = 2,
    Udp6 = 3,
}

impl FlowMap {
    pub const ALL: [FlowMap; 4] = [FlowMap::Tcp4, FlowMap::Udp4, FlowMap::Tcp6, FlowMap::Udp6];

    pub fn of(v6: bool, proto: u8) -> Option<FlowMap> {
        Some(match (v6, proto) {
            (false, TCP) => FlowMap::Tcp4,
            (false, UDP) => FlowMap::Udp4,
            (true, TCP) => FlowMap::Tcp6,
            (true, UDP) => FlowMap::Udp6,
            _ => return None,
        })
    }

    pub fn proto(self) -> u8 {
        match self {
            FlowMap::Tcp4 | FlowMap::Tcp6 => TCP,
            FlowMap::Udp4 | FlowMap::Udp6 => UDP,
        }
    }

    pub fn v6(self) -> bool {
        matches!(self, FlowMap::Tcp6 | FlowMap::Udp6)
    }

    /// The suffix of the map names: `flows_tcp4`, `peer_tcp4`, ...
    pub fn suffix(self) -> &'static str {
        match self {
            FlowMap::Tcp4 => "tcp4",
            FlowMap::Udp4 => "udp4",
            FlowMap::Tcp6 => "tcp6",
            FlowMap::Udp6 => "udp6",
        }
    }
}

/// A flow map key of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowKey {
    V4(Flow4),
    V6(Flow6),
}

impl FlowKey {
    /// The key of a record's tuple (ports in network byte order, as the
    /// program keys flows).
    pub fn of(r: &FlowRecord) -> Option<FlowKey> {
        match (r.saddr, r.daddr) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Some(FlowKey::V4(Flow4 {
                saddr: u32::from_ne_bytes(s.octets()),
                daddr: u32::from_ne_bytes(d.octets()),
                sport: r.sport.to_be(),
                dport: r.dport.to_be(),
            })),
            (IpAddr::V6(s), IpAddr::V6(d)) => Some(FlowKey::V6(Flow6 {
                saddr: s.octets(),
                daddr: d.octets(),
                sport: r.sport.to_be(),
                dport: r.dport.to_be(),
            })),
            _ => None,
        }
    }

    /// Client address, VIP, client port and VIP port (host byte order).
    pub fn tuple(&self) -> (IpAddr, IpAddr, u16, u16) {
        match self {
            FlowKey::V4(k) => (
                Ipv4Addr::from(k.saddr.to_ne_bytes()).into(),
                Ipv4Addr::from(k.daddr.to_ne_bytes()).into(),
                u16::from_be(k.sport),
                u16::from_be(k.dport),
            ),
            FlowKey::V6(k) => (
                Ipv6Addr::from(k.saddr).into(),
                Ipv6Addr::from(k.daddr).into(),
                u16::from_be(k.sport),
                u16::from_be(k.dport),
            ),
        }
    }

    /// The bucket of the flow in its service's table, as the program hashes it.
    pub fn bucket(&self, proto: u8) -> usize {
        let (s, d, sp, dp) = self.tuple();
        flow_hash(&addr16(s), &addr16(d), sp.to_be(), dp.to_be(), proto) as usize & (TABLE_SIZE - 1)
    }
}

/// This host's services and reals, read from the pinned maps.
#[derive(Debug, Default, Clone)]
pub struct Resolver {
    /// `settings.generation` they were read under.
    pub generation: u32,
    services: HashMap<SvcKey, u16>,
    backends: HashMap<(u16, [u8; 16]), u16>,
    reals: HashMap<u32, (u16, IpAddr)>,
    tables: HashMap<u16, Box<Table>>,
}

impl Resolver {
    /// From the live half of `svc_slots`, the `backends` entries (index,
    /// entry) and the `tables` of the services the slots name.
    pub fn new(
        generation: u32,
        slots: impl IntoIterator<Item = SvcSlot>,
        backends: impl IntoIterator<Item = (u32, Backend)>,
        tables: impl IntoIterator<Item = (u16, Table)>,
    ) -> Self {
        let mut services = HashMap::new();
        for s in slots {
            if s.vip != 0 && s.service != 0 {
                services.insert(s.key, s.service);
            }
        }
        let live: BTreeSet<u16> = services.values().copied().collect();
        let mut r = Resolver {
            generation,
            services,
            ..Resolver::default()
        };
        for (i, b) in backends {
            if i == 0 || i > u16::MAX as u32 || !live.contains(&b.service) {
                continue;
            }
            r.backends.insert((b.service, b.addr), i as u16);
            r.reals.insert(i, (b.service, ip_from16(b.addr)));
        }
        for (s, t) in tables {
            if live.contains(&s) {
                r.tables.insert(s, Box::new(t));
            }
        }
        r
    }

    /// Service indexes the slots name (whose tables to read).
    pub fn service_indexes(slots: &[SvcSlot]) -> BTreeSet<u16> {
        slots
            .iter()
            .filter(|s| s.vip != 0 && s.service != 0)
            .map(|s| s.service)
            .collect()
    }

    pub fn service(&self, vip: IpAddr, port: u16, proto: u8) -> Option<u16> {
        self.services.get(&SvcKey::new(vip, port, proto)).copied()
    }

    pub fn backend(&self, service: u16, real: IpAddr) -> Option<u16> {
        self.backends.get(&(service, addr16(real))).copied()
    }

    /// The real behind a local backend index, and its service.
    pub fn real(&self, backend: u32) -> Option<(u16, IpAddr)> {
        self.reals.get(&backend).copied()
    }

    pub fn table(&self, service: u16) -> Option<&Table> {
        self.tables.get(&service).map(|t| &**t)
    }

    pub fn services(&self) -> usize {
        self.services.len()
    }

    /// A local flow (from a flow event or a dump) as a record, if its
    /// backend is one of a live service.
    pub fn record(&self, map: FlowMap, key: &FlowKey, backend: u32) -> Option<FlowRecord> {
        let (_, real) = self.real(backend)?;
        let (saddr, daddr, sport, dport) = key.tuple();
        Some(FlowRecord {
            saddr,
            daddr,
            sport,
            dport,
            protocol: map.proto(),
            real,
            op: Op::Upsert,
        })
    }

    /// A flow event as a record (None for an unknown backend or protocol).
    pub fn event_record(&self, e: &FlowEvent) -> Option<FlowRecord> {
        let map = FlowMap::of(e.v6 != 0, e.proto)?;
        let key = if map.v6() {
            FlowKey::V6(e.flow6())
        } else {
            FlowKey::V4(e.flow4())
        };
        self.record(map, &key, e.backend)
    }

    /// Where a peer's record goes here.
    pub fn resolve(&self, r: &FlowRecord) -> Resolved {
        let (Some(map), Some(key)) = (FlowMap::of(r.saddr.is_ipv6(), r.protocol), FlowKey::of(r))
        else {
            return Resolved::Unknown;
        };
        if r.op == Op::Delete {
            return Resolved::Delete(map, key);
        }
        let Some(service) = self.service(r.daddr, r.dport, r.protocol) else {
            return Resolved::Unknown;
        };
        let Some(backend) = self.backend(service, r.real) else {
            return Resolved::Unknown;
        };
        let bucket = key.bucket(r.protocol);
        let moved = self
            .table(service)
            .is_none_or(|t| t.backend[bucket] != backend);
        Resolved::Upsert(Write {
            map,
            key,
            backend,
            service,
            bucket: bucket as u16,
            moved,
        })
    }
}

/// A peer flow to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    pub map: FlowMap,
    pub key: FlowKey,
    pub backend: u16,
    pub service: u16,
    pub bucket: u16,
    /// The bucket's real is another: `peer_moved[service]` bit `bucket` first.
    pub moved: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Upsert(Write),
    Delete(FlowMap, FlowKey),
    /// Its service or real is unknown here (counted `unknown_real`).
    Unknown,
}

/// What to do with the peer tables for one batch of records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Per [`FlowMap`] index: keys and values to write.
    pub upserts: [Vec<(FlowKey, Flow)>; 4],
    pub deletes: [Vec<FlowKey>; 4],
    /// Services whose `peer_moved` entry changed: write them before the flows.
    pub moved: Vec<(u16, PeerMoved)>,
    pub unknown: u64,
}

impl Plan {
    pub fn writes(&self) -> usize {
        self.upserts.iter().map(Vec::len).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.writes() == 0 && self.deletes.iter().all(Vec::is_empty)
    }
}

/// The iteration state of a batched walk of one map (the kernel's batch
/// token), kept between steps.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub token: u64,
    pub started: bool,
    pub done: bool,
}

/// A walk of the peer tables in steps: deletes idle or unresolvable
/// entries and rebuilds `peer_moved` from what is left.
#[derive(Debug, Default)]
pub struct Sweep {
    pub map: usize,
    pub cursor: Cursor,
    moved: HashMap<u16, PeerMoved>,
    pub deleted: u64,
    pub kept: u64,
}

/// The dump answering one or more hellos.
#[derive(Debug)]
struct Dump {
    requesters: Vec<(u64, u64)>,
    map: usize,
    cursor: Cursor,
    sent: u64,
    budget: f64,
    last_ms: u64,
}

/// One peer, known by its source address.
#[derive(Debug, Clone)]
struct Peer {
    addr: IpAddr,
    slot: Option<usize>,
    sender: u64,
    epoch: u64,
    last_seq: Option<u64>,
    datagrams: u64,
    records: u64,
    written: u64,
    gaps: u64,
    unknown_real: u64,
    rate_limited: u64,
    rejects: [u64; SYNC_REASONS],
    delays: Vec<u64>,
    delay_at: usize,
    delay_max: u64,
    last_heard_ms: u64,
    tokens: f64,
    tokens_ms: u64,
    /// It sent its dump for our hello (our sender and epoch).
    dump_done: bool,
}

impl Peer {
    fn new(addr: IpAddr, now_ms: u64, rate: u32) -> Self {
        Peer {
            addr,
            slot: None,
            sender: 0,
            epoch: 0,
            last_seq: None,
            datagrams: 0,
            records: 0,
            written: 0,
            gaps: 0,
            unknown_real: 0,
            rate_limited: 0,
            rejects: [0; SYNC_REASONS],
            delays: Vec::new(),
            delay_at: 0,
            delay_max: 0,
            last_heard_ms: now_ms,
            tokens: rate as f64,
            tokens_ms: now_ms,
            dump_done: false,
        }
    }

    /// Takes up to `n` tokens; returns how many it got.
    fn take(&mut self, n: usize, now_ms: u64, rate: u32) -> usize {
        let dt = now_ms.saturating_sub(self.tokens_ms) as f64 / 1000.0;
        self.tokens_ms = self.tokens_ms.max(now_ms);
        self.tokens = (self.tokens + dt * rate as f64).min(rate as f64);
        let got = (self.tokens.floor().max(0.0) as usize).min(n);
        self.tokens -= got as f64;
        got
    }

    fn delay(&mut self, us: u64) {
        if self.delays.len() < DELAY_WINDOW {
            self.delays.push(us);
        } else {
            self.delays[self.delay_at] = us;
        }
        self.delay_at = (self.delay_at + 1) % DELAY_WINDOW;
        self.delay_max = self.delay_max.max(us);
    }

    fn percentiles(&self) -> (u64, u64) {
        if self.delays.is_empty() {
            return (0, 0);
        }
        let mut d = self.delays.clone();
        d.sort_unstable();
        let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize];
        (at(0.50), at(0.99))
    }
}

/// Settings of an [`Engine`].
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// This host's `--address`.
    pub addr: IpAddr,
    /// Wall clock at start (ms since 1970) and the epoch (ns).
    pub start_ms: u64,
    pub epoch: u64,
    /// Records per second accepted from one peer.
    pub rate: u32,
    /// Records per second sent in a dump.
    pub resync_rate: u32,
}

/// What [`Engine::receive`] made of a datagram.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// Our own, or rejected (counted).
    Dropped,
    /// A hello, alive or dump end: handled.
    Control,
    /// Flow records to resolve and write (those within the peer's rate);
    /// `peer` for [`Engine::written`].
    Flows {
        peer: usize,
        time_ms: u64,
        records: Vec<FlowRecord>,
    },
}

/// What to send: sealed datagrams, each with the number of flow records
/// it carries (0 for control messages), for the accounting of drops.
pub type Outbound = Vec<(Vec<u8>, u32)>;

/// The protocol state of one vc5-flowsync run (one epoch).
pub struct Engine {
    cfg: EngineConfig,
    sender: u64,
    sealer: Sealer,
    opener: Opener,
    guard: ReplayGuard,
    state: u32,
    peers: Vec<Peer>,
    by_addr: HashMap<IpAddr, usize>,
    slots: [bool; SYNC_PEERS as usize],
    own_rejects: [u64; SYNC_REASONS],
    sent_datagrams: u64,
    sent_records: u64,
    /// Records dropped on our side (send queue full).
    dropped: u64,
    next_hello_ms: u64,
    next_alive_ms: u64,
    last_tick_ms: u64,
    synced_ms: Option<u64>,
    /// Hellos by sender: the epoch answered and, once the dump is done,
    /// how many records it held (to repeat a lost dump end).
    answered: HashMap<u64, (u64, Option<u64>)>,
    pending: Vec<(u64, u64)>,
    dump: Option<Dump>,
    moved: HashMap<u16, PeerMoved>,
    sweep: Option<Sweep>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sender", &self.sender)
            .field("epoch", &self.cfg.epoch)
            .field("state", &self.state)
            .field("peers", &self.peers.len())
            .finish()
    }
}

impl Engine {
    /// Starts resyncing: the first hello and alive are due at once.
    pub fn new(cfg: EngineConfig, keys: &Keyring) -> Self {
        let sender = sender_id(cfg.addr);
        Engine {
            sender,
            sealer: Sealer::new(keys, sender, cfg.epoch),
            opener: Opener::new(keys),
            guard: ReplayGuard::new(MAX_PEERS, MAX_SKEW_MS)
                .not_before(cfg.start_ms.saturating_sub(START_SLACK_MS)),
            state: SYNC_RESYNCING,
            peers: Vec::new(),
            by_addr: HashMap::new(),
            slots: [false; SYNC_PEERS as usize],
            own_rejects: [0; SYNC_REASONS],
            sent_datagrams: 0,
            sent_records: 0,
            dropped: 0,
            next_hello_ms: cfg.start_ms,
            next_alive_ms: cfg.start_ms,
            last_tick_ms: 0,
            synced_ms: None,
            answered: HashMap::new(),
            pending: Vec::new(),
            dump: None,
            moved: HashMap::new(),
            sweep: None,
            cfg,
        }
    }

    pub fn sender(&self) -> u64 {
        self.sender
    }

    pub fn epoch(&self) -> u64 {
        self.cfg.epoch
    }

    pub fn state(&self) -> u32 {
        self.state
    }

    pub fn started_ms(&self) -> u64 {
        self.cfg.start_ms
    }

    /// Whether a sweep of the peer tables is under way.
    pub fn sweeping(&self) -> bool {
        self.sweep.is_some()
    }

    /// When the resync finished (wall clock ms).
    pub fn synced_ms(&self) -> Option<u64> {
        self.synced_ms
    }

    /// A re-read key file: the first key seals from now on, all open.
    pub fn rekey(&mut self, keys: &Keyring) {
        self.sealer.rekey(keys);
        self.opener.rekey(keys);
    }

    /// The `peer_moved` entries the map held at start: ours to keep.
    pub fn load_moved(&mut self, entries: impl IntoIterator<Item = (u16, PeerMoved)>) {
        self.moved = entries
            .into_iter()
            .filter(|(_, m)| m.count() != 0)
            .collect();
    }

    /// Counts a reject against the peer at `src`, or against this host's
    /// entry when `src` is no known peer.
    fn reject(&mut self, src: IpAddr, reason: &str) {
        let i = reason_index(reason);
        match self.by_addr.get(&src) {
            Some(&p) if self.peers[p].slot.is_some() => self.peers[p].rejects[i] += 1,
            _ => self.own_rejects[i] += 1,
        }
    }

    /// The peer at `src`, made on first authenticated contact.
    fn peer(&mut self, src: IpAddr, now_ms: u64) -> usize {
        if let Some(&p) = self.by_addr.get(&src) {
            return p;
        }
        if self.peers.len() >= MAX_PEERS {
            // Full: forget the one heard least recently.
            let (old, _) = self
                .peers
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.last_heard_ms)
                .expect("MAX_PEERS > 0");
            self.forget(old);
        }
        let mut p = Peer::new(src, now_ms, self.cfg.rate);
        p.slot = self.slots.iter().position(|used| !used);
        if let Some(s) = p.slot {
            self.slots[s] = true;
        }
        self.peers.push(p);
        let i = self.peers.len() - 1;
        self.by_addr.insert(src, i);
        i
    }

    fn forget(&mut self, i: usize) {
        let p = self.peers.swap_remove(i);
        if let Some(s) = p.slot {
            self.slots[s] = false;
        }
        self.by_addr.remove(&p.addr);
        if i < self.peers.len() {
            self.by_addr.insert(self.peers[i].addr, i);
        }
    }

    /// One received datagram from `src`.
    pub fn receive(&mut self, src: IpAddr, bytes: &[u8], now_ms: u64) -> Inbound {
        if src == self.cfg.addr {
            return Inbound::Dropped;
        }
        if let Ok(h) = parse_header(bytes)
            && h.sender == self.sender
        {
            return Inbound::Dropped;
        }
        let d: Datagram = match self.opener.open(bytes) {
            Ok(d) => d,
            Err(e) => {
                self.reject(src, e.reason());
                return Inbound::Dropped;
            }
        };
        if let Err(e) = self.guard.accept(&d.header, now_ms) {
            self.reject(src, e.reason());
            return Inbound::Dropped;
        }
        let h = d.header;
        let p = self.peer(src, now_ms);
        let rate = self.cfg.rate;
        let peer = &mut self.peers[p];
        peer.last_heard_ms = now_ms;
        peer.datagrams += 1;
        if (peer.sender, peer.epoch) != (h.sender, h.epoch) {
            peer.sender = h.sender;
            peer.epoch = h.epoch;
            peer.last_seq = None;
        }
        match peer.last_seq {
            Some(last) if h.seq > last => {
                peer.gaps += h.seq - last - 1;
                peer.last_seq = Some(h.seq);
            }
            Some(_) => {} // late, within the replay window
            None => peer.last_seq = Some(h.seq),
        }
        match h.kind {
            MessageType::Flows => {
                let n = d.records.len();
                peer.records += n as u64;
                let ok = peer.take(n, now_ms, rate);
                peer.rate_limited += (n - ok) as u64;
                let mut records = d.records;
                records.truncate(ok);
                Inbound::Flows {
                    peer: p,
                    time_ms: h.time_ms,
                    records,
                }
            }
            MessageType::Alive => Inbound::Control,
            MessageType::DumpEnd => {
                if let Some(end) = d.dump_end
                    && end.requester == self.sender
                    && end.epoch == self.cfg.epoch
                {
                    peer.dump_done = true;
                    self.check_synced(now_ms);
                }
                Inbound::Control
            }
            MessageType::Hello => {
                self.hello(h.sender, h.epoch);
                Inbound::Control
            }
        }
    }

    /// A peer asked for our flows.
    fn hello(&mut self, sender: u64, epoch: u64) {
        match self.answered.get(&sender) {
            Some(&(e, _)) if e > epoch => {}     // an older hello, delayed
            Some(&(e, None)) if e == epoch => {} // its dump is under way or queued
            Some(&(e, Some(_))) if e == epoch => {
                // Asked again after its dump ended: the dump end was lost,
                // or it still waits for another peer. Repeat the end only.
                self.pending.retain(|r| *r != (sender, epoch));
                self.pending.push((sender, u64::MAX));
            }
            _ => {
                if self.answered.len() >= MAX_PEERS && !self.answered.contains_key(&sender) {
                    self.answered.clear();
                }
                self.answered.insert(sender, (epoch, None));
                self.pending.push((sender, epoch));
            }
        }
    }

    /// Resolves accepted records against `resolver` and plans the writes;
    /// sets `peer_moved` bits (returned in the plan) for flows pinned to
    /// another real than their bucket's. Counts `unknown_real`.
    /// `clock` (`settings.clock`) stamps the entries' `seen`.
    pub fn plan(
        &mut self,
        peer: usize,
        records: &[FlowRecord],
        resolver: &Resolver,
        clock: u32,
    ) -> Plan {
        let mut plan = Plan::default();
        let mut dirty = BTreeSet::new();
        for r in records {
            match resolver.resolve(r) {
                Resolved::Unknown => plan.unknown += 1,
                Resolved::Delete(map, key) => plan.deletes[map as usize].push(key),
                Resolved::Upsert(w) => {
                    if w.moved {
                        let m = self.moved.entry(w.service).or_default();
                        if !m.is_set(w.bucket as usize) {
                            m.set(w.bucket as usize);
                            dirty.insert(w.service);
                        }
                        if let Some(sw) = &mut self.sweep {
                            sw.moved
                                .entry(w.service)
                                .or_default()
                                .set(w.bucket as usize);
                        }
                    }
                    plan.upserts[w.map as usize].push((
                        w.key,
                        Flow {
                            backend: w.backend as u32,
                            seen: clock,
                        },
                    ));
                }
            }
        }
        plan.moved = dirty.into_iter().map(|s| (s, self.moved[&s])).collect();
        if let Some(p) = self.peers.get_mut(peer) {
            p.unknown_real += plan.unknown;
        }
        plan
    }

    /// The peer's records were written (`n` of them) at `now_us`.
    pub fn written(&mut self, peer: usize, n: usize, time_ms: u64, now_us: u64) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.written += n as u64;
            p.delay(now_us.saturating_sub(time_ms.saturating_mul(1000)));
        }
    }

    /// Seals records (live ones, or a dump's); counts them as sent.
    pub fn seal(&mut self, records: &[FlowRecord], now_ms: u64) -> Outbound {
        if records.is_empty() {
            return Vec::new();
        }
        match self.sealer.seal_flows(records, now_ms, MAX_LEN) {
            Ok(out) => {
                self.sent_datagrams += out.len() as u64;
                self.sent_records += records.len() as u64;
                let counts = pack_counts(records, MAX_LEN);
                out.into_iter().zip(counts).collect()
            }
            // Any one record fits in MAX_LEN: unreachable in practice.
            Err(_) => {
                self.dropped += records.len() as u64;
                Vec::new()
            }
        }
    }

    /// Records that were sealed but could not be sent.
    pub fn unsent(&mut self, records: u64) {
        self.dropped += records;
    }

    /// Time-driven work: hello, alive, the resync's end, forgetting
    /// silent peers. Returns what to send.
    pub fn tick(&mut self, now_ms: u64) -> Outbound {
        let mut out = Vec::new();
        // A wall clock stepped back must not postpone them by the step.
        self.next_alive_ms = self.next_alive_ms.min(now_ms + ALIVE_INTERVAL_MS);
        self.next_hello_ms = self.next_hello_ms.min(now_ms + HELLO_INTERVAL_MS);
        if self.state == SYNC_RESYNCING && now_ms >= self.next_hello_ms {
            out.push((self.sealer.hello(now_ms), 0));
            self.next_hello_ms = now_ms + HELLO_INTERVAL_MS;
        }
        if now_ms >= self.next_alive_ms {
            out.push((self.sealer.alive(now_ms), 0));
            self.next_alive_ms = now_ms + ALIVE_INTERVAL_MS;
        }
        self.sent_datagrams += out.len() as u64;
        self.last_tick_ms = now_ms;
        self.check_synced(now_ms);
        while let Some(i) = self
            .peers
            .iter()
            .position(|p| now_ms.saturating_sub(p.last_heard_ms) > PEER_FORGET_MS)
        {
            self.forget(i);
        }
        out
    }

    /// The resync is done once [`SYNC_MIN_MS`] have passed and every peer
    /// heard has sent its dump end (or fell silent).
    fn check_synced(&mut self, now_ms: u64) {
        if self.state == SYNC_RESYNCING
            && now_ms >= self.cfg.start_ms + SYNC_MIN_MS
            && self
                .peers
                .iter()
                .all(|p| p.dump_done || now_ms.saturating_sub(p.last_heard_ms) > PEER_SILENT_MS)
        {
            self.state = SYNC_SYNCED;
            self.synced_ms = Some(now_ms);
        }
    }

    /// When [`Engine::tick`] next has something to do. While resyncing
    /// past [`SYNC_MIN_MS`], every [`RESYNC_RECHECK_MS`]: a peer may fall
    /// silent (a dump end ends the resync as it arrives).
    pub fn next_tick_ms(&self) -> u64 {
        let mut t = self.next_alive_ms;
        if self.state == SYNC_RESYNCING {
            let recheck =
                (self.cfg.start_ms + SYNC_MIN_MS).max(self.last_tick_ms + RESYNC_RECHECK_MS);
            t = t.min(self.next_hello_ms).min(recheck);
        }
        t
    }

    /// Whether a dump is running or queued.
    pub fn dumping(&self) -> bool {
        self.dump.is_some() || !self.pending.is_empty()
    }

    /// The next step of the dump: which local map to read, from where, and
    /// at most how many entries (the rate's budget). Also sends the dump
    /// ends a repeated hello asked for (in `out`).
    pub fn dump_step(
        &mut self,
        now_ms: u64,
        out: &mut Outbound,
    ) -> Option<(FlowMap, Cursor, usize)> {
        // Repeated ends first: they need no dump.
        let mut i = 0;
        while i < self.pending.len() {
            let (sender, marker) = self.pending[i];
            if marker == u64::MAX {
                self.pending.remove(i);
                if let Some(&(epoch, Some(sent))) = self.answered.get(&sender) {
                    let end = DumpEnd {
                        requester: sender,
                        epoch,
                        sent,
                    };
                    out.push((self.sealer.dump_end(&end, now_ms), 0));
                    self.sent_datagrams += 1;
                }
            } else {
                i += 1;
            }
        }
        if self.dump.is_none() && !self.pending.is_empty() {
            let rate = self.cfg.resync_rate as f64;
            self.dump = Some(Dump {
                requesters: std::mem::take(&mut self.pending),
                map: 0,
                cursor: Cursor::default(),
                sent: 0,
                budget: (rate / 100.0).max(1.0),
                last_ms: now_ms,
            });
        }
        let rate = self.cfg.resync_rate as f64;
        let d = self.dump.as_mut()?;
        let dt = now_ms.saturating_sub(d.last_ms) as f64 / 1000.0;
        d.last_ms = d.last_ms.max(now_ms);
        // At most 100 ms of budget: the dump is paced, not bursty.
        d.budget = (d.budget + dt * rate).min((rate / 10.0).max(1.0));
        let n = d.budget.floor() as usize;
        if n == 0 {
            return None;
        }
        Some((FlowMap::ALL[d.map], d.cursor, n))
    }

    /// The dump read `read` entries (and sent `records` of them) and its
    /// cursor is now `cursor`. When the last map is done, returns the dump
    /// ends to send.
    pub fn dump_progress(
        &mut self,
        cursor: Cursor,
        read: usize,
        records: &[FlowRecord],
        now_ms: u64,
    ) -> Outbound {
        let mut out = self.seal(records, now_ms);
        let Some(d) = self.dump.as_mut() else {
            return out;
        };
        d.budget -= read.max(1) as f64;
        d.sent += records.len() as u64;
        d.cursor = cursor;
        if cursor.done {
            d.map += 1;
            d.cursor = Cursor::default();
        }
        if d.map < FlowMap::ALL.len() {
            return out;
        }
        let d = self.dump.take().expect("checked above");
        for (requester, epoch) in d.requesters {
            let end = DumpEnd {
                requester,
                epoch,
                sent: d.sent,
            };
            out.push((self.sealer.dump_end(&end, now_ms), 0));
            self.sent_datagrams += 1;
            if let Some(a) = self.answered.get_mut(&requester)
                && a.0 == epoch
            {
                a.1 = Some(d.sent);
            }
        }
        out
    }

    /// Starts a sweep of the peer tables unless one runs.
    pub fn start_sweep(&mut self) {
        if self.sweep.is_none() {
            self.sweep = Some(Sweep::default());
        }
    }

    /// Starts the sweep afresh (the tables changed: what it judged so far
    /// was judged against the old ones). Flows written meanwhile are in the
    /// maps, so the new walk sees them.
    pub fn restart_sweep(&mut self) {
        self.sweep = Some(Sweep::default());
    }

    pub fn sweep_mut(&mut self) -> Option<&mut Sweep> {
        self.sweep.as_mut()
    }

    /// Judges one peer-table entry of the sweep: true to delete it (idle
    /// past [`TCP_IDLE_TIMEOUT`] or no longer resolvable to a live
    /// backend of its service); else records the `peer_moved` bit it needs.
    pub fn sweep_visit(
        &mut self,
        map: FlowMap,
        key: &FlowKey,
        flow: &Flow,
        clock: u32,
        resolver: &Resolver,
    ) -> bool {
        let Some(sw) = self.sweep.as_mut() else {
            return false;
        };
        let idle = clock.wrapping_sub(flow.seen);
        let (_, vip, _, vport) = key.tuple();
        let service = resolver.service(vip, vport, map.proto());
        let live = match (service, resolver.real(flow.backend)) {
            (Some(s), Some((bs, _))) => bs == s,
            _ => false,
        };
        if (flow.seen <= clock && idle > TCP_IDLE_TIMEOUT) || !live {
            sw.deleted += 1;
            return true;
        }
        sw.kept += 1;
        let s = service.expect("live");
        let bucket = key.bucket(map.proto());
        if resolver
            .table(s)
            .is_none_or(|t| t.backend[bucket] as u32 != flow.backend)
        {
            sw.moved.entry(s).or_default().set(bucket);
        }
        false
    }

    /// Ends the sweep: the `peer_moved` entries to write (changed ones,
    /// cleared ones as all zero).
    pub fn finish_sweep(&mut self) -> Vec<(u16, PeerMoved)> {
        let Some(sw) = self.sweep.take() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (s, old) in &self.moved {
            match sw.moved.get(s) {
                Some(new) if new == old => {}
                Some(new) => out.push((*s, *new)),
                None => out.push((*s, PeerMoved::default())),
            }
        }
        for (s, new) in &sw.moved {
            if !self.moved.contains_key(s) {
                out.push((*s, *new));
            }
        }
        self.moved = sw.moved;
        out.sort_by_key(|(s, _)| *s);
        out
    }

    /// Entry 0 and the peers' entries (index 1..=SYNC_PEERS, all of them:
    /// unused ones zero) of `sync_status`.
    pub fn status(&self, now_ms: u64, ring_lost: u64) -> Vec<SyncStatus> {
        let mut v = vec![SyncStatus::default(); 1 + SYNC_PEERS as usize];
        v[0] = SyncStatus {
            on: 1,
            state: self.state,
            sender: self.sender,
            epoch: self.cfg.epoch,
            addr: addr16(self.cfg.addr),
            started_ms: self.cfg.start_ms,
            updated_ms: now_ms,
            datagrams: self.sent_datagrams,
            records: self.sent_records,
            lost: ring_lost + self.dropped,
            rejects: self.own_rejects,
            ..SyncStatus::default()
        };
        for p in &self.peers {
            let Some(slot) = p.slot else { continue };
            let (p50, p99) = p.percentiles();
            v[1 + slot] = SyncStatus {
                on: 0,
                state: 1,
                sender: p.sender,
                epoch: p.epoch,
                addr: addr16(p.addr),
                started_ms: 0,
                updated_ms: p.last_heard_ms,
                datagrams: p.datagrams,
                records: p.records,
                written: p.written,
                gaps: p.gaps,
                unknown_real: p.unknown_real,
                rate_limited: p.rate_limited,
                lost: 0,
                delay_p50_us: p50,
                delay_p99_us: p99,
                delay_max_us: p.delay_max,
                rejects: p.rejects,
            };
        }
        v
    }
}

#[cfg(test)]
mod tests;
