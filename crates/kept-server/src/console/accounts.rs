//! Operator accounts: passwords hashed with argon2id (RFC 9106, the `argon2` crate's default
//! parameters), a second factor by TOTP (RFC 6238: SHA-1, six digits, 30-second steps, one
//! step of clock skew either way), and the sign-in check that answers the same for an unknown
//! address, a wrong password and a wrong code. A code's time step is used once: the store
//! refuses a step at or before the last one used, so a code seen once cannot sign in again.

use crate::http::error::ApiError;
use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use kept_core::UnixMillis;
use kept_store::operators::{NewOperator, Operator, OperatorRole};
use kept_store::{Store, StoreError};
use rand::RngCore;
use std::sync::OnceLock;
use totp_rs::{Algorithm, TOTP};

/// The shortest password an account may have.
pub const MIN_PASSWORD: usize = 12;
/// The longest password read (argon2 takes any length; a megabyte of it is only a cost).
pub const MAX_PASSWORD: usize = 1024;
/// A TOTP step, in seconds.
const STEP_SECS: i64 = 30;
/// The issuer an authenticator app shows beside the account.
const ISSUER: &str = "Kept";

/// Why an account cannot be created as asked. Each names its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("`email` is not an email address")]
    Email,
    #[error("`password` must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")]
    Password,
    #[error("an operator with this email already exists")]
    Taken,
}

impl AccountError {
    pub fn code(&self) -> &'static str {
        match self {
            AccountError::Email => "operator.email",
            AccountError::Password => "operator.password",
            AccountError::Taken => "operator.exists",
        }
    }
}

/// A new account and what its owner needs once: the TOTP secret for their authenticator app.
#[derive(Debug, Clone)]
pub struct Created {
    pub id: u64,
    pub email: String,
    pub role: OperatorRole,
    /// The secret in base32, as authenticator apps take it typed in.
    pub totp_secret: String,
    /// The `otpauth://` URL authenticator apps take as a QR code.
    pub otpauth_url: String,
}

/// Creates an operator: the address normalised, the password hashed (off the async workers),
/// a fresh TOTP secret.
pub async fn create(
    store: &dyn Store,
    email: &str,
    role: OperatorRole,
    password: &str,
    now: UnixMillis,
) -> Result<Result<Created, AccountError>, ApiError> {
    let Ok(email) = kept_core::identity::normalize_email(email) else {
        return Ok(Err(AccountError::Email));
    };
    let length = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&length) {
        return Ok(Err(AccountError::Password));
    }
    let password_hash = hash_password(password.to_owned()).await?;
    let mut secret = vec![0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let totp = totp(&secret, &email)?;
    let created = store
        .create_operator(NewOperator {
            email: email.clone(),
            role,
            password_hash,
            totp_secret: secret,
            created_at: now,
        })
        .await;
    match created {
        Ok(id) => Ok(Ok(Created {
            id,
            email,
            role,
            totp_secret: totp.get_secret_base32(),
            otpauth_url: totp.get_url(),
        })),
        Err(StoreError::Conflict { .. }) => Ok(Err(AccountError::Taken)),
        Err(e) => Err(e.into()),
    }
}

/// A password of 20 characters from 32 letters and digits (100 bits), for an account made
/// without one (the CLI's, the demo's).
pub fn generated_password() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz23456789A";
    let mut raw = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    raw.iter()
        .filter_map(|b| ALPHABET.get(usize::from(*b) % ALPHABET.len()))
        .map(|b| char::from(*b))
        .collect()
}

/// Hashes `password` with argon2id and a fresh salt, off the async workers.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(format!("hashing a password: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the password hasher stopped: {e}")))?
}

/// Whether `password` matches `hash` (an argon2 PHC string), off the async workers. A hash
/// that does not parse matches nothing.
pub async fn password_matches(hash: String, password: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the password checker stopped: {e}")))
}

/// A hash no password is checked against for real: an unknown address costs the same time as
/// a known one, so the answer's timing does not tell them apart.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        let mut noise = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut noise);
        Argon2::default()
            .hash_password(&noise, &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

fn totp(secret: &[u8], email: &str) -> Result<TOTP, ApiError> {
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        STEP_SECS as u64,
        secret.to_vec(),
        Some(ISSUER.to_owned()),
        email.to_owned(),
    )
    .map_err(|e| ApiError::Internal(format!("the TOTP secret: {e}")))
}

