//! `witmed study`: a researcher's study keys for encrypted mode, made once and published to every member.

use witmed_protocol::encrypted::{StudyAnnouncement, ENCRYPTED_VERSION};

use super::network::researcher_session;
use super::{Failure, PublishStudyArgs, StudyCommand};
use crate::encrypted::study;
use crate::net::client::{self, Status};
use crate::unix_now;

type Result<T> = std::result::Result<T, Failure>;

/// Runs one `study` subcommand.
pub fn run(command: StudyCommand) -> Result<()> {
    match command {
        StudyCommand::Keygen { out } => keygen(&out),
        StudyCommand::Publish(args) => publish(args),
    }
}

fn keygen(out: &std::path::Path) -> Result<()> {
    let info = study::keygen(out, unix_now()).map_err(|e| Failure::new(e.code(), e))?;
    println!("study {}", info.id);
    println!("  parameters  {}", info.params);
    println!(
        "  {}/client.key decrypts totals: keep it here, it is never sent",
        out.display()
    );
    println!(
        "  publish the public key with: witmed study publish --study {} ...",
        out.display()
    );
    println!("  name it in encrypted queries as: study = \"{}\"", info.id);
    Ok(())
}

fn publish(args: PublishStudyArgs) -> Result<()> {
    let (researcher, credential, targets) = researcher_session(&args.researcher)?;
    let (info, public_key) =
        study::load_public(&args.study).map_err(|e| Failure::new(e.code(), e))?;
    let announcement = StudyAnnouncement {
        version: ENCRYPTED_VERSION,
        params: info.params.clone(),
        public_key,
        credential: credential.to_bytes(),
        issued_at: unix_now(),
    };
    let id = announcement.study_id();
    let envelope = announcement.sign(&researcher);
    let runtime = crate::net::runtime().map_err(|e| Failure::new("runtime_failed", e))?;
    let results = runtime
        .block_on(client::ask_signed(
            &researcher,
            &envelope,
            id,
            &targets,
            args.timeout,
            crate::net::codec::Codec::default(),
        ))
        .map_err(|e| Failure::new("network_failed", e))?;
    println!("study {} published to {} members", info.id, results.len());
    let mut missing = 0;
    for r in &results {
        let reason = r.status.reason().unwrap_or_default();
        println!("  {:<20} {:<12} {reason}", r.name, r.status.label());
        if r.status != Status::StudyInstalled {
            missing += 1;
        }
    }
    if missing > 0 {
        return Err(Failure::new(
            "publish_incomplete",
            format!("{missing} members did not install the study; see the reasons above and publish again"),
        ));
    }
    Ok(())
}
