//! The harnesses: one per decoder of untrusted input, each checking totality and round trips.
//!
//! Most inputs start with a *mode* byte that picks how the rest is used:
//!
//! * **text / bytes**: the input as it arrives (a file, a wire message).
//! * **signed payload**: the rest is a payload that the harness signs with
//!   the key the verifier trusts, so mutated payloads pass the signature
//!   check and reach the payload decoder and the content checks behind it,
//!   which a forger could only reach with a stolen key but an honest
//!   signer's bug (or a compromised patient or authority key) can.
//! * **typed**: the rest drives [`crate::generate::value`] to build a typed
//!   value, which is signed and sent through the real encoder and decoder;
//!   whatever decodes must equal what was encoded.
//!
//! Each harness mirrors the order of checks in the code that receives the
//! input (`node/src/net/server.rs`, `client.rs`, `encrypted/study.rs`,
//! `node.rs`...), calling the same public functions.

use std::fmt::Display;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::Unstructured;
use libp2p::request_response::Codec as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use witmed_crypto::fhe::{Ciphertext, ClientKey, CompactPublicKey};
use witmed_crypto::{Envelope, KeyPair, PublicKey};
use witmed_import::{fhir, physionet};
use witmed_net::codec::{self, Codec};
use witmed_policies::consent::{self, Revocation, Token};
use witmed_policies::credential::{self, Credential, CREDENTIAL_DOMAIN};
use witmed_policies::directory::{self, Directory};
use witmed_policies::policy::{self, NodePolicy, POLICY_DOMAIN};
use witmed_protocol::answer::Answer;
use witmed_protocol::encrypted::{
    Contribution, EncryptedTotal, Ready, Receipt, SealedShare, StudyAnnouncement,
    ENCRYPTED_VERSION, READY_DOMAIN, RECEIPT_DOMAIN, STUDY_DOMAIN,
};
use witmed_protocol::query::Query;
use witmed_protocol::wire::{NodeResponse, Outcome, QueryRequest, QUERY_DOMAIN, RESPONSE_DOMAIN};

use crate::engine::{Target, Verdict};
use crate::generate;
use crate::seeds::{self, keys, NOW, PATIENT};

/// Every harness, in the order `all` runs them.
pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "codec",
            about: "libp2p request/response framing (node/src/net/codec.rs) and the envelope it yields",
            seeds: codec_seeds,
            run: codec_run,
            dictionary: &[],
            max_len: 70 * 1024,
        },
        Target {
            name: "wire-request",
            about: "a researcher's signed QueryRequest as a node decodes it (protocol/src/wire.rs, net/server.rs)",
            seeds: wire_request_seeds,
            run: wire_request_run,
            dictionary: QUERY_WORDS,
            max_len: 66 * 1024,
        },
        Target {
            name: "wire-response",
            about: "a node's signed NodeResponse as a client or aggregator decodes it, ciphertexts included",
            seeds: wire_response_seeds,
            run: wire_response_run,
            dictionary: &[],
            max_len: 66 * 1024,
        },
        Target {
            name: "envelope-binary",
            about: "Envelope::from_bytes (crypto/src/envelope.rs), round trip through both forms",
            seeds: envelope_binary_seeds,
            run: envelope_binary_run,
            dictionary: &[],
            max_len: 66 * 1024,
        },
        Target {
            name: "envelope-text",
            about: "Envelope::from_text (crypto/src/envelope.rs), round trip through both forms",
            seeds: envelope_text_seeds,
            run: envelope_text_run,
            dictionary: JSON_WORDS,
            max_len: 17 * 1024,
        },
        Target {
            name: "consent-token",
            about: "consent tokens (policies/src/consent.rs): text, signed payload, typed",
            seeds: token_seeds,
            run: token_run,
            dictionary: POLICY_WORDS,
            max_len: 17 * 1024,
        },
        Target {
            name: "consent-revocation",
            about: "consent revocations (policies/src/consent.rs): text, signed payload, typed",
            seeds: revocation_seeds,
            run: revocation_run,
            dictionary: POLICY_WORDS,
            max_len: 17 * 1024,
        },
        Target {
            name: "credential",
            about: "researcher credentials (policies/src/credential.rs): text, wire, signed payload, typed",
            seeds: credential_seeds,
            run: credential_run,
            dictionary: POLICY_WORDS,
            max_len: 17 * 1024,
        },
        Target {
            name: "node-policy",
            about: "node policies (policies/src/policy.rs): signed text as node.rs reads it, payload, typed, TOML",
            seeds: policy_seeds,
            run: policy_run,
            dictionary: POLICY_WORDS,
            max_len: 65 * 1024,
        },
        Target {
            name: "directory",
            about: "consortium directories (policies/src/directory.rs): signed text, signed payload, typed, TOML",
            seeds: directory_seeds,
            run: directory_run,
            dictionary: POLICY_WORDS,
            max_len: 64 * 1024,
        },
        Target {
            name: "query-toml",
            about: "Query::from_toml (protocol/src/query.rs) and its TOML and wire round trips",
            seeds: query_toml_seeds,
            run: query_toml_run,
            dictionary: QUERY_WORDS,
            max_len: 65 * 1024,
        },
        Target {
            name: "query-wire",
            about: "Query::from_wire (protocol/src/query.rs): postcard bytes and typed queries",
            seeds: query_wire_seeds,
            run: query_wire_run,
            dictionary: QUERY_WORDS,
            max_len: 65 * 1024,
        },
        Target {
            name: "study-key",
            about: "study public and client keys (crypto/src/fhe.rs) and signed study announcements",
            seeds: study_key_seeds,
            run: study_key_run,
            dictionary: &[],
            max_len: 40 * 1024,
        },
        Target {
            name: "ciphertext",
            about: "Ciphertext::from_bytes, addition and decryption (crypto/src/fhe.rs)",
            seeds: ciphertext_seeds,
            run: ciphertext_run,
            dictionary: &[],
            max_len: 40 * 1024,
        },
        Target {
            name: "encrypted-messages",
            about: "Contribution, EncryptedTotal (protocol/src/encrypted.rs) and Answer (answer.rs) stored and wire forms",
            seeds: encrypted_messages_seeds,
            run: encrypted_messages_run,
            dictionary: &[],
            max_len: 40 * 1024,
        },
        Target {
            name: "key-file",
            about: "key files (crypto/src/keys.rs KeyPair::load)",
            seeds: key_file_seeds,
            run: key_file_run,
            dictionary: KEY_WORDS,
            max_len: 4 * 1024,
        },
        Target {
            name: "local-files",
            about: "node.toml (node/src/node.rs), study.toml (encrypted/study.rs), and keys, pseudonyms, roles given on the command line",
            seeds: local_files_seeds,
            run: local_files_run,
            dictionary: KEY_WORDS,
            max_len: 4 * 1024,
        },
        Target {
            name: "fhir",
            about: "FHIR R4 bundles, single resources and NDJSON (node/src/import/fhir.rs parse_bytes)",
            seeds: fhir_seeds,
            run: fhir_run,
            dictionary: FHIR_WORDS,
            max_len: 64 * 1024,
        },
        Target {
            name: "physionet-record",
            about: "PhysioNet 2012 set files (node/src/import/physionet.rs parse_record)",
            seeds: physionet_record_seeds,
            run: physionet_record_run,
            dictionary: PHYSIONET_WORDS,
            max_len: 32 * 1024,
        },
        Target {
            name: "physionet-outcomes",
            about: "PhysioNet 2012 outcomes files (node/src/import/physionet.rs parse_outcomes)",
            seeds: physionet_outcomes_seeds,
            run: physionet_outcomes_run,
            dictionary: PHYSIONET_WORDS,
            max_len: 32 * 1024,
        },
        Target {
            name: "device-batch",
            about: "a device's batch of readings, JSON or a FHIR Bundle (protocol/src/device_request.rs parse_body)",
            seeds: device_batch_seeds,
            run: device_batch_run,
            dictionary: DEVICE_WORDS,
            max_len: 66 * 1024,
        },
    ]
}

