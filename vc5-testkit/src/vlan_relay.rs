//! An 802.1Q tagging relay in user space: `vc5-vlan-relay`, and
//! [`VlanRelay`] to run it inside a [`Netns`].
//!
//! vc5's data plane sends a real's frames with the 802.1Q tag of the real's
//! VLAN out of a trunk. The kernels the lab runs on have no 8021q module
//! (no `eth0.10`) and their bridges no `vlan_filtering`, but a plain bridge
//! forwards tagged frames untouched. So the lab's switch joins a trunk
//! bridge to one bridge per VLAN in user space:
//!
//! - One AF_PACKET raw socket per interface (the trunk, and one access
//!   interface per VID), bound to it for every protocol and putting it in
//!   promiscuous mode (`PACKET_MR_PROMISC`, undone when the socket closes).
//!   Frames the host sent itself (`PACKET_OUTGOING`, which includes the
//!   relay's own) are not taken (`PACKET_IGNORE_OUTGOING`, and checked).
//! - A frame from the trunk whose outer tag is 802.1Q (TPID 0x8100) with a
//!   VID the relay serves goes out of that VID's access interface without
//!   the tag. Untagged and priority-tagged (VID 0) frames belong to the
//!   untagged LAN and are ignored, as are unserved VIDs, 802.1ad (0x88a8)
//!   outer tags and double tags (an 802.1Q tag followed by another 0x8100
//!   or 0x88a8 one): QinQ is not something vc5 sends. Each is counted under
//!   its own reason.
//! - A frame from an access interface goes out of the trunk with a tag of
//!   its VID (PCP from the options, 0 by default, DEI 0). A frame that is
//!   already tagged there (priority tags too) is dropped: an access port
//!   carries untagged frames only.
//! - The kernel moves the outermost tag of a received frame out of its
//!   bytes into metadata (`skb_vlan_untag` on receive, whatever the
//!   interface's offloads), so the relay reads it from `PACKET_AUXDATA`
//!   (`TP_STATUS_VLAN_VALID`, `tp_vlan_tci`, `tp_vlan_tpid`) and also
//!   accepts a tag still in the bytes; on transmit the tag is always
//!   written into the frame's bytes. Both paths are counted.
//! - Sockets use `PACKET_VNET_HDR`: a frame from a local sender whose
//!   checksum is left to the device (`CHECKSUM_PARTIAL`, as on veth) or
//!   that is a GSO super-frame (TSO on veth) is passed on as such, its
//!   checksum start and header length moved by the 4 bytes of the tag, so
//!   the kernel finishes the checksum or segments it downstream. Without it
//!   a real's UDP and TCP would arrive with bad checksums.
//!
//! There is no MAC learning (the bridges do that). A frame never goes back
//! out of the interface it came from: trunk frames go only to access
//! interfaces and access frames only to the trunk; an interface may be
//! named only once and a VID served only once, so the relay cannot join two
//! VLANs or form a loop by itself.
//!
//! Counters per VID and direction and per drop reason are written as JSON
//! to a stats file (atomically, within 50 ms of a change, and once ready,
//! which is how [`VlanRelay::start`] knows it is) and printed on stdout at
//! exit. SIGTERM or SIGINT ends it cleanly.

use crate::netns::Netns;
use crate::tool::{Tool, ToolStats, cvt, ip_cmd, signal_fd};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The TPID of an 802.1Q (customer) tag.
pub const TPID_8021Q: u16 = 0x8100;
/// The TPID of an 802.1ad (service, "QinQ" outer) tag.
pub const TPID_8021AD: u16 = 0x88a8;

