//! The query engine: policy check, eligible patients, one value each, DP release, budget charge.
//!
//! The order matters and is the same for every query:
//! 1. the researcher's credential and the query are checked against the node policy;
//! 2. a replayed query id returns its stored answer, a reused id with another query is refused;
//! 3. the OpenDP measurement is built and its privacy loss read from its privacy map;
//! 4. the loss (epsilon and delta) is checked against the researcher's remaining
//!    budget, in the rolling window and under the lifetime cap; a refusal is audited;
//! 5. patients are selected (consent at `now`, personal cap, then cohort) and
//!    reduced to one value each;
//! 6. the measurement runs;
//! 7. charge, the included patients' accounts ([`crate::accounts`]), answer and
//!    audit entry are written in one synced batch, and only then is the answer
//!    returned.
//!
//! Encrypted mode follows the same order in [`prepare`] (the stored answer
//! is the encrypted share and its ephemeral key), then [`seal`] masks that
//! share for one roster, once per query id.

use serde::{Deserialize, Serialize};
use witmed_crypto::fhe;
use witmed_crypto::secagg::{self, Ephemeral};
use witmed_crypto::{Envelope, PublicKey};
use witmed_policies::credential::{self, VerifiedCredential};
use witmed_policies::evaluate::{self, Refusal, Request, Use};
use witmed_protocol::analysis::query::Analysis;
use witmed_protocol::answer::{Answer, ANSWER_VERSION};
use witmed_protocol::encrypted::{
    Contribution, Ready, Receipt, RosterEntry, SealedShare, ENCRYPTED_VERSION, SECAGG_VERSION,
};
use witmed_protocol::query::Query;

use crate::accounts;
use crate::audit;
use crate::dp::{self, Plan};
use crate::encrypted::shares::vector::VectorPlan;
use crate::encrypted::shares::SharePlan;
use crate::encrypted::study;
use crate::index::{Index, Rows};
use crate::ledger::{self, Account, Loss, NewCharge, StoredAnswer};
use crate::node::Node;
use crate::store::{self, cf, RECORD_VERSION};
use witmed_protocol::analysis::encoding::Encoding;

