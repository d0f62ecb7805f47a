//! The patient page's own promises: strict headers on every response, each file with its content type, every route accounted for, no route that shows the staff token, and the page's JavaScript encoder giving the very bytes Rust signs and checks.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use witmed_api::page::{CONTENT_SECURITY_POLICY, PAGE_PATH};
use witmed_api::{clinician_page, Config, State, PAGE_ROUTES, ROUTES};
use witmed_crypto::{Envelope, Pseudonym, PublicKey};
use witmed_node::audit::chain::{link_hash, Entry, Head, Link};
use witmed_node::node::{self, Node};
use witmed_policies::cap::{CapRequest, CAP_DOMAIN};
use witmed_policies::consent::{Revocation, Token, TOKEN_DOMAIN};
use witmed_protocol::patient_request::{self, Request};
use witmed_protocol::vocab::{Category, Mode};

/// A node serving the API and the page on 127.0.0.1, stopped on drop.
struct Served {
    _tmp: tempfile::TempDir,
    addr: SocketAddr,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

fn served() -> Served {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let now = witmed_node::unix_now();
    node::init_with(&dir, "General", vec![], now, None).unwrap();
    let node = Arc::new(Node::open(&dir, now).unwrap());
    let state = Arc::new(State::new(node, &Config::default()).unwrap());
    let token = state.staff_token.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
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
    Served {
        _tmp: tmp,
        addr,
        token,
        stop: Some(stop),
        server: Some(server),
    }
}

/// A response: status, headers (names lowercased) and body text.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn get(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Reply {
    request(addr, "GET", path, extra)
}

fn request(addr: SocketAddr, method: &str, path: &str, extra: &[(&str, &str)]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Asserts the headers every response carries.
fn assert_strict(reply: &Reply, what: &str) {
    let csp = reply.header("content-security-policy").unwrap_or("");
    assert_eq!(csp, CONTENT_SECURITY_POLICY, "{what}");
    for needed in [
        "default-src 'self'",
        "frame-ancestors 'none'",
        "script-src 'self'",
    ] {
        assert!(csp.contains(needed), "{what}: {csp}");
    }
    assert!(!csp.contains("unsafe"), "{what}: {csp}");
    assert_eq!(
        reply.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        reply.header("referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
    assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{what}");
}

fn expected_type(path: &str) -> &'static str {
    match Path::new(path).extension().and_then(|e| e.to_str()) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "text/html; charset=utf-8",
    }
}

#[test]
fn the_page_and_its_files_are_served_with_their_types_and_strict_headers() {
    let s = served();
    for (method, path) in PAGE_ROUTES {
        assert_eq!(method, "GET");
        let reply = get(s.addr, path, &[]);
        assert_strict(&reply, path);
        if path.ends_with('/') && path != PAGE_PATH {
            // `/` sends the browser to the page.
            assert!(
                (300..400).contains(&reply.status),
                "{path}: {}",
                reply.status
            );
            assert_eq!(reply.header("location"), Some(PAGE_PATH), "{path}");
            continue;
        }
        if path == "/patient" {
            assert_eq!(reply.header("location"), Some(PAGE_PATH));
            continue;
        }
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(
            reply.header("content-type"),
            Some(expected_type(path)),
            "{path}"
        );
        assert!(!reply.body.is_empty(), "{path}");
    }
    // API answers and refusals carry the same headers.
    for path in ["/api/v1/health", "/api/v1/patient/me", "/nothing/here"] {
        assert_strict(&get(s.addr, path, &[]), path);
    }
    // The page loads nothing from elsewhere and has no inline script or style.
    let html = get(s.addr, PAGE_PATH, &[]).body;
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "inline code in the page"
    );
    assert!(
        !has_event_attribute(&html),
        "an inline event handler in the page"
    );
}

/// Whether `html` has an attribute such as `onclick=`.
fn has_event_attribute(html: &str) -> bool {
    html.split(" on").skip(1).any(|rest| {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase())
            .collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    })
}

