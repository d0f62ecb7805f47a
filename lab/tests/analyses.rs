//! Survival, tables and logistic regression on set-a split across 5 real nodes at epsilon 1, against exact statistics the test computes from the raw files.
//!
//! Each node imports a fifth of set-a into its own encrypted store. The
//! test reads the same raw files itself (descriptors and the outcomes file,
//! `-1` or empty meaning missing, as the dataset documents) and computes the
//! exact, non-private statistics with `analysis::exact`. The coverage loops
//! take each node's exact vector sum from its store once
//! (`witmed_node::analysis::add_up`, checked against the raw files), then
//! release it 200 times through the node's OpenDP plan (`dp::VectorPlan`,
//! real noise) and combine the releases with the researcher's code
//! (`analysis::outcome`). The engine test answers through `engine::answer`
//! and checks the charges.

mod common;
#[path = "common/set_a_raw.rs"]
mod set_a_raw;

use std::path::PathBuf;

use common::*;
use set_a_raw::{level01, logistic_rows, outcomes, raw_of, Raw};
use witmed_crypto::{Envelope, KeyPair, Role};
use witmed_lab::setup;
use witmed_node::analysis::{add_up, Vectors};
use witmed_node::dp::VectorPlan;
use witmed_node::engine;
use witmed_node::import;
use witmed_node::node::{self, Node};
use witmed_policies::credential::verify_credential;
use witmed_protocol::analysis::exact::{self, Subject};
use witmed_protocol::analysis::outcome::{self, Outcome, Summed};
use witmed_protocol::analysis::query::Analysis;
use witmed_protocol::answer::Released;
use witmed_protocol::combine::Part;
use witmed_protocol::query::{Aggregate, Query};

const NOW: i64 = 1_790_000_000;
const NODES: usize = 5;
const RUNS: usize = 200;
/// Unit bins over whole days: each bin holds one time value, so the binned
/// Kaplan-Meier curve is the textbook one at the bins' ends.
const DAYS: usize = 30;

struct World {
    _tmp: tempfile::TempDir,
    nodes: Vec<Node>,
    raws: Vec<Vec<Raw>>,
    researcher: KeyPair,
    credential: Envelope,
}

/// Five nodes, each holding every fifth file of set-a, all patients consenting.
fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let outcomes = outcomes();
    let files = physionet_files(&set_a());
    let authority = KeyPair::from_seed(Role::Authority, &[1; 32]);
    let researcher = KeyPair::from_seed(Role::Researcher, &[2; 32]);
    let mut nodes = Vec::new();
    let mut raws = Vec::new();
    for k in 0..NODES {
        let set = tmp.path().join(format!("set-{k}"));
        std::fs::create_dir_all(&set).unwrap();
        let mine: Vec<&PathBuf> = files.iter().skip(k).step_by(NODES).collect();
        for f in &mine {
            std::os::unix::fs::symlink(f, set.join(f.file_name().unwrap())).unwrap();
        }
        raws.push(mine.iter().map(|f| raw_of(f, &outcomes)).collect());
        let dir = tmp.path().join(format!("node-{k}"));
        node::init(&dir, &format!("hospital-{k}"), vec![], NOW).unwrap();
        let node = Node::open(&dir, NOW).unwrap();
        let options = import::Options {
            now: NOW,
            ..import::Options::default()
        };
        import::import_physionet(
            &node.store,
            node.pseudonyms(),
            &set,
            Some(&outcomes_a()),
            &options,
        )
        .unwrap();
        node.invalidate_index();
        witmed_node::consent_ops::allow_demonstration_data(&node, NOW).unwrap();
        witmed_lab::simulate::simulate(&node, 1.0, &["HMB".to_string()], 1, NOW).unwrap();
        setup::trust_issuer(&node, authority.public(), 1e9, 0, NOW).unwrap();
        nodes.push(node);
    }
    let credential = setup::credential(&authority, researcher.public(), &["HMB"], NOW);
    World {
        _tmp: tmp,
        nodes,
        raws,
        researcher,
        credential,
    }
}

fn query(text: &str) -> Query {
    Query::from_toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn analysis(query: &Query) -> Analysis<'_> {
    query.aggregate.analysis().unwrap()
}

