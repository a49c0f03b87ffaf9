//! Backend pools: round-robin over healthy backends, a short back-off for a
//! backend that refused a connection, and bounded connect time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// How long a backend that refused a connection is tried only as a last resort.
pub const REFUSED_BACKOFF: Duration = Duration::from_secs(3);

/// Why a backend URL in the config is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendUrlError {
    #[error("backend `{0}` is not a URL; write it like \"ws://127.0.0.1:9001\"")]
    NotAUrl(String),
    #[error("backend `{url}` must use {expected}://")]
    Scheme { url: String, expected: &'static str },
    #[error("backend `{0}` has no host")]
    NoHost(String),
    #[error("backend `{0}` must not have a query or fragment")]
    Query(String),
}

/// Why no backend connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the route has no backends")]
    NoBackends,
    #[error("cannot connect to {backend}: {source}")]
    Refused {
        backend: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {backend} took longer than {after:?}")]
    Timeout { backend: String, after: Duration },
}

/// One backend server.
#[derive(Debug)]
pub struct Backend {
    /// As written in the config; used in logs and metrics labels.
    pub url: String,
    host: String,
    port: u16,
    /// A path prefix from the URL, without a trailing slash ("" for none).
    pub path: String,
    /// Milliseconds (on the process clock) until which the backend is avoided.
    avoid_until_ms: AtomicU64,
}

impl Backend {
    /// Parses `scheme://host[:port][/path]`; `scheme` gives the default port.
    pub fn parse(
        url: &str,
        scheme: &'static str,
        default_port: u16,
    ) -> Result<Backend, BackendUrlError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| BackendUrlError::NotAUrl(url.to_owned()))?;
        if uri.scheme_str() != Some(scheme) {
            return Err(BackendUrlError::Scheme {
                url: url.to_owned(),
                expected: scheme,
            });
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| BackendUrlError::NoHost(url.to_owned()))?;
        if uri.query().is_some() || url.contains('#') {
            return Err(BackendUrlError::Query(url.to_owned()));
        }
        Ok(Backend {
            url: url.to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: uri.port_u16().unwrap_or(default_port),
            path: uri.path().trim_end_matches('/').to_owned(),
            avoid_until_ms: AtomicU64::new(0),
        })
    }

    /// `host:port` as a `Host` header would carry it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn avoided(&self, now_ms: u64) -> bool {
        self.avoid_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Opens a TCP connection within `timeout`; a refusal puts the backend in back-off.
    pub async fn connect(&self, timeout: Duration) -> Result<TcpStream, ConnectError> {
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        let result = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(source)) => Err(ConnectError::Refused {
                backend: self.url.clone(),
                source,
            }),
            Err(_) => Err(ConnectError::Timeout {
                backend: self.url.clone(),
                after: timeout,
            }),
        };
        match &result {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                self.avoid_until_ms.store(0, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(%error, "backend connection failed");
                let until = now_ms() + REFUSED_BACKOFF.as_millis() as u64;
                self.avoid_until_ms.store(until, Ordering::Relaxed);
            }
        }
        result
    }
}

/// The backends of one route.
#[derive(Debug)]
pub struct BackendPool {
    backends: Vec<Backend>,
    next: AtomicUsize,
}

impl BackendPool {
    pub fn new(backends: Vec<Backend>) -> BackendPool {
        BackendPool {
            backends,
            next: AtomicUsize::new(0),
        }
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Every backend once, in the order to try them: round-robin from the
    /// next in turn, backends in back-off after the others.
    pub fn order(&self) -> Vec<&Backend> {
        let count = self.backends.len();
        if count == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let now = now_ms();
        let rotated = (0..count).map(|i| &self.backends[(start + i) % count]);
        let (healthy, avoided): (Vec<&Backend>, Vec<&Backend>) =
            rotated.partition(|b| !b.avoided(now));
        healthy.into_iter().chain(avoided).collect()
    }
}

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let backend = Backend::parse("ws://127.0.0.1:9001/base/", "ws", 80).expect("valid");
        assert_eq!(
            (backend.authority().as_str(), backend.path.as_str()),
            ("127.0.0.1:9001", "/base")
        );
        let v6 = Backend::parse("ws://[::1]", "ws", 80).expect("valid");
        assert_eq!(v6.authority(), "[::1]:80");
        assert_eq!(
            Backend::parse("http://a:1", "ws", 80).map(|_| ()),
            Err(BackendUrlError::Scheme {
                url: "http://a:1".into(),
                expected: "ws"
            })
        );
        assert!(matches!(
            Backend::parse("nonsense", "ws", 80),
            Err(BackendUrlError::Scheme { .. })
        ));
        assert!(matches!(
            Backend::parse("ws://a b:1", "ws", 80),
            Err(BackendUrlError::NotAUrl(_))
        ));
        assert!(matches!(
            Backend::parse("ws://a:1/?x=1", "ws", 80),
            Err(BackendUrlError::Query(_))
        ));
    }

    #[test]
    fn round_robin_puts_backends_in_back_off_last() {
        let pool = BackendPool::new(
            ["ws://a:1", "ws://b:1", "ws://c:1"]
                .iter()
                .map(|u| Backend::parse(u, "ws", 80).expect("valid"))
                .collect(),
        );
        let firsts: Vec<&str> = (0..3).map(|_| pool.order()[0].url.as_str()).collect();
        assert_eq!(firsts, ["ws://a:1", "ws://b:1", "ws://c:1"]);
        pool.backends[0]
            .avoid_until_ms
            .store(u64::MAX, Ordering::Relaxed);
        let order: Vec<&str> = pool.order().iter().map(|b| b.url.as_str()).collect();
        assert_eq!(order, ["ws://b:1", "ws://c:1", "ws://a:1"]);
    }
}
