//! The loader's tests, by subject. Most start from the original vc5's file
//! ([`ORIGINAL`]) or from [`svc`], one service `web` with a group `pool` of three
//! reals, and parse as `test.yaml`; the tests added against hostile input use the
//! helpers of [`hardening`] instead, imported in the test's own body where a file
//! holds both kinds.

mod addresses;
mod checks;
mod flowsync;
mod forward;
mod limits;
mod model;
mod names;
mod rhi;
mod services;
mod values;
mod vlans;
mod yaml;

use std::net::IpAddr;

use vc5_health::{CheckKind, DnsCheck, HttpCheck};

use crate::config::{Check, Config, ConfigError, Real, parse};

/// The original vc5 README's config.yaml, as design.md gives it.
const ORIGINAL: &str = include_str!("../../../tests/data/original.yaml");

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn real(s: &str) -> Real {
    Real {
        addr: ip(s),
        weight: 1,
        disabled: false,
    }
}

/// The query of a dns check.
#[track_caller]
fn dns(c: &Check) -> &DnsCheck {
    match &c.kind {
        CheckKind::Dns(d) => d,
        other => panic!("not a dns check: {other:?}"),
    }
}

/// The request of an http or https check.
#[track_caller]
fn http(c: &Check) -> &HttpCheck {
    match &c.kind {
        CheckKind::Http(h) | CheckKind::Https { http: h, .. } => h,
        other => panic!("not an http check: {other:?}"),
    }
}

fn ok(text: &str) -> Config {
    match parse(text, "test.yaml") {
        Ok(c) => c,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn fail(text: &str) -> ConfigError {
    match parse(text, "test.yaml") {
        Ok(c) => panic!("expected an error, got {c:#?}"),
        Err(e) => e,
    }
}

/// Asserts the error's position and that its message contains `needle`.
#[track_caller]
fn assert_err(text: &str, pos: &str, needle: &str) {
    let e = fail(text);
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("test.yaml:{pos}: ")),
        "expected position {pos}, got: {shown}"
    );
    assert!(shown.contains(needle), "expected {needle:?} in: {shown}");
}

/// The original's file with `service` inserted as the service's remaining keys.
fn svc(extra: &str) -> String {
    format!(
        "services:\n  - name: web\n    addr: 192.0.2.1\n    port: 80\n    real: pool\n{extra}reals:\n  pool: [10.0.0.1, 10.0.0.2, 10.0.0.3]\n"
    )
}

/// Helpers of the tests added against inputs that loaded but could not run or
/// meant nothing (names that break D-Bus and metrics, overflowing durations,
/// checks the monitor refuses, nulls, quoted booleans, placeholder addresses,
/// unbounded files). Their file is `t.yaml` and their `svc` has two reals, which
/// the positions they expect depend on.
mod hardening {
    use crate::config::parse;

    pub(super) fn fail(text: &str) -> String {
        match parse(text, "t.yaml") {
            Ok(c) => panic!("expected an error, got {c:#?}"),
            Err(e) => e.to_string(),
        }
    }

    #[track_caller]
    pub(super) fn assert_err(text: &str, pos: &str, needle: &str) {
        let shown = fail(text);
        assert!(
            shown.starts_with(&format!("t.yaml:{pos}: ")),
            "expected position {pos}, got: {shown}"
        );
        assert!(shown.contains(needle), "expected {needle:?} in: {shown}");
    }

    /// One service `web` with `extra` as its remaining keys, and group `pool`.
    pub(super) fn svc(extra: &str) -> String {
        format!(
            "services:\n  - name: web\n    addr: 192.0.2.1\n    port: 80\n    real: pool\n{extra}reals:\n  pool: [10.0.0.1, 10.0.0.2]\n"
        )
    }
}
