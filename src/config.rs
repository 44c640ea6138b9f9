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
//! `flow_sync_key` (path of the flow-sync key file), `rhi`, `services`, `reals`.
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
//! - An empty file is refused: reloading a truncated file must not withdraw every
//!   VIP. `services: []` is the way to say "no services".
//! - A lone scalar meant as a string that YAML reads as a boolean or a float (`yes`,
//!   `1.10`) has to be quoted where a value-or-list is accepted (`addr`, `real`, …).
//!
//! # Normalised form
//!
//! [`Config::to_json`] prints the model with the field names of the structs below,
//! except that check durations are integers named `interval_ms` and `timeout_ms`, a
//! check's kind is named `type`, and communities are `"ASN:VALUE"` strings.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_saphyr::{Location, Spanned};

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
    /// Route health injection (BGP) settings.
    pub rhi: Rhi,
    /// The services, in file order.
    pub services: Vec<Service>,
    /// The real server groups, by name.
    pub reals: BTreeMap<String, Vec<Real>>,
}

impl Config {
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
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        file: file.clone(),
        error,
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
    let options = serde_saphyr::options! { with_snippet: false };
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
    multicast: Option<Spanned<String>>,
    flow_sync_key: Option<Spanned<String>>,
    rhi: Option<RawRhi>,
    #[serde(default)]
    services: Vec<Spanned<RawService>>,
    #[serde(default)]
    reals: BTreeMap<String, Vec<Spanned<RawReal>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRhi {
    as_number: Option<Spanned<u32>>,
    peers: Option<OneOrMany<String>>,
    hold_time: Option<Spanned<Int>>,
    communities: Option<OneOrMany<String>>,
    med: Option<u32>,
    local_pref: Option<u32>,
    next_hop6: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    #[serde(default)]
    desc: String,
    addr: OneOrMany<String>,
    port: OneOrMany<Int>,
    protocol: Option<Protocol>,
    real: OneOrMany<String>,
    need: Option<Spanned<Int>>,
    quorum: Option<Spanned<Int>>,
    #[serde(default)]
    checks: Vec<Spanned<RawCheck>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: Option<Spanned<String>>,
    #[serde(rename = "type")]
    kind: CheckKind,
    port: Option<Spanned<Int>>,
    interval: Option<Spanned<RawDuration>>,
    timeout: Option<Spanned<RawDuration>>,
    rise: Option<Spanned<Int>>,
    fall: Option<Spanned<Int>>,
    path: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    method: Option<Spanned<String>>,
    expect: Option<OneOrMany<Int>>,
    verify: Option<Spanned<bool>>,
    query: Option<Spanned<String>>,
    qtype: Option<Spanned<String>>,
    transport: Option<Spanned<Protocol>>,
    rcode: Option<Spanned<String>>,
}

/// A real in a group: a bare address, or a map with `addr` and optional settings.
/// Written by hand because serde's untagged enums lose the positions.
struct RawReal {
    addr: String,
    /// Where `addr` is when the real is a map; a bare address is the node itself.
    addr_at: Option<Location>,
    weight: Option<Spanned<Int>>,
    disabled: Option<bool>,
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
                    addr: v.to_owned(),
                    addr_at: None,
                    weight: None,
                    disabled: None,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawReal, A::Error> {
                let mut addr: Option<Spanned<String>> = None;
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
        let multicast = raw.multicast.map(|m| self.multicast(&m)).transpose()?;
        let flow_sync_key = match raw.flow_sync_key {
            Some(key) if key.value.is_empty() => {
                return Err(self.err(key.referenced, "flow_sync_key is empty"));
            }
            Some(key) => Some(PathBuf::from(key.value)),
            None => None,
        };
        let rhi = raw
            .rhi
            .map(|r| self.rhi(r))
            .transpose()?
            .unwrap_or_default();
        let mut reals = BTreeMap::new();
        for (name, group) in raw.reals {
            let group = self.group(&name, group)?;
            reals.insert(name, group);
        }
        let mut services = Vec::with_capacity(raw.services.len());
        let mut names: HashMap<String, Location> = HashMap::new();
        let mut endpoints: HashMap<(IpAddr, u16, Protocol), (String, Location)> = HashMap::new();
        for raw_service in raw.services {
            let name = &raw_service.value.name;
            if let Some(first) = names.get(&name.value) {
                return Err(self.err(
                    name.referenced,
                    format!(
                        "service name {} is already used at line {}",
                        quoted(&name.value),
                        first.line()
                    ),
                ));
            }
            names.insert(name.value.clone(), name.referenced);
            services.push(self.service(raw_service, &reals, &mut endpoints)?);
        }
        Ok(Config {
            multicast,
            flow_sync_key,
            rhi,
            services,
            reals,
        })
    }

