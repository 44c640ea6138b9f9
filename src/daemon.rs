//! The vc5d daemon: command line, start-up and the control loop.
//!
//! One task owns the data plane. It is fed by channels: the neighbour
//! resolver (a thread, since netlink sockets are blocking) reports each
//! real's MAC as it is learnt or lost, the health monitor reports each
//! check's transitions, front ends (D-Bus) send commands, and signals ask
//! for a reload or a stop. Every change rebuilds the desired state from
//! the configuration, the checks and the operator's drains, and hands it
//! whole to [`DataPlane::program`], which writes only what differs; then
//! it re-derives which services are up and which VIPs may be announced,
//! and publishes a [`Status`].
//!
//! When flow sync is configured, a starting vc5d announces no VIP until
//! this host's vc5-flowsync reports (in the pinned `sync_status` map) that
//! it has learnt its peers' flows, or until `flow_sync_wait` has passed: a
//! load balancer that attracted connections before it knew them would send
//! established ones to the wrong real. The hold is one field of
//! [`Control`]; what is announced is what may be announced unless it is set.
//!
//! Stopping leaves the program attached and the maps pinned on purpose: a
//! restarted vc5d takes them over without breaking a connection. `rm -r`
//! of the `--bpffs` directory detaches everything.

use crate::config::{self, Config, Protocol};
use crate::hold::Hold;
use crate::logbuf::LogBuffer;
use crate::status::{
    CheckStatus, Command, CommandError, Counter, Event, FlowCounters, FlowSyncLocal, FlowSyncPeer,
    FlowSyncStatus, InterfaceStatus, RealStatus, RhiStatus, ServiceStatus, SessionStatus, Shared,
    Status, VipStatus,
};
use anyhow::{Context, Result, bail};
use clap::Parser;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, error, info, info_span, warn};
use vc5_bird_bridge::{Announcer, AnnouncerConfig, AnnouncerHandle};
use vc5_health::{
    Admin, CheckSpec, CheckState, Event as HealthEvent, Monitor, Outcome, Quorum, RealState,
    announceable_vips, real_state, verdict,
};
use vc5_xdp::flowsync::status::REASONS;
use vc5_xdp::maps::{SYNC_RESYNCING, SYNC_STARTING, SYNC_SYNCED, SyncStatus};
use vc5_xdp::netlink::{self, Resolution, Resolved, Resolver};
use vc5_xdp::{DataPlane, L2, MapSizes, RealMode, RealSpec, ServiceSpec, XdpMode};

/// How long start-up waits at least for the reals' MACs and first check
/// results before the first programming (longer if a check's interval
/// and timeout are), and at most. A restarted vc5d keeps the old tables
/// running meanwhile.
const STARTUP_GRACE: Duration = Duration::from_secs(3);
const MAX_STARTUP_GRACE: Duration = Duration::from_secs(10);

/// How often counters are read for the status.
const STATS_INTERVAL: Duration = Duration::from_secs(2);

/// How often the TCP flow tables are swept for buckets whose "moved"
/// marks can be cleared (see `DataPlane::sweep_begin`), when any are set;
/// also the tick of the data plane's clock that flows are stamped with.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// How often a hold (see [`crate::hold`]) looks at the links again.
const HOLD_POLL: Duration = Duration::from_millis(250);

/// How often a hold of the announcements for flow sync looks at
/// vc5-flowsync's status again (it publishes every 250 ms).
const SYNC_POLL: Duration = Duration::from_millis(200);
/// vc5-flowsync counts as running while its heartbeat is at most this old.
const HEARTBEAT_FRESH_MS: u64 = 2000;

/// Reals failing together are taken for this host's trouble only where at
/// least this many were healthy: with fewer, "most of them" means nothing.
const TOGETHER_MIN: usize = 3;
/// A hold for reals failing together ends after this long even if they
/// still fail: they may really have (a rack losing power), and new flows
/// must then stop going to them.
const TOGETHER_HOLD_MAX: Duration = Duration::from_secs(30);

/// vc5d: a layer-2 Direct Server Return load balancer on XDP.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Configuration file: YAML (the original vc5 schema) or JSON.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Interface to attach the XDP program to; repeat for several.
    #[arg(
        long = "interface",
        value_name = "IF",
        required_unless_present = "check"
    )]
    pub interfaces: Vec<String>,
    /// This host's address on the LAN: health-check source, BGP router id
    /// and next hop.
    #[arg(long, value_name = "IP", required_unless_present = "check")]
    pub address: Option<IpAddr>,
    /// auto tries native XDP and falls back to generic with a warning.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub xdp_mode: XdpMode,
    /// BIRD's control socket, through which VIPs are announced.
    #[arg(long, value_name = "PATH", default_value = "/run/bird/bird.ctl")]
    pub bird_socket: PathBuf,
    /// The file vc5d writes for BIRD to include.
    #[arg(long, value_name = "PATH", default_value = "/run/vc5/bird-vips.conf")]
    pub bird_include: PathBuf,
    /// Where the D-Bus service is exposed: system, session, none or an address.
    #[arg(long, value_name = "BUS", default_value = "system")]
    pub dbus: String,
    /// Address of the HTML console, JSON status and Prometheus metrics.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub console: SocketAddr,
    /// bpffs directory where programs, links and maps are pinned.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/vc5")]
    pub bpffs: PathBuf,
    /// Validate the configuration, print it normalised as JSON and exit.
    #[arg(long)]
    pub check: bool,
}

/// Runs vc5d to completion. `log` is the ring the tracing layer fills.
pub fn run(args: Args, log: LogBuffer) -> Result<()> {
    let cfg = config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.check {
        println!("{}", cfg.to_json());
        return Ok(());
    }
    file_limit(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(args, cfg, log))
}

/// Raises the file limit and says whether it fits the configuration: every
/// check may hold a socket at once, and running out would fail health checks
/// of healthy reals.
fn file_limit(cfg: &Config) {
    let checks: usize = cfg
        .services
        .iter()
        .map(|s| s.reals.len() * s.checks.len())
        .sum();
    let need = crate::limits::needed(checks, cfg.rhi.peers.len());
    match crate::limits::raise_nofile() {
        Ok(n) if n.soft < need => tracing::warn!(
            "open files limit {} (hard {}) is below the {need} this configuration may use \
             ({checks} checks): raise LimitNOFILE",
            n.soft,
            n.hard
        ),
        Ok(n) => tracing::info!("open files limit {} (was {}; {need} needed)", n.soft, n.was),
        Err(e) => tracing::warn!("cannot read the open files limit: {e}"),
    }
}

/// A check of one real for one service: (service name, real, check index).
/// A check of one real for one service: (service name, real, what the check
/// is). Identified by what it does rather than by its place in the list, so
/// that a reload that reorders checks keeps each one's own state, and a check
/// whose probe changed starts afresh (its first result decides at once).
type CheckId = (String, IpAddr, CheckKey);

/// What a check is, for [`CheckId`]: a fingerprint of what it asks and what
/// passes (kind, port, request, expected answers), leaving out its name and
/// timing. A renamed check, or one with a new interval, timeout, rise or fall,
/// is the same check and keeps its state (the monitor carries it to the new
/// timing). Computed from the configuration without building a [`CheckSpec`],
/// since the control loop looks checks up many times per change; the test
/// `check_keys_follow_what_the_check_is` holds it to the spec's fields.
/// 64 bits: two different checks of one service would have to collide.
type CheckKey = u64;

/// The [`CheckKey`] of a configured check.
fn check_key(c: &config::Check) -> CheckKey {
    use std::hash::{DefaultHasher, Hash, Hasher};
    // DefaultHasher::new() has fixed keys: the same check hashes the same on
    // every reload within this process, which is all an id needs.
    let mut h = DefaultHasher::new();
    c.kind.hash(&mut h);
    c.port.hash(&mut h);
    match c.kind {
        config::CheckKind::Tcp => {}
        config::CheckKind::Http | config::CheckKind::Https => {
            (&c.method, &c.path, &c.host, &c.expect).hash(&mut h);
            if c.kind == config::CheckKind::Https {
                c.verify_tls.hash(&mut h);
            }
        }
        config::CheckKind::Dns => {
            if let Some(d) = &c.dns {
                (&d.query, d.qtype_code(), d.transport, d.rcode).hash(&mut h);
            }
        }
    }
    h.finish()
}

