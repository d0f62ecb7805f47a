//! The National Early Warning Score 2 (Royal College of Physicians, 2017), exactly as its Chart 1,
//! and the fresh-set rule that decides when a patient has a score at all.
//!
//! Chart 1 (score 3 2 1 0 1 2 3):
//!
//! | parameter | 3 | 2 | 1 | 0 | 1 | 2 | 3 |
//! |---|---|---|---|---|---|---|---|
//! | respiration rate /min | ≤8 | | 9–11 | 12–20 | | 21–24 | ≥25 |
//! | SpO2 scale 1 % | ≤91 | 92–93 | 94–95 | ≥96 | | | |
//! | SpO2 scale 2 % | ≤83 | 84–85 | 86–87 | 88–92, ≥93 on air | 93–94 on oxygen | 95–96 on oxygen | ≥97 on oxygen |
//! | air or oxygen | | oxygen | | air | | | |
//! | systolic BP mmHg | ≤90 | 91–100 | 101–110 | 111–219 | | | ≥220 |
//! | pulse /min | ≤40 | | 41–50 | 51–90 | 91–110 | 111–130 | ≥131 |
//! | consciousness | | | | alert | | | CVPU |
//! | temperature °C | ≤35.0 | | 35.1–36.0 | 36.1–38.0 | 38.1–39.0 | ≥39.1 | |
//!
//! The chart is written in whole numbers (temperature in tenths); a measured value is first
//! rounded half away from zero to that resolution (a pulse of 90.5 is 91), as a bedside
//! observer reads a monitor. Scale 2 is for patients whom staff flag as having hypercapnic
//! respiratory failure (target saturation 88–92 %); everyone else is on scale 1.
//!
//! Clinical response bands: aggregate 0; low 1–4; low-medium when any single parameter scores 3
//! (with an aggregate below 5); medium 5–6; high 7 or more.

use serde::{Deserialize, Serialize};

use crate::vitals::{Acvpu, Vital};

/// The seven NEWS2 parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Parameter {
    RespirationRate,
    OxygenSaturation,
    AirOrOxygen,
    SystolicBloodPressure,
    Pulse,
    Consciousness,
    Temperature,
}

impl Parameter {
    /// The seven, in chart order.
    pub const ALL: [Parameter; 7] = [
        Parameter::RespirationRate,
        Parameter::OxygenSaturation,
        Parameter::AirOrOxygen,
        Parameter::SystolicBloodPressure,
        Parameter::Pulse,
        Parameter::Consciousness,
        Parameter::Temperature,
    ];

    /// The parameter a vital sign's readings feed.
    pub fn of(vital: Vital) -> Parameter {
        match vital {
            Vital::RespiratoryRate => Parameter::RespirationRate,
            Vital::OxygenSaturationPulse | Vital::OxygenSaturationArterial => {
                Parameter::OxygenSaturation
            }
            Vital::InhaledOxygenConcentration | Vital::InhaledOxygenFlow => Parameter::AirOrOxygen,
            Vital::SystolicBloodPressure => Parameter::SystolicBloodPressure,
            Vital::HeartRate => Parameter::Pulse,
            Vital::Consciousness => Parameter::Consciousness,
            Vital::BodyTemperature => Parameter::Temperature,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Whether the patient breathes room air or receives supplemental oxygen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Oxygen {
    Air,
    Supplemental,
}

/// Which SpO2 row of the chart applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpO2Scale {
    /// Everyone not flagged: target 94–98 %.
    #[default]
    One,
    /// Hypercapnic respiratory failure, flagged by staff: target 88–92 %.
    Two,
}

/// One complete set of the seven parameters, in canonical units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Observations {
    /// Breaths per minute.
    pub respiration_rate: f64,
    /// Percent.
    pub spo2: f64,
    pub oxygen: Oxygen,
    /// mm[Hg].
    pub systolic_bp: f64,
    /// Beats per minute.
    pub pulse: f64,
    pub consciousness: Acvpu,
    /// Degrees Celsius.
    pub temperature: f64,
}

/// Each parameter's sub-score (0..=3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubScores {
    pub respiration_rate: u8,
    pub oxygen_saturation: u8,
    pub air_or_oxygen: u8,
    pub systolic_blood_pressure: u8,
    pub pulse: u8,
    pub consciousness: u8,
    pub temperature: u8,
}

impl SubScores {
    /// The sub-scores in chart order, with their parameters.
    pub fn each(&self) -> [(Parameter, u8); 7] {
        [
            (Parameter::RespirationRate, self.respiration_rate),
            (Parameter::OxygenSaturation, self.oxygen_saturation),
            (Parameter::AirOrOxygen, self.air_or_oxygen),
            (
                Parameter::SystolicBloodPressure,
                self.systolic_blood_pressure,
            ),
            (Parameter::Pulse, self.pulse),
            (Parameter::Consciousness, self.consciousness),
            (Parameter::Temperature, self.temperature),
        ]
    }

