//! The result of one run of a check, and why a run failed.
//!
//! Every failure carries a reason meant for an operator reading the console or the
//! logs ("connection refused", "timeout after 1s (waiting for the response)",
//! "HTTP 503", "TLS handshake: …", "DNS rcode SERVFAIL", "garbage response: …"),
//! so [`Failure`] stores text rather than `io::Error`s: it must be `Clone` to be kept
//! as the last outcome and sent to several subscribers.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::spec::{ResponseCode, rcode_name};

/// The result of one run of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `Ok` if the run passed, otherwise why it failed.
    pub result: Result<(), Failure>,
    /// How long the run took, from before the connection to the verdict.
    pub latency: Duration,
    /// When the run finished, on tokio's clock (paused in tests).
    pub at: Instant,
    /// When the run finished, on the wall clock, for display.
    pub wall: SystemTime,
}

impl Outcome {
    /// An outcome that finished now.
    pub fn new(result: Result<(), Failure>, latency: Duration) -> Self {
        Outcome {
            result,
            latency,
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.result.is_ok()
    }

    /// Why the run failed, or `None` if it passed.
    pub fn failure(&self) -> Option<&Failure> {
        self.result.as_ref().err()
    }
}

impl fmt::Display for Outcome {
    /// `passed in 1.2ms` or `failed in 1s: timeout after 1s (connecting)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            Ok(()) => write!(f, "passed in {:.1?}", self.latency),
            Err(failure) => write!(f, "failed in {:.1?}: {failure}", self.latency),
        }
    }
}

/// Where a run was when its time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Opening the TCP connection (or the UDP socket).
    Connecting,
    /// In the TLS handshake.
    Handshake,
    /// Request sent, waiting for (the rest of) the answer.
    Waiting,
}

impl Phase {
    pub(crate) fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Connecting,
            1 => Phase::Handshake,
            _ => Phase::Waiting,
        }
    }

    pub(crate) fn as_u8(self) -> u8 {
        match self {
            Phase::Connecting => 0,
            Phase::Handshake => 1,
            Phase::Waiting => 2,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connecting => "connecting",
            Phase::Handshake => "in the TLS handshake",
            Phase::Waiting => "waiting for the response",
        })
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The target answered the connection attempt with a reset (or, for UDP, an
    /// ICMP port unreachable).
    #[error("connection refused")]
    Refused,
    /// The connection was reset after it was established.
    #[error("connection reset")]
    Reset,
    /// The peer closed the connection before a complete answer.
    #[error("connection closed {0}")]
    Closed(&'static str),
    /// No route to the target, or it did not answer ARP/ND.
    #[error("host unreachable")]
    Unreachable,
    /// The run took longer than the check's timeout.
    #[error("timeout after {} ({phase})", DisplayDuration(*.after))]
    Timeout {
        /// The check's timeout.
        after: Duration,
        /// Where the run was when the time ran out.
        phase: Phase,
    },
    /// An HTTP answer with a status that is not expected.
    #[error("HTTP {0}")]
    HttpStatus(u16),
    /// The TLS handshake failed (certificate refused, protocol error, …).
    #[error("TLS handshake: {0}")]
    Tls(String),
    /// A DNS answer with a response code that is not expected.
    #[error("DNS rcode {}", rcode_name(<ResponseCode as From<u16>>::from(*.0)))]
    DnsRcode(u16),
    /// An answer that is not valid for the protocol.
    #[error("garbage response: {0}")]
    Garbage(String),
    /// The source address could not be bound.
    #[error("cannot bind source address {addr}: {reason}")]
    Bind {
        /// The address.
        addr: IpAddr,
        /// Why.
        reason: String,
    },
    /// Any other socket error.
    #[error("{0}")]
    Io(String),
}

impl Failure {
    /// Whether the target answered (refused, reset, closed, a wrong status,
    /// a bad handshake, garbage): the path to it works and the failure is
    /// its own. Timeouts, unreachable hosts and local socket errors are no
    /// answer, and may as well be this host's trouble.
    pub fn is_answer(&self) -> bool {
        match self {
            Failure::Refused
            | Failure::Reset
            | Failure::Closed(_)
            | Failure::HttpStatus(_)
            | Failure::Tls(_)
            | Failure::DnsRcode(_)
            | Failure::Garbage(_) => true,
            Failure::Unreachable
            | Failure::Timeout { .. }
            | Failure::Bind { .. }
            | Failure::Io(_) => false,
        }
    }

    /// The failure an I/O error means for a check.
    pub(crate) fn from_io(error: &io::Error) -> Failure {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            // A write into a connection the peer has reset fails with EPIPE.
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Failure::Reset,
            io::ErrorKind::UnexpectedEof => Failure::Closed("before a complete response"),
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                Failure::Unreachable
            }
            _ => Failure::Io(error.to_string()),
        }
    }

    /// A garbage failure quoting the start of what was received.
    pub(crate) fn garbage(what: impl fmt::Display, data: &[u8]) -> Failure {
        Failure::Garbage(format!("{what}: {}", quote(data)))
    }
}

