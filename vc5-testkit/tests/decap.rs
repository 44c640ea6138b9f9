//! vc5-decap end to end: a client namespace and a real's namespace joined
//! through a router (the real in a second subnet, as in a layer-3 DSR lab).
//! The client sends hand-built IPIP, GRE, FOU and GUE packets, every mix of
//! outer and inner family, from raw sockets; the inner packet is a UDP
//! datagram (or a TCP SYN) from the client's address to a VIP. A socket on
//! the VIP in the real's namespace must get it with the client's address
//! and port, and its answer must reach the client's own socket directly
//! (a tunnelled answer would never reach it: nothing in the client takes a
//! tunnel apart). Malformed packets are counted as dropped and never reach
//! the VIP's socket; a bad outer UDP checksum over IPv6 is refused by the
//! kernel before vc5-decap sees it.
//!
//! Every packet's bytes, checksums included, are built here from the RFCs'
//! layouts (RFC 791, 8200, 768, 793, 2784, 2003/4213, the FOU and GUE
//! drafts).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};
use vc5_testkit::decap::{Decap, DecapOptions, DecapStats, DropReason, Method};
use vc5_testkit::netns::Netns;
use vc5_testkit::require_root;

const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
const REAL4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
const REAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x11);
const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x80, 0, 0, 0, 0, 0x80);
const FOU_PORT: u16 = 5555;
const GUE_PORT: u16 = 6666;
const ECHO_PORT: u16 = 7;
const TCP_PORT: u16 = 80;
const TIMEOUT: Duration = Duration::from_secs(5);

fn client(v6: bool) -> IpAddr {
    if v6 { CLIENT6.into() } else { CLIENT4.into() }
}
fn real(v6: bool) -> IpAddr {
    if v6 { REAL6.into() } else { REAL4.into() }
}
fn vip(v6: bool) -> IpAddr {
    if v6 { VIP6.into() } else { VIP4.into() }
}

// --- packets -------------------------------------------------------------

use vc5_testkit::xdp::{ones_fold, ones_sum as sum};