/// A page's folder, its routes and the path it is served under.
type PageFiles<'a> = (&'a Path, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn every_route_served_is_listed_and_every_file_of_the_page_has_a_route() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    // The patient page's files in api/web, the clinician page's in api/web/clinician.
    let pages: [PageFiles; 2] = [
        (&web, &PAGE_ROUTES, PAGE_PATH),
        (
            &web.join("clinician"),
            &clinician_page::PAGE_ROUTES,
            clinician_page::PAGE_PATH,
        ),
    ];
    for (dir, routes, prefix) in pages {
        let files: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let routed: BTreeSet<String> = routes
            .iter()
            .filter_map(|(_, p)| p.strip_prefix(prefix))
            .map(|name| {
                if name.is_empty() {
                    "index.html".to_string()
                } else {
                    name.to_string()
                }
            })
            .collect();
        assert_eq!(
            files,
            routed,
            "{} and its page routes differ",
            dir.display()
        );
    }
    let api: BTreeSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
    assert!(PAGE_ROUTES
        .iter()
        .chain(clinician_page::PAGE_ROUTES.iter())
        .all(|(_, p)| !api.contains(p) && !p.starts_with("/api/")));
    let openapi =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"))
            .unwrap();
    for (_, path) in PAGE_ROUTES {
        assert!(
            !openapi.contains(&format!("\"{path}\"")),
            "{path} is in the OpenAPI document"
        );
    }
    // Nothing else is served: a file beside the page's is a JSON 404.
    let s = served();
    for path in [
        "/patient/index.html",
        "/patient/secret.js",
        "/patient/../admin/api.token",
        "/admin/api.token",
    ] {
        let reply = get(s.addr, path, &[]);
        assert_eq!(reply.status, 404, "{path}");
        assert!(reply.body.contains("not_found"), "{path}: {}", reply.body);
    }
}

#[test]
fn no_route_shows_the_staff_token_to_anyone_without_it() {
    let s = served();
    let attempts: [&[(&str, &str)]; 3] = [
        &[],
        &[("Authorization", "Bearer wrong")],
        &[(
            patient_request::HEADER_PATIENT,
            "00000000000000000000000000000000",
        )],
    ];
    for (method, path) in ROUTES.iter().chain(PAGE_ROUTES.iter()) {
        for extra in attempts {
            let reply = request(s.addr, method, path, extra);
            let all = format!("{:?}{}", reply.headers, reply.body);
            assert!(
                !all.contains(&s.token),
                "{method} {path} shows the staff token"
            );
            assert!(
                !all.contains("api.token")
                    || path.starts_with("/api/v1/staff")
                    || path.starts_with("/api/v1/openapi"),
                "{method} {path} names the token file: {}",
                reply.body
            );
        }
    }
}

// ---- the page's JavaScript encoder against Rust ----

