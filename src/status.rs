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
    /// Recent log events, oldest first (bounded).
    pub events: VecDeque<LogEvent>,
    /// Set while vc5d holds the data plane and the VIPs as they are because
    /// the trouble is its own (a link without carrier, every real failing at
    /// once): what is wrong and since when.
    pub local_trouble: Option<LocalTrouble>,
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
    /// The real's MAC as resolved (`aa:bb:…`), if it is.
    pub mac: Option<String>,
    /// The latest result of each of its checks.
    pub checks: Vec<CheckStatus>,
    pub counters: FlowCounters,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckStatus {
    /// e.g. `http:80`.
    pub name: String,
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
