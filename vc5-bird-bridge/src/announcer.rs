//! The front API for the daemon: [`Announcer::start`] with the VIPs to
//! announce from the start, then [`AnnouncerHandle::set_vips`] whenever the
//! healthy set changes, [`AnnouncerHandle::status`] for reports and
//! [`AnnouncerHandle::shutdown`] on SIGTERM.
//!
//! ## Mode selection
//!
//! 1. At start, and whenever not in BIRD mode, vc5 connects to the BIRD
//!    control socket. If a BIRD greets (`0001`), the mode is **bird**.
//! 2. Otherwise, if `as_number` is non-zero and peers are configured, the mode
//!    is **bgp**: the built-in speaker connects to every peer. Otherwise it is
//!    **inactive** (nothing can announce; reported as an error).
//! 3. In bgp or inactive mode the socket is probed again every
//!    [`AnnouncerConfig::bird_probe_interval`]; when a BIRD answers, the
//!    speaker withdraws its routes and sends Cease to every peer, and the mode
//!    becomes bird (BIRD's own sessions take over).
//! 4. In bird mode a lost BIRD is reconnected with backoff and the VIPs
//!    re-applied (a BIRD restart is routine and must not flip modes); only
//!    when BIRD stays unreachable for [`AnnouncerConfig::bird_grace`] does
//!    vc5 fall back to bgp mode.
//!
//! A path that answers something other than BIRD's greeting counts as "no
//! BIRD", and the reason is kept in [`crate::Status::bird`].
//!
//! In every mode the include file is kept equal to the desired set (the
//! set given to [`Announcer::start`] from the start, so VIPs left by a
//! crashed vc5d and no longer healthy are withdrawn as soon as BIRD is told,
//! and a BIRD started later reads the right VIPs).
//!
//! ## One writer of the status
//!
//! The announcer's task owns [`Status`]: it holds the only
//! `watch::Sender`, and every change is made there. The parts it runs
//! report to it instead: BIRD's driver sends `BirdReport`s and each BGP
//! peer task sends its own status (`PeerReport`, keyed by the
//! peer's address) over an `mpsc` channel, and the task files them with the
//! rules in [`crate::status`]. The handle only reads: [`set_vips`] and
//! [`reconfigure`] hand the task a new desired set, which the task shows in
//! the status before any report that could say it was applied.
//!
//! [`set_vips`]: AnnouncerHandle::set_vips
//! [`reconfigure`]: AnnouncerHandle::reconfigure
//!
//! ## Reload
//!
//! [`AnnouncerHandle::reconfigure`] takes a new configuration into the
//! running announcer; the routers never see a VIP withdrawn because of it:
//!
//! - communities, MED and LOCAL_PREF change in place in every mode: BIRD
//!   gets the include with the new attributes and one `configure` (its static
//!   protocol replaces each route); the speaker sends every route again in a
//!   fresh UPDATE on the existing sessions;
//! - anything the speaker's OPEN or sockets depend on (AS number, router id,
//!   peers, peer AS or port, hold time, next hops, timers) restarts the
//!   speaker's sessions if the speaker runs: the routers see the VIPs
//!   withdrawn (Cease) and announced again by the new sessions. In BIRD mode
//!   these only matter for a later fallback, so nothing is disturbed;
//! - `bird_socket` and `bird_include` are fixed for the announcer's life
//!   (they come from the command line): a different value is refused.
//!
//! ## Link up
//!
//! [`AnnouncerHandle::reconnect_now`] tells every speaker peer that is not in
//! a session to forget its backoff and connect now; the daemon calls it when
//! an interface comes back up.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::bgp::codec::EncodeError;
use crate::bgp::{self, PeerConfig, PeerReport, Speaker, SpeakerConfig, Transport};
use crate::bird::client::BirdClient;
use crate::bird::driver::{BirdConfig, BirdExit, BirdReport, Driver};
use crate::bird::include::{self, RouteOptions};
use crate::desired::Desired;
use crate::status::{Mode, PeerStatus, Status};

