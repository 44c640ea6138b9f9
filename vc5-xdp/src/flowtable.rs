//! This host's flow tables as user space sees them: the program's
//! set-associative tables (`bpf/flowtable.h`), mapped into this process's
//! memory (`BPF_F_MMAPABLE`).
//!
//! A flow has two candidate sets, both from its flow hash; it is inserted
//! into the one with more free ways, and an insert into two full sets
//! overwrites the least recently seen of their flows if that is
//! [`EVICT_AGE`] old (else it is refused). Reads and
//! writes go word by word (8 bytes, atomic), as the program's do, so a
//! reader never sees half a word; the sweep deletes with a compare-and-swap
//! of a way's last word, so a flow that a packet stamped meanwhile stays.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::hash::{flow_hash, mix};
use crate::maps::{EVICT_AGE, Flow, Flow4, Flow6, FlowVal, Set4, Set6, WAYS, addr16};

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Over the flow's own entry or into a free way.
    Placed,
    /// Over the least recently seen flow of the two full sets.
    Evicted,
    /// Not at all: both sets full of flows seen within [`EVICT_AGE`].
    Full,
}

/// A flow's first (`second` false) or second candidate set
/// (`vc5_set_index`).
pub fn set_index(h: u32, second: bool, mask: u32) -> u32 {
    mix(h ^ if second { 0x68e3_1da4 } else { 0xb529_7a4d }) & mask
}

/// A key of one of the tables: its words as a way stores them (the last
/// word's low 32 bits are the ports; its high 32 the value).
pub trait WayKey: Copy + Sized {
    /// 8-byte words per way.
    const WORDS: usize;
    /// Bytes per set.
    const SET: usize;
    fn words(&self) -> [u64; 5];
    fn from_words(w: &[u64]) -> Self;
    /// The program's flow hash of this key.
    fn hash(&self, proto: u8) -> u32;
}

impl WayKey for Flow4 {
    const WORDS: usize = 2;
    const SET: usize = size_of::<Set4>();
    fn words(&self) -> [u64; 5] {
        [
            self.saddr as u64 | (self.daddr as u64) << 32,
            self.sport as u64 | (self.dport as u64) << 16,
            0,
            0,
            0,
        ]
    }
    fn from_words(w: &[u64]) -> Self {
        Flow4 {
            saddr: w[0] as u32,
            daddr: (w[0] >> 32) as u32,
            sport: w[1] as u16,
            dport: (w[1] >> 16) as u16,
        }
    }
    fn hash(&self, proto: u8) -> u32 {
        let a = |x: u32| addr16(std::net::Ipv4Addr::from(x.to_ne_bytes()).into());
        flow_hash(
            &a(self.saddr),
            &a(self.daddr),
            self.sport,
            self.dport,
            proto,
        )
    }
}

impl WayKey for Flow6 {
    const WORDS: usize = 5;
    const SET: usize = size_of::<Set6>();
    fn words(&self) -> [u64; 5] {
        let w = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes"));
        [
            w(&self.saddr[..8]),
            w(&self.saddr[8..]),
            w(&self.daddr[..8]),
            w(&self.daddr[8..]),
            self.sport as u64 | (self.dport as u64) << 16,
        ]
    }
    fn from_words(w: &[u64]) -> Self {
        let mut k = Flow6::default();
        k.saddr[..8].copy_from_slice(&w[0].to_ne_bytes());
        k.saddr[8..].copy_from_slice(&w[1].to_ne_bytes());
        k.daddr[..8].copy_from_slice(&w[2].to_ne_bytes());
        k.daddr[8..].copy_from_slice(&w[3].to_ne_bytes());
        k.sport = w[4] as u16;
        k.dport = (w[4] >> 16) as u16;
        k
    }
    fn hash(&self, proto: u8) -> u32 {
        flow_hash(&self.saddr, &self.daddr, self.sport, self.dport, proto)
    }
}

fn val_of(last: u64) -> FlowVal {
    FlowVal {
        backend: (last >> 32) as u16,
        seen: (last >> 48) as u16,
    }
}

/// A flow's stamp widened to the clock: the latest time at or before
/// `clock` whose low 16 bits are `seen`.
pub fn widen(seen: u16, clock: u32) -> u32 {
    clock.wrapping_sub((clock as u16).wrapping_sub(seen) as u32)
}

/// One flow table, mapped.
pub struct FlowTable<K: WayKey> {
    mem: *mut AtomicU64,
    bytes: usize,
    sets: u32,
    proto: u8,
    _key: std::marker::PhantomData<K>,
}

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl<K: WayKey> Send for FlowTable<K> {}
// SAFETY: as above.
unsafe impl<K: WayKey> Sync for FlowTable<K> {}

