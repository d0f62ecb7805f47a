//! The `witmed` command as a hospital IT engineer meets it: pipes, wrong folders, environment, `--json`.
//!
//! Every test runs the built binary as a person or a script would, through
//! `sh -c` where the shell's plumbing is the point.

#[path = "../../lab/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// A node named "General" in a fresh temporary directory.
fn fresh_node() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    init_node(&node, "General");
    (tmp, node)
}

/// Runs `witmed args | consumer` through `sh -c`; returns witmed's exit status, its stderr and the consumer's output.
fn piped_into(args: &[&str], consumer: &str, tmp: &Path) -> (i32, String, String) {
    let status_file = tmp.join("witmed.status");
    let stderr_file = tmp.join("witmed.stderr");
    let script =
        format!(r#"{{ "$0" "$@" 2>"$STDERR_FILE"; echo $? >"$STATUS_FILE"; }} | {consumer}"#);
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_witmed"))
        .args(args)
        .env_remove("WITMED_DATA_DIR")
        .env_remove("WITMED_NODE_DIR")
        .env("STATUS_FILE", &status_file)
        .env("STDERR_FILE", &stderr_file)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "the pipeline failed: {}",
        text(&out.stderr)
    );
    let status = std::fs::read_to_string(&status_file).unwrap();
    let stderr = std::fs::read_to_string(&stderr_file).unwrap();
    (status.trim().parse().unwrap(), stderr, text(&out.stdout))
}

/// Runs `witmed args` with stdout a pipe whose reader is already gone: every write fails with EPIPE.
fn into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    witmed()
        .args(args)
        .env_remove("WITMED_NODE_DIR")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("witmed runs")
}

fn assert_no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "witmed panicked on a closed pipe: {stderr}"
    );
}

#[test]
fn json_into_a_closed_pipe_ends_quietly_and_successfully() {
    let (_tmp, node) = fresh_node();
    let out = into_closed_pipe(&["node", "status", "--data-dir", s(&node), "--json"]);
    assert_no_panic(&text(&out.stderr));
    assert!(
        out.status.success(),
        "exit {}: {}",
        out.status,
        text(&out.stderr)
    );
}

#[test]
fn readable_output_into_a_closed_pipe_ends_quietly_and_successfully() {
    let (_tmp, node) = fresh_node();
    let out = into_closed_pipe(&["node", "status", "--data-dir", s(&node)]);
    assert_no_panic(&text(&out.stderr));
    assert!(
        out.status.success(),
        "exit {}: {}",
        out.status,
        text(&out.stderr)
    );
}

#[test]
fn json_piped_to_head_does_not_panic() {
    let (tmp, node) = fresh_node();
    let (status, stderr, shown) = piped_into(
        &["audit", "--data-dir", s(&node), "--json"],
        "head -c 10",
        tmp.path(),
    );
    assert_no_panic(&stderr);
    assert_eq!(status, 0, "stderr: {stderr}");
    assert!(shown.len() <= 10);
}

#[test]
fn import_piped_to_head_does_not_panic_and_still_imports() {
    let (tmp, node) = fresh_node();
    let fhir = fhir_dir();
    let (status, stderr, shown) = piped_into(
        &["import", "fhir", "--data-dir", s(&node), s(&fhir)],
        "head -1",
        tmp.path(),
    );
    assert_no_panic(&stderr);
    assert_eq!(status, 0, "stderr: {stderr}");
    assert_eq!(shown.lines().count(), 1, "{shown}");
    // The import finished although its reader left after one line.
    let status = run_json(&["node", "status", "--data-dir", s(&node)]);
    assert_eq!(status["patients"], 60, "{status}");
}