/// Why a query was not answered. Each variant says what the researcher can do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("credential refused: {0}")]
    Credential(witmed_policies::Error),
    #[error("query refused by node policy: {}", join(.0))]
    Refused(Vec<Refusal>),
    #[error("query id {0:?} was already used for a different query; choose a new id")]
    IdReused(String),
    /// The researcher's rolling window holds too little for this query.
    #[error("privacy budget exhausted for researcher {researcher}: {reason}")]
    BudgetExhausted {
        researcher: String,
        reason: ledger::Exhausted,
    },
    /// The researcher's lifetime cap holds too little for this query: it never renews.
    #[error("lifetime privacy budget exhausted for researcher {researcher}: {reason}")]
    LifetimeBudgetExhausted {
        researcher: String,
        reason: ledger::Exhausted,
    },
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
    #[error(transparent)]
    Accounts(#[from] accounts::Error),
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
    #[error("query {0:?} was not prepared at this node; the aggregator must send it (round 1) before the roster (round 2)")]
    NotPrepared(String),
    #[error("query {0:?} was already sealed for another roster; an encrypted total is made once per query id: ask again with a new id")]
    RosterChanged(String),
    #[error("the roster does not hold {0}'s own Ready for this query")]
    NotInRoster(String),
    #[error("cannot mask the share: {0}")]
    Secagg(#[from] secagg::Error),
    /// The analysis cannot be computed as asked (nothing was charged when it is refused before release).
    #[error("analysis refused: {0}")]
    Analysis(witmed_protocol::analysis::Error),
}

impl Error {
    /// Stable code for scripts and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Credential(_) => "credential_refused",
            Error::Refused(_) => "policy_refused",
            Error::IdReused(_) => "query_id_reused",
            Error::BudgetExhausted { .. } => "budget_exhausted",
            Error::LifetimeBudgetExhausted { .. } => "lifetime_budget_exhausted",
            Error::Ledger(e) => e.code(),
            Error::Accounts(e) => e.code(),
            Error::Dp(_) => "dp_failed",
            Error::Store(_) => "store_failed",
            Error::StoredAnswer(_) => "stored_answer_unreadable",
            Error::Study(e) => e.code(),
            Error::Fhe(_) => "encryption_failed",
            Error::NotPrepared(_) => "not_prepared",
            Error::RosterChanged(_) => "roster_changed",
            Error::NotInRoster(_) => "not_in_roster",
            Error::Secagg(secagg::Error::Random) => "random_failed",
            Error::Secagg(_) => "bad_roster",
            Error::Analysis(e) => e.error_code(),
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
pub fn authorize(
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

/// Budget left to `account` after `needed`, refusing (and auditing the
/// refusal) if `needed` does not fit the window or the lifetime cap.
fn budget_left(
    node: &Node,
    account: &Account,
    researcher: &PublicKey,
    query: &Query,
    needed: Loss,
    now: i64,
) -> Result<Loss, Error> {
    let policy = node.policy();
    let charges = node.ledger.charges(&node.store, account)?;
    let refusal = match ledger::check(&policy.budget, &charges, needed, now) {
        Ok(left) => return Ok(left),
        Err(reason @ ledger::Exhausted::Lifetime { .. }) => Error::LifetimeBudgetExhausted {
            researcher: account.label.clone(),
            reason,
        },
        Err(reason) => Error::BudgetExhausted {
            researcher: account.label.clone(),
            reason,
        },
    };
    audit_refusal(node, researcher, query, &refusal.to_string(), now)?;
    tracing::info!(researcher = %account.label, query = %query.id, code = refusal.code(), "query refused: budget");
    Err(refusal)
}

/// The ledger lock; a poisoned lock only means another query panicked
/// between check and commit, which wrote nothing, so the ledger is intact.
fn lock_ledger(node: &Node) -> LedgerGuard<'_> {
    LedgerGuard {
        node,
        guard: Some(crate::locks::lock(&node.ledger_lock)),
    }
}

/// The ledger lock, held until the end of a query; once it is released,
/// the patient accounts are folded if enough charges wait, so that work
/// never holds up the next query's check and commit.
struct LedgerGuard<'a> {
    node: &'a Node,
    guard: Option<std::sync::MutexGuard<'a, ()>>,
}

impl Drop for LedgerGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        accounts::fold_if_due(self.node);
    }
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
    let account = node.ledger.account(&credential);
    let _guard = lock_ledger(node);
    if let Some(stored) = node
        .ledger
        .stored_answer(&node.store, &account, &query.id)?
    {
        return replay(stored, query, Answer::from_bytes);
    }
    let plan = Release::new(query)?;
    // DP mode's measurements are pure: no delta.
    let loss = Loss::new(plan.epsilon(), 0.0);
    let left = budget_left(node, &account, researcher, query, loss, now)?;
    let mut selected = select_rows(node, query, &use_, loss, now)?;
    let released = plan.release(&mut selected, policy.min_cohort)?;
    let answer = Answer {
        version: ANSWER_VERSION,
        query_id: query.id.clone(),
        query_digest: query.digest(),
        node: node.config.name.clone(),
        released,
        budget_left: left.epsilon,
        answered_at: now,
    };
    let detail = format!(
        "query {} ({} {}, purpose {}, project {}, researcher {}) answered{}, epsilon {:.4}",
        query.id,
        query.aggregate.kind(),
        query.privacy.mode,
        query.purpose,
        credential.credential().project,
        account.label,
        if answer.released.suppressed {
            " (suppressed: small cohort)"
        } else {
            ""
        },
        plan.epsilon()
    );
    commit(
        node,
        &account,
        researcher,
        query,
        (loss, now),
        (answer.to_bytes(), &selected),
        (detail, research_use(query, &credential, &account, loss)),
    )?;
    tracing::info!(researcher = %researcher.short(), query = %query.id, epsilon = plan.epsilon(), suppressed = answer.released.suppressed, "query answered");
    Ok(answer)
}

/// The DP measurement of a query: one value per patient, or an analysis's vector per patient.
enum Release<'q> {
    Values(Plan),
    Vector(dp::VectorPlan, Analysis<'q>),
}

