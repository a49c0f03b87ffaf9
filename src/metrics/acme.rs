//! The series of ACME certificates: when each name's expires, and how the
//! orders went.

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

    pub fn issued(&self) {
        self.issued.inc();
    }

    pub fn failed(&self) {
        self.failed.inc();
    }
}
