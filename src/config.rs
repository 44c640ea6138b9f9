//! The vc5d configuration file: loading, validation and normalisation.
//!
//! The file is YAML in the original vc5 schema (see design §2.2), with optional,
//! additive extensions. JSON is YAML 1.2, so a JSON file goes through the same parser
//! and gets the same positions in its errors.
//!
//! Loading happens in two passes. The first deserialises into private `Raw*` structs
//! that mirror the file exactly: every one refuses unknown keys, and every value that
//! is checked later is wrapped in [`Spanned`] so that the check can name the node's
//! line and column. The second pass validates and turns those into the public,
//! normalised model ([`Config`] and its parts): defaults filled in, single values
//! turned into lists, real groups resolved, check ports resolved.
//!
//! Every content error, whether the parser's or ours, is a [`ConfigError`] whose
//! `Display` is `FILE:LINE:COL: message`, which is what `vc5d --check` prints.
//!
//! # Keys
//!
//! Top level: `multicast` (flow-sync group, `IP:PORT`, must be a multicast address),
//! `flow_sync_key` (path of the flow-sync key file), `flow_sync_wait` (how long vc5d
//! holds its VIP announcements at start for vc5-flowsync's resync, a duration,
//! default 10s, [`MIN_FLOW_SYNC_WAIT`] to [`MAX_FLOW_SYNC_WAIT`]), `flow_sync_rate`
//! (flow records per second accepted from one peer, default 200000) and
//! `flow_sync_resync_rate` (records per second sent when a peer asks for every flow,
//! default 50000; both between [`MIN_FLOW_SYNC_RATE`] and [`MAX_FLOW_SYNC_RATE`]),
//! `flow_insert_limit` (new flows one CPU of the data plane may insert into the flow
//! table per second, default [`DEFAULT_FLOW_INSERT_LIMIT`], 0 for no bound, at most
//! [`MAX_FLOW_INSERT_LIMIT`]), `rhi`, `services`, `reals`.
//!
//! `rhi`: `as_number` (0 or absent: no BGP), `peers`, `hold_time` (seconds, 0 or
//! 3..=65535), `communities` (`"65000:100"` strings), `med`, `local_pref`, `next_hop6`.
//!
//! A service: `name`, `desc`, `addr` (an address or a list), `port` (an integer or a
//! list), `protocol` (`tcp` or `udp`), `real` (a group name or a list), `need`,
//! `quorum` (how many checks must pass; absent: all), `checks`.
//!
//! `reals` maps a group name to a list whose items are an address or a map
//! `{addr: IP, weight: N, disabled: BOOL}`.
//!
//! A check: `name`, `type` (`tcp`, `http`, `https`, `dns`), `port`, `interval`,
//! `timeout`, `rise`, `fall`; for http and https `path`, `host`, `method`, `expect`
//! (a status code or a list); for https `verify`; for dns `query`, `qtype`,
//! `transport` (`udp` or `tcp`) and `rcode` (a number or a name such as `NXDOMAIN`).
//! A key that does not apply to the check's type is an error rather than ignored.
//! Durations are a number of seconds or a string such as `"500ms"`, `"2s"`, `"1m"`,
//! with millisecond resolution.
//!
//! # Rules beyond the types
//!
//! - A check's `port` must be one of its service's ports, and may be left out only
//!   when the service has one port.
//! - `need` is at most the number of the service's reals, disabled ones included, so
//!   that disabling a real never makes a valid file invalid.
//! - A real listed in several groups of one service must have the same settings in
//!   each; it is then kept once, where it first appears.
//! - An (address, port, protocol) belongs to one service only.
//! - Flow sync is configured by `multicast` and `flow_sync_key` together. `multicast`
//!   alone is the original's file and is accepted (flow sync stays off);
//!   `flow_sync_key` alone is refused, and so are `flow_sync_wait`, `flow_sync_rate`
//!   and `flow_sync_resync_rate` when flow sync is not configured, since they would
//!   do nothing.
//! - An empty file is refused: reloading a truncated file must not withdraw every
//!   VIP. `services: []` is the way to say "no services".
//! - A lone scalar meant as a string that YAML reads as a boolean or a float (`yes`,
//!   `1.10`) has to be quoted where a value-or-list is accepted (`addr`, `real`, …),
//!   and wherever a string is expected (`name`, `host`, …): only integers keep their
//!   spelling as text. A quoted `'true'` is a string, not a boolean.
//! - A key that is present is never `null`: `need: null` is refused, not read as
//!   "use the default". Leave the key out for the default.
//! - Names (of services, checks and real groups) are 1 to [`MAX_NAME_CHARS`]
//!   characters without leading or trailing white space; names, `desc` (at most
//!   [`MAX_DESC_CHARS`]) and `flow_sync_key` contain no control characters, Unicode
//!   line separators or bidirectional overrides, since they end up in D-Bus strings,
//!   metrics labels and logs.
//! - VIPs, reals, BGP peers and `next_hop6` are unicast addresses of other hosts: not
//!   `0.0.0.0`, `::`, `255.255.255.255`, loopback, multicast or IPv4-mapped IPv6
//!   (`::ffff:a.b.c.d`); a real is not an address of its own service.
//! - Check `interval` is between [`MIN_INTERVAL`] and [`MAX_INTERVAL`], `timeout`
//!   between [`MIN_TIMEOUT`] and the interval (exclusive), `rise` and `fall` between
//!   1 and [`MAX_RISE_FALL`]. Every check is also put through the health monitor's
//!   own validation (`vc5_health::Prober::new`), so a `path` or `host` it could not
//!   send is refused here with a position rather than when the daemon starts.
//! - At most [`MAX_ENDPOINTS`] (VIP, port, protocol) endpoints and
//!   [`MAX_BACKENDS`] (endpoint, real) pairs over all services: what the data
//!   plane's tables hold.
//! - At most [`MAX_FILE_BYTES`] of input and [`MAX_NODES`] YAML nodes (aliases
//!   expanded), so that no file can make the loader read or allocate without bound.
//!
//! [`load`] and [`parse`] apply all of this; `vc5d --check`, the daemon's start and
//! its reload (SIGHUP, D-Bus `Reload`) all go through [`load`], so a file that
//! passes `--check` is one the daemon runs.
//!
//! # Normalised form
//!
//! [`Config::to_json`] prints the model with the field names of the structs below,
//! except that check durations are integers named `interval_ms` and `timeout_ms`, a
//! check's kind is named `type`, communities are `"ASN:VALUE"` strings, and
//! `flow_sync_wait` is an integer named `flow_sync_wait_ms`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_saphyr::{Location, Spanned};
use vc5_health::{CheckKind as HealthKind, CheckSpec, HttpCheck, Prober, SpecError};

/// Healthy reals a service needs when `need` is not given: the original's default.
pub const DEFAULT_NEED: usize = 1;
/// A real's weight when `weight` is not given.
pub const DEFAULT_WEIGHT: u16 = 1;
/// Transport of a service when `protocol` is not given, as in the original, which
/// knew only TCP.
pub const DEFAULT_PROTOCOL: Protocol = Protocol::Tcp;
/// BGP hold time in seconds when `rhi.hold_time` is not given: the value RFC 4271
/// suggests.
pub const DEFAULT_HOLD_TIME: u16 = 90;
/// Path an http or https check requests when `path` is not given.
pub const DEFAULT_CHECK_PATH: &str = "/";
/// Method an http or https check uses when `method` is not given.
pub const DEFAULT_CHECK_METHOD: &str = "GET";
/// Status codes an http or https check accepts when `expect` is not given.
pub const DEFAULT_EXPECT: &[u16] = &[200];
/// Time between two runs of a check when `interval` is not given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Time a check may take when `timeout` is not given; it must stay below the interval.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive passes that make a failed real healthy when `rise` is not given.
pub const DEFAULT_RISE: u32 = 2;
/// Consecutive failures that make a healthy real fail when `fall` is not given.
pub const DEFAULT_FALL: u32 = 3;
/// Whether an https check verifies the server's certificate when `verify` is not
/// given. Reals are usually addressed by IP and carry certificates for the service's
/// name, so verifying by default would fail most checks.
pub const DEFAULT_VERIFY_TLS: bool = false;
/// Name a dns check asks for when `query` is not given: the root, which any
/// recursive resolver can answer from its priming data.
pub const DEFAULT_DNS_QUERY: &str = ".";
/// Record type a dns check asks for when `qtype` is not given. `NS` rather than `A`
/// because `. NS` is the conventional liveness query for a resolver (`dig . NS`) and
/// is answered from the root hints, while `. A` has no data to return.
pub const DEFAULT_DNS_QTYPE: &str = "NS";
/// Transport a dns check uses when `transport` is not given.
pub const DEFAULT_DNS_TRANSPORT: Protocol = Protocol::Udp;
/// Response code a dns check expects when `rcode` is not given: NOERROR.
pub const DEFAULT_DNS_RCODE: u16 = 0;

/// How long vc5d holds its announcements at start for vc5-flowsync's resync when
/// `flow_sync_wait` is not given.
pub const DEFAULT_FLOW_SYNC_WAIT: Duration = vc5_xdp::flowsync::settings::DEFAULT_WAIT;
/// Shortest `flow_sync_wait`: vc5-flowsync reports its resync done 1.5 s after its
/// start at the earliest, so a shorter wait would always run out first.
pub const MIN_FLOW_SYNC_WAIT: Duration = Duration::from_secs(2);
/// Longest `flow_sync_wait`.
pub const MAX_FLOW_SYNC_WAIT: Duration = vc5_xdp::flowsync::settings::MAX_WAIT;
/// `flow_sync_rate` when not given: records per second accepted from one peer.
pub const DEFAULT_FLOW_SYNC_RATE: u32 = vc5_xdp::flowsync::settings::DEFAULT_RATE;
/// `flow_sync_resync_rate` when not given: records per second sent in a resync.
pub const DEFAULT_FLOW_SYNC_RESYNC_RATE: u32 = vc5_xdp::flowsync::settings::DEFAULT_RESYNC_RATE;
/// Bounds of `flow_sync_rate` and `flow_sync_resync_rate`.
pub const MIN_FLOW_SYNC_RATE: u32 = vc5_xdp::flowsync::settings::MIN_RATE;
pub const MAX_FLOW_SYNC_RATE: u32 = vc5_xdp::flowsync::settings::MAX_RATE;

/// `flow_insert_limit` when not given: the data plane's own default.
pub const DEFAULT_FLOW_INSERT_LIMIT: u32 = vc5_xdp::maps::INSERT_LIMIT;
/// Largest `flow_insert_limit` (0, no bound, is allowed too).
pub const MAX_FLOW_INSERT_LIMIT: u32 = 100_000_000;

/// Largest configuration file read, in bytes (16 MiB). The README's benchmark
/// scale, 1,000 services of 64 reals written as maps, takes about 2.6 MB, and the
/// most the data plane holds (65,535 service × real pairs) written out in full
/// with comments stays well below.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Most YAML nodes (scalars, lists and maps) a file may hold, aliases expanded:
/// enough for the limits below written out in full, small enough that a hostile
/// file cannot make the loader allocate without bound.
pub const MAX_NODES: usize = 1_000_000;
/// Shortest check interval: shorter ones load the reals more than they tell.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest check interval, and longest timeout.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest check timeout.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Largest `rise` or `fall`: at the longest interval, 100 runs are four days.
pub const MAX_RISE_FALL: u32 = 100;
/// Longest name (service, real group, check), in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest service description, in characters.
pub const MAX_DESC_CHARS: usize = 1024;
/// Most (VIP, port, protocol) endpoints over all services: what the data plane's
/// service table holds (index 0 is reserved).
pub const MAX_ENDPOINTS: usize = vc5_xdp::maps::MAX_SERVICES as usize - 1;
/// Most (endpoint, real) pairs over all services: what the data plane's backend
/// table holds (index 0 is reserved).
pub const MAX_BACKENDS: usize = vc5_xdp::maps::MAX_BACKENDS as usize - 1;

/// Characters refused in names and descriptions: C0 and C1 controls (a NUL ends a
/// D-Bus string, a newline splits a log line or a metrics sample), the Unicode line
/// and paragraph separators, and the bidirectional overrides that make text read
/// differently from what it is.
fn forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn char_name(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// An error in the configuration: where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file was read but its content is wrong: a syntax error, an unknown key, a
    /// value of the wrong type or a setting that makes no sense.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file name as given to [`load`] or [`parse`].
        file: String,
        /// 1-based line of the offending node.
        line: u64,
        /// 1-based column of the offending node, in characters.
        column: u64,
        /// What is wrong, without the position.
        message: String,
    },
    /// The file could not be read.
    #[error("{file}: {error}")]
    Io {
        /// The file name as given to [`load`].
        file: String,
        /// Why it could not be read.
        error: std::io::Error,
    },
}

impl ConfigError {
    fn invalid(file: &str, at: Location, message: impl Into<String>) -> Self {
        // A node we have no position for is reported at the start of the document,
        // which is still a usable position for an editor.
        ConfigError::Invalid {
            file: file.to_owned(),
            line: at.line().max(1),
            column: at.column().max(1),
            message: message.into(),
        }
    }

    /// The 1-based line of the error, if it is about the file's content.
    pub fn line(&self) -> Option<u64> {
        match self {
            ConfigError::Invalid { line, .. } => Some(*line),
            ConfigError::Io { .. } => None,
        }
    }

    /// The 1-based column of the error, if it is about the file's content.
    pub fn column(&self) -> Option<u64> {
        match self {
            ConfigError::Invalid { column, .. } => Some(*column),
            ConfigError::Io { .. } => None,
        }
    }

    /// The message without the file name and position.
    pub fn message(&self) -> String {
        match self {
            ConfigError::Invalid { message, .. } => message.clone(),
            ConfigError::Io { error, .. } => error.to_string(),
        }
    }
}

/// The whole normalised configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Multicast group and port that vc5-flowsync uses; `None` disables flow sync.
    pub multicast: Option<SocketAddr>,
    /// File holding the key that authenticates flow-sync datagrams. [`load`] makes a
    /// relative path relative to the configuration file's directory.
    pub flow_sync_key: Option<PathBuf>,
    /// How long vc5d holds its VIP announcements at start until vc5-flowsync has
    /// resynced (only when flow sync is configured).
    #[serde(rename = "flow_sync_wait_ms", serialize_with = "serialize_millis")]
    pub flow_sync_wait: Duration,
    /// Flow records per second vc5-flowsync accepts from one peer.
    pub flow_sync_rate: u32,
    /// Flow records per second vc5-flowsync sends when a peer asks for all.
    pub flow_sync_resync_rate: u32,
    /// New flows one CPU may insert into the flow table per second (0: no
    /// bound); over it a flow is forwarded by the lookup table, not pinned.
    pub flow_insert_limit: u32,
    /// Route health injection (BGP) settings.
    pub rhi: Rhi,
    /// The services, in file order.
    pub services: Vec<Service>,
    /// The real server groups, by name.
    pub reals: BTreeMap<String, Vec<Real>>,
}

impl Config {
    /// Whether flow sync runs: `multicast` and `flow_sync_key` are both given.
    pub fn flow_sync(&self) -> bool {
        self.multicast.is_some() && self.flow_sync_key.is_some()
    }

    /// The normalised configuration as pretty-printed JSON, as `vc5d --check` prints it.
    pub fn to_json(&self) -> String {
        // Every map in the model is keyed by strings and every value is plain data,
        // so serialisation cannot fail; the fallback only keeps this function total.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
    }
}

/// Route health injection: how VIPs are announced over BGP.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rhi {
    /// Our AS number; 0 means no BGP.
    pub as_number: u32,
    /// BGP peers the built-in speaker connects to.
    pub peers: Vec<IpAddr>,
    /// Proposed BGP hold time in seconds: 0 (no keepalives) or 3..=65535 (RFC 4271).
    pub hold_time: u16,
    /// Communities attached to announcements, as (AS, value).
    #[serde(serialize_with = "serialize_communities")]
    pub communities: Vec<(u16, u16)>,
    /// MULTI_EXIT_DISC attached to announcements.
    pub med: Option<u32>,
    /// LOCAL_PREF attached to announcements (iBGP only).
    pub local_pref: Option<u32>,
    /// Next hop for IPv6 VIPs when this host's `--address` is IPv4.
    pub next_hop6: Option<Ipv6Addr>,
}

