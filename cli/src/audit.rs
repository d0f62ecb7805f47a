//! `witmed audit`: read the node's audit log, all of it or the entries of one kind.

use clap::Args;
use witmed_node::audit::{self, Entry};

use crate::args::DataDirArg;
use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::local_node;

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

/// Runs `audit`.
pub fn run(args: AuditArgs) -> Result<()> {
    let node = local_node::open(&args.dir.data_dir)?;
    let entries = audit::read_all(&node.store, args.kind.as_deref())
        .map_err(|e| Failure::new(Code::StoreFailed, e))?;
    print_entries(&entries, args.json);
    Ok(())
}

fn print_entries(entries: &[Entry], json: bool) {
    if json {
        return crate::stdout::json(&entries);
    }
    for e in entries {
        outln!(
            "{} {:<20} {} {}",
            crate::labels::utc(e.at),
            e.kind,
            // The first 12 characters of a key's hex: enough to tell them apart.
            e.actor.get(..12).unwrap_or(&e.actor),
            e.detail
        );
    }
}
