//! (e) The speaker against peers that misbehave (garbage, NOTIFICATION,
//! malformed UPDATE, unacceptable OPEN), that cannot be reached, refuse, or
//! disagree on the AS: it answers per RFC 4271, reports, backs off and
//! reconnects, and never panics.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use vc5_bird_bridge::bgp::codec::{self, Codec, Message, Notification, Open};
use vc5_bird_bridge::bgp::fsm::State;
use vc5_bird_bridge::{Announcer, Mode, Status};
use vc5_testkit::bird::Bird;

fn read_msg(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Message> {
    let mut chunk = [0u8; 4096];
    loop {
        match codec::decode(buf, Codec::default()) {
            Ok(Some((m, used))) => {
                buf.drain(..used);
                return Some(m);
            }
            Ok(None) => {}
            Err(e) => panic!("the speaker sent something undecodable: {e}"),
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn send(s: &mut TcpStream, m: Message) {
    s.write_all(&m.encode(Codec::default()).expect("encodes"))
        .expect("write");
}

fn expect_open(s: &mut TcpStream, buf: &mut Vec<u8>) {
    match read_msg(s, buf) {
        Some(Message::Open(o)) => {
            assert_eq!(o.asn(), LB_AS);
            assert!(o.four_octet_as());
        }
        other => panic!("expected OPEN, got {other:?}"),
    }
}

/// Reads until the speaker closes; returns the NOTIFICATION it sent, if any.
fn notification_then_eof(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Notification> {
    let mut seen = None;
    while let Some(m) = read_msg(s, buf) {
        if let Message::Notification(n) = m {
            seen = Some(n);
        }
    }
    seen
}

fn peer_open(hold: u16) -> Message {
    Message::Open(Open::ours(RT_AS, hold, RT4.parse().expect("id")))
}

/// The fake router: one scenario per connection, recording when each came.
fn fake_router(listener: TcpListener) -> Vec<Instant> {
    let mut times = Vec::new();
    let mut next = || {
        let (s, _) = listener.accept().expect("accept");
        times.push(Instant::now());
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        (s, Vec::new())
    };

    // 1. Garbage instead of an OPEN: Message Header Error / Connection Not Synchronized.
    let (mut s, mut b) = next();
    expect_open(&mut s, &mut b);
    s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        .expect("write");
    let n = notification_then_eof(&mut s, &mut b).expect("a NOTIFICATION for garbage");
    assert_eq!((n.code(), n.subcode()), (1, 1), "{n}");

    // 2. A NOTIFICATION (Cease with a shutdown message): no reply to it.
    let (mut s, mut b) = next();
    expect_open(&mut s, &mut b);
    send(&mut s, peer_open(9));
    let mut data = vec![11];
    data.extend_from_slice(b"maintenance");
    send(
        &mut s,
        Message::Notification(Notification {
            kind: (6, 2).into(),
            data,
        }),
    );
    assert_eq!(
        notification_then_eof(&mut s, &mut b),
        None,
        "never answer a NOTIFICATION with one"
    );

    // 3. Established, then a malformed UPDATE (ORIGIN flagged optional).
    let (mut s, mut b) = next();
    expect_open(&mut s, &mut b);
    send(&mut s, peer_open(9));
    assert_eq!(read_msg(&mut s, &mut b), Some(Message::Keepalive));
    send(&mut s, Message::Keepalive);
    match read_msg(&mut s, &mut b) {
        Some(Message::Update(u)) => assert_eq!(u.nlri.len(), 1, "the VIP: {u:?}"),
        other => panic!("expected the VIP's UPDATE, got {other:?}"),
    }
    let mut bad = vec![0xff; 16];
    bad.extend_from_slice(&[0, 27, 2, 0, 0, 0, 4, 0xc0, 1, 1, 0]);
    s.write_all(&bad).expect("write");
    let n = notification_then_eof(&mut s, &mut b).expect("a NOTIFICATION for a bad UPDATE");
    assert_eq!(
        (n.code(), n.subcode(), n.data.as_slice()),
        (3, 4, &[0xc0, 1, 1, 0][..]),
        "{n}"
    );

    // 4. An OPEN with hold time 1: OPEN Message Error / Unacceptable Hold Time.
    let (mut s, mut b) = next();
    expect_open(&mut s, &mut b);
    let mut open = peer_open(9).encode(Codec::default()).expect("encodes");
    open[22..24].copy_from_slice(&1u16.to_be_bytes());
    s.write_all(&open).expect("write");
    let n = notification_then_eof(&mut s, &mut b).expect("a NOTIFICATION for hold time 1");
    assert_eq!((n.code(), n.subcode()), (2, 6), "{n}");

    // 5. Still coming back.
    let _ = next();
    times
}

#[test]
fn misbehaving_peer_gets_rfc4271_answers_and_backoff() {
    let lab = Lab::new("flt-peer");
    let listener = lab
        .rt
        .enter(|| TcpListener::bind((RT4, 179)))
        .expect("namespace")
        .expect("bind 179");
    let router = lab.rt.spawn(move || fake_router(listener)).expect("spawn");
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    lab.lb
        .block_on(async {
            let mut cfg = lab.announcer_config(vec![ip(RT4)]);
            cfg.backoff_min = Duration::from_millis(200);
            cfg.backoff_max = Duration::from_secs(2);
            let (h, mut st) = Announcer::start(cfg, set(&[VIP4])).expect("start");
            // Record every distinct error the status shows.
            let seen = errors.clone();
            let mut rx = st.clone();
            let recorder = tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let s: Status = rx.borrow_and_update().clone();
                    if let Some(e) = s.peers.first().and_then(|p| p.last_error.clone()) {
                        let mut v = seen.lock().expect("lock");
                        if v.last() != Some(&e) {
                            v.push(e);
                        }
                    }
                }
            });
            let s = wait_status(&mut st, "five connections", |s| {
                s.peers.first().is_some_and(|p| p.connect_attempts >= 5)
            })
            .await;
            assert_eq!(s.mode, Mode::Bgp);
            h.shutdown().await;
            recorder.abort();
        })
        .expect("namespace");
    let times = router.join().expect("router thread").expect("namespace");
    // Each failure doubles the wait, and a session that reached Established
    // (scenario 3) starts it again from the minimum: 200, 400, 200, 400 ms.
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert!(
        gaps.len() == 4 && gaps[1] > gaps[0] && gaps[2] < gaps[1] && gaps[3] > gaps[2],
        "backoff grows, and restarts after Established: {gaps:?}"
    );
    assert!(gaps[2] + 20 >= 200 && gaps[2] < 400, "{gaps:?}");
    let errors = errors.lock().expect("lock").clone();
    let joined = errors.join("\n");
    for want in [
        "sent NOTIFICATION Message Header Error (1/1) Connection Not Synchronized",
        "peer sent NOTIFICATION Cease (6/2) Administrative Shutdown: \"maintenance\"",
        "sent NOTIFICATION UPDATE Message Error (3/4) Attribute Flags Error",
        "sent NOTIFICATION OPEN Message Error (2/6) Unacceptable Hold Time",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
}

#[test]
fn reconnection_backs_off_exponentially() {
    let lab = Lab::new("flt-backoff");
    // A port that accepts and closes at once, recording when.
    let listener = lab
        .rt
        .enter(|| TcpListener::bind((RT4, 179)))
        .expect("namespace")
        .expect("bind 179");
    let router = lab
        .rt
        .spawn(move || {
            let mut t = Vec::new();
            for _ in 0..5 {
                let (s, _) = listener.accept().expect("accept");
                t.push(Instant::now());
                drop(s);
            }
            t
        })
        .expect("spawn");
    lab.lb
        .block_on(async {
            let mut cfg = lab.announcer_config(vec![ip(RT4)]);
            cfg.backoff_min = Duration::from_millis(100);
            cfg.backoff_max = Duration::from_millis(800);
            let (h, mut st) = Announcer::start(cfg, set(&[])).expect("start");
            wait_status(&mut st, "5 attempts", |s| {
                s.peers.first().is_some_and(|p| p.connect_attempts >= 5)
            })
            .await;
            h.shutdown().await;
        })
        .expect("namespace");
    let t = router.join().expect("thread").expect("namespace");
    let gaps: Vec<u128> = t.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    // 100, 200, 400, 800 ms (each at least its nominal value, less timer slop).
    for (gap, want) in gaps.iter().zip([100u128, 200, 400, 800]) {
        assert!(*gap + 20 >= want && *gap < want + 600, "gaps {gaps:?}");
    }
}

#[test]
fn unreachable_refused_and_wrong_as_are_reported() {
    let lab = Lab::new("flt-unreach");
    lab.lb
        .block_on(async {
            // 198.51.100.1: no route; 192.0.2.2: nothing listens (yet);
            // 192.0.2.3: on the link but nobody there.
            let mut cfg = lab.announcer_config(vec![ip("198.51.100.1"), ip(RT4), ip("192.0.2.3")]);
            cfg.connect_timeout = Duration::from_millis(500);
            cfg.backoff_min = Duration::from_millis(100);
            cfg.backoff_max = Duration::from_millis(400);
            let (h, mut st) = Announcer::start(cfg, set(&[VIP4])).expect("start");
            let s = wait_status(&mut st, "three errors, retries", |s| {
                s.peers.len() == 3
                    && s.peers.iter().all(|p| p.last_error.is_some() && p.connect_attempts >= 2)
            })
            .await;
            let e = |i: usize| s.peers[i].last_error.clone().unwrap_or_default();
            assert!(e(0).contains("unreachable"), "{}", e(0));
            assert!(e(1).contains("refused"), "{}", e(1));
            assert!(e(2).contains("timed out") || e(2).contains("No route to host"), "{}", e(2));
            assert!(s.peers.iter().all(|p| p.state != State::Established));
            assert!(s.announced.is_empty());
            assert!(s.last_error.is_some());

            // A router that expects another AS from us: it says Bad Peer AS.
            let conf = format!(
                "router id {RT4};\nprotocol device {{}}\n\
                 protocol bgp lb {{ local {RT4} as {RT_AS}; neighbor {LB4} as 65099; ipv4 {{ import all; export none; }}; }}\n"
            );
            let mut rt = Bird::start(&lab.rt, lab.dir.path(), "rt", &conf).expect("router");
            let s = wait_status(&mut st, "Bad Peer AS", |s| {
                s.peers.get(1).and_then(|p| p.last_error.as_deref()).is_some_and(|e| {
                    e.contains("peer sent NOTIFICATION OPEN Message Error (2/2) Bad Peer AS")
                })
            })
            .await;
            assert!(s.peers[1].next_retry_in.is_some() || s.peers[1].state != State::Idle);
            h.shutdown().await;

            // We expect another AS from the (now correctly configured) router:
            // we say Bad Peer AS.
            std::fs::write(rt.config_path(), conf.replace("as 65099", &format!("as {LB_AS}"))).expect("config");
            rt.restart().expect("router restarts");
            let mut cfg = lab.announcer_config(vec![ip(RT4)]);
            cfg.peer_as = Some(65002);
            let (h, mut st) = Announcer::start(cfg, set(&[])).expect("start");
            wait_status(&mut st, "we refuse", |s| {
                s.peers.first().and_then(|p| p.last_error.as_deref()).is_some_and(|e| {
                    e.contains("sent NOTIFICATION OPEN Message Error (2/2) Bad Peer AS")
                })
            })
            .await;
            h.shutdown().await;
        })
        .expect("namespace");
}

/// No BIRD and no peers: inactive, said clearly.
#[test]
fn no_bird_and_no_peers_is_inactive() {
    let dir = vc5_testkit::bird::TempDir::new("inactive").expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut cfg = vc5_bird_bridge::AnnouncerConfig::new(ip(LB4), 0, vec![]);
        cfg.bird_socket = dir.path().join("none.ctl");
        cfg.bird_include = dir.path().join("vips.conf");
        let (h, mut st) = Announcer::start(cfg, set(&[])).expect("start");
        let s = wait_status(&mut st, "inactive", |s| s.mode == Mode::Inactive).await;
        assert!(
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("nothing is announced"))
        );
        h.set_vips(set(&[VIP4]));
        // The include still follows the desired set, for a BIRD that starts later.
        let inc = dir.path().join("vips.conf");
        assert!(
            eventually(Duration::from_secs(5), || {
                std::fs::read_to_string(&inc).is_ok_and(|t| t.contains("203.0.113.10/32"))
            })
            .await
        );
        assert_eq!(h.shutdown().await.mode, Mode::Stopped);
        assert!(
            !std::fs::read_to_string(&inc)
                .expect("include")
                .contains("route ")
        );
    });
}

