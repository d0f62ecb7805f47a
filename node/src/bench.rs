//! `witmed bench`: import and query speed, each printed beside the raw cost of the same work.
//!
//! Benchmarks run in whatever profile the binary was built with (the
//! project builds one profile: dependencies optimised, see Cargo.toml) and
//! print the command, the machine's core count and every figure with its
//! limit, so a reader can judge the overhead.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rocksdb::{WriteBatch, WriteOptions, DB};
use witmed_crypto::{KeyPair, Role};
use witmed_protocol::query::Query;
use witmed_simnet::cohort;

use crate::import::{self, physionet};
use crate::node::{self, Node};
use crate::{consent_ops, engine, setup, unix_now};

type Result<T> = std::result::Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "{cores} cores, {} build",
        if cfg!(debug_assertions) {
            "dev-profile (deps optimised)"
        } else {
            "release"
        }
    )
}

/// PhysioNet record texts: from a set dir, or generated.
fn record_texts(set_dir: Option<&Path>, patients: usize) -> Result<Vec<(String, Vec<u8>)>> {
    match set_dir {
        Some(dir) => physionet::list_set_files(dir)
            .map_err(err)?
            .into_iter()
            .map(|p| Ok((p.display().to_string(), std::fs::read(&p).map_err(err)?)))
            .collect(),
        None => Ok(synthetic_texts(patients, 48, 1.0)),
    }
}

fn synthetic_texts(patients: usize, hours: u32, samples_per_hour: f64) -> Vec<(String, Vec<u8>)> {
    let config = cohort::Config {
        patients,
        seed: 7,
        hours,
        samples_per_hour,
        ..cohort::Config::default()
    };
    cohort::generate(&config)
        .map(|p| {
            (
                format!("synthetic/{}.txt", p.record_id),
                p.to_physionet_text().into_bytes(),
            )
        })
        .collect()
}

fn fresh_node(dir: &Path, name: &str) -> Result<Node> {
    node::init(dir, name, vec![], unix_now()).map_err(err)?;
    Node::open(dir, unix_now()).map_err(err)
}

/// Import throughput beside raw synced RocksDB batches of the same plaintext bytes.
pub fn import(set_dir: Option<&Path>, patients: usize) -> Result<()> {
    let texts = record_texts(set_dir, patients)?;
    let tmp = tempdir()?;
    let node = fresh_node(&tmp.join("node"), "bench")?;
    let options = import::Options::default();
    let started = Instant::now();
    let sources = texts.iter().map(|(n, b)| Ok((n.clone(), b.clone())));
    let summary = import::import_physionet_sources(
        &node.store,
        node.pseudonyms(),
        texts.len(),
        sources,
        &BTreeMap::new(),
        &options,
    )
    .map_err(err)?;
    let took = started.elapsed();
    let (raw_took, raw_records, raw_bytes) =
        raw_rocksdb(&tmp.join("raw"), &texts, options.batch_files)?;
    let rate = summary.observations as f64 / took.as_secs_f64();
    let raw_rate = raw_records as f64 / raw_took.as_secs_f64();
    println!(
        "witmed bench import ({}; {} files, {} observations)",
        machine(),
        texts.len(),
        summary.observations
    );
    println!("{:<44} {:>14} {:>12}", "", "obs/s", "seconds");
    println!(
        "{:<44} {:>14.0} {:>12.2}",
        "witmed import (parse, HMAC, AES-GCM, sync)",
        rate,
        took.as_secs_f64()
    );
    println!(
        "{:<44} {:>14.0} {:>12.2}",
        "raw RocksDB batches, same plaintext bytes",
        raw_rate,
        raw_took.as_secs_f64()
    );
    println!(
        "import runs at {:.0}% of the raw rate ({} bytes of keys+values written raw)",
        100.0 * rate / raw_rate,
        raw_bytes
    );
    Ok(())
}

