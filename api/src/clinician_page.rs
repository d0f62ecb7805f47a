//! The clinician page: the ward's patients with their latest vitals, NEWS2 and trend, open alerts newest first, live; a patient's charts. Staff only.
//!
//! Static files from `api/web/clinician/`, built into the binary and served with a strict
//! content security policy (only this origin's own scripts and styles; nothing inline). The
//! page signs in with the staff token, which it keeps in memory and sends as a bearer token on
//! every request; alerts arrive over the staff alert stream, read with `fetch` because
//! `EventSource` cannot send that header. So no cookie exists to be ridden by another site.
//!
//! The ward views ([`ward_patient`], [`detail`]) score NEWS2 with `witmed_care` over the
//! readings the node stored, exactly as ingestion does, so the page shows no number the node
//! did not compute.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, State as Extract};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use witmed_care::news2::{self, Parameter, Reading, SpO2Scale, Trend};
use witmed_care::Vital;
use witmed_crypto::Pseudonym;
use witmed_node::devices;
use witmed_protocol::device_request as wire;

use crate::error::ApiError;
use crate::server::{blocking, now, FromStaff, State};

/// The page's own routes, as `(method, path)`: not API routes, so not in the OpenAPI document.
pub const PAGE_ROUTES: [(&str, &str); 4] = [
    ("GET", "/clinician"),
    ("GET", "/clinician/"),
    ("GET", "/clinician/app.js"),
    ("GET", "/clinician/style.css"),
];

/// Where the page lives.
pub const PAGE_PATH: &str = "/clinician/";

/// The page's content security policy: only this origin's files, no inline script or style,
/// never framed, requests only to this node.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

/// Open alerts listed on the ward at most.
pub const MAX_WARD_ALERTS: usize = 100;

/// Patients listed on the ward at most (those with an active device, by pseudonym).
pub const MAX_WARD_PATIENTS: usize = 200;

/// `GET /api/v1/staff/ward`: every patient with an active device, their latest vitals, NEWS2 and
/// trend; open alerts newest first.
#[utoipa::path(get, path = "/api/v1/staff/ward",
    responses((status = 200, description = "the ward (api::clinician_page::Ward)"),
        (status = 401, body = crate::error::ErrorBody)))]
pub async fn ward_view(
    Extract(state): Extract<Arc<State>>,
    _staff: FromStaff,
) -> Result<Json<Ward>, ApiError> {
    let node = state.node.clone();
    let window = state.devices.window_seconds;
    blocking(move || {
        let now = now();
        let patients: BTreeSet<String> = devices::list(&node)?
            .into_iter()
            .filter(|d| d.retired_at.is_none())
            .map(|d| d.patient)
            .collect();
        let mut rows = Vec::new();
        let mut alerts = Vec::new();
        for hex in patients.into_iter().take(MAX_WARD_PATIENTS) {
            let patient: Pseudonym = hex
                .parse()
                .map_err(|e| ApiError::Internal(format!("stored device patient {hex}: {e}")))?;
            let vitals = devices::vitals(&node, &patient, now)?;
            alerts.extend(vitals.alerts.iter().filter(|a| a.ack.is_none()).cloned());
            rows.push(ward_patient(&vitals, now, window));
        }
        Ok(Json(ward(rows, alerts, now, window)))
    })
    .await
}

/// `GET /api/v1/staff/ward/{patient}`: one patient's readings, NEWS2 now and over time, alerts.
#[utoipa::path(get, path = "/api/v1/staff/ward/{patient}",
    params(("patient" = String, Path, description = "the patient's pseudonym, hex")),
    responses((status = 200, description = "the patient's page (api::clinician_page::Detail)"),
        (status = 422, body = crate::error::ErrorBody)))]
pub async fn patient_view(
    Extract(state): Extract<Arc<State>>,
    patient: Result<Path<String>, axum::extract::rejection::PathRejection>,
    _staff: FromStaff,
) -> Result<Json<Detail>, ApiError> {
    let Path(hex) = patient.map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
    let patient: Pseudonym = hex
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("patient: {e}")))?;
    let node = state.node.clone();
    let window = state.devices.window_seconds;
    blocking(move || {
        let now = now();
        let vitals = devices::vitals(&node, &patient, now)?;
        Ok(Json(detail(vitals, now, window)))
    })
    .await
}

/// The page's routes and its two staff API routes, to merge into the API's router.
pub fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/api/v1/staff/ward", get(ward_view))
        .route("/api/v1/staff/ward/{patient}", get(patient_view))
        .route("/clinician", get(|| async { Redirect::to(PAGE_PATH) }))
        .route(
            "/clinician/",
            get(|| {
                asset(
                    "text/html; charset=utf-8",
                    include_str!("../web/clinician/index.html"),
                )
            }),
        )
        .route(
            "/clinician/app.js",
            get(|| {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("../web/clinician/app.js"),
                )
            }),
        )
        .route(
            "/clinician/style.css",
            get(|| {
                asset(
                    "text/css; charset=utf-8",
                    include_str!("../web/clinician/style.css"),
                )
            }),
        )
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            // The files change with the binary: revalidate rather than keep a stale page.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A patient's NEWS2 as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct News2View {
    pub total: u8,
    pub band: news2::Band,
    pub scale: SpO2Scale,
    pub sub_scores: news2::SubScores,
    /// Unix seconds of the newest reading in the set.
    pub at: i64,
}

