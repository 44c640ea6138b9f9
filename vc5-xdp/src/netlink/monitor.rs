//! Neighbour notifications: a socket subscribed to `RTNLGRP_NEIGH`.

use super::socket::{MONITOR_RCVBUF, Socket, wait_readable};
use super::wire::{self, Payload, RawMsg, split_messages, sys};
use super::{Neighbour, NetlinkError};
use netlink_packet_route::RouteNetlinkMessage;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

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
/// Subscribe before dumping ([`neighbours`](super::neighbours)) so that nothing falls between
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
        if !wait_readable(self.sock.as_fd(), timeout)
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
    pub(super) fn set_rcvbuf(&self, bytes: libc::c_int) {
        // Plain SO_RCVBUF (not FORCE) so a test can shrink it.
        self.sock.set_rcvbuf(bytes).expect("SO_RCVBUF");
    }
}

impl AsRawFd for NeighbourMonitor {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_fd().as_raw_fd()
    }
}

impl AsFd for NeighbourMonitor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// The event a notification stands for; `None` for messages that are not
/// IPv4/IPv6 neighbour changes, or that cannot be read (one bad message does
/// not cost the rest of its datagram).
pub(super) fn neighbour_event(msg: &RawMsg<'_>) -> Option<NeighbourEvent> {
    match msg.decode().ok()? {
        Payload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => {
            Some(NeighbourEvent::Changed(wire::neighbour_from(&m)?))
        }
        Payload::InnerMessage(RouteNetlinkMessage::DelNeighbour(m)) => {
            let n = wire::neighbour_from(&m)?;
            Some(NeighbourEvent::Deleted {
                ifindex: n.ifindex,
                addr: n.addr,
            })
        }
        _ => None,
    }
}
