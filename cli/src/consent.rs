//! `witmed consent`: patients sign consent tokens and revocations; the node verifies, stores and lists them.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;
use witmed_crypto::Role;
use witmed_node::admin::ConsentRow;
use witmed_node::consents::Counts;
use witmed_node::{admin, unix_now};
use witmed_policies::consent::{self, Revocation, Token};
use witmed_protocol::vocab::{Category, Mode};

use crate::args::DataDirArg;
use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::files::{read_text, write_new};
use crate::keys;
use crate::local_node::{self, NodeAt};

#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Patient: sign a consent token.
    Grant(GrantArgs),
    /// Patient: sign a revocation of a token.
    Revoke(RevokeArgs),
    /// Node: verify and store signed tokens or revocations.
    Submit {
        #[command(flatten)]
        dir: DataDirArg,
        /// Signed token or revocation files (from `consent grant` / `consent revoke`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print what was stored and refused as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Node: list consent tokens.
    List {
        #[command(flatten)]
        dir: DataDirArg,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    /// The patient's key file.
    #[arg(long)]
    pub key: PathBuf,
    /// The hospital node's id (its public key, from `witmed node status`).
    #[arg(long)]
    pub node: String,
    /// The patient's pseudonym at that node.
    #[arg(long)]
    pub patient: String,
    /// DUO codes, comma separated: GRU, HMB, DS-<disease>, and modifiers NCU, NPU, IRB.
    #[arg(long, value_delimiter = ',', required = true)]
    pub purposes: Vec<String>,
    /// Data categories, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "demographics,vital-signs,labs,conditions,encounters"
    )]
    pub categories: Vec<String>,
    /// Privacy modes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "dp,encrypted")]
    pub modes: Vec<String>,
    /// Valid for this many days from now.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Where to write the signed token (a new file), for the node's `consent submit`.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The patient's key file.
    #[arg(long)]
    pub key: PathBuf,
    /// The signed token file to revoke.
    #[arg(long)]
    pub token: PathBuf,
    /// Where to write the signed revocation (a new file); it counts once submitted.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs one `consent` subcommand.
pub fn run(command: ConsentCommand) -> Result<()> {
    match command {
        ConsentCommand::Grant(args) => grant(args),
        ConsentCommand::Revoke(args) => revoke(args),
        ConsentCommand::Submit { dir, files, json } => submit(&dir.data_dir, &files, json),
        ConsentCommand::List { dir, json } => {
            let limit = if json {
                admin::MAX_LISTED_CONSENTS
            } else {
                LISTED_TOKENS as u32
            };
            match local_node::ask(&dir.data_dir, &admin::Request::Consents { limit })? {
                admin::Response::Consents { counts, tokens } => {
                    print_list(&counts, &tokens, json);
                    Ok(())
                }
                other => Err(local_node::unexpected(other)),
            }
        }
    }
}

fn parse_list<T>(items: &[String], code: Code) -> Result<std::collections::BTreeSet<T>>
where
    T: std::str::FromStr + Ord,
    T::Err: std::fmt::Display,
{
    items
        .iter()
        .map(|s| s.trim().parse::<T>().map_err(|e| Failure::new(code, e)))
        .collect()
}

fn grant(args: GrantArgs) -> Result<()> {
    let key = keys::load(&args.key, Role::Patient)?;
    let now = unix_now();
    let token = Token {
        version: consent::TOKEN_VERSION,
        id: keys::random_id()?,
        node: keys::parse_public(&args.node)?,
        patient: keys::parse_pseudonym(&args.patient)?,
        purposes: args.purposes.clone(),
        categories: parse_list::<Category>(&args.categories, Code::BadCategory)?,
        modes: parse_list::<Mode>(&args.modes, Code::BadMode)?,
        not_before: now,
        expires: now + i64::from(args.days) * 86_400,
        simulated: false,
    };
    let signed = token.clone().sign(&key);
    // Check the token as the node will, with this patient's key enrolled.
    let own_key = key.public();
    consent::verify_token(&signed, &token.node, &|_| Some(own_key), now)
        .map_err(|e| Failure::from_layer(e.error_code(), e))?;
    write_new(&args.out, &signed.to_text())?;
    outln!(
        "consent token {} written to {}",
        token.id,
        args.out.display()
    );
    outln!(
        "give it to the hospital: witmed consent submit --data-dir DIR {}",
        args.out.display()
    );
    Ok(())
}

