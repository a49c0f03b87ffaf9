//! Keeps a failing backend from flooding the log. With every backend of a
//! busy route down, each request would log its own warning: thousands of
//! lines a second that bury everything else and cost more CPU than the
//! refusals themselves. The metrics count every failure; the log needs the
//! first one, and from then on a line every few seconds saying how many
//! like it were left out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::health::now_ms;

/// One throttle per thing that fails (a backend, a pool), shared by every
/// warning about it.
#[derive(Debug)]
pub struct LogThrottle {
    interval_ms: u64,
    /// The [`now_ms`] before which warnings are only counted.
    quiet_until_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle::every(LogThrottle::INTERVAL)
    }
}

impl LogThrottle {
    /// How often one throttle lets a warning through while failures go on.
    pub const INTERVAL: Duration = Duration::from_secs(5);

    pub fn every(interval: Duration) -> LogThrottle {
        LogThrottle {
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            quiet_until_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a warning may be logged now: `Some(n)` with the number of
    /// warnings left out since the last one logged, or `None` (the warning
    /// is counted and should be dropped).
    pub fn admit(&self) -> Option<u64> {
        let now = now_ms();
        let quiet_until = self.quiet_until_ms.load(Ordering::Relaxed);
        // Of several threads failing at once, the one whose exchange lands
        // logs; the others count.
        if now >= quiet_until
            && self
                .quiet_until_ms
                .compare_exchange(
                    quiet_until,
                    now.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// `tracing::warn!` through a [`LogThrottle`]: logged when the throttle
/// admits it, with a `suppressed` field counting the warnings left out
/// before it; otherwise only counted.
macro_rules! warn_throttled {
    ($throttle:expr, $($rest:tt)+) => {
        if let Some(suppressed) = $throttle.admit() {
            tracing::warn!(suppressed, $($rest)+);
        }
    };
}
pub(crate) use warn_throttled;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_warning_passes_then_the_rest_are_counted_until_the_interval_ends() {
        let throttle = LogThrottle::every(Duration::from_millis(50));
        assert_eq!(throttle.admit(), Some(0));
        for _ in 0..7 {
            assert_eq!(throttle.admit(), None);
        }
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(throttle.admit(), Some(7), "the next line reports the 7");
        assert_eq!(throttle.admit(), None);
    }

    #[test]
    fn threads_failing_together_log_once_and_lose_no_count() {
        let throttle = LogThrottle::every(Duration::from_secs(3600));
        let admitted = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        if throttle.admit().is_some() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 1);
        assert_eq!(throttle.suppressed.load(Ordering::Relaxed), 3999);
    }
}
