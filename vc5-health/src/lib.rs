//! Health checks for vc5: probing real servers, and deciding from the results which
//! reals, services and VIPs are healthy.
//!
//! The crate knows nothing of the daemon, its configuration file, the data plane or
//! D-Bus: the daemon's configuration holds this crate's [`CheckKind`]s (with their
//! defaults, from here), the daemon makes a [`CheckSpec`] of each for each real,
//! hands them to a [`Monitor`], and folds the [`Event`]s it gets back through the pure functions
//! of [`rules`] into real states, service states and the set of announceable VIPs.
//!
//! - [`spec`]: what a check is (tcp, http, https, dns), with every default, and
//!   DNS record types and response codes by name.
//! - [`probe`]: running a check once, bounded by its timeout, into an [`Outcome`]
//!   with a human-readable [`Failure`] reason.
//! - [`hysteresis`]: rise/fall, with the first result deciding the initial state.
//! - [`rules`]: quorum, real states, `need`, and the VIP announcement rule.
//! - [`monitor`]: many checks run continuously on tokio, deduplicated, jittered,
//!   replaceable at any time, reporting transitions through a channel.
//! - [`netns`]: a network namespace held by a thread, for checks whose
//!   sockets must live there (vc5d's probes through the VIP).
//!
//! # How the daemon drives it
//!
//! On start and on every reload, the daemon turns each (service, real, check) of
//! its configuration into a `(id, CheckSpec)` pair, gives the whole list to
//! [`Monitor::set_checks`], and asks for a snapshot. It keeps a map from id to
//! [`CheckState`], replaced by each [`Event::Snapshot`] and updated by each
//! [`Event::Transition`]; after each event it recomputes what changed through
//! [`verdict`], [`real_state`], [`service_up`] and [`announceable_vips`].
//!
//! ```no_run
//! use std::collections::HashMap;
//! use std::net::{IpAddr, SocketAddr};
//! use vc5_health::*;
//!
//! /// The daemon's id for a check: (service, real, check name).
//! type Id = (String, IpAddr, String);
//!
//! # async fn daemon(address: IpAddr) -> Result<(), MonitorError> {
//! let (monitor, mut events) = Monitor::<Id>::start();
//! let vip = IpAddr::from([192, 0, 2, 1]);
//! let real = IpAddr::from([10, 0, 0, 1]);
//! let id: Id = ("web".into(), real, "http:80".into());
//! let spec = CheckSpec::http(SocketAddr::new(real, 80)).with_source(address);
//! monitor.set_checks([(id.clone(), spec)]).await?;
//! monitor.request_snapshot()?;
//!
//! let mut states: HashMap<Id, CheckState> = HashMap::new();
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Snapshot(all) => states = all.into_iter().map(|s| (s.id, s.state)).collect(),
//!         Event::Transition(t) => {
//!             states.insert(t.id, t.to);
//!         }
//!     }
//!     let checks = [&id].map(|id| states.get(id).copied().unwrap_or(CheckState::Unknown));
//!     let real_state = real_state(Admin::default(), verdict(Quorum::All, checks));
//!     let up = service_up(1, [real_state]);
//!     let announce = announceable_vips([(vip, up)]);
//!     println!("{real}: {real_state}; announce {announce:?}");
//! }
//! # Ok(()) }
//! ```

pub mod hysteresis;
pub mod monitor;
pub mod netns;
pub mod outcome;
pub mod probe;
pub mod rules;
pub mod spec;

pub use hysteresis::{CheckState, CheckTracker, Hysteresis};
pub use monitor::{Applied, CheckStatus, Event, Latest, Monitor, MonitorError, Transition};
pub use netns::Netns;
pub use outcome::{Failure, Outcome, Phase};
pub use probe::Prober;
pub use rules::{
    Admin, Quorum, RealState, Verdict, announceable_vips, real_state, service_up, verdict,
};
pub use spec::{
    CaCerts, CheckKind, CheckSpec, DnsCheck, DnsTransport, HttpCheck, RecordType, ResponseCode,
    SpecError, TlsVerify,
};

/// A random number, for DNS ids and start-time jitter. Neither needs cryptographic
/// quality, so std's SipHash over a counter does, without a `rand` dependency: its
/// keys come from a random per-thread seed, which each `RandomState` advances.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}
