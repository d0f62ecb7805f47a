//! `witmed-lab bench analyses`: survival, table and logistic regression latency over libp2p with N hospitals, and their accuracy against epsilon.
//!
//! Latency: real `witmed node run` processes over set-a split across the
//! hospitals, each analysis asked end to end as the CLI asks it (a logistic
//! regression is one noisy cell table), at a small epsilon so the
//! default budget lasts.
//!
//! Accuracy: in process, five nodes holding set-a, each node's exact vector
//! sum taken once from its store, then released by its OpenDP plan and
//! combined, `repetitions` times per epsilon: the largest gap between the DP
//! and the noise-free Kaplan-Meier curve of in-hospital survival, and the
//! largest coefficient error of the one-shot logistic regression against
//! its noise-free fit on the same cells (the maximum likelihood fit on the
//! binned covariates).

use std::path::Path;
use std::time::{Duration, Instant};

use witmed_node::analysis::{add_up, Vectors};
use witmed_node::dp::VectorPlan;
use witmed_node::node::{self, Node};
use witmed_node::{import, unix_now};
use witmed_protocol::analysis::noise::Noise;
use witmed_protocol::analysis::outcome::{self, Outcome, Summed};
use witmed_protocol::combine::Part;
use witmed_protocol::examples;
use witmed_protocol::query::Query;
use witmed_simnet::cluster::{self, Cluster, Options};

use super::{err, machine, ms, pct, tempdir, Result};
use crate::demo::researcher_of;

/// The three analyses timed, at `epsilon` each (the logistic one a noisy cell table).
fn timed_queries(tag: &str, epsilon: f64) -> Result<Vec<(&'static str, Query)>> {
    [
        (
            "survival",
            examples::survival_by_icu_type(&format!("b-km-{tag}"), epsilon),
        ),
        (
            "table",
            examples::sex_by_death(&format!("b-t-{tag}"), epsilon),
        ),
        (
            "logistic",
            examples::death_on_age_sex_icu(&format!("b-lr-{tag}"), epsilon),
        ),
    ]
    .into_iter()
    .map(|(name, text)| Ok((name, Query::from_toml(&text).map_err(err)?)))
    .collect()
}

/// Latency per analysis across `hospitals`, then accuracy against epsilon.
pub fn run(
    set_dir: &Path,
    outcomes: &Path,
    hospitals: &[usize],
    repetitions: usize,
    csv: Option<&Path>,
    svg: Option<&Path>,
) -> Result<()> {
    outln!(
        "witmed bench analyses ({}; PhysioNet set-a, {repetitions} runs per row)",
        machine()
    );
    outln!(
        "{:>9} {:>10} {:>10} {:>10} {:>10}",
        "hospitals",
        "analysis",
        "p50 ms",
        "p95 ms",
        "unusable"
    );
    // A hospital count of 0 skips the latency part.
    for &n in hospitals.iter().filter(|n| **n > 0) {
        latency(set_dir, outcomes, n, repetitions)?;
    }
    outln!("(logistic: one noisy cell table, one federated query; unusable: noisy sums too small for a result at this epsilon)");
    accuracy(set_dir, outcomes, repetitions, csv, svg)
}

fn latency(set_dir: &Path, outcomes: &Path, hospitals: usize, repetitions: usize) -> Result<()> {
    let scratch = tempdir()?;
    let files = witmed_node::import::physionet::list_set_files(set_dir).map_err(err)?;
    let options = Options {
        bin: std::env::current_exe().map_err(err)?,
        root: scratch.path().to_path_buf(),
        consent_rate: 1.0,
        outcomes: Some(outcomes.to_path_buf()),
        proxied: false,
        node_env: vec![],
    };
    let mut c = Cluster::build(&options, &cluster::split(&files, hospitals)).map_err(err)?;
    c.start_all().map_err(err)?;
    let (researcher, credential, targets) = researcher_of(&c)?;
    let runtime = witmed_net::runtime().map_err(err)?;
    // Three analyses per repetition within the default budget of 10.
    let epsilon = (9.0 / (3.0 * repetitions.max(1) as f64)).min(1.0);
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    let mut unusable = [0usize; 3];
    for r in 0..repetitions {
        for (k, (_, query)) in timed_queries(&format!("{hospitals}-{r}"), epsilon)?
            .iter()
            .enumerate()
        {
            let mut ask = |q: &Query| -> std::result::Result<
                witmed::analysis::Answers,
                witmed::failure::Failure,
            > {
                let request = witmed_net::client::request_for(q.clone(), &credential, unix_now())
                    .map_err(|e| {
                    witmed::failure::Failure::new(witmed::code::Code::RandomFailed, e)
                })?;
                let results = runtime
                    .block_on(witmed_net::client::ask(
                        &researcher,
                        &request,
                        &targets,
                        Duration::from_secs(30),
                    ))
                    .map_err(|e| {
                        witmed::failure::Failure::new(witmed::code::Code::NetworkFailed, e)
                    })?;
                Ok(witmed_net::client::answered(&results)
                    .into_iter()
                    .map(|(name, a)| (name.to_string(), a.clone()))
                    .collect())
            };
            let started = Instant::now();
            let result = witmed::analysis::outcome_of(query, &mut ask);
            times[k].push(started.elapsed());
            if let Err(e) = result {
                if e.code != "combine_failed" {
                    return Err(format!("{}: {}", e.code, e.message));
                }
                unusable[k] += 1;
            }
        }
    }
    for (k, name) in ["survival", "table", "logistic"].iter().enumerate() {
        outln!(
            "{:>9} {:>10} {:>10.1} {:>10.1} {:>10}",
            hospitals,
            name,
            ms(pct(&mut times[k], 0.5)),
            ms(pct(&mut times[k], 0.95)),
            unusable[k]
        );
    }
    for i in 0..c.members.len() {
        c.stop(i).map_err(err)?;
    }
    Ok(())
}

