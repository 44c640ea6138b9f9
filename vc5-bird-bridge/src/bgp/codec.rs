//! BGP-4 messages (RFC 4271) with 4-octet AS numbers (RFC 6793), capabilities
//! (RFC 5492), multiprotocol extensions (RFC 4760) and communities (RFC 1997):
//! encoding, framing and decoding.
//!
//! Decoding validates what RFC 4271 §6 asks a speaker to validate and reports
//! every failure as a [`DecodeError`] that names the NOTIFICATION (error code,
//! subcode and data) to send back ([`DecodeError::notification`]). Nothing in
//! here panics on any input; `tests` feeds it truncations and random bytes.
//!
//! Why not `routecore` at run time: its 0.7 message builder places IPv4
//! unicast routes in MP_REACH_NLRI rather than the classic NLRI field (legal,
//! but the classic form is what every router accepts), and its parser reports
//! failures as free-text errors, not as the RFC 4271 code/subcode pairs a
//! NOTIFICATION needs. The subset vc5 speaks is small, so it is encoded here;
//! the unit tests check it against `routecore` in both directions (routecore
//! parses what we build, we parse what routecore builds).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// The length of the common header: marker (16), length (2), type (1).
pub const HEADER_LEN: usize = 19;
/// The largest message without RFC 8654 extended messages (never negotiated).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// AS_TRANS (RFC 6793): the 2-octet AS sent by a 4-octet-AS speaker whose AS
/// does not fit in 16 bits.
pub const AS_TRANS: u16 = 23456;

/// Message type codes.
pub mod msg_type {
    /// OPEN.
    pub const OPEN: u8 = 1;
    /// UPDATE.
    pub const UPDATE: u8 = 2;
    /// NOTIFICATION.
    pub const NOTIFICATION: u8 = 3;
    /// KEEPALIVE.
    pub const KEEPALIVE: u8 = 4;
    /// ROUTE-REFRESH (RFC 2918).
    pub const ROUTE_REFRESH: u8 = 5;
}

/// Path attribute type codes used here.
pub mod attr {
    /// ORIGIN.
    pub const ORIGIN: u8 = 1;
    /// AS_PATH.
    pub const AS_PATH: u8 = 2;
    /// NEXT_HOP.
    pub const NEXT_HOP: u8 = 3;
    /// MULTI_EXIT_DISC.
    pub const MED: u8 = 4;
    /// LOCAL_PREF.
    pub const LOCAL_PREF: u8 = 5;
    /// ATOMIC_AGGREGATE.
    pub const ATOMIC_AGGREGATE: u8 = 6;
    /// AGGREGATOR.
    pub const AGGREGATOR: u8 = 7;
    /// COMMUNITIES (RFC 1997).
    pub const COMMUNITIES: u8 = 8;
    /// MP_REACH_NLRI (RFC 4760).
    pub const MP_REACH_NLRI: u8 = 14;
    /// MP_UNREACH_NLRI (RFC 4760).
    pub const MP_UNREACH_NLRI: u8 = 15;
    /// AS4_PATH (RFC 6793).
    pub const AS4_PATH: u8 = 17;

    /// Attribute flag: optional.
    pub const OPTIONAL: u8 = 0x80;
    /// Attribute flag: transitive.
    pub const TRANSITIVE: u8 = 0x40;
    /// Attribute flag: partial.
    pub const PARTIAL: u8 = 0x20;
    /// Attribute flag: the length is two octets.
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// Capability codes (IANA "Capability Codes").
pub mod cap {
    /// Multiprotocol extensions (RFC 4760).
    pub const MULTIPROTOCOL: u8 = 1;
    /// Route refresh (RFC 2918).
    pub const ROUTE_REFRESH: u8 = 2;
    /// 4-octet AS numbers (RFC 6793).
    pub const FOUR_OCTET_AS: u8 = 65;
}

/// Address family identifiers.
pub const AFI_IPV4: u16 = 1;
/// Address family identifier for IPv6.
pub const AFI_IPV6: u16 = 2;
/// Subsequent address family: unicast.
pub const SAFI_UNICAST: u8 = 1;

/// ORIGIN values.
pub const ORIGIN_IGP: u8 = 0;

/// NOTIFICATION error codes (RFC 4271 §4.5) and the subcodes vc5 sends.
pub mod err {
    /// Message Header Error.
    pub const HEADER: u8 = 1;
    /// OPEN Message Error.
    pub const OPEN: u8 = 2;
    /// UPDATE Message Error.
    pub const UPDATE: u8 = 3;
    /// Hold Timer Expired.
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;

    /// Header: Connection Not Synchronized.
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    /// Header: Bad Message Length.
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    /// Header: Bad Message Type.
    pub const BAD_MESSAGE_TYPE: u8 = 3;

