//! Differential fuzzing of the XDP program against a model of the README's
//! "Data plane policies".
//!
//! Random and mutated frames (Ethernet, 802.1Q/802.1ad, IPv4 with options
//! and fragments, IPv6 with extension headers, TCP, UDP, ICMP and ICMPv6
//! errors quoting VIP flows, truncations, bad IHL/lengths, flipped bytes)
//! run through `BPF_PROG_TEST_RUN`. For each one a small Rust model, written
//! from the policies and not from the C, predicts the verdict, the output
//! frame (for TX: the chosen real's MAC and the interface's MAC, every other
//! byte untouched) and the reason counter; the chosen real is predicted
//! exactly from the lookup table user space wrote and the flow hash, and
//! established flows must keep their real across reprogrammings that drain
//! one real, fail another and bring them back, and across sweeps of the
//! flow tables.
//!
//! Where the README is silent the model takes these readings (each one
//! exercised by the generator, so a change of the program shows here):
//! "cut short" means by the end of the frame, not by the IPv4 total length
//! or IPv6 payload length; the IPv4 version nibble is not checked; a fourth
//! hop-by-hop/routing/destination-options header makes a packet to a VIP
//! malformed (dropped), to other addresses it passes; a second VLAN tag is not parsed
//! (not IP: passes); ICMP to a VIP that is not one of the two errors, or is
//! cut short, passes; a SYN or RST of a flow whose real failed re-pins the
//! flow to the table's real (counted as a new flow there), an ICMP error
//! never writes the flow table.
//!
//! Which flows the program keeps (issue 10) is modelled exactly, since a
//! flow it lacks or has too many shows later as another real: a TCP SYN
//! (without ACK or RST) to a service sets its flow's bit in the shared
//! pending bitmap (2^20 bits, by the hash's top 20 bits); every other
//! packet to a service but an RST or ICMP error takes that bit and counts
//! on its CPU's sample counter (the test runs on CPU 0, in fresh maps),
//! sampled every 64th. A TCP flow the model does not know is inserted iff
//! its bit was pending or the packet sampled (no insert limit), a UDP flow
//! by any packet; one pinned to
//! a real no longer usable is re-pinned by any packet but an ICMP error;
//! one pinned to a usable real keeps it, but in a clean bucket the packet
//! after a SYN writes it again without looking, a new flow for the
//! counters. The model derives the buckets' moved marks from the policy
//! (set where a reprogramming changes a bucket's real, kept by a sweep
//! only where a flow is pinned elsewhere) and checks them against the
//! program's after each reprogramming and sweep; in a clean bucket every
//! known flow must be pinned to the bucket's real.
//!
//! The run is made twice: with flow sync off (no vc5-flowsync), and on
//! (`sync_status[0].on`, empty peer tables): the verdicts must be the same,
//! and with sync on the flow-events ring must hold one NEW or REPIN event
//! per flow the model counts as new (none with sync off).
//!
//! `VC5_FUZZ_SEED` replays a run, `VC5_FUZZ_FRAMES` changes its length
//! (default 100 000). The seed is printed at the start and on failure.

use aya::maps::{Map, MapData, RingBuf};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use vc5_testkit::rng::SplitMix64;
use vc5_testkit::xdp::{TempBpffs, pin_to_cpu, require_root};
use vc5_xdp::dataplane::{TCP, UDP};
use vc5_xdp::hash::flow_hash;
use vc5_xdp::maps::{EVENT_NEW, EVENT_REPIN, Flow4, Flow6, FlowEvent, Reason, TABLE_SIZE};
use vc5_xdp::{DataPlane, L2, MapSizes, RealMode, RealSpec, ServiceSpec};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;
const ICMP: u8 = 1;
const ICMP6: u8 = 58;

const SRC_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x01];
const VIP4: [u8; 4] = [192, 0, 2, 80];
const DEAD4: [u8; 4] = [192, 0, 2, 81];
const OTHER4: [u8; 4] = [192, 0, 2, 82];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80,
];
const DEAD6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x81,
];
const OTHER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x82,
];
/// Ports of the configured services, and others a generator should hit.
const PORTS: [u16; 5] = [80, 53, 443, 8080, 0];
/// A real behind "another interface": its frames are redirected.
const FAR_IFINDEX: u32 = 999;

/// The test kit's SplitMix64 (small, seedable, and the same on every host),
/// with the draws the generator makes.
struct Rng(SplitMix64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `pct` percent.
    fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}
fn v6(a: [u8; 16]) -> IpAddr {
    IpAddr::from(a)
}

fn real_addr(i: u8) -> IpAddr {
    IpAddr::from([203, 0, 113, i])
}
fn real_mac(i: u8) -> [u8; 6] {
    [0x02, 0xbb, 0, 0, 0, i]
}

fn real(i: u8, weight: u32, mode: RealMode) -> RealSpec {
    RealSpec {
        addr: real_addr(i),
        weight,
        mode,
        l2: Some(L2 {
            mac: real_mac(i),
            src_mac: SRC_MAC,
            ifindex: 0,
            ..L2::default()
        }),
    }
}

fn svc(vip: IpAddr, port: u16, proto: u8, reals: Vec<RealSpec>) -> ServiceSpec {
    ServiceSpec {
        vip,
        port,
        proto,
        forward: vc5_xdp::Forward::L2,
        reals,
    }
}

/// Phase one: every kind of real a service can have.
fn config_a() -> Vec<ServiceSpec> {
    use RealMode::*;
    let three = || vec![real(1, 1, Serve), real(2, 1, Serve), real(3, 1, Serve)];
    let mut unresolved = real(4, 1, Serve);
    unresolved.l2 = None;
    let mut far = real(5, 2, Serve);
    far.l2.as_mut().unwrap().ifindex = FAR_IFINDEX;
    vec![
        svc(v4(VIP4), 80, TCP, three()),
        svc(v4(VIP4), 53, UDP, three()),
        svc(
            v4(VIP4),
            443,
            TCP,
            vec![
                real(1, 1, Serve),
                real(2, 3, Serve),
                real(3, 1, Down),
                unresolved,
                far,
            ],
        ),
        svc(v4(DEAD4), 80, TCP, vec![real(1, 1, Down), real(2, 1, Down)]),
        svc(v6(VIP6), 80, TCP, three()),
        svc(v6(VIP6), 53, UDP, three()),
        svc(v6(DEAD6), 53, UDP, vec![real(1, 1, Down)]),
    ]
}

