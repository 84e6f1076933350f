//! Grouping: related alerts (same group key, like Alertmanager's `group_by`)
//! attach to one open incident instead of each opening its own.
//!
//! A group lives while its alerts keep arriving: every firing event of a new
//! fingerprint extends it by the group window. Its ticket is updated with the
//! new evidence (a work note) instead of a second ticket being opened, its page
//! covers the whole group, and the group's incident is resolved when its last
//! firing alert resolves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tg_model::{Fingerprint, NormalizedEvent, RunId};

/// Firing fingerprints a group remembers. Past this, the oldest are forgotten
/// (the group then resolves when the remembered ones have resolved).
pub const GROUP_MEMBERS_MAX: usize = 256;

/// Bytes of a readable group key; longer keys are replaced by their hash.
pub const GROUP_KEY_BYTES_MAX: usize = 256;

/// One part of a group key (`storm.group.by`), like Alertmanager's `group_by`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupField {
    Service,
    AlertName,
    Origin,
    Source,
    Component,
    /// A source label (`label:cluster`).
    Label(String),
    /// A correlation ID by kind (`correlation:trace_id`).
    Correlation(String),
}

impl GroupField {
    /// Parses `service`, `alert_name`, `origin`, `source`, `component`,
    /// `label:<name>` or `correlation:<kind>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let named = |prefix: &str| {
            s.strip_prefix(prefix)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
        };
        match s {
            "service" => Ok(GroupField::Service),
            "alert_name" => Ok(GroupField::AlertName),
            "origin" => Ok(GroupField::Origin),
            "source" => Ok(GroupField::Source),
            "component" => Ok(GroupField::Component),
            _ => {
                if let Some(n) = named("label:") {
                    Ok(GroupField::Label(n))
                } else if let Some(n) = named("correlation:") {
                    Ok(GroupField::Correlation(n))
                } else {
                    Err(format!(
                        "unknown group field {s:?}: expected service, alert_name, origin, source, component, label:<name> or correlation:<kind>"
                    ))
                }
            }
        }
    }

    /// The spelling `parse` accepts.
    pub fn name(&self) -> String {
        match self {
            GroupField::Service => "service".into(),
            GroupField::AlertName => "alert_name".into(),
            GroupField::Origin => "origin".into(),
            GroupField::Source => "source".into(),
            GroupField::Component => "component".into(),
            GroupField::Label(n) => format!("label:{n}"),
            GroupField::Correlation(n) => format!("correlation:{n}"),
        }
    }

    /// The event's value for this field (empty when it has none).
    pub fn value<'a>(&self, e: &'a NormalizedEvent) -> &'a str {
        match self {
            GroupField::Service => &e.service,
            GroupField::AlertName => &e.alert_name,
            GroupField::Origin => &e.origin,
            GroupField::Source => e.source.as_str(),
            GroupField::Component => e.component.as_deref().unwrap_or(""),
            GroupField::Label(n) => e.labels.get(n).map(String::as_str).unwrap_or(""),
            GroupField::Correlation(n) => {
                e.correlation_ids.get(n).map(String::as_str).unwrap_or("")
            }
        }
    }
}

/// The page that covers a group: what a resolution needs to resolve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPage {
    /// The run that executed the page.
    pub run_id: RunId,
    /// Team whose routing key the page went through (a resolve must use the same one).
    pub team: String,
    /// PagerDuty dedup key the page was sent with.
    pub dedup_key: String,
    pub at: DateTime<Utc>,
}

/// One group's state, persisted by the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    pub key: String,
    pub opened_at: DateTime<Utc>,
    /// New alerts attach until here (exclusive); extended by each new member.
    pub expires_at: DateTime<Utc>,
    /// Firing fingerprints, oldest first (at most [`GROUP_MEMBERS_MAX`]).
    pub members: Vec<Fingerprint>,
    /// The run whose ticket carries the group, once one was executed.
    #[serde(default)]
    pub ticket_run: Option<RunId>,
    /// Work notes added to that ticket.
    #[serde(default)]
    pub notes: u32,
    /// The page that covers the group, once one was executed.
    #[serde(default)]
    pub page: Option<GroupPage>,
    /// The group's incident was resolved (its last alert resolved); nothing attaches any more.
    #[serde(default)]
    pub resolved: bool,
}

impl GroupEntry {
    /// A new group opened by `fingerprint`.
    pub fn open(
        key: String,
        fingerprint: Fingerprint,
        now: DateTime<Utc>,
        window: chrono::Duration,
    ) -> Self {
        GroupEntry {
            key,
            opened_at: now,
            expires_at: now + window,
            members: vec![fingerprint],
            ticket_run: None,
            notes: 0,
            page: None,
            resolved: false,
        }
    }

    /// Whether a new alert at `now` attaches to this group.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        !self.resolved && now >= self.opened_at && now < self.expires_at
    }

    /// Adds a firing member and extends the group; returns whether it is new to the group.
    pub fn attach(
        &mut self,
        fingerprint: &Fingerprint,
        now: DateTime<Utc>,
        window: chrono::Duration,
    ) -> bool {
        self.expires_at = self.expires_at.max(now + window);
        if self.members.contains(fingerprint) {
            return false;
        }
        if self.members.len() >= GROUP_MEMBERS_MAX {
            self.members.remove(0);
        }
        self.members.push(fingerprint.clone());
        true
    }

    /// Removes a resolved member; returns true when that was the group's last
    /// firing alert (the group's incident should be resolved now).
    pub fn detach(&mut self, fingerprint: &Fingerprint) -> bool {
        let before = self.members.len();
        self.members.retain(|m| m != fingerprint);
        !self.resolved && before > 0 && self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_group_resolves_when_its_last_member_resolves() {
        let w = chrono::Duration::minutes(30);
        let a = Fingerprint::from("a");
        let b = Fingerprint::from("b");
        let mut g = GroupEntry::open("k".into(), a.clone(), t(0), w);
        assert!(g.attach(&b, t(60), w));
        assert!(!g.attach(&b, t(61), w), "a repeat is not a new member");
        assert_eq!(g.expires_at, t(61) + w);
        assert!(!g.detach(&a), "b still fires");
        assert!(!g.detach(&a), "resolving twice changes nothing");
        assert!(g.detach(&b));
        g.resolved = true;
        assert!(!g.detach(&b), "an already resolved group resolves once");
        assert!(!g.is_open(t(62)));
    }

    #[test]
    fn members_are_bounded() {
        let w = chrono::Duration::minutes(30);
        let mut g = GroupEntry::open("k".into(), Fingerprint::from("0"), t(0), w);
        for i in 1..(GROUP_MEMBERS_MAX + 10) {
            g.attach(&Fingerprint::from(i.to_string().as_str()), t(1), w);
        }
        assert_eq!(g.members.len(), GROUP_MEMBERS_MAX);
        assert!(!g.members.contains(&Fingerprint::from("0")));
    }
}
