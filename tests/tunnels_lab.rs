//! End to end over layer-3 DSR: three reals in a subnet behind the router,
//! reachable from the load balancer only through it, each decapsulating in
//! user space (`vc5-decap`: IPIP, GRE, FOU and GUE into a TUN device that
//! holds the VIPs, since this kernel has no tunnel modules). The XDP program
//! encapsulates in native mode and sends to the router's MAC, which vc5d
//! follows as the reals' gateway.

mod common;

use common::{spread, wait_ready, wait_status};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use vc5_testkit::decap::Method;
use vc5_testkit::lab::{Lab, LabOptions, sha256_file};

fn remote_lab() -> Lab {
    Lab::new(LabOptions {
        vc5d: Some(env!("CARGO_BIN_EXE_vc5d").into()),
        remote_reals: 3,
        ..LabOptions::default()
    })
    .expect("building the lab (needs root)")
}

fn method(name: &str) -> Method {
    Method::ALL
        .into_iter()
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no method {name}"))
}

/// Inner packets the remote reals' tunnel ends delivered for `m`, by outer
/// family: (over IPv4, over IPv6), summed over the reals.
fn delivered(lab: &Lab, m: Method) -> (u64, u64) {
    lab.remote_reals().iter().fold((0, 0), |(v4, v6), r| {
        let s = lab.decap(r).stats().unwrap();
        (
            v4 + s.delivered_outer(m, false),
            v6 + s.delivered_outer(m, true),
        )
    })
}

/// [`delivered`] for every method, once the tunnel ends' counters have
/// settled: each rewrites its stats file within 50 ms of a change, so
/// counters unchanged over 150 ms include every packet sent before.
fn settled(lab: &Lab) -> Vec<(u64, u64)> {
    let read = || -> Vec<(u64, u64)> { Method::ALL.iter().map(|m| delivered(lab, *m)).collect() };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = (read(), Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = read();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_millis(150) {
            return now;
        }
        assert!(Instant::now() < deadline, "tunnel counters never settled");
    }
}

/// Whether every real of every service is healthy and tunnelled by `forward`
/// through the router (its LAN address is their next hop).
fn tunnelled(st: &serde_json::Value, forward: &str, router: &[String]) -> bool {
    let services = st["services"].as_array().cloned().unwrap_or_default();
    !services.is_empty()
        && services.iter().all(|s| {
            s["forward"] == forward
                && (s["reals"].as_array().into_iter().flatten()).all(|r| {
                    r["healthy"] == true
                        && r["forward"] == forward
                        && router.iter().any(|a| r["next_hop"] == a.as_str())
                })
        })
}

/// Many fresh connections to both VIPs over every method, with IPv4 reals
/// (outer IPv4) and, for two methods, IPv6 reals (outer IPv6): spread over
/// the three reals, each seeing the client's address; the reals' tunnel
/// ends show that the method and family carried them. Methods change by
/// reload, so the flows of one never ride another.
#[test]
fn every_tunnel_carries_both_vip_families_to_the_remote_reals() {
    let lab = remote_lab();
    lab.prepare_native_xdp().unwrap();
    let cases = [
        ("ipip", false),
        ("gre", false),
        ("fou", false),
        ("gue", false),
        ("gue", true),
        ("ipip", true),
    ];
    lab.write_config_text(&lab.remote_config(cases[0].0, cases[0].1))
        .unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "native", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);
    let router = [
        lab.addr4("router").to_string(),
        lab.addr6("router").to_string(),
    ];
    for (i, (forward, outer6)) in cases.into_iter().enumerate() {
        if i > 0 {
            lab.write_config_text(&lab.remote_config(forward, outer6))
                .unwrap();
            vc5d.signal(libc::SIGHUP).unwrap();
        }
        wait_status(
            &lab,
            "lb1",
            &format!("tunnelling by {forward}"),
            Duration::from_secs(20),
            |st| st["reloads"]["done"] == i && tunnelled(st, forward, &router),
        );
        let m = method(forward);
        for vip in lab.vips() {
            let all_before = settled(&lab);
            let before = all_before[m as usize];
            let n = 60;
            let s = spread(&lab, vip, n);
            assert_eq!(
                s.len(),
                3,
                "{forward} {vip}: every remote real answers: {s:?}"
            );
            for (real, c) in &s {
                assert!(real.starts_with("remote"), "{s:?}");
                assert!(
                    *c >= n / 10,
                    "{forward} {vip}: {real} got only {c} of {n}: {s:?}"
                );
            }
            let all_after = settled(&lab);
            let after = all_after[m as usize];
            // A connection is at least SYN, ACK with the request, FIN and ACK
            // from the client; health checks are not tunnelled.
            let (carried, other) = match outer6 {
                false => (after.0 - before.0, after.1 - before.1),
                true => (after.1 - before.1, after.0 - before.0),
            };
            assert!(
                carried >= 3 * n as u64,
                "{forward} {vip}: {carried} packets over outer IPv{} for {n} connections; by method before {all_before:?} after {all_after:?}",
                if outer6 { 6 } else { 4 }
            );
            assert_eq!(other, 0, "{forward} {vip}: nothing over the other family");
        }
    }
    for r in lab.remote_reals() {
        let s = lab.decap(&r).stats().unwrap();
        assert_eq!(s.dropped_total(), 0, "{r}: {s:?}");
    }
    let status = vc5d.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}\n{}", vc5d.log_text());
}

