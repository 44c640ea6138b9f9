//! Values of the wrong type, nulls and lone values: refused at the value's own
//! position, never read as a default.

use super::{ORIGINAL, assert_err, ok, svc};
use crate::config::parse;

#[test]
fn wrong_types() {
    assert_err(
        &svc("    need: two\n"),
        "6:11",
        "need must be an integer, not `two`",
    );
    assert_err(&svc("    checks: {type: tcp}\n"), "6:13", "");
    assert_err("services: []\nrhi:\n  as_number: -5\n", "3:14", "");
    assert_err(
        "services:\n  - name: a\n    addr: 192.0.2.1\n    port: {a: 1}\n    real: g\n",
        "4:11",
        "port must be an integer or a list of integers, not a map",
    );
    assert_err(
        &svc("    checks: [{type: https, verify: maybe}]\n"),
        "6:36",
        "",
    );
    assert_err(
        &svc("    protocol: sctp\n"),
        "6:15",
        "unknown variant `sctp`",
    );
    assert_err(
        &svc("    checks: [{port: 80}]\n"),
        "6:15",
        "missing field `type`",
    );
    assert_err(
        "services: []\nreals:\n  g:\n    - [10.0.0.1]\n",
        "4:7",
        "an address or a map",
    );
    assert_err(
        "services: []\nreals:\n  g:\n    - {weight: 2}\n",
        "4:8",
        "missing field `addr`",
    );
}

#[test]
fn wrong_types_are_reported_at_the_value() {
    assert_err(
        &svc("    need: [1]\n"),
        "6:11",
        "need must be an integer, not a list",
    );
    assert_err(
        &svc("    quorum: {a: 1}\n"),
        "6:13",
        "quorum must be an integer, not a map",
    );
    assert_err(
        &svc("    need: 1.5\n"),
        "6:11",
        "need must be an integer, not `1.5`",
    );
    assert_err(
        &svc("    checks: [{type: tcp, rise: yes}]\n"),
        "6:32",
        "rise must be an integer, not `true`",
    );
    assert_err(
        &svc("    checks: [{type: tcp, interval: true}]\n"),
        "6:36",
        "interval must be a number of seconds or a duration",
    );
    assert_err(
        &svc("    checks: [{type: tcp, timeout: [1]}]\n"),
        "6:35",
        "not a list",
    );
    assert_err(
        &ORIGINAL.replace("port: [80, 443]", "port: true     "),
        "9:11",
        "port must be an integer or a list of integers, not `true`",
    );
    assert_err(
        &ORIGINAL.replace("port: [80, 443]", "port: http     "),
        "9:11",
        "port must be an integer, not `http`",
    );
    assert_err(
        &ORIGINAL.replace("port: [80, 443]", "port: [80, '443']"),
        "9:16",
        "port must be an integer, not `443`",
    );
    assert_err(
        &ORIGINAL.replace("addr: 192.168.101.1 ", "addr: {v4: 192.168.101.1}"),
        "8:11",
        "addr must be a string or a list of strings, not a map",
    );
    assert_err(
        &ORIGINAL.replace("addr: 192.168.101.1 ", "addr: "),
        // An empty node has no text of its own; the parser puts it at the colon.
        "8:9",
        "addr must be a string or a list of strings, not nothing",
    );
    assert_err(
        "services: []\nreals:\n  g:\n    - {addr: 10.0.0.1, weight: heavy}\n",
        "4:32",
        "weight must be an integer, not `heavy`",
    );
    assert_err(
        "services: []\nreals:\n  g:\n    - {addr: 10.0.0.1, disabled: perhaps}\n",
        "4:34",
        "disabled must be true or false, not `perhaps`",
    );
    assert_err("services: []\nrhi:\n  med: lots\n", "3:8", "");
    assert_err("services: {}\n", "1:11", "");
}

#[test]
fn lone_values_keep_their_spelling() {
    // A group named like a number is found whether written alone or in a list.
    let text = "services:\n  - name: a\n    addr: 192.0.2.1\n    port: 80\n    real: 5\nreals:\n  5: [10.0.0.1]\n";
    assert_eq!(ok(text).services[0].real_groups, vec!["5"]);
    assert_eq!(
        ok(&text.replace("real: 5", "real: [5]")).services[0].real_groups,
        vec!["5"]
    );
    // `yes` would arrive as a boolean, so it has to be quoted.
    let yes = text
        .replace("real: 5", "real: yes")
        .replace("  5:", "  yes:");
    assert_err(
        &yes,
        "5:11",
        "real must be a string or a list of strings, not `true`",
    );
    let quoted = yes.replace("real: yes", "real: 'yes'");
    assert_eq!(ok(&quoted).services[0].real_groups, vec!["yes"]);
}

