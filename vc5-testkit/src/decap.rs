//! A real's tunnel end in user space: `vc5-decap`, and [`Decap`] to run it
//! inside a [`Netns`].
//!
//! vc5's layer-3 DSR puts the client's packet inside IPIP, GRE, FOU or GUE
//! (vc5-xdp/bpf/tunnel.h). The kernels the lab runs on have no ipip, gre,
//! fou or ip6_tunnel modules, so a real decapsulates in user space:
//!
//! - IPIP and GRE arrive on raw IP sockets (IPv4 and IPv6, protocols 4, 41
//!   and 47). A raw socket for a protocol also stops the kernel answering
//!   it with "protocol unreachable" (IPv4) or "unknown next header"
//!   (IPv6), which AF_PACKET would not. The IPv4 sockets see the outer
//!   header, the IPv6 ones only what follows it.
//! - FOU and GUE arrive on UDP sockets bound to their ports (dual stack), so
//!   that the kernel checks the outer UDP checksum: a datagram with a bad
//!   one never reaches us, and one with none over IPv6 only with
//!   `--udp6-zero-checksum` (`UDP_NO_CHECK6_RX`, RFC 6935's tunnel
//!   exception; the data plane sends 0 where it cannot sum the payload).
//! - The outer header is stripped, the inner packet checked (its IP
//!   version is the one the outer header named, its header and length fit)
//!   and written into a TUN device (`IFF_TUN | IFF_NO_PI`) that holds the
//!   VIPs, so the kernel takes it as received there, for a local address;
//!   the real's answer leaves by its ordinary routes, straight to the
//!   client. The TUN device gets an effective `rp_filter` of 0 (the client
//!   is not routed through it): while the tool runs, `all.rp_filter` is 0
//!   and every other interface's own value is raised to what `all` was, so
//!   theirs do not change (restored at exit; a SIGKILL leaves them).
//!   VIPs go on with `nodad`. The device, and the VIPs with it, disappear
//!   when the process exits. One `vc5-decap` per namespace: a second
//!   would find the filter already open and the first's exit would close
//!   it under it.
//!
//! Counters per method and per drop reason are written as JSON to a stats
//! file (atomically, within 50 ms of a change, and once ready, which is how
//! [`Decap::start`] knows it is) and printed on stdout at exit. SIGTERM or
//! SIGINT ends it cleanly.

use crate::netns::Netns;
use crate::tool::{Tool, ToolStats, cvt, ip_cmd, signal_fd};
use serde_json::{Value, json};
use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An encapsulation `vc5-decap` takes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Ipip,
    Gre,
    Fou,
    Gue,
}

impl Method {
    pub const ALL: [Method; 4] = [Method::Ipip, Method::Gre, Method::Fou, Method::Gue];

    /// Its name in the stats file.
    pub fn name(self) -> &'static str {
        match self {
            Method::Ipip => "ipip",
            Method::Gre => "gre",
            Method::Fou => "fou",
            Method::Gue => "gue",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a packet that arrived was not written into the TUN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than a header it must hold, or than its inner packet's
    /// length says.
    Truncated,
    /// GRE with checksum, key, sequence or routing bits, or a version but 0.
    BadGreHeader,
    /// GUE other than variant 0 without options and flags, or a control
    /// message.
    BadGueHeader,
    /// A GRE protocol type, GUE protocol or FOU payload version that is
    /// neither IPv4 nor IPv6.
    UnknownInnerProtocol,
    /// The inner IP version is not the one the outer header named.
    VersionMismatch,
    /// An inner IPv4 header length below 20 or a total length below it.
    BadInnerHeader,
    /// The TUN device refused the write.
    TunWrite,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::Truncated,
        DropReason::BadGreHeader,
        DropReason::BadGueHeader,
        DropReason::UnknownInnerProtocol,
        DropReason::VersionMismatch,
        DropReason::BadInnerHeader,
        DropReason::TunWrite,
    ];

