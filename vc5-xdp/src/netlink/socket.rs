//! One rtnetlink socket (`netlink_sys::Socket`, blocking): opening and
//! binding it, requests and their replies, receiving whole datagrams, and
//! waiting for several sockets at once.

use super::wire::{self, Payload, kernel_error, split_messages, sys};
use super::{Interface, Neighbour, NetlinkError, Route, nud};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::neighbour::NeighbourFlags;
use netlink_sys::{SocketAddr, protocols::NETLINK_ROUTE};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};
use tracing::debug;

/// How long a request socket waits for the kernel's answer. The kernel
/// answers rtnetlink requests synchronously, so this only guards against a
/// bug turning into a hung daemon.
pub(super) const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an interrupted dump (`NLM_F_DUMP_INTR`) is retried.
pub(super) const DUMP_RETRIES: usize = 5;
/// Receive buffer asked for on monitor sockets: neighbour notifications come
/// in bursts (a link flap touches every entry), and an overrun costs a dump.
pub(super) const MONITOR_RCVBUF: libc::c_int = 4 << 20;
/// Message types below this are netlink's own (`NLMSG_*`), not rtnetlink's.
const NLMSG_MIN_TYPE: u16 = 0x10;

/// One rtnetlink socket. Request sockets are unsubscribed; monitor sockets
/// join multicast groups and are only read.
pub(super) struct Socket {
    sock: netlink_sys::Socket,
    /// Our netlink port id, assigned by the kernel at bind time; replies to
    /// our requests carry it.
    pub(super) portid: u32,
    pub(super) seq: u32,
    pub(super) buf: Vec<u8>,
}

