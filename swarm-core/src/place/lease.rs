//! [`LeaseTable`]: a node's own account of its GPUs. Each node is the sole authority over
//! its GPUs: it grants a lease only on GPUs no live lease holds, so two submitters can
//! never book one GPU twice; leases expire unless renewed, so a dead submitter leaks
//! nothing.
//!
//! Restarts: leases live in memory only. A restarted node does not know what it granted
//! before, so for `restart_grace` (set it to the longest lease it grants) it refuses new
//! reservations and answers renewals with "unknown lease": by the end of the grace every
//! lease granted before the restart has expired, and its holder, whose renewal failed,
//! knows it must reserve again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;

/// A lease's number, unique per node run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u64);

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Its number.
    pub id: LeaseId,
    /// The task it is for.
    pub task: String,
    /// Who holds it.
    pub holder: PeerId,
    /// The GPU indices it holds.
    pub gpus: Vec<u32>,
    /// When it expires unless renewed.
    pub expires: Instant,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Not enough eligible GPUs are free.
    #[error("{wanted} GPUs wanted, {free} eligible and free")]
    NotEnoughGpus {
        /// GPUs asked for.
        wanted: u32,
        /// Eligible GPUs free now.
        free: u32,
    },
    /// The node restarted recently and is waiting out leases it may have forgotten.
    #[error("restarted: no new leases for {} s", .0.as_secs_f64().ceil())]
    Restarting(Duration),
    /// The lease asked for is longer than this node grants.
    #[error("leases last at most {} s", .0.as_secs_f64())]
    TooLong(Duration),
    /// The lease asked for is shorter than the shortest a node grants.
    #[error("leases last at least {} s", .0.as_secs_f64())]
    TooShort(Duration),
    /// The holder already has this many leases.
    #[error("at most {0} leases per holder")]
    TooMany(usize),
    /// A lease of no GPU holds nothing.
    #[error("a lease holds at least one GPU")]
    NoGpus,
}

/// Why a renewal or release failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// No live lease of that number (expired, released, or from before a restart).
    #[error("unknown or expired lease")]
    Unknown,
    /// The lease belongs to someone else.
    #[error("the lease belongs to another holder")]
    NotHolder,
}

/// Settings of a [`LeaseTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The longest lease (and renewal) granted.
    pub max_lease: Duration,
    /// Leases one holder may have at once.
    pub max_per_holder: usize,
    /// After a restart, no new leases for this long (see the module docs).
    pub restart_grace: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            max_lease: Duration::from_secs(600),
            max_per_holder: 64,
            restart_grace: Duration::from_secs(600),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    config: LeaseConfig,
    /// Which lease holds each GPU index.
    holders: BTreeMap<u32, LeaseId>,
    leases: BTreeMap<LeaseId, Lease>,
    next_id: u64,
    accepting_from: Instant,
}

impl LeaseTable {
    /// A table for a node that (re)started at `now`; it grants nothing until the restart
    /// grace has passed. Use [`Self::new_first_start`] for a node that never ran before.
    pub fn new(now: Instant, config: LeaseConfig) -> Self {
        Self { accepting_from: now + config.restart_grace, ..Self::new_first_start(now, config) }
    }

    /// A table for a node with no earlier run (nothing can be outstanding).
    pub fn new_first_start(now: Instant, config: LeaseConfig) -> Self {
        Self { config, holders: BTreeMap::new(), leases: BTreeMap::new(), next_id: 1, accepting_from: now }
    }

    /// Numbers leases from `first` on (from 1 by default). A node numbers each run from
    /// its start time, so a lease number from an earlier run is not reused by a later one.
    pub fn with_first_id(mut self, first: u64) -> Self {
        self.next_id = first.max(1);
        self
    }

