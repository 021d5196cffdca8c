//! A hostile peer publishes forged and malformed records; the node refuses, counts and
//! reports them, and its view stays clean.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt as _;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Swarm};
use swarm_core::bounded::BoundedVec;
use swarm_core::codec;
use swarm_core::identity::{SignedTunnelRecord, TunnelPublicKey, TunnelRecord};
use swarm_core::record::{Namespace, NodeRecord, MAX_RECORD_SIZE};
use swarm_core::time::UnixMillis;
use swarm_net::NodeEvent;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn record(author: &Keypair, tunnel_signer: &Keypair, tunnel_peer: &Keypair, seq: u64) -> NodeRecord {
    let tunnel = TunnelRecord {
        peer_id: tunnel_peer.public().to_peer_id(),
        tunnel_pubkey: TunnelPublicKey::from_secret(&[9; 32]),
        udp_endpoints: BoundedVec::try_from_vec(vec!["127.0.0.1:9".parse().unwrap()]).unwrap(),
        issued_at: UnixMillis(now_ms()),
    };
    // Signing for another peer is refused by `sign`, so forge the signature by hand.
    let body = codec::encode(&tunnel, 512).unwrap();
    let mut input = b"swarm/tunnel-record/v1:".to_vec();
    input.extend_from_slice(&body);
    let signature = tunnel_signer.sign(&input).unwrap();
    NodeRecord {
        peer_id: author.public().to_peer_id(),
        namespace: Namespace::new("hostile").unwrap(),
        seq,
        timestamp: UnixMillis(now_ms()),
        refresh_ms: 5000,
        gpus: Default::default(),
        cpu_cores: 1,
        memory_bytes: 1,
        labels: BoundedVec::new(),
        tunnel: SignedTunnelRecord::from_parts(&body, &signature).unwrap(),
        extensions: BoundedVec::new(),
    }
}

fn attacker(key: &Keypair) -> Swarm<gossipsub::Behaviour> {
    libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|k| {
            gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(k.clone()),
                gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_millis(200))
                    .build()
                    .unwrap(),
            )
            .unwrap()
        })
        .unwrap()
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_records_are_rejected_and_counted() {
    let (node, mut events) = start(builder("hostile")).await;
    let addr = first_addr(&node).await;

    let mallory = Keypair::generate_ed25519();
    let alice = Keypair::generate_ed25519();
    let mut swarm = attacker(&mallory);
    let topic = IdentTopic::new(Namespace::new("hostile").unwrap().records_topic());
    swarm.behaviour_mut().subscribe(&topic).unwrap();
    swarm.dial(addr).unwrap();
    // Wait until the node has subscribed in our eyes, so publishing reaches it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, swarm.select_next_some()).await.expect("node subscribes");
        if let SwarmEvent::Behaviour(gossipsub::Event::Subscribed { .. }) = ev {
            break;
        }
    }

    let forged_tunnel = record(&mallory, &mallory, &alice, 1); // Alice's tunnel record, signed by Mallory
    let wrong_author = record(&alice, &alice, &alice, 2); // published by Mallory, claims Alice
    let mut wrong_namespace = record(&mallory, &mallory, &mallory, 3);
    wrong_namespace.namespace = Namespace::new("elsewhere").unwrap();
    let mut payloads = vec![
        codec::encode(&forged_tunnel, MAX_RECORD_SIZE).unwrap(),
        codec::encode(&wrong_author, MAX_RECORD_SIZE).unwrap(),
        codec::encode(&wrong_namespace, MAX_RECORD_SIZE).unwrap(),
        vec![0x01, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], // length bomb
        vec![0x01, 0x09, 0, 0],                                                 // unknown version
        b"hello".to_vec(),                                                      // garbage
    ];
    let expected = payloads.len() as u64;
    for p in payloads.drain(..) {
        swarm.behaviour_mut().publish(topic.clone(), p).unwrap();
    }
    // A good record from Mallory's own identity, after the bad ones, still gets in:
    // rejection is per message.
    let good = record(&mallory, &mallory, &mallory, 10);
    swarm.behaviour_mut().publish(topic.clone(), codec::encode(&good, MAX_RECORD_SIZE).unwrap()).unwrap();

    let drive = async {
        loop {
            swarm.select_next_some().await;
        }
    };
    let check = async {
        let ok = eventually(Duration::from_secs(10), || async {
            let stats = node.stats().await.unwrap();
            stats.gossip.rejected_total() >= expected && stats.records == 2
        })
        .await;
        assert!(ok, "all bad records counted: {:?}", node.stats().await.unwrap().gossip);
    };
    tokio::select! {
        _ = drive => unreachable!(),
        _ = check => {}
    }

    let stats = node.stats().await.unwrap();
    let rejected = &stats.gossip.rejected;
    assert_eq!(rejected.get("bad_tunnel_record"), Some(&1), "{rejected:?}");
    assert_eq!(rejected.get("wrong_author"), Some(&1), "{rejected:?}");
    assert_eq!(rejected.get("wrong_namespace"), Some(&1), "{rejected:?}");
    assert_eq!(rejected.get("malformed"), Some(&3), "{rejected:?}");
    let view = node.cluster().await.unwrap();
    assert!(view.get(&alice.public().to_peer_id()).is_none(), "forged identity never enters the view");
    assert!(view.get(&mallory.public().to_peer_id()).is_some(), "a later valid record is accepted");

    let mut reasons = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), events.next()).await {
        if let NodeEvent::RecordRejected { from, reason } = e {
            assert_eq!(from, mallory.public().to_peer_id());
            reasons.push(reason);
        }
    }
    assert_eq!(reasons.len() as u64, expected, "{reasons:?}");
    node.shutdown().await;
}
