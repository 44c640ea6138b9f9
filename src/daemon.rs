//! The vc5d daemon: command line, start-up and the control loop.
//!
//! One task owns the data plane. It is fed by channels: the neighbour
//! resolver (a thread, since netlink sockets are blocking) reports each
//! real's MAC as it is learnt or lost, and signals ask for a reload or a
//! stop. Every change rebuilds the desired state from the configuration
//! and hands it whole to [`DataPlane::program`], which writes only what
//! differs.
//!
//! Stopping leaves the program attached and the maps pinned on purpose: a
//! restarted vc5d takes them over without breaking a connection. `rm -r`
//! of the `--bpffs` directory detaches everything.

use crate::config::{self, Config, Protocol};
use anyhow::{Context, Result, bail};
use clap::Parser;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{error, info, info_span, warn};
use vc5_xdp::netlink::{self, Resolution, Resolved, Resolver};
use vc5_xdp::{DataPlane, L2, MapSizes, RealMode, RealSpec, ServiceSpec, XdpMode};

/// How long start-up waits for the reals' MACs before the first
/// programming. A restarted vc5d keeps the old tables running meanwhile.
const RESOLVE_GRACE: Duration = Duration::from_secs(3);

/// How often the TCP flow tables are swept for buckets whose "moved"
/// marks can be cleared (see `DataPlane::sweep_begin`), when any are set.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

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
    pub console: String,
    /// bpffs directory where programs, links and maps are pinned.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/vc5")]
    pub bpffs: PathBuf,
    /// Validate the configuration, print it normalised as JSON and exit.
    #[arg(long)]
    pub check: bool,
}

/// Runs vc5d to completion.
pub fn run(args: Args) -> Result<()> {
    let cfg = config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.check {
        println!("{}", cfg.to_json());
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(args, cfg))
}

/// The reals' desired state, from the configuration and what the
/// resolver knows.
fn specs(cfg: &Config, l2: &HashMap<IpAddr, Option<L2>>) -> Vec<ServiceSpec> {
    let mut out = Vec::new();
    for s in &cfg.services {
        for (vip, port, proto) in s.endpoints() {
            let reals = s
                .reals
                .iter()
                .map(|r| RealSpec {
                    addr: r.addr,
                    weight: r.weight as u32,
                    // Disabled in the configuration: no new flows, and the
                    // established ones finish (as with an IPVS weight of 0).
                    mode: if r.disabled {
                        RealMode::Drain
                    } else {
                        RealMode::Serve
                    },
                    l2: l2.get(&r.addr).copied().flatten(),
                })
                .collect();
            out.push(ServiceSpec {
                vip,
                port,
                proto: match proto {
                    Protocol::Tcp => vc5_xdp::dataplane::TCP,
                    Protocol::Udp => vc5_xdp::dataplane::UDP,
                },
                reals,
            });
        }
    }
    out
}

fn targets(cfg: &Config) -> BTreeSet<IpAddr> {
    cfg.services
        .iter()
        .flat_map(|s| s.reals.iter().map(|r| r.addr))
        .collect()
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

fn fmt_mac(m: &[u8; 6]) -> String {
    netlink::format_mac(m)
}

/// Applies resolver reports to the known layer-2 next hops; logs each.
fn apply(l2: &mut HashMap<IpAddr, Option<L2>>, ours: &[u32], changes: Vec<Resolution>) {
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
                    warn!(mac = %fmt_mac(mac), ifindex, "real's MAC changed");
                } else {
                    info!(mac = %fmt_mac(mac), ifindex, "real resolved");
                }
            }
            (Resolved::Unresolved { reason }, Some(_)) => {
                warn!(%reason, "real lost its MAC: out of service")
            }
            (Resolved::Unresolved { reason }, None) => info!(%reason, "real not resolved yet"),
        }
    }
}

fn program(dp: &mut DataPlane, cfg: &Config, l2: &HashMap<IpAddr, Option<L2>>) -> Result<()> {
    let specs = specs(cfg, l2);
    let t = Instant::now();
    dp.program(&specs).context("programming the data plane")?;
    let usable = specs
        .iter()
        .flat_map(|s| &s.reals)
        .filter(|r| r.l2.is_some())
        .count();
    let reals: usize = specs.iter().map(|s| s.reals.len()).sum();
    info!(
        services = specs.len(),
        reals,
        usable,
        took_ms = t.elapsed().as_millis() as u64,
        "data plane programmed"
    );
    Ok(())
}

