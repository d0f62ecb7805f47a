//! The exact references against small textbook examples whose numbers each test derives from the definitions.

mod analysis_support;

use analysis_support::close;
use witmed_protocol::analysis::exact::{
    chi_square_independence, kaplan_meier, log_rank, logistic_irls, odds_ratio_woolf, ols, Subject,
};
use witmed_protocol::analysis::stats::{chi_square_upper_tail, normal_two_sided, z_level};

fn subject(time: f64, event: bool, group: usize) -> Subject {
    Subject { time, event, group }
}

/// Six patients: events at 1, 2, 3 and 5, censored at 2 and 4.
fn six() -> Vec<Subject> {
    vec![
        subject(1.0, true, 0),
        subject(2.0, true, 0),
        subject(2.0, false, 0),
        subject(3.0, true, 0),
        subject(4.0, false, 0),
        subject(5.0, true, 0),
    ]
}

#[test]
fn kaplan_meier_steps_by_hand() {
    let steps = kaplan_meier(&six());
    // At risk: 6 at t=1, 5 at t=2 (the censored one at 2 still counts), 3 at t=3, 1 at t=5.
    let by_hand = [
        (1.0, 6.0, 1.0),
        (2.0, 5.0, 1.0),
        (3.0, 3.0, 1.0),
        (5.0, 1.0, 1.0),
    ];
    assert_eq!(steps.len(), by_hand.len());
    let mut s = 1.0;
    let mut greenwood = 0.0;
    for (step, (t, n, d)) in steps.iter().zip(by_hand) {
        s *= 1.0 - d / n;
        if n > d {
            greenwood += d / (n * (n - d));
        }
        assert_eq!((step.time, step.at_risk, step.events), (t, n, d));
        close(step.survival, s, 1e-12, "S");
        close(
            step.greenwood_variance,
            s * s * greenwood,
            1e-12,
            "Greenwood",
        );
    }
    // S(3) = 5/6 * 4/5 * 2/3 = 4/9.
    close(steps[2].survival, 4.0 / 9.0, 1e-12, "S(3)");
    assert_eq!(steps[3].survival, 0.0);
}

#[test]
fn log_rank_of_two_groups_by_hand() {
    // Group 0 dies at 1, 2, 3; group 1 at 4, 5 and one censored at 6.
    let subjects = vec![
        subject(1.0, true, 0),
        subject(2.0, true, 0),
        subject(3.0, true, 0),
        subject(4.0, true, 1),
        subject(5.0, true, 1),
        subject(6.0, false, 1),
    ];
    // Per event time: (n0, n, d0, d), then O - E and the hypergeometric variance.
    let tables = [
        (3.0, 6.0, 1.0, 1.0),
        (2.0, 5.0, 1.0, 1.0),
        (1.0, 4.0, 1.0, 1.0),
        (0.0, 3.0, 0.0, 1.0),
        (0.0, 2.0, 0.0, 1.0),
    ];
    let (mut o_minus_e, mut variance) = (0.0, 0.0);
    for (n0, n, d0, d) in tables {
        o_minus_e += d0 - n0 * d / n;
        variance += d * (n - d) / (n - 1.0) * (n0 / n) * (1.0 - n0 / n);
    }
    let got = log_rank(&subjects, 2).unwrap();
    close(
        got.statistic,
        o_minus_e * o_minus_e / variance,
        1e-12,
        "statistic",
    );
    assert_eq!(got.df, 1);
    close(
        got.p_value,
        normal_two_sided(o_minus_e / variance.sqrt()),
        1e-9,
        "p",
    );
    assert!(log_rank(&subjects, 1).is_none());
}

#[test]
fn chi_square_of_a_two_by_two_is_the_shortcut_formula() {
    let [a, b, c, d]: [f64; 4] = [20.0, 30.0, 10.0, 40.0];
    let n = a + b + c + d;
    let shortcut = n * (a * d - b * c).powi(2) / ((a + b) * (c + d) * (a + c) * (b + d));
    let got = chi_square_independence(&[2, 2], &[a, b, c, d]).unwrap();
    close(got.statistic, shortcut, 1e-12, "statistic");
    assert_eq!(got.df, 1);
    close(got.p_value, chi_square_upper_tail(shortcut, 1), 1e-12, "p");
}

