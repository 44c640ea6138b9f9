//! Why a message could not be decoded ([`DecodeError`], named after the
//! NOTIFICATION it calls for) or encoded ([`EncodeError`]).
//!
//! The two are different in kind. A decode error is the peer's: the session
//! answers it on the wire. An encode error is ours: vc5 built a message the
//! protocol cannot carry (a length beyond its field, a message beyond
//! [`super::MAX_MESSAGE_LEN`]). Writing it anyway, with a saturated length
//! or a truncated value, would send the peer something other than what vc5
//! meant, so the encoder refuses and the caller reports the bug or the
//! configuration that caused it.

use std::net::Ipv4Addr;

use thiserror::Error;

use super::MAX_MESSAGE_LEN;
use super::codes::{
    AttrType, HeaderSubcode, MessageType, NotificationKind, OpenSubcode, UpdateSubcode,
};
use super::types::{Notification, Prefix};

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
    /// A well-known mandatory attribute is missing; carries its type.
    #[error("missing well-known attribute {}", u8::from(*.0))]
    MissingWellKnown(AttrType),
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
        use HeaderSubcode as H;
        use OpenSubcode as O;
        use UpdateSubcode as U;
        let (kind, data): (NotificationKind, Vec<u8>) = match self {
            E::ConnectionNotSynchronized => (H::ConnectionNotSynchronized.into(), vec![]),
            E::BadMessageLength(l) => (H::BadMessageLength.into(), l.to_be_bytes().to_vec()),
            E::Truncated => (H::BadMessageLength.into(), vec![]),
            E::BadMessageType(t) => (H::BadMessageType.into(), vec![*t]),
            // The data is the largest supported version, as two octets.
            E::UnsupportedVersion(_) => (O::UnsupportedVersionNumber.into(), vec![0, 4]),
            E::BadPeerAs(_) => (O::BadPeerAs.into(), vec![]),
            E::BadBgpIdentifier(_) => (O::BadBgpIdentifier.into(), vec![]),
            E::UnsupportedOptionalParameter(_) => (O::UnsupportedOptionalParameter.into(), vec![]),
            E::UnacceptableHoldTime(_) => (O::UnacceptableHoldTime.into(), vec![]),
            // RFC 4271 has no better subcode than "unspecific" (0) for this.
            E::MalformedOpen(_) => (O::Unspecific.into(), vec![]),
            E::MalformedAttributeList(_) => (U::MalformedAttributeList.into(), vec![]),
            E::UnrecognizedWellKnown(a) => (U::UnrecognizedWellKnownAttribute.into(), a.clone()),
            E::MissingWellKnown(t) => (U::MissingWellKnownAttribute.into(), vec![u8::from(*t)]),
            E::AttributeFlags(a) => (U::AttributeFlagsError.into(), a.clone()),
            E::AttributeLength(a) => (U::AttributeLengthError.into(), a.clone()),
            E::InvalidOrigin(a) => (U::InvalidOriginAttribute.into(), a.clone()),
            E::OptionalAttribute(a) => (U::OptionalAttributeError.into(), a.clone()),
            E::InvalidNetworkField => (U::InvalidNetworkField.into(), vec![]),
            E::MalformedAsPath => (U::MalformedAsPath.into(), vec![]),
        };
        Notification { kind, data }
    }
}

/// Why a message could not be encoded: something in it does not fit its
/// length field, or the whole does not fit [`MAX_MESSAGE_LEN`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The message would be longer than a peer accepts (RFC 8654 extended
    /// messages are never negotiated).
    #[error("{kind} of {len} octets: longer than the {MAX_MESSAGE_LEN} a BGP message may be")]
    MessageTooLong {
        /// Which message.
        kind: MessageType,
        /// The length it would have, header included.
        len: usize,
    },
    /// A capability's value does not fit its 1-octet length.
    #[error("capability {code} has a {len}-octet value: at most 255 fit")]
    CapabilityTooLong {
        /// Capability code.
        code: u8,
        /// The value's length.
        len: usize,
    },
    /// The capabilities do not fit in the one optional parameter of an OPEN
    /// (RFC 9072's extended length is not sent).
    #[error("OPEN capabilities take {len} octets: at most 253 fit")]
    CapabilitiesTooLong {
        /// Their encoded length.
        len: usize,
    },
    /// An AS_PATH or AS4_PATH segment has no AS or more than its 1-octet
    /// count holds.
    #[error("AS_PATH segment of {len} ASes: 1 to 255 fit")]
    SegmentLength {
        /// How many ASes it has.
        len: usize,
    },
    /// A path attribute's value does not fit its 2-octet length.
    #[error("path attribute {code} has a {len}-octet value: at most 65535 fit")]
    AttributeTooLong {
        /// Type code.
        code: u8,
        /// The value's length.
        len: usize,
    },
    /// An MP_REACH_NLRI next hop does not fit its 1-octet length.
    #[error("MP_REACH_NLRI next hop of {len} octets: at most 255 fit")]
    NextHopTooLong {
        /// Its length.
        len: usize,
    },
    /// A prefix longer than its family's addresses.
    #[error("prefix {0}: longer than its family allows")]
    PrefixLength(Prefix),
    /// The path attributes leave no room for a single prefix in an UPDATE
    /// (too many communities, say).
    #[error(
        "path attributes of {len} octets leave no room for a prefix in a {MAX_MESSAGE_LEN}-octet UPDATE"
    )]
    NoRoomForNlri {
        /// The attributes' encoded length.
        len: usize,
    },
}
