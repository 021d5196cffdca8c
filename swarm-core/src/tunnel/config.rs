//! Settings of [`super::Tunnels`] and the whitepaper's timers.

use std::time::Duration;

use super::ratelimit::RateLimit;

/// The whitepaper's timers (§6.1). Tests shorten them; nodes keep the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// A session the initiator started is renewed after this long (120 s).
    pub rekey_after_time: Duration,
    /// A session is not used after this long (180 s).
    pub reject_after_time: Duration,
    /// A handshake is retried for this long before giving up (90 s).
    pub rekey_attempt_time: Duration,
    /// Time between initiations to one peer, plus up to 333 ms jitter (5 s).
    pub rekey_timeout: Duration,
    /// A keepalive follows received data after this long with nothing sent (10 s).
    pub keepalive_timeout: Duration,
    /// A session is renewed after sending this many messages (2^60).
    pub rekey_after_messages: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            rekey_after_time: Duration::from_secs(120),
            reject_after_time: Duration::from_secs(180),
            rekey_attempt_time: Duration::from_secs(90),
            rekey_timeout: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(10),
            rekey_after_messages: 1 << 60,
        }
    }
}

/// Settings of a [`super::Tunnels`].
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The swarm's pre-shared key, mixed into every handshake; `None` is WireGuard's
    /// all-zero key.
    pub psk: Option<[u8; 32]>,
    /// Handshake messages per second above which the node is under load: it then
    /// answers handshakes without a valid mac2 with a cookie reply, and rate-limits each
    /// source address.
    pub load_threshold: u32,
    /// The per-source limit applied under load.
    pub rate_limit: RateLimit,
    /// Cookie replies per source address under load (a flood with valid mac1 from few
    /// addresses gets few answers).
    pub cookie_replies_per_source: RateLimit,
    /// Cookie replies per second in all (a flood from many addresses, or spoofed ones,
    /// cannot turn the node into a reflector).
    pub cookie_replies_per_second: u32,
    /// Payloads kept per peer while its handshake is under way.
    pub queue_per_peer: usize,
    /// Bytes of those payloads at most (with `queue_per_peer`, what keeps a peer
    /// within its memory budget of 64 KiB).
    pub queue_bytes_per_peer: usize,
    /// Peers at most.
    pub max_peers: usize,
    /// Send a keepalive when nothing was sent for this long (for peers behind NAT).
    pub persistent_keepalive: Option<Duration>,
    /// Largest application datagram [`Tunnels::send_datagram`] accepts.
    pub max_datagram: usize,
    /// The protocol's timers.
    pub timers: Timers,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            psk: None,
            load_threshold: 1000,
            rate_limit: RateLimit::default(),
            cookie_replies_per_source: RateLimit::default(),
            cookie_replies_per_second: 2_000,
            queue_per_peer: 32,
            queue_bytes_per_peer: 48 * 1024,
            max_peers: 65_536,
            persistent_keepalive: None,
            max_datagram: 65_000,
            timers: Timers::default(),
        }
    }
}
