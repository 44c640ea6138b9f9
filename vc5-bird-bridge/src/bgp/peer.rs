//! One task per BGP peer: it owns the TCP connection and the [`Fsm`], feeds
//! the machine with socket input, timer expiries and desired-route changes,
//! carries out its actions and reports the peer's status to the announcer's
//! task (`PeerReport`), which alone writes [`crate::Status`].

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::codec::{self, Message};
use super::fsm::{Action, Config, Event, Fsm, SessionError, State};
use crate::desired::Desired;
use crate::status::PeerStatus;

/// How to reach one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's address.
    pub address: IpAddr,
    /// The peer's port (179).
    pub port: u16,
    /// The AS the peer must have; `None` accepts any.
    pub remote_as: Option<u32>,
}

/// Socket-level settings shared by all peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// Source address for connections of the same family (`--address`).
    pub local_address: Option<IpAddr>,
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
    /// How long one write may stall (a peer that stops reading).
    pub write_timeout: Duration,
}

/// A peer task's status, sent to the announcer's task whenever it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerReport {
    /// Which peer: its address, the key its entry in
    /// [`crate::Status::peers`] is found by (the configured peers are
    /// distinct addresses; [`crate::AnnouncerConfig::validate`] checks).
    pub peer: IpAddr,
    /// Its status now.
    pub status: PeerStatus,
    /// When it was taken, on the wall clock (for `applied_at`)…
    pub at: SystemTime,
    /// …and on the monotonic one (for `apply_latency`).
    pub at_instant: Instant,
}

/// Everything a peer task needs.
pub(crate) struct PeerTask {
    pub peer: PeerConfig,
    pub fsm: Config,
    pub transport: Transport,
    pub desired: watch::Receiver<Arc<Desired>>,
    pub reconnect: watch::Receiver<u64>,
    pub stop: watch::Receiver<bool>,
    /// To the announcer's task. Unbounded: a report never waits (the
    /// announcer may be waiting for this task to finish), and there is at
    /// most one per change of state.
    pub reports: mpsc::UnboundedSender<PeerReport>,
}

impl PeerTask {
    /// Runs until stopped; withdraws and sends Cease on the way out.
    pub async fn run(self) {
        let span = info_span!("bgp_peer", peer = %self.peer.address);
        self.run_inner().instrument(span).await
    }

