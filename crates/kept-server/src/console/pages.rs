//! The console's handlers and pages: sign-in, sign-out, the overview, the audit log and the
//! operators. Every page checks the session and the role before reading anything; every post
//! checks that it came from the console's own pages (the browser's site headers, then the
//! sign-in form's token or the session's CSRF token).

use crate::console::audit::{self, Actor};
use crate::console::overview::{self, Overview};
use crate::console::session::{self, SignedIn};
use crate::console::texts::{self, ConsoleTexts};
use crate::console::{Page, accounts, secure};
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::web::form::{Posted, field};
use crate::web::frame::{Chrome, chrome, datetime, html, redirect};
use crate::web::{cookie, i18n};
use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// A link of the console's navigation.
#[derive(Debug, Clone)]
pub struct Nav {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// What every console page's frame shows.
#[derive(Debug, Clone)]
pub struct Frame {
    pub c: Chrome,
    pub t: &'static ConsoleTexts,
    /// Who is signed in (`email (role)`), if anyone.
    pub who: Option<String>,
    pub csrf: String,
    pub nav: Vec<Nav>,
    /// The page the language form reloads.
    pub path: &'static str,
}

fn frame(
    state: &AppState,
    lang: Option<&str>,
    headers: &HeaderMap,
    path: &'static str,
    signed: Option<&SignedIn>,
) -> Frame {
    let pref = i18n::language(&state.manifest.organisation.locales, lang, headers);
    let t = texts::for_code(pref.code);
    let nav = signed
        .map(|s| {
            Page::ALL
                .into_iter()
                .filter(|p| p.allows(s.operator.role))
                .map(|p| Nav {
                    href: p.path(),
                    label: match p {
                        Page::Overview => t.nav_overview,
                        Page::Audit => t.nav_audit,
                        Page::Operators => t.nav_operators,
                    },
                    current: p.path() == path,
                })
                .collect()
        })
        .unwrap_or_default();
    Frame {
        c: chrome(&state.manifest.organisation, pref, path),
        t,
        who: signed.map(|s| format!("{} ({})", s.operator.email, s.operator.role.as_str())),
        csrf: signed.map(|s| s.csrf.clone()).unwrap_or_default(),
        nav,
        path,
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    lang: Option<String>,
    reason: Option<String>,
    before: Option<u64>,
}

fn query(q: Result<Query<PageQuery>, QueryRejection>) -> PageQuery {
    q.map(|Query(q)| q).unwrap_or_default()
}

#[derive(Template)]
#[template(path = "console/signin.html")]
struct SignInPage<'a> {
    f: Frame,
    form_token: String,
    email: &'a str,
    error: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    f: Frame,
    o: Overview,
}

/// One audit entry as the page shows it.
#[derive(Debug)]
struct AuditRow {
    seq: u64,
    at: String,
    actor: String,
    action: String,
    target: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    f: Frame,
    entries: Vec<AuditRow>,
    older: Option<u64>,
}

/// One operator as the page shows them.
#[derive(Debug)]
struct OperatorRow {
    email: String,
    role: &'static str,
    since: String,
    disabled: bool,
}

#[derive(Template)]
#[template(path = "console/operators.html")]
struct OperatorsPage {
    f: Frame,
    operators: Vec<OperatorRow>,
}

/// A page that only says why it cannot be shown.
#[derive(Template)]
#[template(
    source = "{% extends \"console/base.html\" %}{% block content %}<h1>{{ f.t.console }}</h1><p class=\"alert\" role=\"alert\">{{ message }}</p>{% endblock %}",
    ext = "html"
)]
struct RefusedPage {
    f: Frame,
    message: &'static str,
}

fn refused(f: Frame, status: StatusCode, message: &'static str) -> Response {
    html(status, RefusedPage { f, message }.render())
}

