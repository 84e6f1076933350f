//! Slack and Teams webhook emulators over real HTTP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use common::start;
use serde_json::json;
use triage_gate_sandbox::Channel;

#[tokio::test]
async fn slack_accepts_valid_messages_and_refuses_the_rest() {
    let (sb, c) = start().await;
    let url = sb.slack_webhook_url("T1/B2/secret-hook");
    let resp = c
        .post(&url)
        .json(&json!({"text": "MAJOR INCIDENT INC0010001", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*MI*"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(resp.text().await.unwrap(), "ok");

    for (body, status, text) in [
        ("{not json".to_string(), 400, "invalid_payload"),
        (json!({"blocks": []}).to_string(), 400, "no_text"),
        (
            json!({"text": "x", "blocks": [{"no_type": 1}]}).to_string(),
            400,
            "invalid_blocks",
        ),
    ] {
        let resp = c
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status);
        assert_eq!(resp.text().await.unwrap(), text);
    }

    let unknown = format!("{}/bridge/slack/T1/B2/never-issued", sb.base_url());
    let resp = c
        .post(&unknown)
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.text().await.unwrap(), "no_service");

    sb.state().revoke_webhook("T1/B2/secret-hook");
    let resp = c
        .post(&url)
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let posts = sb.state().bridge_posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].channel, Channel::Slack);
    assert_eq!(posts[0].text, "MAJOR INCIDENT INC0010001");
    assert_eq!(posts[0].webhook.expose(), "T1/B2/secret-hook");
}

#[tokio::test]
async fn teams_accepts_adaptive_cards_with_202() {
    let (sb, c) = start().await;
    let url = sb.teams_webhook_url("wf-123");
    let card = json!({"type": "message", "attachments": [{
        "contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null,
        "content": {"type": "AdaptiveCard", "version": "1.4",
                    "body": [{"type": "TextBlock", "text": "MAJOR INCIDENT"}],
                    "actions": [{"type": "Action.OpenUrl", "title": "Join", "url": "https://meet.example.com/x"}]}}]});
    let resp = c.post(&url).json(&card).send().await.unwrap();
    assert_eq!(resp.status(), 202);

    // The retired MessageCard format and Action.Submit are refused.
    let message_card = json!({"@type": "MessageCard", "text": "x"});
    assert_eq!(
        c.post(&url)
            .json(&message_card)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let mut submit = card.clone();
    submit["attachments"][0]["content"]["actions"][0]["type"] = json!("Action.Submit");
    assert_eq!(
        c.post(&url).json(&submit).send().await.unwrap().status(),
        400
    );
    let unknown = format!("{}/bridge/teams/nope", sb.base_url());
    assert_eq!(
        c.post(&unknown).json(&card).send().await.unwrap().status(),
        404
    );

    let posts = sb.state().bridge_posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].channel, Channel::Teams);
    assert_eq!(posts[0].text, "MAJOR INCIDENT");
}
