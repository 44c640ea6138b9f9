//! Reloading the configuration: everything that can refuse it is asked
//! before anything changes, and a refusal leaves the running one in force.

use super::checks::{CheckId, CheckView, all_checks, check_ids, probe_changed, targets};
use super::control::{Control, Plane};
use super::serve::{ToResolver, announcer_config, notify, start_announcer};
use crate::config::{self, Config};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use tokio::sync::watch;
use tracing::{error, info};
use vc5_health::Monitor;

/// Re-reads the configuration and applies it; on any error the running
/// configuration stays in force and the error is returned.
pub(super) async fn reload<P: Plane>(
    ctl: &mut Control<P>,
    monitor: &Monitor<CheckId>,
    to_resolver: &std::sync::mpsc::Sender<ToResolver>,
    rhi_rx: &mut watch::Receiver<vc5_bird_bridge::Status>,
) -> std::result::Result<(), String> {
    notify(crate::sdnotify::reloading("reloading the configuration"));
    let r = reload_inner(ctl, monitor, to_resolver, rhi_rx).await;
    ctl.record_reload(&r);
    notify(crate::sdnotify::ready(match &r {
        Ok(()) => "configuration reloaded",
        Err(_) => "reload refused; the running configuration stays",
    }));
    r
}

impl<P: Plane> Control<P> {
    /// NAT addresses for the pairs of the configuration in force, and
    /// the probes' sources for its reals.
    fn assign_probes(&mut self) {
        if let Some(p) = &mut self.probes {
            p.assign(&self.cfg);
            if let Err(e) = p.reconfigure(&mut self.dp, self.args.address, &self.cfg) {
                error!("probe sources: {e:#}");
            }
        }
    }

    /// Counts a reload and publishes how it went, so that whoever asked
    /// (an operator, a test) sees it in the status, not only in the log.
    pub(super) fn record_reload(&mut self, r: &std::result::Result<(), String>) {
        let at_ms = super::unix_ms(std::time::SystemTime::now());
        let reloads = &mut self.reloads;
        match r {
            Ok(()) => reloads.done += 1,
            Err(_) => reloads.refused += 1,
        }
        reloads.last = Some(crate::status::LastReload {
            at_ms,
            ok: r.is_ok(),
            error: r.as_ref().err().cloned(),
        });
        self.publish();
    }
}

/// Takes out of `checks` the views of the checks that keep their id from
/// `old` to `new` but probe otherwise: they start afresh, as the monitor
/// starts them, and no derivation of `new` may judge a real by the old
/// probe's state. Returns them, for a refused reload to put back.
fn take_changed(
    old: &Config,
    new: &Config,
    checks: &mut HashMap<CheckId, CheckView>,
) -> Vec<(CheckId, CheckView)> {
    probe_changed(old, new)
        .into_iter()
        .filter_map(|id| checks.remove_entry(&id))
        .collect()
}

/// Forgets the checks and drains of services, reals and checks that `cfg`
/// no longer has; what stays keeps its state.
fn forget_removed(
    cfg: &Config,
    checks: &mut HashMap<CheckId, CheckView>,
    drained: &mut BTreeSet<(String, IpAddr)>,
) {
    let ids: HashSet<CheckId> = check_ids(cfg).map(|(id, _, _)| id).collect();
    checks.retain(|id, _| ids.contains(id));
    let pairs: HashSet<(&str, IpAddr)> = cfg
        .services
        .iter()
        .flat_map(|s| s.reals.iter().map(move |r| (s.name.as_str(), r.addr)))
        .collect();
    drained.retain(|(s, r)| pairs.contains(&(s.as_str(), *r)));
}

