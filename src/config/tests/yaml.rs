//! The file itself: YAML syntax, unknown keys, aliases, JSON, and reading it
//! from disk.

use std::path::PathBuf;

use super::{ORIGINAL, assert_err, fail, ok, svc};
use crate::config::{ConfigError, load, parse};

#[test]
fn syntax_errors() {
    assert_err("services: [\n", "1:11", "");
    assert_err("rhi:\n  as_number: 1\n peers: []\n", "3:2", "");
    let e = fail("services:\n\t- name: x\n");
    assert!(e.line() == Some(2), "{e}");
    assert_err("", "1:1", "the configuration is empty");
    assert_err("# nothing here\n", "1:1", "the configuration is empty");
    assert_err(
        "services: []\nservices: []\n",
        "2:1",
        "duplicate mapping key",
    );
}

#[test]
fn parser_messages_carry_no_position_of_their_own() {
    let e = fail("services: []\nfoo: 1\n");
    assert_eq!(
        e.to_string(),
        "test.yaml:2:1: unknown field `foo`, expected one of multicast, flow_sync_key, flow_sync_wait, flow_sync_rate, flow_sync_resync_rate, flow_insert_limit, rhi, services, reals, vlans"
    );
    assert!(!e.message().contains("line"));
}

#[test]
fn unknown_keys() {
    assert_err(
        "rhi:\n  as_number: 1\n  peer: [10.0.0.1]\n",
        "3:3",
        "unknown field `peer`",
    );
    assert_err(&svc("    weight: 3\n"), "6:5", "unknown field `weight`");
    assert_err(
        &svc("    checks:\n      - {type: http, paht: /}\n"),
        "7:22",
        "unknown field `paht`",
    );
    assert_err(
        "services: []\nreals:\n  g:\n    - {addr: 10.0.0.1, wieght: 2}\n",
        "4:24",
        "unknown field `wieght`",
    );
}

#[test]
fn aliases_report_where_they_are_used() {
    let text = "services:\n  - name: a\n    addr: &vip 192.0.2.1\n    port: 80\n    real: g\n  - name: b\n    addr: *vip\n    port: 80\n    real: g\nreals:\n  g: [10.0.0.1]\n";
    assert_err(
        text,
        "7:11",
        "192.0.2.1:80/tcp is already served by service `a`",
    );
}

#[test]
fn json_is_accepted() {
    let json = r#"{
  "multicast": "224.0.0.1:9999",
  "rhi": {"as_number": 65000, "peers": ["10.10.100.3", "10.10.100.4"]},
  "services": [
    {"name": "nginx", "desc": "web server", "addr": "192.168.101.1",
     "port": [80, 443], "real": "nginx", "need": 1,
     "checks": [{"name": "http check", "type": "http", "port": 80,
                 "path": "/alive", "host": "example.com"}]}
  ],
  "reals": {"nginx": ["10.10.100.10", "10.10.100.11"]}
}
"#;
    let from_json = parse(json, "vc5.json").unwrap();
    assert_eq!(from_json, ok(ORIGINAL));
}

#[test]
fn json_errors_have_positions() {
    let json = "{\n  \"services\": [\n    {\"name\": \"a\", \"addr\": \"192.0.2.1\",\n     \"port\": [80, 0], \"real\": \"g\"}\n  ],\n  \"reals\": {\"g\": [\"10.0.0.1\"]}\n}\n";
    let e = parse(json, "vc5.json").unwrap_err();
    assert_eq!(
        e.to_string(),
        "vc5.json:4:19: port 0 is out of range 1..=65535"
    );
    let json = "{\"services\": [], \"colour\": 1}";
    let e = parse(json, "vc5.json").unwrap_err();
    assert_eq!((e.line(), e.column()), (Some(1), Some(18)));
    assert!(e.to_string().contains("unknown field `colour`"), "{e}");
    let json = "{\"services\": [\n  {\"name\": \"a\", \"addr\": \"192.0.2.300\", \"port\": 80, \"real\": \"g\"}]}";
    let e = parse(json, "vc5.json").unwrap_err();
    assert_eq!(
        e.to_string(),
        "vc5.json:2:25: invalid service address `192.0.2.300`: not an IP address"
    );
}

#[test]
fn load_reads_files_and_reports_io_errors() {
    let dir = std::env::temp_dir().join(format!("vc5-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vc5.yaml");
    std::fs::write(&path, format!("{ORIGINAL}flow_sync_key: keys/flow.key\n")).unwrap();
    let c = load(&path).unwrap();
    assert_eq!(c.services[0].name, "nginx");
    assert_eq!(c.flow_sync_key, Some(dir.join("keys/flow.key")));

    std::fs::write(
        &path,
        "multicast: 224.0.0.1:9999\nflow_sync_key: /abs/flow.key\nservices: []\n",
    )
    .unwrap();
    assert_eq!(
        load(&path).unwrap().flow_sync_key,
        Some(PathBuf::from("/abs/flow.key"))
    );

    std::fs::write(&path, "services: [\n").unwrap();
    let e = load(&path).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}:1:11: ", path.display())),
        "{e}"
    );

    let missing = dir.join("missing.yaml");
    let e = load(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert_eq!(e.line(), None);
    assert_eq!(e.column(), None);
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}: ", missing.display())),
        "{shown}"
    );
    assert!(
        !shown.contains(&format!("{}:1", missing.display())),
        "{shown}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
