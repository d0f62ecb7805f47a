//! `witmed credential`: an authority issues a researcher credential; anyone checks one against the issuer they trust.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use witmed_crypto::Role;
use witmed_node::unix_now;
use witmed_policies::credential::{self, Credential};

use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::files::{read_text, write_new};
use crate::keys;

#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Authority: issue a researcher credential.
    Issue(IssueArgs),
    /// Check a credential's signature and validity.
    Verify {
        /// The credential file to check.
        #[arg(long)]
        credential: PathBuf,
        /// The issuer's public key (hex) you trust.
        #[arg(long)]
        issuer: String,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The authority's key file (its secret key: this runs at the authority).
    #[arg(long)]
    pub authority_key: PathBuf,
    /// The researcher's public key (hex), as they sent it to you ...
    #[arg(
        long,
        visible_alias = "researcher-public-key",
        conflicts_with = "researcher_key"
    )]
    pub researcher: Option<String>,
    /// ... or their public key file (from `keygen --public-out`).
    #[arg(long)]
    pub researcher_key: Option<PathBuf>,
    /// Your stable identifier for this researcher (e.g. an ORCID or a staff
    /// id): give the same one in every credential you issue them, whatever
    /// their key, because each node's privacy budget follows it.
    #[arg(long)]
    pub researcher_id: String,
    /// The researcher's name as nodes show it.
    #[arg(long)]
    pub name: String,
    /// The researcher's institution.
    #[arg(long)]
    pub institution: String,
    /// The approved project the credential is for.
    #[arg(long)]
    pub project: String,
    /// Approved DUO purposes, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub purposes: Vec<String>,
    /// The research is commercial (DUO NCU refuses it).
    #[arg(long)]
    pub commercial: bool,
    /// The research is not for profit (DUO NPU requires it).
    #[arg(long)]
    pub not_for_profit: bool,
    /// Valid for this many days from now.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Where to write the signed credential (a new file), for the researcher.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs one `credential` subcommand.
pub fn run(command: CredentialCommand) -> Result<()> {
    match command {
        CredentialCommand::Issue(args) => issue(args),
        CredentialCommand::Verify {
            credential,
            issuer,
            json,
        } => {
            let text = read_text(&credential, witmed_policies::MAX_SIGNED_BYTES)?;
            let envelope = witmed_policies::parse_signed(&text)
                .map_err(|e| Failure::from_layer(e.error_code(), e))?;
            let issuer = keys::parse_public(&issuer)?;
            let verified = credential::verify_credential(&envelope, &[issuer], unix_now())
                .map_err(|e| Failure::from_layer(e.error_code(), e))?;
            print_valid(verified.credential(), json);
            Ok(())
        }
    }
}

fn issue(args: IssueArgs) -> Result<()> {
    let authority = keys::load(&args.authority_key, Role::Authority)?;
    let researcher = match (&args.researcher, &args.researcher_key) {
        (Some(hex), _) => keys::parse_public(hex)?,
        (None, Some(path)) => keys::public_from_file(path, Role::Researcher)?,
        (None, None) => {
            return Err(Failure::new(
                Code::MissingKey,
                "give the researcher's public key (--researcher-public-key HEX) or their key file (--researcher-key FILE)",
            ))
        }
    };
    let now = unix_now();
    let credential = Credential {
        version: credential::CREDENTIAL_VERSION,
        researcher,
        researcher_id: args.researcher_id,
        name: args.name,
        institution: args.institution,
        commercial: args.commercial,
        not_for_profit: args.not_for_profit,
        project: args.project,
        purposes: args.purposes,
        issued_at: now,
        expires: now + i64::from(args.days) * 86_400,
    };
    let signed = credential.clone().sign(&authority);
    credential::verify_credential(&signed, &[authority.public()], now)
        .map_err(|e| Failure::from_layer(e.error_code(), e))?;
    write_new(&args.out, &signed.to_text())?;
    outln!(
        "credential for researcher {} (key {}) written to {}",
        credential.researcher_id,
        credential.researcher,
        args.out.display()
    );
    outln!(
        "issuer (trust this in node policies): {}",
        authority.public()
    );
    Ok(())
}

/// `credential verify`: who the valid credential is for.
fn print_valid(c: &Credential, json: bool) {
    if json {
        return crate::stdout::json(c);
    }
    outln!(
        "valid credential for researcher {} (key {})",
        c.researcher_id,
        c.researcher
    );
    outln!("  {} ({}), project {:?}", c.name, c.institution, c.project);
    outln!(
        "  purposes {}; expires {}",
        c.purposes.join(","),
        crate::labels::utc(c.expires)
    );
}