/// The path to the reals has a smaller MTU (1,400) than the LAN (1,500),
/// and the load balancer's route says so: a client's full-sized segment
/// does not fit once encapsulated, so the XDP program answers with
/// fragmentation needed / packet too big naming the MTU that fits, the
/// client's TCP sends smaller segments, and an upload of many segments
/// arrives whole, over both VIP families; a download (the real's replies go
/// straight back) is whole too.
#[test]
fn a_smaller_path_mtu_is_answered_and_uploads_arrive_whole() {
    let lab = remote_lab();
    lab.prepare_native_xdp().unwrap();
    let mut sw = String::from("ip link set br1 mtu 1400\nip link set router3 mtu 1400\n");
    for r in lab.remote_reals() {
        sw += &format!("ip link set {r} mtu 1400\n");
        lab.sh(&r, "ip link set eth0 mtu 1400\n").unwrap();
    }
    lab.sh("switch", &sw).unwrap();
    lab.sh("router", "ip link set eth2 mtu 1400\n").unwrap();
    lab.sh(
        "lb1",
        &format!(
            "ip route add 10.3.0.0/24 via {} mtu 1400\nip -6 route add 2001:db8:3::/64 via {} mtu 1400\n",
            lab.addr4("router"),
            lab.addr6("router")
        ),
    )
    .unwrap();
    lab.write_config_text(&lab.remote_config("gue", false))
        .unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "native", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);

    let upload = lab.dir().join("upload.bin");
    let mut data = vec![0u8; 3 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut data))
        .unwrap();
    std::fs::write(&upload, &data).unwrap();
    let want = sha256_file(&upload).unwrap();
    for vip in lab.vips() {
        let url = Lab::url(vip, "/sha256");
        let body = format!("@{}", upload.display());
        let got = lab
            .curl(
                "client",
                &url,
                &["--max-time", "30", "-H", "Expect:", "--data-binary", &body],
            )
            .unwrap_or_else(|e| panic!("upload to {vip}: {e:#}\n{}", vc5d.log_text()));
        assert_eq!(got.trim(), want, "{vip}: the upload arrived whole");
    }
    // Counters reach the status every few seconds.
    wait_status(
        &lab,
        "lb1",
        "counting fragmentation-needed / packet-too-big answers",
        Duration::from_secs(15),
        |st| st["global"]["too_big_tx"]["packets"].as_u64() >= Some(2),
    );
    // The client learnt the MTU that fits GUE over IPv4 (1,400 - 32) for
    // each VIP, from the answers.
    for vip in lab.vips() {
        let route = lab
            .run("client", &["ip", "route", "get", &vip.to_string()])
            .unwrap();
        assert!(route.contains("mtu 1368"), "{vip}: {route}");
    }
    // A download of many segments, from the reals straight to the client.
    let n = 2_000_000usize;
    let url = Lab::url(IpAddr::V4(lab.vip4), &format!("/bytes/{n}"));
    let file = lab.dir().join("download.bin");
    lab.curl(
        "client",
        &url,
        &["--max-time", "30", "-o", &file.to_string_lossy()],
    )
    .unwrap();
    assert_eq!(
        sha256_file(&file).unwrap(),
        lab.reference_sha256("remote1", n).unwrap()
    );
    wait_status(&lab, "lb1", "still up", Duration::from_secs(5), |st| {
        tunnelled(
            st,
            "gue",
            &[
                lab.addr4("router").to_string(),
                lab.addr6("router").to_string(),
            ],
        )
    });
    vc5d.terminate(Duration::from_secs(10)).unwrap();
}
