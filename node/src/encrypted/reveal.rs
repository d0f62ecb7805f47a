//! The researcher's side of encrypted mode: ask the aggregator, check its total, decrypt it, attach intervals.
//!
//! The total is refused, not misread, when it names another study, holds
//! the wrong number of values, counts a hospital that is not a member or
//! counts one twice, has fewer shares than `min_hospitals`, mixes shares of
//! different noise scales, or decrypts with more noise than honest
//! encryptions and additions can have (a corrupted or forged ciphertext).

use std::collections::BTreeSet;
use std::time::Duration;

use witmed_crypto::fhe::{self, Ciphertext, ClientKey};
use witmed_crypto::KeyPair;
use witmed_protocol::combine::Combined;
use witmed_protocol::encrypted::{gaussian_sum_halfwidth, EncryptedTotal, ENCRYPTED_VERSION};
use witmed_protocol::limbs;
use witmed_protocol::query::{Aggregate, Query};
use witmed_protocol::wire::QueryRequest;

use super::aggregate::expected_values;
use crate::dp::ALPHA;
use crate::net::client;

/// Why an encrypted total was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the aggregator's total {0}; it is not used")]
    Inconsistent(String),
    #[error("the aggregator's total does not decrypt: {0}")]
    Fhe(#[from] fhe::Error),
}

fn inconsistent<T>(msg: impl Into<String>) -> Result<T, Error> {
    Err(Error::Inconsistent(msg.into()))
}

/// Why an encrypted query brought back no usable total.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("the query names study {query}, but the study key given is study {key}")]
    StudyMismatch { query: String, key: String },
    #[error("the aggregator {0:?} is not a member of the directory")]
    UnknownAggregator(String),
    #[error(transparent)]
    Network(#[from] client::Error),
    #[error("aggregator {name}: {label}: {reason}")]
    Aggregator {
        name: String,
        label: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Total(#[from] Error),
}

impl AskError {
    /// Stable code for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            AskError::StudyMismatch { .. } => "study_mismatch",
            AskError::UnknownAggregator(_) => "unknown_aggregator",
            AskError::Network(_) => "network_failed",
            AskError::Aggregator { .. } => "aggregation_failed",
            AskError::Total(_) => "bad_total",
        }
    }
}

/// The researcher's whole encrypted query: send `request` to the aggregator
/// it names, wait at most `timeout`, then check and decrypt the total with
/// the study's `key` (study `study_id`).
pub async fn ask_aggregator(
    researcher: &KeyPair,
    request: &QueryRequest,
    targets: &[client::Target],
    (key, study_id): (&ClientKey, &str),
    timeout: Duration,
) -> Result<(EncryptedTotal, Combined), AskError> {
    let query = &request.query;
    let named = query.privacy.study.as_deref().unwrap_or_default();
    if named != study_id {
        return Err(AskError::StudyMismatch {
            query: named.to_string(),
            key: study_id.to_string(),
        });
    }
    let name = query.privacy.aggregator.as_deref().unwrap_or_default();
    let aggregator = targets
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| AskError::UnknownAggregator(name.to_string()))?;
    let results = client::ask(
        researcher,
        request,
        std::slice::from_ref(aggregator),
        timeout,
    )
    .await?;
    let total = match results.into_iter().next().map(|r| r.status) {
        Some(client::Status::Aggregated(total)) => total,
        other => {
            let other = other.unwrap_or(client::Status::TimedOut);
            return Err(AskError::Aggregator {
                name: name.to_string(),
                label: other.label(),
                reason: other.reason().unwrap_or_default(),
            });
        }
    };
    let members: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let combined = reveal(query, &total, key, study_id, &members)?;
    Ok((total, combined))
}

/// Checks `total` against the query and the directory's `members`, then decrypts it.
pub fn reveal(
    query: &Query,
    total: &EncryptedTotal,
    client: &ClientKey,
    study_id: &str,
    members: &[String],
) -> Result<Combined, Error> {
    if total.version != ENCRYPTED_VERSION {
        return inconsistent(format!(
            "has version {}; this witmed reads version {ENCRYPTED_VERSION}",
            total.version
        ));
    }
    if hex::encode(total.study) != study_id {
        return inconsistent("is encrypted for another study");
    }
    let values = expected_values(query);
    if total.values as usize != values {
        return inconsistent(format!("holds {} values, not {values}", total.values));
    }
    check_included(query, total, members)?;
    let scale = total.included[0].share_scale;
    if total
        .included
        .iter()
        .any(|i| (i.share_scale - scale).abs() > 1e-9 * scale)
    {
        return inconsistent("mixes noise shares of different scales");
    }
    let ciphertext = Ciphertext::from_bytes(&total.ciphertext, values)?;
    let slots = client.decrypt(&ciphertext, total.included.len())?;
    let decrypted = limbs::decode(&slots, super::shares::layout(query).limbs)
        .map_or_else(|| inconsistent("does not recombine from its limbs"), Ok)?;
    let half = gaussian_sum_halfwidth(scale, total.included.len(), ALPHA);
    let interval = |v: f64| (v - half, v + half);
    let as_f64: Vec<f64> = decrypted.iter().map(|v| *v as f64).collect();
    let epsilon_spent_max = total
        .included
        .iter()
        .map(|i| i.epsilon_spent)
        .fold(0.0, f64::max);
    let histogram = matches!(query.aggregate, Aggregate::Histogram { .. });
    Ok(Combined {
        value: (!histogram).then(|| as_f64[0]),
        ci95: (!histogram).then(|| interval(as_f64[0])),
        ci95s: if histogram {
            as_f64.iter().map(|v| interval(*v)).collect()
        } else {
            vec![]
        },
        values: if histogram { as_f64 } else { vec![] },
        epsilon_spent_max,
        nodes: total.included.len(),
        suppressed_nodes: vec![],
    })
}

