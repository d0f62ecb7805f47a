//! The API's transport on 127.0.0.1: TLS from PEM files (and nothing in clear on a TLS port), unusable certificates refused by name, slow clients cut off, connections bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use witmed_api::tls::{self, TlsError};
use witmed_api::transport::{self, Limits};
use witmed_api::{Config, State};
use witmed_node::node::{self, Node};

/// A node's API served by [`transport::serve`] on a thread until the value is dropped.
struct Served {
    _tmp: tempfile::TempDir,
    addr: SocketAddr,
    node_id: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(tls: Option<Arc<tls::ServerConfig>>, limits: Limits) -> Served {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let now = witmed_node::unix_now();
    node::init_with(&dir, "General", vec![], now, None).unwrap();
    let node = Arc::new(Node::open(&dir, now).unwrap());
    let node_id = node.id().to_hex();
    let state = Arc::new(State::new(node, &Config::default()).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let router = witmed_api::router(state);
            transport::serve(router, listener, tls, limits, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
    });
    Served {
        _tmp: tmp,
        addr,
        node_id,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files in `dir`.
fn certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key, certified.cert.der().to_vec())
}

/// One HTTP/1.1 GET over TLS trusting only `trusted`; the whole response.
fn get_over_tls(addr: SocketAddr, trusted: &[u8], path: &str) -> std::io::Result<String> {
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
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut stream = rustls::Stream::new(&mut connection, &mut tcp);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        // The server closing without close_notify after a complete response is fine.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn plain_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    tcp.read_to_end(&mut response)?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// Reads until the server closes the connection; false if it is still open after `wait`.
fn closed_within(tcp: &mut TcpStream, wait: Duration) -> bool {
    tcp.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn the_api_is_served_over_tls_with_the_given_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate(tmp.path());
    let config = tls::server_config(&cert, &key).unwrap();
    let served = serve(Some(config), Limits::default());
    let response = get_over_tls(served.addr, &der, "/api/v1/health").unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(&served.node_id), "{response}");
}

#[test]
fn a_tls_port_answers_nothing_in_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(tmp.path());
    let served = serve(
        Some(tls::server_config(&cert, &key).unwrap()),
        Limits::default(),
    );
    let answer = plain_get(served.addr, "/api/v1/health").unwrap_or_default();
    assert!(!answer.contains("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains(&served.node_id), "{answer}");
}

#[test]
fn a_client_trusting_another_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(tmp.path());
    let other = tempfile::tempdir().unwrap();
    let (_, _, other_der) = certificate(other.path());
    let served = serve(
        Some(tls::server_config(&cert, &key).unwrap()),
        Limits::default(),
    );
    let result = get_over_tls(served.addr, &other_der, "/api/v1/health");
    assert!(result.is_err(), "{result:?}");
}

#[test]
fn unusable_certificate_files_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(tmp.path());
    let missing = tmp.path().join("missing.pem");
    let err = tls::server_config(&missing, &key).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert!(err.to_string().contains("missing.pem"), "{err}");

    // A key where the certificate should be, and the other way round.
    let err = tls::server_config(&key, &key).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    let err = tls::server_config(&cert, &cert).unwrap_err();
    assert!(matches!(err, TlsError::BadKey { .. }), "{err}");

    // A certificate with another certificate's key.
    let other = tempfile::tempdir().unwrap();
    let (_, other_key, _) = certificate(other.path());
    let err = tls::server_config(&cert, &other_key).unwrap_err();
    assert!(matches!(err, TlsError::Mismatch(_)), "{err}");

    let huge = tmp.path().join("huge.pem");
    std::fs::write(&huge, vec![b'A'; (tls::MAX_PEM_BYTES + 1) as usize]).unwrap();
    let err = tls::server_config(&huge, &key).unwrap_err();
    assert!(matches!(err, TlsError::TooLarge { .. }), "{err}");
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let limits = Limits {
        header_read: Duration::from_secs(1),
        ..Limits::default()
    };
    let served = serve(None, limits);
    let mut slow = TcpStream::connect(served.addr).unwrap();
    slow.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(15)),
        "the server kept a connection whose headers never ended"
    );
    // The server still answers others.
    let answer = plain_get(served.addr, "/api/v1/health").unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn connections_beyond_the_bound_wait_for_a_free_slot() {
    let limits = Limits {
        max_connections: 1,
        header_read: Duration::from_secs(60),
        ..Limits::default()
    };
    let served = serve(None, limits);
    // The one slot, held by a client that has not finished its headers.
    let mut holder = TcpStream::connect(served.addr).unwrap();
    holder
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let mut waiting = TcpStream::connect(served.addr).unwrap();
    waiting
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 64];
    let early = waiting.read(&mut buf);
    assert!(
        early.is_err(),
        "a second connection was served while the only slot was taken: {early:?}"
    );

    drop(holder);
    waiting
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut response = Vec::new();
    waiting.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[test]
fn a_body_trickled_too_slowly_gets_request_timeout() {
    let limits = Limits {
        respond: Duration::from_secs(1),
        ..Limits::default()
    };
    let served = serve(None, limits);
    let mut slow = TcpStream::connect(served.addr).unwrap();
    slow.write_all(
        b"POST /api/v1/patient/consents HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"signed\":",
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut response = vec![0u8; 4096];
    let n = slow.read(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response[..n]);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("request_timeout"), "{response}");
}

/// A client that asks and never reads its answers (pipelined requests for
/// the OpenAPI document, megabytes in all) fills the socket's buffers: its
/// connection is closed once a write has waited `write_stall`, so the one
/// connection slot comes free for the next client.
#[test]
fn a_client_that_stops_reading_is_cut_off_and_frees_its_slot() {
    let limits = Limits {
        max_connections: 1,
        write_stall: Duration::from_secs(1),
        ..Limits::default()
    };
    let served = serve(None, limits);
    let mut stalled = TcpStream::connect(served.addr).unwrap();
    let ask = b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let requests: Vec<u8> = ask.iter().copied().cycle().take(ask.len() * 2000).collect();
    stalled
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The server stops reading requests once its answers back up; what was
    // written is enough to fill the buffers either way.
    let _ = stalled.write_all(&requests);
    let next = plain_get(served.addr, "/api/v1/health").unwrap();
    assert!(next.starts_with("HTTP/1.1 200"), "{next}");
    // The stalled connection was closed, not merely paused.
    assert!(closed_within(&mut stalled, Duration::from_secs(20)));
}
