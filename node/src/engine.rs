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

use witmed_crypto::{Envelope, PublicKey};
use witmed_policies::credential::{self, VerifiedCredential};
use witmed_policies::evaluate::{self, Refusal, Request, Use};
use witmed_protocol::answer::{Answer, ANSWER_VERSION};
use witmed_protocol::query::Query;

use crate::audit;
use crate::dp::{self, Plan};
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

/// Answers `query` from `researcher`, who presents `credential`.
pub fn answer(
    node: &Node,
    query: &Query,
    researcher: &PublicKey,
    credential: &Envelope,
    now: i64,
) -> Result<Answer, Error> {
    let policy = node.policy();
    let credential = credential::verify_credential(credential, &policy.trusted_issuers, now)
        .map_err(Error::Credential)?;
    let request = Request::from_query(query, *researcher);
    if let Err(reasons) = evaluate::query_allowed(&policy, &credential, &request, now) {
        record_refusal(node, researcher, query, &reasons, now)?;
        return Err(Error::Refused(reasons));
    }
    let use_ = Use::new(node.id(), &request, &credential).map_err(Error::Credential)?;
    let _guard = node.ledger_lock.lock().expect("ledger lock");
    if let Some(stored) = ledger::stored_answer(&node.store, researcher, &query.id)? {
        return replay(stored, query);
    }
    let plan = Plan::new(query)?;
    let spent =
        ledger::spent_in_window(&node.store, researcher, now, policy.budget.window_seconds)?;
    let left = (policy.budget.epsilon - spent).max(0.0);
    if plan.epsilon() > left + 1e-9 {
        return Err(Error::BudgetExhausted {
            needed: plan.epsilon(),
            left,
        });
    }
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
    commit(
        node,
        researcher,
        query,
        &answer,
        plan.epsilon(),
        &credential,
        now,
    )?;
    Ok(answer)
}

fn replay(stored: StoredAnswer, query: &Query) -> Result<Answer, Error> {
    if stored.query_digest != query.digest() {
        return Err(Error::IdReused(query.id.clone()));
    }
    Answer::from_bytes(&stored.answer).map_err(Error::StoredAnswer)
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

fn commit(
    node: &Node,
    researcher: &PublicKey,
    query: &Query,
    answer: &Answer,
    epsilon: f64,
    credential: &VerifiedCredential,
    now: i64,
) -> Result<(), Error> {
    let mut batch = node.store.batch();
    let charge = ledger::charge(&query.id, epsilon, 0.0, now);
    let stored = StoredAnswer {
        version: RECORD_VERSION,
        query_digest: query.digest(),
        answer: answer.to_bytes(),
    };
    ledger::record(&mut batch, researcher, &charge, &stored)?;
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
        epsilon
    );
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "query.answered", researcher.to_hex(), detail),
    )?;
    node.store.write_durable(batch)?;
    tracing::info!(researcher = %researcher.short(), query = %query.id, epsilon, suppressed = answer.released.suppressed, "query answered");
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
