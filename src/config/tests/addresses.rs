//! Addresses of VIPs, reals, peers and next hops: well-formed, and of another
//! unicast host.

use super::{ORIGINAL, assert_err, fail};

#[test]
fn bad_addresses() {
    let text = ORIGINAL.replace("addr: 192.168.101.1", "addr: 192.168.101.300");
    let e = fail(&text);
    assert_eq!(
        e.to_string(),
        "test.yaml:8:11: invalid service address `192.168.101.300`: not an IP address"
    );
    assert_err(
        &ORIGINAL.replace("addr: 192.168.101.1 ", "addr: [192.168.101.1, x]"),
        "8:27",
        "invalid service address `x`",
    );
    assert_err(
        &ORIGINAL.replace("10.10.100.11]", "10.10.100.256]"),
        "15:25",
        "invalid real address `10.10.100.256`",
    );
    assert_err(
        &ORIGINAL.replace("10.10.100.4]", "10.10.100.x]"),
        "4:24",
        "invalid peer address",
    );
    assert_err(
        "services: []\nreals:\n  g:\n    - addr: nowhere\n",
        "4:13",
        "invalid real address `nowhere`",
    );
    assert_err(
        &ORIGINAL.replace(
            "addr: 192.168.101.1 ",
            "addr: [192.168.101.1, 192.168.101.1]",
        ),
        "8:27",
        "address 192.168.101.1 is listed twice",
    );
    assert_err(
        "services: []\nreals:\n  g: [10.0.0.1, 10.0.0.1]\n",
        "3:17",
        "real 10.0.0.1 is listed twice in group `g`",
    );
    assert_err(
        "services: []\nrhi:\n  as_number: 1\n  next_hop6: 10.0.0.1\n",
        "4:14",
        "not an IPv6 address",
    );
}

#[test]
fn placeholder_loopback_and_group_addresses_are_refused() {
    use super::hardening::{assert_err, svc};
    let bad = [
        ("0.0.0.0", "the unspecified address"),
        ("255.255.255.255", "the broadcast address"),
        ("224.0.0.5", "a multicast address"),
        ("127.0.0.1", "a loopback address"),
        ("\"::\"", "the unspecified address"),
        ("\"::1\"", "a loopback address"),
        ("\"ff02::1\"", "a multicast address"),
        ("\"::ffff:10.0.0.9\"", "an IPv4-mapped IPv6 address"),
    ];
    for (addr, why) in bad {
        let shown = addr.trim_matches('"');
        let vip = svc("").replace("addr: 192.0.2.1", &format!("addr: {addr}"));
        assert_err(&vip, "3:11", &format!("service address {shown} is {why}"));
        let real = svc("").replace("10.0.0.2]", &format!("{addr}]"));
        assert_err(&real, "7:20", &format!("real address {shown} is {why}"));
        let peer = svc(&format!("rhi: {{as_number: 65000, peers: [{addr}]}}\n"));
        assert_err(&peer, "6:33", &format!("peer address {shown} is {why}"));
    }
    assert_err(
        &svc("rhi: {next_hop6: \"::1\"}\n"),
        "6:18",
        "next_hop6 ::1 is a loopback address",
    );
    assert_err(
        &svc("").replace("10.0.0.2]", "192.0.2.1]"),
        "5:11",
        "real 192.0.2.1 of group `pool` is also an address of this service",
    );
}
