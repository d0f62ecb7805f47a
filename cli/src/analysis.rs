//! `witmed query` for survival, table and regression queries: ask (every Newton round of a logistic regression), add the noisy vectors, print tables, `--json` or an SVG chart.
//!
//! A logistic regression with `rounds = R` is R queries, asked one after the
//! other: round r has id `ID.round-r`, epsilon `epsilon / R` (so the rounds
//! together spend the query's epsilon at each hospital, by sequential
//! composition) and the coefficients the previous round's Newton step gave.

use std::path::Path;

use serde_json::json;
use witmed_protocol::analysis::outcome::{self, Outcome, Summed};
use witmed_protocol::analysis::query::{Analysis, Model, Round};
use witmed_protocol::analysis::regression::Fit;
use witmed_protocol::analysis::survival::Survival;
use witmed_protocol::analysis::table::Table;
use witmed_protocol::answer::Answer;
use witmed_protocol::combine::Part;
use witmed_protocol::query::{Aggregate, Query};

use crate::code::Code;
use crate::failure::{Failure, Result};

/// What the asking step returns for one query: each hospital's answer by name.
pub type Answers = Vec<(String, Answer)>;

/// The result of an analysis query and what it cost.
struct Done {
    outcome: Outcome,
    hospitals: usize,
    suppressed: Vec<String>,
    epsilon_spent: f64,
    rounds: Vec<String>,
}

/// Runs `query` (every round of a logistic regression) through `ask`, then prints it.
pub fn run(
    query: &Query,
    ask: &mut dyn FnMut(&Query) -> Result<Answers>,
    json: bool,
    svg: Option<&Path>,
) -> Result<()> {
    let done = compute(query, ask)?;
    if let Some(path) = svg {
        crate::files::write_new(path, &chart(query, &done.outcome)?)?;
    }
    if json {
        print_json(query, &done);
    } else {
        print_readable(query, &done);
    }
    Ok(())
}

/// Runs `query` (every round) through `ask` and returns the result without printing (for benchmarks).
pub fn outcome_of(
    query: &Query,
    ask: &mut dyn FnMut(&Query) -> Result<Answers>,
) -> Result<Outcome> {
    compute(query, ask).map(|done| done.outcome)
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure::new(Code::CombineFailed, e.to_string())
}

fn summed(query: &Query, answers: &Answers) -> Result<Summed> {
    let analysis = query
        .aggregate
        .analysis()
        .ok_or_else(|| failed("not an analysis query"))?;
    if answers.is_empty() {
        return Err(Failure::new(
            Code::NoAnswers,
            "no hospital answered; see the reasons above",
        ));
    }
    let parts: Vec<Part<'_>> = answers
        .iter()
        .map(|(node, a)| Part {
            node,
            released: &a.released,
        })
        .collect();
    outcome::add_up(analysis.len(), &parts).map_err(failed)
}

/// A seed for the simulated p-values, from the query's digest: one query, one result.
fn seed(query: &Query) -> u64 {
    let digest = query.digest();
    u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
}

fn compute(query: &Query, ask: &mut dyn FnMut(&Query) -> Result<Answers>) -> Result<Done> {
    if let Aggregate::Regression(r) = &query.aggregate {
        if r.model == Model::Logistic {
            return logistic(query, ask);
        }
    }
    let analysis = query
        .aggregate
        .analysis()
        .ok_or_else(|| failed("not an analysis query"))?;
    let answers = ask(query)?;
    let sums = summed(query, &answers)?;
    let outcome = outcome::analyse(&analysis, &sums, seed(query)).map_err(failed)?;
    Ok(Done {
        outcome,
        hospitals: sums.nodes,
        suppressed: sums.suppressed_nodes,
        epsilon_spent: sums.epsilon_spent_max,
        rounds: vec![query.id.clone()],
    })
}

