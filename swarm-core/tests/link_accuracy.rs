//! The deterministic simulator: two nodes' tunnels and link tables on virtual time,
//! joined by seeded link emulators. Each node runs the production [`LinkTable`] (its
//! probe and judge schedule, trains, summaries and Vivaldi update), fed as the node's
//! data plane feeds it. What the tables measure is checked against what the emulators
//! inject, and the SLA events against the injected steps.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // tests own the clock

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use swarm_core::link::emulator::{LinkEmulator, LinkProfile};
use swarm_core::link::summary::LinkSummaries;
use swarm_core::link::{
    LinkConfig, LinkEvent, LinkStats, LinkTable, Metric, PassiveCounters, PingError, SlaEvent, SlaPolicy,
    ThroughputError, PING_TIMEOUT, RTT_BUCKET_BOUNDS,
};
use swarm_core::tunnel::{FrameKind, Payload, PeerHandle, Received, TunnelConfig, TunnelEvent, Tunnels};
use swarm_core::PeerId;
use x25519_dalek::{PublicKey, StaticSecret};

const UNIX: Duration = Duration::from_secs(1_800_000_000);

struct Node {
    t: Tunnels,
    peer: PeerHandle,
    /// The other node's id, as the link table knows it.
    other: PeerId,
    addr: SocketAddr,
    links: LinkTable,
    events: Vec<(Instant, SlaEvent)>,
    /// Throughput tests' results, in order.
    throughput: Vec<Result<f64, ThroughputError>>,
    pongs: Vec<Result<Duration, PingError>>,
    /// Unreachable (with the silence) and reachable again, with when.
    liveness: Vec<(Instant, Option<Duration>)>,
    /// The summaries this node would have gossiped, with when and whether urgently.
    gossip: Vec<(Instant, bool, LinkSummaries)>,
}

/// A datagram in flight: (arrival, tie-break sequence, receiving node, bytes).
type InFlight = Reverse<(Instant, u64, usize, Vec<u8>)>;

struct Sim {
    t0: Instant,
    now: Instant,
    nodes: [Node; 2],
    /// 0: A to B, 1: B to A.
    links: [LinkEmulator; 2],
    wire: BinaryHeap<InFlight>,
    seq: u64,
    /// Background datagrams per second, each way.
    traffic_pps: u32,
    next_traffic: Instant,
    /// Whether each node hears the other's gossiped coordinate.
    share_coordinates: bool,
    buf: Vec<u8>,
}

fn public(k: [u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(k)).to_bytes()
}

fn peer_id(i: u8) -> PeerId {
    swarm_core::Keypair::ed25519_from_bytes([i + 1; 32]).unwrap().public().to_peer_id()
}

impl Sim {
    fn new(profile: LinkProfile, traffic_pps: u32, link: LinkConfig, seed: u64) -> Sim {
        let t0 = Instant::now();
        let addrs: [SocketAddr; 2] = ["10.0.0.1:1".parse().unwrap(), "10.0.0.2:1".parse().unwrap()];
        let keys = [[1u8; 32], [2u8; 32]];
        let nodes = [0, 1].map(|i| {
            let mut t = Tunnels::new(keys[i], TunnelConfig::default(), t0, UNIX, [i as u8 + 1; 32]);
            let peer = t.add_peer(public(keys[1 - i]), Some(addrs[1 - i])).unwrap();
            Node {
                t,
                peer,
                other: peer_id(1 - i as u8),
                addr: addrs[i],
                links: LinkTable::new(t0, link, SlaPolicy::default()),
                events: Vec::new(),
                throughput: Vec::new(),
                pongs: Vec::new(),
                liveness: Vec::new(),
                gossip: Vec::new(),
            }
        });
        let links = [LinkEmulator::new(profile, seed), LinkEmulator::new(profile, seed + 1)];
        let mut sim = Sim {
            t0,
            now: t0,
            nodes,
            links,
            wire: BinaryHeap::new(),
            seq: 0,
            traffic_pps,
            next_traffic: t0,
            share_coordinates: false,
            buf: vec![0; 2048],
        };
        sim.nodes[0].t.open(t0, sim.nodes[0].peer);
        // As the driver flushes after every call.
        sim.drain(0);
        sim
    }

    fn set_profile(&mut self, profile: LinkProfile) {
        for l in &mut self.links {
            l.set_profile(profile);
        }
    }