/// Why a frame that arrived was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Untagged or priority-tagged (VID 0) on the trunk: the native LAN's.
    Untagged,
    /// An 802.1Q tag on the trunk with a VID the relay does not serve.
    UnservedVid,
    /// An 802.1ad (or other non-802.1Q) outer tag on the trunk.
    ServiceTag,
    /// An 802.1Q tag on the trunk followed by another tag.
    DoubleTagged,
    /// A tagged frame on an access interface.
    TaggedOnAccess,
    /// Shorter than an Ethernet header (or than its tag).
    Truncated,
    /// Larger than the receive buffer, or refused by the kernel on receive.
    Receive,
    /// The kernel refused to send it (e.g. too big, interface down).
    Send,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::Untagged,
        DropReason::UnservedVid,
        DropReason::ServiceTag,
        DropReason::DoubleTagged,
        DropReason::TaggedOnAccess,
        DropReason::Truncated,
        DropReason::Receive,
        DropReason::Send,
    ];

    /// Its name in the stats file.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Untagged => "untagged",
            DropReason::UnservedVid => "unserved_vid",
            DropReason::ServiceTag => "service_tag",
            DropReason::DoubleTagged => "double_tagged",
            DropReason::TaggedOnAccess => "tagged_on_access",
            DropReason::Truncated => "truncated",
            DropReason::Receive => "receive",
            DropReason::Send => "send",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A VLAN tag: its TPID and TCI (PCP, DEI and VID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub tpid: u16,
    pub tci: u16,
}

impl Tag {
    /// The VLAN ID (the TCI's low 12 bits).
    pub fn vid(self) -> u16 {
        self.tci & 0x0fff
    }

    /// The priority code point (the TCI's top 3 bits).
    pub fn pcp(self) -> u8 {
        (self.tci >> 13) as u8
    }
}

fn is_tpid(t: u16) -> bool {
    t == TPID_8021Q || t == TPID_8021AD
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

/// A frame from the trunk to relay: its VID, and whether its tag is in
/// its bytes (at 12..16, to be cut out) rather than in `meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FromTrunk {
    pub vid: u16,
    pub tag_in_bytes: bool,
}

/// What to do with `frame` from the trunk, `meta` the tag the kernel took
/// out of it (auxdata), if any; `served` says which VIDs have an access
/// interface.
pub fn classify_trunk(
    frame: &[u8],
    meta: Option<Tag>,
    served: impl Fn(u16) -> bool,
) -> Result<FromTrunk, DropReason> {
    if frame.len() < 14 {
        return Err(DropReason::Truncated);
    }
    // The tag, and the offset of the ethertype that follows it.
    let (tag, next, in_bytes) = match meta {
        Some(t) => (t, 12, false),
        None if is_tpid(be16(frame, 12)) => {
            if frame.len() < 18 {
                return Err(DropReason::Truncated);
            }
            let t = Tag {
                tpid: be16(frame, 12),
                tci: be16(frame, 14),
            };
            (t, 16, true)
        }
        None => return Err(DropReason::Untagged),
    };
    if tag.tpid != TPID_8021Q {
        return Err(DropReason::ServiceTag);
    }
    if is_tpid(be16(frame, next)) {
        return Err(DropReason::DoubleTagged);
    }
    match tag.vid() {
        0 => Err(DropReason::Untagged),
        v if served(v) => Ok(FromTrunk {
            vid: v,
            tag_in_bytes: in_bytes,
        }),
        _ => Err(DropReason::UnservedVid),
    }
}

/// Checks `frame` from an access interface (`meta` as for
/// [`classify_trunk`]): it must be untagged.
pub fn classify_access(frame: &[u8], meta: Option<Tag>) -> Result<(), DropReason> {
    if frame.len() < 14 {
        return Err(DropReason::Truncated);
    }
    if meta.is_some() || is_tpid(be16(frame, 12)) {
        return Err(DropReason::TaggedOnAccess);
    }
    Ok(())
}

/// `frame` (untagged, at least 14 bytes) with an 802.1Q tag of `vid` and
/// `pcp` after its MAC addresses, appended to `out`.
pub fn push_tagged(out: &mut Vec<u8>, frame: &[u8], vid: u16, pcp: u8) {
    let tci = (u16::from(pcp & 7) << 13) | (vid & 0x0fff);
    out.extend_from_slice(&frame[..12]);
    out.extend_from_slice(&TPID_8021Q.to_be_bytes());
    out.extend_from_slice(&tci.to_be_bytes());
    out.extend_from_slice(&frame[12..]);
}

/// `frame` without the tag at 12..16, appended to `out`.
pub fn push_untagged(out: &mut Vec<u8>, frame: &[u8]) {
    out.extend_from_slice(&frame[..12]);
    out.extend_from_slice(&frame[16..]);
}