    /// Grants `wanted` GPUs among `eligible` (indices that meet the task's needs) to
    /// `holder` for `ttl`, or says why not and how many are free.
    pub fn reserve(
        &mut self,
        now: Instant,
        holder: PeerId,
        task: &str,
        eligible: &[u32],
        wanted: u32,
        ttl: Duration,
    ) -> Result<Lease, Refusal> {
        self.expire(now);
        if wanted == 0 {
            return Err(Refusal::NoGpus);
        }
        if now < self.accepting_from {
            return Err(Refusal::Restarting(self.accepting_from - now));
        }
        if ttl > self.config.max_lease {
            return Err(Refusal::TooLong(self.config.max_lease));
        }
        if ttl < super::task::MIN_LEASE {
            return Err(Refusal::TooShort(super::task::MIN_LEASE));
        }
        let held = self
            .leases
            .values_mut()
            .find(|l| l.holder == holder && l.task == task && l.gpus.len() as u64 == u64::from(wanted));
        if let Some(lease) = held {
            lease.expires = lease.expires.max(now + ttl);
            return Ok(lease.clone());
        }
        if self.leases.values().filter(|l| l.holder == holder).count() >= self.config.max_per_holder {
            return Err(Refusal::TooMany(self.config.max_per_holder));
        }
        let mut free: Vec<u32> = eligible.iter().copied().filter(|g| !self.holders.contains_key(g)).collect();
        free.sort_unstable();
        free.dedup();
        if (free.len() as u64) < u64::from(wanted) {
            return Err(Refusal::NotEnoughGpus { wanted, free: free.len() as u32 });
        }
        free.truncate(wanted as usize);
        let id = LeaseId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        for g in &free {
            self.holders.insert(*g, id);
        }
        let lease = Lease { id, task: task.to_owned(), holder, gpus: free, expires: now + ttl };
        self.leases.insert(id, lease.clone());
        Ok(lease)
    }

    /// Extends a lease to `now + ttl` (at most the longest lease).
    pub fn renew(
        &mut self,
        now: Instant,
        id: LeaseId,
        holder: &PeerId,
        ttl: Duration,
    ) -> Result<Instant, LeaseError> {
        self.expire(now);
        let lease = self.leases.get_mut(&id).ok_or(LeaseError::Unknown)?;
        if lease.holder != *holder {
            return Err(LeaseError::NotHolder);
        }
        lease.expires = now + ttl.min(self.config.max_lease);
        Ok(lease.expires)
    }

    /// Ends a lease now.
    pub fn release(&mut self, now: Instant, id: LeaseId, holder: &PeerId) -> Result<(), LeaseError> {
        self.expire(now);
        match self.leases.get(&id) {
            None => Err(LeaseError::Unknown),
            Some(l) if l.holder != *holder => Err(LeaseError::NotHolder),
            Some(_) => {
                self.drop_lease(id);
                Ok(())
            }
        }
    }

    fn drop_lease(&mut self, id: LeaseId) {
        if let Some(l) = self.leases.remove(&id) {
            for g in l.gpus {
                self.holders.remove(&g);
            }
        }
    }

