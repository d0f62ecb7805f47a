//! The patient accounts' stored types and the node's in-memory book of them; no node access (see `accounts` for the operations).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use witmed_crypto::versioned::{self, Evolving, Layout};
use witmed_crypto::Pseudonym;

use crate::ledger::Loss;
use crate::store::{self, cf, Store, RECORD_VERSION};

const ACCOUNT_PREFIX: &[u8] = b"p1/";
const JOURNAL_PREFIX: &[u8] = b"j1/";
/// Meta key of the number of the last journal charge folded: the journal's
/// records are deleted by the fold, and numbers must never be given twice
/// (audit entries name them), even when no account took the last charges.
const JOURNAL_THROUGH_KEY: &[u8] = b"patient_journal_through";
/// Charges kept in the journal before they are folded into the accounts.
pub const FOLD_EVERY: u64 = 64;
/// Version of a patient account written today (2: with its recent uses).
pub const ACCOUNT_VERSION: u32 = 2;
/// Most uses (journal charge numbers) an account keeps; the oldest go first.
/// The totals keep everything.
pub const MAX_USES: usize = 256;
/// Relative slack when comparing a sum of losses to a cap (as the ledger does).
const ROUNDING: f64 = 1e-9;
/// Most windows kept per account (the oldest go first); totals keep everything.
pub const MAX_WINDOWS: usize = 120;
/// Most researchers named in one account; the charges of any further
/// researcher are added up under [`OTHER_RESEARCHERS`], so an account (and
/// a patient's view of it) stays small whatever the consortium's size.
pub const MAX_RESEARCHERS: usize = 64;
/// The entry that adds up researchers beyond [`MAX_RESEARCHERS`] (no keyed digest is all ones in practice).
pub const OTHER_RESEARCHERS: [u8; 16] = [0xff; 16];

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
    /// The journal numbers of the newest [`MAX_USES`] charges that included
    /// the patient, oldest first: the audit entries of those answers name
    /// them, so the patient's view of the log can show each use in full.
    pub uses: Vec<u64>,
}

/// The version 1 layout of an account, frozen: no list of uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountV1 {
    pub version: u32,
    pub total_epsilon: f64,
    pub total_delta: f64,
    pub answers: u64,
    pub per_window: Vec<WindowTotal>,
    pub per_researcher: Vec<ResearcherTotal>,
    pub cap: Option<Cap>,
    pub folded_through: u64,
}

impl From<AccountV1> for Account {
    /// The uses before the upgrade are not known: the list starts empty.
    fn from(old: AccountV1) -> Account {
        Account {
            version: ACCOUNT_VERSION,
            total_epsilon: old.total_epsilon,
            total_delta: old.total_delta,
            answers: old.answers,
            per_window: old.per_window,
            per_researcher: old.per_researcher,
            cap: old.cap,
            folded_through: old.folded_through,
            uses: Vec::new(),
        }
    }
}

impl Evolving for Account {
    const WHAT: &'static str = "patient privacy account";
    const CURRENT: u32 = ACCOUNT_VERSION;

