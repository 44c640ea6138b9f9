//! Layer-3 DSR through `BPF_PROG_TEST_RUN` against the real program:
//! IPIP, GRE, FOU and GUE with every mix of VIP and real family, the MTU
//! answers, and what a tunnel refuses.
//!
//! Each case is {description, setup, input frame, expected verdict,
//! expected output frame}. The expected frames are built here from the
//! RFCs' layouts, with every checksum computed over the whole packet,
//! independently of the program's shortcut (which never reads the payload),
//! and compared byte for byte.

use std::net::IpAddr;
use vc5_testkit::xdp::*;
use vc5_xdp::dataplane::{TCP, UDP};
use vc5_xdp::hash::flow_hash;
use vc5_xdp::maps::{Reason, TOO_BIG_QUOTE, addr16};
use vc5_xdp::{DataPlane, Forward, L2, MapSizes, RealMode, RealSpec, ServiceSpec};

const XDP_DROP: u32 = 1;
const XDP_TX: u32 = 3;

/// The next hop towards the reals (a gateway) and this host's MAC there.
const NEXT_HOP: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x01];
const OUR_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x01];
const SRC4: &str = "10.0.0.1";
const SRC6: &str = "2001:db8:ff::1";
const REAL4: &str = "203.0.113.11";
const REAL6: &str = "2001:db8:99::11";
const CLIENT4: &str = "198.51.100.7";
const CLIENT6: &str = "2001:db8:1::7";
const FOU_PORT: u16 = 5555;
const GUE_PORT: u16 = 6666;
const METHODS: [Forward; 4] = [
    Forward::Ipip,
    Forward::Gre,
    Forward::Fou { port: FOU_PORT },
    Forward::Gue { port: GUE_PORT },
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One service per (method, VIP family, real family), each with one real
/// so that every flow's real is known.
#[derive(Debug, Clone, Copy)]
struct Case {
    method: Forward,
    vip: IpAddr,
    real: IpAddr,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (m, method) in METHODS.into_iter().enumerate() {
        for vip6 in [false, true] {
            for real6 in [false, true] {
                let i = m * 4 + usize::from(vip6) * 2 + usize::from(real6) + 1;
                let vip = if vip6 {
                    ip(&format!("2001:db8:80::{i:x}"))
                } else {
                    ip(&format!("192.0.2.{i}"))
                };
                let real = ip(if real6 { REAL6 } else { REAL4 });
                out.push(Case { method, vip, real });
            }
        }
    }
    out
}

fn real(addr: IpAddr, src: Option<IpAddr>, mtu: u16) -> RealSpec {
    RealSpec {
        addr,
        weight: 1,
        mode: RealMode::Serve,
        l2: Some(L2 {
            mac: NEXT_HOP,
            src_mac: OUR_MAC,
            ifindex: 0,
            src,
            mtu,
            vlan: None,
        }),
    }
}

fn src_for(real: IpAddr) -> IpAddr {
    ip(if real.is_ipv6() { SRC6 } else { SRC4 })
}

fn service(vip: IpAddr, port: u16, proto: u8, forward: Forward, r: RealSpec) -> ServiceSpec {
    ServiceSpec {
        vip,
        port,
        proto,
        forward,
        reals: vec![r],
    }
}

struct Env {
    dp: DataPlane,
    _fs: TempBpffs,
}

impl Env {
    fn new(specs: &[ServiceSpec]) -> Env {
        require_root();
        let fs = TempBpffs::new().expect("mount a private bpffs");
        let mut dp = DataPlane::open_object(
            &fs.path().join("vc5"),
            MapSizes::small(),
            vc5_xdp::dataplane::VC5_OBJ,
        )
        .expect("load vc5");
        dp.program(specs).expect("program");
        Env { dp, _fs: fs }
    }

    fn run(&mut self, input: &[u8]) -> (u32, Vec<u8>) {
        vc5_testkit::xdp::test_run(&mut self.dp, input)
    }

    fn count(&self, reason: Reason) -> u64 {
        self.dp.stats().unwrap().global[&reason].packets
    }
}

// ---- checksums, computed the long way ----

use vc5_testkit::xdp::{ones_fold as fold, ones_sum as sum};

/// The pseudo-header's sum for an upper-layer packet of `len` bytes.
fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let addrs = |a: IpAddr| match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    sum(&addrs(src)) + sum(&addrs(dst)) + u32::from(proto) + len as u32
}

