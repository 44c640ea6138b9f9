//! Start-up and the control loop: the task that owns the data plane, fed by
//! the resolver, the health monitor, route health injection, the front ends
//! and signals.

use super::args::Args;
use super::checks::{CheckId, all_checks, check_ids, checks_with_ways, health_event, targets};
use super::control::{Control, Plane};
use super::derive::NextHop;
use super::probes::Probes;
use super::reload::reload;
use super::trouble::{Input, TOGETHER_HOLD_MAX, coalesce, links_without_carrier, no_carrier};
use super::unix_ms;
use crate::config::Config;
use crate::logbuf::LogBuffer;
use crate::status::{Command, CommandError, InterfaceStatus, Shared, Status};
use anyhow::{Context, Result, bail};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{error, info, info_span, warn};
use vc5_bird_bridge::{Announcer, AnnouncerConfig};
use vc5_health::Monitor;
use vc5_xdp::netlink::{self, Resolution, Resolved, Resolver};
use vc5_xdp::{DataPlane, L2, MapSizes};

/// How long start-up waits at least for the reals' MACs and first check
/// results before the first programming (longer if a check's interval
/// and timeout are), and at most. A restarted vc5d keeps the old tables
/// running meanwhile.
pub(super) const STARTUP_GRACE: Duration = Duration::from_secs(3);

pub(super) const MAX_STARTUP_GRACE: Duration = Duration::from_secs(10);

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

/// Starts route health injection with the VIPs the control loop has
/// decided may be announced; returns its status channel.
pub(super) fn start_announcer<P: Plane>(
    ctl: &mut Control<P>,
) -> Result<watch::Receiver<vc5_bird_bridge::Status>> {
    // The set goes in with the start: the announcer's task never sees an
    // empty set it was not meant to announce.
    let (rhi, rx) = Announcer::start(announcer_config(&ctl.args, &ctl.cfg), ctl.to_announce())
        .map_err(|e| anyhow::anyhow!("route health injection: {e}"))?;
    ctl.rhi = Some(rhi);
    Ok(rx)
}

