//! vc5-vlan-relay end to end, in the shape the lab will use it: a switch
//! namespace with the untagged LAN bridge br0 and one bridge per VLAN
//! (br10, br20), the relay between a veth on br0 (its trunk) and one veth
//! on each VLAN bridge (its access interfaces); a trunk host (the load
//! balancer's place) whose eth0 is a port of br0 and which also has an
//! untagged stand-in interface on br10, as the lab gives the load balancer
//! for ARP and NDP; a real on each VLAN bridge with IPv4 and IPv6
//! addresses.
//!
//! The trunk host sends hand-built frames (ARP, ICMP, ICMPv6 neighbour
//! discovery and echo; RFC 826, 791, 792, 8200, 4443, 4861) from an
//! AF_PACKET socket with 802.1Q tags written into the bytes; taps on the
//! reals' and the trunk host's interfaces see what arrives (a tag the
//! kernel moved into metadata is read from PACKET_AUXDATA).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};
use vc5_testkit::netns::Netns;
use vc5_testkit::require_root;
use vc5_testkit::vlan_relay::{DropReason, RelayOptions, RelayStats, VlanRelay};

const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a frame that must not arrive is waited for.
const QUIET: Duration = Duration::from_millis(300);

type Mac = [u8; 6];
const LB_MAC: Mac = [2, 0, 0, 0, 0, 1];
const STANDIN_MAC: Mac = [2, 0, 0, 0, 0x10, 1];
const BROADCAST: Mac = [0xff; 6];

/// The trunk host's addresses in VLAN `vid` (held by no interface: its
/// frames are built here).
fn lb4(vid: u16) -> Ipv4Addr {
    Ipv4Addr::new(10, vid as u8, 0, 100)
}
/// VLAN `vid`'s group of an IPv6 address: 10 is 2001:db8:10::/64.
fn seg(vid: u16) -> u16 {
    u16::from_str_radix(&vid.to_string(), 16).unwrap()
}
fn lb6(vid: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, seg(vid), 0, 0, 0, 0, 0x100)
}
fn real4(vid: u16) -> Ipv4Addr {
    Ipv4Addr::new(10, vid as u8, 0, 11)
}
fn real6(vid: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, seg(vid), 0, 0, 0, 0, 0x11)
}
fn real_mac(vid: u16) -> Mac {
    [2, 0, 0, 0, vid as u8, 0x11]
}
fn mac_str(m: Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

// --- frames --------------------------------------------------------------

use vc5_testkit::xdp::{ones_fold, ones_sum as sum};

/// The checksum field for a folded sum: its complement.
fn fold(s: u32) -> u16 {
    !ones_fold(s)
}

fn eth(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `frame` with a tag (`tpid`, VID `vid`, PCP 0) after its MAC addresses.
fn tag(frame: &[u8], tpid: u16, vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

fn q(frame: &[u8], vid: u16) -> Vec<u8> {
    tag(frame, 0x8100, vid)
}

/// An ARP request (who has `tpa`, tell `spa`), broadcast.
fn arp_request(sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&tpa.octets());
    eth(BROADCAST, sha, 0x0806, &a)
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = fold(sum(&h));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An ICMP echo request of `len` bytes of IP (at least 47).
fn echo4(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, len: usize) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(b"vc5-vlan-relay echo");
    m.resize(len - 20, 0x5a);
    let c = fold(sum(&m));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, 1, &m)
}

fn icmp6_check(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    fold(sum(&src.octets()) + sum(&dst.octets()) + msg.len() as u32 + 58 + sum(msg))
}

/// An IPv6 packet carrying the ICMPv6 message `msg` (its checksum set here).
fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, hops: u8, msg: &[u8]) -> Vec<u8> {
    let mut m = msg.to_vec();
    m[2..4].copy_from_slice(&[0, 0]);
    let c = icmp6_check(src, dst, &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(m.len() as u16).to_be_bytes());
    h[6] = 58;
    h[7] = hops;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(&m);
    h
}

