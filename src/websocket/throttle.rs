//! A session's message and byte rates in the client → backend direction.
//! Each read is sized to what the budgets allow now ([`Throttle::read_cap`],
//! by the client's average message size so far), and what was read is
//! charged after it (bytes off a socket cannot be put back); while a budget
//! is overdrawn the relay stops reading from the client, so TCP's flow
//! control slows the client down and nothing is lost or buffered. Over any
//! long stretch exactly the rate gets through, and no stretch gets much
//! more than the burst. With `rate_exceeded = "close"`, a client still
//! held back when the grace ends is closed with 1008.

use std::time::Duration;

use tokio::time::Instant;

use crate::buffer_pool::BUFFER_SIZE;
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
    /// When the last pause ended, until the next read.
    resumed_at: Option<Instant>,
    /// The limit the last overdraft was for.
    over: Limit,
    /// Close mode fired: nothing is charged or closed again.
    closed: bool,
    /// Messages and bytes charged so far, for the average message's size.
    messages_read: u64,
    bytes_read: u64,
}

/// A client still sending over its rate has data waiting when a pause ends
/// and is read at once; one whose next read comes later than this had
/// stopped, and its grace starts over.
const RESUME_SLACK: Duration = Duration::from_millis(100);

/// The smallest a client's data frame can be on the wire (a masked header
/// and a few bytes), so a read sized by messages is never absurdly small.
const MIN_MESSAGE_BYTES: u64 = 16;

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
            resumed_at: None,
            over: Limit::MessageRate,
            closed: false,
            messages_read: 0,
            bytes_read: 0,
        })
    }

    /// The most the next read from the client should take: what the
    /// budgets allow now (messages at the client's average size so far),
    /// so one read cannot carry far more than the burst. `None`: a whole buffer.
    pub(super) fn read_cap(&self, now: Instant) -> Option<usize> {
        let at = self.nanos(now);
        let mut cap = u64::MAX;
        if let Some(budget) = &self.messages {
            let per_message = self
                .bytes_read
                .div_ceil(self.messages_read.max(1))
                .max(MIN_MESSAGE_BYTES);
            let allowed = budget.gcra.available(budget.tat, at).max(1);
            cap = cap.min(allowed.saturating_mul(per_message));
        }
        if let Some(budget) = &self.bytes {
            cap = cap.min(budget.gcra.available(budget.tat, at).max(MIN_MESSAGE_BYTES));
        }
        usize::try_from(cap).ok().filter(|cap| *cap < BUFFER_SIZE)
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Charges what one read brought: `messages` data messages completed
    /// and `bytes` read off the client's socket.
    pub(super) fn charge(&mut self, messages: u64, bytes: u64, now: Instant) -> Verdict {
        if self.closed {
            return Verdict::Go;
        }
        self.messages_read += messages;
        self.bytes_read += bytes;
        if let Some(resumed) = self.resumed_at.take() {
            if now.saturating_duration_since(resumed) > RESUME_SLACK {
                self.over_since = None;
            }
        }
        let at = self.nanos(now);
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
        self.over = limit;
        let over_since = *self.over_since.get_or_insert(now);
        if self
            .close_grace
            .is_some_and(|grace| now >= over_since + grace)
        {
            self.closed = true;
            return Verdict::Close(limit);
        }
        self.resume_at = Some(now + wait);
        Verdict::Paused(limit)
    }

    /// When close mode ends the client, while it is held back. Not while
    /// it is not: a deadline that has passed would fire on every turn.
    pub(super) fn close_due(&self) -> Option<Instant> {
        let grace = self
            .close_grace
            .filter(|_| !self.closed && self.is_paused())?;
        Some(self.over_since? + grace)
    }

    /// Close mode's verdict at `now` on a client still held back since the
    /// grace began: the limit it kept over, once.
    pub(super) fn close_if_due(&mut self, now: Instant) -> Option<Limit> {
        let due = self.close_due().is_some_and(|due| now >= due);
        if due {
            self.closed = true;
        }
        due.then_some(self.over)
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
            self.resumed_at = Some(now);
        }
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
        // Once only.
        assert_eq!(throttle.charge(20, 0, after_grace), Verdict::Go);
        assert_eq!(throttle.close_due(), None);
    }

    #[test]
    fn close_mode_fires_during_a_pause_when_the_grace_ends() {
        let start = Instant::now();
        let grace = Duration::from_secs(1);
        let mut throttle =
            Throttle::new(&limits(RateExceeded::Close { grace }), start).expect("a rate is set");
        // Far over: paused for 9 s, longer than the grace.
        assert_eq!(
            throttle.charge(100, 0, start),
            Verdict::Paused(Limit::MessageRate)
        );
        assert_eq!(throttle.close_due(), Some(start + grace));
        assert_eq!(throttle.close_if_due(start + grace / 2), None);
        assert_eq!(
            throttle.close_if_due(start + grace),
            Some(Limit::MessageRate)
        );
        assert_eq!(throttle.close_if_due(start + grace), None);
    }

    #[test]
    fn a_client_that_stopped_after_a_pause_sets_no_deadline_and_starts_a_new_grace() {
        let start = Instant::now();
        let grace = Duration::from_secs(1);
        let mut throttle =
            Throttle::new(&limits(RateExceeded::Close { grace }), start).expect("a rate is set");
        assert_eq!(
            throttle.charge(15, 0, start),
            Verdict::Paused(Limit::MessageRate)
        );
        let resumed = start + Duration::from_millis(500);
        throttle.resume_if_due(resumed);
        // Not held back: no close deadline, which would only fire and fire.
        assert_eq!(throttle.close_due(), None);
        assert_eq!(throttle.close_if_due(start + grace * 2), None);
        // Long after, over again: a new grace, not a close.
        let later = start + Duration::from_secs(5);
        assert_eq!(
            throttle.charge(25, 0, later),
            Verdict::Paused(Limit::MessageRate)
        );
        assert_eq!(throttle.close_due(), Some(later + grace));
    }

    #[test]
    fn reads_are_sized_to_the_budget() {
        let start = Instant::now();
        let mut throttle =
            Throttle::new(&limits(RateExceeded::Slow), start).expect("a rate is set");
        // No history: 10 messages of at least 16 bytes.
        assert_eq!(throttle.read_cap(start), Some(160));
        // 5 messages of 100 bytes: 5 left, at 100 bytes each.
        assert_eq!(throttle.charge(5, 500, start), Verdict::Go);
        assert_eq!(throttle.read_cap(start), Some(500));
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
