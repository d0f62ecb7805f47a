//! Encrypted aggregation: TFHE's LWE encryption under a compact public key, added without any server key.
//!
//! The researcher of a study holds the [`ClientKey`] (an LWE secret key);
//! hospitals encrypt their noisy shares under the study's
//! [`CompactPublicKey`] (Joye's compact public-key LWE, eprint 2023/603, as
//! implemented by `tfhe::core_crypto`); the aggregator adds ciphertexts
//! coefficient by coefficient with `lwe_compact_ciphertext_list_add_assign`.
//! A sum needs no bootstrapping and no carry propagation when the plaintext
//! leaves room for it, so no server key exists and none has to travel.
//!
//! # Parameters and why the sum decodes exactly
//!
//! [`params`] pins one set: LWE dimension 2048 over the native modulus 2^64,
//! TUniform(17) noise for the public key and for encryption (tfhe's
//! 128-bit-secure compact public-key parameters,
//! `V1_8_PARAM_PKE_TO_SMALL_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128_ZKV2`,
//! have this dimension, noise and modulus; only the encoding differs).
//! A value `m` is encoded as `m * 2^37`.
//!
//! One encryption decrypts to `delta * m + e` with
//! `e = <pk noise, r> + body noise - <mask noise, s>` where `r` and `s` are
//! binary vectors of length 2048 and every noise sample is at most 2^17 in
//! absolute value, so `|e| <= 2 * 2048 * 2^17 + 2^17 < 2^29.01`. A sum of
//! `c` ciphertexts has noise at most `c * 2^29.01`, which stays below half
//! of `delta = 2^37` for `c <= 127` ([`params::MAX_CONTRIBUTIONS`]): decoding
//! is then exact, not merely likely. Messages live in 27 bits, signed:
//! every total must stay within `±(2^26 - 1)` ([`params::MAX_ABS_TOTAL`]).
//!
//! Every serialized key and ciphertext is a versioned tfhe safe-serialization
//! (type name, versions, size limit) and is read back with
//! `safe_deserialize_conformant`, which also checks its shape.

use serde::{Deserialize, Serialize};
use tfhe::conformance::{ListSizeConstraint, ParameterSetConformant};
use tfhe::core_crypto::prelude::*;
use tfhe::named::Named;
use tfhe::safe_serialization::{safe_deserialize_conformant, safe_serialize};
use tfhe_versionable::{Versionize, VersionsDispatch};

/// The one pinned parameter set; a study records [`params::ID`].
pub mod params {
    /// Name of this parameter set, stored with every study.
    pub const ID: &str = "witmed/lwe-cpk-2048-tuniform17-delta37/v1";
    /// LWE dimension (and compact public key polynomial size).
    pub const LWE_DIMENSION: usize = 2048;
    /// Noise of the public key and of encryption: TUniform over `[-2^17, 2^17]`.
    pub const NOISE_BOUND_LOG2: u32 = 17;
    /// Messages are encoded as `m << DELTA_LOG2`.
    pub const DELTA_LOG2: u32 = 37;
    /// Most ciphertexts one total may add up and still decode exactly.
    pub const MAX_CONTRIBUTIONS: usize = 127;
    /// Largest absolute value of a total (27-bit signed messages).
    pub const MAX_ABS_TOTAL: i64 = (1 << 26) - 1;
    /// Most values in one ciphertext: the longest vector an analysis adds
    /// (a survival analysis of 8 groups over 64 time bins, `8 * (2 * 64 + 1)`).
    /// At most [`LWE_DIMENSION`], so every value of a ciphertext shares one
    /// mask of the compact list: a value costs 8 bytes more on the wire and
    /// the same noise bound as any other.
    pub const MAX_VALUES: usize = 1032;
    const _: () = assert!(MAX_VALUES <= LWE_DIMENSION);
    /// Worst-case noise of one fresh encryption: `2 * 2048 * 2^17 + 2^17`.
    pub const NOISE_PER_ENCRYPTION: u64 = (2 * LWE_DIMENSION as u64 + 1) << NOISE_BOUND_LOG2;
}

/// Largest serialized compact public key read (its 32 KiB plus headers).
pub const MAX_PUBLIC_KEY_BYTES: u64 = (2 * params::LWE_DIMENSION as u64) * 8 + 4096;
/// Largest serialized ciphertext read ([`params::MAX_VALUES`] values plus headers).
pub const MAX_CIPHERTEXT_BYTES: u64 =
    (params::LWE_DIMENSION + params::MAX_VALUES) as u64 * 8 + 4096;