    /// Its name in the stats file.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadGreHeader => "bad_gre_header",
            DropReason::BadGueHeader => "bad_gue_header",
            DropReason::UnknownInnerProtocol => "unknown_inner_protocol",
            DropReason::VersionMismatch => "version_mismatch",
            DropReason::BadInnerHeader => "bad_inner_header",
            DropReason::TunWrite => "tun_write",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_GRE: u8 = 47;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// The inner packet of `payload`, what followed the outer IP header
/// (`outer_proto` its protocol or next header: 4, 41, 47 or 17) for
/// `method` (for FOU and GUE, what followed the UDP header). Trailing bytes
/// after the inner packet's own length are cut off.
pub fn decapsulate(method: Method, outer_proto: u8, payload: &[u8]) -> Result<&[u8], DropReason> {
    match method {
        Method::Ipip => match outer_proto {
            IPPROTO_IPIP => inner(payload, Some(4)),
            IPPROTO_IPV6 => inner(payload, Some(6)),
            _ => Err(DropReason::UnknownInnerProtocol),
        },
        Method::Gre => {
            if payload.len() < 4 {
                return Err(DropReason::Truncated);
            }
            if payload[0] != 0 || payload[1] != 0 {
                return Err(DropReason::BadGreHeader);
            }
            match u16::from_be_bytes([payload[2], payload[3]]) {
                ETH_P_IP => inner(&payload[4..], Some(4)),
                ETH_P_IPV6 => inner(&payload[4..], Some(6)),
                _ => Err(DropReason::UnknownInnerProtocol),
            }
        }
        Method::Fou => inner(payload, None),
        Method::Gue => {
            if payload.len() < 4 {
                return Err(DropReason::Truncated);
            }
            // Version 0, C clear, Hlen 0; no flags (so no options either).
            if payload[0] != 0 || payload[2] != 0 || payload[3] != 0 {
                return Err(DropReason::BadGueHeader);
            }
            match payload[1] {
                IPPROTO_IPIP => inner(&payload[4..], Some(4)),
                IPPROTO_IPV6 => inner(&payload[4..], Some(6)),
                _ => Err(DropReason::UnknownInnerProtocol),
            }
        }
    }
}

/// `p` checked as an IP packet of version `want` (None: 4 or 6), cut to
/// its own length.
fn inner(p: &[u8], want: Option<u8>) -> Result<&[u8], DropReason> {
    let Some(&b0) = p.first() else {
        return Err(DropReason::Truncated);
    };
    let v = b0 >> 4;
    match want {
        Some(w) if w != v => return Err(DropReason::VersionMismatch),
        None if v != 4 && v != 6 => return Err(DropReason::UnknownInnerProtocol),
        _ => {}
    }
    let len = if v == 4 {
        if p.len() < 20 {
            return Err(DropReason::Truncated);
        }
        let ihl = usize::from(b0 & 0xf) * 4;
        let tot = usize::from(u16::from_be_bytes([p[2], p[3]]));
        if ihl < 20 || tot < ihl {
            return Err(DropReason::BadInnerHeader);
        }
        tot
    } else {
        if p.len() < 40 {
            return Err(DropReason::Truncated);
        }
        40 + usize::from(u16::from_be_bytes([p[4], p[5]]))
    };
    if len > p.len() {
        return Err(DropReason::Truncated);
    }
    Ok(&p[..len])
}

/// What `vc5-decap` counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecapStats {
    /// Set up and receiving.
    pub ready: bool,
    /// The process id of the `vc5-decap` that wrote them.
    pub pid: u32,
    /// Packets received, per method (indexed as [`Method::ALL`]).
    pub received: [u64; 4],
    /// Inner packets written into the TUN device, per method and outer
    /// family (`[method][0]` outer IPv4, `[method][1]` outer IPv6).
    pub delivered: [[u64; 2]; 4],
    /// Bytes of inner packets written, per method.
    pub bytes: [u64; 4],
    /// Packets dropped, per reason (indexed as [`DropReason::ALL`]).
    pub dropped: [u64; 7],
}

