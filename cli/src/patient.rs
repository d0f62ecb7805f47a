//! `witmed patient`: hospital staff find a patient's pseudonym and bind (or replace) the patient's public key; privacy accounts and caps (see `privacy_account`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;
use witmed_crypto::{PublicKey, Role};
use witmed_node::{admin, unix_now};
use witmed_policies::consent;

use crate::args::DataDirArg;
use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::privacy_account::{self, AccountArgs, CapArgs, CapSubmitArgs};
use crate::{keys, local_node};

#[derive(Debug, Subcommand)]
pub enum PatientCommand {
    /// Show a patient's pseudonym at this node, from the source system's id.
    Lookup {
        #[command(flatten)]
        dir: DataDirArg,
        /// physionet2012 or fhir
        #[arg(long)]
        source: String,
        /// The patient's id in the source system (PhysioNet RecordID, FHIR Patient id).
        #[arg(long)]
        source_id: String,
        /// Print the pseudonym and node id as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Bind a patient's public key to their pseudonym.
    Enrol {
        #[command(flatten)]
        dir: DataDirArg,
        /// The patient's pseudonym (see `patient lookup`).
        #[arg(long)]
        patient: String,
        /// The patient's public key (hex), or a key file with --key-file.
        #[arg(long, conflicts_with = "key_file")]
        key: Option<String>,
        /// The patient's public key file (from `keygen --public-out`).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Replace a real patient's enrolled key (lost key): needs the hospital admin key or the old patient key.
    Reenrol(ReenrolArgs),
    /// Staff: a patient's privacy account (what answers that included them cost, and their cap).
    Account(AccountArgs),
    /// Patient: sign a request to set (or remove) their privacy cap at a node.
    Cap(CapArgs),
    /// Node: verify and apply a patient's signed cap request.
    CapSubmit(CapSubmitArgs),
}

#[derive(Debug, Args)]
pub struct ReenrolArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The patient's pseudonym.
    #[arg(long)]
    pub patient: String,
    /// The patient's new public key (hex), or their new key file with --key-file.
    #[arg(long, conflicts_with = "key_file")]
    pub key: Option<String>,
    /// The patient's new public key file (from `keygen --public-out`).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// The hospital admin key file (the key that signs the node policy) that approves the change.
    #[arg(
        long,
        conflicts_with = "old_patient_key",
        required_unless_present = "old_patient_key"
    )]
    pub admin_key: Option<PathBuf>,
    /// Or the patient's old key file, when the patient still has it.
    #[arg(long)]
    pub old_patient_key: Option<PathBuf>,
    /// Why the key changes, recorded in the audit log.
    #[arg(long, default_value = "key lost")]
    pub reason: String,
}

/// Runs one `patient` subcommand.
pub fn run(command: PatientCommand) -> Result<()> {
    match command {
        PatientCommand::Lookup {
            dir,
            source,
            source_id,
            json,
        } => {
            let request = admin::Request::Lookup { source, source_id };
            match local_node::ask(&dir.data_dir, &request)? {
                admin::Response::Pseudonym { pseudonym, node_id } => {
                    print_pseudonym(&pseudonym, &node_id, json);
                    Ok(())
                }
                other => Err(local_node::unexpected(other)),
            }
        }
        PatientCommand::Enrol {
            dir,
            patient,
            key,
            key_file,
        } => {
            let p = keys::parse_pseudonym(&patient)?;
            let public = patient_public_key(key, key_file)?;
            let request = admin::Request::Enrol {
                patient: p.to_hex(),
                key: public.to_hex(),
            };
            match local_node::ask(&dir.data_dir, &request)? {
                admin::Response::Enrolled { .. } => {
                    outln!("patient {p} enrolled with key {public}");
                    Ok(())
                }
                other => Err(local_node::unexpected(other)),
            }
        }
        PatientCommand::Reenrol(args) => reenrol(args),
        PatientCommand::Account(args) => privacy_account::account(args),
        PatientCommand::Cap(args) => privacy_account::sign_cap(args),
        PatientCommand::CapSubmit(args) => privacy_account::submit_cap(args),
    }
}

fn patient_public_key(key: Option<String>, key_file: Option<PathBuf>) -> Result<PublicKey> {
    match (key, key_file) {
        (Some(hex), _) => keys::parse_public(&hex),
        (None, Some(path)) => keys::public_from_file(&path, Role::Patient),
        (None, None) => Err(Failure::new(
            Code::MissingKey,
            "give --key HEX or --key-file FILE",
        )),
    }
}

/// Signs a re-enrolment with the admin or old patient key and applies it.
fn reenrol(args: ReenrolArgs) -> Result<()> {
    let p = keys::parse_pseudonym(&args.patient)?;
    let new_key = patient_public_key(args.key, args.key_file)?;
    let signer = match (&args.admin_key, &args.old_patient_key) {
        (Some(path), _) => keys::load(path, Role::Hospital)?,
        (None, Some(path)) => keys::load(path, Role::Patient)?,
        (None, None) => {
            return Err(Failure::new(
                Code::MissingKey,
                "a key change needs --admin-key FILE (the hospital admin key) or --old-patient-key FILE",
            ))
        }
    };
    let record = consent::Reenrolment {
        version: consent::REENROLMENT_VERSION,
        node: local_node::id(&args.dir.data_dir)?,
        patient: p,
        new_key,
        reason: args.reason,
        issued_at: unix_now(),
        id: keys::random_id()?,
    };
    let text = record.sign(&signer).to_text();
    match local_node::ask(&args.dir.data_dir, &admin::Request::Reenrol { text })? {
        admin::Response::Reenrolled {
            old_key,
            superseded,
            ..
        } => {
            outln!("patient {p} re-enrolled: key {old_key} replaced by {new_key}");
            outln!("{superseded} consent tokens signed by the old key no longer count; the patient must grant consent again with the new key");
            Ok(())
        }
        other => Err(local_node::unexpected(other)),
    }
}

/// `patient lookup`: the pseudonym at this node.
fn print_pseudonym(
    pseudonym: &impl std::fmt::Display,
    node_id: &impl std::fmt::Display,
    json: bool,
) {
    if json {
        return crate::stdout::json(&json!({
            "pseudonym": pseudonym.to_string(),
            "node_id": node_id.to_string(),
        }));
    }
    outln!("pseudonym: {pseudonym}");
    outln!("node id:   {node_id}");
}
