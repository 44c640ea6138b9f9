//! Unit tests without privileges: the wire path (framing, requests, the
//! crate's messages to our types), derived states, target rules and helpers.

use super::monitor::*;
use super::resolver::*;
use super::socket::*;
use super::wire::*;
use super::*;
use netlink_packet_core::{DefaultNla, Emitable, NlasIterator};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
};
use std::net::Ipv6Addr;
use std::time::Instant;

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
    m.resize((m.len() + 3) & !3, 0);
    m
}

/// Attributes as the kernel lays them out (emitted by the crate).
fn attrs(nlas: &[DefaultNla]) -> Vec<u8> {
    let mut b = vec![0; nlas.buffer_len()];
    nlas.emit(&mut b);
    b
}

fn nla(kind: u16, value: &[u8]) -> DefaultNla {
    DefaultNla::new(kind, value.to_vec())
}

/// The `(errno, extended ack)` of the first message of `d`, an error.
fn error_of(d: &[u8]) -> Option<(i32, Option<String>)> {
    let msgs = split_messages(d).unwrap();
    match msgs[0].decode().unwrap() {
        Payload::Error(e) => kernel_error(&e, msgs[0].flags),
        other => panic!("{other:?}"),
    }
}

/// The crate's attribute iterator, which the extended-ack parsing uses:
/// padding, and the nested/byte-order flags masked off the type.
#[test]
fn attributes_round_trip_with_padding() {
    let b = attrs(&[
        nla(3, b"eth0\0"),
        nla(1, &[1, 2, 3, 4, 5, 6]),
        nla(0x8000 | 7, &[]),
    ]);
    assert_eq!(b.len(), 12 + 12 + 4);
    let got: Vec<(u16, Vec<u8>)> = NlasIterator::new(&b[..])
        .map(|a| {
            let a = a.unwrap();
            (a.kind(), a.value().to_vec())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (3, b"eth0\0".to_vec()),
            (1, vec![1, 2, 3, 4, 5, 6]),
            (7, vec![])
        ]
    );
}

#[test]
fn attributes_stop_at_garbage() {
    let mut b = attrs(&[nla(1, &[9; 4])]);
    b.extend_from_slice(&[200, 0, 1, 0]); // claims 200 bytes
    assert_eq!(NlasIterator::new(&b[..]).map_while(Result::ok).count(), 1);
    assert_eq!(
        NlasIterator::new(&[1u8, 0][..])
            .map_while(Result::ok)
            .count(),
        0
    );
}

#[test]
fn split_messages_checks_lengths() {
    let mut d = message(libc::RTM_NEWNEIGH, 2, 7, 99, &[1, 2, 3]);
    d.extend(message(sys::NLMSG_DONE, 2, 7, 99, &0i32.to_ne_bytes()));
    let msgs = split_messages(&d).unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        (msgs[0].ty, msgs[0].seq, msgs[0].pid),
        (libc::RTM_NEWNEIGH, 7, 99)
    );
    assert_eq!(msgs[0].data(), &[1, 2, 3]);
    // A body too short for an ndmsg is unreadable, its neighbour is not.
    assert!(msgs[0].decode().is_err());
    assert_eq!(msgs[1].ty, sys::NLMSG_DONE);
    assert!(matches!(msgs[1].decode(), Ok(Payload::Done(d)) if d.code == 0));
    assert!(split_messages(&header(64, 1, 0, 0, 0)).is_err());
    assert!(split_messages(&[1, 2, 3]).is_err());
}

