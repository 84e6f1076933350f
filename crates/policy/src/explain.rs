//! How a forbid explains itself: the value it tested (`@value`) and what it
//! needed (`@threshold`), resolved against the request the wrapper built.
//!
//! Cedar tells us which forbids held, not the values they saw. Rather than
//! re-evaluating expressions, each forbid names the request field it tests, and
//! the wrapper (which built that request) renders the field for people:
//! basis points as `0.74`, severity ranks as `high`, environments by name.

use tg_model::{Environment, ImpactLevel, Severity};

/// The source's impact as the policy compares it: unknown -1, none 0, low 1,
/// medium 2, high 3, critical 4.
pub(crate) fn impact_rank(level: ImpactLevel) -> i64 {
    match level {
        ImpactLevel::Unknown => -1,
        ImpactLevel::None => 0,
        ImpactLevel::Low => 1,
        ImpactLevel::Medium => 2,
        ImpactLevel::High => 3,
        ImpactLevel::Critical => 4,
    }
}

/// An impact rank in words (5 and above: `off`, never).
fn impact_name(rank: i64) -> &'static str {
    match rank {
        i64::MIN..=-1 => "unknown",
        0 => "none",
        1 => "low",
        2 => "medium",
        3 => "high",
        4 => "critical",
        _ => "off",
    }
}

/// A request field a policy can name in `@value` or in a `{...}` placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Severity,
    ConfidenceBp,
    RequiresTicket,
    RequiresPaging,
    RequiresMim,
    Environment,
    PageBudgetLeft,
    IndependentSignals,
    MimOpen,
    Known,
    Team,
    Tier,
    TicketMinBp,
    PageMinBp,
    MimMinBp,
    OwnerTeam,
    RecommendedTeam,
    TeamMatches,
    SourceImpact,
    DeclinedMin,
}

impl Field {
    pub(crate) const ALL: [Field; 20] = [
        Field::Severity,
        Field::ConfidenceBp,
        Field::RequiresTicket,
        Field::RequiresPaging,
        Field::RequiresMim,
        Field::Environment,
        Field::PageBudgetLeft,
        Field::IndependentSignals,
        Field::MimOpen,
        Field::Known,
        Field::Team,
        Field::Tier,
        Field::TicketMinBp,
        Field::PageMinBp,
        Field::MimMinBp,
        Field::OwnerTeam,
        Field::RecommendedTeam,
        Field::TeamMatches,
        Field::SourceImpact,
        Field::DeclinedMin,
    ];

    /// The path as written in the policy.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Field::Severity => "context.verdict.severity",
            Field::ConfidenceBp => "context.verdict.confidence_bp",
            Field::RequiresTicket => "context.verdict.requires_ticket",
            Field::RequiresPaging => "context.verdict.requires_paging",
            Field::RequiresMim => "context.verdict.requires_mim",
            Field::Environment => "context.environment",
            Field::PageBudgetLeft => "context.facts.page_budget_left",
            Field::IndependentSignals => "context.facts.independent_signals",
            Field::MimOpen => "context.facts.mim_open",
            Field::Known => "resource.known",
            Field::Team => "resource.team",
            Field::Tier => "resource.tier",
            Field::TicketMinBp => "resource.ticket_min_bp",
            Field::PageMinBp => "resource.page_min_bp",
            Field::MimMinBp => "resource.mim_min_bp",
            Field::OwnerTeam => "context.routing.owner_team",
            Field::RecommendedTeam => "context.routing.recommended_team",
            Field::TeamMatches => "context.routing.team_matches",
            Field::SourceImpact => "context.source.impact",
            Field::DeclinedMin => "resource.declined_min",
        }
    }

    pub(crate) fn parse(path: &str) -> Option<Field> {
        let path = path.trim();
        Field::ALL.into_iter().find(|f| f.path() == path)
    }

    pub(crate) fn known_paths() -> String {
        Field::ALL.map(Field::path).join(", ")
    }
}

/// The values of one request, as the wrapper built it.
#[derive(Debug, Clone)]
pub(crate) struct Seen<'a> {
    pub severity: Severity,
    pub confidence_bp: i64,
    pub requires_ticket: bool,
    pub requires_paging: bool,
    pub requires_mim: bool,
    pub environment: Environment,
    pub page_budget_left: i64,
    pub independent_signals: i64,
    pub mim_open: bool,
    pub known: bool,
    pub team: &'a str,
    pub tier: i64,
    pub ticket_min_bp: i64,
    pub page_min_bp: i64,
    pub mim_min_bp: i64,
    pub owner_team: &'a str,
    pub recommended_team: &'a str,
    pub team_matches: bool,
    pub source_impact: ImpactLevel,
    pub declined_min: i64,
}

