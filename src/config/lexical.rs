//! Spellings: which characters a name may hold and how one is quoted in a
//! message, what a host name and a DNS name look like, and durations such as
//! `"500ms"`. DNS record types and response codes are spelled by vc5-health
//! (`vc5_health::spec::parse_qtype` and friends), after hickory-proto.

use std::net::Ipv6Addr;
use std::time::Duration;

/// Characters refused in names and descriptions: C0 and C1 controls (a NUL ends a
/// D-Bus string, a newline splits a log line or a metrics sample), the Unicode line
/// and paragraph separators, and the bidirectional overrides that make text read
/// differently from what it is.
pub(super) fn forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

pub(super) fn char_name(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// Quotes text from the file for a message, with control characters escaped so a
/// message stays on one line.
pub(super) fn quoted(s: &str) -> String {
    format!("`{}`", s.escape_debug())
}

/// A `Host` header value: a domain name of letters, digits, hyphens and
/// underscores, an IPv4 address or a bracketed IPv6 address, then optionally
/// `:PORT`. What the health crate would send is wider (any visible ASCII); this is
/// what names a host.
pub(super) fn is_http_host(s: &str) -> bool {
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

pub(super) fn is_dns_name(s: &str) -> bool {
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

/// Parses `"500ms"`, `"2s"`, `"1.5m"`, `"1h"` or a bare number of seconds, exactly:
/// the decimal digits are turned into nanoseconds without going through a float.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
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

pub(super) fn format_duration(d: Duration) -> String {
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
    use std::time::Duration;

    use super::{format_duration, parse_duration};

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
}
