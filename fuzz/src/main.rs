//! `witmed-fuzz`: run a fuzz harness for a while, replay a saved input, or list the harnesses.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use witmed_fuzz::engine::{self, Options};
use witmed_fuzz::targets;

#[derive(Parser)]
#[command(
    name = "witmed-fuzz",
    about = "Fuzz witmed's decoders of untrusted input (stable Rust)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fuzz TARGET (or `all`, one after the other) for --seconds each.
    Run {
        target: String,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seed of the mutation generator; the same seed replays the same inputs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Findings go to OUT/crashes/.
        #[arg(long, default_value = "fuzz-logs")]
        out: PathBuf,
    },
    /// Runs one saved input through TARGET and says what happened.
    Replay { target: String, file: PathBuf },
    /// Lists the harnesses.
    List,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::List => {
            for target in targets::all() {
                println!("{:20} {}", target.name, target.about);
            }
            ExitCode::SUCCESS
        }
        Command::Replay { target, file } => replay(&target, &file),
        Command::Run {
            target,
            seconds,
            seed,
            out,
        } => run(&target, seconds, seed, out),
    }
}

fn unknown(name: &str) -> ExitCode {
    let names: Vec<&str> = targets::all().iter().map(|t| t.name).collect();
    eprintln!(
        "no fuzz target {name:?}; use one of: all, {}",
        names.join(", ")
    );
    ExitCode::from(2)
}

fn run(name: &str, seconds: u64, seed: u64, out: PathBuf) -> ExitCode {
    let chosen = if name == "all" {
        targets::all()
    } else {
        match targets::by_name(name) {
            Some(t) => vec![t],
            None => return unknown(name),
        }
    };
    let options = Options {
        duration: Duration::from_secs(seconds),
        seed,
        out: Some(out),
        progress: Some(Duration::from_secs(60)),
    };
    let mut findings = 0;
    for target in &chosen {
        let report = engine::run(target, &options);
        println!(
            "target={} seconds={:.1} executions={} exec_per_s={:.0} corpus={} classes={} findings={}",
            report.target,
            report.elapsed.as_secs_f64(),
            report.executions,
            report.rate(),
            report.corpus,
            report.classes,
            report.findings.len()
        );
        for finding in &report.findings {
            println!(
                "  {} {}: {}",
                finding.kind,
                finding
                    .file
                    .as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default(),
                finding.message.lines().next().unwrap_or_default()
            );
        }
        findings += report.findings.len();
    }
    if findings > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn replay(name: &str, file: &PathBuf) -> ExitCode {
    let Some(target) = targets::by_name(name) else {
        return unknown(name);
    };
    let input = match std::fs::read(file) {
        Ok(input) => input,
        Err(e) => {
            eprintln!("cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match engine::execute(&target, &input) {
        (None, class) => {
            println!("no finding: {class}");
            ExitCode::SUCCESS
        }
        (Some(finding), _) => {
            println!("{}: {}", finding.kind, finding.message);
            ExitCode::FAILURE
        }
    }
}
