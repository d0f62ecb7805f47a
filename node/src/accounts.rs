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
//! charge is lost or counted twice. Applied cap request ids are kept
//! (consents family, `k/` and the id) so each applies once. The accounts are
//! read into memory on first use; the copy changes only after the batch that
//! changes the store is written.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use witmed_crypto::Pseudonym;
use witmed_policies::cap::{self, CapRequest};

use crate::audit;
use crate::consents::put_signed;
use crate::index::Index;
use crate::ledger::{self, Loss};
use crate::node::Node;
use crate::store::{self, cf, Batch, RECORD_VERSION};

const ACCOUNT_PREFIX: &[u8] = b"p1/";
const JOURNAL_PREFIX: &[u8] = b"j1/";
/// Charges kept in the journal before they are folded into the accounts.
pub const FOLD_EVERY: u64 = 64;
const CAP_REQUEST_PREFIX: &[u8] = b"k/";
/// Relative slack when comparing a sum of losses to a cap (as the ledger does).
const ROUNDING: f64 = 1e-9;
/// Most windows kept per account (the oldest go first); totals keep everything.
pub const MAX_WINDOWS: usize = 120;

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

/// A patient's privacy account at this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub version: u32,
    /// Sum of the epsilons of every answer that included the patient.
    pub total_epsilon: f64,
    /// Sum of their deltas.
    pub total_delta: f64,
    /// How many answers included the patient.
    pub answers: u64,
    /// Per fixed window of the node policy's budget window length, oldest first.
    pub per_window: Vec<WindowTotal>,
    /// Per researcher account (the ledger's keyed digest), in first-charged order.
    pub per_researcher: Vec<ResearcherTotal>,
    /// The patient's cap, if they set one.
    pub cap: Option<Cap>,
    /// The journal number of the last [`CohortCharge`] this record includes.
    pub folded_through: u64,
}

/// What the answers of one window cost a patient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowTotal {
    /// First second of the window: a multiple of `seconds` (unix time).
    pub start: i64,
    /// The window's length.
    pub seconds: i64,
    pub epsilon: f64,
    pub delta: f64,
    pub answers: u64,
}

/// What one researcher's answers cost a patient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResearcherTotal {
    /// The ledger's keyed digest of (issuer, researcher id); see [`researcher_digest`].
    pub researcher: [u8; 16],
    pub epsilon: f64,
    pub delta: f64,
    pub answers: u64,
}

/// A patient's cap, as set by their signed request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cap {
    /// Total epsilon the patient's data may cost; a query that would pass it leaves them out.
    pub epsilon: f64,
    /// The id of the request that set it.
    pub request: String,
    /// When it was applied (node clock, unix seconds).
    pub set_at: i64,
}

/// One answer's charge to the accounts of the patients it included, kept in
/// the journal (written in the answer's commit batch) until it is folded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortCharge {
    pub version: u32,
    /// Journal number, from 1 (also in the key).
    pub seq: u64,
    /// The ledger's keyed digest of the researcher account charged.
    pub researcher: [u8; 16],
    pub epsilon: f64,
    pub delta: f64,
    /// When the answer was made (unix seconds).
    pub at: i64,
    /// The node policy's budget window length then.
    pub window_seconds: i64,
    /// The patients whose data the answer was computed from.
    pub patients: Vec<Pseudonym>,
}

witmed_crypto::single_version!(Account, "patient privacy account", RECORD_VERSION);
witmed_crypto::single_version!(CohortCharge, "patient cohort charge", RECORD_VERSION);

impl Default for Account {
    fn default() -> Account {
        Account {
            version: RECORD_VERSION,
            total_epsilon: 0.0,
            total_delta: 0.0,
            answers: 0,
            per_window: Vec::new(),
            per_researcher: Vec::new(),
            cap: None,
            folded_through: 0,
        }
    }
}

