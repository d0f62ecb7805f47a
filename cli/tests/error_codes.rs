//! The CLI's error codes and README agree: README's table lists exactly `witmed::Code`, and every code it lists as passed through is a lower crate's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use witmed::Code;

const README: &str = include_str!("../../README.md");
const SECTION: &str = "## Exit status and error codes";
/// The header row of the table of the CLI's own codes.
const OWN_HEADER: &str = "| code | meaning |";
/// The header row of the table of codes passed through from lower crates.
const PASSED_HEADER: &str = "| passed through from | codes | when |";

/// The text of `section` (from its heading to the next `## `).
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"));
    let rest = &text[start + heading.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    &rest[..end]
}

/// The cells of each body row of the table whose header row is `header`.
fn table_rows(text: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines().skip_while(|l| l.trim() != header);
    assert!(lines.next().is_some(), "no table headed {header:?}");
    lines
        .skip(1) // the |---| row
        .take_while(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The `backticked` words of a cell.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The codes README's own table lists.
fn listed_own_codes(readme: &str) -> BTreeSet<String> {
    table_rows(section(readme, SECTION), OWN_HEADER)
        .iter()
        .flat_map(|row| backticked(&row[0]))
        .collect()
}

/// What is wrong between README's own table and `codes`: missing ones, then unknown ones.
fn disagreements(readme: &str, codes: &[&str]) -> (Vec<String>, Vec<String>) {
    let listed = listed_own_codes(readme);
    let enum_codes: BTreeSet<String> = codes.iter().map(|c| c.to_string()).collect();
    (
        enum_codes.difference(&listed).cloned().collect(),
        listed.difference(&enum_codes).cloned().collect(),
    )
}

fn own_codes() -> Vec<&'static str> {
    Code::ALL.iter().map(|c| c.as_str()).collect()
}

#[test]
fn readme_lists_exactly_the_codes_of_the_enum() {
    let (missing, unknown) = disagreements(README, &own_codes());
    assert!(
        missing.is_empty(),
        "codes of witmed::Code missing from README's table: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "README's table of the CLI's own codes lists codes witmed::Code does not have \
         (list lower layers' codes in the passed-through table): {unknown:?}"
    );
}

/// The check fails on a README that misses a code or lists one too many.
#[test]
fn the_readme_check_finds_a_missing_and_an_unknown_code() {
    let readme = format!(
        "{SECTION}\n\n{OWN_HEADER}\n|---|---|\n| `read_failed`, `no_such_code` | files |\n\n## Next\n"
    );
    let (missing, unknown) = disagreements(&readme, &["read_failed", "too_large"]);
    assert_eq!(missing, vec!["too_large"]);
    assert_eq!(unknown, vec!["no_such_code"]);
}

fn workspace_dir(crate_name: &str) -> PathBuf {
    let dir = crate_name
        .strip_prefix("witmed-")
        .unwrap_or_else(|| panic!("{crate_name} is not a witmed crate"));
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(dir)
        .join("src")
}

/// Every `.rs` file's text under `dir`.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path, text));
        }
    }
    out
}

#[test]
fn readme_passed_through_codes_are_the_named_crates_and_not_the_clis() {
    let rows = table_rows(section(README, SECTION), PASSED_HEADER);
    assert!(!rows.is_empty(), "README lists no passed-through codes");
    let own = own_codes();
    let mut wrong = Vec::new();
    for row in &rows {
        let crate_name = backticked(&row[0]).concat();
        let texts = sources(&workspace_dir(&crate_name));
        for code in backticked(&row[1]) {
            if own.contains(&code.as_str()) {
                wrong.push(format!(
                    "{code} is the CLI's own code: list it in the first table"
                ));
            }
            let quoted = format!("\"{code}\"");
            if !texts.iter().any(|(_, text)| text.contains(&quoted)) {
                wrong.push(format!("{code}: no {crate_name} source emits it"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "README's passed-through codes:\n{}",
        wrong.join("\n")
    );
}

/// The CLI's own codes go through `Code`: no source passes a literal code to
/// `Failure::from_layer` or builds a `Failure` by hand (outside failure.rs).
#[test]
fn the_clis_own_codes_all_go_through_the_enum() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (path, text) in sources(&src) {
        if text.contains("from_layer(\"") {
            wrong.push(format!(
                "{}: a literal code passed to from_layer",
                path.display()
            ));
        }
        // A struct literal names a field right after the brace.
        let built = text.match_indices("Failure {").any(|(at, m)| {
            let after = text[at + m.len()..].trim_start();
            ["code", "message", "exit"]
                .iter()
                .any(|field| after.starts_with(field))
        });
        if !path.ends_with("failure.rs") && built {
            wrong.push(format!("{}: a Failure built by hand", path.display()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