impl<'q> Release<'q> {
    /// Built (and its loss known) before any data is read; a bad analysis is refused here, uncharged.
    fn new(query: &'q Query) -> Result<Release<'q>, Error> {
        match query.aggregate.analysis() {
            Some(analysis) => {
                analysis.validate().map_err(Error::Analysis)?;
                let plan = dp::VectorPlan::new(&analysis, query.privacy.epsilon)?;
                Ok(Release::Vector(plan, analysis))
            }
            None => Ok(Release::Values(Plan::new(query)?)),
        }
    }

    fn epsilon(&self) -> f64 {
        match self {
            Release::Values(plan) => plan.epsilon(),
            Release::Vector(plan, _) => plan.epsilon(),
        }
    }

    /// Runs the measurement; for an analysis, `selected` keeps only the
    /// patients whose vectors were added (those charged).
    fn release(
        &self,
        selected: &mut Selected,
        min_cohort: u64,
    ) -> Result<witmed_protocol::answer::Released, Error> {
        match self {
            Release::Values(plan) => Ok(plan.release(&selected.rows.values, min_cohort)?),
            Release::Vector(plan, analysis) => {
                let vectors = crate::analysis::add_up(
                    &selected.index,
                    analysis,
                    &selected.rows.patients,
                    plan.resolution(),
                )
                .map_err(Error::Analysis)?;
                selected.rows.patients = vectors.patients;
                selected.rows.values.clear();
                Ok(plan.release(&vectors.sum, min_cohort, |values| {
                    crate::analysis::noisy_cohort(analysis, values)
                })?)
            }
        }
    }
}

/// Encrypted mode, round 1 ("prepare"): this node's noisy share of `query`,
/// encrypted under the study key and kept here with a fresh ephemeral key;
/// returns the signed [`Ready`] that carries the ephemeral public key.
///
/// `members` is the number of hospitals in the consortium directory: a
/// roster holds at most one share from each, and the share plan's limbs
/// decode totals of up to `fhe::params::MAX_CONTRIBUTIONS` shares. The
/// charge, the kept share and the ephemeral secret are written in one synced
/// batch; a re-asked query id returns the identical Ready.
pub fn prepare(
    node: &Node,
    query: &Query,
    researcher: &PublicKey,
    credential: &Envelope,
    members: usize,
    now: i64,
) -> Result<Envelope, Error> {
    let (credential, use_) = authorize(node, query, researcher, credential, now)?;
    let study_id = query.privacy.study.as_deref().unwrap_or_default();
    // The id it is stored under is the hash of the key: no need to hash it again.
    let (study, study_key) = study::key_for(node, study_id, researcher)?;
    let account = node.ledger.account(&credential);
    let _guard = lock_ledger(node);
    if let Some(stored) = node
        .ledger
        .stored_answer(&node.store, &account, &query.id)?
    {
        return replay(stored, query, Prepared::from_bytes).map(|p| p.ready);
    }
    if members > fhe::params::MAX_CONTRIBUTIONS {
        return Err(Error::Dp(dp::Error::Unsupported(format!(
            "the directory lists {members} members, more than the {} shares an encrypted total decodes exactly",
            fhe::params::MAX_CONTRIBUTIONS
        ))));
    }
    let plan = Share::new(query)?;
    let loss = Loss::new(plan.epsilon, plan.delta);
    let left = budget_left(node, &account, researcher, query, loss, now)?;
    let mut selected = select_rows(node, query, &use_, loss, now)?;
    // Limb-encoded slots; the plan made sure every total of them decodes.
    let share = plan.share(&mut selected, crate::encrypted::noise_enabled())?;
    let ciphertext = study_key.encrypt(&share)?;
    let contribution = Contribution {
        version: ENCRYPTED_VERSION,
        study,
        ciphertext: ciphertext.to_bytes(),
        values: share.len() as u32,
        share_scale: plan.share_scale,
        epsilon_spent: plan.epsilon,
        delta_spent: plan.delta,
        budget_left: left.epsilon,
        answered_at: now,
    };
    let ephemeral = Ephemeral::generate()?;
    let ready = Ready {
        version: SECAGG_VERSION,
        query_digest: query.digest(),
        researcher: *researcher,
        member: node.config.name.clone(),
        ephemeral: ephemeral.public(),
    }
    .sign(node.key());
    let prepared = Prepared {
        version: PREPARED_VERSION,
        contribution,
        ephemeral_secret: *ephemeral.secret_bytes(),
        ready: ready.clone(),
    };
    let detail = format!(
        "query {} ({} encrypted, purpose {}, project {}, researcher {}) prepared an encrypted share for aggregator {}: epsilon {:.4}, delta {:e} for the total of at least {} shares; share scale {:.3}, rho {:.4} for this share alone",
        query.id,
        query.aggregate.kind(),
        query.purpose,
        credential.credential().project,
        account.label,
        query.privacy.aggregator.as_deref().unwrap_or_default(),
        plan.epsilon,
        plan.delta,
        query.privacy.min_hospitals.unwrap_or(1),
        plan.share_scale,
        plan.local_rho,
    );
    commit(
        node,
        &account,
        researcher,
        query,
        (loss, now),
        (prepared.to_bytes(), &selected),
        (detail, research_use(query, &credential, &account, loss)),
    )?;
    tracing::info!(researcher = %researcher.short(), query = %query.id, epsilon = plan.epsilon, "encrypted share prepared");
    Ok(ready)
}

/// An encrypted-mode share's plan: [`SharePlan`] for one value per patient,
/// [`VectorPlan`] for an analysis's vector per patient (issue 16), with the
/// accounting both give.
struct Share<'q> {
    kind: ShareKind<'q>,
    share_scale: f64,
    epsilon: f64,
    delta: f64,
    local_rho: f64,
}

