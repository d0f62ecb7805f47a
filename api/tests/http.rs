//! The HTTP API over a real node on 127.0.0.1: staff with the token, patients with signed requests (record, consents, audit view, privacy account, cap), hostile input refused with clear codes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use witmed_api::patient::AccountView;
use witmed_api::ROUTES;
use witmed_api::{Config, State};
use witmed_crypto::{KeyPair, Pseudonym, Role};
use witmed_node::audit::{PatientView, ResearchUse, ViewItem};
use witmed_node::node::{self, Node};
use witmed_node::{accounts, consent_ops, import};
use witmed_policies::cap::{CapRequest, CAP_VERSION};
use witmed_policies::consent::{self, Revocation, Token};
use witmed_policies::credential::{Credential, CREDENTIAL_VERSION};
use witmed_policies::policy::{Budget, DEFAULT_WINDOW_SECONDS};
use witmed_protocol::patient_request::{self, Request};
use witmed_protocol::query::Query;
use witmed_protocol::vocab::{Category, Mode};

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

/// The first `n` records of set-a, copied into `into`; their source ids.
fn small_set(into: &Path, n: usize) -> (PathBuf, Vec<String>) {
    let set = into.join("set");
    std::fs::create_dir_all(&set).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir().join("physionet2012/set-a"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let mut ids = Vec::new();
    for f in files.into_iter().take(n) {
        std::fs::copy(&f, set.join(f.file_name().unwrap())).unwrap();
        ids.push(f.file_stem().unwrap().to_string_lossy().into_owned());
    }
    (set, ids)
}

/// A running API over a node with three patients; alice (the first) and bob (the second) enrolled.
struct World {
    _tmp: tempfile::TempDir,
    addr: SocketAddr,
    node: Arc<Node>,
    token: String,
    alice: (Pseudonym, KeyPair),
    bob: (Pseudonym, KeyPair),
    /// The third patient: records, no key.
    carol: Pseudonym,
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

fn world_with(config: Config) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let now = witmed_node::unix_now();
    node::init_with(&dir, "General", vec![], now, None).unwrap();
    let node = Arc::new(Node::open(&dir, now).unwrap());
    let (set, ids) = small_set(tmp.path(), 3);
    import::import_physionet(
        &node.store,
        node.pseudonyms(),
        &set,
        None,
        &import::Options::default(),
    )
    .unwrap();
    let patient = |id: &str| node.pseudonyms().pseudonym("physionet2012", id);
    let enrolled = |id: &str| {
        let key = KeyPair::generate(Role::Patient).unwrap();
        consent_ops::enrol(&node, patient(id), key.public(), now).unwrap();
        (patient(id), key)
    };
    let alice = enrolled(&ids[0]);
    let bob = enrolled(&ids[1]);
    let carol = patient(&ids[2]);
    let state = Arc::new(State::new(node.clone(), &config).unwrap());
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
    World {
        _tmp: tmp,
        addr,
        node,
        token,
        alice,
        bob,
        carol,
        stop: Some(stop),
        server: Some(server),
    }
}

fn world() -> World {
    world_with(Config::default())
}

/// A response: status and JSON body (Null when the body is not JSON).
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
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

fn staff(w: &World, method: &str, path: &str, body: &str) -> Reply {
    http(
        w.addr,
        method,
        path,
        &[
            ("Authorization", format!("Bearer {}", w.token)),
            ("Content-Type", "application/json".into()),
        ],
        body.as_bytes(),
    )
}

/// A patient request as the patient page signs it.
struct Signing<'a> {
    patient: Pseudonym,
    key: &'a KeyPair,
    time: i64,
    nonce: String,
}

fn fresh_nonce() -> String {
    let mut bytes = [0u8; 16];
    witmed_crypto::fill_random(&mut bytes).unwrap();
    hex::encode(bytes)
}

fn signed_headers(
    w: &World,
    s: &Signing<'_>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let message = patient_request::message(&Request {
        node: &w.node.id().to_hex(),
        patient: &s.patient.to_hex(),
        method,
        path,
        time: s.time,
        nonce: &s.nonce,
        body_sha256: witmed_crypto::sha256(body),
    });
    vec![
        (patient_request::HEADER_PATIENT, s.patient.to_hex()),
        (patient_request::HEADER_TIME, s.time.to_string()),
        (patient_request::HEADER_NONCE, s.nonce.clone()),
        (
            patient_request::HEADER_SIGNATURE,
            hex::encode(s.key.sign_raw(&message)),
        ),
        ("Content-Type", "application/json".into()),
    ]
}

