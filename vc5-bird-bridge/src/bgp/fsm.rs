//! The BGP session state machine (RFC 4271 §8), for an active-only speaker,
//! without any I/O.
//!
//! vc5's speaker only ever opens connections (the original never listened on
//! port 179, and routers are configured to accept from the load balancers),
//! so the machine is the RFC's minus the passive paths:
//!
//! ```text
//!            start / retry timer
//!   Idle ─────────────────────────► Connect ──tcp up, send OPEN──► OpenSent
//!    ▲  ▲                              │                              │ OPEN ok,
//!    │  └──── tcp failed (backoff) ────┘                              │ send KEEPALIVE
//!    │                                                                ▼
//!    └──── any error: NOTIFICATION sent or received, ◄──────────── OpenConfirm
//!          hold timer expired, connection lost (backoff)              │ KEEPALIVE
//!                                                                     ▼
//!                                                                Established
//! ```
//!
//! The machine is fed [`Event`]s with the current time and answers with
//! [`Action`]s for the peer task to carry out in order (connect, send, close).
//! It owns the timers as deadlines ([`Fsm::next_deadline`], [`Fsm::expire`]),
//! the routes the peer should have ([`Event::SetRoutes`]) and those it has
//! been sent (Adj-RIB-Out), so that every decision, including which UPDATEs
//! to send, is a pure function tested without sockets.
//!
//! Retries back off exponentially from [`Config::backoff_min`] to
//! [`Config::backoff_max`]. The backoff returns to the minimum when a session
//! reaches Established (the peer is reachable and willing again), and on
//! [`Event::ReconnectNow`], which the daemon sends when the interface comes
//! back up: an attempt that failed while the link was down says nothing about
//! the peer, so waiting out a long backoff after link-up only keeps the load
//! balancer out of the router's ECMP set.
//!
//! Attributes (communities, MED, LOCAL_PREF) can change on a running session
//! ([`Event::SetAttributes`]): every route the peer has is sent again in a
//! fresh UPDATE, which replaces it at the peer (RFC 4271 §9.1.4, implicit
//! withdraw of the old path); nothing is withdrawn. What the OPEN carries (AS,
//! identifier, hold time) cannot change without a new session.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use super::codec::{
    Afi, CeaseSubcode, Codec, DecodeError, EncodeError, FsmSubcode, Message, Notification,
    NotificationKind, Open, RouteAttributes, Safi, build_updates,
};

/// The hold timer while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes).
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);

/// The session's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// The hold time we propose: 0 or 3..=65535 seconds.
    pub hold_time: u16,
    /// The AS the peer must have; `None` accepts any (iBGP when equal to ours).
    pub remote_as: Option<u32>,
    /// Next hop for IPv4 routes.
    pub next_hop4: Option<Ipv4Addr>,
    /// Next hop for IPv6 routes.
    pub next_hop6: Option<Ipv6Addr>,
    /// Standard communities as (AS << 16 | value).
    pub communities: Vec<u32>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (sent on iBGP only).
    pub local_pref: Option<u32>,
    /// First retry delay.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
}

/// RFC 4271 session states (Active is never entered: we do not listen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not connected; waiting for the retry timer (or stopped).
    Idle,
    /// TCP connection in progress.
    Connect,
    /// OPEN sent, waiting for the peer's OPEN.
    OpenSent,
    /// OPENs exchanged, waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// Session up; routes are exchanged.
    Established,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        })
    }
}

/// Inputs to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Begin connecting (ManualStart).
    Start,
    /// Withdraw everything and close for good (ManualStop).
    Stop,
    /// The TCP connection is up.
    TcpConnected,
    /// Connecting failed, or the connection was lost.
    TcpFailed(String),
    /// A message arrived.
    Message(Message),
    /// Bytes arrived that do not decode.
    DecodeError(DecodeError),
    /// A message the machine asked to send could not be encoded (a bug, or
    /// a configuration the announcer should have refused).
    EncodeError(EncodeError),
    /// Time passed: fire the timers that are due (see [`Fsm::next_deadline`]).
    Tick,
    /// New path attributes for every route; routes the peer already has are
    /// sent again with them.
    SetAttributes {
        /// Standard communities as (AS << 16 | value).
        communities: Vec<u32>,
        /// MULTI_EXIT_DISC.
        med: Option<u32>,
        /// LOCAL_PREF (iBGP only).
        local_pref: Option<u32>,
    },
    /// Forget the backoff and, when not in a session, connect now (the
    /// interface came back up). A connect in progress is restarted, since its
    /// SYN may have been lost to the dead link and be waiting for a
    /// retransmission seconds away.
    ReconnectNow,
    /// The routes the peer should have (the full set), with their generation.
    SetRoutes {
        /// Monotonic generation number of this set.
        generation: u64,
        /// Every address to announce.
        routes: BTreeSet<IpAddr>,
    },
}

