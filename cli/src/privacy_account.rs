//! `witmed patient account`, `patient cap` and `patient cap-submit`: a patient's privacy account for staff, and the patient's signed cap on it.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use witmed_crypto::Role;
use witmed_node::accounts::Account;
use witmed_node::{admin, unix_now};
use witmed_policies::cap::{self, CapRequest, CAP_VERSION};

use crate::args::DataDirArg;
use crate::failure::{Failure, Result};
use crate::files::{read_text, write_new};
use crate::{keys, local_node};

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
