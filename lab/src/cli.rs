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

/// SIMULATION: enrol one device per PhysioNet stay and replay the stays as signed readings.
#[derive(Debug, Args)]
pub struct DeviceSimulateArgs {
    /// The node's HTTP API, e.g. http://127.0.0.1:4080 (`witmed node run --http`).
    #[arg(long)]
    pub node: String,
    /// Simulated patients (one device each); the deteriorating demo patient comes first.
    #[arg(long, default_value_t = 10)]
    pub patients: usize,
    /// Readings per second, all devices together.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// PhysioNet 2012 set dir (default: $WITMED_DATA_DIR/physionet2012/set-a, then ../shared/data/...).
    #[arg(long)]
    pub set: Option<PathBuf>,
    /// File holding the staff token (default: admin/api.token in --data-dir).
    #[arg(long)]
    pub staff_token_file: Option<PathBuf>,
    /// The node's own directory, to read the staff token from; or set WITMED_NODE_DIR.
    #[arg(long, env = "WITMED_NODE_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Readings per signed request.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Parallel connections.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Loop the stays for this long (e.g. 60s) instead of replaying each once.
    #[arg(long, value_parser = witmed::args::parse_duration)]
    pub duration: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of hospital nodes.
    #[arg(long, default_value_t = 5)]
    pub hospitals: usize,
    /// Directory holding physionet2012/set-a (default: $WITMED_DATA_DIR, then ../shared/data); synthetic data if absent.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Use a synthetic cohort for the federation even if the shared data is present (the bedside alert still replays a set-a stay when there is one).
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
    /// Signed device readings per second into one node over HTTP, with its memory, beside raw synced writes; federated query latency while it ingests.
    Ingest {
        /// PhysioNet set dir (default: $WITMED_DATA_DIR/physionet2012/set-a).
        #[arg(long)]
        set_dir: Option<PathBuf>,
        /// Simulated devices (one PhysioNet stay each).
        #[arg(long, default_value_t = 50)]
        patients: usize,
        /// Hospitals in the federation queried meanwhile.
        #[arg(long, default_value_t = 3)]
        hospitals: usize,
        /// Seconds of ingestion.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Parallel device connections.
        #[arg(long, default_value_t = 2)]
        connections: usize,
        /// Readings per signed batch.
        #[arg(long, default_value_t = 128)]
        batch: usize,
    },
    /// Survival, table and logistic regression: latency over libp2p per hospital count, and accuracy against epsilon.
    Analyses {
        /// PhysioNet set dir (default: $WITMED_DATA_DIR/physionet2012/set-a).
        #[arg(long)]
        set_dir: Option<PathBuf>,
        /// Hospital counts to measure, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "3,10")]
        hospitals: Vec<usize>,
        /// Runs per row.
        #[arg(long, default_value_t = 10)]
        repetitions: usize,
        /// Also write the accuracy table as CSV.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Also draw the survival accuracy against epsilon as an SVG chart.
        #[arg(long)]
        svg: Option<PathBuf>,
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
    DeviceSimulate(DeviceSimulateArgs),
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
    let device_simulate = DeviceSimulateArgs::augment_args(clap::Command::new("simulate").about(
        "SIMULATION: enrol one device per PhysioNet stay and replay the stays as signed readings",
    ));
    let hospital = witmed::Cli::command();
    // `witmed` may have a `device` command of its own: add `simulate` to it, or make one.
    let hospital = if hospital.find_subcommand("device").is_some() {
        hospital.mut_subcommand("device", |c| c.subcommand(device_simulate))
    } else {
        hospital.subcommand(
            clap::Command::new("device")
                .about("Bedside devices")
                .subcommand_required(true)
                .subcommand(device_simulate),
        )
    };
    hospital
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
        Some(("device", m)) => match m.subcommand() {
            Some(("simulate", s)) => Ok(Parsed::DeviceSimulate(
                DeviceSimulateArgs::from_arg_matches(s)?,
            )),
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
        Parsed::DeviceSimulate(args) => device_simulate(args),
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

fn shared_set_a() -> PathBuf {
    std::env::var_os("WITMED_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"))
        .join("physionet2012/set-a")
}

fn device_simulate(args: DeviceSimulateArgs) -> Result<(), Failure> {
    use crate::device::simulate;
    let token_file = match (&args.staff_token_file, &args.data_dir) {
        (Some(file), _) => file.clone(),
        (None, Some(dir)) => witmed_api::auth::staff_token_path(dir),
        (None, None) => return Err(Failure::new(
            Code::MissingKey,
            "give --staff-token-file or --data-dir (the node's directory holding admin/api.token)",
        )),
    };
    let staff_token = std::fs::read_to_string(&token_file)
        .map_err(|e| Failure::new(Code::ReadFailed, format!("{}: {e}", token_file.display())))?
        .trim()
        .to_string();
    let set = args.set.unwrap_or_else(shared_set_a);
    let failed = |e: simulate::Error| Failure::from_layer(e.code(), e);
    let stays = simulate::choose_stays(&set, args.patients.clamp(1, 10_000)).map_err(|e| {
        Failure::new(
            Code::ImportSourceUnreadable,
            format!("{}: {e}", set.display()),
        )
    })?;
    if stays.is_empty() {
        return Err(failed(simulate::Error::NoStays(set.display().to_string())));
    }
    let config = simulate::Config {
        node: args.node,
        staff_token,
        rate: args.rate.clamp(0.01, 1e7),
        batch: args.batch,
        connections: args.connections,
        duration: args.duration,
    };
    let (node_id, devices) = simulate::enrol(&config, stays).map_err(failed)?;
    outln!(
        "enrolled {} simulated devices at node {}; replaying at {} readings/s (first: PhysioNet {})",
        devices.len(),
        &node_id[..node_id.len().min(16)],
        config.rate,
        devices.first().map_or("-", |d| d.record_id.as_str())
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let summary = simulate::replay(&config, &node_id, devices, stop).map_err(failed)?;
    for (record, alert) in &summary.alerts {
        outln!(
            "ALERT PhysioNet {record}: NEWS2 {} ({:?}) patient {}",
            alert.score,
            alert.band,
            &alert.patient[..alert.patient.len().min(16)]
        );
    }
    for (status, body) in summary.refusals.iter().take(5) {
        outln!("refused (HTTP {status}): {body}");
    }
    outln!(
        "sent {} readings in {} requests over {:.1}s; stored {} ({:.0}/s); {} alerts; {} batches refused; {} waits on a busy node",
        summary.sent,
        summary.requests,
        summary.elapsed.as_secs_f64(),
        summary.stored,
        summary.stored_per_second(),
        summary.alerts.len(),
        summary.refusals.len(),
        summary.throttled
    );
    Ok(())
}

fn demo(args: DemoArgs) -> Result<(), Failure> {
    let shared = args
        .data
        .or_else(|| std::env::var_os("WITMED_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("../shared/data"));
    let config = crate::demo::Config {
        hospitals: args.hospitals.clamp(1, 100),
        data: (!args.synthetic).then(|| shared.clone()),
        synthetic_patients: args.patients,
        consent_rate: 0.8,
        timeout: std::time::Duration::from_secs(10),
        set_a: Some(shared.join("physionet2012/set-a")),
    };
    crate::demo::run(&config)
        .map(|_| ())
        .map_err(|e| Failure::from_layer("demo_failed", e))
}

fn bench(command: BenchCommand) -> Result<(), Failure> {
    use crate::bench;
    match command {
        BenchCommand::Import { set_dir, patients } => bench::import(set_dir.as_deref(), patients),
        BenchCommand::Analyses {
            set_dir,
            hospitals,
            repetitions,
            csv,
            svg,
        } => {
            let data = std::env::var_os("WITMED_DATA_DIR")
                .map_or_else(|| PathBuf::from("../shared/data"), PathBuf::from)
                .join("physionet2012");
            let set = set_dir.unwrap_or_else(|| data.join("set-a"));
            let outcomes = set
                .parent()
                .map_or_else(|| data.join("Outcomes-a.txt"), |p| p.join("Outcomes-a.txt"));
            bench::analyses::run(
                &set,
                &outcomes,
                &hospitals,
                repetitions,
                csv.as_deref(),
                svg.as_deref(),
            )
        }
        BenchCommand::Query {
            patients,
            repetitions,
        } => bench::query(patients, repetitions),
        BenchCommand::Ingest {
            set_dir,
            patients,
            hospitals,
            seconds,
            connections,
            batch,
        } => bench::ingest::run(&bench::ingest::Config {
            set_dir: set_dir.unwrap_or_else(shared_set_a),
            patients: patients.clamp(1, 4000),
            hospitals: hospitals.clamp(1, 20),
            seconds: seconds.clamp(1, 3600),
            connections: connections.clamp(1, 64),
            batch: batch.clamp(1, 256),
        }),
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
