//! Replay protection per sender: an epoch plus a sliding window over
//! sequence numbers (the bitmap shape of RFC 6479, as WireGuard uses it).
//!
//! A sender picks its epoch at start (its start time in nanoseconds, so a
//! restart moves it forward) and numbers its datagrams from 0. A receiver
//! keeps, per sender id, the highest epoch seen and a [`WINDOW`]-wide bitmap
//! below the highest sequence number: older epochs, duplicates and sequence
//! numbers that fell out of the window are rejected; a higher epoch starts a
//! new window. Because a receiver that restarts has forgotten every window,
//! datagrams also carry their send time and are refused when it is further
//! from the receiver's clock than a configured skew, or earlier than the
//! receiver's start ([`ReplayGuard::not_before`], the start less
//! [`START_SLACK_MS`] for the hosts' clock offset): a datagram recorded
//! before a receiver restarted is not accepted after the restart.
//!
//! Memory is bounded: at most `max_senders` are tracked; a new sender evicts
//! the least recently accepted one. Only authenticated headers may be passed
//! here, so an attacker without the key cannot evict anybody.

use std::collections::HashMap;

use super::wire::Header;

/// How far a sender's clock may lag this host's for its datagrams sent
/// after this host's start to be accepted at once; a replay of what was
/// sent that shortly before a restart carries flows that were current then.
pub const START_SLACK_MS: u64 = 500;

/// Width of the sequence window in datagrams.
pub const WINDOW: u64 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("datagram from an older epoch of its sender")]
    OldEpoch,
    #[error("sequence number already seen")]
    Duplicate,
    #[error("sequence number older than the replay window")]
    TooOld,
    #[error("send time is {skew_ms} ms from this host's clock")]
    Stale { skew_ms: u64 },
}

impl ReplayError {
    /// A stable name for the drop counter.
    pub fn reason(&self) -> &'static str {
        match self {
            ReplayError::OldEpoch => "old_epoch",
            ReplayError::Duplicate => "duplicate",
            ReplayError::TooOld => "too_old",
            ReplayError::Stale { .. } => "stale",
        }
    }
}

#[derive(Debug, Clone)]
struct Window {
    epoch: u64,
    top: u64,
    /// Bit `s % WINDOW` is set when sequence `s` (top - WINDOW < s <= top) was seen.
    bits: [u64; WORDS],
    last_used: u64,
}

impl Window {
    fn new(epoch: u64, seq: u64) -> Self {
        let mut w = Window {
            epoch,
            top: seq,
            bits: [0; WORDS],
            last_used: 0,
        };
        w.set(seq);
        w
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn set(&mut self, seq: u64) {
        let (w, m) = Self::bit(seq);
        self.bits[w] |= m;
    }

    fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= WINDOW {
            return Err(ReplayError::TooOld);
        }
        let (w, m) = Self::bit(seq);
        if self.bits[w] & m != 0 {
            return Err(ReplayError::Duplicate);
        }
        Ok(())
    }

    /// Records `seq`, which [`Window::check`] accepted.
    fn record(&mut self, seq: u64) {
        if seq > self.top {
            let ahead = seq - self.top;
            if ahead >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                // Forget the slots the window slides over.
                for s in self.top + 1..=seq {
                    let (w, m) = Self::bit(s);
                    self.bits[w] &= !m;
                }
            }
            self.top = seq;
        }
        self.set(seq);
    }
}

/// Per-sender replay state of one receiver.
#[derive(Debug)]
pub struct ReplayGuard {
    senders: HashMap<u64, Window>,
    max_senders: usize,
    max_skew_ms: u64,
    not_before_ms: u64,
    clock: u64,
}

impl ReplayGuard {
    /// Tracks at most `max_senders` (at least 1) and refuses datagrams whose
    /// send time is more than `max_skew_ms` from the receiver's clock.
    pub fn new(max_senders: usize, max_skew_ms: u64) -> Self {
        ReplayGuard {
            senders: HashMap::new(),
            max_senders: max_senders.max(1),
            max_skew_ms,
            not_before_ms: 0,
            clock: 0,
        }
    }