/// The harness called `name`.
pub fn by_name(name: &str) -> Option<Target> {
    all().into_iter().find(|t| t.name == name)
}

const QUERY_WORDS: &[&str] = &[
    "HMB",
    "DS-C0011849",
    "GRU",
    "count",
    "sum",
    "mean",
    "histogram",
    "quantiles",
    "dp",
    "encrypted",
    "8867-4",
    "age",
    "icu_type",
    "female",
    "latest",
    "max",
    "[privacy]",
    "[bounds]",
    "[cohort]",
    "[feature.observation]",
    "epsilon = ",
    "delta = ",
    "edges = [",
    "bins = ",
    "min_hospitals = ",
    "\"\"\"",
    "'''",
    "[[",
    "]]",
    "= {",
    "}",
    ".",
    "nan",
    "inf",
];
const POLICY_WORDS: &[&str] = &[
    "HMB",
    "NCU",
    "NPU",
    "IRB",
    "GRU",
    "DS-C0011849",
    "count",
    "sum",
    "dp",
    "encrypted",
    "vital-signs",
    "labs",
    "demographics",
    "\"witmed_envelope\": 1",
    "\"payload\": \"",
    "\"signature\": \"",
    "\"domain\": \"",
    "witmed/consent-token/v1",
    "[[members]]",
    "serial = ",
    "version = 1",
    "/ip4/127.0.0.1/tcp/1",
    "\\u0000",
    "==",
];
const JSON_WORDS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "1e999",
    "-0",
    "\"witmed_envelope\": ",
    "\"payload\": \"",
    "\"signature\": \"",
    "\"signer\": \"",
    "\"domain\": \"",
    "AAAA",
    "==",
    "=",
];
const KEY_WORDS: &[&str] = &[
    "version = ",
    "role = ",
    "\"patient\"",
    "\"node\"",
    "public_key = ",
    "secret_key = ",
    "\"\"\"",
    "'",
    "[",
    "]",
    "#",
    "\n",
    "00",
    "ff",
];
const FHIR_WORDS: &[&str] = &[
    "\"resourceType\"",
    "\"Patient\"",
    "\"Observation\"",
    "\"Condition\"",
    "\"Encounter\"",
    "\"Bundle\"",
    "\"entry\"",
    "\"resource\"",
    "\"fullUrl\"",
    "\"valueQuantity\"",
    "\"value\"",
    "\"component\"",
    "\"coding\"",
    "\"system\"",
    "\"http://loinc.org\"",
    "\"http://snomed.info/sct\"",
    "\"code\"",
    "\"subject\"",
    "\"reference\"",
    "\"effectiveDateTime\"",
    "\"birthDate\"",
    "\"deceasedDateTime\"",
    "\"deceasedBoolean\"",
    "\"gender\"",
    "\"period\"",
    "\"start\"",
    "\"end\"",
    "\"urn:uuid:",
    "\"Patient/",
    "\"1970-01-01T00:00:00Z\"",
    "\"9999-12-31\"",
    "\"0000\"",
    "-1e308",
    "1e308",
    "null",
    "[]",
    "{}",
    "\n",
    "\r\n",
];
const PHYSIONET_WORDS: &[&str] = &[
    "00:00,",
    "47:59,",
    "99999:59,",
    "-1:00,",
    "RecordID,",
    "Age,",
    "Gender,",
    "Height,",
    "ICUType,",
    "Weight,",
    "HR,",
    "MechVent,",
    "Time,Parameter,Value\n",
    "\n",
    "\r\n",
    ",",
    "\"",
    "-1",
    "nan",
    "inf",
    "1e308",
    "SAPS-I",
    "In-hospital_death",
];

// ---------------------------------------------------------------- helpers

/// The outcome class of an error: the first words of its message, stopping
/// at the first that could be input echoed back (a quote, a number, a code,
/// a name, a key in hex), so that echoed inputs do not make every input "new".
fn class(error: impl Display) -> String {
    let text = error.to_string();
    let plain = |word: &&str| {
        word.chars()
            .all(|c| c.is_ascii_lowercase() || "._:,;()/-".contains(c))
    };
    text.split_whitespace()
        .take_while(plain)
        .take(8)
        .collect::<Vec<_>>()
        .join(" ")
}

fn accepted(what: &str) -> Verdict {
    Ok(format!("accepted {what}"))
}

/// Splits off the mode byte (mode 0 for an empty input).
fn mode(data: &[u8], modes: u8) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (first % modes, rest),
        None => (0, data),
    }
}

fn with_mode(mode: u8, body: impl AsRef<[u8]>) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(body.as_ref());
    out
}

fn postcard_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).unwrap_or_default()
}

/// Signs raw payload bytes, as an honest signer's buggy encoder (or a thief of its key) could.
fn seal_raw(domain: &str, payload: &[u8], key: &KeyPair) -> Envelope {
    let mut envelope = Envelope {
        version: witmed_crypto::envelope::ENVELOPE_VERSION,
        domain: domain.to_string(),
        payload: payload.to_vec(),
        signer: key.public(),
        signature: [0; 64],
    };
    envelope.signature = key.sign_raw(&envelope.signing_message());
    envelope
}

