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
//!
//! `--json` prints one line for machines.

use anyhow::{Context, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use std::net::IpAddr;
use vc5_xdp::dataplane::{FLOOR_OBJ, TCP, VC5_BENCH_OBJ};
use vc5_xdp::testing::{Frame, TCP_ACK, TCP_SYN, TempBpffs, require_root};
use vc5_xdp::{DataPlane, L2, MapSizes, RealMode, RealSpec, ServiceSpec};

const RUNS: usize = 7;
const REPEAT: u32 = 200_000;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// Median over RUNS runs of the kernel's mean ns per repetition.
fn measure(prog: &mut Xdp, frame: &[u8], expect: u32) -> Result<f64> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut ns = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let mut o = TestRunOptions::new();
        o.data_in = Some(frame);
        o.data_out = Some(&mut out);
        o.repeat = REPEAT;
        let r = prog.test_run(o).context("BPF_PROG_TEST_RUN")?;
        anyhow::ensure!(
            r.return_value == expect,
            "verdict {} where {expect} was expected",
            r.return_value
        );
        ns.push(r.duration.as_nanos() as f64);
    }
    ns.sort_by(|a, b| a.total_cmp(b));
    Ok(ns[RUNS / 2])
}

fn main() -> Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    require_root();
    // One CPU for every case: the per-CPU flow cache and the CPU's own
    // caches are then the same for all, and migrations add no noise.
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
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

    let floor_ns = measure(fp, &frame(vip, TCP_ACK), 3)?;
    let not_vip = measure(dp.xdp()?, &frame(ip("192.0.2.200"), TCP_ACK), 2)?;
    let est_frame = frame(vip, TCP_ACK);
    measure(dp.xdp()?, &est_frame, 3)?; // creates the flow
    let established = measure(dp.xdp()?, &est_frame, 3)?;
    let new_flow = measure(dp.xdp_named("vc5_bench_fresh")?, &frame(vip, TCP_SYN), 3)?;
    let insert = measure(dp.xdp_named("vc5_bench_fresh")?, &frame(vip, TCP_ACK), 3)?;

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
                "program_1000x64_ms": cp.0,
                "reprogram_one_real_down_ms": cp.1,
            })
        );
        return Ok(());
    }
    println!("vc5-bench: BPF_PROG_TEST_RUN, median of {RUNS} runs × {REPEAT} repetitions");
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
    row("established TCP flow (XDP_TX)", established, Some(2.5));
    row("new TCP flow, SYN (XDP_TX)", new_flow, Some(4.0));
    row("flow-inserting packet (XDP_TX)", insert, None);
    row("SYN, its bucket marked moved", new_flow_moved, None);
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
