//! Health checks: ports, the keys of each kind, HTTP and DNS settings, timing,
//! and what the health monitor itself would refuse.

use std::sync::Arc;
use std::time::Duration;

use vc5_health::spec::{DEFAULT_DNS_QTYPE, DEFAULT_DNS_QUERY, DEFAULT_DNS_RCODE};
use vc5_health::{DnsCheck, DnsTransport, Prober, RecordType, ResponseCode};

use super::{ORIGINAL, assert_err, dns, http, ip, ok, svc};
use crate::config::{MAX_INTERVAL, parse};

#[test]
fn dns_check_defaults() {
    let c = ok(&svc("    checks: [{type: dns}]\n"));
    let d = dns(&c.services[0].checks[0]);
    assert_eq!(*d, DnsCheck::default());
    assert_eq!(
        (d.query.as_str(), d.qtype, d.transport, d.rcode),
        (
            DEFAULT_DNS_QUERY,
            DEFAULT_DNS_QTYPE,
            DnsTransport::Udp,
            DEFAULT_DNS_RCODE
        )
    );
    assert_eq!((u16::from(d.qtype), u16::from(d.rcode)), (2, 0));
    let c = ok(&svc("    checks: [{type: dns, qtype: 65, rcode: 5}]\n"));
    let d = dns(&c.services[0].checks[0]);
    assert_eq!(
        (d.qtype, d.rcode),
        (RecordType::HTTPS, ResponseCode::Refused)
    );
    let c = ok(&svc(
        "    checks: [{type: dns, qtype: type999, query: example.org., rcode: nxdomain}]\n",
    ));
    let d = dns(&c.services[0].checks[0]);
    assert_eq!(
        (d.qtype, u16::from(d.qtype), d.rcode),
        (RecordType::Unknown(999), 999, ResponseCode::NXDomain)
    );
    let c = ok(&svc("    checks: [{type: dns, qtype: TYPE28}]\n"));
    assert_eq!(dns(&c.services[0].checks[0]).qtype, RecordType::AAAA);
}

#[test]
fn check_ports() {
    assert_err(
        &ORIGINAL.replace("port: 80, path", "port: 81, path"),
        "13:46",
        "check port 81 is not one of the service's ports (80, 443)",
    );
    assert_err(
        &ORIGINAL.replace("type: http, port: 80, path", "type: http, path"),
        "13:9",
        "the check needs a `port`: the service has several (80, 443)",
    );
    assert_err(
        &svc(
            "    checks:\n      - type: tcp\n        name: t\n      - type: http\n        port: 8080\n",
        ),
        "10:15",
        "check port 8080 is not one of the service's ports (80)",
    );
    assert_err(
        "services:\n  - name: a\n    addr: 192.0.2.1\n    port: [80, 81]\n    real: g\n    checks:\n      - type: tcp\n        name: t\nreals:\n  g: [10.0.0.1]\n",
        "7:9",
        "needs a `port`",
    );
    let c = ok(&svc("    checks: [{type: tcp}]\n"));
    assert_eq!(c.services[0].checks[0].port, 80);
}

#[test]
fn check_types_and_their_keys() {
    assert_err(
        &ORIGINAL.replace("type: http,", "type: ftp, "),
        "13:34",
        "unknown variant `ftp`, expected one of tcp, http, https, dns",
    );
    assert_err(
        &svc("    checks: [{type: tcp, path: /x}]\n"),
        "6:32",
        "`path` applies only to http and https checks, not tcp",
    );
    assert_err(
        &svc("    checks: [{type: dns, expect: 200}]\n"),
        "6:34",
        "`expect` applies only to http and https checks, not dns",
    );
    assert_err(
        &svc("    checks: [{type: http, verify: true}]\n"),
        "6:35",
        "`verify` applies only to https checks, not http",
    );
    assert_err(
        &svc("    checks: [{type: http, query: example.com}]\n"),
        "6:34",
        "`query` applies only to dns checks, not http",
    );
    assert_err(
        &svc("    checks: [{type: http, path: alive}]\n"),
        "6:33",
        "must start with `/`",
    );
    assert_err(
        &svc("    checks: [{type: http, method: 'GE T'}]\n"),
        "6:35",
        "invalid method",
    );
    assert_err(
        &svc("    checks: [{type: dns, qtype: BOGUS}]\n"),
        "6:33",
        "unknown qtype `BOGUS`",
    );
    assert_err(
        &svc("    checks: [{type: dns, rcode: 4096}]\n"),
        "6:33",
        "unknown rcode `4096`",
    );
    assert_err(
        &svc("    checks: [{type: dns, query: 'a..b'}]\n"),
        "6:33",
        "not a domain name",
    );
    assert_err(
        &svc("    checks: [{type: http, name: ''}]\n"),
        "6:33",
        "must not be empty",
    );
}

