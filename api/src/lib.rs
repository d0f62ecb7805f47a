//! The node's HTTP API: hospital staff and patients act on a running node over HTTP, beside its libp2p side.
//!
//! * [`routes`]: every route, and serving them on a listener.
//! * [`server`]: what every request shares: state, limits, authentication.
//! * [`health`]: whether the node answers.
//! * [`auth`]: staff bearer tokens from the data dir; patients' requests
//!   signed by the key the node enrolled for them (no password is stored).
//! * [`staff`]: look a patient up, enrol a key, list consents.
//! * [`patient`]: a patient's own record, vital signs, conditions,
//!   consents, audit view and privacy account; grant and revoke consent,
//!   set a privacy cap.
//! * [`clinician_page`]: the clinician's ward page (static files) and its NEWS2 views.
//! * [`device`]: a device's signed batch of readings; staff enrol and retire devices.
//! * [`alerts`]: NEWS2 alerts (list, acknowledge, a live stream), a patient's vitals and hypercapnic flag.
//! * [`limits`]: request rates per address and per key, bounded.
//! * [`error`]: one JSON error shape with stable codes.
//! * [`page`]: the patient web page (`/patient/`), embedded, with strict headers.
//! * [`openapi`]: the OpenAPI document the server serves and the repo keeps.
//! * [`transport`]: accepting connections: bounded, with deadlines, plain
//!   HTTP on loopback or TLS ([`tls`]: certificate and key from PEM files).
//!
//! Every request path is total: bodies are bounded, JSON is parsed strictly
//! (unknown fields refused), and nothing is stored before the request is
//! authenticated.

pub mod alerts;
pub mod auth;
pub mod clinician_page;
pub mod device;
pub mod error;
pub mod health;
pub mod limits;
pub mod openapi;
pub mod page;
pub mod patient;
pub mod routes;
pub mod server;
pub mod staff;
pub mod tls;
pub mod transport;

pub use page::PAGE_ROUTES;
pub use routes::{router, serve, serve_tls, ROUTES};
pub use server::{Config, State};