    /// The aggregate score (at most 20, so no overflow).
    pub fn total(&self) -> u8 {
        self.each().iter().map(|(_, s)| s).sum()
    }
}

/// The clinical response band, ordered by urgency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Band {
    /// Aggregate 0: routine monitoring.
    Zero,
    /// Aggregate 1–4: low; ward-based response.
    Low,
    /// Aggregate below 5 with a 3 in any single parameter: low-medium; urgent ward-based response.
    LowMedium,
    /// Aggregate 5–6: medium; key threshold for urgent response.
    Medium,
    /// Aggregate 7 or more: high; urgent or emergency response.
    High,
}

impl Band {
    /// The band of an aggregate score, given whether any single parameter scored 3.
    pub fn of(total: u8, any_single_three: bool) -> Band {
        match total {
            7.. => Band::High,
            5..=6 => Band::Medium,
            _ if any_single_three => Band::LowMedium,
            1..=4 => Band::Low,
            0 => Band::Zero,
        }
    }

    /// The RCP's clinical response for the band.
    pub fn clinical_response(self) -> &'static str {
        match self {
            Band::Zero => "continue routine NEWS monitoring (minimum every 12 hours)",
            Band::Low => "registered nurse to assess; monitoring at least every 4-6 hours",
            Band::LowMedium => {
                "urgent ward-based response: registered nurse to inform a clinician, who assesses and decides whether to escalate"
            }
            Band::Medium => {
                "urgent response: inform the medical team at once, urgent assessment by a clinician competent in acute illness; monitoring at least hourly"
            }
            Band::High => {
                "emergency response: inform the medical team at once (registrar or above), emergency assessment by a critical-care competent team; continuous monitoring"
            }
        }
    }
}

/// A NEWS2 score: the aggregate, each parameter's sub-score, the band and the SpO2 scale used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    pub total: u8,
    pub sub_scores: SubScores,
    pub band: Band,
    pub scale: SpO2Scale,
}

/// Scores one complete set of observations on the given SpO2 scale.
pub fn score(observations: &Observations, scale: SpO2Scale) -> Score {
    let o = observations;
    let sub_scores = SubScores {
        respiration_rate: respiration_rate_score(o.respiration_rate),
        oxygen_saturation: match scale {
            SpO2Scale::One => spo2_scale1_score(o.spo2),
            SpO2Scale::Two => spo2_scale2_score(o.spo2, o.oxygen),
        },
        air_or_oxygen: air_or_oxygen_score(o.oxygen),
        systolic_blood_pressure: systolic_bp_score(o.systolic_bp),
        pulse: pulse_score(o.pulse),
        consciousness: consciousness_score(o.consciousness),
        temperature: temperature_score(o.temperature),
    };
    let total = sub_scores.total();
    let any_single_three = sub_scores.each().iter().any(|(_, s)| *s == 3);
    Score {
        total,
        sub_scores,
        band: Band::of(total, any_single_three),
        scale,
    }
}

/// A value rounded half away from zero to a whole number, saturating; NaN becomes 0 (which scores
/// 3 on every numeric row: a reading nobody can read is treated as alarming, never as normal).
fn whole(value: f64) -> i64 {
    value.round() as i64
}

/// A temperature in whole tenths of a degree, rounded half away from zero, saturating.
fn tenths(value: f64) -> i64 {
    (value * 10.0).round() as i64
}

/// Respiration rate per minute: ≤8 → 3; 9–11 → 1; 12–20 → 0; 21–24 → 2; ≥25 → 3.
pub fn respiration_rate_score(per_minute: f64) -> u8 {
    match whole(per_minute) {
        ..=8 => 3,
        9..=11 => 1,
        12..=20 => 0,
        21..=24 => 2,
        25.. => 3,
    }
}

/// SpO2 scale 1 (%): ≤91 → 3; 92–93 → 2; 94–95 → 1; ≥96 → 0.
pub fn spo2_scale1_score(percent: f64) -> u8 {
    match whole(percent) {
        ..=91 => 3,
        92..=93 => 2,
        94..=95 => 1,
        96.. => 0,
    }
}

