//! The resolver's timers and state changes on a model of the kernel
//! with its own clock: no root, no real time. What the model does is
//! what the namespace tests (`ns_tests.rs`) show the real kernel does:
//! a solicited address that has an owner becomes REACHABLE and is
//! notified; one without goes FAILED after the kernel's tries.

use super::*;
use std::collections::BTreeMap;

const ETH: u32 = 2;
const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xaa];
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_A2: [u8; 6] = [2, 0, 0, 0, 0, 0x21];
const MAC_GW: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
/// The model's gateway for the addresses in `via_gw`.
const GW: &str = "192.0.2.254";
/// The kernel's answer time, and its time to give up (3 tries, 1 s
/// apart).
const ANSWER: Duration = Duration::from_millis(2);
const GIVE_UP: Duration = Duration::from_secs(3);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Model {
    start: Instant,
    now: Instant,
    /// On-link destinations (the rest have no route).
    on_link: HashSet<IpAddr>,
    /// Behind a gateway.
    via_gw: HashSet<IpAddr>,
    /// Who answers ARP/NDP, with what MAC.
    owners: HashMap<IpAddr, [u8; 6]>,
    table: HashMap<(u32, IpAddr), Neighbour>,
    queued: Vec<NeighbourEvent>,
    /// Notifications the model will make at a time.
    later: BTreeMap<Instant, Vec<(IpAddr, u16)>>,
    overrun: bool,
    paths: bool,
    /// (time since start, address) of every solicitation.
    solicits: Vec<(Duration, IpAddr)>,
    route_lookups: usize,
    dumps: usize,
}

impl Model {
    fn new() -> Model {
        let start = Instant::now();
        Model {
            start,
            now: start,
            on_link: HashSet::new(),
            via_gw: HashSet::new(),
            owners: HashMap::new(),
            table: HashMap::new(),
            queued: Vec::new(),
            later: BTreeMap::new(),
            overrun: false,
            paths: false,
            solicits: Vec::new(),
            route_lookups: 0,
            dumps: 0,
        }
    }

    /// The kernel changes `addr`'s entry and tells its listeners.
    fn set(&mut self, addr: IpAddr, state: u16) {
        let mac = match state {
            nud::REACHABLE | nud::STALE | nud::PROBE | nud::PERMANENT => {
                self.owners.get(&addr).copied()
            }
            _ => None,
        };
        let n = Neighbour {
            ifindex: ETH,
            addr,
            mac,
            state,
        };
        self.table.insert((ETH, addr), n.clone());
        self.queued.push(NeighbourEvent::Changed(n));
    }

    fn solicited(&self, addr: IpAddr) -> Vec<Duration> {
        self.solicits
            .iter()
            .filter(|(_, a)| *a == addr)
            .map(|(t, _)| *t)
            .collect()
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}

impl Kernel for Model {
    fn route(&mut self, addr: IpAddr) -> Result<Route, NetlinkError> {
        self.route_lookups += 1;
        if self.on_link.contains(&addr) || self.via_gw.contains(&addr) {
            Ok(Route {
                oif: ETH,
                gateway: self.via_gw.contains(&addr).then(|| ip(GW)),
                prefsrc: Some(ip("192.0.2.100")),
                rtype: sys::RTN_UNICAST,
                mtu: None,
            })
        } else {
            Err(NetlinkError::Kernel {
                request: "RTM_GETROUTE".into(),
                errno: libc::ENETUNREACH,
                ext_ack: None,
            })
        }
    }

    fn link(&mut self, index: u32) -> Result<Interface, NetlinkError> {
        Ok(Interface {
            index,
            name: "eth0".into(),
            mac: OUR_MAC,
            carrier: true,
            mtu: 1500,
        })
    }

    fn neighbour(&mut self, ifindex: u32, addr: IpAddr) -> Result<Option<Neighbour>, NetlinkError> {
        Ok(self.table.get(&(ifindex, addr)).cloned())
    }

    fn neighbours(&mut self) -> Result<Vec<Neighbour>, NetlinkError> {
        self.dumps += 1;
        Ok(self.table.values().cloned().collect())
    }

