//! WireGuard tunnels between real nodes on loopback: opened from verified records,
//! eagerly and lazily, carrying application datagrams; closed and reopened; shown in
//! status; refused without a matching pre-shared key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use swarm_net::{Node, NodeEvent, PeerId};

async fn tunnel_up(node: &Node, peer: PeerId) -> bool {
    eventually(Duration::from_secs(20), || async {
        node.tunnels().await.unwrap().iter().any(|t| t.peer == peer && t.established)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_tunnels_carry_datagrams_both_ways() {
    let (a, mut ea) = start(builder("tun")).await;
    let boot = first_addr(&a).await;
    let (b, _eb) = start(builder("tun").bootstrap(boot.clone())).await;
    let (c, _ec) = start(builder("tun").bootstrap(boot).eager_tunnels(0)).await;
    let nodes = [a.clone(), b.clone(), c.clone()];
    let mut a_in = a.datagrams().expect("the receiver");
    assert!(a.datagrams().is_none(), "taken once");
    let mut b_in = b.datagrams().unwrap();
    let mut c_in = c.datagrams().unwrap();

    // A and B open tunnels as soon as records arrive.
    assert!(tunnel_up(&a, b.peer_id()).await, "A-B tunnel up");
    let mut up = false;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(5), ea.next()).await {
        if matches!(e, NodeEvent::TunnelUp { peer, .. } if peer == b.peer_id()) {
            up = true;
            break;
        }
    }
    assert!(up, "A raised TunnelUp for B");

    for i in 0..100u32 {
        a.send_datagram(b.peer_id(), i.to_be_bytes().to_vec()).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 100 {
        let d = tokio::time::timeout(Duration::from_secs(5), b_in.next()).await.expect("datagrams arrive");
        let d = d.unwrap();
        assert_eq!(d.peer, a.peer_id(), "the sender is authenticated");
        got.push(u32::from_be_bytes(d.data.try_into().unwrap()));
    }
    assert_eq!(got, (0..100).collect::<Vec<_>>(), "all arrive, in order, on loopback");
    b.send_datagram(a.peer_id(), vec![7; 1400]).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), a_in.next()).await.unwrap().unwrap();
    assert_eq!((d.peer, d.data.len()), (b.peer_id(), 1400));

    // C opens no tunnel itself, but A and B open theirs to C.
    assert!(tunnel_up(&c, b.peer_id()).await);
    b.send_datagram(c.peer_id(), b"to c".to_vec()).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), c_in.next()).await.unwrap().unwrap();
    assert_eq!((d.peer, d.data.as_slice()), (b.peer_id(), &b"to c"[..]));

    // Status: counters and a recent handshake.
    let status = a.tunnels().await.unwrap();
    let to_b = status.iter().find(|t| t.peer == b.peer_id()).unwrap();
    assert!(to_b.tx_packets >= 100 && to_b.rx_packets >= 1 && to_b.handshakes >= 1, "{to_b:?}");
    assert!(to_b.last_handshake.unwrap() < Duration::from_secs(60));
    assert!(to_b.drops.is_empty(), "{:?}", to_b.drops);
    let stats = a.stats().await.unwrap();
    assert!(stats.dataplane.recv_buffer > 0 && stats.dataplane.udp_out > 100, "{:?}", stats.dataplane);

    // Close and reopen.
    a.close_tunnel(b.peer_id()).await.unwrap();
    assert!(!a.tunnels().await.unwrap().iter().any(|t| t.peer == b.peer_id() && t.established));
    a.open_tunnel(b.peer_id()).await.unwrap();
    assert!(tunnel_up(&a, b.peer_id()).await, "reopened");
    a.send_datagram(b.peer_id(), b"after reopen".to_vec()).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), b_in.next()).await.unwrap().unwrap();
    assert_eq!(d.data, b"after reopen");

    // A peer nobody knows: a clear error.
    let stranger = libp2p::identity::Keypair::ed25519_from_bytes([9; 32]).unwrap().public().to_peer_id();
    let err = a.open_tunnel(stranger).await.unwrap_err();
    assert!(err.to_string().contains("no verified tunnel record"), "{err}");
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_preshared_key_keeps_tunnels_shut() {
    let (a, _ea) = start(builder("psk").tunnel_psk([1; 32])).await;
    let boot = first_addr(&a).await;
    let (b, _eb) = start(builder("psk").bootstrap(boot.clone()).tunnel_psk([1; 32])).await;
    let (c, _ec) = start(builder("psk").bootstrap(boot).tunnel_psk([2; 32])).await;
    let nodes = [a.clone(), b.clone(), c.clone()];
    assert!(tunnel_up(&a, b.peer_id()).await, "same key: up");
    assert!(eventually(Duration::from_secs(20), || async { view_len(&c).await == 3 }).await);
    // Whichever side initiates, the initiator cannot read the response (the PSK is mixed
    // in after the second message): a handshake failure is counted somewhere, soon.
    let failed = eventually(Duration::from_secs(20), || async {
        let mut any = false;
        for n in [&a, &b, &c] {
            let drops = n.stats().await.unwrap().tunnel_drops;
            any |= drops.iter().any(|(r, n)| *r == "handshake_failed" && *n > 0);
        }
        any
    })
    .await;
    assert!(failed, "a handshake with the wrong key failed and was counted");
    let status = c.tunnels().await.unwrap();
    assert!(!status.iter().any(|t| t.established), "{status:?}");
    for n in [&a, &b] {
        let to_c = n.tunnels().await.unwrap().into_iter().find(|t| t.peer == c.peer_id());
        assert!(!to_c.as_ref().is_some_and(|t| t.established), "{to_c:?}");
    }
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_tunnels_open_on_the_first_datagram() {
    let (a, _ea) = start(builder("lazy").eager_tunnels(0)).await;
    let boot = first_addr(&a).await;
    let (b, _eb) = start(builder("lazy").bootstrap(boot).eager_tunnels(0)).await;
    let nodes = [a.clone(), b.clone()];
    let mut b_in = b.datagrams().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async { view_len(&a).await == 2 && view_len(&b).await == 2 })
            .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = a.tunnels().await.unwrap();
    assert_eq!(status.len(), 1, "B is known to the data plane");
    assert!(!status[0].established && status[0].handshakes == 0 && status[0].tx_packets == 0, "{status:?}");
    // The first datagram waits for the handshake and then arrives.
    a.send_datagram(b.peer_id(), b"lazy".to_vec()).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), b_in.next()).await.unwrap().unwrap();
    assert_eq!((d.peer, d.data.as_slice()), (a.peer_id(), &b"lazy"[..]));
    assert!(tunnel_up(&a, b.peer_id()).await);
    shutdown_all(&nodes).await;
}

