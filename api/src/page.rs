//! The patient web page: static files built into the binary, served with strict headers; the page talks only to this node's API.
//!
//! Everything the page needs is in `api/web/` and embedded here, so the
//! single `witmed` binary serves it and nothing is fetched from elsewhere.
//! The patient's private key is made and kept by the browser (WebCrypto,
//! IndexedDB) and never sent: the page signs each API request itself.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The page's own routes, as `(method, path)`: not API routes, so not in the OpenAPI document.
pub const PAGE_ROUTES: [(&str, &str); 8] = [
    ("GET", "/"),
    ("GET", "/patient"),
    ("GET", "/patient/"),
    ("GET", "/patient/style.css"),
    ("GET", "/patient/app.js"),
    ("GET", "/patient/postcard.js"),
    ("GET", "/patient/keystore.js"),
    ("GET", "/patient/charts.js"),
];

/// Where the page lives.
pub const PAGE_PATH: &str = "/patient/";

/// The content security policy of every response: only this origin's own
/// files, no inline script or style, never framed, forms only to itself.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const JS: &str = "text/javascript; charset=utf-8";

/// The page's routes, to merge into the API's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to(PAGE_PATH) }))
        .route("/patient", get(|| async { Redirect::to(PAGE_PATH) }))
        .route(
            "/patient/",
            get(|| {
                asset(
                    "text/html; charset=utf-8",
                    include_str!("../web/index.html"),
                )
            }),
        )
        .route(
            "/patient/style.css",
            get(|| asset("text/css; charset=utf-8", include_str!("../web/style.css"))),
        )
        .route(
            "/patient/app.js",
            get(|| asset(JS, include_str!("../web/app.js"))),
        )
        .route(
            "/patient/postcard.js",
            get(|| asset(JS, include_str!("../web/postcard.js"))),
        )
        .route(
            "/patient/keystore.js",
            get(|| asset(JS, include_str!("../web/keystore.js"))),
        )
        .route(
            "/patient/charts.js",
            get(|| asset(JS, include_str!("../web/charts.js"))),
        )
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            // The files change with the binary: revalidate rather than keep a stale page.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Adds the security headers to every response, page or API.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
