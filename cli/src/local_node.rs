//! The node of a data dir, as commands reach it: the running node through its HTTP API or its admin socket, or else its store opened directly.

use std::path::Path;

use witmed_crypto::PublicKey;
use witmed_node::node::{self, Node};
use witmed_node::{admin, unix_now};

use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::files::{read_text, MAX_KEY_FILE_BYTES};
use crate::node_http;

/// Opens the node's store (which fails while a node runs in `dir`).
pub fn open(dir: &Path) -> Result<Node> {
    Node::open(dir, unix_now()).map_err(|e| Failure::new(Code::NodeOpenFailed, e))
}

/// The node's `node.toml`, without opening the store (which a running node holds).
pub fn config(dir: &Path) -> Result<node::Config> {
    let path = node::DataDir(dir.to_path_buf()).config();
    let text = read_text(&path, MAX_KEY_FILE_BYTES)?;
    toml::from_str(&text).map_err(|e| {
        Failure::new(
            Code::BadConfig,
            format!("{}: {}", path.display(), e.message()),
        )
    })
}

/// The node's id from `node.toml`.
pub fn id(dir: &Path) -> Result<PublicKey> {
    Ok(config(dir)?.node_key)
}

/// Carries out `request` through the running node (its HTTP API when it
/// serves one on loopback, else its admin socket), or on the store directly
/// when no node runs in `dir`. A refusal becomes a Failure.
pub fn ask(dir: &Path, request: &admin::Request) -> Result<admin::Response> {
    NodeAt::new(dir).ask(request)
}

/// The node of a data dir: the running one, through its HTTP API or its
/// admin socket, or else its store, opened once for all requests of a command.
pub struct NodeAt<'a> {
    dir: &'a Path,
    opened: Option<Node>,
}

impl<'a> NodeAt<'a> {
    pub fn new(dir: &'a Path) -> NodeAt<'a> {
        NodeAt { dir, opened: None }
    }

    pub fn ask(&mut self, request: &admin::Request) -> Result<admin::Response> {
        let response = match &self.opened {
            Some(node) => admin::execute(node, request, unix_now()),
            None => match self.over_http(request)? {
                Some(response) => response,
                None => self.over_socket_or_store(request)?,
            },
        };
        match response {
            admin::Response::Error { code, message } => Err(refusal(code, message)),
            other => Ok(other),
        }
    }

    /// Through the HTTP API the running node advertises; None when there is
    /// none, it does not answer (a node that stopped uncleanly) or its rate
    /// limit is reached (the socket has its own).
    fn over_http(&self, request: &admin::Request) -> Result<Option<admin::Response>> {
        let Some(addr) = node_http::advertised(self.dir) else {
            return Ok(None);
        };
        match node_http::call(self.dir, addr, request)
            .map_err(|e| Failure::new(Code::HttpFailed, e))?
        {
            Ok(response) => Ok(Some(response)),
            Err(node_http::Unsent::Unreachable(why)) => {
                tracing::debug!("HTTP API not reachable ({why}); trying the admin socket");
                Ok(None)
            }
            Err(node_http::Unsent::RateLimited) => Ok(None),
        }
    }

    fn over_socket_or_store(&mut self, request: &admin::Request) -> Result<admin::Response> {
        Ok(
            match admin::call(self.dir, request)
                .map_err(|e| Failure::new(Code::AdminChannelFailed, e))?
            {
                Some(response) => response,
                None => {
                    let node = self.opened.insert(open(self.dir)?);
                    admin::execute(node, request, unix_now())
                }
            },
        )
    }
}

/// A refusal the node sent back, under the node's own code.
///
/// The code is leaked once per failed command (a short-lived process) to give
/// the `&'static str` a Failure carries; anything that is not a plain
/// snake_case code becomes `admin_error`.
fn refusal(code: String, message: String) -> Failure {
    let plain = code.len() <= 48 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if plain {
        Failure::from_layer(Box::leak(code.into_boxed_str()), message)
    } else {
        Failure::new(Code::AdminError, message)
    }
}

/// The node answered with something not asked for: a version mismatch.
pub fn unexpected(response: admin::Response) -> Failure {
    Failure::new(
        Code::AdminError,
        format!("the node answered {response:?}, not what was asked; use the same witmed version as the node"),
    )
}
