//! Signing deliveries the Standard Webhooks way: `webhook-signature: v1,<base64 HMAC-SHA256>`
//! over `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed with the system's secret.
//!
//! The `webhook-id` (`message_id`) and the envelope's time (`rfc3339`) are made here too.
//!
//! A secret is written `whsec_<base64>` (the prefix is optional), as the reference libraries
//! read it. It lives in the environment variable the manifest names (`secret_env`), never in the
//! manifest, and never reaches a log: `Debug` shows only its length.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

const PREFIX: &str = "whsec_";

/// A webhook signing key, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookSecret({} bytes)", self.0.len())
    }
}

/// Why a secret cannot be used. Never carries the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the system has no `secret_env` for its webhook; Kept never sends unsigned deliveries")]
    NotConfigured,
    #[error("the environment variable `{0}` holding the webhook secret is not set")]
    Missing(String),
    #[error(
        "the environment variable `{0}` does not hold a webhook secret: expected `whsec_` \
         followed by base64"
    )]
    Malformed(String),
}

impl SecretError {
    pub fn code(&self) -> &'static str {
        match self {
            SecretError::NotConfigured => "webhook.secret_not_configured",
            SecretError::Missing(_) => "webhook.secret_missing",
            SecretError::Malformed(_) => "webhook.secret_malformed",
        }
    }
}

impl WebhookSecret {
    /// Reads `whsec_<base64>` (or the bare base64); `var` only names the source in errors.
    pub fn parse(text: &str, var: &str) -> Result<WebhookSecret, SecretError> {
        let text = text.trim();
        let encoded = text.strip_prefix(PREFIX).unwrap_or(text);
        match STANDARD.decode(encoded) {
            Ok(key) if !key.is_empty() => Ok(WebhookSecret(key)),
            _ => Err(SecretError::Malformed(var.to_owned())),
        }
    }

    /// A secret from raw key bytes (tests, generated secrets).
    pub fn from_bytes(key: &[u8]) -> WebhookSecret {
        WebhookSecret(key.to_vec())
    }

    /// The secret as an operator writes it: `whsec_<base64>`.
    pub fn to_whsec(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The `webhook-signature` header value for one attempt.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        // INVARIANT: HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        let mac = Hmac::<Sha256>::new_from_slice(&self.0);
        debug_assert!(mac.is_ok(), "HMAC refused a key of {} bytes", self.0.len());
        let Ok(mut mac) = mac else {
            return String::new();
        };
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-id` of an event's delivery to a system: the same for every attempt and for a
/// retried event, different for every other pair.
pub fn message_id(event_id: &str, system: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"kept.webhook.v1\0");
    hasher.update(event_id.as_bytes());
    hasher.update(b"\0");
    hasher.update(system.as_bytes());
    let hash = hasher.finalize();
    format!(
        "msg_{}",
        hex::encode(hash.as_bytes().get(..16).unwrap_or_default())
    )
}

/// A time as the envelope's `timestamp` writes it (RFC 3339, UTC, milliseconds).
pub fn rfc3339(at: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Where secrets are read from by variable name: the process environment in production, a map
/// in tests.
pub type SecretSource = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Reads secrets from the process environment: the variable itself, or the file its `_FILE`
/// variable names, as for every `KEPT_*` setting.
pub fn environment() -> SecretSource {
    std::sync::Arc::new(|var: &str| variable_or_file(var, |v| std::env::var(v).ok()))
}

/// `var`'s value, or the content of the file `var_FILE` names without its final line end. Both
/// set, or a file that cannot be read, is no secret at all (fail closed: nothing is sent, and
/// the warning at start names the variable).
fn variable_or_file(var: &str, get: impl Fn(&str) -> Option<String>) -> Option<String> {
    match (get(var), get(&format!("{var}_FILE"))) {
        (Some(value), None) => Some(value),
        (None, Some(path)) => std::fs::read_to_string(path)
            .ok()
            .map(|text| text.trim_end_matches(['\n', '\r']).to_owned()),
        _ => None,
    }
}

/// The signing secret of a system's webhook.
pub fn secret_for(
    secret_env: Option<&str>,
    source: &SecretSource,
) -> Result<WebhookSecret, SecretError> {
    let var = secret_env.ok_or(SecretError::NotConfigured)?;
    let text = source(var).ok_or_else(|| SecretError::Missing(var.to_owned()))?;
    WebhookSecret::parse(&text, var)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_may_come_from_the_file_its_file_variable_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        let path = path.to_str().unwrap().to_owned();
        let env = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            move |var: &str| pairs.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
        };
        assert_eq!(
            variable_or_file("KEPT_X", env(&[("KEPT_X_FILE", &path)])).as_deref(),
            Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        );
        assert_eq!(
            variable_or_file("KEPT_X", env(&[("KEPT_X", "whsec_a")])).as_deref(),
            Some("whsec_a")
        );
        assert_eq!(
            variable_or_file(
                "KEPT_X",
                env(&[("KEPT_X", "whsec_a"), ("KEPT_X_FILE", &path)])
            ),
            None,
            "both set: fail closed"
        );
        assert_eq!(
            variable_or_file("KEPT_X", env(&[("KEPT_X_FILE", "/nonexistent/secret")])),
            None
        );
    }

    /// The example of the Standard Webhooks specification and its reference libraries.
    #[test]
    fn signs_the_specification_example() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "X").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // The prefix is optional, as in the reference libraries.
        let bare = WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "X").unwrap();
        assert_eq!(bare, secret);
        assert_eq!(secret.to_whsec(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    }

    #[test]
    fn secrets_never_show_and_errors_name_only_the_variable() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "X").unwrap();
        assert_eq!(format!("{secret:?}"), "WebhookSecret(24 bytes)");
        let source: SecretSource = std::sync::Arc::new(|var: &str| {
            (var == "BAD").then(|| "whsec_!!not base64!!".to_owned())
        });
        let err = secret_for(Some("BAD"), &source).unwrap_err();
        assert_eq!(err.code(), "webhook.secret_malformed");
        assert!(!err.to_string().contains("not base64!!"), "{err}");
        assert_eq!(
            secret_for(Some("UNSET"), &source).unwrap_err(),
            SecretError::Missing("UNSET".into())
        );
        assert_eq!(
            secret_for(None, &source).unwrap_err(),
            SecretError::NotConfigured
        );
    }
}
