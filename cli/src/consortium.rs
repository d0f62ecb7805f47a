//! `witmed consortium`: create, extend, sign, show and install the consortium directory.
//!
//! The directory is edited as TOML (unsigned), signed by the consortium
//! authority into a signed file, and installed at each node. A node pins the
//! authority's key at its first install; later directories must be signed by
//! the same key and carry a higher serial.

use std::path::{Path, PathBuf};

use witmed_crypto::{PublicKey, Role};
use witmed_policies::directory::{self, Directory, Member};

use clap::Subcommand;
use witmed_net::peer_id_of;
use witmed_node::node;
use witmed_node::unix_now;

use crate::args::DataDirArg;
use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::{keys, local_node};

#[derive(Debug, Subcommand)]
pub enum ConsortiumCommand {
    /// Start an empty (unsigned) directory in TOML.
    Create {
        /// The consortium's name; every later directory keeps it.
        #[arg(long)]
        name: String,
        /// Where to write the directory TOML (a new file).
        #[arg(long)]
        out: PathBuf,
    },
    /// Add a member hospital from its node's data dir.
    Add {
        /// The unsigned directory TOML to add the member to.
        #[arg(long)]
        directory: PathBuf,
        #[command(flatten)]
        dir: DataDirArg,
        /// Address researchers dial, e.g. /ip4/10.0.0.5/tcp/4001 (repeatable).
        #[arg(long = "address", required = true)]
        addresses: Vec<String>,
    },
    /// Sign the directory with the consortium authority's key.
    Sign {
        /// The consortium authority's key file.
        #[arg(long)]
        authority_key: PathBuf,
        /// The unsigned directory TOML.
        #[arg(long)]
        directory: PathBuf,
        /// Where to write the signed directory, for every node and researcher.
        #[arg(long)]
        out: PathBuf,
    },
    /// Show a directory (signed or unsigned).
    Show {
        /// The directory file, signed or unsigned.
        #[arg(long)]
        directory: PathBuf,
        /// Pin the authority key a signed directory must carry.
        #[arg(long)]
        authority: Option<String>,
        /// Print the directory (and its signer) as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Install a signed directory at a node (newer serial only).
    Install {
        #[command(flatten)]
        dir: DataDirArg,
        /// The consortium authority's key (hex); pinned at the first install.
        #[arg(long)]
        authority: Option<String>,
        /// The signed directory (from `consortium sign`).
        file: PathBuf,
    },
}

/// Runs one `consortium` subcommand.
pub fn run(command: ConsortiumCommand) -> Result<()> {
    match command {
        ConsortiumCommand::Create { name, out } => create(&name, &out),
        ConsortiumCommand::Add {
            directory,
            dir,
            addresses,
        } => add(&directory, &dir.data_dir, &addresses),
        ConsortiumCommand::Sign {
            authority_key,
            directory,
            out,
        } => sign(&authority_key, &directory, &out),
        ConsortiumCommand::Show {
            directory,
            authority,
            json,
        } => show(&directory, authority.as_deref(), json),
        ConsortiumCommand::Install {
            dir,
            authority,
            file,
        } => install(&dir.data_dir, authority.as_deref(), &file),
    }
}

fn read(path: &Path) -> Result<String> {
    crate::files::read_text(path, witmed_policies::directory::MAX_DIRECTORY_BYTES)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)
        .map_err(|e| Failure::new(Code::WriteFailed, format!("{}: {e}", path.display())))
}

fn read_unsigned(path: &Path) -> Result<Directory> {
    toml::from_str(&read(path)?).map_err(|e| {
        Failure::new(
            Code::BadDirectory,
            format!("{}: {}", path.display(), e.message()),
        )
    })
}

fn write_unsigned(path: &Path, dir: &Directory) -> Result<()> {
    let text = toml::to_string(dir).map_err(|e| {
        Failure::new(
            Code::BadDirectory,
            format!("{}: cannot be written as TOML: {e}", path.display()),
        )
    })?;
    write(path, &text)
}

