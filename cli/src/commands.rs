//! One function per `witmed` command.

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use witmed_crypto::{Envelope, KeyPair, Pseudonym, PublicKey, Role};
use witmed_policies::consent::{self, Revocation, Token};
use witmed_policies::credential::{self, Credential};
use witmed_policies::policy::NodePolicy;
use witmed_protocol::query::Query;
use witmed_protocol::vocab::{Category, Mode};

use crate::files::{read_text, MAX_KEY_FILE_BYTES};
use crate::output;
use crate::{
    AuditArgs, Command, ConsentCommand, ConsortiumCommand, CredentialCommand, Failure, GrantArgs,
    ImportArgs, ImportCommand, IssueArgs, LocalQueryArgs, NodeCommand, PatientCommand,
    PolicyCommand, QueryCommand, RevokeArgs,
};
use witmed_node::node::{self, Node};
use witmed_node::{admin, audit, consent_ops, engine, import, unix_now};

type Result<T> = std::result::Result<T, Failure>;

/// Runs one command.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Node(c) => run_node(c),
        Command::Import(c) => run_import(c),
        Command::Keygen(a) => keygen(&a),
        Command::Patient(c) => run_patient(c),
        Command::Consent(c) => run_consent(c),
        Command::Credential(c) => run_credential(c),
        Command::Policy(c) => run_policy(c),
        Command::Query(QueryCommand::Local(a)) => query_local(a),
        Command::Query(QueryCommand::Run(a)) => crate::network::query_run(a),
        Command::Consortium(c) => run_consortium(c),
        Command::Study(c) => crate::study::run(c),
        Command::Audit(a) => show_audit(a),
    }
}