    fn multicast(&self, raw: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
        let at = raw.referenced;
        let addr: SocketAddr = raw.value.parse().map_err(|_| {
            self.err(
                at,
                format!(
                    "invalid multicast address {}: expected IP:PORT, e.g. 224.0.0.1:9999 or [ff02::1234]:9999",
                    quoted(&raw.value)
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

    fn rhi(&self, raw: RawRhi) -> Result<Rhi, ConfigError> {
        let as_number = raw.as_number.as_ref().map_or(0, |a| a.value);
        let mut peers: Vec<IpAddr> = Vec::new();
        if let Some(list) = &raw.peers {
            let items = self.items(list, "peers", true)?;
            for item in items {
                let peer = self.ip(item, "peer address")?;
                if peers.contains(&peer) {
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
            Some(n) => match self.ip(n, "next_hop6")? {
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
            med: raw.med,
            local_pref: raw.local_pref,
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
        for item in raw {
            let addr_at = item.value.addr_at.unwrap_or(item.referenced);
            let addr = self.ip(
                &Spanned::new(item.value.addr, addr_at, addr_at),
                "real address",
            )?;
            if reals.iter().any(|r| r.addr == addr) {
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
                disabled: item.value.disabled.unwrap_or(false),
            });
        }
        Ok(reals)
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
        if raw.name.value.trim().is_empty() {
            return Err(self.err(raw.name.referenced, "a service name must not be empty"));
        }
        let name = raw.name.value;

        let mut addrs: Vec<(IpAddr, Location)> = Vec::new();
        for item in self.items(&raw.addr, "addr", false)? {
            let addr = self.ip(item, "service address")?;
            if addrs.iter().any(|(a, _)| *a == addr) {
                return Err(self.err(item.referenced, format!("address {addr} is listed twice")));
            }
            addrs.push((addr, item.referenced));
        }

        let mut ports: Vec<u16> = Vec::new();
        for item in self.items(&raw.port, "port", false)? {
            let port = self.port(item)?;
            if ports.contains(&port) {
                return Err(self.err(item.referenced, format!("port {port} is listed twice")));
            }
            ports.push(port);
        }

        let protocol = raw.protocol.unwrap_or(DEFAULT_PROTOCOL);
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
        for item in self.items(&raw.real, "real", false)? {
            let group_name = &item.value;
            let Some(group) = groups.get(group_name) else {
                let known: Vec<&str> = groups.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "there are none".to_owned()
                } else {
                    format!("defined: {}", known.join(", "))
                };
                return Err(self.err(
                    item.referenced,
                    format!("undefined real group {} ({known})", quoted(group_name)),
                ));
            };
            if real_groups.contains(group_name) {
                return Err(self.err(
                    item.referenced,
                    format!("real group {} is listed twice", quoted(group_name)),
                ));
            }
            for real in group {
                match reals.iter().find(|r| r.addr == real.addr) {
                    None => reals.push(real.clone()),
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

        let checks = raw
            .checks
            .into_iter()
            .map(|c| self.check(c, &ports))
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
            desc: raw.desc,
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

    fn check(&self, raw: Spanned<RawCheck>, ports: &[u16]) -> Result<Check, ConfigError> {
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

        let name = match raw.name {
            Some(n) if n.value.trim().is_empty() => {
                return Err(self.err(n.referenced, "a check name must not be empty"));
            }
            Some(n) => n.value,
            None => format!("{kind}:{port}"),
        };

        let path = match raw.path {
            Some(p) if !p.value.starts_with('/') => {
                return Err(self.err(
                    p.referenced,
                    format!("path {} must start with `/`", quoted(&p.value)),
                ));
            }
            Some(p) => p.value,
            None => DEFAULT_CHECK_PATH.to_owned(),
        };
        let host = match raw.host {
            Some(h) if h.value.trim().is_empty() || h.value.chars().any(char::is_whitespace) => {
                return Err(self.err(h.referenced, format!("invalid host {}", quoted(&h.value))));
            }
            Some(h) => Some(h.value),
            None => None,
        };
        let method = match raw.method {
            Some(m) if !is_http_token(&m.value) => {
                return Err(self.err(
                    m.referenced,
                    format!("invalid HTTP method {}", quoted(&m.value)),
                ));
            }
            Some(m) => m.value,
            None => DEFAULT_CHECK_METHOD.to_owned(),
        };
        let expect = match raw.expect {
            None => DEFAULT_EXPECT.to_vec(),
            Some(list) => {
                let items = self.items(&list, "expect", false)?;
                let mut codes = Vec::with_capacity(items.len());
                for item in items {
                    let code = self.int(item, "expect")?;
                    match u16::try_from(code) {
                        Ok(code @ 100..=599) => {
                            if !codes.contains(&code) {
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
            Some(d) => self.duration(d, "interval")?,
        };
        let timeout = match &raw.timeout {
            None => DEFAULT_TIMEOUT,
            Some(d) => self.duration(d, "timeout")?,
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

        Ok(Check {
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
            verify_tls: raw.verify.map_or(DEFAULT_VERIFY_TLS, |v| v.value),
            dns,
        })
    }

    fn count(&self, raw: &Spanned<Int>, what: &str) -> Result<u32, ConfigError> {
        let n = self.int(raw, what)?;
        match u32::try_from(n) {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(self.err(
                raw.referenced,
                format!("{what} must be between 1 and {}, not {n}", u32::MAX),
            )),
        }
    }

    fn duration(&self, raw: &Spanned<RawDuration>, what: &str) -> Result<Duration, ConfigError> {
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
        Ok(d)
    }

    fn dns(&self, raw: &RawCheck) -> Result<DnsCheck, ConfigError> {
        let query = match &raw.query {
            None => DEFAULT_DNS_QUERY.to_owned(),
            Some(q) if is_dns_name(&q.value) => q.value.clone(),
            Some(q) => {
                return Err(self.err(
                    q.referenced,
                    format!("query {} is not a domain name", quoted(&q.value)),
                ));
            }
        };
        let qtype = match &raw.qtype {
            None => DEFAULT_DNS_QTYPE.to_owned(),
            Some(t) => normalise_qtype(&t.value).ok_or_else(|| {
                self.err(
                    t.referenced,
                    format!(
                        "unknown qtype {}: expected a record type such as A, AAAA, NS, SOA or TYPEnnn",
                        quoted(&t.value)
                    ),
                )
            })?,
        };
        let rcode = match &raw.rcode {
            None => DEFAULT_DNS_RCODE,
            Some(r) => parse_rcode(&r.value).ok_or_else(|| {
                self.err(
                    r.referenced,
                    format!(
                        "unknown rcode {}: expected 0..={MAX_RCODE} or a name such as NOERROR or NXDOMAIN",
                        quoted(&r.value)
                    ),
                )
            })?,
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

/// RFC 9110 token characters, which is what a method is.
fn is_http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
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
    if ms.is_multiple_of(1000) {
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
            "test.yaml:2:1: unknown field `foo`, expected one of multicast, flow_sync_key, rhi, services, reals"
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
            "invalid boolean",
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
            "invalid HTTP method",
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

        std::fs::write(&path, "flow_sync_key: /abs/flow.key\nservices: []\n").unwrap();
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
