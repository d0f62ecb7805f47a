//! A real headless Chromium driven over WebDriver (chromedriver), for tests of the web pages: started on a free loopback port with a fresh profile, stopped on drop.
//!
//! The client is a few plain HTTP/1.1 calls over `std::net` (the WebDriver
//! protocol is JSON over HTTP), so it needs no extra crate. Missing
//! `chromium` or `chromedriver` fails the test with what to run; it never
//! skips. Include it with `#[path = "common/browser.rs"] mod browser;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session, with chromedriver and a throwaway profile.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

fn require(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: the page tests need Debian's chromium and chromium-driver; run scripts/setup.sh"
    );
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium `width` x `height` pixels.
    pub fn start(width: u32, height: u32) -> Browser {
        require(CHROMIUM);
        require(CHROMEDRIVER);
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMEDRIVER} did not start ({e}); run scripts/setup.sh"));
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        browser.wait_ready();
        browser.session = browser.new_session(width, height);
        browser.call(
            "POST",
            "timeouts",
            Some(json!({ "script": 30_000, "pageLoad": 30_000 })),
        );
        browser
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(status) = self.raw("GET", "/status", None) {
                if status["value"]["ready"] == true {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "chromedriver did not become ready within 20 s on port {}",
            self.port
        );
    }

    fn new_session(&self, width: u32, height: u32) -> String {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            self._profile.path().display()
        ));
        args.push(format!("--window-size={width},{height}"));
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "goog:loggingPrefs": { "performance": "ALL", "browser": "ALL" },
        }}});
        let answer = self
            .raw("POST", "/session", Some(capabilities))
            .unwrap_or_else(|e| panic!("no browser session: {e}"));
        answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}"))
            .to_string()
    }

    /// One WebDriver command on this session; its `value`, or what failed.
    pub fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let answer = self.raw(method, &format!("/session/{}/{path}", self.session), body)?;
        if let Some(error) = answer["value"]["error"].as_str() {
            return Err(format!("{error}: {}", answer["value"]["message"]));
        }
        Ok(answer["value"].clone())
    }

    /// One WebDriver command; panics with the driver's error.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body.clone())
            .unwrap_or_else(|e| panic!("WebDriver {method} {path} {body:?}: {e}"))
    }

    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(90)))
            .map_err(|e| e.to_string())?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.port,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .map_err(|e| e.to_string())?;
        stream
            .write_all(body.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let (mut chunked, mut length) = (false, None);
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            let lower = line.to_ascii_lowercase();
            chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
            if let Some(n) = lower.strip_prefix("content-length:") {
                length = n.trim().parse::<usize>().ok();
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        // chromedriver keeps the connection open: read exactly the body.
        let mut payload = Vec::new();
        match length {
            Some(n) => {
                payload.resize(n, 0);
                reader.read_exact(&mut payload).map_err(|e| e.to_string())?;
            }
            None => {
                reader
                    .read_to_end(&mut payload)
                    .map_err(|e| e.to_string())?;
            }
        }
        if chunked {
            payload = dechunk(&payload);
        }
        serde_json::from_slice(&payload)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&payload)))
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.call("POST", "url", Some(json!({ "url": url })));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.call("GET", "url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element `css` selects (the first).
    pub fn find(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    /// How many elements `css` selects.
    pub fn count(&self, css: &str) -> usize {
        self.call(
            "POST",
            "elements",
            Some(json!({ "using": "css selector", "value": css })),
        )
        .as_array()
        .map_or(0, Vec::len)
    }

    /// Clicks the element `css` selects.
    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.call("POST", &format!("element/{id}/click"), Some(json!({})));
    }

    /// Replaces the text of the input `css` selects (also: a file path for a file input).
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        if self.attribute(css, "type") != "file" {
            self.call("POST", &format!("element/{id}/clear"), Some(json!({})));
        }
        self.call(
            "POST",
            &format!("element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn attribute(&self, css: &str, name: &str) -> String {
        let id = self.find(css);
        self.call("GET", &format!("element/{id}/attribute/{name}"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The text content of what `css` selects ("" when nothing does).
    pub fn text(&self, css: &str) -> String {
        self.script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            json!([css]),
        )
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_string()
    }

    /// Runs `body` (a function body; `arguments` are `args`) in the page.
    pub fn script(&self, body: &str, args: Value) -> Value {
        self.call(
            "POST",
            "execute/sync",
            Some(json!({ "script": body, "args": args })),
        )
    }

    /// Runs `body`, whose last argument is the callback to call with the result.
    pub fn script_async(&self, body: &str, args: Value) -> Value {
        self.call(
            "POST",
            "execute/async",
            Some(json!({ "script": body, "args": args })),
        )
    }

    /// Waits up to `seconds` until `ready` holds; panics naming `what` and `state()`.
    pub fn wait(
        &self,
        what: &str,
        seconds: u64,
        ready: impl Fn(&Browser) -> bool,
        state: impl Fn(&Browser) -> String,
    ) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            if ready(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "waited {seconds} s for {what}; the page shows: {}",
            state(self)
        );
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let text = self.call("GET", "screenshot", None);
        decode_base64(text.as_str().unwrap_or_default())
    }

    /// Every request the page sent since the last call (Chromium's performance log).
    pub fn requests(&self) -> Vec<Value> {
        let log = self.call("POST", "se/log", Some(json!({ "type": "performance" })));
        log.as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| serde_json::from_str::<Value>(entry["message"].as_str()?).ok())
            .filter(|m| m["message"]["method"] == "Network.requestWillBeSent")
            .map(|m| m["message"]["params"]["request"].clone())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.raw("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&bytes[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&bytes[start..(start + size).min(bytes.len())]);
        bytes = &bytes[(start + size + 2).min(bytes.len())..];
    }
    out
}

/// Standard base64 (WebDriver's screenshots).
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
