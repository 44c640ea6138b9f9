//! The monitor against real servers on loopback: transitions and their reasons,
//! replacing the set of checks, deduplication, spreading and shutdown.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::Http;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, timeout};
use vc5_health::{
    Applied, CheckKind, CheckSpec, CheckState, CheckStatus, Event, HttpCheck, Monitor,
    MonitorError, Transition,
};

const INTERVAL: Duration = Duration::from_millis(150);
/// Long enough that nothing in these tests times out on a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long a test waits for an event before declaring it missing.
const PATIENCE: Duration = Duration::from_secs(10);

fn http(target: SocketAddr) -> CheckSpec {
    CheckSpec::http(target)
        .with_timing(INTERVAL, TIMEOUT)
        .with_rise_fall(2, 2)
}

fn tcp(target: SocketAddr) -> CheckSpec {
    CheckSpec::tcp(target)
        .with_timing(INTERVAL, TIMEOUT)
        .with_rise_fall(2, 2)
}

/// The next transition, skipping nothing: any other event is a test failure.
async fn transition(
    events: &mut UnboundedReceiver<Event<&'static str>>,
) -> Transition<&'static str> {
    match timeout(PATIENCE, events.recv()).await {
        Ok(Some(Event::Transition(t))) => t,
        other => panic!("expected a transition, got {other:?}"),
    }
}

/// Asserts no event arrives for a while.
async fn quiet(events: &mut UnboundedReceiver<Event<&'static str>>, wait: Duration) {
    if let Ok(event) = timeout(wait, events.recv()).await {
        panic!("expected no event, got {event:?}");
    }
}

async fn status(
    monitor: &Monitor<&'static str>,
) -> BTreeMap<&'static str, CheckStatus<&'static str>> {
    monitor
        .status()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s))
        .collect()
}

#[tokio::test]
async fn transitions_are_delivered_with_reasons_and_hysteresis() {
    let server = common::http_server("127.0.0.1", Http::Status(200)).await;
    let (monitor, mut events) = Monitor::start();
    monitor
        .set_checks([("web", http(server.addr))])
        .await
        .unwrap();

    // The first result decides at once: no `rise` passes needed.
    let first = transition(&mut events).await;
    assert_eq!(
        (first.id, first.from, first.to),
        ("web", CheckState::Unknown, CheckState::Passing)
    );
    assert_eq!(first.reason(), None);
    assert!(first.outcome.as_ref().is_some_and(|o| o.passed()));

    // Failing takes `fall` (2) consecutive failures, so at least one interval.
    server.set(Http::Status(503));
    let broke = Instant::now();
    let down = transition(&mut events).await;
    assert_eq!(
        (down.from, down.to),
        (CheckState::Passing, CheckState::Failing)
    );
    assert_eq!(down.reason().as_deref(), Some("HTTP 503"));
    assert!(
        broke.elapsed() >= INTERVAL - Duration::from_millis(20),
        "{:?}",
        broke.elapsed()
    );
    let now = status(&monitor).await;
    let web = &now["web"];
    assert_eq!(web.state, CheckState::Failing);
    assert!(web.runs >= 3 && web.passes >= 1, "{web:?}");
    assert_eq!(
        web.last
            .as_ref()
            .and_then(|o| o.failure())
            .map(ToString::to_string)
            .as_deref(),
        Some("HTTP 503")
    );
    let (changed, _) = web.changed.unwrap();
    assert!(changed >= broke);

    // A different failure is not a transition; the reason is in the status.
    server.set(Http::Reset);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = status(&monitor).await;
        let reason = now["web"]
            .last
            .as_ref()
            .and_then(|o| o.failure())
            .map(ToString::to_string);
        if reason.as_deref() == Some("connection reset") {
            break;
        }
        assert!(Instant::now() < deadline, "never saw the reset: {reason:?}");
        tokio::time::sleep(INTERVAL / 3).await;
    }

    server.set(Http::Status(200));
    let up = transition(&mut events).await;
    assert_eq!((up.from, up.to), (CheckState::Failing, CheckState::Passing));
    assert_eq!(up.reason(), None);
    // The latest failure stays on record after the recovery.
    let web = &status(&monitor).await["web"];
    assert!(web.last.as_ref().is_some_and(|o| o.passed()));
    assert_eq!(
        web.last_failure
            .as_ref()
            .and_then(|o| o.failure())
            .map(ToString::to_string)
            .as_deref(),
        Some("connection reset")
    );
    monitor.shutdown().await;
}

