//! vc5-bench: per-packet cost of the XDP program by `BPF_PROG_TEST_RUN`,
//! for the cases an operator meets (design.md §4), each beside the floor.
//!
//! Every case is measured in rounds, one run of each case per round, the
//! floor program (swap MACs, XDP_TX) among them, so that a burst of other
//! load on the machine falls on every case alike; the median of RUNS
//! rounds is shown. A run is REPEAT repetitions of one frame (INSERT_REPEAT
//! for the inserting cases), and every repetition's verdict is the
//! expected one (the kernel returns the last; each repetition sees the same
//! program and maps, and the post-run checks below count what they did).
//!
//! Wrappers (vc5.c, `VC5_BENCH`): test_run repeats one frame, so
//! - `vc5_bench_fresh` gives each repetition a new client address
//!   (10.0.0.0 | counter): every repetition is a new flow;
//! - `vc5_bench_pick` gives each a client address 11.0.0.0 + i, i a
//!   multiplicative hash of a counter scaled to `bench_flows[0]` = N: a
//!   random flow among N, all of them put in the flow table beforehand.
//!
//! Both cost a map lookup and a write of the frame, which the "random of
//! 1" row shows beside "1 flow". For IPv6 they set the source address's
//! last 32 bits; a VLAN tag is skipped.
//!
//! Cases, by the data plane (maps of its own, 100 TCP/IPv4 services of 16
//! reals, one IPv6 and one UDP service, all buckets clean unless said):
//! - main (`vc5_bench.o`): not a VIP (XDP_PASS); established TCP, 1 flow
//!   (the same ACK repeated; IPv4, 802.1Q-tagged, IPv6; UDP); random of 1,
//!   10,000 and 1,000,000 (pick; IPv4 TCP, IPv6 TCP, IPv4 UDP); SYN of a
//!   new flow (fresh). The flows are written into the flow tables from
//!   user space (through the mapped tables, where the program would put
//!   them), each pinned to its bucket's real and stamped with the clock, as
//!   the program would have inserted them, so that the sampled lookup (1
//!   packet in 64) finds them. The flow tables are the production ones,
//!   except that IPv6 TCP and IPv4 UDP hold 2^21 flows like IPv4 TCP: the
//!   1,000,000-flow rows half fill each. The SYNs'
//!   pending marks are cleared after each SYN run, so that no ACK of the
//!   other cases takes one for its own.
//! - moved (`vc5_bench.o`): 1,000,000 flows put in as above, then every
//!   real of every service drained and as many new ones added, so every
//!   bucket is marked moved (the state after a table change, until the
//!   sweep): a random flow of the 1,000,000 must be looked up in the table,
//!   and the flow cache mostly misses. Also the SYN of a new flow there,
//!   which looks up the cache, the flow table and the peers' table, and misses.
//! - inserting packet (`vc5_pending_bench.o`, where every packet that may
//!   insert counts as the first after its SYN, so each fresh ACK inserts
//!   its flow by the blind-insert path): into a never-used table (fresh
//!   maps); into a recycled one (filled to 90 % from user space, then every
//!   flow deleted: the inserts reuse freed ways); into a full one (every
//!   way holding a flow stamped VC5_EVICT_AGE ago: inserts evict). The
//!   insert bound
//!   is off (the clock stands still here, and it would refuse inserts
//!   after 100,000 in a tick).
//! - sampled insert (`vc5_sample_bench.o`, every packet sampled): a fresh
//!   ACK of a flow whose handshake this host did not see: a lookup that
//!   misses, then the insert.
//! - refused (`vc5_pending_bench.o`, bound of 1 insert per second's
//!   window, spent before the runs): the inserting packet forwarded by the
//!   table without an insert (each window the run crosses admits one).
//! - Flow sync (issue 9): established (1 flow) and SYN again "before flow
//!   sync" (`vc5_nosync_bench.o`, the program built without it) and
//!   "after, flow sync on" (`sync_status[0].on` = 1 and a thread that
//!   drains the flow-events ring the way vc5-flowsync does, waiting in
//!   poll(2) on its fd or a 5 ms timer); the inserting packet with flow
//!   sync on (`vc5_pending_bench.o` and a drain). The unmarked rows are
//!   "after, flow sync off".
//!
//! - Probes through the VIP (issue 12): not a VIP again "before probes"
//!   (`vc5_noprobe_bench.o`, without the reply lookup) and "probes on, to
//!   the probes' source" (a probe namespace configured with the frame's
//!   destination as the probes' source: the reply lookup runs and misses),
//!   and "probes on, to another address" (the same program, a frame to
//!   another address: the comparison with the source only).
//!   The unmarked row has probes off (no namespace: one array read).
//! - Tunnels and VLANs (issue 12; `vc5_bench.o`, maps of their own, one
//!   service per way out, one real each, the flow in the table): an
//!   established ACK (70 bytes) by IPIP, GRE, FOU, GUE (IPv4 VIP, IPv4
//!   real) and GUE to an IPv6 real; layer 2 with the tag rewritten to
//!   the real's VID, pushed, removed. These move the frame's head, which
//!   test_run does not put back between repetitions, so they run under
//!   `vc5_bench_restore` (vc5.c), which restores the frame (its length,
//!   then its first 64 bytes) before each; its own cost is the "restoring
//!   wrapper" row (a layer-2 flow, nothing to undo), plus one
//!   bpf_xdp_adjust_head where there is a move to undo. Before the rounds,
//!   1,000 repetitions must leave the frame one leaves. The rewrite of a
//!   tag alone ("the real's VID put in") needs no wrapper: each repetition
//!   finds the VID the one before wrote and takes the same path.
//!
//! After the rounds the benchmark checks what the repetitions did: the
//! inserting data planes counted exactly RUNS × INSERT_REPEAT new flows and
//! refused none, the refused one refused every repetition but one per
//! window crossed, the main and
//! moved ones inserted nothing (every ACK found its flow), no clean
//! bucket got marked moved, and the flows put in are still there.
//!
//! Timing (design.md §4): every program measured is attached (generic
//! mode) to a veth of its own in a private network namespace, so that
//! BPF_PROG_TEST_RUN finds it in the kernel's XDP dispatcher instead of
//! adding and removing it around every run (which costs RCU grace periods
//! per run, milliseconds of wall time); and each run is timed here around
//! the system call, in ns per repetition with a fraction, since the
//! kernel's own figure is truncated to whole ns.
//!
//! `--json` prints one line for machines: `<case>_ns` for every row, the
//! flow-sync event counts and the control plane's ms.

