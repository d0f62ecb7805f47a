//! `witmed patient`: hospital staff find a patient's pseudonym and bind (or replace) the patient's public key; staff read a patient's privacy account, and the patient signs a cap on it.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;
use witmed_crypto::{PublicKey, Role};
use witmed_node::accounts::Account;
use witmed_node::{admin, unix_now};
use witmed_policies::cap::{self, CapRequest, CAP_VERSION};
use witmed_policies::consent;

use crate::args::DataDirArg;
use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::files::{read_text, write_new};
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
        PatientCommand::Account(args) => account(args),
        PatientCommand::Cap(args) => sign_cap(args),
        PatientCommand::CapSubmit(args) => submit_cap(args),
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

// Privacy accounts and caps.

#[derive(Debug, Args)]
pub struct AccountArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The patient's pseudonym (see `patient lookup`).
    #[arg(long)]
    pub patient: String,
    /// Print the account as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("cap_choice").required(true).args(["epsilon", "remove"]))]
pub struct CapArgs {
    /// The patient's key file (the key enrolled at the node).
    #[arg(long)]
    pub key: PathBuf,
    /// The hospital node's id (its public key, from `witmed node status`).
    #[arg(long)]
    pub node: String,
    /// The patient's pseudonym at that node.
    #[arg(long)]
    pub patient: String,
    /// The total epsilon after which the patient's data is no longer used (0 to 1000000).
    #[arg(long)]
    pub epsilon: Option<f64>,
    /// Remove the cap instead of setting one.
    #[arg(long)]
    pub remove: bool,
    /// Where to write the signed request (a new file), for the node's `patient cap-submit`; valid for a day.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct CapSubmitArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The signed cap request file (from `patient cap`).
    pub file: PathBuf,
    /// Print what was applied as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `patient account`: through the running node's admin channel, or the store.
pub fn account(args: AccountArgs) -> Result<()> {
    let p = keys::parse_pseudonym(&args.patient)?;
    let request = admin::Request::Account {
        patient: p.to_hex(),
    };
    match local_node::ask(&args.dir.data_dir, &request)? {
        admin::Response::Account { patient, account } => {
            print_account(&patient, &account, args.json);
            Ok(())
        }
        other => Err(local_node::unexpected(other)),
    }
}

/// `patient cap`: the patient signs a cap request, checked as the node will check it.
pub fn sign_cap(args: CapArgs) -> Result<()> {
    let key = keys::load(&args.key, Role::Patient)?;
    let now = unix_now();
    let request = CapRequest {
        version: CAP_VERSION,
        id: keys::random_id()?,
        node: keys::parse_public(&args.node)?,
        patient: keys::parse_pseudonym(&args.patient)?,
        // clap requires exactly one of --epsilon and --remove.
        epsilon: if args.remove { None } else { args.epsilon },
        issued_at: now,
    };
    let signed = request.clone().sign(&key);
    let own_key = key.public();
    cap::verify_cap_request(&signed, &request.node, &|_| Some(own_key), now)
        .map_err(|e| Failure::from_layer(e.error_code(), e))?;
    write_new(&args.out, &signed.to_text())?;
    match request.epsilon {
        Some(epsilon) => outln!(
            "privacy cap request {} (epsilon {epsilon}) written to {}",
            request.id,
            args.out.display()
        ),
        None => outln!(
            "request {} to remove the privacy cap written to {}",
            request.id,
            args.out.display()
        ),
    }
    outln!(
        "give it to the hospital within a day: witmed patient cap-submit --data-dir DIR {}",
        args.out.display()
    );
    Ok(())
}

/// `patient cap-submit`: the node verifies and applies the request (running or not).
pub fn submit_cap(args: CapSubmitArgs) -> Result<()> {
    let text = read_text(&args.file, witmed_policies::MAX_SIGNED_BYTES)?;
    match local_node::ask(&args.dir.data_dir, &admin::Request::Cap { text })? {
        admin::Response::CapSet {
            patient,
            epsilon,
            total_epsilon,
        } => {
            print_cap_set(&args.file, &patient, epsilon, total_epsilon, args.json);
            Ok(())
        }
        other => Err(local_node::unexpected(other)),
    }
}

fn print_cap_set(file: &Path, patient: &str, epsilon: Option<f64>, total: f64, json: bool) {
    if json {
        return crate::stdout::json(&json!({
            "file": file.display().to_string(),
            "patient": patient,
            "cap_epsilon": epsilon,
            "total_epsilon": total,
        }));
    }
    match epsilon {
        Some(cap) => outln!(
            "patient {patient}: privacy cap set to epsilon {cap} (spent so far {total:.4}); in force from the next query"
        ),
        None => outln!(
            "patient {patient}: privacy cap removed (spent so far {total:.4}); in force from the next query"
        ),
    }
}

fn print_account(patient: &str, a: &Account, json: bool) {
    if json {
        return crate::stdout::json(&json!({
            "patient": patient,
            "total_epsilon": a.total_epsilon,
            "total_delta": a.total_delta,
            "answers": a.answers,
            "per_window": a.per_window.iter().map(|w| json!({
                "start": w.start, "seconds": w.seconds, "epsilon": w.epsilon,
                "delta": w.delta, "answers": w.answers,
            })).collect::<Vec<_>>(),
            "per_researcher": a.per_researcher.iter().map(|r| json!({
                "researcher": hex::encode(r.researcher), "epsilon": r.epsilon,
                "delta": r.delta, "answers": r.answers,
            })).collect::<Vec<_>>(),
            "cap": a.cap.as_ref().map(|c| json!({
                "epsilon": c.epsilon, "request": c.request, "set_at": c.set_at,
            })),
        }));
    }
    outln!("patient {patient}");
    outln!(
        "  total: epsilon {:.4}, delta {:e}, in {} answers",
        a.total_epsilon,
        a.total_delta,
        a.answers
    );
    match &a.cap {
        Some(cap) => outln!(
            "  cap: epsilon {} (request {}, set {})",
            cap.epsilon,
            cap.request,
            crate::labels::utc(cap.set_at)
        ),
        None => outln!("  cap: none"),
    }
    for w in &a.per_window {
        outln!(
            "  window from {}: epsilon {:.4} in {} answers",
            crate::labels::utc(w.start),
            w.epsilon,
            w.answers
        );
    }
    for r in &a.per_researcher {
        outln!(
            "  researcher {}: epsilon {:.4} in {} answers",
            hex::encode(r.researcher),
            r.epsilon,
            r.answers
        );
    }
}