/// Runs `script` (an ES module importing `./postcard.js`) under node; its stdout.
fn run_node(script: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    std::fs::copy(web.join("postcard.js"), dir.path().join("postcard.mjs")).unwrap();
    std::fs::write(
        dir.path().join("main.mjs"),
        script.replace("./postcard.js", "./postcard.mjs"),
    )
    .unwrap();
    let out = Command::new("node")
        .arg(dir.path().join("main.mjs"))
        .output()
        .expect("node not found: install nodejs (scripts/setup.sh)");
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const NODE_KEY: [u8; 32] = [7; 32];
const PATIENT: [u8; 16] = [0xa5; 16];

fn token() -> Token {
    Token {
        version: 1,
        id: "0123456789abcdef0123456789abcdef".into(),
        node: PublicKey::from_bytes(NODE_KEY),
        patient: Pseudonym(PATIENT),
        purposes: vec!["HMB".into(), "NCU".into(), "DS-C0011849".into()],
        categories: [Category::Labs, Category::Demographics, Category::Encounters]
            .into_iter()
            .collect(),
        modes: [Mode::Encrypted, Mode::Dp].into_iter().collect(),
        not_before: -5,
        expires: 4_102_444_800,
        simulated: false,
    }
}

fn cap(epsilon: Option<f64>) -> CapRequest {
    CapRequest {
        version: 1,
        id: "ffffffffffffffffffffffffffffffff".into(),
        node: PublicKey::from_bytes(NODE_KEY),
        patient: Pseudonym(PATIENT),
        epsilon,
        issued_at: 1_800_000_000,
    }
}

fn entry() -> Entry {
    let mut e = Entry::new(
        1_800_000_123,
        "consent.granted",
        "ab".repeat(32),
        "token 0123 — HMB, ünïcode",
    )
    .about(Pseudonym(PATIENT));
    e.chain = Some(Link {
        seq: 300,
        prev: [3; 32],
        salt: [9; 16],
        hash: [0; 32],
    });
    e
}

/// An answer's entry with its research use (digested under the v3 domain).
fn use_entry() -> Entry {
    let mut e = Entry::new(
        1_800_000_200,
        "query.answered",
        "cd".repeat(32),
        "query q answered",
    )
    .recording(witmed_node::audit::ResearchUse {
        charge: 300,
        query_id: "q-é".into(),
        researcher: [0xee; 16],
        researcher_name: "Ada".into(),
        institution: "Université".into(),
        project: "".into(),
        purpose: "HMB".into(),
        aggregate: "survival".into(),
        mode: "encrypted".into(),
        epsilon: 0.1,
        delta: 1e-7,
    });
    e.chain = Some(Link {
        seq: 301,
        prev: [3; 32],
        salt: [8; 16],
        hash: [0; 32],
    });
    e
}

const JS_INPUTS: &str = r#"
import * as w from "./postcard.js";
const node = new Uint8Array(32).fill(7);
const patient = new Uint8Array(16).fill(0xa5);
const out = {};
out.token = w.toHex(w.encodeToken({ version: 1, id: "0123456789abcdef0123456789abcdef", node, patient,
  purposes: ["HMB", "NCU", "DS-C0011849"], categories: ["labs", "demographics", "encounters", "labs"],
  modes: ["encrypted", "dp"], notBefore: -5, expires: 4102444800, simulated: false }));
out.revocation = w.toHex(w.encodeRevocation({ version: 1, tokenId: "0123456789abcdef0123456789abcdef",
  node, patient, issuedAt: 1800000000 }));
out.cap = w.toHex(w.encodeCap({ version: 1, id: "ffffffffffffffffffffffffffffffff", node, patient, epsilon: 2.5, issuedAt: 1800000000 }));
out.capNone = w.toHex(w.encodeCap({ version: 1, id: "ffffffffffffffffffffffffffffffff", node, patient, epsilon: null, issuedAt: 1800000000 }));
out.signing = w.toHex(w.envelopeSigningMessage(w.TOKEN_DOMAIN, w.fromHex(out.token)));
out.request = w.toHex(w.requestMessage({ node: "ab", patient: "cd", method: "POST", path: "/api/v1/patient/consents?x=1",
  time: 1700000000, nonce: "00ff", bodySha256Hex: "11".repeat(32) }));
const content = w.auditContentBytes({ at: 1800000123, kind: "consent.granted", actor: "ab".repeat(32),
  detail: "token 0123 — HMB, ünïcode", subject: "a5".repeat(16) }, new Uint8Array(16).fill(9));
out.digest = w.toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", content)));
const used = JSON.parse(process.argv[3] || USE_ENTRY);
out.useDigest = w.toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", w.auditContentBytes(used, new Uint8Array(16).fill(8)))));
out.link = w.toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", w.linkBytes(300n, new Uint8Array(32).fill(3), new Uint8Array(32).fill(4)))));
const head = w.decodeHead(w.fromHex(process.argv[2] || HEAD));
out.head = [head.version, head.seq.toString(), w.toHex(head.hash), head.at];
const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
const payload = w.fromHex(out.token);
const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, pair.privateKey, w.envelopeSigningMessage(w.TOKEN_DOMAIN, payload)));
const signer = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
out.envelope = w.envelopeText(w.TOKEN_DOMAIN, payload, signer, sig);
console.log(JSON.stringify(out));
"#;

