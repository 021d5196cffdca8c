//! Wall-clock time as it travels on the wire.
//!
//! Local deadlines use `std::time::Instant` passed in by the caller; only values that
//! another node must understand (when a record was issued) are wall-clock milliseconds.

use core::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }

    /// `self - d`, saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }

    /// How long before `now` this instant was; zero if it is in the future.
    pub fn age(self, now: UnixMillis) -> Duration {
        Duration::from_millis(now.0.saturating_sub(self.0))
    }
}