/// Largest serialized client key read.
pub const MAX_CLIENT_KEY_BYTES: u64 = params::LWE_DIMENSION as u64 * 8 + 4096;

/// What went wrong with encrypted aggregation material.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("{what} does not deserialize (truncated, oversized, of another type or another parameter set): {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("cannot encrypt {0} values: one ciphertext holds 1 to {max}", max = params::MAX_VALUES)]
    ValueCount(usize),
    #[error("value {0} is outside ±{max}: encrypted totals hold 27-bit signed integers", max = params::MAX_ABS_TOTAL)]
    ValueRange(i64),
    #[error("ciphertexts hold {left} and {right} values; only ciphertexts of one query add up")]
    Mismatch { left: usize, right: usize },
    #[error("a total of {0} contributions is over the {max} that decode exactly", max = params::MAX_CONTRIBUTIONS)]
    TooManyContributions(usize),
    #[error("the study public key is degenerate ({0}): it would not hide what is encrypted under it; make a new one with `witmed study keygen`")]
    WeakKey(String),
    #[error("the total does not decrypt cleanly (noise {noise_log2:.1} bits over the bound for {contributions} contributions): it was not made by honest encryptions under this study's key and additions; refuse it")]
    NoiseOutOfBounds {
        noise_log2: f64,
        contributions: usize,
    },
}

fn ciphertext_modulus() -> CiphertextModulus<u64> {
    CiphertextModulus::new_native()
}

fn noise() -> TUniform<u64> {
    TUniform::new(params::NOISE_BOUND_LOG2)
}

/// The researcher's decryption key. Never leaves the researcher's machine.
#[derive(Clone, Serialize, Deserialize, Versionize)]
#[versionize(ClientKeyVersions)]
pub struct ClientKey {
    inner: LweSecretKeyOwned<u64>,
}

#[derive(VersionsDispatch)]
pub enum ClientKeyVersions {
    V0(ClientKey),
}

impl Named for ClientKey {
    const NAME: &'static str = "witmed::fhe::ClientKey";
}

/// The study's public encryption key, published to every hospital.
#[derive(Clone, PartialEq, Serialize, Deserialize, Versionize)]
#[versionize(CompactPublicKeyVersions)]
pub struct CompactPublicKey {
    inner: LweCompactPublicKeyOwned<u64>,
}

#[derive(VersionsDispatch)]
pub enum CompactPublicKeyVersions {
    V0(CompactPublicKey),
}

impl Named for CompactPublicKey {
    const NAME: &'static str = "witmed::fhe::CompactPublicKey";
}

impl ParameterSetConformant for CompactPublicKey {
    type ParameterSet = ();
    fn is_conformant(&self, _: &()) -> bool {
        self.inner
            .is_conformant(&LweCompactPublicKeyConformanceParams {
                encryption_lwe_dimension: LweDimension(params::LWE_DIMENSION),
                ciphertext_modulus: ciphertext_modulus(),
            })
    }
}

/// Encrypted values (one per histogram bin, or one for a count or a sum).
#[derive(Clone, PartialEq, Serialize, Deserialize, Versionize)]
#[versionize(CiphertextVersions)]
pub struct Ciphertext {
    inner: LweCompactCiphertextListOwned<u64>,
}

#[derive(VersionsDispatch)]
pub enum CiphertextVersions {
    V0(Ciphertext),
}

impl Named for Ciphertext {
    const NAME: &'static str = "witmed::fhe::Ciphertext";
}

impl ParameterSetConformant for Ciphertext {
    /// The number of values expected.
    type ParameterSet = usize;
    fn is_conformant(&self, values: &usize) -> bool {
        self.inner
            .is_conformant(&LweCiphertextListConformanceParams {
                lwe_dim: LweDimension(params::LWE_DIMENSION),
                lwe_ciphertext_count_constraint: ListSizeConstraint::exact_size(*values),
                ct_modulus: ciphertext_modulus(),
            })
    }
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey(..)")
    }
}

impl std::fmt::Debug for CompactPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CompactPublicKey({})",
            hex::encode(&self.study_id()[..8])
        )
    }
}

