//! The local admin channel: consent changes, privacy caps and account reads reach a running node through a Unix socket in its data dir.
//!
//! A running node holds the RocksDB lock, so `consent submit`, `patient
//! lookup`, `patient enrol`, `patient reenrol`, `patient cap-submit` and
//! `patient account` cannot open the store
//! while `witmed node run` serves. `node run` therefore listens on
//! `DIR/admin/admin.sock`: the `admin` directory is 0700 and the socket 0600,
//! both owned by the node's user, and a connection from another user id is
//! refused (checked with the peer's credentials), so only the node's operator
//! can reach it. The commands use the socket when the node runs and open the
//! store directly when it does not; both paths run the same [`execute`].
//!
//! Protocol: one request per connection. Each message is a 4-byte big-endian
//! length and that many bytes of JSON ([`Frame`] then [`Response`]).
//! Requests over [`MAX_MESSAGE_BYTES`] are refused before they are read; at
//! most [`MAX_CONNECTIONS`] are served at once (more are closed at once); a
//! connection that does not send its request within [`REQUEST_TIMEOUT`] is
//! closed. Every request is checked by the same verification as a file
//! submitted offline (signatures, enrolled keys), so the channel grants no
//! more than the files themselves do.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use witmed_crypto::{Pseudonym, PublicKey};
use witmed_protocol::device_request as wire;

use crate::consent_ops::{self, Submitted};
use crate::node::Node;
use crate::store::cf;
use crate::unix_now;

/// Version of the channel's messages.
pub const ADMIN_VERSION: u32 = 1;
/// Largest request or response, in bytes (signed objects are at most 16 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest response a client reads (lists of devices and alerts are longer than a request).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 4;
/// Time a client has to send its whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client waits for the node's answer (a synced write or two).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// `DIR/admin/admin.sock`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin").join("admin.sock")
}

/// One request, with the channel version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frame {
    pub version: u32,
    pub request: Request,
}

/// What a command asks the node to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// A signed consent token or revocation, in text form.
    Submit { text: String },
    /// A patient's pseudonym from the source system's id.
    Lookup { source: String, source_id: String },
    /// Bind a patient key (hex) to a pseudonym (hex).
    Enrol { patient: String, key: String },
    /// A signed re-enrolment, in text form.
    Reenrol { text: String },
    /// A patient's signed privacy cap request, in text form.
    Cap { text: String },
    /// A patient's privacy account (pseudonym in hex), for staff.
    Account { patient: String },
    /// The consent tokens at this node, at most `limit` of them (and the counts of all).
    Consents { limit: u32 },
    /// Enrol a device key (hex) for a patient (pseudonym, hex).
    DeviceEnrol {
        device: String,
        patient: String,
        label: String,
    },
    /// Retire a device (key in hex).
    DeviceRetire { device: String },
    /// Every device.
    Devices,
    /// The newest NEWS2 alerts (only unacknowledged ones with `open_only`).
    Alerts { open_only: bool },
    /// A clinician acknowledges an alert.
    AlertAck { id: String, by: String },
    /// Score a patient's SpO2 on NEWS2 scale 2 (hypercapnic) or back on scale 1.
    Hypercapnic { patient: String, hypercapnic: bool },
}

/// The node's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    Token {
        id: String,
        patient: String,
    },
    Revocation {
        token_id: String,
        patient: String,
    },
    Pseudonym {
        pseudonym: String,
        node_id: String,
    },
    Enrolled {
        patient: String,
        key: String,
    },
    Reenrolled {
        patient: String,
        old_key: String,
        new_key: String,
        superseded: usize,
    },
    /// A cap request applied: the cap now in force (`None`: removed) and the total so far.
    CapSet {
        patient: String,
        epsilon: Option<f64>,
        total_epsilon: f64,
    },
    Account {
        patient: String,
        account: Box<crate::accounts::Account>,
    },
    Device {
        device: Box<wire::Device>,
    },
    Devices {
        devices: Vec<wire::Device>,
    },
    Alerts {
        alerts: Vec<wire::Alert>,
    },
    Alert {
        alert: Box<wire::Alert>,
    },
    Consents {
        counts: crate::consents::Counts,
        tokens: Vec<ConsentRow>,
    },
    HypercapnicSet {
        patient: String,
        hypercapnic: bool,
    },
    /// Refused: a stable code and a message that says what to do.
    Error {
        code: String,
        message: String,
    },
}

