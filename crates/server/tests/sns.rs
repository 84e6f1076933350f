//! End to end, over real HTTP: `POST /v1/events/cloudwatch-sns` against the
//! sandbox's SNS publisher emulator (its own RSA key and self-signed
//! certificate served over loopback http, allowed only by the explicit test
//! flag plus a pattern override), and `POST /v1/events/eventbridge`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use chrono::SecondsFormat;
use common::tg_server::Clock as _;
use common::{CONFIG, Harness, action, answer, outcome};
use serde_json::{Value, json};

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:alarms";
const OTHER_TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:not-ours";
const ACCOUNT: &str = "123456789012";

/// The shared test configuration plus an SNS source that trusts the sandbox.
fn config(loopback_flag: bool) -> String {
    format!(
        r#"{CONFIG}
sources:
  sns:
    topic_arns: ["{TOPIC}"]
    cert_host_pattern: '127\.0\.0\.1'
    allow_insecure_loopback_cert_urls: {loopback_flag}
    replay_window_secs: 3600
  aws:
    account_environments: {{ "{ACCOUNT}": prod }}
"#
    )
}

async fn start() -> Harness {
    Harness::start_with(&config(true)).await
}

fn alarm(name: &str, description: &str, state: &str) -> Value {
    json!({
        "AlarmName": name,
        "AlarmDescription": description,
        "AWSAccountId": ACCOUNT,
        "NewStateValue": state,
        "NewStateReason": "Threshold Crossed: 1 datapoint [97.0] was greater than the threshold (90.0).",
        "StateChangeTime": "2026-11-24T02:59:50.000+0000",
        "Region": "US East (N. Virginia)",
        "AlarmArn": format!("arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:{name}"),
        "OldStateValue": "OK",
        "Trigger": {
            "MetricName": "CPUUtilization", "Namespace": "AWS/RDS", "StatisticType": "Statistic",
            "Statistic": "AVERAGE", "Unit": null,
            "Dimensions": [{"value": "orders-db", "name": "DBInstanceIdentifier"}],
            "Period": 60, "EvaluationPeriods": 1,
            "ComparisonOperator": "GreaterThanThreshold", "Threshold": 90.0
        }
    })
}

/// An unsigned Notification envelope carrying `message`, stamped with the gate's clock.
fn notification(h: &Harness, message: &Value, subject: Option<&str>) -> Value {
    let mut env = json!({
        "Type": "Notification",
        "MessageId": uuid::Uuid::new_v4().to_string(),
        "TopicArn": TOPIC,
        "Message": message.to_string(),
        "Timestamp": h.clock.now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "SigningCertURL": h.sandbox.sns_cert_url(),
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
    });
    if let Some(s) = subject {
        env["Subject"] = json!(s);
    }
    env
}

fn confirmation(h: &Harness, topic: &str) -> Value {
    json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": uuid::Uuid::new_v4().to_string(),
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3",
        "TopicArn": topic,
        "Message": format!("You have chosen to subscribe to the topic {topic}.\nTo confirm the subscription, visit the SubscribeURL included in this message."),
        "SubscribeURL": h.sandbox.sns_subscribe_url(topic, "2336412f37fb687f5d51e6e2"),
        "Timestamp": h.clock.now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "SigningCertURL": h.sandbox.sns_cert_url(),
    })
}

fn sign(h: &Harness, env: &Value, version: u8) -> Value {
    h.state().sns_sign(env, version).expect("sandbox signs")
}

/// POSTs like SNS: JSON as `text/plain; charset=UTF-8`, with the type header.
async fn post_sns(h: &Harness, env: &Value) -> (u16, String, Value) {
    post_sns_at(h, &h.base, env).await
}

/// As [`post_sns`], to the gate at `base`.
async fn post_sns_at(h: &Harness, base: &str, env: &Value) -> (u16, String, Value) {
    let resp = h
        .http
        .post(format!("{base}/v1/events/cloudwatch-sns"))
        .header("content-type", "text/plain; charset=UTF-8")
        .header("user-agent", "Amazon Simple Notification Service Agent")
        .header(
            "x-amz-sns-message-type",
            env["Type"].as_str().unwrap_or("Notification"),
        )
        .body(serde_json::to_vec(env).unwrap())
        .send()
        .await
        .expect("gate answers");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, ctype, body)
}

fn assert_forbidden(what: &str, (status, ctype, body): &(u16, String, Value)) {
    assert_eq!(*status, 403, "{what}: {body}");
    assert_eq!(ctype, "application/problem+json", "{what}");
    assert_eq!(
        body["type"], "https://triage-gate.dev/problems/sns-not-verified",
        "{what}: {body}"
    );
}

