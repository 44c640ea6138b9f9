//! Health checks as the control loop keeps them: their identity, what the
//! monitor last said about each, and the monitor's events applied to that view.

use super::probes::Probes;
use crate::config::{self, Config, ProbeVia};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use tracing::{info, info_span, warn};
use vc5_health::{CheckSpec, CheckState, Event as HealthEvent, Outcome};

/// A check of one real for one service: (service name, real, check name).
/// The name is unique within the service (the configuration refuses two
/// alike), so the id does not depend on the check's place in the list: a
/// reload that reorders checks keeps each one's own state. A check that keeps
/// its name but probes otherwise (another port, request or expected answer;
/// not merely other timing) starts afresh: the monitor starts it `Unknown`
/// (`vc5_health::CheckSpec::same_probe`), and the reload forgets the control
/// loop's view of it ([`probe_changed`]).
pub(super) type CheckId = (String, IpAddr, String);

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

/// The monitor's checks of configured check `c` of each real of `s`: one
/// to the real's own address, or (`probe: vip`) one through each VIP of the
/// service, its id's name `NAME via VIP` when there are several. Each with
/// its name and the VIP it goes through.
pub(super) fn instances(s: &config::Service, c: &config::Check) -> Vec<(String, Option<IpAddr>)> {
    match (c.probe, s.addrs.as_slice()) {
        (ProbeVia::Real, _) => vec![(c.name.clone(), None)],
        (ProbeVia::Vip, [vip]) => vec![(c.name.clone(), Some(*vip))],
        (ProbeVia::Vip, vips) => vips
            .iter()
            .map(|v| (format!("{} via {v}", c.name), Some(*v)))
            .collect(),
    }
}

/// Every check the monitor runs for the configuration: one per service,
/// real, check and (for checks through the VIP) VIP; with the configured
/// check and the VIP it goes through.
pub(super) fn check_ids(
    cfg: &Config,
) -> impl Iterator<Item = (CheckId, &config::Check, Option<IpAddr>)> {
    cfg.services.iter().flat_map(|s| {
        s.reals.iter().flat_map(move |r| {
            s.checks.iter().flat_map(move |c| {
                instances(s, c)
                    .into_iter()
                    .map(move |(name, via)| ((s.name.clone(), r.addr, name), c, via))
            })
        })
    })
}

/// The monitor's view of configured check `c` of `real` in `s`: its one
/// instance's, or the worst of its instances through each VIP (failing,
/// then not yet reported, then unknown, then passing), so that a check
/// through several VIPs passes only when it passes through every one.
pub(super) fn view<'a>(
    checks: &'a HashMap<CheckId, CheckView>,
    s: &config::Service,
    real: IpAddr,
    c: &config::Check,
) -> Option<&'a CheckView> {
    let views: Vec<Option<&CheckView>> = instances(s, c)
        .into_iter()
        .map(|(name, _)| checks.get(&(s.name.clone(), real, name)))
        .collect();
    let state = |want: CheckState| views.iter().flatten().find(|v| v.state == want).copied();
    if let Some(v) = state(CheckState::Failing) {
        return Some(v);
    }
    if views.iter().any(|v| v.is_none()) {
        return None;
    }
    state(CheckState::Unknown).or_else(|| views.first().copied().flatten())
}

/// Every check of the configuration as the monitor runs it: the spec that
/// configuration validation checks, so a loaded file's checks run. A check
/// through a VIP goes to its pair's NAT address in the probe namespace
/// (`probes`); without one (no namespace: vc5d refuses such a
/// configuration, so only in tests) it is left out, and its real is not
/// healthy.
pub(super) fn all_checks(
    cfg: &Config,
    source: Option<IpAddr>,
    probes: Option<&Probes>,
) -> Vec<(CheckId, CheckSpec)> {
    let svcs: HashMap<&str, &config::Service> =
        cfg.services.iter().map(|s| (s.name.as_str(), s)).collect();
    check_ids(cfg)
        .filter_map(|(id, c, via)| {
            let spec = match via {
                None => c.spec(id.1, source),
                Some(vip) => {
                    let p = probes?;
                    let svc = svcs.get(id.0.as_str())?;
                    c.spec_via(p.target(&svc.name, vip, id.1)?, vip, p.netns().clone())
                }
            };
            Some((id, spec))
        })
        .collect()
}

