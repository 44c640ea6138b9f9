//! Health probes through the VIP (`bpf/probe.h`) through
//! `BPF_PROG_TEST_RUN` against the real programs: a probe from vc5d's probe
//! namespace to a NAT address leaves as a client's packet to the pair's VIP
//! by the real's way (MACs, VLAN, tunnel), whatever the real's health; the
//! real's answer goes back into the namespace with the NAT address as its
//! source; anything else is left alone or dropped, and counted.
//!
//! Each case is {description, setup, input frame, expected verdict,
//! expected output frame}; expected frames are built here with every
//! checksum computed over the whole packet, and compared byte for byte.

use std::net::IpAddr;
use vc5_testkit::xdp::{ones_fold, ones_sum, *};
use vc5_xdp::dataplane::{
    PROBE_NS4, PROBE_NS6, PROBE_PROGRAM, ProbeConfig, ProbeSpec, TCP, UDP, nat_addr,
};
use vc5_xdp::maps::{PROBE_NO_WAY, PROBE_NOT_PROBE, PROBE_REPLY, PROBE_SENT};
use vc5_xdp::{DataPlane, Forward, L2, MapSizes, RealMode, RealSpec, ServiceSpec};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const REAL_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x11];
const OUR_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x01];
const NS_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x01];
const HOST_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x02];
const HOST_IFINDEX: u32 = 77;
const TRUNK: u32 = 5;
const SRC4: &str = "10.0.0.1";
const SRC6: &str = "2001:db8::1";
const VIP4: &str = "192.0.2.10";
const VIP6: &str = "2001:db8:80::10";
const REAL4: &str = "10.0.0.11";
const REAL6: &str = "2001:db8::11";
const INDEX: u16 = 5;
const LPORT: u16 = 40000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn l2(vlan: Option<u16>, src: Option<IpAddr>) -> L2 {
    L2 {
        mac: REAL_MAC,
        src_mac: OUR_MAC,
        ifindex: 0,
        src,
        mtu: 0,
        vlan,
    }
}

struct Env {
    dp: DataPlane,
    _fs: TempBpffs,
}

impl Env {
    /// One service (vip:80/tcp) with `real` in `mode`, and one probe pair
    /// (INDEX) to it by `forward` over `way`.
    fn new(vip: IpAddr, real: IpAddr, mode: RealMode, forward: Forward, way: L2) -> Env {
        require_root();
        let fs = TempBpffs::new().expect("mount a private bpffs");
        let mut dp = DataPlane::open_object(
            &fs.path().join("vc5"),
            MapSizes::small(),
            vc5_xdp::dataplane::VC5_OBJ,
        )
        .expect("load vc5");
        dp.program(&[ServiceSpec {
            vip,
            port: 80,
            proto: TCP,
            forward,
            reals: vec![RealSpec {
                addr: real,
                weight: 1,
                mode,
                l2: Some(way),
            }],
        }])
        .expect("program");
        dp.set_probe_config(Some(&ProbeConfig {
            host_ifindex: HOST_IFINDEX,
            host_mac: HOST_MAC,
            ns_mac: NS_MAC,
            trunk: TRUNK,
            src4: Some(SRC4.parse().unwrap()),
            src6: Some(SRC6.parse().unwrap()),
        }))
        .unwrap();
        dp.set_probes(&[ProbeSpec {
            index: INDEX,
            vip,
            port: 80,
            real,
            forward,
            l2: Some(way),
        }])
        .unwrap();
        Env { dp, _fs: fs }
    }

    /// The usual case: an IPv4 VIP, its real in service on the LAN.
    fn plain() -> Env {
        Env::new(
            ip(VIP4),
            ip(REAL4),
            RealMode::Serve,
            Forward::L2,
            l2(None, None),
        )
    }

    fn probe(&mut self, input: &[u8]) -> (u32, Vec<u8>) {
        test_run_named(&mut self.dp, PROBE_PROGRAM, input)
    }

    fn main(&mut self, input: &[u8]) -> (u32, Vec<u8>) {
        test_run(&mut self.dp, input)
    }

    fn count(&self, reason: u32) -> u64 {
        self.dp.probe_stats().unwrap()[reason as usize].packets
    }
}

// ---- packets, with checksums computed the long way ----

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The IP header's length and the L4 protocol of an IP packet.
fn l4_at(p: &[u8]) -> (usize, u8) {
    if p[0] >> 4 == 4 {
        (usize::from(p[0] & 15) * 4, p[9])
    } else {
        (40, p[6])
    }
}