impl Seen<'_> {
    pub(crate) fn render(&self, field: Field) -> String {
        match field {
            Field::Severity => self.severity.as_str().to_owned(),
            Field::ConfidenceBp => format_bp(self.confidence_bp),
            Field::RequiresTicket => self.requires_ticket.to_string(),
            Field::RequiresPaging => self.requires_paging.to_string(),
            Field::RequiresMim => self.requires_mim.to_string(),
            Field::Environment => self.environment.as_str().to_owned(),
            Field::PageBudgetLeft => self.page_budget_left.to_string(),
            Field::IndependentSignals => self.independent_signals.to_string(),
            Field::MimOpen => self.mim_open.to_string(),
            Field::Known => self.known.to_string(),
            Field::Team => self.team.to_owned(),
            Field::Tier => self.tier.to_string(),
            Field::TicketMinBp => format_bp(self.ticket_min_bp),
            Field::PageMinBp => format_bp(self.page_min_bp),
            Field::MimMinBp => format_bp(self.mim_min_bp),
            Field::OwnerTeam if self.owner_team.is_empty() => "(no owner)".to_owned(),
            Field::OwnerTeam => self.owner_team.to_owned(),
            Field::RecommendedTeam => self.recommended_team.to_owned(),
            Field::TeamMatches => self.team_matches.to_string(),
            Field::SourceImpact => impact_name(impact_rank(self.source_impact)).to_owned(),
            Field::DeclinedMin => impact_name(self.declined_min).to_owned(),
        }
    }
}

/// Basis points as a fraction with at least two decimals: 7400 -> `0.74`,
/// 8000 -> `0.80`, 7450 -> `0.745`.
pub(crate) fn format_bp(bp: i64) -> String {
    let sign = if bp < 0 { "-" } else { "" };
    let abs = bp.unsigned_abs();
    let mut frac = format!("{:04}", abs % 10_000);
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{sign}{}.{frac}", abs / 10_000)
}

/// A `@threshold` text with `{path}` placeholders, parsed at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Field(Field),
}

impl Template {
    /// Parses `>= {resource.page_min_bp}`; the error names the bad placeholder.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let (before, after) = rest.split_at(open);
            if !before.is_empty() {
                segments.push(Segment::Text(before.to_owned()));
            }
            let after = after.get(1..).unwrap_or_default();
            let Some(close) = after.find('}') else {
                return Err(format!("unclosed `{{` in threshold {text:?}"));
            };
            let (path, tail) = after.split_at(close);
            let field = Field::parse(path).ok_or_else(|| {
                format!(
                    "unknown path {path:?} in threshold {text:?} (known: {})",
                    Field::known_paths()
                )
            })?;
            segments.push(Segment::Field(field));
            rest = tail.get(1..).unwrap_or_default();
        }
        if rest.contains('}') {
            return Err(format!("unmatched `}}` in threshold {text:?}"));
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Template(segments))
    }

    pub(crate) fn render(&self, seen: &Seen<'_>) -> String {
        let mut out = String::new();
        for segment in &self.0 {
            match segment {
                Segment::Text(t) => out.push_str(t),
                Segment::Field(f) => out.push_str(&seen.render(*f)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basis_points_render_as_fractions() {
        assert_eq!(format_bp(7400), "0.74");
        assert_eq!(format_bp(8000), "0.80");
        assert_eq!(format_bp(7450), "0.745");
        assert_eq!(format_bp(10_000), "1.00");
        assert_eq!(format_bp(0), "0.00");
        assert_eq!(format_bp(-5), "-0.0005");
    }

    #[test]
    fn templates_reject_unknown_paths_and_stray_braces() {
        assert!(Template::parse(">= {resource.page_min_bp}").is_ok());
        let e = Template::parse(">= {resource.page_min}").unwrap_err();
        assert!(e.contains("\"resource.page_min\""), "{e}");
        assert!(Template::parse(">= {resource.page_min_bp").is_err());
        assert!(Template::parse(">= }").is_err());
    }

    #[test]
    fn every_field_path_parses_back() {
        for f in Field::ALL {
            assert_eq!(Field::parse(f.path()), Some(f));
        }
    }
}
