//! State machine tests: every transition an active speaker takes.

use super::*;
use crate::bgp::codec::{Afi, Attribute, Capability, Safi, Update};

const ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PEER_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

fn cfg() -> Config {
    Config {
        local_as: 65000,
        router_id: ID,
        hold_time: 90,
        remote_as: None,
        next_hop4: Some(ID),
        next_hop6: Some("2001:db8::1".parse().expect("addr")),
        communities: vec![],
        med: None,
        local_pref: None,
        backoff_min: Duration::from_secs(1),
        backoff_max: Duration::from_secs(8),
    }
}

fn peer_open(asn: u32, hold: u16) -> Message {
    Message::Open(Open::ours(asn, hold, PEER_ID))
}

fn routes(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| s.parse().expect("addr")).collect()
}

/// Drives a fresh machine to Established with `asn` as the peer.
fn established(c: Config, asn: u32, t0: Instant) -> (Fsm, Vec<Action>) {
    let mut f = Fsm::new(c);
    assert_eq!(f.handle(Event::Start, t0), vec![Action::Connect]);
    assert_eq!(f.state(), State::Connect);
    let a = f.handle(Event::TcpConnected, t0);
    assert!(
        matches!(&a[..], [Action::Send(Message::Open(o))] if o.hold_time == 90 && o.asn() == 65000)
    );
    assert_eq!(f.state(), State::OpenSent);
    let a = f.handle(Event::Message(peer_open(asn, 30)), t0);
    assert_eq!(a, vec![Action::Send(Message::Keepalive)]);
    assert_eq!(f.state(), State::OpenConfirm);
    assert_eq!(f.peer().map(|p| p.hold_time), Some(30));
    let a = f.handle(Event::Message(Message::Keepalive), t0);
    assert_eq!(f.state(), State::Established);
    (f, a)
}

fn sent_updates(actions: &[Action]) -> Vec<Update> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Message::Update(u)) => Some(u.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn happy_path_announces_desired_routes_on_establishment() {
    let t0 = Instant::now();
    let mut f = Fsm::new(cfg());
    f.handle(
        Event::SetRoutes {
            generation: 7,
            routes: routes(&["203.0.113.10", "2001:db8:ffff::10"]),
        },
        t0,
    );
    f.handle(Event::Start, t0);
    f.handle(Event::TcpConnected, t0);
    f.handle(Event::Message(peer_open(65001, 30)), t0);
    let a = f.handle(Event::Message(Message::Keepalive), t0);
    let ups = sent_updates(&a);
    assert_eq!(ups.len(), 2, "one IPv4 and one IPv6 UPDATE: {a:?}");
    assert_eq!(a.last(), Some(&Action::Applied(7)));
    assert_eq!(f.announced().len(), 2);
}

#[test]
fn route_changes_send_only_the_difference() {
    let t0 = Instant::now();
    let (mut f, _) = established(cfg(), 65001, t0);
    let a = f.handle(
        Event::SetRoutes {
            generation: 1,
            routes: routes(&["203.0.113.10", "203.0.113.11"]),
        },
        t0,
    );
    let ups = sent_updates(&a);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].nlri.len(), 2);
    let a = f.handle(
        Event::SetRoutes {
            generation: 2,
            routes: routes(&["203.0.113.11"]),
        },
        t0,
    );
    let ups = sent_updates(&a);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].withdrawn.len(), 1);
    assert!(ups[0].nlri.is_empty());
    // Idempotent: the same set again sends nothing but is still "applied".
    let a = f.handle(
        Event::SetRoutes {
            generation: 3,
            routes: routes(&["203.0.113.11"]),
        },
        t0,
    );
    assert_eq!(a, vec![Action::Applied(3)]);
}

#[test]
fn ebgp_and_ibgp_attributes() {
    let t0 = Instant::now();
    let mut c = cfg();
    c.local_pref = Some(300);
    c.med = Some(10);
    for (peer_as, ibgp) in [(65001, false), (65000, true)] {
        let (mut f, _) = established(c.clone(), peer_as, t0);
        let a = f.handle(
            Event::SetRoutes {
                generation: 1,
                routes: routes(&["203.0.113.10"]),
            },
            t0,
        );
        let u = &sent_updates(&a)[0];
        let lp = u
            .attributes
            .iter()
            .any(|x| matches!(x, Attribute::LocalPref(300)));
        assert_eq!(lp, ibgp, "LOCAL_PREF only on iBGP");
        assert!(u.attributes.iter().any(|x| matches!(x, Attribute::Med(10))));
        let path_empty = u
            .attributes
            .iter()
            .any(|x| matches!(x, Attribute::AsPath(p) if p.is_empty()));
        assert_eq!(path_empty, ibgp);
    }
}

