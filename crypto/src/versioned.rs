//! Formats that can evolve: every stored or sent type is decoded by reading its version first, then that version's layout, then upgrading to the current type.
//!
//! Every witmed type that is stored or sent is postcard bytes whose first
//! field is a `u32` version. Postcard is not self-describing, so a reader
//! that decoded the bytes as today's layout would fail on any other layout
//! before it saw the version. [`decode`] therefore reads the version alone
//! first and hands it to the type's [`Evolving::from_version`], which picks
//! the layout of that version (a struct frozen as it was written), decodes
//! it and upgrades it (`impl From<TypeV1> for Type`), or refuses it with a
//! clear [`Error`] when no upgrade is possible.
//!
//! The bytes written today are unchanged by this: the version was always
//! the first field, so no store format or wire version was bumped.
//!
//! Adding a version: freeze the old layout as `TypeV{n}` (with its version
//! field and every field as it was), write `From<TypeV{n}> for Type`, add its
//! arm to `from_version`, bump the type's version constant and commit a new
//! golden fixture (the golden tests fail until you do).

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why bytes did not decode as a type. Codes (see [`Error::code`]) are stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes are not a value of this type in the layout their version names.
    #[error("{what} does not decode as its format version {version}: {detail}")]
    Malformed {
        what: &'static str,
        version: u32,
        detail: String,
    },
    /// The bytes decode, but re-encoding gives other bytes (signed payloads
    /// must have exactly one form).
    #[error("{what} is not in canonical form")]
    NonCanonical { what: &'static str },
    /// Written by a newer witmed.
    #[error("{what} has format version {found}, this witmed reads versions up to {current}; upgrade witmed")]
    Newer {
        what: &'static str,
        found: u32,
        current: u32,
    },
    /// An older version this witmed no longer accepts, and why.
    #[error("{what} has format version {found}, which this witmed no longer reads: {why}")]
    Obsolete {
        what: &'static str,
        found: u32,
        why: &'static str,
    },
}

impl Error {
    /// Stable machine-readable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Malformed { .. } => "format_malformed",
            Error::NonCanonical { .. } => "format_non_canonical",
            Error::Newer { .. } => "format_newer",
            Error::Obsolete { .. } => "format_obsolete",
        }
    }

    /// The version found in the bytes, when the error is about the version itself.
    pub fn unsupported_version(&self) -> Option<u32> {
        match self {
            Error::Newer { found, .. } | Error::Obsolete { found, .. } => Some(*found),
            _ => None,
        }
    }
}

/// A stored or sent type whose format may evolve.
pub trait Evolving: Serialize + Sized {
    /// What the type is, for error messages ("patient record", "query").
    const WHAT: &'static str;
    /// The version written today.
    const CURRENT: u32;

    /// Decodes the bytes of format `version` and upgrades them to today's type.
    ///
    /// One arm per version: `CURRENT => layout.read::<Self>()`, an older
    /// version `n => layout.read::<TypeVn>().map(Self::from)`, or a refusal
    /// with [`obsolete`]; every other version goes to [`unknown`].
    fn from_version(version: u32, layout: Layout<'_>) -> Result<Self, Error>;
}

/// The bytes of one value and the version read from them, handed to
/// [`Evolving::from_version`] to decode as one layout.
pub struct Layout<'a> {
    what: &'static str,
    version: u32,
    bytes: &'a [u8],
    canonical: bool,
}

impl Layout<'_> {
    /// Decodes the bytes as layout `L` (which starts with the same version
    /// field); the value must use every byte.
    ///
    /// For signed payloads ([`decode_canonical`]) the bytes must also be
    /// exactly what re-encoding the value gives.
    pub fn read<L: Serialize + DeserializeOwned>(&self) -> Result<L, Error> {
        let malformed = |detail: String| Error::Malformed {
            what: self.what,
            version: self.version,
            detail,
        };
        let (value, rest) =
            postcard::take_from_bytes::<L>(self.bytes).map_err(|e| malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(malformed(format!("{} trailing bytes", rest.len())));
        }
        if !self.canonical {
            return Ok(value);
        }
        let again = postcard::to_stdvec(&value).map_err(|e| malformed(e.to_string()))?;
        if again != self.bytes {
            return Err(Error::NonCanonical { what: self.what });
        }
        Ok(value)
    }

    /// The version read from the bytes.
    pub fn version(&self) -> u32 {
        self.version
    }
}

/// Encodes today's version of a value (its version field comes first).
pub fn encode<T: Evolving>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("witmed's stored and sent types always serialize")
}

/// Decodes stored or received bytes: version first, then its layout, then the upgrade.
pub fn decode<T: Evolving>(bytes: &[u8]) -> Result<T, Error> {
    decode_as::<T>(bytes, false)
}