fn src_dst(p: &[u8]) -> (IpAddr, IpAddr) {
    if p[0] >> 4 == 4 {
        let a: [u8; 4] = p[12..16].try_into().unwrap();
        let b: [u8; 4] = p[16..20].try_into().unwrap();
        (a.into(), b.into())
    } else {
        let a: [u8; 16] = p[8..24].try_into().unwrap();
        let b: [u8; 16] = p[24..40].try_into().unwrap();
        (a.into(), b.into())
    }
}

fn l4_sum(p: &[u8]) -> u32 {
    let (hl, proto) = l4_at(p);
    let (s, d) = src_dst(p);
    let seg = &p[hl..];
    ones_sum(&addr_bytes(s))
        + ones_sum(&addr_bytes(d))
        + u32::from(proto)
        + seg.len() as u32
        + ones_sum(seg)
}

/// Fills in the TCP/UDP checksum of an IP packet (whose field is 0).
fn with_l4_csum(mut p: Vec<u8>) -> Vec<u8> {
    let (hl, proto) = l4_at(&p);
    let at = hl + if proto == TCP { 16 } else { 6 };
    let mut c = !ones_fold(l4_sum(&p));
    if proto == UDP && c == 0 {
        c = 0xffff;
    }
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    p
}

/// The IP packet's checksums hold (IPv4 header, and TCP/UDP with the
/// pseudo-header); an IPv4 UDP checksum of 0 is "none".
fn checksums_hold(p: &[u8]) -> bool {
    let (hl, proto) = l4_at(p);
    if p[0] >> 4 == 4 && ones_fold(ones_sum(&p[..hl])) != 0xffff {
        return false;
    }
    if proto == UDP && p[0] >> 4 == 4 && p[hl + 6..hl + 8] == [0, 0] {
        return true;
    }
    ones_fold(l4_sum(p)) == 0xffff
}

fn ethertype(a: IpAddr) -> u16 {
    if a.is_ipv4() { 0x0800 } else { 0x86dd }
}

fn ns_addr(v6: bool) -> IpAddr {
    if v6 {
        PROBE_NS6.into()
    } else {
        PROBE_NS4.into()
    }
}

fn src_addr(v6: bool) -> IpAddr {
    ip(if v6 { SRC6 } else { SRC4 })
}

/// A TCP packet with a valid checksum.
fn tcp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, flags: u8) -> Vec<u8> {
    with_l4_csum(Frame::tcp(src, sport, dst, dport, flags).ip())
}

/// The namespace's SYN to the pair's NAT address, as the veth hands it over.
fn probe_syn(v6: bool) -> Vec<u8> {
    let p = tcp(ns_addr(v6), LPORT, nat_addr(INDEX, v6), 80, TCP_SYN);
    ether(HOST_MAC, NS_MAC, None, ethertype(ns_addr(v6)), &p)
}

/// The real's answer to it, from the VIP, as it reaches this host.
fn reply(vip: IpAddr, vlan: Option<u16>, lport: u16) -> Vec<u8> {
    let p = tcp(vip, 80, src_addr(vip.is_ipv6()), lport, TCP_SYN | TCP_ACK);
    ether(OUR_MAC, REAL_MAC, vlan, ethertype(vip), &p)
}

/// The reply as the namespace must see it.
fn reply_in_ns(v6: bool) -> Vec<u8> {
    let p = tcp(
        nat_addr(INDEX, v6),
        80,
        ns_addr(v6),
        LPORT,
        TCP_SYN | TCP_ACK,
    );
    ether(NS_MAC, HOST_MAC, None, ethertype(ns_addr(v6)), &p)
}

