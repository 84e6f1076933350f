//! The gates: a Cedar policy set, strictly validated at load, evaluated per
//! action and explained condition by condition.
//!
//! Shape of a policy (see `policies/default.cedar`): one `permit` per action
//! meaning only "the model asked", one `forbid` per condition. A Deny's
//! determining policies are then exactly the failed conditions.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Request, RestrictedExpression, Schema,
    ValidationMode, Validator,
};
use miette::Diagnostic;
use tg_model::hash::canonical_json;
use tg_model::{
    ActionKind, Classification, Condition, Environment, ImpactLevel, Outcome, sha256_hex,
};

use crate::catalog::{Catalog, CatalogIssue, Thresholds};
use crate::explain::{Field, Seen, Template};

/// The shipped default policy.
pub const DEFAULT_POLICY: &str = include_str!("../policies/default.cedar");
/// The schema every policy is validated against (strict mode).
pub const SCHEMA: &str = include_str!("../policies/gates.cedarschema");

/// Largest policy text accepted, in bytes.
pub const POLICY_TEXT_BYTES_MAX: usize = 256 * 1024;
/// Most policies (permits and forbids) in one policy text.
pub const POLICIES_MAX: usize = 512;
/// Longest `@id`, in bytes.
pub const POLICY_ID_BYTES_MAX: usize = 128;
/// Longest `@reason`, `@description` or `@threshold`, in bytes.
pub const ANNOTATION_BYTES_MAX: usize = 512;
/// Most evaluation errors kept per action (the rest are counted, not listed).
pub const ERRORS_PER_ACTION_MAX: usize = 16;

/// Annotations a policy may carry; any other is rejected as a likely typo.
const KNOWN_ANNOTATIONS: [&str; 6] = [
    "id",
    "reason",
    "description",
    "value",
    "threshold",
    "declined",
];

/// Why a policy text (with its catalog) could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A problem at a place in the policy text (1-based line and column).
    #[error("{line}:{column}: {message}")]
    At {
        line: usize,
        column: usize,
        /// The `@id` of the policy concerned, when known.
        policy: Option<String>,
        message: String,
    },
    /// A problem in the service catalog.
    #[error("catalog: {0}")]
    Catalog(CatalogIssue),
    /// The shipped schema or the catalog entities could not be built (a bug).
    #[error("internal: {0}")]
    Internal(String),
}

impl PolicyError {
    /// Line and column in the policy text, for errors that have them.
    pub fn line_col(&self) -> Option<(usize, usize)> {
        match self {
            PolicyError::At { line, column, .. } => Some((*line, *column)),
            _ => None,
        }
    }
}

/// Facts the engine computed for this run (Cedar is stateless).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// Pages the owning team may still receive in the current window.
    pub page_budget_left: i64,
    /// Independent signals (distinct sources or checks) confirming impact.
    pub independent_signals: i64,
    /// Whether a major incident is already open for this service.
    pub mim_open: bool,
}

/// Everything one evaluation looks at.
#[derive(Debug, Clone, Copy)]
pub struct GateInput<'a> {
    /// The service as the event named it (canonical name or alias).
    pub service: &'a str,
    /// The team that owns the service ([`Catalog::owner_team`]): the one that
    /// is routed to, assigned and charged. `None`: nobody owns it.
    pub owner_team: Option<&'a str>,
    /// The event's environment.
    pub environment: Environment,
    /// The impact the source itself reported (its severity or priority, normalized).
    pub source_impact: ImpactLevel,
    pub classification: &'a Classification,
    pub facts: Facts,
}

/// The gates' verdict on one action, before autonomy caps.
#[derive(Debug, Clone, PartialEq)]
pub struct GateVerdict {
    pub action: ActionKind,
    /// Whether the model asked for the action (a permit held).
    pub requested: bool,
    /// The model did not ask, but a `@declined("review")` forbid held (the
    /// source says the event is severe): the action goes to review, drafted.
    pub declined: bool,
    /// `Execute`, `Review` or `Skip`.
    pub outcome: Outcome,
    /// The permit id (execute), the failed conditions' reasons (review), or why
    /// nothing was done.
    pub reason: String,
    /// Every forbid condition of this action, passed or failed, in policy order.
    pub conditions: Vec<Condition>,
    /// Evaluation errors; non-empty means `Review` (fail closed).
    pub errors: Vec<String>,
}

