//! The messages as values: what [`decode`](fn@super::decode) returns and
//! [`Message::encode`] takes. Fields hold what the wire says, typed by the
//! code points of [`super::codes`]; lengths are not stored (the encoder
//! computes them, and refuses what does not fit).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::codes::{Afi, CeaseSubcode, NotificationKind, Origin, Safi, SegmentType};

/// AS_TRANS (RFC 6793): the 2-octet AS sent by a 4-octet-AS speaker whose AS
/// does not fit in 16 bits.
pub const AS_TRANS: u16 = 23456;

/// An IPv4 or IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// The address (host bits beyond `len` are zero after decoding).
    pub addr: IpAddr,
    /// The prefix length (at most 32 or 128; the encoder refuses more).
    pub len: u8,
}

impl Prefix {
    /// The host route for `addr`: /32 or /128.
    pub fn host(addr: IpAddr) -> Prefix {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Prefix { addr, len }
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
        afi: Afi,
        /// Subsequent address family.
        safi: Safi,
    },
    /// Route refresh.
    RouteRefresh,
    /// 4-octet AS numbers, with the speaker's AS.
    FourOctetAs(u32),
    /// Anything else, kept raw (RFC 5492: unknown capabilities are ignored),
    /// including a known code whose value has the wrong length.
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
    pub fn supports(&self, afi: Afi, safi: Safi) -> bool {
        let mut any_mp = false;
        for c in &self.capabilities {
            if let Capability::Multiprotocol { afi: a, safi: s } = c {
                any_mp = true;
                if (*a, *s) == (afi, safi) {
                    return true;
                }
            }
        }
        !any_mp && (afi, safi) == (Afi::Ipv4, Safi::Unicast)
    }

    /// The OPEN vc5 sends: 4-octet AS and IPv4/IPv6 unicast capabilities.
    pub fn ours(asn: u32, hold_time: u16, bgp_id: Ipv4Addr) -> Open {
        Open {
            version: 4,
            // RFC 6793 §4.1: an AS beyond 16 bits is AS_TRANS here, and the
            // real one is in the capability.
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            capabilities: vec![
                Capability::Multiprotocol {
                    afi: Afi::Ipv4,
                    safi: Safi::Unicast,
                },
                Capability::Multiprotocol {
                    afi: Afi::Ipv6,
                    safi: Safi::Unicast,
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
    /// AS_SET, AS_SEQUENCE or a confederation type (kept as is).
    pub kind: SegmentType,
    /// The ASes (1 to 255; the encoder refuses more).
    pub asns: Vec<u32>,
}

/// A path attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// ORIGIN.
    Origin(Origin),
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
        afi: Afi,
        /// Subsequent address family.
        safi: Safi,
        /// Next hop(s): 16 octets (global) or 32 (global + link-local) for IPv6.
        next_hop: Vec<u8>,
        /// Reachable prefixes (none kept for a family other than IPv4 or
        /// IPv6 unicast).
        nlri: Vec<Prefix>,
    },
    /// MP_UNREACH_NLRI.
    MpUnreach {
        /// Address family.
        afi: Afi,
        /// Subsequent address family.
        safi: Safi,
        /// Withdrawn prefixes.
        withdrawn: Vec<Prefix>,
    },
    /// AS4_PATH (always 4-octet ASes).
    As4Path(Vec<AsSegment>),
    /// Any other attribute, kept raw (unknown optional ones, and those vc5
    /// passes over such as ATOMIC_AGGREGATE).
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
    /// Error code and subcode.
    pub kind: NotificationKind,
    /// Data.
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION without data: `Notification::new(CeaseSubcode::HardReset)`,
    /// `Notification::new(NotificationKind::HoldTimerExpired)`, or from the
    /// numbers, `Notification::new((6, 9))`.
    pub fn new(kind: impl Into<NotificationKind>) -> Notification {
        Notification {
            kind: kind.into(),
            data: Vec::new(),
        }
    }

    /// Cease / Administrative Shutdown, sent when vc5 stops.
    pub fn admin_shutdown() -> Notification {
        Notification::new(CeaseSubcode::AdministrativeShutdown)
    }

    /// The error code on the wire.
    pub fn code(&self) -> u8 {
        self.kind.code()
    }

    /// The error subcode on the wire.
    pub fn subcode(&self) -> u8 {
        self.kind.subcode()
    }

    /// The RFC 8203 shutdown communication carried by Cease/Administrative
    /// Shutdown or Reset, when present and well formed.
    pub fn shutdown_message(&self) -> Option<String> {
        if !matches!(
            self.kind,
            NotificationKind::Cease(
                CeaseSubcode::AdministrativeShutdown | CeaseSubcode::AdministrativeReset
            )
        ) {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(len))?;
        Some(String::from_utf8_lossy(text).into_owned())
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.kind.code_name().unwrap_or("unknown error");
        write!(f, "{code} ({}/{})", self.code(), self.subcode())?;
        if let Some(sub) = self.kind.subcode_name() {
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
        afi: Afi,
        /// Subsequent address family.
        safi: Safi,
    },
}

impl Message {
    /// The message's type code.
    pub fn kind(&self) -> super::MessageType {
        use super::MessageType as T;
        match self {
            Message::Open(_) => T::Open,
            Message::Update(_) => T::Update,
            Message::Notification(_) => T::Notification,
            Message::Keepalive => T::Keepalive,
            Message::RouteRefresh { .. } => T::RouteRefresh,
        }
    }
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

/// The attributes vc5 attaches to its routes (see [`super::build_updates`]).
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