/// SpO2 scale 2 (%): ≤83 → 3; 84–85 → 2; 86–87 → 1; 88–92 → 0; ≥93 on air → 0;
/// on oxygen 93–94 → 1, 95–96 → 2, ≥97 → 3.
pub fn spo2_scale2_score(percent: f64, oxygen: Oxygen) -> u8 {
    match (whole(percent), oxygen) {
        (..=83, _) => 3,
        (84..=85, _) => 2,
        (86..=87, _) => 1,
        (88..=92, _) => 0,
        (93.., Oxygen::Air) => 0,
        (93..=94, Oxygen::Supplemental) => 1,
        (95..=96, Oxygen::Supplemental) => 2,
        (97.., Oxygen::Supplemental) => 3,
    }
}

/// Air → 0; supplemental oxygen → 2.
pub fn air_or_oxygen_score(oxygen: Oxygen) -> u8 {
    match oxygen {
        Oxygen::Air => 0,
        Oxygen::Supplemental => 2,
    }
}

/// Systolic blood pressure (mmHg): ≤90 → 3; 91–100 → 2; 101–110 → 1; 111–219 → 0; ≥220 → 3.
pub fn systolic_bp_score(mm_hg: f64) -> u8 {
    match whole(mm_hg) {
        ..=90 => 3,
        91..=100 => 2,
        101..=110 => 1,
        111..=219 => 0,
        220.. => 3,
    }
}

/// Pulse per minute: ≤40 → 3; 41–50 → 1; 51–90 → 0; 91–110 → 1; 111–130 → 2; ≥131 → 3.
pub fn pulse_score(per_minute: f64) -> u8 {
    match whole(per_minute) {
        ..=40 => 3,
        41..=50 => 1,
        51..=90 => 0,
        91..=110 => 1,
        111..=130 => 2,
        131.. => 3,
    }
}

/// Alert → 0; new confusion, voice, pain or unresponsive → 3.
pub fn consciousness_score(level: Acvpu) -> u8 {
    match level {
        Acvpu::Alert => 0,
        Acvpu::NewConfusion | Acvpu::Voice | Acvpu::Pain | Acvpu::Unresponsive => 3,
    }
}

/// Temperature (°C): ≤35.0 → 3; 35.1–36.0 → 1; 36.1–38.0 → 0; 38.1–39.0 → 1; ≥39.1 → 2.
pub fn temperature_score(celsius: f64) -> u8 {
    match tenths(celsius) {
        ..=350 => 3,
        351..=360 => 1,
        361..=380 => 0,
        381..=390 => 1,
        391.. => 2,
    }
}

/// One time-stamped reading of a vital sign, in its canonical unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub vital: Vital,
    /// Seconds since any fixed epoch (the caller's clock; the node uses Unix seconds).
    pub at: i64,
    pub value: f64,
}

/// The newest complete set of the seven parameters inside the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FreshSet {
    pub observations: Observations,
    /// The time of the oldest reading in the set (the set is as fresh as this).
    pub oldest: i64,
    /// The time of the newest reading in the set.
    pub newest: i64,
}

/// The parameters with no usable reading in the window (in chart order, never empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("no fresh NEWS2 set: no reading of {}", self.names())]
pub struct Missing {
    pub parameters: Vec<Parameter>,
}

impl Missing {
    fn names(&self) -> String {
        let names: Vec<String> = self
            .parameters
            .iter()
            .map(|p| format!("{p:?}").to_lowercase())
            .collect();
        names.join(", ")
    }
}

/// The newest usable reading of each parameter, fed in time order.
#[derive(Debug, Clone, Default)]
struct Latest {
    /// Per parameter (chart order): the time and the value (oxygen: 1.0 supplemental, 0.0 air;
    /// consciousness: the ACVPU ordinal).
    slots: [Option<(i64, f64)>; 7],
}

impl Latest {
    /// Takes a reading if it is usable and not older than what the slot holds. At equal times the
    /// reading that scores worse wins, so duplicates never hide an alarming value.
    fn feed(&mut self, reading: &Reading) {
        let Some(value) = usable_value(reading) else {
            return;
        };
        let parameter = Parameter::of(reading.vital);
        let slot = &mut self.slots[parameter.index()];
        let replace = match *slot {
            None => true,
            Some((at, held)) if at == reading.at => {
                sub_score_of(parameter, value) > sub_score_of(parameter, held)
            }
            Some((at, _)) => reading.at > at,
        };
        if replace {
            *slot = Some((reading.at, value));
        }
    }

