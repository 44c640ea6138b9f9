//! Bytes to messages. Decoding validates what RFC 4271 §6 asks a speaker
//! to validate and reports every failure as a [`DecodeError`] that names the
//! NOTIFICATION to send back. Nothing in here panics on any input: every
//! read goes through a `Reader`, whose reads fail instead.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::codes::{
    Afi, AttrType, CapabilityCode, MessageType, Origin, ParameterType, Safi, SegmentType,
    attr_flags,
};
use super::error::DecodeError;
use super::types::{
    AsSegment, Attribute, Capability, Codec, Message, Notification, Open, Prefix, Update,
};
use super::{HEADER_LEN, MAX_MESSAGE_LEN};

/// A cursor over a byte slice whose reads fail instead of panicking.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (a, b) = self.data.split_at(n);
        self.data = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Checks a header; returns (type, total length) when it is acceptable.
pub fn check_header(h: &[u8; HEADER_LEN]) -> Result<(MessageType, usize), DecodeError> {
    if h[..16].iter().any(|&b| b != 0xff) {
        return Err(DecodeError::ConnectionNotSynchronized);
    }
    let len = u16::from_be_bytes([h[16], h[17]]);
    let kind = MessageType::try_from(h[18]).map_err(DecodeError::BadMessageType)?;
    let l = usize::from(len);
    let ok = match kind {
        MessageType::Open => l >= HEADER_LEN + 10,
        MessageType::Update => l >= HEADER_LEN + 4,
        MessageType::Notification => l >= HEADER_LEN + 2,
        MessageType::Keepalive => l == HEADER_LEN,
        MessageType::RouteRefresh => l == HEADER_LEN + 4,
    };
    if !ok || l > MAX_MESSAGE_LEN {
        return Err(DecodeError::BadMessageLength(len));
    }
    Ok((kind, l))
}

/// Splits complete messages off the front of a byte stream.
///
/// Returns `Ok(Some((message, used)))` for a complete message, `Ok(None)` when
/// more bytes are needed, or the error a NOTIFICATION must report.
pub fn decode(buf: &[u8], codec: Codec) -> Result<Option<(Message, usize)>, DecodeError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(h);
    let (kind, len) = check_header(&header)?;
    let Some(msg) = buf.get(..len) else {
        return Ok(None);
    };
    let body = &msg[HEADER_LEN..];
    let m = decode_body(kind, body, codec)?;
    Ok(Some((m, len)))
}

/// Decodes a message body of type `kind` (header already checked).
pub fn decode_body(kind: MessageType, body: &[u8], codec: Codec) -> Result<Message, DecodeError> {
    match kind {
        MessageType::Open => decode_open(body).map(Message::Open),
        MessageType::Update => decode_update(body, codec).map(Message::Update),
        MessageType::Notification => {
            let mut r = Reader::new(body);
            let code = r.u8().ok_or(DecodeError::Truncated)?;
            let subcode = r.u8().ok_or(DecodeError::Truncated)?;
            // Any pair is taken: a NOTIFICATION is reported, never refused.
            Ok(Message::Notification(Notification {
                kind: (code, subcode).into(),
                data: r.data.to_vec(),
            }))
        }
        MessageType::Keepalive if body.is_empty() => Ok(Message::Keepalive),
        MessageType::RouteRefresh if body.len() == 4 => Ok(Message::RouteRefresh {
            afi: u16::from_be_bytes([body[0], body[1]]).into(),
            safi: body[3].into(),
        }),
        MessageType::Keepalive | MessageType::RouteRefresh => Err(DecodeError::Truncated),
    }
}

