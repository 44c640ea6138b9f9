//! vc5-flowsync between two load balancers, as processes (needs root).
//!
//! The set-up (two namespaces joined by a veth pair, a `DataPlane` on a
//! private bpffs and a `vc5-flowsync` per "LB") is
//! `vc5_testkit::flowsync`, shared with `vc5-flowsync-bench`. Flows
//! are created in LB A by running its XDP program with BPF_PROG_TEST_RUN;
//! what LB B learns is read from B's pinned peer tables and `sync_status`.
//! Timings are printed, never asserted, except the resync's bound (99 %
//! within 5 s), which is its requirement.
//!
//! The CLI tests run the binary on bad input and need no namespace
//! (except the unknown-interface one, run in an empty namespace).
//! `VC5_TEST_LOG` sets the processes' `RUST_LOG` (default `info`); their
//! logs are printed when a test fails.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vc5_testkit::flowsync::*;
use vc5_testkit::xdp::*;
use vc5_xdp::dataplane::TCP;
use vc5_xdp::flowsync::engine::{FlowKey, FlowMap};
use vc5_xdp::flowsync::pinned::Pinned;
use vc5_xdp::flowsync::status::{REASONS, reason_index};
use vc5_xdp::flowsync::{FlowRecord, Key, Keyring, Op, Sealer};
use vc5_xdp::maps::{Flow4, SYNC_RESYNCING, SYNC_SYNCED};
use vc5_xdp::{DataPlane, MapSizes, ServiceSpec};

const BIN: &str = env!("CARGO_BIN_EXE_vc5-flowsync");

/// The TCP/IPv4 flow of client `i`.
fn client(i: u32) -> (IpAddr, u16) {
    let a = 0x0a00_0000 | (i / 50_000);
    (
        IpAddr::V4(std::net::Ipv4Addr::from(a + 1)),
        1024 + (i % 50_000) as u16,
    )
}

fn key4(src: IpAddr, sport: u16) -> Flow4 {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, ip(VIP)) else {
        unreachable!()
    };
    Flow4 {
        saddr: u32::from_ne_bytes(s.octets()),
        daddr: u32::from_ne_bytes(d.octets()),
        sport: sport.to_be(),
        dport: 80u16.to_be(),
    }
}

/// Creates flow `i` in `lb`: its SYN (no state), then its first ACK,
/// which inserts it.
fn create(lb: &mut Lb, i: u32) -> Flow4 {
    let (src, sport) = client(i);
    for flags in [TCP_SYN, TCP_ACK] {
        let f = Frame::tcp(src, sport, ip(VIP), 80, flags).build();
        assert_eq!(lb.run(&f), XDP_TX);
    }
    key4(src, sport)
}

