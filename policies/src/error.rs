//! The crate's one error type: why a signed object or a policy value was refused, and what to do.

use std::fmt;

use witmed_crypto::envelope;
use witmed_crypto::{Pseudonym, PublicKey};

/// Which kind of signed object an error is about, so one variant can serve all
/// kinds while its message still gives advice that fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    ConsentToken,
    Revocation,
    Reenrolment,
    Credential,
    NodePolicy,
    ConsortiumDirectory,
    PrivacyCap,
}

impl Object {
    /// Who can produce a replacement, for the "what to do" half of messages.
    fn remedy(self) -> &'static str {
        match self {
            Object::ConsentToken => "ask the patient to sign a new consent token",
            Object::Revocation => "ask the patient to sign a new revocation",
            Object::Reenrolment => {
                "have the hospital administrator (or the patient's old key) sign a new re-enrolment"
            }
            Object::Credential => "ask the credential's issuer for a new credential",
            Object::NodePolicy => "ask the hospital administrator to sign a new node policy",
            Object::ConsortiumDirectory => {
                "ask the consortium authority to sign a new consortium directory"
            }
            Object::PrivacyCap => "ask the patient to sign a new privacy cap request",
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Object::ConsentToken => "consent token",
            Object::Revocation => "consent revocation",
            Object::Reenrolment => "patient re-enrolment",
            Object::Credential => "researcher credential",
            Object::NodePolicy => "node policy",
            Object::ConsortiumDirectory => "consortium directory",
            Object::PrivacyCap => "privacy cap request",
        })
    }
}

/// Everything `witmed-policies` can refuse. Each message says what to do;
/// [`Error::error_code`] gives a stable name for scripts, logs and metrics.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The signed container itself was refused: too large, malformed or
    /// truncated, of another kind (domain), or its signature does not verify.
    /// The inner error keeps the specific kind.
    #[error(transparent)]
    Envelope(#[from] envelope::Error),
    /// The payload's own `version` is not one this witmed reads.
    #[error("{what} has format version {found}, this witmed reads version {supported}; upgrade witmed or {}", what.remedy())]
    UnsupportedVersion {
        what: Object,
        found: u32,
        supported: u32,
    },
    /// Made for another hospital node: a replay, or sent to the wrong node.
    #[error("{what} was made for node {intended}, not this node ({this}); it may be a replay; {}", what.remedy())]
    OtherNode {
        what: Object,
        intended: PublicKey,
        this: PublicKey,
    },
    /// No patient key is enrolled at this node for the pseudonym.
    #[error("patient {patient} has no enrolled key at this node; hospital staff must enrol the patient's key first")]
    NotEnrolled { patient: Pseudonym },
    /// Signed by a key other than the one enrolled for the patient.
    #[error("signed by {signer}, which is not the key enrolled for patient {patient}; the patient must sign with their enrolled key (or staff re-enrol a new key)")]
    WrongPatientKey {
        patient: Pseudonym,
        signer: PublicKey,
    },
    /// Validity ended at or before `now`.
    #[error("{what} expired at {expires} (now {now}); {}", what.remedy())]
    Expired {
        what: Object,
        expires: i64,
        now: i64,
    },
    /// Validity starts after `now`.
    #[error(
        "{what} is not valid before {not_before} (now {now}); wait, or check this node's clock"
    )]
    NotYetValid {
        what: Object,
        not_before: i64,
        now: i64,
    },
    /// A credential signed by an issuer this node does not trust.
    #[error("credential issuer {issuer} is not trusted by this node; use a credential from an issuer listed in the node policy, or have the hospital add the issuer")]
    UntrustedIssuer { issuer: PublicKey },
    /// A patient re-enrolment signed by neither the hospital administrator nor the patient's enrolled key.
    #[error("patient re-enrolment for {patient} is signed by {signer}, which is neither this hospital's administrator key nor the key enrolled for the patient; a key change needs one of them (dual control): sign it with the hospital key (`--admin-key`) or the patient's old key (`--old-patient-key`)")]
    ReenrolmentNotAuthorised {
        patient: Pseudonym,
        signer: PublicKey,
    },
    /// A node policy signed by someone other than the hospital administrator.
    #[error("node policy is signed by {signer}, not by this hospital's administrator key; have the administrator sign it")]
    PolicyNotSignedByHospital { signer: PublicKey },
    /// A node policy whose serial is not above the one in force (a rollback or replay).
    #[error("node policy serial {serial} is not above the serial {current} in force; sign the new policy with serial {}", current.saturating_add(1))]
    StalePolicy { serial: u64, current: u64 },
    /// A node policy with values that cannot be enforced.
    #[error("node policy is invalid: {0}; fix it and sign it again")]
    InvalidPolicy(String),
    /// A consent token or revocation with inconsistent contents.
    #[error("consent is invalid: {0}; the patient must sign a corrected one")]
    InvalidConsent(String),
    /// A privacy cap request with contents that cannot be applied.
    #[error("privacy cap request is invalid: {0}; sign a new request with a cap from 0 to 1e6")]
    InvalidCap(String),
    /// A credential with inconsistent contents.
    #[error("credential is invalid: {0}; ask the issuer for a corrected one")]
    InvalidCredential(String),
    /// A consortium directory signed by someone other than the consortium authority.
    #[error("consortium directory is signed by {signer}, not by the consortium authority key this node trusts; have the authority sign it, or check which authority key this node is configured with")]
    DirectoryNotSignedByAuthority { signer: PublicKey },
    /// A consortium directory whose serial is not above the one in force (a rollback or replay).
    #[error("consortium directory serial {serial} is not above the serial {current} in force; the authority must sign the new directory with serial {}", current.saturating_add(1))]
    StaleDirectory { serial: u64, current: u64 },
    /// A consortium directory for another consortium than the one in force.
    #[error("consortium directory is for consortium {found:?}, but this node is a member of {expected:?}; use the directory of {expected:?}")]
    OtherConsortium { expected: String, found: String },
    /// A consortium directory with values that cannot be used.
    #[error("consortium directory is invalid: {0}; correct it, then have the consortium authority sign it again")]
    InvalidDirectory(String),
    /// Adding a member whose name, signing key or peer id another member already has.
    #[error("{field} {value} already belongs to member {existing:?}; to replace that member, remove {existing:?} first, otherwise give the new member its own {field}")]
    DuplicateMember {
        /// `"name"`, `"signing key"` or `"peer id"`.
        field: &'static str,
        value: String,
        existing: String,
    },
    /// No member of the directory has this name.
    #[error("no member of the consortium directory is named {0:?}; names are case-sensitive, list the directory's members to find the right one")]
    UnknownMember(String),
    /// A string that is not a DUO code witmed enforces.
    #[error("{0:?} is not a DUO code witmed knows; use GRU, HMB, POA or DS-<disease id> (letters, digits, ':', '.', '_', '-'), optionally with the modifiers NCU, NPU or IRB")]
    UnknownPurpose(String),
    /// A purpose list with modifiers only: it would permit nothing.
    #[error("purposes {0:?} name no primary DUO purpose; add GRU, HMB, POA or DS-<disease id>")]
    NoPrimaryPurpose(Vec<String>),
}

