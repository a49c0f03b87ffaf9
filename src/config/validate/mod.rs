//! Raw config → [`Model`]. Every check reports at the span of the value it
//! is about, and all checks run, so one pass shows every mistake. Files the
//! config names (certificates, keys, CA bundles, static roots) are read and
//! checked here, once.

mod acme;
mod auth;
mod compress;
mod error_pages;
mod errors;
mod headers;
mod limits;
mod listeners;
mod log;
mod origins;
mod pools;
mod redirects;
mod routes;
mod server;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::{parse_duration, parse_size, Diagnostic, RawConfig, Severity};
use crate::model::Model;
pub use errors::ConfigError;

/// The admin listener's address when `[admin]` is absent.
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9090";

/// Collects diagnostics while checks run, so every check gets its say.
pub(super) struct Checker {
    errors: Vec<Diagnostic>,
}

impl Checker {
    fn error(&mut self, span: Range<usize>, error: ConfigError) {
        self.errors.push(Diagnostic::error(Some(span), error));
    }

    fn warn(&mut self, span: Range<usize>, error: ConfigError) {
        self.errors.push(Diagnostic {
            span: Some(span),
            error,
            severity: Severity::Warning,
        });
    }

    /// `text` as a header name in lower case; a name that is not one is
    /// reported at its place.
    fn header_name(&mut self, text: &Spanned<String>) -> Option<String> {
        match http::HeaderName::from_bytes(text.get_ref().as_bytes()) {
            Ok(name) => Some(name.as_str().to_owned()),
            Err(_) => {
                self.error(
                    text.span(),
                    ConfigError::BadHeaderName(text.get_ref().clone()),
                );
                None
            }
        }
    }

    fn address(&mut self, text: &Spanned<String>) -> Option<SocketAddr> {
        let parsed = text.get_ref().parse().ok();
        if parsed.is_none() {
            self.error(text.span(), ConfigError::BadAddress(text.get_ref().clone()));
        }
        parsed
    }

    fn duration(&mut self, text: &Option<Spanned<String>>, default: Duration) -> Duration {
        let Some(text) = text else { return default };
        parse_duration(text.get_ref()).unwrap_or_else(|| {
            self.error(
                text.span(),
                ConfigError::BadDuration(text.get_ref().clone()),
            );
            default
        })
    }

    /// A duration that must not be zero: a zero-length timer would fire at
    /// once (or spin), so where zero does not mean "off" it is refused.
    fn positive(
        &mut self,
        text: &Option<Spanned<String>>,
        default: Duration,
        key: &'static str,
    ) -> Duration {
        let duration = self.duration(text, default);
        match text {
            Some(text) if duration.is_zero() => {
                self.error(text.span(), ConfigError::ZeroDuration(key));
                default
            }
            _ => duration,
        }
    }

    fn size(&mut self, text: &Option<Spanned<String>>, default: u64) -> u64 {
        let Some(text) = text else { return default };
        parse_size(text.get_ref()).unwrap_or_else(|| {
            self.error(text.span(), ConfigError::BadSize(text.get_ref().clone()));
            default
        })
    }
}

/// Checks a parsed config and turns it into a [`Model`]. On success the
/// diagnostics returned are warnings; on failure they include them.
pub fn validate(
    raw: RawConfig,
    base_dir: &Path,
) -> Result<(Model, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut check = Checker { errors: Vec::new() };
    let listeners = listeners::listeners(&mut check, &raw, base_dir);
    let admin = match &raw.admin {
        Some(admin) => {
            let bind = &admin.get_ref().bind;
            let addr = check.address(bind);
            let public = |a: &SocketAddr| listeners.iter().any(|l| l.bind == *a);
            if let Some(addr) = addr.filter(|a| a.port() != 0 && public(a)) {
                check.error(bind.span(), ConfigError::AdminIsPublic(addr));
            }
            addr
        }
        None => DEFAULT_ADMIN_BIND.parse().ok(),
    };
    let metrics = raw
        .admin
        .as_ref()
        .and_then(|admin| admin.get_ref().metrics)
        .unwrap_or(true);
    let (limits, file_cache) = server::server_settings(&mut check, &raw.server);
    let drain = server::drain_settings(&mut check, &raw.server);
    let trusted_proxies =
        pools::trusted_proxies(&mut check, &raw.trusted_proxies, &raw.client_ip_headers);
    let access_log = log::access_log(&mut check, &raw.log, base_dir);
    let error_pages = error_pages::pages(&mut check, &raw.error_pages, base_dir);
    let routes = routes::routes(&mut check, raw.routes, base_dir);
    let failed = check.errors.iter().any(|d| d.severity == Severity::Error);
    match admin {
        Some(admin) if !failed => Ok((
            Model {
                listeners,
                admin,
                metrics,
                limits,
                drain,
                file_cache,
                trusted_proxies,
                access_log,
                error_pages,
                routes,
            },
            check.errors,
        )),
        _ => Err(check.errors),
    }
}

#[cfg(test)]
mod tests;
