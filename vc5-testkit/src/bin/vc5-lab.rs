//! `vc5-lab`: builds the lab (see `vc5_testkit::lab`), runs vc5d and vc5-flowsync on `lb1` and
//! `lb2` behind a BIRD router (ECMP), sends HTTP requests from the client to both VIPs and
//! shows which real server answered each, which client address the reals saw and what flow
//! sync exchanged, until Ctrl-C (or at once with `--once`). Each load balancer's console is
//! forwarded to the host (`lb1 console: http://127.0.0.1:8081/`). `--failover` demonstrates
//! a failover instead: a long download through one load balancer, a real added, that load
//! balancer taken out of the router's ECMP group, and the download finishing through the
//! other. Everything it created is removed when it exits, also on SIGINT/SIGTERM.
//!
//! ```text
//! cargo build --release --workspace          # vc5d, vc5-flowsync and vc5-lab side by side
//! target/release/vc5-lab                      # native XDP, runs until Ctrl-C
//! target/release/vc5-lab --xdp-mode generic --once
//! target/release/vc5-lab --failover           # the failover demonstration
//! target/release/vc5-lab --direct real1       # no vc5d: VIPs routed to real1
//! target/release/vc5-lab -- --console 0.0.0.0:8080   # extra vc5d flags
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use vc5_testkit::lab::{Forward, HTTP_PORT, Lab, LabChild, LabOptions, http_get};

/// Set by SIGINT/SIGTERM; every wait polls it so that the lab is torn down by `Drop`.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum XdpMode {
    Native,
    Generic,
    Auto,
}

impl XdpMode {
    fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
            XdpMode::Auto => "auto",
        }
    }
}

