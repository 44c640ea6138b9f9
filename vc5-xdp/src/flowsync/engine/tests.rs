//! The engine's unit tests: the resolver, records, rejects, rate limits,
//! resync, pacing and sweeps, on a clock and maps the tests give it.

use super::*;
use crate::flowsync::keys::Key;
use crate::maps::SYNC_STARTING;

const NOW: u64 = 1_800_000_000_000;
const VIP: &str = "192.0.2.80";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn keys() -> Keyring {
    Keyring::new(vec![(1, Key::new([7; 32]))]).unwrap()
}

fn engine(addr: &str, start: u64) -> Engine {
    Engine::new(
        EngineConfig {
            addr: ip(addr),
            start_ms: start,
            epoch: start * 1_000_000,
            rate: 1000,
            resync_rate: 1000,
        },
        &keys(),
    )
}

fn backend(service: u16, real: &str) -> Backend {
    Backend {
        service,
        addr: addr16(ip(real)),
        flags: 1,
        ..Backend::default()
    }
}

/// Service 3 = VIP:80/tcp with reals .11 (index 5) and .12 (index 9);
/// every bucket of its table holds backend 5.
fn resolver() -> Resolver {
    let slot = SvcSlot {
        key: SvcKey::new(ip(VIP), 80, TCP),
        service: 3,
        vip: 1,
    };
    let marker = SvcSlot {
        key: SvcKey::marker(ip(VIP)),
        service: 0,
        vip: 1,
    };
    let t = Table {
        backend: [5; TABLE_SIZE],
        ..Table::default()
    };
    Resolver::new(
        1,
        [slot, marker],
        [
            (5, backend(3, "203.0.113.11")),
            (9, backend(3, "203.0.113.12")),
            (10, backend(0, "203.0.113.13")),
            (11, backend(4, "203.0.113.14")),
        ],
        [(3, t)],
    )
}

fn record(sport: u16, real: &str) -> FlowRecord {
    FlowRecord {
        saddr: ip("198.51.100.7"),
        daddr: ip(VIP),
        sport,
        dport: 80,
        protocol: TCP,
        real: ip(real),
        op: Op::Upsert,
    }
}

#[test]
fn pack_counts_match_the_sealer() {
    let mut s = peer_sealer("10.0.0.2", 1);
    let mut recs: Vec<FlowRecord> = (0..300).map(|i| record(i, "203.0.113.11")).collect();
    for r in recs.iter_mut().skip(100).step_by(3) {
        r.saddr = ip("2001:db8::7");
        r.daddr = ip("2001:db8::80");
    }
    let sealed = s.seal_flows(&recs, NOW, MAX_LEN).unwrap();
    let counts = pack_counts(&recs, MAX_LEN);
    assert_eq!(sealed.len(), counts.len());
    let o = &mut Opener::new(&keys());
    for (d, n) in sealed.iter().zip(&counts) {
        assert_eq!(o.open(d).unwrap().records.len(), *n as usize);
    }
}

#[test]
fn sender_ids() {
    assert_eq!(sender_id(ip("10.0.0.1")), 0x0a00_0001);
    assert_eq!(
        sender_id(ip("2001:db8::1")),
        0x2001_0db8_0000_0000 ^ 0x0000_0000_0000_0001
    );
}