/// The serial after `serial`, if there is one: serials stay within TOML's
/// integers (i64), so the unsigned directory can always be written back.
fn next_serial(serial: u64) -> Option<u64> {
    serial
        .checked_add(1)
        .filter(|next| i64::try_from(*next).is_ok())
}

/// `consortium create`.
fn create(name: &str, out: &Path) -> Result<()> {
    if out.exists() {
        return Err(Failure::new(
            Code::Exists,
            format!("{} exists; refusing to overwrite", out.display()),
        ));
    }
    write_unsigned(out, &Directory::new(name))?;
    outln!(
        "empty directory for consortium {name:?} written to {}",
        out.display()
    );
    Ok(())
}

/// `consortium add`: a member from a node's data dir.
fn add(directory: &Path, data_dir: &Path, addresses: &[String]) -> Result<()> {
    let mut dir = read_unsigned(directory)?;
    let config_text = read(&node::DataDir(data_dir.to_path_buf()).config())?;
    let config: node::Config = toml::from_str(&config_text).map_err(|e| {
        Failure::new(
            Code::BadConfig,
            format!("{}: {}", data_dir.display(), e.message()),
        )
    })?;
    let peer = peer_id_of(&config.node_key)
        .ok_or_else(|| Failure::new(Code::BadKey, "node key is not a valid ed25519 key"))?;
    for a in addresses {
        a.parse::<libp2p::Multiaddr>()
            .map_err(|e| Failure::new(Code::BadAddress, format!("{a}: {e}")))?;
    }
    dir.add_member(Member {
        name: config.name.clone(),
        peer_id: peer.to_string(),
        addresses: addresses.to_vec(),
        signing_key: config.node_key,
    })
    .map_err(|e| Failure::from_layer(e.error_code(), e))?;
    dir.serial = next_serial(dir.serial).ok_or_else(|| {
        Failure::new(
            Code::BadDirectory,
            format!(
                "{} has serial {}, the highest a directory can have: no later one can follow it; start a new directory with `consortium create`",
                directory.display(),
                dir.serial
            ),
        )
    })?;
    write_unsigned(directory, &dir)?;
    outln!(
        "added {} ({peer}) to {}; sign it again to publish",
        config.name,
        directory.display()
    );
    Ok(())
}

/// `consortium sign`.
fn sign(authority_key: &Path, directory: &Path, out: &Path) -> Result<()> {
    let authority = keys::load(authority_key, Role::Authority)?;
    let mut dir = read_unsigned(directory)?;
    dir.issued_at = unix_now();
    dir.validate()
        .map_err(|e| Failure::from_layer(e.error_code(), e))?;
    let (serial, members) = (dir.serial, dir.members.len());
    write(out, &dir.sign(&authority).to_text())?;
    outln!(
        "directory serial {serial} with {members} members signed into {}",
        out.display()
    );
    outln!("authority: {}", authority.public());
    Ok(())
}

/// `consortium show`: a signed or unsigned directory.
fn show(directory: &Path, authority: Option<&str>, json: bool) -> Result<()> {
    let text = read(directory)?;
    let (dir, signer) = match toml::from_str::<Directory>(&text) {
        Ok(dir) => (dir, None),
        Err(_) => {
            let authority = authority.map(keys::parse_public).transpose()?;
            let (dir, signer) = verify_signed(&text, authority)?;
            (dir, Some(signer))
        }
    };
    if json {
        let mut value = serde_json::to_value(&dir).expect("a directory serializes");
        value["signed_by"] = serde_json::json!(signer.map(|s| s.to_hex()));
        crate::stdout::json(&value);
        return Ok(());
    }
    outln!(
        "consortium {:?}, serial {}, {} members",
        dir.consortium,
        dir.serial,
        dir.members.len()
    );
    match signer {
        Some(s) => outln!("signed by authority {s}"),
        None => outln!("UNSIGNED: sign it with `witmed consortium sign`"),
    }
    for m in &dir.members {
        outln!("  {:<20} {} {}", m.name, m.peer_id, m.addresses.join(" "));
    }
    Ok(())
}

