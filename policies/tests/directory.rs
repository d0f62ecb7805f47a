//! The consortium directory: signing, bounds, hostile inputs, editing, validation and updates.

use proptest::prelude::*;
use witmed_crypto::envelope::Error as EnvelopeError;
use witmed_crypto::{Envelope, KeyPair, PublicKey, Role};
use witmed_policies::directory::{
    accept_update, parse_signed_directory, parse_signed_directory_bytes, verify_directory,
    Directory, Member, DIRECTORY_DOMAIN, DIRECTORY_VERSION, MAX_ADDRESSES, MAX_DIRECTORY_BYTES,
    MAX_DIRECTORY_PAYLOAD_BYTES, MAX_MEMBERS, MAX_NAME_CHARS,
};
use witmed_policies::policy::NodePolicy;
use witmed_policies::{parse_signed, Error, Object, MAX_SIGNED_BYTES};

const NOW: i64 = 1_700_000_000;

fn authority() -> KeyPair {
    KeyPair::from_seed(Role::Authority, &[6; 32])
}

fn other_authority() -> KeyPair {
    KeyPair::from_seed(Role::Authority, &[60; 32])
}

/// A distinct, well-formed key for member `i` (directories never verify with it).
fn member_key(i: usize) -> PublicKey {
    let mut bytes = [0xab; 32];
    bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
    PublicKey::from_bytes(bytes)
}

/// Member `i`: a valid entry, unique in name, key and peer id.
fn member(i: usize) -> Member {
    Member {
        name: format!("Hospital {i}"),
        peer_id: format!("12D3KooWPeer{i:040}"),
        addresses: vec![format!("/dns4/node{i}.example.org/tcp/4001")],
        signing_key: member_key(i),
    }
}

/// A valid directory of `n` members, serial 7.
fn directory_of(n: usize) -> Directory {
    let mut directory = Directory::new("North Sea Hospitals");
    directory.serial = 7;
    directory.issued_at = NOW;
    for i in 0..n {
        directory.add_member(member(i)).unwrap();
    }
    directory
}

fn directory() -> Directory {
    directory_of(3)
}

fn verify(envelope: &Envelope) -> Result<Directory, Error> {
    verify_directory(envelope, &authority().public())
}

fn code<T>(result: &Result<T, Error>) -> Option<&'static str> {
    result.as_ref().err().map(Error::error_code)
}

#[test]
fn signed_directory_round_trips_through_text_and_wire() {
    let envelope = directory().sign(&authority());
    let text = parse_signed_directory(&envelope.to_text()).unwrap();
    let wire = parse_signed_directory_bytes(&envelope.to_bytes()).unwrap();
    assert_eq!(text, envelope);
    assert_eq!(wire, envelope);
    assert_eq!(verify(&text), Ok(directory()));
    assert_eq!(verify(&wire), Ok(directory()));
}

#[test]
fn unsigned_directory_round_trips_through_toml() {
    let dir = directory();
    let text = toml::to_string(&dir).unwrap();
    assert_eq!(text.matches("[[members]]").count(), 3, "{text}");
    assert!(text.contains(&member_key(1).to_hex()), "{text}");
    assert_eq!(toml::from_str::<Directory>(&text).unwrap(), dir);
}

/// The form an authority edits by hand.
#[test]
fn handwritten_toml_reads_as_expected() {
    let key = "ab".repeat(32);
    let text = format!(
        r#"
version = 1
consortium = "North Sea Hospitals"
serial = 2
issued_at = 1700000000

[[members]]
name = "St Olav"
peer_id = "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE"
addresses = ["/dns4/olav.example.org/tcp/4001", "/ip4/192.0.2.7/tcp/4001"]
signing_key = "{key}"
"#
    );
    let dir: Directory = toml::from_str(&text).unwrap();
    assert_eq!(dir.validate(), Ok(()));
    assert_eq!(dir.serial, 2);
    let olav = dir.member_by_name("St Olav").unwrap();
    assert_eq!(olav.addresses.len(), 2);
    assert_eq!(olav.signing_key.to_hex(), key);
    // A misspelt field is an error, not silently ignored.
    let typo = text.replace("addresses =", "adresses =");
    assert!(toml::from_str::<Directory>(&typo).is_err());
}