    async fn run_inner(mut self) {
        let mut fsm = Fsm::new(self.fsm.clone());
        let mut conn: Option<TcpStream> = None;
        let mut connecting: Option<tokio::task::JoinHandle<io::Result<TcpStream>>> = None;
        let mut rbuf: Vec<u8> = Vec::with_capacity(codec::MAX_MESSAGE_LEN * 2);
        let mut read_chunk = vec![0u8; 16 * 1024];
        let mut applied: Option<u64> = None;
        let mut reported: Option<PeerStatus> = None;
        let mut pending: Vec<Event> = Vec::new();

        let d = self.desired.borrow_and_update().clone();
        pending.push(attributes_event(&d));
        pending.push(Event::SetRoutes {
            generation: d.generation,
            routes: d.vips.clone(),
        });
        pending.push(Event::Start);
        // Only calls made after this task started count.
        self.reconnect.borrow_and_update();
        let mut reconnect_open = true;
        let mut stopping = *self.stop.borrow();
        if stopping {
            pending.push(Event::Stop);
        }

        loop {
            // Feed pending events; carry out the actions they cause, which
            // may themselves produce events (a failed write).
            while !pending.is_empty() {
                let now = Instant::now();
                let mut actions = Vec::new();
                for ev in pending.drain(..) {
                    log_event(&ev);
                    actions.extend(fsm.handle(ev, now));
                }
                for a in actions {
                    match a {
                        Action::Connect => {
                            let target = SocketAddr::new(self.peer.address, self.peer.port);
                            debug!(%target, "connecting");
                            let t = self.transport.clone();
                            connecting = Some(tokio::spawn(connect(target, t)));
                        }
                        Action::Send(m) => {
                            let Some(s) = conn.as_mut() else { continue };
                            let bytes = match m.encode(fsm.codec()) {
                                Ok(b) => b,
                                Err(e) => {
                                    // Not sent at all: part of it, or another
                                    // message, would say something else.
                                    error!(message = %m.kind(), error = %e, "cannot encode a message for the peer (a bug)");
                                    pending.push(Event::EncodeError(e));
                                    continue;
                                }
                            };
                            let w = tokio::time::timeout(
                                self.transport.write_timeout,
                                s.write_all(&bytes),
                            )
                            .await;
                            if let Message::Notification(n) = &m {
                                warn!(notification = %n, "sending NOTIFICATION");
                            }
                            match w {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => pending.push(Event::TcpFailed(format!("write: {e}"))),
                                Err(_) => pending.push(Event::TcpFailed("write timed out".into())),
                            }
                        }
                        Action::Close => {
                            if let Some(c) = connecting.take() {
                                c.abort();
                            }
                            if let Some(s) = conn.take() {
                                if stopping {
                                    // Make sure the Cease reaches the peer
                                    // before shutdown() returns.
                                    close_gracefully(s).await;
                                } else {
                                    tokio::spawn(close_gracefully(s));
                                }
                            }
                            rbuf.clear();
                        }
                        Action::Applied(g) => applied = Some(g),
                    }
                }
                if fsm.state() == State::Idle
                    && let (Some(e), Some(at)) = (fsm.last_error(), fsm.retry_at())
                {
                    let retry_in = at.saturating_duration_since(Instant::now());
                    if matches!(e, SessionError::Encode(_)) {
                        error!(error = %e, ?retry_in, "session ended: vc5 could not encode what it must send (a bug), will retry");
                    } else {
                        info!(error = %e, ?retry_in, "session down, will retry");
                    }
                }
            }
            // One message at a time: an OPEN changes how what follows it
            // decodes (4-octet AS), so the machine sees each before the next.
            if conn.is_some() && !rbuf.is_empty() {
                match codec::decode(&rbuf, fsm.codec()) {
                    Ok(Some((m, used))) => {
                        rbuf.drain(..used);
                        pending.push(Event::Message(m));
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        rbuf.clear();
                        pending.push(Event::DecodeError(e));
                        continue;
                    }
                }
            }
            self.report(&fsm, applied, &mut reported);
            if fsm.stopped() && conn.is_none() {
                info!("stopped");
                return;
            }

            let deadline = fsm.next_deadline();
            tokio::select! {
                r = join_opt(&mut connecting) => {
                    connecting = None;
                    match r {
                        Ok(Ok(s)) => {
                            info!(local = ?s.local_addr().ok(), "TCP connected");
                            conn = Some(s);
                            pending.push(Event::TcpConnected);
                        }
                        Ok(Err(e)) => pending.push(Event::TcpFailed(format!("connect: {e}"))),
                        Err(e) => pending.push(Event::TcpFailed(format!("connect task: {e}"))),
                    }
                }
                r = read_opt(&mut conn, &mut read_chunk) => {
                    match r {
                        Ok(0) => pending.push(Event::TcpFailed("connection closed by peer".into())),
                        Ok(n) => rbuf.extend_from_slice(&read_chunk[..n]),
                        Err(e) => pending.push(Event::TcpFailed(format!("read: {e}"))),
                    }
                }
                r = self.desired.changed() => {
                    if r.is_ok() {
                        let d = self.desired.borrow_and_update().clone();
                        // Attributes first: unchanged routes are sent again
                        // with them, new ones go out with them.
                        pending.push(attributes_event(&d));
                        pending.push(Event::SetRoutes { generation: d.generation, routes: d.vips.clone() });
                    }
                }
                r = self.reconnect.changed(), if reconnect_open => {
                    // A dropped sender would be "changed" forever: stop listening.
                    reconnect_open = r.is_ok();
                    if reconnect_open {
                        self.reconnect.borrow_and_update();
                        info!("reconnecting now (link up)");
                        pending.push(Event::ReconnectNow);
                    }
                }
                r = self.stop.changed(), if !stopping => {
                    // A dropped sender means the announcer is gone: stop too.
                    if r.is_err() || *self.stop.borrow() {
                        stopping = true;
                        pending.push(Event::Stop);
                    }
                }
                _ = sleep_until(deadline) => pending.push(Event::Tick),
            }
        }
    }

