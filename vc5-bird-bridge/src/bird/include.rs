//! The include file: its contents and its atomic replacement.
//!
//! vc5 writes one file (`--bird-include`) that the operator's `bird.conf`
//! includes. It declares two static protocols whose routes are the VIPs:
//!
//! ```text
//! protocol static vc5_vips4 {
//!   ipv4;
//!   route 203.0.113.10/32 blackhole;
//! }
//! protocol static vc5_vips6 {
//!   ipv6;
//!   route 2001:db8:ffff::10/128 blackhole;
//! }
//! ```
//!
//! The names are the contract with the operator's filters: export them to
//! the routers with `where proto = "vc5_vips4"` (or `proto ~ "vc5_vips*"`),
//! and keep them out of the kernel table. The routes are `blackhole` because
//! they exist only to be announced: the load balancer's XDP program, not the
//! kernel, handles the VIPs' traffic. Configured communities, MED and
//! LOCAL_PREF are set on each route (`bgp_community`, `bgp_med`,
//! `bgp_local_pref`), so that BIRD announces what the built-in speaker would.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::Path;

/// The static protocol that carries IPv4 VIPs.
pub const PROTOCOL_V4: &str = "vc5_vips4";
/// The static protocol that carries IPv6 VIPs.
pub const PROTOCOL_V6: &str = "vc5_vips6";
/// A BIRD protocol-name pattern that matches both.
pub const PROTOCOL_PATTERN: &str = "vc5_vips*";

/// BGP attributes set on every VIP route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteOptions {
    /// Standard communities (AS, value).
    pub communities: Vec<(u16, u16)>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (BIRD sends it on iBGP sessions only).
    pub local_pref: Option<u32>,
}

/// The include file for `vips`.
pub fn render(vips: &BTreeSet<IpAddr>, opts: &RouteOptions) -> String {
    let mut attrs = String::new();
    for (a, v) in &opts.communities {
        let _ = write!(attrs, " bgp_community.add(({a},{v}));");
    }
    if let Some(m) = opts.med {
        let _ = write!(attrs, " bgp_med = {m};");
    }
    if let Some(l) = opts.local_pref {
        let _ = write!(attrs, " bgp_local_pref = {l};");
    }
    let attrs = if attrs.is_empty() {
        String::new()
    } else {
        format!(" {{{attrs} }}")
    };
    let mut out = String::from(
        "# Written by vc5d: the VIPs whose services are healthy.\n\
         # Replaced atomically on every change; do not edit.\n",
    );
    for (name, v6) in [(PROTOCOL_V4, false), (PROTOCOL_V6, true)] {
        let _ = writeln!(out, "protocol static {name} {{");
        let _ = writeln!(out, "  {};", if v6 { "ipv6" } else { "ipv4" });
        for vip in vips.iter().filter(|a| a.is_ipv6() == v6) {
            let len = if v6 { 128 } else { 32 };
            let _ = writeln!(out, "  route {vip}/{len} blackhole{attrs};");
        }
        out.push_str("}\n");
    }
    out
}

/// Replaces `path` with `contents` atomically: a temporary file in the same
/// directory is written, flushed to disk and renamed over `path`, and the
/// directory is synced, so BIRD (or a crash) sees the old file or the new one,
/// never a mix. The directory is created when missing.
pub fn write_atomic(path: &Path, contents: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "include path has no file name")
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes the include for `vips` unless the file already holds exactly that.
/// Returns whether it wrote.
pub fn update(path: &Path, vips: &BTreeSet<IpAddr>, opts: &RouteOptions) -> io::Result<bool> {
    let text = render(vips, opts);
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    write_atomic(path, &text)?;
    Ok(true)
}

/// [`update`] on tokio's blocking pool: the fsyncs can take milliseconds
/// on a disk (none on tmpfs), and must not stall the tasks that send BGP
/// UPDATEs or answer D-Bus.
pub async fn update_async(
    path: &Path,
    vips: &BTreeSet<IpAddr>,
    opts: &RouteOptions,
) -> io::Result<bool> {
    let (path, vips, opts) = (path.to_owned(), vips.clone(), opts.clone());
    tokio::task::spawn_blocking(move || update(&path, &vips, &opts))
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<IpAddr> {
        v.iter().map(|s| s.parse().expect("addr")).collect()
    }

    #[test]
    fn renders_both_families() {
        let text = render(
            &set(&["203.0.113.10", "2001:db8:ffff::10", "203.0.113.9"]),
            &RouteOptions::default(),
        );
        assert_eq!(
            text,
            "# Written by vc5d: the VIPs whose services are healthy.\n\
             # Replaced atomically on every change; do not edit.\n\
             protocol static vc5_vips4 {\n  ipv4;\n  route 203.0.113.9/32 blackhole;\n  route 203.0.113.10/32 blackhole;\n}\n\
             protocol static vc5_vips6 {\n  ipv6;\n  route 2001:db8:ffff::10/128 blackhole;\n}\n"
        );
    }

    #[test]
    fn renders_attributes() {
        let text = render(
            &set(&["203.0.113.10"]),
            &RouteOptions {
                communities: vec![(65000, 1), (65000, 2)],
                med: Some(5),
                local_pref: Some(200),
            },
        );
        assert!(text.contains(
            "route 203.0.113.10/32 blackhole { bgp_community.add((65000,1)); bgp_community.add((65000,2)); bgp_med = 5; bgp_local_pref = 200; };"
        ));
    }

    #[test]
    fn atomic_write_replaces_and_skips_identical() {
        let dir = std::env::temp_dir().join(format!("vc5bb-inc-{}", std::process::id()));
        let path = dir.join("sub/bird-vips.conf");
        let opts = RouteOptions::default();
        assert!(update(&path, &set(&["203.0.113.10"]), &opts).expect("write"));
        assert!(!update(&path, &set(&["203.0.113.10"]), &opts).expect("same"));
        assert!(update(&path, &set(&[]), &opts).expect("write"));
        let left: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
