//! `witmed keygen`: a key pair for a patient, researcher, hospital admin, authority or bedside device, and its public half to hand over.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use witmed_crypto::{KeyPair, PublicKey, Role};

use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::files::write_new;

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// patient, researcher, hospital, authority or device
    #[arg(long)]
    pub role: String,
    /// Where to write the key (created 0600; never overwritten).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the public key (hex, one line) to this new file, to hand to
    /// hospital staff or an authority: never hand over the key file itself.
    #[arg(long)]
    pub public_out: Option<PathBuf>,
    /// Print the role, public key and paths as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `keygen`.
pub fn run(args: &KeygenArgs) -> Result<()> {
    let role: Role = args
        .role
        .parse()
        .map_err(|e| Failure::new(Code::BadRole, e))?;
    let key = KeyPair::generate(role).map_err(|e| Failure::new(Code::KeygenFailed, e))?;
    key.save(&args.out)
        .map_err(|e| Failure::new(Code::KeygenFailed, e))?;
    if let Some(public_out) = &args.public_out {
        write_new(public_out, &format!("{}\n", key.public()))?;
    }
    print_written(
        role,
        &key.public(),
        &args.out,
        args.public_out.as_deref(),
        args.json,
    );
    Ok(())
}

/// Where the key went and its public half.
fn print_written(
    role: Role,
    public: &PublicKey,
    out: &Path,
    public_out: Option<&Path>,
    json: bool,
) {
    if json {
        return crate::stdout::json(&json!({
            "role": role.to_string(),
            "public_key": public.to_hex(),
            "path": out.display().to_string(),
            "public_path": public_out.map(|p| p.display().to_string()),
        }));
    }
    outln!("{role} key written to {}", out.display());
    if let Some(p) = public_out {
        outln!(
            "public key written to {} (hand this file over, never the key)",
            p.display()
        );
    }
    outln!("public key: {public}");
}
