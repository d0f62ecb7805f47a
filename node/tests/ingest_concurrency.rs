//! Device batches stored side by side: many devices of many patients, and the same batches sent twice at once, lose nothing and store nothing twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use witmed_crypto::{KeyPair, Pseudonym, Role};
use witmed_node::ingest::{self, Settings};
use witmed_node::node::{self, Node};
use witmed_node::store::cf;
use witmed_node::{devices, import};
use witmed_protocol::device_request::Reading;

const PATIENTS: u32 = 12;
/// Devices per patient: two devices of one patient share its lock stripe and its state.
const DEVICES_PER_PATIENT: u32 = 2;
const BATCHES: u64 = 20;
const PER_BATCH: u64 = 5;

struct World {
    _tmp: tempfile::TempDir,
    node: Arc<Node>,
    patients: Vec<Pseudonym>,
}

fn world(now: i64) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    node::init(&dir, "General", vec![], now).unwrap();
    let node = Node::open(&dir, now).unwrap();
    let ids: Vec<u32> = (0..PATIENTS).map(|i| 150_000 + i).collect();
    let sources = ids.iter().map(|id| {
        Ok((
            format!("set/{id}.txt"),
            format!("Time,Parameter,Value\n00:00,RecordID,{id}\n00:00,Age,70\n00:00,Gender,1\n")
                .into_bytes(),
        ))
    });
    let options = import::Options {
        now,
        ..import::Options::default()
    };
    import::import_physionet_sources(
        &node.store,
        node.pseudonyms(),
        ids.len(),
        sources,
        &BTreeMap::new(),
        &options,
    )
    .unwrap();
    let patients = ids
        .iter()
        .map(|id| {
            node.pseudonyms()
                .pseudonym(import::PHYSIONET, &id.to_string())
        })
        .collect();
    World {
        _tmp: tmp,
        node: Arc::new(node),
        patients,
    }
}

/// Batch `b` of a device: heart rates with sequence numbers `b * PER_BATCH + 1 ..`.
fn batch(b: u64, now: i64) -> Vec<Reading> {
    (0..PER_BATCH)
        .map(|i| {
            let seq = b * PER_BATCH + i + 1;
            Reading {
                seq,
                time: now - 3_000 + seq as i64,
                code: "8867-4".into(),
                value: 60.0 + (seq % 40) as f64,
                unit: "/min".into(),
            }
        })
        .collect()
}

/// Every device sends its batches in order from two threads at once (each
/// batch twice): exactly one copy of each batch is stored, the other is
/// refused as a replay, and each device's last sequence number is its last.
#[test]
fn concurrent_batches_of_many_devices_are_each_stored_exactly_once() {
    let now = witmed_node::unix_now();
    let w = world(now);
    let mut devices_of = Vec::new();
    for (p, patient) in w.patients.iter().enumerate() {
        for d in 0..DEVICES_PER_PATIENT {
            let key = KeyPair::from_seed(Role::Patient, &[(p as u32 * 8 + d + 1) as u8; 32]);
            devices::enrol(&w.node, key.public(), *patient, "bed", now).unwrap();
            devices_of.push((*patient, key.public()));
        }
    }
    let observations_before = w.node.store.count(cf::OBSERVATIONS).unwrap();
    let threads: Vec<_> = devices_of
        .iter()
        .flat_map(|(_, device)| [*device, *device])
        .map(|device| {
            let node = w.node.clone();
            std::thread::spawn(move || {
                let mut stored = 0u64;
                for b in 0..BATCHES {
                    match ingest::ingest(&node, &device, &batch(b, now), &Settings::default(), now)
                    {
                        Ok(receipt) => stored += receipt.stored as u64,
                        // The twin thread stored this batch first.
                        Err(e) => assert!(e.to_string().contains("seq"), "{e}"),
                    }
                }
                stored
            })
        })
        .collect();
    let stored: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let per_device = BATCHES * PER_BATCH;
    let devices = devices_of.len() as u64;
    assert_eq!(stored, devices * per_device, "receipts");
    assert_eq!(
        w.node.store.count(cf::OBSERVATIONS).unwrap(),
        observations_before + devices * per_device,
        "observations"
    );
    for (patient, device) in &devices_of {
        let record = devices::find(&w.node, device).unwrap().unwrap();
        assert_eq!(record.last_seq, Some(per_device));
        let log = devices::readings_between(&w.node, patient, i64::MIN, i64::MAX, 100_000).unwrap();
        assert_eq!(
            log.len() as u64,
            DEVICES_PER_PATIENT as u64 * per_device,
            "the device log of each patient"
        );
    }
}
