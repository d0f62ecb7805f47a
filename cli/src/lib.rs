//! The `witmed` command line: the top-level parser, and dispatch to one module per command group.
//!
//! Every command prints a readable result on stdout, or with `--json` one
//! JSON object; errors go to stderr as one line that says what was wrong and
//! what to do, prefixed with a stable code (`error[code]: ...`, see
//! [`code::Code`]), and the process exits non-zero.
//!
//! Each command group (`node`, `import`, `keygen`, `patient`, `consent`,
//! `credential`, `policy`, `query`, `study`, `consortium`, `audit`,
//! `device`, `alerts`) is one
//! module holding its arguments, its handlers and what it prints. The
//! pieces they share are small modules of their own: `args` (the data dir,
//! durations), `code` and `failure` (errors), `files` (the bounded reader),
//! `keys`, `local_node` (a data dir's node, direct or through its admin
//! channel), `researcher` (a researcher's checked session), `runtime`,
//! `labels` and `stdout`.

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

pub mod args;
pub mod code;
pub mod failure;
pub mod files;
mod keys;
mod labels;
mod local_node;
mod node_http;
mod researcher;
mod runtime;
pub mod stdout;

pub mod alerts;
pub mod analysis;
pub mod audit;
pub mod consent;
pub mod consortium;
pub mod credential;
pub mod device;
mod encrypted_analysis;
pub mod import;
pub mod keygen;
pub mod node;
pub mod patient;
pub mod policy;
pub mod query;
pub mod study;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use args::DataDirArg;
pub use code::Code;
pub use failure::Failure;
pub use node::{NodeCommand, RunArgs};

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
    Import(import::ImportCommand),
    /// Make a key pair for a patient, researcher, hospital admin or authority.
    Keygen(keygen::KeygenArgs),
    /// Hospital staff: bind a patient's public key to their record.
    #[command(subcommand)]
    Patient(patient::PatientCommand),
    /// Patients grant and revoke consent; nodes accept and list it.
    #[command(subcommand)]
    Consent(consent::ConsentCommand),
    /// Authorities issue researcher credentials; anyone can verify them.
    #[command(subcommand)]
    Credential(credential::CredentialCommand),
    /// Hospital admins sign and install the node policy.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Researchers ask queries.
    #[command(subcommand)]
    Query(query::QueryCommand),
    /// Researchers make and publish study keys for encrypted-mode queries.
    #[command(subcommand)]
    Study(study::StudyCommand),
    /// The consortium directory of member hospitals, signed by the consortium authority.
    #[command(subcommand)]
    Consortium(consortium::ConsortiumCommand),
    /// Read the node's audit log.
    Audit(audit::AuditArgs),
    /// Staff: enrol, retire and list bedside devices; the hypercapnic flag.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// NEWS2 alerts raised from device readings; `alerts ack ID --by NAME`.
    Alerts(alerts::AlertsArgs),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Operators read a running node's log; one-shot commands stay quiet.
    let running = matches!(cli.command, Command::Node(NodeCommand::Run(_)));
    init_tracing(if running { "info" } else { "warn" });
    exit_code(run(cli.command))
}

/// Runs one parsed command (the lab binary also calls it for the commands it shares).
pub fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Node(c) => node::run(c),
        Command::Import(c) => import::run(c),
        Command::Keygen(a) => keygen::run(&a),
        Command::Patient(c) => patient::run(c),
        Command::Consent(c) => consent::run(c),
        Command::Credential(c) => credential::run(c),
        Command::Policy(c) => policy::run(c),
        Command::Query(c) => query::run(c),
        Command::Study(c) => study::run(c),
        Command::Consortium(c) => consortium::run(c),
        Command::Audit(a) => audit::run(a),
        Command::Device(c) => device::run(c),
        Command::Alerts(a) => alerts::run(a),
    }
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