#[test]
fn propagation() {
    let mut pair = Pair::new(BIN, &REALS);
    pair.a.start("");
    pair.b.start("");
    pair.a.wait_synced(Duration::from_secs(10));
    pair.b.wait_synced(Duration::from_secs(10));
    let pb = pair.b.pinned();
    pin_to_cpu(0);
    let cpu0 = (
        pair.a.proc.as_ref().unwrap().cpu_seconds(),
        pair.b.proc.as_ref().unwrap().cpu_seconds(),
    );
    const FLOWS: u32 = 2000;
    let mut pending: Vec<(Flow4, Instant)> = Vec::new();
    let mut delays = Vec::new();
    let mut created = Vec::new();
    let start = Instant::now();
    let mut next = 0u32;
    let deadline = start + Duration::from_secs(30);
    while (next < FLOWS || !pending.is_empty()) && Instant::now() < deadline {
        // 1,000 flows per second, on schedule.
        if next < FLOWS && start.elapsed() >= Duration::from_millis(next as u64) {
            let k = create(&mut pair.a, next);
            pending.push((k, Instant::now()));
            created.push(k);
            next += 1;
        }
        pending.retain(|(k, t)| {
            if pb.peer_flow(FlowMap::Tcp4, &FlowKey::V4(*k)).is_some() {
                delays.push(t.elapsed());
                false
            } else {
                true
            }
        });
        std::thread::sleep(Duration::from_micros(20));
    }
    if !pending.is_empty() {
        let idx: Vec<usize> = pending
            .iter()
            .filter_map(|(k, _)| created.iter().position(|c| c == k))
            .collect();
        panic!(
            "{} of {FLOWS} flows never reached B (indexes {idx:?});\nA: {:?}\nB: {:?}\nA's log:\n{}\nB's log:\n{}",
            pending.len(),
            pair.a.status(),
            pair.b.status(),
            pair.a.proc.as_ref().unwrap().log(),
            pair.b.proc.as_ref().unwrap().log()
        );
    }
    delays.sort();
    println!(
        "flowsync propagation of {FLOWS} flows at 1,000/s (A's program to B's peer table): \
         p50 {:?}, p99 {:?}, max {:?}",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().unwrap()
    );
    // Each flow names B's own index of the same real.
    for k in &created {
        let real = pair.a.real_of_flow(k).expect("A pinned it to a real");
        let want = pair.b.dp.backend_index(ip(VIP), 80, TCP, real).unwrap();
        let got = pb.peer_flow(FlowMap::Tcp4, &FlowKey::V4(*k)).unwrap();
        assert_eq!(got.backend, want as u32, "flow {k:?} to {real}");
    }
    // B's program follows the peers' flows: every packet of them goes to
    // A's real, also where B's table names another (peer_moved set there).
    let resolver = pb.resolver().unwrap();
    let svc = resolver.service(ip(VIP), 80, TCP).unwrap();
    let moved: HashMap<u16, vc5_xdp::maps::PeerMoved> =
        pb.peer_moved().unwrap().into_iter().collect();
    let table = *pair.b.dp.table(ip(VIP), 80, TCP).unwrap();
    let mut elsewhere = 0;
    for (i, k) in created.iter().enumerate() {
        let real = pair.a.real_of_flow(k).unwrap();
        let idx = pair.b.dp.backend_index(ip(VIP), 80, TCP, real).unwrap();
        let bucket = FlowKey::V4(*k).bucket(TCP);
        if table.backend[bucket] != idx {
            elsewhere += 1;
            assert!(
                moved.get(&svc).is_some_and(|m| m.is_set(bucket)),
                "flow {i}: bucket {bucket} not marked in peer_moved"
            );
        }
        let (src, sport) = client(i as u32);
        let (v, out) = pair
            .b
            .run_out(&Frame::tcp(src, sport, ip(VIP), 80, TCP_ACK).build());
        assert_eq!(v, XDP_TX);
        assert_eq!(
            out[..6],
            pair.b.mac_of(real),
            "flow {i} left B for another real"
        );
    }
    println!(
        "{elsewhere} of {FLOWS} flows sit in buckets of another real at B: B sent them all to A's real"
    );
    assert!(elsewhere > 0, "B's table should differ from A's");
    // The indexes really differ between the hosts (else this proves little).
    let r0 = ip(REALS[0]);
    assert_ne!(
        pair.a.dp.backend_index(ip(VIP), 80, TCP, r0),
        pair.b.dp.backend_index(ip(VIP), 80, TCP, r0)
    );
    // B's count of what it wrote (published every 250 ms).
    let a_addr = pair.a.addr;
    wait_for("B's written count", Duration::from_secs(2), || {
        peer_by_addr(&pair.b, a_addr).is_some_and(|p| p.written == FLOWS as u64)
    });
    let from_a = peer_by_addr(&pair.b, a_addr).unwrap();
    println!(
        "B's own view of A: {} datagrams, {} records, delay p50 {} us, p99 {} us, max {} us, gaps {}",
        from_a.datagrams,
        from_a.records,
        from_a.delay_p50_us,
        from_a.delay_p99_us,
        from_a.delay_max_us,
        from_a.gaps
    );
    // A's own count (published every 250 ms).
    wait_for("A's sent records", Duration::from_secs(2), || {
        pair.a.status().0.records >= FLOWS as u64
    });
    println!(
        "CPU while {FLOWS} flows went by at 1,000/s: A's vc5-flowsync {:.3} s, B's {:.3} s (over {:.1} s)",
        pair.a.proc.as_ref().unwrap().cpu_seconds() - cpu0.0,
        pair.b.proc.as_ref().unwrap().cpu_seconds() - cpu0.1,
        start.elapsed().as_secs_f64()
    );
    for lb in [&mut pair.a, &mut pair.b] {
        assert_eq!(lb.proc.as_mut().unwrap().stop(), Some(0));
        assert_eq!(lb.status().0.on, 0, "on cleared at exit");
    }
}