/// [`all_checks`] as vc5d starts: a check through the VIP only once `hops`
/// knows the way to its real (the others at once).
pub(super) fn checks_with_ways(
    cfg: &Config,
    source: Option<IpAddr>,
    probes: Option<&Probes>,
    hops: &HashMap<IpAddr, Option<super::derive::NextHop>>,
) -> Vec<(CheckId, CheckSpec)> {
    all_checks(cfg, source, probes)
        .into_iter()
        .filter(|(id, spec)| spec.netns.is_none() || hops.get(&id.1).is_some_and(|h| h.is_some()))
        .collect()
}

/// The checks of `new` that `old` has under the same id but that probe
/// otherwise (what [`CheckSpec::same_probe`] says of their specs, or
/// another `probe`): their state says nothing about the new probe.
pub(super) fn probe_changed(old: &Config, new: &Config) -> Vec<CheckId> {
    let before: HashMap<CheckId, &config::Check> =
        check_ids(old).map(|(id, c, _)| (id, c)).collect();
    check_ids(new)
        .filter(|(id, c, _)| {
            before.get(id).is_some_and(|was| {
                was.probe != c.probe || !was.spec(id.1, None).same_probe(&c.spec(id.1, None))
            })
        })
        .map(|(id, _, _)| id)
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

    /// One service `s` (ports 80 and 81, real 10.0.0.1) with `checks`.
    fn cfg(checks: &[&str]) -> Config {
        let yaml = format!(
            "services:\n  - name: s\n    addr: 192.0.2.1\n    port: [80, 81]\n    real: r\n    checks:\n{}reals:\n  r: [10.0.0.1]\n",
            checks
                .iter()
                .map(|c| format!("      - {c}\n"))
                .collect::<String>()
        );
        config::parse(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Ids are (service, real, name): one per check, whatever the order.
    /// Whether a reload starts a check afresh follows what the check does:
    /// the same probe for specs that differ only in timing, another for any
    /// other difference.
    #[test]
    fn check_ids_are_names_and_probes_follow_what_the_check_is() {
        let checks = [
            "{name: k01, type: http, port: 80, path: /health}",
            "{name: k02, type: http, port: 80, path: /health, interval: 5s, rise: 4, fall: 5, timeout: 2s}",
            "{name: k03, type: http, port: 80, path: /other}",
            "{name: k04, type: http, port: 81, path: /health}",
            "{name: k05, type: http, port: 80, path: /health, host: example.com}",
            "{name: k06, type: http, port: 80, path: /health, expect: [200, 204]}",
            "{name: k07, type: http, port: 80, path: /health, method: HEAD}",
            "{name: k08, type: https, port: 80, path: /health}",
            "{name: k09, type: https, port: 80, path: /health, verify: true}",
            "{name: k10, type: tcp, port: 80}",
            "{name: k11, type: tcp, port: 81}",
            "{name: k12, type: dns, port: 80}",
            "{name: k13, type: dns, port: 80, query: example.com}",
            "{name: k14, type: dns, port: 80, qtype: A}",
            "{name: k15, type: dns, port: 80, transport: tcp}",
            "{name: k16, type: dns, port: 80, rcode: 3}",
        ];
        let cfg = cfg(&checks);
        let real = IpAddr::from([10, 0, 0, 1]);
        let untimed = |c: &config::Check| {
            let mut s = c.spec(real, None);
            s.interval = Duration::ZERO;
            s.timeout = Duration::ZERO;
            (s.rise, s.fall) = (0, 0);
            s
        };
        let all = &cfg.services[0].checks;
        for a in all {
            for b in all {
                assert_eq!(
                    a.spec(real, None).same_probe(&b.spec(real, None)),
                    untimed(a) == untimed(b),
                    "{a:?} / {b:?}"
                );
            }
        }
        // The first two probe alike; every other differs.
        assert!(all[0].spec(real, None).same_probe(&all[1].spec(real, None)));
        let probes: Vec<CheckSpec> = all.iter().map(untimed).collect();
        let distinct = probes
            .iter()
            .enumerate()
            .filter(|(i, p)| !probes[..*i].contains(p))
            .count();
        assert_eq!(distinct, checks.len() - 1);
        // One id per check, named as configured, not depending on positions.
        let ids: BTreeSet<CheckId> = check_ids(&cfg).map(|(id, _, _)| id).collect();
        assert_eq!(ids.len(), checks.len());
        assert!(ids.iter().all(|(s, r, _)| s == "s" && *r == real));
        let names: Vec<&str> = ids.iter().map(|(_, _, n)| n.as_str()).collect();
        let want: Vec<String> = (1..=checks.len()).map(|i| format!("k{i:02}")).collect();
        assert_eq!(names, want);
        let mut reversed = cfg.clone();
        reversed.services[0].checks.reverse();
        let ids2: BTreeSet<CheckId> = check_ids(&reversed).map(|(id, _, _)| id).collect();
        assert_eq!(ids, ids2);
    }

    /// Over a reload, a check that keeps its name and changes its timing
    /// keeps its id and its state; one that keeps its name and probes
    /// otherwise keeps its id but starts afresh; a renamed one is a new check.
    #[test]
    fn a_changed_probe_under_the_same_name_is_found() {
        let old = cfg(&[
            "{name: a, type: http, port: 80, path: /health}",
            "{name: b, type: tcp, port: 80}",
            "{name: c, type: dns, port: 80, qtype: A}",
            "{type: tcp, port: 81}",
        ]);
        let new = cfg(&[
            "{name: c, type: dns, port: 80, qtype: 1, interval: 10s}",
            "{name: b, type: tcp, port: 81}",
            "{name: a, type: http, port: 80, path: /other}",
            "{name: renamed, type: tcp, port: 81}",
        ]);
        let real = IpAddr::from([10, 0, 0, 1]);
        let id = |n: &str| ("s".to_string(), real, n.to_string());
        let mut changed = probe_changed(&old, &new);
        changed.sort();
        assert_eq!(changed, [id("a"), id("b")]);
        assert!(probe_changed(&new, &new).is_empty());
        let ids: BTreeSet<CheckId> = check_ids(&new).map(|(id, _, _)| id).collect();
        assert!(!ids.contains(&id("tcp:81")) && ids.contains(&id("renamed")));
    }
}

#[cfg(test)]
mod via_vip_tests {
    use super::*;

    fn view(state: CheckState) -> CheckView {
        CheckView {
            state,
            last: None,
            latest: Arc::default(),
        }
    }

    /// A check through the VIP of a service with two VIPs is two monitored
    /// checks, named by VIP; its view is the worst of them; without a probe
    /// namespace neither runs (so the real is not healthy), while the
    /// service's other checks do.
    #[test]
    fn one_check_through_each_vip_folded_into_one() {
        let cfg = config::parse(
            "services:\n  - {name: s, addr: [192.0.2.1, \"2001:db8::1\"], port: 80, real: r, checks: [{name: v, type: tcp, probe: vip}, {name: o, type: tcp}]}\nreals:\n  r: [10.0.0.1]\n",
            "test.yaml",
        )
        .unwrap();
        let real = IpAddr::from([10, 0, 0, 1]);
        let ids: Vec<(CheckId, Option<IpAddr>)> =
            check_ids(&cfg).map(|(id, _, via)| (id, via)).collect();
        let id = |n: &str| ("s".to_string(), real, n.to_string());
        assert_eq!(
            ids,
            [
                (id("v via 192.0.2.1"), Some("192.0.2.1".parse().unwrap())),
                (
                    id("v via 2001:db8::1"),
                    Some("2001:db8::1".parse().unwrap())
                ),
                (id("o"), None),
            ]
        );
        let (s, c) = (&cfg.services[0], &cfg.services[0].checks[0]);
        let mut checks = HashMap::new();
        assert!(view_of(&checks, s, real, c).is_none(), "none reported");
        checks.insert(id("v via 192.0.2.1"), view(CheckState::Passing));
        assert!(view_of(&checks, s, real, c).is_none(), "one not reported");
        checks.insert(id("v via 2001:db8::1"), view(CheckState::Passing));
        assert_eq!(
            view_of(&checks, s, real, c).unwrap().state,
            CheckState::Passing
        );
        checks.insert(id("v via 2001:db8::1"), view(CheckState::Unknown));
        assert_eq!(
            view_of(&checks, s, real, c).unwrap().state,
            CheckState::Unknown
        );
        checks.insert(id("v via 192.0.2.1"), view(CheckState::Failing));
        assert_eq!(
            view_of(&checks, s, real, c).unwrap().state,
            CheckState::Failing
        );
        let run: Vec<CheckId> = all_checks(&cfg, None, None)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            run,
            [id("o")],
            "no namespace: only the real's own check runs"
        );
    }

    fn view_of<'a>(
        checks: &'a HashMap<CheckId, CheckView>,
        s: &config::Service,
        real: IpAddr,
        c: &config::Check,
    ) -> Option<&'a CheckView> {
        super::view(checks, s, real, c)
    }
}
