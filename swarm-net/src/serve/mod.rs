//! What a node serves beside its driver: the metrics endpoint ([`metrics`]).

pub(crate) mod metrics;
