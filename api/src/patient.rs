//! Patients over HTTP, each request signed with their own enrolled key: their record, vital signs, consents, audit view and privacy account; grant and revoke, set a cap.

use std::sync::Arc;

use axum::extract::State as Extract;
use axum::Json;
use serde::{Deserialize, Serialize};
use witmed_crypto::Pseudonym;
use witmed_node::accounts::{self, Account};
use witmed_node::audit::PatientView;
use witmed_node::consent_ops::{self, Submitted};
use witmed_node::node::Node;
use witmed_node::store::{self, cf, ObservationRecord, PatientRecord};
use witmed_policies::cap::{CapRequest, CAP_DOMAIN};
use witmed_protocol::vocab::VITAL_SIGN_CODES;

use crate::error::ApiError;
use crate::server::{blocking, now, SignedByPatient, State};
use crate::staff::{tokens, TokenView};

/// A patient's own record.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub pseudonym: String,
    pub node: String,
    pub age_years: Option<f64>,
    pub sex: String,
    /// Numeric attributes by name (`icu_type`, `length_of_stay_days`, ...).
    pub attributes: Vec<(String, f64)>,
}

/// `GET /api/v1/patient/me`: the signing patient's own record.
#[utoipa::path(get, path = "/api/v1/patient/me",
    responses((status = 200, body = Me), (status = 401, body = crate::error::ErrorBody)))]
pub async fn me(
    Extract(state): Extract<Arc<State>>,
    signed: SignedByPatient,
) -> Result<Json<Me>, ApiError> {
    let p = signed.patient;
    let node = state.node.clone();
    blocking(move || {
        let record: PatientRecord = node
            .store
            .get(cf::PATIENTS, &p.0)
            .map_err(internal)?
            .ok_or_else(|| ApiError::UnknownPatient("this node holds no record of you".into()))?;
        Ok(Json(Me {
            pseudonym: p.to_hex(),
            node: node.config.name.clone(),
            age_years: record.age_years,
            sex: format!("{:?}", record.sex).to_lowercase(),
            attributes: record.attributes,
        }))
    })
    .await
}

/// One vital sign over time.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Series {
    /// LOINC code.
    pub code: String,
    /// `[time, value]`: time in seconds since the record's time origin.
    pub points: Vec<(i64, f64)>,
}

/// `GET /api/v1/patient/observations`: the signing patient's vital signs, one series per code.
#[utoipa::path(get, path = "/api/v1/patient/observations", responses((status = 200, body = Vec<Series>)))]
pub async fn observations(
    Extract(state): Extract<Arc<State>>,
    signed: SignedByPatient,
) -> Result<Json<Vec<Series>>, ApiError> {
    let p = signed.patient;
    let node = state.node.clone();
    blocking(move || {
        let mut all = Vec::new();
        for code in VITAL_SIGN_CODES {
            let prefix = store::observation_prefix(&p, &node.store.codes().observation(code));
            let mut points = Vec::new();
            node.store
                .scan_records::<ObservationRecord>(cf::OBSERVATIONS, &prefix, |key, r| {
                    if let Some((_, _, time)) = store::parse_observation_key(key) {
                        points.push((time, r.value));
                    }
                    Ok(())
                })
                .map_err(internal)?;
            if !points.is_empty() {
                all.push(Series {
                    code: code.to_string(),
                    points,
                });
            }
        }
        Ok(Json(all))
    })
    .await
}

/// `GET /api/v1/patient/consents`: the signing patient's own consent tokens.
#[utoipa::path(get, path = "/api/v1/patient/consents", responses((status = 200, body = Vec<TokenView>)))]
pub async fn consents(
    Extract(state): Extract<Arc<State>>,
    signed: SignedByPatient,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    let p = signed.patient;
    Ok(Json(tokens(&state, |q| *q == p)))
}

/// A signed consent token or revocation, in its text form (`witmed consent grant` / `revoke`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    pub signed: String,
}

/// What the node stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stored {
    /// `token` or `revocation`.
    pub kind: String,
    /// The token's id (for a revocation, the revoked token's).
    pub token_id: String,
}