impl Socket {
    pub(super) fn open(groups: &[u32]) -> Result<Self, NetlinkError> {
        let io = |op| move |source| NetlinkError::Io { op, source };
        let mut sock = netlink_sys::Socket::new(NETLINK_ROUTE).map_err(io("socket(AF_NETLINK)"))?;
        let addr = sock.bind_auto().map_err(io("bind"))?;
        for &group in groups {
            sock.add_membership(group)
                .map_err(io("NETLINK_ADD_MEMBERSHIP"))?;
        }
        // Extended acks carry the kernel's own explanation of an error;
        // capped acks keep error replies small. Both are refinements, so an
        // old kernel without them is not an error.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        Ok(Socket {
            sock,
            portid: addr.port_number(),
            seq: 0,
            buf: vec![0; 32 * 1024],
        })
    }

    /// Asks for a large receive buffer: FORCE (root) may exceed
    /// `rmem_max`, plain SO_RCVBUF is capped by it. Best effort.
    pub(super) fn grow_rcvbuf(&self, bytes: libc::c_int) {
        // netlink-sys has plain SO_RCVBUF only.
        // SAFETY: `bytes` is a valid c_int of the length passed, and the
        // descriptor is ours for the duration of the call.
        let rc = unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const bytes).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let _ = self.sock.set_rx_buf_sz(bytes);
        }
    }

    /// Plain `SO_RCVBUF`, which a test can shrink with.
    #[cfg(test)]
    pub(super) fn set_rcvbuf(&self, bytes: libc::c_int) -> io::Result<()> {
        self.sock.set_rx_buf_sz(bytes)
    }

    /// Sends one request; returns its sequence number.
    pub(super) fn send(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<u32, NetlinkError> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let bytes = wire::encode(msg, flags, self.seq);
        let kernel = SocketAddr::new(0, 0);
        loop {
            match self.sock.send_to(&bytes, &kernel, 0) {
                Ok(_) => return Ok(self.seq),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(NetlinkError::Io {
                        op: "sendto",
                        source,
                    });
                }
            }
        }
    }

    /// Receives one datagram into `self.buf`, growing it first if needed
    /// (a datagram larger than the buffer would otherwise be cut silently).
    /// Returns its length and the sender's port id (0 = kernel).
    pub(super) fn recv_datagram(&mut self, flags: libc::c_int) -> io::Result<(usize, u32)> {
        loop {
            // MSG_TRUNC makes the peek return the datagram's full length.
            let peek = self.sock.recv_from(
                &mut &mut self.buf[..],
                flags | libc::MSG_PEEK | libc::MSG_TRUNC,
            );
            let n = match peek {
                Ok((n, _)) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n > self.buf.len() {
                self.buf.resize(n.next_power_of_two(), 0);
            }
            match self.sock.recv_from(&mut &mut self.buf[..], flags) {
                Ok((n, src)) => return Ok((n.min(self.buf.len()), src.port_number())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Throws away everything queued (after an overrun).
    pub(super) fn discard_queued(&mut self) {
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
    pub(super) fn request(
        &mut self,
        what: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (replies, interrupted) = self.request_once(what, msg.clone(), flags)?;
            if !interrupted || attempt >= DUMP_RETRIES {
                return Ok(replies);
            }
            debug!("{what}: dump interrupted by a concurrent change, retrying");
        }
    }

    pub(super) fn request_once(
        &mut self,
        what: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool), NetlinkError> {
        let seq = self.send(msg, flags | sys::NLM_F_REQUEST | sys::NLM_F_ACK)?;
        let timeout = || NetlinkError::Timeout {
            request: what.to_owned(),
            timeout: REPLY_TIMEOUT,
        };
        // Bound replies: the kernel answers at once, but a daemon must not
        // hang forever on a bug.
        let deadline = deadline_after(REPLY_TIMEOUT);
        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if !wait_readable(self.as_fd(), left)
                .map_err(|source| NetlinkError::Io { op: "poll", source })?
            {
                return Err(timeout());
            }
            let len = match self.recv_datagram(libc::MSG_DONTWAIT) {
                Ok((len, _)) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(source) => return Err(NetlinkError::Io { op: "recv", source }),
            };
            let msgs =
                split_messages(&self.buf[..len]).map_err(|d| NetlinkError::malformed(what, d))?;
            for msg in msgs {
                // Leftovers of an earlier request that failed midway.
                if msg.seq != seq || msg.pid != self.portid {
                    continue;
                }
                interrupted |= msg.flags & sys::NLM_F_DUMP_INTR != 0;
                let payload = match msg.decode() {
                    Ok(payload) => payload,
                    // A dump entry we cannot read is left out, as one of a
                    // kind we do not ask for would be; anything else was
                    // the answer we needed.
                    Err(e) if flags & sys::NLM_F_DUMP != 0 && msg.ty >= NLMSG_MIN_TYPE => {
                        debug!("{what}: skipping an unreadable message: {e}");
                        continue;
                    }
                    Err(e) => return Err(NetlinkError::malformed(what, e.to_string())),
                };
                match payload {
                    Payload::Noop => {}
                    Payload::Error(e) => {
                        return match kernel_error(&e, msg.flags) {
                            Some((0, _)) => Ok((replies, interrupted)),
                            Some((errno, ext_ack)) => Err(NetlinkError::Kernel {
                                request: what.to_owned(),
                                errno,
                                ext_ack,
                            }),
                            None => Err(NetlinkError::malformed(what, "bad NLMSG_ERROR")),
                        };
                    }
                    // A dump can end with an error in place of data.
                    Payload::Done(done) => {
                        return match done.code.checked_neg() {
                            Some(errno) if errno > 0 => Err(NetlinkError::Kernel {
                                request: what.to_owned(),
                                errno,
                                ext_ack: None,
                            }),
                            Some(_) => Ok((replies, interrupted)),
                            None => Err(NetlinkError::malformed(what, "bad NLMSG_DONE")),
                        };
                    }
                    Payload::Overrun(_) => {
                        return Err(NetlinkError::malformed(what, "NLMSG_OVERRUN"));
                    }
                    Payload::InnerMessage(m) => replies.push(m),
                    _ => return Err(NetlinkError::malformed(what, "unknown control message")),
                }
            }
        }
    }

    pub(super) fn get_link(
        &mut self,
        index: u32,
        name: Option<&str>,
    ) -> Result<Interface, NetlinkError> {
        let what = match name {
            Some(name) => {
                if name.is_empty() || name.len() >= sys::IFNAMSIZ || name.contains(['\0', '/']) {
                    return Err(NetlinkError::InvalidName(name.to_owned()));
                }
                format!("RTM_GETLINK {name}")
            }
            None => format!("RTM_GETLINK ifindex {index}"),
        };
        let replies = self.request(&what, wire::link_request(index, name), 0)?;
        replies
            .iter()
            .find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(wire::interface_from(l)),
                _ => None,
            })
            .ok_or_else(|| NetlinkError::malformed(&what, "no RTM_NEWLINK in the reply"))
    }

    pub(super) fn get_route(&mut self, addr: IpAddr) -> Result<Route, NetlinkError> {
        let what = format!("RTM_GETROUTE {addr}");
        let replies = self.request(&what, wire::route_request(addr), 0)?;
        replies
            .iter()
            .find_map(|r| match r {
                RouteNetlinkMessage::NewRoute(r) => Some(wire::route_from(r)),
                _ => None,
            })
            .ok_or_else(|| NetlinkError::malformed(&what, "no RTM_NEWROUTE in the reply"))
    }

    pub(super) fn dump_neigh(&mut self) -> Result<Vec<Neighbour>, NetlinkError> {
        // AF_UNSPEC dumps every neighbour table (IPv4 and IPv6); proxy and
        // bridge FDB entries need their own flags/family and are not included.
        let req = RouteNetlinkMessage::GetNeighbour(wire::neigh_request(
            0,
            None,
            NeighbourFlags::empty(),
        ));
        let replies = self.request("RTM_GETNEIGH dump", req, sys::NLM_F_DUMP)?;
        Ok(replies.iter().filter_map(neighbour_in).collect())
    }

    pub(super) fn get_neigh(
        &mut self,
        ifindex: u32,
        addr: IpAddr,
    ) -> Result<Option<Neighbour>, NetlinkError> {
        let req = wire::neigh_request(ifindex, Some(addr), NeighbourFlags::empty());
        let what = format!("RTM_GETNEIGH {addr} ifindex {ifindex}");
        match self.request(&what, RouteNetlinkMessage::GetNeighbour(req), 0) {
            Ok(replies) => Ok(replies.iter().find_map(neighbour_in)),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) fn solicit(&mut self, ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        if let Some(n) = self.get_neigh(ifindex, addr)?
            && n.state & (nud::PERMANENT | nud::NOARP) != 0
        {
            return Ok(());
        }
        self.solicit_unchecked(ifindex, addr)
    }

    /// `RTM_NEWNEIGH` with `NTF_USE`: see the module docs. The caller must
    /// know the entry is not PERMANENT.
    pub(super) fn solicit_unchecked(
        &mut self,
        ifindex: u32,
        addr: IpAddr,
    ) -> Result<(), NetlinkError> {
        // ndm_state (NONE) is ignored with NTF_USE (the entry keeps its state).
        let req = wire::neigh_request(ifindex, Some(addr), NeighbourFlags::Use);
        let what = format!("RTM_NEWNEIGH NTF_USE {addr} ifindex {ifindex}");
        self.request(
            &what,
            RouteNetlinkMessage::NewNeighbour(req),
            sys::NLM_F_CREATE,
        )
        .map(drop)
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

fn neighbour_in(m: &RouteNetlinkMessage) -> Option<Neighbour> {
    match m {
        RouteNetlinkMessage::NewNeighbour(n) => wire::neighbour_from(n),
        _ => None,
    }
}

/// Waits until `fd` is readable or `timeout` passes.
pub(super) fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    wait_any_readable(&[fd], timeout)
}

/// Waits until one of `fds` is readable (or has an error pending, which the
/// next read reports) or `timeout` passes.
pub(super) fn wait_any_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<bool> {
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
pub(super) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}
