//! `witmed study`: a researcher's study keys for encrypted mode, made once and published to every member.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use witmed_net::client::{self, Status};
use witmed_node::encrypted::study;
use witmed_node::unix_now;
use witmed_protocol::encrypted::{StudyAnnouncement, ENCRYPTED_VERSION};

use crate::args::parse_duration;
use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::researcher::{self, ResearcherArgs};
use crate::runtime;

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

/// Runs one `study` subcommand.
pub fn run(command: StudyCommand) -> Result<()> {
    match command {
        StudyCommand::Keygen { out, json } => keygen(&out, json),
        StudyCommand::Publish(args) => publish(args),
    }
}

fn keygen(out: &std::path::Path, json: bool) -> Result<()> {
    let info = study::keygen(out, unix_now()).map_err(|e| Failure::from_layer(e.code(), e))?;
    if json {
        let value = serde_json::json!({
            "study_id": info.id,
            "parameters": info.params,
            "dir": out.display().to_string(),
        });
        crate::stdout::json(&value);
        return Ok(());
    }
    outln!("study {}", info.id);
    outln!("  parameters  {}", info.params);
    outln!(
        "  {}/client.key decrypts totals: keep it here, it is never sent",
        out.display()
    );
    outln!(
        "  publish the public key with: witmed study publish --study {} ...",
        out.display()
    );
    outln!("  name it in encrypted queries as: study = \"{}\"", info.id);
    Ok(())
}

fn publish(args: PublishStudyArgs) -> Result<()> {
    let (researcher, credential, targets) = researcher::session(&args.researcher)?;
    let (info, public_key) =
        study::load_public(&args.study).map_err(|e| Failure::from_layer(e.code(), e))?;
    let announcement = StudyAnnouncement {
        version: ENCRYPTED_VERSION,
        params: info.params.clone(),
        public_key,
        credential: credential.to_bytes(),
        issued_at: unix_now(),
    };
    let id = announcement.study_id();
    let envelope = announcement.sign(&researcher);
    let results = runtime::start()?
        .block_on(client::ask_signed(
            &researcher,
            &envelope,
            id,
            &targets,
            args.timeout,
            witmed_net::codec::Codec::default(),
        ))
        .map_err(|e| Failure::new(Code::NetworkFailed, e))?;
    if args.json {
        print_published_json(&info.id, &results);
    } else {
        outln!("study {} published to {} members", info.id, results.len());
        for r in &results {
            let reason = r.status.reason().unwrap_or_default();
            outln!("  {:<20} {:<12} {reason}", r.name, r.status.label());
        }
    }
    let missing = results
        .iter()
        .filter(|r| r.status != Status::StudyInstalled)
        .count();
    if missing > 0 {
        return Err(Failure::new(
            Code::PublishIncomplete,
            format!("{missing} members did not install the study; see the reasons above and publish again"),
        ));
    }
    Ok(())
}

/// `study publish --json`: the study and each member's status.
fn print_published_json(study_id: &str, results: &[client::HospitalResult]) {
    let members: Vec<_> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "status": r.status.label(),
                "installed": r.status == Status::StudyInstalled,
                "reason": r.status.reason(),
            })
        })
        .collect();
    let value = serde_json::json!({"study_id": study_id, "members": members});
    crate::stdout::json(&value);
}
