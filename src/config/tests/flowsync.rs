//! Flow sync's settings, and `flow_insert_limit`, the data plane's bound on new
//! flows.

use std::time::Duration;

use super::{assert_err, ok};
use crate::config::MAX_FLOW_SYNC_WAIT;

#[test]
fn flow_insert_limit_has_a_default_a_bound_and_zero_for_none() {
    assert_eq!(ok("services: []\n").flow_insert_limit, 100_000);
    assert_eq!(
        ok("flow_insert_limit: 0\nservices: []\n").flow_insert_limit,
        0
    );
    let c = ok("flow_insert_limit: 5000\nservices: []\n");
    assert_eq!(c.flow_insert_limit, 5000);
    let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
    assert_eq!(v["flow_insert_limit"], 5000);
    for bad in ["-1", "100000001", "'many'"] {
        assert_err(
            &format!("flow_insert_limit: {bad}\nservices: []\n"),
            "1:20",
            "flow_insert_limit must be",
        );
    }
}

#[test]
fn flow_sync_settings_have_defaults_bounds_and_positions() {
    const BOTH: &str = "multicast: 224.0.0.1:9999\nflow_sync_key: /k\n";
    // Defaults, and what --check prints.
    let c = ok(&format!("{BOTH}services: []\n"));
    assert!(c.flow_sync());
    assert_eq!(c.flow_sync_wait, Duration::from_secs(10));
    assert_eq!(c.flow_sync_rate, 200_000);
    assert_eq!(c.flow_sync_resync_rate, 50_000);
    let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
    assert_eq!(v["flow_sync_wait_ms"], 10_000);
    assert_eq!(v["flow_sync_rate"], 200_000);
    assert_eq!(v["flow_sync_resync_rate"], 50_000);
    assert_eq!(v["flow_sync_key"], "/k");

    // Given, at their bounds, in every duration spelling.
    let c = ok(&format!(
        "{BOTH}flow_sync_wait: 2s\nflow_sync_rate: 100\nflow_sync_resync_rate: 10000000\n"
    ));
    assert_eq!(c.flow_sync_wait, Duration::from_secs(2));
    assert_eq!(
        (c.flow_sync_rate, c.flow_sync_resync_rate),
        (100, 10_000_000)
    );
    assert_eq!(
        ok(&format!("{BOTH}flow_sync_wait: 5m\n")).flow_sync_wait,
        MAX_FLOW_SYNC_WAIT
    );
    assert_eq!(
        ok(&format!("{BOTH}flow_sync_wait: 2500ms\n")).flow_sync_wait,
        Duration::from_millis(2500)
    );
    assert_eq!(
        ok(&format!("{BOTH}flow_sync_wait: 3\n")).flow_sync_wait,
        Duration::from_secs(3)
    );

    // Out of bounds, wrong types, null: refused where they are written.
    for (value, needle) in [
        ("1s", "flow_sync_wait must be between 2s and 5m, not 1s"),
        ("301s", "flow_sync_wait must be between 2s and 5m, not 301s"),
        ("0", "flow_sync_wait must not be zero"),
        ("-3", "invalid flow_sync_wait -3"),
        ("2.0001", "finer resolution than a millisecond"),
        ("10x", "unknown unit"),
        ("true", "flow_sync_wait must be a number of seconds"),
        (
            "null",
            "flow_sync_wait must be a number of seconds or a duration such as \"500ms\", not nothing",
        ),
    ] {
        assert_err(&format!("{BOTH}flow_sync_wait: {value}\n"), "3:17", needle);
    }
    for key in ["flow_sync_rate", "flow_sync_resync_rate"] {
        let col = format!("3:{}", key.len() + 3);
        for (value, needle) in [
            (
                "99",
                "must be between 100 and 10000000 records per second, not 99",
            ),
            ("10000001", "not 10000001"),
            ("-1", "not -1"),
            ("1.5", "must be an integer"),
            ("'fast'", "must be an integer"),
            ("~", "must be an integer, not nothing"),
        ] {
            assert_err(&format!("{BOTH}{key}: {value}\n"), &col, needle);
        }
    }

    // One of the pair without the other.
    assert_err(
        "flow_sync_key: /k\nservices: []\n",
        "1:16",
        "flow_sync_key needs multicast",
    );
    // The original's file: multicast alone is accepted, flow sync is off.
    let c = ok("multicast: 224.0.0.1:9999\nservices: []\n");
    assert!(!c.flow_sync());
    assert!(!ok("services: []\n").flow_sync());
    // Settings that would do nothing.
    for (text, pos, key) in [
        (
            "multicast: 224.0.0.1:9999\nflow_sync_wait: 5s\n",
            "2:17",
            "flow_sync_wait",
        ),
        (
            "services: []\nflow_sync_rate: 1000\n",
            "2:17",
            "flow_sync_rate",
        ),
        (
            "multicast: 224.0.0.1:9999\nflow_sync_resync_rate: 1000\n",
            "2:24",
            "flow_sync_resync_rate",
        ),
    ] {
        assert_err(
            text,
            pos,
            &format!("{key} has no effect: flow sync needs both multicast and flow_sync_key"),
        );
    }
}