enum ShareKind<'q> {
    Values(SharePlan),
    Vector(VectorPlan, Analysis<'q>),
}

impl<'q> Share<'q> {
    /// Built (and its loss known) before any data is read; a bad analysis is refused here, uncharged.
    fn new(query: &'q Query) -> Result<Share<'q>, Error> {
        let Some(analysis) = query.aggregate.analysis() else {
            let plan = SharePlan::new(query)?;
            return Ok(Share {
                share_scale: plan.share_scale,
                epsilon: plan.epsilon,
                delta: plan.delta,
                local_rho: plan.local_rho,
                kind: ShareKind::Values(plan),
            });
        };
        analysis.validate().map_err(Error::Analysis)?;
        let contributors = query.privacy.min_hospitals.unwrap_or(1) as usize;
        let budget = (query.privacy.epsilon, query.privacy.delta_or_default());
        let plan = VectorPlan::new(Encoding::of(&analysis), budget, contributors)?;
        Ok(Share {
            share_scale: plan.share_scale,
            epsilon: plan.epsilon,
            delta: plan.delta,
            local_rho: plan.local_rho,
            kind: ShareKind::Vector(plan, analysis),
        })
    }

    /// The slots to encrypt; for an analysis, `selected` keeps only the
    /// patients whose vectors were added (those charged).
    fn share(&self, selected: &mut Selected, noise: bool) -> Result<Vec<i64>, Error> {
        match &self.kind {
            ShareKind::Values(plan) => Ok(plan.share(&selected.rows.values, noise)?),
            ShareKind::Vector(plan, analysis) => {
                let (patients, rows) = crate::encrypted::shares::vector::rows_of(
                    &selected.index,
                    analysis,
                    &selected.rows.patients,
                    &plan.encoding,
                )
                .map_err(Error::Analysis)?;
                selected.rows.patients = patients;
                selected.rows.values.clear();
                Ok(plan.share(&rows, noise)?)
            }
        }
    }
}

/// Version of [`Prepared`].
pub const PREPARED_VERSION: u32 = 1;

/// What a member keeps of an encrypted query between the two rounds (as the
/// query's stored answer, sealed at rest). Public for its golden fixture.
#[derive(Serialize, Deserialize)]
pub struct Prepared {
    pub version: u32,
    /// The encrypted, unmasked share: never sent.
    pub contribution: Contribution,
    /// The ephemeral X25519 secret of this query's masks.
    pub ephemeral_secret: [u8; 32],
    /// The signed Ready sent in round 1 (a re-asked id gets it again).
    pub ready: Envelope,
}

witmed_crypto::single_version!(Prepared, "prepared share", PREPARED_VERSION);

impl Prepared {
    fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("prepared shares serialize")
    }

    fn from_bytes(bytes: &[u8]) -> Result<Prepared, String> {
        witmed_crypto::versioned::decode(bytes).map_err(|e| {
            format!("{e}: this id holds no encrypted share (was it asked in another mode?)")
        })
    }
}