#[tokio::test]
async fn the_first_result_decides_whatever_rise_and_fall() {
    // With hysteresis on the first result, neither check could change state
    // within this test: 100 runs take 15 s.
    let server = common::http_server("127.0.0.1", Http::Status(200)).await;
    let closed = common::closed_port("127.0.0.1").await;
    let (monitor, mut events) = Monitor::start();
    monitor
        .set_checks([
            ("up", tcp(server.addr).with_rise_fall(100, 100)),
            ("down", tcp(closed).with_rise_fall(100, 100)),
        ])
        .await
        .unwrap();
    let mut seen = BTreeMap::new();
    for _ in 0..2 {
        let t = transition(&mut events).await;
        assert_eq!(t.from, CheckState::Unknown);
        seen.insert(t.id, (t.to, t.reason()));
    }
    assert_eq!(
        seen,
        BTreeMap::from([
            (
                "down",
                (CheckState::Failing, Some("connection refused".to_owned()))
            ),
            ("up", (CheckState::Passing, None)),
        ])
    );
    monitor.shutdown().await;
}

#[tokio::test]
async fn replacing_the_set_keeps_removes_and_adds() {
    let a = common::http_server("127.0.0.1", Http::Hang).await;
    let b = common::http_server("127.0.0.1", Http::Hang).await;
    let c = common::http_server("127.0.0.1", Http::Hang).await;
    let (monitor, mut events) = Monitor::start();

    let applied = monitor
        .set_checks([("a", tcp(a.addr)), ("b", tcp(b.addr))])
        .await
        .unwrap();
    assert_eq!(
        applied,
        Applied {
            started: 2,
            kept: 0,
            stopped: 0,
            ids: 2
        }
    );
    let mut up = BTreeSet::new();
    for _ in 0..2 {
        let t = transition(&mut events).await;
        assert_eq!(t.to, CheckState::Passing);
        up.insert(t.id);
    }
    assert_eq!(up, BTreeSet::from(["a", "b"]));
    // Let b run a few times so that a restart would show in its counter.
    tokio::time::sleep(INTERVAL * 3).await;
    let b_runs = status(&monitor).await["b"].runs;
    assert!(b_runs >= 2);

    let applied = monitor
        .set_checks([("b", tcp(b.addr)), ("c", tcp(c.addr))])
        .await
        .unwrap();
    assert_eq!(
        applied,
        Applied {
            started: 1,
            kept: 1,
            stopped: 1,
            ids: 2
        }
    );
    let now = status(&monitor).await;
    assert_eq!(now.keys().copied().collect::<Vec<_>>(), ["b", "c"]);
    assert_eq!(now["b"].state, CheckState::Passing);
    assert!(now["b"].runs >= b_runs, "the kept check was restarted");
    assert_eq!(now["c"].state, CheckState::Unknown);
    let t = transition(&mut events).await;
    assert_eq!(
        (t.id, t.from, t.to),
        ("c", CheckState::Unknown, CheckState::Passing)
    );

    // The removed check no longer runs (one run may have been in flight).
    let a_hits = a.seen.hits();
    tokio::time::sleep(INTERVAL * 4).await;
    assert!(a.seen.hits() <= a_hits + 1, "removed check still runs");
    assert!(c.seen.hits() >= 3);

    // Changing an id's spec starts a new check that keeps the id's state: no
    // transition, no Unknown window.
    let applied = monitor
        .set_checks([("b", tcp(b.addr).with_rise_fall(3, 3)), ("c", tcp(c.addr))])
        .await
        .unwrap();
    assert_eq!(
        applied,
        Applied {
            started: 1,
            kept: 1,
            stopped: 1,
            ids: 2
        }
    );
    let now = status(&monitor).await;
    assert_eq!(now["b"].state, CheckState::Passing);
    assert_eq!(now["b"].spec.rise, 3);
    assert_eq!(now["b"].runs, 0);
    quiet(&mut events, INTERVAL * 3).await;
    assert!(status(&monitor).await["b"].runs >= 1);

    // The new check still fails through hysteresis from the carried state.
    let b_addr = b.addr;
    drop(b);
    let t = transition(&mut events).await;
    assert_eq!(
        (t.id, t.from, t.to),
        ("b", CheckState::Passing, CheckState::Failing)
    );
    assert_eq!(t.reason().as_deref(), Some("connection refused"));
    assert!(status(&monitor).await["b"].runs >= 3);

    // Changing what an id's check probes (here tcp to http, on a server that
    // never answers HTTP) starts afresh: the old state says nothing about the
    // new check, whose first result decides.
    assert_eq!(status(&monitor).await["c"].state, CheckState::Passing);
    let applied = monitor
        .set_checks([("b", tcp(b_addr).with_rise_fall(3, 3)), ("c", http(c.addr))])
        .await
        .unwrap();
    assert_eq!(
        applied,
        Applied {
            started: 1,
            kept: 1,
            stopped: 1,
            ids: 2
        }
    );
    let t = transition(&mut events).await;
    assert_eq!(
        (t.id, t.from, t.to),
        ("c", CheckState::Passing, CheckState::Unknown)
    );
    assert_eq!(status(&monitor).await["b"].state, CheckState::Failing);

    // An empty set stops everything.
    let applied = monitor.set_checks([]).await.unwrap();
    assert_eq!(
        applied,
        Applied {
            started: 0,
            kept: 0,
            stopped: 2,
            ids: 0
        }
    );
    assert!(status(&monitor).await.is_empty());
    monitor.shutdown().await;
}