#[test]
fn import_physionet_from_a_fhir_folder_fails_naming_the_folder() {
    let (_tmp, node) = fresh_node();
    let fhir = fhir_dir();
    let out = run_fail(&["import", "physionet", "--data-dir", s(&node), s(&fhir)]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error[import_source_empty]"), "{stderr}");
    assert!(
        stderr.contains(s(&fhir)),
        "the folder is not named: {stderr}"
    );
    assert!(
        stderr.contains("RecordID.txt"),
        "what was expected is not said: {stderr}"
    );
    assert!(
        !text(&out.stdout).contains("imported"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn import_physionet_from_an_empty_folder_fails() {
    let (tmp, node) = fresh_node();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = run_fail(&["import", "physionet", "--data-dir", s(&node), s(&empty)]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error[import_source_empty]"), "{stderr}");
    assert!(stderr.contains(s(&empty)), "{stderr}");
}

#[test]
fn import_fhir_from_a_physionet_folder_fails_naming_the_folder() {
    let (tmp, node) = fresh_node();
    let set = small_set(tmp.path(), 3);
    let out = run_fail(&["import", "fhir", "--data-dir", s(&node), s(&set)]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error[import_source_empty]"), "{stderr}");
    assert!(stderr.contains(s(&set)), "{stderr}");
    assert!(
        stderr.contains(".json"),
        "what was expected is not said: {stderr}"
    );
}

#[test]
fn fhir_import_summarises_skipped_values_and_a_rerun_adds_none() {
    let (_tmp, node) = fresh_node();
    let fhir = fhir_dir();
    let first = run_ok(&["import", "fhir", "--data-dir", s(&node), s(&fhir)]);
    assert!(
        first.lines().count() < 40,
        "the summary runs to {} lines:\n{first}",
        first.lines().count()
    );
    let not_numeric = first
        .lines()
        .find(|l| l.contains("is not a numeric quantity"))
        .unwrap_or_else(|| panic!("no summary of non-numeric values:\n{first}"));
    assert!(not_numeric.contains(" entries: "), "{not_numeric}");
    assert!(not_numeric.contains("(e.g. "), "no examples: {not_numeric}");

    let again = run_ok(&["import", "fhir", "--data-dir", s(&node), s(&fhir)]);
    assert!(
        !again.contains("is not a numeric quantity"),
        "a re-run reports skipped values again:\n{again}"
    );
    assert!(again.contains("60 unchanged"), "{again}");
}

#[test]
fn the_shared_data_folder_is_never_taken_for_a_node() {
    // README has WITMED_DATA_DIR name the shared data sets; a command without
    // --data-dir must not open (or create) a node there.
    let data = data_dir();
    let out = witmed()
        .args(["node", "status"])
        .env("WITMED_DATA_DIR", &data)
        .env_remove("WITMED_NODE_DIR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--data-dir"), "{stderr}");
    assert!(!data.join("config.toml").exists() && !data.join("db").exists());
}

#[test]
fn witmed_node_dir_names_the_node() {
    let (_tmp, node) = fresh_node();
    let out = witmed()
        .args(["node", "status", "--json"])
        .env("WITMED_NODE_DIR", &node)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["name"], "General");
}

/// Runs `witmed args` (which include `--json`) and parses stdout.
fn is_hex_key(value: &serde_json::Value) -> bool {
    value
        .as_str()
        .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
}

#[test]
fn keygen_json_gives_role_public_key_and_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("alice.key");
    let public = tmp.path().join("alice.pub");
    let out = json_of(&[
        "keygen",
        "--role",
        "patient",
        "--out",
        s(&key),
        "--public-out",
        s(&public),
        "--json",
    ]);
    assert_eq!(out["role"], "patient", "{out}");
    assert!(is_hex_key(&out["public_key"]), "{out}");
    assert_eq!(out["path"], s(&key));
    assert_eq!(out["public_path"], s(&public));
    let written = std::fs::read_to_string(&public).unwrap();
    assert_eq!(written.trim(), out["public_key"].as_str().unwrap());
}

/// A node with three set-a patients, a patient key pair and its public key file.
struct Enrolment {
    tmp: tempfile::TempDir,
    node: PathBuf,
    record_id: String,
}

fn node_with_records() -> Enrolment {
    let (tmp, node) = fresh_node();
    let set = small_set(tmp.path(), 3);
    run_ok(&["import", "physionet", "--data-dir", s(&node), s(&set)]);
    let first = physionet_files(&set).remove(0);
    let record_id = first.file_stem().unwrap().to_str().unwrap().to_owned();
    Enrolment {
        tmp,
        node,
        record_id,
    }
}

#[test]
fn patient_lookup_json_gives_the_pseudonym_and_node_id() {
    let e = node_with_records();
    let found = json_of(&[
        "patient",
        "lookup",
        "--data-dir",
        s(&e.node),
        "--source",
        "physionet2012",
        "--source-id",
        &e.record_id,
        "--json",
    ]);
    assert!(
        is_hex_key(&found["pseudonym"]) || found["pseudonym"].is_string(),
        "{found}"
    );
    let status = run_json(&["node", "status", "--data-dir", s(&e.node)]);
    assert_eq!(found["node_id"], status["node_id"], "{found}");
}

#[test]
fn staff_enrol_from_a_public_key_file_and_submit_json_says_what_was_stored() {
    let e = node_with_records();
    let path = |name: &str| e.tmp.path().join(name);
    let key = json_of(&[
        "keygen",
        "--role",
        "patient",
        "--out",
        s(&path("alice.key")),
        "--public-out",
        s(&path("alice.pub")),
        "--json",
    ]);
    let found = json_of(&[
        "patient",
        "lookup",
        "--data-dir",
        s(&e.node),
        "--source",
        "physionet2012",
        "--source-id",
        &e.record_id,
        "--json",
    ]);
    let pseudonym = found["pseudonym"].as_str().unwrap();
    let node_id = found["node_id"].as_str().unwrap();
    // Staff hold only the public key file, never alice.key.
    let enrolled = run_ok(&[
        "patient",
        "enrol",
        "--data-dir",
        s(&e.node),
        "--patient",
        pseudonym,
        "--key-file",
        s(&path("alice.pub")),
    ]);
    assert!(
        enrolled.contains(key["public_key"].as_str().unwrap()),
        "{enrolled}"
    );
    run_ok(&[
        "consent",
        "grant",
        "--key",
        s(&path("alice.key")),
        "--node",
        node_id,
        "--patient",
        pseudonym,
        "--purposes",
        "HMB",
        "--out",
        s(&path("alice.consent")),
    ]);
    let stored = json_of(&[
        "consent",
        "submit",
        "--data-dir",
        s(&e.node),
        s(&path("alice.consent")),
        "--json",
    ]);
    let accepted = &stored["accepted"][0];
    assert_eq!(accepted["kind"], "token", "{stored}");
    assert_eq!(accepted["patient"], pseudonym, "{stored}");
    assert!(accepted["token_id"].is_string(), "{stored}");
    assert_eq!(stored["refused"].as_array().unwrap().len(), 0, "{stored}");
}

#[test]
fn consortium_show_json_lists_members_and_signer() {
    let (tmp, node) = fresh_node();
    let path = |name: &str| tmp.path().join(name);
    let authority = json_of(&[
        "keygen",
        "--role",
        "authority",
        "--out",
        s(&path("consortium.key")),
        "--json",
    ]);
    run_ok(&[
        "consortium",
        "create",
        "--name",
        "Net",
        "--out",
        s(&path("c.toml")),
    ]);
    run_ok(&[
        "consortium",
        "add",
        "--directory",
        s(&path("c.toml")),
        "--data-dir",
        s(&node),
        "--address",
        "/ip4/127.0.0.1/tcp/4001",
    ]);
    let unsigned = json_of(&[
        "consortium",
        "show",
        "--directory",
        s(&path("c.toml")),
        "--json",
    ]);
    assert_eq!(unsigned["signed_by"], serde_json::Value::Null, "{unsigned}");
    run_ok(&[
        "consortium",
        "sign",
        "--authority-key",
        s(&path("consortium.key")),
        "--directory",
        s(&path("c.toml")),
        "--out",
        s(&path("c.signed")),
    ]);
    let signed = json_of(&[
        "consortium",
        "show",
        "--directory",
        s(&path("c.signed")),
        "--json",
    ]);
    assert_eq!(signed["signed_by"], authority["public_key"], "{signed}");
    assert_eq!(signed["consortium"], "Net");
    assert_eq!(signed["members"][0]["name"], "General", "{signed}");
    assert!(signed["members"][0]["peer_id"].is_string());
}

/// The code of a failed command's `error[code]: ...` line.
fn error_code_of(out: &Output) -> String {
    let stderr = text(&out.stderr);
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("error[")?.split(']').next())
        .unwrap_or_else(|| panic!("no error line: {stderr}"))
        .to_string()
}

/// A researcher with a key and a credential in `dir`; returns their paths.
fn researcher_in(dir: &Path) -> (PathBuf, PathBuf) {
    let (authority, key, credential) = (
        dir.join("authority.key"),
        dir.join("bob.key"),
        dir.join("bob.credential"),
    );
    run_ok(&["keygen", "--role", "authority", "--out", s(&authority)]);
    run_ok(&["keygen", "--role", "researcher", "--out", s(&key)]);
    issue_credential(&authority, &key, "bob", "HMB", &credential);
    (key, credential)
}

/// A consortium directory that is a huge (sparse) file is refused at its
/// size limit: the researcher's client reads no more of it than the limit.
#[test]
fn a_huge_consortium_directory_is_refused_without_being_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, credential) = researcher_in(tmp.path());
    let huge = tmp.path().join("consortium.signed");
    // 64 GiB of holes: reading it whole would take that much memory.
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    let out = run_fail(&[
        "query",
        "run",
        "--directory",
        s(&huge),
        "--key",
        s(&key),
        "--credential",
        s(&credential),
        "--query",
        s(&tmp.path().join("q.toml")),
    ]);
    assert_no_panic(&text(&out.stderr));
    assert_eq!(error_code_of(&out), "too_large", "{}", text(&out.stderr));
}

