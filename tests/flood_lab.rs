//! A spoofed ACK flood in the lab: long downloads survive it, and a change
//! of the service's table while it runs (issue 10).
//!
//! One load balancer (native XDP), four reals of which the configuration
//! first lists three. Four paced IPv4 downloads start from client ports
//! whose buckets move to real4 once real4 joins (predicted with the data
//! plane's own hash and table code, `Lab::predicted_real`), so a download
//! whose flow-table entry were lost would be sent to real4, which resets it.
//! Their entries are in `flows_tcp4` (inserted after their SYN).
//!
//! Then a bounded flood of TCP ACKs to the VIP's port 80, from random
//! source addresses and ports, leaves the router's LAN port (an AF_PACKET
//! socket in the router's namespace, frames addressed to lb1's MAC, as the
//! router forwards the client's traffic) as fast as the socket goes, for at
//! most [`FLOOD_PACKETS`] packets or [`FLOOD_TIME`]. One second into it
//! real4 is added (configuration rewritten, SIGHUP) and the test waits
//! until lb1 reports it serving, while the flood goes on.
//!
//! Asserted: every download completes intact (all its bytes, the reals'
//! SHA-256, no reset) from the real it started on; each download's entry
//! is still in the flow table with the same backend; the load balancer
//! counted at least 80% of the flood's packets to the service (so it did
//! arrive); the flood added at most one entry per 32 of its packets to the
//! flow table (the rule inserts a flow without a SYN only on one packet in
//! 64 per CPU); and new connections do reach real4 (the table did change).
//!
//! Needs root.

mod common;

use common::{fast_checks, spread, wait_ready};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vc5_testkit::lab::{HTTP_PORT, Lab, LabOptions};
/// A small, fast generator: the flood needs variety, not quality.
use vc5_testkit::rng::SplitMix64;
use vc5_testkit::xdp::{Frame, TCP_ACK, ether};
use vc5_xdp::flowsync::engine::{FlowKey, FlowMap};
use vc5_xdp::flowsync::pinned::Pinned;

/// Each download: 2.4 MB at 100 kB/s, 24 seconds, across the whole flood.
const BYTES: usize = 2_400_000;
const RATE: u64 = 100_000;
const DOWNLOADS: usize = 4;
/// The flood's bounds: whichever comes first.
const FLOOD_PACKETS: u64 = 1_000_000;
const FLOOD_TIME: Duration = Duration::from_secs(8);
/// When real4 joins, after the flood started.
const RELOAD_AFTER: Duration = Duration::from_secs(1);