fn run_ids(body: &Value) -> Vec<String> {
    body["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_v1_and_v2_notifications_create_runs_and_redeliveries_do_not() {
    let h = start().await;
    for version in [1u8, 2] {
        let name = format!("orders-db-cpu-v{version}");
        let env = sign(
            &h,
            &notification(
                &h,
                &alarm(&name, "CPU high", "ALARM"),
                Some(&format!("ALARM: \"{name}\" in US East (N. Virginia)")),
            ),
            version,
        );
        let (status, _, body) = post_sns(&h, &env).await;
        assert_eq!(status, 202, "v{version}: {body}");
        let ids = run_ids(&body);
        assert_eq!(ids.len(), 1);
        let run = h.wait_completed(&ids[0]).await;
        let ev = &run["event"];
        assert_eq!(ev["source"], "cloudwatch-sns");
        assert_eq!(ev["origin"], "cloudwatch");
        assert_eq!(ev["service"], "orders-db");
        assert_eq!(ev["environment"], "production", "account mapped to prod");
        assert_eq!(ev["alert_name"], name.as_str());
        assert_eq!(ev["status"], "firing");
        assert_eq!(ev["correlation_ids"]["sns_message_id"], env["MessageId"]);
        assert_eq!(
            ev["correlation_ids"]["alarm_arn"],
            format!("arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:{name}")
        );
        // Issue 20 item 9: the source's correlation IDs are sealed into the
        // audit record too; item 3: the verified sender is the SNS topic.
        let audit = h.get_json(&format!("/v1/audit?run_id={}", ids[0])).await;
        let record = audit["chain"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r.get("kind").is_none())
            .unwrap_or_else(|| panic!("no run record: {audit}"))
            .clone();
        assert_eq!(
            record["event"]["correlation_ids"]["alarm_arn"], ev["correlation_ids"]["alarm_arn"],
            "{record}"
        );
        assert!(
            ev["sender"]
                .as_str()
                .unwrap()
                .starts_with("sns:arn:aws:sns:"),
            "{ev}"
        );
        assert!(
            ev["log_pointers"][0]["url"].as_str().unwrap().starts_with(
                "https://console.aws.amazon.com/cloudwatch/home?region=us-east-1#alarmsV2:alarm/"
            ),
            "{ev}"
        );

        // SNS redelivers with the same MessageId: no second run.
        let (status, _, body) = post_sns(&h, &env).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "duplicate");
    }
    // A message without Subject signs and verifies too (Subject is left out of the string to sign).
    let env = sign(
        &h,
        &notification(&h, &alarm("orders-db-iops", "IOPS high", "ALARM"), None),
        2,
    );
    assert_eq!(post_sns(&h, &env).await.0, 202);
    assert_eq!(h.runs_total().await, 3);
    let gate = h.gate.as_ref().unwrap();
    assert_eq!(
        gate.state.pipeline.sns.cached_certs(),
        1,
        "one certificate, fetched once and cached"
    );
}

