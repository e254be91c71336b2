//! The console's handlers and pages: sign-in, sign-out, the overview, the audit log and the
//! operators. Every page checks the session and the role before reading anything; every post
//! checks that it came from the console's own pages (the browser's site headers, then the
//! sign-in form's token or the session's CSRF token).

use crate::console::audit::{self, Actor};
use crate::console::datamap::{self, RopaRow};
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
                        Page::DataMap => t.nav_data_map,
                        Page::Ledger => t.nav_ledger,
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

/// The signed-in operator of a form post to `page`, or the answer to give instead: the post
/// must come from the console's own pages (the browser's site headers) and carry the
/// session's CSRF token.
async fn require_post(
    state: &AppState,
    headers: &HeaderMap,
    form: &[(String, String)],
    page: Page,
) -> Result<SignedIn, Response> {
    let signed = require(state, headers, None, page).await?;
    let keys = state
        .console
        .keys(state.store.as_ref())
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    if crate::web::session::cross_site(state.prefcenter.base_url(), headers)
        || !keys.csrf_matches(&signed.session_id, field(form, "csrf").unwrap_or_default())
    {
        let f = frame(state, None, headers, page.path(), Some(&signed));
        let message = f.t.cross_site;
        return Err(refused(f, StatusCode::FORBIDDEN, message));
    }
    Ok(signed)
}

fn actor(signed: &SignedIn) -> Actor {
    Actor {
        operator: Some(signed.operator.id),
        name: signed.operator.email.clone(),
    }
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
    if cookie::read(&headers, session::COOKIE).is_none_or(str::is_empty) {
        return redirect("/admin/sign-in", &[clear]);
    }
    let signed = match require_post(&state, &headers, &form, Page::Overview).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let now = state.now();
    if let Err(e) = state
        .store
        .revoke_operator_session(&signed.session_id, now)
        .await
    {
        return ApiError::from(e).into_response();
    }
    if let Err(e) = audit::record(
        state.store.as_ref(),
        &actor(&signed),
        "sign_out",
        None,
        None,
        now,
    )
    .await
    {
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

#[derive(Template)]
#[template(path = "console/datamap.html")]
struct DataMapPage {
    f: Frame,
    graph: String,
    /// Key, name, notice, categories.
    points: Vec<(String, String, String, String)>,
    /// Key, version, purposes, categories.
    notices: Vec<(String, u32, String, String)>,
    /// Key, name, owner, purposes.
    systems: Vec<(String, String, String, String)>,
}

#[derive(Template)]
#[template(path = "console/record.html")]
struct RecordPage {
    f: Frame,
    rows: Vec<RopaRow>,
    generated: String,
}

/// `GET /admin/data-map`: the manifest's collection points, notices, purposes and systems as a
/// graph, and as tables.
pub async fn data_map(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let q = query(q);
    let lang = q.lang.as_deref();
    let signed = match require(&state, &headers, lang, Page::DataMap).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let f = frame(&state, lang, &headers, Page::DataMap.path(), Some(&signed));
    let m = &state.manifest;
    let team = |key: &str| {
        m.teams
            .get(key)
            .map_or_else(|| key.to_owned(), |t| t.name.clone())
    };
    let graph = datamap::graph_svg(
        m,
        [
            f.t.collection_points,
            f.t.notices,
            f.t.purposes,
            f.t.systems,
        ],
    );
    let points = m
        .collection_points
        .iter()
        .map(|(k, c)| {
            let mut categories: Vec<&str> = c.fields.values().map(String::as_str).collect();
            categories.sort_unstable();
            categories.dedup();
            (
                k.clone(),
                c.name.clone(),
                c.notice.clone(),
                categories.join(", "),
            )
        })
        .collect();
    let notices = m
        .notices
        .iter()
        .map(|(k, n)| {
            (
                k.clone(),
                n.version,
                n.purposes.join(", "),
                n.categories.join(", "),
            )
        })
        .collect();
    let systems = m
        .systems
        .iter()
        .map(|(k, s)| {
            let mut purposes: Vec<&str> = s.uses.iter().map(|u| u.purpose.as_str()).collect();
            purposes.dedup();
            (
                k.clone(),
                s.name.clone(),
                team(&s.owner),
                purposes.join(", "),
            )
        })
        .collect();
    with_lang(
        html(
            StatusCode::OK,
            DataMapPage {
                f,
                graph,
                points,
                notices,
                systems,
            }
            .render(),
        ),
        &state,
        lang,
        &headers,
    )
}

/// `GET /admin/data-map/record`: the record of processing activities as a printable page.
pub async fn record(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let q = query(q);
    let lang = q.lang.as_deref();
    let signed = match require(&state, &headers, lang, Page::DataMap).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let f = frame(
        &state,
        lang,
        &headers,
        "/admin/data-map/record",
        Some(&signed),
    );
    let rows = datamap::record_of_processing(&state.manifest);
    let generated = datetime(state.now());
    html(StatusCode::OK, RecordPage { f, rows, generated }.render())
}

/// `GET /admin/data-map/record.csv`: the record of processing activities as CSV.
pub async fn record_csv(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = require(&state, &headers, None, Page::DataMap).await {
        return r;
    }
    let csv = datamap::record_csv(&datamap::record_of_processing(&state.manifest));
    let mut response = (StatusCode::OK, csv).into_response();
    let h = response.headers_mut();
    crate::web::frame::security_headers(h);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"record-of-processing.csv\""),
    );
    response
}

