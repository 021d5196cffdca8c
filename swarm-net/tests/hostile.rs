//! A hostile peer publishes forged and malformed records, by gossip and as view sync
//! answers; the node refuses, counts and reports them, and its view stays clean.
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
use swarm_core::record::{Namespace, NodeRecord, SignedNodeRecord, MAX_RECORD_SIZE};
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
        nat: Default::default(),
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

/// `record` signed as a whole by `signer`, whoever the record names (`sign` refuses to
/// sign for another peer, so the signature is made by hand).
fn envelope(record: &NodeRecord, signer: &Keypair) -> Vec<u8> {
    let body = codec::encode(record, MAX_RECORD_SIZE).unwrap();
    let mut input = b"swarm/node-record/v1:".to_vec();
    input.extend_from_slice(&body);
    SignedNodeRecord::from_parts(&body, &signer.sign(&input).unwrap()).unwrap()
}

/// Gossip as the node speaks it: no gossipsub signatures, content ids.
fn attacker(key: &Keypair) -> Swarm<gossipsub::Behaviour> {
    libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| {
            gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Anonymous,
                gossipsub::ConfigBuilder::default()
                    .validation_mode(gossipsub::ValidationMode::Anonymous)
                    .message_id_fn(|m| {
                        gossipsub::MessageId::new(&swarm_core::record::signed::content_id(&m.data))
                    })
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
    let wrong_author = record(&alice, &alice, &alice, 2); // signed by Mallory, claims Alice
    let mut wrong_namespace = record(&mallory, &mallory, &mallory, 3);
    wrong_namespace.namespace = Namespace::new("elsewhere").unwrap();
    let mut payloads = vec![
        envelope(&forged_tunnel, &mallory),
        envelope(&wrong_author, &mallory),
        envelope(&wrong_namespace, &mallory),
        vec![0x16, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], // length bomb
        vec![0x16, 0x09, 0, 0],                                                 // unknown version
        b"hello".to_vec(),                                                      // garbage
    ];
    let expected = payloads.len() as u64;
    for p in payloads.drain(..) {
        swarm.behaviour_mut().publish(topic.clone(), p).unwrap();
    }
    // A good record from Mallory's own identity, after the bad ones, still gets in:
    // rejection is per message.
    let good = record(&mallory, &mallory, &mallory, 10);
    swarm.behaviour_mut().publish(topic.clone(), envelope(&good, &mallory)).unwrap();

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
    assert_eq!(rejected.get("bad_signature"), Some(&1), "{rejected:?}");
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

/// Raw bytes both ways: sent as they are, read until the stream ends (at most 1 MiB).
#[derive(Debug, Clone, Default)]
struct RawCodec;

async fn read_raw<T: futures::AsyncRead + Unpin + Send>(io: &mut T) -> std::io::Result<Vec<u8>> {
    use futures::AsyncReadExt as _;
    let mut out = Vec::new();
    io.take(1 << 20).read_to_end(&mut out).await?;
    Ok(out)
}

async fn write_raw<T: futures::AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> std::io::Result<()> {
    use futures::AsyncWriteExt as _;
    io.write_all(bytes).await?;
    io.close().await
}

impl libp2p::request_response::Codec for RawCodec {
    type Protocol = libp2p::StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        read_raw(io).await
    }

    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        read_raw(io).await
    }

    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> std::io::Result<()> {
        write_raw(io, &request).await
    }

    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> std::io::Result<()> {
        write_raw(io, &response).await
    }
}

