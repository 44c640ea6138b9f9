//! The operator's interfaces against a real vc5d in the lab: drain and
//! undrain through D-Bus (a private dbus-daemon with the project's policy)
//! while a long download runs on the drained real, the signals on the bus,
//! the console page in headless Chromium inside the load balancer's
//! namespace following a real's failure, and the console forwarded to the
//! host's loopback as `vc5-lab` does.

mod common;
mod ops_common;

use common::{fast_checks, lab, spread, wait_ready};
use futures_util::StreamExt;
use ops_common::browser::{Browser, text_of};
use ops_common::{Policy, TestBus, text};
use serde_json::json;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn busctl_call(bus: &TestBus, member: &str, args: &[&str]) -> std::process::Output {
    let mut argv = vec![
        "call",
        "org.vc5.Balancer1",
        "/org/vc5/Balancer1",
        "org.vc5.Balancer1",
        member,
    ];
    argv.extend_from_slice(args);
    bus.busctl(false, &argv)
}

#[test]
fn drain_through_dbus_keeps_the_download_and_takes_no_new_connections() {
    let mut lab = lab();
    lab.write_config_text(&fast_checks(&lab)).unwrap();
    let bus = TestBus::start(Policy::Strict);
    let signals = subscribe(&bus.address);
    let mut vc5d = lab
        .start_vc5d("lb1", "generic", &["--dbus", &bus.address])
        .unwrap();
    wait_ready(&lab, &mut vc5d);

    // 8 MB at 1 MB/s (paced by the real): eight seconds, across the drain.
    let bytes = 8_000_000;
    let mut download = lab
        .start_transfer(IpAddr::V4(lab.vip4), bytes, 1_000_000, None)
        .unwrap();
    let victim = download.real(Duration::from_secs(10)).unwrap();
    let addr = lab.addr4(&victim).to_string();

    let out = busctl_call(&bus, "Drain", &["ss", "web4", &addr]);
    assert!(out.status.success(), "Drain: {}", text(&out.stderr));
    let out = busctl_call(&bus, "Drain", &["ss", "web4", &addr]);
    assert!(!out.status.success(), "draining twice is refused");
    assert!(
        text(&out.stderr).contains("already drained"),
        "{}",
        text(&out.stderr)
    );
    let reals = busctl_call(&bus, "ListReals", &["s", "web4"]);
    let listed = text(&reals.stdout);
    assert!(
        listed.contains(&format!("\"{addr}\" \"drained\"")),
        "{listed}"
    );

    // No new connection reaches the drained real, on web4; web6 is
    // another service and still uses it.
    let s = spread(&lab, IpAddr::V4(lab.vip4), 90);
    assert!(!s.contains_key(&victim), "{victim} is drained: {s:?}");
    assert_eq!(s.values().sum::<usize>(), 90);
    // Its long download goes on to the end.
    assert!(download.running(), "the download ended before the drain");
    let end = download.finish(Duration::from_secs(60)).unwrap();
    assert!(end.ok && end.received == bytes as u64, "{end:?}");
    assert_eq!(end.sha256, lab.reference_sha256(&victim, bytes).unwrap());

    let out = busctl_call(&bus, "Undrain", &["ss", "web4", &addr]);
    assert!(out.status.success(), "Undrain: {}", text(&out.stderr));
    // The signal may trail the method's reply a little: wait for it.
    let drains = || -> Vec<bool> {
        signals
            .lock()
            .unwrap()
            .iter()
            .filter(|(svc, r, _, kind)| svc == "web4" && *r == addr && kind == "drain")
            .map(|x| x.2)
            .collect()
    };
    let t0 = Instant::now();
    while drains().len() < 2 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(drains(), vec![true, false], "RealDrainChanged signalled");
    let s = spread(&lab, IpAddr::V4(lab.vip4), 120);
    assert!(
        s.contains_key(&victim),
        "{victim} takes connections again: {s:?}"
    );

    // A real's health change is signalled on the bus.
    lab.stop_httpd("real3").unwrap();
    let real3 = lab.addr4("real3").to_string();
    let t = Instant::now();
    loop {
        let seen = signals.lock().unwrap().clone();
        if seen.iter().any(|(svc, real, healthy, reason)| {
            svc == "web4" && *real == real3 && !healthy && !reason.is_empty()
        }) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no RealHealthChanged for {real3}: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    vc5d.terminate(Duration::from_secs(10)).unwrap();
}

type Seen = Arc<Mutex<Vec<(String, String, bool, String)>>>;

/// Collects vc5d's RealHealthChanged signals (service, real, healthy,
/// reason) and RealDrainChanged ones (service, real, drained, "drain") on
/// the bus, from a thread of its own (the test itself is synchronous).
fn subscribe(address: &str) -> Seen {
    let seen: Seen = Arc::default();
    let (out, address) = (seen.clone(), address.to_string());
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let conn = zbus::connection::Builder::address(address.as_str())
                .unwrap()
                .build()
                .await
                .unwrap();
            let rule = zbus::MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .interface("org.vc5.Balancer1")
                .unwrap()
                .build();
            let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, Some(64))
                .await
                .unwrap();
            let _ = ready_tx.send(());
            while let Some(Ok(m)) = stream.next().await {
                let member = m
                    .header()
                    .member()
                    .map(|x| x.to_string())
                    .unwrap_or_default();
                let body = match member.as_str() {
                    "RealHealthChanged" => m
                        .body()
                        .deserialize::<(String, String, bool, String)>()
                        .ok(),
                    "RealDrainChanged" => m
                        .body()
                        .deserialize::<(String, String, bool)>()
                        .ok()
                        .map(|(s, r, d)| (s, r, d, "drain".to_string())),
                    _ => None,
                };
                if let Some(b) = body {
                    out.lock().unwrap().push(b);
                }
            }
        });
    });
    ready
        .recv_timeout(Duration::from_secs(10))
        .expect("subscribed to the bus");
    seen
}

