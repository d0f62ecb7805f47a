//! The researcher's side of encrypted mode: ask the aggregator, verify every member's receipt, add the masked shares, decrypt the sum.
//!
//! The aggregator is not trusted for integrity: the total is refused, not
//! misread, and the culprit named, when the roster holds a Ready not signed
//! by the member it names (or for another query), a member twice or fewer
//! than `min_hospitals`; when a roster member's share is missing (dropped);
//! when a share's receipt is not signed by its member (fabricated), binds
//! another roster (the roster was changed), or hashes another ciphertext
//! (substituted, e.g. by an encryption of zero); when a share comes from
//! outside the roster; when the aggregator's summary disagrees with the
//! receipts; and when the sum decrypts with more noise than honest
//! encryptions can have. Each ciphertext carries pairwise masks that cancel
//! only over the whole roster, so no single one decrypts to a hospital's share.

use std::collections::BTreeSet;
use std::time::Duration;

use witmed_crypto::fhe::{self, Ciphertext, ClientKey};
use witmed_crypto::{Envelope, KeyPair, PublicKey};
use witmed_protocol::analysis::encoding::Encoding;
use witmed_protocol::analysis::outcome::{self, Outcome, Summed};
use witmed_protocol::analysis::query::{Model, Round};
use witmed_protocol::combine::Combined;
use witmed_protocol::encrypted::{
    roster_hash, verify_roster, EncryptedTotal, Included, Receipt, RosterEntry, SECAGG_VERSION,
};
use witmed_protocol::interval::{gaussian_sum_halfwidth, ALPHA};
use witmed_protocol::limbs;
use witmed_protocol::query::{Aggregate, Query};
use witmed_protocol::wire::QueryRequest;

use crate::client;
use witmed_node::encrypted::aggregate::{check_sealed, expected_values, Binding};

/// Why an encrypted total was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the aggregator's total {0}; it is not used")]
    Inconsistent(String),
    #[error("the aggregator's total does not decrypt: {0}")]
    Fhe(#[from] fhe::Error),
}

fn inconsistent<T>(msg: impl Into<String>) -> Result<T, Error> {
    Err(Error::Inconsistent(msg.into()))
}

/// Why an encrypted query brought back no usable total.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("the query names study {query}, but the study key given is study {key}")]
    StudyMismatch { query: String, key: String },
    #[error("the aggregator {0:?} is not a member of the directory")]
    UnknownAggregator(String),
    #[error(transparent)]
    Network(#[from] client::Error),
    #[error("aggregator {name}: {label}: {reason}")]
    Aggregator {
        name: String,
        label: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Total(#[from] Error),
    /// A round's query could not be signed with a fresh nonce.
    #[error("cannot sign the query: {0}")]
    Random(String),
    /// The decrypted sums do not give a result (too noisy, singular), or a round's query is invalid.
    #[error("analysis failed: {0}")]
    Analysis(witmed_protocol::analysis::Error),
}

impl AskError {
    /// Stable code for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            AskError::StudyMismatch { .. } => "study_mismatch",
            AskError::UnknownAggregator(_) => "unknown_aggregator",
            AskError::Network(_) => "network_failed",
            AskError::Aggregator { .. } => "aggregation_failed",
            AskError::Total(_) => "bad_total",
            AskError::Random(_) => "random_failed",
            AskError::Analysis(e) => e.error_code(),
        }
    }
}

/// The researcher's whole encrypted query: send `request` to the aggregator
/// it names, wait at most `timeout`, then check and decrypt the total with
/// the study's `key` (study `study_id`).
pub async fn ask_aggregator(
    researcher: &KeyPair,
    request: &QueryRequest,
    targets: &[client::Target],
    (key, study_id): (&ClientKey, &str),
    timeout: Duration,
) -> Result<(EncryptedTotal, Combined), AskError> {
    let total = fetch_total(researcher, request, targets, study_id, timeout).await?;
    let members = directory_keys(targets);
    let combined = reveal(
        &request.query,
        &researcher.public(),
        &total,
        key,
        study_id,
        &members,
    )?;
    Ok((total, combined))
}