    /// OPEN: Unsupported Version Number.
    pub const UNSUPPORTED_VERSION: u8 = 1;
    /// OPEN: Bad Peer AS.
    pub const BAD_PEER_AS: u8 = 2;
    /// OPEN: Bad BGP Identifier.
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    /// OPEN: Unsupported Optional Parameter.
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    /// OPEN: Unacceptable Hold Time.
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;

    /// UPDATE: Malformed Attribute List.
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    /// UPDATE: Attribute Flags Error.
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    /// UPDATE: Attribute Length Error.
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    /// UPDATE: Invalid ORIGIN Attribute.
    pub const INVALID_ORIGIN: u8 = 6;
    /// UPDATE: Optional Attribute Error.
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    /// UPDATE: Invalid Network Field.
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    /// UPDATE: Malformed AS_PATH.
    pub const MALFORMED_AS_PATH: u8 = 11;

    /// FSM: Receive Unexpected Message in OpenSent (RFC 6608).
    pub const FSM_UNEXPECTED_IN_OPENSENT: u8 = 1;
    /// FSM: Receive Unexpected Message in OpenConfirm (RFC 6608).
    pub const FSM_UNEXPECTED_IN_OPENCONFIRM: u8 = 2;
    /// FSM: Receive Unexpected Message in Established (RFC 6608).
    pub const FSM_UNEXPECTED_IN_ESTABLISHED: u8 = 3;

    /// Cease: Administrative Shutdown (RFC 4486).
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
}

/// An IPv4 or IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// The address (host bits beyond `len` are zero after decoding).
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl Prefix {
    /// The host route for `addr`: /32 or /128.
    pub fn host(addr: IpAddr) -> Prefix {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Prefix { addr, len }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.len);
        let n = usize::from(self.len).div_ceil(8);
        match self.addr {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..n.min(4)]),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..n.min(16)]),
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A capability advertised in OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Multiprotocol extensions for (AFI, SAFI).
    Multiprotocol {
        /// Address family.
        afi: u16,
        /// Subsequent address family.
        safi: u8,
    },
    /// Route refresh.
    RouteRefresh,
    /// 4-octet AS numbers, with the speaker's AS.
    FourOctetAs(u32),
    /// Anything else, kept raw (RFC 5492: unknown capabilities are ignored).
    Other {
        /// Capability code.
        code: u8,
        /// Capability value.
        value: Vec<u8>,
    },
}

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// BGP version; always 4 once decoded.
    pub version: u8,
    /// The 2-octet "My Autonomous System" field (AS_TRANS for large ASes).
    pub my_as: u16,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities, in the order received.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// The speaker's AS: from the 4-octet capability if present.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    /// Whether the 4-octet AS capability is present.
    pub fn four_octet_as(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
    }

    /// Whether multiprotocol (afi, safi) is advertised. With no multiprotocol
    /// capability at all, IPv4 unicast is implied (RFC 4760 §8).
    pub fn supports(&self, afi: u16, safi: u8) -> bool {
        let mut any_mp = false;
        for c in &self.capabilities {
            if let Capability::Multiprotocol { afi: a, safi: s } = c {
                any_mp = true;
                if (*a, *s) == (afi, safi) {
                    return true;
                }
            }
        }
        !any_mp && (afi, safi) == (AFI_IPV4, SAFI_UNICAST)
    }

    /// The OPEN vc5 sends: 4-octet AS and IPv4/IPv6 unicast capabilities.
    pub fn ours(asn: u32, hold_time: u16, bgp_id: Ipv4Addr) -> Open {
        Open {
            version: 4,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            capabilities: vec![
                Capability::Multiprotocol {
                    afi: AFI_IPV4,
                    safi: SAFI_UNICAST,
                },
                Capability::Multiprotocol {
                    afi: AFI_IPV6,
                    safi: SAFI_UNICAST,
                },
                Capability::RouteRefresh,
                Capability::FourOctetAs(asn),
            ],
        }
    }
}

/// An AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsSegment {
    /// 1 AS_SET, 2 AS_SEQUENCE (3/4 confederation types kept as is).
    pub kind: u8,
    /// The ASes.
    pub asns: Vec<u32>,
}

/// AS_SEQUENCE segment type.
pub const AS_SEQUENCE: u8 = 2;

/// A path attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// ORIGIN (0 IGP, 1 EGP, 2 INCOMPLETE).
    Origin(u8),
    /// AS_PATH; its AS width depends on the session (4-octet or not).
    AsPath(Vec<AsSegment>),
    /// NEXT_HOP for IPv4 NLRI in the classic field.
    NextHop(Ipv4Addr),
    /// MULTI_EXIT_DISC.
    Med(u32),
    /// LOCAL_PREF.
    LocalPref(u32),
    /// COMMUNITIES, each as (AS << 16 | value).
    Communities(Vec<u32>),
    /// MP_REACH_NLRI.
    MpReach {
        /// Address family.
        afi: u16,
        /// Subsequent address family.
        safi: u8,
        /// Next hop(s): 16 octets (global) or 32 (global + link-local) for IPv6.
        next_hop: Vec<u8>,
        /// Reachable prefixes.
        nlri: Vec<Prefix>,
    },
    /// MP_UNREACH_NLRI.
    MpUnreach {
        /// Address family.
        afi: u16,
        /// Subsequent address family.
        safi: u8,
        /// Withdrawn prefixes.
        withdrawn: Vec<Prefix>,
    },
    /// AS4_PATH (always 4-octet ASes).
    As4Path(Vec<AsSegment>),
    /// Any other attribute, kept raw.
    Other {
        /// Flags as received, less Extended Length (see the encoder).
        flags: u8,
        /// Type code.
        code: u8,
        /// Value.
        value: Vec<u8>,
    },
}

