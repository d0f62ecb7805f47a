//! `witmed demo`: a federation of hospital nodes on this machine, a handful of queries, a clear table.
//!
//! The demo builds its hospitals with simnet (real `witmed node run`
//! processes on loopback, set up through the command line), splits
//! PhysioNet 2012 set-a among them when the shared data is present (a seeded
//! synthetic cohort otherwise), simulates consent, issues a researcher
//! credential, and asks its queries over libp2p. Because the demo set the
//! data up itself, it alone can also show the exact answer beside each
//! noisy one: it computes it from the nodes' stores, over the same
//! consenting patients, before the nodes start.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use witmed_crypto::{Envelope, KeyPair, Role};
use witmed_policies::evaluate::{Request, Use};
use witmed_protocol::combine;
use witmed_protocol::encrypted::EncryptedTotal;
use witmed_protocol::query::Query;
use witmed_protocol::vocab::Mode;
use witmed_simnet::cluster::{self, Cluster, Options, Spec};
use witmed_simnet::cohort;

use witmed_net::client::{self, HospitalResult};
use witmed_net::reveal;
use witmed_node::encrypted::study;
use witmed_node::node::Node;
use witmed_node::{engine, unix_now};
use witmed_protocol::device_request as wire;

use crate::device::{http, simulate, stays};

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub hospitals: usize,
    /// Directory holding `physionet2012/set-a`; synthetic data when None or absent.
    pub data: Option<PathBuf>,
    /// Synthetic patients (when not using set-a).
    pub synthetic_patients: usize,
    /// Share of patients with simulated consent.
    pub consent_rate: f64,
    /// Per-hospital timeout of each query.
    pub timeout: Duration,
    /// PhysioNet 2012 set-a, for the bedside part (a deteriorating stay raising a NEWS2
    /// alert); that part is skipped, saying so, when None or absent.
    pub set_a: Option<PathBuf>,
}

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    pub value: Option<f64>,
    pub ci95: Option<(f64, f64)>,
    pub exact: Option<f64>,
    pub epsilon: f64,
    pub budget_left: Option<f64>,
    pub hospitals: Vec<(String, String)>,
}

/// The queries the demo asks: (label, TOML).
pub fn queries() -> Vec<(String, String)> {
    let mut q = vec![
        ("patients (count)".to_string(), query_toml("demo-count", "aggregate = \"count\"", "", "", 0.5)),
        (
            "mean heart rate, age >= 65".to_string(),
            query_toml(
                "demo-hr65",
                "aggregate = \"mean\"",
                "[cohort]\nage_min = 65\n",
                "[feature.observation]\ncode = \"8867-4\"\nreduce = \"mean\"\n[bounds]\nlower = 30.0\nupper = 200.0\n",
                1.0,
            ),
        ),
        (
            "lowest SaO2 < 90% in first 24 h (count)".to_string(),
            query_toml(
                "demo-spo2",
                "[aggregate.histogram]\nedges = [0.0, 90.0, 100.01]",
                "",
                "[feature.observation]\ncode = \"2708-6\"\nreduce = \"min\"\nwindow = { from_hours = 0.0, to_hours = 24.0 }\n",
                1.0,
            ),
        ),
    ];
    for (icu, name) in [
        (1, "coronary"),
        (2, "cardiac surgery"),
        (3, "medical"),
        (4, "surgical"),
    ] {
        q.push((
            format!("mortality, {name} ICU"),
            query_toml(
                &format!("demo-mortality-{icu}"),
                "aggregate = \"mean\"",
                &format!("[cohort]\nattributes = [{{ name = \"icu_type\", min = {icu}.0, max = {icu}.0 }}]\n"),
                "[feature.attribute]\nname = \"in_hospital_death\"\n[bounds]\nlower = 0.0\nupper = 1.0\n",
                1.0,
            ),
        ));
    }
    q
}

