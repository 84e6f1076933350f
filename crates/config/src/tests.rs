use super::*;

#[test]
fn empty_file_is_the_built_in_defaults() {
    let c = Config::from_yaml("", "empty.yaml").unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:8700");
    assert_eq!(c.classifier.provider, ProviderKind::Rules);
    assert_eq!(c.storm.dedup_window_secs, 600);
}

#[test]
fn unknown_field_is_rejected_with_file_and_line() {
    let text = "server:\n  listen: 127.0.0.1:9000\n  lisen: oops\n";
    let err = Config::from_yaml(text, "gate.yaml").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("gate.yaml:3:"), "{msg}");
    assert!(msg.contains("lisen"), "{msg}");
}

#[test]
fn every_semantic_error_is_reported_at_once_with_its_line() {
    let text = "\
server:
  listen: not-an-address
storm:
  dedup_window_secs: 0
normalize:
  redact_patterns:
    - 'ok'
    - '(unclosed'
";
    let err = Config::from_yaml(text, "gate.yaml").unwrap_err();
    let lines: Vec<String> = err.0.iter().map(|i| i.to_string()).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("gate.yaml:2: server.listen:")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("gate.yaml:4: storm.dedup_window_secs:")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("gate.yaml:8: normalize.redact_patterns[1]:")),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
}

#[test]
fn secret_refs_parse_and_never_print_values() {
    let text = "\
catalog:
  teams:
    payments: {}
actions:
  pagerduty:
    routing_keys:
      payments: { file: /run/secrets/pd-payments }
  servicenow:
    base_url: https://example.service-now.com
    token: { env: SN_TOKEN }
";
    let c = Config::from_yaml(text, "gate.yaml").unwrap();
    let sn = c.actions.servicenow.as_ref().unwrap();
    let token = sn.token.as_ref().unwrap();
    assert_eq!(token, &SecretRef::Env("SN_TOKEN".into()));
    let secrets = MapSecrets::default().with(token, "s3cr3t-value");
    let s = secrets.read(token).unwrap();
    assert_eq!(s.expose(), "s3cr3t-value");
    assert_eq!(format!("{s:?}"), "[redacted]");
    let missing = secrets.read(&SecretRef::Env("OTHER".into())).unwrap_err();
    assert_eq!(missing.to_string(), "secret env:OTHER is not set");
}

#[test]
fn routing_key_for_unknown_team_is_located() {
    let text = "\
actions:
  pagerduty:
    routing_keys:
      ghosts: { env: PD_GHOSTS }
";
    let err = Config::from_yaml(text, "gate.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "gate.yaml:4: actions.pagerduty.routing_keys.ghosts: team \"ghosts\" is not in catalog.teams"
    );
}

// ---- actions: pagerduty region, servicenow resolve, bridge signed webhooks (helper A)

#[test]
fn pagerduty_region_servicenow_resolve_and_signed_webhooks_parse() {
    let text = "\
actions:
  servicenow:
    base_url: https://acme.service-now.com
    token: { env: SN_TOKEN }
    resolve: { close_code: Resolved by Caller }
  pagerduty:
    region: eu
    routing_keys: {}
  bridge:
    webhooks:
      - name: mim-bot
        url: https://bot.example.com/triage-gate
        secret: { file: /run/secrets/mim-bot }
";
    let c = Config::from_yaml(text, "gate.yaml").unwrap();
    let pd = c.actions.pagerduty.unwrap();
    assert_eq!(pd.region, PagerDutyRegionConfig::Eu);
    assert_eq!(pd.base_url, None);
    let sn = c.actions.servicenow.unwrap();
    assert_eq!(sn.resolve.close_code, "Resolved by Caller");
    let bridge = c.actions.bridge.unwrap();
    assert!(bridge.webhook_url.is_none());
    assert_eq!(bridge.webhooks[0].name, "mim-bot");
    assert_eq!(
        bridge.webhooks[0].secret,
        SecretRef::File("/run/secrets/mim-bot".into())
    );

    // Defaults: region us, the documented close code.
    let text = "\
actions:
  servicenow:
    base_url: https://acme.service-now.com
    token: { env: SN_TOKEN }
  pagerduty:
    routing_keys: {}
";
    let c = Config::from_yaml(text, "gate.yaml").unwrap();
    assert_eq!(
        c.actions.pagerduty.unwrap().region,
        PagerDutyRegionConfig::Us
    );
    assert_eq!(
        c.actions.servicenow.unwrap().resolve.close_code,
        "Solved (Permanently)"
    );
}

