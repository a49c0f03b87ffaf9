//! Model → runtime. Every backend whose (route, URL) the previous snapshot
//! already had is reused as it is, with its health, load and log throttle,
//! so a reload neither forgets that a backend is down nor resets
//! `least_connections`; everything else is made new.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::RootCertStore;

use super::{Listener, Snapshot};
use crate::acme::{Challenges, ManagedCertificate};
use crate::auth::{AuthPools, RouteAuth};
use crate::client_limits::{self, RateRule};
use crate::compression::{Policy, Streams};
use crate::demo;
use crate::error_pages::ErrorPages;
use crate::header_rules::RouteRules;
use crate::metrics::Metrics;
use crate::model::{
    self, AcmeChallenge, BackendRoots, Content as ContentModel, Model, Page, RateLimit,
};
use crate::ocsp::{self, Stapler};
use crate::proxy::ProxyRoute;
use crate::redirects::{Redirect, Rewrite};
use crate::router::{Content, Route, Router};
use crate::static_files::{CacheBudget, EmbeddedPage, StaticDir};
use crate::tls::{self, LiveCertificate, Resumption, ServerTls, SniResolver};
use crate::upstream::{Backend, BackendPool};
use crate::websocket::WebSocketRoute;

/// Why a validated model cannot be put in service.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("listener {bind}: its certificates were not loaded (a model read back from /config cannot serve)")]
    NotLoaded { bind: SocketAddr },
    #[error("cannot set up TLS on listener {bind}: {source}")]
    ListenerTls {
        bind: SocketAddr,
        #[source]
        source: rustls::Error,
    },
    #[error("route `{route}`: its htpasswd file was not loaded (a model read back from /config cannot serve)")]
    AuthNotLoaded { route: String },
    #[error("route `{route}`: its rewrite pattern is refused: {source}")]
    Rewrite {
        route: String,
        #[source]
        source: regex::Error,
    },
    #[error("cannot set up TLS to the backends of route `{route}`: {source}")]
    BackendTls {
        route: String,
        #[source]
        source: rustls::Error,
    },
}

/// The backends of a running snapshot by (route, URL), for reuse.
type Kept<'a> = HashMap<(&'a str, &'a str), &'a Arc<Backend>>;

impl Snapshot {
    /// Builds the runtime for `model`, with handles from `metrics` (none when
    /// metrics are off), reusing the backends `previous` has for the same
    /// route and URL.
    pub fn build(
        model: Model,
        metrics: Option<&Metrics>,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, BuildError> {
        let challenges = previous.map_or_else(Arc::default, |p| Arc::clone(&p.challenges));
        let mut acme: Vec<Arc<ManagedCertificate>> = Vec::new();
        for settings in model
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref()?.acme.as_ref())
        {
            if acme.iter().any(|m| m.settings == *settings) {
                continue;
            }
            let running = previous
                .into_iter()
                .flat_map(|p| &p.acme)
                .find(|m| m.settings == *settings);
            acme.push(match running {
                Some(running) => Arc::clone(running),
                None => ManagedCertificate::new(settings.clone(), &challenges),
            });
        }
        let staplers = staplers(&model, previous);
        let listeners = model
            .listeners
            .iter()
            .map(|listener| build_listener(listener, metrics, (&acme, &challenges, &staplers)))
            .collect::<Result<_, _>>()?;
        let kept: Kept<'_> = previous
            .into_iter()
            .flat_map(|snapshot| snapshot.router.routes())
            .flat_map(|route| {
                route.pools().flat_map(move |pool| {
                    pool.backends()
                        .iter()
                        .map(move |b| ((route.name.as_str(), b.url.as_str()), b))
                })
            })
            .collect();
        let budget = Arc::new(CacheBudget::new(
            model.file_cache.size,
            model.file_cache.max_file,
        ));
        let streams = Streams::new(model.limits.max_compressed_streams);
        let routes = model
            .routes
            .iter()
            .map(|route| build_route(route, metrics, &kept, (&budget, &streams)))
            .collect::<Result<_, _>>()?;
        Ok(Snapshot {
            listeners,
            router: Router::new(routes),
            error_pages: ErrorPages::new(&model.error_pages),
            model,
            acme,
            challenges,
            staplers,
        })
    }
}