    fn from_version(version: u32, layout: Layout<'_>) -> Result<Self, versioned::Error> {
        match version {
            ACCOUNT_VERSION => layout.read::<Account>(),
            1 => layout.read::<AccountV1>().map(Account::from),
            other => Err(versioned::unknown::<Account>(other)),
        }
    }
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

witmed_crypto::single_version!(CohortCharge, "patient cohort charge", RECORD_VERSION);

impl Default for Account {
    fn default() -> Account {
        Account {
            version: ACCOUNT_VERSION,
            total_epsilon: 0.0,
            total_delta: 0.0,
            answers: 0,
            per_window: Vec::new(),
            per_researcher: Vec::new(),
            cap: None,
            folded_through: 0,
            uses: Vec::new(),
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

    /// Adds a journal charge and records that the account includes it (and
    /// the charge among its uses). Called once per charge: only for one the
    /// account does not include yet.
    fn add_charge(&mut self, charge: &CohortCharge) {
        let loss = Loss::new(charge.epsilon, charge.delta);
        self.add(charge.researcher, loss, charge.at, charge.window_seconds);
        self.folded_through = charge.seq;
        self.uses.push(charge.seq);
        if self.uses.len() > MAX_USES {
            let excess = self.uses.len() - MAX_USES;
            self.uses.drain(..excess);
        }
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
        let named = self
            .per_researcher
            .iter()
            .any(|r| r.researcher == researcher);
        let full = self.per_researcher.len() >= MAX_RESEARCHERS - 1;
        let researcher = if !named && full {
            OTHER_RESEARCHERS
        } else {
            researcher
        };
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
    pub(crate) loaded: Mutex<Option<Memory>>,
    /// Held by a fold from its snapshot to its write, and by a cap change,
    /// so neither writes an account record the other is about to replace.
    pub(crate) folding: Mutex<()>,
}

impl Accounts {
    /// The in-memory accounts, read from `store` (accounts, then the journal) first if needed.
    pub(crate) fn loaded(
        &self,
        store: &Store,
    ) -> Result<std::sync::MutexGuard<'_, Option<Memory>>, store::Error> {
        let mut guard = crate::locks::lock(&self.loaded);
        if guard.is_none() {
            *guard = Some(Memory::load(store)?);
        }
        Ok(guard)
    }

    /// The journal numbers of the newest charges that included `p` (none for
    /// a patient never charged).
    pub(crate) fn uses_of(&self, store: &Store, p: &Pseudonym) -> Result<Vec<u64>, store::Error> {
        Ok(self
            .loaded(store)?
            .as_ref()
            .map(|m| m.current(p).uses)
            .unwrap_or_default())
    }
}

/// The in-memory accounts and the journal's state.
///
/// Applying a charge to 50,000 accounts in memory costs more than the rest
/// of a query, so only capped patients (whose totals a query must check)
/// are charged in memory at once; the other charges wait in `pending` and
/// are applied when the journal is folded; `accounts::of` adds them up for one patient.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    pub(crate) all: HashMap<Pseudonym, Account>,
    /// Patients with a cap (few): the only ones a query must check.
    pub(crate) capped: HashSet<Pseudonym>,
    /// Patients whose account changed since the last fold.
    pub(crate) dirty: HashSet<Pseudonym>,
    /// Journal charges not yet applied to every account they name, oldest
    /// first (shared, so a fold takes them without copying the patient lists).
    pub(crate) pending: Vec<Arc<CohortCharge>>,
    /// Number of the last journal charge written.
    pub(crate) last: u64,
    /// Journal charges not folded yet.
    pub(crate) unfolded: u64,
}

impl Memory {
    /// Reads every account, then replays the journal onto them.
    pub(crate) fn load(store: &Store) -> Result<Memory, store::Error> {
        let mut memory = Memory::default();
        store.scan_records(cf::BUDGET, ACCOUNT_PREFIX, |key, account: Account| {
            if let Some(p) = pseudonym_of(key) {
                memory.last = memory.last.max(account.folded_through);
                memory.put(p, account);
            }
            Ok(())
        })?;
        memory.last = memory.last.max(journal_through(store)?);
        store.scan_records(cf::BUDGET, JOURNAL_PREFIX, |_, charge: CohortCharge| {
            memory.apply(charge);
            Ok(())
        })?;
        Ok(memory)
    }

    /// Takes a journal charge: applied at once to capped patients, to the others at the next fold.
    pub(crate) fn apply(&mut self, charge: CohortCharge) {
        if !self.capped.is_empty() {
            for p in &charge.patients {
                if self.capped.contains(p) {
                    self.apply_one(*p, &charge);
                }
            }
        }
        self.last = self.last.max(charge.seq);
        self.unfolded = self.unfolded.saturating_add(1);
        self.pending.push(Arc::new(charge));
    }

    /// Adds `charge` to `p`'s account unless it already includes it
    /// (charges are applied to an account in journal order).
    pub(crate) fn apply_one(&mut self, p: Pseudonym, charge: &CohortCharge) {
        let account = self.all.entry(p).or_default();
        if account.folded_through >= charge.seq {
            return;
        }
        account.add_charge(charge);
        self.dirty.insert(p);
    }

    /// What a fold needs, taken under the accounts' lock without applying
    /// anything: the pending charges, the newest one's number, and the
    /// accounts of the uncapped patients they name (capped patients are
    /// charged at once, so their accounts are current already). `None` when
    /// fewer than [`FOLD_EVERY`] charges wait.
    pub(crate) fn fold_snapshot(&self) -> Option<FoldPlan> {
        if self.unfolded < FOLD_EVERY {
            return None;
        }
        let charges = self.pending.clone();
        let through = charges.last()?.seq;
        let mut bases = HashMap::new();
        let named = charges.iter().flat_map(|c| c.patients.iter());
        for p in named.chain(self.dirty.iter()) {
            if !self.capped.contains(p) && !bases.contains_key(p) {
                bases.insert(*p, self.all.get(p).cloned().unwrap_or_default());
            }
        }
        Some(FoldPlan {
            charges,
            through,
            bases,
        })
    }

