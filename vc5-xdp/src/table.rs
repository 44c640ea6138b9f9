//! Lookup tables by weighted rendezvous (highest-random-weight) hashing.
//!
//! Each of a service's [`TABLE_SIZE`] buckets goes to the real with the
//! highest score for that bucket. A real's score depends only on the
//! service, the bucket and the real's own address and weight, so removing
//! a real moves exactly the buckets it held, adding one takes buckets only
//! from others in proportion, and every load balancer computes the same
//! table from the same reals without talking to the others.
//!
//! Weighted scores follow the usual `-w / ln(u)` form (u uniform in (0,1)
//! from the hash): a real's share is proportional to its weight. When all
//! weights are equal the order of `u` alone decides, so the common case
//! skips the logarithm.

use crate::hash::{hash_bytes, mix64};
use crate::maps::{TABLE_SIZE, Table};
use std::net::IpAddr;

/// A real that may take new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub addr: IpAddr,
    pub weight: u32,
    /// What the table stores for this real (its backend index).
    pub backend: u16,
}

/// The seed of a service: all load balancers derive the same one.
pub fn service_seed(vip: IpAddr, port: u16, proto: u8) -> u64 {
    let mut b = crate::maps::addr16(vip).to_vec();
    b.extend_from_slice(&port.to_be_bytes());
    b.push(proto);
    hash_bytes(&b)
}

fn real_key(addr: IpAddr) -> u64 {
    hash_bytes(&crate::maps::addr16(addr))
}

/// A candidate prepared for scoring.
#[derive(Clone, Copy)]
struct Scorer {
    key: u64,
    weight: f64,
    backend: u16,
}