fn ip_header_len(ip: &[u8]) -> usize {
    if ip[0] >> 4 == 4 {
        usize::from(ip[0] & 0xf) * 4
    } else {
        40
    }
}

fn addrs_of(ip: &[u8]) -> (IpAddr, IpAddr) {
    if ip[0] >> 4 == 4 {
        let a = |o: usize| IpAddr::from(<[u8; 4]>::try_from(&ip[o..o + 4]).unwrap());
        (a(12), a(16))
    } else {
        let a = |o: usize| IpAddr::from(<[u8; 16]>::try_from(&ip[o..o + 16]).unwrap());
        (a(8), a(24))
    }
}

/// Fills in the TCP, UDP, ICMP or ICMPv6 checksum of an IP packet without
/// extension headers (the test kit's frames leave them 0).
fn with_l4_checksum(mut ip: Vec<u8>) -> Vec<u8> {
    let hl = ip_header_len(&ip);
    let proto = if ip[0] >> 4 == 4 { ip[9] } else { ip[6] };
    let (src, dst) = addrs_of(&ip);
    let at = hl
        + match proto {
            6 => 16,
            17 => 6,
            1 | 58 => 2,
            _ => panic!("protocol {proto}"),
        };
    ip[at..at + 2].fill(0);
    let l4 = &ip[hl..];
    let base = if proto == 1 {
        0
    } else {
        pseudo(src, dst, proto, l4.len())
    };
    let c = !fold(base + sum(l4));
    let c = if proto == 17 && c == 0 { 0xffff } else { c };
    ip[at..at + 2].copy_from_slice(&c.to_be_bytes());
    ip
}

/// Sets the IPv4 TOS byte or the IPv6 traffic class (and the IPv4 header
/// checksum).
fn with_tos(mut ip: Vec<u8>, tos: u8) -> Vec<u8> {
    if ip[0] >> 4 == 4 {
        ip[1] = tos;
        ip[10..12].fill(0);
        let c = !fold(sum(&ip[..ip_header_len(&ip)]));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        ip[0] = 0x60 | tos >> 4;
        ip[1] = (ip[1] & 0x0f) | tos << 4;
    }
    ip
}

fn ether_of(ip: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let ty = if ip[0] >> 4 == 4 { 0x0800 } else { 0x86dd };
    ether(dst, src, None, ty, ip)
}

// ---- the expected encapsulation, from the RFCs ----

fn hash_of(f: &Frame) -> u32 {
    flow_hash(
        &addr16(f.src),
        &addr16(f.dst),
        f.sport.to_be(),
        f.dport.to_be(),
        f.proto,
    )
}

fn is_v6(a: IpAddr) -> bool {
    a.is_ipv6()
}

