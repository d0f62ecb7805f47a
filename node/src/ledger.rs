//! The durable privacy-budget ledger: charges per researcher, checked against a rolling window and a lifetime cap, and stored answers.
//!
//! Before a result leaves the node, its charge is checked against the
//! researcher's remaining budget and written, together with the answer and
//! an audit entry, in one synced RocksDB batch. A query id is charged once:
//! asking again returns the stored answer (not fresh noise, which would let
//! a researcher average the noise away); a different query under a used id is
//! refused. Callers serialize check-and-commit with the node's ledger lock
//! (one process owns the store, so an in-process lock is enough).
//!
//! **Whose budget.** A budget belongs to an [`Account`]: the credential's
//! issuer and the `researcher_id` it assigned, not the researcher's key, so
//! a credential re-issued for a new key draws on the same budget.
//!
//! **Nothing readable in keys.** Keys of the `budget` family hold keyed
//! digests (HMAC-SHA256 under a key derived from the node master key) of the
//! account and of the query id; who asked what is only in sealed values.
//!
//! | key                                     | value             |
//! |-----------------------------------------|-------------------|
//! | `c2/` account (16) sequence (8, BE)     | [`Charge`]        |
//! | `a2/` account (16) query-id digest (16) | [`StoredAnswer`]  |
//! | `h2`                                    | [`Head`]          |
//!
//! **Deletions show.** Every charge carries a node-wide sequence number,
//! and the sealed [`Head`] (written in the same batch as each charge) holds
//! their count and a running hash over all of them. [`Ledger::open`] checks
//! both at every node start: a deleted, altered or moved charge or stored
//! answer stops the node. What it cannot see is a rollback of the whole
//! store to an earlier copy (head included), which needs an outside anchor.

use serde::{Deserialize, Serialize};
use witmed_crypto::at_rest::MasterKey;
use witmed_crypto::pseudonym::Pseudonymizer;
use witmed_crypto::PublicKey;
use witmed_policies::credential::VerifiedCredential;
use witmed_policies::policy::Budget;

use crate::store::{self, cf, Batch, Store, RECORD_VERSION};

const CHARGE_PREFIX: &[u8] = b"c2/";
const ANSWER_PREFIX: &[u8] = b"a2/";
const HEAD_KEY: &[u8] = b"h2";
/// Prefixes of the first layout, which had researcher keys and query ids in clear.
const OLD_PREFIXES: [&[u8]; 2] = [b"c/", b"a/"];
/// Bytes of an account or query-id digest in a key.
const DIGEST_LEN: usize = witmed_crypto::pseudonym::PSEUDONYM_LEN;
/// Relative slack when comparing sums of floating-point losses to a cap, so
/// that ten charges of 0.1 fit a budget of 1.0. Far below any loss that matters.
const ROUNDING: f64 = 1e-9;

/// Errors of the ledger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A charge or stored answer was deleted, altered or moved: spent budget may have been refunded.
    #[error("the privacy-budget ledger (budget family of the store) failed its integrity check: {0}; budgets cannot be trusted, so the node will not start: restore the data dir from a backup and find out who changed the store")]
    Tampered(String),
    /// The ledger was written by a witmed that kept researcher keys in its keys.
    #[error("the privacy-budget ledger (budget family of the store) is in the first layout, which kept researcher keys and query ids in clear and keyed budgets on keys; this witmed cannot carry those budgets over to researcher ids: start from a new data dir, or keep the older witmed for this one")]
    OldLayout,
}

impl Error {
    /// Stable code for scripts and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Store(_) => "store_failed",
            Error::Tampered(_) => "ledger_tampered",
            Error::OldLayout => "ledger_old_layout",
        }
    }
}

/// Privacy loss: an (epsilon, delta) pair.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Loss {
    pub epsilon: f64,
    pub delta: f64,
}

impl Loss {
    /// `(epsilon, delta)`.
    pub fn new(epsilon: f64, delta: f64) -> Loss {
        Loss { epsilon, delta }
    }

    fn plus(self, other: Loss) -> Loss {
        Loss::new(self.epsilon + other.epsilon, self.delta + other.delta)
    }

    fn minus(self, other: Loss) -> Loss {
        Loss::new(self.epsilon - other.epsilon, self.delta - other.delta)
    }