    /// Ends every lease past its expiry; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<Lease> {
        let due: Vec<LeaseId> = self.leases.values().filter(|l| l.expires <= now).map(|l| l.id).collect();
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            if let Some(l) = self.leases.get(&id).cloned() {
                out.push(l);
            }
            self.drop_lease(id);
        }
        out
    }

    /// When the next lease expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.expires).min()
    }

    /// GPU indices held by live leases.
    pub fn held(&self) -> impl Iterator<Item = u32> + '_ {
        self.holders.keys().copied()
    }

    /// Live leases.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u8) -> PeerId {
        libp2p_identity::Keypair::ed25519_from_bytes([i; 32]).unwrap().public().to_peer_id()
    }

    #[test]
    fn no_gpu_is_booked_twice_and_leases_expire() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut t = LeaseTable::new_first_start(t0, LeaseConfig::default());
        let all = [0, 1, 2, 3];
        let ttl = Duration::from_secs(30);
        let a = t.reserve(t0, peer(1), "a", &all, 3, ttl).unwrap();
        assert_eq!(a.gpus, vec![0, 1, 2]);
        assert_eq!(
            t.reserve(t0, peer(2), "b", &all, 2, ttl),
            Err(Refusal::NotEnoughGpus { wanted: 2, free: 1 })
        );
        let b = t.reserve(t0, peer(2), "b", &all, 1, ttl).unwrap();
        assert_eq!(b.gpus, vec![3]);
        // Renewal by the holder only; release frees at once.
        assert_eq!(t.renew(t0, a.id, &peer(2), ttl), Err(LeaseError::NotHolder));
        assert!(t.renew(t0 + Duration::from_secs(20), a.id, &peer(1), ttl).is_ok());
        t.release(t0, b.id, &peer(2)).unwrap();
        assert_eq!(t.release(t0, b.id, &peer(2)), Err(LeaseError::Unknown));
        // Expiry: a's renewal runs to 50 s; at 51 s everything is free again.
        assert_eq!(t.held().count(), 3);
        let gone = t.expire(t0 + Duration::from_secs(51));
        assert_eq!(gone.len(), 1);
        assert_eq!(t.held().count(), 0);
        assert_eq!(t.renew(t0 + Duration::from_secs(52), a.id, &peer(1), ttl), Err(LeaseError::Unknown));
        // Only eligible GPUs are granted.
        let c = t.reserve(t0 + Duration::from_secs(52), peer(3), "c", &[2, 3], 2, ttl).unwrap();
        assert_eq!(c.gpus, vec![2, 3]);
    }

    #[test]
    fn a_restarted_node_waits_out_forgotten_leases() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let config = LeaseConfig { restart_grace: Duration::from_secs(60), ..LeaseConfig::default() };
        let mut t = LeaseTable::new(t0, config);
        assert!(matches!(
            t.reserve(t0, peer(1), "a", &[0], 1, Duration::from_secs(5)),
            Err(Refusal::Restarting(_))
        ));
        // A holder from before the restart cannot renew: it learns its lease is gone.
        assert_eq!(t.renew(t0, LeaseId(1), &peer(1), Duration::from_secs(5)), Err(LeaseError::Unknown));
        let later = t0 + Duration::from_secs(60);
        assert!(t.reserve(later, peer(1), "a", &[0], 1, Duration::from_secs(5)).is_ok());
        assert_eq!(
            t.reserve(later, peer(1), "a", &[1], 1, Duration::from_secs(601)),
            Err(Refusal::TooLong(Duration::from_secs(600)))
        );
        assert_eq!(
            t.reserve(later, peer(1), "a", &[1], 1, Duration::ZERO),
            Err(Refusal::TooShort(Duration::from_secs(1)))
        );
    }

    /// Many submitters racing over a few GPUs, in a seeded order: granted GPUs never
    /// exceed capacity and never overlap.
    #[test]
    fn concurrent_submitters_never_double_book() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut t = LeaseTable::new_first_start(t0, LeaseConfig::default());
        let gpus: Vec<u32> = (0..8).collect();
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut live: Vec<Lease> = Vec::new();
        for step in 0..10_000u64 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let now = t0 + Duration::from_millis(step * 10);
            let holder = peer((s % 8) as u8 + 1);
            match s % 3 {
                0 | 1 => {
                    if let Ok(l) =
                        t.reserve(now, holder, "x", &gpus, (s >> 8) as u32 % 4 + 1, Duration::from_secs(2))
                    {
                        live.push(l);
                    }
                }
                _ => {
                    if let Some(l) = live.pop() {
                        let _ = t.release(now, l.id, &l.holder);
                    }
                }
            }
            live.retain(|l| l.expires > now && t.leases().any(|x| x.id == l.id));
            let mut held: Vec<u32> = t.leases().flat_map(|l| l.gpus.clone()).collect();
            let n = held.len();
            held.sort_unstable();
            held.dedup();
            assert_eq!(held.len(), n, "a GPU in two leases at step {step}");
            assert!(n <= 8);
        }
    }
}
