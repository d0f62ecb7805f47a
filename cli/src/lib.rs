//! The `witmed` command line: argument parsing and dispatch to one small function per command.
//!
//! Every command prints a readable result on stdout, or with `--json` one
//! JSON object; errors go to stderr as one line that says what was wrong and
//! what to do, prefixed with a stable code (`error[code]: ...`), and the
//! process exits non-zero.

/// `println!` for command output: goes through [`stdout::line`], so a closed pipe never panics.
macro_rules! outln {
    () => {
        $crate::stdout::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::stdout::line(format_args!($($arg)*))
    };
}

/// `print!` for command output, through [`stdout::text`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::text(format_args!($($arg)*))
    };
}

mod commands;
mod consortium;
pub mod files;
mod labels;
pub mod network;
mod output;
pub mod stdout;
mod study;

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
    /// Researchers make and publish study keys for encrypted-mode queries.
    #[command(subcommand)]
    Study(StudyCommand),
    /// The consortium directory of member hospitals, signed by the consortium authority.
    #[command(subcommand)]
    Consortium(ConsortiumCommand),
    /// Read the node's audit log.
    Audit(AuditArgs),
}

#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The node's own directory (keys, config, store); or set WITMED_NODE_DIR.
    /// Not WITMED_DATA_DIR, which names the shared data sets.
    #[arg(long, env = "WITMED_NODE_DIR")]
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
        /// FHIR files (.json bundles or resources, .ndjson) or folders of them.
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
    /// Print the import summary as one JSON object (every skipped value listed).
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
    /// Also write the public key (hex, one line) to this new file, to hand to
    /// hospital staff or an authority: never hand over the key file itself.
    #[arg(long)]
    pub public_out: Option<PathBuf>,
    /// Print the role, public key and paths as one JSON object.
    #[arg(long)]
    pub json: bool,
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
        /// The patient's id in the source system (PhysioNet RecordID, FHIR Patient id).
        #[arg(long)]
        source_id: String,
        /// Print the pseudonym and node id as one JSON object.
        #[arg(long)]
        json: bool,
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
        /// The patient's public key file (from `keygen --public-out`).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Replace a real patient's enrolled key (lost key): needs the hospital admin key or the old patient key.
    Reenrol(ReenrolArgs),
}

#[derive(Debug, Args)]
pub struct ReenrolArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The patient's pseudonym.
    #[arg(long)]
    pub patient: String,
    /// The patient's new public key (hex), or their new key file with --key-file.
    #[arg(long, conflicts_with = "key_file")]
    pub key: Option<String>,
    /// The patient's new public key file (from `keygen --public-out`).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// The hospital admin key file (the key that signs the node policy) that approves the change.
    #[arg(
        long,
        conflicts_with = "old_patient_key",
        required_unless_present = "old_patient_key"
    )]
    pub admin_key: Option<PathBuf>,
    /// Or the patient's old key file, when the patient still has it.
    #[arg(long)]
    pub old_patient_key: Option<PathBuf>,
    /// Why the key changes, recorded in the audit log.
    #[arg(long, default_value = "key lost")]
    pub reason: String,
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
        /// Signed token or revocation files (from `consent grant` / `consent revoke`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print what was stored and refused as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Node: list consent tokens.
    List {
        #[command(flatten)]
        dir: DataDirArg,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
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
    /// Where to write the signed token (a new file), for the node's `consent submit`.
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
    /// Where to write the signed revocation (a new file); it counts once submitted.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Authority: issue a researcher credential.
    Issue(IssueArgs),
    /// Check a credential's signature and validity.
    Verify {
        /// The credential file to check.
        #[arg(long)]
        credential: PathBuf,
        /// The issuer's public key (hex) you trust.
        #[arg(long)]
        issuer: String,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The authority's key file (its secret key: this runs at the authority).
    #[arg(long)]
    pub authority_key: PathBuf,
    /// The researcher's public key (hex), as they sent it to you ...
    #[arg(
        long,
        visible_alias = "researcher-public-key",
        conflicts_with = "researcher_key"
    )]
    pub researcher: Option<String>,
    /// ... or their public key file (from `keygen --public-out`).
    #[arg(long)]
    pub researcher_key: Option<PathBuf>,
    /// Your stable identifier for this researcher (e.g. an ORCID or a staff
    /// id): give the same one in every credential you issue them, whatever
    /// their key, because each node's privacy budget follows it.
    #[arg(long)]
    pub researcher_id: String,
    /// The researcher's name as nodes show it.
    #[arg(long)]
    pub name: String,
    /// The researcher's institution.
    #[arg(long)]
    pub institution: String,
    /// The approved project the credential is for.
    #[arg(long)]
    pub project: String,
    /// Approved DUO purposes, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub purposes: Vec<String>,
    /// The research is commercial (DUO NCU refuses it).
    #[arg(long)]
    pub commercial: bool,
    /// The research is not for profit (DUO NPU requires it).
    #[arg(long)]
    pub not_for_profit: bool,
    /// Valid for this many days from now.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Where to write the signed credential (a new file), for the researcher.
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
        /// Where to write the signed policy (a new file), for `policy install`.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify and install a signed policy (serial must increase).
    Install {
        #[command(flatten)]
        dir: DataDirArg,
        /// The signed policy (from `policy sign`).
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Ask one node's store directly (the node must not be running).
    Local(LocalQueryArgs),
    /// Ask every hospital in the consortium directory over libp2p and combine the answers.
    Run(RunQueryArgs),
}

