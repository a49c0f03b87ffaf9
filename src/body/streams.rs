//! The requests an HTTP/2 connection has open, and how long each response
//! has waited for the client to take what it was given.
//!
//! With HTTP/2 a client that stops reading leaves bytes in per-stream send
//! buffers, not at the socket, so a deadline on socket writes never fires:
//! hyper waits for a WINDOW_UPDATE that never comes and stops polling the
//! body. A body here notes when it handed out a chunk; if it is not asked
//! for the next one within `send_timeout`, the client is not reading
//! (nginx applies `send_timeout` to such streams too). The connection's
//! watchdog reads these notes, and the count of open streams tells it when
//! the connection is idle.
//!
//! A response's last chunk is not watched: hyper hands it to the stream's
//! send buffer and drops the body (releasing its file or backend
//! connection), so only those buffered bytes (at most the per-stream send
//! buffer) wait for the client; `keepalive_timeout` then ends the connection.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

/// The open streams of one connection.
#[derive(Debug)]
pub struct OpenStreams {
    open: AtomicUsize,
    /// When a stream last closed (ms on [`now_ms`]), or the connection
    /// started: while `open` is 0, since when it has been idle.
    idle_since_ms: AtomicU64,
    /// Per open stream: since when (ms on [`now_ms`], plus one) its response
    /// has waited for the client; 0 while it is not waiting. Bounded by the
    /// connection's concurrent stream limit: dead entries go at each scan and
    /// whenever a stream opens.
    waits: Mutex<Vec<Weak<AtomicU64>>>,
}

/// One open stream; dropping it (with the request, or with the response
/// body it moved into) closes the stream.
#[derive(Debug)]
pub struct StreamGuard {
    streams: Arc<OpenStreams>,
    waiting_since: Arc<AtomicU64>,
}

impl Default for OpenStreams {
    fn default() -> OpenStreams {
        OpenStreams {
            open: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(now_ms()),
            waits: Mutex::default(),
        }
    }
}

impl OpenStreams {
    /// Counts a new stream open until the guard is dropped.
    pub fn opened(self: &Arc<Self>) -> StreamGuard {
        let waiting_since = Arc::new(AtomicU64::new(0));
        let mut waits = self.lock_waits();
        // Kept at most as long as the open streams, whoever scans or not.
        waits.retain(|wait| wait.strong_count() > 0);
        waits.push(Arc::downgrade(&waiting_since));
        drop(waits);
        self.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard {
            streams: Arc::clone(self),
            waiting_since,
        }
    }

    /// Whether no stream is open.
    pub fn is_idle(&self) -> bool {
        self.open.load(Ordering::Acquire) == 0
    }

    /// How long no stream has been open; `None` while one is.
    pub fn idle_for(&self) -> Option<Duration> {
        self.is_idle().then(|| {
            let since = self.idle_since_ms.load(Ordering::Acquire);
            Duration::from_millis(now_ms().saturating_sub(since))
        })
    }

    /// How long the stream that has waited longest for the client has waited.
    pub fn longest_wait(&self) -> Option<Duration> {
        let now = now_ms();
        let mut waits = self.lock_waits();
        waits.retain(|wait| wait.strong_count() > 0);
        waits
            .iter()
            .filter_map(Weak::upgrade)
            .map(|since| since.load(Ordering::Acquire))
            .filter(|&since| since > 0)
            .map(|since| Duration::from_millis(now.saturating_sub(since - 1)))
            .max()
    }

    fn lock_waits(&self) -> std::sync::MutexGuard<'_, Vec<Weak<AtomicU64>>> {
        self.waits.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An HTTP/2 stream that may become a WebSocket session (RFC 8441): the
/// session keeps it, so the connection counts as busy, and is not closed
/// as idle, while the session lasts; and a session whose client stops
/// reading is watched like a response body. Cloneable only to ride in a
/// request's extensions; the stream closes when the last clone goes.
#[derive(Debug, Clone)]
pub struct SessionStream {
    guard: Arc<StreamGuard>,
}

impl SessionStream {
    pub fn new(guard: StreamGuard) -> SessionStream {
        SessionStream {
            guard: Arc::new(guard),
        }
    }

    /// A write waits for the client's window: the client owes a read from
    /// now on, unless it already did from earlier.
    pub fn write_waits(&self) {
        let _ = self.guard.waiting_since.compare_exchange(
            0,
            now_ms() + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// A write went through: the client is reading.
    pub fn write_went(&self) {
        self.guard.polled();
    }
}

impl StreamGuard {
    /// The connection asked for more of the response: it took the last chunk.
    pub fn polled(&self) {
        self.waiting_since.store(0, Ordering::Release);
    }

    /// A chunk went to the connection: from now on the client owes a read.
    pub fn handed_out(&self) {
        self.waiting_since.store(now_ms() + 1, Ordering::Release);
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        // Every close stamps the time before the count drops, so once it
        // reaches zero the stamp is the last close: never an older one.
        self.streams
            .idle_since_ms
            .store(now_ms(), Ordering::Release);
        self.streams.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Milliseconds since the first call in this process.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_count_while_their_guards_live_and_waits_are_measured() {
        let streams = Arc::new(OpenStreams::default());
        assert!(streams.is_idle());
        let first = streams.opened();
        let second = streams.opened();
        assert!(!streams.is_idle());
        assert_eq!(streams.longest_wait(), None);
        first.handed_out();
        std::thread::sleep(Duration::from_millis(20));
        let waited = streams.longest_wait().expect("one stream waits");
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        first.polled();
        assert_eq!(streams.longest_wait(), None);
        assert_eq!(streams.idle_for(), None);
        drop(first);
        drop(second);
        assert!(streams.is_idle());
        assert!(streams
            .idle_for()
            .is_some_and(|idle| idle < Duration::from_secs(1)));
        assert!(streams.lock_waits().iter().all(|w| w.strong_count() == 0));
    }
}
