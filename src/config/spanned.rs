//! The value types of the first pass: an integer, a string, a boolean, a duration,
//! a value or a list of values, each as written. A node of the wrong type is kept
//! as a description rather than refused here, so that the second pass can refuse
//! it at the node's own position.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

use super::lexical::quoted;

// serde-saphyr places an error raised by a visitor for a scalar map value at the key,
// not at the value. So the visitors below accept any node, keep what they could not
// use as a description, and the normaliser reports it at the node's own span.

/// Consumes a list of the wrong type and describes it for the message.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<String, A::Error> {
    while seq.next_element::<de::IgnoredAny>()?.is_some() {}
    Ok("a list".to_owned())
}

/// Consumes a map of the wrong type and describes it for the message.
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<String, A::Error> {
    while map
        .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
        .is_some()
    {}
    Ok("a map".to_owned())
}

/// Implements the visitor methods that turn a boolean, a float, a null or a map into
/// `$bad(description)`.
macro_rules! visit_wrong_types {
    ($bad:expr) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(($bad)(format!("`{v}`")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(($bad)(format!("`{v}`")))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(($bad)("nothing".to_owned()))
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(($bad)("nothing".to_owned()))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            skip_map(map).map($bad)
        }
    };
}

/// An integer as written; ranges are checked later so the message can name the
/// setting. `Err` holds a description of a node that is not an integer.
#[derive(Debug, Clone)]
pub(super) struct Int(pub(super) Result<i64, String>);

struct IntVisitor;

