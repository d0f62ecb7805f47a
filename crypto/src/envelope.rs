//! The signed envelope: one container for every signed object in witmed.
//!
//! An envelope holds canonical payload bytes (postcard encoding of a
//! versioned payload type), the signer's public key and an ed25519 signature
//! over a domain-separated message:
//!
//! ```text
//! "witmed-envelope" 0x00 | version u32 LE | len(domain) u32 LE | domain | len(payload) u64 LE | payload
//! ```
//!
//! The domain names the kind of object and its version (for example
//! `witmed/consent-token/v1`), so a signature over a consent token can never
//! be replayed as a query or a policy. Opening an envelope checks, in order:
//! size, format version, domain, signature, then payload decoding, and
//! finally that the payload is canonical (re-encoding the decoded value gives
//! back the very same bytes), so one object has exactly one signed form.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::keys::{KeyPair, PublicKey};
use crate::versioned;

/// Envelope format version written today.
pub const ENVELOPE_VERSION: u32 = 1;

const SIGNING_PREFIX: &[u8] = b"witmed-envelope\0";

/// Errors from opening an envelope. Each says what was wrong with the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Larger than the caller's limit; nothing was parsed.
    #[error("signed object is {len} bytes, over the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// Not an envelope at all (truncated, garbage, bad base64...).
    #[error("not a valid signed witmed object: {0}")]
    Malformed(String),
    /// Written by a newer witmed.
    #[error("signed object has envelope version {0}, this witmed reads version {ENVELOPE_VERSION}; upgrade witmed")]
    UnsupportedVersion(u32),
    /// A valid envelope of another kind (e.g. a credential given where a consent token is expected).
    #[error("signed object is a {found:?}, expected a {expected:?}")]
    WrongDomain { expected: String, found: String },
    /// The signature does not verify under the named signer: altered or forged.
    #[error("signature does not verify: the object was altered or not signed by {signer}")]
    BadSignature { signer: String },
    /// Signature fine but the payload does not decode as the expected type.
    #[error("signed payload does not decode: {0}")]
    Payload(String),
    /// The payload is of a format version this witmed does not read (newer,
    /// or older with no upgrade): not garbage, so not the sender's fault.
    #[error("{0}")]
    PayloadVersion(versioned::Error),
    /// The payload decodes but is not in canonical form.
    #[error("signed payload is not in canonical form")]
    NonCanonical,
}

/// A signed object: canonical payload bytes, signer and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Envelope format version.
    pub version: u32,
    /// Kind and version of the payload, e.g. `witmed/consent-token/v1`.
    pub domain: String,
    /// Canonical postcard bytes of the payload.
    pub payload: Vec<u8>,
    /// Who signed.
    pub signer: PublicKey,
    /// ed25519 signature over [`Envelope::signing_message`].
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
}

/// Text (file) form of an envelope: JSON with base64 fields, so signed files
/// can be mailed, inspected and diffed.
#[derive(Serialize, Deserialize)]
struct TextForm {
    witmed_envelope: u32,
    domain: String,
    signer: PublicKey,
    payload: String,
    signature: String,
}

impl Envelope {
    /// Signs `value` under `domain` with `key`.
    pub fn seal<T: Serialize>(domain: &str, value: &T, key: &KeyPair) -> Envelope {
        let payload = postcard::to_stdvec(value).expect("payload types always serialize");
        let message = signing_message(ENVELOPE_VERSION, domain, &payload);
        Envelope {
            version: ENVELOPE_VERSION,
            domain: domain.to_string(),
            signature: key.sign_raw(&message),
            signer: key.public(),
            payload,
        }
    }

    /// Verifies the envelope and decodes its payload as `T`, through its
    /// version ([`versioned::decode_canonical`]).
    ///
    /// The caller decides whether the signer is the one it trusts for this
    /// kind of object.
    pub fn open<T: versioned::Evolving>(&self, domain: &str) -> Result<T, Error> {
        self.verify(domain)?;
        versioned::decode_canonical(&self.payload).map_err(|e| match e {
            versioned::Error::NonCanonical { .. } => Error::NonCanonical,
            e @ (versioned::Error::Newer { .. } | versioned::Error::Obsolete { .. }) => {
                Error::PayloadVersion(e)
            }
            other => Error::Payload(other.to_string()),
        })
    }

    /// Checks version, domain and signature without decoding the payload.
    pub fn verify(&self, domain: &str) -> Result<(), Error> {
        if self.version != ENVELOPE_VERSION {
            return Err(Error::UnsupportedVersion(self.version));
        }
        if self.domain != domain {
            return Err(Error::WrongDomain {
                expected: domain.to_string(),
                found: self.domain.clone(),
            });
        }
        let message = signing_message(self.version, &self.domain, &self.payload);
        if !self.signer.verify(&message, &self.signature) {
            return Err(Error::BadSignature {
                signer: self.signer.to_hex(),
            });
        }
        Ok(())
    }

    /// The exact bytes the signature covers.
    pub fn signing_message(&self) -> Vec<u8> {
        signing_message(self.version, &self.domain, &self.payload)
    }

