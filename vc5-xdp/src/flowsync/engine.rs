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
mod tests {
    use super::*;
    use crate::flowsync::keys::Key;
    use crate::maps::SYNC_STARTING;

    const NOW: u64 = 1_800_000_000_000;
    const VIP: &str = "192.0.2.80";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn keys() -> Keyring {
        Keyring::new(vec![(1, Key::new([7; 32]))]).unwrap()
    }

    fn engine(addr: &str, start: u64) -> Engine {
        Engine::new(
            EngineConfig {
                addr: ip(addr),
                start_ms: start,
                epoch: start * 1_000_000,
                rate: 1000,
                resync_rate: 1000,
            },
            &keys(),
        )
    }

    fn backend(service: u16, real: &str) -> Backend {
        Backend {
            service,
            addr: addr16(ip(real)),
            flags: 1,
            ..Backend::default()
        }
    }

    /// Service 3 = VIP:80/tcp with reals .11 (index 5) and .12 (index 9);
    /// every bucket of its table holds backend 5.
    fn resolver() -> Resolver {
        let slot = SvcSlot {
            key: SvcKey::new(ip(VIP), 80, TCP),
            service: 3,
            vip: 1,
        };
        let marker = SvcSlot {
            key: SvcKey::marker(ip(VIP)),
            service: 0,
            vip: 1,
        };
        let t = Table {
            backend: [5; TABLE_SIZE],
            ..Table::default()
        };
        Resolver::new(
            1,
            [slot, marker],
            [
                (5, backend(3, "203.0.113.11")),
                (9, backend(3, "203.0.113.12")),
                (10, backend(0, "203.0.113.13")),
                (11, backend(4, "203.0.113.14")),
            ],
            [(3, t)],
        )
    }

    fn record(sport: u16, real: &str) -> FlowRecord {
        FlowRecord {
            saddr: ip("198.51.100.7"),
            daddr: ip(VIP),
            sport,
            dport: 80,
            protocol: TCP,
            real: ip(real),
            op: Op::Upsert,
        }
    }

    #[test]
    fn pack_counts_match_the_sealer() {
        let mut s = peer_sealer("10.0.0.2", 1);
        let mut recs: Vec<FlowRecord> = (0..300).map(|i| record(i, "203.0.113.11")).collect();
        for r in recs.iter_mut().skip(100).step_by(3) {
            r.saddr = ip("2001:db8::7");
            r.daddr = ip("2001:db8::80");
        }
        let sealed = s.seal_flows(&recs, NOW, MAX_LEN).unwrap();
        let counts = pack_counts(&recs, MAX_LEN);
        assert_eq!(sealed.len(), counts.len());
        let o = &mut Opener::new(&keys());
        for (d, n) in sealed.iter().zip(&counts) {
            assert_eq!(o.open(d).unwrap().records.len(), *n as usize);
        }
    }

    #[test]
    fn sender_ids() {
        assert_eq!(sender_id(ip("10.0.0.1")), 0x0a00_0001);
        assert_eq!(
            sender_id(ip("2001:db8::1")),
            0x2001_0db8_0000_0000 ^ 0x0000_0000_0000_0001
        );
    }