impl Response {
    fn error(code: &str, message: impl std::fmt::Display) -> Response {
        Response::Error {
            code: code.to_string(),
            message: message.to_string(),
        }
    }
}

/// Carries out one request on an open node. Total: every outcome is a [`Response`].
pub fn execute(node: &Node, request: &Request, now: i64) -> Response {
    let refused = |e: consent_ops::Error| Response::error(e.code(), e);
    match request {
        Request::Submit { text } => match consent_ops::submit(node, text, now) {
            Ok(Submitted::Token { id, patient }) => Response::Token {
                id,
                patient: patient.to_hex(),
            },
            Ok(Submitted::Revocation { token_id, patient }) => Response::Revocation {
                token_id,
                patient: patient.to_hex(),
            },
            Err(e) => refused(e),
        },
        Request::Lookup { source, source_id } => lookup(node, source, source_id),
        Request::Enrol { patient, key } => {
            let p: Pseudonym = match patient.parse() {
                Ok(p) => p,
                Err(e) => return Response::error("bad_pseudonym", e),
            };
            let public: PublicKey = match key.parse() {
                Ok(k) => k,
                Err(e) => return Response::error("bad_public_key", e),
            };
            match consent_ops::enrol(node, p, public, now) {
                Ok(()) => Response::Enrolled {
                    patient: p.to_hex(),
                    key: public.to_hex(),
                },
                Err(e) => refused(e),
            }
        }
        Request::Reenrol { text } => match consent_ops::reenrol(node, text, now) {
            Ok(r) => Response::Reenrolled {
                patient: r.patient.to_hex(),
                old_key: r.old_key.to_hex(),
                new_key: r.new_key.to_hex(),
                superseded: r.superseded,
            },
            Err(e) => refused(e),
        },
        Request::Cap { text } => match crate::accounts::set_cap(node, text, now) {
            Ok(set) => Response::CapSet {
                patient: set.patient.to_hex(),
                epsilon: set.epsilon,
                total_epsilon: set.total_epsilon,
            },
            Err(e) => Response::error(e.code(), e),
        },
        Request::Account { patient } => account(node, patient),
        Request::Consents { limit } => consents(node, *limit),
        r @ (Request::DeviceEnrol { .. }
        | Request::DeviceRetire { .. }
        | Request::Devices
        | Request::Alerts { .. }
        | Request::AlertAck { .. }
        | Request::Hypercapnic { .. }) => devices(node, r, now),
    }
}

/// The device and alert requests.
fn devices(node: &Node, request: &Request, now: i64) -> Response {
    let done = match request {
        Request::DeviceEnrol {
            device,
            patient,
            label,
        } => parse_device(device).and_then(|d| {
            let p = parse_patient(patient)?;
            Ok(Response::Device {
                device: Box::new(crate::devices::enrol(node, d, p, label, now)?),
            })
        }),
        Request::DeviceRetire { device } => parse_device(device).and_then(|d| {
            Ok(Response::Device {
                device: Box::new(crate::devices::retire(node, d, now)?),
            })
        }),
        Request::Devices => crate::devices::list(node)
            .map(|devices| Response::Devices { devices })
            .map_err(Response::from),
        Request::Alerts { open_only } => {
            let filter = crate::devices::AlertFilter {
                open_only: *open_only,
                patient: None,
            };
            crate::devices::alerts(node, filter)
                .map(|alerts| Response::Alerts { alerts })
                .map_err(Response::from)
        }
        Request::AlertAck { id, by } => crate::devices::acknowledge(node, id, by, now)
            .map(|alert| Response::Alert {
                alert: Box::new(alert),
            })
            .map_err(Response::from),
        Request::Hypercapnic {
            patient,
            hypercapnic,
        } => parse_patient(patient).and_then(|p| {
            crate::devices::set_hypercapnic(node, p, *hypercapnic, now)?;
            Ok(Response::HypercapnicSet {
                patient: p.to_hex(),
                hypercapnic: *hypercapnic,
            })
        }),
        _ => Err(Response::error("bad_request", "not a device request")),
    };
    done.unwrap_or_else(|refusal| refusal)
}