    /// Whether `self` is within `cap` in both parts (up to rounding of sums).
    fn within(self, cap: Loss) -> bool {
        let fits = |used: f64, cap: f64| used <= cap + cap * ROUNDING;
        fits(self.epsilon, cap.epsilon) && fits(self.delta, cap.delta)
    }

    /// What is left of `cap` after `self`, never negative.
    fn left_of(self, cap: Loss) -> Loss {
        Loss::new(
            (cap.epsilon - self.epsilon).max(0.0),
            (cap.delta - self.delta).max(0.0),
        )
    }

    fn min(self, other: Loss) -> Loss {
        Loss::new(self.epsilon.min(other.epsilon), self.delta.min(other.delta))
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epsilon {:.4}, delta {:e}", self.epsilon, self.delta)
    }
}

/// One charge against a researcher's budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    pub version: u32,
    pub query_id: String,
    pub epsilon: f64,
    pub delta: f64,
    /// Unix seconds.
    pub at: i64,
    /// Node-wide sequence number of the charge, from 1 (also in its key).
    pub seq: u64,
}

impl Charge {
    /// The charge's loss.
    pub fn loss(&self) -> Loss {
        Loss::new(self.epsilon, self.delta)
    }
}

/// An answer kept so that a replayed query id gets the same answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub version: u32,
    /// Digest of the query the answer belongs to.
    pub query_digest: [u8; 32],
    /// The answer ([`witmed_protocol::Answer`] bytes).
    pub answer: Vec<u8>,
}

/// The ledger's head: how many charges exist and a hash chained over all of them, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub version: u32,
    /// Charges written so far (the last sequence number).
    pub charges: u64,
    /// `sha256(previous chain, sequence, account, sha256(charge))` of the last charge.
    pub chain: [u8; 32],
}

witmed_crypto::single_version!(Charge, "budget charge", RECORD_VERSION);
witmed_crypto::single_version!(StoredAnswer, "stored answer", RECORD_VERSION);
witmed_crypto::single_version!(Head, "ledger head", RECORD_VERSION);

/// Whose budget: the keyed digest of (issuer, researcher id), with a label for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    digest: [u8; DIGEST_LEN],
    /// `researcher_id (issuer abcd…)`: for messages and logs only, never stored in a key.
    pub label: String,
}

impl Account {
    /// The keyed digest of (issuer, researcher id): what stored records name the researcher by.
    pub fn digest(&self) -> [u8; DIGEST_LEN] {
        self.digest
    }
}

/// The ledger of one node: its keyed digests, and the checks of its contents.
pub struct Ledger {
    digests: Pseudonymizer,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ledger(..)")
    }
}

impl Ledger {
    /// The ledger of the store opened with `master`, after checking that no
    /// charge or stored answer was deleted, altered or moved.
    pub fn open(store: &Store, master: &MasterKey) -> Result<Ledger, Error> {
        let ledger = Ledger::new(master);
        ledger.verify(store)?;
        Ok(ledger)
    }

    /// The ledger's digests without checking the store (use [`Ledger::open`]).
    fn new(master: &MasterKey) -> Ledger {
        // crypto's keyed pseudonyms, under a key of their own: a pseudonymizer
        // made from a master key derived for the ledger shares no key with
        // the patients' pseudonyms.
        let ledger_master = MasterKey::from_bytes(*master.derive("ledger/v2"));
        Ledger {
            digests: Pseudonymizer::new(&ledger_master),
        }
    }

    /// The account of the researcher `researcher_id` as certified by `issuer`.
    pub fn account_of(&self, issuer: &PublicKey, researcher_id: &str) -> Account {
        // Issuer hex is fixed-length, so issuer and id cannot run into each other.
        let input = format!("{}{researcher_id}", issuer.to_hex());
        Account {
            digest: self.digests.pseudonym("ledger-account", &input).0,
            label: format!("{researcher_id} (issuer {})", issuer.short()),
        }
    }

    /// A `meta` key for `kind` of `researcher`'s `id` (a query id, a study id):
    /// a keyed digest, so neither the researcher's key nor the id can be read
    /// from the store's files.
    pub fn meta_key(&self, kind: &str, researcher: &PublicKey, id: &[u8]) -> Vec<u8> {
        let input = format!("{}{}", researcher.to_hex(), hex::encode(id));
        let mut key = format!("{kind}/").into_bytes();
        key.extend_from_slice(&self.digests.pseudonym(&format!("meta-{kind}"), &input).0);
        key
    }