    #[test]
    fn resolver_maps_reals_to_local_indexes() {
        let r = resolver();
        assert_eq!(r.service(ip(VIP), 80, TCP), Some(3));
        assert_eq!(r.service(ip(VIP), 81, TCP), None);
        assert_eq!(r.service(ip(VIP), 80, UDP), None);
        assert_eq!(r.backend(3, ip("203.0.113.12")), Some(9));
        // A freed backend (service 0) and one of an unknown service: no.
        assert_eq!(r.real(10), None);
        assert_eq!(r.real(11), None);
        match r.resolve(&record(1000, "203.0.113.11")) {
            Resolved::Upsert(w) => {
                assert_eq!((w.service, w.backend, w.moved), (3, 5, false));
                assert_eq!(w.map, FlowMap::Tcp4);
            }
            x => panic!("{x:?}"),
        }
        match r.resolve(&record(1000, "203.0.113.12")) {
            Resolved::Upsert(w) => assert_eq!((w.backend, w.moved), (9, true)),
            x => panic!("{x:?}"),
        }
        assert_eq!(r.resolve(&record(1, "203.0.113.99")), Resolved::Unknown);
        let mut other_vip = record(1, "203.0.113.11");
        other_vip.daddr = ip("192.0.2.81");
        assert_eq!(r.resolve(&other_vip), Resolved::Unknown);
        let mut icmp = record(1, "203.0.113.11");
        icmp.protocol = 1;
        assert_eq!(r.resolve(&icmp), Resolved::Unknown);
        let mut del = record(1, "203.0.113.99");
        del.op = Op::Delete;
        assert!(matches!(
            r.resolve(&del),
            Resolved::Delete(FlowMap::Tcp4, _)
        ));
    }

    #[test]
    fn keys_and_records_round_trip() {
        let r = resolver();
        let rec = record(40000, "203.0.113.12");
        let key = FlowKey::of(&rec).unwrap();
        let FlowKey::V4(k) = key else { panic!() };
        // Network byte order, as the program keys flows.
        assert_eq!(k.sport, 40000u16.to_be());
        assert_eq!(k.saddr.to_ne_bytes(), [198, 51, 100, 7]);
        assert_eq!(r.record(FlowMap::Tcp4, &key, 9), Some(rec));
        assert_eq!(r.record(FlowMap::Tcp4, &key, 10), None);
        // The bucket is the program's hash of the tuple.
        let want = flow_hash(
            &addr16(rec.saddr),
            &addr16(rec.daddr),
            40000u16.to_be(),
            80u16.to_be(),
            TCP,
        ) as usize
            & 4095;
        assert_eq!(key.bucket(TCP), want);
        let mut key6 = [0u8; 36];
        key6[..16].copy_from_slice(&ip6("2001:db8::7"));
        let e = FlowEvent {
            kind: 1,
            v6: 1,
            proto: UDP,
            _pad: 0,
            backend: 5,
            key: key6,
        };
        let rec6 = r.event_record(&e).unwrap();
        assert_eq!(rec6.saddr, ip("2001:db8::7"));
        assert_eq!(rec6.protocol, UDP);
        assert_eq!(rec6.real, ip("203.0.113.11"));
    }

