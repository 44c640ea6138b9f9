//! Bounded random testing of the answer parsers (test builds only).
//!
//! Each property runs `VC5_FUZZ_CASES` cases (default 20,000, a second or so)
//! from a seed: `VC5_FUZZ_SEED` when set, else a random one. A failing case
//! prints the seed and its number, so `VC5_FUZZ_SEED=… cargo test` replays the
//! same sequence. A watchdog fails the property if it does not finish in a
//! minute, so a parser that loops forever is reported rather than hanging.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::Duration;

/// A small, fast, seedable generator (SplitMix64); quality is beside the point.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// `valid` after a few random edits: bit flips, byte changes, insertions,
    /// deletions, truncation, duplication of a slice.
    pub(crate) fn mutate(&mut self, valid: &[u8]) -> Vec<u8> {
        let mut v = valid.to_vec();
        for _ in 0..=self.below(4) {
            let at = if v.is_empty() { 0 } else { self.below(v.len()) };
            match self.below(7) {
                0 if !v.is_empty() => v[at] ^= 1 << self.below(8),
                1 if !v.is_empty() => v[at] = self.next() as u8,
                2 => v.insert(at, self.next() as u8),
                3 if !v.is_empty() => {
                    v.remove(at);
                }
                4 => v.truncate(at),
                5 if !v.is_empty() => {
                    let end = (at + 1 + self.below(16)).min(v.len());
                    let piece = v[at..end].to_vec();
                    let to = self.below(v.len() + 1);
                    v.splice(to..to, piece);
                }
                _ if !v.is_empty() => v[at] = 0xff,
                _ => {}
            }
        }
        v
    }
}

/// Runs `case` for every case of the property `name`, as described above.
pub(crate) fn property(name: &str, case: impl Fn(&mut Rng) + Send + 'static) {
    let seed = std::env::var("VC5_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(crate::random_u64);
    let cases: u64 = std::env::var("VC5_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let (done, finished) = mpsc::channel();
    let name2 = name.to_owned();
    std::thread::spawn(move || {
        let mut rng = Rng(seed);
        for n in 0..cases {
            if catch_unwind(AssertUnwindSafe(|| case(&mut rng))).is_err() {
                let _ = done.send(Err(format!(
                    "{name2}: case {n} failed: VC5_FUZZ_SEED={seed} replays it"
                )));
                return;
            }
        }
        let _ = done.send(Ok(()));
    });
    let limit = Duration::from_secs(60).max(Duration::from_millis(cases / 100));
    match finished.recv_timeout(limit) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("{name}: no end within {limit:?}: VC5_FUZZ_SEED={seed} replays it"),
    }
}