use anyhow::{Context, Result, ensure};
use aya::maps::{Array, Map, MapData, RingBuf};
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use vc5_testkit::require_root;
use vc5_testkit::xdp::{Frame, TCP_ACK, TCP_SYN, TempBpffs, pin_to_cpu};
use vc5_xdp::dataplane::{
    FLOOR_OBJ, TCP, UDP, VC5_BENCH_OBJ, VC5_NOPROBE_BENCH_OBJ, VC5_NOSYNC_BENCH_OBJ,
    VC5_PENDING_BENCH_OBJ, VC5_SAMPLE_BENCH_OBJ,
};
use vc5_xdp::flowtable::Put;
use vc5_xdp::hash::flow_hash;
use vc5_xdp::maps::{EVICT_AGE, Flow4, Flow6, TABLE_SIZE, Table, addr16};
use vc5_xdp::{DataPlane, L2, MapSizes, RealMode, RealSpec, ServiceSpec};

const RUNS: usize = 11;
const REPEAT: u32 = 200_000;
/// Repetitions of a run that inserts: RUNS × this stays well below CPU 0's
/// share of the flow table (2^20), so a never-used table never runs out
/// of never-used entries.
const INSERT_REPEAT: u32 = 50_000;
/// Flows of the largest "random of" case.
const MANY: u32 = 1_000_000;
/// How long the ring's reader sleeps at most: the program wakes it only
/// when 256 events are unread, so, like vc5-flowsync, it also drains on a
/// timer.
const DRAIN_MS: i32 = 5;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
/// The wrappers' client addresses (their last 32 bits): vc5_bench_fresh's
/// and vc5_bench_pick's, and the benchmark's own fillers of whole tables.
const FRESH: u32 = 0x0a00_0000;
const PICK: u32 = 0x0b00_0000;
const FILLER: u32 = 0x0c00_0000;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// One run of `repeat` repetitions: ns per repetition, timed around the
/// system call (whose own cost, a microsecond or two, is spread over the
/// repetitions).
fn once(prog: &mut Xdp, frame: &[u8], repeat: u32, expect: u32) -> Result<f64> {
    Ok(once_out(prog, frame, repeat, expect)?.0)
}

/// [`once`], and the frame the last repetition left.
fn once_out(prog: &mut Xdp, frame: &[u8], repeat: u32, expect: u32) -> Result<(f64, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut o = TestRunOptions::new();
    o.data_in = Some(frame);
    o.data_out = Some(&mut out);
    o.repeat = repeat;
    let t = std::time::Instant::now();
    let r = prog.test_run(o).context("BPF_PROG_TEST_RUN")?;
    let ns = t.elapsed().as_nanos() as f64 / repeat as f64;
    ensure!(
        r.return_value == expect,
        "verdict {} where {expect} was expected",
        r.return_value
    );
    out.truncate(r.data_size_out as usize);
    Ok((ns, out))
}

/// `vc5_bench_restore`'s copy of the frame (vc5.c's struct
/// vc5_bench_frame): its length, 4 bytes of padding, its first
/// RESTORE_HEAD bytes.
const RESTORE_HEAD: usize = 64;
type BenchFrame = [u8; 8 + RESTORE_HEAD];

/// A private network namespace whose veths hold the measured programs in
/// the XDP dispatcher (see the module's "Timing"); removed on drop, which
/// also removes the veths.
struct Holder {
    ns: vc5_testkit::flowsync::Netns,
    n: usize,
}

impl Holder {
    fn new() -> Holder {
        let ns = vc5_testkit::flowsync::Netns::new("vc5b").expect("a namespace");
        Holder { ns, n: 0 }
    }

    /// Attaches `prog` (generic mode) to a new veth that stays down.
    fn hold(&mut self, prog: &mut Xdp) -> Result<()> {
        self.n += 1;
        let (a, b) = (format!("h{}", self.n), format!("g{}", self.n));
        self.ns
            .exec(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])
            .unwrap();
        self.ns.run_in(|| -> Result<()> {
            let ifindex = vc5_xdp::flowsync::net::ifindex(&a).context("the holder veth")?;
            prog.attach_to_if_index(ifindex, XdpMode::Skb)
                .context("attaching a measured program to its holder veth")?;
            Ok(())
        })
    }
}

fn median(mut ns: Vec<f64>) -> f64 {
    ns.sort_by(|a, b| a.total_cmp(b));
    ns[ns.len() / 2]
}