    /// Compact binary form for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("envelopes always serialize")
    }

    /// Parses the binary form, refusing anything over `max_len` bytes before
    /// parsing.
    ///
    /// The envelope itself is the one type not dispatched on its version
    /// ([`crate::versioned`]): its text form carries any version too, and
    /// [`Envelope::verify`] refuses an unknown one before anything is
    /// trusted, so its layout stays frozen and a new envelope version would
    /// be a new layout read by version in both forms. Its payload is
    /// dispatched ([`Envelope::open`]).
    pub fn from_bytes(bytes: &[u8], max_len: usize) -> Result<Envelope, Error> {
        check_len(bytes.len(), max_len)?;
        let (envelope, rest) =
            postcard::take_from_bytes(bytes).map_err(|e| Error::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(Error::Malformed(format!("{} trailing bytes", rest.len())));
        }
        Ok(envelope)
    }

    /// Text form for files (JSON with base64 payload and signature).
    pub fn to_text(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let form = TextForm {
            witmed_envelope: self.version,
            domain: self.domain.clone(),
            signer: self.signer,
            payload: b64.encode(&self.payload),
            signature: b64.encode(self.signature),
        };
        let mut text = serde_json::to_string_pretty(&form).expect("text form serializes");
        text.push('\n');
        text
    }

    /// Parses the text form, refusing anything over `max_len` bytes before parsing.
    pub fn from_text(text: &str, max_len: usize) -> Result<Envelope, Error> {
        check_len(text.len(), max_len)?;
        let form: TextForm =
            serde_json::from_str(text).map_err(|e| Error::Malformed(e.to_string()))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64
            .decode(form.payload.as_bytes())
            .map_err(|e| Error::Malformed(format!("payload: {e}")))?;
        let signature: [u8; 64] = b64
            .decode(form.signature.as_bytes())
            .map_err(|e| Error::Malformed(format!("signature: {e}")))?
            .try_into()
            .map_err(|_| Error::Malformed("signature is not 64 bytes".into()))?;
        Ok(Envelope {
            version: form.witmed_envelope,
            domain: form.domain,
            payload,
            signer: form.signer,
            signature,
        })
    }
}

fn check_len(len: usize, max: usize) -> Result<(), Error> {
    if len > max {
        return Err(Error::TooLarge { len, max });
    }
    Ok(())
}

fn signing_message(version: u32, domain: &str, payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_PREFIX.len() + 16 + domain.len() + payload.len());
    message.extend_from_slice(SIGNING_PREFIX);
    message.extend_from_slice(&version.to_le_bytes());
    message.extend_from_slice(&(domain.len() as u32).to_le_bytes());
    message.extend_from_slice(domain.as_bytes());
    message.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    message.extend_from_slice(payload);
    message
}

mod signature_bytes {
    //! serde for 64-byte signatures (serde's array support stops at 32).
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(sig)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let bytes = Vec::<u8>::deserialize(d)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("signature must be 64 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Role;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Thing {
        version: u32,
        name: String,
        n: u64,
    }

    crate::single_version!(Thing, "test thing", 1);

    /// A payload of a newer version is told apart from garbage, so a server
    /// can answer "unsupported version" instead of punishing the sender.
    #[test]
    fn a_newer_payload_version_is_told_apart_from_garbage() {
        let key = KeyPair::from_seed(Role::Patient, &[1; 32]);
        let mut newer = thing();
        newer.version = 2;
        let env = Envelope::seal("witmed/test/v1", &newer, &key);
        let err = env.open::<Thing>("witmed/test/v1").unwrap_err();
        assert!(matches!(err, Error::PayloadVersion(_)), "{err:?}");
        assert!(err.to_string().contains("upgrade witmed"), "{err}");
        let garbage = Envelope::seal("witmed/test/v1", &(1u32, 200u8), &key);
        let err = garbage.open::<Thing>("witmed/test/v1").unwrap_err();
        assert!(matches!(err, Error::Payload(_)), "{err:?}");
    }

    fn thing() -> Thing {
        Thing {
            version: 1,
            name: "x".into(),
            n: 7,
        }
    }

    #[test]
    fn round_trips_through_bytes_and_text() {
        let key = KeyPair::generate(Role::Patient).unwrap();
        let env = Envelope::seal("witmed/test/v1", &thing(), &key);
        let back = Envelope::from_bytes(&env.to_bytes(), 1 << 16).unwrap();
        assert_eq!(back.open::<Thing>("witmed/test/v1").unwrap(), thing());
        let back = Envelope::from_text(&env.to_text(), 1 << 16).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.signer, key.public());
    }

    #[test]
    fn refuses_wrong_domain_oversize_and_trailing_bytes() {
        let key = KeyPair::generate(Role::Patient).unwrap();
        let env = Envelope::seal("witmed/test/v1", &thing(), &key);
        assert!(matches!(
            env.open::<Thing>("witmed/other/v1"),
            Err(Error::WrongDomain { .. })
        ));
        let bytes = env.to_bytes();
        assert!(matches!(
            Envelope::from_bytes(&bytes, bytes.len() - 1),
            Err(Error::TooLarge { .. })
        ));
        let mut longer = env.clone();
        longer.payload.push(0);
        assert!(matches!(
            longer.open::<Thing>("witmed/test/v1"),
            Err(Error::BadSignature { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Flipping any one bit of the wire form never yields an accepted, different object.
        #[test]
        fn any_bit_flip_is_refused(bit in 0usize..4096) {
            let key = KeyPair::from_seed(Role::Patient, &[9; 32]);
            let env = Envelope::seal("witmed/test/v1", &thing(), &key);
            let mut bytes = env.to_bytes();
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            let accepted = Envelope::from_bytes(&bytes, 1 << 16)
                .ok()
                .and_then(|e| e.open::<Thing>("witmed/test/v1").ok().map(|t| (e.signer, t)));
            prop_assert!(accepted.is_none());
        }
    }
}