impl DecapStats {
    /// Packets of `m` received (delivered or dropped).
    pub fn received(&self, m: Method) -> u64 {
        self.received[m.index()]
    }

    /// Inner packets of `m` written into the TUN device, either outer family.
    pub fn delivered(&self, m: Method) -> u64 {
        let d = self.delivered[m.index()];
        d[0] + d[1]
    }

    /// Inner packets of `m` written that came in an outer IPv6 (`true`) or
    /// IPv4 header.
    pub fn delivered_outer(&self, m: Method, outer6: bool) -> u64 {
        self.delivered[m.index()][usize::from(outer6)]
    }

    /// Packets dropped for `r`.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r.index()]
    }

    /// Packets dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// All inner packets written.
    pub fn delivered_total(&self) -> u64 {
        Method::ALL.iter().map(|&m| self.delivered(m)).sum()
    }

    /// The stats file's JSON.
    pub fn to_json(&self) -> Value {
        let mut methods = serde_json::Map::new();
        for m in Method::ALL {
            let i = m.index();
            methods.insert(
                m.name().into(),
                json!({
                    "received": self.received[i],
                    "delivered_outer4": self.delivered[i][0],
                    "delivered_outer6": self.delivered[i][1],
                    "bytes": self.bytes[i],
                }),
            );
        }
        let mut dropped = serde_json::Map::new();
        for r in DropReason::ALL {
            dropped.insert(r.name().into(), json!(self.dropped[r.index()]));
        }
        json!({ "ready": self.ready, "pid": self.pid, "methods": methods, "dropped": dropped })
    }

    /// Reads [`DecapStats::to_json`]'s JSON back.
    pub fn from_json(v: &Value) -> io::Result<DecapStats> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("stats: {what}"));
        let num = |v: &Value, what: &str| v.as_u64().ok_or_else(|| bad(what));
        let mut s = DecapStats {
            ready: v["ready"].as_bool().ok_or_else(|| bad("ready"))?,
            pid: u32::try_from(num(&v["pid"], "pid")?).map_err(|_| bad("pid"))?,
            ..DecapStats::default()
        };
        for m in Method::ALL {
            let e = &v["methods"][m.name()];
            let i = m.index();
            s.received[i] = num(&e["received"], m.name())?;
            s.delivered[i][0] = num(&e["delivered_outer4"], m.name())?;
            s.delivered[i][1] = num(&e["delivered_outer6"], m.name())?;
            s.bytes[i] = num(&e["bytes"], m.name())?;
        }
        for r in DropReason::ALL {
            s.dropped[r.index()] = num(&v["dropped"][r.name()], r.name())?;
        }
        Ok(s)
    }

    /// Reads a stats file.
    pub fn read(path: &Path) -> io::Result<DecapStats> {
        crate::tool::read_stats(path)
    }

    /// Writes a stats file atomically (a temporary file renamed over it).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        crate::tool::write_stats(path, &self.to_json())
    }
}

/// What `vc5-decap` is to do (its command line, and [`Decap::start`]'s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecapOptions {
    /// Take IPIP apart (IPv4 protocol 4 and 41, IPv6 next header 4 and 41).
    pub ipip: bool,
    /// Take GRE apart (protocol 47).
    pub gre: bool,
    /// UDP ports that carry FOU.
    pub fou: Vec<u16>,
    /// UDP ports that carry GUE.
    pub gue: Vec<u16>,
    /// The TUN device to create.
    pub tun: String,
    /// The addresses to put on it (the VIPs). With none, the VIPs must be
    /// local some other way (on `lo`, say): the kernel takes a packet from
    /// the TUN device for any of its addresses.
    pub vips: Vec<IpAddr>,
    /// Accept FOU and GUE over IPv6 with a zero UDP checksum.
    pub udp6_zero_checksum: bool,
    /// `vc5-decap` itself ([`Decap::start`]); `None`: `$VC5_DECAP`, else the
    /// one beside the running executable (or beside its directory, for test
    /// binaries in `deps/`).
    pub program: Option<PathBuf>,
}