/// A neighbour solicitation for `target` from `src` (`mac`), to its
/// solicited-node group.
fn neighbour_solicitation(mac: Mac, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&t);
    m.extend_from_slice(&[1, 1]);
    m.extend_from_slice(&mac);
    let dst_mac = [0x33, 0x33, 0xff, t[13], t[14], t[15]];
    eth(dst_mac, mac, 0x86dd, &icmp6(src, group, 255, &m))
}

fn echo6(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![128, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(b"vc5-vlan-relay echo6");
    icmp6(src, dst, 64, &m)
}

/// The ICMPv6 message of an IPv6 frame (untagged), if it is one, with its
/// source and destination; its checksum must be right.
fn icmp6_of(f: &[u8]) -> Option<(Ipv6Addr, Ipv6Addr, &[u8])> {
    if f.len() < 54 || f[12..14] != [0x86, 0xdd] || f[20] != 58 {
        return None;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&f[22..38]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap());
    let m = &f[54..54 + usize::from(u16::from_be_bytes([f[18], f[19]]))];
    assert_eq!(
        fold(sum(&src.octets()) + sum(&dst.octets()) + m.len() as u32 + 58 + sum(m)),
        0,
        "ICMPv6 checksum of {f:02x?}"
    );
    Some((src, dst, m))
}

/// The ICMP message of an IPv4 frame (untagged), with its source; its
/// checksum must be right.
fn icmp4_of(f: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    if f.len() < 34 || f[12..14] != [8, 0] || f[23] != 1 {
        return None;
    }
    let ihl = usize::from(f[14] & 0xf) * 4;
    let tot = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let m = &f[14 + ihl..14 + tot];
    assert_eq!(fold(sum(m)), 0, "ICMP checksum of {f:02x?}");
    Some((Ipv4Addr::new(f[26], f[27], f[28], f[29]), m))
}

/// An ARP reply's sender hardware and protocol addresses.
fn arp_reply_of(f: &[u8]) -> Option<(Mac, Ipv4Addr)> {
    if f.len() < 42 || f[12..14] != [8, 6] || f[20..22] != [0, 2] {
        return None;
    }
    Some((
        f[22..28].try_into().unwrap(),
        Ipv4Addr::new(f[28], f[29], f[30], f[31]),
    ))
}

fn src_mac(f: &[u8]) -> Mac {
    f[6..12].try_into().unwrap()
}

// --- taps ----------------------------------------------------------------

/// A frame a tap saw: its outer tag (from the kernel's metadata or its
/// bytes) and the frame without it.
#[derive(Debug)]
struct Seen {
    tag: Option<(u16, u16)>,
    frame: Vec<u8>,
}

impl Seen {
    fn vid(&self) -> Option<u16> {
        self.tag.map(|(_, tci)| tci & 0xfff)
    }
}

/// An AF_PACKET socket on one interface in a namespace: sends whole frames
/// out of it and receives what arrives (not what the host sends).
struct Tap {
    fd: OwnedFd,
    what: String,
}

fn setsockopt_int(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) {
    // SAFETY: an int option from a live local, its size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

impl Tap {
    fn new(ns: &Netns, dev: &str) -> Tap {
        let what = format!("{dev} in {}", ns.name());
        let fd = ns
            .enter(|| {
                let c = std::ffi::CString::new(dev).unwrap();
                // SAFETY: c is a NUL-terminated string alive across the call.
                let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
                assert_ne!(idx, 0, "no {dev}");
                // SAFETY: socket(2) with constant arguments; checked below.
                let fd = unsafe {
                    libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0)
                };
                assert!(
                    fd >= 0,
                    "AF_PACKET socket: {}",
                    std::io::Error::last_os_error()
                );
                // SAFETY: fd was just returned by socket(2), owned by no one else.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1);
                setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1);
                // SAFETY: a zeroed sockaddr_ll is valid; fields set below.
                let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                sa.sll_family = libc::AF_PACKET as u16;
                sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
                sa.sll_ifindex = idx as i32;
                // SAFETY: bind(2) with a sockaddr_ll and its size.
                let rc = unsafe {
                    libc::bind(
                        fd.as_raw_fd(),
                        (&sa as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
                fd
            })
            .expect("enter namespace");
        Tap { fd, what }
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: frame is valid for its length; the socket is bound.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send on {}: {}",
            self.what,
            std::io::Error::last_os_error()
        );
    }

    /// The next frame within `until`.
    fn recv(&self, until: Instant) -> Option<Seen> {
        let left = until.checked_duration_since(Instant::now())?;
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, left.as_millis() as libc::c_int + 1) };
        if rc <= 0 {
            return None;
        }
        let mut buf = vec![0u8; 65536];
        let mut cbuf = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: a zeroed msghdr is valid; its pointers are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        // SAFETY: msg points at live buffers of the lengths it gives.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return None;
        }
        buf.truncate(n as usize);
        let mut tag = None;
        // SAFETY: msg was filled in by recvmsg; the macros stay within it.
        let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !c.is_null() {
            // SAFETY: c points at a complete cmsghdr in cbuf.
            let h = unsafe { &*c };
            if h.cmsg_level == libc::SOL_PACKET && h.cmsg_type == libc::PACKET_AUXDATA {
                // SAFETY: PACKET_AUXDATA carries a tpacket_auxdata (maybe unaligned).
                let aux: libc::tpacket_auxdata =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast()) };
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    tag = Some((aux.tp_vlan_tpid, aux.tp_vlan_tci));
                }
            }
            // SAFETY: as above; null past the last one.
            c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
        }
        if tag.is_none() && buf.len() >= 18 && matches!(buf[12..14], [0x81, 0] | [0x88, 0xa8]) {
            tag = Some((
                u16::from_be_bytes([buf[12], buf[13]]),
                u16::from_be_bytes([buf[14], buf[15]]),
            ));
            buf.drain(12..16);
        }
        Some(Seen { tag, frame: buf })
    }

    /// The first frame within [`TIMEOUT`] for which `pick` holds.
    fn expect(&self, what: &str, mut pick: impl FnMut(&Seen) -> bool) -> Seen {
        let until = Instant::now() + TIMEOUT;
        loop {
            match self.recv(until) {
                Some(s) if pick(&s) => return s,
                Some(_) => {}
                None => panic!("{}: no {what} in {TIMEOUT:?}", self.what),
            }
        }
    }

    /// Asserts that no frame for which `pick` holds arrives within `quiet`.
    fn expect_none(&self, what: &str, quiet: Duration, mut pick: impl FnMut(&Seen) -> bool) {
        let until = Instant::now() + quiet;
        while let Some(s) = self.recv(until) {
            assert!(!pick(&s), "{}: {what} arrived: {s:02x?}", self.what);
        }
    }
}

