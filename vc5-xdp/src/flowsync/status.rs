//! Names of what `vc5-flowsync` publishes in the pinned `sync_status`
//! map ([`crate::maps::SyncStatus`]): the reasons a datagram is rejected,
//! by their index in `SyncStatus::rejects`. vc5d reads the map and shows
//! the counters under these names (status, console, `/metrics`, D-Bus).

use crate::maps::SYNC_REASONS;

/// Reject reasons in `SyncStatus::rejects` order. The names are those of
/// [`super::DecodeError::reason`] and [`super::ReplayError::reason`];
/// `other` counts anything else (a reason added later, say).
pub const REASONS: [&str; SYNC_REASONS] = [
    "short",
    "oversize",
    "bad_magic",
    "bad_version",
    "bad_type",
    "bad_reserved",
    "unknown_key",
    "auth",
    "too_many_records",
    "bad_record",
    "trailing",
    "old_epoch",
    "duplicate",
    "too_old",
    "stale",
    "other",
];

/// The index of a reason's counter (`other` for a name not listed).
pub fn reason_index(name: &str) -> usize {
    REASONS
        .iter()
        .position(|r| *r == name)
        .unwrap_or(SYNC_REASONS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter() {
        for (i, r) in REASONS.iter().enumerate() {
            assert_eq!(reason_index(r), i);
        }
        assert_eq!(reason_index("no such reason"), SYNC_REASONS - 1);
    }
}