/// What the program must send for `inner` (an IP packet) to `real` by
/// `method`, the flow hash `h` giving the entropy. `zero_udp6` expects the
/// RFC 6935 zero checksum (where the program cannot derive it).
fn encapsulated(method: Forward, real: IpAddr, inner: &[u8], h: u32, zero_udp6: bool) -> Vec<u8> {
    let inner6 = inner[0] >> 4 == 6;
    let src = src_for(real);
    let tos = if inner6 {
        (inner[0] << 4) | (inner[1] >> 4)
    } else {
        inner[1]
    };
    let ip_in_ip = if inner6 { 41 } else { 4 };
    let mut tunnel = Vec::new();
    let proto = match method {
        Forward::Ipip => ip_in_ip,
        Forward::Gre => {
            tunnel.extend_from_slice(&[0, 0]);
            tunnel.extend_from_slice(&(if inner6 { 0x86ddu16 } else { 0x0800 }).to_be_bytes());
            47
        }
        Forward::Fou { port } | Forward::Gue { port } => {
            let gue = matches!(method, Forward::Gue { .. });
            let len = 8 + if gue { 4 } else { 0 } + inner.len();
            let sport = 0xc000 | ((h ^ (h >> 16)) & 0x3fff) as u16;
            tunnel.extend_from_slice(&sport.to_be_bytes());
            tunnel.extend_from_slice(&port.to_be_bytes());
            tunnel.extend_from_slice(&(len as u16).to_be_bytes());
            tunnel.extend_from_slice(&[0, 0]);
            if gue {
                tunnel.extend_from_slice(&[0, ip_in_ip, 0, 0]);
            }
            if is_v6(real) && !zero_udp6 {
                let all: Vec<u8> = tunnel.iter().chain(inner).copied().collect();
                let c = !fold(pseudo(src, real, 17, len) + sum(&all));
                let c = if c == 0 { 0xffff } else { c };
                tunnel[6..8].copy_from_slice(&c.to_be_bytes());
            }
            17
        }
        Forward::L2 => unreachable!(),
    };
    let payload: Vec<u8> = tunnel.iter().chain(inner).copied().collect();
    let mut outer = if is_v6(real) {
        let fl = h & 0xfffff;
        let mut o = vec![
            0x60 | tos >> 4,
            (tos << 4) | (fl >> 16) as u8,
            (fl >> 8) as u8,
            fl as u8,
        ];
        o.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        o.extend_from_slice(&[proto, 64]);
        o.extend_from_slice(&addr16(src));
        o.extend_from_slice(&addr16(real));
        o
    } else {
        let mut o = vec![0x45, tos];
        o.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        o.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        o.extend_from_slice(&addr16(src)[12..]);
        o.extend_from_slice(&addr16(real)[12..]);
        let c = !fold(sum(&o));
        o[10..12].copy_from_slice(&c.to_be_bytes());
        o
    };
    outer.extend_from_slice(&payload);
    ether_of(&outer, NEXT_HOP, OUR_MAC)
}

fn client_of(vip: IpAddr) -> IpAddr {
    ip(if vip.is_ipv6() { CLIENT6 } else { CLIENT4 })
}

fn all_services(mtu: u16) -> Vec<ServiceSpec> {
    cases()
        .into_iter()
        .flat_map(|c| {
            let r = real(c.real, Some(src_for(c.real)), mtu);
            [
                service(c.vip, 80, TCP, c.method, r.clone()),
                service(c.vip, 53, UDP, c.method, r),
            ]
        })
        .collect()
}

/// Every method, every mix of VIP and real family, TCP and UDP with a
/// payload and a DSCP/ECN mark: the client's packet arrives unchanged
/// inside the tunnel, the outer headers as the RFCs lay them out, every
/// checksum right.
#[test]
fn every_method_and_family_mix_carries_the_packet_unchanged() {
    let mut env = Env::new(&all_services(0));
    for c in cases() {
        let client = client_of(c.vip);
        for (proto, port) in [(TCP, 80), (UDP, 53)] {
            let mut f = if proto == TCP {
                Frame::tcp(client, 40000, c.vip, port, TCP_ACK)
            } else {
                Frame::udp(client, 40000, c.vip, port)
            };
            f.payload = (0..200u8).collect();
            let inner = with_tos(with_l4_checksum(f.ip()), 0xb9);
            let input = ether_of(&inner, LB_MAC, CLIENT_MAC);
            let (verdict, out) = env.run(&input);
            let want = encapsulated(c.method, c.real, &inner, hash_of(&f), false);
            assert_eq!(verdict, XDP_TX, "{c:?} proto {proto}");
            assert_eq!(out, want, "{c:?} proto {proto}");
        }
    }
    assert_eq!(env.count(Reason::Tx), 32);
}

/// A frame's Ethernet padding stays out of the tunnel, and a tagged
/// frame's tag goes (the real's way is untagged here).
#[test]
fn padding_and_the_ingress_tag_are_not_carried() {
    let c = cases()[0]; // IPIP, IPv4 in IPv4
    let mut env = Env::new(&all_services(0));
    let f = Frame::tcp(client_of(c.vip), 40001, c.vip, 80, TCP_ACK);
    let inner = with_l4_checksum(f.ip());
    assert_eq!(inner.len(), 40);
    let mut padded = ether_of(&inner, LB_MAC, CLIENT_MAC);
    padded.resize(60, 0);
    let want = encapsulated(c.method, c.real, &inner, hash_of(&f), false);
    assert_eq!(env.run(&padded), (XDP_TX, want.clone()), "padded");
    let tagged = ether(LB_MAC, CLIENT_MAC, Some(10), 0x0800, &inner);
    assert_eq!(env.run(&tagged), (XDP_TX, want), "tagged");
}

