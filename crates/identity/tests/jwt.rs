//! The attack table for inbound tokens, against the pure verifier: every case
//! is refused with its own reason, and the good tokens of every allowed
//! algorithm are accepted. (The same table runs over HTTP in crates/server.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use triage_gate_identity::jwt::{self, AuthError, JwtPolicy, KeySet, Scope};

const NOW: i64 = 1_764_000_000;
const ISS: &str = "https://idp.example/oauth2/default";
const AUD: &str = "triage-gate";

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn jwk(name: &str) -> Value {
    serde_json::from_slice(&key_file(&format!("{name}.jwk.json"))).unwrap()
}

fn keyset(names: &[&str]) -> KeySet {
    let keys: Vec<Value> = names.iter().map(|n| jwk(n)).collect();
    KeySet::from_jwks(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
}

fn policy() -> JwtPolicy {
    JwtPolicy {
        issuer: ISS.to_owned(),
        audiences: vec![AUD.to_owned()],
        algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
        leeway_secs: 30,
        required_typ: None,
        max_lifetime_secs: jwt::MAX_LIFETIME_SECS_DEFAULT,
    }
}

fn claims() -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "alertmanager-prod", "client_id": "0oa1alertmanager",
        "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 300,
        "scope": "events:write runs:read",
    })
}