/// Everything the announcer needs; the daemon fills it from its command
/// line (`--bird-socket`, `--bird-include`, `--address`) and `rhi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncerConfig {
    /// BIRD's control socket (`--bird-socket`, default `/run/bird/bird.ctl`).
    pub bird_socket: PathBuf,
    /// The include file (`--bird-include`, default `/run/vc5/bird-vips.conf`).
    pub bird_include: PathBuf,
    /// This host's address (`--address`): BGP source address, router id when
    /// IPv4, next hop of its family.
    pub address: IpAddr,
    /// BGP identifier when `address` is IPv6.
    pub router_id: Option<Ipv4Addr>,
    /// Our AS (`rhi.as_number`); 0 disables the built-in speaker.
    pub as_number: u32,
    /// The built-in speaker's peers (`rhi.peers`).
    pub peers: Vec<IpAddr>,
    /// The peers' TCP port (179).
    pub peer_port: u16,
    /// The AS every peer must have; `None` accepts the AS each peer announces.
    pub peer_as: Option<u32>,
    /// Proposed hold time (`rhi.hold_time`): 0 or 3..=65535.
    pub hold_time: u16,
    /// Communities on every announcement (`rhi.communities`).
    pub communities: Vec<(u16, u16)>,
    /// MULTI_EXIT_DISC (`rhi.med`).
    pub med: Option<u32>,
    /// LOCAL_PREF, iBGP only (`rhi.local_pref`).
    pub local_pref: Option<u32>,
    /// IPv6 next hop when `address` is IPv4 (`rhi.next_hop6`).
    pub next_hop6: Option<Ipv6Addr>,
    /// How often the BIRD socket is probed while not in BIRD mode.
    pub bird_probe_interval: Duration,
    /// How long BIRD may be unreachable in BIRD mode before falling back.
    pub bird_grace: Duration,
    /// Delay before retrying a configuration BIRD rejected.
    pub bird_retry_interval: Duration,
    /// First delay between BGP connection attempts (doubles each failure).
    pub backoff_min: Duration,
    /// Longest delay between BGP connection attempts.
    pub backoff_max: Duration,
    /// Limit for a TCP connect to a peer.
    pub connect_timeout: Duration,
    /// Limit for withdrawing everything in [`AnnouncerHandle::shutdown`].
    pub shutdown_timeout: Duration,
}

impl AnnouncerConfig {
    /// The defaults: vc5d's default paths, hold time 90, probe every 5 s,
    /// grace 30 s, BGP backoff 1 s to 30 s.
    pub fn new(address: IpAddr, as_number: u32, peers: Vec<IpAddr>) -> AnnouncerConfig {
        AnnouncerConfig {
            bird_socket: PathBuf::from("/run/bird/bird.ctl"),
            bird_include: PathBuf::from("/run/vc5/bird-vips.conf"),
            address,
            router_id: None,
            as_number,
            peers,
            peer_port: 179,
            peer_as: None,
            hold_time: 90,
            communities: Vec::new(),
            med: None,
            local_pref: None,
            next_hop6: None,
            bird_probe_interval: Duration::from_secs(5),
            bird_grace: Duration::from_secs(30),
            bird_retry_interval: Duration::from_secs(5),
            backoff_min: Duration::from_secs(1),
            // Bounded so that a peer back after an outage (without a
            // link-up to call reconnect_now) is retried within 30 s.
            backoff_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
        }
    }

    fn route_options(&self) -> RouteOptions {
        RouteOptions {
            communities: self.communities.clone(),
            med: self.med,
            local_pref: self.local_pref,
        }
    }

    fn bird_config(&self) -> BirdConfig {
        let mut b = BirdConfig::new(self.bird_socket.clone(), self.bird_include.clone());
        b.grace = self.bird_grace;
        b.retry_interval = self.bird_retry_interval;
        b
    }

