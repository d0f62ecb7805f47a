//! README's federation and encrypted-mode sections, run as written against three real nodes on 127.0.0.1.
//!
//! The hospitals are set up as the step-by-step section does (that part is
//! run as written by `cli/tests/cli_as_a_user.rs`), with simulated consent,
//! which is why this runs `witmed-lab` under the name `witmed`. Then every
//! line of the two sections runs through `sh -c` with only these
//! substitutions: each line naming `/var/lib/witmed` runs once per node with
//! that node's directory; a node's address and listen address become its
//! loopback port; `CONSORTIUM_KEY` and `STUDY_ID` are what the README says
//! to take them from; `node run` is started in the background.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

/// The names README's encrypted query expects: its aggregator is "St Elsewhere".
const HOSPITALS: [&str; 3] = ["St Elsewhere", "North", "South"];

struct Hospital {
    dir: PathBuf,
    port: u16,
}

/// Stops every node when the test ends, whatever happened.
struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three consenting hospitals trusting one authority, and researcher bob with a credential, in `cwd`.
fn hospitals(cwd: &Path) -> Vec<Hospital> {
    let authority = public_key(&run_ok(&[
        "keygen",
        "--role",
        "authority",
        "--out",
        s(&cwd.join("authority.key")),
    ]));
    let set = small_set(cwd, 60);
    let made = HOSPITALS
        .iter()
        .map(|name| {
            let dir = cwd.join(name.replace(' ', "-"));
            run_ok(&[
                "node",
                "init",
                "--data-dir",
                s(&dir),
                "--name",
                name,
                "--trust-issuer",
                &authority,
                "--allow-demonstration-data",
            ]);
            run_ok(&["import", "physionet", "--data-dir", s(&dir), s(&set)]);
            simulate_consent(&dir, "5");
            Hospital {
                dir,
                port: free_port(),
            }
        })
        .collect();
    run_ok(&[
        "keygen",
        "--role",
        "researcher",
        "--out",
        s(&cwd.join("bob.key")),
    ]);
    issue_credential(
        &cwd.join("authority.key"),
        &cwd.join("bob.key"),
        "bob",
        "HMB",
        &cwd.join("bob.credential"),
    );
    made
}

/// Starts `witmed node run` as written, for one hospital; returns once it listens.
fn start(line: &str, h: &Hospital, cwd: &Path) -> Child {
    let line = line.replace(
        "/ip4/0.0.0.0/tcp/4001",
        &format!("/ip4/127.0.0.1/tcp/{}", h.port),
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {line}"))
        .current_dir(cwd)
        .env(
            "PATH",
            format!(
                "{}:{}",
                witmed_on_path().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The node prints `listening on ADDRESS` once its socket is bound; the
    // reader keeps draining stdout after that.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if l.starts_with("listening on") {
                let _ = tx.try_send(());
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{line}: not listening within 30 s"));
    child
}

/// Runs the lines of one README section, per node where they name the node.
fn run_section(
    commands: &[String],
    hospitals: &[Hospital],
    cwd: &Path,
    placeholders: &mut Vec<(&'static str, String)>,
    running: &mut Running,
) -> Vec<String> {
    let mut outputs = Vec::new();
    for written in commands {
        let mut line = written.replace(" [--json]", "");
        for (name, value) in placeholders.iter() {
            line = line.replace(name, value);
        }
        let per_node: Vec<String> = if line.contains("/var/lib/witmed") {
            hospitals
                .iter()
                .map(|h| {
                    line.replace("/var/lib/witmed", s(&h.dir)).replace(
                        "/ip4/10.0.0.5/tcp/4001",
                        &format!("/ip4/127.0.0.1/tcp/{}", h.port),
                    )
                })
                .collect()
        } else {
            vec![line.clone()]
        };
        for (i, one) in per_node.iter().enumerate() {
            if one.contains("witmed node run") {
                running.0.push(start(one, &hospitals[i], cwd));
                continue;
            }
            let out = sh_line(one, cwd);
            let stdout = text(&out.stdout);
            assert!(
                out.status.success(),
                "README line failed: {one}\nstdout: {stdout}\nstderr: {}",
                text(&out.stderr)
            );
            if written.contains("keygen --role authority --out consortium.key") {
                placeholders.push(("CONSORTIUM_KEY", public_key(&stdout)));
            }
            if written.contains("study keygen") {
                placeholders.push(("STUDY_ID", field(&stdout, "study ").to_string()));
            }
            outputs.push(stdout);
        }
    }
    outputs
}

#[test]
fn readme_federation_and_encrypted_sections_run_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let hospitals = hospitals(cwd);
    std::fs::write(cwd.join("hr.toml"), readme_toml("## The query file")).unwrap();
    let mut placeholders = Vec::new();
    let mut running = Running(Vec::new());

    let federation = readme_commands("### A federation", "`query run` signs the query");
    assert!(
        federation.len() >= 7,
        "README lines not found: {federation:?}"
    );
    let outputs = run_section(
        &federation,
        &hospitals,
        cwd,
        &mut placeholders,
        &mut running,
    );
    assert_eq!(running.0.len(), 3, "one node run per hospital");
    let answer = outputs.last().unwrap();
    for name in HOSPITALS {
        assert!(
            answer
                .lines()
                .any(|l| l.contains(name) && l.contains("answered")),
            "{name} did not answer README's query:\n{answer}"
        );
    }

    let encrypted = readme_commands(
        "### Encrypted mode: only the total is ever revealed",
        "```toml",
    );
    assert!(
        encrypted.len() >= 3,
        "README lines not found: {encrypted:?}"
    );
    let study_line = &encrypted[0];
    run_section(
        std::slice::from_ref(study_line),
        &hospitals,
        cwd,
        &mut placeholders,
        &mut running,
    );
    let study_id = placeholders
        .iter()
        .find(|(name, _)| *name == "STUDY_ID")
        .map(|(_, id)| id.clone())
        .expect("study keygen prints the study id");
    let enc = readme_toml("### Encrypted mode: only the total is ever revealed")
        .replace("STUDY_ID", &study_id);
    std::fs::write(cwd.join("enc.toml"), enc).unwrap();
    let outputs = run_section(
        &encrypted[1..],
        &hospitals,
        cwd,
        &mut placeholders,
        &mut running,
    );
    let total = outputs.last().unwrap();
    for name in HOSPITALS {
        assert!(
            total
                .lines()
                .any(|l| l.contains(name) && l.contains("included")),
            "{name} not included in README's encrypted query:\n{total}"
        );
    }
}