/// `POST /api/v1/patient/consents`: grants or revokes consent, in force for the next query.
#[utoipa::path(post, path = "/api/v1/patient/consents", request_body = Submission,
    responses((status = 200, body = Stored), (status = 403, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub async fn submit(
    Extract(state): Extract<Arc<State>>,
    signed: SignedByPatient,
) -> Result<Json<Stored>, ApiError> {
    let p = signed.patient;
    let asked: Submission = signed.json()?;
    let node = state.node.clone();
    blocking(move || {
        // Only the patient's own signed consent: checked before anything is stored.
        let envelope = parse_submitted(&asked.signed)?;
        require_own_key(&node, &p, &envelope, "the consent")?;
        let stored =
            consent_ops::submit(&node, &asked.signed, now()).map_err(|e| ApiError::Refused {
                code: e.code(),
                message: e.to_string(),
            })?;
        Ok(Json(match stored {
            Submitted::Token { id, .. } => Stored {
                kind: "token".into(),
                token_id: id,
            },
            Submitted::Revocation { token_id, .. } => Stored {
                kind: "revocation".into(),
                token_id,
            },
        }))
    })
    .await
}

/// The signing patient's view of the node's audit log, to check against the node's signed head.
///
/// `view` is `witmed_node::audit::PatientView` as serde writes it to JSON:
/// `patient` (hex pseudonym); `start_seq` and `start_hash` (32 numbers, the
/// bytes of the hash of the entry before the first item); `items`, one per
/// entry from `start_seq + 1` to the head's, in order, each one of
/// `{"Own": ENTRY}` (an entry about you, in full: `version`, `at`, `kind`,
/// `actor`, `detail`, `subject`, `chain` = `{seq, prev, salt, hash}` and
/// `research`, null), `{"Use": ENTRY}` (the entry of a research answer that
/// included your data, in full, `subject` null and `research` = `{charge,
/// query_id, researcher (16 bytes: the code your account names them by),
/// researcher_name, institution, project, purpose (DUO code), aggregate
/// (count, mean, survival, ...), mode (dp or encrypted), epsilon, delta}`;
/// the newest 256 such uses are listed) or
/// `{"Other": {"seq": N, "digest": [32 bytes]}}` (someone else's entry,
/// salted digest only); and `head`, the node's signed envelope (`version`,
/// `domain` = `witmed/audit-head/v1`, `payload` bytes, `signer` hex, `signature` hex).
/// To verify: check `head` is signed by the node key you hold (pin it out of
/// band; `node_key` here is a convenience), then from `start_hash` fold
/// `link_hash(seq, prev, digest)` over the items (for your own entries the
/// digest of their content, which must equal their recorded link; an entry
/// with a research use digests under `witmed/audit-content/v3` with the use
/// appended, see `witmed_node::audit::Entry::digest`) and compare
/// with the head's `seq` and `hash`. `PatientView::verify` does exactly this.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditView {
    /// The node's identity key (hex), which signs the head.
    pub node_key: String,
    /// How many entries in `view` are about you.
    pub own_entries: usize,
    /// How many entries in `view` are research answers that included your data.
    pub uses: usize,
    /// The view itself (see above).
    #[schema(value_type = Object)]
    pub view: PatientView,
}

/// `GET /api/v1/patient/audit`: the signing patient's audit entries with the proof material to check them against a head the node signs.
#[utoipa::path(get, path = "/api/v1/patient/audit",
    responses((status = 200, body = AuditView), (status = 401, body = crate::error::ErrorBody)))]
pub async fn audit(
    Extract(state): Extract<Arc<State>>,
    signed: SignedByPatient,
) -> Result<Json<AuditView>, ApiError> {
    let p = signed.patient;
    let node = state.node.clone();
    blocking(move || {
        let view = node.audit_view(p, now()).map_err(|e| match e {
            no_head @ witmed_node::audit::ViewError::NoHead => {
                ApiError::AuditUnavailable(no_head.to_string())
            }
            other => internal(other),
        })?;
        Ok(Json(AuditView {
            node_key: node.id().to_hex(),
            own_entries: view.entries().count(),
            uses: view.uses().count(),
            view,
        }))
    })
    .await
}

/// A patient's privacy account at this node: what the answers computed from their data cost.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccountView {
    pub pseudonym: String,
    /// Sum of the epsilons of every answer that included you.
    pub total_epsilon: f64,
    pub total_delta: f64,
    /// How many answers included you.
    pub answers: u64,
    /// Per fixed window of the node's budget window length, oldest first.
    pub per_window: Vec<WindowView>,
    /// Per researcher, named by the node's keyed digest (hex), in first-charged order.
    pub per_researcher: Vec<ResearcherView>,
    /// Your cap, if you set one.
    pub cap: Option<CapView>,
}

/// One window of an account.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WindowView {
    /// First second of the window (unix time).
    pub start: i64,
    pub seconds: i64,
    pub epsilon: f64,
    pub delta: f64,
    pub answers: u64,
}

/// One researcher's share of an account.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResearcherView {
    /// The ledger's keyed digest of the researcher (32 hex characters);
    /// 32 `f`s adds up every researcher beyond the 63 an account names.
    pub researcher: String,
    pub epsilon: f64,
    pub delta: f64,
    pub answers: u64,
}

