//! One HTTP/2 connection per backend, carrying every request to it at once.
//!
//! hyper-util's pooled client keys its connections on the request URI's
//! authority. Over HTTP/2 that authority is what the backend sees as
//! `:authority`, the client's `Host` when `preserve_host` is on, so every
//! distinct `Host` (a port, a subdomain under a wildcard route) would open
//! a connection of its own. Here the connection belongs to the backend,
//! whatever the requests on it say: made when first needed, made again
//! once the backend closes it or it fails.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Mutex;

use super::Connector;
use crate::body::proxied::RequestBody;
use crate::upstream::ConnectError;

/// How often the connection is pinged, idle or not, so one whose backend
/// vanished is found before a request is sent into it.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// A backend's HTTP/2 connection, shared by every request to it.
#[derive(Debug)]
pub struct Multiplexed {
    connector: Connector,
    /// The connection in use; `None` until the first request. Read without
    /// a lock by every request.
    current: ArcSwapOption<SendRequest<RequestBody>>,
    /// Held while a connection is made, so that requests arriving meanwhile
    /// wait for it instead of each opening one.
    connecting: Mutex<()>,
}

/// Why a request got no response from the backend.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Not transparent: the `ConnectError` itself must be in the chain of
    /// sources, where the proxy looks for its kind.
    #[error("{0}")]
    Connect(#[from] ConnectError),
    #[error("HTTP/2 handshake with the backend failed: {0}")]
    Handshake(#[source] hyper::Error),
    #[error(transparent)]
    Request(#[from] hyper::Error),
}

impl Multiplexed {
    pub fn new(connector: Connector) -> Multiplexed {
        Multiplexed {
            connector,
            current: ArcSwapOption::empty(),
            connecting: Mutex::new(()),
        }
    }

    /// Sends `request` on the backend's connection, opening one if there is
    /// none that is still usable.
    pub async fn request(
        &self,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut sender = self.sender().await?;
        // Waits while the backend's limit of concurrent streams is reached.
        sender.ready().await?;
        Ok(sender.send_request(request).await?)
    }

    /// Whether the request never reached a backend connection, so another
    /// backend may take it whatever its method.
    pub fn is_connect(error: &SendError) -> bool {
        matches!(error, SendError::Connect(_) | SendError::Handshake(_))
    }

    /// The open connection's sender, if there is one that has not ended.
    fn open_sender(&self) -> Option<SendRequest<RequestBody>> {
        let current = self.current.load();
        current
            .as_deref()
            .filter(|sender| !sender.is_closed())
            .cloned()
    }

    async fn sender(&self) -> Result<SendRequest<RequestBody>, SendError> {
        if let Some(sender) = self.open_sender() {
            return Ok(sender);
        }
        let _connecting = self.connecting.lock().await;
        // Someone else may have connected while this request waited.
        if let Some(sender) = self.open_sender() {
            return Ok(sender);
        }
        let io = self.connector.open().await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_while_idle(true)
            .handshake(io)
            .await
            .map_err(SendError::Handshake)?;
        let backend = Arc::clone(self.connector.backend());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(backend = %backend.url, %error, "HTTP/2 backend connection ended");
            }
        });
        self.current.store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }
}
