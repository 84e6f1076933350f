//! Signed checkpoints: an Ed25519 signature over the chain's head at a point,
//! so an auditor holding only the public key can prove that everything up to
//! that record is what the gate wrote (the head's hash covers every record
//! before it). Pure: signing is deterministic, keys come in as PEM text.

use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use tg_model::{CheckpointStep, Sha256Hex, checkpoint_message, sha256_hex};

/// The only algorithm checkpoints use.
pub const CHECKPOINT_ALG: &str = "ed25519";

/// The key id of a public key: the first 16 hex digits of SHA-256 over its 32 raw bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    sha256_hex(key.as_bytes())
        .as_str()
        .chars()
        .take(16)
        .collect()
}

/// Reads an Ed25519 private key from PKCS#8 PEM (`openssl genpkey -algorithm
/// ed25519`). The error never quotes the key.
pub fn signing_key_from_pem(pem: &str) -> Result<SigningKey, String> {
    SigningKey::from_pkcs8_pem(pem)
        .map_err(|_| "not an Ed25519 private key in PKCS#8 PEM (BEGIN PRIVATE KEY)".to_owned())
}

/// Reads an Ed25519 public key from SPKI PEM (`openssl pkey -pubout`).
pub fn verifying_key_from_pem(pem: &str) -> Result<VerifyingKey, String> {
    VerifyingKey::from_public_key_pem(pem)
        .map_err(|e| format!("not an Ed25519 public key in SPKI PEM (BEGIN PUBLIC KEY): {e}"))
}

/// Signs the chain head `(upto_seq, upto_hash)` as of `at`.
pub fn sign_checkpoint(
    key: &SigningKey,
    upto_seq: u64,
    upto_hash: &Sha256Hex,
    at: &DateTime<Utc>,
) -> CheckpointStep {
    let msg = checkpoint_message(upto_seq, upto_hash, at);
    let sig = key.sign(msg.as_bytes());
    CheckpointStep {
        upto_seq,
        upto_hash: upto_hash.clone(),
        key_id: key_id(&key.verifying_key()),
        alg: CHECKPOINT_ALG.to_owned(),
        signature: hex::encode(sig.to_bytes()),
    }
}

/// Checks a checkpoint's signature with `key`; the error says why it fails.
pub fn verify_checkpoint(
    key: &VerifyingKey,
    cp: &CheckpointStep,
    at: &DateTime<Utc>,
) -> Result<(), String> {
    if cp.alg != CHECKPOINT_ALG {
        return Err(format!("algorithm {:?} is not ed25519", cp.alg));
    }
    let expected_id = key_id(key);
    if cp.key_id != expected_id {
        return Err(format!(
            "signed with another key (key_id {}, the given public key is {expected_id})",
            cp.key_id
        ));
    }
    let bytes: [u8; 64] = hex::decode(&cp.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "signature is not 64 bytes of hex".to_owned())?;
    let msg = checkpoint_message(cp.upto_seq, &cp.upto_hash, at);
    key.verify(msg.as_bytes(), &Signature::from_bytes(&bytes))
        .map_err(|_| "signature does not verify with the given public key".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_785_578_400, 0).unwrap_or_default()
    }

    #[test]
    fn a_signed_checkpoint_verifies_with_its_public_key_only() {
        let k = key(7);
        let h = sha256_hex(b"head");
        let cp = sign_checkpoint(&k, 42, &h, &at());
        assert_eq!(verify_checkpoint(&k.verifying_key(), &cp, &at()), Ok(()));
        let other = key(8).verifying_key();
        let err = verify_checkpoint(&other, &cp, &at())
            .err()
            .unwrap_or_default();
        assert!(err.contains("another key"), "{err}");
    }

    #[test]
    fn any_change_to_what_was_signed_fails() {
        let k = key(7);
        let h = sha256_hex(b"head");
        let cp = sign_checkpoint(&k, 42, &h, &at());
        let vk = k.verifying_key();
        let mut seq = cp.clone();
        seq.upto_seq = 41;
        assert!(verify_checkpoint(&vk, &seq, &at()).is_err());
        let mut hash = cp.clone();
        hash.upto_hash = sha256_hex(b"other");
        assert!(verify_checkpoint(&vk, &hash, &at()).is_err());
        let later = at() + chrono::Duration::seconds(1);
        assert!(verify_checkpoint(&vk, &cp, &later).is_err());
        // Another key's signature under this key's id: the id matches, the signature does not.
        let forged = CheckpointStep {
            key_id: key_id(&vk),
            ..sign_checkpoint(&key(9), 42, &h, &at())
        };
        let err = verify_checkpoint(&vk, &forged, &at())
            .err()
            .unwrap_or_default();
        assert!(err.contains("does not verify"), "{err}");
    }

    #[test]
    fn keys_round_trip_through_pem_and_bad_pem_is_a_clear_error() {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
        let k = key(3);
        let pem = k
            .to_pkcs8_pem(LineEnding::LF)
            .map(|p| p.to_string())
            .unwrap_or_default();
        let back = signing_key_from_pem(&pem).map(|k| k.to_bytes());
        assert_eq!(back, Ok(k.to_bytes()));
        let pub_pem = k
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default();
        assert_eq!(verifying_key_from_pem(&pub_pem), Ok(k.verifying_key()));
        let err =
            signing_key_from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .err()
                .unwrap_or_default();
        assert!(!err.contains("AAAA"), "the error quotes the key: {err}");
    }
}
