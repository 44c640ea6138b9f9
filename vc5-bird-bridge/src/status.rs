//! What the announcer reports: the mode, the state of BIRD or of each BGP
//! peer, the last error, what is announced, and when.
//!
//! Times are wall-clock ([`SystemTime`]) for display; latencies are measured
//! on the monotonic clock and given as [`Duration`]s.
//!
//! One task writes a [`Status`]: the announcer's. BIRD's driver and the BGP
//! peer tasks send it reports (`BirdReport`, `PeerReport`); the rules
//! that turn a report into the status are the `apply_*` methods here, pure
//! functions of the status and the report.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::bgp::PeerReport;
use crate::bgp::fsm::State;
use crate::bird::driver::BirdReport;
use crate::bird::reply::Position;
use crate::desired::Desired;

/// Which way VIPs reach the routers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Deciding (the first BIRD probe has not finished).
    #[default]
    Starting,
    /// Through BIRD, driven over its control socket.
    Bird,
    /// Through the built-in BGP speaker, to the configured peers.
    Bgp,
    /// No BIRD answers and no BGP peers are configured: nothing is announced.
    Inactive,
    /// [`crate::AnnouncerHandle::shutdown`] has completed.
    Stopped,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Starting => "starting",
            Mode::Bird => "bird",
            Mode::Bgp => "bgp",
            Mode::Inactive => "inactive",
            Mode::Stopped => "stopped",
        })
    }
}

/// One protocol line of BIRD's `show protocols` (for the operator's view of
/// BIRD's own BGP sessions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdProtocol {
    /// Protocol name.
    pub name: String,
    /// Protocol type (`BGP`, `Static`, …).
    pub proto: String,
    /// `up`, `start`, `down`, …
    pub state: String,
    /// The info column (e.g. `Established`, `Active  Socket: Connection refused`).
    pub info: String,
}

/// BIRD's side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BirdStatus {
    /// The control socket.
    pub socket: PathBuf,
    /// The include file vc5 maintains.
    pub include: PathBuf,
    /// Whether a control connection is open.
    pub connected: bool,
    /// BIRD's version, from its greeting.
    pub version: Option<String>,
    /// The last error talking to BIRD, or BIRD's rejection of a configuration.
    pub last_error: Option<String>,
    /// Where BIRD found a configuration error (file, line, column).
    pub error_position: Option<Position>,
    /// The VIPs BIRD's running configuration has (the last accepted include).
    pub configured: BTreeSet<IpAddr>,
    /// Connections made so far (more than one: BIRD restarted or the socket broke).
    pub connections: u64,
    /// Protocols as BIRD last listed them.
    pub protocols: Vec<BirdProtocol>,
}

/// One BGP peer of the built-in speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's address.
    pub address: IpAddr,
    /// Session state.
    pub state: State,
    /// The peer's AS once its OPEN was accepted.
    pub remote_as: Option<u32>,
    /// The peer's BGP identifier.
    pub remote_id: Option<std::net::Ipv4Addr>,
    /// Negotiated hold time.
    pub hold_time: Option<u16>,
    /// Since when the session is Established.
    pub established_since: Option<SystemTime>,
    /// Why the last session failed or ended.
    pub last_error: Option<String>,
    /// When the next connection attempt is due (in Idle).
    pub next_retry_in: Option<Duration>,
    /// Connection attempts so far.
    pub connect_attempts: u64,
    /// What the peer has from us.
    pub announced: BTreeSet<IpAddr>,
    /// Desired VIPs this session cannot carry (family not negotiated, or no
    /// next hop for it).
    pub unannounceable: BTreeSet<IpAddr>,
    /// The last generation of the desired set sent to this peer.
    pub applied_generation: Option<u64>,
}

impl PeerStatus {
    /// A peer whose task has just started.
    pub(crate) fn idle(address: IpAddr) -> PeerStatus {
        PeerStatus {
            address,
            state: State::Idle,
            remote_as: None,
            remote_id: None,
            hold_time: None,
            established_since: None,
            last_error: None,
            next_retry_in: None,
            connect_attempts: 0,
            announced: BTreeSet::new(),
            unannounceable: BTreeSet::new(),
            applied_generation: None,
        }
    }
}

