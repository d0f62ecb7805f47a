//! Ready-made set-ups shared by the demo, the benchmarks and the tests: trusting an issuer, issuing a credential.
//!
//! These do what an operator does with `witmed policy sign/install` and an
//! authority with `witmed credential issue`, through the same code paths,
//! without the round trip through files.

use witmed_crypto::{Envelope, KeyPair, PublicKey, Role};
use witmed_policies::credential::{Credential, CREDENTIAL_VERSION};

use witmed_node::node::{self, Node};

/// Installs a new policy (next serial) trusting `issuer`, with a budget of
/// `epsilon` per window, signed with the hospital key kept in the data dir.
pub fn trust_issuer(
    node: &Node,
    issuer: PublicKey,
    epsilon: f64,
    min_cohort: u64,
    now: i64,
) -> Result<(), node::Error> {
    let hospital = KeyPair::load_role(&node.dir.hospital_key(), Role::Hospital)?;
    let mut policy = node.policy();
    policy.serial += 1;
    if !policy.trusted_issuers.contains(&issuer) {
        policy.trusted_issuers.push(issuer);
    }
    policy.budget.epsilon = epsilon;
    policy.min_cohort = min_cohort;
    policy.issued_at = now;
    node.install_policy(&policy.sign(&hospital).to_text(), now)?;
    Ok(())
}

/// A credential for `researcher`, issued by `authority`, valid for a year.
pub fn credential(
    authority: &KeyPair,
    researcher: PublicKey,
    purposes: &[&str],
    now: i64,
) -> Envelope {
    Credential {
        version: CREDENTIAL_VERSION,
        researcher,
        // The id is the authority's: here one per key, as each simulated researcher has one key.
        researcher_id: format!("sim-{}", &researcher.to_hex()[..16]),
        name: "Simulated Researcher".into(),
        institution: "witmed simulation".into(),
        commercial: false,
        not_for_profit: true,
        project: "simulation".into(),
        purposes: purposes.iter().map(|p| p.to_string()).collect(),
        issued_at: now - 60,
        expires: now + 365 * 86_400,
    }
    .sign(authority)
}