impl<K: WayKey> Drop for FlowTable<K> {
    fn drop(&mut self) {
        // SAFETY: mem and bytes are those mmap returned.
        unsafe { libc::munmap(self.mem.cast(), self.bytes) };
    }
}

impl<K: WayKey> FlowTable<K> {
    /// Maps the table behind `fd`, an ARRAY of `sets` sets (a power of two)
    /// made with BPF_F_MMAPABLE; `proto` is the protocol of its flows.
    pub fn map(fd: BorrowedFd<'_>, sets: u32, proto: u8) -> io::Result<Self> {
        if !sets.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a flow table of {sets} sets: not a power of two"),
            ));
        }
        let page = 4096;
        let bytes = (sets as usize * K::SET).div_ceil(page) * page;
        // SAFETY: a shared mapping of the map's fd; the kernel checks the
        // length against the map and keeps the map alive while mapped.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(FlowTable {
            mem: mem.cast(),
            bytes,
            sets,
            proto,
            _key: std::marker::PhantomData,
        })
    }

    pub fn sets(&self) -> u32 {
        self.sets
    }

    /// Ways in the table: its capacity in flows.
    pub fn capacity(&self) -> usize {
        self.sets as usize * WAYS
    }

    /// The words of way `w` of set `s`.
    fn way(&self, s: u32, w: usize) -> &[AtomicU64] {
        debug_assert!(s < self.sets && w < WAYS);
        let at = s as usize * (K::SET / 8) + w * K::WORDS;
        // SAFETY: at + WORDS lies within the mapping (s < sets, w < WAYS).
        unsafe { std::slice::from_raw_parts(self.mem.add(at), K::WORDS) }
    }

    fn sets_of(&self, key: &K) -> [u32; 2] {
        let h = key.hash(self.proto);
        let mask = self.sets - 1;
        [set_index(h, false, mask), set_index(h, true, mask)]
    }

    /// Does this way hold `key`? Its last word when so.
    fn holds(way: &[AtomicU64], kw: &[u64; 5]) -> Option<u64> {
        let n = K::WORDS;
        let last = way[n - 1].load(Relaxed);
        let same = (0..n - 1).all(|i| way[i].load(Relaxed) == kw[i])
            && last as u32 == kw[n - 1] as u32
            && val_of(last).backend != 0;
        same.then_some(last)
    }

    /// The flow's entry, if any: the first set's, else the second's (as
    /// the program looks).
    pub fn get(&self, key: &K) -> Option<FlowVal> {
        let kw = key.words();
        for s in self.sets_of(key) {
            for w in 0..WAYS {
                if let Some(last) = Self::holds(self.way(s, w), &kw) {
                    return Some(val_of(last));
                }
            }
        }
        None
    }

    /// Pins `key` to `backend` (1..=65535), stamped `seen`, where the
    /// program would (`vc5_place`): over its own entry (first set first);
    /// else in a free way of the set with more free ways (the first on a
    /// tie); else over the least recently seen flow of the two sets
    /// (measured from `seen`) if that is [`EVICT_AGE`] old.
    pub fn insert(&self, key: &K, backend: u16, seen: u16) -> Put {
        assert!(backend != 0, "backend 0 marks a free way");
        let kw = key.words();
        let sets = self.sets_of(key);
        // Per set: the way holding the key, the free ways, the oldest way.
        let scan = |s: u32| {
            let (mut same, mut free, mut oldest, mut age) = (None, Vec::new(), 0, 0u16);
            for w in 0..WAYS {
                let way = self.way(s, w);
                if same.is_none() && Self::holds(way, &kw).is_some() {
                    same = Some(w);
                }
                let v = val_of(way[K::WORDS - 1].load(Relaxed));
                if v.backend == 0 {
                    free.push(w);
                }
                let a = seen.wrapping_sub(v.seen);
                if a > age {
                    (oldest, age) = (w, a);
                }
            }
            (same, free, oldest, age)
        };
        // The second set only when the first holds neither the flow nor
        // half its ways free (as the program, which then reads one set).
        let r1 = scan(sets[0]);
        let r2 = if r1.0.is_some() || r1.1.len() >= WAYS / 2 {
            (None, Vec::new(), 0, 0)
        } else {
            scan(sets[1])
        };
        let ((s, w), put) = if let Some(w) = r1.0 {
            ((sets[0], w), Put::Placed)
        } else if let Some(w) = r2.0 {
            ((sets[1], w), Put::Placed)
        } else if !r1.1.is_empty() || !r2.1.is_empty() {
            if r2.1.len() > r1.1.len() {
                ((sets[1], r2.1[0]), Put::Placed)
            } else {
                ((sets[0], r1.1[0]), Put::Placed)
            }
        } else {
            let (s, w, age) = if r2.3 > r1.3 {
                (sets[1], r2.2, r2.3)
            } else {
                (sets[0], r1.2, r1.3)
            };
            if (age as u32) < EVICT_AGE {
                return Put::Full;
            }
            ((s, w), Put::Evicted)
        };
        let way = self.way(s, w);
        let n = K::WORDS;
        for (i, word) in way.iter().enumerate().take(n - 1) {
            word.store(kw[i], Relaxed);
        }
        let last = kw[n - 1] & 0xffff_ffff | (backend as u64) << 32 | (seen as u64) << 48;
        way[n - 1].store(last, Relaxed);
        put
    }

    /// Forgets the flow (every copy: after a delete in its first set, an
    /// older copy may sit in its second). Returns whether it was there.
    pub fn remove(&self, key: &K) -> bool {
        let kw = key.words();
        let mut found = false;
        for s in self.sets_of(key) {
            for w in 0..WAYS {
                let way = self.way(s, w);
                if let Some(last) = Self::holds(way, &kw) {
                    let _ = way[K::WORDS - 1].compare_exchange(
                        last,
                        last & !(0xffff_u64 << 32),
                        Relaxed,
                        Relaxed,
                    );
                    found = true;
                }
            }
        }
        found
    }

    /// Flows in the table (a walk of every way).
    pub fn len(&self) -> usize {
        let mut n = 0;
        self.walk(0, self.sets, |_, _| false, &mut n);
        n
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Visits the flows of sets `from..to` (clamped to the table); a flow
    /// for which `f` returns true is deleted, unless a packet changed its
    /// entry since it was read. `seen` counts the flows visited. Returns
    /// how many were deleted.
    pub fn walk(
        &self,
        from: u32,
        to: u32,
        mut f: impl FnMut(&K, FlowVal) -> bool,
        seen: &mut usize,
    ) -> usize {
        let mut deleted = 0;
        let mut words = [0u64; 5];
        for s in from..to.min(self.sets) {
            for w in 0..WAYS {
                let way = self.way(s, w);
                let n = K::WORDS;
                let last = way[n - 1].load(Relaxed);
                let v = val_of(last);
                if v.backend == 0 {
                    continue;
                }
                for (i, word) in way.iter().enumerate() {
                    words[i] = word.load(Relaxed);
                }
                if words[n - 1] != last {
                    continue; // rewritten while read: the next walk sees it
                }
                *seen += 1;
                if f(&K::from_words(&words[..n]), v)
                    && way[n - 1]
                        .compare_exchange(last, last & !(0xffff_u64 << 32), Relaxed, Relaxed)
                        .is_ok()
                {
                    deleted += 1;
                }
            }
        }
        deleted
    }

    /// Up to `max` flows (at least one set's) from set `*cursor` on, whole
    /// sets, with their stamps widened to `clock`; advances the cursor, and
    /// reports whether the walk is done. Scans at most [`READ_SCAN`] sets
    /// per call, so a sparse table costs a bounded time per call.
    pub fn read(&self, cursor: &mut u32, max: usize, clock: u32, out: &mut Vec<(K, Flow)>) -> bool {
        let start = out.len();
        let end = cursor.saturating_add(READ_SCAN).min(self.sets);
        let mut set = Vec::with_capacity(WAYS);
        while *cursor < end {
            set.clear();
            let mut n = 0;
            self.walk(
                *cursor,
                *cursor + 1,
                |k, v| {
                    set.push((
                        *k,
                        Flow {
                            backend: v.backend as u32,
                            seen: widen(v.seen, clock),
                        },
                    ));
                    false
                },
                &mut n,
            );
            if out.len() > start && out.len() - start + set.len() > max {
                break;
            }
            out.append(&mut set);
            *cursor += 1;
        }
        *cursor >= self.sets
    }
}

