//! What a health check is: its target, what it does, and how often and how patiently
//! it does it.
//!
//! A [`CheckSpec`] is plain data with `Eq` and `Hash`, because the monitor uses the
//! whole spec as the identity of a check: two services that check the same real in
//! the same way share one running check (see [`crate::monitor`]).
//!
//! The defaults below are the defaults of the daemon's configuration too: it builds
//! its checks from [`HttpCheck::default`], [`DnsCheck::default`] and these constants
//! rather than keeping its own. DNS record types and response codes are
//! hickory-proto's [`RecordType`] and [`ResponseCode`], written and read by
//! [`qtype_name`], [`parse_qtype`], [`rcode_name`] and [`parse_rcode`].

use crate::netns::Netns;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use hickory_proto::op::ResponseCode;
pub use hickory_proto::rr::RecordType;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Time between the starts of two runs of a check when none is given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Time one run may take before it counts as failed when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive passes that turn a failing check into a passing one.
pub const DEFAULT_RISE: u32 = 2;
/// Consecutive failures that turn a passing check into a failing one.
pub const DEFAULT_FALL: u32 = 3;
/// HTTP method when none is given.
pub const DEFAULT_METHOD: &str = "GET";
/// HTTP path when none is given.
pub const DEFAULT_PATH: &str = "/";
/// HTTP status codes that pass when none are given.
pub const DEFAULT_EXPECT: &[u16] = &[200];
/// DNS name asked for when none is given: the root, which any resolver can answer.
pub const DEFAULT_DNS_QUERY: &str = ".";
/// DNS record type asked for when none is given: NS rather than A, because `. NS`
/// is the conventional liveness query for a resolver (`dig . NS`) and is answered
/// from the root hints, while `. A` has no data to return.
pub const DEFAULT_DNS_QTYPE: RecordType = RecordType::NS;
/// DNS transport when none is given.
pub const DEFAULT_DNS_TRANSPORT: DnsTransport = DnsTransport::Udp;
/// DNS response code that passes when none is given: NOERROR.
pub const DEFAULT_DNS_RCODE: ResponseCode = ResponseCode::NoError;
/// Largest DNS response code: extended codes are 12 bits wide (RFC 6891).
pub const MAX_RCODE: u16 = 4095;

/// One health check against one endpoint of one real server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckSpec {
    /// Address and port of the real server to check.
    pub target: SocketAddr,
    /// What the check does.
    pub kind: CheckKind,
    /// Source address to bind before connecting (the daemon's `--address`), so that
    /// checks leave from the address the reals expect and their firewalls allow.
    /// Ignored when its family differs from the target's, since a socket of one
    /// family cannot be bound to an address of the other; the kernel then chooses.
    pub source: Option<IpAddr>,
    /// Time between the starts of two runs. A run that takes longer delays the next
    /// rather than overlapping it.
    pub interval: Duration,
    /// Time one run may take, from the start of the connection to the verdict.
    pub timeout: Duration,
    /// Consecutive passes that turn a failing check into a passing one.
    pub rise: u32,
    /// Consecutive failures that turn a passing check into a failing one.
    pub fall: u32,
    /// The network namespace the check's sockets are made in (vc5d's probe
    /// namespace, for checks through the VIP); None: the process's own.
    pub netns: Option<Netns>,
}

impl CheckSpec {
    /// A check of `kind` against `target` with the default timing and no source
    /// address.
    pub fn new(target: SocketAddr, kind: CheckKind) -> Self {
        CheckSpec {
            target,
            kind,
            source: None,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            netns: None,
        }
    }

    /// A TCP connect check with the defaults.
    pub fn tcp(target: SocketAddr) -> Self {
        Self::new(target, CheckKind::Tcp)
    }

    /// An HTTP check with the defaults (`GET /`, expecting 200).
    pub fn http(target: SocketAddr) -> Self {
        Self::new(target, CheckKind::Http(HttpCheck::default()))
    }

    /// An HTTPS check with the defaults (`GET /`, expecting 200, certificate not
    /// verified).
    pub fn https(target: SocketAddr) -> Self {
        Self::new(
            target,
            CheckKind::Https {
                http: HttpCheck::default(),
                verify: TlsVerify::None,
            },
        )
    }

