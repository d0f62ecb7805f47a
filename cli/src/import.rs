//! `witmed import`: load a hospital's PhysioNet or FHIR files into the node's encrypted store, and report what was skipped.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use witmed_node::import::{self, Summary};
use witmed_node::unix_now;

use crate::args::DataDirArg;
use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::local_node;

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

fn options(args: &ImportArgs) -> import::Options {
    import::Options {
        batch_files: args.batch_files.max(1),
        ack_log: args.ack_log.clone(),
        progress: std::io::stderr().is_terminal() && !args.json,
        now: unix_now(),
    }
}

/// Runs one `import` subcommand.
pub fn run(command: ImportCommand) -> Result<()> {
    let (summary, json, node) = match command {
        ImportCommand::Physionet {
            dir,
            set_dir,
            outcomes,
            import: args,
        } => {
            require_physionet_records(&set_dir)?;
            let node = local_node::open(&dir.data_dir)?;
            let summary = import::import_physionet(
                &node.store,
                node.pseudonyms(),
                &set_dir,
                outcomes.as_deref(),
                &options(&args),
            );
            (summary, args.json, node)
        }
        ImportCommand::Fhir {
            dir,
            paths,
            import: args,
        } => {
            require_fhir_files(&paths)?;
            let node = local_node::open(&dir.data_dir)?;
            let summary =
                import::import_fhir(&node.store, node.pseudonyms(), &paths, &options(&args));
            (summary, args.json, node)
        }
    };
    node.invalidate_index();
    let summary = summary.map_err(|e| Failure::new(Code::ImportFailed, e))?;
    print_summary(&summary, json);
    if !summary.failed_files.is_empty() {
        return Err(Failure::new(
            Code::ImportIncomplete,
            format!(
                "{} files could not be read (named above); everything else was imported",
                summary.failed_files.len()
            ),
        ));
    }
    Ok(())
}

/// A folder with no record files is a wrong path, not an empty import: say so before opening the node.
fn require_physionet_records(set_dir: &Path) -> Result<()> {
    let files = import::physionet::list_set_files(set_dir).map_err(|e| {
        Failure::new(
            Code::ImportSourceUnreadable,
            format!(
                "cannot read the PhysioNet set folder {}: {e}",
                set_dir.display()
            ),
        )
    })?;
    if files.is_empty() {
        return Err(Failure::new(
            Code::ImportSourceEmpty,
            format!(
                "{} holds no PhysioNet record files: expected a set folder of RecordID.txt files \
                 (e.g. physionet2012/set-a); for FHIR bundles use `witmed import fhir`",
                set_dir.display()
            ),
        ));
    }
    Ok(())
}

/// Paths that name no FHIR file (a PhysioNet folder, an empty folder) are a wrong path: say so.
fn require_fhir_files(paths: &[PathBuf]) -> Result<()> {
    let files = import::fhir::list_input_files(paths)
        .map_err(|e| Failure::new(Code::ImportSourceUnreadable, e))?;
    if files.is_empty() {
        let named: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Failure::new(
            Code::ImportSourceEmpty,
            format!(
                "{} holds no FHIR files: expected .json bundles or resources, or .ndjson \
                 (e.g. fhir-r4-synthea); for a PhysioNet set use `witmed import physionet`",
                named.join(", ")
            ),
        ));
    }
    Ok(())
}

fn print_summary(s: &Summary, json: bool) {
    if json {
        return crate::stdout::json(s);
    }
    outln!(
        "imported {} files ({} unchanged, skipped) in {} durable batches",
        s.files,
        s.files_unchanged,
        s.batches
    );
    outln!("patients:     {} ({} new)", s.patients, s.patients_new);
    outln!("observations: {}", s.observations);
    outln!("conditions:   {}", s.conditions);
    outln!("skipped:      {} missing values", s.skipped_missing_values);
    for (kind, n) in &s.skipped_resource_types {
        outln!("              {n} {kind} resources (not used)");
    }
    for line in skipped_by_reason(&s.skipped) {
        outln!("              {line}");
    }
    outln!(
        "rejected:     {} entries, {} files",
        s.rejected.len(),
        s.failed_files.len()
    );
    for r in s.failed_files.iter().chain(&s.rejected) {
        outln!("  {}: {}", r.location, r.reason);
    }
}

/// Examples shown per reason for skipping: enough to find them, not a page of them.
const SKIPPED_EXAMPLES: usize = 3;

/// One line per reason for skipping a value: its count and a few places it occurred.
fn skipped_by_reason(skipped: &[import::source::Rejected]) -> Vec<String> {
    let mut by_reason: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for r in skipped {
        by_reason.entry(&r.reason).or_default().push(&r.location);
    }
    by_reason
        .into_iter()
        .map(|(reason, places)| {
            let examples: Vec<&str> = places.iter().take(SKIPPED_EXAMPLES).copied().collect();
            let more = if places.len() > SKIPPED_EXAMPLES {
                ", ..."
            } else {
                ""
            };
            format!(
                "{} entries: {reason} (e.g. {}{more})",
                places.len(),
                examples.join(", ")
            )
        })
        .collect()
}