/// Writes the same keys and unencrypted values in the same batches, synced.
fn raw_rocksdb(
    dir: &Path,
    texts: &[(String, Vec<u8>)],
    batch_files: usize,
) -> Result<(Duration, u64, u64)> {
    let mut batches = Vec::new();
    let (mut records, mut bytes) = (0u64, 0u64);
    for chunk in texts.chunks(batch_files) {
        let mut batch = Vec::new();
        for (name, text) in chunk {
            let parsed = physionet::parse_record(name, &text[..]).map_err(err)?;
            let p = witmed_crypto::Pseudonym(
                witmed_crypto::sha256(parsed.patient.source_id.as_bytes())[..16]
                    .try_into()
                    .expect("16"),
            );
            for o in &parsed.observations {
                let key = crate::store::observation_key(&p, &o.code, o.time_s, o.disambiguator);
                let value = postcard::to_stdvec(&crate::store::ObservationRecord {
                    version: 1,
                    value: o.value,
                })
                .map_err(err)?;
                bytes += (key.len() + value.len()) as u64;
                batch.push((key, value));
            }
            records += parsed.observations.len() as u64;
        }
        batches.push(batch);
    }
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.set_compression_type(rocksdb::DBCompressionType::None);
    let db = DB::open(&opts, dir).map_err(err)?;
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    let started = Instant::now();
    for batch in batches {
        let mut wb = WriteBatch::default();
        for (k, v) in batch {
            wb.put(k, v);
        }
        db.write_opt(wb, &sync).map_err(err)?;
    }
    Ok((started.elapsed(), records, bytes))
}

fn tempdir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "witmed-bench-{}-{}",
        std::process::id(),
        unix_now()
    ));
    std::fs::create_dir_all(&dir).map_err(err)?;
    Ok(dir)
}

const COUNT_QUERY: &str = r#"
version = 1
id = "ID"
purpose = "HMB"
aggregate = "count"
[cohort]
age_min = 65
has_observation = ["8867-4"]
[privacy]
mode = "dp"
epsilon = 0.01
"#;

const MEAN_QUERY: &str = r#"
version = 1
id = "ID"
purpose = "HMB"
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
epsilon = 0.01
"#;

/// Local query latency over a synthetic cohort, beside a plain loop over the same values.
pub fn query(patients: usize, repetitions: usize) -> Result<()> {
    let tmp = tempdir()?;
    let node = fresh_node(&tmp.join("node"), "bench")?;
    eprintln!("generating and importing {patients} synthetic patients...");
    let texts = synthetic_texts(patients, 12, 0.5);
    let sources = texts.into_iter().map(Ok);
    let summary = import::import_physionet_sources(
        &node.store,
        node.pseudonyms(),
        patients,
        sources,
        &BTreeMap::new(),
        &import::Options::default(),
    )
    .map_err(err)?;
    let now = unix_now();
    consent_ops::simulate(&node, 1.0, &["HMB".to_string()], 1, now).map_err(err)?;
    let authority = KeyPair::generate(Role::Authority).map_err(err)?;
    let researcher = KeyPair::generate(Role::Researcher).map_err(err)?;
    setup::trust_issuer(&node, authority.public(), 1e6, 10, now).map_err(err)?;
    let credential = setup::credential(&authority, researcher.public(), &["HMB"], now);
    let build = Instant::now();
    node.index().map_err(err)?;
    let index_took = build.elapsed();
    println!(
        "witmed bench query ({}; {patients} patients, {} observations; index built in {:.2} s)",
        machine(),
        summary.observations,
        index_took.as_secs_f64()
    );
    println!(
        "{:<34} {:>10} {:>10} {:>16}",
        "", "p50 ms", "p95 ms", "plain loop ms"
    );
    for (name, template) in [
        ("count, age >= 65 with HR", COUNT_QUERY),
        ("mean HR, age >= 65", MEAN_QUERY),
    ] {
        let mut times = Vec::with_capacity(repetitions);
        let mut loop_times = Vec::with_capacity(repetitions);
        for r in 0..repetitions {
            let query = Query::from_toml(&template.replace("\"ID\"", &format!("\"{name}-{r}\"")))
                .map_err(err)?;
            let started = Instant::now();
            engine::answer(&node, &query, &researcher.public(), &credential, now).map_err(err)?;
            times.push(started.elapsed());
            loop_times.push(plain_loop(&node, &query)?);
        }
        println!(
            "{:<34} {:>10.3} {:>10.3} {:>16.3}",
            name,
            ms(pct(&mut times, 0.5)),
            ms(pct(&mut times, 0.95)),
            ms(pct(&mut loop_times, 0.5))
        );
    }
    println!("(each answer includes consent checks for every patient, OpenDP, and a synced ledger write)");
    Ok(())
}

/// The limit: the same per-patient values reduced and aggregated in a plain loop, no privacy.
fn plain_loop(node: &Node, query: &Query) -> Result<Duration> {
    let index = node.index().map_err(err)?;
    let started = Instant::now();
    let values = engine::values_for(&index, query, |_| true);
    let total: f64 = values.iter().sum();
    std::hint::black_box((total, values.len()));
    Ok(started.elapsed())
}

fn pct(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    times[((times.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