/// The directory's members as (name, signing key), as [`open`] and [`reveal`] check against.
pub fn directory_keys(targets: &[client::Target]) -> Vec<(String, PublicKey)> {
    targets
        .iter()
        .map(|t| (t.name.clone(), t.signing_key))
        .collect()
}

/// Sends `request` to the aggregator it names and returns its encrypted
/// total, unchecked: [`open`] or [`reveal`] checks it before use.
pub async fn fetch_total(
    researcher: &KeyPair,
    request: &QueryRequest,
    targets: &[client::Target],
    study_id: &str,
    timeout: Duration,
) -> Result<EncryptedTotal, AskError> {
    let query = &request.query;
    let named = query.privacy.study.as_deref().unwrap_or_default();
    if named != study_id {
        return Err(AskError::StudyMismatch {
            query: named.to_string(),
            key: study_id.to_string(),
        });
    }
    let name = query.privacy.aggregator.as_deref().unwrap_or_default();
    let aggregator = targets
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| AskError::UnknownAggregator(name.to_string()))?;
    let results = client::ask(
        researcher,
        request,
        std::slice::from_ref(aggregator),
        timeout,
    )
    .await?;
    match results.into_iter().next().map(|r| r.status) {
        Some(client::Status::Aggregated(total)) => Ok(total),
        other => {
            let other = other.unwrap_or(client::Status::TimedOut);
            Err(AskError::Aggregator {
                name: name.to_string(),
                label: other.label(),
                reason: other.reason().unwrap_or_default(),
            })
        }
    }
}

/// Checks `total` against the query, the researcher and the directory's
/// `members` (name, signing key), then adds the shares and decrypts the sum.
pub fn reveal(
    query: &Query,
    researcher: &PublicKey,
    total: &EncryptedTotal,
    client: &ClientKey,
    study_id: &str,
    members: &[(String, PublicKey)],
) -> Result<Combined, Error> {
    let opened = open(query, researcher, total, client, study_id, members)?;
    let half = gaussian_sum_halfwidth(opened.share_scale, opened.shares, ALPHA);
    let interval = |v: f64| (v - half, v + half);
    let as_f64: Vec<f64> = opened.totals.iter().map(|v| *v as f64).collect();
    let histogram = matches!(query.aggregate, Aggregate::Histogram { .. });
    // Total: the shape was checked against the query, but a decoded total
    // without a first value is refused rather than indexed.
    let first = match as_f64.first() {
        Some(v) => *v,
        None => return inconsistent("decrypts to no value"),
    };
    Ok(Combined {
        value: (!histogram).then_some(first),
        ci95: (!histogram).then(|| interval(first)),
        ci95s: if histogram {
            as_f64.iter().map(|v| interval(*v)).collect()
        } else {
            vec![]
        },
        values: if histogram { as_f64 } else { vec![] },
        epsilon_spent_max: opened.epsilon_spent_max,
        nodes: opened.shares,
        suppressed_nodes: vec![],
    })
}

/// An analysis's result in encrypted mode, and the total behind each of its queries.
#[derive(Debug, Clone)]
pub struct AnalysisRun {
    pub outcome: Outcome,
    /// One total per query asked: one, or one per logistic Newton round.
    pub totals: Vec<EncryptedTotal>,
    /// The last query's summed vectors.
    pub summed: Summed,
}

