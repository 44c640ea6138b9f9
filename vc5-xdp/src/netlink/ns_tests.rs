//! The real kernel, in network namespaces these tests create (root needed):
//! lookups, solicitation, the monitor and the resolver end to end.

use super::monitor::*;
use super::resolver::*;
use super::wire::*;
use super::*;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

// -- Real kernel, in namespaces we create (root needed) -----------------

use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use vc5_testkit::require_root;

const MAC_A: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const MAC_B: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const MAC_B2: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x22];
const A4: &str = "192.0.2.1";
const B4: &str = "192.0.2.2";
const A6: &str = "2001:db8::1";
const B6: &str = "2001:db8::2";
const NOBODY4: &str = "192.0.2.99";
const NOBODY6: &str = "2001:db8::99";
const GW4: &str = "192.0.2.254";
const GW6: &str = "2001:db8::fe";
const BEHIND_GW4: &str = "198.51.100.7";
const BEHIND_GW6: &str = "2001:db8:1::7";

/// `ip netns add` racing with itself can stack mounts on /run/netns.
static NETNS_LOCK: Mutex<()> = Mutex::new(());
static NETNS_SEQ: AtomicUsize = AtomicUsize::new(0);

fn ip(addr: &str) -> IpAddr {
    addr.parse().unwrap()
}

fn run(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip(8)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a thread in namespace `ns` (setns affects only the
/// calling thread, so the test thread itself never moves).
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // Moves only this thread, which ends when the closure returns.
            vc5_testkit::enter_netns(ns);
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Writes a sysctl under /proc/sys/net as seen from namespace `ns`
/// (/proc/sys/net follows the reading thread's namespace).
fn sysctl(ns: &str, path: &str, value: &str) {
    in_netns(ns, || {
        std::fs::write(format!("/proc/sys/net/{path}"), value)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    });
}

/// Deletes namespaces left by earlier runs of these tests that were
/// killed before their Drop guards ran: ours are named after their
/// process id, so one whose process is gone is an orphan.
fn sweep_dead_labs() {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(|| {
        let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(dir) = std::fs::read_dir("/run/netns") else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("vc5nl-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
            }
        }
    });
}

/// Two namespaces, `a` (where the code under test runs) and `b` (the
/// "real"), joined by veth vA—vB:
///   a: vA 02:00:00:00:00:01 192.0.2.1/24 2001:db8::1/64
///   b: vB 02:00:00:00:00:02 192.0.2.2/24 2001:db8::2/64
/// plus routes in `a` to 198.51.100.0/24 and 2001:db8:1::/64 via
/// gateways on the link (nobody answers for them; no traffic goes there).
/// Both namespaces are deleted on drop, which also removes the veth.
struct Lab {
    a: String,
    b: String,
    names: Vec<String>,
}

impl Lab {
    fn new() -> Lab {
        require_root();
        sweep_dead_labs();
        let n = NETNS_SEQ.fetch_add(1, Ordering::Relaxed);
        let base = format!("vc5nl-{}-{n}", std::process::id());
        let mut lab = Lab {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
            names: Vec::new(),
        };
        {
            let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            for name in [lab.a.clone(), lab.b.clone()] {
                run(&["netns", "add", &name]);
                lab.names.push(name);
            }
        }
        let (a, b) = (lab.a.clone(), lab.b.clone());
        for ns in [&a, &b] {
            // DAD would hold addresses (the link-local one too, which
            // neighbour solicitations need as source) for a second or more.
            sysctl(ns, "ipv6/conf/all/accept_dad", "0");
            sysctl(ns, "ipv6/conf/default/accept_dad", "0");
        }
        run(&[
            "-n", &a, "link", "add", "vA", "type", "veth", "peer", "name", "vB", "netns", &b,
        ]);
        run(&[
            "-n",
            &a,
            "link",
            "set",
            "vA",
            "address",
            &format_mac(&MAC_A),
        ]);
        run(&[
            "-n",
            &b,
            "link",
            "set",
            "vB",
            "address",
            &format_mac(&MAC_B),
        ]);
        // Fast neighbour timers in `a`, so that FAILED and STALE come
        // within a test's time: 3 probes 100 ms apart, REACHABLE for
        // 0.25-0.75 s, 1 s in DELAY.
        for family in ["ipv4", "ipv6"] {
            sysctl(&a, &format!("{family}/neigh/vA/retrans_time_ms"), "100");
            sysctl(
                &a,
                &format!("{family}/neigh/vA/base_reachable_time_ms"),
                "500",
            );
            sysctl(
                &a,
                &format!("{family}/neigh/vA/delay_first_probe_time"),
                "1",
            );
        }
        for (ns, dev) in [(&a, "vA"), (&b, "vB")] {
            run(&["-n", ns, "link", "set", "lo", "up"]);
            run(&["-n", ns, "link", "set", dev, "up"]);
        }
        run(&["-n", &a, "addr", "add", &format!("{A4}/24"), "dev", "vA"]);
        run(&[
            "-n",
            &a,
            "addr",
            "add",
            &format!("{A6}/64"),
            "dev",
            "vA",
            "nodad",
        ]);
        run(&["-n", &b, "addr", "add", &format!("{B4}/24"), "dev", "vB"]);
        run(&[
            "-n",
            &b,
            "addr",
            "add",
            &format!("{B6}/64"),
            "dev",
            "vB",
            "nodad",
        ]);
        run(&["-n", &a, "route", "add", "198.51.100.0/24", "via", GW4]);
        run(&[
            "-n",
            &a,
            "-6",
            "route",
            "add",
            "2001:db8:1::/64",
            "via",
            GW6,
        ]);
        lab
    }

    fn in_a<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.a, f)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        for name in &self.names {
            let ok = Command::new("ip")
                .args(["netns", "del", name])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("warning: could not delete netns {name}");
            }
        }
    }
}

