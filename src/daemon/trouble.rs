//! This host's own trouble: a link without carrier, or most reals failing
//! at once. Either holds the data plane and the VIPs as they are (see
//! [`crate::hold`]) so that established flows stay where they are.

use super::checks::{CheckId, CheckView, apply_quiet, health_event};
use super::control::{Control, Plane};
use super::derive::check_healthy;
use crate::config::Config;
use crate::hold::Hold;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tracing::warn;
use vc5_health::{CheckState, Event as HealthEvent};
use vc5_xdp::netlink::{self, Resolution};

/// Reals failing together are taken for this host's trouble only where at
/// least this many were healthy: with fewer, "most of them" means nothing.
const TOGETHER_MIN: usize = 3;

/// A hold for reals failing together ends after this long even if they
/// still fail: they may really have (a rack losing power), and new flows
/// must then stop going to them.
pub(super) const TOGETHER_HOLD_MAX: Duration = Duration::from_secs(30);

/// The checks as they were when a real first left service, and what came
/// since: kept for one check period, so that if most reals leave within it
/// the whole period can be undone (see [`Control::together`]).
///
/// A real that left service within the open window takes no new flows but
/// keeps its established ones until the window closes (the derivation's
/// `probation`): if most reals follow it, the cause was local and nothing
/// moved; if not, its flows move one check period later than its new ones
/// stopped.
pub(super) struct Window {
    pub(super) opened: Instant,
    pub(super) before: HashMap<CheckId, CheckView>,
    /// The pairs healthy by their checks when the window opened.
    pub(super) healthy: BTreeSet<(String, IpAddr)>,
    pub(super) events: Vec<HealthEvent<CheckId>>,
}

impl<P: Plane> Control<P> {
    /// Whether the news must be held back for this host's own trouble
    /// ([`local_trouble`]); a hold that begins here is published at once, so
    /// the status shows it before the next counter refresh.
    pub(super) fn held(&mut self, ours: &[u32]) -> bool {
        let began = self.hold.is_none();
        let held = local_trouble(&mut self.hold, ours, &self.cfg);
        if held && began {
            self.publish();
        }
        held
    }

    /// Closes the window once a check period has passed since it opened.
    /// Returns whether it closed (the data plane must then be reprogrammed:
    /// reals on probation lose their flows).
    pub(super) fn close_window(&mut self, now: Instant) -> bool {
        let period = self.check_period();
        if self
            .window
            .as_ref()
            .is_some_and(|w| now - w.opened > period)
        {
            self.window = None;
            return true;
        }
        false
    }

    /// One check period: the longest `interval + timeout` of any check.
    pub(super) fn check_period(&self) -> Duration {
        self.cfg
            .services
            .iter()
            .flat_map(|s| &s.checks)
            .map(|c| c.interval.saturating_add(c.timeout))
            .max()
            .unwrap_or_default()
    }

    /// Takes a batch of health events. Where most of the reals that were
    /// healthy have left service within one check period (more than half,
    /// at least [`TOGETHER_MIN`]), the cause is far likelier this host (an
    /// overload, a flood, its own network) than that many reals failing
    /// together; then the whole period is undone and a hold begins, so
    /// established flows stay where they are. Returns the hold's reason.
    pub(super) fn health_batch(&mut self, evs: Vec<HealthEvent<CheckId>>) -> Option<String> {
        let now = Instant::now();
        let period = self.check_period();
        self.close_window(now);
        let fails = evs
            .iter()
            .any(|e| matches!(e, HealthEvent::Transition(t) if t.to == CheckState::Failing));
        if fails && self.window.is_none() {
            self.window = Some(Window {
                opened: now,
                before: self.checks.clone(),
                healthy: check_healthy(&self.cfg, &self.checks, &self.drained),
                events: Vec::new(),
            });
        }
        if let Some(w) = &mut self.window {
            w.events.extend(evs.iter().cloned());
        }
        for ev in evs {
            health_event(&mut self.checks, ev);
        }
        let w = self.window.as_ref()?;
        let now_healthy = check_healthy(&self.cfg, &self.checks, &self.drained);
        // Only reals that went silent count: one that answers (refused,
        // HTTP 503) is reachable, so its failure is its own.
        let silent = self.silent();
        let left = w
            .healthy
            .difference(&now_healthy)
            .filter(|pair| silent.contains(*pair))
            .count();
        if w.healthy.len() < TOGETHER_MIN || left * 2 <= w.healthy.len() {
            return None;
        }
        let w = self.window.take()?;
        let reason = format!(
            "{left} of {} healthy reals failed their checks within {period:?}",
            w.healthy.len()
        );
        self.checks = w.before;
        self.together = Some(w.healthy);
        let mut hold = Hold::new_bounded(reason.clone(), Duration::ZERO, TOGETHER_HOLD_MAX);
        hold.keep(Input::Health(w.events));
        self.hold = Some(hold);
        Some(reason)
    }

