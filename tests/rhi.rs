//! Route health injection end to end, against a real BIRD on the lab's
//! router (`bird-examples/router.conf`, ECMP over the load balancers):
//! (a) vc5d without a local BIRD announces with its own BGP speaker, and
//! withdraws once every real is down; (b) through a local BIRD fed over its
//! control socket (`bird-examples/lb.conf`); (c) that BIRD killed and
//! restarted: the VIP comes back without touching vc5d; and a stopping
//! vc5d withdraws first.

mod common;

use common::{fast_checks, lab_with, rhi_mode, spread, wait_ready, wait_status, wait_vc5d_ready};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use vc5_testkit::lab::Lab;

/// Waits until the router's `birdc show route for NET` has a route from
/// each of `via` (load balancers, which name the router's BGP sessions);
/// `via` empty means: no route at all.
fn wait_route(lab: &Lab, net: &str, via: &[String], timeout: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let out = lab
            .birdc("router", &format!("show route for {net} all"))
            .unwrap_or_default();
        let ok = if via.is_empty() {
            !out.contains("BGP")
        } else {
            via.iter().all(|lb| out.contains(&format!("[{lb} ")))
        };
        if ok {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < timeout,
            "router's route for {net} never matched {via:?}:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn vc5d_own_speaker_announces_to_a_bird_router_with_ecmp_and_withdraws() {
    let mut lab = lab_with(2);
    let _router = lab.start_router_bird().unwrap();
    let mut vc5ds = Vec::new();
    for lb in ["lb1", "lb2"] {
        let cfg = lab
            .rhi_config(lb)
            .replace(&lab.default_config(), &fast_checks(&lab));
        lab.write_config_for(lb, &cfg).unwrap();
        let v = lab.start_vc5d(lb, "generic", &[]).unwrap();
        wait_vc5d_ready(&lab, lb, Duration::from_secs(20));
        wait_status(
            &lab,
            lb,
            "announcing with its own speaker",
            Duration::from_secs(20),
            |s| rhi_mode(s) == "bgp",
        );
        vc5ds.push(v);
    }
    let lbs = vec!["lb1".to_string(), "lb2".to_string()];
    let (vip4, vip6) = (format!("{}/32", lab.vip4), format!("{}/128", lab.vip6));
    wait_route(&lab, &vip4, &lbs, Duration::from_secs(30));
    wait_route(&lab, &vip6, &lbs, Duration::from_secs(30));
    // ECMP in the router's kernel: one next hop per load balancer.
    let kernel = lab.run("router", &["ip", "route", "show", &vip4]).unwrap();
    assert_eq!(kernel.matches("nexthop via").count(), 2, "{kernel}");
    wait_ready(&lab, &mut vc5ds[0]);
    for vip in lab.vips() {
        let s = spread(&lab, vip, 90);
        assert_eq!(s.values().sum::<usize>(), 90, "{vip}: {s:?}");
    }

    // Every real down: the VIPs are withdrawn by both load balancers.
    for r in lab.reals() {
        lab.stop_httpd(&r).unwrap();
    }
    wait_route(&lab, &vip4, &[], Duration::from_secs(15));
    wait_route(&lab, &vip6, &[], Duration::from_secs(15));
    for r in lab.reals() {
        lab.start_httpd(&r).unwrap();
    }
    wait_route(&lab, &vip4, &lbs, Duration::from_secs(15));

    // A stopping vc5d withdraws first: lb2 leaves the ECMP group.
    let mut lb2 = vc5ds.pop().unwrap();
    let status = lb2.terminate(Duration::from_secs(15)).unwrap();
    assert!(status.success());
    assert!(
        lb2.log_text().contains("every VIP withdrawn"),
        "{}",
        lb2.log_text()
    );
    wait_route(&lab, &vip4, &lbs[..1], Duration::from_secs(5));
    let out = lab
        .birdc("router", &format!("show route for {vip4} all"))
        .unwrap();
    assert!(!out.contains("[lb2 "), "{out}");
    vc5ds[0].terminate(Duration::from_secs(15)).unwrap();
}

#[test]
fn through_a_local_bird_which_may_restart_without_vc5d_noticing() {
    let mut lab = lab_with(1);
    let _router = lab.start_router_bird().unwrap();
    let mut bird = lab.start_lb_bird("lb1").unwrap();
    let cfg = lab
        .rhi_config("lb1")
        .replace(&lab.default_config(), &fast_checks(&lab));
    lab.write_config_for("lb1", &cfg).unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    wait_status(
        &lab,
        "lb1",
        "announcing through BIRD",
        Duration::from_secs(20),
        |s| rhi_mode(s) == "bird",
    );
    let lb1 = vec!["lb1".to_string()];
    let vip4 = format!("{}/32", lab.vip4);
    wait_route(&lab, &vip4, &lb1, Duration::from_secs(30));
    wait_route(
        &lab,
        &format!("{}/128", lab.vip6),
        &lb1,
        Duration::from_secs(30),
    );
    wait_ready(&lab, &mut vc5d);
    assert_eq!(
        spread(&lab, IpAddr::V4(lab.vip4), 60)
            .values()
            .sum::<usize>(),
        60
    );

    // Every real down: withdrawn through BIRD.
    for r in lab.reals() {
        lab.stop_httpd(&r).unwrap();
    }
    wait_route(&lab, &vip4, &[], Duration::from_secs(15));
    for r in lab.reals() {
        lab.start_httpd(&r).unwrap();
    }
    wait_route(&lab, &vip4, &lb1, Duration::from_secs(15));

    // vc5d crashes and restarts: BIRD keeps the VIP announced throughout,
    // since a starting vc5d announces only what its first programming
    // decided (and the data plane forwards meanwhile).
    vc5d.kill().unwrap();
    vc5d.wait().unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    // Watched for 8 s (deliberately a fixed time): the VIP must stay.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(8) {
        let out = lab
            .birdc("router", &format!("show route for {vip4}"))
            .unwrap_or_default();
        assert!(
            out.contains("[lb1 "),
            "the VIP flapped during vc5d's restart:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_vc5d_ready(&lab, "lb1", Duration::from_secs(10));

    // BIRD dies and comes back: vc5d reconnects and re-applies, untouched.
    bird.kill().unwrap();
    bird.wait().unwrap();
    wait_route(&lab, &vip4, &[], Duration::from_secs(30));
    let _bird = lab.start_lb_bird("lb1").unwrap();
    wait_route(&lab, &vip4, &lb1, Duration::from_secs(30));
    assert!(vc5d.try_wait().unwrap().is_none(), "vc5d kept running");
    vc5d.terminate(Duration::from_secs(15)).unwrap();
    assert!(
        vc5d.log_text().contains("every VIP withdrawn"),
        "{}",
        vc5d.log_text()
    );
    wait_route(&lab, &vip4, &[], Duration::from_secs(5));
}