impl<'de> Visitor<'de> for IntVisitor {
    type Value = Int;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
        Ok(Int(Ok(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
        Ok(Int(i64::try_from(v).map_err(|_| format!("`{v}`"))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Int, E> {
        Ok(Int(Err(quoted(v))))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Int, A::Error> {
        skip_seq(seq).map(|f| Int(Err(f)))
    }

    visit_wrong_types!(|f| Int(Err(f)));
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IntVisitor)
    }
}

/// A string as written. A node that YAML reads as something else (`null`, `true`,
/// `.inf`, `1.5`, a list) is kept as a description for the normaliser to refuse at
/// its own position: taking its spelling would let `name: ~` pass as the name "~".
/// Integers keep their decimal spelling, as group names such as `5` do.
#[derive(Debug, Clone)]
pub(super) struct Text(pub(super) Result<String, String>);

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
        Ok(Text(Ok(v.to_owned())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
        Ok(Text(Ok(v.to_string())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
        Ok(Text(Ok(v.to_string())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Text, A::Error> {
        skip_seq(seq).map(|f| Text(Err(f)))
    }

    visit_wrong_types!(|f| Text(Err(f)));
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor)
    }
}

/// A boolean as written. A quoted `'true'` or `'yes'` is a string that YAML says is
/// not a boolean, so it is refused rather than coerced as serde-saphyr would.
#[derive(Debug, Clone)]
pub(super) struct Bool(pub(super) Result<bool, String>);

struct BoolVisitor;

impl<'de> Visitor<'de> for BoolVisitor {
    type Value = Bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("true or false")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Bool, E> {
        Ok(Bool(Ok(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Bool, E> {
        let word = v.to_ascii_lowercase();
        Ok(Bool(Err(
            if ["true", "false", "yes", "no", "on", "off"].contains(&word.as_str()) {
                format!("the quoted string {}: write it without quotes", quoted(v))
            } else {
                quoted(v)
            },
        )))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Bool, E> {
        Ok(Bool(Err(format!("`{v}`"))))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Bool, E> {
        Ok(Bool(Err(format!("`{v}`"))))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Bool, E> {
        Ok(Bool(Err(format!("`{v}`"))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Bool, E> {
        Ok(Bool(Err("nothing".to_owned())))
    }

    fn visit_none<E: de::Error>(self) -> Result<Bool, E> {
        Ok(Bool(Err("nothing".to_owned())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Bool, A::Error> {
        skip_seq(seq).map(|f| Bool(Err(f)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Bool, A::Error> {
        skip_map(map).map(|f| Bool(Err(f)))
    }
}

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BoolVisitor)
    }
}

/// A duration as written: a number of seconds or a string with a unit.
pub(super) enum RawDuration {
    Int(i64),
    Float(f64),
    Text(String),
    Bad(String),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl<'de> Visitor<'de> for DurationVisitor {
            type Value = RawDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds or a duration such as \"500ms\"")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Int(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(i64::try_from(v)
                    .map_or_else(|_| RawDuration::Bad(format!("`{v}`")), RawDuration::Int))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                Ok(RawDuration::Float(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.to_owned()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawDuration, E> {
                Ok(RawDuration::Bad(format!("`{v}`")))
            }

            fn visit_unit<E: de::Error>(self) -> Result<RawDuration, E> {
                Ok(RawDuration::Bad("nothing".to_owned()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawDuration, A::Error> {
                skip_seq(seq).map(RawDuration::Bad)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawDuration, A::Error> {
                skip_map(map).map(RawDuration::Bad)
            }
        }

        d.deserialize_any(DurationVisitor)
    }
}

/// A value that is written alone or in a list: what [`OneOrMany`] accepts alone.
pub(super) trait Leaf: DeserializeOwned {
    /// What the whole node should be, for messages.
    const EXPECTING: &'static str;
    /// A lone string.
    fn from_text(v: &str) -> Self;
    /// A lone integer.
    fn from_int(v: i64) -> Self;
}

impl Leaf for String {
    const EXPECTING: &'static str = "a string or a list of strings";

    fn from_text(v: &str) -> Self {
        v.to_owned()
    }

    // A lone scalar arrives already typed, so a name such as `5` comes as a number;
    // decimal integers keep their spelling. Booleans and floats may not (`yes`,
    // `1.10`), so those are refused and have to be quoted.
    fn from_int(v: i64) -> Self {
        v.to_string()
    }
}

impl Leaf for Int {
    const EXPECTING: &'static str = "an integer or a list of integers";

    // Kept for the normaliser to refuse, at the value's own position.
    fn from_text(v: &str) -> Self {
        Int(Err(quoted(v)))
    }

    fn from_int(v: i64) -> Self {
        Int(Ok(v))
    }
}

/// A value or a list of values, each with its position, and where the whole is.
pub(super) struct OneOrMany<T> {
    pub(super) at: Location,
    pub(super) items: Vec<Spanned<T>>,
    /// A description of the node when it was neither a value nor a list.
    pub(super) wrong: Option<String>,
}

enum OneOrManyInner<T> {
    One(T),
    Many(Vec<Spanned<T>>),
    Wrong(String),
}

struct InnerVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Leaf> Visitor<'de> for InnerVisitor<T> {
    type Value = OneOrManyInner<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(OneOrManyInner::One(T::from_text(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(OneOrManyInner::One(T::from_int(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(match i64::try_from(v) {
            Ok(v) => OneOrManyInner::One(T::from_int(v)),
            Err(_) => OneOrManyInner::Wrong(format!("`{v}`")),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<T>>()? {
            items.push(item);
        }
        Ok(OneOrManyInner::Many(items))
    }

    visit_wrong_types!(OneOrManyInner::Wrong);
}

impl<'de, T: Leaf> Deserialize<'de> for OneOrManyInner<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(InnerVisitor(std::marker::PhantomData))
    }
}

impl<'de, T: Leaf> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The span is taken around the whole node because a lone value's visitor
        // cannot learn its own position.
        let whole = Spanned::<OneOrManyInner<T>>::deserialize(d)?;
        let (items, wrong) = match whole.value {
            OneOrManyInner::One(v) => {
                (vec![Spanned::new(v, whole.referenced, whole.defined)], None)
            }
            OneOrManyInner::Many(items) => (items, None),
            OneOrManyInner::Wrong(found) => (Vec::new(), Some(found)),
        };
        Ok(OneOrMany {
            at: whole.referenced,
            items,
            wrong,
        })
    }
}
