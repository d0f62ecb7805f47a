//! `witmed-lab bench ingest`: sustained signed device readings per second into one node over HTTP on loopback, with its memory, beside synced raw RocksDB writes of the same bytes; federated query latency before and while it ingests.
//!
//! A real federation (simnet: node processes, libp2p on loopback); hospital 1 also serves HTTP
//! and holds the PhysioNet stays the simulated devices replay, as fast as it accepts them, over
//! `connections` kept-alive connections in batches of `batch` signed readings. Meanwhile a
//! researcher's client asks every hospital a count query five times a second, and the node's
//! resident memory is sampled from /proc.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocksdb::{WriteBatch, WriteOptions, DB};
use witmed_protocol::query::Query;
use witmed_simnet::cluster::{self, Cluster, Options, Spec};

use super::{count_query, err, machine, ms, pct, tempdir, Result};

/// A percentile in ms, or NaN when nothing was measured.
fn pct_ms(times: &mut [Duration], p: f64) -> f64 {
    if times.is_empty() {
        f64::NAN
    } else {
        ms(pct(times, p))
    }
}
use crate::device::simulate::{self, Device};
use crate::device::stays;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Config {
    pub set_dir: PathBuf,
    /// Stays replayed (one device each) into hospital 1.
    pub patients: usize,
    /// Hospitals in the federation (each also holds other stays of the set).
    pub hospitals: usize,
    /// How long to ingest.
    pub seconds: u64,
    pub connections: usize,
    pub batch: usize,
}

/// The stays' files plus `others` more per other hospital, split into hospitals.
fn specs(config: &Config, chosen: &[stays::Stay]) -> Result<Vec<Spec>> {
    let files = stays::files(&config.set_dir).map_err(err)?;
    let path_of = |id: &str| config.set_dir.join(format!("{id}.txt"));
    let first: Vec<PathBuf> = chosen.iter().map(|s| path_of(&s.record_id)).collect();
    let rest: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| !first.contains(f))
        .take(100 * config.hospitals.saturating_sub(1))
        .collect();
    let mut specs = vec![Spec {
        name: "Hospital-1".into(),
        records: first,
        misbehave: None,
    }];
    for (i, spec) in cluster::split(&rest, config.hospitals.saturating_sub(1))
        .into_iter()
        .enumerate()
    {
        specs.push(Spec {
            name: format!("Hospital-{}", i + 2),
            ..spec
        });
    }
    Ok(specs)
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(err)?;
    Ok(l.local_addr().map_err(err)?.port())
}

/// A researcher's pace: one federated query every this often (a steady research load, not a
/// flood that would take the cores from ingestion).
const QUERY_EVERY: Duration = Duration::from_millis(200);

/// Federated count latencies, one query every [`QUERY_EVERY`], until `stop` (or `count` queries).
fn query_loop(c: &Cluster, tag: &str, count: usize, stop: &AtomicBool) -> Result<Vec<Duration>> {
    let (researcher, credential, targets) = crate::demo::researcher_of(c)?;
    let runtime = witmed_net::runtime().map_err(err)?;
    let mut times = Vec::new();
    for r in 0..count {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let q = Query::from_toml(
            &count_query()
                .replace("\"ID\"", &format!("\"ingest-{tag}-{r}\""))
                .replace("0.01", "0.001"),
        )
        .map_err(err)?;
        let request = witmed_net::client::request_for(q, &credential, witmed_node::unix_now())?;
        let started = Instant::now();
        let results = runtime
            .block_on(witmed_net::client::ask(
                &researcher,
                &request,
                &targets,
                Duration::from_secs(30),
            ))
            .map_err(err)?;
        let took = started.elapsed();
        times.push(took);
        for res in &results {
            if !matches!(res.status, witmed_net::client::Status::Answered(_)) {
                return Err(format!("{} did not answer: {:?}", res.name, res.status));
            }
        }
        if let Some(rest) = QUERY_EVERY.checked_sub(took) {
            std::thread::sleep(rest);
        }
    }
    Ok(times)
}