impl Default for DecapOptions {
    fn default() -> Self {
        DecapOptions {
            ipip: false,
            gre: false,
            fou: Vec::new(),
            gue: Vec::new(),
            tun: "vc5tun0".into(),
            vips: Vec::new(),
            udp6_zero_checksum: false,
            program: None,
        }
    }
}

impl DecapOptions {
    /// Every method: IPIP, GRE, FOU on `fou` and GUE on `gue`.
    pub fn all(fou: u16, gue: u16, vips: &[IpAddr]) -> DecapOptions {
        DecapOptions {
            ipip: true,
            gre: true,
            fou: vec![fou],
            gue: vec![gue],
            vips: vips.to_vec(),
            ..DecapOptions::default()
        }
    }

    /// The command-line arguments for `vc5-decap` (without the stats file).
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["--tun".to_string(), self.tun.clone()];
        if self.ipip {
            a.push("--ipip".into());
        }
        if self.gre {
            a.push("--gre".into());
        }
        for p in &self.fou {
            a.extend(["--fou".into(), p.to_string()]);
        }
        for p in &self.gue {
            a.extend(["--gue".into(), p.to_string()]);
        }
        for v in &self.vips {
            a.extend(["--vip".into(), v.to_string()]);
        }
        if self.udp6_zero_checksum {
            a.push("--udp6-zero-checksum".into());
        }
        a
    }
}

/// A `vc5-decap` running in a namespace ([`Tool`]: counters, `wait_for`,
/// `stop`); stopped (SIGTERM, then SIGKILL after 5 s) when dropped.
pub type Decap = Tool<DecapStats>;

impl ToolStats for DecapStats {
    const PROGRAM: &'static str = "vc5-decap";
    const ENV: &'static str = "VC5_DECAP";

    fn from_json(v: &Value) -> io::Result<Self> {
        DecapStats::from_json(v)
    }

    fn ready(&self) -> bool {
        self.ready
    }
}

impl Tool<DecapStats> {
    /// Starts `vc5-decap` in `ns` and waits (10 s at most) until it is
    /// receiving. Its stats file and log live in a directory of its own
    /// under the temporary directory, removed when it stops.
    pub fn start(ns: &Netns, opts: &DecapOptions) -> io::Result<Decap> {
        Self::start_in(ns.name(), opts)
    }

    /// [`Tool::start`] in the network namespace named `ns` (`ip netns`),
    /// e.g. a lab node's.
    pub fn start_in(ns: &str, opts: &DecapOptions) -> io::Result<Decap> {
        Tool::spawn_in(ns, opts.program.as_deref(), opts.args())
    }
}

// ---------------------------------------------------------------------------
// The tool itself (`vc5-decap`'s main).

/// Where a socket's packets come from.
struct Source {
    fd: OwnedFd,
    method: Method,
    /// The outer header's protocol (17 for UDP).
    proto: u8,
    /// A raw IPv6 socket (the outer family is IPv6); raw IPv4 sockets see
    /// the outer header; UDP sockets tell the family by the peer address.
    v6: bool,
    udp: bool,
}

fn raw_socket(v6: bool, proto: u8) -> io::Result<OwnedFd> {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = cvt(unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::c_int::from(proto),
        )
    })?;
    // SAFETY: fd is a socket we just opened and nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_rcvbuf(fd.as_raw_fd());
    Ok(fd)
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: an int option from a live local, its size given.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// A larger receive buffer (the kernel caps it at rmem_max): a burst of
/// connections must not overflow it while we write into the TUN device.
fn set_rcvbuf(fd: RawFd) {
    let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20);
}

/// A dual-stack UDP socket bound to `[::]:port`.
fn udp_socket(port: u16, zero_csum6: bool) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_UDP,
        )
    })?;
    // SAFETY: fd is a socket we just opened and nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)?;
    if zero_csum6 {
        setsockopt_int(fd.as_raw_fd(), libc::SOL_UDP, libc::UDP_NO_CHECK6_RX, 1)?;
    }
    set_rcvbuf(fd.as_raw_fd());
    // SAFETY: a zeroed sockaddr_in6 is valid; port and family set below.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_port = port.to_be();
    // SAFETY: bind(2) with a sockaddr_in6 and its size.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    })
    .map_err(|e| io::Error::new(e.kind(), format!("bind UDP [::]:{port}: {e}")))?;
    Ok(fd)
}

