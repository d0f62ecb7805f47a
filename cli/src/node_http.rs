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
    let path = advert_path(data_dir);
    let partial = path.with_extension("addr.partial");
    std::fs::write(&partial, format!("{addr}\n"))?;
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
    let token = witmed_api::auth::staff_token(data_dir).map_err(|e| {
        format!(
            "{}: {e}; run the command as the user that runs the node",
            witmed_api::auth::staff_token_path(data_dir).display()
        )
    })?;
    let frame = admin::Frame {
        version: admin::ADMIN_VERSION,
        request: request.clone(),
    };
    let body = serde_json::to_vec(&frame).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(post(addr, &token, body))
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