fn decode_open(body: &[u8]) -> Result<Open, DecodeError> {
    let mut r = Reader::new(body);
    let short = DecodeError::MalformedOpen("too short");
    let version = r.u8().ok_or(short.clone())?;
    if version != 4 {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let my_as = r.u16().ok_or(short.clone())?;
    let hold_time = r.u16().ok_or(short.clone())?;
    if hold_time == 1 || hold_time == 2 {
        return Err(DecodeError::UnacceptableHoldTime(hold_time));
    }
    let id = r.u32().ok_or(short.clone())?;
    let bgp_id = Ipv4Addr::from(id);
    if id == 0 {
        return Err(DecodeError::BadBgpIdentifier(bgp_id));
    }
    let mut opt_len = usize::from(r.u8().ok_or(short.clone())?);
    // RFC 9072 extended optional parameters: 255, then type 255, 2-octet length.
    let ext = u8::from(ParameterType::ExtendedLength);
    let extended = opt_len == usize::from(ext) && r.data.first() == Some(&ext);
    if extended {
        r.u8();
        opt_len = usize::from(r.u16().ok_or(short.clone())?);
    }
    let params = r.take(opt_len).ok_or(DecodeError::MalformedOpen(
        "optional parameters overrun the message",
    ))?;
    if !r.is_empty() {
        return Err(DecodeError::MalformedOpen(
            "bytes after the optional parameters",
        ));
    }
    let mut p = Reader::new(params);
    let mut capabilities = Vec::new();
    while !p.is_empty() {
        let ptype = p
            .u8()
            .ok_or(DecodeError::MalformedOpen("truncated parameter"))?;
        let plen = if extended {
            p.u16()
        } else {
            p.u8().map(u16::from)
        }
        .ok_or(DecodeError::MalformedOpen("truncated parameter"))?;
        let value = p.take(usize::from(plen)).ok_or(DecodeError::MalformedOpen(
            "parameter overruns the parameters",
        ))?;
        if ParameterType::try_from(ptype) != Ok(ParameterType::Capabilities) {
            return Err(DecodeError::UnsupportedOptionalParameter(ptype));
        }
        let mut c = Reader::new(value);
        while !c.is_empty() {
            let code = c
                .u8()
                .ok_or(DecodeError::MalformedOpen("truncated capability"))?;
            let clen = c
                .u8()
                .ok_or(DecodeError::MalformedOpen("truncated capability"))?;
            let v = c.take(usize::from(clen)).ok_or(DecodeError::MalformedOpen(
                "capability overruns its parameter",
            ))?;
            let cap = match (CapabilityCode::try_from(code), v.len()) {
                (Ok(CapabilityCode::Multiprotocol), 4) => Capability::Multiprotocol {
                    afi: u16::from_be_bytes([v[0], v[1]]).into(),
                    safi: v[3].into(),
                },
                (Ok(CapabilityCode::RouteRefresh), 0) => Capability::RouteRefresh,
                (Ok(CapabilityCode::FourOctetAs), 4) => {
                    Capability::FourOctetAs(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
                }
                _ => Capability::Other {
                    code,
                    value: v.to_vec(),
                },
            };
            capabilities.push(cap);
        }
    }
    Ok(Open {
        version,
        my_as,
        hold_time,
        bgp_id,
        capabilities,
    })
}

fn decode_prefixes(mut r: Reader<'_>, v6: bool) -> Result<Vec<Prefix>, DecodeError> {
    let max = if v6 { 128 } else { 32 };
    let mut out = Vec::new();
    while !r.is_empty() {
        let len = r.u8().ok_or(DecodeError::InvalidNetworkField)?;
        if len > max {
            return Err(DecodeError::InvalidNetworkField);
        }
        let bytes = r
            .take(usize::from(len).div_ceil(8))
            .ok_or(DecodeError::InvalidNetworkField)?;
        let addr = if v6 {
            let mut o = [0u8; 16];
            o[..bytes.len()].copy_from_slice(bytes);
            IpAddr::V6(Ipv6Addr::from(mask(u128::from_be_bytes(o), len, 128)))
        } else {
            let mut o = [0u8; 4];
            o[..bytes.len()].copy_from_slice(bytes);
            let m = mask(u128::from(u32::from_be_bytes(o)), len, 32);
            IpAddr::V4(Ipv4Addr::from(u32::try_from(m).unwrap_or(0)))
        };
        out.push(Prefix { addr, len });
    }
    Ok(out)
}

/// Clears host bits beyond `len` of a `width`-bit address held in a u128.
fn mask(v: u128, len: u8, width: u32) -> u128 {
    let host = width - u32::from(len);
    if host >= 128 { 0 } else { (v >> host) << host }
}

fn decode_segments(v: &[u8], four: bool) -> Result<Vec<AsSegment>, DecodeError> {
    let width = if four { 4 } else { 2 };
    let mut r = Reader::new(v);
    let mut segs = Vec::new();
    while !r.is_empty() {
        let kind = r.u8().ok_or(DecodeError::MalformedAsPath)?;
        let n = r.u8().ok_or(DecodeError::MalformedAsPath)?;
        let Ok(kind) = SegmentType::try_from(kind) else {
            return Err(DecodeError::MalformedAsPath);
        };
        if n == 0 {
            return Err(DecodeError::MalformedAsPath);
        }
        let raw = r
            .take(usize::from(n) * width)
            .ok_or(DecodeError::MalformedAsPath)?;
        let asns = raw
            .chunks_exact(width)
            .map(|c| {
                if four {
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                } else {
                    u32::from(u16::from_be_bytes([c[0], c[1]]))
                }
            })
            .collect();
        segs.push(AsSegment { kind, asns });
    }
    Ok(segs)
}

fn decode_update(body: &[u8], codec: Codec) -> Result<Update, DecodeError> {
    let mut r = Reader::new(body);
    let bad = |m| DecodeError::MalformedAttributeList(m);
    let wlen = r.u16().ok_or(bad("truncated"))?;
    let w = r
        .take(usize::from(wlen))
        .ok_or(bad("withdrawn routes length overruns the message"))?;
    let alen = r.u16().ok_or(bad("truncated"))?;
    let a = r
        .take(usize::from(alen))
        .ok_or(bad("total path attribute length overruns the message"))?;
    let withdrawn = decode_prefixes(Reader::new(w), false)?;
    let nlri = decode_prefixes(r, false)?;
    let mut attributes = Vec::new();
    let mut seen = [false; 256];
    let mut ar = Reader::new(a);
    while !ar.is_empty() {
        let start = ar.data;
        let flags = ar.u8().ok_or(bad("truncated attribute header"))?;
        let code = ar.u8().ok_or(bad("truncated attribute header"))?;
        let len = if flags & attr_flags::EXTENDED_LENGTH != 0 {
            ar.u16()
        } else {
            ar.u8().map(u16::from)
        }
        .ok_or(bad("truncated attribute header"))?;
        let hdr = if flags & attr_flags::EXTENDED_LENGTH != 0 {
            4
        } else {
            3
        };
        let value = ar
            .take(usize::from(len))
            .ok_or(bad("attribute length overruns the attribute list"))?;
        let whole = start[..hdr + usize::from(len)].to_vec();
        if std::mem::replace(&mut seen[usize::from(code)], true) {
            // RFC 4271 §6.3: the same attribute twice is a malformed list.
            return Err(bad("attribute appears twice"));
        }
        attributes.push(decode_attribute(flags, code, value, whole, codec)?);
    }
    let has = |c: AttrType| seen[usize::from(u8::from(c))];
    // Well-known mandatory attributes are required when there is NLRI to
    // carry them (RFC 4271 §6.3; for MP-only UPDATEs, RFC 4760 §7).
    let missing = [AttrType::Origin, AttrType::AsPath, AttrType::NextHop]
        .into_iter()
        .find(|c| !has(*c));
    if let (false, Some(missing)) = (nlri.is_empty(), missing) {
        return Err(DecodeError::MissingWellKnown(missing));
    }
    Ok(Update {
        withdrawn,
        attributes,
        nlri,
    })
}

fn decode_attribute(
    flags: u8,
    code: u8,
    v: &[u8],
    whole: Vec<u8>,
    codec: Codec,
) -> Result<Attribute, DecodeError> {
    use attr_flags::{EXTENDED_LENGTH, OPTIONAL, TRANSITIVE};
    // Well-known attributes must be transitive and not optional.
    let well_known = |expect_len: Option<usize>| -> Result<(), DecodeError> {
        if flags & (OPTIONAL | TRANSITIVE) != TRANSITIVE {
            return Err(DecodeError::AttributeFlags(whole.clone()));
        }
        if expect_len.is_some_and(|l| l != v.len()) {
            return Err(DecodeError::AttributeLength(whole.clone()));
        }
        Ok(())
    };
    let u32_at = |v: &[u8]| u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    Ok(match AttrType::try_from(code).ok() {
        Some(AttrType::Origin) => {
            well_known(Some(1))?;
            let Ok(origin) = Origin::try_from(v[0]) else {
                return Err(DecodeError::InvalidOrigin(whole));
            };
            Attribute::Origin(origin)
        }
        Some(AttrType::AsPath) => {
            well_known(None)?;
            Attribute::AsPath(decode_segments(v, codec.four_octet_as)?)
        }
        Some(AttrType::NextHop) => {
            well_known(Some(4))?;
            Attribute::NextHop(Ipv4Addr::new(v[0], v[1], v[2], v[3]))
        }
        Some(AttrType::LocalPref) => {
            well_known(Some(4))?;
            Attribute::LocalPref(u32_at(v))
        }
        Some(AttrType::MultiExitDisc) => {
            if v.len() != 4 {
                return Err(DecodeError::AttributeLength(whole));
            }
            Attribute::Med(u32_at(v))
        }
        Some(AttrType::Communities) => {
            if !v.len().is_multiple_of(4) {
                return Err(DecodeError::AttributeLength(whole));
            }
            Attribute::Communities(v.chunks_exact(4).map(u32_at).collect())
        }
        Some(AttrType::MpReachNlri) => {
            let mut r = Reader::new(v);
            let parsed = (|| {
                let afi = Afi::from(r.u16()?);
                let safi = Safi::from(r.u8()?);
                let nhl = r.u8()?;
                let nh = r.take(usize::from(nhl))?.to_vec();
                r.u8()?; // reserved
                Some((afi, safi, nh))
            })();
            let Some((afi, safi, next_hop)) = parsed else {
                return Err(DecodeError::OptionalAttribute(whole));
            };
            let nlri = match (afi, safi) {
                (Afi::Ipv4 | Afi::Ipv6, Safi::Unicast) => decode_prefixes(r, afi == Afi::Ipv6)?,
                // A family we did not negotiate: keep no prefixes.
                _ => Vec::new(),
            };
            Attribute::MpReach {
                afi,
                safi,
                next_hop,
                nlri,
            }
        }
        Some(AttrType::MpUnreachNlri) => {
            let mut r = Reader::new(v);
            let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
                return Err(DecodeError::OptionalAttribute(whole));
            };
            let (afi, safi) = (Afi::from(afi), Safi::from(safi));
            let withdrawn = match (afi, safi) {
                (Afi::Ipv4 | Afi::Ipv6, Safi::Unicast) => decode_prefixes(r, afi == Afi::Ipv6)?,
                _ => Vec::new(),
            };
            Attribute::MpUnreach {
                afi,
                safi,
                withdrawn,
            }
        }
        Some(AttrType::As4Path) => Attribute::As4Path(
            decode_segments(v, true).map_err(|_| DecodeError::OptionalAttribute(whole))?,
        ),
        Some(AttrType::AtomicAggregate) => {
            well_known(Some(0))?;
            Attribute::Other {
                flags: flags & !EXTENDED_LENGTH,
                code,
                value: vec![],
            }
        }
        // Nothing vc5 reads: AGGREGATOR, or a code it does not know. Kept raw
        // when optional; a well-known attribute it does not know is an error.
        Some(AttrType::Aggregator) | None => {
            if flags & OPTIONAL == 0 {
                return Err(DecodeError::UnrecognizedWellKnown(whole));
            }
            Attribute::Other {
                // Extended Length is how the length was written, not what the
                // attribute is: the encoder picks it from the value's size.
                flags: flags & !EXTENDED_LENGTH,
                code,
                value: v.to_vec(),
            }
        }
    })
}