/// The runs of every case, by its key.
#[derive(Default)]
struct Samples(BTreeMap<&'static str, Vec<f64>>);

impl Samples {
    fn add(&mut self, key: &'static str, ns: f64) {
        self.0.entry(key).or_default().push(ns);
    }
}

/// What a row is held to (design.md §4).
#[derive(Clone, Copy)]
enum Target {
    None,
    /// At most this many times the floor.
    Floor(f64),
    /// At most this many ns.
    Ns(f64),
}

/// The rows as printed: label, key (`<key>_ns` in the JSON), target.
const ROWS: &[(&str, &str, Target)] = &[
    ("floor (swap MACs, XDP_TX)", "floor", Target::None),
    ("not a VIP (XDP_PASS)", "not_vip", Target::Floor(1.5)),
    (
        "  before probes through the VIP",
        "not_vip_noprobe",
        Target::Floor(1.5),
    ),
    (
        "  probes on, to another address",
        "not_vip_probe_other",
        Target::Floor(1.5),
    ),
    (
        "  probes on, to the probes' source",
        "not_vip_probe_src",
        Target::None,
    ),
    ("established TCP, 1 flow", "established", Target::Floor(3.0)),
    (
        "  before flow sync",
        "established_nosync",
        Target::Floor(3.0),
    ),
    (
        "  after, flow sync on",
        "established_sync",
        Target::Floor(3.0),
    ),
    ("  802.1Q-tagged", "established_vlan", Target::Floor(3.0)),
    (
        "  802.1Q, the real's VID put in",
        "vlan_rewrite_direct",
        Target::Floor(3.0),
    ),
    ("  IPv6", "established_v6", Target::Floor(3.0)),
    (
        "established TCP, restoring wrapper",
        "restore_l2",
        Target::None,
    ),
    ("  IPIP", "tunnel_ipip", Target::None),
    ("  GRE", "tunnel_gre", Target::None),
    ("  FOU", "tunnel_fou", Target::None),
    ("  GUE", "tunnel_gue", Target::None),
    ("  GUE, IPv6 outer", "tunnel_gue6", Target::None),
    (
        "  VLAN rewrite (tagged, other VID)",
        "vlan_rewrite",
        Target::None,
    ),
    (
        "  VLAN push (untagged in, tagged out)",
        "vlan_push",
        Target::None,
    ),
    (
        "  VLAN pop (tagged in, untagged out)",
        "vlan_pop",
        Target::None,
    ),
    ("established UDP, 1 flow", "established_udp", Target::None),
    (
        "established TCP, random of 1",
        "established_random1",
        Target::None,
    ),
    ("  random of 10,000", "established_10k", Target::None),
    ("  random of 1,000,000", "established_1m", Target::Ns(40.0)),
    (
        "  IPv6, random of 1,000,000",
        "established_v6_1m",
        Target::Ns(40.0),
    ),
    (
        "  every bucket moved, of 1,000,000",
        "established_1m_moved",
        Target::None,
    ),
    (
        "established UDP, random of 1,000,000",
        "established_udp_1m",
        Target::None,
    ),
    ("SYN of a new flow", "new_flow", Target::Floor(4.0)),
    ("  before flow sync", "syn_nosync", Target::Floor(4.0)),
    ("  after, flow sync on", "syn_sync", Target::Floor(4.0)),
    ("  its bucket moved", "new_flow_moved", Target::None),
    (
        "inserting packet, never-used table",
        "insert_fresh",
        Target::Ns(200.0),
    ),
    ("  recycled table", "insert_recycled", Target::Ns(200.0)),
    ("  full table (evicts)", "insert_full", Target::Ns(200.0)),
    (
        "  never-used, flow sync on",
        "insert_sync",
        Target::Ns(200.0),
    ),
    (
        "sampled packet inserting (no SYN seen)",
        "insert_sampled",
        Target::Ns(200.0),
    ),
    (
        "insert refused by the bound",
        "insert_refused",
        Target::None,
    ),
];

fn main() -> Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    require_root();
    // One CPU for every case: the per-CPU flow caches and LRU lists and
    // the CPU's own caches are then the same for all, and migrations add
    // no noise.
    pin_to_cpu(0);
    let fs = TempBpffs::new().context("mounting a private bpffs")?;

    let mut floor = aya::Ebpf::load(FLOOR_OBJ).context("loading the floor program")?;
    let fp: &mut Xdp = floor
        .program_mut("vc5_floor")
        .context("no vc5_floor")?
        .try_into()?;
    fp.load()?;

    let services = services();
    let client = ip("198.51.100.7");
    let vip = ip("192.0.2.1");
    let est = Frame::tcp(client, 40000, vip, 80, TCP_ACK);
    let syn = Frame::tcp(client, 40000, vip, 80, TCP_SYN);
    let not_vip = Frame::tcp(client, 40000, ip("192.0.2.200"), 80, TCP_ACK);
    let other_b = Frame::tcp(client, 40000, ip("192.0.2.201"), 80, TCP_ACK).build();
    let vlan = Frame {
        vlan: Some(100),
        ..est.clone()
    };
    let v6 = Frame::tcp(ip("2001:db8:100::7"), 40000, ip("2001:db8::1"), 80, TCP_ACK);
    let udp = Frame::udp(client, 40000, vip, 53);
    let [est_b, syn_b, not_vip_b, vlan_b, v6_b, udp_b] =
        [&est, &syn, &not_vip, &vlan, &v6, &udp].map(Frame::build);
    // Tunnels and VLANs (encap_services): one established flow each, its
    // frame at least RESTORE_HEAD bytes long; with the growth or loss of
    // its frame.
    let enc = |vip: &str, vlan: Option<u16>| Frame {
        vlan,
        payload: vec![0x5a; 16],
        ..Frame::tcp(client, 40000, ip(vip), 80, TCP_ACK)
    };
    let encap_cases: Vec<(&'static str, Frame, isize)> = vec![
        ("restore_l2", enc("192.0.2.108", None), 0),
        ("tunnel_ipip", enc("192.0.2.101", None), 20),
        ("tunnel_gre", enc("192.0.2.102", None), 24),
        ("tunnel_fou", enc("192.0.2.103", None), 28),
        ("tunnel_gue", enc("192.0.2.104", None), 32),
        ("tunnel_gue6", enc("192.0.2.105", None), 52),
        ("vlan_rewrite", enc("192.0.2.106", Some(100)), 0),
        ("vlan_push", enc("192.0.2.106", None), 4),
        ("vlan_pop", enc("192.0.2.107", Some(100)), -4),
    ];
    let encap_b: Vec<(&'static str, Vec<u8>)> = encap_cases
        .iter()
        .map(|(k, f, _)| (*k, f.build()))
        .collect();
    let rewrite_b = encap_cases[6].1.build();

    // Production sizes (2^21 TCP/IPv4 flows); the others at 2^21 only
    // where a case puts 1,000,000 flows on one CPU, and small where no
    // case uses them.
    let prod = MapSizes::default();
    let main_sizes = MapSizes {
        flows_tcp6: 1 << 21,
        flows_udp4: 1 << 21,
        ..prod
    };
    let tcp4_only = MapSizes {
        flows_tcp6: 4096,
        flows_udp4: 4096,
        flows_udp6: 4096,
        ..prod
    };
    let tiny = MapSizes {
        flows_tcp4: 4096,
        ..tcp4_only
    };
    let capacity = prod.flows_tcp4 as usize;

    let mut base = Variant::open(&fs, "main", main_sizes, VC5_BENCH_OBJ, &services, false)?;
    let mut left_out = 0;
    for f in [&est, &v6, &udp] {
        ensure!(fill(&base.dp, f, std::iter::once(f.src))? == 0);
        left_out += fill(&base.dp, f, (0..MANY).map(|i| client_addr(f.src, PICK + i)))?;
    }

    let mut encap = Variant::open(&fs, "encap", tiny, VC5_BENCH_OBJ, &encap_services(), false)?;
    for (key, f, grows) in &encap_cases {
        ensure!(fill(&encap.dp, f, std::iter::once(f.src))? == 0);
        // The wrapper puts the frame back: 1,000 repetitions leave what
        // one does, grown or shrunk as the case says.
        let b = f.build();
        let (_, one) = encap.restore(&b, 1)?;
        let (_, many) = encap.restore(&b, 1_000)?;
        ensure!(
            one == many && one.len() as isize == b.len() as isize + grows,
            "{key}: the restoring wrapper does not restore the frame"
        );
    }

    let mut moved = Variant::open(&fs, "moved", tcp4_only, VC5_BENCH_OBJ, &services, false)?;
    left_out += fill(
        &moved.dp,
        &est,
        (0..MANY).map(|i| client_addr(est.src, PICK + i)),
    )?;
    // At half the capacity some 2 flows in 10,000 find both sets full.
    ensure!(
        left_out * 1_000 <= 4 * MANY as usize,
        "{left_out} of 4,000,000 flows found both their sets full"
    );
    moved
        .dp
        .program(&all_moved(&services))
        .context("programming the moved services")?;
    ensure!(
        kernel_moved(&moved.dp, &est)? == TABLE_SIZE,
        "not every bucket is marked moved"
    );

    let mut nosync = Variant::open(
        &fs,
        "nosync",
        tcp4_only,
        VC5_NOSYNC_BENCH_OBJ,
        &services,
        false,
    )?;
    let mut sync = Variant::open(&fs, "sync", tcp4_only, VC5_BENCH_OBJ, &services, true)?;
    // Probes through the VIP: the program without them, and one whose
    // probe namespace is set up with the not-a-VIP frame's destination as
    // the probes' source, so that every such packet looks for a reply.
    let mut noprobe = Variant::open(
        &fs,
        "noprobe",
        tcp4_only,
        VC5_NOPROBE_BENCH_OBJ,
        &services,
        false,
    )?;
    let mut probes = Variant::open(&fs, "probes", tcp4_only, VC5_BENCH_OBJ, &services, false)?;
    probes
        .dp
        .set_probe_config(Some(&vc5_xdp::dataplane::ProbeConfig {
            host_ifindex: 1,
            host_mac: [2, 0, 0, 0, 0, 1],
            ns_mac: [2, 0, 0, 0, 0, 2],
            trunk: 1,
            src4: Some("192.0.2.200".parse()?),
            src6: None,
        }))?;
    for v in [&nosync, &sync] {
        ensure!(fill(&v.dp, &est, std::iter::once(est.src))? == 0);
    }

    let pending = VC5_PENDING_BENCH_OBJ;
    let mut fresh = Variant::open(&fs, "fresh", tcp4_only, pending, &services, false)?;
    let mut recycled = Variant::open(&fs, "recycled", tcp4_only, pending, &services, false)?;
    let fillers = |n: usize| (0..n as u32).map(|i| client_addr(est.src, FILLER + i));
    let recycle = capacity * 9 / 10;
    let _ = fill(&recycled.dp, &est, fillers(recycle))?;
    let t = recycled.dp.flow_table4(true);
    for a in fillers(recycle) {
        t.remove(&key4(&est, a));
    }
    ensure!(t.is_empty(), "the recycled table kept flows");
    // Every way taken by a flow old enough to evict: offered twice
    // the capacity, two full sets evict their oldest (all equally old).
    let mut full = Variant::open(&fs, "full", tcp4_only, pending, &services, false)?;
    let old = (full.dp.clock() as u16).wrapping_sub(EVICT_AGE as u16);
    let t = full.dp.flow_table4(true);
    let table = full
        .dp
        .table(est.dst, est.dport, est.proto)
        .context("no table")?;
    for a in fillers(capacity * 2) {
        let h = flow_hash(
            &addr16(a),
            &addr16(est.dst),
            est.sport.to_be(),
            est.dport.to_be(),
            TCP,
        );
        let backend = table.backend[h as usize & (TABLE_SIZE - 1)];
        t.insert(&key4(&est, a), backend, old);
    }
    let held = t.len();
    ensure!(
        held >= capacity * 99 / 100,
        "the full table holds {held} of {capacity} flows"
    );
    let mut ins_sync = Variant::open(&fs, "ins_sync", tcp4_only, pending, &services, true)?;
    let mut sampled = Variant::open(
        &fs,
        "sampled",
        tcp4_only,
        VC5_SAMPLE_BENCH_OBJ,
        &services,
        false,
    )?;
    for v in [
        &mut fresh,
        &mut recycled,
        &mut full,
        &mut ins_sync,
        &mut sampled,
    ] {
        v.dp.set_insert_limit(0)?;
    }
    let mut refused = Variant::open(&fs, "refused", tiny, pending, &services, false)?;
    refused.dp.set_insert_limit(1)?;
    once(refused.dp.xdp_named("vc5_bench_fresh")?, &est_b, 1, XDP_TX)?;
    ensure!(present(&refused.dp, &est, client_addr(est.src, FRESH + 1))?);

    let mut holder = Holder::new();
    holder.hold(fp)?;
    for v in [
        &mut base,
        &mut nosync,
        &mut sync,
        &mut encap,
        &mut noprobe,
        &mut probes,
    ] {
        holder.hold(v.dp.xdp()?)?;
    }
    holder.hold(encap.dp.xdp_named("vc5_bench_restore")?)?;
    for v in [&mut base, &mut moved] {
        holder.hold(v.dp.xdp_named("vc5_bench_pick")?)?;
    }
    for v in [
        &mut base,
        &mut moved,
        &mut nosync,
        &mut sync,
        &mut fresh,
        &mut recycled,
        &mut full,
        &mut ins_sync,
        &mut sampled,
        &mut refused,
    ] {
        holder.hold(v.dp.xdp_named("vc5_bench_fresh")?)?;
    }

    let mut s = Samples::default();
    for _ in 0..RUNS {
        s.add("floor", once(fp, &est_b, REPEAT, XDP_TX)?);
        let x = base.dp.xdp()?;
        s.add("not_vip", once(x, &not_vip_b, REPEAT, XDP_PASS)?);
        let x = noprobe.dp.xdp()?;
        s.add("not_vip_noprobe", once(x, &not_vip_b, REPEAT, XDP_PASS)?);
        let x = probes.dp.xdp()?;
        s.add("not_vip_probe_src", once(x, &not_vip_b, REPEAT, XDP_PASS)?);
        s.add("not_vip_probe_other", once(x, &other_b, REPEAT, XDP_PASS)?);
        let x = base.dp.xdp()?;
        s.add("established", once(x, &est_b, REPEAT, XDP_TX)?);
        s.add("established_vlan", once(x, &vlan_b, REPEAT, XDP_TX)?);
        s.add("established_v6", once(x, &v6_b, REPEAT, XDP_TX)?);
        s.add("established_udp", once(x, &udp_b, REPEAT, XDP_TX)?);
        // Each repetition finds the VID the one before put in, and takes
        // the same path: no wrapper needed.
        let x = encap.dp.xdp()?;
        s.add("vlan_rewrite_direct", once(x, &rewrite_b, REPEAT, XDP_TX)?);
        for (key, frame) in &encap_b {
            s.add(key, encap.restore(frame, REPEAT)?.0);
        }
        for (key, frame, n) in [
            ("established_random1", &est_b, 1),
            ("established_10k", &est_b, 10_000),
            ("established_1m", &est_b, MANY),
            ("established_v6_1m", &v6_b, MANY),
            ("established_udp_1m", &udp_b, MANY),
        ] {
            s.add(key, base.pick(frame, n)?);
        }
        s.add("established_1m_moved", moved.pick(&est_b, MANY)?);
        s.add("new_flow", base.syn(&syn_b)?);
        s.add("new_flow_moved", moved.syn(&syn_b)?);
        for (est_key, syn_key, v) in [
            ("established_nosync", "syn_nosync", &mut nosync),
            ("established_sync", "syn_sync", &mut sync),
        ] {
            s.add(est_key, once(v.dp.xdp()?, &est_b, REPEAT, XDP_TX)?);
            s.add(syn_key, v.syn(&syn_b)?);
        }
        for (key, v) in [
            ("insert_fresh", &mut fresh),
            ("insert_recycled", &mut recycled),
            ("insert_full", &mut full),
            ("insert_sync", &mut ins_sync),
            ("insert_sampled", &mut sampled),
        ] {
            let x = v.dp.xdp_named("vc5_bench_fresh")?;
            s.add(key, once(x, &est_b, INSERT_REPEAT, XDP_TX)?);
        }
        let x = refused.dp.xdp_named("vc5_bench_fresh")?;
        s.add("insert_refused", once(x, &est_b, REPEAT, XDP_TX)?);
    }

    // What the repetitions did.
    let inserts = (RUNS * INSERT_REPEAT as usize) as u64;
    for (name, v) in [
        ("never-used", &fresh),
        ("recycled", &recycled),
        ("full", &full),
        ("sync on", &ins_sync),
        ("sampled", &sampled),
    ] {
        // Only in the full table may an insert find both sets full of
        // flows seen this tick (the runs' own): refused, counted apart.
        let (_, full_sets) = v.dp.flow_table_pressure()?;
        ensure!(
            new_flows(&v.dp)? + full_sets == inserts
                && v.dp.inserts_refused()? == 0
                && (name == "full" || full_sets == 0),
            "the {name} table: {} flows inserted, {} refused by the bound, {full_sets} by full sets, of {inserts}",
            new_flows(&v.dp)?,
            v.dp.inserts_refused()?
        );
        ensure!(present(&v.dp, &est, client_addr(est.src, FRESH + 1))?);
    }
    let (evicted, refused_full) = full.dp.flow_table_pressure()?;
    ensure!(
        evicted as f64 >= 0.95 * inserts as f64,
        "the full table: {evicted} of {inserts} inserts evicted, {refused_full} refused"
    );
    // One insert per CPU and window of 2^30 ns gets through: the first, and
    // one more for each window the run crossed (a few, on a slow machine).
    let want = (RUNS * REPEAT as usize) as u64;
    let (refusals, admitted) = (refused.dp.inserts_refused()?, new_flows(&refused.dp)?);
    ensure!(
        refusals + admitted == want + 1 && admitted <= 1 + 120,
        "the bound refused {refusals} inserts and admitted {admitted}, of {} packets",
        want + 1
    );
    for (name, v) in [("main", &base), ("moved", &moved), ("encap", &encap)] {
        ensure!(
            new_flows(&v.dp)? == 0,
            "the {name} table inserted {} flows: an ACK missed its flow",
            new_flows(&v.dp)?
        );
    }
    for f in [&est, &v6, &udp] {
        ensure!(
            kernel_moved(&base.dp, f)? == 0,
            "a clean bucket got marked moved"
        );
        for i in [0, MANY / 2, MANY - 1] {
            ensure!(present(&base.dp, f, client_addr(f.src, PICK + i))?);
        }
    }
    ensure!(present(&moved.dp, &est, client_addr(est.src, PICK))?);

    let sync_rows = [sync.close()?, ins_sync.close()?];
    let (events, lost) = (
        sync_rows.iter().map(|r| r.0).sum::<u64>(),
        sync_rows.iter().map(|r| r.1).sum::<u64>(),
    );
    for v in [
        base, moved, nosync, fresh, recycled, full, sampled, refused, encap, noprobe, probes,
    ] {
        v.close()?;
    }
    drop(holder);

    // Control plane: 1,000 services × 64 reals programmed from scratch,
    // then one real of every service failing.
    let cp = control_plane(&fs)?;

    let ns: BTreeMap<&str, f64> = s.0.into_iter().map(|(k, v)| (k, median(v))).collect();
    let floor_ns = ns["floor"];
    if json {
        let mut o = serde_json::Map::new();
        for (_, key, _) in ROWS {
            o.insert(format!("{key}_ns"), ns[key].into());
        }
        o.insert("sync_events_read".into(), events.into());
        o.insert("sync_events_lost".into(), lost.into());
        o.insert("program_1000x64_ms".into(), cp.0.into());
        o.insert("reprogram_one_real_down_ms".into(), cp.1.into());
        println!("{}", serde_json::Value::Object(o));
        return Ok(());
    }
    println!(
        "vc5-bench: BPF_PROG_TEST_RUN, median of {RUNS} runs × {REPEAT} repetitions \
         ({INSERT_REPEAT} when inserting), in rounds over the cases"
    );
    println!(
        "{:<40} {:>8} {:>8} {:>12}",
        "case", "ns/pkt", "× floor", "target"
    );
    for (label, key, target) in ROWS {
        let v = ns[key];
        let ratio = v / floor_ns;
        let (limit, unit, ok) = match *target {
            Target::None => (None, "", true),
            Target::Floor(t) => (Some(t), "×", ratio <= t),
            Target::Ns(t) => (Some(t), " ns", v <= t),
        };
        let t = match limit {
            Some(t) => format!("≤ {t}{unit}{}", if ok { "" } else { " ✗" }),
            None => "-".into(),
        };
        println!("{label:<40} {v:>8.1} {ratio:>8.2} {t:>12}");
    }
    println!(
        "(unmarked rows: after flow sync, off; with it on, {events} flow events were read and {lost} lost)"
    );
    println!();
    println!(
        "control plane: 1,000 services × 64 reals programmed in {:.0} ms",
        cp.0
    );
    println!(
        "               one real of each service down, reprogrammed in {:.0} ms",
        cp.1
    );
    Ok(())
}

/// 100 TCP/IPv4 services of 16 reals (192.0.2.1-10, ports 80-89), one
/// TCP/IPv6 (`[2001:db8::1]:80`) and one UDP/IPv4 (192.0.2.1:53).
fn services() -> Vec<ServiceSpec> {
    let real = |addr: IpAddr, i: u8| RealSpec {
        addr,
        weight: 1,
        mode: RealMode::Serve,
        l2: Some(L2 {
            mac: [2, 0xbb, 0, 0, 0, i],
            src_mac: [2, 0xaa, 0, 0, 0, 1],
            ifindex: 0,
            ..L2::default()
        }),
    };
    let reals4: Vec<RealSpec> = (1..=16)
        .map(|i| real(ip(&format!("203.0.113.{i}")), i))
        .collect();
    let reals6: Vec<RealSpec> = (1..=16)
        .map(|i| real(ip(&format!("2001:db8:1::{i}")), i))
        .collect();
    let mut services: Vec<ServiceSpec> = (0..100u16)
        .map(|i| ServiceSpec {
            vip: ip(&format!("192.0.2.{}", 1 + i / 10)),
            port: 80 + i % 10,
            proto: TCP,
            forward: vc5_xdp::Forward::L2,
            reals: reals4.clone(),
        })
        .collect();
    services.push(ServiceSpec {
        vip: ip("2001:db8::1"),
        port: 80,
        proto: TCP,
        forward: vc5_xdp::Forward::L2,
        reals: reals6,
    });
    services.push(ServiceSpec {
        vip: ip("192.0.2.1"),
        port: 53,
        proto: UDP,
        forward: vc5_xdp::Forward::L2,
        reals: reals4,
    });
    services
}

/// One service per way out, each of one real, for the tunnel and VLAN
/// rows: 192.0.2.101-105 by IPIP, GRE, FOU, GUE (IPv4 reals) and GUE to an
/// IPv6 real; 192.0.2.106 layer 2 to a real on VLAN 200, .107 layer 2 to
/// an untagged real, .108 layer 2 with no VLAN of its own (the frame's tag
/// kept, as the main rows).
fn encap_services() -> Vec<ServiceSpec> {
    use vc5_xdp::Forward;
    let real = |addr: &str, src: Option<&str>, vlan: Option<u16>| RealSpec {
        addr: ip(addr),
        weight: 1,
        mode: RealMode::Serve,
        l2: Some(L2 {
            mac: [2, 0xbb, 0, 0, 0, 1],
            src_mac: [2, 0xaa, 0, 0, 0, 1],
            ifindex: 0,
            src: src.map(ip),
            mtu: 1500,
            vlan,
        }),
    };
    let (r4, s4) = ("203.0.113.101", Some("10.0.0.1"));
    let ways = [
        ("192.0.2.101", Forward::Ipip, real(r4, s4, None)),
        ("192.0.2.102", Forward::Gre, real(r4, s4, None)),
        (
            "192.0.2.103",
            Forward::Fou { port: 5555 },
            real(r4, s4, None),
        ),
        (
            "192.0.2.104",
            Forward::Gue { port: 6666 },
            real(r4, s4, None),
        ),
        (
            "192.0.2.105",
            Forward::Gue { port: 6666 },
            real("2001:db8:99::1", Some("2001:db8:ff::1"), None),
        ),
        ("192.0.2.106", Forward::L2, real(r4, None, Some(200))),
        ("192.0.2.107", Forward::L2, real(r4, None, Some(0))),
        ("192.0.2.108", Forward::L2, real(r4, None, None)),
    ];
    ways.into_iter()
        .map(|(vip, forward, r)| ServiceSpec {
            vip: ip(vip),
            port: 80,
            proto: TCP,
            forward,
            reals: vec![r],
        })
        .collect()
}

/// Every real drained and as many new ones added: every bucket changes
/// real, so every bucket is marked moved, while the old reals still serve
/// their flows.
fn all_moved(services: &[ServiceSpec]) -> Vec<ServiceSpec> {
    services
        .iter()
        .map(|s| {
            let mut s = s.clone();
            let new: Vec<RealSpec> = s
                .reals
                .iter()
                .map(|r| RealSpec {
                    addr: match r.addr {
                        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::new(198, 18, 0, a.octets()[3])),
                        IpAddr::V6(a) => {
                            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, a.segments()[7]))
                        }
                    },
                    ..r.clone()
                })
                .collect();
            for r in &mut s.reals {
                r.mode = RealMode::Drain;
            }
            s.reals.extend(new);
            s
        })
        .collect()
}

