//! Link, route and neighbour (ARP/NDP) lookups over raw rtnetlink.
//!
//! vc5 forwards each packet at layer 2: XDP rewrites the destination MAC to a
//! real server's MAC and transmits the frame unchanged otherwise (Direct
//! Server Return). That only works if, for every real, we know
//!
//! * the interface the kernel would reach it through, which must be *on-link*
//!   (a real reached via a gateway would get its frames addressed to the
//!   wrong host, so that is an error, not a fallback), with that interface's
//!   ifindex and MAC (the frame's source), and
//! * the real's own MAC, taken from the kernel's neighbour table, which we
//!   make the kernel fill in ourselves, follow as it changes, and never use
//!   while it is unresolved or zero.
//!
//! The module speaks `NETLINK_ROUTE` directly over `libc` sockets instead of
//! using a netlink crate: we need only a handful of messages, and owning the
//! parsing keeps the dependency tree and the `unsafe` surface small (the only
//! `unsafe` is in the socket system calls; all message parsing is safe slice
//! code). Everything is blocking std code. Each socket is bound to the network
//! namespace of the thread that created it, so all functions work inside
//! whatever namespace the calling thread has `setns(2)`-ed into; nothing reads
//! `/sys` or `/proc`.
//!
//! # Solicitation
//!
//! [`solicit`] sends `RTM_NEWNEIGH` with `NTF_USE` and `NLM_F_CREATE`. The
//! kernel creates the entry if needed and runs `neigh_event_send()` on it, the
//! same thing it does when it has a packet to send to that address: an entry
//! in `NONE`/`FAILED` goes to `INCOMPLETE` and a broadcast ARP request or a
//! multicast neighbour solicitation leaves at once; a `STALE` entry goes to
//! `DELAY` and then `PROBE` (a unicast probe); `REACHABLE`, `DELAY`, `PROBE`
//! and `INCOMPLETE` entries are left alone. No application traffic is sent,
//! only ARP/NDP, and the kernel's own retransmission and `FAILED` timers
//! apply. The tests below check that this resolves real peers on this kernel.
//!
//! Kernel behaviour worth knowing:
//!
//! * Since Linux 5.16, `NTF_USE` first strips `NUD_PERMANENT` from an existing
//!   entry (`new = old & ~NUD_PERMANENT` in `__neigh_update`), which would turn
//!   an operator's static entry into a dynamic one that then gets re-resolved.
//!   [`solicit`] therefore looks the entry up first and leaves `PERMANENT` and
//!   `NOARP` entries alone.
//! * Not every transition is notified: the `NONE`/`FAILED`→`INCOMPLETE` a
//!   solicitation causes and any move into `DELAY` are silent. The monitor
//!   sees `PROBE`, `REACHABLE`, `STALE` and `FAILED` (the latter after
//!   `mcast_solicit` unanswered tries), which is all the resolver needs.
//! * With fewer than `gc_thresh1` (128) entries the kernel never garbage
//!   collects, so `STALE` and `FAILED` entries can live forever. Nothing on
//!   this host sends through the kernel to a real (XDP bypasses the stack), so
//!   a `STALE` entry is never re-verified on its own and a real whose MAC
//!   changed silently would keep its old one. The [`Resolver`] therefore
//!   "uses" every resolved target every [`ResolverConfig::refresh_interval`],
//!   which makes the kernel unicast-probe `STALE` entries: a real that answers
//!   goes back to `REACHABLE`; one whose MAC changed without announcing it
//!   goes `FAILED` and is re-resolved by broadcast. A real that announces its
//!   new MAC (gratuitous ARP, unsolicited NA: `arp_notify`, `ndisc_notify`)
//!   updates the entry immediately.
//!
//! # Resolver
//!
//! [`Resolver`] is what the daemon uses: give it the reals' addresses with
//! [`Resolver::set_targets`] and call [`Resolver::poll`] in a loop; each call
//! returns only what changed since the previous one. It reacts to neighbour
//! notifications, re-dumps the table after a monitor overrun, re-solicits
//! unresolved targets with exponential backoff, and re-checks routes when
//! links, addresses or routes change (and periodically, in case a notification
//! was lost).

use std::collections::{HashMap, HashSet};
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

/// Constants from the Linux UAPI headers (`linux/netlink.h`,
/// `linux/rtnetlink.h`, `linux/neighbour.h`, `linux/if_link.h`). Spelled out
/// here rather than taken from `libc` so that the exact values this module
/// relies on are visible in one place.
mod sys {
    pub const NETLINK_ROUTE: libc::c_int = 0;
    pub const SOL_NETLINK: libc::c_int = 270;
    pub const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;
    pub const NETLINK_CAP_ACK: libc::c_int = 10;
    pub const NETLINK_EXT_ACK: libc::c_int = 11;

    pub const NLMSG_HDRLEN: usize = 16;
    pub const NLMSG_NOOP: u16 = 1;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    pub const NLMSG_OVERRUN: u16 = 4;

    pub const NLM_F_REQUEST: u16 = 0x01;
    pub const NLM_F_ACK: u16 = 0x04;
    pub const NLM_F_DUMP_INTR: u16 = 0x10;
    pub const NLM_F_DUMP: u16 = 0x300;
    pub const NLM_F_CREATE: u16 = 0x400;
    /// In an `NLMSG_ERROR`: the echoed request was cut to its header.
    pub const NLM_F_CAPPED: u16 = 0x100;
    /// In an `NLMSG_ERROR`: extended-ack TLVs follow.
    pub const NLM_F_ACK_TLVS: u16 = 0x200;
    pub const NLMSGERR_ATTR_MSG: u16 = 1;

    pub const RTM_NEWLINK: u16 = 16;
    pub const RTM_GETLINK: u16 = 18;
    pub const RTM_NEWROUTE: u16 = 24;
    pub const RTM_GETROUTE: u16 = 26;
    pub const RTM_NEWNEIGH: u16 = 28;
    pub const RTM_DELNEIGH: u16 = 29;
    pub const RTM_GETNEIGH: u16 = 30;

    pub const RTNLGRP_LINK: u32 = 1;
    pub const RTNLGRP_NEIGH: u32 = 3;
    pub const RTNLGRP_IPV4_IFADDR: u32 = 5;
    pub const RTNLGRP_IPV4_ROUTE: u32 = 7;
    pub const RTNLGRP_IPV6_IFADDR: u32 = 9;
    pub const RTNLGRP_IPV6_ROUTE: u32 = 11;

    pub const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);

    pub const IFLA_ADDRESS: u16 = 1;
    pub const IFLA_IFNAME: u16 = 3;
    pub const IFLA_EXT_MASK: u16 = 29;
    pub const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
    pub const IFNAMSIZ: usize = 16;

    pub const RTA_DST: u16 = 1;
    pub const RTA_OIF: u16 = 4;
    pub const RTA_GATEWAY: u16 = 5;
    pub const RTA_PREFSRC: u16 = 7;
    pub const RTA_VIA: u16 = 18;

    pub const RTN_UNICAST: u8 = 1;
    pub const RTN_LOCAL: u8 = 2;
    pub const RTN_BROADCAST: u8 = 3;
    pub const RTN_ANYCAST: u8 = 4;
    pub const RTN_MULTICAST: u8 = 5;
    pub const RTN_BLACKHOLE: u8 = 6;
    pub const RTN_UNREACHABLE: u8 = 7;
    pub const RTN_PROHIBIT: u8 = 8;

    pub const NDA_DST: u16 = 1;
    pub const NDA_LLADDR: u16 = 2;
    pub const NTF_USE: u8 = 0x01;
}

/// `NUD_*` neighbour states (a bit mask, though an entry is in one at a time).
pub mod nud {
    pub const NONE: u16 = 0x00;
    pub const INCOMPLETE: u16 = 0x01;
    pub const REACHABLE: u16 = 0x02;
    pub const STALE: u16 = 0x04;
    pub const DELAY: u16 = 0x08;
    pub const PROBE: u16 = 0x10;
    pub const FAILED: u16 = 0x20;
    pub const NOARP: u16 = 0x40;
    pub const PERMANENT: u16 = 0x80;
}

