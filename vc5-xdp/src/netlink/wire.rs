//! The rtnetlink wire format: the UAPI constants, splitting datagrams into
//! messages, attributes, and building and parsing link, route, neighbour and
//! error messages. Safe slice code only: nothing here can read outside its
//! input (the fuzz tests hold it to that).

use super::{Interface, Neighbour, Route};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Constants from the Linux UAPI headers (`linux/netlink.h`,
/// `linux/rtnetlink.h`, `linux/neighbour.h`, `linux/if_link.h`). Spelled out
/// here rather than taken from `libc` so that the exact values this module
/// relies on are visible in one place.
pub(super) mod sys {
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

pub(super) fn align4(len: usize) -> usize {
    (len + 3) & !3
}

pub(super) fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(super) fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(super) fn ne_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Splits a datagram into its netlink messages.
pub(super) fn split_messages(mut buf: &[u8]) -> Result<Vec<RawMsg<'_>>, String> {
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
pub(super) struct Attrs<'a>(pub(super) &'a [u8]);

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

pub(super) fn push_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len() + (align4(len) - len), 0);
}

/// `struct ndmsg`: family, pad1, pad2, ifindex, state, flags, type.
pub(super) fn ndmsg(family: u8, ifindex: u32, state: u16, flags: u8) -> Vec<u8> {
    let mut p = Vec::with_capacity(32);
    p.extend_from_slice(&[family, 0, 0, 0]);
    p.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    p.extend_from_slice(&state.to_ne_bytes());
    p.extend_from_slice(&[flags, 0]);
    p
}

pub(super) fn addr_octets(addr: &IpAddr) -> (u8, Vec<u8>) {
    match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    }
}

pub(super) fn parse_ip(family: u8, b: &[u8]) -> Option<IpAddr> {
    match family as libc::c_int {
        libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        libc::AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

pub(super) fn parse_mac(b: &[u8]) -> Option<[u8; 6]> {
    b.try_into().ok()
}

/// Parses `NLMSG_ERROR` into (positive errno, extended-ack message).
pub(super) fn parse_error(msg: &RawMsg<'_>) -> Option<(i32, Option<String>)> {
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

pub(super) fn parse_link(data: &[u8]) -> Option<Interface> {
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

pub(super) fn parse_route(data: &[u8]) -> Option<Route> {
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
pub(super) fn parse_neigh(data: &[u8]) -> Option<Neighbour> {
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

/// A message inside a received datagram.
#[derive(Debug)]
pub(super) struct RawMsg<'a> {
    pub(super) ty: u16,
    pub(super) flags: u16,
    pub(super) seq: u32,
    pub(super) pid: u32,
    pub(super) data: &'a [u8],
}
