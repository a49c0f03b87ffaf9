//! The access log's settings: where lines go and how they look, and what
//! each route asks to be recorded.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLogSettings {
    /// `None`: the access log is off.
    pub target: Option<LogTarget>,
    /// `json`, `combined`, or a template of `$field` names (validated).
    pub format: String,
}

impl Default for AccessLogSettings {
    /// JSON lines on stdout, where a container runtime or journald collects them.
    fn default() -> AccessLogSettings {
        AccessLogSettings {
            target: Some(LogTarget::Stdout),
            format: "json".to_owned(),
        }
    }
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogTarget {
    Stdout,
    Stderr,
    /// Resolved against the config file's directory.
    File(PathBuf),
}

/// Which of a route's requests and sessions are recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogRequests {
    #[default]
    All,
    /// Requests answered 4xx or 5xx, and sessions that did not end with a
    /// normal close (1000 or 1001).
    Errors,
    Off,
}

/// A route's `access_log` and `log_query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteLogging {
    pub requests: LogRequests,
    /// Whether logged paths keep their query string (tokens often travel there).
    pub query: bool,
}

impl Default for RouteLogging {
    fn default() -> RouteLogging {
        RouteLogging {
            requests: LogRequests::All,
            query: true,
        }
    }
}