/// The TOTP time step `code` is valid for at `now` (one step either way for clock skew), if
/// any. Compared in constant time.
pub fn code_step(secret: &[u8], code: &str, now: UnixMillis) -> Option<i64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let totp = TOTP::new_unchecked(
        Algorithm::SHA1,
        6,
        1,
        STEP_SECS as u64,
        secret.to_vec(),
        None,
        String::new(),
    );
    let current = now.div_euclid(1000).div_euclid(STEP_SECS);
    let mut found = None;
    for step in [current - 1, current, current + 1] {
        let Ok(at) = u64::try_from(step * STEP_SECS) else {
            continue;
        };
        let expected = totp.generate(at);
        let same = expected
            .bytes()
            .zip(code.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if same && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// The code an authenticator shows for `secret` at `now` (tests and the demo's tour).
pub fn code_at(secret: &[u8], now: UnixMillis) -> String {
    let totp = TOTP::new_unchecked(
        Algorithm::SHA1,
        6,
        1,
        STEP_SECS as u64,
        secret.to_vec(),
        None,
        String::new(),
    );
    totp.generate(u64::try_from(now.div_euclid(1000)).unwrap_or(0))
}

/// Reads a base32 TOTP secret as an authenticator app holds it.
pub fn secret_from_base32(text: &str) -> Option<Vec<u8>> {
    totp_rs::Secret::Encoded(text.trim().to_uppercase())
        .to_bytes()
        .ok()
}

/// Checks a sign-in: the operator when the address is known and enabled, the password matches
/// and the code is valid for a step not used before (the step is then used). `None` for every
/// refusal alike.
pub async fn sign_in(
    store: &dyn Store,
    email: &str,
    password: &str,
    code: &str,
    now: UnixMillis,
) -> Result<Option<Operator>, ApiError> {
    let operator = match kept_core::identity::normalize_email(email) {
        Ok(email) => store.operator_by_email(&email).await?,
        Err(_) => None,
    };
    let password = password.chars().take(MAX_PASSWORD).collect::<String>();
    let Some(operator) = operator.filter(|o| o.disabled_at.is_none()) else {
        // The same work as for a real account, then the same refusal.
        password_matches(decoy_hash().to_owned(), password).await?;
        return Ok(None);
    };
    if !password_matches(operator.password_hash.clone(), password).await? {
        return Ok(None);
    }
    let Some(step) = code_step(&operator.totp_secret, code, now) else {
        return Ok(None);
    };
    if !store.use_totp_step(operator.id, step).await? {
        return Ok(None);
    }
    Ok(Some(operator))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_valid_in_its_step_and_the_ones_beside_it_only() {
        let secret = b"12345678901234567890";
        // RFC 6238, appendix B: SHA-1 at 59 s is 94287082 (eight digits; six are 287082).
        assert_eq!(code_at(secret, 59_000), "287082");
        assert_eq!(code_step(secret, "287082", 59_000), Some(1));
        assert_eq!(code_step(secret, "287082", 89_000), Some(1), "a step late");
        assert_eq!(code_step(secret, "287082", 29_000), Some(1), "a step early");
        assert_eq!(code_step(secret, "287082", 120_000), None, "two steps late");
        assert_eq!(code_step(secret, "287083", 59_000), None);
        assert_eq!(code_step(secret, "28708", 59_000), None);
        assert_eq!(code_step(secret, "28708a", 59_000), None);
        assert_eq!(
            code_step(secret, " 287082 ", 59_000),
            Some(1),
            "blanks around"
        );
    }

    #[test]
    fn a_base32_secret_reads_back() {
        let secret = b"12345678901234567890";
        let totp = totp(secret, "ana@example.com").unwrap();
        assert_eq!(
            secret_from_base32(&totp.get_secret_base32().to_lowercase()).as_deref(),
            Some(&secret[..])
        );
        assert!(
            totp.get_url()
                .starts_with("otpauth://totp/Kept:ana%40example.com?secret=")
        );
    }
}
