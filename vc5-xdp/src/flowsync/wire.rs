//! The flow-sync datagram, version 1. All integers are big-endian.
//!
//! ```text
//!  0               4       5       6       7       8
//!  +---------------+-------+-------+-------+-------+
//!  | magic "VC5F"  |version| type  |key id |   0   |   header: 40 bytes,
//!  +---------------+-------+-------+-------+-------+   sent in clear and
//!  |                sender id (u64)                |   authenticated as the
//!  +-----------------------------------------------+   AEAD's associated data
//!  |                epoch (u64)                    |
//!  +-----------------------------------------------+
//!  |                sequence (u64)                 |
//!  +-----------------------------------------------+
//!  |                send time, ms since 1970 (u64) |
//!  +=======================+=======================+ 40
//!  | record count (u16)    | records ...           |   sealed with
//!  +-----------------------+                       |   AES-256-GCM
//!  |                                               |
//!  +-----------------------------------------------+
//!  |           GCM tag (16 bytes)                  |
//!  +-----------------------------------------------+
//!
//!  record:  0      1      2        3      4        6        8
//!           +------+------+--------+------+--------+--------+----------------+
//!           |flags |  op  |protocol|  0   | sport  | dport  | saddr daddr real
//!           +------+------+--------+------+--------+--------+----------------+
//!  flags bit 0: saddr/daddr are IPv6 (16 bytes each, else 4); bit 1: real is
//!  IPv6 (16 bytes, else 4); other bits 0. op 0: insert or refresh, 1: delete.
//!  An IPv4 flow with an IPv4 real is 20 bytes, an IPv6 one 56.
//! ```
//!
//! Types: 1 flows (records); 2 hello (no records: a peer that (re)started
//! asks the others for their flows); 3 alive (no records, once a second:
//! who is in the group); 4 dump end (no records, then 24 bytes: the
//! requester's sender id and epoch and how many records the dump held: the
//! answer to that hello is complete). The tuple is the one the data plane
//! keys flows by: the client's address and port, the VIP and its port, the
//! IP protocol; the real is named by its address, never by a local index,
//! because indexes differ between hosts.
//!
//! **Sender id**: a 64-bit number the host chooses once (the binary derives
//! it from `--address`), stable across restarts, so a receiver keeps one
//! replay window per host and a restart is seen as a new epoch of the same
//! sender, not as an unbounded stream of new senders. It also lets a process
//! drop its own datagrams before opening them ([`parse_header`]).
//!
//! **Epoch**: the sender's start time in nanoseconds; it moves forward with
//! each restart (see [`super::replay`]).
//!
//! **Keys and nonces**: AES-256-GCM through `ring`. Each (sender, epoch)
//! seals under its own key, HKDF-SHA256 of the key file's key with salt
//! `"vc5-flowsync v1"` and info sender ‖ epoch, and the 96-bit nonce is four
//! zero bytes ‖ sequence. So a nonce never repeats under a key as long as a
//! sender numbers its datagrams from 0 within one epoch and one sender id
//! does not start twice within one nanosecond; hosts sharing the key file
//! never share a GCM key. The receiver derives the key once per sender and
//! epoch ([`Opener`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;

use super::keys::{Key, Keyring};

pub const MAGIC: [u8; 4] = *b"VC5F";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 40;
pub const TAG_LEN: usize = 16;
/// Largest datagram accepted or produced (a jumbo frame's payload).
pub const MAX_DATAGRAM: usize = 9000;
/// Default datagram size: fits a 1500-byte Ethernet MTU under IPv6 + UDP.
pub const DEFAULT_MAX_LEN: usize = 1400;
const COUNT_LEN: usize = 2;
const RECORD_FIXED: usize = 8;
const MIN_RECORD: usize = RECORD_FIXED + 12;
/// More records than fit in [`MAX_DATAGRAM`] is malformed on its face.
pub const MAX_RECORDS: usize = (MAX_DATAGRAM - HEADER_LEN - TAG_LEN - COUNT_LEN) / MIN_RECORD;

const FLAG_TUPLE_V6: u8 = 1;
const FLAG_REAL_V6: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    Flows = 1,
    Hello = 2,
    Alive = 3,
    DumpEnd = 4,
}

/// The body of a dump-end message: the dump answering the hello of
/// `requester` in its `epoch` is complete, after `sent` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpEnd {
    pub requester: u64,
    pub epoch: u64,
    pub sent: u64,
}

const DUMP_END_LEN: usize = 24;
const SALT: &[u8] = b"vc5-flowsync v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    Upsert = 0,
    Delete = 1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: MessageType,
    pub key_id: u8,
    pub sender: u64,
    pub epoch: u64,
    pub seq: u64,
    pub time_ms: u64,
}

