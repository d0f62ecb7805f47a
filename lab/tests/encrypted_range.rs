//! Encrypted sums with wide bounds end to end: limb-encoded shares through real nodes, and queries whose totals could overflow refused.
//!
//! A TFHE slot holds a 27-bit total, so a sum with bounds 0..1000 travels as
//! two limbs per value (`witmed_protocol::limbs`). These tests send such
//! sums through real `witmed node run` processes on loopback, and send a
//! query whose total could leave the plaintext range to show that every
//! member refuses it with the reason instead of releasing a wrapped total.

mod common;

use common::EncryptedWorld as World;
use common::*;
use serde_json::Value;
use witmed_protocol::interval::{gaussian_sum_halfwidth, ALPHA};

const TIMEOUT: &str = "20s";
const HOSPITALS: usize = 3;

/// Three hospitals over the first 240 set-a records, all consenting, with a published study.
fn world(noise_off: bool) -> World {
    encrypted_world(HOSPITALS, 240, noise_off)
}

impl World {
    /// An encrypted sum of ages with the given bounds, over every hospital.
    fn age_sum(&self, id: &str, lower: f64, upper: f64) -> Result<Value, String> {
        let aggregator = &self.cluster.members[0].name;
        let text = format!(
            "version = 1\nid = \"{id}\"\npurpose = \"HMB\"\naggregate = \"sum\"\n\
             [feature.attribute]\nname = \"age\"\n[bounds]\nlower = {lower:?}\nupper = {upper:?}\n\
             [privacy]\nmode = \"encrypted\"\nepsilon = 1.0\naggregator = \"{aggregator}\"\n\
             study = \"{}\"\nmin_hospitals = {HOSPITALS}\n",
            self.study_id
        );
        let file = self.tmp.path().join(format!("{id}.toml"));
        std::fs::write(&file, text).unwrap();
        self.cluster
            .query_encrypted(&file, &self.study_dir, TIMEOUT)
            .map_err(|e| e.to_string())
    }

    fn exact_age_sum(&self, lower: f64, upper: f64) -> f64 {
        ages(&self.records)
            .iter()
            .map(|a| a.round().clamp(lower, upper))
            .sum()
    }
}

#[test]
// Constant on purpose: a build without the feature fails here, by name, instead of skipping.
#[allow(clippy::assertions_on_constants)]
fn with_noise_off_a_sum_with_bounds_0_to_1000_is_exact_through_limbs() {
    assert!(
        witmed_node::encrypted::NOISE_OFF_AVAILABLE,
        "this test switches noise shares off: run it with --features witmed-node/insecure-noise-off (scripts/test.sh does)"
    );
    let w = world(true);
    let answer = w.age_sum("wide-exact", 0.0, 1000.0).unwrap();
    assert_eq!(
        answer["value"].as_f64().unwrap(),
        w.exact_age_sum(0.0, 1000.0),
        "{answer}"
    );
}

#[test]
fn a_noisy_sum_with_bounds_0_to_1000_is_near_and_its_interval_is_the_shares_noise() {
    let w = world(false);
    let answer = w.age_sum("wide-noisy", 0.0, 1000.0).unwrap();
    let value = answer["value"].as_f64().unwrap();
    let scale = answer["share_scale"].as_f64().unwrap();
    let exact = w.exact_age_sum(0.0, 1000.0);
    // Off by more with probability below 1e-6: a wrapped or mis-recombined
    // limb would be off by a multiple of 2^19 at least.
    let bound = gaussian_sum_halfwidth(scale, HOSPITALS, 1e-6);
    assert!(bound < (1 << 19) as f64, "{bound}");
    assert!(
        (value - exact).abs() <= bound,
        "{value} vs {exact} ± {bound}"
    );
    // The 95% interval is the summed shares' noise around the recombined total.
    let ci: Vec<f64> = answer["ci95"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let half = gaussian_sum_halfwidth(scale, HOSPITALS, ALPHA);
    assert!((ci[0] - (value - half)).abs() < 1e-6 * half, "{answer}");
    assert!((ci[1] - (value + half)).abs() < 1e-6 * half, "{answer}");
}

#[test]
fn a_sum_whose_total_could_overflow_is_refused_by_every_member_with_the_reason() {
    let w = world(false);
    let err = w.age_sum("too-wide", 0.0, 1e15).unwrap_err();
    // Each member refuses before anything is charged; the aggregator names them.
    assert!(err.contains("narrow the bounds or use dp mode"), "{err}");
    for member in &w.cluster.members {
        assert!(err.contains(&member.name), "{err}");
    }
    // The same members still answer a sum that fits.
    let answer = w.age_sum("fits-after", 0.0, 1000.0).unwrap();
    assert!(answer["value"].as_f64().is_some(), "{answer}");
}
