//! Pure decisions: may this researcher run this query here, and does this patient's consent cover it.

use std::collections::BTreeSet;

use witmed_crypto::PublicKey;
use witmed_protocol::query::Query;
use witmed_protocol::vocab::{Category, Mode};

use crate::consent::Verified;
use crate::credential::VerifiedCredential;
use crate::duo::{Modifier, Purpose};
use crate::error::Error;
use crate::policy::NodePolicy;

/// What a query asks of a node, reduced to what policy and consent decide on.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The key that signed the query.
    pub researcher: PublicKey,
    /// DUO purpose code of the query, e.g. `HMB`.
    pub purpose: String,
    /// Query kind, one of [`crate::policy::QUERY_KINDS`].
    pub kind: String,
    pub mode: Mode,
    /// Data categories the query reads.
    pub categories: BTreeSet<Category>,
    /// Epsilon the query spends at this node.
    pub epsilon: f64,
}

impl Request {
    /// The request a query signed by `researcher` makes.
    pub fn from_query(query: &Query, researcher: PublicKey) -> Request {
        Request {
            researcher,
            purpose: query.purpose.clone(),
            kind: query.aggregate.kind().to_string(),
            mode: query.privacy.mode,
            categories: query.categories(),
            epsilon: query.privacy.epsilon,
        }
    }
}

/// One reason a node refuses a query. Each message says what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("the credential is for researcher {credential_for}, but the query is signed by {requester}; sign the query with the key the credential names")]
    WrongResearcher {
        credential_for: PublicKey,
        requester: PublicKey,
    },
    #[error("credential issuer {issuer} is not trusted by this node's policy; present a credential from an issuer the node trusts")]
    UntrustedIssuer { issuer: PublicKey },
    #[error("the credential expired at {expires} (now {now}); ask its issuer to renew it")]
    CredentialExpired { expires: i64, now: i64 },
    #[error(
        "the credential is not valid before {issued_at} (now {now}); wait, or check the clocks"
    )]
    CredentialNotYetValid { issued_at: i64, now: i64 },
    #[error("query purpose {purpose:?} is not a DUO purpose witmed knows; use GRU, HMB, POA or DS-<disease id>")]
    UnknownPurpose { purpose: String },
    #[error("query purpose {purpose} is not covered by the credential's approved purposes ({}); use a purpose they cover or get a credential for it", approved.join(", "))]
    PurposeNotApproved {
        purpose: String,
        approved: Vec<String>,
    },
    #[error("this node does not answer {kind} queries; use one of: {}", allowed.join(", "))]
    KindNotAllowed { kind: String, allowed: Vec<String> },
    #[error(
        "this node does not answer in {mode} mode; use one of: {}",
        join(allowed)
    )]
    ModeNotAllowed { mode: Mode, allowed: Vec<Mode> },
    #[error("this node does not expose {category} data; leave it out of the query")]
    CategoryNotExposed { category: Category },
    #[error("query epsilon {epsilon} is not a positive finite number; set privacy.epsilon > 0")]
    InvalidEpsilon { epsilon: f64 },
    #[error("query epsilon {epsilon} exceeds this node's whole budget of {budget} per researcher per window; ask for at most {budget}")]
    EpsilonOverBudget { epsilon: f64, budget: f64 },
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    let names: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    names.join(", ")
}

impl Refusal {
    /// A stable snake_case name for scripts, logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::WrongResearcher { .. } => "wrong_researcher",
            Refusal::UntrustedIssuer { .. } => "untrusted_issuer",
            Refusal::CredentialExpired { .. } => "credential_expired",
            Refusal::CredentialNotYetValid { .. } => "credential_not_yet_valid",
            Refusal::UnknownPurpose { .. } => "unknown_purpose",
            Refusal::PurposeNotApproved { .. } => "purpose_not_approved",
            Refusal::KindNotAllowed { .. } => "kind_not_allowed",
            Refusal::ModeNotAllowed { .. } => "mode_not_allowed",
            Refusal::CategoryNotExposed { .. } => "category_not_exposed",
            Refusal::InvalidEpsilon { .. } => "invalid_epsilon",
            Refusal::EpsilonOverBudget { .. } => "epsilon_over_budget",
        }
    }
}

/// Whether `policy` lets the holder of `credential` make `request` at `now`.
///
/// Returns every reason that applies, so a researcher can fix them all at
/// once. The credential is re-checked against this policy and this `now`,
/// whatever it was verified against earlier. The remaining budget is the
/// caller's to check; this only refuses a query larger than the whole budget.
pub fn query_allowed(
    policy: &NodePolicy,
    credential: &VerifiedCredential,
    request: &Request,
    now: i64,
) -> Result<(), Vec<Refusal>> {
    let mut refusals = credential_refusals(policy, credential, request, now);
    refusals.extend(purpose_refusal(credential, &request.purpose));
    refusals.extend(policy_refusals(policy, request));
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(refusals)
    }
}

