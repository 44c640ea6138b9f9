//! Bounded fuzzing of the two parsers that read bytes from outside: the BGP
//! message decoder (`bgp::codec`) and the BIRD control-socket reply parser
//! (`bird::reply`).
//!
//! Inputs are random byte strings and mutations of valid messages (OPEN with
//! capabilities, UPDATE with classic NLRI, MP_REACH_NLRI and MP_UNREACH_NLRI,
//! two-octet sessions with AS4_PATH, NOTIFICATION, KEEPALIVE, ROUTE-REFRESH;
//! BIRD transcripts from `tests/golden`). Properties: no panic; every error is
//! typed and, for BGP, maps to a NOTIFICATION that encodes and decodes; what
//! decodes re-encodes to something that decodes the same; no decode
//! allocates more than a fixed bound (a counting allocator measures it). BGP
//! messages are also parsed by `routecore`, an independent implementation:
//! fields must agree where both accept, and verdicts that differ are counted
//! and printed.
//!
//! Each test runs for a fraction of a second to a few seconds by default.
//! `VC5_FUZZ_SCALE=N` multiplies the number of cases (e.g. 100 for a long
//! run); `VC5_FUZZ_SEED=S` replays a run. A failing case prints the seed of
//! the run and the index of the case.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::panic::{AssertUnwindSafe, catch_unwind};

use vc5_bird_bridge::bgp::codec::{
    self, Afi, Attribute, Capability, Codec, EncodeError, HEADER_LEN, MAX_MESSAGE_LEN, Message,
    Notification, Open, RouteAttributes, Safi, Update, build_updates,
};
use vc5_bird_bridge::bird::reply::{self, ReplyParser};
use vc5_testkit::rng::SplitMix64;

// ------------------------------------------------------------ allocation

/// Counts the bytes live on this thread, and their peak, so a test can
/// bound what one call allocates (other test threads do not interfere).
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    // try_with: the allocator also runs while thread-locals are torn down.
    let _ = LIVE.try_with(|l| {
        let v = l.get() + n;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: every method forwards to the system allocator unchanged; the
// counting around it touches only thread-locals and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        add(new as isize - layout.size() as isize);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the peak of bytes it had live.
fn measured<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get) - base;
    (r, peak.max(0) as usize)
}

// ------------------------------------------------------------ randomness