/// Five in-process nodes over set-a; each one's exact sums for `query`.
struct Nodes {
    // Declared first, so dropped (closed) before the scratch dir is removed.
    nodes: Vec<Node>,
    _scratch: crate::ScratchDir,
}

fn nodes(set_dir: &Path, outcomes: &Path) -> Result<Nodes> {
    let scratch = tempdir()?;
    let files = witmed_node::import::physionet::list_set_files(set_dir).map_err(err)?;
    let now = unix_now();
    let mut nodes = Vec::new();
    for k in 0..5 {
        let set = scratch.path().join(format!("set-{k}"));
        std::fs::create_dir_all(&set).map_err(err)?;
        for f in files.iter().skip(k).step_by(5) {
            let name = f.file_name().ok_or("a set file has no name")?;
            std::os::unix::fs::symlink(f, set.join(name)).map_err(err)?;
        }
        let dir = scratch.path().join(format!("node-{k}"));
        node::init(&dir, &format!("hospital-{k}"), vec![], now).map_err(err)?;
        let node = Node::open(&dir, now).map_err(err)?;
        let options = import::Options {
            now,
            ..import::Options::default()
        };
        import::import_physionet(
            &node.store,
            node.pseudonyms(),
            &set,
            Some(outcomes),
            &options,
        )
        .map_err(err)?;
        node.invalidate_index();
        nodes.push(node);
    }
    Ok(Nodes {
        _scratch: scratch,
        nodes,
    })
}

fn sums(nodes: &Nodes, query: &Query, resolution: u32) -> Result<Vec<Vectors>> {
    let analysis = query.aggregate.analysis().ok_or("not an analysis")?;
    nodes
        .nodes
        .iter()
        .map(|node| {
            let index = node.index().map_err(err)?;
            let all: Vec<usize> = (0..index.len()).collect();
            add_up(&index, &analysis, &all, resolution).map_err(err)
        })
        .collect()
}

/// The exact sums with no noise, as the client would combine them.
fn silent(sums: &[Vectors]) -> Summed {
    let len = sums.first().map_or(0, |v| v.sum.len());
    Summed {
        sums: (0..len)
            .map(|c| {
                sums.iter()
                    .map(|v| v.sum.get(c).copied().unwrap_or(0))
                    .sum::<i64>() as f64
            })
            .collect(),
        noises: vec![Noise::NONE; len],
        nodes: sums.len(),
        suppressed_nodes: vec![],
        epsilon_spent_max: 0.0,
    }
}

fn noisy(plan: &VectorPlan, sums: &[Vectors]) -> Result<Summed> {
    let released = sums
        .iter()
        .map(|v| plan.release(&v.sum, 0, |_| f64::INFINITY).map_err(err))
        .collect::<Result<Vec<_>>>()?;
    let parts: Vec<Part<'_>> = released
        .iter()
        .map(|r| Part {
            node: "hospital",
            released: r,
        })
        .collect();
    outcome::add_up(sums.first().map_or(0, |v| v.sum.len()), &parts).map_err(err)
}

/// The one-shot logistic regression's coefficients from one release of
/// the nodes' cell tables at `epsilon`, or noise-free for `None` (the exact
/// fit on the binned covariates); `None` when the fit refuses the noisy table.
fn logistic(query: &Query, sums: &[Vectors], epsilon: Option<f64>) -> Result<Option<Vec<f64>>> {
    let analysis = query.aggregate.analysis().ok_or("not an analysis")?;
    let summed = match epsilon {
        Some(e) => noisy(&VectorPlan::new(&analysis, e).map_err(err)?, sums)?,
        None => silent(sums),
    };
    Ok(match outcome::analyse(&analysis, &summed, 0) {
        Ok(Outcome::Regression(fit)) => Some(fit.coefficients.iter().map(|c| c.estimate).collect()),
        _ => None,
    })
}

