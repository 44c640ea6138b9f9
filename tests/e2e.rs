//! End to end in the lab: a client behind a router, vc5d with its XDP
//! program on a load balancer, three reals with the VIPs on `lo`. Real
//! HTTP over real veths; the kernel's XDP in native and in generic mode.

mod common;

use common::{lab, spread, wait_ready, wait_status};
use std::net::IpAddr;
use std::time::Duration;

fn balances(mode: &str) {
    let lab = lab();
    if mode == "native" {
        lab.prepare_native_xdp().unwrap();
    }
    let mut vc5d = lab.start_vc5d("lb1", mode, &[]).unwrap();
    wait_ready(&lab, &mut vc5d);
    let want = if mode == "native" {
        "xdp"
    } else {
        "xdpgeneric"
    };
    assert_eq!(lab.xdp_mode("lb1", "eth0").unwrap().as_deref(), Some(want));
    for vip in lab.vips() {
        let n = 240;
        let s = spread(&lab, vip, n);
        assert_eq!(s.len(), 3, "{vip}: every real answers: {s:?}");
        for (real, c) in &s {
            assert!(*c >= n / 10, "{vip}: {real} got only {c} of {n}: {s:?}");
        }
    }
    let status = vc5d.terminate(Duration::from_secs(10)).unwrap();
    assert!(
        status.success(),
        "vc5d stopped cleanly: {status}\n{}",
        vc5d.log_text()
    );
}

#[test]
fn balances_ipv4_and_ipv6_in_native_mode() {
    balances("native");
}

#[test]
fn balances_ipv4_and_ipv6_in_generic_mode() {
    balances("generic");
}

#[test]
fn a_long_download_survives_kill_9_and_restart_of_vc5d() {
    let lab = lab();
    lab.prepare_native_xdp().unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "native", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);

    // 12 MB at 2 MB/s (paced by the real): about six seconds, across the
    // crash and restart.
    let bytes = 12_000_000;
    let mut download = lab
        .start_transfer(lab.vip4.into(), bytes, 2_000_000, None)
        .unwrap();
    let real = download.real(Duration::from_secs(10)).unwrap();
    // Lets the download run a while: the crash comes in its middle.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(download.running(), "the download ended before the crash");
    vc5d.kill().unwrap();
    vc5d.wait().unwrap();
    assert_eq!(
        lab.xdp_mode("lb1", "eth0").unwrap().as_deref(),
        Some("xdp"),
        "the pinned link keeps XDP attached without vc5d"
    );
    // While no vc5d runs, new connections are balanced too.
    let s = spread(&lab, lab.vip6.into(), 30);
    assert_eq!(s.values().sum::<usize>(), 30);
    // The download goes on a while longer with no vc5d at all.
    std::thread::sleep(Duration::from_millis(500));

    let mut again = lab.start_vc5d("lb1", "native", &[]).unwrap();
    wait_ready(&lab, &mut again);
    assert!(
        again.log_text().contains("reused=true"),
        "the restart took over the pinned link:\n{}",
        again.log_text()
    );

    assert!(download.running(), "the download ended before the restart");
    let end = download.finish(Duration::from_secs(60)).unwrap();
    assert!(end.ok && end.received == bytes as u64, "{end:?}");
    assert_eq!(
        end.sha256,
        lab.reference_sha256(&real, bytes).unwrap(),
        "every byte arrived, in order"
    );
    again.terminate(Duration::from_secs(10)).unwrap();
}

#[test]
fn reload_applies_a_good_configuration_and_refuses_a_bad_one() {
    let lab = lab();
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);
    let vip = IpAddr::V4(lab.vip4);

    // A broken file: refused, and the running configuration stays.
    lab.write_config_text("services:\n  - name: x\n    addr: 192.0.2.80\n    port: 80\n    real: nosuchgroup\nreals: {}\n")
        .unwrap();
    vc5d.signal(libc::SIGHUP).unwrap();
    // The status counts the refusal and says why; the services in it stay
    // as they were, which is the point.
    wait_status(&lab, "lb1", "refused", Duration::from_secs(10), |st| {
        st["reloads"]["refused"] == 1
    });
    let st: serde_json::Value = serde_json::from_str(
        &lab.curl("lb1", "http://127.0.0.1:8080/status.json", &[])
            .unwrap(),
    )
    .unwrap();
    let last = &st["reloads"]["last"];
    assert_eq!(last["ok"], false, "{last}");
    let why = last["error"].as_str().unwrap_or_default();
    assert!(
        why.contains(":5:11: "),
        "refusal names line and column: {why}"
    );
    assert!(
        vc5d.log_text().contains("reload refused"),
        "the refusal is logged too:\n{}",
        vc5d.log_text()
    );
    assert_eq!(
        spread(&lab, vip, 90).len(),
        3,
        "still balancing over three reals"
    );

    // A good one without real3: real3 takes no new connections.
    let cfg = lab
        .default_config()
        .replace(&format!(", {}]", lab.addr4("real3")), "]");
    assert!(!cfg.contains(&lab.addr4("real3").to_string()));
    lab.write_config_text(&cfg).unwrap();
    vc5d.signal(libc::SIGHUP).unwrap();
    // The status is published once the new configuration is programmed.
    let real3 = lab.addr4("real3").to_string();
    wait_status(
        &lab,
        "lb1",
        "reloaded without real3",
        Duration::from_secs(10),
        |st| {
            let services = st["services"].as_array().cloned().unwrap_or_default();
            !services.is_empty()
                && services.iter().all(|s| {
                    (s["reals"].as_array().into_iter().flatten())
                        .all(|r| r["addr"].as_str() != Some(real3.as_str()))
                })
                && st["reloads"]["done"] == 1
                && st["reloads"]["last"]["ok"] == true
        },
    );
    let s = spread(&lab, vip, 120);
    assert!(!s.contains_key("real3"), "real3 was removed: {s:?}");
    assert_eq!(s.len(), 2, "{s:?}");
    vc5d.terminate(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_real_without_a_mac_gets_no_traffic() {
    let lab = lab();
    // Nobody answers ARP for .99 on the LAN.
    let cfg = lab.default_config().replace(
        &format!("{}]", lab.addr4("real3")),
        &format!("{}, 203.0.113.99]", lab.addr4("real3")),
    );
    assert!(cfg.contains("203.0.113.99"));
    lab.write_config_text(&cfg).unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);
    let s = spread(&lab, IpAddr::V4(lab.vip4), 150);
    assert_eq!(
        s.values().sum::<usize>(),
        150,
        "no request was lost to the unresolved real"
    );
    assert_eq!(s.len(), 3, "{s:?}");
    assert!(
        vc5d.log_text().contains("not resolved"),
        "{}",
        vc5d.log_text()
    );
    vc5d.terminate(Duration::from_secs(10)).unwrap();
}