/// Phase two: a real drained, one failed, one added, so established flows
/// must keep (or lose) their real as the policy says.
fn config_b() -> Vec<ServiceSpec> {
    use RealMode::*;
    let mut c = config_a();
    for s in c.iter_mut() {
        match (s.port, s.proto, s.vip.is_ipv4()) {
            (80, TCP, true) => {
                s.reals[0].mode = Drain;
                s.reals[1].mode = Down;
                s.reals.push(real(6, 1, Serve));
            }
            (53, UDP, true) => s.reals[2].mode = Down,
            (80, TCP, false) => {
                s.reals[1].mode = Drain;
                s.reals.push(real(6, 2, Serve));
            }
            (53, UDP, false) => s.reals[0].mode = Drain,
            _ => {}
        }
    }
    c
}

/// What the program must do with one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Pass(Reason),
    Drop(Reason),
    /// Sent to this real; the reason is `Tx`, `Redirect` or `IcmpTx`.
    Real(IpAddr, Reason),
}

/// A flow, client to VIP, as its LRU keys it.
type FlowKey = (u8, [u8; 16], [u8; 16], u16, u16);
/// A service: VIP, port, protocol.
type SvcId = (IpAddr, u16, u8);

/// The model: the configuration, the tables user space built (read back
/// from the data plane, as a real's choice is the table's by design) and
/// the flows the policy says exist.
struct Model {
    specs: Vec<ServiceSpec>,
    /// Per service: its table as the real (address) of each bucket.
    tables: HashMap<SvcId, Vec<Option<IpAddr>>>,
    /// Per service: the backend index of each bucket, as written.
    indices: HashMap<SvcId, Vec<u16>>,
    /// Per service: the buckets marked moved, by the policy.
    moved: HashMap<SvcId, Vec<bool>>,
    flows: HashMap<FlowKey, IpAddr>,
    /// The pending bitmap's set bits (a flow hash's top 20 bits).
    pending: HashSet<u32>,
    /// CPU 0's sample counter.
    sample: u64,
    reasons: HashMap<Reason, (u64, u64)>,
    /// (service, real) -> packets, bytes, new flows.
    per_real: HashMap<(SvcId, IpAddr), (u64, u64, u64)>,
    drops: HashMap<SvcId, (u64, u64)>,
    inserts: Inserts,
    /// The first frame that broke the moved-bucket invariant.
    broken: Option<String>,
}

/// How the model's new flows came to be.
#[derive(Debug, Default, Clone, Copy)]
struct Inserts {
    /// Unknown flows inserted by the packet after their SYN.
    pending: u64,
    /// Unknown TCP flows inserted by a sampled packet (and not pending).
    sampled: u64,
    /// Unknown UDP flows, inserted by their first packet.
    udp: u64,
    /// Known flows written again after a SYN, in a clean bucket.
    rewritten: u64,
    /// Flows re-pinned from a real no longer usable.
    repinned: u64,
}

/// One packet in 64 per CPU is sampled (VC5_SAMPLE).
const SAMPLE: u64 = 64;

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn mapped4(a: &[u8]) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[10] = 0xff;
    m[11] = 0xff;
    m[12..].copy_from_slice(&a[..4]);
    m
}

fn ip_of(a: &[u8; 16]) -> IpAddr {
    let ip = std::net::Ipv6Addr::from(*a);
    match ip.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ip),
    }
}

impl Model {
    fn new(specs: Vec<ServiceSpec>, dp: &DataPlane) -> Model {
        let mut m = Model {
            specs: Vec::new(),
            tables: HashMap::new(),
            indices: HashMap::new(),
            moved: HashMap::new(),
            flows: HashMap::new(),
            pending: HashSet::new(),
            sample: 0,
            reasons: HashMap::new(),
            per_real: HashMap::new(),
            drops: HashMap::new(),
            inserts: Inserts::default(),
            broken: None,
        };
        m.reprogram(specs, dp).expect("first programming");
        m
    }

    /// Takes a new configuration and the tables user space built for it.
    /// A table may only name reals that take new flows; a bucket whose
    /// real changes is marked moved (and stays so until a sweep).
    fn reprogram(&mut self, specs: Vec<ServiceSpec>, dp: &DataPlane) -> Result<(), String> {
        self.tables.clear();
        for s in &specs {
            let id = (s.vip, s.port, s.proto);
            let raw = dp.table(s.vip, s.port, s.proto).map(|t| t.backend.to_vec());
            let raw = raw.unwrap_or_else(|| vec![0; TABLE_SIZE]);
            let moved = self
                .moved
                .entry(id)
                .or_insert_with(|| vec![false; TABLE_SIZE]);
            if let Some(old) = self.indices.get(&id) {
                for k in 0..TABLE_SIZE {
                    moved[k] |= old[k] != raw[k];
                }
            }
            self.indices.insert(id, raw);
            let idx: Vec<(u16, IpAddr)> = s
                .reals
                .iter()
                .filter_map(|r| Some((dp.backend_index(s.vip, s.port, s.proto, r.addr)?, r.addr)))
                .collect();
            let t = match dp.table(s.vip, s.port, s.proto) {
                Some(t) => t,
                None => {
                    self.tables.insert(id, vec![None; TABLE_SIZE]);
                    continue;
                }
            };
            let buckets: Vec<Option<IpAddr>> = t
                .backend
                .iter()
                .map(|&b| idx.iter().find(|(i, _)| *i == b && b != 0).map(|x| x.1))
                .collect();
            for a in buckets.iter().flatten() {
                let r = s.reals.iter().find(|r| r.addr == *a).unwrap();
                assert!(
                    r.mode == RealMode::Serve && r.l2.is_some(),
                    "table of {id:?} names {a}, which takes no new flows ({:?})",
                    r.mode
                );
            }
            self.tables.insert(id, buckets);
        }
        self.specs = specs;
        self.check_moved(dp)
    }