/// Where the outer UDP checksum over IPv6 cannot be derived from the inner
/// one, it is 0 (RFC 6935): an IPv4 UDP datagram without a checksum, an
/// IPv6 packet with an extension header.
#[test]
fn underivable_outer_checksums_over_ipv6_are_zero() {
    let fou = |vip6: bool| {
        *cases()
            .iter()
            .find(|c| {
                matches!(c.method, Forward::Fou { .. })
                    && c.vip.is_ipv6() == vip6
                    && c.real.is_ipv6()
            })
            .unwrap()
    };
    let mut env = Env::new(&all_services(0));
    // No UDP checksum (0 is "none" over IPv4).
    let c = fou(false);
    let mut f = Frame::udp(client_of(c.vip), 40002, c.vip, 53);
    f.payload = b"no checksum".to_vec();
    let inner = f.ip();
    let (verdict, out) = env.run(&ether_of(&inner, LB_MAC, CLIENT_MAC));
    assert_eq!(verdict, XDP_TX);
    assert_eq!(
        out,
        encapsulated(c.method, c.real, &inner, hash_of(&f), true)
    );
    // A destination-options header.
    let c = fou(true);
    let mut f = Frame::tcp(client_of(c.vip), 40003, c.vip, 80, TCP_ACK);
    f.v6_ext = vec![(60, vec![0, 0, 1, 4, 0, 0, 0, 0])];
    let inner = f.ip();
    let (verdict, out) = env.run(&ether_of(&inner, LB_MAC, CLIENT_MAC));
    assert_eq!(verdict, XDP_TX);
    assert_eq!(
        out,
        encapsulated(c.method, c.real, &inner, hash_of(&f), true)
    );
}

/// An ICMP error quoting a VIP flow follows the flow into the tunnel, its
/// own checksum kept and the outer one right (ICMPv4's covers no
/// pseudo-header, ICMPv6's does).
#[test]
fn icmp_errors_follow_their_flow_into_the_tunnel() {
    let mut env = Env::new(&all_services(0));
    for c in cases()
        .into_iter()
        .filter(|c| matches!(c.method, Forward::Gue { .. }))
    {
        let client = client_of(c.vip);
        let router = ip(if c.vip.is_ipv6() {
            "2001:db8:2::1"
        } else {
            "198.51.100.1"
        });
        // What the real sent (VIP to client), as the router quotes it.
        let sent = Frame::tcp(c.vip, 80, client, 40004, TCP_ACK).ip();
        let frame = icmp_too_big(router, c.vip, &sent);
        let inner = with_l4_checksum(frame[14..].to_vec());
        let (verdict, out) = env.run(&ether_of(&inner, LB_MAC, CLIENT_MAC));
        assert_eq!(verdict, XDP_TX, "{c:?}");
        // The entropy comes from the quoted flow's hash.
        let quoted = Frame::tcp(client, 40004, c.vip, 80, TCP_ACK);
        assert_eq!(
            out,
            encapsulated(c.method, c.real, &inner, hash_of(&quoted), false),
            "{c:?}"
        );
    }
    assert_eq!(env.count(Reason::IcmpTx), 4);
}

