//! The resolver: follows, for a set of targets (the reals), the route the
//! kernel would take and the MAC of its next hop (the target itself when it
//! is on-link, else the route's gateway) through the neighbour table,
//! soliciting with backoff and refreshing.
//!
//! Next hops are followed once however many targets share them (every real
//! behind one gateway), so solicitations and refreshes scale with the
//! neighbours, not with the reals.

use super::monitor::{NeighbourEvent, NeighbourMonitor};
use super::socket::{MONITOR_RCVBUF, Socket, wait_any_readable};
use super::wire::{is_path_relevant, split_messages, sys};
use super::{Interface, Neighbour, NetlinkError, Route, format_mac, nud, nud_state_name};
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// The state of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Forward to `mac` out of `ifindex`, with `if_mac` as the source MAC.
    /// Neither MAC is ever zero.
    Ready {
        ifindex: u32,
        if_mac: [u8; 6],
        /// The next hop's MAC: the target's own when `via` is `None`.
        mac: [u8; 6],
        /// The gateway the kernel's route names, when the target is not
        /// on-link (layer-2 DSR cannot use such a target; tunnels can).
        via: Option<IpAddr>,
        /// The source address the kernel would use towards the target.
        src: Option<IpAddr>,
        /// The MTU towards the target: the route's own if it has one, else
        /// the egress interface's (0: unknown).
        mtu: u32,
    },
    /// Do not forward to this target; `reason` says why.
    Unresolved { reason: String },
}

impl Resolved {
    pub fn is_ready(&self) -> bool {
        matches!(self, Resolved::Ready { .. })
    }
}

/// A change of one target's state, returned by [`Resolver::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub addr: IpAddr,
    pub state: Resolved,
}

/// Timings of a [`Resolver`].
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// First re-solicitation delay for an unresolved next hop; doubles on
    /// each try. Each solicitation makes the kernel send up to
    /// `mcast_solicit` (3) broadcasts, `retrans_time` (1 s) apart.
    pub solicit_min: Duration,
    /// Cap of that backoff, which bounds how long a real that comes back
    /// silently waits to be found.
    pub solicit_max: Duration,
    /// How often a resolved next hop is "used" so that the kernel
    /// re-verifies a `STALE` entry (see the module docs). Bounds how long a
    /// silent MAC change goes unnoticed.
    pub refresh_interval: Duration,
    /// Routes are re-checked on every link/address/route notification; this
    /// is the fallback period in case one was lost.
    pub route_interval: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            solicit_min: Duration::from_secs(1),
            solicit_max: Duration::from_secs(8),
            refresh_interval: Duration::from_secs(30),
            route_interval: Duration::from_secs(30),
        }
    }
}

/// The egress side of a target: where its frames leave, and to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Path {
    pub(super) ifindex: u32,
    pub(super) if_mac: [u8; 6],
    /// The route's gateway; `None` when the target is on-link.
    pub(super) via: Option<IpAddr>,
    pub(super) src: Option<IpAddr>,
    pub(super) mtu: u32,
}

impl Path {
    /// The neighbour whose MAC the target's frames go to.
    pub(super) fn hop(&self, target: IpAddr) -> HopKey {
        (self.ifindex, self.via.unwrap_or(target))
    }
}

/// A next hop: (egress interface, address).
pub(super) type HopKey = (u32, IpAddr);

#[derive(Debug)]
pub(super) struct Target {
    pub(super) path: Result<Path, String>,
    pub(super) state: Resolved,
    /// What the caller was last told; `None` until the first report.
    pub(super) reported: Option<Resolved>,
}

/// A neighbour followed for one or more targets.
#[derive(Debug)]
pub(super) struct Hop {
    pub(super) neigh: Option<Neighbour>,
    /// Next solicitation (unresolved) or refresh (usable).
    pub(super) next_solicit: Instant,
    pub(super) backoff: Duration,
    /// The targets whose frames go to this neighbour.
    pub(super) users: HashSet<IpAddr>,
}

impl Hop {
    fn usable(&self) -> bool {
        self.neigh.as_ref().is_some_and(Neighbour::is_usable)
    }
}

