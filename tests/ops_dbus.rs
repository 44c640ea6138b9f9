//! The D-Bus service on a private dbus-daemon whose policy includes
//! `dbus/org.vc5.Balancer1.conf`, driven by a control-loop stand-in and
//! called with busctl and dbus-send as root and as `nobody`.
//!
//! Needs root (to run tools as `nobody`) and the Debian packages
//! dbus-daemon, dbus-bin (dbus-send), systemd (busctl) and util-linux
//! (setpriv).

mod ops_common;

use futures_util::StreamExt;
use ops_common::*;
use serde_json::{Value, json};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;
use vc5::dbus::{self, DbusError, DbusService};
use vc5::status::{CommandError, Event};

const NAME: &str = "org.vc5.Balancer1";
const PATH: &str = "/org/vc5/Balancer1";

struct Setup {
    bus: Arc<TestBus>,
    standin: StandIn,
    service: DbusService,
}

async fn setup(policy: Policy) -> Setup {
    let bus = Arc::new(TestBus::start(policy));
    let (standin, shared) = StandIn::start(synthetic_status());
    let service = dbus::serve(&bus.address, shared)
        .await
        .expect("serve")
        .expect("a service for an address");
    Setup {
        bus,
        standin,
        service,
    }
}

/// busctl off the runtime (the service answers on it meanwhile).
async fn busctl(bus: &Arc<TestBus>, as_nobody: bool, args: &[&str]) -> Output {
    let bus = bus.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bus.busctl(as_nobody, &args)
    })
    .await
    .unwrap()
}

async fn dbus_send(bus: &Arc<TestBus>, as_nobody: bool, args: &[&str]) -> Output {
    let bus = bus.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bus.dbus_send(as_nobody, &args)
    })
    .await
    .unwrap()
}

