//! The live WebSocket sessions. hyper forgets a connection once it is
//! upgraded, so the gateway keeps its own list: the drain waits on it, a
//! reload closes the sessions whose route or backend went away (1012), and a
//! shutdown closes all of them (1001), each spread over time so clients do
//! not reconnect in one herd.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::task::AtomicWaker;
use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

/// RFC 6455 §7.4.1: the endpoint is going away (server shutdown).
pub const GOING_AWAY: u16 = 1001;
/// IANA registry: the service is restarting; the client may reconnect.
pub const SERVICE_RESTART: u16 = 1012;

/// The gateway's most recent closes kept for the dashboard.
const RECENT_CLOSES: usize = 32;

/// Every session in progress.
#[derive(Debug, Default)]
pub struct Sessions {
    tracker: TaskTracker,
    live: Mutex<Live>,
    next_id: AtomicU64,
    /// The last sessions the gateway itself closed, newest last.
    recent_closes: Mutex<VecDeque<GatewayClose>>,
}

/// A session the gateway closed, and why.
#[derive(Debug, Clone)]
pub struct GatewayClose {
    pub time: SystemTime,
    pub route: String,
    pub backend: String,
    pub client: IpAddr,
    /// `None`: closed without a close frame (a client that stopped answering pings).
    pub code: Option<u16>,
    pub reason: &'static str,
}

/// One live session as `/sessions` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionView {
    pub route: String,
    pub backend: String,
    pub client: IpAddr,
    pub age_seconds: f64,
    pub client_messages: u64,
    pub client_bytes: u64,
    pub backend_messages: u64,
    pub backend_bytes: u64,
}

#[derive(Debug, Default)]
struct Live {
    by_id: HashMap<u64, Arc<Session>>,
    /// Set by `close_all`: a session registered later (its client connected
    /// before the listeners closed) is asked to close when the spread ends.
    closing_all: Option<(CloseRequest, Instant)>,
}

/// One session as the list knows it.
#[derive(Debug)]
pub struct Session {
    /// The route it was opened on, by name (names are unique in a config).
    pub route: String,
    /// The backend's URL as configured.
    pub backend: String,
    /// The client's address (after `trusted_proxies`).
    pub client: IpAddr,
    /// The consistent-hash key it was placed by, when its pool hashes.
    pub placement: Option<u64>,
    opened: Instant,
    /// What passed so far, as the relay last reported it.
    pub traffic: LiveTraffic,
    close: CloseSignal,
}

/// A session's data messages and payload bytes each way, stored by the
/// relay once per read batch (two relaxed stores) for `/sessions`.
#[derive(Debug, Default)]
pub struct LiveTraffic {
    client_messages: AtomicU64,
    client_bytes: AtomicU64,
    backend_messages: AtomicU64,
    backend_bytes: AtomicU64,
}

impl LiveTraffic {
    /// The totals so far from the client.
    pub fn set_client(&self, messages: u64, bytes: u64) {
        self.client_messages.store(messages, Ordering::Relaxed);
        self.client_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The totals so far from the backend.
    pub fn set_backend(&self, messages: u64, bytes: u64) {
        self.backend_messages.store(messages, Ordering::Relaxed);
        self.backend_bytes.store(bytes, Ordering::Relaxed);
    }
}

/// A close code and the reason sent with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: &'static str,
}

impl CloseRequest {
    pub const SHUTDOWN: CloseRequest = CloseRequest {
        code: GOING_AWAY,
        reason: "server shutting down",
    };
    pub const ROUTE_REMOVED: CloseRequest = CloseRequest {
        code: SERVICE_RESTART,
        reason: "route removed by a config reload",
    };
    pub const BACKEND_REMOVED: CloseRequest = CloseRequest {
        code: SERVICE_RESTART,
        reason: "backend removed by a config reload",
    };
    pub const BACKEND_DRAINED: CloseRequest = CloseRequest {
        code: SERVICE_RESTART,
        reason: "backend drained",
    };
    pub const REBALANCED: CloseRequest = CloseRequest {
        code: SERVICE_RESTART,
        reason: "moved to rebalance backends",
    };
    /// RFC 6455 §7.4.1: 1008, policy violation.
    pub const AUTH_REVOKED: CloseRequest = CloseRequest {
        code: 1008,
        reason: "authorization revoked",
    };
}

