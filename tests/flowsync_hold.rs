//! vc5d's announcement hold for flow sync, in the lab against a BIRD router
//! (vc5d's own BGP speaker announces): with `multicast` and `flow_sync_key`
//! set, a starting vc5d announces no VIP until this host's vc5-flowsync
//! says (in the pinned `sync_status` map) that its resync is done, or until
//! `flow_sync_wait` has passed.
//!
//! No vc5-flowsync runs here: the test writes `sync_status` itself, with
//! `bpftool map update` on vc5d's pinned map, as vc5-flowsync would (whole
//! entries, a heartbeat every 250 ms). The status (`/status.json`) and the
//! metrics must show what was written.

mod common;

use common::{fast_checks, lab_with, wait_ready, wait_status, wait_vc5d_ready};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vc5_testkit::lab::Lab;
use vc5_xdp::maps::{SYNC_RESYNCING, SYNC_SYNCED, SyncStatus, addr16};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether the router has a BGP route for `net` from lb1.
fn routed(lab: &Lab, net: &str) -> bool {
    lab.birdc("router", &format!("show route for {net} all"))
        .unwrap_or_default()
        .contains("[lb1 ")
}

/// Waits until the router has lb1's route for `net`; returns the Unix time
/// in ms at which it was first seen.
fn wait_route(lab: &Lab, net: &str, timeout: Duration) -> u64 {
    let t = Instant::now();
    loop {
        if routed(lab, net) {
            return now_ms();
        }
        assert!(
            t.elapsed() < timeout,
            "the router never learnt {net} from lb1:\n{}",
            lab.birdc("router", &format!("show route for {net} all"))
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(lab: &Lab) -> Value {
    let text = lab
        .curl("lb1", "http://127.0.0.1:8080/status.json", &[])
        .unwrap();
    serde_json::from_str(&text).expect("status.json")
}

/// The value of one `/metrics` sample, by its whole series name.
fn metric(lab: &Lab, series: &str) -> f64 {
    let text = lab
        .curl("lb1", "http://127.0.0.1:8080/metrics", &[])
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
        .parse()
        .expect("a number")
}

/// Whether the status says vc5d holds its announcements for flow sync
/// (`true`) or not.
fn holding(yes: bool) -> impl Fn(&Value) -> bool {
    move |s| s["flow_sync"]["holding_announcements"] == yes
}

/// [`wait_status`] on lb1, returning the status that satisfied `ok`.
fn wait_status_value(
    lab: &Lab,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let seen = std::cell::RefCell::new(Value::Null);
    wait_status(lab, "lb1", what, timeout, |s| {
        let yes = ok(s);
        if yes {
            *seen.borrow_mut() = s.clone();
        }
        yes
    });
    seen.into_inner()
}

/// Waits until every VIP may be announced (the checks have passed).
fn wait_announceable(lab: &Lab) -> Value {
    let t = Instant::now();
    loop {
        let st = status(lab);
        let vips = st["vips"].as_array().expect("vips");
        if !vips.is_empty() && vips.iter().all(|v| v["announceable"] == true) {
            return st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "VIPs never announceable: {}",
            st["vips"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// lb1's configuration: BGP to the router, fast checks, flow sync with
/// `wait`.
fn write_config(lab: &Lab, wait: &str) {
    let key = lab.dir().join("flow.key");
    std::fs::write(&key, format!("1 {}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let cfg = lab
        .rhi_config("lb1")
        .replace(&lab.default_config(), &fast_checks(lab));
    let cfg = format!(
        "{cfg}multicast: 224.0.0.1:9999\nflow_sync_key: {}\nflow_sync_wait: {wait}\n",
        key.display()
    );
    lab.write_config_for("lb1", &cfg).unwrap();
}

/// Writes entry `index` of lb1's pinned `sync_status`, as vc5-flowsync
/// does (a whole entry at once).
fn write_sync_status(lab: &Lab, index: u32, entry: &SyncStatus) {
    // SAFETY: SyncStatus is #[repr(C)] plain old data without implicit
    // padding (pinned against the object's BTF by vc5-xdp's layout test).
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (entry as *const SyncStatus).cast::<u8>(),
            std::mem::size_of::<SyncStatus>(),
        )
    };
    let map = lab.bpffs("lb1").join("maps/sync_status");
    let mut argv: Vec<String> = ["map", "update", "pinned"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.push(map.to_string_lossy().into_owned());
    argv.extend(["key", "hex"].map(String::from));
    argv.extend(index.to_ne_bytes().iter().map(|b| format!("{b:02x}")));
    argv.extend(["value", "hex"].map(String::from));
    argv.extend(bytes.iter().map(|b| format!("{b:02x}")));
    let out = std::process::Command::new("bpftool")
        .args(&argv)
        .output()
        .expect("bpftool (Debian package bpftool)");
    assert!(
        out.status.success(),
        "bpftool map update: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const PEER: &str = "203.0.113.77";

/// A peer as vc5-flowsync would publish it, last heard `at_ms`.
fn peer(at_ms: u64) -> SyncStatus {
    let mut p = SyncStatus {
        state: 1,
        sender: 0xcb00_714d,
        epoch: 1_700_000_000_123_456_789,
        addr: addr16(PEER.parse().unwrap()),
        updated_ms: at_ms,
        datagrams: 1234,
        records: 56_789,
        written: 56_000,
        gaps: 7,
        unknown_real: 789,
        rate_limited: 3,
        delay_p50_us: 250,
        delay_p99_us: 4_500,
        delay_max_us: 12_000,
        ..SyncStatus::default()
    };
    p.rejects[vc5_xdp::flowsync::status::reason_index("auth")] = 5;
    p.rejects[vc5_xdp::flowsync::status::reason_index("duplicate")] = 2;
    p
}

/// Plays vc5-flowsync's part: entry 0 with a heartbeat every 250 ms in
/// the state set in `state`, and one peer, until dropped.
struct FakeFlowsync {
    state: Arc<AtomicU32>,
    started_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeFlowsync {
    fn own(state: u32, started_ms: u64) -> SyncStatus {
        SyncStatus {
            on: 1,
            state,
            sender: 0xcb00_7142,
            epoch: started_ms * 1_000_000,
            addr: addr16("203.0.113.66".parse().unwrap()),
            started_ms,
            updated_ms: now_ms(),
            datagrams: 42,
            records: 4242,
            lost: 9,
            ..SyncStatus::default()
        }
    }

    fn start(lab: &Arc<Lab>, state: u32) -> FakeFlowsync {
        let started = now_ms();
        write_sync_status(lab, 0, &Self::own(state, started));
        write_sync_status(lab, 1, &peer(now_ms()));
        let state = Arc::new(AtomicU32::new(state));
        let started_ms = Arc::new(AtomicU64::new(started));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (lab, state, started_ms, stop) =
                (lab.clone(), state.clone(), started_ms.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let s = state.load(Ordering::Relaxed);
                    let started = started_ms.load(Ordering::Relaxed);
                    write_sync_status(&lab, 0, &Self::own(s, started));
                    write_sync_status(&lab, 1, &peer(now_ms()));
                }
            })
        };
        FakeFlowsync {
            state,
            started_ms,
            stop,
            thread: Some(thread),
        }
    }

    /// Sets the state and start; the entry is written at once.
    fn set(&self, lab: &Lab, state: u32, started_ms: u64) {
        self.state.store(state, Ordering::Relaxed);
        self.started_ms.store(started_ms, Ordering::Relaxed);
        write_sync_status(lab, 0, &Self::own(state, started_ms));
    }
}

impl Drop for FakeFlowsync {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn without_vc5_flowsync_the_vips_wait_for_flow_sync_wait() {
    let lab = lab_with(1);
    let _router = lab.start_router_bird().unwrap();
    write_config(&lab, "8s");
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    wait_vc5d_ready(&lab, "lb1", Duration::from_secs(20));
    wait_status(
        &lab,
        "lb1",
        "holding its announcements",
        Duration::from_secs(1),
        holding(true),
    );
    let st = wait_announceable(&lab);
    let started_ms = st["started_ms"].as_u64().unwrap();
    let fs = &st["flow_sync"];
    assert_eq!(fs["configured"], true, "{fs}");
    assert_eq!(fs["group"], "224.0.0.1:9999");
    assert_eq!(fs["wait_ms"], 8000);
    assert_eq!(fs["holding_announcements"], true, "{fs}");
    assert_eq!(fs["holding_until_ms"], started_ms + 8000);
    assert_eq!(fs["local"]["running"], false);
    assert_eq!(fs["local"]["state"], "none");
    assert_eq!(fs["peers"], serde_json::json!([]));
    for v in st["vips"].as_array().unwrap() {
        assert_eq!(v["announced"], false, "{v}");
    }
    assert_eq!(metric(&lab, "vc5_flowsync_configured"), 1.0);
    assert_eq!(metric(&lab, "vc5_flowsync_holding_announcements"), 1.0);
    assert_eq!(metric(&lab, "vc5_flowsync_up"), 0.0);
    assert_eq!(
        metric(&lab, "vc5_flowsync_hold_until_seconds"),
        (started_ms + 8000) as f64 / 1000.0
    );

    let vip4 = format!("{}/32", lab.vip4);
    let vip6 = format!("{}/128", lab.vip6);
    assert!(!routed(&lab, &vip4), "announced during the hold");
    let seen = wait_route(&lab, &vip4, Duration::from_secs(30));
    wait_route(&lab, &vip6, Duration::from_secs(10));
    println!(
        "route seen {} ms after vc5d's start (flow_sync_wait 8 s)",
        seen - started_ms
    );
    assert!(
        seen >= started_ms + 8000,
        "announced {} ms after the start, before flow_sync_wait",
        seen - started_ms
    );
    wait_status(
        &lab,
        "lb1",
        "done holding",
        Duration::from_secs(1),
        holding(false),
    );
    // Why the hold ended is in the log only (logged before the status that
    // shows it over).
    let log = vc5d.log_text();
    let last = log.rsplit("=== ").next().unwrap_or_default();
    assert!(last.contains("flow_sync_wait passed"), "{last}");
    let fs = status(&lab)["flow_sync"].clone();
    assert_eq!(fs["holding_announcements"], false, "{fs}");
    assert_eq!(fs["holding_until_ms"], 0);
    assert_eq!(metric(&lab, "vc5_flowsync_holding_announcements"), 0.0);
    vc5d.terminate(Duration::from_secs(15)).unwrap();
}

#[test]
fn the_vips_follow_vc5_flowsyncs_resync_and_a_restart_beside_it_does_not_hold() {
    let lab = Arc::new(lab_with(1));
    let _router = lab.start_router_bird().unwrap();
    write_config(&lab, "120s");
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    wait_vc5d_ready(&lab, "lb1", Duration::from_secs(20));
    wait_announceable(&lab);
    let vip4 = format!("{}/32", lab.vip4);

    // Resyncing, with a fresh heartbeat: still held.
    let fake = FakeFlowsync::start(&lab, SYNC_RESYNCING);
    // A while (deliberately a fixed time) in which nothing may change.
    std::thread::sleep(Duration::from_millis(1500));
    let fs = status(&lab)["flow_sync"].clone();
    assert_eq!(fs["holding_announcements"], true, "{fs}");
    assert!(!routed(&lab, &vip4), "announced while vc5-flowsync resyncs");

    // Synced: announced at once.
    let written = now_ms();
    fake.set(&lab, SYNC_SYNCED, written - 2000);
    let seen = wait_route(&lab, &vip4, Duration::from_secs(5));
    println!(
        "route seen {} ms after sync_status[0] said synced",
        seen - written
    );
    // The hold's end is published with what vc5-flowsync said then.
    let st = wait_status_value(
        &lab,
        "done holding, vc5-flowsync synced",
        Duration::from_secs(1),
        |s| holding(false)(s) && s["flow_sync"]["local"]["state"] == "synced",
    );

    // What vc5-flowsync published, in the status.
    let fs = &st["flow_sync"];
    assert_eq!(fs["holding_announcements"], false, "{fs}");
    let local = &fs["local"];
    assert_eq!(local["running"], true, "{local}");
    assert_eq!(local["state"], "synced");
    assert_eq!(local["sender"], "cb007142");
    assert_eq!(local["addr"], "203.0.113.66");
    assert_eq!(local["started_ms"], written - 2000);
    assert_eq!(local["epoch"], (written - 2000) * 1_000_000);
    assert_eq!(local["sent_datagrams"], 42);
    assert_eq!(local["sent_records"], 4242);
    assert_eq!(local["lost_events"], 9);
    let peers = fs["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{peers:?}");
    let p = &peers[0];
    assert_eq!(p["addr"], PEER);
    assert_eq!(p["sender"], "cb00714d");
    assert_eq!(p["epoch"], 1_700_000_000_123_456_789u64);
    for (k, v) in [
        ("datagrams", 1234),
        ("records", 56_789),
        ("written", 56_000),
        ("gaps", 7),
        ("unknown_real", 789),
        ("rate_limited", 3),
        ("delay_p50_us", 250),
        ("delay_p99_us", 4_500),
        ("delay_max_us", 12_000),
    ] {
        assert_eq!(p[k], v, "{k}: {p}");
    }
    assert_eq!(p["rejects"]["auth"], 5);
    assert_eq!(p["rejects"]["duplicate"], 2);
    assert_eq!(p["rejects"]["bad_magic"], 0);
    assert_eq!(
        p["rejects"].as_object().unwrap().len(),
        vc5_xdp::flowsync::status::REASONS.len()
    );
    let ago = p["last_heard_ago_ms"].as_u64().unwrap();
    assert!(ago < 3000, "last heard {ago} ms ago");

    // The same in /metrics.
    let l = format!("{{peer=\"{PEER}\"}}");
    assert_eq!(metric(&lab, "vc5_flowsync_up"), 1.0);
    assert_eq!(metric(&lab, "vc5_flowsync_synced"), 1.0);
    assert_eq!(metric(&lab, "vc5_flowsync_holding_announcements"), 0.0);
    assert_eq!(metric(&lab, "vc5_flowsync_sent_datagrams_total"), 42.0);
    assert_eq!(metric(&lab, "vc5_flowsync_lost_events_total"), 9.0);
    assert_eq!(
        metric(&lab, &format!("vc5_flowsync_peer_datagrams_total{l}")),
        1234.0
    );
    assert_eq!(
        metric(&lab, &format!("vc5_flowsync_peer_records_total{l}")),
        56_789.0
    );
    assert_eq!(
        metric(&lab, &format!("vc5_flowsync_peer_gaps_total{l}")),
        7.0
    );
    assert_eq!(
        metric(
            &lab,
            &format!("vc5_flowsync_peer_rejects_total{{peer=\"{PEER}\",reason=\"auth\"}}")
        ),
        5.0
    );
    assert_eq!(
        metric(
            &lab,
            &format!("vc5_flowsync_peer_delay_seconds{{peer=\"{PEER}\",quantile=\"0.99\"}}")
        ),
        0.0045
    );

    // vc5d restarted while vc5-flowsync runs on, synced: no hold.
    vc5d.terminate(Duration::from_secs(15)).unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);
    // vc5-flowsync's resync was found done: no hold, ever (the log is the
    // history).
    wait_status(
        &lab,
        "lb1",
        "not holding, vc5-flowsync synced",
        Duration::from_secs(1),
        |s| holding(false)(s) && s["flow_sync"]["local"]["state"] == "synced",
    );
    let log = vc5d.log_text();
    let last = log.rsplit("=== ").next().unwrap_or_default();
    assert!(!last.contains("holding VIP announcements"), "{last}");
    wait_route(&lab, &vip4, Duration::from_secs(30));
    drop(fake);
    vc5d.terminate(Duration::from_secs(15)).unwrap();
}