#[test]
fn error_with_extended_ack_message() {
    // Capped: errno, echoed header, then TLVs.
    let mut body = (-libc::ENODEV).to_ne_bytes().to_vec();
    body.extend(header(40, libc::RTM_GETLINK, 5, 1, 0));
    body.extend(attrs(&[nla(sys::NLMSGERR_ATTR_MSG, b"no such thing\0")]));
    let d = message(
        sys::NLMSG_ERROR,
        netlink_packet_core::NLM_F_CAPPED | netlink_packet_core::NLM_F_ACK_TLVS,
        1,
        0,
        &body,
    );
    assert_eq!(
        error_of(&d),
        Some((libc::ENODEV, Some("no such thing".into())))
    );

    // Not capped: the whole request is echoed before the TLVs.
    let mut body = (-libc::EINVAL).to_ne_bytes().to_vec();
    let echoed = message(libc::RTM_GETLINK, 5, 1, 0, &[0; 6]);
    body.extend(&echoed);
    body.extend(attrs(&[nla(sys::NLMSGERR_ATTR_MSG, b"bad\0")]));
    let d = message(
        sys::NLMSG_ERROR,
        netlink_packet_core::NLM_F_ACK_TLVS,
        1,
        0,
        &body,
    );
    assert_eq!(error_of(&d), Some((libc::EINVAL, Some("bad".into()))));

    // A plain ack.
    let mut body = 0i32.to_ne_bytes().to_vec();
    body.extend(header(16, libc::RTM_NEWNEIGH, 5, 1, 0));
    let d = message(
        sys::NLMSG_ERROR,
        netlink_packet_core::NLM_F_CAPPED,
        1,
        0,
        &body,
    );
    assert_eq!(error_of(&d), Some((0, None)));
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

/// What solicit() sends: RTM_NEWNEIGH, NLM_F_CREATE, an ndmsg with state
/// NONE and NTF_USE, and the address as NDA_DST; byte for byte.
#[test]
fn solicitation_request_bytes() {
    let req = neigh_request(3, Some("192.0.2.2".parse().unwrap()), NeighbourFlags::Use);
    let flags = sys::NLM_F_REQUEST | sys::NLM_F_ACK | sys::NLM_F_CREATE;
    let d = encode(RouteNetlinkMessage::NewNeighbour(req), flags, 9);
    let mut want = header(16 + 12 + 8, libc::RTM_NEWNEIGH, flags, 9, 0);
    want.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
    want.extend_from_slice(&3u32.to_ne_bytes());
    want.extend_from_slice(&nud::NONE.to_ne_bytes());
    want.extend_from_slice(&[libc::NTF_USE, 0]);
    want.extend(attrs(&[nla(1, &[192, 0, 2, 2])])); // NDA_DST
    assert_eq!(d, want);
    // The dump asks for every family.
    let dump = encode(
        RouteNetlinkMessage::GetNeighbour(neigh_request(0, None, NeighbourFlags::empty())),
        sys::NLM_F_REQUEST | sys::NLM_F_DUMP,
        1,
    );
    assert_eq!(dump.len(), 16 + 12);
    assert_eq!(dump[16], libc::AF_UNSPEC as u8);
}

/// Decodes `body` as the kernel would send it: a message of type `ty`.
fn decoded(ty: u16, body: &[u8]) -> RouteNetlinkMessage {
    let d = message(ty, 0, 1, 0, body);
    match split_messages(&d).unwrap()[0].decode().unwrap() {
        Payload::InnerMessage(m) => m,
        other => panic!("{other:?}"),
    }
}

/// A `struct ndmsg`, laid out by hand as in the UAPI headers, with NDA_DST
/// and NDA_LLADDR; decoded by the crate, converted by us.
fn neigh_body(
    family: u8,
    ifindex: u32,
    state: u16,
    flags: u8,
    dst: &[u8],
    mac: Option<&[u8]>,
) -> Option<Neighbour> {
    let mut b = vec![family, 0, 0, 0];
    b.extend_from_slice(&ifindex.to_ne_bytes());
    b.extend_from_slice(&state.to_ne_bytes());
    b.extend_from_slice(&[flags, 0]);
    let mut nlas = vec![nla(libc::NDA_DST, dst)];
    nlas.extend(mac.map(|mac| nla(libc::NDA_LLADDR, mac)));
    b.extend(attrs(&nlas));
    match decoded(libc::RTM_NEWNEIGH, &b) {
        RouteNetlinkMessage::NewNeighbour(m) => neighbour_from(&m),
        other => panic!("{other:?}"),
    }
}

#[test]
fn parses_neighbours() {
    assert_eq!(
        neigh_body(
            libc::AF_INET as u8,
            3,
            nud::REACHABLE,
            0,
            &[192, 0, 2, 2],
            Some(&[2, 0, 0, 0, 0, 2]),
        ),
        Some(Neighbour {
            ifindex: 3,
            addr: "192.0.2.2".parse().unwrap(),
            mac: Some([2, 0, 0, 0, 0, 2]),
            state: nud::REACHABLE,
        })
    );
    let v6: Ipv6Addr = "2001:db8::2".parse().unwrap();
    let n = neigh_body(
        libc::AF_INET6 as u8,
        4,
        nud::INCOMPLETE,
        0,
        &v6.octets(),
        None,
    )
    .unwrap();
    assert_eq!(
        (n.addr, n.mac, n.state),
        (IpAddr::V6(v6), None, nud::INCOMPLETE)
    );
    // Bridge FDB entries (AF_BRIDGE, no IP) and proxy entries are skipped.
    let fdb = neigh_body(
        libc::AF_BRIDGE as u8,
        4,
        nud::NOARP,
        0x02,
        &[],
        Some(&[2; 6]),
    );
    assert_eq!(fdb, None);
    let proxy = neigh_body(
        libc::AF_INET as u8,
        3,
        nud::NONE,
        0x08,
        &[192, 0, 2, 2],
        None,
    );
    assert_eq!(proxy, None);
    // Non-Ethernet link-layer addresses are not MACs.
    let n = neigh_body(
        libc::AF_INET as u8,
        3,
        nud::REACHABLE,
        0,
        &[192, 0, 2, 2],
        Some(&[1; 20]),
    );
    assert_eq!(n.unwrap().mac, None);
    // What the crate encodes (our requests, the fuzz corpus) reads back.
    let mut m = neigh_request(
        3,
        Some("192.0.2.2".parse().unwrap()),
        NeighbourFlags::empty(),
    );
    m.header.state = nud::STALE.into();
    let d = encode(RouteNetlinkMessage::NewNeighbour(m), 0, 1);
    match split_messages(&d).unwrap()[0].decode().unwrap() {
        Payload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => {
            let n = neighbour_from(&m).unwrap();
            assert_eq!((n.ifindex, n.state, n.mac), (3, nud::STALE, None));
        }
        other => panic!("{other:?}"),
    }
}

/// A neighbour notification becomes the event the resolver applies.
#[test]
fn neighbour_notifications_become_events() {
    let mut m = NeighbourMessage::default();
    m.header.family = (libc::AF_INET as u8).into();
    m.header.ifindex = 3;
    m.header.state = nud::STALE.into();
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            "192.0.2.2".parse().unwrap(),
        )));
    let addr: IpAddr = "192.0.2.2".parse().unwrap();
    for (msg, want) in [
        (
            RouteNetlinkMessage::NewNeighbour(m.clone()),
            NeighbourEvent::Changed(Neighbour {
                ifindex: 3,
                addr,
                mac: None,
                state: nud::STALE,
            }),
        ),
        (
            RouteNetlinkMessage::DelNeighbour(m),
            NeighbourEvent::Deleted { ifindex: 3, addr },
        ),
    ] {
        let d = encode(msg, 0, 0);
        let msgs = split_messages(&d).unwrap();
        assert_eq!(neighbour_event(&msgs[0]), Some(want));
    }
}

