//! The leased GPUs a node advertises in its record (extension kind 2, decoded at ingest
//! into [`LeasedGpus`]), so submitters rank it by what is really free. Advisory only: the
//! node's [`LeaseTable`](super::LeaseTable) decides; a stale advert costs a rejected
//! reservation, never a double booking.

use std::collections::HashMap;

use libp2p_identity::PeerId;

pub use crate::record::ext::{LeasedGpus, LEASED_KIND as EXTENSION_KIND};
use crate::view::{ClusterSnapshot, ViewEntry};

/// The GPU indices `entry`'s advert shows leased (none without an advert).
pub fn leased_of(entry: &ViewEntry) -> &[u32] {
    entry.extensions.leased.as_ref().map_or(&[], |a| &a.gpus[..])
}

/// The leased GPUs every node of `view` advertises, for [`rank`](super::rank).
pub fn leased_in(view: &ClusterSnapshot) -> HashMap<PeerId, Vec<u32>> {
    view.entries
        .iter()
        .filter(|e| !leased_of(e).is_empty())
        .map(|e| (e.record.peer_id, leased_of(e).to_vec()))
        .collect()
}