/// A verification run as the ledger page shows it.
#[derive(Debug)]
struct RunRow {
    by: String,
    started: String,
    total: u64,
    /// How many records are checked, while it runs.
    running: Option<u64>,
    verdict: Option<String>,
    lines: Vec<String>,
    unproven: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/ledger.html")]
struct LedgerPage {
    f: Frame,
    records: u64,
    last_checkpoint: Option<(u64, String)>,
    witness: String,
    run: Option<RunRow>,
    refresh: bool,
    /// Whether the receipt checked out, and what was found.
    receipt: Option<(bool, String)>,
}

async fn ledger_page(
    state: &AppState,
    headers: &HeaderMap,
    lang: Option<&str>,
    signed: &SignedIn,
    receipt: Option<(bool, String)>,
) -> Response {
    use crate::console::ledger::{Outcome, WitnessState};
    let f = frame(state, lang, headers, Page::Ledger.path(), Some(signed));
    let t = f.t;
    let store = state.store.as_ref();
    let witness_path = state.ledger.witness().map(|w| w.path().to_path_buf());
    let read = async {
        Ok::<_, kept_store::StoreError>((
            store.ledger_len().await?,
            store.last_checkpoint().await?,
            crate::console::ledger::witness_state(store, witness_path).await?,
        ))
    };
    let (records, last, witness) = match read.await {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let witness = match witness {
        WitnessState::Off => t.witness_off.to_owned(),
        WitnessState::Agrees { path, last_seq } => {
            format!("{path}: {} {last_seq}", t.witness_agrees)
        }
        WitnessState::Disagrees { path, last_seq } => {
            format!("{path}: {} {last_seq}", t.witness_disagrees)
        }
        WitnessState::Empty { path } => format!("{path}: {}", t.witness_empty),
        WitnessState::Unreadable { path, error } => format!("{path}: {error}"),
    };
    let run = state.console.ledger_runs.view().map(|r| {
        let (verdict, lines, unproven) = match &r.outcome {
            None => (None, Vec::new(), Vec::new()),
            Some((Outcome::Intact { proven, unproven }, _)) => {
                (Some(t.intact.to_owned()), proven.clone(), unproven.clone())
            }
            Some((Outcome::Tampered { seq, code, message }, _)) => (
                Some(format!("{} ({code}, #{seq})", t.tampered)),
                vec![message.clone()],
                Vec::new(),
            ),
            Some((Outcome::NoKey, _)) => (Some(t.no_key.to_owned()), Vec::new(), Vec::new()),
            Some((Outcome::Failed(e), _)) => {
                (Some(format!("{}: {e}", t.failed)), Vec::new(), Vec::new())
            }
        };
        RunRow {
            by: r.by,
            started: datetime(r.started_at),
            total: r.total,
            running: r.outcome.is_none().then_some(r.done),
            verdict,
            lines,
            unproven,
        }
    });
    let refresh = run.as_ref().is_some_and(|r| r.running.is_some());
    html(
        StatusCode::OK,
        LedgerPage {
            f,
            records,
            last_checkpoint: last.map(|cp| (cp.seq, datetime(cp.at))),
            witness,
            run,
            refresh,
            receipt,
        }
        .render(),
    )
}

/// `GET /admin/ledger`: the ledger, its witness, the last verification and a receipt check.
pub async fn ledger(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let q = query(q);
    let lang = q.lang.as_deref();
    let signed = match require(&state, &headers, lang, Page::Ledger).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    with_lang(
        ledger_page(&state, &headers, lang, &signed, None).await,
        &state,
        lang,
        &headers,
    )
}

/// `POST /admin/ledger/verify`: starts a verification (unless one runs) and shows its progress.
pub async fn verify_ledger(posted: Posted<AppState>) -> Response {
    let Posted {
        state,
        headers,
        form,
        ..
    } = posted;
    let signed = match require_post(&state, &headers, &form, Page::Ledger).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let started = crate::console::ledger::start(
        state.console.ledger_runs.clone(),
        state.store.clone(),
        state.ledger.witness().map(|w| w.path().to_path_buf()),
        signed.operator.email.clone(),
        state.clock.clone(),
    )
    .await;
    match started {
        Ok(true) => {
            if let Err(e) = audit::record(
                state.store.as_ref(),
                &actor(&signed),
                "ledger.verify",
                None,
                None,
                state.now(),
            )
            .await
            {
                return ApiError::from(e).into_response();
            }
        }
        Ok(false) => {}
        Err(e) => return ApiError::from(e).into_response(),
    }
    redirect(Page::Ledger.path(), &[])
}

/// `POST /admin/ledger/receipt`: checks a pasted receipt against the ledger.
pub async fn check_receipt(posted: Posted<AppState>) -> Response {
    use crate::console::ledger::ReceiptCheck;
    let Posted {
        state,
        headers,
        form,
        ..
    } = posted;
    let signed = match require_post(&state, &headers, &form, Page::Ledger).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let text = field(&form, "receipt").unwrap_or_default();
    let checked = match crate::console::ledger::check_receipt(state.store.as_ref(), text).await {
        Ok(c) => c,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let t = frame(&state, None, &headers, Page::Ledger.path(), Some(&signed)).t;
    let (ok, shown, detail) = match checked {
        ReceiptCheck::Valid {
            seq,
            subject,
            purpose,
            action,
            at,
        } => (
            true,
            format!(
                "{}: #{seq}, subject {subject}, {purpose} {action}, {}",
                t.receipt_valid,
                datetime(at)
            ),
            format!("valid #{seq}"),
        ),
        ReceiptCheck::Invalid { code, message } => (
            false,
            format!("{}: {message} ({code})", t.receipt_invalid),
            format!("invalid {code}"),
        ),
    };
    if let Err(e) = audit::record(
        state.store.as_ref(),
        &actor(&signed),
        "ledger.receipt_check",
        None,
        Some(detail),
        state.now(),
    )
    .await
    {
        return ApiError::from(e).into_response();
    }
    ledger_page(&state, &headers, None, &signed, Some((ok, shown))).await
}
