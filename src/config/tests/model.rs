//! The normalised model: the original's file, defaults, every extension, and
//! the JSON that `--check` prints.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use vc5_health::{CheckKind, DnsCheck, DnsTransport, HttpCheck, RecordType, TlsVerify};

use super::{ORIGINAL, http, ip, ok, real, svc};
use crate::config::{
    Check, Config, DEFAULT_FLOW_INSERT_LIMIT, DEFAULT_FLOW_SYNC_RATE,
    DEFAULT_FLOW_SYNC_RESYNC_RATE, DEFAULT_FLOW_SYNC_WAIT, DEFAULT_HOLD_TIME, Forward, ProbeVia,
    Protocol, Real, Rhi, Service,
};

#[test]
fn original_file_loads_and_normalises() {
    let c = ok(ORIGINAL);
    let expected = Config {
        multicast: Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(224, 0, 0, 1),
            9999,
        ))),
        flow_sync_key: None,
        flow_sync_wait: DEFAULT_FLOW_SYNC_WAIT,
        flow_sync_rate: DEFAULT_FLOW_SYNC_RATE,
        flow_sync_resync_rate: DEFAULT_FLOW_SYNC_RESYNC_RATE,
        flow_insert_limit: DEFAULT_FLOW_INSERT_LIMIT,
        rhi: Rhi {
            as_number: 65000,
            peers: vec![ip("10.10.100.3"), ip("10.10.100.4")],
            ..Rhi::default()
        },
        services: vec![Service {
            name: "nginx".into(),
            desc: "web server".into(),
            addrs: vec![ip("192.168.101.1")],
            ports: vec![80, 443],
            protocol: Protocol::Tcp,
            forward: Forward::L2,
            real_groups: vec!["nginx".into()],
            reals: vec![real("10.10.100.10"), real("10.10.100.11")],
            need: 1,
            quorum: None,
            checks: vec![Check {
                name: "http check".into(),
                port: 80,
                kind: CheckKind::Http(HttpCheck {
                    method: "GET".into(),
                    path: "/alive".into(),
                    host: Some("example.com".into()),
                    expect: vec![200],
                }),
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 3,
                probe: ProbeVia::Real,
            }],
        }],
        reals: BTreeMap::from([(
            "nginx".to_owned(),
            vec![real("10.10.100.10"), real("10.10.100.11")],
        )]),
        vlans: BTreeMap::new(),
    };
    assert_eq!(c, expected);
    assert_eq!(c.rhi.hold_time, DEFAULT_HOLD_TIME);
    assert!(c.rhi.enabled());
    assert_eq!(c.services[0].checks_needed(), 1);
    assert_eq!(
        c.services[0].endpoints(),
        vec![
            (ip("192.168.101.1"), 80, Protocol::Tcp),
            (ip("192.168.101.1"), 443, Protocol::Tcp),
        ]
    );
}

#[test]
fn endpoints_cross_addresses_and_ports() {
    let c = ok(
        "services:\n  - name: s\n    addr: [192.0.2.1, '2001:db8::1']\n    port: [53]\n    protocol: udp\n    real: g\nreals:\n  g: [10.0.0.1]\n",
    );
    assert_eq!(
        c.services[0].endpoints(),
        vec![
            (ip("192.0.2.1"), 53, Protocol::Udp),
            (ip("2001:db8::1"), 53, Protocol::Udp),
        ]
    );
}

#[test]
fn minimal_config_gets_defaults() {
    let c = ok("services: []\n");
    assert_eq!(c.multicast, None);
    assert_eq!(c.rhi, Rhi::default());
    assert!(!c.rhi.enabled());
    assert!(c.services.is_empty());
    assert!(c.reals.is_empty());
}

