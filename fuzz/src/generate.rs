//! Structure-aware inputs: any `Deserialize` type built from fuzz bytes with `arbitrary`.
//!
//! witmed's wire and file types live in crates that must not depend on a
//! fuzzing crate, and Rust's orphan rule forbids implementing `Arbitrary`
//! for them here. Every one of them derives `Deserialize`, though, so
//! [`value`] drives that derive with a [`serde::Deserializer`] whose every
//! answer (an integer, a string, which enum variant, how many elements) is
//! drawn from an [`arbitrary::Unstructured`]. The same fuzz bytes always give
//! the same value, and a mutation of the bytes gives a nearby value, so the
//! byte-level mutator in [`crate::engine`] explores typed values too.
//!
//! The deserializer is not human-readable, so keys and pseudonyms come out
//! as their raw bytes, as postcard carries them.

use std::fmt;

use arbitrary::Unstructured;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

/// Most elements in a generated sequence or map: enough to reach every
/// "too many" check that matters, few enough to keep executions fast.
const MAX_ELEMENTS: usize = 12;
/// Deepest nesting generated (witmed types are shallow; this only guards recursion).
const MAX_DEPTH: u32 = 24;

/// Floats that sit on the edges validators check.
const EDGE_FLOATS: [f64; 14] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1e-6,
    1e-3,
    10.0,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::MAX,
    f64::MIN_POSITIVE,
    f64::EPSILON,
];

/// Why no value could be built (the bytes ran out mid-way is not one: then defaults are used).
#[derive(Debug)]
pub struct GenError(String);

impl fmt::Display for GenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GenError {}

impl de::Error for GenError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        GenError(msg.to_string())
    }
}

impl From<arbitrary::Error> for GenError {
    fn from(e: arbitrary::Error) -> Self {
        GenError(e.to_string())
    }
}

/// Builds a `T` from `u`, picking strings from `words` half of the time so
/// that codes validators look for (`HMB`, `count`, a LOINC code) turn up.
///
/// Fails only when `T`'s own `Deserialize` refuses what was drawn (a custom
/// check), which the caller treats as "no input this time".
pub fn value<T: DeserializeOwned>(
    u: &mut Unstructured<'_>,
    words: &'static [&'static str],
) -> Result<T, GenError> {
    let mut generator = Generator { u, words, depth: 0 };
    T::deserialize(&mut generator)
}

struct Generator<'a, 'b> {
    u: &'b mut Unstructured<'a>,
    words: &'static [&'static str],
    depth: u32,
}

impl Generator<'_, '_> {
    fn string(&mut self) -> Result<String, GenError> {
        if !self.words.is_empty() && self.u.ratio(1, 2)? {
            return Ok(self.u.choose(self.words)?.to_string());
        }
        let len = self.u.int_in_range(0..=40usize)?;
        let mut s = String::with_capacity(len);
        for _ in 0..len {
            s.push(self.u.arbitrary::<char>()?);
        }
        Ok(s)
    }

    fn float(&mut self) -> Result<f64, GenError> {
        Ok(match self.u.int_in_range(0..=3u8)? {
            0 => *self.u.choose(&EDGE_FLOATS)?,
            1 => f64::from_bits(self.u.arbitrary()?),
            _ => f64::from(self.u.int_in_range(-2000..=2000i32)?) / 4.0,
        })
    }

    fn length(&mut self) -> Result<usize, GenError> {
        Ok(self.u.int_in_range(0..=MAX_ELEMENTS)?)
    }

    fn nest<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R, GenError>) -> Result<R, GenError> {
        if self.depth >= MAX_DEPTH {
            return Err(GenError("nested too deep".into()));
        }
        self.depth += 1;
        let out = f(self);
        self.depth -= 1;
        out
    }
}

macro_rules! integer {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GenError> {
            // Small values most of the time (lengths, versions, counts), any value otherwise.
            let v: $ty = if self.u.ratio(1, 2)? {
                self.u.int_in_range(0..=3)?
            } else {
                self.u.arbitrary()?
            };
            visitor.$visit(v)
        }
    };
}

impl<'de> de::Deserializer<'de> for &mut Generator<'_, '_> {
    type Error = GenError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, GenError> {
        Err(GenError(
            "self-describing types cannot be generated; witmed types are not".into(),
        ))
    }

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GenError> {
        visitor.visit_bool(self.u.arbitrary()?)
    }

