//! What the lab tests share: a lab with this build's vc5d, waiting for
//! vc5d to be ready, counting which real answers.

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use vc5_testkit::lab::{Lab, LabChild, LabOptions, http_get, retry};

/// A lab with `load_balancers` load balancers.
pub fn lab_with(load_balancers: usize) -> Lab {
    Lab::new(LabOptions {
        vc5d: Some(env!("CARGO_BIN_EXE_vc5d").into()),
        load_balancers,
        ..LabOptions::default()
    })
    .expect("building the lab (needs root)")
}

pub fn lab() -> Lab {
    Lab::new(LabOptions {
        vc5d: Some(env!("CARGO_BIN_EXE_vc5d").into()),
        ..LabOptions::default()
    })
    .expect("building the lab (needs root)")
}

/// Waits until vc5d says it is ready and both VIPs answer from the client
/// (without the XDP program the load balancer drops traffic for the VIPs,
/// which it does not own).
pub fn wait_ready(lab: &Lab, vc5d: &mut LabChild) {
    let vips = lab.vips();
    let r = retry(Duration::from_secs(30), || {
        if let Some(status) = vc5d.try_wait()? {
            anyhow::bail!("vc5d exited: {status}");
        }
        // What vc5d tells systemd with READY=1, its status says too.
        let lb = vc5d.node.as_deref().unwrap_or("lb1");
        let status = lab.curl(lb, "http://127.0.0.1:8080/status.json", &[])?;
        let status: serde_json::Value = serde_json::from_str(&status)?;
        anyhow::ensure!(status["ready_ms"].is_u64(), "vc5d not ready yet");
        lab.run_in("client", || {
            for vip in vips {
                http_get(SocketAddr::new(vip, 80), "/", Duration::from_millis(500))?;
            }
            Ok::<(), anyhow::Error>(())
        })?
    });
    if let Err(e) = r {
        panic!(
            "vc5d never became ready: {e:#}\n--- vc5d log ---\n{}",
            vc5d.log_text()
        );
    }
}

/// `n` fresh connections to `vip`; which real answered each. Every
/// answer must show the client's own address, as the real saw it.
pub fn spread(lab: &Lab, vip: IpAddr, n: usize) -> BTreeMap<String, usize> {
    let client = match vip {
        IpAddr::V4(_) => IpAddr::V4(lab.addr4("client")),
        IpAddr::V6(_) => IpAddr::V6(lab.addr6("client")),
    };
    let bodies = lab
        .run_in("client", || {
            (0..n)
                .map(|_| http_get(SocketAddr::new(vip, 80), "/", Duration::from_secs(3)))
                .collect::<Vec<_>>()
        })
        .unwrap();
    let mut by_real = BTreeMap::new();
    for b in bodies {
        let b = b.unwrap_or_else(|e| panic!("a request to {vip} failed: {e:#}"));
        assert!(
            b.contains(&format!("client={client} ")),
            "real did not see the client's address: {b}"
        );
        let real = b
            .split_whitespace()
            .find_map(|w| w.strip_prefix("real="))
            .expect("answer names its real")
            .to_string();
        *by_real.entry(real).or_insert(0) += 1;
    }
    by_real
}

