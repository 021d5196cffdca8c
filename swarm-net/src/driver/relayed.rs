//! The path planner's glue, and relayed tunnels (issue 13, part 4). For each peer the
//! driver asks [`PathPlanner`] (swarm-core, sans-IO) whether to punch or to open a
//! relayed path, and through which relay; a relayed path is a libp2p stream through
//! one of our relays ([`crate::tunnel_relay`]), handed (on both sides) to the data
//! plane, which carries the tunnel over it while no direct endpoint is fresh.

use std::sync::Arc;
use std::time::Instant;

use libp2p::PeerId;
use swarm_core::nat::plan::{PeerFacts, PlanAction};
use swarm_core::nat::NatKind;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Driver;
use crate::api::{NodeEvent, Path};
use crate::tunnel_relay::{self, PathEvent, PathKind, RelayCounters, RelayIn};

/// Relayed datagrams handed to the data plane per turn of the loop, at most.
pub(super) const RELAYED_PER_TURN: usize = 64;

/// The relay service, its channels, and our attempts.
pub(super) struct Relayed {
    pub(super) control: libp2p_stream::Control,
    pub(super) counters: Arc<RelayCounters>,
    /// Paths opened or failed (ours and offered ones).
    pub(super) events: mpsc::Receiver<PathEvent>,
    pub(super) events_tx: mpsc::Sender<PathEvent>,
    /// Datagrams from relayed paths' pumps.
    pub(super) inbox: mpsc::Receiver<RelayIn>,
    server: JoinHandle<()>,
}

impl Relayed {
    /// Starts the relay service on `control`; `inbox` is the receiving end of the data
    /// plane's relay inbox.
    pub(super) fn start(
        control: libp2p_stream::Control,
        gate: Arc<crate::behaviour::RelayGate>,
        inbox: mpsc::Receiver<RelayIn>,
    ) -> Self {
        let counters = Arc::new(RelayCounters::default());
        let (events_tx, events) = mpsc::channel(64);
        let server =
            tokio::spawn(tunnel_relay::serve(control.clone(), gate, counters.clone(), events_tx.clone()));
        Self { control, counters, events, events_tx, inbox, server }
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Driver {
    /// Asks the path planner about `peer` (a record came, a punch ended, a path
    /// changed) and does what it says: offer a punch, or open a relayed path.
    pub(super) fn plan_path(&mut self, now: Instant, peer: PeerId) {
        let local = *self.swarm.local_peer_id();
        let nat = |p: &PeerId| self.view.get(p).map_or(NatKind::Unknown, |e| e.tunnel.nat);
        let facts = PeerFacts {
            we_are_lower: local < peer,
            our_nat: nat(&local),
            their_nat: nat(&peer),
            connected: self.swarm.is_connected(&peer),
            up: self.dataplane.status_of(&peer, now).is_some_and(|s| s.established),
            relayed: matches!(self.dataplane.path(&peer), Some(Path::Relayed { .. })),
            direct_fresh: self.dataplane.direct_fresh(now, &peer),
            relay_path: self.dataplane.has_relay_path(&peer),
        };
        let mut relays: Vec<PeerId> = self.reserved_relays().collect();
        relays.sort();
        match self.planner.decide(now, peer, &facts, &relays) {
            Some(PlanAction::Punch) => self.offer_punch(now, peer),
            Some(PlanAction::Relay(via)) => {
                tracing::debug!(%peer, %via, "opening a relayed path");
                let control = self.relayed.control.clone();
                let events = self.relayed.events_tx.clone();
                tokio::spawn(tunnel_relay::open(control, peer, via, false, events));
            }
            None => {}
        }
    }

    /// A path opened (ours, or one offered through a relay) or failed.
    pub(super) fn on_path_event(&mut self, event: PathEvent) {
        let now = Instant::now();
        match event {
            PathEvent::Opened { peer, via, stream, kind: PathKind::Fallback } => {
                self.planner.relay_ended(peer, true);
                if self.dataplane.add_relay_path(now, peer, via, stream, PathKind::Fallback) {
                    tracing::info!(%peer, %via, "relayed path open");
                }
            }
            PathEvent::Opened { peer, via, stream, kind: PathKind::DetourOut } => {
                self.on_detour_opened(now, peer, via, stream);
            }
            PathEvent::Opened { peer, via, stream, kind: PathKind::DetourIn } => {
                if self.dataplane.add_relay_path(now, peer, via, stream, PathKind::DetourIn) {
                    tracing::info!(%peer, %via, "the peer's detour to us is open");
                }
            }
            PathEvent::Failed { peer, via, why, detour: false } => {
                self.planner.relay_ended(peer, false);
                tracing::info!(%peer, %via, %why, "relayed path failed");
            }
            PathEvent::Failed { peer, via, why, detour: true } => {
                tracing::info!(%peer, %via, %why, "detour failed");
                self.detours.handle_failed(now, peer, via);
            }
        }
    }

    /// Hands relayed datagrams to the data plane: `first`, then what else is waiting
    /// (bounded per turn).
    pub(super) fn on_relayed(&mut self, first: RelayIn) {
        let now = Instant::now();
        self.dataplane.handle_relayed(now, first);
        for _ in 1..RELAYED_PER_TURN {
            match self.relayed.inbox.try_recv() {
                Ok(m) => self.dataplane.handle_relayed(now, m),
                Err(_) => break,
            }
        }
    }

    /// A tunnel's path changed.
    pub(super) fn on_path_changed(&mut self, peer: PeerId, path: crate::api::Path) {
        tracing::info!(%peer, %path, "tunnel path");
        self.emit(NodeEvent::TunnelPath { peer, path });
    }
}