/// In-hospital survival over whole days 0..DAYS, one curve or by ICU type.
fn survival_query(id: &str, by_icu: bool) -> Query {
    let edges: Vec<String> = (0..=DAYS).map(|d| format!("{d}.0")).collect();
    let group = if by_icu {
        "group = { name = \"icu_type\" }\n"
    } else {
        ""
    };
    query(&format!(
        "version = 2\nid = \"{id}\"\npurpose = \"HMB\"\n[aggregate.survival]\n\
         time = \"length_of_stay_days\"\nevent = \"in_hospital_death\"\nbin_edges = [{}]\n{group}\
         [privacy]\nmode = \"dp\"\nepsilon = 1.0\n",
        edges.join(", ")
    ))
}

/// Each node's exact vector sum, read from its store.
fn sums(world: &World, query: &Query, resolution: u32) -> Vec<Vectors> {
    world
        .nodes
        .iter()
        .map(|node| {
            let index = node.index().unwrap();
            let all: Vec<usize> = (0..index.len()).collect();
            add_up(&index, &analysis(query), &all, resolution).unwrap()
        })
        .collect()
}

/// One federated release: every node's OpenDP noise on its sum, combined.
fn release_all(plan: &VectorPlan, sums: &[Vectors]) -> Summed {
    let released: Vec<Released> = sums
        .iter()
        .map(|v| plan.release(&v.sum, 0, |_| f64::INFINITY).unwrap())
        .collect();
    let parts: Vec<Part<'_>> = released
        .iter()
        .map(|r| Part {
            node: "hospital",
            released: r,
        })
        .collect();
    outcome::add_up(sums[0].sum.len(), &parts).unwrap()
}

/// The survival subjects of the raw files, censored at DAYS as the bins are.
fn subjects(raws: &[Raw], by_icu: bool) -> Vec<Subject> {
    raws.iter()
        .filter(|r| r.los >= 0.0 && (r.death == 0.0 || r.death == 1.0))
        .filter(|r| !by_icu || (1.0..=4.0).contains(&r.icu))
        .map(|r| Subject {
            time: r.los.min(DAYS as f64),
            event: r.death == 1.0 && r.los < DAYS as f64,
            group: if by_icu { r.icu as usize - 1 } else { 0 },
        })
        .collect()
}

/// The exact curve at the end of each whole-day bin.
fn exact_curve(subjects: &[Subject]) -> Vec<f64> {
    let steps = exact::kaplan_meier(subjects);
    (1..=DAYS)
        .map(|end| {
            steps
                .iter()
                .take_while(|s| s.time < end as f64)
                .last()
                .map_or(1.0, |s| s.survival)
        })
        .collect()
}

/// A band that covers by being [0, 1] would prove nothing: over the runs,
/// the widest band of days 0 and 1 (survival 1, noise alone: measured up to
/// 0.015) stays under 0.03 and every day's under 0.25 (measured up to 0.17).
fn band_stays_informative(widest: &[f64]) {
    assert!(widest[..2].iter().all(|w| *w < 0.03), "{widest:?}");
    assert!(widest.iter().all(|w| *w < 0.25), "{widest:?}");
}

fn all_raws(world: &World) -> Vec<Raw> {
    world.raws.iter().flatten().copied().collect()
}

#[test]
fn dp_survival_tables_and_logistic_regression_match_the_exact_statistics_on_set_a() {
    let world = world();
    let raws = all_raws(&world);
    survival_curve_covers_the_exact_one(&world, &raws);
    log_rank_by_icu_type_reaches_the_exact_conclusion(&world, &raws);
    sex_by_death_table_reaches_the_exact_conclusion(&world, &raws);
    logistic_intervals_cover_the_exact_coefficients(&world, &raws);
}