#[test]
fn keepalive_and_hold_timers() {
    let t0 = Instant::now();
    let (mut f, _) = established(cfg(), 65001, t0);
    // Negotiated hold 30 s: keepalive every 10 s.
    let ka = f.next_deadline().expect("deadline");
    assert_eq!(ka, t0 + Duration::from_secs(10));
    assert_eq!(f.expire(ka), vec![Action::Send(Message::Keepalive)]);
    // A KEEPALIVE from the peer pushes the hold timer.
    f.handle(
        Event::Message(Message::Keepalive),
        t0 + Duration::from_secs(20),
    );
    assert!(
        f.expire(t0 + Duration::from_secs(40))
            .iter()
            .all(|a| a == &Action::Send(Message::Keepalive))
    );
    assert_eq!(f.state(), State::Established);
    // Silence past the hold time: NOTIFICATION 4/0, Idle, retry scheduled.
    let a = f.expire(t0 + Duration::from_secs(51));
    assert!(
        a.contains(&Action::Send(Message::Notification(Notification::new((
            4, 0
        )))))
    );
    assert!(a.contains(&Action::Close));
    assert_eq!(f.state(), State::Idle);
    assert_eq!(f.last_error(), Some(&SessionError::HoldTimerExpired));
    assert!(f.retry_at().is_some());
}

#[test]
fn zero_hold_time_means_no_timers() {
    let t0 = Instant::now();
    let mut f = Fsm::new(cfg());
    f.handle(Event::Start, t0);
    f.handle(Event::TcpConnected, t0);
    f.handle(Event::Message(peer_open(65001, 0)), t0);
    f.handle(Event::Message(Message::Keepalive), t0);
    assert_eq!(f.state(), State::Established);
    assert_eq!(f.next_deadline(), None);
}

#[test]
fn backoff_doubles_up_to_the_maximum() {
    let mut t = Instant::now();
    let mut f = Fsm::new(cfg());
    assert_eq!(f.handle(Event::Start, t), vec![Action::Connect]);
    let mut delays = Vec::new();
    for _ in 0..6 {
        let a = f.handle(Event::TcpFailed("refused".into()), t);
        assert_eq!(a, vec![Action::Close]);
        let at = f.retry_at().expect("retry");
        delays.push((at - t).as_secs());
        assert!(f.expire(at - Duration::from_millis(1)).is_empty());
        t = at;
        assert_eq!(f.expire(t), vec![Action::Connect]);
    }
    assert_eq!(delays, [1, 2, 4, 8, 8, 8]);
    assert_eq!(f.connect_attempts(), 7);
    assert_eq!(
        f.last_error(),
        Some(&SessionError::Connection("refused".into()))
    );
}

#[test]
fn an_established_session_resets_the_backoff() {
    let mut t = Instant::now();
    let mut f = Fsm::new(cfg());
    f.handle(Event::Start, t);
    // Four failures: the backoff is at the 8 s maximum.
    for _ in 0..4 {
        f.handle(Event::TcpFailed("refused".into()), t);
        t = f.retry_at().expect("retry");
        f.expire(t);
    }
    f.handle(Event::TcpConnected, t);
    f.handle(Event::Message(peer_open(65001, 0)), t);
    f.handle(Event::Message(Message::Keepalive), t);
    assert_eq!(f.state(), State::Established);
    // Lost a moment later: the next attempt is after the minimum, not 8 s.
    f.handle(Event::TcpFailed("reset".into()), t);
    assert_eq!(f.retry_at(), Some(t + Duration::from_secs(1)));
}