fn check_included(query: &Query, total: &EncryptedTotal, members: &[String]) -> Result<(), Error> {
    let mut seen = BTreeSet::new();
    for i in &total.included {
        if !members.contains(&i.node) {
            return inconsistent(format!("counts {}, which is not a member", i.node));
        }
        if !seen.insert(i.node.as_str()) {
            return inconsistent(format!("counts {} twice", i.node));
        }
    }
    let min = query.privacy.min_hospitals.unwrap_or(1) as usize;
    if total.included.len() < min {
        return inconsistent(format!(
            "has {} shares, fewer than min_hospitals = {min}",
            total.included.len()
        ));
    }
    if total.included.len() > fhe::params::MAX_CONTRIBUTIONS {
        return inconsistent("has more shares than decode exactly");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use witmed_protocol::encrypted::Included;

    fn count_query(min_hospitals: u32) -> Query {
        Query::from_toml(&format!(
            "version = 1\nid = \"c\"\npurpose = \"HMB\"\naggregate = \"count\"\n[privacy]\n\
             mode = \"encrypted\"\nepsilon = 1.0\naggregator = \"a\"\nstudy = \"{}\"\nmin_hospitals = {min_hospitals}\n",
            "0".repeat(64)
        ))
        .unwrap()
    }

    fn included(node: &str, scale: f64) -> Included {
        Included {
            node: node.into(),
            share_scale: scale,
            epsilon_spent: 1.0,
            delta_spent: 1e-6,
            budget_left: 9.0,
        }
    }

    /// An honest total of shares 10 and 20 from members a and b.
    fn honest() -> (EncryptedTotal, ClientKey, String, Vec<String>) {
        let (client, public) = ClientKey::generate();
        let mut sum = public.encrypt(&[10]).unwrap();
        sum.add_assign(&public.encrypt(&[20]).unwrap()).unwrap();
        let total = EncryptedTotal {
            version: ENCRYPTED_VERSION,
            study: public.study_id(),
            ciphertext: sum.to_bytes(),
            values: 1,
            included: vec![included("a", 3.0), included("b", 3.0)],
            left_out: vec![],
        };
        let study = hex::encode(public.study_id());
        (
            total,
            client,
            study,
            vec!["a".into(), "b".into(), "c".into()],
        )
    }

    #[test]
    fn an_honest_total_decrypts_with_its_interval() {
        let (total, client, study, members) = honest();
        let c = reveal(&count_query(2), &total, &client, &study, &members).unwrap();
        assert_eq!(c.value, Some(30.0));
        let half = gaussian_sum_halfwidth(3.0, 2, ALPHA);
        assert_eq!(c.ci95, Some((30.0 - half, 30.0 + half)));
        assert_eq!(c.nodes, 2);
    }

    #[test]
    fn inconsistent_totals_are_refused_with_the_reason() {
        let (total, client, study, members) = honest();
        let check = |t: &EncryptedTotal, min: u32, needle: &str| {
            let err = reveal(&count_query(min), t, &client, &study, &members)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        };
        let mut t = total.clone();
        t.included[1].node = "mallory".into();
        check(&t, 2, "not a member");
        let mut t = total.clone();
        t.included[1].node = "a".into();
        check(&t, 2, "twice");
        check(&total, 3, "fewer than min_hospitals");
        let mut t = total.clone();
        t.included[1].share_scale = 1.0;
        check(&t, 2, "different scales");
        let mut t = total.clone();
        t.study[0] ^= 1;
        check(&t, 2, "another study");
        let mut t = total.clone();
        t.version = 2;
        check(&t, 2, "version");
        let mut t = total.clone();
        t.values = 2;
        check(&t, 2, "values");
        let mut t = total.clone();
        t.ciphertext.truncate(100);
        check(&t, 2, "does not deserialize");
    }
}
