//! The first pass: the file as written. Every struct refuses unknown keys, and
//! every value checked later keeps its position ([`Spanned`], or a value type of
//! `spanned` that holds a node of the wrong type), so that the second pass can
//! name the line and column of what it refuses.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::{Location, Spanned};

use super::model::Protocol;
use super::spanned::{Bool, Int, OneOrMany, RawDuration, Text};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default, deserialize_with = "present")]
    pub(super) multicast: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) flow_sync_key: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) flow_sync_wait: Option<Spanned<RawDuration>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) flow_sync_rate: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) flow_sync_resync_rate: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) flow_insert_limit: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) rhi: Option<RawRhi>,
    #[serde(default)]
    pub(super) services: Vec<Spanned<RawService>>,
    #[serde(default)]
    pub(super) reals: RawGroups,
    #[serde(default, deserialize_with = "present")]
    pub(super) vlans: Option<Spanned<RawVlans>>,
}

/// The `vlans` map, in file order: each VLAN ID (as written, with its
/// position) and its prefix or prefixes.
pub(super) struct RawVlans(pub(super) Vec<(Spanned<Int>, OneOrMany<String>)>);

impl<'de> Deserialize<'de> for RawVlans {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct VlansVisitor;

        impl<'de> Visitor<'de> for VlansVisitor {
            type Value = RawVlans;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of VLAN IDs to a prefix or a list of prefixes")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawVlans, A::Error> {
                let mut vlans = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    vlans.push(entry);
                }
                Ok(RawVlans(vlans))
            }
        }

        d.deserialize_map(VlansVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRhi {
    #[serde(default, deserialize_with = "present")]
    pub(super) as_number: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) peers: Option<OneOrMany<String>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) hold_time: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) communities: Option<OneOrMany<String>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) med: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) local_pref: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) next_hop6: Option<Spanned<Text>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: Spanned<Text>,
    #[serde(default, deserialize_with = "present")]
    pub(super) desc: Option<Spanned<Text>>,
    pub(super) addr: OneOrMany<String>,
    pub(super) port: OneOrMany<Int>,
    #[serde(default, deserialize_with = "present")]
    pub(super) protocol: Option<Protocol>,
    #[serde(default, deserialize_with = "present")]
    pub(super) forward: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) tunnel_port: Option<Spanned<Int>>,
    pub(super) real: OneOrMany<String>,
    #[serde(default, deserialize_with = "present")]
    pub(super) need: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) quorum: Option<Spanned<Int>>,
    #[serde(default)]
    pub(super) checks: Vec<Spanned<RawCheck>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    #[serde(default, deserialize_with = "present")]
    pub(super) name: Option<Spanned<Text>>,
    #[serde(rename = "type")]
    pub(super) kind: CheckType,
    #[serde(default, deserialize_with = "present")]
    pub(super) port: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) interval: Option<Spanned<RawDuration>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) timeout: Option<Spanned<RawDuration>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) rise: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) fall: Option<Spanned<Int>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) path: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) host: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) method: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) expect: Option<OneOrMany<Int>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) verify: Option<Spanned<Bool>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) query: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) qtype: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) transport: Option<Spanned<Protocol>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) rcode: Option<Spanned<Text>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) probe: Option<Spanned<Text>>,
}

/// A check's `type` as the file writes it; the second pass turns it, with the
/// keys of that type, into vc5-health's `CheckKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum CheckType {
    Tcp,
    Http,
    Https,
    Dns,
}

impl CheckType {
    pub(super) fn is_http(self) -> bool {
        matches!(self, CheckType::Http | CheckType::Https)
    }
}

impl fmt::Display for CheckType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckType::Tcp => "tcp",
            CheckType::Http => "http",
            CheckType::Https => "https",
            CheckType::Dns => "dns",
        })
    }
}

/// For an optional key: absent is `None` (through `#[serde(default)]`), while a
/// present key goes to `T` even when its value is `null`. serde's `Option` would
/// read `need: null` as "not given" and quietly apply the default, which is not
/// what an operator who wrote the key meant; `T` refuses a null instead.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The `reals` map, in file order, with the position of each group name.
#[derive(Default)]
pub(super) struct RawGroups(pub(super) Vec<(Spanned<String>, Vec<Spanned<RawReal>>)>);

impl<'de> Deserialize<'de> for RawGroups {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct GroupsVisitor;

        impl<'de> Visitor<'de> for GroupsVisitor {
            type Value = RawGroups;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of real group names to lists of reals")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawGroups, A::Error> {
                let mut groups = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    groups.push(entry);
                }
                Ok(RawGroups(groups))
            }
        }

        d.deserialize_map(GroupsVisitor)
    }
}

/// A real in a group: a bare address, or a map with `addr` and optional settings.
/// Written by hand because serde's untagged enums lose the positions.
pub(super) struct RawReal {
    pub(super) addr: Text,
    /// Where `addr` is when the real is a map; a bare address is the node itself.
    pub(super) addr_at: Option<Location>,
    pub(super) weight: Option<Spanned<Int>>,
    pub(super) disabled: Option<Spanned<Bool>>,
}

impl<'de> Deserialize<'de> for RawReal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RealVisitor;

        const FIELDS: &[&str] = &["addr", "weight", "disabled"];

        impl<'de> Visitor<'de> for RealVisitor {
            type Value = RawReal;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address or a map with addr, weight and disabled")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawReal, E> {
                Ok(RawReal {
                    addr: Text(Ok(v.to_owned())),
                    addr_at: None,
                    weight: None,
                    disabled: None,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawReal, A::Error> {
                let mut addr: Option<Spanned<Text>> = None;
                let mut weight = None;
                let mut disabled = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "addr" => addr = Some(map.next_value()?),
                        "weight" => weight = Some(map.next_value()?),
                        "disabled" => disabled = Some(map.next_value()?),
                        other => return Err(de::Error::unknown_field(other, FIELDS)),
                    }
                }
                let addr = addr.ok_or_else(|| de::Error::missing_field("addr"))?;
                Ok(RawReal {
                    addr: addr.value,
                    addr_at: Some(addr.referenced),
                    weight,
                    disabled,
                })
            }
        }

        d.deserialize_any(RealVisitor)
    }
}
