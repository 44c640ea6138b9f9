//! `vc5-rhi-bench`: how long from `set_vips` until a BIRD router has the VIP
//! (and, after `set_vips({})`, no longer has it), in BIRD mode and in the
//! built-in speaker's mode. Target: under 100 ms (design §4).
//!
//! Builds two network namespaces (lb, rt) joined by a veth pair, a BIRD router
//! in rt and, for BIRD mode, a BIRD in lb; the router's RIB is polled over its
//! control socket. Needs root; cleans up after itself.
//!
//! Usage: `vc5-rhi-bench [--rounds N] [--background N] [--mode bird|bgp|both]`
//! `[--include-dir DIR]` (`--background`: VIPs already announced beside the
//! measured one; `--include-dir`: where the include file goes, default the
//! temporary directory. vc5d's default, /run/vc5, is a tmpfs on most hosts,
//! where the include's fsyncs cost nothing; on a disk they cost milliseconds).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vc5_bird_bridge::{Announcer, AnnouncerConfig, Mode};
use vc5_testkit::bird::{Bird, Netns, TempDir, link, require_root};

const LB4: &str = "192.0.2.1";
const RT4: &str = "192.0.2.2";
const VIP: &str = "203.0.113.10";
const TARGET: Duration = Duration::from_millis(100);

struct Args {
    include_dir: Option<std::path::PathBuf>,
    rounds: usize,
    background: u32,
    modes: Vec<&'static str>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        include_dir: None,
        rounds: 20,
        background: 0,
        modes: vec!["bird", "bgp"],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--rounds" => {
                a.rounds = value("--rounds")?
                    .parse()
                    .map_err(|e| format!("--rounds: {e}"))?
            }
            "--background" => {
                a.background = value("--background")?
                    .parse()
                    .map_err(|e| format!("--background: {e}"))?
            }
            "--include-dir" => a.include_dir = Some(value("--include-dir")?.into()),
            "--mode" => {
                a.modes = match value("--mode")?.as_str() {
                    "bird" => vec!["bird"],
                    "bgp" => vec!["bgp"],
                    "both" => vec!["bird", "bgp"],
                    m => return Err(format!("unknown mode {m}")),
                }
            }
            "-h" | "--help" => {
                return Err("usage: vc5-rhi-bench [--rounds N] [--background N] [--mode bird|bgp|both] [--include-dir DIR]".into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn background(n: u32) -> BTreeSet<IpAddr> {
    // 198.51.100.0/24 and onwards: documentation space, apart from the VIP.
    (0..n)
        .map(|i| {
            IpAddr::V4(Ipv4Addr::from(
                u32::from(Ipv4Addr::new(198, 51, 100, 1)) + i,
            ))
        })
        .collect()
}

/// A request to the watcher: prefix, wanted presence, where to answer.
type Watch = (
    String,
    bool,
    tokio::sync::oneshot::Sender<Result<Instant, String>>,
);

/// Watches the router's RIB from its own thread (a plain blocking socket),
/// so that polling never competes with the announcer's tasks.
struct Watcher {
    tx: std::sync::mpsc::Sender<Watch>,
}

impl Watcher {
    fn start(socket: &Path) -> Result<Watcher, String> {
        use std::io::{Read, Write};
        use vc5_bird_bridge::bird::reply::{Event, ReplyParser};
        let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
        let (tx, rx) = std::sync::mpsc::channel::<Watch>();
        std::thread::spawn(move || {
            let mut parser = ReplyParser::new();
            let mut buf = [0u8; 8192];
            let mut ask = |s: &mut std::os::unix::net::UnixStream,
                           cmd: Option<&str>|
             -> Result<Vec<String>, String> {
                if let Some(c) = cmd {
                    s.write_all(format!("{c}\n").as_bytes())
                        .map_err(|e| e.to_string())?;
                }
                loop {
                    let n = s.read(&mut buf).map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err("router closed its socket".into());
                    }
                    for ev in parser.push_bytes(&buf[..n]).map_err(|e| e.to_string())? {
                        if let Event::Reply(r) = ev {
                            return Ok(r.lines.into_iter().map(|l| l.text).collect());
                        }
                    }
                }
            };
            if ask(&mut s, None).is_err() {
                return;
            }
            for (prefix, want, done) in rx {
                let limit = Instant::now() + Duration::from_secs(30);
                let result = loop {
                    match ask(&mut s, Some(&format!("show route {prefix}"))) {
                        Ok(lines) if lines.iter().any(|l| l.starts_with(&prefix)) == want => {
                            break Ok(Instant::now());
                        }
                        Ok(_) if Instant::now() > limit => {
                            break Err(format!(
                                "{prefix} still {} after 30 s",
                                if want { "absent" } else { "present" }
                            ));
                        }
                        Ok(_) => {}
                        Err(e) => break Err(e),
                    }
                };
                let _ = done.send(result);
            }
        });
        Ok(Watcher { tx })
    }

    /// Resolves when the router's answer for `prefix` is `want`.
    async fn until(&self, prefix: &str, want: bool) -> Result<Instant, String> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send((prefix.to_owned(), want, done))
            .map_err(|_| "watcher gone".to_string())?;
        rx.await.map_err(|_| "watcher gone".to_string())?
    }
}