#[test]
fn extensions_parse() {
    let text = "\
multicast: '[ff02::1234]:9999'
flow_sync_key: /etc/vc5/flow.key
rhi:
  as_number: 4200000000
  peers: 10.0.0.254
  hold_time: 30
  communities: ['65000:100', '65000:200']
  med: 10
  local_pref: 200
  next_hop6: 2001:db8::fe
services:
  - name: dns
    desc: resolvers
    addr: [192.0.2.53, 2001:db8::53]
    port: 53
    protocol: udp
    real: [a, b]
    need: 2
    quorum: 1
    checks:
      - type: dns
        query: example.com
        qtype: aaaa
        transport: tcp
        rcode: NXDOMAIN
        interval: 500ms
        timeout: 250ms
        rise: 1
        fall: 5
      - type: tcp
        interval: 1m
        timeout: 2
  - name: web
    addr: 192.0.2.80
    port: [80, 443]
    real: a
    checks:
      - type: https
        port: 443
        path: /health
        method: HEAD
        expect: [200, 204]
        verify: true
        interval: 3
        timeout: 1.5
      - {type: http, port: 80, expect: 301}
reals:
  a:
    - 10.0.0.1
    - {addr: 10.0.0.2, weight: 3}
    - addr: 10.0.0.3
      disabled: true
  b: [{addr: 10.0.0.3, disabled: true}, '2001:db8::10']
";
    let c = ok(text);
    assert_eq!(c.multicast, Some("[ff02::1234]:9999".parse().unwrap()));
    assert_eq!(c.flow_sync_key, Some(PathBuf::from("/etc/vc5/flow.key")));
    assert_eq!(
        c.rhi,
        Rhi {
            as_number: 4_200_000_000,
            peers: vec![ip("10.0.0.254")],
            hold_time: 30,
            communities: vec![(65000, 100), (65000, 200)],
            med: Some(10),
            local_pref: Some(200),
            next_hop6: Some("2001:db8::fe".parse().unwrap()),
        }
    );
    let dns = &c.services[0];
    assert_eq!(dns.protocol, Protocol::Udp);
    assert_eq!(dns.addrs, vec![ip("192.0.2.53"), ip("2001:db8::53")]);
    assert_eq!(dns.real_groups, vec!["a", "b"]);
    // 10.0.0.3 is in both groups with the same settings: kept once, in order.
    assert_eq!(
        dns.reals,
        vec![
            real("10.0.0.1"),
            Real {
                addr: ip("10.0.0.2"),
                weight: 3,
                disabled: false
            },
            Real {
                addr: ip("10.0.0.3"),
                weight: 1,
                disabled: true
            },
            real("2001:db8::10"),
        ]
    );
    assert_eq!(dns.need, 2);
    assert_eq!(dns.quorum, Some(1));
    assert_eq!(dns.checks_needed(), 1);
    let d = &dns.checks[0];
    assert_eq!(d.name, "dns:53");
    assert_eq!(d.port, 53);
    assert_eq!(d.interval, Duration::from_millis(500));
    assert_eq!(d.timeout, Duration::from_millis(250));
    assert_eq!((d.rise, d.fall), (1, 5));
    assert_eq!(
        d.kind,
        CheckKind::Dns(DnsCheck {
            query: "example.com".into(),
            qtype: RecordType::AAAA,
            transport: DnsTransport::Tcp,
            rcode: 3.into(),
        })
    );
    let t = &dns.checks[1];
    assert_eq!((&t.kind, t.name.as_str()), (&CheckKind::Tcp, "tcp:53"));
    assert_eq!(t.interval, Duration::from_secs(60));
    assert_eq!(t.timeout, Duration::from_secs(2));

    let web = &c.services[1];
    assert_eq!(web.protocol, Protocol::Tcp);
    assert_eq!(web.quorum, None);
    assert_eq!(web.checks_needed(), 2);
    let h = &web.checks[0];
    assert_eq!(
        (h.kind.name(), h.port, h.name.as_str()),
        ("https", 443, "https:443")
    );
    assert_eq!(
        h.kind,
        CheckKind::Https {
            http: HttpCheck {
                method: "HEAD".into(),
                path: "/health".into(),
                host: None,
                expect: vec![200, 204],
            },
            verify: TlsVerify::WebPki,
        }
    );
    assert_eq!(h.interval, Duration::from_secs(3));
    assert_eq!(h.timeout, Duration::from_millis(1500));
    let h = &web.checks[1];
    assert_eq!(
        (h.name.as_str(), h.kind.name(), http(h).expect.as_slice()),
        ("http:80", "http", &[301][..])
    );
    assert_eq!(c.reals["b"][1], real("2001:db8::10"));
}