#[test]
fn bridge_and_region_problems_are_located() {
    let text = "\
actions:
  pagerduty:
    region: ap
    routing_keys: {}
";
    let err = Config::from_yaml(text, "gate.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("region") && err.contains("ap"), "{err}");

    let text = "\
actions:
  bridge:
    format: slack
    webhooks:
      - name: bot
        url: ftp://bot.example.com
        secret: { env: A }
      - name: bot
        url: https://bot.example.com
        secret: { env: B }
      - name: 'has space'
        url: https://bot.example.com
        secret: { env: C }
";
    let err = Config::from_yaml(text, "gate.yaml").unwrap_err();
    let lines: Vec<String> = err.0.iter().map(|i| i.to_string()).collect();
    for want in [
        "actions.bridge.webhooks[0].url",
        "actions.bridge.webhooks[1].name",
        "actions.bridge.webhooks[2].name",
    ] {
        assert!(lines.iter().any(|l| l.contains(want)), "{want}: {lines:?}");
    }

    let text = "actions:\n  bridge:\n    format: teams\n";
    let err = Config::from_yaml(text, "gate.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gate.yaml:2: actions.bridge: needs a webhook_url"),
        "{err}"
    );
}

#[test]
fn pagerduty_rest_parses_and_is_checked() {
    let text = "\
actions:
  pagerduty:
    api: rest
    region: eu
    rest:
      from: mi-bot@example.com
      service_ids: {}
      oauth:
        client_id: 0a1b2c
        client_secret: { env: PD_CLIENT_SECRET }
        subdomain: acme
";
    let c = Config::from_yaml(text, "gate.yaml").unwrap();
    let pd = c.actions.pagerduty.unwrap();
    assert_eq!(pd.api, PagerDutyApiConfig::Rest);
    let rest = pd.rest.unwrap();
    assert_eq!(
        rest.oauth.token_url,
        "https://identity.pagerduty.com/oauth/token"
    );
    assert_eq!(rest.oauth.subdomain, "acme");

    let text = "\
actions:
  pagerduty:
    api: rest
";
    let err = Config::from_yaml(text, "gate.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("actions.pagerduty.api: rest needs"), "{err}");

    let text = "\
actions:
  pagerduty:
    api: rest
    rest:
      from: not-an-email
      service_ids: { nobody: PXXXXXX }
      oauth:
        token_url: identity.pagerduty.com
        client_id: ''
        client_secret: { env: S }
        subdomain: 'a b'
";
    let err = Config::from_yaml(text, "gate.yaml").unwrap_err();
    let lines: Vec<String> = err.0.iter().map(|i| i.to_string()).collect();
    for want in [
        "actions.pagerduty.rest.from",
        "actions.pagerduty.rest.service_ids.nobody",
        "actions.pagerduty.rest.oauth.token_url",
        "actions.pagerduty.rest.oauth.client_id",
        "actions.pagerduty.rest.oauth.subdomain",
    ] {
        assert!(lines.iter().any(|l| l.contains(want)), "{want}: {lines:?}");
    }
}

#[test]
fn servicenow_oauth_is_an_alternative_to_the_static_token() {
    let base = "\
catalog:
  teams:
    payments: {}
actions:
  servicenow:
    base_url: https://example.service-now.com/
";
    let oauth = format!(
        "{base}    auth:\n      oauth:\n        client_id: tg-client\n        client_secret: {{ file: /run/secrets/sn-oauth }}\n        scope: useraccount\n"
    );
    let c = Config::from_yaml(&oauth, "gate.yaml").unwrap();
    let sn = c.actions.servicenow.as_ref().unwrap();
    let o = &sn.auth.as_ref().unwrap().oauth;
    assert!(sn.token.is_none());
    assert_eq!(
        o.token_url(&sn.base_url),
        "https://example.service-now.com/oauth_token.do"
    );
    assert_eq!(o.client_secret_method, crate::ClientSecretMethod::Post);
    assert_eq!(o.private_key_alg, "RS256");

    let neither = Config::from_yaml(base, "gate.yaml")
        .unwrap_err()
        .to_string();
    assert!(neither.contains("actions.servicenow.token"), "{neither}");

    let both = format!("{oauth}    token: {{ env: SN_TOKEN }}\n");
    let err = Config::from_yaml(&both, "gate.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not both"), "{err}");

    let two_creds = format!("{oauth}        private_key: {{ file: /run/secrets/sn-key.pem }}\n");
    let err = Config::from_yaml(&two_creds, "gate.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exactly one of client_secret or private_key"),
        "{err}"
    );

    let hmac = format!("{oauth}        private_key_alg: HS256\n        timeout_ms: 0\n");
    let err = Config::from_yaml(&hmac, "gate.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("private_key_alg"), "{err}");
    assert!(err.contains("timeout_ms"), "{err}");
}

