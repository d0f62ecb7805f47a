//! Hostile and broken inputs: each must be refused with the specific error that names the fault.

mod common;

use common::*;
use witmed_crypto::envelope::Error as EnvelopeError;
use witmed_crypto::{Envelope, Pseudonym, PublicKey, Role};
use witmed_policies::consent::{verify_revocation, verify_token, TOKEN_DOMAIN};
use witmed_policies::credential::verify_credential;
use witmed_policies::policy::load_policy;
use witmed_policies::{parse_signed, parse_signed_bytes, Error, Object, MAX_SIGNED_BYTES};

type Open = fn(&Envelope) -> Result<(), Error>;

fn open_token(e: &Envelope) -> Result<(), Error> {
    verify_token(e, &node(), &enrolled, NOW).map(drop)
}
fn open_revocation(e: &Envelope) -> Result<(), Error> {
    verify_revocation(e, &node(), &enrolled).map(drop)
}
fn open_credential(e: &Envelope) -> Result<(), Error> {
    verify_credential(e, &[authority_key().public()], NOW).map(drop)
}
fn open_policy(e: &Envelope) -> Result<(), Error> {
    load_policy(e, &hospital_key().public(), &node()).map(drop)
}

/// A valid signed object of each kind, with the function that accepts it.
fn cases() -> Vec<(&'static str, Envelope, Open)> {
    vec![
        ("token", token().sign(&patient_key()), open_token),
        (
            "revocation",
            revocation().sign(&patient_key()),
            open_revocation,
        ),
        (
            "credential",
            credential().sign(&authority_key()),
            open_credential,
        ),
        ("policy", policy().sign(&hospital_key()), open_policy),
    ]
}

fn code(result: &Result<(), Error>) -> Option<&'static str> {
    result.as_ref().err().map(Error::error_code)
}

#[test]
fn valid_objects_open_through_text_and_wire() {
    for (name, env, open) in cases() {
        let text = parse_signed(&env.to_text()).unwrap();
        let wire = parse_signed_bytes(&env.to_bytes()).unwrap();
        assert_eq!(open(&text), Ok(()), "{name}");
        assert_eq!(open(&wire), Ok(()), "{name}");
    }
}

#[test]
fn every_truncation_is_malformed() {
    for (name, env, _) in cases() {
        let text = env.to_text();
        // The trailing newline is whitespace, not content: cut inside the JSON.
        for cut in 0..text.trim_end().len() {
            let result = parse_signed(&text[..cut]);
            assert!(
                matches!(result, Err(Error::Envelope(EnvelopeError::Malformed(_)))),
                "{name}: text cut at {cut} gave {result:?}"
            );
        }
        let bytes = env.to_bytes();
        for cut in 0..bytes.len() {
            let result = parse_signed_bytes(&bytes[..cut]);
            assert!(
                matches!(result, Err(Error::Envelope(EnvelopeError::Malformed(_)))),
                "{name}: wire cut at {cut} gave {result:?}"
            );
        }
    }
}

/// Wire layout: header (version, domain, payload length) | payload | signer (32) | 64 as length | signature (64).
#[test]
fn every_wire_bit_flip_is_refused_with_the_error_of_its_region() {
    for (name, env, open) in cases() {
        let bytes = env.to_bytes();
        let header = bytes.len() - (env.payload.len() + 32 + 1 + 64);
        let signature_len_at = bytes.len() - 65;
        // The layout assumption itself, so a format change fails loudly here.
        assert_eq!(&bytes[header..header + env.payload.len()], &env.payload[..]);
        assert_eq!(bytes[signature_len_at], 64);
        for bit in 0..bytes.len() * 8 {
            let at = bit / 8;
            let mut flipped = bytes.clone();
            flipped[at] ^= 1 << (bit % 8);
            let result = parse_signed_bytes(&flipped).and_then(|e| open(&e));
            let expected: &[&str] = if at < header {
                &["malformed", "unsupported_envelope_version", "wrong_domain"]
            } else if at == signature_len_at {
                &["malformed"]
            } else {
                &["bad_signature"]
            };
            assert!(
                code(&result).is_some_and(|c| expected.contains(&c)),
                "{name}: bit {bit} (byte {at} of {}, header {header}) gave {result:?}, expected {expected:?}",
                bytes.len()
            );
        }
    }
}

