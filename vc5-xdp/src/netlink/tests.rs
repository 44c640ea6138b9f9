//! Unit tests without privileges: the wire format, derived states, target
//! rules and helpers.

use super::resolver::*;
use super::socket::*;
use super::wire::*;
use super::*;
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
