//! vc5d's command line and its handling of bad input: configurations that
//! do not validate, interfaces that do not exist, drivers that refuse
//! native XDP. Each must give a clear message and either a non-zero exit
//! or a logged fallback, and never leave a half-attached data plane.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use vc5_testkit::netns::Netns;
use vc5_testkit::xdp::{TempBpffs, require_root};

const VC5D: &str = env!("CARGO_BIN_EXE_vc5d");

/// The original vc5 README's config.yaml.
const ORIGINAL: &str = include_str!("data/original.yaml");

static N: AtomicUsize = AtomicUsize::new(0);

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "vc5-cli-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn vc5d(args: &[&str]) -> Output {
    Command::new(VC5D).args(args).output().unwrap()
}

#[test]
fn check_prints_the_original_configuration_normalised() {
    let f = temp_file("config.yaml", ORIGINAL);
    let out = vc5d(&["--check", "--config", f.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["services"][0]["ports"], serde_json::json!([80, 443]));
    assert_eq!(v["services"][0]["reals"][1]["addr"], "10.10.100.11");
    assert_eq!(v["rhi"]["as_number"], 65000);
    assert_eq!(v["services"][0]["forward"], "l2");

    // A tunnel prints its method and port as the file writes them; a
    // tunnel port on a method without UDP is refused where it is.
    let gue = ORIGINAL.replace(
        "    desc: web server\n",
        "    desc: web server\n    forward: gue\n    tunnel_port: 6080\n",
    );
    let f = temp_file("gue.yaml", &gue);
    let out = vc5d(&["--check", "--config", f.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["services"][0]["forward"], "gue");
    assert_eq!(v["services"][0]["tunnel_port"], 6080);
    let f = temp_file("gre.yaml", &gue.replace("forward: gue", "forward: gre"));
    let out = vc5d(&["--check", "--config", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:9:18: tunnel_port has no effect with forward: gre",
            f.display()
        )),
        "{err}"
    );
}

#[test]
fn check_prints_the_flow_sync_settings_and_refuses_half_of_them() {
    // The original's file has `multicast` alone: flow sync off, defaults shown.
    let f = temp_file("config.yaml", ORIGINAL);
    let out = vc5d(&["--check", "--config", f.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["multicast"], "224.0.0.1:9999");
    assert_eq!(v["flow_sync_key"], serde_json::Value::Null);
    assert_eq!(v["flow_sync_wait_ms"], 10_000);

    let text = format!(
        "{ORIGINAL}flow_sync_key: flow.key\nflow_sync_wait: 3s\nflow_sync_rate: 1000\nflow_sync_resync_rate: 500\n"
    );
    let f = temp_file("config.yaml", &text);
    let out = vc5d(&["--check", "--config", f.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Relative to the configuration's directory.
    let key = f.parent().unwrap().join("flow.key");
    assert_eq!(v["flow_sync_key"], key.to_str().unwrap());
    assert_eq!(v["flow_sync_wait_ms"], 3000);
    assert_eq!(v["flow_sync_rate"], 1000);
    assert_eq!(v["flow_sync_resync_rate"], 500);

    // The key without the group, and a wait out of bounds.
    let no_group = text.replace("multicast: 224.0.0.1:9999\n", "");
    let f = temp_file("config.yaml", &no_group);
    let out = vc5d(&["--check", "--config", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flow_sync_key needs multicast"), "{err}");
    let line = no_group
        .lines()
        .position(|l| l.starts_with("flow_sync_key"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("{}:{line}:16: ", f.display())),
        "{err}"
    );
    let f = temp_file("config.yaml", &text.replace("wait: 3s", "wait: 10m"));
    let out = vc5d(&["--check", "--config", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("flow_sync_wait must be between 2s and 5m, not 10m"),
        "{err}"
    );
}

#[test]
fn check_names_file_line_and_column_of_an_error() {
    let bad = ORIGINAL.replace(
        "    desc: web server\n",
        "    desc: web server\n    colour: blue\n",
    );
    let f = temp_file("bad.yaml", &bad);
    let out = vc5d(&["--check", "--config", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:8:5: ", f.display())), "{err}");
    assert!(err.contains("colour"), "{err}");

    let bad = ORIGINAL.replace("10.10.100.11]", "10.10.100.300]");
    let f = temp_file("bad.yaml", &bad);
    let out = vc5d(&["--check", "--config", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:15:25: ", f.display())), "{err}");
}

#[test]
fn a_missing_configuration_file_is_a_clear_error() {
    let out = vc5d(&["--check", "--config", "/nonexistent/vc5.yaml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/vc5.yaml"));
}

#[test]
fn an_interface_that_does_not_exist_is_refused_before_anything_is_loaded() {
    require_root();
    let fs = TempBpffs::new().unwrap();
    let f = temp_file("config.yaml", ORIGINAL);
    let dir = fs.path().join("vc5");
    let out = vc5d(&[
        "--config",
        f.to_str().unwrap(),
        "--interface",
        "vc5-nosuch0",
        "--address",
        "192.0.2.1",
        "--bpffs",
        dir.to_str().unwrap(),
        "--dbus",
        "none",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interface vc5-nosuch0"), "{err}");
    assert!(!dir.exists(), "nothing was pinned");
}

/// A namespace of the test's own (the test kit's, deleted on drop) with
/// two bridges to attach to: d0 with an address, d1 without.
fn netns() -> Netns {
    let ns = Netns::new("cli").expect("a namespace");
    ns.sh(
        "ip link add d0 type bridge && ip addr add 192.0.2.1/24 dev d0 && ip link set d0 up && \
         ip link add d1 type bridge && ip link set d1 up",
    )
    .expect("bridges");
    ns
}

/// `sh -ec script` in `ns`; panics when it fails.
fn sh_in(ns: &Netns, script: &str) -> String {
    ns.sh(script).unwrap_or_else(|e| panic!("{e}"))
}

/// vc5d with `args`, in `ns`.
fn vc5d_in(ns: &Netns, args: &[&str]) -> Command {
    let mut c = ns.command(VC5D);
    c.args(args);
    c
}

fn links(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("links"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_driver_that_refuses_native_mode_fails_in_native_and_falls_back_in_auto() {
    require_root();
    let ns = netns();
    let fs = TempBpffs::new().unwrap();
    let dir = fs.path().join("vc5");
    let cfg = ORIGINAL.replace("10.10.100.10, 10.10.100.11", "192.0.2.10");
    let f = temp_file("config.yaml", &cfg);
    // BIRD's socket and the include file in the test's own directory, never
    // the host's /run.
    let private = f.parent().unwrap().to_path_buf();
    let (sock, include) = (private.join("bird.ctl"), private.join("bird-vips.conf"));
    let args = |mode: &'static str| {
        vec![
            "--config".to_string(),
            f.to_str().unwrap().into(),
            "--interface".into(),
            "d0".into(),
            "--address".into(),
            "192.0.2.1".into(),
            "--bpffs".into(),
            dir.to_str().unwrap().into(),
            "--dbus".into(),
            "none".into(),
            "--xdp-mode".into(),
            mode.into(),
            "--bird-socket".into(),
            sock.to_str().unwrap().into(),
            "--bird-include".into(),
            include.to_str().unwrap().into(),
        ]
    };
    let argv = args("native");
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = vc5d_in(&ns, &argv).output().unwrap();
    assert!(!out.status.success(), "the bridge driver has no native XDP");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("native mode"), "{err}");
    assert!(
        !sh_in(&ns, "ip link show d0").contains("xdp"),
        "nothing attached"
    );
    assert!(links(&dir).is_empty(), "no link pinned");

    let argv = args("auto");
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut child = vc5d_in(&ns, &argv).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    // Attached, and the link pinned (just after).
    let deadline = Instant::now() + Duration::from_secs(15);
    while !sh_in(&ns, "ip link show d0").contains("xdpgeneric") || links(&dir) != ["d0"] {
        assert!(
            Instant::now() < deadline,
            "auto mode never attached in generic mode"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let log = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("running in generic mode"), "{log}");
    assert_eq!(links(&dir), vec!["d0".to_string()]);
    assert!(
        sh_in(&ns, "ip link show d0").contains("xdpgeneric"),
        "stays attached after vc5d stops"
    );

    // The next vc5d serves d1 only: d0 is detached.
    let argv = args("generic");
    let mut argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let i = argv.iter().position(|a| *a == "d0").unwrap();
    argv[i] = "d1";
    let mut child = vc5d_in(&ns, &argv).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !sh_in(&ns, "ip link show d1").contains("xdpgeneric") {
        assert!(Instant::now() < deadline, "never attached to d1");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Just after, d0's link is removed and the kernel detaches it.
    while links(&dir) != ["d1"] || sh_in(&ns, "ip link show d0").contains("xdp") {
        assert!(
            Instant::now() < deadline,
            "d0 never detached: links {:?}",
            links(&dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(
        !sh_in(&ns, "ip link show d0").contains("xdp"),
        "d0 detached"
    );
    assert_eq!(links(&dir), vec!["d1".to_string()]);
}

/// Runs `vc5d --check` on `text` and returns its stderr, asserting that it failed.
fn check_refuses(text: &str) -> (PathBuf, String) {
    let f = temp_file("bad.yaml", text);
    let out = vc5d(&["--check", "--config", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "accepted: {text}");
    assert!(out.stdout.is_empty());
    (f, err)
}

#[test]
fn check_refuses_control_characters_in_names() {
    let (f, err) = check_refuses(&ORIGINAL.replace("name: nginx", "name: \"web\\0nul\""));
    assert!(
        err.contains(&format!(
            "{}:6:11: the service name `web\\0nul` contains the character U+0000",
            f.display()
        )),
        "{err}"
    );
    let (f, err) = check_refuses(&ORIGINAL.replace("name: http check", "name: \"a\\rb\""));
    assert!(err.contains(&format!("{}:13:16: ", f.display())), "{err}");
    assert!(err.contains("U+000D"), "{err}");
}

#[test]
fn check_refuses_what_vc5d_would_refuse_or_panic_on() {
    // (a) durations whose sum overflowed in the running daemon.
    for interval in ["18446744073709551615s", "5124095576030431h"] {
        let text = ORIGINAL.replace(
            "host: example.com}",
            &format!("host: example.com, interval: {interval}, timeout: 1h}}"),
        );
        let (f, err) = check_refuses(&text);
        assert!(
            err.contains(&format!("{}:13:", f.display()))
                && err.contains("interval must be between 100ms and 1h"),
            "{err}"
        );
    }
    // (b) requests the health monitor cannot send.
    let (_, err) = check_refuses(&ORIGINAL.replace("path: /alive", "path: /ålive"));
    assert!(
        err.contains(":13:") && err.contains("invalid path"),
        "{err}"
    );
    let (_, err) = check_refuses(&ORIGINAL.replace("host: example.com", "host: 'a b'"));
    assert!(
        err.contains(":13:") && err.contains("invalid host"),
        "{err}"
    );
    // (b) more endpoints than the data plane holds.
    let ports: Vec<String> = (1..=4096).map(|p| p.to_string()).collect();
    let text = ORIGINAL
        .replace("port: [80, 443]", &format!("port: [{}]", ports.join(", ")))
        .replace("port: 80, ", "");
    let (_, err) = check_refuses(&text.replace(
        "    checks:\n      - {name: http check, type: http, path: /alive, host: example.com}\n",
        "",
    ));
    assert!(err.contains("the data plane holds at most 4095"), "{err}");
}

#[test]
fn check_refuses_nulls_quoted_booleans_and_placeholder_addresses() {
    let cases = [
        (
            ORIGINAL.replace("need: 1", "need: null"),
            "need must be an integer, not nothing",
        ),
        (
            ORIGINAL.replace("multicast: 224.0.0.1:9999", "multicast: null"),
            "multicast must be a string, not nothing",
        ),
        (
            ORIGINAL.replace("host: example.com", "host: null"),
            "host must be a string, not nothing",
        ),
        (
            ORIGINAL.replace("host: example.com", "host: -1"),
            "invalid host `-1`",
        ),
        (ORIGINAL.replace("name: nginx", "name: .inf"), ""),
        (
            ORIGINAL.replace("10.10.100.11]", "{addr: 10.10.100.11, disabled: 'true'}]"),
            "disabled must be true or false, not the quoted string `true`",
        ),
        (
            ORIGINAL.replace("addr: 192.168.101.1", "addr: 0.0.0.0"),
            "service address 0.0.0.0 is the unspecified address",
        ),
        (
            ORIGINAL.replace("10.10.100.11]", "'::ffff:10.10.100.12']"),
            "real address ::ffff:10.10.100.12 is an IPv4-mapped IPv6 address",
        ),
        (
            ORIGINAL.replace("10.10.100.4]", "127.0.0.1]"),
            "peer address 127.0.0.1 is a loopback address",
        ),
        (
            ORIGINAL.replace("10.10.100.11]", "192.168.101.1]"),
            "is also an address of this service",
        ),
    ];
    for (text, needle) in cases {
        let (f, err) = check_refuses(&text);
        // FILE:LINE:COL: message
        let rest = err
            .trim()
            .strip_prefix("vc5d: ")
            .unwrap_or(err.trim())
            .strip_prefix(&format!("{}:", f.display()))
            .unwrap_or_else(|| panic!("no file name in {err}"));
        let mut parts = rest.splitn(3, ':');
        let line: u32 = parts.next().unwrap().parse().unwrap();
        let col: u32 = parts.next().unwrap().parse().unwrap();
        assert!(line > 0 && col > 0, "{err}");
        assert!(err.contains(needle), "expected {needle:?} in {err}");
    }
}

#[test]
fn an_endless_config_file_is_refused_quickly() {
    let started = Instant::now();
    let out = vc5d(&["--check", "--config", "/dev/zero"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/dev/zero") && err.contains("larger than 16 MiB (16777216 bytes)"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

/// The README's benchmark scale: 1,000 services of 64 reals, each written as
/// `{addr, weight}`.
fn benchmark_scale() -> String {
    let mut text = String::from("services:\n");
    for s in 0..1000 {
        text.push_str(&format!(
            "  - name: svc{s}\n    addr: 10.{}.{}.1\n    port: 80\n    real: g{s}\n    checks: [{{type: http, path: /alive}}]\n",
            100 + s / 250,
            s % 250
        ));
    }
    text.push_str("reals:\n");
    for s in 0..1000 {
        text.push_str(&format!("  g{s}:\n"));
        for r in 0..64 {
            text.push_str(&format!(
                "    - {{addr: 172.{}.{}.{}, weight: {}}}\n",
                16 + s / 250,
                s % 250,
                r + 1,
                r % 3 + 1
            ));
        }
    }
    text
}

#[test]
fn check_loads_the_readme_benchmark_scale() {
    let text = benchmark_scale();
    let f = temp_file("bench.yaml", &text);
    let started = Instant::now();
    let out = vc5d(&["--check", "--config", f.to_str().unwrap()]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["services"].as_array().unwrap().len(), 1000);
    assert_eq!(v["services"][999]["reals"].as_array().unwrap().len(), 64);
    eprintln!(
        "vc5d --check on 1000 services x 64 reals ({} bytes): {took:?}",
        text.len()
    );
}

#[test]
fn a_config_whose_checks_cannot_run_is_refused_before_xdp_is_attached() {
    require_root();
    let ns = netns();
    let fs = TempBpffs::new().unwrap();
    let dir = fs.path().join("vc5");
    let cfg = ORIGINAL
        .replace("10.10.100.10, 10.10.100.11", "192.0.2.10")
        .replace("path: /alive", "path: /ålive");
    let f = temp_file("config.yaml", &cfg);
    let private = f.parent().unwrap().to_path_buf();
    let (sock, include) = (private.join("bird.ctl"), private.join("bird-vips.conf"));
    let out = vc5d_in(
        &ns,
        &[
            "--config",
            f.to_str().unwrap(),
            "--interface",
            "d0",
            "--address",
            "192.0.2.1",
            "--bpffs",
            dir.to_str().unwrap(),
            "--dbus",
            "none",
            "--console",
            "127.0.0.1:0",
            "--xdp-mode",
            "generic",
            "--bird-socket",
            sock.to_str().unwrap(),
            "--bird-include",
            include.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:13:", f.display())) && err.contains("invalid path"),
        "{err}"
    );
    assert!(
        !sh_in(&ns, "ip link show d0").contains("xdp"),
        "nothing attached"
    );
    assert!(!dir.exists(), "nothing pinned");
}
