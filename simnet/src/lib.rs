//! simnet: many witmed hospitals on one machine, for the demo, end-to-end tests and benchmarks.
//!
//! * [`cohort`]: seeded synthetic ICU cohorts in the PhysioNet 2012 format,
//!   with realistic vital-sign distributions, so everything runs without the
//!   shared data and through the same importer.
//! * [`cluster`]: real `witmed node run` processes on loopback, built and
//!   driven through the command line, with faults injected by signals.
//! * [`proxy`]: a TCP proxy in front of a node that partitions, delays or
//!   drops its traffic.

pub mod cluster;
pub mod cohort;
pub mod proxy;