#[test]
fn long_downloads_survive_a_spoofed_ack_flood_and_a_table_change() {
    let lab = Lab::new(LabOptions {
        vc5d: Some(env!("CARGO_BIN_EXE_vc5d").into()),
        reals: 4,
        ..LabOptions::default()
    })
    .expect("building the lab (needs root)");
    let reals = lab.reals();
    let three = reals[..3].to_vec();
    let real4 = lab.addr4("real4").to_string();
    let all_four = fast_checks(&lab);
    let three_only = all_four.replace(&format!(", {real4}]"), "]");
    assert!(!three_only.contains(&real4), "{three_only}");
    lab.write_config_text(&three_only).unwrap();
    lab.prepare_native_xdp().unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "native", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);

    // Downloads whose buckets move to real4 when it joins.
    let vip = SocketAddr::new(lab.vip4.into(), HTTP_PORT);
    let client = IpAddr::from(lab.addr4("client"));
    let planned: Vec<(u16, String)> = (20000..60000)
        .filter_map(|port| {
            let c = SocketAddr::new(client, port);
            let before = lab.predicted_real(&three, c, vip, 6);
            (before != lab.predicted_real(&reals, c, vip, 6)).then_some((port, before))
        })
        .take(DOWNLOADS)
        .collect();
    let reference = lab.reference_sha256("real1", BYTES).unwrap();
    let started = Instant::now();
    let downloads: Vec<_> = (planned.iter())
        .map(|(port, _)| (lab.start_transfer(vip.ip(), BYTES, RATE, Some(*port))).unwrap())
        .collect();
    for (t, (port, real)) in downloads.iter().zip(&planned) {
        let got = t.real(Duration::from_secs(5)).unwrap();
        assert_eq!(&got, real, "port {port}: the prediction of its real");
    }
    // Each download's entry is in the flow table once a packet after its
    // SYN has passed: polled, and then read once for all.
    let pinned = Pinned::open(&lab.bpffs("lb1")).unwrap();
    let keys: Vec<FlowKey> = planned.iter().map(|(p, _)| key(client, *p, vip)).collect();
    wait_for(Duration::from_secs(5), || {
        let now = flows(&pinned);
        keys.iter().all(|k| now.contains_key(k))
    });
    let before = flows(&pinned);
    let backends: Vec<u32> = (keys.iter())
        .map(|k| {
            before
                .get(k)
                .unwrap_or_else(|| panic!("no flow-table entry for {k:?} after its handshake"))
                .to_owned()
        })
        .collect();
    let status_before = status(&lab);
    let drops_before = drops(&lab);

    // The flood, and real4 joining while it runs.
    let stop = AtomicBool::new(false);
    let (src, dst) = (lab.mac("router"), lab.mac("lb1"));
    let (sent, flood_time, reload_at) = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            lab.run_in("router", || flood(src, dst, lab.vip4, &stop))
                .unwrap()
        });
        // real4 joins a set time into the flood (deliberately a fixed wait).
        std::thread::sleep(RELOAD_AFTER);
        let reload_at = Instant::now();
        lab.write_config_text(&all_four).unwrap();
        vc5d.signal(libc::SIGHUP).unwrap();
        // real4 is in the status only once the reload is programmed.
        let joined = wait_for(Duration::from_secs(15), || serving(&status(&lab), &real4));
        let reload_at = (reload_at - started, reload_at.elapsed());
        if !joined {
            stop.store(true, Ordering::SeqCst);
        }
        let (sent, time) = flood.join().unwrap().unwrap();
        assert!(joined, "real4 never served:\n{}", vc5d.log_text());
        (sent, time, reload_at)
    });
    let flood_end_ms = unix_ms();

    // The load balancer's counters once a snapshot after the flood is out.
    let mut status_after = status(&lab);
    assert!(wait_for(Duration::from_secs(10), || {
        status_after = status(&lab);
        status_after["at_ms"].as_u64().unwrap_or(0) > flood_end_ms + 200
    }));
    let counted = service_packets(&status_after) - service_packets(&status_before);
    let dropped: BTreeMap<String, u64> = (drops(&lab).into_iter())
        .map(|(k, v)| {
            let d = v - drops_before[&k];
            (k, d)
        })
        .collect();
    let global = |st: &Value| -> BTreeMap<String, u64> {
        (st["global"].as_object().into_iter().flatten())
            .map(|(k, c)| (k.clone(), c["packets"].as_u64().unwrap_or(0)))
            .collect()
    };
    let (g0, g1) = (global(&status_before), global(&status_after));
    let reasons: Vec<String> = (g1.iter())
        .filter(|(k, v)| **v > g0.get(*k).copied().unwrap_or(0))
        .map(|(k, v)| format!("{k} +{}", v - g0.get(k).copied().unwrap_or(0)))
        .collect();
    let after = flows(&pinned);
    let added = after.keys().filter(|k| !before.contains_key(k)).count();
    let refused = &status_after["flow_table"]["inserts_refused"];

    // New connections reach real4: the table changed under the flood.
    let s = spread(&lab, vip.ip(), 80);

    let mut report = format!(
        "flood: {sent} spoofed ACKs in {:.2} s ({:.0}/s) from the router to lb1\n\
         lb1 counted {counted} packets to web4 meanwhile; by reason: {}\n\
         dropped by the kernel on the way (device counters): {dropped:?}\n\
         flow table: {} entries before, {} after, {added} added by the flood; \
         inserts refused (status): {refused}\n\
         real4 added {:.2} s after the downloads started, serving {:.2} s later\n\
         new connections after the flood: {s:?}\n",
        flood_time.as_secs_f64(),
        sent as f64 / flood_time.as_secs_f64(),
        reasons.join(", "),
        before.len(),
        after.len(),
        reload_at.0.as_secs_f64(),
        reload_at.1.as_secs_f64(),
    );
    let mut broken = Vec::new();
    for ((t, (port, real)), (k, backend)) in downloads
        .into_iter()
        .zip(&planned)
        .zip(keys.iter().zip(&backends))
    {
        let kept = after.get(k);
        let end = t.finish(Duration::from_secs(60)).unwrap();
        let intact = end.ok && end.received == BYTES as u64 && end.sha256 == reference;
        report += &format!(
            "download from port {port} on {real}: {} of {BYTES} bytes, {}, flow entry backend {backend} -> {kept:?}{}\n",
            end.received,
            if intact { "intact" } else { "BROKEN" },
            if intact {
                String::new()
            } else {
                format!(" (curl: {})", end.curl_said)
            },
        );
        if !intact || kept != Some(backend) {
            broken.push(*port);
        }
    }
    report += &format!(
        "downloads done {:.1} s after they started\n",
        started.elapsed().as_secs_f64()
    );
    println!("{report}");
    assert!(
        broken.is_empty(),
        "downloads from ports {broken:?} broke or lost their entry:\n{report}\n{}",
        vc5d.log_text()
    );
    assert!(
        sent >= 100_000,
        "the flood was too small to mean anything:\n{report}"
    );
    assert!(
        counted >= sent * 8 / 10,
        "the flood did not reach lb1's XDP program:\n{report}"
    );
    assert!(
        added as u64 <= sent / 32 + 100,
        "the flood filled the flow table:\n{report}"
    );
    assert!(
        s.contains_key("real4"),
        "no bucket moved to real4:\n{report}"
    );
    vc5d.terminate(Duration::from_secs(10)).unwrap();
}