/// An UPDATE message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// IPv4 prefixes withdrawn in the classic field.
    pub withdrawn: Vec<Prefix>,
    /// Path attributes in order.
    pub attributes: Vec<Attribute>,
    /// IPv4 prefixes announced in the classic field.
    pub nlri: Vec<Prefix>,
}

/// A NOTIFICATION message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Data.
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION without data.
    pub fn new(code: u8, subcode: u8) -> Notification {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    /// Cease / Administrative Shutdown, sent when vc5 stops.
    pub fn admin_shutdown() -> Notification {
        Notification::new(err::CEASE, err::ADMINISTRATIVE_SHUTDOWN)
    }

    /// The RFC 8203 shutdown communication carried by Cease/Administrative
    /// Shutdown or Reset, when present and well formed.
    pub fn shutdown_message(&self) -> Option<String> {
        if self.code != err::CEASE || !matches!(self.subcode, 2 | 4) {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(len))?;
        Some(String::from_utf8_lossy(text).into_owned())
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = match self.code {
            err::HEADER => "Message Header Error",
            err::OPEN => "OPEN Message Error",
            err::UPDATE => "UPDATE Message Error",
            err::HOLD_TIMER_EXPIRED => "Hold Timer Expired",
            err::FSM => "Finite State Machine Error",
            err::CEASE => "Cease",
            _ => "unknown error",
        };
        let sub = match (self.code, self.subcode) {
            (err::HEADER, 1) => "Connection Not Synchronized",
            (err::HEADER, 2) => "Bad Message Length",
            (err::HEADER, 3) => "Bad Message Type",
            (err::OPEN, 1) => "Unsupported Version Number",
            (err::OPEN, 2) => "Bad Peer AS",
            (err::OPEN, 3) => "Bad BGP Identifier",
            (err::OPEN, 4) => "Unsupported Optional Parameter",
            (err::OPEN, 6) => "Unacceptable Hold Time",
            (err::OPEN, 7) => "Unsupported Capability",
            (err::UPDATE, 1) => "Malformed Attribute List",
            (err::UPDATE, 2) => "Unrecognized Well-known Attribute",
            (err::UPDATE, 3) => "Missing Well-known Attribute",
            (err::UPDATE, 4) => "Attribute Flags Error",
            (err::UPDATE, 5) => "Attribute Length Error",
            (err::UPDATE, 6) => "Invalid ORIGIN Attribute",
            (err::UPDATE, 8) => "Invalid NEXT_HOP Attribute",
            (err::UPDATE, 9) => "Optional Attribute Error",
            (err::UPDATE, 10) => "Invalid Network Field",
            (err::UPDATE, 11) => "Malformed AS_PATH",
            (err::CEASE, 1) => "Maximum Number of Prefixes Reached",
            (err::CEASE, 2) => "Administrative Shutdown",
            (err::CEASE, 3) => "Peer De-configured",
            (err::CEASE, 4) => "Administrative Reset",
            (err::CEASE, 5) => "Connection Rejected",
            (err::CEASE, 6) => "Other Configuration Change",
            (err::CEASE, 7) => "Connection Collision Resolution",
            (err::CEASE, 8) => "Out of Resources",
            (err::CEASE, 9) => "Hard Reset",
            _ => "",
        };
        write!(f, "{code} ({}/{})", self.code, self.subcode)?;
        if !sub.is_empty() {
            write!(f, " {sub}")?;
        }
        if let Some(m) = self.shutdown_message() {
            write!(f, ": {m:?}")?;
        }
        Ok(())
    }
}

/// A BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH for (AFI, SAFI); vc5 answers by re-sending its routes.
    RouteRefresh {
        /// Address family.
        afi: u16,
        /// Subsequent address family.
        safi: u8,
    },
}

/// Per-session facts that change how messages are encoded and decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// Both sides advertised 4-octet AS: AS_PATH carries 4-octet ASes.
    pub four_octet_as: bool,
}

impl Default for Codec {
    /// Before OPENs are exchanged nothing depends on this; after, the session
    /// sets it. 4-octet is what every peer vc5 meets supports.
    fn default() -> Codec {
        Codec {
            four_octet_as: true,
        }
    }
}

