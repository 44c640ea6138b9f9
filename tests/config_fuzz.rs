//! A bounded property test of the configuration loader: random and mutated YAML
//! and JSON documents (mutations of the fixture files, random bytes, deep nesting,
//! huge numbers, alias bombs) must each give, quickly and in bounded memory, either
//! a typed error with a position or a configuration that satisfies every rule the
//! daemon relies on.
//!
//! It runs for `VC5_CONFIG_FUZZ_SECS` seconds (default 3) from the seed
//! `VC5_CONFIG_FUZZ_SEED` (default: from the clock). A failure prints the seed and
//! the case number, and the input itself, so that it can be replayed exactly.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vc5::config::{self, Config, ConfigError};
/// SplitMix64: small, seedable and good enough to drive mutations.
use vc5_testkit::rng::SplitMix64 as Rng;

/// Counts live heap bytes and their peak, so that a case that allocates without
/// bound is caught before the machine runs out of memory. This file holds a
/// single test, so nothing else allocates concurrently.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator unchanged; the
// counting around it is two atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Most heap a single case may use above what was live before it: generous for a
/// file at the size limit, far below what an unbounded expansion would take.
const MAX_CASE_HEAP: usize = 512 << 20;
/// Longest a single case may take (debug build) before it counts as a hang.
const MAX_CASE_TIME: Duration = Duration::from_secs(20);

const FIXTURES: &[&str] = &[
    include_str!("data/original.yaml"),
    include_str!("data/original.json"),
    include_str!("data/extensions.yaml"),
];

/// Tokens that have broken YAML loaders or meant something unintended.
const TOKENS: &[&str] = &[
    "null",
    "~",
    "",
    "'true'",
    "\"yes\"",
    "yes",
    "no",
    ".inf",
    "-.inf",
    ".nan",
    "-1",
    "0",
    "007",
    "0x10",
    "1e309",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "5124095576030431h",
    "18446744073709551615s",
    "99999999999999999999ms",
    "0.0000000001s",
    "0.0.0.0",
    "255.255.255.255",
    "224.0.0.1",
    "127.0.0.1",
    "'::'",
    "'::1'",
    "'::ffff:10.0.0.1'",
    "\"web\\0nul\"",
    "\"a\\nb\"",
    "\"\\u202e\"",
    "/ålive",
    "\"/a b\"",
    "{}",
    "[]",
    "[[[[[[[[]]]]]]]]",
    "&a [1, 2]",
    "*a",
    "*undefined",
    "<<: {a: 1}",
    "!!binary AAAA",
    "!custom x",
    "|\n  block",
    "'",
    "\"",
    ":",
    "- ",
    "\t",
    "#",
    "---",
    "...",
    "%YAML 1.2",
    "\u{feff}",
];

fn char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One random edit of `text`.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let at = char_boundary(text, rng.below(text.len() + 1));
    let lines: Vec<&str> = text.lines().collect();
    match rng.below(9) {
        // Replace the value after a colon, or a list item, with a token.
        0 | 1 => {
            let Some(colon) = text[at..].find([':', '-', '[', ',']).map(|i| at + i + 1) else {
                return format!("{text}{}", rng.pick(TOKENS));
            };
            let end = text[colon..]
                .find(['\n', ',', ']', '}'])
                .map_or(text.len(), |i| colon + i);
            format!("{} {}{}", &text[..colon], rng.pick(TOKENS), &text[end..])
        }
        // Insert a token anywhere.
        2 => format!("{}{}{}", &text[..at], rng.pick(TOKENS), &text[at..]),
        // Delete a span.
        3 => {
            let end = char_boundary(text, at + rng.below(40));
            format!("{}{}", &text[..at], &text[end..])
        }
        // Duplicate, drop or swap lines.
        4 if !lines.is_empty() => {
            let mut l = lines.clone();
            let i = rng.below(l.len());
            let j = rng.below(l.len());
            match rng.below(3) {
                0 => l.insert(j, lines[i]),
                1 => {
                    l.remove(i);
                }
                _ => l.swap(i, j),
            }
            l.join("\n")
        }
        // Re-indent a line.
        5 if !lines.is_empty() => {
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            let i = rng.below(l.len());
            let pad = " ".repeat(rng.below(6));
            l[i] = format!("{pad}{}", l[i].trim_start());
            l.join("\n")
        }
        // Truncate.
        6 => text[..at].to_owned(),
        // A random byte, possibly breaking UTF-8 (lossily repaired, since the
        // loader takes text).
        7 => {
            let mut bytes = text.as_bytes().to_vec();
            let i = rng.below(bytes.len() + 1);
            bytes.insert(i, rng.next_u64() as u8);
            String::from_utf8_lossy(&bytes).into_owned()
        }
        // Repeat a span many times.
        _ => {
            let end = char_boundary(text, at + rng.below(60));
            let n = 1 + rng.below(200);
            format!("{}{}{}", &text[..at], text[at..end].repeat(n), &text[end..])
        }
    }
}

