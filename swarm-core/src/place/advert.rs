//! The leased GPUs a node advertises in its record (extension kind 2), so submitters rank
//! it by what is really free. Advisory only: the node's [`LeaseTable`](super::LeaseTable)
//! decides; a stale advert costs a rejected reservation, never a double booking.

use std::collections::HashMap;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedBytes, BoundedVec};
use crate::codec::{self, WireMessage};
use crate::record::{NodeRecord, RecordExtension};
use crate::view::ClusterSnapshot;

use super::wire::MAX_LEASE_GPUS;

/// The record extension kind.
pub const EXTENSION_KIND: u16 = 2;
/// Largest body.
const MAX_BODY: usize = 512;

/// The extension body: GPU indices held by live leases, and how many leases hold them.
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
        let bytes = codec::encode(self, MAX_BODY).ok()?;
        Some(RecordExtension {
            kind: EXTENSION_KIND,
            version: 1,
            body: BoundedBytes::try_from_vec(bytes).ok()?,
        })
    }

    /// What `record` advertises; nothing when it carries no (readable) advert.
    pub fn from_record(record: &NodeRecord) -> Option<Self> {
        let ext = record.extension(EXTENSION_KIND).filter(|e| e.version == 1)?;
        codec::decode(&ext.body, MAX_BODY).ok()
    }
}

/// The leased GPUs every node of `view` advertises, for [`rank`](super::rank).
pub fn leased_in(view: &ClusterSnapshot) -> HashMap<PeerId, Vec<u32>> {
    view.entries
        .iter()
        .filter_map(|e| {
            let advert = LeasedGpus::from_record(&e.record)?;
            (!advert.gpus.is_empty()).then(|| (e.record.peer_id, advert.gpus.into_inner()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::keypair;
    use crate::record::tests::node_record;

    #[test]
    fn adverts_round_trip_and_garbage_reads_as_none() {
        let mut record = node_record(&keypair(1), 1);
        assert_eq!(LeasedGpus::from_record(&record), None);
        let advert = LeasedGpus { gpus: BoundedVec::try_from_vec(vec![0, 3]).unwrap(), leases: 2 };
        record.extensions = BoundedVec::try_from_vec(vec![advert.to_extension().unwrap()]).unwrap();
        assert_eq!(LeasedGpus::from_record(&record), Some(advert));
        let junk = RecordExtension {
            kind: EXTENSION_KIND,
            version: 1,
            body: BoundedBytes::try_from_vec(vec![0xFF; 9]).unwrap(),
        };
        record.extensions = BoundedVec::try_from_vec(vec![junk]).unwrap();
        assert_eq!(LeasedGpus::from_record(&record), None);
    }
}