/// `template` (the frame's client address) with its last 32 bits `v`, as
/// the wrappers write them.
fn client_addr(template: IpAddr, v: u32) -> IpAddr {
    match template {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v)),
        IpAddr::V6(a) => {
            let mut o = a.octets();
            o[12..].copy_from_slice(&v.to_be_bytes());
            IpAddr::V6(Ipv6Addr::from(o))
        }
    }
}

fn key4(f: &Frame, src: IpAddr) -> Flow4 {
    let v4 = |a: IpAddr| match a {
        IpAddr::V4(a) => u32::from_ne_bytes(a.octets()),
        IpAddr::V6(_) => unreachable!("an IPv4 frame"),
    };
    Flow4 {
        saddr: v4(src),
        daddr: v4(f.dst),
        sport: f.sport.to_be(),
        dport: f.dport.to_be(),
    }
}

fn key6(f: &Frame, src: IpAddr) -> Flow6 {
    Flow6 {
        saddr: addr16(src),
        daddr: addr16(f.dst),
        sport: f.sport.to_be(),
        dport: f.dport.to_be(),
    }
}

/// Puts in the flow table the flows of `f` from each of `srcs`, as the
/// program inserts them: pinned to the bucket's real, stamped with the
/// clock. A
/// few in a million find both their sets full (at half the table's
/// capacity) and stay out, as they would for the program; the rows do not
/// depend on them (such a flow's packets find no entry and insert none).
/// Returns how many stayed out.
fn fill(dp: &DataPlane, f: &Frame, srcs: impl Iterator<Item = IpAddr>) -> Result<usize> {
    let seen = dp.clock() as u16;
    let table = dp.table(f.dst, f.dport, f.proto).context("no table")?;
    let tcp = f.proto == TCP;
    let (t4, t6) = (dp.flow_table4(tcp), dp.flow_table6(tcp));
    let mut full = 0;
    for src in srcs {
        let h = flow_hash(
            &addr16(src),
            &addr16(f.dst),
            f.sport.to_be(),
            f.dport.to_be(),
            f.proto,
        );
        let backend = table.backend[h as usize & (TABLE_SIZE - 1)];
        let put = if f.dst.is_ipv4() {
            t4.insert(&key4(f, src), backend, seen)
        } else {
            t6.insert(&key6(f, src), backend, seen)
        };
        full += (put == Put::Full) as usize;
    }
    Ok(full)
}

