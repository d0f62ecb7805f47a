//! Seeded synthetic ICU cohorts written in the PhysioNet 2012 "set-a" file format.
//!
//! Tests, the demo and benchmarks use these cohorts when the real PhysioNet
//! data is absent. The files copy the real layout row for row (descriptors at
//! `00:00`, then `HH:MM,Parameter,Value` rows sorted by time and, within a
//! time, by parameter name ignoring case), so they go through the same
//! importer as the real data.
//!
//! Distributions are calibrated against the 4,000 stays of set-a; the figures
//! quoted in comments (`set-a: ...`) are what was measured there. Normal draws
//! use Box–Muller on `rand`'s uniform: good enough for synthetic data, never
//! to be used for privacy noise.
//!
//! Determinism: patient `i` is drawn from `ChaCha8Rng::seed_from_u64(seed)`
//! on its own ChaCha streams (`set_stream`), so it is the same whatever the
//! cohort size, and its descriptors and outcome do not depend on `hours` or
//! `samples_per_hour` (the time series use a separate stream).

use std::f64::consts::PI;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// RecordID given to patient 0 by default: far above set-a's 132539..142673,
/// so synthetic and real stays never collide in one store.
const DEFAULT_FIRST_RECORD_ID: u64 = 200_001;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Number of patients (ICU stays).
    pub patients: usize,
    /// Seed: the same seed and config give byte-identical files.
    pub seed: u64,
    /// RecordID of patient 0; patient `i` gets `first_record_id + i`.
    pub first_record_id: u64,
    /// Length of the recorded window in hours (set-a: 48).
    pub hours: u32,
    /// Charting rounds per hour, on average. Heart rate is charted at every
    /// round, so this is its rows per hour; other parameters are charted at a
    /// fraction of rounds calibrated from set-a (e.g. temperature at ~35%,
    /// glucose at ~6%). At most one round per minute.
    pub samples_per_hour: f64,
}

impl Default for Config {
    /// A set-a-sized cohort (4,000 stays of 48 hours, hourly charting).
    fn default() -> Self {
        Config {
            patients: 4000,
            seed: 0,
            first_record_id: DEFAULT_FIRST_RECORD_ID,
            hours: 48,
            samples_per_hour: 1.0,
        }
    }
}

/// One synthetic ICU stay.
#[derive(Debug, Clone, PartialEq)]
pub struct Patient {
    /// PhysioNet RecordID.
    pub record_id: u64,
    /// Age in whole years, 15..=90.
    pub age: f64,
    /// Gender: true is male (`Gender,1`).
    pub male: bool,
    /// Height in cm; `None` is written as `-1`.
    pub height_cm: Option<f64>,
    /// Admission weight in kg; `None` is written as `-1`.
    pub weight_kg: Option<f64>,
    /// 1 coronary care, 2 cardiac surgery recovery, 3 medical, 4 surgical.
    pub icu_type: u8,
    /// Time-series rows in file order (time, then parameter name ignoring case).
    pub series: Vec<Sample>,
    /// The row of `Outcomes.txt` for this stay.
    pub outcome: Outcome,
}

/// One time-series row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Minutes since ICU admission (written `HH:MM`).
    pub minutes: u32,
    /// Parameter name as spelled in set-a, e.g. `HR`.
    pub parameter: &'static str,
    /// Value, already rounded the way set-a writes it.
    pub value: f64,
}

/// Outcome-related descriptors, as in `Outcomes-a.txt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// SAPS-I severity score.
    pub saps1: i32,
    /// SOFA organ-failure score.
    pub sofa: i32,
    /// Length of stay in days.
    pub length_of_stay_days: i32,
    /// Days from ICU admission to death; -1 if the patient survived.
    pub survival_days: i32,
    /// Died in hospital.
    pub in_hospital_death: bool,
}

/// Where [`write_physionet_set`] put the cohort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Number of patient files written.
    pub patients: usize,
    /// Time-series rows written over all files (descriptor rows not counted).
    pub time_series_rows: u64,
    /// The set directory holding one `<RecordID>.txt` per patient.
    pub dir: PathBuf,
    /// The outcomes file (outside `dir`, so `*.txt` in `dir` are all patients).
    pub outcomes: PathBuf,
}

/// Header of each patient file.
const SERIES_HEADER: &str = "Time,Parameter,Value";
/// Header of the outcomes file.
const OUTCOMES_HEADER: &str = "RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death";

// Parameter names, as spelled in set-a.
const DIAS_ABP: &str = "DiasABP";
const GCS: &str = "GCS";
const GLUCOSE: &str = "Glucose";
const HR: &str = "HR";
const LACTATE: &str = "Lactate";
const MAP: &str = "MAP";
const NI_DIAS_ABP: &str = "NIDiasABP";
const NI_MAP: &str = "NIMAP";
const NI_SYS_ABP: &str = "NISysABP";
const RESP_RATE: &str = "RespRate";
const SAO2: &str = "SaO2";
const SYS_ABP: &str = "SysABP";
const TEMP: &str = "Temp";
const URINE: &str = "Urine";
const WEIGHT: &str = "Weight";