/// The flow-table key of a client's connection to `vip`.
fn key(client: IpAddr, port: u16, vip: SocketAddr) -> FlowKey {
    let (IpAddr::V4(c), IpAddr::V4(v)) = (client, vip.ip()) else {
        panic!("IPv4 only");
    };
    FlowKey::V4(vc5_xdp::maps::Flow4 {
        saddr: u32::from_ne_bytes(c.octets()),
        daddr: u32::from_ne_bytes(v.octets()),
        sport: port.to_be(),
        dport: vip.port().to_be(),
    })
}

/// Every entry of lb1's `flows_tcp4`: its backend.
fn flows(pinned: &Pinned) -> std::collections::HashMap<FlowKey, u32> {
    (pinned.all_flows(false, FlowMap::Tcp4).unwrap().into_iter())
        .map(|(k, f)| (k, f.backend))
        .collect()
}

fn status(lab: &Lab) -> Value {
    let text = lab
        .curl("lb1", "http://127.0.0.1:8080/status.json", &[])
        .unwrap();
    serde_json::from_str(&text).expect("status.json")
}

/// The drop counters of the devices between the router and lb1's XDP
/// program.
fn drops(lab: &Lab) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (node, dev) in [
        ("router", "eth0"),
        ("switch", "router"),
        ("switch", "lb1"),
        ("lb1", "eth0"),
    ] {
        let text = lab
            .run(node, &["ip", "-s", "-j", "link", "show", "dev", dev])
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        for dir in ["rx", "tx"] {
            let d = v[0]["stats64"][dir]["dropped"].as_u64().unwrap_or(0);
            out.insert(format!("{node}:{dev} {dir}"), d);
        }
    }
    out
}