    /// Installs a computed fold: the uncapped accounts replace theirs, the
    /// folded charges leave `pending`. Returns every account to write (the
    /// capped ones the charges named, as they are now), each marked as
    /// including the charges through the fold's number.
    pub(crate) fn fold_install(&mut self, folded: Folded) -> Vec<(Pseudonym, Account)> {
        let Folded { through, accounts } = folded;
        let mut writes = Vec::with_capacity(accounts.len());
        let capped: Vec<Pseudonym> = self
            .dirty
            .iter()
            .filter(|p| self.capped.contains(p))
            .copied()
            .collect();
        for p in capped {
            if let Some(account) = self.all.get(&p) {
                writes.push((p, account.clone()));
            }
            self.dirty.remove(&p);
        }
        for (p, account) in accounts {
            self.all.insert(p, account.clone());
            self.dirty.remove(&p);
            writes.push((p, account));
        }
        self.pending.retain(|c| c.seq > through);
        self.unfolded = self.pending.len() as u64;
        writes
    }

    /// `p`'s account with the pending charges that name them, without changing anything.
    pub(crate) fn current(&self, p: &Pseudonym) -> Account {
        let mut account = self.all.get(p).cloned().unwrap_or_default();
        for charge in &self.pending {
            if charge.seq > account.folded_through && charge.patients.contains(p) {
                account.add_charge(charge);
            }
        }
        account
    }

    pub(crate) fn put(&mut self, p: Pseudonym, account: Account) {
        if account.cap.is_some() {
            self.capped.insert(p);
        } else {
            self.capped.remove(&p);
        }
        self.all.insert(p, account);
    }
}

/// A fold's input, taken under the accounts' lock ([`Memory::fold_snapshot`]).
pub(crate) struct FoldPlan {
    charges: Vec<Arc<CohortCharge>>,
    through: u64,
    bases: HashMap<Pseudonym, Account>,
}

/// A fold's result: the accounts with every charge through `through` applied.
pub(crate) struct Folded {
    through: u64,
    accounts: HashMap<Pseudonym, Account>,
}

impl FoldPlan {
    /// Applies the charges to the snapshot's accounts, in journal order. The
    /// costly part of a fold (every charge times every patient it names),
    /// done without holding any lock a query needs.
    pub(crate) fn compute(self) -> Folded {
        let FoldPlan {
            charges,
            through,
            mut bases,
        } = self;
        for charge in &charges {
            for p in &charge.patients {
                if let Some(account) = bases.get_mut(p) {
                    if account.folded_through < charge.seq {
                        account.add_charge(charge);
                    }
                }
            }
        }
        for account in bases.values_mut() {
            account.folded_through = account.folded_through.max(through);
        }
        Folded {
            through,
            accounts: bases,
        }
    }

    /// The number of the newest charge this fold includes.
    pub(crate) fn through(&self) -> u64 {
        self.through
    }
}

/// The number of the last journal charge a fold included (0: none yet).
fn journal_through(store: &Store) -> Result<u64, store::Error> {
    let Some(bytes) = store.get_meta(JOURNAL_THROUGH_KEY)? else {
        return Ok(0);
    };
    let bytes: [u8; 8] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| store::Error::Corrupt {
            family: cf::META,
            reason: format!(
                "the patient journal's fold mark has {} bytes, not 8",
                bytes.len()
            ),
        })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Adds to a fold's `batch` the mark that the journal was folded through `through`.
pub(crate) fn mark_folded_through(batch: &mut store::Batch<'_>, through: u64) {
    batch.put_meta(JOURNAL_THROUGH_KEY, &through.to_be_bytes());
}

pub(crate) fn journal_key(seq: u64) -> Vec<u8> {
    let mut key = JOURNAL_PREFIX.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn account_key(p: &Pseudonym) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn researchers_beyond_the_bound_are_added_up_as_others_and_totals_stay_exact() {
        let mut account = Account::default();
        let researchers = MAX_RESEARCHERS * 3;
        for r in 0..researchers {
            let mut digest = [0u8; 16];
            digest[..8].copy_from_slice(&(r as u64).to_be_bytes());
            account.add(digest, Loss::new(0.5, 0.0), 1_000, 86_400);
        }
        assert_eq!(account.per_researcher.len(), MAX_RESEARCHERS);
        let others = account
            .per_researcher
            .iter()
            .find(|r| r.researcher == OTHER_RESEARCHERS)
            .expect("an entry adds up the rest");
        assert_eq!(others.answers as usize, researchers - (MAX_RESEARCHERS - 1));
        let named: u64 = account.per_researcher.iter().map(|r| r.answers).sum();
        assert_eq!(named as usize, researchers);
        assert_eq!(account.total_epsilon, 0.5 * researchers as f64);
    }
}