/// Build the vc5 lab in network namespaces, load-balance HTTP through vc5d and show
/// which real server answered (needs root).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// XDP mode for vc5d on lb1.
    #[arg(long, value_enum, default_value_t = XdpMode::Native)]
    xdp_mode: XdpMode,
    /// Send one round of requests, print the table and exit.
    #[arg(long)]
    once: bool,
    /// Requests per VIP in each round.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Seconds between rounds.
    #[arg(long, default_value_t = 5)]
    interval: u64,
    /// Seconds to wait for vc5d to start answering on both VIPs.
    #[arg(long, default_value_t = 30)]
    ready_timeout: u64,
    /// The vc5d binary (default: $VC5D, else the vc5d beside this program).
    #[arg(long)]
    vc5d: Option<PathBuf>,
    /// The vc5-flowsync binary (default: $VC5_FLOWSYNC, else the vc5-flowsync beside
    /// vc5d). Without one the lab runs without flow sync.
    #[arg(long)]
    vc5_flowsync: Option<PathBuf>,
    /// Run no vc5-flowsync and configure no flow sync.
    #[arg(long)]
    no_flow_sync: bool,
    /// Real servers in the configuration (1-8); `--failover` adds one more.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=8))]
    reals: u8,
    /// Host port of lb1's console on 127.0.0.1 (lb2's is the next one); a port in use
    /// is replaced by a free one.
    #[arg(long, default_value_t = 8081)]
    console_port: u16,
    /// Demonstrate a failover: a rate-limited download through lb1, a real added to
    /// both load balancers (configuration rewritten, SIGHUP), lb1 taken out of the
    /// router's ECMP group, the download finishing through lb2; then exit.
    #[arg(long, conflicts_with_all = ["direct", "once"])]
    failover: bool,
    /// Size of the `--failover` download in bytes.
    #[arg(long, default_value_t = 4_000_000)]
    failover_bytes: usize,
    /// Rate of the `--failover` download, bytes per second (the real paces it).
    #[arg(long, default_value_t = 200_000)]
    failover_rate: u64,
    /// Run no vc5d: route the VIPs straight to these reals (e.g. `real1`, or
    /// `real1,real2,real3` for the router's own ECMP), to see the lab itself work.
    #[arg(long, value_name = "REAL,...", value_delimiter = ',')]
    direct: Vec<String>,
    /// Leave the lab directory (logs, configuration) behind.
    #[arg(long)]
    keep_dir: bool,
    /// Remove labs left behind by killed processes, then exit.
    #[arg(long)]
    cleanup: bool,
    /// Extra vc5d arguments, after `--`.
    #[arg(last = true)]
    vc5d_args: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) if STOP.load(Ordering::SeqCst) => {
            eprintln!("interrupted; the lab has been removed");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("vc5-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if args.cleanup {
        Lab::cleanup_stale();
        return Ok(());
    }
    let configured = usize::from(args.reals);
    let lab = Lab::new(LabOptions {
        vc5d: args.vc5d.clone(),
        vc5_flowsync: args.vc5_flowsync.clone(),
        keep_dir: args.keep_dir,
        load_balancers: if args.direct.is_empty() { 2 } else { 1 },
        reals: configured + usize::from(args.failover),
        ..LabOptions::default()
    })?;
    describe(&lab);
    if args.failover {
        let extra = lab.reals().last().cloned().unwrap_or_default();
        println!(
            "  ({extra} is not in the configuration until the failover demonstration adds it)"
        );
    }

    // Declared after `lab`, so dropped (and stopped) before the lab is torn down.
    let mut birds: Vec<LabChild> = Vec::new();
    let mut vc5ds: Vec<(String, LabChild)> = Vec::new();
    let mut flowsyncs: Vec<(String, LabChild)> = Vec::new();
    let mut consoles: Vec<Forward> = Vec::new();
    let reals = lab.reals()[..configured].to_vec();
    if !args.direct.is_empty() {
        let reals: Vec<&str> = args.direct.iter().map(String::as_str).collect();
        lab.route_vips_ecmp(&reals)?;
        println!(
            "no vc5d: the router sends the VIPs straight to {}",
            reals.join(", ")
        );
    } else {
        if !matches!(args.xdp_mode, XdpMode::Generic) {
            lab.prepare_native_xdp()?;
        }
        let flowsync = if args.no_flow_sync {
            println!("flow sync: off (--no-flow-sync)");
            None
        } else {
            match lab.flowsync_path() {
                Ok(p) => Some(p),
                Err(e) => {
                    println!("flow sync: off ({e:#})");
                    None
                }
            }
        };
        // The router learns the VIPs by BGP and spreads them over both load
        // balancers (ECMP). lb1 announces through a BIRD of its own, which
        // vc5d drives over BIRD's control socket; lb2 has no BIRD, so vc5d's
        // built-in BGP speaker peers with the router itself.
        birds.push(lab.start_router_bird()?);
        birds.push(lab.start_lb_bird("lb1")?);
        println!(
            "BIRD on the router (bird-examples/router.conf, ECMP) and on lb1 (bird-examples/lb.conf)"
        );
        let extra: Vec<&str> = args.vc5d_args.iter().map(String::as_str).collect();
        for lb in lab.load_balancers() {
            let config = write_lb_config(&lab, &lb, &reals, flowsync.is_some())?;
            let child = lab.start_vc5d(&lb, args.xdp_mode.as_str(), &extra)?;
            println!(
                "vc5d on {lb} (XDP {}, announcing {}), configuration {}, log {}",
                args.xdp_mode.as_str(),
                if lb == "lb1" {
                    "through its BIRD"
                } else {
                    "with its own BGP speaker"
                },
                config.display(),
                lab.vc5d_log(&lb).display()
            );
            vc5ds.push((lb.clone(), child));
            if let Some(bin) = &flowsync {
                let child = lab.start_flowsync(&lb)?;
                println!(
                    "vc5-flowsync on {lb} ({}, group {}, key {}), log {}",
                    bin.display(),
                    vc5_testkit::lab::FLOW_SYNC_GROUP,
                    lab.flow_sync_key()?.display(),
                    lab.flowsync_log(&lb).display()
                );
                flowsyncs.push((lb, child));
            }
        }
        for (lb, child) in vc5ds.iter_mut() {
            wait_ready(&lab, lb, child, Duration::from_secs(args.ready_timeout))?;
        }
        // Traffic only once the router spreads the VIPs over both.
        let start = Instant::now();
        while !ecmp_over(&lab, &["lb1", "lb2"]) {
            if STOP.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            if start.elapsed() > Duration::from_secs(args.ready_timeout) {
                bail!("the router did not learn the VIPs from both load balancers");
            }
            sleep(Duration::from_millis(200));
        }
        println!(
            "the router routes both VIPs over lb1 and lb2 (ECMP) after {:.1} s",
            start.elapsed().as_secs_f64()
        );
        show_routes(&lab);
        for (i, lb) in lab.load_balancers().iter().enumerate() {
            let port = args.console_port.saturating_add(i as u16);
            let f = lab.forward_console(lb, port)?;
            println!(
                "{lb} console: {} (vc5d's 127.0.0.1:8080 in {lb}'s namespace)",
                f.url()
            );
            consoles.push(f);
        }
    }

    if args.failover {
        let synced = !flowsyncs.is_empty();
        let r = failover(&lab, args, &mut vc5ds, synced);
        stop_all(&mut vc5ds, &mut flowsyncs)?;
        return r;
    }

    let mut tally = Tally::default();
    for round in 1.. {
        if STOP.load(Ordering::SeqCst) {
            break;
        }
        for vip in lab.vips() {
            let answers = requests(&lab, vip, args.requests)?;
            tally.add(vip, answers);
        }
        tally.print(&lab, round, args.requests);
        for (lb, child) in vc5ds.iter_mut() {
            check_alive(&lab, lb, child)?;
        }
        for (lb, child) in flowsyncs.iter_mut() {
            check_flowsync(&lab, lb, child)?;
        }
        if !vc5ds.is_empty() {
            // vc5d reads its counters every 2 s; let it catch up with this round.
            sleep(Duration::from_millis(2500));
            for (lb, _) in &vc5ds {
                show_vc5d(&lab, lb);
            }
            show_routes(&lab);
            for c in &consoles {
                println!("console: {}", c.url());
            }
        }
        if args.once {
            break;
        }
        println!("(Ctrl-C to stop and remove the lab)");
        sleep(Duration::from_secs(args.interval));
    }

    stop_all(&mut vc5ds, &mut flowsyncs)?;
    drop(consoles);
    drop(birds);
    println!("removing lab {}", lab.id);
    Ok(())
}