/// `consortium install` at a node.
fn install(data_dir: &Path, authority: Option<&str>, file: &Path) -> Result<()> {
    let node = local_node::open(data_dir)?;
    let authority: PublicKey = match (pinned_authority(data_dir)?, authority) {
        (Some(p), Some(a)) if p.to_hex() != a.trim() => {
            return Err(Failure::new(
                Code::AuthorityMismatch,
                format!("this node trusts consortium authority {p}, not {a}"),
            ))
        }
        (Some(p), _) => p,
        (None, Some(a)) => a
            .trim()
            .parse()
            .map_err(|e| Failure::new(Code::BadPublicKey, e))?,
        (None, None) => {
            return Err(Failure::new(
                Code::MissingAuthority,
                "first install: give --authority HEX to pin the consortium authority",
            ))
        }
    };
    // Read once: the text installed is the text verified.
    let text = read(file)?;
    let (candidate, _) = verify_signed(&text, Some(authority))?;
    let current = installed(data_dir, &authority)?;
    let accepted = directory::accept_update(current.as_ref(), candidate)
        .map_err(|e| Failure::from_layer(e.error_code(), e))?;
    // Files and seal together: the node pins the authority and seals the
    // directory's serial and digest, so an older copy is refused at open.
    node.install_consortium(authority, &text, &accepted, unix_now())
        .map_err(|e| Failure::new(Code::InstallFailed, e))?;
    outln!(
        "directory serial {} installed ({} members)",
        accepted.serial,
        accepted.members.len()
    );
    Ok(())
}

/// The directory installed at a node, if any, verified against the pinned authority.
pub fn installed_at(data_dir: &Path) -> Result<Option<Directory>> {
    match pinned_authority(data_dir)? {
        Some(authority) => installed(data_dir, &authority),
        None => Ok(None),
    }
}

/// The consortium authority a node pinned at its first install, if it has one.
fn pinned_authority(data_dir: &Path) -> Result<Option<PublicKey>> {
    let path = data_dir.join("consortium.authority");
    if !path.exists() {
        return Ok(None);
    }
    let hex = crate::files::read_text(&path, crate::files::MAX_KEY_FILE_BYTES)?;
    keys::parse_public(hex.trim()).map(Some)
}

/// The directory installed at a node, if any.
fn installed(data_dir: &Path, authority: &PublicKey) -> Result<Option<Directory>> {
    let path = data_dir.join("consortium.signed");
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(verify_signed(&read(&path)?, Some(*authority))?.0))
}

/// Reads and verifies a signed consortium directory (`authority` as hex pins its signer).
pub fn load_directory(path: &Path, authority: Option<&str>) -> Result<(Directory, PublicKey)> {
    let authority = authority.map(keys::parse_public).transpose()?;
    verify_signed(&read(path)?, authority)
}

/// Verifies a signed directory's text; without `authority` its own signer is
/// accepted (and returned, so the caller can show whom it trusted).
fn verify_signed(text: &str, authority: Option<PublicKey>) -> Result<(Directory, PublicKey)> {
    let envelope = directory::parse_signed_directory(text)
        .map_err(|e| Failure::from_layer(e.error_code(), e))?;
    let signer = authority.unwrap_or(envelope.signer);
    let dir = directory::verify_directory(&envelope, &signer)
        .map_err(|e| Failure::from_layer(e.error_code(), e))?;
    Ok((dir, signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_stop_where_toml_integers_end() {
        assert_eq!(next_serial(0), Some(1));
        assert_eq!(next_serial(i64::MAX as u64 - 1), Some(i64::MAX as u64));
        assert_eq!(next_serial(i64::MAX as u64), None);
        assert_eq!(next_serial(u64::MAX), None);
    }
}
