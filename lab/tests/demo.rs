//! `witmed demo` end to end, on a small synthetic cohort: exits 0, prints the table, leaves nothing running.

mod common;

use common::*;

#[test]
fn the_demo_runs_a_small_federation_and_leaves_nothing_running() {
    let child = witmed()
        .args([
            "demo",
            "--hospitals",
            "3",
            "--synthetic",
            "--patients",
            "400",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "mean heart rate, age >= 65",
        "mortality, medical ICU",
        "patients, age >= 65 (encrypted count)",
        "95% interval",
        "exact",
        "all nodes stopped",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
    assert!(stdout.contains("3/3 answered"), "{stdout}");
    // Every noisy count lies within a sane distance of the exact one.
    let count_line = stdout
        .lines()
        .find(|l| l.starts_with("patients (count)"))
        .unwrap();
    let numbers: Vec<f64> = count_line
        .split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == ',')
        .filter_map(|t| t.parse().ok())
        .collect();
    let (answer, lo, hi, exact) = (numbers[0], numbers[1], numbers[2], numbers[3]);
    assert!(lo <= answer && answer <= hi, "{count_line}");
    assert!((answer - exact).abs() < 60.0, "{count_line}");
    // The encrypted count: every hospital's share is in the total, and it is near the exact count.
    let encrypted = stdout
        .lines()
        .find(|l| l.starts_with("patients, age >= 65 (encrypted count)"))
        .unwrap();
    assert!(encrypted.contains("3/3 answered"), "{encrypted}");
    let numbers: Vec<f64> = encrypted
        .split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == ',')
        .filter_map(|t| t.parse().ok())
        .collect();
    let (answer, exact) = (numbers[1], numbers[4]);
    assert!((answer - exact).abs() < 60.0, "{encrypted}");
    let root = std::env::temp_dir().join(format!("witmed-demo-{pid}"));
    assert!(!root.exists(), "demo left {root:?} behind");
    let running = std::process::Command::new("pgrep")
        .args(["-f", root.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        running.stdout.is_empty(),
        "nodes still running: {}",
        String::from_utf8_lossy(&running.stdout)
    );
}