/// A stapler for each configured certificate that names an OCSP responder,
/// the previous snapshot's where it had the same certificate. One whose
/// responder cannot be asked (no issuer in its file) is served unstapled;
/// `check` warned about it.
fn staplers(model: &Model, previous: Option<&Snapshot>) -> Vec<Arc<Stapler>> {
    let mut staplers: Vec<Arc<Stapler>> = Vec::new();
    let certificates = model
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref())
        .flat_map(|tls| &tls.certificates);
    for certificate in certificates {
        if staplers
            .iter()
            .any(|s| s.fingerprint == certificate.fingerprint)
        {
            continue;
        }
        let kept = previous
            .into_iter()
            .flat_map(|p| &p.staplers)
            .find(|s| s.fingerprint == certificate.fingerprint);
        if let Some(kept) = kept {
            staplers.push(Arc::clone(kept));
            continue;
        }
        let Some(key) = certificate.material.get() else {
            continue;
        };
        if let Ok(Some(target)) = ocsp::Target::of(&key.cert) {
            staplers.push(Stapler::new(key, target, &certificate.fingerprint));
        }
    }
    staplers
}

/// What certificates a snapshot keeps up to date: the ACME ones with the
/// answers to their challenges, and the stapled ones.
type LiveParts<'a> = (
    &'a [Arc<ManagedCertificate>],
    &'a Arc<Challenges>,
    &'a [Arc<Stapler>],
);

fn build_listener(
    listener: &model::Listener,
    metrics: Option<&Metrics>,
    live: LiveParts<'_>,
) -> Result<Listener, BuildError> {
    let bind = listener.bind;
    let tls = match &listener.tls {
        Some(tls) => Some(server_tls(bind, tls, live)?),
        None => None,
    };
    Ok(Listener {
        bind,
        meters: metrics.map(|m| m.listener(&bind.to_string(), tls.is_some())),
        tls,
        redirect_https: listener.redirect_https,
        proxy_protocol: listener.proxy_protocol,
        h2c: listener.h2c,
        request_rate: rate_rule(
            &["listener", &bind.to_string(), "requests"],
            listener.request_rate,
        ),
    })
}

/// The SNI resolver over a listener's certificates, the first one the
/// default, and its ACME certificate; validation made sure no two claim a name.
fn server_tls(
    bind: SocketAddr,
    tls: &model::ListenerTls,
    (acme, challenges, staplers): LiveParts<'_>,
) -> Result<Arc<ServerTls>, BuildError> {
    let not_loaded = BuildError::NotLoaded { bind };
    let mut resolver: Option<SniResolver> = None;
    for certificate in &tls.certificates {
        let Some(key) = certificate.material.get() else {
            return Err(not_loaded);
        };
        let live = match staplers
            .iter()
            .find(|s| s.fingerprint == certificate.fingerprint)
        {
            Some(stapler) => Arc::clone(&stapler.live),
            None => Arc::new(LiveCertificate::new(Some(Arc::clone(key)))),
        };
        let resolver = resolver.get_or_insert_with(|| SniResolver::new(Arc::clone(&live)));
        for name in &certificate.names {
            resolver.add(name, &live);
        }
    }
    let managed = tls
        .acme
        .as_ref()
        .and_then(|settings| acme.iter().find(|m| m.settings == *settings));
    if let Some(managed) = managed {
        let resolver = resolver.get_or_insert_with(SniResolver::default);
        resolver.add_live(managed.settings.domains.clone(), Arc::clone(&managed.live));
        if managed.settings.challenge == AcmeChallenge::TlsAlpn01 {
            resolver.answer_challenges(Arc::clone(&challenges.alpn));
        }
    }
    let resolver = resolver.ok_or(not_loaded)?;
    let clients = match &tls.client_auth {
        Some(client_auth) => Some(
            client_auth
                .verifier
                .get()
                .ok_or(BuildError::NotLoaded { bind })?,
        ),
        None => None,
    };
    let resumption = match &tls.ticket_keys {
        Some(keys) => {
            let keys = keys.keys.get().ok_or(BuildError::NotLoaded { bind })?;
            Resumption::with_keys(keys)
        }
        // Resumption keeps the first handshake's client certificate
        // unchecked: such listeners share tickets with nobody, and get new
        // keys with each reload, so a new CA or CRL applies to every client.
        None if tls.client_auth.is_some() => Resumption::fresh(),
        None => Resumption::process(),
    }
    .map_err(|source| BuildError::ListenerTls { bind, source })?;
    let clients = clients.map(|v| v.as_ref());
    ServerTls::new(resolver, tls.handshake_timeout, clients, &resumption)
        .map(Arc::new)
        .map_err(|source| BuildError::ListenerTls { bind, source })
}

