//! The rate limits' memory: one GCRA state per (limit, client), in a table
//! of fixed capacity. A flood from many addresses cannot grow it: when a
//! shard is full, states already back to a full budget are dropped first
//! (they decide nothing: see [`super::rate`]), and only when every state
//! in the shard is still limiting does the one closest to a full budget
//! go, which hands that client its burst early. Evictions of that second
//! kind are counted, so an operator sees when the table is too small.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};

use super::rate::Gcra;
use super::ClientKey;

/// Shards, so requests from different clients rarely wait on one lock.
const SHARDS: usize = 16;

/// Which limit a state belongs to (a route's request rate, a listener's),
/// and whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    limit: u64,
    client: ClientKey,
}

/// Bounded per-client rate states, kept across reloads.
#[derive(Debug)]
pub struct RateTable {
    shards: Box<[Mutex<HashMap<Key, u64>>]>,
    per_shard: usize,
    epoch: Instant,
    meters: Option<TableMeters>,
}

/// The table's series: its size, and states dropped while still limiting.
#[derive(Debug, Clone)]
pub struct TableMeters {
    pub entries: IntGauge,
    pub evicted: IntCounter,
}

impl RateTable {
    /// A table for at most `capacity` states (rounded up to a multiple of
    /// the shard count).
    pub fn new(capacity: usize, meters: Option<TableMeters>) -> RateTable {
        RateTable {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            epoch: Instant::now(),
            meters,
        }
    }

    /// The most states the table holds.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// Takes one unit of `client`'s budget under `limit` at `now`; on
    /// refusal, how long until one would be allowed.
    pub fn take(
        &self,
        limit: u64,
        gcra: &Gcra,
        client: ClientKey,
        now: Instant,
    ) -> Result<(), Duration> {
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let key = Key { limit, client };
        let shard = &self.shards[shard_of(&key)];
        let mut states = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tat) = states.get_mut(&key) {
            return gcra.take(tat, now, 1);
        }
        // A client not in the table has a full budget.
        let mut tat = 0;
        gcra.take(&mut tat, now, 1)?;
        if states.len() >= self.per_shard {
            self.make_room(&mut states, now);
        }
        states.insert(key, tat);
        if let Some(meters) = &self.meters {
            meters.entries.inc();
        }
        Ok(())
    }

    fn make_room(&self, states: &mut HashMap<Key, u64>, now: u64) {
        let before = states.len();
        states.retain(|_, tat| *tat > now);
        if states.len() == before {
            let closest = states
                .iter()
                .min_by_key(|(_, tat)| **tat)
                .map(|(key, _)| *key);
            if let Some(key) = closest {
                states.remove(&key);
                if let Some(meters) = &self.meters {
                    meters.evicted.inc();
                }
            }
        }
        if let Some(meters) = &self.meters {
            meters
                .entries
                .sub(i64::try_from(before - states.len()).unwrap_or(0));
        }
    }

    /// States held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

fn shard_of(key: &Key) -> usize {
    // The client's low bits vary most (the host part of an address); the
    // limit spreads one client's limits apart.
    let bits = key.client.0;
    let mixed = (bits as u64) ^ ((bits >> 64) as u64) ^ key.limit;
    (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u32) -> ClientKey {
        ClientKey::from_ip(std::net::Ipv4Addr::from(n).into(), 64)
    }

    #[test]
    fn limits_are_per_client_and_per_limit() {
        let table = RateTable::new(100, None);
        let gcra = Gcra::new(1, Duration::from_secs(60), 1);
        let now = Instant::now();
        assert!(table.take(1, &gcra, client(1), now).is_ok());
        assert!(table.take(1, &gcra, client(1), now).is_err());
        assert!(table.take(1, &gcra, client(2), now).is_ok());
        assert!(table.take(2, &gcra, client(1), now).is_ok());
    }

    #[test]
    fn a_flood_from_many_addresses_stays_within_capacity() {
        let evicted = IntCounter::new("evicted", "test").unwrap_or_else(|e| panic!("{e}"));
        let entries = IntGauge::new("entries", "test").unwrap_or_else(|e| panic!("{e}"));
        let meters = TableMeters {
            entries: entries.clone(),
            evicted: evicted.clone(),
        };
        let table = RateTable::new(1000, Some(meters));
        let gcra = Gcra::new(1, Duration::from_secs(60), 1);
        let now = Instant::now();
        for n in 0..100_000 {
            let _ = table.take(1, &gcra, client(n), now);
        }
        assert!(table.len() <= table.capacity());
        assert_eq!(entries.get() as usize, table.len());
        // Every state was still limiting: each insert past capacity evicted one.
        assert_eq!(evicted.get() as usize, 100_000 - table.len());
    }

    #[test]
    fn states_back_to_a_full_budget_go_first() {
        let evicted = IntCounter::new("evicted", "test").unwrap_or_else(|e| panic!("{e}"));
        let entries = IntGauge::new("entries", "test").unwrap_or_else(|e| panic!("{e}"));
        let meters = TableMeters {
            entries,
            evicted: evicted.clone(),
        };
        let table = RateTable::new(SHARDS * 4, Some(meters));
        let gcra = Gcra::new(1, Duration::from_millis(1), 1);
        let start = Instant::now();
        for n in 0..10_000 {
            let _ = table.take(
                1,
                &gcra,
                client(n),
                start + Duration::from_millis(u64::from(n)),
            );
        }
        assert_eq!(evicted.get(), 0);
    }
}