#[test]
fn the_pages_encoder_gives_the_bytes_rust_signs_and_a_browser_signed_token_opens_in_rust() {
    let head = Head {
        version: 1,
        seq: 300,
        hash: [5; 32],
        at: -1,
    };
    let head_hex = hex::encode(postcard::to_stdvec(&head).unwrap());
    // The use entry as the API's JSON gives it to the page.
    let use_json = serde_json::to_string(&serde_json::to_string(&use_entry()).unwrap()).unwrap();
    let script = JS_INPUTS
        .replace("HEAD", &format!("\"{head_hex}\""))
        .replace("USE_ENTRY", &use_json);
    let out: serde_json::Value = serde_json::from_str(&run_node(&script)).unwrap();
    let hex_of = |key: &str| {
        out[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {out}"))
            .to_string()
    };
    let token_bytes = postcard::to_stdvec(&token()).unwrap();
    assert_eq!(hex_of("token"), hex::encode(&token_bytes));
    let revocation = Revocation {
        version: 1,
        token_id: "0123456789abcdef0123456789abcdef".into(),
        node: PublicKey::from_bytes(NODE_KEY),
        patient: Pseudonym(PATIENT),
        issued_at: 1_800_000_000,
    };
    assert_eq!(
        hex_of("revocation"),
        hex::encode(postcard::to_stdvec(&revocation).unwrap())
    );
    assert_eq!(
        hex_of("cap"),
        hex::encode(postcard::to_stdvec(&cap(Some(2.5))).unwrap())
    );
    assert_eq!(
        hex_of("capNone"),
        hex::encode(postcard::to_stdvec(&cap(None)).unwrap())
    );
    let envelope = Envelope {
        version: 1,
        domain: TOKEN_DOMAIN.into(),
        payload: token_bytes,
        signer: PublicKey::from_bytes(NODE_KEY),
        signature: [0; 64],
    };
    assert_eq!(hex_of("signing"), hex::encode(envelope.signing_message()));
    let request = patient_request::message(&Request {
        node: "ab",
        patient: "cd",
        method: "POST",
        path: "/api/v1/patient/consents?x=1",
        time: 1_700_000_000,
        nonce: "00ff",
        body_sha256: [0x11; 32],
    });
    assert_eq!(hex_of("request"), hex::encode(request));
    assert_eq!(hex_of("digest"), hex::encode(entry().digest()));
    assert_eq!(hex_of("useDigest"), hex::encode(use_entry().digest()));
    assert_ne!(use_entry().digest(), {
        let mut plain = use_entry();
        plain.research = None;
        plain.digest()
    });
    assert_eq!(
        hex_of("link"),
        hex::encode(link_hash(300, &[3; 32], &[4; 32]))
    );
    assert_eq!(
        out["head"],
        serde_json::json!([1, "300", hex::encode([5u8; 32]), -1])
    );
    // A token signed by WebCrypto (here node's) opens in Rust, canonical and verified.
    let signed = Envelope::from_text(out["envelope"].as_str().unwrap(), 64 * 1024).unwrap();
    let opened: Token = signed.open(TOKEN_DOMAIN).unwrap();
    assert_eq!(opened, token());
    // And the envelope's signer is the one in the text, not a key the test chose.
    assert_ne!(signed.signer, PublicKey::from_bytes(NODE_KEY));
    let _ = CAP_DOMAIN;
}