/// Builds a typed value from fuzz bytes; `None` when the bytes spell nothing.
fn typed<T: DeserializeOwned>(data: &[u8], words: &'static [&'static str]) -> Option<T> {
    generate::value(&mut Unstructured::new(data), words).ok()
}

/// Property: the canonical encodings of two values are the same.
fn same_encoding<T: Serialize>(what: &str, a: &T, b: &T) -> Result<(), String> {
    if postcard_bytes(a) != postcard_bytes(b) {
        return Err(format!(
            "{what} changed in a round trip: {} became {}",
            hex::encode(postcard_bytes(a)),
            hex::encode(postcard_bytes(b))
        ));
    }
    Ok(())
}

/// Property: an envelope survives both of its forms unchanged.
fn envelope_round_trips(envelope: &Envelope) -> Result<(), String> {
    let bytes = envelope.to_bytes();
    match Envelope::from_bytes(&bytes, usize::MAX) {
        Ok(back) if back == *envelope => {}
        Ok(_) => return Err("envelope changed in a binary round trip".into()),
        Err(e) => return Err(format!("envelope's own binary form does not parse: {e}")),
    }
    let text = envelope.to_text();
    match Envelope::from_text(&text, usize::MAX) {
        Ok(back) if back == *envelope => Ok(()),
        Ok(_) => Err("envelope changed in a text round trip".into()),
        Err(e) => Err(format!(
            "envelope's own text form does not parse: {e}: {text}"
        )),
    }
}

fn utf8(data: &[u8]) -> Result<&str, Verdict> {
    // Files are read with read_to_string, which refuses anything but UTF-8.
    std::str::from_utf8(data).map_err(|_| Ok("not utf-8".to_string()))
}

fn enrolled(pseudonym: &witmed_crypto::Pseudonym) -> Option<PublicKey> {
    (*pseudonym == PATIENT).then(|| keys().patient.public())
}

// ---------------------------------------------------------------- codec and wire

fn read_request(bytes: &[u8]) -> std::io::Result<Envelope> {
    let mut io = futures::io::Cursor::new(bytes);
    futures::executor::block_on(Codec::default().read_request(&codec::protocol(), &mut io))
}

fn read_response(bytes: &[u8]) -> std::io::Result<Envelope> {
    let mut io = futures::io::Cursor::new(bytes);
    futures::executor::block_on(Codec::default().read_response(&codec::protocol(), &mut io))
}

fn write_request(envelope: &Envelope) -> std::io::Result<Vec<u8>> {
    let mut io = futures::io::Cursor::new(Vec::new());
    futures::executor::block_on(Codec::default().write_request(
        &codec::protocol(),
        &mut io,
        envelope.clone(),
    ))?;
    Ok(io.into_inner())
}

fn codec_seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = seeds::queries()
        .into_iter()
        .map(|q| {
            with_mode(
                0,
                seeds::query_request(q).sign(&keys().researcher).to_bytes(),
            )
        })
        .collect();
    out.extend(
        seeds::responses()
            .iter()
            .map(|r| with_mode(1, r.sign(&keys().node).to_bytes())),
    );
    out
}

/// Mode 0: a request stream; mode 1: a response stream.
fn codec_run(data: &[u8]) -> Verdict {
    let (mode, bytes) = mode(data, 2);
    let read = if mode == 0 {
        read_request(bytes)
    } else {
        read_response(bytes)
    };
    let envelope = match read {
        Ok(envelope) => envelope,
        Err(e) => return Ok(class(e)),
    };
    let written = write_request(&envelope).map_err(|e| format!("cannot write back: {e}"))?;
    let again = if mode == 0 {
        read_request(&written)
    } else {
        read_response(&written)
    };
    match again {
        Ok(back) if back == envelope => {}
        Ok(_) => return Err("envelope changed in a codec round trip".into()),
        Err(e) => return Err(format!("codec cannot read what it wrote: {e}")),
    }
    envelope_round_trips(&envelope)?;
    // What the server does next with a request, the client with a response.
    if mode == 0 {
        return Ok(match envelope.open::<QueryRequest>(QUERY_DOMAIN) {
            Ok(_) => "accepted request".into(),
            Err(e) => class(e),
        });
    }
    Ok(match envelope.open::<NodeResponse>(RESPONSE_DOMAIN) {
        Ok(_) => "accepted response".into(),
        Err(e) => class(e),
    })
}

fn wire_request_seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = seeds::queries()
        .into_iter()
        .map(|q| with_mode(0, postcard_bytes(&seeds::query_request(q))))
        .collect();
    out.push(with_mode(1, [7u8; 200]));
    out.push(with_mode(1, (0..=255u8).collect::<Vec<_>>()));
    out
}

/// Mode 0: a signed payload; mode 1: a typed request. Both go through the
/// codec and then the checks `net/server.rs` makes before any query runs.
fn wire_request_run(data: &[u8]) -> Verdict {
    let (mode, rest) = mode(data, 2);
    let generated: Option<QueryRequest> = if mode == 1 {
        match typed(rest, QUERY_WORDS) {
            Some(request) => Some(request),
            None => return Ok("not generated".into()),
        }
    } else {
        None
    };
    let envelope = match &generated {
        Some(request) => request.sign(&keys().researcher),
        None => seal_raw(QUERY_DOMAIN, rest, &keys().researcher),
    };
    let bytes = envelope.to_bytes();
    let received = match read_request(&bytes) {
        Ok(received) => received,
        Err(e) if bytes.len() > witmed_protocol::wire::MAX_REQUEST_BYTES => return Ok(class(e)),
        Err(e) => return Err(format!("codec refused a well-formed request: {e}")),
    };
    if received != envelope {
        return Err("request changed through the codec".into());
    }
    let request: QueryRequest = match received.open(QUERY_DOMAIN) {
        Ok(request) => request,
        Err(e) => return Ok(class(e)),
    };
    if let Some(generated) = &generated {
        same_encoding("query request", generated, &request)?;
    }
    let _ = request.query.digest();
    if let Err(e) = request.query.validate() {
        return Ok(class(e));
    }
    let credential = match witmed_policies::parse_signed_bytes(&request.credential) {
        Ok(credential) => credential,
        Err(e) => return Ok(class(e)),
    };
    match credential::verify_credential(&credential, &[keys().authority.public()], NOW) {
        Ok(_) => accepted("request"),
        Err(e) => Ok(class(e)),
    }
}