#[test]
fn resolver_maps_reals_to_local_indexes() {
    let r = resolver();
    assert_eq!(r.service(ip(VIP), 80, TCP), Some(3));
    assert_eq!(r.service(ip(VIP), 81, TCP), None);
    assert_eq!(r.service(ip(VIP), 80, UDP), None);
    assert_eq!(r.backend(3, ip("203.0.113.12")), Some(9));
    // A freed backend (service 0) and one of an unknown service: no.
    assert_eq!(r.real(10), None);
    assert_eq!(r.real(11), None);
    match r.resolve(&record(1000, "203.0.113.11")) {
        Resolved::Upsert(w) => {
            assert_eq!((w.service, w.backend, w.moved), (3, 5, false));
            assert_eq!(w.map, FlowMap::Tcp4);
        }
        x => panic!("{x:?}"),
    }
    match r.resolve(&record(1000, "203.0.113.12")) {
        Resolved::Upsert(w) => assert_eq!((w.backend, w.moved), (9, true)),
        x => panic!("{x:?}"),
    }
    assert_eq!(r.resolve(&record(1, "203.0.113.99")), Resolved::Unknown);
    let mut other_vip = record(1, "203.0.113.11");
    other_vip.daddr = ip("192.0.2.81");
    assert_eq!(r.resolve(&other_vip), Resolved::Unknown);
    let mut icmp = record(1, "203.0.113.11");
    icmp.protocol = 1;
    assert_eq!(r.resolve(&icmp), Resolved::Unknown);
    let mut del = record(1, "203.0.113.99");
    del.op = Op::Delete;
    assert!(matches!(
        r.resolve(&del),
        Resolved::Delete(FlowMap::Tcp4, _)
    ));
}

#[test]
fn keys_and_records_round_trip() {
    let r = resolver();
    let rec = record(40000, "203.0.113.12");
    let key = FlowKey::of(&rec).unwrap();
    let FlowKey::V4(k) = key else { panic!() };
    // Network byte order, as the program keys flows.
    assert_eq!(k.sport, 40000u16.to_be());
    assert_eq!(k.saddr.to_ne_bytes(), [198, 51, 100, 7]);
    assert_eq!(r.record(FlowMap::Tcp4, &key, 9), Some(rec));
    assert_eq!(r.record(FlowMap::Tcp4, &key, 10), None);
    // The bucket is the program's hash of the tuple.
    let want = flow_hash(
        &addr16(rec.saddr),
        &addr16(rec.daddr),
        40000u16.to_be(),
        80u16.to_be(),
        TCP,
    ) as usize
        & 4095;
    assert_eq!(key.bucket(TCP), want);
    let mut key6 = [0u8; 36];
    key6[..16].copy_from_slice(&ip6("2001:db8::7"));
    let e = FlowEvent {
        kind: 1,
        v6: 1,
        proto: UDP,
        _pad: 0,
        backend: 5,
        key: key6,
    };
    let rec6 = r.event_record(&e).unwrap();
    assert_eq!(rec6.saddr, ip("2001:db8::7"));
    assert_eq!(rec6.protocol, UDP);
    assert_eq!(rec6.real, ip("203.0.113.11"));
}

fn ip6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

/// A peer's sealer at `addr`.
fn peer_sealer(addr: &str, epoch: u64) -> Sealer {
    Sealer::new(&keys(), sender_id(ip(addr)), epoch)
}

#[test]
fn own_datagrams_are_dropped_uncounted() {
    let mut e = engine("10.0.0.1", NOW);
    let mut me = peer_sealer("10.0.0.1", 5);
    assert_eq!(
        e.receive(ip("10.0.0.9"), &me.alive(NOW), NOW),
        Inbound::Dropped
    );
    let mut other = peer_sealer("10.0.0.2", 5);
    assert_eq!(
        e.receive(ip("10.0.0.1"), &other.alive(NOW), NOW),
        Inbound::Dropped
    );
    let st = e.status(NOW, 0);
    assert_eq!(st[0].rejects, [0; SYNC_REASONS]);
    assert_eq!(st[1].state, 0);
}

