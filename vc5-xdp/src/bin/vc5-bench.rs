//! vc5-bench: per-packet cost of the XDP program by `BPF_PROG_TEST_RUN`.
//!
//! Cases, each the median of several runs of many repetitions, measured in
//! one process beside the floor program (swap MACs, XDP_TX):
//! - `floor`: the floor program.
//! - `not_vip`: a TCP packet to an address that is no VIP (XDP_PASS).
//! - `established`: a TCP ACK of a flow in the flow table (XDP_TX). The
//!   program rewrites only the MACs, which it never reads, so repeating
//!   the same frame repeats the same work.
//! - `new_flow`: a TCP SYN of a new flow. The wrapper `vc5_bench_fresh`
//!   gives every repetition a new source address, so each is a new flow.
//! - `insert`: the first non-SYN packet of a new flow, which inserts it in
//!   the flow table; also through the wrapper.
//! - `new_flow_moved`: a SYN whose bucket is marked moved (after a table
//!   change, until the sweep), which must look its flow up.
//! - Flow sync (issue 9): `established`, `new_flow` (SYN) and `insert`
//!   again, "before flow sync" (`vc5_nosync_bench.o`, the program built
//!   without it) and "after, flow sync on" (`sync_status[0].on` = 1, and a
//!   thread that drains the flow-events ring the way vc5-flowsync does,
//!   waiting in poll(2) on its fd or a 5 ms timer, so that every
//!   reservation succeeds);
//!   the unmarked rows are "after, flow sync off". Each variant gets maps
//!   of its own, loaded and filled the same way. One more inserting row
//!   with sync on uses `vc5_adaptive_bench.o`, whose events wake the
//!   reader whenever it had caught up (the ring's default) instead of once
//!   per 256 events (vc5's; see VC5_EVENT_WAKE in vc5.c).
//!
//! Timing (design.md §4): every program measured is attached (generic
//! mode) to a veth of its own in a private network namespace, so that
//! BPF_PROG_TEST_RUN finds it in the kernel's XDP dispatcher instead of
//! adding and removing it around every run (which costs RCU grace periods
//! per run, milliseconds of wall time); and each run is timed here around
//! the system call, in ns per repetition with a fraction, since the
//! kernel's own figure is truncated to whole ns.
//!
//! `--json` prints one line for machines.

use anyhow::{Context, Result};
use aya::maps::{Map, MapData, RingBuf};
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use vc5_xdp::dataplane::{
    FLOOR_OBJ, TCP, VC5_ADAPTIVE_BENCH_OBJ, VC5_BENCH_OBJ, VC5_NOSYNC_BENCH_OBJ,
};
use vc5_xdp::testing::{Frame, TCP_ACK, TCP_SYN, TempBpffs, pin_to_cpu, require_root};
use vc5_xdp::{DataPlane, L2, MapSizes, RealMode, RealSpec, ServiceSpec};

const RUNS: usize = 11;
const REPEAT: u32 = 200_000;
/// How long the ring's reader sleeps at most: the program wakes it only
/// when 256 events are unread, so, like vc5-flowsync, it also drains on a
/// timer.
const DRAIN_MS: i32 = 5;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// One run of REPEAT repetitions: ns per repetition, timed around the
/// system call (whose own cost, a microsecond or two, is spread over the
/// repetitions).
fn once(prog: &mut Xdp, frame: &[u8], expect: u32) -> Result<f64> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut o = TestRunOptions::new();
    o.data_in = Some(frame);
    o.data_out = Some(&mut out);
    o.repeat = REPEAT;
    let t = std::time::Instant::now();
    let r = prog.test_run(o).context("BPF_PROG_TEST_RUN")?;
    let ns = t.elapsed().as_nanos() as f64 / REPEAT as f64;
    anyhow::ensure!(
        r.return_value == expect,
        "verdict {} where {expect} was expected",
        r.return_value
    );
    Ok(ns)
}

