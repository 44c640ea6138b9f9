//! The veth pair of vc5d's probe namespace, made and configured by `link.rs`
//! against the real kernel (root needed).
//!
//! Everything happens in two namespaces of the test's own (vc5-testkit's
//! `Netns`, deleted on drop whatever happens): `h` plays the host, `p` the
//! probe namespace. The host's own namespace is never touched.

use super::*;
use serde_json::Value;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use vc5_testkit::netns::Netns;
use vc5_testkit::require_root;

const HOST_END: &str = "vc5ph";
const PEER_END: &str = "vc5pp";

/// `ip -j ARGS` in `ns`, parsed.
fn ip_json(ns: &Netns, args: &[&str]) -> Value {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let out = ns.ip(&all).unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip {args:?}: {e}: {out}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Creates the pair from `h` with its peer in `p`.
fn make_pair(h: &Netns, p: &Netns) {
    let peer_ns = std::fs::File::open(format!("/run/netns/{}", p.name())).unwrap();
    h.enter(|| create_veth(HOST_END, PEER_END, peer_ns.as_fd()))
        .unwrap()
        .unwrap();
}

/// Polls `f` for up to 5 s.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ns_veth_pair_is_made_configured_and_deleted() {
    require_root();
    let h = Netns::new("lkh").unwrap();
    let p = Netns::new("lkp").unwrap();
    make_pair(&h, &p);

    // The host end: up, checksum offload off.
    let host = h
        .enter(|| {
            set_link(HOST_END, true, None).unwrap();
            set_tx_checksum(HOST_END, false).unwrap();
            assert!(!tx_checksum(HOST_END).unwrap());
            interface_by_name(HOST_END).unwrap()
        })
        .unwrap();
    // The peer: up, NOARP, one address of each family and a device route of
    // each; every add twice, the second finding it there.
    let v4: IpAddr = "198.18.0.1".parse().unwrap();
    let v6: IpAddr = "fd76:6335:7072::1".parse().unwrap();
    let peer = p
        .enter(|| {
            set_link(PEER_END, true, Some(true)).unwrap();
            let peer = interface_by_name(PEER_END).unwrap();
            for _ in 0..2 {
                add_address(peer.index, v4, 32).unwrap();
                add_address(peer.index, v6, 128).unwrap();
                add_route("198.19.0.0".parse().unwrap(), 16, peer.index).unwrap();
                add_route("fd76:6335:7072:1::".parse().unwrap(), 64, peer.index).unwrap();
            }
            set_tx_checksum(PEER_END, false).unwrap();
            assert!(!tx_checksum(PEER_END).unwrap());
            set_tx_checksum(PEER_END, true).unwrap();
            assert!(tx_checksum(PEER_END).unwrap());
            set_tx_checksum(PEER_END, false).unwrap();
            interface_by_name(PEER_END).unwrap()
        })
        .unwrap();
    // Each end sees the other up, so both have carrier.
    let carrier = || {
        let h_up = h.enter(|| interface_by_name(HOST_END).unwrap().carrier);
        let p_up = p.enter(|| interface_by_name(PEER_END).unwrap().carrier);
        h_up.unwrap() && p_up.unwrap()
    };
    assert!(eventually(carrier), "no carrier on the pair");
    assert_ne!(host.mac, [0; 6]);
    assert_ne!(peer.mac, [0; 6]);

    // What ip(8) sees in `p`.
    let link = &ip_json(&p, &["-d", "link", "show", "dev", PEER_END])[0];
    assert_eq!(link["linkinfo"]["info_kind"], "veth", "{link}");
    let flags = strings(&link["flags"]);
    assert!(
        flags.contains(&"UP") && flags.contains(&"NOARP"),
        "{flags:?}"
    );
    assert_eq!(link["ifindex"], peer.index);
    let addrs = &ip_json(&p, &["addr", "show", "dev", PEER_END])[0]["addr_info"];
    let have =
        |local: &str, len: u64| {
            addrs.as_array().unwrap().iter().any(|a| {
                a["local"] == local && a["prefixlen"] == len && a.get("tentative").is_none()
            })
        };
    assert!(have("198.18.0.1", 32), "{addrs}");
    assert!(have("fd76:6335:7072::1", 128), "{addrs}");
    let v6_addr = addrs
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["local"] == "fd76:6335:7072::1")
        .unwrap();
    assert_eq!(v6_addr["nodad"], true, "{v6_addr}");
    let routes4 = ip_json(&p, &["-4", "route", "show", "dev", PEER_END]);
    let r4 = routes4
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dst"] == "198.19.0.0/16")
        .unwrap_or_else(|| panic!("{routes4}"));
    assert_eq!(r4["scope"], "link", "{r4}");
    assert!(r4.get("gateway").is_none(), "{r4}");
    let routes6 = ip_json(&p, &["-6", "route", "show", "dev", PEER_END]);
    assert!(
        routes6
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "fd76:6335:7072:1::/64" && r.get("gateway").is_none()),
        "{routes6}"
    );
    // The main table: `ip route show table main` lists it too.
    let main = ip_json(
        &p,
        &["-4", "route", "show", "table", "main", "dev", PEER_END],
    );
    assert!(
        main.as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "198.19.0.0/16")
    );
    for (ns, dev) in [(&h, HOST_END), (&p, PEER_END)] {
        let features = ns.exec(&["ethtool", "-k", dev]).unwrap();
        assert!(
            features.lines().any(|l| l.trim() == "tx-checksumming: off"),
            "{dev}: {features}"
        );
    }
    // The host end is a veth whose peer is in another namespace.
    let hlink = &ip_json(&h, &["-d", "link", "show", "dev", HOST_END])[0];
    assert_eq!(hlink["linkinfo"]["info_kind"], "veth", "{hlink}");
    assert!(hlink.get("link_netnsid").is_some(), "{hlink}");

    // Deleting the host end deletes both.
    assert!(h.enter(|| delete_link(HOST_END)).unwrap().unwrap());
    let gone = |ns: &Netns, dev: &'static str| {
        ns.enter(move || interface_by_name(dev).err().and_then(|e| e.errno()))
            .unwrap()
    };
    assert_eq!(gone(&h, HOST_END), Some(libc::ENODEV));
    assert_eq!(gone(&p, PEER_END), Some(libc::ENODEV));
    assert!(!h.enter(|| delete_link(HOST_END)).unwrap().unwrap());
}