/// The health monitor's view of one check.
#[derive(Debug, Clone)]
struct CheckView {
    state: CheckState,
    /// The outcome that made the state (what logs and the hold logic judge by).
    last: Option<Outcome>,
    /// The check's latest run, which the monitor keeps current between
    /// transitions: what the status shows as "last checked" and latency.
    latest: Arc<vc5_health::Latest>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The health check of the configuration, as the monitor runs it: the same
/// mapping that configuration validation checks, so a loaded file's checks run.
fn check_spec(c: &config::Check, real: IpAddr, source: Option<IpAddr>) -> CheckSpec {
    c.spec(real, source)
}

/// Every check of the configuration: one per service, real and check.
fn check_ids(cfg: &Config) -> impl Iterator<Item = (CheckId, &config::Check)> {
    cfg.services.iter().flat_map(|s| {
        s.reals.iter().flat_map(move |r| {
            s.checks
                .iter()
                .map(move |c| ((s.name.clone(), r.addr, check_key(c)), c))
        })
    })
}

fn all_checks(cfg: &Config, source: Option<IpAddr>) -> Vec<(CheckId, CheckSpec)> {
    check_ids(cfg)
        .map(|(id, c)| {
            let spec = check_spec(c, id.1, source);
            (id, spec)
        })
        .collect()
}

fn targets(cfg: &Config) -> BTreeSet<IpAddr> {
    cfg.services
        .iter()
        .flat_map(|s| s.reals.iter().map(|r| r.addr))
        .collect()
}

/// The protocol number the data plane keys services by.
fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => vc5_xdp::dataplane::TCP,
        Protocol::Udp => vc5_xdp::dataplane::UDP,
    }
}

/// The state the control loop owns.
struct Control {
    args: Args,
    cfg: Config,
    dp: DataPlane,
    /// Layer-2 next hop of each real; None while unresolved.
    l2: HashMap<IpAddr, Option<L2>>,
    checks: HashMap<CheckId, CheckView>,
    /// Reals drained at run time: (service name, real).
    drained: BTreeSet<(String, IpAddr)>,
    /// Health of each (service, real) as last reported, for events.
    healthy: HashMap<(String, IpAddr), bool>,
    announceable: BTreeSet<IpAddr>,
    announced: BTreeSet<IpAddr>,
    /// Route health injection (started once the first programming has
    /// decided what may be announced), and what it last reported.
    rhi: Option<AnnouncerHandle>,
    rhi_status: vc5_bird_bridge::Status,
    interfaces: Vec<InterfaceStatus>,
    stats: Option<vc5_xdp::dataplane::Stats>,
    started_ms: u64,
    status: watch::Sender<Arc<Status>>,
    events: broadcast::Sender<Event>,
    log: LogBuffer,
    /// The data plane and the VIPs are held as they are while this host's
    /// own trouble lasts (see [`crate::hold`]).
    hold: Option<Hold<Input>>,
    /// Reals leaving service since the first of them did, to tell a local
    /// cause (most of them at once) from reals failing.
    window: Option<Window>,
    /// The reals a hold for "most reals failed at once" waits for.
    together: Option<BTreeSet<(String, IpAddr)>>,
    /// Set (to vc5d's start, from which `flow_sync_wait` counts) while no
    /// VIP is announced because vc5-flowsync has not resynced yet.
    sync_hold: Option<Instant>,
    /// What vc5-flowsync last published: entry 0 (this host), its peers.
    sync: Option<(SyncStatus, Vec<SyncStatus>)>,
}

/// Whether this host's vc5-flowsync runs: it is on and its heartbeat is
/// fresh (a crashed one leaves its last entry behind).
fn flowsync_running(own: &SyncStatus, now_ms: u64) -> bool {
    own.on != 0 && own.updated_ms != 0 && now_ms.abs_diff(own.updated_ms) <= HEARTBEAT_FRESH_MS
}

/// Whether vc5-flowsync says its resync is done; if not, why, for the log.
/// An entry claiming to have started in the future is not believed.
fn sync_done(own: &SyncStatus, now_ms: u64) -> Result<(), String> {
    if !flowsync_running(own, now_ms) {
        return Err(if own.updated_ms == 0 {
            "vc5-flowsync has not run against these maps".into()
        } else {
            format!(
                "vc5-flowsync is not running (last heartbeat {} ms ago, on={})",
                now_ms.saturating_sub(own.updated_ms),
                own.on
            )
        });
    }
    if own.started_ms > now_ms {
        return Err(format!(
            "vc5-flowsync's start is {} ms in the future",
            own.started_ms - now_ms
        ));
    }
    if own.state != SYNC_SYNCED {
        return Err(format!("vc5-flowsync is {}", sync_state(own)));
    }
    Ok(())
}

/// Entry 0's state in words.
fn sync_state(own: &SyncStatus) -> String {
    match own.state {
        _ if own.started_ms == 0 && own.updated_ms == 0 => "none".into(),
        SYNC_STARTING => "starting".into(),
        SYNC_RESYNCING => "resyncing".into(),
        SYNC_SYNCED => "synced".into(),
        n => format!("unknown ({n})"),
    }
}

/// A `sync_status` address (IPv4 mapped); None when unset.
fn sync_addr(a: [u8; 16]) -> Option<IpAddr> {
    if a == [0; 16] {
        return None;
    }
    let v6 = std::net::Ipv6Addr::from(a);
    Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
}

fn rejects(counts: &[u64]) -> std::collections::BTreeMap<String, u64> {
    REASONS
        .iter()
        .zip(counts)
        .map(|(r, n)| (r.to_string(), *n))
        .collect()
}

/// The checks as they were when a real first left service, and what came
/// since: kept for one check period, so that if most reals leave within it
/// the whole period can be undone (see [`Control::together`]).
struct Window {
    opened: Instant,
    before: HashMap<CheckId, CheckView>,
    healthy: BTreeSet<(String, IpAddr)>,
    events: Vec<HealthEvent<CheckId>>,
}

/// A real's state within a service, from its checks, the operator's
/// settings and whether its MAC is known.
fn state_of(
    svc: &config::Service,
    real: &config::Real,
    checks: &HashMap<CheckId, CheckView>,
    drained: bool,
) -> RealState {
    let states = svc.checks.iter().map(|c| {
        checks
            .get(&(svc.name.clone(), real.addr, check_key(c)))
            .map_or(CheckState::Unknown, |c| c.state)
    });
    let v = verdict(Quorum::from_config(svc.quorum), states);
    real_state(
        Admin {
            disabled: real.disabled,
            drained,
        },
        v,
    )
}

impl Control {
    fn real_state(&self, svc: &config::Service, real: &config::Real) -> RealState {
        let drained = self.drained.contains(&(svc.name.clone(), real.addr));
        state_of(svc, real, &self.checks, drained)
    }

    /// Healthy for `need`: its checks say so and its MAC is known (a real
    /// we cannot reach serves nobody).
    fn counts_healthy(&self, svc: &config::Service, real: &config::Real) -> bool {
        self.real_state(svc, real).is_healthy()
            && self.l2.get(&real.addr).is_some_and(|x| x.is_some())
    }

    fn service_up(&self, svc: &config::Service) -> bool {
        svc.reals
            .iter()
            .filter(|r| self.counts_healthy(svc, r))
            .count()
            >= svc.need
    }

    /// The desired data plane.
    fn specs(&self) -> Vec<ServiceSpec> {
        let mut out = Vec::new();
        for s in &self.cfg.services {
            let reals: Vec<RealSpec> = s
                .reals
                .iter()
                .map(|r| {
                    let st = self.real_state(s, r);
                    RealSpec {
                        addr: r.addr,
                        weight: r.weight as u32,
                        mode: if st.takes_new_flows() {
                            RealMode::Serve
                        } else if st.keeps_flows() || self.on_probation(&s.name, r.addr) {
                            RealMode::Drain
                        } else {
                            RealMode::Down
                        },
                        l2: self.l2.get(&r.addr).copied().flatten(),
                    }
                })
                .collect();
            for (vip, port, proto) in s.endpoints() {
                out.push(ServiceSpec {
                    vip,
                    port,
                    proto: proto_number(proto),
                    reals: reals.clone(),
                });
            }
        }
        out
    }

    /// The (service, real) pairs that the checks `checks` (and the
    /// operator's settings) let serve.
    fn check_healthy(&self, checks: &HashMap<CheckId, CheckView>) -> BTreeSet<(String, IpAddr)> {
        let mut out = BTreeSet::new();
        for s in &self.cfg.services {
            for r in &s.reals {
                let drained = self.drained.contains(&(s.name.clone(), r.addr));
                if state_of(s, r, checks, drained).is_healthy() {
                    out.insert((s.name.clone(), r.addr));
                }
            }
        }
        out
    }

    /// A real that left service within the open [`Window`] takes no new
    /// flows but keeps its established ones until the window closes: if
    /// most reals follow it, the cause was local and nothing moved; if not,
    /// its flows move one check period later than its new ones stopped.
    fn on_probation(&self, svc: &str, real: IpAddr) -> bool {
        self.window
            .as_ref()
            .is_some_and(|w| w.healthy.contains(&(svc.to_string(), real)))
    }