fn build_route(
    route: &model::Route,
    metrics: Option<&Metrics>,
    kept: &Kept<'_>,
    (budget, streams): (&Arc<CacheBudget>, &Arc<Streams>),
) -> Result<Route, BuildError> {
    let name = route.name.as_str();
    let compress = route
        .compress
        .as_ref()
        .map(|c| Arc::new(Policy::new(c, Arc::clone(streams))));
    let content = match &route.content {
        None => None,
        Some(ContentModel::Static(files)) => Some(Content::Static(StaticDir::new(
            files,
            Arc::clone(budget),
            compress.clone(),
        ))),
        Some(ContentModel::Proxy(proxy)) => {
            let mut pool = build_pool(name, &proxy.pool, metrics, kept)?;
            if proxy.settings.http2 {
                pool.tls = pool.tls.as_deref().map(tls::offering_h2);
                pool.http2 = true;
            }
            Some(Content::Proxy(ProxyRoute::new(
                Arc::new(pool),
                proxy.settings,
            )))
        }
        Some(ContentModel::Page(Page::Demo)) => {
            Some(Content::Embedded(EmbeddedPage { html: demo::PAGE }))
        }
        Some(ContentModel::Redirect(redirect)) => Some(Content::Redirect(Redirect::new(redirect))),
    };
    let rewrite = match &route.rewrite {
        None => None,
        Some(rewrite) => Some(
            Rewrite::compile(rewrite).map_err(|source| BuildError::Rewrite {
                route: name.to_owned(),
                source,
            })?,
        ),
    };
    // Routes without limits get no limit series, so they add none to a scrape.
    let limit_meters = metrics
        .filter(|_| route.has_limits())
        .map(|m| m.limits(name));
    let websocket = match &route.websocket {
        None => None,
        Some(ws) => Some(Arc::new(WebSocketRoute {
            backends: Arc::new(build_pool(name, &ws.pool, metrics, kept)?),
            origins: ws.origins.clone(),
            require_origin: ws.require_origin,
            subprotocols: ws.subprotocols.clone(),
            policy: ws.policy,
            strip_prefix: ws.strip_prefix,
            over_http2: ws.over_http2,
            meters: metrics.map(|m| m.websocket(name)),
            handshake_rate: rate_rule(&["route", name, "handshakes"], ws.handshake_rate),
            max_sessions_per_client: ws.max_sessions_per_client,
            sessions_scope: client_limits::scope_id(&["route", name, "sessions"]),
            limit_meters: limit_meters.clone(),
        })),
    };
    Ok(Route {
        headers: Arc::new(RouteRules::compile(&route.headers)),
        rewrite,
        trailing_slash: route.trailing_slash,
        error_pages: ErrorPages::new(&route.error_pages),
        intercept_backend_errors: route.intercept_backend_errors,
        compress,
        name: route.name.clone(),
        host: route.host.clone(),
        prefix: route.path.clone(),
        content,
        websocket,
        meters: metrics.map(|m| m.route(name)),
        logging: route.logging,
        request_rate: rate_rule(&["route", name, "requests"], route.request_rate),
        limit_meters,
        auth: match &route.auth {
            None => None,
            Some(auth) => {
                let meters = |method: &str| metrics.map(|m| m.auth(name, method));
                let not_loaded = || BuildError::AuthNotLoaded {
                    route: name.to_owned(),
                };
                let mut pools = AuthPools::default();
                if let Some(forward) = &auth.forward {
                    pools.forward = Some(Arc::new(build_pool(name, &forward.pool, metrics, kept)?));
                }
                if let Some(keys) = auth.jwt.as_ref().and_then(|jwt| jwt.keys_pool.as_ref()) {
                    pools.jwks = Some(Arc::new(build_pool(name, keys, metrics, kept)?));
                }
                Some(RouteAuth::new(auth, meters, pools).ok_or_else(not_loaded)?)
            }
        },
    })
}

