//! Every check type against real servers on loopback, well-behaved and not.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{Dns, Http};
use vc5_health::{
    CaCerts, CheckKind, CheckSpec, DnsCheck, DnsTransport, HttpCheck, Outcome, Prober, RecordType,
    TlsVerify,
};

const PATIENT: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(300);

/// The peer address of the `n`th connection the server saw, waiting for the
/// server's accept loop, which may run after the check has already finished.
async fn peer_ip(seen: &common::Seen, n: usize) -> IpAddr {
    for _ in 0..500 {
        if let Some(peer) = seen.peers.lock().unwrap().get(n - 1) {
            return peer.ip();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server never saw connection {n}");
}

async fn run(spec: CheckSpec) -> Outcome {
    Prober::new(Arc::new(spec)).expect("valid spec").run().await
}

fn reason(outcome: &Outcome) -> String {
    match &outcome.result {
        Ok(()) => "passed".to_owned(),
        Err(failure) => failure.to_string(),
    }
}

fn http(target: SocketAddr, timeout: Duration) -> CheckSpec {
    CheckSpec::http(target).with_timing(timeout * 2, timeout)
}

/// Asserts a run failed by timing out, and took the timeout, not much more.
fn assert_timed_out(outcome: &Outcome, timeout: Duration, phase: &str) {
    let text = reason(outcome);
    let millis = timeout.as_millis();
    assert_eq!(text, format!("timeout after {millis}ms ({phase})"));
    assert!(outcome.latency >= timeout, "{:?}", outcome.latency);
    assert!(
        outcome.latency < timeout + Duration::from_millis(500),
        "a timed-out run must end at the timeout, took {:?}",
        outcome.latency
    );
}

#[tokio::test]
async fn http_good_server_passes() {
    let server = common::http_server("127.0.0.1", Http::Status(200)).await;
    let outcome = run(http(server.addr, PATIENT)).await;
    assert_eq!(reason(&outcome), "passed");
    assert!(outcome.latency < PATIENT);
    // The request went where the spec says.
    let requests = server.seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].1, "/");
}

#[tokio::test]
async fn http_over_ipv6_passes() {
    let server = common::http_server("::1", Http::Status(200)).await;
    assert_eq!(reason(&run(http(server.addr, PATIENT)).await), "passed");
}

#[tokio::test]
async fn http_503_fails_with_its_status_unless_expected() {
    let server = common::http_server("127.0.0.1", Http::Status(503)).await;
    assert_eq!(reason(&run(http(server.addr, PATIENT)).await), "HTTP 503");

    let mut spec = http(server.addr, PATIENT);
    spec.kind = CheckKind::Http(HttpCheck {
        expect: vec![200, 503],
        path: "/alive".into(),
        ..HttpCheck::default()
    });
    assert_eq!(reason(&run(spec).await), "passed");
    assert_eq!(server.seen.requests.lock().unwrap()[1].1, "/alive");
}

#[tokio::test]
async fn http_hanging_server_times_out() {
    let server = common::http_server("127.0.0.1", Http::Hang).await;
    let outcome = run(http(server.addr, SHORT)).await;
    assert_timed_out(&outcome, SHORT, "waiting for the response");
}

#[tokio::test]
async fn http_server_that_sends_half_a_head_times_out() {
    let server = common::http_server("127.0.0.1", Http::Partial).await;
    let outcome = run(http(server.addr, SHORT)).await;
    assert_timed_out(&outcome, SHORT, "waiting for the response");
}

#[tokio::test]
async fn http_endless_head_is_cut_off() {
    let server = common::http_server("127.0.0.1", Http::Endless).await;
    let outcome = run(http(server.addr, PATIENT)).await;
    let text = reason(&outcome);
    assert!(
        text.starts_with(
            "garbage response: response head too long: \"HTTP/1.1 200 OK\\r\\nX-Filler"
        ),
        "{text}"
    );
    assert!(outcome.latency < Duration::from_secs(1));
}

#[tokio::test]
async fn http_interim_responses_are_skipped() {
    let server = common::http_server("127.0.0.1", Http::Interim(503)).await;
    assert_eq!(reason(&run(http(server.addr, PATIENT)).await), "HTTP 503");
    server.set(Http::Interim(200));
    assert_eq!(reason(&run(http(server.addr, PATIENT)).await), "passed");
}

