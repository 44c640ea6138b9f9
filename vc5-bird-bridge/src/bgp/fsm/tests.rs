//! State machine tests: every transition an active speaker takes.

use super::*;
use crate::bgp::codec::{Attribute, Capability, Update};

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
        a.contains(&Action::Send(Message::Notification(Notification::new(
            4, 0
        ))))
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
fn only_a_stable_session_resets_the_backoff() {
    let t0 = Instant::now();
    let (mut f, _) = established(cfg(), 65001, t0);
    // Dropped at once: the backoff keeps growing.
    f.handle(Event::TcpFailed("reset".into()), t0);
    assert_eq!(f.retry_at(), Some(t0 + Duration::from_secs(1)));
    let t1 = t0 + Duration::from_secs(1);
    f.expire(t1);
    f.handle(Event::TcpConnected, t1);
    f.handle(Event::Message(peer_open(65001, 0)), t1);
    f.handle(Event::Message(Message::Keepalive), t1);
    f.handle(Event::TcpFailed("reset".into()), t1);
    assert_eq!(f.retry_at(), Some(t1 + Duration::from_secs(2)));
    // Up for longer than STABLE_SESSION: back to the minimum.
    let t2 = t1 + Duration::from_secs(2);
    f.expire(t2);
    f.handle(Event::TcpConnected, t2);
    f.handle(Event::Message(peer_open(65001, 0)), t2);
    f.handle(Event::Message(Message::Keepalive), t2);
    let t3 = t2 + STABLE_SESSION;
    f.handle(Event::TcpFailed("reset".into()), t3);
    assert_eq!(f.retry_at(), Some(t3 + Duration::from_secs(1)));
}

#[test]
fn notification_from_peer_goes_idle_without_reply() {
    let t0 = Instant::now();
    let (mut f, _) = established(cfg(), 65001, t0);
    let n = Notification::new(6, 4);
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
            Action::Send(Message::Notification(Notification::new(2, 2))),
            Action::Close
        ]
    );
    assert!(matches!(f.last_error(), Some(SessionError::NotificationSent(n, _)) if n.subcode == 2));
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
        Action::Send(Message::Notification(Notification::new(2, 3)))
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
            Action::Send(Message::Notification(Notification::new(1, 1))),
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
        Action::Send(Message::Notification(Notification::new(5, 1)))
    );
    let (mut f, _) = established(cfg(), 65001, t0);
    let a = f.handle(Event::Message(peer_open(65001, 90)), t0);
    assert_eq!(
        a[0],
        Action::Send(Message::Notification(Notification::new(5, 3)))
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
        .retain(|c| !matches!(c, Capability::Multiprotocol { afi: 2, .. }));
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
        Event::Message(Message::RouteRefresh { afi: 2, safi: 1 }),
        t0,
    );
    let ups = sent_updates(&a);
    assert_eq!(ups.len(), 1);
    assert!(matches!(
        &ups[0].attributes[..],
        [_, _, Attribute::MpReach { .. }]
    ));
}
