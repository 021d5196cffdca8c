//! Link metrics and SLA monitoring (data-flow stages 4 and 5), sans-IO.
//!
//! - [`probe`]: probe and reply frames, carried as swarm frames inside the tunnel;
//! - [`window`]: HdrHistogram and counter windows;
//! - [`LinkMonitor`]: round trips, jitter (RFC 3550), loss (probes and transport
//!   counters) and goodput of one link, as a [`LinkStats`] snapshot;
//! - [`SlaJudge`]: a link against an [`SlaPolicy`] (by default the product's targets),
//!   with the sample rules and the hysteresis that make its events trustworthy;
//! - [`LinkTable`]: every link of a node: the probe and judge schedule, throughput
//!   trains, the gossiped summaries and the Vivaldi update;
//! - [`train`]: the active throughput test, a bounded packet train;
//! - [`summary`]: link summaries and coordinates in gossip, and the A-to-B query;
//! - [`vivaldi`]: network coordinates that estimate the round trip of unmeasured pairs;
//! - [`emulator`]: a seeded link emulator for the deterministic simulator;
//! - [`detour`]: when a breached link's traffic takes a two-hop path through a member,
//!   and when it comes back.

pub mod detour;
pub mod emulator;
pub mod index;
mod monitor;
pub mod probe;
mod sla;
pub mod summary;
mod table;
pub mod train;
pub mod vivaldi;
pub mod window;

pub use monitor::{
    LinkConfig, LinkMonitor, LinkStats, PassiveCounters, Quantiles, Ratio, RttBuckets, WindowStats,
    MAX_FAST_LINKS, MAX_LINK_MEMORY, RTT_BUCKET_BOUNDS,
};
pub use sla::{LatencyStat, Metric, SlaEvent, SlaJudge, SlaPolicy, SlaState};
pub use table::{
    LinkEvent, LinkGossip, LinkTable, LinkTransmit, PingError, SlaVerdict, ThroughputError, GOSSIP_INTERVAL,
    PING_TIMEOUT, TRAIN_PACKET, TRAIN_PACKETS,
};