#[tokio::test]
async fn http_reset_is_reported() {
    let server = common::http_server("127.0.0.1", Http::Reset).await;
    let outcome = run(http(server.addr, PATIENT)).await;
    assert_eq!(reason(&outcome), "connection reset");
    assert!(outcome.latency < Duration::from_secs(1));
}

#[tokio::test]
async fn http_slow_server_passes_within_the_timeout_and_fails_beyond_it() {
    let slow = common::http_server("127.0.0.1", Http::Slow(Duration::from_millis(150), 200)).await;
    let outcome = run(http(slow.addr, Duration::from_secs(3))).await;
    assert_eq!(reason(&outcome), "passed");
    assert!(outcome.latency >= Duration::from_millis(150));

    let slower = common::http_server("127.0.0.1", Http::Slow(Duration::from_secs(2), 200)).await;
    let outcome = run(http(slower.addr, SHORT)).await;
    assert_timed_out(&outcome, SHORT, "waiting for the response");
}

#[tokio::test]
async fn http_garbage_is_reported_at_once() {
    let server = common::http_server("127.0.0.1", Http::Garbage).await;
    let outcome = run(http(server.addr, PATIENT)).await;
    assert_eq!(
        reason(&outcome),
        "garbage response: not HTTP: \"SSH-2.0-OpenSSH_9.2p1 Debian-2\\r\\n\""
    );
    // The server keeps the connection open: the verdict came from the bytes.
    assert!(outcome.latency < Duration::from_secs(1));
}

#[tokio::test]
async fn http_server_closing_early_is_reported() {
    let server = common::http_server("127.0.0.1", Http::CloseEarly).await;
    let outcome = run(http(server.addr, PATIENT)).await;
    assert_eq!(reason(&outcome), "connection closed without a response");
}

#[tokio::test]
async fn http_to_a_closed_port_is_refused() {
    let target = common::closed_port("127.0.0.1").await;
    assert_eq!(
        reason(&run(http(target, PATIENT)).await),
        "connection refused"
    );
}

fn https(target: SocketAddr, verify: TlsVerify, host: Option<&str>) -> CheckSpec {
    CheckSpec::new(
        target,
        CheckKind::Https {
            http: HttpCheck {
                host: host.map(str::to_owned),
                ..HttpCheck::default()
            },
            verify,
        },
    )
    .with_timing(Duration::from_secs(10), PATIENT)
}

#[tokio::test]
async fn https_self_signed_passes_without_verification_and_fails_with_it() {
    let identity = common::self_signed();
    let server = common::https_server("127.0.0.1", Http::Status(200), &identity).await;

    assert_eq!(
        reason(&run(https(server.addr, TlsVerify::None, None)).await),
        "passed"
    );
    assert_eq!(
        reason(&run(https(server.addr, TlsVerify::None, Some("localhost"))).await),
        "passed"
    );

    let refused = reason(&run(https(server.addr, TlsVerify::WebPki, Some("localhost"))).await);
    assert!(
        refused.starts_with("TLS handshake: invalid peer certificate"),
        "{refused}"
    );
    assert!(refused.contains("UnknownIssuer"), "{refused}");

    // Trusting the certificate itself makes it verify, by name or by address.
    let ca = CaCerts::from_pem(identity.ca_pem.as_bytes()).unwrap();
    assert_eq!(
        reason(
            &run(https(
                server.addr,
                TlsVerify::Ca(ca.clone()),
                Some("localhost")
            ))
            .await
        ),
        "passed"
    );
    assert_eq!(
        reason(&run(https(server.addr, TlsVerify::Ca(ca), None)).await),
        "passed"
    );
}

