//! The wire format's unit tests: a fixed vector both ways, the layout,
//! keys and their rotation, batching, and fuzzing of the decoder.

use super::*;

fn key(fill: u8) -> Key {
    Key::new(std::array::from_fn(|i| fill.wrapping_add(i as u8)))
}

fn ring(keys: &[(u8, u8)]) -> Keyring {
    Keyring::new(keys.iter().map(|&(id, fill)| (id, key(fill))).collect()).unwrap()
}

fn header() -> Header {
    Header {
        kind: MessageType::Flows,
        key_id: 7,
        sender: 0x0102_0304_0506_0708,
        epoch: 0x1122_3344_5566_7788,
        seq: 42,
        time_ms: 1_800_000_000_000,
    }
}

fn records() -> Vec<FlowRecord> {
    vec![
        FlowRecord {
            saddr: "192.0.2.1".parse().unwrap(),
            daddr: "198.51.100.10".parse().unwrap(),
            sport: 40000,
            dport: 80,
            protocol: 6,
            real: "10.0.0.2".parse().unwrap(),
            op: Op::Upsert,
        },
        FlowRecord {
            saddr: "2001:db8::1".parse().unwrap(),
            daddr: "2001:db8::80".parse().unwrap(),
            sport: 5353,
            dport: 53,
            protocol: 17,
            real: "2001:db8:1::2".parse().unwrap(),
            op: Op::Delete,
        },
        FlowRecord {
            saddr: "2001:db8::2".parse().unwrap(),
            daddr: "2001:db8::80".parse().unwrap(),
            sport: 1,
            dport: 443,
            protocol: 6,
            real: "10.0.0.3".parse().unwrap(),
            op: Op::Upsert,
        },
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of `header()` + `records()` sealed with `key(0)`, checked
/// in; the same bytes came from an independent Python implementation
/// (the `cryptography` package's HKDF-SHA256 and AES-256-GCM).
const VECTOR: &str = concat!(
    "564335460101070001020304050607081122334455667788000000000000002a",
    "000001a3185c5000b860ab0735d141f4c51760baaab28835f7d8ca85f0142837",
    "6425ec8d764cc5f0297aead1e8e124610e01dae9247fcaf995e5450fb9b6ef7d",
    "154e694204f16473695dd0f176a3ff6784e7ec2caa80866361f24485bb436dde",
    "514de34d6668b6e66438b2a036b5f2126d33d8af9bb6af59fa4e340ca52f59ad",
    "57aec5b5d52db7bceba4cd9a511184f40cac",
);

#[test]
fn fixed_vector_both_ways() {
    let bytes = encode(&header(), &records(), &key(0)).unwrap();
    assert_eq!(bytes.len(), HEADER_LEN + 2 + 20 + 56 + 44 + TAG_LEN);
    // The clear header, byte by byte as documented.
    assert_eq!(
        hex(&bytes[..HEADER_LEN]),
        concat!(
            "56433546",
            "01",
            "01",
            "07",
            "00",
            "0102030405060708",
            "1122334455667788",
            "000000000000002a",
            "000001a3185c5000"
        )
    );
    assert_eq!(hex(&bytes), VECTOR);
    let mut from_vector = Vec::new();
    for i in (0..VECTOR.len()).step_by(2) {
        from_vector.push(u8::from_str_radix(&VECTOR[i..i + 2], 16).unwrap());
    }
    let d = decode(&from_vector, &ring(&[(7, 0)])).unwrap();
    assert_eq!(d.header, header());
    assert_eq!(d.records, records());
}

#[test]
fn plaintext_layout() {
    let mut plain = Vec::new();
    write_record(&mut plain, &records()[0]).unwrap();
    assert_eq!(
        hex(&plain),
        concat!(
            "00", "00", "06", "00", "9c40", "0050", "c0000201", "c633640a", "0a000002"
        )
    );
    let mut plain = Vec::new();
    write_record(&mut plain, &records()[2]).unwrap();
    assert_eq!(&plain[..4], &[FLAG_TUPLE_V6, 0, 6, 0]);
    assert_eq!(plain.len(), 44);
}

#[test]
fn every_bit_flip_is_rejected() {
    let bytes = encode(&header(), &records(), &key(0)).unwrap();
    let keys = ring(&[(7, 0), (6, 0)]);
    for i in 0..bytes.len() {
        // Every single-bit flip, and the whole byte inverted.
        for mask in [1, 2, 4, 8, 16, 32, 64, 128, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            let err = decode(&b, &keys).unwrap_err();
            let other_type = i == 5 && (1..=4).contains(&(bytes[5] ^ mask));
            if i >= 8 || i == 6 || other_type {
                // Ids, epoch, sequence, time, body, tag and another
                // valid type: only the AEAD (or the key lookup) can tell.
                assert!(
                    matches!(err, DecodeError::Auth | DecodeError::UnknownKey(_)),
                    "byte {i} mask {mask:#x}: {err:?}"
                );
            } else {
                assert!(
                    !matches!(err, DecodeError::Auth),
                    "byte {i} mask {mask:#x} should fail the clear checks: {err:?}"
                );
            }
        }
    }
}

#[test]
fn wrong_or_unknown_key() {
    let bytes = encode(&header(), &records(), &key(0)).unwrap();
    assert_eq!(
        decode(&bytes, &ring(&[(8, 0)])),
        Err(DecodeError::UnknownKey(7))
    );
    assert_eq!(decode(&bytes, &ring(&[(7, 1)])), Err(DecodeError::Auth));
}

#[test]
fn key_rotation() {
    let old_first = ring(&[(1, 10), (2, 20)]);
    let both_new_first = ring(&[(2, 20), (1, 10)]);
    let only_new = ring(&[(2, 20)]);
    let mut sender = Sealer::new(&old_first, 5, 1);
    let sealed = sender.seal_flows(&records(), 0, DEFAULT_MAX_LEN).unwrap();
    assert_eq!(sealed.len(), 1);
    assert_eq!(
        decode(&sealed[0], &both_new_first).unwrap().records,
        records()
    );
    assert_eq!(
        decode(&sealed[0], &only_new),
        Err(DecodeError::UnknownKey(1))
    );
    // After SIGHUP the sender seals with the new first key; the sequence goes on.
    sender.rekey(&both_new_first);
    let sealed = sender.seal_flows(&records(), 0, DEFAULT_MAX_LEN).unwrap();
    let d = decode(&sealed[0], &only_new).unwrap();
    assert_eq!((d.header.key_id, d.header.seq), (2, 1));
    assert_eq!(decode(&sealed[0], &old_first).unwrap().records, records());
}

#[test]
fn batches_split_to_fit_max_len() {
    let keys = ring(&[(0, 0)]);
    let mut s = Sealer::new(&keys, 1, 1);
    let many: Vec<FlowRecord> = (0..500u16)
        .map(|i| FlowRecord {
            sport: i,
            ..records()[(i % 3) as usize]
        })
        .collect();
    for max_len in [120, 200, DEFAULT_MAX_LEN, MAX_DATAGRAM, 100_000] {
        let first = s.next_seq();
        let sealed = s.seal_flows(&many, 0, max_len).unwrap();
        let mut back = Vec::new();
        for (n, d) in sealed.iter().enumerate() {
            assert!(
                d.len() <= max_len.min(MAX_DATAGRAM),
                "{} > {max_len}",
                d.len()
            );
            let d = decode(d, &keys).unwrap();
            assert_eq!(d.header.seq, first + n as u64);
            back.extend(d.records);
        }
        assert_eq!(back, many, "max_len {max_len}");
    }
    // 1400 bytes hold 67 IPv4 records: (1400 - 40 - 2 - 16) / 20.
    let v4 = vec![records()[0]; 68];
    assert_eq!(s.seal_flows(&v4, 0, DEFAULT_MAX_LEN).unwrap().len(), 2);
    assert_eq!(
        s.seal_flows(&v4[..67], 0, DEFAULT_MAX_LEN).unwrap().len(),
        1
    );
    assert!(matches!(
        s.seal_flows(&v4, 0, 60),
        Err(EncodeError::TooLarge { .. })
    ));
}

#[test]
fn hello_and_bad_input() {
    let keys = ring(&[(0, 0)]);
    let mut s = Sealer::new(&keys, 1, 1);
    let d = decode(&s.hello(5), &keys).unwrap();
    assert_eq!(d.header.kind, MessageType::Hello);
    assert!(d.records.is_empty());
    let mut mixed = records()[0];
    mixed.daddr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        encode(&header(), &[records()[0], mixed], &key(0)),
        Err(EncodeError::MixedFamily { index: 1 })
    );
    assert_eq!(decode(&[0; 10], &keys), Err(DecodeError::Short { len: 10 }));
    assert_eq!(
        decode(&vec![0; MAX_DATAGRAM + 1], &keys),
        Err(DecodeError::Oversize {
            len: MAX_DATAGRAM + 1
        })
    );
    let good = encode(&header(), &records(), &key(0)).unwrap();
    for cut in 0..good.len() {
        assert!(decode(&good[..cut], &ring(&[(7, 0)])).is_err(), "cut {cut}");
    }
}

#[test]
fn alive_and_dump_end() {
    let keys = ring(&[(0, 0)]);
    let mut s = Sealer::new(&keys, 9, 3);
    let mut o = Opener::new(&keys);
    let d = o.open(&s.alive(7)).unwrap();
    assert_eq!(
        (d.header.kind, d.header.seq, d.dump_end),
        (MessageType::Alive, 0, None)
    );
    let end = DumpEnd {
        requester: 0xaa,
        epoch: 0xbb,
        sent: 100_000,
    };
    let bytes = s.dump_end(&end, 8);
    assert_eq!(bytes.len(), HEADER_LEN + 2 + 24 + TAG_LEN);
    let d = o.open(&bytes).unwrap();
    assert_eq!((d.header.kind, d.header.seq), (MessageType::DumpEnd, 1));
    assert_eq!(d.dump_end, Some(end));
    assert!(d.records.is_empty());
    // Bodies belong to their types only.
    let h = Header {
        kind: MessageType::Alive,
        ..header()
    };
    assert_eq!(
        encode(&h, &records(), &key(0)),
        Err(EncodeError::NotFlows(MessageType::Alive))
    );
    // A session key is per sender and epoch: another epoch's key does
    // not open it, even under the same key file.
    let mut forged = bytes.clone();
    forged[16..24].copy_from_slice(&4u64.to_be_bytes());
    assert_eq!(o.open(&forged), Err(DecodeError::Auth));
    // After a rekey without that key id nothing opens, cached or not.
    o.rekey(&ring(&[(1, 0)]));
    assert_eq!(o.open(&bytes), Err(DecodeError::UnknownKey(0)));
}

#[test]
fn record_parser_errors() {
    let mut one = 1u16.to_be_bytes().to_vec();
    write_record(&mut one, &records()[0]).unwrap();
    assert_eq!(parse_records(&one).unwrap(), vec![records()[0]]);
    let bad = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut b = one.clone();
        edit(&mut b);
        parse_records(&b).unwrap_err()
    };
    assert_eq!(bad(&|b| b.truncate(1)).reason(), "bad_record");
    assert_eq!(bad(&|b| b.push(0)), DecodeError::Trailing);
    assert_eq!(bad(&|b| b.truncate(21)).reason(), "bad_record");
    // Offsets count the 2-byte record count in front.
    let what = |e: DecodeError| match e {
        DecodeError::BadRecord { index, what } => (index, what),
        e => panic!("{e:?}"),
    };
    assert_eq!(what(bad(&|b| b[2] = 4)), (0, "unknown flags"));
    assert_eq!(what(bad(&|b| b[3] = 2)), (0, "unknown op"));
    assert_eq!(what(bad(&|b| b[5] = 1)), (0, "reserved byte not zero"));
    assert_eq!(what(bad(&|b| b[1] = 2)), (1, "truncated"));
    let n = MAX_RECORDS as u16 + 1;
    assert_eq!(
        bad(&|b| b[..2].copy_from_slice(&n.to_be_bytes())),
        DecodeError::TooManyRecords(n as usize)
    );
}