/// What the resolver asks of the kernel, and its clock: a trait so that its
/// backoff, refresh, resync and route re-check logic tests without root and
/// without real time. [`Netlink`] is the kernel; the unit tests drive a
/// model of one.
pub trait Kernel {
    /// The route the kernel would take to `addr`.
    fn route(&mut self, addr: IpAddr) -> Result<Route, NetlinkError>;
    /// The interface with index `index`.
    fn link(&mut self, index: u32) -> Result<Interface, NetlinkError>;
    /// The neighbour entry for `addr` on `ifindex`, if there is one.
    fn neighbour(&mut self, ifindex: u32, addr: IpAddr) -> Result<Option<Neighbour>, NetlinkError>;
    /// The whole neighbour table.
    fn neighbours(&mut self) -> Result<Vec<Neighbour>, NetlinkError>;
    /// Makes the kernel resolve (or re-verify) `addr` on `ifindex`, without
    /// looking the entry up first (the resolver knows it).
    fn solicit(&mut self, ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError>;
    /// The neighbour notifications that have arrived, without waiting;
    /// [`NetlinkError::Overrun`] if some were lost (the caller re-dumps).
    fn neighbour_events(&mut self) -> Result<Vec<NeighbourEvent>, NetlinkError>;
    /// Whether a link, address or route change that may move a target's
    /// path has arrived (or such notifications were lost), without waiting.
    fn paths_changed(&mut self) -> bool;
    /// Waits until a notification may have arrived, or until `until`.
    fn wait(&mut self, until: Instant);
    /// Now, on the clock that `wait` and the resolver's timers use.
    fn now(&self) -> Instant;
}

/// The kernel of this thread's network namespace, over rtnetlink.
pub struct Netlink {
    sock: Socket,
    pub(super) monitor: NeighbourMonitor,
    /// Subscribed to link, address and route changes; only used as a "routes
    /// may have changed" signal.
    watch: Socket,
}

impl Netlink {
    pub fn new() -> Result<Self, NetlinkError> {
        // Subscribe before any lookup, so no change falls in between.
        let monitor = NeighbourMonitor::new()?;
        let watch = Socket::open(&[
            sys::RTNLGRP_LINK,
            sys::RTNLGRP_IPV4_IFADDR,
            sys::RTNLGRP_IPV6_IFADDR,
            sys::RTNLGRP_IPV4_ROUTE,
            sys::RTNLGRP_IPV6_ROUTE,
        ])?;
        watch.grow_rcvbuf(MONITOR_RCVBUF);
        Ok(Netlink {
            sock: Socket::open(&[])?,
            monitor,
            watch,
        })
    }
}

impl Kernel for Netlink {
    fn route(&mut self, addr: IpAddr) -> Result<Route, NetlinkError> {
        self.sock.get_route(addr)
    }

    fn link(&mut self, index: u32) -> Result<Interface, NetlinkError> {
        self.sock.get_link(index, None)
    }

    fn neighbour(&mut self, ifindex: u32, addr: IpAddr) -> Result<Option<Neighbour>, NetlinkError> {
        self.sock.get_neigh(ifindex, addr)
    }

    fn neighbours(&mut self) -> Result<Vec<Neighbour>, NetlinkError> {
        self.sock.dump_neigh()
    }

    fn solicit(&mut self, ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        self.sock.solicit_unchecked(ifindex, addr)
    }

    fn neighbour_events(&mut self) -> Result<Vec<NeighbourEvent>, NetlinkError> {
        self.monitor.recv(Duration::ZERO)
    }

