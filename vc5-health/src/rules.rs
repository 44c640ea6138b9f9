//! From check states to real, service and VIP states: pure functions, no I/O.
//!
//! - A real's checks pass under the service's [`Quorum`]: all of them (the
//!   original's rule and the default) or at least K. A real with no checks passes.
//! - A real's [`RealState`] combines that verdict with the operator's settings:
//!   disabled, drained.
//! - A service is up while at least `need` of its reals are healthy; drained reals
//!   count (they are alive, only kept out of new flows), disabled ones do not.
//! - A VIP may be announced only while every service on every port of that VIP is
//!   up (the original's rule): one broken port withdraws the address, because a
//!   router cannot send a port elsewhere.
//!
//! Checks that have no result yet ([`CheckState::Unknown`]) make the verdict
//! [`Verdict::Pending`] when the result could still go either way, and a pending
//! real is not healthy: after a restart, nothing is announced before the checks
//! have spoken, which takes one interval at most (the first result is not subject
//! to hysteresis).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use crate::hysteresis::CheckState;

/// How many of a real's checks must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Quorum {
    /// Every check (the default).
    #[default]
    All,
    /// At least this many.
    AtLeast(usize),
}

impl Quorum {
    /// The quorum for the configuration's `quorum` key: absent means all.
    pub fn from_config(quorum: Option<usize>) -> Quorum {
        quorum.map_or(Quorum::All, Quorum::AtLeast)
    }
}

/// What a real's checks say together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Enough checks pass.
    Pass,
    /// Enough checks fail that the quorum cannot be met.
    Fail,
    /// Checks without a result yet could still make it either way.
    Pending,
}

/// The verdict of `checks` under `quorum`. No checks at all pass; a quorum larger
/// than the number of checks can never be met and fails.
pub fn verdict(quorum: Quorum, checks: impl IntoIterator<Item = CheckState>) -> Verdict {
    let (mut total, mut passing, mut unknown) = (0usize, 0usize, 0usize);
    for state in checks {
        total += 1;
        match state {
            CheckState::Passing => passing += 1,
            CheckState::Unknown => unknown += 1,
            CheckState::Failing => {}
        }
    }
    let needed = match quorum {
        Quorum::All => total,
        Quorum::AtLeast(k) => k,
    };
    if passing >= needed {
        Verdict::Pass
    } else if passing + unknown < needed {
        Verdict::Fail
    } else {
        Verdict::Pending
    }
}

/// The operator's settings for a real.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Admin {
    /// Out of service by configuration (`disabled: true`).
    pub disabled: bool,
    /// Drained at run time: keeps its flows, takes no new ones.
    pub drained: bool,
}

/// The state of a real within a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RealState {
    /// Healthy: keeps its flows and takes new ones.
    Serving,
    /// Healthy but drained: keeps its flows, takes no new ones.
    Drained,
    /// Its checks have not all reported yet: not healthy, but not known to be dead,
    /// so it keeps its flows and takes no new ones.
    Pending,
    /// Its checks fail: loses its flows.
    Failed,
    /// Disabled by configuration: takes no flows.
    Disabled,
}

impl RealState {
    /// Whether the real counts toward its service's `need`.
    pub fn is_healthy(self) -> bool {
        matches!(self, RealState::Serving | RealState::Drained)
    }

    /// Whether new flows may be sent to the real.
    pub fn takes_new_flows(self) -> bool {
        self == RealState::Serving
    }

    /// Whether flows already on the real stay there.
    pub fn keeps_flows(self) -> bool {
        matches!(
            self,
            RealState::Serving | RealState::Drained | RealState::Pending
        )
    }
}

impl fmt::Display for RealState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RealState::Serving => "serving",
            RealState::Drained => "drained",
            RealState::Pending => "pending",
            RealState::Failed => "failed",
            RealState::Disabled => "disabled",
        })
    }
}

/// The state of a real from the operator's settings and its checks' verdict.
///
/// Disabled wins over everything, since the operator said so. A drained real whose
/// checks fail is failed, not drained: draining keeps flows on a real that can still
/// serve them, and a dead one cannot.
pub fn real_state(admin: Admin, verdict: Verdict) -> RealState {
    match (admin.disabled, verdict, admin.drained) {
        (true, _, _) => RealState::Disabled,
        (false, Verdict::Fail, _) => RealState::Failed,
        (false, Verdict::Pending, _) => RealState::Pending,
        (false, Verdict::Pass, true) => RealState::Drained,
        (false, Verdict::Pass, false) => RealState::Serving,
    }
}