impl From<crate::devices::Error> for Response {
    fn from(e: crate::devices::Error) -> Self {
        Response::error(e.code(), e)
    }
}

fn parse_device(hex: &str) -> Result<PublicKey, Response> {
    hex.parse()
        .map_err(|e| Response::error("bad_public_key", e))
}

fn parse_patient(hex: &str) -> Result<Pseudonym, Response> {
    hex.parse().map_err(|e| Response::error("bad_pseudonym", e))
}

fn account(node: &Node, patient: &str) -> Response {
    let p: Pseudonym = match patient.parse() {
        Ok(p) => p,
        Err(e) => return Response::error("bad_pseudonym", e),
    };
    match crate::accounts::of(node, &p) {
        Ok(account) => Response::Account {
            patient: p.to_hex(),
            account: Box::new(account),
        },
        Err(e) => Response::error(e.code(), e),
    }
}

/// Most tokens one `Consents` answer lists: it must fit in [`MAX_RESPONSE_BYTES`].
pub const MAX_LISTED_CONSENTS: u32 = 2_000;

/// One consent token as `witmed consent list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRow {
    pub id: String,
    pub patient: String,
    pub purposes: Vec<String>,
    pub categories: std::collections::BTreeSet<witmed_protocol::vocab::Category>,
    pub modes: std::collections::BTreeSet<witmed_protocol::vocab::Mode>,
    pub not_before: i64,
    pub expires: i64,
    pub simulated: bool,
    pub revoked: bool,
}

fn consents(node: &Node, limit: u32) -> Response {
    let registry = node.consent_registry();
    let tokens = registry
        .tokens()
        .take(limit.min(MAX_LISTED_CONSENTS) as usize)
        .map(|v| {
            let t = v.token();
            ConsentRow {
                id: t.id.clone(),
                patient: t.patient.to_hex(),
                purposes: t.purposes.clone(),
                categories: t.categories.clone(),
                modes: t.modes.clone(),
                not_before: t.not_before,
                expires: t.expires,
                simulated: t.simulated,
                revoked: registry.is_revoked(&t.id),
            }
        })
        .collect();
    Response::Consents {
        counts: registry.counts(),
        tokens,
    }
}

/// Longest source system name or source id looked up.
const MAX_SOURCE_BYTES: usize = 256;

fn lookup(node: &Node, source: &str, source_id: &str) -> Response {
    if source.len() > MAX_SOURCE_BYTES || source_id.len() > MAX_SOURCE_BYTES {
        return Response::error(
            "bad_request",
            format!("source and source id must be at most {MAX_SOURCE_BYTES} bytes"),
        );
    }
    let p = node.pseudonyms().pseudonym(source, source_id);
    match node.store.contains(cf::PATIENTS, &p.0) {
        Ok(true) => Response::Pseudonym {
            pseudonym: p.to_hex(),
            node_id: node.id().to_hex(),
        },
        Ok(false) => Response::error(
            "unknown_patient",
            format!("no patient with {source} id {source_id:?} at this node"),
        ),
        Err(e) => Response::error("store_failed", e),
    }
}

// ---------------------------------------------------------------- server

