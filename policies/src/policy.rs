//! The node policy: what one hospital node allows, signed by the hospital's administrator key.
//!
//! The policy says whose credentials the node trusts, which query kinds,
//! privacy modes and data categories it offers, each researcher's privacy
//! budget per rolling window (and, recommended, over their lifetime), and
//! the smallest cohort it will answer about.
//! A new policy must carry a higher serial than the one in force, so an old
//! signed policy cannot be replayed to loosen today's.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use witmed_crypto::versioned::{self, Evolving, Layout};
use witmed_crypto::{Envelope, KeyPair, PublicKey};
use witmed_protocol::vocab::{Category, Mode};

use crate::consent::check_node;
use crate::error::{Error, Object};
use crate::signed::{self, Versioned};

/// Node policy format version written today. Version 2 added the budget's
/// lifetime cap and `allow_demonstration_data`; a version 1 policy is read
/// and upgraded ([`NodePolicyV1`]) with neither.
pub const POLICY_VERSION: u32 = 2;
/// Envelope domain of node policies.
pub const POLICY_DOMAIN: &str = "witmed/node-policy/v1";
/// Query kinds a policy may allow (the names of `witmed_protocol::query::Aggregate::kind`).
pub const QUERY_KINDS: [&str; 8] = [
    "count",
    "sum",
    "mean",
    "histogram",
    "quantiles",
    "survival",
    "table",
    "regression",
];
/// Length of the default budget window: 30 days.
pub const DEFAULT_WINDOW_SECONDS: i64 = 30 * 24 * 60 * 60;
/// Delta of the default budget window: 100 encrypted-mode queries at their
/// default delta of 1e-6. Lower it at a small hospital: the total delta
/// should stay well below one over the number of patients.
pub const DEFAULT_WINDOW_DELTA: f64 = 1e-4;

/// Privacy budget of each researcher at this node: a rolling window and an
/// optional lifetime cap.
///
/// A researcher is who the credential's issuer says they are (the issuer
/// and the credential's `researcher_id`), not the key they sign with: a
/// re-issued credential for a new key draws on the same budget.
///
/// The window alone renews forever (every `window_seconds` the same loss
/// may be spent again), so privacy loss grows without bound over the years.
/// Setting `lifetime` is recommended: it caps the total a researcher may
/// ever spend at this node, and never renews.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Total epsilon one researcher may spend within any window.
    pub epsilon: f64,
    /// Total delta one researcher may spend within any window. With 0, every
    /// query with a delta (all encrypted-mode queries) is refused.
    pub delta: f64,
    /// Window length in seconds.
    pub window_seconds: i64,
    /// Total one researcher may ever spend at this node; none when absent
    /// (recommended: set one). In TOML, a `[budget.lifetime]` table.
    #[serde(default)]
    pub lifetime: Option<LifetimeCap>,
}

/// The most one researcher may ever spend at a node: it never renews.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifetimeCap {
    /// Total epsilon over the researcher's lifetime at this node.
    pub epsilon: f64,
    /// Total delta over the researcher's lifetime at this node.
    pub delta: f64,
}

/// What one hospital node allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodePolicy {
    /// Format version ([`POLICY_VERSION`]).
    pub version: u32,
    /// Identity key of the node this policy governs.
    pub node: PublicKey,
    /// Increases with every new policy; a policy with a lower or equal serial is refused.
    pub serial: u64,
    /// Credential issuers whose credentials this node accepts.
    pub trusted_issuers: Vec<PublicKey>,
    /// Allowed query kinds, from [`QUERY_KINDS`].
    pub query_kinds: BTreeSet<String>,
    /// Allowed privacy modes.
    pub modes: BTreeSet<Mode>,
    /// Per-researcher budget.
    pub budget: Budget,
    /// Answers about fewer patients (noisy count) are suppressed.
    pub min_cohort: u64,
    /// Data categories queries may read.
    pub categories: BTreeSet<Category>,
    /// When the administrator signed it (unix seconds); informational.
    pub issued_at: i64,
    /// Whether simulated consent (`witmed consent simulate`) may be made and
    /// counted at this node. Only for demonstrations and simulations: real
    /// nodes keep it false, and simulated tokens stop counting at the next
    /// query once a policy without it is installed.
    #[serde(default)]
    pub allow_demonstration_data: bool,
}