/// Sets one [`FlowTable::read`] scans at most (4 MiB of an IPv4 table).
pub const READ_SCAN: u32 = 1 << 16;

#[cfg(test)]
mod tests {
    use super::*;

    /// A table in anonymous memory, laid out as the map's.
    fn anonymous<K: WayKey>(sets: u32) -> FlowTable<K> {
        let bytes = (sets as usize * K::SET).div_ceil(4096) * 4096;
        // SAFETY: a private anonymous mapping; Drop unmaps it.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(mem, libc::MAP_FAILED);
        FlowTable {
            mem: mem.cast(),
            bytes,
            sets,
            proto: 6,
            _key: std::marker::PhantomData,
        }
    }

    fn k4(i: u32) -> Flow4 {
        Flow4 {
            saddr: (0x0a00_0000 + i).to_be(),
            daddr: 0x0100_00c0,
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
        }
    }

    #[test]
    fn insert_get_remove_and_the_eviction_rule() {
        // 4 sets of 4 ways: 16 flows at most.
        let t = anonymous::<Flow4>(4);
        assert_eq!(t.insert(&k4(0), 7, 100), Put::Placed);
        assert_eq!(
            t.get(&k4(0)),
            Some(FlowVal {
                backend: 7,
                seen: 100
            })
        );
        // Over its own entry: still one flow.
        assert_eq!(t.insert(&k4(0), 8, 101), Put::Placed);
        assert_eq!(t.get(&k4(0)).unwrap().backend, 8);
        assert_eq!(t.len(), 1);
        // Fill with flows seen now: once a flow's two sets are full, a new
        // one is refused, and nothing is lost.
        let (mut placed, mut full) = (1, 0);
        for i in 1..200 {
            match t.insert(&k4(i), 1, 101) {
                Put::Placed => placed += 1,
                Put::Full => full += 1,
                Put::Evicted => panic!("evicted a flow seen now"),
            }
        }
        assert_eq!(t.len(), placed);
        assert!(placed <= 16 && full > 0);
        assert!(placed >= 12, "{placed} of 16 ways used");
        // EVICT_AGE later, a new flow overwrites one of the old.
        let later = 101 + EVICT_AGE as u16;
        assert_eq!(t.insert(&k4(1000), 2, later), Put::Evicted);
        assert_eq!(t.get(&k4(1000)).unwrap().backend, 2);
        assert_eq!(t.len(), placed);
        assert!(t.remove(&k4(1000)));
        assert_eq!(t.get(&k4(1000)), None);
        assert!(!t.remove(&k4(1000)));
    }