impl Default for Rhi {
    fn default() -> Self {
        Rhi {
            as_number: 0,
            peers: Vec::new(),
            hold_time: DEFAULT_HOLD_TIME,
            communities: Vec::new(),
            med: None,
            local_pref: None,
            next_hop6: None,
        }
    }
}

impl Rhi {
    /// Whether BGP announcements are configured at all.
    pub fn enabled(&self) -> bool {
        self.as_number != 0
    }
}

/// A transport protocol: of a service, or of a dns check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A load-balanced service: a set of VIPs and ports served by the same reals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub desc: String,
    /// The VIPs, in file order, without duplicates.
    pub addrs: Vec<IpAddr>,
    /// The ports, in file order, without duplicates.
    pub ports: Vec<u16>,
    /// Transport of every port of the service.
    pub protocol: Protocol,
    /// Names of the real groups the service uses, in file order.
    pub real_groups: Vec<String>,
    /// The reals of all the groups, first occurrence of each address kept, in order.
    pub reals: Vec<Real>,
    /// Healthy reals needed for the service to be healthy.
    pub need: usize,
    /// How many checks must pass for a real to be healthy; `None`: all of them.
    pub quorum: Option<usize>,
    /// Health checks run against every real.
    pub checks: Vec<Check>,
}

impl Service {
    /// Every (VIP, port, protocol) the service answers on: each address with each port.
    pub fn endpoints(&self) -> Vec<(IpAddr, u16, Protocol)> {
        self.addrs
            .iter()
            .flat_map(|&addr| {
                self.ports
                    .iter()
                    .map(move |&port| (addr, port, self.protocol))
            })
            .collect()
    }

    /// How many checks must pass for a real to be healthy.
    pub fn checks_needed(&self) -> usize {
        self.quorum.unwrap_or(self.checks.len())
    }
}

/// A real server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Real {
    /// Its address on the LAN.
    pub addr: IpAddr,
    /// Relative share of new flows, 1..=65535.
    pub weight: u16,
    /// Administratively out of service: it gets no new flows.
    pub disabled: bool,
}

/// What a health check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connection is accepted.
    Tcp,
    /// An HTTP request gets an expected status.
    Http,
    /// An HTTP request over TLS gets an expected status.
    Https,
    /// A DNS query gets an expected response code.
    Dns,
}

impl CheckKind {
    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::Https => "https",
            CheckKind::Dns => "dns",
        }
    }

    fn is_http(self) -> bool {
        matches!(self, CheckKind::Http | CheckKind::Https)
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A health check, run against every real of its service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Name shown in status; defaults to `TYPE:PORT`, e.g. `http:80`.
    pub name: String,
    /// What the check does (`type` in the file).
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// Port on the real, always one of the service's ports.
    pub port: u16,
    /// HTTP request path (http, https).
    pub path: String,
    /// HTTP `Host` header and TLS server name (http, https); `None`: the real's address.
    pub host: Option<String>,
    /// HTTP method (http, https).
    pub method: String,
    /// Accepted HTTP status codes (http, https).
    pub expect: Vec<u16>,
    /// Time between the starts of two runs.
    #[serde(rename = "interval_ms", serialize_with = "serialize_millis")]
    pub interval: Duration,
    /// Time a run may take before it counts as failed.
    #[serde(rename = "timeout_ms", serialize_with = "serialize_millis")]
    pub timeout: Duration,
    /// Consecutive passes that make a failed real healthy.
    pub rise: u32,
    /// Consecutive failures that make a healthy real fail.
    pub fall: u32,
    /// Whether an https check verifies the certificate (`verify` in the file).
    pub verify_tls: bool,
    /// The query of a dns check; `None` for the other kinds.
    pub dns: Option<DnsCheck>,
}

impl Check {
    /// The check as the health monitor runs it against `real`, sending from
    /// `source` when given. Validation runs the monitor's own checks on this, so
    /// the daemon must build its checks with this function too.
    pub fn spec(&self, real: IpAddr, source: Option<IpAddr>) -> CheckSpec {
        use vc5_health::{DnsCheck as HealthDns, DnsTransport, TlsVerify};
        let http = || HttpCheck {
            method: self.method.clone(),
            path: self.path.clone(),
            host: self.host.clone(),
            expect: self.expect.clone(),
        };
        let kind = match self.kind {
            CheckKind::Tcp => HealthKind::Tcp,
            CheckKind::Http => HealthKind::Http(http()),
            CheckKind::Https => HealthKind::Https {
                http: http(),
                verify: if self.verify_tls {
                    TlsVerify::WebPki
                } else {
                    TlsVerify::None
                },
            },
            CheckKind::Dns => {
                let d = self.dns.as_ref();
                HealthKind::Dns(HealthDns {
                    query: d.map_or_else(|| DEFAULT_DNS_QUERY.into(), |d| d.query.clone()),
                    qtype: d.map_or(2, |d| d.qtype_code()),
                    transport: match d.map(|d| d.transport) {
                        Some(Protocol::Tcp) => DnsTransport::Tcp,
                        _ => DnsTransport::Udp,
                    },
                    rcode: d.map_or(DEFAULT_DNS_RCODE, |d| d.rcode),
                })
            }
        };
        let spec = CheckSpec::new(SocketAddr::new(real, self.port), kind)
            .with_timing(self.interval, self.timeout)
            .with_rise_fall(self.rise, self.fall);
        match source {
            Some(s) => spec.with_source(s),
            None => spec,
        }
    }
}

/// The query a dns check sends and the answer it wants.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsCheck {
    /// Name asked for, e.g. `.` or `example.com`.
    pub query: String,
    /// Record type as an upper-case mnemonic (`A`, `NS`, …) or `TYPEnnn`.
    pub qtype: String,
    /// Transport of the query.
    pub transport: Protocol,
    /// Response code that counts as a pass (0 = NOERROR).
    pub rcode: u16,
}

impl DnsCheck {
    /// The numeric record type to put in the question.
    pub fn qtype_code(&self) -> u16 {
        qtype_code(&self.qtype).unwrap_or(0)
    }
}

/// Record types known by name; others are written `TYPEnnn` (RFC 3597).
const QTYPES: &[(&str, u16)] = &[
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("SRV", 33),
    ("NAPTR", 35),
    ("DS", 43),
    ("RRSIG", 46),
    ("DNSKEY", 48),
    ("SVCB", 64),
    ("HTTPS", 65),
    ("ANY", 255),
    ("CAA", 257),
];

/// Response codes known by name (RFC 1035, RFC 2136).
const RCODES: &[(&str, u16)] = &[
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("YXDOMAIN", 6),
    ("YXRRSET", 7),
    ("NXRRSET", 8),
    ("NOTAUTH", 9),
    ("NOTZONE", 10),
];

/// Extended response codes are 12 bits wide (RFC 6891).
const MAX_RCODE: u16 = 4095;

fn qtype_code(qtype: &str) -> Option<u16> {
    QTYPES
        .iter()
        .find(|(name, _)| *name == qtype)
        .map(|&(_, code)| code)
        .or_else(|| qtype.strip_prefix("TYPE")?.parse().ok())
}

fn serialize_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn serialize_communities<S: Serializer>(c: &[(u16, u16)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(c.iter().map(|(asn, value)| format!("{asn}:{value}")))
}

/// Reads and validates the configuration file at `path`.
///
/// A relative `flow_sync_key` is made relative to the file's directory, since the
/// daemon's working directory says nothing about where the operator keeps the key.
///
/// At most [`MAX_FILE_BYTES`] are read, so that `--config /dev/zero` or a runaway
/// file is refused rather than read until memory runs out.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    use std::io::Read;
    let file = path.display().to_string();
    let io = |error| ConfigError::Io {
        file: file.clone(),
        error,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::invalid(
            &file,
            Location::UNKNOWN,
            format!("the file is larger than 16 MiB ({MAX_FILE_BYTES} bytes)"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&good[line_start..]).chars().count() as u64 + 1;
        ConfigError::Invalid {
            file: file.clone(),
            line,
            column,
            message: "the file is not UTF-8".to_owned(),
        }
    })?;
    let mut config = parse(&text, &file)?;
    if let (Some(key), Some(dir)) = (&mut config.flow_sync_key, path.parent())
        && key.is_relative()
    {
        *key = dir.join(&*key);
    }
    Ok(config)
}

/// Validates configuration `text` (YAML or JSON); `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::invalid(
            file,
            Location::UNKNOWN,
            format!("the configuration is larger than 16 MiB ({MAX_FILE_BYTES} bytes)"),
        ));
    }
    let options = serde_saphyr::options! {
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_nodes: MAX_NODES,
            // A node is at most two events (start and end of a list or map).
            max_events: 2 * MAX_NODES + 64,
        },
    };
    let raw: Option<RawConfig> =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| yaml_error(file, &e))?;
    // An empty file is refused because a truncated file, reloaded, would otherwise
    // withdraw every VIP; an operator who wants no services says `services: []`.
    let raw = raw.ok_or_else(|| {
        ConfigError::invalid(file, Location::UNKNOWN, "the configuration is empty")
    })?;
    Normaliser { file }.config(raw)
}

fn yaml_error(file: &str, err: &serde_saphyr::Error) -> ConfigError {
    let formatter = serde_saphyr::UserMessageFormatter.with_localizer(&BareLocalizer);
    let mut options = serde_saphyr::RenderOptions::new(&formatter);
    options.snippets = serde_saphyr::SnippetMode::Off;
    let message = err.render_with_options(options);
    ConfigError::invalid(file, err.location().unwrap_or(Location::UNKNOWN), message)
}

/// Leaves the position out of the parser's messages, since ours goes in front.
struct BareLocalizer;

impl serde_saphyr::Localizer for BareLocalizer {
    fn attach_location<'a>(&self, base: Cow<'a, str>, _loc: Location) -> Cow<'a, str> {
        base
    }

    fn alias_used_at(&self, _used: Location) -> String {
        String::new()
    }
}

// ---------------------------------------------------------------------------------
// The file as written.
// ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, deserialize_with = "present")]
    multicast: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    flow_sync_key: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    flow_sync_wait: Option<Spanned<RawDuration>>,
    #[serde(default, deserialize_with = "present")]
    flow_sync_rate: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    flow_sync_resync_rate: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    flow_insert_limit: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    rhi: Option<RawRhi>,
    #[serde(default)]
    services: Vec<Spanned<RawService>>,
    #[serde(default)]
    reals: RawGroups,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRhi {
    #[serde(default, deserialize_with = "present")]
    as_number: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    peers: Option<OneOrMany<String>>,
    #[serde(default, deserialize_with = "present")]
    hold_time: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    communities: Option<OneOrMany<String>>,
    #[serde(default, deserialize_with = "present")]
    med: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    local_pref: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    next_hop6: Option<Spanned<Text>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<Text>,
    #[serde(default, deserialize_with = "present")]
    desc: Option<Spanned<Text>>,
    addr: OneOrMany<String>,
    port: OneOrMany<Int>,
    #[serde(default, deserialize_with = "present")]
    protocol: Option<Protocol>,
    real: OneOrMany<String>,
    #[serde(default, deserialize_with = "present")]
    need: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    quorum: Option<Spanned<Int>>,
    #[serde(default)]
    checks: Vec<Spanned<RawCheck>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(default, deserialize_with = "present")]
    name: Option<Spanned<Text>>,
    #[serde(rename = "type")]
    kind: CheckKind,
    #[serde(default, deserialize_with = "present")]
    port: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    interval: Option<Spanned<RawDuration>>,
    #[serde(default, deserialize_with = "present")]
    timeout: Option<Spanned<RawDuration>>,
    #[serde(default, deserialize_with = "present")]
    rise: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    fall: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    path: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    host: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    method: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    expect: Option<OneOrMany<Int>>,
    #[serde(default, deserialize_with = "present")]
    verify: Option<Spanned<Bool>>,
    #[serde(default, deserialize_with = "present")]
    query: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    qtype: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    transport: Option<Spanned<Protocol>>,
    #[serde(default, deserialize_with = "present")]
    rcode: Option<Spanned<Text>>,
}

/// For an optional key: absent is `None` (through `#[serde(default)]`), while a
/// present key goes to `T` even when its value is `null`. serde's `Option` would
/// read `need: null` as "not given" and quietly apply the default, which is not
/// what an operator who wrote the key meant; `T` refuses a null instead.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The `reals` map, in file order, with the position of each group name.
#[derive(Default)]
struct RawGroups(Vec<(Spanned<String>, Vec<Spanned<RawReal>>)>);

impl<'de> Deserialize<'de> for RawGroups {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct GroupsVisitor;

        impl<'de> Visitor<'de> for GroupsVisitor {
            type Value = RawGroups;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of real group names to lists of reals")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawGroups, A::Error> {
                let mut groups = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    groups.push(entry);
                }
                Ok(RawGroups(groups))
            }
        }

        d.deserialize_map(GroupsVisitor)
    }
}

/// A real in a group: a bare address, or a map with `addr` and optional settings.
/// Written by hand because serde's untagged enums lose the positions.
struct RawReal {
    addr: Text,
    /// Where `addr` is when the real is a map; a bare address is the node itself.
    addr_at: Option<Location>,
    weight: Option<Spanned<Int>>,
    disabled: Option<Spanned<Bool>>,
}

impl<'de> Deserialize<'de> for RawReal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RealVisitor;

        const FIELDS: &[&str] = &["addr", "weight", "disabled"];

        impl<'de> Visitor<'de> for RealVisitor {
            type Value = RawReal;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address or a map with addr, weight and disabled")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawReal, E> {
                Ok(RawReal {
                    addr: Text(Ok(v.to_owned())),
                    addr_at: None,
                    weight: None,
                    disabled: None,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawReal, A::Error> {
                let mut addr: Option<Spanned<Text>> = None;
                let mut weight = None;
                let mut disabled = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "addr" => addr = Some(map.next_value()?),
                        "weight" => weight = Some(map.next_value()?),
                        "disabled" => disabled = Some(map.next_value()?),
                        other => return Err(de::Error::unknown_field(other, FIELDS)),
                    }
                }
                let addr = addr.ok_or_else(|| de::Error::missing_field("addr"))?;
                Ok(RawReal {
                    addr: addr.value,
                    addr_at: Some(addr.referenced),
                    weight,
                    disabled,
                })
            }
        }

        d.deserialize_any(RealVisitor)
    }
}

// serde-saphyr places an error raised by a visitor for a scalar map value at the key,
// not at the value. So the visitors below accept any node, keep what they could not
// use as a description, and the normaliser reports it at the node's own span.

/// Consumes a list of the wrong type and describes it for the message.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<String, A::Error> {
    while seq.next_element::<de::IgnoredAny>()?.is_some() {}
    Ok("a list".to_owned())
}

/// Consumes a map of the wrong type and describes it for the message.
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<String, A::Error> {
    while map
        .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
        .is_some()
    {}
    Ok("a map".to_owned())
}

/// Implements the visitor methods that turn a boolean, a float, a null or a map into
/// `$bad(description)`.
macro_rules! visit_wrong_types {
    ($bad:expr) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(($bad)(format!("`{v}`")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(($bad)(format!("`{v}`")))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(($bad)("nothing".to_owned()))
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(($bad)("nothing".to_owned()))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            skip_map(map).map($bad)
        }
    };
}

/// An integer as written; ranges are checked later so the message can name the
/// setting. `Err` holds a description of a node that is not an integer.
#[derive(Debug, Clone)]
struct Int(Result<i64, String>);

struct IntVisitor;