fn sign(alg: Algorithm, key_name: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = key_file(&format!("{key_name}.pem"));
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

fn good() -> String {
    sign(Algorithm::RS256, "rsa1", Some("rsa1"), &claims())
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A token with a hand-made header, signed by `sign_with` over header.payload.
fn with_header(header: Value, payload: &Value, sig: &str) -> String {
    format!("{}.{}.{sig}", b64(&header), b64(payload))
}

fn check(token: &str) -> Result<jwt::Caller, AuthError> {
    jwt::verify(token, &keyset(&["rsa1", "ec1", "ed1"]), &policy(), NOW)
}

#[test]
fn good_tokens_of_every_allowed_algorithm_are_accepted() {
    for (alg, key) in [
        (Algorithm::RS256, "rsa1"),
        (Algorithm::ES256, "ec1"),
        (Algorithm::EdDSA, "ed1"),
    ] {
        let caller = check(&sign(alg, key, Some(key), &claims())).unwrap();
        assert_eq!(caller.sub, "alertmanager-prod");
        assert_eq!(caller.client_id.as_deref(), Some("0oa1alertmanager"));
        assert!(caller.has(Scope::EventsWrite));
        assert!(!caller.has(Scope::ReviewDecide));
    }
}

#[test]
fn okta_scp_array_and_an_audience_list_are_understood() {
    let mut c = claims();
    c["scp"] = json!(["review:decide"]);
    c["aud"] = json!(["other", AUD]);
    c.as_object_mut().unwrap().remove("scope");
    c.as_object_mut().unwrap().remove("client_id");
    c["cid"] = json!("0oaokta");
    let caller = check(&sign(Algorithm::RS256, "rsa1", Some("rsa1"), &c)).unwrap();
    assert!(caller.has(Scope::ReviewDecide));
    assert_eq!(caller.client_id.as_deref(), Some("0oaokta"));
}

#[test]
fn admin_holds_every_scope() {
    let mut c = claims();
    c["scope"] = json!("admin");
    let caller = check(&sign(Algorithm::RS256, "rsa1", Some("rsa1"), &c)).unwrap();
    for s in [
        Scope::EventsWrite,
        Scope::ReviewDecide,
        Scope::RunsRead,
        Scope::AuditRead,
    ] {
        assert!(caller.require(s).is_ok());
    }
}

/// One row of the attack table: name, token, expected reason code.
fn attacks() -> Vec<(&'static str, String, &'static str)> {
    let token = good();
    let parts: Vec<&str> = token.split('.').collect();
    let mut rows: Vec<(&'static str, String, &'static str)> = Vec::new();

    rows.push(("no token", String::new(), "missing_token"));
    rows.push((
        "alg none",
        with_header(json!({"alg": "none", "typ": "JWT"}), &claims(), ""),
        "algorithm_not_allowed",
    ));
    // The classic confusion: HMAC keyed with the RSA public key a verifier might hold.
    let hs = jsonwebtoken::encode(
        &Header {
            kid: Some("rsa1".to_owned()),
            ..Header::new(Algorithm::HS256)
        },
        &claims(),
        &EncodingKey::from_secret(&key_file("rsa1.pub.pem")),
    )
    .unwrap();
    rows.push(("HS256 with the RSA public key", hs, "algorithm_not_allowed"));
    let mut c = claims();
    c["iss"] = json!("https://evil.example/");
    rows.push((
        "wrong issuer",
        sign(Algorithm::RS256, "rsa1", Some("rsa1"), &c),
        "wrong_issuer",
    ));
    let mut c = claims();
    c["aud"] = json!("some-other-api");
    rows.push((
        "wrong audience",
        sign(Algorithm::RS256, "rsa1", Some("rsa1"), &c),
        "wrong_audience",
    ));
    let mut c = claims();
    c["exp"] = json!(NOW - 31);
    rows.push((
        "expired beyond leeway",
        sign(Algorithm::RS256, "rsa1", Some("rsa1"), &c),
        "expired",
    ));
    let mut c = claims();
    c["nbf"] = json!(NOW + 31);
    rows.push((
        "not yet valid",
        sign(Algorithm::RS256, "rsa1", Some("rsa1"), &c),
        "not_yet_valid",
    ));
    let mut c = claims();
    c["iat"] = json!(NOW + 3600);
    rows.push((
        "issued in the future",
        sign(Algorithm::RS256, "rsa1", Some("rsa1"), &c),
        "issued_in_future",
    ));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    rows.push((
        "no exp",
        sign(Algorithm::RS256, "rsa1", Some("rsa1"), &c),
        "invalid_claim",
    ));
    rows.push((
        "unknown kid",
        sign(Algorithm::RS256, "rsa1", Some("rsa-unknown"), &claims()),
        "unknown_key",
    ));
    let mut c = claims();
    c["scope"] = json!("admin");
    rows.push((
        "tampered payload",
        format!("{}.{}.{}", parts[0], b64(&c), parts[2]),
        "bad_signature",
    ));
    let mut sig = parts[2].to_owned();
    let last = if sig.ends_with('A') { 'B' } else { 'A' };
    sig.pop();
    sig.push(last);
    rows.push((
        "tampered signature",
        format!("{}.{}.{sig}", parts[0], parts[1]),
        "bad_signature",
    ));
    rows.push((
        "another tenant's key claiming our kid",
        sign(Algorithm::RS256, "attacker", Some("rsa1"), &claims()),
        "bad_signature",
    ));
    // jku/x5u/jwk are never followed: the attacker's kid is simply unknown here.
    for (name, extra) in [
        (
            "jku injection",
            json!({"jku": "https://evil.example/jwks.json"}),
        ),
        (
            "x5u injection",
            json!({"x5u": "https://evil.example/cert.pem"}),
        ),
        ("embedded jwk", json!({"jwk": jwk("attacker")})),
    ] {
        let mut header = json!({"alg": "RS256", "typ": "JWT", "kid": "attacker"});
        for (k, v) in extra.as_object().unwrap() {
            header[k] = v.clone();
        }
        let signing_input = format!("{}.{}", b64(&header), b64(&claims()));
        let key = EncodingKey::from_rsa_pem(&key_file("attacker.pem")).unwrap();
        let sig =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::RS256).unwrap();
        rows.push((name, format!("{signing_input}.{sig}"), "unknown_key"));
    }
    rows.push((
        "oversized token",
        format!(
            "{}.{}.{}",
            parts[0],
            "A".repeat(jwt::TOKEN_BYTES_MAX),
            parts[2]
        ),
        "token_too_large",
    ));
    rows.push((
        "malformed base64",
        format!("{}.%%%.{}", parts[0], parts[2]),
        "malformed_token",
    ));
    rows.push((
        "two parts",
        format!("{}.{}", parts[0], parts[1]),
        "malformed_token",
    ));
    rows.push((
        "RS256 header against the EC key",
        sign(Algorithm::RS256, "rsa1", Some("ec1"), &claims()),
        "key_algorithm_mismatch",
    ));
    rows.push((
        "RS384 not in the allow-list",
        sign(Algorithm::RS384, "rsa1", Some("rsa1"), &claims()),
        "algorithm_not_allowed",
    ));
    rows
}

#[test]
fn every_attack_is_refused_with_its_reason() {
    let rows = attacks();
    assert!(rows.len() >= 15, "the attack table has {} rows", rows.len());
    for (name, token, code) in rows {
        match check(&token) {
            Ok(c) => panic!("{name}: accepted as {c:?}"),
            Err(e) => assert_eq!(e.code(), code, "{name}: {e}"),
        }
    }
}

#[test]
fn a_missing_scope_is_forbidden_not_unauthorized() {
    let caller = check(&good()).unwrap();
    let err = caller.require(Scope::ReviewDecide).unwrap_err();
    assert_eq!(err.code(), "insufficient_scope");
    assert_eq!(err.status(), 403);
}

#[test]
fn leeway_is_honoured_at_its_edges() {
    let mut c = claims();
    c["exp"] = json!(NOW - 29);
    assert!(check(&sign(Algorithm::RS256, "rsa1", Some("rsa1"), &c)).is_ok());
    c["exp"] = json!(NOW - 30);
    assert_eq!(
        check(&sign(Algorithm::RS256, "rsa1", Some("rsa1"), &c)).unwrap_err(),
        AuthError::Expired
    );
}

#[test]
fn required_typ_refuses_plain_jwts() {
    let mut p = policy();
    p.required_typ = Some("at+jwt".to_owned());
    let ks = keyset(&["rsa1"]);
    assert_eq!(
        jwt::verify(&good(), &ks, &p, NOW).unwrap_err().code(),
        "wrong_token_type"
    );
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa1".to_owned());
    h.typ = Some("at+jwt".to_owned());
    let key = EncodingKey::from_rsa_pem(&key_file("rsa1.pem")).unwrap();
    let t = jsonwebtoken::encode(&h, &claims(), &key).unwrap();
    assert!(jwt::verify(&t, &ks, &p, NOW).is_ok());
}

#[test]
fn symmetric_and_encryption_keys_are_never_taken_from_a_key_set() {
    let doc = json!({"keys": [
        {"kty": "oct", "kid": "h", "k": URL_SAFE_NO_PAD.encode(b"secret")},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": jwk("rsa1")["n"], "e": "AQAB"},
        {"kty": "RSA", "kid": "bad", "n": "!!", "e": "AQAB"},
    ]});
    assert!(KeySet::from_jwks(doc.to_string().as_bytes()).is_err());
    assert!(KeySet::from_jwks(b"[]").is_err());
}

#[test]
fn hmac_can_never_be_configured() {
    let mut p = policy();
    p.algorithms.push(Algorithm::HS256);
    assert!(p.validate().is_err());
}

/// Issue 21 item 8: a token's lifetime is bounded (`exp - iat`, or
/// `exp - now` without `iat`), so a token valid until 9999 is refused.
#[test]
fn tokens_without_a_lifetime_bound_are_refused() {
    let day = i64::try_from(jwt::MAX_LIFETIME_SECS_DEFAULT).unwrap();
    let cases = [
        (
            "exp in the year 9999",
            json!(253_402_300_799_i64),
            Some(NOW - 10),
            false,
        ),
        (
            "two days from iat",
            json!(NOW - 10 + 2 * day),
            Some(NOW - 10),
            false,
        ),
        ("no iat, a year left", json!(NOW + 365 * day), None, false),
        (
            "a day from iat",
            json!(NOW - 10 + day),
            Some(NOW - 10),
            true,
        ),
        ("no iat, an hour left", json!(NOW + 3_600), None, true),
    ];
    for (case, exp, iat, ok) in cases {
        let mut c = claims();
        c["exp"] = exp;
        match iat {
            Some(iat) => c["iat"] = json!(iat),
            None => {
                c.as_object_mut().unwrap().remove("iat");
            }
        }
        let got = check(&sign(Algorithm::RS256, "rsa1", Some("rsa1"), &c));
        if ok {
            assert!(got.is_ok(), "{case}: {got:?}");
        } else {
            assert_eq!(got.unwrap_err(), AuthError::LifetimeTooLong, "{case}");
        }
    }
    assert_eq!(AuthError::LifetimeTooLong.code(), "token_lifetime_too_long");
}
