//! Turning a stream of pass/fail results into a stable check state.
//!
//! A passing check turns failing after `fall` consecutive failures, and a failing
//! one passing again after `rise` consecutive passes, so that one lost packet does
//! not move traffic and one lucky answer does not bring a sick real back.
//!
//! **The first result decides the initial state directly, without hysteresis.** A
//! check starts [`CheckState::Unknown`]; its first result makes it `Passing` or
//! `Failing` at once. Otherwise a restarted daemon would have to assume a state for
//! every check and then hold every real in it for `rise × interval` (or
//! `fall × interval`) against the evidence: either all reals failed, and every VIP
//! withdrawn, for several seconds after each restart, or all healthy, dead ones
//! included. Hysteresis applies from the second result on.

use std::fmt;
use std::time::SystemTime;

use tokio::time::Instant;

use crate::outcome::Outcome;

/// The state of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckState {
    /// No result yet.
    Unknown,
    /// The check passes.
    Passing,
    /// The check fails.
    Failing,
}

impl CheckState {
    /// Whether the check passes. `Unknown` does not.
    pub fn is_passing(self) -> bool {
        self == CheckState::Passing
    }
}

impl fmt::Display for CheckState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckState::Unknown => "unknown",
            CheckState::Passing => "passing",
            CheckState::Failing => "failing",
        })
    }
}

/// The rise/fall state machine, without time or outcomes: pure and small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    state: CheckState,
    /// Consecutive results that contradict `state`.
    against: u32,
}

impl Hysteresis {
    /// A machine in state `Unknown`. A `rise` or `fall` of 0 is taken as 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self::starting(rise, fall, CheckState::Unknown)
    }

    /// A machine that starts in `state`: for a check whose parameters changed, which
    /// keeps the state the old one had rather than starting over (see
    /// [`crate::monitor`]).
    pub fn starting(rise: u32, fall: u32, state: CheckState) -> Self {
        Hysteresis {
            rise: rise.max(1),
            fall: fall.max(1),
            state,
            against: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> CheckState {
        self.state
    }

    /// Consecutive results so far that contradict the current state.
    pub fn streak_against(&self) -> u32 {
        self.against
    }

    /// Takes one result; returns the new state if it changed.
    pub fn observe(&mut self, passed: bool) -> Option<CheckState> {
        let (agrees, needed, other) = match self.state {
            CheckState::Unknown => {
                // The first result decides: see the module documentation.
                self.state = if passed {
                    CheckState::Passing
                } else {
                    CheckState::Failing
                };
                self.against = 0;
                return Some(self.state);
            }
            CheckState::Passing => (passed, self.fall, CheckState::Failing),
            CheckState::Failing => (!passed, self.rise, CheckState::Passing),
        };
        if agrees {
            self.against = 0;
            return None;
        }
        self.against += 1;
        if self.against >= needed {
            self.state = other;
            self.against = 0;
            Some(other)
        } else {
            None
        }
    }
}

/// A change of a check's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The state before.
    pub from: CheckState,
    /// The state after.
    pub to: CheckState,
}

/// Everything known about one check: its state machine, its last outcome, when its
/// state last changed, and how many runs it has had.
#[derive(Debug, Clone)]
pub struct CheckTracker {
    machine: Hysteresis,
    last: Option<Outcome>,
    last_failure: Option<Outcome>,
    changed: Option<(Instant, SystemTime)>,
    runs: u64,
    passes: u64,
}

impl CheckTracker {
    /// A tracker for a check with `rise` and `fall`, starting in `state`.
    pub fn new(rise: u32, fall: u32, state: CheckState) -> Self {
        CheckTracker {
            machine: Hysteresis::starting(rise, fall, state),
            last: None,
            last_failure: None,
            changed: None,
            runs: 0,
            passes: 0,
        }
    }

    /// Records one outcome; returns the change it caused, if any.
    pub fn record(&mut self, outcome: Outcome) -> Option<Change> {
        self.runs += 1;
        self.passes += u64::from(outcome.passed());
        let from = self.machine.state();
        let change = self.machine.observe(outcome.passed()).map(|to| {
            self.changed = Some((outcome.at, outcome.wall));
            Change { from, to }
        });
        if !outcome.passed() {
            self.last_failure = Some(outcome.clone());
        }
        self.last = Some(outcome);
        change
    }