fn wire_response_seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = seeds::responses()
        .iter()
        .map(|r| with_mode(0, postcard_bytes(r)))
        .collect();
    out.push(with_mode(1, [3u8; 300]));
    out
}

/// Mode 0: a signed payload; mode 1: a typed response. Then what the client
/// (`net/client.rs` verify), the aggregator (`encrypted/aggregate.rs`) and
/// the researcher (`encrypted/reveal.rs`) do with each outcome.
fn wire_response_run(data: &[u8]) -> Verdict {
    let (mode, rest) = mode(data, 2);
    let generated: Option<NodeResponse> = if mode == 1 {
        match typed(rest, &["budget_exhausted", "St Elsewhere", "refused"]) {
            Some(response) => Some(response),
            None => return Ok("not generated".into()),
        }
    } else {
        None
    };
    let envelope = match &generated {
        Some(response) => response.sign(&keys().node),
        None => seal_raw(RESPONSE_DOMAIN, rest, &keys().node),
    };
    let received = match read_response(&envelope.to_bytes()) {
        Ok(received) => received,
        Err(e) => return Ok(class(e)),
    };
    let response: NodeResponse = match received.open(RESPONSE_DOMAIN) {
        Ok(response) => response,
        Err(e) => return Ok(class(e)),
    };
    if let Some(generated) = &generated {
        same_encoding("node response", generated, &response)?;
    }
    match &response.outcome {
        // The client takes the answer as it comes (its version is not checked
        // there): only the encoding must round trip.
        Outcome::Answered(answer) => {
            let back: Answer = postcard::from_bytes(&answer.to_bytes())
                .map_err(|e| format!("an answer's own bytes do not parse: {e}"))?;
            same_encoding("answer", answer, &back)?;
            accepted("answer")
        }
        Outcome::Refused { .. } => accepted("refusal"),
        Outcome::StudyInstalled => accepted("study installed"),
        Outcome::Ready(ready) => match ready.open::<Ready>(READY_DOMAIN) {
            Ok(_) => accepted("ready"),
            Err(e) => Ok(class(e)),
        },
        Outcome::Sealed(share) => sealed_share_checks(share, 1),
        Outcome::Aggregated(t) => shares_checks(t),
    }
}

/// Parses a ciphertext of `values` values as the aggregator and researcher
/// do, adds it to itself and decrypts it as a total of `contributions`.
fn ciphertext_checks(bytes: &[u8], values: u32, contributions: usize) -> Verdict {
    let ciphertext = match Ciphertext::from_bytes(bytes, values as usize) {
        Ok(c) => c,
        Err(e) => return Ok(class(e)),
    };
    let back = Ciphertext::from_bytes(&ciphertext.to_bytes(), values as usize)
        .map_err(|e| format!("a ciphertext's own bytes do not parse: {e}"))?;
    if back != ciphertext {
        return Err("ciphertext changed in a round trip".into());
    }
    let mut sum = ciphertext.clone();
    if let Err(e) = sum.add_assign(&ciphertext) {
        return Err(format!("a ciphertext cannot be added to itself: {e}"));
    }
    match seeds::study().0.decrypt(&ciphertext, contributions) {
        Ok(_) => accepted("ciphertext"),
        Err(e) => Ok(class(e)),
    }
}

// ---------------------------------------------------------------- envelopes

fn envelope_binary_seeds() -> Vec<Vec<u8>> {
    vec![
        with_mode(0, seeds::token().sign(&keys().patient).to_bytes()),
        with_mode(0, seeds::signed_credential().to_bytes()),
        with_mode(0, seeds::directory().sign(&keys().consortium).to_bytes()),
        with_mode(1, [5u8; 128]),
    ]
}

/// Mode 0: binary bytes; mode 1: a typed envelope through both forms.
fn envelope_binary_run(data: &[u8]) -> Verdict {
    let (mode, rest) = mode(data, 2);
    if mode == 1 {
        let Some(envelope) = typed::<Envelope>(rest, &["witmed/consent-token/v1"]) else {
            return Ok("not generated".into());
        };
        envelope_round_trips(&envelope)?;
        return accepted("typed envelope");
    }
    match Envelope::from_bytes(rest, 64 * 1024) {
        Ok(envelope) => {
            envelope_round_trips(&envelope)?;
            let _ = envelope.verify(&envelope.domain.clone());
            accepted("envelope")
        }
        Err(e) => Ok(class(e)),
    }
}

fn envelope_text_seeds() -> Vec<Vec<u8>> {
    vec![
        seeds::token().sign(&keys().patient).to_text().into_bytes(),
        seeds::revocation()
            .sign(&keys().patient)
            .to_text()
            .into_bytes(),
        seeds::policy()
            .sign(&keys().hospital)
            .to_text()
            .into_bytes(),
    ]
}

fn envelope_text_run(data: &[u8]) -> Verdict {
    let text = match utf8(data) {
        Ok(text) => text,
        Err(verdict) => return verdict,
    };
    match Envelope::from_text(text, witmed_policies::MAX_SIGNED_BYTES) {
        Ok(envelope) => {
            envelope_round_trips(&envelope)?;
            let _ = envelope.verify(&envelope.domain.clone());
            accepted("envelope")
        }
        Err(e) => Ok(class(e)),
    }
}

// ---------------------------------------------------------------- signed objects

/// How one kind of signed object is signed, parsed and verified.
struct Signed<T> {
    domain: &'static str,
    signer: fn() -> &'static KeyPair,
    /// The text form as the receiving code parses it.
    parse_text: fn(&str) -> Result<Envelope, String>,
    verify: fn(&Envelope) -> Result<T, String>,
    words: &'static [&'static str],
}