impl Versioned for NodePolicy {
    const OBJECT: Object = Object::NodePolicy;
    const DOMAIN: &'static str = POLICY_DOMAIN;
}

/// Version 1 of [`Budget`], frozen as it was signed: no lifetime cap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BudgetV1 {
    pub epsilon: f64,
    pub delta: f64,
    pub window_seconds: i64,
}

/// Version 1 of [`NodePolicy`], frozen as it was signed: no lifetime cap and
/// no `allow_demonstration_data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePolicyV1 {
    pub version: u32,
    pub node: PublicKey,
    pub serial: u64,
    pub trusted_issuers: Vec<PublicKey>,
    pub query_kinds: BTreeSet<String>,
    pub modes: BTreeSet<Mode>,
    pub budget: BudgetV1,
    pub min_cohort: u64,
    pub categories: BTreeSet<Category>,
    pub issued_at: i64,
}

/// The upgrade keeps what the administrator signed: version 1 had no
/// lifetime cap and no simulated consent, so the upgrade has neither.
impl From<NodePolicyV1> for NodePolicy {
    fn from(old: NodePolicyV1) -> NodePolicy {
        NodePolicy {
            version: POLICY_VERSION,
            node: old.node,
            serial: old.serial,
            trusted_issuers: old.trusted_issuers,
            query_kinds: old.query_kinds,
            modes: old.modes,
            budget: Budget {
                epsilon: old.budget.epsilon,
                delta: old.budget.delta,
                window_seconds: old.budget.window_seconds,
                lifetime: None,
            },
            min_cohort: old.min_cohort,
            categories: old.categories,
            issued_at: old.issued_at,
            allow_demonstration_data: false,
        }
    }
}

impl Evolving for NodePolicy {
    const WHAT: &'static str = "node policy";
    const CURRENT: u32 = POLICY_VERSION;
    fn from_version(version: u32, layout: Layout<'_>) -> Result<Self, versioned::Error> {
        match version {
            POLICY_VERSION => layout.read::<NodePolicy>(),
            1 => layout.read::<NodePolicyV1>().map(NodePolicy::from),
            found => Err(versioned::unknown::<Self>(found)),
        }
    }
}

impl NodePolicy {
    /// The policy `witmed node init` proposes: every query kind, mode and
    /// category, a budget of epsilon 10 and delta [`DEFAULT_WINDOW_DELTA`] per
    /// researcher per 30 days, no lifetime cap (set one: see [`Budget`]), and
    /// a minimum cohort of 10. Serial 1; the caller sets `issued_at`.
    pub fn default_for(node: PublicKey, issuers: Vec<PublicKey>) -> NodePolicy {
        NodePolicy {
            version: POLICY_VERSION,
            node,
            serial: 1,
            trusted_issuers: issuers,
            query_kinds: QUERY_KINDS.iter().map(|k| k.to_string()).collect(),
            modes: BTreeSet::from([Mode::Dp, Mode::Encrypted]),
            budget: Budget {
                epsilon: 10.0,
                delta: DEFAULT_WINDOW_DELTA,
                window_seconds: DEFAULT_WINDOW_SECONDS,
                lifetime: None,
            },
            min_cohort: 10,
            categories: Category::ALL.into_iter().collect(),
            issued_at: 0,
            allow_demonstration_data: false,
        }
    }

    /// Signs the policy with the hospital administrator's key.
    pub fn sign(self, hospital_admin_key: &KeyPair) -> Envelope {
        Envelope::seal(POLICY_DOMAIN, &self, hospital_admin_key)
    }