fn as_patient(
    w: &World,
    who: &(Pseudonym, KeyPair),
    method: &str,
    path: &str,
    body: &str,
) -> Reply {
    let s = Signing {
        patient: who.0,
        key: &who.1,
        time: witmed_node::unix_now(),
        nonce: fresh_nonce(),
    };
    let headers = signed_headers(w, &s, method, path, body.as_bytes());
    http(w.addr, method, path, &headers, body.as_bytes())
}

/// A request for `patient`'s resources signed with someone else's `key`.
fn impostor(
    w: &World,
    patient: Pseudonym,
    key: &KeyPair,
    method: &str,
    path: &str,
    body: &str,
) -> Reply {
    let s = Signing {
        patient,
        key,
        time: witmed_node::unix_now(),
        nonce: fresh_nonce(),
    };
    let headers = signed_headers(w, &s, method, path, body.as_bytes());
    http(w.addr, method, path, &headers, body.as_bytes())
}

fn token_for(w: &World, who: &(Pseudonym, KeyPair)) -> (String, String) {
    let now = witmed_node::unix_now();
    let mut id = [0u8; 16];
    witmed_crypto::fill_random(&mut id).unwrap();
    let token = Token {
        version: consent::TOKEN_VERSION,
        id: consent::token_id(id),
        node: w.node.id(),
        patient: who.0,
        purposes: vec!["HMB".into()],
        categories: Category::ALL.into_iter().collect(),
        modes: [Mode::Dp].into_iter().collect(),
        not_before: now - 60,
        expires: now + 86_400,
        simulated: false,
    };
    (token.id.clone(), token.sign(&who.1).to_text())
}

fn submission(signed: &str) -> String {
    serde_json::json!({ "signed": signed }).to_string()
}

#[test]
fn health_answers_and_an_unknown_route_is_a_json_404() {
    let w = world();
    let health = http(w.addr, "GET", "/api/v1/health", &[], b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.body["node"], "General");
    let missing = http(w.addr, "GET", "/api/v1/nothing-here", &[], b"");
    assert_eq!((missing.status, missing.code()), (404, "not_found"));
}