    /// A sweep: each service with a moved bucket keeps the marks of the
    /// buckets with a flow pinned to another real than the bucket's (the
    /// clock stands still: no flow is dead).
    fn swept(&mut self, dp: &DataPlane) -> Result<(), String> {
        let mut needed: HashMap<SvcId, Vec<bool>> = HashMap::new();
        for (key, real) in &self.flows {
            let (proto, client, vip, sport, dport) = *key;
            let id = (ip_of(&vip), dport, proto);
            let k = flow_hash(&client, &vip, sport.to_be(), dport.to_be(), proto) as usize
                & (TABLE_SIZE - 1);
            if self.tables[&id][k] != Some(*real) {
                needed.entry(id).or_insert_with(|| vec![false; TABLE_SIZE])[k] = true;
            }
        }
        for (id, m) in self.moved.iter_mut() {
            if m.iter().any(|&b| b) {
                *m = needed.remove(id).unwrap_or_else(|| vec![false; TABLE_SIZE]);
            }
        }
        self.check_moved(dp)
    }

    /// The program's moved marks must be the model's.
    fn check_moved(&self, dp: &DataPlane) -> Result<(), String> {
        for s in &self.specs {
            let id = (s.vip, s.port, s.proto);
            let Some(live) = dp.live_table(s.vip, s.port, s.proto) else {
                continue;
            };
            let want = &self.moved[&id];
            let differ: Vec<usize> = (0..TABLE_SIZE)
                .filter(|&k| live.is_moved(k) != want[k])
                .collect();
            if !differ.is_empty() {
                return Err(format!(
                    "moved marks of {id:?} differ from the model's in {} buckets, first {:?}: \
                     program {}, model {}",
                    differ.len(),
                    &differ[..differ.len().min(8)],
                    live.is_moved(differ[0]),
                    want[differ[0]]
                ));
            }
        }
        Ok(())
    }

    fn is_vip(&self, a: &[u8; 16]) -> bool {
        let ip = ip_of(a);
        self.specs.iter().any(|s| s.vip == ip)
    }

    fn service(&self, a: &[u8; 16], port: u16, proto: u8) -> Option<&ServiceSpec> {
        let ip = ip_of(a);
        self.specs
            .iter()
            .find(|s| s.vip == ip && s.port == port && s.proto == proto)
    }

    fn usable(spec: &ServiceSpec, a: IpAddr) -> Option<&RealSpec> {
        spec.reals
            .iter()
            .find(|r| r.addr == a && r.mode != RealMode::Down && r.l2.is_some())
    }

    /// Malformed or fragment: dropped if the address is a VIP at all.
    fn vip_drop(&self, dst: &[u8; 16], reason: Reason) -> Verdict {
        if self.is_vip(dst) {
            Verdict::Drop(reason)
        } else {
            Verdict::Pass(Reason::PassNotVip)
        }
    }

    /// Steers a packet of the flow `key` (client to VIP) of a service.
    /// `no_insert`: a SYN, RST or ICMP error, which never create state;
    /// `syn`: a SYN without ACK or RST, which marks its flow pending.
    fn steer(&mut self, key: FlowKey, no_insert: bool, syn: bool, icmp: bool, len: u64) -> Verdict {
        let (proto, client, vip, sport, dport) = key;
        let spec = self.service(&vip, dport, proto).cloned();
        let Some(spec) = spec else {
            return Verdict::Pass(Reason::PassNotVip);
        };
        let id = (spec.vip, spec.port, spec.proto);
        let h = flow_hash(&client, &vip, sport.to_be(), dport.to_be(), proto);
        let k = h as usize & (TABLE_SIZE - 1);
        // Before anything else, even a drop: a SYN marks the pending bit,
        // any other TCP packet but an RST takes it; every packet but a
        // SYN, RST or ICMP error counts for the sample.
        let (pending, sampled) = if no_insert {
            if syn {
                self.pending.insert(h >> 12);
            }
            (false, false)
        } else {
            self.sample += 1;
            (
                proto == TCP && self.pending.remove(&(h >> 12)),
                self.sample.is_multiple_of(SAMPLE),
            )
        };
        let moved = self.moved[&id][k];
        let table = self.tables[&id][k].filter(|a| Model::usable(&spec, *a).is_some());
        let pin = self.flows.get(&key).copied();
        let bucket = self.tables[&id][k];
        if !moved && pin.is_some() && pin != bucket && self.broken.is_none() {
            self.broken = Some(format!(
                "a flow pinned to {pin:?} in clean bucket {k} of {id:?}, whose real is {bucket:?}"
            ));
        }
        let (real, fresh) = match pin.filter(|a| Model::usable(&spec, *a).is_some()) {
            // A flow keeps its usable real. In a clean bucket (where its
            // real is the bucket's) the packet after a SYN writes the
            // flow without looking: written again, it counts as new.
            Some(a) => {
                let again = !moved && pending;
                self.inserts.rewritten += again as u64;
                (a, again)
            }
            None => {
                let Some(a) = table else {
                    let d = self.drops.entry(id).or_default();
                    d.0 += 1;
                    d.1 += len;
                    return Verdict::Drop(Reason::DropNoBackend);
                };
                // A flow whose real failed moves to the table's choice on
                // any packet but an ICMP error (which only reads), and
                // counts as a new flow of its new real; an unknown flow
                // is created by a packet that may create state, if its
                // SYN was seen or the packet is sampled.
                let fresh = if pin.is_some() {
                    self.inserts.repinned += !icmp as u64;
                    !icmp
                } else if no_insert || !(pending || sampled || proto == UDP) {
                    false
                } else if pending {
                    self.inserts.pending += 1;
                    true
                } else if proto == UDP {
                    self.inserts.udp += 1;
                    true
                } else {
                    self.inserts.sampled += 1;
                    true
                };
                if fresh {
                    self.flows.insert(key, a);
                }
                (a, fresh)
            }
        };
        let c = self.per_real.entry((id, real)).or_default();
        c.0 += 1;
        c.1 += len;
        c.2 += fresh as u64;
        let far = Model::usable(&spec, real).unwrap().l2.unwrap().ifindex == FAR_IFINDEX;
        let reason = match (far, icmp) {
            (true, _) => Reason::Redirect,
            (false, true) => Reason::IcmpTx,
            (false, false) => Reason::Tx,
        };
        Verdict::Real(real, reason)
    }

    /// The verdict for one frame, by the README's policies.
    fn verdict(&mut self, f: &[u8]) -> Verdict {
        let v = self.classify(f);
        let r = match &v {
            Verdict::Pass(r) | Verdict::Drop(r) | Verdict::Real(_, r) => *r,
        };
        let c = self.reasons.entry(r).or_default();
        c.0 += 1;
        c.1 += f.len() as u64;
        v
    }

