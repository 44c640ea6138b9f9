//! Real servers on loopback for the tests: HTTP with selectable misbehaviour, HTTPS
//! with a freshly generated certificate, and DNS over UDP and TCP.
#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, OpCode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How the HTTP server answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Http {
    /// A complete response with this status.
    Status(u16),
    /// Accepts, reads the request, never answers.
    Hang,
    /// Reads the request, then resets the connection (SO_LINGER 0).
    Reset,
    /// Answers with the status after the delay.
    Slow(Duration, u16),
    /// Answers with an SSH banner and keeps the connection open.
    Garbage,
    /// Reads the request and closes without answering.
    CloseEarly,
    /// Sends a status line and then nothing more.
    Partial,
    /// Sends a status line and then header lines without end.
    Endless,
    /// Sends 103 Early Hints, then a final response with this status.
    Interim(u16),
}

/// What every test server records.
#[derive(Debug, Default)]
pub struct Seen {
    /// Peers of the connections or datagrams, in order.
    pub peers: Mutex<Vec<SocketAddr>>,
    /// Requests received, with the paths for HTTP.
    pub requests: Mutex<Vec<(Instant, String)>>,
    /// Connections accepted (TCP) or datagrams received (UDP).
    pub hits: AtomicUsize,
}

impl Seen {
    fn saw(&self, peer: SocketAddr) {
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.peers.lock().unwrap().push(peer);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn last_peer(&self) -> Option<SocketAddr> {
        self.peers.lock().unwrap().last().copied()
    }
}

/// A running server; stops accepting when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    behaviour: Arc<Mutex<Http>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Changes how the server answers from the next connection on.
    pub fn set(&self, behaviour: Http) {
        *self.behaviour.lock().unwrap() = behaviour;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP server on `ip` (any free port).
pub async fn http_server(ip: &str, behaviour: Http) -> Server {
    serve(ip, behaviour, None).await
}

/// An HTTPS server on `ip` with `identity`'s certificate.
pub async fn https_server(ip: &str, behaviour: Http, identity: &Identity) -> Server {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            identity.chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone())),
        )
        .unwrap();
    serve(
        ip,
        behaviour,
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
    )
    .await
}

async fn serve(ip: &str, behaviour: Http, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let behaviour = Arc::new(Mutex::new(behaviour));
    let task = tokio::spawn({
        let seen = seen.clone();
        let behaviour = behaviour.clone();
        async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                seen.saw(peer);
                let now = behaviour.lock().unwrap().clone();
                let seen = seen.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => answer(stream, now, &seen).await,
                        Some(acceptor) => {
                            // A client that gives up mid-handshake is not our concern.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                answer_tls(stream, now, &seen).await;
                            }
                        }
                    }
                });
            }
        }
    });
    Server {
        addr,
        seen,
        behaviour,
        task,
    }
}

async fn answer(mut stream: TcpStream, behaviour: Http, seen: &Seen) {
    if behaviour == Http::Reset {
        read_request(&mut stream, seen).await;
        stream.set_zero_linger().unwrap();
        drop(stream);
        return;
    }
    respond(stream, behaviour, seen).await;
}

async fn answer_tls(
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    behaviour: Http,
    seen: &Seen,
) {
    respond(stream, behaviour, seen).await;
}

