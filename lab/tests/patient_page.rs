//! The patient page in a real headless Chromium against a real node: a patient makes a key in the browser, staff enrol it over HTTP, the patient grants consent, a researcher's federated query counts them, the patient sees that use and their privacy account grow by its epsilon, revokes, and the next query leaves them out; the key never leaves the browser.
//!
//! Needs `chromium` and `chromium-driver` (scripts/setup.sh installs them):
//! without them the test fails, naming that script. With
//! `WITMED_WRITE_SCREENSHOTS=1` it writes docs/patient-page.png (desktop)
//! and docs/patient-page-phone.png (375 px wide).

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use browser::Browser;
use common::*;
use serde_json::{json, Value};
use witmed_simnet::cluster::{self, Cluster};

/// The researcher's query: how many consenting patients, at the highest
/// epsilon a query may ask (10; the node's budget is raised to allow three).
/// Discrete Laplace noise of scale 1/10 is 0 except with probability
/// 2e^-10/(1+e^-10) < 1e-4 per answer, so the released counts are exact.
const EPSILON: f64 = 10.0;

fn count_everyone(id: &str) -> String {
    format!(
        "version = 1\nid = \"{id}\"\npurpose = \"HMB\"\naggregate = \"count\"\n\
         [cohort]\n[privacy]\nmode = \"dp\"\nepsilon = {EPSILON:?}\n"
    )
}