    /// Puts what node `i` sends on its outgoing link.
    fn emit(&mut self, i: usize, len: usize) {
        if let Some(at) = self.links[i].transmit(self.now, len) {
            self.seq += 1;
            self.wire.push(Reverse((at, self.seq, 1 - i, self.buf[..len].to_vec())));
        }
    }

    fn send_frame(&mut self, i: usize, kind: FrameKind, body: &[u8]) {
        let (now, peer) = (self.now, self.nodes[i].peer);
        if let Ok(Some(t)) = self.nodes[i].t.send_frame(now, peer, kind, body, &mut self.buf) {
            self.emit(i, t.len);
        }
    }

    /// Sends what node `i`'s tunnels and link table have queued, and takes their events,
    /// as the node's data plane and driver do.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        while let Some(t) = self.nodes[i].t.poll_transmit(now, &mut self.buf) {
            self.emit(i, t.len);
        }
        while let Some(f) = self.nodes[i].links.poll_transmit() {
            let (kind, body) = (f.kind, f.body.to_vec());
            self.send_frame(i, kind, &body);
        }
        let node = &mut self.nodes[i];
        while let Some(e) = node.t.poll_event() {
            match e {
                TunnelEvent::HandshakeCompleted { .. } => node.links.handle_tunnel_up(now, node.other),
                TunnelEvent::HandshakeTimedOut { .. } | TunnelEvent::KeysZeroed { .. } => {
                    node.links.handle_tunnel_down(&node.other)
                }
                _ => {}
            }
        }
        while let Some(e) = node.links.poll_event() {
            match e {
                LinkEvent::Sla { event, .. } => node.events.push((now, event)),
                LinkEvent::Throughput { result, .. } => node.throughput.push(result),
                LinkEvent::Pong { result, .. } => node.pongs.push(result),
                LinkEvent::Unreachable { silent, .. } => node.liveness.push((now, Some(silent))),
                LinkEvent::Reachable { .. } => node.liveness.push((now, None)),
                _ => {}
            }
        }
        if let Some(g) = node.links.poll_gossip(now) {
            node.gossip.push((now, g.urgent, g.summaries));
        }
    }

    fn deliver(&mut self, to: usize, mut bytes: Vec<u8>) {
        let now = self.now;
        let from = self.nodes[1 - to].addr;
        let node = &mut self.nodes[to];
        if let Ok(Received::Data { payload: Payload::Frame { kind, body }, .. }) =
            node.t.handle_datagram(now, from, &mut bytes)
        {
            node.links.handle_frame(now, node.other, kind, body);
        }
        self.drain(to);
    }

    fn next_event(&self) -> Instant {
        let traffic = (self.traffic_pps > 0).then_some(self.next_traffic);
        let wire = self.wire.peek().map(|Reverse((at, ..))| *at);
        let cores = self.nodes.iter().flat_map(|n| [n.t.poll_timeout(), n.links.poll_timeout()]).flatten();
        let earliest = cores.chain(wire).chain(traffic).min();
        earliest.unwrap_or(self.now + Duration::from_secs(1))
    }

    /// Node `i`'s timers, as its data plane runs them: tunnel timers, the tunnel's
    /// counters when the judge is due, the link table's timers.
    fn timeout(&mut self, i: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        node.t.handle_timeout(now);
        if node.links.counters_due(now) {
            if let Some(s) = node.t.status(node.peer, now) {
                node.links.handle_counters(now, &node.other, PassiveCounters::from(&s), s.last_handshake);
            }
        }
        node.links.handle_timeout(now);
        self.drain(i);
        if self.share_coordinates {
            let coordinate = self.nodes[i].links.coordinate();
            let other = &mut self.nodes[1 - i];
            other.links.handle_coordinate(peer_id(i as u8), Some(coordinate));
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self.next_event();
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            while self.wire.peek().is_some_and(|Reverse((at, ..))| *at <= self.now) {
                let Reverse((_, _, to, bytes)) = self.wire.pop().unwrap();
                self.deliver(to, bytes);
            }
            for i in 0..2 {
                self.timeout(i);
            }
            if self.traffic_pps > 0 && self.now >= self.next_traffic {
                for i in 0..2 {
                    self.send_frame(i, FrameKind::DATAGRAM, &[0u8; 200]);
                }
                self.next_traffic += Duration::from_secs(1) / self.traffic_pps;
            }
        }
        self.now = end;
    }

    fn stats(&mut self, i: usize) -> LinkStats {
        let (now, other) = (self.now, self.nodes[i].other);
        self.nodes[i].links.report(now, &other).unwrap().0
    }

    fn events(&self, i: usize, metric: Metric) -> Vec<(Duration, SlaEvent)> {
        self.nodes[i]
            .events
            .iter()
            .filter(|(_, e)| match e {
                SlaEvent::Degraded { metric: m, .. } | SlaEvent::Recovered { metric: m, .. } => *m == metric,
            })
            .map(|(t, e)| (t.saturating_duration_since(self.t0), *e))
            .collect()
    }
}

