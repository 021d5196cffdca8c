//! [`LinkTable`]: every link of a node (data-flow stages 4 and 5), sans-IO. It owns a
//! [`LinkMonitor`] and an [`SlaJudge`] per live tunnel, the probe and judge schedule,
//! throughput trains, the summaries the node gossips and its Vivaldi coordinate. The
//! node's data plane only moves its frames and feeds it the tunnels' counters.
//!
//! Feed it with
//! - [`LinkTable::handle_tunnel_up`] / [`LinkTable::handle_tunnel_down`] as tunnels come
//!   and go (a link is measured while its tunnel carries data),
//! - [`LinkTable::handle_frame`] for each link frame (probe, reply, train, report)
//!   decrypted from a peer,
//! - [`LinkTable::handle_counters`] for each link when [`LinkTable::counters_due`] says
//!   so (once per probe interval, just before the judge runs),
//! - [`LinkTable::handle_coordinate`] with each peer's gossiped Vivaldi coordinate,
//! - [`LinkTable::handle_timeout`] when [`LinkTable::poll_timeout`] is due;
//!
//! and after every call drain [`LinkTable::poll_transmit`] (frames to seal and send),
//! [`LinkTable::poll_event`] (SLA verdicts, throughput results) and
//! [`LinkTable::poll_gossip`] (summaries for the node's record) until they return `None`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;

use super::monitor::{LinkConfig, LinkMonitor, LinkStats, PassiveCounters, RttBuckets, MAX_FAST_LINKS};
use super::sla::{Metric, SlaEvent, SlaJudge, SlaPolicy, SlaState};
use super::summary::{degraded, LinkSummaries, LinkSummary, MAX_LINKS};
use super::train::{self, TrainError};
use super::vivaldi::Coordinate;
use crate::bounded::BoundedVec;
use crate::tunnel::FrameKind;

/// A monitor of the table: fast probing only when the table grants it
/// ([`MAX_FAST_LINKS`] at once, in [`LinkTable::handle_timeout`]).
fn table_monitor(now: Instant, config: LinkConfig) -> LinkMonitor {
    let mut monitor = LinkMonitor::new(now, config);
    monitor.grant_fast(false);
    monitor
}

/// Packets and body size of a throughput test's train: 128 x 1200 bytes (150 KB).
pub const TRAIN_PACKETS: u16 = 128;
/// Body size of a train packet.
pub const TRAIN_PACKET: usize = 1200;
/// How often the summaries and the coordinate are refreshed for the record.
pub const GOSSIP_INTERVAL: Duration = Duration::from_secs(1);
/// Round trips a link needs before it moves the coordinate.
const VIVALDI_MIN_SAMPLES: u64 = 5;
/// Inbound packets behind a loss figure before it is gossiped.
const GOSSIP_LOSS_AFTER: u64 = 1000;
/// Largest link frame body other than a train packet.
const SMALL_FRAME: usize = 32;

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

/// Why a throughput test gave no figure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThroughputError {
    /// No tunnel to the peer carries data.
    #[error("no live tunnel to measure")]
    NoLink,
    /// The train could not start (one in flight, or too soon after the last).
    #[error(transparent)]
    Start(#[from] TrainError),
    /// The tunnel went down during the test.
    #[error("the tunnel went down")]
    Down,
    /// The peer's report did not come.
    #[error("the peer did not report the train in time")]
    Timeout,
}

/// Why a ping got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// No tunnel to the peer carries data.
    #[error("no live tunnel to ping")]
    NoLink,
    /// The tunnel went down before the answer.
    #[error("the tunnel went down")]
    Down,
    /// No answer within [`PING_TIMEOUT`].
    #[error("no answer within {} s", PING_TIMEOUT.as_secs())]
    Timeout,
}