fn open(dir: &Path) -> Result<Node> {
    Node::open(dir, unix_now()).map_err(|e| Failure::new("node_open_failed", e))
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Failure::new("write_failed", format!("{}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(|e| Failure::new("write_failed", format!("{}: {e}", path.display())))
}

fn load_key(path: &Path, role: Role) -> Result<KeyPair> {
    KeyPair::load_role(path, role).map_err(|e| Failure::new("bad_key", e))
}

/// A public key from a file: the one-line hex file `keygen --public-out` writes,
/// or (still accepted) the holder's key file, of which only the public half is used.
fn public_key_from_file(path: &Path, role: Role) -> Result<PublicKey> {
    // A key file is a few hundred bytes; anything much larger is not one.
    let text = read_text(path, MAX_KEY_FILE_BYTES)?;
    match text.trim().parse::<PublicKey>() {
        Ok(public) => Ok(public),
        Err(_) => Ok(load_key(path, role)?.public()),
    }
}

fn parse_public(hex: &str) -> Result<PublicKey> {
    hex.parse().map_err(|e| Failure::new("bad_public_key", e))
}

fn parse_pseudonym(s: &str) -> Result<Pseudonym> {
    s.parse().map_err(|e| Failure::new("bad_pseudonym", e))
}

fn run_node(command: NodeCommand) -> Result<()> {
    match command {
        NodeCommand::Init {
            dir,
            name,
            trust_issuers,
            allow_demonstration_data,
            hospital_key_out,
        } => {
            let issuers = trust_issuers
                .iter()
                .map(|h| parse_public(h))
                .collect::<Result<Vec<_>>>()?;
            let config = node::init_with(
                &dir.data_dir,
                &name,
                issuers,
                unix_now(),
                hospital_key_out.as_deref(),
            )
            .map_err(|e| Failure::new("init_failed", e))?;
            if allow_demonstration_data {
                let node = open(&dir.data_dir)?;
                consent_ops::allow_demonstration_data(&node, unix_now())
                    .map_err(|e| Failure::new("init_failed", e))?;
                outln!("DEMONSTRATION NODE: its policy allows simulated consent");
            }
            output::node_created(&dir.data_dir, &config, hospital_key_out.as_deref());
            Ok(())
        }
        NodeCommand::Run(args) => crate::network::node_run(&args, None),
        NodeCommand::Status { dir, json } => {
            let node = open(&dir.data_dir)?;
            let status = output::Status::of(&node).map_err(|e| Failure::new("store_failed", e))?;
            output::status(&status, json);
            Ok(())
        }
    }
}

fn import_options(args: &ImportArgs) -> import::Options {
    import::Options {
        batch_files: args.batch_files.max(1),
        ack_log: args.ack_log.clone(),
        progress: std::io::stderr().is_terminal() && !args.json,
        now: unix_now(),
    }
}

fn run_import(command: ImportCommand) -> Result<()> {
    let (summary, json, node) = match command {
        ImportCommand::Physionet {
            dir,
            set_dir,
            outcomes,
            import: args,
        } => {
            require_physionet_records(&set_dir)?;
            let node = open(&dir.data_dir)?;
            let summary = import::import_physionet(
                &node.store,
                node.pseudonyms(),
                &set_dir,
                outcomes.as_deref(),
                &import_options(&args),
            );
            (summary, args.json, node)
        }
        ImportCommand::Fhir {
            dir,
            paths,
            import: args,
        } => {
            require_fhir_files(&paths)?;
            let node = open(&dir.data_dir)?;
            let summary = import::import_fhir(
                &node.store,
                node.pseudonyms(),
                &paths,
                &import_options(&args),
            );
            (summary, args.json, node)
        }
    };
    node.invalidate_index();
    let summary = summary.map_err(|e| Failure::new("import_failed", e))?;
    output::import_summary(&summary, json);
    if !summary.failed_files.is_empty() {
        return Err(Failure {
            code: "import_incomplete",
            message: format!(
                "{} files could not be read (named above); everything else was imported",
                summary.failed_files.len()
            ),
            exit: 3,
        });
    }
    Ok(())
}

/// A folder with no record files is a wrong path, not an empty import: say so before opening the node.
fn require_physionet_records(set_dir: &Path) -> Result<()> {
    let files = import::physionet::list_set_files(set_dir).map_err(|e| {
        Failure::new(
            "import_source_unreadable",
            format!(
                "cannot read the PhysioNet set folder {}: {e}",
                set_dir.display()
            ),
        )
    })?;
    if files.is_empty() {
        return Err(Failure::new(
            "import_source_empty",
            format!(
                "{} holds no PhysioNet record files: expected a set folder of RecordID.txt files \
                 (e.g. physionet2012/set-a); for FHIR bundles use `witmed import fhir`",
                set_dir.display()
            ),
        ));
    }
    Ok(())
}

/// Paths that name no FHIR file (a PhysioNet folder, an empty folder) are a wrong path: say so.
fn require_fhir_files(paths: &[PathBuf]) -> Result<()> {
    let files = import::fhir::list_input_files(paths)
        .map_err(|e| Failure::new("import_source_unreadable", e))?;
    if files.is_empty() {
        let named: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Failure::new(
            "import_source_empty",
            format!(
                "{} holds no FHIR files: expected .json bundles or resources, or .ndjson \
                 (e.g. fhir-r4-synthea); for a PhysioNet set use `witmed import physionet`",
                named.join(", ")
            ),
        ));
    }
    Ok(())
}

fn keygen(args: &crate::KeygenArgs) -> Result<()> {
    let role: Role = args.role.parse().map_err(|e| Failure::new("bad_role", e))?;
    let key = KeyPair::generate(role).map_err(|e| Failure::new("keygen_failed", e))?;
    key.save(&args.out)
        .map_err(|e| Failure::new("keygen_failed", e))?;
    if let Some(public_out) = &args.public_out {
        write_new(public_out, &format!("{}\n", key.public()))?;
    }
    output::keygen(
        role,
        &key.public(),
        &args.out,
        args.public_out.as_deref(),
        args.json,
    );
    Ok(())
}

fn run_patient(command: PatientCommand) -> Result<()> {
    match command {
        PatientCommand::Lookup {
            dir,
            source,
            source_id,
            json,
        } => {
            let request = admin::Request::Lookup { source, source_id };
            match ask_node(&dir.data_dir, &request)? {
                admin::Response::Pseudonym { pseudonym, node_id } => {
                    output::pseudonym(&pseudonym, &node_id, json);
                    Ok(())
                }
                other => Err(unexpected(other)),
            }
        }
        PatientCommand::Enrol {
            dir,
            patient,
            key,
            key_file,
        } => {
            let p = parse_pseudonym(&patient)?;
            let public = patient_public_key(key, key_file)?;
            let request = admin::Request::Enrol {
                patient: p.to_hex(),
                key: public.to_hex(),
            };
            match ask_node(&dir.data_dir, &request)? {
                admin::Response::Enrolled { .. } => {
                    outln!("patient {p} enrolled with key {public}");
                    Ok(())
                }
                other => Err(unexpected(other)),
            }
        }
        PatientCommand::Reenrol(args) => reenrol(args),
    }
}

fn patient_public_key(key: Option<String>, key_file: Option<PathBuf>) -> Result<PublicKey> {
    match (key, key_file) {
        (Some(hex), _) => parse_public(&hex),
        (None, Some(path)) => public_key_from_file(&path, Role::Patient),
        (None, None) => Err(Failure::new(
            "missing_key",
            "give --key HEX or --key-file FILE",
        )),
    }
}

/// Signs a re-enrolment with the admin or old patient key and applies it.
fn reenrol(args: crate::ReenrolArgs) -> Result<()> {
    let p = parse_pseudonym(&args.patient)?;
    let new_key = patient_public_key(args.key, args.key_file)?;
    let signer = match (&args.admin_key, &args.old_patient_key) {
        (Some(path), _) => load_key(path, Role::Hospital)?,
        (None, Some(path)) => load_key(path, Role::Patient)?,
        (None, None) => {
            return Err(Failure::new(
                "missing_key",
                "a key change needs --admin-key FILE (the hospital admin key) or --old-patient-key FILE",
            ))
        }
    };
    let record = consent::Reenrolment {
        version: consent::REENROLMENT_VERSION,
        node: node_id(&args.dir.data_dir)?,
        patient: p,
        new_key,
        reason: args.reason,
        issued_at: unix_now(),
        id: random_id()?,
    };
    let text = record.sign(&signer).to_text();
    match ask_node(&args.dir.data_dir, &admin::Request::Reenrol { text })? {
        admin::Response::Reenrolled {
            old_key,
            superseded,
            ..
        } => {
            outln!("patient {p} re-enrolled: key {old_key} replaced by {new_key}");
            outln!("{superseded} consent tokens signed by the old key no longer count; the patient must grant consent again with the new key");
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}

/// The node's id from `node.toml`, without opening the store (which a running node holds).
fn node_id(dir: &Path) -> Result<PublicKey> {
    let path = node::DataDir(dir.to_path_buf()).config();
    let text = read_text(&path, MAX_KEY_FILE_BYTES)?;
    let config: node::Config = toml::from_str(&text)
        .map_err(|e| Failure::new("bad_config", format!("{}: {}", path.display(), e.message())))?;
    Ok(config.node_key)
}

/// Carries out `request` through the running node's admin channel, or on
/// the store directly when no node runs in `dir`. A refusal becomes a Failure.
fn ask_node(dir: &Path, request: &admin::Request) -> Result<admin::Response> {
    NodeAt::new(dir).ask(request)
}

/// The node of a data dir: the running one, through its admin channel, or
/// else its store, opened once for all requests of a command.
struct NodeAt<'a> {
    dir: &'a Path,
    opened: Option<Node>,
}

impl<'a> NodeAt<'a> {
    fn new(dir: &'a Path) -> NodeAt<'a> {
        NodeAt { dir, opened: None }
    }

    fn ask(&mut self, request: &admin::Request) -> Result<admin::Response> {
        let response = match &self.opened {
            Some(node) => admin::execute(node, request, unix_now()),
            None => match admin::call(self.dir, request)
                .map_err(|e| Failure::new("admin_channel_failed", e))?
            {
                Some(response) => response,
                None => {
                    let node = self.opened.insert(open(self.dir)?);
                    admin::execute(node, request, unix_now())
                }
            },
        };
        match response {
            admin::Response::Error { code, message } => {
                Err(Failure::new(static_code(code), message))
            }
            other => Ok(other),
        }
    }
}

/// A code received from the node, as the `&'static str` a Failure carries.
///
/// Leaked once per failed command (a short-lived process); anything that is
/// not a plain snake_case code becomes `admin_error`.
fn static_code(code: String) -> &'static str {
    let plain = code.len() <= 48 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if plain {
        Box::leak(code.into_boxed_str())
    } else {
        "admin_error"
    }
}

fn unexpected(response: admin::Response) -> Failure {
    Failure::new(
        "admin_error",
        format!("the node answered {response:?}, not what was asked; use the same witmed version as the node"),
    )
}

fn run_consent(command: ConsentCommand) -> Result<()> {
    match command {
        ConsentCommand::Grant(args) => grant(args),
        ConsentCommand::Revoke(args) => revoke(args),
        ConsentCommand::Submit { dir, files, json } => submit(&dir.data_dir, &files, json),
        ConsentCommand::List { dir, json } => {
            let node = open(&dir.data_dir)?;
            output::consent_list(&node, json);
            Ok(())
        }
    }
}

fn parse_list<T>(items: &[String], code: &'static str) -> Result<std::collections::BTreeSet<T>>
where
    T: std::str::FromStr + Ord,
    T::Err: std::fmt::Display,
{
    items
        .iter()
        .map(|s| s.trim().parse::<T>().map_err(|e| Failure::new(code, e)))
        .collect()
}

fn random_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    witmed_crypto::fill_random(&mut bytes)
        .map_err(|_| Failure::new("random_failed", "OS random source failed"))?;
    Ok(hex::encode(bytes))
}

fn grant(args: GrantArgs) -> Result<()> {
    let key = load_key(&args.key, Role::Patient)?;
    let now = unix_now();
    let token = Token {
        version: consent::TOKEN_VERSION,
        id: random_id()?,
        node: parse_public(&args.node)?,
        patient: parse_pseudonym(&args.patient)?,
        purposes: args.purposes.clone(),
        categories: parse_list::<Category>(&args.categories, "bad_category")?,
        modes: parse_list::<Mode>(&args.modes, "bad_mode")?,
        not_before: now,
        expires: now + i64::from(args.days) * 86_400,
        simulated: false,
    };
    let signed = token.clone().sign(&key);
    // Check the token as the node will, with this patient's key enrolled.
    let own_key = key.public();
    consent::verify_token(&signed, &token.node, &|_| Some(own_key), now)
        .map_err(|e| Failure::new(e.error_code(), e))?;
    write_new(&args.out, &signed.to_text())?;
    outln!(
        "consent token {} written to {}",
        token.id,
        args.out.display()
    );
    outln!(
        "give it to the hospital: witmed consent submit --data-dir DIR {}",
        args.out.display()
    );
    Ok(())
}

fn revoke(args: RevokeArgs) -> Result<()> {
    let key = load_key(&args.key, Role::Patient)?;
    let text = read_text(&args.token, witmed_policies::MAX_SIGNED_BYTES)?;
    let envelope =
        witmed_policies::parse_signed(&text).map_err(|e| Failure::new(e.error_code(), e))?;
    let token: Token = envelope
        .open(consent::TOKEN_DOMAIN)
        .map_err(|e| Failure::new("bad_token", e))?;
    if envelope.signer != key.public() {
        return Err(Failure::new(
            "wrong_patient_key",
            "this token was signed by another key; revoke it with the key that granted it",
        ));
    }
    let revocation = Revocation {
        version: consent::REVOCATION_VERSION,
        token_id: token.id.clone(),
        node: token.node,
        patient: token.patient,
        issued_at: unix_now(),
    };
    write_new(&args.out, &revocation.sign(&key).to_text())?;
    outln!(
        "revocation of token {} written to {}",
        token.id,
        args.out.display()
    );
    Ok(())
}

fn submit(dir: &Path, files: &[PathBuf], json: bool) -> Result<()> {
    let mut node = NodeAt::new(dir);
    let mut submitted = output::Submitted::default();
    for path in files {
        let outcome = read_text(path, witmed_policies::MAX_SIGNED_BYTES)
            .and_then(|text| node.ask(&admin::Request::Submit { text }));
        let file = path.display().to_string();
        match outcome {
            Ok(admin::Response::Token { id, patient }) => submitted.accepted.push(output::Stored {
                file,
                kind: "token",
                token_id: id.to_string(),
                patient: patient.to_string(),
            }),
            Ok(admin::Response::Revocation { token_id, patient }) => {
                submitted.accepted.push(output::Stored {
                    file,
                    kind: "revocation",
                    token_id: token_id.to_string(),
                    patient: patient.to_string(),
                })
            }
            Ok(other) => submitted
                .refused
                .push(output::Refused::new(file, unexpected(other))),
            Err(e) => submitted.refused.push(output::Refused::new(file, e)),
        }
    }
    output::submitted(&submitted, json);
    let failures = submitted.refused.len();
    if failures > 0 {
        return Err(Failure::new(
            "submit_refused",
            format!(
                "{failures} of {} files refused; nothing of them was stored",
                files.len()
            ),
        ));
    }
    Ok(())
}

fn run_credential(command: CredentialCommand) -> Result<()> {
    match command {
        CredentialCommand::Issue(args) => issue(args),
        CredentialCommand::Verify {
            credential,
            issuer,
            json,
        } => {
            let text = read_text(&credential, witmed_policies::MAX_SIGNED_BYTES)?;
            let envelope = witmed_policies::parse_signed(&text)
                .map_err(|e| Failure::new(e.error_code(), e))?;
            let issuer = parse_public(&issuer)?;
            let verified = credential::verify_credential(&envelope, &[issuer], unix_now())
                .map_err(|e| Failure::new(e.error_code(), e))?;
            output::credential(verified.credential(), json);
            Ok(())
        }
    }
}

fn issue(args: IssueArgs) -> Result<()> {
    let authority = load_key(&args.authority_key, Role::Authority)?;
    let researcher = match (&args.researcher, &args.researcher_key) {
        (Some(hex), _) => parse_public(hex)?,
        (None, Some(path)) => public_key_from_file(path, Role::Researcher)?,
        (None, None) => {
            return Err(Failure::new(
                "missing_key",
                "give the researcher's public key (--researcher-public-key HEX) or their key file (--researcher-key FILE)",
            ))
        }
    };
    let now = unix_now();
    let credential = Credential {
        version: credential::CREDENTIAL_VERSION,
        researcher,
        researcher_id: args.researcher_id,
        name: args.name,
        institution: args.institution,
        commercial: args.commercial,
        not_for_profit: args.not_for_profit,
        project: args.project,
        purposes: args.purposes,
        issued_at: now,
        expires: now + i64::from(args.days) * 86_400,
    };
    let signed = credential.clone().sign(&authority);
    credential::verify_credential(&signed, &[authority.public()], now)
        .map_err(|e| Failure::new(e.error_code(), e))?;
    write_new(&args.out, &signed.to_text())?;
    outln!(
        "credential for researcher {} (key {}) written to {}",
        credential.researcher_id,
        credential.researcher,
        args.out.display()
    );
    outln!(
        "issuer (trust this in node policies): {}",
        authority.public()
    );
    Ok(())
}

fn run_policy(command: PolicyCommand) -> Result<()> {
    match command {
        PolicyCommand::Show { dir } => {
            let node = open(&dir.data_dir)?;
            out!(
                "{}",
                toml::to_string(&node.policy()).expect("policies serialize")
            );
            Ok(())
        }
        PolicyCommand::Sign { key, policy, out } => {
            let key = load_key(&key, Role::Hospital)?;
            let text = read_text(&policy, node::MAX_POLICY_BYTES)?;
            let policy: NodePolicy = toml::from_str(&text).map_err(|e| {
                Failure::new("bad_policy", format!("{}: {}", "policy TOML", e.message()))
            })?;
            policy
                .validate()
                .map_err(|e| Failure::new(e.error_code(), e))?;
            let serial = policy.serial;
            write_new(&out, &policy.sign(&key).to_text())?;
            outln!("policy serial {serial} signed into {}", out.display());
            Ok(())
        }
        PolicyCommand::Install { dir, file } => {
            let node = open(&dir.data_dir)?;
            let text = read_text(&file, node::MAX_POLICY_BYTES)?;
            let policy = node
                .install_policy(&text, unix_now())
                .map_err(|e| Failure::new("policy_refused", e))?;
            outln!("policy serial {} installed", policy.serial);
            Ok(())
        }
    }
}

fn query_local(args: LocalQueryArgs) -> Result<()> {
    let researcher = load_key(&args.key, Role::Researcher)?;
    let text = read_text(&args.credential, witmed_policies::MAX_SIGNED_BYTES)?;
    let credential: Envelope =
        witmed_policies::parse_signed(&text).map_err(|e| Failure::new(e.error_code(), e))?;
    let query_text = read_text(&args.query, witmed_protocol::query::MAX_QUERY_BYTES)?;
    let query = Query::from_toml(&query_text)
        .map_err(|e| Failure::new("bad_query", format!("{}: {e}", args.query.display())))?;
    let node = open(&args.dir.data_dir)?;
    let answer = engine::answer(&node, &query, &researcher.public(), &credential, unix_now())
        .map_err(|e| Failure::new(e.code(), e))?;
    output::answer(&query, &answer, args.json);
    Ok(())
}

fn run_consortium(command: ConsortiumCommand) -> Result<()> {
    use crate::consortium;
    match command {
        ConsortiumCommand::Create { name, out } => consortium::create(&name, &out),
        ConsortiumCommand::Add {
            directory,
            dir,
            addresses,
        } => consortium::add(&directory, &dir.data_dir, &addresses),
        ConsortiumCommand::Sign {
            authority_key,
            directory,
            out,
        } => consortium::sign(&authority_key, &directory, &out),
        ConsortiumCommand::Show {
            directory,
            authority,
            json,
        } => consortium::show(&directory, authority.as_deref(), json),
        ConsortiumCommand::Install {
            dir,
            authority,
            file,
        } => consortium::install(&dir.data_dir, authority.as_deref(), &file),
    }
}

fn show_audit(args: AuditArgs) -> Result<()> {
    let node = open(&args.dir.data_dir)?;
    let entries = audit::read_all(&node.store, args.kind.as_deref())
        .map_err(|e| Failure::new("store_failed", e))?;
    output::audit(&entries, args.json);
    Ok(())
}
