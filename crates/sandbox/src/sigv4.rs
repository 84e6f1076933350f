//! AWS Signature Version 4 verification shared by the AWS emulators (Bedrock,
//! CloudWatch Logs): the signature is recomputed with the AWS SDK's own signer
//! (`aws-sigv4`) from the sandbox's known credentials and compared in constant
//! time. Each emulator answers a failure in its own error shape.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::http::{HeaderMap, header};

use crate::SandboxState;

/// How far `x-amz-date` may be from the emulator's clock (as AWS: 5 minutes).
pub const CLOCK_SKEW_SECS_MAX: i64 = 300;

/// Why a signature was refused: the AWS exception name and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SigError {
    pub kind: &'static str,
    pub message: String,
}

impl SigError {
    fn new(kind: &'static str, message: &str) -> Self {
        SigError {
            kind,
            message: message.to_owned(),
        }
    }
}

const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// `Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b, Signature=hex`.
struct AuthHeader {
    access_key_id: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
}

fn parse_authorization(value: &str) -> Option<AuthHeader> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => return None,
        }
    }
    let scope: Vec<&str> = credential?.split('/').collect();
    let [akid, date, region, service, "aws4_request"] = scope.as_slice() else {
        return None;
    };
    Some(AuthHeader {
        access_key_id: (*akid).to_owned(),
        date: (*date).to_owned(),
        region: (*region).to_owned(),
        service: (*service).to_owned(),
        signed_headers: signed?.split(';').map(str::to_owned).collect(),
        signature: signature?.to_owned(),
    })
}

/// Recomputes the request's SigV4 signature for service `signing_name` with
/// the sandbox's AWS credentials (static, or temporary ones STS issued).
pub(crate) fn verify(
    state: &SandboxState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    signing_name: &str,
) -> Result<(), SigError> {
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(SigError::new(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let Some(auth) = parse_authorization(auth) else {
        return Err(SigError::new(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters (AWS4-HMAC-SHA256).",
        ));
    };
    let creds = match state.bedrock_credentials_for(&auth.access_key_id) {
        Ok(c) => c,
        Err(kind @ "ExpiredTokenException") => {
            return Err(SigError::new(
                kind,
                "The security token included in the request is expired",
            ));
        }
        Err(kind) => {
            return Err(SigError::new(
                kind,
                "The security token included in the request is invalid.",
            ));
        }
    };
    let creds = &creds;
    if auth.service != signing_name {
        return Err(SigError::new(
            "InvalidSignatureException",
            &format!("Credential should be scoped to correct service: '{signing_name}'."),
        ));
    }
    if !auth.signed_headers.iter().any(|h| h == "host")
        || !auth.signed_headers.iter().any(|h| h == "x-amz-date")
    {
        return Err(SigError::new(
            "InvalidSignatureException",
            "'Host' and 'X-Amz-Date' must be signed headers.",
        ));
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Ok(at) = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ") else {
        return Err(SigError::new(
            "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        ));
    };
    let at = at.and_utc();
    if at.format("%Y%m%d").to_string() != auth.date {
        return Err(SigError::new(
            "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.",
        ));
    }
    let skew = (chrono::Utc::now() - at).num_seconds().abs();
    if skew > CLOCK_SKEW_SECS_MAX {
        return Err(SigError::new(
            "InvalidSignatureException",
            &format!(
                "Signature expired: {amz_date} is now earlier or later than the 5 minute window."
            ),
        ));
    }
    let token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok());
    if token != creds.session_token.as_deref() {
        return Err(SigError::new(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return Err(SigError::new(
            "InvalidSignatureException",
            SIGNATURE_MISMATCH,
        ));
    };
    // Only the headers the client said it signed, minus those the signer adds itself.
    let mut signed: Vec<(String, String)> = Vec::new();
    for name in &auth.signed_headers {
        if matches!(name.as_str(), "x-amz-date" | "x-amz-security-token") {
            continue;
        }
        let values: Vec<&str> = headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            return Err(SigError::new(
                "InvalidSignatureException",
                SIGNATURE_MISMATCH,
            ));
        }
        signed.push((name.clone(), values.join(",")));
    }
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("http://{host}{path_and_query}");
    let identity: Identity = Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        creds.session_token.clone(),
        None,
        "sandbox",
    )
    .into();
    let time: SystemTime = at.into();
    let computed = v4::SigningParams::builder()
        .identity(&identity)
        .region(&auth.region)
        .name(signing_name)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .ok()
        .and_then(|params| {
            let params = params.into();
            let request = SignableRequest::new(
                "POST",
                url.as_str(),
                signed.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                SignableBody::Bytes(body),
            )
            .ok()?;
            let out = sign(request, &params).ok()?;
            Some(out.signature().to_owned())
        });
    match computed {
        Some(sig) if constant_time_eq(sig.as_bytes(), auth.signature.as_bytes()) => Ok(()),
        _ => Err(SigError::new(
            "InvalidSignatureException",
            SIGNATURE_MISMATCH,
        )),
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn authorization_header_parses() {
        let a = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=abc",
        )
        .unwrap();
        assert_eq!(a.access_key_id, "AKID");
        assert_eq!(a.region, "us-east-1");
        assert_eq!(a.signed_headers, ["content-type", "host", "x-amz-date"]);
        assert_eq!(a.signature, "abc");
        assert!(parse_authorization("Bearer x").is_none());
        assert!(parse_authorization("AWS4-HMAC-SHA256 Credential=A/B/C, Signature=x").is_none());
    }
}
