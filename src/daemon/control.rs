//! The state the control loop owns, and how it changes.

use super::args::Args;
use super::checks::{CheckId, CheckView};
use super::derive::{Change, Derivation, Inputs, NextHop, changes};
use super::probes::Probes;
use super::trouble::{Input, Window};
use crate::config::Config;
use crate::hold::Hold;
use crate::logbuf::LogBuffer;
use crate::status::{Command, CommandError, Event, InterfaceStatus, Status};
use anyhow::{Context, Result};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{broadcast, oneshot, watch};
use tracing::{debug, info, info_span, warn};
use vc5_bird_bridge::AnnouncerHandle;
use vc5_xdp::maps::SyncStatus;
use vc5_xdp::{DataPlane, ServiceSpec, dataplane};

/// What the control loop asks of the data plane when it applies a change
/// and reads the status: a trait so that applying, reloading and rolling
/// back are tested without root. vc5d runs on [`DataPlane`].
pub(super) trait Plane {
    fn program(&mut self, specs: &[ServiceSpec]) -> Result<(), dataplane::Error>;
    fn insert_limit(&self) -> u32;
    fn set_insert_limit(&mut self, limit: u32) -> Result<(), dataplane::Error>;
    fn stats(&self) -> Result<dataplane::Stats, dataplane::Error>;
    fn sync_status(&self) -> Result<(SyncStatus, Vec<SyncStatus>), dataplane::Error>;
    /// The pairs probed through the VIP (none without a probe namespace).
    fn set_probes(&mut self, _specs: &[dataplane::ProbeSpec]) -> Result<(), dataplane::Error> {
        Ok(())
    }
    fn set_probe_config(
        &mut self,
        _cfg: Option<&dataplane::ProbeConfig>,
    ) -> Result<(), dataplane::Error> {
        Ok(())
    }
}

impl Plane for DataPlane {
    fn program(&mut self, specs: &[ServiceSpec]) -> Result<(), dataplane::Error> {
        DataPlane::program(self, specs)
    }
    fn insert_limit(&self) -> u32 {
        DataPlane::insert_limit(self)
    }
    fn set_insert_limit(&mut self, limit: u32) -> Result<(), dataplane::Error> {
        DataPlane::set_insert_limit(self, limit)
    }
    fn stats(&self) -> Result<dataplane::Stats, dataplane::Error> {
        DataPlane::stats(self)
    }
    fn sync_status(&self) -> Result<(SyncStatus, Vec<SyncStatus>), dataplane::Error> {
        DataPlane::sync_status(self)
    }
    fn set_probes(&mut self, specs: &[dataplane::ProbeSpec]) -> Result<(), dataplane::Error> {
        DataPlane::set_probes(self, specs)
    }
    fn set_probe_config(
        &mut self,
        cfg: Option<&dataplane::ProbeConfig>,
    ) -> Result<(), dataplane::Error> {
        DataPlane::set_probe_config(self, cfg)
    }
}

/// The state the control loop owns.
pub(super) struct Control<P: Plane = DataPlane> {
    pub(super) args: Args,
    pub(super) cfg: Config,
    pub(super) dp: P,
    /// Layer-2 next hop of each real; None while unresolved.
    pub(super) hops: HashMap<IpAddr, Option<NextHop>>,
    pub(super) checks: HashMap<CheckId, CheckView>,
    /// Reals drained at run time: (service name, real).
    pub(super) drained: BTreeSet<(String, IpAddr)>,
    /// What the rules made of the inputs at the last programming (None
    /// before the first): the status is built from it, and the next
    /// change's events are the difference from it.
    pub(super) derived: Option<Derivation>,
    pub(super) announced: BTreeSet<IpAddr>,
    /// Route health injection (started once the first programming has
    /// decided what may be announced), and what it last reported.
    pub(super) rhi: Option<AnnouncerHandle>,
    pub(super) rhi_status: vc5_bird_bridge::Status,
    pub(super) interfaces: Vec<InterfaceStatus>,
    pub(super) stats: Option<vc5_xdp::dataplane::Stats>,
    pub(super) started_ms: u64,
    /// When start-up ended with the first programming (None before).
    pub(super) ready_ms: Option<u64>,
    pub(super) reloads: crate::status::ReloadStatus,
    pub(super) status: watch::Sender<Arc<Status>>,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) log: LogBuffer,
    /// The data plane and the VIPs are held as they are while this host's
    /// own trouble lasts (see [`crate::hold`]).
    pub(super) hold: Option<Hold<Input>>,
    /// Reals leaving service since the first of them did, to tell a local
    /// cause (most of them at once) from reals failing.
    pub(super) window: Option<Window>,
    /// The reals a hold for "most reals failed at once" waits for.
    pub(super) together: Option<BTreeSet<(String, IpAddr)>>,
    /// Set (to vc5d's start, from which `flow_sync_wait` counts) while no
    /// VIP is announced because vc5-flowsync has not resynced yet.
    pub(super) sync_hold: Option<Instant>,
    /// What vc5-flowsync last published: entry 0 (this host), its peers.
    pub(super) sync: Option<(SyncStatus, Vec<SyncStatus>)>,
    /// The probe namespace for checks through the VIP, or why there is
    /// none (a configuration that needs it is then refused).
    pub(super) probes: Option<Probes>,
    pub(super) probes_error: Option<String>,
}

