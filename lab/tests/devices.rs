//! Bedside devices end to end through `witmed-lab node run --http`: a node killed with SIGKILL while a device streams loses no acknowledged reading and stores none twice; a replayed PhysioNet stay raises NEWS2 alerts exactly where its score crosses the band, listed and acknowledged through the CLI.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use witmed_care::news2::{self, SpO2Scale};
use witmed_crypto::{KeyPair, Pseudonym, Role};
use witmed_node::devices;
use witmed_node::node::Node;
use witmed_node::store::cf;
use witmed_protocol::device_request::{self as wire, Reading, Signed};

/// A node running with its HTTP API on a loopback port it chose.
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(node: &Path, extra: &[&str]) -> Running {
    let mut child = witmed()
        .args(["node", "run", "--data-dir", s(node)])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--http", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let addr: SocketAddr = loop {
        let mut line = String::new();
        assert!(
            lines.read_line(&mut line).unwrap() > 0,
            "the node stopped before serving HTTP"
        );
        if let Some(rest) = line.trim().strip_prefix("http api on http://") {
            break rest.split('/').next().unwrap().parse().unwrap();
        }
    };
    // Keep reading what the node prints, so it never writes into a full or closed pipe.
    std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    Running { child, addr }
}

/// One POST of a signed batch: the status and body, or None when the node is gone.
fn post(addr: SocketAddr, signed: &Signed) -> Option<(u16, serde_json::Value)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        wire::PATH_READINGS,
        signed.body.len()
    );
    for (name, value) in &signed.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(&signed.body).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()?;
    Some((status, body))
}

fn now() -> i64 {
    witmed_node::unix_now()
}

/// A node holding the first `files` PhysioNet stays, with `device` enrolled (through the CLI) for the first.
fn node_with_device(root: &Path, device: &KeyPair) -> (std::path::PathBuf, Pseudonym, String) {
    let node = root.join("node");
    init_node(&node, "General");
    let set = small_set(root, 1);
    run_ok(&["import", "physionet", "--data-dir", s(&node), s(&set)]);
    let (patient, node_id) = first_patient(&node, &set);
    run_ok(&[
        "device",
        "enrol",
        "--data-dir",
        s(&node),
        "--patient",
        &patient,
        "--device",
        &device.public().to_hex(),
        "--label",
        "ward 3 bed 12",
    ]);
    (node, patient.parse().unwrap(), node_id)
}

/// Kill delays, deterministic.
fn delays(n: usize) -> Vec<Duration> {
    let mut x: u64 = 2026;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            Duration::from_millis(400 + (x >> 33) % 1000)
        })
        .collect()
}

/// What the streaming device knows between node restarts.
#[derive(Default)]
struct Device {
    next_seq: u64,
    /// A batch sent without an answer: resent first, unchanged in its readings.
    pending: Option<Vec<Reading>>,
    acknowledged: BTreeSet<u64>,
    /// Batches the node said it already had (stored before a crash, never acknowledged).
    already_stored: BTreeSet<u64>,
}

impl Device {
    fn batch(&mut self, start: i64) -> Vec<Reading> {
        if let Some(pending) = self.pending.take() {
            return pending;
        }
        (0..5)
            .map(|_| {
                self.next_seq += 1;
                Reading {
                    seq: self.next_seq,
                    time: start + self.next_seq as i64,
                    code: "8867-4".into(),
                    value: 60.0 + (self.next_seq % 40) as f64,
                    unit: "/min".into(),
                }
            })
            .collect()
    }

