//! The clinician page in a real headless Chromium: a deteriorating PhysioNet patient's simulated device raises a NEWS2 alert that appears on the open page without a reload; acknowledging it removes it.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use witmed_lab::device::http::Client;
use witmed_lab::device::{simulate, stays};
use witmed_simnet::cluster::{Cluster, Options, Spec};

/// A chromedriver process, killed when dropped.
struct Driver {
    child: Child,
    client: Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self
            .client
            .send("DELETE", &format!("/session/{}", self.session), &[], b"");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Driver {
    /// Starts chromedriver and a headless Chromium session with a fresh profile.
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (scripts/setup.sh installs chromium-driver)");
        let mut client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.send("GET", "/status", &[], b"").is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let mut driver = Driver {
            child,
            client,
            session: String::new(),
            _profile: profile,
        };
        let answer = driver.call("POST", "/session", caps);
        driver.session = answer["sessionId"].as_str().unwrap().to_string();
        driver
    }

    fn call(&mut self, method: &str, path: &str, body: Value) -> Value {
        let body = serde_json::to_vec(&body).unwrap();
        let r = self
            .client
            .send(method, path, &[("content-type", "application/json")], &body)
            .unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(r.status < 300, "webdriver {method} {path}: {}", r.text());
        v["value"].clone()
    }

    fn session_call(&mut self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
    }

    fn open(&mut self, url: &str) {
        self.session_call("POST", "/url", json!({ "url": url }));
    }

    fn script(&mut self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    fn element(&mut self, css: &str) -> String {
        let found = self.session_call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_string()
    }

    fn type_into(&mut self, css: &str, text: &str) {
        let id = self.element(css);
        self.session_call(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        );
    }

    fn click(&mut self, css: &str) {
        let id = self.element(css);
        self.session_call("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// Polls a script until it returns something truthy, or fails naming `what`.
    fn wait_for(&mut self, what: &str, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.script(script);
            if !(v.is_null() || v == false || v == 0 || v == "") {
                return v;
            }
            let page = self.script("return document.body.innerText");
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the page says:\n{page}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// One hospital holding the deteriorating stay (found by scoring set-a), serving HTTP.
fn hospital(root: &std::path::Path) -> (Cluster, String, stays::Stay) {
    let set = common::set_a();
    let (stay, _) = stays::find_deteriorating(&set, 4000)
        .unwrap()
        .expect("set-a has a deteriorating stay");
    let options = Options {
        bin: PathBuf::from(common::binary()),
        root: root.join("cluster"),
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
    let mut cluster = Cluster::build(&options, &[spec]).unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    cluster.set_node_args(0, vec!["--http".into(), http.clone()]);
    cluster.start_all().unwrap();
    (cluster, http, stay)
}

#[test]
fn an_alert_appears_on_the_open_page_without_a_reload_and_can_be_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut cluster, http, stay) = hospital(tmp.path());
    let token_file = witmed_api::auth::staff_token_path(&cluster.members[0].data_dir);
    let token = std::fs::read_to_string(token_file)
        .unwrap()
        .trim()
        .to_string();

    let mut browser = Driver::start();
    browser.open(&format!("http://{http}/clinician/"));
    browser.type_into("#token", &token);
    browser.type_into("#clinician", "Dr Test");
    browser.click("#connect");
    browser.wait_for(
        "the live alert stream",
        "return document.getElementById('live').textContent.startsWith('Live')",
        Duration::from_secs(20),
    );
    // A mark in the page's memory: a reload would wipe it.
    browser.script("window.witmedMark = 'still this page'; return true");
    assert_eq!(
        browser.script("return document.querySelectorAll('#alerts li').length"),
        0
    );

    // The deteriorating patient's device replays the stay into the node.
    let config = simulate::Config {
        node: format!("http://{http}"),
        staff_token: token,
        rate: 5_000.0,
        batch: 32,
        connections: 1,
        duration: None,
    };
    let (node_id, devices) = simulate::enrol(&config, vec![stay]).unwrap();
    let summary =
        simulate::replay(&config, &node_id, devices, Arc::new(AtomicBool::new(false))).unwrap();
    assert!(summary.refusals.is_empty(), "{:?}", summary.refusals);
    let high = summary
        .alerts
        .iter()
        .map(|(_, a)| a.score)
        .max()
        .expect("the node raised an alert");
    assert!(high >= 7, "highest alert score {high}");

    let text = browser.wait_for(
        "the alert on the page",
        "const li = document.querySelector('#alerts li'); return li && li.textContent",
        Duration::from_secs(30),
    );
    assert!(text.as_str().unwrap().contains("NEWS2"), "{text}");
    assert_eq!(
        browser.script("return window.witmedMark"),
        "still this page"
    );
    // The ward row of the patient shows a score.
    browser.wait_for(
        "a scored ward row",
        "const c = document.querySelector('#ward-rows .band'); return c && c.textContent",
        Duration::from_secs(10),
    );

    // Acknowledge every open alert, one click each; the list empties.
    let open = browser
        .script("return document.querySelectorAll('#alerts li').length")
        .as_u64()
        .unwrap();
    for _ in 0..open.min(50) {
        let before = browser.script("return document.querySelectorAll('#alerts li').length");
        browser.click("#alerts li button");
        browser.wait_for(
            "the acknowledged alert to leave the list",
            &format!("return document.querySelectorAll('#alerts li').length < {before}"),
            Duration::from_secs(10),
        );
    }
    assert_eq!(
        browser.script("return window.witmedMark"),
        "still this page"
    );
    drop(browser);
    cluster.stop(0).unwrap();
}