    /// The account a verified credential charges.
    pub fn account(&self, credential: &VerifiedCredential) -> Account {
        self.account_of(credential.issuer(), &credential.researcher_id)
    }

    fn query_digest(&self, account: &Account, query_id: &str) -> [u8; DIGEST_LEN] {
        let input = format!("{}{query_id}", hex::encode(account.digest));
        self.digests.pseudonym("ledger-query", &input).0
    }

    fn answer_key(&self, account: &Account, query_id: &str) -> Vec<u8> {
        let mut key = ANSWER_PREFIX.to_vec();
        key.extend_from_slice(&account.digest);
        key.extend_from_slice(&self.query_digest(account, query_id));
        key
    }

    /// Every charge of `account`, in the order they were made.
    pub fn charges(&self, store: &Store, account: &Account) -> Result<Vec<Charge>, Error> {
        let mut out = Vec::new();
        store.scan_records(cf::BUDGET, &charge_prefix(account), |_, c: Charge| {
            out.push(c);
            Ok(())
        })?;
        Ok(out)
    }

    /// The stored answer for `query_id` from `account`, if any.
    pub fn stored_answer(
        &self,
        store: &Store,
        account: &Account,
        query_id: &str,
    ) -> Result<Option<StoredAnswer>, Error> {
        Ok(store.get(cf::BUDGET, &self.answer_key(account, query_id))?)
    }

    /// Adds the charge (numbered next), the answer and the new head to `batch`.
    ///
    /// Reads the head: the caller holds the ledger lock from this call until
    /// the batch is written, so no other charge takes the same number.
    pub fn record(
        &self,
        store: &Store,
        batch: &mut Batch<'_>,
        account: &Account,
        new: NewCharge<'_>,
        stored: &StoredAnswer,
    ) -> Result<(), Error> {
        let head = read_head(store)?;
        let seq = head
            .charges
            .checked_add(1)
            .ok_or_else(|| Error::Tampered("the charge count cannot grow further".into()))?;
        let charge = Charge {
            version: RECORD_VERSION,
            query_id: new.query_id.to_string(),
            epsilon: new.loss.epsilon,
            delta: new.loss.delta,
            at: new.at,
            seq,
        };
        let next = Head {
            version: RECORD_VERSION,
            charges: seq,
            chain: chain(&head.chain, &account.digest, &charge),
        };
        batch.put(cf::BUDGET, &charge_key(&account.digest, seq), &charge)?;
        batch.put(cf::BUDGET, &self.answer_key(account, new.query_id), stored)?;
        batch.put(cf::BUDGET, HEAD_KEY, &next)?;
        Ok(())
    }

    /// Checks the whole ledger against its head: charges numbered 1..=count
    /// with none missing, each readable under its own key, each with its
    /// stored answer, no answer without a charge, and the chained hash equal.
    pub fn verify(&self, store: &Store) -> Result<(), Error> {
        refuse_old_layout(store)?;
        let mut charges = read_all_charges(store)?;
        charges.sort_by_key(|(_, c)| c.seq);
        let mut chained = [0u8; 32];
        for (expected, (account, charge)) in (1u64..).zip(&charges) {
            if charge.seq != expected {
                return Err(Error::Tampered(format!(
                    "charge number {expected} is missing (the next one is {})",
                    charge.seq
                )));
            }
            let account = Account {
                digest: *account,
                label: String::new(),
            };
            if !store.contains(cf::BUDGET, &self.answer_key(&account, &charge.query_id))? {
                return Err(Error::Tampered(format!(
                    "the stored answer of charge number {} is missing",
                    charge.seq
                )));
            }
            chained = chain(&chained, &account.digest, charge);
        }
        let head = read_head(store)?;
        let count = charges.len() as u64;
        if head.charges != count {
            return Err(Error::Tampered(format!(
                "the head records {} charges but {count} are stored",
                head.charges
            )));
        }
        if head.chain != chained {
            return Err(Error::Tampered(
                "the charges do not hash to the head's chain".into(),
            ));
        }
        let answers = count_prefix(store, ANSWER_PREFIX)?;
        if answers != count {
            return Err(Error::Tampered(format!(
                "{answers} stored answers for {count} charges"
            )));
        }
        Ok(())
    }
}