/// A patient's cap.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CapView {
    /// Total epsilon after which your data is left out.
    pub epsilon: f64,
    /// The id of the signed request that set it.
    pub request: String,
    /// When it was applied (unix seconds).
    pub set_at: i64,
}

impl AccountView {
    /// The JSON form of `account`, the account of `p`.
    pub fn of(p: &Pseudonym, account: &Account) -> AccountView {
        AccountView {
            pseudonym: p.to_hex(),
            total_epsilon: account.total_epsilon,
            total_delta: account.total_delta,
            answers: account.answers,
            per_window: account
                .per_window
                .iter()
                .map(|w| WindowView {
                    start: w.start,
                    seconds: w.seconds,
                    epsilon: w.epsilon,
                    delta: w.delta,
                    answers: w.answers,
                })
                .collect(),
            per_researcher: account
                .per_researcher
                .iter()
                .map(|r| ResearcherView {
                    researcher: hex::encode(r.researcher),
                    epsilon: r.epsilon,
                    delta: r.delta,
                    answers: r.answers,
                })
                .collect(),
            cap: account.cap.as_ref().map(|c| CapView {
                epsilon: c.epsilon,
                request: c.request.clone(),
                set_at: c.set_at,
            }),
        }
    }
}

/// `GET /api/v1/patient/account`: the signing patient's privacy account.
#[utoipa::path(get, path = "/api/v1/patient/account",
    responses((status = 200, body = AccountView), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub async fn account(
    Extract(state): Extract<Arc<State>>,
    signed: SignedByPatient,
) -> Result<Json<AccountView>, ApiError> {
    let p = signed.patient;
    let node = state.node.clone();
    blocking(move || {
        let account = accounts::of(&node, &p).map_err(account_error)?;
        Ok(Json(AccountView::of(&p, &account)))
    })
    .await
}

/// What a cap request did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CapApplied {
    /// The cap now in force; null if the request removed it.
    pub epsilon: Option<f64>,
    /// Your total so far.
    pub total_epsilon: f64,
}

/// `POST /api/v1/patient/cap`: sets or removes the signing patient's privacy cap
/// (body `{"signed": "<privacy cap request envelope text>"}`, signed with your
/// own enrolled key, as `witmed patient cap` writes it); in force for the next query.
#[utoipa::path(post, path = "/api/v1/patient/cap", request_body = Submission,
    responses((status = 200, body = CapApplied), (status = 403, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub async fn cap(
    Extract(state): Extract<Arc<State>>,
    signed: SignedByPatient,
) -> Result<Json<CapApplied>, ApiError> {
    let p = signed.patient;
    let asked: Submission = signed.json()?;
    let node = state.node.clone();
    blocking(move || {
        // Only the patient's own cap, signed with their own key: checked before anything is stored.
        let envelope = parse_submitted(&asked.signed)?;
        let request: CapRequest = envelope
            .open(CAP_DOMAIN)
            .map_err(|e| ApiError::BadRequest(format!("signed: not a privacy cap request: {e}")))?;
        if request.patient != p {
            return Err(ApiError::Forbidden(
                "the cap request is for another patient; submit only your own".into(),
            ));
        }
        require_own_key(&node, &p, &envelope, "the cap request")?;
        let set = accounts::set_cap(&node, &asked.signed, now()).map_err(account_error)?;
        Ok(Json(CapApplied {
            epsilon: set.epsilon,
            total_epsilon: set.total_epsilon,
        }))
    })
    .await
}

/// A signed text a patient submits, parsed (not yet verified).
fn parse_submitted(text: &str) -> Result<witmed_crypto::Envelope, ApiError> {
    witmed_policies::parse_signed(text).map_err(|e| ApiError::BadRequest(format!("signed: {e}")))
}

/// Refuses, before anything is stored, a submission not signed with the key enrolled for patient `p`.
fn require_own_key(
    node: &Node,
    p: &Pseudonym,
    envelope: &witmed_crypto::Envelope,
    what: &str,
) -> Result<(), ApiError> {
    if node.consent_registry().enrolled_key(p) == Some(envelope.signer) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "{what} is not signed with your enrolled key; submit only your own"
        )))
    }
}

fn account_error(e: accounts::Error) -> ApiError {
    match e {
        accounts::Error::Store(e) => internal(e),
        accounts::Error::UnknownPatient(_) => {
            ApiError::UnknownPatient("this node holds no record of you".into())
        }
        other => ApiError::Refused {
            code: other.code(),
            message: other.to_string(),
        },
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}