    /// Streams batches until the node stops answering.
    fn stream(mut self, key: &KeyPair, node_id: &str, addr: SocketAddr, start: i64) -> Device {
        loop {
            let batch = self.batch(start);
            let seqs: Vec<u64> = batch.iter().map(|r| r.seq).collect();
            match post(addr, &Signed::batch(key, node_id, now(), &batch)) {
                Some((200, receipt)) => {
                    assert_eq!(receipt["stored"], 5, "{receipt}");
                    self.acknowledged.extend(seqs);
                }
                Some((409, refusal)) if refusal["error"]["code"] == "replayed_sequence" => {
                    self.already_stored.extend(seqs);
                }
                Some((429, _)) => {
                    self.pending = Some(batch);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Some((status, body)) => panic!("unexpected {status}: {body}"),
                None => {
                    self.pending = Some(batch);
                    return self;
                }
            }
            std::thread::sleep(Duration::from_millis(15));
        }
    }
}

#[test]
fn a_node_killed_while_a_device_streams_keeps_every_acknowledged_reading_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let key = KeyPair::from_seed(Role::Device, &[7; 32]);
    let (node, patient, node_id) = node_with_device(tmp.path(), &key);
    let start_time = now() - 3600;
    let mut device = Device::default();
    for delay in delays(6) {
        let running = start(&node, &[]);
        let addr = running.addr;
        let (key_copy, id) = (KeyPair::from_seed(Role::Device, &[7; 32]), node_id.clone());
        let streaming = std::thread::spawn(move || device.stream(&key_copy, &id, addr, start_time));
        std::thread::sleep(delay);
        drop(running); // SIGKILL, then wait
        device = streaming.join().unwrap();
    }
    assert!(
        device.acknowledged.len() >= 20,
        "the device got some readings acknowledged: {}",
        device.acknowledged.len()
    );
    eprintln!(
        "acknowledged {}, stored but unacknowledged {}",
        device.acknowledged.len(),
        device.already_stored.len()
    );
    let opened = Node::open(&node, now()).unwrap();
    let logged = devices::readings_between(&opened, &patient, i64::MIN, i64::MAX, 1 << 20).unwrap();
    let stored: Vec<u64> = logged.iter().map(|r| r.seq).collect();
    let unique: BTreeSet<u64> = stored.iter().copied().collect();
    assert_eq!(unique.len(), stored.len(), "no reading stored twice");
    assert!(
        device.acknowledged.is_subset(&unique),
        "lost acknowledged readings: {:?}",
        device.acknowledged.difference(&unique).collect::<Vec<_>>()
    );
    assert!(device.already_stored.is_subset(&unique));
    // As observations too: one per logged reading, no more.
    let digest = opened.store.codes().observation("8867-4");
    let prefix = witmed_node::store::observation_prefix(&patient, &digest);
    let mut from_devices = 0;
    opened
        .store
        .scan_prefix(cf::OBSERVATIONS, &prefix, |key, _| {
            let tail: [u8; 4] = key[key.len() - 4..].try_into().unwrap();
            if u32::from_be_bytes(tail) >= 0x8000_0000 {
                from_devices += 1;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(from_devices, stored.len());
    let last = devices::find(&opened, &key.public())
        .unwrap()
        .unwrap()
        .last_seq;
    assert_eq!(last, unique.last().copied());
}

/// A PhysioNet stay's rows: (seconds since admission, parameter, value).
fn physionet_rows(file: &Path) -> Vec<(i64, String, f64)> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut parts = line.split(',');
            let (time, param, value) = (parts.next()?, parts.next()?, parts.next()?);
            let (h, m) = time.split_once(':')?;
            let at = h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60;
            Some((at, param.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The alerts NEWS2 should raise over a stay sent one time point per batch:
/// at each time with a fresh set, when the band reaches `level` and is above the band before.
fn expected_alerts(
    readings: &[witmed_care::physionet::DeviceReading],
    window: u32,
    level: wire::Band,
) -> Vec<(i64, u8)> {
    let canonical: Vec<news2::Reading> = readings.iter().filter_map(|r| r.canonical()).collect();
    let mut previous: Option<wire::Band> = None;
    let mut out = Vec::new();
    for (at, score) in news2::series(&canonical, window, SpO2Scale::One) {
        let band = witmed_node::ingest::band_of(score.band);
        if band >= level && previous.is_none_or(|p| band > p) {
            out.push((at, score.total));
        }
        previous = Some(band);
    }
    out
}

/// The first stay of set-a whose score starts below `level` and later crosses it, in at most 100 time points.
fn deteriorating_stay(
    window: u32,
    level: wire::Band,
) -> (
    std::path::PathBuf,
    Vec<Vec<witmed_care::physionet::DeviceReading>>,
) {
    for file in physionet_files(&set_a()).into_iter().take(400) {
        let rows = physionet_rows(&file);
        let stay =
            witmed_care::physionet::map_stay(rows.iter().map(|(t, p, v)| (*t, p.as_str(), *v)));
        let mut by_time: BTreeMap<i64, Vec<_>> = BTreeMap::new();
        for r in &stay.readings {
            by_time.entry(r.at).or_default().push(*r);
        }
        let canonical: Vec<news2::Reading> =
            stay.readings.iter().filter_map(|r| r.canonical()).collect();
        let series = news2::series(&canonical, window, SpO2Scale::One);
        let starts_low = series
            .first()
            .is_some_and(|(_, s)| witmed_node::ingest::band_of(s.band) < level);
        if starts_low
            && !expected_alerts(&stay.readings, window, level).is_empty()
            && by_time.len() <= 100
        {
            return (file, by_time.into_values().collect());
        }
    }
    panic!("no deteriorating stay in set-a");
}

#[test]
fn a_replayed_physionet_stay_raises_an_alert_exactly_where_its_news2_crosses_the_band() {
    let window = 4 * 3600;
    let level = wire::Band::Medium;
    let (file, points) = deteriorating_stay(window, level);
    let all: Vec<_> = points.concat();
    let expected = expected_alerts(&all, window, level);
    // The node's own copy of this stay is the imported one; the device replays it as live readings.
    let tmp = tempfile::tempdir().unwrap();
    let key = KeyPair::from_seed(Role::Device, &[9; 32]);
    let node = tmp.path().join("node");
    init_node(&node, "General");
    let set = tmp.path().join("set");
    std::fs::create_dir_all(&set).unwrap();
    std::fs::copy(&file, set.join(file.file_name().unwrap())).unwrap();
    run_ok(&["import", "physionet", "--data-dir", s(&node), s(&set)]);
    let (patient, node_id) = first_patient(&node, &set);
    run_ok(&[
        "device",
        "enrol",
        "--data-dir",
        s(&node),
        "--patient",
        &patient,
        "--device",
        &key.public().to_hex(),
    ]);
    let running = start(
        &node,
        &[
            "--news2-window-seconds",
            &window.to_string(),
            "--alert-band",
            "medium",
        ],
    );
    // The stay's 48 hours end a minute ago.
    let base = now() - 48 * 3600 - 60;
    let mut seq = 0;
    let mut raised = Vec::new();
    for point in &points {
        let batch: Vec<Reading> = point
            .iter()
            .map(|r| {
                seq += 1;
                Reading {
                    seq,
                    time: base + r.at,
                    code: r.vital.code().into(),
                    value: r.value,
                    unit: r.unit.into(),
                }
            })
            .collect();
        let (status, receipt) =
            post(running.addr, &Signed::batch(&key, &node_id, now(), &batch)).unwrap();
        assert_eq!(status, 200, "{receipt}");
        for alert in receipt["alerts"].as_array().unwrap() {
            assert_eq!(
                alert["at"],
                base + point[0].at,
                "raised at the batch that crossed"
            );
            raised.push((
                alert["at"].as_i64().unwrap() - base,
                alert["score"].as_u64().unwrap() as u8,
            ));
        }
    }
    eprintln!(
        "{}: {} time points, alerts at {raised:?}",
        file.display(),
        points.len()
    );
    assert_eq!(raised, expected, "{}", file.display());
    // Listed and acknowledged through the running node's admin channel.
    let listed = run_json(&["alerts", "--data-dir", s(&node), "--open"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), expected.len());
    let id = listed[0]["id"].as_str().unwrap();
    let acked = run_json(&[
        "alerts",
        "ack",
        id,
        "--by",
        "Dr Okafor",
        "--data-dir",
        s(&node),
    ]);
    assert_eq!(acked["ack"]["by"], "Dr Okafor");
    let open = run_json(&["alerts", "--data-dir", s(&node), "--open"]);
    assert_eq!(open.as_array().unwrap().len(), expected.len() - 1);
    let text = run_ok(&["alerts", "--data-dir", s(&node)]);
    assert!(text.contains("acknowledged by Dr Okafor"), "{text}");
}

/// A count of patients with an observation of `code`, at `epsilon`.
fn count_with(code: &str, id: &str, epsilon: f64) -> witmed_protocol::query::Query {
    witmed_protocol::query::Query::from_toml(&format!(
        r#"version = 1
id = "{id}"
purpose = "HMB"
aggregate = "count"

[cohort]
has_observation = ["{code}"]

[privacy]
mode = "dp"
epsilon = {epsilon:?}
"#
    ))
    .unwrap()
}

#[test]
fn device_readings_are_observations_a_dp_query_counts() {
    const NOW: i64 = 1_790_000_000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    witmed_node::node::init(&dir, "General", vec![], NOW).unwrap();
    let node = Node::open(&dir, NOW).unwrap();
    let set = small_set(tmp.path(), 40);
    let options = witmed_node::import::Options {
        now: NOW,
        ..Default::default()
    };
    witmed_node::import::import_physionet(&node.store, node.pseudonyms(), &set, None, &options)
        .unwrap();
    witmed_node::consent_ops::allow_demonstration_data(&node, NOW).unwrap();
    witmed_lab::simulate::simulate(&node, 1.0, &["HMB".to_string()], 1, NOW).unwrap();
    let authority = KeyPair::from_seed(Role::Authority, &[1; 32]);
    let researcher = KeyPair::from_seed(Role::Researcher, &[2; 32]);
    witmed_lab::setup::trust_issuer(&node, authority.public(), 1e6, 0, NOW).unwrap();
    let credential = witmed_lab::setup::credential(&authority, researcher.public(), &["HMB"], NOW);
    let ask = |id: &str| {
        let query = count_with("3151-8", id, 5.0);
        witmed_node::engine::answer(&node, &query, &researcher.public(), &credential, NOW)
            .unwrap()
            .released
            .value
            .unwrap()
    };
    // PhysioNet records no oxygen flow: nobody has one before the devices send it.
    assert!(ask("before").abs() < 5.0);
    let mut patients = Vec::new();
    node.store
        .scan_prefix(cf::PATIENTS, b"", |key, _| {
            patients.push(Pseudonym(key.try_into().unwrap()));
            Ok(())
        })
        .unwrap();
    let settings = witmed_node::ingest::Settings::default();
    for (i, patient) in patients.iter().take(20).enumerate() {
        let key = KeyPair::from_seed(Role::Device, &[i as u8 + 10; 32]);
        devices::enrol(&node, key.public(), *patient, "", NOW).unwrap();
        let reading = Reading {
            seq: 1,
            time: NOW - 60,
            code: "3151-8".into(),
            value: 2000.0,
            unit: "mL/min".into(),
        };
        witmed_node::ingest::ingest(&node, &key.public(), &[reading], &settings, NOW).unwrap();
    }
    let after = ask("after");
    assert!((after - 20.0).abs() < 5.0, "released {after}, exact 20");
}