    /// The current state.
    pub fn state(&self) -> CheckState {
        self.machine.state()
    }

    /// The state machine.
    pub fn machine(&self) -> &Hysteresis {
        &self.machine
    }

    /// The last outcome, if the check has run.
    pub fn last(&self) -> Option<&Outcome> {
        self.last.as_ref()
    }

    /// The latest failed run, kept while later runs pass: it says why a check that
    /// passes now flapped, or why it failed before it recovered.
    pub fn last_failure(&self) -> Option<&Outcome> {
        self.last_failure.as_ref()
    }

    /// When the state last changed (tokio's clock, wall clock); `None` until the
    /// first result.
    pub fn changed(&self) -> Option<(Instant, SystemTime)> {
        self.changed
    }

    /// Runs recorded.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// Runs recorded that passed.
    pub fn passes(&self) -> u64 {
        self.passes
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outcome::Failure;
    use CheckState::*;

    fn feed(machine: &mut Hysteresis, results: &str) -> Vec<CheckState> {
        results
            .chars()
            .map(|c| {
                machine.observe(c == 'p');
                machine.state()
            })
            .collect()
    }

    #[test]
    fn first_result_decides_without_hysteresis() {
        let mut up = Hysteresis::new(2, 3);
        assert_eq!(up.state(), Unknown);
        assert_eq!(up.observe(true), Some(Passing));
        let mut down = Hysteresis::new(2, 3);
        assert_eq!(down.observe(false), Some(Failing));
    }

    #[test]
    fn fall_consecutive_failures_fail_and_rise_passes_recover() {
        let mut m = Hysteresis::new(2, 3);
        assert_eq!(
            feed(&mut m, "pffpfffpp"),
            [
                Passing, Passing, Passing, Passing, Passing, Passing, Failing, Failing, Passing
            ]
        );
        // A pass between failures resets the count, and vice versa.
        let mut m = Hysteresis::new(3, 1);
        assert_eq!(
            feed(&mut m, "pfppfppp"),
            [
                Passing, Failing, Failing, Failing, Failing, Failing, Failing, Passing
            ]
        );
        assert_eq!(m.streak_against(), 0);
    }

    #[test]
    fn one_and_one_follows_every_result() {
        let mut m = Hysteresis::new(1, 1);
        assert_eq!(feed(&mut m, "pfpf"), [Passing, Failing, Passing, Failing]);
        // Zero is taken as one rather than "never".
        let mut m = Hysteresis::new(0, 0);
        assert_eq!(feed(&mut m, "pf"), [Passing, Failing]);
    }

    #[test]
    fn a_started_machine_keeps_its_state_until_hysteresis_moves_it() {
        let mut m = Hysteresis::starting(2, 2, Passing);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), Some(Failing));
    }

    fn outcome(pass: bool) -> Outcome {
        let result = if pass {
            Ok(())
        } else {
            Err(Failure::HttpStatus(503))
        };
        Outcome::new(result, Duration::from_millis(3))
    }

    #[tokio::test(start_paused = true)]
    async fn tracker_records_transition_times_on_tokio_clock() {
        let t0 = Instant::now();
        let mut tracker = CheckTracker::new(2, 2, Unknown);
        assert_eq!(tracker.changed(), None);
        assert_eq!(
            tracker.record(outcome(true)),
            Some(Change {
                from: Unknown,
                to: Passing
            })
        );
        assert_eq!(tracker.changed().map(|c| c.0), Some(t0));

        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(tracker.record(outcome(false)), None);
        tokio::time::advance(Duration::from_secs(2)).await;
        let change = tracker.record(outcome(false));
        assert_eq!(
            change,
            Some(Change {
                from: Passing,
                to: Failing
            })
        );
        assert_eq!(
            tracker.changed().map(|c| c.0),
            Some(t0 + Duration::from_secs(4))
        );
        assert_eq!(
            tracker
                .last()
                .and_then(|o| o.failure())
                .map(ToString::to_string),
            Some("HTTP 503".to_owned())
        );
        assert_eq!((tracker.runs(), tracker.passes()), (3, 1));
        tracker.record(outcome(true));
        assert!(tracker.last().is_some_and(Outcome::passed));
        assert_eq!(
            tracker
                .last_failure()
                .and_then(|o| o.failure())
                .map(ToString::to_string),
            Some("HTTP 503".to_owned())
        );
    }
}