#[test]
fn rejects_are_counted_by_reason_and_peer() {
    let mut e = engine("10.0.0.1", NOW);
    let src = ip("10.0.0.2");
    // Unknown source: entry 0.
    assert_eq!(e.receive(src, &[1, 2, 3], NOW), Inbound::Dropped);
    let mut s = peer_sealer("10.0.0.2", 5);
    let good = s.alive(NOW);
    assert_eq!(e.receive(src, &good, NOW), Inbound::Control);
    // Now attributed to the peer: a replay, a flipped bit.
    assert_eq!(e.receive(src, &good, NOW), Inbound::Dropped);
    let mut bad = s.alive(NOW);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(e.receive(src, &bad, NOW), Inbound::Dropped);
    let st = e.status(NOW, 0);
    assert_eq!(st[0].rejects[reason_index("short")], 1);
    assert_eq!(st[1].rejects[reason_index("duplicate")], 1);
    assert_eq!(st[1].rejects[reason_index("auth")], 1);
    assert_eq!(st[1].datagrams, 1);
    assert_eq!(st[1].addr, addr16(src));
    assert_eq!(st[1].sender, sender_id(src));
    // From before our start (a recording replayed after a restart).
    let mut old = peer_sealer("10.0.0.3", 4);
    assert_eq!(
        e.receive(ip("10.0.0.3"), &old.alive(NOW - 2000), NOW),
        Inbound::Dropped
    );
    assert_eq!(e.status(NOW, 0)[0].rejects[reason_index("stale")], 1);
}

#[test]
fn rate_limit_gaps_and_delay() {
    let mut e = engine("10.0.0.1", NOW);
    let src = ip("10.0.0.2");
    let mut s = peer_sealer("10.0.0.2", 5);
    let recs: Vec<FlowRecord> = (0..60).map(|i| record(i, "203.0.113.11")).collect();
    let mut accepted = 0;
    // 1,200 records in one instant: the 1,000-token burst passes.
    for _ in 0..20 {
        for d in s.seal_flows(&recs, NOW, MAX_LEN).unwrap() {
            if let Inbound::Flows { records, .. } = e.receive(src, &d, NOW) {
                accepted += records.len();
            }
        }
    }
    assert_eq!(accepted, 1000);
    // Half a second later, 500 more tokens.
    let d = s.seal_flows(&recs, NOW + 500, MAX_LEN).unwrap();
    let mut later = 0;
    for _ in 0..10 {
        let d = s.seal_flows(&recs, NOW + 500, MAX_LEN).unwrap();
        for d in d {
            if let Inbound::Flows { records, .. } = e.receive(src, &d, NOW + 500) {
                later += records.len();
            }
        }
    }
    assert_eq!(later, 500);
    // The datagrams of `d` were never received: a gap.
    let seq_skipped = d.len() as u64;
    let st = &e.status(NOW, 0)[1];
    assert_eq!(st.rate_limited, 1200 - 1000 + 600 - 500);
    assert_eq!(st.records, 1800);
    assert_eq!(st.gaps, seq_skipped);
    let r = resolver();
    let p = match e.receive(
        src,
        &s.seal_flows(&recs[..1], NOW + 2000, MAX_LEN).unwrap()[0],
        NOW + 2000,
    ) {
        Inbound::Flows { peer, .. } => peer,
        x => panic!("{x:?}"),
    };
    let plan = e.plan(p, &recs[..1], &r, 1);
    assert_eq!(plan.writes(), 1);
    e.written(p, 1, NOW + 2000, (NOW + 2003) * 1000);
    let st = &e.status(NOW, 0)[1];
    assert_eq!(st.written, 1);
    assert_eq!(
        (st.delay_p50_us, st.delay_p99_us, st.delay_max_us),
        (3000, 3000, 3000)
    );
}