fn fast_config() -> ResolverConfig {
    ResolverConfig {
        solicit_min: Duration::from_millis(500),
        solicit_max: Duration::from_secs(1),
        refresh_interval: Duration::from_secs(1),
        route_interval: Duration::from_secs(5),
    }
}

/// Polls until `done` holds for the current states, checking every
/// report with `check_report`. Returns all reports.
fn poll_until(
    r: &mut Resolver,
    limit: Duration,
    mut done: impl FnMut(&Resolver) -> bool,
) -> Vec<Resolution> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    // Poll at least once, so that reports pending from set_targets are
    // collected even when `done` already holds.
    loop {
        let now = Instant::now();
        assert!(now < deadline, "timed out; reports so far: {seen:#?}");
        for c in r.poll((deadline - now).min(Duration::from_millis(200))) {
            check_report(&c);
            seen.push(c);
        }
        if done(r) {
            return seen;
        }
    }
}

/// Polls for all of `dur`, returning every report.
fn poll_for(r: &mut Resolver, dur: Duration) -> Vec<Resolution> {
    let until = Instant::now() + dur;
    let mut seen = Vec::new();
    loop {
        let now = Instant::now();
        if now >= until {
            return seen;
        }
        for c in r.poll(until - now) {
            check_report(&c);
            seen.push(c);
        }
    }
}

/// What must hold for every report.
fn check_report(c: &Resolution) {
    if let Resolved::Ready { mac, if_mac, .. } = c.state {
        assert_ne!(mac, [0; 6], "{c:?}");
        assert_ne!(if_mac, [0; 6], "{c:?}");
    }
}

fn ready_with(r: &Resolver, addr: &str, want: [u8; 6]) -> bool {
    matches!(r.current(ip(addr)), Some(Resolved::Ready { mac, .. }) if *mac == want)
}

#[test]
fn ns_interface_lookup() {
    let lab = Lab::new();
    lab.in_a(|| {
        let va = interface_by_name("vA").unwrap();
        assert_eq!(va.name, "vA");
        assert_eq!(va.mac, MAC_A);
        assert!(va.index > 1);
        assert_eq!(interface_by_index(va.index).unwrap(), va);
        let lo = interface_by_name("lo").unwrap();
        assert_eq!((lo.index, lo.mac), (1, [0; 6]));
        // vB lives in the other namespace.
        let e = interface_by_name("vB").unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENODEV), "{e}");
        assert!(e.to_string().contains("No such device"), "{e}");
        assert!(interface_by_index(999_999).is_err());
    });
}

#[test]
fn ns_routes() {
    let lab = Lab::new();
    lab.in_a(|| {
        let va = interface_by_name("vA").unwrap().index;
        for (dst, src) in [(B4, A4), (B6, A6), (NOBODY4, A4)] {
            let r = route_to(ip(dst)).unwrap();
            assert_eq!(
                (r.oif, r.gateway, r.rtype),
                (va, None, sys::RTN_UNICAST),
                "{dst}"
            );
            assert_eq!(r.prefsrc, Some(ip(src)), "{dst}");
            assert!(r.is_on_link_unicast());
        }
        for (dst, gw) in [(BEHIND_GW4, GW4), (BEHIND_GW6, GW6)] {
            let r = route_to(ip(dst)).unwrap();
            assert_eq!((r.oif, r.gateway), (va, Some(ip(gw))), "{dst}");
            assert!(!r.is_on_link_unicast());
        }
        let local = route_to(ip(A4)).unwrap();
        assert_eq!((local.oif, local.rtype), (1, sys::RTN_LOCAL));
        // No default route in the namespace.
        let e = route_to(ip("203.0.113.1")).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENETUNREACH), "{e}");
    });
}