impl std::fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ciphertext({} values)", self.len())
    }
}

fn to_bytes<T: Serialize + Versionize + Named>(value: &T, limit: u64) -> Vec<u8> {
    let mut out = Vec::new();
    safe_serialize(value, &mut out, limit).expect("serializing to memory within the limit");
    out
}

fn from_bytes<T>(
    what: &'static str,
    bytes: &[u8],
    limit: u64,
    shape: &T::ParameterSet,
) -> Result<T, Error>
where
    T: serde::de::DeserializeOwned
        + tfhe_versionable::Unversionize
        + Named
        + ParameterSetConformant,
{
    if bytes.len() as u64 > limit {
        return Err(Error::Malformed {
            what,
            reason: format!("{} bytes is over the limit of {limit}", bytes.len()),
        });
    }
    safe_deserialize_conformant(bytes, limit, shape)
        .map_err(|reason| Error::Malformed { what, reason })
}

impl ClientKey {
    /// A fresh key pair of the pinned parameter set, from tfhe's CSPRNG seeded by the OS/CPU.
    pub fn generate() -> (ClientKey, CompactPublicKey) {
        let mut seeder = new_seeder();
        let seeder = seeder.as_mut();
        let mut secret_generator =
            SecretRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed());
        let mut encryption_generator =
            EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder);
        let secret = allocate_and_generate_new_binary_lwe_secret_key(
            LweDimension(params::LWE_DIMENSION),
            &mut secret_generator,
        );
        let public = allocate_and_generate_new_lwe_compact_public_key(
            &secret,
            noise(),
            ciphertext_modulus(),
            &mut encryption_generator,
        );
        (
            ClientKey { inner: secret },
            CompactPublicKey { inner: public },
        )
    }

    /// Versioned bytes for the key file.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_bytes(self, MAX_CLIENT_KEY_BYTES)
    }

    /// Reads a key file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<ClientKey, Error> {
        let key: ClientKey =
            tfhe::safe_serialization::safe_deserialize(bytes, MAX_CLIENT_KEY_BYTES).map_err(
                |reason| Error::Malformed {
                    what: "client key",
                    reason,
                },
            )?;
        if key.inner.lwe_dimension().0 != params::LWE_DIMENSION {
            return Err(Error::Malformed {
                what: "client key",
                reason: format!(
                    "LWE dimension {} is not {}",
                    key.inner.lwe_dimension().0,
                    params::LWE_DIMENSION
                ),
            });
        }
        Ok(key)
    }

    /// Decrypts a total of `contributions` ciphertexts, refusing one whose noise shows tampering.
    pub fn decrypt(&self, total: &Ciphertext, contributions: usize) -> Result<Vec<i64>, Error> {
        if contributions > params::MAX_CONTRIBUTIONS {
            return Err(Error::TooManyContributions(contributions));
        }
        let bound = params::NOISE_PER_ENCRYPTION * contributions.max(1) as u64;
        let list = total.inner.clone().expand_into_lwe_ciphertext_list();
        let mut phases = PlaintextList::new(0u64, PlaintextCount(list.lwe_ciphertext_count().0));
        decrypt_lwe_ciphertext_list(&self.inner, &list, &mut phases);
        phases
            .iter()
            .map(|phase| decode(*phase.0, bound, contributions))
            .collect()
    }
}

/// Rounds a phase to the nearest multiple of delta and checks the remainder against `bound`.
fn decode(phase: u64, bound: u64, contributions: usize) -> Result<i64, Error> {
    let half_delta = 1u64 << (params::DELTA_LOG2 - 1);
    let message = phase.wrapping_add(half_delta) >> params::DELTA_LOG2;
    let residual = phase.wrapping_sub(message << params::DELTA_LOG2) as i64;
    if residual.unsigned_abs() > bound {
        return Err(Error::NoiseOutOfBounds {
            noise_log2: (residual.unsigned_abs() as f64).log2(),
            contributions,
        });
    }
    // Sign-extend the 27-bit message.
    let bits = 64 - params::DELTA_LOG2;
    Ok(((message << (64 - bits)) as i64) >> (64 - bits))
}