/// Issue 21 item 4: every URL-taking setting is parsed by `urls::outbound`:
/// the tricky forms `urls::tests` lists are refused at each, located.
#[test]
fn every_url_setting_refuses_user_info_and_non_http_urls() {
    let settings: &[(&str, &str)] = &[
        (
            "actions.servicenow.base_url",
            "actions:\n  servicenow:\n    base_url: URL\n    token: { env: SN_TOKEN }\n",
        ),
        (
            "actions.servicenow.auth.oauth.token_url",
            "actions:\n  servicenow:\n    base_url: https://acme.service-now.com\n    auth:\n      oauth:\n        client_id: c\n        client_secret: { env: S }\n        token_url: URL\n",
        ),
        (
            "actions.pagerduty.base_url",
            "actions:\n  pagerduty:\n    base_url: URL\n    routing_keys: {}\n",
        ),
        (
            "actions.bridge.webhooks[0].url",
            "actions:\n  bridge:\n    webhooks:\n      - name: mim-bot\n        url: URL\n        secret: { file: /run/secrets/mim-bot }\n",
        ),
        (
            "classifier.openai.base_url",
            "classifier:\n  provider: openai\n  openai:\n    base_url: URL\n    model: m\n",
        ),
        (
            "classifier.bedrock.base_url",
            "classifier:\n  provider: bedrock\n  bedrock:\n    region: eu-west-1\n    model_id: m\n    base_url: URL\n",
        ),
        (
            "audit.sinks[0].url",
            "audit:\n  sinks:\n    - name: splunk\n      type: splunk_hec\n      url: URL\n      token: {env: HEC_TOKEN}\n",
        ),
        (
            "audit.sinks[0].endpoint",
            "audit:\n  sinks:\n    - name: otel\n      type: otlp\n      endpoint: URL\n",
        ),
    ];
    for (path, template) in settings {
        let good = template.replace("URL", "https://host.example.com:8443/x");
        if let Err(e) = Config::from_yaml(&good, "gate.yaml") {
            panic!("{path}: the template is valid with a good URL: {e}");
        }
        for bad in [
            "http://127.0.0.1:1@jwks.example.com/keys",
            "https://user:pass@host.example.com/",
            "https://user@host.example.com/",
            "file:///etc/passwd",
            "ftp://host.example.com/",
            "host.example.com/x",
        ] {
            let err = Config::from_yaml(&template.replace("URL", bad), "gate.yaml")
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(err.contains(path), "{path} = {bad}: {err}");
        }
    }
}
