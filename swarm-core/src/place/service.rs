//! [`LeaseService`]: a node's answer to the lease protocol (`/swarm/lease/1`), sans-IO.
//! It turns a decoded [`LeaseRequest`] from a holder into the [`LeaseResponse`] the node
//! sends back, against its [`LeaseTable`] and its GPUs, and keeps the counters and the
//! advert of what is leased. The node, the fuzz target and the placement simulator all
//! run this one copy of the rules.
//!
//! Feed it with [`LeaseService::handle`] (a request) and [`LeaseService::handle_timeout`]
//! (when [`LeaseService::poll_timeout`] is due); after each call drain
//! [`LeaseService::poll_event`] until `None`, and publish [`LeaseService::poll_advert`]
//! when it returns one.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;

use super::advert::LeasedGpus;
use super::lease::{Lease, LeaseError, LeaseId, LeaseTable};
use super::score::ScoreWeights;
use super::wire::{GpuDemand, LeaseRequest, LeaseResponse, MAX_LEASE_GPUS};
use crate::bounded::{BoundedString, BoundedVec};
use crate::gpu::GpuDevice;

/// Events kept for the caller at most; older ones are dropped (they only inform logs).
const MAX_EVENTS: usize = 256;

/// Counters of the lease service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseStats {
    /// Reservations granted.
    pub granted: u64,
    /// Reservations refused.
    pub refused: u64,
    /// Renewals granted.
    pub renewed: u64,
    /// Leases released by their holder.
    pub released: u64,
    /// Leases that expired unrenewed.
    pub expired: u64,
    /// Renewals or releases of unknown leases, or of someone else's.
    pub failed: u64,
    /// Inbound requests that did not decode (cut short, oversized, malformed): dropped
    /// unanswered. Counted by the transport, which sees the bytes.
    pub malformed: u64,
    /// Inbound requests whose answer could not be sent (timeouts, closed streams).
    pub inbound_failures: u64,
}

/// What the service did, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseEvent {
    /// A reservation was granted.
    Granted(Lease),
    /// A lease expired unrenewed.
    Expired(Lease),
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct LeaseService {
    table: LeaseTable,
    devices: Vec<GpuDevice>,
    /// GPUs busier than this (with work outside the swarm) are not leased, as submitters
    /// judge it ([`ScoreWeights::busy_pct`]).
    busy_pct: u8,
    stats: LeaseStats,
    advert_changed: bool,
    events: VecDeque<LeaseEvent>,
}

