//! Stall timers: a stream that makes no progress for a while is cut off, so
//! a peer that stops sending (a request or response body) or stops reading
//! (a client that never takes its response) cannot hold a connection, and
//! the backend behind it, forever.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Notices a stream that keeps its user waiting: no progress for `limit`
/// while someone is asking for it. Time the user spends elsewhere (a slow
/// peer on the other side holding up the next poll) does not count.
#[derive(Debug)]
pub struct StallTimer {
    limit: Duration,
    /// Armed at the first wait, so a stream that never waits costs no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl StallTimer {
    /// `None` when `limit` is zero: the timeout is off.
    pub fn new(limit: Duration) -> Option<StallTimer> {
        (!limit.is_zero()).then_some(StallTimer {
            limit,
            sleep: None,
            waiting: false,
        })
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    pub fn progressed(&mut self) {
        self.waiting = false;
    }

    /// Called when the stream answered `Pending`: ready once the wait that
    /// began then has lasted `limit`.
    pub fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.waiting {
            self.waiting = true;
            let deadline = Instant::now() + self.limit;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}