/// What a member keeps once it sealed: the roster it sealed for and what it sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSeal {
    pub version: u32,
    pub query_digest: [u8; 32],
    pub roster_hash: [u8; 32],
    /// [`SealedShare`] bytes.
    pub share: Vec<u8>,
    pub at: i64,
}

witmed_crypto::single_version!(StoredSeal, "stored seal", RECORD_VERSION);

fn seal_key(node: &Node, researcher: &PublicKey, query_id: &str) -> Vec<u8> {
    node.ledger
        .meta_key("sealed", researcher, query_id.as_bytes())
}

/// What `researcher`'s query `query_id` was sealed as at this node, if it was.
pub fn stored_seal(
    node: &Node,
    researcher: &PublicKey,
    query_id: &str,
) -> Result<Option<StoredSeal>, Error> {
    Ok(node
        .store
        .get(cf::META, &seal_key(node, researcher, query_id))?)
}

/// Encrypted mode, round 2 ("seal"): adds this member's pairwise masks for
/// exactly the verified `roster` (sorted entries and their hash) to its
/// prepared ciphertext, signs a receipt, and keeps both.
///
/// One seal per (researcher, query id): the same roster gets the identical
/// sealed share back, any other roster is refused. So a total over one set
/// of members can never be followed by a total over another.
pub fn seal(
    node: &Node,
    query: &Query,
    researcher: &PublicKey,
    credential: &Envelope,
    roster: &[RosterEntry],
    roster_hash: [u8; 32],
    now: i64,
) -> Result<SealedShare, Error> {
    // The prepared share is kept under the certified researcher's account.
    let (credential, _) = authorize(node, query, researcher, credential, now)?;
    let account = node.ledger.account(&credential);
    let _guard = lock_ledger(node);
    let stored = node
        .ledger
        .stored_answer(&node.store, &account, &query.id)?
        .ok_or_else(|| Error::NotPrepared(query.id.clone()))?;
    let prepared = replay(stored, query, Prepared::from_bytes)?;
    if let Some(sealed) = stored_seal(node, researcher, &query.id)? {
        if sealed.roster_hash != roster_hash {
            return Err(Error::RosterChanged(query.id.clone()));
        }
        return SealedShare::from_bytes(&sealed.share).map_err(Error::StoredAnswer);
    }
    let me = node.config.name.as_str();
    let ephemeral = Ephemeral::from_secret(prepared.ephemeral_secret);
    if !roster
        .iter()
        .any(|e| e.member == me && e.ephemeral == ephemeral.public())
    {
        return Err(Error::NotInRoster(me.to_string()));
    }
    let c = &prepared.contribution;
    let values = c.values as usize;
    let pairs: Vec<(String, [u8; 32])> = roster
        .iter()
        .map(|e| (e.member.clone(), e.ephemeral))
        .collect();
    let masks = ephemeral.mask(me, &pairs, &roster_hash, values)?;
    let mut ciphertext = fhe::Ciphertext::from_bytes(&c.ciphertext, values)?;
    ciphertext.add_masks(&masks)?;
    let ciphertext = ciphertext.to_bytes();
    let receipt = Receipt {
        version: SECAGG_VERSION,
        query_digest: query.digest(),
        researcher: *researcher,
        member: me.to_string(),
        study: c.study,
        roster_hash,
        ciphertext_hash: witmed_crypto::sha256(&ciphertext),
        values: c.values,
        share_scale: c.share_scale,
        epsilon_spent: c.epsilon_spent,
        delta_spent: c.delta_spent,
        budget_left: c.budget_left,
    }
    .sign(node.key());
    let share = SealedShare {
        member: me.to_string(),
        ciphertext,
        receipt,
    };
    let kept = StoredSeal {
        version: RECORD_VERSION,
        query_digest: query.digest(),
        roster_hash,
        share: share.to_bytes(),
        at: now,
    };
    let names: Vec<&str> = roster.iter().map(|e| e.member.as_str()).collect();
    let detail = format!(
        "query {} sealed for a roster of {} ({}), roster hash {}",
        query.id,
        names.len(),
        names.join(", "),
        hex::encode(roster_hash)
    );
    let mut batch = node.store.batch();
    batch.put(cf::META, &seal_key(node, researcher, &query.id), &kept)?;
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "query.sealed", researcher.to_hex(), detail),
    )?;
    node.store.write_durable(batch)?;
    tracing::info!(researcher = %researcher.short(), query = %query.id, roster = names.len(), "encrypted share sealed");
    Ok(share)
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

