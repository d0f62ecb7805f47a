//! Simulated consent for demonstration nodes (`witmed-lab consent simulate`): fresh patient keys that sign a token and are dropped.
//!
//! This is the one place witmed makes a patient's signature without the
//! patient, which is why it lives here and not in the hospital binary. The
//! node core only stores the result (`consent_ops::store_simulated`), and
//! only on a node whose signed policy allows demonstration data.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use witmed_crypto::{KeyPair, Pseudonym, PublicKey, Role};
use witmed_node::consent_ops::{self, Error, Simulated};
use witmed_node::node::Node;
use witmed_policies::consent::{self, Token, Verified};
use witmed_protocol::vocab::{Category, Mode};

/// Enrols fresh keys and signs tokens for a seeded share of patients.
///
/// Each key is drawn from the OS and dropped once its token is signed, so
/// nobody (not the operator, not someone who knows the seed) can sign for a
/// simulated patient again. The seed only chooses which patients.
pub fn simulate(
    node: &Node,
    rate: f64,
    purposes: &[String],
    seed: u64,
    now: i64,
) -> Result<Simulated, Error> {
    if !(0.0..=1.0).contains(&rate) {
        return Err(Error::Invalid(format!(
            "--rate must be within 0 and 1, got {rate}"
        )));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let node_id = node.id();
    consent_ops::store_simulated(
        node,
        // Drawn for every patient, so the choice depends on the seed alone.
        || rng.gen_bool(rate),
        |p| simulated_consent(node_id, p, purposes, now),
        |made, already| {
            format!(
                "SIMULATED consent: {made} patients enrolled with fresh keys and tokens for purposes {} (seed {seed}, rate {rate}, {already} already enrolled left alone)",
                purposes.join(",")
            )
        },
        now,
    )
}

/// A fresh simulated patient key, and a token signed and verified with it.
/// The private key is dropped here.
fn simulated_consent(
    node: PublicKey,
    p: Pseudonym,
    purposes: &[String],
    now: i64,
) -> Result<(PublicKey, Verified, String), Error> {
    let key = KeyPair::generate(Role::Patient).map_err(|_| Error::Random)?;
    let public = key.public();
    let token = simulated_token(node, p, purposes, random_token_id()?, now);
    let envelope = token.sign(&key);
    let verified = consent::verify_token(&envelope, &node, &|q| (*q == p).then_some(public), now)?;
    Ok((public, verified, envelope.to_text()))
}

fn random_token_id() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    witmed_crypto::fill_random(&mut bytes).map_err(|_| Error::Random)?;
    Ok(consent::token_id(bytes))
}

fn simulated_token(
    node: PublicKey,
    patient: Pseudonym,
    purposes: &[String],
    id: String,
    now: i64,
) -> Token {
    Token {
        version: consent::TOKEN_VERSION,
        id,
        node,
        patient,
        purposes: purposes.to_vec(),
        categories: Category::ALL.into_iter().collect(),
        modes: [Mode::Dp, Mode::Encrypted].into_iter().collect(),
        not_before: now.saturating_sub(86_400),
        expires: now.saturating_add(365 * 86_400),
        simulated: true,
    }
}