fn revoke(args: RevokeArgs) -> Result<()> {
    let key = keys::load(&args.key, Role::Patient)?;
    let text = read_text(&args.token, witmed_policies::MAX_SIGNED_BYTES)?;
    let envelope =
        witmed_policies::parse_signed(&text).map_err(|e| Failure::from_layer(e.error_code(), e))?;
    let token: Token = envelope
        .open(consent::TOKEN_DOMAIN)
        .map_err(|e| Failure::new(Code::BadToken, e))?;
    if envelope.signer != key.public() {
        return Err(Failure::new(
            Code::WrongPatientKey,
            "this token was signed by another key; revoke it with the key that granted it",
        ));
    }
    let revocation = Revocation {
        version: consent::REVOCATION_VERSION,
        token_id: token.id.clone(),
        node: token.node,
        patient: token.patient,
        issued_at: unix_now(),
    };
    write_new(&args.out, &revocation.sign(&key).to_text())?;
    outln!(
        "revocation of token {} written to {}",
        token.id,
        args.out.display()
    );
    Ok(())
}

fn submit(dir: &Path, files: &[PathBuf], json: bool) -> Result<()> {
    let mut node = NodeAt::new(dir);
    let mut submitted = Submitted::default();
    for path in files {
        let outcome = read_text(path, witmed_policies::MAX_SIGNED_BYTES)
            .and_then(|text| node.ask(&admin::Request::Submit { text }));
        let file = path.display().to_string();
        match outcome {
            Ok(admin::Response::Token { id, patient }) => submitted.accepted.push(Stored {
                file,
                kind: "token",
                token_id: id.to_string(),
                patient: patient.to_string(),
            }),
            Ok(admin::Response::Revocation { token_id, patient }) => {
                submitted.accepted.push(Stored {
                    file,
                    kind: "revocation",
                    token_id: token_id.to_string(),
                    patient: patient.to_string(),
                })
            }
            Ok(other) => submitted
                .refused
                .push(Refused::new(file, local_node::unexpected(other))),
            Err(e) => submitted.refused.push(Refused::new(file, e)),
        }
    }
    print_submitted(&submitted, json);
    let failures = submitted.refused.len();
    if failures > 0 {
        return Err(Failure::new(
            Code::SubmitRefused,
            format!(
                "{failures} of {} files refused; nothing of them was stored",
                files.len()
            ),
        ));
    }
    Ok(())
}

/// What `consent submit` stored and refused.
#[derive(Debug, Default, Serialize)]
struct Submitted {
    accepted: Vec<Stored>,
    refused: Vec<Refused>,
}

/// One stored consent token or revocation.
#[derive(Debug, Serialize)]
struct Stored {
    file: String,
    /// `token` or `revocation`.
    kind: &'static str,
    token_id: String,
    patient: String,
}

/// One refused file, with the error code and message.
#[derive(Debug, Serialize)]
struct Refused {
    file: String,
    code: &'static str,
    message: String,
}

impl Refused {
    fn new(file: String, failure: Failure) -> Refused {
        Refused {
            file,
            code: failure.code,
            message: failure.message,
        }
    }
}

fn print_submitted(s: &Submitted, json: bool) {
    if json {
        return crate::stdout::json(s);
    }
    for a in &s.accepted {
        match a.kind {
            "token" => outln!(
                "{}: accepted consent token {} for patient {}",
                a.file,
                a.token_id,
                a.patient
            ),
            _ => outln!(
                "{}: accepted revocation of token {} (patient {})",
                a.file,
                a.token_id,
                a.patient
            ),
        }
    }
    // Refusals are errors: on stderr, beside the final error line.
    for r in &s.refused {
        eprintln!("{}: refused [{}]: {}", r.file, r.code, r.message);
    }
}

/// At most this many tokens are listed as text; `--json` lists them all.
const LISTED_TOKENS: usize = 50;

fn print_list(counts: &Counts, tokens: &[ConsentRow], json: bool) {
    if json {
        return crate::stdout::json(&json!({ "counts": counts, "tokens": tokens }));
    }
    outln!(
        "{} tokens ({} simulated, {} revoked), {} patients enrolled",
        counts.tokens,
        counts.simulated_tokens,
        counts.revoked,
        counts.enrolled
    );
    for t in tokens {
        outln!(
            "{} patient {} purposes {:?} until {}{}{}",
            t.id,
            t.patient,
            t.purposes,
            crate::labels::utc(t.expires),
            if t.simulated { " SIMULATED" } else { "" },
            if t.revoked { " REVOKED" } else { "" },
        );
    }
    if counts.tokens > tokens.len() {
        outln!(
            "... {} more (--json lists up to {})",
            counts.tokens - tokens.len(),
            admin::MAX_LISTED_CONSENTS
        );
    }
}
