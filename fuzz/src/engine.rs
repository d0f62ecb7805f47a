//! The fuzzing loop: mutate seed inputs, run a harness, and keep every panic, property violation or unbounded allocation.
//!
//! A stable-Rust engine (libFuzzer needs nightly, which cannot be fetched
//! here). It has no coverage instrumentation; instead a harness reports the
//! *class* of each outcome (accepted, or which error), and an input that
//! reaches a class not seen before joins the corpus. Errors name the check
//! that refused the input, so a new class means the input got further or
//! elsewhere through the decoder: a cheap stand-in for new coverage.
//!
//! Everything is bounded: the corpus, the input length, the shrinking time,
//! the number of distinct findings kept, and one execution's wall time (a
//! watchdog thread saves the input and aborts the process after
//! [`HANG_LIMIT`]).

use std::collections::HashSet;
use std::fs::File;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::alloc;

/// What one execution of a harness says: `Ok(class)` when every property
/// held (the class names the outcome, e.g. `accepted` or an error code), or
/// `Err(violation)` when the decoder broke a property (a round trip failed).
pub type Verdict = Result<String, String>;

/// One fuzz target: a decoder of untrusted input and how to feed it.
pub struct Target {
    /// Name on the command line, e.g. `consent-token`.
    pub name: &'static str,
    /// What it covers, for `witmed-fuzz list`.
    pub about: &'static str,
    /// Valid inputs built in code (a real signed token, a real FHIR bundle...).
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Runs the decoder on one input and checks its properties.
    pub run: fn(&[u8]) -> Verdict,
    /// Tokens worth inserting (keywords, delimiters of the format).
    pub dictionary: &'static [&'static str],
    /// Longest input generated: a little over the decoder's own limit, so the limit is exercised.
    pub max_len: usize,
}

/// Most inputs kept in the corpus.
const MAX_CORPUS: usize = 4096;
/// Most distinct findings kept per run.
const MAX_FINDINGS: usize = 20;
/// Time spent shrinking one finding.
const SHRINK_TIME: Duration = Duration::from_secs(5);
/// One execution longer than this is a hang: the watchdog saves the input and aborts.
pub const HANG_LIMIT: Duration = Duration::from_secs(60);
/// Peak live bytes one execution may hold: a fixed allowance (keys, parser
/// tables) plus a generous multiple of the input length. Anything above is
/// allocation not bounded by the input.
pub fn allocation_allowance(input_len: usize) -> usize {
    (64usize << 20).saturating_add(input_len.saturating_mul(512))
}

/// How a run went.
#[derive(Debug, Default)]
pub struct Report {
    pub target: String,
    pub executions: u64,
    pub elapsed: Duration,
    pub corpus: usize,
    pub classes: usize,
    pub findings: Vec<Finding>,
}

impl Report {
    /// Executions per second over the whole run.
    pub fn rate(&self) -> f64 {
        self.executions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One distinct crash, violation or excessive allocation, shrunk.
#[derive(Debug, Clone)]
pub struct Finding {
    /// `panic`, `violation` or `allocation`.
    pub kind: &'static str,
    pub message: String,
    pub input: Vec<u8>,
    /// Where the input was saved, if an output directory was given.
    pub file: Option<PathBuf>,
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub seed: u64,
    /// Findings are saved under `out/crashes/`; `None` keeps them in memory only.
    pub out: Option<PathBuf>,
    /// Print a progress line this often (`None`: silent).
    pub progress: Option<Duration>,
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Milliseconds since the epoch when the current execution started; 0 when idle.
static EXEC_STARTED_MS: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Panics are findings, not noise on stderr: the hook records the message.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let message = info.to_string();
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(message));
        }));
    });
}

/// Aborts the process, saving the input, when one execution hangs.
fn start_watchdog() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_secs(1));
            let started = EXEC_STARTED_MS.load(Ordering::SeqCst);
            if started != 0 && now_ms().saturating_sub(started) > HANG_LIMIT.as_millis() as u64 {
                alloc::abort_with_input("one execution ran over the 60 s hang limit");
            }
        });
    });
}

