//! Who is asking: hospital staff by a bearer token kept in the data dir, patients by requests signed with their enrolled key.
//!
//! A patient request is checked in this order, and nothing is remembered
//! until the signature verifies: the headers parse; the time is within
//! [`MAX_SKEW_SECONDS`] of the node's clock; a key is enrolled for the
//! pseudonym; the signature over [`patient_request::message`] verifies with
//! that key; only then is the nonce recorded, and a nonce seen before is
//! refused. The nonce memory is bounded: when it is full of nonces still
//! within the time window, requests are refused as busy rather than
//! forgetting a nonce that could then be replayed.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axum::http::HeaderMap;
use witmed_crypto::{Pseudonym, PublicKey};
use witmed_node::node::Node;
use witmed_protocol::patient_request::{self, Request};

use crate::error::ApiError;

/// How far a request's time may be from the node's clock.
pub const MAX_SKEW_SECONDS: u64 = 300;

/// Nonces remembered (each for twice the skew window).
pub const NONCE_CAPACITY: usize = 16_384;

/// The staff token's file in a node's data dir.
pub fn staff_token_path(dir: &Path) -> PathBuf {
    dir.join("admin").join("api.token")
}

/// Reads the staff token, creating it (32 random bytes, hex, mode 0600) the first time.
pub fn staff_token(dir: &Path) -> std::io::Result<String> {
    let path = staff_token_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_staff_token(&path),
        Err(e) => Err(e),
    }
}

fn create_staff_token(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    witmed_crypto::fill_random(&mut bytes)
        .map_err(|_| std::io::Error::other("the OS random source failed"))?;
    let token = hex::encode(bytes);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    Ok(token)
}

/// Checks `Authorization: Bearer TOKEN` against the node's staff token.
pub fn check_staff(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::StaffUnauthorized("no staff token"))?;
    // Compare digests, so the time taken says nothing about the token.
    if witmed_crypto::sha256(given.trim().as_bytes()) == witmed_crypto::sha256(token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::StaffUnauthorized("wrong staff token"))
    }
}

/// The parts of a patient request that are not in its headers.
pub struct Signed<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub body: &'a [u8],
}

/// One patient's nonce.
type Seen = (Pseudonym, String);

/// Nonces of authenticated requests, bounded: a set to look up, and the
/// order they came in (with their time) to forget the old ones.
#[derive(Default)]
pub struct Nonces {
    seen: Mutex<NonceMemory>,
}

#[derive(Default)]
struct NonceMemory {
    set: HashSet<Seen>,
    order: VecDeque<(i64, Seen)>,
}

impl Nonces {
    /// Records a nonce; refuses one seen before, or any when full of live ones.
    fn record(&self, patient: Pseudonym, nonce: &str, now: i64) -> Result<(), ApiError> {
        let mut guard = witmed_node::locks::lock(&self.seen);
        let NonceMemory { set, order } = &mut *guard;
        let horizon = now.saturating_sub(2 * MAX_SKEW_SECONDS as i64);
        while order.front().is_some_and(|(at, _)| *at < horizon) {
            if let Some((_, old)) = order.pop_front() {
                set.remove(&old);
            }
        }
        let key = (patient, nonce.to_string());
        if set.contains(&key) {
            return Err(ApiError::Replayed);
        }
        if set.len() >= NONCE_CAPACITY {
            return Err(ApiError::Busy);
        }
        set.insert(key.clone());
        order.push_back((now, key));
        Ok(())
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::BadHeader(name))
}

fn parse_pseudonym(hex_text: &str) -> Option<Pseudonym> {
    hex_text.parse().ok()
}

fn parse_signature(hex_text: &str) -> Option<[u8; 64]> {
    hex::decode(hex_text).ok()?.try_into().ok()
}

fn valid_nonce(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Authenticates a patient's signed request; returns the patient.
pub fn check_patient(
    node: &Node,
    nonces: &Nonces,
    headers: &HeaderMap,
    signed: &Signed<'_>,
    now: i64,
) -> Result<Pseudonym, ApiError> {
    let patient_hex = header(headers, patient_request::HEADER_PATIENT)?;
    let patient =
        parse_pseudonym(patient_hex).ok_or(ApiError::BadHeader(patient_request::HEADER_PATIENT))?;
    let time: i64 = header(headers, patient_request::HEADER_TIME)?
        .parse()
        .map_err(|_| ApiError::BadHeader(patient_request::HEADER_TIME))?;
    let nonce = header(headers, patient_request::HEADER_NONCE)?;
    if !valid_nonce(nonce) {
        return Err(ApiError::BadHeader(patient_request::HEADER_NONCE));
    }
    let signature = parse_signature(header(headers, patient_request::HEADER_SIGNATURE)?)
        .ok_or(ApiError::BadHeader(patient_request::HEADER_SIGNATURE))?;
    let skew = now.abs_diff(time);
    if skew > MAX_SKEW_SECONDS {
        return Err(ApiError::Stale { skew });
    }
    let key: PublicKey = node
        .consent_registry()
        .enrolled_key(&patient)
        .ok_or(ApiError::NotEnrolled)?;
    let message = patient_request::message(&Request {
        node: &node.id().to_hex(),
        patient: &patient.to_hex(),
        method: signed.method,
        path: signed.path_and_query,
        time,
        nonce,
        body_sha256: witmed_crypto::sha256(signed.body),
    });
    if !key.verify(&message, &signature) {
        return Err(ApiError::BadSignature);
    }
    nonces.record(patient, nonce, now)?;
    Ok(patient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_refused_the_second_time_and_a_full_memory_refuses_rather_than_forgets() {
        let nonces = Nonces::default();
        let alice = Pseudonym([1; 16]);
        let now = 1_700_000_000;
        assert!(nonces.record(alice, "00aa", now).is_ok());
        assert!(matches!(
            nonces.record(alice, "00aa", now + 1),
            Err(ApiError::Replayed)
        ));
        assert!(
            nonces.record(Pseudonym([2; 16]), "00aa", now).is_ok(),
            "per patient"
        );
        for i in 2..NONCE_CAPACITY {
            nonces.record(alice, &format!("{i:032x}"), now).unwrap();
        }
        assert!(matches!(
            nonces.record(alice, "ffff", now),
            Err(ApiError::Busy)
        ));
        // Once the window has passed, the old nonces are forgotten and room returns.
        let later = now + 2 * MAX_SKEW_SECONDS as i64 + 1;
        assert!(nonces.record(alice, "ffff", later).is_ok());
    }
}
