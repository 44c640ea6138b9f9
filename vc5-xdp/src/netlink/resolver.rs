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
mod tests {
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

        fn neighbour(
            &mut self,
            ifindex: u32,
            addr: IpAddr,
        ) -> Result<Option<Neighbour>, NetlinkError> {
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
}