/// Layer 2, both families: the probe leaves as the client's SYN from this
/// host to the VIP, to the real's MAC from ours; the reply comes back into
/// the namespace from the NAT address, and is counted.
#[test]
fn a_probe_leaves_as_a_client_packet_and_its_reply_comes_back() {
    for (vip, real) in [(VIP4, REAL4), (VIP6, REAL6)] {
        let (vip, real) = (ip(vip), ip(real));
        let v6 = vip.is_ipv6();
        let mut env = Env::new(vip, real, RealMode::Serve, Forward::L2, l2(None, None));

        let (verdict, out) = env.probe(&probe_syn(v6));
        assert_eq!(verdict, XDP_REDIRECT, "{vip}: the probe is redirected");
        let want = ether(
            REAL_MAC,
            OUR_MAC,
            None,
            ethertype(vip),
            &tcp(src_addr(v6), LPORT, vip, 80, TCP_SYN),
        );
        assert_eq!(out, want, "{vip}: the probe as a client's SYN to the VIP");
        assert!(checksums_hold(&out[14..]));
        assert_eq!(env.count(PROBE_SENT), 1);

        let (verdict, out) = env.main(&reply(vip, None, LPORT));
        assert_eq!(
            verdict, XDP_REDIRECT,
            "{vip}: the reply goes to the namespace"
        );
        assert_eq!(
            out,
            reply_in_ns(v6),
            "{vip}: from the NAT address to the namespace"
        );
        assert!(checksums_hold(&out[14..]));
        assert_eq!(env.count(PROBE_REPLY), 1);

        // Another local port is no probe's: this host's own traffic.
        let other = reply(vip, None, LPORT + 1);
        assert_eq!(
            env.main(&other),
            (XDP_PASS, other.clone()),
            "{vip}: not a probe's"
        );
        assert_eq!(env.count(PROBE_REPLY), 1);
    }
}

/// A tagged reply loses its tag on its way into the namespace.
#[test]
fn a_tagged_reply_enters_the_namespace_untagged() {
    let mut env = Env::plain();
    assert_eq!(env.probe(&probe_syn(false)).0, XDP_REDIRECT);
    let (verdict, out) = env.main(&reply(ip(VIP4), Some(0x2000 | 10), LPORT));
    assert_eq!(verdict, XDP_REDIRECT);
    assert_eq!(out, reply_in_ns(false));
}

/// A real out of service (its checks failing) still gets its probes, by
/// the way it would have: that is how its recovery is seen. Clients' new
/// packets to it are dropped meanwhile.
#[test]
fn a_failed_real_still_gets_its_probes() {
    let mut env = Env::new(
        ip(VIP4),
        ip(REAL4),
        RealMode::Down,
        Forward::L2,
        l2(None, None),
    );
    let client = Frame::tcp(ip("198.51.100.7"), 1234, ip(VIP4), 80, TCP_SYN).build();
    assert_eq!(env.main(&client).0, XDP_DROP, "no real for clients");
    let (verdict, out) = env.probe(&probe_syn(false));
    assert_eq!(verdict, XDP_REDIRECT);
    assert_eq!(&out[..6], &REAL_MAC, "to the failed real all the same");
}

/// A real on a VLAN: the probe carries the VLAN's tag, as clients' packets
/// to that real do.
#[test]
fn a_probe_carries_the_reals_vlan_tag() {
    let mut env = Env::new(
        ip(VIP4),
        ip(REAL4),
        RealMode::Serve,
        Forward::L2,
        l2(Some(20), None),
    );
    let (verdict, out) = env.probe(&probe_syn(false));
    assert_eq!(verdict, XDP_REDIRECT);
    let want = ether(
        REAL_MAC,
        OUR_MAC,
        Some(20),
        0x0800,
        &tcp(ip(SRC4), LPORT, ip(VIP4), 80, TCP_SYN),
    );
    assert_eq!(out, want);
}

/// Through a tunnel the probe is the client's packet inside the real's
/// outer header, as clients' packets are (tunnels.rs checks those headers
/// byte for byte; here the outer protocol and addresses, and the inner
/// packet whole).
#[test]
fn a_probe_goes_through_the_reals_tunnel() {
    let real = ip("203.0.113.11");
    let outer_src = ip(SRC4);
    for (forward, proto, inner_at) in [
        (Forward::Ipip, 4u8, 14 + 20),
        (Forward::Gre, 47, 14 + 20 + 4),
        (Forward::Fou { port: 5555 }, UDP, 14 + 20 + 8),
        (Forward::Gue { port: 6080 }, UDP, 14 + 20 + 8 + 4),
    ] {
        let mut env = Env::new(
            ip(VIP4),
            real,
            RealMode::Serve,
            forward,
            l2(None, Some(outer_src)),
        );
        let (verdict, out) = env.probe(&probe_syn(false));
        assert_eq!(verdict, XDP_REDIRECT, "{forward:?}");
        assert_eq!(&out[..6], &REAL_MAC);
        let outer = &out[14..];
        assert_eq!(outer[9], proto, "{forward:?}: outer protocol");
        assert_eq!(
            src_dst(outer),
            (outer_src, real),
            "{forward:?}: outer addresses"
        );
        assert_eq!(
            &out[inner_at..],
            &tcp(ip(SRC4), LPORT, ip(VIP4), 80, TCP_SYN)[..],
            "{forward:?}: the client's packet inside"
        );
    }
}