    /// Like the kernel: an owner answers at once; without one the
    /// entry goes FAILED after the kernel's tries; a REACHABLE or
    /// PERMANENT entry is left alone, a STALE one is probed.
    fn solicit(&mut self, _ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        self.solicits.push((self.elapsed(), addr));
        let state = self.table.get(&(ETH, addr)).map(|n| n.state);
        if matches!(state, Some(nud::REACHABLE | nud::PERMANENT)) {
            return Ok(());
        }
        let (at, to) = if self.owners.contains_key(&addr) {
            (self.now + ANSWER, nud::REACHABLE)
        } else {
            (self.now + GIVE_UP, nud::FAILED)
        };
        self.later.entry(at).or_default().push((addr, to));
        Ok(())
    }

    fn neighbour_events(&mut self) -> Result<Vec<NeighbourEvent>, NetlinkError> {
        if std::mem::take(&mut self.overrun) {
            self.queued.clear();
            return Err(NetlinkError::Overrun);
        }
        Ok(std::mem::take(&mut self.queued))
    }

    fn paths_changed(&mut self) -> bool {
        std::mem::take(&mut self.paths)
    }

    /// Time passes to `until`, or to the kernel's next notification.
    fn wait(&mut self, until: Instant) {
        let next = self.later.keys().next().copied();
        match next {
            Some(at) if at <= until => {
                self.now = self.now.max(at);
                for (addr, state) in self.later.remove(&at).unwrap_or_default() {
                    self.set(addr, state);
                }
            }
            _ => self.now = self.now.max(until),
        }
    }