/// File order within one time: set-a sorts rows at the same time by
/// parameter name ignoring case (e.g. `Height` before `HR`).
const FILE_ORDER: [&str; 15] = [
    DIAS_ABP,
    GCS,
    GLUCOSE,
    HR,
    LACTATE,
    MAP,
    NI_DIAS_ABP,
    NI_MAP,
    NI_SYS_ABP,
    RESP_RATE,
    SAO2,
    SYS_ABP,
    TEMP,
    URINE,
    WEIGHT,
];

// set-a ICUType counts 577 / 874 / 1481 / 1068 of 4,000.
const ICU_SHARE: [f64; 4] = [0.144, 0.219, 0.370, 0.267];
// Kumaraswamy(a, b) on 15..90 fitted to set-a age quantiles per ICU type
// (set-a mean age 69.3 / 67.8 / 63.0 / 60.3; overall 64.2, sd 17.6).
const AGE_SHAPE: [(f64, f64); 4] = [(3.10, 1.20), (3.65, 1.80), (1.70, 0.95), (1.45, 0.95)];
// set-a: 58 / 61 / 51 / 59 % male (56.1% overall).
const MALE: [f64; 4] = [0.58, 0.61, 0.51, 0.59];
// set-a: admission weight unknown 7 / 2 / 12 / 8 % (8.2% overall).
const WEIGHT_MISSING: [f64; 4] = [0.07, 0.02, 0.12, 0.08];
// set-a: height unknown when weight is known (47.4% unknown overall, and
// almost always unknown when weight is).
const HEIGHT_MISSING: [f64; 4] = [0.30, 0.04, 0.67, 0.51];
// set-a: patients with MechVent rows 46 / 91 / 51 / 67 %.
const VENTILATED: [f64; 4] = [0.46, 0.91, 0.51, 0.67];
// set-a: patients with invasive SysABP 67 / 96 / 48 / 81 %.
const ARTERIAL_LINE: [f64; 4] = [0.67, 0.96, 0.48, 0.81];
// set-a: patients with NISysABP 87 / 75 / 94 / 89 %.
const CUFF: [f64; 4] = [0.87, 0.75, 0.94, 0.89];
// set-a: patients with SaO2 (arterial blood gas) 58 / 89 / 25 / 30 %.
const HAS_SAO2: [f64; 4] = [0.58, 0.89, 0.25, 0.30];
// set-a: patients with Lactate 41 / 50 / 56 / 63 %.
const HAS_LACTATE: [f64; 4] = [0.41, 0.50, 0.56, 0.63];
// set-a in-hospital death 14.0 / 4.9 / 18.6 / 14.5 %: log-odds offsets.
const ICU_RISK: [f64; 4] = [0.0, -1.1, 0.35, 0.05];
// set-a mean length of stay 11.0 / 12.5 / 13.3 / 15.7 days.
const ICU_STAY: [f64; 4] = [0.82, 0.93, 1.0, 1.17];

/// Within-stay correlation time of vital signs (minutes): readings an hour
/// apart are strongly correlated, readings a day apart nearly independent.
const DRIFT_TAU_MIN: f64 = 240.0;

/// Intercept of the mortality model, tuned so that ~14% die (set-a 13.85%).
const RISK_INTERCEPT: f64 = -2.11;

/// One draw from N(0, 1) by Box–Muller (cosine branch only, for simplicity).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // 1 - [0, 1) lies in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// One draw from the exponential distribution with mean 1.
fn exponential(rng: &mut ChaCha8Rng) -> f64 {
    -(1.0 - rng.gen::<f64>()).ln()
}

/// Rounds to `decimals` places, as the real files do per parameter.
fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// Index of a categorical draw from `shares` (which sum to ~1).
fn categorical(rng: &mut ChaCha8Rng, shares: &[f64]) -> usize {
    let mut u: f64 = rng.gen();
    for (i, share) in shares.iter().enumerate() {
        if u < *share {
            return i;
        }
        u -= share;
    }
    shares.len() - 1
}

/// The RNG for one purpose of one patient: streams 2i and 2i+1 of the seed.
fn patient_rng(config: &Config, index: usize, series: bool) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(
        (index as u64)
            .wrapping_mul(2)
            .wrapping_add(u64::from(series)),
    );
    rng
}

/// A patient's hidden state: what drives both the charted values and the
/// outcome, so that the two are correlated as in real data.
struct Latent {
    /// Illness severity, N(0, 1): raises HR and lactate, lowers SaO2, BP, GCS.
    severity: f64,
    ventilated: bool,
    true_weight: f64,
    hr: f64,
    sys: f64,
    dias: f64,
    resp: f64,
    temp: f64,
    /// 100 - SaO2 baseline (percentage points), log-normal.
    sao2_deficit: f64,
    gcs: f64,
    ln_glucose: f64,
    ln_urine: f64,
    ln_lactate: f64,
    has: Presence,
}

/// Which parameters are charted at all for this patient.
struct Presence {
    arterial_line: bool,
    cuff: bool,
    resp: bool,
    sao2: bool,
    lactate: bool,
    glucose: bool,
    urine: bool,
    temp: bool,
    gcs: bool,
    weight: bool,
}

