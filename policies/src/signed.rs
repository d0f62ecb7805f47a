//! Reading signed objects: the size bound, parsing, and opening a versioned payload.

use witmed_crypto::envelope;
use witmed_crypto::versioned::{self, Evolving};
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

/// A signed payload type: its domain and what it is. Its bytes are read through [`Evolving`]: version first.
pub(crate) trait Versioned: Evolving {
    const OBJECT: Object;
    const DOMAIN: &'static str;
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
    open_payload::<T>(envelope, T::DOMAIN, T::OBJECT)
}

/// Checks domain and signature, then decodes the payload through its
/// version: an upgrade for an older version that has one, and
/// [`Error::UnsupportedVersion`] for a newer one or one with none.
pub(crate) fn open_payload<T: Evolving>(
    envelope: &Envelope,
    domain: &str,
    object: Object,
) -> Result<T, Error> {
    envelope.verify(domain)?;
    versioned::decode_canonical::<T>(&envelope.payload).map_err(|e| match e {
        versioned::Error::NonCanonical { .. } => envelope::Error::NonCanonical.into(),
        versioned::Error::Malformed { detail, .. } => envelope::Error::Payload(detail).into(),
        versioned::Error::Newer { found, .. } | versioned::Error::Obsolete { found, .. } => {
            Error::UnsupportedVersion {
                what: object,
                found,
                supported: T::CURRENT,
            }
        }
    })
}