/// Modes 0 text, 1 signed payload, 2 typed (signed properly, through the
/// text form, and what verifies must be what was signed), 3 TOML (only
/// for the kinds people edit as TOML; others treat it as text).
fn signed_run<T: Serialize + DeserializeOwned>(
    kind: &Signed<T>,
    data: &[u8],
    toml_check: Option<fn(&str) -> Verdict>,
) -> Verdict {
    let (mode, rest) = mode(data, 4);
    match mode {
        1 => {
            let envelope = seal_raw(kind.domain, rest, (kind.signer)());
            match (kind.verify)(&envelope) {
                Ok(value) if postcard_bytes(&value) != rest => {
                    Err("a non-canonical payload verified".into())
                }
                Ok(_) => accepted("signed payload"),
                Err(e) => Ok(class(e)),
            }
        }
        2 => {
            let Some(value) = typed::<T>(rest, kind.words) else {
                return Ok("not generated".into());
            };
            let payload = postcard_bytes(&value);
            let envelope = seal_raw(kind.domain, &payload, (kind.signer)());
            let text = envelope.to_text();
            let parsed = match (kind.parse_text)(&text) {
                Ok(parsed) => parsed,
                // Only the size bound may refuse a well-formed object.
                Err(e) if text.len() > 16 * 1024 => return Ok(class(e)),
                Err(e) => return Err(format!("a well-formed signed object does not parse: {e}")),
            };
            if parsed != envelope {
                return Err("signed object changed through its text form".into());
            }
            match (kind.verify)(&parsed) {
                Ok(verified) => {
                    same_encoding("verified object", &value, &verified)?;
                    accepted("typed")
                }
                Err(e) => Ok(class(e)),
            }
        }
        3 if toml_check.is_some() => match (utf8(rest), toml_check) {
            (Ok(text), Some(check)) => check(text),
            (Err(verdict), _) => verdict,
            (Ok(_), None) => Ok("no toml form".into()),
        },
        _ => {
            let text = match utf8(rest) {
                Ok(text) => text,
                Err(verdict) => return verdict,
            };
            let envelope = match (kind.parse_text)(text) {
                Ok(envelope) => envelope,
                Err(e) => return Ok(class(e)),
            };
            match (kind.verify)(&envelope) {
                Ok(_) => accepted("signed text"),
                Err(e) => Ok(class(e)),
            }
        }
    }
}

fn signed_seeds<T: Serialize>(
    value: &T,
    envelope: &Envelope,
    toml: Option<String>,
) -> Vec<Vec<u8>> {
    let mut out = vec![
        with_mode(0, envelope.to_text()),
        with_mode(1, postcard_bytes(value)),
        with_mode(2, postcard_bytes(value)),
        with_mode(2, [1u8; 160]),
    ];
    if let Some(toml) = toml {
        out.push(with_mode(3, toml));
    }
    out
}

fn parse_signed_text(text: &str) -> Result<Envelope, String> {
    witmed_policies::parse_signed(text).map_err(|e| e.to_string())
}

const TOKEN: Signed<Token> = Signed {
    domain: consent::TOKEN_DOMAIN,
    signer: || &keys().patient,
    parse_text: parse_signed_text,
    verify: |e| {
        consent::verify_token(e, &keys().node.public(), &enrolled, NOW)
            .map(|v| v.token().clone())
            .map_err(|e| format!("{} {e}", e.error_code()))
    },
    words: POLICY_WORDS,
};

fn token_seeds() -> Vec<Vec<u8>> {
    signed_seeds(&seeds::token(), &seeds::token().sign(&keys().patient), None)
}

fn token_run(data: &[u8]) -> Verdict {
    signed_run(&TOKEN, data, None)
}

const REVOCATION: Signed<Revocation> = Signed {
    domain: consent::REVOCATION_DOMAIN,
    signer: || &keys().patient,
    parse_text: parse_signed_text,
    verify: |e| {
        consent::verify_revocation(e, &keys().node.public(), &enrolled)
            .map(|v| v.revocation().clone())
            .map_err(|e| format!("{} {e}", e.error_code()))
    },
    words: POLICY_WORDS,
};

fn revocation_seeds() -> Vec<Vec<u8>> {
    let revocation = seeds::revocation();
    signed_seeds(&revocation, &revocation.clone().sign(&keys().patient), None)
}

fn revocation_run(data: &[u8]) -> Verdict {
    signed_run(&REVOCATION, data, None)
}

const CREDENTIAL: Signed<Credential> = Signed {
    domain: CREDENTIAL_DOMAIN,
    signer: || &keys().authority,
    parse_text: parse_signed_text,
    verify: |e| {
        credential::verify_credential(e, &[keys().authority.public()], NOW)
            .map(|v| v.credential().clone())
            .map_err(|e| format!("{} {e}", e.error_code()))
    },
    words: POLICY_WORDS,
};

fn credential_seeds() -> Vec<Vec<u8>> {
    let mut out = signed_seeds(&seeds::credential(), &seeds::signed_credential(), None);
    // The wire form, as it rides inside a query request or a study announcement.
    out.push(with_mode(3, seeds::signed_credential().to_bytes()));
    out
}

/// Mode 3 is the credential's wire form (`parse_signed_bytes`), as servers
/// receive it inside a query request or a study announcement.
fn credential_run(data: &[u8]) -> Verdict {
    let (mode, rest) = mode(data, 4);
    if mode != 3 {
        return signed_run(&CREDENTIAL, data, None);
    }
    let envelope = match witmed_policies::parse_signed_bytes(rest) {
        Ok(envelope) => envelope,
        Err(e) => return Ok(class(e)),
    };
    match (CREDENTIAL.verify)(&envelope) {
        Ok(_) => accepted("wire credential"),
        Err(e) => Ok(class(e)),
    }
}

const POLICY: Signed<NodePolicy> = Signed {
    domain: POLICY_DOMAIN,
    signer: || &keys().hospital,
    // As node.rs reads policy.signed: the text form under its own, larger bound.
    parse_text: |text| {
        Envelope::from_text(text, witmed_node::node::MAX_POLICY_BYTES).map_err(|e| e.to_string())
    },
    verify: |e| {
        policy::load_policy(e, &keys().hospital.public(), &keys().node.public())
            .map_err(|e| format!("{} {e}", e.error_code()))
    },
    words: POLICY_WORDS,
};

fn policy_seeds() -> Vec<Vec<u8>> {
    let policy = seeds::policy();
    let toml = toml::to_string(&policy).ok();
    signed_seeds(&policy, &policy.clone().sign(&keys().hospital), toml)
}

fn policy_run(data: &[u8]) -> Verdict {
    signed_run(&POLICY, data, Some(policy_toml))
}

/// `witmed policy sign` reads the administrator's TOML: parse, validate, and
/// what is valid must come back the same through TOML.
fn policy_toml(text: &str) -> Verdict {
    let policy: NodePolicy = match toml::from_str(text) {
        Ok(policy) => policy,
        Err(e) => return Ok(class(e.message())),
    };
    if let Err(e) = policy.validate() {
        return Ok(class(e));
    }
    let again = toml::to_string(&policy).map_err(|e| format!("a valid policy has no TOML: {e}"))?;
    let back: NodePolicy =
        toml::from_str(&again).map_err(|e| format!("a valid policy's TOML does not parse: {e}"))?;
    same_encoding("policy", &policy, &back)?;
    accepted("policy toml")
}

