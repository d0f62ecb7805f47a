//! `witmed node`: create a node (`init`), run it as a libp2p peer (`run`), and show what its store holds (`status`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use libp2p::Multiaddr;
use serde::Serialize;
use witmed_net::server;
use witmed_node::consents::Counts;
use witmed_node::node::{Config, Node};
use witmed_node::store::{self, cf};
use witmed_node::{consent_ops, unix_now};

use crate::args::{parse_duration, DataDirArg};
use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::{keys, local_node, runtime};

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Create a node's keys, config, default policy and store.
    Init {
        #[command(flatten)]
        dir: DataDirArg,
        /// The hospital's name as researchers will see it.
        #[arg(long)]
        name: String,
        /// Public key (hex) of a credential issuer to trust; repeatable.
        #[arg(long = "trust-issuer")]
        trust_issuers: Vec<String>,
        /// DEMONSTRATION NODES ONLY: sign the policy with allow_demonstration_data = true,
        /// so `consent simulate` may run and its simulated consent counts.
        #[arg(long)]
        allow_demonstration_data: bool,
        /// Write the hospital admin key (which signs policies) to this new file
        /// instead of DIR/hospital.key: keep it off the node, e.g. on removable
        /// media. The node never needs it to open or run.
        #[arg(long)]
        hospital_key_out: Option<PathBuf>,
    },
    /// Run the node as a libp2p peer until Ctrl-C or SIGTERM.
    Run(RunArgs),
    /// What the store holds.
    Status {
        #[command(flatten)]
        dir: DataDirArg,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// `witmed node run`: where to listen and how much to take on at once.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Address to listen on (repeatable).
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/4001")]
    pub listen: Vec<String>,
    /// Queries computed at once; more are refused as busy.
    #[arg(long, default_value_t = 4)]
    pub max_in_flight: usize,
    /// Established connections per peer.
    #[arg(long, default_value_t = 2)]
    pub max_connections_per_peer: u32,
    /// As an encrypted-mode aggregator, wait this long for the other members' shares
    /// (keep it below the researchers' `query run --timeout`, 10s by default).
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub aggregate_timeout: std::time::Duration,
    /// Also serve the HTTP API for staff and patients on this address
    /// (`--http` alone: 127.0.0.1:4080). An address beyond loopback needs
    /// --tls-cert and --tls-key.
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:4080")]
    pub http: Option<String>,
    /// PEM certificate chain (server certificate first) to serve the HTTP API over TLS.
    #[arg(long, requires_all = ["http", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires_all = ["http", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    /// HTTP requests per minute from one address (a ward's device gateway sends for every bed).
    #[arg(long, default_value_t = witmed_api::Config::default().per_address_per_minute)]
    pub http_per_address_per_minute: u32,
    /// HTTP requests per minute signed by one key (a patient, a device) or with the staff token.
    #[arg(long, default_value_t = witmed_api::Config::default().per_key_per_minute)]
    pub http_per_key_per_minute: u32,
    /// NEWS2 from device readings: a fresh set is the newest reading of each
    /// of the seven parameters within this many seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u32).range(60..=86_400))]
    pub news2_window_seconds: u32,
    /// Store (and stream) a NEWS2 alert when a patient's band rises to this
    /// one or above: low, low-medium, medium or high.
    #[arg(long, default_value = "low-medium", value_parser = parse_band)]
    pub alert_band: witmed_protocol::device_request::Band,
}

fn parse_band(text: &str) -> std::result::Result<witmed_protocol::device_request::Band, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("{text:?} is not a NEWS2 band; use low, low-medium, medium or high"))
}

/// Runs one `node` subcommand.
pub fn run(command: NodeCommand) -> Result<()> {
    match command {
        NodeCommand::Init {
            dir,
            name,
            trust_issuers,
            allow_demonstration_data,
            hospital_key_out,
        } => init(
            &dir.data_dir,
            &name,
            &trust_issuers,
            allow_demonstration_data,
            hospital_key_out.as_deref(),
        ),
        NodeCommand::Run(args) => serve(&args, None),
        NodeCommand::Status { dir, json } => {
            let node = local_node::open(&dir.data_dir)?;
            let status = Status::of(&node).map_err(|e| Failure::new(Code::StoreFailed, e))?;
            print_status(&status, json);
            Ok(())
        }
    }
}

