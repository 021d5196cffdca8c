//! Stock WireGuard peers (data-flow stage 8): this node as their gateway, and every
//! other gateway's announced peers routed to that gateway.
//!
//! A stock peer gets a tunnel with a pre-shared key of its own, its IPv6 address from
//! its key (subnet 1) and an IPv4 address this node claims for it under
//! [`stock_peer_id`], ranked like any node's claim. The peers are announced, signed, in
//! the record (extension kind 4); every node routes their addresses to the gateway and
//! accepts packets from the gateway with those sources.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use libp2p::PeerId;
use swarm_core::bounded::BoundedVec;
use swarm_core::overlay::{stock_peer_id, IpPrefix, Ipv4Claim};
use swarm_core::record::ext::{StockRoute, StockRoutes, MAX_STOCK_PEERS};

use super::Driver;
use crate::api::{Gateway, NodeError, StockPeer};
use crate::identity::{load_stock_peers, store_stock_peers, SavedStockPeer};

/// A stock peer of this gateway.
pub(super) struct Stock {
    name: String,
    psk: [u8; 32],
    /// Its IPv4 claim, when the node claims IPv4.
    claim: Option<Ipv4Claim>,
}

impl Driver {
    /// Registers (or returns, unchanged, when already registered) a stock peer.
    pub(super) fn add_stock_peer(
        &mut self,
        key: [u8; 32],
        name: String,
    ) -> Result<(StockPeer, Gateway), NodeError> {
        let Some(mtu) = self.config.vpn.as_ref().map(|v| v.mtu) else {
            return Err(NodeError::Vpn(
                "this node has no VPN device: start it with the VPN on (`run --vpn`)".into(),
            ));
        };
        if key == self.dataplane.public_key() {
            return Err(NodeError::Vpn("that key is this node's own".into()));
        }
        if !self.stock.contains_key(&key) {
            if self.stock.len() >= MAX_STOCK_PEERS {
                return Err(NodeError::Vpn(format!(
                    "this gateway has {MAX_STOCK_PEERS} stock peers, the most it serves"
                )));
            }
            let id = stock_peer_id(&key);
            let psk: [u8; 32] = rand::random();
            if !self.dataplane.add_stock_peer(id, key, psk) {
                return Err(NodeError::Vpn("the tunnel table is full".into()));
            }
            self.stock.insert(key, Stock { name, psk, claim: None });
            self.claim_stock(key, 0);
            self.publish_stock();
        }
        let peer = self.stock_peer(&key).ok_or(NodeError::Shutdown)?;
        Ok((peer, self.gateway(mtu)))
    }

    /// The stock peers a previous run persisted, back with their keys and addresses.
    pub(super) fn restore_stock_peers(&mut self) {
        let Some(path) = &self.stock_file else { return };
        for saved in load_stock_peers(path).into_iter().take(MAX_STOCK_PEERS) {
            let id = stock_peer_id(&saved.key);
            if saved.key == self.dataplane.public_key()
                || !self.dataplane.add_stock_peer(id, saved.key, saved.psk)
            {
                continue;
            }
            self.stock.insert(saved.key, Stock { name: saved.name, psk: saved.psk, claim: None });
            self.claim_stock(saved.key, saved.n);
        }
        if !self.stock.is_empty() {
            tracing::info!(peers = self.stock.len(), "stock WireGuard peers restored");
            self.publish_stock();
        }
    }

    /// Removes a stock peer: its tunnel, its routes, its claim; whether it was one.
    pub(super) fn remove_stock_peer(&mut self, key: &[u8; 32]) -> bool {
        let Some(stock) = self.stock.remove(key) else { return false };
        let id = stock_peer_id(key);
        self.dataplane.remove_peer(&id);
        if let Some(claimer) = &mut self.overlay {
            claimer.handle_claim(id, None);
        }
        if let Some(c) = stock.claim {
            self.route_ipv4(c.addr);
        }
        self.publish_stock();
        true
    }

    /// Every stock peer of this gateway, with its tunnel's state.
    pub(super) fn stock_peers(&self) -> Vec<StockPeer> {
        self.stock.keys().filter_map(|k| self.stock_peer(k)).collect()
    }

    fn stock_peer(&self, key: &[u8; 32]) -> Option<StockPeer> {
        let stock = self.stock.get(key)?;
        let id = stock_peer_id(key);
        let status = self.dataplane.status_of(&id, Instant::now());
        Some(StockPeer {
            public_key: *key,
            name: stock.name.clone(),
            ipv6: self.overlay_v6.stock_peer(key),
            ipv4: self.overlay.as_ref().and_then(|c| c.address_of(&id)),
            preshared_key: stock.psk,
            endpoint: status.as_ref().and_then(|s| s.endpoint),
            last_handshake: status.as_ref().and_then(|s| s.last_handshake),
            rx_bytes: status.as_ref().map_or(0, |s| s.rx_bytes),
            tx_bytes: status.as_ref().map_or(0, |s| s.tx_bytes),
        })
    }

    fn gateway(&self, mtu: u16) -> Gateway {
        let local = *self.swarm.local_peer_id();
        let announced = self.view.get(&local).map(|e| e.tunnel.udp_endpoints.to_vec()).unwrap_or_default();
        Gateway {
            public_key: self.dataplane.public_key(),
            endpoints: if announced.is_empty() { self.dataplane.local_addrs() } else { announced },
            ipv6_prefix: self.overlay_v6.prefix(),
            ipv4_range: self.overlay.as_ref().map(|c| c.range()),
            mtu,
        }
    }

