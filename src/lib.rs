//! wsgate: a reverse proxy and WebSocket gateway.
//!
//! # Layout
//!
//! ```text
//! cli            argv → run | check | demo
//! config         TOML → raw serde types → validate → Snapshot (errors carry file:line:col)
//! snapshot       the immutable running config: listeners, limits, router
//! server         listeners (SO_REUSEPORT), accept loop, one task per
//!                connection, send_timeout, graceful drain, the open-file limit
//! gateway        one request: snapshot → request_path → router → action
//! request_path   percent-decoding and dot-segment resolution; traversal → 400
//! router         (host, longest path prefix) → Route; pure
//! static_files   lookup below a root, small-file cache, conditional and range requests
//! body           the response body: bytes, a streamed file, or a backend's body
//! buffer_pool    reusable 64 KiB I/O buffers
//! response       error, redirect and refusal responses
//! websocket      handshake checks, backend handshake, frame parser, relay
//! proxy          HTTP reverse proxy: pooled client per backend, retries, 502/504,
//!                408 and closed connections for bodies that stall
//! upstream       backend pools: balance (round-robin, least connections,
//!                consistent hash), passive and active health, bounded connect,
//!                one warning per failing backend every few seconds
//! forwarding     request target, hop-by-hop headers, Host, X-Forwarded-*,
//!                Forwarded, trusted proxies
//! metrics        Prometheus families; per-route, listener and backend handles
//! admin          /healthz, /readyz, /metrics, /config
//! reload         SIGHUP and file watch → new snapshot → swap; listener diff,
//!                1012 closes for sessions whose route or backend went away
//! sessions       live WebSocket sessions: closes spread over time, drain
//! stall          stall timers behind body_timeout and send_timeout
//! service_manager  systemd readiness: READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1
//! demo, echo     the built-in demo page and WebSocket echo backend
//! ```
//!
//! Data path: `server` accepts and hands each request to `gateway::handle`,
//! which loads the current `Snapshot` once, normalises the path, asks the
//! `Router` for a `Route` and runs its action: an upgrade goes to
//! `websocket::upgrade` (backend handshake, then `relay::run` on both raw
//! sockets), anything else to the route's content (static files, or
//! `proxy::forward` to a backend).

pub mod admin;
pub mod body;
pub mod buffer_pool;
pub mod cli;
pub mod config;
pub mod connection;
pub mod demo;
pub mod echo;
pub mod forwarding;
pub mod gateway;
pub mod maybe_tls;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod reload;
pub mod request_path;
pub mod response;
pub mod router;
pub mod server;
pub mod service_manager;
pub mod sessions;
pub mod snapshot;
pub mod stall;
pub mod static_files;
pub mod tls;
pub mod upstream;
pub mod websocket;
