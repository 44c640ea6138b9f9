//! BGP-4 messages (RFC 4271) with 4-octet AS numbers (RFC 6793), capabilities
//! (RFC 5492), multiprotocol extensions (RFC 4760) and communities (RFC 1997):
//! encoding, framing and decoding.
//!
//! - [`codes`]: the code points (message types, attribute types,
//!   capabilities, AFI/SAFI, ORIGIN, NOTIFICATION codes) as enums;
//! - [`types`]: the messages as values;
//! - [`error`]: [`DecodeError`] (the peer's fault, answered with a
//!   NOTIFICATION) and [`EncodeError`] (ours: a message that does not fit);
//! - [`encode`](mod@encode) and [`decode`](mod@decode): the wire format, each way;
//! - [`updates`]: vc5's routes as UPDATE messages.
//!
//! Decoding validates what RFC 4271 §6 asks a speaker to validate and reports
//! every failure as a [`DecodeError`] that names the NOTIFICATION (error code,
//! subcode and data) to send back ([`DecodeError::notification`]). Nothing in
//! here panics on any input; `tests` feeds it truncations and random bytes.
//! Encoding checks every length against its field and refuses with an
//! [`EncodeError`] what does not fit, rather than send something else.
//!
//! Why not `routecore` at run time: its 0.7 message builder places IPv4
//! unicast routes in MP_REACH_NLRI rather than the classic NLRI field (legal,
//! but the classic form is what every router accepts), and its parser reports
//! failures as free-text errors, not as the RFC 4271 code/subcode pairs a
//! NOTIFICATION needs. The subset vc5 speaks is small, so it is encoded here;
//! the unit tests check it against `routecore` in both directions (routecore
//! parses what we build, we parse what routecore builds).

pub mod codes;
pub mod decode;
pub mod encode;
pub mod error;
pub mod types;
pub mod updates;

pub use codes::{
    Afi, AttrType, CapabilityCode, CeaseSubcode, ErrorCode, FsmSubcode, HeaderSubcode, MessageType,
    NotificationKind, OpenSubcode, Origin, ParameterType, Safi, SegmentType, UpdateSubcode,
    attr_flags,
};
pub use decode::{check_header, decode, decode_body};
pub use error::{DecodeError, EncodeError};
pub use types::{
    AS_TRANS, AsSegment, Attribute, Capability, Codec, Message, Notification, Open, Prefix,
    RouteAttributes, Update,
};
pub use updates::build_updates;

/// The length of the common header: marker (16), length (2), type (1).
pub const HEADER_LEN: usize = 19;
/// The largest message without RFC 8654 extended messages (never negotiated).
pub const MAX_MESSAGE_LEN: usize = 4096;

#[cfg(test)]
mod tests;
