//! Property tests of the receive path: random and mutated datagrams (valid
//! link, route, neighbour and error messages as the crate encodes them, then
//! bit flips, truncations, length fields set to extremes, random bytes) go
//! through our framing (`split_messages`), the crate's decoding and our
//! conversions (`interface`, `route`, `neighbour`, `kernel_error`,
//! `neighbour_event`, `is_path_relevant`). None may panic, and framing may
//! not hand out bytes outside the datagram; valid messages come back as
//! what was encoded.
//!
//! Bounded by default (a second or two in a debug build);
//! `VC5_FUZZ_SEED=N` replays a run, `VC5_FUZZ_ITERS=N` runs longer.

use super::monitor::*;
use super::wire::*;
use super::*;
use netlink_packet_core::{
    DefaultNla, Emitable, ErrorMessage, NLM_F_ACK_TLVS, NLM_F_CAPPED, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourFlags};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use std::num::NonZeroI32;

/// xorshift64*: small, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

fn link(index: u32) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up | LinkFlags::Broadcast | LinkFlags::LowerUp;
    m.attributes = vec![
        LinkAttribute::IfName("eth0".into()),
        LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
    ];
    RouteNetlinkMessage::NewLink(m)
}

fn route(oif: u32, gw: IpAddr) -> RouteNetlinkMessage {
    let mut m = RouteMessage::default();
    let gw = match gw {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    };
    m.header.address_family = match gw {
        RouteAddress::Inet(_) => (libc::AF_INET as u8).into(),
        _ => (libc::AF_INET6 as u8).into(),
    };
    m.header.destination_prefix_length = 32;
    m.header.table = 254;
    m.header.kind = RouteType::Unicast;
    m.attributes = vec![RouteAttribute::Oif(oif), RouteAttribute::Gateway(gw)];
    RouteNetlinkMessage::NewRoute(m)
}

fn neighbour_msg(addr: IpAddr, mac: [u8; 6], state: u16) -> RouteNetlinkMessage {
    let mut m = neigh_request(3, Some(addr), NeighbourFlags::empty());
    m.header.state = state.into();
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    RouteNetlinkMessage::NewNeighbour(m)
}

/// `NLMSG_ERROR` with a capped echo and an extended-ack text.
fn error_with_text(errno: i32, text: &[u8]) -> Vec<u8> {
    let mut echoed = NetlinkHeader::default();
    echoed.length = 16;
    echoed.message_type = libc::RTM_NEWNEIGH;
    let mut body = vec![0; 16];
    echoed.emit(&mut body);
    let tlv = [DefaultNla::new(sys::NLMSGERR_ATTR_MSG, text.to_vec())];
    let at = body.len();
    body.resize(at + tlv.as_slice().buffer_len(), 0);
    tlv.as_slice().emit(&mut body[at..]);
    let mut e = ErrorMessage::default();
    e.code = NonZeroI32::new(-errno);
    e.header = body;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_ACK_TLVS | NLM_F_CAPPED;
    header.sequence_number = 7;
    let mut m = NetlinkMessage::<RouteNetlinkMessage>::new(header, NetlinkPayload::Error(e));
    m.finalize();
    let mut d = vec![0; m.buffer_len()];
    m.serialize(&mut d);
    d
}

/// A datagram of one to four valid messages.
fn valid(rng: &mut Rng) -> Vec<u8> {
    let mut d = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let m = match rng.below(4) {
            0 => encode(link(rng.below(1000) as u32), 0, 7),
            1 => encode(route(2, "2001:db8::1".parse().unwrap()), 0, 7),
            2 => encode(
                neighbour_msg(
                    "203.0.113.21".parse().unwrap(),
                    [2, 0, 0, 0, 0, 2],
                    nud::REACHABLE,
                ),
                0,
                7,
            ),
            _ => error_with_text(libc::EINVAL, b"bad\0"),
        };
        d.extend_from_slice(&m);
    }
    d
}

fn mutate(rng: &mut Rng, d: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        if d.is_empty() {
            d.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(d.len());
        match rng.below(6) {
            0 => d[at] ^= 1 << rng.below(8),
            1 => d.truncate(at),
            2 => d[at] = [0, 0xff, 3, 4, 0x7f, 0x80][rng.below(6)],
            3 if at + 2 <= d.len() => {
                // A 16-bit length field (nlattr) at an extreme.
                let v = [0u16, 3, 4, 5, 0xffff][rng.below(5)];
                d[at..at + 2].copy_from_slice(&v.to_ne_bytes());
            }
            4 if at + 4 <= d.len() => {
                let v = [0u32, 15, 16, 17, u32::MAX][rng.below(5)];
                d[at..at + 4].copy_from_slice(&v.to_ne_bytes());
            }
            _ => d.insert(at, rng.next() as u8),
        }
    }
}

