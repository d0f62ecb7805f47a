//! Bedside devices over HTTP on 127.0.0.1: enrolment by staff, signed batches stored as the patient's observations, every kind of bad batch refused with a clear code and nothing stored, NEWS2 alerts raised at the crossing reading, streamed and acknowledged.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use witmed_api::{Config, State};
use witmed_crypto::{KeyPair, Pseudonym, Role};
use witmed_node::node::{self, Node};
use witmed_node::store::cf;
use witmed_node::{devices, import};
use witmed_protocol::device_request::{self as wire, Reading, Signed};

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("WITMED_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    assert!(
        dir.join("physionet2012/set-a").is_dir(),
        "shared data not found at {}: set WITMED_DATA_DIR",
        dir.display()
    );
    dir
}

/// The first two records of set-a, copied into `into`; their source ids.
fn small_set(into: &Path) -> (PathBuf, Vec<String>) {
    let set = into.join("set");
    std::fs::create_dir_all(&set).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir().join("physionet2012/set-a"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let mut ids = Vec::new();
    for f in files.into_iter().take(2) {
        std::fs::copy(&f, set.join(f.file_name().unwrap())).unwrap();
        ids.push(f.file_stem().unwrap().to_string_lossy().into_owned());
    }
    (set, ids)
}

/// A running API over a node with two patients; `device` enrolled (by staff, over HTTP) for the first.
struct World {
    _tmp: tempfile::TempDir,
    addr: SocketAddr,
    node: Arc<Node>,
    token: String,
    patient: Pseudonym,
    other_patient: Pseudonym,
    device: KeyPair,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let now = witmed_node::unix_now();
    node::init_with(&dir, "General", vec![], now, None).unwrap();
    let node = Arc::new(Node::open(&dir, now).unwrap());
    let (set, ids) = small_set(tmp.path());
    import::import_physionet(
        &node.store,
        node.pseudonyms(),
        &set,
        None,
        &import::Options::default(),
    )
    .unwrap();
    let patient = node.pseudonyms().pseudonym("physionet2012", &ids[0]);
    let other_patient = node.pseudonyms().pseudonym("physionet2012", &ids[1]);
    let state = Arc::new(State::new(node.clone(), &Config::default()).unwrap());
    let token = state.staff_token.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            witmed_api::serve(state, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
    });
    let w = World {
        _tmp: tmp,
        addr,
        node,
        token,
        patient,
        other_patient,
        device: KeyPair::generate(Role::Patient).unwrap(),
        stop: Some(stop),
        server: Some(server),
    };
    let enrolled = staff(
        &w,
        "POST",
        wire::PATH_DEVICES,
        &json!({"device": w.device.public().to_hex(), "patient": w.patient.to_hex(), "label": "bed 12"}),
    );
    assert_eq!(enrolled.status, 200, "{:?}", enrolled.body);
    w
}

#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

/// One HTTP/1.1 request over a fresh connection.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The server may refuse before reading a large body; a reset is fine.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let payload = text.split("\r\n\r\n").nth(1).unwrap_or("");
    Reply {
        status,
        body: serde_json::from_str(payload).unwrap_or(Value::Null),
    }
}

fn staff(w: &World, method: &str, path: &str, body: &Value) -> Reply {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    http(
        w.addr,
        method,
        path,
        &[
            ("Authorization", format!("Bearer {}", w.token)),
            ("Content-Type", "application/json".into()),
        ],
        &body,
    )
}

fn send(w: &World, signed: &Signed) -> Reply {
    let headers: Vec<(&str, String)> = signed.headers.clone();
    http(w.addr, "POST", wire::PATH_READINGS, &headers, &signed.body)
}

fn node_hex(w: &World) -> String {
    w.node.id().to_hex()
}

fn now() -> i64 {
    witmed_node::unix_now()
}

fn heart_rate(seq: u64, value: f64) -> Reading {
    Reading {
        seq,
        time: now() - 60,
        code: "8867-4".into(),
        value,
        unit: "/min".into(),
    }
}

/// What the node holds of device readings: observations, the device log, and the device's last seq.
fn stored(w: &World) -> (u64, usize, Option<u64>) {
    let log = devices::readings_between(&w.node, &w.patient, i64::MIN, i64::MAX, 100_000)
        .unwrap()
        .len();
    let last = devices::find(&w.node, &w.device.public())
        .unwrap()
        .and_then(|d| d.last_seq);
    (w.node.store.count(cf::OBSERVATIONS).unwrap(), log, last)
}