/// Why a message could not be decoded, named after the NOTIFICATION it calls for.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The marker is not all ones.
    #[error("connection not synchronized (bad marker)")]
    ConnectionNotSynchronized,
    /// The length field is out of range for the message type.
    #[error("bad message length {0}")]
    BadMessageLength(u16),
    /// An unknown message type.
    #[error("bad message type {0}")]
    BadMessageType(u8),
    /// OPEN with a version other than 4.
    #[error("unsupported BGP version {0}")]
    UnsupportedVersion(u8),
    /// OPEN with a peer AS other than the configured one.
    #[error("bad peer AS {0}")]
    BadPeerAs(u32),
    /// OPEN with a zero BGP identifier (or ours, on iBGP).
    #[error("bad BGP identifier {0}")]
    BadBgpIdentifier(Ipv4Addr),
    /// OPEN with an optional parameter other than capabilities.
    #[error("unsupported optional parameter {0}")]
    UnsupportedOptionalParameter(u8),
    /// OPEN with hold time 1 or 2 seconds.
    #[error("unacceptable hold time {0}")]
    UnacceptableHoldTime(u16),
    /// OPEN whose optional parameters do not fit its length fields.
    #[error("malformed OPEN: {0}")]
    MalformedOpen(&'static str),
    /// UPDATE whose lengths do not add up.
    #[error("malformed attribute list: {0}")]
    MalformedAttributeList(&'static str),
    /// A well-known attribute we do not know; carries the attribute.
    #[error("unrecognized well-known attribute {}", .0.get(1).copied().unwrap_or(0))]
    UnrecognizedWellKnown(Vec<u8>),
    /// A well-known mandatory attribute is missing; carries its type code.
    #[error("missing well-known attribute {0}")]
    MissingWellKnown(u8),
    /// A well-known attribute with wrong flags; carries the attribute.
    #[error("attribute flags error in attribute {}", .0.get(1).copied().unwrap_or(0))]
    AttributeFlags(Vec<u8>),
    /// A fixed-size attribute with the wrong length; carries the attribute.
    #[error("attribute length error in attribute {}", .0.get(1).copied().unwrap_or(0))]
    AttributeLength(Vec<u8>),
    /// ORIGIN other than 0, 1, 2; carries the attribute.
    #[error("invalid ORIGIN")]
    InvalidOrigin(Vec<u8>),
    /// A malformed optional attribute (e.g. MP_REACH_NLRI); carries it.
    #[error("optional attribute error in attribute {}", .0.get(1).copied().unwrap_or(0))]
    OptionalAttribute(Vec<u8>),
    /// A prefix with a length beyond its family or running past the field.
    #[error("invalid network field")]
    InvalidNetworkField,
    /// An AS_PATH that is not a sequence of well-formed segments.
    #[error("malformed AS_PATH")]
    MalformedAsPath,
    /// A NOTIFICATION or KEEPALIVE shorter/longer than allowed (kept apart
    /// from the header case so the data field can carry the length).
    #[error("truncated message")]
    Truncated,
}

impl DecodeError {
    /// The NOTIFICATION to send for this error (RFC 4271 §6).
    pub fn notification(&self) -> Notification {
        use DecodeError as E;
        let (code, subcode, data) = match self {
            E::ConnectionNotSynchronized => (err::HEADER, err::CONNECTION_NOT_SYNCHRONIZED, vec![]),
            E::BadMessageLength(l) => (
                err::HEADER,
                err::BAD_MESSAGE_LENGTH,
                l.to_be_bytes().to_vec(),
            ),
            E::Truncated => (err::HEADER, err::BAD_MESSAGE_LENGTH, vec![]),
            E::BadMessageType(t) => (err::HEADER, err::BAD_MESSAGE_TYPE, vec![*t]),
            // The data is the largest supported version, as two octets.
            E::UnsupportedVersion(_) => (err::OPEN, err::UNSUPPORTED_VERSION, vec![0, 4]),
            E::BadPeerAs(_) => (err::OPEN, err::BAD_PEER_AS, vec![]),
            E::BadBgpIdentifier(_) => (err::OPEN, err::BAD_BGP_IDENTIFIER, vec![]),
            E::UnsupportedOptionalParameter(_) => {
                (err::OPEN, err::UNSUPPORTED_OPTIONAL_PARAMETER, vec![])
            }
            E::UnacceptableHoldTime(_) => (err::OPEN, err::UNACCEPTABLE_HOLD_TIME, vec![]),
            // RFC 4271 has no better subcode than "unspecific" (0) for this.
            E::MalformedOpen(_) => (err::OPEN, 0, vec![]),
            E::MalformedAttributeList(_) => (err::UPDATE, err::MALFORMED_ATTRIBUTE_LIST, vec![]),
            E::UnrecognizedWellKnown(a) => (err::UPDATE, 2, a.clone()),
            E::MissingWellKnown(t) => (err::UPDATE, 3, vec![*t]),
            E::AttributeFlags(a) => (err::UPDATE, err::ATTRIBUTE_FLAGS_ERROR, a.clone()),
            E::AttributeLength(a) => (err::UPDATE, err::ATTRIBUTE_LENGTH_ERROR, a.clone()),
            E::InvalidOrigin(a) => (err::UPDATE, err::INVALID_ORIGIN, a.clone()),
            E::OptionalAttribute(a) => (err::UPDATE, err::OPTIONAL_ATTRIBUTE_ERROR, a.clone()),
            E::InvalidNetworkField => (err::UPDATE, err::INVALID_NETWORK_FIELD, vec![]),
            E::MalformedAsPath => (err::UPDATE, err::MALFORMED_AS_PATH, vec![]),
        };
        Notification {
            code,
            subcode,
            data,
        }
    }
}

// ---------------------------------------------------------------- encoding

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&[0xff; 16]);
    // Callers keep bodies within MAX_MESSAGE_LEN, so the length fits.
    let len = u16::try_from(HEADER_LEN + body.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

fn encode_capability(c: &Capability, out: &mut Vec<u8>) {
    let (code, value): (u8, Vec<u8>) = match c {
        Capability::Multiprotocol { afi, safi } => {
            let a = afi.to_be_bytes();
            (cap::MULTIPROTOCOL, vec![a[0], a[1], 0, *safi])
        }
        Capability::RouteRefresh => (cap::ROUTE_REFRESH, vec![]),
        Capability::FourOctetAs(asn) => (cap::FOUR_OCTET_AS, asn.to_be_bytes().to_vec()),
        Capability::Other { code, value } => (*code, value.clone()),
    };
    out.push(code);
    out.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&value[..value.len().min(255)]);
}