impl CompactPublicKey {
    /// Versioned bytes, as published to hospitals.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_bytes(self, MAX_PUBLIC_KEY_BYTES)
    }

    /// Reads published bytes: size limit, type, version and shape are
    /// checked, and a degenerate key (see [`CompactPublicKey::check_not_degenerate`]) is refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<CompactPublicKey, Error> {
        let key: CompactPublicKey =
            from_bytes("compact public key", bytes, MAX_PUBLIC_KEY_BYTES, &())?;
        key.check_not_degenerate()?;
        Ok(key)
    }

    /// Refuses a key whose mask or body is all zero, or repeats values.
    ///
    /// An honest key's mask is uniform over 2^64 and its body is
    /// `-(mask * s) + e`, so both have 2048 distinct coefficients except with
    /// negligible probability. A zero mask makes every ciphertext's body carry
    /// the message in clear; a zero body makes the public key independent of
    /// the secret; few distinct values mean a structured, guessable key. At
    /// least half the coefficients of each part must be distinct.
    pub fn check_not_degenerate(&self) -> Result<(), Error> {
        let data: &[u64] = self.inner.as_ref();
        let (mask, body) = data.split_at(data.len() / 2);
        for (part, coefficients) in [("mask", mask), ("body", body)] {
            let mut sorted = coefficients.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() < params::LWE_DIMENSION / 2 {
                return Err(Error::WeakKey(format!(
                    "its {part} has only {} distinct coefficients of {}",
                    sorted.len(),
                    coefficients.len()
                )));
            }
        }
        Ok(())
    }

    /// The study id: SHA-256 of the published bytes.
    pub fn study_id(&self) -> [u8; 32] {
        crate::sha256(&self.to_bytes())
    }

    /// Encrypts `values`, each within ±[`params::MAX_ABS_TOTAL`].
    pub fn encrypt(&self, values: &[i64]) -> Result<Ciphertext, Error> {
        if values.is_empty() || values.len() > params::MAX_VALUES {
            return Err(Error::ValueCount(values.len()));
        }
        if let Some(v) = values
            .iter()
            .find(|v| v.unsigned_abs() > params::MAX_ABS_TOTAL as u64)
        {
            return Err(Error::ValueRange(*v));
        }
        let encoded: Vec<u64> = values
            .iter()
            .map(|v| (*v as u64) << params::DELTA_LOG2)
            .collect();
        let plaintexts = PlaintextList::from_container(encoded);
        let mut out = LweCompactCiphertextList::new(
            0u64,
            LweDimension(params::LWE_DIMENSION).to_lwe_size(),
            LweCiphertextCount(values.len()),
            ciphertext_modulus(),
        );
        let mut seeder = new_seeder();
        let seeder = seeder.as_mut();
        let mut generator =
            EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder);
        encrypt_lwe_compact_ciphertext_list_with_compact_public_key(
            &self.inner,
            &mut out,
            &plaintexts,
            noise(),
            noise(),
            generator.noise_generator_mut(),
        );
        Ok(Ciphertext { inner: out })
    }
}

impl Ciphertext {
    /// How many values it holds.
    pub fn len(&self) -> usize {
        self.inner.lwe_ciphertext_count().0
    }

    /// Always false: a ciphertext holds at least one value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `other` under encryption (no key needed).
    pub fn add_assign(&mut self, other: &Ciphertext) -> Result<(), Error> {
        if self.len() != other.len() {
            return Err(Error::Mismatch {
                left: self.len(),
                right: other.len(),
            });
        }
        lwe_compact_ciphertext_list_add_assign(&mut self.inner, &other.inner);
        Ok(())
    }

    /// Adds a mask to each value, modulo the message space (`masks[k]` to
    /// value `k`). A plaintext shift adds no noise: the value decrypts to
    /// `value + mask` exactly, modulo `2^(64 - DELTA_LOG2)`.
    pub fn add_masks(&mut self, masks: &[u64]) -> Result<(), Error> {
        if masks.len() != self.len() {
            return Err(Error::Mismatch {
                left: self.len(),
                right: masks.len(),
            });
        }
        let mut bodies = self.inner.get_mut_body_list();
        for (body, mask) in bodies.as_mut().iter_mut().zip(masks) {
            *body = body.wrapping_add(mask << params::DELTA_LOG2);
        }
        Ok(())
    }

    /// Adds `raw` (an already-encoded plaintext, not a message) to every
    /// value. simnet's lying aggregator uses it to forge a total; a shift that
    /// is not a multiple of delta shows up as noise at decryption.
    pub fn add_raw_plaintext(&mut self, raw: u64) {
        let mut bodies = self.inner.get_mut_body_list();
        for body in bodies.as_mut().iter_mut() {
            *body = body.wrapping_add(raw);
        }
    }

