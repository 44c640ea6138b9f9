//! The fallback BGP-4 speaker, used when no BIRD answers on the control socket.
//!
//! - [`codec`]: messages, framing, RFC 4271 error mapping;
//! - [`fsm`]: the session state machine, without I/O;
//! - [`peer`]: one task per peer, owning its connection and machine.
//!
//! The peer tasks do not write the announcer's status: each reports its own
//! (`PeerReport`, keyed by the peer's address) over the
//! speaker's channel, and the announcer's task, which alone owns the
//! status, files it and recomputes what the peers have together.
//!
//! The speaker opens a session to every configured peer (TCP 179, from
//! `--address`), with the 4-octet AS capability and multiprotocol IPv4 and
//! IPv6 unicast, and announces the desired VIPs as /32 and /128 routes: IPv4
//! in the classic NLRI field with NEXT_HOP `--address`, IPv6 in
//! MP_REACH_NLRI with next hop `next_hop6` (or `--address` when it is IPv6).
//! On eBGP the AS_PATH is our AS; on iBGP it is empty and LOCAL_PREF is sent.

pub mod codec;
pub mod fsm;
pub mod peer;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::desired::Desired;
pub(crate) use peer::PeerReport;
pub use peer::{PeerConfig, Transport};

/// Configuration of the built-in speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// Our AS (`rhi.as_number`).
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Proposed hold time (`rhi.hold_time`, default 90).
    pub hold_time: u16,
    /// IPv4 next hop.
    pub next_hop4: Option<Ipv4Addr>,
    /// IPv6 next hop.
    pub next_hop6: Option<Ipv6Addr>,
    /// Communities (AS, value).
    pub communities: Vec<(u16, u16)>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (iBGP only).
    pub local_pref: Option<u32>,
    /// The peers.
    pub peers: Vec<PeerConfig>,
    /// Socket settings.
    pub transport: Transport,
    /// First reconnection delay.
    pub backoff_min: Duration,
    /// Longest reconnection delay.
    pub backoff_max: Duration,
}

impl SpeakerConfig {
    fn fsm_config(&self, p: &PeerConfig) -> fsm::Config {
        fsm::Config {
            local_as: self.local_as,
            router_id: self.router_id,
            hold_time: self.hold_time,
            remote_as: p.remote_as,
            next_hop4: self.next_hop4,
            next_hop6: self.next_hop6,
            communities: community_values(&self.communities),
            med: self.med,
            local_pref: self.local_pref,
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
        }
    }
}

/// Standard communities (AS, value) as the 32-bit values UPDATEs carry.
pub(crate) fn community_values(c: &[(u16, u16)]) -> Vec<u32> {
    c.iter()
        .map(|(a, v)| (u32::from(*a) << 16) | u32::from(*v))
        .collect()
}

/// The running speaker: one task per peer, and the channel they report on.
pub(crate) struct Speaker {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// One channel per speaker: when a speaker is replaced, what its tasks
    /// still say goes nowhere, never into the new speaker's peers.
    reports: mpsc::UnboundedReceiver<PeerReport>,
}

impl Speaker {
    /// Starts a task per peer; they report on [`Speaker::report`]. Each
    /// change of `reconnect` makes idle peers connect at once.
    pub fn start(
        cfg: &SpeakerConfig,
        desired: watch::Receiver<Arc<Desired>>,
        reconnect: watch::Receiver<u64>,
    ) -> Speaker {
        let (stop, stop_rx) = watch::channel(false);
        let (report_tx, reports) = mpsc::unbounded_channel();
        let tasks = cfg
            .peers
            .iter()
            .map(|p| {
                let task = peer::PeerTask {
                    peer: p.clone(),
                    fsm: cfg.fsm_config(p),
                    transport: cfg.transport.clone(),
                    desired: desired.clone(),
                    reconnect: reconnect.clone(),
                    stop: stop_rx.clone(),
                    reports: report_tx.clone(),
                };
                tokio::spawn(task.run())
            })
            .collect();
        Speaker {
            stop,
            tasks,
            reports,
        }
    }

    /// The next report of any peer; pending forever once every task has
    /// ended (so that it can sit in a `select!`).
    pub async fn report(&mut self) -> PeerReport {
        match self.reports.recv().await {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }

    /// Withdraws everything, sends Cease to every peer and waits (at most
    /// `limit`) for the tasks to finish. Returns the reports not yet taken,
    /// their last words (Idle, nothing announced) among them.
    pub async fn shutdown(mut self, limit: Duration) -> Vec<PeerReport> {
        let _ = self.stop.send(true);
        let all = async {
            for t in self.tasks {
                if let Err(e) = t.await {
                    warn!(error = %e, "BGP peer task failed");
                }
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            warn!("BGP peers did not finish within {limit:?}");
        }
        let mut left = Vec::new();
        while let Ok(r) = self.reports.try_recv() {
            left.push(r);
        }
        left
    }
}

/// Checks that UPDATEs with `sc`'s attributes can be built and encoded on
/// any session (eBGP or iBGP, 4-octet AS or not), for routes of both
/// families: the encoder, not a second estimate of it, decides.
pub(crate) fn check_attributes(sc: &SpeakerConfig) -> Result<(), codec::EncodeError> {
    let routes = [
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    ];
    for ibgp in [false, true] {
        for four_octet_as in [true, false] {
            let attrs = codec::RouteAttributes {
                local_as: sc.local_as,
                ibgp,
                // Both families, whether or not this host has next hops
                // for them: the limit is the attributes'.
                next_hop4: Some(sc.next_hop4.unwrap_or(Ipv4Addr::UNSPECIFIED)),
                next_hop6: Some(sc.next_hop6.unwrap_or(Ipv6Addr::UNSPECIFIED)),
                communities: community_values(&sc.communities),
                med: sc.med,
                local_pref: sc.local_pref,
            };
            let codec = codec::Codec { four_octet_as };
            for m in codec::build_updates(&routes, &routes, &attrs, codec)? {
                m.encode(codec)?;
            }
        }
    }
    Ok(())
}

/// The BGP identifier for `address`: the address itself when IPv4, else
/// `fallback` (a router id must be 4 octets).
pub fn router_id_for(address: IpAddr, fallback: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
    match (fallback, address) {
        (Some(id), _) => Some(id),
        (None, IpAddr::V4(a)) => Some(a),
        (None, IpAddr::V6(_)) => None,
    }
}