/// Polls load balancer `lb`'s `/status.json` (every 20 ms) until `ok`
/// holds for it; returns how long that took. `what` says what is awaited.
pub fn wait_status(
    lab: &Lab,
    lb: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> Duration {
    let t = Instant::now();
    let mut last = String::new();
    loop {
        if let Ok(text) = lab.curl(lb, "http://127.0.0.1:8080/status.json", &[]) {
            if serde_json::from_str(&text).is_ok_and(|v| ok(&v)) {
                return t.elapsed();
            }
            last = text;
        }
        assert!(
            t.elapsed() < timeout,
            "{lb}: not {what} within {timeout:?}; last status:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until load balancer `lb`'s vc5d says in its status that it is
/// ready (what it tells systemd with READY=1); returns how long that took.
pub fn wait_vc5d_ready(lab: &Lab, lb: &str, timeout: Duration) -> Duration {
    wait_status(lab, lb, "ready", timeout, |s| s["ready_ms"].is_u64())
}

/// Whether `status` lists VIP `vip` and says `announceable` of it.
pub fn vip_announceable(status: &serde_json::Value, vip: IpAddr, announceable: bool) -> bool {
    let vip = vip.to_string();
    status["vips"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| v["vip"].as_str() == Some(vip.as_str()) && v["announceable"] == announceable)
}

/// What `status` says of the hold for local trouble: its reason, or None
/// when there is none.
pub fn local_trouble(status: &serde_json::Value) -> Option<&str> {
    status["local_trouble"]["reason"].as_str()
}

/// The route health injection mode in `status` (`bgp`, `bird`, …).
pub fn rhi_mode(status: &serde_json::Value) -> &str {
    status["rhi"]["mode"].as_str().unwrap_or_default()
}

/// Whether every service row of `status` that has real `addr` says
/// `healthy` of it (and there is one).
pub fn real_healthy(status: &serde_json::Value, addr: IpAddr, healthy: bool) -> bool {
    let addr = addr.to_string();
    let rows: Vec<&serde_json::Value> = status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["reals"].as_array().into_iter().flatten())
        .filter(|r| r["addr"].as_str() == Some(addr.as_str()))
        .collect();
    !rows.is_empty() && rows.iter().all(|r| r["healthy"].as_bool() == Some(healthy))
}

/// The lab's configuration with fast checks: every second, half a second
/// to answer, `rise` and `fall` of 2.
pub fn fast_checks(lab: &Lab) -> String {
    lab.default_config().replace(
        "path: /health}",
        "path: /health, interval: 1s, timeout: 500ms, rise: 2, fall: 2}",
    )
}

/// A slow download from the client through a VIP, paced by the real (the
/// lab httpd's `?rate=`: curl's `--limit-rate` averages over seconds and
/// lets a veth deliver megabytes at once, so the download would be over
/// before the event it is meant to live through); its headers, with the
/// httpd's `X-Real`, land in a file as soon as they arrive.
pub struct Download {
    curl: LabChild,
    headers: std::path::PathBuf,
    pub bytes: usize,
}

static DOWNLOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Download {
    /// `rate` in bytes per second, with an optional `k` or `M` (10^3, 10^6).
    pub fn start(lab: &Lab, vip: IpAddr, bytes: usize, rate: &str) -> Download {
        let n = DOWNLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let headers = lab.dir().join(format!("download-{n}.headers"));
        let per_s: u64 = match rate.strip_suffix('M') {
            Some(m) => m.parse::<u64>().unwrap() * 1_000_000,
            None => match rate.strip_suffix('k') {
                Some(k) => k.parse::<u64>().unwrap() * 1_000,
                None => rate.parse().unwrap(),
            },
        };
        let url = Lab::url(vip, &format!("/bytes/{bytes}?rate={per_s}"));
        let curl = lab
            .spawn(
                "client",
                &[
                    "curl",
                    "-sS",
                    "--fail",
                    "-D",
                    headers.to_str().unwrap(),
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{size_download}",
                    &url,
                ],
            )
            .unwrap();
        Download {
            curl,
            headers,
            bytes,
        }
    }

    /// The real serving it, once its headers have arrived.
    pub fn real(&self) -> String {
        let t = Instant::now();
        loop {
            let h = std::fs::read_to_string(&self.headers).unwrap_or_default();
            if let Some(line) = h
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("x-real:"))
            {
                return line[7..].trim().to_string();
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "download never started"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the end: Ok(bytes received) or Err(curl's complaint).
    pub fn finish(mut self) -> Result<usize, String> {
        let t = Instant::now();
        let status = loop {
            if let Some(s) = self.curl.try_wait().unwrap() {
                break s;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "download hangs");
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = self.curl.log_text();
        if !status.success() {
            return Err(out);
        }
        Ok(out.trim().parse().unwrap_or(0))
    }
}
