//! Health checks: ports, the keys of each kind, HTTP and DNS settings, timing,
//! and what the health monitor itself would refuse.

use std::sync::Arc;
use std::time::Duration;

use vc5_health::Prober;

use super::{ORIGINAL, assert_err, ip, ok, svc};
use crate::config::{
    DEFAULT_DNS_QTYPE, DEFAULT_DNS_QUERY, DEFAULT_DNS_RCODE, DEFAULT_DNS_TRANSPORT, DnsCheck,
    MAX_INTERVAL, parse,
};

#[test]
fn dns_check_defaults() {
    let c = ok(&svc("    checks: [{type: dns}]\n"));
    let d = c.services[0].checks[0].dns.clone().unwrap();
    assert_eq!(
        d,
        DnsCheck {
            query: DEFAULT_DNS_QUERY.into(),
            qtype: DEFAULT_DNS_QTYPE.into(),
            transport: DEFAULT_DNS_TRANSPORT,
            rcode: DEFAULT_DNS_RCODE,
        }
    );
    assert_eq!(d.qtype_code(), 2);
    let c = ok(&svc("    checks: [{type: dns, qtype: 65, rcode: 5}]\n"));
    let d = c.services[0].checks[0].dns.clone().unwrap();
    assert_eq!((d.qtype.as_str(), d.rcode), ("HTTPS", 5));
    let c = ok(&svc(
        "    checks: [{type: dns, qtype: type999, query: example.org.}]\n",
    ));
    let d = c.services[0].checks[0].dns.clone().unwrap();
    assert_eq!((d.qtype.as_str(), d.qtype_code()), ("TYPE999", 999));
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
        assert_eq!(c.services[0].checks[0].host.as_deref(), Some(good));
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