fn encode_segments(segs: &[AsSegment], four: bool, out: &mut Vec<u8>) {
    for s in segs {
        out.push(s.kind);
        out.push(u8::try_from(s.asns.len()).unwrap_or(u8::MAX));
        for a in s.asns.iter().take(255) {
            if four {
                out.extend_from_slice(&a.to_be_bytes());
            } else {
                out.extend_from_slice(&u16::try_from(*a).unwrap_or(AS_TRANS).to_be_bytes());
            }
        }
    }
}

fn encode_attribute(a: &Attribute, codec: Codec, out: &mut Vec<u8>) {
    let mut value = Vec::new();
    let (flags, code) = match a {
        Attribute::Origin(o) => {
            value.push(*o);
            (attr::TRANSITIVE, attr::ORIGIN)
        }
        Attribute::AsPath(segs) => {
            encode_segments(segs, codec.four_octet_as, &mut value);
            (attr::TRANSITIVE, attr::AS_PATH)
        }
        Attribute::NextHop(nh) => {
            value.extend_from_slice(&nh.octets());
            (attr::TRANSITIVE, attr::NEXT_HOP)
        }
        Attribute::Med(m) => {
            value.extend_from_slice(&m.to_be_bytes());
            (attr::OPTIONAL, attr::MED)
        }
        Attribute::LocalPref(l) => {
            value.extend_from_slice(&l.to_be_bytes());
            (attr::TRANSITIVE, attr::LOCAL_PREF)
        }
        Attribute::Communities(cs) => {
            for c in cs {
                value.extend_from_slice(&c.to_be_bytes());
            }
            (attr::OPTIONAL | attr::TRANSITIVE, attr::COMMUNITIES)
        }
        Attribute::MpReach {
            afi,
            safi,
            next_hop,
            nlri,
        } => {
            value.extend_from_slice(&afi.to_be_bytes());
            value.push(*safi);
            value.push(u8::try_from(next_hop.len()).unwrap_or(u8::MAX));
            value.extend_from_slice(next_hop);
            value.push(0); // reserved
            for p in nlri {
                p.encode(&mut value);
            }
            (attr::OPTIONAL, attr::MP_REACH_NLRI)
        }
        Attribute::MpUnreach {
            afi,
            safi,
            withdrawn,
        } => {
            value.extend_from_slice(&afi.to_be_bytes());
            value.push(*safi);
            for p in withdrawn {
                p.encode(&mut value);
            }
            (attr::OPTIONAL, attr::MP_UNREACH_NLRI)
        }
        Attribute::As4Path(segs) => {
            encode_segments(segs, true, &mut value);
            (attr::OPTIONAL | attr::TRANSITIVE, attr::AS4_PATH)
        }
        Attribute::Other {
            flags,
            code,
            value: v,
        } => {
            value.extend_from_slice(v);
            (*flags & !attr::EXTENDED_LENGTH, *code)
        }
    };
    if value.len() > 255 {
        out.push(flags | attr::EXTENDED_LENGTH);
        out.push(code);
        out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
    } else {
        out.push(flags);
        out.push(code);
        out.push(value.len() as u8);
    }
    out.extend_from_slice(&value);
}