    integer!(deserialize_i8, visit_i8, i8);
    integer!(deserialize_i16, visit_i16, i16);
    integer!(deserialize_i32, visit_i32, i32);
    integer!(deserialize_i64, visit_i64, i64);
    integer!(deserialize_i128, visit_i128, i128);
    integer!(deserialize_u8, visit_u8, u8);
    integer!(deserialize_u16, visit_u16, u16);
    integer!(deserialize_u32, visit_u32, u32);
    integer!(deserialize_u64, visit_u64, u64);
    integer!(deserialize_u128, visit_u128, u128);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GenError> {
        visitor.visit_f32(self.float()? as f32)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GenError> {
        visitor.visit_f64(self.float()?)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GenError> {
        visitor.visit_char(self.u.arbitrary()?)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GenError> {
        visitor.visit_string(self.string()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GenError> {
        visitor.visit_string(self.string()?)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GenError> {
        let len = self.u.int_in_range(0..=256usize)?.min(self.u.len());
        visitor.visit_byte_buf(self.u.bytes(len)?.to_vec())
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GenError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GenError> {
        if self.u.arbitrary()? {
            self.nest(|g| visitor.visit_some(g))
        } else {
            visitor.visit_none()
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GenError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, GenError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, GenError> {
        self.nest(|g| visitor.visit_newtype_struct(g))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GenError> {
        let len = self.length()?;
        self.nest(|g| visitor.visit_seq(Elements { g, left: len }))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, GenError> {
        self.nest(|g| visitor.visit_seq(Elements { g, left: len }))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, GenError> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GenError> {
        let len = self.length()?;
        self.nest(|g| visitor.visit_map(Elements { g, left: len }))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, GenError> {
        // Derived structs accept their fields in order as a sequence, as postcard sends them.
        self.deserialize_tuple(fields.len(), visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, GenError> {
        let index = self.u.choose_index(variants.len().max(1))?;
        self.nest(|g| visitor.visit_enum(Variant { g, index }))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GenError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GenError> {
        visitor.visit_unit()
    }
}

/// A sequence or map of a known number of generated elements.
struct Elements<'g, 'a, 'b> {
    g: &'g mut Generator<'a, 'b>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_, '_, '_> {
    type Error = GenError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, GenError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.g).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_, '_, '_> {
    type Error = GenError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, GenError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.g).map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, GenError> {
        seed.deserialize(&mut *self.g)
    }
}

/// One chosen enum variant.
struct Variant<'g, 'a, 'b> {
    g: &'g mut Generator<'a, 'b>,
    index: usize,
}

impl<'de, 'g, 'a, 'b> de::EnumAccess<'de> for Variant<'g, 'a, 'b> {
    type Error = GenError;
    type Variant = Self;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self), GenError> {
        let index = u32::try_from(self.index).map_err(|_| GenError("too many variants".into()))?;
        let tag_source: de::value::U32Deserializer<GenError> = index.into_deserializer();
        let tag = seed.deserialize(tag_source)?;
        Ok((tag, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, '_, '_> {
    type Error = GenError;

    fn unit_variant(self) -> Result<(), GenError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, GenError> {
        seed.deserialize(&mut *self.g)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, GenError> {
        de::Deserializer::deserialize_tuple(&mut *self.g, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, GenError> {
        de::Deserializer::deserialize_tuple(&mut *self.g, fields.len(), visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use witmed_protocol::query::Query;

    /// Every byte string yields some query, and different bytes reach different shapes.
    #[test]
    fn builds_queries_of_many_shapes() {
        let mut kinds = std::collections::BTreeSet::new();
        for i in 0..400u32 {
            let bytes: Vec<u8> = (0..512u32)
                .map(|j| (i.wrapping_mul(2654435761) ^ j.wrapping_mul(40503)) as u8)
                .collect();
            let mut u = Unstructured::new(&bytes);
            if let Ok(q) = value::<Query>(&mut u, &["HMB", "count"]) {
                kinds.insert(q.aggregate.kind());
            }
        }
        assert!(kinds.len() >= 4, "only {kinds:?}");
    }
}
