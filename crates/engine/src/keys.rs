//! The keys a step reads and writes under, each built in one place: the
//! group of an event, the team a page is charged to, the signal, bucket and
//! umbrella keys, an action's idempotency key.

use tg_model::{ActionKind, Classification, NormalizedEvent, RunId};
use tg_policy::catalog::Catalog;

use crate::GroupSettings;

/// The group an event belongs to: `environment=...,<field>=<value>,...`; a key
/// longer than [`tg_storm::group::GROUP_KEY_BYTES_MAX`] is replaced by its hash.
/// `None` when grouping is off.
pub fn group_key(settings: &GroupSettings, event: &NormalizedEvent) -> Option<String> {
    if settings.by.is_empty() {
        return None;
    }
    let mut key = format!("environment={}", event.environment.as_str());
    for f in &settings.by {
        key.push(',');
        key.push_str(&f.name());
        key.push('=');
        key.push_str(f.value(event));
    }
    if key.len() > tg_storm::group::GROUP_KEY_BYTES_MAX {
        key = format!(
            "sha256:{}",
            tg_model::hash::sha256_hex(key.as_bytes()).as_str()
        );
    }
    Some(key)
}

/// The team an action for `service` is routed to, assigned to and charged to:
/// the catalog owner ([`Catalog::owner_team`]). Only when nobody owns the
/// service is it the model's recommendation, and then the shipped policy sends
/// every action to review (`ticket.owner`, `page.team`, `mim.team`): the
/// model's team reaches a target only through a human's approval.
pub fn routing_team<'a>(catalog: &'a Catalog, service: &str, c: &'a Classification) -> &'a str {
    catalog
        .owner_team(service)
        .unwrap_or(c.recommended_team.as_str())
}

/// Signals are counted per service and environment.
pub fn signal_key(event: &NormalizedEvent) -> String {
    signal_key_for(&event.service, event.environment)
}

/// [`signal_key`] of a service in an environment.
pub fn signal_key_for(service: &str, environment: tg_model::Environment) -> String {
    format!("{service}@{}", environment.as_str())
}

/// The key of the global paging bucket.
pub const GLOBAL_BUCKET: &str = "page:global";

/// The key of a team's paging bucket.
pub fn team_bucket_key(team: &str) -> String {
    format!("page:team:{team}")
}

/// The key of a service's paging bucket.
pub fn service_bucket_key(service: &str) -> String {
    format!("page:service:{service}")
}

/// The synthetic service of an environment's storm umbrella incident.
pub fn umbrella_service(environment: tg_model::Environment) -> String {
    format!("storm:{}", environment.as_str())
}

/// The idempotency key of one action of one run: stable across retries and restarts.
pub fn idempotency_key(run_id: &RunId, kind: ActionKind) -> String {
    format!("tg:{}:{}", run_id, kind.as_str())
}