// --- the network ---------------------------------------------------------

/// The switch (br0, br10, br20, the relay's trunk `t0` and access `a10`,
/// `a20`; no IPv6, so that nothing but what the tests send crosses the
/// relay from its own side), the trunk host `lb` (eth0 on br0, no IPv6 on
/// it; stand-in `v10` on br10 with 10.10.0.1/24 and 2001:db8:10::1/64)
/// and a real per VLAN (eth0 on br10 or br20, 10.V.0.11/24 and
/// 2001:db8:V::11/64).
struct Net {
    switch: Netns,
    lb: Netns,
    reals: [Netns; 2],
}

const VIDS: [u16; 2] = [10, 20];

impl Net {
    fn new() -> Net {
        require_root();
        let switch = Netns::new("vr-switch").expect("switch namespace");
        let lb = Netns::new("vr-lb").expect("trunk host namespace");
        let reals = [
            Netns::new("vr-real10").expect("real namespace"),
            Netns::new("vr-real20").expect("real namespace"),
        ];
        switch
            .sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
            .unwrap();
        for ns in [&lb, &reals[0], &reals[1]] {
            ns.sh("sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0")
                .unwrap();
        }
        for br in ["br0", "br10", "br20"] {
            switch.ip(&["link", "add", br, "type", "bridge"]).unwrap();
            switch.ip(&["link", "set", br, "up"]).unwrap();
        }
        // A veth from `ns` (`dev`, MAC `mac` if given) to a port of `br`.
        let port = |ns: &Netns, dev: &str, mac: Option<Mac>, peer: &str, br: &str| {
            ns.ip(&[
                "link",
                "add",
                dev,
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "netns",
                switch.name(),
            ])
            .unwrap();
            if let Some(m) = mac {
                ns.ip(&["link", "set", dev, "address", &mac_str(m)])
                    .unwrap();
            }
            switch
                .ip(&["link", "set", peer, "master", br, "up"])
                .unwrap();
        };
        port(&switch, "t0", None, "p-t0", "br0");
        port(&switch, "a10", None, "p-a10", "br10");
        port(&switch, "a20", None, "p-a20", "br20");
        port(&lb, "eth0", Some(LB_MAC), "p-lb", "br0");
        port(&lb, "v10", Some(STANDIN_MAC), "p-v10", "br10");
        lb.sh("sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1")
            .unwrap();
        lb.ip(&["link", "set", "eth0", "up"]).unwrap();
        lb.ip(&["addr", "add", "10.10.0.1/24", "dev", "v10"])
            .unwrap();
        lb.ip(&["addr", "add", "2001:db8:10::1/64", "dev", "v10", "nodad"])
            .unwrap();
        lb.ip(&["link", "set", "v10", "up"]).unwrap();
        for (i, vid) in VIDS.into_iter().enumerate() {
            let r = &reals[i];
            port(
                r,
                "eth0",
                Some(real_mac(vid)),
                &format!("p-r{vid}"),
                &format!("br{vid}"),
            );
            r.ip(&["addr", "add", &format!("{}/24", real4(vid)), "dev", "eth0"])
                .unwrap();
            r.ip(&[
                "addr",
                "add",
                &format!("{}/64", real6(vid)),
                "dev",
                "eth0",
                "nodad",
            ])
            .unwrap();
            r.ip(&["link", "set", "eth0", "up"]).unwrap();
        }
        Net { switch, lb, reals }
    }

