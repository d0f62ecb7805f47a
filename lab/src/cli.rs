//! The `witmed-lab` command line: `witmed`'s commands plus the demo, benchmarks, fault injection and simulated consent.
//!
//! It is built from the hospital CLI's own clap definition
//! (`witmed::Cli::command()`), so every `witmed` command works here with the
//! same arguments, and adds: `demo`, `bench ...`, `consent simulate` and
//! `node run --fault`. Anything not a lab command is handed to `witmed::run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Arg, ArgMatches, Args, CommandFactory, FromArgMatches, Subcommand};
use witmed::{Code, DataDirArg, Failure, RunArgs};
use witmed_net::server::SignResponse;

use crate::fault::{self, Misbehave};

/// `witmed-lab consent simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Share of patients (0 to 1) given simulated consent.
    #[arg(long, default_value_t = 0.8)]
    pub rate: f64,
    /// DUO purposes, comma separated.
    #[arg(long, default_value = "HMB", value_delimiter = ',')]
    pub purposes: Vec<String>,
    /// Seed of the choice of patients, so a demonstration can be repeated.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of hospital nodes.
    #[arg(long, default_value_t = 5)]
    pub hospitals: usize,
    /// Directory holding physionet2012/set-a (default: $WITMED_DATA_DIR, then ../shared/data); synthetic data if absent.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Use a synthetic cohort even if the shared data is present.
    #[arg(long)]
    pub synthetic: bool,
    /// Synthetic patients in all.
    #[arg(long, default_value_t = 2000)]
    pub patients: usize,
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
    /// Federated query latency over libp2p with N hospitals, beside a plain loopback round trip.
    Federation {
        /// Hospital counts to measure, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "3,10")]
        hospitals: Vec<usize>,
        /// Synthetic patients per hospital, comma separated (each with every hospital count).
        #[arg(long, value_delimiter = ',', default_value = "10000")]
        patients: Vec<usize>,
        /// Queries timed per configuration.
        #[arg(long, default_value_t = 50)]
        repetitions: usize,
        /// Also write the figures as CSV.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Also draw them as an SVG chart.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// Encrypted-mode cost end to end over real nodes, beside the raw tfhe operations.
    Encrypted {
        /// Hospital counts to measure, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "3,10")]
        hospitals: Vec<usize>,
        /// Synthetic patients per hospital.
        #[arg(long, default_value_t = 1000)]
        patients: usize,
        /// Queries timed per configuration.
        #[arg(long, default_value_t = 20)]
        repetitions: usize,
        /// Also write the end-to-end figures as CSV.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Encrypted-mode latency of each analysis (survival, table, logistic) over real nodes.
    EncryptedAnalysis {
        /// Hospital counts to measure, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "3,10")]
        hospitals: Vec<usize>,
        /// Synthetic patients per hospital.
        #[arg(long, default_value_t = 1000)]
        patients: usize,
        /// Runs timed per analysis and hospital count.
        #[arg(long, default_value_t = 5)]
        repetitions: usize,
        /// Also write the figures as CSV.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// DP error against epsilon on one node: mean absolute error and interval half-widths.
    DpError {
        /// Synthetic patients on the node.
        #[arg(long, default_value_t = 10_000)]
        patients: usize,
        /// Answers per epsilon.
        #[arg(long, default_value_t = 100)]
        repetitions: usize,
        /// Also write the figures as CSV.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Local query latency over a synthetic cohort beside a plain loop.
    Query {
        /// Synthetic patients on the node.
        #[arg(long, default_value_t = 100_000)]
        patients: usize,
        /// Queries timed.
        #[arg(long, default_value_t = 200)]
        repetitions: usize,
    },
}

/// What the command line asked for.
enum Parsed {
    Demo(DemoArgs),
    Bench(BenchCommand),
    Simulate(SimulateArgs),
    FaultyNode(RunArgs, Misbehave),
    Hospital(witmed::Command),
}

/// `witmed`'s command line with the lab's commands added.
pub fn command() -> clap::Command {
    let simulate =
        SimulateArgs::augment_args(clap::Command::new("simulate").about(
            "DEMONSTRATION ONLY: enrol generated keys and sign tokens for a share of patients",
        ));
    let fault = Arg::new("fault")
        .long("fault")
        .value_name("FAULT")
        .help("Answer wrongly on purpose (fault injection for tests): bad-signature, garbage, oversized, wrong-query, or an encrypted-mode fault");
    witmed::Cli::command()
        .name("witmed-lab")
        .bin_name("witmed-lab")
        .about("witmed-lab: the witmed command line plus the demo, benchmarks, fault injection and simulated consent. Never install it at a hospital.")
        .mut_subcommand("consent", |c| c.subcommand(simulate))
        .mut_subcommand("node", |c| c.mut_subcommand("run", |r| r.arg(fault)))
        .subcommand(DemoArgs::augment_args(
            clap::Command::new("demo")
                .about("A federation of hospitals on this machine: set up, query, show the table, stop"),
        ))
        .subcommand(
            BenchCommand::augment_subcommands(
                clap::Command::new("bench")
                    .about("Measure import and query speed against their raw limits"),
            )
            .subcommand_required(true),
        )
}

fn parse(matches: &ArgMatches) -> Result<Parsed, clap::Error> {
    match matches.subcommand() {
        Some(("demo", m)) => Ok(Parsed::Demo(DemoArgs::from_arg_matches(m)?)),
        Some(("bench", m)) => Ok(Parsed::Bench(BenchCommand::from_arg_matches(m)?)),
        Some(("consent", m)) => match m.subcommand() {
            Some(("simulate", s)) => Ok(Parsed::Simulate(SimulateArgs::from_arg_matches(s)?)),
            _ => hospital(matches),
        },
        Some(("node", m)) => match m.subcommand() {
            Some(("run", r)) => match r.get_one::<String>("fault") {
                Some(name) => {
                    let how = name.parse::<Misbehave>().map_err(|e| {
                        clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n"))
                    })?;
                    Ok(Parsed::FaultyNode(RunArgs::from_arg_matches(r)?, how))
                }
                None => hospital(matches),
            },
            _ => hospital(matches),
        },
        _ => hospital(matches),
    }
}

fn hospital(matches: &ArgMatches) -> Result<Parsed, clap::Error> {
    Ok(Parsed::Hospital(
        witmed::Cli::from_arg_matches(matches)?.command,
    ))
}

/// Runs the lab command line; returns the process exit code.
pub fn main() -> ExitCode {
    let matches = command().get_matches();
    let parsed = match parse(&matches) {
        Ok(p) => p,
        Err(e) => e.exit(),
    };
    let running = matches!(
        parsed,
        Parsed::FaultyNode(..)
            | Parsed::Hospital(witmed::Command::Node(witmed::NodeCommand::Run(_)))
    );
    witmed::init_tracing(if running { "info" } else { "warn" });
    witmed::exit_code(run(parsed))
}

fn run(parsed: Parsed) -> Result<(), Failure> {
    match parsed {
        Parsed::Demo(args) => demo(args),
        Parsed::Bench(command) => bench(command),
        Parsed::Simulate(args) => simulate(args),
        Parsed::FaultyNode(args, how) => faulty_node(&args, how),
        Parsed::Hospital(command) => witmed::run(command),
    }
}

fn faulty_node(args: &RunArgs, how: Misbehave) -> Result<(), Failure> {
    tracing::warn!("FAULT INJECTION: this node will answer wrongly on purpose ({how:?})");
    let sign = SignResponse(Arc::new(move |node, response| {
        fault::misbehave(node, how, response)
    }));
    witmed::node::serve(args, Some(sign))
}

fn simulate(args: SimulateArgs) -> Result<(), Failure> {
    let now = witmed_node::unix_now();
    let node = witmed_node::node::Node::open(&args.dir.data_dir, now)
        .map_err(|e| Failure::new(Code::NodeOpenFailed, e))?;
    let done = crate::simulate::simulate(&node, args.rate, &args.purposes, args.seed, now)
        .map_err(|e| Failure::from_layer(e.code(), e))?;
    outln!(
        "SIMULATED consent (demonstration only): {} of {} patients enrolled with fresh keys and tokens for {} ({} chosen were already enrolled and left alone)",
        done.tokens,
        done.patients,
        args.purposes.join(","),
        done.already
    );
    Ok(())
}

fn demo(args: DemoArgs) -> Result<(), Failure> {
    let data = if args.synthetic {
        None
    } else {
        args.data
            .or_else(|| std::env::var_os("WITMED_DATA_DIR").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from("../shared/data")))
    };
    let config = crate::demo::Config {
        hospitals: args.hospitals.clamp(1, 100),
        data,
        synthetic_patients: args.patients,
        consent_rate: 0.8,
        timeout: std::time::Duration::from_secs(10),
    };
    crate::demo::run(&config)
        .map(|_| ())
        .map_err(|e| Failure::from_layer("demo_failed", e))
}

fn bench(command: BenchCommand) -> Result<(), Failure> {
    use crate::bench;
    match command {
        BenchCommand::Import { set_dir, patients } => bench::import(set_dir.as_deref(), patients),
        BenchCommand::Query {
            patients,
            repetitions,
        } => bench::query(patients, repetitions),
        BenchCommand::Federation {
            hospitals,
            patients,
            repetitions,
            csv,
            svg,
        } => bench::federated(
            &hospitals,
            &patients,
            repetitions,
            csv.as_deref(),
            svg.as_deref(),
        ),
        BenchCommand::Encrypted {
            hospitals,
            patients,
            repetitions,
            csv,
        } => bench::encrypted::run(&hospitals, patients, repetitions, csv.as_deref()),
        BenchCommand::EncryptedAnalysis {
            hospitals,
            patients,
            repetitions,
            csv,
        } => bench::encrypted_analysis::run(&hospitals, patients, repetitions, csv.as_deref()),
        BenchCommand::DpError {
            patients,
            repetitions,
            csv,
        } => bench::dp_error(patients, repetitions, csv.as_deref()),
    }
    .map_err(|e| Failure::from_layer("bench_failed", e))
}
