//! `witmed bench encrypted`: encrypted-mode cost, end to end and step by step, beside the raw tfhe operations it uses.
//!
//! The raw operations are timed in this process on the study's parameter
//! set: key generation, encrypting a share, adding two ciphertexts, and
//! decrypting a total. The end-to-end figure is the researcher's view over
//! real nodes on loopback (sign, send to the aggregator, the aggregator asks
//! every member, each member computes, adds noise and encrypts, the
//! aggregator adds and answers, the researcher checks and decrypts); the
//! same count in DP mode on the same cluster is measured beside it, so the
//! cost of encryption is the difference.

use std::time::{Duration, Instant};

use witmed_crypto::fhe::ClientKey;
use witmed_protocol::query::Query;

use super::{err, machine, ms, pct, synthetic_cluster, tempdir, Result};
use witmed_net::client::{self, Status};
use witmed_net::reveal;
use witmed_node::encrypted::study;
use witmed_node::unix_now;

/// Times `f` `n` times; returns the median.
fn median(n: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    pct(&mut times, 0.5)
}

/// Raw tfhe costs on the pinned parameters.
struct Raw {
    keygen_ms: f64,
    public_key_bytes: usize,
    ciphertext_bytes: usize,
    encrypt_ms: f64,
    add_ms: f64,
    decrypt_ms: f64,
}

fn raw(values: usize, repetitions: usize) -> Result<Raw> {
    let mut keys = None;
    let keygen = median(5, || keys = Some(ClientKey::generate()));
    let (client, public) = keys.expect("generated");
    let share = vec![1234i64; values];
    let ct = public.encrypt(&share).map_err(err)?;
    let encrypt = median(repetitions, || {
        public.encrypt(&share).expect("encrypts");
    });
    let mut sum = ct.clone();
    let add = median(repetitions, || sum.add_assign(&ct).expect("same shape"));
    let decrypt = median(repetitions, || {
        client.decrypt(&ct, 1).expect("decrypts");
    });
    Ok(Raw {
        keygen_ms: ms(keygen),
        public_key_bytes: public.to_bytes().len(),
        ciphertext_bytes: ct.to_bytes().len(),
        encrypt_ms: ms(encrypt),
        add_ms: ms(add),
        decrypt_ms: ms(decrypt),
    })
}

/// One end-to-end row.
struct Row {
    hospitals: usize,
    encrypted_p50_ms: f64,
    encrypted_p95_ms: f64,
    dp_p50_ms: f64,
    total_bytes: usize,
    /// 95% half-widths of the same count (epsilon 0.01) in each mode.
    encrypted_halfwidth: f64,
    dp_halfwidth: f64,
}

