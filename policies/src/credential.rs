//! Researcher credentials: an authority's signed statement of who a researcher is and which purposes they are approved for.
//!
//! In the spirit of a GA4GH Passport visa: an issuer the node trusts (a data
//! access committee or consortium authority) binds a researcher's public key
//! to their identity, institution, project and approved DUO purposes, and
//! says whether the use is commercial or not-for-profit, which consent
//! modifiers (NCU, NPU) depend on.
//!
//! The authority also assigns each researcher a stable `researcher_id`. A
//! node keys the researcher's privacy budget on (issuer, `researcher_id`),
//! not on the key, so a credential re-issued for a new key draws on the
//! same budget. Version 1 credentials had no such id and are refused.

use std::ops::Deref;

use serde::{Deserialize, Serialize};
use witmed_crypto::{Envelope, KeyPair, PublicKey};

use crate::duo::Terms;
use crate::error::{Error, Object};
use crate::signed::{self, Versioned};
use witmed_crypto::versioned::{self, Evolving, Layout};

/// Credential format version written today. Version 2 added `researcher_id`.
pub const CREDENTIAL_VERSION: u32 = 2;
/// Longest `researcher_id`, in bytes.
pub const MAX_RESEARCHER_ID_LEN: usize = 128;
/// Envelope domain of credentials.
pub const CREDENTIAL_DOMAIN: &str = "witmed/researcher-credential/v1";

/// An authority's statement about a researcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// Format version ([`CREDENTIAL_VERSION`]).
    pub version: u32,
    /// The researcher's key, which signs their queries.
    pub researcher: PublicKey,
    /// The authority's stable identifier for the researcher, the same in
    /// every credential it issues them whatever their key; their privacy
    /// budget at each node follows it. ASCII letters, digits and `._:@-`.
    pub researcher_id: String,
    /// The researcher's name.
    pub name: String,
    /// The researcher's institution.
    pub institution: String,
    /// The use is commercial (consents with NCU exclude it).
    pub commercial: bool,
    /// The institution is not-for-profit (consents with NPU require it).
    pub not_for_profit: bool,
    /// The approved project; empty when there is none (consents with IRB require one).
    pub project: String,
    /// Approved DUO primary purposes, e.g. `["HMB"]`.
    pub purposes: Vec<String>,
    /// First second (unix) of validity.
    pub issued_at: i64,
    /// First second (unix) the credential is no longer valid.
    pub expires: i64,
}

impl Versioned for Credential {
    const OBJECT: Object = Object::Credential;
    const DOMAIN: &'static str = CREDENTIAL_DOMAIN;
}

/// Why a version 1 credential is refused rather than upgraded (see [`explain_version_1`]).
const CREDENTIAL_V1_OBSOLETE: &str =
    "it carries no researcher_id, and budgets follow the researcher_id";

impl Evolving for Credential {
    const WHAT: &'static str = "researcher credential";
    const CURRENT: u32 = CREDENTIAL_VERSION;
    fn from_version(version: u32, layout: Layout<'_>) -> Result<Self, versioned::Error> {
        match version {
            CREDENTIAL_VERSION => layout.read::<Credential>(),
            1 => Err(versioned::obsolete::<Self>(1, CREDENTIAL_V1_OBSOLETE)),
            found => Err(versioned::unknown::<Self>(found)),
        }
    }
}

impl Credential {
    /// Signs the credential with the issuing authority's key.
    pub fn sign(self, authority_key: &KeyPair) -> Envelope {
        Envelope::seal(CREDENTIAL_DOMAIN, &self, authority_key)
    }

    /// Whether `issued_at <= now < expires`.
    pub fn valid_at(&self, now: i64) -> bool {
        self.issued_at <= now && now < self.expires
    }
}

/// A credential whose signature, issuer, contents and validity were checked.
/// Only [`verify_credential`] makes one. It derefs to the [`Credential`].
#[derive(Debug, Clone)]
pub struct VerifiedCredential {
    credential: Credential,
    terms: Terms,
    issuer: PublicKey,
}

impl VerifiedCredential {
    /// The credential.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The authority that signed it.
    pub fn issuer(&self) -> &PublicKey {
        &self.issuer
    }

    /// The approved purposes, parsed (primaries only; see [`verify_credential`]).
    pub fn terms(&self) -> &Terms {
        &self.terms
    }
}

impl Deref for VerifiedCredential {
    type Target = Credential;
    fn deref(&self) -> &Credential {
        &self.credential
    }
}

/// Verifies a credential against the issuers this node trusts, at time `now`.
///
/// Credentials list approved primary purposes only: DUO modifiers are
/// restrictions patients place, and the researcher's side of them is stated
/// by `commercial`, `not_for_profit` and `project`, so a modifier here is
/// refused rather than given a meaning it does not have.
pub fn verify_credential(
    envelope: &Envelope,
    trusted_issuers: &[PublicKey],
    now: i64,
) -> Result<VerifiedCredential, Error> {
    let credential: Credential = signed::open(envelope).map_err(explain_version_1)?;
    if !trusted_issuers.contains(&envelope.signer) {
        return Err(Error::UntrustedIssuer {
            issuer: envelope.signer,
        });
    }
    let terms = check_contents(&credential)?;
    check_time(&credential, now)?;
    Ok(VerifiedCredential {
        credential,
        terms,
        issuer: envelope.signer,
    })
}