    /// Sends the peer's status to the announcer when it differs from the
    /// last one sent.
    fn report(&self, fsm: &Fsm, applied: Option<u64>, reported: &mut Option<PeerStatus>) {
        let now_sys = SystemTime::now();
        let now = Instant::now();
        let ps = PeerStatus {
            address: self.peer.address,
            state: fsm.state(),
            remote_as: fsm.peer().map(|p| p.asn),
            remote_id: fsm.peer().map(|p| p.bgp_id),
            hold_time: fsm.peer().map(|p| p.hold_time),
            established_since: fsm
                .established_at()
                .map(|t| now_sys - now.saturating_duration_since(t)),
            last_error: fsm.last_error().map(|e| e.to_string()),
            next_retry_in: fsm.retry_at().map(|t| t.saturating_duration_since(now)),
            connect_attempts: fsm.connect_attempts(),
            announced: fsm.announced().clone(),
            unannounceable: fsm.unannounceable(),
            applied_generation: if fsm.state() == State::Established {
                applied
            } else {
                None
            },
        };
        if reported.as_ref() == Some(&ps) {
            return;
        }
        *reported = Some(ps.clone());
        // An error means the announcer is gone (it drops the receiver of a
        // speaker it replaced): nobody is left to tell.
        let _ = self.reports.send(PeerReport {
            peer: self.peer.address,
            status: ps,
            at: now_sys,
            at_instant: now,
        });
    }
}

fn attributes_event(d: &Desired) -> Event {
    Event::SetAttributes {
        communities: super::community_values(&d.routes.communities),
        med: d.routes.med,
        local_pref: d.routes.local_pref,
    }
}

/// Awaits the connect task, or never when there is none.
async fn join_opt(
    h: &mut Option<tokio::task::JoinHandle<io::Result<TcpStream>>>,
) -> Result<io::Result<TcpStream>, tokio::task::JoinError> {
    match h {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

/// Reads from the connection, or never when there is none. Cancel-safe, as
/// `read` is: a read cancelled by another branch loses no data.
async fn read_opt(conn: &mut Option<TcpStream>, buf: &mut [u8]) -> io::Result<usize> {
    match conn {
        Some(s) => s.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

async fn connect(target: SocketAddr, t: Transport) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(local) = t.local_address
        && local.is_ipv4() == target.is_ipv4()
    {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    let stream = tokio::time::timeout(t.connect_timeout, socket.connect(target))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    // UPDATEs must leave at once, not wait for an ACK (latency target 100 ms).
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// FIN, then drain until the peer closes (bounded), so that a NOTIFICATION
/// just written is read by the peer rather than lost to a reset.
async fn close_gracefully(mut s: TcpStream) {
    let _ = s.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        loop {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

fn log_event(ev: &Event) {
    match ev {
        Event::Message(Message::Notification(n)) => {
            warn!(notification = %n, "peer sent NOTIFICATION")
        }
        Event::TcpFailed(e) => info!(error = %e, "connection failed"),
        Event::DecodeError(e) => warn!(error = %e, "protocol error"),
        Event::Message(Message::Open(o)) => {
            info!(asn = o.asn(), id = %o.bgp_id, hold = o.hold_time, "OPEN received")
        }
        _ => {}
    }
}