fn logistic(query: &Query, ask: &mut dyn FnMut(&Query) -> Result<Answers>) -> Result<Done> {
    let Aggregate::Regression(regression) = &query.aggregate else {
        return Err(failed("not a regression"));
    };
    let rounds = regression.rounds();
    let mut at = vec![0.0; regression.covariates.len() + 1];
    let mut last = None;
    let mut ids = Vec::new();
    let mut epsilon_spent = 0.0;
    for number in 1..=rounds {
        let mut round = query.clone();
        round.id = format!("{}.round-{number}", query.id);
        round.privacy.epsilon = query.privacy.epsilon / f64::from(rounds);
        if let Aggregate::Regression(r) = &mut round.aggregate {
            r.round = Some(Round {
                number,
                at: at.clone(),
            });
        }
        round
            .validate()
            .map_err(|e| Failure::new(Code::BadQuery, e.to_string()))?;
        let answers = ask(&round)?;
        let sums = summed(&round, &answers)?;
        let analysis: Analysis<'_> = round
            .aggregate
            .analysis()
            .ok_or_else(|| failed("not an analysis"))?;
        let step = outcome::logistic_step(&analysis, &sums).map_err(failed)?;
        at = step.next_scaled;
        epsilon_spent += sums.epsilon_spent_max;
        ids.push(round.id.clone());
        last = Some((step.fit, sums.nodes, sums.suppressed_nodes));
    }
    let (fit, hospitals, suppressed) = last.ok_or_else(|| failed("no Newton round ran"))?;
    Ok(Done {
        outcome: Outcome::Regression(fit),
        hospitals,
        suppressed,
        epsilon_spent,
        rounds: ids,
    })
}

fn print_json(query: &Query, done: &Done) {
    crate::stdout::json(&json!({
        "query_id": query.id,
        "kind": query.aggregate.kind(),
        "mode": query.privacy.mode.to_string(),
        "queries": done.rounds,
        "hospitals_combined": done.hospitals,
        "hospitals_suppressed": done.suppressed,
        "epsilon_spent": done.epsilon_spent,
        "labels": labels(query),
        "result": done.outcome,
    }));
}

/// Group labels of a survival query, or `intercept` and covariate names of a regression.
fn labels(query: &Query) -> Vec<String> {
    match &query.aggregate {
        Aggregate::Survival(q) => q.group_labels(),
        Aggregate::Table(q) => q.variables.iter().flat_map(|v| v.labels()).collect(),
        Aggregate::Regression(q) => std::iter::once("intercept".to_string())
            .chain(q.covariates.iter().map(|c| c.name.clone()))
            .collect(),
        Aggregate::Logistic(q) => std::iter::once("intercept".to_string())
            .chain(q.covariates.iter().map(|c| c.name.clone()))
            .collect(),
        _ => vec![],
    }
}

fn print_readable(query: &Query, done: &Done) {
    outln!(
        "query {} ({}, epsilon {} per hospital) combined over {} hospitals{}",
        query.id,
        query.aggregate.kind(),
        query.privacy.epsilon,
        done.hospitals,
        if done.suppressed.is_empty() {
            String::new()
        } else {
            format!(
                " ({} suppressed: {})",
                done.suppressed.len(),
                done.suppressed.join(", ")
            )
        }
    );
    match (&done.outcome, &query.aggregate) {
        (Outcome::Survival(s), Aggregate::Survival(q)) => {
            print_survival(s, &q.bin_edges, &q.group_labels())
        }
        (Outcome::Table(t), Aggregate::Table(q)) => print_table(t, &q.variables),
        (Outcome::Regression(fit), _) => print_fit(fit),
        _ => {}
    }
    outln!(
        "epsilon spent at each hospital: {:.4} (over {} quer{})",
        done.epsilon_spent,
        done.rounds.len(),
        if done.rounds.len() == 1 { "y" } else { "ies" }
    );
}

