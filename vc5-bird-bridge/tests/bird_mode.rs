//! BIRD mode against real BIRDs: a BIRD on the load balancer driven over its
//! control socket, peering by eBGP with a BIRD router.

mod common;

use std::time::Duration;

use common::*;
use vc5_bird_bridge::{Announcer, Mode};

/// (a) set_vips makes the VIPs appear at the router via the LB, and the
/// empty set withdraws them; (shutdown) withdraws everything.
#[test]
fn bird_mode_announces_and_withdraws() {
    let lab = Lab::new("bm-a");
    let rt = lab.router_bird();
    let _lb = lab.lb_bird(true);
    lab.lb
        .block_on(async {
            let (h, mut st) =
                Announcer::start(lab.announcer_config(vec![]), set(&[])).expect("start");
            wait_status(&mut st, "BIRD mode", |s| {
                s.mode == Mode::Bird && s.bird.connected
            })
            .await;

            let g = h.set_vips(set(&[VIP4, VIP6]));
            let s = wait_status(&mut st, "applied", |s| s.applied_generation == Some(g)).await;
            assert_eq!(s.announced, set(&[VIP4, VIP6]));
            assert!(s.apply_latency.is_some_and(|d| d < Duration::from_secs(5)));
            assert!(s.in_sync());
            assert!(eventually(ROUTE_WAIT, || rt.has_route(&host(VIP4), Some(LB4))).await);
            assert!(eventually(ROUTE_WAIT, || rt.has_route(&host(VIP6), Some(LB6))).await);

            // Idempotent: the same set is the same generation.
            assert_eq!(h.set_vips(set(&[VIP4, VIP6])), g);

            let g = h.set_vips(set(&[]));
            wait_status(&mut st, "withdrawn", |s| s.applied_generation == Some(g)).await;
            assert!(eventually(ROUTE_WAIT, || !rt.has_route(&host(VIP4), None)).await);
            assert!(eventually(ROUTE_WAIT, || !rt.has_route(&host(VIP6), None)).await);

            // The status lists BIRD's own BGP session.
            let s = wait_status(&mut st, "protocols", |s| {
                s.bird
                    .protocols
                    .iter()
                    .any(|p| p.name == "upstream" && p.proto == "BGP")
            })
            .await;
            assert_eq!(
                s.bird.version.as_deref().map(|v| v.starts_with("2.")),
                Some(true)
            );

            // Shutdown withdraws everything before returning.
            let g = h.set_vips(set(&[VIP4]));
            wait_status(&mut st, "applied", |s| s.applied_generation == Some(g)).await;
            assert!(eventually(ROUTE_WAIT, || rt.has_route(&host(VIP4), Some(LB4))).await);
            let s = h.shutdown().await;
            assert_eq!(s.mode, Mode::Stopped);
            assert!(s.announced.is_empty());
            let inc = std::fs::read_to_string(lab.path("vc5/bird-vips.conf")).expect("include");
            assert!(
                !inc.contains("route "),
                "empty include after shutdown:\n{inc}"
            );
            assert!(eventually(ROUTE_WAIT, || !rt.has_route(&host(VIP4), None)).await);
            // Again is harmless.
            assert_eq!(h.shutdown().await.mode, Mode::Stopped);
        })
        .expect("namespace");
}

/// (b) BIRD killed and restarted: the announcer reconnects and the desired
/// VIPs (changed while BIRD was down) are back, with the same Announcer.
#[test]
fn bird_restart_is_reconciled() {
    let lab = Lab::new("bm-b");
    let rt = lab.router_bird();
    let mut lb = lab.lb_bird(true);
    lab.lb
        .block_on(async {
            let (h, mut st) =
                Announcer::start(lab.announcer_config(vec![]), set(&[])).expect("start");
            wait_status(&mut st, "BIRD mode", |s| s.mode == Mode::Bird).await;
            let g = h.set_vips(set(&[VIP4]));
            wait_status(&mut st, "applied", |s| s.applied_generation == Some(g)).await;
            assert!(eventually(ROUTE_WAIT, || rt.has_route(&host(VIP4), Some(LB4))).await);

            lb.kill();
            wait_status(&mut st, "disconnected", |s| !s.bird.connected).await;
            assert!(eventually(ROUTE_WAIT, || !rt.has_route(&host(VIP4), None)).await);
            // Changed while BIRD is down.
            let g = h.set_vips(set(&[VIP4B]));
            tokio::time::sleep(Duration::from_millis(300)).await;
            lb.restart().expect("BIRD restarts");

            let s = wait_status(&mut st, "re-applied", |s| {
                s.bird.connected && s.bird.connections >= 2 && s.applied_generation == Some(g)
            })
            .await;
            assert_eq!(s.mode, Mode::Bird, "a restart does not flip modes");
            assert!(eventually(ROUTE_WAIT, || rt.has_route(&host(VIP4B), Some(LB4))).await);
            assert!(!rt.has_route(&host(VIP4), None));
            h.shutdown().await;
        })
        .expect("namespace");
}