    #[test]
    fn walk_deletes_what_it_is_told_and_reads_in_chunks() {
        let t = anonymous::<Flow4>(1 << 8);
        for i in 0..300 {
            assert_eq!(t.insert(&k4(i), 1 + (i % 3) as u16, 5), Put::Placed);
        }
        let mut seen = 0;
        let gone = t.walk(0, t.sets(), |_, v| v.backend == 2, &mut seen);
        assert_eq!((seen, gone), (300, 100));
        assert_eq!(t.len(), 200);
        let (mut cursor, mut out) = (0, Vec::new());
        while !t.read(&mut cursor, 64, 70_000, &mut out) {}
        assert_eq!(out.len(), 200);
        assert!(out.iter().all(|(_, f)| f.backend != 2 && f.seen == 65_541));
        let mut keys: Vec<u32> = out.iter().map(|(k, _)| u32::from_be(k.saddr)).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 200);
    }

    #[test]
    fn ipv6_ways_round_trip_through_the_table() {
        let t = anonymous::<Flow6>(1 << 4);
        let mut k = Flow6::default();
        k.saddr[0] = 0x20;
        k.saddr[15] = 9;
        k.daddr[15] = 1;
        k.sport = 1234u16.to_be();
        k.dport = 443u16.to_be();
        assert_eq!(t.insert(&k, 65535, 3), Put::Placed);
        assert_eq!(
            t.get(&k),
            Some(FlowVal {
                backend: 65535,
                seen: 3
            })
        );
        let mut other = k;
        other.saddr[15] = 10;
        assert_eq!(t.get(&other), None);
        let (mut c, mut out) = (0, Vec::new());
        assert!(t.read(&mut c, 1000, 3, &mut out));
        assert_eq!(
            out,
            vec![(
                k,
                Flow {
                    backend: 65535,
                    seen: 3
                }
            )]
        );
    }

    #[test]
    fn widen_takes_the_latest_time_with_those_low_bits() {
        assert_eq!(widen(100, 100), 100);
        assert_eq!(widen(90, 100), 90);
        assert_eq!(widen(0xfff0, 0x1_0005), 0xfff0);
        assert_eq!(widen(5, 0x1_0005), 0x1_0005);
        assert_eq!(widen(6, 0x1_0005), 0x1_0005 - 0xffff);
    }

    #[test]
    fn key_words_round_trip() {
        let k4 = Flow4 {
            saddr: 0x0102_0304,
            daddr: 0x0a0b_0c0d,
            sport: 0x1234,
            dport: 0x5000,
        };
        assert_eq!(Flow4::from_words(&k4.words()[..2]), k4);
        let mut k6 = Flow6::default();
        k6.saddr[0] = 0x20;
        k6.saddr[15] = 7;
        k6.daddr[3] = 9;
        k6.sport = 77;
        k6.dport = 0x5000;
        assert_eq!(Flow6::from_words(&k6.words()), k6);
    }
}
