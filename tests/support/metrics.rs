//! Reading `/metrics` from a running gateway, and Prometheus' own tools.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::get;

/// A sample's name, labels and value.
type Sample = (String, Vec<(String, String)>, f64);

/// One scrape of the admin endpoint, parsed into samples.
#[derive(Debug)]
pub struct Scrape {
    pub text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The sample named `name` whose labels include all of `labels`; `None`
    /// when there is none (a series that does not exist is not a zero).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.samples.iter().filter(|(sample, have, _)| {
            sample == name
                && labels
                    .iter()
                    .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
        });
        let first = found.next().map(|(_, _, value)| *value);
        assert!(
            found.next().is_none(),
            "more than one {name} sample matches {labels:?}"
        );
        first
    }

    /// The sessions `route` opened, as (over HTTP/2, over HTTP/1.1): its
    /// `wsgate_ws_upgrades_total{result="ok"}` by `protocol`.
    pub fn sessions_by_protocol(&self, route: &str) -> (f64, f64) {
        let opened = |protocol| {
            self.value(
                "wsgate_ws_upgrades_total",
                &[("route", route), ("result", "ok"), ("protocol", protocol)],
            )
        };
        (opened("h2"), opened("h1"))
    }

    /// Like `get`, for a sample that must exist.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no {name} sample with {labels:?} in:\n{}", self.text))
    }

    /// Whether any sample is named `name` (a histogram's samples are named
    /// `…_bucket`, `…_sum` and `…_count`).
    pub fn has_sample(&self, name: &str) -> bool {
        self.samples.iter().any(|(sample, _, _)| sample == name)
    }
}

/// GETs `/metrics` from the admin listener at `admin`.
pub async fn scrape(admin: SocketAddr) -> Scrape {
    let reply = get(admin, "/metrics").await;
    assert_eq!(reply.status, 200, "/metrics answered {}", reply.status);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse(reply.text())
}

/// Parses the text exposition format (the subset the prometheus crate writes:
/// no timestamps, label values without escaped quotes).
pub fn parse(text: String) -> Scrape {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            other => other.parse().expect("sample value is a number"),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect("labels end with }");
                let labels = inner
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").expect("label is k=\"v\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), Vec::new()),
        };
        samples.push((name, labels, value));
    }
    Scrape { text, samples }
}

/// Where `promtool` and `prometheus` are, installing Debian's `prometheus`
/// package (tests/prometheus/install.sh) on first use.
pub fn prometheus_bin(name: &str) -> PathBuf {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        if which("promtool").is_some() && which("prometheus").is_some() {
            return;
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/prometheus/install.sh");
        let status = Command::new("bash")
            .arg(&script)
            .status()
            .expect("run tests/prometheus/install.sh");
        assert!(
            status.success(),
            "installing Prometheus with {} failed ({status}); it needs apt-get and root or sudo",
            script.display()
        );
    });
    which(name).unwrap_or_else(|| panic!("{name} is not on PATH after installing prometheus"))
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Reload attempts counted so far: (success, failure).
pub async fn reloads(admin: SocketAddr) -> (f64, f64) {
    let scrape = scrape(admin).await;
    let count = |result| scrape.value("wsgate_config_reloads_total", &[("result", result)]);
    (count("success"), count("failure"))
}
