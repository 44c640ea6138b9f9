//! The protocol's code points (IANA's BGP registries) as enums, so that a
//! `match` names what it handles and the compiler checks that it is
//! complete.
//!
//! They come in two kinds, by what the protocol asks of a value vc5 does
//! not know:
//!
//! - **closed**: an unknown value is a protocol error the decoder reports
//!   (message type, ORIGIN, AS_PATH segment type, optional parameter type),
//!   or is kept raw beside the known ones (path attribute and capability
//!   codes: [`super::Attribute::Other`], [`super::Capability::Other`]).
//!   `TryFrom` fails with the raw value; `From` gives it back.
//! - **open**: an unknown value must still be carried as it came (AFI and
//!   SAFI in capabilities, MP_REACH_NLRI and ROUTE-REFRESH). An `Unknown`
//!   variant holds it and `From` converts both ways. `Unknown` only ever
//!   holds values that no other variant names (`From` guarantees it), so
//!   equal values compare equal and decoding then re-encoding is exact.
//!
//! NOTIFICATION codes and subcodes are closed per code; the pair is a
//! [`NotificationKind`], whose `Other` carries any pair a peer may send.
//!
//! Numbers appear only here: the rest of the codec, the state machine and
//! the tests' expected bytes name these.

use std::fmt;

/// A closed code point: a fieldless enum with its wire value as
/// discriminant, `From<Enum> for raw` and `TryFrom<raw> for Enum` (the error
/// is the raw value).
macro_rules! closed {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $raw:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr($raw)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl From<$name> for $raw {
            fn from(v: $name) -> $raw {
                v as $raw
            }
        }

        impl TryFrom<$raw> for $name {
            type Error = $raw;
            fn try_from(v: $raw) -> Result<$name, $raw> {
                match v {
                    $( $value => Ok($name::$variant), )+
                    other => Err(other),
                }
            }
        }
    };
}

/// An open code point: the known values and `Unknown(raw)` for the rest,
/// with `From` both ways.
macro_rules! open {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $raw:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value vc5 has no name for, carried as it came (never one
            /// of the values above: build it with `From`).
            Unknown($raw),
        }

        impl From<$name> for $raw {
            fn from(v: $name) -> $raw {
                match v {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }

        impl From<$raw> for $name {
            fn from(v: $raw) -> $name {
                match v {
                    $( $value => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }
        }
    };
}

closed! {
    /// Message types (RFC 4271 §4.1, RFC 2918).
    pub enum MessageType: u8 {
        /// OPEN.
        Open = 1,
        /// UPDATE.
        Update = 2,
        /// NOTIFICATION.
        Notification = 3,
        /// KEEPALIVE.
        Keepalive = 4,
        /// ROUTE-REFRESH (RFC 2918).
        RouteRefresh = 5,
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageType::Open => "OPEN",
            MessageType::Update => "UPDATE",
            MessageType::Notification => "NOTIFICATION",
            MessageType::Keepalive => "KEEPALIVE",
            MessageType::RouteRefresh => "ROUTE-REFRESH",
        })
    }
}

closed! {
    /// Path attribute type codes vc5 reads or writes; any other code is kept
    /// raw in [`super::Attribute::Other`].
    pub enum AttrType: u8 {
        /// ORIGIN.
        Origin = 1,
        /// AS_PATH.
        AsPath = 2,
        /// NEXT_HOP.
        NextHop = 3,
        /// MULTI_EXIT_DISC.
        MultiExitDisc = 4,
        /// LOCAL_PREF.
        LocalPref = 5,
        /// ATOMIC_AGGREGATE.
        AtomicAggregate = 6,
        /// AGGREGATOR.
        Aggregator = 7,
        /// COMMUNITIES (RFC 1997).
        Communities = 8,
        /// MP_REACH_NLRI (RFC 4760).
        MpReachNlri = 14,
        /// MP_UNREACH_NLRI (RFC 4760).
        MpUnreachNlri = 15,
        /// AS4_PATH (RFC 6793).
        As4Path = 17,
    }
}

/// Path attribute flag bits (RFC 4271 §4.3). Bits, not code points: they
/// combine, so they stay masks.
pub mod attr_flags {
    /// Optional (else well-known).
    pub const OPTIONAL: u8 = 0x80;
    /// Transitive.
    pub const TRANSITIVE: u8 = 0x40;
    /// Partial.
    pub const PARTIAL: u8 = 0x20;
    /// The length field is two octets.
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

closed! {
    /// Capability codes vc5 reads or writes (IANA "Capability Codes"); any
    /// other is kept raw in [`super::Capability::Other`] (RFC 5492).
    pub enum CapabilityCode: u8 {
        /// Multiprotocol extensions (RFC 4760).
        Multiprotocol = 1,
        /// Route refresh (RFC 2918).
        RouteRefresh = 2,
        /// 4-octet AS numbers (RFC 6793).
        FourOctetAs = 65,
    }
}

closed! {
    /// OPEN optional parameter types.
    pub enum ParameterType: u8 {
        /// Capabilities (RFC 5492), the only parameter vc5 accepts.
        Capabilities = 2,
        /// The marker of RFC 9072's extended optional parameters length.
        ExtendedLength = 255,
    }
}

open! {
    /// Address family identifiers.
    pub enum Afi: u16 {
        /// IPv4.
        Ipv4 = 1,
        /// IPv6.
        Ipv6 = 2,
    }
}

open! {
    /// Subsequent address family identifiers.
    pub enum Safi: u8 {
        /// Unicast.
        Unicast = 1,
    }
}

closed! {
    /// ORIGIN values; any other is an UPDATE error.
    pub enum Origin: u8 {
        /// IGP.
        Igp = 0,
        /// EGP.
        Egp = 1,
        /// INCOMPLETE.
        Incomplete = 2,
    }
}

closed! {
    /// AS_PATH segment types (RFC 4271, RFC 5065); any other makes the
    /// AS_PATH malformed.
    pub enum SegmentType: u8 {
        /// AS_SET.
        AsSet = 1,
        /// AS_SEQUENCE.
        AsSequence = 2,
        /// AS_CONFED_SEQUENCE.
        ConfedSequence = 3,
        /// AS_CONFED_SET.
        ConfedSet = 4,
    }
}

closed! {
    /// NOTIFICATION error codes (RFC 4271 §4.5).
    pub enum ErrorCode: u8 {
        /// Message Header Error.
        MessageHeader = 1,
        /// OPEN Message Error.
        OpenMessage = 2,
        /// UPDATE Message Error.
        UpdateMessage = 3,
        /// Hold Timer Expired.
        HoldTimerExpired = 4,
        /// Finite State Machine Error.
        FiniteStateMachine = 5,
        /// Cease.
        Cease = 6,
    }
}

impl ErrorCode {
    /// The RFC's name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::MessageHeader => "Message Header Error",
            ErrorCode::OpenMessage => "OPEN Message Error",
            ErrorCode::UpdateMessage => "UPDATE Message Error",
            ErrorCode::HoldTimerExpired => "Hold Timer Expired",
            ErrorCode::FiniteStateMachine => "Finite State Machine Error",
            ErrorCode::Cease => "Cease",
        }
    }
}