/// Like [`decode`], and the bytes must be the value's canonical
/// form (what signed payloads need: one object, one signed form).
pub fn decode_canonical<T: Evolving>(bytes: &[u8]) -> Result<T, Error> {
    decode_as::<T>(bytes, true)
}

/// Reads only the leading version of a value's bytes.
pub fn read_version<T: Evolving>(bytes: &[u8]) -> Result<u32, Error> {
    postcard::take_from_bytes::<u32>(bytes)
        .map(|(version, _)| version)
        .map_err(|e| Error::Malformed {
            what: T::WHAT,
            version: 0,
            detail: format!("no leading format version: {e}"),
        })
}

fn decode_as<T: Evolving>(bytes: &[u8], canonical: bool) -> Result<T, Error> {
    let version = read_version::<T>(bytes)?;
    T::from_version(
        version,
        Layout {
            what: T::WHAT,
            version,
            bytes,
            canonical,
        },
    )
}

/// The refusal for a version this witmed does not know: newer, or an older
/// one with no upgrade.
pub fn unknown<T: Evolving>(found: u32) -> Error {
    if found > T::CURRENT {
        return Error::Newer {
            what: T::WHAT,
            found,
            current: T::CURRENT,
        };
    }
    obsolete::<T>(found, "no upgrade from it exists")
}

/// The refusal for an older version that is deliberately not upgraded, and why.
pub fn obsolete<T: Evolving>(found: u32, why: &'static str) -> Error {
    Error::Obsolete {
        what: T::WHAT,
        found,
        why,
    }
}

/// Implements [`Evolving`] for types that have only ever had one layout:
/// `single_version!(Type, "what it is", VERSION_CONSTANT);`.
#[macro_export]
macro_rules! single_version {
    ($type:ty, $what:expr, $current:expr) => {
        impl $crate::versioned::Evolving for $type {
            const WHAT: &'static str = $what;
            const CURRENT: u32 = $current;
            fn from_version(
                version: u32,
                layout: $crate::versioned::Layout<'_>,
            ) -> Result<Self, $crate::versioned::Error> {
                match version {
                    v if v == $current => layout.read::<Self>(),
                    found => Err($crate::versioned::unknown::<Self>(found)),
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// Version 1 of the example type: no `unit`.
    #[derive(Debug, Serialize, Deserialize)]
    struct ReadingV1 {
        version: u32,
        value: f64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Reading {
        version: u32,
        value: f64,
        unit: String,
    }

    impl From<ReadingV1> for Reading {
        fn from(old: ReadingV1) -> Reading {
            Reading {
                version: 2,
                value: old.value,
                unit: "mmHg".into(),
            }
        }
    }

    impl Evolving for Reading {
        const WHAT: &'static str = "reading";
        const CURRENT: u32 = 2;
        fn from_version(version: u32, layout: Layout<'_>) -> Result<Self, Error> {
            match version {
                2 => layout.read::<Reading>(),
                1 => layout.read::<ReadingV1>().map(Reading::from),
                found => Err(unknown::<Reading>(found)),
            }
        }
    }

    #[test]
    fn an_older_layout_is_read_by_its_version_and_upgraded() {
        let old = postcard::to_stdvec(&ReadingV1 {
            version: 1,
            value: 80.0,
        })
        .unwrap();
        // Today's layout alone cannot read the old bytes: that is why the version goes first.
        assert!(postcard::from_bytes::<Reading>(&old).is_err());
        let upgraded: Reading = decode(&old).unwrap();
        assert_eq!(upgraded.unit, "mmHg");
        assert_eq!(upgraded.value, 80.0);
    }

    #[test]
    fn newer_versions_and_garbage_are_refused_with_their_codes() {
        let mut newer = encode(&Reading {
            version: 2,
            value: 1.0,
            unit: "x".into(),
        });
        newer[0] = 7;
        let err = decode::<Reading>(&newer).unwrap_err();
        assert_eq!(err.code(), "format_newer");
        assert!(err.to_string().contains("upgrade witmed"));
        assert_eq!(
            decode::<Reading>(&[]).unwrap_err().code(),
            "format_malformed"
        );
        assert_eq!(
            decode::<Reading>(&[0]).unwrap_err().code(),
            "format_obsolete"
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&Reading {
            version: 2,
            value: 1.0,
            unit: "x".into(),
        });
        assert!(decode_canonical::<Reading>(&bytes).is_ok());
        bytes.push(0);
        assert_eq!(
            decode::<Reading>(&bytes).unwrap_err().code(),
            "format_malformed"
        );
    }
}