    fn paths_changed(&mut self) -> bool {
        let mut changed = false;
        loop {
            match self.watch.recv_datagram(libc::MSG_DONTWAIT) {
                Ok((len, _)) => {
                    if split_messages(&self.watch.buf[..len])
                        .is_ok_and(|msgs| msgs.iter().any(is_path_relevant))
                    {
                        changed = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return changed,
                Err(e) => {
                    // Overrun: some change may be lost, so assume one.
                    debug!("netlink resolver: route watch: {e}");
                    changed = true;
                    if e.raw_os_error() != Some(libc::ENOBUFS) {
                        return changed;
                    }
                }
            }
        }
    }

    fn wait(&mut self, until: Instant) {
        let left = until.saturating_duration_since(Instant::now());
        let fds = [self.monitor.as_fd(), self.watch.as_fd()];
        if let Err(e) = wait_any_readable(&fds, left) {
            warn!("netlink resolver: poll: {e}");
            std::thread::sleep(Duration::from_millis(10).min(left));
        }
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Resolves and follows the next hops of a set of targets (the reals).
///
/// Typical use: `Resolver::new()?`, then `set_targets(reals)` whenever the
/// configuration changes, and a loop calling `poll(Duration::from_secs(1))`
/// that applies each returned [`Resolution`] to the forwarding tables (a
/// [`Resolved::Ready`] installs or updates the real's MACs, a
/// [`Resolved::Unresolved`] takes it out of service).
pub struct Resolver<K: Kernel = Netlink> {
    cfg: ResolverConfig,
    kernel: K,
    targets: HashMap<IpAddr, Target>,
    hops: HashMap<HopKey, Hop>,
    paths_dirty: bool,
    last_path_check: Instant,
    /// How often the neighbour table was re-dumped (for tests and stats).
    resyncs: u64,
}

/// Minimum time between two notification-triggered route re-checks, so a
/// storm of route notifications cannot keep the resolver busy.
pub(super) const PATH_RECHECK_MIN: Duration = Duration::from_millis(200);

impl Resolver<Netlink> {
    pub fn new() -> Result<Self, NetlinkError> {
        Self::with_config(ResolverConfig::default())
    }

    /// A resolver with other timings, on this thread's network namespace.
    pub fn with_config(cfg: ResolverConfig) -> Result<Self, NetlinkError> {
        Ok(Self::with_kernel(cfg, Netlink::new()?))
    }
}

impl<K: Kernel> Resolver<K> {
    /// A resolver on `kernel`. Values too small to be sane are raised (a
    /// zero backoff would make [`Resolver::poll`] spin).
    pub fn with_kernel(mut cfg: ResolverConfig, kernel: K) -> Self {
        cfg.solicit_min = cfg.solicit_min.max(Duration::from_millis(10));
        cfg.solicit_max = cfg.solicit_max.max(cfg.solicit_min);
        cfg.refresh_interval = cfg.refresh_interval.max(Duration::from_millis(100));
        cfg.route_interval = cfg.route_interval.max(Duration::from_millis(100));
        let last_path_check = kernel.now();
        Resolver {
            cfg,
            kernel,
            targets: HashMap::new(),
            hops: HashMap::new(),
            paths_dirty: false,
            last_path_check,
            resyncs: 0,
        }
    }

    /// The kernel it runs on (tests drive a model of one through it).
    pub fn kernel_mut(&mut self) -> &mut K {
        &mut self.kernel
    }

    /// Replaces the set of targets. New targets are looked up and their
    /// next hops solicited at once; their first state is reported by the
    /// next [`poll`]. Targets no longer in the set are forgotten without a
    /// report.
    ///
    /// [`poll`]: Resolver::poll
    pub fn set_targets(&mut self, addrs: impl IntoIterator<Item = IpAddr>) {
        let wanted: HashSet<IpAddr> = addrs.into_iter().collect();
        let gone: Vec<IpAddr> = self
            .targets
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(t) = self.targets.remove(&addr) {
                self.detach(addr, &t.path);
            }
        }
        let now = self.kernel.now();
        let mut links = HashMap::new();
        for addr in wanted {
            if self.targets.contains_key(&addr) {
                continue;
            }
            let path = lookup_path(&mut self.kernel, &mut links, addr);
            self.attach(addr, &path, now);
            let state = self.derive(addr, &path);
            self.targets.insert(
                addr,
                Target {
                    path,
                    state,
                    reported: None,
                },
            );
        }
    }

    /// How many times the neighbour table had to be re-read because
    /// notifications were lost (monitor overruns); worth exporting as a
    /// statistic, since a steady count means the receive buffer is too small.
    pub fn resync_count(&self) -> u64 {
        self.resyncs
    }

    /// The current state of `addr`, if it is a target.
    pub fn current(&self, addr: IpAddr) -> Option<&Resolved> {
        self.targets.get(&addr).map(|t| &t.state)
    }

    /// Processes notifications and timers for up to `timeout`, returning as
    /// soon as some target's state has changed since the last report (or
    /// when the time is up, with nothing). Results are sorted by address.
    /// Errors are logged and recovered from (a monitor overrun leads to a
    /// fresh dump), never returned: the caller's job is only to apply what
    /// it is given.
    pub fn poll(&mut self, timeout: Duration) -> Vec<Resolution> {
        let start = self.kernel.now();
        let deadline = start
            .checked_add(timeout)
            .unwrap_or_else(|| start + Duration::from_secs(365 * 24 * 3600));
        loop {
            self.drain_notifications();
            let now = self.kernel.now();
            self.run_timers(now);
            let changes = self.take_changes();
            let now = self.kernel.now();
            if !changes.is_empty() || now >= deadline {
                return changes;
            }
            self.kernel.wait(self.next_timer().min(deadline));
        }
    }

    /// Makes `addr` a user of its path's next hop, following the hop (looked
    /// up and solicited at once) if it is new.
    fn attach(&mut self, addr: IpAddr, path: &Result<Path, String>, now: Instant) {
        let Ok(path) = path else {
            return;
        };
        let key = path.hop(addr);
        if let Some(hop) = self.hops.get_mut(&key) {
            hop.users.insert(addr);
            return;
        }
        let neigh = self.kernel.neighbour(key.0, key.1).unwrap_or_else(|e| {
            warn!("netlink resolver: {e}");
            None
        });
        let mut hop = Hop {
            neigh,
            next_solicit: now,
            backoff: self.cfg.solicit_min,
            users: HashSet::from([addr]),
        };
        solicit_due(&mut self.kernel, &self.cfg, key, &mut hop, now);
        self.hops.insert(key, hop);
    }

    /// Undoes [`attach`](Self::attach); a hop nobody uses is forgotten.
    fn detach(&mut self, addr: IpAddr, path: &Result<Path, String>) {
        let Ok(path) = path else {
            return;
        };
        let key = path.hop(addr);
        if let Some(hop) = self.hops.get_mut(&key) {
            hop.users.remove(&addr);
            if hop.users.is_empty() {
                self.hops.remove(&key);
            }
        }
    }

    fn derive(&self, addr: IpAddr, path: &Result<Path, String>) -> Resolved {
        let neigh = path
            .as_ref()
            .ok()
            .and_then(|p| self.hops.get(&p.hop(addr)))
            .and_then(|h| h.neigh.as_ref());
        derive_state(path, neigh)
    }

    pub(super) fn drain_notifications(&mut self) {
        let now = self.kernel.now();
        match self.kernel.neighbour_events() {
            Ok(events) => {
                for event in events {
                    match event {
                        NeighbourEvent::Changed(n) => {
                            self.apply_neigh(now, (n.ifindex, n.addr), Some(n))
                        }
                        NeighbourEvent::Deleted { ifindex, addr } => {
                            self.apply_neigh(now, (ifindex, addr), None)
                        }
                    }
                }
            }
            Err(e) => {
                // Overrun, or something stranger: either way the only safe
                // view of the table is a fresh dump.
                warn!("netlink resolver: {e}; re-reading the neighbour table");
                self.resync_neighbours(now);
            }
        }
        if self.kernel.paths_changed() {
            self.paths_dirty = true;
        }
    }

    /// A neighbour entry changed; an entry that is no next hop of ours (on
    /// another interface, say) is ignored: if a route moved there, the
    /// route watch will tell us.
    pub(super) fn apply_neigh(&mut self, now: Instant, key: HopKey, neigh: Option<Neighbour>) {
        let Some(hop) = self.hops.get_mut(&key) else {
            return;
        };
        let was_usable = hop.usable();
        hop.neigh = neigh;
        match (was_usable, hop.usable()) {
            (true, false) => {
                // Lost a working MAC: ask again at once, then back off.
                hop.backoff = self.cfg.solicit_min;
                hop.next_solicit = now;
            }
            (false, true) => {
                hop.backoff = self.cfg.solicit_min;
                hop.next_solicit = now + self.cfg.refresh_interval;
            }
            _ => {}
        }
        let neigh = hop.neigh.as_ref();
        for addr in &hop.users {
            if let Some(t) = self.targets.get_mut(addr) {
                t.state = derive_state(&t.path, neigh);
            }
        }
    }

    pub(super) fn resync_neighbours(&mut self, now: Instant) {
        self.resyncs += 1;
        let table = match self.kernel.neighbours() {
            Ok(table) => table,
            Err(e) => {
                warn!("netlink resolver: neighbour dump: {e}");
                return;
            }
        };
        let mut by_key: HashMap<HopKey, Neighbour> = table
            .into_iter()
            .map(|n| ((n.ifindex, n.addr), n))
            .collect();
        let keys: Vec<HopKey> = self.hops.keys().copied().collect();
        for key in keys {
            let n = by_key.remove(&key);
            self.apply_neigh(now, key, n);
        }
    }

    pub(super) fn run_timers(&mut self, now: Instant) {
        let periodic = now >= self.last_path_check + self.cfg.route_interval;
        let prompted = self.paths_dirty && now >= self.last_path_check + PATH_RECHECK_MIN;
        if periodic || prompted {
            self.recheck_paths(now);
        }
        for (key, hop) in self.hops.iter_mut() {
            solicit_due(&mut self.kernel, &self.cfg, *key, hop, now);
        }
    }

    pub(super) fn recheck_paths(&mut self, now: Instant) {
        self.paths_dirty = false;
        self.last_path_check = now;
        let mut links = HashMap::new();
        let mut moved = Vec::new();
        for (addr, target) in self.targets.iter() {
            let path = lookup_path(&mut self.kernel, &mut links, *addr);
            if path != target.path {
                debug!(
                    "netlink resolver: {addr}: path {:?} -> {path:?}",
                    target.path
                );
                moved.push((*addr, path));
            }
        }
        for (addr, path) in moved {
            let Some(old) = self.targets.get(&addr).map(|t| t.path.clone()) else {
                continue;
            };
            self.detach(addr, &old);
            self.attach(addr, &path, now);
            let state = self.derive(addr, &path);
            if let Some(t) = self.targets.get_mut(&addr) {
                t.path = path;
                t.state = state;
            }
        }
    }

    pub(super) fn next_timer(&self) -> Instant {
        let paths = if self.paths_dirty {
            self.last_path_check + PATH_RECHECK_MIN
        } else {
            self.last_path_check + self.cfg.route_interval
        };
        self.hops
            .values()
            .map(|h| h.next_solicit)
            .fold(paths, Instant::min)
    }

    pub(super) fn take_changes(&mut self) -> Vec<Resolution> {
        let mut changes: Vec<Resolution> = self
            .targets
            .iter_mut()
            .filter(|(_, t)| t.reported.as_ref() != Some(&t.state))
            .map(|(addr, t)| {
                t.reported = Some(t.state.clone());
                Resolution {
                    addr: *addr,
                    state: t.state.clone(),
                }
            })
            .collect();
        changes.sort_by_key(|c| c.addr);
        changes
    }
}

/// Solicits (unresolved) or refreshes (usable) the next hop `key` if it is
/// due.
pub(super) fn solicit_due(
    kernel: &mut impl Kernel,
    cfg: &ResolverConfig,
    key: HopKey,
    hop: &mut Hop,
    now: Instant,
) {
    if now < hop.next_solicit {
        return;
    }
    if hop.usable() {
        hop.next_solicit = now + cfg.refresh_interval;
    } else {
        hop.next_solicit = now + hop.backoff;
        hop.backoff = (hop.backoff * 2).min(cfg.solicit_max);
    }
    // PERMANENT and NOARP entries need no resolution, and soliciting a
    // PERMANENT one would demote it (see the module docs).
    if hop
        .neigh
        .as_ref()
        .is_some_and(|n| n.state & (nud::PERMANENT | nud::NOARP) != 0)
    {
        return;
    }
    let (ifindex, addr) = key;
    debug!("netlink resolver: soliciting {addr} on ifindex {ifindex}");
    if let Err(e) = kernel.solicit(ifindex, addr) {
        warn!("netlink resolver: {e}");
    }
}

/// Finds the egress interface for `addr`, and its gateway if it has one.
pub(super) fn lookup_path(
    kernel: &mut impl Kernel,
    links: &mut HashMap<u32, Interface>,
    addr: IpAddr,
) -> Result<Path, String> {
    if let Some(why) = unusable_target(addr) {
        return Err(why.to_owned());
    }
    let route = kernel.route(addr).map_err(|e| format!("no route: {e}"))?;
    match route.rtype {
        sys::RTN_UNICAST => {}
        sys::RTN_LOCAL => return Err("address is local to this host".to_owned()),
        t => return Err(format!("route is {}, not unicast", rtn_name(t))),
    }
    let link = match links.get(&route.oif) {
        Some(link) => link.clone(),
        None => {
            let link = kernel
                .link(route.oif)
                .map_err(|e| format!("egress interface: {e}"))?;
            links.insert(route.oif, link.clone());
            link
        }
    };
    if link.mac == [0; 6] {
        return Err(format!(
            "egress interface {} has no Ethernet MAC",
            link.name
        ));
    }
    if let Some(gw) = route.gateway
        && let Some(why) = unusable_target(gw).filter(|_| !is_link_local(gw))
    {
        return Err(format!("gateway {gw} is unusable: {why}"));
    }
    Ok(Path {
        ifindex: link.index,
        if_mac: link.mac,
        via: route.gateway,
        src: route.prefsrc,
        mtu: route.mtu.unwrap_or(link.mtu),
    })
}

/// An IPv6 link-local address: no target, but the usual IPv6 gateway (the
/// route names its interface).
fn is_link_local(addr: IpAddr) -> bool {
    matches!(addr, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80)
}
/// Addresses that can never be a real, whatever the routing table says.
pub(super) fn unusable_target(addr: IpAddr) -> Option<&'static str> {
    match addr {
        _ if addr.is_unspecified() => Some("unspecified address"),
        _ if addr.is_loopback() => Some("loopback address"),
        _ if addr.is_multicast() => Some("multicast address"),
        IpAddr::V4(a) if a.is_broadcast() => Some("broadcast address"),
        // fe80::/10 needs an interface to mean anything; reals are
        // configured by address alone.
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => {
            Some("IPv6 link-local address (needs an interface)")
        }
        _ => None,
    }
}

pub(super) fn rtn_name(t: u8) -> String {
    match t {
        sys::RTN_LOCAL => "local".into(),
        sys::RTN_BROADCAST => "broadcast".into(),
        sys::RTN_ANYCAST => "anycast".into(),
        sys::RTN_MULTICAST => "multicast".into(),
        sys::RTN_BLACKHOLE => "blackhole".into(),
        sys::RTN_UNREACHABLE => "unreachable".into(),
        sys::RTN_PROHIBIT => "prohibit".into(),
        t => format!("type {t}"),
    }
}

/// A target's state from its path and its next hop's neighbour entry.
pub(super) fn derive_state(path: &Result<Path, String>, neigh: Option<&Neighbour>) -> Resolved {
    let path = match path {
        Ok(path) => path,
        Err(reason) => {
            return Resolved::Unresolved {
                reason: reason.clone(),
            };
        }
    };
    // Whose MAC is missing, in the reason: the real's or its gateway's.
    let whose = match path.via {
        Some(gw) => format!("gateway {gw}: "),
        None => String::new(),
    };
    let reason = match neigh {
        Some(n) if n.is_usable() => {
            // is_usable() guarantees a MAC; the match keeps that visible.
            if let Some(mac) = n.mac {
                return Resolved::Ready {
                    ifindex: path.ifindex,
                    if_mac: path.if_mac,
                    mac,
                    via: path.via,
                    src: path.src,
                    mtu: path.mtu,
                };
            }
            "neighbour has no MAC".to_owned()
        }
        None => "resolving (no neighbour entry yet)".to_owned(),
        Some(n) => match n.state {
            nud::NONE | nud::INCOMPLETE => "resolving (no ARP/NDP reply yet)".to_owned(),
            nud::FAILED => "no ARP/NDP reply (neighbour FAILED)".to_owned(),
            state => match n.mac {
                Some(mac) => format!(
                    "neighbour {} with unusable MAC {}",
                    nud_state_name(state),
                    format_mac(&mac)
                ),
                None => format!("neighbour {} without MAC", nud_state_name(state)),
            },
        },
    };
    Resolved::Unresolved {
        reason: format!("{whose}{reason}"),
    }
}

#[cfg(test)]
mod tests;
