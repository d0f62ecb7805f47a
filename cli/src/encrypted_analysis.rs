//! `witmed query run` of a survival, table or regression query in encrypted mode: every Newton round through the aggregator, the analysis of the decrypted sums, printed.

use std::time::Duration;

use serde_json::json;
use witmed_crypto::fhe::ClientKey;
use witmed_crypto::{Envelope, KeyPair};
use witmed_net::client;
use witmed_net::reveal::{self, AnalysisRun};
use witmed_protocol::analysis::outcome::Outcome;
use witmed_protocol::encrypted::EncryptedTotal;
use witmed_protocol::query::Query;

use crate::failure::{Failure, Result};
use crate::runtime;

/// Asks every round of `query` through its aggregator, decrypts, analyses and prints.
pub fn run(
    researcher: &KeyPair,
    (query, credential): (&Query, &Envelope),
    targets: &[client::Target],
    study: (&ClientKey, &str),
    timeout: Duration,
    json: bool,
) -> Result<()> {
    // The simulated p-values are reproducible for one query.
    let digest = query.digest();
    let seed = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    let run = runtime::start()?
        .block_on(reveal::run_analysis(
            researcher,
            (query, credential),
            targets,
            study,
            timeout,
            seed,
        ))
        .map_err(|e| Failure::from_layer(e.code(), e))?;
    if json {
        crate::stdout::json(&outcome_json(query, &run));
    } else {
        print_readable(query, &run);
    }
    Ok(())
}

/// Privacy spent at the most charged hospital over every round, (epsilon, delta).
fn spent(totals: &[EncryptedTotal]) -> (f64, f64) {
    let most = |f: fn(&witmed_protocol::encrypted::Included) -> f64| {
        totals
            .iter()
            .map(|t| t.included.iter().map(f).fold(0.0, f64::max))
            .sum::<f64>()
    };
    (most(|i| i.epsilon_spent), most(|i| i.delta_spent))
}

/// The hospitals of the last round: included with the budget left, or left out and why.
fn hospitals(total: Option<&EncryptedTotal>) -> Vec<serde_json::Value> {
    let Some(total) = total else {
        return vec![];
    };
    let included = total.included.iter().map(|i| {
        json!({"name": i.node, "status": "included", "reason": null, "budget_left": i.budget_left})
    });
    let left_out = total.left_out.iter().map(
        |l| json!({"name": l.node, "status": l.status, "reason": l.reason, "budget_left": null}),
    );
    included.chain(left_out).collect()
}

/// What `query run --json` prints for an analysis in encrypted mode.
fn outcome_json(query: &Query, run: &AnalysisRun) -> serde_json::Value {
    let (epsilon, delta) = spent(&run.totals);
    let share_scale = run
        .totals
        .last()
        .and_then(|t| t.included.first())
        .map(|i| i.share_scale);
    json!({
        "query_id": query.id,
        "mode": "encrypted",
        "kind": query.aggregate.kind(),
        "result": run.outcome,
        "queries": run.totals.len(),
        "sums": run.summed.sums,
        "noise_scale": run.summed.noises.first().map(|n| n.scale),
        "hospitals_included": run.summed.nodes,
        "epsilon_spent": epsilon,
        "delta_spent": delta,
        "share_scale": share_scale,
        "hospitals": hospitals(run.totals.last()),
    })
}

fn print_readable(query: &Query, run: &AnalysisRun) {
    let (epsilon, delta) = spent(&run.totals);
    outln!(
        "query {} ({}, encrypted: {} quer{} through aggregator {}, {} hospitals in the total)",
        query.id,
        query.aggregate.kind(),
        run.totals.len(),
        if run.totals.len() == 1 { "y" } else { "ies" },
        query.privacy.aggregator.as_deref().unwrap_or_default(),
        run.summed.nodes
    );
    match &run.outcome {
        Outcome::Survival(s) => {
            for (g, curve) in s.curves.iter().enumerate() {
                outln!("group {g}: bin, at risk, events, survival [95% band]");
                for (i, v) in curve.survival.iter().enumerate() {
                    let (lo, hi) = curve.band.get(i).copied().unwrap_or((f64::NAN, f64::NAN));
                    let at_risk = curve.at_risk.get(i).copied().unwrap_or(f64::NAN);
                    let events = curve.events.get(i).copied().unwrap_or(f64::NAN);
                    outln!("  {i:>3} {at_risk:>9.1} {events:>7.1}  {v:.3} [{lo:.3}, {hi:.3}]");
                }
            }
            if let Some(t) = &s.log_rank {
                outln!(
                    "log-rank: {:.2} on {} df, p = {:.4} (noise-aware)",
                    t.statistic,
                    t.df,
                    t.p_value
                );
            }
        }
        Outcome::Table(t) => {
            outln!("noisy counts (row-major): {:.1?}", t.counts);
            if let Some(c) = &t.chi_square {
                outln!(
                    "chi-square: {:.2} on {} df, p = {:.4} (noise-aware)",
                    c.statistic,
                    c.df,
                    c.p_value
                );
            }
            if let Some(o) = &t.odds_ratio {
                outln!(
                    "odds ratio: {:.3} [{:.3}, {:.3}]",
                    o.estimate,
                    o.ci95.0,
                    o.ci95.1
                );
            }
        }
        Outcome::Regression(fit) => {
            for c in &fit.coefficients {
                outln!(
                    "  {:<20} {:>10.4}  se {:.4}  95% [{:.4}, {:.4}]",
                    c.name,
                    c.estimate,
                    c.standard_error,
                    c.ci95.0,
                    c.ci95.1
                );
            }
        }
    }
    outln!(
        "epsilon spent at each hospital: {epsilon:.4} (delta {delta:e}); no hospital's own share was visible to anyone"
    );
}