#[derive(Debug, Subcommand)]
pub enum StudyCommand {
    /// Make a study key pair: the decryption key stays in DIR, the public key is published.
    Keygen {
        /// Directory for client.key (mode 0600), public.key and study.toml.
        #[arg(long)]
        out: PathBuf,
        /// Print the study id, parameters and directory as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Send the study's public key, signed by the researcher, to every member to cache.
    Publish(PublishStudyArgs),
}

/// Who a researcher is and which federation they talk to.
#[derive(Debug, Args)]
pub struct ResearcherArgs {
    /// The signed consortium directory.
    #[arg(long)]
    pub directory: PathBuf,
    /// Pin the consortium authority's public key (hex); the directory must be signed by it.
    #[arg(long)]
    pub authority: Option<String>,
    /// The researcher's key file.
    #[arg(long)]
    pub key: PathBuf,
    /// The researcher's credential file.
    #[arg(long)]
    pub credential: PathBuf,
}

#[derive(Debug, Args)]
pub struct PublishStudyArgs {
    /// The study directory made by `study keygen`.
    #[arg(long)]
    pub study: PathBuf,
    #[command(flatten)]
    pub researcher: ResearcherArgs,
    /// Give up on hospitals that have not answered by then.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Print each member's status as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunQueryArgs {
    #[command(flatten)]
    pub researcher: ResearcherArgs,
    /// The query, in TOML.
    #[arg(long)]
    pub query: PathBuf,
    /// Encrypted mode: the study directory whose client key decrypts the total.
    #[arg(long)]
    pub study: Option<PathBuf>,
    /// Give up on hospitals that have not answered by then (e.g. 10s, 1500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Parses `10s`, `1500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use ms, s or m")),
    };
    Ok(std::time::Duration::from_secs_f64(seconds))
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
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConsortiumCommand {
    /// Start an empty (unsigned) directory in TOML.
    Create {
        /// The consortium's name; every later directory keeps it.
        #[arg(long)]
        name: String,
        /// Where to write the directory TOML (a new file).
        #[arg(long)]
        out: PathBuf,
    },
    /// Add a member hospital from its node's data dir.
    Add {
        /// The unsigned directory TOML to add the member to.
        #[arg(long)]
        directory: PathBuf,
        #[command(flatten)]
        dir: DataDirArg,
        /// Address researchers dial, e.g. /ip4/10.0.0.5/tcp/4001 (repeatable).
        #[arg(long = "address", required = true)]
        addresses: Vec<String>,
    },
    /// Sign the directory with the consortium authority's key.
    Sign {
        /// The consortium authority's key file.
        #[arg(long)]
        authority_key: PathBuf,
        /// The unsigned directory TOML.
        #[arg(long)]
        directory: PathBuf,
        /// Where to write the signed directory, for every node and researcher.
        #[arg(long)]
        out: PathBuf,
    },
    /// Show a directory (signed or unsigned).
    Show {
        /// The directory file, signed or unsigned.
        #[arg(long)]
        directory: PathBuf,
        /// Pin the authority key a signed directory must carry.
        #[arg(long)]
        authority: Option<String>,
        /// Print the directory (and its signer) as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Install a signed directory at a node (newer serial only).
    Install {
        #[command(flatten)]
        dir: DataDirArg,
        /// The consortium authority's key (hex); pinned at the first install.
        #[arg(long)]
        authority: Option<String>,
        /// The signed directory (from `consortium sign`).
        file: PathBuf,
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
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Only entries whose kind starts with this (e.g. `consent.`).
    #[arg(long)]
    pub kind: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Operators read a running node's log; one-shot commands stay quiet.
    let running = matches!(cli.command, Command::Node(NodeCommand::Run(_)));
    init_tracing(if running { "info" } else { "warn" });
    exit_code(commands::run(cli.command))
}

/// Runs one parsed command (for the lab binary, which adds its own to these).
pub fn run(command: Command) -> Result<(), Failure> {
    commands::run(command)
}

/// Ends a command: flushes its output and turns its result into the exit
/// code, printing a failure as `error[code]: message` on stderr.
pub fn exit_code(result: Result<(), Failure>) -> ExitCode {
    let output_ok = stdout::finish();
    match result {
        Ok(()) if output_ok => ExitCode::SUCCESS,
        Ok(()) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error[{}]: {}", e.code, e.message);
            ExitCode::from(e.exit)
        }
    }
}

/// Log lines go to stderr at `default` level unless WITMED_LOG says otherwise.
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WITMED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