/// Runs one input through `target`: `None` when every property held, else the finding (unshrunk, unsaved).
pub fn execute(target: &Target, input: &[u8]) -> (Option<Finding>, String) {
    install_panic_hook();
    EXEC_STARTED_MS.store(now_ms(), Ordering::SeqCst);
    let (result, peak) = alloc::track(input, || {
        panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)))
    });
    EXEC_STARTED_MS.store(0, Ordering::SeqCst);
    let finding = |kind, message: String| {
        let class = format!("{kind}: {}", signature(&message));
        (
            Some(Finding {
                kind,
                message,
                input: input.to_vec(),
                file: None,
            }),
            class,
        )
    };
    match result {
        Err(_) => {
            let message = LAST_PANIC
                .with(|last| last.borrow_mut().take())
                .unwrap_or_else(|| "panic without a message".into());
            finding("panic", message)
        }
        Ok(Err(violation)) => finding("violation", violation),
        Ok(Ok(_)) if peak > allocation_allowance(input.len()) => finding(
            "allocation",
            format!(
                "held {peak} bytes at once for a {}-byte input (allowance {})",
                input.len(),
                allocation_allowance(input.len())
            ),
        ),
        Ok(Ok(class)) => (None, class),
    }
}

/// A finding's identity: its message without numbers and locations' line numbers,
/// so one bug with many inputs is reported once.
fn signature(message: &str) -> String {
    let first_lines: String = message.lines().take(2).collect::<Vec<_>>().join(" ");
    first_lines
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .take(160)
        .collect()
}

/// Fuzzes `target` for `options.duration` and reports what was found.
pub fn run(target: &Target, options: &Options) -> Report {
    install_panic_hook();
    start_watchdog();
    if let Some(out) = &options.out {
        let _ = std::fs::create_dir_all(out.join("crashes"));
        if let Ok(file) = File::create(abort_file(out, target.name)) {
            alloc::set_abort_file(file);
        }
    }
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut corpus: Vec<Vec<u8>> = (target.seeds)();
    let seed_count = corpus.len();
    let mut classes: HashSet<String> = HashSet::new();
    let mut report = Report {
        target: target.name.to_string(),
        ..Report::default()
    };
    let mut known_findings: HashSet<String> = HashSet::new();
    let mut next_progress = options.progress.map(|p| started + p);

    // Seeds first, unmutated: a seed that fails is a finding too.
    let seeds = corpus.clone();
    for input in seeds.iter().chain(std::iter::once(&Vec::new())) {
        step(
            target,
            input.clone(),
            options,
            &mut report,
            &mut known_findings,
            &mut classes,
            &mut corpus,
            seed_count,
            &mut rng,
        );
    }
    while started.elapsed() < options.duration {
        let input = next_input(target, &corpus, &mut rng);
        step(
            target,
            input,
            options,
            &mut report,
            &mut known_findings,
            &mut classes,
            &mut corpus,
            seed_count,
            &mut rng,
        );
        if let Some(at) = next_progress {
            if Instant::now() >= at {
                eprintln!(
                    "{}: {} executions, {:.0}/s, corpus {}, {} outcome classes, {} findings",
                    target.name,
                    report.executions,
                    report.executions as f64 / started.elapsed().as_secs_f64(),
                    corpus.len(),
                    classes.len(),
                    report.findings.len()
                );
                next_progress = options.progress.map(|p| Instant::now() + p);
            }
        }
    }
    report.elapsed = started.elapsed();
    report.corpus = corpus.len();
    report.classes = classes.len();
    if let Some(out) = &options.out {
        // Nothing aborted: the abort file is empty and only clutters.
        let path = abort_file(out, target.name);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(path);
        }
    }
    report
}

