//! Keys and ids from the command line: key files, hex public keys, pseudonyms, fresh random ids.

use std::path::Path;

use witmed_crypto::{KeyPair, Pseudonym, PublicKey, Role};

use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::files::{read_text, MAX_KEY_FILE_BYTES};

/// The key pair in `path`, which must be of `role`.
pub fn load(path: &Path, role: Role) -> Result<KeyPair> {
    KeyPair::load_role(path, role).map_err(|e| Failure::new(Code::BadKey, e))
}

/// A public key from a file: the one-line hex file `keygen --public-out` writes,
/// or (still accepted) the holder's key file, of which only the public half is used.
pub fn public_from_file(path: &Path, role: Role) -> Result<PublicKey> {
    // A key file is a few hundred bytes; anything much larger is not one.
    let text = read_text(path, MAX_KEY_FILE_BYTES)?;
    match text.trim().parse::<PublicKey>() {
        Ok(public) => Ok(public),
        Err(_) => Ok(load(path, role)?.public()),
    }
}

/// A public key given in hex.
pub fn parse_public(hex: &str) -> Result<PublicKey> {
    hex.parse().map_err(|e| Failure::new(Code::BadPublicKey, e))
}

/// A patient's pseudonym given in hex.
pub fn parse_pseudonym(s: &str) -> Result<Pseudonym> {
    s.parse().map_err(|e| Failure::new(Code::BadPseudonym, e))
}

/// A fresh random id (16 bytes, hex) for a token or a re-enrolment.
pub fn random_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    witmed_crypto::fill_random(&mut bytes)
        .map_err(|_| Failure::new(Code::RandomFailed, "OS random source failed"))?;
    Ok(hex::encode(bytes))
}
