//! `witmed policy`: show the installed node policy, sign one with the hospital admin key, install a signed one.

use std::path::PathBuf;

use clap::Subcommand;
use witmed_crypto::Role;
use witmed_node::node;
use witmed_node::unix_now;
use witmed_policies::policy::NodePolicy;

use crate::args::DataDirArg;
use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::files::{read_text, write_new};
use crate::{keys, local_node};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show the installed policy (as TOML, ready to edit and sign).
    Show {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Sign a policy TOML file with the hospital admin key.
    Sign {
        /// The hospital admin key file.
        #[arg(long)]
        key: PathBuf,
        /// Policy in TOML.
        #[arg(long)]
        policy: PathBuf,
        /// Where to write the signed policy (a new file), for `policy install`.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify and install a signed policy (serial must increase).
    Install {
        #[command(flatten)]
        dir: DataDirArg,
        /// The signed policy (from `policy sign`).
        file: PathBuf,
    },
}

/// Runs one `policy` subcommand.
pub fn run(command: PolicyCommand) -> Result<()> {
    match command {
        PolicyCommand::Show { dir } => {
            let node = local_node::open(&dir.data_dir)?;
            out!(
                "{}",
                toml::to_string(&node.policy()).expect("policies serialize")
            );
            Ok(())
        }
        PolicyCommand::Sign { key, policy, out } => {
            let key = keys::load(&key, Role::Hospital)?;
            let text = read_text(&policy, node::MAX_POLICY_BYTES)?;
            let policy: NodePolicy = toml::from_str(&text).map_err(|e| {
                Failure::new(
                    Code::BadPolicy,
                    format!("{}: {}", "policy TOML", e.message()),
                )
            })?;
            policy
                .validate()
                .map_err(|e| Failure::from_layer(e.error_code(), e))?;
            let serial = policy.serial;
            write_new(&out, &policy.sign(&key).to_text())?;
            outln!("policy serial {serial} signed into {}", out.display());
            Ok(())
        }
        PolicyCommand::Install { dir, file } => {
            let node = local_node::open(&dir.data_dir)?;
            let text = read_text(&file, node::MAX_POLICY_BYTES)?;
            let policy = node
                .install_policy(&text, unix_now())
                .map_err(|e| Failure::new(Code::PolicyRefused, e))?;
            outln!("policy serial {} installed", policy.serial);
            Ok(())
        }
    }
}