/// Generates patient `index` of the cohort described by `config`.
pub fn patient(config: &Config, index: usize) -> Patient {
    let mut rng = patient_rng(config, index, false);
    let icu = categorical(&mut rng, &ICU_SHARE);
    let age = draw_age(&mut rng, icu);
    let male = rng.gen_bool(MALE[icu]);
    let (true_height, true_weight) = draw_body(&mut rng, male);
    let weight_known = !rng.gen_bool(WEIGHT_MISSING[icu]);
    // set-a almost never has a height without a weight.
    let height_known = weight_known && !rng.gen_bool(HEIGHT_MISSING[icu]);
    let latent = draw_latent(&mut rng, icu, true_weight, weight_known);
    let outcome = draw_outcome(&mut rng, icu, age, &latent, config.hours);
    let height_cm = height_known.then(|| recorded_height(&mut rng, true_height));

    // A separate stream, so the window and charting rate never change the
    // descriptors or the outcome.
    let mut series_rng = patient_rng(config, index, true);
    let times = chart_times(&mut series_rng, config.hours, config.samples_per_hour);
    Patient {
        record_id: config.first_record_id.wrapping_add(index as u64),
        age,
        male,
        height_cm,
        weight_kg: weight_known.then_some(round_to(true_weight, 1)),
        icu_type: icu as u8 + 1,
        series: chart(&mut series_rng, &latent, &times),
        outcome,
    }
}

/// Generates the whole cohort lazily, patient 0 first.
pub fn generate(config: &Config) -> impl Iterator<Item = Patient> + '_ {
    (0..config.patients).map(move |index| patient(config, index))
}

/// Age in whole years: adults 15..=90, skewed older (set-a mean 64.2).
fn draw_age(rng: &mut ChaCha8Rng, icu: usize) -> f64 {
    let (a, b) = AGE_SHAPE[icu];
    let u: f64 = rng.gen();
    // Inverse CDF of Kumaraswamy(a, b): a closed-form Beta look-alike.
    let x = (1.0 - (1.0 - u).powf(1.0 / b)).powf(1.0 / a);
    (15.0 + 75.0 * x).round().clamp(15.0, 90.0)
}

/// True height (cm) and weight (kg). set-a heights: median 170.2, IQR
/// 162.6-177.8; weights: median 78.6, 5-95% 50.5-122.
fn draw_body(rng: &mut ChaCha8Rng, male: bool) -> (f64, f64) {
    let (mean, sd) = if male { (176.0, 7.5) } else { (162.0, 7.0) };
    let height = (mean + sd * normal(rng)).clamp(140.0, 210.0);
    // Weight through a log-normal BMI keeps tall patients heavier.
    let bmi = 27.3 * (0.24 * normal(rng)).exp();
    let weight = (bmi * (height / 100.0).powi(2)).clamp(35.0, 250.0);
    (height, weight)
}

/// Height as charted: most set-a heights are whole inches converted to cm
/// (e.g. 170.2 = 67 in), the rest whole centimetres.
fn recorded_height(rng: &mut ChaCha8Rng, height: f64) -> f64 {
    if rng.gen_bool(0.9) {
        round_to((height / 2.54).round() * 2.54, 1)
    } else {
        height.round()
    }
}

/// Draws severity, which parameters are charted, and per-patient baselines.
fn draw_latent(rng: &mut ChaCha8Rng, icu: usize, true_weight: f64, weight_known: bool) -> Latent {
    let severity = normal(rng);
    let ventilated = rng.gen_bool(VENTILATED[icu]);
    let has = draw_presence(rng, icu, ventilated, weight_known);
    // Each baseline mixes severity with an independent part so the
    // between-patient sd matches set-a's sd of per-patient means.
    let hr = 87.0 + 14.5 * mix(rng, severity, 0.35); // set-a: 87.2 +- 14.6
    let sys = 118.0 + 19.0 * mix(rng, severity, -0.25); // set-a: 118.6 +- 19.8
    let dias = 59.0 + 0.35 * (sys - 118.0) + 7.5 * normal(rng); // set-a: 59.5 +- 10.7
    let resp = 19.6 + 3.9 * mix(rng, severity, 0.3); // set-a: 19.7 +- 3.9
    let temp = 37.0 + 0.6 * mix(rng, severity, 0.1); // set-a: 36.96 +- 0.73
    let sao2_deficit = (2.5f64.ln() + 0.65 * mix(rng, severity, 0.45)).exp(); // set-a SaO2: 96.6 +- 3.4
    let gcs = if ventilated {
        10.0 + 3.0 * mix(rng, severity, -0.4) // set-a ventilated: 10.0 +- 3.0
    } else {
        15.3 - exponential(rng) * (0.4 * severity).exp() // set-a others: 14.4 +- 1.2
    };
    let ln_glucose = 127f64.ln() + 0.25 * mix(rng, severity, 0.2); // set-a median 127
    let ln_urine = 72f64.ln() + 0.6 * mix(rng, severity, -0.3); // set-a median 70 mL
    let ln_lactate = 2.0f64.ln() + 0.65 * mix(rng, severity, 0.5); // set-a median 2.1
    Latent {
        severity,
        ventilated,
        true_weight,
        hr,
        sys,
        dias,
        resp,
        temp,
        sao2_deficit,
        gcs,
        ln_glucose,
        ln_urine,
        ln_lactate,
        has,
    }
}

/// A standard-normal draw with correlation `load` to `severity`.
fn mix(rng: &mut ChaCha8Rng, severity: f64, load: f64) -> f64 {
    load * severity + (1.0 - load * load).sqrt() * normal(rng)
}