/// What a new charge is for and costs; [`Ledger::record`] numbers it.
#[derive(Debug, Clone, Copy)]
pub struct NewCharge<'a> {
    pub query_id: &'a str,
    pub loss: Loss,
    /// Unix seconds.
    pub at: i64,
}

fn charge_prefix(account: &Account) -> Vec<u8> {
    let mut key = CHARGE_PREFIX.to_vec();
    key.extend_from_slice(&account.digest);
    key
}

fn charge_key(account: &[u8; DIGEST_LEN], seq: u64) -> Vec<u8> {
    let mut key = CHARGE_PREFIX.to_vec();
    key.extend_from_slice(account);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The account digest and sequence number in a charge key.
fn parse_charge_key(key: &[u8]) -> Option<([u8; DIGEST_LEN], u64)> {
    let rest = key.strip_prefix(CHARGE_PREFIX)?;
    if rest.len() != DIGEST_LEN + 8 {
        return None;
    }
    let account = rest.get(..DIGEST_LEN)?.try_into().ok()?;
    let seq = rest
        .get(DIGEST_LEN..)?
        .try_into()
        .ok()
        .map(u64::from_be_bytes)?;
    Some((account, seq))
}

fn chain(previous: &[u8; 32], account: &[u8; DIGEST_LEN], charge: &Charge) -> [u8; 32] {
    // Postcard of a charge is deterministic (fixed field order, no maps).
    let bytes = postcard::to_stdvec(charge).unwrap_or_default();
    let mut input = Vec::with_capacity(32 + 8 + DIGEST_LEN + 32);
    input.extend_from_slice(previous);
    input.extend_from_slice(&charge.seq.to_be_bytes());
    input.extend_from_slice(account);
    input.extend_from_slice(&witmed_crypto::sha256(&bytes));
    witmed_crypto::sha256(&input)
}

fn read_head(store: &Store) -> Result<Head, Error> {
    let head = store
        .get::<Head>(cf::BUDGET, HEAD_KEY)
        .map_err(|e| Error::Tampered(format!("the ledger head is unreadable ({e})")))?;
    Ok(head.unwrap_or(Head {
        version: RECORD_VERSION,
        charges: 0,
        chain: [0; 32],
    }))
}

/// Every charge with its account digest; one that does not open under its key is tampering.
fn read_all_charges(store: &Store) -> Result<Vec<([u8; DIGEST_LEN], Charge)>, Error> {
    let mut sealed = Vec::new();
    store.scan_prefix(cf::BUDGET, CHARGE_PREFIX, |key, value| {
        sealed.push((key.to_vec(), value.to_vec()));
        Ok(())
    })?;
    let mut out = Vec::with_capacity(sealed.len());
    for (key, value) in sealed {
        let (account, seq) = parse_charge_key(&key)
            .ok_or_else(|| Error::Tampered("a charge key has the wrong length".into()))?;
        let charge: Charge = store
            .open_record(cf::BUDGET, &key, &value)
            .map_err(|e| Error::Tampered(format!("charge number {seq} is unreadable ({e})")))?;
        if charge.seq != seq {
            return Err(Error::Tampered(format!(
                "charge number {seq} says it is number {}",
                charge.seq
            )));
        }
        out.push((account, charge));
    }
    Ok(out)
}

fn count_prefix(store: &Store, prefix: &[u8]) -> Result<u64, Error> {
    let mut n = 0u64;
    store.scan_prefix(cf::BUDGET, prefix, |_, _| {
        n = n.saturating_add(1);
        Ok(())
    })?;
    Ok(n)
}

fn refuse_old_layout(store: &Store) -> Result<(), Error> {
    for prefix in OLD_PREFIXES {
        if count_prefix(store, prefix)? > 0 {
            return Err(Error::OldLayout);
        }
    }
    Ok(())
}

/// Why a query does not fit the budget, and when (if ever) it would.
#[derive(Debug, Clone, PartialEq)]
pub enum Exhausted {
    /// The rolling window holds too little; it renews at `renews_at`
    /// (None: this query alone is more than a whole window allows).
    Window {
        needed: Loss,
        left: Loss,
        /// What a whole window allows.
        cap: Loss,
        window_seconds: i64,
        renews_at: Option<i64>,
    },
    /// The lifetime cap holds too little; it never renews.
    Lifetime { needed: Loss, left: Loss },
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exhausted::Window {
                needed,
                left,
                cap,
                window_seconds,
                renews_at,
            } => {
                write!(f, "this query needs {needed} but {left} is left in the current {window_seconds}-second window; ")?;
                match renews_at {
                    Some(at) => {
                        let when = chrono::DateTime::from_timestamp(*at, 0)
                            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                            .unwrap_or_default();
                        write!(f, "enough is back at {when} (unix time {at}), when the oldest charges leave the window")
                    }
                    None if cap.delta <= 0.0 && needed.delta > 0.0 => f.write_str(
                        "this node's policy allows no delta at all, so it refuses every query with a delta (all encrypted-mode queries); ask in DP mode",
                    ),
                    None => write!(f, "a whole window allows only {cap}, so this query never fits; ask for less"),
                }
            }
            Exhausted::Lifetime { needed, left } => write!(
                f,
                "this query needs {needed} but {left} is left of the lifetime cap, which never renews; ask for less, or ask the hospital"
            ),
        }
    }
}

