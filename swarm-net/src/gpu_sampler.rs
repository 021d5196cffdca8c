//! Samples the GPU probe off the async runtime, on a timer, and hands the samples to the
//! driver through a small bounded channel. A failing probe is logged once per failure
//! streak, never retried faster than the interval.

use std::sync::Arc;
use std::time::Duration;

use swarm_core::gpu::GpuSnapshot;
use swarm_gpu::GpuProbe;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Starts the sampler. It stops when the receiver is dropped, or when aborted.
pub(crate) fn spawn(
    probe: Arc<dyn GpuProbe>,
    every: Duration,
) -> (mpsc::Receiver<GpuSnapshot>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(2);
    let task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first sample was taken at start
        let mut failing = false;
        loop {
            ticker.tick().await;
            let p = probe.clone();
            let sample = match tokio::task::spawn_blocking(move || p.sample()).await {
                Ok(Ok(sample)) => {
                    failing = false;
                    sample
                }
                Ok(Err(e)) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(probe = probe.name(), error = %e, "GPU probe failed: reporting no GPU until it answers again");
                    }
                    GpuSnapshot::default()
                }
                Err(e) => {
                    tracing::error!(error = %e, "GPU probe panicked; sampling stops");
                    return;
                }
            };
            match tx.try_send(sample) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    });
    (rx, task)
}
