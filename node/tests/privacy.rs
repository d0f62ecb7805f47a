//! Empirical privacy: answers on data sets differing by one patient stay within e^epsilon of each other.

use std::collections::HashMap;

use witmed_node::dp::Plan;
use witmed_protocol::query::Query;

fn count_plan(epsilon: f64) -> Plan {
    let q = Query::from_toml(&witmed_protocol::examples::count("p", "HMB", epsilon)).unwrap();
    Plan::new(&q).unwrap()
}

fn sample(plan: &Plan, patients: usize, n: usize) -> HashMap<i64, u32> {
    let data = vec![0.0; patients];
    let mut hist = HashMap::new();
    for _ in 0..n {
        let v = plan.release(&data, 0).unwrap().value.unwrap() as i64;
        *hist.entry(v).or_default() += 1;
    }
    hist
}

/// Largest likelihood ratio between the two output distributions over
/// outputs seen often enough in both to estimate it.
fn max_ratio(a: &HashMap<i64, u32>, b: &HashMap<i64, u32>, min_seen: u32) -> f64 {
    a.iter()
        .filter_map(|(v, &ca)| {
            let cb = *b.get(v)?;
            (ca >= min_seen && cb >= min_seen)
                .then(|| (ca as f64 / cb as f64).max(cb as f64 / ca as f64))
        })
        .fold(1.0, f64::max)
}

#[test]
fn neighbouring_cohorts_give_count_distributions_within_e_to_the_epsilon() {
    let epsilon = 1.0;
    let plan = count_plan(epsilon);
    assert!(
        (plan.epsilon() - epsilon).abs() < 1e-9,
        "charged {} for epsilon {epsilon}",
        plan.epsilon()
    );
    let n = 200_000;
    let with = sample(&plan, 101, n);
    let without = sample(&plan, 100, n);
    let ratio = max_ratio(&with, &without, 2_000);
    let bound = f64::exp(epsilon);
    assert!(
        ratio <= bound * 1.15,
        "estimated likelihood ratio {ratio:.3} exceeds e^epsilon = {bound:.3}"
    );
    // The discrete Laplace mechanism attains the bound: a test that saw
    // far smaller ratios would be measuring nothing.
    assert!(
        ratio >= bound * 0.85,
        "estimated ratio {ratio:.3} is far below e^epsilon = {bound:.3}"
    );
}

#[test]
fn a_smaller_epsilon_gives_a_smaller_ratio() {
    let plan = count_plan(0.25);
    let n = 200_000;
    let ratio = max_ratio(&sample(&plan, 51, n), &sample(&plan, 50, n), 2_000);
    assert!(ratio <= f64::exp(0.25) * 1.1, "ratio {ratio:.3}");
}
