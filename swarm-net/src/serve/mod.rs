//! What a node serves beside its driver: the metrics endpoint ([`metrics`]), and what
//! every accept loop shares ([`AcceptBackoff`]).

pub(crate) mod metrics;

use std::time::Duration;

/// Pacing for an accept loop whose `accept()` fails. When the process is out of file
/// descriptors (EMFILE, ENFILE) or the kernel of memory (ENOBUFS, ENOMEM), the pending
/// connection stays queued and every `accept()` fails again at once: a loop that just
/// retries spins a core and starves everything else. This one sleeps 10 ms doubling to
/// 1 s while the errors last, and logs once per episode (a WARN for running out, with
/// how many failed when it ends).
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    what: &'static str,
    failures: u64,
    delay: Duration,
}

/// The first pause after a failed `accept()`.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest.
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

impl AcceptBackoff {
    /// Pacing for the accept loop of `what` (a name for the log).
    pub fn new(what: &'static str) -> Self {
        Self { what, failures: 0, delay: Duration::ZERO }
    }

    /// `accept()` failed with `error`: how long to wait before the next.
    pub fn failed(&mut self, error: &std::io::Error) -> Duration {
        if self.failures == 0 {
            let out_of_resources = matches!(error.raw_os_error(), Some(23 | 24 | 12 | 105));
            if out_of_resources {
                tracing::warn!(what = self.what, %error, "cannot accept connections: out of descriptors or memory; pausing");
            } else {
                tracing::info!(what = self.what, %error, "accept failed");
            }
        }
        self.failures += 1;
        self.delay = (self.delay * 2).clamp(FIRST_PAUSE, LONGEST_PAUSE);
        self.delay
    }

    /// `accept()` succeeded: the episode, if any, is over.
    pub fn accepted(&mut self) {
        if self.failures > 1 {
            tracing::warn!(what = self.what, failed = self.failures, "accepting connections again");
        }
        self.failures = 0;
        self.delay = Duration::ZERO;
    }

    /// The result of an `accept()`: the connection, or `None` after pausing as long as
    /// the failure calls for (the loop then goes round again).
    pub async fn check<T>(&mut self, accepted: std::io::Result<T>) -> Option<T> {
        match accepted {
            Ok(connection) => {
                self.accepted();
                Some(connection)
            }
            Err(e) => {
                tokio::time::sleep(self.failed(&e)).await;
                None
            }
        }
    }

    /// `accept()` calls that failed in a row.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_to_a_second_and_reset_on_success() {
        let mut b = AcceptBackoff::new("test");
        let emfile = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<u128> = (0..9).map(|_| b.failed(&emfile).as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(b.failures(), 9);
        b.accepted();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.failed(&emfile), FIRST_PAUSE);
    }
}