    fn now(&self) -> Instant {
        self.now
    }
}

fn cfg() -> ResolverConfig {
    ResolverConfig {
        solicit_min: Duration::from_secs(1),
        solicit_max: Duration::from_secs(8),
        refresh_interval: Duration::from_secs(30),
        route_interval: Duration::from_secs(30),
    }
}

fn resolver(m: Model) -> Resolver<Model> {
    Resolver::with_kernel(cfg(), m)
}

/// Polls for `d` of model time; every report.
fn run_for(r: &mut Resolver<Model>, d: Duration) -> Vec<(Duration, Resolution)> {
    let end = r.kernel.now + d;
    let mut out = Vec::new();
    while r.kernel.now < end {
        let left = end - r.kernel.now;
        for c in r.poll(left) {
            out.push((r.kernel.elapsed(), c));
        }
    }
    out
}

/// A target with an owner is Ready a moment after it is set (one
/// solicitation), and "used" every refresh interval after that.
#[test]
fn a_real_resolves_and_is_refreshed_every_interval() {
    let a = ip("192.0.2.1");
    let mut m = Model::new();
    m.on_link.insert(a);
    m.owners.insert(a, MAC_A);
    let mut r = resolver(m);
    r.set_targets([a]);
    let reports = run_for(&mut r, Duration::from_secs(100));
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(!reports[0].1.state.is_ready(), "first: still resolving");
    assert_eq!(reports[0].0, Duration::ZERO);
    assert_eq!(
        reports[1].1.state,
        Resolved::Ready {
            ifindex: ETH,
            if_mac: OUR_MAC,
            mac: MAC_A,
            via: None,
            src: Some(ip("192.0.2.100")),
            mtu: 1500,
        }
    );
    assert_eq!(reports[1].0, ANSWER);
    let s: Vec<u64> = r.kernel.solicited(a).iter().map(|d| d.as_secs()).collect();
    assert_eq!(
        s,
        [0, 30, 60, 90],
        "one at once, then every refresh_interval"
    );
}

/// Nobody answers: solicited at once, then with a doubling backoff
/// capped at solicit_max, never reported Ready.
#[test]
fn an_absent_real_is_solicited_with_a_capped_backoff() {
    let a = ip("192.0.2.99");
    let mut m = Model::new();
    m.on_link.insert(a);
    let mut r = resolver(m);
    r.set_targets([a]);
    let reports = run_for(&mut r, Duration::from_secs(60));
    assert!(reports.iter().all(|(_, c)| !c.state.is_ready()));
    let s: Vec<u64> = r.kernel.solicited(a).iter().map(|d| d.as_secs()).collect();
    assert_eq!(s, [0, 1, 3, 7, 15, 23, 31, 39, 47, 55]);
    // The reason follows the kernel's entry: FAILED after its tries.
    match r.current(a) {
        Some(Resolved::Unresolved { reason }) => {
            assert!(reason.contains("FAILED"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// A real that comes back is found within the capped backoff, and
/// the backoff starts over once it is lost again.
#[test]
fn a_real_that_comes_back_is_found_and_its_loss_resolicited_at_once() {
    let a = ip("192.0.2.1");
    let mut m = Model::new();
    m.on_link.insert(a);
    let mut r = resolver(m);
    r.set_targets([a]);
    run_for(&mut r, Duration::from_secs(20));
    r.kernel.owners.insert(a, MAC_A);
    let back = run_for(&mut r, Duration::from_secs(20));
    let ready = back
        .iter()
        .find(|(_, c)| c.state.is_ready())
        .expect("found");
    assert!(ready.0 <= Duration::from_secs(20 + 8) + ANSWER, "{ready:?}");
    // The entry fails (the real moved away): asked again at once.
    let lost = r.kernel.elapsed();
    r.kernel.owners.remove(&a);
    r.kernel.set(a, nud::FAILED);
    let after = run_for(&mut r, Duration::from_secs(4));
    assert!(!after[0].1.state.is_ready());
    let s: Vec<Duration> = r
        .kernel
        .solicited(a)
        .into_iter()
        .filter(|t| *t >= lost)
        .collect();
    assert_eq!(
        s,
        [
            lost,
            lost + Duration::from_secs(1),
            lost + Duration::from_secs(3)
        ]
    );
}

/// A MAC change the kernel notifies is reported as the new Ready
/// state; a notification for another interface is not ours.
#[test]
fn a_notified_mac_change_is_reported_and_other_interfaces_ignored() {
    let a = ip("192.0.2.1");
    let mut m = Model::new();
    m.on_link.insert(a);
    m.owners.insert(a, MAC_A);
    let mut r = resolver(m);
    r.set_targets([a]);
    run_for(&mut r, Duration::from_secs(1));
    r.kernel.queued.push(NeighbourEvent::Changed(Neighbour {
        ifindex: ETH + 1,
        addr: a,
        mac: Some(MAC_A2),
        state: nud::REACHABLE,
    }));
    assert_eq!(run_for(&mut r, Duration::from_secs(1)), []);
    r.kernel.owners.insert(a, MAC_A2);
    r.kernel.set(a, nud::REACHABLE);
    let c = run_for(&mut r, Duration::from_secs(1));
    assert_eq!(c.len(), 1);
    assert!(matches!(c[0].1.state, Resolved::Ready { mac: MAC_A2, .. }));
}

/// Lost notifications (an overrun): the table is dumped and what it
/// says now is applied, the queue's stale ones dropped.
#[test]
fn an_overrun_re_reads_the_table() {
    let a = ip("192.0.2.1");
    let mut m = Model::new();
    m.on_link.insert(a);
    m.owners.insert(a, MAC_A);
    let mut r = resolver(m);
    r.set_targets([a]);
    run_for(&mut r, Duration::from_secs(1));
    assert!(r.current(a).unwrap().is_ready());
    // The entry failed, and the notification was lost.
    r.kernel.table.get_mut(&(ETH, a)).unwrap().state = nud::FAILED;
    r.kernel.overrun = true;
    let c = run_for(&mut r, Duration::from_millis(1));
    assert_eq!((r.resync_count(), r.kernel.dumps), (1, 1));
    assert_eq!(c.len(), 1);
    assert!(!c[0].1.state.is_ready());
}

/// Route changes: a notification re-checks paths, at most once per
/// PATH_RECHECK_MIN however many arrive; without one, every
/// route_interval. A real behind a gateway is reached through the
/// gateway's MAC, and says so.
#[test]
fn routes_are_rechecked_on_notification_rate_limited_and_periodically() {
    let a = ip("192.0.2.1");
    let b = ip("198.51.100.7");
    let mut m = Model::new();
    m.on_link.insert(a);
    m.owners.insert(a, MAC_A);
    m.owners.insert(ip(GW), MAC_GW);
    m.via_gw.insert(b);
    let mut r = resolver(m);
    r.set_targets([a, b]);
    run_for(&mut r, Duration::from_secs(1));
    assert!(
        matches!(
            r.current(b),
            Some(Resolved::Ready { mac: MAC_GW, via: Some(gw), .. }) if *gw == ip(GW)
        ),
        "{:?}",
        r.current(b)
    );
    assert_eq!(r.kernel.solicited(b), [], "the gateway is, not b");
    assert_eq!(r.kernel.solicited(ip(GW)), [Duration::ZERO]);
    let base = r.kernel.route_lookups;
    // A storm of notifications over 1 s: at most 1 s / 200 ms + 1.
    for _ in 0..100 {
        r.kernel.paths = true;
        run_for(&mut r, Duration::from_millis(10));
    }
    let storm = r.kernel.route_lookups - base;
    assert!(
        (2..=2 * 6).contains(&storm),
        "{storm} lookups for 2 targets"
    );
    // Quiet: one re-check per route_interval.
    let base = r.kernel.route_lookups;
    run_for(&mut r, Duration::from_secs(90));
    assert_eq!(r.kernel.route_lookups - base, 2 * 3);
    // The route moves on-link: the next notification finds it, with
    // its own MAC, and the gateway nobody uses any more is forgotten.
    r.kernel.via_gw.remove(&b);
    r.kernel.on_link.insert(b);
    r.kernel.owners.insert(b, MAC_A2);
    r.kernel.paths = true;
    let c = run_for(&mut r, Duration::from_secs(1));
    assert!(
        c.iter().any(|(_, c)| c.addr == b
            && matches!(
                c.state,
                Resolved::Ready {
                    mac: MAC_A2,
                    via: None,
                    ..
                }
            )),
        "{c:?}"
    );
    let gw_solicits = r.kernel.solicited(ip(GW)).len();
    run_for(&mut r, Duration::from_secs(100));
    assert_eq!(r.kernel.solicited(ip(GW)).len(), gw_solicits);
}

/// Reals behind one gateway share it: one solicitation and one refresh
/// stream for all of them; its failure takes them all out, saying that
/// the gateway is what is missing, and its return brings them back.
#[test]
fn reals_behind_one_gateway_follow_it_together() {
    let reals: Vec<IpAddr> = (1..=50).map(|i| ip(&format!("198.51.100.{i}"))).collect();
    let mut m = Model::new();
    m.owners.insert(ip(GW), MAC_GW);
    m.via_gw.extend(reals.iter().copied());
    let mut r = resolver(m);
    r.set_targets(reals.iter().copied());
    let c = run_for(&mut r, Duration::from_secs(61));
    assert!(
        reals
            .iter()
            .all(|a| r.current(*a).is_some_and(Resolved::is_ready))
    );
    assert_eq!(c.iter().filter(|(_, c)| c.state.is_ready()).count(), 50);
    let s: Vec<u64> = r
        .kernel
        .solicited(ip(GW))
        .iter()
        .map(|d| d.as_secs())
        .collect();
    assert_eq!(s, [0, 30, 60], "one stream for 50 reals");
    assert!(reals.iter().all(|a| r.kernel.solicited(*a).is_empty()));

    r.kernel.owners.remove(&ip(GW));
    r.kernel.set(ip(GW), nud::FAILED);
    let c = run_for(&mut r, Duration::from_secs(1));
    assert_eq!(c.len(), 50);
    for (_, c) in &c {
        match &c.state {
            Resolved::Unresolved { reason } => {
                assert!(reason.starts_with("gateway 192.0.2.254: "), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
    r.kernel.owners.insert(ip(GW), MAC_GW);
    run_for(&mut r, Duration::from_secs(10));
    assert!(
        reals
            .iter()
            .all(|a| r.current(*a).is_some_and(Resolved::is_ready))
    );
}

/// A PERMANENT entry (an operator's static one) is used and never
/// solicited: soliciting would demote it.
#[test]
fn a_permanent_entry_is_used_and_never_solicited() {
    let a = ip("192.0.2.1");
    let mut m = Model::new();
    m.on_link.insert(a);
    m.owners.insert(a, MAC_A);
    m.set(a, nud::PERMANENT);
    m.queued.clear();
    let mut r = resolver(m);
    r.set_targets([a]);
    let c = run_for(&mut r, Duration::from_secs(100));
    assert_eq!(c.len(), 1);
    assert!(c[0].1.state.is_ready());
    assert_eq!(r.kernel.solicited(a), []);
}

/// Targets no longer wanted are forgotten without a report; a new one
/// is looked up and reported.
#[test]
fn set_targets_forgets_and_adds() {
    let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
    let mut m = Model::new();
    m.on_link.extend([a, b]);
    m.owners.insert(a, MAC_A);
    m.owners.insert(b, MAC_A2);
    let mut r = resolver(m);
    r.set_targets([a]);
    run_for(&mut r, Duration::from_secs(1));
    r.set_targets([b]);
    let c = run_for(&mut r, Duration::from_secs(1));
    assert!(c.iter().all(|(_, c)| c.addr == b), "{c:?}");
    assert!(r.current(a).is_none());
    assert!(r.current(b).unwrap().is_ready());
}