/// Everything the announcer reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The current mode.
    pub mode: Mode,
    /// The desired set (the one given to `Announcer::start`, or the last
    /// `set_vips`).
    pub desired: BTreeSet<IpAddr>,
    /// Its generation (1 for the set given to `Announcer::start`; 0 only in
    /// a status no announcer made).
    pub desired_generation: u64,
    /// When that set was requested.
    pub requested_at: Option<SystemTime>,
    /// What is announced now: in BIRD mode what BIRD's running configuration
    /// has; in BGP mode what at least one Established peer has.
    pub announced: BTreeSet<IpAddr>,
    /// The last generation fully handed over (to BIRD, or to every
    /// Established peer).
    pub applied_generation: Option<u64>,
    /// When it was handed over.
    pub applied_at: Option<SystemTime>,
    /// From `set_vips` to handed over, for that generation.
    pub apply_latency: Option<Duration>,
    /// The most recent error of any part, for a one-line report.
    pub last_error: Option<String>,
    /// BIRD's side (also filled in BGP mode: why BIRD is not used).
    pub bird: BirdStatus,
    /// The built-in speaker's peers (empty in BIRD mode).
    pub peers: Vec<PeerStatus>,
}

impl Status {
    /// Whether the desired set is what is announced.
    pub fn in_sync(&self) -> bool {
        self.applied_generation == Some(self.desired_generation) && self.announced == self.desired
    }

    /// Takes the desired set `d` in, if it is newer than the one shown.
    /// Returns whether anything changed. Applied before every report, so
    /// that a generation is never shown applied before it is shown desired.
    pub(crate) fn refresh_desired(&mut self, d: &Desired) -> bool {
        if self.desired_generation == d.generation {
            return false;
        }
        self.desired = d.vips.clone();
        self.desired_generation = d.generation;
        self.requested_at = Some(d.requested_at);
        true
    }

    /// Files a BGP peer's report under its address and recomputes what the
    /// peers have together; `desired` is the latest desired set. A report
    /// for a peer not listed (a speaker already replaced) is dropped.
    /// Returns whether anything changed.
    pub(crate) fn apply_peer(&mut self, r: PeerReport, desired: &Desired) -> bool {
        let Some(slot) = self.peers.iter_mut().find(|p| p.address == r.peer) else {
            return false;
        };
        if *slot == r.status {
            return false;
        }
        *slot = r.status;
        self.aggregate(desired, r.at, r.at_instant);
        true
    }

    /// Recomputes the speaker-wide fields from the peers.
    fn aggregate(&mut self, desired: &Desired, now_sys: SystemTime, now: std::time::Instant) {
        let up: Vec<&PeerStatus> = self
            .peers
            .iter()
            .filter(|p| p.state == State::Established)
            .collect();
        self.announced = up
            .iter()
            .flat_map(|p| p.announced.iter().copied())
            .collect::<BTreeSet<_>>();
        let applied = up.iter().map(|p| p.applied_generation).min().flatten();
        if applied.is_some() && applied != self.applied_generation {
            self.applied_generation = applied;
            self.applied_at = Some(now_sys);
            if applied == Some(desired.generation) {
                self.apply_latency = Some(now.saturating_duration_since(desired.requested_instant));
            }
        }
        self.last_error = self
            .peers
            .iter()
            .filter(|p| p.state != State::Established)
            .find_map(|p| {
                p.last_error
                    .as_ref()
                    .map(|e| format!("peer {}: {e}", p.address))
            });
    }