fn within(measured: f64, truth: f64, tolerance: f64) -> bool {
    (measured - truth).abs() <= tolerance * truth
}

#[test]
fn rtt_jitter_and_loss_match_the_injected_truth() {
    let profile = LinkProfile {
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(2),
        loss: 0.01,
        ..LinkProfile::default()
    };
    let link = LinkConfig { probe_interval: Duration::from_millis(50), ..LinkConfig::default() };
    let mut sim = Sim::new(profile, 1000, link, 7);
    sim.run_for(Duration::from_secs(90));
    let s = sim.stats(0);
    let rtt = s.long.rtt.unwrap();
    // Truth: RTT = two one-way delays, each 20 ms + N(0, 2 ms): median 40 ms,
    // p99 = 40 + 2.326 * 2 ms * sqrt(2).
    let (p50, p99) = (40.0, 40.0 + 2.326 * 2.0 * 2f64.sqrt());
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("p50 {:.2} p99 {:.2} samples {}", ms(rtt.p50), ms(rtt.p99), rtt.samples);
    assert!(within(ms(rtt.p50), p50, 0.05), "p50 {:?} vs {p50}", rtt.p50);
    assert!(within(ms(rtt.p99), p99, 0.05), "p99 {:?} vs {p99}", rtt.p99);
    // Jitter: RFC 3550's mean |D| of one-way delays, 2σ/√π.
    let truth = ms(profile.expected_rfc3550_jitter());
    let (mean, n) = s.long.jitter_mean.unwrap();
    println!("jitter mean {:.3} ms over {n} (truth {truth:.3}); rfc3550 now {:?}", ms(mean), s.jitter_in);
    assert!(within(ms(mean), truth, 0.10), "jitter {mean:?} vs {truth}");
    assert!(within(ms(s.jitter_out.unwrap()), truth, 0.5), "the peer's smoothed estimate {:?}", s.jitter_out);
    // Loss: 1 % injected; the transport counters see it within ±20 %.
    let loss = s.long.loss_in.unwrap();
    println!(
        "loss in {:.4} over {} packets; probes {:?}; out {:?}",
        loss.value, loss.samples, s.long.probe_loss, s.loss_out
    );
    assert!(loss.samples > 50_000);
    assert!(within(loss.value, 0.01, 0.2), "loss {loss:?}");
    assert!(within(s.loss_out.unwrap(), 0.01, 0.2), "the peer's report {:?}", s.loss_out);
    // Probes lost either way: about 2 %.
    assert!(within(s.long.probe_loss.unwrap().value, 0.0199, 0.3), "{:?}", s.long.probe_loss);
    // Goodput: 1000 datagrams of 200 bytes (plus frame, padding, headers) a second.
    let rx = s.long.rx_bps.unwrap();
    assert!(rx > 1000.0 * 200.0 * 8.0 * 0.98 && rx < 1000.0 * 300.0 * 8.0, "{rx}");
}

