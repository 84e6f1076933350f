//! Grafana Alerting webhook, payload version "1": Alertmanager-shaped.
//!
//! Mapped as [`crate::alertmanager`] does, except: `origin` is `grafana`;
//! the alert fingerprint is `grafana_fingerprint`; `dashboardURL` and
//! `panelURL` are log pointers too (`dashboard`, `panel`); numeric `values`
//! become evidence (`value B=123456`). `silenceURL`, `valueString`, `title`,
//! `state` and `message` are ignored. A version other than "1" is rejected.

use chrono::{DateTime, Utc};
use tg_model::{NormalizedEvent, Source};

use crate::alertmanager::{Flavor, normalize_flavor};
use crate::{NormalizeContext, NormalizeError};

const GRAFANA: Flavor = Flavor {
    source: Source::Grafana,
    origin: "grafana",
    version: "1",
    product: "grafana",
};

/// Normalizes a Grafana Alerting webhook body: one event per alert.
pub fn normalize(
    body: &[u8],
    ctx: &NormalizeContext,
    now: DateTime<Utc>,
) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    normalize_flavor(&GRAFANA, body, ctx, now).map_err(|e| e.redacted(&ctx.redactor))
}