impl<P: Plane> Control<P> {
    /// Nothing known yet: no MAC, no check result, no drain, nothing
    /// announced, no hold.
    pub(super) fn new(
        args: Args,
        cfg: Config,
        dp: P,
        status: watch::Sender<Arc<Status>>,
        events: broadcast::Sender<Event>,
        log: LogBuffer,
    ) -> Control<P> {
        Control {
            args,
            cfg,
            dp,
            hops: HashMap::new(),
            checks: HashMap::new(),
            drained: BTreeSet::new(),
            derived: None,
            announced: BTreeSet::new(),
            rhi: None,
            rhi_status: vc5_bird_bridge::Status::default(),
            interfaces: Vec::new(),
            stats: None,
            started_ms: super::unix_ms(std::time::SystemTime::now()),
            ready_ms: None,
            reloads: crate::status::ReloadStatus::default(),
            status,
            events,
            log,
            hold: None,
            window: None,
            together: None,
            sync_hold: None,
            sync: None,
            probes: None,
            probes_error: None,
        }
    }

    /// Derives what follows from the inputs, programs the data plane with
    /// it, publishes the status it gives, then reports what changed (logs,
    /// events, the VIPs to announce). Nothing changes if programming fails.
    pub(super) fn apply(&mut self) -> Result<()> {
        if self.dp.insert_limit() != self.cfg.flow_insert_limit {
            self.dp
                .set_insert_limit(self.cfg.flow_insert_limit)
                .context("setting the flow insert limit")?;
        }
        let new = self.derivation();
        let specs = new.specs(&self.cfg);
        let t = Instant::now();
        self.dp
            .program(&specs)
            .context("programming the data plane")?;
        self.program_probes()?;
        debug!(
            services = specs.len(),
            took_ms = t.elapsed().as_millis() as u64,
            "data plane programmed"
        );
        let before = self.to_announce();
        let changed = changes(self.derived.as_ref(), &new);
        self.derived = Some(new);
        // The snapshot first: a client that hears an event and then reads
        // the status sees the change.
        self.publish();
        self.report(changed);
        let after = self.to_announce();
        if after != before
            && let Some(rhi) = &self.rhi
        {
            rhi.set_vips(after);
        }
        Ok(())
    }

    /// The probes through the VIP as the reals' next hops now are (also
    /// before the first programming: see the start-up in serve.rs).
    pub(super) fn program_probes(&mut self) -> Result<()> {
        if let Some(p) = &self.probes {
            self.dp
                .set_probes(&p.specs(&self.cfg, &self.hops))
                .context("programming the probes through the VIP")?;
        }
        Ok(())
    }

    /// What the rules make of the inputs as they are now.
    pub(super) fn derivation(&self) -> Derivation {
        let none = BTreeSet::new();
        Derivation::new(&Inputs {
            cfg: &self.cfg,
            checks: &self.checks,
            hops: &self.hops,
            drained: &self.drained,
            probation: self.window.as_ref().map_or(&none, |w| &w.healthy),
        })
    }

    /// Logs the changes and sends their events.
    fn report(&self, changed: Vec<Change>) {
        for c in changed {
            match c {
                Change::Real {
                    service,
                    real,
                    before,
                    healthy,
                    reason,
                } => {
                    let _s = info_span!("real", service = %service, addr = %real).entered();
                    match (before, healthy) {
                        (None, true) => info!("healthy"),
                        (None, false) => info!(%reason, "not healthy"),
                        (Some(_), true) => info!("back in service"),
                        (Some(_), false) => warn!(%reason, "out of service"),
                    }
                    let _ = self.events.send(Event::RealHealth {
                        service,
                        real,
                        healthy,
                        reason,
                    });
                }
                Change::Vip {
                    vip,
                    announceable: true,
                } => info!(vip = %vip, "VIP announceable: every service on it is up"),
                Change::Vip { vip, .. } => {
                    warn!(vip = %vip, "VIP not announceable: a service on it is down")
                }
            }
        }
    }

    /// What route health injection is told to announce: what may be, unless
    /// flow sync holds the announcements.
    pub(super) fn to_announce(&self) -> BTreeSet<IpAddr> {
        if self.sync_hold.is_some() {
            BTreeSet::new()
        } else {
            self.derived
                .as_ref()
                .map(|d| d.announceable.clone())
                .unwrap_or_default()
        }
    }

    /// Takes route health injection's latest report: what is announced
    /// now (signalled per VIP) and the sessions, for the status.
    pub(super) fn rhi_update(&mut self, st: vc5_bird_bridge::Status) {
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

    pub(super) fn refresh_stats(&mut self) {
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
    pub(super) fn publish(&self) {
        let st = self.status_snapshot();
        self.status.send_replace(Arc::new(st));
    }

    /// Finds a configured (service, real) by name and address text.
    pub(super) fn find(&self, service: &str, real: &str) -> Result<(String, IpAddr), CommandError> {
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

    pub(super) fn command(
        &mut self,
        c: Command,
    ) -> Option<oneshot::Sender<Result<(), CommandError>>> {
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
