//! End to end over VLANs: four reals on VLANs 10 and 20 behind the load
//! balancer's `eth0` as a trunk, with `vlans` in the configuration. The
//! kernel has no 8021q module, so user-space relays tag and untag (one in
//! the switch, one in the load balancer for its own ARP, NDP and health
//! checks); the XDP program tags each client frame with its real's VLAN and
//! sends it back out of the trunk in native mode.

mod common;

use common::{spread, wait_ready, wait_status};
use std::time::Duration;
use vc5_testkit::lab::{Lab, LabOptions, VLANS};

/// Fresh connections to both VIPs reach all four reals, on both VLANs,
/// each seeing the client's address; the status names each real's VLAN; the
/// switch's relay carried the frames onto each VLAN.
#[test]
fn reals_on_two_vlans_behind_one_trunk() {
    let lab = Lab::new(LabOptions {
        vc5d: Some(env!("CARGO_BIN_EXE_vc5d").into()),
        vlan_reals: 4,
        ..LabOptions::default()
    })
    .expect("building the lab (needs root)");
    lab.prepare_native_xdp().unwrap();
    lab.write_config_text(&lab.vlan_config()).unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "native", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);
    let want: Vec<(String, u16)> = lab
        .vlan_reals()
        .iter()
        .map(|r| (lab.addr4(r).to_string(), lab.vlan_of(r)))
        .collect();
    wait_status(
        &lab,
        "lb1",
        "every real on its VLAN",
        Duration::from_secs(20),
        |st| {
            let services = st["services"].as_array().cloned().unwrap_or_default();
            !services.is_empty()
                && services.iter().all(|s| {
                    want.iter().all(|(addr, vlan)| {
                        (s["reals"].as_array().into_iter().flatten()).any(|r| {
                            r["addr"] == addr.as_str() && r["healthy"] == true && r["vlan"] == *vlan
                        })
                    })
                })
        },
    );
    let switch = lab.relay("switch");
    let before: Vec<u64> = VLANS
        .iter()
        .map(|v| switch.stats().unwrap().to_access(*v))
        .collect();
    for vip in lab.vips() {
        let n = 80;
        let s = spread(&lab, vip, n);
        assert_eq!(s.len(), 4, "{vip}: every VLAN real answers: {s:?}");
        for (real, c) in &s {
            assert!(real.starts_with("vreal"), "{s:?}");
            assert!(*c >= n / 10, "{vip}: {real} got only {c} of {n}: {s:?}");
        }
    }
    // The client's frames went onto both VLANs through the switch's relay
    // (at least SYN, ACK, request and FIN of 160 connections, half per VLAN
    // or so); its counters reach the stats file within 50 ms.
    let stats = switch
        .wait_for(Duration::from_secs(5), |s| {
            VLANS
                .iter()
                .zip(&before)
                .all(|(v, b)| s.to_access(*v) >= b + 100)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    for v in VLANS {
        assert!(stats.to_trunk(v) > 0, "VLAN {v}: answers came back tagged");
    }
    let status = vc5d.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}\n{}", vc5d.log_text());
}
