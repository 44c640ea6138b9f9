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
mod tests;