#[test]
fn expect_must_be_status_codes() {
    assert_err(
        &svc("    checks: [{type: http, expect: [200, 99]}]\n"),
        "6:41",
        "expect 99 is not an HTTP status code (100..=599)",
    );
    assert_err(
        &svc("    checks: [{type: http, expect: 600}]\n"),
        "6:35",
        "expect 600",
    );
    assert_err(
        &svc("    checks: [{type: http, expect: []}]\n"),
        "6:35",
        "expect is an empty list",
    );
    assert_err(
        &svc("    checks: [{type: http, expect: ok}]\n"),
        "6:35",
        "expect must be an integer, not `ok`",
    );
}

#[test]
fn rise_fall_and_timing() {
    assert_err(
        &svc("    checks: [{type: tcp, rise: 0}]\n"),
        "6:32",
        "rise must be between 1",
    );
    assert_err(
        &svc("    checks: [{type: tcp, fall: 0}]\n"),
        "6:32",
        "fall must be between 1",
    );
    assert_err(
        &svc("    checks: [{type: tcp, interval: 1s, timeout: 1s}]\n"),
        "6:49",
        "timeout (1s) must be shorter than interval (1s)",
    );
    assert_err(
        &svc("    checks: [{type: tcp, interval: 500ms}]\n"),
        "6:36",
        "timeout (1s) must be shorter than interval (500ms)",
    );
    assert_err(
        &svc("    checks: [{type: tcp, interval: 0}]\n"),
        "6:36",
        "interval must not be zero",
    );
    assert_err(
        &svc("    checks: [{type: tcp, interval: -1}]\n"),
        "6:36",
        "invalid interval -1",
    );
    let spaced = ok(&svc("    checks: [{type: tcp, interval: 2 s}]\n"));
    assert_eq!(
        spaced.services[0].checks[0].interval,
        Duration::from_secs(2)
    );
    assert_err(
        &svc("    checks: [{type: tcp, interval: 2d}]\n"),
        "6:36",
        "unknown unit `d`",
    );
    assert_err(
        &svc("    checks: [{type: tcp, timeout: 0.0001}]\n"),
        "6:35",
        "finer resolution",
    );
    let float = ok(&svc(
        "    checks: [{type: tcp, interval: 0.7, timeout: 0.3}]\n",
    ));
    let check = &float.services[0].checks[0];
    assert_eq!(
        (check.interval, check.timeout),
        (Duration::from_millis(700), Duration::from_millis(300))
    );
    assert_err(
        &svc("    checks: [{type: tcp, interval: [1]}]\n"),
        "6:36",
        "",
    );
}

