//! What vc5d shows and what it can be asked to do, shared by the D-Bus
//! service, the console (`/status.json`, `/metrics`) and the control loop.
//!
//! The control loop owns the state; it publishes a fresh [`Status`] on a
//! `watch` channel after every change (and every few seconds for the
//! counters), sends [`Event`]s on a `broadcast` channel as they happen, and
//! receives [`Command`]s on an `mpsc` channel, answering each on its own
//! `oneshot`. Readers never lock the control loop.

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Everything an operator can see, as of `at`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// vc5d's version (the crate's).
    pub version: String,
    /// Unix time in milliseconds of this snapshot.
    pub at_ms: u64,
    /// Unix time in milliseconds when vc5d started.
    pub started_ms: u64,
    /// Unix time in milliseconds when vc5d became ready (the data plane
    /// first programmed, `READY=1` sent); None while it is starting.
    pub ready_ms: Option<u64>,
    /// Reloads asked for (SIGHUP, D-Bus, the console) and how the last went.
    pub reloads: ReloadStatus,
    /// The configuration file in force.
    pub config: String,
    /// XDP attachments: interface and mode.
    pub interfaces: Vec<InterfaceStatus>,
    /// One entry per (VIP, port, protocol).
    pub services: Vec<ServiceStatus>,
    /// Every VIP and whether it may be / is announced.
    pub vips: Vec<VipStatus>,
    /// Route health injection: BIRD or the built-in BGP speaker.
    pub rhi: RhiStatus,
    /// Data-plane counters by reason (`tx`, `pass_not_vip`, `drop_fragment`, …).
    pub global: BTreeMap<String, Counter>,
    /// Probes through the VIP by what became of them (`sent`, `reply`,
    /// `no_way`, `not_probe`); empty without a probe namespace's counts.
    pub probes: BTreeMap<String, Counter>,
    /// Recent log events, oldest first (bounded).
    pub events: VecDeque<LogEvent>,
    /// Set while vc5d holds the data plane and the VIPs as they are because
    /// the trouble is its own (a link without carrier, every real failing at
    /// once): what is wrong and since when.
    pub local_trouble: Option<LocalTrouble>,
    /// Flow sync: whether it is configured, whether vc5d holds its
    /// announcements for it, this host's vc5-flowsync and its peers.
    pub flow_sync: FlowSyncStatus,
    /// The flow table's insert bound and what it refused.
    pub flow_table: FlowTableStatus,
}

/// Reloads of the configuration since vc5d started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    /// Reloads that took effect.
    pub done: u64,
    /// Reloads refused (the running configuration stayed).
    pub refused: u64,
    /// The last reload, if any.
    pub last: Option<LastReload>,
}

/// How the last reload went.
#[derive(Debug, Clone, Serialize)]
pub struct LastReload {
    /// Unix time in milliseconds when it ended.
    pub at_ms: u64,
    /// Whether it took effect.
    pub ok: bool,
    /// Why it was refused.
    pub error: Option<String>,
}

/// The data plane's bound on new flows (`flow_insert_limit`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlowTableStatus {
    /// New flows one CPU may insert per second (0: no bound).
    pub insert_limit: u32,
    /// New flows forwarded without an entry because a CPU was over the
    /// limit, since the maps were created.
    pub inserts_refused: u64,
    /// New flows that overwrote an idle flow (both their sets full).
    pub evicted: u64,
    /// New flows forwarded without an entry because both their sets were
    /// full of recently seen flows.
    pub refused_full: u64,
}

/// Flow sync as vc5d sees it: its own settings and hold, and what
/// vc5-flowsync last published in the pinned `sync_status` map.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlowSyncStatus {
    /// `multicast` and `flow_sync_key` are both set.
    pub configured: bool,
    /// The flow-sync group (`multicast`), if set.
    pub group: Option<String>,
    /// `flow_sync_wait` in milliseconds.
    pub wait_ms: u64,
    /// vc5d announces no VIP until vc5-flowsync has resynced, or until
    /// `holding_until_ms`.
    pub holding_announcements: bool,
    /// Unix time in milliseconds when the hold ends at the latest (0: no hold).
    pub holding_until_ms: u64,
    /// This host's vc5-flowsync.
    pub local: FlowSyncLocal,
    /// The peers it hears, in the order first heard.
    pub peers: Vec<FlowSyncPeer>,
}

