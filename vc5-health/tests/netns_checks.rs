//! Checks whose sockets are made in a [`Netns`] (root needed): they reach what
//! listens inside the namespace, and the same checks from the host do not.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use vc5_health::{CheckSpec, DnsCheck, DnsTransport, Netns, Outcome, Prober};

fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root (network namespaces)");
}

async fn run(spec: CheckSpec) -> Outcome {
    let spec = spec.with_timing(Duration::from_secs(2), Duration::from_secs(1));
    Prober::new(Arc::new(spec)).expect("valid spec").run().await
}

fn reason(outcome: &Outcome) -> String {
    match &outcome.result {
        Ok(()) => "passed".to_owned(),
        Err(failure) => failure.to_string(),
    }
}

/// A port on 127.0.0.1 that nothing in the host's namespace uses, TCP or UDP:
/// bound and released, then checked to refuse a connection.
fn free_host_port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        drop(tcp);
        let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        return port;
    }
    panic!("no free port on the host's 127.0.0.1");
}

/// Servers on 127.0.0.1:`port` inside a namespace: HTTP over TCP (every
/// request gets `200 OK`; a bare connection is simply accepted) and a DNS
/// responder over UDP (every query gets NOERROR). Their sockets were made in
/// the namespace, so plain threads outside it serve them. Stopped and joined
/// on drop.
struct Servers {
    ns: Netns,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    fn start(ns: &Netns, port: u16) -> Servers {
        let (tcp, udp) = ns
            .run(move || {
                (
                    TcpListener::bind(("127.0.0.1", port)).unwrap(),
                    UdpSocket::bind(("127.0.0.1", port)).unwrap(),
                )
            })
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut servers = Servers {
            ns: ns.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stop: stop.clone(),
            threads: Vec::new(),
        };
        let halt = stop.clone();
        servers.threads.push(std::thread::spawn(move || {
            for stream in tcp.incoming() {
                if halt.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if !request.is_empty() {
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        }));
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        servers.threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, peer)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                if n < 12 {
                    continue;
                }
                // The query itself, as a response: QR set, RCODE 0 (NOERROR),
                // same id and question.
                let mut answer = buf[..n].to_vec();
                answer[2] |= 0x80;
                answer[3] &= 0xf0;
                let _ = udp.send_to(&answer, peer);
            }
        }));
        servers
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop (from inside, where the listener is).
        let addr = self.addr;
        let _ = self.ns.run(move || TcpStream::connect(addr).map(drop));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The namespace's TCP sockets in TIME_WAIT (state 06 in /proc/net/tcp{,6},
/// which shows the reading thread's namespace through /proc/thread-self).
fn time_waits(ns: &Netns) -> Vec<String> {
    ns.run(|| {
        ["tcp", "tcp6"]
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(format!("/proc/thread-self/net/{f}"))
                    .unwrap_or_default()
                    .lines()
                    .skip(1)
                    .filter(|l| l.split_whitespace().nth(3) == Some("06"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_from_the_namespace_reach_what_listens_there() {
    require_root();
    let ns = Netns::new().unwrap();
    let port = free_host_port();
    let servers = Servers::start(&ns, port);
    let target = servers.addr;
    let dns = |transport| {
        CheckSpec::new(
            target,
            vc5_health::CheckKind::Dns(DnsCheck {
                transport,
                ..DnsCheck::default()
            }),
        )
    };

    for spec in [
        CheckSpec::tcp(target),
        CheckSpec::http(target),
        dns(DnsTransport::Udp),
    ] {
        let inside = run(spec.clone().with_netns(ns.clone())).await;
        assert_eq!(reason(&inside), "passed", "{spec} in the namespace");
        // The host's 127.0.0.1:port has nobody, and a spec without a
        // namespace is the host's.
        let outside = run(spec.clone()).await;
        assert_eq!(
            reason(&outside),
            "connection refused",
            "{spec} from the host"
        );
    }
    // Source addresses apply inside too.
    let from = CheckSpec::http(target)
        .with_source("127.0.0.1".parse().unwrap())
        .with_netns(ns.clone());
    assert_eq!(reason(&run(from).await), "passed");

    // The probes' connections were reset, not closed: nothing lingers in
    // TIME_WAIT on either side.
    assert_eq!(time_waits(&ns), Vec::<String>::new());
}