/// Whether the flow table holds `f`'s flow from `src`.
fn present(dp: &DataPlane, f: &Frame, src: IpAddr) -> Result<bool> {
    let tcp = f.proto == TCP;
    Ok(if f.dst.is_ipv4() {
        dp.flow4(tcp, &key4(f, src)).is_some()
    } else {
        dp.flow6(tcp, &key6(f, src)).is_some()
    })
}

/// New flows counted over every real of every service.
fn new_flows(dp: &DataPlane) -> Result<u64> {
    Ok(dp
        .stats()?
        .services
        .iter()
        .map(|s| s.counters.new_flows)
        .sum())
}

/// Buckets marked moved in the kernel's table of `f`'s service.
fn kernel_moved(dp: &DataPlane, f: &Frame) -> Result<usize> {
    let index = dp
        .service_index(f.dst, f.dport, f.proto)
        .context("no service")?;
    let map = MapData::from_pin(dp.dir().join("maps/tables")).context("opening tables")?;
    let tables: Array<MapData, Table> = Array::try_from(Map::Array(map))?;
    Ok(tables.get(&(index as u32), 0)?.moved_count())
}

/// A map the program `prog` uses, by name: the wrappers' `bench_flows`
/// and `flow_pending` are not pinned, and DataPlane keeps no handle on them.
fn prog_map(prog: &Xdp, name: &str) -> Result<MapData> {
    for id in prog.info()?.map_ids()?.unwrap_or_default() {
        let map = MapData::from_id(id)?;
        if map.info()?.name_as_str() == Some(name) {
            return Ok(map);
        }
    }
    anyhow::bail!("the program uses no map {name}")
}

