//! Build settings: the hospital profile keeps overflow checks, `cargo test` at the root covers every crate, and only test builds switch noise off.

use std::process::Command;

use witmed_e2e::workspace_root;

fn manifest(path: &str) -> toml::Table {
    let text = std::fs::read_to_string(workspace_root().join(path)).unwrap();
    text.parse().unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn table<'a>(t: &'a toml::Table, path: &[&str]) -> &'a toml::Table {
    path.iter().fold(t, |t, key| {
        t.get(*key)
            .and_then(|v| v.as_table())
            .unwrap_or_else(|| panic!("no [{}] table", path.join(".")))
    })
}

fn strings(value: Option<&toml::Value>) -> Vec<String> {
    let mut out: Vec<String> = value
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The release profile is the hospital build: optimised, and arithmetic
/// that overflows stops with an error instead of wrapping (fail closed).
#[test]
fn the_hospital_profile_is_optimised_with_overflow_checks_on() {
    let root = manifest("Cargo.toml");
    let release = table(&root, &["profile", "release"]);
    assert_eq!(
        release.get("overflow-checks").and_then(|v| v.as_bool()),
        Some(true),
        "[profile.release] must set overflow-checks = true"
    );
    assert_eq!(
        release.get("opt-level").and_then(|v| v.as_integer()),
        Some(3)
    );
    // No package override may switch the checks off for our own crates.
    let overrides = release.get("package").and_then(|v| v.as_table());
    for (name, settings) in overrides.into_iter().flatten() {
        assert_ne!(
            settings.get("overflow-checks").and_then(|v| v.as_bool()),
            Some(false),
            "[profile.release.package.{name}] switches overflow checks off"
        );
    }
}

/// `cargo test` at the root runs every crate's tests, like scripts/test.sh.
#[test]
fn cargo_test_at_the_root_covers_every_crate() {
    let root = manifest("Cargo.toml");
    let workspace = table(&root, &["workspace"]);
    let members = strings(workspace.get("members"));
    assert_eq!(members.len(), witmed_e2e::CRATE_DIRS.len(), "{members:?}");
    assert_eq!(strings(workspace.get("default-members")), members);
}

/// CI builds one profile: no script builds release (a second full build on two cores).
#[test]
fn scripts_build_only_the_dev_profile() {
    for entry in std::fs::read_dir(workspace_root().join("scripts")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("--release") && !text.contains("--profile"),
            "{} builds another profile",
            path.display()
        );
    }
}

/// The test-only feature (on the node core) reaches test builds through this
/// crate's dev-dependency, and never the hospital build of `witmed`.
#[test]
fn only_test_builds_switch_noise_off() {
    let e2e = manifest("tests/Cargo.toml");
    let core = table(&e2e, &["dev-dependencies", "witmed-node"]);
    assert_eq!(
        strings(core.get("features")),
        vec!["insecure-noise-off".to_string()]
    );
    let node = manifest("node/Cargo.toml");
    assert!(
        strings(table(&node, &["features"]).get("default")).is_empty(),
        "witmed-node has no default features"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "tree",
            "--locked",
            "--offline",
            "-p",
            "witmed",
            "-e",
            "normal,features",
        ])
        .args(["-i", "witmed-node", "--prefix", "none"])
        .output()
        .expect("cargo tree runs");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tree.contains("witmed-node v"), "{tree}");
    assert!(
        !tree.contains("insecure-noise-off"),
        "the hospital build of witmed has the test-only feature:\n{tree}"
    );
}
