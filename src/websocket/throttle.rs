//! A session's message and byte rates in the client → backend direction.
//! What was read is charged after the fact (bytes off a socket cannot be
//! put back); while the budget is overdrawn the relay stops reading from
//! the client, so TCP's flow control slows the client down and nothing is
//! lost or buffered. Over any long stretch exactly the rate gets through.
//! With `rate_exceeded = "close"`, a client still over its rate after the
//! grace is closed with 1008.

use std::time::Duration;

use tokio::time::Instant;

use crate::client_limits::Gcra;
use crate::metrics::Limit;
use crate::model::{RateExceeded, RateLimit, SessionLimits};

/// One rate's budget: the GCRA and its state.
#[derive(Debug)]
struct Budget {
    gcra: Gcra,
    tat: u64,
}

impl Budget {
    fn new(limit: RateLimit) -> Budget {
        Budget {
            gcra: Gcra::new(limit.amount, limit.per, limit.burst),
            tat: 0,
        }
    }
}

/// What the relay should do after a read was charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Go,
    /// Stop reading from the client until [`Throttle::resume_at`]; the
    /// limit that paused it, for the metrics.
    Paused(Limit),
    /// Close the session with 1008: the client kept over `limit` past the grace.
    Close(Limit),
}

/// The client's budgets for one session.
#[derive(Debug)]
pub(super) struct Throttle {
    epoch: Instant,
    messages: Option<Budget>,
    bytes: Option<Budget>,
    close_grace: Option<Duration>,
    resume_at: Option<Instant>,
    /// Since when every read has left the budget overdrawn.
    over_since: Option<Instant>,
}

impl Throttle {
    /// The budgets `limits` asks for; `None` when it sets no rate.
    pub(super) fn new(limits: &SessionLimits, now: Instant) -> Option<Throttle> {
        if limits.client_message_rate.is_none() && limits.client_byte_rate.is_none() {
            return None;
        }
        Some(Throttle {
            epoch: now,
            messages: limits.client_message_rate.map(Budget::new),
            bytes: limits.client_byte_rate.map(Budget::new),
            close_grace: match limits.rate_exceeded {
                RateExceeded::Slow => None,
                RateExceeded::Close { grace } => Some(grace),
            },
            resume_at: None,
            over_since: None,
        })
    }

    /// Charges what one read brought: `messages` data messages completed
    /// and `bytes` read off the client's socket.
    pub(super) fn charge(&mut self, messages: u64, bytes: u64, now: Instant) -> Verdict {
        let at =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let mut wait = Duration::ZERO;
        let mut limit = Limit::MessageRate;
        if let Some(budget) = &mut self.messages {
            wait = budget.gcra.charge(&mut budget.tat, at, messages);
        }
        if let Some(budget) = &mut self.bytes {
            let bytes_wait = budget.gcra.charge(&mut budget.tat, at, bytes);
            if bytes_wait > wait {
                (wait, limit) = (bytes_wait, Limit::ByteRate);
            }
        }
        if wait.is_zero() {
            self.over_since = None;
            return Verdict::Go;
        }
        let over_since = *self.over_since.get_or_insert(now);
        if self
            .close_grace
            .is_some_and(|grace| now >= over_since + grace)
        {
            return Verdict::Close(limit);
        }
        self.resume_at = Some(now + wait);
        Verdict::Paused(limit)
    }

    /// Whether reading from the client waits for the budget.
    pub(super) fn is_paused(&self) -> bool {
        self.resume_at.is_some()
    }

    /// When reading from the client may go on, while it is paused.
    pub(super) fn resume_at(&self) -> Option<Instant> {
        self.resume_at
    }

    /// Ends the pause once its time has come.
    pub(super) fn resume_if_due(&mut self, now: Instant) {
        if self.resume_at.is_some_and(|at| now >= at) {
            self.resume_at = None;
        }
    }

    /// The most one read should take: a byte budget's burst, so one large
    /// read does not overdraw the budget for long.
    pub(super) fn max_read(&self) -> Option<usize> {
        let bytes = self.bytes.as_ref()?;
        usize::try_from(bytes.gcra.burst_units()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate_exceeded: RateExceeded) -> SessionLimits {
        SessionLimits {
            client_message_rate: Some(RateLimit {
                amount: 10,
                per: Duration::from_secs(1),
                burst: 10,
            }),
            rate_exceeded,
            ..SessionLimits::default()
        }
    }

    #[test]
    fn an_overdrawn_budget_pauses_until_it_is_back() {
        let start = Instant::now();
        let mut throttle =
            Throttle::new(&limits(RateExceeded::Slow), start).expect("a rate is set");
        assert_eq!(throttle.charge(10, 100, start), Verdict::Go);
        assert_eq!(
            throttle.charge(5, 100, start),
            Verdict::Paused(Limit::MessageRate)
        );
        assert_eq!(
            throttle.resume_at(),
            Some(start + Duration::from_millis(500))
        );
        throttle.resume_if_due(start + Duration::from_millis(499));
        assert!(throttle.is_paused());
        throttle.resume_if_due(start + Duration::from_millis(500));
        assert!(!throttle.is_paused());
    }

    #[test]
    fn close_mode_closes_a_client_that_stays_over_after_the_grace() {
        let start = Instant::now();
        let grace = Duration::from_secs(2);
        let mut throttle =
            Throttle::new(&limits(RateExceeded::Close { grace }), start).expect("a rate is set");
        assert_eq!(
            throttle.charge(20, 0, start),
            Verdict::Paused(Limit::MessageRate)
        );
        let later = start + Duration::from_secs(1);
        assert_eq!(
            throttle.charge(20, 0, later),
            Verdict::Paused(Limit::MessageRate)
        );
        let after_grace = start + grace;
        assert_eq!(
            throttle.charge(20, 0, after_grace),
            Verdict::Close(Limit::MessageRate)
        );
    }

    #[test]
    fn a_client_back_under_its_rate_starts_a_new_grace() {
        let start = Instant::now();
        let grace = Duration::from_secs(2);
        let mut throttle =
            Throttle::new(&limits(RateExceeded::Close { grace }), start).expect("a rate is set");
        assert_eq!(
            throttle.charge(11, 0, start),
            Verdict::Paused(Limit::MessageRate)
        );
        assert_eq!(
            throttle.charge(0, 0, start + Duration::from_secs(1)),
            Verdict::Go
        );
        // Over again much later: the grace counts from now, not from the first time.
        let later = start + Duration::from_secs(3);
        assert_eq!(
            throttle.charge(11, 0, later),
            Verdict::Paused(Limit::MessageRate)
        );
        let within_grace = later + Duration::from_secs(1);
        assert_eq!(
            throttle.charge(11, 0, within_grace),
            Verdict::Paused(Limit::MessageRate)
        );
    }
}