#[test]
fn the_console_in_the_lab_shows_services_and_follows_a_failure() {
    let mut lab = lab();
    lab.write_config_text(&fast_checks(&lab)).unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);
    spread(&lab, IpAddr::V4(lab.vip4), 30);

    let ns = lab.ns("lb1");
    let mut b = Browser::start_in(&["ip", "netns", "exec", &ns]);
    b.open("http://127.0.0.1:8080/", 1400, 1000);
    let real2 = lab.addr4("real2").to_string();
    let row = format!("tr.real[data-service='web4'][data-real='{real2}'] td.state");
    b.wait_for(
        "document.querySelectorAll(\"div.service[data-service='web4'], div.service[data-service='web6']\").length",
        json!(2),
        Duration::from_secs(15),
    );
    b.wait_for(&text_of(&row), json!("serving"), Duration::from_secs(15));
    b.eval("window.vc5_marker = 42");

    lab.stop_httpd("real2").unwrap();
    b.wait_for(&text_of(&row), json!("failed"), Duration::from_secs(15));
    assert_eq!(
        b.eval("window.vc5_marker"),
        json!(42),
        "the page was not reloaded"
    );
    let shot = lab.dir().join("console.png");
    b.screenshot(&shot);
    assert!(b.errors.is_empty(), "page errors: {:?}", b.errors);
    drop(b);
    vc5d.terminate(Duration::from_secs(10)).unwrap();
}

#[test]
fn the_console_is_reachable_from_the_host() {
    let lab = lab();
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);
    let fwd = lab.forward_console("lb1", 0).unwrap();
    assert!(fwd.local.ip().is_loopback(), "{}", fwd.local);
    // From this (the host's) namespace, not lb1's.
    let body =
        vc5_testkit::lab::http_get(fwd.local, "/status.json", Duration::from_secs(5)).unwrap();
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = (status["services"].as_array().into_iter().flatten())
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["web4", "web6"], "{body}");
    let page = vc5_testkit::lab::http_get(fwd.local, "/", Duration::from_secs(5)).unwrap();
    assert!(page.contains("<html"), "{page}");
    let metrics =
        vc5_testkit::lab::http_get(fwd.local, "/metrics", Duration::from_secs(5)).unwrap();
    assert!(metrics.contains("# TYPE"), "{metrics}");
    vc5d.terminate(Duration::from_secs(10)).unwrap();
}
