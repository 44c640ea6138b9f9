//! `forward` and `tunnel_port`: the method, its port, and the VIP families
//! a method can carry; `--check`'s normalised form of them.

use super::{ORIGINAL, assert_err, ok, svc};
use crate::config::{DEFAULT_FORWARD, Forward};

#[test]
fn forward_defaults_to_layer_2_and_names_every_method() {
    assert_eq!(ok(ORIGINAL).services[0].forward, DEFAULT_FORWARD);
    assert_eq!(DEFAULT_FORWARD, Forward::L2);
    for (text, want) in [
        ("    forward: l2\n", Forward::L2),
        ("    forward: ipip\n", Forward::Ipip),
        ("    forward: gre\n", Forward::Gre),
        (
            "    forward: fou\n    tunnel_port: 5555\n",
            Forward::Fou { port: 5555 },
        ),
        (
            "    forward: gue\n    tunnel_port: 6080\n",
            Forward::Gue { port: 6080 },
        ),
    ] {
        assert_eq!(ok(&svc(text)).services[0].forward, want, "{text}");
    }
}

#[test]
fn wrong_forward_settings_are_refused_where_they_are() {
    assert_err(
        &svc("    forward: vxlan\n"),
        "6:14",
        "unknown forward `vxlan`: expected one of l2, ipip, gre, fou, gue",
    );
    assert_err(&svc("    forward: GRE\n"), "6:14", "unknown forward `GRE`");
    assert_err(&svc("    forward: [gre]\n"), "6:14", "forward");
    assert_err(
        &svc("    forward: fou\n"),
        "6:14",
        "forward: fou needs tunnel_port, the UDP port the reals decapsulate on",
    );
    assert_err(
        &svc("    tunnel_port: 5555\n"),
        "6:18",
        "tunnel_port has no effect with forward: l2 (only fou and gue are carried in UDP)",
    );
    assert_err(
        &svc("    forward: ipip\n    tunnel_port: 5555\n"),
        "7:18",
        "tunnel_port has no effect with forward: ipip",
    );
    for port in ["0", "65536", "-3"] {
        assert_err(
            &svc(&format!("    forward: gue\n    tunnel_port: {port}\n")),
            "7:18",
            &format!("tunnel_port {port} is out of range 1..=65535"),
        );
    }
    assert_err(
        &svc("    forward: gue\n    tunnel_port: udp\n"),
        "7:18",
        "tunnel_port",
    );
}

#[test]
fn fou_cannot_carry_both_families_on_one_port() {
    let both = |forward: &str| {
        svc(&format!("    forward: {forward}\n    tunnel_port: 5555\n"))
            .replace("addr: 192.0.2.1", "addr: [192.0.2.1, \"2001:db8::1\"]")
    };
    assert_err(
        &both("fou"),
        "3:23",
        "forward: fou carries one inner family per port, and this service has IPv4 (192.0.2.1) and IPv6 (2001:db8::1) addresses; use gue",
    );
    // GUE, IPIP and GRE name the inner protocol in their headers.
    assert_eq!(
        ok(&both("gue")).services[0].forward,
        Forward::Gue { port: 5555 }
    );
    let gre =
        svc("    forward: gre\n").replace("addr: 192.0.2.1", "addr: [192.0.2.1, \"2001:db8::1\"]");
    assert_eq!(ok(&gre).services[0].forward, Forward::Gre);
    // One family per service is fine, IPv6 VIPs with IPv4 reals included:
    // the outer header follows the real.
    let v6 = svc("    forward: fou\n    tunnel_port: 5555\n")
        .replace("addr: 192.0.2.1", "addr: \"2001:db8::1\"");
    assert_eq!(ok(&v6).services[0].forward, Forward::Fou { port: 5555 });
}

#[test]
fn check_prints_forward_as_the_file_writes_it() {
    let json =
        |text: &str| -> serde_json::Value { serde_json::from_str(&ok(text).to_json()).unwrap() };
    let l2 = json(ORIGINAL);
    assert_eq!(l2["services"][0]["forward"], "l2");
    assert!(l2["services"][0].get("tunnel_port").is_none());
    let gue = json(&svc("    forward: gue\n    tunnel_port: 6080\n"));
    assert_eq!(gue["services"][0]["forward"], "gue");
    assert_eq!(gue["services"][0]["tunnel_port"], 6080);
}
