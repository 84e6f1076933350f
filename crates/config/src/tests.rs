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
    assert_eq!(sn.token, SecretRef::Env("SN_TOKEN".into()));
    let secrets = MapSecrets::default().with(&sn.token, "s3cr3t-value");
    let s = secrets.read(&sn.token).unwrap();
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