    /// Closes the window once a check period has passed since it opened.
    /// Returns whether it closed (the data plane must then be reprogrammed:
    /// reals on probation lose their flows).
    fn close_window(&mut self, now: Instant) -> bool {
        let period = self.check_period();
        if self
            .window
            .as_ref()
            .is_some_and(|w| now - w.opened > period)
        {
            self.window = None;
            return true;
        }
        false
    }

    /// One check period: the longest `interval + timeout` of any check.
    fn check_period(&self) -> Duration {
        self.cfg
            .services
            .iter()
            .flat_map(|s| &s.checks)
            .map(|c| c.interval.saturating_add(c.timeout))
            .max()
            .unwrap_or_default()
    }

    /// Takes a batch of health events. Where most of the reals that were
    /// healthy have left service within one check period (more than half,
    /// at least [`TOGETHER_MIN`]), the cause is far likelier this host (an
    /// overload, a flood, its own network) than that many reals failing
    /// together; then the whole period is undone and a hold begins, so
    /// established flows stay where they are. Returns the hold's reason.
    fn health_batch(&mut self, evs: Vec<HealthEvent<CheckId>>) -> Option<String> {
        let now = Instant::now();
        let period = self.check_period();
        self.close_window(now);
        let fails = evs
            .iter()
            .any(|e| matches!(e, HealthEvent::Transition(t) if t.to == CheckState::Failing));
        if fails && self.window.is_none() {
            self.window = Some(Window {
                opened: now,
                before: self.checks.clone(),
                healthy: self.check_healthy(&self.checks),
                events: Vec::new(),
            });
        }
        if let Some(w) = &mut self.window {
            w.events.extend(evs.iter().cloned());
        }
        for ev in evs {
            health_event(&mut self.checks, ev);
        }
        let w = self.window.as_ref()?;
        let now_healthy = self.check_healthy(&self.checks);
        // Only reals that went silent count: one that answers (refused,
        // HTTP 503) is reachable, so its failure is its own.
        let silent = self.silent();
        let left = w
            .healthy
            .difference(&now_healthy)
            .filter(|pair| silent.contains(*pair))
            .count();
        if w.healthy.len() < TOGETHER_MIN || left * 2 <= w.healthy.len() {
            return None;
        }
        let w = self.window.take()?;
        let reason = format!(
            "{left} of {} healthy reals failed their checks within {period:?}",
            w.healthy.len()
        );
        self.checks = w.before;
        self.together = Some(w.healthy);
        let mut hold = Hold::new_bounded(reason.clone(), Duration::ZERO, TOGETHER_HOLD_MAX);
        hold.keep(Input::Health(w.events));
        self.hold = Some(hold);
        Some(reason)
    }

    /// The (service, real) pairs with a check failing without an answer
    /// from the real (timeouts, unreachable, local socket errors).
    fn silent(&self) -> BTreeSet<(String, IpAddr)> {
        self.checks
            .iter()
            .filter(|(_, v)| {
                v.state == CheckState::Failing
                    && v.last
                        .as_ref()
                        .and_then(|o| o.failure())
                        .is_some_and(|f| !f.is_answer())
            })
            .map(|((s, r, _), _)| (s.clone(), *r))
            .collect()
    }

    /// While a hold for reals failing together lasts: whether most of them
    /// still fail, by the checks as they are now (the held events applied
    /// to a copy).
    fn together_still(&self) -> Option<String> {
        let (h, set) = (self.hold.as_ref()?, self.together.as_ref()?);
        let mut shadow = self.checks.clone();
        for input in h.held() {
            if let Input::Health(evs) = input {
                for ev in evs {
                    apply_quiet(&mut shadow, ev.clone());
                }
            }
        }
        let healthy = self.check_healthy(&shadow);
        let still = set.difference(&healthy).count();
        (still * 2 > set.len())
            .then(|| format!("{still} of {} reals still failing their checks", set.len()))
    }

    /// Reprograms the data plane and re-derives health, VIPs and events.
    fn apply(&mut self) -> Result<()> {
        if self.dp.insert_limit() != self.cfg.flow_insert_limit {
            self.dp
                .set_insert_limit(self.cfg.flow_insert_limit)
                .context("setting the flow insert limit")?;
        }
        let specs = self.specs();
        let t = Instant::now();
        self.dp
            .program(&specs)
            .context("programming the data plane")?;
        debug!(
            services = specs.len(),
            took_ms = t.elapsed().as_millis() as u64,
            "data plane programmed"
        );
        self.derive();
        self.publish();
        Ok(())
    }

    /// Health transitions of reals, and the VIPs that may be announced.
    fn derive(&mut self) {
        let mut now: HashMap<(String, IpAddr), bool> = HashMap::new();
        let mut ups = Vec::new();
        for s in &self.cfg.services {
            for r in &s.reals {
                now.insert((s.name.clone(), r.addr), self.counts_healthy(s, r));
            }
            let up = self.service_up(s);
            ups.extend(s.addrs.iter().map(|v| (*v, up)));
        }
        for ((svc, real), h) in &now {
            let before = self.healthy.get(&(svc.clone(), *real)).copied();
            if before != Some(*h) {
                let reason = self.reason(svc, *real);
                let _s = info_span!("real", service = %svc, addr = %real).entered();
                match (before, h) {
                    (None, true) => info!("healthy"),
                    (None, false) => info!(%reason, "not healthy"),
                    (Some(_), true) => info!("back in service"),
                    (Some(_), false) => warn!(%reason, "out of service"),
                }
                let _ = self.events.send(Event::RealHealth {
                    service: svc.clone(),
                    real: *real,
                    healthy: *h,
                    reason,
                });
            }
        }
        self.healthy = now;
        let ann = announceable_vips(ups);
        for v in ann.difference(&self.announceable) {
            info!(vip = %v, "VIP announceable: every service on it is up");
        }
        for v in self.announceable.difference(&ann) {
            warn!(vip = %v, "VIP not announceable: a service on it is down");
        }
        let before = self.to_announce();
        self.announceable = ann;
        let after = self.to_announce();
        if after != before
            && let Some(rhi) = &self.rhi
        {
            rhi.set_vips(after);
        }
    }

    /// What route health injection is told to announce: what may be, unless
    /// flow sync holds the announcements.
    fn to_announce(&self) -> BTreeSet<IpAddr> {
        if self.sync_hold.is_some() {
            BTreeSet::new()
        } else {
            self.announceable.clone()
        }
    }

    /// Starts the flow-sync hold at start-up, unless flow sync is not
    /// configured or vc5-flowsync has resynced already (it kept running
    /// while vc5d restarted).
    fn begin_sync_hold(&mut self, started: Instant) {
        if !self.cfg.flow_sync() {
            if self.cfg.multicast.is_some() {
                info!("flow sync is off: multicast is set but flow_sync_key is not");
            }
            return;
        }
        match self.read_sync() {
            Ok(()) => {
                info!("flow sync: vc5-flowsync has resynced already; announcing without a hold")
            }
            Err(why) => {
                info!(%why, wait = ?self.cfg.flow_sync_wait, "flow sync: holding VIP announcements until vc5-flowsync has resynced, or for flow_sync_wait at most");
                self.sync_hold = Some(started);
            }
        }
    }

    /// Ends the flow-sync hold when vc5-flowsync has resynced or
    /// `flow_sync_wait` has passed since vc5d started.
    fn poll_sync_hold(&mut self, now: Instant) {
        let Some(since) = self.sync_hold else { return };
        match self.read_sync() {
            Ok(()) => {
                info!(held = ?since.elapsed(), "flow sync: vc5-flowsync has resynced; hold over, announcing the VIPs");
            }
            Err(why) if now >= since + self.cfg.flow_sync_wait => {
                warn!(%why, wait = ?self.cfg.flow_sync_wait, "flow sync: flow_sync_wait passed without vc5-flowsync's resync; hold over, announcing the VIPs anyway");
            }
            Err(_) => return,
        }
        self.end_sync_hold();
    }

    /// Reads what vc5-flowsync published and says whether its resync is
    /// done (if not, why).
    fn read_sync(&mut self) -> Result<(), String> {
        let s = self
            .dp
            .sync_status()
            .map_err(|e| format!("reading sync_status: {e}"))?;
        let done = sync_done(&s.0, unix_ms(SystemTime::now()));
        self.sync = Some(s);
        done
    }

    fn end_sync_hold(&mut self) {
        self.sync_hold = None;
        if let Some(rhi) = &self.rhi {
            rhi.set_vips(self.to_announce());
        }
        self.publish();
    }