#[test]
fn signed_by_another_key_is_refused() {
    let envelope = directory().sign(&other_authority());
    assert_eq!(
        verify(&envelope),
        Err(Error::DirectoryNotSignedByAuthority {
            signer: other_authority().public()
        })
    );
}

#[test]
fn another_kind_of_signed_object_is_refused() {
    let policy = NodePolicy::default_for(member_key(0), vec![]).sign(&authority());
    assert!(matches!(
        verify(&policy),
        Err(Error::Envelope(EnvelopeError::WrongDomain { .. }))
    ));
}

#[test]
fn a_newer_format_is_named_as_such() {
    let mut newer = directory();
    newer.version = DIRECTORY_VERSION + 1;
    let unsupported = Err(Error::UnsupportedVersion {
        what: Object::ConsortiumDirectory,
        found: DIRECTORY_VERSION + 1,
        supported: DIRECTORY_VERSION,
    });
    assert_eq!(verify(&newer.sign(&authority())), unsupported);
    // A newer layout that does not even decode as this one.
    let other_layout = Envelope::seal(
        DIRECTORY_DOMAIN,
        &(DIRECTORY_VERSION + 1, "members elsewhere"),
        &authority(),
    );
    assert_eq!(verify(&other_layout), unsupported);
}

/// Every single-bit flip of the wire form is refused, whichever field it hits.
#[test]
fn every_wire_bit_flip_is_refused() {
    let bytes = directory().sign(&authority()).to_bytes();
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let result = parse_signed_directory_bytes(&flipped).and_then(|e| verify(&e));
        assert!(
            matches!(
                code(&result),
                Some(
                    "malformed" | "unsupported_envelope_version" | "wrong_domain" | "bad_signature"
                )
            ),
            "bit {bit} of {} gave {result:?}",
            bytes.len() * 8
        );
    }
}

#[test]
fn every_truncation_is_malformed() {
    let envelope = directory().sign(&authority());
    let text = envelope.to_text();
    // The trailing newline is whitespace, not content: cut inside the JSON.
    for cut in 0..text.trim_end().len() {
        let result = parse_signed_directory(&text[..cut]);
        assert!(
            matches!(result, Err(Error::Envelope(EnvelopeError::Malformed(_)))),
            "text cut at {cut} gave {result:?}"
        );
    }
    let bytes = envelope.to_bytes();
    for cut in 0..bytes.len() {
        let result = parse_signed_directory_bytes(&bytes[..cut]);
        assert!(
            matches!(result, Err(Error::Envelope(EnvelopeError::Malformed(_)))),
            "wire cut at {cut} gave {result:?}"
        );
    }
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let text = directory().sign(&authority()).to_text();
    // Trailing whitespace keeps the JSON valid: only the size decides.
    let padded = |len: usize| format!("{text}{}", " ".repeat(len - text.len()));
    assert!(parse_signed_directory(&padded(MAX_DIRECTORY_BYTES)).is_ok());
    assert_eq!(
        parse_signed_directory(&padded(MAX_DIRECTORY_BYTES + 1)),
        Err(Error::Envelope(EnvelopeError::TooLarge {
            len: MAX_DIRECTORY_BYTES + 1,
            max: MAX_DIRECTORY_BYTES
        }))
    );
    let bytes = vec![0u8; MAX_DIRECTORY_BYTES + 1];
    assert_eq!(
        code(&parse_signed_directory_bytes(&bytes)),
        Some("too_large")
    );
}

/// An envelope can arrive inside a larger message, past the parsers' bound.
#[test]
fn oversized_payload_is_refused_before_verifying() {
    let mut envelope = directory().sign(&authority());
    envelope.payload = vec![0; MAX_DIRECTORY_PAYLOAD_BYTES + 1];
    assert_eq!(
        verify(&envelope),
        Err(Error::Envelope(EnvelopeError::TooLarge {
            len: MAX_DIRECTORY_PAYLOAD_BYTES + 1,
            max: MAX_DIRECTORY_PAYLOAD_BYTES
        }))
    );
}