/// A directory at the highest serial cannot take another member: refused
/// with a code, never a panic writing a serial TOML cannot hold.
#[test]
fn adding_to_a_directory_at_the_highest_serial_is_refused_without_a_panic() {
    let (tmp, node) = fresh_node();
    let directory = tmp.path().join("c.toml");
    run_ok(&[
        "consortium",
        "create",
        "--name",
        "Net",
        "--out",
        s(&directory),
    ]);
    let fresh = std::fs::read_to_string(&directory).unwrap();
    // TOML's integers are i64: the highest serial a directory file can hold.
    let last = fresh.replace("serial = 0", &format!("serial = {}", i64::MAX));
    assert_ne!(fresh, last, "no serial line in {fresh}");
    std::fs::write(&directory, last).unwrap();
    let out = run_fail(&[
        "consortium",
        "add",
        "--directory",
        s(&directory),
        "--data-dir",
        s(&node),
        "--address",
        "/ip4/127.0.0.1/tcp/4001",
    ]);
    assert_no_panic(&text(&out.stderr));
    assert_eq!(
        error_code_of(&out),
        "bad_directory",
        "{}",
        text(&out.stderr)
    );
}

/// `witmed [path] -h`, as a person at a terminal would read it.
fn short_help(path: &[String]) -> String {
    let mut args = path.to_vec();
    args.push("-h".to_owned());
    let out = witmed().args(&args).output().unwrap();
    assert!(out.status.success(), "witmed {args:?} failed");
    text(&out.stdout)
}