#[test]
fn the_openapi_document_lists_exactly_the_routes_served_and_is_kept_in_the_repo() {
    let w = world();
    let served = http(w.addr, "GET", "/api/v1/openapi.json", &[], b"");
    assert_eq!(served.status, 200);
    let mut documented: Vec<(String, String)> = served.body["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(|method| (method.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    documented.sort();
    let mut routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    routes.sort();
    assert_eq!(documented, routes);
    // Every listed route is served (anything but the fallback's 404).
    for (method, path) in ROUTES {
        let reply = http(w.addr, method, path, &[], b"");
        assert_ne!(reply.code(), "not_found", "{method} {path} is not served");
    }
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let generated = witmed_api::openapi::json();
    if std::env::var_os("WITMED_REGENERATE_OPENAPI").is_some() {
        std::fs::write(&kept, &generated).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap_or_default(),
        generated,
        "docs/openapi.json is stale: rerun with WITMED_REGENERATE_OPENAPI=1"
    );
}

#[test]
fn staff_need_the_token_and_can_look_up_and_enrol() {
    let w = world();
    let no_token = http(w.addr, "GET", "/api/v1/staff/consents", &[], b"");
    assert_eq!(
        (no_token.status, no_token.code()),
        (401, "staff_unauthorized")
    );
    let wrong = http(
        w.addr,
        "GET",
        "/api/v1/staff/consents",
        &[("Authorization", format!("Bearer {}", "0".repeat(64)))],
        b"",
    );
    assert_eq!(wrong.code(), "staff_unauthorized");
    let found = staff(
        &w,
        "GET",
        "/api/v1/staff/patients?system=physionet2012&id=132539",
        "",
    );
    assert_eq!(found.status, 200, "{:?}", found.body);
    assert_eq!(found.body["node_id"], w.node.id().to_hex());
    let key = KeyPair::generate(Role::Patient).unwrap();
    let enrol =
        serde_json::json!({ "pseudonym": w.carol.to_hex(), "public_key": key.public().to_hex() });
    let enrolled = staff(&w, "POST", "/api/v1/staff/enrolments", &enrol.to_string());
    assert_eq!(enrolled.status, 200, "{:?}", enrolled.body);
    assert_eq!(
        w.node.consent_registry().enrolled_key(&w.carol),
        Some(key.public())
    );
    // Another key for an enrolled patient is re-enrolment's, under dual control.
    let other = KeyPair::generate(Role::Patient).unwrap();
    let swap =
        serde_json::json!({ "pseudonym": w.carol.to_hex(), "public_key": other.public().to_hex() });
    let again = staff(&w, "POST", "/api/v1/staff/enrolments", &swap.to_string());
    assert_eq!((again.status, again.code()), (422, "already_enrolled"));
    assert_eq!(
        w.node.consent_registry().enrolled_key(&w.carol),
        Some(key.public())
    );
}

#[test]
fn bad_input_gets_a_clear_code_and_stores_nothing() {
    let w = world();
    let key = KeyPair::generate(Role::Patient).unwrap().public().to_hex();
    let carol = w.carol.to_hex();
    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        (
            "malformed JSON",
            "{\"pseudonym\": ".into(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            "unknown field",
            format!("{{\"pseudonym\": \"{carol}\", \"public_key\": \"{key}\", \"admin\": true}}"),
            "application/json",
            400,
            "bad_request",
        ),
        (
            "wrong content type",
            format!("{{\"pseudonym\": \"{carol}\", \"public_key\": \"{key}\"}}"),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            "a huge number for a string",
            format!("{{\"pseudonym\": 1e400, \"public_key\": \"{key}\"}}"),
            "application/json",
            400,
            "bad_request",
        ),
        (
            "a key that is not a key",
            format!("{{\"pseudonym\": \"{carol}\", \"public_key\": \"zz\"}}"),
            "application/json",
            400,
            "bad_request",
        ),
        (
            "an oversized body",
            "x".repeat(70 * 1024),
            "application/json",
            413,
            "body_too_large",
        ),
    ];
    for (what, body, content_type, status, code) in cases {
        let reply = http(
            w.addr,
            "POST",
            "/api/v1/staff/enrolments",
            &[
                ("Authorization", format!("Bearer {}", w.token)),
                ("Content-Type", content_type.into()),
            ],
            body.as_bytes(),
        );
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{what}: {:?}",
            reply.body
        );
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: a message says what to do"
        );
    }
    assert_eq!(
        w.node.consent_registry().enrolled_key(&w.carol),
        None,
        "nothing stored"
    );
}