/// Creates the TUN device `name` (IFF_TUN | IFF_NO_PI, not persistent: it
/// goes when the descriptor is closed).
fn open_tun(name: &str) -> io::Result<fs::File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: a zeroed ifreq is valid; name and flags set below.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF takes a pointer to an ifreq, which lives across the call.
    cvt(unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) })
        .map_err(|e| io::Error::new(e.kind(), format!("TUNSETIFF {name}: {e}")))?;
    Ok(f)
}

/// Runs `vc5-decap` until SIGTERM, SIGINT or SIGHUP: sets up the TUN device
/// and the sockets `opts` asks for, writes `stats` (if any) once ready and
/// after changes, and returns the final counters.
pub fn run(opts: &DecapOptions, stats_path: Option<&Path>) -> io::Result<DecapStats> {
    if !opts.ipip && !opts.gre && opts.fou.is_empty() && opts.gue.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no method: give --ipip, --gre, --fou PORT or --gue PORT",
        ));
    }
    let sig = signal_fd()?;
    let tun = open_tun(&opts.tun)?;
    let name = opts.tun.as_str();

    let rp = RpFilter::open_for(name)?;
    let configured = (|| -> io::Result<()> {
        ip_cmd(&["link", "set", "dev", name, "up"])?;
        for v in &opts.vips {
            match v {
                IpAddr::V4(_) => ip_cmd(&["addr", "add", &format!("{v}/32"), "dev", name])?,
                IpAddr::V6(_) => {
                    ip_cmd(&["addr", "add", &format!("{v}/128"), "dev", name, "nodad"])?
                }
            }
        }
        Ok(())
    })();
    let result = configured.and_then(|()| serve(opts, &tun, &sig, stats_path));
    rp.restore();
    drop(tun);
    result
}

/// The reverse-path filter opened for the TUN device, and what to put back.
///
/// The kernel takes a packet that arrives on the TUN device from a client
/// it routes elsewhere only without a reverse-path filter there (a loose
/// one fails too while the device has no address of its own), and an
/// interface's effective `rp_filter` is the larger of its own and `all`'s.
/// So the device gets 0, and if `all` is set, every other interface whose
/// own value is lower gets `all`'s (its effective value stays what it was)
/// before `all` becomes 0; [`RpFilter::restore`] undoes both.
struct RpFilter {
    all: Option<String>,
    raised: Vec<(PathBuf, String)>,
}

impl RpFilter {
    fn open_for(tun: &str) -> io::Result<RpFilter> {
        let conf = Path::new("/proc/sys/net/ipv4/conf");
        fs::write(conf.join(tun).join("rp_filter"), "0")?;
        let all_path = conf.join("all/rp_filter");
        let all = fs::read_to_string(&all_path)?.trim().to_string();
        let mut rp = RpFilter {
            all: None,
            raised: Vec::new(),
        };
        if all == "0" {
            return Ok(rp);
        }
        let level = |v: &str| v.trim().parse::<u8>().unwrap_or(0);
        for e in fs::read_dir(conf)? {
            let e = e?;
            let dev = e.file_name();
            if dev == "all" || dev == "default" || dev == tun {
                continue;
            }
            let p = e.path().join("rp_filter");
            let own = fs::read_to_string(&p)?;
            if level(&own) < level(&all) {
                fs::write(&p, &all)?;
                rp.raised.push((p, own.trim().to_string()));
            }
        }
        fs::write(&all_path, "0")?;
        rp.all = Some(all);
        Ok(rp)
    }

    fn restore(self) {
        if let Some(all) = self.all {
            let _ = fs::write("/proc/sys/net/ipv4/conf/all/rp_filter", all);
        }
        for (p, v) in self.raised {
            let _ = fs::write(p, v);
        }
    }
}