    /// Refuses datagrams sent before `ms` (wall clock): give it this
    /// process's start less [`START_SLACK_MS`].
    pub fn not_before(mut self, ms: u64) -> Self {
        self.not_before_ms = ms;
        self
    }

    /// Accepts or rejects an authenticated header; `now_ms` is this host's
    /// wall clock in milliseconds since the Unix epoch. Only an accepted
    /// header changes the state.
    pub fn accept(&mut self, h: &Header, now_ms: u64) -> Result<(), ReplayError> {
        let skew_ms = h.time_ms.abs_diff(now_ms);
        if skew_ms > self.max_skew_ms || h.time_ms < self.not_before_ms {
            return Err(ReplayError::Stale { skew_ms });
        }
        self.clock += 1;
        match self.senders.get_mut(&h.sender) {
            Some(w) if h.epoch < w.epoch => return Err(ReplayError::OldEpoch),
            Some(w) if h.epoch == w.epoch => {
                w.check(h.seq)?;
                w.record(h.seq);
                w.last_used = self.clock;
            }
            Some(w) => {
                *w = Window::new(h.epoch, h.seq);
                w.last_used = self.clock;
            }
            None => {
                if self.senders.len() >= self.max_senders {
                    self.evict_least_recent();
                }
                let mut w = Window::new(h.epoch, h.seq);
                w.last_used = self.clock;
                self.senders.insert(h.sender, w);
            }
        }
        Ok(())
    }

    fn evict_least_recent(&mut self) {
        // A linear scan: the cap is a few hundred peers and a new sender is rare.
        if let Some(&id) = self
            .senders
            .iter()
            .min_by_key(|(_, w)| w.last_used)
            .map(|(id, _)| id)
        {
            self.senders.remove(&id);
        }
    }