/// One flow: `saddr`/`daddr` are one family; `real` may be either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    pub real: IpAddr,
    pub op: Op,
}

impl FlowRecord {
    /// Bytes this record takes on the wire.
    pub fn wire_len(&self) -> usize {
        let tuple = if self.saddr.is_ipv6() { 32 } else { 8 };
        let real = if self.real.is_ipv6() { 16 } else { 4 };
        RECORD_FIXED + tuple + real
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub header: Header,
    pub records: Vec<FlowRecord>,
    /// Set for (and only for) a [`MessageType::DumpEnd`].
    pub dump_end: Option<DumpEnd>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("record {index}: client and VIP address are of different families")]
    MixedFamily { index: usize },
    #[error("datagram of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("a {0:?} message carries no records")]
    NotFlows(MessageType),
    #[error("a dump end needs its body, and only a dump end has one")]
    DumpEndBody,
    #[error("AEAD seal failed")]
    Seal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {len} bytes is shorter than header and tag")]
    Short { len: usize },
    #[error("datagram of {len} bytes exceeds {MAX_DATAGRAM}")]
    Oversize { len: usize },
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported version {0}")]
    BadVersion(u8),
    #[error("unknown message type {0}")]
    BadType(u8),
    #[error("reserved header byte is not zero")]
    BadReserved,
    #[error("unknown key id {0}")]
    UnknownKey(u8),
    #[error("authentication failed")]
    Auth,
    #[error("{0} records exceed the limit of {MAX_RECORDS}")]
    TooManyRecords(usize),
    #[error("record {index}: {what}")]
    BadRecord { index: usize, what: &'static str },
    #[error("bytes after the last record")]
    Trailing,
}

impl DecodeError {
    /// A stable name for the drop counter.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Short { .. } => "short",
            DecodeError::Oversize { .. } => "oversize",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::BadVersion(_) => "bad_version",
            DecodeError::BadType(_) => "bad_type",
            DecodeError::BadReserved => "bad_reserved",
            DecodeError::UnknownKey(_) => "unknown_key",
            DecodeError::Auth => "auth",
            DecodeError::TooManyRecords(_) => "too_many_records",
            DecodeError::BadRecord { .. } => "bad_record",
            DecodeError::Trailing => "trailing",
        }
    }
}

impl Header {
    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = self.kind as u8;
        b[6] = self.key_id;
        b[8..16].copy_from_slice(&self.sender.to_be_bytes());
        b[16..24].copy_from_slice(&self.epoch.to_be_bytes());
        b[24..32].copy_from_slice(&self.seq.to_be_bytes());
        b[32..40].copy_from_slice(&self.time_ms.to_be_bytes());
        b
    }

    fn nonce(&self) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.seq.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }
}