/// A full directory is far over the bound of other signed objects but is
/// read, through the directory parser, like any other.
#[test]
fn a_full_directory_is_signed_and_verified() {
    let full = directory_of(MAX_MEMBERS);
    assert_eq!(full.validate(), Ok(()));
    let text = full.clone().sign(&authority()).to_text();
    assert!(text.len() > MAX_SIGNED_BYTES, "{}", text.len());
    assert_eq!(code(&parse_signed(&text)), Some("too_large"));
    let envelope = parse_signed_directory(&text).unwrap();
    assert_eq!(verify(&envelope), Ok(full.clone()));

    let mut over = full.clone();
    let result = over.add_member(member(MAX_MEMBERS));
    assert_eq!(code(&result), Some("invalid_directory"));
    assert_eq!(over, full);
    over.members.push(member(MAX_MEMBERS));
    let result = verify(&over.sign(&authority()));
    assert_eq!(code(&result), Some("invalid_directory"), "{result:?}");
}

/// A directory of exactly [`MAX_DIRECTORY_PAYLOAD_BYTES`] is valid and its
/// signed text fits in [`MAX_DIRECTORY_BYTES`]; one byte more is invalid.
#[test]
fn the_largest_valid_directory_fits_its_bound() {
    const LEN: usize = 200; // length prefix of 2 bytes from 128 to 16383
    let mut dir = directory_of(MAX_MEMBERS);
    for (i, m) in dir.members.iter_mut().enumerate() {
        m.addresses = (0..4).map(|a| address(i, a, LEN)).collect();
    }
    let mut size = encoded_len(&dir);
    assert!(size > MAX_DIRECTORY_PAYLOAD_BYTES, "{size}");
    for m in dir.members.iter_mut() {
        if size <= MAX_DIRECTORY_PAYLOAD_BYTES {
            break;
        }
        m.addresses.pop();
        size -= LEN + 2;
    }
    let mut gap = MAX_DIRECTORY_PAYLOAD_BYTES - size;
    for m in dir.members.iter_mut() {
        let grow = gap.min(256 - LEN);
        m.addresses[0].push_str(&"x".repeat(grow));
        gap -= grow;
    }
    assert_eq!(encoded_len(&dir), MAX_DIRECTORY_PAYLOAD_BYTES);
    assert_eq!(dir.validate(), Ok(()));
    let text = dir.clone().sign(&authority()).to_text();
    assert!(text.len() <= MAX_DIRECTORY_BYTES, "{}", text.len());
    assert!(text.len() > MAX_DIRECTORY_BYTES - 1024, "{}", text.len());
    assert_eq!(
        verify(&parse_signed_directory(&text).unwrap()),
        Ok(dir.clone())
    );

    let last = dir.members.last_mut().unwrap();
    last.name.push('x');
    assert_eq!(encoded_len(&dir), MAX_DIRECTORY_PAYLOAD_BYTES + 1);
    let result = dir.validate();
    assert_eq!(code(&result), Some("invalid_directory"));
    assert!(result.unwrap_err().to_string().contains("fewer"));
}

fn address(member: usize, n: usize, len: usize) -> String {
    let head = format!("/dns4/m{member}-a{n}.");
    format!("{head}{}", "x".repeat(len - head.len()))
}

fn encoded_len(dir: &Directory) -> usize {
    dir.clone().sign(&authority()).payload.len()
}

#[test]
fn adding_refuses_duplicates_and_replaces_nothing() {
    let mut same_name = member(9);
    same_name.name = member(1).name;
    let mut same_key = member(9);
    same_key.signing_key = member_key(1);
    let mut same_peer = member(9);
    same_peer.peer_id = member(1).peer_id;
    for (duplicate, field) in [
        (same_name, "name"),
        (same_key, "signing key"),
        (same_peer, "peer id"),
    ] {
        let mut dir = directory();
        let result = dir.add_member(duplicate);
        assert!(
            matches!(
                &result,
                Err(Error::DuplicateMember { field: f, existing, .. })
                    if *f == field && *existing == "Hospital 1"
            ),
            "{field}: {result:?}"
        );
        let message = result.unwrap_err().to_string();
        assert!(message.contains("remove \"Hospital 1\" first"), "{message}");
        assert_eq!(dir, directory());
    }
}

