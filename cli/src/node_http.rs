//! The running node's HTTP API as the commands' channel: `node run --http` advertises its address in the data dir, and `witmed patient …` / `witmed consent …` send their admin requests there first.
//!
//! Only a node serving in clear on loopback is advertised: the command runs
//! on the node's machine, reads the staff token from the data dir it was
//! given, and needs no certificate. A node serving TLS (reachable from other
//! machines) is reached through its admin socket instead, which carries the
//! same requests to the same decision function (`witmed_node::admin::execute`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use witmed_node::admin;

/// How long a command waits to connect before it takes the admin socket instead.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest staff token file read (64 hex digits and a newline).
const MAX_TOKEN_BYTES: usize = 256;

/// Longest advertisement file read (an address and a newline).
const MAX_ADVERT_BYTES: usize = 128;

/// Where a running node names its HTTP API's address.
pub fn advert_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin").join("api.addr")
}

/// Names `addr` as this data dir's HTTP API, for commands run beside the node.
/// Only a loopback address is named (see the module docs).
pub fn advertise(data_dir: &Path, addr: SocketAddr) -> std::io::Result<()> {
    if !addr.ip().is_loopback() {
        return Ok(());
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = advert_path(data_dir);
    let partial = path.with_extension("addr.partial");
    // 0600 like every file of the data dir; written whole, then renamed.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?
        .write_all(format!("{addr}\n").as_bytes())?;
    std::fs::rename(&partial, &path)
}

/// Withdraws the advertisement when the node stops.
pub fn withdraw(data_dir: &Path) {
    let _ = std::fs::remove_file(advert_path(data_dir));
}

/// The advertised loopback address, if a node advertised one; anything else
/// in the file (edited, truncated, another machine's address) is ignored.
pub fn advertised(data_dir: &Path) -> Option<SocketAddr> {
    let path = advert_path(data_dir);
    if !path.exists() {
        return None;
    }
    let text = crate::files::read_text(&path, MAX_ADVERT_BYTES).ok()?;
    let addr: SocketAddr = text.trim().parse().ok()?;
    addr.ip().is_loopback().then_some(addr)
}

/// Why a request did not go over HTTP, so the caller can take the admin socket.
#[derive(Debug)]
pub enum Unsent {
    /// Nothing listens there (a node that stopped without withdrawing), or it did not answer in time.
    Unreachable(String),
    /// The API's rate limit for the staff token: the local socket has its own.
    RateLimited,
}

/// Sends one admin request to the node's HTTP API with the staff token of
/// `data_dir`. `Ok(Err(_))` when it could not be sent (see [`Unsent`]); an
/// error when it was sent and the answer is not an admin response.
pub fn call(
    data_dir: &Path,
    addr: SocketAddr,
    request: &admin::Request,
) -> Result<Result<admin::Response, Unsent>, String> {
    // Read, never created: a node that serves its API made it, so without
    // one the address is stale.
    let token_path = witmed_api::auth::staff_token_path(data_dir);
    if !token_path.exists() {
        return Ok(Err(Unsent::Unreachable(format!(
            "{} does not exist",
            token_path.display()
        ))));
    }
    let token = crate::files::read_text(&token_path, MAX_TOKEN_BYTES).map_err(|e| {
        format!(
            "{}; run the command as the user that runs the node",
            e.message
        )
    })?;
    let token = token.trim();
    let frame = admin::Frame {
        version: admin::ADMIN_VERSION,
        request: request.clone(),
    };
    let body = serde_json::to_vec(&frame).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(post(addr, token, body))
}

async fn post(
    addr: SocketAddr,
    token: &str,
    body: Vec<u8>,
) -> Result<Result<admin::Response, Unsent>, String> {
    let stream =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Ok(Err(Unsent::Unreachable(format!("{addr}: {e}")))),
            Err(_) => return Ok(Err(Unsent::Unreachable(format!("{addr}: no answer")))),
        };
    let exchange = exchange(stream, addr, token, body);
    match tokio::time::timeout(admin::CLIENT_TIMEOUT, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(format!(
            "the node's HTTP API at {addr} did not answer within {} s; \
             see `witmed node status` and the node's log",
            admin::CLIENT_TIMEOUT.as_secs()
        )),
    }
}

async fn exchange(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    token: &str,
    body: Vec<u8>,
) -> Result<Result<admin::Response, Unsent>, String> {
    let failed = |e: &dyn std::fmt::Display| format!("HTTP API at {addr}: {e}");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(&e))?;
    tokio::spawn(connection);
    let request = hyper::Request::post("/api/v1/staff/commands")
        .header(HOST, addr.to_string())
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| failed(&e))?;
    let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), admin::MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| failed(&e))?
        .to_bytes();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Ok(Err(Unsent::RateLimited));
    }
    serde_json::from_slice::<admin::Response>(&bytes)
        .map(Ok)
        .map_err(|_| {
            failed(&format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(400)])
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_loopback_address_in_a_whole_file_is_used() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("admin")).unwrap();
        assert_eq!(advertised(tmp.path()), None, "no file");
        let bound: SocketAddr = "127.0.0.1:4080".parse().unwrap();
        advertise(tmp.path(), bound).unwrap();
        assert_eq!(advertised(tmp.path()), Some(bound));
        let path = advert_path(tmp.path());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        for text in [
            "192.0.2.1:80\n",
            "[2001:db8::1]:80",
            "127.0.0.1",
            "garbage",
            "",
        ] {
            std::fs::write(&path, text).unwrap();
            assert_eq!(advertised(tmp.path()), None, "{text:?}");
        }
        std::fs::write(&path, "x".repeat(MAX_ADVERT_BYTES + 1)).unwrap();
        assert_eq!(advertised(tmp.path()), None, "an oversized file");
        // A node beyond loopback names nothing.
        withdraw(tmp.path());
        advertise(tmp.path(), "0.0.0.0:4443".parse().unwrap()).unwrap();
        assert!(!path.exists());
    }
}