/// Checks that `needed` fits `budget` at `now` given `charges` (all of one
/// account); returns what is left after it (the smaller of window and lifetime).
///
/// The lifetime cap is checked first: when it is spent, no renewal of the
/// window would help, so the refusal must not promise one.
pub fn check(
    budget: &Budget,
    charges: &[Charge],
    needed: Loss,
    now: i64,
) -> Result<Loss, Exhausted> {
    let mut left = Loss::new(f64::INFINITY, f64::INFINITY);
    if let Some(cap) = &budget.lifetime {
        let lifetime_cap = Loss::new(cap.epsilon, cap.delta);
        let after = total(charges.iter()).plus(needed);
        if !after.within(lifetime_cap) {
            return Err(Exhausted::Lifetime {
                needed,
                left: after.minus(needed).left_of(lifetime_cap),
            });
        }
        left = after.left_of(lifetime_cap);
    }
    let window_cap = Loss::new(budget.epsilon, budget.delta);
    let since = now.saturating_sub(budget.window_seconds);
    let mut in_window: Vec<&Charge> = charges.iter().filter(|c| c.at > since).collect();
    in_window.sort_by_key(|c| c.at);
    let window_spent = total(in_window.iter().copied());
    if !window_spent.plus(needed).within(window_cap) {
        return Err(Exhausted::Window {
            needed,
            left: window_spent.left_of(window_cap),
            cap: window_cap,
            window_seconds: budget.window_seconds,
            renews_at: renewal(&in_window, window_spent, needed, window_cap, budget),
        });
    }
    Ok(left.min(window_spent.plus(needed).left_of(window_cap)))
}

fn total<'a>(charges: impl Iterator<Item = &'a Charge>) -> Loss {
    charges.fold(Loss::default(), |sum, c| sum.plus(c.loss()))
}