#[test]
fn a_latency_step_raises_an_event_at_once_and_recovers() {
    let calm = LinkProfile { delay: Duration::from_millis(10), ..LinkProfile::default() };
    let mut sim = Sim::new(calm, 100, LinkConfig::default(), 11);
    sim.run_for(Duration::from_secs(20));
    assert!(sim.events(0, Metric::Latency).is_empty());
    // RTT 20 ms -> 80 ms (target 50 ms at p99).
    let onset = sim.now.saturating_duration_since(sim.t0);
    sim.set_profile(LinkProfile { delay: Duration::from_millis(40), ..calm });
    sim.run_for(Duration::from_secs(20));
    let ev = sim.events(0, Metric::Latency);
    let (at, first) = ev[0];
    // The first slow round trip may be a probe caught in the change (10 ms out, 40 back).
    assert!(matches!(first, SlaEvent::Degraded { value, .. } if value > 50.0), "{first:?}");
    let p99 = sim.stats(0).short.rtt.unwrap().p99;
    assert!(p99 >= Duration::from_millis(79), "{p99:?}");
    let delay = at - onset;
    println!("latency step: event {delay:?} after onset");
    // Bound: one probe interval (200 ms) + the new RTT (80 ms) + one judge tick (200 ms).
    assert!(delay <= Duration::from_millis(480), "{delay:?}");
    // Back to 20 ms: recovery once the short window (10 s) forgot the slow samples and
    // the recovery hold (10 s) passed.
    let back = sim.now.saturating_duration_since(sim.t0);
    sim.set_profile(calm);
    sim.run_for(Duration::from_secs(30));
    let ev = sim.events(0, Metric::Latency);
    assert_eq!(ev.len(), 2, "{ev:?}");
    let recovered = ev[1].0 - back;
    println!("latency recovered {recovered:?} after the step back");
    assert!(matches!(ev[1].1, SlaEvent::Recovered { .. }));
    assert!(recovered <= Duration::from_secs(21), "{recovered:?}");
}

#[test]
fn a_loss_step_raises_an_event_at_once_and_recovers() {
    let clean = LinkProfile { delay: Duration::from_millis(5), ..LinkProfile::default() };
    let mut sim = Sim::new(clean, 1000, LinkConfig::default(), 13);
    sim.run_for(Duration::from_secs(20));
    assert!(sim.events(0, Metric::Loss).is_empty());
    let onset = sim.now.saturating_duration_since(sim.t0);
    sim.set_profile(LinkProfile { loss: 0.01, ..clean });
    sim.run_for(Duration::from_secs(15));
    let ev = sim.events(0, Metric::Loss);
    let (at, first) = ev[0];
    let delay = at - onset;
    println!("loss step: event {delay:?} after onset: {first:?}");
    assert!(matches!(first, SlaEvent::Degraded { .. }));
    // 1 % of 1000 packets/s passes 0.01 % of the 10 000-packet window in ~0.1 s; plus a
    // judge tick.
    assert!(delay <= Duration::from_millis(500), "{delay:?}");
    let back = sim.now.saturating_duration_since(sim.t0);
    sim.set_profile(clean);
    sim.run_for(Duration::from_secs(30));
    let ev = sim.events(0, Metric::Loss);
    assert_eq!(ev.len(), 2, "{ev:?}");
    let recovered = ev[1].0 - back;
    println!("loss recovered {recovered:?} after the step back");
    assert!(recovered <= Duration::from_secs(21), "{recovered:?}");
}

#[test]
fn a_link_held_at_the_threshold_does_not_flap() {
    // RTT 50 ms (the target) with 0.3 ms of jitter each way, for ten minutes.
    let edge = LinkProfile {
        delay: Duration::from_millis(25),
        jitter: Duration::from_micros(300),
        ..LinkProfile::default()
    };
    let mut sim = Sim::new(edge, 50, LinkConfig::default(), 17);
    sim.run_for(Duration::from_secs(600));
    let ev = sim.events(0, Metric::Latency);
    assert_eq!(ev.len(), 1, "the one breach (p99 just over 50 ms), and no flapping: {ev:?}");
    let ev = sim.events(1, Metric::Latency);
    assert!(ev.len() <= 1, "{ev:?}");
}

/// The packet train measures the bottleneck rate: 128 packets of 1200 bytes through a
/// 50 Mbit/s link.
#[test]
fn a_packet_train_measures_the_rate_limit() {
    let limited = LinkProfile {
        delay: Duration::from_millis(5),
        rate_bps: Some(50_000_000),
        queue: Duration::from_millis(200),
        ..LinkProfile::default()
    };
    let mut sim = Sim::new(limited, 0, LinkConfig::default(), 19);
    sim.run_for(Duration::from_millis(500));
    let (now, other) = (sim.now, sim.nodes[0].other);
    sim.nodes[0].links.measure(now, other).unwrap();
    sim.drain(0);
    sim.run_for(Duration::from_secs(1));
    let bps = *sim.nodes[0].throughput[0].as_ref().expect("the report came back");
    // The emulator serialises whole datagrams: 16 + 1216 (frame, padded) + 16 = 1248
    // bytes per 1200-byte body.
    let truth = 50e6 * 1200.0 / 1248.0;
    println!("train: {:.2} Mbit/s, truth {:.2}", bps / 1e6, truth / 1e6);
    assert!(within(bps, truth, 0.05), "{bps} vs {truth}");
    let stats = sim.stats(0);
    assert!(stats.throughput.is_some_and(|(b, _)| b == bps));
    // Below the 1 Gbps target: the judge says so.
    sim.run_for(Duration::from_millis(500));
    assert!(sim.events(0, Metric::Throughput).iter().any(|(_, e)| matches!(e, SlaEvent::Degraded { .. })));
}