fn survival_curve_covers_the_exact_one(world: &World, raws: &[Raw]) {
    let query = survival_query("km", false);
    let sums = sums(world, &query, 1);
    // The stores hold what the raw files say: the at-risk count of day 0 is everyone followed.
    let followed: i64 = sums.iter().map(|v| v.sum.iter().sum::<i64>()).sum();
    let subjects = subjects(raws, false);
    assert_eq!(followed as usize, subjects.len());
    let exact = exact_curve(&subjects);
    let plan = VectorPlan::new(&analysis(&query), 1.0).unwrap();
    let mut covered = 0;
    let mut worst_gap: f64 = 0.0;
    let mut widest = vec![0.0_f64; DAYS];
    for run in 0..RUNS {
        let summed = release_all(&plan, &sums);
        let Outcome::Survival(result) =
            outcome::analyse(&analysis(&query), &summed, run as u64).unwrap()
        else {
            panic!("not a survival result")
        };
        let curve = &result.curves[0];
        assert!(
            curve.survival.windows(2).all(|w| w[1] <= w[0]),
            "curve rises: {:?}",
            curve.survival
        );
        worst_gap = worst_gap.max(outcome::largest_survival_gap(&curve.survival, &exact));
        for (w, (lo, hi)) in widest.iter_mut().zip(&curve.band) {
            *w = w.max(hi - lo);
        }
        covered += curve
            .band
            .iter()
            .zip(&exact)
            .all(|((lo, hi), s)| lo <= s && s <= hi) as usize;
    }
    eprintln!("survival band held the exact curve in {covered} of {RUNS} runs (largest gap {worst_gap:.4})");
    assert!(
        covered * 100 >= RUNS * 95,
        "the band held the exact curve at every day in only {covered} of {RUNS} runs (largest gap {worst_gap:.4})"
    );
    band_stays_informative(&widest);
}

fn log_rank_by_icu_type_reaches_the_exact_conclusion(world: &World, raws: &[Raw]) {
    let query = survival_query("km-icu", true);
    let sums = sums(world, &query, 1);
    let exact = exact::log_rank(&subjects(raws, true), 4).unwrap();
    let plan = VectorPlan::new(&analysis(&query), 1.0).unwrap();
    let (mut same, mut relative_error) = (0, 0.0);
    for run in 0..RUNS {
        let summed = release_all(&plan, &sums);
        let Outcome::Survival(result) =
            outcome::analyse(&analysis(&query), &summed, run as u64).unwrap()
        else {
            panic!("not a survival result")
        };
        let test = result.log_rank.unwrap();
        same += ((test.p_value < 0.05) == (exact.p_value < 0.05)) as usize;
        relative_error += (test.statistic - exact.statistic).abs() / exact.statistic.max(1.0);
    }
    let mean_error = relative_error / RUNS as f64;
    // Measured: 0.23 to 0.28 (the small coronary-care group's counts carry relatively much noise).
    assert!(
        mean_error < 0.4,
        "log-rank statistic off by {mean_error:.3} of the exact {:.2} on average",
        exact.statistic
    );
    assert!(
        same * 100 >= RUNS * 95,
        "log-rank conclusion matched the exact p = {:.4} in only {same} of {RUNS} runs",
        exact.p_value
    );
}

fn sex_by_death_table_reaches_the_exact_conclusion(world: &World, raws: &[Raw]) {
    let query = query(&witmed_protocol::examples::sex_by_death("t", 1.0));
    let sums = sums(world, &query, 1);
    let mut counts = [0.0; 4];
    for r in raws {
        if let (Some(s), Some(d)) = (level01(r.sex), level01(r.death)) {
            counts[s * 2 + d] += 1.0;
        }
    }
    let stored: Vec<f64> = (0..4)
        .map(|c| sums.iter().map(|v| v.sum[c]).sum::<i64>() as f64)
        .collect();
    assert_eq!(
        stored, counts,
        "the stores' table differs from the raw files'"
    );
    let exact = exact::chi_square_independence(&[2, 2], &counts).unwrap();
    let (exact_or, _) =
        exact::odds_ratio_woolf(counts[0], counts[1], counts[2], counts[3]).unwrap();
    let plan = VectorPlan::new(&analysis(&query), 1.0).unwrap();
    let (mut same, mut or_covered, mut relative_error) = (0, 0, 0.0);
    for run in 0..RUNS {
        let summed = release_all(&plan, &sums);
        let Outcome::Table(table) =
            outcome::analyse(&analysis(&query), &summed, run as u64).unwrap()
        else {
            panic!("not a table")
        };
        let chi = table.chi_square.unwrap();
        same += ((chi.p_value < 0.05) == (exact.p_value < 0.05)) as usize;
        relative_error += (chi.statistic - exact.statistic).abs() / exact.statistic.max(1.0);
        let (lo, hi) = table.odds_ratio.unwrap().ci95;
        or_covered += (lo <= exact_or && exact_or <= hi) as usize;
    }
    let mean_error = relative_error / RUNS as f64;
    // Measured: 0.27 (in the statistic's own units: its sampling sd under the null is 1.4).
    assert!(
        mean_error < 0.5,
        "chi-square off by {mean_error:.3} of the exact {:.3} on average",
        exact.statistic
    );
    assert!(
        same * 100 >= RUNS * 95,
        "chi-square conclusion matched the exact p = {:.4} in only {same} of {RUNS} runs",
        exact.p_value
    );
    assert!(
        or_covered * 100 >= RUNS * 93,
        "odds ratio interval covered {exact_or:.3} in only {or_covered} of {RUNS} runs"
    );
}

