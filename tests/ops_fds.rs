//! File descriptors are a shared budget: a local user who opens thousands of
//! idle connections to the console must not make vc5d's health checks fail
//! with EMFILE and withdraw its VIPs (reported: 2,000 idle connections from
//! an unprivileged user took the only real out of service within 9 s).
//!
//! vc5d runs with its open-files limit lowered to 512 (with `prlimit`), as
//! a host with the default limit and a smaller configuration would.

mod common;

use common::{fast_checks, lab, real_healthy, wait_ready, wait_status};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// Sets a running process's open-files limit (lowering needs no privilege).
fn set_nofile(pid: u32, limit: u64) {
    let r = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit reads the struct we own and writes nothing back.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &r,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[test]
fn idle_console_connections_cannot_fail_health_checks() {
    let lab = lab();
    lab.write_config_text(&fast_checks(&lab)).unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);
    // A limit of 512 descriptors: less than the idle connections below, so
    // only the console's own bound can save the health checks.
    set_nofile(vc5d.id(), 512);

    let console: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let idle: Vec<TcpStream> = lab
        .run_in("lb1", || {
            (0..2000)
                .filter_map(|_| TcpStream::connect_timeout(&console, Duration::from_secs(1)).ok())
                .collect()
        })
        .unwrap();
    assert!(idle.len() >= 1000, "only {} connections opened", idle.len());
    // Several check intervals with every connection held open (a fixed
    // time on purpose: what is asserted is that nothing happens in it).
    std::thread::sleep(Duration::from_secs(5));
    let log = vc5d.log_text();
    let last = log.rsplit("=== ").next().unwrap_or_default();
    for bad in ["out of service", "Too many open files", "not announceable"] {
        assert!(
            !last.contains(bad),
            "{bad:?} while the console was flooded:\n{last}"
        );
    }
    drop(idle);
    // Once the console has reaped them it answers again, and the daemon is
    // still fine: every real healthy.
    let reals: Vec<IpAddr> = lab.reals().iter().map(|r| lab.addr4(r).into()).collect();
    wait_status(
        &lab,
        "lb1",
        "answering with every real healthy",
        Duration::from_secs(2),
        |s| reals.iter().all(|r| real_healthy(s, *r, true)),
    );
    vc5d.terminate(Duration::from_secs(10)).unwrap();
}
