//! (d) The built-in speaker against real routers: BIRD, FRR (bgpd) and
//! GoBGP, IPv4 and IPv6 VIPs announced and withdrawn, checked in each
//! router's RIB through its own CLI.

mod common;

use std::time::Duration;

use common::*;
use vc5_bird_bridge::bgp::fsm::State;
use vc5_bird_bridge::{Announcer, AnnouncerConfig, Mode};
use vc5_testkit::bird::{Frr, Gobgp};

/// Starts the announcer in lb (no BIRD there: BGP mode) and runs `check`.
fn speaker_cfg(lab: &Lab) -> AnnouncerConfig {
    let mut cfg = lab.announcer_config(vec![ip(RT4)]);
    cfg.communities = vec![(65000, 1)];
    cfg.med = Some(5);
    cfg.local_pref = Some(300);
    cfg
}

#[test]
fn speaker_with_bird_router() {
    let lab = Lab::new("sp-bird");
    let rt = lab.router_bird();
    // A socket that answers garbage where BIRD's should be: detected, reported,
    // and the speaker used instead.
    let fake = std::os::unix::net::UnixListener::bind(lab.path("lb.ctl")).expect("bind");
    let garbage = std::thread::spawn(move || {
        for s in fake.incoming().take(1) {
            use std::io::Write;
            let _ = s.and_then(|mut s| s.write_all(b"garbage\n"));
        }
    });
    lab.lb
        .block_on(async {
            let (h, mut st) = Announcer::start(speaker_cfg(&lab), set(&[])).expect("start");
            let s = wait_status(&mut st, "BGP mode", |s| s.mode == Mode::Bgp).await;
            let why = s.bird.last_error.clone().expect("why not BIRD");
            assert!(why.contains("not a BIRD control socket"), "{why}");

            let g = h.set_vips(set(&[VIP4, VIP6]));
            let s = wait_status(&mut st, "announced", |s| {
                s.applied_generation == Some(g) && s.announced == set(&[VIP4, VIP6])
            })
            .await;
            let p = &s.peers[0];
            assert_eq!(p.state, State::Established);
            assert_eq!(p.remote_as, Some(RT_AS));
            assert_eq!(p.hold_time, Some(9), "min(90, router's 9)");
            assert!(s.apply_latency.is_some());
            assert!(eventually(ROUTE_WAIT, || rt.has_route(&host(VIP4), Some(LB4))).await);
            assert!(eventually(ROUTE_WAIT, || rt.has_route(&host(VIP6), Some(LB6))).await);
            let all = rt
                .birdc(&format!("show route {} all", host(VIP4)))
                .expect("birdc");
            assert!(all.contains("BGP.community: (65000,1)"), "{all}");
            assert!(all.contains("BGP.med: 5"), "{all}");
            assert!(all.contains("BGP.as_path: 65000"), "{all}");

            // Withdraw one family, then the other.
            h.set_vips(set(&[VIP6]));
            assert!(eventually(ROUTE_WAIT, || !rt.has_route(&host(VIP4), None)).await);
            assert!(rt.has_route(&host(VIP6), Some(LB6)));
            h.set_vips(set(&[]));
            assert!(eventually(ROUTE_WAIT, || !rt.has_route(&host(VIP6), None)).await);

            // Shutdown: withdrawals, then Cease/Administrative Shutdown.
            h.set_vips(set(&[VIP4]));
            assert!(eventually(ROUTE_WAIT, || rt.has_route(&host(VIP4), Some(LB4))).await);
            let s = h.shutdown().await;
            assert_eq!(s.mode, Mode::Stopped);
            assert!(
                !rt.has_route(&host(VIP4), None),
                "withdrawn before shutdown returned"
            );
            let proto = rt.birdc("show protocols all lb").expect("birdc");
            assert!(proto.contains("Administrative shutdown"), "{proto}");
        })
        .expect("namespace");
    garbage.join().expect("garbage thread");
}

