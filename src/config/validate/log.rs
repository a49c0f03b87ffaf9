//! `[log]` and each route's `access_log` and `log_query`.

use std::path::Path;

use toml::Spanned;

use super::{Checker, ConfigError};
use crate::access_log::{self, Format};
use crate::config::{RawLog, RawRoute};
use crate::model::{AccessLogSettings, LogRequests, LogTarget, RouteLogging};

/// Where the access log goes and its format. A log file is opened (and
/// created) here, so a path wsgate cannot write stops `check`, not traffic.
pub(super) fn access_log(
    check: &mut Checker,
    raw: &Option<Spanned<RawLog>>,
    base_dir: &Path,
) -> AccessLogSettings {
    let mut settings = AccessLogSettings::default();
    let Some(raw) = raw.as_ref().map(Spanned::get_ref) else {
        return settings;
    };
    if let Some(access) = &raw.access {
        settings.target = match access.get_ref().as_str() {
            "stdout" => Some(LogTarget::Stdout),
            "stderr" => Some(LogTarget::Stderr),
            "off" => None,
            "" => {
                check.error(access.span(), ConfigError::EmptyLogTarget);
                None
            }
            file => {
                let path = base_dir.join(file);
                if let Err(source) = access_log::open_file(&path) {
                    check.error(
                        access.span(),
                        ConfigError::LogFileUnopenable {
                            path: path.clone(),
                            source,
                        },
                    );
                }
                Some(LogTarget::File(path))
            }
        };
    }
    if let Some(format) = &raw.format {
        match Format::parse(format.get_ref()) {
            Ok(_) => settings.format = format.get_ref().clone(),
            Err(error) => check.error(format.span(), error.into()),
        }
    }
    settings
}

/// What the access log records of `route`.
pub(super) fn route_logging(check: &mut Checker, route: &RawRoute) -> RouteLogging {
    let mut logging = RouteLogging::default();
    if let Some(requests) = &route.access_log {
        logging.requests = match requests.get_ref().as_str() {
            "all" => LogRequests::All,
            "errors" => LogRequests::Errors,
            "off" => LogRequests::Off,
            other => {
                check.error(
                    requests.span(),
                    ConfigError::BadLogRequests(other.to_owned()),
                );
                LogRequests::All
            }
        };
    }
    if let Some(query) = route.log_query {
        logging.query = query;
    }
    logging
}