/// A load balancer's configuration: the HTTP services over `reals` with route health
/// injection to the router, and flow sync when `flow_sync`.
fn write_lb_config(lab: &Lab, lb: &str, reals: &[String], flow_sync: bool) -> Result<PathBuf> {
    let mut yaml = format!("{}{}", lab.config_for_reals(reals), lab.rhi_section(lb));
    if flow_sync {
        yaml = lab.with_flow_sync(&yaml)?;
    }
    lab.write_config_for(lb, &yaml)
}

/// Stops vc5-flowsync, then vc5d (a clean stop, VIPs withdrawn first, so that the logs
/// show how they shut down).
fn stop_all(
    vc5ds: &mut Vec<(String, LabChild)>,
    flowsyncs: &mut Vec<(String, LabChild)>,
) -> Result<()> {
    for (lb, mut child) in flowsyncs.drain(..) {
        let status = child.terminate(Duration::from_secs(5))?;
        println!("vc5-flowsync on {lb} stopped: {status}");
    }
    for (lb, mut child) in vc5ds.drain(..) {
        let status = child.terminate(Duration::from_secs(10))?;
        println!("vc5d on {lb} stopped: {status}");
    }
    Ok(())
}

/// Whether the router's kernel routes for both VIPs go over exactly `lbs`.
fn ecmp_over(lab: &Lab, lbs: &[&str]) -> bool {
    [
        (format!("{}/32", lab.vip4), "-4"),
        (format!("{}/128", lab.vip6), "-6"),
    ]
    .iter()
    .all(|(net, family)| {
        let Ok(out) = lab.run("router", &["ip", family, "route", "show", net]) else {
            return false;
        };
        lab.load_balancers().iter().all(|lb| {
            let hop = |a: String| out.contains(&format!("via {a} "));
            let there = hop(lab.addr4(lb).to_string()) || hop(lab.addr6(lb).to_string());
            there == lbs.contains(&lb.as_str())
        })
    })
}