/// Runs an analysis query in encrypted mode: one encrypted total, or for a
/// logistic regression one per Newton round ([`round_query`]: each round a
/// query of its own, at epsilon / rounds, so the rounds together spend the
/// query's epsilon), then the researcher's analysis of the decrypted sums.
/// `seed` drives the simulated p-values.
pub async fn run_analysis(
    researcher: &KeyPair,
    (query, credential): (&Query, &Envelope),
    targets: &[client::Target],
    study: (&ClientKey, &str),
    timeout: Duration,
    seed: u64,
) -> Result<AnalysisRun, AskError> {
    let analysis_error = AskError::Analysis;
    let rounds = match &query.aggregate {
        Aggregate::Regression(r) if r.model == Model::Logistic && r.round.is_none() => r.rounds(),
        _ => 0,
    };
    if rounds == 0 {
        let (total, summed) = ask_analysis(
            researcher,
            &request(query, credential)?,
            targets,
            study,
            timeout,
        )
        .await?;
        let analysis = analysis_of(query)?;
        let outcome = outcome::analyse(&analysis, &summed, seed).map_err(analysis_error)?;
        return Ok(AnalysisRun {
            outcome,
            totals: vec![total],
            summed,
        });
    }
    let mut at = None;
    let mut totals = Vec::new();
    let mut last = None;
    for number in 1..=rounds {
        let round = round_query(query, number, at.take()).map_err(analysis_error)?;
        let (total, summed) = ask_analysis(
            researcher,
            &request(&round, credential)?,
            targets,
            study,
            timeout,
        )
        .await?;
        let analysis = analysis_of(&round)?;
        let step = outcome::logistic_step(&analysis, &summed).map_err(analysis_error)?;
        at = Some(step.next_scaled);
        totals.push(total);
        last = Some((step.fit, summed));
    }
    let Some((fit, summed)) = last else {
        // `rounds` is above zero here, so the loop ran; an empty run is refused, never a panic.
        return Err(AskError::Total(Error::Inconsistent(
            "asked no Newton round".into(),
        )));
    };
    Ok(AnalysisRun {
        outcome: Outcome::Regression(fit),
        totals,
        summed,
    })
}

/// The analysis `query` asks for; a query of another kind is refused.
fn analysis_of(query: &Query) -> Result<witmed_protocol::analysis::query::Analysis<'_>, AskError> {
    query.aggregate.analysis().ok_or_else(|| {
        AskError::Total(Error::Inconsistent(format!(
            "is for a {}, not an analysis",
            query.aggregate.kind()
        )))
    })
}

fn request(query: &Query, credential: &Envelope) -> Result<QueryRequest, AskError> {
    client::request_for(query.clone(), credential, witmed_node::unix_now())
        .map_err(AskError::Random)
}

/// Logistic round `number` of `query`: id `<id>/round-<number>`, epsilon /
/// rounds, computed at `at` (the previous round's coefficients; zero for the first).
pub fn round_query(
    query: &Query,
    number: u32,
    at: Option<Vec<f64>>,
) -> Result<Query, witmed_protocol::analysis::Error> {
    let mut round = query.clone();
    round.id = format!("{}/round-{number}", query.id);
    if let Aggregate::Regression(r) = &mut round.aggregate {
        round.privacy.epsilon = query.privacy.epsilon / f64::from(r.rounds().max(1));
        let start = vec![0.0; r.covariates.len() + 1];
        r.round = Some(Round {
            number,
            at: at.unwrap_or(start),
        });
    }
    round
        .validate()
        .map_err(|e| witmed_protocol::analysis::Error::BadCoefficients(e.to_string()))?;
    Ok(round)
}

/// An analysis query (survival, table, regression) in encrypted mode: ask
/// the aggregator, check and decrypt its total, and give the researcher's
/// analysis its sums and the noise each carries
/// ([`witmed_protocol::analysis::encoding`]).
pub async fn ask_analysis(
    researcher: &KeyPair,
    request: &QueryRequest,
    targets: &[client::Target],
    (key, study_id): (&ClientKey, &str),
    timeout: Duration,
) -> Result<(EncryptedTotal, Summed), AskError> {
    let total = fetch_total(researcher, request, targets, study_id, timeout).await?;
    let members = directory_keys(targets);
    let summed = reveal_summed(
        &request.query,
        &researcher.public(),
        &total,
        key,
        study_id,
        &members,
    )?;
    Ok((total, summed))
}