/// `node init`.
fn init(
    dir: &Path,
    name: &str,
    trust_issuers: &[String],
    allow_demonstration_data: bool,
    hospital_key_out: Option<&Path>,
) -> Result<()> {
    let issuers = trust_issuers
        .iter()
        .map(|h| keys::parse_public(h))
        .collect::<Result<Vec<_>>>()?;
    let config = witmed_node::node::init_with(dir, name, issuers, unix_now(), hospital_key_out)
        .map_err(|e| Failure::new(Code::InitFailed, e))?;
    if allow_demonstration_data {
        let node = local_node::open(dir)?;
        consent_ops::allow_demonstration_data(&node, unix_now())
            .map_err(|e| Failure::new(Code::InitFailed, e))?;
        outln!("DEMONSTRATION NODE: its policy allows simulated consent");
    }
    print_created(dir, &config, hospital_key_out);
    Ok(())
}

/// `witmed node run`. `sign_response` is for witmed-lab's fault injection
/// only (see `witmed_net::server::Config::sign_response`); the `witmed`
/// binary always passes None.
pub fn serve(args: &RunArgs, sign_response: Option<server::SignResponse>) -> Result<()> {
    let dir = args.dir.data_dir.as_path();
    let listen = args
        .listen
        .iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .map_err(|e| Failure::new(Code::BadAddress, format!("{a}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let http = args
        .http
        .as_deref()
        .map(|text| http_listener(text, args.tls_cert.as_deref(), args.tls_key.as_deref()))
        .transpose()?;
    let node = Arc::new(local_node::open(dir)?);
    // Build the index before accepting queries, so the first one is not slow.
    node.index()
        .map_err(|e| Failure::new(Code::StoreFailed, e))?;
    let config = server::Config {
        listen,
        max_in_flight: args.max_in_flight.max(1),
        max_connections_per_peer: args.max_connections_per_peer.max(1),
        sign_response,
        directory: crate::consortium::installed_at(dir)?,
        aggregate_timeout: args.aggregate_timeout,
        ..server::Config::default()
    };
    if !witmed_node::encrypted::noise_enabled() {
        tracing::warn!("INSECURE TEST SETTING: encrypted-mode shares carry no noise");
        eprintln!(
            "WARNING: {}=1: encrypted-mode shares carry NO noise (test builds only)",
            witmed_node::encrypted::NOISE_OFF_ENV
        );
    }
    let name = node.config.name.clone();
    outln!(
        "node {name} ({}) running; stop with Ctrl-C or SIGTERM",
        node.id()
    );
    let served = runtime::start()?.block_on(async {
        // Consent changes reach the running node through its admin socket.
        match witmed_node::admin::bind(dir) {
            Ok(listener) => drop(tokio::spawn(witmed_node::admin::serve(node.clone(), listener))),
            Err(e) => tracing::warn!(
                "admin channel {} not available ({e}): consent commands cannot reach this node while it runs",
                witmed_node::admin::socket_path(dir).display()
            ),
        }
        if let Some(http) = http {
            let config = witmed_api::Config {
                per_address_per_minute: args.http_per_address_per_minute.max(1),
                per_key_per_minute: args.http_per_key_per_minute.max(1),
                devices: witmed_node::ingest::Settings {
                    window_seconds: args.news2_window_seconds,
                    alert_band: args.alert_band,
                },
            };
            start_http(node.clone(), http, &config).await?;
        }
        server::run(node, config, shutdown_signal())
            .await
            .map_err(|e| Failure::new(Code::NetworkFailed, e))
    });
    witmed_node::admin::unbind(dir);
    crate::node_http::withdraw(dir);
    served?;
    outln!("node {name} stopped");
    Ok(())
}

/// Where and how the HTTP API is served.
struct HttpListener {
    addr: std::net::SocketAddr,
    tls: Option<Arc<witmed_api::tls::ServerConfig>>,
}

/// The HTTP API's address and TLS: beyond loopback only with a certificate,
/// since patients' requests and the staff token must not cross a network in clear.
fn http_listener(
    text: &str,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Result<HttpListener> {
    let addr: std::net::SocketAddr = text.parse().map_err(|e| {
        Failure::new(
            Code::BadAddress,
            format!("--http {text}: {e}; give an address and port such as 127.0.0.1:4080"),
        )
    })?;
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(
            witmed_api::tls::server_config(cert, key)
                .map_err(|e| Failure::new(Code::TlsConfig, e))?,
        ),
        _ => None,
    };
    if tls.is_none() && !addr.ip().is_loopback() {
        return Err(Failure::new(
            Code::HttpNotLocal,
            format!(
                "--http {addr} is reachable from other machines; give --tls-cert and --tls-key \
                 to serve it over TLS, or serve it on 127.0.0.1"
            ),
        ));
    }
    Ok(HttpListener { addr, tls })
}

/// Starts the HTTP API beside the libp2p side; it stops with the node.
async fn start_http(
    node: Arc<Node>,
    http: HttpListener,
    config: &witmed_api::Config,
) -> Result<()> {
    let HttpListener { addr, tls } = http;
    let state = witmed_api::State::new(node, config)
        .map_err(|e| Failure::new(Code::HttpFailed, format!("staff token: {e}")))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::new(Code::HttpFailed, format!("--http {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::new(Code::HttpFailed, e))?;
    if tls.is_none() {
        // So `witmed patient …` and `witmed consent …` run beside this node use the API.
        let dir = &state.node.dir.0;
        if let Err(e) = crate::node_http::advertise(dir, bound) {
            tracing::warn!(
                "{} not written ({e}): commands will use the admin socket",
                crate::node_http::advert_path(dir).display()
            );
        }
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    outln!(
        "http api on {scheme}://{bound}/api/v1 (staff token in {})",
        witmed_api::auth::staff_token_path(&state.node.dir.0).display()
    );
    let state = Arc::new(state);
    tokio::spawn(async move {
        let served = match tls {
            Some(tls) => witmed_api::serve_tls(state, listener, tls, shutdown_signal()).await,
            None => witmed_api::serve(state, listener, shutdown_signal()).await,
        };
        if let Err(e) = served {
            tracing::error!("HTTP API stopped: {e}");
        }
    });
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// What `node status` reports.
#[derive(Debug, Serialize)]
pub struct Status {
    pub name: String,
    pub node_id: String,
    pub hospital_key: String,
    pub policy_serial: u64,
    pub patients: u64,
    pub observations: u64,
    pub conditions: u64,
    pub consent: Counts,
    pub audit_entries: u64,
}

impl Status {
    /// Counts what `node` holds.
    pub fn of(node: &Node) -> std::result::Result<Status, store::Error> {
        Ok(Status {
            name: node.config.name.clone(),
            node_id: node.id().to_hex(),
            hospital_key: node.config.hospital_key.to_hex(),
            policy_serial: node.policy().serial,
            patients: node.store.count(cf::PATIENTS)?,
            observations: node.store.count(cf::OBSERVATIONS)?,
            conditions: node.store.count(cf::CONDITIONS)?,
            consent: node.consent_registry().counts(),
            audit_entries: node.store.count(cf::AUDIT)?,
        })
    }
}

fn print_created(dir: &Path, config: &Config, hospital_key_out: Option<&Path>) {
    outln!("node {:?} created in {}", config.name, dir.display());
    outln!("node id:      {}", config.node_key);
    match hospital_key_out {
        Some(path) => outln!(
            "hospital key: {} (in {}; the node never needs it to run)",
            config.hospital_key,
            path.display()
        ),
        None => outln!(
            "hospital key: {} (in {}/hospital.key; move it offline)",
            config.hospital_key,
            dir.display()
        ),
    }
    outln!(
        "next: witmed import physionet --data-dir {} SET_DIR",
        dir.display()
    );
}

fn print_status(s: &Status, json: bool) {
    if json {
        return crate::stdout::json(s);
    }
    outln!("node {} ({})", s.name, s.node_id);
    outln!("policy serial {}", s.policy_serial);
    outln!("patients:      {}", s.patients);
    outln!("observations:  {}", s.observations);
    outln!("conditions:    {}", s.conditions);
    outln!(
        "consent:       {} enrolled, {} tokens ({} simulated), {} revoked",
        s.consent.enrolled,
        s.consent.tokens,
        s.consent.simulated_tokens,
        s.consent.revoked
    );
    outln!("audit entries: {}", s.audit_entries);
}