#[test]
fn resync() {
    let mut pair = Pair::new(BIN, &REALS);
    pair.a.start("");
    pair.b.start("");
    pair.a.wait_synced(Duration::from_secs(10));
    pair.b.wait_synced(Duration::from_secs(10));
    pin_to_cpu(0);
    const FLOWS: u32 = 100_000;
    let t = Instant::now();
    for i in 0..FLOWS {
        create(&mut pair.a, i);
    }
    println!("created {FLOWS} flows in A in {:?}", t.elapsed());
    let pa = pair.a.pinned();
    assert_eq!(
        pa.all_flows(false, FlowMap::Tcp4).unwrap().len(),
        FLOWS as usize
    );
    let cpu_a0 = pair.a.proc.as_ref().unwrap().cpu_seconds();

    // B restarts with empty peer tables.
    assert_eq!(pair.b.proc.as_mut().unwrap().stop(), Some(0));
    let pb = pair.b.pinned();
    let keys: Vec<FlowKey> = pb
        .all_flows(true, FlowMap::Tcp4)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    println!("B had {} of A's flows live before its restart", keys.len());
    pb.delete_peers(FlowMap::Tcp4, &keys);
    assert_eq!(count_peer(&pb), 0);
    let before = pair.b.status().0;
    let t0 = Instant::now();
    pair.b.start("");
    let mut states = vec![];
    let mut synced_at = None;
    let mut share_at_synced = 0.0;
    let mut reached = None;
    let want = FLOWS as usize * 99 / 100;
    while t0.elapsed() < Duration::from_secs(10) {
        let st = pair.b.status().0;
        if st.epoch != before.epoch && states.last() != Some(&st.state) {
            states.push(st.state);
        }
        let n = count_peer(&pb);
        if st.epoch != before.epoch && st.state == SYNC_SYNCED && synced_at.is_none() {
            synced_at = Some(t0.elapsed());
            share_at_synced = n as f64 / FLOWS as f64;
        }
        if n >= want && reached.is_none() {
            reached = Some(t0.elapsed());
        }
        if reached.is_some() && synced_at.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let n = count_peer(&pb);
    println!(
        "resync of {FLOWS} flows after B's restart: 99 % in {reached:?}, SYNCED after {synced_at:?} \
         with {:.2} % there, {:.2} % now; states {states:?}",
        share_at_synced * 100.0,
        n as f64 / FLOWS as f64 * 100.0
    );
    let log = pair.b.proc.as_ref().unwrap().log();
    let reached = reached.unwrap_or_else(|| panic!("only {n} of {FLOWS} flows; B's log:\n{log}"));
    assert!(reached <= Duration::from_secs(5), "99 % after {reached:?}");
    assert_eq!(states.first(), Some(&SYNC_RESYNCING), "{states:?}");
    assert_eq!(states.last(), Some(&SYNC_SYNCED), "{states:?}");
    assert!(share_at_synced >= 0.99, "SYNCED with {share_at_synced}");
    let (bu, bs) = pair.b.proc.as_ref().unwrap().cpu_split();
    println!(
        "CPU during the resync: A's vc5-flowsync {:.3} s (dumping), B's {:.3} s user + {:.3} s system (receiving)",
        pair.a.proc.as_ref().unwrap().cpu_seconds() - cpu_a0,
        bu,
        bs
    );
    // What B wrote names B's indexes of A's reals.
    let by_real: HashMap<u32, IpAddr> = REALS
        .iter()
        .map(|r| {
            (
                pair.b.dp.backend_index(ip(VIP), 80, TCP, ip(r)).unwrap() as u32,
                ip(r),
            )
        })
        .collect();
    for (k, f) in pb.all_flows(true, FlowMap::Tcp4).unwrap().iter().take(2000) {
        let FlowKey::V4(k) = k else { unreachable!() };
        assert_eq!(Some(by_real[&f.backend]), pair.a.real_of_flow(k));
    }
}

#[test]
fn ipv6_group_and_flows() {
    let mut pair = Pair::with(BIN, &REALS, true);
    pair.a.start("");
    pair.b.start("");
    pair.a.wait_synced(Duration::from_secs(10));
    pair.b.wait_synced(Duration::from_secs(10));
    let pb = pair.b.pinned();
    pin_to_cpu(0);
    let mut keys = Vec::new();
    for i in 0..200u16 {
        let src = ip(&format!("2001:db8:1::{:x}", i + 1));
        for flags in [TCP_SYN, TCP_ACK] {
            let f = Frame::tcp(src, 40000 + i, ip(VIP6), 80, flags).build();
            assert_eq!(pair.a.run(&f), XDP_TX);
        }
        let (IpAddr::V6(s), IpAddr::V6(d)) = (src, ip(VIP6)) else {
            unreachable!()
        };
        keys.push(vc5_xdp::maps::Flow6 {
            saddr: s.octets(),
            daddr: d.octets(),
            sport: (40000 + i).to_be(),
            dport: 80u16.to_be(),
        });
    }
    wait_for("200 IPv6 flows at B", Duration::from_secs(5), || {
        keys.iter()
            .all(|k| pb.peer_flow(FlowMap::Tcp6, &FlowKey::V6(*k)).is_some())
    });
    for k in &keys {
        let a_idx = pair.a.dp.flow6(true, k).unwrap();
        let real = REALS
            .iter()
            .map(|r| ip(r))
            .find(|r| pair.a.dp.backend_index(ip(VIP6), 80, TCP, *r) == Some(a_idx as u16))
            .unwrap();
        let want = pair.b.dp.backend_index(ip(VIP6), 80, TCP, real).unwrap();
        let got = pb.peer_flow(FlowMap::Tcp6, &FlowKey::V6(*k)).unwrap();
        assert_eq!(got.backend, want as u32);
    }
    // B knows A by its IPv6 source address.
    let (own, peers) = pair.b.status();
    assert_eq!(own.addr, vc5_xdp::maps::addr16(pair.b.addr));
    assert_eq!(peers.len(), 1);
    assert_eq!(
        vc5_xdp::maps::ip_from16(peers[0].addr),
        pair.a.addr,
        "{peers:?}"
    );
}

/// A socket in `ns` bound to `src`, sending to the group on `ifname`.
fn socket_in(ns: &str, ifname: &str, src: IpAddr) -> UdpSocket {
    let (ns, ifname) = (ns.to_owned(), ifname.to_owned());
    std::thread::spawn(move || {
        vc5_testkit::enter_netns(&ns);
        use std::os::fd::AsRawFd;
        let s = UdpSocket::bind(SocketAddr::new(src, 0)).unwrap();
        let ifindex = vc5_xdp::flowsync::net::ifindex(&ifname).unwrap();
        let IpAddr::V4(a) = src else { unreachable!() };
        let m = libc::ip_mreqn {
            imr_multiaddr: libc::in_addr { s_addr: 0 },
            imr_address: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.octets()),
            },
            imr_ifindex: ifindex as i32,
        };
        // SAFETY: an ip_mreqn of its size.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                &m as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::ip_mreqn>() as u32,
            )
        };
        assert_eq!(r, 0);
        s
    })
    .join()
    .unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn rejects(lb: &Lb) -> [u64; 16] {
    let (own, peers) = lb.status();
    let mut r = own.rejects;
    for p in peers {
        for (a, b) in r.iter_mut().zip(p.rejects) {
            *a += b;
        }
    }
    r
}