    fn classify(&mut self, f: &[u8]) -> Verdict {
        let len = f.len();
        let mut ethertype = be16(f, 12);
        let mut l3 = 14;
        // One 802.1Q or 802.1ad tag is parsed and kept.
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            if len < 18 {
                return Verdict::Pass(Reason::PassShort);
            }
            ethertype = be16(f, 16);
            l3 = 18;
        }
        match ethertype {
            0x0800 => self.ipv4(f, l3),
            0x86dd => self.ipv6(f, l3),
            _ => Verdict::Pass(Reason::PassNotIp),
        }
    }

    /// TCP or UDP ports at `l4`, with the TCP flags' "never creates state"
    /// and "a SYN (marks its flow pending)"; None when the transport header
    /// is cut short or invalid.
    fn ports(f: &[u8], l4: usize, proto: u8) -> Option<(u16, u16, bool, bool)> {
        let need = if proto == TCP { 20 } else { 8 };
        if l4 + need > f.len() {
            return None;
        }
        let (sport, dport) = (be16(f, l4), be16(f, l4 + 2));
        if proto == UDP {
            return Some((sport, dport, false, false));
        }
        if f[l4 + 12] >> 4 < 5 {
            return None;
        }
        let flags = f[l4 + 13];
        let (syn, rst, ack) = (flags & 0x02 != 0, flags & 0x04 != 0, flags & 0x10 != 0);
        Some((sport, dport, (syn && !ack) || rst, syn && !ack && !rst))
    }

    fn ipv4(&mut self, f: &[u8], l3: usize) -> Verdict {
        if l3 + 20 > f.len() {
            return Verdict::Pass(Reason::PassShort);
        }
        let dst = mapped4(&f[l3 + 16..]);
        let src = mapped4(&f[l3 + 12..]);
        if be16(f, l3 + 6) & 0x3fff != 0 {
            return self.vip_drop(&dst, Reason::DropFragment);
        }
        let ihl = (f[l3] & 0x0f) as usize * 4;
        if ihl < 20 {
            return self.vip_drop(&dst, Reason::DropMalformed);
        }
        let proto = f[l3 + 9];
        let l4 = l3 + ihl;
        if proto == ICMP {
            return self.icmp4(f, &dst, l4);
        }
        if proto != TCP && proto != UDP {
            return Verdict::Pass(Reason::PassNotVip);
        }
        let Some((sport, dport, no_insert, syn)) = Model::ports(f, l4, proto) else {
            return self.vip_drop(&dst, Reason::DropMalformed);
        };
        self.steer(
            (proto, src, dst, sport, dport),
            no_insert,
            syn,
            false,
            f.len() as u64,
        )
    }

    /// Fragmentation needed, quoting a packet VIP -> client.
    fn icmp4(&mut self, f: &[u8], dst: &[u8; 16], l4: usize) -> Verdict {
        let pass = Verdict::Pass(Reason::PassNotVip);
        let inner = l4 + 8;
        if inner > f.len() || f[l4] != 3 || f[l4 + 1] != 4 || inner + 20 > f.len() {
            return pass;
        }
        let ihl = (f[inner] & 0x0f) as usize * 4;
        let proto = f[inner + 9];
        let (qsrc, qdst) = (mapped4(&f[inner + 12..]), mapped4(&f[inner + 16..]));
        if ihl < 20 || qsrc != *dst || (proto != TCP && proto != UDP) {
            return pass;
        }
        let ports = inner + ihl;
        if ports + 4 > f.len() {
            return pass;
        }
        let key = (proto, qdst, qsrc, be16(f, ports + 2), be16(f, ports));
        self.steer(key, true, false, true, f.len() as u64)
    }

    fn ipv6(&mut self, f: &[u8], l3: usize) -> Verdict {
        if l3 + 40 > f.len() {
            return Verdict::Pass(Reason::PassShort);
        }
        let src: [u8; 16] = f[l3 + 8..l3 + 24].try_into().unwrap();
        let dst: [u8; 16] = f[l3 + 24..l3 + 40].try_into().unwrap();
        let mut nh = f[l3 + 6];
        let mut l4 = l3 + 40;
        // Up to three hop-by-hop, routing or destination-options headers
        // are skipped; a fourth makes a packet to a VIP malformed (it must
        // not reach the load balancer's own stack, which would route it).
        for _ in 0..3 {
            if !matches!(nh, 0 | 43 | 60) {
                break;
            }
            if l4 + 2 > f.len() {
                return self.vip_drop(&dst, Reason::DropMalformed);
            }
            nh = f[l4];
            l4 += (f[l4 + 1] as usize + 1) * 8;
        }
        if matches!(nh, 0 | 43 | 60) {
            return self.vip_drop(&dst, Reason::DropMalformed);
        }
        if nh == 44 {
            return self.vip_drop(&dst, Reason::DropFragment);
        }
        if nh == ICMP6 {
            return self.icmp6(f, &dst, l4);
        }
        if nh != TCP && nh != UDP {
            return Verdict::Pass(Reason::PassNotVip);
        }
        let Some((sport, dport, no_insert, syn)) = Model::ports(f, l4, nh) else {
            return self.vip_drop(&dst, Reason::DropMalformed);
        };
        self.steer(
            (nh, src, dst, sport, dport),
            no_insert,
            syn,
            false,
            f.len() as u64,
        )
    }

    /// Packet too big, quoting a packet VIP -> client.
    fn icmp6(&mut self, f: &[u8], dst: &[u8; 16], l4: usize) -> Verdict {
        let pass = Verdict::Pass(Reason::PassNotVip);
        let inner = l4 + 8;
        if inner > f.len() || f[l4] != 2 || inner + 40 > f.len() {
            return pass;
        }
        let proto = f[inner + 6];
        let qsrc: [u8; 16] = f[inner + 8..inner + 24].try_into().unwrap();
        let qdst: [u8; 16] = f[inner + 24..inner + 40].try_into().unwrap();
        if qsrc != *dst || (proto != TCP && proto != UDP) || inner + 44 > f.len() {
            return pass;
        }
        let p = inner + 40;
        let key = (proto, qdst, qsrc, be16(f, p + 2), be16(f, p));
        self.steer(key, true, false, true, f.len() as u64)
    }
}