/// One point of a patient's NEWS2 over time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoint {
    pub at: i64,
    pub total: u8,
    pub band: news2::Band,
}

/// One patient's row on the ward.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WardPatient {
    /// Pseudonym, hex.
    pub patient: String,
    pub hypercapnic: bool,
    /// The newest reading of each vital-sign code.
    pub latest: Vec<wire::VitalReading>,
    /// NEWS2 of the newest fresh set at `now`, if there is one.
    pub news2: Option<News2View>,
    /// The parameters with no reading in the window (empty when `news2` is given).
    pub missing: Vec<Parameter>,
    /// From the previous scored set to the newest.
    pub trend: Option<Trend>,
    pub open_alerts: usize,
    /// Unix seconds of the newest open alert.
    pub newest_open_alert: Option<i64>,
}

/// The ward: patients with open alerts first (newest alert first), then by NEWS2, highest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ward {
    pub now: i64,
    pub window_seconds: u32,
    pub patients: Vec<WardPatient>,
    /// Open alerts of every patient, newest first (at most [`MAX_WARD_ALERTS`]).
    pub alerts: Vec<wire::Alert>,
}

/// One patient's page: their readings, their NEWS2 now and over time, their alerts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detail {
    pub patient: String,
    pub news2: Option<News2View>,
    pub missing: Vec<Parameter>,
    pub series: Vec<SeriesPoint>,
    pub readings: Vec<wire::VitalReading>,
    pub alerts: Vec<wire::Alert>,
}

fn scale_of(vitals: &wire::Vitals) -> SpO2Scale {
    if vitals.hypercapnic {
        SpO2Scale::Two
    } else {
        SpO2Scale::One
    }
}

/// The readings NEWS2 can use (known codes; the node stores them in canonical units).
fn care_readings(vitals: &wire::Vitals) -> Vec<Reading> {
    vitals
        .readings
        .iter()
        .filter_map(|r| {
            Vital::from_code(&r.code).map(|vital| Reading {
                vital,
                at: r.time,
                value: r.value,
            })
        })
        .collect()
}

/// NEWS2 at `now` over the window, or what is missing.
fn news2_now(
    readings: &[Reading],
    now: i64,
    window_seconds: u32,
    scale: SpO2Scale,
) -> (Option<News2View>, Vec<Parameter>) {
    match news2::fresh_set(readings, now, window_seconds) {
        Ok(set) => {
            let score = news2::score(&set.observations, scale);
            let view = News2View {
                total: score.total,
                band: score.band,
                scale,
                sub_scores: score.sub_scores,
                at: set.newest,
            };
            (Some(view), Vec::new())
        }
        Err(missing) => (None, missing.parameters),
    }
}

fn series(readings: &[Reading], window_seconds: u32, scale: SpO2Scale) -> Vec<SeriesPoint> {
    news2::series(readings, window_seconds, scale)
        .into_iter()
        .map(|(at, s)| SeriesPoint {
            at,
            total: s.total,
            band: s.band,
        })
        .collect()
}

/// The trend between the last two scored sets whose totals differ from nothing: the previous
/// scored time's total against the newest.
fn trend_of(series: &[SeriesPoint]) -> Option<Trend> {
    match series {
        [.., previous, latest] => Some(Trend::between(previous.total, latest.total)),
        _ => None,
    }
}

/// The newest reading of each code, in code order.
fn latest_of(vitals: &wire::Vitals) -> Vec<wire::VitalReading> {
    let mut latest: std::collections::BTreeMap<&str, &wire::VitalReading> = Default::default();
    for r in &vitals.readings {
        let newer = latest
            .get(r.code.as_str())
            .is_none_or(|held| r.time >= held.time);
        if newer {
            latest.insert(&r.code, r);
        }
    }
    latest.into_values().cloned().collect()
}

/// One patient's ward row from what the node stored for them.
pub fn ward_patient(vitals: &wire::Vitals, now: i64, window_seconds: u32) -> WardPatient {
    let readings = care_readings(vitals);
    let scale = scale_of(vitals);
    let (news2, missing) = news2_now(&readings, now, window_seconds, scale);
    let open: Vec<&wire::Alert> = vitals.alerts.iter().filter(|a| a.ack.is_none()).collect();
    WardPatient {
        patient: vitals.patient.clone(),
        hypercapnic: vitals.hypercapnic,
        latest: latest_of(vitals),
        news2,
        missing,
        trend: trend_of(&series(&readings, window_seconds, scale)),
        open_alerts: open.len(),
        newest_open_alert: open.iter().map(|a| a.at).max(),
    }
}