/// (c) The operator's bird.conf breaks: vc5's configure is rejected with
/// BIRD's position, reported in the status, BIRD keeps running its old
/// configuration; once fixed, vc5's retry gets the new VIPs in.
#[test]
fn rejected_configuration_is_reported_and_retried() {
    let lab = Lab::new("bm-c");
    let rt = lab.router_bird();
    let mut lb = lab.lb_bird(true);
    lab.lb
        .block_on(async {
            let (h, mut st) =
                Announcer::start(lab.announcer_config(vec![]), set(&[])).expect("start");
            wait_status(&mut st, "BIRD mode", |s| s.mode == Mode::Bird).await;
            let g1 = h.set_vips(set(&[VIP4]));
            wait_status(&mut st, "applied", |s| s.applied_generation == Some(g1)).await;
            assert!(eventually(ROUTE_WAIT, || rt.has_route(&host(VIP4), Some(LB4))).await);

            let good = std::fs::read_to_string(lb.config_path()).expect("config");
            std::fs::write(
                lb.config_path(),
                format!("{good}protocol static oops {{ ipv4 }}\n"),
            )
            .expect("break config");
            let g2 = h.set_vips(set(&[VIP4, VIP4B]));
            let s = wait_status(&mut st, "rejection", |s| s.bird.error_position.is_some()).await;
            let p = s.bird.error_position.clone().expect("position");
            assert_eq!(p.file, "lb.conf");
            assert!(p.line > 1 && p.column > 1, "{p:?}");
            let err = s.bird.last_error.clone().expect("error");
            assert!(err.contains("8002"), "{err}");
            assert!(s.last_error.is_some());
            assert_eq!(s.applied_generation, Some(g1), "not applied");
            assert_eq!(s.announced, set(&[VIP4]), "BIRD still runs the old set");
            assert!(lb.running(), "BIRD keeps running");
            assert!(rt.has_route(&host(VIP4), Some(LB4)));
            assert!(!rt.has_route(&host(VIP4B), None));

            std::fs::write(lb.config_path(), good).expect("fix config");
            let s = wait_status(&mut st, "retried", |s| s.applied_generation == Some(g2)).await;
            assert!(s.bird.last_error.is_none() && s.bird.error_position.is_none());
            assert!(eventually(ROUTE_WAIT, || rt.has_route(&host(VIP4B), Some(LB4))).await);
            h.shutdown().await;
        })
        .expect("namespace");
}

/// (c) A bird.conf that does not include vc5's file: BIRD accepts the
/// configure, but vc5 notices its protocols are missing and says so.
#[test]
fn bird_conf_without_the_include_is_reported() {
    let lab = Lab::new("bm-c2");
    let mut lb = lab.lb_bird(false);
    lab.lb
        .block_on(async {
            let (h, mut st) =
                Announcer::start(lab.announcer_config(vec![]), set(&[VIP4])).expect("start");
            let s = wait_status(&mut st, "error", |s| {
                s.bird
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("does not include"))
            })
            .await;
            assert_eq!(s.mode, Mode::Bird);
            assert!(s.announced.is_empty());
            assert!(lb.running());
            h.shutdown().await;
        })
        .expect("namespace");
}

/// BIRD gone for longer than the grace period: the built-in speaker takes
/// over towards the same router; BIRD back: BIRD takes over again.
#[test]
fn falls_back_to_the_speaker_and_back() {
    let lab = Lab::new("bm-f");
    let rt = lab.router_bird();
    let mut lb = lab.lb_bird(true);
    lab.lb
        .block_on(async {
            let mut cfg = lab.announcer_config(vec![ip(RT4)]);
            cfg.bird_grace = Duration::from_secs(1);
            let (h, mut st) = Announcer::start(cfg, set(&[])).expect("start");
            wait_status(&mut st, "BIRD mode", |s| s.mode == Mode::Bird).await;
            h.set_vips(set(&[VIP4, VIP6]));
            assert!(eventually(ROUTE_WAIT, || rt.has_route(&host(VIP4), Some(LB4))).await);

            lb.kill();
            let _ = std::fs::remove_file(lb.socket());
            wait_status(&mut st, "BGP mode", |s| s.mode == Mode::Bgp).await;
            let s = wait_status(&mut st, "speaker announces", |s| {
                s.announced == set(&[VIP4, VIP6])
            })
            .await;
            assert_eq!(s.peers.len(), 1);
            assert!(eventually(ROUTE_WAIT, || rt.has_route(&host(VIP4), Some(LB4))).await);
            assert!(eventually(ROUTE_WAIT, || rt.has_route(&host(VIP6), Some(LB6))).await);

            lb.restart().expect("BIRD back");
            wait_status(&mut st, "BIRD mode again", |s| {
                s.mode == Mode::Bird && s.bird.connected && s.peers.is_empty()
            })
            .await;
            assert!(
                eventually(ROUTE_WAIT, || {
                    rt.birdc("show protocols lb")
                        .is_ok_and(|o| o.contains("Established"))
                        && rt.has_route(&host(VIP4), Some(LB4))
                })
                .await
            );
            h.shutdown().await;
        })
        .expect("namespace");
}