/// A document from scratch: random bytes, deep nesting, numbers, alias bombs.
fn generate(rng: &mut Rng) -> String {
    match rng.below(7) {
        0 => {
            let n = rng.below(400);
            (0..n)
                .map(|_| (rng.next_u64() % 128) as u8 as char)
                .collect()
        }
        1 => {
            let n = rng.below(300);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        2 => {
            let depth = 1 + rng.below(5000);
            let open = ["[", "{a: ", "- ", "{\"a\": ["][rng.below(4)];
            match open {
                "- " => (0..depth.min(400))
                    .map(|d| format!("{}- ", " ".repeat(d * 2)))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => open.repeat(depth),
            }
        }
        3 => {
            // The billion laughs: each level refers to the previous one ten times.
            let levels = 2 + rng.below(9);
            let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
            for l in 1..levels {
                let p = l - 1;
                doc.push_str(&format!(
                    "a{l}: &a{l} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
                ));
            }
            let key = ["services", "reals", "rhi", "multicast"][rng.below(4)];
            doc.push_str(&format!("{key}: *a{}\n", levels - 1));
            doc
        }
        4 => {
            let digits = 1 + rng.below(5000);
            let number: String = (0..digits)
                .map(|_| char::from(b'0' + rng.below(10) as u8))
                .collect();
            let key = ["need", "port", "quorum", "weight"][rng.below(4)];
            format!(
                "services:\n  - name: a\n    addr: 192.0.2.1\n    port: 80\n    real: g\n    {key}: {number}\nreals:\n  g: [10.0.0.1]\n"
            )
        }
        5 => {
            // Many services and reals, near and over the limits.
            // Small enough for many cases a second in a debug build; the limits
            // themselves are tested at full size in the unit tests.
            let services = 1 + rng.below(80);
            let reals = 1 + rng.below(80);
            let mut doc = String::from("services:\n");
            for s in 0..services {
                doc.push_str(&format!(
                    "  - {{name: s{s}, addr: 10.{}.{}.1, port: [80, 443], real: g}}\n",
                    s / 250,
                    s % 250
                ));
            }
            doc.push_str("reals:\n  g:\n");
            for r in 0..reals {
                doc.push_str(&format!("    - 172.16.{}.{}\n", r / 250, r % 250 + 1));
            }
            doc
        }
        _ => {
            let mut doc = FIXTURES[rng.below(FIXTURES.len())].to_owned();
            for _ in 0..1 + rng.below(8) {
                doc = mutate(rng, &doc);
            }
            doc
        }
    }
}

/// What must hold of every accepted configuration.
fn check_ok(c: &Config) -> Result<(), String> {
    let mut endpoints = std::collections::HashSet::new();
    let mut pairs = 0usize;
    for s in &c.services {
        for name in std::iter::once(&s.name).chain(s.checks.iter().map(|c| &c.name)) {
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(format!("name {name:?} accepted"));
            }
        }
        if s.desc.chars().any(char::is_control) {
            return Err(format!("desc {:?} accepted", s.desc));
        }
        if s.need == 0 || s.need > s.reals.len() {
            return Err(format!(
                "need {} of {} reals accepted",
                s.need,
                s.reals.len()
            ));
        }
        for e in s.endpoints() {
            if !endpoints.insert(e) {
                return Err(format!("endpoint {e:?} accepted twice"));
            }
        }
        pairs += s.endpoints().len() * s.reals.len();
        for a in s.addrs.iter().chain(s.reals.iter().map(|r| &r.addr)) {
            if a.is_unspecified() || a.is_loopback() || a.is_multicast() {
                return Err(format!("address {a} accepted"));
            }
        }
        for check in &s.checks {
            if check.interval.checked_add(check.timeout).is_none()
                || check.timeout >= check.interval
                || check.interval > config::MAX_INTERVAL
            {
                return Err(format!("timing {check:?} accepted"));
            }
            // What the daemon hands the monitor must be what the monitor takes.
            let real = s.reals.first().map_or(s.addrs[0], |r| r.addr);
            vc5_health::Prober::new(Arc::new(check.spec(real, None)))
                .map_err(|e| format!("check {check:?} accepted but the monitor says {e}"))?;
        }
    }
    if endpoints.len() > config::MAX_ENDPOINTS || pairs > config::MAX_BACKENDS {
        return Err(format!(
            "{} endpoints, {pairs} pairs accepted",
            endpoints.len()
        ));
    }
    let json = c.to_json();
    serde_json::from_str::<serde_json::Value>(&json).map_err(|e| format!("to_json: {e}"))?;
    Ok(())
}