/// NTF_USE makes this kernel send ARP/NS for an address nobody has sent
/// to, and the monitor sees the result.
#[test]
fn ns_solicit_resolves_and_monitor_sees_it() {
    let lab = Lab::new();
    lab.in_a(|| {
        let va = interface_by_name("vA").unwrap().index;
        let mut monitor = NeighbourMonitor::new().unwrap();
        assert!(
            neighbours()
                .unwrap()
                .iter()
                .all(|n| n.addr != ip(B4) && n.addr != ip(B6))
        );
        for addr in [B4, B6] {
            assert_eq!(neighbour(va, ip(addr)).unwrap(), None);
            solicit(va, ip(addr)).unwrap();
        }
        let mut pending: HashSet<IpAddr> = [ip(B4), ip(B6)].into();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pending.is_empty() {
            assert!(Instant::now() < deadline, "unresolved: {pending:?}");
            for event in monitor.recv(Duration::from_millis(200)).unwrap() {
                if let NeighbourEvent::Changed(n) = event
                    && n.is_usable()
                    && pending.remove(&n.addr)
                {
                    assert_eq!((n.ifindex, n.mac), (va, Some(MAC_B)), "{n:?}");
                }
            }
        }
        let table = neighbours().unwrap();
        for addr in [B4, B6] {
            let n = table.iter().find(|n| n.addr == ip(addr)).expect("in dump");
            assert!(n.is_usable() && n.mac == Some(MAC_B), "{n:?}");
            assert_eq!(neighbour(va, ip(addr)).unwrap().as_ref(), Some(n));
        }
        // Soliciting a resolved entry is harmless.
        solicit(va, ip(B4)).unwrap();
    });
}

/// NTF_USE would demote a PERMANENT entry (Linux >= 5.16); solicit()
/// must leave it alone.
#[test]
fn ns_solicit_keeps_permanent_entries() {
    let lab = Lab::new();
    run(&[
        "-n",
        &lab.a,
        "neigh",
        "add",
        NOBODY4,
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "vA",
        "nud",
        "permanent",
    ]);
    lab.in_a(|| {
        let va = interface_by_name("vA").unwrap().index;
        solicit(va, ip(NOBODY4)).unwrap();
        let n = neighbour(va, ip(NOBODY4)).unwrap().unwrap();
        assert_eq!(n.state, nud::PERMANENT, "{n:?}");
        assert_eq!(n.mac, Some([2, 0, 0, 0, 0, 0x99]));

        // The resolver uses it as it is, and its refreshes leave it be.
        let mut r = Resolver::with_config(fast_config()).unwrap();
        r.set_targets([ip(NOBODY4)]);
        poll_until(&mut r, Duration::from_secs(3), |r| {
            ready_with(r, NOBODY4, [2, 0, 0, 0, 0, 0x99])
        });
        // Longer than a refresh interval.
        let later = poll_for(&mut r, Duration::from_millis(1500));
        assert_eq!(later, vec![]);
        assert_eq!(
            neighbour(va, ip(NOBODY4)).unwrap().unwrap().state,
            nud::PERMANENT
        );
    });
}