/// Malformed and oversized lease requests are refused without harm and counted; a
/// well-formed one from the same peer is answered; nobody releases another's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lease_requests_are_refused_and_counted() {
    use libp2p::request_response::{self, ProtocolSupport};
    use swarm_core::place::wire::{GpuDemand, LeaseRequest, LeaseResponse};
    let (node, _events) = start(builder("hostile-lease")).await;
    let addr = first_addr(&node).await;
    let mallory = Keypair::generate_ed25519();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(mallory.clone())
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::<RawCodec>::new(
                [(libp2p::StreamProtocol::new("/swarm/lease/1"), ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
            )
        })
        .unwrap()
        .build();
    swarm.dial(addr.clone()).unwrap();
    let peer = node.peer_id();
    let frame = |body: &[u8]| {
        let mut f = (body.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    };
    let reserve = LeaseRequest::Reserve {
        task: swarm_core::bounded::BoundedString::try_new("mallory").unwrap(),
        demand: GpuDemand {
            count: 1,
            min_memory_mib: 0,
            min_compute_capability: None,
            models: BoundedVec::new(),
        },
        ttl_ms: 10_000,
    };
    let mut bomb = vec![0xFF, 0xFF];
    bomb.extend(std::iter::repeat_n(0u8, 100));
    let requests = vec![
        frame(b"hello"),                                                // garbage
        bomb,                                                           // a length past the 4 KiB cap
        vec![0x00],                                                     // a truncated length
        frame(&[0x10, 0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),       // a length bomb inside
        frame(&reserve.encode().unwrap()),                              // well formed
        frame(&LeaseRequest::Release { lease: 999 }.encode().unwrap()), // nobody's lease
    ];
    let mut answers: Vec<Option<Vec<u8>>> = vec![None; requests.len()];
    let mut ids = Vec::new();
    let mut sent = false;
    let mut done = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while done < requests.len() {
        let ev =
            tokio::time::timeout_at(deadline, swarm.select_next_some()).await.expect("answers or failures");
        match ev {
            SwarmEvent::ConnectionEstablished { .. } if !sent => {
                sent = true;
                for r in &requests {
                    ids.push(swarm.behaviour_mut().send_request(&peer, r.clone()));
                }
            }
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { request_id, response },
                ..
            }) => {
                let k = ids.iter().position(|i| *i == request_id).unwrap();
                answers[k] = Some(response);
                done += 1;
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => done += 1,
            _ => {}
        }
    }
    for bad in &answers[..4] {
        assert!(bad.as_ref().is_none_or(|b| b.is_empty()), "no answer to a malformed request: {bad:?}");
    }
    let body = |k: usize| LeaseResponse::decode(&answers[k].as_ref().expect("answered")[2..]).unwrap();
    assert!(matches!(body(4), LeaseResponse::Granted { .. }), "{:?}", body(4));
    assert!(matches!(body(5), LeaseResponse::Failed { .. }), "{:?}", body(5));
    let stats = node.stats().await.unwrap();
    assert_eq!(stats.leases.malformed, 4, "{:?}", stats.leases);
    assert_eq!((stats.leases.granted, stats.leases.failed), (1, 1), "{:?}", stats.leases);
    assert_eq!(node.leases().await.unwrap().len(), 1);
    node.shutdown().await;
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct SyncAttacker {
    identify: libp2p::identify::Behaviour,
    sync: libp2p::request_response::Behaviour<RawCodec>,
}

/// A member that answers the node's view sync with forged records, then with a
/// malformed answer: the forged ones are refused and counted like gossiped ones, the
/// honest record among them gets in, the malformed answer is counted, the node carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_sync_answers_are_refused_and_counted() {
    use libp2p::request_response::{self, ProtocolSupport};
    use swarm_core::record::sync::SyncAnswer;
    let (node, mut events) = start(builder("hostile")).await;
    let addr = first_addr(&node).await;
    let mallory = Keypair::generate_ed25519();
    let alice = Keypair::generate_ed25519();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(mallory.clone())
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|k| SyncAttacker {
            // Identifies as a member of the namespace: the node syncs with members.
            identify: libp2p::identify::Behaviour::new(libp2p::identify::Config::new(
                Namespace::new("hostile").unwrap().identify_protocol(),
                k.public(),
            )),
            sync: request_response::Behaviour::new(
                [(libp2p::StreamProtocol::new("/swarm/hostile/sync/1"), ProtocolSupport::Inbound)],
                request_response::Config::default(),
            ),
        })
        .unwrap()
        .build();
    swarm.dial(addr).unwrap();

    let forged = [
        envelope(&record(&alice, &alice, &alice, 2), &mallory), // claims Alice, signed by Mallory
        envelope(&record(&mallory, &mallory, &alice, 3), &mallory), // Alice's tunnel record
        b"junk".to_vec(),
    ];
    let good = envelope(&record(&mallory, &mallory, &mallory, 10), &mallory);
    let answer = SyncAnswer {
        records: BoundedVec::try_from_vec(
            forged
                .iter()
                .chain([&good])
                .map(|r| swarm_core::bounded::BoundedBytes::try_from_slice(r).unwrap())
                .collect(),
        )
        .unwrap(),
        more: true,
    };
    let encoded = codec::encode(&answer, 1 << 20).unwrap();
    let mut first = (encoded.len() as u32).to_be_bytes().to_vec();
    first.extend_from_slice(&encoded);
    // The second answer claims 16 MiB: refused before it is read.
    let second = (16u32 << 20).to_be_bytes().to_vec();
    let mut answers = vec![second, first];

    let drive = async {
        loop {
            if let SwarmEvent::Behaviour(SyncAttackerEvent::Sync(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            })) = swarm.select_next_some().await
            {
                let answer = answers.pop().unwrap_or_default();
                let _ = swarm.behaviour_mut().sync.send_response(channel, answer);
            }
        }
    };
    let check = async {
        let ok = eventually(Duration::from_secs(10), || async {
            let stats = node.stats().await.unwrap();
            stats.sync_malformed >= 1 && stats.records == 2
        })
        .await;
        assert!(ok, "{:?}", node.stats().await.unwrap());
    };
    tokio::select! {
        _ = drive => unreachable!(),
        _ = check => {}
    }
    let stats = node.stats().await.unwrap();
    let rejected = &stats.gossip.rejected;
    assert_eq!(rejected.get("bad_signature"), Some(&1), "{rejected:?}");
    assert_eq!(rejected.get("bad_tunnel_record"), Some(&1), "{rejected:?}");
    assert_eq!(rejected.get("malformed"), Some(&1), "{rejected:?}");
    assert_eq!(stats.sync_records, 1, "the honest record came by sync");
    assert!(stats.sync_malformed >= 1);
    let view = node.cluster().await.unwrap();
    assert!(view.get(&alice.public().to_peer_id()).is_none());
    assert!(view.get(&mallory.public().to_peer_id()).is_some());
    // Each refused record is reported against the member that sent it, as gossip's are.
    let mut reasons = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), events.next()).await {
        if let NodeEvent::RecordRejected { from, reason } = e {
            assert_eq!(from, mallory.public().to_peer_id());
            reasons.push(reason);
        }
    }
    reasons.sort_unstable();
    assert_eq!(reasons, ["bad_signature", "bad_tunnel_record", "malformed"]);
    node.shutdown().await;
}
