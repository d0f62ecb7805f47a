//! The query engine: policy check, eligible patients, one value each, DP release, budget charge.
//!
//! The order matters and is the same for every query:
//! 1. the researcher's credential and the query are checked against the node policy;
//! 2. a replayed query id returns its stored answer, a reused id with another query is refused;
//! 3. the OpenDP measurement is built and its privacy loss read from its privacy map;
//! 4. the loss is checked against the researcher's remaining budget;
//! 5. patients are selected (consent at `now`, then cohort) and reduced to one value each;
//! 6. the measurement runs;
//! 7. charge, answer and audit entry are written in one synced batch, and only then
//!    is the answer returned.

use witmed_crypto::fhe;
use witmed_crypto::{Envelope, PublicKey};
use witmed_policies::credential::{self, VerifiedCredential};
use witmed_policies::evaluate::{self, Refusal, Request, Use};
use witmed_protocol::answer::{Answer, ANSWER_VERSION};
use witmed_protocol::encrypted::{Contribution, ENCRYPTED_VERSION};
use witmed_protocol::query::Query;

use crate::audit;
use crate::dp::{self, Plan};
use crate::encrypted::shares::SharePlan;
use crate::encrypted::study;
use crate::index::Index;
use crate::ledger::{self, StoredAnswer};
use crate::node::Node;
use crate::store::{self, RECORD_VERSION};

/// Why a query was not answered. Each variant says what the researcher can do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("credential refused: {0}")]
    Credential(witmed_policies::Error),
    #[error("query refused by node policy: {}", join(.0))]
    Refused(Vec<Refusal>),
    #[error("query id {0:?} was already used for a different query; choose a new id")]
    IdReused(String),
    #[error("privacy budget exhausted: this query needs epsilon {needed:.4} but {left:.4} is left in the current window")]
    BudgetExhausted { needed: f64, left: f64 },
    #[error(transparent)]
    Dp(#[from] dp::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("stored answer is unreadable: {0}")]
    StoredAnswer(String),
    #[error(transparent)]
    Study(#[from] crate::encrypted::study::Error),
    #[error("cannot encrypt the share: {0}")]
    Fhe(#[from] witmed_crypto::fhe::Error),
}

impl Error {
    /// Stable code for scripts and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Credential(_) => "credential_refused",
            Error::Refused(_) => "policy_refused",
            Error::IdReused(_) => "query_id_reused",
            Error::BudgetExhausted { .. } => "budget_exhausted",
            Error::Dp(_) => "dp_failed",
            Error::Store(_) => "store_failed",
            Error::StoredAnswer(_) => "stored_answer_unreadable",
            Error::Study(e) => e.code(),
            Error::Fhe(_) => "encryption_failed",
        }
    }
}