/// What the peer task must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer.
    Connect,
    /// Send a message.
    Send(Message),
    /// Close the TCP connection (after sending what came before).
    Close,
    /// Routes of this generation have been handed to the socket.
    Applied(u64),
}

/// Why the last session ended or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// TCP connect failed or the connection broke.
    Connection(String),
    /// The peer sent a NOTIFICATION.
    NotificationReceived(Notification),
    /// We sent a NOTIFICATION (with why).
    NotificationSent(Notification, String),
    /// No message from the peer within the hold time.
    HoldTimerExpired,
    /// A message for the peer could not be encoded, so the session could
    /// not carry what it must; it was ended with Cease.
    Encode(EncodeError),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Connection(e) => write!(f, "connection: {e}"),
            SessionError::NotificationReceived(n) => write!(f, "peer sent NOTIFICATION {n}"),
            SessionError::NotificationSent(n, why) => write!(f, "sent NOTIFICATION {n}: {why}"),
            SessionError::HoldTimerExpired => f.write_str("hold timer expired"),
            SessionError::Encode(e) => write!(f, "cannot encode a message for the peer: {e}"),
        }
    }
}

/// What the peer's OPEN told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's AS.
    pub asn: u32,
    /// The peer's BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// The negotiated hold time (0: no keepalives).
    pub hold_time: u16,
    /// Whether the session is iBGP.
    pub ibgp: bool,
    /// Whether IPv4 unicast is usable.
    pub ipv4: bool,
    /// Whether IPv6 unicast is usable.
    pub ipv6: bool,
}

/// The machine.
#[derive(Debug)]
pub struct Fsm {
    cfg: Config,
    state: State,
    stopped: bool,
    started: bool,
    codec: Codec,
    backoff: Duration,
    retry_at: Option<Instant>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    established_at: Option<Instant>,
    peer: Option<PeerInfo>,
    desired: BTreeSet<IpAddr>,
    desired_generation: u64,
    adj_out: BTreeSet<IpAddr>,
    last_error: Option<SessionError>,
    connect_attempts: u64,
}

impl Fsm {
    /// A machine in Idle, not started.
    pub fn new(cfg: Config) -> Fsm {
        let backoff = cfg.backoff_min;
        Fsm {
            cfg,
            state: State::Idle,
            stopped: false,
            started: false,
            codec: Codec::default(),
            backoff,
            retry_at: None,
            hold_at: None,
            keepalive_at: None,
            established_at: None,
            peer: None,
            desired: BTreeSet::new(),
            desired_generation: 0,
            adj_out: BTreeSet::new(),
            last_error: None,
            connect_attempts: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }
    /// Whether [`Event::Stop`] was handled.
    pub fn stopped(&self) -> bool {
        self.stopped
    }
    /// The peer's OPEN, while a session is past OpenSent.
    pub fn peer(&self) -> Option<&PeerInfo> {
        self.peer.as_ref()
    }
    /// Why the last session failed.
    pub fn last_error(&self) -> Option<&SessionError> {
        self.last_error.as_ref()
    }
    /// What the peer has from us in this session.
    pub fn announced(&self) -> &BTreeSet<IpAddr> {
        &self.adj_out
    }
    /// When the session came up.
    pub fn established_at(&self) -> Option<Instant> {
        self.established_at
    }
    /// When the next connection attempt is due (in Idle).
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }
    /// How many connections were attempted.
    pub fn connect_attempts(&self) -> u64 {
        self.connect_attempts
    }
    /// The codec settings of the current session.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Desired routes this peer cannot carry: a family without next hop or
    /// not negotiated (reported in the status, never sent).
    pub fn unannounceable(&self) -> BTreeSet<IpAddr> {
        self.desired
            .iter()
            .filter(|a| !self.can_carry(a))
            .copied()
            .collect()
    }

