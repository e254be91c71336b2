//! The console's requests pages, for the privacy team: the queue of open data subject requests
//! (`/admin/requests`, soonest due first) and one request's page with its facts, its timeline
//! from the requests log, its work by target and the steps its state allows. Every step goes
//! through the requests service (`requests::steps`, `tasks`, `erase`, `export`), so the
//! requests log, the systems' webhooks and the witness see it as they see the API's, and every
//! one is in the audit log. What the pages read is in `read`, their words in `texts`.

pub mod read;
pub mod texts;

use crate::console::audit;
use crate::console::visit::{Act, Frame, Visit, refused};
use crate::http::error::ApiError;
use crate::requests::export::Links;
use crate::requests::steps::Advance;
use crate::state::AppState;
use crate::web::frame::{datetime, html, redirect};
use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kept_core::requests::{
    RequestKind, State, Target, TaskState, Verification, VerificationMethod,
};
use kept_store::outbox::DeliveryState;
use kept_store::requests::QueueFilter;
use read::{Due, QueueRow, Shown, due};
use serde::Deserialize;
use texts::RequestTexts;

/// The open states the queue can be narrowed to.
const OPEN_STATES: [State; 4] = [
    State::Received,
    State::Verified,
    State::InProgress,
    State::Extended,
];

/// A badge beside a due date: its class and its word (never colour alone).
fn badge(due: Due, t: &'static RequestTexts) -> Option<(&'static str, &'static str)> {
    match due {
        Due::Overdue => Some(("overdue", t.overdue)),
        Due::Soon => Some(("soon", t.due_soon)),
        Due::Later => None,
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct QueueQuery {
    state: Option<String>,
    kind: Option<String>,
    /// The next page: after this due date and id.
    after_due: Option<i64>,
    after_id: Option<u64>,
}

/// A request of the queue as the page shows it.
#[derive(Debug)]
struct QueueLine {
    id: u64,
    kind: &'static str,
    subject: u32,
    state: &'static str,
    received: String,
    due: String,
    badge: Option<(&'static str, &'static str)>,
    settled: usize,
    tasks: usize,
}

/// An option of a filter: its value, and whether it is chosen.
#[derive(Debug)]
struct Choice {
    value: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "console/requests.html")]
struct QueuePage {
    f: Frame,
    t: &'static RequestTexts,
    states: Vec<Choice>,
    kinds: Vec<Choice>,
    lines: Vec<QueueLine>,
    /// Overdue, due soon (every open request, whatever the filters).
    counts: (u64, u64),
    /// The query of the next page, and of the first when this is not it.
    next: Option<String>,
    first: Option<String>,
    /// The field a malformed filter came in.
    error: Option<String>,
}

fn nonblank(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// `GET /admin/requests?state=&kind=&after_due=&after_id=`: the open requests, overdue first,
/// then by due date.
pub async fn queue(v: Visit, q: Result<Query<QueueQuery>, QueryRejection>) -> Response {
    let f = v.frame();
    let t = texts::texts(f.t.code);
    let (q, mut error) = match q {
        Ok(Query(q)) => (q, None),
        Err(_) => (QueueQuery::default(), Some("after_due".to_owned())),
    };
    let state =
        nonblank(q.state.as_deref()).map(|s| OPEN_STATES.into_iter().find(|o| o.as_str() == s));
    let kind = nonblank(q.kind.as_deref()).map(RequestKind::parse);
    if state == Some(None) {
        error = Some("state".to_owned());
    }
    if kind == Some(None) {
        error = Some("kind".to_owned());
    }
    let (state, kind) = (state.flatten(), kind.flatten());
    let filter = QueueFilter {
        state,
        kind,
        after: q.after_due.zip(q.after_id),
        limit: read::QUEUE_PAGE,
    };
    let now = v.state.now();
    let store = v.state.store.as_ref();
    let rows = match read::queue(store, &filter).await {
        Ok(rows) => rows,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let counts = match store
        .open_request_counts(now, crate::requests::service::DUE_SOON)
        .await
    {
        Ok(c) => (c.overdue, c.due_soon),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let filters = format!(
        "state={}&kind={}",
        state.map_or("", State::as_str),
        kind.map_or("", RequestKind::as_str)
    );
    let next = (rows.len() == read::QUEUE_PAGE as usize)
        .then(|| rows.last())
        .flatten()
        .map(|r| {
            format!(
                "{filters}&after_due={}&after_id={}",
                r.request.due_at, r.request.id
            )
        });
    let first = filter.after.is_some().then(|| filters.clone());
    let lines = rows
        .into_iter()
        .map(
            |QueueRow {
                 request: r,
                 settled,
                 tasks,
             }| QueueLine {
                id: r.id,
                kind: r.kind.as_str(),
                subject: r.subject.0,
                state: r.state.as_str(),
                received: datetime(r.received_at),
                due: datetime(r.due_at),
                badge: badge(due(&r, now), t),
                settled,
                tasks,
            },
        )
        .collect();
    let page = QueuePage {
        states: OPEN_STATES
            .into_iter()
            .map(|s| Choice {
                value: s.as_str(),
                selected: state == Some(s),
            })
            .collect(),
        kinds: RequestKind::ALL
            .into_iter()
            .map(|k| Choice {
                value: k.as_str(),
                selected: kind == Some(k),
            })
            .collect(),
        f,
        t,
        lines,
        counts,
        next,
        first,
        error,
    };
    let status = if page.error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    v.show(status, page.render())
}

/// One step of the timeline.
#[derive(Debug)]
struct StepLine {
    seq: u64,
    at: String,
    step: String,
    actor: String,
    note: String,
    /// What else the step recorded (`key: value; …`).
    more: String,
}

/// One task as the page shows it.
#[derive(Debug)]
struct TaskLine {
    target: String,
    state: &'static str,
    settled: bool,
    attempts: u32,
    /// Why its last try failed, while it is not settled.
    error: String,
    /// Who settled it, when, and what they said or the work did.
    settled_by: String,
    /// For a system: where the obligation sent to it stands.
    obligation: Option<&'static str>,
    /// The note field of its form is the one refused.
    invalid: bool,
}

/// What the request's state allows.
#[derive(Debug, Default)]
struct Allowed {
    verify: bool,
    start: bool,
    complete: bool,
    extend: bool,
    reject: bool,
    handle: bool,
    erase: bool,
    export: bool,
}

impl Allowed {
    fn any(&self) -> bool {
        self.verify
            || self.start
            || self.complete
            || self.extend
            || self.reject
            || self.handle
            || self.erase
            || self.export
    }
}

/// The request's facts.
#[derive(Debug)]
struct Facts {
    id: u64,
    kind: &'static str,
    subject: u32,
    state: &'static str,
    resume: Option<&'static str>,
    channel: &'static str,
    regime: String,
    rule: String,
    verification: Option<String>,
    scope: Option<String>,
    received: String,
    due: String,
    badge: Option<(&'static str, &'static str)>,
    acknowledge_by: Option<String>,
    extension_until: Option<String>,
    extended_at: Option<String>,
    reason: Option<String>,
}

/// What a refused step left on the page: the message, and the field to mark.
#[derive(Debug, Default)]
struct Outcome {
    /// A step just taken (after the redirect).
    notice: Option<&'static str>,
    error: Option<String>,
    /// The id of the field the refusal names (`reject-reason`), or `note:<target>`.
    invalid: String,
    /// The values to fill the refused form with again.
    reason: String,
    note: String,
    reference: String,
    agent: String,
    method: String,
    /// The export's download links, made just now.
    links: Option<(Links, String)>,
}

#[derive(Template)]
#[template(path = "console/request.html")]
struct RequestPage {
    f: Frame,
    t: &'static RequestTexts,
    r: Facts,
    timeline: Vec<StepLine>,
    tasks: Vec<TaskLine>,
    allowed: Allowed,
    methods: Vec<&'static str>,
    o: Outcome,
}

/// The page of request `shown` at `now`.
fn request_page(f: Frame, shown: Shown, now: i64, o: Outcome) -> RequestPage {
    let t = texts::texts(f.t.code);
    let Shown {
        request: r,
        log,
        tasks,
        obligations,
    } = shown;
    let working = r.working_state();
    let open = r.state.is_open();
    let exportable = matches!(r.kind, RequestKind::Access | RequestKind::Portability);
    let all_settled = tasks.iter().all(|t| t.task.state.is_settled());
    let allowed = Allowed {
        verify: open && working == State::Received,
        start: open && working == State::Verified,
        complete: open && working == State::InProgress && (exportable || all_settled),
        extend: open && r.extension_until.is_some() && r.extended_at.is_none() && now <= r.due_at,
        reject: open,
        handle: open && working == State::InProgress,
        erase: open && working == State::InProgress && r.kind == RequestKind::Erasure,
        export: crate::requests::export::exportable(&r).is_ok(),
    };
    let timeline = log
        .into_iter()
        .map(|(seq, record)| {
            let task = read::detail(&record, "task");
            let step = match (record.from, task) {
                (None, _) => format!("{} → {}", t.filed, record.to),
                (_, Some(task)) => format!(
                    "{}: {task} ({})",
                    t.task_settled,
                    read::detail(&record, "task.state").unwrap_or_default()
                ),
                (Some(from), None) if from != record.to => format!("{from} → {}", record.to),
                (Some(_), None) => record.to.to_string(),
            };
            let note = record
                .reason
                .clone()
                .or_else(|| read::detail(&record, "note").map(str::to_owned))
                .unwrap_or_default();
            let more = record
                .detail
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "note" | "task" | "task.state"))
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ");
            StepLine {
                seq,
                at: datetime(record.at),
                step,
                actor: record.actor,
                note,
                more,
            }
        })
        .collect();
    let tasks = tasks
        .into_iter()
        .map(|row| {
            let task = row.task;
            let detail = task.detail.clone().unwrap_or_default();
            let system = Target::parse(&task.target).and_then(|t| t.system().map(str::to_owned));
            let sent = system.and_then(|name| obligations.iter().find(|d| d.system == name));
            let obligation = sent.map(|d| match d.state {
                DeliveryState::Delivered if task.state == TaskState::Done => t.acknowledged,
                DeliveryState::Delivered => t.delivered_waiting,
                DeliveryState::Pending => t.not_delivered,
                DeliveryState::Dead => t.dead_letter,
                DeliveryState::Suppressed => t.suppressed,
            });
            let settled = task.state.is_settled();
            TaskLine {
                invalid: o.invalid == format!("note:{}", task.target),
                state: task.state.as_str(),
                settled,
                attempts: task.attempts,
                error: if settled {
                    String::new()
                } else {
                    detail.clone()
                },
                settled_by: match (&row.settled_by, settled) {
                    (Some((actor, at)), true) => format!("{actor}, {}: {detail}", datetime(*at)),
                    (None, true) => detail,
                    (_, false) => String::new(),
                },
                obligation,
                target: task.target,
            }
        })
        .collect();
    let verification = r.verification.as_ref().map(|v| {
        [
            Some(v.method.as_str().to_owned()),
            v.reference.clone(),
            v.agent.clone(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" · ")
    });
    let scope = (!r.scope.is_all()).then(|| {
        [&r.scope.purposes, &r.scope.categories, &r.scope.systems]
            .into_iter()
            .filter(|l| !l.is_empty())
            .map(|l| l.join(", "))
            .collect::<Vec<_>>()
            .join("; ")
    });
    let facts = Facts {
        id: r.id,
        kind: r.kind.as_str(),
        subject: r.subject.0,
        state: r.state.as_str(),
        resume: (r.state == State::Extended).then(|| working.as_str()),
        channel: r.channel.as_str(),
        regime: r.regime.clone(),
        rule: r.rule.clone(),
        verification,
        scope,
        received: datetime(r.received_at),
        due: datetime(r.due_at),
        badge: badge(due(&r, now), t),
        acknowledge_by: r.acknowledge_by.map(datetime),
        extension_until: r.extension_until.map(datetime),
        extended_at: r.extended_at.map(datetime),
        reason: r.reason.clone(),
    };
    RequestPage {
        f,
        t,
        r: facts,
        timeline,
        tasks,
        allowed,
        methods: VerificationMethod::ALL
            .into_iter()
            .map(VerificationMethod::as_str)
            .collect(),
        o,
    }
}

/// The id in a path; anything that is not one is answered like an unknown request.
fn parse_id(id: &str) -> Option<u64> {
    id.parse::<u64>()
        .ok()
        .filter(|id| *id <= crate::http::error::MAX_ROW_ID)
}

fn not_found(f: Frame) -> Response {
    let message = texts::texts(f.t.code).not_found;
    refused(f, StatusCode::NOT_FOUND, message)
}

/// Request `id`'s page with `status`, or the not-found page.
async fn answer(state: &AppState, f: Frame, id: u64, status: StatusCode, o: Outcome) -> Response {
    let f = f.reloading(format!("/admin/requests/{id}"));
    match read::request(state.store.as_ref(), id).await {
        Ok(Some(shown)) => html(status, request_page(f, shown, state.now(), o).render()),
        Ok(None) => not_found(f),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ShowQuery {
    done: Option<String>,
}

/// `GET /admin/requests/{id}`: the request, its timeline, its tasks and its next steps.
pub async fn show(
    Path(id): Path<String>,
    v: Visit,
    q: Result<Query<ShowQuery>, QueryRejection>,
) -> Response {
    let f = v.frame();
    let Some(id) = parse_id(&id) else {
        return not_found(f);
    };
    let t = texts::texts(f.t.code);
    let done = q.ok().and_then(|Query(q)| q.done);
    let notice = match done.as_deref() {
        Some("step") => Some(t.done_step),
        Some("extend") => Some(t.done_extend),
        Some("reject") => Some(t.done_reject),
        Some("handled") => Some(t.done_handled),
        Some("erase") => Some(t.done_erase),
        _ => None,
    };
    let page = answer(
        &v.state,
        f,
        id,
        StatusCode::OK,
        Outcome {
            notice,
            ..Outcome::default()
        },
    )
    .await;
    crate::console::visit::with_lang(page, &v.state, v.lang.as_deref(), &v.headers)
}

/// Who the requests log names for a step taken in the console.
fn log_actor(act: &Act) -> String {
    format!("operator:{}", act.signed.operator.email)
}

/// What an action did, for the audit log: its code and a short detail.
struct Audited {
    action: &'static str,
    detail: Option<String>,
}

/// The answer to an action on request `id`: once it is done, the audit entry and a redirect to
/// the request's page saying so (`done`); refused, the page again with the refusal (the status
/// the service gave, 409 or 422), the refused field marked (`field_id` where the refusal names
/// `reason` or `note`; the verification's own fields) and the form filled as it was.
async fn after(
    act: &Act,
    id: u64,
    done: Result<Audited, ApiError>,
    redirect_to: &str,
    field_id: &str,
    mut o: Outcome,
) -> Response {
    let state = &act.state;
    let f = act.frame();
    let e = match done {
        Ok(audited) => {
            if let Err(e) = audit::record(
                state.store.as_ref(),
                &act.actor(),
                audited.action,
                Some(format!("request:{id}")),
                audited.detail,
                state.now(),
            )
            .await
            {
                return ApiError::from(e).into_response();
            }
            return redirect(redirect_to, &[]);
        }
        Err(e) => e,
    };
    let status = e.status();
    if status == StatusCode::NOT_FOUND {
        return not_found(f);
    }
    if !status.is_client_error() {
        return e.into_response();
    }
    let t = texts::texts(f.t.code);
    let body = e.body();
    let field = body.error.field.unwrap_or_default();
    o.invalid = match field.as_str() {
        "reason" | "note" => field_id.to_owned(),
        "verification.method" => "verify-method".to_owned(),
        "verification.agent" => "verify-agent".to_owned(),
        f if f.starts_with("verification") => "verify-reference".to_owned(),
        _ => String::new(),
    };
    o.error = Some(if body.error.code == "request.reason_required" {
        format!("{} ({})", t.reason_required, body.error.message)
    } else {
        format!(
            "{}: {} ({})",
            t.refused, body.error.message, body.error.code
        )
    });
    answer(state, f, id, status, o).await
}

/// The text of field `name`, trimmed; `None` when blank.
fn text(act: &Act, name: &str) -> Option<String> {
    act.field(name)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn done_at(id: u64, what: &str) -> String {
    format!("/admin/requests/{id}?done={what}")
}

/// Takes the next step of request `id` towards `to`, as the API's `advance` does.
async fn advance(act: &Act, id: u64, advance: Advance) -> Result<Audited, ApiError> {
    let state = &act.state;
    let to = advance.to;
    let request = state
        .steps()
        .advance(id, advance, &log_actor(act), state.now())
        .await?;
    Ok(Audited {
        action: "request.advance",
        detail: Some(format!(
            "to {}",
            to.map_or(request.state.as_str(), State::as_str)
        )),
    })
}

/// `POST /admin/requests/{id}/verify`: method, reference and agent.
pub async fn verify(Path(id): Path<String>, act: Act) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found(act.frame());
    };
    let method = act.field("method").unwrap_or_default().to_owned();
    let o = Outcome {
        reference: act.field("reference").unwrap_or_default().to_owned(),
        agent: act.field("agent").unwrap_or_default().to_owned(),
        method: method.clone(),
        ..Outcome::default()
    };
    let done = match VerificationMethod::parse(&method) {
        Some(method) => {
            let verification = Verification {
                method,
                reference: text(&act, "reference"),
                agent: text(&act, "agent"),
            };
            advance(
                &act,
                id,
                Advance {
                    to: Some(State::Verified),
                    verification: Some(verification),
                    note: None,
                },
            )
            .await
        }
        None => Err(ApiError::invalid_field(
            "verification.method",
            format!("`{method}` is not a verification method"),
        )),
    };
    after(&act, id, done, &done_at(id, "step"), "", o).await
}

/// `POST /admin/requests/{id}/start`: to `in_progress`, which opens its work.
pub async fn start(Path(id): Path<String>, act: Act) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found(act.frame());
    };
    let step = Advance {
        to: Some(State::InProgress),
        ..Advance::default()
    };
    let done = advance(&act, id, step).await;
    after(&act, id, done, &done_at(id, "step"), "", Outcome::default()).await
}

/// `POST /admin/requests/{id}/complete`, with an optional note.
pub async fn complete(Path(id): Path<String>, act: Act) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found(act.frame());
    };
    let step = Advance {
        to: Some(State::Completed),
        note: text(&act, "note"),
        ..Advance::default()
    };
    let done = advance(&act, id, step).await;
    after(&act, id, done, &done_at(id, "step"), "", Outcome::default()).await
}

