//! The console's handlers and pages. Every page but sign-in takes a `Visit` (a read) or an
//! `Act` (a form post), so the session, the role and the CSRF token are checked before the
//! handler reads anything; the sign-in post checks its own form token.

use crate::console::audit::{self, Actor};
use crate::console::datamap::{
    self, DataMapTexts, DiffPart, FindingRow, LineChange, NoticeHistory, RopaRow, VersionState,
};
use crate::console::overview::{self, Overview};
use crate::console::session;
use crate::console::texts::ConsoleTexts;
use crate::console::visit::{Act, Frame, Visit, frame, refused, with_lang};
use crate::console::{Page, accounts, secure};
use crate::http::error::ApiError;
use crate::identity::resolve::SubjectName;
use crate::state::AppState;
use crate::web::cookie;
use crate::web::form::{Posted, field};
use crate::web::frame::{datetime, html, redirect};
use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

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
    states: [(&'static str, &'static str); 6],
    witness: String,
    verified: Option<String>,
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
pub async fn sign_out(act: Act) -> Response {
    let Act {
        state,
        headers,
        signed,
        ..
    } = &act;
    let secure = secure(state.prefcenter.base_url(), headers);
    let clear = session::cookie("", state.console.lifetimes, secure);
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
        &act.actor(),
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
pub async fn overview(v: Visit) -> Response {
    let state = &v.state;
    let snapshot = state.index.snapshot().ok();
    let store = state.store.as_ref();
    let read = async {
        let o = overview::read(store, snapshot.as_deref(), state.now()).await?;
        let witness = crate::console::ledger::witness_state(
            store,
            state.ledger.witness().map(|w| w.path().to_path_buf()),
        )
        .await?;
        Ok::<_, kept_store::StoreError>((o, witness))
    };
    let (o, witness) = match read.await {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let f = v.frame();
    let witness = witness_text(f.t, witness);
    let verified = state.console.ledger_runs.view().and_then(|r| {
        Some(format!(
            "{}, {}",
            verdict(f.t, &r.outcome?.0),
            datetime(r.started_at)
        ))
    });
    let states = overview::STATES.map(|(state, colour)| (state_label(f.t, state), colour));
    v.show(
        StatusCode::OK,
        OverviewPage {
            f,
            o,
            states,
            witness,
            verified,
        }
        .render(),
    )
}

/// A consent state's name on the page.
fn state_label(t: &ConsoleTexts, state: &str) -> &'static str {
    match state {
        "given" => t.state_given,
        "withdrawn" => t.state_withdrawn,
        "refused" => t.state_refused,
        "opted_out" => t.state_opted_out,
        "objected" => t.state_objected,
        _ => t.state_none,
    }
}

/// What the witness file says, as the ledger and overview pages show it.
fn witness_text(t: &ConsoleTexts, witness: crate::console::ledger::WitnessState) -> String {
    use crate::console::ledger::WitnessState;
    match witness {
        WitnessState::Off => t.witness_off.to_owned(),
        WitnessState::Agrees { path, last_seq } => {
            format!("{path}: {} {last_seq}", t.witness_agrees)
        }
        WitnessState::Disagrees { path, last_seq } => {
            format!("{path}: {} {last_seq}", t.witness_disagrees)
        }
        WitnessState::Empty { path } => format!("{path}: {}", t.witness_empty),
        WitnessState::Unreadable { path, error } => format!("{path}: {error}"),
    }
}

/// A finished verification's verdict in one line.
fn verdict(t: &ConsoleTexts, outcome: &crate::console::ledger::Outcome) -> String {
    use crate::console::ledger::Outcome;
    match outcome {
        Outcome::Intact { .. } => t.intact.to_owned(),
        Outcome::Tampered { seq, code, .. } => format!("{} ({code}, #{seq})", t.tampered),
        Outcome::NoKey => t.no_key.to_owned(),
        Outcome::Failed(e) => format!("{}: {e}", t.failed),
    }
}

/// How many audit entries a page shows.
const AUDIT_PAGE: u32 = 100;

/// `GET /admin/audit?before=`: the audit log, newest first.
pub async fn audit(v: Visit, q: Result<Query<PageQuery>, QueryRejection>) -> Response {
    let q = query(q);
    let entries = match v.state.store.audit_log(q.before, AUDIT_PAGE).await {
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
    let f = v.frame();
    v.show(StatusCode::OK, AuditPage { f, entries, older }.render())
}

/// `GET /admin/operators`.
pub async fn operators(v: Visit) -> Response {
    let operators = match v.state.store.operators().await {
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
    let f = v.frame();
    v.show(StatusCode::OK, OperatorsPage { f, operators }.render())
}

#[derive(Template)]
#[template(path = "console/datamap.html")]
struct DataMapPage {
    f: Frame,
    d: &'static DataMapTexts,
    graph: String,
    /// The live lint findings; `None` when the server has no manifest file to lint.
    findings: Option<Vec<FindingRow>>,
    /// Row id and the purpose's record.
    purposes: Vec<(String, RopaRow)>,
    /// Row id, key, name, notice's row id, notice, categories.
    points: Vec<(String, String, String, String, String, String)>,
    /// Row id, key, version, purposes, categories.
    notices: Vec<(String, String, u32, String, String)>,
    /// Row id, key, name, owner, purposes.
    systems: Vec<(String, String, String, String, String)>,
}

#[derive(Template)]
#[template(path = "console/notice.html")]
struct NoticePage {
    f: Frame,
    d: &'static DataMapTexts,
    n: NoticeHistory,
    /// Version, hash, first recorded, state in words, whether its text is kept.
    versions: Vec<(u32, String, String, &'static str, bool)>,
    /// The hashes compared (`from`, `to`), to select them in the form.
    selected: (String, String),
    /// The field a bad `from` or `to` was given in.
    error: Option<&'static str>,
    compared: Option<Compared>,
}

/// Two versions of a notice side by side: what the page says of each, and their diff when
/// both texts are kept.
struct Compared {
    /// Version and hash of each.
    from: (u32, String),
    to: (u32, String),
    /// Those of the two (by version) whose text was not kept.
    missing: Vec<u32>,
    parts: Vec<ShownPart>,
}

/// One part of a notice's diff (a language's title and text, or a list) as the page shows it.
struct ShownPart {
    heading: String,
    /// The language code of a text part.
    lang: Option<String>,
    changed: bool,
    /// What happened to each line, in words, and the line.
    lines: Vec<(LineChange, &'static str, String)>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NoticeQuery {
    from: Option<String>,
    to: Option<String>,
}

#[derive(Template)]
#[template(path = "console/record.html")]
struct RecordPage {
    f: Frame,
    rows: Vec<RopaRow>,
    generated: String,
}

/// `GET /admin/data-map`: the live `kept lint` findings, and the manifest's collection
/// points, notices, purposes and systems as a graph and as tables.
pub async fn data_map(v: Visit) -> Response {
    let f = v.frame();
    let d = datamap::texts(f.t.code);
    let m = &v.state.manifest;
    let findings = match &v.state.manifest_source {
        Some(loaded) => match datamap::findings(v.state.store.as_ref(), loaded.clone()).await {
            Ok(findings) => Some(findings),
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => None,
    };
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
    let purposes = datamap::record_of_processing(m)
        .into_iter()
        .map(|r| (datamap::element_id("purpose", &r.purpose), r))
        .collect();
    let points = m
        .collection_points
        .iter()
        .map(|(k, c)| {
            let mut categories: Vec<&str> = c.fields.values().map(String::as_str).collect();
            categories.sort_unstable();
            categories.dedup();
            (
                datamap::element_id("point", k),
                k.clone(),
                c.name.clone(),
                datamap::element_id("notice", &c.notice),
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
                datamap::element_id("notice", k),
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
                datamap::element_id("system", k),
                k.clone(),
                s.name.clone(),
                team(&s.owner),
                purposes.join(", "),
            )
        })
        .collect();
    v.show(
        StatusCode::OK,
        DataMapPage {
            f,
            d,
            graph,
            findings,
            purposes,
            points,
            notices,
            systems,
        }
        .render(),
    )
}

/// `GET /admin/data-map/notices/{key}?from=&to=`: what is known of a notice's versions: the
/// manifest's current text and promises, each version the database recorded (its hash, when
/// first seen, whether its text is kept), and the line diff of two of them (`from` and `to`,
/// each a version number or a content hash; by default the previous and the current).
pub async fn notice(
    axum::extract::Path(key): axum::extract::Path<String>,
    v: Visit,
    q: Result<Query<NoticeQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let f = v.frame();
    let d = datamap::texts(f.t.code);
    let n = match datamap::notice_history(v.state.store.as_ref(), &v.state.manifest, &key).await {
        Ok(Some(n)) => n,
        Ok(None) => return refused(f, StatusCode::NOT_FOUND, d.unknown_notice),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let versions = n
        .versions
        .iter()
        .map(|x| {
            let state = match x.state {
                VersionState::Current => d.current,
                VersionState::ChangedWithoutBump => d.changed_without_bump,
                VersionState::Earlier => d.earlier,
                VersionState::Later => d.later,
            };
            (
                x.version,
                x.hash.clone(),
                datetime(x.first_recorded),
                state,
                x.content.is_some(),
            )
        })
        .collect();
    let (from, to) = (asked(q.from.as_deref()), asked(q.to.as_deref()));
    let pick = |wanted: Option<&str>, fallback: Option<usize>| match wanted {
        Some(w) => datamap::find_version(&n.versions, w).map(Some).ok_or(()),
        None => Ok(fallback),
    };
    let default = datamap::default_pair(&n.versions);
    let picked = pick(from, default.map(|p| p.0))
        .map_err(|()| "from")
        .and_then(|a| {
            pick(to, default.map(|p| p.1))
                .map_err(|()| "to")
                .map(|b| (a, b))
        });
    let (status, error, pair) = match picked {
        Ok((Some(a), Some(b))) => (StatusCode::OK, None, Some((a, b))),
        Ok(_) => (StatusCode::OK, None, None),
        Err(field) => (StatusCode::UNPROCESSABLE_ENTITY, Some(field), None),
    };
    let compared =
        pair.and_then(|(a, b)| Some(compare(f.t, d, n.versions.get(a)?, n.versions.get(b)?)));
    let selected = compared.as_ref().map_or_else(
        || (String::new(), String::new()),
        |c| (c.from.1.clone(), c.to.1.clone()),
    );
    v.show(
        status,
        NoticePage {
            f,
            d,
            n,
            versions,
            selected,
            error,
            compared,
        }
        .render(),
    )
}

/// A query parameter's value, unless it is missing or blank.
fn asked(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|s| !s.is_empty())
}

/// Two versions of a notice as the page shows them.
fn compare(
    t: &ConsoleTexts,
    d: &DataMapTexts,
    a: &datamap::NoticeVersion,
    b: &datamap::NoticeVersion,
) -> Compared {
    let missing = [a, b]
        .iter()
        .filter(|v| v.content.is_none())
        .map(|v| v.version)
        .collect();
    let parts = match (&a.content, &b.content) {
        (Some(old), Some(new)) => datamap::notice_diff(old, new)
            .into_iter()
            .map(|p| {
                let changed = p.changed();
                let (heading, lang) = match p.part {
                    DiffPart::Locale(code) => (d.title_and_text.to_owned(), Some(code)),
                    DiffPart::Purposes => (t.purposes.to_owned(), None),
                    DiffPart::Categories => (t.categories.to_owned(), None),
                    DiffPart::Channels => (d.channels.to_owned(), None),
                };
                let lines = p
                    .lines
                    .into_iter()
                    .map(|l| {
                        let word = match l.change {
                            LineChange::Added => d.added,
                            LineChange::Removed => d.removed,
                            LineChange::Unchanged => d.unchanged,
                        };
                        (l.change, word, l.text)
                    })
                    .collect();
                ShownPart {
                    heading,
                    lang,
                    changed,
                    lines,
                }
            })
            .collect(),
        _ => Vec::new(),
    };
    Compared {
        from: (a.version, a.hash.clone()),
        to: (b.version, b.hash.clone()),
        missing,
        parts,
    }
}

/// `GET /admin/data-map/record`: the record of processing activities as a printable page.
pub async fn record(v: Visit) -> Response {
    let f = v.frame_at("/admin/data-map/record");
    let rows = datamap::record_of_processing(&v.state.manifest);
    let generated = datetime(v.state.now());
    v.show(StatusCode::OK, RecordPage { f, rows, generated }.render())
}

/// `GET /admin/data-map/record.csv`: the record of processing activities as CSV.
pub async fn record_csv(v: Visit) -> Response {
    let csv = datamap::record_csv(&datamap::record_of_processing(&v.state.manifest));
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

async fn ledger_page(state: &AppState, f: Frame, receipt: Option<(bool, String)>) -> Response {
    use crate::console::ledger::Outcome;
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
    let witness = witness_text(t, witness);
    let run = state.console.ledger_runs.view().map(|r| {
        let (lines, unproven) = match &r.outcome {
            Some((Outcome::Intact { proven, unproven }, _)) => (proven.clone(), unproven.clone()),
            Some((Outcome::Tampered { message, .. }, _)) => (vec![message.clone()], Vec::new()),
            _ => (Vec::new(), Vec::new()),
        };
        let verdict = r.outcome.as_ref().map(|(o, _)| verdict(t, o));
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
pub async fn ledger(v: Visit) -> Response {
    let page = ledger_page(&v.state, v.frame(), None).await;
    with_lang(page, &v.state, v.lang.as_deref(), &v.headers)
}

/// `POST /admin/ledger/verify`: starts a verification (unless one runs) and shows its progress.
pub async fn verify_ledger(act: Act) -> Response {
    let Act { state, signed, .. } = &act;
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
                &act.actor(),
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
pub async fn check_receipt(act: Act) -> Response {
    use crate::console::ledger::ReceiptCheck;
    let state = &act.state;
    let text = act.field("receipt").unwrap_or_default();
    let checked = match crate::console::ledger::check_receipt(state.store.as_ref(), text).await {
        Ok(c) => c,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let f = act.frame();
    let t = f.t;
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
        &act.actor(),
        "ledger.receipt_check",
        None,
        Some(detail),
        state.now(),
    )
    .await
    {
        return ApiError::from(e).into_response();
    }
    ledger_page(state, f, Some((ok, shown))).await
}

/// A key as the keys page shows it.
#[derive(Debug)]
struct KeyRow {
    id: String,
    role: &'static str,
    name: String,
    since: String,
    revoked: Option<String>,
}

#[derive(Template)]
#[template(path = "console/keys.html")]
struct KeysPage {
    f: Frame,
    keys: Vec<KeyRow>,
    roles: Vec<&'static str>,
    /// A key just made, shown once.
    created: Option<String>,
    error: Option<&'static str>,
}

async fn keys_page(
    state: &AppState,
    f: Frame,
    status: StatusCode,
    created: Option<String>,
    error: Option<&'static str>,
) -> Response {
    let keys = match state.store.list_api_keys().await {
        Ok(k) => k,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let keys = keys
        .into_iter()
        .map(|k| KeyRow {
            id: k.id,
            role: k.role.as_str(),
            name: k.name,
            since: datetime(k.created_at),
            revoked: k.revoked_at.map(datetime),
        })
        .collect();
    let roles = kept_store::Role::ALL.iter().map(|r| r.as_str()).collect();
    html(
        status,
        KeysPage {
            f,
            keys,
            roles,
            created,
            error,
        }
        .render(),
    )
}

/// `GET /admin/keys`.
pub async fn keys(v: Visit) -> Response {
    let page = keys_page(&v.state, v.frame(), StatusCode::OK, None, None).await;
    with_lang(page, &v.state, v.lang.as_deref(), &v.headers)
}

/// The longest key name the console takes.
const MAX_KEY_NAME: usize = 100;

/// `POST /admin/keys`: makes a key and shows its secret once.
pub async fn create_key(act: Act) -> Response {
    let state = &act.state;
    let f = act.frame();
    let name = act.field("name").unwrap_or_default().trim();
    let role = act.field("role").and_then(kept_store::Role::parse);
    let (Some(role), true) = (role, (1..=MAX_KEY_NAME).contains(&name.chars().count())) else {
        let error = Some(f.t.name_required);
        return keys_page(state, f, StatusCode::UNPROCESSABLE_ENTITY, None, error).await;
    };
    let now = state.now();
    let (secret, record) =
        match crate::http::auth::create_key(state.store.as_ref(), role, name, now).await {
            Ok(k) => k,
            Err(e) => return ApiError::from(e).into_response(),
        };
    if let Err(e) = audit::record(
        state.store.as_ref(),
        &act.actor(),
        "key.create",
        Some(format!("key:{}", record.id)),
        Some(format!("role {}", role.as_str())),
        now,
    )
    .await
    {
        return ApiError::from(e).into_response();
    }
    keys_page(
        state,
        f,
        StatusCode::CREATED,
        Some(secret.expose().to_owned()),
        None,
    )
    .await
}

/// `POST /admin/keys/{id}/revoke`.
pub async fn revoke_key(
    axum::extract::Path(id): axum::extract::Path<String>,
    act: Act,
) -> Response {
    let state = &act.state;
    let now = state.now();
    if let Err(e) =
        crate::admin::keys::revoke_key(state.store.as_ref(), &state.auth, &id, now).await
    {
        return e.into_response();
    }
    if let Err(e) = audit::record(
        state.store.as_ref(),
        &act.actor(),
        "key.revoke",
        Some(format!("key:{id}")),
        None,
        now,
    )
    .await
    {
        return ApiError::from(e).into_response();
    }
    redirect(Page::Keys.path(), &[])
}

/// A dead letter as the webhooks page shows it.
#[derive(Debug)]
struct DeadRow {
    id: u64,
    system: String,
    at: String,
    attempts: u32,
    error: String,
}

#[derive(Template)]
#[template(path = "console/webhooks.html")]
struct WebhooksPage {
    f: Frame,
    /// Name, key, owner, webhook URL.
    systems: Vec<(String, String, String, Option<String>)>,
    /// Pending, delivered, dead.
    counts: (u64, u64, u64),
    dead: Vec<DeadRow>,
    /// Id, received, key, code, message.
    quarantine: Vec<(u64, String, String, String, String)>,
    notice: Option<&'static str>,
}

/// How many dead letters and quarantined messages the page lists.
const WEBHOOK_ROWS: u32 = 50;

/// `GET /admin/webhooks`: systems, deliveries, dead letters (with retry) and the quarantine.
pub async fn webhooks(v: Visit, q: Result<Query<PageQuery>, QueryRejection>) -> Response {
    let q = query(q);
    let state = &v.state;
    let f = v.frame();
    let notice = (q.reason.as_deref() == Some("retried")).then_some(f.t.queued_again);
    let store = state.store.as_ref();
    let read = async {
        Ok::<_, kept_store::StoreError>((
            store.outbox_counts().await?,
            store.dead_deliveries(None, WEBHOOK_ROWS).await?,
            store.quarantined(None, WEBHOOK_ROWS).await?,
        ))
    };
    let (counts, dead, quarantine) = match read.await {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let m = &state.manifest;
    let systems = m
        .systems
        .iter()
        .map(|(k, s)| {
            let owner = m
                .teams
                .get(&s.owner)
                .map_or_else(|| s.owner.clone(), |t| t.name.clone());
            (
                s.name.clone(),
                k.clone(),
                owner,
                s.webhook.as_ref().map(|w| w.url.clone()),
            )
        })
        .collect();
    let dead = dead
        .into_iter()
        .map(|d| DeadRow {
            id: d.id,
            system: d.system,
            at: datetime(d.updated_at),
            attempts: d.attempts,
            error: d.last_error.unwrap_or_default(),
        })
        .collect();
    let quarantine = quarantine
        .into_iter()
        .map(|q| (q.id, datetime(q.received_at), q.key_id, q.code, q.message))
        .collect();
    v.show(
        StatusCode::OK,
        WebhooksPage {
            f,
            systems,
            counts: (counts.pending, counts.delivered, counts.dead),
            dead,
            quarantine,
            notice,
        }
        .render(),
    )
}

/// `POST /admin/webhooks/dead/{id}/retry`: queues a dead letter again.
pub async fn retry_dead_letter(
    axum::extract::Path(id): axum::extract::Path<String>,
    act: Act,
) -> Response {
    let state = &act.state;
    let Ok(id) = id.parse::<u64>() else {
        return ApiError::NotFound(format!("no dead letter has id `{id}`")).into_response();
    };
    let now = state.now();
    if let Err(e) = crate::connect::api::retry(state.store.as_ref(), &state.forward, id, now).await
    {
        return e.into_response();
    }
    if let Err(e) = audit::record(
        state.store.as_ref(),
        &act.actor(),
        "dead_letter.retry",
        Some(format!("delivery:{id}")),
        None,
        now,
    )
    .await
    {
        return ApiError::from(e).into_response();
    }
    redirect("/admin/webhooks?reason=retried", &[])
}

#[derive(Debug, Default, Deserialize)]
pub struct CampaignQuery {
    purpose: Option<String>,
    who: Option<String>,
    who_kind: Option<String>,
    channel: Option<String>,
    topic: Option<String>,
    at: Option<String>,
}

/// What the campaign form was filled with, to show again.
#[derive(Debug, Default)]
struct CampaignForm {
    purpose: String,
    who: String,
    who_kind: String,
    channel: String,
    topic: String,
    at: String,
}

/// One bar of the exclusions chart.
#[derive(Debug)]
struct Bar {
    reason: String,
    count: u64,
    y: u32,
    width: u32,
}

/// A dry run as the page shows it.
#[derive(Debug)]
struct CampaignResult {
    eligible: u64,
    candidates: u64,
    bars: Vec<Bar>,
    chart_height: u32,
    reasons: Vec<String>,
    /// Name, eligible, count per reason (in `reasons`' order).
    regimes: Vec<(String, u64, Vec<u64>)>,
    countries: Vec<(String, u64, Vec<u64>)>,
}

#[derive(Template)]
#[template(path = "console/campaigns.html")]
struct CampaignsPage {
    f: Frame,
    form: CampaignForm,
    purposes: Vec<(String, String)>,
    channels: Vec<String>,
    topics: Vec<String>,
    result: Option<CampaignResult>,
    why: Option<crate::console::campaigns::Why>,
    error: Option<&'static str>,
}

/// The widest bar of the exclusions chart, in the chart's units.
const BAR_WIDTH: u64 = 400;

/// `GET /admin/campaigns?purpose=&channel=&topic=&at=`: the dry-run form and, once filled, who
/// may be reached and who is excluded by reason, overall, by regime and by country.
pub async fn campaigns(v: Visit, q: Result<Query<CampaignQuery>, QueryRejection>) -> Response {
    use crate::console::campaigns::{breakdown, count};
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let state = &v.state;
    let f = v.frame();
    let t = f.t;
    let m = &state.manifest;
    let purposes = m
        .purposes
        .iter()
        .map(|(k, p)| (k.clone(), p.name.clone()))
        .collect();
    let mut channels: Vec<String> = kept_core::manifest::KNOWN_CHANNELS
        .iter()
        .map(|c| (*c).to_owned())
        .chain(m.channels.keys().cloned())
        .collect();
    channels.sort_unstable();
    channels.dedup();
    let topics = m.topics.keys().cloned().collect();
    let nonempty = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let form = CampaignForm {
        purpose: nonempty(&q.purpose).unwrap_or_default(),
        who: nonempty(&q.who).unwrap_or_default(),
        who_kind: nonempty(&q.who_kind).unwrap_or_else(|| "email".to_owned()),
        channel: nonempty(&q.channel).unwrap_or_default(),
        topic: nonempty(&q.topic).unwrap_or_default(),
        at: nonempty(&q.at).unwrap_or_default(),
    };
    let page = |form, result, why, error, status| {
        html(
            status,
            CampaignsPage {
                f: f.clone(),
                form,
                purposes: Vec::clone(&purposes),
                channels: channels.clone(),
                topics: Vec::clone(&topics),
                result,
                why,
                error,
            }
            .render(),
        )
    };
    if form.purpose.is_empty() {
        return with_lang(
            page(form, None, None, None, StatusCode::OK),
            state,
            v.lang.as_deref(),
            &v.headers,
        );
    }
    if !m.purposes.contains_key(&form.purpose) {
        return page(
            form,
            None,
            None,
            Some(t.unknown_purpose),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let now = state.now();
    let at = if form.at.is_empty() {
        Some(now)
    } else {
        chrono::NaiveDateTime::parse_from_str(&form.at, "%Y-%m-%dT%H:%M")
            .ok()
            .map(|d| d.and_utc().timestamp_millis())
            .filter(|at| *at >= now)
    };
    let Some(at) = at else {
        return page(
            form,
            None,
            None,
            Some(t.at_in_past),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    };
    let name = match form.who_kind.as_str() {
        _ if form.who.is_empty() => None,
        "email" => Some(SubjectName::Email(form.who.as_str().into())),
        "phone" => Some(SubjectName::Phone(form.who.as_str().into())),
        "user_id" => Some(SubjectName::UserId(form.who.as_str().into())),
        _ => {
            return page(
                form,
                None,
                None,
                Some(t.unknown_who_kind),
                StatusCode::UNPROCESSABLE_ENTITY,
            );
        }
    };
    let why = match name {
        None => None,
        Some(name) => {
            let request = kept_core::decision::DecisionRequest {
                purpose: form.purpose.clone(),
                channel: (!form.channel.is_empty()).then(|| form.channel.clone()),
                topic: (!form.topic.is_empty()).then(|| form.topic.clone()),
                categories: Vec::new(),
            };
            let why = match crate::console::campaigns::why(state.lookup(), name, &request, at).await
            {
                Ok(w) => w,
                Err(e) => return e.into_response(),
            };
            // Looking a person up is an operator's act on their data: audited, never with
            // what was typed.
            let target = why.subject.map(|s| format!("subject:{}", s.0));
            let detail = format!("{} {}", form.who_kind, why.reason);
            if let Err(e) = audit::record(
                state.store.as_ref(),
                &v.actor(),
                "campaign.why",
                target,
                Some(detail),
                now,
            )
            .await
            {
                return ApiError::from(e).into_response();
            }
            Some(why)
        }
    };
    let input = crate::decide::audiences::AudienceInput {
        purpose: form.purpose.clone(),
        channel: (!form.channel.is_empty()).then(|| form.channel.clone()),
        topic: (!form.topic.is_empty()).then(|| form.topic.clone()),
        categories: Vec::new(),
        candidates: crate::decide::audiences::CandidatesInput::Everyone,
        sample_size: 0,
    };
    let b = match breakdown(state.lookup(), at, input).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let max = b
        .overall
        .excluded
        .iter()
        .map(|e| e.count)
        .max()
        .unwrap_or(0)
        .max(1);
    let bars: Vec<Bar> = b
        .overall
        .excluded
        .iter()
        .enumerate()
        .map(|(i, e)| Bar {
            reason: e.reason.clone(),
            count: e.count,
            y: 4 + 26 * u32::try_from(i).unwrap_or(0),
            width: u32::try_from(e.count.saturating_mul(BAR_WIDTH) / max).unwrap_or(0),
        })
        .collect();
    let rows = |views: &[(String, crate::decide::audiences::AudienceView)]| {
        views
            .iter()
            .map(|(name, v)| {
                (
                    name.clone(),
                    v.eligible,
                    b.reasons.iter().map(|r| count(v, r)).collect(),
                )
            })
            .collect::<Vec<_>>()
    };
    let result = CampaignResult {
        eligible: b.overall.eligible,
        candidates: b.overall.candidates,
        chart_height: 8 + 26 * u32::try_from(bars.len()).unwrap_or(0),
        bars,
        regimes: rows(&b.by_regime),
        countries: rows(&b.by_country),
        reasons: b.reasons.clone(),
    };
    with_lang(
        page(form, Some(result), why, None, StatusCode::OK),
        state,
        v.lang.as_deref(),
        &v.headers,
    )
}

/// `POST /admin/campaigns/export`: the audience that may be reached now, as CSV or NDJSON,
/// through the API's export: every subject in it is recorded as a use before the first byte,
/// under the operator (`operator:<id>`), and the export is in the audit log.
pub async fn export_campaign(act: Act) -> Response {
    use crate::decide::audiences::{AudienceInput, CandidatesInput, ExportFormat, export_audience};
    let state = &act.state;
    let purpose = act.field("purpose").unwrap_or_default().trim().to_owned();
    let format = match act.field("format") {
        Some("csv") => ExportFormat::Csv,
        Some("ndjson") => ExportFormat::Ndjson,
        _ => {
            return ApiError::invalid_field("format", "choose `csv` or `ndjson`").into_response();
        }
    };
    if !state.manifest.purposes.contains_key(&purpose) {
        return ApiError::invalid_field(
            "purpose",
            format!("no purpose `{purpose}` in the manifest"),
        )
        .into_response();
    }
    let optional = |name: &str| {
        act.field(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let input = AudienceInput {
        purpose: purpose.clone(),
        channel: optional("channel"),
        topic: optional("topic"),
        categories: Vec::new(),
        candidates: CandidatesInput::Everyone,
        sample_size: 0,
    };
    let now = state.now();
    let caller = format!("operator:{}", act.signed.operator.id);
    let response = match export_audience(state.lookup(), now, input, format, &caller).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let detail = format!(
        "{purpose} {} {}",
        act.field("channel").unwrap_or_default(),
        response
            .headers()
            .get("x-kept-eligible")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0")
    );
    let target = response
        .headers()
        .get("x-kept-export-id")
        .and_then(|v| v.to_str().ok())
        .map(|r| format!("export:{r}"));
    if let Err(e) = audit::record(
        state.store.as_ref(),
        &act.actor(),
        "campaign.export",
        target,
        Some(detail),
        now,
    )
    .await
    {
        return ApiError::from(e).into_response();
    }
    response
}
