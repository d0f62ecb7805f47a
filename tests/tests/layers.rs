//! The shape of the workspace: which crate may depend on which, a hospital binary without test tooling, no import cycles between files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use witmed_e2e::{workspace_root, CRATE_DIRS};

/// Each crate (by directory) and the workspace crates its `[dependencies]` may name.
///
/// The layers, from the bottom: crypto <- protocol <- policies; the pure
/// importers beside them; the node core on those; the network on the core;
/// the `witmed` command line on all of these. simnet knows only the pure
/// formats (it drives binaries by their command line), and the lab (demo,
/// benchmarks, faults, simulated consent) sits on top of everything, so
/// nothing a hospital installs can reach it.
const ALLOWED: [(&str, &[&str]); 13] = [
    ("crypto", &[]),
    ("protocol", &["witmed-crypto"]),
    ("policies", &["witmed-crypto", "witmed-protocol"]),
    ("import", &["witmed-protocol"]),
    // Pure clinical functions (codes, units, plausibility, NEWS2): at most the wire formats.
    ("care", &["witmed-protocol"]),
    (
        "node",
        &[
            "witmed-care",
            "witmed-crypto",
            "witmed-import",
            "witmed-policies",
            "witmed-protocol",
        ],
    ),
    (
        "net",
        &[
            "witmed-crypto",
            "witmed-node",
            "witmed-policies",
            "witmed-protocol",
        ],
    ),
    (
        "api",
        &[
            "witmed-care",
            "witmed-crypto",
            "witmed-node",
            "witmed-policies",
            "witmed-protocol",
        ],
    ),
    (
        "cli",
        &[
            "witmed-api",
            "witmed-crypto",
            "witmed-import",
            "witmed-net",
            "witmed-node",
            "witmed-policies",
            "witmed-protocol",
        ],
    ),
    ("simnet", &["witmed-crypto", "witmed-protocol"]),
    (
        "lab",
        &[
            "witmed",
            "witmed-api",
            "witmed-care",
            "witmed-crypto",
            "witmed-import",
            "witmed-net",
            "witmed-node",
            "witmed-policies",
            "witmed-protocol",
            "witmed-simnet",
        ],
    ),
    (
        "fuzz",
        &[
            "witmed-crypto",
            "witmed-import",
            "witmed-net",
            "witmed-node",
            "witmed-policies",
            "witmed-protocol",
        ],
    ),
    ("tests", &[]),
];

/// External crates that do IO a layer must not do: storage, networking, an async runtime.
const FORBIDDEN_EXTERNAL: [(&str, &[&str]); 7] = [
    ("crypto", &["rocksdb", "libp2p", "tokio"]),
    ("protocol", &["rocksdb", "libp2p", "tokio"]),
    ("policies", &["rocksdb", "libp2p", "tokio"]),
    // Pure parsers: fuzzed and tested without a store.
    ("import", &["rocksdb", "libp2p", "tokio"]),
    // Pure clinical functions: no IO, no clock, no runtime.
    ("care", &["rocksdb", "libp2p", "tokio", "axum"]),
    // The core keeps its store and local admin socket; the network is net's.
    ("node", &["libp2p"]),
    // HTTP for staff and patients; peers talk over libp2p only.
    ("api", &["libp2p", "rocksdb"]),
];

