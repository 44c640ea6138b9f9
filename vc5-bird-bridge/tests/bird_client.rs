//! BIRD's reply protocol against golden transcripts captured from a real
//! BIRD 2, byte for byte, and against the live BIRD the transcripts came from.
//!
//! `tests/golden/*.txt` hold the exact bytes BIRD 2.0.12 wrote for each
//! command (see `CASES`). Regenerate them with
//! `VC5BB_WRITE_GOLDEN=1 cargo test --test bird_client live_bird_matches_golden`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vc5_bird_bridge::bird::client::{BirdClient, BirdError, ConfigureOutcome};
use vc5_bird_bridge::bird::reply::{
    CodeClass, Event, ProtocolError, Reply, ReplyParser, parse_all,
};
use vc5_testkit::bird::{Bird, Netns, TempDir, require_root};

/// (golden file, command sent; None = the greeting).
const CASES: &[(&str, Option<&str>)] = &[
    ("greeting", None),
    ("show_status", Some("show status")),
    ("show_protocols", Some("show protocols")),
    ("configure_check", Some("configure check")),
    ("configure", Some("configure")),
    ("disable", Some("disable vc5_vips4")),
    ("disable_again", Some("disable vc5_vips4")),
    ("enable", Some("enable vc5_vips4")),
    ("show_route", Some("show route")),
    ("show_protocols_nomatch", Some("show protocols \"nosuch*\"")),
    ("unknown_command", Some("frobnicate now")),
    // After the config file is broken (see `break_config`).
    ("configure_syntax_error", Some("configure")),
    ("configure_check_error", Some("configure check")),
];

