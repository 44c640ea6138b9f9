//! sd_notify: a child process (this test binary, re-run on one test) is
//! given `NOTIFY_SOCKET` naming a datagram socket bound here, as systemd
//! would, and what it sends is checked; once with a path and once with an
//! abstract name. The environment of this process is never changed.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use vc5::sdnotify::{self, Watchdog};

const CHILD: &str = "VC5_SDNOTIFY_CHILD";

/// Runs the child test with `env`, collecting every datagram it sends.
fn run_child(sock: &UnixDatagram, socket_name: &str, env: &[(&str, &str)]) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "child",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD, "1")
    .env("NOTIFY_SOCKET", socket_name)
    .env_remove("WATCHDOG_USEC")
    .env_remove("WATCHDOG_PID")
    .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Read while the child runs: a datagram socket queues only
    // net.unix.max_dgram_qlen (10) messages before the sender blocks.
    let reader = sock.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match reader.recv(&mut buf) {
                    Ok(n) => got.push(String::from_utf8(buf[..n].to_vec()).unwrap()),
                    Err(_) if done.load(std::sync::atomic::Ordering::SeqCst) => return got,
                    Err(_) => {}
                }
            }
        })
    };
    let out = cmd.output().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let got = collector.join().unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    got
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

fn check_messages(got: &[String]) {
    let before = monotonic_usec();
    // The one-shot notifications, in order, each one datagram.
    assert_eq!(got[0], "READY=1\nSTATUS=serving 2 VIPs\n");
    let reloading: Vec<&str> = got[1].lines().collect();
    assert_eq!(reloading[0], "RELOADING=1");
    let usec: u64 = reloading[1]
        .strip_prefix("MONOTONIC_USEC=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        usec > 0 && usec <= before && before - usec < 60_000_000,
        "{usec} vs {before}"
    );
    assert_eq!(reloading[2], "STATUS=reloading /etc/vc5/vc5.yaml");
    assert_eq!(got[2], "READY=1\nSTATUS=serving 3 VIPs\n");
    // A newline in a status cannot smuggle in another assignment.
    assert_eq!(got[3], "STATUS=refused: bad key READY=1\n");
    assert_eq!(got[4], "X-PHASE=watchdog\n");
    // The watchdog: WATCHDOG_USEC=200000, so a ping every 100 ms while
    // the status channel moves (every 50 ms for 600 ms)...
    let phase = |name: &str| {
        got.iter()
            .position(|m| m == &format!("X-PHASE={name}\n"))
            .unwrap()
    };
    let (w, stale, closed, end) = (
        phase("watchdog"),
        phase("stale"),
        phase("closed"),
        phase("end"),
    );
    let pings = |a: usize, b: usize| {
        got[a + 1..b]
            .iter()
            .filter(|m| *m == "WATCHDOG=1\n")
            .count()
    };
    assert!(
        got[w + 1..end]
            .iter()
            .all(|m| m == "WATCHDOG=1\n" || m.starts_with("X-PHASE=")),
        "{got:?}"
    );
    let live = pings(w, stale);
    assert!(
        (3..=8).contains(&live),
        "{live} pings in 600 ms at 100 ms: {got:?}"
    );
    // ...at most the pings of one timeout (200 ms) once it stops moving
    // (600 ms more)...
    let after = pings(stale, closed);
    assert!(
        after <= 3,
        "{after} pings for a stalled control loop: {got:?}"
    );
    // ...and none once the control loop is gone.
    assert_eq!(pings(closed, end), 0, "{got:?}");
    assert_eq!(got[end + 1], "STOPPING=1\nSTATUS=withdrawing VIPs\n");
    assert_eq!(got.len(), end + 2);
}

#[test]
fn notifications_to_a_path_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    let got = run_child(
        &sock,
        path.to_str().unwrap(),
        &[("WATCHDOG_USEC", "200000")],
    );
    check_messages(&got);
}

#[test]
fn notifications_to_an_abstract_socket() {
    let name = format!("vc5-sdnotify-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    let got = run_child(&sock, &format!("@{name}"), &[("WATCHDOG_USEC", "200000")]);
    check_messages(&got);
}

#[test]
fn watchdog_settings() {
    let me = std::process::id();
    let mine = me.to_string();
    let w = Watchdog::from_vars(Some("30000000"), Some(&mine), me).unwrap();
    assert_eq!(w.timeout, Duration::from_secs(30));
    assert_eq!(w.interval(), Duration::from_secs(15));
    assert!(Watchdog::from_vars(Some("30000000"), None, me).is_some());
    // Inherited from a watched parent: not ours to feed.
    assert!(Watchdog::from_vars(Some("30000000"), Some("1"), me).is_none());
    assert!(Watchdog::from_vars(Some("0"), None, me).is_none());
    assert!(Watchdog::from_vars(Some("x"), None, me).is_none());
    assert!(Watchdog::from_vars(None, Some(&mine), me).is_none());
}

/// The child: does what vc5d does over a start, a reload and a stop.
#[test]
#[ignore = "run by the tests above, in a child process"]
fn child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    assert!(sdnotify::ready("serving 2 VIPs").unwrap());
    assert!(sdnotify::reloading("reloading /etc/vc5/vc5.yaml").unwrap());
    assert!(sdnotify::ready("serving 3 VIPs").unwrap());
    assert!(sdnotify::status("refused: bad key\nREADY=1").unwrap());
    assert!(matches!(
        sdnotify::notify(&["no assignment"]),
        Err(sdnotify::NotifyError::Invalid(_))
    ));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let watchdog = Watchdog::from_env().expect("WATCHDOG_USEC set, WATCHDOG_PID unset");
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(vc5::status::Status::default()));
        sdnotify::notify(&["X-PHASE=watchdog"]).unwrap();
        let task = watchdog.spawn_on_status(rx);
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send_replace(Arc::new(vc5::status::Status::default()));
        }
        sdnotify::notify(&["X-PHASE=stale"]).unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        sdnotify::notify(&["X-PHASE=closed"]).unwrap();
        drop(tx);
        tokio::time::sleep(Duration::from_millis(400)).await;
        sdnotify::notify(&["X-PHASE=end"]).unwrap();
        task.abort();
    });
    assert!(sdnotify::stopping("withdrawing VIPs").unwrap());

    // Not under systemd: nothing is sent and nothing fails. (The variable
    // is removed in this child only, which runs no other test.)
    drop(rt);
    // SAFETY: single-threaded at this point: the runtime is gone.
    unsafe { std::env::remove_var("NOTIFY_SOCKET") };
    assert!(!sdnotify::ready("x").unwrap());
    assert!(Watchdog::from_env().is_some());
    // SAFETY: still single-threaded.
    unsafe { std::env::set_var("NOTIFY_SOCKET", "vsock:2:1234") };
    assert!(matches!(
        sdnotify::ready("x"),
        Err(sdnotify::NotifyError::Unsupported(_))
    ));
}