#[test]
fn plan_sets_moved_bits_once_and_counts_unknown() {
    let mut e = engine("10.0.0.1", NOW);
    let r = resolver();
    let recs = vec![
        record(1, "203.0.113.11"), // the bucket's real: no bit
        record(2, "203.0.113.12"), // another: a bit
        record(2, "203.0.113.12"), // the same bit again: not dirty twice
        record(3, "203.0.113.99"), // unknown
    ];
    let src = ip("10.0.0.2");
    let mut s = peer_sealer("10.0.0.2", 5);
    let Inbound::Flows { peer, records, .. } =
        e.receive(src, &s.seal_flows(&recs, NOW, MAX_LEN).unwrap()[0], NOW)
    else {
        panic!()
    };
    let plan = e.plan(peer, &records, &r, 1);
    assert_eq!(plan.writes(), 3);
    assert_eq!(plan.unknown, 1);
    assert_eq!(plan.moved.len(), 1);
    let bucket = FlowKey::of(&recs[1]).unwrap().bucket(TCP);
    assert_eq!(plan.moved[0].0, 3);
    assert!(plan.moved[0].1.is_set(bucket));
    assert_eq!(plan.moved[0].1.count(), 1);
    assert_eq!(plan.upserts[0][1].1.backend, 9);
    // Nothing new to mark the second time.
    assert!(e.plan(peer, &recs[1..2], &r, 1).moved.is_empty());
    assert_eq!(e.status(NOW, 0)[1].unknown_real, 1);
}

#[test]
fn resync_waits_for_every_peer_heard() {
    let mut a = engine("10.0.0.1", NOW);
    assert_eq!(a.state(), SYNC_RESYNCING);
    assert_ne!(a.state(), SYNC_STARTING);
    // At start: a hello and an alive.
    let first = a.tick(NOW);
    assert_eq!(first.len(), 2);
    // B answers: heard, its dump not done yet.
    let mut b = engine("10.0.0.2", NOW - 60_000);
    let Inbound::Control = b.receive(ip("10.0.0.1"), &first[0].0, NOW) else {
        panic!()
    };
    assert!(b.dumping());
    let mut b_out = Vec::new();
    let (map, cur, n) = b.dump_step(NOW, &mut b_out).unwrap();
    assert_eq!((map, cur, n), (FlowMap::Tcp4, Cursor::default(), 10));
    // B's alive reaches A: A now waits for B's dump.
    let alive = b.tick(NOW + 1).pop().unwrap().0;
    assert_eq!(a.receive(ip("10.0.0.2"), &alive, NOW + 1), Inbound::Control);
    a.tick(NOW + 1600);
    assert_eq!(a.state(), SYNC_RESYNCING);
    // B's dump: four maps, then the end.
    let done = Cursor {
        done: true,
        ..Cursor::default()
    };
    let recs = vec![record(7, "203.0.113.11")];
    let mut sent = b.dump_progress(done, 1, &recs, NOW + 2);
    for _ in 0..3 {
        b.dump_step(NOW + 1000, &mut b_out).unwrap();
        sent.extend(b.dump_progress(done, 0, &[], NOW + 1000));
    }
    assert!(!b.dumping());
    assert_eq!(sent.len(), 2); // one Flows, one DumpEnd
    assert_eq!(sent[0].1, 1);
    for (d, _) in &sent {
        a.receive(ip("10.0.0.2"), d, NOW + 1001);
    }
    a.tick(NOW + 1700);
    assert_eq!(a.state(), SYNC_SYNCED);
    assert_eq!(a.synced_ms(), Some(NOW + 1700));
    // A hello repeated after the end: only the end again.
    let mut again = Sealer::new(&keys(), a.sender(), a.epoch());
    let _ = again.alive(NOW); // seq 0 was the first hello's: skip past A's
    for _ in 0..10 {
        let _ = again.alive(NOW);
    }
    b.receive(ip("10.0.0.1"), &again.hello(NOW + 1100), NOW + 1100);
    let mut ends = Vec::new();
    assert!(b.dump_step(NOW + 1100, &mut ends).is_none());
    assert_eq!(ends.len(), 1);
    let d = Opener::new(&keys()).open(&ends[0].0).unwrap();
    assert_eq!(
        d.dump_end,
        Some(DumpEnd {
            requester: a.sender(),
            epoch: a.epoch(),
            sent: 1
        })
    );
}