/// The start of `data`, escaped and quoted, short enough for a log line.
pub(crate) fn quote(data: &[u8]) -> String {
    const SHOWN: usize = 40;
    let shown = &data[..data.len().min(SHOWN)];
    let more = if data.len() > SHOWN { "…" } else { "" };
    format!("\"{}\"{more}", shown.escape_ascii())
}

/// A duration as an operator writes it: `1s`, `500ms`, `1.5s`.
pub(crate) struct DisplayDuration(pub Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.subsec_nanos().is_multiple_of(1_000_000) && d.as_secs() == 0 {
            write!(f, "{}ms", d.subsec_millis())
        } else {
            write!(f, "{d:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_well() {
        let timeout = Failure::Timeout {
            after: Duration::from_secs(1),
            phase: Phase::Waiting,
        };
        assert_eq!(
            timeout.to_string(),
            "timeout after 1s (waiting for the response)"
        );
        let timeout = Failure::Timeout {
            after: Duration::from_millis(250),
            phase: Phase::Connecting,
        };
        assert_eq!(timeout.to_string(), "timeout after 250ms (connecting)");
        assert_eq!(
            DisplayDuration(Duration::from_millis(1500)).to_string(),
            "1.5s"
        );
        assert_eq!(Failure::HttpStatus(503).to_string(), "HTTP 503");
        assert_eq!(Failure::DnsRcode(2).to_string(), "DNS rcode SERVFAIL");
        assert_eq!(Failure::DnsRcode(23).to_string(), "DNS rcode BADCOOKIE");
        assert_eq!(Failure::DnsRcode(24).to_string(), "DNS rcode RCODE24");
        assert_eq!(Failure::Refused.to_string(), "connection refused");
        assert_eq!(
            Failure::garbage("not HTTP", b"SSH-2.0-OpenSSH\r\n").to_string(),
            "garbage response: not HTTP: \"SSH-2.0-OpenSSH\\r\\n\""
        );
        assert!(quote(&[b'x'; 100]).ends_with("\"…"));
    }

    #[test]
    fn answers_are_told_from_silence() {
        assert!(Failure::Refused.is_answer());
        assert!(Failure::HttpStatus(503).is_answer());
        assert!(!Failure::Unreachable.is_answer());
        assert!(
            !Failure::Timeout {
                after: Duration::from_secs(1),
                phase: Phase::Connecting
            }
            .is_answer()
        );
        assert!(!Failure::from_io(&io::Error::from_raw_os_error(libc_emfile())).is_answer());
    }

    /// EMFILE, without a libc dependency in this crate.
    fn libc_emfile() -> i32 {
        24
    }

    #[test]
    fn io_errors_map_to_reasons() {
        let e = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(Failure::from_io(&e), Failure::Refused);
        let e = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(Failure::from_io(&e), Failure::Reset);
    }
}