/// The model (age in 5 bins, sex, ICU types 2 to 4) at epsilon 1
/// in one release of a noisy cell table: each coefficient's interval covers
/// the exact IRLS coefficient on the same binned covariates in at least 93%
/// of 200 runs. Coverage of the fit on the raw (clamped) ages is printed,
/// to show how far the binning moves the coefficients.
fn logistic_intervals_cover_the_exact_coefficients(world: &World, raws: &[Raw]) {
    let query = query(&witmed_protocol::examples::death_on_age_sex_icu("lr", 1.0));
    let Aggregate::Logistic(logistic) = &query.aggregate else {
        panic!("the example is a one-shot logistic regression");
    };
    let rows = logistic_rows(raws, logistic);
    let binned = exact::logistic_irls(&rows.binned, &rows.deaths).unwrap();
    let clamped = exact::logistic_irls(&rows.clamped, &rows.deaths).unwrap();
    let plan = VectorPlan::new(&analysis(&query), query.privacy.epsilon).unwrap();
    assert!(
        plan.epsilon() <= 1.0 && plan.epsilon() > 0.99,
        "{}",
        plan.epsilon()
    );
    let sums = sums(world, &query, plan.resolution());
    // The stores' patients in the table are the raw files' complete patients.
    let counted: i64 = sums.iter().flat_map(|v| &v.sum).sum();
    assert_eq!(counted, rows.deaths.len() as i64);
    let p = binned.coefficients.len();
    let (mut covered, mut covered_raw, mut unusable) = (vec![0usize; p], vec![0usize; p], 0);
    for _ in 0..RUNS {
        let summed = release_all(&plan, &sums);
        let Ok(Outcome::Regression(fit)) = outcome::analyse(&analysis(&query), &summed, 0) else {
            // A noisy table the fit refuses counts as a miss for every coefficient.
            unusable += 1;
            continue;
        };
        for (i, c) in fit.coefficients.iter().enumerate() {
            let holds = |e: f64| (c.ci95.0 <= e && e <= c.ci95.1) as usize;
            covered[i] += holds(binned.coefficients[i]);
            covered_raw[i] += holds(clamped.coefficients[i]);
        }
    }
    eprintln!(
        "logistic at epsilon 1 over {RUNS} runs ({unusable} refused): covered the binned fit {covered:?}, the raw-age fit {covered_raw:?}; binned {:?}, raw {:?}",
        binned.coefficients, clamped.coefficients
    );
    for (i, n) in covered.iter().enumerate() {
        assert!(
            n * 100 >= RUNS * 93,
            "coefficient {i} (exact {:.4}) covered in only {n} of {RUNS} runs",
            binned.coefficients[i]
        );
    }
}

