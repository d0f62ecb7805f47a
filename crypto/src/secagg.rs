//! Pairwise-cancelling masks for encrypted totals (secure aggregation, Bonawitz et al. 2017, without dropout recovery).
//!
//! Each member of a roster draws an ephemeral X25519 key for one query. Two
//! members `i` and `j` derive the same seed from their Diffie-Hellman secret
//! (HKDF-SHA256 bound to the query's context and both members' names and
//! ephemeral keys), expand it into one mask per slot, and add it with
//! opposite signs: `i` adds `+m_ij` if its name sorts first, `j` adds
//! `-m_ij`. Masks live in the plaintext group of the encrypted values
//! (integers modulo `2^MASK_BITS`), so summing the masked shares of exactly
//! the whole roster cancels every mask, and any other subset leaves a
//! uniformly random offset. One masked share decrypted alone is uniformly
//! random unless every other roster member reveals its seed with it.
//!
//! Primitives: X25519 from `x25519-dalek`, HKDF and HMAC-SHA256 from `ring`.

use ring::{hkdf, hmac};
use x25519_dalek::{PublicKey as DhPublic, StaticSecret};
use zeroize::Zeroizing;

/// Bits of the plaintext group masks live in: the 27-bit messages of [`crate::fhe`].
pub const MASK_BITS: u32 = 64 - crate::fhe::params::DELTA_LOG2;
/// Masks are reduced modulo `2^MASK_BITS`.
pub const MASK_MODULUS_MASK: u64 = (1u64 << MASK_BITS) - 1;
/// HKDF info prefix of pairwise seeds.
const SEED_DOMAIN: &[u8] = b"witmed/secagg/pairwise-seed/v1";
/// HMAC label of the mask of one slot.
const SLOT_DOMAIN: &[u8] = b"witmed/secagg/slot-mask/v1";

/// What went wrong deriving masks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("the operating system's random source failed; no ephemeral key was made")]
    Random,
    #[error("member {0}'s ephemeral key is a low-order point (its shared secret would be public); refuse the roster")]
    WeakPeerKey(String),
    #[error("member {0} appears twice in the roster")]
    Duplicate(String),
}

/// One member's ephemeral X25519 key for one query.
pub struct Ephemeral {
    secret: Zeroizing<[u8; 32]>,
}

impl Ephemeral {
    /// A fresh key from the OS random source.
    pub fn generate() -> Result<Ephemeral, Error> {
        let mut secret = Zeroizing::new([0u8; 32]);
        crate::fill_random(secret.as_mut()).map_err(|_| Error::Random)?;
        Ok(Ephemeral { secret })
    }

    /// A key from its stored secret bytes.
    pub fn from_secret(secret: [u8; 32]) -> Ephemeral {
        Ephemeral {
            secret: Zeroizing::new(secret),
        }
    }

    /// The secret bytes, to be stored sealed between the two rounds.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.secret.clone()
    }

    /// The public key sent in the member's signed Ready.
    pub fn public(&self) -> [u8; 32] {
        DhPublic::from(&StaticSecret::from(*self.secret)).to_bytes()
    }

    /// The seed shared with `peer` (named `peer_name`, ephemeral key `peer_public`), bound to `context`.
    fn seed_with(
        &self,
        (me, my_public): (&str, [u8; 32]),
        (peer_name, peer_public): (&str, [u8; 32]),
        context: &[u8; 32],
    ) -> Result<Zeroizing<[u8; 32]>, Error> {
        let shared = StaticSecret::from(*self.secret).diffie_hellman(&DhPublic::from(peer_public));
        if !shared.was_contributory() {
            return Err(Error::WeakPeerKey(peer_name.to_string()));
        }
        // The info is the same for both ends: the pair in name order.
        let (first, second) = if me < peer_name {
            ((me, my_public), (peer_name, peer_public))
        } else {
            ((peer_name, peer_public), (me, my_public))
        };
        let mut info = Vec::with_capacity(256);
        info.extend_from_slice(SEED_DOMAIN);
        info.extend_from_slice(context);
        for (name, public) in [first, second] {
            info.extend_from_slice(&(name.len() as u64).to_le_bytes());
            info.extend_from_slice(name.as_bytes());
            info.extend_from_slice(&public);
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SEED_DOMAIN).extract(shared.as_bytes());
        let info = [info.as_slice()];
        let okm = prk.expand(&info, Len32).map_err(|_| Error::Random)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        okm.fill(seed.as_mut()).map_err(|_| Error::Random)?;
        Ok(seed)
    }

    /// This member's total mask, one value per slot in `[0, 2^MASK_BITS)`:
    /// `sum_j sign(me, j) * PRG(seed_j)` over every other member `j` of `roster`
    /// (names and ephemeral public keys, this member included).
    pub fn mask(
        &self,
        me: &str,
        roster: &[(String, [u8; 32])],
        context: &[u8; 32],
        slots: usize,
    ) -> Result<Vec<u64>, Error> {
        let my_public = self.public();
        let mut seen = std::collections::BTreeSet::new();
        let mut total = vec![0u64; slots];
        for (name, public) in roster {
            if !seen.insert(name.as_str()) {
                return Err(Error::Duplicate(name.clone()));
            }
            if name == me {
                continue;
            }
            let seed = self.seed_with((me, my_public), (name, *public), context)?;
            let add = me < name.as_str();
            for (slot, t) in total.iter_mut().enumerate() {
                let m = slot_mask(&seed, slot);
                *t = if add {
                    t.wrapping_add(m)
                } else {
                    t.wrapping_sub(m)
                };
            }
        }
        Ok(total.into_iter().map(|t| t & MASK_MODULUS_MASK).collect())
    }
}