/// How long a request socket waits for the kernel's answer. The kernel
/// answers rtnetlink requests synchronously, so this only guards against a
/// bug turning into a hung daemon.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an interrupted dump (`NLM_F_DUMP_INTR`) is retried.
const DUMP_RETRIES: usize = 5;
/// Receive buffer asked for on monitor sockets: neighbour notifications come
/// in bursts (a link flap touches every entry), and an overrun costs a dump.
const MONITOR_RCVBUF: libc::c_int = 4 << 20;

/// Errors from this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// A socket system call failed.
    #[error("netlink {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel answered a request with an `NLMSG_ERROR`.
    #[error("{request}: {}{}", errno_text(.errno), ext_ack_text(.ext_ack))]
    Kernel {
        request: String,
        /// Positive errno, e.g. `libc::ENODEV`.
        errno: i32,
        /// The kernel's extended-ack message, when it gave one.
        ext_ack: Option<String>,
    },
    /// The kernel's reply could not be parsed.
    #[error("{request}: malformed netlink reply: {detail}")]
    Malformed { request: String, detail: String },
    /// No reply in time (5 s; the kernel answers at once, so this is a bug).
    #[error("{request}: no reply from the kernel within {timeout:?}")]
    Timeout { request: String, timeout: Duration },
    /// The monitor socket's buffer overflowed (`ENOBUFS`) and notifications
    /// were lost: dump the table again with [`neighbours`] and carry on.
    #[error(
        "neighbour monitor overrun (ENOBUFS): notifications were lost; re-dump the neighbour table"
    )]
    Overrun,
    /// An interface name the kernel could never accept.
    #[error("invalid interface name {0:?}")]
    InvalidName(String),
}

impl NetlinkError {
    /// The errno behind this error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Io { source, .. } => source.raw_os_error(),
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::Overrun => Some(libc::ENOBUFS),
            _ => None,
        }
    }

    fn io(op: &'static str) -> Self {
        NetlinkError::Io {
            op,
            source: io::Error::last_os_error(),
        }
    }

    fn malformed(request: &str, detail: impl Into<String>) -> Self {
        NetlinkError::Malformed {
            request: request.to_owned(),
            detail: detail.into(),
        }
    }
}

fn errno_text(errno: &i32) -> String {
    io::Error::from_raw_os_error(*errno).to_string()
}

fn ext_ack_text(ext_ack: &Option<String>) -> String {
    match ext_ack {
        Some(msg) => format!(" ({msg})"),
        None => String::new(),
    }
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    /// The interface's hardware address; all zeros if it has none or it is
    /// not a 6-byte (Ethernet) address.
    pub mac: [u8; 6],
    /// Administratively up with a carrier (`IFF_UP` and `IFF_LOWER_UP`):
    /// frames can leave through it.
    pub carrier: bool,
}

/// The kernel's answer to "how would you send to this address" (`ip route get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Output interface index.
    pub oif: u32,
    /// Next hop when the destination is not on-link.
    pub gateway: Option<IpAddr>,
    /// Source address the kernel would pick.
    pub prefsrc: Option<IpAddr>,
    /// Route type (`RTN_*`): 1 unicast, 2 local, 3 broadcast, 5 multicast...
    pub rtype: u8,
}

impl Route {
    /// Whether the destination is a unicast address reached directly on the
    /// output interface, i.e. usable for layer-2 forwarding.
    pub fn is_on_link_unicast(&self) -> bool {
        self.rtype == sys::RTN_UNICAST && self.gateway.is_none()
    }
}

/// One entry of the kernel's neighbour (ARP/NDP) table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub addr: IpAddr,
    /// Link-layer address; `None` when the kernel gave none (unresolved
    /// entries) or it is not a 6-byte address.
    pub mac: Option<[u8; 6]>,
    /// `NUD_*` state, see [`nud`].
    pub state: u16,
}

impl Neighbour {
    /// Whether frames may be sent to [`Neighbour::mac`]: a valid unicast MAC
    /// in a state the kernel itself would transmit on. `STALE`, `DELAY` and
    /// `PROBE` count: the kernel keeps using the MAC while it re-verifies it.
    /// A group (multicast/broadcast) MAC is refused too: a real is one host.
    pub fn is_usable(&self) -> bool {
        const USABLE: u16 =
            nud::REACHABLE | nud::STALE | nud::DELAY | nud::PROBE | nud::PERMANENT | nud::NOARP;
        const BROKEN: u16 = nud::INCOMPLETE | nud::FAILED;
        let mac_ok = self.mac.is_some_and(|m| m != [0; 6] && m[0] & 1 == 0);
        mac_ok && self.state & USABLE != 0 && self.state & BROKEN == 0
    }
}

/// Name of a `NUD_*` state, for messages.
pub fn nud_state_name(state: u16) -> &'static str {
    match state {
        nud::NONE => "NONE",
        nud::INCOMPLETE => "INCOMPLETE",
        nud::REACHABLE => "REACHABLE",
        nud::STALE => "STALE",
        nud::DELAY => "DELAY",
        nud::PROBE => "PROBE",
        nud::FAILED => "FAILED",
        nud::NOARP => "NOARP",
        nud::PERMANENT => "PERMANENT",
        _ => "MIXED",
    }
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

// ---------------------------------------------------------------------------
// Public one-shot functions. Each opens its own socket (in the calling
// thread's network namespace); the Resolver keeps one instead.

/// Looks an interface up by name (`RTM_GETLINK`).
pub fn interface_by_name(name: &str) -> Result<Interface, NetlinkError> {
    Socket::open(&[])?.get_link(0, Some(name))
}

/// Looks an interface up by index (`RTM_GETLINK`).
pub fn interface_by_index(index: u32) -> Result<Interface, NetlinkError> {
    Socket::open(&[])?.get_link(index, None)
}

/// Asks the kernel how it would send to `addr` (`RTM_GETROUTE`, like
/// `ip route get ADDR`).
pub fn route_to(addr: IpAddr) -> Result<Route, NetlinkError> {
    Socket::open(&[])?.get_route(addr)
}

/// Dumps the IPv4 and IPv6 neighbour tables (`RTM_GETNEIGH`).
pub fn neighbours() -> Result<Vec<Neighbour>, NetlinkError> {
    Socket::open(&[])?.dump_neigh()
}

/// Fetches one neighbour entry; `Ok(None)` when there is none.
pub fn neighbour(ifindex: u32, addr: IpAddr) -> Result<Option<Neighbour>, NetlinkError> {
    Socket::open(&[])?.get_neigh(ifindex, addr)
}

/// Makes the kernel start resolving `addr` on `ifindex` now (ARP or NDP), as
/// if it had a packet for it; see the module docs. Entries that are
/// `PERMANENT` or `NOARP` are left alone.
pub fn solicit(ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
    Socket::open(&[])?.solicit(ifindex, addr)
}

// ---------------------------------------------------------------------------
// Monitor.

/// A change reported by [`NeighbourMonitor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeighbourEvent {
    /// `RTM_NEWNEIGH`: the entry was created or its state or MAC changed.
    Changed(Neighbour),
    /// `RTM_DELNEIGH`: the entry is gone.
    Deleted { ifindex: u32, addr: IpAddr },
}

/// A netlink socket subscribed to neighbour notifications (`RTNLGRP_NEIGH`,
/// which carries both IPv4 and IPv6).
///
/// Subscribe before dumping ([`neighbours`]) so that nothing falls between
/// the dump and the first notification.
pub struct NeighbourMonitor {
    sock: Socket,
}

impl NeighbourMonitor {
    pub fn new() -> Result<Self, NetlinkError> {
        let sock = Socket::open(&[sys::RTNLGRP_NEIGH])?;
        sock.grow_rcvbuf(MONITOR_RCVBUF);
        Ok(NeighbourMonitor { sock })
    }

