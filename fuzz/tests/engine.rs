//! The engine itself can fail a run: a panic, a broken property and an oversized allocation are each found, kept and shrunk.

use std::time::Duration;

use witmed_fuzz::engine::{self, Options, Target, Verdict};

fn panics_on_bug(data: &[u8]) -> Verdict {
    if data.windows(3).any(|w| w == b"BUG") {
        panic!("found the bug");
    }
    Ok("fine".into())
}

fn breaks_a_round_trip(data: &[u8]) -> Verdict {
    if data.first() == Some(&b'!') {
        return Err("value changed in a round trip".into());
    }
    Ok("fine".into())
}

fn allocates_without_bound(data: &[u8]) -> Verdict {
    if data.first() == Some(&b'A') {
        // 256 MiB for a one-byte input: far above the allowance.
        let big = vec![1u8; 256 << 20];
        return Ok(format!("held {}", big.len()));
    }
    Ok("fine".into())
}

fn bug_seed() -> Vec<Vec<u8>> {
    vec![b"zzBUGzz-and-more-padding".to_vec()]
}

fn bang_seed() -> Vec<Vec<u8>> {
    vec![b"!".to_vec()]
}

fn a_seed() -> Vec<Vec<u8>> {
    vec![b"A".to_vec()]
}

fn target(name: &'static str, run: fn(&[u8]) -> Verdict, seeds: fn() -> Vec<Vec<u8>>) -> Target {
    Target {
        name,
        about: "engine self-test",
        seeds,
        run,
        dictionary: &[],
        max_len: 64,
    }
}

fn short_run(target: &Target) -> engine::Report {
    engine::run(
        target,
        &Options {
            duration: Duration::from_millis(300),
            seed: 1,
            out: None,
            progress: None,
        },
    )
}

#[test]
fn a_panic_is_found_and_shrunk_to_its_cause() {
    let t = target("panics", panics_on_bug, bug_seed);
    let report = short_run(&t);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    let finding = &report.findings[0];
    assert_eq!(finding.kind, "panic");
    assert!(
        finding.message.contains("found the bug"),
        "{}",
        finding.message
    );
    assert_eq!(finding.input, b"BUG");
    assert!(report.executions > 1);
}

#[test]
fn a_broken_round_trip_is_a_finding() {
    let t = target("violates", breaks_a_round_trip, bang_seed);
    let (finding, _) = engine::execute(&t, b"!x");
    let finding = finding.expect("a violation is reported");
    assert_eq!(finding.kind, "violation");
    assert_eq!(short_run(&t).findings.len(), 1);
}

#[test]
fn allocation_out_of_proportion_to_the_input_is_a_finding() {
    let t = target("allocates", allocates_without_bound, a_seed);
    let (finding, _) = engine::execute(&t, b"A");
    let finding = finding.expect("the allocation is reported");
    assert_eq!(finding.kind, "allocation");
    assert!(
        finding.message.contains("1-byte input"),
        "{}",
        finding.message
    );
    let (finding, class) = engine::execute(&t, b"B");
    assert!(finding.is_none(), "{class}");
}
