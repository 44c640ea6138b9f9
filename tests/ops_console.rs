//! The console on 127.0.0.1: `/metrics` parsed strictly and compared with
//! the status, `/status.json`, 404/405, and the page in headless Chromium
//! (driven over the DevTools protocol on a pipe): it shows the status,
//! follows a change published on the watch channel without reloading, and
//! leaves a screenshot in the target directory.
//!
//! The browser test needs the Debian package `chromium` (and a font, e.g.
//! `fonts-dejavu-core`, for a readable screenshot).

mod ops_common;

use ops_common::browser::*;
use ops_common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vc5::console::{self, ConsoleHandle};
use vc5::status::Status;

async fn start(status: Status) -> (StandIn, ConsoleHandle) {
    let (standin, shared) = StandIn::start(status);
    let console = console::serve("127.0.0.1:0".parse().unwrap(), shared)
        .await
        .expect("console");
    assert!(console.local_addr().ip().is_loopback());
    (standin, console)
}

/// A minimal HTTP/1.1 client: the response's status, headers (lower-case
/// names) and body. The console sends Content-Length, never chunks.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head end");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let code: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect::<BTreeMap<_, _>>();
    if let Some(len) = headers.get("content-length")
        && method != "HEAD"
    {
        assert_eq!(body.len(), len.parse::<usize>().unwrap(), "Content-Length");
    }
    (code, headers, body)
}

/// The status code of a GET of `path`, or None when the console closed the
/// connection without an answer (as it does over its bound).
async fn answer_code(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let head = std::str::from_utf8(&raw).ok()?;
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

// ---- a strict Prometheus text-format (0.0.4) parser ----

#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: bool,
}

