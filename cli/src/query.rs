//! `witmed query`: a researcher's query, asked of one node's store (`local`) or of every member over libp2p (`run`), DP or encrypted.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;
use witmed_crypto::{Envelope, KeyPair, Role};
use witmed_net::client::{self, HospitalResult, Status};
use witmed_net::reveal;
use witmed_node::encrypted::study;
use witmed_node::{engine, unix_now};
use witmed_protocol::answer::Answer;
use witmed_protocol::combine;
use witmed_protocol::encrypted::EncryptedTotal;
use witmed_protocol::query::Query;
use witmed_protocol::vocab::Mode;
use witmed_protocol::wire::QueryRequest;

use crate::args::{parse_duration, DataDirArg};
use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::files::read_text;
use crate::researcher::{self, ResearcherArgs};
use crate::{keys, local_node, runtime};

#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Ask one node's store directly (the node must not be running).
    Local(LocalQueryArgs),
    /// Ask every hospital in the consortium directory over libp2p and combine the answers.
    Run(RunQueryArgs),
}

#[derive(Debug, Args)]
pub struct LocalQueryArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The researcher's key file.
    #[arg(long)]
    pub key: PathBuf,
    /// The researcher's credential file.
    #[arg(long)]
    pub credential: PathBuf,
    /// The query, in TOML.
    #[arg(long)]
    pub query: PathBuf,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Survival and regression queries: also draw the curves with their bands, or the coefficients, into this new SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunQueryArgs {
    #[command(flatten)]
    pub researcher: ResearcherArgs,
    /// The query, in TOML.
    #[arg(long)]
    pub query: PathBuf,
    /// Encrypted mode: the study directory whose client key decrypts the total.
    #[arg(long)]
    pub study: Option<PathBuf>,
    /// Give up on hospitals that have not answered by then (e.g. 10s, 1500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Survival and regression queries: also draw the curves with their bands, or the coefficients, into this new SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// Runs one `query` subcommand.
pub fn run(command: QueryCommand) -> Result<()> {
    match command {
        QueryCommand::Local(args) => local(args),
        QueryCommand::Run(args) => federated(args),
    }
}

/// The query in `path`.
fn read_query(path: &std::path::Path) -> Result<Query> {
    let text = read_text(path, witmed_protocol::query::MAX_QUERY_BYTES)?;
    Query::from_toml(&text)
        .map_err(|e| Failure::new(Code::BadQuery, format!("{}: {e}", path.display())))
}

/// `query local`: one node's store, opened directly.
fn local(args: LocalQueryArgs) -> Result<()> {
    let researcher = keys::load(&args.key, Role::Researcher)?;
    let text = read_text(&args.credential, witmed_policies::MAX_SIGNED_BYTES)?;
    let credential: Envelope =
        witmed_policies::parse_signed(&text).map_err(|e| Failure::from_layer(e.error_code(), e))?;
    let query = read_query(&args.query)?;
    let node = local_node::open(&args.dir.data_dir)?;
    if query.aggregate.analysis().is_some() {
        let mut ask = |q: &Query| -> Result<crate::analysis::Answers> {
            let answer = engine::answer(&node, q, &researcher.public(), &credential, unix_now())
                .map_err(|e| Failure::from_layer(e.code(), e))?;
            Ok(vec![(node.config.name.clone(), answer)])
        };
        return crate::analysis::run(&query, &mut ask, args.json, args.svg.as_deref());
    }
    let answer = engine::answer(&node, &query, &researcher.public(), &credential, unix_now())
        .map_err(|e| Failure::from_layer(e.code(), e))?;
    print_answer(&query, &answer, args.json);
    Ok(())
}

/// `query run`: every member of the directory, over libp2p.
fn federated(args: RunQueryArgs) -> Result<()> {
    let (researcher, credential, targets) = researcher::session(&args.researcher)?;
    let query = read_query(&args.query)?;
    let request = client::request_for(query.clone(), &credential, unix_now())
        .map_err(|e| Failure::new(Code::RandomFailed, e))?;
    if query.privacy.mode == Mode::Encrypted {
        return encrypted(&args, &researcher, (&credential, &request), &targets);
    }
    if query.aggregate.analysis().is_some() {
        let runtime = runtime::start()?;
        let mut ask = |q: &Query| -> Result<crate::analysis::Answers> {
            let request = client::request_for(q.clone(), &credential, unix_now())
                .map_err(|e| Failure::new(Code::RandomFailed, e))?;
            let results = runtime
                .block_on(client::ask(&researcher, &request, &targets, args.timeout))
                .map_err(|e| Failure::new(Code::NetworkFailed, e))?;
            for r in &results {
                if !matches!(r.status, Status::Answered(_)) {
                    eprintln!(
                        "{} {}: {} {}",
                        q.id,
                        r.name,
                        r.status.label(),
                        r.status.reason().unwrap_or_default()
                    );
                }
            }
            Ok(client::answered(&results)
                .into_iter()
                .map(|(name, a)| (name.to_string(), a.clone()))
                .collect())
        };
        return crate::analysis::run(&query, &mut ask, args.json, args.svg.as_deref());
    }
    let results = runtime::start()?
        .block_on(client::ask(&researcher, &request, &targets, args.timeout))
        .map_err(|e| Failure::new(Code::NetworkFailed, e))?;
    print_federated(&query, &results, args.json)
}

/// Encrypted mode: ask the aggregator, check and decrypt its total, print it.
fn encrypted(
    args: &RunQueryArgs,
    researcher: &KeyPair,
    (credential, request): (&Envelope, &QueryRequest),
    targets: &[client::Target],
) -> Result<()> {
    let query = &request.query;
    require_member_aggregator(query, targets)?;
    let study_dir = args.study.as_deref().ok_or_else(|| {
        Failure::new(
            Code::MissingStudy,
            "encrypted mode needs --study DIR: the study's client key decrypts the total",
        )
    })?;
    let (info, client_key) =
        study::load_client(study_dir).map_err(|e| Failure::from_layer(e.code(), e))?;
    if query.aggregate.analysis().is_some() {
        return crate::encrypted_analysis::run(
            researcher,
            (query, credential),
            targets,
            (&client_key, &info.id),
            args.timeout,
            args.json,
        );
    }
    let (total, combined) = runtime::start()?
        .block_on(reveal::ask_aggregator(
            researcher,
            request,
            targets,
            (&client_key, &info.id),
            args.timeout,
        ))
        .map_err(|e| Failure::from_layer(e.code(), e))?;
    print_encrypted(query, &total, &combined, args.json);
    Ok(())
}

/// The aggregator a query names must be a member: say which names would do.
fn require_member_aggregator(query: &Query, targets: &[client::Target]) -> Result<()> {
    let named = query.privacy.aggregator.as_deref().unwrap_or_default();
    if targets.iter().any(|t| t.name == named) {
        return Ok(());
    }
    let members: Vec<String> = targets.iter().map(|t| format!("{:?}", t.name)).collect();
    Err(Failure::new(
        Code::UnknownAggregator,
        format!(
            "the query's aggregator {named:?} is not a member of the directory; \
             set [privacy] aggregator to one of: {} (names as `consortium show` lists them)",
            members.join(", ")
        ),
    ))
}

/// The JSON form of an answer, as `query local --json` prints it.
fn answer_json(a: &Answer) -> serde_json::Value {
    let r = &a.released;
    let noise_scale: Vec<f64> = r.components.iter().map(|c| c.noise_scale).collect();
    json!({
        "query_id": a.query_id,
        "node": a.node,
        "value": r.value,
        "values": r.values,
        "ci95": r.ci95.map(|(lo, hi)| vec![lo, hi]),
        "ci95s": r.ci95s.iter().map(|(lo, hi)| vec![*lo, *hi]).collect::<Vec<_>>(),
        "noise_scale": noise_scale.first().copied(),
        "noise_scales": noise_scale,
        "components": r.components,
        "epsilon_spent": r.epsilon_spent,
        "budget_left": a.budget_left,
        "suppressed": r.suppressed,
        "answered_at": a.answered_at,
    })
}

/// `query local`: one node's released answer, its noise and the budget left.
fn print_answer(query: &Query, a: &Answer, json: bool) {
    if json {
        return crate::stdout::json(&answer_json(a));
    }
    let r = &a.released;
    outln!("query {} at {}", a.query_id, a.node);
    if r.suppressed {
        outln!("SUPPRESSED: the cohort is smaller than the node's minimum; nothing is released");
    }
    if let (Some(v), Some((lo, hi))) = (r.value, r.ci95) {
        outln!("answer:  {v:.3}   95% interval [{lo:.3}, {hi:.3}]");
    }
    let labels = crate::labels::entries(query, r.values.len());
    for (label, (v, (lo, hi))) in labels.iter().zip(r.values.iter().zip(&r.ci95s)) {
        outln!("  {label:<16} {v:.3}   95% interval [{lo:.3}, {hi:.3}]");
    }
    for c in &r.components {
        outln!(
            "  noise: {} ~ {:?}(scale {:.4})",
            c.name,
            c.mechanism,
            c.noise_scale
        );
    }
    outln!(
        "epsilon spent: {:.4}   budget left: {:.4} (as of the first answer, {})",
        r.epsilon_spent,
        a.budget_left,
        crate::labels::utc(a.answered_at)
    );
}

/// Prints a decrypted encrypted-mode total and who is in it.
fn print_encrypted(
    query: &Query,
    total: &EncryptedTotal,
    combined: &combine::Combined,
    json: bool,
) {
    if json {
        return print_outcome(&encrypted_outcome(query, total, combined));
    }
    outln!(
        "query {} ({}, encrypted: epsilon {} for the total, aggregated by {})",
        query.id,
        query.aggregate.kind(),
        query.privacy.epsilon,
        query.privacy.aggregator.as_deref().unwrap_or_default()
    );
    for i in &total.included {
        outln!(
            "  {:<20} included     budget left {:.3}",
            i.node,
            i.budget_left
        );
    }
    for l in &total.left_out {
        outln!("  {:<20} {:<12} {}", l.node, l.status, l.reason);
    }
    if let (Some(v), Some((lo, hi))) = (combined.value, combined.ci95) {
        outln!(
            "encrypted total over {} hospitals: {v:.0}   95% interval [{lo:.1}, {hi:.1}]",
            combined.nodes
        );
    }
    let labels = crate::labels::entries(query, combined.values.len());
    for (label, (v, (lo, hi))) in labels
        .iter()
        .zip(combined.values.iter().zip(&combined.ci95s))
    {
        outln!("  {label:<16} {v:.0}   95% interval [{lo:.1}, {hi:.1}]");
    }
    outln!(
        "epsilon spent at each hospital: {:.4} (delta {:e}); no hospital's own share was visible to anyone",
        combined.epsilon_spent_max,
        query.privacy.delta_or_default()
    );
}

/// Combines the answered results and prints them.
fn print_federated(query: &Query, results: &[HospitalResult], json: bool) -> Result<()> {
    let answers = client::answered(results);
    let combined = client::combine_answered(query, results)
        .map_err(|e| Failure::new(Code::CombineFailed, e))?;
    if json {
        print_outcome(&federated_outcome(query, results, combined.as_ref()));
    } else {
        print_table(query, results, combined.as_ref());
    }
    if answers.is_empty() {
        return Err(Failure::new(
            Code::NoAnswers,
            "no hospital answered; see the reasons above",
        ));
    }
    Ok(())
}

/// What `query run --json` prints, one shape for DP and encrypted mode (documented in README).
#[derive(Debug, Serialize)]
struct Outcome {
    query_id: String,
    /// `dp` or `encrypted`.
    mode: &'static str,
    value: Option<f64>,
    ci95: Option<[f64; 2]>,
    values: Vec<f64>,
    ci95s: Vec<[f64; 2]>,
    /// The most any one hospital spent of the researcher's budget.
    epsilon_spent: Option<f64>,
    /// Encrypted mode only: the delta each hospital spent.
    delta_spent: Option<f64>,
    /// Encrypted mode only: the noise scale of each share.
    share_scale: Option<f64>,
    /// Hospitals that answered, suppressed ones included (they answered and were charged).
    hospitals_answered: usize,
    /// Hospitals that answered but released nothing: their cohort was too small.
    hospitals_suppressed: usize,
    hospitals: Vec<HospitalOutcome>,
}

/// One hospital's part in a query's outcome.
#[derive(Debug, Serialize)]
struct HospitalOutcome {
    name: String,
    /// `answered`, `suppressed` (DP), `included` (encrypted), or why it is left out:
    /// `refused`, `unreachable`, `timed out`, `invalid`, `busy`.
    status: String,
    reason: Option<String>,
    /// DP only: this hospital's released value (no hospital's own value exists in encrypted mode).
    value: Option<f64>,
    values: Vec<f64>,
    /// The researcher's budget left at this hospital after the query.
    budget_left: Option<f64>,
    /// DP only: when the hospital first answered this query id (ISO 8601 UTC);
    /// a replayed id returns that first answer, and `budget_left` as it was then.
    answered_at: Option<String>,
    suppressed: bool,
}

impl HospitalOutcome {
    fn left_out(name: &str, status: &str, reason: Option<String>) -> HospitalOutcome {
        HospitalOutcome {
            name: name.to_owned(),
            status: status.to_owned(),
            reason,
            value: None,
            values: Vec::new(),
            budget_left: None,
            answered_at: None,
            suppressed: false,
        }
    }
}

fn interval(ci: (f64, f64)) -> [f64; 2] {
    [ci.0, ci.1]
}

fn print_outcome(outcome: &Outcome) {
    crate::stdout::json(outcome);
}

fn federated_outcome(
    query: &Query,
    results: &[HospitalResult],
    combined: Option<&combine::Combined>,
) -> Outcome {
    let hospitals: Vec<HospitalOutcome> = results.iter().map(hospital_outcome).collect();
    Outcome {
        query_id: query.id.clone(),
        mode: "dp",
        value: combined.and_then(|c| c.value),
        ci95: combined.and_then(|c| c.ci95).map(interval),
        values: combined.map(|c| c.values.clone()).unwrap_or_default(),
        ci95s: combined
            .map(|c| c.ci95s.iter().copied().map(interval).collect())
            .unwrap_or_default(),
        epsilon_spent: combined.map(|c| c.epsilon_spent_max),
        delta_spent: None,
        share_scale: None,
        hospitals_answered: client::answered(results).len(),
        hospitals_suppressed: hospitals.iter().filter(|h| h.suppressed).count(),
        hospitals,
    }
}

fn hospital_outcome(r: &HospitalResult) -> HospitalOutcome {
    match &r.status {
        Status::Answered(a) => HospitalOutcome {
            name: r.name.clone(),
            status: if a.released.suppressed {
                "suppressed"
            } else {
                "answered"
            }
            .to_owned(),
            reason: a.released.suppressed.then(|| {
                "the cohort was below the hospital's minimum; nothing was released".to_owned()
            }),
            value: a.released.value,
            values: a.released.values.clone(),
            budget_left: Some(a.budget_left),
            answered_at: Some(crate::labels::utc(a.answered_at)),
            suppressed: a.released.suppressed,
        },
        other => HospitalOutcome::left_out(
            &r.name,
            other.label(),
            other.reason().map(|reason| reason.to_string()),
        ),
    }
}

fn encrypted_outcome(
    query: &Query,
    total: &EncryptedTotal,
    combined: &combine::Combined,
) -> Outcome {
    let mut hospitals: Vec<HospitalOutcome> = total
        .included
        .iter()
        .map(|i| HospitalOutcome {
            budget_left: Some(i.budget_left),
            ..HospitalOutcome::left_out(&i.node, "included", None)
        })
        .collect();
    hospitals.extend(
        total
            .left_out
            .iter()
            .map(|l| HospitalOutcome::left_out(&l.node, &l.status, Some(l.reason.clone()))),
    );
    Outcome {
        query_id: query.id.clone(),
        mode: "encrypted",
        value: combined.value,
        ci95: combined.ci95.map(interval),
        values: combined.values.clone(),
        ci95s: combined.ci95s.iter().copied().map(interval).collect(),
        epsilon_spent: Some(combined.epsilon_spent_max),
        delta_spent: Some(
            total
                .included
                .iter()
                .map(|i| i.delta_spent)
                .fold(0.0, f64::max),
        ),
        share_scale: total.included.first().map(|i| i.share_scale),
        hospitals_answered: total.included.len(),
        hospitals_suppressed: 0,
        hospitals,
    }
}

fn print_table(query: &Query, results: &[HospitalResult], combined: Option<&combine::Combined>) {
    outln!(
        "query {} ({}, epsilon {} per hospital)",
        query.id,
        query.aggregate.kind(),
        query.privacy.epsilon
    );
    for r in results {
        match &r.status {
            Status::Answered(a) => {
                let value = a
                    .released
                    .value
                    .map_or("(vector)".to_string(), |v| format!("{v:.3}"));
                let note = if a.released.suppressed {
                    " SUPPRESSED (small cohort)"
                } else {
                    ""
                };
                outln!(
                    "  {:<20} answered     {value}{note}   budget left {:.3} (as of {})",
                    r.name,
                    a.budget_left,
                    crate::labels::utc(a.answered_at)
                );
            }
            other => outln!(
                "  {:<20} {:<12} {}",
                r.name,
                other.label(),
                other.reason().unwrap_or_default()
            ),
        }
    }
    let Some(c) = combined else {
        return;
    };
    if let (Some(v), Some((lo, hi))) = (c.value, c.ci95) {
        outln!(
            "combined over {} hospitals: {v:.3}   95% interval [{lo:.3}, {hi:.3}]",
            c.nodes
        );
    }
    let labels = crate::labels::entries(query, c.values.len());
    for (label, (v, (lo, hi))) in labels.iter().zip(c.values.iter().zip(&c.ci95s)) {
        outln!("  {label:<16} {v:.3}   95% interval [{lo:.3}, {hi:.3}]");
    }
    outln!("epsilon spent at each hospital: {:.4}", c.epsilon_spent_max);
}
