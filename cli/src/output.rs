//! What commands print: readable text, or one JSON object with `--json`.

use std::path::Path;

use serde::Serialize;
use serde_json::json;
use witmed_policies::credential::Credential;
use witmed_protocol::answer::Answer;

use witmed_node::audit::Entry;
use witmed_node::consents::Counts;
use witmed_node::import::Summary;
use witmed_node::node::{Config, Node};
use witmed_node::store::{self, cf};

/// What `node status` reports.
#[derive(Debug, Serialize)]
pub struct Status {
    pub name: String,
    pub node_id: String,
    pub hospital_key: String,
    pub policy_serial: u64,
    pub patients: u64,
    pub observations: u64,
    pub conditions: u64,
    pub consent: Counts,
    pub audit_entries: u64,
}

impl Status {
    /// Counts what `node` holds.
    pub fn of(node: &Node) -> Result<Status, store::Error> {
        Ok(Status {
            name: node.config.name.clone(),
            node_id: node.id().to_hex(),
            hospital_key: node.config.hospital_key.to_hex(),
            policy_serial: node.policy().serial,
            patients: node.store.count(cf::PATIENTS)?,
            observations: node.store.count(cf::OBSERVATIONS)?,
            conditions: node.store.count(cf::CONDITIONS)?,
            consent: node.consent_registry().counts(),
            audit_entries: node.store.count(cf::AUDIT)?,
        })
    }
}

fn print_json(value: &impl Serialize) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("output serializes")
    );
}

pub fn node_created(dir: &Path, config: &Config, hospital_key_out: Option<&Path>) {
    outln!("node {:?} created in {}", config.name, dir.display());
    outln!("node id:      {}", config.node_key);
    match hospital_key_out {
        Some(path) => outln!(
            "hospital key: {} (in {}; the node never needs it to run)",
            config.hospital_key,
            path.display()
        ),
        None => outln!(
            "hospital key: {} (in {}/hospital.key; move it offline)",
            config.hospital_key,
            dir.display()
        ),
    }
    outln!(
        "next: witmed import physionet --data-dir {} SET_DIR",
        dir.display()
    );
}

pub fn status(s: &Status, json: bool) {
    if json {
        return print_json(s);
    }
    outln!("node {} ({})", s.name, s.node_id);
    outln!("policy serial {}", s.policy_serial);
    outln!("patients:      {}", s.patients);
    outln!("observations:  {}", s.observations);
    outln!("conditions:    {}", s.conditions);
    outln!(
        "consent:       {} enrolled, {} tokens ({} simulated), {} revoked",
        s.consent.enrolled,
        s.consent.tokens,
        s.consent.simulated_tokens,
        s.consent.revoked
    );
    outln!("audit entries: {}", s.audit_entries);
}

pub fn import_summary(s: &Summary, json: bool) {
    if json {
        return print_json(s);
    }
    outln!(
        "imported {} files ({} unchanged, skipped) in {} durable batches",
        s.files,
        s.files_unchanged,
        s.batches
    );
    outln!("patients:     {} ({} new)", s.patients, s.patients_new);
    outln!("observations: {}", s.observations);
    outln!("conditions:   {}", s.conditions);
    outln!("skipped:      {} missing values", s.skipped_missing_values);
    for (kind, n) in &s.skipped_resource_types {
        outln!("              {n} {kind} resources (not used)");
    }
    for line in skipped_by_reason(&s.skipped) {
        outln!("              {line}");
    }
    outln!(
        "rejected:     {} entries, {} files",
        s.rejected.len(),
        s.failed_files.len()
    );
    for r in s.failed_files.iter().chain(&s.rejected) {
        outln!("  {}: {}", r.location, r.reason);
    }
}

/// Examples shown per reason for skipping: enough to find them, not a page of them.
const SKIPPED_EXAMPLES: usize = 3;

/// One line per reason for skipping a value: its count and a few places it occurred.
fn skipped_by_reason(skipped: &[witmed_node::import::source::Rejected]) -> Vec<String> {
    let mut by_reason: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for r in skipped {
        by_reason.entry(&r.reason).or_default().push(&r.location);
    }
    by_reason
        .into_iter()
        .map(|(reason, places)| {
            let examples: Vec<&str> = places.iter().take(SKIPPED_EXAMPLES).copied().collect();
            let more = if places.len() > SKIPPED_EXAMPLES {
                ", ..."
            } else {
                ""
            };
            format!(
                "{} entries: {reason} (e.g. {}{more})",
                places.len(),
                examples.join(", ")
            )
        })
        .collect()
}

/// `keygen`: where the key went and its public half.
pub fn keygen(
    role: witmed_crypto::Role,
    public: &witmed_crypto::PublicKey,
    out: &Path,
    public_out: Option<&Path>,
    json: bool,
) {
    if json {
        return print_json(&json!({
            "role": role.to_string(),
            "public_key": public.to_hex(),
            "path": out.display().to_string(),
            "public_path": public_out.map(|p| p.display().to_string()),
        }));
    }
    outln!("{role} key written to {}", out.display());
    if let Some(p) = public_out {
        outln!(
            "public key written to {} (hand this file over, never the key)",
            p.display()
        );
    }
    outln!("public key: {public}");
}

/// `patient lookup`: the pseudonym at this node.
pub fn pseudonym(pseudonym: &impl std::fmt::Display, node_id: &impl std::fmt::Display, json: bool) {
    if json {
        return print_json(&json!({
            "pseudonym": pseudonym.to_string(),
            "node_id": node_id.to_string(),
        }));
    }
    outln!("pseudonym: {pseudonym}");
    outln!("node id:   {node_id}");
}