/// Where the input is saved when the process must abort (oversized allocation, hang).
pub fn abort_file(out: &Path, target: &str) -> PathBuf {
    out.join("crashes").join(format!("{target}-abort.bin"))
}

#[allow(clippy::too_many_arguments)]
fn step(
    target: &Target,
    input: Vec<u8>,
    options: &Options,
    report: &mut Report,
    known_findings: &mut HashSet<String>,
    classes: &mut HashSet<String>,
    corpus: &mut Vec<Vec<u8>>,
    seed_count: usize,
    rng: &mut ChaCha8Rng,
) {
    let (finding, class) = execute(target, &input);
    report.executions += 1;
    if let Some(finding) = finding {
        if report.findings.len() < MAX_FINDINGS && known_findings.insert(class.clone()) {
            let finding = shrink(target, finding, &class);
            let finding = save(
                target,
                finding,
                options.out.as_deref(),
                report.findings.len(),
            );
            print_finding(target, &finding);
            report.findings.push(finding);
        }
        return;
    }
    if classes.insert(class) {
        if corpus.len() < MAX_CORPUS {
            corpus.push(input);
        } else {
            let at = rng.gen_range(seed_count..corpus.len());
            corpus[at] = input;
        }
    }
}

/// Greedy shrinking: drop chunks, then zero bytes, while the same finding recurs.
fn shrink(target: &Target, mut finding: Finding, class: &str) -> Finding {
    let started = Instant::now();
    let same = |candidate: &[u8]| {
        let (found, c) = execute(target, candidate);
        found.filter(|_| c == class)
    };
    let mut chunk = finding.input.len() / 2;
    while chunk > 0 && started.elapsed() < SHRINK_TIME {
        let mut at = 0;
        while at + chunk <= finding.input.len() && started.elapsed() < SHRINK_TIME {
            let mut candidate = finding.input.clone();
            candidate.drain(at..at + chunk);
            match same(&candidate) {
                Some(smaller) => finding = smaller,
                None => at += chunk,
            }
        }
        chunk /= 2;
    }
    finding
}

fn save(target: &Target, mut finding: Finding, out: Option<&Path>, index: usize) -> Finding {
    if let Some(out) = out {
        let path = out
            .join("crashes")
            .join(format!("{}-{}-{index}.bin", target.name, finding.kind));
        if std::fs::write(&path, &finding.input).is_ok() {
            finding.file = Some(path);
        }
    }
    finding
}

fn print_finding(target: &Target, finding: &Finding) {
    const HEX_SHOWN: usize = 4096;
    let hex = hex::encode(&finding.input[..finding.input.len().min(HEX_SHOWN)]);
    eprintln!(
        "FINDING in {} ({}): {}\n  input ({} bytes){}: {}{}",
        target.name,
        finding.kind,
        finding.message,
        finding.input.len(),
        finding
            .file
            .as_ref()
            .map(|f| format!(" saved to {}", f.display()))
            .unwrap_or_default(),
        hex,
        if finding.input.len() > HEX_SHOWN {
            "..."
        } else {
            ""
        }
    );
}

fn next_input(target: &Target, corpus: &[Vec<u8>], rng: &mut ChaCha8Rng) -> Vec<u8> {
    // Now and then bytes from nothing, to reach shapes no seed suggests.
    if corpus.is_empty() || rng.gen_ratio(1, 32) {
        let len = rng.gen_range(0..256usize.min(target.max_len + 1));
        return (0..len).map(|_| rng.gen()).collect();
    }
    let mut input = corpus[rng.gen_range(0..corpus.len())].clone();
    let stacked = 1 + rng.gen_range(0..4u32).pow(2) / 3;
    for _ in 0..stacked {
        mutate(&mut input, target, corpus, rng);
    }
    input.truncate(target.max_len);
    input
}

