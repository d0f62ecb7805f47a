//! Simulated bedside devices: PhysioNet 2012 stays replayed as signed readings into a node over HTTP.

pub mod http;
pub mod simulate;
pub mod stays;