/// Sends `signed`, expects the refusal `code` with `status`, and that nothing was stored.
fn refused_and_nothing_stored(w: &World, signed: &Signed, status: u16, code: &str) -> Reply {
    let before = stored(w);
    let reply = send(w, signed);
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(reply.code(), code, "{:?}", reply.body);
    assert_eq!(stored(w), before, "nothing may be stored");
    reply
}

#[test]
fn a_signed_batch_is_stored_as_observations_of_the_patient_once_durable() {
    let w = world();
    let (observations, log, last) = stored(&w);
    assert_eq!((log, last), (0, None));
    let indexed = w.node.index().unwrap().observation_count();
    let batch = [heart_rate(1, 72.0), heart_rate(2, 75.0)];
    let reply = send(&w, &Signed::batch(&w.device, &node_hex(&w), now(), &batch));
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["stored"], 2);
    assert_eq!(reply.body["last_seq"], 2);
    assert_eq!(stored(&w), (observations + 2, 2, Some(2)));
    let vitals = staff(
        &w,
        "GET",
        &wire::path_vitals(&w.patient.to_hex()),
        &Value::Null,
    );
    assert_eq!(vitals.status, 200, "{:?}", vitals.body);
    let values: Vec<f64> = vitals.body["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, vec![72.0, 75.0]);
    // The index (what queries read) was rebuilt and holds the new heart rates.
    assert_eq!(w.node.index().unwrap().observation_count(), indexed + 2);
}

