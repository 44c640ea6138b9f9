//! Flow sync as vc5d sees it: vc5-flowsync's published status, read from
//! the pinned `sync_status` map, and the hold of the VIP announcements until
//! it has resynced.

use super::control::{Control, Plane};
use super::unix_ms;
use crate::status::{FlowSyncLocal, FlowSyncPeer, FlowSyncStatus};
use std::net::IpAddr;
use std::time::{Instant, SystemTime};
use tracing::{info, warn};
use vc5_xdp::flowsync::status::REASONS;
use vc5_xdp::maps::{SYNC_RESYNCING, SYNC_STARTING, SYNC_SYNCED, SyncStatus};

/// vc5-flowsync counts as running while its heartbeat is at most this old.
pub(super) const HEARTBEAT_FRESH_MS: u64 = 2000;

/// Whether this host's vc5-flowsync runs: it is on and its heartbeat is
/// fresh (a crashed one leaves its last entry behind).
pub(super) fn flowsync_running(own: &SyncStatus, now_ms: u64) -> bool {
    own.on != 0 && own.updated_ms != 0 && now_ms.abs_diff(own.updated_ms) <= HEARTBEAT_FRESH_MS
}

/// Whether vc5-flowsync says its resync is done; if not, why, for the log.
/// An entry claiming to have started in the future is not believed.
pub(super) fn sync_done(own: &SyncStatus, now_ms: u64) -> Result<(), String> {
    if !flowsync_running(own, now_ms) {
        return Err(if own.updated_ms == 0 {
            "vc5-flowsync has not run against these maps".into()
        } else {
            format!(
                "vc5-flowsync is not running (last heartbeat {} ms ago, on={})",
                now_ms.saturating_sub(own.updated_ms),
                own.on
            )
        });
    }
    if own.started_ms > now_ms {
        return Err(format!(
            "vc5-flowsync's start is {} ms in the future",
            own.started_ms - now_ms
        ));
    }
    if own.state != SYNC_SYNCED {
        return Err(format!("vc5-flowsync is {}", sync_state(own)));
    }
    Ok(())
}

/// Entry 0's state in words.
pub(super) fn sync_state(own: &SyncStatus) -> String {
    match own.state {
        _ if own.started_ms == 0 && own.updated_ms == 0 => "none".into(),
        SYNC_STARTING => "starting".into(),
        SYNC_RESYNCING => "resyncing".into(),
        SYNC_SYNCED => "synced".into(),
        n => format!("unknown ({n})"),
    }
}

/// A `sync_status` address (IPv4 mapped); None when unset.
pub(super) fn sync_addr(a: [u8; 16]) -> Option<IpAddr> {
    if a == [0; 16] {
        return None;
    }
    let v6 = std::net::Ipv6Addr::from(a);
    Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
}

pub(super) fn rejects(counts: &[u64]) -> std::collections::BTreeMap<String, u64> {
    REASONS
        .iter()
        .zip(counts)
        .map(|(r, n)| (r.to_string(), *n))
        .collect()
}

impl<P: Plane> Control<P> {
    /// Starts the flow-sync hold at start-up, unless flow sync is not
    /// configured or vc5-flowsync has resynced already (it kept running
    /// while vc5d restarted).
    pub(super) fn begin_sync_hold(&mut self, started: Instant) {
        if !self.cfg.flow_sync() {
            if self.cfg.multicast.is_some() {
                info!("flow sync is off: multicast is set but flow_sync_key is not");
            }
            return;
        }
        match self.read_sync() {
            Ok(()) => {
                info!("flow sync: vc5-flowsync has resynced already; announcing without a hold")
            }
            Err(why) => {
                info!(%why, wait = ?self.cfg.flow_sync_wait, "flow sync: holding VIP announcements until vc5-flowsync has resynced, or for flow_sync_wait at most");
                self.sync_hold = Some(started);
            }
        }
    }

    /// Ends the flow-sync hold when vc5-flowsync has resynced or
    /// `flow_sync_wait` has passed since vc5d started.
    pub(super) fn poll_sync_hold(&mut self, now: Instant) {
        let Some(since) = self.sync_hold else { return };
        match self.read_sync() {
            Ok(()) => {
                info!(held = ?since.elapsed(), "flow sync: vc5-flowsync has resynced; hold over, announcing the VIPs");
            }
            Err(why) if now >= since + self.cfg.flow_sync_wait => {
                warn!(%why, wait = ?self.cfg.flow_sync_wait, "flow sync: flow_sync_wait passed without vc5-flowsync's resync; hold over, announcing the VIPs anyway");
            }
            Err(_) => return,
        }
        self.end_sync_hold();
    }

    /// Reads what vc5-flowsync published and says whether its resync is
    /// done (if not, why).
    pub(super) fn read_sync(&mut self) -> Result<(), String> {
        let s = self
            .dp
            .sync_status()
            .map_err(|e| format!("reading sync_status: {e}"))?;
        let done = sync_done(&s.0, unix_ms(SystemTime::now()));
        self.sync = Some(s);
        done
    }

    pub(super) fn end_sync_hold(&mut self) {
        self.sync_hold = None;
        if let Some(rhi) = &self.rhi {
            rhi.set_vips(self.to_announce());
        }
        self.publish();
    }

