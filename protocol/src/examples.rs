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

/// Kaplan-Meier curves of in-hospital survival by ICU type over the length
/// of stay (censored at discharge), with the log-rank test, in DP mode.
pub fn survival_by_icu_type(id: &str, epsilon: f64) -> String {
    format!(
        r#"version = 2
id = "{id}"
purpose = "HMB"

[aggregate.survival]
time = "length_of_stay_days"
event = "in_hospital_death"
bin_edges = [0.0, 2.0, 4.0, 7.0, 10.0, 14.0, 21.0, 30.0, 60.0]
group = {{ name = "icu_type" }}

[privacy]
mode = "dp"
epsilon = {epsilon:?}
"#
    )
}

/// The 2x2 table of sex by in-hospital death, with the chi-square test and the odds ratio.
pub fn sex_by_death(id: &str, epsilon: f64) -> String {
    format!(
        r#"version = 2
id = "{id}"
purpose = "HMB"

[aggregate.table]
variables = [{{ name = "sex" }}, {{ name = "in_hospital_death" }}]

[privacy]
mode = "dp"
epsilon = {epsilon:?}
"#
    )
}

/// Logistic regression of in-hospital death on age (15-90 in 5 bins of 15
/// years, entered as the bins' midpoints), sex and ICU types 2 to 4 against
/// 1, in one round from a noisy cell table of 5 x 2 x 4 = 40 cells (query
/// version 3; see [`crate::analysis::cells`]). Coarse bins on purpose: at
/// epsilon 1 in encrypted mode (Gaussian shares, about three times DP
/// mode's noise on a one-hot vector) 15 bins of 5 years leave sparse young
/// cells whose noise makes about 3% of fits diverge and the intervals
/// cover in about 93%; 5 bins cover in 97-99%, and move the coefficients
/// from the fit on raw ages by well under a standard error.
pub fn death_on_age_sex_icu(id: &str, epsilon: f64) -> String {
    format!(
        r#"version = 3
id = "{id}"
purpose = "HMB"

[aggregate.logistic]
outcome = "in_hospital_death"
covariates = [
  {{ name = "age", bounds = {{ lower = 15.0, upper = 90.0 }}, bins = 5 }},
  {{ name = "sex" }},
  {{ name = "icu_type=2" }},
  {{ name = "icu_type=3" }},
  {{ name = "icu_type=4" }},
]

[privacy]
mode = "dp"
epsilon = {epsilon:?}
"#
    )
}

/// Logistic regression of in-hospital death on age, sex and ICU type
/// (indicators against coronary care), three Newton rounds at epsilon / 3 each.
pub fn death_on_age_sex_icu_newton(id: &str, epsilon: f64) -> String {
    format!(
        r#"version = 2
id = "{id}"
purpose = "HMB"

[aggregate.regression]
model = "logistic"
outcome = {{ name = "in_hospital_death" }}
covariates = [
  {{ name = "age", bounds = {{ lower = 15.0, upper = 90.0 }} }},
  {{ name = "sex" }},
  {{ name = "icu_type=2" }},
  {{ name = "icu_type=3" }},
  {{ name = "icu_type=4" }},
]
rounds = 3

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

    #[test]
    fn every_analysis_example_parses_and_round_trips() {
        for (text, kind) in [
            (survival_by_icu_type("a", 0.5), "survival"),
            (sex_by_death("a", 0.5), "table"),
            (death_on_age_sex_icu_newton("a", 0.5), "regression"),
            (death_on_age_sex_icu("a", 0.5), "regression"),
        ] {
            let q = Query::from_toml(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(q.aggregate.kind(), kind);
            assert!(q.version >= 2, "{text}");
            assert_eq!(Query::from_wire(&q.to_wire()).unwrap(), q);
            assert_eq!(
                Query::from_toml(&q.to_toml()).unwrap(),
                q,
                "{}",
                q.to_toml()
            );
        }
    }
}