    /// A DNS check with the defaults (`. NS` over UDP, expecting NOERROR).
    pub fn dns(target: SocketAddr) -> Self {
        Self::new(target, CheckKind::Dns(DnsCheck::default()))
    }

    /// The same check with another interval and timeout.
    pub fn with_timing(mut self, interval: Duration, timeout: Duration) -> Self {
        self.interval = interval;
        self.timeout = timeout;
        self
    }

    /// The same check with other rise and fall counts.
    pub fn with_rise_fall(mut self, rise: u32, fall: u32) -> Self {
        self.rise = rise;
        self.fall = fall;
        self
    }

    /// The same check, leaving from `source`.
    pub fn with_source(mut self, source: IpAddr) -> Self {
        self.source = Some(source);
        self
    }

    /// The same check, its sockets made in `ns`.
    pub fn with_netns(mut self, ns: Netns) -> Self {
        self.netns = Some(ns);
        self
    }

    /// Whether `other` probes the same way: the same target, kind (request and
    /// expected answer), source and namespace, whatever the timing. A check
    /// whose probe changed says nothing about the new one, so the monitor
    /// carries an id's state over only to a check of the same probe.
    pub fn same_probe(&self, other: &CheckSpec) -> bool {
        self.target == other.target
            && self.kind == other.kind
            && self.source == other.source
            && self.netns == other.netns
    }

    /// The source address to bind for this target, if any applies.
    pub(crate) fn bind_source(&self) -> Option<IpAddr> {
        self.source
            .filter(|source| source.is_ipv4() == self.target.is_ipv4())
    }

    /// Checks the parts that are not checked by the type system. The full
    /// preparation (TLS configuration, DNS encoding) happens in
    /// [`crate::probe::Prober::new`], which calls this first.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.interval.is_zero() {
            return Err(SpecError::Timing("interval must not be zero".into()));
        }
        if self.timeout.is_zero() {
            return Err(SpecError::Timing("timeout must not be zero".into()));
        }
        if self.rise == 0 || self.fall == 0 {
            return Err(SpecError::Timing("rise and fall must be at least 1".into()));
        }
        match &self.kind {
            CheckKind::Tcp | CheckKind::Dns(_) => Ok(()),
            CheckKind::Http(http) | CheckKind::Https { http, .. } => http.validate(),
        }
    }
}

impl fmt::Display for CheckSpec {
    /// A short description for logs and status, e.g. `http 10.0.0.1:80 GET /alive`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            CheckKind::Tcp => write!(f, "tcp {}", self.target),
            CheckKind::Http(http) => {
                write!(f, "http {} {} {}", self.target, http.method, http.path)
            }
            CheckKind::Https { http, .. } => {
                write!(f, "https {} {} {}", self.target, http.method, http.path)
            }
            CheckKind::Dns(dns) => write!(
                f,
                "dns/{} {} {} {}",
                dns.transport,
                self.target,
                dns.query,
                qtype_name(dns.qtype)
            ),
        }
    }
}

/// What a check does once connected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// Passes when a TCP connection is accepted.
    Tcp,
    /// Passes when an HTTP/1.1 request gets an expected status.
    Http(HttpCheck),
    /// Passes when an HTTP/1.1 request over TLS gets an expected status.
    Https {
        /// The request and the statuses that pass.
        http: HttpCheck,
        /// How the server's certificate is checked.
        verify: TlsVerify,
    },
    /// Passes when a DNS query gets the expected response code.
    Dns(DnsCheck),
}

impl CheckKind {
    /// The kind's name as in the configuration file: `tcp`, `http`, `https`, `dns`.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http(_) => "http",
            CheckKind::Https { .. } => "https",
            CheckKind::Dns(_) => "dns",
        }
    }
}

/// The request of an http or https check and the answers that pass.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpCheck {
    /// Request method, an HTTP token such as `GET` or `HEAD`.
    pub method: String,
    /// Request target, starting with `/`.
    pub path: String,
    /// `Host` header, and TLS server name for https. `None`: the target's address,
    /// with the port unless it is the scheme's default.
    pub host: Option<String>,
    /// Status codes that pass.
    pub expect: Vec<u16>,
}

