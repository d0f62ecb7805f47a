//! `witmed consortium`: create, extend, sign, show and install the consortium directory.
//!
//! The directory is edited as TOML (unsigned), signed by the consortium
//! authority into a signed file, and installed at each node. A node pins the
//! authority's key at its first install; later directories must be signed by
//! the same key and carry a higher serial.

use std::path::Path;

use witmed_crypto::{KeyPair, PublicKey, Role};
use witmed_policies::directory::{self, Directory, Member};

use crate::Failure;
use witmed_net::client;
use witmed_net::peer_id_of;
use witmed_node::node::{self, Node};
use witmed_node::unix_now;

type Result<T> = std::result::Result<T, Failure>;

fn read(path: &Path) -> Result<String> {
    crate::files::read_text(path, witmed_policies::directory::MAX_DIRECTORY_BYTES)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)
        .map_err(|e| Failure::new("write_failed", format!("{}: {e}", path.display())))
}

fn read_unsigned(path: &Path) -> Result<Directory> {
    toml::from_str(&read(path)?).map_err(|e| {
        Failure::new(
            "bad_directory",
            format!("{}: {}", path.display(), e.message()),
        )
    })
}

fn write_unsigned(path: &Path, dir: &Directory) -> Result<()> {
    write(path, &toml::to_string(dir).expect("directories serialize"))
}

/// `consortium create`.
pub fn create(name: &str, out: &Path) -> Result<()> {
    if out.exists() {
        return Err(Failure::new(
            "exists",
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
pub fn add(directory: &Path, data_dir: &Path, addresses: &[String]) -> Result<()> {
    let mut dir = read_unsigned(directory)?;
    let config_text = read(&node::DataDir(data_dir.to_path_buf()).config())?;
    let config: node::Config = toml::from_str(&config_text).map_err(|e| {
        Failure::new(
            "bad_config",
            format!("{}: {}", data_dir.display(), e.message()),
        )
    })?;
    let peer = peer_id_of(&config.node_key)
        .ok_or_else(|| Failure::new("bad_key", "node key is not a valid ed25519 key"))?;
    for a in addresses {
        a.parse::<libp2p::Multiaddr>()
            .map_err(|e| Failure::new("bad_address", format!("{a}: {e}")))?;
    }
    dir.add_member(Member {
        name: config.name.clone(),
        peer_id: peer.to_string(),
        addresses: addresses.to_vec(),
        signing_key: config.node_key,
    })
    .map_err(|e| Failure::new(e.error_code(), e))?;
    dir.serial += 1;
    write_unsigned(directory, &dir)?;
    outln!(
        "added {} ({peer}) to {}; sign it again to publish",
        config.name,
        directory.display()
    );
    Ok(())
}

/// `consortium sign`.
pub fn sign(authority_key: &Path, directory: &Path, out: &Path) -> Result<()> {
    let authority = KeyPair::load_role(authority_key, Role::Authority)
        .map_err(|e| Failure::new("bad_key", e))?;
    let mut dir = read_unsigned(directory)?;
    dir.issued_at = unix_now();
    dir.validate()
        .map_err(|e| Failure::new(e.error_code(), e))?;
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
pub fn show(directory: &Path, authority: Option<&str>, json: bool) -> Result<()> {
    let text = read(directory)?;
    let (dir, signer) = match toml::from_str::<Directory>(&text) {
        Ok(dir) => (dir, None),
        Err(_) => {
            let (dir, signer) = load_directory(directory, authority)?;
            (dir, Some(signer))
        }
    };
    if json {
        let mut value = serde_json::to_value(&dir).expect("a directory serializes");
        value["signed_by"] = serde_json::json!(signer.map(|s| s.to_hex()));
        outln!(
            "{}",
            serde_json::to_string_pretty(&value).expect("output serializes")
        );
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
pub fn install(data_dir: &Path, authority: Option<&str>, file: &Path) -> Result<()> {
    let node = Node::open(data_dir, unix_now()).map_err(|e| Failure::new("node_open_failed", e))?;
    let pinned_path = data_dir.join("consortium.authority");
    let pinned: Option<PublicKey> = match std::fs::read_to_string(&pinned_path) {
        Ok(hex) => Some(
            hex.trim()
                .parse()
                .map_err(|e| Failure::new("bad_public_key", e))?,
        ),
        Err(_) => None,
    };
    let authority: PublicKey = match (pinned, authority) {
        (Some(p), Some(a)) if p.to_hex() != a.trim() => {
            return Err(Failure::new(
                "authority_mismatch",
                format!("this node trusts consortium authority {p}, not {a}"),
            ))
        }
        (Some(p), _) => p,
        (None, Some(a)) => a
            .trim()
            .parse()
            .map_err(|e| Failure::new("bad_public_key", e))?,
        (None, None) => {
            return Err(Failure::new(
                "missing_authority",
                "first install: give --authority HEX to pin the consortium authority",
            ))
        }
    };
    let (candidate, _) = load_directory(file, Some(&authority.to_hex()))?;
    let current = installed(data_dir, &authority)?;
    let accepted = directory::accept_update(current.as_ref(), candidate)
        .map_err(|e| Failure::new(e.error_code(), e))?;
    // Files and seal together: the node pins the authority and seals the
    // directory's serial and digest, so an older copy is refused at open.
    node.install_consortium(authority, &read(file)?, &accepted, unix_now())
        .map_err(|e| Failure::new("install_failed", e))?;
    outln!(
        "directory serial {} installed ({} members)",
        accepted.serial,
        accepted.members.len()
    );
    Ok(())
}

/// The directory installed at a node, if any, verified against the pinned authority.
pub fn installed_at(data_dir: &Path) -> Result<Option<Directory>> {
    let pinned_path = data_dir.join("consortium.authority");
    let Ok(hex) = std::fs::read_to_string(&pinned_path) else {
        return Ok(None);
    };
    let authority: PublicKey = hex
        .trim()
        .parse()
        .map_err(|e| Failure::new("bad_public_key", e))?;
    installed(data_dir, &authority)
}

/// The directory installed at a node, if any.
pub fn installed(data_dir: &Path, authority: &PublicKey) -> Result<Option<Directory>> {
    let path = data_dir.join("consortium.signed");
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(load_directory(&path, Some(&authority.to_hex()))?.0))
}

/// Reads and verifies a signed consortium directory (`authority` as hex pins its signer).
pub fn load_directory(path: &Path, authority: Option<&str>) -> Result<(Directory, PublicKey)> {
    let authority = authority
        .map(|hex| {
            hex.parse::<PublicKey>()
                .map_err(|e| Failure::new("bad_public_key", e))
        })
        .transpose()?;
    client::load_directory(path, authority).map_err(|e| Failure::new(e.code(), e))
}
