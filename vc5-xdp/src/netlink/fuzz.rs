//! Property tests of the netlink parsers: random and mutated datagrams
//! (valid link, route, neighbour and error messages, then bit flips,
//! truncations, length fields set to extremes, random bytes) go through
//! `split_messages` and every body parser. None may panic, index outside its
//! input or return a slice that is not inside it; valid messages parse back
//! to what was encoded.
//!
//! Bounded by default (a second or two in a debug build);
//! `VC5_FUZZ_SEED=N` replays a run, `VC5_FUZZ_ITERS=N` runs longer.

use super::resolver::*;
use super::wire::*;
use super::*;

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

fn header(len: usize, ty: u16, flags: u16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&(len as u32).to_ne_bytes());
    h.extend_from_slice(&ty.to_ne_bytes());
    h.extend_from_slice(&flags.to_ne_bytes());
    h.extend_from_slice(&7u32.to_ne_bytes());
    h.extend_from_slice(&0u32.to_ne_bytes());
    h
}

fn message(ty: u16, flags: u16, body: &[u8]) -> Vec<u8> {
    let mut m = header(16 + body.len(), ty, flags);
    m.extend_from_slice(body);
    m.resize(align4(m.len()), 0);
    m
}

fn link(index: i32, name: &[u8], mac: &[u8], flags: u32) -> Vec<u8> {
    let mut b = vec![0, 0, 1, 0];
    b.extend_from_slice(&index.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&[0; 4]);
    push_attr(&mut b, sys::IFLA_IFNAME, name);
    push_attr(&mut b, sys::IFLA_ADDRESS, mac);
    b
}

fn route(oif: u32, gw: Option<IpAddr>) -> Vec<u8> {
    let family = if matches!(gw, Some(IpAddr::V6(_))) {
        libc::AF_INET6 as u8
    } else {
        libc::AF_INET as u8
    };
    let mut b = vec![family, 32, 0, 0, 254, 4, 0, 1, 0, 0, 0, 0];
    push_attr(&mut b, sys::RTA_OIF, &oif.to_ne_bytes());
    if let Some(g) = gw {
        push_attr(&mut b, sys::RTA_GATEWAY, &addr_octets(&g).1);
    }
    b
}

fn neigh(addr: IpAddr, mac: Option<[u8; 6]>, state: u16) -> Vec<u8> {
    let (family, octets) = addr_octets(&addr);
    let mut b = ndmsg(family, 3, state, 0);
    push_attr(&mut b, sys::NDA_DST, &octets);
    if let Some(m) = mac {
        push_attr(&mut b, sys::NDA_LLADDR, &m);
    }
    b
}

fn error_with_text(errno: i32, text: &[u8]) -> Vec<u8> {
    let mut b = (-errno).to_ne_bytes().to_vec();
    b.extend_from_slice(&header(16, sys::RTM_NEWNEIGH, 0));
    push_attr(&mut b, sys::NLMSGERR_ATTR_MSG, text);
    b
}

/// A datagram of one to four valid messages, and what they hold.
fn valid(rng: &mut Rng) -> Vec<u8> {
    let mut d = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let m = match rng.below(4) {
            0 => message(
                sys::RTM_NEWLINK,
                0,
                &link(
                    rng.below(1000) as i32,
                    b"eth0\0",
                    &[2, 0, 0, 0, 0, 1],
                    0x1_0003,
                ),
            ),
            1 => message(
                sys::RTM_NEWROUTE,
                0,
                &route(2, Some("2001:db8::1".parse().unwrap())),
            ),
            2 => message(
                sys::RTM_NEWNEIGH,
                0,
                &neigh(
                    "203.0.113.21".parse().unwrap(),
                    Some([2, 0, 0, 0, 0, 2]),
                    nud::REACHABLE,
                ),
            ),
            _ => message(
                sys::NLMSG_ERROR,
                sys::NLM_F_ACK_TLVS | sys::NLM_F_CAPPED,
                &error_with_text(libc::EINVAL, b"bad\0"),
            ),
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
    let Ok(msgs) = split_messages(d) else { return };
    let mut total = 0;
    for m in &msgs {
        assert!(within(d, m.data), "a message body outside the datagram");
        total += m.data.len() + sys::NLMSG_HDRLEN;
        for (_, v) in Attrs(m.data) {
            assert!(within(m.data, v), "an attribute outside its message");
        }
        let _ = parse_link(m.data);
        let _ = parse_route(m.data);
        let _ = parse_neigh(m.data);
        let _ = parse_error(m);
        let _ = is_path_relevant(m);
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
            match m.ty {
                sys::RTM_NEWLINK => {
                    let l = parse_link(m.data).expect("link");
                    assert_eq!(
                        (l.name.as_str(), l.mac, l.carrier),
                        ("eth0", [2, 0, 0, 0, 0, 1], true)
                    );
                }
                sys::RTM_NEWROUTE => {
                    let r = parse_route(m.data).expect("route");
                    assert_eq!(
                        (r.oif, r.gateway),
                        (2, Some("2001:db8::1".parse().unwrap()))
                    );
                }
                sys::RTM_NEWNEIGH => {
                    let n = parse_neigh(m.data).expect("neighbour");
                    assert_eq!(n.mac, Some([2, 0, 0, 0, 0, 2]));
                    assert_eq!(n.addr, "203.0.113.21".parse::<IpAddr>().unwrap());
                }
                _ => assert_eq!(parse_error(&m), Some((libc::EINVAL, Some("bad".into())))),
            }
        }
    }
}

/// Found by the fuzz test: an error message whose errno field is i32::MIN
/// made `parse_error` overflow negating it (a panic in a debug build).
#[test]
fn an_errno_of_i32_min_is_unreadable_not_a_panic() {
    let d = message(sys::NLMSG_ERROR, 0, &i32::MIN.to_ne_bytes());
    let msgs = split_messages(&d).unwrap();
    assert_eq!(parse_error(&msgs[0]), None);
}
