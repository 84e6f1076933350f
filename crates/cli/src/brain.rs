//! The sandbox model's "brain": the built-in rules classifier reading the event
//! out of the prompt, so the Anthropic emulator answers like a sensible model.

use std::collections::BTreeMap;

use tg_classify::{RulesClassifier, TeamContext};
use tg_model::NormalizedEvent;
use tg_sandbox::{BrainReply, ModelBrain};

pub struct RulesBrain {
    rules: RulesClassifier,
    /// What the emulated model "knows" about ownership: service -> team.
    owners: BTreeMap<String, String>,
}

impl RulesBrain {
    pub fn new(owners: BTreeMap<String, String>) -> Self {
        RulesBrain {
            rules: RulesClassifier::default_rules(),
            owners,
        }
    }
}

/// The JSON between the prompt's `<event_json>` tags.
fn event_json(user_text: &str) -> Option<&str> {
    let start = user_text.find("<event_json>")? + "<event_json>".len();
    let end = user_text.get(start..)?.find("</event_json>")? + start;
    user_text.get(start..end)
}

impl ModelBrain for RulesBrain {
    fn answer(&self, user_text: &str) -> BrainReply {
        let Some(event) = event_json(user_text)
            .and_then(|j| serde_json::from_str::<NormalizedEvent>(j.trim()).ok())
        else {
            return BrainReply::Text("I could not find the event in the prompt.".into());
        };
        // The emulated model knows the teams only through the prompt; like a real
        // model it may answer a team the gate does not know (the contract catches it).
        let teams = TeamContext {
            known_teams: Default::default(),
            service_team: self.owners.get(&event.service).cloned(),
            default_team: "platform-ops".into(),
        };
        let c = self.rules.classify_sync(&event, &teams);
        match serde_json::to_value(&c) {
            Ok(v) => BrainReply::ToolInput(v),
            Err(e) => BrainReply::Text(format!("cannot encode: {e}")),
        }
    }
}