fn print_survival(s: &Survival, edges: &[f64], groups: &[String]) {
    for (curve, label) in s.curves.iter().zip(groups) {
        outln!("{label}:");
        outln!(
            "  {:<14} {:>9} {:>8} {:>9}   95% band",
            "time",
            "at risk",
            "events",
            "survival"
        );
        for (i, w) in edges.windows(2).enumerate() {
            let at = |v: &[f64]| v.get(i).copied().unwrap_or(f64::NAN);
            let (lo, hi) = curve.band.get(i).copied().unwrap_or((f64::NAN, f64::NAN));
            outln!(
                "  [{:>5}, {:>5}) {:>9.1} {:>8.1} {:>9.4}   [{lo:.4}, {hi:.4}]",
                w[0],
                w[1],
                at(&curve.at_risk),
                at(&curve.events),
                at(&curve.survival)
            );
        }
    }
    if let Some(test) = &s.log_rank {
        outln!(
            "log-rank: statistic {:.3} (noise-adjusted {:.3}), df {}, p = {:.4} (accounts for the noise)",
            test.statistic,
            test.noise_adjusted_statistic,
            test.df,
            test.p_value
        );
    }
}

fn print_table(t: &Table, variables: &[witmed_protocol::analysis::query::Factor]) {
    let levels: Vec<Vec<String>> = variables.iter().map(|v| v.labels()).collect();
    for (cell, count) in t.counts.iter().enumerate() {
        let mut rest = cell;
        let mut names = Vec::new();
        for labels in levels.iter().rev() {
            let n = labels.len().max(1);
            names.push(labels.get(rest % n).cloned().unwrap_or_default());
            rest /= n;
        }
        names.reverse();
        outln!("  {:<48} {count:>10.1}", names.join(", "));
    }
    if let Some(c) = &t.chi_square {
        outln!(
            "chi-square of independence: {:.3}, df {}, p = {:.4} (accounts for the noise)",
            c.statistic,
            c.df,
            c.p_value
        );
    }
    if let Some(or) = &t.odds_ratio {
        outln!(
            "odds ratio: {:.3}   95% interval [{:.3}, {:.3}]",
            or.estimate,
            or.ci95.0,
            or.ci95.1
        );
    }
}

fn print_fit(fit: &Fit) {
    outln!(
        "  {:<24} {:>11} {:>10}   95% interval",
        "coefficient",
        "estimate",
        "std error"
    );
    for c in &fit.coefficients {
        outln!(
            "  {:<24} {:>11.5} {:>10.5}   [{:.5}, {:.5}]",
            c.name,
            c.estimate,
            c.standard_error,
            c.ci95.0,
            c.ci95.1
        );
    }
    if let Some(n) = fit.patients {
        outln!("noisy number of patients: {n:.1}");
    }
}

/// A small SVG: survival curves with their bands, or a coefficient plot.
fn chart(query: &Query, outcome: &Outcome) -> Result<String> {
    match (outcome, &query.aggregate) {
        (Outcome::Survival(s), Aggregate::Survival(q)) => Ok(survival_svg(s, &q.bin_edges, &q.group_labels())),
        (Outcome::Regression(fit), _) => Ok(coefficient_svg(fit)),
        _ => Err(Failure::new(
            Code::BadQuery,
            "--svg draws survival curves and regression coefficients; a table has no chart, leave --svg out",
        )),
    }
}

const COLOURS: [&str; 8] = [
    "#1b6ca8", "#d1495b", "#2e933c", "#edae49", "#6a4c93", "#00798c", "#8d6a9f", "#30343f",
];
const W: f64 = 640.0;
const H: f64 = 400.0;
const PAD: f64 = 50.0;

