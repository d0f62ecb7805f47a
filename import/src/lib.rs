//! witmed's importers: pure parsers of a hospital's existing data into source records, with every rejected value accounted for.
//!
//! * [`physionet`]: PhysioNet 2012 Challenge sets (one CSV per ICU stay, outcomes file).
//! * [`fhir`]: FHIR R4 bundles (Synthea and hospital exports).
//! * [`source`]: the records both produce, and why a value was rejected.
//!
//! No store, no network, no keys: the node core (`witmed_node::import`)
//! pseudonymises, seals and writes what these return, so the parsers can be
//! fuzzed and tested on their own.

pub mod fhir;
pub mod physionet;
pub mod source;
