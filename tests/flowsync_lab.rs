//! Flow sync in the lab: connections survive the loss of the load balancer
//! carrying them, even after the reals changed, and do not without it.
//!
//! Two load balancers (vc5d's own BGP speaker each) behind the BIRD router
//! (ECMP), four reals of which the configuration first lists three. Long,
//! paced downloads (three IPv4, one IPv6) and a UDP flow (one datagram every
//! 100 ms from a fixed port, answered by the real) start from client ports
//! chosen with the data plane's own hash and table code
//! (`vc5_xdp::hash::flow_hash`, `vc5_xdp::table`, through
//! `Lab::predicted_real`) and the router's multipath choice (`ip route get`):
//! every one goes through lb1, and its bucket moves to real4 once real4 is
//! added. Then real4 is added (both configurations rewritten, SIGHUP), a
//! young download starts whose bucket moves when real4's weight is raised
//! (a second reload, half a second later), and one second after the young
//! download started lb1 leaves the router's ECMP group (`birdc disable lb1`
//! on the router). From then on lb2 carries every flow, and only what
//! vc5-flowsync told it keeps them on their reals: the local tables of lb2
//! would send them to real4, which resets them.
//!
//! With vc5-flowsync on both load balancers every download completes intact
//! (its SHA-256 is that of the reals' content, curl saw no reset) and the UDP
//! flow is answered by the same real throughout, in each of 5 runs
//! (`VC5_FLOWSYNC_LAB_RUNS` to change). The same scenario without
//! vc5-flowsync breaks every download that went through lb1 (lb1's flow
//! table says which: on some machines the router forwards a flow otherwise
//! than `ip route get` predicts) and moves the UDP flow to real4.
//!
//! Needs root, and `vc5-flowsync` built beside vc5d
//! (`cargo build -p vc5-xdp --bin vc5-flowsync`) or `$VC5_FLOWSYNC`.

mod common;

use common::wait_ready;
use serde_json::Value;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vc5_testkit::lab::{HTTP_PORT, Lab, LabChild, LabOptions, TransferEnd, UDP_PORT};
use vc5_xdp::flowsync::engine::FlowMap;
use vc5_xdp::flowsync::pinned::Pinned;

/// Each long download: 2 MB at 200 kB/s, ten seconds.
const BYTES: usize = 2_000_000;
const RATE: u64 = 200_000;
/// The young download: five seconds.
const YOUNG_BYTES: usize = 1_000_000;
/// How old the young download is when lb1 leaves.
const YOUNG_AGE: Duration = Duration::from_secs(1);
/// real4's weight after the second reload.
const HEAVY: u32 = 2;