const BREAK_BEFORE: &str = "configure_syntax_error";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn golden(name: &str) -> Vec<u8> {
    let p = golden_dir().join(format!("{name}.txt"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn one(name: &str) -> Reply {
    let bytes = golden(name);
    let replies = parse_all(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(replies.len(), 1, "{name}: one reply");
    let r = replies.into_iter().next().expect("one reply");
    // Byte for byte: the parsed reply written back is what BIRD sent.
    assert_eq!(r.to_wire(), bytes, "{name}: round trip");
    // And any split of the bytes parses the same.
    for cut in 1..bytes.len() {
        let mut p = ReplyParser::new();
        let mut ev = p.push_bytes(&bytes[..cut]).expect("first part");
        ev.extend(p.push_bytes(&bytes[cut..]).expect("second part"));
        assert_eq!(ev, vec![Event::Reply(r.clone())], "{name}: cut at {cut}");
    }
    r
}

fn codes(r: &Reply) -> Vec<u16> {
    r.lines.iter().map(|l| l.code).collect()
}

#[test]
fn golden_greeting() {
    let r = one("greeting");
    assert_eq!(r.code(), 1);
    assert!(r.message().starts_with("BIRD 2."), "{}", r.message());
}

#[test]
fn golden_show_status() {
    let r = one("show_status");
    assert_eq!(codes(&r), [1000, 1011, 1011, 1011, 1011, 1011, 13]);
    assert!(r.lines[2].continuation);
    assert_eq!(r.message(), "Daemon is up and running");
}

#[test]
fn golden_show_protocols() {
    let r = one("show_protocols");
    assert_eq!(r.lines[0].code, 2002, "table heading");
    assert!(r.lines[0].text.starts_with("Name"));
    assert_eq!(r.code(), 0);
    assert!(r.lines.iter().any(|l| l.text.starts_with("vc5_vips4")));
}

#[test]
fn golden_configure() {
    let r = one("configure");
    assert_eq!(codes(&r), [2, 3]);
    assert_eq!(r.lines[0].text, "Reading configuration from golden.conf");
    assert_eq!(r.message(), "Reconfigured");
    let r = one("configure_check");
    assert_eq!(codes(&r), [2, 20]);
    assert_eq!(r.message(), "Configuration OK");
}

#[test]
fn golden_configure_errors_have_positions() {
    for name in ["configure_syntax_error", "configure_check_error"] {
        let r = one(name);
        assert_eq!(r.code(), 8002, "{name}");
        assert_eq!(r.class(), CodeClass::RuntimeError);
        let p = r.error_position().expect("position");
        assert_eq!(
            (p.file.as_str(), p.line, p.column),
            ("golden.conf", 10, 31),
            "{name}"
        );
        assert!(p.message.contains("syntax error"), "{}", p.message);
    }
}

#[test]
fn golden_enable_disable() {
    let r = one("disable");
    assert_eq!(codes(&r), [9, 0]);
    assert_eq!(r.lines[0].text, "vc5_vips4: disabled");
    let r = one("disable_again");
    assert_eq!(codes(&r), [8, 0]);
    assert_eq!(r.lines[0].text, "vc5_vips4: already disabled");
    let r = one("enable");
    assert_eq!(codes(&r), [11, 0]);
}

#[test]
fn golden_show_route() {
    let r = one("show_route");
    assert_eq!(r.lines[0].code, 1007);
    assert!(
        r.lines
            .iter()
            .any(|l| l.text.starts_with("203.0.113.10/32"))
    );
}

#[test]
fn golden_errors() {
    let r = one("unknown_command");
    assert_eq!(r.code(), 9001);
    assert_eq!(r.class(), CodeClass::ParseError);
    assert!(r.is_error());
    let r = one("show_protocols_nomatch");
    assert_eq!(r.code(), 8003);
    assert_eq!(r.message(), "No protocols match");
}

// ------------------------------------------------------------------ live

const CONFIG: &str = "router id 192.0.2.1;\n\
protocol device {}\n\
protocol static vc5_vips4 {\n  ipv4;\n  route 203.0.113.10/32 blackhole;\n}\n\
protocol static vc5_vips6 {\n  ipv6;\n}\n";

fn start_bird(ns: &Netns, dir: &Path) -> Bird {
    Bird::start(ns, dir, "golden", CONFIG).expect("BIRD starts")
}

fn break_config(bird: &Bird) {
    // Line 10: a channel statement without its semicolon.
    let broken = format!("{CONFIG}protocol static broken {{ ipv4 }}\n");
    std::fs::write(bird.config_path(), broken).expect("write config");
}

/// Reads raw bytes until one complete reply (the parser says when).
fn read_reply_raw(s: &mut UnixStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut p = ReplyParser::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "BIRD closed the socket");
        raw.extend_from_slice(&buf[..n]);
        let ev = p.push_bytes(&buf[..n]).expect("parses");
        if ev.iter().any(|e| matches!(e, Event::Reply(_))) {
            return raw;
        }
    }
}

#[test]
fn live_bird_matches_golden() {
    require_root();
    let write = std::env::var_os("VC5BB_WRITE_GOLDEN").is_some();
    let ns = Netns::new("golden").expect("netns");
    let dir = TempDir::new("golden").expect("tempdir");
    let bird = start_bird(&ns, dir.path());
    let mut s = UnixStream::connect(bird.socket()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    for (name, cmd) in CASES {
        if *name == BREAK_BEFORE {
            break_config(&bird);
        }
        if let Some(c) = cmd {
            s.write_all(format!("{c}\n").as_bytes()).expect("send");
        }
        let raw = read_reply_raw(&mut s);
        if write {
            std::fs::write(golden_dir().join(format!("{name}.txt")), &raw).expect("write golden");
            continue;
        }
        let live = parse_all(&raw).expect("live parses");
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].to_wire(), raw, "{name}: live round trip");
        let gold = parse_all(&golden(name)).expect("golden parses");
        // Times differ between runs; the structure must not.
        assert_eq!(codes(&live[0]), codes(&gold[0]), "{name}: codes");
        if !matches!(*name, "show_status" | "show_protocols" | "show_route") {
            assert_eq!(live[0], gold[0], "{name}: same reply");
        }
    }
}

#[test]
fn live_client_commands_and_errors() {
    require_root();
    let ns = Netns::new("client").expect("netns");
    let dir = TempDir::new("client").expect("tempdir");
    let mut bird = start_bird(&ns, dir.path());
    let sock = bird.socket();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = BirdClient::connect(&sock).await.expect("connects");
        assert!(c.greeting().starts_with("BIRD 2."));
        assert!(c.version().is_some_and(|v| v.starts_with("2.")));
        assert_eq!(
            c.configure(true).await.expect("check"),
            ConfigureOutcome::CheckOk
        );
        assert_eq!(
            c.configure(false).await.expect("configure"),
            ConfigureOutcome::Reconfigured
        );
        let r = c.run("show protocols").await.expect("show");
        assert!(r.is_success());
        // A 9xxx reply is a typed error, and the connection stays usable.
        match c.run("frobnicate").await {
            Err(BirdError::Command { code: 9001, .. }) => {}
            other => panic!("expected 9001, got {other:?}"),
        }
        assert!(matches!(
            c.command("x\ny").await,
            Err(BirdError::InvalidCommand(_))
        ));
        break_config(&bird);
        match c.configure(false).await {
            Err(BirdError::Command {
                code: 8002,
                position: Some(p),
                ..
            }) => {
                assert_eq!((p.line, p.column), (10, 31));
            }
            other => panic!("expected 8002, got {other:?}"),
        }
        // BIRD kept its old configuration.
        let r = c.run("show route").await.expect("show route");
        assert!(r.lines.iter().any(|l| l.text.contains("203.0.113.10/32")));

        // BIRD going away is noticed while idle.
        bird.kill();
        let e = tokio::time::timeout(Duration::from_secs(5), c.closed())
            .await
            .expect("noticed in time");
        assert!(e.is_connection_error(), "{e:?}");
        // The stale socket file now refuses connections.
        match BirdClient::connect(&sock).await {
            Err(BirdError::Connect { .. }) => {}
            other => panic!("expected a connect error, got {other:?}"),
        }
    });
}

#[test]
fn a_socket_that_is_not_bird_is_detected() {
    let dir = TempDir::new("notbird").expect("tempdir");
    let path = dir.path().join("fake.ctl");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let server = std::thread::spawn(move || {
        // One peer answers garbage, the next says nothing at all.
        let (mut s, _) = listener.accept().expect("accept");
        let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
        let (_s2, _) = listener.accept().expect("accept");
        std::thread::sleep(Duration::from_millis(800));
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match BirdClient::connect(&path).await {
            Err(BirdError::Protocol(ProtocolError::NotBird(g))) => {
                assert!(g.starts_with("HTTP/1.0"))
            }
            other => panic!("expected NotBird, got {other:?}"),
        }
        let silent =
            BirdClient::connect_with(&path, Duration::from_millis(300), Duration::from_secs(1))
                .await;
        assert!(
            matches!(silent, Err(BirdError::Timeout { .. })),
            "{silent:?}"
        );
        let missing = BirdClient::connect(&dir.path().join("absent.ctl")).await;
        assert!(
            matches!(missing, Err(BirdError::Connect { .. })),
            "{missing:?}"
        );
    });
    server.join().expect("server thread");
}