/// `s`, cut to fit `N` bytes of a bounded string (on a character boundary).
fn text<const N: usize>(s: &str) -> BoundedString<N> {
    let mut end = s.len().min(N);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    BoundedString::try_new(&s[..end]).unwrap_or_default()
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl LeaseService {
    /// A service over `table` for the node's `devices`.
    pub fn new(table: LeaseTable, devices: Vec<GpuDevice>) -> Self {
        Self {
            table,
            devices,
            busy_pct: ScoreWeights::default().busy_pct,
            stats: LeaseStats::default(),
            advert_changed: false,
            events: VecDeque::new(),
        }
    }

    /// The node's GPUs changed (a new sample: use or inventory).
    pub fn set_devices(&mut self, devices: Vec<GpuDevice>) {
        self.devices = devices;
    }

    /// Answers `holder`'s request at `now`.
    pub fn handle(&mut self, now: Instant, holder: PeerId, request: LeaseRequest) -> LeaseResponse {
        self.handle_timeout(now);
        match request {
            LeaseRequest::Reserve { task, demand, ttl_ms } => {
                self.reserve(now, holder, &task, &demand, ttl_ms)
            }
            LeaseRequest::Renew { lease, ttl_ms } => self.renew(now, holder, lease, ttl_ms),
            LeaseRequest::Release { lease } => match self.table.release(now, LeaseId(lease), &holder) {
                Ok(()) => {
                    self.stats.released += 1;
                    self.advert_changed = true;
                    LeaseResponse::Released
                }
                Err(e) => self.failed(&e),
            },
        }
    }

    /// GPU indices that meet `demand` and are not busy outside the swarm.
    fn eligible(&self, demand: &GpuDemand) -> Vec<u32> {
        self.devices
            .iter()
            .filter(|d| demand.fits(d) && d.utilization_pct <= self.busy_pct)
            .map(|d| d.index)
            .collect()
    }

    fn reserve(
        &mut self,
        now: Instant,
        holder: PeerId,
        task: &str,
        demand: &GpuDemand,
        ttl_ms: u32,
    ) -> LeaseResponse {
        let eligible = self.eligible(demand);
        let ttl = Duration::from_millis(u64::from(ttl_ms));
        match self.table.reserve(now, holder, task, &eligible, u32::from(demand.count), ttl) {
            Ok(lease) => {
                self.stats.granted += 1;
                self.advert_changed = true;
                let gpus = BoundedVec::try_from_vec(lease.gpus.clone()).unwrap_or_default();
                let response = LeaseResponse::Granted { lease: lease.id.0, gpus, expires_in_ms: ttl_ms };
                self.push_event(LeaseEvent::Granted(lease));
                response
            }
            Err(refusal) => {
                self.stats.refused += 1;
                let free_now =
                    eligible.iter().filter(|g| !self.table.held().any(|h| h == **g)).count() as u32;
                LeaseResponse::Rejected { reason: text(&refusal.to_string()), free_now }
            }
        }
    }

    fn renew(&mut self, now: Instant, holder: PeerId, lease: u64, ttl_ms: u32) -> LeaseResponse {
        let ttl = Duration::from_millis(u64::from(ttl_ms));
        match self.table.renew(now, LeaseId(lease), &holder, ttl) {
            Ok(expires) => {
                self.stats.renewed += 1;
                LeaseResponse::Renewed { expires_in_ms: millis(expires.saturating_duration_since(now)) }
            }
            Err(e) => self.failed(&e),
        }
    }

    fn failed(&mut self, e: &LeaseError) -> LeaseResponse {
        self.stats.failed += 1;
        LeaseResponse::Failed { reason: text(&e.to_string()) }
    }

    fn push_event(&mut self, event: LeaseEvent) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Ends the leases past their expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        for lease in self.table.expire(now) {
            self.stats.expired += 1;
            self.advert_changed = true;
            self.push_event(LeaseEvent::Expired(lease));
        }
    }

    /// When the next lease expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.table.poll_timeout()
    }

    /// The next event; drain until `None`.
    pub fn poll_event(&mut self) -> Option<LeaseEvent> {
        self.events.pop_front()
    }

    /// The advert of what is leased, once after each change of it.
    pub fn poll_advert(&mut self) -> Option<LeasedGpus> {
        std::mem::take(&mut self.advert_changed).then(|| self.advert())
    }

    /// What the record advertises now.
    pub fn advert(&self) -> LeasedGpus {
        let mut gpus: Vec<u32> = self.table.held().collect();
        gpus.sort_unstable();
        gpus.truncate(MAX_LEASE_GPUS);
        LeasedGpus {
            gpus: BoundedVec::try_from_vec(gpus).unwrap_or_default(),
            leases: self.table.leases().count() as u32,
        }
    }

    /// The counters (`malformed` and `inbound_failures` are the transport's).
    pub fn stats(&self) -> LeaseStats {
        self.stats
    }

    /// An inbound request whose answer could not be sent.
    pub fn inbound_failed(&mut self) {
        self.stats.inbound_failures += 1;
    }

    /// The table: live leases and the GPUs they hold.
    pub fn table(&self) -> &LeaseTable {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::place::lease::LeaseConfig;

    fn peer(i: u8) -> PeerId {
        libp2p_identity::Keypair::ed25519_from_bytes([i; 32]).unwrap().public().to_peer_id()
    }

    fn gpu(index: u32, utilization_pct: u8) -> GpuDevice {
        GpuDevice {
            index,
            model: BoundedString::try_new("A100").unwrap(),
            memory_total_mib: 81_920,
            memory_used_mib: 0,
            utilization_pct,
            compute_capability: None,
        }
    }

    fn reserve(count: u16, ttl_ms: u32) -> LeaseRequest {
        LeaseRequest::Reserve {
            task: BoundedString::try_new("t").unwrap(),
            demand: GpuDemand {
                count,
                min_memory_mib: 0,
                min_compute_capability: None,
                models: BoundedVec::new(),
            },
            ttl_ms,
        }
    }

    #[test]
    fn grants_refuses_with_free_now_renews_releases_and_expires() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let table = LeaseTable::new_first_start(t0, LeaseConfig::default());
        // GPU 3 is busy outside the swarm: never leased, never counted free.
        let mut s = LeaseService::new(table, vec![gpu(0, 0), gpu(1, 10), gpu(2, 0), gpu(3, 95)]);
        let LeaseResponse::Granted { lease, gpus, expires_in_ms } = s.handle(t0, peer(1), reserve(2, 5_000))
        else {
            panic!("not granted")
        };
        assert_eq!((gpus.as_slice(), expires_in_ms), (&[0, 1][..], 5_000));
        assert!(matches!(s.poll_event(), Some(LeaseEvent::Granted(l)) if l.id.0 == lease));
        assert_eq!(s.poll_advert().map(|a| a.gpus.into_inner()), Some(vec![0, 1]));
        assert_eq!(s.poll_advert(), None, "once per change");
        match s.handle(t0, peer(2), reserve(2, 5_000)) {
            LeaseResponse::Rejected { free_now, reason } => {
                assert_eq!(free_now, 1, "{reason}");
                assert!(reason.as_str().contains("2 GPUs wanted"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.poll_advert(), None, "a refusal changes nothing");
        assert!(matches!(
            s.handle(t0, peer(2), LeaseRequest::Renew { lease, ttl_ms: 1_000 }),
            LeaseResponse::Failed { .. }
        ));
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(
            s.handle(t1, peer(1), LeaseRequest::Renew { lease, ttl_ms: 10_000 }),
            LeaseResponse::Renewed { expires_in_ms: 10_000 }
        );
        // The renewal holds past the first expiry; at 15 s it is gone.
        s.handle_timeout(t0 + Duration::from_secs(6));
        assert_eq!(s.table().held().count(), 2);
        assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(10)));
        s.handle_timeout(t0 + Duration::from_secs(15));
        assert!(matches!(s.poll_event(), Some(LeaseEvent::Expired(l)) if l.id.0 == lease));
        assert_eq!(s.poll_advert().map(|a| a.leases), Some(0));
        let LeaseResponse::Granted { lease, .. } =
            s.handle(t0 + Duration::from_secs(15), peer(2), reserve(1, 2_000))
        else {
            panic!("not granted")
        };
        assert_eq!(
            s.handle(t0 + Duration::from_secs(15), peer(2), LeaseRequest::Release { lease }),
            LeaseResponse::Released
        );
        let stats = s.stats();
        assert_eq!(
            (stats.granted, stats.refused, stats.renewed, stats.released, stats.expired, stats.failed),
            (2, 1, 1, 1, 1, 1)
        );
    }

    #[test]
    fn events_are_bounded_when_nobody_drains_them() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let config = LeaseConfig { max_per_holder: 10_000, ..LeaseConfig::default() };
        let mut s = LeaseService::new(LeaseTable::new_first_start(t0, config), vec![gpu(0, 0)]);
        for i in 0..1_000u64 {
            let now = t0 + Duration::from_secs(2 * i);
            let _ = s.handle(now, peer(1), reserve(1, 1_000));
        }
        assert_eq!(s.stats().granted, 1_000);
        assert_eq!(s.events.len(), MAX_EVENTS);
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let s = "é".repeat(150);
        let cut: BoundedString<200> = text(&s);
        assert_eq!(cut.as_str().len(), 200);
    }
}