impl Message {
    /// The message on the wire, header included.
    pub fn encode(&self, codec: Codec) -> Vec<u8> {
        match self {
            Message::Open(o) => {
                let mut caps = Vec::new();
                for c in &o.capabilities {
                    encode_capability(c, &mut caps);
                }
                let mut body = vec![o.version];
                body.extend_from_slice(&o.my_as.to_be_bytes());
                body.extend_from_slice(&o.hold_time.to_be_bytes());
                body.extend_from_slice(&o.bgp_id.octets());
                if caps.is_empty() {
                    body.push(0);
                } else {
                    // All capabilities in one Capabilities parameter (type 2).
                    let caps = &caps[..caps.len().min(253)];
                    body.push(caps.len() as u8 + 2);
                    body.push(2);
                    body.push(caps.len() as u8);
                    body.extend_from_slice(caps);
                }
                frame(msg_type::OPEN, &body)
            }
            Message::Update(u) => {
                let mut w = Vec::new();
                for p in &u.withdrawn {
                    p.encode(&mut w);
                }
                let mut a = Vec::new();
                for at in &u.attributes {
                    encode_attribute(at, codec, &mut a);
                }
                let mut body = Vec::with_capacity(4 + w.len() + a.len());
                body.extend_from_slice(&u16::try_from(w.len()).unwrap_or(u16::MAX).to_be_bytes());
                body.extend_from_slice(&w);
                body.extend_from_slice(&u16::try_from(a.len()).unwrap_or(u16::MAX).to_be_bytes());
                body.extend_from_slice(&a);
                for p in &u.nlri {
                    p.encode(&mut body);
                }
                frame(msg_type::UPDATE, &body)
            }
            Message::Notification(n) => {
                let mut body = vec![n.code, n.subcode];
                let room = MAX_MESSAGE_LEN - HEADER_LEN - 2;
                body.extend_from_slice(&n.data[..n.data.len().min(room)]);
                frame(msg_type::NOTIFICATION, &body)
            }
            Message::Keepalive => frame(msg_type::KEEPALIVE, &[]),
            Message::RouteRefresh { afi, safi } => {
                let a = afi.to_be_bytes();
                frame(msg_type::ROUTE_REFRESH, &[a[0], a[1], 0, *safi])
            }
        }
    }
}

/// The attributes vc5 attaches to its routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteAttributes {
    /// Our AS.
    pub local_as: u32,
    /// Whether the session is iBGP (peer AS == local AS): empty AS_PATH and
    /// LOCAL_PREF; on eBGP the AS_PATH is our AS and LOCAL_PREF is not sent.
    pub ibgp: bool,
    /// IPv4 next hop (classic NEXT_HOP).
    pub next_hop4: Option<Ipv4Addr>,
    /// IPv6 next hop (MP_REACH_NLRI).
    pub next_hop6: Option<Ipv6Addr>,
    /// Standard communities.
    pub communities: Vec<u32>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (iBGP only; default 100 there, as BIRD/FRR assume).
    pub local_pref: Option<u32>,
}

impl RouteAttributes {
    fn common(&self, codec: Codec) -> Vec<Attribute> {
        let mut v = vec![Attribute::Origin(ORIGIN_IGP)];
        if self.ibgp {
            v.push(Attribute::AsPath(vec![]));
        } else {
            let first = if codec.four_octet_as {
                self.local_as
            } else {
                u16::try_from(self.local_as).map_or(u32::from(AS_TRANS), u32::from)
            };
            v.push(Attribute::AsPath(vec![AsSegment {
                kind: AS_SEQUENCE,
                asns: vec![first],
            }]));
            // A peer without 4-octet AS support sees AS_TRANS in AS_PATH and
            // our real AS in AS4_PATH (RFC 6793 §4.2.2).
            if !codec.four_octet_as && self.local_as > u32::from(u16::MAX) {
                v.push(Attribute::As4Path(vec![AsSegment {
                    kind: AS_SEQUENCE,
                    asns: vec![self.local_as],
                }]));
            }
        }
        v
    }

    fn tail(&self, out: &mut Vec<Attribute>) {
        if let Some(m) = self.med {
            out.push(Attribute::Med(m));
        }
        if self.ibgp {
            out.push(Attribute::LocalPref(self.local_pref.unwrap_or(100)));
        }
        if !self.communities.is_empty() {
            out.push(Attribute::Communities(self.communities.clone()));
        }
    }
}

/// Room for prefixes in one UPDATE after header, lengths and attributes.
fn room(attrs_len: usize) -> usize {
    MAX_MESSAGE_LEN - HEADER_LEN - 4 - attrs_len
}