#[test]
fn chi_square_of_larger_tables_from_expected_counts() {
    let counts: [f64; 6] = [12.0, 7.0, 9.0, 3.0, 15.0, 8.0];
    let rows: [f64; 2] = [28.0, 26.0];
    let columns: [f64; 3] = [15.0, 22.0, 17.0];
    let n = 54.0;
    let mut by_hand = 0.0;
    for i in 0..2 {
        for j in 0..3 {
            let expected = rows[i] * columns[j] / n;
            by_hand += (counts[i * 3 + j] - expected).powi(2) / expected;
        }
    }
    let got = chi_square_independence(&[2, 3], &counts).unwrap();
    close(got.statistic, by_hand, 1e-12, "2x3");
    assert_eq!(got.df, 2);

    // Three variables, mutual independence: E = N p_i p_j p_k, df = 8 - 3 - 1.
    let cube: Vec<f64> = (1..=8).map(f64::from).collect();
    let total: f64 = cube.iter().sum();
    let margin = |v: usize, level: usize| -> f64 {
        (0..8usize)
            .filter(|c| (c >> (2 - v)) & 1 == level)
            .map(|c| cube[c])
            .sum::<f64>()
            / total
    };
    let mut by_hand = 0.0;
    for (c, observed) in cube.iter().enumerate() {
        let expected = total * margin(0, c >> 2) * margin(1, (c >> 1) & 1) * margin(2, c & 1);
        by_hand += (observed - expected).powi(2) / expected;
    }
    let got = chi_square_independence(&[2, 2, 2], &cube).unwrap();
    close(got.statistic, by_hand, 1e-12, "2x2x2");
    assert_eq!(got.df, 4);
    assert!(chi_square_independence(&[2, 2], &[0.0; 4]).is_none());
    assert!(chi_square_independence(&[2, 2], &[1.0; 3]).is_none());
}

#[test]
fn woolf_interval_from_its_definition() {
    let (or, (lo, hi)) = odds_ratio_woolf(20.0, 30.0, 10.0, 40.0).unwrap();
    close(or, 20.0 * 40.0 / (30.0 * 10.0), 1e-12, "OR");
    let se = (1.0f64 / 20.0 + 1.0 / 30.0 + 1.0 / 10.0 + 1.0 / 40.0).sqrt();
    close(lo, (or.ln() - z_level() * se).exp(), 1e-12, "lower");
    close(hi, (or.ln() + z_level() * se).exp(), 1e-12, "upper");
    assert!(odds_ratio_woolf(0.0, 1.0, 1.0, 1.0).is_none());
}

#[test]
fn ols_matches_simple_regression_formulas() {
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let y = [2.1, 3.9, 6.2, 7.8, 10.1, 12.2];
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(&y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let rss: f64 = x
        .iter()
        .zip(&y)
        .map(|(a, b)| (b - intercept - slope * a).powi(2))
        .sum();
    let s2 = rss / (n - 2.0);
    let rows: Vec<Vec<f64>> = x.iter().map(|v| vec![*v]).collect();
    let fit = ols(&rows, &y).unwrap();
    close(fit.coefficients[0], intercept, 1e-10, "intercept");
    close(fit.coefficients[1], slope, 1e-10, "slope");
    close(
        fit.standard_errors[1],
        (s2 / sxx).sqrt(),
        1e-10,
        "se(slope)",
    );
    close(
        fit.standard_errors[0],
        (s2 * (1.0 / n + mx * mx / sxx)).sqrt(),
        1e-10,
        "se(intercept)",
    );
    // A constant covariate is collinear with the intercept.
    assert!(ols(&vec![vec![1.0]; 6], &y).is_none());
    let ragged = vec![
        vec![1.0],
        vec![2.0, 3.0],
        vec![],
        vec![4.0],
        vec![5.0],
        vec![6.0],
    ];
    assert!(ols(&ragged, &y).is_none());
    assert!(logistic_irls(&ragged, &[true; 6]).is_none());
}

#[test]
fn logistic_on_one_binary_covariate_is_the_log_odds_ratio() {
    // 2x2: exposed 30 events / 20 non-events, unexposed 15 / 35. With one
    // binary covariate the MLE is saturated: slope = log OR, intercept =
    // log odds among the unexposed, and the slope's SE is Woolf's.
    let mut rows = Vec::new();
    let mut y = Vec::new();
    for (exposed, event, count) in [
        (1.0, true, 30),
        (1.0, false, 20),
        (0.0, true, 15),
        (0.0, false, 35),
    ] {
        for _ in 0..count {
            rows.push(vec![exposed]);
            y.push(event);
        }
    }
    let fit = logistic_irls(&rows, &y).unwrap();
    close(
        fit.coefficients[0],
        (15.0f64 / 35.0).ln(),
        1e-9,
        "intercept",
    );
    close(
        fit.coefficients[1],
        (30.0f64 * 35.0 / (20.0 * 15.0)).ln(),
        1e-9,
        "slope",
    );
    let woolf = (1.0f64 / 30.0 + 1.0 / 20.0 + 1.0 / 15.0 + 1.0 / 35.0).sqrt();
    close(fit.standard_errors[1], woolf, 1e-8, "se");
    // Complete separation has no maximum: refused.
    assert!(logistic_irls(&[vec![0.0], vec![1.0]], &[false, true]).is_none());
}
