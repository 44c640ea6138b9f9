//! One rtnetlink socket: opening and binding it, requests and their replies,
//! receiving datagrams, and waiting for several sockets at once.

use super::wire::{
    addr_octets, ndmsg, ne_i32, parse_error, parse_link, parse_neigh, parse_route, push_attr,
    split_messages, sys,
};
use super::{Interface, Neighbour, NetlinkError, Route, nud};
use std::io;
use std::mem;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
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

/// One rtnetlink socket. Request sockets are unsubscribed; monitor sockets
/// join multicast groups and are only read.
pub(super) struct Socket {
    pub(super) fd: OwnedFd,
    /// Our netlink port id, assigned by the kernel at bind time; replies to
    /// our requests carry it.
    pub(super) portid: u32,
    pub(super) seq: u32,
    pub(super) buf: Vec<u8>,
}

/// A reply message, owned (requests return them past the receive buffer's
/// next reuse).
pub(super) struct Reply {
    pub(super) ty: u16,
    pub(super) data: Vec<u8>,
}

pub(super) fn sockaddr_nl() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain integers, for which all-zero is valid; it
    // has a private padding field, so it cannot be built with a literal.
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr
}

pub(super) const SOCKADDR_NL_LEN: libc::socklen_t =
    mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;

impl Socket {
    pub(super) fn open(groups: &[u32]) -> Result<Self, NetlinkError> {
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

    pub(super) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(super) fn setsockopt(
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
    pub(super) fn grow_rcvbuf(&self, bytes: libc::c_int) {
        if self
            .setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes)
            .is_err()
        {
            let _ = self.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUF, bytes);
        }
    }

    /// Sends one request; returns its sequence number.
    pub(super) fn send(
        &mut self,
        ty: u16,
        flags: u16,
        payload: &[u8],
    ) -> Result<u32, NetlinkError> {
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
    pub(super) fn recv_datagram(&mut self, flags: libc::c_int) -> io::Result<(usize, u32)> {
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

    pub(super) fn request_once(
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

    pub(super) fn get_link(
        &mut self,
        index: u32,
        name: Option<&str>,
    ) -> Result<Interface, NetlinkError> {
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

    pub(super) fn get_route(&mut self, addr: IpAddr) -> Result<Route, NetlinkError> {
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

    pub(super) fn dump_neigh(&mut self) -> Result<Vec<Neighbour>, NetlinkError> {
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

    pub(super) fn get_neigh(
        &mut self,
        ifindex: u32,
        addr: IpAddr,
    ) -> Result<Option<Neighbour>, NetlinkError> {
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