    fn opts() -> RelayOptions {
        RelayOptions {
            program: Some(env!("CARGO_BIN_EXE_vc5-vlan-relay").into()),
            ..RelayOptions::new("t0", &[(10, "a10"), (20, "a20")])
        }
    }

    fn relay(&self) -> VlanRelay {
        VlanRelay::start(&self.switch, &Net::opts()).expect("start vc5-vlan-relay")
    }

    fn real(&self, vid: u16) -> &Netns {
        &self.reals[VIDS.iter().position(|&v| v == vid).unwrap()]
    }
}

/// The drop counters as `want` has them, but for `untagged`, which may be
/// higher: the switch's bridges send IGMP reports of their own on br0.
fn drops_are(s: &RelayStats, want: &[u64; 8]) -> bool {
    let u = DropReason::Untagged as usize;
    (0..8).all(|i| {
        if i == u {
            s.dropped[i] >= want[i]
        } else {
            s.dropped[i] == want[i]
        }
    })
}

fn wait(r: &VlanRelay, what: &str, done: impl FnMut(&RelayStats) -> bool) -> RelayStats {
    r.wait_for(TIMEOUT, done)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

// --- the tests -----------------------------------------------------------

/// For VLAN 10 and then 20: the trunk host's tagged ARP request reaches
/// that VLAN's real untagged and not the other real; the real's ARP reply
/// comes back to the trunk host tagged with the VID; so do its answers to
/// tagged ICMP echo requests, one of them of the LAN's full MTU (1,518
/// bytes with the tag, which the veths and bridges must pass). The relay counts both directions under the
/// VID.
#[test]
fn tagged_frames_reach_only_their_vlan_and_answers_come_back_tagged() {
    let net = Net::new();
    let relay = net.relay();
    let trunk = Tap::new(&net.lb, "eth0");
    for (i, vid) in VIDS.into_iter().enumerate() {
        let mine = Tap::new(&net.reals[i], "eth0");
        let other = Tap::new(&net.reals[1 - i], "eth0");
        let before = relay.stats().unwrap();
        let from_lb = |s: &Seen| src_mac(&s.frame) == LB_MAC;

        trunk.send(&q(&arp_request(LB_MAC, lb4(vid), real4(vid)), vid));
        let got = mine.expect("ARP request from the trunk host", from_lb);
        assert_eq!(got.tag, None, "VLAN {vid}: it arrives untagged");
        assert_eq!(got.frame, arp_request(LB_MAC, lb4(vid), real4(vid)));
        let reply = trunk.expect("ARP reply", |s| arp_reply_of(&s.frame).is_some());
        assert_eq!(
            reply.vid(),
            Some(vid),
            "VLAN {vid}: the ARP reply is tagged"
        );
        assert_eq!(reply.tag.unwrap().0, 0x8100);
        assert_eq!(reply.tag.unwrap().1 >> 12, 0, "PCP 0, DEI 0");
        assert_eq!(
            arp_reply_of(&reply.frame),
            Some((real_mac(vid), real4(vid)))
        );
        assert_eq!(&reply.frame[..6], &LB_MAC);

        // A small echo, and one of the LAN's full MTU: 1,518 bytes tagged.
        for (k, len) in [(1u16, 60usize), (2, 1500)] {
            let seq = vid * 10 + k;
            let ping = eth(
                real_mac(vid),
                LB_MAC,
                0x0800,
                &echo4(lb4(vid), real4(vid), 0x77, seq, len),
            );
            trunk.send(&q(&ping, vid));
            let pong = trunk.expect("ICMP echo reply", |s| {
                icmp4_of(&s.frame).is_some_and(|(src, m)| src == real4(vid) && m[0] == 0)
            });
            assert_eq!(
                pong.vid(),
                Some(vid),
                "VLAN {vid}: the echo reply is tagged"
            );
            let (_, m) = icmp4_of(&pong.frame).unwrap();
            assert_eq!(
                m[4..8],
                [0, 0x77, (seq >> 8) as u8, seq as u8],
                "id and sequence"
            );
            assert_eq!(pong.frame.len(), 14 + len, "VLAN {vid}: the whole reply");
        }

        other.expect_none("a frame of the other VLAN", QUIET, from_lb);
        let s = wait(&relay, &format!("VLAN {vid} counters"), |s| {
            s.to_access(vid) >= before.to_access(vid) + 3
                && s.to_trunk(vid) >= before.to_trunk(vid) + 3
        });
        let o = VIDS[1 - i];
        assert_eq!(s.to_access(o), before.to_access(o), "{s:?}");
        assert!(s.tag_in_metadata >= 2, "{s:?}");
    }
    let last = relay.stop().expect("vc5-vlan-relay exits cleanly");
    assert!(drops_are(&last, &[0; 8]), "{last:?}");
}

/// Untagged and priority-tagged frames, an unserved VID, an 802.1ad outer
/// tag and a double tag from the trunk, and a tagged frame from a real's
/// side, are each counted under their reason and reach no one.
#[test]
fn untagged_unserved_and_qinq_frames_are_not_relayed() {
    let net = Net::new();
    let relay = net.relay();
    let trunk = Tap::new(&net.lb, "eth0");
    let taps = [
        Tap::new(&net.reals[0], "eth0"),
        Tap::new(&net.reals[1], "eth0"),
    ];
    let arp = arp_request(LB_MAC, lb4(10), real4(10));
    let cases: [(&str, Vec<u8>, DropReason); 6] = [
        ("untagged", arp.clone(), DropReason::Untagged),
        ("priority-tagged", q(&arp, 0), DropReason::Untagged),
        ("VID 30", q(&arp, 30), DropReason::UnservedVid),
        (
            "802.1ad outer VID 10",
            tag(&arp, 0x88a8, 10),
            DropReason::ServiceTag,
        ),
        (
            "802.1Q 10 in 802.1Q 10",
            q(&q(&arp, 10), 10),
            DropReason::DoubleTagged,
        ),
        (
            "802.1ad 20 in 802.1Q 10",
            q(&tag(&arp, 0x88a8, 20), 10),
            DropReason::DoubleTagged,
        ),
    ];
    let mut want = [0u64; 8];
    for (case, frame, reason) in cases {
        trunk.send(&frame);
        want[DropReason::ALL.iter().position(|&r| r == reason).unwrap()] += 1;
        let s = wait(&relay, case, |s| drops_are(s, &want));
        // (The reals' own IPv6 chatter does go to the trunk.)
        let to_access: u64 = s.vlans.values().map(|c| c.to_access).sum();
        assert_eq!(to_access, 0, "{case}: {s:?}");
    }
    for t in &taps {
        t.expect_none("a frame from the trunk host", QUIET, |s| {
            src_mac(&s.frame) == LB_MAC
        });
    }
    // A real sends a tagged frame: an access interface takes untagged only.
    let real_tap = Tap::new(net.real(10), "eth0");
    real_tap.send(&q(&arp_request(real_mac(10), real4(10), lb4(10)), 10));
    want[DropReason::ALL
        .iter()
        .position(|&r| r == DropReason::TaggedOnAccess)
        .unwrap()] += 1;
    wait(&relay, "tagged on access", |s| drops_are(s, &want));
    trunk.expect_none("the real's tagged ARP request", QUIET, |s| {
        src_mac(&s.frame) == real_mac(10) && s.frame[12..14] == [8, 6]
    });
    // And the well-formed frame after them all is relayed.
    trunk.send(&q(&arp, 10));
    taps[0].expect("the tagged ARP request", |s| src_mac(&s.frame) == LB_MAC);
    let last = relay.stop().expect("vc5-vlan-relay exits cleanly");
    assert!(drops_are(&last, &want), "{last:?}");
}

/// IPv6 across the relay: the stand-in on br10 (untagged, beside the
/// relay's access interface) pings the VLAN 10 real, each request answered
/// once; the trunk host's tagged neighbour solicitation gets a tagged
/// advertisement for the real's address, and the real's answer to a
/// tagged echo request comes back tagged. Nothing leaks into VLAN 20.
#[test]
fn ipv6_neighbour_discovery_across_the_relay() {
    let net = Net::new();
    let relay = net.relay();
    let other = Tap::new(net.real(20), "eth0");

    // The stand-in: a raw ICMPv6 socket (the kernel sums it) on v10.
    let sock = net
        .lb
        .enter(|| {
            // SAFETY: socket(2) with constant arguments; checked below.
            let fd = unsafe {
                libc::socket(
                    libc::AF_INET6,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::IPPROTO_ICMPV6,
                )
            };
            assert!(
                fd >= 0,
                "raw ICMPv6 socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: fd was just returned by socket(2), owned by no one else.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .unwrap();
    let standin_rx = Tap::new(&net.lb, "v10");
    for seq in 1..=3u16 {
        let mut m = vec![128, 0, 0, 0, 0x12, 0x34];
        m.extend_from_slice(&seq.to_be_bytes());
        // SAFETY: a zeroed sockaddr_in6 is valid; family and address set below.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        sa.sin6_family = libc::AF_INET6 as u16;
        sa.sin6_addr.s6_addr = real6(10).octets();
        // SAFETY: m and sa are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                m.as_ptr().cast(),
                m.len(),
                0,
                (&sa as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as u32,
            )
        };
        assert_eq!(n, m.len() as isize, "{}", std::io::Error::last_os_error());
        let is_reply = |s: &Seen| {
            icmp6_of(&s.frame).is_some_and(|(src, _, m)| {
                src == real6(10) && m[0] == 129 && m[6..8] == seq.to_be_bytes()
            })
        };
        let r = standin_rx.expect("echo reply at the stand-in", is_reply);
        assert_eq!(r.tag, None);
        standin_rx.expect_none("a second echo reply", Duration::from_millis(100), is_reply);
    }

    // The trunk host, tagged: NS for the real's address, then an echo.
    let trunk = Tap::new(&net.lb, "eth0");
    trunk.send(&q(&neighbour_solicitation(LB_MAC, lb6(10), real6(10)), 10));
    let na = trunk.expect("neighbour advertisement", |s| {
        icmp6_of(&s.frame).is_some_and(|(_, _, m)| m[0] == 136)
    });
    assert_eq!(na.vid(), Some(10), "the advertisement comes back tagged");
    let (src, dst, m) = icmp6_of(&na.frame).unwrap();
    assert_eq!((src, dst), (real6(10), lb6(10)));
    assert_eq!(&m[8..24], &real6(10).octets(), "target");
    assert_eq!(m[4] & 0x40, 0x40, "solicited");
    assert_eq!(&m[24..26], &[2, 1], "target link-layer address option");
    assert_eq!(&m[26..32], &real_mac(10), "the real's MAC");
    assert_eq!(&na.frame[..6], &LB_MAC);

    trunk.send(&q(
        &eth(
            real_mac(10),
            LB_MAC,
            0x86dd,
            &echo6(lb6(10), real6(10), 0x99, 7),
        ),
        10,
    ));
    let pong = trunk.expect("ICMPv6 echo reply", |s| {
        icmp6_of(&s.frame).is_some_and(|(src, _, m)| src == real6(10) && m[0] == 129)
    });
    assert_eq!(pong.vid(), Some(10), "the echo reply comes back tagged");
    let (_, dst, m) = icmp6_of(&pong.frame).unwrap();
    assert_eq!(dst, lb6(10));
    assert_eq!(m[4..8], [0, 0x99, 0, 7]);
    other.expect_none("VLAN 10's traffic", QUIET, |s| {
        src_mac(&s.frame) == LB_MAC || src_mac(&s.frame) == real_mac(10)
    });
    let s = relay.stop().expect("vc5-vlan-relay exits cleanly");
    assert!(s.to_access(10) >= 2 && s.to_trunk(10) >= 2, "{s:?}");
    assert_eq!(s.to_access(20), 0, "{s:?}");
    assert!(drops_are(&s, &[0; 8]), "{s:?}");
}

/// Two relays back to back, as two switches joined by a trunk: a host on
/// a VLAN 10 access interface of a second relay (in the trunk host)
/// reaches the VLAN 10 real by TCP over IPv4 and IPv6 and moves 4 MB each
/// way intact. The kernel stacks at both ends leave checksums to the veth
/// "hardware" and send TSO super-frames, so this holds only if the
/// relays pass checksum offload and segmentation on (virtio-net headers
/// moved by the tag); neither end counts a bad checksum.
#[test]
fn tcp_across_two_relays_keeps_checksums_and_segments() {
    let net = Net::new();
    let relay = net.relay();
    let client = Netns::new("vr-client").expect("client namespace");
    client
        .sh("sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0")
        .unwrap();
    client
        .ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "c10",
            "netns",
            net.lb.name(),
        ])
        .unwrap();
    client
        .ip(&["addr", "add", "10.10.0.2/24", "dev", "eth0"])
        .unwrap();
    client
        .ip(&["addr", "add", "2001:db8:10::2/64", "dev", "eth0", "nodad"])
        .unwrap();
    client.ip(&["link", "set", "eth0", "up"]).unwrap();
    let far = VlanRelay::start(
        &net.lb,
        &RelayOptions {
            program: Some(env!("CARGO_BIN_EXE_vc5-vlan-relay").into()),
            ..RelayOptions::new("eth0", &[(10, "c10")])
        },
    )
    .expect("the second relay");

    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for addr in [std::net::IpAddr::from(real4(10)), real6(10).into()] {
        let at = SocketAddr::new(addr, 9000);
        let listener = net
            .real(10)
            .enter(|| TcpListener::bind(at))
            .unwrap()
            .unwrap();
        let payload = data.clone();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            c.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut got = vec![0u8; payload.len()];
            c.read_exact(&mut got).unwrap();
            c.write_all(&payload).unwrap();
            got == payload
        });
        let mut c = client
            .enter(|| TcpStream::connect_timeout(&at, TIMEOUT))
            .unwrap()
            .unwrap_or_else(|e| panic!("connect to {at}: {e}\n{}\n{}", relay.log(), far.log()));
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        c.write_all(&data).unwrap();
        let mut back = vec![0u8; data.len()];
        c.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("{at}: {e}: {:?}", relay.stats()));
        assert!(back == data, "{at}: the real's 4 MB arrive intact");
        assert!(
            server.join().unwrap(),
            "{at}: the client's 4 MB arrive intact"
        );
    }
    for ns in [&client, net.real(10)] {
        let snmp = ns.exec(&["cat", "/proc/net/snmp"]).unwrap();
        let tcp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Tcp:")).collect();
        let i = tcp[0]
            .split_whitespace()
            .position(|k| k == "InCsumErrors")
            .unwrap();
        assert_eq!(
            tcp[1].split_whitespace().nth(i),
            Some("0"),
            "{}: {snmp}",
            ns.name()
        );
    }
    let a = relay.stop().expect("vc5-vlan-relay exits cleanly");
    let b = far.stop().expect("the second relay exits cleanly");
    for s in [&a, &b] {
        let c = s.vlans[&10];
        assert!(
            c.to_access_bytes > 8 << 20 && c.to_trunk_bytes > 8 << 20,
            "{s:?}"
        );
        assert_eq!(s.dropped(DropReason::Send), 0, "{s:?}");
        assert_eq!(s.dropped(DropReason::Receive), 0, "{s:?}");
    }
}