#[test]
fn durations_and_counts_are_bounded() {
    use super::hardening::{assert_err, svc};
    for huge in ["18446744073709551615s", "5124095576030431h", "2h", "3601s"] {
        assert_err(
            &svc(&format!(
                "    checks: [{{type: tcp, interval: {huge}, timeout: 1h}}]\n"
            )),
            "6:36",
            "interval must be between 100ms and 1h",
        );
    }
    assert_err(
        &svc("    checks: [{type: tcp, interval: 50ms, timeout: 10ms}]\n"),
        "6:36",
        "interval must be between 100ms and 1h, not 50ms",
    );
    assert_err(
        &svc("    checks: [{type: tcp, timeout: 5ms}]\n"),
        "6:35",
        "timeout must be between 10ms and 1h, not 5ms",
    );
    assert_err(
        &svc("    checks: [{type: tcp, interval: 1h, timeout: 1h}]\n"),
        "6:49",
        "timeout (1h) must be shorter than interval (1h)",
    );
    for (key, col) in [("rise", "32"), ("fall", "32")] {
        assert_err(
            &svc(&format!("    checks: [{{type: tcp, {key}: 101}}]\n")),
            &format!("6:{col}"),
            &format!("{key} must be between 1 and 100, not 101"),
        );
    }
    let c = parse(
        &svc("    checks: [{type: tcp, interval: 1h, timeout: 59m, rise: 100, fall: 100}]\n"),
        "t.yaml",
    )
    .unwrap();
    let check = &c.services[0].checks[0];
    assert_eq!(check.interval, MAX_INTERVAL);
    // What the daemon adds up must not overflow for any accepted check.
    assert!(check.interval.checked_add(check.timeout).is_some());
}

#[test]
fn what_the_health_monitor_refuses_is_refused_with_a_position() {
    use super::hardening::{assert_err, svc};
    assert_err(
        &svc("    checks: [{type: http, path: /ålive}]\n"),
        "6:33",
        "invalid path \"/ålive\"",
    );
    assert_err(
        &svc("    checks: [{type: http, path: /a b}]\n"),
        "6:33",
        "invalid path",
    );
    assert_err(
        &svc("    checks: [{type: https, host: \"ex ample.com\"}]\n"),
        "6:34",
        "invalid host",
    );
    assert_err(
        &svc("    checks: [{type: http, host: exämple.com}]\n"),
        "6:33",
        "invalid host",
    );
    assert_err(
        &svc("    checks: [{type: http, host: -1}]\n"),
        "6:33",
        "invalid host `-1`",
    );
    assert_err(
        &svc("    checks: [{type: http, host: 1.5}]\n"),
        "6:33",
        "host must be a string, not `1.5`",
    );
    for good in [
        "example.com",
        "example.com:8080",
        "10.0.0.1",
        "[2001:db8::1]:443",
        "_svc.example.",
    ] {
        let c = parse(
            &svc(&format!("    checks: [{{type: http, host: \"{good}\"}}]\n")),
            "t.yaml",
        )
        .unwrap();
        assert_eq!(http(&c.services[0].checks[0]).host.as_deref(), Some(good));
    }
    // Every accepted check is accepted by the monitor too.
    let c = parse(
        &svc("    checks: [{type: https, verify: true, host: example.com}, {type: dns, query: example.com, qtype: AAAA}]\n"),
        "t.yaml",
    )
    .unwrap();
    for check in &c.services[0].checks {
        Prober::new(Arc::new(check.spec(ip("10.0.0.1"), None))).unwrap();
    }
}

#[test]
fn check_names_are_unique_within_a_service() {
    assert_err(
        &svc("    checks:\n      - {name: a, type: tcp}\n      - {name: a, type: http}\n"),
        "8:16",
        "check name `a` is already used at line 7 in service `web`; give the checks distinct `name`s",
    );
    // Two checks left to the default name, TYPE:PORT, collide when they share
    // type and port: the second is refused where it starts.
    assert_err(
        &svc("    checks:\n      - {type: http}\n      - {type: http, path: /x}\n"),
        "8:9",
        "the default check name `http:80` (TYPE:PORT) is already used at line 7 in service `web`",
    );
    assert_err(
        &svc("    checks:\n      - type: http\n        path: /x\n      - type: http\n"),
        "9:9",
        "the default check name `http:80` (TYPE:PORT) is already used at line 7",
    );
    // A name given that another check has by default.
    assert_err(
        &svc("    checks:\n      - {type: http}\n      - {name: 'http:80', type: tcp}\n"),
        "8:16",
        "check name `http:80` is already used at line 7",
    );
    // Distinct defaults, distinct names, and one name in two services are fine.
    let c = ok(&svc(
        "    checks:\n      - {type: http}\n      - {type: tcp}\n      - {type: http, name: other}\n",
    ));
    let names: Vec<&str> = c.services[0]
        .checks
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["http:80", "tcp:80", "other"]);
    let two = ok(
        "services:\n  - {name: a, addr: 192.0.2.1, port: 80, real: g, checks: [{type: tcp}]}\n  - {name: b, addr: 192.0.2.2, port: 80, real: g, checks: [{type: tcp}]}\nreals:\n  g: [10.0.0.1]\n",
    );
    assert_eq!(two.services[1].checks[0].name, "tcp:80");
}