    fn speaker_config(&self) -> Option<SpeakerConfig> {
        if self.as_number == 0 || self.peers.is_empty() {
            return None;
        }
        let router_id = bgp::router_id_for(self.address, self.router_id)?;
        Some(SpeakerConfig {
            local_as: self.as_number,
            router_id,
            hold_time: self.hold_time,
            next_hop4: match self.address {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            },
            next_hop6: self.next_hop6.or(match self.address {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            }),
            communities: self.communities.clone(),
            med: self.med,
            local_pref: self.local_pref,
            peers: self
                .peers
                .iter()
                .map(|a| PeerConfig {
                    address: *a,
                    port: self.peer_port,
                    remote_as: self.peer_as,
                })
                .collect(),
            transport: Transport {
                local_address: Some(self.address),
                connect_timeout: self.connect_timeout,
                write_timeout: Duration::from_secs(10),
            },
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
        })
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.hold_time == 1 || self.hold_time == 2 {
            return Err(ConfigError::HoldTime(self.hold_time));
        }
        if self.as_number != 0
            && !self.peers.is_empty()
            && bgp::router_id_for(self.address, self.router_id).is_none()
        {
            return Err(ConfigError::NoRouterId(self.address));
        }
        // A peer's status is found by its address.
        let mut seen = BTreeSet::new();
        if let Some(p) = self.peers.iter().find(|p| !seen.insert(**p)) {
            return Err(ConfigError::DuplicatePeer(*p));
        }
        if let Some(sc) = self.speaker_config() {
            bgp::check_attributes(&sc).map_err(ConfigError::Attributes)?;
        }
        if self.bird_include.file_name().is_none() {
            return Err(ConfigError::IncludePath(self.bird_include.clone()));
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return Err(ConfigError::Backoff(self.backoff_min, self.backoff_max));
        }
        Ok(())
    }
}

/// A configuration the announcer cannot run with.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// RFC 4271: the hold time is 0 or at least 3 seconds.
    #[error("hold time {0} s: must be 0 or 3..=65535")]
    HoldTime(u16),
    /// The BGP identifier must be IPv4.
    #[error("--address {0} is IPv6: a BGP router id (IPv4) must be given")]
    NoRouterId(IpAddr),
    /// The include path names no file.
    #[error("include path {} names no file", .0.display())]
    IncludePath(PathBuf),
    /// The reconnection backoff must be positive and its minimum not above
    /// its maximum.
    #[error("BGP backoff {0:?}..{1:?}: must be positive and min <= max")]
    Backoff(Duration, Duration),
    /// `bird_socket` or `bird_include` differs from the running announcer's.
    #[error("{0} cannot change while the announcer runs")]
    Fixed(&'static str),
    /// The same peer twice.
    #[error("BGP peer {0} is listed twice")]
    DuplicatePeer(IpAddr),
    /// The attributes (communities, MED, LOCAL_PREF) do not fit in an
    /// UPDATE with a route.
    #[error("the route attributes cannot be sent in a BGP UPDATE: {0}")]
    Attributes(EncodeError),
}

/// The part of a speaker configuration that its sessions depend on: all but
/// the attributes, which change in place.
fn session_part(sc: &Option<SpeakerConfig>) -> Option<SpeakerConfig> {
    sc.clone().map(|mut sc| {
        sc.communities.clear();
        sc.med = None;
        sc.local_pref = None;
        sc
    })
}

/// Starts announcers.
pub struct Announcer;