/// The test kit's SplitMix64 (small, fast, and reproducible from one seed),
/// with a byte biased to the values parsers branch on.
struct Rng(SplitMix64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }
    fn byte(&mut self) -> u8 {
        // Bias to the values parsers branch on.
        const SPECIAL: [u8; 8] = [0, 1, 2, 0x7f, 0x80, 0xfe, 0xff, 0x40];
        if self.below(4) == 0 {
            SPECIAL[self.below(SPECIAL.len())]
        } else {
            self.next() as u8
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The run's seed (VC5_FUZZ_SEED, else from the clock) and case count.
fn run_params(name: &str, cases: usize) -> (u64, usize) {
    let seed = env_u64("VC5_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let scale = env_u64("VC5_FUZZ_SCALE").unwrap_or(1).max(1) as usize;
    eprintln!(
        "{name}: seed {seed} (VC5_FUZZ_SEED={seed} replays), {} cases",
        cases * scale
    );
    (seed, cases * scale)
}

/// Runs `case` for every index; on a panic, says how to replay it.
fn for_cases(name: &str, cases: usize, mut case: impl FnMut(&mut Rng, usize)) {
    let (seed, n) = run_params(name, cases);
    for i in 0..n {
        let mut rng = Rng(SplitMix64(
            seed ^ (i as u64).wrapping_mul(0xd1b5_4a32_d192_ed03),
        ));
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| case(&mut rng, i))) {
            eprintln!("{name}: case {i} failed; replay with VC5_FUZZ_SEED={seed}");
            std::panic::resume_unwind(p);
        }
    }
}

// ------------------------------------------------------------ BGP corpus

const ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn attrs() -> RouteAttributes {
    RouteAttributes {
        local_as: 4_200_000_000,
        ibgp: false,
        next_hop4: Some(ID),
        next_hop6: Some("2001:db8::1".parse().expect("addr")),
        communities: vec![(65000 << 16) | 1, (65000 << 16) | 2],
        med: Some(5),
        local_pref: Some(200),
    }
}

/// Valid messages, with the session each decodes in.
fn corpus() -> Vec<(Vec<u8>, Codec)> {
    let four = Codec {
        four_octet_as: true,
    };
    let two = Codec {
        four_octet_as: false,
    };
    let v4: Vec<IpAddr> = (0..40u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(203, 0, 113, i)))
        .collect();
    let v6: Vec<IpAddr> = (0..20u16)
        .map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, i)))
        .collect();
    let mut out = vec![
        (
            Message::Open(Open::ours(65000, 90, ID))
                .encode(four)
                .expect("encodes"),
            four,
        ),
        (
            Message::Open(Open::ours(4_200_000_000, 0, ID))
                .encode(four)
                .expect("encodes"),
            four,
        ),
        (Message::Keepalive.encode(four).expect("encodes"), four),
        (
            Message::Notification(Notification::admin_shutdown())
                .encode(four)
                .expect("encodes"),
            four,
        ),
        (
            Message::Notification(Notification {
                kind: (6, 2).into(),
                data: b"\x0bmaintenance".to_vec(),
            })
            .encode(four)
            .expect("encodes"),
            four,
        ),
        (
            Message::RouteRefresh {
                afi: Afi::Ipv6,
                safi: Safi::Unicast,
            }
            .encode(four)
            .expect("encodes"),
            four,
        ),
    ];
    for codec in [four, two] {
        for (a, w) in [
            (&v4[..3], &[][..]),
            (&v6[..3], &[][..]),
            (&[v4[0], v6[0]][..], &[v4[1], v6[1]][..]),
            (&[][..], &v6[..]),
            (&[][..], &v4[..]),
            (&v4[..], &[][..]),
        ] {
            for m in build_updates(a, w, &attrs(), codec).expect("builds") {
                out.push((m.encode(codec).expect("encodes"), codec));
            }
        }
    }
    out
}

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.len() <= HEADER_LEN {
            b.push(rng.byte());
            continue;
        }
        // Past the marker: a broken marker is one branch, tested apart.
        let pos = 16 + rng.below(b.len() - 16);
        match rng.below(8) {
            0 | 1 => b[pos] = rng.byte(),
            2 => b[pos] ^= 1 << rng.below(8),
            3 => {
                b.insert(pos, rng.byte());
            }
            4 => {
                b.remove(pos);
            }
            5 => b.truncate(pos.max(HEADER_LEN)),
            6 => {
                // Splice in a piece of another message.
                let from = rng.below(other.len());
                let len = rng.below(other.len() - from).min(64);
                let piece = other[from..from + len].to_vec();
                b.splice(pos..pos, piece);
            }
            _ => {
                // A length field (1 or 2 octets) set to an edge value.
                let v: u16 = [0, 1, 2, 3, 0x7f, 0x80, 0xff, 0xffff][rng.below(8)];
                b[pos] = (v >> 8) as u8;
                if pos + 1 < b.len() {
                    b[pos + 1] = v as u8;
                }
            }
        }
    }
    // Mostly keep the header's length right, so the body parsers are reached.
    if rng.below(4) != 0 && b.len() >= HEADER_LEN && b.len() <= usize::from(u16::MAX) {
        let n = b.len() as u16;
        b[16..18].copy_from_slice(&n.to_be_bytes());
    }
    b
}

/// A decode stays below this many live bytes: a message is at most 4096
/// octets, so even one decoded prefix per octet is tens of kilobytes.
const DECODE_ALLOC_LIMIT: usize = 64 * MAX_MESSAGE_LEN;