/// Whether a service with these reals is up: at least `need` of them healthy.
pub fn service_up(need: usize, reals: impl IntoIterator<Item = RealState>) -> bool {
    reals.into_iter().filter(|r| r.is_healthy()).count() >= need
}

/// The VIPs that may be announced, from one `(vip, up)` pair per service (or per
/// service and port) using the VIP: those all of whose pairs are up.
pub fn announceable_vips(services: impl IntoIterator<Item = (IpAddr, bool)>) -> BTreeSet<IpAddr> {
    let mut all_up: BTreeMap<IpAddr, bool> = BTreeMap::new();
    for (vip, up) in services {
        *all_up.entry(vip).or_insert(true) &= up;
    }
    all_up
        .into_iter()
        .filter_map(|(vip, up)| up.then_some(vip))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use CheckState::{Failing as F, Passing as P, Unknown as U};

    #[test]
    fn all_checks_must_pass_by_default() {
        assert_eq!(verdict(Quorum::All, [P, P, P]), Verdict::Pass);
        assert_eq!(verdict(Quorum::All, [P, F, P]), Verdict::Fail);
        assert_eq!(verdict(Quorum::All, [P, U, P]), Verdict::Pending);
        assert_eq!(verdict(Quorum::All, [F, U]), Verdict::Fail);
        assert_eq!(verdict(Quorum::default(), [F]), Verdict::Fail);
    }

    #[test]
    fn no_checks_pass() {
        assert_eq!(verdict(Quorum::All, []), Verdict::Pass);
        assert_eq!(verdict(Quorum::AtLeast(0), []), Verdict::Pass);
    }

    #[test]
    fn quorum_counts_passing_checks() {
        let q = Quorum::from_config(Some(3));
        assert_eq!(q, Quorum::AtLeast(3));
        assert_eq!(verdict(q, [P, P, P, F, F]), Verdict::Pass);
        assert_eq!(verdict(q, [P, P, F, F, F]), Verdict::Fail);
        assert_eq!(verdict(q, [P, P, U, F, F]), Verdict::Pending);
        assert_eq!(verdict(q, [P, P, P, U, U]), Verdict::Pass);
        // More than there are checks can never pass.
        assert_eq!(verdict(Quorum::AtLeast(2), [P]), Verdict::Fail);
        assert_eq!(Quorum::from_config(None), Quorum::All);
    }

    #[test]
    fn real_state_combines_admin_and_checks() {
        let none = Admin::default();
        let drained = Admin {
            drained: true,
            ..Admin::default()
        };
        let disabled = Admin {
            disabled: true,
            ..Admin::default()
        };
        assert_eq!(real_state(none, Verdict::Pass), RealState::Serving);
        assert_eq!(real_state(none, Verdict::Fail), RealState::Failed);
        assert_eq!(real_state(none, Verdict::Pending), RealState::Pending);
        assert_eq!(real_state(drained, Verdict::Pass), RealState::Drained);
        assert_eq!(real_state(drained, Verdict::Fail), RealState::Failed);
        assert_eq!(real_state(disabled, Verdict::Pass), RealState::Disabled);
        assert_eq!(
            real_state(
                Admin {
                    disabled: true,
                    drained: true
                },
                Verdict::Fail
            ),
            RealState::Disabled
        );

        assert!(RealState::Drained.is_healthy() && !RealState::Drained.takes_new_flows());
        assert!(RealState::Drained.keeps_flows());
        assert!(!RealState::Failed.keeps_flows() && !RealState::Failed.is_healthy());
        assert!(!RealState::Disabled.is_healthy() && !RealState::Disabled.keeps_flows());
        assert!(!RealState::Pending.is_healthy() && RealState::Pending.keeps_flows());
        assert!(RealState::Serving.takes_new_flows());
    }

    #[test]
    fn need_counts_healthy_and_drained_reals() {
        use RealState::*;
        assert!(service_up(1, [Serving, Failed]));
        assert!(service_up(2, [Serving, Drained, Failed]));
        assert!(!service_up(2, [Serving, Disabled, Failed]));
        assert!(!service_up(2, [Serving, Pending]));
        assert!(!service_up(1, []));
        assert!(service_up(0, []));
        assert!(!service_up(3, [Serving, Serving]));
    }

    #[test]
    fn a_vip_is_announced_only_while_every_service_on_it_is_up() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "2001:db8::1".parse().unwrap();
        let vips = announceable_vips([(a, true), (a, true), (b, true), (b, false), (c, true)]);
        assert_eq!(vips, BTreeSet::from([a, c]));
        // Order does not matter: a down service first still withdraws.
        let vips = announceable_vips([(b, false), (b, true)]);
        assert!(vips.is_empty());
        assert!(announceable_vips([]).is_empty());
    }
}