async fn serve(args: Args, mut cfg: Config) -> Result<()> {
    // Signals first: a stop asked for during start-up is a clean stop.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    // Check everything that can be checked before touching the kernel, so
    // a bad start leaves nothing half-programmed.
    for ifname in &args.interfaces {
        netlink::interface_by_name(ifname).with_context(|| format!("interface {ifname}"))?;
    }
    if args.interfaces.is_empty() {
        bail!("no --interface given");
    }

    let mut dp = DataPlane::open(&args.bpffs, MapSizes::default())
        .with_context(|| format!("opening the data plane in {}", args.bpffs.display()))?;
    let mut attached_now = Vec::new();
    for ifname in &args.interfaces {
        match dp.attach(ifname, args.xdp_mode) {
            Ok(a) => {
                info!(interface = %a.ifname, mode = %a.mode, reused = a.reused, "XDP attached");
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

    // Give the reals' MACs a moment, so the first programming does not
    // take every real out of service just because nothing is known yet.
    let mut l2: HashMap<IpAddr, Option<L2>> = HashMap::new();
    let wanted = targets(&cfg);
    let deadline = tokio::time::Instant::now() + RESOLVE_GRACE;
    let mut stop = false;
    while !wanted
        .iter()
        .all(|a| l2.get(a).is_some_and(|x| x.is_some()))
    {
        tokio::select! {
            r = tokio::time::timeout_at(deadline, res_rx.recv()) => match r {
                Ok(Some(changes)) => apply(&mut l2, &ours, changes),
                _ => break,
            },
            _ = term.recv() => { stop = true; break }
            _ = int.recv() => { stop = true; break }
        }
    }
    if !stop {
        program(&mut dp, &cfg, &l2)?;
        info!(
            config = %args.config.display(),
            interfaces = ?args.interfaces,
            bpffs = %args.bpffs.display(),
            "vc5d ready"
        );
    }

    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut sweep_tick = tokio::time::interval(SWEEP_INTERVAL);
    let (sweep_tx, mut sweep_rx) = mpsc::unbounded_channel();
    let mut sweeping = false;
    while !stop {
        tokio::select! {
            _ = sweep_tick.tick(), if !sweeping && dp.moved_buckets() > 0 => {
                match dp.sweep_begin() {
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
                let flows = done.flows;
                match dp.sweep_end(done) {
                    Ok(cleared) => info!(flows, cleared, still_marked = dp.moved_buckets(), "flow-table sweep"),
                    Err(e) => warn!("flow-table sweep: {e}"),
                }
            }
            Some(changes) = res_rx.recv() => {
                apply(&mut l2, &ours, changes);
                if let Err(e) = program(&mut dp, &cfg, &l2) {
                    error!("{e:#}");
                }
            }
            _ = hup.recv() => {
                match config::load(&args.config) {
                    Ok(new) => {
                        let old = std::mem::replace(&mut cfg, new);
                        match program(&mut dp, &cfg, &l2) {
                            Ok(()) => {
                                info!("configuration reloaded");
                                let _ = to_resolver.send(ToResolver::Targets(targets(&cfg)));
                            }
                            Err(e) => {
                                error!("{e:#}; keeping the running configuration");
                                cfg = old;
                                program(&mut dp, &cfg, &l2)?;
                            }
                        }
                    }
                    Err(e) => error!("reload refused, the running configuration stays: {e}"),
                }
            }
            _ = term.recv() => stop = true,
            _ = int.recv() => stop = true,
            _ = tick.tick() => {
                if let Ok(s) = dp.stats() {
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
    info!(
        bpffs = %args.bpffs.display(),
        "stopping; the data plane stays attached for the next vc5d (remove the bpffs directory to detach)"
    );
    let _ = to_resolver.send(ToResolver::Stop);
    let _ = resolver.join();
    Ok(())
}
