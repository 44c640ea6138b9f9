//! Link, route and neighbour (ARP/NDP) lookups over rtnetlink.
//!
//! vc5 forwards each packet at layer 2 (XDP rewrites the destination MAC to a
//! real server's MAC and transmits the frame otherwise unchanged: Direct
//! Server Return) or in a tunnel to the real (layer-3 DSR). Either way it
//! needs, for every real,
//!
//! * the route the kernel would take to it: the egress interface's ifindex
//!   and MAC (the frame's source), the gateway when the real is not on-link,
//!   the source address the route names (a tunnel's outer source) and the
//!   MTU (the route's own, else the interface's); layer-2 DSR can use only an
//!   on-link real, which the daemon decides from the gateway, and
//! * the next hop's MAC (the real's own when on-link, else the gateway's),
//!   taken from the kernel's neighbour table, which we make the kernel fill
//!   in ourselves, follow as it changes, and never use while it is
//!   unresolved or zero.
//!
//! The module speaks `NETLINK_ROUTE` with `netlink-packet-route` (the message
//! types, their encoding and decoding) over `netlink-sys`'s blocking socket,
//! as other Rust networking daemons do, rather than with a wire format of its
//! own: the crates are maintained against new kernels, and what is left here
//! is what vc5 decides (which requests, which fields, how errors and
//! overruns are handled). Ours are splitting a datagram into messages, the
//! extended-ack text (the crate leaves it as bytes), the conversion into
//! [`Interface`], [`Route`] and [`Neighbour`], waiting with `poll(2)` (reply
//! timeouts, several sockets at once) and `SO_RCVBUFFORCE`; the module's only
//! `unsafe` is in those two system calls. A message the crate cannot decode
//! fails a lookup but is skipped in a dump or a batch of notifications.
//! Everything is blocking std code, no async runtime. Each socket is bound
//! to the network namespace of the thread that created it, so all functions
//! work inside whatever namespace the calling thread has `setns(2)`-ed into;
//! nothing reads `/sys` or `/proc`.
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

mod link;
mod monitor;
mod resolver;
mod socket;
mod wire;

pub use link::{
    add_address, add_route, create_veth, delete_link, set_link, set_link_netns, set_tx_checksum,
    tx_checksum,
};
pub use monitor::{NeighbourEvent, NeighbourMonitor};
pub use resolver::{Kernel, Netlink, Resolution, Resolved, Resolver, ResolverConfig};

use socket::Socket;
use std::io;
use std::net::IpAddr;
use std::time::Duration;
use wire::sys;

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
    /// The interface's MTU (`IFLA_MTU`); 0 if the kernel gave none.
    pub mtu: u32,
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
    /// The route's own MTU (`ip route ... mtu N`, or a path MTU the kernel
    /// learnt), when it has one; else the interface's applies.
    pub mtu: Option<u32>,
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

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod link_tests;
#[cfg(test)]
mod ns_tests;
#[cfg(test)]
mod tests;