/// Checks every property of one input; returns our verdict.
fn check_bgp(buf: &[u8], codec: Codec) -> Result<Option<(Message, usize)>, codec::DecodeError> {
    let (r, peak) = measured(|| codec::decode(buf, codec));
    assert!(
        peak <= DECODE_ALLOC_LIMIT,
        "decode of {} bytes had {peak} bytes live",
        buf.len()
    );
    match &r {
        Ok(Some((m, used))) => {
            assert!(*used >= HEADER_LEN && *used <= buf.len() && *used <= MAX_MESSAGE_LEN);
            // What decodes re-encodes to the same message.
            match m.encode(codec) {
                Ok(again) => match codec::decode(&again, codec) {
                    Ok(Some((m2, n))) => {
                        assert_eq!(&m2, m, "re-encoding changed the message");
                        assert_eq!(n, again.len());
                    }
                    other => panic!("our encoding of {m:?} does not decode: {other:?}"),
                },
                // The one message that decodes but does not encode: an OPEN
                // with more capabilities than fit without RFC 9072's
                // extended length, which vc5 never sends.
                Err(EncodeError::CapabilitiesTooLong { .. }) if matches!(m, Message::Open(_)) => {}
                Err(e) => panic!("what decodes does not re-encode: {m:?}: {e}"),
            }
        }
        Ok(None) => {
            // Only a message not yet complete asks for more.
            if buf.len() >= HEADER_LEN {
                let declared = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
                assert!(buf.len() < declared, "complete but undecided: {buf:02x?}");
            }
        }
        Err(e) => {
            let n = e.notification();
            assert!((1..=6).contains(&n.code()), "{e:?} -> {n:?}");
            let wire = Message::Notification(n.clone())
                .encode(codec)
                .expect("a NOTIFICATION for a decode error encodes");
            assert!(
                wire.len() <= MAX_MESSAGE_LEN,
                "{e:?}: NOTIFICATION too long"
            );
            match codec::decode(&wire, codec) {
                Ok(Some((Message::Notification(back), _))) => assert_eq!(back, n),
                other => panic!("NOTIFICATION for {e:?} does not decode: {other:?}"),
            }
        }
    }
    r
}

#[test]
fn bgp_decoder_survives_mutated_messages() {
    let corpus = corpus();
    for_cases(
        "bgp_decoder_survives_mutated_messages",
        200_000,
        |rng, i| {
            let (seed, codec) = &corpus[i % corpus.len()];
            let (other, _) = &corpus[rng.below(corpus.len())];
            let buf = mutate(rng, seed, other);
            let _ = check_bgp(&buf, *codec);
            // The other session type too: an OPEN changes how UPDATEs decode.
            let _ = check_bgp(
                &buf,
                Codec {
                    four_octet_as: !codec.four_octet_as,
                },
            );
        },
    );
}

#[test]
fn bgp_decoder_survives_random_bytes() {
    for_cases("bgp_decoder_survives_random_bytes", 100_000, |rng, _| {
        let len = rng.below(80);
        let mut buf: Vec<u8> = if rng.below(8) == 0 {
            Vec::new()
        } else {
            vec![0xff; 16]
        };
        buf.extend((0..len).map(|_| rng.byte()));
        let _ = check_bgp(&buf, Codec::default());
    });
    // A declared maximum with megabytes behind it: only one message is read.
    let mut big = vec![0xffu8; 16];
    big.extend_from_slice(&(MAX_MESSAGE_LEN as u16).to_be_bytes());
    big.push(2);
    big.resize(1 << 20, 0);
    assert!(check_bgp(&big, Codec::default()).is_err());
}

// ------------------------------------------------------------ routecore

mod routecore_diff {
    use super::*;
    use routecore::bgp::message::{Message as Rc, SessionConfig};

    /// What a message says, in a form both parsers can be compared on.
    #[derive(Debug, PartialEq, Eq)]
    enum Fields {
        Open {
            asn: u32,
            hold: u16,
            id: [u8; 4],
            four: bool,
        },
        Update {
            announced: BTreeSet<String>,
            withdrawn: BTreeSet<String>,
        },
        Notification {
            code: u8,
            subcode: u8,
        },
        Keepalive,
        Other,
    }