/// A private network namespace whose veths hold the measured programs in
/// the XDP dispatcher (see the module's "Timing"); removed on drop, which
/// also removes the veths.
struct Holder {
    ns: vc5_xdp::flowsync::testbed::Netns,
    n: usize,
}

impl Holder {
    fn new() -> Holder {
        let ns = vc5_xdp::flowsync::testbed::Netns::new(format!(
            "vc5b{}",
            vc5_xdp::flowsync::testbed::unique()
        ));
        Holder { ns, n: 0 }
    }

    /// Attaches `prog` (generic mode) to a new veth that stays down.
    fn hold(&mut self, prog: &mut Xdp) -> Result<()> {
        self.n += 1;
        let (a, b) = (format!("h{}", self.n), format!("g{}", self.n));
        self.ns
            .exec(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        self.ns.run_in(|| -> Result<()> {
            let ifindex = vc5_xdp::flowsync::net::ifindex(&a).context("the holder veth")?;
            prog.attach_to_if_index(ifindex, XdpMode::Skb)
                .context("attaching a measured program to its holder veth")?;
            Ok(())
        })
    }
}

/// Median over RUNS runs.
fn measure(prog: &mut Xdp, frame: &[u8], expect: u32) -> Result<f64> {
    let mut ns = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        ns.push(once(prog, frame, expect)?);
    }
    Ok(median(ns))
}

fn median(mut ns: Vec<f64>) -> f64 {
    ns.sort_by(|a, b| a.total_cmp(b));
    ns[ns.len() / 2]
}