/// SIGTERM ends it with status 0 and its process and directory are gone;
/// dropping a VlanRelay stops it too; it refuses a VID given twice and an
/// interface that does not exist, and says why.
#[test]
fn stops_cleanly_and_refuses_bad_options() {
    let net = Net::new();
    let relay = net.relay();
    let s = relay.stats().unwrap();
    assert!(s.ready);
    assert_eq!(s.vlans.keys().copied().collect::<Vec<_>>(), [10, 20]);
    let dir = relay.stats_path().parent().unwrap().to_path_buf();
    let pid = s.pid;
    relay.stop().expect("exit status 0 on SIGTERM");
    assert!(!dir.exists(), "its directory is removed");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    let pid = net.relay().stats().unwrap().pid;
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "dropped, it stops"
    );
    // Nothing left promiscuous.
    let t0 = net.switch.ip(&["-d", "link", "show", "t0"]).unwrap();
    assert!(t0.contains("promiscuity 0"), "{t0}");

    let twice = RelayOptions {
        access: vec![(10, "a10".into()), (10, "a20".into())],
        ..Net::opts()
    };
    let e = VlanRelay::start(&net.switch, &twice).expect_err("VID twice");
    assert!(e.to_string().contains("VID 10 given twice"), "{e}");
    let missing = RelayOptions {
        access: vec![(10, "nosuch0".into())],
        ..Net::opts()
    };
    let e = VlanRelay::start(&net.switch, &missing).expect_err("no such interface");
    assert!(e.to_string().contains("nosuch0"), "{e}");
}