#[test]
fn next_tick_is_never_stuck_in_the_past() {
    let mut a = engine("10.0.0.1", NOW);
    let mut b = peer_sealer("10.0.0.2", 5);
    a.receive(ip("10.0.0.2"), &b.alive(NOW), NOW);
    a.tick(NOW);
    assert_eq!(a.next_tick_ms(), NOW + HELLO_INTERVAL_MS);
    a.tick(NOW + HELLO_INTERVAL_MS);
    assert_eq!(a.next_tick_ms(), NOW + SYNC_MIN_MS);
    a.tick(NOW + SYNC_MIN_MS);
    assert_eq!(a.state(), SYNC_RESYNCING); // waits for B's dump end
    assert_eq!(a.next_tick_ms(), NOW + SYNC_MIN_MS + RESYNC_RECHECK_MS);
    // The dump end ends the resync on arrival.
    let end = DumpEnd {
        requester: a.sender(),
        epoch: a.epoch(),
        sent: 0,
    };
    a.receive(ip("10.0.0.2"), &b.dump_end(&end, NOW + 1600), NOW + 1600);
    assert_eq!(a.state(), SYNC_SYNCED);
    assert_eq!(a.next_tick_ms(), NOW + ALIVE_INTERVAL_MS * 2);
}

#[test]
fn a_clock_stepped_back_delays_nothing() {
    let mut a = engine("10.0.0.1", NOW);
    a.tick(NOW);
    // The clock steps back an hour: the next alive is still a second away.
    let back = NOW - 3_600_000;
    assert!(a.tick(back).is_empty());
    assert_eq!(a.next_tick_ms(), back + ALIVE_INTERVAL_MS);
    assert_eq!(a.tick(back + ALIVE_INTERVAL_MS).len(), 2); // hello and alive
}

#[test]
fn resync_alone_and_a_peer_that_died() {
    let mut a = engine("10.0.0.1", NOW);
    a.tick(NOW);
    a.tick(NOW + 1499);
    assert_eq!(a.state(), SYNC_RESYNCING);
    a.tick(NOW + 1500);
    assert_eq!(a.state(), SYNC_SYNCED);

    let mut a = engine("10.0.0.1", NOW);
    let mut b = peer_sealer("10.0.0.2", 5);
    a.receive(ip("10.0.0.2"), &b.alive(NOW), NOW);
    a.tick(NOW + 2000);
    assert_eq!(a.state(), SYNC_RESYNCING);
    a.tick(NOW + PEER_SILENT_MS + 1);
    assert_eq!(a.state(), SYNC_SYNCED);
}

#[test]
fn dump_is_paced() {
    let mut b = engine("10.0.0.2", NOW);
    let mut h = peer_sealer("10.0.0.1", 5);
    b.receive(ip("10.0.0.1"), &h.hello(NOW), NOW);
    let mut out = Vec::new();
    let (_, _, n) = b.dump_step(NOW, &mut out).unwrap();
    assert_eq!(n, 10); // 10 ms of 1,000/s
    let cur = Cursor {
        token: 7,
        started: true,
        done: false,
    };
    b.dump_progress(cur, 10, &[], NOW);
    assert!(b.dump_step(NOW, &mut out).is_none());
    let (_, c, n) = b.dump_step(NOW + 50, &mut out).unwrap();
    assert_eq!((c, n), (cur, 50));
    // Budget is capped at 100 ms of the rate.
    b.dump_progress(cur, 50, &[], NOW + 50);
    let (_, _, n) = b.dump_step(NOW + 10_000, &mut out).unwrap();
    assert_eq!(n, 100);
    // The same hello twice starts one dump.
    b.receive(ip("10.0.0.1"), &h.hello(NOW + 10), NOW + 10);
    assert!(b.pending.is_empty());
}

