//! Routes to UPDATE messages: which attributes vc5's host routes carry
//! ([`RouteAttributes`]) and how many routes fit in one message
//! ([`build_updates`]).

use std::net::IpAddr;

use super::codes::{Afi, Origin, Safi, SegmentType};
use super::encode::encoded_attrs_len;
use super::error::EncodeError;
use super::types::{
    AS_TRANS, AsSegment, Attribute, Codec, Message, Prefix, RouteAttributes, Update,
};
use super::{HEADER_LEN, MAX_MESSAGE_LEN};

/// Octets of one IPv4 host route in an NLRI field: length and 4 octets.
const V4_ROUTE_LEN: usize = 5;
/// Octets of one IPv6 host route: length and 16 octets.
const V6_ROUTE_LEN: usize = 17;
/// MP_UNREACH_NLRI around its prefixes: a 4-octet attribute header (a
/// message's worth of prefixes needs Extended Length), AFI and SAFI.
const MP_UNREACH_OVERHEAD: usize = 4 + 3;
/// MP_REACH_NLRI around its prefixes: a 4-octet attribute header, AFI,
/// SAFI, next hop length, a 16-octet next hop and the reserved octet.
const MP_REACH_OVERHEAD: usize = 4 + 5 + 16;

impl RouteAttributes {
    fn common(&self, codec: Codec) -> Vec<Attribute> {
        let mut v = vec![Attribute::Origin(Origin::Igp)];
        if self.ibgp {
            v.push(Attribute::AsPath(vec![]));
        } else {
            let first = if codec.four_octet_as {
                self.local_as
            } else {
                u16::try_from(self.local_as).map_or(u32::from(AS_TRANS), u32::from)
            };
            v.push(Attribute::AsPath(vec![AsSegment {
                kind: SegmentType::AsSequence,
                asns: vec![first],
            }]));
            // A peer without 4-octet AS support sees AS_TRANS in AS_PATH and
            // our real AS in AS4_PATH (RFC 6793 §4.2.2).
            if !codec.four_octet_as && self.local_as > u32::from(u16::MAX) {
                v.push(Attribute::As4Path(vec![AsSegment {
                    kind: SegmentType::AsSequence,
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

/// How many routes of `route_len` octets fit in one UPDATE beside
/// `attrs_len` octets of attributes; at least one, else the attributes are
/// too long for any UPDATE.
fn per_message(attrs_len: usize, route_len: usize) -> Result<usize, EncodeError> {
    // The header, and the two 2-octet lengths (withdrawn, attributes).
    (MAX_MESSAGE_LEN - HEADER_LEN - 4)
        .checked_sub(attrs_len)
        .map(|room| room / route_len)
        .filter(|n| *n > 0)
        .ok_or(EncodeError::NoRoomForNlri { len: attrs_len })
}

/// UPDATE messages announcing `announce` and withdrawing `withdraw` (host
/// routes of either family), split to fit [`MAX_MESSAGE_LEN`]. IPv4 uses the
/// classic fields, IPv6 MP_REACH_NLRI/MP_UNREACH_NLRI. Addresses of a family
/// with no next hop in `attrs` are not announced (the caller reports them).
///
/// Fails when the attributes leave no room for a route (or do not encode):
/// the routes cannot be sent with them at all.
pub fn build_updates(
    announce: &[IpAddr],
    withdraw: &[IpAddr],
    attrs: &RouteAttributes,
    codec: Codec,
) -> Result<Vec<Message>, EncodeError> {
    let mut out = Vec::new();
    let (w4, w6): (Vec<Prefix>, Vec<Prefix>) = split(withdraw);
    let (a4, a6): (Vec<Prefix>, Vec<Prefix>) = split(announce);

    // IPv4 withdrawals: classic field, no attributes.
    for chunk in w4.chunks(per_message(0, V4_ROUTE_LEN)?) {
        out.push(Message::Update(Update {
            withdrawn: chunk.to_vec(),
            ..Update::default()
        }));
    }
    // IPv6 withdrawals: MP_UNREACH_NLRI and nothing else.
    for chunk in w6.chunks(per_message(MP_UNREACH_OVERHEAD, V6_ROUTE_LEN)?) {
        out.push(Message::Update(Update {
            attributes: vec![Attribute::MpUnreach {
                afi: Afi::Ipv6,
                safi: Safi::Unicast,
                withdrawn: chunk.to_vec(),
            }],
            ..Update::default()
        }));
    }
    if let (Some(nh), false) = (attrs.next_hop4, a4.is_empty()) {
        let mut at = attrs.common(codec);
        at.push(Attribute::NextHop(nh));
        attrs.tail(&mut at);
        let len = encoded_attrs_len(&at, codec)?;
        for chunk in a4.chunks(per_message(len, V4_ROUTE_LEN)?) {
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
        let len =
            encoded_attrs_len(&base, codec)? + encoded_attrs_len(&tail, codec)? + MP_REACH_OVERHEAD;
        for chunk in a6.chunks(per_message(len, V6_ROUTE_LEN)?) {
            let mut at = base.clone();
            at.push(Attribute::MpReach {
                afi: Afi::Ipv6,
                safi: Safi::Unicast,
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
    Ok(out)
}

fn split(addrs: &[IpAddr]) -> (Vec<Prefix>, Vec<Prefix>) {
    addrs
        .iter()
        .map(|a| Prefix::host(*a))
        .partition(|p| p.addr.is_ipv4())
}