/// Parses the exposition strictly: every line is a HELP, a TYPE or a
/// sample; every sample belongs to the family declared just before it
/// (with a TYPE), has a valid name, properly quoted and escaped labels
/// and a float value; counters end in `_total`; no series repeats.
/// Returns (name, labels) -> value.
fn parse_metrics(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut out = BTreeMap::new();
    assert!(
        text.ends_with('\n'),
        "the exposition must end with a newline"
    );
    for (no, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", no + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let what = parts.next().unwrap();
            let name = parts.next().unwrap_or_else(|| panic!("{at}"));
            assert!(valid_name(name), "{at}: bad name");
            let f = families.entry(name.to_string()).or_default();
            match what {
                "HELP" => {
                    assert!(!f.help, "{at}: second HELP");
                    f.help = true;
                    let help = parts.next().unwrap_or("");
                    assert!(!help.is_empty(), "{at}: empty help");
                }
                "TYPE" => {
                    assert!(f.kind.is_empty(), "{at}: second TYPE");
                    let kind = parts.next().unwrap_or_else(|| panic!("{at}"));
                    assert!(
                        ["counter", "gauge", "untyped", "summary", "histogram"].contains(&kind),
                        "{at}"
                    );
                    f.kind = kind.to_string();
                    current = Some(name.to_string());
                }
                _ => panic!("{at}: unknown comment"),
            }
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "{at}: not a sample"
        );
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => panic!("{at}: no value"),
        };
        assert!(valid_name(name), "{at}: bad metric name");
        let fam = current
            .as_deref()
            .unwrap_or_else(|| panic!("{at}: sample before TYPE"));
        assert_eq!(name, fam, "{at}: sample outside its family");
        let kind = &families[fam].kind;
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{at}: counter without _total");
        }
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end;
            loop {
                // key
                let start = chars
                    .peek()
                    .map(|(i, _)| *i)
                    .unwrap_or_else(|| panic!("{at}"));
                if body[start..].starts_with('}') {
                    end = start + 1;
                    break;
                }
                let eq = body[start..]
                    .find("=\"")
                    .unwrap_or_else(|| panic!("{at}: label without =\""))
                    + start;
                let key = &body[start..eq];
                assert!(
                    valid_name(key) && !key.contains(':'),
                    "{at}: bad label name {key:?}"
                );
                while chars.peek().map(|(i, _)| *i < eq + 2).unwrap_or(false) {
                    chars.next();
                }
                let mut value = String::new();
                loop {
                    let (_, c) = chars
                        .next()
                        .unwrap_or_else(|| panic!("{at}: unterminated label"));
                    match c {
                        '"' => break,
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => panic!("{at}: bad escape {other:?}"),
                        },
                        '\n' => panic!("{at}: raw newline in label"),
                        c => value.push(c),
                    }
                }
                assert!(
                    labels.insert(key.to_string(), value).is_none(),
                    "{at}: repeated label"
                );
                match chars.next() {
                    Some((_, ',')) => continue,
                    Some((i, '}')) => {
                        end = i + 1;
                        break;
                    }
                    other => panic!("{at}: after a label: {other:?}"),
                }
            }
            rest = &body[end..];
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("{at}: no space before value"));
        let mut vt = value.split(' ');
        let v = vt.next().unwrap();
        let v: f64 = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("{at}: bad value")),
        };
        if let Some(ts) = vt.next() {
            ts.parse::<i64>()
                .unwrap_or_else(|_| panic!("{at}: bad timestamp"));
        }
        assert!(vt.next().is_none(), "{at}: trailing fields");
        assert!(
            out.insert((name.to_string(), labels), v).is_none(),
            "{at}: repeated series"
        );
    }
    for (name, f) in &families {
        assert!(
            f.help && !f.kind.is_empty(),
            "{name}: HELP and TYPE expected"
        );
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_the_snapshot() {
    let status = synthetic_status();
    let (_standin, console) = start(status.clone()).await;
    let (code, headers, body) = http(console.local_addr(), "GET", "/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(body).unwrap();
    let m = parse_metrics(&text);
    let get = |name: &str, l: &[(&str, &str)]| -> f64 {
        *m.get(&(name.to_string(), labels(l)))
            .unwrap_or_else(|| panic!("no {name}{l:?} in\n{text}"))
    };

    assert_eq!(get("vc5_build_info", &[("version", "0.1.0-test")]), 1.0);
    assert_eq!(
        get("vc5_start_time_seconds", &[]),
        status.started_ms as f64 / 1000.0
    );
    assert_eq!(get("vc5_ready", &[]), 1.0);
    assert_eq!(get("vc5_config_reloads_total", &[("result", "done")]), 3.0);
    assert_eq!(
        get("vc5_config_reloads_total", &[("result", "refused")]),
        1.0
    );
    assert_eq!(get("vc5_config_last_reload_successful", &[]), 0.0);
    assert_eq!(
        get(
            "vc5_interface_info",
            &[("interface", "eth0"), ("mode", "native")]
        ),
        1.0
    );

    // Every service endpoint and every real, against the status.
    let mut series = 0;
    for s in &status.services {
        let vip = s.vip.unwrap().to_string();
        let port = s.port.to_string();
        let sl = [
            ("service", s.name.as_str()),
            ("vip", vip.as_str()),
            ("port", port.as_str()),
            ("protocol", s.protocol.as_str()),
        ];
        assert_eq!(
            get("vc5_service_packets_total", &sl),
            s.counters.packets as f64
        );
        assert_eq!(get("vc5_service_bytes_total", &sl), s.counters.bytes as f64);
        assert_eq!(
            get("vc5_service_new_flows_total", &sl),
            s.counters.new_flows as f64
        );
        assert_eq!(
            get("vc5_service_dropped_packets_total", &sl),
            s.dropped.packets as f64
        );
        assert_eq!(
            get("vc5_service_dropped_bytes_total", &sl),
            s.dropped.bytes as f64
        );
        assert_eq!(get("vc5_service_up", &sl), 1.0);
        assert_eq!(get("vc5_service_healthy_reals", &sl), s.healthy as f64);
        assert_eq!(get("vc5_service_need_reals", &sl), s.need as f64);
        assert_eq!(get("vc5_service_reals", &sl), s.total as f64);
        for r in &s.reals {
            let addr = r.addr.unwrap().to_string();
            let mut rl = sl.to_vec();
            rl.push(("real", addr.as_str()));
            assert_eq!(
                get("vc5_real_packets_total", &rl),
                r.counters.packets as f64
            );
            assert_eq!(get("vc5_real_bytes_total", &rl), r.counters.bytes as f64);
            assert_eq!(
                get("vc5_real_new_flows_total", &rl),
                r.counters.new_flows as f64
            );
            assert_eq!(get("vc5_real_healthy", &rl), f64::from(u8::from(r.healthy)));
            assert_eq!(get("vc5_real_drained", &rl), 0.0);
            assert_eq!(get("vc5_real_weight", &rl), 100.0);
            assert_eq!(
                get("vc5_real_serving", &rl),
                f64::from(u8::from(r.state == "serving"))
            );
            let hop = r.next_hop.unwrap().to_string();
            let vlan = r.vlan.map(|v| v.to_string()).unwrap_or_default();
            let mut fl = rl.clone();
            fl.extend([
                ("forward", r.forward.as_str()),
                ("next_hop", hop.as_str()),
                ("mac", r.mac.as_deref().unwrap()),
                ("vlan", vlan.as_str()),
            ]);
            assert_eq!(get("vc5_real_forward_info", &fl), 1.0, "{fl:?}");
            for c in &r.checks {
                let mut cl = rl.clone();
                cl.push(("check", c.name.as_str()));
                assert_eq!(
                    get("vc5_check_passing", &cl),
                    f64::from(u8::from(c.passing))
                );
                assert_eq!(get("vc5_check_latency_seconds", &cl), c.latency_ms / 1000.0);
            }
            series += 1;
        }
    }
    assert_eq!(series, 6);
    // Exactly one real series per real of each endpoint, nothing invented.
    assert_eq!(
        m.keys()
            .filter(|(n, _)| n == "vc5_real_packets_total")
            .count(),
        6
    );

    // VIPs: the sum over their endpoints.
    assert_eq!(
        get("vc5_vip_packets_total", &[("vip", "192.0.2.1")]),
        (10_000 + 5_000) as f64
    );
    assert_eq!(
        get("vc5_vip_bytes_total", &[("vip", "192.0.2.1")]),
        1_500_000.0
    );
    assert_eq!(
        get("vc5_vip_new_flows_total", &[("vip", "192.0.2.1")]),
        150.0
    );
    assert_eq!(
        get("vc5_vip_dropped_packets_total", &[("vip", "192.0.2.1")]),
        9.0
    );
    assert_eq!(
        get("vc5_vip_packets_total", &[("vip", "2001:db8::53")]),
        700.0
    );
    assert_eq!(get("vc5_vip_announced", &[("vip", "192.0.2.1")]), 1.0);
    assert_eq!(get("vc5_vip_announced", &[("vip", "2001:db8::53")]), 0.0);
    assert_eq!(get("vc5_vip_announceable", &[("vip", "2001:db8::53")]), 1.0);

    // RHI and the data plane's reasons.
    assert_eq!(
        get("vc5_rhi_session_up", &[("mode", "bird"), ("peer", "bird")]),
        1.0
    );
    assert_eq!(
        get(
            "vc5_rhi_session_info",
            &[("mode", "bird"), ("peer", "bird"), ("state", "up")]
        ),
        1.0
    );
    // Flow sync: this host's vc5-flowsync and each peer, by address.
    let fs = &status.flow_sync;
    assert_eq!(get("vc5_flowsync_configured", &[]), 1.0);
    assert_eq!(get("vc5_flowsync_holding_announcements", &[]), 1.0);
    assert_eq!(
        get("vc5_flowsync_hold_until_seconds", &[]),
        fs.holding_until_ms as f64 / 1000.0
    );
    assert_eq!(get("vc5_flowsync_up", &[]), 1.0);
    assert_eq!(get("vc5_flowsync_synced", &[]), 0.0);
    assert_eq!(
        get(
            "vc5_flowsync_info",
            &[
                ("state", "resyncing"),
                ("sender", "c0a80001"),
                ("epoch", "1800000000000000000")
            ]
        ),
        1.0
    );
    assert_eq!(get("vc5_flowsync_sent_datagrams_total", &[]), 77.0);
    assert_eq!(get("vc5_flowsync_sent_records_total", &[]), 7777.0);
    assert_eq!(get("vc5_flowsync_lost_events_total", &[]), 4.0);
    assert_eq!(get("vc5_flow_insert_limit", &[]), 100_000.0);
    assert_eq!(get("vc5_flow_inserts_refused_total", &[]), 7.0);
    assert_eq!(get("vc5_flow_evictions_total", &[]), 3.0);
    assert_eq!(get("vc5_flow_table_full_total", &[]), 2.0);
    assert_eq!(
        get("vc5_flowsync_rejects_total", &[("reason", "auth")]),
        1.0
    );
    for p in &fs.peers {
        let addr = p.addr.unwrap().to_string();
        let pl = [("peer", addr.as_str())];
        for (name, v) in [
            ("vc5_flowsync_peer_datagrams_total", p.datagrams),
            ("vc5_flowsync_peer_records_total", p.records),
            ("vc5_flowsync_peer_written_total", p.written),
            ("vc5_flowsync_peer_gaps_total", p.gaps),
            ("vc5_flowsync_peer_unknown_real_total", p.unknown_real),
            ("vc5_flowsync_peer_rate_limited_total", p.rate_limited),
        ] {
            assert_eq!(get(name, &pl), v as f64, "{name} {addr}");
        }
        for (reason, n) in &p.rejects {
            assert_eq!(
                get(
                    "vc5_flowsync_peer_rejects_total",
                    &[("peer", &addr), ("reason", reason)]
                ),
                *n as f64
            );
        }
        assert_eq!(
            get("vc5_flowsync_peer_last_heard_seconds", &pl),
            p.last_heard_ms as f64 / 1000.0
        );
        for (q, us) in [
            ("0.5", p.delay_p50_us),
            ("0.99", p.delay_p99_us),
            ("1", p.delay_max_us),
        ] {
            assert_eq!(
                get(
                    "vc5_flowsync_peer_delay_seconds",
                    &[("peer", &addr), ("quantile", q)]
                ),
                us as f64 / 1e6
            );
        }
    }
    assert_eq!(
        m.keys()
            .filter(|(n, _)| n == "vc5_flowsync_peer_rejects_total")
            .count(),
        2 * 4
    );

    for (reason, c) in &status.global {
        assert_eq!(
            get("vc5_packets_total", &[("reason", reason)]),
            c.packets as f64
        );
        assert_eq!(
            get("vc5_bytes_total", &[("reason", reason)]),
            c.bytes as f64
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_watch_channel_and_escape_labels() {
    let (standin, console) = start(synthetic_status()).await;
    standin.update(|st| {
        st.services[0].reals[0].counters.packets = u64::MAX - 1;
        st.services[0].reals[0].drained = true;
        st.rhi.sessions[0].peer = "odd \"peer\"\\ name\nline".into();
        st.rhi.sessions[0].up = false;
    });
    let (_, _, body) = http(console.local_addr(), "GET", "/metrics").await;
    let text = String::from_utf8(body).unwrap();
    let m = parse_metrics(&text);
    let rl = labels(&[
        ("service", "nginx"),
        ("vip", "192.0.2.1"),
        ("port", "80"),
        ("protocol", "tcp"),
        ("real", "198.51.100.10"),
    ]);
    assert_eq!(
        m[&("vc5_real_packets_total".into(), rl.clone())],
        (u64::MAX - 1) as f64
    );
    assert_eq!(m[&("vc5_real_drained".into(), rl)], 1.0);
    let sl = labels(&[("mode", "bird"), ("peer", "odd \"peer\"\\ name\nline")]);
    assert_eq!(m[&("vc5_rhi_session_up".into(), sl)], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_and_other_paths() {
    let status = synthetic_status();
    let (_standin, console) = start(status.clone()).await;
    let addr = console.local_addr();
    let (code, headers, body) = http(addr, "GET", "/status.json").await;
    assert_eq!(code, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "no-store");
    let got: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(got, serde_json::to_value(&status).unwrap());
    assert_eq!(
        got["services"][0]["reals"][1]["checks"][0]["reason"],
        json!("HTTP 503")
    );

    let (code, headers, body) = http(addr, "GET", "/").await;
    assert_eq!(code, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains("/status.json") && page.contains("<svg"));
    assert!(!page.contains("/*CONSOLE_"), "every part is embedded");
    // No external asset of any kind.
    for needle in ["http://", "https://", "//cdn", "src=\"", "@import", "url("] {
        let allowed = |i: usize| page[i..].starts_with("http://www.w3.org/2000/svg");
        assert!(
            page.match_indices(needle).all(|(i, _)| allowed(i)),
            "the page refers to something external: {needle}"
        );
    }
    assert!(headers["content-security-policy"].contains("default-src 'none'"));

    let (code, _, body) = http(addr, "GET", "/status.json?x=1").await;
    assert_eq!(code, 200, "a query string does not change the path");
    assert!(!body.is_empty());
    for path in [
        "/nope",
        "/status",
        "/metrics/",
        "/index.html",
        "/favicon.ico",
    ] {
        assert_eq!(http(addr, "GET", path).await.0, 404, "{path}");
    }
    let (code, headers, _) = http(addr, "POST", "/status.json").await;
    assert_eq!(code, 405);
    assert_eq!(headers["allow"], "GET, HEAD");
    let (code, _, body) = http(addr, "HEAD", "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_closes_the_port() {
    let (_standin, console) = start(synthetic_status()).await;
    let addr = console.local_addr();
    assert_eq!(http(addr, "GET", "/metrics").await.0, 200);
    drop(console);
    // The listener closes as the aborted task ends: polled, within the
    // 100 ms the test allows.
    let t = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{addr} still accepts connections after the handle was dropped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The address is free again for a restarted console.
    let (_s2, shared) = StandIn::start(synthetic_status());
    console::serve(addr, shared).await.expect("rebind");
    // And a taken one is an error, not a panic.
    let (_s3, shared) = StandIn::start(synthetic_status());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(matches!(
        console::serve(taken.local_addr().unwrap(), shared).await,
        Err(console::ConsoleError::Bind { .. })
    ));
}

/// 2,000 idle connections (what took vc5d's descriptors and failed its
/// health checks) hold at most `MAX_CONNECTIONS` of the console's: the rest
/// are closed at once, and once the idle ones go the console serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_bounded() {
    let (_standin, console) = start(synthetic_status()).await;
    let addr = console.local_addr();
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    // Closed by the console: reading gives end of file (or a reset) quickly.
    let mut closed = 0;
    for s in idle.iter_mut() {
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(20), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => panic!("the console sent bytes unasked"),
            Err(_) => {} // still open: one of the served connections
        }
    }
    assert!(
        2000 - closed <= console::MAX_CONNECTIONS,
        "{} connections held open, bound {}",
        2000 - closed,
        console::MAX_CONNECTIONS
    );
    assert!(closed >= 2000 - console::MAX_CONNECTIONS);
    drop(idle);
    // The console sees the closes and reaps those connections: polled,
    // within the half second the test allows.
    let t = Instant::now();
    while answer_code(addr, "/metrics").await != Some(200) {
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "the console does not serve again once the idle connections are gone"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(http(addr, "GET", "/metrics").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_the_status_and_follows_changes_without_reloading() {
    let (standin, console) = start(synthetic_status()).await;
    let url = format!("http://{}/", console.local_addr());
    // Traffic: counters grow every 250 ms, as the control loop's would, so
    // the page has rates and graphs to draw.
    let traffic = {
        let status = standin.status.clone();
        let tx = standin.tx.clone();
        tokio::spawn(async move {
            let mut k = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                k += 1;
                let mut s = status.lock().unwrap();
                for (i, svc) in s.services.iter_mut().enumerate() {
                    let step = 40 + 25 * i as u64 + (k % 8) * 6;
                    svc.counters.packets += step;
                    svc.counters.bytes += step * 900;
                    svc.counters.new_flows += step / 20;
                    for r in svc.reals.iter_mut().filter(|r| r.healthy) {
                        r.counters.packets += step / 2;
                        r.counters.bytes += step * 450;
                        r.counters.new_flows += step / 40;
                    }
                }
                for (_, g) in s.global.iter_mut() {
                    g.packets += 50;
                    g.bytes += 50 * 700;
                }
                s.at_ms = now_ms();
                tx.send_replace(std::sync::Arc::new(s.clone()));
            }
        })
    };

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("vc5-console.png");
    let standin_ref = &standin;
    let result = tokio::task::block_in_place(|| {
        let mut b = Browser::start();
        b.open(&url, 1400, 1000);
        let real80 = r#"tr.real[data-endpoint="192.0.2.1:80/tcp"][data-real="198.51.100.10"]"#;
        b.wait_for(
            "document.querySelectorAll('.service').length",
            json!(3),
            Duration::from_secs(20),
        );
        // Services, VIPs and whether announced, reals with health, reasons.
        assert_eq!(
            b.eval(&text_of(
                r#".service[data-endpoint="[2001:db8::53]:53/udp"] .name"#
            )),
            json!("dns")
        );
        assert_eq!(
            b.eval(&text_of(r#"tr.vip[data-vip="192.0.2.1"] .route"#)),
            json!("announced")
        );
        assert_eq!(
            b.eval(&text_of(r#"tr.vip[data-vip="2001:db8::53"] .route"#)),
            json!("pending")
        );
        assert_eq!(
            b.eval(&text_of(&format!("{real80} .state"))),
            json!("serving")
        );
        let failing = b.eval(&text_of(
            r#"tr.real[data-endpoint="192.0.2.1:80/tcp"][data-real="198.51.100.11"] .checks"#,
        ));
        assert!(failing.as_str().unwrap().contains("HTTP 503"), "{failing}");
        assert_eq!(
            b.eval(&text_of(
                r#"tr.real[data-endpoint="192.0.2.1:80/tcp"][data-real="198.51.100.11"] .health"#
            )),
            json!("unhealthy")
        );
        // How reals are reached: on-link by their MAC; tunnelled through a
        // gateway, with the method in the service's head.
        assert_eq!(
            b.eval(&text_of(&format!("{real80} .hop"))),
            json!("02:00:00:00:00:0a")
        );
        let dns = r#".service[data-endpoint="[2001:db8::53]:53/udp"]"#;
        assert_eq!(
            b.eval(&text_of(&format!("{dns} .forward"))),
            json!("gue:6080")
        );
        assert_eq!(
            b.eval(&text_of(&format!(
                r#"{dns} tr.real[data-real="2001:db8:1::10"] .hop"#
            ))),
            json!("via 2001:db8::1 02:00:00:00:00:01 vlan 20")
        );
        let events = b.eval(&text_of("#events"));
        assert!(
            events.as_str().unwrap().contains("vc5d started"),
            "{events}"
        );
        // Flow sync: the hold in the header and the section, each peer.
        let hold = b.eval(&text_of("#hold"));
        assert!(
            hold.as_str().unwrap().contains("holding announcements"),
            "{hold}"
        );
        // The last reload was refused: the header says so.
        let reload = b.eval(&text_of("#reload"));
        assert!(
            reload.as_str().unwrap().contains("reload refused"),
            "{reload}"
        );
        let fs = b.eval(&text_of("#flowsync"));
        let fs = fs.as_str().unwrap();
        assert!(fs.contains("vc5-flowsync resyncing"), "{fs}");
        assert!(fs.contains("holding VIP announcements"), "{fs}");
        assert!(fs.contains("4 flow events lost"), "{fs}");
        let peer = b.eval(&text_of(r#"tr.peer[data-peer="2001:db8::251"]"#));
        let peer = peer.as_str().unwrap();
        for needle in [
            "c0a80002",
            "10,000",
            "auth 6",
            "0.6s ago",
            "0.30 / 3.00 / 18 ms",
        ] {
            assert!(peer.contains(needle), "{needle:?} not in {peer}");
        }

        // A marker in the page's JavaScript world: a reload would lose it.
        b.eval("window.__vc5_marker = 42");
        standin_ref.update(|st| {
            for s in st.services.iter_mut().filter(|s| s.name == "nginx") {
                s.reals[0].drained = true;
                s.reals[0].state = "drained".into();
            }
            st.vips[1].announced = true;
            st.flow_sync.holding_announcements = false;
            st.flow_sync.local.state = "synced".into();
            st.reloads.done += 1;
            st.reloads.last = Some(vc5::status::LastReload {
                at_ms: now_ms(),
                ok: true,
                error: None,
            });
            st.events.push_back(vc5::status::LogEvent {
                at_ms: now_ms(),
                level: "info".into(),
                message: "real 198.51.100.10 of nginx drained".into(),
            });
        });
        b.wait_for(
            &text_of(&format!("{real80} .state")),
            json!("drained"),
            Duration::from_secs(5),
        );
        b.wait_for(
            &text_of(r#"tr.vip[data-vip="2001:db8::53"] .route"#),
            json!("announced"),
            Duration::from_secs(5),
        );
        b.wait_for(&text_of("#hold"), json!(""), Duration::from_secs(5));
        b.wait_for(&text_of("#reload"), json!(""), Duration::from_secs(5));
        let fs = b.eval(&text_of("#flowsync"));
        let fs = fs.as_str().unwrap();
        assert!(fs.contains("vc5-flowsync synced"), "{fs}");
        assert!(!fs.contains("null") && !fs.contains("holding"), "{fs}");
        let events = b.eval(&text_of("#events li"));
        assert!(
            events
                .as_str()
                .unwrap()
                .ends_with("real 198.51.100.10 of nginx drained"),
            "newest first: {events}"
        );
        assert_eq!(
            b.eval("window.__vc5_marker"),
            json!(42),
            "the page was reloaded"
        );
        assert_eq!(
            b.eval("performance.getEntriesByType('navigation').length"),
            json!(1)
        );

        // Rates from successive snapshots: the summary's packets/s is a
        // number, and the graphs have lines.
        b.wait_for(
            "document.querySelectorAll('#graph-pps polyline').length",
            json!(1),
            Duration::from_secs(10),
        );
        let pps = b.eval(&text_of("#summary .tile .v"));
        assert_ne!(pps, json!("–"));
        // Counters as exact numbers: the cell shows what the status says.
        let packets = standin_ref.real("nginx", "198.51.100.11").counters.packets;
        let cell = b.eval(&text_of(
            r#"tr.real[data-endpoint="192.0.2.1:80/tcp"][data-real="198.51.100.11"] .packets"#,
        ));
        assert_eq!(cell.as_str().unwrap().replace(',', ""), packets.to_string());
        let live = b.eval(&text_of("#live"));
        assert!(live.as_str().unwrap().starts_with("live"), "{live}");

        // Let the graphs fill a little, then keep a picture for people.
        std::thread::sleep(Duration::from_secs(6));
        b.screenshot(&shot);
        std::mem::take(&mut b.errors)
    });
    traffic.abort();
    assert!(result.is_empty(), "the page logged errors: {result:?}");
    println!("screenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_says_when_vc5d_is_unreachable() {
    let (standin, console) = start(synthetic_status()).await;
    let url = format!("http://{}/", console.local_addr());
    tokio::task::block_in_place(|| {
        let mut b = Browser::start();
        b.open(&url, 1200, 800);
        b.wait_for(
            "document.querySelectorAll('.service').length",
            json!(3),
            Duration::from_secs(20),
        );
        drop(console);
        let start = Instant::now();
        loop {
            let live = b.eval(&text_of("#live"));
            if live.as_str().unwrap().starts_with("cannot reach vc5d") {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "still {live}");
            std::thread::sleep(Duration::from_millis(100));
        }
        // The last known state stays on screen.
        assert_eq!(
            b.eval("document.querySelectorAll('.service').length"),
            json!(3)
        );
        // JavaScript's fetch errors are not page errors.
        b.errors.retain(|e| !e.contains("Failed to fetch"));
    });
    drop(standin);
}