/// Which parameters this patient has at all (set-a patient shares).
fn draw_presence(
    rng: &mut ChaCha8Rng,
    icu: usize,
    ventilated: bool,
    weight_known: bool,
) -> Presence {
    Presence {
        arterial_line: rng.gen_bool(ARTERIAL_LINE[icu]),
        cuff: rng.gen_bool(CUFF[icu]),
        // set-a never charts RespRate for ventilated patients; 75% of others.
        resp: !ventilated && rng.gen_bool(0.75),
        sao2: rng.gen_bool(HAS_SAO2[icu] * 1.03),
        lactate: rng.gen_bool((HAS_LACTATE[icu] * 1.08).min(1.0)),
        glucose: rng.gen_bool(0.995),
        urine: rng.gen_bool(0.97),
        temp: rng.gen_bool(0.985),
        gcs: rng.gen_bool(0.985),
        // set-a: Weight rows for 74% of stays with a known admission weight,
        // 11% of the others (weighed later in the stay).
        weight: rng.gen_bool(if weight_known { 0.74 } else { 0.11 }),
    }
}

/// Outcome from a logistic mortality model on age, HR, SaO2 and ICU type.
fn draw_outcome(
    rng: &mut ChaCha8Rng,
    icu: usize,
    age: f64,
    latent: &Latent,
    hours: u32,
) -> Outcome {
    // set-a death rate rises from 7.9% (age < 45) to 22.8% (age >= 80), to
    // 27% for mean HR >= 110 and 24% for min SaO2 < 90.
    let logit = RISK_INTERCEPT
        + 0.025 * (age - 64.0)
        + 0.03 * (latent.hr - 87.0)
        + 0.12 * (latent.sao2_deficit - 3.0)
        + 0.3 * latent.severity
        + ICU_RISK[icu];
    let in_hospital_death = rng.gen::<f64>() < 1.0 / (1.0 + (-logit).exp());
    let length_of_stay_days = draw_stay(rng, icu, latent, hours);
    let survival_days = if in_hospital_death {
        // set-a: deaths happen late in the stay (median 0.83 of it).
        let fraction = rng.gen::<f64>().powf(0.3);
        ((f64::from(length_of_stay_days) * fraction).round() as i32)
            .clamp(2.min(length_of_stay_days), length_of_stay_days)
    } else {
        -1
    };
    let (saps1, sofa) = draw_scores(rng, age, latent);
    Outcome {
        saps1,
        sofa,
        length_of_stay_days,
        survival_days,
        in_hospital_death,
    }
}

/// Length of stay in days: log-normal, set-a median 10, 5-95% 3-36 days; at
/// least the recorded window.
fn draw_stay(rng: &mut ChaCha8Rng, icu: usize, latent: &Latent, hours: u32) -> i32 {
    let minimum = hours.div_ceil(24).max(1) as f64;
    let days = 10.0 * ICU_STAY[icu] * (0.1 * latent.severity + 0.75 * normal(rng)).exp();
    days.round().clamp(minimum, 150.0f64.max(minimum)) as i32
}

/// SAPS-I (set-a 14.2 +- 6.1) and SOFA (6.4 +- 4.2), correlated 0.69 in set-a.
fn draw_scores(rng: &mut ChaCha8Rng, age: f64, latent: &Latent) -> (i32, i32) {
    let saps = 14.2 + 3.0 * latent.severity + 0.1 * (age - 64.0) + 4.9 * normal(rng);
    let vent = if latent.ventilated { 1.0 } else { -1.5 };
    let sofa = 6.2 + 0.45 * (saps - 14.2) + vent + 3.2 * normal(rng);
    (
        saps.round().clamp(0.0, 34.0) as i32,
        sofa.round().clamp(0.0, 24.0) as i32,
    )
}

/// Charting rounds (minutes since admission, strictly increasing, inside
/// `1..hours*60`). set-a's gaps between HR rows: median 60 min, 25% at 30 min
/// or less, 10% of two hours or more; the first round is ~1 h after admission.
fn chart_times(rng: &mut ChaCha8Rng, hours: u32, samples_per_hour: f64) -> Vec<u32> {
    if samples_per_hour.is_nan() || samples_per_hour <= 0.0 {
        return Vec::new();
    }
    let interval = 60.0 / samples_per_hour;
    let end = (f64::from(hours) * 60.0).min(f64::from(u32::MAX));
    let mut t = 1.0 + 1.3 * interval * exponential(rng);
    let mut times: Vec<u32> = Vec::new();
    loop {
        // Float-to-int `as` saturates, so huge `t` simply ends the loop.
        let mut minute = t.round() as u32;
        if let Some(last) = times.last() {
            minute = minute.max(last.saturating_add(1));
        }
        if f64::from(minute) >= end {
            return times;
        }
        times.push(minute);
        t = t.max(f64::from(minute)) + interval * gap(rng);
    }
}

/// Gap to the next round in units of the mean interval (mean 0.99): mostly
/// on schedule with a few minutes' jitter, sometimes extra readings while
/// the patient is unstable, sometimes a missed round.
fn gap(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = rng.gen();
    if u < 0.62 {
        (1.0 + 0.03 * normal(rng)).max(0.5)
    } else if u < 0.87 {
        rng.gen_range(0.05..0.6)
    } else {
        rng.gen_range(1.2..3.2)
    }
}