/// Reordering is not loss: 5 % of packets held back 5 ms (past hundreds of later ones at
/// 1 000 packets/s) fill their gaps when they arrive.
#[test]
fn reordered_packets_are_not_counted_lost() {
    let shuffled = LinkProfile {
        delay: Duration::from_millis(10),
        reorder: 0.05,
        reorder_delay: Duration::from_millis(5),
        ..LinkProfile::default()
    };
    let mut sim = Sim::new(shuffled, 1000, LinkConfig::default(), 23);
    sim.run_for(Duration::from_secs(30));
    let s = sim.stats(0);
    let loss = s.long.loss_in.unwrap();
    println!("reordering: loss {:.6} over {} packets", loss.value, loss.samples);
    assert!(loss.samples > 20_000);
    assert!(loss.value < 1e-4, "{loss:?}");
    assert!(sim.events(0, Metric::Loss).is_empty());
}

/// The table's gossip: summaries each second with the measured round trip, at once (and
/// urgently) when a verdict changes, with the degraded bit set; the two nodes'
/// coordinates, each moved by the other's, come to predict their round trip.
#[test]
fn summaries_follow_the_link_and_coordinates_learn_its_round_trip() {
    let calm = LinkProfile { delay: Duration::from_millis(10), ..LinkProfile::default() };
    let mut sim = Sim::new(calm, 0, LinkConfig::default(), 29);
    sim.share_coordinates = true;
    sim.run_for(Duration::from_secs(60));
    let gossip = &sim.nodes[0].gossip;
    assert!((58..=61).contains(&gossip.len()), "one a second: {}", gossip.len());
    assert!(gossip.iter().all(|(_, urgent, _)| !urgent), "no verdict changed");
    let (_, _, last) = gossip.last().unwrap();
    let link = last.links.first().expect("the measured link");
    assert_eq!(link.peer, peer_id(1));
    assert!(within(f64::from(link.rtt_p50_us), 20_000.0, 0.05), "{link:?}");
    assert_eq!(link.degraded, 0);
    assert!(link.handshake_age_s < 180, "{link:?}");
    let (a, b) = (sim.nodes[0].links.coordinate(), sim.nodes[1].links.coordinate());
    let predicted = a.distance_ms(&b);
    println!("coordinates predict {predicted:.2} ms for a 20 ms round trip");
    assert!(within(predicted, 20.0, 0.25), "{predicted} {a:?} {b:?}");
    assert_eq!(last.coordinate, Some(a));
    // RTT 20 -> 80 ms: the breach is gossiped at once, urgently, with its bit.
    let onset = sim.now;
    sim.set_profile(LinkProfile { delay: Duration::from_millis(40), ..calm });
    sim.run_for(Duration::from_secs(2));
    let (at, urgent, s) =
        sim.nodes[0].gossip.iter().find(|(t, u, _)| *t > onset && *u).expect("urgent gossip");
    assert!(*urgent && *at - onset <= Duration::from_millis(480), "{:?}", *at - onset);
    assert_eq!(s.links[0].degraded & swarm_core::link::summary::degraded::LATENCY, 1);
}