    /// The (service, real) pairs with a check failing without an answer
    /// from the real (timeouts, unreachable, local socket errors).
    pub(super) fn silent(&self) -> BTreeSet<(String, IpAddr)> {
        self.checks
            .iter()
            .filter(|(_, v)| {
                v.state == CheckState::Failing
                    && v.last
                        .as_ref()
                        .and_then(|o| o.failure())
                        .is_some_and(|f| !f.is_answer())
            })
            .map(|((s, r, _), _)| (s.clone(), *r))
            .collect()
    }

    /// While a hold for reals failing together lasts: whether most of them
    /// still fail, by the checks as they are now (the held events applied
    /// to a copy).
    pub(super) fn together_still(&self) -> Option<String> {
        let (h, set) = (self.hold.as_ref()?, self.together.as_ref()?);
        let mut shadow = self.checks.clone();
        for input in h.held() {
            if let Input::Health(evs) = input {
                for ev in evs {
                    apply_quiet(&mut shadow, ev.clone());
                }
            }
        }
        let healthy = check_healthy(&self.cfg, &shadow, &self.drained);
        let still = set.difference(&healthy).count();
        (still * 2 > set.len())
            .then(|| format!("{still} of {} reals still failing their checks", set.len()))
    }
}

/// What the control loop learns from the resolver and the health monitor,
/// kept back while a [`Hold`] is in force.
pub(super) enum Input {
    L2(Vec<Resolution>),
    Health(Vec<HealthEvent<CheckId>>),
}

/// What a hold kept back, reduced to its net effect: each real's latest
/// resolution, and one transition per check from its state before the hold
/// to its latest (none where the two agree), so that the log tells what
/// changed across the hold rather than replaying it.
pub(super) fn coalesce(inputs: Vec<Input>) -> (Vec<Resolution>, Vec<HealthEvent<CheckId>>) {
    let mut l2: HashMap<IpAddr, Resolution> = HashMap::new();
    let mut first: HashMap<CheckId, CheckState> = HashMap::new();
    let mut health: Vec<HealthEvent<CheckId>> = Vec::new();
    let mut last: HashMap<CheckId, vc5_health::Transition<CheckId>> = HashMap::new();
    for input in inputs {
        match input {
            Input::L2(changes) => l2.extend(changes.into_iter().map(|c| (c.addr, c))),
            Input::Health(evs) => {
                for ev in evs {
                    match ev {
                        HealthEvent::Transition(t) => {
                            first.entry(t.id.clone()).or_insert(t.from);
                            last.insert(t.id.clone(), t);
                        }
                        // A snapshot is the monitor's whole truth: it
                        // supersedes what came before it.
                        snapshot @ HealthEvent::Snapshot(_) => {
                            first.clear();
                            last.clear();
                            health.clear();
                            health.push(snapshot);
                        }
                    }
                }
            }
        }
    }
    health.extend(last.into_values().filter_map(|mut t| {
        t.from = first.get(&t.id).copied().unwrap_or(t.from);
        (t.from != t.to).then_some(HealthEvent::Transition(t))
    }));
    (l2.into_values().collect(), health)
}

/// Our interfaces that cannot send now (down, or no carrier), by name.
pub(super) fn links_without_carrier(ours: &[u32]) -> Vec<String> {
    ours.iter()
        .filter_map(|i| match netlink::interface_by_index(*i) {
            Ok(x) if x.carrier => None,
            Ok(x) => Some(x.name),
            Err(_) => Some(format!("ifindex {i}")),
        })
        .collect()
}

pub(super) fn no_carrier(down: &[String]) -> String {
    format!("no carrier on {}", down.join(", "))
}

/// Whether the checks' and the neighbour table's news must be held back
/// because the trouble is this host's: one of its interfaces has no
/// carrier, so every real looks unreachable. Starts a hold when one begins.
pub(super) fn local_trouble(hold: &mut Option<Hold<Input>>, ours: &[u32], cfg: &Config) -> bool {
    if hold.is_some() {
        // A new loss of carrier during the grace is seen by the hold's poll.
        return true;
    }
    let down = links_without_carrier(ours);
    if down.is_empty() {
        return false;
    }
    let grace = crate::hold::grace_for(
        cfg.services
            .iter()
            .flat_map(|s| &s.checks)
            .map(|c| c.interval.saturating_mul(c.rise).saturating_add(c.timeout)),
    );
    let reason = no_carrier(&down);
    warn!(%reason, ?grace, "local trouble: keeping the data plane and the VIPs as they are (established flows stay where they are) until the links are back and the checks have had time to recover");
    *hold = Some(Hold::new(reason, grace));
    true
}
