//! `rhi` (BGP) settings; the test dates from when `multicast` and an empty
//! `flow_sync_key` were checked beside them.

use super::{assert_err, ok};

#[test]
fn multicast_and_rhi() {
    assert_err(
        "multicast: 224.0.0.1\n",
        "1:12",
        "invalid multicast address `224.0.0.1`: expected IP:PORT",
    );
    assert_err(
        "multicast: 10.0.0.1:9999\n",
        "1:12",
        "10.0.0.1 is not a multicast address",
    );
    assert_err("multicast: 224.0.0.1:0\n", "1:12", "port must not be 0");
    assert_err(
        "multicast: 224.0.0.1:99999\n",
        "1:12",
        "invalid multicast address",
    );
    assert_err(
        "rhi:\n  as_number: 1\n  communities: [65000]\n",
        "3:17",
        "invalid community `65000`",
    );
    assert_err(
        "rhi:\n  as_number: 1\n  communities: ['65000:100', '70000:1']\n",
        "3:30",
        "invalid community `70000:1`",
    );
    assert_err(
        "rhi:\n  as_number: 1\n  communities: 'a:b'\n",
        "3:16",
        "expected ASN:VALUE",
    );
    assert_err(
        "rhi:\n  as_number: 1\n  hold_time: 2\n",
        "3:14",
        "hold_time 2 is invalid",
    );
    assert_eq!(
        ok("rhi:\n  as_number: 1\n  hold_time: 0\n").rhi.hold_time,
        0
    );
    assert_err(
        "rhi:\n  peers: [10.0.0.1]\n",
        "2:11",
        "need a non-zero rhi.as_number",
    );
    assert_err(
        "rhi:\n  as_number: 0\n  peers: [10.0.0.1]\n",
        "2:14",
        "need a non-zero rhi.as_number",
    );
    assert_err(
        "rhi:\n  as_number: 1\n  peers: [10.0.0.1, 10.0.0.1]\n",
        "3:21",
        "peer 10.0.0.1 is listed twice",
    );
    assert_err("flow_sync_key: ''\n", "1:16", "flow_sync_key is empty");
}