/// A node listening on both families has one tunnel socket per family and lists both in
/// its tunnel record; a peer on IPv6 only reaches it over IPv6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_socket_per_address_family() {
    let v6 = || "/ip6/::1/tcp/0".parse::<swarm_net::Multiaddr>().unwrap();
    let (a, _ea) = start(builder("families").listen(v6())).await;
    let boot =
        a.listen_addrs().await.unwrap().into_iter().find(|m| m.to_string().starts_with("/ip6/")).unwrap();
    let (b, _eb) = start(
        swarm_net::NodeBuilder::new("families")
            .listen(v6())
            .heartbeat(Duration::from_millis(500))
            .record_ttl(Duration::from_secs(3))
            .bootstrap(boot),
    )
    .await;
    let nodes = [a.clone(), b.clone()];
    assert!(eventually(Duration::from_secs(20), || async { view_len(&b).await == 2 }).await);
    let view = b.cluster().await.unwrap();
    let endpoints = &view.get(&a.peer_id()).unwrap().tunnel.udp_endpoints;
    assert!(endpoints.iter().any(|e| e.is_ipv4()) && endpoints.iter().any(|e| e.is_ipv6()), "{endpoints:?}");
    let mut a_in = a.datagrams().unwrap();
    b.send_datagram(a.peer_id(), b"over v6".to_vec()).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), a_in.next()).await.unwrap().unwrap();
    assert_eq!((d.peer, d.data.as_slice()), (b.peer_id(), &b"over v6"[..]));
    let t = b.tunnels().await.unwrap();
    assert!(t[0].endpoint.unwrap().is_ipv6(), "B has only an IPv6 socket: {t:?}");
    shutdown_all(&nodes).await;
}