impl Announcer {
    /// Starts announcing `vips` (generation 1; the empty set announces
    /// nothing until [`AnnouncerHandle::set_vips`]). The announcer's task
    /// sees this set from its first step, so it never writes an include (or
    /// tells a peer) with a set it was not meant to announce. Must be
    /// called inside a tokio runtime. Returns the handle and a receiver that
    /// sees every status change.
    pub fn start(
        cfg: AnnouncerConfig,
        vips: BTreeSet<IpAddr>,
    ) -> Result<(AnnouncerHandle, watch::Receiver<Status>), ConfigError> {
        cfg.validate()?;
        let first = Desired::first(vips, cfg.route_options());
        let mut initial = Status::default();
        initial.bird.socket = cfg.bird_socket.clone();
        initial.bird.include = cfg.bird_include.clone();
        initial.refresh_desired(&first);
        let (desired_tx, desired_rx) = watch::channel(Arc::new(first));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (config_tx, config_rx) = watch::channel(cfg.clone());
        let (reconnect_tx, reconnect_rx) = watch::channel(0u64);
        let (status_tx, status_rx) = watch::channel(initial);
        let control = Control {
            cfg,
            config: config_rx,
            reconnect: reconnect_rx,
            desired: desired_rx,
            stop: stop_rx,
            status: status_tx,
        };
        let task = tokio::spawn(control.run().instrument(info_span!("rhi")));
        let handle = AnnouncerHandle {
            desired: desired_tx,
            config: config_tx,
            reconnect: reconnect_tx,
            stop: stop_tx,
            status: status_rx.clone(),
            task: Mutex::new(Some(task)),
        };
        Ok((handle, status_rx))
    }
}

/// Controls a running announcer.
///
/// Dropping it without [`AnnouncerHandle::shutdown`] stops the announcer
/// the same way, in the background.
#[derive(Debug)]
pub struct AnnouncerHandle {
    desired: watch::Sender<Arc<Desired>>,
    config: watch::Sender<AnnouncerConfig>,
    reconnect: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    /// Read only: the announcer's task is the status's one writer.
    status: watch::Receiver<Status>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl AnnouncerHandle {
    /// Sets the full set of VIPs to announce. Idempotent: the same set again
    /// changes nothing. Returns the set's generation (see [`Status`]).
    pub fn set_vips(&self, vips: BTreeSet<IpAddr>) -> u64 {
        let mut generation = 0;
        self.desired.send_if_modified(|d| {
            if d.vips == vips {
                generation = d.generation;
                return false;
            }
            generation = d.generation + 1;
            *d = Arc::new(Desired {
                generation,
                vips,
                routes: d.routes.clone(),
                requested_at: SystemTime::now(),
                requested_instant: Instant::now(),
            });
            true
        });
        generation
    }

    /// Takes a new configuration (SIGHUP) without withdrawing anything it
    /// does not have to: see the module documentation for what changes in
    /// place and what restarts the speaker's sessions. A configuration that
    /// does not validate, or changes `bird_socket` or `bird_include`, is
    /// refused and the running one stays. Returns the desired generation
    /// that carries the new attributes (compare with
    /// [`Status::applied_generation`]).
    pub fn reconfigure(&self, cfg: AnnouncerConfig) -> Result<u64, ConfigError> {
        cfg.validate()?;
        {
            let old = self.config.borrow();
            if old.bird_socket != cfg.bird_socket {
                return Err(ConfigError::Fixed("bird_socket"));
            }
            if old.bird_include != cfg.bird_include {
                return Err(ConfigError::Fixed("bird_include"));
            }
        }
        let routes = cfg.route_options();
        // Sessions first, then attributes: a speaker that must restart
        // starts with the new attributes rather than re-sending the old.
        self.config.send_if_modified(|c| {
            let changed = *c != cfg;
            *c = cfg;
            changed
        });
        let mut generation = 0;
        self.desired.send_if_modified(|d| {
            generation = d.generation;
            if d.routes == routes {
                return false;
            }
            generation += 1;
            *d = Arc::new(Desired {
                generation,
                vips: d.vips.clone(),
                routes,
                requested_at: SystemTime::now(),
                requested_instant: Instant::now(),
            });
            true
        });
        Ok(generation)
    }

    /// The interface came back up: every built-in speaker peer that is not
    /// in a session forgets its backoff and connects at once (a connect in
    /// progress is restarted). Established sessions are not touched. In
    /// BIRD mode it does nothing (BIRD runs its own sessions).
    pub fn reconnect_now(&self) {
        self.reconnect.send_modify(|n| *n += 1);
    }

    /// The current status. Its desired set is the latest
    /// [`set_vips`](Self::set_vips) or [`reconfigure`](Self::reconfigure)
    /// even before the announcer's task has taken it in.
    pub fn status(&self) -> Status {
        let mut s = self.status.borrow().clone();
        s.refresh_desired(&self.desired.borrow());
        s
    }

    /// A receiver that sees every status change (for D-Bus signals).
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        let mut r = self.status.clone();
        // As a new subscription: what is there now counts as seen.
        r.mark_unchanged();
        r
    }