/// Frames and bytes relayed for one VID.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VlanCounters {
    /// Frames from the trunk sent out of the access interface, untagged.
    pub to_access: u64,
    /// Their bytes as sent (Ethernet header on, no FCS).
    pub to_access_bytes: u64,
    /// Frames from the access interface sent out of the trunk, tagged.
    pub to_trunk: u64,
    /// Their bytes as sent.
    pub to_trunk_bytes: u64,
}

/// What `vc5-vlan-relay` counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Set up and receiving.
    pub ready: bool,
    /// The process id of the `vc5-vlan-relay` that wrote them.
    pub pid: u32,
    /// Per served VID.
    pub vlans: BTreeMap<u16, VlanCounters>,
    /// Frames dropped, per reason (indexed as [`DropReason::ALL`]).
    pub dropped: [u64; 8],
    /// Tagged frames received whose tag the kernel had moved into metadata.
    pub tag_in_metadata: u64,
    /// Tagged frames received with the tag still in their bytes.
    pub tag_in_bytes: u64,
}

impl RelayStats {
    /// Frames of `vid` relayed from the trunk to its access interface.
    pub fn to_access(&self, vid: u16) -> u64 {
        self.vlans.get(&vid).map_or(0, |c| c.to_access)
    }

    /// Frames of `vid` relayed from its access interface to the trunk.
    pub fn to_trunk(&self, vid: u16) -> u64 {
        self.vlans.get(&vid).map_or(0, |c| c.to_trunk)
    }

    /// Frames dropped for `r`.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r.index()]
    }

    /// Frames dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// Frames relayed either way, all VIDs.
    pub fn relayed_total(&self) -> u64 {
        self.vlans.values().map(|c| c.to_access + c.to_trunk).sum()
    }

    /// The stats file's JSON.
    pub fn to_json(&self) -> Value {
        let mut vlans = serde_json::Map::new();
        for (vid, c) in &self.vlans {
            vlans.insert(
                vid.to_string(),
                json!({
                    "to_access": c.to_access,
                    "to_access_bytes": c.to_access_bytes,
                    "to_trunk": c.to_trunk,
                    "to_trunk_bytes": c.to_trunk_bytes,
                }),
            );
        }
        let mut dropped = serde_json::Map::new();
        for r in DropReason::ALL {
            dropped.insert(r.name().into(), json!(self.dropped[r.index()]));
        }
        json!({
            "ready": self.ready,
            "pid": self.pid,
            "vlans": vlans,
            "dropped": dropped,
            "tag_in_metadata": self.tag_in_metadata,
            "tag_in_bytes": self.tag_in_bytes,
        })
    }

    /// Reads [`RelayStats::to_json`]'s JSON back.
    pub fn from_json(v: &Value) -> io::Result<RelayStats> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("stats: {what}"));
        let num = |v: &Value, what: &str| v.as_u64().ok_or_else(|| bad(what));
        let mut s = RelayStats {
            ready: v["ready"].as_bool().ok_or_else(|| bad("ready"))?,
            pid: u32::try_from(num(&v["pid"], "pid")?).map_err(|_| bad("pid"))?,
            tag_in_metadata: num(&v["tag_in_metadata"], "tag_in_metadata")?,
            tag_in_bytes: num(&v["tag_in_bytes"], "tag_in_bytes")?,
            ..RelayStats::default()
        };
        for (k, e) in v["vlans"].as_object().ok_or_else(|| bad("vlans"))? {
            let vid: u16 = k.parse().map_err(|_| bad("VID"))?;
            s.vlans.insert(
                vid,
                VlanCounters {
                    to_access: num(&e["to_access"], k)?,
                    to_access_bytes: num(&e["to_access_bytes"], k)?,
                    to_trunk: num(&e["to_trunk"], k)?,
                    to_trunk_bytes: num(&e["to_trunk_bytes"], k)?,
                },
            );
        }
        for r in DropReason::ALL {
            s.dropped[r.index()] = num(&v["dropped"][r.name()], r.name())?;
        }
        Ok(s)
    }

    /// Reads a stats file.
    pub fn read(path: &Path) -> io::Result<RelayStats> {
        crate::tool::read_stats(path)
    }

    /// Writes a stats file atomically (a temporary file renamed over it).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        crate::tool::write_stats(path, &self.to_json())
    }
}