/// One forbid: a condition with its explanation.
#[derive(Debug, Clone)]
struct Rule {
    id: PolicyId,
    description: String,
    reason: String,
    value: Field,
    threshold: Template,
    /// `@declined("review")`: when this forbid holds although the model did not
    /// ask, the action goes to review instead of being skipped (a model's "no"
    /// is never silent where the source itself says the event is severe).
    declined: bool,
}

/// The resource attributes of one service, as put into its Cedar entity.
#[derive(Debug, Clone)]
struct ServiceAttrs {
    uid: EntityUid,
    known: bool,
    team: String,
    tier: i64,
    ticket_min_bp: i64,
    page_min_bp: i64,
    mim_min_bp: i64,
    declined_min: i64,
}

impl ServiceAttrs {
    fn new(uid: EntityUid, known: bool, team: &str, tier: Option<u8>, t: &Thresholds) -> Self {
        ServiceAttrs {
            uid,
            known,
            team: team.to_owned(),
            tier: tier.map_or(-1, i64::from),
            ticket_min_bp: t.ticket.bp(),
            page_min_bp: t.page.bp(),
            mim_min_bp: t.mim.bp(),
            declined_min: t.declined.rank(),
        }
    }

    fn entity(&self) -> Result<Entity, String> {
        let attrs = HashMap::from([
            (
                "known".to_owned(),
                RestrictedExpression::new_bool(self.known),
            ),
            (
                "team".to_owned(),
                RestrictedExpression::new_string(self.team.clone()),
            ),
            ("tier".to_owned(), RestrictedExpression::new_long(self.tier)),
            (
                "ticket_min_bp".to_owned(),
                RestrictedExpression::new_long(self.ticket_min_bp),
            ),
            (
                "page_min_bp".to_owned(),
                RestrictedExpression::new_long(self.page_min_bp),
            ),
            (
                "mim_min_bp".to_owned(),
                RestrictedExpression::new_long(self.mim_min_bp),
            ),
            (
                "declined_min".to_owned(),
                RestrictedExpression::new_long(self.declined_min),
            ),
        ]);
        Entity::new(self.uid.clone(), attrs, HashSet::new())
            .map_err(|e| format!("service entity {}: {e}", self.uid))
    }
}

/// The loaded gates: validated policies, the catalog, and cached entities.
pub struct Gates {
    policies: PolicySet,
    /// Only the permits, to tell "the model asked" apart when forbids also hold.
    permits: PolicySet,
    schema: Schema,
    /// Forbids per action (ticket, page, mim), in policy order.
    rules: [Vec<Rule>; 3],
    /// Index of each forbid's `PolicyId` in `rules[action]`.
    rule_index: [HashMap<PolicyId, usize>; 3],
    catalog: Catalog,
    /// Name or alias -> attributes of the listed service.
    services: HashMap<String, ServiceAttrs>,
    /// Entities of every listed service, built once.
    entities: Entities,
    principal: EntityUid,
    actions: [EntityUid; 3],
    /// `Environment::"production"` ... in the order of [`env_index`].
    environments: [EntityUid; 4],
    version: String,
}

impl std::fmt::Debug for Gates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gates")
            .field("version", &self.version)
            .field("policies", &self.policies.policies().count())
            .field("services", &self.catalog.services.len())
            .finish_non_exhaustive()
    }
}

fn action_index(action: ActionKind) -> usize {
    match action {
        ActionKind::Ticket => 0,
        ActionKind::Page => 1,
        ActionKind::Mim => 2,
    }
}

const ENVIRONMENTS: [Environment; 4] = [
    Environment::Production,
    Environment::Staging,
    Environment::Development,
    Environment::Unknown,
];