fn snapshot(p: &Pinned) -> BTreeMap<String, (u32, u32)> {
    let mut m = BTreeMap::new();
    for map in FlowMap::ALL {
        for (k, f) in p.all_flows(true, map).unwrap() {
            m.insert(format!("{map:?} {k:?}"), (f.backend, f.seen));
        }
    }
    m
}

#[test]
fn security() {
    let mut pair = Pair::new(BIN, &REALS);
    pair.a.start("");
    pair.b.start("");
    pair.a.wait_synced(Duration::from_secs(10));
    pair.b.wait_synced(Duration::from_secs(10));
    let attacker = ip("198.18.0.3");
    let sock = socket_in(&pair.a.ns, &pair.a.ifname, attacker);
    let group: SocketAddr = GROUP.parse().unwrap();
    let send = |d: &[u8]| {
        sock.send_to(d, group).unwrap();
    };
    let keys = keyring();
    let sender = 0x5eed_0001u64;
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut sealer = Sealer::new(&keys, sender, epoch);
    let record = |sport| FlowRecord {
        saddr: ip("198.51.100.9"),
        daddr: ip(VIP),
        sport,
        dport: 80,
        protocol: TCP,
        real: ip(REALS[1]),
        op: Op::Upsert,
    };
    // A valid datagram first: accepted, one flow written.
    let valid = sealer
        .seal_flows(&[record(1)], now_ms(), 1400)
        .unwrap()
        .remove(0);
    send(&valid);
    let pb = pair.b.pinned();
    wait_for("the valid datagram", Duration::from_secs(5), || {
        peer_by_addr(&pair.b, attacker).is_some_and(|p| p.written == 1)
    });
    let accepted0 = peer_by_addr(&pair.b, attacker).unwrap().datagrams;
    let table0 = snapshot(&pb);
    let rejects0 = rejects(&pair.b);

    let mut sent = 0u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ epoch;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Random bytes, some behind a valid clear header prefix.
    for i in 0..200 {
        let len = (next() % 1400) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 1 && len >= 8 {
            d[..8].copy_from_slice(&valid[..8]);
        }
        send(&d);
        sent += 1;
    }
    // Every single-bit flip of a valid datagram never sent as it is.
    let fresh = sealer
        .seal_flows(&[record(2)], now_ms(), 1400)
        .unwrap()
        .remove(0);
    for bit in 0..fresh.len() * 8 {
        let mut d = fresh.clone();
        d[bit / 8] ^= 1 << (bit % 8);
        send(&d);
        sent += 1;
    }
    // Another key under the same id; an id B does not have.
    let wrong = Keyring::new(vec![(0, Key::new([0x42; 32]))]).unwrap();
    let mut w = Sealer::new(&wrong, sender, epoch);
    let _ = w.seal_flows(&[record(3)], now_ms(), 1400); // seq 0
    let _ = w.seal_flows(&[record(3)], now_ms(), 1400); // seq 1
    send(&w.seal_flows(&[record(3)], now_ms(), 1400).unwrap()[0]);
    let unknown = Keyring::new(vec![(9, Key::new([0x42; 32]))]).unwrap();
    send(&Sealer::new(&unknown, sender, epoch).alive(now_ms()));
    sent += 2;
    // Truncated, and oversize (fragmented on the wire, reassembled).
    for cut in [0, 1, 7, 39, 40, 55, fresh.len() - 1] {
        send(&fresh[..cut]);
        sent += 1;
    }
    send(&vec![0u8; 9100]);
    sent += 1;
    // Replays within the epoch, and an older epoch of the same sender.
    for _ in 0..3 {
        send(&valid);
        sent += 1;
    }
    let mut old = Sealer::new(&keys, sender, epoch - 1_000_000_000);
    send(&old.seal_flows(&[record(4)], now_ms(), 1400).unwrap()[0]);
    sent += 1;

    let expect = |r: &[u64; 16], name: &str| r[reason_index(name)] - rejects0[reason_index(name)];
    wait_for("every datagram counted", Duration::from_secs(5), || {
        let r = rejects(&pair.b);
        r.iter().sum::<u64>() - rejects0.iter().sum::<u64>() >= sent
    });
    std::thread::sleep(Duration::from_millis(300)); // one more publication
    let r = rejects(&pair.b);
    let moved: Vec<(&str, u64)> = REASONS
        .iter()
        .map(|n| (*n, expect(&r, n)))
        .filter(|(_, v)| *v > 0)
        .collect();
    println!("B's rejects after {sent} bad datagrams: {moved:?}");
    assert_eq!(r.iter().sum::<u64>() - rejects0.iter().sum::<u64>(), sent);
    for reason in [
        "short",
        "oversize",
        "bad_magic",
        "bad_version",
        "bad_type",
        "bad_reserved",
        "unknown_key",
        "auth",
        "duplicate",
        "old_epoch",
    ] {
        assert!(expect(&r, reason) > 0, "{reason}: {moved:?}");
    }
    assert_eq!(
        peer_by_addr(&pair.b, attacker).unwrap().datagrams,
        accepted0
    );
    assert_eq!(snapshot(&pb), table0, "B's peer tables changed");

    // After B restarts, the recorded valid datagram is refused too.
    assert_eq!(pair.b.proc.as_mut().unwrap().stop(), Some(0));
    pair.b.start("");
    wait_for("B running again", Duration::from_secs(10), || {
        pair.b.status().0.on == 1
    });
    let stale0 = rejects(&pair.b)[reason_index("stale")];
    send(&valid);
    wait_for("the replay counted", Duration::from_secs(5), || {
        rejects(&pair.b)[reason_index("stale")] > stale0
    });
    assert!(peer_by_addr(&pair.b, attacker).is_none_or(|p| p.datagrams == 0));
    assert_eq!(snapshot(&pb), table0, "B's peer tables changed");

    // A fresh datagram of the same sender is accepted again, and a delete
    // record removes the flow the first one wrote.
    let key = FlowKey::of(&record(1)).unwrap();
    assert!(table0.len() == 1 && pb.peer_flow(FlowMap::Tcp4, &key).is_some());
    let mut gone = record(1);
    gone.op = Op::Delete;
    send(&sealer.seal_flows(&[gone], now_ms(), 1400).unwrap()[0]);
    wait_for("the delete", Duration::from_secs(5), || {
        pb.peer_flow(FlowMap::Tcp4, &key).is_none()
    });
    wait_for("B's status of it", Duration::from_secs(2), || {
        peer_by_addr(&pair.b, attacker).is_some_and(|p| p.datagrams == 1)
    });
}

