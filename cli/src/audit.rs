//! `witmed audit`: read the node's audit log, all of it or the entries of one kind; `audit verify` checks its hash chain; `audit view` shows one patient's verified view.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use witmed_node::audit::{self, Entry, Verified};

use crate::args::DataDirArg;
use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::{keys, local_node};

#[derive(Debug, Args)]
#[command(subcommand_negates_reqs = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// The node's own directory (keys, config, store); or set WITMED_NODE_DIR.
    /// Not WITMED_DATA_DIR, which names the shared data sets.
    #[arg(long, env = "WITMED_NODE_DIR", required = true)]
    pub data_dir: Option<PathBuf>,
    /// Only entries whose kind starts with this (e.g. `consent.`).
    #[arg(long)]
    pub kind: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that no entry was edited, removed, inserted or reordered, and name the first that was.
    Verify {
        #[command(flatten)]
        dir: DataDirArg,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// A patient's entries and the proof material tying them to a head the node signs, verified before printing.
    View {
        #[command(flatten)]
        dir: DataDirArg,
        /// The patient's pseudonym.
        #[arg(long)]
        patient: String,
        /// Print the verified view (as the HTTP API serves it) as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `audit`.
pub fn run(args: AuditArgs) -> Result<()> {
    match args.command {
        Some(AuditCommand::Verify { dir, json }) => return verify(&dir.data_dir, json),
        Some(AuditCommand::View { dir, patient, json }) => {
            return view(&dir.data_dir, &patient, json)
        }
        None => {}
    }
    // clap requires the data dir when no subcommand is given.
    let data_dir = args.data_dir.unwrap_or_default();
    let node = local_node::open(&data_dir)?;
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

/// `audit verify`: walks the chain from its start and checks every signed head.
fn verify(data_dir: &std::path::Path, json: bool) -> Result<()> {
    let node = local_node::open(data_dir)?;
    match node.verify_audit() {
        Ok(verified) => {
            print_verified(&verified, json);
            Ok(())
        }
        Err(e) => Err(Failure::from_layer(
            e.error_code(),
            format!(
                "{e}; the log was not signed for again. Keep the data dir as it is and compare with a backup"
            ),
        )),
    }
}

fn print_verified(v: &Verified, json: bool) {
    if json {
        return crate::stdout::json(&serde_json::json!({
            "verified": true,
            "entries": v.entries,
            "legacy_entries": v.legacy,
            "last_seq": v.last_seq,
            "last_hash": hex::encode(v.last_hash),
            "signed_heads": v.heads,
            "newest_head_seq": v.newest_head.as_ref().map(|h| h.seq),
            "unsigned_entries": v.unsigned,
        }));
    }
    outln!(
        "audit log verified: {} entries ({} from before the chain), {} signed heads checked",
        v.entries,
        v.legacy,
        v.heads
    );
    if let Some(head) = &v.newest_head {
        outln!(
            "  newest signed head: entry {} at {}; {} entries since (signed at the next head or close)",
            head.seq,
            crate::labels::utc(head.at),
            v.unsigned
        );
    }
}

/// `audit view`: the patient's view, checked against the node's key as the patient would check it.
fn view(data_dir: &std::path::Path, patient: &str, json: bool) -> Result<()> {
    let p = keys::parse_pseudonym(patient)?;
    let node = local_node::open(data_dir)?;
    let view = node
        .audit_view(p, witmed_node::unix_now())
        .map_err(|e| match e {
            audit::ViewError::Store(e) => Failure::new(Code::StoreFailed, e),
            audit::ViewError::NoHead => Failure::new(Code::AuditViewFailed, e),
        })?;
    let head = view.verify(&node.id()).map_err(|e| {
        Failure::from_layer(
            e.error_code(),
            format!("{e}; the view does not verify: run `witmed audit verify` on this data dir"),
        )
    })?;
    if json {
        crate::stdout::json(&serde_json::json!({
            "node_key": node.id().to_hex(),
            "own_entries": view.entries().count(),
            "uses": view.uses().count(),
            "verified_head_seq": head.seq,
            "view": view,
        }));
        return Ok(());
    }
    outln!(
        "audit view of patient {p}: {} entries about them, verified against the head the node signed at entry {} ({})",
        view.entries().count(),
        head.seq,
        crate::labels::utc(head.at)
    );
    print_entries(&view.entries().cloned().collect::<Vec<_>>(), false);
    print_uses(&view);
    Ok(())
}

/// Each research answer that included the patient, newest first, as its entry records it.
fn print_uses(view: &audit::PatientView) {
    let uses: Vec<_> = view.uses().collect();
    outln!(
        "{} research answers included their data (the newest {} are kept):",
        uses.len(),
        witmed_node::accounts::MAX_USES
    );
    for (entry, u) in uses.into_iter().rev() {
        outln!(
            "{} query {}: {} ({}), researcher {} of {} (code {}), project {}, purpose {}, epsilon {}, delta {}",
            crate::labels::utc(entry.at),
            u.query_id,
            u.aggregate,
            u.mode,
            u.researcher_name,
            u.institution,
            hex::encode(u.researcher),
            if u.project.is_empty() { "none" } else { &u.project },
            u.purpose,
            u.epsilon,
            u.delta
        );
    }
}
