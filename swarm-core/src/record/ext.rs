//! The record extensions swarm itself writes, typed: link summaries and the coordinate
//! (kind 1, [`LinkSummaries`]), leased GPUs (kind 2, [`LeasedGpus`]) and the overlay
//! address a node claims (kind 3, [`OverlayClaim`]) and the stock WireGuard peers a
//! gateway routes for (kind 4, [`StockRoutes`]). A view decodes
//! them once, when a record enters it ([`Extensions::decode`]); readers use the typed
//! values and never the bytes.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{NodeRecord, RecordExtension, MAX_EXTENSION_SIZE};
use crate::bounded::{BoundedBytes, BoundedVec};
use crate::codec::{self, WireMessage};
use crate::link::summary::{LinkSummaries, SummaryError, EXTENSION_KIND as LINKS_KIND};
use crate::link::vivaldi::Coordinate;

/// The record extension kind of leased GPUs.
pub const LEASED_KIND: u16 = 2;
/// GPUs named in one lease message or advert at most.
pub const MAX_LEASE_GPUS: usize = 64;
/// Largest advert body.
const MAX_LEASED_BODY: usize = 512;

/// `value` as extension `kind` (version 1), its body at most `max` bytes.
fn to_extension<T: Serialize + WireMessage>(value: &T, kind: u16, max: usize) -> Option<RecordExtension> {
    let bytes = codec::encode(value, max).ok()?;
    Some(RecordExtension { kind, version: 1, body: BoundedBytes::try_from_vec(bytes).ok()? })
}

/// Extension `kind` (version 1) of `record`, decoded; nothing when absent or unreadable.
fn from_extension<T: serde::de::DeserializeOwned + WireMessage>(
    record: &NodeRecord,
    kind: u16,
    max: usize,
) -> Option<T> {
    let ext = record.extension(kind).filter(|e| e.version == 1)?;
    codec::decode(&ext.body, max).ok()
}

/// The leased-GPUs extension body: GPU indices held by live leases, and how many leases
/// hold them. Advisory only: the node's lease table decides; a stale advert costs a
/// rejected reservation, never a double booking.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeasedGpus {
    /// GPU indices leased now.
    pub gpus: BoundedVec<u32, MAX_LEASE_GPUS>,
    /// Live leases.
    pub leases: u32,
}

impl WireMessage for LeasedGpus {
    const KIND: u8 = 0x12;
    const VERSION: u8 = 1;
}

impl LeasedGpus {
    /// The record extension carrying this.
    pub fn to_extension(&self) -> Option<RecordExtension> {
        to_extension(self, LEASED_KIND, MAX_LEASED_BODY)
    }

    /// What `record` advertises; nothing when it carries no (readable) advert.
    pub fn from_record(record: &NodeRecord) -> Option<Self> {
        from_extension(record, LEASED_KIND, MAX_LEASED_BODY)
    }
}

/// The record extension kind of the overlay claim.
pub const OVERLAY_KIND: u16 = 3;
/// Largest overlay claim body.
const MAX_OVERLAY_BODY: usize = 64;

/// The IPv4 overlay address a node claims, signed in its record (its IPv6 address needs
/// no claim: every node computes it from the `PeerId`). See [`crate::overlay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayClaim {
    /// The address, and which of the node's candidates it is.
    pub ipv4: Option<(Ipv4Addr, u32)>,
}

impl WireMessage for OverlayClaim {
    const KIND: u8 = 0x13;
    const VERSION: u8 = 1;
}

impl OverlayClaim {
    /// The record extension carrying this claim.
    pub fn to_extension(&self) -> Option<RecordExtension> {
        to_extension(self, OVERLAY_KIND, MAX_OVERLAY_BODY)
    }

    /// The claim in `record`; nothing when it carries none (or none readable).
    pub fn from_record(record: &NodeRecord) -> Option<Self> {
        from_extension(record, OVERLAY_KIND, MAX_OVERLAY_BODY)
    }
}

