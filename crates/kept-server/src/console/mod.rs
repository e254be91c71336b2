//! The console at `/admin`: where the marketing, privacy and engineering teams work, server
//! rendered on the `web` kit like the preference center. Operators sign in with an email, a
//! password (argon2id) and a TOTP code (`accounts`); sessions are server-side, revocable,
//! HttpOnly and SameSite=Strict with idle and absolute ends, and every form carries a CSRF
//! token (`session`). Each page is open to the roles `Page::roles` names; everything an
//! operator does is appended to the audit log (`audit`). Handlers and pages in `pages` (their
//! routes in `routes`, so that the state this module holds does not import them), the
//! overview's figures in `overview`, words in `texts`; the subjects pages (handlers, their
//! service and words) in `subjects`.

pub mod accounts;
pub mod audit;
pub mod campaigns;
pub mod datamap;
pub mod ledger;
pub mod overview;
pub mod pages;
pub mod requests;
pub mod routes;
pub mod session;
pub mod subjects;
pub mod texts;
pub mod visit;

use crate::web::limit::{Limiter, Rate};
use axum::http::HeaderMap;
use kept_core::UnixMillis;
use kept_store::operators::OperatorRole;
use kept_store::{Store, StoreError};
use session::{Keys, Lifetimes};

/// The console's pages, each open to some roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Overview,
    DataMap,
    Campaigns,
    Ledger,
    Keys,
    Webhooks,
    Audit,
    Operators,
    Subjects,
    Requests,
}

impl Page {
    pub const ALL: [Page; 10] = [
        Page::Overview,
        Page::DataMap,
        Page::Campaigns,
        Page::Subjects,
        Page::Requests,
        Page::Ledger,
        Page::Keys,
        Page::Webhooks,
        Page::Audit,
        Page::Operators,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Page::Overview => "/admin",
            Page::DataMap => "/admin/data-map",
            Page::Campaigns => "/admin/campaigns",
            Page::Ledger => "/admin/ledger",
            Page::Keys => "/admin/keys",
            Page::Webhooks => "/admin/webhooks",
            Page::Audit => "/admin/audit",
            Page::Operators => "/admin/operators",
            Page::Subjects => "/admin/subjects",
            Page::Requests => "/admin/requests",
        }
    }

    /// Who may open the page: the overview and the data map (read-only) are every team's;
    /// campaigns the marketing team's; subjects, requests, the ledger and the audit log the
    /// privacy team's; keys and webhooks the engineering team's; the operators the
    /// administrators'. `admin` may open everything.
    pub fn roles(self) -> &'static [OperatorRole] {
        use OperatorRole::{Admin, Engineering, Marketing, Privacy};
        match self {
            Page::Overview | Page::DataMap => &[Marketing, Privacy, Engineering, Admin],
            Page::Campaigns => &[Marketing, Admin],
            Page::Subjects | Page::Requests | Page::Ledger | Page::Audit => &[Privacy, Admin],
            Page::Keys | Page::Webhooks => &[Engineering, Admin],
            Page::Operators => &[Admin],
        }
    }

    /// The page's name in the navigation.
    pub fn label(self, t: &texts::ConsoleTexts) -> &'static str {
        match self {
            Page::Overview => t.nav_overview,
            Page::DataMap => t.nav_data_map,
            Page::Campaigns => t.nav_campaigns,
            Page::Ledger => t.nav_ledger,
            Page::Keys => t.nav_keys,
            Page::Webhooks => t.nav_webhooks,
            Page::Audit => t.nav_audit,
            Page::Operators => t.nav_operators,
            Page::Subjects => t.nav_subjects,
            Page::Requests => t.nav_requests,
        }
    }

    pub fn allows(self, role: OperatorRole) -> bool {
        self.roles().contains(&role)
    }
}

/// The console's state: its token keys (from the console secret, loaded once), session
/// lifetimes and the sign-in brakes.
#[derive(Debug)]
pub struct Console {
    keys: tokio::sync::OnceCell<Keys>,
    pub lifetimes: Lifetimes,
    per_ip: Limiter,
    per_address: Limiter,
    /// The last ledger verification started from the console.
    pub ledger_runs: std::sync::Arc<ledger::Runs>,
}

impl Default for Console {
    fn default() -> Console {
        Console::new(Lifetimes::default())
    }
}

impl Console {
    pub fn new(lifetimes: Lifetimes) -> Console {
        Console {
            keys: tokio::sync::OnceCell::new(),
            lifetimes,
            // Ten tries at once from one address, then one every six seconds; five for one
            // account, then one a minute: enough for typos, far too few to guess.
            per_ip: Limiter::new(Rate {
                burst: 10,
                refill_ms: 6_000,
            }),
            per_address: Limiter::new(Rate {
                burst: 5,
                refill_ms: 60_000,
            }),
            ledger_runs: std::sync::Arc::default(),
        }
    }

    pub async fn keys(&self, store: &dyn Store) -> Result<&Keys, StoreError> {
        self.keys.get_or_try_init(|| Keys::load(store)).await
    }

    /// Whether a sign-in for `address` from `ip` may be tried at `now`.
    pub fn admit_sign_in(&self, address: &str, ip: Option<&str>, now: UnixMillis) -> bool {
        let by_ip = ip.is_none_or(|ip| self.per_ip.take(ip, now));
        by_ip && self.per_address.take(address, now)
    }
}

/// Whether answers to this request should set `Secure` cookies: served over HTTPS, directly or
/// behind a proxy that says so.
pub fn secure(base_url: &str, headers: &HeaderMap) -> bool {
    base_url.starts_with("https://")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}
