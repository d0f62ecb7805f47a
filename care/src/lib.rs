//! The clinical side of witmed, as pure functions over values: which vital signs a bedside device
//! sends (LOINC codes, UCUM units), how a reading is brought to its canonical unit and refused
//! when its unit is wrong or its value impossible, and the National Early Warning Score 2 of the
//! Royal College of Physicians (2017) with its clinical response bands.
//!
//! A reading travels: device value and unit → [`units::to_canonical`] → [`plausibility::check`]
//! → stored by the node → [`news2::fresh_set`] over a patient's recent readings → [`news2::score`].
//! [`physionet`] maps the PhysioNet 2012 time series onto the same readings, for the device
//! simulator and the demo.
//!
//! **Architecture Invariant:** no IO, no clock (time comes in as seconds), no async; every
//! function is total over any input (non-finite numbers included).

pub mod error;
pub mod news2;
pub mod physionet;
pub mod plausibility;
pub mod units;
pub mod vitals;

pub use error::Error;
pub use news2::{Band, Score};
pub use vitals::{Acvpu, Vital};
