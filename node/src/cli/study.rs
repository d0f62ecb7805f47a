//! `witmed study`: a researcher's study keys for encrypted mode, made once and published to every member.

use witmed_crypto::{KeyPair, Role};
use witmed_protocol::encrypted::{StudyAnnouncement, ENCRYPTED_VERSION};

use super::network::load_directory;
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

/// Reads the researcher's credential file as a signed envelope.
pub fn read_credential(path: &std::path::Path) -> Result<witmed_crypto::Envelope> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::new("read_failed", format!("{}: {e}", path.display())))?;
    witmed_policies::parse_signed(&text).map_err(|e| Failure::new(e.error_code(), e))
}

fn publish(args: PublishStudyArgs) -> Result<()> {
    let researcher =
        KeyPair::load_role(&args.key, Role::Researcher).map_err(|e| Failure::new("bad_key", e))?;
    let credential = read_credential(&args.credential)?;
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
    let (dir, _) = load_directory(&args.directory, args.authority.as_deref())?;
    let targets = client::targets(&dir).map_err(|e| Failure::new("bad_directory", e))?;
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