/// `POST /admin/requests/{id}/extend`: the reason is required; the new due date is the latest
/// the rule allows.
pub async fn extend(Path(id): Path<String>, act: Act) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found(act.frame());
    };
    let reason = act.field("reason").unwrap_or_default().to_owned();
    let state = &act.state;
    let step = kept_core::requests::Transition::Extend {
        reason: reason.clone(),
        until: None,
    };
    let done =
        crate::requests::service::step(&state.work(), id, &step, &log_actor(&act), state.now())
            .await
            .map(|stepped| Audited {
                action: "request.extend",
                detail: Some(format!("due {}", datetime(stepped.request.due_at))),
            });
    let o = Outcome {
        reason,
        ..Outcome::default()
    };
    after(&act, id, done, &done_at(id, "extend"), "extend-reason", o).await
}

/// `POST /admin/requests/{id}/reject`: the reason is required.
pub async fn reject(Path(id): Path<String>, act: Act) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found(act.frame());
    };
    let reason = act.field("reason").unwrap_or_default().to_owned();
    let state = &act.state;
    let step = kept_core::requests::Transition::Reject {
        reason: reason.clone(),
    };
    let done =
        crate::requests::service::step(&state.work(), id, &step, &log_actor(&act), state.now())
            .await
            .map(|_| Audited {
                action: "request.reject",
                detail: None,
            });
    let o = Outcome {
        reason,
        ..Outcome::default()
    };
    after(&act, id, done, &done_at(id, "reject"), "reject-reason", o).await
}