fn manifest(dir: &str) -> toml::Table {
    let path = workspace_root().join(dir).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names in a crate's `[dependencies]` (not dev-dependencies: tests may reach further).
fn normal_dependencies(dir: &str) -> BTreeSet<String> {
    manifest(dir)
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn each_crate_depends_only_on_the_crates_its_layer_allows() {
    let listed: BTreeSet<&str> = ALLOWED.iter().map(|(dir, _)| *dir).collect();
    let crates: BTreeSet<&str> = CRATE_DIRS.into_iter().collect();
    assert_eq!(listed, crates, "every crate has a row in ALLOWED");
    for (dir, allowed) in ALLOWED {
        let ours: BTreeSet<String> = normal_dependencies(dir)
            .into_iter()
            .filter(|d| d == "witmed" || d.starts_with("witmed-"))
            .collect();
        let allowed: BTreeSet<String> = allowed.iter().map(|s| s.to_string()).collect();
        let extra: Vec<&String> = ours.difference(&allowed).collect();
        assert!(
            extra.is_empty(),
            "{dir}/ depends on {extra:?}, which its layer may not use"
        );
    }
    for (dir, forbidden) in FORBIDDEN_EXTERNAL {
        let deps = normal_dependencies(dir);
        for name in forbidden {
            assert!(!deps.contains(*name), "{dir}/ must not depend on {name}");
        }
    }
}

/// What `cargo tree` says the hospital binary is built from.
fn hospital_build_tree() -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(workspace_root())
        .args(["tree", "--locked", "--offline", "-p", "witmed"])
        .args(["-e", "normal,build", "--prefix", "none"])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `witmed` binary a hospital installs links no simnet, no lab, no fuzzing,
/// and its sources hold none of the lab's commands or faults.
#[test]
fn the_hospital_binary_contains_no_test_tooling() {
    let tree = hospital_build_tree();
    assert!(
        tree.contains("witmed-net v"),
        "not the hospital tree:\n{tree}"
    );
    for tooling in ["witmed-lab", "witmed-simnet", "witmed-fuzz", "witmed-e2e"] {
        assert!(
            !tree.contains(&format!("{tooling} v")),
            "the hospital binary depends on {tooling}:\n{tree}"
        );
    }
    for dir in ["import", "node", "net", "api", "cli"] {
        for path in sources_of(dir) {
            let text = std::fs::read_to_string(&path).unwrap();
            for marker in [
                "Misbehave",
                "fn simulate(",
                "simulated_consent(",
                "ScratchDir",
                "witmed_simnet",
            ] {
                assert!(
                    !text.contains(marker),
                    "{} holds lab code ({marker})",
                    path.display()
                );
            }
        }
    }
}

fn sources_of(dir: &str) -> Vec<PathBuf> {
    let src = workspace_root().join(dir).join("src");
    witmed_e2e::rust_sources()
        .into_iter()
        .filter(|p| p.starts_with(&src))
        .collect()
}

/// A crate's module path of a source file: `net/src/server.rs` is `["server"]`,
/// `node/src/encrypted/mod.rs` is `["encrypted"]`, `lib.rs` and `main.rs` are `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of a file: without its `#[cfg(test)]` module (tests may reach
/// anywhere in their file) and without comments (a doc link is not an import).
fn code_of(text: &str) -> String {
    let before_tests = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    before_tests
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths a file refers to through `crate::` and `super::`.
fn referenced_paths(module: &[String], text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent(module))] {
        for (at, _) in text.match_indices(prefix) {
            // `$crate::` in a macro and `witmed_crate::`-like names are not ours.
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let rest = &text[at + prefix.len()..];
            for tail in path_segments(rest) {
                out.push(base.iter().cloned().chain(tail).collect());
            }
        }
    }
    out
}

fn parent(module: &[String]) -> Vec<String> {
    module[..module.len().saturating_sub(1)].to_vec()
}

/// The paths a reference starts: `a::b::X` is `[[a, b, X]]`,
/// `{a::X, b::{c, d}}` is `[[a, X], [b, c], [b, d]]`.
fn path_segments(rest: &str) -> Vec<Vec<String>> {
    let mut prefix = Vec::new();
    let mut text = rest;
    loop {
        if let Some(group) = text.strip_prefix('{') {
            let inner = &group[..closing_brace(group)];
            return top_level_items(inner)
                .into_iter()
                .flat_map(|item| path_segments(item.trim()))
                .map(|tail| prefix.iter().cloned().chain(tail).collect())
                .collect();
        }
        let end = text
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(text.len());
        if end == 0 {
            break;
        }
        prefix.push(text[..end].to_string());
        match text[end..].strip_prefix("::") {
            Some(next) => text = next,
            None => break,
        }
    }
    vec![prefix]
}

/// Where the brace group that `text` is inside of closes (or its end).
fn closing_brace(text: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

/// The comma-separated items of a brace group, not splitting nested groups.
fn top_level_items(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// The file a path lands in: the longest prefix of it that is a module of this crate.
fn file_of<'a>(
    modules: &'a BTreeMap<Vec<String>, PathBuf>,
    path: &[String],
) -> Option<&'a PathBuf> {
    (0..=path.len()).rev().find_map(|n| modules.get(&path[..n]))
}

/// Edges file -> file of one crate, from each file's references.
fn import_graph(dir: &str) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let src = workspace_root().join(dir).join("src");
    let files = sources_of(dir);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .filter(|f| !f.ends_with("main.rs") || !src.join("lib.rs").exists())
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let targets: BTreeSet<PathBuf> = referenced_paths(module, &code_of(&text))
            .iter()
            .filter_map(|path| file_of(&modules, path))
            .filter(|target| *target != file)
            .cloned()
            .collect();
        graph.insert(file.clone(), targets);
    }
    graph
}