impl Default for HttpCheck {
    fn default() -> Self {
        HttpCheck {
            method: DEFAULT_METHOD.to_owned(),
            path: DEFAULT_PATH.to_owned(),
            host: None,
            expect: DEFAULT_EXPECT.to_vec(),
        }
    }
}

impl HttpCheck {
    fn validate(&self) -> Result<(), SpecError> {
        // These strings are pasted into the request line and headers, so anything
        // that could end a line or a field would let a configuration value inject
        // its own request: refuse rather than escape.
        if self.method.is_empty() || !self.method.bytes().all(is_token_byte) {
            return Err(SpecError::Http(format!("invalid method {:?}", self.method)));
        }
        if !self.path.starts_with('/') || !self.path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SpecError::Http(format!(
                "invalid path {:?}: it must start with `/` and contain no spaces or control characters",
                self.path
            )));
        }
        if let Some(host) = &self.host
            && (host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(SpecError::Http(format!("invalid host {host:?}")));
        }
        if self.expect.is_empty() {
            return Err(SpecError::Http("no expected status codes".into()));
        }
        if let Some(code) = self.expect.iter().find(|c| !(100..=599).contains(*c)) {
            return Err(SpecError::Http(format!(
                "expected status {code} is not an HTTP status code"
            )));
        }
        Ok(())
    }
}

/// Whether a byte may appear in an HTTP token (RFC 9110 §5.6.2).
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// How an https check treats the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum TlsVerify {
    /// Any certificate is accepted (the handshake's signatures are still checked,
    /// so the server must hold the key of the certificate it shows). Reals are
    /// addressed by IP and usually carry certificates for the service's name, so
    /// this is the default (`TlsVerify::default()`).
    #[default]
    None,
    /// The certificate must chain to a web PKI root (Mozilla's list, built in) and
    /// match the server name.
    WebPki,
    /// The certificate must chain to one of these CA certificates and match the
    /// server name.
    Ca(CaCerts),
}

/// A set of trusted CA certificates, compared by content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CaCerts(Arc<[CertificateDer<'static>]>);

impl CaCerts {
    /// The certificates of a PEM file's content (`-----BEGIN CERTIFICATE-----`
    /// blocks; other blocks are skipped).
    pub fn from_pem(pem: &[u8]) -> Result<Self, SpecError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SpecError::Ca(e.to_string()))?;
        if certs.is_empty() {
            return Err(SpecError::Ca("no certificate found in the PEM data".into()));
        }
        Ok(CaCerts(certs.into()))
    }

    /// DER-encoded certificates.
    pub fn from_der(certs: impl IntoIterator<Item = Vec<u8>>) -> Result<Self, SpecError> {
        let certs: Vec<_> = certs.into_iter().map(CertificateDer::from).collect();
        if certs.is_empty() {
            return Err(SpecError::Ca("no certificate given".into()));
        }
        Ok(CaCerts(certs.into()))
    }

    /// The certificates.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.0
    }
}

/// The query of a dns check and the answer that passes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsCheck {
    /// Name asked for, e.g. `.` or `example.com`.
    pub query: String,
    /// Record type asked for. Build it from a number with `RecordType::from`, as
    /// [`parse_qtype`] does, so that a known type is its named variant (`Unknown`
    /// only for types hickory does not name).
    pub qtype: RecordType,
    /// Transport of the query.
    pub transport: DnsTransport,
    /// Response code that passes. The probe compares numbers, so a variant that
    /// shares its number with another (hickory's `BADVERS` and `BADSIG`, 16)
    /// passes for either; [`parse_rcode`] gives the variant of `From<u16>`.
    pub rcode: ResponseCode,
}

impl Default for DnsCheck {
    fn default() -> Self {
        DnsCheck {
            query: DEFAULT_DNS_QUERY.to_owned(),
            qtype: DEFAULT_DNS_QTYPE,
            transport: DEFAULT_DNS_TRANSPORT,
            rcode: DEFAULT_DNS_RCODE,
        }
    }
}

/// Transport of a DNS query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsTransport {
    /// One datagram each way.
    Udp,
    /// A length-prefixed message each way over a TCP connection (RFC 1035 §4.2.2).
    Tcp,
}

