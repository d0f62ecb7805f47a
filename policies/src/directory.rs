//! The consortium directory: the member hospitals, signed by the consortium authority.
//!
//! Each [`Member`] names a hospital, its node's libp2p peer id and addresses,
//! and the node's identity key, which signs the node's answers. The authority
//! signs the whole [`Directory`]; a node trusts another hospital's node only
//! through a directory that [`verify_directory`] accepted, and replaces the
//! directory in force only through [`accept_update`], which refuses any
//! directory whose serial is not higher, so an old signed directory (one that
//! still lists a removed member) cannot be replayed.
//!
//! Peer ids and multiaddrs are plain strings here: this crate does no
//! networking, and the node crate parses them. Signing bumps nothing: whoever
//! edits the directory sets `serial` and `issued_at` before signing.
//!
//! A directory of [`MAX_MEMBERS`] hospitals is far larger than the
//! [`MAX_SIGNED_BYTES`](crate::MAX_SIGNED_BYTES) bound of the other signed
//! objects, so directories have their own bound, [`MAX_DIRECTORY_BYTES`], and
//! their own parsers, [`parse_signed_directory`] and
//! [`parse_signed_directory_bytes`]. [`Directory::validate`] refuses any
//! directory whose signed form would not fit, so every valid directory can be
//! signed, sent and read back.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use witmed_crypto::envelope;
use witmed_crypto::{Envelope, KeyPair, PublicKey};

use crate::error::{Error, Object};

/// Directory format version written today.
pub const DIRECTORY_VERSION: u32 = 1;
/// Envelope domain of consortium directories.
pub const DIRECTORY_DOMAIN: &str = "witmed/consortium-directory/v1";
/// Most members a directory may list.
pub const MAX_MEMBERS: usize = 1000;
/// Largest signed directory accepted, in bytes of its text or wire form.
pub const MAX_DIRECTORY_BYTES: usize = 1024 * 1024;
/// Largest encoded directory (the signed payload) accepted. Its text form
/// (base64, 4 characters per 3 bytes, plus at most 1 KiB of JSON fields,
/// signer and signature) always fits in [`MAX_DIRECTORY_BYTES`].
pub const MAX_DIRECTORY_PAYLOAD_BYTES: usize = (MAX_DIRECTORY_BYTES - 1024) / 4 * 3;
/// Longest member or consortium name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest peer id, in bytes (ed25519 peer ids are 52 base58 characters).
pub const MAX_PEER_ID_BYTES: usize = 128;
/// Most addresses one member may list.
pub const MAX_ADDRESSES: usize = 16;
/// Longest address, in bytes.
pub const MAX_ADDRESS_BYTES: usize = 256;

/// One member hospital and how to reach and authenticate its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The hospital's name, unique in the directory; at most [`MAX_NAME_CHARS`] characters.
    pub name: String,
    /// The node's libp2p peer id (base58), unique in the directory.
    pub peer_id: String,
    /// The node's multiaddrs, e.g. `/dns4/node.example.org/tcp/4001`; at least one.
    pub addresses: Vec<String>,
    /// The node's identity key, which signs its answers; unique in the directory.
    pub signing_key: PublicKey,
}

/// The consortium's member hospitals, as signed by the consortium authority.
///
/// In TOML each member is a `[[members]]` table and keys are hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    /// Format version ([`DIRECTORY_VERSION`]).
    pub version: u32,
    /// The consortium's name; an update must keep it.
    pub consortium: String,
    /// Increases with every new directory; an update with a lower or equal serial is refused.
    pub serial: u64,
    /// When the authority signed it (unix seconds); informational.
    pub issued_at: i64,
    /// The member hospitals, in the order they were added.
    pub members: Vec<Member>,
}

impl Directory {
    /// An empty directory of `consortium`: serial 0, issued at 0, no members.
    pub fn new(consortium: &str) -> Directory {
        Directory {
            version: DIRECTORY_VERSION,
            consortium: consortium.to_string(),
            serial: 0,
            issued_at: 0,
            members: Vec::new(),
        }
    }