/// Within-stay deviation from a baseline: an AR(1) process in continuous
/// time, so consecutive readings are correlated like real charted vitals.
struct Drift {
    sd: f64,
    value: f64,
    last: Option<u32>,
}

impl Drift {
    /// A drift with stationary standard deviation `sd`.
    fn new(sd: f64) -> Self {
        Drift {
            sd,
            value: 0.0,
            last: None,
        }
    }

    /// The deviation at `minutes`, given the deviation at the previous call.
    fn at(&mut self, rng: &mut ChaCha8Rng, minutes: u32) -> f64 {
        let z = normal(rng);
        self.value = match self.last {
            None => self.sd * z,
            Some(last) => {
                let rho = (-f64::from(minutes - last) / DRIFT_TAU_MIN).exp();
                rho * self.value + (1.0 - rho * rho).sqrt() * self.sd * z
            }
        };
        self.last = Some(minutes);
        self.value
    }
}

/// Per-parameter drifts of one stay; within-stay sds are set-a's mean
/// within-patient sd.
struct Drifts {
    hr: Drift,
    sys: Drift,
    dias: Drift,
    resp: Drift,
    temp: Drift,
    sao2: Drift,
    gcs: Drift,
    glucose: Drift,
    urine: Drift,
    lactate: Drift,
    weight: Drift,
}

impl Drifts {
    fn new(ventilated: bool) -> Self {
        Drifts {
            hr: Drift::new(11.0),
            sys: Drift::new(16.0),
            dias: Drift::new(6.5),
            resp: Drift::new(3.7),
            temp: Drift::new(0.75),
            sao2: Drift::new(0.5),
            // Sedation makes ventilated patients' GCS swing (set-a 2.5 vs 0.4).
            gcs: Drift::new(if ventilated { 3.0 } else { 0.6 }),
            glucose: Drift::new(0.3),
            urine: Drift::new(0.85),
            lactate: Drift::new(0.35),
            weight: Drift::new(0.75),
        }
    }
}

/// Share of charting rounds at which each parameter is charted, for
/// patients who have it (set-a rows relative to HR rows).
mod rate {
    pub const ARTERIAL: f64 = 0.9;
    pub const CUFF_WITH_LINE: f64 = 0.3;
    pub const CUFF_ONLY: f64 = 0.8;
    pub const RESP: f64 = 0.95;
    pub const TEMP: f64 = 0.35;
    pub const GCS: f64 = 0.27;
    pub const URINE: f64 = 0.62;
    pub const WEIGHT: f64 = 0.8;
    pub const SAO2: f64 = 0.08;
    pub const GLUCOSE: f64 = 0.065;
    pub const LACTATE: f64 = 0.065;
}

/// The time series of one stay, in file order.
fn chart(rng: &mut ChaCha8Rng, latent: &Latent, times: &[u32]) -> Vec<Sample> {
    let mut drifts = Drifts::new(latent.ventilated);
    let mut series = Vec::with_capacity(times.len() * 6);
    for &minutes in times {
        let start = series.len();
        let mut push = |parameter, value| {
            series.push(Sample {
                minutes,
                parameter,
                value,
            })
        };
        chart_round(rng, latent, &mut drifts, minutes, &mut push);
        series[start..].sort_by_key(|s| file_rank(s.parameter));
    }
    series
}

/// Position of a parameter among rows charted at the same time.
fn file_rank(parameter: &str) -> usize {
    FILE_ORDER
        .iter()
        .position(|p| *p == parameter)
        .unwrap_or(FILE_ORDER.len())
}