#[test]
fn ns_resolver_resolves_v4_and_v6() {
    let lab = Lab::new();
    // b answers for the gateways too, so the reals behind them resolve
    // to b's MAC through them.
    run(&[
        "-n",
        &lab.b,
        "addr",
        "add",
        &format!("{GW4}/24"),
        "dev",
        "vB",
    ]);
    run(&[
        "-n",
        &lab.b,
        "addr",
        "add",
        &format!("{GW6}/64"),
        "dev",
        "vB",
        "nodad",
    ]);
    lab.in_a(|| {
        let va = interface_by_name("vA").unwrap().index;
        let mut r = Resolver::with_config(fast_config()).unwrap();
        r.set_targets([B4, B6, BEHIND_GW4, BEHIND_GW6, A4].map(ip));
        let ready = |via: Option<&str>, src: &str| Resolved::Ready {
            ifindex: va,
            if_mac: MAC_A,
            mac: MAC_B,
            via: via.map(ip),
            src: Some(ip(src)),
            mtu: 1500,
        };
        let want = [
            (B4, ready(None, A4)),
            (B6, ready(None, A6)),
            (BEHIND_GW4, ready(Some(GW4), A4)),
            (BEHIND_GW6, ready(Some(GW6), A6)),
        ];
        let reports = poll_until(&mut r, Duration::from_secs(5), |r| {
            want.iter()
                .all(|(addr, state)| r.current(ip(addr)) == Some(state))
        });
        // Everything was reported at least once, in address order per call.
        for addr in [B4, B6, BEHIND_GW4, BEHIND_GW6, A4] {
            assert!(reports.iter().any(|c| c.addr == ip(addr)), "{addr} never reported");
        }
        assert!(
            matches!(r.current(ip(A4)), Some(Resolved::Unresolved { reason }) if reason.contains("local")),
            "{:?}",
            r.current(ip(A4))
        );
        // Nothing changes, nothing is reported, refreshes (which make
        // the kernel re-probe the STALE entries) included.
        assert_eq!(poll_for(&mut r, Duration::from_millis(2500)), vec![]);
        // Dropped targets are forgotten.
        r.set_targets([ip(B4)]);
        assert_eq!(r.current(ip(B6)), None);
        assert_eq!(r.poll(Duration::ZERO), vec![]);
    });
}

/// The real gets a new NIC and announces it (gratuitous ARP, unsolicited
/// NA: what arp_notify/ndisc_notify make Linux do on a MAC change).
#[test]
fn ns_resolver_follows_announced_mac_change() {
    let lab = Lab::new();
    sysctl(&lab.b, "ipv4/conf/all/arp_notify", "1");
    sysctl(&lab.b, "ipv6/conf/all/ndisc_notify", "1");
    let b = lab.b.clone();
    lab.in_a(|| {
        let mut r = Resolver::with_config(ResolverConfig {
            // Rule out the refresh path: only the announcement may do it.
            refresh_interval: Duration::from_secs(60),
            ..fast_config()
        })
        .unwrap();
        r.set_targets([ip(B4), ip(B6)]);
        poll_until(&mut r, Duration::from_secs(5), |r| {
            ready_with(r, B4, MAC_B) && ready_with(r, B6, MAC_B)
        });
        let changed = Instant::now();
        run(&[
            "-n",
            &b,
            "link",
            "set",
            "vB",
            "address",
            &format_mac(&MAC_B2),
        ]);
        let reports = poll_until(&mut r, Duration::from_secs(5), |r| {
            ready_with(r, B4, MAC_B2) && ready_with(r, B6, MAC_B2)
        });
        assert!(
            changed.elapsed() < Duration::from_secs(2),
            "took {:?}",
            changed.elapsed()
        );
        // Straight from the old MAC to the new one.
        assert!(reports.iter().all(|c| c.state.is_ready()), "{reports:#?}");
    });
}

/// The real's MAC changes silently; the refresh makes the kernel probe
/// the old MAC, the entry fails, and re-resolution finds the new one.
#[test]
fn ns_resolver_detects_silent_mac_change() {
    let lab = Lab::new();
    let b = lab.b.clone();
    lab.in_a(|| {
        let mut r = Resolver::with_config(fast_config()).unwrap();
        r.set_targets([ip(B4), ip(B6)]);
        poll_until(&mut r, Duration::from_secs(5), |r| {
            ready_with(r, B4, MAC_B) && ready_with(r, B6, MAC_B)
        });
        run(&[
            "-n",
            &b,
            "link",
            "set",
            "vB",
            "address",
            &format_mac(&MAC_B2),
        ]);
        let reports = poll_until(&mut r, Duration::from_secs(10), |r| {
            ready_with(r, B4, MAC_B2) && ready_with(r, B6, MAC_B2)
        });
        // In between it was unusable, and said so.
        for addr in [B4, B6] {
            assert!(
                reports
                    .iter()
                    .any(|c| c.addr == ip(addr) && !c.state.is_ready()),
                "{addr}: {reports:#?}"
            );
        }
    });
}

#[test]
fn ns_resolver_reresolves_deleted_neighbour() {
    let lab = Lab::new();
    let a = lab.a.clone();
    lab.in_a(|| {
        let mut r = Resolver::with_config(fast_config()).unwrap();
        r.set_targets([ip(B4)]);
        poll_until(&mut r, Duration::from_secs(5), |r| ready_with(r, B4, MAC_B));
        run(&["-n", &a, "neigh", "del", B4, "dev", "vA"]);
        let reports = poll_until(&mut r, Duration::from_secs(5), |r| {
            r.current(ip(B4)).is_some_and(|s| !s.is_ready())
        });
        assert!(matches!(
            reports.last(),
            Some(Resolution {
                state: Resolved::Unresolved { .. },
                ..
            })
        ));
        poll_until(&mut r, Duration::from_secs(5), |r| ready_with(r, B4, MAC_B));
    });
}

