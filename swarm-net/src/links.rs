//! Link measurement over live tunnels (data-flow stages 4 and 5): a
//! [`LinkMonitor`] and an [`SlaJudge`] per established tunnel. Probes and replies are
//! swarm frames inside the tunnel; the tunnel's own counters feed passive loss and
//! goodput; the judge runs every probe interval.
//!
//! A monitor lives while its tunnel is up: created on the first handshake (or the first
//! probe from the peer) and dropped when the tunnel goes down or closes, so lazily known
//! peers cost nothing here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use swarm_core::link::train;
use swarm_core::link::{
    LinkConfig, LinkMonitor, LinkStats, Metric, PassiveCounters, SlaEvent, SlaJudge, SlaPolicy, SlaState,
};
use swarm_core::tunnel::{FrameKind, PeerHandle, Tunnels};
use tokio::sync::oneshot;

use crate::node::NodeError;

/// Packets and body size of the throughput test's train: 128 x 1200 bytes (150 KB).
const TRAIN_PACKETS: u16 = 128;
const TRAIN_PACKET: usize = 1200;

/// One metric's verdict, for reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlaVerdict {
    /// The metric.
    pub metric: Metric,
    /// Unknown (not enough samples), ok, or degraded.
    pub state: SlaState,
    /// The last value judged (ms, ms, ratio, bits per second).
    pub value: Option<f64>,
    /// The target, in the same unit.
    pub target: f64,
}

struct Link {
    monitor: LinkMonitor,
    judge: SlaJudge,
}

/// A frame waiting to be sealed and sent.
pub(crate) struct PendingFrame {
    pub(crate) peer: PeerHandle,
    pub(crate) kind: FrameKind,
    pub(crate) len: usize,
    pub(crate) body: [u8; 32],
}

pub(crate) struct Links {
    config: LinkConfig,
    policy: SlaPolicy,
    links: HashMap<PeerHandle, Link>,
    pending: Vec<PendingFrame>,
    /// Train packets to send (large bodies, on demand only).
    trains: Vec<(PeerHandle, Vec<u8>)>,
    /// Callers waiting for a throughput result, with their deadline.
    waiting: HashMap<PeerHandle, (Instant, oneshot::Sender<Result<f64, NodeError>>)>,
    next_judge: Option<Instant>,
}

fn pending(peer: PeerHandle, kind: FrameKind, bytes: &[u8]) -> PendingFrame {
    let mut body = [0u8; 32];
    let len = bytes.len().min(32);
    body[..len].copy_from_slice(&bytes[..len]);
    PendingFrame { peer, kind, len, body }
}

impl Links {
    pub(crate) fn new(config: LinkConfig, policy: SlaPolicy) -> Self {
        Self {
            config,
            policy,
            links: HashMap::new(),
            pending: Vec::new(),
            trains: Vec::new(),
            waiting: HashMap::new(),
            next_judge: None,
        }
    }

    fn link(&mut self, now: Instant, peer: PeerHandle) -> &mut Link {
        let (config, policy) = (self.config, self.policy);
        self.next_judge.get_or_insert(now + config.probe_interval);
        self.links
            .entry(peer)
            .or_insert_with(|| Link { monitor: LinkMonitor::new(now, config), judge: SlaJudge::new(policy) })
    }

    /// The tunnel to `peer` carries data: start measuring it.
    pub(crate) fn up(&mut self, now: Instant, peer: PeerHandle) {
        self.link(now, peer);
    }

    /// The tunnel went down or closed.
    pub(crate) fn down(&mut self, peer: PeerHandle) {
        self.links.remove(&peer);
        if let Some((_, reply)) = self.waiting.remove(&peer) {
            let _ = reply.send(Err(NodeError::Throughput("the tunnel went down".to_owned())));
        }
    }

    /// A probe from the peer: queue the reply.
    pub(crate) fn on_probe(&mut self, now: Instant, peer: PeerHandle, body: &[u8]) {
        if let Ok(reply) = self.link(now, peer).monitor.handle_probe(now, body) {
            self.pending.push(pending(peer, FrameKind::PROBE_REPLY, &reply));
        }
    }

    /// A reply to one of our probes.
    pub(crate) fn on_reply(&mut self, now: Instant, peer: PeerHandle, body: &[u8]) {
        if let Some(link) = self.links.get_mut(&peer) {
            let _ = link.monitor.handle_reply(now, body);
        }
    }