    fn can_carry(&self, a: &IpAddr) -> bool {
        let (nh, negotiated) = match a {
            IpAddr::V4(_) => (
                self.cfg.next_hop4.is_some(),
                self.peer.as_ref().is_none_or(|p| p.ipv4),
            ),
            IpAddr::V6(_) => (
                self.cfg.next_hop6.is_some(),
                self.peer.as_ref().is_none_or(|p| p.ipv6),
            ),
        };
        nh && negotiated
    }

    /// The earliest timer deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retry_at, self.hold_at, self.keepalive_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires every timer due at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.hold_at.is_some_and(|t| t <= now) {
            self.hold_at = None;
            let n = Notification::new(NotificationKind::HoldTimerExpired);
            out.push(Action::Send(Message::Notification(n)));
            self.fail(SessionError::HoldTimerExpired, now, &mut out);
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            self.keepalive_at = None;
            if matches!(self.state, State::OpenConfirm | State::Established) {
                out.push(Action::Send(Message::Keepalive));
                self.arm_keepalive(now);
            }
        }
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            if self.state == State::Idle && !self.stopped {
                self.state = State::Connect;
                self.connect_attempts += 1;
                out.push(Action::Connect);
            }
        }
        out
    }

    /// Handles one event at time `now`.
    pub fn handle(&mut self, ev: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match ev {
            Event::Start => {
                if !self.started && !self.stopped {
                    self.started = true;
                    self.retry_at = Some(now);
                    out.extend(self.expire(now));
                }
            }
            Event::Stop => self.stop(&mut out),
            Event::ReconnectNow => {
                self.backoff = self.cfg.backoff_min;
                if self.started && !self.stopped {
                    if self.state == State::Connect {
                        out.push(Action::Close);
                        self.state = State::Idle;
                    }
                    if self.state == State::Idle {
                        self.retry_at = Some(now);
                        out.extend(self.expire(now));
                    }
                }
            }
            Event::SetAttributes {
                communities,
                med,
                local_pref,
            } => {
                let changed = self.cfg.communities != communities
                    || self.cfg.med != med
                    || self.cfg.local_pref != local_pref;
                self.cfg.communities = communities;
                self.cfg.med = med;
                self.cfg.local_pref = local_pref;
                if changed && self.state == State::Established {
                    let all: Vec<IpAddr> = self.adj_out.iter().copied().collect();
                    self.send_updates(&all, &[], now, &mut out);
                }
            }
            Event::Tick => out.extend(self.expire(now)),
            Event::SetRoutes { generation, routes } => {
                self.desired = routes;
                self.desired_generation = generation;
                if self.state == State::Established {
                    self.sync(now, &mut out);
                }
            }
            Event::TcpConnected => {
                if self.state == State::Connect {
                    let open =
                        Open::ours(self.cfg.local_as, self.cfg.hold_time, self.cfg.router_id);
                    out.push(Action::Send(Message::Open(open)));
                    self.state = State::OpenSent;
                    self.hold_at = Some(now + OPEN_HOLD_TIME);
                } else {
                    // A connection we no longer want (e.g. stopped meanwhile).
                    out.push(Action::Close);
                }
            }
            Event::TcpFailed(why) => {
                if self.state != State::Idle {
                    self.fail(SessionError::Connection(why), now, &mut out);
                }
            }
            Event::DecodeError(e) => {
                if self.state != State::Idle {
                    let n = e.notification();
                    out.push(Action::Send(Message::Notification(n.clone())));
                    self.fail(
                        SessionError::NotificationSent(n, e.to_string()),
                        now,
                        &mut out,
                    );
                }
            }
            Event::EncodeError(e) => {
                if self.state != State::Idle {
                    self.encode_failed(e, now, &mut out);
                }
            }
            Event::Message(m) => self.message(m, now, &mut out),
        }
        out
    }

    fn message(&mut self, m: Message, now: Instant, out: &mut Vec<Action>) {
        if let Message::Notification(n) = m {
            if self.state != State::Idle {
                // No NOTIFICATION in reply to a NOTIFICATION.
                self.fail(SessionError::NotificationReceived(n), now, out);
            }
            return;
        }
        match (self.state, m) {
            (State::OpenSent, Message::Open(o)) => match self.check_open(&o) {
                Ok(peer) => {
                    self.codec = Codec {
                        four_octet_as: o.four_octet_as(),
                    };
                    self.peer = Some(peer);
                    out.push(Action::Send(Message::Keepalive));
                    self.state = State::OpenConfirm;
                    self.arm_hold(now);
                    self.arm_keepalive(now);
                }
                Err(e) => {
                    let n = e.notification();
                    out.push(Action::Send(Message::Notification(n.clone())));
                    self.fail(SessionError::NotificationSent(n, e.to_string()), now, out);
                }
            },
            (State::OpenConfirm, Message::Keepalive) => {
                self.state = State::Established;
                self.established_at = Some(now);
                self.backoff = self.cfg.backoff_min;
                self.adj_out.clear();
                self.arm_hold(now);
                self.sync(now, out);
            }
            (State::Established, Message::Keepalive | Message::Update(_)) => {
                // Routes from the peer are of no use to a load balancer; only
                // their well-formedness (checked by the codec) matters.
                self.arm_hold(now);
            }
            (State::Established, Message::RouteRefresh { afi, safi }) => {
                self.arm_hold(now);
                if safi == Safi::Unicast && matches!(afi, Afi::Ipv4 | Afi::Ipv6) {
                    self.resend(afi, now, out);
                }
            }
            (State::OpenConfirm, Message::RouteRefresh { .. }) => self.arm_hold(now),
            (state @ (State::OpenSent | State::OpenConfirm | State::Established), other) => {
                // RFC 6608 subcodes say in which state the surprise came.
                let sub = match state {
                    State::OpenSent => FsmSubcode::UnexpectedInOpenSent,
                    State::OpenConfirm => FsmSubcode::UnexpectedInOpenConfirm,
                    _ => FsmSubcode::UnexpectedInEstablished,
                };
                let n = Notification::new(sub);
                out.push(Action::Send(Message::Notification(n.clone())));
                let why = format!("unexpected {} in {state}", kind(&other));
                self.fail(SessionError::NotificationSent(n, why), now, out);
            }
            // Idle/Connect: no session, nothing can arrive; ignore.
            _ => {}
        }
    }

    fn check_open(&self, o: &Open) -> Result<PeerInfo, DecodeError> {
        let asn = o.asn();
        // RFC 7607: AS 0 is never a peer's AS (whether in My AS or in the
        // 4-octet AS capability).
        if asn == 0 || self.cfg.remote_as.is_some_and(|want| want != asn) {
            return Err(DecodeError::BadPeerAs(asn));
        }
        let ibgp = asn == self.cfg.local_as;
        // RFC 6286 requires distinct identifiers only on iBGP; vc5 refuses
        // its own identifier on eBGP too: it is a copied configuration, not
        // a real router, and RFC 4271's collision resolution needs them
        // distinct.
        if o.bgp_id == self.cfg.router_id {
            return Err(DecodeError::BadBgpIdentifier(o.bgp_id));
        }
        let hold_time = o.hold_time.min(self.cfg.hold_time);
        Ok(PeerInfo {
            asn,
            bgp_id: o.bgp_id,
            hold_time,
            ibgp,
            ipv4: o.supports(Afi::Ipv4, Safi::Unicast),
            ipv6: o.supports(Afi::Ipv6, Safi::Unicast),
        })
    }

    fn arm_hold(&mut self, now: Instant) {
        let hold = self.peer.as_ref().map_or(0, |p| p.hold_time);
        self.hold_at = (hold > 0).then(|| now + Duration::from_secs(hold.into()));
    }

    fn arm_keepalive(&mut self, now: Instant) {
        let hold = self.peer.as_ref().map_or(0, |p| p.hold_time);
        // One third of the hold time (RFC 4271 §10), at least one second.
        self.keepalive_at =
            (hold > 0).then(|| now + Duration::from_secs(u64::from(hold / 3).max(1)));
    }

    fn attributes(&self) -> RouteAttributes {
        let ibgp = self.peer.as_ref().is_some_and(|p| p.ibgp);
        RouteAttributes {
            local_as: self.cfg.local_as,
            ibgp,
            next_hop4: self.cfg.next_hop4,
            next_hop6: self.cfg.next_hop6,
            communities: self.cfg.communities.clone(),
            med: self.cfg.med,
            local_pref: self.cfg.local_pref,
        }
    }

    /// Sends the difference between the desired routes and Adj-RIB-Out.
    fn sync(&mut self, now: Instant, out: &mut Vec<Action>) {
        let want: BTreeSet<IpAddr> = self
            .desired
            .iter()
            .filter(|a| self.can_carry(a))
            .copied()
            .collect();
        let announce: Vec<IpAddr> = want.difference(&self.adj_out).copied().collect();
        let withdraw: Vec<IpAddr> = self.adj_out.difference(&want).copied().collect();
        if self.send_updates(&announce, &withdraw, now, out) {
            self.adj_out = want;
            out.push(Action::Applied(self.desired_generation));
        }
    }

    /// Answers ROUTE-REFRESH: everything we announce in that family again.
    fn resend(&mut self, afi: Afi, now: Instant, out: &mut Vec<Action>) {
        let again: Vec<IpAddr> = self
            .adj_out
            .iter()
            .filter(|a| a.is_ipv6() == (afi == Afi::Ipv6))
            .copied()
            .collect();
        self.send_updates(&again, &[], now, out);
    }

    /// Sends the UPDATEs that announce `announce` and withdraw `withdraw`;
    /// false (and the session ended) when they cannot be built.
    fn send_updates(
        &mut self,
        announce: &[IpAddr],
        withdraw: &[IpAddr],
        now: Instant,
        out: &mut Vec<Action>,
    ) -> bool {
        match build_updates(announce, withdraw, &self.attributes(), self.codec) {
            Ok(msgs) => {
                if !msgs.is_empty() {
                    out.extend(msgs.into_iter().map(Action::Send));
                    self.arm_keepalive(now);
                }
                true
            }
            Err(e) => {
                self.encode_failed(e, now, out);
                false
            }
        }
    }

    /// A message for the peer cannot be encoded. Sending part of it, or
    /// another one, would tell the peer something vc5 does not mean, and
    /// staying up without sending it would leave the peer with routes vc5
    /// no longer wants: the session ends (Cease; nothing fits better) and
    /// is retried with backoff, the error in the peer's status. The
    /// announcer refuses configurations whose UPDATEs do not encode, so
    /// this is a bug when it happens.
    fn encode_failed(&mut self, e: EncodeError, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::Send(Message::Notification(Notification::new(
            CeaseSubcode::Unspecific,
        ))));
        self.fail(SessionError::Encode(e), now, out);
    }

    fn stop(&mut self, out: &mut Vec<Action>) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if self.state == State::Established && !self.adj_out.is_empty() {
            // Withdraw explicitly before the Cease: the peer may keep stale
            // routes for a while after a session ends (graceful restart).
            let all: Vec<IpAddr> = std::mem::take(&mut self.adj_out).into_iter().collect();
            match build_updates(&[], &all, &self.attributes(), self.codec) {
                Ok(msgs) => out.extend(msgs.into_iter().map(Action::Send)),
                // The Cease below withdraws them all the same.
                Err(e) => self.last_error = Some(SessionError::Encode(e)),
            }
        }
        if matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            out.push(Action::Send(Message::Notification(
                Notification::admin_shutdown(),
            )));
        }
        if self.state != State::Idle {
            out.push(Action::Close);
        }
        self.reset();
    }

    /// Ends the session after an error and schedules the next attempt.
    fn fail(&mut self, e: SessionError, now: Instant, out: &mut Vec<Action>) {
        self.last_error = Some(e);
        out.push(Action::Close);
        self.reset();
        if !self.stopped {
            self.retry_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(self.cfg.backoff_max);
        }
    }

    fn reset(&mut self) {
        self.state = State::Idle;
        self.hold_at = None;
        self.keepalive_at = None;
        self.retry_at = None;
        self.established_at = None;
        self.peer = None;
        self.adj_out.clear();
        self.codec = Codec::default();
    }
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Open(_) => "OPEN",
        Message::Update(_) => "UPDATE",
        Message::Notification(_) => "NOTIFICATION",
        Message::Keepalive => "KEEPALIVE",
        Message::RouteRefresh { .. } => "ROUTE-REFRESH",
    }
}

#[cfg(test)]
mod tests;
