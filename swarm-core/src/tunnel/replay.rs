//! The anti-replay window of a WireGuard session (RFC 6479's bitmap, as in the Linux
//! module and boringtun): a counter is accepted once, in any order, while it is among the
//! [`WINDOW`] most recent counters (`highest - WINDOW < counter`).
//!
//! Use: [`ReplayWindow::check`] before decrypting (cheap, no state change), and
//! [`ReplayWindow::mark`] only after the packet authenticated, so a forged packet with a
//! huge counter cannot move the window.

/// Counters accepted behind the highest one seen.
pub const WINDOW: u64 = 2048;
const WORD_BITS: u64 = 64;
/// One spare word, so advancing never clears bits still inside the window.
const WORDS: usize = (WINDOW / WORD_BITS) as usize + 1;
/// Counters at or above this are never accepted (WireGuard's REJECT_AFTER_MESSAGES).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

/// Why a counter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The counter was seen before.
    #[error("counter {0} was already received")]
    Replayed(u64),
    /// The counter is further behind the newest than the window reaches.
    #[error("counter {0} is older than the replay window")]
    TooOld(u64),
    /// The counter is past the session's message limit.
    #[error("counter {0} is past the message limit")]
    LimitReached(u64),
}

/// A 2048-counter sliding window. See the module docs.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest counter marked, plus one; 0 when nothing was marked.
    next: u64,
    bitmap: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window.
    pub const fn new() -> Self {
        Self { next: 0, bitmap: [0; WORDS] }
    }

    fn slot(counter: u64) -> (usize, u64) {
        (((counter / WORD_BITS) % WORDS as u64) as usize, 1 << (counter % WORD_BITS))
    }

    /// Whether `counter` may be accepted. Changes nothing.
    pub fn check(&self, counter: u64) -> Result<(), ReplayError> {
        if counter >= REJECT_AFTER_MESSAGES {
            return Err(ReplayError::LimitReached(counter));
        }
        if counter >= self.next {
            return Ok(());
        }
        if counter + WINDOW < self.next {
            return Err(ReplayError::TooOld(counter));
        }
        let (word, bit) = Self::slot(counter);
        if self.bitmap[word] & bit != 0 {
            return Err(ReplayError::Replayed(counter));
        }
        Ok(())
    }

    /// Records `counter` as received, after its packet authenticated. Returns the same
    /// verdict as [`Self::check`]; on `Err` nothing changes.
    pub fn mark(&mut self, counter: u64) -> Result<(), ReplayError> {
        self.check(counter)?;
        if counter >= self.next {
            self.advance_to(counter);
        }
        let (word, bit) = Self::slot(counter);
        self.bitmap[word] |= bit;
        Ok(())
    }

    /// Moves the top of the window to `counter`, clearing the words it passes.
    fn advance_to(&mut self, counter: u64) {
        let old_top = if self.next == 0 { None } else { Some((self.next - 1) / WORD_BITS) };
        let new_top = counter / WORD_BITS;
        match old_top {
            Some(old) if new_top == old => {}
            Some(old) if new_top - old < WORDS as u64 => {
                for w in (old + 1)..=new_top {
                    self.bitmap[(w % WORDS as u64) as usize] = 0;
                }
            }
            _ => self.bitmap = [0; WORDS],
        }
        self.next = counter + 1;
    }

    /// Whether `counter` was marked: `None` when it is older than the window (forgotten).
    pub fn is_marked(&self, counter: u64) -> Option<bool> {
        if counter >= self.next {
            return Some(false);
        }
        if counter + WINDOW < self.next {
            return None;
        }
        let (word, bit) = Self::slot(counter);
        Some(self.bitmap[word] & bit != 0)
    }

    /// One past the highest counter marked (0 when none).
    pub fn next(&self) -> u64 {
        self.next
    }

    /// The highest counter marked, if any.
    pub fn highest(&self) -> Option<u64> {
        self.next.checked_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn in_order_then_replayed() {
        let mut w = ReplayWindow::new();
        for c in 0..5000 {
            assert_eq!(w.mark(c), Ok(()), "{c}");
        }
        for c in (5000 - WINDOW)..5000 {
            assert_eq!(w.check(c), Err(ReplayError::Replayed(c)));
        }
        assert_eq!(w.check(5000 - WINDOW - 1), Err(ReplayError::TooOld(5000 - WINDOW - 1)));
        assert_eq!(w.highest(), Some(4999));
    }

    #[test]
    fn out_of_order_within_the_window_is_accepted_once() {
        let mut w = ReplayWindow::new();
        w.mark(3000).unwrap();
        // The window holds 3000 and the 2047 counters below it: each is acceptable, once.
        for c in (3000 - WINDOW + 1..3000).rev() {
            assert_eq!(w.mark(c), Ok(()), "{c}");
            assert_eq!(w.mark(c), Err(ReplayError::Replayed(c)));
        }
        assert_eq!(w.mark(3000 - WINDOW), Err(ReplayError::TooOld(3000 - WINDOW)));
    }

    #[test]
    fn check_changes_nothing_and_failed_marks_change_nothing() {
        let mut w = ReplayWindow::new();
        w.mark(10).unwrap();
        assert_eq!(w.check(1_000_000), Ok(()));
        assert_eq!(w.check(9), Ok(()));
        assert_eq!(w.mark(10), Err(ReplayError::Replayed(10)));
        assert_eq!(w.highest(), Some(10));
        assert_eq!(w.mark(u64::MAX), Err(ReplayError::LimitReached(u64::MAX)));
        assert_eq!(w.highest(), Some(10));
    }

    #[test]
    fn big_jumps_clear_the_window() {
        let mut w = ReplayWindow::new();
        for c in 0..100 {
            w.mark(c).unwrap();
        }
        let top = 100 + 10 * WINDOW;
        w.mark(top).unwrap();
        for c in (top - WINDOW + 1)..top {
            assert_eq!(w.check(c), Ok(()), "{c}: stale bits of the old window must be gone");
        }
    }

    /// Against a reference model: a set of marked counters and the rule of the window.
    #[test]
    fn matches_a_reference_model_on_a_million_seeded_counters() {
        let mut w = ReplayWindow::new();
        let mut seen = HashSet::new();
        let mut top: Option<u64> = None;
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut base: u64 = 0;
        let mut accepted_replays = 0;
        for _ in 0..1_000_000 {
            // xorshift64*: deterministic, no OS randomness.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            base += r % 3; // mostly forward
            let c = match r % 10 {
                0..=5 => base,
                6..=7 => base.saturating_sub((r >> 8) % (WINDOW + 200)),
                8 => base + (r >> 8) % 5000,
                _ => base.saturating_sub((r >> 8) % 64),
            };
            let model = match top {
                Some(t) if c + WINDOW <= t => Err(ReplayError::TooOld(c)),
                _ if seen.contains(&c) => Err(ReplayError::Replayed(c)),
                _ => Ok(()),
            };
            let got = w.mark(c);
            assert_eq!(got, model, "counter {c}, top {top:?}");
            if got.is_ok() {
                if !seen.insert(c) {
                    accepted_replays += 1;
                }
                top = Some(top.map_or(c, |t| t.max(c)));
                seen.retain(|&s| s + WINDOW + 64 > top.unwrap_or(0));
            }
        }
        assert_eq!(accepted_replays, 0, "0 replayed counters accepted in 10^6 tries");
    }
}