/// Charts one round: each parameter the patient has, with its own chance.
fn chart_round(
    rng: &mut ChaCha8Rng,
    latent: &Latent,
    d: &mut Drifts,
    t: u32,
    push: &mut impl FnMut(&'static str, f64),
) {
    let has = &latent.has;
    push(HR, (latent.hr + d.hr.at(rng, t)).clamp(30.0, 220.0).round());
    chart_pressures(rng, latent, d, t, push);
    if has.resp && rng.gen_bool(rate::RESP) {
        push(
            RESP_RATE,
            (latent.resp + d.resp.at(rng, t)).clamp(4.0, 60.0).round(),
        );
    }
    if has.temp && rng.gen_bool(rate::TEMP) {
        push(
            TEMP,
            round_to((latent.temp + d.temp.at(rng, t)).clamp(32.0, 42.0), 1),
        );
    }
    if has.gcs && rng.gen_bool(rate::GCS) {
        push(
            GCS,
            (latent.gcs + d.gcs.at(rng, t)).round().clamp(3.0, 15.0),
        );
    }
    if has.urine && rng.gen_bool(rate::URINE) {
        // set-a: ~2% of urine outputs are 0 mL (catheter blocked, anuria).
        let ml = (latent.ln_urine + d.urine.at(rng, t)).exp().min(2000.0);
        push(URINE, if rng.gen_bool(0.02) { 0.0 } else { ml.round() });
    }
    if has.weight && rng.gen_bool(rate::WEIGHT) {
        push(
            WEIGHT,
            round_to(latent.true_weight + d.weight.at(rng, t), 1),
        );
    }
    chart_labs(rng, latent, d, t, push);
}

/// Arterial-line and cuff blood pressures: both follow the same patient
/// pressure; the cuff is charted more often when there is no line.
fn chart_pressures(
    rng: &mut ChaCha8Rng,
    latent: &Latent,
    d: &mut Drifts,
    t: u32,
    push: &mut impl FnMut(&'static str, f64),
) {
    let has = &latent.has;
    let line = has.arterial_line && rng.gen_bool(rate::ARTERIAL);
    let cuff_rate = if has.arterial_line {
        rate::CUFF_WITH_LINE
    } else {
        rate::CUFF_ONLY
    };
    let cuff = has.cuff && rng.gen_bool(cuff_rate);
    if !line && !cuff {
        return;
    }
    let sys_drift = d.sys.at(rng, t);
    let sys = (latent.sys + sys_drift).clamp(60.0, 240.0);
    let dias = (latent.dias + 0.4 * sys_drift + d.dias.at(rng, t)).clamp(25.0, sys - 15.0);
    if line {
        let s = (sys + 3.0 * normal(rng)).round();
        let di = (dias + 2.0 * normal(rng)).round();
        push(SYS_ABP, s);
        push(DIAS_ABP, di);
        // The monitor integrates the waveform, so MAP is near, not equal
        // to, the textbook (sys + 2 dias) / 3 (set-a: ~1.5 mmHg above).
        push(
            MAP,
            ((s + 2.0 * di) / 3.0 + 1.5 + 2.0 * normal(rng)).round(),
        );
    }
    if cuff {
        let s = (sys + 4.0 * normal(rng)).round();
        // set-a's cuff diastolic reads ~1.5 mmHg below the line's.
        let di = (dias - 1.5 + 3.0 * normal(rng)).round().min(s - 10.0);
        push(NI_SYS_ABP, s);
        push(NI_DIAS_ABP, di);
        // set-a's NIMAP is exactly (sys + 2 dias) / 3 to two decimals.
        push(NI_MAP, round_to((s + 2.0 * di) / 3.0, 2));
    }
}

/// Blood-gas and chemistry values, charted a few times a stay.
fn chart_labs(
    rng: &mut ChaCha8Rng,
    latent: &Latent,
    d: &mut Drifts,
    t: u32,
    push: &mut impl FnMut(&'static str, f64),
) {
    let has = &latent.has;
    if has.sao2 && rng.gen_bool(rate::SAO2) {
        let deficit = latent.sao2_deficit * d.sao2.at(rng, t).exp();
        push(SAO2, (100.0 - deficit).round().clamp(50.0, 100.0));
    }
    if has.glucose && rng.gen_bool(rate::GLUCOSE) {
        let mg_dl = (latent.ln_glucose + d.glucose.at(rng, t)).exp();
        push(GLUCOSE, mg_dl.clamp(20.0, 1000.0).round());
    }
    if has.lactate && rng.gen_bool(rate::LACTATE) {
        let mmol = (latent.ln_lactate + d.lactate.at(rng, t)).exp();
        push(LACTATE, round_to(mmol.clamp(0.3, 30.0), 1));
    }
}

/// `HH:MM` as in set-a (hours may exceed 99 for very long windows).
fn clock(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

impl Patient {
    /// The patient's `<RecordID>.txt` file, byte for byte: header,
    /// descriptors at `00:00` (`-1` for unknown), then the time series.
    pub fn to_physionet_text(&self) -> String {
        let mut text = String::with_capacity(64 + self.series.len() * 18);
        text.push_str(SERIES_HEADER);
        text.push('\n');
        let descriptors = [
            ("RecordID", self.record_id.to_string()),
            ("Age", self.age.to_string()),
            ("Gender", u8::from(self.male).to_string()),
            ("Height", self.height_cm.unwrap_or(-1.0).to_string()),
            ("ICUType", self.icu_type.to_string()),
            ("Weight", self.weight_kg.unwrap_or(-1.0).to_string()),
        ];
        for (name, value) in descriptors {
            text.push_str(&format!("00:00,{name},{value}\n"));
        }
        for sample in &self.series {
            // f64's Display is the shortest exact form: 37 not 37.0, 92.33.
            let line = format!(
                "{},{},{}\n",
                clock(sample.minutes),
                sample.parameter,
                sample.value
            );
            text.push_str(&line);
        }
        text
    }

    /// The patient's row of the outcomes file (no trailing newline).
    pub fn outcome_line(&self) -> String {
        let o = &self.outcome;
        format!(
            "{},{},{},{},{},{}",
            self.record_id,
            o.saps1,
            o.sofa,
            o.length_of_stay_days,
            o.survival_days,
            u8::from(o.in_hospital_death)
        )
    }
}

/// Writes the cohort as a PhysioNet 2012 set: `dir/set/<RecordID>.txt` per
/// patient and `dir/Outcomes.txt`. The outcomes file stays outside the set
/// directory because importers read every `*.txt` there as a patient.
/// Existing files with the same names are overwritten; others are left alone.
pub fn write_physionet_set(dir: &Path, config: &Config) -> io::Result<Written> {
    let set_dir = dir.join("set");
    fs::create_dir_all(&set_dir)?;
    let outcomes_path = dir.join("Outcomes.txt");
    let mut outcomes = BufWriter::new(fs::File::create(&outcomes_path)?);
    writeln!(outcomes, "{OUTCOMES_HEADER}")?;
    let mut written = Written {
        patients: 0,
        time_series_rows: 0,
        dir: set_dir,
        outcomes: outcomes_path,
    };
    for p in generate(config) {
        let path = written.dir.join(format!("{}.txt", p.record_id));
        fs::write(path, p.to_physionet_text())?;
        writeln!(outcomes, "{}", p.outcome_line())?;
        written.patients += 1;
        written.time_series_rows += p.series.len() as u64;
    }
    outcomes.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small(patients: usize, seed: u64) -> Config {
        Config {
            patients,
            seed,
            ..Config::default()
        }
    }

    /// Checks one file against the set-a layout; returns its series rows.
    fn check_format(text: &str, hours: u32, record_id: u64) -> Result<usize, String> {
        let mut lines = text.lines();
        if lines.next() != Some(SERIES_HEADER) {
            return Err("bad header".into());
        }
        let names = ["RecordID", "Age", "Gender", "Height", "ICUType", "Weight"];
        for name in names {
            let line = lines.next().ok_or("too short")?;
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() != 3 || fields[0] != "00:00" || fields[1] != name {
                return Err(format!("bad descriptor {line}"));
            }
            let value: f64 = fields[2].parse().map_err(|_| format!("bad value {line}"))?;
            if name == "RecordID" && value != record_id as f64 {
                return Err("wrong RecordID".into());
            }
        }
        let mut rows = 0;
        let mut previous = (0, 0);
        for line in lines {
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() != 3 {
                return Err(format!("bad row {line}"));
            }
            let (hh, mm) = fields[0]
                .split_once(':')
                .ok_or(format!("bad time {line}"))?;
            if hh.len() < 2 || mm.len() != 2 {
                return Err(format!("bad time {line}"));
            }
            let minutes = hh.parse::<u32>().map_err(|e| e.to_string())? * 60
                + mm.parse::<u32>()
                    .ok()
                    .filter(|m| *m < 60)
                    .ok_or("minutes")?;
            if minutes > hours * 60 {
                return Err(format!("time out of window {line}"));
            }
            let rank = file_rank(fields[1]);
            if rank == FILE_ORDER.len() {
                return Err(format!("unknown parameter {line}"));
            }
            if (minutes, rank) <= previous && rows > 0 {
                return Err(format!("rows out of order at {line}"));
            }
            previous = (minutes, rank);
            let value: f64 = fields[2].parse().map_err(|_| format!("bad value {line}"))?;
            if !value.is_finite() || value < 0.0 {
                return Err(format!("bad value {line}"));
            }
            rows += 1;
        }
        Ok(rows)
    }

    #[test]
    fn same_seed_same_cohort_other_seed_differs() {
        let a: Vec<Patient> = generate(&small(20, 7)).collect();
        let b: Vec<Patient> = generate(&small(20, 7)).collect();
        let c: Vec<Patient> = generate(&small(20, 8)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn patient_independent_of_cohort_size() {
        let few: Vec<Patient> = generate(&small(5, 3)).collect();
        let many: Vec<Patient> = generate(&small(50, 3)).collect();
        assert_eq!(few[..], many[..5]);
        assert_eq!(patient(&small(1, 3), 42), many[42]);
    }

    #[test]
    fn outcome_independent_of_sampling_config() {
        let hourly = small(10, 5);
        let dense = Config {
            hours: 24,
            samples_per_hour: 4.0,
            ..hourly.clone()
        };
        for i in 0..10 {
            let (a, b) = (patient(&hourly, i), patient(&dense, i));
            assert_eq!(
                (a.age, a.male, a.height_cm, a.weight_kg),
                (b.age, b.male, b.height_cm, b.weight_kg)
            );
            assert_eq!(a.outcome.in_hospital_death, b.outcome.in_hospital_death);
        }
    }

    #[test]
    fn record_ids_start_at_base() {
        let config = Config {
            first_record_id: 500,
            ..small(3, 1)
        };
        let ids: Vec<u64> = generate(&config).map(|p| p.record_id).collect();
        assert_eq!(ids, [500, 501, 502]);
        assert_eq!(Config::default().first_record_id, 200_001);
    }

    #[test]
    fn text_matches_set_a_layout() {
        let p = patient(&small(1, 11), 0);
        let text = p.to_physionet_text();
        assert!(text.starts_with("Time,Parameter,Value\n00:00,RecordID,200001\n00:00,Age,"));
        assert_eq!(check_format(&text, 48, p.record_id), Ok(p.series.len()));
        let line = p.outcome_line();
        let outcome: Vec<&str> = line.split(',').collect();
        assert_eq!(outcome.len(), 6);
        assert_eq!(outcome[0], "200001");
    }

    #[test]
    fn outcome_fields_are_consistent() {
        for p in generate(&small(500, 2)) {
            let o = p.outcome;
            assert!(o.length_of_stay_days >= 2);
            if o.in_hospital_death {
                assert!((2..=o.length_of_stay_days).contains(&o.survival_days));
            } else {
                assert_eq!(o.survival_days, -1);
            }
            assert!((0..=34).contains(&o.saps1) && (0..=24).contains(&o.sofa));
        }
    }

    #[test]
    fn written_set_round_trips() {
        let dir = std::env::temp_dir().join(format!("witmed-cohort-{}", std::process::id()));
        let config = small(12, 9);
        let written = write_physionet_set(&dir, &config).unwrap();
        assert_eq!(written.patients, 12);
        let mut rows = 0;
        for p in generate(&config) {
            let text =
                fs::read_to_string(written.dir.join(format!("{}.txt", p.record_id))).unwrap();
            rows += check_format(&text, config.hours, p.record_id).unwrap() as u64;
        }
        assert_eq!(rows, written.time_series_rows);
        let outcomes = fs::read_to_string(&written.outcomes).unwrap();
        let mut lines = outcomes.lines();
        assert_eq!(lines.next(), Some(OUTCOMES_HEADER));
        assert_eq!(lines.count(), 12);
        assert_eq!(fs::read_dir(&written.dir).unwrap().count(), 12);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_rows_without_charting() {
        for (hours, rate) in [(0, 1.0), (48, 0.0), (48, f64::NAN), (48, -1.0)] {
            let config = Config {
                hours,
                samples_per_hour: rate,
                ..small(1, 4)
            };
            assert!(patient(&config, 0).series.is_empty());
        }
    }

    /// Marginals over 2,000 patients against set-a (tolerances well outside
    /// sampling error, tight enough to catch a miscalibrated distribution).
    #[test]
    fn marginals_match_set_a() {
        let config = small(2000, 2012);
        let mut stats = Stats::default();
        for p in generate(&config) {
            stats.add(&p);
        }
        let n = 2000.0;
        let hr = stats.patient_means(HR);
        let sao2 = stats.patient_means(SAO2);
        let temp = stats.patient_means(TEMP);
        let resp = stats.patient_means(RESP_RATE);
        let mortality = stats.deaths / n;
        let report = format!(
            "HR {hr:.1}, SaO2 {sao2:.2}, Temp {temp:.2}, RespRate {resp:.1}, GCS {:.2}, NISysABP {:.1}, \
             SysABP {:.1}, mortality {mortality:.3}, age {:.1}, male {:.3}, height missing {:.3}, \
             weight missing {:.3}, HR rows/patient {:.1}",
            stats.patient_means(GCS),
            stats.patient_means(NI_SYS_ABP),
            stats.patient_means(SYS_ABP),
            stats.age / n,
            stats.male / n,
            stats.height_missing / n,
            stats.weight_missing / n,
            stats.rows(HR) / n,
        );
        println!("{report}");
        assert!((80.0..=95.0).contains(&hr), "{report}");
        assert!((94.0..=99.0).contains(&sao2), "{report}");
        assert!((0.10..=0.18).contains(&mortality), "{report}");
        assert!((36.6..=37.2).contains(&temp), "{report}");
        assert!((17.5..=21.5).contains(&resp), "{report}");
        assert!((61.0..=67.0).contains(&(stats.age / n)), "{report}");
        assert!((0.52..=0.60).contains(&(stats.male / n)), "{report}");
        assert!(
            (0.42..=0.52).contains(&(stats.height_missing / n)),
            "{report}"
        );
        assert!(
            (0.05..=0.11).contains(&(stats.weight_missing / n)),
            "{report}"
        );
        assert!((44.0..=52.0).contains(&(stats.rows(HR) / n)), "{report}");
    }

    /// Running sums for the marginal checks.
    #[derive(Default)]
    struct Stats {
        /// Per parameter: (sum of per-patient means, patients, rows).
        params: std::collections::HashMap<&'static str, (f64, f64, f64)>,
        deaths: f64,
        age: f64,
        male: f64,
        height_missing: f64,
        weight_missing: f64,
    }

    impl Stats {
        fn add(&mut self, p: &Patient) {
            self.deaths += f64::from(u8::from(p.outcome.in_hospital_death));
            self.age += p.age;
            self.male += f64::from(u8::from(p.male));
            self.height_missing += f64::from(u8::from(p.height_cm.is_none()));
            self.weight_missing += f64::from(u8::from(p.weight_kg.is_none()));
            for name in FILE_ORDER {
                let values: Vec<f64> = p
                    .series
                    .iter()
                    .filter(|s| s.parameter == name)
                    .map(|s| s.value)
                    .collect();
                if !values.is_empty() {
                    let entry = self.params.entry(name).or_default();
                    entry.0 += values.iter().sum::<f64>() / values.len() as f64;
                    entry.1 += 1.0;
                    entry.2 += values.len() as f64;
                }
            }
        }

        fn patient_means(&self, name: &str) -> f64 {
            let (sum, patients, _) = self.params[name];
            sum / patients
        }

        fn rows(&self, name: &str) -> f64 {
            self.params[name].2
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any seed, index and window gives a well-formed file.
        #[test]
        fn any_patient_is_well_formed(
            seed in any::<u64>(),
            index in 0usize..10_000,
            hours in 0u32..100,
            rate in 0.05f64..8.0,
        ) {
            let config = Config { seed, hours, samples_per_hour: rate, ..Config::default() };
            let p = patient(&config, index);
            let rows = check_format(&p.to_physionet_text(), hours, p.record_id);
            prop_assert_eq!(rows, Ok(p.series.len()));
            prop_assert!((15.0..=90.0).contains(&p.age) && (1..=4).contains(&p.icu_type));
        }
    }
}