fn within(outer: &[u8], inner: &[u8]) -> bool {
    let o = outer.as_ptr() as usize;
    let i = inner.as_ptr() as usize;
    inner.is_empty() || (i >= o && i + inner.len() <= o + outer.len())
}

/// Everything a received datagram goes through.
fn parse_all(d: &[u8]) {
    // The crate alone, on the raw bytes (what a caller without our framing
    // would do): an error at worst.
    let _ = NetlinkMessage::<RouteNetlinkMessage>::deserialize(d);
    let Ok(msgs) = split_messages(d) else { return };
    let mut total = 0;
    for m in &msgs {
        assert!(within(d, m.whole), "a message outside the datagram");
        assert!(within(m.whole, m.data()), "a body outside its message");
        total += m.whole.len();
        let _ = neighbour_event(m);
        let _ = is_path_relevant(m);
        match m.decode() {
            Ok(Payload::Error(e)) => {
                let _ = kernel_error(&e, m.flags);
            }
            Ok(Payload::InnerMessage(RouteNetlinkMessage::NewLink(l))) => {
                let _ = interface_from(&l);
            }
            Ok(Payload::InnerMessage(RouteNetlinkMessage::NewRoute(r))) => {
                let _ = route_from(&r);
            }
            Ok(Payload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n))) => {
                let _ = neighbour_from(&n);
            }
            _ => {}
        }
    }
    assert!(total <= d.len(), "messages longer than the datagram");
}

#[test]
fn parsers_survive_random_and_mutated_datagrams() {
    let seed = env_u64("VC5_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1
    });
    let iters = env_u64("VC5_FUZZ_ITERS").unwrap_or(100_000);
    // Shown with the test's output if it fails: replay with VC5_FUZZ_SEED.
    eprintln!("netlink fuzz: VC5_FUZZ_SEED={seed} VC5_FUZZ_ITERS={iters}");
    let mut rng = Rng(seed);
    for _ in 0..iters {
        let d = match rng.below(8) {
            0 => (0..rng.below(96)).map(|_| rng.next() as u8).collect(),
            _ => {
                let mut d = valid(&mut rng);
                mutate(&mut rng, &mut d);
                d
            }
        };
        parse_all(&d);
    }
}

#[test]
fn valid_messages_parse_back() {
    let mut rng = Rng(42);
    for _ in 0..1000 {
        let d = valid(&mut rng);
        let msgs = split_messages(&d).expect("valid datagram");
        for m in msgs {
            match m.decode().expect("decodes") {
                Payload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    let l = interface_from(&l);
                    assert_eq!(
                        (l.name.as_str(), l.mac, l.carrier),
                        ("eth0", [2, 0, 0, 0, 0, 1], true)
                    );
                }
                Payload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => {
                    let r = route_from(&r);
                    assert_eq!(
                        (r.oif, r.gateway),
                        (2, Some("2001:db8::1".parse().unwrap()))
                    );
                }
                Payload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
                    let n = neighbour_from(&n).expect("neighbour");
                    assert_eq!(n.mac, Some([2, 0, 0, 0, 0, 2]));
                    assert_eq!(n.addr, "203.0.113.21".parse::<IpAddr>().unwrap());
                    assert_eq!(
                        neighbour_event(&m),
                        Some(NeighbourEvent::Changed(n.clone()))
                    );
                }
                Payload::Error(e) => assert_eq!(
                    kernel_error(&e, m.flags),
                    Some((libc::EINVAL, Some("bad".into())))
                ),
                other => panic!("{other:?}"),
            }
        }
    }
}

/// Found by the fuzz test of the hand-written parser: an error message whose
/// errno field is i32::MIN made it overflow negating it (a panic in a debug
/// build). The crate reads the code; negating it is still ours.
#[test]
fn an_errno_of_i32_min_is_unreadable_not_a_panic() {
    let mut d = 20u32.to_ne_bytes().to_vec();
    d.extend_from_slice(&sys::NLMSG_ERROR.to_ne_bytes());
    d.extend_from_slice(&[0; 10]);
    d.extend_from_slice(&i32::MIN.to_ne_bytes());
    let msgs = split_messages(&d).unwrap();
    let Ok(Payload::Error(e)) = msgs[0].decode() else {
        panic!("not an error message")
    };
    assert_eq!(kernel_error(&e, msgs[0].flags), None);
}