/// The `--failover` demonstration; prints what happens and fails if the download broke.
fn failover(lab: &Lab, args: &Args, vc5ds: &mut [(String, LabChild)], synced: bool) -> Result<()> {
    let all = lab.reals();
    let (old, new) = (&all[..all.len() - 1], &all[..]);
    let added = all.last().expect("a lab has reals").clone();
    let vip = SocketAddr::new(lab.vip4.into(), HTTP_PORT);
    let client = IpAddr::from(lab.addr4("client"));
    // A client port whose flow the router sends to lb1 and whose bucket moves to the added
    // real: only flow state (lb1's own table, then lb2's copy of it) keeps it where it is.
    let port = (20000..40000)
        .find(|&p| {
            let c = SocketAddr::new(client, p);
            lab.predicted_real(old, c, vip, 6) != lab.predicted_real(new, c, vip, 6)
                && lab.router_next_hop(c, vip, "tcp").is_ok_and(|h| h == "lb1")
        })
        .context("no client port goes through lb1 and moves")?;
    let c = SocketAddr::new(client, port);
    let (before, after) = (
        lab.predicted_real(old, c, vip, 6),
        lab.predicted_real(new, c, vip, 6),
    );
    println!();
    println!(
        "failover: {} bytes at {} bytes/s from {c} to {vip}: the router sends it to lb1; \
         vc5's table gives it {before} with {} reals and {after} with {added} added",
        args.failover_bytes,
        args.failover_rate,
        old.len(),
    );
    println!(
        "flow sync: {}",
        if synced {
            "on: lb1's vc5-flowsync sends the flow to lb2's"
        } else {
            "off: lb2 will know nothing of the flow, so the download should break"
        }
    );
    let reference = lab.reference_sha256(&old[0], args.failover_bytes)?;
    let t0 = Instant::now();
    let mut download = lab.start_transfer(
        vip.ip(),
        args.failover_bytes,
        args.failover_rate,
        Some(port),
    )?;
    let real = download.real(Duration::from_secs(10))?;
    println!("{:>5.1} s  the download started on {real}", secs(t0));
    sleep(Duration::from_secs(3));
    show_flow_sync(lab);

    for lb in lab.load_balancers() {
        write_lb_config(lab, &lb, new, synced)?;
    }
    for (_, child) in vc5ds.iter_mut() {
        child.signal(libc::SIGHUP)?;
    }
    println!(
        "{:>5.1} s  {added} added to both configurations, vc5d reloaded (SIGHUP) on both",
        secs(t0)
    );
    let addr = lab.addr4(&added).to_string();
    let wait = Instant::now();
    while !lab
        .load_balancers()
        .iter()
        .all(|lb| real_state(lab, lb, "web4", &addr).as_deref() == Some("serving"))
    {
        if STOP.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if wait.elapsed() > Duration::from_secs(30) {
            bail!("{added} is not serving on both load balancers after 30 s");
        }
        sleep(Duration::from_millis(200));
    }
    println!(
        "{:>5.1} s  {added} serving on both: new flows in the moved buckets go to it, \
         {} received so far",
        secs(t0),
        download.received()
    );

    lab.birdc("router", "disable lb1")?;
    let wait = Instant::now();
    while !ecmp_over(lab, &["lb2"]) {
        if wait.elapsed() > Duration::from_secs(10) {
            bail!("the router still routes the VIPs to lb1");
        }
        sleep(Duration::from_millis(50));
    }
    println!(
        "{:>5.1} s  lb1 out of the router's ECMP group (birdc disable lb1 on the router): \
         the VIPs go to lb2 only",
        secs(t0)
    );
    show_routes(lab);
    while download.running() {
        if STOP.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        println!(
            "{:>5.1} s  {} bytes received",
            secs(t0),
            download.received()
        );
        sleep(Duration::from_secs(2));
    }
    let end = download.finish(Duration::from_secs(5))?;
    show_flow_sync(lab);
    show_vc5d(lab, "lb2");
    lab.birdc("router", "enable lb1")?;
    let intact = end.ok && end.received == args.failover_bytes as u64 && end.sha256 == reference;
    println!();
    if intact {
        println!(
            "{:>5.1} s  the download finished through lb2, intact: {} bytes, SHA-256 {} \
             (as the reals serve it), still from {real}",
            secs(t0),
            end.received,
            end.sha256
        );
        Ok(())
    } else {
        println!(
            "{:>5.1} s  the download broke: {} of {} bytes, SHA-256 {} (the reals serve {}); \
             curl: {}",
            secs(t0),
            end.received,
            args.failover_bytes,
            end.sha256,
            reference,
            end.curl_said.replace('\n', " | ")
        );
        if synced {
            bail!("the download did not survive the failover");
        }
        println!(
            "as expected without flow sync: lb2 sent the flow to {after}, which knows no such \
             connection and reset it"
        );
        Ok(())
    }
}