/// `probe`: the real's own address by default, or `vip`; anything else is
/// refused where it is; `--check` prints it.
#[test]
fn probe_defaults_to_the_real_and_may_go_through_the_vip() {
    use crate::config::{DEFAULT_PROBE, ProbeVia};
    assert_eq!(DEFAULT_PROBE, ProbeVia::Real);
    assert_eq!(ok(ORIGINAL).services[0].checks[0].probe, ProbeVia::Real);
    let c = ok(&svc(
        "    checks: [{name: a, type: http, probe: vip}, {name: b, type: tcp, probe: real}, {name: c, type: dns}]\n",
    ));
    let probes: Vec<ProbeVia> = c.services[0].checks.iter().map(|c| c.probe).collect();
    assert_eq!(probes, [ProbeVia::Vip, ProbeVia::Real, ProbeVia::Real]);
    let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
    assert_eq!(v["services"][0]["checks"][0]["probe"], "vip");
    assert_eq!(v["services"][0]["checks"][1]["probe"], "real");
    assert_err(
        &svc("    checks: [{type: http, probe: loopback}]\n"),
        "6:34",
        "unknown probe `loopback`: expected one of real, vip",
    );
    assert_err(
        &svc("    checks: [{type: http, probe: VIP}]\n"),
        "6:34",
        "unknown probe `VIP`",
    );
    assert_err(
        &svc("    checks: [{type: http, probe: [vip]}]\n"),
        "6:34",
        "probe",
    );
}

/// A check through the VIP goes to its pair's NAT address in the probe
/// namespace, names the VIP as its Host (unless it has one), and differs
/// from the same check to the real's own address.
#[test]
fn a_check_through_the_vip_asks_for_the_vip() {
    let c = ok(&svc(
        "    checks: [{name: a, type: http, probe: vip}, {name: b, type: https, port: 80, host: example.com, probe: vip}]\n",
    ));
    let ns = match vc5_health::Netns::new() {
        Ok(ns) => ns,
        Err(e) => return eprintln!("skipped (needs root): {e}"),
    };
    let nat = ip("198.19.0.7");
    let vip = ip("192.0.2.1");
    let a = c.services[0].checks[0].spec_via(nat, vip, ns.clone());
    assert_eq!(a.target, std::net::SocketAddr::new(nat, 80));
    assert_eq!(a.netns.as_ref(), Some(&ns));
    assert_eq!(http(&c.services[0].checks[0]).host, None);
    match &a.kind {
        vc5_health::CheckKind::Http(h) => assert_eq!(h.host.as_deref(), Some("192.0.2.1")),
        k => panic!("{k:?}"),
    }
    let b = c.services[0].checks[1].spec_via(nat, ip("2001:db8::1"), ns.clone());
    match &b.kind {
        vc5_health::CheckKind::Https { http, .. } => {
            assert_eq!(http.host.as_deref(), Some("example.com"))
        }
        k => panic!("{k:?}"),
    }
    let mut plain = c.services[0].checks[0].clone();
    plain.kind = a.kind.clone();
    assert!(
        !plain.spec(nat, None).same_probe(&a),
        "the namespace makes it another probe"
    );
    let v6 = c.services[0].checks[0].spec_via(ip("fd76:6335:7072:1::7"), ip("2001:db8::1"), ns);
    match &v6.kind {
        vc5_health::CheckKind::Http(h) => assert_eq!(h.host.as_deref(), Some("[2001:db8::1]")),
        k => panic!("{k:?}"),
    }
}