impl fmt::Display for DnsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DnsTransport::Udp => "udp",
            DnsTransport::Tcp => "tcp",
        })
    }
}

/// A record type as written in a zone file: its mnemonic (`A`, `NS`, `AAAA`, …) where
/// hickory-proto reads that name back, otherwise `TYPEnnn` (RFC 3597), so that what
/// is shown always parses again with [`parse_qtype`].
pub fn qtype_name(qtype: RecordType) -> String {
    let name = qtype.to_string();
    match name.parse::<RecordType>() {
        Ok(back) if back == qtype => name,
        _ => format!("TYPE{}", u16::from(qtype)),
    }
}

/// A record type from its mnemonic, `TYPEnnn` or its number, in any case; `None`
/// for anything else and for type 0, which is reserved and never asked for.
pub fn parse_qtype(text: &str) -> Option<RecordType> {
    let upper = text.trim().to_ascii_uppercase();
    let qtype = match upper.parse::<RecordType>() {
        Ok(qtype) => qtype,
        Err(_) => {
            let number = upper.strip_prefix("TYPE").unwrap_or(&upper);
            RecordType::from(number.parse::<u16>().ok()?)
        }
    };
    (u16::from(qtype) != 0).then_some(qtype)
}

/// A response code's mnemonic (`NOERROR`, `SERVFAIL`, `NXDOMAIN`, …), or `RCODEnnn`
/// for one hickory-proto does not name. hickory's `Display` is a description
/// ("Non-Existent Domain"); its variants are named by the mnemonics, which is what
/// this shows (the test `dns_names_are_hickorys` holds it to that).
pub fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::Unknown(code) => format!("RCODE{code}"),
        named => format!("{named:?}").to_ascii_uppercase(),
    }
}

/// A response code from its number (at most [`MAX_RCODE`]), `RCODEnnn` or its
/// mnemonic as [`rcode_name`] shows it, in any case.
pub fn parse_rcode(text: &str) -> Option<ResponseCode> {
    let upper = text.trim().to_ascii_uppercase();
    let number = upper.strip_prefix("RCODE").unwrap_or(&upper);
    if let Ok(code) = number.parse::<u16>() {
        return (code <= MAX_RCODE).then(|| code.into());
    }
    (0..=MAX_RCODE)
        // `ResponseCode::from` alone is hickory's (high, low) constructor.
        .map(<ResponseCode as From<u16>>::from)
        .filter(|code| !matches!(code, ResponseCode::Unknown(_)))
        .find(|&code| rcode_name(code) == upper)
}

