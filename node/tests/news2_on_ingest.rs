//! NEWS2 on ingestion, against the score of every reading stored so far: the node keeps only each vital's newest readings per patient, and must raise exactly the alerts a full scan would, across late readings, ties, and a restart that empties its memory.

use std::collections::BTreeMap;

use witmed_care::news2::{self, SpO2Scale};
use witmed_care::Vital;
use witmed_crypto::{KeyPair, Role};
use witmed_node::ingest::{self, band_of, Settings};
use witmed_node::node::{self, Node};
use witmed_node::{devices, import};
use witmed_protocol::device_request::{Band, Reading};

/// A small deterministic generator (xorshift64*), so a failure can be replayed from its seed.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn between(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (low + unit * (high - low)).round()
    }
}

/// A plausible value of `vital`, in its canonical unit.
fn value(vital: Vital, draw: &mut Draw) -> f64 {
    match vital {
        Vital::RespiratoryRate => draw.between(7.0, 30.0),
        Vital::OxygenSaturationPulse | Vital::OxygenSaturationArterial => draw.between(85.0, 100.0),
        Vital::HeartRate => draw.between(38.0, 140.0),
        Vital::SystolicBloodPressure => draw.between(85.0, 230.0),
        Vital::BodyTemperature => draw.between(35.0, 39.0),
        Vital::InhaledOxygenConcentration => draw.between(21.0, 40.0),
        Vital::InhaledOxygenFlow => draw.between(0.0, 4.0),
        Vital::Consciousness => draw.below(2) as f64,
    }
}

/// What the test knows of one alert: time, score, band and each source's (code, seq).
type Seen = (i64, u8, Band, Vec<(String, u64)>);

/// The rule of `witmed_node::ingest`, applied to every reading stored so far.
struct Oracle {
    all: Vec<(u64, news2::Reading)>,
    last_at: Option<i64>,
    last_band: Option<Band>,
    window: u32,
}

impl Oracle {
    fn batch(&mut self, readings: &[(u64, news2::Reading)]) -> Vec<Seen> {
        let mut times: Vec<i64> = readings
            .iter()
            .map(|(_, r)| r.at)
            .filter(|t| self.last_at.is_none_or(|last| *t >= last))
            .collect();
        times.sort_unstable();
        times.dedup();
        self.all.extend_from_slice(readings);
        let care: Vec<news2::Reading> = self.all.iter().map(|(_, r)| *r).collect();
        let mut raised = Vec::new();
        for t in times {
            let Ok(set) = news2::fresh_set(&care, t, self.window) else {
                continue;
            };
            let score = news2::score(&set.observations, SpO2Scale::One);
            let band = band_of(score.band);
            if band >= Settings::default().alert_band
                && self.last_band.is_none_or(|before| band > before)
            {
                raised.push((t, score.total, band, self.sources(t, &score)));
            }
            self.last_band = Some(band);
            self.last_at = Some(t);
        }
        raised
    }

    /// Each scored parameter's newest reading in the window at `t` (ties: the highest seq).
    fn sources(&self, t: i64, score: &news2::Score) -> Vec<(String, u64)> {
        let since = t - i64::from(self.window);
        let mut out: Vec<(String, u64)> = score
            .sub_scores
            .each()
            .into_iter()
            .filter_map(|(parameter, _)| {
                self.all
                    .iter()
                    .filter(|(_, r)| {
                        news2::Parameter::of(r.vital) == parameter && (since..=t).contains(&r.at)
                    })
                    .max_by_key(|(seq, r)| (r.at, *seq))
                    .map(|(seq, r)| (r.vital.code().to_string(), *seq))
            })
            .collect();
        out.sort();
        out
    }
}

fn node_with_one_patient(dir: &std::path::Path, now: i64) -> (Node, witmed_crypto::Pseudonym) {
    node::init(dir, "General", vec![], now).unwrap();
    let node = Node::open(dir, now).unwrap();
    let text = b"Time,Parameter,Value\n00:00,RecordID,7\n00:00,Age,70\n00:00,Gender,1\n".to_vec();
    let options = import::Options {
        now,
        ..import::Options::default()
    };
    let sources = std::iter::once(Ok(("set/7.txt".to_string(), text)));
    import::import_physionet_sources(
        &node.store,
        node.pseudonyms(),
        1,
        sources,
        &BTreeMap::new(),
        &options,
    )
    .unwrap();
    let patient = node.pseudonyms().pseudonym(import::PHYSIONET, "7");
    (node, patient)
}

fn run(seed: u64) {
    let now = witmed_node::unix_now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let (mut node, patient) = node_with_one_patient(&dir, now);
    let device = KeyPair::from_seed(Role::Patient, &[9; 32]).public();
    devices::enrol(&node, device, patient, "bed", now).unwrap();
    let settings = Settings {
        window_seconds: 900,
        ..Settings::default()
    };
    let mut oracle = Oracle {
        all: Vec::new(),
        last_at: None,
        last_band: None,
        window: settings.window_seconds,
    };
    let mut draw = Draw(seed | 1);
    let (mut seq, mut clock) = (0u64, now - 150_000);
    let mut alerts = 0;
    for b in 0..80 {
        if b == 40 {
            // A restart: the node's memory of recent readings starts empty.
            drop(node);
            node = Node::open(&dir, now).unwrap();
        }
        let mut batch = Vec::new();
        for _ in 0..1 + draw.below(24) {
            seq += 1;
            let vital = Vital::ALL[draw.below(Vital::ALL.len() as u64) as usize];
            // Mostly forward, some ties, some late readings from a gateway's buffer.
            let time = match draw.below(10) {
                0 => clock - draw.below(1_200) as i64,
                1 | 2 => clock,
                _ => {
                    clock += draw.below(120) as i64;
                    clock
                }
            };
            batch.push(Reading {
                seq,
                time,
                code: vital.code().into(),
                value: value(vital, &mut draw),
                unit: vital.canonical_unit().into(),
            });
        }
        let receipt = ingest::ingest(&node, &device, &batch, &settings, now)
            .unwrap_or_else(|e| panic!("seed {seed} batch {b}: {e}"));
        let seen: Vec<Seen> = receipt
            .alerts
            .iter()
            .map(|a| {
                let mut sources: Vec<(String, u64)> =
                    a.sources.iter().map(|s| (s.code.clone(), s.seq)).collect();
                sources.sort();
                (a.at, a.score, a.band, sources)
            })
            .collect();
        let readings: Vec<(u64, news2::Reading)> = batch
            .iter()
            .map(|r| {
                let vital = Vital::from_code(&r.code).unwrap();
                (
                    r.seq,
                    news2::Reading {
                        vital,
                        at: r.time,
                        value: r.value,
                    },
                )
            })
            .collect();
        assert_eq!(seen, oracle.batch(&readings), "seed {seed} batch {b}");
        // And where scoring stands, so a divergence shows where it starts.
        let state = devices::state(&node, &patient).unwrap();
        assert_eq!(
            (state.last_at, state.last_band),
            (oracle.last_at, oracle.last_band),
            "seed {seed} batch {b}: the patient's state"
        );
        alerts += seen.len();
    }
    assert!(
        alerts > 0,
        "seed {seed}: no alert at all, so nothing was compared"
    );
}

#[test]
fn alerts_equal_those_of_a_full_scan_across_late_readings_ties_and_a_restart() {
    for seed in [1, 7, 42, 99, 2_024, 31_337, 1_234_567, 987_654_321] {
        run(seed);
    }
}