/// Set once to ask a session to close; the relay waits on it. One waiter,
/// so an `AtomicWaker`: registering again on every turn of the relay costs
/// two atomic operations, where a `Notify` would take its lock.
#[derive(Debug, Default)]
struct CloseSignal {
    /// Index into `REQUESTS` plus one; 0 while nobody asked.
    request: AtomicU16,
    waiter: AtomicWaker,
}

/// The requests a signal can carry, so it stores a small index, not a pointer.
const REQUESTS: [CloseRequest; 6] = [
    CloseRequest::SHUTDOWN,
    CloseRequest::ROUTE_REMOVED,
    CloseRequest::BACKEND_REMOVED,
    CloseRequest::BACKEND_DRAINED,
    CloseRequest::REBALANCED,
    CloseRequest::AUTH_REVOKED,
];

impl CloseSignal {
    fn ask(&self, request: CloseRequest) {
        let index = REQUESTS.iter().position(|r| *r == request).unwrap_or(0);
        let value = u16::try_from(index + 1).unwrap_or(1);
        // The first request wins: a session already told "restart" keeps that reason.
        if self
            .request
            .compare_exchange(0, value, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.waiter.wake();
        }
    }

    fn current(&self) -> Option<CloseRequest> {
        match self.request.load(Ordering::Acquire) {
            0 => None,
            n => REQUESTS.get(usize::from(n) - 1).copied(),
        }
    }
}

impl Session {
    /// Asks the session to close with `request` (the first request wins).
    pub fn ask_close(&self, request: CloseRequest) {
        self.close.ask(request);
    }

    /// Resolves once the session is asked to close.
    pub async fn close_requested(&self) -> CloseRequest {
        std::future::poll_fn(|cx| self.poll_close_requested(cx)).await
    }

    /// Ready once the session is asked to close. One task at a time may
    /// wait on it (the session's relay), as on a socket's readiness.
    pub fn poll_close_requested(&self, cx: &mut Context<'_>) -> Poll<CloseRequest> {
        // Registered before the check, so a request between the two is not missed.
        self.close.waiter.register(cx.waker());
        match self.close.current() {
            Some(request) => Poll::Ready(request),
            None => Poll::Pending,
        }
    }
}

/// A session's place in the list; leaving it drops the entry.
#[derive(Debug)]
pub struct Registration {
    sessions: Arc<Sessions>,
    id: u64,
    pub session: Arc<Session>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sessions.live().by_id.remove(&self.id);
    }
}

impl Sessions {
    fn live(&self) -> MutexGuard<'_, Live> {
        // The map stays consistent whatever panicked while holding it.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an upgrade whose backend handshake is still under way, so a
    /// drain that starts meanwhile waits for it.
    pub fn starting(&self) -> TaskTrackerToken {
        self.tracker.token()
    }