fn stats(v: &mut [Duration]) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "min {:6.2}  median {:6.2}  p90 {:6.2}  max {:6.2} ms",
        ms(v[0]),
        ms(p(0.5)),
        ms(p(0.9)),
        ms(v[v.len() - 1])
    )
}

fn router_conf() -> String {
    format!(
        "router id {RT4};\nprotocol device {{}}\n\
         protocol bgp lb {{ local {RT4} as 65001; neighbor {LB4} as 65000; hold time 9;\n\
           connect retry time 1; error wait time 1, 2; ipv4 {{ import all; export none; }}; }}\n"
    )
}

fn lb_conf(include: &Path) -> String {
    format!(
        "router id {LB4};\nprotocol device {{}}\ninclude \"{}\";\n\
         protocol bgp upstream {{ local {LB4} as 65000; neighbor {RT4} as 65001; hold time 9;\n\
           connect retry time 1; ipv4 {{ import none; export where proto = \"vc5_vips4\"; }}; }}\n",
        include.display()
    )
}

async fn measure(
    mode: &str,
    args: &Args,
    dir: &Path,
    inc: &Path,
    rt: &Bird,
) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    let mut cfg = AnnouncerConfig::new(LB4.parse().map_err(|e| format!("{e}"))?, 65000, vec![]);
    cfg.bird_socket = dir.join("lb.ctl");
    cfg.bird_include = inc.to_owned();
    if mode == "bgp" {
        cfg.peers = vec![RT4.parse().map_err(|e| format!("{e}"))?];
        cfg.backoff_min = Duration::from_millis(100);
    }
    let (h, mut st) = Announcer::start(cfg, BTreeSet::new()).map_err(|e| e.to_string())?;
    let want = if mode == "bird" {
        Mode::Bird
    } else {
        Mode::Bgp
    };
    tokio::time::timeout(Duration::from_secs(10), st.wait_for(|s| s.mode == want))
        .await
        .map_err(|_| format!("{mode} mode not reached"))?
        .map_err(|e| e.to_string())?;
    let router = Watcher::start(&rt.socket())?;
    let bg = background(args.background);
    let prefix = format!("{VIP}/32");
    // Warm up: the session must be up and the background announced.
    h.set_vips(bg.clone());
    if let Some(last) = bg.iter().next_back() {
        router.until(&format!("{last}/32"), true).await?;
    } else {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let mut with = bg.clone();
    with.insert(VIP.parse().map_err(|e| format!("{e}"))?);
    for _ in 0..args.rounds + 1 {
        let t0 = Instant::now();
        h.set_vips(with.clone());
        up.push(router.until(&prefix, true).await? - t0);
        let t0 = Instant::now();
        h.set_vips(bg.clone());
        down.push(router.until(&prefix, false).await? - t0);
    }
    // The first round includes connection set-up costs; drop it.
    up.remove(0);
    down.remove(0);
    let s = h.status();
    eprintln!(
        "  ({mode}) last apply latency reported by the announcer: {:?}",
        s.apply_latency
    );
    h.shutdown().await;
    Ok((up, down))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    require_root();
    let result = (|| -> Result<bool, String> {
        let e = |e: std::io::Error| e.to_string();
        let lb = Netns::new("bench-lb").map_err(e)?;
        let rtns = Netns::new("bench-rt").map_err(e)?;
        link(
            &lb,
            "eth0",
            &["192.0.2.1/24"],
            &rtns,
            "eth0",
            &["192.0.2.2/24"],
        )
        .map_err(e)?;
        let dir = TempDir::new("bench").map_err(e)?;
        let rt = Bird::start(&rtns, dir.path(), "rt", &router_conf()).map_err(e)?;
        let inc_dir = match &args.include_dir {
            Some(d) => TempDir::new_in(d, "bench-inc").map_err(e)?,
            None => TempDir::new("bench-inc").map_err(e)?,
        };
        let inc = inc_dir.path().join("bird-vips.conf");
        let mut ok = true;
        println!(
            "vc5-rhi-bench: set_vips -> route at a BIRD router ({} rounds, {} background VIPs, include in {}, target < {} ms)",
            args.rounds,
            args.background,
            inc_dir.path().display(),
            TARGET.as_millis()
        );
        for mode in &args.modes {
            let mut lb_bird = None;
            if *mode == "bird" {
                vc5_bird_bridge::bird::include::update(&inc, &BTreeSet::new(), &Default::default())
                    .map_err(e)?;
                lb_bird = Some(Bird::start(&lb, dir.path(), "lb", &lb_conf(&inc)).map_err(e)?);
            }
            let (mut up, mut down) = lb
                .block_on(measure(mode, &args, dir.path(), &inc, &rt))
                .map_err(e)??;
            let worst = *up
                .iter()
                .chain(down.iter())
                .max()
                .unwrap_or(&Duration::ZERO);
            println!("  {mode:4} announce: {}", stats(&mut up));
            println!("  {mode:4} withdraw: {}", stats(&mut down));
            ok &= up[up.len() / 2] < TARGET && down[down.len() / 2] < TARGET;
            if worst >= TARGET {
                println!("  {mode:4} note: worst case {worst:?} exceeds the target");
            }
            drop(lb_bird);
        }
        Ok(ok)
    })();
    match result {
        Ok(true) => {
            println!("median under target in every mode");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("median OVER target");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("vc5-rhi-bench: {e}");
            ExitCode::from(2)
        }
    }
}