#[test]
fn a_fhir_bundle_is_accepted_and_fahrenheit_stored_as_celsius() {
    let w = world();
    let temperature = Reading {
        seq: 1,
        time: now() - 30,
        code: "8310-5".into(),
        value: 98.6,
        unit: "[degF]".into(),
    };
    let reply = send(
        &w,
        &Signed::fhir(&w.device, &node_hex(&w), now(), &[temperature]),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let vitals = staff(
        &w,
        "GET",
        &wire::path_vitals(&w.patient.to_hex()),
        &Value::Null,
    );
    let reading = &vitals.body["readings"][0];
    assert_eq!(reading["unit"], "Cel");
    assert!((reading["value"].as_f64().unwrap() - 37.0).abs() < 1e-9);
}

#[test]
fn an_unenrolled_device_is_refused_and_nothing_stored() {
    let w = world();
    let stranger = KeyPair::generate(Role::Patient).unwrap();
    let signed = Signed::batch(&stranger, &node_hex(&w), now(), &[heart_rate(1, 70.0)]);
    let reply = refused_and_nothing_stored(&w, &signed, 401, "device_not_enrolled");
    assert!(reply.message().contains("enrol"), "{}", reply.message());
}

#[test]
fn a_retired_device_is_refused_and_nothing_stored() {
    let w = world();
    let ok = send(
        &w,
        &Signed::batch(&w.device, &node_hex(&w), now(), &[heart_rate(1, 70.0)]),
    );
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let retired = staff(
        &w,
        "POST",
        &wire::path_retire(&w.device.public().to_hex()),
        &Value::Null,
    );
    assert_eq!(retired.status, 200, "{:?}", retired.body);
    assert!(retired.body["retired_at"].is_i64());
    let signed = Signed::batch(&w.device, &node_hex(&w), now(), &[heart_rate(2, 70.0)]);
    refused_and_nothing_stored(&w, &signed, 403, "device_retired");
    // A retired key cannot be enrolled again, for anyone.
    let again = staff(
        &w,
        "POST",
        wire::PATH_DEVICES,
        &json!({"device": w.device.public().to_hex(), "patient": w.other_patient.to_hex()}),
    );
    assert_eq!(again.code(), "device_retired", "{:?}", again.body);
}

#[test]
fn a_bad_signature_is_refused_and_nothing_stored() {
    let w = world();
    // Signed by another key under the enrolled device's name.
    let forger = KeyPair::generate(Role::Patient).unwrap();
    let mut forged = Signed::batch(&forger, &node_hex(&w), now(), &[heart_rate(1, 70.0)]);
    forged.headers[0].1 = w.device.public().to_hex();
    refused_and_nothing_stored(&w, &forged, 401, "bad_signature");
    // Signed by the device, then the body changed.
    let mut altered = Signed::batch(&w.device, &node_hex(&w), now(), &[heart_rate(1, 70.0)]);
    altered.body = serde_json::to_vec(&wire::Batch {
        version: wire::VERSION,
        readings: vec![heart_rate(1, 140.0)],
    })
    .unwrap();
    refused_and_nothing_stored(&w, &altered, 401, "bad_signature");
    // Signed for another node.
    let elsewhere = Signed::batch(&w.device, &"ab".repeat(32), now(), &[heart_rate(1, 70.0)]);
    refused_and_nothing_stored(&w, &elsewhere, 401, "bad_signature");
    // Made too long ago.
    let stale = Signed::batch(
        &w.device,
        &node_hex(&w),
        now() - 3600,
        &[heart_rate(1, 70.0)],
    );
    refused_and_nothing_stored(&w, &stale, 401, "stale_request");
    // No signature at all.
    let mut unsigned = Signed::batch(&w.device, &node_hex(&w), now(), &[heart_rate(1, 70.0)]);
    unsigned
        .headers
        .retain(|(n, _)| *n != wire::HEADER_SIGNATURE);
    refused_and_nothing_stored(&w, &unsigned, 401, "bad_signature_header");
}

/// Each device has its own rate (the API's per-key limit, 120 requests a
/// minute by default): a device over it is refused and nothing of that batch
/// is stored, while another device is still served.
#[test]
fn a_device_over_its_rate_is_refused_and_others_are_still_served() {
    let w = world();
    let limit = Config::default().per_key_per_minute as u64;
    // Counts are per calendar minute: start well inside one.
    while now().rem_euclid(60) > 45 {
        std::thread::sleep(Duration::from_millis(500));
    }
    for seq in 1..=limit {
        let signed = Signed::batch(&w.device, &node_hex(&w), now(), &[heart_rate(seq, 70.0)]);
        let reply = send(&w, &signed);
        assert_eq!(reply.status, 200, "batch {seq}: {:?}", reply.body);
    }
    let over = Signed::batch(
        &w.device,
        &node_hex(&w),
        now(),
        &[heart_rate(limit + 1, 70.0)],
    );
    let refused = refused_and_nothing_stored(&w, &over, 429, "rate_limited");
    assert!(
        refused.message().contains("this device"),
        "{:?}",
        refused.body
    );
    let second = KeyPair::generate(Role::Patient).unwrap();
    let enrolled = staff(
        &w,
        "POST",
        wire::PATH_DEVICES,
        &json!({"device": second.public().to_hex(), "patient": w.other_patient.to_hex(), "label": "bed 14"}),
    );
    assert_eq!(enrolled.status, 200, "{:?}", enrolled.body);
    let other = Signed::batch(&second, &node_hex(&w), now(), &[heart_rate(1, 70.0)]);
    assert_eq!(send(&w, &other).status, 200);
}

#[test]
fn a_replayed_or_out_of_order_sequence_number_is_refused_naming_it() {
    let w = world();
    let first = Signed::batch(&w.device, &node_hex(&w), now(), &[heart_rate(5, 70.0)]);
    assert_eq!(send(&w, &first).status, 200);
    // The very same signed request again.
    let reply = refused_and_nothing_stored(&w, &first, 409, "replayed_sequence");
    assert!(reply.message().contains("seq 5"), "{}", reply.message());
    // A fresh signature over an old sequence number.
    let older = Signed::batch(&w.device, &node_hex(&w), now(), &[heart_rate(3, 70.0)]);
    refused_and_nothing_stored(&w, &older, 409, "replayed_sequence");
    // Out of order within one batch: nothing of it is stored, not even the good first reading.
    let shuffled = Signed::batch(
        &w.device,
        &node_hex(&w),
        now(),
        &[heart_rate(7, 70.0), heart_rate(6, 71.0)],
    );
    let reply = refused_and_nothing_stored(&w, &shuffled, 409, "out_of_order_sequence");
    assert!(
        reply.message().contains("reading 1 (seq 6)"),
        "{}",
        reply.message()
    );
}

#[test]
fn an_implausible_value_is_refused_with_its_reason_and_nothing_stored() {
    let w = world();
    let batch = [heart_rate(1, 72.0), heart_rate(2, 900.0)];
    let signed = Signed::batch(&w.device, &node_hex(&w), now(), &batch);
    let reply = refused_and_nothing_stored(&w, &signed, 422, "implausible_value");
    assert!(
        reply.message().contains("reading 1 (seq 2)") && reply.message().contains("900"),
        "{}",
        reply.message()
    );
    let hot = Reading {
        seq: 1,
        time: now(),
        code: "8310-5".into(),
        value: 60.0,
        unit: "Cel".into(),
    };
    let signed = Signed::batch(&w.device, &node_hex(&w), now(), &[hot]);
    let reply = refused_and_nothing_stored(&w, &signed, 422, "implausible_value");
    assert!(
        reply.message().contains("temperature"),
        "{}",
        reply.message()
    );
}

#[test]
fn a_wrong_unit_is_refused_with_the_accepted_ones_and_nothing_stored() {
    let w = world();
    let reading = Reading {
        unit: "mm[Hg]".into(),
        ..heart_rate(1, 70.0)
    };
    let signed = Signed::batch(&w.device, &node_hex(&w), now(), &[reading]);
    let reply = refused_and_nothing_stored(&w, &signed, 422, "wrong_unit");
    assert!(reply.message().contains("/min"), "{}", reply.message());
}

#[test]
fn a_malformed_body_is_refused_and_nothing_stored() {
    let w = world();
    for (content_type, body, status, code) in [
        (
            "application/json",
            "{\"version\":1,\"readings\":[{}]}",
            400,
            "malformed_batch",
        ),
        (
            "application/json",
            "not json at all",
            400,
            "malformed_batch",
        ),
        (
            "application/json",
            "{\"version\":1,\"readings\":[]}",
            400,
            "empty_batch",
        ),
        (
            "application/fhir+json",
            "{\"resourceType\":\"Patient\"}",
            400,
            "malformed_batch",
        ),
        ("text/csv", "seq,time\n1,2", 415, "unsupported_media_type"),
    ] {
        let signed = Signed::body(
            &w.device,
            &node_hex(&w),
            now(),
            content_type,
            body.as_bytes().to_vec(),
        );
        refused_and_nothing_stored(&w, &signed, status, code);
    }
}

#[test]
fn an_oversized_batch_is_refused_and_nothing_stored() {
    let w = world();
    let many: Vec<Reading> = (1..=wire::MAX_READINGS as u64 + 1)
        .map(|seq| heart_rate(seq, 70.0))
        .collect();
    let signed = Signed::batch(&w.device, &node_hex(&w), now(), &many);
    assert!(signed.body.len() < wire::MAX_BODY_BYTES);
    refused_and_nothing_stored(&w, &signed, 413, "batch_too_large");
    let huge = Signed::body(
        &w.device,
        &node_hex(&w),
        now(),
        "application/json",
        vec![b' '; wire::MAX_BODY_BYTES + 1],
    );
    refused_and_nothing_stored(&w, &huge, 413, "body_too_large");
}

#[test]
fn staff_device_and_alert_routes_need_the_token() {
    let w = world();
    for (method, path) in [
        ("GET", wire::PATH_DEVICES.to_string()),
        ("POST", wire::path_retire(&w.device.public().to_hex())),
        ("GET", wire::PATH_ALERTS.to_string()),
        ("GET", wire::PATH_ALERT_STREAM.to_string()),
        ("GET", wire::path_vitals(&w.patient.to_hex())),
    ] {
        let reply = http(w.addr, method, &path, &[], b"");
        assert_eq!(reply.status, 401, "{method} {path}");
        assert_eq!(reply.code(), "staff_unauthorized");
    }
    let listed = staff(&w, "GET", wire::PATH_DEVICES, &Value::Null);
    assert_eq!(listed.body[0]["label"], "bed 12");
    assert!(listed.body[0]["retired_at"].is_null());
}

/// One full NEWS2 set at `time`: respiration, SpO2, air, systolic BP, pulse, alert, temperature.
fn full_set(time: i64, rr: f64, pulse: f64, temperature: f64) -> Vec<(String, f64, String, i64)> {
    [
        ("9279-1", rr, "/min"),
        ("59408-5", 97.0, "%"),
        ("3150-0", 21.0, "%"),
        ("8480-6", 120.0, "mm[Hg]"),
        ("8867-4", pulse, "/min"),
        ("67775-7", 0.0, "{ACVPU}"),
        ("8310-5", temperature, "Cel"),
    ]
    .into_iter()
    .map(|(code, value, unit)| (code.to_string(), value, unit.to_string(), time))
    .collect()
}

/// Opens the alert stream and returns a reader past the response head.
fn open_stream(w: &World) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(w.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        wire::PATH_ALERT_STREAM,
        w.addr,
        w.token
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("200"), "{line}");
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            return reader;
        }
    }
}