/// Through the engine: each analysis is answered, charged once by its
/// privacy map and its included patients' accounts; refused analyses charge nothing.
#[test]
fn the_engine_charges_each_analysis_once_and_refuses_bad_ones_uncharged() {
    let world = world();
    let node = &world.nodes[0];
    let researcher = world.researcher.public();
    let charges = || {
        let credential =
            verify_credential(&world.credential, &[world.credential.signer], NOW).unwrap();
        let account = node.ledger.account(&credential);
        node.ledger.charges(&node.store, &account).unwrap()
    };
    for text in [
        witmed_protocol::examples::survival_by_icu_type("a-km", 1.0),
        witmed_protocol::examples::sex_by_death("a-t", 1.0),
        witmed_protocol::examples::death_on_age_sex_icu("a-lr", 1.0),
    ] {
        let query = query(&text);
        let before = charges().len();
        let answer = engine::answer(node, &query, &researcher, &world.credential, NOW).unwrap();
        let plan = VectorPlan::new(&analysis(&query), query.privacy.epsilon).unwrap();
        assert_eq!(answer.released.components.len(), analysis(&query).len());
        assert_eq!(answer.released.epsilon_spent, plan.epsilon());
        let after = charges();
        assert_eq!(after.len(), before + 1);
        assert_eq!(after.last().unwrap().epsilon, plan.epsilon());
        // A replay returns the stored answer and charges nothing more.
        let again = engine::answer(node, &query, &researcher, &world.credential, NOW).unwrap();
        assert_eq!(again, answer);
        assert_eq!(charges().len(), before + 1);
    }
    let good = query(&witmed_protocol::examples::death_on_age_sex_icu("bad", 1.0));
    // README's survival example is a valid query of the same layout as the shared example.
    let readme = query(&readme_toml("## Survival, tables and regression"));
    assert_eq!(
        readme.aggregate,
        query(&witmed_protocol::examples::survival_by_icu_type(
            "km-icu", 1.0
        ))
        .aggregate
    );
    let mut refusals = Vec::new();
    let mut missing_bounds = good.clone();
    let mut missing_bins = good.clone();
    let mut singular = good.clone();
    let mut too_many_logistic_cells = good.clone();
    let mut too_many_cells = query(&witmed_protocol::examples::sex_by_death("bad", 1.0));
    if let Aggregate::Logistic(r) = &mut missing_bounds.aggregate {
        r.covariates[0].bounds = None;
    }
    if let Aggregate::Logistic(r) = &mut missing_bins.aggregate {
        r.covariates[0].bins = None;
    }
    if let Aggregate::Logistic(r) = &mut singular.aggregate {
        // Age in one bin: a covariate constant over the cells, never solvable.
        r.covariates[0].bins = Some(1);
    }
    if let Aggregate::Logistic(r) = &mut too_many_logistic_cells.aggregate {
        // 30 x 2 x 4 x 24 cells, beyond the bound.
        r.covariates[0].bins = Some(30);
        let mut sofa = r.covariates[0].clone();
        sofa.name = "length_of_stay_days".into();
        sofa.bins = Some(24);
        r.covariates.push(sofa);
    }
    if let Aggregate::Table(t) = &mut too_many_cells.aggregate {
        let mut age = t.variables[0].clone();
        age.name = "age".into();
        age.edges = (0..=20).map(|d| f64::from(d) * 5.0).collect();
        t.variables.push(age);
    }
    let mut unknown = too_many_cells.clone();
    if let Aggregate::Table(t) = &mut unknown.aggregate {
        t.variables.truncate(2);
        t.variables[0].name = "bmi".into();
    }
    let before = charges().len();
    for bad in [
        missing_bounds,
        missing_bins,
        singular,
        too_many_logistic_cells,
        too_many_cells,
        unknown,
    ] {
        let error = engine::answer(node, &bad, &researcher, &world.credential, NOW).unwrap_err();
        refusals.push(error.code());
    }
    assert_eq!(
        refusals,
        [
            "missing_bounds",
            "missing_bins",
            "singular_design",
            "too_large",
            "too_large",
            "unknown_variable"
        ]
    );
    assert_eq!(charges().len(), before, "a refused analysis was charged");
}

