//! [`Tally`]: counts per key, where a key whose count falls to zero is forgotten (so a
//! tally of many short-lived keys stays as small as the keys counted now).

use std::collections::HashMap;
use std::hash::Hash;

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Tally<K>(HashMap<K, usize>);

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<K: Hash + Eq> Tally<K> {
    /// The count of `key` (0 when not counted).
    pub(crate) fn get(&self, key: &K) -> usize {
        self.0.get(key).copied().unwrap_or(0)
    }

    /// One more of `key`.
    pub(crate) fn add(&mut self, key: K) {
        *self.0.entry(key).or_default() += 1;
    }

    /// One fewer of `key`; nothing when it is not counted.
    pub(crate) fn remove(&mut self, key: &K) {
        if let Some(n) = self.0.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(key);
            }
        }
    }

    /// Whether nothing is counted.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_counted_down_to_zero_is_forgotten() {
        let mut t = super::Tally::default();
        t.add('a');
        t.add('a');
        t.remove(&'a');
        t.remove(&'b');
        assert_eq!((t.get(&'a'), t.get(&'b')), (1, 0));
        t.remove(&'a');
        assert!(t.is_empty());
    }
}
