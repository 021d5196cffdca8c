//! The data plane's events, mapped to the node's: tunnels up and down, roaming, SLA
//! verdicts (in SI units), throughput figures to their waiting callers; and the link
//! summaries the data plane has due, into the local record.

use std::time::Instant;

use libp2p::PeerId;
use swarm_core::link::{LinkEvent, SlaEvent};

use super::{Driver, PingWaiter, ThroughputWaiter};
use crate::api::{NodeError, NodeEvent};
use crate::dataplane::{DataPlaneEvent, MeasureError};

impl Driver {
    /// Passes the data plane's events on and puts due link summaries into the record.
    pub(super) fn flush_dataplane(&mut self, now: Instant) {
        while let Some(event) = self.dataplane.poll_event() {
            match event {
                DataPlaneEvent::TunnelUp { peer, endpoint } => {
                    self.emit(NodeEvent::TunnelUp { peer, endpoint })
                }
                DataPlaneEvent::TunnelDown { peer, reason } => {
                    self.forget_detour(now, &peer);
                    self.emit(NodeEvent::TunnelDown { peer, reason })
                }
                DataPlaneEvent::DetourClosed { peer, via } => self.on_detour_closed(now, peer, via),
                DataPlaneEvent::EndpointChanged { peer, endpoint } => {
                    self.emit(NodeEvent::TunnelEndpointChanged { peer, endpoint });
                }
                DataPlaneEvent::Link(e) => self.on_link_event(now, e),
                DataPlaneEvent::Punch(e) => {
                    tracing::info!(?e, "hole punch ended");
                    let (peer, punched) = match e {
                        swarm_core::nat::PunchEvent::Failed { peer } => (peer, false),
                        swarm_core::nat::PunchEvent::Punched { peer, .. } => (peer, true),
                    };
                    self.planner.punch_ended(peer, punched);
                    self.plan_path(now, peer);
                }
                DataPlaneEvent::PathChanged { peer, path } => self.on_path_changed(peer, path),
                DataPlaneEvent::Reflexive(r) => {
                    tracing::info!(nat = r.kind.as_str(), mapped = ?r.mapped, "tunnel socket reflected");
                    self.reflexive = r;
                    self.publisher.set_nat(r.kind);
                    self.update_tunnel_endpoints();
                    self.reserve_relays();
                    self.emit(NodeEvent::NatDetected { nat: r.kind, mapped: r.mapped });
                }
            }
        }
        if let Some(gossip) = self.dataplane.poll_gossip(now) {
            let encoded = gossip.summaries.to_extension();
            self.set_own_links(gossip.summaries);
            match encoded {
                Ok(ext) => {
                    let _ = self.publisher.set_extension_quiet(ext);
                }
                Err(e) => tracing::debug!(error = %e, "link summaries not gossiped"),
            }
            if gossip.urgent {
                // An SLA verdict changed: the swarm hears it now, not at the heartbeat.
                self.publisher.request_publish();
            }
        }
    }

    fn on_link_event(&mut self, now: Instant, event: LinkEvent) {
        match event {
            LinkEvent::Unreachable { peer, silent } if self.dataplane.handle_unreachable(now, &peer) => {
                self.emit(NodeEvent::PeerUnreachable { peer, silent });
            }
            LinkEvent::Sla { peer, event: SlaEvent::Degraded { metric, value, target } } => {
                let (value, target) = (metric.to_si(value), metric.to_si(target));
                self.emit(NodeEvent::LinkDegraded { peer, metric, value, target });
                self.on_sla_for_detour(now, peer, metric, true);
            }
            LinkEvent::Sla { peer, event: SlaEvent::Recovered { metric, value, target } } => {
                let (value, target) = (metric.to_si(value), metric.to_si(target));
                self.emit(NodeEvent::LinkRecovered { peer, metric, value, target });
                self.on_sla_for_detour(now, peer, metric, false);
            }
            LinkEvent::Pong { peer, result } => {
                if let Some(reply) = self.ping_waiters.remove(&peer) {
                    let _ = reply.send(result.map_err(NodeError::Ping));
                }
            }
            LinkEvent::Throughput { peer, result } => {
                if let Some(reply) = self.throughput_waiters.remove(&peer) {
                    let _ = reply.send(result.map_err(|e| NodeError::Throughput(e.to_string())));
                }
            }
            _ => {}
        }
    }

    /// Pings `peer` over its tunnel; `reply` gets the round trip.
    pub(super) fn ping(&mut self, now: Instant, peer: PeerId, reply: PingWaiter) {
        match self.dataplane.ping(now, &peer) {
            Ok(()) => {
                self.ping_waiters.insert(peer, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(NodeError::Ping(e)));
            }
        }
    }

    /// Starts a throughput test to `peer`; `reply` gets its figure.
    pub(super) fn measure_throughput(&mut self, now: Instant, peer: PeerId, reply: ThroughputWaiter) {
        match self.dataplane.measure_throughput(now, &peer) {
            Ok(()) => {
                self.throughput_waiters.insert(peer, reply);
            }
            Err(MeasureError::UnknownPeer) => {
                let _ = reply.send(Err(NodeError::NoTunnel(peer)));
            }
            Err(MeasureError::Link(e)) => {
                let _ = reply.send(Err(NodeError::Throughput(e.to_string())));
            }
        }
    }
}