/// SplitMix64: small, seedable, good enough to drive a fuzz loop.
use vc5_testkit::rng::SplitMix64 as Rng;

fn fuzz_params() -> (u64, usize) {
    let seed = std::env::var("VC5_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let iters = std::env::var("VC5_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    eprintln!("flowsync fuzz: VC5_FUZZ_SEED={seed} VC5_FUZZ_ITERS={iters}");
    (seed, iters)
}

#[test]
fn fuzz_decode_never_panics_and_accepts_only_the_original() {
    let (seed, iters) = fuzz_params();
    let mut rng = Rng(seed);
    let keys = ring(&[(7, 0)]);
    let good = encode(&header(), &records(), &key(0)).unwrap();
    let want = decode(&good, &keys).unwrap();
    for i in 0..iters {
        let mut b = if i % 4 == 0 {
            // Random bytes, half of them behind a valid clear prefix so
            // that they reach the AEAD.
            let len = rng.below(300);
            let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if rng.next_u64() & 1 == 1 && len >= 8 {
                b[..8].copy_from_slice(&good[..8]);
            }
            b
        } else {
            good.clone()
        };
        for _ in 0..1 + rng.below(4) {
            match rng.below(4) {
                0 if !b.is_empty() => {
                    let at = rng.below(b.len());
                    b[at] ^= 1 << rng.below(8);
                }
                1 => b.truncate(rng.below(b.len() + 1)),
                2 => b.insert(rng.below(b.len() + 1), rng.next_u64() as u8),
                _ => {
                    let at = rng.below(b.len() + 1);
                    b.splice(at..at, (0..rng.below(16)).map(|_| rng.next_u64() as u8));
                }
            }
        }
        match decode(&b, &keys) {
            Ok(d) => assert!(
                b == good && d == want,
                "seed {seed} iter {i}: forged datagram accepted"
            ),
            Err(e) => assert!(!e.reason().is_empty()),
        }
    }
}

/// Whatever the parser accepts re-encodes to the very same bytes, so no
/// two plaintexts mean the same flows.
fn check_canonical(plain: &[u8], seed: u64, i: usize) {
    if let Ok(recs) = parse_records(plain) {
        let mut again = (recs.len() as u16).to_be_bytes().to_vec();
        for r in &recs {
            write_record(&mut again, r).unwrap();
        }
        assert_eq!(again, plain, "seed {seed} iter {i}");
    }
}

#[test]
fn fuzz_record_parser_and_round_trip() {
    let (seed, iters) = fuzz_params();
    let mut rng = Rng(seed ^ 0x5555);
    let keys = ring(&[(3, 9)]);
    let mut s = Sealer::new(&keys, 2, 2);
    // Round trips cost ~20x a failed open, so fewer of them.
    for i in 0..iters / 20 {
        // The parser behind the AEAD, on random plaintext.
        let len = rng.below(200);
        let mut plain: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if len >= 2 {
            plain[0] = 0;
            plain[1] = rng.below(6) as u8;
        }
        check_canonical(&plain, seed, i);
        // Random records survive encode and decode unchanged.
        let recs: Vec<FlowRecord> = (0..rng.below(80))
            .map(|_| {
                let v6 = rng.next_u64() & 1 == 1;
                let addr = |r: &mut Rng, v6: bool| -> IpAddr {
                    if v6 {
                        Ipv6Addr::from(((r.next_u64() as u128) << 64) | r.next_u64() as u128).into()
                    } else {
                        Ipv4Addr::from(r.next_u64() as u32).into()
                    }
                };
                FlowRecord {
                    saddr: addr(&mut rng, v6),
                    daddr: addr(&mut rng, v6),
                    sport: rng.next_u64() as u16,
                    dport: rng.next_u64() as u16,
                    protocol: rng.next_u64() as u8,
                    real: {
                        let v6 = rng.next_u64() & 1 == 1;
                        addr(&mut rng, v6)
                    },
                    op: if rng.next_u64() & 1 == 1 {
                        Op::Delete
                    } else {
                        Op::Upsert
                    },
                }
            })
            .collect();
        // The parser on valid plaintext with one byte changed.
        let mut plain = (recs.len() as u16).to_be_bytes().to_vec();
        for r in &recs {
            write_record(&mut plain, r).unwrap();
        }
        let at = rng.below(plain.len());
        plain[at] ^= 1 << rng.below(8);
        check_canonical(&plain, seed, i);
        let mut back = Vec::new();
        for d in s.seal_flows(&recs, 0, DEFAULT_MAX_LEN).unwrap() {
            back.extend(decode(&d, &keys).unwrap().records);
        }
        assert_eq!(back, recs, "seed {seed} iter {i}");
    }
}