    fn ours(m: &Message) -> Fields {
        match m {
            Message::Open(o) => Fields::Open {
                asn: o.asn(),
                hold: o.hold_time,
                id: o.bgp_id.octets(),
                four: o
                    .capabilities
                    .iter()
                    .any(|c| matches!(c, Capability::FourOctetAs(_))),
            },
            Message::Update(u) => update_fields(u),
            Message::Notification(n) => Fields::Notification {
                code: n.code(),
                subcode: n.subcode(),
            },
            Message::Keepalive => Fields::Keepalive,
            Message::RouteRefresh { .. } => Fields::Other,
        }
    }

    fn update_fields(u: &Update) -> Fields {
        let mut announced: BTreeSet<String> = u.nlri.iter().map(|p| p.to_string()).collect();
        let mut withdrawn: BTreeSet<String> = u.withdrawn.iter().map(|p| p.to_string()).collect();
        for a in &u.attributes {
            match a {
                Attribute::MpReach { nlri, .. } => {
                    announced.extend(nlri.iter().map(|p| p.to_string()))
                }
                Attribute::MpUnreach { withdrawn: w, .. } => {
                    withdrawn.extend(w.iter().map(|p| p.to_string()))
                }
                _ => {}
            }
        }
        Fields::Update {
            announced,
            withdrawn,
        }
    }