/// Lines of the named section (`Commands:`, `Options:`, `Arguments:`) of a help text.
fn section<'a>(help: &'a str, title: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|l| *l != title)
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect()
}

/// An option or argument line; help printed below an item is indented deeper (10 spaces).
fn starts_an_item(line: &str) -> bool {
    let item = line.trim_start();
    let indent = line.len() - item.len();
    indent < 8 && (item.starts_with('-') || item.starts_with('<') || item.starts_with('['))
}

/// Help text is words, not only clap's `[default: ..]` or `[env: ..]` notes.
fn is_help_text(text: &str) -> bool {
    let text = text.trim();
    !text.is_empty() && !text.starts_with('[')
}

/// Items of a help section (an option or argument line) that carry no help text.
///
/// clap prints help beside the item, or on the next, deeper-indented line
/// when the page is wide; both count.
fn items_without_help<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    let mut missing = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !starts_an_item(line) {
            continue;
        }
        let beside = line.trim().split_once("  ").map(|(_, help)| help);
        let below = lines
            .get(i + 1)
            .filter(|next| !starts_an_item(next))
            .copied();
        if !beside.or(below).is_some_and(is_help_text) {
            missing.push(line.trim());
        }
    }
    missing
}

#[test]
fn every_option_of_every_command_has_help_text() {
    let mut pending: Vec<Vec<String>> = vec![vec![]];
    let mut missing = Vec::new();
    let mut walked = 0;
    while let Some(path) = pending.pop() {
        let help = short_help(&path);
        walked += 1;
        for title in ["Options:", "Arguments:"] {
            for item in items_without_help(&section(&help, title)) {
                missing.push(format!("witmed {}: {item}", path.join(" ")));
            }
        }
        for line in section(&help, "Commands:") {
            let name = line.split_whitespace().next().unwrap_or_default();
            if !name.is_empty() && name != "help" {
                let mut sub = path.clone();
                sub.push(name.to_owned());
                pending.push(sub);
            }
        }
    }
    assert!(
        walked > 30,
        "only {walked} help pages found: is the help format changed?"
    );
    assert!(
        missing.is_empty(),
        "options without help:\n{}",
        missing.join("\n")
    );
}