/// One HTTP/1.1 request; status and JSON body.
fn http(addr: SocketAddr, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

/// The hospital administrator raises the node's epsilon budget (show, edit, sign, install).
fn raise_budget(data_dir: &Path) {
    let dir = s(data_dir);
    let mut policy: witmed_policies::policy::NodePolicy =
        toml::from_str(&run_ok(&["policy", "show", "--data-dir", dir])).unwrap();
    policy.serial += 1;
    policy.budget.epsilon = 1e6;
    policy.budget.lifetime = None;
    let edited = data_dir.with_extension("policy.toml");
    let signed = data_dir.with_extension("policy.signed");
    std::fs::write(&edited, toml::to_string(&policy).unwrap()).unwrap();
    let key = data_dir.join("hospital.key");
    run_ok(&[
        "policy",
        "sign",
        "--key",
        s(&key),
        "--policy",
        s(&edited),
        "--out",
        s(&signed),
    ]);
    run_ok(&["policy", "install", "--data-dir", dir, s(&signed)]);
}

/// One hospital with 40 set-a patients, 70% consenting (simulated), serving HTTP.
struct Hospital {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    cluster: Cluster,
    http: SocketAddr,
    staff_token: String,
    records: Vec<PathBuf>,
}

fn hospital() -> Hospital {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let records: Vec<PathBuf> = physionet_files(&set_a()).into_iter().take(40).collect();
    let options = cluster::Options {
        consent_rate: 0.7,
        ..cluster_options(&root.join("cluster"))
    };
    let mut c = Cluster::build(&options, &cluster::split(&records, 1)).unwrap();
    raise_budget(&c.members[0].data_dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http: SocketAddr = ([127, 0, 0, 1], port).into();
    c.set_http(0, Some(&http.to_string()));
    c.start(0).unwrap();
    wait_for_http(http);
    // Where `witmed node run --http` keeps the staff token (witmed_api::auth::staff_token_path).
    let token_file = c.members[0].data_dir.join("admin").join("api.token");
    let staff_token = std::fs::read_to_string(token_file)
        .unwrap()
        .trim()
        .to_string();
    Hospital {
        _tmp: tmp,
        root,
        cluster: c,
        http,
        staff_token,
        records,
    }
}

fn wait_for_http(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() && http(addr, "GET", "/api/v1/health", "", "").0 == 200
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the node's HTTP API did not answer on {addr} within 30 s");
}

impl Hospital {
    fn staff(&self, method: &str, path: &str, body: &str) -> Value {
        let (status, json) = http(self.http, method, path, &self.staff_token, body);
        assert_eq!(status, 200, "{method} {path}: {json}");
        json
    }

    /// Source ids and pseudonyms of patients with records, split by whether a key is enrolled.
    fn patients(&self) -> (Vec<String>, Vec<String>) {
        let (mut free, mut enrolled) = (Vec::new(), Vec::new());
        for r in &self.records {
            let id = r.file_stem().unwrap().to_string_lossy();
            let found = self.staff(
                "GET",
                &format!("/api/v1/staff/patients?system=physionet2012&id={id}"),
                "",
            );
            assert_eq!(found["has_records"], true, "{found}");
            let pseudonym = found["pseudonym"].as_str().unwrap().to_string();
            if found["enrolled"] == true {
                enrolled.push(pseudonym)
            } else {
                free.push(pseudonym)
            }
        }
        (free, enrolled)
    }

    /// Runs the researcher's federated count; the exact number it releases.
    fn count(&self, id: &str) -> f64 {
        let file = self.root.join(format!("{id}.toml"));
        std::fs::write(&file, count_everyone(id)).unwrap();
        let answer = self.cluster.query(&file, "10s").unwrap();
        assert_eq!(answer["hospitals_answered"], 1, "{answer}");
        answer["value"]
            .as_f64()
            .unwrap_or_else(|| panic!("no value: {answer}"))
    }
}

/// What the page shows when a wait fails.
fn page_state(b: &Browser) -> String {
    format!(
        "status {:?}, error {:?}",
        b.text("#status"),
        b.text("#error")
    )
}

fn wait_status(b: &Browser, what: &str, contains: &str) {
    let needle = contains.to_string();
    b.wait(
        what,
        30,
        move |b| b.text("#status").contains(&needle),
        page_state,
    );
}

fn wait_error(b: &Browser, what: &str, contains: &str) {
    let needle = contains.to_string();
    b.wait(
        what,
        30,
        move |b| b.text("#error").contains(&needle),
        page_state,
    );
}

/// The private key the page keeps, as its JWK `d` (base64url), read from IndexedDB in the page.
fn private_key_of_page(b: &Browser) -> String {
    let d = b.script_async(
        "const done = arguments[arguments.length - 1];
         const open = indexedDB.open('witmed-patient', 1);
         open.onsuccess = () => {
           const get = open.result.transaction('settings').objectStore('settings').get('pair');
           get.onsuccess = async () => done((await crypto.subtle.exportKey('jwk', get.result.privateKey)).d);
         };",
        json!([]),
    );
    d.as_str()
        .expect("the page keeps a private key")
        .to_string()
}

/// Asserts no request carried the private key in any form, and every request stayed on the node.
fn assert_key_never_sent(requests: &[Value], d: &str, origin: &str) {
    let to_node = requests
        .iter()
        .filter(|r| r["url"].as_str().is_some_and(|u| u.starts_with(origin)));
    assert!(to_node.count() > 10, "the page's requests were not logged");
    let raw = base64url_decode(d);
    let forms = [d.to_string(), hex::encode(&raw), standard_base64(d)];
    for r in requests {
        let text = r.to_string();
        for form in &forms {
            assert!(
                !text.contains(form.as_str()),
                "a request carried the private key: {text}"
            );
        }
        let url = r["url"].as_str().unwrap_or_default();
        // The browser's own start page before the test opens ours.
        if url.starts_with("chrome://") || url.starts_with("about:") {
            continue;
        }
        assert!(
            url.starts_with(origin) || url.starts_with("blob:") || url.starts_with("data:"),
            "a request left the node: {url}"
        );
    }
}

fn base64url_decode(text: &str) -> Vec<u8> {
    let digit = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = text.bytes().filter(|c| *c != b'=').map(digit).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn standard_base64(url_form: &str) -> String {
    url_form.replace('-', "+").replace('_', "/")
}

fn screenshot(b: &Browser, width: u32, file: &str) {
    // The page's height at this width, not at the window's current one.
    b.resize(width, 800);
    std::thread::sleep(Duration::from_millis(300));
    let height = b
        .script("return document.documentElement.scrollHeight;", json!([]))
        .as_u64()
        .unwrap_or(2000);
    b.resize(width, (height as u32).clamp(600, 9000) + 100);
    std::thread::sleep(Duration::from_millis(300));
    let png = b.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(file);
    std::fs::write(&path, png).unwrap();
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Each use the page lists, newest first, by field (`when`, `what`,
/// `researcher`, `institution`, `project`, `purpose`, `protection`, `cost`).
fn use_rows(b: &Browser) -> Vec<BTreeMap<String, String>> {
    let cards = b.script(
        "return [...document.querySelectorAll('#uses li[data-use]')].map((li) => \
         Object.fromEntries([...li.querySelectorAll('[data-field]')].map((e) => [e.dataset.field, e.textContent])));",
        json!([]),
    );
    serde_json::from_value(cards).unwrap()
}

/// One use as the page shows it: when (within the minute of the query),
/// who (the cluster's researcher), institution, project, purpose, what and
/// how in plain words, and its cost; and the log it came from verified.
fn assert_use_shown(b: &Browser, card: &BTreeMap<String, String>, asked_at: i64) {
    let field = |name: &str| {
        card.get(name)
            .unwrap_or_else(|| panic!("no {name} in {card:?}"))
            .as_str()
    };
    let shown_at = b.script(
        "return Date.parse(arguments[0].replace(' UTC', 'Z').replace(' ', 'T')) / 1000;",
        json!([field("when")]),
    );
    let shown_at = shown_at.as_f64().unwrap_or_else(|| panic!("{card:?}")) as i64;
    assert!(
        (asked_at - 60..=unix_now()).contains(&shown_at),
        "{card:?}: not the time of the query"
    );
    assert!(
        field("researcher").starts_with("Simulated Researcher (code "),
        "{card:?}"
    );
    assert_eq!(
        (field("institution"), field("project")),
        ("simnet", "simnet")
    );
    assert_eq!(field("purpose"), "Health and medical research (HMB)");
    assert_eq!(field("what"), "How many patients");
    assert!(
        field("protection").contains("differential privacy"),
        "{card:?}"
    );
    assert_eq!(field("cost"), "ε 10");
    assert!(
        b.text("#audit-status").contains("and 1 use of your data"),
        "{}",
        b.text("#audit-status")
    );
}

#[test]
fn a_patient_consents_on_the_page_is_counted_sees_the_use_revokes_and_is_left_out() {
    let h = hospital();
    let (free, enrolled) = h.patients();
    let me = free
        .first()
        .expect("a patient without simulated consent")
        .clone();
    let other = enrolled
        .first()
        .expect("a patient with simulated consent")
        .clone();
    let baseline = h.count("before");
    assert_eq!(
        baseline,
        enrolled.len() as f64,
        "every simulated consent is counted exactly"
    );

    let b = Browser::start(1280, 1000);
    let origin = format!("http://{}", h.http);
    b.goto(&format!("{origin}/"));
    b.wait(
        "the page to start",
        30,
        |b| b.script("return document.body.dataset.ready === 'true';", json!([])) == true,
        page_state,
    );
    assert_eq!(b.url(), format!("{origin}/patient/"));
    b.type_into("#code", &me);
    b.click("#create-key");
    wait_status(&b, "a key", "A new key was made");
    let public_key = b.text("#public-key");
    assert!(
        public_key.len() == 64 && public_key.bytes().all(|c| c.is_ascii_hexdigit()),
        "{public_key}"
    );

    // Before staff enrol the key, the node says so and the page shows it.
    b.click("#refresh");
    wait_error(&b, "the refusal of a key not enrolled", "(not_enrolled)");

    // Staff enrol the key the patient shows them, over the API.
    let enrolment = json!({ "pseudonym": me, "public_key": public_key }).to_string();
    let done = h.staff("POST", "/api/v1/staff/enrolments", &enrolment);
    assert_eq!(done["public_key"], public_key.as_str(), "{done}");
    b.click("#refresh");
    wait_status(&b, "the patient's data", "Your data is shown below");
    assert!(
        b.count("#vitals figure svg") > 0,
        "no vital-sign chart drawn"
    );
    assert!(
        b.count("#vitals figure table tbody tr") > 0,
        "no table fallback"
    );
    assert!(
        b.text("#audit-status").starts_with("Verified"),
        "{}",
        b.text("#audit-status")
    );

    // The patient grants consent: the browser builds and signs the token.
    b.click("#grant");
    wait_status(&b, "consent in force", "Your consent is in force");
    assert_eq!(b.count("#consents li.active"), 1, "{}", b.text("#consents"));
    let asked_at = unix_now();
    assert_eq!(
        h.count("with-me"),
        baseline + 1.0,
        "the patient's consent counts"
    );

    // The patient sees the use and their account grown by its epsilon.
    b.click("#refresh");
    wait_status(&b, "the patient's data again", "Your data is shown below");
    b.wait(
        "the account to show the use",
        30,
        |b| b.text("#total-epsilon") == "10",
        page_state,
    );
    assert_eq!(b.text("#answers"), "1");
    let by_researcher = b.text("#by-researcher tbody");
    assert!(
        by_researcher.contains("10") && !by_researcher.contains("No research answer"),
        "{by_researcher}"
    );
    // The use itself, in full and in plain words, from the verified log.
    let uses = use_rows(&b);
    assert_eq!(uses.len(), 1, "only the query after her consent: {uses:?}");
    assert_use_shown(&b, &uses[0], asked_at);
    // The code it names the researcher by is the one the account sums under.
    let code = uses[0]["researcher"]
        .trim_end_matches(')')
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    assert!(
        code.len() == 32 && by_researcher.contains(&code),
        "{code} in {by_researcher}"
    );
    assert!(
        b.text("#audit").contains("You gave consent"),
        "{}",
        b.text("#audit")
    );
    assert!(
        b.text("#audit-status").starts_with("Verified"),
        "{}",
        b.text("#audit-status")
    );

    // The patient revokes; the next query leaves them out.
    b.click("#consents li.active button.revoke");
    wait_status(&b, "the revocation", "Consent withdrawn");
    assert_eq!(b.count("#consents li.revoked"), 1);
    assert_eq!(
        h.count("after-revoke"),
        baseline,
        "a revoked consent no longer counts"
    );
    // And the page lists no new use: the query left them out.
    b.click("#refresh");
    wait_status(
        &b,
        "the patient's data after the revocation",
        "Your data is shown below",
    );
    assert_eq!(use_rows(&b).len(), 1, "{:?}", use_rows(&b));
    assert_eq!(b.text("#total-epsilon"), "10");

    // Another patient's code with this key: the node's refusal is shown.
    b.type_into("#code", &other);
    b.click("#refresh");
    wait_error(
        &b,
        "the refusal of another patient's data",
        "(bad_signature)",
    );
    b.type_into("#code", &me);

    // The private key never left the browser, and nothing was loaded from elsewhere.
    let d = private_key_of_page(&b);
    assert_key_never_sent(&b.requests(), &d, &origin);

    if std::env::var_os("WITMED_WRITE_SCREENSHOTS").is_some_and(|v| v == "1") {
        b.click("#refresh");
        wait_status(&b, "the page for a screenshot", "Your data is shown below");
        screenshot(&b, 1280, "patient-page.png");
        screenshot(&b, 375, "patient-page-phone.png");
    }
}
