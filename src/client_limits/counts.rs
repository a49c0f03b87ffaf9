//! Per-client counts of things held open (connections, sessions on a
//! route), for caps on them. An entry lives exactly as long as something
//! it counts, so the table is bounded by what is open, which
//! `max_connections` bounds already.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::ClientKey;

/// Open things per (scope, client): `scope` tells a listener's connections
/// from one route's sessions.
#[derive(Debug, Default)]
pub struct OpenCounts {
    counts: Mutex<HashMap<(u64, ClientKey), u32>>,
}

/// One counted thing; dropping it uncounts it.
#[derive(Debug)]
pub struct Held {
    counts: Arc<OpenCounts>,
    key: (u64, ClientKey),
}

impl OpenCounts {
    /// Counts one more for `client` under `scope`, unless it holds `cap` already.
    pub fn try_hold(self: &Arc<Self>, scope: u64, client: ClientKey, cap: u32) -> Option<Held> {
        let key = (scope, client);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(key).or_insert(0);
        if *count >= cap {
            if *count == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(Held {
            counts: Arc::clone(self),
            key,
        })
    }

    /// Entries held: clients with at least one thing open, per scope.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_holds_and_releasing_makes_room() {
        let counts = Arc::new(OpenCounts::default());
        let client = ClientKey::from_ip("10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}")), 64);
        let first = counts.try_hold(1, client, 2);
        let second = counts.try_hold(1, client, 2);
        assert!(first.is_some() && second.is_some());
        assert!(counts.try_hold(1, client, 2).is_none());
        assert!(counts.try_hold(2, client, 2).is_some());
        drop(first);
        assert!(counts.try_hold(1, client, 2).is_some());
        drop(second);
        assert_eq!(counts.len(), 0);
    }
}