    /// Adds `member`, refusing one whose name, signing key or peer id another
    /// member already has ([`Error::DuplicateMember`]; nothing is replaced:
    /// [`Directory::remove_member`] first), an invalid entry, and a directory
    /// already holding [`MAX_MEMBERS`] ([`Error::InvalidDirectory`]).
    pub fn add_member(&mut self, member: Member) -> Result<(), Error> {
        check_member(&member).map_err(|reason| {
            let who = match member.name.as_str() {
                "" => "the new member".to_string(),
                name => format!("new member {name:?}"),
            };
            Error::InvalidDirectory(format!("{who}: {reason}"))
        })?;
        if self.members.len() >= MAX_MEMBERS {
            return Err(Error::InvalidDirectory(format!(
                "it already lists {MAX_MEMBERS} members, the most a directory may hold, so {:?} cannot be added",
                member.name
            )));
        }
        let duplicate = |field, value: String, existing: &Member| Error::DuplicateMember {
            field,
            value,
            existing: existing.name.clone(),
        };
        if let Some(existing) = self.member_by_name(&member.name) {
            return Err(duplicate("name", format!("{:?}", member.name), existing));
        }
        if let Some(existing) = self.member_by_key(&member.signing_key) {
            return Err(duplicate(
                "signing key",
                member.signing_key.to_hex(),
                existing,
            ));
        }
        if let Some(existing) = self.member_by_peer(&member.peer_id) {
            return Err(duplicate("peer id", member.peer_id.clone(), existing));
        }
        self.members.push(member);
        Ok(())
    }

    /// Removes and returns the member named `name`.
    pub fn remove_member(&mut self, name: &str) -> Result<Member, Error> {
        let at = self
            .members
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| Error::UnknownMember(name.to_string()))?;
        Ok(self.members.remove(at))
    }

    /// The member whose node signs with `key` (a linear scan: at most [`MAX_MEMBERS`]).
    pub fn member_by_key(&self, key: &PublicKey) -> Option<&Member> {
        self.members.iter().find(|m| m.signing_key == *key)
    }

    /// The member named `name` (exact, case-sensitive match).
    pub fn member_by_name(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The member whose node has the libp2p peer id `peer_id` (exact string match).
    pub fn member_by_peer(&self, peer_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.peer_id == peer_id)
    }

    /// Checks that the directory can be used: the version is
    /// [`DIRECTORY_VERSION`]; the consortium and every member are named (at most
    /// [`MAX_NAME_CHARS`] characters, no control characters, no surrounding
    /// spaces); names, signing keys and peer ids are unique; every member has
    /// 1 to [`MAX_ADDRESSES`] distinct addresses; at most [`MAX_MEMBERS`]
    /// members; and the encoded directory fits in [`MAX_DIRECTORY_PAYLOAD_BYTES`].
    pub fn validate(&self) -> Result<(), Error> {
        if self.version != DIRECTORY_VERSION {
            return Err(Error::UnsupportedVersion {
                what: Object::ConsortiumDirectory,
                found: self.version,
                supported: DIRECTORY_VERSION,
            });
        }
        let invalid = |msg: String| Err(Error::InvalidDirectory(msg));
        if let Err(reason) = check_name(&self.consortium) {
            return invalid(format!("consortium: {reason}"));
        }
        if self.members.len() > MAX_MEMBERS {
            return invalid(format!(
                "it lists {} members, more than the {MAX_MEMBERS} allowed",
                self.members.len()
            ));
        }
        for (i, member) in self.members.iter().enumerate() {
            if let Err(reason) = check_member(member) {
                return invalid(format!("{}: {reason}", label(i, member)));
            }
        }
        let mut names = HashMap::new();
        let mut keys = HashMap::new();
        let mut peers = HashMap::new();
        for (i, m) in self.members.iter().enumerate() {
            if let Some(&j) = names.get(m.name.as_str()) {
                return invalid(format!(
                    "members #{} and #{} are both named {:?}; each member needs its own name",
                    j + 1,
                    i + 1,
                    m.name
                ));
            }
            let clash = if let Some(&j) = keys.get(&m.signing_key) {
                Some((j, "signing key"))
            } else if let Some(&j) = peers.get(m.peer_id.as_str()) {
                Some((j, "peer id"))
            } else {
                None
            };
            if let Some((j, field)) = clash {
                return invalid(format!(
                    "{} has the same {field} as {}; each member needs its own",
                    label(i, m),
                    label(j, &self.members[j])
                ));
            }
            names.insert(m.name.as_str(), i);
            keys.insert(m.signing_key, i);
            peers.insert(m.peer_id.as_str(), i);
        }
        let encoded = postcard::to_stdvec(self)
            .map_err(|e| Error::InvalidDirectory(format!("it does not encode: {e}")))?;
        if encoded.len() > MAX_DIRECTORY_PAYLOAD_BYTES {
            return invalid(format!(
                "it encodes to {} bytes, over the {MAX_DIRECTORY_PAYLOAD_BYTES} bytes a signed directory may hold; list fewer addresses or members",
                encoded.len()
            ));
        }
        Ok(())
    }

    /// Signs the directory with the consortium authority's key, as it is:
    /// call [`Directory::validate`] and set `serial` and `issued_at` first.
    pub fn sign(self, authority: &KeyPair) -> Envelope {
        Envelope::seal(DIRECTORY_DOMAIN, &self, authority)
    }
}

