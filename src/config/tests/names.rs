//! Names and descriptions: what may go into D-Bus strings, metrics labels and
//! logs.

use super::hardening::{assert_err, svc};
use crate::config::parse;

#[test]
fn control_characters_in_names_are_refused() {
    assert_err(
        &svc("").replace("name: web", "name: \"web\\0nul\""),
        "2:11",
        "the service name `web\\0nul` contains the character U+0000",
    );
    assert_err(
        &svc("").replace("name: web", "name: \"a\\u202Eb\""),
        "2:11",
        "U+202E",
    );
    assert_err(
        &svc("    checks: [{type: tcp, name: \"x\\ny\"}]\n"),
        "6:32",
        "the check name `x\\ny` contains the character U+000A",
    );
    assert_err(
        &svc("").replace("pool", "\"p\\x07\""),
        "7:3",
        "a real group name `p\\u{7}` contains the character U+0007",
    );
    assert_err(
        "services: []\nreals:\n  \"p\\tq\": [10.0.0.1]\n",
        "3:3",
        "a real group name `p\\tq` contains the character U+0009",
    );
    assert_err(
        &svc("    desc: \"two\\nlines\"\n"),
        "6:11",
        "desc contains the character U+000A",
    );
    assert_err(
        &svc("").replace("name: web", "name: ' web'"),
        "2:11",
        "must not begin or end with white space",
    );
    assert_err(
        &svc("").replace("name: web", &format!("name: {}", "w".repeat(129))),
        "2:11",
        "longer than 128 characters",
    );
    assert_err(
        &svc("flow_sync_key: \"/k\\0ey\"\n"),
        "6:16",
        "flow_sync_key contains the character U+0000",
    );
    // Text outside the control characters, spaces inside, and numbers as names
    // stay allowed.
    let c = parse(
        &svc("    desc: \"Café — web\"\n    checks: [{type: tcp, name: tcp check}]\n")
            .replace("name: web", "name: 5"),
        "t.yaml",
    )
    .unwrap();
    assert_eq!(c.services[0].name, "5");
    assert_eq!(c.services[0].desc, "Café — web");
    assert_eq!(c.services[0].checks[0].name, "tcp check");
}