    /// routecore's reading, or why it refuses. Its UPDATE parsing is partly
    /// lazy, so the NLRI are read here and their errors count as a refusal.
    fn theirs(buf: &[u8], four: bool) -> Result<Fields, String> {
        let cfg = if four {
            SessionConfig::modern()
        } else {
            SessionConfig::legacy()
        };
        let m = Rc::from_octets(buf.to_vec(), Some(&cfg)).map_err(|e| e.to_string())?;
        Ok(match m {
            Rc::Open(o) => {
                let id: [u8; 4] = o.identifier().try_into().map_err(|_| "identifier")?;
                Fields::Open {
                    asn: o.my_asn().into_u32(),
                    hold: o.holdtime(),
                    id,
                    four: o.four_octet_capable(),
                }
            }
            Rc::Update(u) => {
                let announced = u
                    .announcements_vec()
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|n| n.to_string())
                    .collect();
                let withdrawn = u
                    .withdrawals_vec()
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|n| n.to_string())
                    .collect();
                Fields::Update {
                    announced,
                    withdrawn,
                }
            }
            Rc::Notification(n) => {
                // routecore 0.7.2 checks nothing of a NOTIFICATION but its
                // header; its `details()` indexes the subcode unchecked (a
                // panic on a 20-octet message) and drops the subcode of Hold
                // Timer Expired, so the octets are read here.
                let raw = n.as_ref();
                if raw.len() < 21 {
                    return Ok(Fields::Other);
                }
                Fields::Notification {
                    code: raw[19],
                    subcode: raw[20],
                }
            }
            Rc::Keepalive(_) => Fields::Keepalive,
            Rc::RouteRefresh(_) => Fields::Other,
        })
    }

    #[test]
    fn valid_messages_read_the_same() {
        for (wire, codec) in corpus() {
            let (m, _) = codec::decode(&wire, codec)
                .expect("ours decodes")
                .expect("complete");
            if matches!(m, Message::RouteRefresh { .. }) {
                continue; // routecore 0.7 does not parse ROUTE-REFRESH
            }
            let t = theirs(&wire, codec.four_octet_as)
                .unwrap_or_else(|e| panic!("routecore refuses {m:?}: {e}"));
            assert_eq!(ours(&m), t, "{wire:02x?}");
        }
    }

    /// Mutated messages: where both accept, the fields agree; where only one
    /// does, the case is counted by kind and printed (see the report).
    #[test]
    fn mutated_messages_compared_with_routecore() {
        let corpus = corpus();
        // routecore panics on some inputs (counted below); keep its panic
        // messages out of the output, and everyone else's in.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_routecore = info
                .location()
                .is_some_and(|l| l.file().contains("routecore-"));
            if !in_routecore {
                previous(info);
            }
        }));
        let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
        let mut examples: BTreeMap<String, String> = BTreeMap::new();
        for_cases(
            "mutated_messages_compared_with_routecore",
            50_000,
            |rng, i| {
                let (seed, codec) = &corpus[i % corpus.len()];
                let (other, _) = &corpus[rng.below(corpus.len())];
                let buf = mutate(rng, seed, other);
                let mine = codec::decode(&buf, *codec);
                // Compare complete messages only, exactly as long as declared.
                let wire = match &mine {
                    Ok(Some((_, used))) => &buf[..*used],
                    Ok(None) => return,
                    Err(_) => &buf[..],
                };
                if wire.get(18) == Some(&5) {
                    return; // ROUTE-REFRESH: routecore 0.7 has no parser
                }
                let t = match catch_unwind(AssertUnwindSafe(|| theirs(wire, codec.four_octet_as))) {
                    Ok(t) => t,
                    Err(_) => {
                        *verdicts.entry("routecore panicked".into()).or_default() += 1;
                        examples
                            .entry("routecore panicked".into())
                            .or_insert_with(|| hex(wire));
                        return;
                    }
                };
                let key = match (&mine, &t) {
                    (Ok(Some((Message::Update(u), _))), Ok(_)) if other_mp(u) => {
                        // routecore lists every family's NLRI alike; vc5 keeps
                        // no prefixes of families it does not use. Not comparable.
                        "both accept (non-unicast MP_(UN)REACH, fields not compared)".to_string()
                    }
                    (Ok(Some((m, _))), Ok(f)) => {
                        assert_eq!(&ours(m), f, "both accept, fields differ: {wire:02x?}");
                        "both accept".to_string()
                    }
                    (Err(_), Err(_)) => "both refuse".to_string(),
                    (Ok(Some(_)), Err(e)) => format!("only vc5 accepts (routecore: {})", short(e)),
                    (Err(e), Ok(_)) => format!("only routecore accepts (vc5: {})", variant(e)),
                    _ => unreachable!(),
                };
                examples
                    .entry(key.clone())
                    .or_insert_with(|| hex(&wire[..wire.len().min(48)]));
                *verdicts.entry(key).or_default() += 1;
            },
        );
        eprintln!("verdicts (vc5 vs routecore 0.7.2):");
        for (k, n) in &verdicts {
            eprintln!("  {n:6}  {k}");
            if !k.starts_with("both") {
                eprintln!("          e.g. {}", examples[k]);
            }
        }
        assert!(verdicts.get("both accept").is_some_and(|n| *n > 100));
    }

    /// Whether an UPDATE has MP_REACH/MP_UNREACH for a family vc5 keeps raw.
    fn other_mp(u: &Update) -> bool {
        u.attributes.iter().any(|a| match a {
            Attribute::MpReach { afi, safi, .. } | Attribute::MpUnreach { afi, safi, .. } => {
                !matches!((afi, safi), (Afi::Ipv4 | Afi::Ipv6, Safi::Unicast))
            }
            _ => false,
        })
    }

    /// The error's variant, without its payload, and the NOTIFICATION.
    fn variant(e: &codec::DecodeError) -> String {
        let d = format!("{e:?}");
        let n = e.notification();
        let name = d.split('(').next().unwrap_or(&d);
        format!("{name}, NOTIFICATION {}/{}", n.code(), n.subcode())
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn short(e: &str) -> String {
        e.chars().take(60).collect()
    }
}

// ------------------------------------------------------------ BIRD replies

fn golden() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("golden dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "txt"))
        .map(|e| std::fs::read(e.path()).expect("read"))
        .collect();
    v.sort();
    assert!(v.len() >= 10, "golden transcripts");
    v
}

