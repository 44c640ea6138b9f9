//! vc5's route health injection: announce the VIPs whose services are healthy
//! to the routers, through BIRD when it runs on the host, or through a small
//! built-in BGP-4 speaker when it does not.
//!
//! The daemon talks to one type, [`Announcer`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), vc5_bird_bridge::ConfigError> {
//! use std::collections::BTreeSet;
//! use vc5_bird_bridge::{Announcer, AnnouncerConfig};
//!
//! // From --address, rhi.as_number and rhi.peers; then --bird-socket,
//! // --bird-include and the other rhi keys.
//! let mut cfg = AnnouncerConfig::new("192.0.2.11".parse().unwrap(), 65000,
//!                                    vec!["192.0.2.1".parse().unwrap()]);
//! cfg.bird_socket = "/run/bird/bird.ctl".into();
//! cfg.bird_include = "/run/vc5/bird-vips.conf".into();
//! // With the VIPs that may be announced from the start (generation 1):
//! let vips: BTreeSet<std::net::IpAddr> = ["203.0.113.10".parse().unwrap()].into();
//! let (rhi, mut changes) = Announcer::start(cfg, vips)?;
//!
//! // Whenever the healthy set changes (the full set, idempotent):
//! let vips: BTreeSet<std::net::IpAddr> =
//!     ["203.0.113.10".parse().unwrap(), "203.0.113.11".parse().unwrap()].into();
//! let generation = rhi.set_vips(vips);
//!
//! // SIGHUP: the new configuration, in place (new communities reach the
//! // routers as UPDATEs, nothing is withdrawn).
//! # let mut new_cfg = AnnouncerConfig::new("192.0.2.11".parse().unwrap(), 65000,
//! #                                        vec!["192.0.2.1".parse().unwrap()]);
//! # new_cfg.bird_socket = "/run/bird/bird.ctl".into();
//! # new_cfg.bird_include = "/run/vc5/bird-vips.conf".into();
//! new_cfg.communities = vec![(65000, 100)];
//! rhi.reconfigure(new_cfg)?;
//!
//! // The interface came back up: idle BGP peers reconnect at once.
//! rhi.reconnect_now();
//!
//! // Status for the console, D-Bus and /metrics; `changes` sees every update.
//! let s = rhi.status();
//! println!("mode {} announced {:?} latency {:?}", s.mode, s.announced, s.apply_latency);
//! # let _ = (generation, changes.changed().await);
//!
//! // SIGTERM: withdraw everything, then exit.
//! rhi.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Modes
//!
//! See [`announcer`] for the rule: BIRD if its control socket answers, else
//! the built-in speaker to the configured peers; re-evaluated while running.
//!
//! ## BIRD: one include file and `configure`
//!
//! vc5 never edits the operator's `bird.conf`. It writes one include file
//! (see [`bird::include`] for its contents and the protocol names `vc5_vips4`
//! and `vc5_vips6` that the operator's filters match) and tells BIRD to
//! `configure`. Two designs were measured against a real BIRD 2.0.12 on this
//! project's 2-core VM, with a second BIRD as the router (eBGP over a veth
//! pair in network namespaces; `scripts/measure_bird_strategies.py`):
//!
//! - (a) one static protocol per family whose routes are the VIPs; the file is
//!   rewritten and `configure` sent;
//! - (b) one static protocol per VIP, declared once, switched by `enable` and
//!   `disable` (`configure` still needed for VIPs never seen before).
//!
//! | design | VIPs | command | VIP seen at router | withdrawn at router | all VIPs at once (up / down) | BIRD memory |
//! | --- | --- | --- | --- | --- | --- | --- |
//! | (a) | 1 | 1.5 ms | 1.5 ms | 1.6 ms | 1.5 / 1.5 ms | 68 kB |
//! | (b) | 1 | 1.2 ms | 1.3 ms | 1.3 ms | 1.2 / 1.4 ms | 60 kB |
//! | (a) | 500 | 1.8 ms | 1.9 ms | 1.9 ms | 13 / 10 ms | 315 kB |
//! | (b) | 500 | 1.4 ms | 1.4 ms | 2.1 ms | 425 / 294 ms | 1.36 MB |
//!
//! (medians of 20 changes of one VIP beside N others; "all at once" is N VIPs
//! coming up or going down together, as at start-up and shutdown.)
//!
//! Both are far under the 100 ms target for a single change; (b) saves about
//! 0.4 ms there, but costs 30× more when many VIPs change at once, four times
//! BIRD's memory, one protocol per VIP in every `show protocols`, and a
//! second source of truth (each protocol's enabled state, lost when BIRD
//! restarts, so it must be written to the file anyway and reconciled). vc5
//! uses **(a)**: the file is the whole truth, a restarted BIRD reads it, and
//! one `configure` applies any change. Its costs, documented for operators:
//! `configure` also loads whatever the operator changed in `bird.conf`
//! meanwhile, and while `bird.conf` does not parse, vc5 cannot change the
//! VIPs (BIRD keeps its previous configuration, vc5 reports BIRD's error with
//! file, line and column and retries every few seconds).
//!
//! End to end (`vc5-rhi-bench`: `set_vips` until a BIRD router's RIB has or
//! no longer has the VIP, polled over its control socket; medians of 30):
//!
//! | mode | include on | other VIPs | announce | withdraw |
//! | --- | --- | --- | --- | --- |
//! | bird | tmpfs | 0 | 1.3 ms (max 2.4) | 1.1 ms (max 2.3) |
//! | bird | tmpfs | 500 | 2.4 ms (p90 4.4) | 1.8 ms (p90 2.6) |
//! | bird | ext4 | 0 | 8 ms (p90 32) | 9 ms (p90 25) |
//! | bgp | any | 0 | 0.08 ms (max 0.25) | 0.08 ms (max 0.21) |
//! | bgp | any | 500 | 0.18 ms (p90 0.31) | 0.13 ms (p90 0.21) |
//!
//! In BIRD mode the include's two fsyncs dominate on a disk; `/run/vc5` (the
//! default) is a tmpfs on systemd hosts, where they are free.
//!
//! ## The built-in speaker
//!
//! See [`bgp`]: BGP-4 with 4-octet AS and multiprotocol IPv4/IPv6 unicast,
//! an explicit session state machine ([`bgp::fsm`]) per peer task, typed
//! decode errors that map to RFC 4271 NOTIFICATIONs ([`bgp::codec`]).
//!
//! ## Testing
//!
//! `vc5_testkit::bird` (the unpublished `vc5-testkit` crate) builds network
//! namespaces and runs BIRD, FRR and GoBGP in them; the integration tests
//! under `tests/` need root and the Debian packages `bird2`, `frr` and
//! `gobgpd`. `vc5-rhi-bench` lives there too.

pub mod announcer;
pub mod bgp;
pub mod bird;
mod desired;
pub mod status;

pub use announcer::{Announcer, AnnouncerConfig, AnnouncerHandle, ConfigError};

/// Whether the announcer's tasks are to stop: asked to, or their handle is
/// gone (a closed channel is ready for ever, so a loop that only waited on
/// it would spin).
pub(crate) fn stop_asked(stop: &tokio::sync::watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}
pub use status::{BirdProtocol, BirdStatus, Mode, PeerStatus, Status};