    /// Starts a throughput test on the link to `peer`; `reply` gets the result.
    pub(crate) fn measure(
        &mut self,
        now: Instant,
        peer: PeerHandle,
        reply: oneshot::Sender<Result<f64, NodeError>>,
    ) {
        let Some(link) = self.links.get_mut(&peer) else {
            let _ = reply.send(Err(NodeError::Throughput("no live tunnel to measure".to_owned())));
            return;
        };
        match link.monitor.start_train(now) {
            Ok(id) => {
                for i in 0..TRAIN_PACKETS {
                    self.trains.push((peer, train::packet(id, i, TRAIN_PACKETS, TRAIN_PACKET)));
                }
                self.waiting.insert(peer, (now + train::TRAIN_TIMEOUT + Duration::from_secs(1), reply));
            }
            Err(e) => {
                let _ = reply.send(Err(NodeError::Throughput(e.to_string())));
            }
        }
    }

    /// A train packet from the peer; its report is queued when the train ends.
    pub(crate) fn on_train(&mut self, now: Instant, peer: PeerHandle, body: &[u8]) {
        let link = self.link(now, peer);
        if link.monitor.handle_train_packet(now, body).is_ok() {
            if let Some(report) = link.monitor.poll_train_report() {
                self.pending.push(pending(peer, FrameKind::TRAIN_REPORT, &report));
            }
        }
    }

    /// The peer's report on our train.
    pub(crate) fn on_train_report(&mut self, now: Instant, peer: PeerHandle, body: &[u8]) {
        let Some(link) = self.links.get_mut(&peer) else { return };
        if let Ok(Some(bps)) = link.monitor.handle_train_report(now, body) {
            if let Some((_, reply)) = self.waiting.remove(&peer) {
                let _ = reply.send(Ok(bps));
            }
        }
    }

    /// Frames to send now.
    pub(crate) fn take_pending(&mut self) -> Vec<PendingFrame> {
        std::mem::take(&mut self.pending)
    }

    /// Train packets to send now.
    pub(crate) fn take_trains(&mut self) -> Vec<(PeerHandle, Vec<u8>)> {
        std::mem::take(&mut self.trains)
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let waiting = self.waiting.values().map(|(deadline, _)| *deadline);
        self.links
            .values()
            .filter_map(|l| l.monitor.poll_timeout())
            .chain(self.next_judge)
            .chain(waiting)
            .min()
    }

    /// Probes due, timeouts, and (every probe interval) counters and judgements; SLA
    /// events come back with their peer.
    pub(crate) fn handle_timeout(&mut self, now: Instant, tunnels: &Tunnels) -> Vec<(PeerHandle, SlaEvent)> {
        for (peer, link) in &mut self.links {
            link.monitor.handle_timeout(now);
            if let Some(probe) = link.monitor.poll_probe(now) {
                self.pending.push(pending(*peer, FrameKind::PROBE, &probe));
            }
            if let Some(report) = link.monitor.poll_train_report() {
                self.pending.push(pending(*peer, FrameKind::TRAIN_REPORT, &report));
            }
        }
        let expired: Vec<PeerHandle> =
            self.waiting.iter().filter(|(_, (deadline, _))| *deadline <= now).map(|(p, _)| *p).collect();
        for peer in expired {
            if let Some((_, reply)) = self.waiting.remove(&peer) {
                let _ = reply
                    .send(Err(NodeError::Throughput("the peer did not report the train in time".to_owned())));
            }
        }
        let mut events = Vec::new();
        if self.next_judge.is_some_and(|t| t <= now) {
            self.next_judge = Some(now + self.config.probe_interval);
            for (peer, link) in &mut self.links {
                if let Some(s) = tunnels.status(*peer, now) {
                    let c = PassiveCounters::from(&s);
                    link.monitor.handle_counters(now, c);
                }
                let stats = link.monitor.snapshot(now);
                link.judge.judge(now, &stats);
                while let Some(e) = link.judge.poll_event() {
                    events.push((*peer, e));
                }
            }
        }
        events
    }

    /// The measurements and verdicts of one link.
    pub(crate) fn report(&mut self, now: Instant, peer: PeerHandle) -> Option<(LinkStats, Vec<SlaVerdict>)> {
        let link = self.links.get_mut(&peer)?;
        let stats = link.monitor.snapshot(now);
        let verdicts = Metric::ALL
            .iter()
            .map(|&metric| SlaVerdict {
                metric,
                state: link.judge.state(metric),
                value: link.judge.value(metric),
                target: link.judge.policy().target(metric),
            })
            .collect();
        Some((stats, verdicts))
    }
}