/// UPDATE messages announcing `announce` and withdrawing `withdraw` (host
/// routes of either family), split to fit [`MAX_MESSAGE_LEN`]. IPv4 uses the
/// classic fields, IPv6 MP_REACH_NLRI/MP_UNREACH_NLRI. Addresses of a family
/// with no next hop in `attrs` are not announced (the caller reports them).
pub fn build_updates(
    announce: &[IpAddr],
    withdraw: &[IpAddr],
    attrs: &RouteAttributes,
    codec: Codec,
) -> Vec<Message> {
    let mut out = Vec::new();
    let (w4, w6): (Vec<Prefix>, Vec<Prefix>) = split(withdraw);
    let (a4, a6): (Vec<Prefix>, Vec<Prefix>) = split(announce);

    // IPv4 withdrawals: classic field, no attributes. 5 octets per /32.
    for chunk in w4.chunks(room(0) / 5) {
        out.push(Message::Update(Update {
            withdrawn: chunk.to_vec(),
            ..Update::default()
        }));
    }
    // IPv6 withdrawals: MP_UNREACH_NLRI; 17 octets per /128, 3+4 of overhead.
    for chunk in w6.chunks((room(0) - 7) / 17) {
        out.push(Message::Update(Update {
            attributes: vec![Attribute::MpUnreach {
                afi: AFI_IPV6,
                safi: SAFI_UNICAST,
                withdrawn: chunk.to_vec(),
            }],
            ..Update::default()
        }));
    }
    if let (Some(nh), false) = (attrs.next_hop4, a4.is_empty()) {
        let mut at = attrs.common(codec);
        at.push(Attribute::NextHop(nh));
        attrs.tail(&mut at);
        let len = encoded_attrs_len(&at, codec);
        for chunk in a4.chunks(room(len) / 5) {
            out.push(Message::Update(Update {
                withdrawn: vec![],
                attributes: at.clone(),
                nlri: chunk.to_vec(),
            }));
        }
    }
    if let (Some(nh), false) = (attrs.next_hop6, a6.is_empty()) {
        let base = attrs.common(codec);
        let mut tail = Vec::new();
        attrs.tail(&mut tail);
        // MP_REACH_NLRI overhead: 4 (flags, code, 2-octet length) + 5 + 16.
        let len = encoded_attrs_len(&base, codec) + encoded_attrs_len(&tail, codec) + 25;
        for chunk in a6.chunks(room(len) / 17) {
            let mut at = base.clone();
            at.push(Attribute::MpReach {
                afi: AFI_IPV6,
                safi: SAFI_UNICAST,
                next_hop: nh.octets().to_vec(),
                nlri: chunk.to_vec(),
            });
            at.extend(tail.iter().cloned());
            out.push(Message::Update(Update {
                withdrawn: vec![],
                attributes: at,
                nlri: vec![],
            }));
        }
    }
    out
}

fn split(addrs: &[IpAddr]) -> (Vec<Prefix>, Vec<Prefix>) {
    addrs
        .iter()
        .map(|a| Prefix::host(*a))
        .partition(|p| p.addr.is_ipv4())
}

fn encoded_attrs_len(attrs: &[Attribute], codec: Codec) -> usize {
    let mut v = Vec::new();
    for a in attrs {
        encode_attribute(a, codec, &mut v);
    }
    v.len()
}