/// Time of the per-query accounting a member does before it encrypts (OpenDP, bisection over the share scale).
///
/// Nodes remember the scale per query shape; a new epsilon each time measures the search itself.
fn share_plan_ms(hospitals: usize, repetitions: usize) -> Result<f64> {
    let queries = (0..repetitions)
        .map(|i| {
            let text = count_query("plan", "encrypted", &"0".repeat(64), "a", hospitals).replace(
                "epsilon = 0.01",
                &format!("epsilon = {}", 0.01 + i as f64 * 1e-7),
            );
            Query::from_toml(&text).map_err(err)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut next = queries.iter();
    Ok(ms(median(repetitions, || {
        let query = next.next().expect("one query per repetition");
        witmed_node::encrypted::shares::SharePlan::new(query).expect("plans");
    })))
}

/// `witmed bench encrypted`.
pub fn run(
    hospitals: &[usize],
    patients: usize,
    repetitions: usize,
    csv: Option<&std::path::Path>,
) -> Result<()> {
    outln!(
        "witmed bench encrypted ({}; {patients} synthetic patients per hospital, {repetitions} queries per row)",
        machine()
    );
    let raw1 = raw(1, repetitions.max(20))?;
    let raw10 = raw(10, repetitions.max(20))?;
    outln!("\nraw tfhe operations (LWE dimension 2048, compact public key, no server key):");
    outln!(
        "  key generation                 {:>9.2} ms",
        raw1.keygen_ms
    );
    outln!(
        "  public key                     {:>9} bytes",
        raw1.public_key_bytes
    );
    outln!(
        "  ciphertext, 1 / 10 values      {:>9} / {} bytes",
        raw1.ciphertext_bytes,
        raw10.ciphertext_bytes
    );
    outln!(
        "  encrypt a share, 1 / 10 values {:>9.3} / {:.3} ms",
        raw1.encrypt_ms,
        raw10.encrypt_ms
    );
    outln!(
        "  add two ciphertexts, 1 / 10    {:>9.4} / {:.4} ms",
        raw1.add_ms,
        raw10.add_ms
    );
    outln!(
        "  decrypt a total, 1 value       {:>9.3} ms",
        raw1.decrypt_ms
    );
    outln!("\nend to end, researcher's view (encrypted count vs the same count in DP mode):");
    outln!(
        "{:>9} {:>10} {:>10} {:>10} {:>12} {:>14} {:>12} {:>12} {:>10}",
        "hospitals",
        "enc p50 ms",
        "enc p95 ms",
        "DP p50 ms",
        "total bytes",
        "new plan ms",
        "raw work ms",
        "enc ±95%",
        "DP ±95%"
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut table = String::from(
        "hospitals,encrypted_p50_ms,encrypted_p95_ms,dp_p50_ms,total_bytes,new_plan_ms,raw_work_ms,encrypted_halfwidth95,dp_halfwidth95\n",
    );
    for &n in hospitals {
        let row = end_to_end(n, patients, repetitions)?;
        let plan = share_plan_ms(n, repetitions.max(20))?;
        // The raw tfhe work on this machine: n encryptions shared by its
        // cores, n - 1 additions, one decryption.
        let raw_work = raw1.encrypt_ms * n.div_ceil(cores) as f64
            + (n - 1) as f64 * raw1.add_ms
            + raw1.decrypt_ms;
        outln!(
            "{:>9} {:>10.1} {:>10.1} {:>10.1} {:>12} {:>14.2} {:>12.2} {:>12.1} {:>10.1}",
            row.hospitals,
            row.encrypted_p50_ms,
            row.encrypted_p95_ms,
            row.dp_p50_ms,
            row.total_bytes,
            plan,
            raw_work,
            row.encrypted_halfwidth,
            row.dp_halfwidth
        );
        table.push_str(&format!(
            "{},{:.3},{:.3},{:.3},{},{:.3},{:.3},{:.2},{:.2}\n",
            row.hospitals,
            row.encrypted_p50_ms,
            row.encrypted_p95_ms,
            row.dp_p50_ms,
            row.total_bytes,
            plan,
            raw_work,
            row.encrypted_halfwidth,
            row.dp_halfwidth
        ));
    }
    outln!("(DP: every hospital answers the researcher directly. Encrypted: a hop through the aggregator,");
    outln!(" each member's share plan and encryption, the sum, the decryption. new plan: a member's search for");
    outln!(" the share scale of a query shape it has not seen (then remembered). raw work: the tfhe operations");
    outln!(" alone on this machine's {cores} cores. ±95%: interval half-widths of the same count at epsilon 0.01;");
    outln!(" DP mode sums one discrete Laplace per hospital, encrypted mode carries one Gaussian for the total");
    outln!(" at delta 1e-6, bounded by a sub-Gaussian tail.)");
    if let Some(path) = csv {
        std::fs::write(path, table).map_err(err)?;
        outln!("wrote {}", path.display());
    }
    Ok(())
}

fn end_to_end(hospitals: usize, patients: usize, repetitions: usize) -> Result<Row> {
    let scratch = tempdir()?;
    let root = scratch.path();
    let mut c = synthetic_cluster(root, hospitals, patients, 13)?;
    let study_dir = root.join("study");
    let study_id = c.study_keygen(&study_dir).map_err(err)?;
    c.publish_study(&study_dir).map_err(err)?;
    let (_, client_key) = study::load_client(&study_dir).map_err(err)?;
    let (researcher, credential, targets) = crate::demo::researcher_of(&c)?;
    let aggregator = targets[0].name.clone();
    let runtime = witmed_net::runtime().map_err(err)?;
    let timeout = Duration::from_secs(30);
    let (mut encrypted, mut dp) = (Vec::new(), Vec::new());
    let mut total_bytes = 0;
    let (mut encrypted_halfwidth, mut dp_halfwidth) = (0.0, 0.0);
    for r in 0..repetitions {
        let query = Query::from_toml(&count_query(
            &format!("enc-{r}"),
            "encrypted",
            &study_id,
            &aggregator,
            hospitals,
        ))
        .map_err(err)?;
        let request = client::request_for(query, &credential, unix_now())?;
        let started = Instant::now();
        let (total, revealed) = runtime
            .block_on(reveal::ask_aggregator(
                &researcher,
                &request,
                &targets,
                (&client_key, &study_id),
                timeout,
            ))
            .map_err(err)?;
        encrypted.push(started.elapsed());
        encrypted_halfwidth = revealed.ci95.map_or(0.0, |(lo, hi)| (hi - lo) / 2.0);
        total_bytes = total.to_bytes().len();

        let query = Query::from_toml(&count_query(
            &format!("dp-{r}"),
            "dp",
            &study_id,
            &aggregator,
            hospitals,
        ))
        .map_err(err)?;
        let request = client::request_for(query.clone(), &credential, unix_now())?;
        let started = Instant::now();
        let results = runtime
            .block_on(client::ask(&researcher, &request, &targets, timeout))
            .map_err(err)?;
        let combined = client::combine_answered(&query, &results).map_err(err)?;
        dp.push(started.elapsed());
        dp_halfwidth = combined
            .and_then(|c| c.ci95)
            .map_or(0.0, |(lo, hi)| (hi - lo) / 2.0);
        if let Some(bad) = results
            .iter()
            .find(|r| !matches!(r.status, Status::Answered(_)))
        {
            return Err(format!("{} did not answer: {:?}", bad.name, bad.status));
        }
    }
    for i in 0..c.members.len() {
        c.stop(i).map_err(err)?;
    }
    Ok(Row {
        hospitals,
        encrypted_p50_ms: ms(pct(&mut encrypted, 0.5)),
        encrypted_p95_ms: ms(pct(&mut encrypted, 0.95)),
        dp_p50_ms: ms(pct(&mut dp, 0.5)),
        total_bytes,
        encrypted_halfwidth,
        dp_halfwidth,
    })
}

fn count_query(id: &str, mode: &str, study: &str, aggregator: &str, hospitals: usize) -> String {
    let encrypted = if mode == "encrypted" {
        format!("aggregator = \"{aggregator}\"\nstudy = \"{study}\"\nmin_hospitals = {hospitals}\n")
    } else {
        String::new()
    };
    format!(
        "version = 1\nid = \"{id}\"\npurpose = \"HMB\"\naggregate = \"count\"\n[cohort]\nage_min = 65\n\
         [privacy]\nmode = \"{mode}\"\nepsilon = 0.01\n{encrypted}"
    )
}