/// Issue 21 item 2: the `MessageId` memory is the store's, so SNS's
/// redelivery is a duplicate also for another replica, or after a restart,
/// inside the replay window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_message_is_a_duplicate_for_another_replica_and_after_a_restart() {
    let h = start().await;
    let name = "orders-db-cpu-replayed";
    let env = sign(
        &h,
        &notification(&h, &alarm(name, "CPU high", "ALARM"), Some("ALARM")),
        2,
    );
    let (status, _, body) = post_sns(&h, &env).await;
    assert_eq!(status, 202, "{body}");
    // Another gate on the same store: its in-process memory is empty.
    let other = h.second_gate(&config(true)).await;
    let (status, _, body) = post_sns_at(&h, &format!("http://{}", other.addr), &env).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "duplicate", "{body}");
    assert_eq!(h.runs_total().await, 1, "one message, one run");
    other.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stripped_tampered_disallowed_or_stale_messages_are_403_and_create_no_run() {
    let h = start().await;
    let message = alarm("orders-db-cpu", "CPU high", "ALARM");
    let good = sign(&h, &notification(&h, &message, Some("ALARM")), 2);

    // Forged: a real signature, but of another message.
    let other = sign(&h, &notification(&h, &message, Some("other")), 2);
    let mut forged = good.clone();
    forged["Signature"] = other["Signature"].clone();
    assert_forbidden("forged", &post_sns(&h, &forged).await);

    // Garbage signature.
    let mut garbage = good.clone();
    garbage["Signature"] = json!("dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZQ==");
    assert_forbidden("garbage", &post_sns(&h, &garbage).await);

    // Stripped signature.
    let mut stripped = good.clone();
    stripped.as_object_mut().unwrap().remove("Signature");
    assert_forbidden("stripped", &post_sns(&h, &stripped).await);

    // A v2 signature presented as v1.
    let mut downgraded = good.clone();
    downgraded["SignatureVersion"] = json!("1");
    assert_forbidden("downgraded", &post_sns(&h, &downgraded).await);

    // Tampered message after signing.
    let mut tampered = good.clone();
    tampered["Message"] = json!(alarm("orders-db-cpu", "CPU high", "OK").to_string());
    assert_forbidden("tampered", &post_sns(&h, &tampered).await);

    // Certificate URL outside the allow-list (signed correctly: the URL is not signed).
    for url in [
        "https://evil.example.com/cert.pem",
        "http://10.0.0.1/sns/cert.pem",
        &format!("{}/sns/cert.pem?x=1", h.sandbox.base_url()),
        &h.sandbox.base_url().replace("127.0.0.1", "localhost"),
    ] {
        let mut env = notification(&h, &message, None);
        env["SigningCertURL"] = json!(url);
        let (status, ctype, body) = post_sns(&h, &sign(&h, &env, 2)).await;
        assert_forbidden(url, &(status, ctype, body.clone()));
        assert!(
            body["detail"].as_str().unwrap().contains("not allowed"),
            "{body}"
        );
    }

    // Stale (and far-future) Timestamps: outside the 1 h replay window.
    for offset in [-3601i64, 3601] {
        let mut env = notification(&h, &message, None);
        env["Timestamp"] = json!(
            (h.clock.now() + chrono::Duration::seconds(offset))
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        let r = post_sns(&h, &sign(&h, &env, 2)).await;
        assert_forbidden("stale", &r);
        assert!(r.2["detail"].as_str().unwrap().contains("replay window"));
    }

    // A notification from a topic we do not subscribe to.
    let mut env = notification(&h, &message, None);
    env["TopicArn"] = json!(OTHER_TOPIC);
    assert_forbidden("other topic", &post_sns(&h, &sign(&h, &env, 2)).await);

    assert_eq!(h.runs_total().await, 0, "nothing was accepted");
    assert_eq!(h.model_calls(), 0);

    // The untouched original still passes: the refusals were about the changes.
    assert_eq!(post_sns(&h, &good).await.0, 202);
    assert_eq!(h.runs_total().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_http_cert_needs_the_explicit_flag() {
    let h = Harness::start_with(&config(false)).await;
    let env = sign(
        &h,
        &notification(&h, &alarm("orders-db-cpu", "CPU high", "ALARM"), None),
        2,
    );
    let r = post_sns(&h, &env).await;
    assert_forbidden("loopback without flag", &r);
    assert_eq!(h.runs_total().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_is_confirmed_only_for_configured_topics() {
    let h = start().await;
    let (status, _, body) = post_sns(&h, &sign(&h, &confirmation(&h, TOPIC), 2)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "confirmed");
    let seen = h.state().sns_confirmations();
    assert_eq!(seen.len(), 1, "the sandbox saw the GET");
    assert_eq!(seen[0].topic_arn, TOPIC);
    assert!(seen[0].had_token);

    let r = post_sns(&h, &sign(&h, &confirmation(&h, OTHER_TOPIC), 1)).await;
    assert_forbidden("other topic", &r);
    assert_eq!(h.state().sns_confirmations().len(), 1, "no GET for it");

    // A SubscribeURL elsewhere is never fetched, even for our topic.
    let mut env = confirmation(&h, TOPIC);
    env["SubscribeURL"] =
        json!("https://evil.example.com/?Action=ConfirmSubscription&TopicArn=x&Token=y");
    assert_forbidden(
        "foreign subscribe url",
        &post_sns(&h, &sign(&h, &env, 2)).await,
    );
    // An unsigned confirmation is refused before anything is fetched.
    let mut unsigned = confirmation(&h, TOPIC);
    unsigned["SignatureVersion"] = json!("2");
    assert_forbidden("unsigned", &post_sns(&h, &unsigned).await);
    assert_eq!(h.state().sns_confirmations().len(), 1);

    // Unsubscribe confirmations are acknowledged.
    let mut unsub = confirmation(&h, TOPIC);
    unsub["Type"] = json!("UnsubscribeConfirmation");
    let (status, _, body) = post_sns(&h, &sign(&h, &unsub, 2)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.state().sns_confirmations().len(), 1);
    assert_eq!(h.runs_total().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_fault_from_alertmanager_and_cloudwatch_one_fingerprint_two_signals() {
    let h = start().await;
    h.script_tool("scn-fp", answer("sev1", 0.95, false, false, true, "dba"));
    let am = json!({
        "version": "4", "status": "firing", "receiver": "triage-gate",
        "groupKey": "{}:{alertname=\"OrdersDbDown\"}",
        "commonLabels": {}, "commonAnnotations": {},
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "OrdersDbDown", "service": "orders-db", "env": "prod", "severity": "critical"},
            "annotations": {"description": "scn-fp connection refused after 3012 ms on 10.0.0.7"},
            "startsAt": "2026-11-24T02:59:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
            "fingerprint": "1a30ba71cca2921f"
        }]
    });
    let ids = h.submit("alertmanager", &am, None).await;
    let first = h.wait_completed(&ids[0]).await;
    assert_eq!(first["event"]["origin"], "prometheus");
    assert_eq!(outcome(&first, "mim"), "review", "one signal is not enough");

    // CloudWatch sees the same fault: same alarm name, same message up to volatile parts.
    let cw = alarm(
        "OrdersDbDown",
        "scn-fp connection refused after 2950 ms on 10.0.0.9",
        "ALARM",
    );
    let (status, _, body) = post_sns(&h, &sign(&h, &notification(&h, &cw, None), 2)).await;
    assert_eq!(status, 202, "{body}");
    let second = h.wait_completed(&run_ids(&body)[0]).await;
    assert_eq!(second["event"]["origin"], "cloudwatch");
    assert_eq!(second["event"]["environment"], "production");
    assert_eq!(
        second["event"]["fingerprint"], first["event"]["fingerprint"],
        "one fingerprint across sources"
    );
    assert_eq!(
        second["event"]["error_signature"],
        first["event"]["error_signature"]
    );
    // Inside the dedup window a sighting from a NEW origin is a confirmation,
    // not a duplicate: the MIM gate is evaluated again and names both origins.
    assert_eq!(second["decision"]["duplicate_of"], Value::Null);
    let signals = action(&second, "mim")["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "mim.signals")
        .unwrap()
        .clone();
    assert_eq!(signals["passed"], true, "{signals}");
    let listed = signals["actual"].as_str().unwrap();
    assert!(
        listed.contains("cloudwatch") && listed.contains("prometheus"),
        "{listed}"
    );

    // The same origin repeating inside the window is a plain duplicate.
    h.advance_secs(60);
    let (status, _, body) = post_sns(&h, &sign(&h, &notification(&h, &cw, None), 1)).await;
    assert_eq!(status, 202, "{body}");
    let third = h.wait_completed(&run_ids(&body)[0]).await;
    assert_eq!(third["event"]["fingerprint"], first["event"]["fingerprint"]);
    // Duplicates link to the run that last (re)opened the window: the confirmation.
    assert_eq!(third["decision"]["duplicate_of"], second["run_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_alarm_and_generic_events_are_accepted() {
    let h = start().await;
    let example: Value = serde_json::from_str(include_str!(
        "../../normalize/tests/golden/eventbridge/alarm/input.json"
    ))
    .unwrap();
    let ids = h.submit("eventbridge", &example, None).await;
    let run = h.wait_completed(&ids[0]).await;
    assert_eq!(run["event"]["source"], "eventbridge");
    assert_eq!(run["event"]["origin"], "cloudwatch");
    assert_eq!(run["event"]["service"], "orders-db");
    assert_eq!(run["event"]["environment"], "production", "account mapped");

    let generic = json!({
        "version": "0", "id": "e-1", "detail-type": "Deployment Failed", "source": "acme.deployer",
        "account": ACCOUNT, "time": "2026-11-24T03:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {"service": "checkout", "message": "rollout of build 4711 failed", "severity": "high"}
    });
    let ids = h.submit("eventbridge", &generic, None).await;
    let run = h.wait_completed(&ids[0]).await;
    assert_eq!(run["event"]["origin"], "acme.deployer");
    assert_eq!(run["event"]["alert_name"], "Deployment Failed");

    let resp = h
        .post_raw("eventbridge", br#"{"version":"0"}"#.to_vec(), None)
        .await;
    assert_eq!(resp.status().as_u16(), 400);
}