/// The announcer's configuration from the command line and `rhi`.
pub(super) fn announcer_config(args: &Args, cfg: &Config) -> AnnouncerConfig {
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

pub(super) async fn serve(args: Args, cfg: Config, log: LogBuffer) -> Result<()> {
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

    // The probe namespace, for checks through the VIP: made whether or not
    // this configuration has any, so that a reload may add them; fatal only
    // when it has.
    let (probes, probes_error) = match Probes::start(
        &mut dp,
        &args.bpffs,
        ours.first().copied().unwrap_or(0),
        args.address,
        &cfg,
    ) {
        Ok(p) => (Some(p), None),
        Err(e) => {
            let why = format!("{e:#}");
            // A previous vc5d's namespace is gone: stop looking for its replies.
            if let Err(e) = dp.set_probe_config(None) {
                warn!("clearing the probe configuration: {e}");
            }
            super::probes::require(&cfg, None, Some(&why))?;
            warn!("no probe namespace, so no checks through the VIP: {why}");
            (None, Some(why))
        }
    };

    let (monitor, mut health_rx) = Monitor::<CheckId>::start();
    let source = args.address;
    // A check through the VIP starts only once the way to its real is
    // known (below): a run before would fail and, being its first result,
    // decide at once, taking every such real out of service at each restart.
    let mut running = checks_with_ways(&cfg, source, probes.as_ref(), &HashMap::new());
    monitor
        .set_checks(running.clone())
        .await
        .context("starting health checks")?;

    let mut ctl = Control::new(args, cfg, dp, status, shared.events.clone(), log);
    ctl.probes = probes;
    ctl.probes_error = probes_error;
    ctl.interfaces = interfaces;
    ctl.started_ms = started_ms;
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
    let start = tokio::time::Instant::now();
    let mut deadline = start + STARTUP_GRACE.max(longest).min(MAX_STARTUP_GRACE);
    let wanted = targets(&ctl.cfg);
    let mut stop = false;
    loop {
        let macs = wanted
            .iter()
            .all(|a| ctl.hops.get(a).is_some_and(|x| x.is_some()));
        if macs && ctl.checks.len() >= n_checks {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            Some(changes) = res_rx.recv() => {
                apply_l2(&mut ctl.hops, untagged(&ctl.cfg, &ours), changes);
                if ctl.probes.is_some() {
                    // The ways known so far, and the checks through them.
                    ctl.program_probes()?;
                    let now = checks_with_ways(&ctl.cfg, source, ctl.probes.as_ref(), &ctl.hops);
                    if now.len() > running.len() {
                        running = now;
                        monitor
                            .set_checks(running.clone())
                            .await
                            .context("starting health checks through the VIP")?;
                        // Time for the new ones to report, within the bound.
                        deadline = deadline
                            .max(tokio::time::Instant::now() + longest)
                            .min(start + MAX_STARTUP_GRACE);
                    }
                }
            }
            Some(ev) = health_rx.recv() => health_event(&mut ctl.checks, ev),
            _ = term.recv() => { stop = true; break }
            _ = int.recv() => { stop = true; break }
        }
    }
    // Every check from here on, the ways of all known or not (a real added
    // later starts as any new real does: its first result decides).
    let all = all_checks(&ctl.cfg, source, ctl.probes.as_ref());
    if all.len() > running.len() {
        monitor
            .set_checks(all)
            .await
            .context("starting health checks through the VIP")?;
    }
    if !stop {
        ctl.apply()?;
        ctl.ready_ms = Some(super::unix_ms(std::time::SystemTime::now()));
        ctl.publish();
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
                if ctl.held(&ours) {
                    if let Some(h) = ctl.hold.as_mut() {
                        h.keep(Input::L2(changes));
                    }
                    continue;
                }
                apply_l2(&mut ctl.hops, untagged(&ctl.cfg, &ours), changes);
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
                if ctl.held(&ours) {
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
                    apply_l2(&mut ctl.hops, untagged(&ctl.cfg, &ours), l2);
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
                    // By verdict, so that a new reason cannot be left out.
                    let n = |v: &str| {
                        vc5_xdp::maps::Reason::ALL
                            .iter()
                            .filter(|r| r.verdict() == v)
                            .filter_map(|r| g.get(r))
                            .map(|c| c.packets)
                            .sum::<u64>()
                    };
                    info!(
                        tx = n("tx") + n("redirect"),
                        passed = n("pass"),
                        dropped = n("drop"),
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
    if let Some(p) = ctl.probes.take() {
        p.stop(&mut ctl.dp);
    }
    let _ = to_resolver.send(ToResolver::Stop);
    let _ = resolver.join();
    Ok(())
}

/// Logs a failed systemd notification; never fatal.
pub(super) fn notify(r: Result<bool, crate::sdnotify::NotifyError>) {
    if let Err(e) = r {
        warn!("systemd notification: {e}");
    }
}

/// Commands to the resolver thread.
pub(super) enum ToResolver {
    Targets(BTreeSet<IpAddr>),
    Stop,
}

pub(super) fn spawn_resolver(
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

/// The interfaces vc5d is attached to, to warn of a real whose route leaves
/// through another; None with `vlans`, where it is the VLAN's interface by
/// design (frames leave tagged through the trunk).
fn untagged<'a>(cfg: &Config, ours: &'a [u32]) -> Option<&'a [u32]> {
    cfg.vlans.is_empty().then_some(ours)
}

/// Applies resolver reports to the known next hops; logs each.
pub(super) fn apply_l2(
    hops: &mut HashMap<IpAddr, Option<NextHop>>,
    ours: Option<&[u32]>,
    changes: Vec<Resolution>,
) {
    for c in changes {
        let _span = info_span!("real", addr = %c.addr).entered();
        let new = match &c.state {
            Resolved::Ready {
                ifindex,
                if_mac,
                mac,
                via,
                src,
                mtu,
            } => Some(NextHop {
                l2: L2 {
                    mac: *mac,
                    src_mac: *if_mac,
                    ifindex: *ifindex,
                    src: *src,
                    // The data plane compares u16 lengths; an MTU beyond
                    // them never limits.
                    mtu: u16::try_from(*mtu).unwrap_or(u16::MAX),
                    // The derivation sets it from `vlans`.
                    vlan: None,
                },
                via: *via,
            }),
            Resolved::Unresolved { .. } => None,
        };
        let old = hops.insert(c.addr, new);
        match (&c.state, old.flatten()) {
            (Resolved::Ready { mac, ifindex, .. }, prev) => {
                if ours.is_some_and(|ours| !ours.contains(ifindex)) {
                    // Frames are redirected there; that interface's driver
                    // must accept XDP redirects (native: ndo_xdp_xmit).
                    warn!(
                        ifindex,
                        "real is reached through an interface vc5d is not attached to"
                    );
                }
                if prev.is_some_and(|p| p.l2.mac != *mac) {
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