#[test]
fn every_payload_bit_flip_in_text_form_is_a_bad_signature() {
    for (name, env, open) in cases() {
        for bit in 0..env.payload.len() * 8 {
            let mut altered = env.clone();
            altered.payload[bit / 8] ^= 1 << (bit % 8);
            let text = altered.to_text();
            assert_ne!(text, env.to_text());
            let result = parse_signed(&text).and_then(|e| open(&e));
            assert!(
                matches!(
                    result,
                    Err(Error::Envelope(EnvelopeError::BadSignature { .. }))
                ),
                "{name}: payload bit {bit} gave {result:?}"
            );
        }
    }
}

/// Flipping a bit of a base64 character either breaks the text (malformed) or
/// decodes to other bytes, which the signature no longer covers.
#[test]
fn every_bit_flip_in_the_base64_payload_text_is_refused() {
    for (name, env, open) in cases() {
        let text = env.to_text();
        let start = text.find("\"payload\": \"").unwrap() + "\"payload\": \"".len();
        let end = start + text[start..].find('"').unwrap();
        let mut bad_signatures = 0;
        for bit in 0..(end - start) * 8 {
            let mut bytes = text.clone().into_bytes();
            bytes[start + bit / 8] ^= 1 << (bit % 8);
            // A high-bit flip is not UTF-8; read it as a lenient reader would.
            let flipped = String::from_utf8_lossy(&bytes);
            let result = parse_signed(&flipped).and_then(|e| open(&e));
            match code(&result) {
                Some("bad_signature") => bad_signatures += 1,
                Some("malformed") => {}
                _ => panic!("{name}: base64 bit {bit} gave {result:?}"),
            }
        }
        // Most character flips land on another base64 character.
        assert!(bad_signatures > (end - start), "{name}: {bad_signatures}");
    }
}

#[test]
fn objects_for_another_node_are_replays() {
    let mut t = token();
    t.node = other_node();
    let mut r = revocation();
    r.node = other_node();
    let mut p = policy();
    p.node = other_node();
    let cases: [(Envelope, Open, Object); 3] = [
        (t.sign(&patient_key()), open_token, Object::ConsentToken),
        (r.sign(&patient_key()), open_revocation, Object::Revocation),
        (p.sign(&hospital_key()), open_policy, Object::NodePolicy),
    ];
    for (env, open, object) in cases {
        assert_eq!(
            open(&env),
            Err(Error::OtherNode {
                what: object,
                intended: other_node(),
                this: node(),
            })
        );
    }
}

fn many_keys(n: usize) -> Vec<PublicKey> {
    (0..n)
        .map(|i| PublicKey::from_bytes([(i % 251) as u8; 32]))
        .collect()
}

#[test]
fn oversized_objects_are_refused_before_parsing() {
    let purposes: Vec<String> = (0..3000).map(|i| format!("DS-d{i}")).collect();
    let mut t = token();
    t.purposes = purposes.clone();
    let mut c = credential();
    c.purposes = purposes;
    let mut p = policy();
    p.trusted_issuers = many_keys(600);
    let cases: [(&str, Envelope, Open); 3] = [
        ("token", t.sign(&patient_key()), open_token),
        ("credential", c.sign(&authority_key()), open_credential),
        ("policy", p.sign(&hospital_key()), open_policy),
    ];
    for (name, env, open) in cases {
        assert!(env.payload.len() > MAX_SIGNED_BYTES, "{name}");
        let too_large = |r: Result<(), Error>| {
            matches!(
                r,
                Err(Error::Envelope(EnvelopeError::TooLarge {
                    max: MAX_SIGNED_BYTES,
                    ..
                }))
            )
        };
        assert!(
            too_large(parse_signed(&env.to_text()).map(drop)),
            "{name} text"
        );
        assert!(
            too_large(parse_signed_bytes(&env.to_bytes()).map(drop)),
            "{name} wire"
        );
        // An envelope that arrived some other way is bounded too.
        assert!(too_large(open(&env)), "{name} open");
    }
}

#[test]
fn an_object_of_another_kind_is_wrong_domain() {
    let credential_env = credential().sign(&authority_key());
    assert!(matches!(
        open_token(&credential_env),
        Err(Error::Envelope(EnvelopeError::WrongDomain { .. }))
    ));
    let token_env = token().sign(&patient_key());
    assert!(matches!(
        open_policy(&token_env),
        Err(Error::Envelope(EnvelopeError::WrongDomain { .. }))
    ));
}

