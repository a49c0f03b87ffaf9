//! A small table of results remembered for a while (a checked password, a
//! verified token, an auth service's yes), keyed by a keyed 128-bit hash of
//! what produced them, so the secrets themselves are never stored, and
//! bounded: when full, expired entries go first, then the oldest.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Results of type `V` remembered for `ttl`, at most `max` of them.
#[derive(Debug)]
pub struct Remembered<V> {
    entries: Mutex<HashMap<u128, (Instant, V)>>,
    keys: (RandomState, RandomState),
    ttl: Duration,
    max: usize,
}

impl<V: Clone> Remembered<V> {
    pub fn new(ttl: Duration, max: usize) -> Remembered<V> {
        Remembered {
            entries: Mutex::default(),
            keys: (RandomState::new(), RandomState::new()),
            ttl,
            max: max.max(1),
        }
    }

    /// The key for `parts` (each written with a separator, so `("ab", "c")`
    /// and `("a", "bc")` differ).
    pub fn key(&self, parts: &[&[u8]]) -> u128 {
        let half = |state: &RandomState| {
            let mut hasher = state.build_hasher();
            for part in parts {
                hasher.write_usize(part.len());
                hasher.write(part);
            }
            hasher.finish()
        };
        (u128::from(half(&self.keys.0)) << 64) | u128::from(half(&self.keys.1))
    }

    /// The value remembered under `key`, if it is younger than the ttl.
    pub fn get(&self, key: u128) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, value) = entries.get(&key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    pub fn put(&self, key: u128, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.max {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        if entries.len() >= self.max {
            let oldest = entries
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_kept_for_the_ttl_and_the_table_is_bounded() {
        let table = Remembered::new(Duration::from_secs(60), 3);
        let keys: Vec<u128> = (0u8..5).map(|n| table.key(&[&[n]])).collect();
        for (n, key) in keys.iter().enumerate() {
            table.put(*key, n);
        }
        assert_eq!(table.entries.lock().map(|e| e.len()).unwrap_or_default(), 3);
        assert_eq!(table.get(keys[4]), Some(4));
        assert_eq!(table.get(keys[0]), None, "the oldest went first");
        assert_ne!(table.key(&[b"ab", b"c"]), table.key(&[b"a", b"bc"]));
        let expired = Remembered::new(Duration::ZERO, 3);
        expired.put(1, "x");
        assert_eq!(expired.get(1), None);
    }
}