/// The checksum field for a folded sum: its complement.
fn fold(s: u32) -> u16 {
    !ones_fold(s)
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The TCP/UDP checksum of `seg` (its checksum field zero) with its
/// pseudo-header.
fn l4_check(src: IpAddr, dst: IpAddr, proto: u8, seg: &[u8]) -> u16 {
    let pseudo =
        sum(&addr_bytes(src)) + sum(&addr_bytes(dst)) + u32::from(proto) + seg.len() as u32;
    fold(pseudo + sum(seg))
}

/// An IPv4 (DF, TTL 64, header checksum) or IPv6 (hop limit 64) packet.
fn ip(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = vec![0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            h[6] = 0x40;
            h[8] = 64;
            h[9] = proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = fold(sum(&h));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = vec![0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
            h[6] = proto;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            h
        }
        _ => panic!("mixed families"),
    };
    h.extend_from_slice(payload);
    h
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Csum {
    Zero,
    Good,
    Bad,
}

/// A UDP segment from `src` to `dst` carrying `payload`.
fn udp_seg(src: SocketAddr, dst: SocketAddr, payload: &[u8], csum: Csum) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&src.port().to_be_bytes());
    u.extend_from_slice(&dst.port().to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let c = match l4_check(src.ip(), dst.ip(), 17, &u) {
        0 => 0xffff,
        c => c,
    };
    let c = match csum {
        Csum::Zero => 0,
        Csum::Good => c,
        Csum::Bad => c ^ 0x5a5a,
    };
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// A whole UDP datagram, checksum set.
fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    ip(
        src.ip(),
        dst.ip(),
        17,
        &udp_seg(src, dst, payload, Csum::Good),
    )
}

/// A TCP SYN (no options) with sequence number `seq`.
fn tcp_syn(src: SocketAddr, dst: SocketAddr, seq: u32) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&src.port().to_be_bytes());
    t.extend_from_slice(&dst.port().to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.push(5 << 4);
    t.push(0x02); // SYN
    t.extend_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    let c = l4_check(src.ip(), dst.ip(), 6, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    ip(src.ip(), dst.ip(), 6, &t)
}

fn inner_proto(inner: &[u8]) -> u8 {
    if inner[0] >> 4 == 6 { 41 } else { 4 }
}

/// `payload` in UDP from the client (outer family of `dst`) to `dst`'s
/// `port`: FOU and GUE. The source port is in 49152-65535, as vc5 sends.
fn udp_outer(dst: IpAddr, port: u16, payload: &[u8], csum: Csum) -> Vec<u8> {
    let src = client(dst.is_ipv6());
    let s = SocketAddr::new(src, 0xc000 | 0x1234);
    let d = SocketAddr::new(dst, port);
    ip(src, dst, 17, &udp_seg(s, d, payload, csum))
}

/// `inner` encapsulated by `m` as vc5's data plane does (tunnel.h), from
/// the client to the real of the outer family: UDP checksum 0 over IPv4,
/// set over IPv6.
fn encap(m: Method, outer6: bool, inner: &[u8]) -> Vec<u8> {
    let (src, dst) = (client(outer6), real(outer6));
    let csum = if outer6 { Csum::Good } else { Csum::Zero };
    match m {
        Method::Ipip => ip(src, dst, inner_proto(inner), inner),
        Method::Gre => {
            let et: u16 = if inner[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
            let mut g = vec![0, 0];
            g.extend_from_slice(&et.to_be_bytes());
            g.extend_from_slice(inner);
            ip(src, dst, 47, &g)
        }
        Method::Fou => udp_outer(dst, FOU_PORT, inner, csum),
        Method::Gue => {
            let mut g = vec![0, inner_proto(inner), 0, 0];
            g.extend_from_slice(inner);
            udp_outer(dst, GUE_PORT, &g, csum)
        }
    }
}

// --- sockets -------------------------------------------------------------

fn cvt(rc: libc::c_int, what: &str) -> OwnedFd {
    assert!(rc >= 0, "{what}: {}", std::io::Error::last_os_error());
    // SAFETY: rc is a descriptor just returned by socket(2), owned by no one else.
    unsafe { OwnedFd::from_raw_fd(rc) }
}

/// Raw sockets that send whole IP packets (IPPROTO_RAW: the header is ours).
struct RawTx {
    v4: OwnedFd,
    v6: OwnedFd,
}

impl RawTx {
    fn new(ns: &Netns) -> RawTx {
        ns.enter(|| {
            // SAFETY: socket(2) with constant arguments; checked by cvt.
            let v4 = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            // SAFETY: as above.
            let v6 = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            RawTx {
                v4: cvt(v4, "raw IPv4 socket"),
                v6: cvt(v6, "raw IPv6 socket"),
            }
        })
        .expect("enter the client's namespace")
    }

    /// Sends `pkt` (an IPv4 or IPv6 packet) to its destination address.
    fn send(&self, pkt: &[u8]) {
        let n = if pkt[0] >> 4 == 4 {
            // SAFETY: a zeroed sockaddr_in is valid; family and address set below.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from_ne_bytes(pkt[16..20].try_into().unwrap());
            // SAFETY: pkt and sa are valid for the lengths given.
            unsafe {
                libc::sendto(
                    self.v4.as_raw_fd(),
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        } else {
            // SAFETY: a zeroed sockaddr_in6 is valid; family and address set below.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_addr.s6_addr.copy_from_slice(&pkt[24..40]);
            // SAFETY: pkt and sa are valid for the lengths given.
            unsafe {
                libc::sendto(
                    self.v6.as_raw_fd(),
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        };
        assert_eq!(
            n,
            pkt.len() as isize,
            "send {} bytes: {}",
            pkt.len(),
            std::io::Error::last_os_error()
        );
    }
}

/// A raw TCP socket (receives a copy of every TCP segment that arrives):
/// IPv4 ones with their IP header, IPv6 ones without.
fn raw_tcp_rx(ns: &Netns, v6: bool) -> OwnedFd {
    ns.enter(|| {
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: socket(2) with constant arguments; checked by cvt.
        let fd = unsafe { libc::socket(family, libc::SOCK_RAW, libc::IPPROTO_TCP) };
        cvt(fd, "raw TCP socket")
    })
    .expect("enter the client's namespace")
}

/// One packet from `fd` within `until`, with its source address.
fn recv_raw(fd: &OwnedFd, until: Instant) -> Option<(Vec<u8>, IpAddr)> {
    let left = until.checked_duration_since(Instant::now())?;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, left.as_millis() as libc::c_int + 1) };
    if rc <= 0 {
        return None;
    }
    let mut buf = vec![0u8; 65536];
    // SAFETY: zeroed sockaddr_storage is valid storage for any address.
    let mut sa: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut sl = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: buf and sa are writable for the lengths given.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&mut sa as *mut libc::sockaddr_storage).cast(),
            &mut sl,
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    let from = if i32::from(sa.ss_family) == libc::AF_INET6 {
        // SAFETY: the family says the storage holds a sockaddr_in6.
        let s6 = unsafe { &*(&sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
        IpAddr::from(s6.sin6_addr.s6_addr)
    } else {
        // SAFETY: the family says the storage holds a sockaddr_in.
        let s4 = unsafe { &*(&sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
        IpAddr::from(s4.sin_addr.s_addr.to_ne_bytes())
    };
    Some((buf, from))
}

fn udp_bind(ns: &Netns, addr: SocketAddr) -> UdpSocket {
    let s = ns
        .enter(|| UdpSocket::bind(addr))
        .expect("enter namespace")
        .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.name()));
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

// --- the network ---------------------------------------------------------

/// client (198.51.100.2, 2001:db8:1::2) - router - real (203.0.113.11,
/// 2001:db8:2::11), each with a default route through the router; the
/// real's IPv4 reverse-path filter strict, as a hardened host's would be.
struct Net {
    client: Netns,
    real: Netns,
    _router: Netns,
}

impl Net {
    fn new() -> Net {
        require_root();
        let client = Netns::new("dc-client").expect("client namespace");
        let router = Netns::new("dc-router").expect("router namespace");
        let real = Netns::new("dc-real").expect("real namespace");
        for ns in [&client, &router, &real] {
            ns.sh("sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0")
                .unwrap();
        }
        router
            .sh(
                "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
                 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0",
            )
            .unwrap();
        real.sh("sysctl -qw net.ipv4.conf.all.rp_filter=1").unwrap();
        client
            .ip(&[
                "link",
                "add",
                "c0",
                "type",
                "veth",
                "peer",
                "name",
                "r0",
                "netns",
                router.name(),
            ])
            .unwrap();
        real.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "r1",
            "netns",
            router.name(),
        ])
        .unwrap();
        let addrs: [(&Netns, &str, &str, &str); 4] = [
            (&client, "c0", "198.51.100.2/24", "2001:db8:1::2/64"),
            (&router, "r0", "198.51.100.1/24", "2001:db8:1::1/64"),
            (&router, "r1", "203.0.113.1/24", "2001:db8:2::1/64"),
            (&real, "eth0", "203.0.113.11/24", "2001:db8:2::11/64"),
        ];
        for (ns, dev, a4, a6) in addrs {
            ns.ip(&["addr", "add", a4, "dev", dev]).unwrap();
            ns.ip(&["addr", "add", a6, "dev", dev, "nodad"]).unwrap();
            ns.ip(&["link", "set", dev, "up"]).unwrap();
        }
        for (ns, gw4, gw6) in [
            (&client, "198.51.100.1", "2001:db8:1::1"),
            (&real, "203.0.113.1", "2001:db8:2::1"),
        ] {
            ns.ip(&["route", "add", "default", "via", gw4]).unwrap();
            ns.ip(&["-6", "route", "add", "default", "via", gw6])
                .unwrap();
        }
        Net {
            client,
            real,
            _router: router,
        }
    }

    fn decap(&self, opts: DecapOptions) -> Decap {
        let opts = DecapOptions {
            program: Some(env!("CARGO_BIN_EXE_vc5-decap").into()),
            ..opts
        };
        Decap::start(&self.real, &opts).expect("start vc5-decap")
    }

    fn decap_all(&self) -> Decap {
        self.decap(DecapOptions::all(
            FOU_PORT,
            GUE_PORT,
            &[VIP4.into(), VIP6.into()],
        ))
    }

    /// The real's `Udp6InCsumErrors`.
    fn udp6_csum_errors(&self) -> u64 {
        let t = self.real.exec(&["cat", "/proc/net/snmp6"]).unwrap();
        t.lines()
            .find_map(|l| l.strip_prefix("Udp6InCsumErrors"))
            .map(|v| v.trim().parse().unwrap())
            .expect("Udp6InCsumErrors in /proc/net/snmp6")
    }
}

fn wait(d: &Decap, what: &str, done: impl FnMut(&DecapStats) -> bool) -> DecapStats {
    d.wait_for(TIMEOUT, done)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The VIP's echo sockets, one per family, in the real's namespace.
struct Echo {
    v4: UdpSocket,
    v6: UdpSocket,
}

impl Echo {
    fn new(net: &Net) -> Echo {
        Echo {
            v4: udp_bind(&net.real, SocketAddr::new(VIP4.into(), ECHO_PORT)),
            v6: udp_bind(&net.real, SocketAddr::new(VIP6.into(), ECHO_PORT)),
        }
    }

    fn sock(&self, v6: bool) -> &UdpSocket {
        if v6 { &self.v6 } else { &self.v4 }
    }

    /// The next datagram to the VIP: its payload and sender.
    fn recv(&self, v6: bool) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 2048];
        let (n, from) = self.sock(v6).recv_from(&mut buf).unwrap_or_else(|e| {
            panic!(
                "nothing reached the VIP's socket (IPv{}): {e}",
                if v6 { 6 } else { 4 }
            )
        });
        (buf[..n].to_vec(), from)
    }
}

// --- the tests -----------------------------------------------------------

/// Every method x outer family x inner family: a UDP datagram reaches the
/// VIP's socket from the client's address and port, the answer reaches the
/// client's socket from the VIP directly, and vc5-decap counts it under
/// its method and outer family; then the same with a TCP SYN, answered by a
/// SYN-ACK to the client.
#[test]
fn every_method_and_family_reaches_the_vip_and_answers_directly() {
    let net = Net::new();
    let decap = net.decap_all();
    let echo = Echo::new(&net);
    let tx = RawTx::new(&net.client);
    let csock = [
        udp_bind(&net.client, SocketAddr::new(CLIENT4.into(), 0)),
        udp_bind(&net.client, SocketAddr::new(CLIENT6.into(), 0)),
    ];
    let mut expected = DecapStats::default();
    for m in Method::ALL {
        for outer6 in [false, true] {
            for inner6 in [false, true] {
                let case = format!(
                    "{} outer IPv{} inner IPv{}",
                    m.name(),
                    if outer6 { 6 } else { 4 },
                    if inner6 { 6 } else { 4 }
                );
                let cs = &csock[usize::from(inner6)];
                let from = cs.local_addr().unwrap();
                let to = SocketAddr::new(vip(inner6), ECHO_PORT);
                let payload = format!("hello {case}");
                tx.send(&encap(m, outer6, &udp(from, to, payload.as_bytes())));

                let (got, peer) = echo.recv(inner6);
                assert_eq!(String::from_utf8_lossy(&got), payload, "{case}");
                assert_eq!(
                    peer, from,
                    "{case}: the real saw the client's address and port"
                );
                let answer = format!("answer {case}");
                echo.sock(inner6).send_to(answer.as_bytes(), peer).unwrap();

                let mut buf = [0u8; 2048];
                let (n, src) = cs
                    .recv_from(&mut buf)
                    .unwrap_or_else(|e| panic!("{case}: no answer at the client: {e}"));
                assert_eq!(src, to, "{case}: the answer comes from the VIP");
                assert_eq!(&buf[..n], answer.as_bytes(), "{case}");

                let i = Method::ALL.iter().position(|&x| x == m).unwrap();
                expected.delivered[i][usize::from(outer6)] += 1;
                expected.received[i] += 1;
                let want = expected.clone();
                wait(&decap, &case, |s| {
                    s.delivered == want.delivered && s.received == want.received
                });
            }
        }
    }

    // TCP: a SYN inside each tunnel gets a SYN-ACK straight back.
    let listen = [
        net.real
            .enter(|| TcpListener::bind((VIP4, TCP_PORT)))
            .unwrap()
            .unwrap(),
        net.real
            .enter(|| TcpListener::bind((VIP6, TCP_PORT)))
            .unwrap()
            .unwrap(),
    ];
    let rx = [
        raw_tcp_rx(&net.client, false),
        raw_tcp_rx(&net.client, true),
    ];
    let mut port = 40000u16;
    for m in Method::ALL {
        for outer6 in [false, true] {
            for inner6 in [false, true] {
                let case = format!(
                    "TCP over {} outer IPv{} inner IPv{}",
                    m.name(),
                    if outer6 { 6 } else { 4 },
                    if inner6 { 6 } else { 4 }
                );
                port += 1;
                let from = SocketAddr::new(client(inner6), port);
                let to = SocketAddr::new(vip(inner6), TCP_PORT);
                let seq = 0x1000_0000 + u32::from(port);
                tx.send(&encap(m, outer6, &tcp_syn(from, to, seq)));
                let until = Instant::now() + TIMEOUT;
                loop {
                    let (p, src) = recv_raw(&rx[usize::from(inner6)], until).unwrap_or_else(|| {
                        panic!("{case}: no SYN-ACK at the client\n{}", decap.log())
                    });
                    let t = if inner6 {
                        &p[..]
                    } else {
                        &p[usize::from(p[0] & 0xf) * 4..]
                    };
                    let sport = u16::from_be_bytes([t[0], t[1]]);
                    let dport = u16::from_be_bytes([t[2], t[3]]);
                    if src != to.ip() || sport != TCP_PORT || dport != port {
                        continue;
                    }
                    assert_eq!(t[13] & 0x3f, 0x12, "{case}: SYN-ACK flags");
                    let ack = u32::from_be_bytes(t[8..12].try_into().unwrap());
                    assert_eq!(ack, seq.wrapping_add(1), "{case}: it acknowledges our SYN");
                    break;
                }
            }
        }
    }
    drop(listen);
    let last = decap.stop().expect("vc5-decap exits cleanly");
    assert_eq!(last.delivered_total(), 32, "{last:?}");
    assert_eq!(last.dropped_total(), 0, "{last:?}");
}

/// Each malformed packet is counted under its reason and nothing is
/// written: the inner datagrams would otherwise reach the VIP's socket,
/// which must next see the well-formed datagram sent after them.
#[test]
fn malformed_packets_are_counted_and_not_written() {
    let net = Net::new();
    let decap = net.decap_all();
    let echo = Echo::new(&net);
    let tx = RawTx::new(&net.client);
    let from4 = SocketAddr::new(CLIENT4.into(), 12345);
    let from6 = SocketAddr::new(CLIENT6.into(), 12345);
    let to4 = SocketAddr::new(VIP4.into(), ECHO_PORT);
    let to6 = SocketAddr::new(VIP6.into(), ECHO_PORT);
    let in4 = udp(from4, to4, b"must not arrive");
    let in6 = udp(from6, to6, b"must not arrive");
    let cut = |p: &[u8], n: usize| p[..p.len() - n].to_vec();
    let mut flipped = in4.clone();
    flipped[0] = 0x44; // IHL 4
    let mut v5 = in4.clone();
    v5[0] = 0x55;
    let gre = |flags: [u8; 2], et: u16, inner: &[u8]| {
        let mut g = flags.to_vec();
        g.extend_from_slice(&et.to_be_bytes());
        g.extend_from_slice(inner);
        g
    };
    let gue = |h: [u8; 4], inner: &[u8]| [&h[..], inner].concat();
    let cases: Vec<(&str, Vec<u8>, DropReason, Method)> = vec![
        (
            "IPIP, inner IPv4 cut short",
            ip(CLIENT4.into(), REAL4.into(), 4, &cut(&in4, 5)),
            DropReason::Truncated,
            Method::Ipip,
        ),
        (
            "IPIP proto 4 carrying IPv6",
            ip(CLIENT4.into(), REAL4.into(), 4, &in6),
            DropReason::VersionMismatch,
            Method::Ipip,
        ),
        (
            "IPv6 next header 41 carrying IPv4",
            ip(CLIENT6.into(), REAL6.into(), 41, &in4),
            DropReason::VersionMismatch,
            Method::Ipip,
        ),
        (
            "IPv6 next header 4, inner IPv4 header cut",
            ip(CLIENT6.into(), REAL6.into(), 4, &in4[..12]),
            DropReason::Truncated,
            Method::Ipip,
        ),
        (
            "GRE with the key bit",
            ip(
                CLIENT4.into(),
                REAL4.into(),
                47,
                &gre([0x20, 0], 0x0800, &in4),
            ),
            DropReason::BadGreHeader,
            Method::Gre,
        ),
        (
            "GRE version 1",
            ip(CLIENT6.into(), REAL6.into(), 47, &gre([0, 1], 0x86dd, &in6)),
            DropReason::BadGreHeader,
            Method::Gre,
        ),
        (
            "GRE carrying Ethernet",
            ip(CLIENT4.into(), REAL4.into(), 47, &gre([0, 0], 0x6558, &in4)),
            DropReason::UnknownInnerProtocol,
            Method::Gre,
        ),
        (
            "GRE 0x86dd carrying IPv4",
            ip(CLIENT6.into(), REAL6.into(), 47, &gre([0, 0], 0x86dd, &in4)),
            DropReason::VersionMismatch,
            Method::Gre,
        ),
        (
            "GRE header cut",
            ip(CLIENT4.into(), REAL4.into(), 47, &[0, 0, 8]),
            DropReason::Truncated,
            Method::Gre,
        ),
        (
            "FOU carrying IP version 5",
            udp_outer(REAL4.into(), FOU_PORT, &v5, Csum::Zero),
            DropReason::UnknownInnerProtocol,
            Method::Fou,
        ),
        (
            "FOU, inner IPv4 IHL 4",
            udp_outer(REAL6.into(), FOU_PORT, &flipped, Csum::Good),
            DropReason::BadInnerHeader,
            Method::Fou,
        ),
        (
            "FOU, inner IPv6 cut short",
            udp_outer(REAL6.into(), FOU_PORT, &cut(&in6, 3), Csum::Good),
            DropReason::Truncated,
            Method::Fou,
        ),
        (
            "GUE with option length 1",
            udp_outer(
                REAL4.into(),
                GUE_PORT,
                &gue([0x01, 4, 0, 0], &in4),
                Csum::Zero,
            ),
            DropReason::BadGueHeader,
            Method::Gue,
        ),
        (
            "GUE control message",
            udp_outer(
                REAL6.into(),
                GUE_PORT,
                &gue([0x20, 41, 0, 0], &in6),
                Csum::Good,
            ),
            DropReason::BadGueHeader,
            Method::Gue,
        ),
        (
            "GUE with flags",
            udp_outer(
                REAL4.into(),
                GUE_PORT,
                &gue([0, 4, 0x80, 0], &in4),
                Csum::Zero,
            ),
            DropReason::BadGueHeader,
            Method::Gue,
        ),
        (
            "GUE protocol 17",
            udp_outer(
                REAL6.into(),
                GUE_PORT,
                &gue([0, 17, 0, 0], &in6),
                Csum::Good,
            ),
            DropReason::UnknownInnerProtocol,
            Method::Gue,
        ),
        (
            "GUE 41 carrying IPv4",
            udp_outer(
                REAL4.into(),
                GUE_PORT,
                &gue([0, 41, 0, 0], &in4),
                Csum::Zero,
            ),
            DropReason::VersionMismatch,
            Method::Gue,
        ),
        (
            "GUE header cut",
            udp_outer(REAL6.into(), GUE_PORT, &[0, 41], Csum::Good),
            DropReason::Truncated,
            Method::Gue,
        ),
    ];
    let mut expected = DecapStats::default();
    for (case, pkt, reason, m) in cases {
        tx.send(&pkt);
        let i = DropReason::ALL.iter().position(|&r| r == reason).unwrap();
        expected.dropped[i] += 1;
        expected.received[Method::ALL.iter().position(|&x| x == m).unwrap()] += 1;
        let want = expected.clone();
        let s = wait(&decap, case, |s| {
            s.dropped == want.dropped && s.received == want.received
        });
        assert_eq!(s.delivered_total(), 0, "{case}: nothing written");
    }
    // What reaches the VIPs next is the well-formed datagram.
    for inner6 in [false, true] {
        let (from, to) = if inner6 { (from6, to6) } else { (from4, to4) };
        tx.send(&encap(Method::Gue, !inner6, &udp(from, to, b"well-formed")));
        let (got, peer) = echo.recv(inner6);
        assert_eq!(
            &got[..],
            b"well-formed",
            "IPv{}",
            if inner6 { 6 } else { 4 }
        );
        assert_eq!(peer, from);
    }
    let last = decap.stop().expect("vc5-decap exits cleanly");
    assert_eq!(last.delivered_total(), 2, "{last:?}");
    assert_eq!(last.dropped_total(), 18, "{last:?}");
}

/// A FOU or GUE datagram over IPv6 with a bad UDP checksum is refused by
/// the kernel (the real's Udp6InCsumErrors counts it) and never reaches
/// vc5-decap or the VIP; one with a zero checksum likewise, unless
/// vc5-decap was started with `udp6_zero_checksum`.
#[test]
fn bad_and_zero_udp_checksums_over_ipv6() {
    let net = Net::new();
    let decap = net.decap_all();
    let echo = Echo::new(&net);
    let tx = RawTx::new(&net.client);
    let from = SocketAddr::new(CLIENT4.into(), 23456);
    let to = SocketAddr::new(VIP4.into(), ECHO_PORT);
    let gue = |p: &[u8]| [&[0u8, 4, 0, 0][..], p].concat();
    let errors = net.udp6_csum_errors();
    for (n, csum) in [Csum::Bad, Csum::Zero].into_iter().enumerate() {
        let inner = udp(from, to, format!("{csum:?} checksum").as_bytes());
        tx.send(&udp_outer(REAL6.into(), FOU_PORT, &inner, csum));
        tx.send(&udp_outer(REAL6.into(), GUE_PORT, &gue(&inner), csum));
        let want = errors + 2 * (n as u64 + 1);
        let until = Instant::now() + TIMEOUT;
        while net.udp6_csum_errors() < want {
            assert!(
                Instant::now() < until,
                "Udp6InCsumErrors did not reach {want}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Then good ones: they are the first the VIP sees, and the first
    // vc5-decap received.
    let inner = udp(from, to, b"good checksum");
    tx.send(&udp_outer(REAL6.into(), FOU_PORT, &inner, Csum::Good));
    tx.send(&udp_outer(REAL6.into(), GUE_PORT, &gue(&inner), Csum::Good));
    for _ in 0..2 {
        let (got, peer) = echo.recv(false);
        assert_eq!(&got[..], b"good checksum");
        assert_eq!(peer, from);
    }
    let s = wait(&decap, "good ones", |s| {
        s.delivered_outer(Method::Fou, true) == 1 && s.delivered_outer(Method::Gue, true) == 1
    });
    assert_eq!(
        s.received(Method::Fou) + s.received(Method::Gue),
        2,
        "{s:?}"
    );
    assert_eq!(net.udp6_csum_errors(), errors + 4);
    drop(echo);
    decap.stop().expect("vc5-decap exits cleanly");

    // With udp6_zero_checksum, a zero checksum is taken (a bad one still is not).
    let decap = net.decap(DecapOptions {
        udp6_zero_checksum: true,
        ..DecapOptions::all(FOU_PORT, GUE_PORT, &[VIP4.into()])
    });
    let echo = udp_bind(&net.real, to);
    tx.send(&udp_outer(
        REAL6.into(),
        GUE_PORT,
        &gue(&udp(from, to, b"bad")),
        Csum::Bad,
    ));
    tx.send(&udp_outer(
        REAL6.into(),
        GUE_PORT,
        &gue(&udp(from, to, b"zero")),
        Csum::Zero,
    ));
    tx.send(&udp_outer(
        REAL6.into(),
        FOU_PORT,
        &udp(from, to, b"zero"),
        Csum::Zero,
    ));
    let mut buf = [0u8; 64];
    for _ in 0..2 {
        let (n, peer) = echo
            .recv_from(&mut buf)
            .expect("zero-checksum datagrams arrive");
        assert_eq!(&buf[..n], b"zero");
        assert_eq!(peer, from);
    }
    let s = wait(&decap, "zero checksums", |s| {
        s.delivered_outer(Method::Fou, true) == 1 && s.delivered_outer(Method::Gue, true) == 1
    });
    assert_eq!(
        s.received(Method::Gue),
        1,
        "the bad checksum never reached it: {s:?}"
    );
    assert_eq!(net.udp6_csum_errors(), errors + 5);
}

/// While it runs: the TUN device holds the VIPs and has an effective
/// rp_filter of 0 while the real's other interfaces keep their strict one
/// (all 0, theirs raised to 1); after SIGTERM it exits 0, and the device,
/// the VIPs, its files and its process are gone and every rp_filter is as
/// it was. Dropping a Decap stops it as well.
#[test]
fn stops_cleanly_and_leaves_nothing_behind() {
    let net = Net::new();
    let rp = |dev: &str| {
        net.real
            .exec(&["cat", &format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter")])
            .unwrap()
            .trim()
            .to_string()
    };
    let before = [rp("all"), rp("eth0"), rp("lo")];
    assert_eq!(before, ["1", "0", "0"]);
    let decap = net.decap(DecapOptions {
        tun: "tunvip".into(),
        ..DecapOptions::all(FOU_PORT, GUE_PORT, &[VIP4.into(), VIP6.into()])
    });
    let shown = net.real.ip(&["addr", "show", "dev", "tunvip"]).unwrap();
    assert!(
        shown.contains("192.0.2.80/32") && shown.contains("2001:db8:80::80/128"),
        "{shown}"
    );
    assert!(shown.contains("UP"), "{shown}");
    assert_eq!(
        [rp("all"), rp("eth0"), rp("lo"), rp("tunvip")],
        ["0", "1", "1", "0"]
    );
    let dir = decap.stats_path().parent().unwrap().to_path_buf();
    assert!(dir.is_dir());
    let pid = decap.stats().unwrap().pid;
    let s = decap.stop().expect("exit status 0 on SIGTERM");
    assert!(s.ready);
    assert!(
        net.real.ip(&["link", "show", "dev", "tunvip"]).is_err(),
        "the TUN device is gone"
    );
    let addrs = net.real.ip(&["addr"]).unwrap();
    assert!(
        !addrs.contains("192.0.2.80") && !addrs.contains("2001:db8:80::80"),
        "{addrs}"
    );
    assert_eq!(
        [rp("all"), rp("eth0"), rp("lo")],
        before,
        "rp_filter restored"
    );
    assert!(!dir.exists(), "its directory is removed");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the process is gone"
    );

    // Dropped rather than stopped.
    let decap = net.decap_all();
    let pid = decap.stats().unwrap().pid;
    drop(decap);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the process is gone"
    );
    assert!(
        net.real.ip(&["link", "show", "dev", "vc5tun0"]).is_err(),
        "the TUN device is gone"
    );
    assert_eq!(
        [rp("all"), rp("eth0"), rp("lo")],
        before,
        "rp_filter restored"
    );
}

/// Without any method it refuses to start, and says why.
#[test]
fn refuses_to_start_without_a_method() {
    let net = Net::new();
    let opts = DecapOptions {
        program: Some(env!("CARGO_BIN_EXE_vc5-decap").into()),
        ..DecapOptions::default()
    };
    let e = Decap::start(&net.real, &opts).expect_err("no method");
    assert!(e.to_string().contains("no method"), "{e}");
}

/// With no VIPs of its own, the TUN device still delivers to VIPs the real
/// holds elsewhere (on `lo`, as the lab's layer-2 reals have them): the
/// kernel takes a packet for any local address on any interface.
#[test]
fn vips_on_lo_work_too() {
    let net = Net::new();
    net.real
        .ip(&["addr", "add", "192.0.2.80/32", "dev", "lo"])
        .unwrap();
    net.real
        .ip(&["addr", "add", "2001:db8:80::80/128", "dev", "lo", "nodad"])
        .unwrap();
    let decap = net.decap(DecapOptions::all(FOU_PORT, GUE_PORT, &[]));
    let echo = Echo::new(&net);
    let tx = RawTx::new(&net.client);
    for (m, outer6, inner6) in [(Method::Ipip, false, false), (Method::Gue, true, true)] {
        let from = SocketAddr::new(client(inner6), 34567);
        let to = SocketAddr::new(vip(inner6), ECHO_PORT);
        tx.send(&encap(m, outer6, &udp(from, to, b"via lo")));
        let (got, peer) = echo.recv(inner6);
        assert_eq!(&got[..], b"via lo");
        assert_eq!(peer, from);
    }
    let s = decap.stop().expect("vc5-decap exits cleanly");
    assert_eq!(s.delivered_outer(Method::Ipip, false), 1, "{s:?}");
    assert_eq!(s.delivered_outer(Method::Gue, true), 1, "{s:?}");
}