/// The GCM key of one sender's epoch under a key file's key.
fn session_key(key: &Key, sender: u64, epoch: u64) -> LessSafeKey {
    let mut info = [0u8; 16];
    info[..8].copy_from_slice(&sender.to_be_bytes());
    info[8..].copy_from_slice(&epoch.to_be_bytes());
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(&key.0);
    let parts = [&info[..]];
    let okm = prk
        .expand(&parts, &AES_256_GCM)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    LessSafeKey::new(UnboundKey::from(okm))
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// Checks and returns the clear header without opening the datagram, e.g.
/// to drop one's own datagrams or pick the key.
pub fn parse_header(bytes: &[u8]) -> Result<Header, DecodeError> {
    let len = bytes.len();
    if len > MAX_DATAGRAM {
        return Err(DecodeError::Oversize { len });
    }
    if len < HEADER_LEN + TAG_LEN {
        return Err(DecodeError::Short { len });
    }
    if bytes[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if bytes[4] != VERSION {
        return Err(DecodeError::BadVersion(bytes[4]));
    }
    let kind = match bytes[5] {
        1 => MessageType::Flows,
        2 => MessageType::Hello,
        3 => MessageType::Alive,
        4 => MessageType::DumpEnd,
        t => return Err(DecodeError::BadType(t)),
    };
    if bytes[7] != 0 {
        return Err(DecodeError::BadReserved);
    }
    Ok(Header {
        kind,
        key_id: bytes[6],
        sender: be64(&bytes[8..]),
        epoch: be64(&bytes[16..]),
        seq: be64(&bytes[24..]),
        time_ms: be64(&bytes[32..]),
    })
}

/// Seals one datagram. The caller owns the sequence number; [`Sealer`]
/// keeps it for a sending process.
pub fn encode(header: &Header, records: &[FlowRecord], key: &Key) -> Result<Vec<u8>, EncodeError> {
    encode_with(
        header,
        records,
        None,
        &session_key(key, header.sender, header.epoch),
    )
}

fn encode_with(
    header: &Header,
    records: &[FlowRecord],
    dump_end: Option<&DumpEnd>,
    key: &LessSafeKey,
) -> Result<Vec<u8>, EncodeError> {
    if header.kind != MessageType::Flows && !records.is_empty() {
        return Err(EncodeError::NotFlows(header.kind));
    }
    if (header.kind == MessageType::DumpEnd) != dump_end.is_some() {
        return Err(EncodeError::DumpEndBody);
    }
    let body: usize = records.iter().map(FlowRecord::wire_len).sum::<usize>()
        + dump_end.map_or(0, |_| DUMP_END_LEN);
    let len = HEADER_LEN + COUNT_LEN + body + TAG_LEN;
    if len > MAX_DATAGRAM {
        return Err(EncodeError::TooLarge {
            len,
            max: MAX_DATAGRAM,
        });
    }
    let aad = header.to_bytes();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&aad);
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    for (index, r) in records.iter().enumerate() {
        write_record(&mut out, r).ok_or(EncodeError::MixedFamily { index })?;
    }
    if let Some(d) = dump_end {
        for v in [d.requester, d.epoch, d.sent] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    let (head, plain) = out.split_at_mut(HEADER_LEN);
    let tag = key
        .seal_in_place_separate_tag(header.nonce(), Aad::from(&*head), plain)
        .map_err(|_| EncodeError::Seal)?;
    out.extend_from_slice(tag.as_ref());
    debug_assert_eq!(out.len(), len);
    Ok(out)
}

fn write_record(out: &mut Vec<u8>, r: &FlowRecord) -> Option<()> {
    let tuple_v6 = match (r.saddr, r.daddr) {
        (IpAddr::V4(_), IpAddr::V4(_)) => false,
        (IpAddr::V6(_), IpAddr::V6(_)) => true,
        _ => return None,
    };
    let flags =
        if tuple_v6 { FLAG_TUPLE_V6 } else { 0 } | if r.real.is_ipv6() { FLAG_REAL_V6 } else { 0 };
    out.extend_from_slice(&[flags, r.op as u8, r.protocol, 0]);
    out.extend_from_slice(&r.sport.to_be_bytes());
    out.extend_from_slice(&r.dport.to_be_bytes());
    for a in [r.saddr, r.daddr, r.real] {
        match a {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
        }
    }
    Some(())
}

/// Checks the header, opens the datagram with the key its id names and
/// parses its records. Replay checks are the caller's next step. Derives
/// the session key every time: a receiving process uses [`Opener`].
pub fn decode(bytes: &[u8], keyring: &Keyring) -> Result<Datagram, DecodeError> {
    Opener::new(keyring).open(bytes)
}

/// Session keys cached per (key id, sender, epoch): at most this many.
const OPENER_CACHE: usize = 1024;

/// A receiver's opening state: its keyring and the session keys of the
/// senders it has heard. Only keys that opened a datagram are cached, so
/// forged headers cost a derivation each but evict nothing useful for long.
pub struct Opener {
    keyring: Keyring,
    cache: HashMap<(u8, u64, u64), LessSafeKey>,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("keys", &self.keyring.ids().collect::<Vec<_>>())
            .field("sessions", &self.cache.len())
            .finish()
    }
}

impl Opener {
    pub fn new(keyring: &Keyring) -> Self {
        Opener {
            keyring: keyring.clone(),
            cache: HashMap::new(),
        }
    }

    /// Takes a re-read key file: datagrams under a key id it no longer
    /// lists stop opening at once.
    pub fn rekey(&mut self, keyring: &Keyring) {
        self.keyring = keyring.clone();
        self.cache.clear();
    }

    /// Checks the clear header, opens the datagram and parses its body.
    pub fn open(&mut self, bytes: &[u8]) -> Result<Datagram, DecodeError> {
        let header = parse_header(bytes)?;
        let id = (header.key_id, header.sender, header.epoch);
        let mut buf = bytes[HEADER_LEN..].to_vec();
        let plain_len = {
            let fresh;
            let key = match self.cache.get(&id) {
                Some(k) => k,
                None => {
                    let master = self
                        .keyring
                        .get(header.key_id)
                        .ok_or(DecodeError::UnknownKey(header.key_id))?;
                    fresh = session_key(master, header.sender, header.epoch);
                    &fresh
                }
            };
            key.open_in_place(header.nonce(), Aad::from(&bytes[..HEADER_LEN]), &mut buf)
                .map_err(|_| DecodeError::Auth)?
                .len()
        };
        if !self.cache.contains_key(&id) {
            if self.cache.len() >= OPENER_CACHE {
                self.cache.clear();
            }
            let master = self.keyring.get(header.key_id).expect("opened with it");
            self.cache
                .insert(id, session_key(master, header.sender, header.epoch));
        }
        let plain = &buf[..plain_len];
        let (records, dump_end) = if header.kind == MessageType::DumpEnd {
            let body = match plain {
                [0, 0, body @ ..] if body.len() == DUMP_END_LEN => body,
                _ => {
                    return Err(DecodeError::BadRecord {
                        index: 0,
                        what: "dump end body",
                    });
                }
            };
            let d = DumpEnd {
                requester: be64(&body[..8]),
                epoch: be64(&body[8..16]),
                sent: be64(&body[16..]),
            };
            (Vec::new(), Some(d))
        } else {
            (parse_records(plain)?, None)
        };
        if header.kind != MessageType::Flows && !records.is_empty() {
            return Err(DecodeError::BadRecord {
                index: 0,
                what: "records in a message that carries none",
            });
        }
        Ok(Datagram {
            header,
            records,
            dump_end,
        })
    }
}

/// Parses opened plaintext: a count, then exactly that many records.
pub(crate) fn parse_records(plain: &[u8]) -> Result<Vec<FlowRecord>, DecodeError> {
    let Some((count, mut rest)) = plain.split_first_chunk::<COUNT_LEN>() else {
        return Err(DecodeError::BadRecord {
            index: 0,
            what: "no record count",
        });
    };
    let count = u16::from_be_bytes(*count) as usize;
    if count > MAX_RECORDS {
        return Err(DecodeError::TooManyRecords(count));
    }
    let mut records = Vec::with_capacity(count);
    for index in 0..count {
        let bad = |what| DecodeError::BadRecord { index, what };
        let Some((fixed, tail)) = rest.split_first_chunk::<RECORD_FIXED>() else {
            return Err(bad("truncated"));
        };
        let [flags, op, protocol, reserved, sp0, sp1, dp0, dp1] = *fixed;
        if flags & !(FLAG_TUPLE_V6 | FLAG_REAL_V6) != 0 {
            return Err(bad("unknown flags"));
        }
        if reserved != 0 {
            return Err(bad("reserved byte not zero"));
        }
        let op = match op {
            0 => Op::Upsert,
            1 => Op::Delete,
            _ => return Err(bad("unknown op")),
        };
        let alen = if flags & FLAG_TUPLE_V6 != 0 { 16 } else { 4 };
        let rlen = if flags & FLAG_REAL_V6 != 0 { 16 } else { 4 };
        if tail.len() < 2 * alen + rlen {
            return Err(bad("truncated"));
        }
        let (addrs, tail) = tail.split_at(2 * alen + rlen);
        records.push(FlowRecord {
            saddr: ip(&addrs[..alen]),
            daddr: ip(&addrs[alen..2 * alen]),
            sport: u16::from_be_bytes([sp0, sp1]),
            dport: u16::from_be_bytes([dp0, dp1]),
            protocol,
            real: ip(&addrs[2 * alen..]),
            op,
        });
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(DecodeError::Trailing);
    }
    Ok(records)
}

fn ip(b: &[u8]) -> IpAddr {
    match b.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).expect("4 bytes"))),
        _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes"))),
    }
}