#[tokio::test]
async fn https_with_a_private_ca_checks_chain_and_name() {
    let identity = common::ca_issued("vc5 test CA");
    let server = common::https_server("127.0.0.1", Http::Status(200), &identity).await;
    let ca = CaCerts::from_pem(identity.ca_pem.as_bytes()).unwrap();
    assert_eq!(
        reason(
            &run(https(
                server.addr,
                TlsVerify::Ca(ca.clone()),
                Some("localhost:443")
            ))
            .await
        ),
        "passed"
    );
    let wrong_name = reason(
        &run(https(
            server.addr,
            TlsVerify::Ca(ca),
            Some("www.example.test"),
        ))
        .await,
    );
    assert!(
        wrong_name.starts_with("TLS handshake: invalid peer certificate")
            && wrong_name.contains("not valid for name"),
        "{wrong_name}"
    );
    // Another CA's certificate does not vouch for this one.
    let other = CaCerts::from_pem(common::ca_issued("another CA").ca_pem.as_bytes()).unwrap();
    let untrusted = reason(&run(https(server.addr, TlsVerify::Ca(other), Some("localhost"))).await);
    assert!(untrusted.contains("UnknownIssuer"), "{untrusted}");
}

#[tokio::test]
async fn https_reports_status_and_non_tls_peers() {
    let identity = common::self_signed();
    let server = common::https_server("127.0.0.1", Http::Status(503), &identity).await;
    assert_eq!(
        reason(&run(https(server.addr, TlsVerify::None, None)).await),
        "HTTP 503"
    );

    // Something else than TLS on the https port: the handshake fails, quickly.
    let plain = common::http_server("127.0.0.1", Http::Garbage).await;
    let outcome = run(https(plain.addr, TlsVerify::None, None)).await;
    let text = reason(&outcome);
    assert!(
        text.starts_with("TLS handshake: received corrupt message"),
        "{text}"
    );
    assert!(outcome.latency < Duration::from_secs(2));

    // A server that accepts and never speaks TLS: the timeout says where it hung.
    let hang = common::http_server("127.0.0.1", Http::Hang).await;
    let mut spec = https(hang.addr, TlsVerify::None, None);
    spec.timeout = SHORT;
    assert_timed_out(&run(spec).await, SHORT, "in the TLS handshake");
}

fn dns(target: SocketAddr, transport: DnsTransport, rcode: u16, timeout: Duration) -> CheckSpec {
    CheckSpec::new(
        target,
        CheckKind::Dns(DnsCheck {
            query: "example.com".into(),
            qtype: RecordType::A,
            transport,
            rcode: rcode.into(),
        }),
    )
    .with_timing(timeout * 2, timeout)
}

#[tokio::test]
async fn dns_over_udp() {
    use DnsTransport::Udp;
    let ok = common::dns_udp_server("127.0.0.1", Dns::Rcode(0)).await;
    assert_eq!(reason(&run(dns(ok.addr, Udp, 0, PATIENT)).await), "passed");
    // Expecting something else than what comes back fails, with what came back.
    assert_eq!(
        reason(&run(dns(ok.addr, Udp, 3, PATIENT)).await),
        "DNS rcode NOERROR"
    );

    let servfail = common::dns_udp_server("127.0.0.1", Dns::Rcode(2)).await;
    assert_eq!(
        reason(&run(dns(servfail.addr, Udp, 0, PATIENT)).await),
        "DNS rcode SERVFAIL"
    );

    let nxdomain = common::dns_udp_server("127.0.0.1", Dns::Rcode(3)).await;
    assert_eq!(
        reason(&run(dns(nxdomain.addr, Udp, 3, PATIENT)).await),
        "passed"
    );

    let garbage = common::dns_udp_server("127.0.0.1", Dns::Garbage).await;
    let outcome = run(dns(garbage.addr, Udp, 0, PATIENT)).await;
    let text = reason(&outcome);
    assert!(
        text.starts_with("garbage response: not a DNS message")
            && text.ends_with("\"this is not DNS\""),
        "{text}"
    );
    assert!(outcome.latency < Duration::from_secs(1));

    let silent = common::dns_udp_server("127.0.0.1", Dns::Silent).await;
    assert_timed_out(
        &run(dns(silent.addr, Udp, 0, SHORT)).await,
        SHORT,
        "waiting for the response",
    );
    assert_eq!(silent.seen.hits(), 1);

    // Nobody on the port: the ICMP port unreachable is reported, not waited out.
    let closed = common::closed_port("127.0.0.1").await;
    let outcome = run(dns(closed, Udp, 0, PATIENT)).await;
    assert_eq!(reason(&outcome), "connection refused");
    assert!(outcome.latency < Duration::from_secs(1));
}