impl LinkSummaries {
    /// The record extension carrying these summaries.
    pub fn to_extension(&self) -> Result<RecordExtension, SummaryError> {
        let bytes = codec::encode(self, MAX_EXTENSION_SIZE).map_err(|_| SummaryError::TooLarge)?;
        let body = BoundedBytes::try_from_vec(bytes).map_err(|_| SummaryError::TooLarge)?;
        Ok(RecordExtension { kind: LINKS_KIND, version: 1, body })
    }

    /// The summaries in `record`, checked; `Ok(None)` when it carries none (or a version
    /// this node does not read).
    pub fn from_record(record: &NodeRecord) -> Result<Option<Self>, SummaryError> {
        let Some(ext) = record.extension(LINKS_KIND).filter(|e| e.version == 1) else { return Ok(None) };
        let s: Self = codec::decode(&ext.body, MAX_EXTENSION_SIZE)?;
        if let Some(c) = &s.coordinate {
            c.validate().map_err(|_| SummaryError::Coordinate)?;
        }
        Ok(Some(s))
    }
}

/// The record extension kind of a gateway's stock WireGuard peers.
pub const STOCK_KIND: u16 = 4;
/// Stock peers one gateway announces at most.
pub const MAX_STOCK_PEERS: usize = 64;
/// Largest stock-peers body.
const MAX_STOCK_BODY: usize = 4096;

/// A stock WireGuard peer that a gateway routes for. Its IPv6 address is computed by
/// every node from its key ([`crate::overlay::OverlayV6::stock_peer`]); its IPv4 address
/// is a claim the gateway makes for it, ranked as
/// [`crate::overlay::stock_peer_id`] among node claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRoute {
    /// The peer's WireGuard static public key.
    pub public_key: [u8; 32],
    /// Its IPv4 claim: the address and which candidate it is.
    pub ipv4: Option<(Ipv4Addr, u32)>,
}

/// The stock WireGuard peers a gateway node routes for, signed in its record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StockRoutes {
    /// The peers.
    pub peers: BoundedVec<StockRoute, MAX_STOCK_PEERS>,
}

impl WireMessage for StockRoutes {
    const KIND: u8 = 0x14;
    const VERSION: u8 = 1;
}

impl StockRoutes {
    /// The record extension carrying these routes.
    pub fn to_extension(&self) -> Option<RecordExtension> {
        to_extension(self, STOCK_KIND, MAX_STOCK_BODY)
    }

    /// The routes in `record`; nothing when it carries none (or none readable).
    pub fn from_record(record: &NodeRecord) -> Option<Self> {
        from_extension(record, STOCK_KIND, MAX_STOCK_BODY)
    }
}

/// A record's extensions, decoded once. An extension that does not decode reads as
/// absent, as a node skips kinds it does not know.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extensions {
    /// The node's link summaries and coordinate.
    pub links: Option<LinkSummaries>,
    /// The GPUs it has leased out.
    pub leased: Option<LeasedGpus>,
    /// The IPv4 overlay address it claims.
    pub overlay: Option<OverlayClaim>,
    /// The stock WireGuard peers it is the gateway of.
    pub stock: Option<StockRoutes>,
}

impl Extensions {
    /// Decodes the extensions of `record`.
    pub fn decode(record: &NodeRecord) -> Self {
        Self {
            links: LinkSummaries::from_record(record).ok().flatten(),
            leased: LeasedGpus::from_record(record),
            overlay: OverlayClaim::from_record(record),
            stock: StockRoutes::from_record(record),
        }
    }

