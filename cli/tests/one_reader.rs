//! Every file the command line itself reads goes through `files::read_text`, the one reader with a size limit.

use std::path::Path;

/// Ways to read a file without a limit.
const UNBOUNDED_READS: [&str; 5] = [
    "fs::read(",
    "fs::read_to_string(",
    "File::open(",
    "read_to_end(",
    "read_to_string(",
];

/// The unbounded reads in `text`, except in `files.rs` (which bounds its own).
fn unbounded_reads(name: &str, text: &str) -> Vec<String> {
    if name == "files.rs" {
        return Vec::new();
    }
    UNBOUNDED_READS
        .iter()
        .filter(|call| text.contains(*call))
        .map(|call| format!("{name}: {call}"))
        .collect()
}

#[test]
fn the_cli_reads_files_only_through_the_bounded_reader() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".rs") {
            found.extend(unbounded_reads(
                &name,
                &std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    assert!(
        found.is_empty(),
        "read through crate::files::read_text instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_finds_an_unbounded_read() {
    let code = "let text = std::fs::read_to_string(&path)?;";
    assert_eq!(unbounded_reads("consortium.rs", code).len(), 2);
    assert!(unbounded_reads("files.rs", code).is_empty());
}
