//! The researcher's side of encrypted mode: check the aggregator's total, decrypt it, attach intervals.
//!
//! The total is refused, not misread, when it names another study, holds
//! the wrong number of values, counts a hospital that is not a member or
//! counts one twice, has fewer shares than `min_hospitals`, mixes shares of
//! different noise scales, or decrypts with more noise than honest
//! encryptions and additions can have (a corrupted or forged ciphertext).

use std::collections::BTreeSet;

use witmed_crypto::fhe::{self, Ciphertext, ClientKey};
use witmed_protocol::combine::Combined;
use witmed_protocol::encrypted::{gaussian_sum_halfwidth, EncryptedTotal};
use witmed_protocol::query::{Aggregate, Query};

use super::aggregate::expected_values;
use crate::dp::ALPHA;

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

/// Checks `total` against the query and the directory's `members`, then decrypts it.
pub fn reveal(
    query: &Query,
    total: &EncryptedTotal,
    client: &ClientKey,
    study_id: &str,
    members: &[String],
) -> Result<Combined, Error> {
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
    let decrypted = client.decrypt(&ciphertext, total.included.len())?;
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