    /// The node's network coordinate, if it gossips one.
    pub fn coordinate(&self) -> Option<Coordinate> {
        self.links.as_ref().and_then(|l| l.coordinate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::keypair;
    use crate::link::summary::tests::{at, id, summary};
    use crate::link::summary::{LinkSummary, MAX_LINKS};
    use crate::record::tests::node_record;

    #[test]
    fn adverts_round_trip_and_garbage_reads_as_none() {
        let mut record = node_record(&keypair(1), 1);
        assert_eq!(LeasedGpus::from_record(&record), None);
        let advert = LeasedGpus { gpus: BoundedVec::try_from_vec(vec![0, 3]).unwrap(), leases: 2 };
        record.extensions = BoundedVec::try_from_vec(vec![advert.to_extension().unwrap()]).unwrap();
        assert_eq!(LeasedGpus::from_record(&record), Some(advert.clone()));
        assert_eq!(Extensions::decode(&record), Extensions { leased: Some(advert), ..Extensions::default() });
        let junk = RecordExtension {
            kind: LEASED_KIND,
            version: 1,
            body: BoundedBytes::try_from_vec(vec![0xFF; 9]).unwrap(),
        };
        record.extensions = BoundedVec::try_from_vec(vec![junk]).unwrap();
        assert_eq!(LeasedGpus::from_record(&record), None);
        assert_eq!(Extensions::decode(&record), Extensions::default());
    }

    #[test]
    fn a_full_summary_is_small_and_bounded() {
        let links: Vec<LinkSummary> = (0..64).map(|i| summary(id(i as u8 + 10), 20 + i, 30, 100)).collect();
        let s = LinkSummaries { coordinate: Some(at(12.5)), links: BoundedVec::try_from_vec(links).unwrap() };
        let ext = s.to_extension().unwrap();
        println!("link summaries of 64 peers: {} bytes", ext.body.len());
        assert!(ext.body.len() < 4096, "{}", ext.body.len());
        let too_many: Vec<LinkSummary> = (0..65).map(|i| summary(id(i as u8 + 10), 20, 30, 100)).collect();
        assert!(BoundedVec::<LinkSummary, MAX_LINKS>::try_from_vec(too_many).is_err());
        // A hostile coordinate is refused on reading.
        let mut record = node_record(&keypair(1), 1);
        let bad = LinkSummaries {
            coordinate: Some(Coordinate { height: f64::NAN, ..at(1.0) }),
            links: BoundedVec::new(),
        };
        record.extensions = BoundedVec::try_from_vec(vec![bad.to_extension().unwrap()]).unwrap();
        assert_eq!(LinkSummaries::from_record(&record), Err(SummaryError::Coordinate));
    }

    #[test]
    fn stock_routes_round_trip_and_garbage_reads_as_none() {
        let mut record = node_record(&keypair(1), 1);
        let routes = StockRoutes {
            peers: BoundedVec::try_from_vec(vec![
                StockRoute { public_key: [3; 32], ipv4: Some((Ipv4Addr::new(100, 64, 0, 7), 0)) },
                StockRoute { public_key: [4; 32], ipv4: None },
            ])
            .unwrap(),
        };
        record.extensions = BoundedVec::try_from_vec(vec![routes.to_extension().unwrap()]).unwrap();
        assert_eq!(Extensions::decode(&record).stock, Some(routes));
        let junk = RecordExtension {
            kind: STOCK_KIND,
            version: 1,
            body: BoundedBytes::try_from_vec(vec![0xff; 9]).unwrap(),
        };
        record.extensions = BoundedVec::try_from_vec(vec![junk]).unwrap();
        assert_eq!(Extensions::decode(&record).stock, None);
    }

    #[test]
    fn overlay_claims_round_trip_beside_other_extensions() {
        let mut record = node_record(&keypair(1), 1);
        let claim = OverlayClaim { ipv4: Some((Ipv4Addr::new(100, 64, 3, 9), 2)) };
        let advert = LeasedGpus { gpus: BoundedVec::try_from_vec(vec![1]).unwrap(), leases: 1 };
        record.extensions =
            BoundedVec::try_from_vec(vec![advert.to_extension().unwrap(), claim.to_extension().unwrap()])
                .unwrap();
        let ext = Extensions::decode(&record);
        assert_eq!(ext.overlay, Some(claim));
        assert_eq!(ext.leased, Some(advert));
        let junk = RecordExtension {
            kind: OVERLAY_KIND,
            version: 1,
            body: BoundedBytes::try_from_vec(vec![9; 20]).unwrap(),
        };
        record.extensions = BoundedVec::try_from_vec(vec![junk]).unwrap();
        assert_eq!(OverlayClaim::from_record(&record), None);
    }
}