fn credential_refusals(
    policy: &NodePolicy,
    credential: &VerifiedCredential,
    request: &Request,
    now: i64,
) -> Vec<Refusal> {
    let mut out = Vec::new();
    if credential.researcher != request.researcher {
        out.push(Refusal::WrongResearcher {
            credential_for: credential.researcher,
            requester: request.researcher,
        });
    }
    if !policy.trusted_issuers.contains(credential.issuer()) {
        out.push(Refusal::UntrustedIssuer {
            issuer: *credential.issuer(),
        });
    }
    if now < credential.issued_at {
        out.push(Refusal::CredentialNotYetValid {
            issued_at: credential.issued_at,
            now,
        });
    }
    if now >= credential.expires {
        out.push(Refusal::CredentialExpired {
            expires: credential.expires,
            now,
        });
    }
    out
}

fn purpose_refusal(credential: &VerifiedCredential, purpose: &str) -> Option<Refusal> {
    let Ok(requested) = purpose.parse::<Purpose>() else {
        return Some(Refusal::UnknownPurpose {
            purpose: purpose.to_string(),
        });
    };
    if credential.terms().covers(&requested) {
        return None;
    }
    Some(Refusal::PurposeNotApproved {
        purpose: purpose.to_string(),
        approved: credential.purposes.clone(),
    })
}

fn policy_refusals(policy: &NodePolicy, request: &Request) -> Vec<Refusal> {
    let mut out = Vec::new();
    if !policy.query_kinds.contains(&request.kind) {
        out.push(Refusal::KindNotAllowed {
            kind: request.kind.clone(),
            allowed: policy.query_kinds.iter().cloned().collect(),
        });
    }
    if !policy.modes.contains(&request.mode) {
        out.push(Refusal::ModeNotAllowed {
            mode: request.mode,
            allowed: policy.modes.iter().copied().collect(),
        });
    }
    out.extend(
        request
            .categories
            .difference(&policy.categories)
            .map(|&category| Refusal::CategoryNotExposed { category }),
    );
    out.extend(epsilon_refusal(policy, request.epsilon));
    out
}

fn epsilon_refusal(policy: &NodePolicy, epsilon: f64) -> Option<Refusal> {
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Some(Refusal::InvalidEpsilon { epsilon });
    }
    let budget = policy.budget.epsilon;
    (epsilon > budget).then_some(Refusal::EpsilonOverBudget { epsilon, budget })
}

/// The use a query would make of a patient's data, as consent decides on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// The node the data is at.
    pub node: PublicKey,
    pub purpose: Purpose,
    pub categories: BTreeSet<Category>,
    pub mode: Mode,
    /// From the credential: consents with NCU exclude commercial use.
    pub commercial: bool,
    /// From the credential: consents with NPU require a not-for-profit user.
    pub not_for_profit: bool,
    /// From the credential: consents with IRB require a named (ethics-approved) project.
    pub project: String,
}

impl Use {
    /// The use `request`, made under `credential`, would make of data at `node`.
    /// Fails only if the request's purpose is not a DUO purpose.
    pub fn new(
        node: PublicKey,
        request: &Request,
        credential: &VerifiedCredential,
    ) -> Result<Use, Error> {
        Ok(Use {
            node,
            purpose: request.purpose.parse()?,
            categories: request.categories.clone(),
            mode: request.mode,
            commercial: credential.commercial,
            not_for_profit: credential.not_for_profit,
            project: credential.project.clone(),
        })
    }
}

/// Whether a patient with these consent tokens may be counted for `use_` at `now`.
///
/// Consent is opt-in: without a token that permits the use, the answer is no.
/// `revoked` holds the ids of revoked tokens.
pub fn patient_eligible(
    tokens: &[&Verified],
    revoked: &BTreeSet<String>,
    use_: &Use,
    now: i64,
) -> bool {
    permitting_token(tokens, revoked, use_, now).is_some()
}

/// The first token that permits `use_` at `now`, for audit records.
pub fn permitting_token<'a>(
    tokens: &[&'a Verified],
    revoked: &BTreeSet<String>,
    use_: &Use,
    now: i64,
) -> Option<&'a Verified> {
    tokens
        .iter()
        .copied()
        .find(|token| permits(token, revoked, use_, now))
}

fn permits(token: &Verified, revoked: &BTreeSet<String>, use_: &Use, now: i64) -> bool {
    !revoked.contains(&token.id)
        && token.node == use_.node
        && token.valid_at(now)
        && token.terms().covers(&use_.purpose)
        && use_.categories.is_subset(&token.categories)
        && token.modes.contains(&use_.mode)
        && token
            .terms()
            .modifiers
            .iter()
            .all(|m| modifier_satisfied(*m, use_))
}

fn modifier_satisfied(modifier: Modifier, use_: &Use) -> bool {
    match modifier {
        Modifier::Ncu => !use_.commercial,
        Modifier::Npu => use_.not_for_profit,
        // witmed cannot see an ethics approval itself; a credential naming
        // a project is the authority's statement that the project is approved.
        Modifier::Irb => !use_.project.trim().is_empty(),
    }
}
