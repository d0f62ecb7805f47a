//! Deliberate faults for simnet: a node that answers wrongly on purpose (`witmed node run --fault`), never set in production.

use witmed_crypto::Envelope;
use witmed_protocol::wire::{NodeResponse, Outcome};

use crate::node::Node;

/// Ways a member can misbehave on purpose, so tests can check that researchers' clients cope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehave {
    /// Answers with a corrupted signature.
    BadSignature,
    /// Answers with a validly signed envelope whose payload is junk.
    Garbage,
    /// Answers with a response over the client's size limit.
    Oversized,
    /// Answers as if to another query.
    WrongQuery,
    /// Encrypted mode: sends a truncated ciphertext as its share.
    TruncatedShare,
    /// Encrypted mode: sends a share encrypted for another study.
    ForeignShare,
    /// Encrypted mode: sends a share over the ciphertext size limit.
    OversizedShare,
    /// Encrypted mode, as aggregator: returns a forged total.
    LyingAggregator,
}

impl std::str::FromStr for Misbehave {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bad-signature" => Ok(Misbehave::BadSignature),
            "garbage" => Ok(Misbehave::Garbage),
            "oversized" => Ok(Misbehave::Oversized),
            "wrong-query" => Ok(Misbehave::WrongQuery),
            "truncated-share" => Ok(Misbehave::TruncatedShare),
            "foreign-share" => Ok(Misbehave::ForeignShare),
            "oversized-share" => Ok(Misbehave::OversizedShare),
            "lying-aggregator" => Ok(Misbehave::LyingAggregator),
            other => Err(format!(
                "unknown fault {other:?}; use bad-signature, garbage, oversized, wrong-query, \
                 truncated-share, foreign-share, oversized-share or lying-aggregator"
            )),
        }
    }
}

/// Applies a deliberate fault to a response (simnet only).
pub(super) fn misbehave(node: &Node, how: Misbehave, mut response: NodeResponse) -> Envelope {
    use witmed_protocol::wire::{MAX_RESPONSE_BYTES, RESPONSE_DOMAIN};
    match how {
        Misbehave::BadSignature => {
            let mut signed = response.sign(node.key());
            signed.signature[0] ^= 1;
            signed
        }
        Misbehave::Garbage => Envelope::seal(RESPONSE_DOMAIN, &vec![0xA5u8; 300], node.key()),
        Misbehave::Oversized => Envelope::seal(
            RESPONSE_DOMAIN,
            &vec![0u8; MAX_RESPONSE_BYTES + 1],
            node.key(),
        ),
        Misbehave::WrongQuery => {
            response.query_digest[0] ^= 1;
            if let Outcome::Answered(answer) = &mut response.outcome {
                answer.query_digest[0] ^= 1;
            }
            response.sign(node.key())
        }
        Misbehave::TruncatedShare
        | Misbehave::ForeignShare
        | Misbehave::OversizedShare
        | Misbehave::LyingAggregator => {
            tamper_encrypted(how, &mut response.outcome);
            response.sign(node.key())
        }
    }
}

/// The encrypted-mode faults: a bad share, or a forged total.
fn tamper_encrypted(how: Misbehave, outcome: &mut Outcome) {
    use witmed_crypto::fhe::{self, Ciphertext};
    match (how, outcome) {
        (Misbehave::TruncatedShare, Outcome::Contributed(c)) => {
            c.ciphertext.truncate(c.ciphertext.len() / 2);
        }
        (Misbehave::ForeignShare, Outcome::Contributed(c)) => c.study[0] ^= 1,
        (Misbehave::OversizedShare, Outcome::Contributed(c)) => {
            c.ciphertext
                .resize(fhe::MAX_CIPHERTEXT_BYTES as usize + 1, 0);
        }
        (Misbehave::LyingAggregator, Outcome::Aggregated(t)) => {
            if let Ok(mut total) = Ciphertext::from_bytes(&t.ciphertext, t.values as usize) {
                // Not a multiple of delta: a forged total the researcher can detect.
                total.add_raw_plaintext(1 << (fhe::params::DELTA_LOG2 - 3));
                t.ciphertext = total.to_bytes();
            }
        }
        _ => {}
    }
}