/// What `vc5-vlan-relay` is to do (its command line, and
/// [`VlanRelay::start`]'s).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelayOptions {
    /// The trunk interface (tagged frames).
    pub trunk: String,
    /// Per VID (1 to 4094) its access interface (untagged frames).
    pub access: Vec<(u16, String)>,
    /// The priority code point of the tags it adds (0 to 7).
    pub pcp: u8,
    /// `vc5-vlan-relay` itself ([`VlanRelay::start`]); `None`:
    /// `$VC5_VLAN_RELAY`, else the one beside the running executable (or
    /// beside its directory, for test binaries in `deps/`).
    pub program: Option<PathBuf>,
}

impl RelayOptions {
    /// A relay between `trunk` and `access` (VID, interface) pairs.
    pub fn new(trunk: &str, access: &[(u16, &str)]) -> RelayOptions {
        RelayOptions {
            trunk: trunk.into(),
            access: access.iter().map(|&(v, i)| (v, i.to_string())).collect(),
            ..RelayOptions::default()
        }
    }

    /// Checks what the tool would refuse: no access interface, a VID out of
    /// 1..=4094 or given twice, an interface named twice, a PCP above 7.
    pub fn validate(&self) -> io::Result<()> {
        let bad = |m: String| Err(io::Error::new(io::ErrorKind::InvalidInput, m));
        if self.trunk.is_empty() {
            return bad("no trunk interface".into());
        }
        if self.access.is_empty() {
            return bad("no access interface: give --access VID=IF".into());
        }
        if self.pcp > 7 {
            return bad(format!("PCP {} is not 0 to 7", self.pcp));
        }
        let mut vids = std::collections::BTreeSet::new();
        let mut ifs = std::collections::BTreeSet::from([self.trunk.as_str()]);
        for (vid, dev) in &self.access {
            if !(1..=4094).contains(vid) {
                return bad(format!("VID {vid} is not 1 to 4094"));
            }
            if !vids.insert(*vid) {
                return bad(format!("VID {vid} given twice"));
            }
            if !ifs.insert(dev.as_str()) {
                return bad(format!("interface {dev} named twice"));
            }
        }
        Ok(())
    }

    /// The command-line arguments for `vc5-vlan-relay` (without the stats
    /// file).
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["--trunk".to_string(), self.trunk.clone()];
        for (vid, dev) in &self.access {
            a.extend(["--access".into(), format!("{vid}={dev}")]);
        }
        if self.pcp != 0 {
            a.extend(["--pcp".into(), self.pcp.to_string()]);
        }
        a
    }
}

/// Parses `VID=IF` (the `--access` argument).
pub fn parse_access(s: &str) -> Result<(u16, String), String> {
    let (vid, dev) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected VID=IF"))?;
    let vid: u16 = vid
        .parse()
        .map_err(|_| format!("{s:?}: {vid:?} is not a VID"))?;
    if dev.is_empty() {
        return Err(format!("{s:?}: no interface"));
    }
    Ok((vid, dev.to_string()))
}

/// A `vc5-vlan-relay` running in a namespace ([`Tool`]: counters, `wait_for`,
/// `stop`); stopped (SIGTERM, then SIGKILL after 5 s) when dropped.
pub type VlanRelay = Tool<RelayStats>;

impl ToolStats for RelayStats {
    const PROGRAM: &'static str = "vc5-vlan-relay";
    const ENV: &'static str = "VC5_VLAN_RELAY";

    fn from_json(v: &Value) -> io::Result<Self> {
        RelayStats::from_json(v)
    }

    fn ready(&self) -> bool {
        self.ready
    }
}

impl Tool<RelayStats> {
    /// Starts `vc5-vlan-relay` in `ns` and waits (10 s at most) until it is
    /// relaying. Its stats file and log live in a directory of its own
    /// under the temporary directory, removed when it stops.
    pub fn start(ns: &Netns, opts: &RelayOptions) -> io::Result<VlanRelay> {
        Self::start_in(ns.name(), opts)
    }

    /// [`Tool::start`] in the network namespace named `ns` (`ip netns`),
    /// e.g. a lab node's.
    pub fn start_in(ns: &str, opts: &RelayOptions) -> io::Result<VlanRelay> {
        Tool::spawn_in(ns, opts.program.as_deref(), opts.args())
    }
}