/// What `consent submit` stored and refused.
#[derive(Debug, Default, Serialize)]
pub struct Submitted {
    pub accepted: Vec<Stored>,
    pub refused: Vec<Refused>,
}

/// One stored consent token or revocation.
#[derive(Debug, Serialize)]
pub struct Stored {
    pub file: String,
    /// `token` or `revocation`.
    pub kind: &'static str,
    pub token_id: String,
    pub patient: String,
}

/// One refused file, with the error code and message.
#[derive(Debug, Serialize)]
pub struct Refused {
    pub file: String,
    pub code: &'static str,
    pub message: String,
}

impl Refused {
    pub fn new(file: String, failure: crate::Failure) -> Refused {
        Refused {
            file,
            code: failure.code,
            message: failure.message,
        }
    }
}

pub fn submitted(s: &Submitted, json: bool) {
    if json {
        return print_json(s);
    }
    for a in &s.accepted {
        match a.kind {
            "token" => outln!(
                "{}: accepted consent token {} for patient {}",
                a.file,
                a.token_id,
                a.patient
            ),
            _ => outln!(
                "{}: accepted revocation of token {} (patient {})",
                a.file,
                a.token_id,
                a.patient
            ),
        }
    }
    // Refusals are errors: on stderr, beside the final error line.
    for r in &s.refused {
        eprintln!("{}: refused [{}]: {}", r.file, r.code, r.message);
    }
}

pub fn consent_list(node: &Node, json: bool) {
    let registry = node.consent_registry();
    let rows: Vec<_> = registry
        .tokens()
        .map(|v| {
            let t = v.token();
            json!({
                "id": t.id,
                "patient": t.patient.to_hex(),
                "purposes": t.purposes,
                "categories": t.categories,
                "modes": t.modes,
                "not_before": t.not_before,
                "expires": t.expires,
                "simulated": t.simulated,
                "revoked": registry.is_revoked(&t.id),
            })
        })
        .collect();
    if json {
        return print_json(&json!({ "counts": registry.counts(), "tokens": rows }));
    }
    let c = registry.counts();
    outln!(
        "{} tokens ({} simulated, {} revoked), {} patients enrolled",
        c.tokens,
        c.simulated_tokens,
        c.revoked,
        c.enrolled
    );
    for r in rows.iter().take(50) {
        outln!(
            "{} patient {} purposes {} until {}{}{}",
            r["id"].as_str().unwrap_or_default(),
            r["patient"].as_str().unwrap_or_default(),
            r["purposes"],
            r["expires"]
                .as_i64()
                .map_or_else(String::new, crate::labels::utc),
            if r["simulated"] == true {
                " SIMULATED"
            } else {
                ""
            },
            if r["revoked"] == true { " REVOKED" } else { "" },
        );
    }
    if rows.len() > 50 {
        outln!("... {} more (use --json for all)", rows.len() - 50);
    }
}

pub fn credential(c: &Credential, json: bool) {
    if json {
        return print_json(c);
    }
    outln!(
        "valid credential for researcher {} (key {})",
        c.researcher_id,
        c.researcher
    );
    outln!("  {} ({}), project {:?}", c.name, c.institution, c.project);
    outln!(
        "  purposes {}; expires {}",
        c.purposes.join(","),
        crate::labels::utc(c.expires)
    );
}

/// The JSON form of an answer, as `query local --json` prints it.
pub fn answer_json(a: &Answer) -> serde_json::Value {
    let r = &a.released;
    let noise_scale: Vec<f64> = r.components.iter().map(|c| c.noise_scale).collect();
    json!({
        "query_id": a.query_id,
        "node": a.node,
        "value": r.value,
        "values": r.values,
        "ci95": r.ci95.map(|(lo, hi)| vec![lo, hi]),
        "ci95s": r.ci95s.iter().map(|(lo, hi)| vec![*lo, *hi]).collect::<Vec<_>>(),
        "noise_scale": noise_scale.first().copied(),
        "noise_scales": noise_scale,
        "components": r.components,
        "epsilon_spent": r.epsilon_spent,
        "budget_left": a.budget_left,
        "suppressed": r.suppressed,
        "answered_at": a.answered_at,
    })
}

pub fn answer(query: &witmed_protocol::query::Query, a: &Answer, json: bool) {
    if json {
        return print_json(&answer_json(a));
    }
    let r = &a.released;
    outln!("query {} at {}", a.query_id, a.node);
    if r.suppressed {
        outln!("SUPPRESSED: the cohort is smaller than the node's minimum; nothing is released");
    }
    if let (Some(v), Some((lo, hi))) = (r.value, r.ci95) {
        outln!("answer:  {v:.3}   95% interval [{lo:.3}, {hi:.3}]");
    }
    let labels = crate::labels::entries(query, r.values.len());
    for (label, (v, (lo, hi))) in labels.iter().zip(r.values.iter().zip(&r.ci95s)) {
        outln!("  {label:<16} {v:.3}   95% interval [{lo:.3}, {hi:.3}]");
    }
    for c in &r.components {
        outln!(
            "  noise: {} ~ {:?}(scale {:.4})",
            c.name,
            c.mechanism,
            c.noise_scale
        );
    }
    outln!(
        "epsilon spent: {:.4}   budget left: {:.4} (as of the first answer, {})",
        r.epsilon_spent,
        a.budget_left,
        crate::labels::utc(a.answered_at)
    );
}

pub fn audit(entries: &[Entry], json: bool) {
    if json {
        return print_json(&entries);
    }
    for e in entries {
        outln!(
            "{} {:<20} {} {}",
            crate::labels::utc(e.at),
            e.kind,
            &e.actor[..e.actor.len().min(12)],
            e.detail
        );
    }
}