#[test]
fn unknown_real_and_rate_limit() {
    let mut a_reals = REALS.to_vec();
    a_reals.push(EXTRA_REAL);
    let mut pair = Pair::new(BIN, &a_reals);
    pair.a.start("");
    pair.b.start("flow_sync_rate: 100\n");
    pair.a.wait_synced(Duration::from_secs(10));
    pair.b.wait_synced(Duration::from_secs(10));
    // Let B's bucket fill up (1 s of burst), then 60 flows: within it.
    std::thread::sleep(Duration::from_millis(1100));
    pin_to_cpu(0);
    let flows: Vec<Flow4> = (0..60).map(|i| create(&mut pair.a, i)).collect();
    let extra: Vec<&Flow4> = flows
        .iter()
        .filter(|k| pair.a.real_of_flow(k) == Some(ip(EXTRA_REAL)))
        .collect();
    assert!(!extra.is_empty(), "no flow went to the extra real");
    let a_addr = pair.a.addr;
    wait_for("A's 60 records at B", Duration::from_secs(5), || {
        peer_by_addr(&pair.b, a_addr).is_some_and(|p| p.written + p.unknown_real >= 60)
    });
    let pb = pair.b.pinned();
    let p = peer_by_addr(&pair.b, a_addr).unwrap();
    assert_eq!(p.unknown_real, extra.len() as u64);
    assert_eq!(p.written, 60 - extra.len() as u64);
    assert_eq!(p.rate_limited, 0);
    for k in &flows {
        let there = pb.peer_flow(FlowMap::Tcp4, &FlowKey::V4(*k)).is_some();
        assert_eq!(there, !extra.contains(&k), "{k:?}");
    }
    // vc5d gives B the extra real too (a new generation): B re-reads its
    // reals, and A's flows to it now resolve to B's index of it.
    let spec = pair
        .b
        .specs
        .iter_mut()
        .find(|s| s.vip == ip(VIP) && s.port == 80)
        .unwrap();
    let mut extra_spec = reals(&[EXTRA_REAL]).remove(0);
    extra_spec.l2.as_mut().unwrap().mac = [0x02, 0xbb, 0, 0, 0, 0x44];
    spec.reals.push(extra_spec);
    let specs = pair.b.specs.clone();
    pair.b.dp.program(&specs).unwrap();
    let b_extra = pair
        .b
        .dp
        .backend_index(ip(VIP), 80, TCP, ip(EXTRA_REAL))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100)); // the bucket refills too
    let more: Vec<Flow4> = (60..100).map(|i| create(&mut pair.a, i)).collect();
    wait_for("A's 100 records at B", Duration::from_secs(5), || {
        peer_by_addr(&pair.b, a_addr).is_some_and(|p| p.written + p.unknown_real >= 100)
    });
    let p = peer_by_addr(&pair.b, a_addr).unwrap();
    assert_eq!(p.unknown_real, extra.len() as u64, "no new unknown real");
    let mut to_extra = 0;
    for k in &more {
        let f = pb.peer_flow(FlowMap::Tcp4, &FlowKey::V4(*k)).unwrap();
        if pair.a.real_of_flow(k) == Some(ip(EXTRA_REAL)) {
            assert_eq!(f.backend, b_extra as u32);
            to_extra += 1;
        }
    }
    assert!(
        to_extra > 0,
        "no flow of the second batch went to the extra real"
    );

    // 2,000 at once: B takes what its bucket holds.
    let t = Instant::now();
    for i in 100..2100 {
        create(&mut pair.a, i);
    }
    wait_for("A's records at B", Duration::from_secs(5), || {
        peer_by_addr(&pair.b, a_addr).is_some_and(|p| p.records >= 2100)
    });
    let elapsed = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let p = peer_by_addr(&pair.b, a_addr).unwrap();
    println!(
        "rate limit 100/s: of {} records {} written, {} unknown real, {} rate limited ({elapsed:.2} s)",
        p.records, p.written, p.unknown_real, p.rate_limited
    );
    assert_eq!(p.records, 2100);
    assert_eq!(p.written + p.unknown_real + p.rate_limited, p.records);
    // At most the bucket's 100 plus 100/s since the burst began.
    let taken = p.records - 100 - p.rate_limited;
    assert!(
        taken as f64 <= 100.0 + 100.0 * (elapsed + 0.5),
        "{taken} taken in {elapsed} s"
    );
    assert!(p.rate_limited >= 2000 - 100 - (100.0 * (elapsed + 0.5)) as u64);
    assert_eq!(count_peer(&pb) as u64, p.written);
}

