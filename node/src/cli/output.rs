//! What commands print: readable text, or one JSON object with `--json`.

use std::path::Path;

use serde::Serialize;
use serde_json::json;
use witmed_policies::credential::Credential;
use witmed_protocol::answer::Answer;

use crate::audit::Entry;
use crate::consents::Counts;
use crate::import::Summary;
use crate::node::{Config, Node};
use crate::store::{self, cf};

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
            consent: crate::locks::read(&node.consents).counts(),
            audit_entries: node.store.count(cf::AUDIT)?,
        })
    }
}

fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("output serializes")
    );
}

pub fn node_created(dir: &Path, config: &Config, hospital_key_out: Option<&Path>) {
    println!("node {:?} created in {}", config.name, dir.display());
    println!("node id:      {}", config.node_key);
    match hospital_key_out {
        Some(path) => println!(
            "hospital key: {} (in {}; the node never needs it to run)",
            config.hospital_key,
            path.display()
        ),
        None => println!(
            "hospital key: {} (in {}/hospital.key; move it offline)",
            config.hospital_key,
            dir.display()
        ),
    }
    println!(
        "next: witmed import physionet --data-dir {} SET_DIR",
        dir.display()
    );
}

pub fn status(s: &Status, json: bool) {
    if json {
        return print_json(s);
    }
    println!("node {} ({})", s.name, s.node_id);
    println!("policy serial {}", s.policy_serial);
    println!("patients:      {}", s.patients);
    println!("observations:  {}", s.observations);
    println!("conditions:    {}", s.conditions);
    println!(
        "consent:       {} enrolled, {} tokens ({} simulated), {} revoked",
        s.consent.enrolled, s.consent.tokens, s.consent.simulated_tokens, s.consent.revoked
    );
    println!("audit entries: {}", s.audit_entries);
}

pub fn import_summary(s: &Summary, json: bool) {
    if json {
        return print_json(s);
    }
    println!(
        "imported {} files ({} unchanged, skipped) in {} durable batches",
        s.files, s.files_unchanged, s.batches
    );
    println!("patients:     {} ({} new)", s.patients, s.patients_new);
    println!("observations: {}", s.observations);
    println!("conditions:   {}", s.conditions);
    println!("skipped:      {} missing values", s.skipped_missing_values);
    for (kind, n) in &s.skipped_resource_types {
        println!("              {n} {kind} resources (not used)");
    }
    for r in &s.skipped {
        println!("              {}: {}", r.location, r.reason);
    }
    println!(
        "rejected:     {} entries, {} files",
        s.rejected.len(),
        s.failed_files.len()
    );
    for r in s.failed_files.iter().chain(&s.rejected) {
        println!("  {}: {}", r.location, r.reason);
    }
}

pub fn consent_list(node: &Node, json: bool) {
    let registry = crate::locks::read(&node.consents);
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
    println!(
        "{} tokens ({} simulated, {} revoked), {} patients enrolled",
        c.tokens, c.simulated_tokens, c.revoked, c.enrolled
    );
    for r in rows.iter().take(50) {
        println!(
            "{} patient {} purposes {} until {}{}{}",
            r["id"].as_str().unwrap_or_default(),
            r["patient"].as_str().unwrap_or_default(),
            r["purposes"],
            r["expires"],
            if r["simulated"] == true {
                " SIMULATED"
            } else {
                ""
            },
            if r["revoked"] == true { " REVOKED" } else { "" },
        );
    }
    if rows.len() > 50 {
        println!("... {} more (use --json for all)", rows.len() - 50);
    }
}

pub fn credential(c: &Credential, json: bool) {
    if json {
        return print_json(c);
    }
    println!(
        "valid credential for researcher {} (key {})",
        c.researcher_id, c.researcher
    );
    println!("  {} ({}), project {:?}", c.name, c.institution, c.project);
    println!("  purposes {}; expires {}", c.purposes.join(","), c.expires);
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

pub fn answer(a: &Answer, json: bool) {
    if json {
        return print_json(&answer_json(a));
    }
    let r = &a.released;
    println!("query {} at {}", a.query_id, a.node);
    if r.suppressed {
        println!("SUPPRESSED: the cohort is smaller than the node's minimum; nothing is released");
    }
    if let (Some(v), Some((lo, hi))) = (r.value, r.ci95) {
        println!("answer:  {v:.3}   95% interval [{lo:.3}, {hi:.3}]");
    }
    for (i, (v, (lo, hi))) in r.values.iter().zip(&r.ci95s).enumerate() {
        println!("  [{i}] {v:.3}   95% interval [{lo:.3}, {hi:.3}]");
    }
    for c in &r.components {
        println!(
            "  noise: {} ~ {:?}(scale {:.4})",
            c.name, c.mechanism, c.noise_scale
        );
    }
    println!(
        "epsilon spent: {:.4}   budget left: {:.4}",
        r.epsilon_spent, a.budget_left
    );
}

pub fn audit(entries: &[Entry], json: bool) {
    if json {
        return print_json(&entries);
    }
    for e in entries {
        println!(
            "{} {:<20} {} {}",
            e.at,
            e.kind,
            &e.actor[..e.actor.len().min(12)],
            e.detail
        );
    }
}