/// One build of the program loaded against fresh maps of its own,
/// programmed with the benchmark's services; with `sync`, as while
/// vc5-flowsync runs: events on, and the ring drained by a thread on
/// another CPU that sleeps in poll(2) when it has caught up.
struct Variant {
    dp: DataPlane,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    drain: Option<std::thread::JoinHandle<Result<u64>>>,
}

impl Variant {
    fn open(
        fs: &TempBpffs,
        name: &str,
        sizes: MapSizes,
        object: &[u8],
        services: &[ServiceSpec],
        sync: bool,
    ) -> Result<Variant> {
        let dir = fs.path().join(name);
        let mut dp = DataPlane::open_object(&dir, sizes, object)
            .with_context(|| format!("loading vc5 ({name})"))?;
        dp.program(services).context("programming")?;
        let stop = Arc::new(AtomicBool::new(false));
        let drain = if sync {
            dp.set_sync_on(true)?;
            let pin = dir.join("maps/flow_events");
            let stop = stop.clone();
            Some(std::thread::spawn(move || drain_ring(&pin, &stop)))
        } else {
            None
        };
        Ok(Variant {
            dp,
            dir,
            stop,
            drain,
        })
    }

    /// A run of `vc5_bench_pick` on `frame`: a random flow of `n`.
    fn pick(&mut self, frame: &[u8], n: u32) -> Result<f64> {
        let prog = self.dp.xdp_named("vc5_bench_pick")?;
        let mut flows: Array<MapData, u32> =
            Array::try_from(Map::Array(prog_map(prog, "bench_flows")?))?;
        flows.set(0, n, 0)?;
        once(prog, frame, REPEAT, XDP_TX)
    }