/// [`open`], then the decrypted integer totals as an analysis's real sums
/// with their noise: the sum of the shares' discrete Gaussians, divided by
/// the encoding's resolution.
pub fn reveal_summed(
    query: &Query,
    researcher: &PublicKey,
    total: &EncryptedTotal,
    client: &ClientKey,
    study_id: &str,
    members: &[(String, PublicKey)],
) -> Result<Summed, Error> {
    let Some(analysis) = query.aggregate.analysis() else {
        return inconsistent(format!(
            "is for a {}, not an analysis",
            query.aggregate.kind()
        ));
    };
    let opened = open(query, researcher, total, client, study_id, members)?;
    Encoding::of(&analysis)
        .summed(
            &opened.totals,
            opened.share_scale,
            opened.shares,
            opened.epsilon_spent_max,
        )
        .map_err(|e| Error::Inconsistent(format!("does not give the analysis its sums: {e}")))
}

/// A verified, decrypted total: the integer sums of every share and what the receipts say about their noise.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    /// One integer total per value of the query (limbs recombined).
    pub totals: Vec<i64>,
    /// The discrete Gaussian scale of every share (one scale, checked).
    pub share_scale: f64,
    /// How many shares were added (at least `min_hospitals`).
    pub shares: usize,
    /// The largest privacy loss charged at one member.
    pub epsilon_spent_max: f64,
}

/// Checks `total` against the query, the researcher and the directory's
/// `members`, adds the shares, decrypts the sum and recombines its limbs.
pub fn open(
    query: &Query,
    researcher: &PublicKey,
    total: &EncryptedTotal,
    client: &ClientKey,
    study_id: &str,
    members: &[(String, PublicKey)],
) -> Result<Opened, Error> {
    if total.version != SECAGG_VERSION {
        return inconsistent(format!(
            "has version {}; this witmed reads version {SECAGG_VERSION}",
            total.version
        ));
    }
    if hex::encode(total.study) != study_id {
        return inconsistent("is encrypted for another study");
    }
    let values = expected_values(query);
    if total.values as usize != values {
        return inconsistent(format!("holds {} values, not {values}", total.values));
    }
    let digest = query.digest();
    let entries = verify_roster(&total.roster, &digest, researcher, members)
        .map_err(|e| Error::Inconsistent(format!("has a bad roster: {e}")))?;
    let min = query.privacy.min_hospitals.unwrap_or(1) as usize;
    if entries.len() < min {
        return inconsistent(format!(
            "has {} shares, fewer than min_hospitals = {min}",
            entries.len()
        ));
    }
    let binding = Binding {
        query,
        researcher,
        study: total.study,
        roster_hash: roster_hash(&digest, researcher, &entries),
        values,
    };
    let receipts = check_shares(total, &entries, members, &binding)?;
    let summary: Vec<Included> = receipts.iter().map(Included::from_receipt).collect();
    if summary != total.included {
        return inconsistent("summary of who is included does not match the members' receipts");
    }
    let scale = receipts[0].share_scale;
    if receipts
        .iter()
        .any(|r| (r.share_scale - scale).abs() > 1e-9 * scale)
    {
        return inconsistent("mixes noise shares of different scales");
    }
    let mut sum: Option<Ciphertext> = None;
    for share in &total.shares {
        let ciphertext = Ciphertext::from_bytes(&share.ciphertext, values)?;
        match sum.as_mut() {
            None => sum = Some(ciphertext),
            Some(s) => s.add_assign(&ciphertext)?,
        }
    }
    let Some(sum) = sum else {
        return inconsistent("holds no share");
    };
    let slots = client.decrypt(&sum, total.shares.len())?;
    let totals = limbs::decode(&slots, witmed_node::encrypted::shares::layout(query).limbs)
        .map_or_else(|| inconsistent("does not recombine from its limbs"), Ok)?;
    Ok(Opened {
        totals,
        share_scale: scale,
        shares: total.shares.len(),
        epsilon_spent_max: receipts.iter().map(|r| r.epsilon_spent).fold(0.0, f64::max),
    })
}