fn accuracy(
    set_dir: &Path,
    outcomes: &Path,
    repetitions: usize,
    csv: Option<&Path>,
    svg: Option<&Path>,
) -> Result<()> {
    let nodes = nodes(set_dir, outcomes)?;
    let km_text = examples::survival_by_icu_type("acc-km", 1.0)
        .replace("group = { name = \"icu_type\" }\n", "");
    let km = Query::from_toml(&km_text).map_err(err)?;
    let km_analysis = km.aggregate.analysis().ok_or("not an analysis")?;
    let km_sums = sums(&nodes, &km, 1)?;
    let Outcome::Survival(exact_km) =
        outcome::analyse(&km_analysis, &silent(&km_sums), 1).map_err(err)?
    else {
        return Err("not a survival result".into());
    };
    let exact_curve = exact_km.curves.first().ok_or("no curve")?.survival.clone();
    let lr = Query::from_toml(&examples::death_on_age_sex_icu("acc-lr", 1.0)).map_err(err)?;
    let lr_sums = sums(&nodes, &lr, 1)?;
    let exact_fit =
        logistic(&lr, &lr_sums, None)?.ok_or("the noise-free logistic fit did not converge")?;
    outln!("\naccuracy against epsilon (5 hospitals, set-a, {repetitions} runs each; medians, and the unusable logistic runs)");
    outln!(
        "{:>8} {:>22} {:>26} {:>10}",
        "epsilon",
        "survival largest gap",
        "logistic largest coef err",
        "unusable"
    );
    let mut rows = Vec::new();
    for epsilon in [0.25, 0.5, 1.0, 2.0, 4.0, 8.0] {
        let plan = VectorPlan::new(&km_analysis, epsilon).map_err(err)?;
        let mut gaps = Vec::new();
        let mut errors = Vec::new();
        let mut unusable = 0;
        for run in 0..repetitions {
            let summed = noisy(&plan, &km_sums)?;
            if let Ok(Outcome::Survival(s)) = outcome::analyse(&km_analysis, &summed, run as u64) {
                if let Some(curve) = s.curves.first() {
                    gaps.push(outcome::largest_survival_gap(&curve.survival, &exact_curve));
                }
            }
            match logistic(&lr, &lr_sums, Some(epsilon))? {
                Some(fit) => errors.push(
                    fit.iter()
                        .zip(&exact_fit)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max),
                ),
                None => unusable += 1,
            }
        }
        let (gap, error) = (median(&mut gaps), median(&mut errors));
        outln!("{epsilon:>8} {gap:>22.4} {error:>26.4} {unusable:>10}");
        rows.push((epsilon, gap, error, unusable));
    }
    outln!("(logistic: age in 5 bins, sex and the three ICU-type indicators, one noisy cell table at the whole epsilon, against the noise-free fit on the same cells; error in the coefficients' own units, the age one per year)");
    if let Some(path) = csv {
        let mut text =
            "epsilon,survival_largest_gap,logistic_largest_coefficient_error,logistic_unusable\n"
                .to_string();
        for (e, g, c, u) in &rows {
            text.push_str(&format!("{e},{g:.5},{c:.5},{u}\n"));
        }
        std::fs::write(path, text).map_err(err)?;
        outln!("wrote {}", path.display());
    }
    if let Some(path) = svg {
        std::fs::write(path, accuracy_svg(&rows)).map_err(err)?;
        outln!("wrote {}", path.display());
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Survival gap against epsilon (log scale), one line and its points.
fn accuracy_svg(rows: &[(f64, f64, f64, usize)]) -> String {
    let (w, h, pad) = (560.0, 320.0, 55.0);
    let top = rows
        .iter()
        .map(|r| r.1)
        .filter(|g| g.is_finite())
        .fold(0.0_f64, f64::max)
        .max(1e-6);
    let x = |e: f64| pad + (e.log2() + 2.0) / 5.0 * (w - 2.0 * pad);
    let y = |g: f64| h - pad - g / top * (h - 2.0 * pad);
    let points: Vec<String> = rows
        .iter()
        .filter(|r| r.1.is_finite())
        .map(|r| format!("{:.1},{:.1}", x(r.0), y(r.1)))
        .collect();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n<line x1=\"{pad}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/>\n<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{0}\" stroke=\"black\"/>\n<polyline points=\"{2}\" fill=\"none\" stroke=\"#1b6ca8\" stroke-width=\"2\"/>\n",
        h - pad,
        w - pad,
        points.join(" ")
    );
    for r in rows.iter().filter(|r| r.1.is_finite()) {
        svg.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1b6ca8\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n<text x=\"{:.1}\" y=\"{:.1}\">{:.4}</text>\n",
            x(r.0), y(r.1), x(r.0), h - pad + 16.0, r.0, x(r.0) + 5.0, y(r.1) - 5.0, r.1
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">epsilon per hospital</text>\n<text x=\"{pad}\" y=\"20\">largest gap between the DP and the exact Kaplan-Meier curve (median, 5 hospitals, set-a)</text>\n</svg>\n",
        w / 2.0,
        h - 12.0
    ));
    svg
}
