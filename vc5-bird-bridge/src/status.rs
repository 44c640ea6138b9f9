//! What the announcer reports: the mode, the state of BIRD or of each BGP
//! peer, the last error, what is announced, and when.
//!
//! Times are wall-clock ([`SystemTime`]) for display; latencies are measured
//! on the monotonic clock and given as [`Duration`]s.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::bgp::fsm::State;
use crate::bird::reply::Position;

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

/// Everything the announcer reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The current mode.
    pub mode: Mode,
    /// The desired set (the last `set_vips`).
    pub desired: BTreeSet<IpAddr>,
    /// Its generation (1 for the first `set_vips`).
    pub desired_generation: u64,
    /// When that `set_vips` was called.
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
}