fn open_sources(opts: &DecapOptions) -> io::Result<Vec<Source>> {
    let mut out = Vec::new();
    let raw = |v6: bool, proto: u8, method: Method| -> io::Result<Source> {
        Ok(Source {
            fd: raw_socket(v6, proto).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "raw IPv{} socket for protocol {proto}: {e}",
                        if v6 { 6 } else { 4 }
                    ),
                )
            })?,
            method,
            proto,
            v6,
            udp: false,
        })
    };
    if opts.ipip {
        for v6 in [false, true] {
            for proto in [IPPROTO_IPIP, IPPROTO_IPV6] {
                out.push(raw(v6, proto, Method::Ipip)?);
            }
        }
    }
    if opts.gre {
        for v6 in [false, true] {
            out.push(raw(v6, IPPROTO_GRE, Method::Gre)?);
        }
    }
    for (ports, method) in [(&opts.fou, Method::Fou), (&opts.gue, Method::Gue)] {
        for &port in ports {
            out.push(Source {
                fd: udp_socket(port, opts.udp6_zero_checksum)?,
                method,
                proto: libc::IPPROTO_UDP as u8,
                v6: false,
                udp: true,
            });
        }
    }
    Ok(out)
}

/// Receives one packet from `src` into `buf`: its length and whether the
/// outer family was IPv6, or None when the socket is drained.
fn recv(src: &Source, buf: &mut [u8]) -> io::Result<Option<(usize, bool)>> {
    // SAFETY: a zeroed sockaddr_in6 is valid storage for any peer address
    // of these sockets.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut sl = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    // SAFETY: buf and sa are writable for the lengths given.
    let n = unsafe {
        libc::recvfrom(
            src.fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut sa as *mut libc::sockaddr_in6).cast(),
            &mut sl,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock => Ok(None),
            io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    let outer6 = if src.udp {
        // A dual-stack socket: IPv4 peers appear as ::ffff:a.b.c.d.
        let a = std::net::Ipv6Addr::from(sa.sin6_addr.s6_addr);
        a.to_ipv4_mapped().is_none()
    } else {
        src.v6
    };
    Ok(Some((n as usize, outer6)))
}

/// What follows the outer IP header of a raw IPv4 socket's packet.
fn strip_ipv4(p: &[u8]) -> Result<&[u8], DropReason> {
    if p.len() < 20 {
        return Err(DropReason::Truncated);
    }
    let ihl = usize::from(p[0] & 0xf) * 4;
    let tot = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if ihl < 20 || tot < ihl || p.len() < ihl {
        return Err(DropReason::Truncated);
    }
    Ok(&p[ihl..tot.min(p.len())])
}

fn serve(
    opts: &DecapOptions,
    tun: &fs::File,
    sig: &OwnedFd,
    stats_path: Option<&Path>,
) -> io::Result<DecapStats> {
    let sources = open_sources(opts)?;
    let mut stats = DecapStats {
        ready: true,
        pid: std::process::id(),
        ..DecapStats::default()
    };
    let write_stats = |s: &DecapStats| -> io::Result<()> {
        match stats_path {
            Some(p) => s.write(p),
            None => Ok(()),
        }
    };
    write_stats(&stats)?;
    eprintln!(
        "vc5-decap: {} ready ({} sockets, VIPs {:?})",
        opts.tun,
        sources.len(),
        opts.vips
    );
    let mut pfds: Vec<libc::pollfd> = sources
        .iter()
        .map(|s| s.fd.as_raw_fd())
        .chain([sig.as_raw_fd()])
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = vec![0u8; 65536];
    let mut dirty = false;
    let mut written = Instant::now();
    let flush = Duration::from_millis(50);
    loop {
        let timeout = if dirty {
            flush.saturating_sub(written.elapsed()).as_millis() as libc::c_int
        } else {
            -1
        };
        // SAFETY: pfds is a valid array of pollfd of the length given.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if pfds.last().is_some_and(|p| p.revents != 0) {
            let mut si = [0u8; 128];
            // SAFETY: reads one signalfd_siginfo (128 bytes) into a local buffer.
            let _ = unsafe { libc::read(sig.as_raw_fd(), si.as_mut_ptr().cast(), si.len()) };
            break;
        }
        for (i, src) in sources.iter().enumerate() {
            if pfds[i].revents == 0 {
                continue;
            }
            // A bounded batch, so that one busy socket cannot starve the
            // others or the signal.
            for _ in 0..256 {
                let (n, outer6) = match recv(src, &mut buf) {
                    Ok(Some(got)) => got,
                    Ok(None) => break,
                    // A queued socket error (none is expected on these
                    // unconnected sockets) must not end the tool.
                    Err(e) => {
                        eprintln!("vc5-decap: receive ({}): {e}", src.method.name());
                        break;
                    }
                };
                dirty = true;
                let m = src.method.index();
                stats.received[m] += 1;
                let pkt = &buf[..n];
                let got = if src.udp || src.v6 {
                    decapsulate(src.method, src.proto, pkt)
                } else {
                    strip_ipv4(pkt).and_then(|p| decapsulate(src.method, pkt[9], p))
                };
                match got {
                    Ok(inner) => {
                        if write_packet(tun, inner) {
                            stats.delivered[m][usize::from(outer6)] += 1;
                            stats.bytes[m] += inner.len() as u64;
                        } else {
                            stats.dropped[DropReason::TunWrite.index()] += 1;
                        }
                    }
                    Err(r) => stats.dropped[r.index()] += 1,
                }
            }
        }
        if dirty && written.elapsed() >= flush {
            write_stats(&stats)?;
            written = Instant::now();
            dirty = false;
        }
    }
    write_stats(&stats)?;
    Ok(stats)
}