/// Bucket `bucket`'s score of a real: (weighted score, raw hash). The raw
/// hash breaks ties, and alone decides when all weights are equal.
#[inline]
fn score(s: &Scorer, bucket: usize, weighted: bool) -> (f64, u64) {
    let h = mix64(s.key ^ (bucket as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    if !weighted {
        return (0.0, h);
    }
    // u in (0,1): 53 bits of h, never 0 or 1.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    (-s.weight / u.ln(), h)
}

fn better(a: (f64, u64), b: (f64, u64)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 > b.1)
}

fn scorers(seed: u64, candidates: &[Candidate]) -> (Vec<Scorer>, bool) {
    let live: Vec<Scorer> = candidates
        .iter()
        .filter(|c| c.weight > 0)
        .map(|c| Scorer {
            key: real_key(c.addr) ^ seed,
            weight: c.weight as f64,
            backend: c.backend,
        })
        .collect();
    let weighted = live.iter().any(|r| r.weight != live[0].weight);
    (live, weighted)
}

fn winner(live: &[Scorer], bucket: usize, weighted: bool) -> u16 {
    let mut best = ((f64::NEG_INFINITY, 0u64), 0u16);
    for s in live {
        let sc = score(s, bucket, weighted);
        if better(sc, best.0) {
            best = (sc, s.backend);
        }
    }
    best.1
}

/// Builds a service's table. With no candidates every bucket is 0: the
/// program drops the service's new flows and counts them.
pub fn build(seed: u64, candidates: &[Candidate]) -> Box<Table> {
    let mut t = Box::<Table>::default();
    let (live, weighted) = scorers(seed, candidates);
    if live.is_empty() {
        return t;
    }
    for (bucket, slot) in t.backend.iter_mut().enumerate() {
        *slot = winner(&live, bucket, weighted);
    }
    t
}

/// The table [`build`] would give for `new`, computed from the table
/// `old` built for `old_cands`: a bucket whose winner stays a candidate
/// only has to beat the added reals, so a change of a few reals costs a
/// few hashes per bucket instead of one per real. Falls back to a full
/// build when weights changed.
pub fn rebuild(seed: u64, old: &Table, old_cands: &[Candidate], new: &[Candidate]) -> Box<Table> {
    let (old_live, old_weighted) = scorers(seed, old_cands);
    let (live, weighted) = scorers(seed, new);
    let same_weights = weighted == old_weighted
        && live.iter().all(|n| {
            old_live
                .iter()
                .find(|o| o.backend == n.backend)
                .is_none_or(|o| o.key == n.key && o.weight == n.weight)
        });
    if old_live.is_empty() || live.is_empty() || !same_weights {
        return build(seed, new);
    }
    let kept: std::collections::HashMap<u16, Scorer> = live
        .iter()
        .filter(|n| {
            old_live
                .iter()
                .any(|o| o.backend == n.backend && o.key == n.key)
        })
        .map(|n| (n.backend, *n))
        .collect();
    let added: Vec<Scorer> = live
        .iter()
        .filter(|n| !kept.contains_key(&n.backend))
        .copied()
        .collect();
    let mut t = Box::<Table>::default();
    for (bucket, slot) in t.backend.iter_mut().enumerate() {
        *slot = match kept.get(&old.backend[bucket]) {
            Some(w) => {
                let mut best = (score(w, bucket, weighted), w.backend);
                for a in &added {
                    let sc = score(a, bucket, weighted);
                    if better(sc, best.0) {
                        best = (sc, a.backend);
                    }
                }
                best.1
            }
            None => winner(&live, bucket, weighted),
        };
    }
    t
}

/// How many buckets each backend holds.
pub fn shares(t: &Table) -> std::collections::BTreeMap<u16, usize> {
    let mut m = std::collections::BTreeMap::new();
    for &b in t.backend.iter() {
        *m.entry(b).or_insert(0) += 1;
    }
    m
}

const _: () = assert!(TABLE_SIZE.is_power_of_two());

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn reals(n: u16, weight: u32) -> Vec<Candidate> {
        (1..=n)
            .map(|i| Candidate {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8)),
                weight,
                backend: i,
            })
            .collect()
    }

    #[test]
    fn removing_one_real_moves_only_its_buckets() {
        let seed = service_seed("192.0.2.1".parse().unwrap(), 80, 6);
        for n in [2u16, 3, 8, 64] {
            let all = reals(n, 1);
            let before = build(seed, &all);
            let gone = all[(n / 2) as usize].backend;
            let rest: Vec<_> = all.iter().copied().filter(|c| c.backend != gone).collect();
            let after = build(seed, &rest);
            let mut moved = 0;
            for (b, a) in before.backend.iter().zip(after.backend.iter()) {
                if *b == gone {
                    moved += 1;
                    assert_ne!(*a, gone);
                } else {
                    assert_eq!(b, a, "a bucket of another real moved (n = {n})");
                }
            }
            // Its share, roughly 1/n of the table.
            let expect = TABLE_SIZE / n as usize;
            assert!(
                moved > expect / 2 && moved < expect * 2,
                "n={n} moved={moved}"
            );
        }
    }

    #[test]
    fn adding_a_real_takes_buckets_only_for_itself() {
        let seed = service_seed("2001:db8::1".parse().unwrap(), 443, 6);
        let three = reals(3, 1);
        let four = reals(4, 1);
        let (a, b) = (build(seed, &three), build(seed, &four));
        for (x, y) in a.backend.iter().zip(b.backend.iter()) {
            assert!(x == y || *y == 4);
        }
    }

    #[test]
    fn equal_weights_share_evenly_and_weights_skew() {
        let seed = service_seed("192.0.2.1".parse().unwrap(), 80, 6);
        let s = shares(&build(seed, &reals(4, 1)));
        for (_, n) in s {
            assert!((800..1250).contains(&n), "{n}");
        }
        let mut w = reals(2, 1);
        w[1].weight = 3;
        let s = shares(&build(seed, &w));
        let ratio = s[&2] as f64 / s[&1] as f64;
        assert!((2.4..3.7).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn rebuild_equals_a_full_build() {
        // A deterministic pseudo-random walk of adds and removes: the
        // incremental table must be exactly the full one, every step.
        let seed = service_seed("192.0.2.9".parse().unwrap(), 443, 6);
        let pool = reals(40, 1);
        let mut cur: Vec<Candidate> = pool[..10].to_vec();
        let mut table = build(seed, &cur);
        let mut x = 12345u64;
        for step in 0..60 {
            x = mix64(x);
            let next: Vec<Candidate> = pool
                .iter()
                .filter(|c| (mix64(x ^ c.backend as u64) & 3) != 0)
                .copied()
                .collect();
            let inc = rebuild(seed, &table, &cur, &next);
            assert_eq!(*inc, *build(seed, &next), "step {step}");
            cur = next;
            table = inc;
        }
        // Weighted, and a weight change (a full build underneath).
        let mut w = reals(6, 2);
        w[0].weight = 5;
        let t = build(seed, &w);
        let mut w2 = w.clone();
        w2.pop();
        assert_eq!(*rebuild(seed, &t, &w, &w2), *build(seed, &w2));
        w2[1].weight = 3;
        assert_eq!(*rebuild(seed, &t, &w, &w2), *build(seed, &w2));
    }

    #[test]
    fn no_candidates_means_an_empty_table() {
        let t = build(1, &[]);
        assert!(t.backend.iter().all(|&b| b == 0));
    }

    #[test]
    fn order_of_candidates_does_not_matter() {
        let seed = 42;
        let mut r = reals(5, 2);
        let a = build(seed, &r);
        r.reverse();
        assert_eq!(a, build(seed, &r));
    }
}