/// Builds random frames around the configured services.
struct Gen {
    rng: Rng,
    clients4: Vec<[u8; 4]>,
    clients6: Vec<[u8; 16]>,
    cports: Vec<u16>,
    /// Some recent TCP/UDP flows, sent again with any flags: a SYN then
    /// another packet of one flow (the insert after a pending SYN), flows
    /// that stay pinned, and re-pins after a real fails.
    recent: Vec<Tuple>,
}

/// A TCP or UDP flow the generator sent a packet of: source, destination,
/// protocol, ports.
#[derive(Clone, Copy)]
enum Tuple {
    V4([u8; 4], [u8; 4], u8, u16, u16),
    V6([u8; 16], [u8; 16], u8, u16, u16),
}

/// How many recent flows the generator keeps, and how often (percent) a
/// frame is one of them, or a new flow becomes one.
const RECENT: usize = 16;
const REUSE_PCT: u64 = 30;

impl Gen {
    fn new(seed: u64) -> Gen {
        let mut rng = Rng(SplitMix64(seed));
        let clients4 = (0..32)
            .map(|i| [198, 51, 100, i as u8 + rng.byte() % 2])
            .collect();
        let clients6 = (0..32)
            .map(|i| {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                a[5] = 1;
                a[15] = i as u8;
                a
            })
            .collect();
        let cports = (0..32).map(|_| 1024 + rng.below(60000) as u16).collect();
        Gen {
            rng,
            clients4,
            clients6,
            cports,
            recent: Vec::new(),
        }
    }

    /// Keeps a new flow among the recent ones, now and then.
    fn remember(&mut self, t: Tuple) {
        if !self.rng.pct(REUSE_PCT) {
            return;
        }
        if self.recent.len() < RECENT {
            self.recent.push(t);
        } else {
            let i = self.rng.below(RECENT as u64) as usize;
            self.recent[i] = t;
        }
    }

    /// Another packet of a recent flow: new flags, headers and payload.
    fn again(&mut self) -> (u16, Vec<u8>) {
        match self.rng.pick(&self.recent) {
            Tuple::V4(src, dst, proto, sport, dport) => {
                let l4 = self.l4(proto, sport, dport);
                (0x0800, self.ipv4(src, dst, proto, &l4))
            }
            Tuple::V6(src, dst, proto, sport, dport) => {
                let l4 = self.l4(proto, sport, dport);
                (0x86dd, self.ipv6(src, dst, proto, &l4))
            }
        }
    }

    fn dst4(&mut self) -> [u8; 4] {
        match self.rng.below(10) {
            0..=6 => VIP4,
            7 => DEAD4,
            8 => OTHER4,
            _ => self.rng.bytes(4).try_into().unwrap(),
        }
    }
    fn dst6(&mut self) -> [u8; 16] {
        match self.rng.below(10) {
            0..=6 => VIP6,
            7 => DEAD6,
            8 => OTHER6,
            _ => self.rng.bytes(16).try_into().unwrap(),
        }
    }
    fn src4(&mut self) -> [u8; 4] {
        if self.rng.pct(90) {
            self.rng.pick(&self.clients4.clone())
        } else {
            self.rng.bytes(4).try_into().unwrap()
        }
    }
    fn src6(&mut self) -> [u8; 16] {
        if self.rng.pct(90) {
            self.rng.pick(&self.clients6.clone())
        } else {
            self.rng.bytes(16).try_into().unwrap()
        }
    }
    fn sport(&mut self) -> u16 {
        if self.rng.pct(90) {
            self.rng.pick(&self.cports.clone())
        } else {
            self.rng.next() as u16
        }
    }
    /// A VIP's port: mostly one of a service of `proto`.
    fn dport(&mut self, proto: u8) -> u16 {
        if self.rng.pct(70) {
            return match proto {
                TCP => self.rng.pick(&[80, 80, 443]),
                _ => 53,
            };
        }
        if self.rng.pct(70) {
            self.rng.pick(&PORTS)
        } else {
            self.rng.next() as u16
        }
    }
    fn proto(&mut self, icmp: u8) -> u8 {
        match self.rng.below(20) {
            0..=8 => TCP,
            9..=14 => UDP,
            15..=18 => icmp,
            _ => {
                let any = self.rng.byte();
                self.rng.pick(&[0, 2, 47, 50, 132, any])
            }
        }
    }