/// A throughput test ends with a figure, with a timeout when the report never comes, or
/// at once when the tunnel goes down; a link that is down is no longer reported.
#[test]
fn throughput_tests_end_and_links_go_with_their_tunnel() {
    let calm = LinkProfile { delay: Duration::from_millis(5), ..LinkProfile::default() };
    let mut sim = Sim::new(calm, 0, LinkConfig::default(), 31);
    sim.run_for(Duration::from_secs(2));
    let other = sim.nodes[0].other;
    // No report: the link drops everything after the train leaves.
    sim.set_profile(LinkProfile { loss: 1.0, ..calm });
    let now = sim.now;
    sim.nodes[0].links.measure(now, other).unwrap();
    assert!(
        matches!(sim.nodes[0].links.measure(now, other), Err(ThroughputError::Start(_))),
        "one at a time"
    );
    sim.drain(0);
    sim.run_for(Duration::from_millis(2900));
    assert!(sim.nodes[0].throughput.is_empty());
    sim.run_for(Duration::from_millis(200));
    assert_eq!(sim.nodes[0].throughput, vec![Err(ThroughputError::Timeout)]);
    // The tunnel goes down during the next test.
    sim.set_profile(calm);
    sim.run_for(Duration::from_secs(2));
    let now = sim.now;
    sim.nodes[0].links.measure(now, other).unwrap();
    sim.nodes[0].links.handle_tunnel_down(&other);
    sim.drain(0);
    assert_eq!(sim.nodes[0].throughput[1], Err(ThroughputError::Down));
    assert!(sim.nodes[0].links.report(now, &other).is_none());
    assert!(sim.nodes[0].links.poll_transmit().is_none(), "the train went with the link");
    assert_eq!(sim.nodes[0].links.measure(now, other), Err(ThroughputError::NoLink));
}

/// A ping is one probe sent at once: its answer gives the link's round trip (here 2 x
/// 20 ms); a lost one times out; a ping over no tunnel fails at once.
#[test]
fn a_ping_is_answered_with_the_round_trip_or_times_out() {
    let calm = LinkProfile { delay: Duration::from_millis(20), ..LinkProfile::default() };
    let mut sim = Sim::new(calm, 0, LinkConfig::default(), 61);
    sim.run_for(Duration::from_secs(2));
    let other = sim.nodes[0].other;
    let now = sim.now;
    sim.nodes[0].links.ping(now, other).unwrap();
    sim.drain(0);
    sim.run_for(Duration::from_millis(100));
    let rtt = *sim.nodes[0].pongs[0].as_ref().expect("answered");
    assert!(rtt >= Duration::from_millis(40) && rtt < Duration::from_millis(45), "{rtt:?}");
    // Everything lost: no answer within PING_TIMEOUT.
    sim.set_profile(LinkProfile { loss: 1.0, ..calm });
    let now = sim.now;
    sim.nodes[0].links.ping(now, other).unwrap();
    sim.drain(0);
    sim.run_for(PING_TIMEOUT - Duration::from_millis(100));
    assert_eq!(sim.nodes[0].pongs.len(), 1);
    sim.run_for(Duration::from_millis(200));
    assert_eq!(sim.nodes[0].pongs[1], Err(PingError::Timeout));
    sim.nodes[0].links.handle_tunnel_down(&other);
    let now = sim.now;
    assert_eq!(sim.nodes[0].links.ping(now, other), Err(PingError::NoLink));
}

