//! vc5-flowsync-bench: what flow sync costs, per core.
//!
//! - `seal`: flow records per second through encode + AES-256-GCM seal,
//!   packed into 1,400-byte datagrams (67 IPv4 or 24 IPv6 records each).
//! - `open`: records per second through open + decode + the replay check.
//!
//! Each figure is the median of several runs of about 0.3 s on one thread.
//! `--json` prints one line for machines.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use vc5_xdp::flowsync::{
    FlowRecord, Key, Keyring, Op, Opener, ReplayGuard, Sealer, wire::DEFAULT_MAX_LEN,
};

const RUNS: usize = 5;
const BATCH: usize = 10_000;

fn records(v6: bool) -> Vec<FlowRecord> {
    (0..BATCH as u32)
        .map(|i| {
            let (saddr, daddr, real): (IpAddr, IpAddr, IpAddr) = if v6 {
                (
                    Ipv6Addr::from(0x2001_0db8_0001_u128 << 80 | i as u128).into(),
                    "2001:db8:80::80".parse().unwrap(),
                    "2001:db8:2::10".parse().unwrap(),
                )
            } else {
                (
                    Ipv4Addr::from(0x0a00_0000 | i).into(),
                    "192.0.2.80".parse().unwrap(),
                    "203.0.113.10".parse().unwrap(),
                )
            };
            FlowRecord {
                saddr,
                daddr,
                sport: (i % 60_000) as u16 + 1024,
                dport: 80,
                protocol: 6,
                real,
                op: Op::Upsert,
            }
        })
        .collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// Median records per second of `f`, which handles `BATCH` records per call.
fn rate(mut f: impl FnMut()) -> f64 {
    let mut r = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        let mut n = 0usize;
        while t.elapsed().as_millis() < 300 {
            f();
            n += BATCH;
        }
        r.push(n as f64 / t.elapsed().as_secs_f64());
    }
    r.sort_by(|a, b| a.total_cmp(b));
    r[RUNS / 2]
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let keys = Keyring::new(vec![(1, Key::new([7; 32]))]).expect("one key");
    let mut out = Vec::new();
    for v6 in [false, true] {
        let recs = records(v6);
        let mut sealer = Sealer::new(&keys, 1, 1);
        let seal = rate(|| {
            let d = sealer
                .seal_flows(&recs, now_ms(), DEFAULT_MAX_LEN)
                .expect("records fit");
            std::hint::black_box(d);
        });
        // Open what one sealer produced, in order, as a receiver would.
        let mut sealer = Sealer::new(&keys, 2, 1);
        let mut opener = Opener::new(&keys);
        let mut guard = ReplayGuard::new(64, 60_000);
        let open = rate(|| {
            let t = now_ms();
            for d in sealer.seal_flows(&recs, t, DEFAULT_MAX_LEN).expect("fit") {
                let d = opener.open(&d).expect("valid");
                guard.accept(&d.header, t).expect("fresh");
                std::hint::black_box(d);
            }
        }) * 1.0;
        // The open loop also sealed: subtract the sealing time to report
        // open + decode + replay alone.
        let open_only = 1.0 / (1.0 / open - 1.0 / seal);
        let family = if v6 { "ipv6" } else { "ipv4" };
        out.push((format!("seal_{family}_records_per_s"), seal));
        out.push((format!("open_{family}_records_per_s"), open_only));
    }
    if json {
        let m: serde_json::Map<String, serde_json::Value> = out
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v.round())))
            .collect();
        println!("{}", serde_json::Value::Object(m));
        return;
    }
    println!("flow sync, one core ({} runs of ~0.3 s, median)", RUNS);
    for (k, v) in &out {
        println!("  {k:<32} {:>12.0}", v);
    }
}
