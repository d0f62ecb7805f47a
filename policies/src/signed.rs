//! Reading signed objects: the size bound, parsing, and opening a versioned payload.

use serde::de::DeserializeOwned;
use serde::Serialize;
use witmed_crypto::envelope;
use witmed_crypto::Envelope;

use crate::error::{Error, Object};

/// Largest signed consent token, revocation, credential or node policy
/// accepted, in bytes of its text or wire form. Real ones are under 2 KiB;
/// the bound keeps a hostile submitter from making a node parse megabytes.
pub const MAX_SIGNED_BYTES: usize = 16 * 1024;

/// Parses the text (file) form of a signed object, refusing anything over
/// [`MAX_SIGNED_BYTES`] before parsing. Verification is a separate step.
pub fn parse_signed(text: &str) -> Result<Envelope, Error> {
    Ok(Envelope::from_text(text, MAX_SIGNED_BYTES)?)
}

/// Parses the wire form of a signed object, refusing anything over
/// [`MAX_SIGNED_BYTES`] before parsing. Verification is a separate step.
pub fn parse_signed_bytes(bytes: &[u8]) -> Result<Envelope, Error> {
    Ok(Envelope::from_bytes(bytes, MAX_SIGNED_BYTES)?)
}

/// A signed payload type: its domain, its current version and where it keeps its version.
pub(crate) trait Versioned: Serialize + DeserializeOwned {
    const OBJECT: Object;
    const DOMAIN: &'static str;
    const VERSION: u32;
    fn version(&self) -> u32;
}

/// Checks size, domain and signature, decodes the payload and checks its version.
///
/// Who signed is left to the caller, which knows whose signature it needs.
pub(crate) fn open<T: Versioned>(envelope: &Envelope) -> Result<T, Error> {
    // An envelope may arrive inside a larger message, not only through
    // `parse_signed`, so the bound is enforced here too.
    if envelope.payload.len() > MAX_SIGNED_BYTES {
        return Err(envelope::Error::TooLarge {
            len: envelope.payload.len(),
            max: MAX_SIGNED_BYTES,
        }
        .into());
    }
    match envelope.open::<T>(T::DOMAIN) {
        Ok(value) if value.version() == T::VERSION => Ok(value),
        Ok(value) => Err(unsupported::<T>(value.version())),
        // A newer format may not decode as this one; say "newer version"
        // rather than "garbage" when its leading version field shows it.
        Err(e @ (envelope::Error::Payload(_) | envelope::Error::NonCanonical)) => {
            match postcard::take_from_bytes::<u32>(&envelope.payload) {
                Ok((found, _)) if found != T::VERSION => Err(unsupported::<T>(found)),
                _ => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn unsupported<T: Versioned>(found: u32) -> Error {
    Error::UnsupportedVersion {
        what: T::OBJECT,
        found,
        supported: T::VERSION,
    }
}
