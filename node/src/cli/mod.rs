//! The `witmed` command line: argument parsing and dispatch to one small function per command.
//!
//! Every command prints a readable result on stdout, or with `--json` one
//! JSON object; errors go to stderr as one line that says what was wrong and
//! what to do, prefixed with a stable code (`error[code]: ...`), and the
//! process exits non-zero.

mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// witmed: share what patient data says, not the data.
#[derive(Debug, Parser)]
#[command(name = "witmed", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, inspect and run a hospital node.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Import a hospital's existing data into the node's encrypted store.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Make a key pair for a patient, researcher, hospital admin or authority.
    Keygen(KeygenArgs),
    /// Hospital staff: bind a patient's public key to their record.
    #[command(subcommand)]
    Patient(PatientCommand),
    /// Patients grant and revoke consent; nodes accept and list it.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// Authorities issue researcher credentials; anyone can verify them.
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// Hospital admins sign and install the node policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Researchers ask queries.
    #[command(subcommand)]
    Query(QueryCommand),
    /// Read the node's audit log.
    Audit(AuditArgs),
    /// Measure import and query speed against their raw limits.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The node's data directory.
    #[arg(long, env = "WITMED_DATA_DIR")]
    pub data_dir: PathBuf,
}

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
    },
    /// What the store holds.
    Status {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// PhysioNet 2012 challenge set (a directory of RecordID.txt files).
    Physionet {
        #[command(flatten)]
        dir: DataDirArg,
        /// The set directory, e.g. ../shared/data/physionet2012/set-a
        set_dir: PathBuf,
        /// Outcomes file, e.g. Outcomes-a.txt
        #[arg(long)]
        outcomes: Option<PathBuf>,
        #[command(flatten)]
        import: ImportArgs,
    },
    /// FHIR R4 bundles, resources or NDJSON (files or directories).
    Fhir {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        import: ImportArgs,
    },
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Files per durable batch.
    #[arg(long, default_value_t = 64)]
    pub batch_files: usize,
    /// Append a line per durable batch to this file.
    #[arg(long)]
    pub ack_log: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// patient, researcher, hospital or authority
    #[arg(long)]
    pub role: String,
    /// Where to write the key (created 0600; never overwritten).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum PatientCommand {
    /// Show a patient's pseudonym at this node, from the source system's id.
    Lookup {
        #[command(flatten)]
        dir: DataDirArg,
        /// physionet2012 or fhir
        #[arg(long)]
        source: String,
        #[arg(long)]
        source_id: String,
    },
    /// Bind a patient's public key to their pseudonym.
    Enrol {
        #[command(flatten)]
        dir: DataDirArg,
        /// The patient's pseudonym (see `patient lookup`).
        #[arg(long)]
        patient: String,
        /// The patient's public key (hex), or a key file with --key-file.
        #[arg(long, conflicts_with = "key_file")]
        key: Option<String>,
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Patient: sign a consent token.
    Grant(GrantArgs),
    /// Patient: sign a revocation of a token.
    Revoke(RevokeArgs),
    /// Node: verify and store signed tokens or revocations.
    Submit {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Node: list consent tokens.
    List {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
    /// DEMONSTRATION ONLY: enrol generated keys and sign tokens for a share of patients.
    Simulate {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, default_value_t = 0.8)]
        rate: f64,
        /// DUO purposes, comma separated.
        #[arg(long, default_value = "HMB", value_delimiter = ',')]
        purposes: Vec<String>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    /// The patient's key file.
    #[arg(long)]
    pub key: PathBuf,
    /// The hospital node's id (its public key, from `witmed node status`).
    #[arg(long)]
    pub node: String,
    /// The patient's pseudonym at that node.
    #[arg(long)]
    pub patient: String,
    /// DUO codes, comma separated: GRU, HMB, DS-<disease>, and modifiers NCU, NPU, IRB.
    #[arg(long, value_delimiter = ',', required = true)]
    pub purposes: Vec<String>,
    /// Data categories, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "demographics,vital-signs,labs,conditions,encounters"
    )]
    pub categories: Vec<String>,
    /// Privacy modes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "dp,encrypted")]
    pub modes: Vec<String>,
    /// Valid for this many days from now.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The patient's key file.
    #[arg(long)]
    pub key: PathBuf,
    /// The signed token file to revoke.
    #[arg(long)]
    pub token: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Authority: issue a researcher credential.
    Issue(IssueArgs),
    /// Check a credential's signature and validity.
    Verify {
        #[arg(long)]
        credential: PathBuf,
        /// The issuer's public key (hex) you trust.
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The authority's key file.
    #[arg(long)]
    pub authority_key: PathBuf,
    /// The researcher's public key (hex) ...
    #[arg(long, conflicts_with = "researcher_key")]
    pub researcher: Option<String>,
    /// ... or their key file.
    #[arg(long)]
    pub researcher_key: Option<PathBuf>,
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub institution: String,
    #[arg(long)]
    pub project: String,
    /// Approved DUO purposes, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub purposes: Vec<String>,
    #[arg(long)]
    pub commercial: bool,
    #[arg(long)]
    pub not_for_profit: bool,
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show the installed policy (as TOML, ready to edit and sign).
    Show {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Sign a policy TOML file with the hospital admin key.
    Sign {
        /// The hospital admin key file.
        #[arg(long)]
        key: PathBuf,
        /// Policy in TOML.
        #[arg(long)]
        policy: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify and install a signed policy (serial must increase).
    Install {
        #[command(flatten)]
        dir: DataDirArg,
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Ask one node's store directly (the node must not be running).
    Local(LocalQueryArgs),
}

#[derive(Debug, Args)]
pub struct LocalQueryArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The researcher's key file.
    #[arg(long)]
    pub key: PathBuf,
    /// The researcher's credential file.
    #[arg(long)]
    pub credential: PathBuf,
    /// The query, in TOML.
    #[arg(long)]
    pub query: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Only entries whose kind starts with this (e.g. `consent.`).
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Import throughput beside raw RocksDB batch writes of the same bytes.
    Import {
        /// PhysioNet set dir (default: synthetic cohort).
        #[arg(long)]
        set_dir: Option<PathBuf>,
        /// Synthetic patients when no set dir is given.
        #[arg(long, default_value_t = 2000)]
        patients: usize,
    },
    /// Local query latency over a synthetic cohort beside a plain loop.
    Query {
        #[arg(long, default_value_t = 100_000)]
        patients: usize,
        #[arg(long, default_value_t = 200)]
        repetitions: usize,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error[{}]: {}", e.code, e.message);
            ExitCode::from(e.exit)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WITMED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A command's failure: a stable code, a message for a person, an exit status.
#[derive(Debug)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
    pub exit: u8,
}

impl Failure {
    /// A failure with exit status 1.
    pub fn new(code: &'static str, message: impl std::fmt::Display) -> Failure {
        Failure {
            code,
            message: message.to_string(),
            exit: 1,
        }
    }
}