impl Account {
    /// Whether a further `epsilon` would take the total past the patient's cap.
    pub fn would_pass_cap(&self, epsilon: f64) -> bool {
        self.cap
            .as_ref()
            .is_some_and(|cap| self.total_epsilon + epsilon > cap.epsilon + cap.epsilon * ROUNDING)
    }

    /// Adds a journal charge and records that the account includes it.
    fn add_charge(&mut self, charge: &CohortCharge) {
        let loss = Loss::new(charge.epsilon, charge.delta);
        self.add(charge.researcher, loss, charge.at, charge.window_seconds);
        self.folded_through = charge.seq;
    }

    /// Adds one answer's `loss`, made for `researcher` at `at` under windows of `seconds`.
    fn add(&mut self, researcher: [u8; 16], loss: Loss, at: i64, seconds: i64) {
        self.total_epsilon += loss.epsilon;
        self.total_delta += loss.delta;
        self.answers = self.answers.saturating_add(1);
        let start = window_start(at, seconds);
        match self
            .per_window
            .iter_mut()
            .find(|w| w.start == start && w.seconds == seconds)
        {
            Some(w) => w.add(loss),
            None => {
                self.per_window.push(WindowTotal {
                    start,
                    seconds,
                    epsilon: loss.epsilon,
                    delta: loss.delta,
                    answers: 1,
                });
                if self.per_window.len() > MAX_WINDOWS {
                    self.per_window.remove(0);
                }
            }
        }
        match self
            .per_researcher
            .iter_mut()
            .find(|r| r.researcher == researcher)
        {
            Some(r) => {
                r.epsilon += loss.epsilon;
                r.delta += loss.delta;
                r.answers = r.answers.saturating_add(1);
            }
            None => self.per_researcher.push(ResearcherTotal {
                researcher,
                epsilon: loss.epsilon,
                delta: loss.delta,
                answers: 1,
            }),
        }
    }
}

impl WindowTotal {
    fn add(&mut self, loss: Loss) {
        self.epsilon += loss.epsilon;
        self.delta += loss.delta;
        self.answers = self.answers.saturating_add(1);
    }
}

/// The first second of the fixed window of length `seconds` holding `at`.
pub fn window_start(at: i64, seconds: i64) -> i64 {
    if seconds <= 0 {
        return 0;
    }
    at.saturating_sub(at.rem_euclid(seconds))
}

/// The accounts of a node's patients, read from the store on first use.
#[derive(Debug, Default)]
pub struct Accounts {
    loaded: Mutex<Option<Memory>>,
}

/// The in-memory accounts and the journal's state.
///
/// Applying a charge to 50,000 accounts in memory costs more than the rest
/// of a query, so only capped patients (whose totals a query must check)
/// are charged in memory at once; the other charges wait in `pending` and
/// are applied when the journal is folded. [`of`] adds them up for one patient.
#[derive(Debug, Default)]
struct Memory {
    all: HashMap<Pseudonym, Account>,
    /// Patients with a cap (few): the only ones a query must check.
    capped: HashSet<Pseudonym>,
    /// Patients whose account changed since the last fold.
    dirty: HashSet<Pseudonym>,
    /// Journal charges not yet applied to every account they name, oldest first.
    pending: Vec<CohortCharge>,
    /// Number of the last journal charge written.
    last: u64,
    /// Journal charges not folded yet.
    unfolded: u64,
}

impl Memory {
    /// Takes a journal charge: applied at once to capped patients, to the others at the next fold.
    fn apply(&mut self, charge: CohortCharge) {
        if !self.capped.is_empty() {
            for p in &charge.patients {
                if self.capped.contains(p) {
                    self.apply_one(*p, &charge);
                }
            }
        }
        self.last = self.last.max(charge.seq);
        self.unfolded = self.unfolded.saturating_add(1);
        self.pending.push(charge);
    }

    /// Adds `charge` to `p`'s account unless it already includes it
    /// (charges are applied to an account in journal order).
    fn apply_one(&mut self, p: Pseudonym, charge: &CohortCharge) {
        let account = self.all.entry(p).or_default();
        if account.folded_through >= charge.seq {
            return;
        }
        account.add_charge(charge);
        self.dirty.insert(p);
    }