/// Values that sit on the edges of integer and length checks, LEB128-encoded as postcard writes them.
const INTERESTING_NUMBERS: [u64; 12] = [
    0,
    1,
    2,
    127,
    128,
    255,
    256,
    65_536,
    u32::MAX as u64,
    (u32::MAX as u64) + 1,
    i64::MAX as u64,
    u64::MAX,
];

/// Numbers spelled as text, for the text formats.
const INTERESTING_TEXTS: [&str; 12] = [
    "0",
    "-1",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "99999999999999999999",
    "-9223372036854775808",
    "9223372036854775807",
    "4294967296",
    "0.000001",
    "18446744073709551615",
];

fn mutate(input: &mut Vec<u8>, target: &Target, corpus: &[Vec<u8>], rng: &mut ChaCha8Rng) {
    let len = input.len();
    match rng.gen_range(0..12u8) {
        0 if len > 0 => {
            let at = rng.gen_range(0..len);
            input[at] ^= 1u8 << rng.gen_range(0..8u32);
        }
        1 if len > 0 => {
            let at = rng.gen_range(0..len);
            input[at] = rng.gen();
        }
        2 if len > 0 => {
            let at = rng.gen_range(0..len);
            input[at] = [0u8, 1, 0x7f, 0x80, 0xff, b'0', b'"', b'\n'][rng.gen_range(0..8)];
        }
        3 if len > 0 => {
            let at = rng.gen_range(0..len);
            let n = rng.gen_range(1..=16usize.min(len - at));
            input.drain(at..at + n);
        }
        4 => {
            let at = rng.gen_range(0..=len);
            let n = rng.gen_range(1..=8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            input.splice(at..at, bytes);
        }
        5 if len > 0 => {
            let from = rng.gen_range(0..len);
            let n = rng.gen_range(1..=64usize.min(len - from));
            let chunk = input[from..from + n].to_vec();
            let at = rng.gen_range(0..=len);
            input.splice(at..at, chunk);
        }
        6 if !corpus.is_empty() => {
            let other = &corpus[rng.gen_range(0..corpus.len())];
            if !other.is_empty() {
                let from = rng.gen_range(0..other.len());
                let n = rng.gen_range(1..=128usize.min(other.len() - from));
                let at = rng.gen_range(0..=len);
                let end = (at + n).min(len);
                input.splice(at..end, other[from..from + n].iter().copied());
            }
        }
        7 if !target.dictionary.is_empty() => {
            let word = target.dictionary[rng.gen_range(0..target.dictionary.len())];
            let at = rng.gen_range(0..=len);
            input.splice(at..at, word.bytes());
        }
        8 if len > 0 => {
            let number = INTERESTING_NUMBERS[rng.gen_range(0..INTERESTING_NUMBERS.len())];
            let at = rng.gen_range(0..len);
            let varint = leb128(number);
            let end = (at + varint.len()).min(len);
            input.splice(at..end, varint);
        }
        9 if len > 0 => {
            let at = rng.gen_range(0..len);
            input[at] = input[at].wrapping_add(rng.gen_range(1..=8)).wrapping_sub(4);
        }
        10 if len > 0 => input.truncate(rng.gen_range(0..len)),
        11 => replace_number_text(input, rng),
        _ => {
            if len > 0 {
                let at = rng.gen_range(0..len);
                input[at] = rng.gen();
            }
        }
    }
}

fn leb128(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Replaces one run of ASCII digits with an edge-case number.
fn replace_number_text(input: &mut Vec<u8>, rng: &mut ChaCha8Rng) {
    let digits: Vec<usize> = (0..input.len())
        .filter(|&i| input[i].is_ascii_digit())
        .collect();
    if digits.is_empty() {
        return;
    }
    let start = digits[rng.gen_range(0..digits.len())];
    let end = (start..input.len())
        .find(|&i| !input[i].is_ascii_digit())
        .unwrap_or(input.len());
    let text = INTERESTING_TEXTS[rng.gen_range(0..INTERESTING_TEXTS.len())];
    input.splice(start..end, text.bytes());
}