/// The ward from each patient's row and the open alerts, in the page's order.
pub fn ward(
    mut patients: Vec<WardPatient>,
    mut alerts: Vec<wire::Alert>,
    now: i64,
    window_seconds: u32,
) -> Ward {
    patients.sort_by(|a, b| {
        b.newest_open_alert
            .cmp(&a.newest_open_alert)
            .then_with(|| {
                let total = |p: &WardPatient| p.news2.as_ref().map(|n| n.total);
                total(b).cmp(&total(a))
            })
            .then_with(|| a.patient.cmp(&b.patient))
    });
    alerts.retain(|a| a.ack.is_none());
    alerts.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.id.cmp(&a.id)));
    alerts.truncate(MAX_WARD_ALERTS);
    Ward {
        now,
        window_seconds,
        patients,
        alerts,
    }
}

/// One patient's page from what the node stored for them.
pub fn detail(vitals: wire::Vitals, now: i64, window_seconds: u32) -> Detail {
    let readings = care_readings(&vitals);
    let scale = scale_of(&vitals);
    let (news2, missing) = news2_now(&readings, now, window_seconds, scale);
    Detail {
        patient: vitals.patient,
        news2,
        missing,
        series: series(&readings, window_seconds, scale),
        readings: vitals.readings,
        alerts: vitals.alerts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(code: &str, time: i64, value: f64) -> wire::VitalReading {
        wire::VitalReading {
            code: code.into(),
            time,
            value,
            unit: String::new(),
        }
    }

    fn full_set(time: i64, pulse: f64) -> Vec<wire::VitalReading> {
        vec![
            reading("9279-1", time, 16.0),
            reading("59408-5", time, 97.0),
            reading("3150-0", time, 21.0),
            reading("8480-6", time, 125.0),
            reading("8867-4", time, pulse),
            reading("67775-7", time, 0.0),
            reading("8310-5", time, 36.8),
        ]
    }

    fn vitals(patient: &str, readings: Vec<wire::VitalReading>) -> wire::Vitals {
        wire::Vitals {
            patient: patient.into(),
            hypercapnic: false,
            readings,
            alerts: Vec::new(),
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_for_the_policy_to_allow() {
        let html = include_str!("../web/clinician/index.html");
        for script in html.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap_or(script.len())];
            assert!(tag.contains("src=\""), "inline script: <script{tag}>");
        }
        for forbidden in [
            " style=\"",
            " onclick=",
            " onload=",
            "javascript:",
            "<style",
        ] {
            assert!(!html.contains(forbidden), "{forbidden}");
        }
        let js = include_str!("../web/clinician/app.js");
        for forbidden in ["innerHTML", "eval(", "new Function", "document.write"] {
            assert!(!js.contains(forbidden), "app.js uses {forbidden}");
        }
        assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self';"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }

    #[test]
    fn a_row_scores_the_newest_set_and_its_trend() {
        let mut readings = full_set(100, 72.0);
        readings.extend(full_set(200, 135.0));
        let row = ward_patient(&vitals("aa", readings), 250, 3600);
        let news2 = row.news2.unwrap();
        assert_eq!((news2.total, news2.band), (3, news2::Band::LowMedium));
        assert_eq!(row.trend, Some(Trend::Rising));
        let pulse = row.latest.iter().find(|r| r.code == "8867-4").unwrap();
        assert_eq!(pulse.value, 135.0);
        assert_eq!(row.latest.len(), 7);
    }

    #[test]
    fn a_row_without_a_fresh_set_says_what_is_missing() {
        let mut readings = full_set(100, 72.0);
        readings.retain(|r| r.code != "8310-5");
        let row = ward_patient(&vitals("aa", readings), 150, 3600);
        assert!(row.news2.is_none());
        assert_eq!(row.missing, vec![Parameter::Temperature]);
        // Stale readings are outside the window.
        let stale = ward_patient(&vitals("bb", full_set(100, 72.0)), 100 + 7200, 3600);
        assert!(stale.news2.is_none());
        assert_eq!(stale.missing.len(), 7);
    }

    #[test]
    fn the_ward_puts_the_newest_alert_first_then_the_highest_score() {
        let row = |patient: &str, pulse: f64, alert: Option<i64>| WardPatient {
            newest_open_alert: alert,
            ..ward_patient(&vitals(patient, full_set(100, pulse)), 100, 3600)
        };
        let ward = ward(
            vec![
                row("a", 72.0, None),
                row("b", 135.0, None),
                row("c", 72.0, Some(50)),
                row("d", 72.0, Some(90)),
            ],
            Vec::new(),
            100,
            3600,
        );
        let order: Vec<&str> = ward.patients.iter().map(|p| p.patient.as_str()).collect();
        assert_eq!(order, ["d", "c", "b", "a"]);
    }
}