    /// Applies every pending charge to every account it names.
    fn materialize(&mut self) {
        for charge in std::mem::take(&mut self.pending) {
            for p in &charge.patients {
                self.apply_one(*p, &charge);
            }
        }
    }

    /// `p`'s account with the pending charges that name them, without changing anything.
    fn current(&self, p: &Pseudonym) -> Account {
        let mut account = self.all.get(p).cloned().unwrap_or_default();
        for charge in &self.pending {
            if charge.seq > account.folded_through && charge.patients.contains(p) {
                account.add_charge(charge);
            }
        }
        account
    }

    fn put(&mut self, p: Pseudonym, account: Account) {
        if account.cap.is_some() {
            self.capped.insert(p);
        } else {
            self.capped.remove(&p);
        }
        self.all.insert(p, account);
    }
}

type Loaded<'a> = std::sync::MutexGuard<'a, Option<Memory>>;

/// The in-memory accounts, loading them (accounts, then the journal) first if needed.
fn loaded<'a>(node: &'a Node) -> Result<Loaded<'a>, Error> {
    let mut guard = crate::locks::lock(&node.patient_accounts.loaded);
    if guard.is_none() {
        let mut memory = Memory::default();
        node.store
            .scan_records(cf::BUDGET, ACCOUNT_PREFIX, |key, account: Account| {
                if let Some(p) = pseudonym_of(key) {
                    memory.last = memory.last.max(account.folded_through);
                    memory.put(p, account);
                }
                Ok(())
            })?;
        node.store
            .scan_records(cf::BUDGET, JOURNAL_PREFIX, |_, charge: CohortCharge| {
                memory.apply(charge);
                Ok(())
            })?;
        *guard = Some(memory);
    }
    Ok(guard)
}

fn journal_key(seq: u64) -> Vec<u8> {
    let mut key = JOURNAL_PREFIX.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn account_key(p: &Pseudonym) -> Vec<u8> {
    let mut key = ACCOUNT_PREFIX.to_vec();
    key.extend_from_slice(&p.0);
    key
}

fn pseudonym_of(key: &[u8]) -> Option<Pseudonym> {
    key.strip_prefix(ACCOUNT_PREFIX)?
        .try_into()
        .ok()
        .map(Pseudonym)
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
    /// Applies the charge in memory (its batch is on disk), then folds the
    /// journal into the accounts if it grew long. A failed fold leaves the
    /// journal, which still counts, and is tried again after the next charge.
    pub(crate) fn apply(self, node: &Node) {
        let mut guard = crate::locks::lock(&node.patient_accounts.loaded);
        // Not loaded means a later use reads it from the store, which already has it.
        let Some(memory) = guard.as_mut() else {
            return;
        };
        memory.apply(self.0);
        if memory.unfolded >= FOLD_EVERY {
            if let Err(e) = fold(node, memory) {
                tracing::warn!("patient accounts not folded (the journal still counts; retried after the next answer): {e}");
            }
        }
    }
}

/// Writes every account changed since the last fold and deletes the journal
/// charges they now include, in one synced batch.
fn fold(node: &Node, memory: &mut Memory) -> Result<(), Error> {
    memory.materialize();
    let mut batch = node.store.batch();
    for p in &memory.dirty {
        if let Some(account) = memory.all.get_mut(p) {
            account.folded_through = memory.last;
            batch.put(cf::BUDGET, &account_key(p), &*account)?;
        }
    }
    batch.delete_range(
        cf::BUDGET,
        &journal_key(0),
        &journal_key(memory.last.saturating_add(1)),
    );
    node.store.write_durable(batch)?;
    memory.dirty.clear();
    memory.unfolded = 0;
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
    // Serialized with charges, so a query never sees half a cap change.
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
        &audit::Entry::new(now, "patient.cap", envelope.signer.to_hex(), detail),
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