fn env_index(env: Environment) -> usize {
    match env {
        Environment::Production => 0,
        Environment::Staging => 1,
        Environment::Development => 2,
        Environment::Unknown => 3,
    }
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, String> {
    let ty = EntityTypeName::from_str(type_name)
        .map_err(|e| format!("entity type {type_name:?}: {e}"))?;
    Ok(EntityUid::from_type_name_and_id(ty, EntityId::new(id)))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset = offset.saturating_sub(1);
    }
    let before = text.get(..offset).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).unwrap_or_default().chars().count() + 1;
    (line, column)
}

/// The first labelled source offset of a Cedar diagnostic.
fn diagnostic_offset(d: &dyn Diagnostic) -> Option<usize> {
    d.labels()?.next().map(|l| l.offset())
}

/// A Cedar diagnostic's message with its help, if any.
fn diagnostic_message(d: &dyn Diagnostic, display: String) -> String {
    match d.help() {
        Some(help) => format!("{display} ({help})"),
        None => display,
    }
}

/// Cedar names policies `policy0`, `policy1`, ...: show the `@id` instead.
fn with_at_id(message: String, cedar_id: &PolicyId, at_id: &Option<String>) -> String {
    match at_id {
        Some(id) => message.replace(&format!("`{cedar_id}`"), &format!("`{id}`")),
        None => message,
    }
}

/// A policy as parsed, with where it starts and its `@id`.
struct Located<'a> {
    policy: &'a Policy,
    offset: usize,
}

fn policy_number(id: &PolicyId) -> usize {
    let s: &str = id.as_ref();
    s.strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// The policies in source order, each with the byte offset where its text starts.
fn locate<'a>(text: &str, pset: &'a PolicySet) -> Vec<Located<'a>> {
    let mut policies: Vec<&Policy> = pset.policies().collect();
    // Parsing names policies policy0, policy1, ... in source order.
    policies.sort_by_key(|p| policy_number(p.id()));
    let mut cursor = 0;
    policies
        .into_iter()
        .map(|policy| {
            let own = policy.to_string();
            let offset = text
                .get(cursor..)
                .and_then(|rest| rest.find(own.as_str()))
                .map_or(cursor, |at| cursor + at);
            cursor = offset + own.len();
            Located { policy, offset }
        })
        .collect()
}

