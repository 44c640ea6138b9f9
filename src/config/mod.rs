//! The vc5d configuration file: loading, validation and normalisation.
//!
//! The file is YAML in the original vc5 schema (see design §2.2), with optional,
//! additive extensions. JSON is YAML 1.2, so a JSON file goes through the same parser
//! and gets the same positions in its errors.
//!
//! Loading happens in two passes. The first deserialises into private `Raw*` structs
//! that mirror the file exactly: every one refuses unknown keys, and every value that
//! is checked later is wrapped in [`Spanned`](serde_saphyr::Spanned) so that the
//! check can name the node's line and column. The second pass validates and turns
//! those into the public, normalised model ([`Config`] and its parts): defaults
//! filled in, single values turned into lists, real groups resolved, check ports
//! resolved.
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
//! `quorum` (how many checks must pass; absent: all), `forward` (`l2`, the
//! default, `ipip`, `gre`, `fou` or `gue`), `tunnel_port` (the UDP port of `fou`
//! and `gue`, which need it; refused with the others), `checks`.
//!
//! `reals` maps a group name to a list whose items are an address or a map
//! `{addr: IP, weight: N, disabled: BOOL}`.
//!
//! A check: `name`, `type` (`tcp`, `http`, `https`, `dns`), `port`, `interval`,
//! `timeout`, `rise`, `fall`; for http and https `path`, `host`, `method`, `expect`
//! (a status code or a list); for https `verify`; for dns `query`, `qtype` (a
//! mnemonic such as `AAAA`, `TYPEnnn` or a number), `transport` (`udp` or `tcp`)
//! and `rcode` (a number up to 4095 or a name such as `NXDOMAIN`), both read and
//! shown after hickory-proto's `RecordType` and `ResponseCode`.
//! A key that does not apply to the check's type is an error rather than ignored.
//! What a check does is vc5-health's [`vc5_health::CheckKind`], and every default
//! left out of the file is vc5-health's ([`vc5_health::HttpCheck::default`],
//! [`vc5_health::DnsCheck::default`], `vc5_health::spec::DEFAULT_*`): the
//! configuration keeps no defaults of its own for checks.
//! Durations are a number of seconds or a string such as `"500ms"`, `"2s"`, `"1m"`,
//! with millisecond resolution.
//!
//! # Rules beyond the types
//!
//! - A check's `port` must be one of its service's ports, and may be left out only
//!   when the service has one port.
//! - A check's `name` (default `TYPE:PORT`, e.g. `http:80`) is unique within its
//!   service, since the daemon knows a check by service, real and name. Two checks
//!   of one type and port must therefore be named; they are refused, not numbered,
//!   because a number from the list's order would swap their states when they are
//!   reordered.
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
//! except that communities are `"ASN:VALUE"` strings, `flow_sync_wait` is an integer
//! named `flow_sync_wait_ms`, and a check is flat: `name`, `type`, `port`, the keys
//! of its type (`path`, `host`, `method`, `expect` for http and https;
//! `verify_tls` for https; `dns: {query, qtype, transport, rcode}` for dns, `qtype`
//! a mnemonic or `TYPEnnn` and `rcode` a number), then `interval_ms`, `timeout_ms`,
//! `rise` and `fall`.
//!
//! # Where things are
//!
//! - `model`: the normalised types above, with their named defaults and bounds;
//! - `raw`: the first pass, the file as written;
//! - `spanned`: the value types of the first pass (integers, strings, booleans,
//!   durations, a value or a list), which keep a node of the wrong type for the
//!   second pass to refuse at its own position;
//! - `normalise`: the second pass, the rules above, by part of the file (the top
//!   level and flow sync, `rhi`, services and real groups, checks);
//! - `lexical`: spellings: durations, names and host names, DNS types and codes,
//!   quoting for messages.

mod lexical;
mod model;
mod normalise;
mod raw;
mod spanned;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::path::Path;

use serde_saphyr::Location;

pub use model::{
    Check, Config, DEFAULT_FLOW_INSERT_LIMIT, DEFAULT_FLOW_SYNC_RATE,
    DEFAULT_FLOW_SYNC_RESYNC_RATE, DEFAULT_FLOW_SYNC_WAIT, DEFAULT_FORWARD, DEFAULT_HOLD_TIME,
    DEFAULT_NEED, DEFAULT_PROBE, DEFAULT_PROTOCOL, DEFAULT_WEIGHT, Forward, MAX_BACKENDS,
    MAX_DESC_CHARS, MAX_ENDPOINTS, MAX_FILE_BYTES, MAX_FLOW_INSERT_LIMIT, MAX_FLOW_SYNC_RATE,
    MAX_FLOW_SYNC_WAIT, MAX_INTERVAL, MAX_NAME_CHARS, MAX_NODES, MAX_RISE_FALL, MIN_FLOW_SYNC_RATE,
    MIN_FLOW_SYNC_WAIT, MIN_INTERVAL, MIN_TIMEOUT, ProbeVia, Protocol, Real, Rhi, Service,
};

use normalise::Normaliser;
use raw::RawConfig;

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