    /// Flow sync for the status.
    pub(super) fn flow_sync_status(&self, now_ms: u64) -> FlowSyncStatus {
        let configured = self.cfg.flow_sync();
        let (own, peers) = match (&self.sync, configured) {
            (Some((own, peers)), true) => (*own, peers.as_slice()),
            _ => (SyncStatus::default(), &[][..]),
        };
        FlowSyncStatus {
            configured,
            group: self.cfg.multicast.map(|m| m.to_string()),
            wait_ms: self.cfg.flow_sync_wait.as_millis() as u64,
            holding_announcements: self.sync_hold.is_some(),
            holding_until_ms: if self.sync_hold.is_some() {
                self.started_ms + self.cfg.flow_sync_wait.as_millis() as u64
            } else {
                0
            },
            local: FlowSyncLocal {
                running: flowsync_running(&own, now_ms),
                state: sync_state(&own),
                sender: format!("{:x}", own.sender),
                epoch: own.epoch,
                addr: sync_addr(own.addr),
                started_ms: own.started_ms,
                heartbeat_ms: own.updated_ms,
                sent_datagrams: own.datagrams,
                sent_records: own.records,
                lost_events: own.lost,
                rejects: rejects(&own.rejects),
            },
            peers: peers
                .iter()
                .map(|p| FlowSyncPeer {
                    addr: sync_addr(p.addr),
                    sender: format!("{:x}", p.sender),
                    epoch: p.epoch,
                    datagrams: p.datagrams,
                    records: p.records,
                    written: p.written,
                    gaps: p.gaps,
                    unknown_real: p.unknown_real,
                    rate_limited: p.rate_limited,
                    rejects: rejects(&p.rejects),
                    last_heard_ms: p.updated_ms,
                    last_heard_ago_ms: now_ms.saturating_sub(p.updated_ms),
                    delay_p50_us: p.delay_p50_us,
                    delay_p99_us: p.delay_p99_us,
                    delay_max_us: p.delay_max_us,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod flow_sync_tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn synced() -> SyncStatus {
        SyncStatus {
            on: 1,
            state: SYNC_SYNCED,
            started_ms: NOW - 5_000,
            updated_ms: NOW - 100,
            ..SyncStatus::default()
        }
    }

    #[test]
    fn the_hold_ends_only_on_a_fresh_synced_entry_that_started_in_the_past() {
        assert_eq!(sync_done(&synced(), NOW), Ok(()));
        // Never ran: all zero.
        let e = sync_done(&SyncStatus::default(), NOW).unwrap_err();
        assert!(e.contains("has not run"), "{e}");
        // Still resyncing, or starting.
        for (state, word) in [(SYNC_RESYNCING, "resyncing"), (SYNC_STARTING, "starting")] {
            let e = sync_done(&SyncStatus { state, ..synced() }, NOW).unwrap_err();
            assert!(e.contains(word), "{e}");
        }
        // A stale heartbeat: it crashed after it had synced.
        let stale = SyncStatus {
            updated_ms: NOW - HEARTBEAT_FRESH_MS - 1,
            ..synced()
        };
        let e = sync_done(&stale, NOW).unwrap_err();
        assert!(e.contains("not running (last heartbeat 2001 ms ago"), "{e}");
        assert!(
            sync_done(
                &SyncStatus {
                    updated_ms: NOW - HEARTBEAT_FRESH_MS,
                    ..synced()
                },
                NOW
            )
            .is_ok()
        );
        // Stopped cleanly (on = 0) less than a heartbeat ago.
        assert!(sync_done(&SyncStatus { on: 0, ..synced() }, NOW).is_err());
        // A heartbeat or a start in the future is not believed.
        assert!(
            sync_done(
                &SyncStatus {
                    updated_ms: NOW + 60_000,
                    ..synced()
                },
                NOW
            )
            .is_err()
        );
        let e = sync_done(
            &SyncStatus {
                started_ms: NOW + 10,
                ..synced()
            },
            NOW,
        )
        .unwrap_err();
        assert!(e.contains("in the future"), "{e}");
    }

    #[test]
    fn states_addresses_and_rejects_in_words() {
        assert_eq!(sync_state(&SyncStatus::default()), "none");
        assert_eq!(sync_state(&synced()), "synced");
        assert_eq!(
            sync_state(&SyncStatus {
                state: 7,
                ..synced()
            }),
            "unknown (7)"
        );
        assert_eq!(sync_addr([0; 16]), None);
        let v4 = vc5_xdp::maps::addr16("203.0.113.7".parse().unwrap());
        assert_eq!(sync_addr(v4), Some("203.0.113.7".parse().unwrap()));
        let v6 = vc5_xdp::maps::addr16("2001:db8::7".parse().unwrap());
        assert_eq!(sync_addr(v6), Some("2001:db8::7".parse().unwrap()));
        let mut counts = [0u64; vc5_xdp::maps::SYNC_REASONS];
        counts[vc5_xdp::flowsync::status::reason_index("auth")] = 3;
        let r = rejects(&counts);
        assert_eq!(r.len(), REASONS.len());
        assert_eq!(r["auth"], 3);
        assert_eq!(r["duplicate"], 0);
    }
}