/// The admin protocol over HTTP (what `witmed patient …` and `witmed
/// consent …` use while the node runs): staff token required, strict
/// frames, the node's refusal codes kept, and a patient's signature still
/// needed for what changes their consent.
#[test]
fn staff_commands_carry_the_admin_protocol_with_its_refusals() {
    let w = world();
    let lookup = r#"{"version": 1, "request": {"op": "lookup", "source": "physionet2012", "source_id": "132539"}}"#;
    let no_token = http(
        w.addr,
        "POST",
        "/api/v1/staff/commands",
        &[("Content-Type", "application/json".into())],
        lookup.as_bytes(),
    );
    assert_eq!(
        (no_token.status, no_token.code()),
        (401, "staff_unauthorized")
    );
    let found = staff(&w, "POST", "/api/v1/staff/commands", lookup);
    assert_eq!(found.status, 200, "{:?}", found.body);
    assert_eq!(found.body["result"], "pseudonym");
    assert_eq!(found.body["node_id"], w.node.id().to_hex());
    for (what, frame) in [
        (
            "unknown op",
            r#"{"version": 1, "request": {"op": "drop_everything"}}"#,
        ),
        (
            "unknown field",
            r#"{"version": 1, "request": {"op": "consents", "limit": 5}, "sudo": true}"#,
        ),
        (
            "another version",
            r#"{"version": 2, "request": {"op": "consents", "limit": 5}}"#,
        ),
        ("malformed", r#"{"version": 1, "request": "#),
    ] {
        let reply = staff(&w, "POST", "/api/v1/staff/commands", frame);
        assert_eq!(
            (reply.status, reply.code()),
            (400, "bad_request"),
            "{what}: {:?}",
            reply.body
        );
    }
    // A consent token not signed by the patient's enrolled key is refused with the node's code.
    let mallory = KeyPair::generate(Role::Patient).unwrap();
    let enrol = serde_json::json!({ "pseudonym": w.carol.to_hex(), "public_key": mallory.public().to_hex() });
    assert_eq!(
        staff(&w, "POST", "/api/v1/staff/enrolments", &enrol.to_string()).status,
        200
    );
    let other = KeyPair::generate(Role::Patient).unwrap();
    let (_, forged) = token_for(&w, &(w.carol, other));
    let submit = serde_json::json!({ "version": 1, "request": { "op": "submit", "text": forged } });
    let refused = staff(&w, "POST", "/api/v1/staff/commands", &submit.to_string());
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(refused.body["result"], "error");
    assert!(
        refused.body["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{:?}",
        refused.body
    );
    let listed = staff(
        &w,
        "POST",
        "/api/v1/staff/commands",
        r#"{"version": 1, "request": {"op": "consents", "limit": 10}}"#,
    );
    assert_eq!(
        listed.body["counts"]["tokens"], 0,
        "nothing stored: {:?}",
        listed.body
    );
}

#[test]
fn a_patient_reads_their_own_record_and_vital_signs() {
    let w = world();
    let me = as_patient(&w, &w.alice, "GET", "/api/v1/patient/me", "");
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(me.body["pseudonym"], w.alice.0.to_hex());
    let series = as_patient(&w, &w.alice, "GET", "/api/v1/patient/observations", "");
    assert_eq!(series.status, 200);
    let heart = series
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["code"] == "8867-4");
    assert!(
        heart.is_some_and(|s| !s["points"].as_array().unwrap().is_empty()),
        "heart rate series: {:?}",
        series.body
    );
}

#[test]
fn a_patient_cannot_read_another_patient_nor_act_with_a_replayed_stale_or_forged_request() {
    let w = world();
    // Bob's pseudonym, signed with Alice's key: the signature is not Bob's.
    let pretending = (
        w.bob.0,
        KeyPair::from_seed(Role::Patient, &w.alice.1.secret_seed()),
    );
    let other = as_patient(&w, &pretending, "GET", "/api/v1/patient/me", "");
    assert_eq!((other.status, other.code()), (401, "bad_signature"));
    // A request replayed byte for byte.
    let s = Signing {
        patient: w.alice.0,
        key: &w.alice.1,
        time: witmed_node::unix_now(),
        nonce: fresh_nonce(),
    };
    let headers = signed_headers(&w, &s, "GET", "/api/v1/patient/me", b"");
    assert_eq!(
        http(w.addr, "GET", "/api/v1/patient/me", &headers, b"").status,
        200
    );
    let replay = http(w.addr, "GET", "/api/v1/patient/me", &headers, b"");
    assert_eq!((replay.status, replay.code()), (401, "replayed_request"));
    // Signed for one route, sent to another.
    let moved = http(w.addr, "GET", "/api/v1/patient/consents", &headers, b"");
    assert_eq!(moved.code(), "bad_signature");
    // Made ten minutes ago, or at the ends of time.
    for time in [witmed_node::unix_now() - 600, i64::MIN, i64::MAX] {
        let old = Signing {
            patient: w.alice.0,
            key: &w.alice.1,
            time,
            nonce: fresh_nonce(),
        };
        let headers = signed_headers(&w, &old, "GET", "/api/v1/patient/me", b"");
        let reply = http(w.addr, "GET", "/api/v1/patient/me", &headers, b"");
        assert_eq!(
            (reply.status, reply.code()),
            (401, "stale_request"),
            "time {time}"
        );
    }
    // A patient with records but no enrolled key.
    let stranger = (w.carol, KeyPair::generate(Role::Patient).unwrap());
    let reply = as_patient(&w, &stranger, "GET", "/api/v1/patient/me", "");
    assert_eq!(reply.code(), "not_enrolled");
    // Headers missing or malformed.
    let reply = http(w.addr, "GET", "/api/v1/patient/me", &[], b"");
    assert_eq!(reply.code(), "bad_signature_header");
}

#[test]
fn a_patient_grants_and_revokes_their_own_consent_and_no_one_elses() {
    let w = world();
    let (id, signed) = token_for(&w, &w.alice);
    let granted = as_patient(
        &w,
        &w.alice,
        "POST",
        "/api/v1/patient/consents",
        &submission(&signed),
    );
    assert_eq!(granted.status, 200, "{:?}", granted.body);
    assert_eq!(granted.body["token_id"], id.as_str());
    let mine = as_patient(&w, &w.alice, "GET", "/api/v1/patient/consents", "");
    assert_eq!(mine.body.as_array().unwrap().len(), 1);
    assert_eq!(mine.body[0]["revoked"], false);
    let bobs = as_patient(&w, &w.bob, "GET", "/api/v1/patient/consents", "");
    assert!(
        bobs.body.as_array().unwrap().is_empty(),
        "Bob sees none of Alice's"
    );
    // Bob submits Alice's genuine token: refused before anything is stored.
    let (_, alices_other) = token_for(&w, &w.alice);
    let foreign = as_patient(
        &w,
        &w.bob,
        "POST",
        "/api/v1/patient/consents",
        &submission(&alices_other),
    );
    assert_eq!((foreign.status, foreign.code()), (403, "forbidden"));
    assert_eq!(w.node.consent_registry().tokens().count(), 1);
    // Alice revokes.
    let revocation = Revocation {
        version: consent::REVOCATION_VERSION,
        token_id: id.clone(),
        node: w.node.id(),
        patient: w.alice.0,
        issued_at: witmed_node::unix_now(),
    }
    .sign(&w.alice.1)
    .to_text();
    let revoked = as_patient(
        &w,
        &w.alice,
        "POST",
        "/api/v1/patient/consents",
        &submission(&revocation),
    );
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    assert!(w.node.consent_registry().is_revoked(&id));
    let mine = as_patient(&w, &w.alice, "GET", "/api/v1/patient/consents", "");
    assert_eq!(mine.body[0]["revoked"], true);
}

#[test]
fn requests_over_the_rate_are_refused_per_key() {
    let w = world_with(Config {
        per_address_per_minute: 1000,
        per_key_per_minute: 3,
        ..Config::default()
    });
    // Counts are per calendar minute: start well inside one.
    while witmed_node::unix_now().rem_euclid(60) > 50 {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let statuses: Vec<u16> = (0..5)
        .map(|_| as_patient(&w, &w.alice, "GET", "/api/v1/patient/me", "").status)
        .collect();
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    // Another patient's quota is their own.
    assert_eq!(
        as_patient(&w, &w.bob, "GET", "/api/v1/patient/me", "").status,
        200
    );
}

/// A researcher the node trusts, and a policy that lets them ask
/// (budget 1e6, no minimum cohort); Alice and Bob consent, Carol does not.
struct Asking {
    key: KeyPair,
    credential: witmed_crypto::Envelope,
    issuer: witmed_crypto::PublicKey,
    id: String,
}

fn queries_allowed(w: &World) -> Asking {
    let now = witmed_node::unix_now();
    let authority = KeyPair::generate(Role::Authority).unwrap();
    let hospital = KeyPair::load_role(&w.node.dir.hospital_key(), Role::Hospital).unwrap();
    let mut policy = w.node.policy();
    policy.serial += 1;
    policy.trusted_issuers.push(authority.public());
    policy.budget = Budget {
        epsilon: 1e6,
        delta: 1e-3,
        window_seconds: DEFAULT_WINDOW_SECONDS,
        lifetime: None,
    };
    policy.min_cohort = 0;
    w.node
        .install_policy(&policy.sign(&hospital).to_text(), now)
        .unwrap();
    for who in [&w.alice, &w.bob] {
        let (_, token) = token_for(w, who);
        consent_ops::submit(&w.node, &token, now).unwrap();
    }
    let key = KeyPair::generate(Role::Researcher).unwrap();
    let id = "ada@uni.example".to_string();
    let credential = Credential {
        version: CREDENTIAL_VERSION,
        researcher: key.public(),
        researcher_id: id.clone(),
        name: "Ada".into(),
        institution: "University".into(),
        commercial: false,
        not_for_profit: true,
        project: "p1".into(),
        purposes: vec!["HMB".into()],
        issued_at: now - 60,
        expires: now + 86_400,
    }
    .sign(&authority);
    Asking {
        key,
        credential,
        issuer: authority.public(),
        id,
    }
}

/// Counts everyone at `epsilon` through the real engine; at epsilon 10 the
/// discrete Laplace noise (scale 0.1) is 0 but with probability under 1e-4.
fn count_everyone(w: &World, r: &Asking, id: &str, epsilon: f64) -> f64 {
    let query = Query::from_toml(&witmed_protocol::examples::count(id, "HMB", epsilon)).unwrap();
    let answer = witmed_node::engine::answer(
        &w.node,
        &query,
        &r.key.public(),
        &r.credential,
        witmed_node::unix_now(),
    )
    .unwrap();
    answer.released.value.unwrap().round()
}

fn cap_text(w: &World, patient: Pseudonym, key: &KeyPair, epsilon: Option<f64>, at: i64) -> String {
    let mut id = [0u8; 16];
    witmed_crypto::fill_random(&mut id).unwrap();
    CapRequest {
        version: CAP_VERSION,
        id: consent::token_id(id),
        node: w.node.id(),
        patient,
        epsilon,
        issued_at: at,
    }
    .sign(key)
    .to_text()
}

fn account_json(w: &World, p: &Pseudonym) -> Value {
    let account = accounts::of(&w.node, p).unwrap();
    serde_json::to_value(AccountView::of(p, &account)).unwrap()
}

#[test]
fn a_patient_reads_their_own_privacy_account_which_grows_by_each_answer_that_included_them() {
    let w = world();
    let r = queries_allowed(&w);
    let empty = as_patient(&w, &w.alice, "GET", "/api/v1/patient/account", "");
    assert_eq!(empty.status, 200, "{:?}", empty.body);
    assert_eq!(empty.body["total_epsilon"], 0.0);
    assert_eq!(empty.body, account_json(&w, &w.alice.0));
    assert_eq!(count_everyone(&w, &r, "q1", 10.0), 2.0, "Alice and Bob");
    assert_eq!(
        count_everyone(&w, &r, "q2", 0.25),
        count_everyone(&w, &r, "q2", 0.25)
    );
    let alice = as_patient(&w, &w.alice, "GET", "/api/v1/patient/account", "");
    assert_eq!(alice.status, 200);
    assert_eq!(
        alice.body,
        account_json(&w, &w.alice.0),
        "what accounts::of says"
    );
    assert_eq!(alice.body["pseudonym"], w.alice.0.to_hex().as_str());
    assert_eq!(
        alice.body["total_epsilon"], 10.25,
        "10 + 0.25; the replay of q2 charged nothing"
    );
    assert_eq!(alice.body["answers"], 2);
    assert_eq!(alice.body["per_window"].as_array().unwrap().len(), 1);
    let digest = accounts::researcher_digest(&w.node, &r.issuer, &r.id);
    assert_eq!(
        alice.body["per_researcher"][0]["researcher"],
        hex::encode(digest).as_str()
    );
    assert_eq!(alice.body["per_researcher"][0]["epsilon"], 10.25);
    assert_eq!(alice.body["cap"], Value::Null);
    // Carol gave no consent: not charged (staff read it; she has no key to ask).
    assert_eq!(accounts::of(&w.node, &w.carol).unwrap().total_epsilon, 0.0);
    // Bob's account is his own, and Alice cannot ask for it.
    let bob = as_patient(&w, &w.bob, "GET", "/api/v1/patient/account", "");
    assert_eq!(bob.body["pseudonym"], w.bob.0.to_hex().as_str());
    let forged = impostor(
        &w,
        w.bob.0,
        &w.alice.1,
        "GET",
        "/api/v1/patient/account",
        "",
    );
    assert_eq!((forged.status, forged.code()), (401, "bad_signature"));
    assert!(forged.body.get("total_epsilon").is_none());
}

#[test]
fn a_cap_set_over_http_leaves_the_patient_out_of_the_next_query() {
    let w = world();
    let r = queries_allowed(&w);
    let now = witmed_node::unix_now();
    assert_eq!(count_everyone(&w, &r, "before", 10.0), 2.0);
    let signed = cap_text(&w, w.alice.0, &w.alice.1, Some(15.0), now);
    let set = as_patient(
        &w,
        &w.alice,
        "POST",
        "/api/v1/patient/cap",
        &submission(&signed),
    );
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(set.body["epsilon"], 15.0);
    assert_eq!(set.body["total_epsilon"], 10.0);
    let account = as_patient(&w, &w.alice, "GET", "/api/v1/patient/account", "");
    assert_eq!(account.body["cap"]["epsilon"], 15.0);
    assert_eq!(account.body, account_json(&w, &w.alice.0));
    // 10 + 10 would pass 15: Alice is left out, and not charged.
    assert_eq!(count_everyone(&w, &r, "after", 10.0), 1.0, "Bob only");
    assert_eq!(
        accounts::of(&w.node, &w.alice.0).unwrap().total_epsilon,
        10.0
    );
    assert_eq!(accounts::of(&w.node, &w.bob.0).unwrap().total_epsilon, 20.0);
    // Removing it brings her back.
    let removed = cap_text(&w, w.alice.0, &w.alice.1, None, now);
    let reply = as_patient(
        &w,
        &w.alice,
        "POST",
        "/api/v1/patient/cap",
        &submission(&removed),
    );
    assert_eq!((reply.status, &reply.body["epsilon"]), (200, &Value::Null));
    assert_eq!(count_everyone(&w, &r, "again", 10.0), 2.0);
}

#[test]
fn replayed_forged_foreign_and_stale_cap_requests_are_refused_and_store_nothing() {
    let w = world();
    let now = witmed_node::unix_now();
    let post = |who: &(Pseudonym, KeyPair), signed: &str| {
        as_patient(&w, who, "POST", "/api/v1/patient/cap", &submission(signed))
    };
    let signed = cap_text(&w, w.alice.0, &w.alice.1, Some(3.0), now);
    assert_eq!(post(&w.alice, &signed).status, 200);
    // The same signed request again, in a freshly signed HTTP request.
    let replayed = post(&w.alice, &signed);
    assert_eq!(
        (replayed.status, replayed.code()),
        (422, "duplicate_cap_request")
    );
    // Bob submits a genuine request of Alice's.
    let alices = cap_text(&w, w.alice.0, &w.alice.1, Some(0.0), now);
    let foreign = post(&w.bob, &alices);
    assert_eq!((foreign.status, foreign.code()), (403, "forbidden"));
    // Bob signs a cap for Alice with his own key and submits it as himself, or as Alice.
    let forged = cap_text(&w, w.alice.0, &w.bob.1, Some(0.0), now);
    assert_eq!(post(&w.bob, &forged).code(), "forbidden");
    let as_alice = impostor(
        &w,
        w.alice.0,
        &w.bob.1,
        "POST",
        "/api/v1/patient/cap",
        &submission(&forged),
    );
    assert_eq!(as_alice.code(), "bad_signature");
    // Alice's own request, but two days old, or for another node.
    let stale = cap_text(&w, w.alice.0, &w.alice.1, Some(0.0), now - 2 * 86_400);
    let reply = post(&w.alice, &stale);
    assert_eq!((reply.status, reply.code()), (422, "expired"));
    let elsewhere = CapRequest {
        version: CAP_VERSION,
        id: consent::token_id([7; 16]),
        node: KeyPair::generate(Role::Node).unwrap().public(),
        patient: w.alice.0,
        epsilon: Some(0.0),
        issued_at: now,
    }
    .sign(&w.alice.1)
    .to_text();
    assert_eq!(post(&w.alice, &elsewhere).code(), "other_node");
    // A consent token is not a cap request.
    let (_, token) = token_for(&w, &w.alice);
    assert_eq!(post(&w.alice, &token).code(), "bad_request");
    assert_eq!(post(&w.alice, "garbage").code(), "bad_request");
    // Only the first request took effect.
    let cap = accounts::of(&w.node, &w.alice.0).unwrap().cap.unwrap();
    assert_eq!(cap.epsilon, 3.0);
    assert_eq!(accounts::of(&w.node, &w.bob.0).unwrap().cap, None);
}

#[test]
fn a_patients_audit_view_verifies_against_the_nodes_signed_head_and_holds_their_entries_and_the_uses_that_included_them(
) {
    let w = world();
    let r = queries_allowed(&w);
    count_everyone(&w, &r, "q1", 1.0);
    let now = witmed_node::unix_now();
    let signed = cap_text(&w, w.alice.0, &w.alice.1, Some(1.5), now);
    assert_eq!(
        as_patient(
            &w,
            &w.alice,
            "POST",
            "/api/v1/patient/cap",
            &submission(&signed)
        )
        .status,
        200
    );
    // Past Alice's cap: this answer leaves her out and includes Bob.
    count_everyone(&w, &r, "q2", 1.0);
    let reply = as_patient(&w, &w.alice, "GET", "/api/v1/patient/audit", "");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["node_key"], w.node.id().to_hex().as_str());
    // The client's side: deserialise what the API returned, verify with the node key it holds.
    let view: PatientView = serde_json::from_value(reply.body["view"].clone()).unwrap();
    let head = view.verify(&w.node.id()).unwrap();
    assert!(head.seq >= 1);
    let kinds: Vec<&str> = view.entries().map(|e| e.kind.as_str()).collect();
    assert_eq!(reply.body["own_entries"], kinds.len());
    assert!(kinds.contains(&"patient.cap"), "{kinds:?}");
    assert!(kinds.len() >= 3, "enrolment, consent and cap: {kinds:?}");
    assert!(view.entries().all(|e| e.subject == Some(w.alice.0)));
    // Nothing in full about anyone else: Bob's entries are digests only.
    let bobs_in_full = view
        .items
        .iter()
        .filter(|i| matches!(i, ViewItem::Own(e) if e.subject == Some(w.bob.0)))
        .count();
    assert_eq!(bobs_in_full, 0);
    assert!(!reply.body["view"].to_string().contains(&w.bob.0.to_hex()));
    // In full too: the answer that included her, with who asked, for what and at what cost.
    let digest = accounts::researcher_digest(&w.node, &r.issuer, &r.id);
    let uses: Vec<&ResearchUse> = view.uses().map(|(_, u)| u).collect();
    assert_eq!(reply.body["uses"], 1);
    assert_eq!(uses.len(), 1, "q1 only: q2 left her out");
    let u = uses[0];
    assert_eq!(
        (
            u.query_id.as_str(),
            u.researcher,
            u.researcher_name.as_str(),
            u.institution.as_str(),
            u.project.as_str(),
            u.purpose.as_str(),
            u.aggregate.as_str(),
            u.mode.as_str(),
            u.epsilon,
        ),
        (
            "q1",
            digest,
            "Ada",
            "University",
            "p1",
            "HMB",
            "count",
            "dp",
            1.0
        )
    );
    // A use edited on the way (a smaller cost) fails the client's check.
    let mut cheaper = reply.body["view"].clone();
    let used = cheaper["items"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|i| i.get("Use").is_some())
        .unwrap();
    used["Use"]["research"]["epsilon"] = serde_json::json!(0.01);
    let cheaper: PatientView = serde_json::from_value(cheaper).unwrap();
    assert_eq!(
        cheaper.verify(&w.node.id()).unwrap_err().error_code(),
        "audit_edited"
    );
    // A view edited on the way fails the client's check.
    let mut edited = reply.body["view"].clone();
    let own = edited["items"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|i| i.get("Own").is_some())
        .unwrap();
    own["Own"]["detail"] = Value::String("nothing happened".into());
    let edited: PatientView = serde_json::from_value(edited).unwrap();
    assert_eq!(
        edited.verify(&w.node.id()).unwrap_err().error_code(),
        "audit_edited"
    );
    // Under another node's key it does not verify either.
    let other = KeyPair::generate(Role::Node).unwrap().public();
    assert!(view.verify(&other).is_err());
    // Bob's view is his; Alice cannot have it.
    let bob = as_patient(&w, &w.bob, "GET", "/api/v1/patient/audit", "");
    let bobs: PatientView = serde_json::from_value(bob.body["view"].clone()).unwrap();
    bobs.verify(&w.node.id()).unwrap();
    assert!(bobs.entries().all(|e| e.subject == Some(w.bob.0)));
    assert!(!bobs.entries().any(|e| e.kind == "patient.cap"));
    let bobs_uses: Vec<&str> = bobs.uses().map(|(_, u)| u.query_id.as_str()).collect();
    assert_eq!(bobs_uses, ["q1", "q2"]);
    let forged = impostor(&w, w.bob.0, &w.alice.1, "GET", "/api/v1/patient/audit", "");
    assert_eq!((forged.status, forged.code()), (401, "bad_signature"));
}
