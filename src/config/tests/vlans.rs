//! `vlans`: IDs, prefixes, overlaps, and the reals a layer-2 service must
//! find on one of them.

use super::{assert_err, ok, svc};

/// The helper's file (services on line 1–5, reals on 6–7) with `vlans`
/// appended from line 8.
fn with_vlans(extra: &str, vlans: &str) -> String {
    format!("{}vlans:\n{vlans}", svc(extra))
}

#[test]
fn vlans_map_ids_to_prefixes_of_both_families() {
    let c = ok(&with_vlans(
        "",
        "  10: 10.0.0.0/24\n  20: [10.1.20.0/24, \"2001:db8:20::/64\"]\n",
    ));
    assert_eq!(c.vlans.len(), 2);
    assert_eq!(c.vlans[&20].len(), 2);
    assert_eq!(c.vlan_of("10.0.0.2".parse().unwrap()), Some(10));
    assert_eq!(c.vlan_of("2001:db8:20::9".parse().unwrap()), Some(20));
    assert_eq!(c.vlan_of("192.0.2.9".parse().unwrap()), None);
    let json: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
    assert_eq!(
        json["vlans"],
        serde_json::json!({"10": ["10.0.0.0/24"], "20": ["10.1.20.0/24", "2001:db8:20::/64"]})
    );
    // Without the section nothing is tagged.
    assert!(ok(&svc("")).vlans.is_empty());
}

#[test]
fn wrong_vlans_are_refused_where_they_are() {
    assert_err(
        &with_vlans("", "  0: 10.0.0.0/24\n"),
        "9:3",
        "VLAN ID 0 is out of range 1..=4094",
    );
    assert_err(
        &with_vlans("", "  4095: 10.0.0.0/24\n"),
        "9:3",
        "VLAN ID 4095 is out of range",
    );
    assert_err(&with_vlans("", "  ten: 10.0.0.0/24\n"), "9:3", "VLAN ID");
    assert_err(
        &with_vlans("", "  10: 10.0.0.0/24\n  10: 10.1.0.0/24\n"),
        "10:3",
        "duplicate mapping key `10`",
    );
    // A quoted ID is a string, not a number.
    assert_err(
        &with_vlans("", "  '10': 10.1.0.0/24\n"),
        "9:3",
        "a VLAN ID must be an integer, not `10`",
    );
    assert_err(
        &with_vlans("", "  10: 10.0.0.0\n"),
        "9:7",
        "invalid prefix `10.0.0.0` for VLAN 10",
    );
    assert_err(
        &with_vlans("", "  10: 10.0.0.5/24\n"),
        "9:7",
        "prefix 10.0.0.5/24 of VLAN 10 has host bits set: the network is 10.0.0.0/24",
    );
    assert_err(
        &with_vlans("", "  10: 10.0.0.0/16\n  20: [192.0.2.0/24, 10.0.5.0/24]\n"),
        "10:22",
        "prefix 10.0.5.0/24 of VLAN 20 overlaps 10.0.0.0/16 of VLAN 10",
    );
    assert_err(
        &with_vlans("", "  10: []\n"),
        "9:7",
        "VLAN 10 is an empty list",
    );
}

#[test]
fn a_layer_2_real_outside_every_vlan_is_refused_at_the_real() {
    // The group is on line 7: `  pool: [10.0.0.1, 10.0.0.2, 10.0.0.3]`.
    assert_err(
        &with_vlans("", "  10: [10.0.0.0/31]\n"),
        "7:20",
        "real 10.0.0.2 of service `web` is in no VLAN of `vlans`: forward: l2 reaches a real on the VLAN whose prefix holds it",
    );
    // Two VLANs together hold them all.
    ok(&with_vlans("", "  10: 10.0.0.0/31\n  20: 10.0.0.2/31\n"));
    // A tunnel's VLAN is its next hop's, found at run time.
    ok(&with_vlans("    forward: gre\n", "  10: 192.0.2.0/24\n"));
}
