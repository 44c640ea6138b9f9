//! `vc5-health-bench`: runs http checks against many local "reals" and prints what
//! they cost.
//!
//! The reals are tiny HTTP responders, one listener each on 127.77.x.y, in a child
//! process (this same binary with `--serve`), so that the CPU time and memory
//! measured are the checker's alone. The checker is the crate's [`Monitor`] with
//! one http check per real. Every `--sample` seconds and at the end it prints
//! checks per second, CPU time per check (user + system, from `getrusage`) and
//! resident memory (from `/proc/self/statm`); a long run (`--seconds 600`) shows
//! whether memory stays flat. At the end it also prints the latest failure reason
//! of every check that failed and the number of state transitions after the first
//! results, both of which a healthy run keeps at zero. It prints figures; it
//! asserts nothing.
//!
//! ```text
//! vc5-health-bench [--reals 1000] [--seconds 60] [--interval-ms 500]
//!                  [--timeout-ms 400] [--sample 10]
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use vc5_health::{CheckSpec, CheckStatus, Event, Monitor};

#[derive(Debug, Clone, Copy)]
struct Options {
    reals: usize,
    seconds: u64,
    interval: Duration,
    timeout: Duration,
    sample: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: vc5-health-bench [--reals N] [--seconds S] [--interval-ms MS] [--timeout-ms MS] [--sample S]"
    );
    std::process::exit(2);
}

fn parse_options(args: &[String]) -> Options {
    let mut options = Options {
        reals: 1000,
        seconds: 60,
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(400),
        sample: 10,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let Some(number) = args.next().and_then(|v| v.parse::<u64>().ok()) else {
            usage();
        };
        match flag.as_str() {
            "--reals" => options.reals = usize::try_from(number).unwrap_or(usize::MAX),
            "--seconds" => options.seconds = number,
            "--interval-ms" => options.interval = Duration::from_millis(number),
            "--timeout-ms" => options.timeout = Duration::from_millis(number),
            "--sample" => options.sample = number.max(1),
            _ => usage(),
        }
    }
    if options.reals == 0 || options.reals > 250 * 256 || options.interval.is_zero() {
        usage();
    }
    options
}

/// The loopback address of real number `i`: 127.77.0.1, 127.77.0.2, …
fn real_ip(i: usize) -> IpAddr {
    let (hi, lo) = (i / 250, i % 250 + 1);
    IpAddr::V4(Ipv4Addr::new(127, 77, hi as u8, lo as u8))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => fail(&format!("cannot start tokio: {e}")),
    };
    if args.first().map(String::as_str) == Some("--serve") {
        let reals = args
            .get(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| usage());
        runtime.block_on(serve(reals));
    } else {
        runtime.block_on(bench(parse_options(&args)));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("vc5-health-bench: {message}");
    std::process::exit(1);
}

/// The child: `reals` listeners answering every request with 200, until stdin
/// closes (the parent is gone).
async fn serve(reals: usize) {
    let mut out = std::io::stdout().lock();
    for i in 0..reals {
        let listener = match TcpListener::bind((real_ip(i), 0)).await {
            Ok(listener) => listener,
            Err(e) => fail(&format!("cannot listen on {}: {e}", real_ip(i))),
        };
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| fail(&e.to_string()));
        let _ = writeln!(out, "{addr}");
        tokio::spawn(accept(listener));
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);
    // Block (on a thread of its own) until the parent closes our stdin.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    })
    .await;
}

async fn accept(listener: TcpListener) {
    const RESPONSE: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nok\n";
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            // Out of descriptors, most likely: let some connections finish.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(256);
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(RESPONSE).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// The system allocator, counting the bytes currently allocated: unlike the
/// resident size, which also moves with the allocator's caching and fragmentation,
/// live heap bytes show a leak directly.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter
// only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap_kib() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed) / 1024
}

/// Transitions received so far (a steady run should have none after the first).
fn count_transitions(events: &mut UnboundedReceiver<Event<usize>>) -> usize {
    std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| matches!(e, Event::Transition(_)))
        .count()
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Resident memory of this process in KiB, from /proc/self/statm.
fn rss_kib() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page / 1024)
}

/// Raises the soft limit on open files to the hard one: 1,000 checks and their
/// TIME_WAIT-free but overlapping connections need more than the usual 1,024.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    cpu: Duration,
    runs: u64,
    passes: u64,
}

async fn sample(monitor: &Monitor<usize>) -> (Sample, Vec<CheckStatus<usize>>) {
    let status = monitor.status().await.unwrap_or_default();
    let sample = Sample {
        at: Instant::now(),
        cpu: cpu_time(),
        runs: status.iter().map(|s| s.runs).sum(),
        passes: status.iter().map(|s| s.passes).sum(),
    };
    (sample, status)
}