#[tokio::test]
async fn dns_over_tcp() {
    use DnsTransport::Tcp;
    let ok = common::dns_tcp_server("127.0.0.1", Dns::Rcode(0)).await;
    // The server keeps the connection open after answering: the length prefix,
    // not the close, ends the answer.
    let outcome = run(dns(ok.addr, Tcp, 0, PATIENT)).await;
    assert_eq!(reason(&outcome), "passed");
    assert!(outcome.latency < Duration::from_secs(1));

    let servfail = common::dns_tcp_server("127.0.0.1", Dns::Rcode(2)).await;
    assert_eq!(
        reason(&run(dns(servfail.addr, Tcp, 0, PATIENT)).await),
        "DNS rcode SERVFAIL"
    );

    let garbage = common::dns_tcp_server("127.0.0.1", Dns::Garbage).await;
    let text = reason(&run(dns(garbage.addr, Tcp, 0, PATIENT)).await);
    assert!(
        text.starts_with("garbage response: not a DNS message"),
        "{text}"
    );

    let silent = common::dns_tcp_server("127.0.0.1", Dns::Silent).await;
    assert_timed_out(
        &run(dns(silent.addr, Tcp, 0, SHORT)).await,
        SHORT,
        "waiting for the response",
    );

    let closed = common::closed_port("127.0.0.1").await;
    assert_eq!(
        reason(&run(dns(closed, Tcp, 0, PATIENT)).await),
        "connection refused"
    );
}

#[tokio::test]
async fn dns_default_query_is_root_ns() {
    let ok = common::dns_udp_server("127.0.0.1", Dns::Rcode(0)).await;
    assert_eq!(reason(&run(CheckSpec::dns(ok.addr)).await), "passed");
}

#[tokio::test]
async fn tcp_open_port_passes_and_closed_port_is_refused() {
    let server = common::http_server("127.0.0.1", Http::Hang).await;
    let outcome = run(CheckSpec::tcp(server.addr)).await;
    assert_eq!(reason(&outcome), "passed");
    let closed = common::closed_port("127.0.0.1").await;
    assert_eq!(
        reason(&run(CheckSpec::tcp(closed)).await),
        "connection refused"
    );
}

#[tokio::test]
async fn checks_leave_from_the_source_address() {
    let source: IpAddr = "127.0.0.2".parse().unwrap();

    let server = common::http_server("127.0.0.1", Http::Status(200)).await;
    assert_eq!(
        reason(&run(CheckSpec::tcp(server.addr).with_source(source)).await),
        "passed"
    );
    assert_eq!(peer_ip(&server.seen, 1).await, source);
    assert_eq!(
        reason(&run(http(server.addr, PATIENT).with_source(source)).await),
        "passed"
    );
    assert_eq!(peer_ip(&server.seen, 2).await, source);
    // Without a source, the kernel picks 127.0.0.1 for 127.0.0.1.
    assert_eq!(reason(&run(http(server.addr, PATIENT)).await), "passed");
    assert_eq!(peer_ip(&server.seen, 3).await, IpAddr::from([127, 0, 0, 1]));

    let udp = common::dns_udp_server("127.0.0.1", Dns::Rcode(0)).await;
    let spec = dns(udp.addr, DnsTransport::Udp, 0, PATIENT).with_source(source);
    assert_eq!(reason(&run(spec).await), "passed");
    assert_eq!(peer_ip(&udp.seen, 1).await, source);

    let tcp = common::dns_tcp_server("127.0.0.1", Dns::Rcode(0)).await;
    let spec = dns(tcp.addr, DnsTransport::Tcp, 0, PATIENT).with_source(source);
    assert_eq!(reason(&run(spec).await), "passed");
    assert_eq!(peer_ip(&tcp.seen, 1).await, source);

    // An IPv4 source does not apply to an IPv6 target: the kernel chooses.
    let v6 = common::http_server("::1", Http::Status(200)).await;
    assert_eq!(
        reason(&run(http(v6.addr, PATIENT).with_source(source)).await),
        "passed"
    );
}
