//! The handshake queue: WireGuard handshake messages (initiations, responses, cookie
//! replies) wait here while the batch's transport data is handled, then take their turn
//! within a CPU budget, as the Linux module queues them for its handshake workers. A
//! flood of handshakes (each a Diffie-Hellman when it authenticates) so never delays
//! the data of established tunnels: it fills this queue, whose overflow is dropped and
//! counted, and whose filling puts the tunnels under load (cookies required).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use swarm_core::tunnel::wire::INITIATION_LEN;

/// Handshake messages waiting at most (about 180 KB); more are dropped.
pub(super) const HANDSHAKE_QUEUE: usize = 1024;
/// Time spent on handshakes per turn, at most, before data gets its turn again.
pub(super) const HANDSHAKE_BUDGET: Duration = Duration::from_millis(1);

/// A handshake message received, waiting for its turn.
pub(super) struct Queued {
    pub(super) src: SocketAddr,
    len: usize,
    bytes: [u8; INITIATION_LEN],
}

impl Queued {
    /// The message, to be handled in place.
    pub(super) fn bytes(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len]
    }
}

/// Whether `datagram` is a handshake message (type 1, 2 or 3 with zero reserved bytes,
/// no longer than an initiation): the kinds that go through the queue.
pub(super) fn is_handshake(datagram: &[u8]) -> bool {
    matches!(datagram, [1..=3, 0, 0, 0, ..]) && datagram.len() <= INITIATION_LEN
}

/// See the module docs.
#[derive(Default)]
pub(super) struct HandshakeQueue {
    items: VecDeque<Queued>,
    /// Since when the oldest message waits.
    since: Option<Instant>,
    /// Messages dropped because the queue was full.
    pub(super) dropped: u64,
}

impl HandshakeQueue {
    /// Queues `datagram` (a handshake message, see [`is_handshake`]); false when the
    /// queue is full and it was dropped.
    pub(super) fn push(&mut self, now: Instant, src: SocketAddr, datagram: &[u8]) -> bool {
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
    pub(super) fn pop(&mut self) -> Option<Queued> {
        let item = self.items.pop_front();
        if self.items.is_empty() {
            self.since = None;
        }
        item
    }

    /// Over half full: the node is under load.
    pub(super) fn loaded(&self) -> bool {
        self.items.len() > HANDSHAKE_QUEUE / 2
    }

    /// When messages wait: at once.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.since
    }

    pub(super) fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_and_counts_what_it_drops() {
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