#[test]
fn speaker_with_frr() {
    let lab = Lab::new("sp-frr");
    let conf = format!(
        "frr defaults datacenter\n\
         hostname rt\n\
         router bgp {RT_AS}\n \
          bgp router-id {RT4}\n \
          no bgp ebgp-requires-policy\n \
          neighbor {LB4} remote-as {LB_AS}\n \
          neighbor {LB4} timers connect 1\n \
          address-family ipv6 unicast\n  \
           neighbor {LB4} activate\n \
          exit-address-family\n"
    );
    let frr = Frr::start(&lab.rt, lab.dir.path(), &conf, RT4).expect("bgpd");
    let rib = |family: &str| {
        frr.vtysh(&format!("show bgp {family} unicast"))
            .unwrap_or_default()
    };
    lab.lb
        .block_on(async {
            let (h, mut st) =
                Announcer::start(speaker_cfg(&lab), set(&[VIP4, VIP6])).expect("start");
            wait_status(&mut st, "Established", |s| {
                s.peers
                    .first()
                    .is_some_and(|p| p.state == State::Established)
                    && s.announced == set(&[VIP4, VIP6])
            })
            .await;
            assert!(
                eventually(ROUTE_WAIT, || rib("ipv4").contains(&host(VIP4))).await,
                "{}",
                rib("ipv4")
            );
            assert!(
                eventually(ROUTE_WAIT, || rib("ipv6").contains(&host(VIP6))).await,
                "{}",
                rib("ipv6")
            );
            let detail = frr
                .vtysh(&format!("show bgp ipv6 unicast {}", host(VIP6)))
                .expect("vtysh");
            assert!(detail.contains(LB6), "IPv6 next hop: {detail}");
            let detail = frr
                .vtysh(&format!("show bgp ipv4 unicast {}", host(VIP4)))
                .expect("vtysh");
            assert!(
                detail.contains("65000:1") && detail.contains("metric 5"),
                "{detail}"
            );

            h.set_vips(set(&[]));
            assert!(eventually(ROUTE_WAIT, || !rib("ipv4").contains(&host(VIP4))).await);
            assert!(eventually(ROUTE_WAIT, || !rib("ipv6").contains(&host(VIP6))).await);
            h.shutdown().await;
            let nb = frr
                .vtysh(&format!("show bgp neighbors {LB4}"))
                .expect("vtysh");
            assert!(
                nb.contains("Administrative Shutdown") || nb.contains("Cease"),
                "{nb}"
            );
        })
        .expect("namespace");
}

fn gobgp_conf(peer_as: u32) -> String {
    format!(
        "[global.config]\n  as = {peer_as}\n  router-id = \"{RT4}\"\n  local-address-list = [\"{RT4}\"]\n\
         [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{LB4}\"\n    peer-as = {LB_AS}\n\
           [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n\
           [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv6-unicast\"\n"
    )
}

#[test]
fn speaker_with_gobgp_ebgp() {
    let lab = Lab::new("sp-gobgp");
    let gobgp = Gobgp::start(&lab.rt, lab.dir.path(), &gobgp_conf(RT_AS)).expect("gobgpd");
    let rib = |family: &str| {
        gobgp
            .gobgp(&["global", "rib", "-a", family])
            .unwrap_or_default()
    };
    lab.lb
        .block_on(async {
            let (h, mut st) =
                Announcer::start(speaker_cfg(&lab), set(&[VIP4, VIP6])).expect("start");
            wait_status(&mut st, "announced", |s| s.announced == set(&[VIP4, VIP6])).await;
            assert!(
                eventually(ROUTE_WAIT, || rib("ipv4").contains(&host(VIP4))).await,
                "{}",
                rib("ipv4")
            );
            assert!(
                eventually(ROUTE_WAIT, || rib("ipv6").contains(&host(VIP6))).await,
                "{}",
                rib("ipv6")
            );
            let v4 = rib("ipv4");
            assert!(
                v4.contains(LB4) && v4.contains("65000:1") && v4.contains("Med: 5"),
                "{v4}"
            );
            assert!(!v4.contains("LocalPref"), "no LOCAL_PREF on eBGP: {v4}");
            assert!(rib("ipv6").contains(LB6));

            h.set_vips(set(&[VIP4]));
            assert!(eventually(ROUTE_WAIT, || !rib("ipv6").contains(&host(VIP6))).await);
            h.set_vips(set(&[]));
            assert!(eventually(ROUTE_WAIT, || !rib("ipv4").contains(&host(VIP4))).await);
            h.shutdown().await;
        })
        .expect("namespace");
}

#[test]
fn speaker_with_gobgp_ibgp_sends_local_pref() {
    let lab = Lab::new("sp-gobgp-i");
    let gobgp = Gobgp::start(&lab.rt, lab.dir.path(), &gobgp_conf(LB_AS)).expect("gobgpd");
    let rib = || {
        gobgp
            .gobgp(&["global", "rib", "-a", "ipv4"])
            .unwrap_or_default()
    };
    lab.lb
        .block_on(async {
            let (h, mut st) = Announcer::start(speaker_cfg(&lab), set(&[VIP4])).expect("start");
            let s = wait_status(&mut st, "announced", |s| s.announced == set(&[VIP4])).await;
            assert_eq!(s.peers[0].remote_as, Some(LB_AS));
            assert!(
                eventually(ROUTE_WAIT, || rib().contains("LocalPref: 300")).await,
                "{}",
                rib()
            );
            h.shutdown().await;
            assert!(eventually(Duration::from_secs(5), || !rib().contains(&host(VIP4))).await);
        })
        .expect("namespace");
}