#[test]
fn to_json_shows_the_normalised_model() {
    let c = ok(&format!(
        "{}rhi:\n  as_number: 1\n  communities: '65000:7'\n",
        svc("    checks: [{type: http, interval: 1500ms, timeout: 1s}]\n")
    ));
    let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
    assert_eq!(v["multicast"], serde_json::Value::Null);
    assert_eq!(v["rhi"]["as_number"], 1);
    assert_eq!(v["rhi"]["hold_time"], 90);
    assert_eq!(v["rhi"]["communities"], serde_json::json!(["65000:7"]));
    let s = &v["services"][0];
    assert_eq!(s["name"], "web");
    assert_eq!(s["addrs"], serde_json::json!(["192.0.2.1"]));
    assert_eq!(s["ports"], serde_json::json!([80]));
    assert_eq!(s["protocol"], "tcp");
    assert_eq!(s["real_groups"], serde_json::json!(["pool"]));
    assert_eq!(
        s["reals"][2],
        serde_json::json!({"addr": "10.0.0.3", "weight": 1, "disabled": false})
    );
    assert_eq!(s["need"], 1);
    assert_eq!(s["quorum"], serde_json::Value::Null);
    let k = &s["checks"][0];
    assert_eq!(k["type"], "http");
    assert_eq!(k["name"], "http:80");
    assert_eq!(k["port"], 80);
    assert_eq!(k["interval_ms"], 1500);
    assert_eq!(k["timeout_ms"], 1000);
    assert_eq!(k["path"], "/");
    assert_eq!(k["method"], "GET");
    assert_eq!(k["host"], serde_json::Value::Null);
    assert_eq!(k["expect"], serde_json::json!([200]));
    assert_eq!((k["rise"].as_u64(), k["fall"].as_u64()), (Some(2), Some(3)));
    assert_eq!(k["probe"], "real", "the default: the real's own address");
    // Only the keys of the check's type: no `verify_tls` but for https, no
    // `dns` but for dns.
    let keys: Vec<&str> = k.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = [
        "name",
        "type",
        "port",
        "path",
        "host",
        "method",
        "expect",
        "interval_ms",
        "timeout_ms",
        "rise",
        "fall",
        "probe",
    ];
    let mut keys = keys;
    keys.sort_unstable();
    want.sort_unstable();
    assert_eq!(keys, want);
    assert_eq!(v["reals"]["pool"].as_array().map(Vec::len), Some(3));

    // The printed form is what an operator reads and compares, so it must say
    // the same thing whenever the configuration is the same.
    let again = ok(&format!(
        "{}rhi:\n  as_number: 1\n  communities: ['65000:7']\n",
        svc("    checks: [{type: http, interval: 1.5, timeout: 1000ms}]\n")
    ));
    assert_eq!(again.to_json(), c.to_json());
}

#[test]
fn to_json_round_trips_every_field_of_the_extensions() {
    let c = ok(&svc(
        "    protocol: udp\n    quorum: 2\n    checks: [{type: dns, rcode: SERVFAIL, qtype: SOA, transport: tcp}, {type: dns, name: other, qtype: 999}]\n",
    ));
    let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
    let s = &v["services"][0];
    assert_eq!(s["protocol"], "udp");
    assert_eq!(s["quorum"], 2);
    assert_eq!(
        s["checks"][0]["dns"],
        serde_json::json!({"query": ".", "qtype": "SOA", "transport": "tcp", "rcode": 2})
    );
    assert_eq!(
        s["checks"][1]["dns"],
        serde_json::json!({"query": ".", "qtype": "TYPE999", "transport": "udp", "rcode": 0})
    );
    assert_eq!(s["checks"][0]["path"], serde_json::Value::Null);
    let https = ok(&svc(
        "    checks: [{type: https, verify: true}, {type: tcp}]\n",
    ));
    let v: serde_json::Value = serde_json::from_str(&https.to_json()).unwrap();
    let checks = &v["services"][0]["checks"];
    assert_eq!(checks[0]["verify_tls"], true);
    assert_eq!(checks[0]["expect"], serde_json::json!([200]));
    let tcp: Vec<&str> = checks[1]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tcp.len(),
        8,
        "name, type, port, the timing and probe: {tcp:?}"
    );
}