/// Packets lb1 sent to the IPv4 service's reals.
fn service_packets(st: &Value) -> u64 {
    (st["services"].as_array().into_iter().flatten())
        .filter(|s| s["name"] == "web4")
        .map(|s| s["counters"]["packets"].as_u64().unwrap_or(0))
        .sum()
}

/// Whether `real` serves in every service.
fn serving(st: &Value, real: &str) -> bool {
    let services = st["services"].as_array().cloned().unwrap_or_default();
    !services.is_empty()
        && services.iter().all(|s| {
            (s["reals"].as_array().into_iter().flatten())
                .any(|r| r["addr"] == real && r["state"] == "serving")
        })
}

/// Polls `ok` every 50 ms for up to `timeout`; whether it held.
fn wait_for(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while !ok() {
        if t.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Sends spoofed TCP ACKs to `vip`:80 out of this namespace's `eth0`, from
/// `src` to `dst` (MACs), with random source addresses and ports, in
/// batches of `sendmmsg`,
/// until [`FLOOD_PACKETS`], [`FLOOD_TIME`] or `stop`. Returns the number
/// sent and how long it took.
fn flood(
    src: [u8; 6],
    dst: [u8; 6],
    vip: Ipv4Addr,
    stop: &AtomicBool,
) -> std::io::Result<(u64, Duration)> {
    const BATCH: usize = 256;
    const LEN: usize = 14 + 20 + 20;
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let _owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&dst);

    let mut rng = SplitMix64(unix_ms() ^ u64::from(std::process::id()) << 32);
    let mut frames = vec![[0u8; LEN]; BATCH];
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < FLOOD_PACKETS && t.elapsed() < FLOOD_TIME && !stop.load(Ordering::Relaxed) {
        let n = BATCH.min((FLOOD_PACKETS - sent) as usize);
        for f in &mut frames[..n] {
            spoofed_ack(f, src, dst, random_source(&mut rng), vip, &mut rng);
        }
        let mut iov: Vec<libc::iovec> = (frames[..n].iter_mut())
            .map(|f| libc::iovec {
                iov_base: f.as_mut_ptr().cast(),
                iov_len: LEN,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = (iov.iter_mut())
            .map(|v| {
                // SAFETY: msghdr is plain data; all zeroes is a valid value.
                let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                h.msg_name = (&raw mut addr).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                h.msg_iov = v;
                h.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: h,
                    msg_len: 0,
                }
            })
            .collect();
        // SAFETY: msgs points at n headers whose buffers live until this returns.
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOBUFS)
                || e.kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            }
            return Err(e);
        }
        sent += r as u64;
    }
    Ok((sent, t.elapsed()))
}

/// A random unicast source outside the lab's own networks.
fn random_source(rng: &mut SplitMix64) -> Ipv4Addr {
    loop {
        let a = Ipv4Addr::from(rng.next_u64() as u32);
        let first = a.octets()[0];
        if (1..224).contains(&first) && ![10, 127, 192, 198, 203].contains(&first) {
            return a;
        }
    }
}

/// Writes an Ethernet + IPv4 + TCP ACK frame into `f`, from a random
/// source port, with the tests' frame builders. The TCP checksum is left
/// zero: the load balancer does not read it, and the reals drop such
/// frames rather than answer the spoofed sources.
fn spoofed_ack(
    f: &mut [u8; 54],
    src: [u8; 6],
    dst: [u8; 6],
    from: Ipv4Addr,
    to: Ipv4Addr,
    rng: &mut SplitMix64,
) {
    let sport = 1024 + (rng.next_u64() % 64_000) as u16;
    let ip = Frame::tcp(from.into(), sport, to.into(), HTTP_PORT, TCP_ACK).ip();
    f.copy_from_slice(&ether(dst, src, None, 0x0800, &ip));
}