    /// Versioned bytes, as sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_bytes(self, MAX_CIPHERTEXT_BYTES)
    }

    /// Reads received bytes holding exactly `values` values: size limit, type, version and shape are checked.
    pub fn from_bytes(bytes: &[u8], values: usize) -> Result<Ciphertext, Error> {
        from_bytes("ciphertext", bytes, MAX_CIPHERTEXT_BYTES, &values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// Keys are generated once per test binary (generation is the slow part).
    fn keys() -> &'static (ClientKey, CompactPublicKey) {
        static KEYS: OnceLock<(ClientKey, CompactPublicKey)> = OnceLock::new();
        KEYS.get_or_init(ClientKey::generate)
    }

    #[test]
    fn sums_decrypt_exactly_including_negative_values() {
        let (client, public) = keys();
        let shares = [
            [120i64, -3, 0],
            [-7, 40, 5],
            [0, 0, params::MAX_ABS_TOTAL - 200],
        ];
        let mut total = public.encrypt(&shares[0]).unwrap();
        for share in &shares[1..] {
            total.add_assign(&public.encrypt(share).unwrap()).unwrap();
        }
        let expected: Vec<i64> = (0..3).map(|i| shares.iter().map(|s| s[i]).sum()).collect();
        assert_eq!(client.decrypt(&total, shares.len()).unwrap(), expected);
    }

    #[test]
    fn the_most_contributions_still_decode_exactly() {
        let (client, public) = keys();
        let one = public.encrypt(&[-1, 1]).unwrap();
        let mut total = one.clone();
        for _ in 1..params::MAX_CONTRIBUTIONS {
            total.add_assign(&one).unwrap();
        }
        let n = params::MAX_CONTRIBUTIONS as i64;
        assert_eq!(
            client.decrypt(&total, params::MAX_CONTRIBUTIONS).unwrap(),
            vec![-n, n]
        );
        assert!(matches!(
            client.decrypt(&total, params::MAX_CONTRIBUTIONS + 1),
            Err(Error::TooManyContributions(_))
        ));
    }

    /// The longest vector: every value shares the list's one mask, keeps the
    /// noise bound of one value at the most contributions, and costs 8 bytes.
    #[test]
    fn a_ciphertext_of_the_most_values_decodes_exactly_and_stays_small() {
        let (client, public) = keys();
        let n = params::MAX_VALUES;
        let values: Vec<i64> = (0..n as i64)
            .map(|i| if i % 2 == 0 { i } else { -i })
            .collect();
        let one = public.encrypt(&values).unwrap();
        let mut total = one.clone();
        for _ in 1..params::MAX_CONTRIBUTIONS {
            total.add_assign(&one).unwrap();
        }
        let c = params::MAX_CONTRIBUTIONS as i64;
        let expected: Vec<i64> = values.iter().map(|v| v * c).collect();
        assert_eq!(
            client.decrypt(&total, params::MAX_CONTRIBUTIONS).unwrap(),
            expected
        );
        let bytes = one.to_bytes();
        let bound = (params::LWE_DIMENSION + n) * 8 + 512;
        assert!(bytes.len() <= bound, "{} bytes", bytes.len());
        assert_eq!(Ciphertext::from_bytes(&bytes, n).unwrap(), one);
        assert!(public.encrypt(&vec![0; n + 1]).is_err());
    }

    #[test]
    fn serialized_forms_round_trip_and_refuse_bad_bytes() {
        let (client, public) = keys();
        let ct = public.encrypt(&[1, 2, 3]).unwrap();
        let bytes = ct.to_bytes();
        let back = Ciphertext::from_bytes(&bytes, 3).unwrap();
        assert_eq!(client.decrypt(&back, 1).unwrap(), vec![1, 2, 3]);
        // Wrong shape, truncated, oversized, wrong type.
        assert!(Ciphertext::from_bytes(&bytes, 4).is_err());
        assert!(Ciphertext::from_bytes(&bytes[..bytes.len() - 9], 3).is_err());
        let mut big = bytes.clone();
        big.resize(MAX_CIPHERTEXT_BYTES as usize + 1, 0);
        let err = Ciphertext::from_bytes(&big, 3).unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{err}");
        assert!(CompactPublicKey::from_bytes(&bytes).is_err());
        let pk = public.to_bytes();
        assert!(CompactPublicKey::from_bytes(&pk).unwrap() == *public);
        assert!(Ciphertext::from_bytes(&pk, 3).is_err());
        let ck = ClientKey::from_bytes(&client.to_bytes()).unwrap();
        assert_eq!(ck.decrypt(&ct, 1).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn another_key_or_a_tampered_ciphertext_is_refused_not_misread() {
        let (client, public) = keys();
        let (other_client, _) = ClientKey::generate();
        // Under a wrong key each phase is uniform: one value passes the noise
        // check with probability 2^-7, eight values together with 2^-56.
        let ct = public.encrypt(&[42; 8]).unwrap();
        assert!(matches!(
            other_client.decrypt(&ct, 1),
            Err(Error::NoiseOutOfBounds { .. })
        ));
        // A shift below half of delta keeps the rounding but not the noise bound.
        let mut tampered = ct.clone();
        tampered.add_raw_plaintext(1 << 33);
        assert!(matches!(
            client.decrypt(&tampered, 1),
            Err(Error::NoiseOutOfBounds { .. })
        ));
        // A shift by whole deltas is a well-formed lie: it decodes (see THREAT_MODEL.md).
        let mut lie = ct.clone();
        lie.add_raw_plaintext(1000 << params::DELTA_LOG2);
        assert_eq!(client.decrypt(&lie, 1).unwrap(), vec![1042; 8]);
        assert_eq!(public.study_id(), public.study_id());
        assert_ne!(public.study_id(), other_client_public_id());
    }

    fn other_client_public_id() -> [u8; 32] {
        ClientKey::generate().1.study_id()
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let (_, public) = keys();
        assert!(matches!(
            public.encrypt(&[params::MAX_ABS_TOTAL + 1]),
            Err(Error::ValueRange(_))
        ));
        assert!(matches!(
            public.encrypt(&[i64::MIN]),
            Err(Error::ValueRange(_))
        ));
        assert!(matches!(public.encrypt(&[]), Err(Error::ValueCount(0))));
        let mut a = public.encrypt(&[1]).unwrap();
        assert!(a.add_assign(&public.encrypt(&[1, 2]).unwrap()).is_err());
    }

    #[test]
    fn degenerate_public_keys_are_refused() {
        let zero = CompactPublicKey {
            inner: LweCompactPublicKey::new(
                0u64,
                LweDimension(params::LWE_DIMENSION),
                ciphertext_modulus(),
            ),
        };
        let err = CompactPublicKey::from_bytes(&zero.to_bytes()).unwrap_err();
        assert!(
            matches!(err, Error::WeakKey(ref r) if r.contains("mask")),
            "{err}"
        );
        // A real mask with a zero body is refused too.
        let (_, public) = keys();
        let mut zero_body = public.clone();
        let data: &mut [u64] = zero_body.inner.as_mut();
        let half = data.len() / 2;
        data[half..].fill(0);
        let err = CompactPublicKey::from_bytes(&zero_body.to_bytes()).unwrap_err();
        assert!(
            matches!(err, Error::WeakKey(ref r) if r.contains("body")),
            "{err}"
        );
        assert!(public.check_not_degenerate().is_ok());
    }

    #[test]
    fn masked_shares_decrypt_to_the_plain_sum_only_together() {
        let (client, public) = keys();
        let modulus = crate::secagg::MASK_MODULUS_MASK;
        // Two masks that cancel modulo the message space, as a roster's do.
        let mask = [123_456_789u64 & modulus, 5];
        let minus: Vec<u64> = mask.iter().map(|m| m.wrapping_neg() & modulus).collect();
        let mut a = public.encrypt(&[10, -3]).unwrap();
        a.add_masks(&mask).unwrap();
        let mut b = public.encrypt(&[20, 4]).unwrap();
        b.add_masks(&minus).unwrap();
        // Alone, a share decrypts cleanly (no noise added) to share + mask.
        let alone = client.decrypt(&a, 1).unwrap();
        assert_ne!(alone[0], 10);
        a.add_assign(&b).unwrap();
        assert_eq!(client.decrypt(&a, 2).unwrap(), vec![30, 1]);
        assert!(a.add_masks(&[1]).is_err());
    }
}