/// UDP (DNS checks): an IPv4 datagram without a checksum keeps none; one
/// with a checksum gets it updated; the reply comes back the same way.
#[test]
fn udp_probes_keep_their_checksums_right() {
    let mut env = Env::plain();
    let nat = nat_addr(INDEX, false);
    let ns = ns_addr(false);
    let mut f = Frame::udp(ns, LPORT, nat, 53);
    f.payload = b"query".to_vec();
    for with_csum in [false, true] {
        let p = if with_csum {
            with_l4_csum(f.ip())
        } else {
            f.ip()
        };
        let (verdict, out) = env.probe(&ether(HOST_MAC, NS_MAC, None, 0x0800, &p));
        assert_eq!(verdict, XDP_REDIRECT);
        let mut g = Frame::udp(ip(SRC4), LPORT, ip(VIP4), 53);
        g.payload = f.payload.clone();
        let want = if with_csum {
            with_l4_csum(g.ip())
        } else {
            g.ip()
        };
        assert_eq!(&out[14..], &want[..], "checksum {with_csum}");
        assert!(checksums_hold(&out[14..]));
    }
    let mut r = Frame::udp(ip(VIP4), 53, ip(SRC4), LPORT);
    r.payload = b"answer".to_vec();
    let (verdict, out) = env.main(&ether(
        OUR_MAC,
        REAL_MAC,
        None,
        0x0800,
        &with_l4_csum(r.ip()),
    ));
    assert_eq!(verdict, XDP_REDIRECT);
    let mut w = Frame::udp(nat, 53, ns, LPORT);
    w.payload = r.payload.clone();
    assert_eq!(&out[14..], &with_l4_csum(w.ip())[..]);
}

/// What the namespace sends that is not a probe with a way is dropped and
/// counted: a NAT address of no pair, a pair without a way (its MAC not
/// known), an address outside the NAT prefix, IPv6 neighbour discovery.
#[test]
fn anything_else_from_the_namespace_is_dropped() {
    let mut env = Env::plain();
    let to = |dst: IpAddr| {
        let p = tcp(ns_addr(dst.is_ipv6()), LPORT, dst, 80, TCP_SYN);
        ether(HOST_MAC, NS_MAC, None, ethertype(dst), &p)
    };
    assert_eq!(env.probe(&to(nat_addr(INDEX + 1, false))).0, XDP_DROP);
    assert_eq!(env.count(PROBE_NO_WAY), 1, "a NAT address of no pair");
    // The pair for an IPv4 VIP has no way for an IPv6 NAT address.
    assert_eq!(env.probe(&to(nat_addr(INDEX, true))).0, XDP_DROP);
    assert_eq!(env.count(PROBE_NO_WAY), 2, "a VIP of the other family");
    assert_eq!(env.probe(&to(ip("198.20.0.5"))).0, XDP_DROP);
    let mut nd = Frame::udp(ns_addr(true), 1, ip("ff02::1"), 1).ip();
    nd[6] = 58; // ICMPv6
    assert_eq!(
        env.probe(&ether(HOST_MAC, NS_MAC, None, 0x86dd, &nd)).0,
        XDP_DROP
    );
    assert_eq!(
        env.count(PROBE_NOT_PROBE),
        2,
        "not to a NAT address; not TCP/UDP"
    );

    // A pair whose real has no MAC yet has no way.
    env.dp
        .set_probes(&[ProbeSpec {
            index: INDEX,
            vip: ip(VIP4),
            port: 80,
            real: ip(REAL4),
            forward: Forward::L2,
            l2: None,
        }])
        .unwrap();
    assert_eq!(env.probe(&probe_syn(false)).0, XDP_DROP);
    assert_eq!(env.count(PROBE_NO_WAY), 3);
    assert_eq!(env.count(PROBE_SENT), 0);
}

/// Without a probe namespace (probe_cfg cleared) the main program looks
/// for no replies: the same packet passes to the kernel.
#[test]
fn without_a_namespace_replies_pass() {
    let mut env = Env::plain();
    assert_eq!(env.probe(&probe_syn(false)).0, XDP_REDIRECT);
    env.dp.set_probe_config(None).unwrap();
    let r = reply(ip(VIP4), None, LPORT);
    assert_eq!(env.main(&r), (XDP_PASS, r.clone()));
    // And set_probes after a restart clears what a previous vc5d left.
    env.dp.set_probes(&[]).unwrap();
    assert_eq!(env.dp.probe(INDEX).unwrap(), Default::default());
}
