//! Making and configuring links over rtnetlink: the veth pair of vc5d's
//! probe namespace, its state, addresses and routes. Every call acts in the
//! calling thread's network namespace (the request socket is opened there);
//! a namespace's own configuration is done from a thread inside it.

use super::NetlinkError;
use super::socket::Socket;
use super::wire::sys;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `NLM_F_EXCL`: fail rather than touch an existing object.
const NLM_F_EXCL: u16 = 0x200;

/// A veth pair: `host` here, its peer `peer` made directly in the
/// namespace `peer_ns` (which may be this one).
pub fn create_veth(host: &str, peer: &str, peer_ns: BorrowedFd) -> Result<(), NetlinkError> {
    let mut peer_msg = LinkMessage::default();
    peer_msg
        .attributes
        .push(LinkAttribute::IfName(peer.to_owned()));
    peer_msg
        .attributes
        .push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(host.to_owned()));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
    ]));
    Socket::open(&[])?
        .request(
            &format!("RTM_NEWLINK veth {host} / {peer}"),
            RouteNetlinkMessage::NewLink(m),
            sys::NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
}

/// Deletes link `name`; false when there was none. Deleting one end of a
/// veth pair deletes both.
pub fn delete_link(name: &str) -> Result<bool, NetlinkError> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    match Socket::open(&[])?.request(
        &format!("RTM_DELLINK {name}"),
        RouteNetlinkMessage::DelLink(m),
        0,
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Moves link `name` into the namespace `ns`.
pub fn set_link_netns(name: &str, ns: BorrowedFd) -> Result<(), NetlinkError> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    m.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
    Socket::open(&[])?
        .request(
            &format!("RTM_NEWLINK {name} netns"),
            RouteNetlinkMessage::NewLink(m),
            0,
        )
        .map(drop)
}

/// Sets link `name` up or down, and `IFF_NOARP` when `noarp` says.
pub fn set_link(name: &str, up: bool, noarp: Option<bool>) -> Result<(), NetlinkError> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    m.header.change_mask |= LinkFlags::Up;
    if up {
        m.header.flags |= LinkFlags::Up;
    }
    if let Some(noarp) = noarp {
        m.header.change_mask |= LinkFlags::Noarp;
        if noarp {
            m.header.flags |= LinkFlags::Noarp;
        }
    }
    Socket::open(&[])?
        .request(
            &format!("RTM_NEWLINK {name} flags"),
            RouteNetlinkMessage::NewLink(m),
            0,
        )
        .map(drop)
}

/// Adds `addr/prefix_len` to link `ifindex` (IPv6 without duplicate
/// address detection, so that it is usable at once). Already there is fine.
pub fn add_address(ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<(), NetlinkError> {
    let mut m = AddressMessage::default();
    m.header.family = family(addr);
    m.header.prefix_len = prefix_len;
    m.header.index = ifindex;
    if addr.is_ipv6() {
        m.header.flags = AddressHeaderFlags::Nodad;
    } else {
        m.attributes.push(AddressAttribute::Local(addr));
    }
    m.attributes.push(AddressAttribute::Address(addr));
    exists_ok(Socket::open(&[])?.request(
        &format!("RTM_NEWADDR {addr}/{prefix_len} ifindex {ifindex}"),
        RouteNetlinkMessage::NewAddress(m),
        sys::NLM_F_CREATE | NLM_F_EXCL,
    ))
}

/// Adds a device route `dst/prefix_len` out of link `ifindex` to the main
/// table. Already there is fine.
pub fn add_route(dst: IpAddr, prefix_len: u8, ifindex: u32) -> Result<(), NetlinkError> {
    let mut m = RouteMessage::default();
    m.header = RouteHeader {
        address_family: family(dst),
        destination_prefix_length: prefix_len,
        table: RouteHeader::RT_TABLE_MAIN,
        protocol: RouteProtocol::Static,
        scope: RouteScope::Link,
        kind: RouteType::Unicast,
        ..RouteHeader::default()
    };
    m.attributes.push(RouteAttribute::Destination(match dst {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }));
    m.attributes.push(RouteAttribute::Oif(ifindex));
    exists_ok(Socket::open(&[])?.request(
        &format!("RTM_NEWROUTE {dst}/{prefix_len} ifindex {ifindex}"),
        RouteNetlinkMessage::NewRoute(m),
        sys::NLM_F_CREATE | NLM_F_EXCL,
    ))
}

/// Turns transmit checksum offload of link `name` on or off (the ethtool
/// ioctl `ETHTOOL_STXCSUM`).
pub fn set_tx_checksum(name: &str, on: bool) -> io::Result<()> {
    ethtool_value(name, ETHTOOL_STXCSUM, u32::from(on)).map(drop)
}

/// Whether transmit checksum offload of link `name` is on
/// (`ETHTOOL_GTXCSUM`).
pub fn tx_checksum(name: &str) -> io::Result<bool> {
    ethtool_value(name, ETHTOOL_GTXCSUM, 0).map(|v| v != 0)
}

const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;

/// One `struct ethtool_value` ioctl on link `name`: the value back.
fn ethtool_value(name: &str, cmd: u32, data: u32) -> io::Result<u32> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut v = EthtoolValue { cmd, data };
    if name.len() >= sys::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: a datagram socket only for the ioctl, owned at once; a zeroed
    // ifreq with the name copied in and ifr_data pointing at `v`, which
    // outlives the call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
            *d = *s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = (&raw mut v).cast();
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(v.data)
}

fn family(a: IpAddr) -> AddressFamily {
    if a.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn exists_ok(r: Result<Vec<RouteNetlinkMessage>, NetlinkError>) -> Result<(), NetlinkError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}