/// A sender's sealing state: its key, identity, epoch and next sequence.
#[derive(Debug)]
pub struct Sealer {
    key_id: u8,
    key: LessSafeKey,
    sender: u64,
    epoch: u64,
    next_seq: u64,
}

impl Sealer {
    /// Seals with `keyring`'s first key.
    pub fn new(keyring: &Keyring, sender: u64, epoch: u64) -> Self {
        let (key_id, key) = keyring.sealing();
        Sealer {
            key_id,
            key: session_key(key, sender, epoch),
            sender,
            epoch,
            next_seq: 0,
        }
    }

    /// Switches to a re-read keyring's first key; the sequence goes on, so
    /// the receivers' windows need no reset.
    pub fn rekey(&mut self, keyring: &Keyring) {
        let (key_id, key) = keyring.sealing();
        self.key_id = key_id;
        self.key = session_key(key, self.sender, self.epoch);
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn header(&mut self, kind: MessageType, time_ms: u64) -> Header {
        let seq = self.next_seq;
        self.next_seq += 1;
        Header {
            kind,
            key_id: self.key_id,
            sender: self.sender,
            epoch: self.epoch,
            seq,
            time_ms,
        }
    }

    /// "I (re)started: send me your flows."
    pub fn hello(&mut self, time_ms: u64) -> Vec<u8> {
        let h = self.header(MessageType::Hello, time_ms);
        encode_with(&h, &[], None, &self.key).expect("an empty hello always fits")
    }

    /// "I am here" (once a second).
    pub fn alive(&mut self, time_ms: u64) -> Vec<u8> {
        let h = self.header(MessageType::Alive, time_ms);
        encode_with(&h, &[], None, &self.key).expect("an empty alive always fits")
    }

    /// "My answer to your hello is complete."
    pub fn dump_end(&mut self, d: &DumpEnd, time_ms: u64) -> Vec<u8> {
        let h = self.header(MessageType::DumpEnd, time_ms);
        encode_with(&h, &[], Some(d), &self.key).expect("a dump end always fits")
    }

    /// Packs `records` into as few datagrams of at most `max_len` bytes as
    /// the records' order allows, one sequence number each.
    pub fn seal_flows(
        &mut self,
        records: &[FlowRecord],
        time_ms: u64,
        max_len: usize,
    ) -> Result<Vec<Vec<u8>>, EncodeError> {
        let max_len = max_len.min(MAX_DATAGRAM);
        let room = max_len.saturating_sub(HEADER_LEN + COUNT_LEN + TAG_LEN);
        let mut out = Vec::new();
        let mut start = 0;
        while start < records.len() {
            let mut used = 0;
            let mut end = start;
            while end < records.len() && used + records[end].wire_len() <= room {
                used += records[end].wire_len();
                end += 1;
            }
            if end == start {
                return Err(EncodeError::TooLarge {
                    len: HEADER_LEN + COUNT_LEN + TAG_LEN + records[start].wire_len(),
                    max: max_len,
                });
            }
            let h = self.header(MessageType::Flows, time_ms);
            out.push(encode_with(&h, &records[start..end], None, &self.key)?);
            start = end;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fill: u8) -> Key {
        Key::new(std::array::from_fn(|i| fill.wrapping_add(i as u8)))
    }

    fn ring(keys: &[(u8, u8)]) -> Keyring {
        Keyring::new(keys.iter().map(|&(id, fill)| (id, key(fill))).collect()).unwrap()
    }

    fn header() -> Header {
        Header {
            kind: MessageType::Flows,
            key_id: 7,
            sender: 0x0102_0304_0506_0708,
            epoch: 0x1122_3344_5566_7788,
            seq: 42,
            time_ms: 1_800_000_000_000,
        }
    }

    fn records() -> Vec<FlowRecord> {
        vec![
            FlowRecord {
                saddr: "192.0.2.1".parse().unwrap(),
                daddr: "198.51.100.10".parse().unwrap(),
                sport: 40000,
                dport: 80,
                protocol: 6,
                real: "10.0.0.2".parse().unwrap(),
                op: Op::Upsert,
            },
            FlowRecord {
                saddr: "2001:db8::1".parse().unwrap(),
                daddr: "2001:db8::80".parse().unwrap(),
                sport: 5353,
                dport: 53,
                protocol: 17,
                real: "2001:db8:1::2".parse().unwrap(),
                op: Op::Delete,
            },
            FlowRecord {
                saddr: "2001:db8::2".parse().unwrap(),
                daddr: "2001:db8::80".parse().unwrap(),
                sport: 1,
                dport: 443,
                protocol: 6,
                real: "10.0.0.3".parse().unwrap(),
                op: Op::Upsert,
            },
        ]
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The bytes of `header()` + `records()` sealed with `key(0)`, checked
    /// in; the same bytes came from an independent Python implementation
    /// (the `cryptography` package's HKDF-SHA256 and AES-256-GCM).
    const VECTOR: &str = concat!(
        "564335460101070001020304050607081122334455667788000000000000002a",
        "000001a3185c5000b860ab0735d141f4c51760baaab28835f7d8ca85f0142837",
        "6425ec8d764cc5f0297aead1e8e124610e01dae9247fcaf995e5450fb9b6ef7d",
        "154e694204f16473695dd0f176a3ff6784e7ec2caa80866361f24485bb436dde",
        "514de34d6668b6e66438b2a036b5f2126d33d8af9bb6af59fa4e340ca52f59ad",
        "57aec5b5d52db7bceba4cd9a511184f40cac",
    );

    #[test]
    fn fixed_vector_both_ways() {
        let bytes = encode(&header(), &records(), &key(0)).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 2 + 20 + 56 + 44 + TAG_LEN);
        // The clear header, byte by byte as documented.
        assert_eq!(
            hex(&bytes[..HEADER_LEN]),
            concat!(
                "56433546",
                "01",
                "01",
                "07",
                "00",
                "0102030405060708",
                "1122334455667788",
                "000000000000002a",
                "000001a3185c5000"
            )
        );
        assert_eq!(hex(&bytes), VECTOR);
        let mut from_vector = Vec::new();
        for i in (0..VECTOR.len()).step_by(2) {
            from_vector.push(u8::from_str_radix(&VECTOR[i..i + 2], 16).unwrap());
        }
        let d = decode(&from_vector, &ring(&[(7, 0)])).unwrap();
        assert_eq!(d.header, header());
        assert_eq!(d.records, records());
    }

    #[test]
    fn plaintext_layout() {
        let mut plain = Vec::new();
        write_record(&mut plain, &records()[0]).unwrap();
        assert_eq!(
            hex(&plain),
            concat!(
                "00", "00", "06", "00", "9c40", "0050", "c0000201", "c633640a", "0a000002"
            )
        );
        let mut plain = Vec::new();
        write_record(&mut plain, &records()[2]).unwrap();
        assert_eq!(&plain[..4], &[FLAG_TUPLE_V6, 0, 6, 0]);
        assert_eq!(plain.len(), 44);
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let bytes = encode(&header(), &records(), &key(0)).unwrap();
        let keys = ring(&[(7, 0), (6, 0)]);
        for i in 0..bytes.len() {
            // Every single-bit flip, and the whole byte inverted.
            for mask in [1, 2, 4, 8, 16, 32, 64, 128, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= mask;
                let err = decode(&b, &keys).unwrap_err();
                let other_type = i == 5 && (1..=4).contains(&(bytes[5] ^ mask));
                if i >= 8 || i == 6 || other_type {
                    // Ids, epoch, sequence, time, body, tag and another
                    // valid type: only the AEAD (or the key lookup) can tell.
                    assert!(
                        matches!(err, DecodeError::Auth | DecodeError::UnknownKey(_)),
                        "byte {i} mask {mask:#x}: {err:?}"
                    );
                } else {
                    assert!(
                        !matches!(err, DecodeError::Auth),
                        "byte {i} mask {mask:#x} should fail the clear checks: {err:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_or_unknown_key() {
        let bytes = encode(&header(), &records(), &key(0)).unwrap();
        assert_eq!(
            decode(&bytes, &ring(&[(8, 0)])),
            Err(DecodeError::UnknownKey(7))
        );
        assert_eq!(decode(&bytes, &ring(&[(7, 1)])), Err(DecodeError::Auth));
    }

    #[test]
    fn key_rotation() {
        let old_first = ring(&[(1, 10), (2, 20)]);
        let both_new_first = ring(&[(2, 20), (1, 10)]);
        let only_new = ring(&[(2, 20)]);
        let mut sender = Sealer::new(&old_first, 5, 1);
        let sealed = sender.seal_flows(&records(), 0, DEFAULT_MAX_LEN).unwrap();
        assert_eq!(sealed.len(), 1);
        assert_eq!(
            decode(&sealed[0], &both_new_first).unwrap().records,
            records()
        );
        assert_eq!(
            decode(&sealed[0], &only_new),
            Err(DecodeError::UnknownKey(1))
        );
        // After SIGHUP the sender seals with the new first key; the sequence goes on.
        sender.rekey(&both_new_first);
        let sealed = sender.seal_flows(&records(), 0, DEFAULT_MAX_LEN).unwrap();
        let d = decode(&sealed[0], &only_new).unwrap();
        assert_eq!((d.header.key_id, d.header.seq), (2, 1));
        assert_eq!(decode(&sealed[0], &old_first).unwrap().records, records());
    }

    #[test]
    fn batches_split_to_fit_max_len() {
        let keys = ring(&[(0, 0)]);
        let mut s = Sealer::new(&keys, 1, 1);
        let many: Vec<FlowRecord> = (0..500u16)
            .map(|i| FlowRecord {
                sport: i,
                ..records()[(i % 3) as usize]
            })
            .collect();
        for max_len in [120, 200, DEFAULT_MAX_LEN, MAX_DATAGRAM, 100_000] {
            let first = s.next_seq();
            let sealed = s.seal_flows(&many, 0, max_len).unwrap();
            let mut back = Vec::new();
            for (n, d) in sealed.iter().enumerate() {
                assert!(
                    d.len() <= max_len.min(MAX_DATAGRAM),
                    "{} > {max_len}",
                    d.len()
                );
                let d = decode(d, &keys).unwrap();
                assert_eq!(d.header.seq, first + n as u64);
                back.extend(d.records);
            }
            assert_eq!(back, many, "max_len {max_len}");
        }
        // 1400 bytes hold 67 IPv4 records: (1400 - 40 - 2 - 16) / 20.
        let v4 = vec![records()[0]; 68];
        assert_eq!(s.seal_flows(&v4, 0, DEFAULT_MAX_LEN).unwrap().len(), 2);
        assert_eq!(
            s.seal_flows(&v4[..67], 0, DEFAULT_MAX_LEN).unwrap().len(),
            1
        );
        assert!(matches!(
            s.seal_flows(&v4, 0, 60),
            Err(EncodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn hello_and_bad_input() {
        let keys = ring(&[(0, 0)]);
        let mut s = Sealer::new(&keys, 1, 1);
        let d = decode(&s.hello(5), &keys).unwrap();
        assert_eq!(d.header.kind, MessageType::Hello);
        assert!(d.records.is_empty());
        let mut mixed = records()[0];
        mixed.daddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            encode(&header(), &[records()[0], mixed], &key(0)),
            Err(EncodeError::MixedFamily { index: 1 })
        );
        assert_eq!(decode(&[0; 10], &keys), Err(DecodeError::Short { len: 10 }));
        assert_eq!(
            decode(&vec![0; MAX_DATAGRAM + 1], &keys),
            Err(DecodeError::Oversize {
                len: MAX_DATAGRAM + 1
            })
        );
        let good = encode(&header(), &records(), &key(0)).unwrap();
        for cut in 0..good.len() {
            assert!(decode(&good[..cut], &ring(&[(7, 0)])).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn alive_and_dump_end() {
        let keys = ring(&[(0, 0)]);
        let mut s = Sealer::new(&keys, 9, 3);
        let mut o = Opener::new(&keys);
        let d = o.open(&s.alive(7)).unwrap();
        assert_eq!(
            (d.header.kind, d.header.seq, d.dump_end),
            (MessageType::Alive, 0, None)
        );
        let end = DumpEnd {
            requester: 0xaa,
            epoch: 0xbb,
            sent: 100_000,
        };
        let bytes = s.dump_end(&end, 8);
        assert_eq!(bytes.len(), HEADER_LEN + 2 + 24 + TAG_LEN);
        let d = o.open(&bytes).unwrap();
        assert_eq!((d.header.kind, d.header.seq), (MessageType::DumpEnd, 1));
        assert_eq!(d.dump_end, Some(end));
        assert!(d.records.is_empty());
        // Bodies belong to their types only.
        let h = Header {
            kind: MessageType::Alive,
            ..header()
        };
        assert_eq!(
            encode(&h, &records(), &key(0)),
            Err(EncodeError::NotFlows(MessageType::Alive))
        );
        // A session key is per sender and epoch: another epoch's key does
        // not open it, even under the same key file.
        let mut forged = bytes.clone();
        forged[16..24].copy_from_slice(&4u64.to_be_bytes());
        assert_eq!(o.open(&forged), Err(DecodeError::Auth));
        // After a rekey without that key id nothing opens, cached or not.
        o.rekey(&ring(&[(1, 0)]));
        assert_eq!(o.open(&bytes), Err(DecodeError::UnknownKey(0)));
    }

    #[test]
    fn record_parser_errors() {
        let mut one = 1u16.to_be_bytes().to_vec();
        write_record(&mut one, &records()[0]).unwrap();
        assert_eq!(parse_records(&one).unwrap(), vec![records()[0]]);
        let bad = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = one.clone();
            edit(&mut b);
            parse_records(&b).unwrap_err()
        };
        assert_eq!(bad(&|b| b.truncate(1)).reason(), "bad_record");
        assert_eq!(bad(&|b| b.push(0)), DecodeError::Trailing);
        assert_eq!(bad(&|b| b.truncate(21)).reason(), "bad_record");
        // Offsets count the 2-byte record count in front.
        let what = |e: DecodeError| match e {
            DecodeError::BadRecord { index, what } => (index, what),
            e => panic!("{e:?}"),
        };
        assert_eq!(what(bad(&|b| b[2] = 4)), (0, "unknown flags"));
        assert_eq!(what(bad(&|b| b[3] = 2)), (0, "unknown op"));
        assert_eq!(what(bad(&|b| b[5] = 1)), (0, "reserved byte not zero"));
        assert_eq!(what(bad(&|b| b[1] = 2)), (1, "truncated"));
        let n = MAX_RECORDS as u16 + 1;
        assert_eq!(
            bad(&|b| b[..2].copy_from_slice(&n.to_be_bytes())),
            DecodeError::TooManyRecords(n as usize)
        );
    }

    /// SplitMix64: small, seedable, good enough to drive a fuzz loop.
    use vc5_testkit::rng::SplitMix64 as Rng;

    fn fuzz_params() -> (u64, usize) {
        let seed = std::env::var("VC5_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        let iters = std::env::var("VC5_FUZZ_ITERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20_000);
        eprintln!("flowsync fuzz: VC5_FUZZ_SEED={seed} VC5_FUZZ_ITERS={iters}");
        (seed, iters)
    }

    #[test]
    fn fuzz_decode_never_panics_and_accepts_only_the_original() {
        let (seed, iters) = fuzz_params();
        let mut rng = Rng(seed);
        let keys = ring(&[(7, 0)]);
        let good = encode(&header(), &records(), &key(0)).unwrap();
        let want = decode(&good, &keys).unwrap();
        for i in 0..iters {
            let mut b = if i % 4 == 0 {
                // Random bytes, half of them behind a valid clear prefix so
                // that they reach the AEAD.
                let len = rng.below(300);
                let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                if rng.next_u64() & 1 == 1 && len >= 8 {
                    b[..8].copy_from_slice(&good[..8]);
                }
                b
            } else {
                good.clone()
            };
            for _ in 0..1 + rng.below(4) {
                match rng.below(4) {
                    0 if !b.is_empty() => {
                        let at = rng.below(b.len());
                        b[at] ^= 1 << rng.below(8);
                    }
                    1 => b.truncate(rng.below(b.len() + 1)),
                    2 => b.insert(rng.below(b.len() + 1), rng.next_u64() as u8),
                    _ => {
                        let at = rng.below(b.len() + 1);
                        b.splice(at..at, (0..rng.below(16)).map(|_| rng.next_u64() as u8));
                    }
                }
            }
            match decode(&b, &keys) {
                Ok(d) => assert!(
                    b == good && d == want,
                    "seed {seed} iter {i}: forged datagram accepted"
                ),
                Err(e) => assert!(!e.reason().is_empty()),
            }
        }
    }

    /// Whatever the parser accepts re-encodes to the very same bytes, so no
    /// two plaintexts mean the same flows.
    fn check_canonical(plain: &[u8], seed: u64, i: usize) {
        if let Ok(recs) = parse_records(plain) {
            let mut again = (recs.len() as u16).to_be_bytes().to_vec();
            for r in &recs {
                write_record(&mut again, r).unwrap();
            }
            assert_eq!(again, plain, "seed {seed} iter {i}");
        }
    }

    #[test]
    fn fuzz_record_parser_and_round_trip() {
        let (seed, iters) = fuzz_params();
        let mut rng = Rng(seed ^ 0x5555);
        let keys = ring(&[(3, 9)]);
        let mut s = Sealer::new(&keys, 2, 2);
        // Round trips cost ~20x a failed open, so fewer of them.
        for i in 0..iters / 20 {
            // The parser behind the AEAD, on random plaintext.
            let len = rng.below(200);
            let mut plain: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if len >= 2 {
                plain[0] = 0;
                plain[1] = rng.below(6) as u8;
            }
            check_canonical(&plain, seed, i);
            // Random records survive encode and decode unchanged.
            let recs: Vec<FlowRecord> = (0..rng.below(80))
                .map(|_| {
                    let v6 = rng.next_u64() & 1 == 1;
                    let addr = |r: &mut Rng, v6: bool| -> IpAddr {
                        if v6 {
                            Ipv6Addr::from(((r.next_u64() as u128) << 64) | r.next_u64() as u128)
                                .into()
                        } else {
                            Ipv4Addr::from(r.next_u64() as u32).into()
                        }
                    };
                    FlowRecord {
                        saddr: addr(&mut rng, v6),
                        daddr: addr(&mut rng, v6),
                        sport: rng.next_u64() as u16,
                        dport: rng.next_u64() as u16,
                        protocol: rng.next_u64() as u8,
                        real: {
                            let v6 = rng.next_u64() & 1 == 1;
                            addr(&mut rng, v6)
                        },
                        op: if rng.next_u64() & 1 == 1 {
                            Op::Delete
                        } else {
                            Op::Upsert
                        },
                    }
                })
                .collect();
            // The parser on valid plaintext with one byte changed.
            let mut plain = (recs.len() as u16).to_be_bytes().to_vec();
            for r in &recs {
                write_record(&mut plain, r).unwrap();
            }
            let at = rng.below(plain.len());
            plain[at] ^= 1 << rng.below(8);
            check_canonical(&plain, seed, i);
            let mut back = Vec::new();
            for d in s.seal_flows(&recs, 0, DEFAULT_MAX_LEN).unwrap() {
                back.extend(decode(&d, &keys).unwrap().records);
            }
            assert_eq!(back, recs, "seed {seed} iter {i}");
        }
    }
}