/// One write(2) of the whole packet (a TUN device takes a packet per
/// write); whether it was taken whole.
fn write_packet(mut tun: &fs::File, p: &[u8]) -> bool {
    use std::io::Write;
    matches!(tun.write(p), Ok(n) if n == p.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(len: u16, proto: u8) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(len)];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[9] = proto;
        p
    }

    fn v6(payload: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40 + usize::from(payload)];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&payload.to_be_bytes());
        p[6] = 17;
        p
    }

    #[test]
    fn ipip_checks_the_version_the_outer_header_named() {
        let p = v4(28, 17);
        assert_eq!(decapsulate(Method::Ipip, 4, &p), Ok(&p[..]));
        assert_eq!(
            decapsulate(Method::Ipip, 41, &p),
            Err(DropReason::VersionMismatch)
        );
        let q = v6(8);
        assert_eq!(decapsulate(Method::Ipip, 41, &q), Ok(&q[..]));
        assert_eq!(
            decapsulate(Method::Ipip, 4, &q),
            Err(DropReason::VersionMismatch)
        );
    }

    #[test]
    fn inner_lengths() {
        let mut p = v4(28, 17);
        p.extend_from_slice(&[0xee; 6]); // padding is cut off
        assert_eq!(decapsulate(Method::Fou, 17, &p), Ok(&p[..28]));
        assert_eq!(
            decapsulate(Method::Fou, 17, &p[..27]),
            Err(DropReason::Truncated)
        );
        assert_eq!(
            decapsulate(Method::Fou, 17, &p[..19]),
            Err(DropReason::Truncated)
        );
        assert_eq!(
            decapsulate(Method::Fou, 17, &[]),
            Err(DropReason::Truncated)
        );
        let q = v6(8);
        assert_eq!(
            decapsulate(Method::Fou, 17, &q[..47]),
            Err(DropReason::Truncated)
        );
        assert_eq!(
            decapsulate(Method::Fou, 17, &q[..39]),
            Err(DropReason::Truncated)
        );
        let mut bad = v4(28, 17);
        bad[0] = 0x44;
        assert_eq!(
            decapsulate(Method::Fou, 17, &bad),
            Err(DropReason::BadInnerHeader)
        );
        let mut bad = v4(28, 17);
        bad[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            decapsulate(Method::Fou, 17, &bad),
            Err(DropReason::BadInnerHeader)
        );
        let mut five = v4(28, 17);
        five[0] = 0x55;
        assert_eq!(
            decapsulate(Method::Fou, 17, &five),
            Err(DropReason::UnknownInnerProtocol)
        );
    }

    #[test]
    fn gre_header() {
        let inner = v4(28, 6);
        let gre = |h: [u8; 4], i: &[u8]| [&h[..], i].concat();
        let p = gre([0, 0, 0x08, 0x00], &inner);
        assert_eq!(decapsulate(Method::Gre, 47, &p), Ok(&inner[..]));
        let p = gre([0, 0, 0x86, 0xdd], &inner);
        assert_eq!(
            decapsulate(Method::Gre, 47, &p),
            Err(DropReason::VersionMismatch)
        );
        let p = gre([0x20, 0, 0x08, 0x00], &inner); // K
        assert_eq!(
            decapsulate(Method::Gre, 47, &p),
            Err(DropReason::BadGreHeader)
        );
        let p = gre([0, 1, 0x08, 0x00], &inner); // version 1
        assert_eq!(
            decapsulate(Method::Gre, 47, &p),
            Err(DropReason::BadGreHeader)
        );
        let p = gre([0, 0, 0x88, 0x47], &inner); // MPLS
        assert_eq!(
            decapsulate(Method::Gre, 47, &p),
            Err(DropReason::UnknownInnerProtocol)
        );
        assert_eq!(
            decapsulate(Method::Gre, 47, &[0, 0, 8]),
            Err(DropReason::Truncated)
        );
    }

    #[test]
    fn gue_header() {
        let inner = v6(8);
        let gue = |h: [u8; 4]| [&h[..], &inner[..]].concat();
        assert_eq!(
            decapsulate(Method::Gue, 17, &gue([0, 41, 0, 0])),
            Ok(&inner[..])
        );
        assert_eq!(
            decapsulate(Method::Gue, 17, &gue([0, 4, 0, 0])),
            Err(DropReason::VersionMismatch)
        );
        for h in [
            [1, 41, 0, 0],
            [0x20, 41, 0, 0],
            [0x40, 41, 0, 0],
            [0, 41, 0x80, 0],
            [0, 41, 0, 1],
        ] {
            assert_eq!(
                decapsulate(Method::Gue, 17, &gue(h)),
                Err(DropReason::BadGueHeader),
                "{h:?}"
            );
        }
        assert_eq!(
            decapsulate(Method::Gue, 17, &gue([0, 17, 0, 0])),
            Err(DropReason::UnknownInnerProtocol)
        );
        assert_eq!(
            decapsulate(Method::Gue, 17, &[0, 41]),
            Err(DropReason::Truncated)
        );
    }

    #[test]
    fn stats_round_trip() {
        let mut s = DecapStats {
            ready: true,
            pid: 42,
            ..DecapStats::default()
        };
        for (i, m) in Method::ALL.into_iter().enumerate() {
            s.received[i] = 10 + i as u64;
            s.delivered[i] = [i as u64, 2 * i as u64];
            s.bytes[i] = 100 * i as u64;
            assert_eq!(s.delivered(m), 3 * i as u64);
        }
        for (i, r) in DropReason::ALL.into_iter().enumerate() {
            s.dropped[i] = i as u64 + 1;
            assert_eq!(s.dropped(r), i as u64 + 1);
        }
        assert_eq!(DecapStats::from_json(&s.to_json()).unwrap(), s);
        assert_eq!(s.to_json()["methods"]["gue"]["delivered_outer6"], 6);
        assert_eq!(s.to_json()["dropped"]["version_mismatch"], 5);
    }

    #[test]
    fn options_as_arguments() {
        let o = DecapOptions::all(5555, 6666, &["192.0.2.80".parse().unwrap()]);
        assert_eq!(
            o.args().join(" "),
            "--tun vc5tun0 --ipip --gre --fou 5555 --gue 6666 --vip 192.0.2.80"
        );
    }
}