// ---------------------------------------------------------------------------
// The tool itself (`vc5-vlan-relay`'s main).

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: v is a live value of the option's type, its size given.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// The virtio-net header `PACKET_VNET_HDR` puts before every frame
/// (`struct virtio_net_hdr`, host byte order on the hosts we run on).
const VNET_HDR_LEN: usize = 10;
const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_F_DATA_VALID: u8 = 2;

/// `hdr` (a received virtio-net header) for the frame made from it by
/// adding `delta` bytes (±4) after the MAC addresses: the checksum start
/// and the GSO header length move with the payload; `DATA_VALID` is for
/// receiving only.
fn shift_vnet_hdr(hdr: &[u8], delta: i16) -> [u8; VNET_HDR_LEN] {
    let mut h = [0u8; VNET_HDR_LEN];
    h.copy_from_slice(&hdr[..VNET_HDR_LEN]);
    h[0] &= !VNET_F_DATA_VALID;
    let shift = |h: &mut [u8; VNET_HDR_LEN], at: usize| {
        let v = u16::from_ne_bytes([h[at], h[at + 1]]);
        if v != 0 {
            let v = v.wrapping_add_signed(delta);
            h[at..at + 2].copy_from_slice(&v.to_ne_bytes());
        }
    };
    if h[1] != 0 {
        shift(&mut h, 2); // hdr_len (GSO only)
    }
    if h[0] & VNET_F_NEEDS_CSUM != 0 {
        shift(&mut h, 6); // csum_start
    }
    h
}

/// One bound AF_PACKET socket.
struct Port {
    fd: OwnedFd,
    name: String,
    /// None for the trunk.
    vid: Option<u16>,
}

fn ifindex(name: &str) -> io::Result<libc::c_int> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: c is a NUL-terminated string that lives across the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name}: {}", io::Error::last_os_error()),
        ));
    }
    Ok(i as libc::c_int)
}

/// An AF_PACKET socket on `name` for every protocol, with auxdata and
/// virtio-net headers, not taking outgoing frames, the interface
/// promiscuous while it is open.
fn packet_socket(name: &str) -> io::Result<OwnedFd> {
    let idx = ifindex(name)?;
    // Protocol 0: it receives nothing until bound to the interface below,
    // so no other interface's frames get queued in between.
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: fd is a socket we just opened and nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    let one: libc::c_int = 1;
    setsockopt(raw, libc::SOL_PACKET, libc::PACKET_AUXDATA, &one)?;
    setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &one)?;
    // Older kernels lack it; the packet type is checked on receive anyway.
    let _ = setsockopt(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one);
    let big: libc::c_int = 4 << 20;
    let _ = setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &big);
    let _ = setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, &big);
    // SAFETY: a zeroed sockaddr_ll is valid; family, protocol and index set below.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as libc::c_ushort;
    sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sa.sll_ifindex = idx;
    // SAFETY: bind(2) with a sockaddr_ll and its size.
    cvt(unsafe {
        libc::bind(
            raw,
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
    .map_err(|e| io::Error::new(e.kind(), format!("bind AF_PACKET to {name}: {e}")))?;
    // SAFETY: a zeroed packet_mreq is valid; index and type set below.
    let mut mr: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mr.mr_ifindex = idx;
    mr.mr_type = libc::PACKET_MR_PROMISC as libc::c_ushort;
    setsockopt(raw, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mr)
        .map_err(|e| io::Error::new(e.kind(), format!("promiscuous {name}: {e}")))?;
    Ok(fd)
}

/// A frame received: its length in `buf` (virtio-net header first), the
/// tag the kernel took out of it, whether it was cut short, and whether
/// the host sent it (then it is to be passed over).
struct Received {
    len: usize,
    meta: Option<Tag>,
    truncated: bool,
    outgoing: bool,
}

/// Receives one frame from `fd` into `buf`: None when the socket is
/// drained.
fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<Received>> {
    // SAFETY: a zeroed sockaddr_ll is valid storage for the peer address.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut cbuf = [0u64; 16]; // 128 bytes, aligned for cmsghdr
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is valid; its pointers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut sa as *mut libc::sockaddr_ll).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: msg points at live, writable buffers of the lengths it gives.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_TRUNC) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    if sa.sll_pkttype == libc::PACKET_OUTGOING {
        return Ok(Some(Received {
            len: 0,
            meta: None,
            truncated: false,
            outgoing: true,
        }));
    }
    let mut meta = None;
    // SAFETY: msg was filled in by recvmsg; CMSG_FIRSTHDR/NXTHDR walk its
    // control buffer within msg_controllen.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !c.is_null() {
        // SAFETY: c points at a complete cmsghdr inside cbuf.
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_PACKET && h.cmsg_type == libc::PACKET_AUXDATA {
            // SAFETY: a PACKET_AUXDATA message carries a tpacket_auxdata;
            // read_unaligned since CMSG_DATA need not be aligned for it.
            let aux: libc::tpacket_auxdata =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast()) };
            if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                    aux.tp_vlan_tpid
                } else {
                    TPID_8021Q
                };
                meta = Some(Tag {
                    tpid,
                    tci: aux.tp_vlan_tci,
                });
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR; returns null past the last one.
        c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
    }
    let n = n as usize;
    Ok(Some(Received {
        len: n.min(buf.len()),
        meta,
        truncated: n > buf.len() || msg.msg_flags & libc::MSG_TRUNC != 0,
        outgoing: false,
    }))
}

