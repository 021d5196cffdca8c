//! Why packets are dropped, counted by reason (a silent drop and a counter, as
//! WireGuard does with everything it will not answer).

/// Why a datagram (or a payload to send) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Not a WireGuard message: unknown type, bad length.
    Malformed,
    /// A receiver index we did not hand out (or no longer use).
    UnknownIndex,
    /// A handshake message whose mac1 is not ours.
    BadMac1,
    /// Under load, a handshake without a valid mac2: answered with a cookie reply.
    CookieRequired,
    /// Under load, the source sent handshakes faster than its token bucket allows.
    RateLimited,
    /// Under load, a handshake without a valid mac2 left unanswered: the cookie replies'
    /// budget (per source, or in all) was spent.
    CookieCapped,
    /// The Noise part of a handshake message did not authenticate.
    HandshakeFailed,
    /// An initiation from a static key that is not one of our peers.
    UnknownPeer,
    /// An initiation whose timestamp is not newer than the last one from that peer.
    StaleTimestamp,
    /// A second initiation from one peer within 20 ms.
    InitiationFlood,
    /// A cookie reply that did not authenticate.
    BadCookieReply,
    /// Data for a session older than the reject time.
    SessionExpired,
    /// A counter already received.
    Replayed,
    /// A counter behind the replay window.
    TooOld,
    /// A counter past the message limit.
    CounterLimit,
    /// Data whose tag did not verify.
    Decrypt,
    /// Authenticated data that is neither an IP packet nor a swarm frame.
    BadPayload,
    /// A payload to send found the peer's handshake queue full.
    QueueFull,
    /// Queued payloads dropped because the handshake gave up or keys were erased.
    HandshakeTimeout,
    /// A payload or handshake for a peer without a known endpoint.
    NoEndpoint,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 20;
    /// Every reason, in counter order.
    pub const ALL: [DropReason; Self::COUNT] = [
        Self::Malformed,
        Self::UnknownIndex,
        Self::BadMac1,
        Self::CookieRequired,
        Self::RateLimited,
        Self::CookieCapped,
        Self::HandshakeFailed,
        Self::UnknownPeer,
        Self::StaleTimestamp,
        Self::InitiationFlood,
        Self::BadCookieReply,
        Self::SessionExpired,
        Self::Replayed,
        Self::TooOld,
        Self::CounterLimit,
        Self::Decrypt,
        Self::BadPayload,
        Self::QueueFull,
        Self::HandshakeTimeout,
        Self::NoEndpoint,
    ];

    /// A stable snake_case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownIndex => "unknown_index",
            Self::BadMac1 => "bad_mac1",
            Self::CookieRequired => "cookie_required",
            Self::RateLimited => "rate_limited",
            Self::CookieCapped => "cookie_capped",
            Self::HandshakeFailed => "handshake_failed",
            Self::UnknownPeer => "unknown_peer",
            Self::StaleTimestamp => "stale_timestamp",
            Self::InitiationFlood => "initiation_flood",
            Self::BadCookieReply => "bad_cookie_reply",
            Self::SessionExpired => "session_expired",
            Self::Replayed => "replayed",
            Self::TooOld => "too_old",
            Self::CounterLimit => "counter_limit",
            Self::Decrypt => "decrypt",
            Self::BadPayload => "bad_payload",
            Self::QueueFull => "queue_full",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::NoEndpoint => "no_endpoint",
        }
    }

    /// The counter slot: the declaration order, which `ALL` follows (tested).
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Drop counters by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::COUNT]);

impl DropCounts {
    /// Drops for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }
    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// Nonzero counters.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().zip(self.0).filter(|(_, n)| *n > 0).map(|(r, n)| (*r, n))
    }
    pub(crate) fn add(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_in_declaration_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r}");
        }
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }
}