/// When the tunnel moves to another path (direct to relayed, say), the link's windows
/// restart: the figures reported soon after are the new path's alone, not a mix.
#[test]
fn a_path_change_restarts_the_windows() {
    let direct = LinkProfile { delay: Duration::from_millis(5), ..LinkProfile::default() };
    let link = LinkConfig { probe_interval: Duration::from_millis(50), ..LinkConfig::default() };
    let mut sim = Sim::new(direct, 100, link, 41);
    sim.run_for(Duration::from_secs(30));
    let other = sim.nodes[0].other;
    let before = sim.stats(0).long.rtt.unwrap();
    let before_buckets = sim.stats(0).rtt_buckets;
    assert!(before.p50 < Duration::from_millis(12), "{before:?}");
    // The relayed path is slower; both ends see the path change.
    sim.set_profile(LinkProfile { delay: Duration::from_millis(25), ..direct });
    let now = sim.now;
    sim.nodes[0].links.handle_path_change(now, &other);
    let back = sim.nodes[1].other;
    sim.nodes[1].links.handle_path_change(now, &back);
    sim.run_for(Duration::from_secs(5));
    let after = sim.stats(0).long.rtt.unwrap();
    assert!(after.p50 > Duration::from_millis(48), "only the new path's samples: {after:?}");
    assert!(after.samples < before.samples, "{} vs {}", after.samples, before.samples);
    // The cumulative histogram goes on: the direct path's round trips stay in their
    // buckets, the relayed path's are added in theirs.
    let (h0, h1) = (before_buckets, sim.stats(0).rtt_buckets);
    let fast = |h: &swarm_core::link::RttBuckets| {
        RTT_BUCKET_BOUNDS
            .iter()
            .zip(h.counts)
            .filter(|(b, _)| **b <= Duration::from_millis(25))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    assert_eq!(h0.counts.iter().sum::<u64>(), h0.count);
    assert!(h0.count >= 500 && fast(&h0) == h0.count, "{h0:?}");
    assert!(h1.count > h0.count + 50, "{} then {}", h0.count, h1.count);
    assert_eq!(fast(&h1), fast(&h0), "the slower path's round trips land above 25 ms: {h1:?}");
    assert!(h1.sum > h0.sum + Duration::from_millis(48) * (h1.count - h0.count) as u32);
    // A throughput test in flight when the path changes fails at once.
    let now = sim.now;
    sim.nodes[0].links.measure(now, other).unwrap();
    sim.nodes[0].links.handle_path_change(now, &other);
    sim.drain(0);
    assert_eq!(sim.nodes[0].throughput, vec![Err(ThroughputError::Down)]);
    assert!(sim.nodes[0].links.report(now, &other).is_some(), "the link stays");
}

/// A peer that restarts starts its probe clock and sequence over: the jitter measured
/// of its probes stays the link's (no jump of the clocks' offset, no false breach).
#[test]
fn a_restarted_peer_leaves_the_jitter_true() {
    let calm = LinkProfile { delay: Duration::from_millis(10), ..LinkProfile::default() };
    let link = LinkConfig::default();
    let mut sim = Sim::new(calm, 100, link, 53);
    sim.run_for(Duration::from_secs(20));
    let before = sim.stats(0).jitter_in.unwrap();
    // Node 1 restarts: a fresh link table (its monitor's clock and sequence start over),
    // over the same tunnel.
    let (now, other) = (sim.now, sim.nodes[1].other);
    sim.nodes[1].links = LinkTable::new(now, link, SlaPolicy::default());
    sim.nodes[1].links.handle_tunnel_up(now, other);
    sim.run_for(Duration::from_secs(10));
    let after = sim.stats(0).jitter_in.unwrap();
    println!("jitter in before {before:?}, after the restart {after:?}");
    assert!(after < Duration::from_millis(2), "{after:?}");
    let s = sim.stats(0);
    let (mean, _) = s.long.jitter_mean.unwrap();
    assert!(mean < Duration::from_millis(2), "{mean:?}");
    assert!(sim.events(0, Metric::Jitter).is_empty(), "{:?}", sim.events(0, Metric::Jitter));
}

/// A peer that stops answering (every packet lost) is unreachable within 2 s, and
/// reachable again with its first answer; loss alone (20 %) never makes it so.
#[test]
fn a_silent_peer_is_unreachable_within_two_seconds() {
    let calm = LinkProfile { delay: Duration::from_millis(10), ..LinkProfile::default() };
    let mut sim = Sim::new(calm, 100, LinkConfig::default(), 61);
    sim.run_for(Duration::from_secs(10));
    sim.set_profile(LinkProfile { loss: 0.2, ..calm });
    sim.run_for(Duration::from_secs(20));
    assert!(sim.nodes[0].liveness.is_empty(), "20 % loss is not unreachable: {:?}", sim.nodes[0].liveness);
    sim.set_profile(LinkProfile { loss: 1.0, ..calm });
    let cut = sim.now;
    sim.run_for(Duration::from_secs(5));
    let (at, silent) = sim.nodes[0].liveness[0];
    let after = at - cut;
    println!("unreachable {after:?} after the cut (silent {silent:?})");
    assert!(after <= Duration::from_secs(2), "{after:?}");
    assert!(silent.is_some_and(|s| s >= Duration::from_millis(1_500)), "{silent:?}");
    assert_eq!(sim.nodes[0].liveness.len(), 1, "said once: {:?}", sim.nodes[0].liveness);
    sim.set_profile(calm);
    let healed = sim.now;
    sim.run_for(Duration::from_secs(3));
    let (back, none) = sim.nodes[0].liveness[1];
    assert!(none.is_none() && back - healed < Duration::from_secs(1), "{:?}", sim.nodes[0].liveness);
}