#[test]
fn null_is_not_a_default() {
    use super::hardening::{assert_err, svc};
    let cases = [
        (
            svc("    need: null\n"),
            "6:11",
            "need must be an integer, not nothing",
        ),
        (
            svc("    need: ~\n"),
            "6:11",
            "need must be an integer, not nothing",
        ),
        (
            svc("    quorum:\n"),
            "6:11",
            "quorum must be an integer, not nothing",
        ),
        (
            svc("multicast: null\n"),
            "6:12",
            "multicast must be a string, not nothing",
        ),
        (
            svc("flow_sync_key: ~\n"),
            "6:16",
            "flow_sync_key must be a string, not nothing",
        ),
        (
            svc("    desc: null\n"),
            "6:11",
            "desc must be a string, not nothing",
        ),
        (
            svc("    checks: [{type: http, host: null}]\n"),
            "6:33",
            "host must be a string, not nothing",
        ),
        (
            svc("    checks: [{type: http, path: null}]\n"),
            "6:33",
            "path must be a string, not nothing",
        ),
        (
            svc("    checks: [{type: tcp, name: null}]\n"),
            "6:32",
            "name must be a string, not nothing",
        ),
        (
            svc("    checks: [{type: tcp, interval: null}]\n"),
            "6:36",
            "interval must be a number of seconds",
        ),
        (
            svc("    checks: [{type: tcp, rise: null}]\n"),
            "6:32",
            "rise must be an integer, not nothing",
        ),
        (
            svc("    checks: [{type: https, verify: null}]\n"),
            "6:36",
            "verify must be true or false, not nothing",
        ),
        (
            svc("    checks: [{type: http, expect: null}]\n"),
            "6:35",
            "expect must be an integer or a list of integers, not nothing",
        ),
        (
            svc("rhi: {as_number: null}\n"),
            "6:18",
            "as_number must be an integer, not nothing",
        ),
        (
            svc("rhi: {as_number: 1, peers: null}\n"),
            "6:28",
            "peers must be a string or a list of strings, not nothing",
        ),
        (
            svc("rhi: {med: ~}\n"),
            "6:12",
            "med must be an integer, not nothing",
        ),
        (
            svc("rhi: {next_hop6: null}\n"),
            "6:18",
            "next_hop6 must be a string, not nothing",
        ),
        (
            "services: []\nreals:\n  g: [{addr: 10.0.0.1, weight: null}]\n".to_owned(),
            "3:32",
            "weight must be an integer, not nothing",
        ),
        (
            "services: []\nreals:\n  g: [{addr: 10.0.0.1, disabled: null}]\n".to_owned(),
            "3:34",
            "disabled must be true or false, not nothing",
        ),
        (
            "services: []\nreals:\n  g: [{addr: null}]\n".to_owned(),
            "3:14",
            "addr must be a string, not nothing",
        ),
    ];
    for (text, pos, needle) in &cases {
        assert_err(text, pos, needle);
    }
    // Keys whose null serde-saphyr refuses itself still get a position.
    for text in [
        svc("rhi: null\n"),
        svc("    protocol: null\n"),
        svc("    checks: [{type: dns, transport: ~}]\n"),
        svc("    checks: null\n"),
        "services: null\n".to_owned(),
        "services: []\nreals: ~\n".to_owned(),
        "services: []\nreals:\n  ~: [10.0.0.1]\n".to_owned(),
    ] {
        let e = parse(&text, "t.yaml").unwrap_err();
        assert!(e.line().is_some(), "{text}: {e}");
    }
}

#[test]
fn non_strings_are_not_names_and_quoted_booleans_are_not_booleans() {
    use super::hardening::{assert_err, svc};
    assert_err(&svc("").replace("name: web", "name: .inf"), "2:11", "");
    assert_err(
        &svc("").replace("name: web", "name: 1.5"),
        "2:11",
        "name must be a string, not `1.5`",
    );
    assert_err(
        &svc("").replace("name: web", "name: true"),
        "2:11",
        "name must be a string, not `true`",
    );
    assert_err(
        "services: []\nreals:\n  g: [{addr: 10.0.0.1, disabled: 'true'}]\n",
        "3:34",
        "disabled must be true or false, not the quoted string `true`: write it without quotes",
    );
    assert_err(
        &svc("    checks: [{type: https, verify: \"yes\"}]\n"),
        "6:36",
        "verify must be true or false, not the quoted string `yes`",
    );
    assert_err(
        "services: []\nreals:\n  g: [{addr: 10.0.0.1, disabled: 1}]\n",
        "3:34",
        "disabled must be true or false, not `1`",
    );
    // Plain YAML booleans, including the original's YAML 1.1 `yes`, still work.
    let c = parse(
        "services: []\nreals:\n  g: [{addr: 10.0.0.1, disabled: yes}, {addr: 10.0.0.2, disabled: false}]\n",
        "t.yaml",
    )
    .unwrap();
    assert!(c.reals["g"][0].disabled);
    assert!(!c.reals["g"][1].disabled);
}