/// Through the command line over libp2p: three `witmed node run` processes,
/// one query of each analysis with `--json` and `--svg`; every figure is in
/// the JSON and the table's counts are the raw files' within the noise.
/// (Epsilons 1, 1 and 7 fit the default budget of 10. The whole of set-a:
/// on 2400 patients the earlier Newton rounds' noisy information was
/// sometimes not positive definite at epsilon 7; the one-shot cell table
/// does not have that failure.)
#[test]
fn each_analysis_runs_through_the_cli_over_a_real_federation() {
    use witmed_simnet::cluster::{self, Cluster, Options};
    let tmp = tempfile::tempdir().unwrap();
    let records: Vec<PathBuf> = physionet_files(&set_a());
    let options = Options {
        outcomes: Some(outcomes_a()),
        ..cluster_options(tmp.path())
    };
    let mut c = Cluster::build(&options, &cluster::split(&records, 3)).unwrap();
    c.start_all().unwrap();
    let ask = |name: &str, text: &str, svg: Option<&str>| {
        let file = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        let svg_path = svg.map(|s| tmp.path().join(s));
        let extra: Vec<&str> = svg_path.iter().flat_map(|p| ["--svg", s(p)]).collect();
        let out = c
            .query_with(&c.researcher_key, &c.credential, &file, "10s", &extra)
            .unwrap();
        let drawn = svg_path.map(|p| std::fs::read_to_string(p).unwrap());
        (out, drawn)
    };

    let (km, svg) = ask(
        "km",
        &witmed_protocol::examples::survival_by_icu_type("cli-km", 1.0),
        Some("km.svg"),
    );
    assert_eq!(km["hospitals_combined"], 3, "{km}");
    let curves = km["result"]["survival"]["curves"].as_array().unwrap();
    assert_eq!(curves.len(), 4, "{km}");
    for curve in curves {
        let survival: Vec<f64> = serde_json::from_value(curve["survival"].clone()).unwrap();
        let band: Vec<(f64, f64)> = serde_json::from_value(curve["band"].clone()).unwrap();
        assert!(survival.windows(2).all(|w| w[1] <= w[0]), "{curve}");
        assert!(
            survival
                .iter()
                .zip(&band)
                .all(|(s, (lo, hi))| lo <= s && s <= hi),
            "{curve}"
        );
    }
    assert!(
        km["result"]["survival"]["log_rank"]["p_value"].is_number(),
        "{km}"
    );
    let svg = svg.unwrap();
    assert!(
        svg.starts_with("<svg") && svg.matches("<polygon").count() == 4,
        "{svg}"
    );

    let (table, _) = ask(
        "t",
        &witmed_protocol::examples::sex_by_death("cli-t", 1.0),
        None,
    );
    let counts: Vec<f64> =
        serde_json::from_value(table["result"]["table"]["counts"].clone()).unwrap();
    let outcomes = outcomes();
    let mut exact = [0.0; 4];
    for r in records.iter().map(|f| raw_of(f, &outcomes)) {
        if let (Some(s), Some(d)) = (level01(r.sex), level01(r.death)) {
            exact[s * 2 + d] += 1.0;
        }
    }
    // Three discrete Laplace noises of scale 1 exceed 30 together with probability below 1e-9.
    for (noisy, exact) in counts.iter().zip(exact) {
        assert!((noisy - exact).abs() <= 30.0, "{counts:?} against {exact}");
    }
    assert!(
        table["result"]["table"]["odds_ratio"]["ci95"].is_array(),
        "{table}"
    );
    assert!(
        table["result"]["table"]["chi_square"]["p_value"].is_number(),
        "{table}"
    );

    let (lr, svg) = ask(
        "lr",
        &witmed_protocol::examples::death_on_age_sex_icu("cli-lr", 7.0),
        Some("lr.svg"),
    );
    // One query, one noisy cell table.
    let queries: Vec<String> = serde_json::from_value(lr["queries"].clone()).unwrap();
    assert_eq!(queries, ["cli-lr"], "{lr}");
    let spent = lr["epsilon_spent"].as_f64().unwrap();
    assert!(
        (spent - 7.0).abs() < 1e-6,
        "the query spent {spent}, not its 7"
    );
    let coefficients = lr["result"]["regression"]["coefficients"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = coefficients
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "intercept",
            "age",
            "sex",
            "icu_type=2",
            "icu_type=3",
            "icu_type=4"
        ]
    );
    assert_eq!(svg.unwrap().matches("<circle").count(), 6);
}
