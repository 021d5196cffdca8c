//! Relayed tunnels (issue 13, part 4): when a tunnel cannot be punched (one side behind
//! a hard NAT, or a punch between easy NATs failed), the lower `PeerId` of the pair
//! opens a path through one of its relays ([`crate::tunnel_relay`]); both sides hand
//! the stream to the data plane, which carries the tunnel over it while no direct
//! endpoint is fresh. A failed or closed path is tried again after [`RETRY`], through
//! the next relay.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use swarm_core::nat::NatKind;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Driver;
use crate::api::NodeEvent;
use crate::tunnel_relay::{self, PathEvent, RelayCounters, RelayIn};

/// A pair whose relayed path failed is tried again after this.
const RETRY: Duration = Duration::from_secs(5);
/// Relayed datagrams handed to the data plane per turn of the loop, at most.
pub(super) const RELAYED_PER_TURN: usize = 64;

/// The relay service, its channels, and our attempts.
pub(super) struct Relayed {
    pub(super) control: libp2p_stream::Control,
    pub(super) counters: Arc<RelayCounters>,
    /// Paths opened or failed (ours and offered ones).
    pub(super) events: mpsc::Receiver<PathEvent>,
    events_tx: mpsc::Sender<PathEvent>,
    /// Datagrams from relayed paths' pumps.
    pub(super) inbox: mpsc::Receiver<RelayIn>,
    server: JoinHandle<()>,
    /// Attempts in flight.
    opening: HashSet<PeerId>,
    /// When we last tried each peer, and how many attempts failed in a row.
    last: HashMap<PeerId, (Instant, usize)>,
    /// Peers a punch to failed (so easy/easy pairs are relayed too).
    pub(super) punch_failed: HashSet<PeerId>,
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
        Self {
            control,
            counters,
            events,
            events_tx,
            inbox,
            server,
            opening: HashSet::new(),
            last: HashMap::new(),
            punch_failed: HashSet::new(),
        }
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Driver {
    /// Opens a relayed path to `peer` when we are the lower `PeerId`, both of us sit
    /// behind NATs that cannot be punched between (one is hard, or a punch failed), no
    /// direct endpoint is fresh and no path exists or is being opened, and the last
    /// attempt is [`RETRY`] old.
    pub(super) fn maybe_relay(&mut self, now: Instant, peer: PeerId) {
        let local = *self.swarm.local_peer_id();
        let nat = |p: &PeerId| self.view.get(p).map(|e| e.tunnel.nat);
        let (ours, theirs) = (nat(&local), nat(&peer));
        let natted = |k: Option<NatKind>| matches!(k, Some(NatKind::Easy | NatKind::Hard));
        let punchable = ours == Some(NatKind::Easy)
            && theirs == Some(NatKind::Easy)
            && !self.relayed.punch_failed.contains(&peer);
        if local >= peer || !natted(ours) || !natted(theirs) || punchable {
            return;
        }
        if self.dataplane.has_relay_path(&peer)
            || self.dataplane.direct_fresh(now, &peer)
            || self.relayed.opening.contains(&peer)
        {
            return;
        }
        let (last, failures) = self.relayed.last.get(&peer).copied().unwrap_or((now - RETRY, 0));
        if now.saturating_duration_since(last) < RETRY {
            return;
        }
        let mut relays: Vec<PeerId> = self.reserved_relays().filter(|r| *r != peer).collect();
        if relays.is_empty() {
            return;
        }
        relays.sort();
        let via = relays[failures % relays.len()];
        self.relayed.last.insert(peer, (now, failures));
        self.relayed.opening.insert(peer);
        tracing::debug!(%peer, %via, "opening a relayed path");
        let control = self.relayed.control.clone();
        let events = self.relayed.events_tx.clone();
        tokio::spawn(tunnel_relay::open(control, peer, via, events));
    }

    /// A path opened (ours, or one offered through a relay) or failed.
    pub(super) fn on_path_event(&mut self, event: PathEvent) {
        let now = Instant::now();
        match event {
            PathEvent::Opened { peer, via, stream } => {
                self.relayed.opening.remove(&peer);
                if let Some((_, failures)) = self.relayed.last.get_mut(&peer) {
                    *failures = 0;
                }
                if self.dataplane.add_relay_path(now, peer, via, stream) {
                    tracing::info!(%peer, %via, "relayed path open");
                }
            }
            PathEvent::Failed { peer, via, why } => {
                self.relayed.opening.remove(&peer);
                if let Some((_, failures)) = self.relayed.last.get_mut(&peer) {
                    *failures += 1;
                }
                tracing::info!(%peer, %via, %why, "relayed path failed");
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