/// The encrypted-mode query: a count of patients aged 65+, summed under encryption by `aggregator`.
pub fn encrypted_query(study: &str, aggregator: &str, hospitals: usize) -> (String, String) {
    (
        "patients, age >= 65 (encrypted count)".to_string(),
        format!(
            "version = 1\nid = \"demo-encrypted-{}\"\npurpose = \"HMB\"\naggregate = \"count\"\n\
             [cohort]\nage_min = 65\n[privacy]\nmode = \"encrypted\"\nepsilon = 0.5\n\
             aggregator = \"{aggregator}\"\nstudy = \"{study}\"\nmin_hospitals = {hospitals}\n",
            unix_now()
        ),
    )
}

fn query_toml(id: &str, aggregate: &str, cohort: &str, feature: &str, epsilon: f64) -> String {
    format!(
        "version = 1\nid = \"{id}-{}\"\npurpose = \"HMB\"\n{aggregate}\n{cohort}{feature}[privacy]\nmode = \"dp\"\nepsilon = {epsilon}\n",
        unix_now()
    )
}

/// The PhysioNet record files the demo uses, and whether they are real.
fn records(config: &Config, root: &Path) -> Result<(Vec<PathBuf>, Option<PathBuf>, bool), String> {
    if let Some(set) = config
        .data
        .as_ref()
        .map(|d| d.join("physionet2012/set-a"))
        .filter(|d| d.is_dir())
    {
        let files =
            witmed_node::import::physionet::list_set_files(&set).map_err(|e| e.to_string())?;
        let outcomes = set
            .parent()
            .map(|p| p.join("Outcomes-a.txt"))
            .filter(|p| p.exists());
        return Ok((files, outcomes, true));
    }
    let written = cohort::write_physionet_set(
        &root.join("synthetic"),
        &cohort::Config {
            patients: config.synthetic_patients,
            seed: 2012,
            ..cohort::Config::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let files =
        witmed_node::import::physionet::list_set_files(&written.dir).map_err(|e| e.to_string())?;
    Ok((files, Some(written.outcomes), false))
}

/// Runs the whole demo; prints as it goes and returns the table.
pub fn run(config: &Config) -> Result<Vec<Row>, String> {
    let started = Instant::now();
    let scratch = crate::ScratchDir::new(&format!("witmed-demo-{}", std::process::id()))
        .map_err(|e| e.to_string())?;
    let root = scratch.path().to_path_buf();
    let (files, outcomes, real) = records(config, &root)?;
    outln!(
        "witmed demo: {} hospitals, {} patients ({}), consent simulated for {:.0}% of them",
        config.hospitals,
        files.len(),
        if real {
            "PhysioNet 2012 set-a"
        } else {
            "synthetic cohort"
        },
        config.consent_rate * 100.0
    );
    let options = Options {
        bin: std::env::current_exe().map_err(|e| e.to_string())?,
        root: root.clone(),
        consent_rate: config.consent_rate,
        outcomes,
        proxied: false,
        node_env: vec![],
    };
    outln!("setting up hospitals (keys, encrypted stores, import, consent)...");
    let mut cluster = Cluster::build(&options, &cluster::split(&files, config.hospitals))
        .map_err(|e| e.to_string())?;
    // The researcher's study key for the encrypted query: made here, published once nodes run.
    let study_dir = root.join("study");
    let study_id = cluster
        .study_keygen(&study_dir)
        .map_err(|e| e.to_string())?;
    let mut texts = queries();
    texts.push(encrypted_query(
        &study_id,
        &cluster.members[0].name,
        config.hospitals,
    ));
    let queries: Vec<(String, Query)> = texts
        .into_iter()
        .map(|(label, text)| {
            Query::from_toml(&text)
                .map(|q| (label, q))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let exact = exact_answers(&cluster, &queries)?;
    cluster.start_all().map_err(|e| e.to_string())?;
    cluster
        .publish_study(&study_dir)
        .map_err(|e| e.to_string())?;
    outln!(
        "study {}... published to every hospital (only its public key left this machine's study dir)",
        &study_id[..16]
    );
    outln!(
        "{} nodes listening on 127.0.0.1; asking {} queries over libp2p\n",
        config.hospitals,
        queries.len()
    );
    let rows = ask_all(&cluster, &queries, &exact, &study_dir, config.timeout)?;
    print_table(&rows);
    ask_analyses(&cluster, config.timeout)?;
    for i in 0..cluster.members.len() {
        cluster.stop(i).map_err(|e| e.to_string())?;
    }
    bedside(config.set_a.as_deref(), &root)?;
    outln!(
        "\nall nodes stopped; demo took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(rows)
}

/// The cluster researcher's key and credential, and the hospitals of the cluster's signed directory.
pub fn researcher_of(
    cluster: &Cluster,
) -> Result<(KeyPair, Envelope, Vec<client::Target>), String> {
    let researcher =
        KeyPair::load_role(&cluster.researcher_key, Role::Researcher).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&cluster.credential).map_err(|e| e.to_string())?;
    let credential = witmed_policies::parse_signed(&text).map_err(|e| e.to_string())?;
    let authority = cluster
        .consortium_authority
        .parse()
        .map_err(|e: witmed_crypto::keys::Error| e.to_string())?;
    let (dir, _) =
        client::load_directory(&cluster.directory, Some(authority)).map_err(|e| e.to_string())?;
    Ok((researcher, credential, client::targets(&dir)?))
}

/// Exact answers over the consenting patients of every node (nodes not yet running).
fn exact_answers(
    cluster: &Cluster,
    queries: &[(String, Query)],
) -> Result<Vec<Option<f64>>, String> {
    let (researcher, envelope, _) = researcher_of(cluster)?;
    let now = unix_now();
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); queries.len()];
    for m in &cluster.members {
        let node = Node::open(&m.data_dir, now).map_err(|e| e.to_string())?;
        let credential =
            witmed_policies::verify_credential(&envelope, &node.policy().trusted_issuers, now)
                .map_err(|e| e.to_string())?;
        for (i, (_, q)) in queries.iter().enumerate() {
            let request = Request::from_query(q, researcher.public());
            let use_ = Use::new(node.id(), &request, &credential).map_err(|e| e.to_string())?;
            values[i]
                .extend(engine::select_values(&node, q, &use_, now).map_err(|e| e.to_string())?);
        }
    }
    Ok(queries
        .iter()
        .zip(values)
        .map(|((_, q), v)| exact_of(q, &v))
        .collect())
}

fn exact_of(query: &Query, values: &[f64]) -> Option<f64> {
    use witmed_protocol::query::Aggregate;
    let clamp = |v: f64| query.bounds.map_or(v, |b| v.clamp(b.lower, b.upper));
    match &query.aggregate {
        Aggregate::Count => Some(values.len() as f64),
        Aggregate::Sum => Some(values.iter().map(|v| clamp(*v)).sum()),
        Aggregate::Mean => (!values.is_empty())
            .then(|| values.iter().map(|v| clamp(*v)).sum::<f64>() / values.len() as f64),
        // The histogram row shows its first bin.
        Aggregate::Histogram { edges } => Some(
            values
                .iter()
                .filter(|v| witmed_node::dp::bin_of(**v, edges) == 0)
                .count() as f64,
        ),
        Aggregate::Quantiles { .. }
        | Aggregate::Survival(_)
        | Aggregate::Table(_)
        | Aggregate::Regression(_)
        | Aggregate::Logistic(_) => None,
    }
}

/// The analyses the demo runs, one of each (label, TOML): 2.75 of the
/// researcher's budget of 10, after the 7 the queries above spend.
pub fn analyses() -> Vec<(String, String)> {
    use witmed_protocol::examples;
    vec![
        (
            "in-hospital survival by ICU type (Kaplan-Meier, log-rank)".into(),
            examples::survival_by_icu_type("demo-survival", 0.75),
        ),
        (
            "sex by in-hospital death (chi-square, odds ratio)".into(),
            examples::sex_by_death("demo-table", 0.5),
        ),
        (
            "in-hospital death on age, sex, ICU type (logistic, one noisy cell table)".into(),
            examples::death_on_age_sex_icu("demo-logistic", 1.5),
        ),
    ]
}

/// Runs each analysis over libp2p and prints its tables; an analysis the
/// noisy sums cannot support (a small synthetic cohort) is named, not fatal.
fn ask_analyses(cluster: &Cluster, timeout: Duration) -> Result<(), String> {
    let (researcher, credential, targets) = researcher_of(cluster)?;
    let runtime = witmed_net::runtime().map_err(|e| e.to_string())?;
    for (label, text) in analyses() {
        outln!("\n{label}");
        let query = Query::from_toml(&text).map_err(|e| e.to_string())?;
        let mut ask = |q: &Query| -> Result<witmed::analysis::Answers, witmed::failure::Failure> {
            let request = client::request_for(q.clone(), &credential, unix_now())
                .map_err(|e| witmed::failure::Failure::new(witmed::code::Code::RandomFailed, e))?;
            let results = runtime
                .block_on(client::ask(&researcher, &request, &targets, timeout))
                .map_err(|e| witmed::failure::Failure::new(witmed::code::Code::NetworkFailed, e))?;
            Ok(client::answered(&results)
                .into_iter()
                .map(|(name, a)| (name.to_string(), a.clone()))
                .collect())
        };
        if let Err(e) = witmed::analysis::run(&query, &mut ask, false, None) {
            outln!("  not computed ({}): {}", e.code, e.message);
        }
    }
    Ok(())
}

fn ask_all(
    cluster: &Cluster,
    queries: &[(String, Query)],
    exact: &[Option<f64>],
    study_dir: &Path,
    timeout: Duration,
) -> Result<Vec<Row>, String> {
    let (researcher, credential, targets) = researcher_of(cluster)?;
    let runtime = witmed_net::runtime().map_err(|e| e.to_string())?;
    let (study_info, study_key) = study::load_client(study_dir).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for ((label, query), exact) in queries.iter().zip(exact) {
        let request = client::request_for(query.clone(), &credential, unix_now())?;
        if query.privacy.mode == Mode::Encrypted {
            // The aggregator waits up to its own timeout for the members.
            let (total, combined) = runtime
                .block_on(reveal::ask_aggregator(
                    &researcher,
                    &request,
                    &targets,
                    (&study_key, &study_info.id),
                    timeout * 2,
                ))
                .map_err(|e| e.to_string())?;
            rows.push(encrypted_row(label, query, &total, &combined, *exact));
            continue;
        }
        let results = runtime
            .block_on(client::ask(&researcher, &request, &targets, timeout))
            .map_err(|e| e.to_string())?;
        rows.push(row(label, query, &results, *exact)?);
    }
    Ok(rows)
}

fn row(
    label: &str,
    query: &Query,
    results: &[HospitalResult],
    exact: Option<f64>,
) -> Result<Row, String> {
    let answered = client::answered(results);
    let combined = client::combine_answered(query, results).map_err(|e| e.to_string())?;
    let first_bin = |c: &combine::Combined| c.values.first().copied();
    let first_ci = |c: &combine::Combined| c.ci95s.first().copied();
    Ok(Row {
        label: label.to_string(),
        value: combined
            .as_ref()
            .and_then(|c| c.value.or_else(|| first_bin(c))),
        ci95: combined
            .as_ref()
            .and_then(|c| c.ci95.or_else(|| first_ci(c))),
        exact,
        epsilon: query.privacy.epsilon,
        budget_left: answered.iter().map(|(_, a)| a.budget_left).reduce(f64::min),
        hospitals: results
            .iter()
            .map(|r| (r.name.clone(), r.status.label().to_string()))
            .collect(),
    })
}

/// A row from the aggregator's encrypted total, decrypted with the study's client key.
fn encrypted_row(
    label: &str,
    query: &Query,
    total: &EncryptedTotal,
    combined: &combine::Combined,
    exact: Option<f64>,
) -> Row {
    let mut hospitals: Vec<(String, String)> = total
        .included
        .iter()
        .map(|i| (i.node.clone(), "answered".to_string()))
        .collect();
    hospitals.extend(
        total
            .left_out
            .iter()
            .map(|l| (l.node.clone(), l.status.clone())),
    );
    Row {
        label: label.to_string(),
        value: combined.value,
        ci95: combined.ci95,
        exact,
        epsilon: query.privacy.epsilon,
        budget_left: total
            .included
            .iter()
            .map(|i| i.budget_left)
            .reduce(f64::min),
        hospitals,
    }
}

fn print_table(rows: &[Row]) {
    outln!(
        "{:<40} {:>10} {:>24} {:>10} {:>8} {:>12}  hospitals",
        "query",
        "answer",
        "95% interval",
        "exact",
        "epsilon",
        "budget left"
    );
    for r in rows {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        let ci = r
            .ci95
            .map_or("-".to_string(), |(lo, hi)| format!("[{lo:.3}, {hi:.3}]"));
        let answered = r.hospitals.iter().filter(|(_, s)| s == "answered").count();
        let others: Vec<String> = r
            .hospitals
            .iter()
            .filter(|(_, s)| s != "answered")
            .map(|(n, s)| format!("{n} {s}"))
            .collect();
        outln!(
            "{:<40} {:>10} {:>24} {:>10} {:>8.2} {:>12}  {answered}/{} answered{}",
            r.label,
            f(r.value),
            ci,
            f(r.exact),
            r.epsilon,
            f(r.budget_left),
            r.hospitals.len(),
            if others.is_empty() {
                String::new()
            } else {
                format!(" ({})", others.join(", "))
            }
        );
    }
}

/// The bedside part: a hospital node serving its HTTP API on loopback, the deteriorating set-a
/// stay (found by scoring, as `device simulate` does) replayed into it by a simulated monitor as
/// signed readings, and the NEWS2 alert the node raised read back through the staff API.
fn bedside(set_a: Option<&Path>, root: &Path) -> Result<(), String> {
    let Some(set) = set_a.filter(|d| d.is_dir()) else {
        outln!("\nbedside alert: skipped (no PhysioNet 2012 set-a; give --data or set WITMED_DATA_DIR)");
        return Ok(());
    };
    let found = stays::find_deteriorating(set, 4000).map_err(|e| e.to_string())?;
    let Some((stay, rise)) = found else {
        outln!(
            "\nbedside alert: skipped (no stay in {} deteriorates)",
            set.display()
        );
        return Ok(());
    };
    outln!(
        "\nbedside: PhysioNet stay {} scores NEWS2 {} at {:.1} h, then {} at {:.1} h; \
         its simulated monitor replays it as signed readings into a hospital node over HTTP",
        stay.record_id,
        rise.first_score,
        rise.first_at as f64 / 3600.0,
        rise.high_score,
        rise.high_at as f64 / 3600.0
    );
    let options = Options {
        bin: std::env::current_exe().map_err(|e| e.to_string())?,
        root: root.join("bedside"),
        consent_rate: 1.0,
        outcomes: None,
        proxied: false,
        node_env: vec![],
    };
    let spec = Spec {
        name: "Hospital-1".into(),
        records: vec![set.join(format!("{}.txt", stay.record_id))],
        misbehave: None,
    };
    let mut ward = Cluster::build(&options, &[spec]).map_err(|e| e.to_string())?;
    let addr = loopback_addr()?;
    ward.set_node_args(0, vec!["--http".into(), addr.clone()]);
    ward.start_all().map_err(|e| e.to_string())?;
    let shown = replay_and_show(&ward.members[0].data_dir, &addr, stay);
    ward.stop(0).map_err(|e| e.to_string())?;
    shown
}

/// A free TCP address on loopback for the node's HTTP API.
fn loopback_addr() -> Result<String, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    Ok(addr.to_string())
}

/// Waits (at most 20 s) until the node's HTTP API answers its health check.
fn wait_for_http(client: &mut http::Client) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.send("GET", "/api/v1/health", &[], b"") {
            Ok(r) if r.status == 200 => return Ok(()),
            _ if Instant::now() >= deadline => {
                return Err("the node's HTTP API did not come up within 20 s".into())
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn replay_and_show(data_dir: &Path, addr: &str, stay: stays::Stay) -> Result<(), String> {
    let token_file = witmed_api::auth::staff_token_path(data_dir);
    let token = std::fs::read_to_string(&token_file)
        .map_err(|e| format!("{}: {e}", token_file.display()))?
        .trim()
        .to_string();
    let node = format!("http://{addr}");
    let mut client = http::Client::new(&node).map_err(|e| e.to_string())?;
    wait_for_http(&mut client)?;
    let config = simulate::Config {
        node: node.clone(),
        staff_token: token.clone(),
        rate: 20_000.0,
        batch: 32,
        connections: 1,
        duration: None,
    };
    let record_id = stay.record_id.clone();
    let (node_id, devices) = simulate::enrol(&config, vec![stay]).map_err(|e| e.to_string())?;
    let summary = simulate::replay(&config, &node_id, devices, Default::default())
        .map_err(|e| e.to_string())?;
    outln!(
        "monitor sent {} readings in {} signed batches ({:.1} s); the node stored {}",
        summary.sent,
        summary.requests,
        summary.elapsed.as_secs_f64(),
        summary.stored
    );
    let auth = format!("Bearer {token}");
    let answer = client
        .send(
            "GET",
            "/api/v1/staff/alerts",
            &[("authorization", &auth)],
            b"",
        )
        .map_err(|e| e.to_string())?;
    if answer.status != 200 {
        return Err(format!(
            "GET /api/v1/staff/alerts: HTTP {}: {}",
            answer.status,
            answer.text()
        ));
    }
    let alerts: Vec<wire::Alert> = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("GET /api/v1/staff/alerts: {e}"))?;
    // The most urgent alert, the earliest of equals: the moment the patient went high.
    let Some(alert) = alerts
        .iter()
        .min_by_key(|a| (std::cmp::Reverse(a.score), a.at))
    else {
        return Err(format!(
            "the node raised no NEWS2 alert for stay {record_id}"
        ));
    };
    print_alert(alert, &record_id, alerts.len());
    outln!(
        "a clinician would see this alert live, as it is raised, at http://{addr}/clinician/ \
         (staff token in the node's admin/api.token)"
    );
    Ok(())
}

fn print_alert(alert: &wire::Alert, record_id: &str, count: usize) {
    outln!("NEWS2 alert, read back from GET /api/v1/staff/alerts ({count} raised in all; the most urgent):");
    outln!("  patient   {} (PhysioNet stay {record_id})", alert.patient);
    outln!(
        "  NEWS2     score {}, band {}",
        alert.score,
        band_name(alert.band)
    );
    outln!("  reading   {} (unix {})", utc_time(alert.at), alert.at);
    for source in &alert.sources {
        let name =
            witmed_care::Vital::from_code(&source.code).map_or(source.code.as_str(), |v| v.name());
        outln!(
            "  {:<32} {:>7.1} {:<8} sub-score {}",
            name,
            source.value,
            source.unit,
            source.sub_score
        );
    }
}

fn band_name(band: wire::Band) -> &'static str {
    match band {
        wire::Band::Zero => "zero",
        wire::Band::Low => "low",
        wire::Band::LowMedium => "low-medium",
        wire::Band::Medium => "medium",
        wire::Band::High => "high",
    }
}

/// `HH:MM:SS UTC` of a Unix time (the replay stamps readings with the wall clock).
fn utc_time(unix: i64) -> String {
    let second_of_day = unix.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02} UTC",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}