/// Feeds `data` in random pieces; checks the parser's invariants. Returns
/// the replies, or the error that ended the stream.
fn feed(rng: &mut Rng, data: &[u8]) -> Result<Vec<reply::Reply>, reply::ProtocolError> {
    let mut p = ReplyParser::new();
    let mut replies = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len().min(300));
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let (r, peak) = measured(|| p.push_bytes(chunk));
        // Each call holds at most one line more than it was given, plus the
        // reply it builds from the lines already held.
        assert!(
            peak <= 8 * (data.len() + reply::MAX_LINE) + 4096,
            "push_bytes of {n} bytes had {peak} bytes live"
        );
        for e in r? {
            if let reply::Event::Reply(r) = e {
                replies.push(r);
            }
        }
    }
    Ok(replies)
}

#[test]
fn bird_reply_parser_survives_mutations() {
    let golden = golden();
    for_cases("bird_reply_parser_survives_mutations", 50_000, |rng, i| {
        let mut b = golden[i % golden.len()].clone();
        for _ in 0..1 + rng.below(6) {
            if b.is_empty() {
                b.push(rng.byte());
                continue;
            }
            let pos = rng.below(b.len());
            match rng.below(6) {
                0 => b[pos] = rng.byte(),
                1 => b[pos] = [b'\n', b' ', b'-', b'+', b'0', b'9'][rng.below(6)],
                2 => {
                    b.remove(pos);
                }
                3 => b.insert(pos, rng.byte()),
                4 => b.truncate(pos),
                _ => {
                    let from = rng.below(b.len());
                    let piece = b[from..(from + 40).min(b.len())].to_vec();
                    b.splice(pos..pos, piece);
                }
            }
        }
        let whole = reply::parse_all(&b);
        let pieces = feed(rng, &b);
        // Splitting the stream differently never changes the verdict.
        match (&whole, &pieces) {
            (Ok(a), Ok(c)) => assert_eq!(a, c),
            (Err(a), Err(c)) => assert_eq!(a, c),
            _ => panic!("whole {whole:?} vs pieces {pieces:?}"),
        }
        for r in whole.iter().flatten() {
            // A reply is one code class and renders back to what parses as it.
            let again = reply::parse_all(&r.to_wire()).expect("to_wire parses");
            assert_eq!(again.len(), 1);
            assert_eq!(&again[0], r);
            let _ = (r.class(), r.message(), r.error_position());
        }
    });
}

#[test]
fn bird_reply_parser_survives_random_bytes() {
    for_cases(
        "bird_reply_parser_survives_random_bytes",
        50_000,
        |rng, _| {
            let len = rng.below(200);
            let b: Vec<u8> = (0..len)
                .map(|_| match rng.below(5) {
                    0 => b'\n',
                    1 => b"0123456789"[rng.below(10)],
                    2 => b" -+"[rng.below(3)],
                    _ => rng.byte(),
                })
                .collect();
            let _ = feed(rng, &b);
        },
    );
}

#[test]
fn bird_reply_memory_is_bounded() {
    // One endless line: refused at MAX_LINE, never buffered beyond.
    let mut p = ReplyParser::new();
    let chunk = vec![b'x'; 4096];
    let mut fed = 0;
    let err = loop {
        match p.push_bytes(&chunk) {
            Ok(_) => fed += chunk.len(),
            Err(e) => break e,
        }
        assert!(fed <= reply::MAX_LINE, "buffered {fed} bytes of one line");
    };
    assert_eq!(err, reply::ProtocolError::LineTooLong);

    // An endless reply of long lines: refused before MAX_REPLY_BYTES.
    let mut p = ReplyParser::new();
    let mut line = b"1002-".to_vec();
    line.resize(reply::MAX_LINE - 1, b'y');
    line.push(b'\n');
    let mut fed = 0usize;
    let (err, peak) = measured(|| {
        loop {
            match p.push_bytes(&line) {
                Ok(_) => fed += line.len(),
                Err(e) => break e,
            }
        }
    });
    assert_eq!(err, reply::ProtocolError::ReplyTooLong);
    assert!(fed <= reply::MAX_REPLY_BYTES, "{fed}");
    assert!(peak <= 2 * reply::MAX_REPLY_BYTES, "{peak} bytes live");
}