    /// A TCP or UDP header (or some bytes, for other protocols).
    fn l4(&mut self, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&sport.to_be_bytes());
        l4.extend_from_slice(&dport.to_be_bytes());
        match proto {
            TCP => {
                let opts = if self.rng.pct(15) {
                    self.rng.below(11) as usize
                } else {
                    0
                };
                let doff = if self.rng.pct(3) {
                    self.rng.below(5) as u8
                } else {
                    5 + opts as u8
                };
                l4.extend_from_slice(&self.rng.bytes(8)); // seq, ack
                l4.push(doff << 4);
                let flags = match self.rng.below(8) {
                    0 => 0x02,
                    1 => 0x12,
                    2 => 0x10,
                    3 => 0x04,
                    4 => 0x14,
                    5 => 0x11,
                    6 => 0x18,
                    _ => self.rng.byte(),
                };
                l4.push(flags);
                l4.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
                l4.extend_from_slice(&self.rng.bytes(opts * 4));
            }
            UDP => l4.extend_from_slice(&[0, 8, 0, 0]),
            _ => {}
        }
        let n = self.rng.below(48) as usize;
        l4.extend_from_slice(&self.rng.bytes(n));
        if proto == UDP {
            let ulen = (l4.len() as u16).to_be_bytes();
            l4[4..6].copy_from_slice(&ulen);
        }
        l4
    }

    fn ipv4(&mut self, src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        let opts = if self.rng.pct(20) {
            self.rng.below(11) as usize
        } else {
            0
        };
        let ihl = if self.rng.pct(3) {
            self.rng.below(5) as u8
        } else {
            5 + opts as u8
        };
        let frag: u16 = match self.rng.below(20) {
            0..=13 => 0x4000,
            14..=15 => 0,
            16 => 0x2000,
            17 => 0x2000 | (1 + self.rng.below(0x1fff) as u16),
            18 => 1 + self.rng.below(0x1fff) as u16,
            // The reserved bit alone makes no fragment.
            _ => 0x8000 | (self.rng.below(2) as u16) << 14,
        };
        let mut h = vec![0u8; 20];
        let version = if self.rng.pct(2) {
            self.rng.byte() >> 4
        } else {
            4
        };
        h[0] = version << 4 | ihl;
        let total = if self.rng.pct(5) {
            self.rng.next() as u16
        } else {
            (20 + opts * 4 + l4.len()) as u16
        };
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[6..8].copy_from_slice(&frag.to_be_bytes());
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        // Options: NOPs and random option bytes, padded.
        for _ in 0..opts * 4 {
            h.push(if self.rng.pct(50) { 1 } else { self.rng.byte() });
        }
        h.extend_from_slice(l4);
        h
    }

    /// IPv6 extension headers: (first next-header, bytes), chained to `last`.
    fn v6_ext(&mut self, last: u8) -> (u8, Vec<u8>) {
        if !self.rng.pct(30) {
            return (last, Vec::new());
        }
        let n = 1 + self.rng.below(5);
        let kinds: Vec<u8> = (0..n)
            .map(|_| match self.rng.below(10) {
                0..=2 => 0,
                3..=4 => 43,
                5..=7 => 60,
                8 => 44,
                _ => self.rng.byte(),
            })
            .collect();
        let mut out = Vec::new();
        for (i, &k) in kinds.iter().enumerate() {
            let next = kinds.get(i + 1).copied().unwrap_or(last);
            // A fragment header is 8 bytes; its second byte is reserved.
            let hdrlen = if k == 44 { 0 } else { self.rng.below(3) as u8 };
            out.push(next);
            out.push(if k == 44 { 0 } else { hdrlen });
            let body = (hdrlen as usize + 1) * 8 - 2;
            out.extend_from_slice(&self.rng.bytes(body));
        }
        (kinds[0], out)
    }

    fn ipv6(&mut self, src: [u8; 16], dst: [u8; 16], proto: u8, l4: &[u8]) -> Vec<u8> {
        let (first, ext) = self.v6_ext(proto);
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        let plen = if self.rng.pct(5) {
            self.rng.next() as u16
        } else {
            (ext.len() + l4.len()) as u16
        };
        h[4..6].copy_from_slice(&plen.to_be_bytes());
        h[6] = first;
        h[7] = 64;
        h[8..24].copy_from_slice(&src);
        h[24..40].copy_from_slice(&dst);
        h.extend_from_slice(&ext);
        h.extend_from_slice(l4);
        h
    }

    /// An ICMP error quoting a packet a real sent from `vip` to a client.
    fn icmp4(&mut self, vip: [u8; 4]) -> Vec<u8> {
        let (t, c) = if self.rng.pct(75) {
            (3, 4)
        } else {
            self.rng
                .pick(&[(3, 1), (3, 3), (8, 0), (0, 0), (11, 0), (4, 4)])
        };
        let mut icmp = vec![t, c, 0, 0, 0, 0, 0x05, 0xdc];
        let qsrc = if self.rng.pct(90) { vip } else { self.src4() };
        let client = self.src4();
        let proto = if self.rng.pct(95) {
            self.rng.pick(&[TCP, UDP])
        } else {
            self.rng.byte()
        };
        let (sport, dport) = (self.dport(proto), self.sport());
        let ql4 = self.l4(proto, sport, dport);
        let quoted = self.ipv4(qsrc, client, proto, &ql4);
        // Routers quote at least the IP header and 8 bytes.
        let n = if self.rng.pct(80) {
            quoted.len().min(28 + 4 * (self.rng.below(3) as usize))
        } else {
            self.rng.below(quoted.len() as u64 + 1) as usize
        };
        icmp.extend_from_slice(&quoted[..n]);
        icmp
    }

    fn icmp6(&mut self, vip: [u8; 16]) -> Vec<u8> {
        let (t, c) = if self.rng.pct(75) {
            (2, 0)
        } else {
            self.rng.pick(&[(1, 4), (3, 0), (128, 0), (129, 0), (4, 0)])
        };
        let mut icmp = vec![t, c, 0, 0, 0, 0, 0x05, 0x00];
        let qsrc = if self.rng.pct(90) { vip } else { self.src6() };
        let client = self.src6();
        let proto = if self.rng.pct(95) {
            self.rng.pick(&[TCP, UDP])
        } else {
            self.rng.byte()
        };
        let (sport, dport) = (self.dport(proto), self.sport());
        let ql4 = self.l4(proto, sport, dport);
        let quoted = self.ipv6(qsrc, client, proto, &ql4);
        let n = if self.rng.pct(80) {
            quoted.len().min(48 + 8 * (self.rng.below(3) as usize))
        } else {
            self.rng.below(quoted.len() as u64 + 1) as usize
        };
        icmp.extend_from_slice(&quoted[..n]);
        icmp
    }

    fn frame(&mut self) -> Vec<u8> {
        let mut f = Vec::with_capacity(160);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
        match self.rng.below(20) {
            0..=13 => {}
            14..=15 => f.extend_from_slice(&[0x81, 0x00, 0x00, self.rng.byte()]),
            16..=17 => f.extend_from_slice(&[0x88, 0xa8, 0x00, self.rng.byte()]),
            _ => f.extend_from_slice(&[0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20]),
        }
        let family = self.rng.below(20);
        let reuse = !self.recent.is_empty() && self.rng.pct(REUSE_PCT);
        let (ethertype, ip) = match family {
            _ if reuse => self.again(),
            0..=9 => {
                let dst = self.dst4();
                let proto = self.proto(ICMP);
                let l4 = if proto == ICMP {
                    self.icmp4(dst)
                } else {
                    let (s, d) = (self.sport(), self.dport(proto));
                    self.l4(proto, s, d)
                };
                let src = self.src4();
                if proto == TCP || proto == UDP {
                    let (s, d) = (be16(&l4, 0), be16(&l4, 2));
                    self.remember(Tuple::V4(src, dst, proto, s, d));
                }
                (0x0800u16, self.ipv4(src, dst, proto, &l4))
            }
            10..=18 => {
                let dst = self.dst6();
                let proto = self.proto(ICMP6);
                let l4 = if proto == ICMP6 {
                    self.icmp6(dst)
                } else {
                    let (s, d) = (self.sport(), self.dport(proto));
                    self.l4(proto, s, d)
                };
                let src = self.src6();
                if proto == TCP || proto == UDP {
                    let (s, d) = (be16(&l4, 0), be16(&l4, 2));
                    self.remember(Tuple::V6(src, dst, proto, s, d));
                }
                (0x86dd, self.ipv6(src, dst, proto, &l4))
            }
            _ => {
                let n = self.rng.below(64) as usize;
                (
                    self.rng.pick(&[0x0806, 0x88cc, 0x8847, 0x0800, 0x86dd]),
                    self.rng.bytes(n),
                )
            }
        };
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&ip);
        // Mutations: truncation anywhere, flipped bytes, Ethernet padding.
        if self.rng.pct(10) {
            let n = 14 + self.rng.below((f.len() - 14) as u64 + 1) as usize;
            f.truncate(n);
        }
        if self.rng.pct(8) {
            for _ in 0..1 + self.rng.below(3) {
                let i = 12 + self.rng.below((f.len() - 12) as u64) as usize;
                f[i] ^= 1 << self.rng.below(8);
            }
        }
        if f.len() < 60 && self.rng.pct(30) {
            f.resize(60, 0);
        }
        f
    }
}

