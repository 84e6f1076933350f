//! [`Routed`]: one classifier per environment or service.
//!
//! Routes are tried in order; the first whose environments (empty: any) and
//! services (empty: any) both match the event chooses the profile. No match:
//! the `default` profile. Each profile is its own classifier (its own guard:
//! cache, budget, breaker), so a staging storm cannot spend production's
//! budget or open its breaker. Routing is pure: it reads only the event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tg_model::{ClassifierInfo, Environment, NormalizedEvent};

use crate::guard::NamedGuardStats;
use crate::{Classifier, ClassifyOutcome, TeamContext};

/// The name of the profile answering when no route matches.
pub const DEFAULT_PROFILE: &str = "default";

/// Events of these environments and services go to `profile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Empty: any environment.
    pub environments: BTreeSet<Environment>,
    /// Empty: any service (canonical names).
    pub services: BTreeSet<String>,
    pub profile: String,
}

impl Route {
    pub fn matches(&self, event: &NormalizedEvent) -> bool {
        (self.environments.is_empty() || self.environments.contains(&event.environment))
            && (self.services.is_empty() || self.services.contains(&event.service))
    }
}

/// Why a [`Routed`] could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("routes[{index}].profile: profile {profile:?} is not defined")]
    UnknownProfile { index: usize, profile: String },
    #[error("profile {0:?} is defined twice (`default` is the top-level classifier)")]
    Duplicate(String),
}

/// Chooses a classifier per event. See the module docs.
pub struct Routed {
    /// `default` first, then the named profiles.
    profiles: BTreeMap<String, Arc<dyn Classifier>>,
    default: Arc<dyn Classifier>,
    routes: Vec<Route>,
}

impl std::fmt::Debug for Routed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routed")
            .field("profiles", &self.profiles.keys().collect::<Vec<_>>())
            .field("routes", &self.routes)
            .finish()
    }
}

impl Routed {
    pub fn new(
        default: Arc<dyn Classifier>,
        named: BTreeMap<String, Arc<dyn Classifier>>,
        routes: Vec<Route>,
    ) -> Result<Self, RouteError> {
        if named.contains_key(DEFAULT_PROFILE) {
            return Err(RouteError::Duplicate(DEFAULT_PROFILE.into()));
        }
        let mut profiles = named;
        for (index, r) in routes.iter().enumerate() {
            if r.profile != DEFAULT_PROFILE && !profiles.contains_key(&r.profile) {
                return Err(RouteError::UnknownProfile {
                    index,
                    profile: r.profile.clone(),
                });
            }
        }
        profiles.insert(DEFAULT_PROFILE.into(), default.clone());
        Ok(Routed {
            profiles,
            default,
            routes,
        })
    }

    /// The profile name and classifier for `event`.
    pub fn choose(&self, event: &NormalizedEvent) -> (&str, &Arc<dyn Classifier>) {
        for r in &self.routes {
            if r.matches(event)
                && let Some(c) = self.profiles.get(&r.profile)
            {
                return (r.profile.as_str(), c);
            }
        }
        (DEFAULT_PROFILE, &self.default)
    }
}

#[async_trait::async_trait]
impl Classifier for Routed {
    fn info(&self) -> ClassifierInfo {
        self.default.info()
    }

    async fn classify(&self, event: &NormalizedEvent, teams: &TeamContext) -> ClassifyOutcome {
        let (profile, classifier) = self.choose(event);
        tracing::debug!(profile, service = %event.service, environment = ?event.environment, "classifier profile chosen");
        classifier.classify(event, teams).await
    }

    fn guard_stats(&self) -> Vec<NamedGuardStats> {
        self.profiles
            .iter()
            .flat_map(|(name, c)| {
                c.guard_stats().into_iter().map(move |mut s| {
                    s.profile = name.clone();
                    s
                })
            })
            .collect()
    }
}