#[test]
fn readme_step_by_step_runs_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    std::fs::create_dir(cwd.join("admin")).unwrap();
    std::fs::write(cwd.join("hr.toml"), readme_toml("## The query file")).unwrap();
    let node = cwd.join("node");
    let mut placeholders: Vec<(&str, String)> = Vec::new();
    let mut authority = None;
    let commands = readme_commands("## Using witmed, step by step", "### A federation");
    assert!(commands.len() > 20, "README steps not found: {commands:?}");
    for written in &commands {
        let mut line = written
            .replace("/var/lib/witmed", s(&node))
            .replace("/media/admin/", &format!("{}/", s(&cwd.join("admin"))))
            .replace("../shared/data", s(&data_dir()))
            .replace(" [--json]", "");
        for (name, value) in &placeholders {
            line = line.replace(name, value);
        }
        let out = sh_line(&line, cwd);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "README step failed: {line}\nstdout: {stdout}\nstderr: {}",
            text(&out.stderr)
        );
        if written.contains("patient lookup") {
            let pseudonym = value_after(&stdout, "pseudonym:").expect("lookup prints it");
            let node_id = value_after(&stdout, "node id:").expect("lookup prints it");
            placeholders.push(("PSEUDONYM", pseudonym.to_owned()));
            placeholders.push(("NODE_ID", node_id.to_owned()));
        }
        if written.contains("keygen --role authority") {
            authority = value_after(&stdout, "public key:").map(str::to_owned);
        }
        if written.contains("policy show") {
            // README: "add the authority to trusted_issuers, raise serial".
            let policy = std::fs::read_to_string(cwd.join("policy.toml")).unwrap();
            let trusted = format!("trusted_issuers = [\"{}\"]", authority.as_deref().unwrap());
            let edited = policy
                .replace("trusted_issuers = []", &trusted)
                .replace("serial = 1\n", "serial = 2\n");
            assert_ne!(
                edited, policy,
                "the policy edit README asks for did not apply"
            );
            std::fs::write(cwd.join("policy.toml"), edited).unwrap();
        }
    }
    let audit = text(&sh_line(&format!("witmed audit --data-dir {}", s(&node)), cwd).stdout);
    assert!(
        audit.contains("query."),
        "the README query left no audit entry: {audit}"
    );
}

