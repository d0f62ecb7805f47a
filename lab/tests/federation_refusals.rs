//! Misbehaving peers against real nodes: forged, replayed, relayed and oversized requests,
//! answers signed by a non-member, a peer opening many connections. Every one is refused
//! and the node keeps answering honest researchers.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use witmed_crypto::{Envelope, KeyPair, Role};
use witmed_net::client::{self, Status, Target};
use witmed_net::codec::Codec;
use witmed_protocol::query::Query;
use witmed_protocol::wire::{QueryRequest, WIRE_VERSION};
use witmed_simnet::cluster::{self, Cluster};

const TIMEOUT: Duration = Duration::from_secs(8);

struct World {
    _tmp: tempfile::TempDir,
    cluster: Cluster,
    targets: Vec<Target>,
    researcher: KeyPair,
    credential: Envelope,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let records: Vec<PathBuf> = physionet_files(&set_a()).into_iter().take(60).collect();
    let options = cluster_options(tmp.path());
    let mut cluster = Cluster::build(&options, &cluster::split(&records, 2)).unwrap();
    cluster.start_all().unwrap();
    let authority = cluster.consortium_authority.parse().unwrap();
    let (dir, _) = client::load_directory(&cluster.directory, Some(authority)).unwrap();
    let targets = client::targets(&dir).unwrap();
    let researcher = KeyPair::load_role(&cluster.researcher_key, Role::Researcher).unwrap();
    let credential =
        witmed_policies::parse_signed(&std::fs::read_to_string(&cluster.credential).unwrap())
            .unwrap();
    World {
        _tmp: tmp,
        cluster,
        targets,
        researcher,
        credential,
    }
}

fn query(id: &str) -> Query {
    Query::from_toml(&witmed_protocol::examples::count(id, "HMB", 0.5)).unwrap()
}

fn request(w: &World, id: &str) -> QueryRequest {
    let mut nonce = [0u8; 16];
    witmed_crypto::fill_random(&mut nonce).unwrap();
    QueryRequest {
        version: WIRE_VERSION,
        query: query(id),
        credential: w.credential.to_bytes(),
        nonce,
        issued_at: witmed_node::unix_now(),
    }
}

async fn send(
    w: &World,
    as_peer: &KeyPair,
    envelope: &Envelope,
    digest: [u8; 32],
    codec: Codec,
) -> Vec<Status> {
    client::ask_signed(as_peer, envelope, digest, &w.targets, TIMEOUT, codec)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.status)
        .collect()
}

fn refused_with(statuses: &[Status], expected: &str) {
    for s in statuses {
        match s {
            Status::Refused { code, .. } if code == expected => {}
            other => panic!("expected refusal [{expected}], got {other:?}"),
        }
    }
}

/// An honest query still gets answers from every node.
async fn honest_query_is_answered(w: &World, id: &str) {
    let r = request(w, id);
    let results = client::ask(&w.researcher, &r, &w.targets, TIMEOUT)
        .await
        .unwrap();
    for result in results {
        assert!(
            matches!(result.status, Status::Answered(_)),
            "{}: {:?}",
            result.name,
            result.status
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_relayed_queries_are_refused() {
    let w = world();
    let r = request(&w, "forged");
    let mut forged = r.sign(&w.researcher);
    let last = forged.payload.len() - 1;
    forged.payload[last] ^= 1;
    refused_with(
        &send(
            &w,
            &w.researcher,
            &forged,
            r.query.digest(),
            Codec::default(),
        )
        .await,
        "bad_request",
    );

    let r = request(&w, "replay");
    let signed = r.sign(&w.researcher);
    let first = send(
        &w,
        &w.researcher,
        &signed,
        r.query.digest(),
        Codec::default(),
    )
    .await;
    assert!(
        first.iter().all(|s| matches!(s, Status::Answered(_))),
        "{first:?}"
    );
    refused_with(
        &send(
            &w,
            &w.researcher,
            &signed,
            r.query.digest(),
            Codec::default(),
        )
        .await,
        "replayed",
    );

    // The same signed query relayed by another peer (who holds no researcher key of its own).
    let eve = KeyPair::generate(Role::Researcher).unwrap();
    let r = request(&w, "relayed");
    let signed = r.sign(&w.researcher);
    refused_with(
        &send(&w, &eve, &signed, r.query.digest(), Codec::default()).await,
        "signer_not_peer",
    );

    // A researcher without a credential the nodes trust.
    let rogue_authority = KeyPair::generate(Role::Authority).unwrap();
    let now = witmed_node::unix_now();
    let mut r = request(&w, "uncredentialed");
    r.credential =
        witmed_lab::setup::credential(&rogue_authority, w.researcher.public(), &["HMB"], now)
            .to_bytes();
    let statuses = send(
        &w,
        &w.researcher,
        &r.sign(&w.researcher),
        r.query.digest(),
        Codec::default(),
    )
    .await;
    refused_with(&statuses, "credential_refused");

    honest_query_is_answered(&w, "after-refusals").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_signed_by_a_non_member_is_rejected() {
    let mut w = world();
    let impostor = KeyPair::generate(Role::Node).unwrap();
    w.targets[0].signing_key = impostor.public();
    let r = request(&w, "non-member");
    let results = client::ask(&w.researcher, &r, &w.targets, TIMEOUT)
        .await
        .unwrap();
    assert!(
        matches!(&results[0].status, Status::Invalid(reason) if reason.contains("not Hospital-1's key in the directory")),
        "{:?}",
        results[0]
    );
    assert!(matches!(results[1].status, Status::Answered(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_cut_off_and_the_node_keeps_serving() {
    let w = world();
    let mut r = request(&w, "oversized");
    r.credential = vec![7; 100 * 1024];
    let signed = r.sign(&w.researcher);
    assert!(signed.to_bytes().len() > witmed_protocol::wire::MAX_REQUEST_BYTES);
    // The client's own limit is raised so the request is sent; the node's is not.
    let big = Codec {
        max_request: 1 << 20,
        max_response: 1 << 20,
    };
    let statuses = send(&w, &w.researcher, &signed, r.query.digest(), big).await;
    for s in &statuses {
        assert!(
            matches!(s, Status::Unreachable(_) | Status::TimedOut),
            "oversized request got {s:?}"
        );
    }
    honest_query_is_answered(&w, "after-oversized").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_opening_many_connections_is_limited() {
    let w = world();
    let flooder = KeyPair::generate(Role::Researcher).unwrap();
    let mut swarm =
        libp2p::SwarmBuilder::with_existing_identity(witmed_net::libp2p_keypair(&flooder))
            .with_tokio()
            .with_tcp(
                Default::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p::swarm::dummy::Behaviour)
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
            .build();
    let target = &w.targets[0];
    for _ in 0..16 {
        let opts = DialOpts::peer_id(target.peer)
            .condition(PeerCondition::Always)
            .addresses(target.addresses.clone())
            .build();
        swarm.dial(opts).unwrap();
    }
    let (mut established, mut closed_or_failed) = (0i32, 0);
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { .. } => established += 1,
                SwarmEvent::ConnectionClosed { .. } => { established -= 1; closed_or_failed += 1 }
                SwarmEvent::OutgoingConnectionError { .. } => closed_or_failed += 1,
                _ => {}
            }
        }
    }
    assert!(
        established <= 2,
        "{established} connections stayed open; the per-peer limit is 2"
    );
    assert!(
        closed_or_failed >= 14,
        "only {closed_or_failed} of 16 extra connections were refused"
    );
    honest_query_is_answered(&w, "after-flood").await;
    drop(w.cluster);
}
