//! Per-patient privacy accounts: the epsilon (and delta) of every released answer whose computation included the patient, and the patient's own cap.
//!
//! **What is charged.** When the engine commits an answer (DP mode) or an
//! encrypted share (encrypted mode), every patient whose value went into
//! the computation (in the cohort, eligible by consent, under their cap,
//! and with a value for the feature) has the answer's loss added to their
//! account, in the same synced batch as the researcher's charge, the stored
//! answer and the audit entry: nothing is released without the accounts
//! charged. A replayed query id returns its stored answer before any charge,
//! so it charges nobody twice. A refused query (policy, budget) computes
//! nothing and charges nobody; a suppressed answer (cohort below the
//! minimum) charges its patients, because the fact of suppression was
//! computed from their rows and released.
//!
//! **Personal cap.** A patient may set a cap with a [`CapRequest`] signed by
//! their enrolled key. A patient whose total plus this query's epsilon
//! would exceed their cap is left out of the cohort before the query is
//! computed, like a patient without consent. The decision depends only on
//! the patient's own account and cap, so it changes only that patient's row.
//!
//! **Storage.** One sealed, versioned [`Account`] per patient in the budget
//! family under `p1/` and the pseudonym (itself a keyed digest); researchers
//! are named by the ledger's keyed account digest, never in clear. Writing
//! tens of thousands of accounts with every answer would make a query over
//! 100,000 patients many times slower, so an answer's commit batch holds one
//! sealed [`CohortCharge`] (its loss and the pseudonyms it included) under
//! `j1/` and a journal sequence number instead. Every [`FOLD_EVERY`] charges
//! the accounts they changed are written with the number of the last charge
//! they include (`folded_through`) and the folded charges deleted, in one
//! synced batch; a crash before it leaves the journal, which is replayed at
//! the next load (only charges after an account's `folded_through`), so no
//! charge is lost or counted twice. The fold also records the number it
//! folded through, so journal numbers are never given twice.
//!
//! **Uses.** Each account keeps the journal numbers of the newest
//! [`MAX_USES`] charges that included the patient (added by the same fold
//! and replay, so no more and no fewer), and each answer's audit entry names
//! its charge's number ([`crate::audit::ResearchUse`]): the patient's view of
//! the log shows those entries in full. Applied cap request ids are kept
//! (consents family, `k/` and the id) so each applies once. The accounts are
//! read into memory on first use; the copy changes only after the batch that
//! changes the store is written.

use std::collections::HashSet;

use witmed_crypto::Pseudonym;
use witmed_policies::cap::{self, CapRequest};

use crate::audit;
use crate::consents::put_signed;
use crate::index::Index;
use crate::ledger::{self, Loss};
use crate::node::Node;
use crate::store::{self, cf, Batch, RECORD_VERSION};

use crate::account_book::{account_key, journal_key, mark_folded_through, Memory};
pub use crate::account_book::{
    window_start, Account, AccountV1, Cap, CohortCharge, ResearcherTotal, WindowTotal,
    ACCOUNT_VERSION, FOLD_EVERY, MAX_USES, MAX_WINDOWS,
};

const CAP_REQUEST_PREFIX: &[u8] = b"k/";

/// Errors of patient accounts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Policy(#[from] witmed_policies::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("patient {0} has no record at this node; check the pseudonym")]
    UnknownPatient(Pseudonym),
    #[error("privacy cap request {0} was already applied at this node; to change the cap again the patient signs a new request")]
    DuplicateRequest(String),
}

impl Error {
    /// Stable code for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Policy(e) => e.error_code(),
            Error::Store(_) => "store_failed",
            Error::UnknownPatient(_) => "unknown_patient",
            Error::DuplicateRequest(_) => "duplicate_cap_request",
        }
    }
}

type Loaded<'a> = std::sync::MutexGuard<'a, Option<Memory>>;

/// The in-memory accounts, loading them (accounts, then the journal) first if needed.
fn loaded<'a>(node: &'a Node) -> Result<Loaded<'a>, Error> {
    Ok(node.patient_accounts.loaded(&node.store)?)
}