impl<'de> Visitor<'de> for IntVisitor {
    type Value = Int;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
        Ok(Int(Ok(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
        Ok(Int(i64::try_from(v).map_err(|_| format!("`{v}`"))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Int, E> {
        Ok(Int(Err(quoted(v))))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Int, A::Error> {
        skip_seq(seq).map(|f| Int(Err(f)))
    }

    visit_wrong_types!(|f| Int(Err(f)));
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IntVisitor)
    }
}

/// A string as written. A node that YAML reads as something else (`null`, `true`,
/// `.inf`, `1.5`, a list) is kept as a description for the normaliser to refuse at
/// its own position: taking its spelling would let `name: ~` pass as the name "~".
/// Integers keep their decimal spelling, as group names such as `5` do.
#[derive(Debug, Clone)]
struct Text(Result<String, String>);

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
        Ok(Text(Ok(v.to_owned())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
        Ok(Text(Ok(v.to_string())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
        Ok(Text(Ok(v.to_string())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Text, A::Error> {
        skip_seq(seq).map(|f| Text(Err(f)))
    }

    visit_wrong_types!(|f| Text(Err(f)));
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor)
    }
}

/// A boolean as written. A quoted `'true'` or `'yes'` is a string that YAML says is
/// not a boolean, so it is refused rather than coerced as serde-saphyr would.
#[derive(Debug, Clone)]
struct Bool(Result<bool, String>);

struct BoolVisitor;

impl<'de> Visitor<'de> for BoolVisitor {
    type Value = Bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("true or false")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Bool, E> {
        Ok(Bool(Ok(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Bool, E> {
        let word = v.to_ascii_lowercase();
        Ok(Bool(Err(
            if ["true", "false", "yes", "no", "on", "off"].contains(&word.as_str()) {
                format!("the quoted string {}: write it without quotes", quoted(v))
            } else {
                quoted(v)
            },
        )))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Bool, E> {
        Ok(Bool(Err(format!("`{v}`"))))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Bool, E> {
        Ok(Bool(Err(format!("`{v}`"))))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Bool, E> {
        Ok(Bool(Err(format!("`{v}`"))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Bool, E> {
        Ok(Bool(Err("nothing".to_owned())))
    }

    fn visit_none<E: de::Error>(self) -> Result<Bool, E> {
        Ok(Bool(Err("nothing".to_owned())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Bool, A::Error> {
        skip_seq(seq).map(|f| Bool(Err(f)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Bool, A::Error> {
        skip_map(map).map(|f| Bool(Err(f)))
    }
}

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BoolVisitor)
    }
}

/// A duration as written: a number of seconds or a string with a unit.
enum RawDuration {
    Int(i64),
    Float(f64),
    Text(String),
    Bad(String),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl<'de> Visitor<'de> for DurationVisitor {
            type Value = RawDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds or a duration such as \"500ms\"")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Int(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(i64::try_from(v)
                    .map_or_else(|_| RawDuration::Bad(format!("`{v}`")), RawDuration::Int))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                Ok(RawDuration::Float(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.to_owned()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawDuration, E> {
                Ok(RawDuration::Bad(format!("`{v}`")))
            }

            fn visit_unit<E: de::Error>(self) -> Result<RawDuration, E> {
                Ok(RawDuration::Bad("nothing".to_owned()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawDuration, A::Error> {
                skip_seq(seq).map(RawDuration::Bad)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawDuration, A::Error> {
                skip_map(map).map(RawDuration::Bad)
            }
        }

        d.deserialize_any(DurationVisitor)
    }
}

/// A value that is written alone or in a list: what [`OneOrMany`] accepts alone.
trait Leaf: DeserializeOwned {
    /// What the whole node should be, for messages.
    const EXPECTING: &'static str;
    /// A lone string.
    fn from_text(v: &str) -> Self;
    /// A lone integer.
    fn from_int(v: i64) -> Self;
}

impl Leaf for String {
    const EXPECTING: &'static str = "a string or a list of strings";

    fn from_text(v: &str) -> Self {
        v.to_owned()
    }

    // A lone scalar arrives already typed, so a name such as `5` comes as a number;
    // decimal integers keep their spelling. Booleans and floats may not (`yes`,
    // `1.10`), so those are refused and have to be quoted.
    fn from_int(v: i64) -> Self {
        v.to_string()
    }
}

impl Leaf for Int {
    const EXPECTING: &'static str = "an integer or a list of integers";

    // Kept for the normaliser to refuse, at the value's own position.
    fn from_text(v: &str) -> Self {
        Int(Err(quoted(v)))
    }

    fn from_int(v: i64) -> Self {
        Int(Ok(v))
    }
}

/// A value or a list of values, each with its position, and where the whole is.
struct OneOrMany<T> {
    at: Location,
    items: Vec<Spanned<T>>,
    /// A description of the node when it was neither a value nor a list.
    wrong: Option<String>,
}

enum OneOrManyInner<T> {
    One(T),
    Many(Vec<Spanned<T>>),
    Wrong(String),
}

struct InnerVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Leaf> Visitor<'de> for InnerVisitor<T> {
    type Value = OneOrManyInner<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(OneOrManyInner::One(T::from_text(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(OneOrManyInner::One(T::from_int(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(match i64::try_from(v) {
            Ok(v) => OneOrManyInner::One(T::from_int(v)),
            Err(_) => OneOrManyInner::Wrong(format!("`{v}`")),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<T>>()? {
            items.push(item);
        }
        Ok(OneOrManyInner::Many(items))
    }

    visit_wrong_types!(OneOrManyInner::Wrong);
}

impl<'de, T: Leaf> Deserialize<'de> for OneOrManyInner<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(InnerVisitor(std::marker::PhantomData))
    }
}

impl<'de, T: Leaf> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The span is taken around the whole node because a lone value's visitor
        // cannot learn its own position.
        let whole = Spanned::<OneOrManyInner<T>>::deserialize(d)?;
        let (items, wrong) = match whole.value {
            OneOrManyInner::One(v) => {
                (vec![Spanned::new(v, whole.referenced, whole.defined)], None)
            }
            OneOrManyInner::Many(items) => (items, None),
            OneOrManyInner::Wrong(found) => (Vec::new(), Some(found)),
        };
        Ok(OneOrMany {
            at: whole.referenced,
            items,
            wrong,
        })
    }
}

// ---------------------------------------------------------------------------------
// Validation and normalisation.
// ---------------------------------------------------------------------------------

struct Normaliser<'a> {
    file: &'a str,
}

/// Quotes text from the file for a message, with control characters escaped so a
/// message stays on one line.
fn quoted(s: &str) -> String {
    format!("`{}`", s.escape_debug())
}

impl Normaliser<'_> {
    fn err(&self, at: Location, message: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.file, at, message)
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let multicast = raw
            .multicast
            .as_ref()
            .map(|m| self.multicast(m))
            .transpose()?;
        let flow_sync_key = match &raw.flow_sync_key {
            Some(key) => {
                let path = self.text(key, "flow_sync_key")?;
                if path.is_empty() {
                    return Err(self.err(key.referenced, "flow_sync_key is empty"));
                }
                if let Some(c) = path.chars().find(|&c| forbidden_char(c)) {
                    return Err(self.err(
                        key.referenced,
                        format!("flow_sync_key contains the character {}", char_name(c)),
                    ));
                }
                Some(PathBuf::from(path))
            }
            None => None,
        };
        if let Some(key) = &raw.flow_sync_key
            && raw.multicast.is_none()
        {
            return Err(self.err(
                key.referenced,
                "flow_sync_key needs multicast (the flow-sync group, e.g. 224.0.0.1:9999)",
            ));
        }
        let flow_sync = multicast.is_some() && flow_sync_key.is_some();
        // A setting that would do nothing is a mistake to point out, as an
        // unknown key is.
        let unused = |at: Location, key: &str| {
            self.err(
                at,
                format!("{key} has no effect: flow sync needs both multicast and flow_sync_key"),
            )
        };
        let flow_sync_wait = match &raw.flow_sync_wait {
            None => DEFAULT_FLOW_SYNC_WAIT,
            Some(w) if !flow_sync => return Err(unused(w.referenced, "flow_sync_wait")),
            Some(w) => {
                self.duration(w, "flow_sync_wait", MIN_FLOW_SYNC_WAIT, MAX_FLOW_SYNC_WAIT)?
            }
        };
        let rate = |raw: &Option<Spanned<Int>>, key: &str, default: u32| match raw {
            None => Ok(default),
            Some(r) if !flow_sync => Err(unused(r.referenced, key)),
            Some(r) => self.rate(r, key),
        };
        let flow_sync_rate = rate(
            &raw.flow_sync_rate,
            "flow_sync_rate",
            DEFAULT_FLOW_SYNC_RATE,
        )?;
        let flow_sync_resync_rate = rate(
            &raw.flow_sync_resync_rate,
            "flow_sync_resync_rate",
            DEFAULT_FLOW_SYNC_RESYNC_RATE,
        )?;
        let flow_insert_limit = match &raw.flow_insert_limit {
            None => DEFAULT_FLOW_INSERT_LIMIT,
            Some(r) => {
                let n = self.int(r, "flow_insert_limit")?;
                match u32::try_from(n) {
                    Ok(n) if n <= MAX_FLOW_INSERT_LIMIT => n,
                    _ => {
                        return Err(self.err(
                            r.referenced,
                            format!(
                                "flow_insert_limit must be between 0 (no bound) and {MAX_FLOW_INSERT_LIMIT} flows per second, not {n}"
                            ),
                        ));
                    }
                }
            }
        };
        let rhi = raw
            .rhi
            .map(|r| self.rhi(r))
            .transpose()?
            .unwrap_or_default();
        let mut reals = BTreeMap::new();
        for (name, group) in raw.reals.0 {
            self.label(&name.value, name.referenced, "a real group name")?;
            let group = self.group(&name.value, group)?;
            reals.insert(name.value, group);
        }
        let mut services = Vec::with_capacity(raw.services.len());
        let mut names: HashMap<String, Location> = HashMap::new();
        let mut endpoints: HashMap<(IpAddr, u16, Protocol), (String, Location)> = HashMap::new();
        let mut pairs = 0usize;
        for raw_service in raw.services {
            let name_at = raw_service.value.name.referenced;
            let name = self.text(&raw_service.value.name, "name")?;
            if let Some(first) = names.get(&name) {
                return Err(self.err(
                    name_at,
                    format!(
                        "service name {} is already used at line {}",
                        quoted(&name),
                        first.line()
                    ),
                ));
            }
            names.insert(name, name_at);
            let service_at = raw_service.referenced;
            let service = self.service(raw_service, &reals, &mut endpoints)?;
            pairs = pairs.saturating_add(service.endpoints().len() * service.reals.len());
            if pairs > MAX_BACKENDS {
                return Err(self.err(
                    service_at,
                    format!(
                        "with this service there are {pairs} (endpoint, real) pairs; the data plane holds at most {MAX_BACKENDS}"
                    ),
                ));
            }
            services.push(service);
        }
        Ok(Config {
            multicast,
            flow_sync_key,
            flow_sync_wait,
            flow_sync_rate,
            flow_sync_resync_rate,
            flow_insert_limit,
            rhi,
            services,
            reals,
        })
    }

    fn multicast(&self, raw: &Spanned<Text>) -> Result<SocketAddr, ConfigError> {
        let at = raw.referenced;
        let text = self.text(raw, "multicast")?;
        let addr: SocketAddr = text.parse().map_err(|_| {
            self.err(
                at,
                format!(
                    "invalid multicast address {}: expected IP:PORT, e.g. 224.0.0.1:9999 or \"[ff02::1234]:9999\" (an IPv6 group quoted, or YAML reads a list)",
                    quoted(&text)
                ),
            )
        })?;
        if !addr.ip().is_multicast() {
            return Err(self.err(at, format!("{} is not a multicast address", addr.ip())));
        }
        if addr.port() == 0 {
            return Err(self.err(at, "the multicast port must not be 0"));
        }
        Ok(addr)
    }

    fn ip(&self, raw: &Spanned<String>, what: &str) -> Result<IpAddr, ConfigError> {
        raw.value.trim().parse().map_err(|_| {
            self.err(
                raw.referenced,
                format!("invalid {what} {}: not an IP address", quoted(&raw.value)),
            )
        })
    }

    /// An address that another host can send to or be sent to: a VIP, a real, a BGP
    /// peer or a next hop. The refused ones are placeholders (`0.0.0.0`, `::`),
    /// this host itself (loopback), groups (broadcast, multicast), and IPv4
    /// written as IPv6 (`::ffff:a.b.c.d`), which the data plane would key apart from
    /// the same IPv4 address so that one host would be two.
    fn unicast(&self, raw: &Spanned<String>, what: &str) -> Result<IpAddr, ConfigError> {
        let addr = self.ip(raw, what)?;
        let why = match addr {
            IpAddr::V4(v4) if v4.is_unspecified() => Some("the unspecified address"),
            IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
            IpAddr::V6(v6) if v6.is_unspecified() => Some("the unspecified address"),
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
                Some("an IPv4-mapped IPv6 address; write the IPv4 address itself")
            }
            a if a.is_loopback() => Some("a loopback address"),
            a if a.is_multicast() => Some("a multicast address"),
            _ => None,
        };
        match why {
            Some(why) => Err(self.err(raw.referenced, format!("{what} {addr} is {why}"))),
            None => Ok(addr),
        }
    }

    /// The string, or an error naming `key` when the node was something else.
    fn text(&self, raw: &Spanned<Text>, key: &str) -> Result<String, ConfigError> {
        raw.value.0.clone().map_err(|found| {
            self.err(
                raw.referenced,
                format!("{key} must be a string, not {found}"),
            )
        })
    }

    /// The boolean, or an error naming `key` when the node was something else.
    fn boolean(&self, raw: &Spanned<Bool>, key: &str) -> Result<bool, ConfigError> {
        raw.value.0.clone().map_err(|found| {
            self.err(
                raw.referenced,
                format!("{key} must be true or false, not {found}"),
            )
        })
    }

    /// Refuses a name that cannot be shown as it is everywhere a name goes: D-Bus
    /// (no NUL), Prometheus labels and logs (one line), the console.
    fn label(&self, name: &str, at: Location, what: &str) -> Result<(), ConfigError> {
        let why = if name.trim().is_empty() {
            "must not be empty".to_owned()
        } else if name.trim() != name {
            "must not begin or end with white space".to_owned()
        } else if name.chars().count() > MAX_NAME_CHARS {
            format!("is longer than {MAX_NAME_CHARS} characters")
        } else if let Some(c) = name.chars().find(|&c| forbidden_char(c)) {
            format!("contains the character {}", char_name(c))
        } else {
            return Ok(());
        };
        Err(self.err(at, format!("{what} {} {why}", quoted(name))))
    }

    fn rhi(&self, raw: RawRhi) -> Result<Rhi, ConfigError> {
        let as_number = match &raw.as_number {
            None => 0,
            Some(a) => self.u32(a, "as_number")?,
        };
        // Sets beside the lists keep every duplicate check linear: a list can be
        // as long as the node budget allows.
        let mut peers: Vec<IpAddr> = Vec::new();
        let mut seen_peers = HashSet::new();
        if let Some(list) = &raw.peers {
            let items = self.items(list, "peers", true)?;
            for item in items {
                let peer = self.unicast(item, "peer address")?;
                if !seen_peers.insert(peer) {
                    return Err(self.err(item.referenced, format!("peer {peer} is listed twice")));
                }
                peers.push(peer);
            }
            if as_number == 0
                && let Some(first) = items.first()
            {
                let at = raw
                    .as_number
                    .as_ref()
                    .map_or(first.referenced, |a| a.referenced);
                return Err(self.err(at, "rhi.peers need a non-zero rhi.as_number"));
            }
        }
        let hold_time = match &raw.hold_time {
            None => DEFAULT_HOLD_TIME,
            Some(h) => {
                let t = self.int(h, "hold_time")?;
                match u16::try_from(t) {
                    Ok(t) if t == 0 || t >= 3 => t,
                    _ => {
                        return Err(self.err(
                            h.referenced,
                            format!(
                                "hold_time {t} is invalid: it must be 0 or between 3 and 65535 seconds"
                            ),
                        ));
                    }
                }
            }
        };
        let communities = match &raw.communities {
            None => Vec::new(),
            Some(list) => self
                .items(list, "communities", true)?
                .iter()
                .map(|c| self.community(c))
                .collect::<Result<_, _>>()?,
        };
        let next_hop6 = match &raw.next_hop6 {
            None => None,
            Some(n) => match self.unicast(
                &Spanned::new(self.text(n, "next_hop6")?, n.referenced, n.defined),
                "next_hop6",
            )? {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(v4) => {
                    return Err(self.err(
                        n.referenced,
                        format!("next_hop6 {v4} is not an IPv6 address"),
                    ));
                }
            },
        };
        Ok(Rhi {
            as_number,
            peers,
            hold_time,
            communities,
            med: raw.med.as_ref().map(|m| self.u32(m, "med")).transpose()?,
            local_pref: raw
                .local_pref
                .as_ref()
                .map(|l| self.u32(l, "local_pref"))
                .transpose()?,
            next_hop6,
        })
    }

    fn community(&self, raw: &Spanned<String>) -> Result<(u16, u16), ConfigError> {
        let parsed = raw
            .value
            .split_once(':')
            .and_then(|(a, v)| Some((a.trim().parse().ok()?, v.trim().parse().ok()?)));
        parsed.ok_or_else(|| {
            self.err(
                raw.referenced,
                format!(
                    "invalid community {}: expected ASN:VALUE with both 0..=65535, e.g. \"65000:100\"",
                    quoted(&raw.value)
                ),
            )
        })
    }

    fn group(&self, name: &str, raw: Vec<Spanned<RawReal>>) -> Result<Vec<Real>, ConfigError> {
        let mut reals: Vec<Real> = Vec::with_capacity(raw.len());
        let mut seen = HashSet::new();
        for item in raw {
            let addr_at = item.value.addr_at.unwrap_or(item.referenced);
            let addr = self.text(&Spanned::new(item.value.addr, addr_at, addr_at), "addr")?;
            let addr = self.unicast(&Spanned::new(addr, addr_at, addr_at), "real address")?;
            if !seen.insert(addr) {
                return Err(self.err(
                    addr_at,
                    format!("real {addr} is listed twice in group {}", quoted(name)),
                ));
            }
            let weight = match item.value.weight {
                None => DEFAULT_WEIGHT,
                Some(w) => {
                    let n = self.int(&w, "weight")?;
                    match u16::try_from(n) {
                        Ok(0) => {
                            return Err(self.err(
                                w.referenced,
                                "weight must be at least 1; use `disabled: true` to take a real out of service",
                            ));
                        }
                        Ok(v) => v,
                        Err(_) => {
                            return Err(self.err(
                                w.referenced,
                                format!("weight {n} is out of range 1..=65535"),
                            ));
                        }
                    }
                }
            };
            reals.push(Real {
                addr,
                weight,
                disabled: match &item.value.disabled {
                    None => false,
                    Some(d) => self.boolean(d, "disabled")?,
                },
            });
        }
        Ok(reals)
    }

    /// A 32-bit unsigned setting (AS numbers, MED, LOCAL_PREF).
    fn u32(&self, raw: &Spanned<Int>, key: &str) -> Result<u32, ConfigError> {
        let n = self.int(raw, key)?;
        u32::try_from(n).map_err(|_| {
            self.err(
                raw.referenced,
                format!("{key} must be between 0 and {}, not {n}", u32::MAX),
            )
        })
    }

    /// A flow-sync rate in records per second.
    fn rate(&self, raw: &Spanned<Int>, key: &str) -> Result<u32, ConfigError> {
        let n = self.int(raw, key)?;
        match u32::try_from(n) {
            Ok(n) if (MIN_FLOW_SYNC_RATE..=MAX_FLOW_SYNC_RATE).contains(&n) => Ok(n),
            _ => Err(self.err(
                raw.referenced,
                format!(
                    "{key} must be between {MIN_FLOW_SYNC_RATE} and {MAX_FLOW_SYNC_RATE} records per second, not {n}"
                ),
            )),
        }
    }

    /// The integer, or an error naming `key` when the node was something else.
    fn int(&self, raw: &Spanned<Int>, key: &str) -> Result<i64, ConfigError> {
        raw.value.0.clone().map_err(|found| {
            self.err(
                raw.referenced,
                format!("{key} must be an integer, not {found}"),
            )
        })
    }

    /// The items of a value-or-list node, refusing a node of another type and,
    /// unless `may_be_empty`, an empty list.
    fn items<'l, T: Leaf>(
        &self,
        list: &'l OneOrMany<T>,
        key: &str,
        may_be_empty: bool,
    ) -> Result<&'l [Spanned<T>], ConfigError> {
        if let Some(found) = &list.wrong {
            return Err(self.err(
                list.at,
                format!("{key} must be {}, not {found}", T::EXPECTING),
            ));
        }
        if list.items.is_empty() && !may_be_empty {
            return Err(self.err(list.at, format!("{key} is an empty list")));
        }
        Ok(&list.items)
    }

    fn port(&self, raw: &Spanned<Int>) -> Result<u16, ConfigError> {
        let port = self.int(raw, "port")?;
        match u16::try_from(port) {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(self.err(
                raw.referenced,
                format!("port {port} is out of range 1..=65535"),
            )),
        }
    }

    /// A count that must be at least 1; `what` names the setting in the message.
    fn positive(&self, raw: &Spanned<Int>, what: &str) -> Result<usize, ConfigError> {
        let n = self.int(raw, what)?;
        match usize::try_from(n) {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(self.err(
                raw.referenced,
                format!("{what} must be at least 1, not {n}"),
            )),
        }
    }

    fn service(
        &self,
        raw: Spanned<RawService>,
        groups: &BTreeMap<String, Vec<Real>>,
        endpoints: &mut HashMap<(IpAddr, u16, Protocol), (String, Location)>,
    ) -> Result<Service, ConfigError> {
        let service_at = raw.referenced;
        let raw = raw.value;
        let name = self.text(&raw.name, "name")?;
        self.label(&name, raw.name.referenced, "the service name")?;
        let desc = match &raw.desc {
            None => String::new(),
            Some(d) => {
                let desc = self.text(d, "desc")?;
                if desc.chars().count() > MAX_DESC_CHARS {
                    return Err(self.err(
                        d.referenced,
                        format!("desc is longer than {MAX_DESC_CHARS} characters"),
                    ));
                }
                if let Some(c) = desc.chars().find(|&c| forbidden_char(c)) {
                    return Err(self.err(
                        d.referenced,
                        format!("desc contains the character {}", char_name(c)),
                    ));
                }
                desc
            }
        };

        let mut addrs: Vec<(IpAddr, Location)> = Vec::new();
        let mut seen_addrs = HashSet::new();
        for item in self.items(&raw.addr, "addr", false)? {
            let addr = self.unicast(item, "service address")?;
            if !seen_addrs.insert(addr) {
                return Err(self.err(item.referenced, format!("address {addr} is listed twice")));
            }
            addrs.push((addr, item.referenced));
        }

        let mut ports: Vec<u16> = Vec::new();
        let mut seen_ports = HashSet::new();
        for item in self.items(&raw.port, "port", false)? {
            let port = self.port(item)?;
            if !seen_ports.insert(port) {
                return Err(self.err(item.referenced, format!("port {port} is listed twice")));
            }
            ports.push(port);
        }

        let protocol = raw.protocol.unwrap_or(DEFAULT_PROTOCOL);
        // The data plane's tables are sized at load time; a file it cannot hold
        // must be refused here, not after XDP has been attached. Checked before
        // the endpoints are built, so a huge cross product is never allocated.
        let total = endpoints
            .len()
            .saturating_add(addrs.len().saturating_mul(ports.len()));
        if total > MAX_ENDPOINTS {
            return Err(self.err(
                service_at,
                format!(
                    "with this service there are {total} VIP:port endpoints; the data plane holds at most {MAX_ENDPOINTS}"
                ),
            ));
        }
        for &(addr, at) in &addrs {
            for &port in &ports {
                if let Some((other, other_at)) = endpoints.get(&(addr, port, protocol)) {
                    let endpoint = SocketAddr::new(addr, port);
                    return Err(self.err(
                        at,
                        format!(
                            "{endpoint}/{protocol} is already served by service {} (line {})",
                            quoted(other),
                            other_at.line()
                        ),
                    ));
                }
            }
        }
        for &(addr, _) in &addrs {
            for &port in &ports {
                endpoints.insert((addr, port, protocol), (name.clone(), service_at));
            }
        }

        let mut real_groups: Vec<String> = Vec::new();
        let mut reals: Vec<Real> = Vec::new();
        let mut real_index: HashMap<IpAddr, usize> = HashMap::new();
        let mut seen_groups: HashSet<&str> = HashSet::new();
        for item in self.items(&raw.real, "real", false)? {
            let group_name = &item.value;
            let Some(group) = groups.get(group_name) else {
                // A few names help; thousands would bury the message.
                let known: Vec<&str> = groups.keys().take(10).map(String::as_str).collect();
                let known = match groups.len() {
                    0 => "there are none".to_owned(),
                    n if n > known.len() => {
                        format!(
                            "defined: {}, and {} more",
                            known.join(", "),
                            n - known.len()
                        )
                    }
                    _ => format!("defined: {}", known.join(", ")),
                };
                return Err(self.err(
                    item.referenced,
                    format!("undefined real group {} ({known})", quoted(group_name)),
                ));
            };
            if !seen_groups.insert(group_name.as_str()) {
                return Err(self.err(
                    item.referenced,
                    format!("real group {} is listed twice", quoted(group_name)),
                ));
            }
            for real in group {
                // A real that is its own VIP would receive its own frames back.
                if seen_addrs.contains(&real.addr) {
                    return Err(self.err(
                        item.referenced,
                        format!(
                            "real {} of group {} is also an address of this service",
                            real.addr,
                            quoted(group_name)
                        ),
                    ));
                }
                match real_index.get(&real.addr).map(|&i| &reals[i]) {
                    None => {
                        real_index.insert(real.addr, reals.len());
                        reals.push(real.clone());
                    }
                    Some(seen) if seen == real => {}
                    // One service cannot give a real two weights; silently picking
                    // one would hide the operator's mistake.
                    Some(_) => {
                        return Err(self.err(
                            item.referenced,
                            format!(
                                "real {} is in group {} with a different weight or disabled setting than in an earlier group of this service",
                                real.addr,
                                quoted(group_name)
                            ),
                        ));
                    }
                }
            }
            real_groups.push(group_name.clone());
        }

        // `need` is compared with every real, disabled or not: disabling a real is an
        // operational act and must not turn a valid configuration into an invalid one.
        let need = match &raw.need {
            None => DEFAULT_NEED,
            Some(n) => self.positive(n, "need")?,
        };
        if need > reals.len() {
            let at = raw.need.as_ref().map_or(raw.real.at, |n| n.referenced);
            return Err(self.err(
                at,
                format!(
                    "need is {need} but the service has only {} real{}",
                    reals.len(),
                    if reals.len() == 1 { "" } else { "s" }
                ),
            ));
        }

        // The health monitor's own validation runs against a real of the service
        // (or its VIP when it has none), so what it would refuse at run time is
        // refused here, with a position, by `--check`, start and reload alike.
        let probe_target = reals.first().map_or(addrs[0].0, |r| r.addr);
        let checks = raw
            .checks
            .into_iter()
            .map(|c| self.check(c, &ports, probe_target))
            .collect::<Result<Vec<_>, _>>()?;

        let quorum = match &raw.quorum {
            None => None,
            Some(q) => {
                let k = self.positive(q, "quorum")?;
                if k > checks.len() {
                    return Err(self.err(
                        q.referenced,
                        format!(
                            "quorum is {k} but the service has only {} check{}",
                            checks.len(),
                            if checks.len() == 1 { "" } else { "s" }
                        ),
                    ));
                }
                Some(k)
            }
        };

        Ok(Service {
            name,
            desc,
            addrs: addrs.into_iter().map(|(a, _)| a).collect(),
            ports,
            protocol,
            real_groups,
            reals,
            need,
            quorum,
            checks,
        })
    }

    fn check(
        &self,
        raw: Spanned<RawCheck>,
        ports: &[u16],
        probe_target: IpAddr,
    ) -> Result<Check, ConfigError> {
        let check_at = raw.referenced;
        let raw = raw.value;
        let kind = raw.kind;

        let port = match &raw.port {
            Some(p) => {
                let port = self.port(p)?;
                if !ports.contains(&port) {
                    return Err(self.err(
                        p.referenced,
                        format!(
                            "check port {port} is not one of the service's ports ({})",
                            list_ports(ports)
                        ),
                    ));
                }
                port
            }
            None => match ports {
                [only] => *only,
                _ => {
                    return Err(self.err(
                        check_at,
                        format!(
                            "the check needs a `port`: the service has several ({})",
                            list_ports(ports)
                        ),
                    ));
                }
            },
        };

        // Keys of another kind of check are refused rather than ignored: a `path` on a
        // tcp check means the operator believes something is checked that is not.
        let wrong_kind = |key: &str, at: Location, applies: &str| {
            self.err(
                at,
                format!("`{key}` applies only to {applies} checks, not {kind}"),
            )
        };
        if !kind.is_http() {
            let http_keys = [
                ("path", raw.path.as_ref().map(|v| v.referenced)),
                ("host", raw.host.as_ref().map(|v| v.referenced)),
                ("method", raw.method.as_ref().map(|v| v.referenced)),
                ("expect", raw.expect.as_ref().map(|v| v.at)),
            ];
            if let Some((key, Some(at))) = http_keys.into_iter().find(|(_, at)| at.is_some()) {
                return Err(wrong_kind(key, at, "http and https"));
            }
        }
        if kind != CheckKind::Https
            && let Some(v) = &raw.verify
        {
            return Err(wrong_kind("verify", v.referenced, "https"));
        }
        if kind != CheckKind::Dns {
            let dns_keys = [
                ("query", raw.query.as_ref().map(|v| v.referenced)),
                ("qtype", raw.qtype.as_ref().map(|v| v.referenced)),
                ("transport", raw.transport.as_ref().map(|v| v.referenced)),
                ("rcode", raw.rcode.as_ref().map(|v| v.referenced)),
            ];
            if let Some((key, Some(at))) = dns_keys.into_iter().find(|(_, at)| at.is_some()) {
                return Err(wrong_kind(key, at, "dns"));
            }
        }

        let dns = if kind == CheckKind::Dns {
            Some(self.dns(&raw)?)
        } else {
            None
        };

        let name = match &raw.name {
            Some(n) => {
                let name = self.text(n, "name")?;
                self.label(&name, n.referenced, "the check name")?;
                name
            }
            None => format!("{kind}:{port}"),
        };

        // Path, host and method go into the request; the health crate says what it
        // can send, and each is asked about alone so the error names the key.
        let http_part = |key: &str,
                         raw: &Option<Spanned<Text>>,
                         part: fn(&mut HttpCheck, String)| {
            let Some(v) = raw else {
                return Ok(None);
            };
            let text = self.text(v, key)?;
            let mut http = HttpCheck::default();
            part(&mut http, text.clone());
            let spec = CheckSpec::new(SocketAddr::new(probe_target, port), HealthKind::Http(http));
            match spec.validate() {
                // The health crate's message names the key and quotes the value.
                Err(SpecError::Http(why)) => Err(self.err(v.referenced, why)),
                Err(e) => Err(self.err(v.referenced, e.to_string())),
                Ok(()) => Ok(Some(text)),
            }
        };
        let path = http_part("path", &raw.path, |h, v| h.path = v)?
            .unwrap_or_else(|| DEFAULT_CHECK_PATH.to_owned());
        let host = http_part("host", &raw.host, |h, v| h.host = Some(v))?;
        if let (Some(h), Some(raw_host)) = (&host, &raw.host)
            && !is_http_host(h)
        {
            return Err(self.err(
                raw_host.referenced,
                format!(
                    "invalid host {}: expected a domain name or an IP address, optionally with :PORT",
                    quoted(h)
                ),
            ));
        }
        let method = http_part("method", &raw.method, |h, v| h.method = v)?
            .unwrap_or_else(|| DEFAULT_CHECK_METHOD.to_owned());
        let expect = match raw.expect {
            None => DEFAULT_EXPECT.to_vec(),
            Some(list) => {
                let items = self.items(&list, "expect", false)?;
                let mut codes = Vec::new();
                let mut seen_codes = HashSet::new();
                for item in items {
                    let code = self.int(item, "expect")?;
                    match u16::try_from(code) {
                        Ok(code @ 100..=599) => {
                            if seen_codes.insert(code) {
                                codes.push(code);
                            }
                        }
                        _ => {
                            return Err(self.err(
                                item.referenced,
                                format!("expect {code} is not an HTTP status code (100..=599)"),
                            ));
                        }
                    }
                }
                codes
            }
        };

        let interval = match &raw.interval {
            None => DEFAULT_INTERVAL,
            Some(d) => self.duration(d, "interval", MIN_INTERVAL, MAX_INTERVAL)?,
        };
        let timeout = match &raw.timeout {
            None => DEFAULT_TIMEOUT,
            Some(d) => self.duration(d, "timeout", MIN_TIMEOUT, MAX_INTERVAL)?,
        };
        if timeout >= interval {
            let at = raw
                .timeout
                .as_ref()
                .or(raw.interval.as_ref())
                .map_or(check_at, |d| d.referenced);
            return Err(self.err(
                at,
                format!(
                    "timeout ({}) must be shorter than interval ({})",
                    format_duration(timeout),
                    format_duration(interval)
                ),
            ));
        }
        let rise = match &raw.rise {
            None => DEFAULT_RISE,
            Some(r) => self.count(r, "rise")?,
        };
        let fall = match &raw.fall {
            None => DEFAULT_FALL,
            Some(f) => self.count(f, "fall")?,
        };

        let verify_tls = match &raw.verify {
            None => DEFAULT_VERIFY_TLS,
            Some(v) => self.boolean(v, "verify")?,
        };
        let check = Check {
            name,
            kind,
            port,
            path,
            host,
            method,
            expect,
            interval,
            timeout,
            rise,
            fall,
            verify_tls,
            dns,
        };
        // Everything the monitor checks when it is given the check: timing, the
        // request, the TLS set-up and the DNS query's encoding.
        if let Err(e) = Prober::new(Arc::new(check.spec(probe_target, None))) {
            return Err(self.err(check_at, format!("the check cannot run: {e}")));
        }
        Ok(check)
    }

    fn count(&self, raw: &Spanned<Int>, what: &str) -> Result<u32, ConfigError> {
        let n = self.int(raw, what)?;
        match u32::try_from(n) {
            Ok(n) if (1..=MAX_RISE_FALL).contains(&n) => Ok(n),
            _ => Err(self.err(
                raw.referenced,
                format!("{what} must be between 1 and {MAX_RISE_FALL}, not {n}"),
            )),
        }
    }

    fn duration(
        &self,
        raw: &Spanned<RawDuration>,
        what: &str,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let (written, parsed) = match &raw.value {
            RawDuration::Int(secs) => (
                secs.to_string(),
                u64::try_from(*secs)
                    .map(Duration::from_secs)
                    .map_err(|_| "it must not be negative".to_owned()),
            ),
            // Through the shortest decimal spelling, so that 0.3 is exactly 300ms
            // rather than the binary float's 299.999…ms.
            RawDuration::Float(secs) => (secs.to_string(), parse_duration(&secs.to_string())),
            RawDuration::Text(text) => (quoted(text), parse_duration(text)),
            RawDuration::Bad(found) => {
                return Err(self.err(
                    raw.referenced,
                    format!(
                        "{what} must be a number of seconds or a duration such as \"500ms\", not {found}"
                    ),
                ));
            }
        };
        let d = parsed
            .map_err(|why| self.err(raw.referenced, format!("invalid {what} {written}: {why}")))?;
        if d.is_zero() {
            return Err(self.err(raw.referenced, format!("{what} must not be zero")));
        }
        if d.subsec_nanos() % 1_000_000 != 0 {
            return Err(self.err(
                raw.referenced,
                format!("{what} has a finer resolution than a millisecond"),
            ));
        }
        if d < min || d > max {
            return Err(self.err(
                raw.referenced,
                format!(
                    "{what} must be between {} and {}, not {}",
                    format_duration(min),
                    format_duration(max),
                    format_duration(d)
                ),
            ));
        }
        Ok(d)
    }

    fn dns(&self, raw: &RawCheck) -> Result<DnsCheck, ConfigError> {
        let query = match &raw.query {
            None => DEFAULT_DNS_QUERY.to_owned(),
            Some(q) => {
                let query = self.text(q, "query")?;
                if !is_dns_name(&query) {
                    return Err(self.err(
                        q.referenced,
                        format!("query {} is not a domain name", quoted(&query)),
                    ));
                }
                query
            }
        };
        let qtype = match &raw.qtype {
            None => DEFAULT_DNS_QTYPE.to_owned(),
            Some(t) => {
                let text = self.text(t, "qtype")?;
                normalise_qtype(&text).ok_or_else(|| {
                    self.err(
                        t.referenced,
                        format!(
                            "unknown qtype {}: expected a record type such as A, AAAA, NS, SOA or TYPEnnn",
                            quoted(&text)
                        ),
                    )
                })?
            }
        };
        let rcode = match &raw.rcode {
            None => DEFAULT_DNS_RCODE,
            Some(r) => {
                let text = self.text(r, "rcode")?;
                parse_rcode(&text).ok_or_else(|| {
                    self.err(
                        r.referenced,
                        format!(
                            "unknown rcode {}: expected 0..={MAX_RCODE} or a name such as NOERROR or NXDOMAIN",
                            quoted(&text)
                        ),
                    )
                })?
            }
        };
        Ok(DnsCheck {
            query,
            qtype,
            transport: raw
                .transport
                .as_ref()
                .map_or(DEFAULT_DNS_TRANSPORT, |t| t.value),
            rcode,
        })
    }
}

fn list_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `Host` header value: a domain name of letters, digits, hyphens and
/// underscores, an IPv4 address or a bracketed IPv6 address, then optionally
/// `:PORT`. What the health crate would send is wider (any visible ASCII); this is
/// what names a host.
fn is_http_host(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (None, Some(p)),
                None => return false,
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    if let Some(p) = port
        && !matches!(p.parse::<u16>(), Ok(1..))
    {
        return false;
    }
    let Some(host) = host else {
        return true;
    };
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        // An all-numeric last label would be a mistyped IPv4 address.
        && !name.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn is_dns_name(s: &str) -> bool {
    if s == "." {
        return true;
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty() && label.len() <= 63 && label.bytes().all(|b| b.is_ascii_graphic())
        })
}

fn normalise_qtype(s: &str) -> Option<String> {
    let upper = s.trim().to_ascii_uppercase();
    // Type 0 is reserved and never asked for.
    if upper == "0" || upper == "TYPE0" {
        return None;
    }
    if let Ok(code) = upper.parse::<u16>() {
        return Some(
            QTYPES
                .iter()
                .find(|&&(_, c)| c == code)
                .map_or_else(|| format!("TYPE{code}"), |(name, _)| (*name).to_owned()),
        );
    }
    qtype_code(&upper).map(|_| upper)
}

fn parse_rcode(s: &str) -> Option<u16> {
    let s = s.trim();
    if let Ok(code) = s.parse::<u16>() {
        return (code <= MAX_RCODE).then_some(code);
    }
    RCODES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|&(_, code)| code)
}

/// Parses `"500ms"`, `"2s"`, `"1.5m"`, `"1h"` or a bare number of seconds, exactly:
/// the decimal digits are turned into nanoseconds without going through a float.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit_ns: u128 = match unit.trim() {
        "ms" => 1_000_000,
        "" | "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3600 * 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {} (use ms, s, m or h)",
                quoted(other)
            ));
        }
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let bad = || "expected a number followed by ms, s, m or h, e.g. \"500ms\"".to_owned();
    if whole.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 18 {
        return Err(bad());
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| bad())?
    };
    let scale = 10u128.pow(u32::try_from(frac.len()).map_err(|_| bad())?);
    let nanos = whole
        .checked_mul(unit_ns)
        .and_then(|w| w.checked_add(frac_value * unit_ns / scale))
        .ok_or_else(|| "it is too long".to_owned())?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| "it is too long".to_owned())?;
    // The remainder of a division by 10^9 fits in a u32.
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, sub))
}

fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms != 0 && ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms != 0 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    /// The original vc5 README's config.yaml, as design.md gives it.
    const ORIGINAL: &str = include_str!("../tests/data/original.yaml");

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn real(s: &str) -> Real {
        Real {
            addr: ip(s),
            weight: 1,
            disabled: false,
        }
    }

    fn ok(text: &str) -> Config {
        match parse(text, "test.yaml") {
            Ok(c) => c,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn fail(text: &str) -> ConfigError {
        match parse(text, "test.yaml") {
            Ok(c) => panic!("expected an error, got {c:#?}"),
            Err(e) => e,
        }
    }

    /// Asserts the error's position and that its message contains `needle`.
    #[track_caller]
    fn assert_err(text: &str, pos: &str, needle: &str) {
        let e = fail(text);
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("test.yaml:{pos}: ")),
            "expected position {pos}, got: {shown}"
        );
        assert!(shown.contains(needle), "expected {needle:?} in: {shown}");
    }

    /// The original's file with `service` inserted as the service's remaining keys.
    fn svc(extra: &str) -> String {
        format!(
            "services:\n  - name: web\n    addr: 192.0.2.1\n    port: 80\n    real: pool\n{extra}reals:\n  pool: [10.0.0.1, 10.0.0.2, 10.0.0.3]\n"
        )
    }

    #[test]
    fn original_file_loads_and_normalises() {
        let c = ok(ORIGINAL);
        let expected = Config {
            multicast: Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(224, 0, 0, 1),
                9999,
            ))),
            flow_sync_key: None,
            flow_sync_wait: DEFAULT_FLOW_SYNC_WAIT,
            flow_sync_rate: DEFAULT_FLOW_SYNC_RATE,
            flow_sync_resync_rate: DEFAULT_FLOW_SYNC_RESYNC_RATE,
            flow_insert_limit: DEFAULT_FLOW_INSERT_LIMIT,
            rhi: Rhi {
                as_number: 65000,
                peers: vec![ip("10.10.100.3"), ip("10.10.100.4")],
                ..Rhi::default()
            },
            services: vec![Service {
                name: "nginx".into(),
                desc: "web server".into(),
                addrs: vec![ip("192.168.101.1")],
                ports: vec![80, 443],
                protocol: Protocol::Tcp,
                real_groups: vec!["nginx".into()],
                reals: vec![real("10.10.100.10"), real("10.10.100.11")],
                need: 1,
                quorum: None,
                checks: vec![Check {
                    name: "http check".into(),
                    kind: CheckKind::Http,
                    port: 80,
                    path: "/alive".into(),
                    host: Some("example.com".into()),
                    method: "GET".into(),
                    expect: vec![200],
                    interval: Duration::from_secs(2),
                    timeout: Duration::from_secs(1),
                    rise: 2,
                    fall: 3,
                    verify_tls: false,
                    dns: None,
                }],
            }],
            reals: BTreeMap::from([(
                "nginx".to_owned(),
                vec![real("10.10.100.10"), real("10.10.100.11")],
            )]),
        };
        assert_eq!(c, expected);
        assert_eq!(c.rhi.hold_time, DEFAULT_HOLD_TIME);
        assert!(c.rhi.enabled());
        assert_eq!(c.services[0].checks_needed(), 1);
        assert_eq!(
            c.services[0].endpoints(),
            vec![
                (ip("192.168.101.1"), 80, Protocol::Tcp),
                (ip("192.168.101.1"), 443, Protocol::Tcp),
            ]
        );
    }

    #[test]
    fn endpoints_cross_addresses_and_ports() {
        let c = ok(
            "services:\n  - name: s\n    addr: [192.0.2.1, '2001:db8::1']\n    port: [53]\n    protocol: udp\n    real: g\nreals:\n  g: [10.0.0.1]\n",
        );
        assert_eq!(
            c.services[0].endpoints(),
            vec![
                (ip("192.0.2.1"), 53, Protocol::Udp),
                (ip("2001:db8::1"), 53, Protocol::Udp),
            ]
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = ok("services: []\n");
        assert_eq!(c.multicast, None);
        assert_eq!(c.rhi, Rhi::default());
        assert!(!c.rhi.enabled());
        assert!(c.services.is_empty());
        assert!(c.reals.is_empty());
    }

    #[test]
    fn extensions_parse() {
        let text = "\
multicast: '[ff02::1234]:9999'
flow_sync_key: /etc/vc5/flow.key
rhi:
  as_number: 4200000000
  peers: 10.0.0.254
  hold_time: 30
  communities: ['65000:100', '65000:200']
  med: 10
  local_pref: 200
  next_hop6: 2001:db8::fe
services:
  - name: dns
    desc: resolvers
    addr: [192.0.2.53, 2001:db8::53]
    port: 53
    protocol: udp
    real: [a, b]
    need: 2
    quorum: 1
    checks:
      - type: dns
        query: example.com
        qtype: aaaa
        transport: tcp
        rcode: NXDOMAIN
        interval: 500ms
        timeout: 250ms
        rise: 1
        fall: 5
      - type: tcp
        interval: 1m
        timeout: 2
  - name: web
    addr: 192.0.2.80
    port: [80, 443]
    real: a
    checks:
      - type: https
        port: 443
        path: /health
        method: HEAD
        expect: [200, 204]
        verify: true
        interval: 3
        timeout: 1.5
      - {type: http, port: 80, expect: 301}
reals:
  a:
    - 10.0.0.1
    - {addr: 10.0.0.2, weight: 3}
    - addr: 10.0.0.3
      disabled: true
  b: [{addr: 10.0.0.3, disabled: true}, '2001:db8::10']
";
        let c = ok(text);
        assert_eq!(c.multicast, Some("[ff02::1234]:9999".parse().unwrap()));
        assert_eq!(c.flow_sync_key, Some(PathBuf::from("/etc/vc5/flow.key")));
        assert_eq!(
            c.rhi,
            Rhi {
                as_number: 4_200_000_000,
                peers: vec![ip("10.0.0.254")],
                hold_time: 30,
                communities: vec![(65000, 100), (65000, 200)],
                med: Some(10),
                local_pref: Some(200),
                next_hop6: Some("2001:db8::fe".parse().unwrap()),
            }
        );
        let dns = &c.services[0];
        assert_eq!(dns.protocol, Protocol::Udp);
        assert_eq!(dns.addrs, vec![ip("192.0.2.53"), ip("2001:db8::53")]);
        assert_eq!(dns.real_groups, vec!["a", "b"]);
        // 10.0.0.3 is in both groups with the same settings: kept once, in order.
        assert_eq!(
            dns.reals,
            vec![
                real("10.0.0.1"),
                Real {
                    addr: ip("10.0.0.2"),
                    weight: 3,
                    disabled: false
                },
                Real {
                    addr: ip("10.0.0.3"),
                    weight: 1,
                    disabled: true
                },
                real("2001:db8::10"),
            ]
        );
        assert_eq!(dns.need, 2);
        assert_eq!(dns.quorum, Some(1));
        assert_eq!(dns.checks_needed(), 1);
        let d = &dns.checks[0];
        assert_eq!(d.name, "dns:53");
        assert_eq!(d.port, 53);
        assert_eq!(d.interval, Duration::from_millis(500));
        assert_eq!(d.timeout, Duration::from_millis(250));
        assert_eq!((d.rise, d.fall), (1, 5));
        assert_eq!(
            d.dns,
            Some(DnsCheck {
                query: "example.com".into(),
                qtype: "AAAA".into(),
                transport: Protocol::Tcp,
                rcode: 3,
            })
        );
        assert_eq!(d.dns.as_ref().unwrap().qtype_code(), 28);
        let t = &dns.checks[1];
        assert_eq!((t.kind, t.name.as_str()), (CheckKind::Tcp, "tcp:53"));
        assert_eq!(t.interval, Duration::from_secs(60));
        assert_eq!(t.timeout, Duration::from_secs(2));
        assert_eq!(t.dns, None);

        let web = &c.services[1];
        assert_eq!(web.protocol, Protocol::Tcp);
        assert_eq!(web.quorum, None);
        assert_eq!(web.checks_needed(), 2);
        let h = &web.checks[0];
        assert_eq!(
            (h.kind, h.port, h.path.as_str(), h.method.as_str()),
            (CheckKind::Https, 443, "/health", "HEAD")
        );
        assert_eq!(h.expect, vec![200, 204]);
        assert!(h.verify_tls);
        assert_eq!(h.interval, Duration::from_secs(3));
        assert_eq!(h.timeout, Duration::from_millis(1500));
        let h = &web.checks[1];
        assert_eq!(
            (h.name.as_str(), h.expect.as_slice()),
            ("http:80", &[301][..])
        );
        assert!(!h.verify_tls);
        assert_eq!(c.reals["b"][1], real("2001:db8::10"));
    }

    #[test]
    fn dns_check_defaults() {
        let c = ok(&svc("    checks: [{type: dns}]\n"));
        let d = c.services[0].checks[0].dns.clone().unwrap();
        assert_eq!(
            d,
            DnsCheck {
                query: DEFAULT_DNS_QUERY.into(),
                qtype: DEFAULT_DNS_QTYPE.into(),
                transport: DEFAULT_DNS_TRANSPORT,
                rcode: DEFAULT_DNS_RCODE,
            }
        );
        assert_eq!(d.qtype_code(), 2);
        let c = ok(&svc("    checks: [{type: dns, qtype: 65, rcode: 5}]\n"));
        let d = c.services[0].checks[0].dns.clone().unwrap();
        assert_eq!((d.qtype.as_str(), d.rcode), ("HTTPS", 5));
        let c = ok(&svc(
            "    checks: [{type: dns, qtype: type999, query: example.org.}]\n",
        ));
        let d = c.services[0].checks[0].dns.clone().unwrap();
        assert_eq!((d.qtype.as_str(), d.qtype_code()), ("TYPE999", 999));
    }

    #[test]
    fn json_is_accepted() {
        let json = r#"{
  "multicast": "224.0.0.1:9999",
  "rhi": {"as_number": 65000, "peers": ["10.10.100.3", "10.10.100.4"]},
  "services": [
    {"name": "nginx", "desc": "web server", "addr": "192.168.101.1",
     "port": [80, 443], "real": "nginx", "need": 1,
     "checks": [{"name": "http check", "type": "http", "port": 80,
                 "path": "/alive", "host": "example.com"}]}
  ],
  "reals": {"nginx": ["10.10.100.10", "10.10.100.11"]}
}
"#;
        let from_json = parse(json, "vc5.json").unwrap();
        assert_eq!(from_json, ok(ORIGINAL));
    }

    #[test]
    fn json_errors_have_positions() {
        let json = "{\n  \"services\": [\n    {\"name\": \"a\", \"addr\": \"192.0.2.1\",\n     \"port\": [80, 0], \"real\": \"g\"}\n  ],\n  \"reals\": {\"g\": [\"10.0.0.1\"]}\n}\n";
        let e = parse(json, "vc5.json").unwrap_err();
        assert_eq!(
            e.to_string(),
            "vc5.json:4:19: port 0 is out of range 1..=65535"
        );
        let json = "{\"services\": [], \"colour\": 1}";
        let e = parse(json, "vc5.json").unwrap_err();
        assert_eq!((e.line(), e.column()), (Some(1), Some(18)));
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        let json = "{\"services\": [\n  {\"name\": \"a\", \"addr\": \"192.0.2.300\", \"port\": 80, \"real\": \"g\"}]}";
        let e = parse(json, "vc5.json").unwrap_err();
        assert_eq!(
            e.to_string(),
            "vc5.json:2:25: invalid service address `192.0.2.300`: not an IP address"
        );
    }

    #[test]
    fn to_json_shows_the_normalised_model() {
        let c = ok(&format!(
            "{}rhi:\n  as_number: 1\n  communities: '65000:7'\n",
            svc("    checks: [{type: http, interval: 1500ms, timeout: 1s}]\n")
        ));
        let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(v["multicast"], serde_json::Value::Null);
        assert_eq!(v["rhi"]["as_number"], 1);
        assert_eq!(v["rhi"]["hold_time"], 90);
        assert_eq!(v["rhi"]["communities"], serde_json::json!(["65000:7"]));
        let s = &v["services"][0];
        assert_eq!(s["name"], "web");
        assert_eq!(s["addrs"], serde_json::json!(["192.0.2.1"]));
        assert_eq!(s["ports"], serde_json::json!([80]));
        assert_eq!(s["protocol"], "tcp");
        assert_eq!(s["real_groups"], serde_json::json!(["pool"]));
        assert_eq!(
            s["reals"][2],
            serde_json::json!({"addr": "10.0.0.3", "weight": 1, "disabled": false})
        );
        assert_eq!(s["need"], 1);
        assert_eq!(s["quorum"], serde_json::Value::Null);
        let k = &s["checks"][0];
        assert_eq!(k["type"], "http");
        assert_eq!(k["name"], "http:80");
        assert_eq!(k["port"], 80);
        assert_eq!(k["interval_ms"], 1500);
        assert_eq!(k["timeout_ms"], 1000);
        assert_eq!(k["expect"], serde_json::json!([200]));
        assert_eq!(k["verify_tls"], false);
        assert_eq!(k["dns"], serde_json::Value::Null);
        assert_eq!(v["reals"]["pool"].as_array().map(Vec::len), Some(3));

        // The printed form is what an operator reads and compares, so it must say
        // the same thing whenever the configuration is the same.
        let again = ok(&format!(
            "{}rhi:\n  as_number: 1\n  communities: ['65000:7']\n",
            svc("    checks: [{type: http, interval: 1.5, timeout: 1000ms}]\n")
        ));
        assert_eq!(again.to_json(), c.to_json());
    }

    #[test]
    fn to_json_round_trips_every_field_of_the_extensions() {
        let c = ok(&svc(
            "    protocol: udp\n    quorum: 1\n    checks: [{type: dns, rcode: 2, qtype: SOA, transport: tcp}]\n",
        ));
        let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
        let s = &v["services"][0];
        assert_eq!(s["protocol"], "udp");
        assert_eq!(s["quorum"], 1);
        assert_eq!(
            s["checks"][0]["dns"],
            serde_json::json!({"query": ".", "qtype": "SOA", "transport": "tcp", "rcode": 2})
        );
    }

    #[test]
    fn syntax_errors() {
        assert_err("services: [\n", "1:11", "");
        assert_err("rhi:\n  as_number: 1\n peers: []\n", "3:2", "");
        let e = fail("services:\n\t- name: x\n");
        assert!(e.line() == Some(2), "{e}");
        assert_err("", "1:1", "the configuration is empty");
        assert_err("# nothing here\n", "1:1", "the configuration is empty");
        assert_err(
            "services: []\nservices: []\n",
            "2:1",
            "duplicate mapping key",
        );
    }

    #[test]
    fn parser_messages_carry_no_position_of_their_own() {
        let e = fail("services: []\nfoo: 1\n");
        assert_eq!(
            e.to_string(),
            "test.yaml:2:1: unknown field `foo`, expected one of multicast, flow_sync_key, flow_sync_wait, flow_sync_rate, flow_sync_resync_rate, flow_insert_limit, rhi, services, reals"
        );
        assert!(!e.message().contains("line"));
    }

    #[test]
    fn unknown_keys() {
        assert_err(
            "rhi:\n  as_number: 1\n  peer: [10.0.0.1]\n",
            "3:3",
            "unknown field `peer`",
        );
        assert_err(&svc("    weight: 3\n"), "6:5", "unknown field `weight`");
        assert_err(
            &svc("    checks:\n      - {type: http, paht: /}\n"),
            "7:22",
            "unknown field `paht`",
        );
        assert_err(
            "services: []\nreals:\n  g:\n    - {addr: 10.0.0.1, wieght: 2}\n",
            "4:24",
            "unknown field `wieght`",
        );
    }

    #[test]
    fn wrong_types() {
        assert_err(
            &svc("    need: two\n"),
            "6:11",
            "need must be an integer, not `two`",
        );
        assert_err(&svc("    checks: {type: tcp}\n"), "6:13", "");
        assert_err("services: []\nrhi:\n  as_number: -5\n", "3:14", "");
        assert_err(
            "services:\n  - name: a\n    addr: 192.0.2.1\n    port: {a: 1}\n    real: g\n",
            "4:11",
            "port must be an integer or a list of integers, not a map",
        );
        assert_err(
            &svc("    checks: [{type: https, verify: maybe}]\n"),
            "6:36",
            "",
        );
        assert_err(
            &svc("    protocol: sctp\n"),
            "6:15",
            "unknown variant `sctp`",
        );
        assert_err(
            &svc("    checks: [{port: 80}]\n"),
            "6:15",
            "missing field `type`",
        );
        assert_err(
            "services: []\nreals:\n  g:\n    - [10.0.0.1]\n",
            "4:7",
            "an address or a map",
        );
        assert_err(
            "services: []\nreals:\n  g:\n    - {weight: 2}\n",
            "4:8",
            "missing field `addr`",
        );
    }

    #[test]
    fn wrong_types_are_reported_at_the_value() {
        assert_err(
            &svc("    need: [1]\n"),
            "6:11",
            "need must be an integer, not a list",
        );
        assert_err(
            &svc("    quorum: {a: 1}\n"),
            "6:13",
            "quorum must be an integer, not a map",
        );
        assert_err(
            &svc("    need: 1.5\n"),
            "6:11",
            "need must be an integer, not `1.5`",
        );
        assert_err(
            &svc("    checks: [{type: tcp, rise: yes}]\n"),
            "6:32",
            "rise must be an integer, not `true`",
        );
        assert_err(
            &svc("    checks: [{type: tcp, interval: true}]\n"),
            "6:36",
            "interval must be a number of seconds or a duration",
        );
        assert_err(
            &svc("    checks: [{type: tcp, timeout: [1]}]\n"),
            "6:35",
            "not a list",
        );
        assert_err(
            &ORIGINAL.replace("port: [80, 443]", "port: true     "),
            "9:11",
            "port must be an integer or a list of integers, not `true`",
        );
        assert_err(
            &ORIGINAL.replace("port: [80, 443]", "port: http     "),
            "9:11",
            "port must be an integer, not `http`",
        );
        assert_err(
            &ORIGINAL.replace("port: [80, 443]", "port: [80, '443']"),
            "9:16",
            "port must be an integer, not `443`",
        );
        assert_err(
            &ORIGINAL.replace("addr: 192.168.101.1 ", "addr: {v4: 192.168.101.1}"),
            "8:11",
            "addr must be a string or a list of strings, not a map",
        );
        assert_err(
            &ORIGINAL.replace("addr: 192.168.101.1 ", "addr: "),
            // An empty node has no text of its own; the parser puts it at the colon.
            "8:9",
            "addr must be a string or a list of strings, not nothing",
        );
        assert_err(
            "services: []\nreals:\n  g:\n    - {addr: 10.0.0.1, weight: heavy}\n",
            "4:32",
            "weight must be an integer, not `heavy`",
        );
        assert_err(
            "services: []\nreals:\n  g:\n    - {addr: 10.0.0.1, disabled: perhaps}\n",
            "4:34",
            "disabled must be true or false, not `perhaps`",
        );
        assert_err("services: []\nrhi:\n  med: lots\n", "3:8", "");
        assert_err("services: {}\n", "1:11", "");
    }

    #[test]
    fn lone_values_keep_their_spelling() {
        // A group named like a number is found whether written alone or in a list.
        let text = "services:\n  - name: a\n    addr: 192.0.2.1\n    port: 80\n    real: 5\nreals:\n  5: [10.0.0.1]\n";
        assert_eq!(ok(text).services[0].real_groups, vec!["5"]);
        assert_eq!(
            ok(&text.replace("real: 5", "real: [5]")).services[0].real_groups,
            vec!["5"]
        );
        // `yes` would arrive as a boolean, so it has to be quoted.
        let yes = text
            .replace("real: 5", "real: yes")
            .replace("  5:", "  yes:");
        assert_err(
            &yes,
            "5:11",
            "real must be a string or a list of strings, not `true`",
        );
        let quoted = yes.replace("real: yes", "real: 'yes'");
        assert_eq!(ok(&quoted).services[0].real_groups, vec!["yes"]);
    }

    #[test]
    fn bad_addresses() {
        let text = ORIGINAL.replace("addr: 192.168.101.1", "addr: 192.168.101.300");
        let e = fail(&text);
        assert_eq!(
            e.to_string(),
            "test.yaml:8:11: invalid service address `192.168.101.300`: not an IP address"
        );
        assert_err(
            &ORIGINAL.replace("addr: 192.168.101.1 ", "addr: [192.168.101.1, x]"),
            "8:27",
            "invalid service address `x`",
        );
        assert_err(
            &ORIGINAL.replace("10.10.100.11]", "10.10.100.256]"),
            "15:25",
            "invalid real address `10.10.100.256`",
        );
        assert_err(
            &ORIGINAL.replace("10.10.100.4]", "10.10.100.x]"),
            "4:24",
            "invalid peer address",
        );
        assert_err(
            "services: []\nreals:\n  g:\n    - addr: nowhere\n",
            "4:13",
            "invalid real address `nowhere`",
        );
        assert_err(
            &ORIGINAL.replace(
                "addr: 192.168.101.1 ",
                "addr: [192.168.101.1, 192.168.101.1]",
            ),
            "8:27",
            "address 192.168.101.1 is listed twice",
        );
        assert_err(
            "services: []\nreals:\n  g: [10.0.0.1, 10.0.0.1]\n",
            "3:17",
            "real 10.0.0.1 is listed twice in group `g`",
        );
        assert_err(
            "services: []\nrhi:\n  as_number: 1\n  next_hop6: 10.0.0.1\n",
            "4:14",
            "not an IPv6 address",
        );
    }

    #[test]
    fn bad_ports() {
        assert_err(
            &ORIGINAL.replace("port: [80, 443]", "port: [80, 0]"),
            "9:16",
            "port 0 is out of range 1..=65535",
        );
        assert_err(
            &ORIGINAL.replace("port: [80, 443]", "port: 65536   "),
            "9:11",
            "port 65536 is out of range",
        );
        assert_err(
            &ORIGINAL.replace("port: [80, 443]", "port: -1      "),
            "9:11",
            "port -1 is out of range",
        );
        assert_err(
            &ORIGINAL.replace("port: [80, 443]", "port: [80, 80]"),
            "9:16",
            "port 80 is listed twice",
        );
        assert_err(
            &ORIGINAL.replace("port: [80, 443]", "port: []      "),
            "9:11",
            "port is an empty list",
        );
        assert_err(
            &ORIGINAL.replace("addr: 192.168.101.1 ", "addr: []"),
            "8:11",
            "addr is an empty list",
        );
        assert_err(
            &svc("    real: []\n").replace("    real: pool\n", ""),
            "5:11",
            "real is an empty list",
        );
    }

    #[test]
    fn undefined_real_group_points_at_the_name() {
        let e = fail(&ORIGINAL.replace("real: nginx ", "real: [nginx, ngnix]"));
        assert_eq!(
            e.to_string(),
            "test.yaml:10:19: undefined real group `ngnix` (defined: nginx)"
        );
        assert_err(
            &ORIGINAL.replace("real: nginx ", "real: apache"),
            "10:11",
            "undefined real group `apache`",
        );
        assert_err(
            &ORIGINAL.replace("real: nginx ", "real: [nginx, nginx]"),
            "10:19",
            "real group `nginx` is listed twice",
        );
    }

    #[test]
    fn conflicting_real_settings_across_groups() {
        let text = "services:\n  - name: a\n    addr: 192.0.2.1\n    port: 80\n    real: [g, h]\nreals:\n  g: [10.0.0.1]\n  h: [{addr: 10.0.0.1, weight: 2}]\n";
        assert_err(
            text,
            "5:15",
            "real 10.0.0.1 is in group `h` with a different weight",
        );
    }

    #[test]
    fn duplicate_endpoints_point_at_the_second() {
        let text = format!(
            "{ORIGINAL}  - name: other\n    addr: [192.168.101.2, 192.168.101.1]\n    port: 443\n    real: nginx\n"
        )
        .replace("reals:\n  nginx: [10.10.100.10, 10.10.100.11]\n", "")
            + "reals:\n  nginx: [10.10.100.10, 10.10.100.11]\n";
        let e = fail(&text);
        assert_eq!(
            e.to_string(),
            "test.yaml:15:27: 192.168.101.1:443/tcp is already served by service `nginx` (line 6)"
        );
        // The same address and port over UDP is a different endpoint.
        let ok_text = text.replace("    port: 443\n", "    port: 443\n    protocol: udp\n");
        let c = ok(&ok_text);
        assert_eq!(c.services.len(), 2);
        assert_err(
            "services:\n  - name: a\n    addr: 192.0.2.1\n    port: 80\n    real: g\n  - name: a\n    addr: 192.0.2.2\n    port: 80\n    real: g\nreals:\n  g: [10.0.0.1]\n",
            "6:11",
            "service name `a` is already used at line 2",
        );
    }

    #[test]
    fn need_is_checked() {
        assert_err(
            &svc("    need: 0\n"),
            "6:11",
            "need must be at least 1, not 0",
        );
        assert_err(
            &svc("    need: 4\n"),
            "6:11",
            "need is 4 but the service has only 3 reals",
        );
        // The default need of 1 against an empty group points at `real`.
        assert_err(
            "services:\n  - name: a\n    addr: 192.0.2.1\n    port: 80\n    real: g\nreals:\n  g: []\n",
            "5:11",
            "need is 1 but the service has only 0 reals",
        );
        // Disabled reals count: disabling one must not invalidate the file.
        let c = ok(&svc("    need: 3\n").replace("10.0.0.3]", "{addr: 10.0.0.3, disabled: true}]"));
        assert_eq!(c.services[0].need, 3);
    }

    #[test]
    fn check_ports() {
        assert_err(
            &ORIGINAL.replace("port: 80, path", "port: 81, path"),
            "13:46",
            "check port 81 is not one of the service's ports (80, 443)",
        );
        assert_err(
            &ORIGINAL.replace("type: http, port: 80, path", "type: http, path"),
            "13:9",
            "the check needs a `port`: the service has several (80, 443)",
        );
        assert_err(
            &svc(
                "    checks:\n      - type: tcp\n        name: t\n      - type: http\n        port: 8080\n",
            ),
            "10:15",
            "check port 8080 is not one of the service's ports (80)",
        );
        assert_err(
            "services:\n  - name: a\n    addr: 192.0.2.1\n    port: [80, 81]\n    real: g\n    checks:\n      - type: tcp\n        name: t\nreals:\n  g: [10.0.0.1]\n",
            "7:9",
            "needs a `port`",
        );
        let c = ok(&svc("    checks: [{type: tcp}]\n"));
        assert_eq!(c.services[0].checks[0].port, 80);
    }

    #[test]
    fn check_types_and_their_keys() {
        assert_err(
            &ORIGINAL.replace("type: http,", "type: ftp, "),
            "13:34",
            "unknown variant `ftp`, expected one of tcp, http, https, dns",
        );
        assert_err(
            &svc("    checks: [{type: tcp, path: /x}]\n"),
            "6:32",
            "`path` applies only to http and https checks, not tcp",
        );
        assert_err(
            &svc("    checks: [{type: dns, expect: 200}]\n"),
            "6:34",
            "`expect` applies only to http and https checks, not dns",
        );
        assert_err(
            &svc("    checks: [{type: http, verify: true}]\n"),
            "6:35",
            "`verify` applies only to https checks, not http",
        );
        assert_err(
            &svc("    checks: [{type: http, query: example.com}]\n"),
            "6:34",
            "`query` applies only to dns checks, not http",
        );
        assert_err(
            &svc("    checks: [{type: http, path: alive}]\n"),
            "6:33",
            "must start with `/`",
        );
        assert_err(
            &svc("    checks: [{type: http, method: 'GE T'}]\n"),
            "6:35",
            "invalid method",
        );
        assert_err(
            &svc("    checks: [{type: dns, qtype: BOGUS}]\n"),
            "6:33",
            "unknown qtype `BOGUS`",
        );
        assert_err(
            &svc("    checks: [{type: dns, rcode: 4096}]\n"),
            "6:33",
            "unknown rcode `4096`",
        );
        assert_err(
            &svc("    checks: [{type: dns, query: 'a..b'}]\n"),
            "6:33",
            "not a domain name",
        );
        assert_err(
            &svc("    checks: [{type: http, name: ''}]\n"),
            "6:33",
            "must not be empty",
        );
    }

    #[test]
    fn expect_must_be_status_codes() {
        assert_err(
            &svc("    checks: [{type: http, expect: [200, 99]}]\n"),
            "6:41",
            "expect 99 is not an HTTP status code (100..=599)",
        );
        assert_err(
            &svc("    checks: [{type: http, expect: 600}]\n"),
            "6:35",
            "expect 600",
        );
        assert_err(
            &svc("    checks: [{type: http, expect: []}]\n"),
            "6:35",
            "expect is an empty list",
        );
        assert_err(
            &svc("    checks: [{type: http, expect: ok}]\n"),
            "6:35",
            "expect must be an integer, not `ok`",
        );
    }

    #[test]
    fn rise_fall_and_timing() {
        assert_err(
            &svc("    checks: [{type: tcp, rise: 0}]\n"),
            "6:32",
            "rise must be between 1",
        );
        assert_err(
            &svc("    checks: [{type: tcp, fall: 0}]\n"),
            "6:32",
            "fall must be between 1",
        );
        assert_err(
            &svc("    checks: [{type: tcp, interval: 1s, timeout: 1s}]\n"),
            "6:49",
            "timeout (1s) must be shorter than interval (1s)",
        );
        assert_err(
            &svc("    checks: [{type: tcp, interval: 500ms}]\n"),
            "6:36",
            "timeout (1s) must be shorter than interval (500ms)",
        );
        assert_err(
            &svc("    checks: [{type: tcp, interval: 0}]\n"),
            "6:36",
            "interval must not be zero",
        );
        assert_err(
            &svc("    checks: [{type: tcp, interval: -1}]\n"),
            "6:36",
            "invalid interval -1",
        );
        let spaced = ok(&svc("    checks: [{type: tcp, interval: 2 s}]\n"));
        assert_eq!(
            spaced.services[0].checks[0].interval,
            Duration::from_secs(2)
        );
        assert_err(
            &svc("    checks: [{type: tcp, interval: 2d}]\n"),
            "6:36",
            "unknown unit `d`",
        );
        assert_err(
            &svc("    checks: [{type: tcp, timeout: 0.0001}]\n"),
            "6:35",
            "finer resolution",
        );
        let float = ok(&svc(
            "    checks: [{type: tcp, interval: 0.7, timeout: 0.3}]\n",
        ));
        let check = &float.services[0].checks[0];
        assert_eq!(
            (check.interval, check.timeout),
            (Duration::from_millis(700), Duration::from_millis(300))
        );
        assert_err(
            &svc("    checks: [{type: tcp, interval: [1]}]\n"),
            "6:36",
            "",
        );
    }

    #[test]
    fn quorum_is_checked() {
        let checks = "    checks: [{type: tcp}, {type: http}]\n";
        assert_err(
            &svc(&format!("    quorum: 0\n{checks}")),
            "6:13",
            "quorum must be at least 1, not 0",
        );
        assert_err(
            &svc(&format!("    quorum: 3\n{checks}")),
            "6:13",
            "quorum is 3 but the service has only 2 checks",
        );
        assert_err(&svc("    quorum: 1\n"), "6:13", "only 0 checks");
        assert_eq!(
            ok(&svc(&format!("    quorum: 2\n{checks}"))).services[0].quorum,
            Some(2)
        );
    }

    #[test]
    fn weights() {
        assert_err(
            "services: []\nreals:\n  g:\n    - {addr: 10.0.0.1, weight: 0}\n",
            "4:32",
            "weight must be at least 1; use `disabled: true`",
        );
        assert_err(
            "services: []\nreals:\n  g:\n    - {addr: 10.0.0.1, weight: 70000}\n",
            "4:32",
            "weight 70000 is out of range 1..=65535",
        );
        let c = ok("services: []\nreals:\n  g:\n    - {addr: 10.0.0.1, weight: 65535}\n");
        assert_eq!(c.reals["g"][0].weight, 65535);
    }

    #[test]
    fn multicast_and_rhi() {
        assert_err(
            "multicast: 224.0.0.1\n",
            "1:12",
            "invalid multicast address `224.0.0.1`: expected IP:PORT",
        );
        assert_err(
            "multicast: 10.0.0.1:9999\n",
            "1:12",
            "10.0.0.1 is not a multicast address",
        );
        assert_err("multicast: 224.0.0.1:0\n", "1:12", "port must not be 0");
        assert_err(
            "multicast: 224.0.0.1:99999\n",
            "1:12",
            "invalid multicast address",
        );
        assert_err(
            "rhi:\n  as_number: 1\n  communities: [65000]\n",
            "3:17",
            "invalid community `65000`",
        );
        assert_err(
            "rhi:\n  as_number: 1\n  communities: ['65000:100', '70000:1']\n",
            "3:30",
            "invalid community `70000:1`",
        );
        assert_err(
            "rhi:\n  as_number: 1\n  communities: 'a:b'\n",
            "3:16",
            "expected ASN:VALUE",
        );
        assert_err(
            "rhi:\n  as_number: 1\n  hold_time: 2\n",
            "3:14",
            "hold_time 2 is invalid",
        );
        assert_eq!(
            ok("rhi:\n  as_number: 1\n  hold_time: 0\n").rhi.hold_time,
            0
        );
        assert_err(
            "rhi:\n  peers: [10.0.0.1]\n",
            "2:11",
            "need a non-zero rhi.as_number",
        );
        assert_err(
            "rhi:\n  as_number: 0\n  peers: [10.0.0.1]\n",
            "2:14",
            "need a non-zero rhi.as_number",
        );
        assert_err(
            "rhi:\n  as_number: 1\n  peers: [10.0.0.1, 10.0.0.1]\n",
            "3:21",
            "peer 10.0.0.1 is listed twice",
        );
        assert_err("flow_sync_key: ''\n", "1:16", "flow_sync_key is empty");
    }

    #[test]
    fn flow_insert_limit_has_a_default_a_bound_and_zero_for_none() {
        assert_eq!(ok("services: []\n").flow_insert_limit, 100_000);
        assert_eq!(
            ok("flow_insert_limit: 0\nservices: []\n").flow_insert_limit,
            0
        );
        let c = ok("flow_insert_limit: 5000\nservices: []\n");
        assert_eq!(c.flow_insert_limit, 5000);
        let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(v["flow_insert_limit"], 5000);
        for bad in ["-1", "100000001", "'many'"] {
            assert_err(
                &format!("flow_insert_limit: {bad}\nservices: []\n"),
                "1:20",
                "flow_insert_limit must be",
            );
        }
    }

    #[test]
    fn flow_sync_settings_have_defaults_bounds_and_positions() {
        const BOTH: &str = "multicast: 224.0.0.1:9999\nflow_sync_key: /k\n";
        // Defaults, and what --check prints.
        let c = ok(&format!("{BOTH}services: []\n"));
        assert!(c.flow_sync());
        assert_eq!(c.flow_sync_wait, Duration::from_secs(10));
        assert_eq!(c.flow_sync_rate, 200_000);
        assert_eq!(c.flow_sync_resync_rate, 50_000);
        let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(v["flow_sync_wait_ms"], 10_000);
        assert_eq!(v["flow_sync_rate"], 200_000);
        assert_eq!(v["flow_sync_resync_rate"], 50_000);
        assert_eq!(v["flow_sync_key"], "/k");

        // Given, at their bounds, in every duration spelling.
        let c = ok(&format!(
            "{BOTH}flow_sync_wait: 2s\nflow_sync_rate: 100\nflow_sync_resync_rate: 10000000\n"
        ));
        assert_eq!(c.flow_sync_wait, Duration::from_secs(2));
        assert_eq!(
            (c.flow_sync_rate, c.flow_sync_resync_rate),
            (100, 10_000_000)
        );
        assert_eq!(
            ok(&format!("{BOTH}flow_sync_wait: 5m\n")).flow_sync_wait,
            MAX_FLOW_SYNC_WAIT
        );
        assert_eq!(
            ok(&format!("{BOTH}flow_sync_wait: 2500ms\n")).flow_sync_wait,
            Duration::from_millis(2500)
        );
        assert_eq!(
            ok(&format!("{BOTH}flow_sync_wait: 3\n")).flow_sync_wait,
            Duration::from_secs(3)
        );

        // Out of bounds, wrong types, null: refused where they are written.
        for (value, needle) in [
            ("1s", "flow_sync_wait must be between 2s and 5m, not 1s"),
            ("301s", "flow_sync_wait must be between 2s and 5m, not 301s"),
            ("0", "flow_sync_wait must not be zero"),
            ("-3", "invalid flow_sync_wait -3"),
            ("2.0001", "finer resolution than a millisecond"),
            ("10x", "unknown unit"),
            ("true", "flow_sync_wait must be a number of seconds"),
            (
                "null",
                "flow_sync_wait must be a number of seconds or a duration such as \"500ms\", not nothing",
            ),
        ] {
            assert_err(&format!("{BOTH}flow_sync_wait: {value}\n"), "3:17", needle);
        }
        for key in ["flow_sync_rate", "flow_sync_resync_rate"] {
            let col = format!("3:{}", key.len() + 3);
            for (value, needle) in [
                (
                    "99",
                    "must be between 100 and 10000000 records per second, not 99",
                ),
                ("10000001", "not 10000001"),
                ("-1", "not -1"),
                ("1.5", "must be an integer"),
                ("'fast'", "must be an integer"),
                ("~", "must be an integer, not nothing"),
            ] {
                assert_err(&format!("{BOTH}{key}: {value}\n"), &col, needle);
            }
        }

        // One of the pair without the other.
        assert_err(
            "flow_sync_key: /k\nservices: []\n",
            "1:16",
            "flow_sync_key needs multicast",
        );
        // The original's file: multicast alone is accepted, flow sync is off.
        let c = ok("multicast: 224.0.0.1:9999\nservices: []\n");
        assert!(!c.flow_sync());
        assert!(!ok("services: []\n").flow_sync());
        // Settings that would do nothing.
        for (text, pos, key) in [
            (
                "multicast: 224.0.0.1:9999\nflow_sync_wait: 5s\n",
                "2:17",
                "flow_sync_wait",
            ),
            (
                "services: []\nflow_sync_rate: 1000\n",
                "2:17",
                "flow_sync_rate",
            ),
            (
                "multicast: 224.0.0.1:9999\nflow_sync_resync_rate: 1000\n",
                "2:24",
                "flow_sync_resync_rate",
            ),
        ] {
            assert_err(
                text,
                pos,
                &format!("{key} has no effect: flow sync needs both multicast and flow_sync_key"),
            );
        }
    }

    #[test]
    fn durations_parse_exactly() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("2", Duration::from_secs(2)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.1s", Duration::from_millis(100)),
            (".25s", Duration::from_millis(250)),
            ("1.5m", Duration::from_secs(90)),
            (" 3 s ", Duration::from_secs(3)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "s", "1.2.3s", "-1s", "1x", "ms5", "1e3s", ".", "inf"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(3)), "3s");
    }

    #[test]
    fn load_reads_files_and_reports_io_errors() {
        let dir = std::env::temp_dir().join(format!("vc5-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vc5.yaml");
        std::fs::write(&path, format!("{ORIGINAL}flow_sync_key: keys/flow.key\n")).unwrap();
        let c = load(&path).unwrap();
        assert_eq!(c.services[0].name, "nginx");
        assert_eq!(c.flow_sync_key, Some(dir.join("keys/flow.key")));

        std::fs::write(
            &path,
            "multicast: 224.0.0.1:9999\nflow_sync_key: /abs/flow.key\nservices: []\n",
        )
        .unwrap();
        assert_eq!(
            load(&path).unwrap().flow_sync_key,
            Some(PathBuf::from("/abs/flow.key"))
        );

        std::fs::write(&path, "services: [\n").unwrap();
        let e = load(&path).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}:1:11: ", path.display())),
            "{e}"
        );

        let missing = dir.join("missing.yaml");
        let e = load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }));
        assert_eq!(e.line(), None);
        assert_eq!(e.column(), None);
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("{}: ", missing.display())),
            "{shown}"
        );
        assert!(
            !shown.contains(&format!("{}:1", missing.display())),
            "{shown}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn aliases_report_where_they_are_used() {
        let text = "services:\n  - name: a\n    addr: &vip 192.0.2.1\n    port: 80\n    real: g\n  - name: b\n    addr: *vip\n    port: 80\n    real: g\nreals:\n  g: [10.0.0.1]\n";
        assert_err(
            text,
            "7:11",
            "192.0.2.1:80/tcp is already served by service `a`",
        );
    }
}

/// The rules added against inputs that loaded but could not run or meant nothing
/// (names that break D-Bus and metrics, overflowing durations, checks the monitor
/// refuses, nulls, quoted booleans, placeholder addresses, unbounded files).
#[cfg(test)]
mod hardening_tests {
    use super::*;

    fn fail(text: &str) -> String {
        match parse(text, "t.yaml") {
            Ok(c) => panic!("expected an error, got {c:#?}"),
            Err(e) => e.to_string(),
        }
    }

    #[track_caller]
    fn assert_err(text: &str, pos: &str, needle: &str) {
        let shown = fail(text);
        assert!(
            shown.starts_with(&format!("t.yaml:{pos}: ")),
            "expected position {pos}, got: {shown}"
        );
        assert!(shown.contains(needle), "expected {needle:?} in: {shown}");
    }

    /// One service `web` with `extra` as its remaining keys, and group `pool`.
    fn svc(extra: &str) -> String {
        format!(
            "services:\n  - name: web\n    addr: 192.0.2.1\n    port: 80\n    real: pool\n{extra}reals:\n  pool: [10.0.0.1, 10.0.0.2]\n"
        )
    }

    #[test]
    fn control_characters_in_names_are_refused() {
        assert_err(
            &svc("").replace("name: web", "name: \"web\\0nul\""),
            "2:11",
            "the service name `web\\0nul` contains the character U+0000",
        );
        assert_err(
            &svc("").replace("name: web", "name: \"a\\u202Eb\""),
            "2:11",
            "U+202E",
        );
        assert_err(
            &svc("    checks: [{type: tcp, name: \"x\\ny\"}]\n"),
            "6:32",
            "the check name `x\\ny` contains the character U+000A",
        );
        assert_err(
            &svc("").replace("pool", "\"p\\x07\""),
            "7:3",
            "a real group name `p\\u{7}` contains the character U+0007",
        );
        assert_err(
            "services: []\nreals:\n  \"p\\tq\": [10.0.0.1]\n",
            "3:3",
            "a real group name `p\\tq` contains the character U+0009",
        );
        assert_err(
            &svc("    desc: \"two\\nlines\"\n"),
            "6:11",
            "desc contains the character U+000A",
        );
        assert_err(
            &svc("").replace("name: web", "name: ' web'"),
            "2:11",
            "must not begin or end with white space",
        );
        assert_err(
            &svc("").replace("name: web", &format!("name: {}", "w".repeat(129))),
            "2:11",
            "longer than 128 characters",
        );
        assert_err(
            &svc("flow_sync_key: \"/k\\0ey\"\n"),
            "6:16",
            "flow_sync_key contains the character U+0000",
        );
        // Text outside the control characters, spaces inside, and numbers as names
        // stay allowed.
        let c = parse(
            &svc("    desc: \"Café — web\"\n    checks: [{type: tcp, name: tcp check}]\n")
                .replace("name: web", "name: 5"),
            "t.yaml",
        )
        .unwrap();
        assert_eq!(c.services[0].name, "5");
        assert_eq!(c.services[0].desc, "Café — web");
        assert_eq!(c.services[0].checks[0].name, "tcp check");
    }

    #[test]
    fn durations_and_counts_are_bounded() {
        for huge in ["18446744073709551615s", "5124095576030431h", "2h", "3601s"] {
            assert_err(
                &svc(&format!(
                    "    checks: [{{type: tcp, interval: {huge}, timeout: 1h}}]\n"
                )),
                "6:36",
                "interval must be between 100ms and 1h",
            );
        }
        assert_err(
            &svc("    checks: [{type: tcp, interval: 50ms, timeout: 10ms}]\n"),
            "6:36",
            "interval must be between 100ms and 1h, not 50ms",
        );
        assert_err(
            &svc("    checks: [{type: tcp, timeout: 5ms}]\n"),
            "6:35",
            "timeout must be between 10ms and 1h, not 5ms",
        );
        assert_err(
            &svc("    checks: [{type: tcp, interval: 1h, timeout: 1h}]\n"),
            "6:49",
            "timeout (1h) must be shorter than interval (1h)",
        );
        for (key, col) in [("rise", "32"), ("fall", "32")] {
            assert_err(
                &svc(&format!("    checks: [{{type: tcp, {key}: 101}}]\n")),
                &format!("6:{col}"),
                &format!("{key} must be between 1 and 100, not 101"),
            );
        }
        let c = parse(
            &svc("    checks: [{type: tcp, interval: 1h, timeout: 59m, rise: 100, fall: 100}]\n"),
            "t.yaml",
        )
        .unwrap();
        let check = &c.services[0].checks[0];
        assert_eq!(check.interval, MAX_INTERVAL);
        // What the daemon adds up must not overflow for any accepted check.
        assert!(check.interval.checked_add(check.timeout).is_some());
    }

    #[test]
    fn what_the_health_monitor_refuses_is_refused_with_a_position() {
        assert_err(
            &svc("    checks: [{type: http, path: /ålive}]\n"),
            "6:33",
            "invalid path \"/ålive\"",
        );
        assert_err(
            &svc("    checks: [{type: http, path: /a b}]\n"),
            "6:33",
            "invalid path",
        );
        assert_err(
            &svc("    checks: [{type: https, host: \"ex ample.com\"}]\n"),
            "6:34",
            "invalid host",
        );
        assert_err(
            &svc("    checks: [{type: http, host: exämple.com}]\n"),
            "6:33",
            "invalid host",
        );
        assert_err(
            &svc("    checks: [{type: http, host: -1}]\n"),
            "6:33",
            "invalid host `-1`",
        );
        assert_err(
            &svc("    checks: [{type: http, host: 1.5}]\n"),
            "6:33",
            "host must be a string, not `1.5`",
        );
        for good in [
            "example.com",
            "example.com:8080",
            "10.0.0.1",
            "[2001:db8::1]:443",
            "_svc.example.",
        ] {
            let c = parse(
                &svc(&format!("    checks: [{{type: http, host: \"{good}\"}}]\n")),
                "t.yaml",
            )
            .unwrap();
            assert_eq!(c.services[0].checks[0].host.as_deref(), Some(good));
        }
        // Every accepted check is accepted by the monitor too.
        let c = parse(
            &svc("    checks: [{type: https, verify: true, host: example.com}, {type: dns, query: example.com, qtype: AAAA}]\n"),
            "t.yaml",
        )
        .unwrap();
        for check in &c.services[0].checks {
            Prober::new(Arc::new(check.spec(ip("10.0.0.1"), None))).unwrap();
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_data_plane_limits_are_checked_before_anything_runs() {
        // One service with 4096 ports is 4096 endpoints: one more than the table.
        let ports: Vec<String> = (1..=4096).map(|p| p.to_string()).collect();
        let text = svc("").replace("port: 80", &format!("port: [{}]", ports.join(", ")));
        assert_err(
            &text,
            "2:5",
            "there are 4096 VIP:port endpoints; the data plane holds at most 4095",
        );
        let ok = svc("").replace("port: 80", &format!("port: [{}]", ports[..4095].join(", ")));
        assert_eq!(
            parse(&ok, "t.yaml").unwrap().services[0].endpoints().len(),
            4095
        );

        // 16 ports × 4097 reals = 65552 pairs, over the 65535 backends.
        let reals: Vec<String> = (0..4097)
            .map(|i| format!("10.1.{}.{}", i / 250, i % 250 + 1))
            .collect();
        let text = format!(
            "services:\n  - name: big\n    addr: 192.0.2.1\n    port: [{}]\n    real: pool\nreals:\n  pool: [{}]\n",
            ports[..16].join(", "),
            reals.join(", ")
        );
        assert_err(
            &text,
            "2:5",
            "there are 65552 (endpoint, real) pairs; the data plane holds at most 65535",
        );
    }

    #[test]
    fn null_is_not_a_default() {
        let cases = [
            (
                svc("    need: null\n"),
                "6:11",
                "need must be an integer, not nothing",
            ),
            (
                svc("    need: ~\n"),
                "6:11",
                "need must be an integer, not nothing",
            ),
            (
                svc("    quorum:\n"),
                "6:11",
                "quorum must be an integer, not nothing",
            ),
            (
                svc("multicast: null\n"),
                "6:12",
                "multicast must be a string, not nothing",
            ),
            (
                svc("flow_sync_key: ~\n"),
                "6:16",
                "flow_sync_key must be a string, not nothing",
            ),
            (
                svc("    desc: null\n"),
                "6:11",
                "desc must be a string, not nothing",
            ),
            (
                svc("    checks: [{type: http, host: null}]\n"),
                "6:33",
                "host must be a string, not nothing",
            ),
            (
                svc("    checks: [{type: http, path: null}]\n"),
                "6:33",
                "path must be a string, not nothing",
            ),
            (
                svc("    checks: [{type: tcp, name: null}]\n"),
                "6:32",
                "name must be a string, not nothing",
            ),
            (
                svc("    checks: [{type: tcp, interval: null}]\n"),
                "6:36",
                "interval must be a number of seconds",
            ),
            (
                svc("    checks: [{type: tcp, rise: null}]\n"),
                "6:32",
                "rise must be an integer, not nothing",
            ),
            (
                svc("    checks: [{type: https, verify: null}]\n"),
                "6:36",
                "verify must be true or false, not nothing",
            ),
            (
                svc("    checks: [{type: http, expect: null}]\n"),
                "6:35",
                "expect must be an integer or a list of integers, not nothing",
            ),
            (
                svc("rhi: {as_number: null}\n"),
                "6:18",
                "as_number must be an integer, not nothing",
            ),
            (
                svc("rhi: {as_number: 1, peers: null}\n"),
                "6:28",
                "peers must be a string or a list of strings, not nothing",
            ),
            (
                svc("rhi: {med: ~}\n"),
                "6:12",
                "med must be an integer, not nothing",
            ),
            (
                svc("rhi: {next_hop6: null}\n"),
                "6:18",
                "next_hop6 must be a string, not nothing",
            ),
            (
                "services: []\nreals:\n  g: [{addr: 10.0.0.1, weight: null}]\n".to_owned(),
                "3:32",
                "weight must be an integer, not nothing",
            ),
            (
                "services: []\nreals:\n  g: [{addr: 10.0.0.1, disabled: null}]\n".to_owned(),
                "3:34",
                "disabled must be true or false, not nothing",
            ),
            (
                "services: []\nreals:\n  g: [{addr: null}]\n".to_owned(),
                "3:14",
                "addr must be a string, not nothing",
            ),
        ];
        for (text, pos, needle) in &cases {
            assert_err(text, pos, needle);
        }
        // Keys whose null serde-saphyr refuses itself still get a position.
        for text in [
            svc("rhi: null\n"),
            svc("    protocol: null\n"),
            svc("    checks: [{type: dns, transport: ~}]\n"),
            svc("    checks: null\n"),
            "services: null\n".to_owned(),
            "services: []\nreals: ~\n".to_owned(),
            "services: []\nreals:\n  ~: [10.0.0.1]\n".to_owned(),
        ] {
            let e = parse(&text, "t.yaml").unwrap_err();
            assert!(e.line().is_some(), "{text}: {e}");
        }
    }

    #[test]
    fn non_strings_are_not_names_and_quoted_booleans_are_not_booleans() {
        assert_err(&svc("").replace("name: web", "name: .inf"), "2:11", "");
        assert_err(
            &svc("").replace("name: web", "name: 1.5"),
            "2:11",
            "name must be a string, not `1.5`",
        );
        assert_err(
            &svc("").replace("name: web", "name: true"),
            "2:11",
            "name must be a string, not `true`",
        );
        assert_err(
            "services: []\nreals:\n  g: [{addr: 10.0.0.1, disabled: 'true'}]\n",
            "3:34",
            "disabled must be true or false, not the quoted string `true`: write it without quotes",
        );
        assert_err(
            &svc("    checks: [{type: https, verify: \"yes\"}]\n"),
            "6:36",
            "verify must be true or false, not the quoted string `yes`",
        );
        assert_err(
            "services: []\nreals:\n  g: [{addr: 10.0.0.1, disabled: 1}]\n",
            "3:34",
            "disabled must be true or false, not `1`",
        );
        // Plain YAML booleans, including the original's YAML 1.1 `yes`, still work.
        let c = parse(
            "services: []\nreals:\n  g: [{addr: 10.0.0.1, disabled: yes}, {addr: 10.0.0.2, disabled: false}]\n",
            "t.yaml",
        )
        .unwrap();
        assert!(c.reals["g"][0].disabled);
        assert!(!c.reals["g"][1].disabled);
    }

    #[test]
    fn placeholder_loopback_and_group_addresses_are_refused() {
        let bad = [
            ("0.0.0.0", "the unspecified address"),
            ("255.255.255.255", "the broadcast address"),
            ("224.0.0.5", "a multicast address"),
            ("127.0.0.1", "a loopback address"),
            ("\"::\"", "the unspecified address"),
            ("\"::1\"", "a loopback address"),
            ("\"ff02::1\"", "a multicast address"),
            ("\"::ffff:10.0.0.9\"", "an IPv4-mapped IPv6 address"),
        ];
        for (addr, why) in bad {
            let shown = addr.trim_matches('"');
            let vip = svc("").replace("addr: 192.0.2.1", &format!("addr: {addr}"));
            assert_err(&vip, "3:11", &format!("service address {shown} is {why}"));
            let real = svc("").replace("10.0.0.2]", &format!("{addr}]"));
            assert_err(&real, "7:20", &format!("real address {shown} is {why}"));
            let peer = svc(&format!("rhi: {{as_number: 65000, peers: [{addr}]}}\n"));
            assert_err(&peer, "6:33", &format!("peer address {shown} is {why}"));
        }
        assert_err(
            &svc("rhi: {next_hop6: \"::1\"}\n"),
            "6:18",
            "next_hop6 ::1 is a loopback address",
        );
        assert_err(
            &svc("").replace("10.0.0.2]", "192.0.2.1]"),
            "5:11",
            "real 192.0.2.1 of group `pool` is also an address of this service",
        );
    }

    #[test]
    fn the_size_of_the_input_is_bounded() {
        let big = format!("# {}\nservices: []\n", "x".repeat(MAX_FILE_BYTES as usize));
        assert!(fail(&big).contains("larger than 16 MiB (16777216 bytes)"));

        // /dev/zero never ends: it must be refused after MAX_FILE_BYTES, not read
        // until memory runs out.
        let started = std::time::Instant::now();
        let e = load(Path::new("/dev/zero")).unwrap_err();
        assert!(
            e.to_string()
                .contains("larger than 16 MiB (16777216 bytes)"),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));

        let dir = std::env::temp_dir().join(format!("vc5-config-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bin.yaml");
        std::fs::write(&path, b"services: []\nreals:\n  g: [\xff]\n").unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!((e.line(), e.column()), (Some(3), Some(7)), "{e}");
        assert!(e.to_string().contains("not UTF-8"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The README's benchmark scale: `services` services of `reals` reals each,
    /// every real written as `{addr, weight}`.
    pub(crate) fn benchmark_scale(services: usize, reals: usize) -> String {
        let mut text = String::from("services:\n");
        for s in 0..services {
            text.push_str(&format!(
                "  - name: svc{s}\n    addr: 10.{}.{}.1\n    port: 80\n    real: g{s}\n    checks: [{{type: http, path: /alive}}]\n",
                100 + s / 250,
                s % 250
            ));
        }
        text.push_str("reals:\n");
        for s in 0..services {
            text.push_str(&format!("  g{s}:\n"));
            for r in 0..reals {
                text.push_str(&format!(
                    "    - {{addr: 172.{}.{}.{}, weight: {}}}\n",
                    16 + s / 250,
                    s % 250,
                    r + 1,
                    r % 3 + 1
                ));
            }
        }
        text
    }

    #[test]
    fn the_readme_benchmark_scale_loads() {
        let text = benchmark_scale(1000, 64);
        assert!((text.len() as u64) < MAX_FILE_BYTES);
        let c = parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.services.len(), 1000);
        assert!(c.services.iter().all(|s| s.reals.len() == 64));
        assert_eq!(c.services[999].reals[63].weight, 64 % 3);
    }
}