fn runs() -> usize {
    std::env::var("VC5_FLOWSYNC_LAB_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

#[test]
fn flows_survive_the_failover_with_flow_sync_in_5_of_5_runs() {
    let runs = runs();
    for run in 1..=runs {
        let o = scenario(true);
        println!("run {run} of {runs} with flow sync:\n{}", o.summary());
        for d in &o.downloads {
            assert!(
                d.end.ok && d.end.received == d.bytes as u64 && d.end.sha256 == d.reference,
                "run {run}: {} broke with flow sync: {:?}\n{}",
                d.label,
                d.end,
                o.logs
            );
        }
        let answered: Vec<&String> = o.udp.iter().flatten().collect();
        assert!(
            answered.len() >= o.udp.len().saturating_sub(3) && answered.len() >= 50,
            "run {run}: the UDP flow lost too many answers: {} of {}\n{}",
            o.udp.len() - answered.len(),
            o.udp.len(),
            o.logs
        );
        assert!(
            answered.iter().all(|r| **r == o.udp_real),
            "run {run}: the UDP flow left {}: {:?}\n{}",
            o.udp_real,
            o.udp,
            o.logs
        );
    }
}

#[test]
fn without_flow_sync_the_failover_breaks_them() {
    let o = scenario(false);
    println!("without flow sync:\n{}", o.summary());
    let through_lb1: Vec<&Finished> = o.downloads.iter().filter(|d| d.via_lb1).collect();
    assert!(
        through_lb1.len() >= 3,
        "only {} downloads went through lb1: the scenario proves little",
        through_lb1.len()
    );
    for d in through_lb1 {
        assert!(
            !d.end.ok || d.end.received < d.bytes as u64,
            "{} survived without flow sync, so this scenario proves nothing: {:?}",
            d.label,
            d.end
        );
    }
    // Before the failover lb1 kept the UDP flow on its real; lb2 sends it
    // to real4, which answers (UDP has no connection to reset).
    let answered: Vec<&String> = o.udp.iter().flatten().collect();
    assert_eq!(answered.first().copied(), Some(&o.udp_real), "{:?}", o.udp);
    assert_eq!(
        answered.last().map(|s| s.as_str()),
        Some("real4"),
        "{:?}",
        o.udp
    );
}

/// One download of a scenario and how it ended.
struct Finished {
    label: String,
    bytes: usize,
    reference: String,
    end: TransferEnd,
    /// Whether lb1's flow table had the download before the failover:
    /// the router's forwarding may differ from `ip route get` (seen for
    /// IPv6 on some machines), and a download lb2 carried from the start
    /// is not part of the failover.
    via_lb1: bool,
}

struct Outcome {
    downloads: Vec<Finished>,
    /// The real that answered each UDP datagram, None for no answer.
    udp: Vec<Option<String>>,
    /// The real the UDP flow started on.
    udp_real: String,
    /// Flow sync as each load balancer reported it after the failover.
    flow_sync: Vec<(String, Value)>,
    /// The load balancers' logs, for failure messages.
    logs: String,
}

impl Outcome {
    fn summary(&self) -> String {
        let mut s = String::new();
        for d in &self.downloads {
            s += &format!(
                "  {:<40} {}{}: {} of {} bytes, sha256 {}\n",
                d.label,
                if d.via_lb1 {
                    ""
                } else {
                    "(via lb2 from the start) "
                },
                if d.end.ok && d.end.sha256 == d.reference {
                    "intact"
                } else {
                    "BROKEN"
                },
                d.end.received,
                d.bytes,
                &d.end.sha256[..d.end.sha256.len().min(16)],
            );
        }
        let on = |r: &str| self.udp.iter().filter(|x| x.as_deref() == Some(r)).count();
        let lost = self.udp.iter().filter(|x| x.is_none()).count();
        s += &format!(
            "  UDP flow started on {}: {} datagrams, {} answered by it, {} by real4, {lost} unanswered\n",
            self.udp_real,
            self.udp.len(),
            on(&self.udp_real),
            on("real4"),
        );
        for (lb, fs) in &self.flow_sync {
            let l = &fs["local"];
            s += &format!(
                "  {lb}: vc5-flowsync {} sent {} records",
                l["state"], l["sent_records"]
            );
            for p in fs["peers"].as_array().into_iter().flatten() {
                s += &format!(
                    "; from {}: {} records, {} written, {} unknown real, delay p50 {} µs p99 {} µs",
                    p["addr"],
                    p["records"],
                    p["written"],
                    p["unknown_real"],
                    p["delay_p50_us"],
                    p["delay_p99_us"]
                );
            }
            s += "\n";
        }
        s
    }
}

/// The lab's configuration for `lb`: HTTP and UDP services over `reals`
/// (real4 with `weight`), fast checks, BGP to the router, flow sync.
fn config(lab: &Lab, lb: &str, reals: &[String], real4_weight: u32) -> String {
    let mut yaml = lab.config_with_udp(reals).replace(
        "path: /health}",
        "path: /health, interval: 1s, timeout: 500ms, rise: 2, fall: 2}",
    );
    if real4_weight != 1 {
        let a = lab.addr4("real4").to_string();
        yaml = yaml.replace(
            &format!(", {a}]"),
            &format!(", {{addr: {a}, weight: {real4_weight}}}]"),
        );
        assert!(yaml.contains("weight:"), "{yaml}");
    }
    yaml += &lab.rhi_section(lb);
    // Without vc5-flowsync vc5d holds its announcements this long.
    yaml += "flow_sync_wait: 2s\n";
    lab.with_flow_sync(&yaml).unwrap()
}

fn status(lab: &Lab, lb: &str) -> Value {
    let text = lab
        .curl(lb, "http://127.0.0.1:8080/status.json", &[])
        .unwrap();
    serde_json::from_str(&text).expect("status.json")
}

/// Waits until `ok` holds, or panics with `what`.
fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < timeout, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the router's kernel routes for both VIPs go over exactly `lbs`.
fn routed_over(lab: &Lab, lbs: &[&str]) -> bool {
    [
        (format!("{}/32", lab.vip4), "-4"),
        (format!("{}/128", lab.vip6), "-6"),
    ]
    .iter()
    .all(|(net, family)| {
        let out = lab
            .run("router", &["ip", family, "route", "show", net])
            .unwrap_or_default();
        ["lb1", "lb2"].iter().all(|lb| {
            let hop = |a: String| out.contains(&format!("via {a} "));
            let there = hop(lab.addr4(lb).to_string()) || hop(lab.addr6(lb).to_string());
            there == lbs.contains(lb)
        })
    })
}

/// Whether every load balancer reports real4 serving in every service.
fn real4_serving(lab: &Lab) -> bool {
    let addr = lab.addr4("real4").to_string();
    ["lb1", "lb2"].iter().all(|lb| {
        let st = status(lab, lb);
        let services = st["services"].as_array().cloned().unwrap_or_default();
        services.len() == 4
            && services.iter().all(|s| {
                (s["reals"].as_array().into_iter().flatten())
                    .any(|r| r["addr"] == addr.as_str() && r["state"] == "serving")
            })
    })
}

/// Rewrites both configurations and reloads both vc5d; waits until the
/// status of each lists real4 with `real4_weight` in every service (it is
/// published once the new configuration is programmed).
fn reload(lab: &Lab, vc5ds: &mut [(String, LabChild)], reals: &[String], real4_weight: u32) {
    let addr = lab.addr4("real4").to_string();
    for (lb, vc5d) in vc5ds.iter_mut() {
        lab.write_config_for(lb, &config(lab, lb, reals, real4_weight))
            .unwrap();
        vc5d.signal(libc::SIGHUP).unwrap();
        wait_for(&format!("{lb} reloaded"), Duration::from_secs(10), || {
            let st = status(lab, lb);
            let services = st["services"].as_array().cloned().unwrap_or_default();
            services.len() == 4
                && services.iter().all(|s| {
                    (s["reals"].as_array().into_iter().flatten())
                        .any(|r| r["addr"] == addr.as_str() && r["weight"] == real4_weight)
                })
        });
    }
}

/// A client port (not in `used`) whose flow to `vip` the router sends to
/// lb1 and whose real differs between the `before` and `after` reals;
/// returns it with its real before.
fn moving_port(
    lab: &Lab,
    used: &mut HashSet<u16>,
    vip: SocketAddr,
    proto: (u8, &str),
    before: &[(String, u32)],
    after: &[(String, u32)],
) -> (u16, String) {
    let client: IpAddr = match vip {
        SocketAddr::V4(_) => lab.addr4("client").into(),
        SocketAddr::V6(_) => lab.addr6("client").into(),
    };
    for port in 20000..60000 {
        if used.contains(&port) {
            continue;
        }
        let c = SocketAddr::new(client, port);
        let was = lab.predicted_real_weighted(before, c, vip, proto.0);
        if was == lab.predicted_real_weighted(after, c, vip, proto.0) {
            continue;
        }
        if lab.router_next_hop(c, vip, proto.1).unwrap() == "lb1" {
            used.insert(port);
            return (port, was);
        }
    }
    panic!("no client port to {vip} through lb1 moves");
}

/// Sends one datagram every 100 ms to `vip` from `port` and records which
/// real answered each, until `stop`.
fn udp_flow(
    lab: &Lab,
    vip: SocketAddr,
    port: u16,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Option<String>>> {
    let ns = lab.ns("client");
    let local = SocketAddr::new(lab.addr4("client").into(), port);
    std::thread::spawn(move || {
        vc5_testkit::enter_netns(&ns);
        let s = UdpSocket::bind(local).unwrap();
        s.connect(vip).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut answers = Vec::new();
        let mut buf = [0u8; 512];
        let mut seq = 0u32;
        while !stop.load(Ordering::SeqCst) {
            let sent = Instant::now();
            seq += 1;
            s.send(seq.to_string().as_bytes()).unwrap();
            let mut got = None;
            // Answers to earlier datagrams are skipped: only this one counts.
            while got.is_none() && sent.elapsed() < Duration::from_millis(100) {
                if let Ok(n) = s.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if text.contains(&format!(" seq={seq}\n")) {
                        got = (text.split_whitespace())
                            .find_map(|w| w.strip_prefix("real="))
                            .map(str::to_string);
                    }
                }
            }
            answers.push(got);
            if let Some(rest) = Duration::from_millis(100).checked_sub(sent.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        answers
    })
}

fn scenario(sync: bool) -> Outcome {
    let lab = Lab::new(LabOptions {
        vc5d: Some(env!("CARGO_BIN_EXE_vc5d").into()),
        load_balancers: 2,
        reals: 4,
        ..LabOptions::default()
    })
    .expect("building the lab (needs root)");
    if sync {
        let bin = lab.flowsync_path().unwrap_or_else(|e| panic!("{e:#}"));
        assert!(bin.is_file(), "{}", bin.display());
    }
    let reals = lab.reals();
    let three = reals[..3].to_vec();
    let weights = |w4: Option<u32>| -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = three.iter().map(|r| (r.clone(), 1)).collect();
        if let Some(w) = w4 {
            v.push(("real4".to_string(), w));
        }
        v
    };

    let _router = lab.start_router_bird().unwrap();
    let mut vc5ds: Vec<(String, LabChild)> = Vec::new();
    let mut flowsyncs: Vec<LabChild> = Vec::new();
    for lb in lab.load_balancers() {
        lab.write_config_for(&lb, &config(&lab, &lb, &three, 1))
            .unwrap();
        let vc5d = lab.start_vc5d(&lb, "generic", &[]).unwrap();
        if sync {
            flowsyncs.push(lab.start_flowsync(&lb).unwrap());
        }
        vc5ds.push((lb, vc5d));
    }
    for (_, vc5d) in vc5ds.iter_mut() {
        wait_ready(&lab, vc5d);
    }
    wait_for("ECMP over lb1 and lb2", Duration::from_secs(30), || {
        routed_over(&lab, &["lb1", "lb2"])
    });
    if sync {
        wait_for("both vc5-flowsync synced", Duration::from_secs(10), || {
            ["lb1", "lb2"]
                .iter()
                .all(|lb| status(&lab, lb)["flow_sync"]["local"]["state"] == "synced")
        });
    }

    let vip4 = SocketAddr::new(lab.vip4.into(), HTTP_PORT);
    let vip6 = SocketAddr::new(lab.vip6.into(), HTTP_PORT);
    let udp4 = SocketAddr::new(lab.vip4.into(), UDP_PORT);
    let mut used = HashSet::new();
    let (three_w, four_w, heavy_w) = (weights(None), weights(Some(1)), weights(Some(HEAVY)));
    let mut planned: Vec<(String, SocketAddr, u16, String)> = Vec::new();
    for i in 1..=3 {
        let (port, real) = moving_port(&lab, &mut used, vip4, (6, "tcp"), &three_w, &four_w);
        planned.push((format!("IPv4 download {i} (port {port})"), vip4, port, real));
    }
    let (port, real) = moving_port(&lab, &mut used, vip6, (6, "tcp"), &three_w, &four_w);
    planned.push((format!("IPv6 download (port {port})"), vip6, port, real));
    let (udp_port, udp_real) = moving_port(&lab, &mut used, udp4, (17, "udp"), &three_w, &four_w);
    let (young_port, young_real) =
        moving_port(&lab, &mut used, vip4, (6, "tcp"), &four_w, &heavy_w);
    let reference = lab.reference_sha256("real1", BYTES).unwrap();
    let young_reference = lab.reference_sha256("real2", YOUNG_BYTES).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let udp = udp_flow(&lab, udp4, udp_port, stop.clone());
    let mut downloads = Vec::new();
    for (label, vip, port, real) in &planned {
        let t = lab
            .start_transfer(vip.ip(), BYTES, RATE, Some(*port))
            .unwrap();
        downloads.push((label.clone(), t, real.clone(), BYTES, reference.clone()));
    }
    for (label, t, real, _, _) in &downloads {
        let got = t.real(Duration::from_secs(5)).unwrap();
        assert_eq!(&got, real, "{label}: the prediction of its real");
    }
    let mut ports_via_lb1: HashSet<u16> = HashSet::new();
    let lb1_maps = Pinned::open(&lab.bpffs("lb1")).unwrap();
    for map in [FlowMap::Tcp4, FlowMap::Tcp6] {
        for (k, _) in lb1_maps.all_flows(false, map).unwrap() {
            let (_, _, sport, vport) = k.tuple();
            if vport == HTTP_PORT {
                ports_via_lb1.insert(sport);
            }
        }
    }
    drop(lb1_maps);

    // real4 joins: the flows' buckets move to it, lb1 keeps them where
    // they are (its own flow table), lb2 only if flow sync told it. A
    // second first (deliberately a fixed time: the same with flow sync and
    // without) for the flows to be established.
    std::thread::sleep(Duration::from_secs(1));
    reload(&lab, &mut vc5ds, &reals, 1);
    wait_for(
        "real4 serving on both load balancers",
        Duration::from_secs(15),
        || real4_serving(&lab),
    );

    // A young download, then a second move of its bucket (real4 heavier)
    // before it is a second old.
    let young_label = format!("young download (port {young_port})");
    let young = lab
        .start_transfer(vip4.ip(), YOUNG_BYTES, RATE, Some(young_port))
        .unwrap();
    let born = Instant::now();
    assert_eq!(young.real(Duration::from_secs(5)).unwrap(), young_real);
    // The second move at a set age of the young download (a fixed time).
    std::thread::sleep(Duration::from_millis(400));
    reload(&lab, &mut vc5ds, &reals, HEAVY);
    if let Some(rest) = YOUNG_AGE.checked_sub(born.elapsed()) {
        std::thread::sleep(rest);
    }

    // lb1 leaves the ECMP group.
    lab.birdc("router", "disable lb1").unwrap();
    wait_for(
        "the router routes to lb2 only",
        Duration::from_secs(10),
        || routed_over(&lab, &["lb2"]),
    );
    println!(
        "lb1 left the router's ECMP group {:.2} s after the young download started",
        born.elapsed().as_secs_f64()
    );
    downloads.push((young_label, young, young_real, YOUNG_BYTES, young_reference));
    let mut ports: Vec<u16> = planned.iter().map(|p| p.2).collect();
    ports.push(young_port);

    let mut finished = Vec::new();
    for ((label, t, _, bytes, reference), port) in downloads.into_iter().zip(ports) {
        let end = t.finish(Duration::from_secs(40)).unwrap();
        finished.push(Finished {
            label,
            bytes,
            reference,
            end,
            // The young download started after the snapshot: judged by
            // the prediction, as its real was.
            via_lb1: port == young_port || ports_via_lb1.contains(&port),
        });
    }
    // The UDP flow a little past the downloads (a fixed time).
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let udp = udp.join().unwrap();
    let flow_sync = ["lb1", "lb2"]
        .iter()
        .map(|lb| (lb.to_string(), status(&lab, lb)["flow_sync"].clone()))
        .collect();
    let mut logs = String::new();
    for (lb, vc5d) in &vc5ds {
        logs += &format!("--- vc5d on {lb} ---\n{}\n", vc5d.log_text());
    }
    for (lb, f) in ["lb1", "lb2"].iter().zip(&flowsyncs) {
        logs += &format!("--- vc5-flowsync on {lb} ---\n{}\n", f.log_text());
    }
    for mut f in flowsyncs {
        f.terminate(Duration::from_secs(5)).unwrap();
    }
    for (_, mut vc5d) in vc5ds {
        vc5d.terminate(Duration::from_secs(10)).unwrap();
    }
    Outcome {
        downloads: finished,
        udp,
        udp_real,
        flow_sync,
        logs,
    }
}