// Every code's subcode 0 is "Unspecific": RFC 4271 §4.5, "if no appropriate
// Error Subcode is defined, then a zero (Unspecific) value is used".

closed! {
    /// Message Header Error subcodes.
    pub enum HeaderSubcode: u8 {
        /// Unspecific.
        Unspecific = 0,
        /// Connection Not Synchronized.
        ConnectionNotSynchronized = 1,
        /// Bad Message Length.
        BadMessageLength = 2,
        /// Bad Message Type.
        BadMessageType = 3,
    }
}

closed! {
    /// OPEN Message Error subcodes.
    pub enum OpenSubcode: u8 {
        /// Unspecific.
        Unspecific = 0,
        /// Unsupported Version Number.
        UnsupportedVersionNumber = 1,
        /// Bad Peer AS.
        BadPeerAs = 2,
        /// Bad BGP Identifier.
        BadBgpIdentifier = 3,
        /// Unsupported Optional Parameter.
        UnsupportedOptionalParameter = 4,
        /// Unacceptable Hold Time.
        UnacceptableHoldTime = 6,
        /// Unsupported Capability (RFC 5492).
        UnsupportedCapability = 7,
    }
}

closed! {
    /// UPDATE Message Error subcodes.
    pub enum UpdateSubcode: u8 {
        /// Unspecific.
        Unspecific = 0,
        /// Malformed Attribute List.
        MalformedAttributeList = 1,
        /// Unrecognized Well-known Attribute.
        UnrecognizedWellKnownAttribute = 2,
        /// Missing Well-known Attribute.
        MissingWellKnownAttribute = 3,
        /// Attribute Flags Error.
        AttributeFlagsError = 4,
        /// Attribute Length Error.
        AttributeLengthError = 5,
        /// Invalid ORIGIN Attribute.
        InvalidOriginAttribute = 6,
        /// Invalid NEXT_HOP Attribute.
        InvalidNextHopAttribute = 8,
        /// Optional Attribute Error.
        OptionalAttributeError = 9,
        /// Invalid Network Field.
        InvalidNetworkField = 10,
        /// Malformed AS_PATH.
        MalformedAsPath = 11,
    }
}

