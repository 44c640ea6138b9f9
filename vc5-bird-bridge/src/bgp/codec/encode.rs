//! Messages to bytes. Every length field is checked against what it can
//! hold, and the whole message against [`MAX_MESSAGE_LEN`]: what does not
//! fit is an [`EncodeError`], never a saturated length or a cut value.

use std::net::IpAddr;

use super::codes::{AttrType, CapabilityCode, MessageType, ParameterType, attr_flags};
use super::error::EncodeError;
use super::types::{AS_TRANS, AsSegment, Attribute, Capability, Codec, Message, Prefix};
use super::{HEADER_LEN, MAX_MESSAGE_LEN};

/// The most octets of capabilities one OPEN carries: the optional
/// parameters' 1-octet length, less the Capabilities parameter's own type
/// and length octets.
const MAX_CAPABILITIES_LEN: usize = u8::MAX as usize - 2;

impl Prefix {
    pub(super) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let (octets, width) = match self.addr {
            IpAddr::V4(a) => {
                let mut o = [0u8; 16];
                o[..4].copy_from_slice(&a.octets());
                (o, 4)
            }
            IpAddr::V6(a) => (a.octets(), 16),
        };
        let n = usize::from(self.len).div_ceil(8);
        if n > width {
            return Err(EncodeError::PrefixLength(*self));
        }
        out.push(self.len);
        out.extend_from_slice(&octets[..n]);
        Ok(())
    }
}

/// The header and `body`, once the total is known to fit.
fn frame(kind: MessageType, body: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let len = HEADER_LEN + body.len();
    let too_long = EncodeError::MessageTooLong { kind, len };
    if len > MAX_MESSAGE_LEN {
        return Err(too_long);
    }
    let len16 = u16::try_from(len).map_err(|_| too_long)?;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&len16.to_be_bytes());
    out.push(u8::from(kind));
    out.extend_from_slice(body);
    Ok(out)
}

fn encode_capability(c: &Capability, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let (code, value): (u8, Vec<u8>) = match c {
        Capability::Multiprotocol { afi, safi } => {
            let a = u16::from(*afi).to_be_bytes();
            (
                CapabilityCode::Multiprotocol.into(),
                vec![a[0], a[1], 0, u8::from(*safi)],
            )
        }
        Capability::RouteRefresh => (CapabilityCode::RouteRefresh.into(), vec![]),
        Capability::FourOctetAs(asn) => (
            CapabilityCode::FourOctetAs.into(),
            asn.to_be_bytes().to_vec(),
        ),
        Capability::Other { code, value } => (*code, value.clone()),
    };
    let len = u8::try_from(value.len()).map_err(|_| EncodeError::CapabilityTooLong {
        code,
        len: value.len(),
    })?;
    out.push(code);
    out.push(len);
    out.extend_from_slice(&value);
    Ok(())
}

fn encode_segments(segs: &[AsSegment], four: bool, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    for s in segs {
        let n = u8::try_from(s.asns.len())
            .ok()
            .filter(|n| *n > 0)
            .ok_or(EncodeError::SegmentLength { len: s.asns.len() })?;
        out.push(u8::from(s.kind));
        out.push(n);
        for a in &s.asns {
            if four {
                out.extend_from_slice(&a.to_be_bytes());
            } else {
                // RFC 6793 §4.2.2: on a 2-octet session an AS beyond 16 bits
                // is AS_TRANS (its real value goes in AS4_PATH).
                out.extend_from_slice(&u16::try_from(*a).unwrap_or(AS_TRANS).to_be_bytes());
            }
        }
    }
    Ok(())
}

