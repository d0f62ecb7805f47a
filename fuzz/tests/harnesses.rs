//! A short run of every fuzz harness: each test fails on any panic, property violation or unbounded allocation.
//!
//! A few seconds each (the long runs are `bash scripts/fuzz.sh all SECONDS`).
//! The mutation seed is fixed, so a failure here replays; the finding's
//! input is printed in hex.

use std::time::Duration;

use witmed_fuzz::engine::{self, Options};
use witmed_fuzz::targets;

/// Seconds per harness: long enough to get well past the seeds, short enough
/// for the whole file to stay under a minute on two shared cores.
const SECONDS: u64 = 3;

fn check(name: &str) {
    let target = targets::by_name(name).unwrap_or_else(|| panic!("no harness named {name}"));
    let report = engine::run(
        &target,
        &Options {
            duration: Duration::from_secs(SECONDS),
            seed: 20_261_130,
            out: None,
            progress: None,
        },
    );
    // The run must have executed the seeds and then mutated inputs.
    let seeds = (target.seeds)().len() as u64;
    assert!(
        report.executions > seeds,
        "{name}: only {} executions",
        report.executions
    );
    let findings: Vec<String> = report
        .findings
        .iter()
        .map(|f| {
            format!(
                "{} {}\n  input: {}",
                f.kind,
                f.message,
                hex::encode(&f.input)
            )
        })
        .collect();
    assert!(
        findings.is_empty(),
        "{name}: {} findings in {} executions:\n{}",
        findings.len(),
        report.executions,
        findings.join("\n")
    );
}

macro_rules! harness_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check($name);
            }
        )*

        /// Every harness has a test here.
        #[test]
        fn every_harness_has_a_short_run() {
            let tested = [$($name),*];
            for target in targets::all() {
                assert!(tested.contains(&target.name), "{} has no short-run test", target.name);
            }
        }
    };
}

harness_tests! {
    fuzz_codec => "codec",
    fuzz_wire_request => "wire-request",
    fuzz_wire_response => "wire-response",
    fuzz_envelope_binary => "envelope-binary",
    fuzz_envelope_text => "envelope-text",
    fuzz_consent_token => "consent-token",
    fuzz_consent_revocation => "consent-revocation",
    fuzz_credential => "credential",
    fuzz_node_policy => "node-policy",
    fuzz_directory => "directory",
    fuzz_query_toml => "query-toml",
    fuzz_query_wire => "query-wire",
    fuzz_study_key => "study-key",
    fuzz_ciphertext => "ciphertext",
    fuzz_encrypted_messages => "encrypted-messages",
    fuzz_key_file => "key-file",
    fuzz_local_files => "local-files",
    fuzz_fhir => "fhir",
    fuzz_physionet_record => "physionet-record",
    fuzz_physionet_outcomes => "physionet-outcomes",
    fuzz_device_batch => "device-batch",
}
