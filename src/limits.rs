//! The daemon's file-descriptor budget.
//!
//! Every health check in flight, every BGP session, BIRD's control socket,
//! the D-Bus connection, netlink and each console connection holds a file
//! descriptor. The default soft limit (1,024) is less than a large
//! configuration's checks alone, and running out makes health checks fail
//! with EMFILE, which would take healthy reals out of service. vc5d
//! therefore raises its soft limit to the hard one at start (systemd's unit
//! sets both with `LimitNOFILE`), and says so when even that is short of what
//! the configuration needs.

/// Descriptors beyond the checks: the console's bound, BGP peers, BIRD,
/// D-Bus, netlink, the pinned maps and programs, logs and slack.
pub const BASE_DESCRIPTORS: u64 = crate::console::MAX_CONNECTIONS as u64 + 512;

/// What [`raise_nofile`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nofile {
    /// The soft limit before.
    pub was: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit. A failure to raise it
/// (a seccomp filter, say) leaves the limit as it was: the caller compares
/// `soft` with what it needs.
pub fn raise_nofile() -> std::io::Result<Nofile> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let was = r.rlim_cur;
    if r.rlim_cur < r.rlim_max {
        let want = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            r.rlim_cur = r.rlim_max;
        }
    }
    Ok(Nofile {
        was,
        soft: r.rlim_cur,
        hard: r.rlim_max,
    })
}

/// The descriptors a configuration with `checks` health checks and `peers`
/// BGP peers needs at most: every check may be in flight at once.
pub fn needed(checks: usize, peers: usize) -> u64 {
    BASE_DESCRIPTORS + checks as u64 + peers as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_the_soft_limit_to_the_hard_one() {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above. Lowering the soft limit to 4,096 (from a hard
        // limit above it) harms no other test of this process.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
        let low = r.rlim_max.min(4096);
        let lowered = libc::rlimit {
            rlim_cur: low,
            rlim_max: r.rlim_max,
        };
        // SAFETY: `lowered` is a valid rlimit for setrlimit to read.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
        let n = raise_nofile().unwrap();
        assert_eq!(n.was, low);
        assert_eq!((n.soft, n.hard), (r.rlim_max, r.rlim_max));
    }

    #[test]
    fn need_counts_every_check() {
        assert_eq!(needed(64_000, 2) - needed(0, 0), 64_002);
        assert!(needed(0, 0) > crate::console::MAX_CONNECTIONS as u64);
    }
}