#[test]
fn a_running_nodes_log_in_a_file_carries_no_colour_and_stays_off_stdout() {
    use std::io::BufRead;
    let (_tmp, node) = fresh_node();
    let mut child = witmed()
        .args([
            "node",
            "run",
            "--data-dir",
            s(&node),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("running"), "{first}");
    // SIGTERM stops the node cleanly (README); give its log a moment to be written first.
    std::thread::sleep(std::time::Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("INFO"),
        "a running node logs at info: {stderr:?}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a log file: {stderr:?}"
    );
    for line in first.lines().chain(rest.lines()) {
        assert!(
            !line.contains(" INFO ") && !line.contains(" WARN "),
            "a log line on stdout: {line}"
        );
    }
}

/// The binary a hospital installs has none of the lab's tooling: no demo,
/// no benchmarks, no simulated consent, no fault injection (they are in
/// `witmed-lab`, see lab/tests/lab_cli.rs).
#[test]
fn the_hospital_binary_has_no_demo_bench_simulated_consent_or_faults() {
    let help = run_ok(&["--help"]);
    for command in ["node", "import", "consent", "query", "study", "audit"] {
        assert!(help.contains(command), "no {command} in:\n{help}");
    }
    for lab in ["demo", "bench"] {
        assert!(
            !help.lines().any(|l| l.trim_start().starts_with(lab)),
            "{lab} in the hospital binary:\n{help}"
        );
        let out = run_fail(&[lab]);
        assert!(text(&out.stderr).contains("unrecognized subcommand"));
    }
    let consent_help = run_ok(&["consent", "--help"]);
    assert!(!consent_help.contains("simulate"), "{consent_help}");
    let out = run_fail(&["consent", "simulate", "--data-dir", "/nonexistent"]);
    assert!(text(&out.stderr).contains("unrecognized subcommand"));
    let (_tmp, node) = fresh_node();
    let out = run_fail(&["node", "run", "--data-dir", s(&node), "--fault", "garbage"]);
    assert!(
        text(&out.stderr).contains("unexpected argument '--fault'"),
        "{}",
        text(&out.stderr)
    );
}

/// `witmed audit verify` as an auditor runs it: an untouched log passes; an
/// entry edited by someone holding the data dir and the master key is named,
/// and stays named (the node never signs over a log it found damaged).
#[test]
fn audit_verify_passes_on_an_untouched_log_and_names_an_edited_entry() {
    use witmed_crypto::at_rest::MasterKey;
    use witmed_node::audit::Entry;
    use witmed_node::store::{cf, Store};

    let (tmp, node) = fresh_node();
    let set = small_set(tmp.path(), 3);
    run_ok(&["import", "physionet", "--data-dir", s(&node), s(&set)]);
    let ok = run_ok(&["audit", "verify", "--data-dir", s(&node)]);
    assert!(ok.contains("audit log verified"), "{ok}");
    let json = run_json(&["audit", "verify", "--data-dir", s(&node)]);
    assert_eq!(json["verified"], true, "{json}");
    let entries = json["entries"].as_u64().unwrap();
    assert!(entries >= 2, "{json}");
    // `witmed audit` without verify still lists the entries.
    assert!(run_ok(&["audit", "--data-dir", s(&node)]).contains("import"));

    let first = 1u64.to_be_bytes();
    {
        let master = MasterKey::load(&node.join("master.key")).unwrap();
        let store = Store::open(&node.join("db"), &master).unwrap();
        let mut entry: Entry = store.get(cf::AUDIT, &first).unwrap().unwrap();
        entry.detail = "nothing happened here".into();
        let mut batch = store.batch();
        batch.put(cf::AUDIT, &first, &entry).unwrap();
        store.write_durable(batch).unwrap();
    }
    for _ in 0..2 {
        let out = run_fail(&["audit", "verify", "--data-dir", s(&node)]);
        let stderr = text(&out.stderr);
        assert!(stderr.contains("error[audit_edited]"), "{stderr}");
        assert_eq!(out.status.code(), Some(1));
    }
}