impl Gates {
    /// The shipped default policy text.
    pub fn default_policy_text() -> &'static str {
        DEFAULT_POLICY
    }

    /// The shipped schema text.
    pub fn schema_text() -> &'static str {
        SCHEMA
    }

    /// Parses, strictly validates and prepares a policy text with its catalog.
    ///
    /// Returns every problem found: parse errors, schema violations (typos in
    /// attribute names, type errors), missing or duplicate `@id`, forbids without
    /// `@reason`, `@value` or `@threshold`, unknown annotations, invalid catalog.
    pub fn load(policy_text: &str, catalog: &Catalog) -> Result<Gates, Vec<PolicyError>> {
        if policy_text.len() > POLICY_TEXT_BYTES_MAX {
            return Err(vec![PolicyError::At {
                line: 1,
                column: 1,
                policy: None,
                message: format!(
                    "policy text is {} bytes, at most {POLICY_TEXT_BYTES_MAX} allowed",
                    policy_text.len()
                ),
            }]);
        }
        let mut errors: Vec<PolicyError> = catalog
            .validate()
            .into_iter()
            .map(PolicyError::Catalog)
            .collect();

        let schema = match Schema::from_cedarschema_str(SCHEMA) {
            Ok((schema, _warnings)) => schema,
            Err(e) => {
                errors.push(PolicyError::Internal(format!("shipped schema: {e}")));
                return Err(errors);
            }
        };

        let at = |offset: usize, policy: Option<String>, message: String| {
            let (line, column) = line_col(policy_text, offset);
            PolicyError::At {
                line,
                column,
                policy,
                message,
            }
        };

        let pset = match PolicySet::from_str(policy_text) {
            Ok(pset) => pset,
            Err(parse_errors) => {
                for e in parse_errors.iter() {
                    let offset = diagnostic_offset(e).unwrap_or(0);
                    errors.push(at(offset, None, diagnostic_message(e, e.to_string())));
                }
                return Err(errors);
            }
        };

        let located = locate(policy_text, &pset);
        let offsets: HashMap<&PolicyId, usize> =
            located.iter().map(|l| (l.policy.id(), l.offset)).collect();
        let at_ids: HashMap<&PolicyId, String> = located
            .iter()
            .filter_map(|l| Some((l.policy.id(), l.policy.annotation("id")?.to_owned())))
            .collect();

        for t in pset.templates() {
            errors.push(at(
                0,
                t.annotation("id").map(str::to_owned),
                format!(
                    "policy templates (with ?principal or ?resource) are not supported: {}",
                    t.annotation("id").unwrap_or(t.id().as_ref())
                ),
            ));
        }
        if located.len() > POLICIES_MAX {
            errors.push(at(
                0,
                None,
                format!("{} policies, at most {POLICIES_MAX} allowed", located.len()),
            ));
        }

        // Strict validation against the schema: misspelt attributes, type errors,
        // unknown actions or entity types. Warnings are refused too.
        let validation = Validator::new(schema.clone()).validate(&pset, ValidationMode::Strict);
        for e in validation.validation_errors() {
            let offset = diagnostic_offset(e)
                .or_else(|| offsets.get(e.policy_id()).copied())
                .unwrap_or(0);
            let id = at_ids.get(e.policy_id()).cloned();
            let message = with_at_id(diagnostic_message(e, e.to_string()), e.policy_id(), &id);
            errors.push(at(offset, id, message));
        }
        for w in validation.validation_warnings() {
            let offset = diagnostic_offset(w)
                .or_else(|| offsets.get(w.policy_id()).copied())
                .unwrap_or(0);
            let id = at_ids.get(w.policy_id()).cloned();
            let message = with_at_id(diagnostic_message(w, w.to_string()), w.policy_id(), &id);
            errors.push(at(offset, id, message));
        }

        let actions = match ActionKind::ALL.map(|a| uid("Action", a.as_str())) {
            [Ok(t), Ok(p), Ok(m)] => [t, p, m],
            _ => {
                errors.push(PolicyError::Internal("action uids".to_owned()));
                return Err(errors);
            }
        };

        // Annotations, scopes and explanations.
        let mut rules: [Vec<Rule>; 3] = Default::default();
        let mut seen_ids: HashMap<String, usize> = HashMap::new();
        let mut renamed: Vec<(Policy, Effect)> = Vec::with_capacity(located.len());
        for l in &located {
            let p = l.policy;
            let err =
                |message: String| at(l.offset, p.annotation("id").map(str::to_owned), message);
            for (key, value) in p.annotations() {
                if !KNOWN_ANNOTATIONS.contains(&key) {
                    errors.push(err(format!(
                        "unknown annotation @{key} (known: @{})",
                        KNOWN_ANNOTATIONS.join(", @")
                    )));
                } else if value.len() > ANNOTATION_BYTES_MAX {
                    errors.push(err(format!(
                        "@{key} is {} bytes, at most {ANNOTATION_BYTES_MAX} allowed",
                        value.len()
                    )));
                }
            }
            let id = match p.annotation("id").map(str::trim) {
                None | Some("") => {
                    errors.push(err("policy has no @id(\"...\")".to_owned()));
                    continue;
                }
                Some(id) if id.len() > POLICY_ID_BYTES_MAX => {
                    errors.push(err(format!(
                        "@id is {} bytes, at most {POLICY_ID_BYTES_MAX} allowed",
                        id.len()
                    )));
                    continue;
                }
                Some(id) => id.to_owned(),
            };
            if let Some(first) = seen_ids.get(&id) {
                let (line, column) = line_col(policy_text, *first);
                errors.push(err(format!(
                    "duplicate @id {id:?} (first used at {line}:{column})"
                )));
                continue;
            }
            seen_ids.insert(id.clone(), l.offset);

            let applies: Vec<usize> = match p.action_constraint() {
                ActionConstraint::Any => vec![0, 1, 2],
                ActionConstraint::Eq(a) => {
                    actions.iter().position(|x| *x == a).into_iter().collect()
                }
                ActionConstraint::In(list) => (0..3)
                    .filter(|i| actions.get(*i).is_some_and(|x| list.contains(x)))
                    .collect(),
            };
            let policy_id = PolicyId::new(&id);
            renamed.push((p.new_id(policy_id.clone()), p.effect()));

            if p.effect() == Effect::Forbid {
                let mut get = |key: &str| match p.annotation(key).map(str::trim) {
                    None | Some("") => {
                        errors.push(err(format!("forbid {id:?} has no @{key}(\"...\")")));
                        None
                    }
                    Some(v) => Some(v.to_owned()),
                };
                let reason = get("reason");
                let value = get("value");
                let threshold = get("threshold");
                let value = value.and_then(|path| match Field::parse(&path) {
                    Some(f) => Some(f),
                    None => {
                        errors.push(err(format!(
                            "forbid {id:?}: unknown @value path {path:?} (known: {})",
                            Field::known_paths()
                        )));
                        None
                    }
                });
                let declined = match p.annotation("declined").map(str::trim) {
                    None => false,
                    Some("review") => true,
                    Some(other) => {
                        errors.push(err(format!(
                            "forbid {id:?}: @declined({other:?}) is not supported (only \"review\")"
                        )));
                        false
                    }
                };
                let threshold = threshold.and_then(|t| match Template::parse(&t) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        errors.push(err(format!("forbid {id:?}: {e}")));
                        None
                    }
                });
                if let (Some(reason), Some(value), Some(threshold)) = (reason, value, threshold) {
                    let description = p
                        .annotation("description")
                        .map_or_else(|| reason.clone(), str::to_owned);
                    for i in applies {
                        if let Some(list) = rules.get_mut(i) {
                            list.push(Rule {
                                id: policy_id.clone(),
                                description: description.clone(),
                                reason: reason.clone(),
                                value,
                                threshold: threshold.clone(),
                                declined,
                            });
                        }
                    }
                }
            }
        }
        // The conditions the engine reads must exist, or its annotations would silently vanish.
        for (action, id) in crate::ids::REQUIRED {
            // (An @id declared on a policy refused above is already reported.)
            let present = seen_ids.contains_key(id)
                || rules
                    .get(action_index(action))
                    .is_some_and(|list| list.iter().any(|r| AsRef::<str>::as_ref(&r.id) == id));
            if !present {
                // Point at the action's first policy (its section), else the top.
                let offset = located
                    .iter()
                    .find(|l| match l.policy.action_constraint() {
                        ActionConstraint::Eq(a) => actions.get(action_index(action)) == Some(&a),
                        _ => false,
                    })
                    .map_or(0, |l| l.offset);
                errors.push(at(
                    offset,
                    None,
                    format!(
                        "no forbid with @id({id:?}) for action {:?}: the engine reads this condition",
                        action.as_str()
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let build = |only_permits: bool| {
            PolicySet::from_policies(
                renamed
                    .iter()
                    .filter(|(_, effect)| !only_permits || *effect == Effect::Permit)
                    .map(|(p, _)| p.clone()),
            )
            .map_err(|e| vec![PolicyError::Internal(format!("policy set: {e}"))])
        };
        let policies = build(false)?;
        let permits = build(true)?;

        let rule_index = [0, 1, 2].map(|i| {
            rules.get(i).map_or_else(HashMap::new, |list| {
                list.iter()
                    .enumerate()
                    .map(|(n, r)| (r.id.clone(), n))
                    .collect()
            })
        });

        let internal = |e: String| vec![PolicyError::Internal(e)];
        let principal = uid("Agent", "classifier").map_err(internal)?;
        let environments = match ENVIRONMENTS.map(|e| uid("Environment", e.as_str())) {
            [Ok(a), Ok(b), Ok(c), Ok(d)] => [a, b, c, d],
            _ => return Err(internal("environment uids".to_owned())),
        };
        let mut services = HashMap::new();
        let mut service_entities = Vec::with_capacity(catalog.services.len());
        for (name, entry) in &catalog.services {
            let attrs = ServiceAttrs::new(
                uid("Service", name).map_err(internal)?,
                true,
                &entry.team,
                entry.tier,
                &entry.thresholds.over(&catalog.defaults.thresholds),
            );
            service_entities.push(attrs.entity().map_err(internal)?);
            for alias in &entry.aliases {
                services.insert(alias.clone(), attrs.clone());
            }
            services.insert(name.clone(), attrs);
        }
        let entities = Entities::from_entities(service_entities, Some(&schema))
            .map_err(|e| internal(format!("service entities: {e}")))?;

        let catalog_json =
            serde_json::to_value(catalog).map_err(|e| internal(format!("catalog to json: {e}")))?;
        // Length-prefixed so that no policy text and catalog pair collide.
        let mut hashed = format!("{}:", policy_text.len()).into_bytes();
        hashed.extend_from_slice(policy_text.as_bytes());
        hashed.extend_from_slice(&canonical_json(&catalog_json));
        let version = sha256_hex(&hashed).0;

        Ok(Gates {
            policies,
            permits,
            schema,
            rules,
            rule_index,
            catalog: catalog.clone(),
            services,
            entities,
            principal,
            actions,
            environments,
            version,
        })
    }

    /// Loads the shipped default policy with a catalog.
    pub fn with_default_policy(catalog: &Catalog) -> Result<Gates, Vec<PolicyError>> {
        Gates::load(DEFAULT_POLICY, catalog)
    }

    /// SHA-256 (hex) of the policy text and the canonical JSON of the catalog.
    pub fn version(&self) -> String {
        self.version.clone()
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The `@id`s of the forbid conditions that apply to an action, in policy order.
    pub fn condition_ids(&self, action: ActionKind) -> Vec<String> {
        self.rules
            .get(action_index(action))
            .map(|list| list.iter().map(|r| r.id.to_string()).collect())
            .unwrap_or_default()
    }

    /// Evaluates the three gates, in the order ticket, page, mim.
    ///
    /// Allow is `Execute` (reason: the permit id). Deny with failed conditions is
    /// `Review` (reason: their `@reason`s) when the model asked, `Skip` when it
    /// did not (no permit held); conditions are listed either way.
    ///
    /// Never fails: any error while building the request or evaluating a policy
    /// makes the affected actions `Review` (fail closed), with the errors listed.
    pub fn evaluate(&self, input: &GateInput<'_>) -> Vec<GateVerdict> {
        let unknown;
        let (attrs, own_entities) = match self.services.get(input.service) {
            Some(attrs) => (attrs, None),
            None => {
                // Unlisted service: the defaults, in an entity built for this request.
                let built = uid("Service", input.service).and_then(|u| {
                    let a =
                        ServiceAttrs::new(u, false, "", None, &self.catalog.defaults.thresholds);
                    let entities = Entities::from_entities([a.entity()?], Some(&self.schema))
                        .map_err(|e| format!("service entity: {e}"))?;
                    Ok((a, entities))
                });
                match built {
                    Ok((a, entities)) => {
                        unknown = a;
                        (&unknown, Some(entities))
                    }
                    Err(e) => return self.all_failed(&e),
                }
            }
        };
        let entities = own_entities.as_ref().unwrap_or(&self.entities);
        let c = input.classification;
        let seen = Seen {
            severity: c.classification,
            confidence_bp: c.confidence_bp(),
            requires_ticket: c.requires_ticket,
            requires_paging: c.requires_paging,
            requires_mim: c.requires_mim,
            environment: input.environment,
            page_budget_left: input.facts.page_budget_left,
            independent_signals: input.facts.independent_signals,
            mim_open: input.facts.mim_open,
            known: attrs.known,
            team: &attrs.team,
            owner_team: input.owner_team.unwrap_or_default(),
            recommended_team: &c.recommended_team,
            team_matches: input.owner_team == Some(c.recommended_team.as_str()),
            tier: attrs.tier,
            ticket_min_bp: attrs.ticket_min_bp,
            page_min_bp: attrs.page_min_bp,
            mim_min_bp: attrs.mim_min_bp,
            declined_min: attrs.declined_min,
            source_impact: input.source_impact,
        };
        let context = match self.context(&seen) {
            Ok(context) => context,
            Err(e) => return self.all_failed(&e),
        };
        ActionKind::ALL
            .into_iter()
            .map(|action| self.evaluate_one(action, &attrs.uid, &context, entities, &seen))
            .collect()
    }

    /// The request context, built directly (no JSON) from the values seen.
    fn context(&self, s: &Seen<'_>) -> Result<Context, String> {
        let record = |pairs: Vec<(&str, RestrictedExpression)>| {
            RestrictedExpression::new_record(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)))
                .map_err(|e| format!("context record: {e}"))
        };
        let verdict = record(vec![
            (
                "severity",
                RestrictedExpression::new_long(s.severity.rank()),
            ),
            (
                "confidence_bp",
                RestrictedExpression::new_long(s.confidence_bp),
            ),
            (
                "requires_ticket",
                RestrictedExpression::new_bool(s.requires_ticket),
            ),
            (
                "requires_paging",
                RestrictedExpression::new_bool(s.requires_paging),
            ),
            (
                "requires_mim",
                RestrictedExpression::new_bool(s.requires_mim),
            ),
        ])?;
        let facts = record(vec![
            (
                "page_budget_left",
                RestrictedExpression::new_long(s.page_budget_left),
            ),
            (
                "independent_signals",
                RestrictedExpression::new_long(s.independent_signals),
            ),
            ("mim_open", RestrictedExpression::new_bool(s.mim_open)),
        ])?;
        let source = record(vec![(
            "impact",
            RestrictedExpression::new_long(crate::explain::impact_rank(s.source_impact)),
        )])?;
        let routing = record(vec![
            (
                "owner_team",
                RestrictedExpression::new_string(s.owner_team.to_owned()),
            ),
            (
                "recommended_team",
                RestrictedExpression::new_string(s.recommended_team.to_owned()),
            ),
            (
                "team_matches",
                RestrictedExpression::new_bool(s.team_matches),
            ),
        ])?;
        let environment = RestrictedExpression::new_entity_uid(
            self.environments
                .get(env_index(s.environment))
                .cloned()
                .ok_or_else(|| format!("environment {}", s.environment.as_str()))?,
        );
        Context::from_pairs([
            ("verdict".to_owned(), verdict),
            ("environment".to_owned(), environment),
            ("facts".to_owned(), facts),
            ("routing".to_owned(), routing),
            ("source".to_owned(), source),
        ])
        .map_err(|e| format!("context: {e}"))
    }

    fn evaluate_one(
        &self,
        action: ActionKind,
        resource: &EntityUid,
        context: &Context,
        entities: &Entities,
        seen: &Seen<'_>,
    ) -> GateVerdict {
        let i = action_index(action);
        let rules: &[Rule] = self.rules.get(i).map_or(&[], Vec::as_slice);
        let explain = |failed: &dyn Fn(&PolicyId) -> bool| -> Vec<Condition> {
            rules
                .iter()
                .map(|r| Condition {
                    id: r.id.to_string(),
                    description: r.description.clone(),
                    passed: !failed(&r.id),
                    actual: seen.render(r.value),
                    threshold: r.threshold.render(seen),
                })
                .collect()
        };
        let Some(action_uid) = self.actions.get(i) else {
            return failed_closed(action, explain(&|_| true), "no action uid".to_owned());
        };
        let request = match Request::new(
            self.principal.clone(),
            action_uid.clone(),
            resource.clone(),
            context.clone(),
            None,
        ) {
            Ok(r) => r,
            Err(e) => return failed_closed(action, explain(&|_| true), format!("request: {e}")),
        };

        let authorizer = Authorizer::new();
        let response = authorizer.is_authorized(&request, &self.policies, entities);
        let diagnostics = response.diagnostics();
        let mut errors: Vec<String> = Vec::new();
        let mut errored: HashSet<PolicyId> = HashSet::new();
        for e in diagnostics.errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
            errored.insert(pe.policy_id().clone());
            push_bounded(&mut errors, e.to_string());
        }
        // Determining policies: the permits that held (Allow) or the forbids that held (Deny).
        let determining: Vec<&PolicyId> = diagnostics.reason().collect();
        let index = self.rule_index.get(i);
        let is_rule = |id: &PolicyId| index.is_some_and(|m| m.contains_key(id));
        let fired: HashSet<&PolicyId> = match response.decision() {
            Decision::Allow => HashSet::new(),
            Decision::Deny => determining
                .iter()
                .copied()
                .filter(|id| is_rule(id))
                .collect(),
        };
        // An erroring forbid was skipped by Cedar: count it as failed (fail closed).
        let conditions = explain(&|id| fired.contains(id) || errored.contains(id));

        let requested = match response.decision() {
            Decision::Allow => true,
            Decision::Deny if fired.is_empty() && errors.is_empty() => false,
            Decision::Deny => {
                // Forbids held (or something errored): ask the permits alone.
                let permits = authorizer.is_authorized(&request, &self.permits, entities);
                for e in permits.diagnostics().errors() {
                    let text = e.to_string();
                    if !errors.contains(&text) {
                        push_bounded(&mut errors, text);
                    }
                }
                permits.decision() == Decision::Allow
            }
        };

        let (outcome, reason) = if !errors.is_empty() {
            (
                Outcome::Review,
                "policy evaluation failed; sent to review (fail closed)".to_owned(),
            )
        } else if response.decision() == Decision::Allow {
            let mut ids: Vec<String> = determining.iter().map(|id| id.to_string()).collect();
            ids.sort();
            (Outcome::Execute, ids.join(", "))
        } else if !requested {
            // A model's "no" is silent only where no @declined forbid holds.
            let floors: Vec<&str> = rules
                .iter()
                .filter(|r| r.declined && fired.contains(&r.id))
                .map(|r| r.reason.as_str())
                .collect();
            if floors.is_empty() {
                (Outcome::Skip, "the model did not ask".to_owned())
            } else {
                (Outcome::Review, floors.join("; "))
            }
        } else {
            let reasons: Vec<&str> = rules
                .iter()
                .filter(|r| fired.contains(&r.id))
                .map(|r| r.reason.as_str())
                .collect();
            (Outcome::Review, reasons.join("; "))
        };
        GateVerdict {
            action,
            requested,
            declined: !requested && errors.is_empty() && outcome == Outcome::Review,
            outcome,
            reason,
            conditions,
            errors,
        }
    }

    fn all_failed(&self, error: &str) -> Vec<GateVerdict> {
        ActionKind::ALL
            .into_iter()
            .map(|action| {
                let conditions = self
                    .rules
                    .get(action_index(action))
                    .map(|list| {
                        list.iter()
                            .map(|r| Condition {
                                id: r.id.to_string(),
                                description: r.description.clone(),
                                passed: false,
                                actual: String::new(),
                                threshold: String::new(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                failed_closed(action, conditions, error.to_owned())
            })
            .collect()
    }
}

fn push_bounded(errors: &mut Vec<String>, error: String) {
    if errors.len() < ERRORS_PER_ACTION_MAX {
        errors.push(error);
    }
}

fn failed_closed(action: ActionKind, conditions: Vec<Condition>, error: String) -> GateVerdict {
    GateVerdict {
        action,
        requested: false,
        declined: false,
        outcome: Outcome::Review,
        reason: "policy evaluation failed; sent to review (fail closed)".to_owned(),
        conditions,
        errors: vec![error],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Gates>();
    }

    #[test]
    fn offsets_become_one_based_lines_and_character_columns() {
        let text = "ab\ncé\nx";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 1));
        assert_eq!(line_col(text, 6), (2, 3));
        // Inside a multi-byte character: the character's own column.
        assert_eq!(line_col(text, 5), (2, 2));
        assert_eq!(line_col(text, 999), (3, 2));
    }
}