    /// Claims an IPv4 address for stock peer `key` from candidate `from`, and routes
    /// both its addresses to its tunnel.
    fn claim_stock(&mut self, key: [u8; 32], from: u32) {
        let id = stock_peer_id(&key);
        let v6 = IpPrefix::host(IpAddr::V6(self.overlay_v6.stock_peer(&key)));
        self.dataplane.route(v6, Some(id));
        let Some(claimer) = &mut self.overlay else { return };
        let claim = claimer.claim_for(&id, from);
        claimer.handle_claim(id, claim);
        if let Some(stock) = self.stock.get_mut(&key) {
            stock.claim = claim;
        }
        if let Some(c) = claim {
            tracing::info!(addr = %c.addr, n = c.n, "overlay IPv4 address claimed for a stock peer");
            self.route_ipv4(c.addr);
        }
    }

    /// After claims changed: each stock peer whose claim a better one took claims its
    /// next candidate; the record says so.
    pub(super) fn reclaim_stock(&mut self) {
        let Some(claimer) = &self.overlay else { return };
        let lost: Vec<([u8; 32], u32)> = self
            .stock
            .iter()
            .filter_map(|(k, s)| {
                let c = s.claim?;
                (claimer.address_of(&stock_peer_id(k)) != Some(c.addr)).then_some((*k, c.n + 1))
            })
            .collect();
        if lost.is_empty() {
            return;
        }
        for (key, from) in lost {
            self.claim_stock(key, from);
        }
        self.publish_stock();
    }

    /// Puts the stock peers into the record, and persists them beside the identity.
    fn publish_stock(&mut self) {
        let saved: Vec<SavedStockPeer> = self
            .stock
            .iter()
            .map(|(k, s)| SavedStockPeer {
                key: *k,
                psk: s.psk,
                n: s.claim.map_or(0, |c| c.n),
                name: s.name.clone(),
            })
            .collect();
        self.save_stock(saved);
        let peers: Vec<StockRoute> = self
            .stock
            .iter()
            .map(|(k, s)| StockRoute { public_key: *k, ipv4: s.claim.map(|c| (c.addr, c.n)) })
            .collect();
        let Ok(peers) = BoundedVec::try_from_vec(peers) else { return };
        if let Some(ext) = (StockRoutes { peers }).to_extension() {
            let _ = self.publisher.set_extension(ext);
        }
    }

    /// Hands the stock peers to the task that persists them (started on first use): it
    /// writes the latest list, in order, off the driver's thread, and ends with the
    /// driver.
    fn save_stock(&mut self, saved: Vec<SavedStockPeer>) {
        let Some(path) = self.stock_file.clone() else { return };
        if let Some(tx) = &self.stock_saver {
            let _ = tx.send(saved);
            return;
        }
        let (tx, mut rx) = tokio::sync::watch::channel(saved);
        rx.mark_changed();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let peers = rx.borrow_and_update().clone();
                let path = path.clone();
                let written = tokio::task::spawn_blocking(move || store_stock_peers(&path, &peers)).await;
                if let Ok(Err(e)) = written {
                    tracing::warn!(error = %e, "cannot persist the stock peers");
                }
            }
        });
        self.stock_saver = Some(tx);
    }

    /// Takes gateway `peer`'s stock peers as its record now says (none: it left the
    /// view): their addresses route to it, and their IPv4 claims are ranked.
    pub(super) fn gateway_routes(&mut self, peer: PeerId) {
        let now: Vec<StockRoute> = self
            .view
            .get(&peer)
            .and_then(|e| e.extensions.stock.as_ref())
            .map(|s| s.peers.to_vec())
            .unwrap_or_default();
        let before = self.remote_stock.remove(&peer).unwrap_or_default();
        let mut touched: Vec<Ipv4Addr> = Vec::new();
        for route in before.iter().filter(|r| !now.iter().any(|n| n.public_key == r.public_key)) {
            let id = stock_peer_id(&route.public_key);
            self.stock_gateway.remove(&id);
            let v6 = IpPrefix::host(IpAddr::V6(self.overlay_v6.stock_peer(&route.public_key)));
            self.dataplane.route(v6, None);
            if let Some(claimer) = &mut self.overlay {
                claimer.handle_claim(id, None);
            }
            touched.extend(route.ipv4.map(|c| c.0));
        }
        for route in &now {
            let id = stock_peer_id(&route.public_key);
            if self.stock.contains_key(&route.public_key) {
                continue; // our own stock peer, announced by another gateway too: ours wins here
            }
            self.stock_gateway.insert(id, peer);
            let v6 = IpPrefix::host(IpAddr::V6(self.overlay_v6.stock_peer(&route.public_key)));
            self.dataplane.route(v6, Some(peer));
            if let Some(claimer) = &mut self.overlay {
                claimer.handle_claim(id, route.ipv4.map(|(addr, n)| Ipv4Claim { addr, n }));
            }
            touched.extend(route.ipv4.map(|c| c.0));
        }
        let old_addrs = before.iter().filter_map(|r| r.ipv4.map(|c| c.0));
        touched.extend(old_addrs);
        if !now.is_empty() {
            self.remote_stock.insert(peer, now);
        }
        for addr in touched {
            self.route_ipv4(addr);
        }
        self.reclaim_stock();
    }
}