#[test]
fn removing_returns_the_member_and_frees_its_name() {
    let mut dir = directory();
    assert_eq!(dir.remove_member("Hospital 1"), Ok(member(1)));
    assert_eq!(dir.members, vec![member(0), member(2)]);
    assert_eq!(
        dir.remove_member("Hospital 1"),
        Err(Error::UnknownMember("Hospital 1".into()))
    );
    assert_eq!(
        code(&dir.remove_member("hospital 0")),
        Some("unknown_member")
    );
    let mut replacement = member(1);
    replacement.addresses = vec!["/ip4/192.0.2.1/tcp/4001".into()];
    assert_eq!(dir.add_member(replacement.clone()), Ok(()));
    assert_eq!(dir.member_by_name("Hospital 1"), Some(&replacement));
}

#[test]
fn members_are_found_by_key_name_and_peer() {
    let dir = directory();
    assert_eq!(dir.member_by_key(&member_key(2)), Some(&member(2)));
    assert_eq!(dir.member_by_name("Hospital 2"), Some(&member(2)));
    assert_eq!(dir.member_by_peer(&member(2).peer_id), Some(&member(2)));
    assert_eq!(dir.member_by_key(&member_key(3)), None);
    assert_eq!(dir.member_by_name("Hospital 3"), None);
    assert_eq!(dir.member_by_peer(&member(3).peer_id), None);
}

/// Each change to a valid directory, and a phrase the refusal must contain.
type Case = (&'static str, fn(&mut Directory), &'static str);

fn invalid_cases() -> Vec<Case> {
    vec![
        (
            "no address",
            |d| d.members[1].addresses.clear(),
            "no address",
        ),
        (
            "empty name",
            |d| d.members[1].name.clear(),
            "the name is empty",
        ),
        (
            "long name",
            |d| d.members[1].name = "x".repeat(MAX_NAME_CHARS + 1),
            "65 characters",
        ),
        (
            "control character",
            |d| d.members[1].name = "St\u{1b}[2J".into(),
            "control",
        ),
        (
            "surrounding space",
            |d| d.members[1].name = "Hospital 9 ".into(),
            "spaces",
        ),
        (
            "empty consortium",
            |d| d.consortium.clear(),
            "consortium: the name is empty",
        ),
        (
            "empty peer id",
            |d| d.members[1].peer_id.clear(),
            "peer id is empty",
        ),
        (
            "peer id with a slash",
            |d| d.members[1].peer_id = "/p2p/12D3".into(),
            "not a libp2p peer id",
        ),
        (
            "relative address",
            |d| d.members[1].addresses = vec!["ip4/1.2.3.4".into()],
            "not a multiaddr",
        ),
        (
            "address with a space",
            |d| d.members[1].addresses = vec!["/dns4/a b/tcp/1".into()],
            "not a multiaddr",
        ),
        (
            "address twice",
            |d| d.members[1].addresses = vec!["/ip4/192.0.2.1/tcp/1".into(); 2],
            "listed twice",
        ),
        (
            "too many addresses",
            |d| {
                d.members[1].addresses = (0..=MAX_ADDRESSES)
                    .map(|i| format!("/ip4/192.0.2.{i}/tcp/1"))
                    .collect()
            },
            "17 addresses",
        ),
        (
            "duplicate name",
            |d| d.members[2].name = d.members[0].name.clone(),
            "members #1 and #3 are both named \"Hospital 0\"",
        ),
        (
            "duplicate key",
            |d| d.members[2].signing_key = d.members[0].signing_key,
            "same signing key",
        ),
        (
            "duplicate peer id",
            |d| d.members[2].peer_id = d.members[0].peer_id.clone(),
            "same peer id",
        ),
    ]
}

/// A directory signed with an invalid entry is refused on arrival, and its
/// entry is refused by `add_member` too, with the same reason.
#[test]
fn invalid_directories_are_refused_with_the_reason() {
    for (name, change, phrase) in invalid_cases() {
        let mut dir = directory();
        change(&mut dir);
        let result = verify(&dir.clone().sign(&authority()));
        let Err(Error::InvalidDirectory(reason)) = &result else {
            panic!("{name}: {result:?}");
        };
        assert!(reason.contains(phrase), "{name}: {reason:?}");
        assert_eq!(accept_update(None, dir.clone()), result, "{name}");
        let message = result.unwrap_err().to_string();
        assert!(message.contains("sign it again"), "{name}: {message}");

        if !name.starts_with("duplicate") && !name.contains("consortium") {
            let entry = dir.members[1].clone();
            let mut edited = directory();
            edited.remove_member("Hospital 1").unwrap();
            let added = edited.add_member(entry);
            assert!(
                matches!(&added, Err(Error::InvalidDirectory(r)) if r.contains(phrase)),
                "{name}: add_member gave {added:?}"
            );
        }
    }
}