pub(super) async fn reload_inner<P: Plane>(
    ctl: &mut Control<P>,
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
    super::probes::require(&new, ctl.probes.as_ref(), ctl.probes_error.as_deref())
        .map_err(|e| format!("{e:#}"))?;
    let old = std::mem::replace(&mut ctl.cfg, new);
    let changed = take_changed(&old, &ctl.cfg, &mut ctl.checks);
    ctl.assign_probes();
    if let Err(e) = ctl.apply() {
        ctl.cfg = old;
        ctl.checks.extend(changed);
        ctl.assign_probes();
        let _ = ctl.apply();
        return Err(format!("{e:#}"));
    }
    match monitor
        .set_checks(all_checks(&ctl.cfg, ctl.args.address, ctl.probes.as_ref()))
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
            ctl.checks.extend(changed);
            ctl.assign_probes();
            let _ = monitor
                .set_checks(all_checks(&ctl.cfg, ctl.args.address, ctl.probes.as_ref()))
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
    forget_removed(&ctl.cfg, &mut ctl.checks, &mut ctl.drained);
    // A window of reals failing together may undo what came since it opened;
    // it must not bring back the old probes' views either.
    if let Some(w) = &mut ctl.window {
        for (id, _) in &changed {
            w.before.remove(id);
        }
    }
    let _ = to_resolver.send(ToResolver::Targets(targets(&ctl.cfg)));
    if ctl.sync_hold.is_some() && !ctl.cfg.flow_sync() {
        info!("flow sync no longer configured: hold over, announcing the VIPs");
        ctl.end_sync_hold();
    }
    // No second programming: what changed since the apply above (forgotten
    // drains and checks of what the configuration no longer has, the
    // window's copies) is no input of the derivation, so it would program
    // the same specs again.
    info!("configuration reloaded");
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Reloads against a data plane that refuses on demand, with a real
    //! health monitor and no root. The reals are documentation addresses
    //! (loopback ones are refused as reals) and the checks' source is
    //! 127.0.0.1: the kernel refuses to route from it to them (connect
    //! fails with EINVAL), so no check sends a packet.

    use super::*;
    use crate::daemon::Args;
    use crate::logbuf::LogBuffer;
    use crate::status::Status;
    use clap::Parser;
    use std::sync::Arc;
    use tokio::sync::broadcast;
    use vc5_health::CheckState;
    use vc5_xdp::dataplane::{self, Error, Stats};
    use vc5_xdp::maps::SyncStatus;
    use vc5_xdp::{RealMode, ServiceSpec};

    /// Takes at most `max` endpoints, as the real one takes at most 4,095,
    /// and remembers what it was given.
    struct Fake {
        max: usize,
        programmed: Vec<Vec<ServiceSpec>>,
        limit: u32,
    }

    impl Plane for Fake {
        fn program(&mut self, specs: &[ServiceSpec]) -> Result<(), Error> {
            if specs.len() > self.max {
                return Err(Error::Full {
                    what: "service endpoints",
                    have: specs.len(),
                    max: self.max,
                });
            }
            self.programmed.push(specs.to_vec());
            Ok(())
        }
        fn insert_limit(&self) -> u32 {
            self.limit
        }
        fn set_insert_limit(&mut self, limit: u32) -> Result<(), Error> {
            self.limit = limit;
            Ok(())
        }
        fn stats(&self) -> Result<Stats, dataplane::Error> {
            Ok(Stats::default())
        }
        fn sync_status(&self) -> Result<(SyncStatus, Vec<SyncStatus>), Error> {
            Ok((SyncStatus::default(), Vec::new()))
        }
    }

    /// `n` services `s0..`, each one port on its own VIP with reals
    /// 198.51.100.2 and .3 (and .4 if `third`) and a TCP check.
    fn yaml(n: usize, third: bool) -> String {
        let mut y = String::from("services:\n");
        for i in 0..n {
            y += &format!(
                "  - name: s{i}\n    addr: 192.0.2.{}\n    port: 80\n    real: r\n    need: 1\n    checks:\n      - {{type: tcp, port: 80, interval: 1h}}\n",
                i + 1
            );
        }
        y += if third {
            "reals:\n  r: [198.51.100.2, 198.51.100.3, 198.51.100.4]\n"
        } else {
            "reals:\n  r: [198.51.100.2, 198.51.100.3]\n"
        };
        y
    }

    struct Bed {
        _dir: tempfile::TempDir,
        file: std::path::PathBuf,
        ctl: Control<Fake>,
        status: watch::Receiver<Arc<Status>>,
        monitor: Monitor<CheckId>,
        to_resolver: std::sync::mpsc::Sender<ToResolver>,
        _resolver: std::sync::mpsc::Receiver<ToResolver>,
        rhi_rx: watch::Receiver<vc5_bird_bridge::Status>,
    }

    /// A control loop on `first`, applied once, with every check passing,
    /// s0's first real drained.
    fn bed(first: &str, max: usize) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vc5.yaml");
        std::fs::write(&file, first).unwrap();
        let args = Args::parse_from([
            "vc5d",
            "--config",
            file.to_str().unwrap(),
            "--interface",
            "lo",
            "--address",
            "127.0.0.1",
        ]);
        let cfg = config::load(&file).unwrap();
        let (status_tx, status) = watch::channel(Arc::new(Status::default()));
        let (events, _) = broadcast::channel(64);
        let fake = Fake {
            max,
            programmed: Vec::new(),
            limit: 0,
        };
        let mut ctl = Control::new(args, cfg, fake, status_tx, events, LogBuffer::default());
        for s in &ctl.cfg.services {
            for r in &s.reals {
                ctl.hops.insert(
                    r.addr,
                    Some(crate::daemon::derive::NextHop {
                        l2: vc5_xdp::L2 {
                            mac: [2, 0, 0, 0, 0, 1],
                            src_mac: [2, 0, 0, 0, 0, 2],
                            ifindex: 1,
                            ..vc5_xdp::L2::default()
                        },
                        via: None,
                    }),
                );
            }
        }
        let ids: Vec<CheckId> = check_ids(&ctl.cfg).map(|(id, _, _)| id).collect();
        for id in ids {
            ctl.checks.insert(
                id,
                CheckView {
                    state: CheckState::Passing,
                    last: None,
                    latest: Arc::default(),
                },
            );
        }
        ctl.drained
            .insert(("s0".into(), "198.51.100.2".parse().unwrap()));
        ctl.apply().unwrap();
        let (monitor, _) = Monitor::start();
        let (to_resolver, resolver) = std::sync::mpsc::channel();
        let (_, rhi_rx) = watch::channel(vc5_bird_bridge::Status::default());
        Bed {
            _dir: dir,
            file,
            ctl,
            status,
            monitor,
            to_resolver,
            _resolver: resolver,
            rhi_rx,
        }
    }

    impl Bed {
        async fn reload(&mut self, text: &str) -> Result<(), String> {
            std::fs::write(&self.file, text).unwrap();
            reload(
                &mut self.ctl,
                &self.monitor,
                &self.to_resolver,
                &mut self.rhi_rx,
            )
            .await
        }
    }

    /// A configuration the data plane refuses (more endpoints than it
    /// takes) leaves everything as it was: the configuration, the drains,
    /// the checks, the derivation, the status, and the data plane
    /// reprogrammed with the old specs.
    #[tokio::test]
    async fn a_reload_the_data_plane_refuses_rolls_back() {
        let mut b = bed(&yaml(2, false), 3);
        let (cfg, drained, derived) = (
            b.ctl.cfg.clone(),
            b.ctl.drained.clone(),
            b.ctl.derived.clone(),
        );
        let checks: BTreeSet<CheckId> = b.ctl.checks.keys().cloned().collect();
        let specs = b.ctl.dp.programmed[0].clone();
        // s0's check probing otherwise under its old name: its view is put
        // back with everything else.
        let refused = yaml(4, false).replacen(
            "{type: tcp, port: 80, interval: 1h}",
            "{name: 'tcp:80', type: http, port: 80, interval: 1h}",
            1,
        );
        let err = b.reload(&refused).await.unwrap_err();
        assert!(err.contains("too many service endpoints: 4"), "{err}");
        assert_eq!(b.ctl.cfg, cfg);
        assert_eq!(b.ctl.drained, drained);
        assert_eq!(b.ctl.derived, derived);
        assert_eq!(
            b.ctl.checks.keys().cloned().collect::<BTreeSet<_>>(),
            checks
        );
        assert_eq!(
            b.ctl.dp.programmed.last(),
            Some(&specs),
            "the old specs again"
        );
        let st = b.status.borrow().clone();
        assert_eq!(st.services.len(), 2, "the status shows the old services");
        assert!(st.services[0].reals[0].drained);
        let last = st
            .reloads
            .last
            .as_ref()
            .expect("the refusal is in the status");
        assert!(!last.ok && last.error.as_deref() == Some(err.as_str()));
        assert_eq!((st.reloads.done, st.reloads.refused), (0, 1));
        // And a reload it takes goes through.
        b.reload(&yaml(3, false)).await.unwrap();
        assert_eq!(b.ctl.cfg.services.len(), 3);
        let st = b.status.borrow().clone();
        assert_eq!(st.services.len(), 3);
        assert_eq!((st.reloads.done, st.reloads.refused), (1, 1));
        assert!(
            st.reloads
                .last
                .as_ref()
                .is_some_and(|l| l.ok && l.error.is_none())
        );
    }

    /// A reload keeps the state of what stays (drains, check results) and
    /// forgets what is gone; a new real starts unchecked.
    #[tokio::test]
    async fn a_reload_keeps_what_stays_and_forgets_what_is_gone() {
        let mut b = bed(&yaml(3, false), 100);
        b.ctl
            .drained
            .insert(("s2".into(), "198.51.100.3".parse().unwrap()));
        let before = b.ctl.dp.programmed.len();
        b.reload(&yaml(2, true)).await.unwrap();
        assert_eq!(b.ctl.dp.programmed.len(), before + 1, "programmed once");
        let pairs: Vec<(String, IpAddr)> = b.ctl.drained.iter().cloned().collect();
        assert_eq!(pairs, [("s0".to_string(), "198.51.100.2".parse().unwrap())]);
        assert!(b.ctl.checks.keys().all(|(s, _, _)| s != "s2"));
        assert_eq!(b.ctl.checks.len(), 4, "s0 and s1's two old reals");
        let d = b.ctl.derived.as_ref().unwrap();
        let modes: Vec<RealMode> = d.services[0].reals.iter().map(|r| r.mode).collect();
        assert_eq!(modes, [RealMode::Drain, RealMode::Serve, RealMode::Drain]);
        assert_eq!(d.services[0].reals[2].state.to_string(), "pending");
        assert!(!d.services[0].reals[2].healthy);
    }

    /// A check that keeps its name keeps its state over a reload that
    /// changes only its timing; one whose probe changed under the same
    /// name starts afresh (its real pending until its first result), as
    /// the monitor starts it.
    #[tokio::test]
    async fn a_reload_keeps_a_retimed_check_and_forgets_a_changed_probe() {
        let mut b = bed(&yaml(2, false), 100);
        let text = yaml(2, false)
            .replacen(
                "{type: tcp, port: 80, interval: 1h}",
                "{name: 'tcp:80', type: http, port: 80, interval: 1h}",
                1,
            )
            .replacen(
                "{type: tcp, port: 80, interval: 1h}",
                "{type: tcp, port: 80, interval: 30m, rise: 5}",
                1,
            );
        b.reload(&text).await.unwrap();
        let mut kept: Vec<&CheckId> = b.ctl.checks.keys().collect();
        kept.sort();
        let id = |r: &str| ("s1".to_string(), r.parse().unwrap(), "tcp:80".to_string());
        assert_eq!(kept, [&id("198.51.100.2"), &id("198.51.100.3")]);
        assert!(
            b.ctl
                .checks
                .values()
                .all(|v| v.state == CheckState::Passing)
        );
        let d = b.ctl.derived.as_ref().unwrap();
        let states: Vec<String> = d.services[0]
            .reals
            .iter()
            .chain(&d.services[1].reals)
            .map(|r| r.state.to_string())
            .collect();
        // s0's first real is drained, but a real whose checks have not
        // reported is pending first.
        assert_eq!(states, ["pending", "pending", "serving", "serving"]);
    }

    /// `forget_removed` alone: a drain of a real that moved to another
    /// service is not carried over to it.
    #[test]
    fn a_drain_belongs_to_its_service() {
        let cfg = config::parse(&yaml(2, false), "t.yaml").unwrap();
        let mut drained: BTreeSet<(String, IpAddr)> = [
            ("s0".to_string(), "198.51.100.2".parse().unwrap()),
            ("s9".to_string(), "198.51.100.2".parse().unwrap()),
            ("s1".to_string(), "198.51.100.9".parse().unwrap()),
        ]
        .into();
        forget_removed(&cfg, &mut HashMap::new(), &mut drained);
        assert_eq!(drained.len(), 1);
    }
}