#[tokio::test]
async fn identical_checks_run_once() {
    let server = common::http_server("127.0.0.1", Http::Status(200)).await;
    let (monitor, mut events) = Monitor::start();
    let applied = monitor
        .set_checks([
            ("svc1/real", http(server.addr)),
            ("svc2/real", http(server.addr)),
        ])
        .await
        .unwrap();
    assert_eq!(
        applied,
        Applied {
            started: 1,
            kept: 0,
            stopped: 0,
            ids: 2
        }
    );

    // Both ids hear about the one check's first result.
    let ids: BTreeSet<_> = [transition(&mut events).await, transition(&mut events).await]
        .into_iter()
        .map(|t| {
            assert_eq!(t.to, CheckState::Passing);
            t.id
        })
        .collect();
    assert_eq!(ids, BTreeSet::from(["svc1/real", "svc2/real"]));

    tokio::time::sleep(INTERVAL * 4).await;
    let now = status(&monitor).await;
    let runs = now["svc1/real"].runs;
    assert_eq!(runs, now["svc2/real"].runs);
    // The server saw one request per run, not two.
    let hits = server.seen.hits() as u64;
    assert!(hits <= runs + 1, "{hits} requests for {runs} runs");

    // A third id with the same spec joins the running check and learns its state
    // at once; a different spec on the same target is another check.
    let other = CheckSpec::new(
        server.addr,
        CheckKind::Http(HttpCheck {
            path: "/other".into(),
            ..HttpCheck::default()
        }),
    )
    .with_timing(INTERVAL, TIMEOUT);
    let applied = monitor
        .set_checks([
            ("svc1/real", http(server.addr)),
            ("svc2/real", http(server.addr)),
            ("svc3/real", http(server.addr)),
            ("svc4/real", other),
        ])
        .await
        .unwrap();
    assert_eq!(
        applied,
        Applied {
            started: 1,
            kept: 1,
            stopped: 0,
            ids: 4
        }
    );
    let joined = transition(&mut events).await;
    assert_eq!(
        (joined.id, joined.from, joined.to),
        ("svc3/real", CheckState::Unknown, CheckState::Passing)
    );
    assert!(joined.outcome.is_some());
    let t = transition(&mut events).await;
    assert_eq!((t.id, t.to), ("svc4/real", CheckState::Passing));
    monitor.shutdown().await;
}

#[tokio::test]
async fn snapshots_arrive_in_the_event_stream() {
    let server = common::http_server("127.0.0.1", Http::Status(200)).await;
    let closed = common::closed_port("127.0.0.1").await;
    let (monitor, mut events) = Monitor::start();
    monitor
        .set_checks([("up", tcp(server.addr)), ("down", tcp(closed))])
        .await
        .unwrap();
    for _ in 0..2 {
        transition(&mut events).await;
    }
    monitor.request_snapshot().unwrap();
    let snapshot = match timeout(PATIENCE, events.recv()).await {
        Ok(Some(Event::Snapshot(all))) => all,
        other => panic!("expected a snapshot, got {other:?}"),
    };
    let states: BTreeMap<_, _> = snapshot.iter().map(|s| (s.id, s.state)).collect();
    assert_eq!(
        states,
        BTreeMap::from([("down", CheckState::Failing), ("up", CheckState::Passing)])
    );
    let down = snapshot.iter().find(|s| s.id == "down").unwrap();
    assert_eq!(
        down.last
            .as_ref()
            .and_then(|o| o.failure())
            .map(ToString::to_string)
            .as_deref(),
        Some("connection refused")
    );
    monitor.shutdown().await;
}