    /// Flow sync for the status.
    fn flow_sync_status(&self, now_ms: u64) -> FlowSyncStatus {
        let configured = self.cfg.flow_sync();
        let (own, peers) = match (&self.sync, configured) {
            (Some((own, peers)), true) => (*own, peers.as_slice()),
            _ => (SyncStatus::default(), &[][..]),
        };
        FlowSyncStatus {
            configured,
            group: self.cfg.multicast.map(|m| m.to_string()),
            wait_ms: self.cfg.flow_sync_wait.as_millis() as u64,
            holding_announcements: self.sync_hold.is_some(),
            holding_until_ms: if self.sync_hold.is_some() {
                self.started_ms + self.cfg.flow_sync_wait.as_millis() as u64
            } else {
                0
            },
            local: FlowSyncLocal {
                running: flowsync_running(&own, now_ms),
                state: sync_state(&own),
                sender: format!("{:x}", own.sender),
                epoch: own.epoch,
                addr: sync_addr(own.addr),
                started_ms: own.started_ms,
                heartbeat_ms: own.updated_ms,
                sent_datagrams: own.datagrams,
                sent_records: own.records,
                lost_events: own.lost,
                rejects: rejects(&own.rejects),
            },
            peers: peers
                .iter()
                .map(|p| FlowSyncPeer {
                    addr: sync_addr(p.addr),
                    sender: format!("{:x}", p.sender),
                    epoch: p.epoch,
                    datagrams: p.datagrams,
                    records: p.records,
                    written: p.written,
                    gaps: p.gaps,
                    unknown_real: p.unknown_real,
                    rate_limited: p.rate_limited,
                    rejects: rejects(&p.rejects),
                    last_heard_ms: p.updated_ms,
                    last_heard_ago_ms: now_ms.saturating_sub(p.updated_ms),
                    delay_p50_us: p.delay_p50_us,
                    delay_p99_us: p.delay_p99_us,
                    delay_max_us: p.delay_max_us,
                })
                .collect(),
        }
    }

    /// Takes route health injection's latest report: what is announced
    /// now (signalled per VIP) and the sessions, for the status.
    fn rhi_update(&mut self, st: vc5_bird_bridge::Status) {
        for v in st.announced.difference(&self.announced) {
            info!(vip = %v, mode = %st.mode, "VIP announced");
            let _ = self.events.send(Event::Vip {
                vip: *v,
                announced: true,
            });
        }
        for v in self.announced.difference(&st.announced) {
            info!(vip = %v, mode = %st.mode, "VIP withdrawn");
            let _ = self.events.send(Event::Vip {
                vip: *v,
                announced: false,
            });
        }
        if st.last_error != self.rhi_status.last_error
            && let Some(e) = &st.last_error
        {
            warn!(mode = %st.mode, error = %e, "route health injection");
        }
        if st.mode != self.rhi_status.mode {
            info!(mode = %st.mode, "route health injection mode");
        }
        self.announced = st.announced.clone();
        self.rhi_status = st;
    }

    /// Why a real is not healthy, in words.
    fn reason(&self, svc: &str, real: IpAddr) -> String {
        if self.l2.get(&real).is_none_or(|x| x.is_none()) {
            return "MAC not resolved".into();
        }
        if self.drained.contains(&(svc.to_string(), real)) {
            return String::new();
        }
        let mut failing: Vec<String> = self
            .checks
            .iter()
            .filter(|((s, r, _), v)| s == svc && *r == real && v.state == CheckState::Failing)
            .map(|(_, v)| {
                v.last
                    .as_ref()
                    .and_then(|o| o.failure())
                    .map_or_else(|| "failing".to_string(), |f| f.to_string())
            })
            .collect();
        failing.sort();
        if let Some(s) = self.cfg.services.iter().find(|s| s.name == svc)
            && let Some(r) = s.reals.iter().find(|r| r.addr == real)
            && r.disabled
        {
            failing.insert(0, "disabled in the configuration".into());
        }
        failing.join("; ")
    }

    fn refresh_stats(&mut self) {
        match self.dp.stats() {
            Ok(s) => self.stats = Some(s),
            Err(e) => warn!("reading counters: {e}"),
        }
        if self.cfg.flow_sync() {
            match self.dp.sync_status() {
                Ok(s) => self.sync = Some(s),
                Err(e) => warn!("reading flow-sync status: {e}"),
            }
        }
    }

    /// Builds and publishes a status snapshot.
    fn publish(&self) {
        let st = self.status_snapshot();
        self.status.send_replace(Arc::new(st));
    }