    /// The set, if every parameter's newest reading is at or after `since`; else what is missing.
    fn complete_since(&self, since: i64) -> Result<FreshSet, Missing> {
        let missing: Vec<Parameter> = Parameter::ALL
            .into_iter()
            .filter(|p| !matches!(self.slots[p.index()], Some((at, _)) if at >= since))
            .collect();
        if !missing.is_empty() {
            return Err(Missing {
                parameters: missing,
            });
        }
        let value = |p: Parameter| self.slots[p.index()].map_or(0.0, |(_, v)| v);
        let times = self.slots.iter().flatten().map(|(at, _)| *at);
        let observations = Observations {
            respiration_rate: value(Parameter::RespirationRate),
            spo2: value(Parameter::OxygenSaturation),
            oxygen: oxygen_of(value(Parameter::AirOrOxygen)),
            systolic_bp: value(Parameter::SystolicBloodPressure),
            pulse: value(Parameter::Pulse),
            consciousness: Acvpu::from_value(value(Parameter::Consciousness))
                .unwrap_or(Acvpu::Unresponsive),
            temperature: value(Parameter::Temperature),
        };
        Ok(FreshSet {
            observations,
            oldest: times.clone().min().unwrap_or(since),
            newest: times.max().unwrap_or(since),
        })
    }
}

fn oxygen_of(flag: f64) -> Oxygen {
    if flag > 0.0 {
        Oxygen::Supplemental
    } else {
        Oxygen::Air
    }
}

/// The slot value of a reading, or `None` for one no chart row can read (not finite, or a
/// consciousness value that is not an ACVPU ordinal). Oxygen: FiO2 above 21 % or any flow is
/// supplemental.
fn usable_value(reading: &Reading) -> Option<f64> {
    let value = reading.value;
    if !value.is_finite() {
        return None;
    }
    match reading.vital {
        Vital::InhaledOxygenConcentration => Some(if value > 21.0 { 1.0 } else { 0.0 }),
        Vital::InhaledOxygenFlow => Some(if value > 0.0 { 1.0 } else { 0.0 }),
        Vital::Consciousness => Acvpu::from_value(value).map(|_| value),
        _ => Some(value),
    }
}

/// A parameter's sub-score for a slot value on scale 1 (used only to break ties between
/// readings at the same time; scale 1 and 2 agree on which of two saturations is worse below 93).
fn sub_score_of(parameter: Parameter, value: f64) -> u8 {
    match parameter {
        Parameter::RespirationRate => respiration_rate_score(value),
        Parameter::OxygenSaturation => spo2_scale1_score(value),
        Parameter::AirOrOxygen => air_or_oxygen_score(oxygen_of(value)),
        Parameter::SystolicBloodPressure => systolic_bp_score(value),
        Parameter::Pulse => pulse_score(value),
        Parameter::Consciousness => {
            consciousness_score(Acvpu::from_value(value).unwrap_or(Acvpu::Unresponsive))
        }
        Parameter::Temperature => temperature_score(value),
    }
}

/// The oldest reading time that still counts at `now` for a window of `window_seconds`.
fn window_start(now: i64, window_seconds: u32) -> i64 {
    now.saturating_sub(i64::from(window_seconds))
}

/// The newest complete set of the seven parameters among readings taken within `window_seconds`
/// before `now` (both ends included; readings after `now` are ignored), or which are missing.
///
/// Each parameter takes its newest reading; SpO2 may come from pulse oximetry or arterial blood,
/// air-or-oxygen from the inhaled oxygen concentration (above 21 % is oxygen) or flow (above 0).
pub fn fresh_set(readings: &[Reading], now: i64, window_seconds: u32) -> Result<FreshSet, Missing> {
    let since = window_start(now, window_seconds);
    let mut latest = Latest::default();
    for reading in readings.iter().filter(|r| r.at >= since && r.at <= now) {
        latest.feed(reading);
    }
    latest.complete_since(since)
}

/// A patient's NEWS2 over time: at every distinct reading time where a fresh set exists, the
/// score of the newest set. Readings need not be sorted. O(n log n).
pub fn series(readings: &[Reading], window_seconds: u32, scale: SpO2Scale) -> Vec<(i64, Score)> {
    let mut sorted: Vec<&Reading> = readings.iter().collect();
    sorted.sort_by_key(|r| r.at);
    let mut latest = Latest::default();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let at = sorted[i].at;
        while i < sorted.len() && sorted[i].at == at {
            latest.feed(sorted[i]);
            i += 1;
        }
        if let Ok(set) = latest.complete_since(window_start(at, window_seconds)) {
            out.push((at, score(&set.observations, scale)));
        }
    }
    out
}

/// How a patient's score moved between two successive scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trend {
    Rising,
    Steady,
    Falling,
}

impl Trend {
    /// The trend from the previous aggregate to the latest.
    pub fn between(previous: u8, latest: u8) -> Trend {
        match latest.cmp(&previous) {
            std::cmp::Ordering::Greater => Trend::Rising,
            std::cmp::Ordering::Equal => Trend::Steady,
            std::cmp::Ordering::Less => Trend::Falling,
        }
    }
}