/// The first time enough of the window's charges (oldest first) have left it
/// for `needed` to fit; None if it would not fit an empty window.
fn renewal(
    in_window: &[&Charge],
    spent: Loss,
    needed: Loss,
    cap: Loss,
    budget: &Budget,
) -> Option<i64> {
    if !needed.within(cap) {
        return None;
    }
    let mut remaining = spent;
    for charge in in_window {
        remaining = remaining.minus(charge.loss());
        if remaining.plus(needed).within(cap) {
            return Some(charge.at.saturating_add(budget.window_seconds));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use witmed_policies::policy::LifetimeCap;

    use super::*;

    const DAY: i64 = 86_400;

    fn budget(epsilon: f64, delta: f64, lifetime: Option<(f64, f64)>) -> Budget {
        Budget {
            epsilon,
            delta,
            window_seconds: 30 * DAY,
            lifetime: lifetime.map(|(epsilon, delta)| LifetimeCap { epsilon, delta }),
        }
    }

    fn charge(seq: u64, epsilon: f64, delta: f64, at: i64) -> Charge {
        Charge {
            version: RECORD_VERSION,
            query_id: format!("q{seq}"),
            epsilon,
            delta,
            at,
            seq,
        }
    }

    #[test]
    fn a_zero_delta_budget_refuses_any_delta() {
        let refused = check(&budget(10.0, 0.0, None), &[], Loss::new(0.5, 1e-6), 0);
        assert!(
            matches!(
                refused,
                Err(Exhausted::Window {
                    renews_at: None,
                    ..
                })
            ),
            "{refused:?}"
        );
        assert!(check(&budget(10.0, 0.0, None), &[], Loss::new(0.5, 0.0), 0).is_ok());
    }

    #[test]
    fn ten_charges_of_a_tenth_fill_a_budget_of_one_exactly() {
        let charges: Vec<Charge> = (1..=9).map(|i| charge(i, 0.1, 1e-6, 0)).collect();
        let b = budget(1.0, 1e-5, None);
        assert!(check(&b, &charges, Loss::new(0.1, 1e-6), 0).is_ok());
        let full: Vec<Charge> = (1..=10).map(|i| charge(i, 0.1, 1e-6, 0)).collect();
        assert!(check(&b, &full, Loss::new(0.0, 1e-7), 0).is_err());
    }

    #[test]
    fn an_exhausted_window_renews_when_enough_old_charges_leave_it() {
        let b = budget(1.0, 0.0, None);
        let charges = [charge(1, 0.4, 0.0, 100), charge(2, 0.4, 0.0, 200)];
        match check(&b, &charges, Loss::new(0.5, 0.0), 300) {
            Err(Exhausted::Window {
                renews_at, left, ..
            }) => {
                assert_eq!(renews_at, Some(100 + 30 * DAY));
                assert!((left.epsilon - 0.2).abs() < 1e-12);
            }
            other => panic!("{other:?}"),
        }
        // Needing 0.9, both must leave: the second leaves at 200 + window.
        match check(&b, &charges, Loss::new(0.9, 0.0), 300) {
            Err(Exhausted::Window { renews_at, .. }) => {
                assert_eq!(renews_at, Some(200 + 30 * DAY))
            }
            other => panic!("{other:?}"),
        }
        assert!(check(&b, &charges, Loss::new(0.5, 0.0), 100 + 30 * DAY).is_ok());
    }

    #[test]
    fn the_lifetime_cap_holds_across_windows_and_never_renews() {
        let b = budget(1.0, 0.0, Some((2.0, 0.0)));
        let charges = [charge(1, 1.0, 0.0, 0), charge(2, 1.0, 0.0, 40 * DAY)];
        let refused = check(&b, &charges, Loss::new(0.1, 0.0), 400 * DAY);
        assert!(
            matches!(refused, Err(Exhausted::Lifetime { .. })),
            "{refused:?}"
        );
        let message = refused.unwrap_err().to_string();
        assert!(message.contains("never renews"), "{message}");
    }

    #[test]
    fn a_spent_lifetime_cap_is_reported_rather_than_a_window_renewal() {
        let b = budget(1.0, 0.0, Some((1.0, 0.0)));
        let charges = [charge(1, 1.0, 0.0, 0)];
        let refused = check(&b, &charges, Loss::new(0.5, 0.0), DAY);
        assert!(
            matches!(refused, Err(Exhausted::Lifetime { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn what_is_left_is_the_smaller_of_window_and_lifetime() {
        let b = budget(1.0, 1e-5, Some((1.5, 1e-3)));
        let charges = [charge(1, 1.0, 0.0, 0)];
        let left = check(&b, &charges, Loss::new(0.2, 0.0), 40 * DAY).unwrap();
        assert!((left.epsilon - 0.3).abs() < 1e-12, "{left:?}");
        assert!((left.delta - 1e-5).abs() < 1e-18, "{left:?}");
    }

    #[test]
    fn account_and_query_digests_depend_on_the_master_key_and_hide_their_input() {
        let issuer = PublicKey::from_bytes([9; 32]);
        let a = Ledger::new(&MasterKey::from_bytes([1; 32]));
        let b = Ledger::new(&MasterKey::from_bytes([2; 32]));
        assert_eq!(
            a.account_of(&issuer, "ada").digest,
            a.account_of(&issuer, "ada").digest
        );
        assert_ne!(
            a.account_of(&issuer, "ada").digest,
            b.account_of(&issuer, "ada").digest
        );
        assert_ne!(
            a.account_of(&issuer, "ada").digest,
            a.account_of(&PublicKey::from_bytes([8; 32]), "ada").digest
        );
        let account = a.account_of(&issuer, "ada");
        let key = a.answer_key(&account, "query-1");
        assert!(!key.windows(5).any(|w| w == b"query"));
        assert!(!key.windows(3).any(|w| w == b"ada"));
    }
}
