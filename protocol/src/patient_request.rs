//! The message a patient signs to make one request of a node's HTTP API: plain text, so a browser's WebCrypto can sign it too.
//!
//! A request carries, in headers, the patient's pseudonym at the node, the
//! time it was made, a fresh nonce and an Ed25519 signature by the key the
//! node enrolled for that patient over [`message`]: a domain line, then the
//! version, the node's id, the pseudonym, the method, the path with its
//! query, the time, the nonce and the SHA-256 of the body, one per line.
//! Binding the node, the method, the path and the body means a signature
//! cannot be replayed at another node, on another route or with another
//! body; the time and nonce let the node refuse an old or repeated request.
//! No password or secret is stored at the node: only the public key.

/// The first line of every signed request.
pub const DOMAIN: &str = "witmed/patient-request";

/// Today's version of the message layout.
pub const VERSION: u32 = 1;

/// Header carrying the patient's pseudonym (hex).
pub const HEADER_PATIENT: &str = "x-witmed-patient";
/// Header carrying the request's unix time in seconds.
pub const HEADER_TIME: &str = "x-witmed-time";
/// Header carrying a fresh random nonce (16 to 64 hex characters).
pub const HEADER_NONCE: &str = "x-witmed-nonce";
/// Header carrying the Ed25519 signature (hex, 64 bytes) over [`message`].
pub const HEADER_SIGNATURE: &str = "x-witmed-signature";

/// What a patient's signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The node's id (hex of its public key): the request is for this node only.
    pub node: &'a str,
    /// The patient's pseudonym at that node (hex).
    pub patient: &'a str,
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path with its query string, as sent (`/api/v1/patient/observations?code=8867-4`).
    pub path: &'a str,
    /// Unix seconds when the patient made it.
    pub time: i64,
    /// A fresh random nonce, hex.
    pub nonce: &'a str,
    /// SHA-256 of the body (of the empty string for a request without one).
    pub body_sha256: [u8; 32],
}

/// The exact bytes signed: lines joined by `\n`, no trailing newline.
pub fn message(r: &Request<'_>) -> Vec<u8> {
    [
        DOMAIN.to_string(),
        VERSION.to_string(),
        r.node.to_string(),
        r.patient.to_string(),
        r.method.to_string(),
        r.path.to_string(),
        r.time.to_string(),
        r.nonce.to_string(),
        hex::encode(r.body_sha256),
    ]
    .join("\n")
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>() -> Request<'a> {
        Request {
            node: "ab",
            patient: "cd",
            method: "GET",
            path: "/api/v1/patient/me",
            time: 1_700_000_000,
            nonce: "00ff",
            body_sha256: [0; 32],
        }
    }

    #[test]
    fn the_message_is_the_documented_lines() {
        let text = String::from_utf8(message(&request())).unwrap();
        assert_eq!(
            text,
            format!(
                "witmed/patient-request\n1\nab\ncd\nGET\n/api/v1/patient/me\n1700000000\n00ff\n{}",
                "0".repeat(64)
            )
        );
    }

    #[test]
    fn every_field_changes_the_message() {
        let base = message(&request());
        let changed = [
            Request {
                node: "ac",
                ..request()
            },
            Request {
                patient: "ce",
                ..request()
            },
            Request {
                method: "POST",
                ..request()
            },
            Request {
                path: "/api/v1/patient/consents",
                ..request()
            },
            Request {
                time: 1_700_000_001,
                ..request()
            },
            Request {
                nonce: "00fe",
                ..request()
            },
            Request {
                body_sha256: [1; 32],
                ..request()
            },
        ];
        for other in changed {
            assert_ne!(message(&other), base, "{other:?}");
        }
    }
}
