//! Holding the data plane while the load balancer's own trouble lasts.
//!
//! When the cause of failing checks and lost MACs is local (vc5d's own
//! interface has no carrier), what the checks and the neighbour table say
//! is about this host, not the reals. Acting on it would take every real out
//! of service and, as they come back one by one, move established flows to
//! whichever real returned first, resetting them. So while the cause lasts,
//! and for a grace period after it ends (long enough for every check to pass
//! `rise` times again), the control loop keeps the data plane and the VIPs as
//! they were and buffers what it learns; then it applies the buffered
//! inputs at once, so that only reals that really failed meanwhile leave.
//!
//! [`Hold`] is the state machine, without I/O: the control loop tells it
//! what it sees and asks it whether the hold is over.

use std::time::{Duration, Instant, SystemTime};

/// The shortest grace after the cause ends: MACs are re-learnt within
/// about a second of link-up.
pub const MIN_GRACE: Duration = Duration::from_secs(2);
/// The longest: a real that failed during the hold is taken out at most
/// this long after the link came back.
pub const MAX_GRACE: Duration = Duration::from_secs(30);

/// A hold in force, with the inputs it has kept back.
#[derive(Debug)]
pub struct Hold<E> {
    /// What is wrong, for the log and the status.
    pub reason: String,
    /// When the hold began (for the status).
    pub since: SystemTime,
    grace: Duration,
    /// Set once the cause is gone: the hold ends then.
    release_at: Option<Instant>,
    /// The hold ends then at the latest, cause or no cause.
    deadline: Option<Instant>,
    held: Vec<E>,
}

impl<E> Hold<E> {
    /// A hold for `reason`, with `grace` (clamped to
    /// [`MIN_GRACE`]..=[`MAX_GRACE`]) after the cause ends.
    pub fn new(reason: String, grace: Duration) -> Self {
        Hold {
            reason,
            since: SystemTime::now(),
            grace: grace.clamp(MIN_GRACE, MAX_GRACE),
            release_at: None,
            deadline: None,
            held: Vec::new(),
        }
    }

    /// A hold that ends after `max` at the latest: for causes that are
    /// inferred rather than seen, which may be wrong.
    pub fn new_bounded(reason: String, grace: Duration, max: Duration) -> Self {
        let mut h = Self::new(reason, grace);
        h.deadline = Some(Instant::now() + max);
        h
    }

    /// The inputs kept back so far, oldest first.
    pub fn held(&self) -> &[E] {
        &self.held
    }

    /// Whether the hold is over at `now` because its time ran out.
    pub fn ended_by_deadline(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d) && self.release_at.is_none_or(|t| now < t)
    }

    /// Keeps an input back until the hold ends.
    pub fn keep(&mut self, e: E) {
        self.held.push(e);
    }

    /// The cause is still (or again) there: the hold lasts.
    pub fn cause_present(&mut self, reason: String) {
        self.reason = reason;
        self.release_at = None;
    }

    /// The cause is gone as of `now`; the first call starts the grace.
    /// Returns true if this call started it.
    pub fn cause_gone(&mut self, now: Instant) -> bool {
        if self.release_at.is_some() {
            return false;
        }
        self.release_at = Some(now + self.grace);
        true
    }

    /// When the hold ends, once the cause is gone.
    pub fn release_at(&self) -> Option<Instant> {
        self.release_at
    }

    /// Whether the hold is over at `now`.
    pub fn over(&self, now: Instant) -> bool {
        self.release_at.is_some_and(|t| now >= t) || self.deadline.is_some_and(|d| now >= d)
    }

    /// Ends the hold: the inputs kept back, oldest first.
    pub fn release(self) -> Vec<E> {
        self.held
    }
}

/// The grace for a configuration whose slowest check to recover takes
/// `rise × interval + timeout`.
pub fn grace_for(recoveries: impl IntoIterator<Item = Duration>) -> Duration {
    recoveries
        .into_iter()
        .max()
        .unwrap_or_default()
        .clamp(MIN_GRACE, MAX_GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lasts_while_the_cause_does_then_for_the_grace() {
        let t0 = Instant::now();
        let mut h = Hold::new("eth0 has no carrier".into(), Duration::from_secs(5));
        h.keep(1);
        h.keep(2);
        assert!(
            !h.over(t0 + Duration::from_secs(3600)),
            "no end while the cause lasts"
        );
        assert!(h.cause_gone(t0));
        assert!(
            !h.cause_gone(t0 + Duration::from_secs(1)),
            "grace starts once"
        );
        assert!(!h.over(t0 + Duration::from_secs(4)));
        assert!(h.over(t0 + Duration::from_secs(5)));
        // The link flaps again before the grace ends: the hold goes on.
        h.cause_present("eth0 has no carrier".into());
        assert!(!h.over(t0 + Duration::from_secs(60)));
        assert!(h.cause_gone(t0 + Duration::from_secs(60)));
        assert!(h.over(t0 + Duration::from_secs(65)));
        assert_eq!(h.release(), vec![1, 2]);
    }

    #[test]
    fn a_bounded_hold_ends_at_its_deadline_even_if_the_cause_lasts() {
        let t0 = Instant::now();
        let mut h = Hold::new_bounded(
            "most reals failed".into(),
            Duration::ZERO,
            Duration::from_secs(30),
        );
        h.keep("event");
        h.cause_present("still failing".into());
        assert!(!h.over(t0 + Duration::from_secs(10)));
        assert!(h.over(t0 + Duration::from_secs(31)));
        assert!(h.ended_by_deadline(t0 + Duration::from_secs(31)));
        assert_eq!(h.held(), &["event"]);
    }

    #[test]
    fn grace_is_bounded() {
        let s = Duration::from_secs;
        assert_eq!(grace_for([s(1), s(7), s(3)]), s(7));
        assert_eq!(grace_for([]), MIN_GRACE);
        assert_eq!(grace_for([s(3600)]), MAX_GRACE);
        assert_eq!(Hold::<()>::new(String::new(), s(0)).grace, MIN_GRACE);
    }
}