/// This host's vc5-flowsync (entry 0 of `sync_status`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlowSyncLocal {
    /// Its heartbeat is fresh (at most 2 s old) and it is on.
    pub running: bool,
    /// `starting`, `resyncing` or `synced`; `none` when it never ran
    /// against these maps.
    pub state: String,
    /// Its sender id, hexadecimal (a JavaScript number cannot hold 64 bits).
    pub sender: String,
    /// Its epoch: CLOCK_REALTIME in nanoseconds at its start.
    pub epoch: u64,
    pub addr: Option<IpAddr>,
    /// Unix time in milliseconds when it started (0: never).
    pub started_ms: u64,
    /// Unix time in milliseconds of its last heartbeat (0: never).
    pub heartbeat_ms: u64,
    pub sent_datagrams: u64,
    pub sent_records: u64,
    /// Flow events the ring buffer had no room for.
    pub lost_events: u64,
    /// Rejected datagrams no peer slot could be found for, by reason.
    pub rejects: BTreeMap<String, u64>,
}

/// One peer load balancer as this host's vc5-flowsync hears it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlowSyncPeer {
    /// The source address of its datagrams.
    pub addr: Option<IpAddr>,
    /// Its sender id, hexadecimal.
    pub sender: String,
    pub epoch: u64,
    /// Datagrams accepted from it.
    pub datagrams: u64,
    /// Flow records received from it.
    pub records: u64,
    /// Records written into the peer flow tables.
    pub written: u64,
    /// Sequence numbers its datagrams skipped (datagrams lost on the way).
    pub gaps: u64,
    /// Records naming a service or real this host does not know.
    pub unknown_real: u64,
    /// Records dropped for exceeding `flow_sync_rate`.
    pub rate_limited: u64,
    /// Rejected datagrams by reason (`auth`, `duplicate`, …).
    pub rejects: BTreeMap<String, u64>,
    /// Unix time in milliseconds when it was last heard.
    pub last_heard_ms: u64,
    /// How long ago that was, as of the snapshot, in milliseconds.
    pub last_heard_ago_ms: u64,
    /// Propagation delay (its send time to the write here), in microseconds.
    pub delay_p50_us: u64,
    pub delay_p99_us: u64,
    pub delay_max_us: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LocalTrouble {
    pub reason: String,
    /// Unix time in milliseconds when the hold began.
    pub since_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// `native`, `generic` or `pinned` (an existing link was reused).
    pub mode: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlowCounters {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

/// One service endpoint.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceStatus {
    /// The configuration's service name (several endpoints may share it).
    pub name: String,
    pub desc: String,
    pub vip: Option<IpAddr>,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// How packets reach the reals: `l2`, `ipip`, `gre`, `fou` or `gue`.
    pub forward: String,
    /// The UDP port of `fou` and `gue`.
    pub tunnel_port: Option<u16>,
    /// `up` while at least `need` reals are healthy, else `down`.
    pub state: String,
    pub need: usize,
    pub healthy: usize,
    pub total: usize,
    pub counters: FlowCounters,
    /// Packets dropped because no real was usable.
    pub dropped: Counter,
    pub reals: Vec<RealStatus>,
}

/// One real of one service.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RealStatus {
    pub addr: Option<IpAddr>,
    /// `serving`, `drained`, `failed`, `disabled` or `unresolved`.
    pub state: String,
    pub healthy: bool,
    pub drained: bool,
    pub disabled: bool,
    pub weight: u32,
    /// Its service's forwarding method (`l2`, `ipip`, `gre`, `fou`, `gue`).
    pub forward: String,
    /// Where its packets go: the gateway the route names, or the real
    /// itself when it is on-link; None while it cannot be reached.
    pub next_hop: Option<IpAddr>,
    /// The next hop's MAC as resolved (`aa:bb:…`): the real's own when it
    /// is on-link, the gateway's otherwise.
    pub mac: Option<String>,
    /// The 802.1Q VLAN its frames are tagged with (`vlans`); None without
    /// `vlans` (frames keep the tag they came with) or while unreachable.
    pub vlan: Option<u16>,
    /// Why it does not count toward `need` (unreachable, disabled, the
    /// failing checks); empty when it does or when it is drained.
    pub reason: String,
    /// The latest result of each of its checks.
    pub checks: Vec<CheckStatus>,
    pub counters: FlowCounters,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckStatus {
    /// e.g. `http:80`; `NAME via VIP` for a check through one of its
    /// service's several VIPs.
    pub name: String,
    /// Where it probes: `real` (the real's own address) or `vip`.
    pub probe: crate::config::ProbeVia,
    /// The VIP a `probe: vip` check goes through.
    pub via: Option<IpAddr>,
    pub passing: bool,
    /// Why the last attempt failed (`connection refused`, `HTTP 503`, …);
    /// empty when it passed.
    pub reason: String,
    pub latency_ms: f64,
    /// Unix time in milliseconds of the last attempt (0: none yet).
    pub at_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VipStatus {
    pub vip: Option<IpAddr>,
    /// Every service on every port of the VIP is up.
    pub announceable: bool,
    /// Route health injection reports it announced.
    pub announced: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RhiStatus {
    /// `bird`, `bgp` or `none`.
    pub mode: String,
    /// One line per BIRD connection or BGP peer: name, state, last error.
    pub sessions: Vec<SessionStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionStatus {
    pub peer: String,
    /// e.g. `established`, `connect`, `idle`; for BIRD `up` / `down`.
    pub state: String,
    pub last_error: String,
    /// 1 when established/up, for the metrics gauge.
    pub up: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LogEvent {
    pub at_ms: u64,
    /// `info`, `warn` or `error`.
    pub level: String,
    pub message: String,
}

/// Something that happened, for D-Bus signals and the console.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Event {
    /// A real's health changed for a service (`service` is the
    /// configuration's service name, `real` its address).
    RealHealth {
        service: String,
        real: IpAddr,
        healthy: bool,
        reason: String,
    },
    /// A real was drained (true) or undrained (false) for a service.
    RealDrain {
        service: String,
        real: IpAddr,
        drained: bool,
    },
    /// A VIP was announced (true) or withdrawn (false).
    Vip { vip: IpAddr, announced: bool },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no service named {0:?}")]
    UnknownService(String),
    #[error("service {service:?} has no real {real:?}")]
    UnknownReal { service: String, real: String },
    #[error("real {real} of service {service:?} is already drained")]
    AlreadyDrained { service: String, real: String },
    #[error("real {real} of service {service:?} is not drained")]
    NotDrained { service: String, real: String },
    #[error("the configuration was refused: {0}")]
    Reload(String),
    #[error("vc5d is stopping")]
    Stopping,
}

/// A request to the control loop. `service` is a configuration service
/// name; `real` an address as text (parsed by the control loop, so a bad
/// one is an `UnknownReal`).
#[derive(Debug)]
pub enum Command {
    Drain {
        service: String,
        real: String,
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
    Undrain {
        service: String,
        real: String,
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
    Reload {
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
}

/// The handles a front end (D-Bus, console) gets.
#[derive(Clone)]
pub struct Shared {
    pub status: watch::Receiver<Arc<Status>>,
    pub events: broadcast::Sender<Event>,
    pub commands: mpsc::Sender<Command>,
}

impl Shared {
    /// Sends a command and waits for its answer.
    pub async fn call(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), CommandError>>) -> Command,
    ) -> Result<(), CommandError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| CommandError::Stopping)?;
        rx.await.map_err(|_| CommandError::Stopping)?
    }
}