/// Samples a process's resident memory (KiB) every 200 ms until `stop`; returns the peak and last.
fn sample_rss(pid: u32, stop: &AtomicBool) -> (u64, u64) {
    let (mut peak, mut last) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        if let Some(kib) = rss_kib(pid) {
            peak = peak.max(kib);
            last = kib;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    (peak, last)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Batches of one monitor, and how many at each end are timed.
const MONITOR_BATCHES: usize = 200;
const MONITOR_TIMED: usize = 40;
const MONITOR_SPAN: usize = MONITOR_TIMED * 128;

/// One patient's bedside monitor sending all seven NEWS2 vital signs every
/// second, straight into a node (no HTTP): readings per second over the
/// first and the last batches of an hour. Equal rates mean a batch's cost
/// does not grow with the readings already in the patient's NEWS2 window.
fn monitor_rate(dir: &Path) -> Result<(f64, f64)> {
    use witmed_node::{devices, import, ingest, node};
    let now = witmed_node::unix_now();
    node::init(dir, "Monitor", vec![], now).map_err(err)?;
    let node = node::Node::open(dir, now).map_err(err)?;
    let record = b"Time,Parameter,Value\n00:00,RecordID,1\n00:00,Age,70\n00:00,Gender,1\n".to_vec();
    let options = import::Options {
        now,
        ..import::Options::default()
    };
    let sources = std::iter::once(Ok(("monitor/1.txt".to_string(), record)));
    import::import_physionet_sources(
        &node.store,
        node.pseudonyms(),
        1,
        sources,
        &Default::default(),
        &options,
    )
    .map_err(err)?;
    let patient = node.pseudonyms().pseudonym(import::PHYSIONET, "1");
    let device = witmed_crypto::KeyPair::generate(witmed_crypto::Role::Patient).map_err(err)?;
    devices::enrol(&node, device.public(), patient, "monitor", now).map_err(err)?;
    let vitals = [
        ("9279-1", 16.0, "/min"),
        ("59408-5", 97.0, "%"),
        ("3150-0", 21.0, "%"),
        ("8480-6", 120.0, "mm[Hg]"),
        ("8867-4", 80.0, "/min"),
        ("67775-7", 0.0, "{ACVPU}"),
        ("8310-5", 37.0, "Cel"),
    ];
    let start = now - (MONITOR_BATCHES * 128 / vitals.len()) as i64 - 60;
    let mut seq = 0u64;
    let mut elapsed = Vec::with_capacity(MONITOR_BATCHES);
    for _ in 0..MONITOR_BATCHES {
        let readings: Vec<_> = (0..128)
            .map(|_| {
                let (code, value, unit) = vitals[seq as usize % vitals.len()];
                let reading = witmed_protocol::device_request::Reading {
                    seq: seq + 1,
                    time: start + (seq / vitals.len() as u64) as i64,
                    code: code.into(),
                    value,
                    unit: unit.into(),
                };
                seq += 1;
                reading
            })
            .collect();
        let started = Instant::now();
        ingest::ingest(&node, &device.public(), &readings, &Default::default(), now)
            .map_err(err)?;
        elapsed.push(started.elapsed());
    }
    let rate =
        |batches: &[Duration]| MONITOR_SPAN as f64 / batches.iter().sum::<Duration>().as_secs_f64();
    Ok((
        rate(&elapsed[..MONITOR_TIMED]),
        rate(&elapsed[MONITOR_BATCHES - MONITOR_TIMED..]),
    ))
}

/// Synced raw RocksDB batches: `batches` writes of `per_batch` records of `record_bytes` each
/// (key 64 bytes: patient, time, device, sequence number). Returns records per second.
fn raw_rate(dir: &Path, batches: u64, per_batch: usize, record_bytes: usize) -> Result<f64> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.set_compression_type(rocksdb::DBCompressionType::None);
    let db = DB::open(&opts, dir).map_err(err)?;
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    let value = vec![7u8; record_bytes];
    let started = Instant::now();
    let mut n: u64 = 0;
    for _ in 0..batches {
        let mut wb = WriteBatch::default();
        for _ in 0..per_batch {
            n += 1;
            let mut key = [0u8; 64];
            key[..8].copy_from_slice(&n.to_be_bytes());
            wb.put(key, &value);
        }
        db.write_opt(wb, &sync).map_err(err)?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Bytes of one reading inside a signed JSON batch of `batch` typical readings.
fn bytes_per_reading(devices: &[Device], batch: usize) -> usize {
    let Some(d) = devices.first() else { return 100 };
    let readings: Vec<_> = d
        .readings
        .iter()
        .take(batch)
        .enumerate()
        .map(|(i, r)| witmed_protocol::device_request::Reading {
            seq: i as u64 + 1,
            time: witmed_node::unix_now(),
            code: r.vital.code().to_string(),
            value: r.value,
            unit: r.unit.to_string(),
        })
        .collect();
    let body = serde_json::to_vec(&witmed_protocol::device_request::Batch {
        version: witmed_protocol::device_request::VERSION,
        readings: readings.clone(),
    })
    .unwrap_or_default();
    body.len() / readings.len().max(1)
}

/// Runs the benchmark and prints its table.
pub fn run(config: &Config) -> Result<()> {
    let scratch = tempdir()?;
    let root = scratch.path();
    eprintln!(
        "choosing {} stays from {}...",
        config.patients,
        config.set_dir.display()
    );
    let chosen = simulate::choose_stays(&config.set_dir, config.patients).map_err(err)?;
    let options = Options {
        bin: std::env::current_exe().map_err(err)?,
        root: root.join("cluster"),
        consent_rate: 1.0,
        outcomes: None,
        proxied: false,
        node_env: vec![],
    };
    eprintln!("setting up {} hospitals...", config.hospitals);
    let mut c = Cluster::build(&options, &specs(config, &chosen)?).map_err(err)?;
    let http = format!("127.0.0.1:{}", free_port()?);
    // Devices on a ward come through one gateway address: lift the API's default rate limits,
    // which are set for people, to measure the node rather than the limiter.
    c.set_node_args(
        0,
        vec![
            "--http".into(),
            http.clone(),
            "--http-per-address-per-minute".into(),
            "10000000".into(),
            "--http-per-key-per-minute".into(),
            "10000000".into(),
        ],
    );
    c.start_all().map_err(err)?;
    let token_file = witmed_api::auth::staff_token_path(&c.members[0].data_dir);
    let sim = simulate::Config {
        node: format!("http://{http}"),
        staff_token: std::fs::read_to_string(&token_file)
            .map_err(|e| format!("{}: {e}", token_file.display()))?
            .trim()
            .to_string(),
        rate: 1e9,
        batch: config.batch,
        connections: config.connections,
        duration: Some(Duration::from_secs(config.seconds)),
    };
    let (node_id, devices) = simulate::enrol(&sim, chosen).map_err(err)?;
    let record_bytes = bytes_per_reading(&devices, config.batch);
    let pid = c.pid(0).ok_or("hospital 1 is not running")?;
    let idle_rss = rss_kib(pid).unwrap_or(0);

    let never = AtomicBool::new(false);
    let mut quiet = query_loop(&c, "quiet", 20, &never)?;

    let stop = Arc::new(AtomicBool::new(false));
    let (summary, mut busy, (peak_rss, last_rss)) = std::thread::scope(|scope| {
        let rss = scope.spawn(|| sample_rss(pid, &stop));
        let queries = scope.spawn(|| query_loop(&c, "busy", usize::MAX, &stop));
        let summary = simulate::replay(&sim, &node_id, devices, stop.clone());
        stop.store(true, Ordering::Relaxed);
        let busy = queries
            .join()
            .unwrap_or_else(|_| Err("query loop panicked".into()));
        let rss = rss.join().unwrap_or((0, 0));
        (summary, busy, rss)
    });
    let summary = summary.map_err(err)?;
    let busy = busy.as_mut().map_err(|e| e.clone())?;
    for i in 0..c.members.len() {
        c.stop(i).map_err(err)?;
    }
    let batches = summary.requests.max(1);
    let raw = raw_rate(
        &root.join("raw"),
        batches.min(5000),
        config.batch,
        record_bytes,
    )?;

    outln!(
        "witmed bench ingest ({}; {} devices into hospital 1 of {}, {}s, {} connections, {} readings per signed batch)",
        machine(),
        config.patients,
        config.hospitals,
        config.seconds,
        config.connections,
        config.batch
    );
    outln!("{:<58} {:>14}", "", "readings/s");
    outln!(
        "{:<58} {:>14.0}",
        "signed readings over HTTP, stored durably (node)",
        summary.stored_per_second()
    );
    outln!(
        "{:<58} {:>14.0}",
        format!("raw RocksDB synced batches, same count, {record_bytes} B/reading"),
        raw
    );
    outln!(
        "sent {} readings in {} requests; stored {}; {} refused; {} waits on a busy node; {} alerts raised",
        summary.sent,
        summary.requests,
        summary.stored,
        summary.refusals.len(),
        summary.throttled,
        summary.alerts.len()
    );
    if let Some((status, body)) = summary.refusals.first() {
        outln!("first refusal: HTTP {status}: {body}");
    }
    let (early, late) = monitor_rate(&root.join("monitor"))?;
    outln!(
        "one bedside monitor in-process (7 vital signs at 1 Hz, batches of 128): {early:.0} readings/s \
         over its first {MONITOR_SPAN} readings, {late:.0} over its last {MONITOR_SPAN} (its hour then holds {} readings)",
        MONITOR_BATCHES * 128,
    );
    outln!(
        "node memory (RSS): {} MiB idle, {} MiB peak while ingesting, {} MiB at the end",
        idle_rss / 1024,
        peak_rss / 1024,
        last_rss / 1024
    );
    outln!(
        "federated count over {} hospitals, one every 200 ms: p50 {:.1} ms, p95 {:.1} ms idle ({} queries); p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms while ingesting ({} queries)",
        config.hospitals,
        pct_ms(&mut quiet, 0.5),
        pct_ms(&mut quiet, 0.95),
        quiet.len(),
        pct_ms(busy, 0.5),
        pct_ms(busy, 0.95),
        pct_ms(busy, 1.0),
        busy.len()
    );
    Ok(())
}