struct Env {
    dp: DataPlane,
    _fs: TempBpffs,
}

impl Env {
    fn new(frames: usize) -> Env {
        require_root();
        let fs = TempBpffs::new().expect("mount a private bpffs");
        // Flow tables far larger than the flows a run makes (some 3% of
        // its frames): an eviction would let a flow move, which the
        // model does not know.
        let flows = (frames as u32 / 4)
            .next_power_of_two()
            .clamp(1 << 16, 1 << 20);
        let sizes = MapSizes {
            flows_tcp4: flows,
            flows_tcp6: flows,
            flows_udp4: flows,
            flows_udp6: flows,
            ..MapSizes::small()
        };
        let mut dp = DataPlane::open(&fs.path().join("vc5"), sizes).expect("load vc5");
        // No insert limit: the model does not count inserts per tick.
        dp.set_insert_limit(0).expect("insert_limit");
        // The program runs on the calling CPU: on CPU 0 only, its sample
        // counter (0 in fresh maps) counts every packet of the run.
        pin_to_cpu(0);
        Env { dp, _fs: fs }
    }

    fn run(&mut self, input: &[u8]) -> (u32, Vec<u8>) {
        vc5_testkit::xdp::test_run(&mut self.dp, input)
    }

    /// A sweep of the flow tables; false when there was nothing to sweep.
    fn sweep(&mut self) -> bool {
        let Some(sw) = self.dp.sweep_begin().expect("sweep") else {
            return false;
        };
        let r = sw.run();
        self.dp.sweep_end(r).expect("sweep end");
        true
    }

    fn reasons(&self) -> HashMap<Reason, (u64, u64)> {
        let s = self.dp.stats().expect("stats");
        s.global
            .iter()
            .filter(|(_, c)| c.packets != 0)
            .map(|(r, c)| (*r, (c.packets, c.bytes)))
            .collect()
    }
}

fn hex(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the program's answer for one frame against the model's.
fn check(
    model_v: &Verdict,
    input: &[u8],
    rv: u32,
    out: &[u8],
    specs: &[ServiceSpec],
) -> Result<(), String> {
    let expect = match model_v {
        Verdict::Pass(_) => (XDP_PASS, Some(input.to_vec())),
        Verdict::Drop(_) => (XDP_DROP, None),
        Verdict::Real(a, r) => {
            let l2 = specs
                .iter()
                .flat_map(|s| s.reals.iter())
                .find(|x| x.addr == *a)
                .and_then(|x| x.l2)
                .unwrap();
            let mut o = input.to_vec();
            o[..6].copy_from_slice(&l2.mac);
            o[6..12].copy_from_slice(&l2.src_mac);
            let v = if *r == Reason::Redirect {
                XDP_REDIRECT
            } else {
                XDP_TX
            };
            (v, Some(o))
        }
    };
    if rv != expect.0 {
        return Err(format!(
            "verdict {rv}, model {model_v:?} (verdict {})",
            expect.0
        ));
    }
    if let Some(o) = expect.1
        && o != out
    {
        return Err(format!(
            "output frame differs for {model_v:?}:\n  got    {}\n  wanted {}",
            hex(out),
            hex(&o)
        ));
    }
    Ok(())
}

/// Where frame `i` of `frames` falls in the run's phases.
fn phase(i: usize, frames: usize) -> &'static str {
    match (6 * i) / frames.max(1) {
        0 | 1 => "config A",
        2 => "config B",
        3 => "config B, after a sweep",
        4 => "config A again",
        _ => "config A again, after a sweep",
    }
}

/// How a batch's reason-counter mismatch starts.
const COUNTERS: &str = "reason counters";

/// Totals a run compares at its end.
#[derive(Debug, Default)]
struct Summary {
    reasons: HashMap<Reason, (u64, u64)>,
    flows: usize,
    events: u64,
    inserts: Inserts,
}