closed! {
    /// Finite State Machine Error subcodes (RFC 6608).
    pub enum FsmSubcode: u8 {
        /// Unspecified Error.
        Unspecified = 0,
        /// Receive Unexpected Message in OpenSent State.
        UnexpectedInOpenSent = 1,
        /// Receive Unexpected Message in OpenConfirm State.
        UnexpectedInOpenConfirm = 2,
        /// Receive Unexpected Message in Established State.
        UnexpectedInEstablished = 3,
    }
}

closed! {
    /// Cease subcodes (RFC 4486, RFC 8538).
    pub enum CeaseSubcode: u8 {
        /// Unspecific.
        Unspecific = 0,
        /// Maximum Number of Prefixes Reached.
        MaximumNumberOfPrefixesReached = 1,
        /// Administrative Shutdown.
        AdministrativeShutdown = 2,
        /// Peer De-configured.
        PeerDeconfigured = 3,
        /// Administrative Reset.
        AdministrativeReset = 4,
        /// Connection Rejected.
        ConnectionRejected = 5,
        /// Other Configuration Change.
        OtherConfigurationChange = 6,
        /// Connection Collision Resolution.
        ConnectionCollisionResolution = 7,
        /// Out of Resources.
        OutOfResources = 8,
        /// Hard Reset (RFC 8538).
        HardReset = 9,
    }
}

/// A NOTIFICATION's error code and subcode, as one value: a subcode only
/// means something under its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    /// Message Header Error.
    Header(HeaderSubcode),
    /// OPEN Message Error.
    Open(OpenSubcode),
    /// UPDATE Message Error.
    Update(UpdateSubcode),
    /// Hold Timer Expired (it has no subcodes: subcode 0).
    HoldTimerExpired,
    /// Finite State Machine Error.
    Fsm(FsmSubcode),
    /// Cease.
    Cease(CeaseSubcode),
    /// A pair none of the above names (an unknown code, or a subcode its
    /// code does not define), carried as a peer sent it. Never a pair that
    /// another variant names: build it with `From<(u8, u8)>`.
    Other {
        /// Error code.
        code: u8,
        /// Error subcode.
        subcode: u8,
    },
}

impl NotificationKind {
    /// The error code on the wire.
    pub fn code(self) -> u8 {
        <(u8, u8)>::from(self).0
    }

    /// The error subcode on the wire.
    pub fn subcode(self) -> u8 {
        <(u8, u8)>::from(self).1
    }

    /// The error code's name, or `None` when vc5 does not know the code.
    pub fn code_name(self) -> Option<&'static str> {
        ErrorCode::try_from(self.code()).ok().map(ErrorCode::name)
    }

    /// The subcode's name, when it has one worth printing. Unspecific (0)
    /// has none, nor have the FSM subcodes: their text only says in which
    /// state the message came, which the session error's text says anyway.
    pub fn subcode_name(self) -> Option<&'static str> {
        use NotificationKind as K;
        Some(match self {
            K::Header(s) => match s {
                HeaderSubcode::Unspecific => return None,
                HeaderSubcode::ConnectionNotSynchronized => "Connection Not Synchronized",
                HeaderSubcode::BadMessageLength => "Bad Message Length",
                HeaderSubcode::BadMessageType => "Bad Message Type",
            },
            K::Open(s) => match s {
                OpenSubcode::Unspecific => return None,
                OpenSubcode::UnsupportedVersionNumber => "Unsupported Version Number",
                OpenSubcode::BadPeerAs => "Bad Peer AS",
                OpenSubcode::BadBgpIdentifier => "Bad BGP Identifier",
                OpenSubcode::UnsupportedOptionalParameter => "Unsupported Optional Parameter",
                OpenSubcode::UnacceptableHoldTime => "Unacceptable Hold Time",
                OpenSubcode::UnsupportedCapability => "Unsupported Capability",
            },
            K::Update(s) => match s {
                UpdateSubcode::Unspecific => return None,
                UpdateSubcode::MalformedAttributeList => "Malformed Attribute List",
                UpdateSubcode::UnrecognizedWellKnownAttribute => {
                    "Unrecognized Well-known Attribute"
                }
                UpdateSubcode::MissingWellKnownAttribute => "Missing Well-known Attribute",
                UpdateSubcode::AttributeFlagsError => "Attribute Flags Error",
                UpdateSubcode::AttributeLengthError => "Attribute Length Error",
                UpdateSubcode::InvalidOriginAttribute => "Invalid ORIGIN Attribute",
                UpdateSubcode::InvalidNextHopAttribute => "Invalid NEXT_HOP Attribute",
                UpdateSubcode::OptionalAttributeError => "Optional Attribute Error",
                UpdateSubcode::InvalidNetworkField => "Invalid Network Field",
                UpdateSubcode::MalformedAsPath => "Malformed AS_PATH",
            },
            K::Cease(s) => match s {
                CeaseSubcode::Unspecific => return None,
                CeaseSubcode::MaximumNumberOfPrefixesReached => {
                    "Maximum Number of Prefixes Reached"
                }
                CeaseSubcode::AdministrativeShutdown => "Administrative Shutdown",
                CeaseSubcode::PeerDeconfigured => "Peer De-configured",
                CeaseSubcode::AdministrativeReset => "Administrative Reset",
                CeaseSubcode::ConnectionRejected => "Connection Rejected",
                CeaseSubcode::OtherConfigurationChange => "Other Configuration Change",
                CeaseSubcode::ConnectionCollisionResolution => "Connection Collision Resolution",
                CeaseSubcode::OutOfResources => "Out of Resources",
                CeaseSubcode::HardReset => "Hard Reset",
            },
            K::HoldTimerExpired | K::Fsm(_) | K::Other { .. } => return None,
        })
    }
}