    /// Adds a session from `client` that is about to relay.
    pub fn register(
        self: &Arc<Self>,
        route: &str,
        backend: &str,
        client: IpAddr,
        placement: Option<u64>,
    ) -> Registration {
        let session = Arc::new(Session {
            route: route.to_owned(),
            backend: backend.to_owned(),
            client,
            placement,
            opened: Instant::now(),
            traffic: LiveTraffic::default(),
            close: CloseSignal::default(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut live = self.live();
        if let Some((request, at)) = live.closing_all {
            let late = Arc::clone(&session);
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                late.close.ask(request);
            });
        }
        live.by_id.insert(id, Arc::clone(&session));
        drop(live);
        Registration {
            sessions: Arc::clone(self),
            id,
            session,
        }
    }

    /// Runs a session's task; the drain waits for it.
    pub fn spawn<F>(&self, session: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(session);
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.live().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live sessions oldest first, from `offset`, at most `limit` of
    /// them, and how many there are in all.
    pub fn list(&self, offset: usize, limit: usize) -> (usize, Vec<SessionView>) {
        // Sorted and formatted outside the lock that opening and closing
        // sessions take.
        let mut all = self.all();
        all.sort_unstable_by_key(|(id, _)| *id);
        let now = Instant::now();
        let page = all
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(_, session)| {
                let traffic = &session.traffic;
                SessionView {
                    route: session.route.clone(),
                    backend: session.backend.clone(),
                    client: session.client,
                    age_seconds: (now - session.opened).as_secs_f64(),
                    client_messages: traffic.client_messages.load(Ordering::Relaxed),
                    client_bytes: traffic.client_bytes.load(Ordering::Relaxed),
                    backend_messages: traffic.backend_messages.load(Ordering::Relaxed),
                    backend_bytes: traffic.backend_bytes.load(Ordering::Relaxed),
                }
            })
            .collect();
        (all.len(), page)
    }

    /// Every live session with its ID, copied out of the list.
    fn all(&self) -> Vec<(u64, Arc<Session>)> {
        let live = self.live();
        live.by_id
            .iter()
            .map(|(id, session)| (*id, Arc::clone(session)))
            .collect()
    }

    /// Notes a session the gateway closed, for the dashboard.
    pub fn closed_by_gateway(&self, close: GatewayClose) {
        let mut recent = self
            .recent_closes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT_CLOSES {
            recent.pop_front();
        }
        recent.push_back(close);
    }

    /// The gateway's most recent closes, newest last.
    pub fn recent_closes(&self) -> Vec<GatewayClose> {
        let recent = self
            .recent_closes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        recent.iter().cloned().collect()
    }

    /// Live sessions counted by (route, backend).
    pub fn counts(&self) -> HashMap<(String, String), usize> {
        let all = self.all();
        let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
        for (_, session) in &all {
            *counts
                .entry((&session.route, &session.backend))
                .or_insert(0) += 1;
        }
        counts
            .into_iter()
            .map(|((route, backend), n)| ((route.to_owned(), backend.to_owned()), n))
            .collect()
    }

    /// Asks the sessions `pick` chooses (it returns the close to send, or
    /// `None` to leave a session alone) to close: none before `after`, then
    /// one by one, evenly over `spread`. `pick` is asked again just before
    /// each close, so a later reload that brings a route back spares its
    /// sessions. Returns how many were picked.
    pub fn close_spread<P>(&self, pick: P, after: Duration, spread: Duration) -> usize
    where
        P: Fn(&Session) -> Option<CloseRequest> + Send + 'static,
    {
        let doomed: Vec<Arc<Session>> = self
            .live()
            .by_id
            .values()
            .filter(|s| pick(s).is_some())
            .cloned()
            .collect();
        let count = doomed.len();
        if count > 0 {
            tokio::spawn(close_in_turn(doomed, pick, Instant::now() + after, spread));
        }
        count
    }

    /// The sessions open on `route`, oldest first.
    pub fn on_route(&self, route: &str) -> Vec<Arc<Session>> {
        let mut all = self.all();
        all.retain(|(_, session)| session.route == route);
        all.sort_unstable_by_key(|(id, _)| *id);
        all.into_iter().map(|(_, session)| session).collect()
    }

    /// Asks `chosen` to close with `request`, one by one, evenly over `spread`.
    pub fn close_chosen(&self, chosen: Vec<Arc<Session>>, request: CloseRequest, spread: Duration) {
        if !chosen.is_empty() {
            tokio::spawn(close_in_turn(
                chosen,
                move |_| Some(request),
                Instant::now(),
                spread,
            ));
        }
    }

    /// Shutdown: asks every session to close with 1001, spread over
    /// `spread`; sessions that register from now on close when it ends.
    /// Stops the drain from waiting for tasks spawned later.
    pub fn close_all(&self, spread: Duration) -> usize {
        self.live().closing_all = Some((CloseRequest::SHUTDOWN, Instant::now() + spread));
        self.tracker.close();
        self.close_spread(|_| Some(CloseRequest::SHUTDOWN), Duration::ZERO, spread)
    }

    /// Resolves when every session task has ended (after `close_all`).
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }

    /// Session tasks still running.
    pub fn tasks(&self) -> usize {
        self.tracker.len()
    }
}