/// Runs `frames` frames from `seed`; the reason counters are compared
/// every `every` frames (1 pins a mismatch to its frame).
fn fuzz(seed: u64, frames: usize, every: usize, sync: bool) -> Result<Summary, String> {
    let mut env = Env::new(frames);
    env.dp.set_sync_on(sync).expect("sync_status");
    let mut frames_gen = Gen::new(seed);
    let specs = config_a();
    env.dp.program(&specs).expect("program");
    let mut model = Model::new(specs, &env.dp);
    for i in 0..frames {
        // Phases: config A; B (a real drained, one failed, one added); a
        // sweep of the flow tables (which clears the moved marks no flow
        // needs); A again (the drained real serves, the failed one is back,
        // the added one gone); another sweep.
        if i == frames / 3 || i == 2 * frames / 3 {
            let c = if i == frames / 3 {
                config_b()
            } else {
                config_a()
            };
            env.dp.program(&c).expect("reprogram");
            model
                .reprogram(c, &env.dp)
                .map_err(|e| format!("before frame {i} ({}): {e}", phase(i, frames)))?;
        }
        if (i == frames / 2 || i == 5 * frames / 6) && env.sweep() {
            model
                .swept(&env.dp)
                .map_err(|e| format!("sweep before frame {i} ({}): {e}", phase(i, frames)))?;
        }
        let f = frames_gen.frame();
        let want = model.verdict(&f);
        let (rv, out) = env.run(&f);
        let at = |e: String| {
            format!(
                "frame {i} ({}): {e}\n  input  {}",
                phase(i, frames),
                hex(&f)
            )
        };
        if let Some(e) = model.broken.take() {
            return Err(at(e));
        }
        check(&want, &f, rv, &out, &model.specs).map_err(at)?;
        if (i + 1) % every == 0 || i + 1 == frames {
            let got = env.reasons();
            if got != model.reasons {
                return Err(format!(
                    "{COUNTERS} after frame {i} ({}):\n  program {got:?}\n  model   {:?}",
                    hex(&f),
                    model.reasons
                ));
            }
        }
    }
    // Per real and per service counters, summed over the whole run.
    let stats = env.dp.stats().expect("stats");
    for s in &stats.services {
        let id = (s.vip, s.port, s.proto);
        let d = model.drops.get(&id).copied().unwrap_or_default();
        if (s.dropped.packets, s.dropped.bytes) != d {
            return Err(format!(
                "service_drops of {id:?}: {:?}, model {d:?}",
                s.dropped
            ));
        }
        for r in &s.reals {
            let m = model
                .per_real
                .get(&(id, r.addr))
                .copied()
                .unwrap_or_default();
            let c = r.counters;
            if (c.packets, c.bytes, c.new_flows) != m {
                return Err(format!(
                    "counters of {} in {id:?}: {c:?}, model (packets, bytes, new flows) {m:?}\n  \
                     flows the model has and the program not: {:?}",
                    r.addr,
                    lost_flows(&env.dp, &model)
                ));
            }
        }
    }
    // Flow events: one per flow inserted or re-pinned (the model's new
    // flows; no flow is restored from a cache, taken over or refreshed in
    // a run whose clock stands still and whose peer tables are empty).
    let new_flows: u64 = model.per_real.values().map(|m| m.2).sum();
    let data = MapData::from_pin(env.dp.dir().join("maps/flow_events")).expect("ring pin");
    let mut rb = RingBuf::try_from(Map::RingBuf(data)).expect("ring");
    let mut events = 0u64;
    while let Some(item) = rb.next() {
        let e = FlowEvent::from_bytes(&item).ok_or("a short flow event")?;
        if e.kind != EVENT_NEW && e.kind != EVENT_REPIN {
            return Err(format!("unexpected flow event {e:?}"));
        }
        events += 1;
    }
    let lost = env.dp.flow_events_lost().expect("flow_events_lost");
    let want = if sync { new_flows } else { 0 };
    if events + lost != want {
        return Err(format!(
            "flow events with sync {}: {events} read + {lost} lost, {want} expected",
            if sync { "on" } else { "off" }
        ));
    }
    Ok(Summary {
        reasons: model.reasons,
        flows: model.flows.len(),
        events,
        inserts: model.inserts,
    })
}

/// Up to ten flows of the model that the program's flow tables lack.
fn lost_flows(dp: &DataPlane, model: &Model) -> Vec<String> {
    let mut lost = Vec::new();
    for (k, real) in &model.flows {
        let (proto, c, v, sport, dport) = *k;
        let tcp = proto == TCP;
        let have = match (ip_of(&c), ip_of(&v)) {
            (IpAddr::V4(c4), IpAddr::V4(v4)) => dp.flow4(
                tcp,
                &Flow4 {
                    saddr: u32::from_ne_bytes(c4.octets()),
                    daddr: u32::from_ne_bytes(v4.octets()),
                    sport: sport.to_be(),
                    dport: dport.to_be(),
                },
            ),
            _ => dp.flow6(
                tcp,
                &Flow6 {
                    saddr: c,
                    daddr: v,
                    sport: sport.to_be(),
                    dport: dport.to_be(),
                },
            ),
        };
        if have.is_none() && lost.len() < 10 {
            lost.push(format!(
                "{proto} {} {sport} -> {} {dport} on {real}",
                ip_of(&c),
                ip_of(&v)
            ));
        }
    }
    lost
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    Some(
        match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16),
            None => v.parse(),
        }
        .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
    )
}

#[test]
fn program_matches_the_policy_model() {
    let seed = env_u64("VC5_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let frames = env_u64("VC5_FUZZ_FRAMES").unwrap_or(100_000) as usize;
    eprintln!("differential fuzz: VC5_FUZZ_SEED={seed:#x} VC5_FUZZ_FRAMES={frames}");
    let run = |sync: bool| {
        let tag = if sync { "sync on" } else { "sync off" };
        match fuzz(seed, frames, 1000, sync) {
            Ok(s) => s,
            Err(e) if e.starts_with(COUNTERS) => {
                // Counters are read once per batch: replay, reading them
                // after every frame, to name the frame whose reason differs.
                let exact = match fuzz(seed, frames, 1, sync) {
                    Err(e) => e,
                    Ok(_) => "replay did not reproduce".into(),
                };
                panic!(
                    "VC5_FUZZ_SEED={seed:#x} VC5_FUZZ_FRAMES={frames} ({tag}): {e}\nreplay: {exact}"
                );
            }
            Err(e) => panic!("VC5_FUZZ_SEED={seed:#x} VC5_FUZZ_FRAMES={frames} ({tag}): {e}"),
        }
    };
    let summary = run(false);
    eprintln!(
        "flows: {}, {:?}, reasons: {:?}",
        summary.flows, summary.inserts, summary.reasons
    );
    let synced = run(true);
    eprintln!("sync on: {} flow events", synced.events);
    assert_eq!(
        synced.reasons, summary.reasons,
        "sync on changes no verdict"
    );
    assert!(
        frames < 20_000 || synced.events > 0,
        "the run with sync on reported no flow"
    );
    // Each way a flow comes to be must happen, or its rule goes untested.
    let ins = summary.inserts;
    for (what, n) in [
        ("inserted after a pending SYN", ins.pending),
        ("inserted by a sampled packet", ins.sampled),
        ("inserted by its first UDP packet", ins.udp),
        ("re-pinned", ins.repinned),
    ] {
        assert!(
            frames < 20_000 || n > 0,
            "no flow was {what} (seed {seed:#x})"
        );
    }
    // The generator must reach every verdict, or the comparison is hollow.
    for r in [
        Reason::PassNotIp,
        Reason::PassShort,
        Reason::PassNotVip,
        Reason::Tx,
        Reason::Redirect,
        Reason::DropFragment,
        Reason::DropMalformed,
        Reason::DropNoBackend,
        Reason::IcmpTx,
    ] {
        let n = summary.reasons.get(&r).map_or(0, |c| c.0);
        assert!(
            frames < 20_000 || n >= 100,
            "only {n} frames had reason {r:?} (seed {seed:#x})"
        );
    }
}