/// A check that cannot be run as specified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Interval, timeout, rise or fall out of range.
    #[error("invalid timing: {0}")]
    Timing(String),
    /// A request part that cannot be sent.
    #[error("invalid HTTP check: {0}")]
    Http(String),
    /// The server name for TLS is not a DNS name or an IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// The CA certificates could not be read or used.
    #[error("invalid CA certificates: {0}")]
    Ca(String),
    /// The TLS client could not be configured.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The DNS query name cannot be encoded.
    #[error("invalid DNS query: {0}")]
    Dns(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 80))
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let spec = CheckSpec::http(addr());
        assert_eq!(spec.interval, Duration::from_secs(2));
        assert_eq!(spec.timeout, Duration::from_secs(1));
        assert_eq!((spec.rise, spec.fall), (2, 3));
        assert_eq!(spec.validate(), Ok(()));
        assert_eq!(spec.to_string(), "http 127.0.0.1:80 GET /");
    }

    #[test]
    fn identical_specs_are_equal_and_different_ones_are_not() {
        use std::collections::HashSet;
        let set: HashSet<_> = [
            CheckSpec::http(addr()),
            CheckSpec::http(addr()),
            CheckSpec::http(addr()).with_rise_fall(1, 1),
            CheckSpec::tcp(addr()),
        ]
        .into_iter()
        .collect();
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut http = HttpCheck {
            method: "GE T".into(),
            ..HttpCheck::default()
        };
        let check =
            |http: &HttpCheck| CheckSpec::new(addr(), CheckKind::Http(http.clone())).validate();
        assert!(matches!(check(&http), Err(SpecError::Http(m)) if m.contains("method")));
        http.method = "GET".into();
        http.path = "/a\r\nX: y".into();
        assert!(matches!(check(&http), Err(SpecError::Http(m)) if m.contains("path")));
        http.path = "/".into();
        http.expect = vec![];
        assert!(check(&http).is_err());
        http.expect = vec![99];
        assert!(check(&http).is_err());
        http.expect = vec![204];
        http.host = Some("a b".into());
        assert!(check(&http).is_err());
        assert!(
            CheckSpec::tcp(addr())
                .with_rise_fall(0, 1)
                .validate()
                .is_err()
        );
        assert!(
            CheckSpec::tcp(addr())
                .with_timing(Duration::ZERO, Duration::from_secs(1))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn ca_certs_need_a_certificate() {
        assert!(CaCerts::from_pem(b"not pem").is_err());
        assert!(CaCerts::from_der(Vec::<Vec<u8>>::new()).is_err());
    }

    #[test]
    fn dns_names_are_hickorys() {
        for (text, qtype, shown) in [
            ("A", RecordType::A, "A"),
            ("ns", RecordType::NS, "NS"),
            ("aaaa", RecordType::AAAA, "AAAA"),
            ("65", RecordType::HTTPS, "HTTPS"),
            ("TYPE2", RecordType::NS, "NS"),
            ("type999", RecordType::Unknown(999), "TYPE999"),
            (" SOA ", RecordType::SOA, "SOA"),
            // Named by hickory but not read back by that name: shown by number.
            ("251", RecordType::IXFR, "TYPE251"),
        ] {
            assert_eq!(parse_qtype(text), Some(qtype), "{text}");
            assert_eq!(qtype_name(qtype), shown, "{text}");
            assert_eq!(parse_qtype(shown), Some(qtype), "{shown}");
        }
        for bad in ["", "BOGUS", "0", "TYPE0", "65536", "TYPE", "-1"] {
            assert_eq!(parse_qtype(bad), None, "{bad:?}");
        }
        for (text, rcode, shown) in [
            ("NOERROR", ResponseCode::NoError, "NOERROR"),
            ("servfail", ResponseCode::ServFail, "SERVFAIL"),
            ("NXDomain", ResponseCode::NXDomain, "NXDOMAIN"),
            ("5", ResponseCode::Refused, "REFUSED"),
            ("NOTZONE", ResponseCode::NotZone, "NOTZONE"),
            ("23", ResponseCode::BADCOOKIE, "BADCOOKIE"),
            ("4095", ResponseCode::Unknown(4095), "RCODE4095"),
            ("rcode12", ResponseCode::Unknown(12), "RCODE12"),
        ] {
            assert_eq!(parse_rcode(text), Some(rcode), "{text}");
            assert_eq!(rcode_name(rcode), shown, "{text}");
            assert_eq!(parse_rcode(shown), Some(rcode), "{shown}");
        }
        for bad in ["", "4096", "RCODE4096", "-1", "OK", "No Error"] {
            assert_eq!(parse_rcode(bad), None, "{bad:?}");
        }
        assert_eq!(
            CheckSpec::dns(addr()).to_string(),
            "dns/udp 127.0.0.1:80 . NS"
        );
    }

    #[test]
    fn same_probe_ignores_timing_only() {
        let a = CheckSpec::http(addr());
        assert!(a.same_probe(&a.clone().with_rise_fall(5, 5)));
        assert!(
            a.same_probe(
                &a.clone()
                    .with_timing(Duration::from_secs(9), Duration::from_secs(3))
            )
        );
        assert!(!a.same_probe(&CheckSpec::tcp(addr())));
        assert!(!a.same_probe(&CheckSpec::http(SocketAddr::from(([127, 0, 0, 1], 81)))));
        assert!(!a.same_probe(&a.clone().with_source(IpAddr::from([127, 0, 0, 2]))));
    }

    #[test]
    fn source_of_the_other_family_is_not_bound() {
        let v4 = CheckSpec::tcp(addr()).with_source("::1".parse().unwrap());
        assert_eq!(v4.bind_source(), None);
        let same = CheckSpec::tcp(addr()).with_source(IpAddr::from([127, 0, 0, 2]));
        assert_eq!(same.bind_source(), Some(IpAddr::from([127, 0, 0, 2])));
    }
}