    /// A run of `vc5_bench_restore` on `frame`, which it puts back before
    /// each repetition (bench_frame written first): ns per repetition and
    /// the frame the last one left.
    fn restore(&mut self, frame: &[u8], repeat: u32) -> Result<(f64, Vec<u8>)> {
        let prog = self.dp.xdp_named("vc5_bench_restore")?;
        let mut copy: Array<MapData, BenchFrame> =
            Array::try_from(Map::Array(prog_map(prog, "bench_frame")?))?;
        let mut v: BenchFrame = [0; 8 + RESTORE_HEAD];
        v[..4].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ensure!(
            frame.len() >= RESTORE_HEAD,
            "a frame shorter than the restored head"
        );
        v[8..].copy_from_slice(&frame[..RESTORE_HEAD]);
        copy.set(0, v, 0)?;
        once_out(prog, frame, repeat, XDP_TX)
    }

    /// A run of `vc5_bench_fresh` on a SYN; then the SYNs' pending marks
    /// are cleared, or an ACK of another case might take one for its own
    /// and insert its flow.
    fn syn(&mut self, frame: &[u8]) -> Result<f64> {
        let prog = self.dp.xdp_named("vc5_bench_fresh")?;
        let ns = once(prog, frame, REPEAT, XDP_TX)?;
        let mut pending: Array<MapData, u64> =
            Array::try_from(Map::Array(prog_map(prog, "flow_pending")?))?;
        for w in 0..pending.len() {
            pending.set(w, 0, 0)?;
        }
        Ok(ns)
    }