#[test]
fn an_update_must_have_a_higher_serial() {
    let current = directory();
    let mut newer = directory();
    newer.serial = current.serial + 1;
    newer.remove_member("Hospital 0").unwrap();
    assert_eq!(
        accept_update(Some(&current), newer.clone()),
        Ok(newer.clone())
    );
    assert_eq!(accept_update(None, current.clone()), Ok(current.clone()));

    for serial in [0, current.serial - 1, current.serial] {
        let mut old = directory();
        old.serial = serial;
        let result = accept_update(Some(&current), old);
        assert_eq!(
            result,
            Err(Error::StaleDirectory {
                serial,
                current: current.serial
            })
        );
        assert!(result.unwrap_err().to_string().contains("with serial 8"));
    }
}

/// The replay the serial exists for: an old signed directory that still lists a removed member.
#[test]
fn a_replayed_old_directory_is_refused() {
    let old = directory().sign(&authority());
    let mut current = directory();
    current.serial += 1;
    current.remove_member("Hospital 2").unwrap();
    let replayed = verify(&old).unwrap();
    assert_eq!(
        code(&accept_update(Some(&current), replayed)),
        Some("stale_directory")
    );
}

#[test]
fn an_update_must_keep_the_consortium() {
    let current = directory();
    let mut other = directory();
    other.serial += 1;
    other.consortium = "Elsewhere".into();
    assert_eq!(
        accept_update(Some(&current), other),
        Err(Error::OtherConsortium {
            expected: "North Sea Hospitals".into(),
            found: "Elsewhere".into()
        })
    );
}

#[test]
fn errors_have_stable_codes() {
    let cases = [
        (
            Error::DirectoryNotSignedByAuthority {
                signer: member_key(0),
            },
            "directory_not_signed_by_authority",
        ),
        (
            Error::StaleDirectory {
                serial: 1,
                current: 2,
            },
            "stale_directory",
        ),
        (
            Error::OtherConsortium {
                expected: "a".into(),
                found: "b".into(),
            },
            "other_consortium",
        ),
        (Error::InvalidDirectory("x".into()), "invalid_directory"),
        (
            Error::DuplicateMember {
                field: "name",
                value: "\"a\"".into(),
                existing: "a".into(),
            },
            "duplicate_member",
        ),
        (Error::UnknownMember("a".into()), "unknown_member"),
    ];
    let codes: std::collections::BTreeSet<_> = cases.iter().map(|(e, _)| e.error_code()).collect();
    assert_eq!(codes.len(), cases.len());
    // Each message ends with what to do about it.
    let advice = [
        "have the authority sign it",
        "sign the new directory with serial 3",
        "use the directory of \"a\"",
        "have the consortium authority sign it again",
        "remove \"a\" first",
        "list the directory's members",
    ];
    for ((error, expected), advice) in cases.iter().zip(advice) {
        assert_eq!(error.error_code(), *expected, "{error}");
        assert!(error.to_string().contains(advice), "{error}");
    }
    let newer = Error::UnsupportedVersion {
        what: Object::ConsortiumDirectory,
        found: 2,
        supported: 1,
    };
    assert!(
        newer.to_string().contains(
            "upgrade witmed or ask the consortium authority to sign a new consortium directory"
        ),
        "{newer}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Flipping any one bit of the signed wire form never yields an accepted, different directory.
    #[test]
    fn no_bit_flip_verifies_as_another_directory(bit in any::<prop::sample::Index>()) {
        let original = directory();
        let mut bytes = original.clone().sign(&authority()).to_bytes();
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let accepted = parse_signed_directory_bytes(&bytes).and_then(|e| verify(&e));
        prop_assert!(
            accepted.as_ref().map_or(true, |d| *d == original),
            "bit {} accepted as {:?}", bit, accepted
        );
    }
}