/// Defect 11: a peer whose OPEN says AS 0 (RFC 7607), or carries our own
/// BGP identifier, is refused on the wire with OPEN Message Error / Bad Peer
/// AS (2/2) or Bad BGP Identifier (2/3); checked byte for byte.
#[test]
fn as_zero_and_our_identifier_are_refused_on_the_wire() {
    let lab = Lab::new("flt-open");
    let listener = lab
        .rt
        .enter(|| TcpListener::bind((RT4, 179)))
        .expect("namespace")
        .expect("bind 179");
    let m = "ffffffffffffffffffffffffffffffff";
    // 1. My AS 0, identifier 192.0.2.2, hold 9, no capabilities.
    // 2. My AS AS_TRANS, 4-octet AS capability 0.
    // 3. AS 65001 with identifier 192.0.2.1: the load balancer's own.
    let opens = [
        format!("{m}001d0104000000 09c000020200"),
        format!("{m}002501045ba00009c000020208020641040000 0000"),
        format!("{m}001d0104fde90009c000020100"),
    ]
    .map(|h| {
        let h: String = h.split_whitespace().collect();
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>()
    });
    let router = lab
        .rt
        .spawn(move || {
            let mut replies = Vec::new();
            for open in opens {
                let (mut s, _) = listener.accept().expect("accept");
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let mut b = Vec::new();
                expect_open(&mut s, &mut b);
                s.write_all(&open).expect("write");
                // Everything the speaker sends until it closes, raw.
                let mut rest = b;
                let _ = s.read_to_end(&mut rest);
                replies.push(rest);
            }
            replies
        })
        .expect("spawn");
    lab.lb
        .block_on(async {
            let mut cfg = lab.announcer_config(vec![ip(RT4)]);
            cfg.backoff_min = Duration::from_millis(50);
            cfg.backoff_max = Duration::from_millis(100);
            let (h, mut st) = Announcer::start(cfg, set(&[])).expect("start");
            wait_status(&mut st, "three refusals", |s| {
                s.peers.first().is_some_and(|p| p.connect_attempts >= 4)
            })
            .await;
            let p = &h.status().peers[0];
            assert_ne!(p.state, State::Established);
            h.shutdown().await;
        })
        .expect("namespace");
    let replies = router.join().expect("thread").expect("namespace");
    let notification = |sub: u8| {
        let mut n = vec![0xff; 16];
        n.extend_from_slice(&[0, 21, 3, 2, sub]);
        n
    };
    assert_eq!(replies[0], notification(2), "AS 0 in My AS");
    assert_eq!(replies[1], notification(2), "AS 0 in the capability");
    assert_eq!(replies[2], notification(3), "our own identifier");
}