/// What must hold of every refusal.
fn check_err(e: &ConfigError) -> Result<(), String> {
    match e {
        ConfigError::Invalid {
            file,
            line,
            column,
            message,
        } => {
            if file != "fuzz.yaml" || *line == 0 || *column == 0 {
                return Err(format!("bad position in {e}"));
            }
            if message.is_empty() || message.contains('\n') || message.contains('\0') {
                return Err(format!("bad message {message:?}"));
            }
            Ok(())
        }
        ConfigError::Io { .. } => Err(format!("parse gave an I/O error: {e}")),
    }
}

/// Whether the case was accepted, or what went wrong.
type Verdict = Result<bool, String>;

#[test]
fn the_loader_never_panics_hangs_or_allocates_without_bound() {
    let secs: u64 = std::env::var("VC5_CONFIG_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("VC5_CONFIG_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("config fuzz: seed {seed} (VC5_CONFIG_FUZZ_SEED), {secs}s (VC5_CONFIG_FUZZ_SECS)");

    // The loader runs on a worker so that a hang shows up as a timeout here
    // rather than as a test that never ends.
    let (to_worker, work) = mpsc::channel::<String>();
    let (to_main, results) = mpsc::channel::<(Verdict, usize)>();
    std::thread::spawn(move || {
        for text in work {
            let before = LIVE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let verdict = catch_unwind(AssertUnwindSafe(|| {
                match config::parse(&text, "fuzz.yaml") {
                    Ok(c) => {
                        // Accepted means accepted again, identically.
                        match config::parse(&text, "fuzz.yaml") {
                            Ok(again) if again == c => check_ok(&c).map(|()| true),
                            Ok(_) => Err("a second parse differs".to_owned()),
                            Err(e) => Err(format!("a second parse fails: {e}")),
                        }
                    }
                    Err(e) => check_err(&e).map(|()| false),
                }
            }))
            .unwrap_or_else(|p| {
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(format!("panic: {why}"))
            });
            let used = PEAK.load(Ordering::Relaxed).saturating_sub(before);
            if to_main.send((verdict, used)).is_err() {
                return;
            }
        }
    });

    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut cases, mut accepted, mut peak) = (0u64, 0u64, 0usize);
    // The fixtures themselves first: they must load.
    let mut queue: Vec<String> = FIXTURES.iter().map(|f| f.to_string()).collect();
    while Instant::now() < deadline || !queue.is_empty() {
        let text = queue.pop().unwrap_or_else(|| generate(&mut rng));
        let fixture = cases < FIXTURES.len() as u64;
        to_worker.send(text.clone()).unwrap();
        let shown = || {
            let cut = char_boundary(&text, 2000);
            format!(
                "seed {seed}, case {cases} (replay: VC5_CONFIG_FUZZ_SEED={seed}), input {} bytes:\n{}",
                text.len(),
                &text[..cut]
            )
        };
        let (verdict, used) = match results.recv_timeout(MAX_CASE_TIME) {
            Ok(r) => r,
            Err(_) => panic!("the loader took more than {MAX_CASE_TIME:?}: {}", shown()),
        };
        let ok = match verdict {
            Ok(ok) => ok,
            Err(why) => panic!("{why}\n{}", shown()),
        };
        if used > MAX_CASE_HEAP {
            panic!("the loader used {used} bytes of heap: {}", shown());
        }
        if fixture && !ok {
            panic!("a fixture does not load: {}", shown());
        }
        accepted += u64::from(ok);
        peak = peak.max(used);
        cases += 1;
    }
    eprintln!("config fuzz: {cases} cases, {accepted} accepted, peak heap per case {peak} bytes");
    assert!(cases > 100, "only {cases} cases ran");
}
