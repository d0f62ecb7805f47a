//! Who a researcher is and which federation they talk to: the arguments and the checked session `query run` and `study publish` share.

use std::path::PathBuf;

use clap::Args;
use witmed_crypto::{Envelope, KeyPair, Role};
use witmed_net::client;

use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::keys;

/// Who a researcher is and which federation they talk to.
#[derive(Debug, Args)]
pub struct ResearcherArgs {
    /// The signed consortium directory.
    #[arg(long)]
    pub directory: PathBuf,
    /// Pin the consortium authority's public key (hex); the directory must be signed by it.
    #[arg(long)]
    pub authority: Option<String>,
    /// The researcher's key file.
    #[arg(long)]
    pub key: PathBuf,
    /// The researcher's credential file.
    #[arg(long)]
    pub credential: PathBuf,
}

/// The researcher's key, credential and the members of the verified directory.
pub fn session(args: &ResearcherArgs) -> Result<(KeyPair, Envelope, Vec<client::Target>)> {
    let researcher = keys::load(&args.key, Role::Researcher)?;
    let credential_text =
        crate::files::read_text(&args.credential, witmed_policies::MAX_SIGNED_BYTES)?;
    let credential = witmed_policies::parse_signed(&credential_text)
        .map_err(|e| Failure::from_layer(e.error_code(), e))?;
    let (dir, _) = crate::consortium::load_directory(&args.directory, args.authority.as_deref())?;
    let targets = client::targets(&dir).map_err(|e| Failure::new(Code::BadDirectory, e))?;
    Ok((researcher, credential, targets))
}