fn per_check(cpu: Duration, runs: u64) -> String {
    if runs == 0 {
        return "-".to_owned();
    }
    format!("{:.1} µs", cpu.as_secs_f64() * 1e6 / runs as f64)
}

async fn bench(options: Options) {
    raise_nofile();
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(&format!("own path: {e}")));
    let mut child = Command::new(exe)
        .args(["--serve", &options.reals.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start the reals: {e}")));
    let Some(stdout) = child.stdout.take() else {
        fail("no stdout from the reals");
    };
    let mut targets: Vec<SocketAddr> = Vec::with_capacity(options.reals);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_else(|e| fail(&format!("reading the reals: {e}")));
        if line == "ready" {
            break;
        }
        targets.push(
            line.parse()
                .unwrap_or_else(|e| fail(&format!("{line}: {e}"))),
        );
    }
    if targets.len() != options.reals {
        fail("the reals did not all start");
    }

    println!(
        "vc5-health-bench: {} http checks, interval {:?}, timeout {:?}, {} s; reals in child process {}",
        options.reals,
        options.interval,
        options.timeout,
        options.seconds,
        child.id()
    );
    let rss_before = rss_kib();
    let (monitor, mut events) = Monitor::<usize>::start();
    let checks = targets.iter().enumerate().map(|(i, &target)| {
        let spec = CheckSpec::http(target)
            .with_timing(options.interval, options.timeout)
            .with_rise_fall(2, 3);
        (i, spec)
    });
    if let Err(e) = monitor.set_checks(checks).await {
        fail(&e.to_string());
    }
    // Let every check start (they are spread over one interval) before measuring.
    tokio::time::sleep(options.interval * 2).await;
    // The first results (Unknown -> Passing) are not part of the steady state.
    count_transitions(&mut events);
    // The status is held throughout, so that every heap figure includes one copy.
    let (start, mut status) = sample(&monitor).await;
    let rss_start = rss_kib();
    let heap_start = heap_kib();
    println!(
        "rss before checks {rss_before} KiB, at start {rss_start} KiB; live heap at start {heap_start} KiB"
    );
    println!(
        "{:>6} {:>10} {:>8} {:>9} {:>11} {:>9} {:>9}",
        "time", "checks", "failed", "checks/s", "cpu/check", "rss KiB", "heap KiB"
    );

    let end = start.at + Duration::from_secs(options.seconds);
    let mut last = start;
    while Instant::now() < end {
        let wait = end
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(options.sample));
        tokio::time::sleep(wait).await;
        drop(std::mem::take(&mut status));
        let (now, all) = sample(&monitor).await;
        status = all;
        let runs = now.runs - last.runs;
        let rate = runs as f64 / (now.at - last.at).as_secs_f64();
        println!(
            "{:>5.0}s {:>10} {:>8} {:>9.0} {:>11} {:>9} {:>9}",
            (now.at - start.at).as_secs_f64(),
            now.runs - start.runs,
            (now.runs - start.runs) - (now.passes - start.passes),
            rate,
            per_check(now.cpu - last.cpu, runs),
            rss_kib(),
            heap_kib()
        );
        last = now;
    }

    let runs = last.runs - start.runs;
    let failed = runs - (last.passes - start.passes);
    let elapsed = (last.at - start.at).as_secs_f64();
    let mut latencies: Vec<Duration> = status
        .iter()
        .filter_map(|s| s.last.as_ref().map(|o| o.latency))
        .collect();
    latencies.sort();
    let pct = |p: usize| {
        latencies
            .get(latencies.len() * p / 100)
            .copied()
            .unwrap_or_default()
    };
    println!();
    println!("checks run        {runs} in {elapsed:.1} s ({failed} failed)");
    println!("checks per second {:.0}", runs as f64 / elapsed);
    println!(
        "cpu per check     {} (cpu {:.2} s over {elapsed:.1} s = {:.1}% of one core)",
        per_check(last.cpu - start.cpu, runs),
        (last.cpu - start.cpu).as_secs_f64(),
        100.0 * (last.cpu - start.cpu).as_secs_f64() / elapsed
    );
    println!("latency (last)    p50 {:.0?}, p99 {:.0?}", pct(50), pct(99));
    println!(
        "rss               before checks {rss_before} KiB, start {rss_start} KiB, end {} KiB",
        rss_kib()
    );
    println!(
        "live heap         start {heap_start} KiB, end {} KiB",
        heap_kib()
    );
    // Why checks failed: the latest failure of each check that had one.
    let mut reasons: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for outcome in status.iter().filter_map(|s| s.last_failure.as_ref()) {
        if let Some(failure) = outcome.failure() {
            *reasons.entry(failure.to_string()).or_default() += 1;
        }
    }
    for (reason, checks) in &reasons {
        println!("  latest failure of {checks} checks: {reason}");
    }
    println!("transitions        {}", count_transitions(&mut events));

    monitor.shutdown().await;
    // Closing its stdin ends the child; kill it too in case it is stuck.
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}