    /// Checks that every value can be enforced.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |msg: String| Err(Error::InvalidPolicy(msg));
        let b = &self.budget;
        if !(b.epsilon.is_finite() && b.epsilon > 0.0) {
            return invalid(format!(
                "budget.epsilon must be finite and > 0, got {}",
                b.epsilon
            ));
        }
        if !(b.delta.is_finite() && (0.0..1.0).contains(&b.delta)) {
            return invalid(format!("budget.delta must be in [0, 1), got {}", b.delta));
        }
        if b.window_seconds <= 0 {
            return invalid(format!(
                "budget.window_seconds must be > 0, got {}",
                b.window_seconds
            ));
        }
        if let Some(cap) = &b.lifetime {
            if !(cap.epsilon.is_finite() && cap.epsilon > 0.0) {
                return invalid(format!(
                    "budget.lifetime.epsilon must be finite and > 0, got {}",
                    cap.epsilon
                ));
            }
            if !(cap.delta.is_finite() && (0.0..1.0).contains(&cap.delta)) {
                return invalid(format!(
                    "budget.lifetime.delta must be in [0, 1), got {}",
                    cap.delta
                ));
            }
        }
        if let Some(kind) = self
            .query_kinds
            .iter()
            .find(|k| !QUERY_KINDS.contains(&k.as_str()))
        {
            return invalid(format!(
                "query kind {kind:?} is unknown; use {}",
                QUERY_KINDS.join(", ")
            ));
        }
        Ok(())
    }

    /// Refuses this policy unless its serial is above that of `current`, the policy in force.
    pub fn check_supersedes(&self, current: &NodePolicy) -> Result<(), Error> {
        if self.serial <= current.serial {
            return Err(Error::StalePolicy {
                serial: self.serial,
                current: current.serial,
            });
        }
        Ok(())
    }
}

/// Opens a signed node policy for the node `node`, accepting it only if the
/// hospital administrator key `hospital_admin` signed it and its values are valid.
///
/// Compare serials with [`NodePolicy::check_supersedes`] before replacing a
/// policy in force.
pub fn load_policy(
    envelope: &Envelope,
    hospital_admin: &PublicKey,
    node: &PublicKey,
) -> Result<NodePolicy, Error> {
    let policy: NodePolicy = signed::open(envelope)?;
    if envelope.signer != *hospital_admin {
        return Err(Error::PolicyNotSignedByHospital {
            signer: envelope.signer,
        });
    }
    check_node(Object::NodePolicy, &policy.node, node)?;
    policy.validate()?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Administrators may review a policy as TOML before signing it.
    #[test]
    fn default_policy_is_valid_and_round_trips_through_toml() {
        let node = PublicKey::from_bytes([3; 32]);
        let policy = NodePolicy::default_for(node, vec![PublicKey::from_bytes([6; 32])]);
        assert_eq!(policy.validate(), Ok(()));
        assert_eq!(policy.budget.window_seconds, 2_592_000);
        let text = toml::to_string(&policy).unwrap();
        assert_eq!(toml::from_str::<NodePolicy>(&text).unwrap(), policy);
    }

    /// The lifetime cap is an optional `[budget.lifetime]` table.
    #[test]
    fn lifetime_cap_round_trips_through_toml_and_is_validated() {
        let node = PublicKey::from_bytes([3; 32]);
        let mut policy = NodePolicy::default_for(node, vec![]);
        policy.budget.lifetime = Some(LifetimeCap {
            epsilon: 50.0,
            delta: 1e-3,
        });
        assert_eq!(policy.validate(), Ok(()));
        let text = toml::to_string(&policy).unwrap();
        assert!(text.contains("[budget.lifetime]"), "{text}");
        assert_eq!(toml::from_str::<NodePolicy>(&text).unwrap(), policy);
        for (epsilon, delta) in [(0.0, 0.0), (f64::NAN, 0.0), (1.0, 1.0), (1.0, -1e-9)] {
            policy.budget.lifetime = Some(LifetimeCap { epsilon, delta });
            assert!(
                matches!(policy.validate(), Err(Error::InvalidPolicy(m)) if m.contains("lifetime")),
                "{epsilon} {delta}"
            );
        }
    }
}
