//! Per-client limits: who a client is for them ([`ClientKey`]), the rate
//! budgets ([`Gcra`], kept in the bounded [`RateTable`]) and the counts of
//! what each client holds open ([`OpenCounts`]). The gateway keeps one
//! [`ClientLimits`] for its whole life, so a reload neither resets a
//! client's budget nor forgets what it holds.

mod counts;
mod rate;
mod table;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use counts::{Held, OpenCounts};
pub use rate::Gcra;
pub use table::{RateTable, TableMeters};

/// A client as limits see it: an IPv4 address, or an IPv6 address cut to
/// its network prefix (a /64 by default, what one subscriber usually gets),
/// so a client cannot walk its own /64 to get a fresh budget per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(pub(super) u128);

impl ClientKey {
    pub fn from_ip(ip: IpAddr, ipv6_prefix: u8) -> ClientKey {
        match ip.to_canonical() {
            // Kept apart from every IPv6 prefix by the mapped form's ::ffff:0:0/96.
            IpAddr::V4(v4) => ClientKey(u128::from(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = match ipv6_prefix {
                    0 => 0,
                    prefix => u128::MAX << (128 - u32::from(prefix.min(128))),
                };
                ClientKey(bits & mask)
            }
        }
    }
}

/// A stable number for a limit's scope ("route", name, "requests"), so a
/// reload that keeps the limit keeps its states.
pub fn scope_id(parts: &[&str]) -> u64 {
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

/// A compiled rate limit: whose budgets it keeps (its scope) and the rate.
#[derive(Debug, Clone, Copy)]
pub struct RateRule {
    pub scope: u64,
    pub gcra: Gcra,
}

impl RateRule {
    pub fn new(scope: &[&str], amount: u64, per: Duration, burst: u64) -> RateRule {
        RateRule {
            scope: scope_id(scope),
            gcra: Gcra::new(amount, per, burst),
        }
    }
}

/// What the gateway keeps for per-client limits.
#[derive(Debug)]
pub struct ClientLimits {
    pub rates: RateTable,
    pub open: Arc<OpenCounts>,
}

impl ClientLimits {
    pub fn new(capacity: usize, meters: Option<TableMeters>) -> ClientLimits {
        ClientLimits {
            rates: RateTable::new(capacity, meters),
            open: Arc::default(),
        }
    }

    /// Takes one request from `client`'s budget under `rule`; on refusal,
    /// how long until one would pass.
    pub fn take(&self, rule: &RateRule, client: ClientKey, now: Instant) -> Result<(), Duration> {
        self.rates.take(rule.scope, &rule.gcra, client, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str, prefix: u8) -> ClientKey {
        ClientKey::from_ip(
            text.parse().unwrap_or_else(|e| panic!("{text}: {e}")),
            prefix,
        )
    }

    #[test]
    fn ipv6_clients_are_their_prefix() {
        assert_eq!(key("2001:db8::1", 64), key("2001:db8::ffff:1", 64));
        assert_ne!(key("2001:db8::1", 64), key("2001:db8:0:1::1", 64));
        assert_ne!(key("2001:db8::1", 128), key("2001:db8::2", 128));
        assert_eq!(key("2001:db8::1", 0), key("fe80::1", 0));
    }

    #[test]
    fn ipv4_clients_are_whole_addresses_however_written() {
        assert_eq!(key("10.0.0.1", 64), key("::ffff:10.0.0.1", 64));
        assert_ne!(key("10.0.0.1", 64), key("10.0.0.2", 64));
        // An IPv6 /64 never equals an IPv4 client.
        assert_ne!(key("::ffff:10.0.0.1", 64), key("::", 64));
    }
}