#[test]
fn sweep_deletes_idle_and_rebuilds_moved() {
    let mut e = engine("10.0.0.1", NOW);
    let r = resolver();
    e.load_moved([(3, {
        let mut m = PeerMoved::default();
        m.set(1);
        m
    })]);
    e.start_sweep();
    let k1 = FlowKey::of(&record(1, "203.0.113.12")).unwrap();
    let k2 = FlowKey::of(&record(2, "203.0.113.11")).unwrap();
    let k3 = FlowKey::of(&record(3, "203.0.113.12")).unwrap();
    let clock = 10_000;
    let f = |backend, seen| Flow { backend, seen };
    // Live, pinned elsewhere than its bucket: kept, its bit set.
    assert!(!e.sweep_visit(FlowMap::Tcp4, &k1, &f(9, clock - 10), clock, &r));
    // Live, the bucket's real: kept, no bit.
    assert!(!e.sweep_visit(FlowMap::Tcp4, &k2, &f(5, clock), clock, &r));
    // Idle: deleted.
    assert!(e.sweep_visit(FlowMap::Tcp4, &k3, &f(9, clock - 901), clock, &r));
    // A backend index that is no longer this service's: deleted.
    assert!(e.sweep_visit(FlowMap::Tcp4, &k2, &f(11, clock), clock, &r));
    let w = e.finish_sweep();
    assert_eq!(w.len(), 1);
    let (s, m) = w[0];
    assert_eq!(s, 3);
    assert_eq!(m.count(), 1);
    assert!(m.is_set(k1.bucket(TCP)));
    // A second sweep with nothing left clears the entry.
    e.start_sweep();
    let w = e.finish_sweep();
    assert_eq!(w, vec![(3, PeerMoved::default())]);
}

#[test]
fn writes_during_a_sweep_keep_their_bits() {
    let mut e = engine("10.0.0.1", NOW);
    let r = resolver();
    e.start_sweep();
    let rec = record(2, "203.0.113.12");
    let src = ip("10.0.0.2");
    let mut s = peer_sealer("10.0.0.2", 5);
    let Inbound::Flows { peer, records, .. } =
        e.receive(src, &s.seal_flows(&[rec], NOW, MAX_LEN).unwrap()[0], NOW)
    else {
        panic!()
    };
    let plan = e.plan(peer, &records, &r, 1);
    assert_eq!(plan.moved.len(), 1);
    // The sweep never visits it (written behind its cursor): kept.
    assert!(e.finish_sweep().is_empty());
    assert!(e.moved[&3].is_set(FlowKey::of(&rec).unwrap().bucket(TCP)));
}

#[test]
fn peer_table_is_bounded_and_slots_reused() {
    let mut e = engine("10.0.0.1", NOW);
    for i in 0..(SYNC_PEERS + 2) {
        let a = format!("10.0.1.{i}");
        let mut s = peer_sealer(&a, 5);
        assert_eq!(e.receive(ip(&a), &s.alive(NOW), NOW), Inbound::Control);
    }
    let st = e.status(NOW, 0);
    assert!(st[1..].iter().all(|s| s.state == 1));
    // Peers beyond the slots count their rejects in entry 0: its
    // first alive (sequence 0) replayed.
    let mut s = peer_sealer("10.0.1.33", 5);
    let d = s.alive(NOW);
    assert_eq!(e.receive(ip("10.0.1.33"), &d, NOW), Inbound::Dropped);
    assert_eq!(e.status(NOW, 0)[0].rejects[reason_index("duplicate")], 1);
    // Silent long enough: forgotten, their slots free for others.
    let later = NOW + PEER_FORGET_MS + 1;
    e.tick(later);
    assert!(e.status(later, 0)[1..].iter().all(|s| s.state == 0));
    let mut s = peer_sealer("10.0.2.1", 5);
    e.receive(ip("10.0.2.1"), &s.alive(later), later);
    assert_eq!(e.status(later, 0)[1].addr, addr16(ip("10.0.2.1")));
}

#[test]
fn garbage_never_panics() {
    let mut e = engine("10.0.0.1", NOW);
    let mut x: u64 = 0x1234_5678;
    for len in 0..2000usize {
        let b: Vec<u8> = (0..len % 1500)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(e.receive(ip("10.0.0.2"), &b, NOW), Inbound::Dropped);
    }
}
