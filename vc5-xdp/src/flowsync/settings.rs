//! Flow-sync settings: the configuration keys `vc5-flowsync` and vc5d
//! share, with their named defaults. vc5d's loader (the root package's
//! `config` module) validates these keys strictly, with positions; this module
//! holds only the values and their bounds, so both processes agree.

use std::time::Duration;

/// `flow_sync_wait`: how long vc5d holds its VIP announcements at start for
/// vc5-flowsync to report that its resync finished (a restarted load
/// balancer that announced at once would attract connections whose flows
/// it has not learnt yet).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// Upper bound of `flow_sync_wait`.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// `flow_sync_rate`: flow records per second accepted from one sender
/// (token bucket, one second of burst); records beyond it are counted as
/// `rate_limited` and dropped, so even a peer holding the key cannot flood
/// the peer tables or this host's CPU.
pub const DEFAULT_RATE: u32 = 200_000;
/// `flow_sync_resync_rate`: flow records per second this host sends when it
/// answers a peer's hello with its flows (the resync dump).
pub const DEFAULT_RESYNC_RATE: u32 = 50_000;
/// Bounds of both rates.
pub const MIN_RATE: u32 = 100;
pub const MAX_RATE: u32 = 10_000_000;