/// The mask of one slot from a pairwise seed: HMAC-SHA256 as a PRF, reduced to the mask group.
fn slot_mask(seed: &[u8; 32], slot: usize) -> u64 {
    let key = hmac::Key::new(hmac::HMAC_SHA256, seed);
    let mut message = SLOT_DOMAIN.to_vec();
    message.extend_from_slice(&(slot as u64).to_le_bytes());
    let tag = hmac::sign(&key, &message);
    let mut first = [0u8; 8];
    first.copy_from_slice(&tag.as_ref()[..8]);
    // 2^MASK_BITS divides 2^64: the low bits of a uniform u64 are uniform.
    u64::from_le_bytes(first) & MASK_MODULUS_MASK
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roster(n: usize) -> (Vec<Ephemeral>, Vec<(String, [u8; 32])>) {
        let keys: Vec<Ephemeral> = (0..n).map(|_| Ephemeral::generate().unwrap()).collect();
        let roster = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (format!("h{i}"), k.public()))
            .collect();
        (keys, roster)
    }

    fn sum(masks: &[Vec<u64>], slot: usize) -> u64 {
        masks.iter().fold(0u64, |a, m| a.wrapping_add(m[slot])) & MASK_MODULUS_MASK
    }

    #[test]
    fn masks_cancel_over_the_whole_roster_only() {
        let (keys, roster) = roster(4);
        let context = [9u8; 32];
        let masks: Vec<Vec<u64>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| k.mask(&format!("h{i}"), &roster, &context, 3).unwrap())
            .collect();
        for slot in 0..3 {
            assert_eq!(sum(&masks, slot), 0);
            assert_ne!(sum(&masks[..3], slot), 0, "a subset does not cancel");
            assert!(masks
                .iter()
                .all(|m| m[slot] != 0 && m[slot] <= MASK_MODULUS_MASK));
        }
        // Another context (another query or roster) gives other masks.
        let other = keys[0].mask("h0", &roster, &[8u8; 32], 3).unwrap();
        assert_ne!(other, masks[0]);
        // A stored secret gives the same key back.
        let again = Ephemeral::from_secret(*keys[1].secret_bytes());
        assert_eq!(again.mask("h1", &roster, &context, 3).unwrap(), masks[1]);
    }

    #[test]
    fn a_low_order_peer_key_or_a_duplicate_is_refused() {
        let (keys, mut roster) = roster(2);
        roster[1].1 = [0u8; 32];
        assert_eq!(
            keys[0].mask("h0", &roster, &[0; 32], 1),
            Err(Error::WeakPeerKey("h1".into()))
        );
        let (keys, mut roster) = self::roster(2);
        roster.push(roster[1].clone());
        assert_eq!(
            keys[0].mask("h0", &roster, &[0; 32], 1),
            Err(Error::Duplicate("h1".into()))
        );
    }
}
