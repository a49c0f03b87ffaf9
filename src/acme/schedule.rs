//! When to renew, and how long to wait after a failed order.

use std::time::Duration;

/// Renewal starts two thirds into the lifetime (30 of 90 days left for Let's
/// Encrypt, as certbot and Caddy do), plus up to a fifteenth of the lifetime
/// (6 days for 90) picked at random once per certificate, so a fleet
/// restarted together does not order at the same second.
pub fn renew_at(not_before: i64, not_after: i64, spread: f64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    let jitter = (lifetime as f64 / 15.0 * spread.clamp(0.0, 1.0)) as i64;
    not_before + lifetime * 2 / 3 + jitter
}

/// This process's point in the CA's suggested renewal window (RFC 9773
/// §4.2: a random point in it, so a fleet spreads its orders).
pub fn within(start: i64, end: i64, spread: f64) -> i64 {
    let width = (end - start).max(0);
    start + (width as f64 * spread.clamp(0.0, 1.0)) as i64
}

/// The waits after failed orders in a row: a quick second try for a CA
/// that blinked, then slower, up to every 6 hours.
const WAITS: &[Duration] = &[
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(60 * 60),
    Duration::from_secs(2 * 60 * 60),
    Duration::from_secs(4 * 60 * 60),
    Duration::from_secs(6 * 60 * 60),
];

/// Where the waits start when the CA checked the challenges and they
/// failed: at 5 minutes, so that at most four orders fall in the first
/// hour (Let's Encrypt allows five failed validations per name and hour).
const AFTER_FAILED_VALIDATION: usize = 2;

/// How long to wait after `failures` failed orders in a row (at least one),
/// the last of which got as far as validation or not (the CA could not be
/// reached, or refused before checking anything); `spread` (0 to 1) moves
/// it by up to a tenth either way.
pub fn retry_after(failures: u32, validated: bool, spread: f64) -> Duration {
    let first = if validated {
        AFTER_FAILED_VALIDATION
    } else {
        0
    };
    let index = usize::try_from(failures.max(1) - 1)
        .unwrap_or(usize::MAX)
        .saturating_add(first);
    let base = WAITS[index.min(WAITS.len() - 1)];
    base.mul_f64(0.9 + 0.2 * spread.clamp(0.0, 1.0))
}

/// A number from 0 to 1 that differs between processes and calls.
pub fn spread() -> f64 {
    let mut bytes = [0u8; 4];
    // Without randomness every replica waits the same; nothing breaks.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_starts_two_thirds_in_with_at_most_a_fifteenth_of_spread() {
        let day = 86_400;
        assert_eq!(renew_at(0, 90 * day, 0.0), 60 * day);
        assert_eq!(renew_at(0, 90 * day, 1.0), 66 * day);
        assert_eq!(renew_at(1_000, 1_030, 0.0), 1_020);
        // A certificate that ends before it starts: renew at once.
        assert_eq!(renew_at(1_000, 900, 0.5), 1_000);
    }

    #[test]
    fn a_point_in_the_suggested_window() {
        assert_eq!(within(1_000, 2_000, 0.0), 1_000);
        assert_eq!(within(1_000, 2_000, 0.25), 1_250);
        assert_eq!(within(1_000, 2_000, 1.0), 2_000);
        // A window that ends before it starts: its start.
        assert_eq!(within(2_000, 1_000, 0.5), 2_000);
    }

    #[test]
    fn retries_slow_down_and_stop_growing_at_six_hours() {
        assert_eq!(retry_after(1, false, 0.5), Duration::from_secs(10));
        assert_eq!(retry_after(0, false, 0.5), Duration::from_secs(10));
        assert_eq!(retry_after(2, false, 0.5), Duration::from_secs(60));
        assert_eq!(retry_after(9, false, 0.5), Duration::from_secs(6 * 3600));
        assert_eq!(retry_after(500, true, 0.5), Duration::from_secs(6 * 3600));
        assert_eq!(retry_after(2, false, 0.0), Duration::from_secs(54));
        assert_eq!(retry_after(2, false, 1.0), Duration::from_secs(66));
        assert_eq!(retry_after(1, true, 0.5), Duration::from_secs(300));
    }

    #[test]
    fn failed_validations_stay_under_five_an_hour() {
        // The first order and the retries that start within the hour after it.
        let mut started = Duration::ZERO;
        let mut orders = 1;
        loop {
            started += retry_after(orders, true, 0.0);
            if started >= Duration::from_secs(3600) {
                break;
            }
            orders += 1;
        }
        assert!(orders < 5, "{orders} orders in the first hour");
    }
}
