//! Deliberate faults for simnet: a node that answers wrongly on purpose (`witmed node run --fault`), as a member or as an encrypted-mode aggregator; never set in production.

use witmed_crypto::fhe::{self, Ciphertext};
use witmed_crypto::Envelope;
use witmed_protocol::encrypted::{
    EncryptedTotal, Ready, Receipt, SealedShare, READY_DOMAIN, RECEIPT_DOMAIN,
};
use witmed_protocol::wire::{NodeResponse, Outcome};

use witmed_node::encrypted::study;
use witmed_node::node::Node;

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
    /// Encrypted mode, as aggregator: shifts one member's ciphertext by a whole value (a well-formed lie).
    LyingAggregator,
    /// Encrypted mode, as aggregator: drops the last member's share.
    AggregatorDropsShare,
    /// Encrypted mode, as aggregator: replaces the last member's ciphertext by its own encryption.
    AggregatorSubstitutesShare,
    /// Encrypted mode, as aggregator: makes up the last member's share and signs its receipt itself.
    AggregatorFabricatesShare,
    /// Encrypted mode, as aggregator: keeps the first share and replaces every other by an encryption of zero.
    AggregatorZeroesShares,
    /// Encrypted mode, as aggregator: leaves the last member out of the roster it shows the researcher.
    AggregatorLiesAboutRoster,
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
            "aggregator-drops-share" => Ok(Misbehave::AggregatorDropsShare),
            "aggregator-substitutes-share" => Ok(Misbehave::AggregatorSubstitutesShare),
            "aggregator-fabricates-share" => Ok(Misbehave::AggregatorFabricatesShare),
            "aggregator-zeroes-shares" => Ok(Misbehave::AggregatorZeroesShares),
            "aggregator-lies-about-roster" => Ok(Misbehave::AggregatorLiesAboutRoster),
            other => Err(format!(
                "unknown fault {other:?}; use bad-signature, garbage, oversized, wrong-query, \
                 truncated-share, foreign-share, oversized-share, lying-aggregator, \
                 aggregator-drops-share, aggregator-substitutes-share, \
                 aggregator-fabricates-share, aggregator-zeroes-shares or \
                 aggregator-lies-about-roster"
            )),
        }
    }
}

/// Applies a deliberate fault to a response (simnet only).
pub fn misbehave(node: &Node, how: Misbehave, mut response: NodeResponse) -> Envelope {
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
        | Misbehave::LyingAggregator
        | Misbehave::AggregatorDropsShare
        | Misbehave::AggregatorSubstitutesShare
        | Misbehave::AggregatorFabricatesShare
        | Misbehave::AggregatorZeroesShares
        | Misbehave::AggregatorLiesAboutRoster => {
            match &mut response.outcome {
                Outcome::Sealed(share) => tamper_share(node, how, share),
                Outcome::Aggregated(total) => tamper_total(node, how, total),
                _ => {}
            }
            response.sign(node.key())
        }
    }
}

/// A member's faults: a bad share under a receipt it signs itself (so the share, not the receipt, is what fails).
fn tamper_share(node: &Node, how: Misbehave, share: &mut SealedShare) {
    let Ok(mut receipt) = share.receipt.open::<Receipt>(RECEIPT_DOMAIN) else {
        return;
    };
    match how {
        Misbehave::TruncatedShare => share.ciphertext.truncate(share.ciphertext.len() / 2),
        Misbehave::ForeignShare => receipt.study[0] ^= 1,
        Misbehave::OversizedShare => share
            .ciphertext
            .resize(fhe::MAX_CIPHERTEXT_BYTES as usize + 1, 0),
        _ => return,
    }
    receipt.ciphertext_hash = witmed_crypto::sha256(&share.ciphertext);
    share.receipt = receipt.sign(node.key());
}

/// The aggregator's faults against the researcher.
fn tamper_total(node: &Node, how: Misbehave, total: &mut EncryptedTotal) {
    let values = total.values as usize;
    let Some(receipt) = total
        .shares
        .first()
        .and_then(|s| s.receipt.open::<Receipt>(RECEIPT_DOMAIN).ok())
    else {
        return;
    };
    // The aggregator holds the study's public key: it can encrypt anything.
    let encrypt = |v: i64| {
        study::key_for(node, &hex::encode(total.study), &receipt.researcher)
            .ok()
            .and_then(|(_, key)| key.encrypt(&vec![v; values]).ok())
            .map(|c| c.to_bytes())
    };
    let last = total.shares.len().saturating_sub(1);
    match how {
        Misbehave::LyingAggregator => {
            if let Some(share) = total.shares.first_mut() {
                if let Ok(mut c) = Ciphertext::from_bytes(&share.ciphertext, values) {
                    c.add_raw_plaintext(1000 << fhe::params::DELTA_LOG2);
                    share.ciphertext = c.to_bytes();
                }
            }
        }
        Misbehave::AggregatorDropsShare => {
            total.shares.truncate(last);
            total.included.truncate(last);
        }
        Misbehave::AggregatorSubstitutesShare => {
            if let Some(bytes) = encrypt(1000) {
                total.shares[last].ciphertext = bytes;
            }
        }
        Misbehave::AggregatorFabricatesShare => {
            if let (Some(bytes), Ok(mut forged)) = (
                encrypt(1000),
                total.shares[last].receipt.open::<Receipt>(RECEIPT_DOMAIN),
            ) {
                forged.ciphertext_hash = witmed_crypto::sha256(&bytes);
                total.shares[last].ciphertext = bytes;
                total.shares[last].receipt = forged.sign(node.key());
            }
        }
        Misbehave::AggregatorZeroesShares => {
            let zero = encrypt(0);
            for share in total.shares.iter_mut().skip(1) {
                if let Some(bytes) = &zero {
                    share.ciphertext = bytes.clone();
                }
            }
        }
        Misbehave::AggregatorLiesAboutRoster => {
            let dropped = total.shares.get(last).map(|s| s.member.clone());
            total.roster.retain(|r| {
                r.open::<Ready>(READY_DOMAIN)
                    .map_or(true, |ready| Some(ready.member) != dropped)
            });
            total.shares.truncate(last);
            total.included.truncate(last);
        }
        _ => {}
    }
}