/// Session `i` of `n` is asked at `start + spread * i / n`: the first at
/// `start`, the last one step before `start + spread`.
async fn close_in_turn<P>(doomed: Vec<Arc<Session>>, pick: P, start: Instant, spread: Duration)
where
    P: Fn(&Session) -> Option<CloseRequest>,
{
    let count = u32::try_from(doomed.len()).unwrap_or(u32::MAX);
    for (index, session) in (0u32..).zip(doomed) {
        let offset = spread.mul_f64(f64::from(index) / f64::from(count));
        tokio::time::sleep_until(start + offset).await;
        if let Some(request) = pick(&session) {
            session.close.ask(request);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test(start_paused = true)]
    async fn closes_are_spread_evenly_after_the_grace() {
        let sessions = Arc::new(Sessions::default());
        let registrations: Vec<Registration> = (0..4)
            .map(|i| sessions.register(if i < 3 { "gone" } else { "kept" }, "ws://b", CLIENT, None))
            .collect();
        let started = Instant::now();
        let picked = sessions.close_spread(
            |s| (s.route == "gone").then_some(CloseRequest::ROUTE_REMOVED),
            Duration::from_secs(30),
            Duration::from_secs(9),
        );
        assert_eq!(picked, 3);
        let closes = registrations
            .iter()
            .filter(|r| r.session.route == "gone")
            .map(|r| async move {
                let request = r.session.close_requested().await;
                (started.elapsed(), request)
            });
        let mut times = Vec::new();
        for (elapsed, request) in futures_util::future::join_all(closes).await {
            assert_eq!(request, CloseRequest::ROUTE_REMOVED);
            times.push(elapsed);
        }
        times.sort();
        assert_eq!(
            times,
            [30, 33, 36].map(Duration::from_secs).to_vec(),
            "the first close after the grace, then one every spread/3"
        );
        let kept = &registrations[3].session;
        let untouched = tokio::time::timeout(Duration::from_secs(60), kept.close_requested()).await;
        assert!(
            untouched.is_err(),
            "a session on a kept route is left alone"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_registered_during_shutdown_is_closed_at_once() {
        let sessions = Arc::new(Sessions::default());
        let early = sessions.register("chat", "ws://b", CLIENT, None);
        assert_eq!(sessions.close_all(Duration::from_secs(10)), 1);
        let late = sessions.register("chat", "ws://b", CLIENT, None);
        assert_eq!(late.session.close_requested().await, CloseRequest::SHUTDOWN);
        assert_eq!(
            early.session.close_requested().await,
            CloseRequest::SHUTDOWN
        );
        drop((early, late));
        assert!(
            sessions.is_empty(),
            "dropping a registration leaves the list"
        );
    }

    #[test]
    fn the_first_close_request_wins() {
        let signal = CloseSignal::default();
        signal.ask(CloseRequest::BACKEND_REMOVED);
        signal.ask(CloseRequest::SHUTDOWN);
        assert_eq!(signal.current(), Some(CloseRequest::BACKEND_REMOVED));
    }

    #[test]
    fn counts_by_route_and_backend() {
        let sessions = Arc::new(Sessions::default());
        let _a = sessions.register("chat", "ws://a", CLIENT, None);
        let _b = sessions.register("chat", "ws://a", CLIENT, None);
        let _c = sessions.register("chat", "ws://b", CLIENT, None);
        let counts = sessions.counts();
        assert_eq!(counts[&("chat".to_owned(), "ws://a".to_owned())], 2);
        assert_eq!(counts[&("chat".to_owned(), "ws://b".to_owned())], 1);
    }

    #[tokio::test]
    async fn sessions_are_listed_oldest_first_in_pages_with_their_traffic() {
        let sessions = Arc::new(Sessions::default());
        let first = sessions.register("chat", "ws://a", CLIENT, None);
        let _second = sessions.register("feed", "ws://b", CLIENT, None);
        first.session.traffic.set_client(3, 300);
        first.session.traffic.set_backend(2, 20);
        let (total, page) = sessions.list(0, 1);
        assert_eq!((total, page.len()), (2, 1));
        let listed = &page[0];
        assert_eq!((listed.route.as_str(), listed.client_messages), ("chat", 3));
        assert_eq!(
            (
                listed.client_bytes,
                listed.backend_messages,
                listed.backend_bytes
            ),
            (300, 2, 20)
        );
        let (_, rest) = sessions.list(1, 10);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].route, "feed");
        drop(first);
        assert_eq!(sessions.list(0, 10).0, 1);
    }

    #[test]
    fn only_the_most_recent_gateway_closes_are_kept() {
        let sessions = Sessions::default();
        for code in 0..(RECENT_CLOSES as u16 + 5) {
            sessions.closed_by_gateway(GatewayClose {
                time: SystemTime::now(),
                route: "chat".into(),
                backend: "ws://a".into(),
                client: CLIENT,
                code: Some(code),
                reason: "idle timeout",
            });
        }
        let recent = sessions.recent_closes();
        assert_eq!(recent.len(), RECENT_CLOSES);
        assert_eq!(
            recent.last().and_then(|c| c.code),
            Some(RECENT_CLOSES as u16 + 4)
        );
    }
}