fn survival_svg(s: &Survival, edges: &[f64], groups: &[String]) -> String {
    let (t0, t1) = (
        edges.first().copied().unwrap_or(0.0),
        edges.last().copied().unwrap_or(1.0),
    );
    let x = |t: f64| PAD + (t - t0) / (t1 - t0).max(f64::MIN_POSITIVE) * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD - v.clamp(0.0, 1.0) * (H - 2.0 * PAD);
    let mut body = String::new();
    for (g, (curve, label)) in s.curves.iter().zip(groups).enumerate() {
        let colour = COLOURS[g % COLOURS.len()];
        let (mut upper, mut lower, mut line) = (
            Vec::new(),
            Vec::new(),
            vec![format!("{:.1},{:.1}", x(t0), y(1.0))],
        );
        let mut previous = 1.0;
        for (i, w) in edges.windows(2).enumerate() {
            let s_i = curve.survival.get(i).copied().unwrap_or(previous);
            let (lo, hi) = curve.band.get(i).copied().unwrap_or((s_i, s_i));
            line.push(format!(
                "{:.1},{:.1} {:.1},{:.1}",
                x(w[0]),
                y(previous),
                x(w[0]),
                y(s_i)
            ));
            line.push(format!("{:.1},{:.1}", x(w[1]), y(s_i)));
            upper.push(format!(
                "{:.1},{:.1} {:.1},{:.1}",
                x(w[0]),
                y(hi),
                x(w[1]),
                y(hi)
            ));
            lower.push(format!(
                "{:.1},{:.1} {:.1},{:.1}",
                x(w[1]),
                y(lo),
                x(w[0]),
                y(lo)
            ));
            previous = s_i;
        }
        lower.reverse();
        body.push_str(&format!(
            "<polygon points=\"{} {}\" fill=\"{colour}\" fill-opacity=\"0.18\" stroke=\"none\"/>\n<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\" font-size=\"12\">{}</text>\n",
            upper.join(" "),
            lower.join(" "),
            line.join(" "),
            W - PAD - 150.0,
            PAD + 16.0 * g as f64,
            escape(label)
        ));
    }
    frame(
        &body,
        &format!("time ({t0} to {t1})"),
        "survival (95% band: sampling and noise)",
    )
}

fn coefficient_svg(fit: &Fit) -> String {
    let rows = fit.coefficients.len().max(1) as f64;
    let (lo, hi) = fit
        .coefficients
        .iter()
        .fold((0.0_f64, 0.0_f64), |(lo, hi), c| {
            (lo.min(c.ci95.0), hi.max(c.ci95.1))
        });
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let x = |v: f64| PAD + 120.0 + (v - lo) / span * (W - 2.0 * PAD - 120.0);
    let mut body = format!(
        "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#999\" stroke-dasharray=\"4\"/>\n",
        x(0.0),
        PAD,
        H - PAD
    );
    for (i, c) in fit.coefficients.iter().enumerate() {
        let y = PAD + (i as f64 + 0.5) * (H - 2.0 * PAD) / rows;
        body.push_str(&format!(
            "<text x=\"{PAD}\" y=\"{:.1}\" font-size=\"12\">{}</text>\n<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#1b6ca8\" stroke-width=\"2\"/>\n<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"#1b6ca8\"/>\n",
            y + 4.0,
            escape(&c.name),
            x(c.ci95.0),
            x(c.ci95.1),
            x(c.estimate)
        ));
    }
    frame(
        &body,
        &format!("coefficient and 95% interval ({lo:.3} to {hi:.3})"),
        "",
    )
}

fn frame(body: &str, x_label: &str, y_label: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\">\n<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n<line x1=\"{PAD}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/>\n<line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{0}\" stroke=\"black\"/>\n<text x=\"{PAD}\" y=\"{2}\" font-size=\"12\">{3}</text>\n<text x=\"4\" y=\"{4}\" font-size=\"12\">{5}</text>\n{body}</svg>\n",
        H - PAD,
        W - PAD,
        H - 15.0,
        escape(x_label),
        PAD - 20.0,
        escape(y_label)
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
