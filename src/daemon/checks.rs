//! Health checks as the control loop keeps them: their identity, what the
//! monitor last said about each, and the monitor's events applied to that view.

use crate::config::{self, Config};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use tracing::{info, info_span, warn};
use vc5_health::{CheckSpec, CheckState, Event as HealthEvent, Outcome};

/// A check of one real for one service: (service name, real, what the check
/// is). Identified by what it does rather than by its place in the list, so
/// that a reload that reorders checks keeps each one's own state, and a check
/// whose probe changed starts afresh (its first result decides at once).
pub(super) type CheckId = (String, IpAddr, CheckKey);

/// What a check is, for [`CheckId`]: a fingerprint of what it asks and what
/// passes (kind, port, request, expected answers), leaving out its name and
/// timing. A renamed check, or one with a new interval, timeout, rise or fall,
/// is the same check and keeps its state (the monitor carries it to the new
/// timing). Computed from the configuration without building a [`CheckSpec`],
/// since the control loop looks checks up many times per change; the test
/// `check_keys_follow_what_the_check_is` holds it to the spec's fields.
/// 64 bits: two different checks of one service would have to collide.
pub(super) type CheckKey = u64;

/// The [`CheckKey`] of a configured check.
pub(super) fn check_key(c: &config::Check) -> CheckKey {
    use std::hash::{DefaultHasher, Hash, Hasher};
    // DefaultHasher::new() has fixed keys: the same check hashes the same on
    // every reload within this process, which is all an id needs.
    let mut h = DefaultHasher::new();
    c.kind.hash(&mut h);
    c.port.hash(&mut h);
    match c.kind {
        config::CheckKind::Tcp => {}
        config::CheckKind::Http | config::CheckKind::Https => {
            (&c.method, &c.path, &c.host, &c.expect).hash(&mut h);
            if c.kind == config::CheckKind::Https {
                c.verify_tls.hash(&mut h);
            }
        }
        config::CheckKind::Dns => {
            if let Some(d) = &c.dns {
                (&d.query, d.qtype_code(), d.transport, d.rcode).hash(&mut h);
            }
        }
    }
    h.finish()
}

/// The health monitor's view of one check.
#[derive(Debug, Clone)]
pub(super) struct CheckView {
    pub(super) state: CheckState,
    /// The outcome that made the state (what logs and the hold logic judge by).
    pub(super) last: Option<Outcome>,
    /// The check's latest run, which the monitor keeps current between
    /// transitions: what the status shows as "last checked" and latency.
    pub(super) latest: Arc<vc5_health::Latest>,
}

/// The health check of the configuration, as the monitor runs it: the same
/// mapping that configuration validation checks, so a loaded file's checks run.
pub(super) fn check_spec(c: &config::Check, real: IpAddr, source: Option<IpAddr>) -> CheckSpec {
    c.spec(real, source)
}

/// Every check of the configuration: one per service, real and check.
pub(super) fn check_ids(cfg: &Config) -> impl Iterator<Item = (CheckId, &config::Check)> {
    cfg.services.iter().flat_map(|s| {
        s.reals.iter().flat_map(move |r| {
            s.checks
                .iter()
                .map(move |c| ((s.name.clone(), r.addr, check_key(c)), c))
        })
    })
}

pub(super) fn all_checks(cfg: &Config, source: Option<IpAddr>) -> Vec<(CheckId, CheckSpec)> {
    check_ids(cfg)
        .map(|(id, c)| {
            let spec = check_spec(c, id.1, source);
            (id, spec)
        })
        .collect()
}

pub(super) fn targets(cfg: &Config) -> BTreeSet<IpAddr> {
    cfg.services
        .iter()
        .flat_map(|s| s.reals.iter().map(|r| r.addr))
        .collect()
}