    /// Withdraws every VIP and stops: in BIRD mode an empty include and
    /// `configure`; in BGP mode withdrawals then Cease/Administrative
    /// Shutdown to every peer. Returns the final status. Later calls return
    /// at once.
    pub async fn shutdown(&self) -> Status {
        let _ = self.stop.send(true);
        let task = self.task.lock().await.take();
        if let Some(t) = task
            && let Err(e) = t.await
        {
            warn!(error = %e, "announcer task failed");
        }
        self.status()
    }
}

/// The control task: picks the mode and runs it, and owns the status.
struct Control {
    cfg: AnnouncerConfig,
    /// New configurations from [`AnnouncerHandle::reconfigure`].
    config: watch::Receiver<AnnouncerConfig>,
    /// Bumped by [`AnnouncerHandle::reconnect_now`].
    reconnect: watch::Receiver<u64>,
    desired: watch::Receiver<Arc<Desired>>,
    stop: watch::Receiver<bool>,
    /// The one sender of the status: every write is [`Control::publish`].
    status: watch::Sender<Status>,
}

impl Control {
    async fn run(mut self) {
        // First of all, the include must not announce what a previous vc5d
        // left behind.
        self.write_include().await;
        loop {
            if crate::stop_asked(&self.stop) {
                self.publish(|s| {
                    s.mode = Mode::Stopped;
                    true
                });
                return;
            }
            // BIRD mode reads only the attributes, from the desired set; the
            // rest is taken up here, for the next mode.
            self.cfg = self.config.borrow_and_update().clone();
            let probe = self.probe_bird().await;
            if let Some(client) = probe {
                info!(socket = %self.cfg.bird_socket.display(), "BIRD mode");
                match self.bird_mode(client).await {
                    BirdExit::Stopped => return,
                    BirdExit::Unreachable(e) => {
                        warn!(error = %e, grace = ?self.cfg.bird_grace, "BIRD gone; falling back to the built-in BGP speaker");
                    }
                }
            }
            if self.fallback().await {
                return;
            }
        }
    }

    /// Changes the status: `f` says whether it changed anything. The desired
    /// set is taken in first, so that no report shows a generation applied
    /// before the status shows it desired.
    fn publish(&self, f: impl FnOnce(&mut Status) -> bool) -> bool {
        let desired = self.desired.borrow().clone();
        self.status.send_if_modified(|s| {
            let d = s.refresh_desired(&desired);
            f(s) || d
        })
    }

    fn peer_report(&self, r: PeerReport) {
        let desired = self.desired.borrow().clone();
        self.publish(|s| s.apply_peer(r, &desired));
    }

    fn bird_report(&self, r: BirdReport) {
        let failure = match &r {
            BirdReport::Failed {
                message,
                position,
                log,
            } => Some((message.clone(), position.clone(), *log)),
            _ => None,
        };
        let changed = self.publish(|s| s.apply_bird(r));
        // Each distinct error once, not at every retry.
        if let (true, Some((message, position, log))) = (changed, failure) {
            if log {
                warn!(error = %message, ?position, "BIRD did not take the VIPs; its previous configuration stays in force");
            } else {
                debug!(error = %message, "BIRD unreachable");
            }
        }
    }