/// `POST /admin/requests/{id}/handled`: a task (`target`) marked handled by hand, with the
/// required note.
pub async fn handled(Path(id): Path<String>, act: Act) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found(act.frame());
    };
    let raw = act.field("target").unwrap_or_default().to_owned();
    let note = act.field("note").unwrap_or_default().to_owned();
    let state = &act.state;
    let done = match Target::parse(&raw) {
        None => Err(ApiError::invalid_field(
            "target",
            format!("`{raw}` is not a task target: `kept`, `dataset:<name>` or `system:<name>`"),
        )),
        Some(target) => crate::requests::tasks::handled(
            &state.work(),
            id,
            &target,
            &note,
            &log_actor(&act),
            state.now(),
        )
        .await
        .and_then(|settled| {
            if settled.replayed {
                Err(kept_core::requests::RequestError::TaskSettled {
                    target: target.to_string(),
                }
                .into())
            } else {
                Ok(Audited {
                    action: "request.task_handled",
                    detail: Some(target.to_string()),
                })
            }
        }),
    };
    let o = Outcome {
        note,
        ..Outcome::default()
    };
    let field_id = format!("note:{raw}");
    after(&act, id, done, &done_at(id, "handled"), &field_id, o).await
}

/// `POST /admin/requests/{id}/erase`: carries the erasure out (`requests::erase::execute`).
pub async fn erase(Path(id): Path<String>, act: Act) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found(act.frame());
    };
    let state = &act.state;
    let work = state.work();
    let done =
        crate::requests::erase::execute(&state.erasure(&work), id, &log_actor(&act), state.now())
            .await
            .map(|outcome| Audited {
                action: "request.erase",
                detail: Some(format!("state {}", outcome.state.as_str())),
            });
    after(
        &act,
        id,
        done,
        &done_at(id, "erase"),
        "",
        Outcome::default(),
    )
    .await
}

/// `POST /admin/requests/{id}/export`: makes the export's signed download links and shows them
/// once, on the request's page.
pub async fn export(Path(id): Path<String>, act: Act) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found(act.frame());
    };
    let state = &act.state;
    let now = state.now();
    let made = async {
        let keys = state.prefcenter.keys(state.store.as_ref()).await?;
        crate::requests::export::links_for(
            state.store.as_ref(),
            keys,
            state.prefcenter.base_url(),
            id,
            None,
            now,
        )
        .await
    };
    let links = match made.await {
        Ok(links) => links,
        Err(e) => return after(&act, id, Err(e), "", "", Outcome::default()).await,
    };
    if let Err(e) = audit::record(
        state.store.as_ref(),
        &act.actor(),
        "request.export_link",
        Some(format!("request:{id}")),
        Some(format!("expires {}", datetime(links.expires_at))),
        now,
    )
    .await
    {
        return ApiError::from(e).into_response();
    }
    let expires = datetime(links.expires_at);
    let o = Outcome {
        links: Some((links, expires)),
        ..Outcome::default()
    };
    answer(state, act.frame(), id, StatusCode::CREATED, o).await
}
