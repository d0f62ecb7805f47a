//! `witmed node run --http` as an operator starts it: loopback in clear, any other address only over TLS from the given PEM files, bad files refused by name.

#[path = "../../lab/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;

fn node(tmp: &Path) -> PathBuf {
    let dir = tmp.join("node");
    init_node(&dir, "General");
    dir
}

/// A self-signed certificate for 127.0.0.1, as PEM files; its DER.
fn certificate(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key, certified.cert.der().to_vec())
}

fn run_args<'a>(dir: &'a Path, http: &'a str) -> Vec<&'a str> {
    vec![
        "node",
        "run",
        "--data-dir",
        s(dir),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--http",
        http,
    ]
}

/// Runs the node until it prints the API's address; the child and that line.
fn running(args: &[&str]) -> (Child, String) {
    let mut child = witmed()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for _ in 0..10 {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 || line.contains("http api on") {
            break;
        }
    }
    (child, line)
}

fn stop(mut child: Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
}

fn https_get(addr: SocketAddr, trusted: &[u8], path: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(trusted.to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut stream = rustls::Stream::new(&mut connection, &mut tcp);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    if let Err(e) = stream.read_to_end(&mut response) {
        assert!(!response.is_empty(), "{e}");
    }
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn an_address_beyond_loopback_without_tls_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = node(tmp.path());
    let out = run_fail(&run_args(&dir, "0.0.0.0:0"));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error[http_not_local]"), "{stderr}");
    assert!(
        stderr.contains("--tls-cert"),
        "the remedy is not named: {stderr}"
    );
}

#[test]
fn an_unusable_certificate_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = node(tmp.path());
    let (_, key, _) = certificate(tmp.path());
    let missing = tmp.path().join("no-such-cert.pem");
    let mut args = run_args(&dir, "127.0.0.1:0");
    args.extend(["--tls-cert", s(&missing), "--tls-key", s(&key)]);
    let out = run_fail(&args);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error[tls_config]"), "{stderr}");
    assert!(stderr.contains("no-such-cert.pem"), "{stderr}");

    // A certificate without its key is a usage error, before anything starts.
    let mut args = run_args(&dir, "127.0.0.1:0");
    args.extend(["--tls-cert", s(&key)]);
    let out = run_fail(&args);
    assert!(
        text(&out.stderr).contains("--tls-key"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn with_a_certificate_the_api_is_served_over_tls_on_every_interface() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = node(tmp.path());
    let (cert, key, der) = certificate(tmp.path());
    let mut args = run_args(&dir, "0.0.0.0:0");
    args.extend(["--tls-cert", s(&cert), "--tls-key", s(&key)]);
    let (child, line) = running(&args);
    let port: u16 = line
        .split("https://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no https address in {line:?}"));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let response = https_get(addr, &der, "/api/v1/health");
    // In clear, the same port says nothing.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    plain
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut clear = Vec::new();
    let _ = plain.read_to_end(&mut clear);
    stop(child);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"node\":\"General\""), "{response}");
    assert!(!String::from_utf8_lossy(&clear).contains("200 OK"));
}