    /// BIRD mode: runs the driver, filing its reports, until it returns.
    async fn bird_mode(&mut self, client: BirdClient) -> BirdExit {
        let (reports, mut rx) = mpsc::unbounded_channel();
        let driver = Driver {
            cfg: self.cfg.bird_config(),
            desired: self.desired.clone(),
            stop: self.stop.clone(),
            reports,
        };
        let run = driver.run(client);
        tokio::pin!(run);
        let exit = loop {
            tokio::select! {
                exit = &mut run => break exit,
                Some(r) = rx.recv() => self.bird_report(r),
                Ok(()) = self.desired.changed() => {
                    self.publish(|_| false);
                }
            }
        };
        // What it said last (the withdrawal, at stop) is still queued.
        while let Ok(r) = rx.try_recv() {
            self.bird_report(r);
        }
        exit
    }

    /// Connects to BIRD once; records why not.
    async fn probe_bird(&self) -> Option<BirdClient> {
        match BirdClient::connect_with(
            &self.cfg.bird_socket,
            Duration::from_secs(2),
            Duration::from_secs(30),
        )
        .await
        {
            Ok(c) => Some(c),
            Err(e) => {
                let msg = e.to_string();
                self.publish(|s| {
                    if s.bird.last_error.as_ref() == Some(&msg) && !s.bird.connected {
                        return false;
                    }
                    s.bird.connected = false;
                    s.bird.last_error = Some(msg);
                    true
                });
                None
            }
        }
    }

    /// BGP (or inactive) mode until BIRD answers (false) or stop (true).
    async fn fallback(&mut self) -> bool {
        let mut speaker = self.start_speaker();
        loop {
            tokio::select! {
                _ = self.stop.changed() => {
                    if crate::stop_asked(&self.stop) {
                        self.stop_speaker(speaker.take()).await;
                        self.write_include_set(&BTreeSet::new()).await;
                        self.publish(|s| {
                            s.mode = Mode::Stopped;
                            s.announced.clear();
                            true
                        });
                        return true;
                    }
                }
                r = next_report(&mut speaker) => self.peer_report(r),
                r = self.config.changed() => {
                    if r.is_ok() {
                        let new = self.config.borrow_and_update().clone();
                        let restart = session_part(&self.cfg.speaker_config())
                            != session_part(&new.speaker_config());
                        self.cfg = new;
                        if restart {
                            info!("rhi settings the BGP sessions depend on changed: restarting them");
                            self.stop_speaker(speaker.take()).await;
                            speaker = self.start_speaker();
                        }
                    }
                }
                r = self.desired.changed() => {
                    if r.is_ok() {
                        self.publish(|_| false);
                        self.write_include().await;
                    }
                }
                _ = tokio::time::sleep(self.cfg.bird_probe_interval) => {
                    if let Some(client) = self.probe_bird().await {
                        info!("BIRD answers: handing over to BIRD");
                        drop(client);
                        self.stop_speaker(speaker.take()).await;
                        self.publish(|s| {
                            s.peers.clear();
                            s.announced.clear();
                            true
                        });
                        return false;
                    }
                }
            }
        }
    }

    /// The speaker for the current configuration, or inactive mode.
    fn start_speaker(&self) -> Option<Speaker> {
        match self.cfg.speaker_config() {
            Some(sc) => {
                info!(
                    peers = sc.peers.len(),
                    asn = sc.local_as,
                    "built-in BGP speaker mode"
                );
                // Listed before their tasks run: a report finds its entry.
                self.publish(|s| {
                    s.mode = Mode::Bgp;
                    s.peers = sc
                        .peers
                        .iter()
                        .map(|p| PeerStatus::idle(p.address))
                        .collect();
                    s.announced.clear();
                    true
                });
                Some(Speaker::start(
                    &sc,
                    self.desired.clone(),
                    self.reconnect.clone(),
                ))
            }
            None => {
                warn!("no BIRD and no BGP peers: VIPs are not announced");
                self.publish(|s| {
                    s.mode = Mode::Inactive;
                    s.peers.clear();
                    s.announced.clear();
                    s.last_error = Some(format!(
                        "no BIRD at {} and no BGP peers configured: nothing is announced",
                        self.cfg.bird_socket.display()
                    ));
                    true
                });
                None
            }
        }
    }