/// A `struct rtmsg` (AF_INET, /32, main table, RTN_UNICAST) laid out by
/// hand, with `nlas`; decoded by the crate, converted by us.
fn route_body(nlas: &[DefaultNla]) -> Route {
    let mut b = vec![libc::AF_INET as u8, 32, 0, 0, 254, 0, 0, sys::RTN_UNICAST];
    b.extend_from_slice(&0u32.to_ne_bytes()); // rtm_flags
    b.extend(attrs(nlas));
    match decoded(libc::RTM_NEWROUTE, &b) {
        RouteNetlinkMessage::NewRoute(m) => route_from(&m),
        other => panic!("{other:?}"),
    }
}

#[test]
fn parses_routes() {
    let r = route_body(&[
        nla(libc::RTA_DST, &[198, 51, 100, 7]),
        nla(libc::RTA_OIF, &5u32.to_ne_bytes()),
        nla(libc::RTA_GATEWAY, &[192, 0, 2, 254]),
        nla(libc::RTA_PREFSRC, &[192, 0, 2, 1]),
    ]);
    assert_eq!(r.oif, 5);
    assert_eq!(r.gateway, Some("192.0.2.254".parse().unwrap()));
    assert_eq!(r.prefsrc, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(r.rtype, sys::RTN_UNICAST);
    assert!(!r.is_on_link_unicast());

    // IPv4 via an IPv6 next hop (RTA_VIA: a struct rtvia).
    let gw: Ipv6Addr = "fe80::1".parse().unwrap();
    let mut via = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
    via.extend_from_slice(&gw.octets());
    const RTA_VIA: u16 = 18;
    let r = route_body(&[nla(libc::RTA_OIF, &2u32.to_ne_bytes()), nla(RTA_VIA, &via)]);
    assert_eq!(r.gateway, Some(IpAddr::V6(gw)));

    let r = route_body(&[nla(libc::RTA_OIF, &2u32.to_ne_bytes())]);
    assert!(r.is_on_link_unicast());
    assert_eq!(r.mtu, None);

    // RTA_METRICS is a nest of RTAX_* attributes; RTAX_MTU (2) is the
    // route's MTU (`ip route add ... mtu 1400`), RTAX_ADVMSS (8) is not.
    const RTA_METRICS: u16 = 8;
    let metrics = attrs(&[
        nla(8, &1360u32.to_ne_bytes()),
        nla(2, &1400u32.to_ne_bytes()),
    ]);
    let r = route_body(&[
        nla(libc::RTA_OIF, &2u32.to_ne_bytes()),
        nla(RTA_METRICS, &metrics),
    ]);
    assert_eq!(r.mtu, Some(1400));
}

#[test]
fn parses_links() {
    // struct ifinfomsg: family, pad, type ARPHRD_ETHER, index, flags, change.
    let mut b = vec![0, 0, 1, 0];
    b.extend_from_slice(&7i32.to_ne_bytes());
    // ifi_flags: IFF_UP | IFF_BROADCAST | IFF_LOWER_UP; ifi_change.
    b.extend_from_slice(&0x1_0003u32.to_ne_bytes());
    b.extend_from_slice(&[0; 4]);
    const IFLA_ADDRESS: u16 = 1;
    const IFLA_IFNAME: u16 = 3;
    const IFLA_MTU: u16 = 4;
    b.extend(attrs(&[
        nla(IFLA_IFNAME, b"vA\0"),
        nla(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1]),
        nla(IFLA_MTU, &1500u32.to_ne_bytes()),
    ]));
    let link = |b: &[u8]| match decoded(libc::RTM_NEWLINK, b) {
        RouteNetlinkMessage::NewLink(m) => interface_from(&m),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        link(&b),
        Interface {
            index: 7,
            name: "vA".into(),
            mac: [2, 0, 0, 0, 0, 1],
            carrier: true,
            mtu: 1500,
        }
    );
    // Up without a carrier (the peer of a veth went down, a cable out).
    b[8..12].copy_from_slice(&0x3u32.to_ne_bytes());
    assert!(!link(&b).carrier);
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
        via: None,
        src: Some("192.0.2.1".parse().unwrap()),
        mtu: 1500,
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
            mac: [2, 0, 0, 0, 0, 2],
            via: None,
            src: Some("192.0.2.1".parse().unwrap()),
            mtu: 1500,
        }
    );
    assert!(!derive_state(&path, None).is_ready());
    assert!(!derive_state(&path, Some(&n(nud::FAILED, None))).is_ready());
    assert!(!derive_state(&path, Some(&n(nud::REACHABLE, Some([0; 6])))).is_ready());
    // A path's error is the state's reason, whatever the neighbour says.
    let unroutable = Err("no route: network unreachable".to_owned());
    assert_eq!(
        derive_state(&unroutable, Some(&n(nud::REACHABLE, Some([2; 6])))),
        Resolved::Unresolved {
            reason: "no route: network unreachable".into()
        }
    );
    // Through a gateway: its MAC, and a reason that names it.
    let via = Ok(Path {
        via: Some("192.0.2.254".parse().unwrap()),
        ..path.clone().unwrap()
    });
    assert!(matches!(
        derive_state(&via, Some(&n(nud::REACHABLE, Some([2; 6])))),
        Resolved::Ready {
            mac: [2, 2, 2, 2, 2, 2],
            via: Some(_),
            ..
        }
    ));
    assert_eq!(
        derive_state(&via, Some(&n(nud::FAILED, None))),
        Resolved::Unresolved {
            reason: "gateway 192.0.2.254: no ARP/NDP reply (neighbour FAILED)".into()
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