const DIRECTORY: Signed<Directory> = Signed {
    domain: directory::DIRECTORY_DOMAIN,
    signer: || &keys().consortium,
    parse_text: |text| directory::parse_signed_directory(text).map_err(|e| e.to_string()),
    verify: |e| {
        directory::verify_directory(e, &keys().consortium.public())
            .map_err(|e| format!("{} {e}", e.error_code()))
    },
    words: POLICY_WORDS,
};

fn directory_seeds() -> Vec<Vec<u8>> {
    let directory = seeds::directory();
    let toml = toml::to_string(&directory).ok();
    signed_seeds(
        &directory,
        &directory.clone().sign(&keys().consortium),
        toml,
    )
}

fn directory_run(data: &[u8]) -> Verdict {
    signed_run(&DIRECTORY, data, Some(directory_toml))
}

/// `witmed consortium add/sign` read the directory as TOML.
fn directory_toml(text: &str) -> Verdict {
    let directory: Directory = match toml::from_str(text) {
        Ok(directory) => directory,
        Err(e) => return Ok(class(e.message())),
    };
    if let Err(e) = directory.validate() {
        return Ok(class(e));
    }
    let again =
        toml::to_string(&directory).map_err(|e| format!("a valid directory has no TOML: {e}"))?;
    let back: Directory = toml::from_str(&again)
        .map_err(|e| format!("a valid directory's TOML does not parse: {e}"))?;
    same_encoding("directory", &directory, &back)?;
    accepted("directory toml")
}

// ---------------------------------------------------------------- queries

fn query_toml_seeds() -> Vec<Vec<u8>> {
    seeds::QUERY_TOMLS
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .collect()
}

/// Property: a valid query survives both of its forms.
fn query_round_trips(query: &Query) -> Result<(), String> {
    let wire = query.to_wire();
    let back = Query::from_wire(&wire)
        .map_err(|e| format!("a valid query's wire form does not parse: {e}"))?;
    same_encoding("query (wire)", query, &back)?;
    let text = query.to_toml();
    let back = Query::from_toml(&text)
        .map_err(|e| format!("a valid query's TOML does not parse: {e}\n{text}"))?;
    same_encoding("query (toml)", query, &back)
}

fn query_toml_run(data: &[u8]) -> Verdict {
    let text = match utf8(data) {
        Ok(text) => text,
        Err(verdict) => return verdict,
    };
    match Query::from_toml(text) {
        Ok(query) => {
            query_round_trips(&query)?;
            accepted("query")
        }
        Err(e) => Ok(class(e)),
    }
}

fn query_wire_seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = seeds::queries()
        .iter()
        .map(|q| with_mode(0, q.to_wire()))
        .collect();
    out.push(with_mode(1, [2u8; 200]));
    out
}

/// Mode 0: wire bytes; mode 1: a typed query.
fn query_wire_run(data: &[u8]) -> Verdict {
    let (mode, rest) = mode(data, 2);
    let wire = if mode == 1 {
        match typed::<Query>(rest, QUERY_WORDS) {
            Some(query) => query.to_wire(),
            None => return Ok("not generated".into()),
        }
    } else {
        rest.to_vec()
    };
    match Query::from_wire(&wire) {
        Ok(query) => {
            query_round_trips(&query)?;
            accepted("query")
        }
        Err(e) => Ok(class(e)),
    }
}

// ---------------------------------------------------------------- encrypted mode

fn study_key_seeds() -> Vec<Vec<u8>> {
    let (client, public) = seeds::study();
    vec![
        with_mode(0, public.to_bytes()),
        with_mode(1, client.to_bytes()),
        with_mode(2, postcard_bytes(&seeds::announcement())),
        with_mode(3, [4u8; 256]),
    ]
}

/// Modes 0 public key bytes, 1 client key bytes, 2 a signed announcement
/// payload through the checks of `encrypted/study.rs` install, 3 a typed announcement.
fn study_key_run(data: &[u8]) -> Verdict {
    let (mode, rest) = mode(data, 4);
    match mode {
        0 => match CompactPublicKey::from_bytes(rest) {
            Ok(key) => {
                let back = CompactPublicKey::from_bytes(&key.to_bytes())
                    .map_err(|e| format!("a public key's own bytes do not parse: {e}"))?;
                if back != key {
                    return Err("public key changed in a round trip".into());
                }
                let _ = key.study_id();
                accepted("public key")
            }
            Err(e) => Ok(class(e)),
        },
        1 => match ClientKey::from_bytes(rest) {
            Ok(key) => {
                ClientKey::from_bytes(&key.to_bytes())
                    .map_err(|e| format!("a client key's own bytes do not parse: {e}"))?;
                accepted("client key")
            }
            Err(e) => Ok(class(e)),
        },
        2 => announcement_checks(&seal_raw(STUDY_DOMAIN, rest, &keys().researcher), None),
        _ => {
            let Some(announcement) = typed::<StudyAnnouncement>(rest, &[]) else {
                return Ok("not generated".into());
            };
            announcement_checks(&announcement.sign(&keys().researcher), Some(&announcement))
        }
    }
}

fn announcement_checks(envelope: &Envelope, signed: Option<&StudyAnnouncement>) -> Verdict {
    let announcement: StudyAnnouncement = match envelope.open(STUDY_DOMAIN) {
        Ok(a) => a,
        Err(e) => return Ok(class(e)),
    };
    if let Some(signed) = signed {
        same_encoding("study announcement", signed, &announcement)?;
    }
    if announcement.version != ENCRYPTED_VERSION
        || announcement.params != witmed_crypto::fhe::params::ID
    {
        return Ok("wrong version or parameters".into());
    }
    let credential = match witmed_policies::parse_signed_bytes(&announcement.credential) {
        Ok(c) => c,
        Err(e) => return Ok(class(e)),
    };
    if let Err(e) = credential::verify_credential(&credential, &[keys().authority.public()], NOW) {
        return Ok(class(e));
    }
    match CompactPublicKey::from_bytes(&announcement.public_key) {
        Ok(_) => {
            let _ = announcement.study_id();
            accepted("announcement")
        }
        Err(e) => Ok(class(e)),
    }
}