fn main() -> Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    require_root();
    // One CPU for every case: the per-CPU flow cache and the CPU's own
    // caches are then the same for all, and migrations add no noise.
    pin_to_cpu(0);
    let fs = TempBpffs::new().context("mounting a private bpffs")?;

    let mut floor = aya::Ebpf::load(FLOOR_OBJ).context("loading the floor program")?;
    let fp: &mut Xdp = floor
        .program_mut("vc5_floor")
        .context("no vc5_floor")?
        .try_into()?;
    fp.load()?;

    // Default map sizes, as in production: the flow table's size and the
    // LRU's behaviour are part of the cost.
    let sizes = if std::env::var("VC5_BENCH_SMALL").is_ok() {
        MapSizes {
            services: 4096,
            backends: 65536,
            ..MapSizes::small()
        }
    } else {
        MapSizes::default()
    };
    let mut dp = DataPlane::open_object(&fs.path().join("vc5"), sizes, VC5_BENCH_OBJ)
        .context("loading vc5")?;
    let reals: Vec<RealSpec> = (1..=16)
        .map(|i| RealSpec {
            addr: ip(&format!("203.0.113.{i}")),
            weight: 1,
            mode: RealMode::Serve,
            l2: Some(L2 {
                mac: [2, 0xbb, 0, 0, 0, i],
                src_mac: [2, 0xaa, 0, 0, 0, 1],
                ifindex: 0,
            }),
        })
        .collect();
    let services: Vec<ServiceSpec> = (0..100u16)
        .map(|i| ServiceSpec {
            vip: ip(&format!("192.0.2.{}", 1 + i / 10)),
            port: 80 + i % 10,
            proto: TCP,
            reals: reals.clone(),
        })
        .collect();
    dp.program(&services).context("programming")?;

    let client = ip("198.51.100.7");
    let vip = ip("192.0.2.1");
    let frame = |dst, flags| Frame::tcp(client, 40000, dst, 80, flags).build();

    // The flow cases in three builds, each with maps of its own: after
    // flow sync with it off (`dp`), before flow sync, after with it on.
    // Measured in rounds, one run of each case per round, beside the
    // floor, so that a burst of other load on the machine falls on every
    // case alike rather than on one; the median of the rounds is shown.
    let est_frame = frame(vip, TCP_ACK);
    let syn_frame = frame(vip, TCP_SYN);
    let mut nosync = Variant::open(
        &fs.path().join("nosync"),
        sizes,
        VC5_NOSYNC_BENCH_OBJ,
        &services,
        false,
    )?;
    let mut sync = Variant::open(
        &fs.path().join("sync"),
        sizes,
        VC5_BENCH_OBJ,
        &services,
        true,
    )?;
    // Only inserting packets emit events: the wake-up policy shows there.
    let mut wake = Variant::open(
        &fs.path().join("adaptive"),
        sizes,
        VC5_ADAPTIVE_BENCH_OBJ,
        &services,
        true,
    )?;
    let mut ins_wake = Vec::new();
    let mut floor_s = Vec::new();
    let mut not_vip_s = Vec::new();
    let mut est: [Vec<f64>; 3] = Default::default();
    let mut syn: [Vec<f64>; 3] = Default::default();
    let mut ins: [Vec<f64>; 3] = Default::default();
    for d in [&mut dp, &mut nosync.dp, &mut sync.dp] {
        once(d.xdp()?, &est_frame, 3)?; // creates the flow
    }
    once(wake.dp.xdp()?, &est_frame, 3)?;
    let mut holder = Holder::new();
    holder.hold(fp)?;
    for d in [&mut dp, &mut nosync.dp, &mut sync.dp, &mut wake.dp] {
        holder.hold(d.xdp()?)?;
        holder.hold(d.xdp_named("vc5_bench_fresh")?)?;
    }
    for _ in 0..RUNS {
        floor_s.push(once(fp, &est_frame, 3)?);
        not_vip_s.push(once(dp.xdp()?, &frame(ip("192.0.2.200"), TCP_ACK), 2)?);
        for (i, d) in [&mut dp, &mut nosync.dp, &mut sync.dp]
            .into_iter()
            .enumerate()
        {
            est[i].push(once(d.xdp()?, &est_frame, 3)?);
            syn[i].push(once(d.xdp_named("vc5_bench_fresh")?, &syn_frame, 3)?);
            ins[i].push(once(d.xdp_named("vc5_bench_fresh")?, &est_frame, 3)?);
        }
        ins_wake.push(once(wake.dp.xdp_named("vc5_bench_fresh")?, &est_frame, 3)?);
    }
    let insert_wake = median(ins_wake);
    let wake = wake.close()?;
    let [est, syn, ins] = [est, syn, ins].map(|v| v.map(median));
    let (floor_ns, not_vip) = (median(floor_s), median(not_vip_s));
    let (established, new_flow, insert) = (est[0], syn[0], ins[0]);
    let nosync = nosync.close()?;
    let sync = sync.close()?;
    let nosync = FlowRows {
        established: est[1],
        syn: syn[1],
        insert: ins[1],
        ..nosync
    };
    let sync = FlowRows {
        established: est[2],
        syn: syn[2],
        insert: ins[2],
        ..sync
    };

    // Every real replaced by a new one, the old ones draining: every
    // bucket has moved, so until a sweep clears the marks a SYN must look
    // its flow up in the flow table.
    let moved: Vec<ServiceSpec> = services
        .iter()
        .map(|s| {
            let mut s = s.clone();
            for r in &mut s.reals {
                r.mode = RealMode::Drain;
            }
            s.reals.extend(reals.iter().map(|r| RealSpec {
                addr: ip(&r.addr.to_string().replace("203.0.113.", "203.0.113.1")),
                ..r.clone()
            }));
            s
        })
        .collect();
    dp.program(&moved).context("programming")?;
    let new_flow_moved = measure(dp.xdp_named("vc5_bench_fresh")?, &frame(vip, TCP_SYN), 3)?;

    // Control plane: 1,000 services × 64 reals programmed from scratch,
    // then one real of every service failing.
    let cp = control_plane(&fs)?;

    if json {
        println!(
            "{}",
            serde_json::json!({
                "floor_ns": floor_ns,
                "not_vip_ns": not_vip,
                "established_ns": established,
                "new_flow_ns": new_flow,
                "insert_ns": insert,
                "new_flow_moved_ns": new_flow_moved,
                "established_nosync_ns": nosync.established,
                "established_sync_ns": sync.established,
                "syn_nosync_ns": nosync.syn,
                "syn_sync_ns": sync.syn,
                "insert_nosync_ns": nosync.insert,
                "insert_sync_ns": sync.insert,
                "insert_sync_adaptive_ns": insert_wake,
                "sync_events_read": sync.events,
                "sync_events_lost": sync.lost + wake.lost,
                "program_1000x64_ms": cp.0,
                "reprogram_one_real_down_ms": cp.1,
            })
        );
        return Ok(());
    }
    println!(
        "vc5-bench: BPF_PROG_TEST_RUN, median of {RUNS} runs × {REPEAT} repetitions (rounds over the cases)"
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8}",
        "case", "ns/pkt", "× floor", "target"
    );
    let row = |name: &str, ns: f64, target: Option<f64>| {
        let ratio = ns / floor_ns;
        let t = match target {
            Some(t) => format!("≤ {t}{}", if ratio <= t { "" } else { " ✗" }),
            None => "-".into(),
        };
        println!("{name:<34} {ns:>8.1} {ratio:>8.2} {t:>8}");
    };
    row("floor (swap MACs, XDP_TX)", floor_ns, None);
    row("not a VIP (XDP_PASS)", not_vip, Some(1.5));
    let (before, on) = ("  before flow sync", "  after, flow sync on");
    row("established TCP flow (XDP_TX)", established, Some(2.5));
    row(before, nosync.established, Some(2.5));
    row(on, sync.established, Some(2.5));
    row("new TCP flow, SYN (XDP_TX)", new_flow, Some(4.0));
    row(before, nosync.syn, Some(4.0));
    row(on, sync.syn, Some(4.0));
    row("flow-inserting packet (XDP_TX)", insert, None);
    row(before, nosync.insert, None);
    row(on, sync.insert, None);
    row("  after, on, adaptive wake-ups", insert_wake, None);
    row("SYN, its bucket marked moved", new_flow_moved, None);
    println!(
        "(unmarked rows: after flow sync, off; with it on, {} + {} flow events were read and {} lost)",
        sync.events,
        wake.events,
        sync.lost + wake.lost
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

/// The flow cases of one build of the program, and with sync on what
/// became of its events.
#[derive(Default)]
struct FlowRows {
    established: f64,
    syn: f64,
    insert: f64,
    /// Events the drain thread read, and those lost.
    events: u64,
    lost: u64,
}

/// One build of the program loaded against fresh maps of its own,
/// programmed with the benchmark's services; with `sync`, as while
/// vc5-flowsync runs: events on, and the ring drained by a thread on
/// another CPU that sleeps in poll(2) when it has caught up.
struct Variant {
    dp: DataPlane,
    dir: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    drain: Option<std::thread::JoinHandle<Result<u64>>>,
}

impl Variant {
    fn open(
        dir: &Path,
        sizes: MapSizes,
        object: &[u8],
        services: &[ServiceSpec],
        sync: bool,
    ) -> Result<Variant> {
        let mut dp = DataPlane::open_object(dir, sizes, object).context("loading vc5")?;
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
            dir: dir.to_path_buf(),
            stop,
            drain,
        })
    }

    /// Stops the drain, counts the events, and unpins the maps (they go
    /// with the last file descriptor).
    fn close(self) -> Result<FlowRows> {
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
        Ok(FlowRows {
            events,
            lost,
            ..FlowRows::default()
        })
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
            vip: IpAddr::V4(std::net::Ipv4Addr::from(0xc000_0200 + i / 4)),
            port: 80 + (i % 4) as u16,
            proto: TCP,
            reals: (0..64u32)
                .map(|r| RealSpec {
                    addr: IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + (i % 16) * 256 + r)),
                    weight: 1,
                    mode: RealMode::Serve,
                    l2: Some(L2 {
                        mac: [2, 0xbb, 0, 0, (r >> 8) as u8, r as u8],
                        src_mac: [2, 0xaa, 0, 0, 0, 1],
                        ifindex: 0,
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