fn join(refusals: &[Refusal]) -> String {
    refusals
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks the credential and the node policy; returns the verified credential and the use it allows.
fn authorize(
    node: &Node,
    query: &Query,
    researcher: &PublicKey,
    credential: &Envelope,
    now: i64,
) -> Result<(VerifiedCredential, Use), Error> {
    let policy = node.policy();
    let credential = credential::verify_credential(credential, &policy.trusted_issuers, now)
        .map_err(Error::Credential)?;
    let request = Request::from_query(query, *researcher);
    if let Err(reasons) = evaluate::query_allowed(&policy, &credential, &request, now) {
        record_refusal(node, researcher, query, &reasons, now)?;
        return Err(Error::Refused(reasons));
    }
    let use_ = Use::new(node.id(), &request, &credential).map_err(Error::Credential)?;
    Ok((credential, use_))
}

/// Budget left to `researcher`, refusing if `needed` does not fit.
fn budget_left(node: &Node, researcher: &PublicKey, needed: f64, now: i64) -> Result<f64, Error> {
    let policy = node.policy();
    let spent =
        ledger::spent_in_window(&node.store, researcher, now, policy.budget.window_seconds)?;
    let left = (policy.budget.epsilon - spent).max(0.0);
    if needed > left + 1e-9 {
        return Err(Error::BudgetExhausted { needed, left });
    }
    Ok(left)
}

/// Answers `query` from `researcher`, who presents `credential`.
pub fn answer(
    node: &Node,
    query: &Query,
    researcher: &PublicKey,
    credential: &Envelope,
    now: i64,
) -> Result<Answer, Error> {
    if query.privacy.mode == witmed_protocol::vocab::Mode::Encrypted {
        return Err(Error::Dp(dp::Error::Unsupported(
            "an encrypted-mode query is answered through its aggregator, as an encrypted share"
                .into(),
        )));
    }
    let policy = node.policy();
    let (credential, use_) = authorize(node, query, researcher, credential, now)?;
    let _guard = node.ledger_lock.lock().expect("ledger lock");
    if let Some(stored) = ledger::stored_answer(&node.store, researcher, &query.id)? {
        return replay(stored, query, Answer::from_bytes);
    }
    let plan = Plan::new(query)?;
    let left = budget_left(node, researcher, plan.epsilon(), now)?;
    let values = select_values(node, query, &use_, now)?;
    let released = plan.release(&values, policy.min_cohort)?;
    let answer = Answer {
        version: ANSWER_VERSION,
        query_id: query.id.clone(),
        query_digest: query.digest(),
        node: node.config.name.clone(),
        released,
        budget_left: (left - plan.epsilon()).max(0.0),
        answered_at: now,
    };
    let detail = format!(
        "query {} ({} {}, purpose {}, project {}) answered{}, epsilon {:.4}",
        query.id,
        query.aggregate.kind(),
        query.privacy.mode,
        query.purpose,
        credential.credential().project,
        if answer.released.suppressed {
            " (suppressed: small cohort)"
        } else {
            ""
        },
        plan.epsilon()
    );
    let charge = ledger::charge(&query.id, plan.epsilon(), 0.0, now);
    commit(node, researcher, query, &charge, answer.to_bytes(), detail)?;
    tracing::info!(researcher = %researcher.short(), query = %query.id, epsilon = plan.epsilon(), suppressed = answer.released.suppressed, "query answered");
    Ok(answer)
}

/// Encrypted mode: this node's noisy share of `query`, encrypted under the study key.
///
/// `members` is the number of hospitals in the consortium directory: the
/// aggregator adds at most one share from each, and the share plan's limbs
/// decode totals of up to `fhe::params::MAX_CONTRIBUTIONS` shares.
pub fn contribute(
    node: &Node,
    query: &Query,
    researcher: &PublicKey,
    credential: &Envelope,
    members: usize,
    now: i64,
) -> Result<Contribution, Error> {
    let (credential, use_) = authorize(node, query, researcher, credential, now)?;
    let study_id = query.privacy.study.as_deref().unwrap_or_default();
    // The id it is stored under is the hash of the key: no need to hash it again.
    let (study, study_key) = study::key_for(node, study_id, researcher)?;
    let _guard = node.ledger_lock.lock().expect("ledger lock");
    if let Some(stored) = ledger::stored_answer(&node.store, researcher, &query.id)? {
        return replay(stored, query, Contribution::from_bytes);
    }
    if members > fhe::params::MAX_CONTRIBUTIONS {
        return Err(Error::Dp(dp::Error::Unsupported(format!(
            "the directory lists {members} members, more than the {} shares an encrypted total decodes exactly",
            fhe::params::MAX_CONTRIBUTIONS
        ))));
    }
    let plan = SharePlan::new(query)?;
    let left = budget_left(node, researcher, plan.epsilon, now)?;
    let values = select_values(node, query, &use_, now)?;
    // Limb-encoded slots; the plan made sure every total of them decodes.
    let share = plan.share(&values, crate::encrypted::noise_enabled())?;
    let ciphertext = study_key.encrypt(&share)?;
    let contribution = Contribution {
        version: ENCRYPTED_VERSION,
        study,
        ciphertext: ciphertext.to_bytes(),
        values: share.len() as u32,
        share_scale: plan.share_scale,
        epsilon_spent: plan.epsilon,
        delta_spent: plan.delta,
        budget_left: (left - plan.epsilon).max(0.0),
        answered_at: now,
    };
    let detail = format!(
        "query {} ({} encrypted, purpose {}, project {}) contributed an encrypted share for aggregator {}: epsilon {:.4}, delta {:e} for the total of at least {} shares; share scale {:.3}, rho {:.4} for this share alone",
        query.id,
        query.aggregate.kind(),
        query.purpose,
        credential.credential().project,
        query.privacy.aggregator.as_deref().unwrap_or_default(),
        plan.epsilon,
        plan.delta,
        query.privacy.min_hospitals.unwrap_or(1),
        plan.share_scale,
        plan.local_rho,
    );
    let charge = ledger::charge(&query.id, plan.epsilon, plan.delta, now);
    commit(
        node,
        researcher,
        query,
        &charge,
        contribution.to_bytes(),
        detail,
    )?;
    tracing::info!(researcher = %researcher.short(), query = %query.id, epsilon = plan.epsilon, "encrypted share contributed");
    Ok(contribution)
}

/// What was released for a used query id, if it is this very query (`parse` reads the stored bytes).
fn replay<T>(
    stored: StoredAnswer,
    query: &Query,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, Error> {
    if stored.query_digest != query.digest() {
        return Err(Error::IdReused(query.id.clone()));
    }
    parse(&stored.answer).map_err(Error::StoredAnswer)
}

/// One value per eligible patient in the cohort (or one row per patient for a plain count).
pub fn select_values(node: &Node, query: &Query, use_: &Use, now: i64) -> Result<Vec<f64>, Error> {
    let index = node.index()?;
    let eligible = node.eligibility(&index, use_, now);
    Ok(values_for(&index, query, |i| eligible[i]))
}

/// The per-patient values of `query` over patients for whom `eligible(i)` holds.
pub fn values_for(index: &Index, query: &Query, eligible: impl Fn(usize) -> bool) -> Vec<f64> {
    (0..index.len())
        .filter(|&i| index.in_cohort(i, &query.cohort) && eligible(i))
        .filter_map(|i| match &query.feature {
            Some(feature) => index.feature_value(i, feature),
            None => Some(0.0),
        })
        .collect()
}

/// Writes the charge, the stored answer and the audit entry in one synced batch.
fn commit(
    node: &Node,
    researcher: &PublicKey,
    query: &Query,
    charge: &ledger::Charge,
    answer: Vec<u8>,
    detail: String,
) -> Result<(), Error> {
    let mut batch = node.store.batch();
    let stored = StoredAnswer {
        version: RECORD_VERSION,
        query_digest: query.digest(),
        answer,
    };
    ledger::record(&mut batch, researcher, charge, &stored)?;
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(charge.at, "query.answered", researcher.to_hex(), detail),
    )?;
    node.store.write_durable(batch)?;
    Ok(())
}

fn record_refusal(
    node: &Node,
    researcher: &PublicKey,
    query: &Query,
    reasons: &[Refusal],
    now: i64,
) -> Result<(), Error> {
    let mut batch = node.store.batch();
    let detail = format!("query {} refused: {}", query.id, join(reasons));
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "query.refused", researcher.to_hex(), detail),
    )?;
    node.store.write_durable(batch)?;
    tracing::info!(researcher = %researcher.short(), query = %query.id, reasons = %join(reasons), "query refused");
    Ok(())
}
