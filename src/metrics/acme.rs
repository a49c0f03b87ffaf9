//! The series of ACME certificates: when each name's expires, and how the
//! orders went.

use std::collections::HashSet;

use prometheus::core::Collector;
use prometheus::{IntCounter, IntGaugeVec};

use super::Families;

#[derive(Debug, Clone)]
pub struct AcmeMeters {
    expiry: IntGaugeVec,
    issued: IntCounter,
    failed: IntCounter,
}

impl AcmeMeters {
    pub(crate) fn new(families: &Families) -> AcmeMeters {
        AcmeMeters {
            expiry: families.acme_expiry.clone(),
            issued: families.acme_orders.with_label_values(&["issued"]),
            failed: families.acme_orders.with_label_values(&["failed"]),
        }
    }

    /// The certificate now served for `names` expires at `not_after`.
    pub fn expires(&self, names: &[String], not_after: i64) {
        for name in names {
            self.expiry.with_label_values(&[name]).set(not_after);
        }
    }

    /// Drops the series of names not in `kept` (a reload removed them), so
    /// an alert on their expiry does not fire for a certificate nobody
    /// serves.
    pub fn keep_only(&self, kept: &HashSet<&str>) {
        let names: Vec<String> = self
            .expiry
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .flat_map(|metric| metric.get_label())
            .filter(|label| label.name() == "name" && !kept.contains(label.value()))
            .map(|label| label.value().to_owned())
            .collect();
        for name in names {
            let _ = self.expiry.remove_label_values(&[&name]);
        }
    }

    /// Drops the series of `names`, which no certificate serves now.
    pub fn forget(&self, names: &[String]) {
        for name in names {
            let _ = self.expiry.remove_label_values(&[name]);
        }
    }

    pub fn issued(&self) {
        self.issued.inc();
    }

    pub fn failed(&self) {
        self.failed.inc();
    }
}
