//! The generic cell rate algorithm (GCRA): one number per limited thing,
//! the time at which its budget will be full again ("theoretical arrival
//! time"). Equivalent to a token bucket, but a state at or before `now` is
//! the same as no state at all, so a table of them can drop any idle entry
//! without changing a single decision (see [`super::table`]).

use std::time::Duration;

/// A rate with a burst: `burst` units at once, then `amount` units per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    per_nanos: u64,
    amount: u64,
    /// How far ahead of now the budget may be spent: `burst` units' worth.
    tolerance: u64,
}

impl Gcra {
    /// `amount` units per `per`, up to `burst` at once; `amount` and `burst`
    /// are at least 1 (validation sees to it; zero is taken as 1).
    pub fn new(amount: u64, per: Duration, burst: u64) -> Gcra {
        let per_nanos = u64::try_from(per.as_nanos()).unwrap_or(u64::MAX).max(1);
        let amount = amount.max(1);
        let mut gcra = Gcra {
            per_nanos,
            amount,
            tolerance: 0,
        };
        gcra.tolerance = gcra.cost(burst.max(1));
        gcra
    }

    /// How long `units` take at the rate, in nanoseconds (rounded up, so a
    /// rate never lets more through than it says).
    fn cost(&self, units: u64) -> u64 {
        let nanos =
            (u128::from(units) * u128::from(self.per_nanos)).div_ceil(u128::from(self.amount));
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// Takes `units` at `now` if the budget allows, updating `tat`; if not,
    /// leaves `tat` alone and says how long until it would be allowed.
    pub fn take(&self, tat: &mut u64, now: u64, units: u64) -> Result<(), Duration> {
        let next = (*tat).max(now).saturating_add(self.cost(units));
        let ahead = next - now;
        if ahead > self.tolerance {
            return Err(Duration::from_nanos(ahead - self.tolerance));
        }
        *tat = next;
        Ok(())
    }

    /// Spends `units` that were already used (bytes read off a socket
    /// cannot be put back), and returns how far the budget is overdrawn:
    /// zero while within it, else how long until it is back in.
    pub fn charge(&self, tat: &mut u64, now: u64, units: u64) -> Duration {
        *tat = (*tat).max(now).saturating_add(self.cost(units));
        self.overdrawn(*tat, now)
    }

    /// How long until a budget at `tat` is within its tolerance again.
    pub fn overdrawn(&self, tat: u64, now: u64) -> Duration {
        Duration::from_nanos(tat.saturating_sub(now).saturating_sub(self.tolerance))
    }

    /// The units the budget at `tat` allows now.
    pub fn available(&self, tat: u64, now: u64) -> u64 {
        let spent = tat.saturating_sub(now);
        let left = self.tolerance.saturating_sub(spent);
        u64::try_from(u128::from(left) * u128::from(self.amount) / u128::from(self.per_nanos))
            .unwrap_or(u64::MAX)
    }

    /// The units a full budget holds: what may be spent at once.
    pub fn burst_units(&self) -> u64 {
        u64::try_from(
            u128::from(self.tolerance) * u128::from(self.amount) / u128::from(self.per_nanos),
        )
        .unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_burst_then_the_rate() {
        let gcra = Gcra::new(10, Duration::from_secs(1), 5);
        let mut tat = 0;
        for _ in 0..5 {
            assert!(gcra.take(&mut tat, SECOND, 1).is_ok());
        }
        let wait = gcra.take(&mut tat, SECOND, 1).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(gcra.take(&mut tat, SECOND + SECOND / 10, 1).is_ok());
        assert!(gcra.take(&mut tat, SECOND + SECOND / 10, 1).is_err());
    }

    #[test]
    fn over_a_long_run_exactly_the_rate_passes() {
        let gcra = Gcra::new(20, Duration::from_secs(1), 1);
        let mut tat = 0;
        let mut passed = 0;
        // Asked every millisecond for 10 s: 20/s plus the one-unit burst.
        for ms in 0..10_000u64 {
            if gcra.take(&mut tat, ms * 1_000_000, 1).is_ok() {
                passed += 1;
            }
        }
        assert_eq!(passed, 200);
    }

    #[test]
    fn charges_overdraw_and_recover() {
        let gcra = Gcra::new(1 << 20, Duration::from_secs(1), 1 << 20);
        let mut tat = 0;
        assert_eq!(gcra.charge(&mut tat, 0, 1 << 20), Duration::ZERO);
        let over = gcra.charge(&mut tat, 0, 1 << 19);
        assert_eq!(over, Duration::from_millis(500));
        assert_eq!(gcra.overdrawn(tat, SECOND / 2), Duration::ZERO);
        assert_eq!(gcra.burst_units(), 1 << 20);
        // Overdrawn by half a second at 0; back to a full budget at 1.5 s.
        assert_eq!(gcra.available(tat, SECOND / 2), 0);
        assert_eq!(gcra.available(tat, SECOND), 1 << 19);
        assert_eq!(gcra.available(tat, 3 * SECOND / 2), 1 << 20);
    }

    #[test]
    fn a_state_in_the_past_is_a_full_budget() {
        let gcra = Gcra::new(1, Duration::from_secs(1), 3);
        let (mut old, mut fresh) = (SECOND / 2, 0);
        let now = 10 * SECOND;
        for _ in 0..4 {
            assert_eq!(
                gcra.take(&mut old, now, 1).is_ok(),
                gcra.take(&mut fresh, now, 1).is_ok()
            );
        }
    }
}
