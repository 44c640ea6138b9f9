//! Between the wire and our types. `netlink-packet-route` encodes and
//! decodes the messages; what is ours is splitting a datagram into them,
//! building the few requests we send, and taking the fields we use out of
//! the parsed link, route, neighbour and error messages. No `unsafe`; the
//! fuzz tests feed this path arbitrary bytes.

use super::{Interface, Neighbour, Route};
use netlink_packet_core::{
    DecodeError, ErrorMessage, NLM_F_ACK_TLVS, NLM_F_CAPPED, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NlasIterator,
};
use netlink_packet_route::link::{LinkAttribute, LinkExtentMask, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourHeader, NeighbourMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::IpAddr;

/// UAPI values this module uses as plain numbers: route types are part of
/// [`Route`]'s public API, the groups are what sockets subscribe to.
pub(super) mod sys {
    pub use libc::{
        RTN_ANYCAST, RTN_BLACKHOLE, RTN_BROADCAST, RTN_LOCAL, RTN_MULTICAST, RTN_PROHIBIT,
        RTN_UNICAST, RTN_UNREACHABLE, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_IFADDR,
        RTNLGRP_IPV6_ROUTE, RTNLGRP_LINK, RTNLGRP_NEIGH,
    };
    pub use netlink_packet_core::{
        NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE,
        NLMSG_ERROR, NLMSG_NOOP,
    };
    pub const NLMSG_HDRLEN: usize = 16;
    /// `NLMSGERR_ATTR_MSG`: the extended ack's text.
    pub const NLMSGERR_ATTR_MSG: u16 = 1;
    pub const IFNAMSIZ: usize = 16;
    pub const RTM_NEWROUTE: u16 = libc::RTM_NEWROUTE;
}

/// A decoded message: header and payload.
pub(super) type Payload = NetlinkPayload<RouteNetlinkMessage>;

/// A message inside a received datagram, framed but not yet decoded.
#[derive(Debug)]
pub(super) struct RawMsg<'a> {
    pub(super) ty: u16,
    pub(super) flags: u16,
    pub(super) seq: u32,
    pub(super) pid: u32,
    /// The whole message, header included.
    pub(super) whole: &'a [u8],
}

impl<'a> RawMsg<'a> {
    /// The body, after the header.
    #[cfg(test)]
    pub(super) fn data(&self) -> &'a [u8] {
        &self.whole[sys::NLMSG_HDRLEN..]
    }

    /// Decodes the message. Failing on one message leaves the others of its
    /// datagram readable.
    pub(super) fn decode(&self) -> Result<Payload, DecodeError> {
        NetlinkMessage::<RouteNetlinkMessage>::deserialize(self.whole).map(|m| m.payload)
    }
}

/// Splits a datagram into its netlink messages (the crate parses one
/// message at a time). A length that does not fit is an error for the whole
/// datagram: nothing after it can be found.
pub(super) fn split_messages(mut buf: &[u8]) -> Result<Vec<RawMsg<'_>>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let nl = NetlinkBuffer::new_checked(buf)
            .map_err(|e| format!("{e} ({} bytes left)", buf.len()))?;
        let len = nl.length() as usize;
        let whole = &buf[..len];
        out.push(RawMsg {
            ty: nl.message_type(),
            flags: nl.flags(),
            seq: nl.sequence_number(),
            pid: nl.port_number(),
            whole,
        });
        // Messages are 4-byte aligned (NLMSG_ALIGN).
        buf = buf.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Ok(out)
}

/// Serializes a request with the given flags and sequence number.
pub(super) fn encode(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// `RTM_GETLINK` by index, or by name when `name` is given.
pub(super) fn link_request(index: u32, name: Option<&str>) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    if let Some(name) = name {
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    }
    // Counters are not wanted and make the reply several times larger.
    m.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    RouteNetlinkMessage::GetLink(m)
}

/// `RTM_GETROUTE` for one destination (`ip route get ADDR`).
pub(super) fn route_request(addr: IpAddr) -> RouteNetlinkMessage {
    let mut m = RouteMessage::default();
    let (family, len, dst) = match addr {
        IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
    };
    m.header = RouteHeader {
        address_family: family,
        destination_prefix_length: len,
        ..RouteHeader::default()
    };
    m.attributes.push(RouteAttribute::Destination(dst));
    RouteNetlinkMessage::GetRoute(m)
}

/// A neighbour message: `family` and no address for a dump, else one entry.
pub(super) fn neigh_request(
    ifindex: u32,
    addr: Option<IpAddr>,
    flags: NeighbourFlags,
) -> NeighbourMessage {
    let family = match addr {
        None => AddressFamily::Unspec,
        Some(IpAddr::V4(_)) => AddressFamily::Inet,
        Some(IpAddr::V6(_)) => AddressFamily::Inet6,
    };
    let mut m = NeighbourMessage::default();
    m.header = NeighbourHeader {
        family,
        ifindex,
        flags,
        ..NeighbourHeader::default()
    };
    if let Some(addr) = addr {
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::from(
                addr,
            )));
    }
    m
}