#[tokio::test]
async fn an_invalid_set_changes_nothing() {
    let server = common::http_server("127.0.0.1", Http::Status(200)).await;
    let (monitor, _events) = Monitor::start();
    monitor
        .set_checks([("good", http(server.addr))])
        .await
        .unwrap();
    let bad = CheckSpec::new(
        server.addr,
        CheckKind::Http(HttpCheck {
            path: "no-slash".into(),
            ..HttpCheck::default()
        }),
    );
    let err = monitor
        .set_checks([("other", tcp(server.addr)), ("bad", bad)])
        .await
        .unwrap_err();
    assert!(matches!(err, MonitorError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("invalid path"), "{err}");
    let now = status(&monitor).await;
    assert_eq!(now.keys().copied().collect::<Vec<_>>(), ["good"]);
    monitor.shutdown().await;
}

#[tokio::test]
async fn start_times_are_spread_over_the_interval() {
    // 50 distinct checks (different paths) against one server, interval 1 s:
    // their first requests must not all come at once.
    let server = common::http_server("127.0.0.1", Http::Status(200)).await;
    let (monitor, _events) = Monitor::start();
    let interval = Duration::from_secs(1);
    let ids: Vec<&'static str> = (0..50).map(|i| &*format!("c{i}").leak()).collect();
    let checks = ids.iter().enumerate().map(|(i, id)| {
        let spec = CheckSpec::new(
            server.addr,
            CheckKind::Http(HttpCheck {
                path: format!("/{i}"),
                ..HttpCheck::default()
            }),
        )
        .with_timing(interval, TIMEOUT);
        (*id, spec)
    });
    let started = Instant::now();
    monitor.set_checks(checks).await.unwrap();
    let deadline = started + PATIENCE;
    while server.seen.requests.lock().unwrap().len() < 50 {
        assert!(Instant::now() < deadline, "not every check ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let times: Vec<Instant> = server.seen.requests.lock().unwrap()[..50]
        .iter()
        .map(|r| r.0)
        .collect();
    let first = *times.iter().min().unwrap();
    let last = *times.iter().max().unwrap();
    // Uniform over 1 s, 50 starts span well over half of it (the chance they
    // all fall within 0.5 s is about 50 / 2^49).
    assert!(
        last - first >= Duration::from_millis(500),
        "spread {:?}",
        last - first
    );
    assert!(last - started <= interval + Duration::from_millis(500));
    monitor.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_every_check() {
    let server = common::http_server("127.0.0.1", Http::Status(200)).await;
    let (monitor, mut events) = Monitor::start();
    monitor
        .set_checks([("web", http(server.addr))])
        .await
        .unwrap();
    transition(&mut events).await;
    let other_handle = monitor.clone();
    monitor.shutdown().await;
    let hits = server.seen.hits();
    tokio::time::sleep(INTERVAL * 3).await;
    assert_eq!(server.seen.hits(), hits);
    assert_eq!(
        other_handle.set_checks([("web", http(server.addr))]).await,
        Err(MonitorError::Stopped)
    );
    assert!(other_handle.request_snapshot().is_err());
    // The event stream ends with the monitor.
    assert!(timeout(PATIENCE, events.recv()).await.unwrap().is_none());
}

#[tokio::test]
async fn dropping_every_handle_stops_the_checks() {
    let server = common::http_server("127.0.0.1", Http::Status(200)).await;
    let (monitor, mut events) = Monitor::start();
    monitor
        .set_checks([("web", http(server.addr))])
        .await
        .unwrap();
    transition(&mut events).await;
    drop(monitor);
    assert!(timeout(PATIENCE, events.recv()).await.unwrap().is_none());
    let hits = server.seen.hits();
    tokio::time::sleep(INTERVAL * 3).await;
    assert_eq!(server.seen.hits(), hits);
}

/// Every run is visible through the transition's `latest` cell, not only the
/// runs that change the state: a steady check's last-run time and latency move
/// on with no event at all (daemon defect: "22s ago" with a 2 s interval).
#[tokio::test]
async fn the_latest_run_is_visible_without_a_transition() {
    let server = common::http_server("127.0.0.1", Http::Status(200)).await;
    let (monitor, mut events) = Monitor::start();
    monitor
        .set_checks([("web", http(server.addr))])
        .await
        .unwrap();
    let first = transition(&mut events).await;
    assert_eq!(first.to, CheckState::Passing);
    let at_transition = first.outcome.clone().unwrap();
    let latest = first.latest.clone();

    // Several intervals of a steady, passing check: no event, yet the cell has
    // the newest run.
    quiet(&mut events, INTERVAL * 4).await;
    let now = latest.get().expect("a run");
    assert!(now.passed());
    assert!(
        now.at >= at_transition.at + INTERVAL * 2,
        "latest run {:?} after the transition's",
        now.at - at_transition.at
    );
    assert!(now.wall > at_transition.wall);
    assert!(server.seen.hits() >= 4, "{} runs", server.seen.hits());

    // The status and the snapshot hand out the same cell.
    let st = status(&monitor).await;
    assert!(Arc::ptr_eq(&st["web"].latest, &latest));
    monitor.shutdown().await;
}