/// Nobody has the address: it must stay Unresolved, and be re-solicited
/// (each solicitation ends in a FAILED notification).
#[test]
fn ns_resolver_nobody_home_stays_unresolved() {
    let lab = Lab::new();
    lab.in_a(|| {
        let va = interface_by_name("vA").unwrap().index;
        let mut watcher = NeighbourMonitor::new().unwrap();
        let mut r = Resolver::with_config(fast_config()).unwrap();
        r.set_targets([ip(NOBODY4), ip(NOBODY6)]);
        let mut failed: HashMap<IpAddr, usize> = HashMap::new();
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            for c in r.poll(Duration::from_millis(100)) {
                assert!(!c.state.is_ready(), "{c:?}");
            }
            for event in watcher.recv(Duration::ZERO).unwrap() {
                if let NeighbourEvent::Changed(n) = event {
                    assert!(!n.is_usable(), "{n:?}");
                    if n.state == nud::FAILED {
                        *failed.entry(n.addr).or_default() += 1;
                    }
                }
            }
        }
        for addr in [NOBODY4, NOBODY6] {
            assert!(
                matches!(r.current(ip(addr)), Some(Resolved::Unresolved { .. })),
                "{addr}: {:?}",
                r.current(ip(addr))
            );
            let n = failed.get(&ip(addr)).copied().unwrap_or(0);
            assert!(
                n >= 2,
                "{addr}: {n} FAILED notifications, expected re-solicitation"
            );
            let entry = neighbour(va, ip(addr)).unwrap().expect("an entry");
            assert!(!entry.is_usable(), "{entry:?}");
        }
    });
}

/// A tiny receive buffer and a burst of changes overflow the monitor; it
/// must say so rather than silently lose notifications.
#[test]
fn ns_monitor_reports_overrun() {
    let lab = Lab::new();
    let mut monitor = lab.in_a(|| {
        let m = NeighbourMonitor::new().unwrap();
        m.set_rcvbuf(1);
        m
    });
    let batch: String = (1..=250)
        .map(|i| {
            format!(
                "neigh add 192.0.2.{i} lladdr 02:00:00:00:01:{:02x} dev vA nud permanent\n",
                i % 256
            )
        })
        .filter(|l| !l.contains(" 192.0.2.1 ") && !l.contains(" 192.0.2.2 "))
        .collect();
    let mut child = Command::new("ip")
        .args(["-n", &lab.a, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), batch.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let e = monitor.recv(Duration::from_secs(1)).unwrap_err();
    assert!(matches!(e, NetlinkError::Overrun), "{e}");
    assert_eq!(e.errno(), Some(libc::ENOBUFS));
    // Queued leftovers were discarded; the caller's re-dump sees all.
    assert!(monitor.recv(Duration::ZERO).unwrap().is_empty());
    let added = lab.in_a(|| {
        neighbours()
            .unwrap()
            .iter()
            .filter(|n| n.state == nud::PERMANENT && n.addr.to_string().starts_with("192.0.2."))
            .count()
    });
    assert_eq!(added, 248);
}

/// The resolver recovers from an overrun by re-dumping.
#[test]
fn ns_resolver_resyncs_after_overrun() {
    let lab = Lab::new();
    let a = lab.a.clone();
    lab.in_a(|| {
        let mut r = Resolver::with_config(fast_config()).unwrap();
        r.kernel_mut().monitor.set_rcvbuf(1);
        r.set_targets([ip(NOBODY4)]);
        poll_until(&mut r, Duration::from_secs(2), |r| {
            r.current(ip(NOBODY4)).is_some()
        });
        // Flood the monitor, and hide the one change that matters in it.
        let mut batch: String = (100..=250)
            .map(|i| {
                format!("neigh add 192.0.2.{i} lladdr 02:00:00:00:01:01 dev vA nud permanent\n")
            })
            .collect();
        batch.push_str(&format!(
            "neigh replace {NOBODY4} lladdr 02:00:00:00:00:99 dev vA nud permanent\n"
        ));
        let mut child = Command::new("ip")
            .args(["-n", &a, "-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), batch.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
        poll_until(&mut r, Duration::from_secs(3), |r| {
            ready_with(r, NOBODY4, [2, 0, 0, 0, 0, 0x99])
        });
        assert!(
            r.resync_count() > 0,
            "the flood did not overrun the monitor"
        );
    });
}