fn cap_request_key(id: &str) -> Vec<u8> {
    let mut key = CAP_REQUEST_PREFIX.to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

/// Patient `p`'s account: zero, without a cap, if nothing was ever charged.
pub fn of(node: &Node, p: &Pseudonym) -> Result<Account, Error> {
    if !node.store.contains(cf::PATIENTS, &p.0)? {
        return Err(Error::UnknownPatient(*p));
    }
    Ok(loaded(node)?
        .as_ref()
        .map(|memory| memory.current(p))
        .unwrap_or_default())
}

/// The digest under which [`Account::per_researcher`] names the researcher
/// `researcher_id` certified by `issuer` (for showing a patient who is who).
pub fn researcher_digest(
    node: &Node,
    issuer: &witmed_crypto::PublicKey,
    researcher_id: &str,
) -> [u8; 16] {
    node.ledger.account_of(issuer, researcher_id).digest()
}

/// Positions in `index` of the patients whose cap a further `epsilon` would pass.
pub(crate) fn over_cap(node: &Node, index: &Index, epsilon: f64) -> Result<HashSet<usize>, Error> {
    let guard = loaded(node)?;
    let Some(memory) = guard.as_ref() else {
        return Ok(HashSet::new());
    };
    Ok(memory
        .capped
        .iter()
        .filter(|p| memory.all.get(p).is_some_and(|a| a.would_pass_cap(epsilon)))
        .filter_map(|p| index.position(p))
        .collect())
}

/// A charge written to the journal, to be applied in memory once its batch is written.
#[must_use = "apply the charge after its batch is written"]
pub(crate) struct Pending(CohortCharge);

/// What one answer charges: its researcher, loss and time, and the window length in force.
pub(crate) struct Charge {
    pub researcher: [u8; 16],
    pub loss: Loss,
    pub at: i64,
    pub window_seconds: i64,
}

/// Adds `charge` for every patient at `patients` (positions in `index`) to
/// `batch`, as one journal record. The caller holds the ledger lock until
/// the batch is written, then calls [`Pending::apply`].
pub(crate) fn charge(
    node: &Node,
    batch: &mut Batch<'_>,
    index: &Index,
    patients: &[usize],
    charge: &Charge,
) -> Result<Pending, Error> {
    let last = loaded(node)?.as_ref().map_or(0, |m| m.last);
    let seq = last.checked_add(1).ok_or_else(|| {
        Error::Store(store::Error::Corrupt {
            family: cf::BUDGET,
            reason: "the patient charge journal cannot grow further".into(),
        })
    })?;
    let record = CohortCharge {
        version: RECORD_VERSION,
        seq,
        researcher: charge.researcher,
        epsilon: charge.loss.epsilon,
        delta: charge.loss.delta,
        at: charge.at,
        window_seconds: charge.window_seconds,
        patients: patients
            .iter()
            .filter_map(|&i| index.pseudonyms.get(i).copied())
            .collect(),
    };
    batch.put(cf::BUDGET, &journal_key(seq), &record)?;
    Ok(Pending(record))
}

impl Pending {
    /// The charge's journal number, which the answer's audit entry names.
    pub(crate) fn seq(&self) -> u64 {
        self.0.seq
    }

    /// Applies the charge in memory (its batch is on disk): at once to
    /// capped patients, whose next query depends on it; the rest wait for
    /// [`fold_if_due`], which the engine calls after the ledger lock is released.
    pub(crate) fn apply(self, node: &Node) {
        let mut guard = crate::locks::lock(&node.patient_accounts.loaded);
        // Not loaded means a later use reads it from the store, which already has it.
        if let Some(memory) = guard.as_mut() {
            memory.apply(self.0);
        }
    }
}

/// Folds the journal into the accounts once [`FOLD_EVERY`] charges wait:
/// writes every account they changed and deletes the charges they now
/// include, in one synced batch. A failed fold leaves the journal, which
/// still counts, and is tried again after the next answer.
///
/// Called without the ledger lock. The accounts' lock is held only to take
/// a snapshot and to install the result; applying the charges and writing
/// happen outside it, so queries go on while a fold runs. One fold at a
/// time: a caller that finds one running returns at once.
pub(crate) fn fold_if_due(node: &Node) {
    let _folding = match node.patient_accounts.folding.try_lock() {
        Ok(guard) => guard,
        // A panicking fold wrote nothing it had not finished: the journal still counts.
        Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    let plan = match crate::locks::lock(&node.patient_accounts.loaded).as_ref() {
        Some(memory) => memory.fold_snapshot(),
        None => None,
    };
    let Some(plan) = plan else {
        return;
    };
    let through = plan.through();
    let folded = plan.compute();
    let writes = match crate::locks::lock(&node.patient_accounts.loaded).as_mut() {
        Some(memory) => memory.fold_install(folded),
        None => return,
    };
    if let Err(e) = write_fold(node, &writes, through) {
        tracing::warn!("patient accounts not folded (the journal still counts; retried after the next answer): {e}");
        if let Some(memory) = crate::locks::lock(&node.patient_accounts.loaded).as_mut() {
            memory.dirty.extend(writes.iter().map(|(p, _)| *p));
        }
    }
}

fn write_fold(node: &Node, writes: &[(Pseudonym, Account)], through: u64) -> Result<(), Error> {
    let mut batch = node.store.batch();
    for (p, account) in writes {
        batch.put(cf::BUDGET, &account_key(p), account)?;
    }
    batch.delete_range(
        cf::BUDGET,
        &journal_key(0),
        &journal_key(through.saturating_add(1)),
    );
    mark_folded_through(&mut batch, through);
    node.store.write_durable(batch)?;
    Ok(())
}

/// What a cap request did.
#[derive(Debug, Clone, PartialEq)]
pub struct CapSet {
    pub patient: Pseudonym,
    /// The cap now in force; `None` if the request removed it.
    pub epsilon: Option<f64>,
    /// The patient's total so far.
    pub total_epsilon: f64,
}

/// Verifies and applies a patient's signed cap request (text form) at `now`.
///
/// Refused unless signed by the key enrolled for the patient, made for this
/// node, within a day of this node's clock, and never applied before. The
/// cap holds from the next query on.
pub fn set_cap(node: &Node, text: &str, now: i64) -> Result<CapSet, Error> {
    let envelope = witmed_policies::parse_signed(text)?;
    let verified = {
        let registry = node.consent_registry();
        let lookup = |q: &Pseudonym| registry.enrolled_key(q);
        cap::verify_cap_request(&envelope, &node.id(), &lookup, now)?
    };
    let request: &CapRequest = &verified;
    let p = request.patient;
    if !node.store.contains(cf::PATIENTS, &p.0)? {
        return Err(Error::UnknownPatient(p));
    }
    // Not while a fold writes accounts (it could write this one over), and
    // serialized with charges, so a query never sees half a cap change.
    let _folding = crate::locks::lock(&node.patient_accounts.folding);
    let _ledger = crate::locks::lock(&node.ledger_lock);
    let record_key = cap_request_key(&request.id);
    if node.store.contains(cf::CONSENTS, &record_key)? {
        return Err(Error::DuplicateRequest(request.id.clone()));
    }
    let mut account = of(node, &p)?;
    // The record written includes every journal charge so far.
    account.folded_through = loaded(node)?.as_ref().map_or(0, |m| m.last);
    account.cap = request.epsilon.map(|epsilon| Cap {
        epsilon,
        request: request.id.clone(),
        set_at: now,
    });
    let mut batch = node.store.batch();
    batch.put(cf::BUDGET, &account_key(&p), &account)?;
    put_signed(&mut batch, &record_key, text, false)?;
    let detail = match request.epsilon {
        Some(epsilon) => format!(
            "patient {p} set a privacy cap of epsilon {epsilon} (request {}; total so far {:.4})",
            request.id, account.total_epsilon
        ),
        None => format!(
            "patient {p} removed their privacy cap (request {})",
            request.id
        ),
    };
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "patient.cap", envelope.signer.to_hex(), detail).about(p),
    )?;
    node.store.write_durable(batch)?;
    let set = CapSet {
        patient: p,
        epsilon: request.epsilon,
        total_epsilon: account.total_epsilon,
    };
    if let Some(memory) = loaded(node)?.as_mut() {
        memory.put(p, account);
        memory.dirty.remove(&p);
    }
    tracing::info!(patient = %p, cap = ?set.epsilon, "patient privacy cap set");
    Ok(set)
}

/// The loss a ledger charge and the patient accounts share, for one answer.
pub(crate) fn charge_of(node: &Node, researcher: &ledger::Account, loss: Loss, at: i64) -> Charge {
    Charge {
        researcher: researcher.digest(),
        loss,
        at,
        window_seconds: node.policy().budget.window_seconds,
    }
}