/// How long a ping waits for its answer.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What happened on a link.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// An SLA verdict changed.
    Sla {
        /// The peer at the other end.
        peer: PeerId,
        /// The change.
        event: SlaEvent,
    },
    /// A ping ([`LinkTable::ping`]) was answered, or not.
    Pong {
        /// The peer.
        peer: PeerId,
        /// The round trip over the tunnel, or why not.
        result: Result<Duration, PingError>,
    },
    /// No probe to the peer was answered for [`LinkConfig::unreachable_after`]: it is
    /// gone, or every path to it is.
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// How long it has been silent.
        silent: Duration,
    },
    /// An unreachable peer answered again.
    Reachable {
        /// The peer.
        peer: PeerId,
    },
    /// A throughput test ended.
    Throughput {
        /// The peer.
        peer: PeerId,
        /// Bits per second of payload, or why not.
        result: Result<f64, ThroughputError>,
    },
}

/// A link frame to seal and send to `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTransmit<'a> {
    /// The peer.
    pub peer: PeerId,
    /// The frame's kind.
    pub kind: FrameKind,
    /// Its body.
    pub body: &'a [u8],
}

/// Summaries for the node's record.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkGossip {
    /// The coordinate and the freshest links.
    pub summaries: LinkSummaries,
    /// An SLA verdict changed: publish now rather than at the next heartbeat.
    pub urgent: bool,
}

struct Link {
    monitor: LinkMonitor,
    /// Every round trip since the tunnel came up (kept across path changes).
    rtt_buckets: RttBuckets,
    judge: SlaJudge,
    /// When the tunnel's session in use was made.
    last_handshake: Option<Instant>,
    /// When the peer last answered a probe (or, before its first answer, when the link
    /// began to be measured).
    heard: Instant,
    /// Probes sent since the last answer.
    unanswered: u32,
    /// No probe answered for [`LinkConfig::unreachable_after`].
    unreachable: bool,
}

/// Probes that must go unanswered, besides the time, before a link is unreachable: a
/// node too busy to send its probes has no evidence against its peer.
const MIN_UNANSWERED: u32 = 5;

/// The table's timers (quinn-proto's shape: an enum and an array of deadlines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Counters and SLA judgements of every link, each probe interval while any link.
    Judge = 0,
    /// Summaries and coordinate for the record.
    Gossip = 1,
}

impl From<Timer> for usize {
    fn from(t: Timer) -> usize {
        t as usize
    }
}

type TimerTable = crate::timer::TimerTable<Timer, 2>;

/// A probe, reply or report waiting to be sent: peer, kind, length, body.
type SmallFrame = (PeerId, FrameKind, usize, [u8; SMALL_FRAME]);

/// A train being sent: the peer, its id, the next packet.
#[derive(Debug, Clone, Copy)]
struct Sending {
    peer: PeerId,
    id: u32,
    next: u16,
}

/// See the module docs.
pub struct LinkTable {
    config: LinkConfig,
    policy: SlaPolicy,
    links: HashMap<PeerId, Link>,
    /// Peers' gossiped coordinates.
    coordinates: HashMap<PeerId, Coordinate>,
    coordinate: Coordinate,
    timers: TimerTable,
    frames: VecDeque<SmallFrame>,
    trains: VecDeque<Sending>,
    /// Throughput tests waiting for their report, with their deadline.
    waiting: HashMap<PeerId, Instant>,
    /// Pings waiting for their reply: the probe's sequence number and the deadline.
    pings: HashMap<PeerId, (u32, Instant)>,
    events: VecDeque<LinkEvent>,
    /// Whether summaries are due, and whether urgently.
    gossip: Option<bool>,
    scratch: [u8; train::MAX_PACKET],
}

impl core::fmt::Debug for LinkTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LinkTable")
            .field("links", &self.links.len())
            .field("coordinate", &self.coordinate)
            .finish_non_exhaustive()
    }
}

fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl LinkTable {
    /// A table with no link, created at `now` (its first summaries are due a gossip
    /// interval later).
    pub fn new(now: Instant, config: LinkConfig, policy: SlaPolicy) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Gossip, now + GOSSIP_INTERVAL);
        Self {
            config,
            policy,
            links: HashMap::new(),
            coordinates: HashMap::new(),
            coordinate: Coordinate::default(),
            timers,
            frames: VecDeque::new(),
            trains: VecDeque::new(),
            waiting: HashMap::new(),
            pings: HashMap::new(),
            events: VecDeque::new(),
            gossip: None,
            scratch: [0; train::MAX_PACKET],
        }
    }

    fn link(&mut self, now: Instant, peer: PeerId) -> &mut Link {
        let (config, policy) = (self.config, self.policy);
        if self.timers.get(Timer::Judge).is_none() {
            self.timers.set(Timer::Judge, now + config.probe_interval);
        }
        self.links.entry(peer).or_insert_with(|| Link {
            monitor: table_monitor(now, config),
            rtt_buckets: RttBuckets::default(),
            judge: SlaJudge::new(policy),
            last_handshake: None,
            heard: now,
            unanswered: 0,
            unreachable: false,
        })
    }

    /// A handshake with `peer` completed (the first, or a rekey): its link is measured
    /// from now on.
    pub fn handle_tunnel_up(&mut self, now: Instant, peer: PeerId) {
        self.link(now, peer).last_handshake = Some(now);
    }

    /// The tunnel to `peer` went down or closed: its measurements end, and a throughput
    /// test in flight fails.
    pub fn handle_tunnel_down(&mut self, peer: &PeerId) {
        self.links.remove(peer);
        self.trains.retain(|t| t.peer != *peer);
        self.frames.retain(|f| f.0 != *peer);
        if self.waiting.remove(peer).is_some() {
            let result = Err(ThroughputError::Down);
            self.events.push_back(LinkEvent::Throughput { peer: *peer, result });
        }
        if self.pings.remove(peer).is_some() {
            self.events.push_back(LinkEvent::Pong { peer: *peer, result: Err(PingError::Down) });
        }
        if self.links.is_empty() {
            self.timers.stop(Timer::Judge);
        }
    }

    /// The tunnel to `peer` moved to another path (direct, or through a relay): the
    /// link's measurement windows restart, so the old path's figures do not mix with the
    /// new one's. The SLA judge keeps its verdicts (a breach still needs its recovery),
    /// and a throughput test in flight fails.
    pub fn handle_path_change(&mut self, now: Instant, peer: &PeerId) {
        let config = self.config;
        let Some(link) = self.links.get_mut(peer) else { return };
        link.monitor = table_monitor(now, config);
        self.trains.retain(|t| t.peer != *peer);
        if self.waiting.remove(peer).is_some() {
            let result = Err(ThroughputError::Down);
            self.events.push_back(LinkEvent::Throughput { peer: *peer, result });
        }
    }

    /// `peer`'s gossiped coordinate (`None`: it gossips none, or left the view).
    pub fn handle_coordinate(&mut self, peer: PeerId, coordinate: Option<Coordinate>) {
        match coordinate {
            Some(c) => self.coordinates.insert(peer, c),
            None => self.coordinates.remove(&peer),
        };
    }

    /// A link frame from `peer` (other kinds are ignored): a probe is answered, a reply
    /// gives a round trip, train packets and reports measure throughput.
    pub fn handle_frame(&mut self, now: Instant, peer: PeerId, kind: FrameKind, body: &[u8]) {
        match kind {
            FrameKind::PROBE => {
                if let Ok(reply) = self.link(now, peer).monitor.handle_probe(now, body) {
                    self.push_frame(peer, FrameKind::PROBE_REPLY, &reply);
                }
            }
            FrameKind::PROBE_REPLY => {
                if let Some(link) = self.links.get_mut(&peer) {
                    let seq = crate::link::probe::ProbeReply::parse(body).map(|r| r.seq);
                    let rtt = link.monitor.handle_reply(now, body);
                    if let Ok(Some(rtt)) = rtt {
                        link.rtt_buckets.record(rtt);
                        link.heard = now;
                        link.unanswered = 0;
                        if link.unreachable {
                            link.unreachable = false;
                            self.events.push_back(LinkEvent::Reachable { peer });
                        }
                    }
                    if let (Ok(Some(rtt)), Ok(seq)) = (rtt, seq) {
                        if self.pings.get(&peer).is_some_and(|(s, _)| *s == seq) {
                            self.pings.remove(&peer);
                            self.events.push_back(LinkEvent::Pong { peer, result: Ok(rtt) });
                        }
                    }
                }
            }
            FrameKind::TRAIN => {
                let link = self.link(now, peer);
                if link.monitor.handle_train_packet(now, body).is_ok() {
                    if let Some(report) = link.monitor.poll_train_report() {
                        self.push_frame(peer, FrameKind::TRAIN_REPORT, &report);
                    }
                }
            }
            FrameKind::TRAIN_REPORT => self.on_train_report(now, peer, body),
            _ => {}
        }
    }

    fn on_train_report(&mut self, now: Instant, peer: PeerId, body: &[u8]) {
        let Some(link) = self.links.get_mut(&peer) else { return };
        if let Ok(Some(bps)) = link.monitor.handle_train_report(now, body) {
            if self.waiting.remove(&peer).is_some() {
                self.events.push_back(LinkEvent::Throughput { peer, result: Ok(bps) });
            }
        }
    }

    fn push_frame(&mut self, peer: PeerId, kind: FrameKind, bytes: &[u8]) {
        push_frame(&mut self.frames, peer, kind, bytes);
    }

    /// Sends a probe to `peer` now (an operator's ping, like `tailscale ping`): a
    /// [`LinkEvent::Pong`] follows with its round trip, or an error after
    /// [`PING_TIMEOUT`]. The sample also counts in the link's statistics. A second ping
    /// while one waits replaces it.
    pub fn ping(&mut self, now: Instant, peer: PeerId) -> Result<(), PingError> {
        let link = self.links.get_mut(&peer).ok_or(PingError::NoLink)?;
        let (seq, body) = link.monitor.probe_now(now);
        self.push_frame(peer, FrameKind::PROBE, &body);
        self.pings.insert(peer, (seq, now + PING_TIMEOUT));
        Ok(())
    }

    /// Starts a throughput test on the link to `peer`: a train of [`TRAIN_PACKETS`]
    /// packets leaves through [`Self::poll_transmit`], and a [`LinkEvent::Throughput`]
    /// follows (the figure also feeds the link's throughput SLA).
    pub fn measure(&mut self, now: Instant, peer: PeerId) -> Result<(), ThroughputError> {
        let link = self.links.get_mut(&peer).ok_or(ThroughputError::NoLink)?;
        let id = link.monitor.start_train(now)?;
        self.trains.push_back(Sending { peer, id, next: 0 });
        self.waiting.insert(peer, now + train::TRAIN_TIMEOUT + Duration::from_secs(1));
        Ok(())
    }

    /// Whether the judge runs at the next [`Self::handle_timeout`] at `now`: feed every
    /// link's counters first.
    pub fn counters_due(&self, now: Instant) -> bool {
        self.timers.is_due(Timer::Judge, now)
    }

    /// The cumulative counters of the tunnel to `peer`, and when its session in use
    /// was made.
    pub fn handle_counters(
        &mut self,
        now: Instant,
        peer: &PeerId,
        counters: PassiveCounters,
        last_handshake: Option<Instant>,
    ) {
        if let Some(link) = self.links.get_mut(peer) {
            link.monitor.handle_counters(now, counters);
            link.last_handshake = last_handshake.or(link.last_handshake);
        }
    }

    /// Probes due, lost probes, throughput tests out of time, and (each probe interval)
    /// the SLA judgements; the summaries each gossip interval.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Self { links, frames, .. } = self;
        // Links keep fast probing while they want it; others get it while fewer than
        // `MAX_FAST_LINKS` hold it (first come, first served).
        let mut fast = links.values().filter(|l| l.monitor.probing_fast(now)).count();
        for (peer, link) in links.iter_mut() {
            link.monitor.handle_timeout(now);
            if !link.monitor.wants_fast(now) {
                link.monitor.grant_fast(false);
            } else if !link.monitor.probing_fast(now) && fast < MAX_FAST_LINKS {
                link.monitor.grant_fast(true);
                fast += 1;
            }
            if let Some(probe) = link.monitor.poll_probe(now) {
                link.unanswered = link.unanswered.saturating_add(1);
                push_frame(frames, *peer, FrameKind::PROBE, &probe);
            }
            if let Some(report) = link.monitor.poll_train_report() {
                push_frame(frames, *peer, FrameKind::TRAIN_REPORT, &report);
            }
        }
        self.expire_tests(now);
        if self.timers.is_due(Timer::Judge, now) {
            self.timers.set(Timer::Judge, now + self.config.probe_interval);
            self.judge(now);
        }
        if self.timers.is_due(Timer::Gossip, now) {
            self.timers.set(Timer::Gossip, now + GOSSIP_INTERVAL);
            self.gossip.get_or_insert(false);
        }
    }

    fn expire_tests(&mut self, now: Instant) {
        let expired: Vec<PeerId> =
            self.waiting.iter().filter(|(_, at)| **at <= now).map(|(p, _)| *p).collect();
        for peer in expired {
            self.waiting.remove(&peer);
            self.events.push_back(LinkEvent::Throughput { peer, result: Err(ThroughputError::Timeout) });
        }
        let unanswered: Vec<PeerId> =
            self.pings.iter().filter(|(_, (_, at))| *at <= now).map(|(p, _)| *p).collect();
        for peer in unanswered {
            self.pings.remove(&peer);
            self.events.push_back(LinkEvent::Pong { peer, result: Err(PingError::Timeout) });
        }
    }

    fn judge(&mut self, now: Instant) {
        let mut changed = false;
        for (peer, link) in &mut self.links {
            let silent = now.saturating_duration_since(link.heard);
            if !link.unreachable
                && silent >= self.config.unreachable_after
                && link.unanswered >= MIN_UNANSWERED
            {
                link.unreachable = true;
                self.events.push_back(LinkEvent::Unreachable { peer: *peer, silent });
            }
            let stats = link.monitor.snapshot(now);
            link.judge.judge(now, &stats);
            while let Some(event) = link.judge.poll_event() {
                self.events.push_back(LinkEvent::Sla { peer: *peer, event });
                changed = true;
            }
        }
        if changed {
            // The swarm hears a changed verdict now, not at the next heartbeat.
            self.gossip = Some(true);
        }
    }

    /// The next moment [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let monitors = self.links.values().filter_map(|l| l.monitor.poll_timeout());
        let pings = self.pings.values().map(|(_, at)| *at);
        monitors.chain(self.waiting.values().copied()).chain(pings).chain(self.timers.next()).min()
    }

    /// The next frame to seal and send; drain until `None`.
    pub fn poll_transmit(&mut self) -> Option<LinkTransmit<'_>> {
        if let Some((peer, kind, len, body)) = self.frames.pop_front() {
            self.scratch[..len].copy_from_slice(&body[..len]);
            return Some(LinkTransmit { peer, kind, body: &self.scratch[..len] });
        }
        let sending = self.trains.front_mut()?;
        let (peer, id, index) = (sending.peer, sending.id, sending.next);
        sending.next += 1;
        if sending.next >= TRAIN_PACKETS {
            self.trains.pop_front();
        }
        let len = train::emit_packet(id, index, TRAIN_PACKETS, &mut self.scratch[..TRAIN_PACKET]);
        Some(LinkTransmit { peer, kind: FrameKind::TRAIN, body: &self.scratch[..len] })
    }

    /// The next event; drain until `None`.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// Summaries for the record, each gossip interval and at once when an SLA verdict
    /// changed: first the coordinate moves by each measured link's median round trip.
    pub fn poll_gossip(&mut self, now: Instant) -> Option<LinkGossip> {
        let urgent = self.gossip.take()?;
        Some(LinkGossip { summaries: self.summaries(now), urgent })
    }

    /// Moves the coordinate by each link's median round trip and summarises the links,
    /// freshest first, at most [`MAX_LINKS`].
    pub fn summaries(&mut self, now: Instant) -> LinkSummaries {
        let mut out: Vec<(Duration, LinkSummary)> = Vec::with_capacity(self.links.len());
        let mut peers: Vec<PeerId> = self.links.keys().copied().collect();
        peers.sort_unstable();
        for peer in peers {
            let Some(link) = self.links.get_mut(&peer) else { continue };
            // One snapshot per link per tick (each merges the link's histogram windows).
            let stats = link.monitor.snapshot(now);
            if let Some(q) = stats.short.rtt.filter(|q| q.samples >= VIVALDI_MIN_SAMPLES) {
                let theirs = self.coordinates.get(&peer).copied().unwrap_or_default();
                let bytes = peer.to_bytes();
                let nudge = bytes.iter().rev().take(8).fold(0u64, |h, b| (h << 8) | u64::from(*b));
                self.coordinate.update(q.p50.as_secs_f64() * 1e3, &theirs, nudge);
            }
            if let Some(s) = summarise(now, peer, &stats, link) {
                out.push((stats.age.unwrap_or_default(), s));
            }
        }
        out.sort_by_key(|(age, _)| *age);
        out.truncate(MAX_LINKS);
        let links = out.into_iter().map(|(_, s)| s).collect();
        LinkSummaries {
            coordinate: Some(self.coordinate),
            links: BoundedVec::try_from_vec(links).unwrap_or_default(),
        }
    }

    /// The summary of the link to `peer` as it would be gossiped now (its short
    /// window), without moving the coordinate: what a detour's first hop is judged by.
    pub fn summary(&mut self, now: Instant, peer: &PeerId) -> Option<LinkSummary> {
        let link = self.links.get_mut(peer)?;
        let stats = link.monitor.snapshot(now);
        summarise(now, *peer, &stats, link)
    }

    /// The measurements and verdicts of the link to `peer`.
    pub fn report(&mut self, now: Instant, peer: &PeerId) -> Option<(LinkStats, Vec<SlaVerdict>)> {
        let link = self.links.get_mut(peer)?;
        let mut stats = link.monitor.snapshot(now);
        stats.rtt_buckets = link.rtt_buckets.clone();
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

    /// The peers whose links are measured.
    pub fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.links.keys()
    }

    /// This node's network coordinate.
    pub fn coordinate(&self) -> Coordinate {
        self.coordinate
    }
}