pub(super) fn encode_attribute(
    a: &Attribute,
    codec: Codec,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    use attr_flags::{EXTENDED_LENGTH, OPTIONAL, TRANSITIVE};
    let mut value = Vec::new();
    let (flags, code): (u8, u8) = match a {
        Attribute::Origin(o) => {
            value.push(u8::from(*o));
            (TRANSITIVE, AttrType::Origin.into())
        }
        Attribute::AsPath(segs) => {
            encode_segments(segs, codec.four_octet_as, &mut value)?;
            (TRANSITIVE, AttrType::AsPath.into())
        }
        Attribute::NextHop(nh) => {
            value.extend_from_slice(&nh.octets());
            (TRANSITIVE, AttrType::NextHop.into())
        }
        Attribute::Med(m) => {
            value.extend_from_slice(&m.to_be_bytes());
            (OPTIONAL, AttrType::MultiExitDisc.into())
        }
        Attribute::LocalPref(l) => {
            value.extend_from_slice(&l.to_be_bytes());
            (TRANSITIVE, AttrType::LocalPref.into())
        }
        Attribute::Communities(cs) => {
            for c in cs {
                value.extend_from_slice(&c.to_be_bytes());
            }
            (OPTIONAL | TRANSITIVE, AttrType::Communities.into())
        }
        Attribute::MpReach {
            afi,
            safi,
            next_hop,
            nlri,
        } => {
            let nhl = u8::try_from(next_hop.len()).map_err(|_| EncodeError::NextHopTooLong {
                len: next_hop.len(),
            })?;
            value.extend_from_slice(&u16::from(*afi).to_be_bytes());
            value.push(u8::from(*safi));
            value.push(nhl);
            value.extend_from_slice(next_hop);
            value.push(0); // reserved
            for p in nlri {
                p.encode(&mut value)?;
            }
            (OPTIONAL, AttrType::MpReachNlri.into())
        }
        Attribute::MpUnreach {
            afi,
            safi,
            withdrawn,
        } => {
            value.extend_from_slice(&u16::from(*afi).to_be_bytes());
            value.push(u8::from(*safi));
            for p in withdrawn {
                p.encode(&mut value)?;
            }
            (OPTIONAL, AttrType::MpUnreachNlri.into())
        }
        Attribute::As4Path(segs) => {
            encode_segments(segs, true, &mut value)?;
            (OPTIONAL | TRANSITIVE, AttrType::As4Path.into())
        }
        Attribute::Other {
            flags,
            code,
            value: v,
        } => {
            value.extend_from_slice(v);
            (*flags & !EXTENDED_LENGTH, *code)
        }
    };
    // The length's width is how the value is written, not what the
    // attribute is: one octet when it fits, else Extended Length.
    if let Ok(len) = u8::try_from(value.len()) {
        out.extend_from_slice(&[flags, code, len]);
    } else {
        let len = u16::try_from(value.len()).map_err(|_| EncodeError::AttributeTooLong {
            code,
            len: value.len(),
        })?;
        out.extend_from_slice(&[flags | EXTENDED_LENGTH, code]);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&value);
    Ok(())
}

/// The encoded length of `attrs` (for splitting routes over UPDATEs).
pub(super) fn encoded_attrs_len(attrs: &[Attribute], codec: Codec) -> Result<usize, EncodeError> {
    let mut v = Vec::new();
    for a in attrs {
        encode_attribute(a, codec, &mut v)?;
    }
    Ok(v.len())
}

impl Message {
    /// The message on the wire, header included, or why it cannot be sent.
    pub fn encode(&self, codec: Codec) -> Result<Vec<u8>, EncodeError> {
        let kind = self.kind();
        match self {
            Message::Open(o) => {
                let mut caps = Vec::new();
                for c in &o.capabilities {
                    encode_capability(c, &mut caps)?;
                }
                let mut body = vec![o.version];
                body.extend_from_slice(&o.my_as.to_be_bytes());
                body.extend_from_slice(&o.hold_time.to_be_bytes());
                body.extend_from_slice(&o.bgp_id.octets());
                if caps.is_empty() {
                    body.push(0);
                } else {
                    // All capabilities in one Capabilities parameter.
                    let len = u8::try_from(caps.len())
                        .ok()
                        .filter(|_| caps.len() <= MAX_CAPABILITIES_LEN)
                        .ok_or(EncodeError::CapabilitiesTooLong { len: caps.len() })?;
                    body.push(len + 2);
                    body.push(ParameterType::Capabilities.into());
                    body.push(len);
                    body.extend_from_slice(&caps);
                }
                frame(kind, &body)
            }
            Message::Update(u) => {
                let mut w = Vec::new();
                for p in &u.withdrawn {
                    p.encode(&mut w)?;
                }
                let mut a = Vec::new();
                for at in &u.attributes {
                    encode_attribute(at, codec, &mut a)?;
                }
                let mut nlri = Vec::new();
                for p in &u.nlri {
                    p.encode(&mut nlri)?;
                }
                // Either field's length fits 16 bits whenever the message
                // fits MAX_MESSAGE_LEN, so that one check covers all three.
                let len = HEADER_LEN + 4 + w.len() + a.len() + nlri.len();
                let too_long = || EncodeError::MessageTooLong { kind, len };
                if len > MAX_MESSAGE_LEN {
                    return Err(too_long());
                }
                let wlen = u16::try_from(w.len()).map_err(|_| too_long())?;
                let alen = u16::try_from(a.len()).map_err(|_| too_long())?;
                let mut body = Vec::with_capacity(len - HEADER_LEN);
                body.extend_from_slice(&wlen.to_be_bytes());
                body.extend_from_slice(&w);
                body.extend_from_slice(&alen.to_be_bytes());
                body.extend_from_slice(&a);
                body.extend_from_slice(&nlri);
                frame(kind, &body)
            }
            Message::Notification(n) => {
                let mut body = vec![n.code(), n.subcode()];
                body.extend_from_slice(&n.data);
                frame(kind, &body)
            }
            Message::Keepalive => frame(kind, &[]),
            Message::RouteRefresh { afi, safi } => {
                let a = u16::from(*afi).to_be_bytes();
                frame(kind, &[a[0], a[1], 0, u8::from(*safi)])
            }
        }
    }
}