#[test]
fn sweep_deletes_idle_peer_flows() {
    let mut pair = Pair::new(BIN, &REALS);
    pair.a.start("");
    pair.b.start("");
    pair.a.wait_synced(Duration::from_secs(10));
    pair.b.wait_synced(Duration::from_secs(10));
    pin_to_cpu(0);
    let flows: Vec<Flow4> = (0..300).map(|i| create(&mut pair.a, i)).collect();
    let pb = pair.b.pinned();
    wait_for("300 flows at B", Duration::from_secs(5), || {
        count_peer(&pb) == 300
    });
    let svc = pb.resolver().unwrap().service(ip(VIP), 80, TCP).unwrap();
    let marked = |pb: &Pinned| {
        pb.peer_moved()
            .unwrap()
            .into_iter()
            .find(|(s, _)| *s == svc)
            .map_or(0, |(_, m)| m.count())
    };
    assert!(marked(&pb) > 0, "B_REAL makes some buckets another real's");
    // B's clock moves past the idle timeout; a new generation (vc5d
    // programmed B) starts a sweep, which deletes what went idle and
    // clears the marks no flow needs any more.
    let clock = pair.b.dp.clock();
    pair.b
        .dp
        .set_clock(clock + vc5_xdp::dataplane::TCP_IDLE_TIMEOUT + 60)
        .unwrap();
    let specs = {
        let s = &mut pair.b.specs[0];
        s.reals.pop();
        pair.b.specs.clone()
    };
    pair.b.dp.program(&specs).unwrap();
    wait_for("the sweep", Duration::from_secs(5), || {
        count_peer(&pb) == 0 && marked(&pb) == 0
    });
    // New flows are stamped with the new clock and stay.
    for i in 300..350 {
        create(&mut pair.a, i);
    }
    wait_for("50 new flows at B", Duration::from_secs(5), || {
        count_peer(&pb) == 50
    });
    let specs = {
        let s = &mut pair.b.specs[0];
        s.reals.extend(reals(&[REALS[2]]));
        pair.b.specs.clone()
    };
    pair.b.dp.program(&specs).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count_peer(&pb), 50);
    assert!(
        flows
            .iter()
            .all(|k| pb.peer_flow(FlowMap::Tcp4, &FlowKey::V4(*k)).is_none())
    );
}