    /// Waits up to `timeout` for notifications and returns all that have
    /// arrived (empty on timeout; `Duration::ZERO` never blocks). Bridge FDB
    /// entries and proxy entries, which share the group, are skipped.
    ///
    /// On overrun returns [`NetlinkError::Overrun`] after discarding what is
    /// still queued: the caller must re-dump, and the queue's older
    /// notifications must not be applied on top of the fresh dump.
    pub fn recv(&mut self, timeout: Duration) -> Result<Vec<NeighbourEvent>, NetlinkError> {
        let mut events = Vec::new();
        if !wait_readable(self.sock.fd.as_fd(), timeout)
            .map_err(|source| NetlinkError::Io { op: "poll", source })?
        {
            return Ok(events);
        }
        loop {
            match self.sock.recv_datagram(libc::MSG_DONTWAIT) {
                Ok((len, src_pid)) => {
                    // Only the kernel (port 0) sends real notifications.
                    if src_pid != 0 {
                        continue;
                    }
                    let msgs = split_messages(&self.sock.buf[..len])
                        .map_err(|d| NetlinkError::malformed("neighbour notification", d))?;
                    events.extend(msgs.iter().filter_map(neighbour_event));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(events),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.sock.discard_queued();
                    return Err(NetlinkError::Overrun);
                }
                Err(source) => return Err(NetlinkError::Io { op: "recv", source }),
            }
        }
    }

    #[cfg(test)]
    fn set_rcvbuf(&self, bytes: libc::c_int) {
        // Plain SO_RCVBUF (not FORCE) so a test can shrink it.
        self.sock
            .setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUF, bytes)
            .expect("SO_RCVBUF");
    }
}

impl AsRawFd for NeighbourMonitor {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.fd.as_raw_fd()
    }
}

impl AsFd for NeighbourMonitor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.fd.as_fd()
    }
}