/// The next `data:` line of an `alert` event.
fn next_alert(reader: &mut BufReader<TcpStream>) -> Value {
    let mut line = String::new();
    let mut in_alert = false;
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended");
        if line.trim_end() == "event: alert" {
            in_alert = true;
        } else if let (true, Some(data)) = (in_alert, line.trim_end().strip_prefix("data: ")) {
            return serde_json::from_str(data).unwrap();
        }
    }
}

#[test]
fn a_deteriorating_patient_raises_one_alert_at_the_crossing_reading_streamed_and_acknowledged() {
    let w = world();
    let mut stream = open_stream(&w);
    let start = now() - 600;
    // Scores: 0 (zero), 2 (low: respiration 22), 4 (low: and pulse 115), then a
    // temperature of 39.2 makes 6: medium, above the default low-medium band.
    let sets = [
        full_set(start, 16.0, 70.0, 37.0),
        full_set(start + 60, 22.0, 70.0, 37.0),
        full_set(start + 120, 22.0, 115.0, 37.0),
        full_set(start + 180, 22.0, 115.0, 39.2),
        full_set(start + 240, 22.0, 115.0, 39.3),
    ];
    let mut seq = 0;
    let mut raised = Vec::new();
    for (code, value, unit, time) in sets.concat() {
        seq += 1;
        let reading = Reading {
            seq,
            time,
            code: code.clone(),
            value,
            unit,
        };
        // One reading per request, as a monitor streams them.
        let reply = send(
            &w,
            &Signed::batch(&w.device, &node_hex(&w), now(), &[reading]),
        );
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        for alert in reply.body["alerts"].as_array().unwrap() {
            raised.push((seq, code.clone(), alert.clone()));
        }
    }
    assert_eq!(raised.len(), 1, "one crossing, one alert: {raised:?}");
    let (at_seq, code, alert) = &raised[0];
    assert_eq!(
        (*at_seq, code.as_str()),
        (28, "8310-5"),
        "the 39.2 °C reading"
    );
    assert_eq!(alert["score"], 6);
    assert_eq!(alert["band"], "medium");
    assert_eq!(alert["at"], start + 180);
    let sources = alert["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 7);
    let temperature = sources.iter().find(|s| s["code"] == "8310-5").unwrap();
    assert_eq!(
        (
            temperature["seq"].as_u64(),
            temperature["sub_score"].as_u64()
        ),
        (Some(28), Some(2))
    );
    // Streamed as it was raised.
    let streamed = next_alert(&mut stream);
    assert_eq!(&streamed, alert);
    // Listed, then acknowledged by a clinician (and only the first acknowledgement stands).
    let id = alert["id"].as_str().unwrap();
    let open = staff(
        &w,
        "GET",
        &format!("{}?open=true", wire::PATH_ALERTS),
        &Value::Null,
    );
    assert_eq!(open.body.as_array().unwrap().len(), 1);
    let acked = staff(&w, "POST", &wire::path_ack(id), &json!({"by": "Dr Okafor"}));
    assert_eq!(acked.status, 200, "{:?}", acked.body);
    assert_eq!(acked.body["ack"]["by"], "Dr Okafor");
    let again = staff(&w, "POST", &wire::path_ack(id), &json!({"by": "Dr Who"}));
    assert_eq!(again.body["ack"]["by"], "Dr Okafor");
    let open = staff(
        &w,
        "GET",
        &format!("{}?open=true", wire::PATH_ALERTS),
        &Value::Null,
    );
    assert_eq!(open.body.as_array().unwrap().len(), 0);
    let all = staff(&w, "GET", wire::PATH_ALERTS, &Value::Null);
    assert_eq!(all.body.as_array().unwrap().len(), 1);
    let unknown = staff(
        &w,
        "POST",
        &wire::path_ack("00000000000000ff"),
        &json!({"by": "x"}),
    );
    assert_eq!(unknown.code(), "unknown_alert");
}

#[test]
fn a_hypercapnic_patient_is_scored_on_spo2_scale_2() {
    let w = world();
    let set = staff(
        &w,
        "POST",
        &wire::path_hypercapnic(&w.patient.to_hex()),
        &json!({"hypercapnic": true}),
    );
    assert_eq!(set.status, 200, "{:?}", set.body);
    // SpO2 88 % on air scores 0 on scale 2 (3 on scale 1): the set scores 0, no alert.
    let time = now() - 60;
    let readings: Vec<Reading> = full_set(time, 16.0, 70.0, 37.0)
        .into_iter()
        .enumerate()
        .map(|(i, (code, value, unit, time))| Reading {
            seq: i as u64 + 1,
            time,
            value: if code == "59408-5" { 88.0 } else { value },
            code,
            unit,
        })
        .collect();
    let reply = send(
        &w,
        &Signed::batch(&w.device, &node_hex(&w), now(), &readings),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["alerts"].as_array().unwrap().len(), 0);
    let state = devices::state(&w.node, &w.patient).unwrap();
    assert_eq!(state.last_score, Some(0));
    let vitals = staff(
        &w,
        "GET",
        &wire::path_vitals(&w.patient.to_hex()),
        &Value::Null,
    );
    assert_eq!(vitals.body["hypercapnic"], true);
}