impl From<(u8, u8)> for NotificationKind {
    fn from((code, subcode): (u8, u8)) -> NotificationKind {
        use NotificationKind as K;
        let other = K::Other { code, subcode };
        let Ok(c) = ErrorCode::try_from(code) else {
            return other;
        };
        let kind = match c {
            ErrorCode::MessageHeader => HeaderSubcode::try_from(subcode).map(K::Header),
            ErrorCode::OpenMessage => OpenSubcode::try_from(subcode).map(K::Open),
            ErrorCode::UpdateMessage => UpdateSubcode::try_from(subcode).map(K::Update),
            ErrorCode::HoldTimerExpired if subcode == 0 => Ok(K::HoldTimerExpired),
            ErrorCode::HoldTimerExpired => Err(subcode),
            ErrorCode::FiniteStateMachine => FsmSubcode::try_from(subcode).map(K::Fsm),
            ErrorCode::Cease => CeaseSubcode::try_from(subcode).map(K::Cease),
        };
        kind.unwrap_or(other)
    }
}

impl From<NotificationKind> for (u8, u8) {
    fn from(k: NotificationKind) -> (u8, u8) {
        use NotificationKind as K;
        let (code, subcode) = match k {
            K::Header(s) => (ErrorCode::MessageHeader, u8::from(s)),
            K::Open(s) => (ErrorCode::OpenMessage, u8::from(s)),
            K::Update(s) => (ErrorCode::UpdateMessage, u8::from(s)),
            K::HoldTimerExpired => (ErrorCode::HoldTimerExpired, 0),
            K::Fsm(s) => (ErrorCode::FiniteStateMachine, u8::from(s)),
            K::Cease(s) => (ErrorCode::Cease, u8::from(s)),
            K::Other { code, subcode } => return (code, subcode),
        };
        (u8::from(code), subcode)
    }
}

impl From<HeaderSubcode> for NotificationKind {
    fn from(s: HeaderSubcode) -> NotificationKind {
        NotificationKind::Header(s)
    }
}

impl From<OpenSubcode> for NotificationKind {
    fn from(s: OpenSubcode) -> NotificationKind {
        NotificationKind::Open(s)
    }
}

impl From<UpdateSubcode> for NotificationKind {
    fn from(s: UpdateSubcode) -> NotificationKind {
        NotificationKind::Update(s)
    }
}

impl From<FsmSubcode> for NotificationKind {
    fn from(s: FsmSubcode) -> NotificationKind {
        NotificationKind::Fsm(s)
    }
}

impl From<CeaseSubcode> for NotificationKind {
    fn from(s: CeaseSubcode) -> NotificationKind {
        NotificationKind::Cease(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_notification_pair_round_trips() {
        for code in 0..=u8::MAX {
            for subcode in 0..=u8::MAX {
                let k = NotificationKind::from((code, subcode));
                assert_eq!(<(u8, u8)>::from(k), (code, subcode));
                // Only codes vc5 knows get a variant of their own.
                if !matches!(k, NotificationKind::Other { .. }) {
                    assert!((1..=6).contains(&code), "{k:?}");
                }
            }
        }
    }

    #[test]
    fn open_code_points_keep_unknown_values() {
        for v in 0..=u16::MAX {
            let a = Afi::from(v);
            assert_eq!(u16::from(a), v);
            assert_eq!(matches!(a, Afi::Unknown(_)), !(1..=2).contains(&v));
        }
        for v in 0..=u8::MAX {
            assert_eq!(u8::from(Safi::from(v)), v);
        }
    }

    #[test]
    fn closed_code_points_refuse_unknown_values() {
        assert_eq!(MessageType::try_from(5), Ok(MessageType::RouteRefresh));
        assert_eq!(MessageType::try_from(9), Err(9));
        assert_eq!(Origin::try_from(3), Err(3));
        assert_eq!(AttrType::try_from(14), Ok(AttrType::MpReachNlri));
        assert_eq!(u8::from(CapabilityCode::FourOctetAs), 65);
        assert_eq!(SegmentType::try_from(0), Err(0));
    }
}
