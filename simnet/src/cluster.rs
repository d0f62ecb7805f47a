//! A federation on one machine: hospital nodes as real `witmed node run` processes on loopback.
//!
//! Everything is done through the `witmed` command line, as operators,
//! patients, authorities and researchers would: `node init`, `import
//! physionet`, `consent simulate`, `credential issue`, `consortium
//! add/sign/install`, `node run`, `query run`. simnet does not link the
//! node crate (the node's `demo` command links simnet), so the binary's path
//! is passed in. Faults are injected with signals: SIGKILL to kill a node,
//! SIGSTOP/SIGCONT to make it hang and recover.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::proxy::{Fault, Proxy};

/// Errors while building or driving a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`witmed {args}` failed: {stderr}")]
    Command { args: String, stderr: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("node {name} did not start listening within {seconds} s (see {log})")]
    StartTimeout {
        name: String,
        seconds: u64,
        log: String,
    },
    #[error("unexpected output from witmed: {0}")]
    Output(String),
}

/// One hospital to create.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    /// PhysioNet-format record files this hospital holds.
    pub records: Vec<PathBuf>,
    /// Make this member misbehave (`witmed node run --fault ...`): `bad-signature`,
    /// `garbage`, `oversized` or `wrong-query`.
    pub misbehave: Option<String>,
}

/// How the cluster is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `witmed` binary.
    pub bin: PathBuf,
    /// Where node data dirs and keys go (must exist and be empty of earlier clusters).
    pub root: PathBuf,
    /// Share of patients with (simulated) consent.
    pub consent_rate: f64,
    /// Outcomes file to import with the records, if any.
    pub outcomes: Option<PathBuf>,
    /// Put a fault-injecting proxy in front of every node (see [`crate::proxy`]).
    pub proxied: bool,
    /// Extra environment of every node process (tests: `WITMED_INSECURE_NOISE_OFF`).
    pub node_env: Vec<(String, String)>,
}

/// A running (or stopped) hospital node.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub data_dir: PathBuf,
    /// The multiaddr the node listens on.
    pub listen: String,
    /// The multiaddr researchers dial (the proxy's, when proxied).
    pub address: String,
    misbehave: Option<String>,
    /// More arguments of `node run` (e.g. `--http 127.0.0.1:PORT`).
    extra_args: Vec<String>,
    /// Serve the HTTP API (and patient page) on this loopback address too.
    http: Option<String>,
    proxy: Option<Proxy>,
    /// Holds the node's port until the node starts.
    reservation: Option<TcpListener>,
    process: Option<Child>,
}

/// The federation.
#[derive(Debug)]
pub struct Cluster {
    pub bin: PathBuf,
    pub root: PathBuf,
    pub members: Vec<Member>,
    /// Researcher key and credential usable with every node.
    pub researcher_key: PathBuf,
    pub credential: PathBuf,
    /// The signed consortium directory.
    pub directory: PathBuf,
    /// The consortium authority's public key (hex).
    pub consortium_authority: String,
    node_env: Vec<(String, String)>,
}