    /// Number of senders tracked.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Whether `sender` is tracked.
    pub fn knows(&self, sender: u64) -> bool {
        self.senders.contains_key(&sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowsync::wire::MessageType;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn nothing_sent_before_a_restart_is_accepted_after_it() {
        let start = NOW;
        let mut g = ReplayGuard::new(8, 30_000).not_before(start - START_SLACK_MS);
        let h = |seq, time_ms| Header {
            kind: MessageType::Flows,
            key_id: 0,
            sender: 1,
            epoch: 5,
            seq,
            time_ms,
        };
        // Recorded a second before this receiver started: a replay.
        assert!(matches!(
            g.accept(&h(10, start - 1_000), start + 10),
            Err(ReplayError::Stale { .. })
        ));
        assert!(g.is_empty());
        // Within the slack (a sender whose clock lags a little) and after.
        g.accept(&h(11, start - 100), start + 10).unwrap();
        g.accept(&h(12, start + 5), start + 10).unwrap();
    }

    fn h(sender: u64, epoch: u64, seq: u64) -> Header {
        Header {
            kind: MessageType::Flows,
            key_id: 0,
            sender,
            epoch,
            seq,
            time_ms: NOW,
        }
    }

    #[test]
    fn duplicates_are_rejected_in_any_order() {
        let mut g = ReplayGuard::new(8, 1000);
        for seq in [5, 3, 4, 9, 0] {
            g.accept(&h(1, 1, seq), NOW).unwrap();
        }
        for seq in [5, 3, 4, 9, 0] {
            assert_eq!(g.accept(&h(1, 1, seq), NOW), Err(ReplayError::Duplicate));
        }
        // Gaps stay open until filled.
        g.accept(&h(1, 1, 7), NOW).unwrap();
        assert_eq!(g.accept(&h(1, 1, 7), NOW), Err(ReplayError::Duplicate));
    }

    #[test]
    fn window_edge() {
        let mut g = ReplayGuard::new(8, 1000);
        g.accept(&h(1, 1, 2000), NOW).unwrap();
        // top - WINDOW + 1 is the oldest sequence still inside the window.
        g.accept(&h(1, 1, 2000 - WINDOW + 1), NOW).unwrap();
        assert_eq!(
            g.accept(&h(1, 1, 2000 - WINDOW), NOW),
            Err(ReplayError::TooOld)
        );
        assert_eq!(g.accept(&h(1, 1, 0), NOW), Err(ReplayError::TooOld));
        // Sliding forward by less than the window keeps the seen bits below.
        g.accept(&h(1, 1, 2000 + WINDOW - 1), NOW).unwrap();
        assert_eq!(g.accept(&h(1, 1, 2000), NOW), Err(ReplayError::Duplicate));
        // Slots slid over are forgotten, so their new sequences are accepted.
        g.accept(&h(1, 1, 2001), NOW).unwrap();
        // A jump beyond the window clears everything below it.
        g.accept(&h(1, 1, 10_000), NOW).unwrap();
        assert_eq!(g.accept(&h(1, 1, 2001), NOW), Err(ReplayError::TooOld));
        g.accept(&h(1, 1, 10_000 - 1), NOW).unwrap();
    }

    #[test]
    fn epochs() {
        let mut g = ReplayGuard::new(8, 1000);
        g.accept(&h(1, 10, 50), NOW).unwrap();
        // A restarted sender (higher epoch) starts again from 0.
        g.accept(&h(1, 11, 0), NOW).unwrap();
        g.accept(&h(1, 11, 1), NOW).unwrap();
        // The old epoch is dead, even for sequences never seen.
        assert_eq!(g.accept(&h(1, 10, 51), NOW), Err(ReplayError::OldEpoch));
        assert_eq!(g.accept(&h(1, 11, 0), NOW), Err(ReplayError::Duplicate));
        // Senders do not share windows.
        g.accept(&h(2, 10, 50), NOW).unwrap();
    }

    #[test]
    fn stale_send_time_is_rejected_without_state_change() {
        let mut g = ReplayGuard::new(8, 1000);
        let mut old = h(1, 1, 0);
        old.time_ms = NOW - 1001;
        assert_eq!(
            g.accept(&old, NOW),
            Err(ReplayError::Stale { skew_ms: 1001 })
        );
        let mut future = h(1, 1, 0);
        future.time_ms = NOW + 5000;
        assert!(matches!(
            g.accept(&future, NOW),
            Err(ReplayError::Stale { .. })
        ));
        assert!(g.is_empty());
        old.time_ms = NOW - 1000;
        g.accept(&old, NOW).unwrap();
    }

    #[test]
    fn senders_are_capped_evicting_the_least_recent() {
        let mut g = ReplayGuard::new(3, 1000);
        for s in 1..=3 {
            g.accept(&h(s, 1, 0), NOW).unwrap();
        }
        // Sender 1 is heard again, so 2 is now the least recent.
        g.accept(&h(1, 1, 1), NOW).unwrap();
        g.accept(&h(4, 1, 0), NOW).unwrap();
        assert_eq!(g.len(), 3);
        assert!(g.knows(1) && !g.knows(2) && g.knows(3) && g.knows(4));
        // A rejected datagram does not refresh its sender.
        assert!(g.accept(&h(3, 1, 0), NOW).is_err());
        g.accept(&h(5, 1, 0), NOW).unwrap();
        assert!(!g.knows(3) && g.knows(1));
    }

    #[test]
    fn window_matches_a_set_model() {
        // Every sequence pattern near the window agrees with an exact model.
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut g = ReplayGuard::new(1, u64::MAX);
        let mut seen = std::collections::HashSet::new();
        let mut top: Option<u64> = None;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let base = top.unwrap_or(0);
            let seq = (base + 64).saturating_sub(rng % (WINDOW + 200));
            let want = match top {
                Some(t) if seq + WINDOW <= t => Err(ReplayError::TooOld),
                _ if seen.contains(&seq) => Err(ReplayError::Duplicate),
                _ => Ok(()),
            };
            assert_eq!(g.accept(&h(9, 1, seq), NOW), want, "seq {seq} top {top:?}");
            if want.is_ok() {
                seen.insert(seq);
                top = Some(top.map_or(seq, |t| t.max(seq)));
            }
        }
    }
}