#[test]
fn reconnect_now_forgets_the_backoff() {
    let mut t = Instant::now();
    let mut f = Fsm::new(cfg());
    // Not started: nothing to do.
    assert!(f.handle(Event::ReconnectNow, t).is_empty());
    f.handle(Event::Start, t);
    for _ in 0..4 {
        f.handle(Event::TcpFailed("unreachable".into()), t);
        t = f.retry_at().expect("retry");
        f.expire(t);
    }
    f.handle(Event::TcpFailed("unreachable".into()), t);
    assert_eq!(f.retry_at(), Some(t + Duration::from_secs(8)));
    // Idle with 8 s to wait: connect at once.
    let t1 = t + Duration::from_millis(10);
    assert_eq!(f.handle(Event::ReconnectNow, t1), vec![Action::Connect]);
    assert_eq!(f.state(), State::Connect);
    assert_eq!(f.retry_at(), None);
    // A connect in progress is restarted.
    assert_eq!(
        f.handle(Event::ReconnectNow, t1),
        vec![Action::Close, Action::Connect]
    );
    // And the backoff starts again from the minimum.
    f.handle(Event::TcpFailed("refused".into()), t1);
    assert_eq!(f.retry_at(), Some(t1 + Duration::from_secs(1)));
    // An established session is left alone.
    let (mut f, _) = established(cfg(), 65001, t1);
    assert!(f.handle(Event::ReconnectNow, t1).is_empty());
    assert_eq!(f.state(), State::Established);
    // A stopped machine stays stopped.
    f.handle(Event::Stop, t1);
    assert!(f.handle(Event::ReconnectNow, t1).is_empty());
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn new_attributes_are_sent_again_without_withdrawal() {
    let t0 = Instant::now();
    let (mut f, _) = established(cfg(), 65001, t0);
    f.handle(
        Event::SetRoutes {
            generation: 1,
            routes: routes(&["203.0.113.10", "2001:db8:ffff::10"]),
        },
        t0,
    );
    let a = f.handle(
        Event::SetAttributes {
            communities: vec![(65000 << 16) | 7],
            med: Some(20),
            local_pref: None,
        },
        t0,
    );
    let u = sent_updates(&a);
    assert_eq!(u.len(), 2, "one UPDATE per family: {a:?}");
    for u in &u {
        assert!(u.withdrawn.is_empty(), "{u:?}");
        assert!(
            !u.attributes
                .iter()
                .any(|x| matches!(x, Attribute::MpUnreach { .. })),
            "{u:?}"
        );
        assert!(u.attributes.iter().any(|x| matches!(x, Attribute::Med(20))));
        assert!(
            u.attributes
                .iter()
                .any(|x| matches!(x, Attribute::Communities(c) if c == &[(65000 << 16) | 7]))
        );
    }
    assert_eq!(
        f.announced(),
        &routes(&["203.0.113.10", "2001:db8:ffff::10"])
    );
    // The same attributes again send nothing.
    let a = f.handle(
        Event::SetAttributes {
            communities: vec![(65000 << 16) | 7],
            med: Some(20),
            local_pref: None,
        },
        t0,
    );
    assert!(a.is_empty(), "{a:?}");
    // Later announcements carry them too.
    let a = f.handle(
        Event::SetRoutes {
            generation: 2,
            routes: routes(&["203.0.113.10", "2001:db8:ffff::10", "203.0.113.11"]),
        },
        t0,
    );
    let u = sent_updates(&a);
    assert!(
        u[0].attributes
            .iter()
            .any(|x| matches!(x, Attribute::Med(20)))
    );
}

#[test]
fn notification_from_peer_goes_idle_without_reply() {
    let t0 = Instant::now();
    let (mut f, _) = established(cfg(), 65001, t0);
    let n = Notification::new((6, 4));
    let a = f.handle(Event::Message(Message::Notification(n.clone())), t0);
    assert_eq!(a, vec![Action::Close]);
    assert_eq!(f.state(), State::Idle);
    assert_eq!(f.last_error(), Some(&SessionError::NotificationReceived(n)));
}

#[test]
fn wrong_peer_as_is_refused_with_bad_peer_as() {
    let t0 = Instant::now();
    let mut c = cfg();
    c.remote_as = Some(65001);
    let mut f = Fsm::new(c);
    f.handle(Event::Start, t0);
    f.handle(Event::TcpConnected, t0);
    let a = f.handle(Event::Message(peer_open(65002, 90)), t0);
    assert_eq!(
        a,
        vec![
            Action::Send(Message::Notification(Notification::new((2, 2)))),
            Action::Close
        ]
    );
    assert!(
        matches!(f.last_error(), Some(SessionError::NotificationSent(n, _)) if n.subcode() == 2)
    );
}

#[test]
fn ibgp_with_our_own_identifier_is_refused() {
    let t0 = Instant::now();
    let mut f = Fsm::new(cfg());
    f.handle(Event::Start, t0);
    f.handle(Event::TcpConnected, t0);
    let a = f.handle(Event::Message(Message::Open(Open::ours(65000, 90, ID))), t0);
    assert_eq!(
        a[0],
        Action::Send(Message::Notification(Notification::new((2, 3))))
    );
}

#[test]
fn decode_errors_send_their_notification() {
    let t0 = Instant::now();
    let (mut f, _) = established(cfg(), 65001, t0);
    let a = f.handle(
        Event::DecodeError(DecodeError::ConnectionNotSynchronized),
        t0,
    );
    assert_eq!(
        a,
        vec![
            Action::Send(Message::Notification(Notification::new((1, 1)))),
            Action::Close
        ]
    );
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn unexpected_messages_are_fsm_errors() {
    let t0 = Instant::now();
    let mut f = Fsm::new(cfg());
    f.handle(Event::Start, t0);
    f.handle(Event::TcpConnected, t0);
    let a = f.handle(Event::Message(Message::Keepalive), t0);
    assert_eq!(
        a[0],
        Action::Send(Message::Notification(Notification::new((5, 1))))
    );
    let (mut f, _) = established(cfg(), 65001, t0);
    let a = f.handle(Event::Message(peer_open(65001, 90)), t0);
    assert_eq!(
        a[0],
        Action::Send(Message::Notification(Notification::new((5, 3))))
    );
}

#[test]
fn stop_withdraws_then_ceases() {
    let t0 = Instant::now();
    let (mut f, _) = established(cfg(), 65001, t0);
    f.handle(
        Event::SetRoutes {
            generation: 1,
            routes: routes(&["203.0.113.10", "2001:db8:ffff::10"]),
        },
        t0,
    );
    let a = f.handle(Event::Stop, t0);
    let n = a.len();
    assert_eq!(sent_updates(&a).len(), 2, "two withdrawal UPDATEs: {a:?}");
    assert_eq!(
        a[n - 2],
        Action::Send(Message::Notification(Notification::admin_shutdown()))
    );
    assert_eq!(a[n - 1], Action::Close);
    assert!(f.stopped());
    assert_eq!(f.next_deadline(), None, "no retry after stop");
    assert!(f.handle(Event::Start, t0).is_empty());
}

#[test]
fn stop_while_connecting_just_closes() {
    let t0 = Instant::now();
    let mut f = Fsm::new(cfg());
    f.handle(Event::Start, t0);
    assert_eq!(f.handle(Event::Stop, t0), vec![Action::Close]);
    // A connection that completes afterwards is closed at once.
    assert_eq!(f.handle(Event::TcpConnected, t0), vec![Action::Close]);
}

#[test]
fn ipv6_routes_need_the_family_and_a_next_hop() {
    let t0 = Instant::now();
    let mut f = Fsm::new(cfg());
    f.handle(Event::Start, t0);
    f.handle(Event::TcpConnected, t0);
    // A peer that only does IPv4 unicast.
    let mut o = Open::ours(65001, 90, PEER_ID);
    o.capabilities
        .retain(|c| !matches!(c, Capability::Multiprotocol { afi: Afi::Ipv6, .. }));
    f.handle(Event::Message(Message::Open(o)), t0);
    f.handle(Event::Message(Message::Keepalive), t0);
    let a = f.handle(
        Event::SetRoutes {
            generation: 1,
            routes: routes(&["203.0.113.10", "2001:db8:ffff::10"]),
        },
        t0,
    );
    assert_eq!(sent_updates(&a).len(), 1);
    assert_eq!(f.unannounceable(), routes(&["2001:db8:ffff::10"]));

    let mut c = cfg();
    c.next_hop6 = None;
    let (mut f, _) = established(c, 65001, t0);
    f.handle(
        Event::SetRoutes {
            generation: 1,
            routes: routes(&["2001:db8:ffff::10"]),
        },
        t0,
    );
    assert_eq!(f.unannounceable(), routes(&["2001:db8:ffff::10"]));
}

#[test]
fn route_refresh_resends_the_family() {
    let t0 = Instant::now();
    let (mut f, _) = established(cfg(), 65001, t0);
    f.handle(
        Event::SetRoutes {
            generation: 1,
            routes: routes(&["203.0.113.10", "2001:db8:ffff::10"]),
        },
        t0,
    );
    let a = f.handle(
        Event::Message(Message::RouteRefresh {
            afi: Afi::Ipv6,
            safi: Safi::Unicast,
        }),
        t0,
    );
    let ups = sent_updates(&a);
    assert_eq!(ups.len(), 1);
    assert!(matches!(
        &ups[0].attributes[..],
        [_, _, Attribute::MpReach { .. }]
    ));
}

/// Feeds the OPEN `open_hex` (a whole message, header included) to a machine
/// in OpenSent and returns the bytes it sends back.
fn reply_to_open_bytes(open_hex: &str) -> Vec<u8> {
    let t0 = Instant::now();
    let mut f = Fsm::new(cfg());
    f.handle(Event::Start, t0);
    f.handle(Event::TcpConnected, t0);
    let wire: Vec<u8> = (0..open_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&open_hex[i..i + 2], 16).expect("hex"))
        .collect();
    let (m, used) = crate::bgp::codec::decode(&wire, f.codec())
        .expect("a well-formed OPEN")
        .expect("complete");
    assert_eq!(used, wire.len());
    let a = f.handle(Event::Message(m), t0);
    assert_eq!(a.last(), Some(&Action::Close), "{a:?}");
    assert_eq!(f.state(), State::Idle);
    a.iter()
        .filter_map(|x| match x {
            Action::Send(m) => Some(m.encode(f.codec()).expect("encodes")),
            _ => None,
        })
        .flatten()
        .collect()
}

const MARKER: &str = "ffffffffffffffffffffffffffffffff";

#[test]
fn peer_as_zero_is_refused_with_bad_peer_as() {
    // NOTIFICATION, length 21: OPEN Message Error (2), Bad Peer AS (2).
    let bad_peer_as = format!("{MARKER}0015030202");
    // My AS 0, no capabilities.
    let a = reply_to_open_bytes(&format!("{MARKER}001d01040000005ac000020200"));
    assert_eq!(hex_of(&a), bad_peer_as);
    // My AS AS_TRANS, 4-octet AS capability 0 (RFC 6793 + RFC 7607).
    let a = reply_to_open_bytes(&format!(
        "{MARKER}002501045ba0005ac0000202080206410400000000"
    ));
    assert_eq!(hex_of(&a), bad_peer_as);
}

#[test]
fn peer_with_our_identifier_is_refused_on_ebgp_too() {
    // AS 65001 (eBGP) with BGP identifier 192.0.2.1, ours.
    let a = reply_to_open_bytes(&format!("{MARKER}001d0104fde9005ac000020100"));
    // OPEN Message Error (2), Bad BGP Identifier (3).
    assert_eq!(hex_of(&a), format!("{MARKER}0015030203"));
    // The same OPEN with the peer's own identifier is accepted: a KEEPALIVE.
    let t0 = Instant::now();
    let mut f = Fsm::new(cfg());
    f.handle(Event::Start, t0);
    f.handle(Event::TcpConnected, t0);
    let wire = format!("{MARKER}001d0104fde9005ac000020200");
    let wire: Vec<u8> = (0..wire.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&wire[i..i + 2], 16).expect("hex"))
        .collect();
    let (m, _) = crate::bgp::codec::decode(&wire, f.codec())
        .expect("valid")
        .expect("complete");
    assert_eq!(
        f.handle(Event::Message(m), t0),
        vec![Action::Send(Message::Keepalive)]
    );
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Attributes whose UPDATE cannot be encoded (the announcer refuses such a
/// configuration, so this is the bug path): nothing partial is sent, the
/// session ends with Cease and the error is the session's.
#[test]
fn updates_that_cannot_be_encoded_end_the_session() {
    let t0 = Instant::now();
    let (mut f, _) = established(cfg(), 65001, t0);
    f.handle(
        Event::SetRoutes {
            generation: 1,
            routes: routes(&["203.0.113.10"]),
        },
        t0,
    );
    let a = f.handle(
        Event::SetAttributes {
            communities: (0..1100).collect(),
            med: None,
            local_pref: None,
        },
        t0,
    );
    assert_eq!(
        a,
        vec![
            Action::Send(Message::Notification(Notification::new((6, 0)))),
            Action::Close
        ]
    );
    assert_eq!(f.state(), State::Idle);
    assert!(matches!(
        f.last_error(),
        Some(SessionError::Encode(EncodeError::NoRoomForNlri { .. }))
    ));
    assert!(f.retry_at().is_some(), "retried like any failure");

    // A message the peer task could not encode ends it the same way.
    let (mut f, _) = established(cfg(), 65001, t0);
    let e = EncodeError::NextHopTooLong { len: 300 };
    let a = f.handle(Event::EncodeError(e.clone()), t0);
    assert_eq!(a.last(), Some(&Action::Close));
    assert_eq!(f.last_error(), Some(&SessionError::Encode(e)));
}
