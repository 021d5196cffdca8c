//! One transport session: the two keys a handshake derived, the sending counter and the
//! replay window. Sealing and opening work in place on caller-owned buffers; nothing
//! here allocates.

use std::time::Instant;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

use super::replay::{ReplayError, ReplayWindow, REJECT_AFTER_MESSAGES};
use super::wire::{emit_transport_header, padded_len, TAG_LEN, TRANSPORT_HEADER_LEN};
use super::DropReason;

#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) local_index: u32,
    pub(crate) remote_index: u32,
    send: LessSafeKey,
    recv: LessSafeKey,
    pub(crate) send_counter: u64,
    pub(crate) replay: ReplayWindow,
    /// Counters below this are settled: received, or lost for good.
    pub(crate) settled: u64,
    /// Settled counters never received.
    pub(crate) lost: u64,
    pub(crate) created: Instant,
    /// Whether this side sent the initiation.
    pub(crate) initiator: bool,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("send_counter", &self.send_counter)
            .field("initiator", &self.initiator)
            .finish_non_exhaustive()
    }
}

fn key(bytes: &[u8; 32]) -> LessSafeKey {
    // ChaCha20-Poly1305 takes any 32-byte key.
    #[allow(clippy::expect_used)]
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("a 32-byte key"))
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Why a payload could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SealError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// The session has sent its last allowed message.
    Exhausted,
}

impl Session {
    pub(crate) fn new(
        local_index: u32,
        remote_index: u32,
        send: &[u8; 32],
        recv: &[u8; 32],
        created: Instant,
        initiator: bool,
    ) -> Self {
        Self {
            local_index,
            remote_index,
            send: key(send),
            recv: key(recv),
            send_counter: 0,
            replay: ReplayWindow::new(),
            settled: 0,
            lost: 0,
            created,
            initiator,
        }
    }

    /// Writes a transport message carrying `parts` (concatenated, padded to 16) into
    /// `out`; returns its length.
    pub(crate) fn seal(&mut self, parts: &[&[u8]], out: &mut [u8]) -> Result<usize, SealError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let padded = padded_len(len);
        let total = TRANSPORT_HEADER_LEN + padded + TAG_LEN;
        if out.len() < total {
            return Err(SealError::BufferTooSmall);
        }
        let counter = self.send_counter;
        if counter >= REJECT_AFTER_MESSAGES {
            return Err(SealError::Exhausted);
        }
        emit_transport_header(out, self.remote_index, counter).map_err(|_| SealError::BufferTooSmall)?;
        let mut at = TRANSPORT_HEADER_LEN;
        for p in parts {
            out[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        let body_end = TRANSPORT_HEADER_LEN + padded;
        out[at..body_end].fill(0);
        let tag = self
            .send
            .seal_in_place_separate_tag(
                nonce(counter),
                Aad::empty(),
                &mut out[TRANSPORT_HEADER_LEN..body_end],
            )
            .map_err(|_| SealError::Exhausted)?;
        out[body_end..total].copy_from_slice(tag.as_ref());
        self.send_counter = counter + 1;
        Ok(total)
    }

    /// Authenticates and decrypts `sealed` (ciphertext and tag) in place. The replay
    /// window is checked first and marked only after the tag verified.
    pub(crate) fn open<'a>(
        &mut self,
        counter: u64,
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], DropReason> {
        self.replay.check(counter).map_err(replay_reason)?;
        if sealed.len() < TAG_LEN {
            return Err(DropReason::Malformed);
        }
        let body =
            self.recv.open_in_place(nonce(counter), Aad::empty(), sealed).map_err(|_| DropReason::Decrypt)?;
        self.settle(counter);
        self.replay.mark(counter).map_err(replay_reason)?;
        Ok(body)
    }
}

/// A counter this far behind the highest is settled: a packet delayed past that many
/// later ones counts as lost (the replay window itself holds 2048).
pub(crate) const REORDER_MARGIN: u64 = 128;

impl Session {
    /// Settles the counters that fell `REORDER_MARGIN` behind the highest, now that
    /// `counter` (authenticated, not yet marked) arrived: each was received or is lost.
    /// Amortised O(1); at most one replay window's worth of work per packet.
    fn settle(&mut self, counter: u64) {
        let next = self.replay.next();
        let target = next.max(counter + 1).saturating_sub(REORDER_MARGIN);
        if target <= self.settled {
            return;
        }
        let start = self.settled;
        let mut lost = 0u64;
        // Forgotten by the window (only after a jump): counted lost.
        let remembered = start.max(next.saturating_sub(super::replay::WINDOW));
        lost += remembered.min(target) - start.min(remembered.min(target));
        for k in remembered..target.min(next) {
            if k != counter && self.replay.is_marked(k) != Some(true) {
                lost += 1;
            }
        }
        // Above the highest before this packet: never received, but for this one.
        let fresh = start.max(next);
        if target > fresh {
            lost += target - fresh;
            if (fresh..target).contains(&counter) {
                lost -= 1;
            }
        }
        self.settled = target;
        self.lost += lost;
    }
}

fn replay_reason(e: ReplayError) -> DropReason {
    match e {
        ReplayError::Replayed(_) => DropReason::Replayed,
        ReplayError::TooOld(_) => DropReason::TooOld,
        _ => DropReason::CounterLimit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Session, Session) {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        (Session::new(1, 2, &[7; 32], &[8; 32], t0, true), Session::new(2, 1, &[8; 32], &[7; 32], t0, false))
    }

    fn deliver(tx: &mut Session, rx: &mut Session, counter: u64) {
        let mut out = [0u8; 64];
        tx.send_counter = counter;
        let len = tx.seal(&[b"x"], &mut out).unwrap();
        rx.open(counter, &mut out[TRANSPORT_HEADER_LEN..len]).unwrap();
    }

    #[test]
    fn counters_settle_as_received_or_lost() {
        let (mut tx, mut rx) = pair();
        // 0..2000 with every tenth lost, and 50..60 arriving late (within the margin).
        for c in (0..2000u64).filter(|c| c % 10 != 3 && !(50..60).contains(c)) {
            deliver(&mut tx, &mut rx, c);
            if c == 100 {
                for late in (50..60).filter(|c| c % 10 != 3) {
                    deliver(&mut tx, &mut rx, late);
                }
            }
        }
        assert_eq!(rx.settled, 2000 - REORDER_MARGIN);
        let expected_lost = (0..rx.settled).filter(|c| c % 10 == 3).count() as u64;
        assert_eq!(rx.lost, expected_lost, "late packets filled their gaps");
        // A jump far past the window: bounded work, the skipped counters lost.
        let before = rx.lost;
        deliver(&mut tx, &mut rx, 1_000_000);
        assert_eq!(rx.settled, 1_000_001 - REORDER_MARGIN);
        let received_in_tail = (1872..2000u64).filter(|c| c % 10 != 3).count() as u64;
        assert_eq!(rx.lost - before, (1_000_001 - REORDER_MARGIN - 1872) - received_in_tail);
    }
}