impl Error {
    /// A stable snake_case name for scripts, logs and metrics; never changes for a variant.
    pub fn error_code(&self) -> &'static str {
        match self {
            Error::Envelope(inner) => envelope_code(inner),
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::OtherNode { .. } => "other_node",
            Error::NotEnrolled { .. } => "not_enrolled",
            Error::WrongPatientKey { .. } => "wrong_patient_key",
            Error::Expired { .. } => "expired",
            Error::NotYetValid { .. } => "not_yet_valid",
            Error::UntrustedIssuer { .. } => "untrusted_issuer",
            Error::ReenrolmentNotAuthorised { .. } => "reenrolment_not_authorised",
            Error::PolicyNotSignedByHospital { .. } => "policy_not_signed_by_hospital",
            Error::StalePolicy { .. } => "stale_policy",
            Error::InvalidPolicy(_) => "invalid_policy",
            Error::InvalidConsent(_) => "invalid_consent",
            Error::InvalidCap(_) => "invalid_cap",
            Error::InvalidCredential(_) => "invalid_credential",
            Error::DirectoryNotSignedByAuthority { .. } => "directory_not_signed_by_authority",
            Error::StaleDirectory { .. } => "stale_directory",
            Error::OtherConsortium { .. } => "other_consortium",
            Error::InvalidDirectory(_) => "invalid_directory",
            Error::DuplicateMember { .. } => "duplicate_member",
            Error::UnknownMember(_) => "unknown_member",
            Error::UnknownPurpose(_) => "unknown_purpose",
            Error::NoPrimaryPurpose(_) => "no_primary_purpose",
        }
    }
}

fn envelope_code(error: &envelope::Error) -> &'static str {
    match error {
        envelope::Error::TooLarge { .. } => "too_large",
        envelope::Error::Malformed(_) => "malformed",
        envelope::Error::UnsupportedVersion(_) => "unsupported_envelope_version",
        envelope::Error::WrongDomain { .. } => "wrong_domain",
        envelope::Error::BadSignature { .. } => "bad_signature",
        envelope::Error::Payload(_) => "undecodable_payload",
        envelope::Error::NonCanonical => "non_canonical",
        envelope::Error::PayloadVersion(_) => "unsupported_version",
    }
}