fn ciphertext_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for values in [vec![1i64], vec![-5, 0, 7], (0..64).collect::<Vec<i64>>()] {
        let mut input = vec![values.len() as u8, 1];
        input.extend(seeds::ciphertext(&values));
        out.push(input);
    }
    out
}

/// Byte 0: how many values the caller expects (up to 70, past the 64 allowed);
/// byte 1: how many contributions the total claims (up to 130, past the 127 allowed).
fn ciphertext_run(data: &[u8]) -> Verdict {
    let (values, rest) = mode(data, 71);
    let (contributions, rest) = mode(rest, 131);
    ciphertext_checks(rest, u32::from(values), usize::from(contributions))
}

fn encrypted_messages_seeds() -> Vec<Vec<u8>> {
    vec![
        with_mode(0, seeds::contribution().to_bytes()),
        with_mode(1, postcard_bytes(&seeds::encrypted_total())),
        with_mode(2, seeds::answer([1; 32]).to_bytes()),
        with_mode(3, [6u8; 200]),
        with_mode(4, [8u8; 200]),
        with_mode(5, [9u8; 200]),
    ]
}

/// Modes 0 a stored Contribution, 1 an EncryptedTotal, 2 a stored Answer,
/// 3..5 the same three typed: what decodes must re-encode to the same value.
fn encrypted_messages_run(data: &[u8]) -> Verdict {
    let (mode, rest) = mode(data, 6);
    match mode {
        0 => match Contribution::from_bytes(rest) {
            Ok(c) => contribution_checks(&c),
            Err(e) => Ok(class(e)),
        },
        1 => match postcard::from_bytes::<EncryptedTotal>(rest) {
            Ok(t) => total_checks(&t),
            Err(e) => Ok(class(e)),
        },
        2 => match Answer::from_bytes(rest) {
            Ok(a) => answer_checks(&a),
            Err(e) => Ok(class(e)),
        },
        3 => match typed::<Contribution>(rest, &[]) {
            Some(c) => match Contribution::from_bytes(&c.to_bytes()) {
                Ok(back) => {
                    same_encoding("contribution", &c, &back)?;
                    contribution_checks(&back)
                }
                Err(e) => Ok(class(e)),
            },
            None => Ok("not generated".into()),
        },
        4 => match typed::<EncryptedTotal>(rest, &[]) {
            Some(t) => total_checks(&t),
            None => Ok("not generated".into()),
        },
        _ => match typed::<Answer>(rest, &[]) {
            Some(a) => match Answer::from_bytes(&a.to_bytes()) {
                Ok(back) => {
                    same_encoding("answer", &a, &back)?;
                    answer_checks(&back)
                }
                Err(e) => Ok(class(e)),
            },
            None => Ok("not generated".into()),
        },
    }
}

fn contribution_checks(c: &Contribution) -> Verdict {
    let back = Contribution::from_bytes(&c.to_bytes()).map_err(|e| format!("contribution: {e}"))?;
    same_encoding("contribution", c, &back)?;
    ciphertext_checks(&c.ciphertext, c.values, 1)
}

fn total_checks(t: &EncryptedTotal) -> Verdict {
    let bytes = postcard_bytes(t);
    let back: EncryptedTotal =
        postcard::from_bytes(&bytes).map_err(|e| format!("encrypted total: {e}"))?;
    same_encoding("encrypted total", t, &back)?;
    shares_checks(t)
}

/// Each sealed share of a total as the researcher reads it: receipt, then ciphertext.
fn shares_checks(t: &EncryptedTotal) -> Verdict {
    t.shares
        .iter()
        .try_fold(accepted("empty total")?, |_, share| {
            sealed_share_checks(share, t.shares.len())
        })
}

/// A sealed share: its receipt opens, then its ciphertext of the receipt's shape.
fn sealed_share_checks(share: &SealedShare, contributions: usize) -> Verdict {
    match share.receipt.open::<Receipt>(RECEIPT_DOMAIN) {
        Ok(receipt) => ciphertext_checks(&share.ciphertext, receipt.values, contributions),
        Err(e) => Ok(class(e)),
    }
}

fn answer_checks(a: &Answer) -> Verdict {
    let back = Answer::from_bytes(&a.to_bytes()).map_err(|e| format!("answer: {e}"))?;
    same_encoding("answer", a, &back)?;
    accepted("answer")
}

// ---------------------------------------------------------------- key files

fn key_file_seeds() -> Vec<Vec<u8>> {
    vec![
        seeds::key_file_text(&keys().patient).into_bytes(),
        seeds::key_file_text(&keys().node).into_bytes(),
    ]
}

/// A 0600 file of this process, rewritten for every input: `KeyPair::load` reads a path.
fn key_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("witmed-fuzz-{}.key", std::process::id()))
    })
}

fn key_file_run(data: &[u8]) -> Verdict {
    let path = key_path();
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(data));
    if let Err(e) = written {
        return Err(format!(
            "cannot write the scratch key file {}: {e}",
            path.display()
        ));
    }
    match KeyPair::load(path) {
        Ok(key) => {
            // What loads must save and load back as the same key.
            let text = seeds::key_file_text(&key);
            std::fs::write(path, text).map_err(|e| e.to_string())?;
            let back =
                KeyPair::load(path).map_err(|e| format!("a saved key does not load: {e}"))?;
            if back.public() != key.public() || back.role() != key.role() {
                return Err("key changed in a round trip".into());
            }
            accepted("key")
        }
        Err(e) => Ok(class(e)),
    }
}

fn local_files_seeds() -> Vec<Vec<u8>> {
    let config = witmed_node::node::Config {
        version: 1,
        name: "St Elsewhere".into(),
        node_key: keys().node.public(),
        hospital_key: keys().hospital.public(),
        created_at: NOW,
    };
    let info = witmed_node::encrypted::study::StudyInfo {
        version: 1,
        id: hex::encode(seeds::study().1.study_id()),
        params: witmed_crypto::fhe::params::ID.into(),
        created_at: NOW,
    };
    vec![
        with_mode(0, toml::to_string(&config).unwrap_or_default()),
        with_mode(1, toml::to_string(&info).unwrap_or_default()),
        with_mode(2, keys().node.public().to_hex()),
        with_mode(3, PATIENT.to_string()),
        with_mode(4, "researcher"),
    ]
}