    /// Withdraws and closes every session of `speaker`, and files its
    /// peers' last reports.
    async fn stop_speaker(&self, speaker: Option<Speaker>) {
        if let Some(sp) = speaker {
            for r in sp.shutdown(self.cfg.shutdown_timeout).await {
                self.peer_report(r);
            }
        }
    }

    async fn write_include(&self) {
        let vips = self.desired.borrow().vips.clone();
        self.write_include_set(&vips).await;
    }

    async fn write_include_set(&self, vips: &BTreeSet<IpAddr>) {
        let routes = self.desired.borrow().routes.clone();
        if let Err(e) = include::update_async(&self.cfg.bird_include, vips, &routes).await {
            warn!(path = %self.cfg.bird_include.display(), error = %e, "cannot write the BIRD include");
        }
    }
}

/// The speaker's next report, or never when there is no speaker.
async fn next_report(speaker: &mut Option<Speaker>) -> PeerReport {
    match speaker {
        Some(sp) => sp.report().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AnnouncerConfig {
        AnnouncerConfig::new("192.0.2.1".parse().expect("addr"), 65000, vec![])
    }

    /// A handle dropped without `shutdown` stops the task as `shutdown`
    /// would, instead of leaving it spinning on closed channels.
    #[tokio::test]
    async fn dropping_the_handle_stops_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg();
        c.bird_socket = dir.path().join("no-bird.ctl");
        c.bird_include = dir.path().join("vips.conf");
        let (h, mut status) = Announcer::start(c, BTreeSet::new()).unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| s.mode == Mode::Inactive),
        )
        .await
        .expect("inactive: no BIRD, no peers")
        .unwrap();
        drop(h);
        // The status's one sender is the task's: it is dropped when the task ends.
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while status.changed().await.is_ok() {}
        })
        .await;
        assert!(ended.is_ok(), "the task still runs");
        assert_eq!(status.borrow().mode, Mode::Stopped);
    }

    #[test]
    fn backoff_must_be_positive_and_ordered() {
        assert_eq!(cfg().validate(), Ok(()));
        let mut c = cfg();
        c.backoff_min = Duration::ZERO;
        assert!(matches!(c.validate(), Err(ConfigError::Backoff(..))));
        let mut c = cfg();
        c.backoff_min = Duration::from_secs(40);
        assert!(matches!(c.validate(), Err(ConfigError::Backoff(..))));
    }

    #[test]
    fn peers_are_distinct_and_attributes_fit_an_update() {
        let mut c = cfg();
        c.peers = vec!["192.0.2.2".parse().expect("addr"); 2];
        assert_eq!(
            c.validate(),
            Err(ConfigError::DuplicatePeer(
                "192.0.2.2".parse().expect("addr")
            ))
        );
        c.peers.pop();
        c.communities = (0..1000).map(|v| (65000, v)).collect();
        assert_eq!(c.validate(), Ok(()));
        c.communities = (0..1100).map(|v| (65000, v)).collect();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Attributes(EncodeError::NoRoomForNlri { .. }))
        ));
        // Without the speaker, BIRD's own limits apply.
        c.as_number = 0;
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn only_session_settings_restart_the_speaker() {
        let mut a = cfg();
        a.peers = vec!["192.0.2.2".parse().expect("addr")];
        let mut b = a.clone();
        b.communities = vec![(65000, 1)];
        b.med = Some(5);
        b.local_pref = Some(200);
        assert_eq!(
            session_part(&a.speaker_config()),
            session_part(&b.speaker_config())
        );
        for change in [
            |c: &mut AnnouncerConfig| c.as_number = 65001,
            |c: &mut AnnouncerConfig| c.hold_time = 30,
            |c: &mut AnnouncerConfig| c.peers.push("192.0.2.3".parse().expect("addr")),
            |c: &mut AnnouncerConfig| c.next_hop6 = Some("2001:db8::1".parse().expect("addr")),
        ] {
            let mut c = b.clone();
            change(&mut c);
            assert_ne!(
                session_part(&a.speaker_config()),
                session_part(&c.speaker_config())
            );
        }
    }
}