/// One send(2) of `iov` on `fd` (bound: it goes out of that interface);
/// whether it was taken whole.
fn send(fd: RawFd, parts: &[&[u8]]) -> bool {
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: a zeroed msghdr is valid; it points at iov, which points at
    // the caller's slices, all alive across the call and only read.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len();
    let total: usize = parts.iter().map(|p| p.len()).sum();
    // SAFETY: msg is valid as described above.
    let n = unsafe { libc::sendmsg(fd, &msg, 0) };
    n >= 0 && n as usize == total
}

/// Runs `vc5-vlan-relay` until SIGTERM, SIGINT or SIGHUP: brings its
/// interfaces up, opens a socket on each, writes `stats` (if any) once
/// ready and after changes, and returns the final counters.
pub fn run(opts: &RelayOptions, stats_path: Option<&Path>) -> io::Result<RelayStats> {
    opts.validate()?;
    let sig = signal_fd()?;
    let mut ports = Vec::new();
    for (name, vid) in [(&opts.trunk, None)]
        .into_iter()
        .chain(opts.access.iter().map(|(v, n)| (n, Some(*v))))
    {
        ip_cmd(&["link", "set", "dev", name, "up"])?;
        ports.push(Port {
            fd: packet_socket(name)?,
            name: name.clone(),
            vid,
        });
    }
    let mut stats = RelayStats {
        ready: true,
        pid: std::process::id(),
        vlans: opts
            .access
            .iter()
            .map(|(v, _)| (*v, VlanCounters::default()))
            .collect(),
        ..RelayStats::default()
    };
    let write_stats = |s: &RelayStats| -> io::Result<()> {
        match stats_path {
            Some(p) => s.write(p),
            None => Ok(()),
        }
    };
    write_stats(&stats)?;
    eprintln!(
        "vc5-vlan-relay: ready, trunk {} access {:?}",
        opts.trunk, opts.access
    );
    // VID -> its port's index.
    let by_vid: BTreeMap<u16, usize> = ports
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.vid.map(|v| (v, i)))
        .collect();
    let mut pfds: Vec<libc::pollfd> = ports
        .iter()
        .map(|p| p.fd.as_raw_fd())
        .chain([sig.as_raw_fd()])
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // Room for a GSO super-frame (64 KiB) and its virtio-net header.
    let mut buf = vec![0u8; 65536 + 4096];
    let mut out = Vec::with_capacity(buf.len() + 4);
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
        for (i, port) in ports.iter().enumerate() {
            if pfds[i].revents == 0 {
                continue;
            }
            // A bounded batch, so that one busy interface cannot starve
            // the others or the signal.
            for _ in 0..256 {
                let got = match recv(port.fd.as_raw_fd(), &mut buf) {
                    Ok(Some(got)) => got,
                    Ok(None) => break,
                    // E.g. a GSO type the virtio-net header cannot describe.
                    Err(e) => {
                        eprintln!("vc5-vlan-relay: receive ({}): {e}", port.name);
                        stats.dropped[DropReason::Receive.index()] += 1;
                        dirty = true;
                        break;
                    }
                };
                if got.outgoing {
                    continue;
                }
                dirty = true;
                if got.truncated || got.len < VNET_HDR_LEN {
                    stats.dropped[DropReason::Receive.index()] += 1;
                    continue;
                }
                let (hdr, frame) = buf[..got.len].split_at(VNET_HDR_LEN);
                // Count where tags were found, whatever becomes of the frame.
                if got.meta.is_some() {
                    stats.tag_in_metadata += 1;
                } else if frame.len() >= 14 && is_tpid(be16(frame, 12)) {
                    stats.tag_in_bytes += 1;
                }
                let verdict = match port.vid {
                    None => classify_trunk(frame, got.meta, |v| by_vid.contains_key(&v)).map(|t| {
                        out.clear();
                        let delta = if t.tag_in_bytes {
                            push_untagged(&mut out, frame);
                            -4
                        } else {
                            out.extend_from_slice(frame);
                            0
                        };
                        (by_vid[&t.vid], t.vid, delta)
                    }),
                    Some(vid) => classify_access(frame, got.meta).map(|()| {
                        out.clear();
                        push_tagged(&mut out, frame, vid, opts.pcp);
                        (0, vid, 4)
                    }),
                };
                match verdict {
                    Ok((to, vid, delta)) => {
                        let h = shift_vnet_hdr(hdr, delta);
                        if send(ports[to].fd.as_raw_fd(), &[&h, &out]) {
                            let c = stats.vlans.entry(vid).or_default();
                            if port.vid.is_none() {
                                c.to_access += 1;
                                c.to_access_bytes += out.len() as u64;
                            } else {
                                c.to_trunk += 1;
                                c.to_trunk_bytes += out.len() as u64;
                            }
                        } else {
                            stats.dropped[DropReason::Send.index()] += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ethertype: u16, rest: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(rest);
        f
    }

    fn served(v: u16) -> bool {
        v == 10 || v == 20
    }

    #[test]
    fn trunk_tags_in_bytes_and_in_metadata() {
        let ip = [0x45u8; 30];
        let mut tagged = Vec::new();
        push_tagged(&mut tagged, &frame(0x0800, &ip), 10, 5);
        assert_eq!(&tagged[12..16], &[0x81, 0x00, 0xa0, 0x0a]);
        assert_eq!(
            classify_trunk(&tagged, None, served),
            Ok(FromTrunk {
                vid: 10,
                tag_in_bytes: true
            })
        );
        let mut back = Vec::new();
        push_untagged(&mut back, &tagged);
        assert_eq!(back, frame(0x0800, &ip));
        let meta = Tag {
            tpid: TPID_8021Q,
            tci: 20,
        };
        assert_eq!(
            classify_trunk(&frame(0x0800, &ip), Some(meta), served),
            Ok(FromTrunk {
                vid: 20,
                tag_in_bytes: false
            })
        );
        assert_eq!(
            Tag {
                tpid: 0,
                tci: 0xa00a
            }
            .pcp(),
            5
        );
    }

    #[test]
    fn trunk_drops() {
        let ip = [0x45u8; 30];
        let q = |vid: u16| Tag {
            tpid: TPID_8021Q,
            tci: vid,
        };
        let cases: Vec<(Vec<u8>, Option<Tag>, DropReason)> = vec![
            (frame(0x0800, &ip), None, DropReason::Untagged),
            (frame(0x0800, &ip), Some(q(0)), DropReason::Untagged),
            (frame(0x0800, &ip), Some(q(30)), DropReason::UnservedVid),
            (frame(0x8100, &[0, 30, 8, 0]), None, DropReason::UnservedVid),
            (
                frame(0x0800, &ip),
                Some(Tag {
                    tpid: TPID_8021AD,
                    tci: 10,
                }),
                DropReason::ServiceTag,
            ),
            (frame(0x88a8, &[0, 10, 8, 0]), None, DropReason::ServiceTag),
            (frame(0x8100, &ip), Some(q(10)), DropReason::DoubleTagged),
            (frame(0x88a8, &ip), Some(q(10)), DropReason::DoubleTagged),
            (
                frame(0x8100, &[0, 10, 0x81, 0, 0, 20]),
                None,
                DropReason::DoubleTagged,
            ),
            (frame(0x8100, &[0, 10]), None, DropReason::Truncated),
            (vec![0; 13], Some(q(10)), DropReason::Truncated),
        ];
        for (f, meta, want) in cases {
            assert_eq!(
                classify_trunk(&f, meta, served),
                Err(want),
                "{f:02x?} {meta:?}"
            );
        }
    }

    #[test]
    fn access_takes_untagged_only() {
        assert_eq!(classify_access(&frame(0x86dd, &[0; 40]), None), Ok(()));
        assert_eq!(
            classify_access(&frame(0x8100, &[0, 10, 8, 0]), None),
            Err(DropReason::TaggedOnAccess)
        );
        assert_eq!(
            classify_access(
                &frame(0x0800, &[0; 20]),
                Some(Tag {
                    tpid: TPID_8021Q,
                    tci: 0
                })
            ),
            Err(DropReason::TaggedOnAccess)
        );
        assert_eq!(classify_access(&[0; 10], None), Err(DropReason::Truncated));
    }

    #[test]
    fn vnet_header_moves_with_the_tag() {
        let mut h = [0u8; VNET_HDR_LEN];
        h[0] = VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID;
        h[1] = 1; // GSO TCPv4
        h[2..4].copy_from_slice(&66u16.to_ne_bytes());
        h[4..6].copy_from_slice(&1448u16.to_ne_bytes());
        h[6..8].copy_from_slice(&34u16.to_ne_bytes());
        h[8..10].copy_from_slice(&16u16.to_ne_bytes());
        let t = shift_vnet_hdr(&h, 4);
        assert_eq!(t[0], VNET_F_NEEDS_CSUM);
        assert_eq!(u16::from_ne_bytes([t[2], t[3]]), 70);
        assert_eq!(u16::from_ne_bytes([t[4], t[5]]), 1448);
        assert_eq!(u16::from_ne_bytes([t[6], t[7]]), 38);
        assert_eq!(u16::from_ne_bytes([t[8], t[9]]), 16);
        let u = shift_vnet_hdr(&t, -4);
        assert_eq!(u16::from_ne_bytes([u[6], u[7]]), 34);
        // Nothing to move without a checksum or GSO.
        assert_eq!(shift_vnet_hdr(&[0; VNET_HDR_LEN], 4), [0; VNET_HDR_LEN]);
    }

    #[test]
    fn stats_round_trip() {
        let mut s = RelayStats {
            ready: true,
            pid: 7,
            tag_in_metadata: 3,
            tag_in_bytes: 1,
            ..RelayStats::default()
        };
        s.vlans.insert(
            10,
            VlanCounters {
                to_access: 1,
                to_access_bytes: 60,
                to_trunk: 2,
                to_trunk_bytes: 128,
            },
        );
        s.vlans.insert(20, VlanCounters::default());
        for (i, r) in DropReason::ALL.into_iter().enumerate() {
            s.dropped[i] = i as u64 + 1;
            assert_eq!(s.dropped(r), i as u64 + 1);
        }
        assert_eq!(RelayStats::from_json(&s.to_json()).unwrap(), s);
        assert_eq!(s.to_json()["vlans"]["10"]["to_trunk"], 2);
        assert_eq!(s.to_json()["dropped"]["unserved_vid"], 2);
        assert_eq!(s.to_trunk(10), 2);
        assert_eq!(s.to_access(30), 0);
        assert_eq!(s.relayed_total(), 3);
    }

    #[test]
    fn options() {
        let mut o = RelayOptions::new("trunk0", &[(10, "acc10"), (20, "acc20")]);
        assert_eq!(
            o.args().join(" "),
            "--trunk trunk0 --access 10=acc10 --access 20=acc20"
        );
        assert!(o.validate().is_ok());
        o.pcp = 3;
        assert!(o.args().join(" ").ends_with("--pcp 3"));
        for bad in [
            RelayOptions::new("t", &[]),
            RelayOptions::new("t", &[(0, "a")]),
            RelayOptions::new("t", &[(4095, "a")]),
            RelayOptions::new("t", &[(10, "a"), (10, "b")]),
            RelayOptions::new("t", &[(10, "a"), (20, "a")]),
            RelayOptions::new("t", &[(10, "t")]),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!(parse_access("10=eth1"), Ok((10, "eth1".into())));
        assert!(parse_access("10").is_err());
        assert!(parse_access("x=eth1").is_err());
        assert!(parse_access("10=").is_err());
    }
}
