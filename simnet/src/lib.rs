//! placeholder
pub mod cohort;
