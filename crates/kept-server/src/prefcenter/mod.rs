//! The preference center: the hosted page where a customer sees what is held about them and
//! decides how it is used, its sign-in (emailed single-use links, or links the company's app
//! mints through the API), double opt-in, one-click unsubscribe, receipts, and the JSON API
//! companies build their own page on.
//!
//! INVARIANT: every change a customer makes is committed to the ledger (source
//! `preference_center`, with the notice shown) and applied to the index before the answer
//! leaves, so the next decision sees it. Checked end to end, each change then a decision, by
//! `a_toggle_writes_the_ledger_and_flips_the_decision_at_once` and
//! `one_click_unsubscribe_takes_effect_at_once`.

pub mod api;
pub mod mail;
pub mod model;
pub mod page;
pub mod routes;
pub mod token;

use crate::config::Config;
use crate::web::limit::{Limiter, Rate};
use axum::http::HeaderMap;
use kept_core::UnixMillis;
use kept_store::{Store, StoreError};
use mail::Mailer;
use std::fmt;
use std::sync::OnceLock;
use token::TokenKeys;

/// Setting holding the generated secret every preference-center token is signed with.
pub const SECRET_SETTING: &str = "prefcenter.secret";
/// The session cookie.
pub const COOKIE: &str = "kept_prefs";
/// Source of every ledger record the preference center writes.
pub const SOURCE: &str = "preference_center";

const MINUTE: UnixMillis = 60 * 1000;
const DAY: UnixMillis = 24 * 60 * MINUTE;

/// How the preference center behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefCenterConfig {
    /// Where customers reach the server; links and the `Secure` cookie follow it.
    pub public_url: Option<String>,
    /// In demo mode, an email address is also looked up among the demo's email traits.
    pub demo: bool,
    /// How long an emailed sign-in link works.
    pub link_ttl: UnixMillis,
    /// How long a link minted through the API works at most.
    pub api_link_max_ttl: UnixMillis,
    /// How long a session lasts.
    pub session_ttl: UnixMillis,
    /// How long a double opt-in confirmation link works.
    pub confirm_ttl: UnixMillis,
    /// How long a one-click unsubscribe link works.
    pub unsubscribe_ttl: UnixMillis,
    /// Sign-in requests per email address.
    pub per_address: Rate,
    /// Sign-in requests per client address.
    pub per_ip: Rate,
}

impl Default for PrefCenterConfig {
    fn default() -> PrefCenterConfig {
        PrefCenterConfig {
            public_url: None,
            demo: false,
            link_ttl: 30 * MINUTE,
            api_link_max_ttl: 7 * DAY,
            session_ttl: 2 * 60 * MINUTE,
            confirm_ttl: 7 * DAY,
            unsubscribe_ttl: 400 * DAY,
            per_address: Rate {
                burst: 3,
                refill_ms: 10 * MINUTE,
            },
            per_ip: Rate {
                burst: 20,
                refill_ms: MINUTE,
            },
        }
    }
}

impl PrefCenterConfig {
    pub fn from_config(config: &Config) -> PrefCenterConfig {
        PrefCenterConfig {
            public_url: config.public_url.clone(),
            demo: config.demo,
            ..PrefCenterConfig::default()
        }
    }
}

/// The preference center's state: its signing keys, mailer and rate limits.
pub struct PrefCenter {
    config: PrefCenterConfig,
    mailer: Mailer,
    keys: tokio::sync::OnceCell<TokenKeys>,
    /// `http://` and the bound address, when no public URL is configured.
    local: OnceLock<String>,
    per_address: Limiter,
    per_ip: Limiter,
    /// Demo only: email address → subject, from the demo's email traits.
    demo_emails: tokio::sync::OnceCell<std::collections::HashMap<String, kept_core::SubjectId>>,
}

impl fmt::Debug for PrefCenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefCenter")
            .field("config", &self.config)
            .field("mailer", &self.mailer)
            .finish_non_exhaustive()
    }
}