    /// Takes BIRD's driver's report in. Returns whether anything changed.
    pub(crate) fn apply_bird(&mut self, r: BirdReport) -> bool {
        match r {
            BirdReport::Connected { version } => {
                self.mode = Mode::Bird;
                self.peers.clear();
                self.bird.connected = true;
                self.bird.version = version;
                self.bird.connections += 1;
            }
            BirdReport::Disconnected(e) => {
                self.bird.connected = false;
                self.last_error = Some(format!("BIRD: {e}"));
                self.bird.last_error = Some(e);
            }
            BirdReport::Failed {
                message, position, ..
            } => {
                // A retry that fails the same way changes nothing.
                if self.bird.last_error.as_deref() == Some(message.as_str()) {
                    return false;
                }
                self.last_error = Some(format!("BIRD: {message}"));
                self.bird.last_error = Some(message);
                self.bird.error_position = position;
            }
            BirdReport::Configured {
                generation,
                vips,
                protocols,
                at,
                latency,
            } => {
                self.bird.configured = vips.clone();
                self.bird.last_error = None;
                self.bird.error_position = None;
                merge_protocols(&mut self.bird.protocols, protocols);
                self.announced = vips;
                self.applied_generation = Some(generation);
                self.applied_at = Some(at);
                self.apply_latency = Some(latency);
                self.last_error = None;
            }
            BirdReport::Protocols(protocols) => {
                if self.bird.protocols == protocols {
                    return false;
                }
                self.bird.protocols = protocols;
            }
            BirdReport::Stopped(result) => {
                self.mode = Mode::Stopped;
                self.bird.connected = false;
                match result {
                    Err(e) => {
                        self.last_error = Some(format!("BIRD: {e}"));
                        self.bird.last_error = Some(e);
                    }
                    Ok(()) => {
                        self.bird.configured.clear();
                        self.announced.clear();
                    }
                }
            }
        }
        true
    }
}

/// Replaces the entries of `new`'s protocols in `list`, keeping the others.
fn merge_protocols(list: &mut Vec<BirdProtocol>, new: Vec<BirdProtocol>) {
    for p in new {
        match list.iter_mut().find(|q| q.name == p.name) {
            Some(q) => *q = p,
            None => list.push(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("addr")
    }

    fn up(address: &str, announced: &[&str], generation: u64) -> PeerReport {
        let mut status = PeerStatus::idle(ip(address));
        status.state = State::Established;
        status.announced = announced.iter().map(|a| ip(a)).collect();
        status.applied_generation = Some(generation);
        PeerReport {
            peer: ip(address),
            status,
            at: SystemTime::now(),
            at_instant: Instant::now(),
        }
    }

    #[test]
    fn peer_reports_are_filed_by_address() {
        let mut s = Status::default();
        let d = Desired::first(BTreeSet::from([ip("203.0.113.10")]), Default::default());
        s.refresh_desired(&d);
        s.peers = vec![
            PeerStatus::idle(ip("192.0.2.2")),
            PeerStatus::idle(ip("192.0.2.3")),
        ];

        // The second peer, whatever its position.
        assert!(s.apply_peer(up("192.0.2.3", &["203.0.113.10"], 1), &d));
        assert_eq!(s.peers[0].state, State::Idle);
        assert_eq!(s.peers[1].state, State::Established);
        assert_eq!(s.announced, d.vips);
        // Only Established peers count towards what is applied.
        assert_eq!(s.applied_generation, Some(1));
        assert!(s.in_sync());

        // The same again changes nothing; an unknown peer is dropped.
        assert!(!s.apply_peer(up("192.0.2.3", &["203.0.113.10"], 1), &d));
        assert!(!s.apply_peer(up("192.0.2.9", &[], 1), &d));
        assert_eq!(s.peers.len(), 2);
    }

    #[test]
    fn desired_comes_before_applied() {
        let mut s = Status::default();
        let d = Desired::first(BTreeSet::from([ip("203.0.113.10")]), Default::default());
        assert!(s.refresh_desired(&d));
        assert!(!s.refresh_desired(&d));
        assert_eq!((s.desired_generation, &s.desired), (1, &d.vips));
        assert!(s.apply_bird(BirdReport::Configured {
            generation: 1,
            vips: d.vips.clone(),
            protocols: vec![],
            at: SystemTime::now(),
            latency: Duration::from_millis(1),
        }));
        assert!(s.in_sync());
        // The same refusal twice is one change.
        let failed = || BirdReport::Failed {
            message: "syntax error".into(),
            position: None,
            log: true,
        };
        assert!(s.apply_bird(failed()));
        assert!(!s.apply_bird(failed()));
        assert_eq!(s.last_error.as_deref(), Some("BIRD: syntax error"));
    }
}