/// Parses the text (file) form of a signed directory, refusing anything over
/// [`MAX_DIRECTORY_BYTES`] before parsing. Verification is a separate step.
pub fn parse_signed_directory(text: &str) -> Result<Envelope, Error> {
    Ok(Envelope::from_text(text, MAX_DIRECTORY_BYTES)?)
}

/// Parses the wire form of a signed directory, refusing anything over
/// [`MAX_DIRECTORY_BYTES`] before parsing. Verification is a separate step.
pub fn parse_signed_directory_bytes(bytes: &[u8]) -> Result<Envelope, Error> {
    Ok(Envelope::from_bytes(bytes, MAX_DIRECTORY_BYTES)?)
}

/// Verifies a signed directory: bounded in size, of the directory domain and
/// version, signed by `authority`, and valid ([`Directory::validate`]).
///
/// Whether it may replace the directory in force is [`accept_update`]'s call.
pub fn verify_directory(envelope: &Envelope, authority: &PublicKey) -> Result<Directory, Error> {
    let directory = open(envelope)?;
    if envelope.signer != *authority {
        return Err(Error::DirectoryNotSignedByAuthority {
            signer: envelope.signer,
        });
    }
    directory.validate()?;
    Ok(directory)
}

/// Accepts `candidate` as the directory in force instead of `current` only if
/// it is valid, of the same consortium and has a higher serial; any directory
/// that is valid is accepted when there is none in force yet.
///
/// Returns the candidate, to be stored as the directory in force.
pub fn accept_update(
    current: Option<&Directory>,
    candidate: Directory,
) -> Result<Directory, Error> {
    candidate.validate()?;
    if let Some(current) = current {
        if candidate.consortium != current.consortium {
            return Err(Error::OtherConsortium {
                expected: current.consortium.clone(),
                found: candidate.consortium,
            });
        }
        if candidate.serial <= current.serial {
            return Err(Error::StaleDirectory {
                serial: candidate.serial,
                current: current.serial,
            });
        }
    }
    Ok(candidate)
}

/// Checks size, domain and signature, decodes the payload and checks its
/// version: `signed::open` with the directory bound instead of `MAX_SIGNED_BYTES`.
fn open(envelope: &Envelope) -> Result<Directory, Error> {
    // An envelope may arrive inside a larger message, not only through
    // `parse_signed_directory`, so the bound is enforced here too.
    if envelope.payload.len() > MAX_DIRECTORY_PAYLOAD_BYTES {
        return Err(envelope::Error::TooLarge {
            len: envelope.payload.len(),
            max: MAX_DIRECTORY_PAYLOAD_BYTES,
        }
        .into());
    }
    crate::signed::open_payload::<Directory>(
        envelope,
        DIRECTORY_DOMAIN,
        Object::ConsortiumDirectory,
    )
}

witmed_crypto::single_version!(Directory, "consortium directory", DIRECTORY_VERSION);

/// How messages name a member: by name, or by position when it has none.
fn label(index: usize, member: &Member) -> String {
    if member.name.is_empty() {
        format!("member #{}", index + 1)
    } else {
        format!("member {:?}", member.name)
    }
}

/// Why `name` cannot name a member or the consortium.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "the name is {chars} characters long, over the {MAX_NAME_CHARS} allowed"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("the name contains control characters".into());
    }
    if name.trim() != name {
        return Err("the name starts or ends with spaces".into());
    }
    Ok(())
}

/// Why one member's own fields are unusable, regardless of the other members.
fn check_member(member: &Member) -> Result<(), String> {
    check_name(&member.name)?;
    let peer = &member.peer_id;
    if peer.is_empty() {
        return Err("the peer id is empty; give the node's libp2p peer id".into());
    }
    if peer.len() > MAX_PEER_ID_BYTES || !peer.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "the peer id {peer:?} is not a libp2p peer id (letters and digits, at most {MAX_PEER_ID_BYTES})"
        ));
    }
    if member.addresses.is_empty() {
        return Err(
            "it has no address; list at least one multiaddr, e.g. /dns4/node.example.org/tcp/4001"
                .into(),
        );
    }
    if member.addresses.len() > MAX_ADDRESSES {
        return Err(format!(
            "it has {} addresses, more than the {MAX_ADDRESSES} allowed",
            member.addresses.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for address in &member.addresses {
        if !address.starts_with('/')
            || address.len() > MAX_ADDRESS_BYTES
            || !address.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "address {address:?} is not a multiaddr (starts with '/', printable ASCII without spaces, at most {MAX_ADDRESS_BYTES} bytes)"
            ));
        }
        if !seen.insert(address.as_str()) {
            return Err(format!("address {address:?} is listed twice"));
        }
    }
    Ok(())
}