async fn sign_in_page(
    state: &AppState,
    f: Frame,
    status: StatusCode,
    email: &str,
    error: Option<&'static str>,
) -> Response {
    let keys = match state.console.keys(state.store.as_ref()).await {
        Ok(k) => k,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let form_token = keys.form_token(state.now().saturating_add(state.console.lifetimes.form_ms));
    html(
        status,
        SignInPage {
            f,
            form_token,
            email,
            error,
        }
        .render(),
    )
}

/// The signed-in operator, or the answer to give instead: to sign in (with "your session
/// ended" when a cookie came), or refused when their role may not open `page`.
async fn require(
    state: &AppState,
    headers: &HeaderMap,
    lang: Option<&str>,
    page: Page,
) -> Result<SignedIn, Response> {
    let keys = state
        .console
        .keys(state.store.as_ref())
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let signed = session::signed_in(
        state.store.as_ref(),
        keys,
        state.console.lifetimes,
        headers,
        state.now(),
    )
    .await
    .map_err(|e| ApiError::from(e).into_response())?;
    let Some(signed) = signed else {
        let ended = cookie::read(headers, session::COOKIE).is_some_and(|c| !c.is_empty());
        let to = if ended {
            "/admin/sign-in?reason=session"
        } else {
            "/admin/sign-in"
        };
        return Err(redirect(to, &[]));
    };
    if !page.allows(signed.operator.role) {
        let f = frame(state, lang, headers, page.path(), Some(&signed));
        let message = f.t.forbidden;
        return Err(refused(f, StatusCode::FORBIDDEN, message));
    }
    Ok(signed)
}

/// Adds the language cookie when the page was asked for in a language.
fn with_lang(
    mut response: Response,
    state: &AppState,
    lang: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    if let Some(code) = lang.filter(|l| crate::web::texts::ALL.iter().any(|t| t.code == *l)) {
        let secure = secure(state.prefcenter.base_url(), headers);
        if let Ok(v) = HeaderValue::from_str(&i18n::lang_cookie(session::PATH, code, secure)) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// `GET /admin/sign-in`.
pub async fn sign_in_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let q = query(q);
    let f = frame(&state, q.lang.as_deref(), &headers, "/admin/sign-in", None);
    let error = (q.reason.as_deref() == Some("session")).then_some(f.t.session_ended);
    let page = sign_in_page(&state, f, StatusCode::OK, "", error).await;
    with_lang(page, &state, q.lang.as_deref(), &headers)
}

/// `POST /admin/sign-in`: email, password and code. One answer for every refusal; a fresh
/// session on success, whatever cookie came with the request.
pub async fn sign_in(posted: Posted<AppState>) -> Response {
    let Posted {
        state,
        ip,
        headers,
        form,
    } = posted;
    let f = frame(
        &state,
        field(&form, "lang"),
        &headers,
        "/admin/sign-in",
        None,
    );
    let t = f.t;
    if crate::web::session::cross_site(state.prefcenter.base_url(), &headers) {
        return refused(f, StatusCode::FORBIDDEN, t.cross_site);
    }
    let now = state.now();
    let keys = match state.console.keys(state.store.as_ref()).await {
        Ok(k) => k,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let email = field(&form, "email").unwrap_or_default().trim();
    if !keys.form_token_valid(field(&form, "form_token").unwrap_or_default(), now) {
        return sign_in_page(
            &state,
            f,
            StatusCode::FORBIDDEN,
            email,
            Some(t.form_expired),
        )
        .await;
    }
    let limit_key = email.to_lowercase();
    if !state
        .console
        .admit_sign_in(&limit_key, ip.text().as_deref(), now)
    {
        return sign_in_page(
            &state,
            f,
            StatusCode::TOO_MANY_REQUESTS,
            email,
            Some(t.too_many),
        )
        .await;
    }
    let checked = accounts::sign_in(
        state.store.as_ref(),
        email,
        field(&form, "password").unwrap_or_default(),
        field(&form, "code").unwrap_or_default(),
        now,
    )
    .await;
    let operator = match checked {
        Ok(Some(operator)) => operator,
        Ok(None) => {
            tracing::info!(ip = ?ip.text(), "console sign-in refused");
            return sign_in_page(&state, f, StatusCode::UNAUTHORIZED, email, Some(t.refused)).await;
        }
        Err(e) => return e.into_response(),
    };
    // Whatever session the browser held ends: a sign-in always starts a new one.
    if let Some(old) = cookie::read(&headers, session::COOKIE).filter(|c| !c.is_empty())
        && let Err(e) = state
            .store
            .revoke_operator_session(&session::digest(old), now)
            .await
    {
        return ApiError::from(e).into_response();
    }
    let token = match session::open(
        state.store.as_ref(),
        &operator,
        state.console.lifetimes,
        now,
    )
    .await
    {
        Ok(token) => token,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let actor = Actor {
        operator: Some(operator.id),
        name: operator.email.clone(),
    };
    if let Err(e) = audit::record(state.store.as_ref(), &actor, "sign_in", None, None, now).await {
        return ApiError::from(e).into_response();
    }
    let secure = secure(state.prefcenter.base_url(), &headers);
    redirect(
        "/admin",
        &[session::cookie(&token, state.console.lifetimes, secure)],
    )
}

/// `POST /admin/sign-out`: ends the session everywhere (its row is revoked, not just the
/// cookie dropped).
pub async fn sign_out(posted: Posted<AppState>) -> Response {
    let Posted {
        state,
        headers,
        form,
        ..
    } = posted;
    let secure = secure(state.prefcenter.base_url(), &headers);
    let clear = session::cookie("", state.console.lifetimes, secure);
    let signed = match require(&state, &headers, None, Page::Overview).await {
        Ok(s) => s,
        Err(_) => return redirect("/admin/sign-in", &[clear]),
    };
    let f = frame(&state, None, &headers, "/admin", Some(&signed));
    let keys = match state.console.keys(state.store.as_ref()).await {
        Ok(k) => k,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if crate::web::session::cross_site(state.prefcenter.base_url(), &headers)
        || !keys.csrf_matches(&signed.session_id, field(&form, "csrf").unwrap_or_default())
    {
        let message = f.t.cross_site;
        return refused(f, StatusCode::FORBIDDEN, message);
    }
    let now = state.now();
    if let Err(e) = state
        .store
        .revoke_operator_session(&signed.session_id, now)
        .await
    {
        return ApiError::from(e).into_response();
    }
    let actor = Actor {
        operator: Some(signed.operator.id),
        name: signed.operator.email.clone(),
    };
    if let Err(e) = audit::record(state.store.as_ref(), &actor, "sign_out", None, None, now).await {
        return ApiError::from(e).into_response();
    }
    redirect("/admin/sign-in", &[clear])
}

/// `GET /admin`: the overview.
pub async fn overview(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let q = query(q);
    let lang = q.lang.as_deref();
    let signed = match require(&state, &headers, lang, Page::Overview).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let o = match overview::read(state.store.as_ref(), state.now()).await {
        Ok(o) => o,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let f = frame(&state, lang, &headers, Page::Overview.path(), Some(&signed));
    with_lang(
        html(StatusCode::OK, OverviewPage { f, o }.render()),
        &state,
        lang,
        &headers,
    )
}

/// How many audit entries a page shows.
const AUDIT_PAGE: u32 = 100;

/// `GET /admin/audit?before=`: the audit log, newest first.
pub async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let q = query(q);
    let lang = q.lang.as_deref();
    let signed = match require(&state, &headers, lang, Page::Audit).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let entries = match state.store.audit_log(q.before, AUDIT_PAGE).await {
        Ok(e) => e,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let older = (entries.len() == AUDIT_PAGE as usize)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    let entries = entries
        .into_iter()
        .map(|e| AuditRow {
            seq: e.seq,
            at: datetime(e.entry.at),
            actor: e.entry.actor,
            action: e.entry.action,
            target: e.entry.target.unwrap_or_default(),
            detail: e.entry.detail.unwrap_or_default(),
        })
        .collect();
    let f = frame(&state, lang, &headers, Page::Audit.path(), Some(&signed));
    with_lang(
        html(StatusCode::OK, AuditPage { f, entries, older }.render()),
        &state,
        lang,
        &headers,
    )
}

/// `GET /admin/operators`.
pub async fn operators(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let q = query(q);
    let lang = q.lang.as_deref();
    let signed = match require(&state, &headers, lang, Page::Operators).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let operators = match state.store.operators().await {
        Ok(o) => o,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let operators = operators
        .into_iter()
        .map(|o| OperatorRow {
            email: o.email,
            role: o.role.as_str(),
            since: datetime(o.created_at),
            disabled: o.disabled_at.is_some(),
        })
        .collect();
    let f = frame(
        &state,
        lang,
        &headers,
        Page::Operators.path(),
        Some(&signed),
    );
    with_lang(
        html(StatusCode::OK, OperatorsPage { f, operators }.render()),
        &state,
        lang,
        &headers,
    )
}