impl Default for PrefCenter {
    fn default() -> PrefCenter {
        PrefCenter::new(PrefCenterConfig::default(), Mailer::Disabled)
    }
}

impl PrefCenter {
    pub fn new(config: PrefCenterConfig, mailer: Mailer) -> PrefCenter {
        PrefCenter {
            per_address: Limiter::new(config.per_address),
            per_ip: Limiter::new(config.per_ip),
            config,
            mailer,
            keys: tokio::sync::OnceCell::new(),
            local: OnceLock::new(),
            demo_emails: tokio::sync::OnceCell::new(),
        }
    }

    pub fn config(&self) -> &PrefCenterConfig {
        &self.config
    }

    pub fn mailer(&self) -> &Mailer {
        &self.mailer
    }

    /// Tells it the address the server is bound to, for links when no public URL is set.
    pub fn set_local_addr(&self, addr: std::net::SocketAddr) {
        let _ = self.local.set(format!("http://{addr}"));
    }

    /// The base of every link it makes (no trailing slash). Never taken from a request's
    /// `Host`: a forged one would send a customer's sign-in link elsewhere.
    pub fn base_url(&self) -> &str {
        self.config
            .public_url
            .as_deref()
            .or_else(|| self.local.get().map(String::as_str))
            .unwrap_or("http://127.0.0.1:7300")
    }

    /// The signing keys, derived from the secret kept in the store (generated on first use,
    /// the same for every server sharing the database).
    pub async fn keys(&self, store: &dyn Store) -> Result<&TokenKeys, StoreError> {
        self.keys
            .get_or_try_init(|| async {
                let mut fresh = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
                let kept = store.put_setting_if_absent(SECRET_SETTING, &fresh).await?;
                let secret: [u8; 32] = kept.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt(format!("setting `{SECRET_SETTING}` is not 32 bytes"))
                })?;
                Ok(TokenKeys::derive(&secret))
            })
            .await
    }

    /// A signed, single-use sign-in link to the preference page for `subject`, working until
    /// `now + ttl`, in `locale` if given: the one way every link is made (the emailed sign-in,
    /// the API's, the console's). Returns the link and when it stops working.
    pub async fn sign_in_link(
        &self,
        store: &dyn Store,
        subject: kept_core::SubjectId,
        ttl: UnixMillis,
        locale: Option<String>,
        now: UnixMillis,
    ) -> Result<(String, UnixMillis), StoreError> {
        let keys = self.keys(store).await?;
        let mut claims = token::fresh(token::Kind::Link, subject, now.saturating_add(ttl));
        claims.locale = locale;
        let url = format!(
            "{}/preferences/open?token={}",
            self.base_url(),
            keys.sign(&claims)
        );
        Ok((url, claims.expires))
    }

    /// Whether a sign-in request for `address` from `ip` may go ahead at `now`.
    pub fn admit_sign_in(&self, address: &str, ip: Option<&str>, now: UnixMillis) -> bool {
        let by_ip = ip.is_none_or(|ip| self.per_ip.take(ip, now));
        by_ip && self.per_address.take(address, now)
    }

    /// Whether answers to this request should set `Secure` cookies.
    pub fn secure(&self, headers: &HeaderMap) -> bool {
        self.base_url().starts_with("https://")
            || headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
    }

    /// The demo's email traits by address, read once.
    async fn demo_emails(
        &self,
        store: &dyn Store,
    ) -> Result<&std::collections::HashMap<String, kept_core::SubjectId>, StoreError> {
        self.demo_emails
            .get_or_try_init(|| async {
                let mut map = std::collections::HashMap::new();
                let mut after = None;
                loop {
                    let page = store.traits_page(after, 5_000).await?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.subject);
                    for t in page {
                        if t.category == kept_core::decision::EMAIL_CATEGORY
                            && let Some(address) = t.value.as_str()
                        {
                            map.entry(address.trim().to_ascii_lowercase())
                                .or_insert(t.subject);
                        }
                    }
                }
                Ok(map)
            })
            .await
    }
}