/// A frame of at most [`SMALL_FRAME`] bytes, queued without allocating.
fn push_frame(frames: &mut VecDeque<SmallFrame>, peer: PeerId, kind: FrameKind, bytes: &[u8]) {
    let mut body = [0u8; SMALL_FRAME];
    let len = bytes.len().min(SMALL_FRAME);
    body[..len].copy_from_slice(&bytes[..len]);
    frames.push_back((peer, kind, len, body));
}

/// The gossiped summary of one link; none before its first round trip.
fn summarise(now: Instant, peer: PeerId, stats: &LinkStats, link: &Link) -> Option<LinkSummary> {
    let q = stats.short.rtt?;
    let jitter = [stats.jitter_in, stats.jitter_out].into_iter().flatten().max().unwrap_or_default();
    let loss = stats.short.loss_in.filter(|l| l.samples >= GOSSIP_LOSS_AFTER);
    let bits = Metric::ALL
        .iter()
        .filter(|&&m| link.judge.state(m) == SlaState::Degraded)
        .map(|m| match m {
            Metric::Latency => degraded::LATENCY,
            Metric::Jitter => degraded::JITTER,
            Metric::Loss => degraded::LOSS,
            Metric::Throughput => degraded::THROUGHPUT,
        })
        .fold(0u8, |a, b| a | b);
    let age = stats.age.unwrap_or_default();
    let kbps = |b: Option<f64>| b.map_or(0, |b| (b / 1e3) as u32);
    Some(LinkSummary {
        peer,
        rtt_p50_us: us(q.p50),
        rtt_p99_us: us(q.p99),
        rtt_samples: u32::try_from(q.samples).unwrap_or(u32::MAX),
        jitter_us: us(jitter),
        loss_ppm: loss.map(|l| (l.value * 1e6) as u32),
        loss_packets: loss.map_or(0, |l| u32::try_from(l.samples).unwrap_or(u32::MAX)),
        rx_kbps: kbps(stats.short.rx_bps),
        tx_kbps: kbps(stats.short.tx_bps),
        capacity_kbps: stats.throughput.map(|(bps, _)| (bps / 1e3) as u32),
        handshake_age_s: link.last_handshake.map_or(u32::MAX, |t| {
            u32::try_from(now.saturating_duration_since(t).as_secs()).unwrap_or(u32::MAX)
        }),
        age_ms: u32::try_from(age.as_millis()).unwrap_or(u32::MAX),
        degraded: bits,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)] // tests own the clock
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use super::*;

    fn peer(i: u8) -> PeerId {
        crate::Keypair::ed25519_from_bytes([i + 1; 32]).unwrap().public().to_peer_id()
    }

    /// Probes each peer was sent in `[from, to)`, running the table on virtual time.
    fn probes(
        table: &mut LinkTable,
        now: &mut Instant,
        from: Instant,
        to: Instant,
    ) -> HashMap<PeerId, usize> {
        let mut sent = HashMap::new();
        while *now < to {
            if table.poll_timeout().is_some_and(|t| t <= *now) {
                table.handle_timeout(*now);
            }
            while let Some(t) = table.poll_transmit() {
                if t.kind == FrameKind::PROBE && *now >= from {
                    *sent.entry(t.peer).or_insert(0) += 1;
                }
            }
            *now += Duration::from_millis(5);
        }
        sent
    }

    #[test]
    fn at_most_max_fast_links_probe_fast_and_the_rest_keep_the_interval() {
        let t0 = Instant::now();
        let config = LinkConfig::default();
        let mut table = LinkTable::new(t0, config, SlaPolicy::default());
        let peers: Vec<PeerId> = (0..20).map(peer).collect();
        for p in &peers {
            table.handle_tunnel_up(t0, *p);
        }
        let mut now = t0;
        // Nobody answers: after the probe timeout every probe is lost, so every link
        // wants fast probing from then on.
        let quiet = probes(&mut table, &mut now, t0, t0 + Duration::from_secs(1));
        assert!(quiet.values().all(|&n| n == 5), "the normal interval, 200 ms: {quiet:?}");
        let from = t0 + Duration::from_secs(3);
        let to = from + Duration::from_secs(2);
        probes(&mut table, &mut now, from, from);
        let sent = probes(&mut table, &mut now, from, to);
        let counts: Vec<usize> = peers.iter().map(|p| sent.get(p).copied().unwrap_or(0)).collect();
        // 2 s: 40 probes at the quarter interval, 10 at the normal one.
        let fast = counts.iter().filter(|&&n| n >= 35).count();
        assert_eq!(fast, MAX_FAST_LINKS, "{counts:?}");
        assert!(counts.iter().all(|&n| n == 10 || n >= 35), "{counts:?}");
    }
}