/// A version 1 credential has no `researcher_id`, so no node could tell that
/// two of them for two keys are one researcher (one budget): refuse it with
/// what to do rather than guess an identity from the key.
fn explain_version_1(error: Error) -> Error {
    match error {
        Error::UnsupportedVersion { found: 1, .. } => Error::InvalidCredential(
            "it has format version 1, which carries no researcher_id, and budgets follow the researcher_id; the issuer must issue a new one (`witmed credential issue --researcher-id ID`)".into(),
        ),
        other => other,
    }
}

/// Refuses an empty, overlong or non-plain `researcher_id`: it names a
/// budget and is shown in logs, so it must be unambiguous and printable.
fn check_researcher_id(id: &str) -> Result<(), Error> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._:@-".contains(c);
    if id.is_empty() || id.len() > MAX_RESEARCHER_ID_LEN || !id.chars().all(plain) {
        return Err(Error::InvalidCredential(format!(
            "researcher_id {:?} must be 1 to {MAX_RESEARCHER_ID_LEN} ASCII letters, digits or ._:@-",
            id.chars().take(MAX_RESEARCHER_ID_LEN + 1).collect::<String>()
        )));
    }
    Ok(())
}

fn check_contents(credential: &Credential) -> Result<Terms, Error> {
    let invalid = |msg: String| Err(Error::InvalidCredential(msg));
    check_researcher_id(&credential.researcher_id)?;
    let terms = Terms::parse(&credential.purposes)?;
    if let Some(modifier) = terms.modifiers.first() {
        return invalid(format!(
            "it lists the modifier {modifier}; credentials list approved purposes only, and state commercial, not_for_profit and project instead"
        ));
    }
    if credential.commercial && credential.not_for_profit {
        return invalid("it says the use is both commercial and not-for-profit".into());
    }
    if credential.issued_at >= credential.expires {
        return invalid(format!(
            "issued_at {} is not before expires {}",
            credential.issued_at, credential.expires
        ));
    }
    Ok(terms)
}

/// `Expired` or `NotYetValid` unless `issued_at <= now < expires`.
fn check_time(credential: &Credential, now: i64) -> Result<(), Error> {
    if now < credential.issued_at {
        return Err(Error::NotYetValid {
            what: Object::Credential,
            not_before: credential.issued_at,
            now,
        });
    }
    if now >= credential.expires {
        return Err(Error::Expired {
            what: Object::Credential,
            expires: credential.expires,
            now,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use witmed_crypto::Role;

    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn authority() -> KeyPair {
        KeyPair::from_seed(Role::Authority, &[6; 32])
    }

    fn credential(researcher_id: &str) -> Credential {
        Credential {
            version: CREDENTIAL_VERSION,
            researcher: KeyPair::from_seed(Role::Researcher, &[7; 32]).public(),
            researcher_id: researcher_id.into(),
            name: "Ada".into(),
            institution: "University".into(),
            commercial: false,
            not_for_profit: true,
            project: "p".into(),
            purposes: vec!["HMB".into()],
            issued_at: NOW - 60,
            expires: NOW + 86_400,
        }
    }

    fn verify(envelope: &Envelope) -> Result<VerifiedCredential, Error> {
        verify_credential(envelope, &[authority().public()], NOW)
    }

    /// The version 1 layout, as issued before `researcher_id` existed.
    #[derive(Serialize)]
    struct CredentialV1 {
        version: u32,
        researcher: PublicKey,
        name: String,
        institution: String,
        commercial: bool,
        not_for_profit: bool,
        project: String,
        purposes: Vec<String>,
        issued_at: i64,
        expires: i64,
    }

    #[test]
    fn a_version_1_credential_is_refused_with_what_to_do() {
        let c = credential("x");
        let v1 = CredentialV1 {
            version: 1,
            researcher: c.researcher,
            name: c.name,
            institution: c.institution,
            commercial: c.commercial,
            not_for_profit: c.not_for_profit,
            project: c.project,
            purposes: c.purposes,
            issued_at: c.issued_at,
            expires: c.expires,
        };
        let envelope = Envelope::seal(CREDENTIAL_DOMAIN, &v1, &authority());
        let error = verify(&envelope).unwrap_err();
        assert_eq!(error.error_code(), "invalid_credential");
        let message = error.to_string();
        assert!(
            message.contains("version 1") && message.contains("--researcher-id"),
            "{message}"
        );
    }

    #[test]
    fn researcher_ids_that_are_empty_long_or_not_plain_are_refused() {
        let long = "a".repeat(MAX_RESEARCHER_ID_LEN + 1);
        for bad in ["", "ada lovelace", "ada\n", "ädä", long.as_str()] {
            let error = verify(&credential(bad).sign(&authority())).unwrap_err();
            assert!(
                matches!(&error, Error::InvalidCredential(m) if m.contains("researcher_id")),
                "{bad:?}: {error}"
            );
        }
        let max = "a".repeat(MAX_RESEARCHER_ID_LEN);
        for good in ["ada@uni.example", "orcid:0000-0002-1825-0097", max.as_str()] {
            let verified = verify(&credential(good).sign(&authority())).unwrap();
            assert_eq!(verified.researcher_id, good);
        }
    }
}
