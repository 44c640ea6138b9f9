//! Services and real groups: ports, groups, endpoints, `need`, `quorum` and
//! weights.

use super::{ORIGINAL, assert_err, fail, ok, svc};

#[test]
fn bad_ports() {
    assert_err(
        &ORIGINAL.replace("port: [80, 443]", "port: [80, 0]"),
        "9:16",
        "port 0 is out of range 1..=65535",
    );
    assert_err(
        &ORIGINAL.replace("port: [80, 443]", "port: 65536   "),
        "9:11",
        "port 65536 is out of range",
    );
    assert_err(
        &ORIGINAL.replace("port: [80, 443]", "port: -1      "),
        "9:11",
        "port -1 is out of range",
    );
    assert_err(
        &ORIGINAL.replace("port: [80, 443]", "port: [80, 80]"),
        "9:16",
        "port 80 is listed twice",
    );
    assert_err(
        &ORIGINAL.replace("port: [80, 443]", "port: []      "),
        "9:11",
        "port is an empty list",
    );
    assert_err(
        &ORIGINAL.replace("addr: 192.168.101.1 ", "addr: []"),
        "8:11",
        "addr is an empty list",
    );
    assert_err(
        &svc("    real: []\n").replace("    real: pool\n", ""),
        "5:11",
        "real is an empty list",
    );
}

#[test]
fn undefined_real_group_points_at_the_name() {
    let e = fail(&ORIGINAL.replace("real: nginx ", "real: [nginx, ngnix]"));
    assert_eq!(
        e.to_string(),
        "test.yaml:10:19: undefined real group `ngnix` (defined: nginx)"
    );
    assert_err(
        &ORIGINAL.replace("real: nginx ", "real: apache"),
        "10:11",
        "undefined real group `apache`",
    );
    assert_err(
        &ORIGINAL.replace("real: nginx ", "real: [nginx, nginx]"),
        "10:19",
        "real group `nginx` is listed twice",
    );
}

#[test]
fn conflicting_real_settings_across_groups() {
    let text = "services:\n  - name: a\n    addr: 192.0.2.1\n    port: 80\n    real: [g, h]\nreals:\n  g: [10.0.0.1]\n  h: [{addr: 10.0.0.1, weight: 2}]\n";
    assert_err(
        text,
        "5:15",
        "real 10.0.0.1 is in group `h` with a different weight",
    );
}

#[test]
fn duplicate_endpoints_point_at_the_second() {
    let text = format!(
        "{ORIGINAL}  - name: other\n    addr: [192.168.101.2, 192.168.101.1]\n    port: 443\n    real: nginx\n"
    )
    .replace("reals:\n  nginx: [10.10.100.10, 10.10.100.11]\n", "")
        + "reals:\n  nginx: [10.10.100.10, 10.10.100.11]\n";
    let e = fail(&text);
    assert_eq!(
        e.to_string(),
        "test.yaml:15:27: 192.168.101.1:443/tcp is already served by service `nginx` (line 6)"
    );
    // The same address and port over UDP is a different endpoint.
    let ok_text = text.replace("    port: 443\n", "    port: 443\n    protocol: udp\n");
    let c = ok(&ok_text);
    assert_eq!(c.services.len(), 2);
    assert_err(
        "services:\n  - name: a\n    addr: 192.0.2.1\n    port: 80\n    real: g\n  - name: a\n    addr: 192.0.2.2\n    port: 80\n    real: g\nreals:\n  g: [10.0.0.1]\n",
        "6:11",
        "service name `a` is already used at line 2",
    );
}

#[test]
fn need_is_checked() {
    assert_err(
        &svc("    need: 0\n"),
        "6:11",
        "need must be at least 1, not 0",
    );
    assert_err(
        &svc("    need: 4\n"),
        "6:11",
        "need is 4 but the service has only 3 reals",
    );
    // The default need of 1 against an empty group points at `real`.
    assert_err(
        "services:\n  - name: a\n    addr: 192.0.2.1\n    port: 80\n    real: g\nreals:\n  g: []\n",
        "5:11",
        "need is 1 but the service has only 0 reals",
    );
    // Disabled reals count: disabling one must not invalidate the file.
    let c = ok(&svc("    need: 3\n").replace("10.0.0.3]", "{addr: 10.0.0.3, disabled: true}]"));
    assert_eq!(c.services[0].need, 3);
}

#[test]
fn quorum_is_checked() {
    let checks = "    checks: [{type: tcp}, {type: http}]\n";
    assert_err(
        &svc(&format!("    quorum: 0\n{checks}")),
        "6:13",
        "quorum must be at least 1, not 0",
    );
    assert_err(
        &svc(&format!("    quorum: 3\n{checks}")),
        "6:13",
        "quorum is 3 but the service has only 2 checks",
    );
    assert_err(&svc("    quorum: 1\n"), "6:13", "only 0 checks");
    assert_eq!(
        ok(&svc(&format!("    quorum: 2\n{checks}"))).services[0].quorum,
        Some(2)
    );
}

#[test]
fn weights() {
    assert_err(
        "services: []\nreals:\n  g:\n    - {addr: 10.0.0.1, weight: 0}\n",
        "4:32",
        "weight must be at least 1; use `disabled: true`",
    );
    assert_err(
        "services: []\nreals:\n  g:\n    - {addr: 10.0.0.1, weight: 70000}\n",
        "4:32",
        "weight 70000 is out of range 1..=65535",
    );
    let c = ok("services: []\nreals:\n  g:\n    - {addr: 10.0.0.1, weight: 65535}\n");
    assert_eq!(c.reals["g"][0].weight, 65535);
}
