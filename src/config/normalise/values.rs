//! Readers of a single node, shared by the rest of the second pass: a string, a
//! boolean, an integer in a range, a port, a duration, an address, a name, the
//! items of a value-or-list. Each names its key in the message and reports at
//! the node's own position.

use std::net::IpAddr;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::Normaliser;
use crate::config::ConfigError;
use crate::config::lexical::{char_name, forbidden_char, format_duration, parse_duration, quoted};
use crate::config::model::{MAX_FLOW_SYNC_RATE, MAX_NAME_CHARS, MAX_RISE_FALL, MIN_FLOW_SYNC_RATE};
use crate::config::spanned::{Bool, Int, Leaf, OneOrMany, RawDuration, Text};

impl Normaliser<'_> {
    pub(super) fn ip(&self, raw: &Spanned<String>, what: &str) -> Result<IpAddr, ConfigError> {
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
    pub(super) fn unicast(&self, raw: &Spanned<String>, what: &str) -> Result<IpAddr, ConfigError> {
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
    pub(super) fn text(&self, raw: &Spanned<Text>, key: &str) -> Result<String, ConfigError> {
        raw.value.0.clone().map_err(|found| {
            self.err(
                raw.referenced,
                format!("{key} must be a string, not {found}"),
            )
        })
    }

    /// The boolean, or an error naming `key` when the node was something else.
    pub(super) fn boolean(&self, raw: &Spanned<Bool>, key: &str) -> Result<bool, ConfigError> {
        raw.value.0.clone().map_err(|found| {
            self.err(
                raw.referenced,
                format!("{key} must be true or false, not {found}"),
            )
        })
    }

    /// Refuses a name that cannot be shown as it is everywhere a name goes: D-Bus
    /// (no NUL), Prometheus labels and logs (one line), the console.
    pub(super) fn label(&self, name: &str, at: Location, what: &str) -> Result<(), ConfigError> {
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

    /// A 32-bit unsigned setting (AS numbers, MED, LOCAL_PREF).
    pub(super) fn u32(&self, raw: &Spanned<Int>, key: &str) -> Result<u32, ConfigError> {
        let n = self.int(raw, key)?;
        u32::try_from(n).map_err(|_| {
            self.err(
                raw.referenced,
                format!("{key} must be between 0 and {}, not {n}", u32::MAX),
            )
        })
    }

    /// A flow-sync rate in records per second.
    pub(super) fn rate(&self, raw: &Spanned<Int>, key: &str) -> Result<u32, ConfigError> {
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
    pub(super) fn int(&self, raw: &Spanned<Int>, key: &str) -> Result<i64, ConfigError> {
        raw.value.0.clone().map_err(|found| {
            self.err(
                raw.referenced,
                format!("{key} must be an integer, not {found}"),
            )
        })
    }

    /// The items of a value-or-list node, refusing a node of another type and,
    /// unless `may_be_empty`, an empty list.
    pub(super) fn items<'l, T: Leaf>(
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

    pub(super) fn port(&self, raw: &Spanned<Int>) -> Result<u16, ConfigError> {
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
    pub(super) fn positive(&self, raw: &Spanned<Int>, what: &str) -> Result<usize, ConfigError> {
        let n = self.int(raw, what)?;
        match usize::try_from(n) {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(self.err(
                raw.referenced,
                format!("{what} must be at least 1, not {n}"),
            )),
        }
    }

    pub(super) fn count(&self, raw: &Spanned<Int>, what: &str) -> Result<u32, ConfigError> {
        let n = self.int(raw, what)?;
        match u32::try_from(n) {
            Ok(n) if (1..=MAX_RISE_FALL).contains(&n) => Ok(n),
            _ => Err(self.err(
                raw.referenced,
                format!("{what} must be between 1 and {MAX_RISE_FALL}, not {n}"),
            )),
        }
    }

    pub(super) fn duration(
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
}