/// A cycle in `graph`, as the files along it, if there is one.
fn find_cycle(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Option<Vec<PathBuf>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        marks: &mut BTreeMap<PathBuf, Mark>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(node.clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.clone(), Mark::Open);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

/// No two files of a crate import each other, directly or around a loop:
/// each crate's files form layers too. (Between crates, cargo forbids cycles.)
#[test]
fn no_file_imports_form_a_cycle() {
    let mut cycles = Vec::new();
    for dir in CRATE_DIRS {
        let graph = import_graph(dir);
        if let Some(cycle) = find_cycle(&graph) {
            let names: Vec<String> = cycle
                .iter()
                .map(|p| {
                    p.strip_prefix(workspace_root())
                        .unwrap_or(p)
                        .display()
                        .to_string()
                })
                .collect();
            cycles.push(format!("{dir}/: {}", names.join(" -> ")));
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// The cycle check itself finds a loop of two files and one around three.
#[test]
fn the_cycle_check_finds_loops() {
    let p = |s: &str| PathBuf::from(s);
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(p(a)).or_default().insert(p(b));
            g.entry(p(b)).or_default();
        }
        g
    };
    assert!(find_cycle(&graph(&[("a", "b"), ("b", "a")])).is_some());
    assert!(find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])).is_some());
    assert!(find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])).is_none());
    let module = vec!["encrypted".to_string(), "reveal".to_string()];
    let paths = |list: &[&[&str]]| -> Vec<Vec<String>> {
        list.iter()
            .map(|p| p.iter().map(|s| s.to_string()).collect())
            .collect()
    };
    assert_eq!(
        referenced_paths(
            &module,
            "use super::aggregate::{check, x::{Y, Z}};\nlet x = crate::dp::Plan;"
        ),
        paths(&[
            &["dp", "Plan"],
            &["encrypted", "aggregate", "check"],
            &["encrypted", "aggregate", "x", "Y"],
            &["encrypted", "aggregate", "x", "Z"],
        ])
    );
}

/// The backticked words of ARCHITECTURE.md's section on `dir/`.
fn named_in_code_map(architecture: &str, dir: &str) -> BTreeSet<String> {
    let heading = format!("### `{dir}/`");
    let Some(section) = architecture.split(&heading).nth(1) else {
        return BTreeSet::new();
    };
    let section = section.split("\n### ").next().unwrap_or_default();
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.to_string())
        .collect()
}

/// ARCHITECTURE.md's code map names every module of every crate in that
/// crate's section, so the map and the code stay one to one.
#[test]
fn the_code_map_names_every_module() {
    let architecture = std::fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    for dir in CRATE_DIRS {
        let named = named_in_code_map(&architecture, dir);
        assert!(
            !named.is_empty(),
            "ARCHITECTURE.md has no section for {dir}/"
        );
        let src = workspace_root().join(dir).join("src");
        for file in sources_of(dir) {
            let Some(module) = module_of(&src, &file).last().cloned() else {
                continue; // lib.rs, main.rs: the crate itself
            };
            if !named.contains(&module) {
                missing.push(format!("{dir}/: `{module}` ({})", file.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "modules missing from ARCHITECTURE.md's code map:\n{}",
        missing.join("\n")
    );
}