#[test]
fn sighup_rekeys() {
    let mut pair = Pair::new(BIN, &REALS);
    pair.a.start("");
    pair.b.start("");
    pair.a.wait_synced(Duration::from_secs(10));
    pair.b.wait_synced(Duration::from_secs(10));
    let (a_addr, b_addr) = (pair.a.addr, pair.b.addr);
    let new_key = "ff".repeat(32);
    let hup = |lb: &Lb| {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(lb.proc.as_ref().unwrap().pid() as i32, libc::SIGHUP) };
    };
    let unknown_key = |lb: &Lb, from: IpAddr| {
        peer_by_addr(lb, from).map_or(0, |p| p.rejects[reason_index("unknown_key")])
    };
    let heard = |lb: &Lb, from: IpAddr| peer_by_addr(lb, from).map_or(0, |p| p.datagrams);
    // B: a new first key (id 1) and the old one. B seals with the new one,
    // which A does not have yet; B still opens A's.
    let key_b = pair.b.dir.path().join("flowsync.key");
    std::fs::write(&key_b, format!("1 {new_key}\n0 {KEY_HEX}\n")).unwrap();
    hup(&pair.b);
    wait_for("A refusing B's new key", Duration::from_secs(5), || {
        unknown_key(&pair.a, b_addr) >= 2
    });
    let h = heard(&pair.b, a_addr);
    wait_for("B hearing A", Duration::from_secs(5), || {
        heard(&pair.b, a_addr) >= h + 2
    });
    // A malformed key file is refused: B keeps the keys it has.
    std::fs::write(&key_b, "1 not-hex\n").unwrap();
    hup(&pair.b);
    wait_for("B's log of the refusal", Duration::from_secs(5), || {
        pair.b
            .proc
            .as_ref()
            .unwrap()
            .log()
            .contains("key file not re-read")
    });
    let h = heard(&pair.b, a_addr);
    wait_for("B still hearing A", Duration::from_secs(5), || {
        heard(&pair.b, a_addr) >= h + 2
    });
    // A learns the new key: it opens B's again.
    let key_a = pair.a.dir.path().join("flowsync.key");
    std::fs::write(&key_a, format!("1 {new_key}\n0 {KEY_HEX}\n")).unwrap();
    hup(&pair.a);
    std::thread::sleep(Duration::from_millis(500));
    let (h, r) = (heard(&pair.a, b_addr), unknown_key(&pair.a, b_addr));
    wait_for("A hearing B again", Duration::from_secs(5), || {
        heard(&pair.a, b_addr) >= h + 2
    });
    assert!(
        unknown_key(&pair.a, b_addr) <= r + 1,
        "A still refuses B's key"
    );
}

