//! The console behind a trusted reverse proxy (`identity.console.mode: proxy`),
//! over real HTTP against the real gate: the user header is believed only
//! from a trusted peer; scopes come from `roles`; a reviewer's approval is
//! recorded with the proxy's user name; forms need the session's CSRF token;
//! a cross-site post is refused; the API's own identity is untouched.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use common::{CONFIG, Harness, answer, event};
use reqwest::StatusCode;
use reqwest::redirect::Policy;

fn config(trusted: &str) -> String {
    format!(
        "{CONFIG}\nidentity:\n  inbound:\n    mode: none\n    insecure_allow_anonymous: true\n  console:\n    mode: proxy\n    cookie_secure: false\n    proxy:\n      user_header: X-Forwarded-User\n      trusted_proxies: [{trusted}]\n    roles:\n      \"*\": [runs:read]\n      dave: [runs:read, review:decide, audit:read]\n"
    )
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// GET as `user` (through the "proxy"), with a cookie if any; returns
/// (status, body, the session cookie set, if one was).
async fn get(
    h: &Harness,
    path: &str,
    user: Option<&str>,
    cookie: Option<&str>,
) -> (StatusCode, String, Option<String>) {
    let mut req = browser().get(format!("{}{path}", h.base));
    if let Some(u) = user {
        req = req.header("x-forwarded-user", u);
    }
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let set = cookie_set(&resp, "tg_console");
    (status, resp.text().await.unwrap(), set)
}

/// The `name=value` of the cookie `name` the answer sets, if it sets one.
fn cookie_set(resp: &reqwest::Response, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&prefix))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

fn csrf_of(html: &str) -> String {
    let marker = "<meta name=\"csrf-token\" content=\"";
    let at = html.find(marker).expect("the page names its csrf token");
    let rest = &html[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

async fn post(
    h: &Harness,
    path: &str,
    user: &str,
    cookie: &str,
    form: &[(&str, &str)],
    extra: Option<(&str, &str)>,
) -> (StatusCode, String) {
    let mut req = browser()
        .post(format!("{}{path}", h.base))
        .header("x-forwarded-user", user)
        .header("cookie", cookie)
        .form(form);
    if let Some((k, v)) = extra {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_counts_only_from_a_trusted_proxy() {
    // The gate's peer is 127.0.0.1, which is not the configured proxy.
    let h = Harness::start_with(&config("10.9.9.9")).await;
    let (status, body, cookie) = get(&h, "/ui/now", Some("mallory"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("Sign in through the proxy"));
    assert!(cookie.is_none());
    // The API's own identity is unchanged (here: anonymous, acknowledged).
    let api = h
        .http
        .get(format!("{}/v1/review", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_who_may_approve_and_the_approver_is_audited() {
    let h = Harness::start_with(&config("127.0.0.1")).await;
    h.script_tool(
        "scn-proxy",
        answer("high", 0.95, true, false, false, "payments"),
    );
    let run = h
        .run_generic(&event(
            "legacy-billing",
            "Errors",
            "prod",
            "datadog",
            "scn-proxy",
        ))
        .await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let item = h
        .review()
        .await
        .into_iter()
        .find(|i| i["run_id"] == run_id.as_str())
        .expect("a draft");
    let id = item["id"].as_i64().unwrap();
    let decide = format!("/ui/review/{id}");

    // No header: not signed in.
    let (status, _, _) = get(&h, "/ui/now", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // carol (the "*" role) may look, not decide.
    let (status, html, cookie) = get(&h, "/ui/review", Some("carol"), None).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Signed in as <strong>carol</strong>"),
        "{html}"
    );
    assert!(html.contains("lacks the review:decide scope"), "{html}");
    let carol = cookie.expect("a session cookie");
    let carol_csrf = csrf_of(&html);
    let (st, body) = post(
        &h,
        &decide,
        "carol",
        &carol,
        &[("csrf", &carol_csrf), ("verdict", "approve")],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "carol lacks review:decide");
    assert!(body.contains("review:decide scope"), "{body}");

    // dave may decide: without the token, with carol's session, or cross-site: refused.
    let (status, html, cookie) = get(&h, "/ui/review", Some("dave"), None).await;
    assert_eq!(status, StatusCode::OK);
    let dave = cookie.expect("a session cookie");
    let dave_csrf = csrf_of(&html);
    assert_ne!(dave_csrf, carol_csrf, "one token per session");
    for (cookie, token, extra, why) in [
        (dave.as_str(), "", None, "no token"),
        (
            dave.as_str(),
            carol_csrf.as_str(),
            None,
            "another session's token",
        ),
        (
            carol.as_str(),
            carol_csrf.as_str(),
            None,
            "carol's session with dave's header",
        ),
        (
            dave.as_str(),
            dave_csrf.as_str(),
            Some(("sec-fetch-site", "cross-site")),
            "a cross-site post",
        ),
    ] {
        let (st, body) = post(
            &h,
            &decide,
            "dave",
            cookie,
            &[("csrf", token), ("verdict", "approve")],
            extra,
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{why}");
        assert!(body.contains("Form expired"), "{why}: {body}");
    }
    let still = h.get_run(&run_id).await;
    assert!(
        still.to_string().contains("\"review_state\":\"open\""),
        "nothing was decided by a refused post: {still}"
    );

    // The real thing.
    let (st, _) = post(
        &h,
        &decide,
        "dave",
        &dave,
        &[("csrf", &dave_csrf), ("verdict", "approve")],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    let done = h.wait_completed(&run_id).await;
    assert!(
        done.to_string().contains("\"review_state\":\"approved\""),
        "{done}"
    );
    let audit = h.get_json(&format!("/v1/audit?run_id={run_id}")).await;
    let chain = audit["chain"].to_string();
    assert!(chain.contains("\"actor\":\"dave\""), "{chain}");
    assert!(chain.contains("\"verdict\":\"approved\""), "{chain}");
}

/// Issue 20 item 4: approving a shadow service's item in the console records
/// the verdict, sends nothing, and the console says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_says_a_shadow_approval_sends_nothing() {
    let h = Harness::start_with(&common::ungrouped(&config("127.0.0.1"))).await;
    let (_, id) = h.shadow_page_draft("scn-shadow-ui").await;
    let (_, html, cookie) = get(&h, "/ui/review", Some("dave"), None).await;
    let dave = cookie.expect("a session cookie");
    let resp = browser()
        .post(format!("{}/ui/review/{id}", h.base))
        .header("x-forwarded-user", "dave")
        .header("cookie", &dave)
        .form(&[("csrf", csrf_of(&html).as_str()), ("verdict", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let flash = cookie_set(&resp, "tg_flash").expect("a flash message");
    let (status, page, _) = get(
        &h,
        "/ui/review",
        Some("dave"),
        Some(&format!("{dave}; {flash}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("nothing is sent to any incident tool"),
        "{page}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(h.received(tg_sandbox::Target::Pagerduty), 0);
}