// ---------------------------------------------------------------- decoding

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
pub fn check_header(h: &[u8; HEADER_LEN]) -> Result<(u8, usize), DecodeError> {
    if h[..16].iter().any(|&b| b != 0xff) {
        return Err(DecodeError::ConnectionNotSynchronized);
    }
    let len = u16::from_be_bytes([h[16], h[17]]);
    let kind = h[18];
    let l = usize::from(len);
    let ok = match kind {
        msg_type::OPEN => l >= HEADER_LEN + 10,
        msg_type::UPDATE => l >= HEADER_LEN + 4,
        msg_type::NOTIFICATION => l >= HEADER_LEN + 2,
        msg_type::KEEPALIVE => l == HEADER_LEN,
        msg_type::ROUTE_REFRESH => l == HEADER_LEN + 4,
        other => return Err(DecodeError::BadMessageType(other)),
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
pub fn decode_body(kind: u8, body: &[u8], codec: Codec) -> Result<Message, DecodeError> {
    match kind {
        msg_type::OPEN => decode_open(body).map(Message::Open),
        msg_type::UPDATE => decode_update(body, codec).map(Message::Update),
        msg_type::NOTIFICATION => {
            let mut r = Reader::new(body);
            let code = r.u8().ok_or(DecodeError::Truncated)?;
            let subcode = r.u8().ok_or(DecodeError::Truncated)?;
            Ok(Message::Notification(Notification {
                code,
                subcode,
                data: r.data.to_vec(),
            }))
        }
        msg_type::KEEPALIVE if body.is_empty() => Ok(Message::Keepalive),
        msg_type::ROUTE_REFRESH if body.len() == 4 => Ok(Message::RouteRefresh {
            afi: u16::from_be_bytes([body[0], body[1]]),
            safi: body[3],
        }),
        msg_type::KEEPALIVE | msg_type::ROUTE_REFRESH => Err(DecodeError::Truncated),
        other => Err(DecodeError::BadMessageType(other)),
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
    let extended = opt_len == 255 && r.data.first() == Some(&255);
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
        if ptype != 2 {
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
            let cap = match (code, v.len()) {
                (cap::MULTIPROTOCOL, 4) => Capability::Multiprotocol {
                    afi: u16::from_be_bytes([v[0], v[1]]),
                    safi: v[3],
                },
                (cap::ROUTE_REFRESH, 0) => Capability::RouteRefresh,
                (cap::FOUR_OCTET_AS, 4) => {
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
        if !(1..=4).contains(&kind) || n == 0 {
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
        let len = if flags & attr::EXTENDED_LENGTH != 0 {
            ar.u16()
        } else {
            ar.u8().map(u16::from)
        }
        .ok_or(bad("truncated attribute header"))?;
        let hdr = if flags & attr::EXTENDED_LENGTH != 0 {
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
    let has = |c: u8| seen[usize::from(c)];
    // Well-known mandatory attributes are required when there is NLRI to
    // carry them (RFC 4271 §6.3; for MP-only UPDATEs, RFC 4760 §7).
    let missing = [attr::ORIGIN, attr::AS_PATH, attr::NEXT_HOP]
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
    // Well-known attributes must be transitive and not optional.
    let well_known = |expect_len: Option<usize>| -> Result<(), DecodeError> {
        if flags & (attr::OPTIONAL | attr::TRANSITIVE) != attr::TRANSITIVE {
            return Err(DecodeError::AttributeFlags(whole.clone()));
        }
        if expect_len.is_some_and(|l| l != v.len()) {
            return Err(DecodeError::AttributeLength(whole.clone()));
        }
        Ok(())
    };
    let u32_at = |v: &[u8]| u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    Ok(match code {
        attr::ORIGIN => {
            well_known(Some(1))?;
            if v[0] > 2 {
                return Err(DecodeError::InvalidOrigin(whole));
            }
            Attribute::Origin(v[0])
        }
        attr::AS_PATH => {
            well_known(None)?;
            Attribute::AsPath(decode_segments(v, codec.four_octet_as)?)
        }
        attr::NEXT_HOP => {
            well_known(Some(4))?;
            Attribute::NextHop(Ipv4Addr::new(v[0], v[1], v[2], v[3]))
        }
        attr::LOCAL_PREF => {
            well_known(Some(4))?;
            Attribute::LocalPref(u32_at(v))
        }
        attr::MED => {
            if v.len() != 4 {
                return Err(DecodeError::AttributeLength(whole));
            }
            Attribute::Med(u32_at(v))
        }
        attr::COMMUNITIES => {
            if !v.len().is_multiple_of(4) {
                return Err(DecodeError::AttributeLength(whole));
            }
            Attribute::Communities(v.chunks_exact(4).map(u32_at).collect())
        }
        attr::MP_REACH_NLRI => {
            let mut r = Reader::new(v);
            let parsed = (|| {
                let afi = r.u16()?;
                let safi = r.u8()?;
                let nhl = r.u8()?;
                let nh = r.take(usize::from(nhl))?.to_vec();
                r.u8()?; // reserved
                Some((afi, safi, nh))
            })();
            let Some((afi, safi, next_hop)) = parsed else {
                return Err(DecodeError::OptionalAttribute(whole));
            };
            let nlri = match afi {
                AFI_IPV4 | AFI_IPV6 if safi == SAFI_UNICAST => decode_prefixes(r, afi == AFI_IPV6)?,
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
        attr::MP_UNREACH_NLRI => {
            let mut r = Reader::new(v);
            let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
                return Err(DecodeError::OptionalAttribute(whole));
            };
            let withdrawn = match afi {
                AFI_IPV4 | AFI_IPV6 if safi == SAFI_UNICAST => decode_prefixes(r, afi == AFI_IPV6)?,
                _ => Vec::new(),
            };
            Attribute::MpUnreach {
                afi,
                safi,
                withdrawn,
            }
        }
        attr::AS4_PATH => Attribute::As4Path(
            decode_segments(v, true).map_err(|_| DecodeError::OptionalAttribute(whole))?,
        ),
        attr::ATOMIC_AGGREGATE => {
            well_known(Some(0))?;
            Attribute::Other {
                flags: flags & !attr::EXTENDED_LENGTH,
                code,
                value: vec![],
            }
        }
        _ if flags & attr::OPTIONAL == 0 => return Err(DecodeError::UnrecognizedWellKnown(whole)),
        _ => Attribute::Other {
            // Extended Length is how the length was written, not what the
            // attribute is: the encoder picks it from the value's size.
            flags: flags & !attr::EXTENDED_LENGTH,
            code,
            value: v.to_vec(),
        },
    })
}

#[cfg(test)]
mod tests;
