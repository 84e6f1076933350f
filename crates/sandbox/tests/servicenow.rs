//! ServiceNow Table API emulator over real HTTP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use common::{SN_TOKEN, control, json, start};
use serde_json::{Value, json};

fn sn(c: &reqwest::Client, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    c.request(method, url)
        .bearer_auth(SN_TOKEN)
        .header("accept", "application/json")
}

async fn create(c: &reqwest::Client, base: &str, body: Value) -> (u16, Value) {
    json(
        sn(
            c,
            reqwest::Method::POST,
            format!("{base}/api/now/table/incident?sysparm_exclude_reference_link=true"),
        )
        .json(&body)
        .send()
        .await
        .unwrap(),
    )
    .await
}

#[tokio::test]
async fn create_answers_201_with_location_strings_and_incrementing_numbers() {
    let (sb, c) = start().await;
    let base = sb.servicenow_url();
    let resp = sn(
        &c,
        reqwest::Method::POST,
        format!("{base}/api/now/table/incident"),
    )
    .json(
        &json!({"short_description": "checkout down", "urgency": "1", "impact": "2",
                      "correlation_id": "am:prod:1", "major_incident_state": "proposed",
                      "assignment_group": "a715cd759f2002002920bde8132e7018", "bogus_column": "x"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let (_, body) = json(resp).await;
    let r = &body["result"];
    let sys_id = r["sys_id"].as_str().unwrap();
    assert_eq!(sys_id.len(), 32);
    assert!(sys_id.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(location.ends_with(&format!("/servicenow/api/now/table/incident/{sys_id}")));
    assert_eq!(r["number"], "INC0010001");
    assert_eq!(r["state"], "1");
    assert_eq!(r["active"], "true");
    assert_eq!(r["priority"], "2", "impact 2 / urgency 1 is priority 2");
    assert_eq!(r["major_incident_state"], "proposed");
    assert!(
        r.get("bogus_column").is_none(),
        "unknown columns are dropped"
    );
    // Reference columns come back as {link, value} unless links are excluded.
    assert_eq!(
        r["assignment_group"]["value"],
        "a715cd759f2002002920bde8132e7018"
    );
    for (k, v) in r.as_object().unwrap() {
        assert!(
            v.is_string() || k == "assignment_group",
            "{k} is not a string: {v}"
        );
    }
    let (status, body) = create(&c, &base, json!({"short_description": "second"})).await;
    assert_eq!(status, 201);
    assert_eq!(body["result"]["number"], "INC0010002");
    assert_eq!(sb.state().incidents().len(), 2);
    assert_eq!(
        sb.state().incidents()[0].field("major_incident_state"),
        Some("proposed")
    );
}

#[tokio::test]
async fn rejects_bad_headers_auth_values_and_tables() {
    let (sb, c) = start().await;
    let url = format!("{}/api/now/table/incident", sb.servicenow_url());
    let body = json!({"short_description": "x"});

    let no_accept = c
        .post(&url)
        .bearer_auth(SN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_accept.status(), 400);

    let bad_ct = sn(&c, reqwest::Method::POST, url.clone())
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(bad_ct.status(), 400);

    for auth in [None, Some("Bearer wrong"), Some("Basic YWRtaW46YWRtaW4=")] {
        let mut req = c
            .post(&url)
            .header("accept", "application/json")
            .json(&body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let (status, b) = json(req.send().await.unwrap()).await;
        assert_eq!(status, 401);
        assert_eq!(b["status"], "failure");
        assert_eq!(b["error"]["message"], "User Not Authenticated");
        assert!(b["error"]["detail"].is_string());
    }

    let (status, b) = create(&c, &sb.servicenow_url(), json!({"urgency": 1})).await;
    assert_eq!(status, 400);
    assert_eq!(b["status"], "failure");
    assert!(b["error"]["message"].as_str().unwrap().contains("urgency"));

    let (status, _) = json(
        sn(
            &c,
            reqwest::Method::POST,
            format!("{}/api/now/table/incidnet", sb.servicenow_url()),
        )
        .json(&body)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(sb.state().incidents().is_empty());
}

#[tokio::test]
async fn unique_active_correlation_rule_is_enforced_and_switchable() {
    let (sb, c) = start().await;
    let base = sb.servicenow_url();
    let (s1, first) = create(&c, &base, json!({"correlation_id": "am:1"})).await;
    assert_eq!(s1, 201);
    let (s2, err) = create(&c, &base, json!({"correlation_id": "am:1"})).await;
    assert_eq!(s2, 403);
    assert_eq!(err["status"], "failure");
    assert_eq!(err["error"]["message"], "Operation Failed");

    // Once resolved (inactive), the correlation id may be used again.
    let sys_id = first["result"]["sys_id"].as_str().unwrap();
    let (s, _) = json(
        sn(
            &c,
            reqwest::Method::PATCH,
            format!("{base}/api/now/table/incident/{sys_id}"),
        )
        .json(&json!({"state": "6", "close_code": "Solution provided", "close_notes": "done"}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        create(&c, &base, json!({"correlation_id": "am:1"})).await.0,
        201
    );

    // Switched off, duplicates are inserted (as on an instance without the rule).
    assert_eq!(
        control(
            &c,
            &sb,
            "servicenow/rules",
            json!({"unique_active_correlation_id": false})
        )
        .await,
        200
    );
    assert_eq!(
        create(&c, &base, json!({"correlation_id": "am:1"})).await.0,
        201
    );
    assert_eq!(sb.state().incidents().len(), 3);
}

#[tokio::test]
async fn correlation_query_finds_the_active_incident_with_requested_fields() {
    let (sb, c) = start().await;
    let base = sb.servicenow_url();
    create(
        &c,
        &base,
        json!({"correlation_id": "am:a", "short_description": "a"}),
    )
    .await;
    let (_, b) = create(
        &c,
        &base,
        json!({"correlation_id": "am:b", "short_description": "b"}),
    )
    .await;
    let b_sys_id = b["result"]["sys_id"].as_str().unwrap().to_owned();

    let query = |q: &'static str| {
        sn(
            &c,
            reqwest::Method::GET,
            format!("{base}/api/now/table/incident"),
        )
        .query(&[
            ("sysparm_query", q),
            ("sysparm_limit", "1"),
            ("sysparm_fields", "sys_id,number,state"),
        ])
        .send()
    };
    let resp = query("correlation_id=am:b^active=true").await.unwrap();
    assert_eq!(resp.headers()["x-total-count"], "1");
    let (status, body) = json(resp).await;
    assert_eq!(status, 200);
    let rows = body["result"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["sys_id"], b_sys_id.as_str());
    assert_eq!(
        rows[0].as_object().unwrap().len(),
        3,
        "only sysparm_fields: {}",
        rows[0]
    );

    let (_, none) = json(query("correlation_id=am:zzz^active=true").await.unwrap()).await;
    assert_eq!(none["result"], json!([]));

    // A misspelt column is ignored by default: the query matches more than intended.
    let (_, lenient) = json(query("corelation_id=am:zzz^active=true").await.unwrap()).await;
    assert_eq!(lenient["result"].as_array().unwrap().len(), 1);
    let mut rules = sb.state().servicenow_rules();
    rules.invalid_query_returns_no_rows = true;
    sb.state().set_servicenow_rules(rules);
    let (_, strict) = json(query("corelation_id=am:zzz^active=true").await.unwrap()).await;
    assert_eq!(strict["result"], json!([]));

    // GET needs Accept and auth too.
    let r = c
        .get(format!("{base}/api/now/table/incident"))
        .bearer_auth(SN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn patch_appends_work_notes_and_resolving_needs_close_info() {
    let (sb, c) = start().await;
    let base = sb.servicenow_url();
    let (_, created) = create(&c, &base, json!({"short_description": "x"})).await;
    let sys_id = created["result"]["sys_id"].as_str().unwrap().to_owned();
    let patch = |body: Value| {
        sn(
            &c,
            reqwest::Method::PATCH,
            format!("{base}/api/now/table/incident/{sys_id}"),
        )
        .json(&body)
        .send()
    };
    let (s, b) = json(
        patch(json!({"work_notes": "triage-gate: paged"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["result"]["sys_mod_count"], "1");
    assert_eq!(
        b["result"]["work_notes"], "",
        "journal fields read back empty"
    );
    let (s, b) = json(patch(json!({"state": "6"})).await.unwrap()).await;
    assert_eq!(s, 403);
    assert_eq!(b["status"], "failure");
    let (s, b) = json(
        patch(json!({"state": "6", "close_code": "Solution provided", "close_notes": "fixed"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["result"]["active"], "false");
    let inc = &sb.state().incidents()[0];
    assert_eq!(inc.work_notes, vec!["triage-gate: paged".to_string()]);
    assert!(!inc.is_active());

    let (s, b) = json(
        sn(
            &c,
            reqwest::Method::PATCH,
            format!("{base}/api/now/table/incident/{}", "0".repeat(32)),
        )
        .json(&json!({"work_notes": "x"}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(b["error"]["message"], "No Record found");
}

#[tokio::test]
async fn journal_reads_back_as_display_text_and_updates_are_logged_and_faulted() {
    let (sb, c) = start().await;
    let base = sb.servicenow_url();
    let (_, created) = create(
        &c,
        &base,
        json!({"short_description": "x", "work_notes": "opened"}),
    )
    .await;
    let sys_id = created["result"]["sys_id"].as_str().unwrap().to_owned();
    let url = format!("{base}/api/now/table/incident/{sys_id}");
    for note in ["first note\n[triage-gate k1]", "second note"] {
        let (s, _) = json(
            sn(&c, reqwest::Method::PATCH, url.clone())
                .json(&json!({ "work_notes": note }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200);
    }
    let read = |display: Option<&'static str>| {
        let mut q = vec![("sysparm_fields", "work_notes,number")];
        if let Some(d) = display {
            q.push(("sysparm_display_value", d));
        }
        sn(&c, reqwest::Method::GET, url.clone()).query(&q).send()
    };
    let (s, b) = json(read(Some("true")).await.unwrap()).await;
    assert_eq!(s, 200);
    let text = b["result"]["work_notes"].as_str().unwrap();
    let (newest, oldest) = (
        text.find("second note").unwrap(),
        text.find("opened").unwrap(),
    );
    assert!(
        newest < text.find("first note").unwrap() && text.find("first note").unwrap() < oldest,
        "newest first: {text}"
    );
    assert!(text.contains("[triage-gate k1]"));
    assert!(
        text.contains(" - Triage Gate Integration (Work notes)\n"),
        "{text}"
    );
    assert_eq!(
        b["result"].as_object().unwrap().len(),
        2,
        "only sysparm_fields"
    );
    let (_, b) = json(read(None).await.unwrap()).await;
    assert_eq!(
        b["result"]["work_notes"], "",
        "without display values a journal reads empty"
    );

    let updates = sb.state().servicenow_updates();
    assert_eq!(updates.len(), 2);
    assert!(updates.iter().all(|u| u.adds_work_note() && !u.resolves()));
    assert_eq!(updates[0].number, "INC0010001");

    // PATCH needs Content-Type like POST; an unknown sys_id is the platform's 404.
    let (s, _) = json(
        sn(&c, reqwest::Method::PATCH, url.clone())
            .header("content-type", "text/plain")
            .body(r#"{"work_notes":"x"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    let (s, b) = json(
        sn(
            &c,
            reqwest::Method::GET,
            format!("{base}/api/now/table/incident/{}", "f".repeat(32)),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["message"].as_str()),
        (404, Some("No Record found"))
    );

    // Faults apply to PATCH and GET of a record, before any work is done.
    for method in [reqwest::Method::PATCH, reqwest::Method::GET] {
        assert_eq!(
            control(
                &c,
                &sb,
                "faults",
                json!({"target": "servicenow", "status": 503, "count": 1})
            )
            .await,
            204
        );
        let mut req = sn(&c, method.clone(), url.clone());
        if method == reqwest::Method::PATCH {
            req = req.json(&json!({"work_notes": "lost"}));
        }
        let (s, b) = json(req.send().await.unwrap()).await;
        assert_eq!(s, 503, "{method}");
        assert_eq!(b["status"], "failure");
    }
    assert_eq!(sb.state().incidents()[0].work_notes.len(), 3);
    assert_eq!(sb.state().servicenow_updates().len(), 2);

    // A resolve is logged as one.
    let (s, _) = json(
        sn(&c, reqwest::Method::PATCH, url.clone())
            .json(&json!({"state": "6", "close_code": "Solved (Permanently)", "close_notes": "ok"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert!(sb.state().servicenow_updates()[2].resolves());
}