    fn status_snapshot(&self) -> Status {
        // The counters by endpoint and real, looked up once per row below.
        let by_endpoint: HashMap<(IpAddr, u16, u8), &vc5_xdp::dataplane::ServiceStats> = self
            .stats
            .iter()
            .flat_map(|st| &st.services)
            .map(|x| ((x.vip, x.port, x.proto), x))
            .collect();
        let mut services = Vec::new();
        for s in &self.cfg.services {
            let up = self.service_up(s);
            let healthy = s.reals.iter().filter(|r| self.counts_healthy(s, r)).count();
            for (vip, port, proto) in s.endpoints() {
                let ds = by_endpoint.get(&(vip, port, proto_number(proto))).copied();
                let real_counters: HashMap<IpAddr, &vc5_xdp::maps::BackendStats> = ds
                    .iter()
                    .flat_map(|d| &d.reals)
                    .map(|x| (x.addr, &x.counters))
                    .collect();
                let reals = s
                    .reals
                    .iter()
                    .map(|r| {
                        let state = self.real_state(s, r);
                        let l2 = self.l2.get(&r.addr).copied().flatten();
                        let shown = if l2.is_none() && state.is_healthy() {
                            "unresolved".to_string()
                        } else {
                            state.to_string()
                        };
                        let counters = real_counters
                            .get(&r.addr)
                            .map(|c| FlowCounters {
                                packets: c.packets,
                                bytes: c.bytes,
                                new_flows: c.new_flows,
                            })
                            .unwrap_or_default();
                        let checks = s
                            .checks
                            .iter()
                            .map(|c| {
                                let v = self.checks.get(&(s.name.clone(), r.addr, check_key(c)));
                                // The latest run, not the one of the last
                                // transition: a steady check runs on unseen.
                                let latest = v.and_then(|v| v.latest.get());
                                let last = latest.as_ref();
                                CheckStatus {
                                    name: c.name.clone(),
                                    passing: v.is_some_and(|v| v.state == CheckState::Passing),
                                    reason: last
                                        .and_then(|o| o.failure())
                                        .map(|f| f.to_string())
                                        .unwrap_or_default(),
                                    latency_ms: last.map_or(0.0, |o| o.latency.as_secs_f64() * 1e3),
                                    at_ms: last.map_or(0, |o| unix_ms(o.wall)),
                                }
                            })
                            .collect();
                        RealStatus {
                            addr: Some(r.addr),
                            state: shown,
                            healthy: self.counts_healthy(s, r),
                            drained: self.drained.contains(&(s.name.clone(), r.addr)),
                            disabled: r.disabled,
                            weight: r.weight as u32,
                            mac: l2.map(|l| netlink::format_mac(&l.mac)),
                            checks,
                            counters,
                        }
                    })
                    .collect();
                services.push(ServiceStatus {
                    name: s.name.clone(),
                    desc: s.desc.clone(),
                    vip: Some(vip),
                    port,
                    protocol: proto.as_str().to_string(),
                    state: if up { "up" } else { "down" }.into(),
                    need: s.need,
                    healthy,
                    total: s.reals.len(),
                    counters: ds
                        .map(|d| FlowCounters {
                            packets: d.counters.packets,
                            bytes: d.counters.bytes,
                            new_flows: d.counters.new_flows,
                        })
                        .unwrap_or_default(),
                    dropped: ds
                        .map(|d| Counter {
                            packets: d.dropped.packets,
                            bytes: d.dropped.bytes,
                        })
                        .unwrap_or_default(),
                    reals,
                });
            }
        }
        let vips: BTreeSet<IpAddr> = self
            .cfg
            .services
            .iter()
            .flat_map(|s| s.addrs.iter().copied())
            .collect();
        let global = self
            .stats
            .as_ref()
            .map(|st| {
                st.global
                    .iter()
                    .map(|(r, c)| {
                        let name = serde_json::to_value(r)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default();
                        (
                            name,
                            Counter {
                                packets: c.packets,
                                bytes: c.bytes,
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let at_ms = unix_ms(SystemTime::now());
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            at_ms,
            started_ms: self.started_ms,
            config: self.args.config.display().to_string(),
            interfaces: self.interfaces.clone(),
            services,
            vips: vips
                .into_iter()
                .map(|v| VipStatus {
                    vip: Some(v),
                    announceable: self.announceable.contains(&v),
                    announced: self.announced.contains(&v),
                })
                .collect(),
            rhi: rhi_status(&self.rhi_status),
            global,
            events: self.log.snapshot(),
            local_trouble: self.hold.as_ref().map(|h| crate::status::LocalTrouble {
                reason: h.reason.clone(),
                since_ms: unix_ms(h.since),
            }),
            flow_sync: self.flow_sync_status(at_ms),
            flow_table: crate::status::FlowTableStatus {
                insert_limit: self.dp.insert_limit(),
                inserts_refused: self.stats.as_ref().map_or(0, |s| s.inserts_refused),
                evicted: self.stats.as_ref().map_or(0, |s| s.flows_evicted),
                refused_full: self.stats.as_ref().map_or(0, |s| s.flows_refused_full),
            },
        }
    }

    /// Finds a configured (service, real) by name and address text.
    fn find(&self, service: &str, real: &str) -> Result<(String, IpAddr), CommandError> {
        let s = self
            .cfg
            .services
            .iter()
            .find(|s| s.name == service)
            .ok_or_else(|| CommandError::UnknownService(service.to_string()))?;
        let unknown = || CommandError::UnknownReal {
            service: service.to_string(),
            real: real.to_string(),
        };
        let addr: IpAddr = real.parse().map_err(|_| unknown())?;
        if !s.reals.iter().any(|r| r.addr == addr) {
            return Err(unknown());
        }
        Ok((s.name.clone(), addr))
    }

    fn command(&mut self, c: Command) -> Option<oneshot::Sender<Result<(), CommandError>>> {
        let (reply, result) = match c {
            Command::Drain {
                service,
                real,
                reply,
            } => {
                let r = self.find(&service, &real).and_then(|key| {
                    if self.drained.insert(key.clone()) {
                        info!(service = %key.0, real = %key.1, "real drained");
                        let _ = self.events.send(Event::RealDrain {
                            service: key.0,
                            real: key.1,
                            drained: true,
                        });
                        Ok(())
                    } else {
                        Err(CommandError::AlreadyDrained { service, real })
                    }
                });
                (reply, r)
            }
            Command::Undrain {
                service,
                real,
                reply,
            } => {
                let r = self.find(&service, &real).and_then(|key| {
                    if self.drained.remove(&key) {
                        info!(service = %key.0, real = %key.1, "real undrained");
                        let _ = self.events.send(Event::RealDrain {
                            service: key.0,
                            real: key.1,
                            drained: false,
                        });
                        Ok(())
                    } else {
                        Err(CommandError::NotDrained { service, real })
                    }
                });
                (reply, r)
            }
            Command::Reload { reply } => return Some(reply),
        };
        let result = result.and_then(|()| {
            self.apply()
                .map_err(|e| CommandError::Reload(format!("{e:#}")))
        });
        let _ = reply.send(result);
        None
    }
}

/// Route health injection's report, as the status shows it.
fn rhi_status(st: &vc5_bird_bridge::Status) -> RhiStatus {
    let mut sessions = Vec::new();
    if st.mode == vc5_bird_bridge::Mode::Bird || st.peers.is_empty() {
        let b = &st.bird;
        sessions.push(SessionStatus {
            peer: format!("bird {}", b.socket.display()),
            state: if b.connected { "up" } else { "down" }.into(),
            last_error: b.last_error.clone().unwrap_or_default(),
            up: b.connected,
        });
        // BIRD's own BGP sessions, as it lists them.
        for p in b.protocols.iter().filter(|p| p.proto == "BGP") {
            sessions.push(SessionStatus {
                peer: format!("bird {}", p.name),
                state: format!("{} {}", p.state, p.info).trim().to_string(),
                last_error: String::new(),
                up: p.state == "up",
            });
        }
    }
    for p in &st.peers {
        let up = p.established_since.is_some();
        sessions.push(SessionStatus {
            peer: p.address.to_string(),
            state: format!("{:?}", p.state).to_lowercase(),
            last_error: p.last_error.clone().unwrap_or_default(),
            up,
        });
    }
    RhiStatus {
        mode: st.mode.to_string(),
        sessions,
    }
}

/// Starts route health injection with the VIPs the control loop has
/// decided may be announced; returns its status channel.
fn start_announcer(ctl: &mut Control) -> Result<watch::Receiver<vc5_bird_bridge::Status>> {
    let (rhi, rx) = Announcer::start(announcer_config(&ctl.args, &ctl.cfg))
        .map_err(|e| anyhow::anyhow!("route health injection: {e}"))?;
    // Before the announcer's task first looks: it never sees an empty set
    // it was not meant to announce.
    rhi.set_vips(ctl.to_announce());
    ctl.rhi = Some(rhi);
    Ok(rx)
}

/// The announcer's configuration from the command line and `rhi`.
fn announcer_config(args: &Args, cfg: &Config) -> AnnouncerConfig {
    let address = args
        .address
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let mut a = AnnouncerConfig::new(address, cfg.rhi.as_number, cfg.rhi.peers.clone());
    a.bird_socket = args.bird_socket.clone();
    a.bird_include = args.bird_include.clone();
    a.hold_time = cfg.rhi.hold_time;
    a.communities = cfg.rhi.communities.clone();
    a.med = cfg.rhi.med;
    a.local_pref = cfg.rhi.local_pref;
    a.next_hop6 = cfg.rhi.next_hop6;
    a
}

/// The front ends' handles on the control loop.
pub struct Channels {
    pub shared: Shared,
    commands: mpsc::Receiver<Command>,
    status: watch::Sender<Arc<Status>>,
}

impl Channels {
    pub fn new() -> Channels {
        let (status, rx) = watch::channel(Arc::new(Status::default()));
        let (events, _) = broadcast::channel(256);
        let (tx, commands) = mpsc::channel(64);
        Channels {
            shared: Shared {
                status: rx,
                events,
                commands: tx,
            },
            commands,
            status,
        }
    }
}

impl Default for Channels {
    fn default() -> Self {
        Channels::new()
    }
}

async fn serve(args: Args, cfg: Config, log: LogBuffer) -> Result<()> {
    // Signals first: a stop asked for during start-up is a clean stop.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let started_ms = unix_ms(SystemTime::now());
    let started = Instant::now();

    // Check everything that can be checked before touching the kernel, so
    // a bad start leaves nothing half-programmed.
    for ifname in &args.interfaces {
        netlink::interface_by_name(ifname).with_context(|| format!("interface {ifname}"))?;
    }
    if args.interfaces.is_empty() {
        bail!("no --interface given");
    }
    announcer_config(&args, &cfg)
        .validate()
        .map_err(|e| anyhow::anyhow!("route health injection: {e}"))?;

    // The front ends next: a port or bus name that cannot be had stops
    // vc5d before it touches the data plane.
    let channels = Channels::new();
    let Channels {
        shared,
        commands: mut cmd_rx,
        status,
    } = channels;
    let console = crate::console::serve(args.console, shared.clone())
        .await
        .with_context(|| format!("console on {}", args.console))?;
    info!(address = %console.local_addr(), "console listening");
    let dbus = crate::dbus::serve(&args.dbus, shared.clone())
        .await
        .with_context(|| format!("D-Bus service on the {} bus", args.dbus))?;
    if dbus.is_some() {
        info!(bus = %args.dbus, "D-Bus service org.vc5.Balancer1 up");
    }
    let _watchdog =
        crate::sdnotify::Watchdog::from_env().map(|w| w.spawn_on_status(shared.status.clone()));

    let mut dp = DataPlane::open(&args.bpffs, MapSizes::default())
        .with_context(|| format!("opening the data plane in {}", args.bpffs.display()))?;
    let mut attached_now = Vec::new();
    let mut interfaces = Vec::new();
    for ifname in &args.interfaces {
        match dp.attach(ifname, args.xdp_mode) {
            Ok(a) => {
                info!(interface = %a.ifname, mode = %a.mode, reused = a.reused, "XDP attached");
                interfaces.push(InterfaceStatus {
                    name: a.ifname.clone(),
                    mode: a.mode.clone(),
                });
                if !a.reused {
                    attached_now.push(a.ifname);
                }
            }
            Err(e) => {
                for i in &attached_now {
                    let _ = dp.detach(i);
                }
                return Err(e).context("attaching XDP");
            }
        }
    }
    // Interfaces a previous vc5d served but this one is not told to.
    for ifname in dp.detach_others(&args.interfaces)? {
        warn!(interface = %ifname, "XDP detached: not among this vc5d's interfaces");
    }
    let ours: Vec<u32> = args
        .interfaces
        .iter()
        .filter_map(|i| netlink::interface_by_name(i).ok().map(|x| x.index))
        .collect();

    let (res_tx, mut res_rx) = mpsc::unbounded_channel();
    let (to_resolver, resolver) = spawn_resolver(targets(&cfg), res_tx)?;

    let (monitor, mut health_rx) = Monitor::<CheckId>::start();
    let source = args.address;
    monitor
        .set_checks(all_checks(&cfg, source))
        .await
        .context("starting health checks")?;

    let mut ctl = Control {
        rhi: None,
        rhi_status: vc5_bird_bridge::Status::default(),
        args,
        cfg,
        dp,
        l2: HashMap::new(),
        checks: HashMap::new(),
        drained: BTreeSet::new(),
        healthy: HashMap::new(),
        announceable: BTreeSet::new(),
        announced: BTreeSet::new(),
        interfaces,
        stats: None,
        started_ms,
        status,
        events: shared.events.clone(),
        log,
        hold: None,
        window: None,
        together: None,
        sync_hold: None,
        sync: None,
    };
    ctl.begin_sync_hold(started);

    // Give the reals' MACs and first check results a moment, so the first
    // programming does not take every real out of service just because
    // nothing is known yet. A restarted vc5d keeps the old tables running
    // meanwhile.
    let n_checks = check_ids(&ctl.cfg).count();
    let longest = ctl
        .cfg
        .services
        .iter()
        .flat_map(|s| &s.checks)
        // Saturating: a sum of configured durations must never panic.
        .map(|c| c.interval.saturating_add(c.timeout))
        .max()
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + STARTUP_GRACE.max(longest).min(MAX_STARTUP_GRACE);
    let wanted = targets(&ctl.cfg);
    let mut stop = false;
    loop {
        let macs = wanted
            .iter()
            .all(|a| ctl.l2.get(a).is_some_and(|x| x.is_some()));
        if macs && ctl.checks.len() >= n_checks {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            Some(changes) = res_rx.recv() => apply_l2(&mut ctl.l2, &ours, changes),
            Some(ev) = health_rx.recv() => health_event(&mut ctl.checks, ev),
            _ = term.recv() => { stop = true; break }
            _ = int.recv() => { stop = true; break }
        }
    }
    if !stop {
        ctl.apply()?;
        notify(crate::sdnotify::ready(&format!(
            "serving {} services",
            ctl.cfg.services.len()
        )));
        info!(
            config = %ctl.args.config.display(),
            interfaces = ?ctl.args.interfaces,
            bpffs = %ctl.args.bpffs.display(),
            "vc5d ready"
        );
    }
    // Announcing starts only now, with what the first programming decided:
    // after a crash, BIRD (or the routers) keep the VIPs a previous vc5d
    // announced until this one says otherwise, instead of seeing them
    // withdrawn and announced again (or, on a stop during start-up, the
    // empty set withdraws whatever is left).
    ctl.poll_sync_hold(Instant::now());
    let mut rhi_rx = start_announcer(&mut ctl)?;

    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
    let mut sweep_tick = tokio::time::interval(SWEEP_INTERVAL);
    let (sweep_tx, mut sweep_rx) = mpsc::unbounded_channel();
    let mut sweeping = false;
    let mut hold_tick = tokio::time::interval(HOLD_POLL);
    let mut sync_tick = tokio::time::interval(SYNC_POLL);
    while !stop {
        tokio::select! {
            _ = sync_tick.tick(), if ctl.sync_hold.is_some() => {
                ctl.poll_sync_hold(Instant::now());
            }
            _ = sweep_tick.tick() => {
                // The clock flows are stamped with, whether or not a sweep
                // is due: the next sweep tells dead flows by it.
                if let Err(e) = ctl.dp.tick_clock() {
                    warn!("data-plane clock: {e}");
                }
                let due = !sweeping && ctl.dp.moved_buckets() > 0;
                match if due { ctl.dp.sweep_begin() } else { Ok(None) } {
                    Ok(Some(sweep)) => {
                        sweeping = true;
                        let tx = sweep_tx.clone();
                        tokio::task::spawn_blocking(move || {
                            let _ = tx.send(sweep.run());
                        });
                    }
                    Ok(None) => {}
                    Err(e) => warn!("flow-table sweep: {e}"),
                }
            }
            Some(done) = sweep_rx.recv() => {
                sweeping = false;
                let (flows, dead) = (done.flows, done.dead);
                match ctl.dp.sweep_end(done) {
                    Ok(cleared) => info!(flows, dead, cleared, still_marked = ctl.dp.moved_buckets(), "flow-table sweep"),
                    Err(e) => warn!("flow-table sweep: {e}"),
                }
            }
            Some(changes) = res_rx.recv() => {
                if local_trouble(&mut ctl.hold, &ours, &ctl.cfg) {
                    if let Some(h) = ctl.hold.as_mut() {
                        h.keep(Input::L2(changes));
                    }
                    continue;
                }
                apply_l2(&mut ctl.l2, &ours, changes);
                if let Err(e) = ctl.apply() {
                    error!("{e:#}");
                }
            }
            Some(ev) = health_rx.recv() => {
                // Drain whatever else arrived, then program once.
                let mut evs = vec![ev];
                while let Ok(ev) = health_rx.try_recv() {
                    evs.push(ev);
                }
                if local_trouble(&mut ctl.hold, &ours, &ctl.cfg) {
                    if let Some(h) = ctl.hold.as_mut() {
                        h.keep(Input::Health(evs));
                    }
                    continue;
                }
                if let Some(reason) = ctl.health_batch(evs) {
                    warn!(%reason, max = ?TOGETHER_HOLD_MAX, "local trouble suspected: keeping the data plane and the VIPs as they were before (established flows stay where they are) until the checks recover");
                }
                if let Err(e) = ctl.apply() {
                    error!("{e:#}");
                }
            }
            _ = hold_tick.tick(), if ctl.hold.is_some() || ctl.window.is_some() => {
                if ctl.hold.is_none() {
                    if ctl.close_window(Instant::now())
                        && let Err(e) = ctl.apply()
                    {
                        error!("{e:#}");
                    }
                    continue;
                }
                let down = links_without_carrier(&ours);
                let now = tokio::time::Instant::now().into_std();
                let still = if down.is_empty() { ctl.together_still() } else { None };
                let Some(h) = ctl.hold.as_mut() else { continue };
                if !down.is_empty() {
                    h.cause_present(no_carrier(&down));
                } else if let Some(reason) = still {
                    h.cause_present(reason);
                } else if h.cause_gone(now) {
                    let left = h.release_at().map(|t| t - now).unwrap_or_default();
                    info!(grace = ?left, "local trouble over: the checks get the grace to recover before anything changes");
                    if let Some(rhi) = &ctl.rhi {
                        rhi.reconnect_now();
                    }
                }
                if h.over(now) {
                    let h = ctl.hold.take().expect("held");
                    ctl.together = None;
                    ctl.window = None;
                    if h.ended_by_deadline(now) {
                        warn!(reason = %h.reason, "hold ended after its longest time: the reals' failures are taken as real");
                    }
                    let since = h.since.elapsed().unwrap_or_default();
                    let (l2, health) = coalesce(h.release());
                    apply_l2(&mut ctl.l2, &ours, l2);
                    for ev in health {
                        health_event(&mut ctl.checks, ev);
                    }
                    info!(held = ?since, "hold released: applying what the checks and the neighbour table say now");
                    if let Err(e) = ctl.apply() {
                        error!("{e:#}");
                    }
                }
            }
            Ok(()) = rhi_rx.changed() => {
                let st = rhi_rx.borrow_and_update().clone();
                ctl.rhi_update(st);
                ctl.publish();
            }
            Some(cmd) = cmd_rx.recv() => {
                if let Some(reply) = ctl.command(cmd) {
                    let r = reload(&mut ctl, &monitor, &to_resolver, &mut rhi_rx).await;
                    if let Err(e) = &r {
                        error!("reload refused, the running configuration stays: {e}");
                    }
                    let _ = reply.send(r.map_err(CommandError::Reload));
                }
            }
            _ = hup.recv() => {
                if let Err(e) = reload(&mut ctl, &monitor, &to_resolver, &mut rhi_rx).await {
                    error!("reload refused, the running configuration stays: {e}");
                }
            }
            _ = term.recv() => stop = true,
            _ = int.recv() => stop = true,
            _ = stats_tick.tick() => {
                ctl.refresh_stats();
                ctl.publish();
            }
            _ = tick.tick() => {
                if let Some(s) = &ctl.stats {
                    let g = &s.global;
                    let n = |r| g.get(&r).map(|c: &vc5_xdp::maps::Counter| c.packets).unwrap_or(0);
                    use vc5_xdp::maps::Reason::*;
                    info!(
                        tx = n(Tx) + n(Redirect) + n(IcmpTx),
                        passed = n(PassNotIp) + n(PassShort) + n(PassNotVip),
                        dropped = n(DropFragment) + n(DropMalformed) + n(DropNoBackend),
                        "traffic"
                    );
                }
            }
        }
    }
    notify(crate::sdnotify::stopping("withdrawing the VIPs"));
    // Withdraw first, so routers move traffic away while this host still
    // forwards it.
    let last = match ctl.rhi.take() {
        Some(rhi) => rhi.shutdown().await,
        None => vc5_bird_bridge::Status::default(),
    };
    if !last.announced.is_empty() {
        warn!(still = ?last.announced, "VIPs not confirmed withdrawn at stop");
    } else {
        info!(mode = %last.mode, "every VIP withdrawn");
    }
    info!(
        bpffs = %ctl.args.bpffs.display(),
        "stopping; the data plane stays attached for the next vc5d (remove the bpffs directory to detach)"
    );
    drop(dbus);
    drop(console);
    monitor.shutdown().await;
    let _ = to_resolver.send(ToResolver::Stop);
    let _ = resolver.join();
    Ok(())
}

/// Re-reads the configuration and applies it; on any error the running
/// configuration stays in force and the error is returned.
async fn reload(
    ctl: &mut Control,
    monitor: &Monitor<CheckId>,
    to_resolver: &std::sync::mpsc::Sender<ToResolver>,
    rhi_rx: &mut watch::Receiver<vc5_bird_bridge::Status>,
) -> std::result::Result<(), String> {
    notify(crate::sdnotify::reloading("reloading the configuration"));
    let r = reload_inner(ctl, monitor, to_resolver, rhi_rx).await;
    notify(crate::sdnotify::ready(match &r {
        Ok(()) => "configuration reloaded",
        Err(_) => "reload refused; the running configuration stays",
    }));
    r
}

/// Logs a failed systemd notification; never fatal.
fn notify(r: Result<bool, crate::sdnotify::NotifyError>) {
    if let Err(e) = r {
        warn!("systemd notification: {e}");
    }
}

async fn reload_inner(
    ctl: &mut Control,
    monitor: &Monitor<CheckId>,
    to_resolver: &std::sync::mpsc::Sender<ToResolver>,
    rhi_rx: &mut watch::Receiver<vc5_bird_bridge::Status>,
) -> std::result::Result<(), String> {
    // Everything that can refuse the new configuration is asked before
    // anything changes: the file, then what depends on the command line.
    let new = config::load(&ctl.args.config).map_err(|e| e.to_string())?;
    announcer_config(&ctl.args, &new)
        .validate()
        .map_err(|e| format!("route health injection: {e}"))?;
    let old = std::mem::replace(&mut ctl.cfg, new);
    if let Err(e) = ctl.apply() {
        ctl.cfg = old;
        let _ = ctl.apply();
        return Err(format!("{e:#}"));
    }
    match monitor
        .set_checks(all_checks(&ctl.cfg, ctl.args.address))
        .await
    {
        // A snapshot follows in the event stream, after any transition
        // already queued, so the control loop's view ends up exact.
        Ok(_) => {
            let _ = monitor.request_snapshot();
        }
        Err(e) => {
            // Not a reload that half happened: back to the old checks and
            // the old programming, and say so.
            ctl.cfg = old;
            let _ = monitor
                .set_checks(all_checks(&ctl.cfg, ctl.args.address))
                .await;
            let _ = ctl.apply();
            return Err(format!("health checks of the new configuration: {e}"));
        }
    }
    let rhi_cfg = announcer_config(&ctl.args, &ctl.cfg);
    if announcer_config(&ctl.args, &old) != rhi_cfg {
        // In place: new attributes reach the routers as UPDATEs, never as a
        // withdraw; only what the BGP sessions depend on restarts them.
        match &ctl.rhi {
            Some(rhi) => match rhi.reconfigure(rhi_cfg) {
                Ok(_) => info!("route health injection took the new rhi settings"),
                Err(e) => {
                    error!("route health injection settings refused, keeping the old ones: {e}")
                }
            },
            None => *rhi_rx = start_announcer(ctl).map_err(|e| format!("{e:#}"))?,
        }
    }
    // Forget what no longer exists.
    let names: BTreeSet<String> = ctl.cfg.services.iter().map(|s| s.name.clone()).collect();
    let keep: BTreeSet<CheckId> = check_ids(&ctl.cfg).map(|(id, _)| id).collect();
    ctl.checks.retain(|id, _| keep.contains(id));
    ctl.drained.retain(|(s, r)| {
        names.contains(s)
            && ctl
                .cfg
                .services
                .iter()
                .any(|x| &x.name == s && x.reals.iter().any(|y| y.addr == *r))
    });
    let _ = to_resolver.send(ToResolver::Targets(targets(&ctl.cfg)));
    if ctl.sync_hold.is_some() && !ctl.cfg.flow_sync() {
        info!("flow sync no longer configured: hold over, announcing the VIPs");
        ctl.end_sync_hold();
    }
    info!("configuration reloaded");
    ctl.apply().map_err(|e| format!("{e:#}"))
}

/// Applies a health event without logging it.
fn apply_quiet(checks: &mut HashMap<CheckId, CheckView>, ev: HealthEvent<CheckId>) {
    match ev {
        HealthEvent::Transition(t) => {
            checks.insert(
                t.id,
                CheckView {
                    state: t.to,
                    last: t.outcome,
                    latest: t.latest,
                },
            );
        }
        HealthEvent::Snapshot(all) => {
            for c in all {
                checks.insert(
                    c.id,
                    CheckView {
                        state: c.state,
                        last: c.last,
                        latest: c.latest,
                    },
                );
            }
        }
    }
}

/// Logs a health event, then applies it.
fn health_event(checks: &mut HashMap<CheckId, CheckView>, ev: HealthEvent<CheckId>) {
    if let HealthEvent::Transition(t) = &ev {
        let _s = info_span!("check", service = %t.id.0, real = %t.id.1, check = %t.spec).entered();
        match (&t.to, t.reason()) {
            (CheckState::Failing, Some(r)) => warn!(reason = %r, from = %t.from, "check failing"),
            (to, _) => info!(from = %t.from, to = %to, "check state"),
        }
    }
    apply_quiet(checks, ev);
}

/// What the control loop learns from the resolver and the health monitor,
/// kept back while a [`Hold`] is in force.
enum Input {
    L2(Vec<Resolution>),
    Health(Vec<HealthEvent<CheckId>>),
}

/// What a hold kept back, reduced to its net effect: each real's latest
/// resolution, and one transition per check from its state before the hold
/// to its latest (none where the two agree), so that the log tells what
/// changed across the hold rather than replaying it.
fn coalesce(inputs: Vec<Input>) -> (Vec<Resolution>, Vec<HealthEvent<CheckId>>) {
    let mut l2: HashMap<IpAddr, Resolution> = HashMap::new();
    let mut first: HashMap<CheckId, CheckState> = HashMap::new();
    let mut health: Vec<HealthEvent<CheckId>> = Vec::new();
    let mut last: HashMap<CheckId, vc5_health::Transition<CheckId>> = HashMap::new();
    for input in inputs {
        match input {
            Input::L2(changes) => l2.extend(changes.into_iter().map(|c| (c.addr, c))),
            Input::Health(evs) => {
                for ev in evs {
                    match ev {
                        HealthEvent::Transition(t) => {
                            first.entry(t.id.clone()).or_insert(t.from);
                            last.insert(t.id.clone(), t);
                        }
                        // A snapshot is the monitor's whole truth: it
                        // supersedes what came before it.
                        snapshot @ HealthEvent::Snapshot(_) => {
                            first.clear();
                            last.clear();
                            health.clear();
                            health.push(snapshot);
                        }
                    }
                }
            }
        }
    }
    health.extend(last.into_values().filter_map(|mut t| {
        t.from = first.get(&t.id).copied().unwrap_or(t.from);
        (t.from != t.to).then_some(HealthEvent::Transition(t))
    }));
    (l2.into_values().collect(), health)
}

/// Our interfaces that cannot send now (down, or no carrier), by name.
fn links_without_carrier(ours: &[u32]) -> Vec<String> {
    ours.iter()
        .filter_map(|i| match netlink::interface_by_index(*i) {
            Ok(x) if x.carrier => None,
            Ok(x) => Some(x.name),
            Err(_) => Some(format!("ifindex {i}")),
        })
        .collect()
}

fn no_carrier(down: &[String]) -> String {
    format!("no carrier on {}", down.join(", "))
}

/// Whether the checks' and the neighbour table's news must be held back
/// because the trouble is this host's: one of its interfaces has no
/// carrier, so every real looks unreachable. Starts a hold when one begins.
fn local_trouble(hold: &mut Option<Hold<Input>>, ours: &[u32], cfg: &Config) -> bool {
    if hold.is_some() {
        // A new loss of carrier during the grace is seen by the hold's poll.
        return true;
    }
    let down = links_without_carrier(ours);
    if down.is_empty() {
        return false;
    }
    let grace = crate::hold::grace_for(
        cfg.services
            .iter()
            .flat_map(|s| &s.checks)
            .map(|c| c.interval.saturating_mul(c.rise).saturating_add(c.timeout)),
    );
    let reason = no_carrier(&down);
    warn!(%reason, ?grace, "local trouble: keeping the data plane and the VIPs as they are (established flows stay where they are) until the links are back and the checks have had time to recover");
    *hold = Some(Hold::new(reason, grace));
    true
}

/// Commands to the resolver thread.
enum ToResolver {
    Targets(BTreeSet<IpAddr>),
    Stop,
}

fn spawn_resolver(
    initial: BTreeSet<IpAddr>,
    out: mpsc::UnboundedSender<Vec<Resolution>>,
) -> Result<(
    std::sync::mpsc::Sender<ToResolver>,
    std::thread::JoinHandle<()>,
)> {
    let mut resolver = Resolver::new().context("opening netlink for neighbour resolution")?;
    resolver.set_targets(initial);
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("resolver".into())
        .spawn(move || {
            loop {
                loop {
                    match rx.try_recv() {
                        Ok(ToResolver::Targets(t)) => resolver.set_targets(t),
                        Ok(ToResolver::Stop) | Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                            return;
                        }
                        Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    }
                }
                let changes = resolver.poll(Duration::from_millis(200));
                if !changes.is_empty() && out.send(changes).is_err() {
                    return;
                }
            }
        })?;
    Ok((tx, handle))
}

/// Applies resolver reports to the known layer-2 next hops; logs each.
fn apply_l2(l2: &mut HashMap<IpAddr, Option<L2>>, ours: &[u32], changes: Vec<Resolution>) {
    for c in changes {
        let _span = info_span!("real", addr = %c.addr).entered();
        let new = match &c.state {
            Resolved::Ready {
                ifindex,
                if_mac,
                mac,
            } => Some(L2 {
                mac: *mac,
                src_mac: *if_mac,
                ifindex: *ifindex,
            }),
            Resolved::Unresolved { .. } => None,
        };
        let old = l2.insert(c.addr, new);
        match (&c.state, old.flatten()) {
            (Resolved::Ready { mac, ifindex, .. }, prev) => {
                if !ours.contains(ifindex) {
                    // Frames are redirected there; that interface's driver
                    // must accept XDP redirects (native: ndo_xdp_xmit).
                    warn!(
                        ifindex,
                        "real is reached through an interface vc5d is not attached to"
                    );
                }
                if prev.is_some_and(|p| p.mac != *mac) {
                    warn!(mac = %netlink::format_mac(mac), ifindex, "real's MAC changed");
                } else {
                    info!(mac = %netlink::format_mac(mac), ifindex, "real resolved");
                }
            }
            (Resolved::Unresolved { reason }, Some(_)) => {
                warn!(%reason, "real lost its MAC: out of service")
            }
            (Resolved::Unresolved { reason }, None) => info!(%reason, "real not resolved yet"),
        }
    }
}

#[cfg(test)]
mod check_id_tests {
    use super::*;

    /// A check's key changes exactly when what it does changes: equal keys
    /// for checks whose specs differ only in timing (and name), different
    /// keys for any other difference; reordering changes no key.
    #[test]
    fn check_keys_follow_what_the_check_is() {
        let checks = [
            "{type: http, port: 80, path: /health}",
            "{name: renamed, type: http, port: 80, path: /health, interval: 5s, rise: 4, fall: 5, timeout: 2s}",
            "{type: http, port: 80, path: /other}",
            "{type: http, port: 81, path: /health}",
            "{type: http, port: 80, path: /health, host: example.com}",
            "{type: http, port: 80, path: /health, expect: [200, 204]}",
            "{type: http, port: 80, path: /health, method: HEAD}",
            "{type: https, port: 80, path: /health}",
            "{type: https, port: 80, path: /health, verify: true}",
            "{type: tcp, port: 80}",
            "{type: tcp, port: 81}",
            "{type: dns, port: 80}",
            "{type: dns, port: 80, query: example.com}",
            "{type: dns, port: 80, qtype: A}",
            "{type: dns, port: 80, transport: tcp}",
            "{type: dns, port: 80, rcode: 3}",
        ];
        let yaml = format!(
            "services:\n  - name: s\n    addr: 192.0.2.1\n    port: [80, 81]\n    real: r\n    checks:\n{}reals:\n  r: [10.0.0.1]\n",
            checks
                .iter()
                .map(|c| format!("      - {c}\n"))
                .collect::<String>()
        );
        let cfg = config::parse(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
        let real = IpAddr::from([10, 0, 0, 1]);
        let untimed = |c: &config::Check| {
            let mut s = check_spec(c, real, None);
            s.interval = Duration::ZERO;
            s.timeout = Duration::ZERO;
            (s.rise, s.fall) = (0, 0);
            s
        };
        let all = &cfg.services[0].checks;
        for a in all {
            for b in all {
                assert_eq!(
                    check_key(a) == check_key(b),
                    untimed(a) == untimed(b),
                    "{a:?} / {b:?}"
                );
            }
        }
        // The first two are one check; every other differs.
        assert_eq!(check_key(&all[0]), check_key(&all[1]));
        let keys: BTreeSet<_> = all.iter().map(check_key).collect();
        assert_eq!(keys.len(), checks.len() - 1);
        // Ids do not depend on positions.
        let ids: BTreeSet<CheckId> = check_ids(&cfg).map(|(id, _)| id).collect();
        let mut reversed = cfg.clone();
        reversed.services[0].checks.reverse();
        let ids2: BTreeSet<CheckId> = check_ids(&reversed).map(|(id, _)| id).collect();
        assert_eq!(ids, ids2);
    }
}

#[cfg(test)]
mod flow_sync_tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn synced() -> SyncStatus {
        SyncStatus {
            on: 1,
            state: SYNC_SYNCED,
            started_ms: NOW - 5_000,
            updated_ms: NOW - 100,
            ..SyncStatus::default()
        }
    }

    #[test]
    fn the_hold_ends_only_on_a_fresh_synced_entry_that_started_in_the_past() {
        assert_eq!(sync_done(&synced(), NOW), Ok(()));
        // Never ran: all zero.
        let e = sync_done(&SyncStatus::default(), NOW).unwrap_err();
        assert!(e.contains("has not run"), "{e}");
        // Still resyncing, or starting.
        for (state, word) in [(SYNC_RESYNCING, "resyncing"), (SYNC_STARTING, "starting")] {
            let e = sync_done(&SyncStatus { state, ..synced() }, NOW).unwrap_err();
            assert!(e.contains(word), "{e}");
        }
        // A stale heartbeat: it crashed after it had synced.
        let stale = SyncStatus {
            updated_ms: NOW - HEARTBEAT_FRESH_MS - 1,
            ..synced()
        };
        let e = sync_done(&stale, NOW).unwrap_err();
        assert!(e.contains("not running (last heartbeat 2001 ms ago"), "{e}");
        assert!(
            sync_done(
                &SyncStatus {
                    updated_ms: NOW - HEARTBEAT_FRESH_MS,
                    ..synced()
                },
                NOW
            )
            .is_ok()
        );
        // Stopped cleanly (on = 0) less than a heartbeat ago.
        assert!(sync_done(&SyncStatus { on: 0, ..synced() }, NOW).is_err());
        // A heartbeat or a start in the future is not believed.
        assert!(
            sync_done(
                &SyncStatus {
                    updated_ms: NOW + 60_000,
                    ..synced()
                },
                NOW
            )
            .is_err()
        );
        let e = sync_done(
            &SyncStatus {
                started_ms: NOW + 10,
                ..synced()
            },
            NOW,
        )
        .unwrap_err();
        assert!(e.contains("in the future"), "{e}");
    }

    #[test]
    fn states_addresses_and_rejects_in_words() {
        assert_eq!(sync_state(&SyncStatus::default()), "none");
        assert_eq!(sync_state(&synced()), "synced");
        assert_eq!(
            sync_state(&SyncStatus {
                state: 7,
                ..synced()
            }),
            "unknown (7)"
        );
        assert_eq!(sync_addr([0; 16]), None);
        let v4 = vc5_xdp::maps::addr16("203.0.113.7".parse().unwrap());
        assert_eq!(sync_addr(v4), Some("203.0.113.7".parse().unwrap()));
        let v6 = vc5_xdp::maps::addr16("2001:db8::7".parse().unwrap());
        assert_eq!(sync_addr(v6), Some("2001:db8::7".parse().unwrap()));
        let mut counts = [0u64; vc5_xdp::maps::SYNC_REASONS];
        counts[vc5_xdp::flowsync::status::reason_index("auth")] = 3;
        let r = rejects(&counts);
        assert_eq!(r.len(), REASONS.len());
        assert_eq!(r["auth"], 3);
        assert_eq!(r["duplicate"], 0);
    }
}