/// The ICMP answer to a packet that does not fit, from the VIP back to
/// the client, as RFC 792 / RFC 4443 lay it out.
fn too_big_answer(inner: &[u8], mtu: u16) -> Vec<u8> {
    let (client, vip) = addrs_of(inner);
    let quote = &inner[..inner.len().min(TOO_BIG_QUOTE) & !3];
    let v6 = inner[0] >> 4 == 6;
    let mut icmp = if v6 {
        let mut m = vec![2, 0, 0, 0];
        m.extend_from_slice(&u32::from(mtu).to_be_bytes());
        m
    } else {
        let mut m = vec![3, 4, 0, 0, 0, 0];
        m.extend_from_slice(&mtu.to_be_bytes());
        m
    };
    icmp.extend_from_slice(quote);
    let answer = if v6 {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        h.extend_from_slice(&[58, 64]);
        h.extend_from_slice(&addr16(vip));
        h.extend_from_slice(&addr16(client));
        h.extend_from_slice(&icmp);
        h
    } else {
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
        h.extend_from_slice(&addr16(vip)[12..]);
        h.extend_from_slice(&addr16(client)[12..]);
        let c = !fold(sum(&h));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(&icmp);
        h
    };
    // The frame goes back whence it came: the MACs swapped.
    ether_of(&with_l4_checksum(answer), CLIENT_MAC, LB_MAC)
}

/// A packet whose encapsulation would exceed the egress MTU is answered
/// with ICMP "fragmentation needed" / ICMPv6 "packet too big" carrying what
/// fits; one that fits exactly is carried. IPv4 without DF is dropped and
/// counted, never answered.
#[test]
fn packets_too_big_for_the_tunnel_are_answered_with_the_mtu_that_fits() {
    const MTU: u16 = 1300;
    let mut env = Env::new(&all_services(MTU));
    for c in cases() {
        let over = c.method.overhead(c.real.is_ipv6());
        let fits = usize::from(MTU) - over;
        let client = client_of(c.vip);
        let head = if c.vip.is_ipv6() { 40 + 20 } else { 20 + 20 };
        for len in [fits, fits + 1] {
            let mut f = Frame::tcp(client, 40005, c.vip, 80, TCP_ACK);
            f.payload = vec![0x5a; len - head];
            let inner = with_l4_checksum(f.ip());
            assert_eq!(inner.len(), len);
            let (verdict, out) = env.run(&ether_of(&inner, LB_MAC, CLIENT_MAC));
            assert_eq!(verdict, XDP_TX, "{c:?} {len}");
            let want = if len == fits {
                encapsulated(c.method, c.real, &inner, hash_of(&f), false)
            } else {
                too_big_answer(&inner, fits as u16)
            };
            assert_eq!(out, want, "{c:?} {len}");
        }
    }
    assert_eq!(env.count(Reason::TooBigTx), 16);
    // Without DF: dropped, counted, no answer.
    let c = cases()[0];
    let mut f = Frame::tcp(client_of(c.vip), 40006, c.vip, 80, TCP_ACK);
    f.frag = 0;
    f.payload = vec![0; usize::from(MTU)];
    let (verdict, _) = env.run(&ether_of(&with_l4_checksum(f.ip()), LB_MAC, CLIENT_MAC));
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(env.count(Reason::DropTooBig), 1);
}

/// A tunnel real without an outer source of its family is not usable (its
/// service drops, as one without a MAC does); a frame shorter than its IP
/// header says is malformed.
#[test]
fn what_a_tunnel_refuses() {
    let vip = ip("192.0.2.100");
    let mut specs = vec![
        service(vip, 80, TCP, Forward::Ipip, real(ip(REAL4), None, 0)),
        service(
            vip,
            81,
            TCP,
            Forward::Gre,
            real(ip(REAL6), Some(ip(SRC4)), 0),
        ),
    ];
    specs.extend(all_services(0));
    let mut env = Env::new(&specs);
    for port in [80, 81] {
        let f = Frame::tcp(ip(CLIENT4), 40007, vip, port, TCP_ACK);
        let (verdict, _) = env.run(&f.build());
        assert_eq!(verdict, XDP_DROP, "port {port}");
    }
    assert_eq!(env.count(Reason::DropNoBackend), 2);

    let c = cases()[0];
    let mut f = Frame::tcp(client_of(c.vip), 40008, c.vip, 80, TCP_ACK);
    f.payload = vec![1; 100];
    let mut frame = f.build();
    frame.truncate(frame.len() - 10);
    assert_eq!(env.run(&frame).0, XDP_DROP);
    assert_eq!(env.count(Reason::DropMalformed), 1);
}