fn secs(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

/// A load balancer's `/status.json` (its console, inside its namespace).
fn status_of(lab: &Lab, lb: &str) -> Result<serde_json::Value> {
    let console = SocketAddr::from(([127, 0, 0, 1], 8080));
    let body = lab.run_in(lb, || {
        http_get(console, "/status.json", Duration::from_secs(2))
    })??;
    Ok(serde_json::from_str(&body)?)
}

/// A real's state in a service, as a load balancer's vc5d reports it.
fn real_state(lab: &Lab, lb: &str, service: &str, addr: &str) -> Option<String> {
    let status = status_of(lab, lb).ok()?;
    let svc = status["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == service)?
        .clone();
    let real = svc["reals"]
        .as_array()?
        .iter()
        .find(|r| r["addr"] == addr)?;
    real["state"].as_str().map(str::to_string)
}

/// What each load balancer's vc5-flowsync reports (vc5d's status, `flow_sync`).
fn show_flow_sync(lab: &Lab) {
    for lb in lab.load_balancers() {
        let st = match status_of(lab, &lb) {
            Ok(v) => v,
            Err(e) => {
                println!("  flow sync on {lb}: (vc5d's status is not available: {e:#})");
                continue;
            }
        };
        let fs = &st["flow_sync"];
        if fs["configured"] != true {
            println!("  flow sync on {lb}: not configured");
            continue;
        }
        let l = &fs["local"];
        println!(
            "  flow sync on {lb}: vc5-flowsync {} ({}), sent {} datagrams / {} flow records, \
             {} events lost{}",
            l["state"].as_str().unwrap_or("?"),
            if l["running"] == true {
                "running"
            } else {
                "not running"
            },
            l["sent_datagrams"],
            l["sent_records"],
            l["lost_events"],
            if fs["holding_announcements"] == true {
                ", vc5d holding its announcements"
            } else {
                ""
            }
        );
        for p in fs["peers"].as_array().into_iter().flatten() {
            let rejects: u64 = (p["rejects"].as_object().into_iter().flatten())
                .filter_map(|(_, v)| v.as_u64())
                .sum();
            println!(
                "    from {:<15} {} datagrams, {} records, {} written, {} gaps, {} unknown \
                 real, {} rate-limited, {} rejected; delay p50 {:.2} ms p99 {:.2} ms; heard \
                 {:.1} s ago",
                p["addr"].as_str().unwrap_or("?"),
                p["datagrams"],
                p["records"],
                p["written"],
                p["gaps"],
                p["unknown_real"],
                p["rate_limited"],
                rejects,
                p["delay_p50_us"].as_f64().unwrap_or(0.0) / 1e3,
                p["delay_p99_us"].as_f64().unwrap_or(0.0) / 1e3,
                p["last_heard_ago_ms"].as_f64().unwrap_or(0.0) / 1e3,
            );
        }
    }
}

/// What a vc5d itself reports (its console's /status.json, inside its
/// namespace): per service and real, state and the packets its XDP program
/// forwarded; whether each VIP is announced.
fn show_vc5d(lab: &Lab, lb: &str) {
    let status = match status_of(lab, lb) {
        Ok(v) => v,
        Err(e) => {
            println!("  (vc5d's status is not available: {e:#})");
            return;
        }
    };
    println!(
        "vc5d on {lb} (its /status.json): what its XDP program forwarded; route health injection: {}",
        status["rhi"]["mode"].as_str().unwrap_or("?")
    );
    for s in status["services"].as_array().into_iter().flatten() {
        println!(
            "  {:<6} {:>18} port {:<5} {:<4}  {} packets, {} new flows",
            s["name"].as_str().unwrap_or("?"),
            s["vip"].as_str().unwrap_or("?"),
            s["port"],
            s["state"].as_str().unwrap_or("?"),
            s["counters"]["packets"],
            s["counters"]["new_flows"],
        );
        for r in s["reals"].as_array().into_iter().flatten() {
            println!(
                "         real {:<15} {:<9} {:>8} packets {:>6} new flows",
                r["addr"].as_str().unwrap_or("?"),
                r["state"].as_str().unwrap_or("?"),
                r["counters"]["packets"],
                r["counters"]["new_flows"],
            );
        }
    }
    for v in status["vips"].as_array().into_iter().flatten() {
        println!(
            "  VIP {:<18} announceable: {}, announced: {}",
            v["vip"].as_str().unwrap_or("?"),
            v["announceable"],
            v["announced"]
        );
    }
    if lb == "lb1" {
        show_flow_sync(lab);
    }
}

/// The router's view: `birdc show route` for each VIP, and the kernel's
/// ECMP route it installed.
fn show_routes(lab: &Lab) {
    for (net, ip) in [
        (format!("{}/32", lab.vip4), "-4"),
        (format!("{}/128", lab.vip6), "-6"),
    ] {
        println!("router: birdc show route for {net}");
        match lab.birdc("router", &format!("show route for {net}")) {
            Ok(out) => {
                for l in out.lines().filter(|l| !l.starts_with("BIRD ")) {
                    println!("  {l}");
                }
            }
            Err(_) => println!("  (no route: not announced)"),
        }
        if let Ok(k) = lab.run("router", &["ip", ip, "route", "show", &net]) {
            println!("router: ip {ip} route show {net}");
            for l in k.lines() {
                println!("  {l}");
            }
        }
    }
}

fn describe(lab: &Lab) {
    println!(
        "lab {} (namespaces {}-*, files in {})",
        lab.id,
        lab.id,
        lab.dir().display()
    );
    println!(
        "  client {} {}  ->  router, LAN side {} {}",
        lab.addr4("client"),
        lab.addr6("client"),
        lab.addr4("router"),
        lab.addr6("router")
    );
    for n in lab.load_balancers().iter().chain(&lab.reals()) {
        println!("  {n:<6} {} {}", lab.addr4(n), lab.addr6(n));
    }
    println!("  VIPs {} and {} port {HTTP_PORT}", lab.vip4, lab.vip6);
}

/// Sleeps, waking early on a signal.
fn sleep(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check_alive(lab: &Lab, lb: &str, child: &mut LabChild) -> Result<()> {
    if let Some(status) = child.try_wait()? {
        bail!(
            "vc5d on {lb} exited ({status}); its log {}:\n{}",
            lab.vc5d_log(lb).display(),
            tail(&child.log_text(), 30)
        );
    }
    Ok(())
}

fn check_flowsync(lab: &Lab, lb: &str, child: &mut LabChild) -> Result<()> {
    if let Some(status) = child.try_wait()? {
        bail!(
            "vc5-flowsync on {lb} exited ({status}); its log {}:\n{}",
            lab.flowsync_log(lb).display(),
            tail(&child.log_text(), 30)
        );
    }
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Until both VIPs answer from the client: vc5d has attached, checked the reals and
/// programmed the data plane.
fn wait_ready(lab: &Lab, lb: &str, child: &mut LabChild, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        if STOP.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        check_alive(lab, lb, child)?;
        // Ready once start-up is over, as its status says (READY=1 to systemd).
        let ready = lab
            .curl(lb, "http://127.0.0.1:8080/status.json", &[])
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .is_some_and(|s| s["ready_ms"].is_u64());
        if !ready {
            sleep(Duration::from_millis(100));
            continue;
        }
        let mut ok = 0;
        for vip in lab.vips() {
            let addr = SocketAddr::new(vip, HTTP_PORT);
            let got = lab.run_in("client", || http_get(addr, "/", Duration::from_millis(500)))?;
            ok += usize::from(got.is_ok());
        }
        if ok == 2 {
            println!(
                "both VIPs answer after {:.1} s",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the VIPs do not answer {} s after vc5d started; its log {}:\n{}",
                timeout.as_secs(),
                lab.vc5d_log(lb).display(),
                tail(&child.log_text(), 30)
            );
        }
        sleep(Duration::from_millis(250));
    }
}

/// One answer: which real, and the client address it saw; or a failure.
type Answer = Result<(String, String), String>;

/// `count` GETs of `/` on new connections from the client namespace (in-process, so
/// hundreds take well under a second); stops early on a signal.
fn requests(lab: &Lab, vip: IpAddr, count: usize) -> Result<Vec<Answer>> {
    let addr = SocketAddr::new(vip, HTTP_PORT);
    lab.run_in("client", || {
        let mut answers = Vec::with_capacity(count);
        for _ in 0..count {
            if STOP.load(Ordering::SeqCst) {
                break;
            }
            answers.push(match http_get(addr, "/", Duration::from_secs(2)) {
                Ok(body) => parse(&body).ok_or(format!("unexpected answer {body:?}")),
                Err(e) => Err(format!("{e:#}")),
            });
        }
        answers
    })
    .context("sending requests from the client")
}

/// `real=… client=… vip=…` → (real, client).
fn parse(body: &str) -> Option<(String, String)> {
    let mut real = None;
    let mut client = None;
    for (k, v) in body.split_whitespace().filter_map(|kv| kv.split_once('=')) {
        match k {
            "real" => real = Some(v.to_string()),
            "client" => client = Some(v.to_string()),
            _ => {}
        }
    }
    Some((real?, client?))
}

#[derive(Default)]
struct Tally {
    /// Per VIP: answers per real, failures, client addresses seen, last error.
    vips: BTreeMap<IpAddr, VipTally>,
}

#[derive(Default)]
struct VipTally {
    by_real: BTreeMap<String, usize>,
    failed: usize,
    clients: BTreeSet<String>,
    last_error: Option<String>,
}

impl Tally {
    fn add(&mut self, vip: IpAddr, answers: Vec<Answer>) {
        let t = self.vips.entry(vip).or_default();
        for a in answers {
            match a {
                Ok((real, client)) => {
                    *t.by_real.entry(real).or_default() += 1;
                    t.clients.insert(client);
                }
                Err(e) => {
                    t.failed += 1;
                    t.last_error = Some(e);
                }
            }
        }
    }

    fn print(&self, lab: &Lab, round: usize, per_round: usize) {
        let reals = lab.reals();
        println!();
        println!("after {round} round(s) of {per_round} requests per VIP:");
        let mut header = format!("  {:<18}", "VIP");
        for r in &reals {
            header += &format!("{r:>8}");
        }
        println!("{header}{:>8}  client address seen by the reals", "failed");
        for vip in lab.vips() {
            let Some(t) = self.vips.get(&vip) else {
                continue;
            };
            let mut line = format!("  {:<18}", vip.to_string());
            for r in &reals {
                line += &format!("{:>8}", t.by_real.get(r).copied().unwrap_or(0));
            }
            let clients: Vec<&str> = t.clients.iter().map(String::as_str).collect();
            println!("{line}{:>8}  {}", t.failed, clients.join(", "));
        }
        for (vip, t) in &self.vips {
            let others: Vec<String> = (t.by_real.iter())
                .filter(|(r, _)| !reals.contains(r))
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            if !others.is_empty() {
                println!(
                    "  answers for {vip} from outside the reals: {}",
                    others.join(", ")
                );
            }
            if let Some(e) = &t.last_error {
                println!("  last failure for {vip}: {e}");
            }
        }
        let expected = [
            lab.addr4("client").to_string(),
            lab.addr6("client").to_string(),
        ];
        let foreign: BTreeSet<&String> = (self.vips.values())
            .flat_map(|t| &t.clients)
            .filter(|c| !expected.contains(c))
            .collect();
        if !foreign.is_empty() {
            println!("  the reals saw addresses other than the client's own: {foreign:?}");
        }
    }
}
