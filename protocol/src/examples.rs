//! Example queries in TOML, one copy shared by unit tests, integration tests, benchmarks and the fuzz seeds.
//!
//! They are plain text as a researcher writes it, so each caller parses
//! them the way it parses any query ([`crate::query::Query::from_toml`] or
//! the CLI). Variants change a line with `str::replace` on the text.

/// Counts every patient a purpose may use, in DP mode.
pub fn count(id: &str, purpose: &str, epsilon: f64) -> String {
    format!(
        "version = 1\nid = \"{id}\"\npurpose = \"{purpose}\"\naggregate = \"count\"\n\
         [privacy]\nmode = \"dp\"\nepsilon = {epsilon:?}\n"
    )
}

/// Counts the patients aged 65 or more, in DP mode.
pub fn count_over_65(id: &str, epsilon: f64) -> String {
    format!(
        "version = 1\nid = \"{id}\"\npurpose = \"HMB\"\naggregate = \"count\"\n\
         [cohort]\nage_min = 65\n[privacy]\nmode = \"dp\"\nepsilon = {epsilon:?}\n"
    )
}

/// README's example: the mean heart rate (each patient's mean of LOINC
/// 8867-4, clamped to 30..200) of patients aged 65 or more, in DP mode.
pub fn mean_heart_rate_over_65(id: &str, purpose: &str, epsilon: f64) -> String {
    format!(
        r#"version = 1
id = "{id}"
purpose = "{purpose}"
aggregate = "mean"

[cohort]
age_min = 65

[feature.observation]
code = "8867-4"
reduce = "mean"

[bounds]
lower = 30.0
upper = 200.0

[privacy]
mode = "dp"
epsilon = {epsilon:?}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{Aggregate, Query};

    #[test]
    fn every_example_parses_with_its_id_and_epsilon() {
        for (text, aggregate) in [
            (count("a", "HMB", 0.5), Aggregate::Count),
            (count_over_65("a", 0.5), Aggregate::Count),
            (mean_heart_rate_over_65("a", "HMB", 0.5), Aggregate::Mean),
        ] {
            let q = Query::from_toml(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((q.id.as_str(), q.aggregate), ("a", aggregate));
            assert!(text.contains("epsilon = 0.5"), "{text}");
        }
    }
}
