//! `witmed-lab bench encrypted-analysis`: the latency of each analysis in encrypted mode (survival, table, logistic regression) over real nodes, across hospital counts.
//!
//! Each row is the researcher's view of one analysis, end to end over real
//! nodes on loopback with synthetic patients and their outcomes: sign, send
//! to the aggregator, every member reads its patients' vectors, adds its
//! discrete Gaussian share per coordinate, encrypts (limbs), the aggregator
//! collects, masks are added for the roster, the researcher checks every
//! receipt, adds, decrypts and analyses. A logistic regression is one
//! such encrypted total (a noisy cell table). Beside each: the values one
//! share carries (ciphertext slots) and the bytes of one encrypted total.

use std::path::Path;
use std::time::{Duration, Instant};

use witmed_net::reveal;
use witmed_node::encrypted::shares;
use witmed_node::encrypted::study;
use witmed_protocol::examples;
use witmed_protocol::query::Query;
use witmed_simnet::cohort;

use super::{err, machine, ms, pct, tempdir, Result};

/// An example query's DP-mode text, from its id and epsilon.
type Example = fn(&str, f64) -> String;

/// The analyses measured: name, the DP-mode text of the query, its epsilon
/// and how many runs at most. Latency does not depend on epsilon; these fit
/// the cluster's budget: the logistic regression runs once at 4, where the
/// small synthetic cohorts' noisy cell table still gives a fit.
fn analyses() -> Vec<(&'static str, Example, f64, usize)> {
    vec![
        (
            "survival by ICU type",
            examples::survival_by_icu_type,
            0.25,
            3,
        ),
        ("table sex x death", examples::sex_by_death, 0.25, 3),
        (
            "logistic (cell table)",
            examples::death_on_age_sex_icu,
            4.0,
            1,
        ),
    ]
}

/// One measured row.
struct Row {
    analysis: &'static str,
    hospitals: usize,
    p50_ms: f64,
    p95_ms: f64,
    slots: usize,
    total_bytes: usize,
}

/// `witmed-lab bench encrypted-analysis`.
pub fn run(
    hospitals: &[usize],
    patients: usize,
    repetitions: usize,
    csv: Option<&Path>,
) -> Result<()> {
    outln!(
        "witmed bench encrypted-analysis ({}; {patients} synthetic patients per hospital, up to {repetitions} runs per row (logistic: one))",
        machine()
    );
    outln!(
        "{:<22} {:>9} {:>10} {:>10} {:>12} {:>12}",
        "analysis",
        "hospitals",
        "p50 ms",
        "p95 ms",
        "slots/share",
        "total bytes"
    );
    let mut table = String::from("analysis,hospitals,p50_ms,p95_ms,slots_per_share,total_bytes\n");
    for &n in hospitals {
        for row in federation_rows(n, patients, repetitions.max(1))? {
            outln!(
                "{:<22} {:>9} {:>10.1} {:>10.1} {:>12} {:>12}",
                row.analysis,
                row.hospitals,
                row.p50_ms,
                row.p95_ms,
                row.slots,
                row.total_bytes
            );
            table.push_str(&format!(
                "{},{},{:.3},{:.3},{},{}\n",
                row.analysis, row.hospitals, row.p50_ms, row.p95_ms, row.slots, row.total_bytes
            ));
        }
    }
    outln!("(end to end at the researcher: every member's share of every coordinate, encrypted, masked,");
    outln!(" summed and decrypted; a logistic regression is one encrypted cell table. slots/share: ciphertext");
    outln!(" values one member sends (limbs included); total bytes: one encrypted total as the aggregator");
    outln!(" answers it, for the last query of the analysis.)");
    if let Some(path) = csv {
        std::fs::write(path, table).map_err(err)?;
        outln!("wrote {}", path.display());
    }
    Ok(())
}

/// A cluster of `hospitals` nodes with synthetic patients and their outcomes; every analysis timed on it.
fn federation_rows(hospitals: usize, patients: usize, repetitions: usize) -> Result<Vec<Row>> {
    use witmed_simnet::cluster::{self, Cluster, Options};
    let scratch = tempdir()?;
    let root = scratch.path();
    let written = cohort::write_physionet_set(
        &root.join("cohort"),
        &cohort::Config {
            patients: patients * hospitals,
            seed: 17,
            hours: 12,
            samples_per_hour: 0.5,
            ..cohort::Config::default()
        },
    )
    .map_err(err)?;
    let files = witmed_node::import::physionet::list_set_files(&written.dir).map_err(err)?;
    let options = Options {
        bin: std::env::current_exe().map_err(err)?,
        root: root.join("cluster"),
        consent_rate: 1.0,
        outcomes: Some(written.outcomes.clone()),
        proxied: false,
        node_env: vec![],
    };
    eprintln!("setting up {hospitals} hospitals with {patients} patients each...");
    let mut c = Cluster::build(&options, &cluster::split(&files, hospitals)).map_err(err)?;
    c.start_all().map_err(err)?;
    let study_dir = root.join("study");
    let study_id = c.study_keygen(&study_dir).map_err(err)?;
    c.publish_study(&study_dir).map_err(err)?;
    let (_, client_key) = study::load_client(&study_dir).map_err(err)?;
    let (researcher, credential, targets) = crate::demo::researcher_of(&c)?;
    let aggregator = targets[0].name.clone();
    let runtime = witmed_net::runtime().map_err(err)?;
    let timeout = Duration::from_secs(60);
    let mut rows = Vec::new();
    for (a, (name, text, epsilon, most)) in analyses().into_iter().enumerate() {
        let mut times = Vec::new();
        let (mut slots, mut total_bytes) = (0, 0);
        for r in 0..repetitions.min(most) {
            let dp = text(&format!("bench-{a}-{r}"), epsilon);
            let query = Query::from_toml(&dp.replace(
                "mode = \"dp\"",
                &format!(
                    "mode = \"encrypted\"\naggregator = \"{aggregator}\"\nstudy = \"{study_id}\"\nmin_hospitals = {hospitals}"
                ),
            ))
            .map_err(err)?;
            slots = shares::layout(&query).slots();
            let started = Instant::now();
            let run = runtime
                .block_on(reveal::run_analysis(
                    &researcher,
                    (&query, &credential),
                    &targets,
                    (&client_key, &study_id),
                    timeout,
                    r as u64,
                ))
                .map_err(|e| format!("{name}: {e}"))?;
            times.push(started.elapsed());
            total_bytes = run.totals.last().map_or(0, |t| t.to_bytes().len());
        }
        rows.push(Row {
            analysis: name,
            hospitals,
            p50_ms: ms(pct(&mut times, 0.5)),
            p95_ms: ms(pct(&mut times, 0.95)),
            slots,
            total_bytes,
        });
    }
    for i in 0..c.members.len() {
        c.stop(i).map_err(err)?;
    }
    Ok(rows)
}
