//! Kademlia, its routing-table refreshes on the node's own schedule.
//!
//! libp2p-kad 0.49 starts a bootstrap (a walk to the node's own key, then one walk per
//! bucket farther out) by itself: when a peer enters a routing table of fewer than 20,
//! and on a new listen address while nothing is connected. At a cold start that is
//! every node, at the moment every node also walks to the namespace key
//! (`driver::find`): in a 64-node join those walks opened half of the join's
//! connections (56-61 peers per node against 34-39 without them) and about 40 % of its
//! CPU (docs/self-healing.md, "Kademlia's own bootstraps"). The setting
//! that turns them off is test-only in that release (`set_automatic_bootstrap_throttle`,
//! rust-libp2p#5341), so this wrapper ends each bootstrap it did not start as soon as
//! it appears: the few requests kad queued with it still go out, its later walks do
//! not. The node refreshes its table itself ([`Kademlia::refresh`], when
//! [`swarm_core::discovery::DiscoverySchedule`] says so: one walk interval after it joined,
//! then every five minutes) and walks to a random key in between.

use std::ops::{Deref, DerefMut};
use std::task::{Context, Poll};

use libp2p::kad::{self, store::MemoryStore, QueryId, QueryInfo};
use libp2p::swarm::{FromSwarm, NetworkBehaviour, THandlerInEvent, ToSwarm};

/// [`kad::Behaviour`] whose bootstraps are the node's own (module docs). Everything
/// else is kad's: reach it through `Deref`; a bootstrap started there, not by
/// [`Kademlia::refresh`], is ended like kad's own.
pub(crate) struct Kademlia {
    inner: kad::Behaviour<MemoryStore>,
    /// The refresh under way, ours.
    refresh: Option<QueryId>,
    /// The last bootstrap of kad's own that was ended (it goes on under the same id from
    /// walk to walk, ended again at each).
    ending: Option<QueryId>,
    /// Bootstraps ended that kad started by itself.
    ended: u64,
    /// Refreshes that walked to the end.
    refreshed: u64,
}

impl Kademlia {
    pub(crate) fn new(inner: kad::Behaviour<MemoryStore>) -> Self {
        Self { inner, refresh: None, ending: None, ended: 0, refreshed: 0 }
    }

    /// Refreshes the routing table (a bootstrap), unless a refresh is under way or the
    /// table is empty.
    pub(crate) fn refresh(&mut self) {
        if self.refresh.is_some_and(|id| self.inner.query(&id).is_some()) {
            return;
        }
        self.refresh = self.inner.bootstrap().ok();
        tracing::debug!(started = self.refresh.is_some(), "routing table refresh");
    }

    /// How many bootstraps kad started by itself and this wrapper ended.
    pub(crate) fn ended(&self) -> u64 {
        self.ended
    }

    /// How many of [`Self::refresh`]'s walked every bucket.
    pub(crate) fn refreshed(&self) -> u64 {
        self.refreshed
    }

    /// Ends every bootstrap under way that is not [`Self::refresh`]'s.
    fn end_automatic(&mut self) {
        let ours = self.refresh;
        let automatic: Vec<QueryId> = self
            .inner
            .iter_queries()
            .filter(|q| matches!(q.info(), QueryInfo::Bootstrap { .. }) && Some(q.id()) != ours)
            .map(|q| q.id())
            .collect();
        for id in automatic {
            if let Some(mut query) = self.inner.query_mut(&id) {
                query.finish();
                if self.ending.replace(id) != Some(id) {
                    self.ended += 1;
                }
            }
        }
    }
}

impl Deref for Kademlia {
    type Target = kad::Behaviour<MemoryStore>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for Kademlia {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl NetworkBehaviour for Kademlia {
    type ConnectionHandler = <kad::Behaviour<MemoryStore> as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = kad::Event;

    crate::wrapped::pass_connections_to!(inner);

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        self.inner.on_swarm_event(event)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        let polled = self.inner.poll(cx);
        if let Poll::Ready(ToSwarm::GenerateEvent(kad::Event::OutboundQueryProgressed {
            id,
            result: kad::QueryResult::Bootstrap(_),
            step,
            ..
        })) = &polled
        {
            if step.last && self.refresh == Some(*id) {
                self.refreshed += 1;
            }
        }
        self.end_automatic();
        polled
    }
}