/// Creates `DIR/admin` (0700) and binds the socket in it (0600).
///
/// Call only with the node open: the store's lock proves no other node
/// serves this data dir, so a socket left by a crashed node is removed.
pub fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let path = socket_path(data_dir);
    let dir = path.parent().unwrap_or(data_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // An existing directory keeps its mode: make sure it is private.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Removes the socket when the node stops.
pub fn unbind(data_dir: &Path) {
    let _ = std::fs::remove_file(socket_path(data_dir));
}

/// Serves the channel until the task is dropped.
pub async fn serve(node: Arc<Node>, listener: UnixListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let owner = own_uid(&node.dir.0);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("admin channel: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !same_user(&stream, owner) {
            tracing::warn!("admin channel: refused a connection from another user");
            continue;
        }
        // Local work first: when every slot is busy, a new connection is
        // closed at once instead of queueing.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("admin channel: {MAX_CONNECTIONS} connections busy, refused one");
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = serve_one(node, stream).await {
                tracing::warn!("admin channel: {e}");
            }
        });
    }
}

fn own_uid(data_dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(socket_path(data_dir))
        .ok()
        .map(|m| m.uid())
}

fn same_user(stream: &UnixStream, owner: Option<u32>) -> bool {
    match (stream.peer_cred(), owner) {
        (Ok(cred), Some(uid)) => cred.uid() == uid,
        _ => false,
    }
}

async fn serve_one(node: Arc<Node>, mut stream: UnixStream) -> std::io::Result<()> {
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, read_frame(&mut stream)).await {
        Err(_) => Response::error(
            "timeout",
            format!("no whole request within {REQUEST_TIMEOUT:?}"),
        ),
        Ok(Err(refusal)) => refusal,
        Ok(Ok(frame)) => {
            let request = frame.request;
            // Consent operations sync the store: off the async workers.
            tokio::task::spawn_blocking(move || execute(&node, &request, unix_now()))
                .await
                .unwrap_or_else(|_| {
                    Response::error("internal", "the request failed; see the node's log")
                })
        }
    };
    let bytes = encode(&response);
    stream.write_all(&bytes).await?;
    stream.shutdown().await
}

async fn read_frame(stream: &mut UnixStream) -> Result<Frame, Response> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| Response::error("bad_request", format!("no length prefix: {e}")))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(Response::error(
            "too_large",
            format!("request of {len} bytes is over the limit of {MAX_MESSAGE_BYTES}"),
        ));
    }
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| Response::error("bad_request", format!("truncated request: {e}")))?;
    decode_frame(&body)
}

/// Decodes a request body; refuses other versions and anything malformed.
pub fn decode_frame(body: &[u8]) -> Result<Frame, Response> {
    let frame: Frame = serde_json::from_slice(body)
        .map_err(|e| Response::error("bad_request", format!("malformed request: {e}")))?;
    if frame.version != ADMIN_VERSION {
        return Err(Response::error(
            "unsupported_version",
            format!(
                "admin channel version {} is not {ADMIN_VERSION}; use the witmed binary that runs the node",
                frame.version
            ),
        ));
    }
    Ok(frame)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain types cannot fail; an empty body would be
    // refused by the reader rather than trusted.
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

// ---------------------------------------------------------------- client

/// Errors talking to a running node.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the running node's admin channel {path}: {source}; check that you run as the node's user")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the running node's admin channel answered something unreadable: {0}; use the same witmed version as the node")]
    Malformed(String),
}

/// Sends `request` to the node running in `data_dir`. `Ok(None)` if no node
/// runs there (no socket, or one left by a node that stopped).
pub fn call(data_dir: &Path, request: &Request) -> Result<Option<Response>, ClientError> {
    use std::os::unix::net::UnixStream;
    let path = socket_path(data_dir);
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(io(e)),
    };
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    let frame = Frame {
        version: ADMIN_VERSION,
        request: request.clone(),
    };
    stream.write_all(&encode(&frame)).map_err(io)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).map_err(io)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_RESPONSE_BYTES {
        return Err(ClientError::Malformed(format!("a response of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).map_err(io)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| ClientError::Malformed(e.to_string()))
}