/// Applies a health event without logging it.
pub(super) fn apply_quiet(checks: &mut HashMap<CheckId, CheckView>, ev: HealthEvent<CheckId>) {
    match ev {
        HealthEvent::Transition(t) => {
            checks.insert(
                t.id,
                CheckView {
                    state: t.to,
                    last: t.outcome,
                    latest: t.latest,
                },
            );
        }
        HealthEvent::Snapshot(all) => {
            for c in all {
                checks.insert(
                    c.id,
                    CheckView {
                        state: c.state,
                        last: c.last,
                        latest: c.latest,
                    },
                );
            }
        }
    }
}

/// Logs a health event, then applies it.
pub(super) fn health_event(checks: &mut HashMap<CheckId, CheckView>, ev: HealthEvent<CheckId>) {
    if let HealthEvent::Transition(t) = &ev {
        let _s = info_span!("check", service = %t.id.0, real = %t.id.1, check = %t.spec).entered();
        match (&t.to, t.reason()) {
            (CheckState::Failing, Some(r)) => warn!(reason = %r, from = %t.from, "check failing"),
            (to, _) => info!(from = %t.from, to = %to, "check state"),
        }
    }
    apply_quiet(checks, ev);
}

#[cfg(test)]
mod check_id_tests {
    use super::*;
    use std::time::Duration;

    /// A check's key changes exactly when what it does changes: equal keys
    /// for checks whose specs differ only in timing (and name), different
    /// keys for any other difference; reordering changes no key.
    #[test]
    fn check_keys_follow_what_the_check_is() {
        let checks = [
            "{type: http, port: 80, path: /health}",
            "{name: renamed, type: http, port: 80, path: /health, interval: 5s, rise: 4, fall: 5, timeout: 2s}",
            "{type: http, port: 80, path: /other}",
            "{type: http, port: 81, path: /health}",
            "{type: http, port: 80, path: /health, host: example.com}",
            "{type: http, port: 80, path: /health, expect: [200, 204]}",
            "{type: http, port: 80, path: /health, method: HEAD}",
            "{type: https, port: 80, path: /health}",
            "{type: https, port: 80, path: /health, verify: true}",
            "{type: tcp, port: 80}",
            "{type: tcp, port: 81}",
            "{type: dns, port: 80}",
            "{type: dns, port: 80, query: example.com}",
            "{type: dns, port: 80, qtype: A}",
            "{type: dns, port: 80, transport: tcp}",
            "{type: dns, port: 80, rcode: 3}",
        ];
        let yaml = format!(
            "services:\n  - name: s\n    addr: 192.0.2.1\n    port: [80, 81]\n    real: r\n    checks:\n{}reals:\n  r: [10.0.0.1]\n",
            checks
                .iter()
                .map(|c| format!("      - {c}\n"))
                .collect::<String>()
        );
        let cfg = config::parse(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
        let real = IpAddr::from([10, 0, 0, 1]);
        let untimed = |c: &config::Check| {
            let mut s = check_spec(c, real, None);
            s.interval = Duration::ZERO;
            s.timeout = Duration::ZERO;
            (s.rise, s.fall) = (0, 0);
            s
        };
        let all = &cfg.services[0].checks;
        for a in all {
            for b in all {
                assert_eq!(
                    check_key(a) == check_key(b),
                    untimed(a) == untimed(b),
                    "{a:?} / {b:?}"
                );
            }
        }
        // The first two are one check; every other differs.
        assert_eq!(check_key(&all[0]), check_key(&all[1]));
        let keys: BTreeSet<_> = all.iter().map(check_key).collect();
        assert_eq!(keys.len(), checks.len() - 1);
        // Ids do not depend on positions.
        let ids: BTreeSet<CheckId> = check_ids(&cfg).map(|(id, _)| id).collect();
        let mut reversed = cfg.clone();
        reversed.services[0].checks.reverse();
        let ids2: BTreeSet<CheckId> = check_ids(&reversed).map(|(id, _)| id).collect();
        assert_eq!(ids, ids2);
    }
}
