//! The desired set of VIPs and the attributes to announce them with, as
//! handed from the announcer to BIRD's driver and to every peer task through
//! a `watch` channel (only the latest matters). The attributes travel with
//! the VIPs so that a reload that changes only them is one more generation
//! applied in place, never a withdraw and re-announce.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use crate::bird::include::RouteOptions;

/// One desired set: the one given to `Announcer::start`, then one per
/// change by `set_vips` or `reconfigure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// 1 for the set given to `Announcer::start`, then 2, 3, …
    pub generation: u64,
    /// Every VIP to announce.
    pub vips: BTreeSet<IpAddr>,
    /// Communities, MED and LOCAL_PREF on every VIP route.
    pub routes: RouteOptions,
    /// When it was requested (wall clock, for reports).
    pub requested_at: SystemTime,
    /// When it was requested (monotonic, for latencies).
    pub requested_instant: Instant,
}

impl Desired {
    /// The set the announcer starts with: generation 1.
    pub fn first(vips: BTreeSet<IpAddr>, routes: RouteOptions) -> Desired {
        Desired {
            generation: 1,
            vips,
            routes,
            requested_at: SystemTime::now(),
            requested_instant: Instant::now(),
        }
    }
}
