//! The handshake queue: WireGuard handshake messages (initiations, responses, cookie
//! replies) wait here while the batch's transport data is handled, then take their turn
//! within a CPU budget, as the Linux module queues them for its handshake workers. A
//! flood of handshakes (each a Diffie-Hellman when it authenticates) so never delays
//! the data of established tunnels: it fills this queue, whose overflow is dropped and
//! counted, and whose filling puts the tunnels under load (cookies required). The caller
//! (the node's data plane) queues what [`is_handshake`] picks out of a batch, handles the
//! batch's data, then calls [`HandshakeQueue::drain`] with its clock.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::wire::INITIATION_LEN;

/// Handshake messages waiting at most (about 180 KB); more are dropped.
pub const HANDSHAKE_QUEUE: usize = 1024;
/// Time spent on handshakes per turn, at most, before data gets its turn again.
pub const HANDSHAKE_BUDGET: Duration = Duration::from_millis(1);

/// A handshake message received, waiting for its turn.
#[derive(Debug)]
pub struct Queued {
    /// Where it came from.
    pub src: SocketAddr,
    len: usize,
    bytes: [u8; INITIATION_LEN],
}

impl Queued {
    /// The message, to be handled in place.
    pub fn bytes(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len]
    }
}

/// Whether `datagram` is a handshake message (type 1, 2 or 3 with zero reserved bytes,
/// no longer than an initiation): the kinds that go through the queue.
pub fn is_handshake(datagram: &[u8]) -> bool {
    matches!(datagram, [1..=3, 0, 0, 0, ..]) && datagram.len() <= INITIATION_LEN
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct HandshakeQueue {
    items: VecDeque<Queued>,
    /// Since when the oldest message waits.
    since: Option<Instant>,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
}

impl HandshakeQueue {
    /// Queues `datagram` (a handshake message, see [`is_handshake`]); false when the
    /// queue is full and it was dropped.
    pub fn push(&mut self, now: Instant, src: SocketAddr, datagram: &[u8]) -> bool {
        if self.items.len() >= HANDSHAKE_QUEUE || datagram.len() > INITIATION_LEN {
            self.dropped += 1;
            return false;
        }
        let mut bytes = [0u8; INITIATION_LEN];
        bytes[..datagram.len()].copy_from_slice(datagram);
        self.items.push_back(Queued { src, len: datagram.len(), bytes });
        self.since.get_or_insert(now);
        true
    }

    /// The next message, oldest first.
    pub fn pop(&mut self) -> Option<Queued> {
        let item = self.items.pop_front();
        if self.items.is_empty() {
            self.since = None;
        }
        item
    }

    /// Hands queued messages to `handle`, oldest first, until the queue is empty or
    /// `budget` has passed by `clock` (read once every 8 messages: reading a clock costs
    /// more than refusing a forged message). How many were handed over.
    pub fn drain(
        &mut self,
        budget: Duration,
        mut clock: impl FnMut() -> Instant,
        mut handle: impl FnMut(Queued),
    ) -> u32 {
        let start = clock();
        let mut handled = 0u32;
        while let Some(queued) = self.pop() {
            handle(queued);
            handled += 1;
            if handled.is_multiple_of(8) && clock().saturating_duration_since(start) >= budget {
                break;
            }
        }
        handled
    }

    /// Over half full: the node is under load.
    pub fn loaded(&self) -> bool {
        self.items.len() > HANDSHAKE_QUEUE / 2
    }

    /// When messages wait: at once.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.since
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a virtual clock where each message takes 100 µs: a 1 ms budget hands over 16
    /// (the clock is read every 8), the rest waits for the next turn, oldest first.
    #[test]
    fn a_turn_ends_when_its_budget_is_spent() {
        #[allow(clippy::disallowed_methods)] // the virtual clock's epoch
        let t0 = Instant::now();
        let now = std::cell::Cell::new(t0);
        let src: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let mut q = HandshakeQueue::default();
        for i in 0..40u8 {
            assert!(q.push(t0, src, &[1, 0, 0, 0, i]));
        }
        let mut seen = Vec::new();
        let clock = || now.get();
        let handled = q.drain(HANDSHAKE_BUDGET, clock, |mut m| {
            seen.push(m.bytes()[4]);
            now.set(now.get() + Duration::from_micros(100));
        });
        assert_eq!(handled, 16);
        assert_eq!(seen, (0..16).collect::<Vec<u8>>());
        assert_eq!(q.len(), 24);
        assert_eq!(q.poll_timeout(), Some(t0), "the rest still waits");
        // Cheap messages: the whole queue in one turn.
        assert_eq!(q.drain(HANDSHAKE_BUDGET, || t0, |_| {}), 24);
        assert_eq!(q.poll_timeout(), None);
    }

    #[test]
    fn the_queue_is_bounded_and_counts_what_it_drops() {
        #[allow(clippy::disallowed_methods)] // the virtual clock's epoch
        let now = Instant::now();
        let src: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let mut q = HandshakeQueue::default();
        let mut m = [0u8; INITIATION_LEN];
        m[0] = 1;
        assert!(is_handshake(&m) && is_handshake(&m[..92]) && !is_handshake(&[4, 0, 0, 0, 1]));
        assert!(!is_handshake(&[1, 0, 1, 0]), "reserved bytes set");
        for _ in 0..HANDSHAKE_QUEUE {
            assert!(q.push(now, src, &m));
        }
        assert!(q.loaded());
        assert!(!q.push(now, src, &m));
        assert_eq!((q.len(), q.dropped), (HANDSHAKE_QUEUE, 1));
        assert_eq!(q.poll_timeout(), Some(now));
        let mut first = q.pop().unwrap();
        assert_eq!((first.src, first.bytes().len()), (src, INITIATION_LEN));
        while q.pop().is_some() {}
        assert_eq!(q.poll_timeout(), None);
    }
}
