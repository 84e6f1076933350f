//! Paging budgets: a page draws one token from its service's, its team's and
//! the global bucket, all three or none.

use chrono::{DateTime, Utc};
use tg_storm::{BucketConfig, BucketState};

use crate::{GLOBAL_BUCKET, StepState, StormSettings, service_bucket_key, team_bucket_key};

/// One paging budget a page draws from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Budget {
    pub key: String,
    pub cfg: BucketConfig,
    /// The stored state, or full when the bucket was never used.
    pub state: BucketState,
}

/// The three budgets a page for `service` routed to `team` draws from, in
/// order: the service's, the team's, the global one.
pub(crate) fn page_budgets(
    settings: &StormSettings,
    state: &StepState,
    service: &str,
    team: &str,
    now: DateTime<Utc>,
) -> [Budget; 3] {
    let service_cfg = settings.service_bucket_for(service);
    let full = |cfg| BucketState::full(cfg, now);
    [
        Budget {
            key: service_bucket_key(service),
            cfg: service_cfg,
            state: state.service_bucket.unwrap_or_else(|| full(service_cfg)),
        },
        Budget {
            key: team_bucket_key(team),
            cfg: settings.team_bucket,
            state: state
                .team_bucket
                .unwrap_or_else(|| full(settings.team_bucket)),
        },
        Budget {
            key: GLOBAL_BUCKET.to_owned(),
            cfg: settings.global_bucket,
            state: state
                .global_bucket
                .unwrap_or_else(|| full(settings.global_bucket)),
        },
    ]
}

/// Takes one token from each budget: all three, or none (`None` when any is spent).
/// INVARIANT: an executed page spends one token of its service's, its team's
/// and the global budget.
pub(crate) fn take_page_tokens(
    budgets: &[Budget; 3],
    now: DateTime<Utc>,
) -> Option<Vec<(String, BucketState)>> {
    budgets
        .iter()
        .map(|b| b.state.take(b.cfg, now).map(|s| (b.key.clone(), s)))
        .collect()
}

/// The budget with the fewest tokens left: it names the limit a refusal cites.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tightest {
    pub key: String,
    pub cfg: BucketConfig,
    pub left: i64,
}

/// The tightest of `budgets`; on a tie the most specific one (they are in order).
pub(crate) fn tightest(
    settings: &StormSettings,
    budgets: &[Budget; 3],
    now: DateTime<Utc>,
) -> Tightest {
    budgets
        .iter()
        .map(|b| Tightest {
            key: b.key.clone(),
            cfg: b.cfg,
            left: b.state.available(b.cfg, now),
        })
        .min_by_key(|t| t.left)
        .unwrap_or(Tightest {
            key: GLOBAL_BUCKET.to_owned(),
            cfg: settings.global_bucket,
            left: 0,
        })
}
