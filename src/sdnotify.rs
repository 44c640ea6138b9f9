//! systemd service notifications (`sd_notify(3)`), hand-rolled.
//!
//! vc5d runs as a `Type=notify` service: it tells systemd when it is ready
//! (after the data plane is programmed, so `systemctl start` returns only
//! once traffic is handled), when it reloads and when it stops, and keeps a
//! one-line `STATUS=` for `systemctl status`. With `WatchdogSec=` set,
//! systemd restarts vc5d if it stops sending `WATCHDOG=1`.
//!
//! The protocol is one datagram per notification, `KEY=value` lines, to the
//! `AF_UNIX` socket named by `$NOTIFY_SOCKET` (a path, or an abstract name
//! written with a leading `@`). It is small enough that a crate would add
//! more than it saves. Without `$NOTIFY_SOCKET` (vc5d started by hand, by
//! the lab or by tests) every function here does nothing and returns
//! `Ok(false)`.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is set but is neither a path nor an `@` abstract
    /// name (e.g. systemd ≥ 254's `vsock:` form, which vc5d never gets as a
    /// host service).
    #[error("unsupported NOTIFY_SOCKET {0:?}")]
    Unsupported(String),
    /// A state would smuggle in another line or is empty.
    #[error("invalid notification {0:?}: each assignment must be one non-empty KEY=value line")]
    Invalid(String),
    #[error("cannot notify systemd through {socket:?}: {source}")]
    Io {
        socket: String,
        #[source]
        source: io::Error,
    },
}

/// The environment variable naming the notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `assignments` (e.g. `["READY=1", "STATUS=serving 3 VIPs"]`) as one
/// datagram. Returns `Ok(false)` when not run under systemd.
pub fn notify(assignments: &[&str]) -> Result<bool, NotifyError> {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    let socket = socket.to_string_lossy().into_owned();
    if socket.is_empty() {
        return Ok(false);
    }
    let mut message = String::new();
    for a in assignments {
        // A newline inside a value would start a new assignment of the
        // caller's choosing; `STATUS=` texts come from configuration and
        // error messages, so flatten them rather than refuse.
        let line = a.replace(['\n', '\r'], " ");
        if !line.contains('=') || line.starts_with('=') {
            return Err(NotifyError::Invalid(line));
        }
        message.push_str(&line);
        message.push('\n');
    }
    send_to(&socket, message.as_bytes())?;
    Ok(true)
}

fn send_to(socket: &str, message: &[u8]) -> Result<(), NotifyError> {
    let io_err = |source| NotifyError::Io {
        socket: socket.to_owned(),
        source,
    };
    let addr = if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes()).map_err(io_err)?
    } else if socket.starts_with('/') {
        SocketAddr::from_pathname(socket).map_err(io_err)?
    } else {
        return Err(NotifyError::Unsupported(socket.to_owned()));
    };
    let sock = UnixDatagram::unbound().map_err(io_err)?;
    sock.send_to_addr(message, &addr).map_err(io_err)?;
    Ok(())
}

/// Start-up is complete: the data plane is programmed and the interfaces
/// are serving.
pub fn ready(status: &str) -> Result<bool, NotifyError> {
    notify(&["READY=1", &format!("STATUS={status}")])
}

/// A reload has begun; send [`ready`] when it is done (also when the new
/// configuration was refused: the old one is still serving).
///
/// `MONOTONIC_USEC` is required by systemd ≥ 253 to tell this reload from
/// an older one (it is ignored by older versions), so it is always sent.
pub fn reloading(status: &str) -> Result<bool, NotifyError> {
    let usec = monotonic_usec();
    notify(&[
        "RELOADING=1",
        &format!("MONOTONIC_USEC={usec}"),
        &format!("STATUS={status}"),
    ])
}

/// Shutdown has begun (VIPs are being withdrawn).
pub fn stopping(status: &str) -> Result<bool, NotifyError> {
    notify(&["STOPPING=1", &format!("STATUS={status}")])
}

/// Updates the free-form status line shown by `systemctl status`.
pub fn status(status: &str) -> Result<bool, NotifyError> {
    notify(&[&format!("STATUS={status}")])
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares
/// `MONOTONIC_USEC` against (`std::time::Instant` does not expose it).
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC is
    // always supported on Linux, so the call only writes `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}

/// The watchdog systemd expects to be fed (`WatchdogSec=`), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    /// `WATCHDOG_USEC`: systemd gives up after this long without a ping.
    pub timeout: Duration,
}

impl Watchdog {
    /// Reads `WATCHDOG_USEC` and `WATCHDOG_PID`. `None` when no watchdog is
    /// armed for this process: unset or unparsable variables, a zero
    /// timeout, or a `WATCHDOG_PID` naming another process (the variables
    /// were inherited from a parent that is the one being watched).
    pub fn from_env() -> Option<Self> {
        Self::from_vars(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )
    }

    /// [`from_env`](Self::from_env) on given values, for tests.
    pub fn from_vars(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Self> {
        let usec: u64 = usec?.trim().parse().ok()?;
        if usec == 0 {
            return None;
        }
        if let Some(pid) = pid {
            let pid: u32 = pid.trim().parse().ok()?;
            if pid != own_pid {
                return None;
            }
        }
        Some(Self {
            timeout: Duration::from_micros(usec),
        })
    }

    /// How often to ping: half the timeout, as `sd_watchdog_enabled(3)`
    /// recommends, so one late tick does not get vc5d killed.
    pub fn interval(&self) -> Duration {
        self.timeout / 2
    }

    /// Sends `WATCHDOG=1`.
    pub fn ping(&self) -> Result<bool, NotifyError> {
        notify(&["WATCHDOG=1"])
    }

    /// Pings every [`interval`](Self::interval) while `alive()` says the
    /// daemon is well, until the returned task is aborted. A tick where
    /// `alive()` is false sends nothing, so a wedged control loop gets vc5d
    /// restarted instead of being kept alive by this task alone.
    pub fn spawn(
        self,
        mut alive: impl FnMut() -> bool + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.interval());
            // After a stall, one ping is enough; a burst would hide nothing.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut warned = false;
            loop {
                tick.tick().await;
                if !alive() {
                    continue;
                }
                if let Err(e) = self.ping()
                    && !warned
                {
                    // Once: a broken socket would otherwise log every tick.
                    tracing::warn!("watchdog: {e}");
                    warned = true;
                }
            }
        })
    }

    /// [`spawn`](Self::spawn) with liveness taken from the control loop's
    /// status channel: vc5d counts as alive while a new [`Status`] snapshot
    /// was published within the last watchdog timeout (the control loop
    /// publishes one every few seconds for the counters), and as dead once
    /// the control loop has dropped its sender.
    ///
    /// [`Status`]: crate::status::Status
    pub fn spawn_on_status(
        self,
        mut status: tokio::sync::watch::Receiver<std::sync::Arc<crate::status::Status>>,
    ) -> tokio::task::JoinHandle<()> {
        let mut last_change = std::time::Instant::now();
        let timeout = self.timeout;
        self.spawn(move || match status.has_changed() {
            Ok(true) => {
                status.mark_unchanged();
                last_change = std::time::Instant::now();
                true
            }
            Ok(false) => last_change.elapsed() < timeout,
            Err(_) => false,
        })
    }
}