/// Every live tunnel is probed: round trips, jitter and SLA verdicts appear in
/// `Node::links` within a few probe intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tunnels_are_measured() {
    let (a, _ea) = start(builder("links")).await;
    let boot = first_addr(&a).await;
    let (b, _eb) = start(builder("links").bootstrap(boot)).await;
    let nodes = [a.clone(), b.clone()];
    assert!(tunnel_up(&a, b.peer_id()).await);
    let judged = eventually(Duration::from_secs(20), || async {
        a.links().await.unwrap().iter().any(|l| {
            l.stats.short.rtt.is_some_and(|q| q.samples >= 20)
                && l.sla.iter().any(|v| {
                    v.metric == swarm_core::link::Metric::Latency
                        && v.state != swarm_core::link::SlaState::Unknown
                })
        })
    })
    .await;
    assert!(judged, "20 round trips and a verdict within 20 s (5 probes a second)");
    let links = a.links().await.unwrap();
    let to_b = links.iter().find(|l| l.peer == b.peer_id()).unwrap();
    let rtt = to_b.stats.short.rtt.unwrap();
    assert!(rtt.p50 < Duration::from_millis(50), "loopback: {rtt:?}");
    assert!(to_b.stats.jitter_in.is_some() && to_b.stats.jitter_out.is_some(), "{:?}", to_b.stats);
    // Judged, with its value (a busy test machine may push the p99 past 50 ms even on
    // loopback, so the verdict itself is not asserted here; the simulator tests do that).
    let latency = to_b.sla.iter().find(|v| v.metric == swarm_core::link::Metric::Latency).unwrap();
    assert!(latency.state != swarm_core::link::SlaState::Unknown && latency.value.is_some(), "{latency:?}");
    assert_eq!(latency.target, 50.0);
    shutdown_all(&nodes).await;
}

/// Link summaries travel in gossip: a third node knows the A-B link, measured by A or B,
/// and every record carries a network coordinate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_summaries_reach_the_whole_swarm() {
    let (a, _ea) = start(builder("summaries")).await;
    let boot = first_addr(&a).await;
    let (b, _eb) = start(builder("summaries").bootstrap(boot.clone())).await;
    let (c, _ec) = start(builder("summaries").bootstrap(boot)).await;
    let nodes = [a.clone(), b.clone(), c.clone()];
    let known = eventually(Duration::from_secs(30), || async {
        matches!(
            c.link_between(a.peer_id(), b.peer_id()).await.unwrap(),
            Some(swarm_core::link::summary::LinkAnswer::Measured { summary, .. }) if summary.rtt_samples >= 5
        )
    })
    .await;
    assert!(known, "C learns the A-B link from gossip");
    let Some(swarm_core::link::summary::LinkAnswer::Measured { by, summary, age }) =
        c.link_between(b.peer_id(), a.peer_id()).await.unwrap()
    else {
        panic!("measured")
    };
    assert!(by == a.peer_id() || by == b.peer_id());
    assert!(summary.rtt_p50_us < 50_000 && age < Duration::from_secs(30), "{summary:?} {age:?}");
    let view = c.cluster().await.unwrap();
    for e in &view.entries {
        let s = swarm_core::link::summary::LinkSummaries::from_record(&e.record).unwrap();
        assert!(s.is_some_and(|s| s.coordinate.is_some()), "{} has a coordinate", e.record.peer_id);
    }
    shutdown_all(&nodes).await;
}

/// An on-demand throughput test over a live tunnel gives a figure, and refuses a second
/// test within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_is_measured_on_demand() {
    let (a, _ea) = start(builder("train")).await;
    let boot = first_addr(&a).await;
    let (b, _eb) = start(builder("train").bootstrap(boot)).await;
    let nodes = [a.clone(), b.clone()];
    assert!(tunnel_up(&a, b.peer_id()).await);
    // The link monitor starts with the tunnel; give it a moment.
    assert!(eventually(Duration::from_secs(10), || async { !a.links().await.unwrap().is_empty() }).await);
    let bps = a.measure_throughput(b.peer_id()).await.unwrap();
    assert!(bps > 10e6, "loopback carries more than 10 Mbit/s: {bps}");
    let again = a.measure_throughput(b.peer_id()).await.unwrap_err();
    assert!(again.to_string().contains("1 s apart"), "{again}");
    let links = a.links().await.unwrap();
    assert!(links[0].stats.throughput.is_some_and(|(b, _)| b == bps));
    shutdown_all(&nodes).await;
}
