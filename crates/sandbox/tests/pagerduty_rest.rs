//! PagerDuty REST incidents and the scoped-OAuth token endpoint over real HTTP:
//! the exact header checks of the fidelity checklist.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use common::{json, start};
use serde_json::json;

const V2: &str = "application/vnd.pagerduty+json;version=2";

#[tokio::test]
async fn token_endpoint_issues_scoped_tokens_only_to_form_encoded_known_clients() {
    let (sb, c) = start().await;
    sb.state()
        .pagerduty_oauth_client("app-1", "s3cret-s3cret", "acme");
    let url = sb.pagerduty_token_url();
    let form = |body: &'static str| {
        c.post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let (s, b) = json(
        form("grant_type=client_credentials&client_id=app-1&client_secret=s3cret-s3cret&scope=as_account-us.acme+incidents.write")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["access_token"].as_str().unwrap().starts_with("pdus+_"));
    assert_eq!(b["token_type"], "bearer");
    assert_eq!(b["scope"], "as_account-us.acme incidents.write");
    assert!(b["expires_in"].as_i64().unwrap() > 0);

    for (body, status, error) in [
        (
            "grant_type=password&client_id=app-1&client_secret=s3cret-s3cret",
            400,
            "unsupported_grant_type",
        ),
        (
            "grant_type=client_credentials&client_id=app-1&client_secret=nope&scope=as_account-us.acme",
            401,
            "invalid_client",
        ),
        (
            "grant_type=client_credentials&client_id=app-1&client_secret=s3cret-s3cret&scope=incidents.write",
            400,
            "invalid_scope",
        ),
        (
            "grant_type=client_credentials&client_id=app-1&client_secret=s3cret-s3cret&scope=as_account-us.other",
            400,
            "invalid_scope",
        ),
    ] {
        let (s, b) = json(form(body).await.unwrap()).await;
        assert_eq!((s, b["error"].as_str().unwrap()), (status, error), "{body}");
    }
    // JSON is not accepted.
    let (s, b) = json(
        c.post(&url)
            .json(&json!({"grant_type": "client_credentials", "client_id": "app-1", "client_secret": "s3cret-s3cret"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, b["error"].as_str().unwrap()), (400, "invalid_request"));
    // The secret is never recorded.
    let recorded =
        serde_json::to_string(&sb.state().requests(triage_gate_sandbox::Target::Pagerduty))
            .unwrap();
    assert!(!recorded.contains("s3cret-s3cret"), "{recorded}");
}

#[tokio::test]
async fn rest_incidents_check_auth_accept_and_from_and_refuse_duplicates() {
    let (sb, c) = start().await;
    sb.state().pagerduty_api_key("u+apikey123");
    let base = sb.pagerduty_api_url();
    let body = json!({"incident": {"type": "incident", "title": "checkout down",
        "service": {"id": "PWIXJZS", "type": "service_reference"}, "urgency": "high",
        "incident_key": "tg:run_1:page", "body": {"type": "incident_body", "details": "x"}}});
    let post = |auth: &'static str, accept: &'static str, from: Option<&'static str>| {
        let mut r = c
            .post(format!("{base}/incidents"))
            .header("authorization", auth)
            .header("accept", accept)
            .json(&body);
        if let Some(f) = from {
            r = r.header("from", f);
        }
        r.send()
    };
    let (s, b) = json(
        post("Token token=u+apikey123", V2, Some("a@example.com"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let id = b["incident"]["id"].as_str().unwrap().to_owned();
    assert_eq!(b["incident"]["status"], "triggered");
    assert_eq!(b["incident"]["incident_number"], 1);

    for (auth, accept, from, status, code) in [
        ("Token u+apikey123", V2, Some("a@example.com"), 401, 2006),
        ("Bearer not-issued", V2, Some("a@example.com"), 401, 2006),
        (
            "Token token=u+apikey123",
            "application/json",
            Some("a@example.com"),
            406,
            2001,
        ),
        ("Token token=u+apikey123", V2, None, 400, 2001),
        // The same open incident_key on the same service.
        (
            "Token token=u+apikey123",
            V2,
            Some("a@example.com"),
            400,
            2001,
        ),
    ] {
        let (s, b) = json(post(auth, accept, from).await.unwrap()).await;
        assert_eq!(
            (s, b["error"]["code"].as_u64()),
            (status, Some(code)),
            "{auth} {accept} {from:?}: {b}"
        );
    }
    assert_eq!(sb.state().pagerduty_rest_incidents().len(), 1);

    let (s, b) = json(
        c.get(format!("{base}/incidents"))
            .query(&[
                ("incident_key", "tg:run_1:page"),
                ("service_ids[]", "PWIXJZS"),
            ])
            .header("authorization", "Token token=u+apikey123")
            .header("accept", V2)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["incidents"][0]["id"], id.as_str());

    let put = |id: String| {
        c.put(format!("{base}/incidents/{id}"))
            .header("authorization", "Token token=u+apikey123")
            .header("accept", V2)
            .header("from", "a@example.com")
            .json(&json!({"incident": {"type": "incident_reference", "status": "resolved"}}))
            .send()
    };
    let (s, b) = json(put(id.clone()).await.unwrap()).await;
    assert_eq!(
        (s, b["incident"]["status"].as_str()),
        (200, Some("resolved"))
    );
    assert_eq!(json(put("QNOPE".into()).await.unwrap()).await.0, 404);
    // Resolved, the key may open a new incident.
    let (s, _) = json(
        post("Token token=u+apikey123", V2, Some("a@example.com"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201);
}
