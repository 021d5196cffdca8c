//! Link measurements into the record: our Vivaldi coordinate and the link summaries.

use std::time::Instant;

use swarm_core::bounded::BoundedVec;
use swarm_core::link::summary::LinkSummaries;

use super::Driver;

impl Driver {
    /// Moves our coordinate by each measured link's median round trip and puts the link
    /// summaries and the coordinate into the local record (published with its next
    /// publication).
    pub(super) fn gossip_links(&mut self, now: Instant) {
        // One snapshot per link per tick (each merges the link's histogram windows).
        let reports = self.dataplane.link_reports(now);
        for report in &reports {
            let Some(q) = report.stats.short.rtt.filter(|q| q.samples >= 5) else { continue };
            let theirs = self
                .view
                .get(&report.peer)
                .and_then(|e| LinkSummaries::from_record(&e.record).ok().flatten())
                .and_then(|s| s.coordinate)
                .unwrap_or_default();
            let bytes = report.peer.to_bytes();
            let nudge = bytes.iter().rev().take(8).fold(0u64, |h, b| (h << 8) | u64::from(*b));
            self.coordinate.update(q.p50.as_secs_f64() * 1e3, &theirs, nudge);
        }
        let links = self.dataplane.link_summaries(now, &reports);
        let Ok(links) = BoundedVec::try_from_vec(links) else { return };
        let summaries = LinkSummaries { coordinate: Some(self.coordinate), links };
        match summaries.to_extension() {
            Ok(ext) => {
                let _ = self.publisher.set_extension_quiet(ext);
            }
            Err(e) => tracing::debug!(error = %e, "link summaries not gossiped"),
        }
    }
}
