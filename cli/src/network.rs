//! Commands that use the network: `node run` and `query run`.

use std::sync::Arc;

use libp2p::Multiaddr;
use serde::Serialize;
use witmed_crypto::{Envelope, KeyPair, Role};
use witmed_protocol::combine;
use witmed_protocol::encrypted::EncryptedTotal;
use witmed_protocol::query::Query;
use witmed_protocol::vocab::Mode;
use witmed_protocol::wire::QueryRequest;

use crate::{Failure, ResearcherArgs, RunQueryArgs};
use witmed_net::client::{self, HospitalResult, Status};
use witmed_net::reveal;
use witmed_net::server;
use witmed_node::encrypted::study;
use witmed_node::node::Node;
use witmed_node::unix_now;

type Result<T> = std::result::Result<T, Failure>;

fn runtime() -> Result<tokio::runtime::Runtime> {
    witmed_net::runtime().map_err(|e| Failure::new("runtime_failed", e))
}

/// `witmed node run`. `sign_response` is for witmed-lab's fault injection
/// only (see `witmed_net::server::Config::sign_response`); the `witmed`
/// binary always passes None.
pub fn node_run(args: &crate::RunArgs, sign_response: Option<server::SignResponse>) -> Result<()> {
    let dir = args.dir.data_dir.as_path();
    let listen = args
        .listen
        .iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .map_err(|e| Failure::new("bad_address", format!("{a}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let node =
        Arc::new(Node::open(dir, unix_now()).map_err(|e| Failure::new("node_open_failed", e))?);
    // Build the index before accepting queries, so the first one is not slow.
    node.index().map_err(|e| Failure::new("store_failed", e))?;
    let config = server::Config {
        listen,
        max_in_flight: args.max_in_flight.max(1),
        max_connections_per_peer: args.max_connections_per_peer.max(1),
        sign_response,
        directory: crate::consortium::installed_at(dir)?,
        aggregate_timeout: args.aggregate_timeout,
        ..server::Config::default()
    };
    if !witmed_node::encrypted::noise_enabled() {
        tracing::warn!("INSECURE TEST SETTING: encrypted-mode shares carry no noise");
        eprintln!(
            "WARNING: {}=1: encrypted-mode shares carry NO noise (test builds only)",
            witmed_node::encrypted::NOISE_OFF_ENV
        );
    }
    let name = node.config.name.clone();
    outln!(
        "node {name} ({}) running; stop with Ctrl-C or SIGTERM",
        node.id()
    );
    let served = runtime()?.block_on(async {
        // Consent changes reach the running node through its admin socket.
        match witmed_node::admin::bind(dir) {
            Ok(listener) => drop(tokio::spawn(witmed_node::admin::serve(node.clone(), listener))),
            Err(e) => tracing::warn!(
                "admin channel {} not available ({e}): consent commands cannot reach this node while it runs",
                witmed_node::admin::socket_path(dir).display()
            ),
        }
        server::run(node, config, shutdown_signal()).await
    });
    witmed_node::admin::unbind(dir);
    served.map_err(|e| Failure::new("network_failed", e))?;
    outln!("node {name} stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The researcher's key, credential and the members of the verified directory.
pub fn researcher_session(
    args: &ResearcherArgs,
) -> Result<(KeyPair, Envelope, Vec<client::Target>)> {
    let researcher =
        KeyPair::load_role(&args.key, Role::Researcher).map_err(|e| Failure::new("bad_key", e))?;
    let credential_text =
        crate::files::read_text(&args.credential, witmed_policies::MAX_SIGNED_BYTES)?;
    let credential = witmed_policies::parse_signed(&credential_text)
        .map_err(|e| Failure::new(e.error_code(), e))?;
    let (dir, _) = crate::consortium::load_directory(&args.directory, args.authority.as_deref())?;
    let targets = client::targets(&dir).map_err(|e| Failure::new("bad_directory", e))?;
    Ok((researcher, credential, targets))
}

/// `witmed query run`.
pub fn query_run(args: RunQueryArgs) -> Result<()> {
    let (researcher, credential, targets) = researcher_session(&args.researcher)?;
    let query_text = crate::files::read_text(&args.query, witmed_protocol::query::MAX_QUERY_BYTES)?;
    let query = Query::from_toml(&query_text)
        .map_err(|e| Failure::new("bad_query", format!("{}: {e}", args.query.display())))?;
    let request = client::request_for(query.clone(), &credential, unix_now())
        .map_err(|e| Failure::new("random_failed", e))?;
    if query.privacy.mode == Mode::Encrypted {
        return encrypted_query_run(&args, &researcher, &request, &targets);
    }
    let results = runtime()?
        .block_on(client::ask(&researcher, &request, &targets, args.timeout))
        .map_err(|e| Failure::new("network_failed", e))?;
    print_federated(&query, &results, args.json)
}

/// Encrypted mode: ask the aggregator, check and decrypt its total, print it.
fn encrypted_query_run(
    args: &RunQueryArgs,
    researcher: &KeyPair,
    request: &QueryRequest,
    targets: &[client::Target],
) -> Result<()> {
    let query = &request.query;
    require_member_aggregator(query, targets)?;
    let study_dir = args.study.as_deref().ok_or_else(|| {
        Failure::new(
            "missing_study",
            "encrypted mode needs --study DIR: the study's client key decrypts the total",
        )
    })?;
    let (info, client_key) =
        study::load_client(study_dir).map_err(|e| Failure::new(e.code(), e))?;
    let (total, combined) = runtime()?
        .block_on(reveal::ask_aggregator(
            researcher,
            request,
            targets,
            (&client_key, &info.id),
            args.timeout,
        ))
        .map_err(|e| Failure::new(e.code(), e))?;
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
        "unknown_aggregator",
        format!(
            "the query's aggregator {named:?} is not a member of the directory; \
             set [privacy] aggregator to one of: {} (names as `consortium show` lists them)",
            members.join(", ")
        ),
    ))
}

/// Prints a decrypted encrypted-mode total and who is in it.
pub fn print_encrypted(
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
pub fn print_federated(query: &Query, results: &[HospitalResult], json: bool) -> Result<()> {
    let answers = client::answered(results);
    let combined =
        client::combine_answered(query, results).map_err(|e| Failure::new("combine_failed", e))?;
    if json {
        print_outcome(&federated_outcome(query, results, combined.as_ref()));
    } else {
        print_table(query, results, combined.as_ref());
    }
    if answers.is_empty() {
        return Err(Failure::new(
            "no_answers",
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
    outln!(
        "{}",
        serde_json::to_string_pretty(outcome).expect("output serializes")
    );
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
