//! What the status says about checks between their state changes, in the lab:
//! a steady, passing check's last-run time and latency move on in
//! `/status.json` and `/metrics` although no transition happens (before the
//! fix they froze at the last state change: "22s ago" with a 2 s interval).

mod common;

use common::{fast_checks, lab, wait_ready, wait_status};
use std::time::Duration;

/// (at_ms, latency_ms) of every check in `/status.json`, by service and real.
fn checks(json: &str) -> Vec<(String, String, u64, f64)> {
    let v: serde_json::Value = serde_json::from_str(json).expect("status.json");
    let mut out = Vec::new();
    for s in v["services"].as_array().expect("services") {
        for r in s["reals"].as_array().expect("reals") {
            for c in r["checks"].as_array().expect("checks") {
                assert_eq!(c["passing"], true, "a lab check fails: {c}");
                out.push((
                    s["name"].as_str().unwrap_or_default().to_string(),
                    r["addr"].as_str().unwrap_or_default().to_string(),
                    c["at_ms"].as_u64().expect("at_ms"),
                    c["latency_ms"].as_f64().expect("latency_ms"),
                ));
            }
        }
    }
    out
}

/// `vc5_check_time_seconds` samples of `/metrics`, in order.
fn check_times(metrics: &str) -> Vec<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("vc5_check_time_seconds{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().expect("a number"))
        .collect()
}

#[test]
fn a_steady_checks_last_run_and_latency_move_on() {
    let lab = lab();
    lab.write_config_text(&fast_checks(&lab)).unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);
    let read = |path: &str| {
        lab.curl("lb1", &format!("http://127.0.0.1:8080{path}"), &[])
            .unwrap()
    };

    let (s1, m1) = (
        checks(&read("/status.json")),
        check_times(&read("/metrics")),
    );
    // Checks run every second, the status is rebuilt every two: time must
    // pass (deliberately a fixed wait) for the runs to move on.
    std::thread::sleep(Duration::from_millis(4500));
    let (s2, m2) = (
        checks(&read("/status.json")),
        check_times(&read("/metrics")),
    );
    assert_eq!(s1.len(), 6, "{s1:?}");
    assert_eq!(s1.len(), s2.len());
    for (a, b) in s1.iter().zip(&s2) {
        assert_eq!((&a.0, &a.1), (&b.0, &b.1));
        assert!(
            b.2 >= a.2 + 2000,
            "{} {}: last run at {} then {}: frozen",
            a.0,
            a.1,
            a.2,
            b.2
        );
    }
    // Each run measures its own latency: they cannot all repeat exactly.
    assert!(
        s1.iter().zip(&s2).any(|(a, b)| a.3 != b.3),
        "latencies unchanged: {s1:?} {s2:?}"
    );
    assert_eq!(m1.len(), 6, "{m1:?}");
    for (a, b) in m1.iter().zip(&m2) {
        assert!(b - a >= 2.0, "vc5_check_time_seconds {a} then {b}");
    }
    vc5d.terminate(Duration::from_secs(10)).unwrap();
}

/// web4 with two checks, one passing (`ok`: /health) and one failing (`bad`:
/// a path the lab's httpd answers 404), of which one must pass; `order`
/// lists them, each with `timing`.
fn two_checks(lab: &vc5_testkit::lab::Lab, order: [&str; 2], timing: &str) -> String {
    let line = |name: &str| {
        let path = if name == "ok" { "/health" } else { "/missing" };
        format!("      - {{name: {name}, type: http, port: 80, path: {path}, {timing}}}\n")
    };
    let cfg = fast_checks(lab);
    let web4 = cfg.find("name: web4").expect("web4");
    let at = cfg[web4..].find("      - {name: health").expect("check") + web4;
    let end = cfg[at..].find('\n').expect("line end") + at + 1;
    let mut cfg = cfg;
    cfg.replace_range(at..end, &format!("{}{}", line(order[0]), line(order[1])));
    cfg.replace(
        "need: 1\n    checks:\n      - {name: ok",
        "need: 1\n    quorum: 1\n    checks:\n      - {name: ok",
    )
}

/// (check name, passing) of every check of web4's reals in `/status.json`.
fn web4_checks(v: &serde_json::Value) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for s in v["services"].as_array().expect("services") {
        if s["name"] != "web4" {
            continue;
        }
        for r in s["reals"].as_array().expect("reals") {
            for c in r["checks"].as_array().expect("checks") {
                out.push((
                    c["name"].as_str().unwrap_or_default().to_string(),
                    c["passing"] == true,
                ));
            }
        }
    }
    out
}

/// A reload that swaps a passing and a failing check (and changes their
/// timing, as an edit of both would) keeps each one's own state: before the
/// fix, checks were known by position and the passing one took the failing
/// one's state (and the reverse) for up to rise × interval.
#[test]
fn swapping_checks_on_reload_keeps_each_ones_state() {
    let lab = lab();
    let before = "interval: 1s, timeout: 500ms, rise: 3, fall: 3";
    lab.write_config_text(&two_checks(&lab, ["ok", "bad"], before))
        .unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);
    let status = || {
        let text = lab
            .curl("lb1", "http://127.0.0.1:8080/status.json", &[])
            .unwrap();
        web4_checks(&serde_json::from_str(&text).expect("status.json"))
    };
    let expect_right = |seen: &[(String, bool)], when: &str| {
        assert_eq!(seen.len(), 6, "{when}: {seen:?}");
        for (name, passing) in seen {
            assert_eq!(*passing, name == "ok", "{when}: {seen:?}");
        }
    };
    expect_right(&status(), "before the reload");

    let after = "interval: 900ms, timeout: 500ms, rise: 3, fall: 3";
    lab.write_config_text(&two_checks(&lab, ["bad", "ok"], after))
        .unwrap();
    vc5d.signal(libc::SIGHUP).unwrap();
    // The reload is in force once the status lists web4's checks in the new
    // order (it is published as soon as the new configuration is programmed).
    wait_status(
        &lab,
        "lb1",
        "reloaded (web4's checks in the new order)",
        Duration::from_secs(10),
        |st| web4_checks(st).first().is_some_and(|c| c.0 == "bad"),
    );
    // Long enough for carried states to show (rise × interval is 2.7 s);
    // a sample every 250 ms.
    for i in 0..12 {
        let seen = status();
        // The order follows the new configuration.
        assert_eq!(seen[0].0, "bad", "{seen:?}");
        expect_right(&seen, &format!("{} ms after the reload", i * 250));
        std::thread::sleep(Duration::from_millis(250));
    }
    vc5d.terminate(Duration::from_secs(10)).unwrap();
}