async fn respond<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, behaviour: Http, seen: &Seen) {
    // Garbage comes at once, as from a server of another protocol that speaks
    // first (SSH, SMTP): that way it also answers a TLS ClientHello.
    if behaviour != Http::Garbage {
        read_request(&mut stream, seen).await;
    }
    let status = match behaviour {
        Http::Status(status) => status,
        Http::Slow(delay, status) => {
            tokio::time::sleep(delay).await;
            status
        }
        Http::Hang | Http::Reset => {
            hold(stream).await;
            return;
        }
        Http::Garbage => {
            let _ = stream
                .write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
                .await;
            hold(stream).await;
            return;
        }
        Http::CloseEarly => {
            let _ = stream.shutdown().await;
            return;
        }
        Http::Partial => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nServer: slow\r\n")
                .await;
            hold(stream).await;
            return;
        }
        Http::Endless => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
            let line = b"X-Filler: 0123456789abcdef0123456789abcdef\r\n".repeat(64);
            // Until the client hangs up (bounded by the client's head limit).
            while stream.write_all(&line).await.is_ok() {}
            return;
        }
        Http::Interim(status) => {
            let _ = stream
                .write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
                .await;
            status
        }
    };
    let body = format!("status {status}\n");
    let response = format!(
        "HTTP/1.1 {status} Whatever\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Keeps a connection open, unanswered, until the test's runtime ends.
async fn hold<S>(stream: S) {
    let _keep = stream;
    std::future::pending::<()>().await;
}

/// Reads up to the end of the request head and records its target.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S, seen: &Seen) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split(' ').nth(1).unwrap_or("").to_owned();
    seen.requests.lock().unwrap().push((Instant::now(), path));
}

/// A certificate chain and its key, for the HTTPS server.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Vec<u8>,
    /// The CA that issued the leaf, PEM-encoded (or the self-signed leaf itself).
    pub ca_pem: String,
}

/// A self-signed certificate for `localhost` and 127.0.0.1.
pub fn self_signed() -> Identity {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    Identity {
        chain: vec![certified.cert.der().clone()],
        key: certified.signing_key.serialize_der(),
        ca_pem: certified.cert.pem(),
    }
}

/// A private CA named `name` and a leaf it issued for `localhost` and 127.0.0.1.
pub fn ca_issued(name: &str) -> Identity {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    Identity {
        chain: vec![leaf.der().clone(), ca.der().clone()],
        key: leaf_key.serialize_der(),
        ca_pem: ca.pem(),
    }
}

/// How the DNS server answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dns {
    /// A response with this rcode.
    Rcode(u16),
    /// Bytes that are not a DNS message.
    Garbage,
    /// Nothing at all.
    Silent,
}

const NOT_DNS: &[u8] = b"this is not DNS";

fn dns_answer(query: &[u8], behaviour: Dns) -> Option<Vec<u8>> {
    match behaviour {
        Dns::Silent => None,
        Dns::Garbage => Some(NOT_DNS.to_vec()),
        Dns::Rcode(rcode) => {
            let query = Message::from_vec(query).ok()?;
            let mut response = Message::response(query.metadata.id, OpCode::Query);
            response.metadata.recursion_desired = query.metadata.recursion_desired;
            response.metadata.response_code = rcode.into();
            response.add_queries(query.queries.clone());
            response.to_vec().ok()
        }
    }
}

/// A running DNS server over UDP; stops when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A DNS server over UDP on `ip`.
pub async fn dns_udp_server(ip: &str, behaviour: Dns) -> DnsServer {
    let socket = UdpSocket::bind((ip, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let task = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                seen.saw(peer);
                if let Some(answer) = dns_answer(&buf[..n], behaviour) {
                    let _ = socket.send_to(&answer, peer).await;
                }
            }
        }
    });
    DnsServer { addr, seen, task }
}

/// A DNS server over TCP on `ip`.
pub async fn dns_tcp_server(ip: &str, behaviour: Dns) -> DnsServer {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let task = tokio::spawn({
        let seen = seen.clone();
        async move {
            loop {
                let Ok((mut stream, peer)) = listener.accept().await else {
                    continue;
                };
                seen.saw(peer);
                tokio::spawn(async move {
                    let mut len = [0u8; 2];
                    if stream.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if stream.read_exact(&mut query).await.is_err() {
                        return;
                    }
                    match dns_answer(&query, behaviour) {
                        Some(answer) => {
                            let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&answer);
                            let _ = stream.write_all(&framed).await;
                            hold(stream).await;
                        }
                        None => hold(stream).await,
                    }
                });
            }
        }
    });
    DnsServer { addr, seen, task }
}

/// A local port with nothing listening on it (TCP and UDP): bound, then released.
pub async fn closed_port(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}