#[test]
fn newer_or_garbled_payload_versions_are_named() {
    let mut t = token();
    t.version = 2;
    assert_eq!(
        open_token(&t.sign(&patient_key())),
        Err(Error::UnsupportedVersion {
            what: Object::ConsentToken,
            found: 2,
            supported: 1,
        })
    );
    // A future layout that does not decode as today's: the version still shows.
    let future = Envelope::seal(TOKEN_DOMAIN, &(2u32, "new layout"), &patient_key());
    assert_eq!(
        open_token(&future).map_err(|e| e.error_code()),
        Err("unsupported_version")
    );
    let garbage = Envelope::seal(TOKEN_DOMAIN, &(1u32, "not a token"), &patient_key());
    assert_eq!(
        open_token(&garbage).map_err(|e| e.error_code()),
        Err("undecodable_payload")
    );
}

#[test]
fn tokens_need_the_enrolled_patient_key() {
    assert_eq!(
        open_token(&token().sign(&other_patient_key())),
        Err(Error::WrongPatientKey {
            patient: PATIENT,
            signer: other_patient_key().public(),
        })
    );
    let mut stranger = token();
    stranger.patient = Pseudonym([0x22; 16]);
    assert_eq!(
        open_token(&stranger.sign(&patient_key())),
        Err(Error::NotEnrolled {
            patient: Pseudonym([0x22; 16])
        })
    );
    assert_eq!(
        open_revocation(&revocation().sign(&other_patient_key())).map_err(|e| e.error_code()),
        Err("wrong_patient_key")
    );
    // Claiming the enrolled key as signer without its signature.
    let mut forged = token().sign(&other_patient_key());
    forged.signer = patient_key().public();
    assert!(matches!(
        open_token(&forged),
        Err(Error::Envelope(EnvelopeError::BadSignature { .. }))
    ));
}

fn token_error(edit: impl FnOnce(&mut witmed_policies::consent::Token)) -> &'static str {
    let mut t = token();
    edit(&mut t);
    open_token(&t.sign(&patient_key()))
        .unwrap_err()
        .error_code()
}

#[test]
fn inconsistent_tokens_say_what_is_wrong() {
    assert_eq!(token_error(|t| t.id = "short".into()), "invalid_consent");
    assert_eq!(
        token_error(|t| t.id = t.id.to_uppercase()),
        "invalid_consent"
    );
    assert_eq!(token_error(|t| t.categories.clear()), "invalid_consent");
    assert_eq!(token_error(|t| t.modes.clear()), "invalid_consent");
    assert_eq!(token_error(|t| t.not_before = t.expires), "invalid_consent");
    assert_eq!(
        token_error(|t| t.purposes = strings(&["HMB", "GSO"])),
        "unknown_purpose"
    );
    assert_eq!(
        token_error(|t| t.purposes = strings(&["hmb"])),
        "unknown_purpose"
    );
    assert_eq!(
        token_error(|t| t.purposes = strings(&["NCU"])),
        "no_primary_purpose"
    );
    assert_eq!(token_error(|t| t.expires = NOW), "expired");
    // Not yet valid is accepted: it simply is not eligible until then.
    let mut later = token();
    later.not_before = NOW + DAY;
    assert!(open_token(&later.sign(&patient_key())).is_ok());
}

fn credential_error(edit: impl FnOnce(&mut witmed_policies::credential::Credential)) -> Error {
    let mut c = credential();
    edit(&mut c);
    open_credential(&c.sign(&authority_key())).unwrap_err()
}