    /// Stops the drain, and unpins the maps (they go with the last file
    /// descriptor). Returns the events the drain read, and those lost.
    fn close(self) -> Result<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let events = match self.drain {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("the drain thread panicked"))??,
            None => 0,
        };
        let lost = self.dp.flow_events_lost()?;
        drop(self.dp);
        std::fs::remove_dir_all(&self.dir).context("removing the variant's pins")?;
        Ok((events, lost))
    }
}

/// Reads the flow-events ring from its pin until `stop`, as vc5-flowsync
/// does: drain, then wait in poll(2) for the program's wake-up or
/// DRAIN_MS. Returns how many events it read.
fn drain_ring(pin: &Path, stop: &AtomicBool) -> Result<u64> {
    // Another CPU than the measured one's, as vc5-flowsync's would be.
    if std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
        pin_to_cpu(1);
    }
    let data = MapData::from_pin(pin).context("opening flow_events")?;
    let mut rb = RingBuf::try_from(Map::RingBuf(data)).context("flow_events")?;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        while rb.next().is_some() {
            n += 1;
        }
        let mut fd = libc::pollfd {
            fd: rb.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut fd, 1, DRAIN_MS) };
    }
    while rb.next().is_some() {
        n += 1;
    }
    Ok(n)
}

/// Milliseconds to program 1,000 services of 64 reals into fresh maps, and
/// to reprogram after one real of each fails.
fn control_plane(fs: &TempBpffs) -> Result<(f64, f64)> {
    let sizes = MapSizes {
        flows_tcp4: 1024,
        flows_tcp6: 1024,
        flows_udp4: 1024,
        flows_udp6: 1024,
        ..MapSizes::default()
    };
    let mut dp = DataPlane::open(&fs.path().join("cp"), sizes).context("loading vc5")?;
    let mut services: Vec<ServiceSpec> = (0..1000u32)
        .map(|i| ServiceSpec {
            vip: IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i / 4)),
            port: 80 + (i % 4) as u16,
            proto: TCP,
            forward: vc5_xdp::Forward::L2,
            reals: (0..64u32)
                .map(|r| RealSpec {
                    addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i % 16) * 256 + r)),
                    weight: 1,
                    mode: RealMode::Serve,
                    l2: Some(L2 {
                        mac: [2, 0xbb, 0, 0, (r >> 8) as u8, r as u8],
                        src_mac: [2, 0xaa, 0, 0, 0, 1],
                        ifindex: 0,
                        ..L2::default()
                    }),
                })
                .collect(),
        })
        .collect();
    let t = std::time::Instant::now();
    dp.program(&services).context("programming 1000 × 64")?;
    let first = t.elapsed().as_secs_f64() * 1e3;
    for s in &mut services {
        s.reals[7].mode = RealMode::Down;
    }
    let t = std::time::Instant::now();
    dp.program(&services).context("reprogramming")?;
    Ok((first, t.elapsed().as_secs_f64() * 1e3))
}