/// The patients a query computes over and their values.
pub struct Selected {
    /// The index the positions in `rows` refer to.
    pub index: std::sync::Arc<Index>,
    pub rows: Rows,
}

/// One value per eligible patient in the cohort, with the patient it came
/// from, leaving out every patient whose personal cap `loss` would pass.
pub fn select_rows(
    node: &Node,
    query: &Query,
    use_: &Use,
    loss: Loss,
    now: i64,
) -> Result<Selected, Error> {
    let index = node.index()?;
    let eligible = node.eligibility(&index, use_, now);
    let capped = accounts::over_cap(node, &index, loss.epsilon)?;
    let rows = if capped.is_empty() {
        index.rows_for(query, |i| eligible[i])
    } else {
        index.rows_for(query, |i| eligible[i] && !capped.contains(&i))
    };
    Ok(Selected { index, rows })
}

/// The per-patient values of `query` over patients for whom `eligible(i)` holds.
pub fn values_for(index: &Index, query: &Query, eligible: impl Fn(usize) -> bool) -> Vec<f64> {
    index.values_for(query, eligible)
}

/// What the answer's audit entry records of this use, for the patients it
/// includes (its charge number is set by [`commit`]).
fn research_use(
    query: &Query,
    credential: &VerifiedCredential,
    account: &Account,
    loss: Loss,
) -> audit::ResearchUse {
    let credential = credential.credential();
    audit::ResearchUse {
        charge: 0,
        query_id: query.id.clone(),
        researcher: account.digest(),
        researcher_name: credential.name.clone(),
        institution: credential.institution.clone(),
        project: credential.project.clone(),
        purpose: query.purpose.clone(),
        aggregate: query.aggregate.kind().to_string(),
        mode: query.privacy.mode.to_string(),
        epsilon: loss.epsilon,
        delta: loss.delta,
    }
}

/// Writes the charge, the included patients' accounts, the stored answer,
/// the ledger head and the audit entry in one synced batch. The entry names
/// the patients' charge by its journal number, so each included patient's
/// view of the log shows it.
fn commit(
    node: &Node,
    account: &Account,
    researcher: &PublicKey,
    query: &Query,
    (loss, now): (Loss, i64),
    (answer, selected): (Vec<u8>, &Selected),
    (detail, mut research): (String, audit::ResearchUse),
) -> Result<(), Error> {
    let charge = NewCharge {
        query_id: &query.id,
        loss,
        at: now,
    };
    let mut batch = node.store.batch();
    let stored = StoredAnswer {
        version: RECORD_VERSION,
        query_digest: query.digest(),
        answer,
    };
    node.ledger
        .record(&node.store, &mut batch, account, charge, &stored)?;
    let pending = accounts::charge(
        node,
        &mut batch,
        &selected.index,
        &selected.rows.patients,
        &accounts::charge_of(node, account, loss, now),
    )?;
    research.charge = pending.seq();
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(charge.at, "query.answered", researcher.to_hex(), detail)
            .recording(research),
    )?;
    node.store.write_durable(batch)?;
    pending.apply(node);
    Ok(())
}

fn record_refusal(
    node: &Node,
    researcher: &PublicKey,
    query: &Query,
    reasons: &[Refusal],
    now: i64,
) -> Result<(), Error> {
    audit_refusal(node, researcher, query, &join(reasons), now)?;
    tracing::info!(researcher = %researcher.short(), query = %query.id, reasons = %join(reasons), "query refused");
    Ok(())
}

/// Writes a `query.refused` audit entry giving `reason`.
fn audit_refusal(
    node: &Node,
    researcher: &PublicKey,
    query: &Query,
    reason: &str,
    now: i64,
) -> Result<(), Error> {
    let mut batch = node.store.batch();
    let detail = format!("query {} refused: {reason}", query.id);
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "query.refused", researcher.to_hex(), detail),
    )?;
    node.store.write_durable(batch)?;
    Ok(())
}