/// Property for a TOML file the node writes and reads back: what parses
/// re-encodes to TOML that parses to the same value.
fn toml_round_trips<T: Serialize + DeserializeOwned>(what: &str, text: &str) -> Verdict {
    let value: T = match toml::from_str(text) {
        Ok(value) => value,
        Err(e) => return Ok(class(e.message())),
    };
    let again = toml::to_string(&value).map_err(|e| format!("a parsed {what} has no TOML: {e}"))?;
    let back: T = toml::from_str(&again)
        .map_err(|e| format!("a parsed {what}'s own TOML does not parse: {e}"))?;
    same_encoding(what, &value, &back)?;
    accepted(what)
}

/// Modes 0 node.toml, 1 study.toml, 2 a public key, 3 a pseudonym, 4 a key role.
fn local_files_run(data: &[u8]) -> Verdict {
    let (mode, rest) = mode(data, 5);
    let text = match utf8(rest) {
        Ok(text) => text,
        Err(verdict) => return verdict,
    };
    match mode {
        0 => toml_round_trips::<witmed_node::node::Config>("node config", text),
        1 => toml_round_trips::<witmed_node::encrypted::study::StudyInfo>("study info", text),
        2 => match text.parse::<PublicKey>() {
            Ok(key) if key.to_hex().parse::<PublicKey>().ok() != Some(key) => {
                Err("public key changed in a hex round trip".into())
            }
            Ok(_) => accepted("public key"),
            Err(e) => Ok(class(e)),
        },
        3 => match text.parse::<witmed_crypto::Pseudonym>() {
            Ok(p) if p.to_string().parse::<witmed_crypto::Pseudonym>().ok() != Some(p) => {
                Err("pseudonym changed in a round trip".into())
            }
            Ok(_) => accepted("pseudonym"),
            Err(e) => Ok(class(e)),
        },
        _ => match text.parse::<witmed_crypto::Role>() {
            Ok(role) if role.as_str().parse::<witmed_crypto::Role>().ok() != Some(role) => {
                Err("role changed in a round trip".into())
            }
            Ok(_) => accepted("role"),
            Err(e) => Ok(class(e)),
        },
    }
}

// ---------------------------------------------------------------- imports

fn fhir_seeds() -> Vec<Vec<u8>> {
    vec![
        with_mode(0, seeds::FHIR_BUNDLE),
        with_mode(1, seeds::fhir_ndjson()),
        with_mode(0, seeds::fhir_ndjson()),
    ]
}

/// Mode 0: a `.json` file (bundle, single resource, or NDJSON detected); mode 1: a `.ndjson` file.
fn fhir_run(data: &[u8]) -> Verdict {
    let (mode, rest) = mode(data, 2);
    let location = if mode == 0 {
        "bundle.json"
    } else {
        "Observation.ndjson"
    };
    match fhir::parse_bytes(location, rest) {
        Ok(parsed) => Ok(format!(
            "parsed p{} o{} c{} r{}",
            parsed.patients.len().min(3),
            parsed.observations.len().min(3),
            parsed.conditions.len().min(3),
            parsed.rejected.len().min(3)
        )),
        Err(e) => Ok(class(e)),
    }
}

fn physionet_record_seeds() -> Vec<Vec<u8>> {
    vec![seeds::PHYSIONET_RECORD.as_bytes().to_vec()]
}

fn physionet_record_run(data: &[u8]) -> Verdict {
    match physionet::parse_record("set-a/132539.txt", data) {
        Ok(record) => Ok(format!(
            "parsed o{} r{} s{}",
            record.observations.len().min(3),
            record.rejected.len().min(3),
            record.skipped_missing.min(3)
        )),
        Err(e) => Ok(class(e)),
    }
}

fn physionet_outcomes_seeds() -> Vec<Vec<u8>> {
    vec![seeds::PHYSIONET_OUTCOMES.as_bytes().to_vec()]
}

fn physionet_outcomes_run(data: &[u8]) -> Verdict {
    match physionet::parse_outcomes("Outcomes-a.txt", data) {
        Ok((outcomes, rejected)) => Ok(format!(
            "parsed {} {}",
            outcomes.len().min(3),
            rejected.len().min(3)
        )),
        Err(e) => Ok(class(e)),
    }
}

// ---------------------------------------------------------------- devices

const DEVICE_WORDS: &[&str] = &[
    "seq",
    "time",
    "code",
    "value",
    "unit",
    "8867-4",
    "8310-5",
    "[degF]",
    "kPa",
    "urn:witmed:device-seq",
    "http://loinc.org",
    "http://unitsofmeasure.org",
    "effectiveDateTime",
    "valueQuantity",
    "identifier",
    "component",
];

fn device_batch_seeds() -> Vec<Vec<u8>> {
    use witmed_protocol::device_request::{Batch, Reading, VERSION};
    let readings = vec![
        Reading {
            seq: 1,
            time: NOW,
            code: "8867-4".into(),
            value: 72.0,
            unit: "/min".into(),
        },
        Reading {
            seq: 2,
            time: NOW + 60,
            code: "8310-5".into(),
            value: 98.6,
            unit: "[degF]".into(),
        },
    ];
    let batch = Batch {
        version: VERSION,
        readings: readings.clone(),
    };
    let fhir = witmed_protocol::device_request::fhir_bundle(&readings);
    vec![
        with_mode(0, serde_json::to_vec(&batch).unwrap_or_default()),
        with_mode(1, serde_json::to_vec(&fhir).unwrap_or_default()),
    ]
}

/// Mode 0: `application/json`; mode 1: `application/fhir+json`. What parses
/// is within the batch limit and reads back the same from its JSON form.
fn device_batch_run(data: &[u8]) -> Verdict {
    use witmed_protocol::device_request::{self as wire, Batch};
    let (mode, rest) = mode(data, 2);
    let content_type = if mode == 0 {
        wire::CONTENT_TYPE_JSON
    } else {
        wire::CONTENT_TYPE_FHIR
    };
    let readings = match wire::parse_body(content_type, rest) {
        Ok(readings) => readings,
        Err(e) => return Ok(class(e)),
    };
    if readings.is_empty() || readings.len() > wire::MAX_READINGS {
        return Err(format!("{} readings accepted", readings.len()));
    }
    let again = serde_json::to_vec(&Batch {
        version: wire::VERSION,
        readings: readings.clone(),
    })
    .map_err(|e| format!("an accepted batch does not encode: {e}"))?;
    match wire::parse_body(wire::CONTENT_TYPE_JSON, &again) {
        Ok(back) if back.len() == readings.len() => accepted("device batch"),
        Ok(_) => Err("a batch read back with another length".into()),
        Err(e) => Err(format!("an accepted batch does not read back: {e}")),
    }
}