#[test]
fn ns_deleting_the_namespace_deletes_the_host_end() {
    require_root();
    let h = Netns::new("lkh").unwrap();
    let p = Netns::new("lkp").unwrap();
    make_pair(&h, &p);
    assert!(h.enter(|| interface_by_name(HOST_END).is_ok()).unwrap());
    drop(p);
    // The kernel tears a namespace down from a work queue, so the host end
    // goes a moment later.
    let gone = || {
        h.enter(|| interface_by_name(HOST_END).err().and_then(|e| e.errno()))
            .unwrap()
            == Some(libc::ENODEV)
    };
    assert!(eventually(gone), "{HOST_END} outlived its peer's namespace");
}

#[test]
fn ns_link_errors_are_the_kernels() {
    require_root();
    let h = Netns::new("lkh").unwrap();
    let p = Netns::new("lkp").unwrap();
    make_pair(&h, &p);
    let peer_ns = std::fs::File::open(format!("/run/netns/{}", p.name())).unwrap();
    h.enter(|| {
        // NLM_F_EXCL: an existing name is refused, not reused.
        let again = create_veth(HOST_END, "vc5other", peer_ns.as_fd()).unwrap_err();
        assert_eq!(again.errno(), Some(libc::EEXIST), "{again}");
        let bad = create_veth("much-too-long-a-name", "x", peer_ns.as_fd()).unwrap_err();
        // The kernel's own refusal (its policy caps IFLA_IFNAME).
        assert_eq!(bad.errno(), Some(libc::ERANGE), "{bad}");
        let missing = set_link("vc5nothere", true, None).unwrap_err();
        assert_eq!(missing.errno(), Some(libc::ENODEV), "{missing}");
        assert!(set_tx_checksum("vc5nothere", false).is_err());
        // An address on an interface that does not exist.
        let e = add_address(999_999, "198.18.0.9".parse().unwrap(), 32).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENODEV), "{e}");
        assert!(!delete_link("vc5nothere").unwrap());
    })
    .unwrap();
}
