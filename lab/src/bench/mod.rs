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

use crate::setup;
use witmed_node::import::{self, physionet};
use witmed_node::node::{self, Node};
use witmed_node::{consent_ops, engine, unix_now};

pub mod analyses;
pub mod encrypted;
pub mod encrypted_analysis;
pub mod ingest;

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
    let scratch = tempdir()?;
    let tmp = scratch.path();
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
    outln!(
        "witmed bench import ({}; {} files, {} observations)",
        machine(),
        texts.len(),
        summary.observations
    );
    outln!("{:<44} {:>14} {:>12}", "", "obs/s", "seconds");
    outln!(
        "{:<44} {:>14.0} {:>12.2}",
        "witmed import (parse, HMAC, AES-GCM, sync)",
        rate,
        took.as_secs_f64()
    );
    outln!(
        "{:<44} {:>14.0} {:>12.2}",
        "raw RocksDB batches, same plaintext bytes",
        raw_rate,
        raw_took.as_secs_f64()
    );
    outln!(
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
    // The same keyed code digests as the store's keys, so keys are the same size.
    let codes = witmed_crypto::code_digest::CodeDigester::new(
        &witmed_crypto::at_rest::MasterKey::from_bytes([0; 32]),
    );
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
                let code = codes.observation(&o.code);
                let key = witmed_node::store::observation_key(&p, &code, o.time_s, o.disambiguator);
                let value = postcard::to_stdvec(&witmed_node::store::ObservationRecord {
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

/// A scratch directory for one benchmark, removed when it ends.
fn tempdir() -> Result<crate::ScratchDir> {
    crate::ScratchDir::new(&format!(
        "witmed-bench-{}-{}",
        std::process::id(),
        unix_now()
    ))
    .map_err(err)
}

/// A node over a synthetic cohort where everyone consents, and a researcher it trusts.
struct Bench {
    node: Node,
    researcher: KeyPair,
    credential: witmed_crypto::Envelope,
    observations: u64,
    now: i64,
}

fn bench_node(dir: &Path, patients: usize, budget: f64, min_cohort: u64) -> Result<Bench> {
    let node = fresh_node(&dir.join("node"), "bench")?;
    let texts = synthetic_texts(patients, 12, 0.5);
    let summary = import::import_physionet_sources(
        &node.store,
        node.pseudonyms(),
        patients,
        texts.into_iter().map(Ok),
        &BTreeMap::new(),
        &import::Options::default(),
    )
    .map_err(err)?;
    let now = unix_now();
    consent_ops::allow_demonstration_data(&node, now).map_err(err)?;
    crate::simulate::simulate(&node, 1.0, &["HMB".to_string()], 1, now).map_err(err)?;
    let authority = KeyPair::generate(Role::Authority).map_err(err)?;
    let researcher = KeyPair::generate(Role::Researcher).map_err(err)?;
    setup::trust_issuer(&node, authority.public(), budget, min_cohort, now).map_err(err)?;
    let credential = setup::credential(&authority, researcher.public(), &["HMB"], now);
    Ok(Bench {
        node,
        researcher,
        credential,
        observations: summary.observations,
        now,
    })
}

/// The benchmarks' count: patients aged 65 or more with a heart rate, id "ID".
fn count_query() -> String {
    witmed_protocol::examples::count_over_65("ID", 0.01).replace(
        "age_min = 65",
        "age_min = 65\nhas_observation = [\"8867-4\"]",
    )
}

/// The benchmarks' mean: README's mean heart rate over 65, id "ID".
fn mean_query() -> String {
    witmed_protocol::examples::mean_heart_rate_over_65("ID", "HMB", 0.01)
}

/// Local query latency over a synthetic cohort, beside a plain loop over the same values.
pub fn query(patients: usize, repetitions: usize) -> Result<()> {
    let scratch = tempdir()?;
    let tmp = scratch.path();
    eprintln!("generating and importing {patients} synthetic patients...");
    let Bench {
        node,
        researcher,
        credential,
        observations,
        now,
    } = bench_node(tmp, patients, 1e6, 10)?;
    let build = Instant::now();
    node.index().map_err(err)?;
    let index_took = build.elapsed();
    outln!(
        "witmed bench query ({}; {patients} patients, {} observations; index built in {:.2} s)",
        machine(),
        observations,
        index_took.as_secs_f64()
    );
    outln!(
        "{:<34} {:>10} {:>10} {:>16}",
        "",
        "p50 ms",
        "p95 ms",
        "plain loop ms"
    );
    for (name, template) in [
        ("count, age >= 65 with HR", count_query()),
        ("mean HR, age >= 65", mean_query()),
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
        outln!(
            "{:<34} {:>10.3} {:>10.3} {:>16.3}",
            name,
            ms(pct(&mut times, 0.5)),
            ms(pct(&mut times, 0.95)),
            ms(pct(&mut loop_times, 0.5))
        );
    }
    outln!("(each answer includes consent checks for every patient, OpenDP, and a synced ledger write)");
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

/// One measured configuration of the federated benchmark.
#[derive(Debug, Clone)]
pub struct FederatedRow {
    pub hospitals: usize,
    pub patients_per_hospital: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub request_bytes: usize,
    pub response_bytes: usize,
    pub loopback_p50_ms: f64,
}

/// Federated count latency (client's view: dial, Noise, query, answer, verify) for each hospital count.
pub fn federated(
    hospitals: &[usize],
    patients: &[usize],
    repetitions: usize,
    csv: Option<&Path>,
    svg: Option<&Path>,
) -> Result<()> {
    outln!(
        "witmed bench federation ({}; synthetic patients, {repetitions} queries per row)",
        machine()
    );
    outln!(
        "{:>9} {:>12} {:>10} {:>10} {:>12} {:>12} {:>20}",
        "hospitals",
        "patients/h",
        "p50 ms",
        "p95 ms",
        "request B",
        "response B",
        "loopback p50 ms"
    );
    let mut rows = Vec::new();
    for &p in patients {
        for &n in hospitals {
            let row = federated_one(n, p, repetitions)?;
            outln!(
                "{:>9} {:>12} {:>10.2} {:>10.2} {:>12} {:>12} {:>20.3}",
                row.hospitals,
                row.patients_per_hospital,
                row.p50_ms,
                row.p95_ms,
                row.request_bytes,
                row.response_bytes,
                row.loopback_p50_ms
            );
            rows.push(row);
        }
    }
    outln!("(loopback: a plain TCP connect + send + receive of the same request and response sizes, one hospital)");
    if let Some(path) = csv {
        let mut text = "hospitals,patients_per_hospital,p50_ms,p95_ms,request_bytes,response_bytes,loopback_p50_ms\n".to_string();
        for r in &rows {
            text.push_str(&format!(
                "{},{},{:.3},{:.3},{},{},{:.4}\n",
                r.hospitals,
                r.patients_per_hospital,
                r.p50_ms,
                r.p95_ms,
                r.request_bytes,
                r.response_bytes,
                r.loopback_p50_ms
            ));
        }
        std::fs::write(path, text).map_err(err)?;
        outln!("wrote {}", path.display());
    }
    if let Some(path) = svg {
        // The chart shows the hospital sweep at the first patient count.
        let sweep: Vec<FederatedRow> = rows
            .iter()
            .filter(|r| Some(&r.patients_per_hospital) == patients.first())
            .cloned()
            .collect();
        std::fs::write(path, latency_svg(&sweep, &machine())).map_err(err)?;
        outln!("wrote {}", path.display());
    }
    Ok(())
}

/// Starts `hospitals` nodes on loopback under `root`, each with `patients`
/// synthetic patients (short stays, all consenting).
fn synthetic_cluster(
    root: &Path,
    hospitals: usize,
    patients: usize,
    seed: u64,
) -> Result<witmed_simnet::cluster::Cluster> {
    use witmed_simnet::cluster::{self, Cluster, Options};
    let written = cohort::write_physionet_set(
        &root.join("cohort"),
        &cohort::Config {
            patients: patients * hospitals,
            seed,
            hours: 12,
            samples_per_hour: 0.5,
            ..cohort::Config::default()
        },
    )
    .map_err(err)?;
    let files = physionet::list_set_files(&written.dir).map_err(err)?;
    let options = Options {
        bin: std::env::current_exe().map_err(err)?,
        root: root.join("cluster"),
        consent_rate: 1.0,
        outcomes: None,
        proxied: false,
        node_env: vec![],
    };
    eprintln!("setting up {hospitals} hospitals with {patients} patients each...");
    let mut c = Cluster::build(&options, &cluster::split(&files, hospitals)).map_err(err)?;
    c.start_all().map_err(err)?;
    Ok(c)
}

fn federated_one(hospitals: usize, patients: usize, repetitions: usize) -> Result<FederatedRow> {
    let scratch = tempdir()?;
    let mut c = synthetic_cluster(scratch.path(), hospitals, patients, 11)?;
    let (researcher, credential, targets) = crate::demo::researcher_of(&c)?;
    let runtime = witmed_net::runtime().map_err(err)?;
    let mut times = Vec::with_capacity(repetitions);
    let (mut request_bytes, mut response_bytes) = (0, 0);
    for r in 0..repetitions {
        let q = Query::from_toml(
            &count_query()
                .replace("\"ID\"", &format!("\"fed-{hospitals}-{r}\""))
                .replace("0.01", "0.001"),
        )
        .map_err(err)?;
        let request = witmed_net::client::request_for(q, &credential, unix_now())?;
        request_bytes = request.sign(&researcher).to_bytes().len();
        let started = Instant::now();
        let results = runtime
            .block_on(witmed_net::client::ask(
                &researcher,
                &request,
                &targets,
                Duration::from_secs(30),
            ))
            .map_err(err)?;
        times.push(started.elapsed());
        for res in &results {
            match &res.status {
                witmed_net::client::Status::Answered(a) => {
                    response_bytes = answer_size(a, &researcher)
                }
                other => return Err(format!("{} did not answer: {other:?}", res.name)),
            }
        }
    }
    for i in 0..c.members.len() {
        c.stop(i).map_err(err)?;
    }
    Ok(FederatedRow {
        hospitals,
        patients_per_hospital: patients,
        p50_ms: ms(pct(&mut times, 0.5)),
        p95_ms: ms(pct(&mut times, 0.95)),
        request_bytes,
        response_bytes,
        loopback_p50_ms: loopback_round_trip(request_bytes, response_bytes, repetitions.max(20))?,
    })
}

/// Size of a signed response carrying `answer` (the same size a node sends).
fn answer_size(answer: &witmed_protocol::Answer, key: &KeyPair) -> usize {
    use witmed_protocol::wire::{NodeResponse, Outcome, WIRE_VERSION};
    NodeResponse {
        version: WIRE_VERSION,
        node: key.public(),
        node_name: answer.node.clone(),
        query_id: answer.query_id.clone(),
        query_digest: answer.query_digest,
        outcome: Outcome::Answered(answer.clone()),
    }
    .sign(key)
    .to_bytes()
    .len()
}

/// The limit: a fresh TCP connection on loopback that sends `request` bytes and reads `response` bytes back.
fn loopback_round_trip(request: usize, response: usize, repetitions: usize) -> Result<f64> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        for _ in 0..repetitions {
            let (mut s, _) = listener.accept()?;
            let mut buf = vec![0u8; request];
            s.read_exact(&mut buf)?;
            s.write_all(&vec![1u8; response])?;
        }
        Ok(())
    });
    let mut times = Vec::with_capacity(repetitions);
    for _ in 0..repetitions {
        let started = Instant::now();
        let mut s = std::net::TcpStream::connect(addr).map_err(err)?;
        s.set_nodelay(true).map_err(err)?;
        s.write_all(&vec![0u8; request]).map_err(err)?;
        let mut buf = vec![0u8; response];
        s.read_exact(&mut buf).map_err(err)?;
        times.push(started.elapsed());
    }
    server
        .join()
        .map_err(|_| "loopback server panicked".to_string())?
        .map_err(err)?;
    Ok(ms(pct(&mut times, 0.5)))
}

/// Picks one figure of a row, for one line of the chart.
type Pick = dyn Fn(&FederatedRow) -> f64;

/// A small SVG line chart of federated latency against the number of hospitals.
///
/// Plain SVG text: a chart this simple needs no plotting library (and no fonts).
pub fn latency_svg(rows: &[FederatedRow], machine: &str) -> String {
    let (w, h, left, bottom, top, right) = (640.0, 360.0, 60.0, 40.0, 40.0, 20.0);
    let max_x = rows.iter().map(|r| r.hospitals).max().unwrap_or(1) as f64;
    let max_y = rows.iter().map(|r| r.p95_ms).fold(1.0, f64::max) * 1.15;
    let x = |v: f64| left + (w - left - right) * (v.max(1.0).ln() / max_x.max(2.0).ln());
    let y = |v: f64| h - bottom - (h - top - bottom) * v / max_y;
    let line = |pick: &Pick| {
        rows.iter()
            .map(|r| format!("{:.1},{:.1}", x(r.hospitals as f64), y(pick(r))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"20\" font-size=\"14\">witmed federated count latency ({machine})</text>\n\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for r in rows {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            x(r.hospitals as f64),
            h - bottom + 16.0,
            r.hospitals
        ));
    }
    for i in 0..=4 {
        let v = max_y * i as f64 / 4.0;
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>\n",
            left - 6.0,
            y(v) + 4.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">hospitals (log scale)</text>\n",
        (left + w - right) / 2.0,
        h - 6.0
    ));
    svg.push_str(&format!("<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">ms</text>\n", h / 2.0, h / 2.0));
    let series: [(&str, &str, &Pick); 3] = [
        ("p50", "#1f77b4", &|r| r.p50_ms),
        ("p95", "#d62728", &|r| r.p95_ms),
        ("loopback round trip", "#7f7f7f", &|r| r.loopback_p50_ms),
    ];
    for (i, (name, colour, pick)) in series.iter().enumerate() {
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            line(pick)
        ));
        let ly = top + 14.0 * i as f64;
        svg.push_str(&format!(
            "<line x1=\"{:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/><text x=\"{:.1}\" y=\"{:.1}\">{name}</text>\n",
            left + 10.0,
            left + 30.0,
            left + 36.0,
            ly + 4.0
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// DP error against epsilon: mean absolute error of count and mean queries on one node, beside the
/// error the Laplace scale predicts, and the 95% interval's half-width.
pub fn dp_error(patients: usize, repetitions: usize, csv: Option<&Path>) -> Result<()> {
    let scratch = tempdir()?;
    let tmp = scratch.path();
    let Bench {
        node,
        researcher,
        credential,
        now,
        ..
    } = bench_node(tmp, patients, 1e9, 0)?;
    let index = node.index().map_err(err)?;
    outln!("witmed bench dp-error ({}; {patients} synthetic patients, {repetitions} queries per point)", machine());
    outln!(
        "{:>8} {:>16} {:>16} {:>14} {:>16} {:>14}",
        "epsilon",
        "count MAE",
        "count expected",
        "count CI +-",
        "mean HR MAE",
        "mean CI +-"
    );
    let mut text =
        "epsilon,count_mae,count_expected_mae,count_ci_halfwidth,mean_mae,mean_ci_halfwidth\n"
            .to_string();
    for (k, epsilon) in [0.1f64, 0.25, 0.5, 1.0, 2.0, 4.0].into_iter().enumerate() {
        let mut errors = [0.0f64; 2];
        let mut halfwidths = [0.0f64; 2];
        for (j, template) in [count_query(), mean_query()].into_iter().enumerate() {
            let first = Query::from_toml(&template.replace("\"ID\"", "\"x\"")).map_err(err)?;
            let values = engine::values_for(&index, &first, |_| true);
            let exact = if j == 0 {
                values.len() as f64
            } else {
                values.iter().map(|v| v.clamp(30.0, 200.0)).sum::<f64>() / values.len() as f64
            };
            for r in 0..repetitions {
                let text = template
                    .replace("\"ID\"", &format!("\"err-{k}-{j}-{r}\""))
                    .replace("epsilon = 0.01", &format!("epsilon = {epsilon}"));
                let answer = engine::answer(
                    &node,
                    &Query::from_toml(&text).map_err(err)?,
                    &researcher.public(),
                    &credential,
                    now,
                )
                .map_err(err)?;
                let value = answer.released.value.unwrap_or(f64::NAN);
                let (lo, hi) = answer.released.ci95.unwrap_or((f64::NAN, f64::NAN));
                errors[j] += (value - exact).abs() / repetitions as f64;
                halfwidths[j] += (hi - lo) / 2.0 / repetitions as f64;
            }
        }
        // A count's noise is discrete Laplace with scale b = 1/epsilon:
        // P(k) ∝ p^|k| with p = e^(-1/b), so E|X| = 2p / ((1 + p)(1 - p)).
        let p = (-epsilon).exp();
        let expected = 2.0 * p / ((1.0 + p) * (1.0 - p));
        outln!(
            "{epsilon:>8} {:>16.3} {expected:>16.3} {:>14.3} {:>16.4} {:>14.4}",
            errors[0],
            halfwidths[0],
            errors[1],
            halfwidths[1]
        );
        text.push_str(&format!(
            "{epsilon},{:.4},{expected:.4},{:.4},{:.5},{:.5}\n",
            errors[0], halfwidths[0], errors[1], halfwidths[1]
        ));
    }
    if let Some(path) = csv {
        std::fs::write(path, text).map_err(err)?;
        outln!("wrote {}", path.display());
    }
    Ok(())
}