/// `NLMSG_ERROR` as (errno, extended-ack message): 0 for an ack, a
/// positive errno for an error. `None` when the code has no errno (a
/// corrupt `i32::MIN`, which cannot be negated). `flags` are the message's
/// header flags, which say whether and where extended-ack TLVs follow.
pub(super) fn kernel_error(e: &ErrorMessage, flags: u16) -> Option<(i32, Option<String>)> {
    let errno = e.raw_code().checked_neg()?;
    if flags & NLM_F_ACK_TLVS == 0 {
        return Some((errno, None));
    }
    // The crate leaves everything after the code as bytes: the echoed
    // request (just its header when capped), then the TLVs.
    let echoed = if flags & NLM_F_CAPPED != 0 {
        sys::NLMSG_HDRLEN
    } else {
        let len = e.header.get(..4).and_then(|b| b.try_into().ok());
        (u32::from_ne_bytes(len?) as usize + 3) & !3
    };
    let tlvs = e.header.get(echoed..).unwrap_or(&[]);
    let text = NlasIterator::new(tlvs)
        .map_while(Result::ok)
        .find(|nla| nla.kind() == sys::NLMSGERR_ATTR_MSG)
        .map(|nla| {
            let v = nla.value();
            String::from_utf8_lossy(v.split(|&c| c == 0).next().unwrap_or(&[])).into_owned()
        })
        .filter(|s| !s.is_empty());
    Some((errno, text))
}

pub(super) fn interface_from(m: &LinkMessage) -> Interface {
    let up = LinkFlags::Up | LinkFlags::LowerUp;
    let mut iface = Interface {
        index: m.header.index,
        name: String::new(),
        mac: [0; 6],
        carrier: m.header.flags.contains(up),
        mtu: 0,
    };
    for attr in &m.attributes {
        match attr {
            LinkAttribute::IfName(name) => iface.name = name.clone(),
            LinkAttribute::Address(mac) => iface.mac = mac_of(mac).unwrap_or([0; 6]),
            LinkAttribute::Mtu(mtu) => iface.mtu = *mtu,
            _ => {}
        }
    }
    iface
}

pub(super) fn route_from(m: &RouteMessage) -> Route {
    let mut route = Route {
        oif: 0,
        gateway: None,
        prefsrc: None,
        rtype: m.header.kind.into(),
        mtu: None,
    };
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Oif(oif) => route.oif = *oif,
            RouteAttribute::Gateway(gw) => route.gateway = route_ip(gw),
            // struct rtvia: an IPv4 route through an IPv6 next hop (RFC 5549).
            RouteAttribute::Via(RouteVia::Inet(a)) => route.gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Via(RouteVia::Inet6(a)) => route.gateway = Some(IpAddr::V6(*a)),
            RouteAttribute::PrefSource(src) => route.prefsrc = route_ip(src),
            RouteAttribute::Metrics(metrics) => {
                route.mtu = metrics.iter().find_map(|m| match m {
                    RouteMetric::Mtu(mtu) if *mtu > 0 => Some(*mtu),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    route
}

/// `None` for anything but IPv4/IPv6 entries (e.g. bridge FDB entries,
/// which share the group) and for proxy entries.
pub(super) fn neighbour_from(m: &NeighbourMessage) -> Option<Neighbour> {
    if m.header.flags.contains(NeighbourFlags::Proxy) {
        return None;
    }
    let mut addr = None;
    let mut mac = None;
    for attr in &m.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                addr = Some(IpAddr::V4(*a))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                addr = Some(IpAddr::V6(*a))
            }
            NeighbourAttribute::LinkLayerAddress(ll) => mac = mac_of(ll),
            _ => {}
        }
    }
    Some(Neighbour {
        ifindex: m.header.ifindex,
        addr: addr?,
        mac,
        state: m.header.state.into(),
    })
}

/// Whether a link/address/route notification can change a target's path.
pub(super) fn is_path_relevant(msg: &RawMsg<'_>) -> bool {
    match msg.ty {
        sys::NLMSG_NOOP | sys::NLMSG_ERROR | sys::NLMSG_DONE => false,
        // Cloned IPv6 routes (PMTU exceptions and the like) come and go with
        // traffic and never change which interface a destination is on.
        sys::RTM_NEWROUTE => match msg.decode() {
            Ok(NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r))) => {
                !r.header.flags.contains(RouteFlags::Cloned)
            }
            // Unreadable: assume it matters.
            _ => true,
        },
        _ => true,
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn mac_of(b: &[u8]) -> Option<[u8; 6]> {
    b.try_into().ok()
}