    fn ip6(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    /// A peer's sealer at `addr`.
    fn peer_sealer(addr: &str, epoch: u64) -> Sealer {
        Sealer::new(&keys(), sender_id(ip(addr)), epoch)
    }

    #[test]
    fn own_datagrams_are_dropped_uncounted() {
        let mut e = engine("10.0.0.1", NOW);
        let mut me = peer_sealer("10.0.0.1", 5);
        assert_eq!(
            e.receive(ip("10.0.0.9"), &me.alive(NOW), NOW),
            Inbound::Dropped
        );
        let mut other = peer_sealer("10.0.0.2", 5);
        assert_eq!(
            e.receive(ip("10.0.0.1"), &other.alive(NOW), NOW),
            Inbound::Dropped
        );
        let st = e.status(NOW, 0);
        assert_eq!(st[0].rejects, [0; SYNC_REASONS]);
        assert_eq!(st[1].state, 0);
    }

    #[test]
    fn rejects_are_counted_by_reason_and_peer() {
        let mut e = engine("10.0.0.1", NOW);
        let src = ip("10.0.0.2");
        // Unknown source: entry 0.
        assert_eq!(e.receive(src, &[1, 2, 3], NOW), Inbound::Dropped);
        let mut s = peer_sealer("10.0.0.2", 5);
        let good = s.alive(NOW);
        assert_eq!(e.receive(src, &good, NOW), Inbound::Control);
        // Now attributed to the peer: a replay, a flipped bit.
        assert_eq!(e.receive(src, &good, NOW), Inbound::Dropped);
        let mut bad = s.alive(NOW);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(e.receive(src, &bad, NOW), Inbound::Dropped);
        let st = e.status(NOW, 0);
        assert_eq!(st[0].rejects[reason_index("short")], 1);
        assert_eq!(st[1].rejects[reason_index("duplicate")], 1);
        assert_eq!(st[1].rejects[reason_index("auth")], 1);
        assert_eq!(st[1].datagrams, 1);
        assert_eq!(st[1].addr, addr16(src));
        assert_eq!(st[1].sender, sender_id(src));
        // From before our start (a recording replayed after a restart).
        let mut old = peer_sealer("10.0.0.3", 4);
        assert_eq!(
            e.receive(ip("10.0.0.3"), &old.alive(NOW - 2000), NOW),
            Inbound::Dropped
        );
        assert_eq!(e.status(NOW, 0)[0].rejects[reason_index("stale")], 1);
    }

    #[test]
    fn rate_limit_gaps_and_delay() {
        let mut e = engine("10.0.0.1", NOW);
        let src = ip("10.0.0.2");
        let mut s = peer_sealer("10.0.0.2", 5);
        let recs: Vec<FlowRecord> = (0..60).map(|i| record(i, "203.0.113.11")).collect();
        let mut accepted = 0;
        // 1,200 records in one instant: the 1,000-token burst passes.
        for _ in 0..20 {
            for d in s.seal_flows(&recs, NOW, MAX_LEN).unwrap() {
                if let Inbound::Flows { records, .. } = e.receive(src, &d, NOW) {
                    accepted += records.len();
                }
            }
        }
        assert_eq!(accepted, 1000);
        // Half a second later, 500 more tokens.
        let d = s.seal_flows(&recs, NOW + 500, MAX_LEN).unwrap();
        let mut later = 0;
        for _ in 0..10 {
            let d = s.seal_flows(&recs, NOW + 500, MAX_LEN).unwrap();
            for d in d {
                if let Inbound::Flows { records, .. } = e.receive(src, &d, NOW + 500) {
                    later += records.len();
                }
            }
        }
        assert_eq!(later, 500);
        // The datagrams of `d` were never received: a gap.
        let seq_skipped = d.len() as u64;
        let st = &e.status(NOW, 0)[1];
        assert_eq!(st.rate_limited, 1200 - 1000 + 600 - 500);
        assert_eq!(st.records, 1800);
        assert_eq!(st.gaps, seq_skipped);
        let r = resolver();
        let p = match e.receive(
            src,
            &s.seal_flows(&recs[..1], NOW + 2000, MAX_LEN).unwrap()[0],
            NOW + 2000,
        ) {
            Inbound::Flows { peer, .. } => peer,
            x => panic!("{x:?}"),
        };
        let plan = e.plan(p, &recs[..1], &r, 1);
        assert_eq!(plan.writes(), 1);
        e.written(p, 1, NOW + 2000, (NOW + 2003) * 1000);
        let st = &e.status(NOW, 0)[1];
        assert_eq!(st.written, 1);
        assert_eq!(
            (st.delay_p50_us, st.delay_p99_us, st.delay_max_us),
            (3000, 3000, 3000)
        );
    }

    #[test]
    fn plan_sets_moved_bits_once_and_counts_unknown() {
        let mut e = engine("10.0.0.1", NOW);
        let r = resolver();
        let recs = vec![
            record(1, "203.0.113.11"), // the bucket's real: no bit
            record(2, "203.0.113.12"), // another: a bit
            record(2, "203.0.113.12"), // the same bit again: not dirty twice
            record(3, "203.0.113.99"), // unknown
        ];
        let src = ip("10.0.0.2");
        let mut s = peer_sealer("10.0.0.2", 5);
        let Inbound::Flows { peer, records, .. } =
            e.receive(src, &s.seal_flows(&recs, NOW, MAX_LEN).unwrap()[0], NOW)
        else {
            panic!()
        };
        let plan = e.plan(peer, &records, &r, 1);
        assert_eq!(plan.writes(), 3);
        assert_eq!(plan.unknown, 1);
        assert_eq!(plan.moved.len(), 1);
        let bucket = FlowKey::of(&recs[1]).unwrap().bucket(TCP);
        assert_eq!(plan.moved[0].0, 3);
        assert!(plan.moved[0].1.is_set(bucket));
        assert_eq!(plan.moved[0].1.count(), 1);
        assert_eq!(plan.upserts[0][1].1.backend, 9);
        // Nothing new to mark the second time.
        assert!(e.plan(peer, &recs[1..2], &r, 1).moved.is_empty());
        assert_eq!(e.status(NOW, 0)[1].unknown_real, 1);
    }

    #[test]
    fn resync_waits_for_every_peer_heard() {
        let mut a = engine("10.0.0.1", NOW);
        assert_eq!(a.state(), SYNC_RESYNCING);
        assert_ne!(a.state(), SYNC_STARTING);
        // At start: a hello and an alive.
        let first = a.tick(NOW);
        assert_eq!(first.len(), 2);
        // B answers: heard, its dump not done yet.
        let mut b = engine("10.0.0.2", NOW - 60_000);
        let Inbound::Control = b.receive(ip("10.0.0.1"), &first[0].0, NOW) else {
            panic!()
        };
        assert!(b.dumping());
        let mut b_out = Vec::new();
        let (map, cur, n) = b.dump_step(NOW, &mut b_out).unwrap();
        assert_eq!((map, cur, n), (FlowMap::Tcp4, Cursor::default(), 10));
        // B's alive reaches A: A now waits for B's dump.
        let alive = b.tick(NOW + 1).pop().unwrap().0;
        assert_eq!(a.receive(ip("10.0.0.2"), &alive, NOW + 1), Inbound::Control);
        a.tick(NOW + 1600);
        assert_eq!(a.state(), SYNC_RESYNCING);
        // B's dump: four maps, then the end.
        let done = Cursor {
            done: true,
            ..Cursor::default()
        };
        let recs = vec![record(7, "203.0.113.11")];
        let mut sent = b.dump_progress(done, 1, &recs, NOW + 2);
        for _ in 0..3 {
            b.dump_step(NOW + 1000, &mut b_out).unwrap();
            sent.extend(b.dump_progress(done, 0, &[], NOW + 1000));
        }
        assert!(!b.dumping());
        assert_eq!(sent.len(), 2); // one Flows, one DumpEnd
        assert_eq!(sent[0].1, 1);
        for (d, _) in &sent {
            a.receive(ip("10.0.0.2"), d, NOW + 1001);
        }
        a.tick(NOW + 1700);
        assert_eq!(a.state(), SYNC_SYNCED);
        assert_eq!(a.synced_ms(), Some(NOW + 1700));
        // A hello repeated after the end: only the end again.
        let mut again = Sealer::new(&keys(), a.sender(), a.epoch());
        let _ = again.alive(NOW); // seq 0 was the first hello's: skip past A's
        for _ in 0..10 {
            let _ = again.alive(NOW);
        }
        b.receive(ip("10.0.0.1"), &again.hello(NOW + 1100), NOW + 1100);
        let mut ends = Vec::new();
        assert!(b.dump_step(NOW + 1100, &mut ends).is_none());
        assert_eq!(ends.len(), 1);
        let d = Opener::new(&keys()).open(&ends[0].0).unwrap();
        assert_eq!(
            d.dump_end,
            Some(DumpEnd {
                requester: a.sender(),
                epoch: a.epoch(),
                sent: 1
            })
        );
    }

    #[test]
    fn next_tick_is_never_stuck_in_the_past() {
        let mut a = engine("10.0.0.1", NOW);
        let mut b = peer_sealer("10.0.0.2", 5);
        a.receive(ip("10.0.0.2"), &b.alive(NOW), NOW);
        a.tick(NOW);
        assert_eq!(a.next_tick_ms(), NOW + HELLO_INTERVAL_MS);
        a.tick(NOW + HELLO_INTERVAL_MS);
        assert_eq!(a.next_tick_ms(), NOW + SYNC_MIN_MS);
        a.tick(NOW + SYNC_MIN_MS);
        assert_eq!(a.state(), SYNC_RESYNCING); // waits for B's dump end
        assert_eq!(a.next_tick_ms(), NOW + SYNC_MIN_MS + RESYNC_RECHECK_MS);
        // The dump end ends the resync on arrival.
        let end = DumpEnd {
            requester: a.sender(),
            epoch: a.epoch(),
            sent: 0,
        };
        a.receive(ip("10.0.0.2"), &b.dump_end(&end, NOW + 1600), NOW + 1600);
        assert_eq!(a.state(), SYNC_SYNCED);
        assert_eq!(a.next_tick_ms(), NOW + ALIVE_INTERVAL_MS * 2);
    }

    #[test]
    fn a_clock_stepped_back_delays_nothing() {
        let mut a = engine("10.0.0.1", NOW);
        a.tick(NOW);
        // The clock steps back an hour: the next alive is still a second away.
        let back = NOW - 3_600_000;
        assert!(a.tick(back).is_empty());
        assert_eq!(a.next_tick_ms(), back + ALIVE_INTERVAL_MS);
        assert_eq!(a.tick(back + ALIVE_INTERVAL_MS).len(), 2); // hello and alive
    }

    #[test]
    fn resync_alone_and_a_peer_that_died() {
        let mut a = engine("10.0.0.1", NOW);
        a.tick(NOW);
        a.tick(NOW + 1499);
        assert_eq!(a.state(), SYNC_RESYNCING);
        a.tick(NOW + 1500);
        assert_eq!(a.state(), SYNC_SYNCED);

        let mut a = engine("10.0.0.1", NOW);
        let mut b = peer_sealer("10.0.0.2", 5);
        a.receive(ip("10.0.0.2"), &b.alive(NOW), NOW);
        a.tick(NOW + 2000);
        assert_eq!(a.state(), SYNC_RESYNCING);
        a.tick(NOW + PEER_SILENT_MS + 1);
        assert_eq!(a.state(), SYNC_SYNCED);
    }

    #[test]
    fn dump_is_paced() {
        let mut b = engine("10.0.0.2", NOW);
        let mut h = peer_sealer("10.0.0.1", 5);
        b.receive(ip("10.0.0.1"), &h.hello(NOW), NOW);
        let mut out = Vec::new();
        let (_, _, n) = b.dump_step(NOW, &mut out).unwrap();
        assert_eq!(n, 10); // 10 ms of 1,000/s
        let cur = Cursor {
            token: 7,
            started: true,
            done: false,
        };
        b.dump_progress(cur, 10, &[], NOW);
        assert!(b.dump_step(NOW, &mut out).is_none());
        let (_, c, n) = b.dump_step(NOW + 50, &mut out).unwrap();
        assert_eq!((c, n), (cur, 50));
        // Budget is capped at 100 ms of the rate.
        b.dump_progress(cur, 50, &[], NOW + 50);
        let (_, _, n) = b.dump_step(NOW + 10_000, &mut out).unwrap();
        assert_eq!(n, 100);
        // The same hello twice starts one dump.
        b.receive(ip("10.0.0.1"), &h.hello(NOW + 10), NOW + 10);
        assert!(b.pending.is_empty());
    }

    #[test]
    fn sweep_deletes_idle_and_rebuilds_moved() {
        let mut e = engine("10.0.0.1", NOW);
        let r = resolver();
        e.load_moved([(3, {
            let mut m = PeerMoved::default();
            m.set(1);
            m
        })]);
        e.start_sweep();
        let k1 = FlowKey::of(&record(1, "203.0.113.12")).unwrap();
        let k2 = FlowKey::of(&record(2, "203.0.113.11")).unwrap();
        let k3 = FlowKey::of(&record(3, "203.0.113.12")).unwrap();
        let clock = 10_000;
        let f = |backend, seen| Flow { backend, seen };
        // Live, pinned elsewhere than its bucket: kept, its bit set.
        assert!(!e.sweep_visit(FlowMap::Tcp4, &k1, &f(9, clock - 10), clock, &r));
        // Live, the bucket's real: kept, no bit.
        assert!(!e.sweep_visit(FlowMap::Tcp4, &k2, &f(5, clock), clock, &r));
        // Idle: deleted.
        assert!(e.sweep_visit(FlowMap::Tcp4, &k3, &f(9, clock - 901), clock, &r));
        // A backend index that is no longer this service's: deleted.
        assert!(e.sweep_visit(FlowMap::Tcp4, &k2, &f(11, clock), clock, &r));
        let w = e.finish_sweep();
        assert_eq!(w.len(), 1);
        let (s, m) = w[0];
        assert_eq!(s, 3);
        assert_eq!(m.count(), 1);
        assert!(m.is_set(k1.bucket(TCP)));
        // A second sweep with nothing left clears the entry.
        e.start_sweep();
        let w = e.finish_sweep();
        assert_eq!(w, vec![(3, PeerMoved::default())]);
    }

    #[test]
    fn writes_during_a_sweep_keep_their_bits() {
        let mut e = engine("10.0.0.1", NOW);
        let r = resolver();
        e.start_sweep();
        let rec = record(2, "203.0.113.12");
        let src = ip("10.0.0.2");
        let mut s = peer_sealer("10.0.0.2", 5);
        let Inbound::Flows { peer, records, .. } =
            e.receive(src, &s.seal_flows(&[rec], NOW, MAX_LEN).unwrap()[0], NOW)
        else {
            panic!()
        };
        let plan = e.plan(peer, &records, &r, 1);
        assert_eq!(plan.moved.len(), 1);
        // The sweep never visits it (written behind its cursor): kept.
        assert!(e.finish_sweep().is_empty());
        assert!(e.moved[&3].is_set(FlowKey::of(&rec).unwrap().bucket(TCP)));
    }

    #[test]
    fn peer_table_is_bounded_and_slots_reused() {
        let mut e = engine("10.0.0.1", NOW);
        for i in 0..(SYNC_PEERS + 2) {
            let a = format!("10.0.1.{i}");
            let mut s = peer_sealer(&a, 5);
            assert_eq!(e.receive(ip(&a), &s.alive(NOW), NOW), Inbound::Control);
        }
        let st = e.status(NOW, 0);
        assert!(st[1..].iter().all(|s| s.state == 1));
        // Peers beyond the slots count their rejects in entry 0: its
        // first alive (sequence 0) replayed.
        let mut s = peer_sealer("10.0.1.33", 5);
        let d = s.alive(NOW);
        assert_eq!(e.receive(ip("10.0.1.33"), &d, NOW), Inbound::Dropped);
        assert_eq!(e.status(NOW, 0)[0].rejects[reason_index("duplicate")], 1);
        // Silent long enough: forgotten, their slots free for others.
        let later = NOW + PEER_FORGET_MS + 1;
        e.tick(later);
        assert!(e.status(later, 0)[1..].iter().all(|s| s.state == 0));
        let mut s = peer_sealer("10.0.2.1", 5);
        e.receive(ip("10.0.2.1"), &s.alive(later), later);
        assert_eq!(e.status(later, 0)[1].addr, addr16(ip("10.0.2.1")));
    }

    #[test]
    fn garbage_never_panics() {
        let mut e = engine("10.0.0.1", NOW);
        let mut x: u64 = 0x1234_5678;
        for len in 0..2000usize {
            let b: Vec<u8> = (0..len % 1500)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert_eq!(e.receive(ip("10.0.0.2"), &b, NOW), Inbound::Dropped);
        }
    }
}