/// `busctl --json=short call … METHOD [SIG ARGS…]`, which must succeed;
/// returns the reply's `data`.
async fn call_json(bus: &Arc<TestBus>, as_nobody: bool, method: &[&str]) -> Value {
    let mut args = vec!["--json=short", "call", NAME, PATH, NAME];
    args.extend_from_slice(method);
    let out = busctl(bus, as_nobody, &args).await;
    assert!(
        out.status.success(),
        "busctl {method:?} (nobody: {as_nobody}) failed: {}",
        text(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("busctl JSON");
    v["data"].clone()
}

async fn property_json(bus: &Arc<TestBus>, as_nobody: bool, name: &str) -> Value {
    let out = busctl(
        bus,
        as_nobody,
        &["--json=short", "get-property", NAME, PATH, NAME, name],
    )
    .await;
    assert!(
        out.status.success(),
        "get-property {name} (nobody: {as_nobody}) failed: {}",
        text(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("busctl JSON");
    v["data"].clone()
}

/// `dbus-send` a method call and return the D-Bus error name it printed
/// (`None` when the call succeeded).
async fn error_of(
    bus: &Arc<TestBus>,
    as_nobody: bool,
    method: &str,
    args: &[&str],
) -> Option<(String, String)> {
    let dest = format!("--dest={NAME}");
    // A bare member is one of ours; a dotted one names its interface.
    let member = if method.contains('.') {
        method.to_string()
    } else {
        format!("{NAME}.{method}")
    };
    let mut all = vec![dest.as_str(), PATH, member.as_str()];
    all.extend_from_slice(args);
    let out = dbus_send(bus, as_nobody, &all).await;
    if out.status.success() {
        return None;
    }
    // "Error org.vc5.Balancer1.Error.X: message"
    let err = text(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("Error "))
        .unwrap_or_else(|| panic!("dbus-send {method} failed without an error line: {err}"));
    let (name, message) = line["Error ".len()..]
        .split_once(": ")
        .unwrap_or((&line["Error ".len()..], ""));
    Some((name.to_string(), message.to_string()))
}

const DRAIN_ARGS: [&str; 2] = ["string:nginx", "string:198.51.100.10"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_members_work_for_root_and_nobody() {
    let s = setup(Policy::Strict).await;
    for nobody in [false, true] {
        let services = call_json(&s.bus, nobody, &["ListServices"]).await;
        assert_eq!(
            services,
            json!([[
                ["nginx", "192.0.2.1", 80, "tcp", "up", 1, 1, 2, "l2"],
                ["nginx", "192.0.2.1", 443, "tcp", "up", 1, 1, 2, "l2"],
                ["dns", "2001:db8::53", 53, "udp", "up", 2, 1, 2, "gue"]
            ]]),
            "nobody: {nobody}"
        );
        // Counters are summed over nginx's two endpoints (3k + 3k/2 packets
        // for the first real: 6000 + 3000).
        let reals = call_json(&s.bus, nobody, &["ListReals", "s", "nginx"]).await;
        assert_eq!(
            reals,
            json!([[
                [
                    "198.51.100.10",
                    "serving",
                    true,
                    false,
                    100,
                    true,
                    "",
                    9000,
                    900000,
                    90,
                    "l2",
                    "198.51.100.10",
                    "02:00:00:00:00:0a",
                    0
                ],
                [
                    "198.51.100.11",
                    "failed",
                    false,
                    false,
                    100,
                    false,
                    "http:80: HTTP 503",
                    6000,
                    600000,
                    60,
                    "l2",
                    "198.51.100.11",
                    "02:00:00:00:00:0a",
                    0
                ]
            ]]),
            "nobody: {nobody}"
        );
        // Tunnelled reals behind a gateway: the method, the gateway, its MAC.
        let dns = call_json(&s.bus, nobody, &["ListReals", "s", "dns"]).await;
        assert_eq!(
            dns[0][0].as_array().unwrap()[10..],
            [
                json!("gue"),
                json!("2001:db8::1"),
                json!("02:00:00:00:00:01"),
                json!(20)
            ]
        );
        assert_eq!(
            property_json(&s.bus, nobody, "Version").await,
            json!("0.1.0-test")
        );
        assert_eq!(
            property_json(&s.bus, nobody, "Announced").await,
            json!(["192.0.2.1"])
        );
        // FlowSync: JSON, the status's flow_sync object.
        let fs = property_json(&s.bus, nobody, "FlowSync").await;
        let fs: Value = serde_json::from_str(fs.as_str().expect("a string")).unwrap();
        let want = serde_json::to_value(&s.standin.status.lock().unwrap().flow_sync).unwrap();
        assert_eq!(fs, want, "nobody: {nobody}");
        assert_eq!(fs["holding_announcements"], true);
        assert_eq!(fs["peers"][1]["addr"], "2001:db8::251");
        assert_eq!(fs["peers"][1]["rejects"]["auth"], 6);
        let out = busctl(&s.bus, nobody, &["introspect", NAME, PATH]).await;
        assert!(out.status.success(), "introspect: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains(".ListReals"));
        let all = busctl(
            &s.bus,
            nobody,
            &[
                "--json=short",
                "call",
                NAME,
                PATH,
                "org.freedesktop.DBus.Properties",
                "GetAll",
                "s",
                NAME,
            ],
        )
        .await;
        assert!(all.status.success(), "GetAll: {}", text(&all.stderr));
    }
    // The plain (non-JSON) form an operator reads.
    let out = busctl(&s.bus, true, &["call", NAME, PATH, NAME, "ListServices"]).await;
    assert_eq!(
        text(&out.stdout).trim(),
        r#"a(ssqssuuus) 3 "nginx" "192.0.2.1" 80 "tcp" "up" 1 1 2 "l2" "nginx" "192.0.2.1" 443 "tcp" "up" 1 1 2 "l2" "dns" "2001:db8::53" 53 "udp" "up" 2 1 2 "gue""#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_is_refused_state_changes_by_the_policy() {
    let s = setup(Policy::Strict).await;
    for (method, args) in [
        ("Drain", &DRAIN_ARGS[..]),
        ("Undrain", &DRAIN_ARGS[..]),
        ("Reload", &[][..]),
    ] {
        let (name, message) = error_of(&s.bus, true, method, args)
            .await
            .unwrap_or_else(|| panic!("nobody could call {method}"));
        assert_eq!(
            name, "org.freedesktop.DBus.Error.AccessDenied",
            "{method}: {message}"
        );
        // The bus refused it, not vc5d.
        assert!(
            message.contains("Rejected send message"),
            "{method}: {message}"
        );
        let mut bargs = vec!["call", NAME, PATH, NAME, method];
        if !args.is_empty() {
            bargs.extend(["ss", "nginx", "198.51.100.10"]);
        }
        let out = busctl(&s.bus, true, &bargs).await;
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("Access denied"),
            "{}",
            text(&out.stderr)
        );
    }
    // Nor may nobody call Properties.Set (there is nothing to set, but the
    // policy must not even let the call through).
    let (name, message) = error_of(
        &s.bus,
        true,
        "org.freedesktop.DBus.Properties.Set",
        &[
            "string:org.vc5.Balancer1",
            "string:Version",
            "variant:string:x",
        ],
    )
    .await
    .expect("refused");
    assert_eq!(name, "org.freedesktop.DBus.Error.AccessDenied");
    assert!(message.contains("Rejected send message"), "{message}");
    assert!(!s.standin.real("nginx", "198.51.100.10").drained);
    // Nor own the name (to impersonate vc5d).
    let out = dbus_send(
        &s.bus,
        true,
        &[
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.RequestName",
            &format!("string:{NAME}"),
            "uint32:4",
        ],
    )
    .await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.starts_with("Error org.freedesktop.DBus.Error.AccessDenied"),
        "{err}"
    );
    // Root may, through the same bus.
    assert_eq!(error_of(&s.bus, false, "Drain", &DRAIN_ARGS).await, None);
    assert!(s.standin.real("nginx", "198.51.100.10").drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vc5d_itself_refuses_nobody_when_the_policy_lets_the_call_through() {
    let s = setup(Policy::Permissive).await;
    for (method, args) in [
        ("Drain", &DRAIN_ARGS[..]),
        ("Undrain", &DRAIN_ARGS[..]),
        ("Reload", &[][..]),
    ] {
        let (name, message) = error_of(&s.bus, true, method, args)
            .await
            .unwrap_or_else(|| panic!("nobody could call {method}"));
        assert_eq!(
            name, "org.vc5.Balancer1.Error.AccessDenied",
            "{method}: {message}"
        );
        assert_eq!(
            message,
            format!("{method} needs root; the caller is uid 65534")
        );
    }
    assert!(!s.standin.real("nginx", "198.51.100.10").drained);
    // And it is still readable.
    call_json(&s.bus, true, &["ListServices"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_and_their_typed_errors() {
    let s = setup(Policy::Strict).await;
    let b = &s.bus;
    let err = |name: &str, message: &str| {
        Some((
            format!("org.vc5.Balancer1.Error.{name}"),
            message.to_string(),
        ))
    };

    assert_eq!(
        error_of(b, false, "Drain", &["string:nope", "string:198.51.100.10"]).await,
        err("UnknownService", r#"no service named "nope""#)
    );
    assert_eq!(
        error_of(b, false, "ListReals", &["string:nope"]).await,
        err("UnknownService", r#"no service named "nope""#)
    );
    assert_eq!(
        error_of(b, false, "Drain", &["string:nginx", "string:198.51.100.99"]).await,
        err(
            "UnknownReal",
            r#"service "nginx" has no real "198.51.100.99""#
        )
    );
    assert_eq!(
        error_of(
            b,
            false,
            "Drain",
            &["string:nginx", "string:not-an-address"]
        )
        .await,
        err(
            "UnknownReal",
            r#"service "nginx" has no real "not-an-address""#
        )
    );
    assert_eq!(
        error_of(b, false, "Undrain", &DRAIN_ARGS).await,
        err(
            "NotDrained",
            r#"real 198.51.100.10 of service "nginx" is not drained"#
        )
    );

    // Drain with busctl as an operator would; the change shows in ListReals.
    let out = busctl(
        b,
        false,
        &[
            "call",
            NAME,
            PATH,
            NAME,
            "Drain",
            "ss",
            "nginx",
            "198.51.100.10",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reals = call_json(b, false, &["ListReals", "s", "nginx"]).await;
    assert_eq!(reals[0][0][1], json!("drained"));
    assert_eq!(reals[0][0][3], json!(true));
    assert_eq!(
        error_of(b, false, "Drain", &DRAIN_ARGS).await,
        err(
            "AlreadyDrained",
            r#"real 198.51.100.10 of service "nginx" is already drained"#
        )
    );
    let out = busctl(
        b,
        false,
        &[
            "call",
            NAME,
            PATH,
            NAME,
            "Drain",
            "ss",
            "nginx",
            "198.51.100.10",
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is already drained"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(error_of(b, false, "Undrain", &DRAIN_ARGS).await, None);
    assert!(!s.standin.real("nginx", "198.51.100.10").drained);

    assert_eq!(error_of(b, false, "Reload", &[]).await, None);
    *s.standin.reload.lock().unwrap() = Err(CommandError::Reload(
        "/etc/vc5/vc5.yaml:3:7: unknown key \"prot\"".into(),
    ));
    assert_eq!(
        error_of(b, false, "Reload", &[]).await,
        err(
            "ReloadFailed",
            r#"the configuration was refused: /etc/vc5/vc5.yaml:3:7: unknown key "prot""#
        )
    );

    // A control loop that no longer answers (vc5d stopping).
    s.standin.stop_commands().await;
    assert_eq!(
        error_of(b, false, "Drain", &DRAIN_ARGS).await,
        err("Stopping", "vc5d is stopping")
    );
    assert_eq!(
        error_of(b, false, "Reload", &[]).await,
        err("Stopping", "vc5d is stopping")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_become_signals_and_announced_changes_are_signalled() {
    let s = setup(Policy::Strict).await;
    let client = zbus::connection::Builder::address(s.bus.address.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .path(PATH)
        .unwrap()
        .build();
    let mut stream = zbus::MessageStream::for_match_rule(rule, &client, Some(16))
        .await
        .unwrap();
    let mut next = async || -> zbus::Message {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a signal within 5 s")
            .expect("stream open")
            .expect("a message")
    };

    s.standin
        .events
        .send(Event::RealHealth {
            service: "nginx".into(),
            real: "198.51.100.11".parse().unwrap(),
            healthy: false,
            reason: "HTTP 503".into(),
        })
        .unwrap();
    let m = next().await;
    let h = m.header();
    assert_eq!(h.interface().unwrap().as_str(), NAME);
    assert_eq!(h.member().unwrap().as_str(), "RealHealthChanged");
    let body: (String, String, bool, String) = m.body().deserialize().unwrap();
    assert_eq!(
        body,
        (
            "nginx".into(),
            "198.51.100.11".into(),
            false,
            "HTTP 503".into()
        )
    );

    s.standin
        .events
        .send(Event::Vip {
            vip: "2001:db8::53".parse().unwrap(),
            announced: true,
        })
        .unwrap();
    let m = next().await;
    assert_eq!(m.header().member().unwrap().as_str(), "VipAnnounced");
    let body: (String, bool) = m.body().deserialize().unwrap();
    assert_eq!(body, ("2001:db8::53".into(), true));

    // A snapshot with new counters only: no PropertiesChanged. Then the
    // announced set changes: exactly one, with the new value (had the first
    // update emitted one, it would arrive first and hold the old value).
    s.standin.update(|st| st.services[0].counters.packets += 1);
    s.standin.update(|st| st.vips[1].announced = true);
    let m = next().await;
    assert_eq!(m.header().member().unwrap().as_str(), "PropertiesChanged");
    let (iface, changed, _invalidated): (
        String,
        std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
        Vec<String>,
    ) = m.body().deserialize().unwrap();
    assert_eq!(iface, NAME);
    let announced: Vec<String> = changed["Announced"].clone().try_into().unwrap();
    assert_eq!(announced, vec!["192.0.2.1", "2001:db8::53"]);
    assert_eq!(
        property_json(&s.bus, true, "Announced").await,
        json!(["192.0.2.1", "2001:db8::53"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_name_ownership_and_release() {
    let (_standin, shared) = StandIn::start(synthetic_status());
    assert!(dbus::serve("none", shared.clone()).await.unwrap().is_none());
    assert!(matches!(
        dbus::serve("no-such-transport:x=1", shared.clone()).await,
        Err(DbusError::Connect { .. })
    ));

    let s = setup(Policy::Strict).await;
    // A second vc5d on the same bus cannot take the name.
    let second = dbus::serve(&s.bus.address, shared.clone()).await;
    assert!(matches!(second, Err(DbusError::Name { .. })), "{second:?}");

    let client = zbus::connection::Builder::address(s.bus.address.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    let has_owner = async || -> bool {
        let reply = client
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "NameHasOwner",
                &(NAME,),
            )
            .await
            .unwrap();
        reply.body().deserialize().unwrap()
    };
    assert!(has_owner().await);
    drop(s.service);
    let mut released = false;
    for _ in 0..100 {
        if !has_owner().await {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(released, "dropping the service must release {NAME}");
    // And the name can be taken again, e.g. by a restarted vc5d.
    dbus::serve(&s.bus.address, shared).await.unwrap().unwrap();
}

/// dbus-daemon restarting (or dropping vc5d for a message it refused) must
/// not leave `org.vc5.Balancer1` gone: the service connects again, owns the
/// name and answers and signals as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_bus_connection_is_re_established() {
    let Setup {
        bus,
        standin,
        service,
    } = setup(Policy::Strict).await;
    assert!(!call_json(&bus, true, &["ListServices"]).await.is_null());
    let mut bus = Arc::into_inner(bus).expect("one owner");
    bus.restart();
    let bus = Arc::new(bus);
    let t0 = std::time::Instant::now();
    loop {
        let out = busctl(
            &bus,
            true,
            &["--json=short", "call", NAME, PATH, NAME, "ListServices"],
        )
        .await;
        if out.status.success() {
            break;
        }
        assert!(
            t0.elapsed() < dbus::RECONNECT_MAX + Duration::from_secs(5),
            "{NAME} did not come back: {}",
            text(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("back after {:?}", t0.elapsed());
    // Signals flow on the new connection.
    let client = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(NAME)
        .unwrap()
        .build();
    let mut signals = zbus::MessageStream::for_match_rule(rule, &client, None)
        .await
        .unwrap();
    standin
        .events
        .send(Event::RealDrain {
            service: "nginx".into(),
            real: "198.51.100.10".parse().unwrap(),
            drained: true,
        })
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), signals.next())
        .await
        .expect("a signal after the reconnection")
        .unwrap()
        .unwrap();
    assert_eq!(msg.header().member().unwrap().as_str(), "RealDrainChanged");
    drop(service);
}

// ---- introspection XML ----

/// The `<interface name="org.vc5.Balancer1">` element of an introspection
/// document, as one line per tag with attributes sorted and whitespace
/// and comments dropped, and the comments' texts (whitespace collapsed)
/// in order.
fn normalise_interface(xml: &str) -> (Vec<String>, Vec<String>) {
    let start = xml
        .find(&format!(r#"<interface name="{NAME}">"#))
        .expect("the interface element");
    let end = start + xml[start..].find("</interface>").expect("its end") + "</interface>".len();
    let mut rest = &xml[start..end];
    let mut tags = Vec::new();
    let mut comments = Vec::new();
    while let Some(lt) = rest.find('<') {
        assert!(
            rest[..lt].trim().is_empty(),
            "text outside tags: {:?}",
            &rest[..lt]
        );
        rest = &rest[lt..];
        if let Some(body) = rest.strip_prefix("<!--") {
            let close = body.find("-->").expect("comment end");
            comments.push(
                body[..close]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            rest = &body[close + 3..];
            continue;
        }
        let gt = rest.find('>').expect("tag end");
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        let (tag, self_closing) = match tag.strip_suffix('/') {
            Some(t) => (t, true),
            None => (tag, false),
        };
        if let Some(name) = tag.strip_prefix('/') {
            tags.push(format!("</{}>", name.trim()));
            continue;
        }
        let mut parts = tag.trim().splitn(2, char::is_whitespace);
        let name = parts.next().unwrap().to_string();
        let mut attrs = Vec::new();
        let mut a = parts.next().unwrap_or("").trim();
        while !a.is_empty() {
            let eq = a.find('=').expect("attribute =");
            let key = a[..eq].trim();
            let after = a[eq + 1..].trim_start();
            let quote = after.chars().next().expect("quote");
            let close = after[1..].find(quote).expect("closing quote") + 1;
            attrs.push(format!("{key}={:?}", &after[1..close]));
            a = after[close + 1..].trim_start();
        }
        attrs.sort();
        tags.push(format!("<{name} {}>", attrs.join(" ")));
        if self_closing {
            tags.push(format!("</{name}>"));
        }
    }
    (tags, comments)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_is_the_documented_xml() {
    let s = setup(Policy::Strict).await;
    let out = busctl(&s.bus, true, &["introspect", "--xml-interface", NAME, PATH]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let live = text(&out.stdout);
    let file = std::fs::read_to_string(repo().join("dbus/org.vc5.Balancer1.xml")).unwrap();
    let (live_tags, live_docs) = normalise_interface(&live);
    let (file_tags, file_docs) = normalise_interface(&file);
    assert_eq!(
        file_tags, live_tags,
        "dbus/org.vc5.Balancer1.xml differs from the live interface; the live one is:\n{live}"
    );
    assert_eq!(
        file_docs, live_docs,
        "the member documentation in dbus/org.vc5.Balancer1.xml differs from the doc comments in src/dbus.rs"
    );
}
