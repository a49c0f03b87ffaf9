//! wsgate: a reverse proxy and WebSocket gateway.
//!
//! # Layout
//!
//! Layers from the top down; a module imports only from layers below it
//! (docs/architecture.md walks a request and a reload through them).
//!
//! ```text
//! cli              argv → run | check (--diff) | demo | echo-server; wires server + admin
//! reload           SIGHUP / file watch → load → diff → build → swap → apply
//! server   admin   accept loops, admission (PROXY header, per-client cap), TLS handshake,
//!                  HTTP/1.1 or h2, drain │ /healthz /readyz /metrics /config /backends
//! gateway          shared state (snapshot, drain flags, sessions, client limits);
//!                  phases: route → admit → act → log; drains and rebalancing
//! snapshot         the running config: Model → listeners' TLS, router, pools, metric handles
//! acme             ordered certificates: state directory, orders, renewal task, challenge answers
//! router           (host, longest path prefix) → Route and its Content; error_pages
//! static_files  proxy  websocket  auth   the actions (websocket: handshake, frame parser,
//!                  relay) and the route's authentication before them
//! connection  response   the client connection, its stream and Handler │ error responses
//! body             response bodies: files, proxied bodies, compressed bodies, the HTTP/2
//!                  stream watch
//! compression      Accept-Encoding, which responses compress, live encoders' cap, encoders
//! upstream         backend pools: balance, health, bounded connects; the log throttle
//! config  demo     TOML → raw serde types → validate → Model │ the demo's Model
//! model            the config as plain data; diff(old, new); what /config serves
//! forwarding       request target, hop-by-hop headers, X-Forwarded-*, trusted proxies;
//!                  header_rules, redirects: a route's header rules, CORS, rewrite and
//!                  redirect targets, compiled from the model
//! leaves           metrics, tls, sessions, stall, buffer_pool, splice, request_path,
//!                  maybe_tls, service_manager, echo, access_log, request_ids,
//!                  client_limits (GCRA rates, the bounded table, per-client counts),
//!                  proxy_protocol (PROXY v1/v2 headers), credentials (htpasswd),
//!                  tokens (JWT keys and checks), remembered (bounded results by keyed hash),
//!                  ocsp (OCSP requests, checked responses, the stapling task)
//! ```
//!
//! Data path: `server` accepts and hands each request to `gateway::handle`,
//! which loads the current `Snapshot` once and runs the phases: `route`
//! (normalised path and host → `Route`), `admit`, `act` (an upgrade goes to
//! `websocket::upgrade`, then `relay::run` on both raw sockets; anything
//! else to static files, the embedded page or `proxy::forward`), `log`.

pub(crate) mod access_log;
pub(crate) mod acme;
pub mod admin;
pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod buffer_pool;
pub mod cli;
pub(crate) mod client_limits;
pub(crate) mod compression;
pub mod config;
pub(crate) mod connection;
pub(crate) mod credentials;
pub mod demo;
pub mod echo;
pub(crate) mod error_pages;
pub(crate) mod forwarding;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub(crate) mod header_rules;
pub(crate) mod maybe_tls;
pub(crate) mod metrics;
pub mod model;
pub(crate) mod ocsp;
pub(crate) mod proxy;
pub(crate) mod proxy_protocol;
pub(crate) mod redirects;
pub(crate) mod reload;
pub(crate) mod remembered;
pub(crate) mod request_ids;
pub(crate) mod request_path;
pub(crate) mod response;
pub(crate) mod router;
pub mod server;
pub(crate) mod service_manager;
pub(crate) mod sessions;
pub(crate) mod snapshot;
pub(crate) mod splice;
pub(crate) mod stall;
pub(crate) mod static_files;
pub(crate) mod tls;
pub(crate) mod tokens;
pub mod upstream;
pub mod websocket;