/// Every roster member has exactly one share with a valid receipt, and no one else has one; returns the receipts in share order.
fn check_shares(
    total: &EncryptedTotal,
    roster: &[RosterEntry],
    members: &[(String, PublicKey)],
    binding: &Binding<'_>,
) -> Result<Vec<Receipt>, Error> {
    let mut seen = BTreeSet::new();
    let mut receipts = Vec::with_capacity(total.shares.len());
    for share in &total.shares {
        let name = share.member.as_str();
        if !roster.iter().any(|e| e.member == name) {
            return inconsistent(format!(
                "holds a fabricated share attributed to {name}, who is not in the roster"
            ));
        }
        if !seen.insert(name) {
            return inconsistent(format!("counts {name} twice"));
        }
        let key = members
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| *k)
            .ok_or_else(|| Error::Inconsistent(format!("counts {name}, which is not a member")))?;
        let receipt = check_sealed(name, &key, share, binding).map_err(|e| {
            Error::Inconsistent(format!("holds a share that fails its receipt: {e}"))
        })?;
        receipts.push(receipt);
    }
    if let Some(dropped) = roster.iter().find(|e| !seen.contains(e.member.as_str())) {
        return inconsistent(format!(
            "lacks the share of {}, who is in the roster: it was dropped",
            dropped.member
        ));
    }
    if receipts.len() > fhe::params::MAX_CONTRIBUTIONS {
        return inconsistent("has more shares than decode exactly");
    }
    Ok(receipts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use witmed_crypto::secagg::Ephemeral;
    use witmed_crypto::Role;
    use witmed_protocol::encrypted::{Ready, SealedShare};

    fn count_query(min_hospitals: u32) -> Query {
        Query::from_toml(&format!(
            "version = 1\nid = \"c\"\npurpose = \"HMB\"\naggregate = \"count\"\n[privacy]\n\
             mode = \"encrypted\"\nepsilon = 1.0\naggregator = \"a\"\nstudy = \"{}\"\nmin_hospitals = {min_hospitals}\n",
            "0".repeat(64)
        ))
        .unwrap()
    }

    struct Fixture {
        query: Query,
        researcher: PublicKey,
        total: EncryptedTotal,
        client: ClientKey,
        study: String,
        members: Vec<(String, PublicKey)>,
        keys: Vec<KeyPair>,
    }

    /// An honest total of shares 10, 20 and 5 from members a, b and c, sealed as members do.
    fn honest() -> Fixture {
        honest_with(2)
    }

    fn honest_with(min_hospitals: u32) -> Fixture {
        let (client, public) = ClientKey::generate();
        let query = count_query(min_hospitals);
        let researcher = KeyPair::generate(Role::Researcher).unwrap().public();
        let digest = query.digest();
        let names = ["a", "b", "c"];
        let keys: Vec<KeyPair> = names
            .iter()
            .map(|_| KeyPair::generate(Role::Node).unwrap())
            .collect();
        let ephemerals: Vec<Ephemeral> = names
            .iter()
            .map(|_| Ephemeral::generate().unwrap())
            .collect();
        let roster: Vec<_> = names
            .iter()
            .zip(&keys)
            .zip(&ephemerals)
            .map(|((n, k), e)| {
                Ready {
                    version: SECAGG_VERSION,
                    query_digest: digest,
                    researcher,
                    member: n.to_string(),
                    ephemeral: e.public(),
                }
                .sign(k)
            })
            .collect();
        let members: Vec<(String, PublicKey)> = names
            .iter()
            .zip(&keys)
            .map(|(n, k)| (n.to_string(), k.public()))
            .collect();
        let entries = verify_roster(&roster, &digest, &researcher, &members).unwrap();
        let hash = roster_hash(&digest, &researcher, &entries);
        let pairs: Vec<(String, [u8; 32])> = entries
            .iter()
            .map(|e| (e.member.clone(), e.ephemeral))
            .collect();
        let mut shares = Vec::new();
        let mut included = Vec::new();
        for (i, value) in [10, 20, 5].into_iter().enumerate() {
            let mut ct = public.encrypt(&[value]).unwrap();
            ct.add_masks(&ephemerals[i].mask(names[i], &pairs, &hash, 1).unwrap())
                .unwrap();
            let ciphertext = ct.to_bytes();
            let receipt = Receipt {
                version: SECAGG_VERSION,
                query_digest: digest,
                researcher,
                member: names[i].into(),
                study: public.study_id(),
                roster_hash: hash,
                ciphertext_hash: witmed_crypto::sha256(&ciphertext),
                values: 1,
                share_scale: 3.0,
                epsilon_spent: 1.0,
                delta_spent: 1e-6,
                budget_left: 9.0,
            };
            included.push(Included::from_receipt(&receipt));
            shares.push(SealedShare {
                member: names[i].into(),
                ciphertext,
                receipt: receipt.sign(&keys[i]),
            });
        }
        let total = EncryptedTotal {
            version: SECAGG_VERSION,
            study: public.study_id(),
            values: 1,
            roster,
            shares,
            included,
            left_out: vec![],
        };
        Fixture {
            query,
            researcher,
            total,
            client,
            study: hex::encode(public.study_id()),
            members,
            keys,
        }
    }

    impl Fixture {
        fn reveal(&self, total: &EncryptedTotal) -> Result<Combined, Error> {
            reveal(
                &self.query,
                &self.researcher,
                total,
                &self.client,
                &self.study,
                &self.members,
            )
        }

        fn refused(&self, total: &EncryptedTotal, needle: &str) {
            let err = self.reveal(total).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn an_honest_total_decrypts_with_its_interval_and_one_share_alone_does_not() {
        let f = honest();
        let c = f.reveal(&f.total).unwrap();
        assert_eq!(c.value, Some(35.0));
        let half = gaussian_sum_halfwidth(3.0, 3, ALPHA);
        assert_eq!(c.ci95, Some((35.0 - half, 35.0 + half)));
        assert_eq!(c.nodes, 3);
        let alone = Ciphertext::from_bytes(&f.total.shares[0].ciphertext, 1).unwrap();
        assert_ne!(f.client.decrypt(&alone, 1).unwrap(), vec![10]);
    }

    #[test]
    fn every_tampering_by_the_aggregator_is_refused_and_named() {
        let f = honest();
        let mut t = f.total.clone();
        t.shares.pop();
        t.included.pop();
        f.refused(&t, "lacks the share of c");
        let mut t = f.total.clone();
        t.shares[1].ciphertext = t.shares[0].ciphertext.clone();
        f.refused(&t, "b's ciphertext is not the one b sealed");
        let mut t = f.total.clone();
        let mut forged: Receipt = t.shares[2].receipt.open(RECEIPT_DOMAIN_FOR_TESTS).unwrap();
        forged.share_scale = 1.0;
        t.shares[2].receipt = forged.sign(&f.keys[0]);
        f.refused(&t, "not signed by c's directory key");
        let mut t = f.total.clone();
        t.roster.pop();
        t.shares.pop();
        t.included.pop();
        f.refused(&t, "another roster");
        let mut t = f.total.clone();
        t.shares[2].member = "mallory".into();
        f.refused(&t, "fabricated share attributed to mallory");
        let mut t = f.total.clone();
        t.shares[2] = t.shares[1].clone();
        f.refused(&t, "counts b twice");
        let mut t = f.total.clone();
        t.included[0].budget_left = 1.0;
        f.refused(&t, "summary");
        let mut t = f.total.clone();
        t.study[0] ^= 1;
        f.refused(&t, "another study");
        let mut t = f.total.clone();
        t.version = 1;
        f.refused(&t, "version");
        let strict = honest_with(4);
        strict.refused(&strict.total, "fewer than min_hospitals");
    }

    const RECEIPT_DOMAIN_FOR_TESTS: &str = witmed_protocol::encrypted::RECEIPT_DOMAIN;
}