#[test]
fn waits_for_and_reopens_maps() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fs = TempBpffs::new().expect("mount a private bpffs");
    let bpffs = fs.path().join("vc5");
    let u = unique();
    let ns = Netns::new("vc5fsm").expect("a namespace");
    let (x, y) = (format!("vfx{u}"), format!("vfy{u}"));
    ns.exec(&["ip", "link", "add", &x, "type", "veth", "peer", "name", &y])
        .unwrap();
    ns.exec(&["ip", "addr", "add", "198.18.1.1/24", "dev", &x])
        .unwrap();
    ns.exec(&["ip", "link", "set", &x, "up"]).unwrap();
    ns.exec(&["ip", "link", "set", &y, "up"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_key(&dir.path().join("k"));
    let cfg = dir.path().join("vc5.yaml");
    std::fs::write(&cfg, format!("multicast: {GROUP}\nflow_sync_key: k\n")).unwrap();
    let log = dir.path().join("log");
    let mut p = Proc::spawn(
        Path::new(BIN),
        ns.name(),
        &cfg,
        &x,
        ip("198.18.1.1"),
        &bpffs,
        log,
    );
    // No maps yet: it waits (and says so once), idle.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(p.child.as_mut().unwrap().try_wait().unwrap().is_none());
    let cpu = p.cpu_seconds();
    println!("CPU while waiting 1.5 s for the maps: {cpu:.3} s");
    assert!(cpu < 0.5, "the loop spins while it waits: {cpu} s of CPU");
    assert_eq!(
        p.log().matches("waiting for vc5d's maps").count(),
        1,
        "{}",
        p.log()
    );
    let services = vec![ServiceSpec {
        vip: ip(VIP),
        port: 80,
        proto: TCP,
        forward: vc5_xdp::Forward::L2,
        reals: reals(&REALS),
    }];
    let mut dp = DataPlane::open(&bpffs, MapSizes::small()).unwrap();
    dp.program(&services).unwrap();
    // Alone on its segment: synced 1.5 s after it found the maps.
    wait_for("SYNCED on the first maps", Duration::from_secs(5), || {
        dp.sync_status().unwrap().0.state == SYNC_SYNCED
    });
    let first = dp.sync_status().unwrap().0;
    assert_eq!(first.on, 1);
    // vc5d replaces its maps (a fresh start, say after an incompatible upgrade).
    drop(dp);
    std::fs::remove_dir_all(&bpffs).unwrap();
    let mut dp = DataPlane::open(&bpffs, MapSizes::small()).unwrap();
    dp.program(&services).unwrap();
    wait_for("the new maps in use", Duration::from_secs(5), || {
        let s = dp.sync_status().unwrap().0;
        s.on == 1 && s.epoch > first.epoch
    });
    assert!(p.log().contains("replaced its maps"), "{}", p.log());
    assert_eq!(p.stop(), Some(0));
    assert_eq!(dp.sync_status().unwrap().0.on, 0);
}

/// Runs the binary (optionally inside `ns`) and returns (code, stderr).
fn run_bin(ns: Option<&str>, args: &[&str]) -> (Option<i32>, String) {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    let mut child = c
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (st.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} did not exit: it must refuse bad input at once");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct CliCase {
    dir: tempfile::TempDir,
}

impl CliCase {
    fn new() -> Self {
        CliCase {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn key(&self, text: &str, mode: u32) {
        let p = self.path("k");
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn config(&self, text: &str) -> String {
        std::fs::write(self.path("vc5.yaml"), text).unwrap();
        self.path("vc5.yaml").display().to_string()
    }

    fn run(
        &self,
        ns: Option<&str>,
        cfg: &str,
        interface: &str,
        address: &str,
    ) -> (Option<i32>, String) {
        let bpffs = self.path("no-bpffs");
        run_bin(
            ns,
            &[
                "--config",
                cfg,
                "--interface",
                interface,
                "--address",
                address,
                "--bpffs",
                bpffs.to_str().unwrap(),
            ],
        )
    }
}

fn assert_refused((code, err): (Option<i32>, String), want: &str) {
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {err}");
    assert!(err.contains(want), "expected {want:?} in:\n{err}");
    println!("refused: {}", err.trim());
}

const GOOD_CFG: &str = "multicast: 239.255.70.1:9999\nflow_sync_key: k\nservices: []\n";

#[test]
fn cli_bad_input() {
    let c = CliCase::new();
    let cfg = c.config(GOOD_CFG);
    // Missing key file.
    assert_refused(c.run(None, &cfg, "lo", "192.0.2.1"), "cannot read key file");
    // Readable by others.
    c.key(&format!("0 {KEY_HEX}\n"), 0o644);
    assert_refused(
        c.run(None, &cfg, "lo", "192.0.2.1"),
        "group or others may read it",
    );
    // Malformed.
    c.key("0 0011\n", 0o600);
    assert_refused(c.run(None, &cfg, "lo", "192.0.2.1"), "expected 64");
    c.key("zero 00\n", 0o600);
    assert_refused(c.run(None, &cfg, "lo", "192.0.2.1"), "not a number 0-255");
    c.key(&format!("0 {KEY_HEX}\n"), 0o600);
    // Not a multicast group, none at all, a bad address.
    let bad = c.config("multicast: 10.0.0.1:9999\nflow_sync_key: k\n");
    assert_refused(
        c.run(None, &bad, "lo", "192.0.2.1"),
        "10.0.0.1 is not a multicast address",
    );
    let none = c.config("flow_sync_key: k\n");
    assert_refused(c.run(None, &none, "lo", "192.0.2.1"), "no `multicast`");
    let cfg = c.config(GOOD_CFG);
    assert_refused(c.run(None, &cfg, "lo", "not-an-ip"), "--address");
    assert_refused(c.run(None, &cfg, "lo", "0.0.0.0"), "unspecified");
    assert_refused(
        c.run(
            None,
            &c.path("none.yaml").display().to_string(),
            "lo",
            "192.0.2.1",
        ),
        "cannot read",
    );
}

#[test]
fn cli_unknown_interface() {
    require_root();
    let ns = Netns::new("vc5fsc").expect("a namespace");
    let c = CliCase::new();
    c.key(&format!("0 {KEY_HEX}\n"), 0o600);
    let cfg = c.config(GOOD_CFG);
    assert_refused(
        c.run(Some(ns.name()), &cfg, "vc5-nosuch0", "192.0.2.1"),
        "unknown interface \"vc5-nosuch0\"",
    );
    assert_refused(
        c.run(Some(ns.name()), &cfg, "lo", "192.0.2.1"),
        "--address 192.0.2.1 is not an address of lo",
    );
}