fn neighbour_event(msg: &RawMsg<'_>) -> Option<NeighbourEvent> {
    let n = parse_neigh(msg.data)?;
    match msg.ty {
        sys::RTM_NEWNEIGH => Some(NeighbourEvent::Changed(n)),
        sys::RTM_DELNEIGH => Some(NeighbourEvent::Deleted {
            ifindex: n.ifindex,
            addr: n.addr,
        }),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Resolver.

/// The state of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Forward to `mac` out of `ifindex`, with `if_mac` as the source MAC.
    /// Neither MAC is ever zero.
    Ready {
        ifindex: u32,
        if_mac: [u8; 6],
        mac: [u8; 6],
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
    /// First re-solicitation delay for an unresolved target; doubles on each
    /// try. Each solicitation makes the kernel send up to `mcast_solicit` (3)
    /// broadcasts, `retrans_time` (1 s) apart.
    pub solicit_min: Duration,
    /// Cap of that backoff, which bounds how long a real that comes back
    /// silently waits to be found.
    pub solicit_max: Duration,
    /// How often a resolved target is "used" so that the kernel re-verifies a
    /// `STALE` entry (see the module docs). Bounds how long a silent MAC
    /// change goes unnoticed.
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

/// The egress side of a target: where its frames leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Path {
    ifindex: u32,
    if_mac: [u8; 6],
}

#[derive(Debug)]
struct Target {
    path: Result<Path, String>,
    neigh: Option<Neighbour>,
    state: Resolved,
    /// What the caller was last told; `None` until the first report.
    reported: Option<Resolved>,
    /// Next solicitation (unresolved) or refresh (ready).
    next_solicit: Instant,
    backoff: Duration,
}

/// Resolves and follows the MACs of a set of on-link targets (the reals).
///
/// Typical use: `Resolver::new()?`, then `set_targets(reals)` whenever the
/// configuration changes, and a loop calling `poll(Duration::from_secs(1))`
/// that applies each returned [`Resolution`] to the forwarding tables (a
/// [`Resolved::Ready`] installs or updates the real's MACs, a
/// [`Resolved::Unresolved`] takes it out of service).
pub struct Resolver {
    cfg: ResolverConfig,
    sock: Socket,
    monitor: NeighbourMonitor,
    /// Subscribed to link, address and route changes; only used as a "routes
    /// may have changed" signal.
    watch: Socket,
    targets: HashMap<IpAddr, Target>,
    paths_dirty: bool,
    last_path_check: Instant,
    /// How often the neighbour table was re-dumped (for tests and stats).
    resyncs: u64,
}

/// Minimum time between two notification-triggered route re-checks, so a
/// storm of route notifications cannot keep the resolver busy.
const PATH_RECHECK_MIN: Duration = Duration::from_millis(200);

impl Resolver {
    pub fn new() -> Result<Self, NetlinkError> {
        Self::with_config(ResolverConfig::default())
    }

    /// A resolver with other timings. Values too small to be sane are
    /// raised (a zero backoff would make [`Resolver::poll`] spin).
    pub fn with_config(mut cfg: ResolverConfig) -> Result<Self, NetlinkError> {
        cfg.solicit_min = cfg.solicit_min.max(Duration::from_millis(10));
        cfg.solicit_max = cfg.solicit_max.max(cfg.solicit_min);
        cfg.refresh_interval = cfg.refresh_interval.max(Duration::from_millis(100));
        cfg.route_interval = cfg.route_interval.max(Duration::from_millis(100));
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
        Ok(Resolver {
            cfg,
            sock: Socket::open(&[])?,
            monitor,
            watch,
            targets: HashMap::new(),
            paths_dirty: false,
            last_path_check: Instant::now(),
            resyncs: 0,
        })
    }

    /// Replaces the set of targets. New targets are looked up and solicited
    /// at once; their first state is reported by the next [`poll`]. Targets
    /// no longer in the set are forgotten without a report.
    ///
    /// [`poll`]: Resolver::poll
    pub fn set_targets(&mut self, addrs: impl IntoIterator<Item = IpAddr>) {
        let wanted: HashSet<IpAddr> = addrs.into_iter().collect();
        self.targets.retain(|addr, _| wanted.contains(addr));
        let now = Instant::now();
        let mut links = HashMap::new();
        for addr in wanted {
            if self.targets.contains_key(&addr) {
                continue;
            }
            let path = lookup_path(&mut self.sock, &mut links, addr);
            let neigh = current_neigh(&mut self.sock, &path, addr);
            let state = derive_state(&path, neigh.as_ref());
            let mut target = Target {
                path,
                neigh,
                state,
                reported: None,
                next_solicit: now,
                backoff: self.cfg.solicit_min,
            };
            solicit_due(&mut self.sock, &self.cfg, addr, &mut target, now);
            self.targets.insert(addr, target);
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
        let deadline = deadline_after(timeout);
        loop {
            self.drain_notifications();
            let now = Instant::now();
            self.run_timers(now);
            let changes = self.take_changes();
            let now = Instant::now();
            if !changes.is_empty() || now >= deadline {
                return changes;
            }
            let wake = self.next_timer().min(deadline);
            let fds = [self.monitor.as_fd(), self.watch.fd.as_fd()];
            if let Err(e) = wait_any_readable(&fds, wake.saturating_duration_since(now)) {
                warn!("netlink resolver: poll: {e}");
                std::thread::sleep(Duration::from_millis(10).min(deadline - now));
            }
        }
    }

    fn drain_notifications(&mut self) {
        let now = Instant::now();
        match self.monitor.recv(Duration::ZERO) {
            Ok(events) => {
                for event in events {
                    match event {
                        NeighbourEvent::Changed(n) => {
                            self.apply_neigh(now, n.ifindex, n.addr, Some(n))
                        }
                        NeighbourEvent::Deleted { ifindex, addr } => {
                            self.apply_neigh(now, ifindex, addr, None)
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
        loop {
            match self.watch.recv_datagram(libc::MSG_DONTWAIT) {
                Ok((len, _)) => {
                    if split_messages(&self.watch.buf[..len])
                        .is_ok_and(|msgs| msgs.iter().any(is_path_relevant))
                    {
                        self.paths_dirty = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // Overrun: some change may be lost, so assume one.
                    debug!("netlink resolver: route watch: {e}");
                    self.paths_dirty = true;
                    if e.raw_os_error() != Some(libc::ENOBUFS) {
                        break;
                    }
                }
            }
        }
    }

    fn apply_neigh(&mut self, now: Instant, ifindex: u32, addr: IpAddr, neigh: Option<Neighbour>) {
        let Some(target) = self.targets.get_mut(&addr) else {
            return;
        };
        match &target.path {
            Ok(path) if path.ifindex == ifindex => {}
            // An entry on another interface is not ours to use (if the route
            // moved there, the route watch will tell us).
            _ => return,
        }
        target.neigh = neigh;
        let was_ready = target.state.is_ready();
        target.state = derive_state(&target.path, target.neigh.as_ref());
        match (was_ready, target.state.is_ready()) {
            (true, false) => {
                // Lost a working MAC: ask again at once, then back off.
                target.backoff = self.cfg.solicit_min;
                target.next_solicit = now;
            }
            (false, true) => {
                target.backoff = self.cfg.solicit_min;
                target.next_solicit = now + self.cfg.refresh_interval;
            }
            _ => {}
        }
    }

    fn resync_neighbours(&mut self, now: Instant) {
        self.resyncs += 1;
        let table = match self.sock.dump_neigh() {
            Ok(table) => table,
            Err(e) => {
                warn!("netlink resolver: neighbour dump: {e}");
                return;
            }
        };
        let mut by_key: HashMap<(u32, IpAddr), Neighbour> = table
            .into_iter()
            .map(|n| ((n.ifindex, n.addr), n))
            .collect();
        let keys: Vec<(u32, IpAddr)> = self
            .targets
            .iter()
            .filter_map(|(addr, t)| t.path.as_ref().ok().map(|p| (p.ifindex, *addr)))
            .collect();
        for key in keys {
            let n = by_key.remove(&key);
            self.apply_neigh(now, key.0, key.1, n);
        }
    }

    fn run_timers(&mut self, now: Instant) {
        let periodic = now >= self.last_path_check + self.cfg.route_interval;
        let prompted = self.paths_dirty && now >= self.last_path_check + PATH_RECHECK_MIN;
        if periodic || prompted {
            self.recheck_paths(now);
        }
        for (addr, target) in self.targets.iter_mut() {
            solicit_due(&mut self.sock, &self.cfg, *addr, target, now);
        }
    }

    fn recheck_paths(&mut self, now: Instant) {
        self.paths_dirty = false;
        self.last_path_check = now;
        let mut links = HashMap::new();
        for (addr, target) in self.targets.iter_mut() {
            let path = lookup_path(&mut self.sock, &mut links, *addr);
            if path == target.path {
                continue;
            }
            debug!(
                "netlink resolver: {addr}: path {:?} -> {path:?}",
                target.path
            );
            target.neigh = current_neigh(&mut self.sock, &path, *addr);
            target.path = path;
            target.state = derive_state(&target.path, target.neigh.as_ref());
            target.backoff = self.cfg.solicit_min;
            target.next_solicit = now;
            solicit_due(&mut self.sock, &self.cfg, *addr, target, now);
        }
    }

    fn next_timer(&self) -> Instant {
        let paths = if self.paths_dirty {
            self.last_path_check + PATH_RECHECK_MIN
        } else {
            self.last_path_check + self.cfg.route_interval
        };
        self.targets
            .values()
            .filter(|t| t.path.is_ok())
            .map(|t| t.next_solicit)
            .fold(paths, Instant::min)
    }

    fn take_changes(&mut self) -> Vec<Resolution> {
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

/// Whether a link/address/route notification can change a target's path.
fn is_path_relevant(msg: &RawMsg<'_>) -> bool {
    // Cloned IPv6 routes (PMTU exceptions and the like) come and go with
    // traffic and never change which interface a destination is on.
    const RTM_F_CLONED: u32 = 0x200;
    if msg.ty == sys::RTM_NEWROUTE
        && let Some(flags) = ne_u32(msg.data, 8)
    {
        return flags & RTM_F_CLONED == 0;
    }
    !matches!(msg.ty, sys::NLMSG_NOOP | sys::NLMSG_ERROR | sys::NLMSG_DONE)
}

/// Solicits (unresolved) or refreshes (ready) `target` if it is due.
fn solicit_due(
    sock: &mut Socket,
    cfg: &ResolverConfig,
    addr: IpAddr,
    target: &mut Target,
    now: Instant,
) {
    let Ok(path) = &target.path else {
        return;
    };
    if now < target.next_solicit {
        return;
    }
    if target.state.is_ready() {
        target.next_solicit = now + cfg.refresh_interval;
    } else {
        target.next_solicit = now + target.backoff;
        target.backoff = (target.backoff * 2).min(cfg.solicit_max);
    }
    // PERMANENT and NOARP entries need no resolution, and soliciting a
    // PERMANENT one would demote it (see the module docs).
    if target
        .neigh
        .as_ref()
        .is_some_and(|n| n.state & (nud::PERMANENT | nud::NOARP) != 0)
    {
        return;
    }
    debug!(
        "netlink resolver: soliciting {addr} on ifindex {}",
        path.ifindex
    );
    if let Err(e) = sock.solicit_unchecked(path.ifindex, addr) {
        warn!("netlink resolver: {e}");
    }
}

/// Finds the egress interface for `addr`, which must be on-link.
fn lookup_path(
    sock: &mut Socket,
    links: &mut HashMap<u32, Interface>,
    addr: IpAddr,
) -> Result<Path, String> {
    if let Some(why) = unusable_target(addr) {
        return Err(why.to_owned());
    }
    let route = sock.get_route(addr).map_err(|e| format!("no route: {e}"))?;
    match route.rtype {
        sys::RTN_UNICAST => {}
        sys::RTN_LOCAL => return Err("address is local to this host".to_owned()),
        t => return Err(format!("route is {}, not unicast", rtn_name(t))),
    }
    if let Some(gateway) = route.gateway {
        return Err(format!("not on-link, via {gateway}"));
    }
    let link = match links.get(&route.oif) {
        Some(link) => link.clone(),
        None => {
            let link = sock
                .get_link(route.oif, None)
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
    Ok(Path {
        ifindex: link.index,
        if_mac: link.mac,
    })
}

/// Addresses that can never be a real, whatever the routing table says.
fn unusable_target(addr: IpAddr) -> Option<&'static str> {
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

fn rtn_name(t: u8) -> String {
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

fn current_neigh(
    sock: &mut Socket,
    path: &Result<Path, String>,
    addr: IpAddr,
) -> Option<Neighbour> {
    let path = path.as_ref().ok()?;
    sock.get_neigh(path.ifindex, addr).unwrap_or_else(|e| {
        warn!("netlink resolver: {e}");
        None
    })
}

fn derive_state(path: &Result<Path, String>, neigh: Option<&Neighbour>) -> Resolved {
    let path = match path {
        Ok(path) => path,
        Err(reason) => {
            return Resolved::Unresolved {
                reason: reason.clone(),
            };
        }
    };
    let reason = match neigh {
        Some(n) if n.is_usable() => {
            // is_usable() guarantees a MAC; the match keeps that visible.
            if let Some(mac) = n.mac {
                return Resolved::Ready {
                    ifindex: path.ifindex,
                    if_mac: path.if_mac,
                    mac,
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
    Resolved::Unresolved { reason }
}

// ---------------------------------------------------------------------------
// The socket and the wire format.

/// One rtnetlink socket. Request sockets are unsubscribed; monitor sockets
/// join multicast groups and are only read.
struct Socket {
    fd: OwnedFd,
    /// Our netlink port id, assigned by the kernel at bind time; replies to
    /// our requests carry it.
    portid: u32,
    seq: u32,
    buf: Vec<u8>,
}

/// A reply message, owned (requests return them past the receive buffer's
/// next reuse).
struct Reply {
    ty: u16,
    data: Vec<u8>,
}

/// A message inside a received datagram.
#[derive(Debug)]
struct RawMsg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    data: &'a [u8],
}

fn sockaddr_nl() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain integers, for which all-zero is valid; it
    // has a private padding field, so it cannot be built with a literal.
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr
}

const SOCKADDR_NL_LEN: libc::socklen_t = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;

impl Socket {
    fn open(groups: &[u32]) -> Result<Self, NetlinkError> {
        // SAFETY: socket(2) takes no pointers; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                sys::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(NetlinkError::io("socket(AF_NETLINK)"));
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut sock = Socket {
            fd,
            portid: 0,
            seq: 0,
            buf: vec![0; 32 * 1024],
        };
        let addr = sockaddr_nl();
        // SAFETY: `addr` is a valid sockaddr_nl of the length passed.
        let rc = unsafe { libc::bind(sock.raw(), (&raw const addr).cast(), SOCKADDR_NL_LEN) };
        if rc < 0 {
            return Err(NetlinkError::io("bind"));
        }
        for &group in groups {
            sock.setsockopt(
                sys::SOL_NETLINK,
                sys::NETLINK_ADD_MEMBERSHIP,
                group as libc::c_int,
            )
            .map_err(|source| NetlinkError::Io {
                op: "NETLINK_ADD_MEMBERSHIP",
                source,
            })?;
        }
        // Extended acks carry the kernel's own explanation of an error;
        // capped acks keep error replies small. Both are refinements, so an
        // old kernel without them is not an error.
        let _ = sock.setsockopt(sys::SOL_NETLINK, sys::NETLINK_EXT_ACK, 1);
        let _ = sock.setsockopt(sys::SOL_NETLINK, sys::NETLINK_CAP_ACK, 1);
        // Bound replies: the kernel answers at once, but a daemon must not
        // hang forever on a bug.
        let tv = libc::timeval {
            tv_sec: REPLY_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: `tv` is a valid timeval of the length passed.
        let rc = unsafe {
            libc::setsockopt(
                sock.raw(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(NetlinkError::io("SO_RCVTIMEO"));
        }
        let mut bound = sockaddr_nl();
        let mut len = SOCKADDR_NL_LEN;
        // SAFETY: getsockname writes at most `len` bytes into `bound`.
        let rc = unsafe { libc::getsockname(sock.raw(), (&raw mut bound).cast(), &mut len) };
        if rc < 0 {
            return Err(NetlinkError::io("getsockname"));
        }
        sock.portid = bound.nl_pid;
        Ok(sock)
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn setsockopt(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
    ) -> io::Result<()> {
        // SAFETY: `value` is a valid c_int of the length passed.
        let rc = unsafe {
            libc::setsockopt(
                self.raw(),
                level,
                name,
                (&raw const value).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Asks for a large receive buffer: FORCE (root) may exceed
    /// `rmem_max`, plain SO_RCVBUF is capped by it. Best effort.
    fn grow_rcvbuf(&self, bytes: libc::c_int) {
        if self
            .setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes)
            .is_err()
        {
            let _ = self.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUF, bytes);
        }
    }

    /// Sends one request; returns its sequence number.
    fn send(&mut self, ty: u16, flags: u16, payload: &[u8]) -> Result<u32, NetlinkError> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let len = sys::NLMSG_HDRLEN + payload.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        let dst = sockaddr_nl();
        loop {
            // SAFETY: `msg` and `dst` are valid for the lengths passed.
            let n = unsafe {
                libc::sendto(
                    self.raw(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&raw const dst).cast(),
                    SOCKADDR_NL_LEN,
                )
            };
            if n >= 0 {
                return Ok(self.seq);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(NetlinkError::Io {
                    op: "sendto",
                    source: e,
                });
            }
        }
    }

    /// Receives one datagram into `self.buf`, growing it first if needed
    /// (a datagram larger than the buffer would otherwise be cut silently).
    /// Returns its length and the sender's port id (0 = kernel).
    fn recv_datagram(&mut self, flags: libc::c_int) -> io::Result<(usize, u32)> {
        loop {
            // SAFETY: the buffer is valid for `buf.len()` bytes. MSG_TRUNC
            // makes the peek return the datagram's full length.
            let n = unsafe {
                libc::recv(
                    self.raw(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    flags | libc::MSG_PEEK | libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n as usize > self.buf.len() {
                self.buf.resize((n as usize).next_power_of_two(), 0);
            }
            let mut src = sockaddr_nl();
            let mut src_len = SOCKADDR_NL_LEN;
            // SAFETY: the buffer is valid for `buf.len()` bytes and `src` for
            // `src_len` bytes.
            let n = unsafe {
                libc::recvfrom(
                    self.raw(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    flags,
                    (&raw mut src).cast(),
                    &mut src_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            return Ok((n as usize, src.nl_pid));
        }
    }

    /// Throws away everything queued (after an overrun).
    fn discard_queued(&mut self) {
        // Bounded, so that a notification storm cannot keep us here; what is
        // left is only older than the dump that follows by a little.
        for _ in 0..100_000 {
            match self.recv_datagram(libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(_) => return,
            }
        }
    }

    /// Sends a request and collects the replies up to its ack (`doit`
    /// requests) or `NLMSG_DONE` (dumps). Retries dumps the kernel marks
    /// inconsistent.
    fn request(
        &mut self,
        what: &str,
        ty: u16,
        flags: u16,
        payload: &[u8],
    ) -> Result<Vec<Reply>, NetlinkError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (replies, interrupted) = self.request_once(what, ty, flags, payload)?;
            if !interrupted || attempt >= DUMP_RETRIES {
                return Ok(replies);
            }
            debug!("{what}: dump interrupted by a concurrent change, retrying");
        }
    }

    fn request_once(
        &mut self,
        what: &str,
        ty: u16,
        flags: u16,
        payload: &[u8],
    ) -> Result<(Vec<Reply>, bool), NetlinkError> {
        let seq = self.send(ty, flags | sys::NLM_F_REQUEST | sys::NLM_F_ACK, payload)?;
        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            let (len, _) = self.recv_datagram(0).map_err(|source| {
                if matches!(
                    source.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    NetlinkError::Timeout {
                        request: what.to_owned(),
                        timeout: REPLY_TIMEOUT,
                    }
                } else {
                    NetlinkError::Io { op: "recv", source }
                }
            })?;
            let msgs =
                split_messages(&self.buf[..len]).map_err(|d| NetlinkError::malformed(what, d))?;
            for msg in msgs {
                // Leftovers of an earlier request that failed midway.
                if msg.seq != seq || msg.pid != self.portid {
                    continue;
                }
                interrupted |= msg.flags & sys::NLM_F_DUMP_INTR != 0;
                match msg.ty {
                    sys::NLMSG_NOOP => {}
                    sys::NLMSG_ERROR => {
                        return match parse_error(&msg) {
                            Some((0, _)) => Ok((replies, interrupted)),
                            Some((errno, ext_ack)) => Err(NetlinkError::Kernel {
                                request: what.to_owned(),
                                errno,
                                ext_ack,
                            }),
                            None => Err(NetlinkError::malformed(what, "short NLMSG_ERROR")),
                        };
                    }
                    sys::NLMSG_DONE => {
                        // A dump can end with an error in place of data.
                        let status = ne_i32(msg.data, 0).unwrap_or(0);
                        if status < 0 {
                            return Err(NetlinkError::Kernel {
                                request: what.to_owned(),
                                errno: -status,
                                ext_ack: None,
                            });
                        }
                        return Ok((replies, interrupted));
                    }
                    sys::NLMSG_OVERRUN => {
                        return Err(NetlinkError::malformed(what, "NLMSG_OVERRUN"));
                    }
                    ty => replies.push(Reply {
                        ty,
                        data: msg.data.to_vec(),
                    }),
                }
            }
        }
    }

    fn get_link(&mut self, index: u32, name: Option<&str>) -> Result<Interface, NetlinkError> {
        let mut p = Vec::with_capacity(64);
        // struct ifinfomsg: family, pad, type, index, flags, change.
        p.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        p.extend_from_slice(&(index as i32).to_ne_bytes());
        p.extend_from_slice(&[0; 8]);
        let what = match name {
            Some(name) => {
                if name.is_empty() || name.len() >= sys::IFNAMSIZ || name.contains(['\0', '/']) {
                    return Err(NetlinkError::InvalidName(name.to_owned()));
                }
                let mut z = name.as_bytes().to_vec();
                z.push(0);
                push_attr(&mut p, sys::IFLA_IFNAME, &z);
                format!("RTM_GETLINK {name}")
            }
            None => format!("RTM_GETLINK ifindex {index}"),
        };
        // Counters are not wanted and make the reply several times larger.
        push_attr(
            &mut p,
            sys::IFLA_EXT_MASK,
            &sys::RTEXT_FILTER_SKIP_STATS.to_ne_bytes(),
        );
        let replies = self.request(&what, sys::RTM_GETLINK, 0, &p)?;
        let reply = replies
            .iter()
            .find(|r| r.ty == sys::RTM_NEWLINK)
            .ok_or_else(|| NetlinkError::malformed(&what, "no RTM_NEWLINK in the reply"))?;
        parse_link(&reply.data).ok_or_else(|| NetlinkError::malformed(&what, "bad RTM_NEWLINK"))
    }

    fn get_route(&mut self, addr: IpAddr) -> Result<Route, NetlinkError> {
        let (family, octets) = addr_octets(&addr);
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol,
        // scope, type, flags.
        let mut p = vec![family, (octets.len() * 8) as u8, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&0u32.to_ne_bytes());
        push_attr(&mut p, sys::RTA_DST, &octets);
        let what = format!("RTM_GETROUTE {addr}");
        let replies = self.request(&what, sys::RTM_GETROUTE, 0, &p)?;
        let reply = replies
            .iter()
            .find(|r| r.ty == sys::RTM_NEWROUTE)
            .ok_or_else(|| NetlinkError::malformed(&what, "no RTM_NEWROUTE in the reply"))?;
        parse_route(&reply.data).ok_or_else(|| NetlinkError::malformed(&what, "bad RTM_NEWROUTE"))
    }

    fn dump_neigh(&mut self) -> Result<Vec<Neighbour>, NetlinkError> {
        // AF_UNSPEC dumps every neighbour table (IPv4 and IPv6); proxy and
        // bridge FDB entries need their own flags/family and are not included.
        let p = ndmsg(libc::AF_UNSPEC as u8, 0, 0, 0);
        let replies = self.request("RTM_GETNEIGH dump", sys::RTM_GETNEIGH, sys::NLM_F_DUMP, &p)?;
        Ok(replies
            .iter()
            .filter(|r| r.ty == sys::RTM_NEWNEIGH)
            .filter_map(|r| parse_neigh(&r.data))
            .collect())
    }

    fn get_neigh(&mut self, ifindex: u32, addr: IpAddr) -> Result<Option<Neighbour>, NetlinkError> {
        let (family, octets) = addr_octets(&addr);
        let mut p = ndmsg(family, ifindex, 0, 0);
        push_attr(&mut p, sys::NDA_DST, &octets);
        let what = format!("RTM_GETNEIGH {addr} ifindex {ifindex}");
        match self.request(&what, sys::RTM_GETNEIGH, 0, &p) {
            Ok(replies) => Ok(replies
                .iter()
                .filter(|r| r.ty == sys::RTM_NEWNEIGH)
                .find_map(|r| parse_neigh(&r.data))),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn solicit(&mut self, ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        if let Some(n) = self.get_neigh(ifindex, addr)?
            && n.state & (nud::PERMANENT | nud::NOARP) != 0
        {
            return Ok(());
        }
        self.solicit_unchecked(ifindex, addr)
    }

    /// `RTM_NEWNEIGH` with `NTF_USE`: see the module docs. The caller must
    /// know the entry is not PERMANENT.
    fn solicit_unchecked(&mut self, ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        let (family, octets) = addr_octets(&addr);
        // ndm_state is ignored with NTF_USE (the entry keeps its state).
        let mut p = ndmsg(family, ifindex, nud::NONE, sys::NTF_USE);
        push_attr(&mut p, sys::NDA_DST, &octets);
        let what = format!("RTM_NEWNEIGH NTF_USE {addr} ifindex {ifindex}");
        self.request(&what, sys::RTM_NEWNEIGH, sys::NLM_F_CREATE, &p)
            .map(drop)
    }
}

/// Waits until `fd` is readable or `timeout` passes.
fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    wait_any_readable(&[fd], timeout)
}

/// Waits until one of `fds` is readable (or has an error pending, which the
/// next read reports) or `timeout` passes.
fn wait_any_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<bool> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let deadline = deadline_after(timeout);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Round up so a sub-millisecond wait does not become a busy loop.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `now + timeout`, where a timeout too large to represent means "practically
/// forever" instead of a panic.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn ne_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Splits a datagram into its netlink messages.
fn split_messages(mut buf: &[u8]) -> Result<Vec<RawMsg<'_>>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let len = ne_u32(buf, 0).ok_or("truncated message header")? as usize;
        if len < sys::NLMSG_HDRLEN || len > buf.len() {
            return Err(format!(
                "message length {len} with {} bytes left",
                buf.len()
            ));
        }
        out.push(RawMsg {
            ty: ne_u16(buf, 4).ok_or("short header")?,
            flags: ne_u16(buf, 6).ok_or("short header")?,
            seq: ne_u32(buf, 8).ok_or("short header")?,
            pid: ne_u32(buf, 12).ok_or("short header")?,
            data: &buf[sys::NLMSG_HDRLEN..len],
        });
        buf = buf.get(align4(len)..).unwrap_or(&[]);
    }
    Ok(out)
}

/// Iterates over netlink attributes (`struct nlattr`/`rtattr`), yielding
/// (type without the nested/byte-order flags, payload). Stops at the first
/// malformed one.
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        let len = ne_u16(b, 0)? as usize;
        let ty = ne_u16(b, 2)? & sys::NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            self.0 = &[];
            return None;
        }
        self.0 = b.get(align4(len)..).unwrap_or(&[]);
        Some((ty, &b[4..len]))
    }
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len() + (align4(len) - len), 0);
}

/// `struct ndmsg`: family, pad1, pad2, ifindex, state, flags, type.
fn ndmsg(family: u8, ifindex: u32, state: u16, flags: u8) -> Vec<u8> {
    let mut p = Vec::with_capacity(32);
    p.extend_from_slice(&[family, 0, 0, 0]);
    p.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    p.extend_from_slice(&state.to_ne_bytes());
    p.extend_from_slice(&[flags, 0]);
    p
}

fn addr_octets(addr: &IpAddr) -> (u8, Vec<u8>) {
    match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    }
}

fn parse_ip(family: u8, b: &[u8]) -> Option<IpAddr> {
    match family as libc::c_int {
        libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        libc::AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

fn parse_mac(b: &[u8]) -> Option<[u8; 6]> {
    b.try_into().ok()
}

/// Parses `NLMSG_ERROR` into (positive errno, extended-ack message).
fn parse_error(msg: &RawMsg<'_>) -> Option<(i32, Option<String>)> {
    // A hostile or corrupt i32::MIN has no positive errno (and negating it
    // would overflow): not an error message we can read.
    let errno = ne_i32(msg.data, 0)?.checked_neg()?;
    if msg.flags & sys::NLM_F_ACK_TLVS == 0 {
        return Some((errno, None));
    }
    // The TLVs follow the echoed request: just its header when capped, the
    // whole request otherwise.
    let echoed = if msg.flags & sys::NLM_F_CAPPED != 0 {
        sys::NLMSG_HDRLEN
    } else {
        align4(ne_u32(msg.data, 4)? as usize)
    };
    let tlvs = msg.data.get(4 + echoed..).unwrap_or(&[]);
    let text = Attrs(tlvs)
        .find(|(ty, _)| *ty == sys::NLMSGERR_ATTR_MSG)
        .map(|(_, v)| {
            String::from_utf8_lossy(v.split(|&c| c == 0).next().unwrap_or(&[])).into_owned()
        })
        .filter(|s| !s.is_empty());
    Some((errno, text))
}

fn parse_link(data: &[u8]) -> Option<Interface> {
    const IFF_UP: u32 = 0x1;
    const IFF_LOWER_UP: u32 = 0x1_0000;
    let index = ne_i32(data, 4)? as u32;
    let flags = ne_u32(data, 8)?;
    let mut iface = Interface {
        index,
        name: String::new(),
        mac: [0; 6],
        carrier: flags & (IFF_UP | IFF_LOWER_UP) == IFF_UP | IFF_LOWER_UP,
    };
    for (ty, v) in Attrs(data.get(16..)?) {
        match ty {
            sys::IFLA_IFNAME => {
                iface.name = String::from_utf8_lossy(v.split(|&c| c == 0).next().unwrap_or(&[]))
                    .into_owned();
            }
            sys::IFLA_ADDRESS => iface.mac = parse_mac(v).unwrap_or([0; 6]),
            _ => {}
        }
    }
    Some(iface)
}

fn parse_route(data: &[u8]) -> Option<Route> {
    let family = *data.first()?;
    let rtype = *data.get(7)?;
    let mut route = Route {
        oif: 0,
        gateway: None,
        prefsrc: None,
        rtype,
    };
    for (ty, v) in Attrs(data.get(12..)?) {
        match ty {
            sys::RTA_OIF => route.oif = ne_u32(v, 0)?,
            sys::RTA_GATEWAY => route.gateway = parse_ip(family, v),
            // struct rtvia: an IPv4 route through an IPv6 next hop (RFC 5549).
            sys::RTA_VIA => {
                let via_family = ne_u16(v, 0)?;
                route.gateway = parse_ip(via_family as u8, v.get(2..)?);
            }
            sys::RTA_PREFSRC => route.prefsrc = parse_ip(family, v),
            _ => {}
        }
    }
    Some(route)
}

/// Parses an `RTM_NEWNEIGH`/`RTM_DELNEIGH` body; `None` for anything but
/// IPv4/IPv6 entries (e.g. bridge FDB entries, which share the group) and
/// for proxy entries.
fn parse_neigh(data: &[u8]) -> Option<Neighbour> {
    const NTF_PROXY: u8 = 0x08;
    let family = *data.first()?;
    let ifindex = ne_i32(data, 4)? as u32;
    let state = ne_u16(data, 8)?;
    let flags = *data.get(10)?;
    if flags & NTF_PROXY != 0 {
        return None;
    }
    let mut addr = None;
    let mut mac = None;
    for (ty, v) in Attrs(data.get(12..)?) {
        match ty {
            sys::NDA_DST => addr = parse_ip(family, v),
            sys::NDA_LLADDR => mac = parse_mac(v),
            _ => {}
        }
    }
    Some(Neighbour {
        ifindex,
        addr: addr?,
        mac,
        state,
    })
}

#[cfg(test)]
#[path = "netlink_fuzz.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    // -- Wire format (no privileges needed) ---------------------------------

    fn header(len: usize, ty: u16, flags: u16, seq: u32, pid: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&(len as u32).to_ne_bytes());
        h.extend_from_slice(&ty.to_ne_bytes());
        h.extend_from_slice(&flags.to_ne_bytes());
        h.extend_from_slice(&seq.to_ne_bytes());
        h.extend_from_slice(&pid.to_ne_bytes());
        h
    }

    fn message(ty: u16, flags: u16, seq: u32, pid: u32, body: &[u8]) -> Vec<u8> {
        let mut m = header(16 + body.len(), ty, flags, seq, pid);
        m.extend_from_slice(body);
        m.resize(align4(m.len()), 0);
        m
    }

    #[test]
    fn attributes_round_trip_with_padding() {
        let mut b = Vec::new();
        push_attr(&mut b, 3, b"eth0\0");
        push_attr(&mut b, 1, &[1, 2, 3, 4, 5, 6]);
        push_attr(&mut b, 0x8000 | 7, &[]);
        assert_eq!(b.len(), 12 + 12 + 4);
        let got: Vec<(u16, &[u8])> = Attrs(&b).collect();
        assert_eq!(
            got,
            vec![
                (3, &b"eth0\0"[..]),
                (1, &[1, 2, 3, 4, 5, 6][..]),
                (7, &[][..])
            ]
        );
    }

    #[test]
    fn attributes_stop_at_garbage() {
        let mut b = Vec::new();
        push_attr(&mut b, 1, &[9; 4]);
        b.extend_from_slice(&[200, 0, 1, 0]); // claims 200 bytes
        assert_eq!(Attrs(&b).count(), 1);
        assert_eq!(Attrs(&[1, 0]).count(), 0);
    }

    #[test]
    fn split_messages_checks_lengths() {
        let mut d = message(sys::RTM_NEWNEIGH, 2, 7, 99, &[1, 2, 3]);
        d.extend(message(sys::NLMSG_DONE, 2, 7, 99, &0i32.to_ne_bytes()));
        let msgs = split_messages(&d).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            (msgs[0].ty, msgs[0].seq, msgs[0].pid),
            (sys::RTM_NEWNEIGH, 7, 99)
        );
        assert_eq!(msgs[0].data, &[1, 2, 3]);
        assert_eq!(msgs[1].ty, sys::NLMSG_DONE);
        assert!(split_messages(&header(64, 1, 0, 0, 0)).is_err());
        assert!(split_messages(&[1, 2, 3]).is_err());
    }

    #[test]
    fn error_with_extended_ack_message() {
        // Capped: errno, echoed header, then TLVs.
        let mut body = (-libc::ENODEV).to_ne_bytes().to_vec();
        body.extend(header(40, sys::RTM_GETLINK, 5, 1, 0));
        push_attr(&mut body, sys::NLMSGERR_ATTR_MSG, b"no such thing\0");
        let d = message(
            sys::NLMSG_ERROR,
            sys::NLM_F_CAPPED | sys::NLM_F_ACK_TLVS,
            1,
            0,
            &body,
        );
        let msgs = split_messages(&d).unwrap();
        assert_eq!(
            parse_error(&msgs[0]),
            Some((libc::ENODEV, Some("no such thing".into())))
        );

        // Not capped: the whole request is echoed before the TLVs.
        let mut body = (-libc::EINVAL).to_ne_bytes().to_vec();
        let echoed = message(sys::RTM_GETLINK, 5, 1, 0, &[0; 6]);
        body.extend(&echoed);
        push_attr(&mut body, sys::NLMSGERR_ATTR_MSG, b"bad\0");
        let d = message(sys::NLMSG_ERROR, sys::NLM_F_ACK_TLVS, 1, 0, &body);
        assert_eq!(
            parse_error(&split_messages(&d).unwrap()[0]),
            Some((libc::EINVAL, Some("bad".into())))
        );

        // A plain ack.
        let mut body = 0i32.to_ne_bytes().to_vec();
        body.extend(header(16, sys::RTM_NEWNEIGH, 5, 1, 0));
        let d = message(sys::NLMSG_ERROR, sys::NLM_F_CAPPED, 1, 0, &body);
        assert_eq!(
            parse_error(&split_messages(&d).unwrap()[0]),
            Some((0, None))
        );
    }

    #[test]
    fn kernel_error_message_has_errno_text() {
        let e = NetlinkError::Kernel {
            request: "RTM_GETLINK eth9".into(),
            errno: libc::ENODEV,
            ext_ack: Some("detail".into()),
        };
        let s = e.to_string();
        assert!(s.starts_with("RTM_GETLINK eth9: No such device"), "{s}");
        assert!(s.ends_with("(detail)"), "{s}");
        assert_eq!(e.errno(), Some(libc::ENODEV));
    }

    fn neigh_body(
        family: u8,
        ifindex: u32,
        state: u16,
        flags: u8,
        dst: &[u8],
        mac: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut b = ndmsg(family, ifindex, state, flags);
        push_attr(&mut b, sys::NDA_DST, dst);
        if let Some(mac) = mac {
            push_attr(&mut b, sys::NDA_LLADDR, mac);
        }
        b
    }

    #[test]
    fn parses_neighbours() {
        let b = neigh_body(
            libc::AF_INET as u8,
            3,
            nud::REACHABLE,
            0,
            &[192, 0, 2, 2],
            Some(&[2, 0, 0, 0, 0, 2]),
        );
        assert_eq!(
            parse_neigh(&b),
            Some(Neighbour {
                ifindex: 3,
                addr: "192.0.2.2".parse().unwrap(),
                mac: Some([2, 0, 0, 0, 0, 2]),
                state: nud::REACHABLE,
            })
        );
        let v6: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let b = neigh_body(
            libc::AF_INET6 as u8,
            4,
            nud::INCOMPLETE,
            0,
            &v6.octets(),
            None,
        );
        let n = parse_neigh(&b).unwrap();
        assert_eq!(
            (n.addr, n.mac, n.state),
            (IpAddr::V6(v6), None, nud::INCOMPLETE)
        );
        // Bridge FDB entries (AF_BRIDGE, no IP) and proxy entries are skipped.
        let b = neigh_body(
            libc::AF_BRIDGE as u8,
            4,
            nud::NOARP,
            0x02,
            &[],
            Some(&[2; 6]),
        );
        assert_eq!(parse_neigh(&b), None);
        let b = neigh_body(
            libc::AF_INET as u8,
            3,
            nud::NONE,
            0x08,
            &[192, 0, 2, 2],
            None,
        );
        assert_eq!(parse_neigh(&b), None);
        // Non-Ethernet link-layer addresses are not MACs.
        let b = neigh_body(
            libc::AF_INET as u8,
            3,
            nud::REACHABLE,
            0,
            &[192, 0, 2, 2],
            Some(&[1; 20]),
        );
        assert_eq!(parse_neigh(&b).unwrap().mac, None);
    }

    #[test]
    fn parses_routes() {
        let mut b = vec![
            libc::AF_INET as u8,
            32,
            0,
            0,
            254,
            0,
            0,
            sys::RTN_UNICAST,
            0,
            0,
            0,
            0,
        ];
        push_attr(&mut b, sys::RTA_DST, &[198, 51, 100, 7]);
        push_attr(&mut b, sys::RTA_OIF, &5u32.to_ne_bytes());
        push_attr(&mut b, sys::RTA_GATEWAY, &[192, 0, 2, 254]);
        push_attr(&mut b, sys::RTA_PREFSRC, &[192, 0, 2, 1]);
        let r = parse_route(&b).unwrap();
        assert_eq!(r.oif, 5);
        assert_eq!(r.gateway, Some("192.0.2.254".parse().unwrap()));
        assert_eq!(r.prefsrc, Some("192.0.2.1".parse().unwrap()));
        assert!(!r.is_on_link_unicast());

        // IPv4 via an IPv6 next hop.
        let gw: Ipv6Addr = "fe80::1".parse().unwrap();
        let mut via = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        via.extend_from_slice(&gw.octets());
        let mut b = vec![
            libc::AF_INET as u8,
            32,
            0,
            0,
            254,
            0,
            0,
            sys::RTN_UNICAST,
            0,
            0,
            0,
            0,
        ];
        push_attr(&mut b, sys::RTA_OIF, &2u32.to_ne_bytes());
        push_attr(&mut b, sys::RTA_VIA, &via);
        assert_eq!(parse_route(&b).unwrap().gateway, Some(IpAddr::V6(gw)));

        let mut b = vec![
            libc::AF_INET as u8,
            32,
            0,
            0,
            254,
            0,
            0,
            sys::RTN_UNICAST,
            0,
            0,
            0,
            0,
        ];
        push_attr(&mut b, sys::RTA_OIF, &2u32.to_ne_bytes());
        assert!(parse_route(&b).unwrap().is_on_link_unicast());
    }

    #[test]
    fn parses_links() {
        let mut b = vec![0, 0, 1, 0];
        b.extend_from_slice(&7i32.to_ne_bytes());
        // ifi_flags: IFF_UP | IFF_BROADCAST | IFF_LOWER_UP; ifi_change.
        b.extend_from_slice(&0x1_0003u32.to_ne_bytes());
        b.extend_from_slice(&[0; 4]);
        push_attr(&mut b, sys::IFLA_IFNAME, b"vA\0");
        push_attr(&mut b, sys::IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1]);
        assert_eq!(
            parse_link(&b),
            Some(Interface {
                index: 7,
                name: "vA".into(),
                mac: [2, 0, 0, 0, 0, 1],
                carrier: true,
            })
        );
        // Up without a carrier (the peer of a veth went down, a cable out).
        b[8..12].copy_from_slice(&0x3u32.to_ne_bytes());
        assert!(!parse_link(&b).unwrap().carrier);
    }

    #[test]
    fn usable_neighbours() {
        let n = |state, mac| Neighbour {
            ifindex: 1,
            addr: "192.0.2.2".parse().unwrap(),
            mac,
            state,
        };
        let mac = Some([2, 0, 0, 0, 0, 2]);
        for state in [
            nud::REACHABLE,
            nud::STALE,
            nud::DELAY,
            nud::PROBE,
            nud::PERMANENT,
            nud::NOARP,
        ] {
            assert!(n(state, mac).is_usable(), "{}", nud_state_name(state));
            assert!(
                !n(state, Some([0; 6])).is_usable(),
                "zero MAC in {}",
                nud_state_name(state)
            );
            assert!(!n(state, Some([0xff; 6])).is_usable(), "broadcast MAC");
            assert!(
                !n(state, Some([1, 0, 0x5e, 0, 0, 1])).is_usable(),
                "multicast MAC"
            );
            assert!(!n(state, None).is_usable());
        }
        for state in [
            nud::NONE,
            nud::INCOMPLETE,
            nud::FAILED,
            nud::REACHABLE | nud::FAILED,
        ] {
            assert!(!n(state, mac).is_usable(), "{state:#x}");
        }
    }

    #[test]
    fn derived_states() {
        let path = Ok(Path {
            ifindex: 3,
            if_mac: [2, 0, 0, 0, 0, 1],
        });
        let n = |state, mac| Neighbour {
            ifindex: 3,
            addr: "192.0.2.2".parse().unwrap(),
            mac,
            state,
        };
        assert_eq!(
            derive_state(&path, Some(&n(nud::STALE, Some([2, 0, 0, 0, 0, 2])))),
            Resolved::Ready {
                ifindex: 3,
                if_mac: [2, 0, 0, 0, 0, 1],
                mac: [2, 0, 0, 0, 0, 2]
            }
        );
        assert!(!derive_state(&path, None).is_ready());
        assert!(!derive_state(&path, Some(&n(nud::FAILED, None))).is_ready());
        assert!(!derive_state(&path, Some(&n(nud::REACHABLE, Some([0; 6])))).is_ready());
        let gw = Err("not on-link, via 192.0.2.254".to_owned());
        assert_eq!(
            derive_state(&gw, Some(&n(nud::REACHABLE, Some([2; 6])))),
            Resolved::Unresolved {
                reason: "not on-link, via 192.0.2.254".into()
            }
        );
    }

    #[test]
    fn impossible_targets() {
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "ff02::1",
            "fe80::1",
        ] {
            assert!(unusable_target(a.parse().unwrap()).is_some(), "{a}");
        }
        for a in ["192.0.2.1", "2001:db8::1", "fec0::1"] {
            assert!(unusable_target(a.parse().unwrap()).is_none(), "{a}");
        }
    }

    #[test]
    fn invalid_interface_names_are_refused_locally() {
        for name in ["", "a-name-that-is-too-long", "a/b", "a\0b"] {
            assert!(
                matches!(interface_by_name(name), Err(NetlinkError::InvalidName(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn huge_timeouts_do_not_overflow() {
        assert!(deadline_after(Duration::MAX) > Instant::now());
        assert!(!wait_any_readable(&[], Duration::ZERO).unwrap());
    }

    #[test]
    fn format_mac_is_colon_hex() {
        assert_eq!(
            format_mac(&[2, 0xab, 0, 0, 0x10, 0xff]),
            "02:ab:00:00:10:ff"
        );
    }

    // -- Real kernel, in namespaces we create (root needed) -----------------

    use std::fs::File;
    use std::process::Command;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

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

    fn require_root() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "namespace tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN); run cargo test as root"
        );
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
                let file = File::open(format!("/run/netns/{ns}")).expect("open netns");
                // SAFETY: a valid namespace fd; CLONE_NEWNET moves only this
                // thread, which ends when the closure returns.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
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
                if pid != std::process::id()
                    && !std::path::Path::new(&format!("/proc/{pid}")).exists()
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
        lab.in_a(|| {
            let va = interface_by_name("vA").unwrap().index;
            let mut r = Resolver::with_config(fast_config()).unwrap();
            r.set_targets([B4, B6, BEHIND_GW4, BEHIND_GW6, A4].map(ip));
            let ready = Resolved::Ready {
                ifindex: va,
                if_mac: MAC_A,
                mac: MAC_B,
            };
            let reports = poll_until(&mut r, Duration::from_secs(5), |r| {
                r.current(ip(B4)) == Some(&ready) && r.current(ip(B6)) == Some(&ready)
            });
            // Everything was reported at least once, in address order per call.
            for addr in [B4, B6, BEHIND_GW4, BEHIND_GW6, A4] {
                assert!(reports.iter().any(|c| c.addr == ip(addr)), "{addr} never reported");
            }
            for (addr, gw) in [(BEHIND_GW4, GW4), (BEHIND_GW6, GW6)] {
                assert_eq!(
                    r.current(ip(addr)),
                    Some(&Resolved::Unresolved {
                        reason: format!("not on-link, via {gw}")
                    })
                );
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
            r.monitor.set_rcvbuf(1);
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
}
