//! Researcher credentials: an authority's signed statement of who a researcher is and which purposes they are approved for.
//!
//! In the spirit of a GA4GH Passport visa: an issuer the node trusts (a data
//! access committee or consortium authority) binds a researcher's public key
//! to their identity, institution, project and approved DUO purposes, and
//! says whether the use is commercial or not-for-profit, which consent
//! modifiers (NCU, NPU) depend on.

use std::ops::Deref;

use serde::{Deserialize, Serialize};
use witmed_crypto::{Envelope, KeyPair, PublicKey};

use crate::duo::Terms;
use crate::error::{Error, Object};
use crate::signed::{self, Versioned};

/// Credential format version written today.
pub const CREDENTIAL_VERSION: u32 = 1;
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
    const VERSION: u32 = CREDENTIAL_VERSION;
    fn version(&self) -> u32 {
        self.version
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
    let credential: Credential = signed::open(envelope)?;
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

fn check_contents(credential: &Credential) -> Result<Terms, Error> {
    let invalid = |msg: String| Err(Error::InvalidCredential(msg));
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