/// A rate limit's runtime form; its scope names it, so a reload that keeps
/// the limit keeps every client's budget.
fn rate_rule(scope: &[&str], limit: Option<RateLimit>) -> Option<RateRule> {
    limit.map(|limit| RateRule::new(scope, limit.amount, limit.per, limit.burst))
}

fn build_pool(
    route: &str,
    pool: &model::Pool,
    metrics: Option<&Metrics>,
    kept: &Kept<'_>,
) -> Result<BackendPool, BuildError> {
    let backends = pool
        .backends
        .iter()
        .map(|address| match kept.get(&(route, address.url.as_str())) {
            Some(backend) => Arc::clone(backend),
            None => {
                let meters = metrics.map(|m| m.backend(route, &address.url));
                let backend = Backend::new(address.clone(), meters);
                backend.show_health();
                Arc::new(backend)
            }
        })
        .collect();
    let tls = match &pool.roots {
        None => None,
        Some(roots) => {
            let config = tls::backend_client_config(root_store(roots)).map_err(|source| {
                BuildError::BackendTls {
                    route: route.to_owned(),
                    source,
                }
            })?;
            Some(config)
        }
    };
    let no_healthy_backend = metrics.map(|m| m.no_healthy_backend(route));
    Ok(BackendPool::new(backends, pool, tls, no_healthy_backend))
}

fn root_store(roots: &BackendRoots) -> RootCertStore {
    match roots {
        BackendRoots::Platform => tls::platform_roots().0.clone(),
        BackendRoots::File { certificates, .. } => {
            let mut store = RootCertStore::empty();
            // Each was added to a store once already, when the file was checked.
            let certificates = certificates.get().map_or(&[][..], |c| c.as_slice());
            store.add_parsable_certificates(certificates.iter().cloned());
            store
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo;

    fn demo_model(echo_port: u16) -> Model {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        demo::model(any, any, SocketAddr::from(([127, 0, 0, 1], echo_port)))
    }

    fn echo_backend(snapshot: &Snapshot) -> &Arc<Backend> {
        let route = snapshot.router.routes().iter().find(|r| r.name == "echo");
        let pool = route.and_then(|r| r.pools().next()).expect("echo pool");
        &pool.backends()[0]
    }

    #[test]
    fn a_rebuild_reuses_the_backends_a_route_keeps() {
        let first = Snapshot::build(demo_model(9), None, None).expect("builds");
        echo_backend(&first).health.connect_failed();
        let same = Snapshot::build(demo_model(9), None, Some(&first)).expect("builds");
        assert!(Arc::ptr_eq(echo_backend(&first), echo_backend(&same)));
        assert!(
            !echo_backend(&same).health.is_healthy(),
            "health carries over"
        );

        let moved = Snapshot::build(demo_model(10), None, Some(&first)).expect("builds");
        assert!(!Arc::ptr_eq(echo_backend(&first), echo_backend(&moved)));
        assert!(echo_backend(&moved).health.is_healthy());

        let mut renamed = demo_model(9);
        renamed.routes[1].name = "echo2".to_owned();
        let renamed = Snapshot::build(renamed, None, Some(&first)).expect("builds");
        let route = &renamed.router.routes().iter().find(|r| r.name == "echo2");
        let backend = &route
            .and_then(|r| r.pools().next())
            .expect("pool")
            .backends()[0];
        assert!(
            !Arc::ptr_eq(echo_backend(&first), backend),
            "keyed by route too"
        );
    }
}