/// Runs `witmed args` and returns stdout.
pub fn witmed(bin: &Path, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(bin)
        .args(args)
        .env_remove("WITMED_DATA_DIR")
        .env_remove("WITMED_NODE_DIR")
        .output()?;
    if !out.status.success() {
        return Err(Error::Command {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn public_key(output: &str) -> Result<String, Error> {
    output
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .map(|k| k.trim().to_string())
        .ok_or_else(|| Error::Output(output.to_string()))
}

/// Reserves `n` distinct free TCP ports on loopback by holding a listener on each.
///
/// A node's reservation is released just before the node starts and binds
/// the port itself, so no other process (another test's cluster, an
/// outgoing connection) can take it in between, except in that instant.
pub fn reserve_ports(n: usize) -> Result<Vec<TcpListener>, Error> {
    Ok((0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("paths are UTF-8")
}

impl Cluster {
    /// Creates every node (keys, data, consent), the credential and the directory. Starts nothing.
    pub fn build(options: &Options, specs: &[Spec]) -> Result<Cluster, Error> {
        let bin = options.bin.as_path();
        let root = options.root.clone();
        fs::create_dir_all(&root)?;
        let authority = root.join("authority.key");
        let authority_pub = public_key(&witmed(
            bin,
            &["keygen", "--role", "authority", "--out", s(&authority)],
        )?)?;
        let consortium_key = root.join("consortium.key");
        let consortium_pub = public_key(&witmed(
            bin,
            &["keygen", "--role", "authority", "--out", s(&consortium_key)],
        )?)?;
        let (researcher_key, credential) = new_researcher(bin, &root, "researcher")?;
        let unsigned = root.join("consortium.toml");
        witmed(
            bin,
            &[
                "consortium",
                "create",
                "--name",
                "simnet",
                "--out",
                s(&unsigned),
            ],
        )?;
        let mut members = Vec::new();
        let reservations = reserve_ports(specs.len())?;
        for (spec, reservation) in specs.iter().zip(reservations) {
            let member = build_member(options, spec, &authority_pub, reservation)?;
            witmed(
                bin,
                &[
                    "consortium",
                    "add",
                    "--directory",
                    s(&unsigned),
                    "--data-dir",
                    s(&member.data_dir),
                    "--address",
                    &member.address,
                ],
            )?;
            members.push(member);
        }
        let directory = root.join("consortium.signed");
        witmed(
            bin,
            &[
                "consortium",
                "sign",
                "--authority-key",
                s(&consortium_key),
                "--directory",
                s(&unsigned),
                "--out",
                s(&directory),
            ],
        )?;
        for m in &members {
            witmed(
                bin,
                &[
                    "consortium",
                    "install",
                    "--data-dir",
                    s(&m.data_dir),
                    "--authority",
                    &consortium_pub,
                    s(&directory),
                ],
            )?;
        }
        Ok(Cluster {
            bin: options.bin.clone(),
            root,
            members,
            researcher_key,
            credential,
            directory,
            consortium_authority: consortium_pub,
            node_env: options.node_env.clone(),
        })
    }

    /// Starts node `i` and waits until it listens.
    pub fn start(&mut self, i: usize) -> Result<(), Error> {
        let bin = self.bin.clone();
        let m = &mut self.members[i];
        let log_path = m.data_dir.join("node.log");
        let log = fs::File::create(&log_path)?;
        // Release the port just before the node binds it.
        drop(m.reservation.take());
        let mut command = Command::new(&bin);
        command.args([
            "node",
            "run",
            "--data-dir",
            s(&m.data_dir),
            "--listen",
            &m.listen,
        ]);
        if let Some(fault) = &m.misbehave {
            command.args(["--fault", fault]);
        }
        command.args(&m.extra_args);
        if let Some(http) = &m.http {
            command.args(["--http", http]);
        }
        let mut child = command
            .env_remove("WITMED_DATA_DIR")
            .env_remove("WITMED_NODE_DIR")
            .envs(self.node_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        m.process = Some(child);
        wait_listening(stdout, &m.name, &log_path)
    }

    /// Sets more arguments of node `i`'s `node run` from its next start (e.g. `--http ADDR`).
    pub fn set_node_args(&mut self, i: usize, args: Vec<String>) {
        self.members[i].extra_args = args;
    }

    /// Makes node `i` serve its HTTP API on `addr` (loopback) from its next start.
    pub fn set_http(&mut self, i: usize, addr: Option<&str>) {
        self.members[i].http = addr.map(str::to_string);
    }

    /// Sets how node `i` misbehaves from its next start (`None`: honest).
    pub fn set_misbehave(&mut self, i: usize, fault: Option<&str>) {
        self.members[i].misbehave = fault.map(str::to_string);
    }

    /// Starts every node.
    pub fn start_all(&mut self) -> Result<(), Error> {
        (0..self.members.len()).try_for_each(|i| self.start(i))
    }

    /// Kills node `i` with SIGKILL (a crash).
    pub fn kill(&mut self, i: usize) -> Result<(), Error> {
        if let Some(mut child) = self.members[i].process.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stops node `i` with SIGTERM and waits for it to exit; returns its exit code.
    pub fn stop(&mut self, i: usize) -> Result<Option<i32>, Error> {
        let Some(mut child) = self.members[i].process.take() else {
            return Ok(None);
        };
        signal(child.id(), "TERM")?;
        Ok(child.wait()?.code())
    }

    /// Sets the network fault between researchers and node `i` (needs `Options::proxied`).
    pub fn set_fault(&self, i: usize, fault: Fault) {
        if let Some(p) = &self.members[i].proxy {
            p.set_fault(fault);
        }
    }

    /// Resident memory of node `i` in KiB (from /proc), if running.
    pub fn rss_kib(&self, i: usize) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid(i)?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// True if node `i`'s process is still alive.
    pub fn alive(&mut self, i: usize) -> bool {
        match self.members[i].process.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Freezes node `i` (SIGSTOP): it keeps its connections but answers nothing.
    pub fn pause(&self, i: usize) -> Result<(), Error> {
        self.signal_member(i, "STOP")
    }

    /// Thaws node `i` (SIGCONT).
    pub fn resume(&self, i: usize) -> Result<(), Error> {
        self.signal_member(i, "CONT")
    }

    fn signal_member(&self, i: usize, sig: &str) -> Result<(), Error> {
        match &self.members[i].process {
            Some(child) => signal(child.id(), sig),
            None => Ok(()),
        }
    }

    /// Process id of node `i`, if running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].process.as_ref().map(Child::id)
    }

    /// Runs `witmed query run --json` as the cluster's researcher.
    pub fn query(&self, query_file: &Path, timeout: &str) -> Result<serde_json::Value, Error> {
        self.query_as(&self.researcher_key, &self.credential, query_file, timeout)
    }

    /// Runs `witmed query run --json` with the given key and credential.
    pub fn query_as(
        &self,
        key: &Path,
        credential: &Path,
        query_file: &Path,
        timeout: &str,
    ) -> Result<serde_json::Value, Error> {
        self.query_with(key, credential, query_file, timeout, &[])
    }

    /// Makes a study key pair in `dir` as the cluster's researcher would; returns the study id.
    pub fn study_keygen(&self, dir: &Path) -> Result<String, Error> {
        let out = witmed(&self.bin, &["study", "keygen", "--out", s(dir)])?;
        out.lines()
            .find_map(|l| l.strip_prefix("study "))
            .map(|id| id.trim().to_string())
            .ok_or_else(|| Error::Output(out.clone()))
    }

    /// Another researcher with a key and a credential from the cluster's authority.
    pub fn add_researcher(&self, name: &str) -> Result<(PathBuf, PathBuf), Error> {
        new_researcher(&self.bin, &self.root, name)
    }

    /// Publishes the study in `dir` to every member as the cluster's researcher.
    pub fn publish_study(&self, dir: &Path) -> Result<String, Error> {
        self.publish_study_as(dir, &self.researcher_key, &self.credential)
    }

    /// Publishes the study in `dir` with the given researcher key and credential.
    pub fn publish_study_as(
        &self,
        dir: &Path,
        key: &Path,
        credential: &Path,
    ) -> Result<String, Error> {
        witmed(
            &self.bin,
            &[
                "study",
                "publish",
                "--study",
                s(dir),
                "--directory",
                s(&self.directory),
                "--authority",
                &self.consortium_authority,
                "--key",
                s(key),
                "--credential",
                s(credential),
            ],
        )
    }

    /// Runs an encrypted-mode `witmed query run --json`, decrypting with the study in `study_dir`.
    pub fn query_encrypted(
        &self,
        query_file: &Path,
        study_dir: &Path,
        timeout: &str,
    ) -> Result<serde_json::Value, Error> {
        self.query_encrypted_as(
            &self.researcher_key,
            &self.credential,
            query_file,
            study_dir,
            timeout,
        )
    }

    /// Like [`Cluster::query_encrypted`] with the given researcher key and credential.
    pub fn query_encrypted_as(
        &self,
        key: &Path,
        credential: &Path,
        query_file: &Path,
        study_dir: &Path,
        timeout: &str,
    ) -> Result<serde_json::Value, Error> {
        self.query_with(
            key,
            credential,
            query_file,
            timeout,
            &["--study", s(study_dir)],
        )
    }

    /// Runs `witmed query run --json` with the given key and credential and `extra` arguments.
    pub fn query_with(
        &self,
        key: &Path,
        credential: &Path,
        query_file: &Path,
        timeout: &str,
        extra: &[&str],
    ) -> Result<serde_json::Value, Error> {
        let out = Command::new(&self.bin)
            .args([
                "query",
                "run",
                "--directory",
                s(&self.directory),
                "--authority",
                &self.consortium_authority,
            ])
            .args([
                "--key",
                s(key),
                "--credential",
                s(credential),
                "--query",
                s(query_file),
                "--timeout",
                timeout,
                "--json",
            ])
            .args(extra)
            .output()?;
        serde_json::from_slice(&out.stdout).map_err(|_| Error::Command {
            args: "query run".into(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.process.take() {
                let _ = signal(child.id(), "CONT");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn signal(pid: u32, sig: &str) -> Result<(), Error> {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()?;
    if !status.success() {
        return Err(Error::Output(format!("kill -{sig} {pid} failed")));
    }
    Ok(())
}

/// A researcher key `NAME.key` and credential `NAME.credential` in `root`,
/// issued by the cluster's authority (`root/authority.key`) for HMB.
fn new_researcher(bin: &Path, root: &Path, name: &str) -> Result<(PathBuf, PathBuf), Error> {
    let key = root.join(format!("{name}.key"));
    witmed(bin, &["keygen", "--role", "researcher", "--out", s(&key)])?;
    let credential = root.join(format!("{name}.credential"));
    witmed(
        bin,
        &[
            "credential",
            "issue",
            "--authority-key",
            s(&root.join("authority.key")),
            "--researcher-key",
            s(&key),
            "--researcher-id",
            name,
            "--name",
            "Simulated Researcher",
            "--institution",
            "simnet",
            "--project",
            "simnet",
            "--purposes",
            "HMB",
            "--not-for-profit",
            "--out",
            s(&credential),
        ],
    )?;
    Ok((key, credential))
}

/// Creates one node's data dir with its share of records.
fn build_member(
    options: &Options,
    spec: &Spec,
    authority_pub: &str,
    reservation: TcpListener,
) -> Result<Member, Error> {
    let bin = options.bin.as_path();
    let data_dir = options.root.join(&spec.name);
    witmed(
        bin,
        &[
            "node",
            "init",
            "--data-dir",
            s(&data_dir),
            "--name",
            &spec.name,
            "--trust-issuer",
            authority_pub,
            // simnet's nodes hold demonstration data: simulated consent.
            "--allow-demonstration-data",
        ],
    )?;
    let set = options.root.join(format!("{}-records", spec.name));
    fs::create_dir_all(&set)?;
    for record in &spec.records {
        let name = record.file_name().expect("record files have names");
        std::os::unix::fs::symlink(fs::canonicalize(record)?, set.join(name))?;
    }
    let mut import = vec!["import", "physionet", "--data-dir", s(&data_dir), s(&set)];
    let outcomes;
    if let Some(o) = &options.outcomes {
        outcomes = o.clone();
        import.extend(["--outcomes", s(&outcomes)]);
    }
    witmed(bin, &import)?;
    let rate = options.consent_rate.to_string();
    witmed(
        bin,
        &[
            "consent",
            "simulate",
            "--data-dir",
            s(&data_dir),
            "--rate",
            &rate,
            "--purposes",
            "HMB",
        ],
    )?;
    let port = reservation.local_addr()?.port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let (address, proxy) = if options.proxied {
        let proxy = Proxy::start(([127, 0, 0, 1], port).into())?;
        (
            format!("/ip4/127.0.0.1/tcp/{}", proxy.addr().port()),
            Some(proxy),
        )
    } else {
        (listen.clone(), None)
    };
    Ok(Member {
        name: spec.name.clone(),
        data_dir,
        listen,
        address,
        misbehave: spec.misbehave.clone(),
        extra_args: Vec::new(),
        http: None,
        proxy,
        reservation: Some(reservation),
        process: None,
    })
}

/// Waits for the `listening on` line, then keeps draining stdout so the node never blocks on it.
fn wait_listening(stdout: std::process::ChildStdout, name: &str, log: &Path) -> Result<(), Error> {
    let (tx, rx) = mpsc::sync_channel::<()>(1);
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("listening on") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    let seconds = 30;
    rx.recv_timeout(Duration::from_secs(seconds))
        .map_err(|_| Error::StartTimeout {
            name: name.to_string(),
            seconds,
            log: log.display().to_string(),
        })
}

/// Splits `files` round-robin into `n` hospitals named `Hospital-1`...
pub fn split(files: &[PathBuf], n: usize) -> Vec<Spec> {
    (0..n)
        .map(|i| Spec {
            name: format!("Hospital-{}", i + 1),
            records: files.iter().skip(i).step_by(n).cloned().collect(),
            misbehave: None,
        })
        .collect()
}