#[test]
fn credentials_refused_for_each_reason() {
    let untrusted = credential().sign(&key(Role::Authority, 99));
    assert_eq!(
        open_credential(&untrusted),
        Err(Error::UntrustedIssuer {
            issuer: key(Role::Authority, 99).public()
        })
    );
    assert!(matches!(
        credential_error(|c| c.expires = NOW),
        Error::Expired {
            what: Object::Credential,
            ..
        }
    ));
    assert!(matches!(
        credential_error(|c| c.issued_at = NOW + 1),
        Error::NotYetValid {
            what: Object::Credential,
            ..
        }
    ));
    let mut env = credential().sign(&authority_key());
    env.signature[0] ^= 1;
    assert!(matches!(
        open_credential(&env),
        Err(Error::Envelope(EnvelopeError::BadSignature { .. }))
    ));
    assert_eq!(
        credential_error(|c| c.purposes = strings(&["HMB", "NCU"])).error_code(),
        "invalid_credential"
    );
    assert_eq!(
        credential_error(|c| c.commercial = true).error_code(),
        "invalid_credential",
        "commercial and not-for-profit at once"
    );
    assert_eq!(
        credential_error(|c| c.purposes = strings(&["XYZ"])).error_code(),
        "unknown_purpose"
    );
}

fn policy_error(edit: impl FnOnce(&mut witmed_policies::NodePolicy)) -> Error {
    let mut p = policy();
    edit(&mut p);
    open_policy(&p.sign(&hospital_key())).unwrap_err()
}

#[test]
fn policies_refused_for_each_reason() {
    let by_other = policy().sign(&key(Role::Hospital, 42));
    assert_eq!(
        open_policy(&by_other),
        Err(Error::PolicyNotSignedByHospital {
            signer: key(Role::Hospital, 42).public()
        })
    );
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            policy_error(|p| p.budget.epsilon = bad),
            Error::InvalidPolicy(m) if m.contains("epsilon")
        ));
    }
    for bad in [-0.1, 1.0, f64::NAN] {
        assert!(matches!(
            policy_error(|p| p.budget.delta = bad),
            Error::InvalidPolicy(m) if m.contains("delta")
        ));
    }
    assert!(matches!(
        policy_error(|p| p.budget.window_seconds = 0),
        Error::InvalidPolicy(m) if m.contains("window")
    ));
    assert!(matches!(
        policy_error(|p| { p.query_kinds.insert("median".into()); }),
        Error::InvalidPolicy(m) if m.contains("median")
    ));
    let current = policy();
    let mut next = policy();
    assert_eq!(
        next.check_supersedes(&current),
        Err(Error::StalePolicy {
            serial: 1,
            current: 1
        })
    );
    next.serial = 2;
    assert_eq!(next.check_supersedes(&current), Ok(()));
}

#[test]
fn error_codes_are_distinct_and_messages_say_what_to_do() {
    let errors = [
        Error::Envelope(EnvelopeError::TooLarge { len: 2, max: 1 }),
        Error::Envelope(EnvelopeError::Malformed("x".into())),
        Error::Envelope(EnvelopeError::UnsupportedVersion(9)),
        Error::Envelope(EnvelopeError::WrongDomain {
            expected: "a".into(),
            found: "b".into(),
        }),
        Error::Envelope(EnvelopeError::BadSignature { signer: "k".into() }),
        Error::Envelope(EnvelopeError::Payload("x".into())),
        Error::Envelope(EnvelopeError::NonCanonical),
        Error::UnsupportedVersion {
            what: Object::ConsentToken,
            found: 2,
            supported: 1,
        },
        Error::OtherNode {
            what: Object::ConsentToken,
            intended: other_node(),
            this: node(),
        },
        Error::NotEnrolled { patient: PATIENT },
        Error::WrongPatientKey {
            patient: PATIENT,
            signer: node(),
        },
        Error::Expired {
            what: Object::Credential,
            expires: 1,
            now: 2,
        },
        Error::NotYetValid {
            what: Object::Credential,
            not_before: 2,
            now: 1,
        },
        Error::UntrustedIssuer { issuer: node() },
        Error::PolicyNotSignedByHospital { signer: node() },
        Error::StalePolicy {
            serial: 1,
            current: 1,
        },
        Error::InvalidPolicy("x".into()),
        Error::InvalidConsent("x".into()),
        Error::InvalidCap("x".into()),
        Error::InvalidCredential("x".into()),
        Error::UnknownPurpose("x".into()),
        Error::NoPrimaryPurpose(vec![]),
    ];
    let codes: std::collections::BTreeSet<_> = errors.iter().map(Error::error_code).collect();
    assert_eq!(codes.len(), errors.len());
    let replay = errors[8].to_string();
    assert!(
        replay.contains("replay") && replay.contains("ask the patient"),
        "{replay}"
    );
}
