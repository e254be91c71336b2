//! The customer's pages: sign-in, the preference page and its forms, double opt-in
//! confirmation, one-click unsubscribe, downloads and receipts. Server-rendered, usable without
//! JavaScript.
//!
//! Every POST that changes something needs the session's CSRF token and is refused when the
//! browser says it came from another site (`Sec-Fetch-Site`, `Origin`); the one-click
//! unsubscribe is the exception RFC 8058 asks for, carried by its signed token instead.

use super::COOKIE;
use super::model::{self, ChangeContext, ChangeError, Standing, Wanted};
use super::token::{Claims, Kind, TokenError, TokenKeys};
use crate::collect::ingest::{RequestFacts, sends_gpc};
use crate::http::client_ip::ClientIp;
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::web::form::{field, fields, form_or_empty};
use crate::web::frame::{self, Chrome, html, redirect};
use crate::web::frame::{date, datetime};
use crate::web::session::{Session, cross_site};
use crate::web::texts::{self, Texts};
use crate::web::{self, cookie, form, i18n};
use askama::Template;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kept_core::SubjectId;
use kept_core::index::Change;
use kept_core::ledger::{CollectionMethod, ConsentAction, Evidence};
use kept_core::manifest::Manifest;
use kept_core::subject::{Frequency, Period, QuietHours};
use serde::Deserialize;
use std::collections::HashSet;

/// Latest ledger entries listed on the page; the download holds them all.
const HISTORY_ROWS: usize = 50;
/// Latest events listed on the page.
const EVENT_ROWS: usize = 20;

// --- the frame every page shares ---------------------------------------------------------------

fn chrome(state: &AppState, t: &'static Texts, path: &'static str) -> Chrome {
    frame::chrome(&state.manifest.organisation, t, path)
}

/// The language of this request, among the organisation's.
fn language(state: &AppState, lang: Option<&str>, headers: &HeaderMap) -> &'static Texts {
    i18n::language(&state.manifest.organisation.locales, lang, headers)
}

fn session_cookie(value: &str, max_age_secs: i64, secure: bool) -> String {
    cookie::session(COOKIE, "/preferences", value, max_age_secs, secure)
}

fn lang_cookie(code: &str, secure: bool) -> String {
    i18n::lang_cookie("/preferences", code, secure)
}

// --- templates ---------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "prefcenter/signin.html")]
struct SignInPage {
    c: Chrome,
    message: Option<&'static str>,
    error: Option<&'static str>,
    form_token: String,
    available: bool,
}

#[derive(Template)]
#[template(path = "prefcenter/action.html")]
struct ActionPage {
    c: Chrome,
    title: &'static str,
    text: Option<&'static str>,
    done: Option<&'static str>,
    /// A standing fact to show (an erasure request and its deadline).
    status: Option<String>,
    error: Option<&'static str>,
    /// A button that posts `token` to `action`.
    form: Option<ActionForm>,
    back: Option<String>,
}

struct ActionForm {
    action: String,
    token: String,
    button: &'static str,
    one_click: bool,
}

#[derive(Template)]
#[template(path = "prefcenter/page.html")]
struct PreferencePage {
    c: Chrome,
    done: Option<&'static str>,
    error: Option<&'static str>,
    erasure: Option<ErasureView>,
    purposes: Vec<PurposeView>,
    channels: Vec<ChannelView>,
    dns: Option<DnsView>,
    gpc_sent: bool,
    has_marketing: bool,
    identifiers: Vec<IdentifierRow>,
    traits: Vec<TraitRow>,
    events: Vec<EventRow>,
    history: Vec<HistoryRow>,
    history_total: usize,
    lang: &'static str,
}

struct ErasureView {
    requested: String,
    due: String,
}

struct NoticeView {
    id: String,
    version: u32,
    hash: String,
    title: String,
    text: String,
}

struct PurposeView {
    key: String,
    name: String,
    description: String,
    basis: &'static str,
    switchable: bool,
    /// The section it is switched in instead, and that section's title.
    elsewhere: Option<(&'static str, &'static str)>,
    on: bool,
    notice: Option<NoticeView>,
}

struct TopicView {
    value: String,
    id: String,
    name: String,
    description: String,
    on: bool,
    pending: bool,
    /// The notice shown for this topic (text messages show theirs as the disclosure instead).
    notice: Option<NoticeView>,
}

struct ChannelView {
    key: String,
    name: String,
    topics: Vec<TopicView>,
    frequencies: Vec<Choice>,
    quiet_from: String,
    quiet_to: String,
    is_email: bool,
    /// The TCPA disclosure, for text messages.
    disclosure: Option<NoticeView>,
    sms_subscribed: bool,
}

struct Choice {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

struct DnsView {
    on: bool,
    gpc_binding: bool,
    gpc_recorded: bool,
}

struct IdentifierRow {
    kind: String,
    value: String,
    since: String,
}

struct TraitRow {
    key: String,
    category: String,
    value: String,
    collected: String,
    point: String,
    notice: String,
    /// The rectification request that corrected the value, if one did.
    corrected: Option<u64>,
}

struct EventRow {
    name: String,
    when: String,
}

struct HistoryRow {
    seq: u64,
    date: String,
    purpose: String,
    scope: String,
    choice: &'static str,
    how: String,
    notice: String,
}

fn minutes_text(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

fn notice_view(manifest: &Manifest, id: Option<&String>, t: &Texts) -> Option<NoticeView> {
    let id = id?;
    let n = manifest.notices.get(id)?;
    let text = n
        .locales
        .get(t.code)
        .or_else(|| {
            manifest
                .organisation
                .locales
                .first()
                .and_then(|c| n.locales.get(c))
        })
        .or_else(|| n.locales.values().next())?;
    Some(NoticeView {
        id: id.clone(),
        version: n.version,
        hash: n.hash.get(..12).unwrap_or(&n.hash).to_owned(),
        title: text.title.clone(),
        text: text.text.clone(),
    })
}

fn basis_text(t: &'static Texts, basis: Option<kept_core::manifest::LegalBasis>) -> &'static str {
    use kept_core::manifest::LegalBasis;
    match basis {
        Some(LegalBasis::Consent) => t.basis_consent,
        Some(LegalBasis::Contract) => t.basis_contract,
        Some(LegalBasis::LegalObligation) => t.basis_legal_obligation,
        Some(LegalBasis::LegitimateInterests) => t.basis_legitimate_interests,
        _ => t.basis_other,
    }
}

fn frequency_value(f: Option<Frequency>) -> &'static str {
    match f.map(|f| f.period) {
        None => "any",
        Some(Period::Day) => "day",
        Some(Period::Week) => "week",
        Some(Period::Month) => "month",
    }
}

async fn build_page(
    state: &AppState,
    standing: &Standing,
    c: Chrome,
    gpc_sent: bool,
    done: Option<&'static str>,
    error: Option<&'static str>,
) -> Result<PreferencePage, ApiError> {
    let t = c.t;
    let manifest = state.manifest.as_ref();
    let purposes = standing
        .purposes
        .iter()
        .map(|p| {
            let (name, description) = manifest
                .purposes
                .get(&p.key)
                .map_or((p.key.as_str(), ""), |m| m.text_in(t.code));
            PurposeView {
                key: p.key.clone(),
                name: name.to_owned(),
                description: description.to_owned(),
                basis: basis_text(t, p.basis),
                switchable: p.switchable,
                elsewhere: p.elsewhere.map(|anchor| {
                    let title = if anchor == "messages" {
                        t.messages_title
                    } else {
                        t.do_not_sell_title
                    };
                    (anchor, title)
                }),
                on: p.allowed,
                notice: notice_view(manifest, p.notice.as_ref(), t),
            }
        })
        .collect();
    let channels = standing
        .channels
        .iter()
        .map(|ch| {
            let manifest_name = manifest
                .channels
                .get(&ch.channel)
                .map_or(ch.channel.as_str(), |c| c.name.as_str());
            let frequency = frequency_value(ch.frequency);
            let sms = ch.channel == "sms";
            ChannelView {
                key: ch.channel.clone(),
                name: t.channel(&ch.channel, manifest_name).to_owned(),
                topics: ch
                    .topics
                    .iter()
                    .map(|tp| {
                        let m = manifest.topics.get(&tp.topic);
                        let (name, description) = match m {
                            // The manifest's own words in this language, when it has them...
                            Some(m) if m.translations.contains_key(t.code) => m.text_in(t.code),
                            // ...else the page's word for the common topics.
                            Some(m) => (t.topic(&tp.topic, &m.name), m.description.as_str()),
                            None => (tp.topic.as_str(), ""),
                        };
                        TopicView {
                            value: format!("{}:{}", ch.channel, tp.topic),
                            id: format!("topic-{}-{}", ch.channel, tp.topic),
                            name: name.to_owned(),
                            description: description.to_owned(),
                            on: tp.subscribed,
                            pending: tp.pending,
                            notice: if sms {
                                None
                            } else {
                                notice_view(manifest, tp.notice.as_ref(), t)
                            },
                        }
                    })
                    .collect(),
                frequencies: [
                    ("any", t.freq_any),
                    ("day", t.freq_day),
                    ("week", t.freq_week),
                    ("month", t.freq_month),
                ]
                .into_iter()
                .map(|(value, label)| Choice {
                    value,
                    label,
                    selected: value == frequency,
                })
                .collect(),
                quiet_from: ch
                    .quiet
                    .map(|q| minutes_text(q.start_minute))
                    .unwrap_or_default(),
                quiet_to: ch
                    .quiet
                    .map(|q| minutes_text(q.end_minute))
                    .unwrap_or_default(),
                is_email: ch.channel == "email",
                disclosure: if sms {
                    ch.topics
                        .iter()
                        .find_map(|tp| notice_view(manifest, tp.notice.as_ref(), t))
                } else {
                    None
                },
                sms_subscribed: sms && ch.topics.iter().any(|tp| tp.subscribed),
            }
        })
        .collect();
    let identifiers: Vec<IdentifierRow> = crate::subjects::identifiers::opened(
        state.store.as_ref(),
        &state.identity,
        standing.subject.id,
    )
    .await?
    .into_iter()
    .map(|(kind, value, since)| IdentifierRow {
        kind: kind.as_str().replace('_', " "),
        value: value.unwrap_or_else(|| t.hidden_value.to_owned()),
        since: date(since),
    })
    .collect();
    let traits = standing
        .traits
        .iter()
        .map(|tr| TraitRow {
            key: tr.key.clone(),
            category: tr.category.clone(),
            value: match &tr.value {
                serde_json::Value::String(s) => s.clone(),
                v if v.get("sealed_identifier").is_some() => t.hidden_value.to_owned(),
                v => {
                    let text = v.to_string();
                    if text.chars().count() > 80 {
                        format!("{}…", text.chars().take(80).collect::<String>())
                    } else {
                        text
                    }
                }
            },
            collected: date(tr.provenance.collected_at),
            corrected: tr.provenance.corrected_by_request(),
            point: manifest
                .collection_points
                .get(&tr.provenance.collection_point)
                .map_or_else(
                    || tr.provenance.collection_point.clone(),
                    |p| p.name.clone(),
                ),
            notice: if tr.provenance.notice_id.is_empty() {
                String::new()
            } else {
                format!(
                    "{} v{}",
                    tr.provenance.notice_id, tr.provenance.notice_version
                )
            },
        })
        .collect();
    let events = recent_events(state.store.as_ref(), standing.subject.id)
        .await?
        .into_iter()
        .rev()
        .map(|e| EventRow {
            name: match e.event.name {
                Some(name) => format!("{} · {name}", e.event.kind),
                None => e.event.kind,
            },
            when: datetime(e.event.at),
        })
        .collect();
    let history = standing
        .records
        .iter()
        .rev()
        .take(HISTORY_ROWS)
        .map(|r| {
            let rec = &r.record;
            let scope = match (&rec.channel, &rec.topic) {
                (None, _) => t.all_channels.to_owned(),
                (Some(ch), None) => t.channel(ch, ch).to_owned(),
                (Some(ch), Some(tp)) => format!("{} · {}", t.channel(ch, ch), t.topic(tp, tp)),
            };
            HistoryRow {
                seq: r.seq,
                date: datetime(rec.at),
                purpose: manifest
                    .purposes
                    .get(&rec.purpose)
                    .map_or_else(|| rec.purpose.clone(), |p| p.text_in(t.code).0.to_owned()),
                scope,
                choice: t.action(rec.action),
                how: rec.method.as_str().replace('_', " "),
                notice: rec
                    .notice
                    .as_ref()
                    .map(|n| {
                        format!(
                            "{} v{} · {}",
                            n.id,
                            n.version,
                            n.hash.get(..8).unwrap_or(&n.hash)
                        )
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    let has_marketing = manifest.purposes.keys().any(|k| {
        kept_core::rulebook::PurposeClass::of(k) == kept_core::rulebook::PurposeClass::Marketing
    });
    Ok(PreferencePage {
        lang: t.code,
        done,
        error,
        erasure: standing
            .erasure
            .as_ref()
            .filter(|e| e.state == kept_store::requests::ErasureState::Received)
            .map(|e| ErasureView {
                requested: date(e.requested_at),
                due: date(e.due_at),
            }),
        purposes,
        channels,
        dns: standing.do_not_sell.as_ref().map(|d| DnsView {
            on: d.on,
            gpc_binding: d.gpc_binding,
            gpc_recorded: d.gpc_recorded,
        }),
        gpc_sent,
        has_marketing,
        identifiers,
        traits,
        events,
        history_total: standing.records.len(),
        history,
        c,
    })
}

/// The latest events of a subject, oldest first.
async fn recent_events(
    store: &dyn kept_store::Store,
    subject: SubjectId,
) -> Result<Vec<kept_store::collection::StoredEvent>, ApiError> {
    let mut kept: std::collections::VecDeque<kept_store::collection::StoredEvent> =
        std::collections::VecDeque::with_capacity(EVENT_ROWS);
    let mut after = None;
    // Bounded: a subject with a very long history shows the latest of its first pages.
    for _ in 0..10 {
        let page = store.events_of(subject, after, 1_000).await?;
        let full = page.len() == 1_000;
        after = page.last().map(|e| e.id);
        for e in page {
            if kept.len() == EVENT_ROWS {
                kept.pop_front();
            }
            kept.push_back(e);
        }
        if !full {
            break;
        }
    }
    Ok(kept.into_iter().collect())
}

// --- sessions, CSRF and origins ----------------------------------------------------------------

async fn session(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, ApiError> {
    if cookie::read(headers, COOKIE).is_none() {
        return Ok(None);
    }
    let keys = state.prefcenter.keys(state.store.as_ref()).await?;
    let store = state.store.as_ref();
    Ok(web::session::open(keys, store, COOKIE, headers, state.now()).await?)
}

fn evidence(
    headers: &HeaderMap,
    ip: ClientIp,
    reference: Option<String>,
    ip_key: Option<&kept_core::identity::IdentityKeys>,
) -> Evidence {
    let facts = RequestFacts::new(headers, ip);
    Evidence {
        ip_hash: facts
            .ip
            .as_deref()
            .and_then(|ip| ip_key.map(|k| k.ip_hash(ip))),
        user_agent: facts.user_agent,
        text_hash: None,
        reference,
    }
}

async fn context(
    state: &AppState,
    headers: &HeaderMap,
    ip: ClientIp,
    t: &'static Texts,
    reference: Option<String>,
) -> Result<ChangeContext, ApiError> {
    let keys = state.identity.keys(state.store.as_ref()).await?;
    Ok(ChangeContext {
        method: CollectionMethod::WebForm,
        evidence: evidence(headers, ip, reference, Some(keys)),
        texts: t,
        now: state.now(),
    })
}

fn refused(
    state: &AppState,
    t: &'static Texts,
    status: StatusCode,
    message: &'static str,
) -> Response {
    html(
        status,
        ActionPage {
            c: chrome(state, t, "/preferences/sign-in"),
            title: t.page_title,
            text: None,
            done: None,
            status: None,
            error: Some(message),
            form: None,
            back: Some(format!("/preferences/sign-in?lang={}", t.code)),
        }
        .render(),
    )
}

/// The checks every session form passes: same site, a session, its CSRF token.
async fn signed_in_post(
    state: &AppState,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<(Session, &'static Texts), Response> {
    let t = language(state, field(form, "lang"), headers);
    if cross_site(state.prefcenter.base_url(), headers) {
        return Err(refused(state, t, StatusCode::FORBIDDEN, t.cross_site));
    }
    let session = match session(state, headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(refused(state, t, StatusCode::UNAUTHORIZED, t.session_ended)),
        Err(e) => return Err(e.into_response()),
    };
    let keys = match state.prefcenter.keys(state.store.as_ref()).await {
        Ok(k) => k,
        Err(e) => return Err(ApiError::from(e).into_response()),
    };
    let presented = field(form, "csrf").unwrap_or_default();
    if !keys.csrf_matches(&session.claims.id, presented) {
        return Err(refused(state, t, StatusCode::FORBIDDEN, t.form_expired));
    }
    Ok((session, t))
}

async fn load_standing(state: &AppState, subject: SubjectId) -> Result<Option<Standing>, ApiError> {
    let (store, manifest) = (state.store.as_ref(), state.manifest.as_ref());
    crate::subjects::standing::standing(store, &state.index, manifest, subject, state.now()).await
}

fn done_path(t: &Texts, done: &str, anchor: &str) -> String {
    format!("/preferences?lang={}&done={done}#{anchor}", t.code)
}

// --- handlers ----------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    lang: Option<String>,
    done: Option<String>,
    reason: Option<String>,
}

fn done_text(t: &'static Texts, done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "saved" => t.done_saved,
        "confirm_sent" => t.done_confirm_sent,
        "confirmed" => t.done_confirmed,
        "unsubscribed_all" => t.done_unsubscribed_all,
        "unsubscribed" => t.done_unsubscribed,
        "erasure" => t.done_erasure,
        _ => return None,
    })
}

/// `GET /preferences`: the page, for a signed-in customer; anyone else is sent to sign in.
pub async fn show(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let t = language(&state, q.lang.as_deref(), &headers);
    let secure = state.prefcenter.secure(&headers);
    let lang_set: Vec<String> = q
        .lang
        .as_deref()
        .and_then(texts::by_code)
        .map(|l| vec![lang_cookie(l.code, secure)])
        .unwrap_or_default();
    let session = match session(&state, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return redirect(
                &format!("/preferences/sign-in?lang={}&reason=session", t.code),
                &lang_set,
            );
        }
        Err(e) => return e.into_response(),
    };
    let result = async {
        let Some(mut standing) = load_standing(&state, session.claims.subject()).await? else {
            return Ok(None);
        };
        let gpc_sent = sends_gpc(&headers);
        if gpc_sent {
            let ctx = context(
                &state,
                &headers,
                ip,
                t,
                Some(kept_core::signals::gpc::EVIDENCE.to_owned()),
            )
            .await?;
            if state
                .changes()
                .honour_gpc(&standing, &ctx)
                .await
                .map_err(ChangeError::into_api)?
                && let Some(fresh) = load_standing(&state, standing.subject.id).await?
            {
                standing = fresh;
            }
        }
        let mut c = chrome(&state, t, "/preferences");
        c.signed_in = true;
        c.csrf = session.csrf.clone();
        let page = build_page(
            &state,
            &standing,
            c,
            gpc_sent,
            done_text(t, q.done.as_deref()),
            None,
        )
        .await?;
        Ok::<_, ApiError>(Some(page))
    }
    .await;
    match result {
        Ok(Some(page)) => {
            let mut response = html(StatusCode::OK, page.render());
            for c in lang_set {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    response.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            response
        }
        Ok(None) => redirect(
            &format!("/preferences/sign-in?lang={}&reason=session", t.code),
            &[session_cookie("", 0, secure)],
        ),
        Err(e) => e.into_response(),
    }
}

async fn sign_in_page(
    state: &AppState,
    t: &'static Texts,
    status: StatusCode,
    message: Option<&'static str>,
    error: Option<&'static str>,
) -> Response {
    let keys = match state.prefcenter.keys(state.store.as_ref()).await {
        Ok(k) => k,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let claims = super::token::fresh(
        Kind::SignInForm,
        SubjectId(0),
        state.now() + 60 * super::MINUTE,
    );
    html(
        status,
        SignInPage {
            c: chrome(state, t, "/preferences/sign-in"),
            message,
            error,
            form_token: keys.sign(&claims),
            available: state.prefcenter.mailer().can_send(),
        }
        .render(),
    )
}

/// `GET /preferences/sign-in`.
pub async fn sign_in_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let t = language(&state, q.lang.as_deref(), &headers);
    let error = match q.reason.as_deref() {
        Some("session") => Some(t.session_ended),
        Some("link") => Some(t.link_invalid),
        _ => None,
    };
    sign_in_page(&state, t, StatusCode::OK, None, error).await
}

/// `POST /preferences/sign-in`: mails a sign-in link if the address is known. The answer is
/// the same either way, and comes before the mail is sent.
pub async fn sign_in(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let form = form_or_empty(form);
    let t = language(&state, field(&form, "lang"), &headers);
    if cross_site(state.prefcenter.base_url(), &headers) {
        return refused(&state, t, StatusCode::FORBIDDEN, t.cross_site);
    }
    let now = state.now();
    let keys = match state.prefcenter.keys(state.store.as_ref()).await {
        Ok(k) => k.clone(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    if keys
        .open(
            Kind::SignInForm,
            field(&form, "form_token").unwrap_or_default(),
            now,
        )
        .is_err()
    {
        return sign_in_page(&state, t, StatusCode::FORBIDDEN, None, Some(t.form_expired)).await;
    }
    if !state.prefcenter.mailer().can_send() {
        return sign_in_page(
            &state,
            t,
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            Some(t.signin_unavailable),
        )
        .await;
    }
    let raw = field(&form, "email").unwrap_or_default();
    let normalized = kept_core::identity::normalize_email(raw).ok();
    let limit_key = normalized
        .clone()
        .unwrap_or_else(|| raw.trim().to_lowercase());
    let ip = ip.text();
    if !state
        .prefcenter
        .admit_sign_in(&limit_key, ip.as_deref(), now)
    {
        return sign_in_page(
            &state,
            t,
            StatusCode::TOO_MANY_REQUESTS,
            None,
            Some(t.too_many),
        )
        .await;
    }
    if let Some(address) = normalized {
        let subject = match model::subject_by_email(
            state.store.as_ref(),
            &state.identity,
            &state.prefcenter,
            &address,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => return e.into_response(),
        };
        if let Some(subject) = subject {
            let link = state
                .prefcenter
                .sign_in_link(
                    state.store.as_ref(),
                    subject,
                    state.prefcenter.config().link_ttl,
                    Some(t.code.to_owned()),
                    now,
                )
                .await;
            let link = match link {
                Ok((link, _)) => link,
                Err(e) => return ApiError::from(e).into_response(),
            };
            let mail = super::mail::Mail {
                to: address,
                subject: format!(
                    "{} · {}",
                    t.mail_signin_subject, state.manifest.organisation.name
                ),
                text: format!("{}\n\n{link}\n\n{}\n", t.mail_signin_body, t.mail_ignore),
            };
            let mailer = state.prefcenter.mailer().clone();
            tokio::spawn(async move {
                if let Err(e) = mailer.send(mail, &link).await {
                    tracing::warn!(code = e.code(), error = %e, "sign-in mail not sent");
                }
            });
        }
    }
    sign_in_page(&state, t, StatusCode::OK, Some(t.signin_sent), None).await
}

#[derive(Debug, Default, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
    lang: Option<String>,
}

/// `GET /preferences/open?token=…`: spends a sign-in link and opens a session.
pub async fn open_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let now = state.now();
    let keys = match state.prefcenter.keys(state.store.as_ref()).await {
        Ok(k) => k.clone(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let opened = keys.open(Kind::Link, q.token.as_deref().unwrap_or_default(), now);
    let t = language(
        &state,
        q.lang
            .as_deref()
            .or(opened.as_ref().ok().and_then(|c| c.locale.as_deref())),
        &headers,
    );
    let claims = match opened {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(code = e.code(), "preference link refused");
            return sign_in_page(&state, t, StatusCode::FORBIDDEN, None, Some(t.link_invalid))
                .await;
        }
    };
    match state
        .store
        .spend_token(&claims.id, claims.expires, now)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(code = TokenError::Spent.code(), "preference link refused");
            return sign_in_page(&state, t, StatusCode::FORBIDDEN, None, Some(t.link_invalid))
                .await;
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    match state.store.subject(claims.subject()).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return sign_in_page(&state, t, StatusCode::FORBIDDEN, None, Some(t.link_invalid))
                .await;
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    let ttl = state.prefcenter.config().session_ttl;
    let mut session = super::token::fresh(Kind::Session, claims.subject(), now + ttl);
    session.locale = Some(t.code.to_owned());
    // Opening it revokes the subject's older sessions: a new sign-in link ends the old ones.
    if let Err(e) = state
        .store
        .open_session(kept_store::prefcenter::NewSession {
            id: session.id.clone(),
            subject: session.subject(),
            created_at: now,
            expires_at: session.expires,
        })
        .await
    {
        return ApiError::from(e).into_response();
    }
    // The visit, recorded with the session, is an interaction the decisions count from.
    let visit = Change::Interaction {
        subject: session.subject(),
        at: now,
    };
    if let Err(e) = state.index.apply(vec![visit]).await {
        return ApiError::from(e).into_response();
    }
    let secure = state.prefcenter.secure(&headers);
    redirect(
        &format!("/preferences?lang={}", t.code),
        &[
            session_cookie(&keys.sign(&session), ttl / 1000, secure),
            lang_cookie(t.code, secure),
        ],
    )
}

/// `POST /preferences/sign-out`.
pub async fn sign_out(posted: Posted) -> Response {
    let Posted {
        state,
        headers,
        form,
        ..
    } = &posted;
    match signed_in_post(state, headers, form).await {
        Ok((session, t)) => {
            // Ended on the server, so a copy of the cookie opens nothing either.
            if let Err(e) = state
                .store
                .revoke_session(&session.claims.id, state.now())
                .await
            {
                return ApiError::from(e).into_response();
            }
            redirect(
                &format!("/preferences/sign-in?lang={}", t.code),
                &[session_cookie("", 0, state.prefcenter.secure(headers))],
            )
        }
        Err(response) => response,
    }
}

/// Runs a change for the signed-in customer and answers with a redirect to the page, or the
/// page with the error.
async fn change<F, Fut>(posted: &Posted, anchor: &'static str, run: F) -> Response
where
    F: FnOnce(Standing, ChangeContext, &'static Texts) -> Fut,
    Fut: std::future::Future<Output = Result<&'static str, ChangeError>>,
{
    let Posted {
        state,
        ip,
        headers,
        form,
    } = posted;
    let (session, t) = match signed_in_post(state, headers, form).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let reference = Some(format!(
        "session {}",
        session.claims.id.get(..8).unwrap_or_default()
    ));
    let result = async {
        let standing = load_standing(state, session.claims.subject())
            .await
            .map_err(ChangeError::Api)?
            .ok_or_else(|| ChangeError::Api(ApiError::NotFound("subject not found".into())))?;
        let ctx = context(state, headers, *ip, t, reference)
            .await
            .map_err(ChangeError::Api)?;
        run(standing, ctx, t).await
    }
    .await;
    match result {
        Ok(done) => redirect(&done_path(t, done, anchor), &[]),
        Err(ChangeError::Api(e)) => e.into_response(),
        Err(e) => refused_change(state, &session, t, sends_gpc(headers), e.message(t)).await,
    }
}

/// The page again, with `message` saying why the change was not made (422).
async fn refused_change(
    state: &AppState,
    session: &Session,
    t: &'static Texts,
    gpc_sent: bool,
    message: &'static str,
) -> Response {
    let page = async {
        let standing = load_standing(state, session.claims.subject())
            .await?
            .ok_or_else(|| ApiError::NotFound("subject not found".into()))?;
        let mut c = chrome(state, t, "/preferences");
        c.signed_in = true;
        c.csrf = session.csrf.clone();
        build_page(state, &standing, c, gpc_sent, None, Some(message)).await
    }
    .await;
    match page {
        Ok(page) => html(StatusCode::UNPROCESSABLE_ENTITY, page.render()),
        Err(e) => e.into_response(),
    }
}

/// What a form post to a signed-in page carries (`signed_in_post` refuses an empty form).
pub type Posted = form::Posted<AppState>;

/// `POST /preferences/purposes`: the purpose switches (a ticked box is `purpose=<key>`).
pub async fn save_purposes(posted: Posted) -> Response {
    let on: HashSet<&str> = fields(&posted.form, "purpose").collect();
    change(&posted, "purposes", |standing, ctx, _| {
        let state = &posted.state;
        let on = &on;
        async move {
            let wanted = Wanted {
                purposes: standing
                    .purposes
                    .iter()
                    .filter(|p| p.switchable)
                    .map(|p| (p.key.clone(), on.contains(p.key.as_str())))
                    .collect(),
                ..Wanted::default()
            };
            state.changes().apply(&standing, &wanted, &ctx).await?;
            Ok("saved")
        }
    })
    .await
}

fn parse_time(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// Frequency and quiet hours from the form (`frequency.<channel>`, `quiet_from.<channel>`,
/// `quiet_to.<channel>`).
pub fn channel_choice(
    frequency: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> (Option<Frequency>, Option<QuietHours>) {
    let frequency = match frequency.unwrap_or("any") {
        "day" => Some(Period::Day),
        "week" => Some(Period::Week),
        "month" => Some(Period::Month),
        _ => None,
    }
    .map(|period| Frequency { max: 1, period });
    let quiet = match (from.and_then(parse_time), to.and_then(parse_time)) {
        (Some(start_minute), Some(end_minute)) if start_minute != end_minute => Some(QuietHours {
            start_minute,
            end_minute,
        }),
        _ => None,
    };
    (frequency, quiet)
}

/// `POST /preferences/messages`: topics per channel (`topic=<channel>:<topic>`), frequency
/// and quiet hours per channel, and the SMS opt-in's number and agreement.
pub async fn save_messages(posted: Posted) -> Response {
    change(&posted, "messages", |standing, ctx, _| {
        let state = &posted.state;
        let form = &posted.form;
        async move {
            let on: HashSet<&str> = fields(form, "topic").collect();
            let mut wanted = Wanted::default();
            for ch in &standing.channels {
                for tp in &ch.topics {
                    let key = format!("{}:{}", ch.channel, tp.topic);
                    wanted.topics.push((
                        ch.channel.clone(),
                        tp.topic.clone(),
                        on.contains(key.as_str()),
                    ));
                }
                let name = |prefix: &str| format!("{prefix}.{}", ch.channel);
                let (frequency, quiet) = channel_choice(
                    field(form, &name("frequency")),
                    field(form, &name("quiet_from")),
                    field(form, &name("quiet_to")),
                );
                wanted.channels.push((ch.channel.clone(), frequency, quiet));
            }
            wanted.sms = model::SmsConsent {
                phone: field(form, "phone").map(str::to_owned),
                accepted: field(form, "sms_agree").is_some(),
            };
            let outcome = state.changes().apply(&standing, &wanted, &ctx).await?;
            Ok(if outcome.confirmations > 0 {
                "confirm_sent"
            } else {
                "saved"
            })
        }
    })
    .await
}

/// `POST /preferences/do-not-sell`.
pub async fn save_do_not_sell(posted: Posted) -> Response {
    let on = field(&posted.form, "do_not_sell").is_some();
    change(&posted, "do-not-sell", |standing, ctx, _| {
        let state = &posted.state;
        async move {
            let wanted = Wanted {
                do_not_sell: Some(on),
                ..Wanted::default()
            };
            state.changes().apply(&standing, &wanted, &ctx).await?;
            Ok("saved")
        }
    })
    .await
}

/// `POST /preferences/unsubscribe-all`.
pub async fn unsubscribe_all(posted: Posted) -> Response {
    change(&posted, "messages", |standing, ctx, _| {
        let state = &posted.state;
        async move {
            state.changes().unsubscribe_all(&standing, &ctx).await?;
            Ok("unsubscribed_all")
        }
    })
    .await
}

/// `POST /preferences/erase`: files an erasure request (the box must be ticked).
pub async fn erase(posted: Posted) -> Response {
    if field(&posted.form, "confirm").is_none() {
        let state = &posted.state;
        return match signed_in_post(state, &posted.headers, &posted.form).await {
            Ok((session, t)) => {
                refused_change(state, &session, t, false, t.delete_needs_confirm).await
            }
            Err(response) => response,
        };
    }
    let Posted {
        state,
        headers,
        form,
        ..
    } = &posted;
    let (session, t) = match signed_in_post(state, headers, form).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let now = state.now();
    let filed = async {
        let standing = load_standing(state, session.claims.subject())
            .await?
            .ok_or_else(|| ApiError::NotFound("subject not found".into()))?;
        let filed = state
            .changes()
            .request_erasure(&standing, now)
            .await
            .map_err(|e| match e {
                ChangeError::Api(e) => e,
                other => ApiError::Internal(format!("erasure request: {other}")),
            })?;
        // The first click also files it as a data subject request, with its log.
        if standing.subject.erasure_requested_at.is_none() {
            let work = state.work();
            let stepped = crate::requests::service::file_from_preference_center(
                &work,
                &standing.subject,
                standing.regime,
                kept_core::requests::RequestKind::Erasure,
                now,
            )
            .await?;
            // Verified by the session: carried out at once, off this request (the company's
            // databases may take a while); a run a crash cut short is resumed with
            // `POST /v1/requests/{id}/erase` or `kept dsr erase --request`.
            let id = stepped.request.id;
            crate::requests::service::step(
                &work,
                id,
                &kept_core::requests::Transition::Advance {
                    expect: Some(kept_core::requests::State::Verified),
                    verification: None,
                    note: None,
                },
                crate::requests::service::PREFERENCE_CENTER,
                now,
            )
            .await?;
            let state = state.clone();
            tokio::spawn(async move {
                let now = state.now();
                let result = crate::requests::erase::execute(
                    &state.erasure(&work),
                    id,
                    crate::requests::service::PREFERENCE_CENTER,
                    now,
                )
                .await;
                if let Err(e) = result {
                    tracing::warn!(request = id, error = %e, "the preference center's erasure could not be carried out; resume it with POST /v1/requests/{id}/erase");
                }
            });
        }
        // Erasure ends every session of the subject, this one included: the page that shows
        // the data is closed from now on.
        state
            .store
            .revoke_sessions(session.claims.subject(), now)
            .await?;
        Ok::<_, ApiError>(filed)
    }
    .await;
    let filed = match filed {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let mut response = html(
        StatusCode::OK,
        ActionPage {
            c: chrome(state, t, "/preferences/sign-in"),
            title: t.page_title,
            text: None,
            done: Some(t.done_erasure),
            status: Some(format!(
                "{} {}. {} {}. {}",
                t.erasure_requested,
                date(filed.requested_at),
                t.erasure_due,
                date(filed.due_at),
                t.erasure_note
            )),
            error: None,
            form: None,
            back: None,
        }
        .render(),
    );
    if let Ok(v) = HeaderValue::from_str(&session_cookie("", 0, state.prefcenter.secure(headers))) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// The signed-in customer's standing, or the answer to give instead.
async fn signed_in_get(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Standing, &'static Texts), Response> {
    let t = language(state, None, headers);
    let session = match session(state, headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(refused(state, t, StatusCode::UNAUTHORIZED, t.session_ended)),
        Err(e) => return Err(e.into_response()),
    };
    match load_standing(state, session.claims.subject()).await {
        Ok(Some(s)) => Ok((s, t)),
        Ok(None) => Err(refused(state, t, StatusCode::UNAUTHORIZED, t.session_ended)),
        Err(e) => Err(e.into_response()),
    }
}

fn download(content_type: &'static str, filename: String, body: Vec<u8>) -> Response {
    crate::web::frame::attachment(content_type, &filename, body)
}

/// `GET /preferences/data.json`, `data.zip` and `data.html`: everything held about the
/// customer, as an access request of its own, verified by the session and answered at once.
async fn download_export(
    state: &AppState,
    headers: &HeaderMap,
    format: crate::subjects::export::Format,
) -> Response {
    let (standing, t) = match signed_in_get(state, headers).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    // A link on another site must not file requests in the customer's name.
    if cross_site(state.prefcenter.base_url(), headers) {
        return refused(state, t, StatusCode::FORBIDDEN, t.cross_site);
    }
    let answered = state
        .hand_over()
        .answer_at_once(&standing.subject, standing.regime, format, t, state.now())
        .await;
    match answered {
        Ok((_, rendered)) => download(
            format.content_type(),
            format.file_name(standing.subject.id),
            rendered.bytes,
        ),
        Err(e) => e.into_response(),
    }
}

/// `GET /preferences/data.json`: the export as JSON.
pub async fn download_json(State(state): State<AppState>, headers: HeaderMap) -> Response {
    download_export(&state, &headers, crate::subjects::export::Format::Json).await
}

/// `GET /preferences/data.zip`: the export as a zip of CSV files.
pub async fn download_csv(State(state): State<AppState>, headers: HeaderMap) -> Response {
    download_export(&state, &headers, crate::subjects::export::Format::Csv).await
}

/// `GET /preferences/data.html`: the export as a page in the customer's language.
pub async fn download_html(State(state): State<AppState>, headers: HeaderMap) -> Response {
    download_export(&state, &headers, crate::subjects::export::Format::Html).await
}

/// `GET /preferences/receipts/{seq}`: the signed receipt of one of the customer's records.
pub async fn receipt(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(seq): Path<String>,
) -> Response {
    let (standing, t) = match signed_in_get(&state, &headers).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let seq = seq.trim_end_matches(".json").parse::<u64>().ok();
    // Only the customer's own records: another subject's seq is as unknown as a missing one.
    let entries = match state.store.ledger_for_subject(standing.subject.id).await {
        Ok(e) => e,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let Some(entry) = entries.iter().find(|e| Some(e.seq) == seq) else {
        return ApiError::NotFound("no such record of yours".into()).into_response();
    };
    let Some(record) = standing.records.iter().find(|r| r.seq == entry.seq) else {
        return ApiError::NotFound("no such record of yours".into()).into_response();
    };
    let ledger = &state.ledger;
    // Every batch Kept commits carries its checkpoint, so one covers the record already;
    // a record appended unsigned (another process) gets one signed now. None at all means the
    // ledger cannot be vouched for: no receipt rather than one without its checkpoint.
    let checkpoint = match ledger.checkpoint_covering(entry.seq).await {
        Ok(Some(cp)) => cp,
        Ok(None) => {
            return ApiError::from(kept_store::StoreError::Unavailable(
                "no ledger checkpoint covers this record yet".into(),
            ))
            .into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let value = kept_core::receipt::build(
        &state.manifest,
        kept_core::receipt::Entry {
            seq: entry.seq,
            hash: &entry.hash,
            bytes: &entry.bytes,
            record: &record.record,
            checkpoint: Some(&checkpoint),
        },
        t.code,
        &format!("{}/preferences", state.prefcenter.base_url()),
        &ledger.verifying_key(),
        |m| ledger.sign(m),
    );
    download(
        "application/json",
        format!("consent-receipt-{}.json", entry.seq),
        serde_json::to_vec_pretty(&value).unwrap_or_default(),
    )
}

fn token_page(
    state: &AppState,
    t: &'static Texts,
    title: &'static str,
    text: &'static str,
    form: ActionForm,
) -> Response {
    html(
        StatusCode::OK,
        ActionPage {
            c: chrome(state, t, "/preferences"),
            title,
            text: Some(text),
            done: None,
            status: None,
            error: None,
            form: Some(form),
            back: None,
        }
        .render(),
    )
}

fn done_page(
    state: &AppState,
    t: &'static Texts,
    title: &'static str,
    done: &'static str,
) -> Response {
    html(
        StatusCode::OK,
        ActionPage {
            c: chrome(state, t, "/preferences"),
            title,
            text: None,
            done: Some(done),
            status: None,
            error: None,
            form: None,
            back: Some(format!("/preferences?lang={}", t.code)),
        }
        .render(),
    )
}

async fn open_token(
    state: &AppState,
    kind: Kind,
    token: &str,
) -> Result<(Claims, TokenKeys), Result<TokenError, ApiError>> {
    let keys = state
        .prefcenter
        .keys(state.store.as_ref())
        .await
        .map_err(|e| Err(ApiError::from(e)))?
        .clone();
    let claims = keys.open(kind, token, state.now()).map_err(Ok)?;
    Ok((claims, keys))
}

/// `GET /preferences/confirm?token=…`: a button that confirms. A mail scanner that follows
/// the link confirms nothing; a person presses the button.
pub async fn confirm_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let token = q.token.unwrap_or_default();
    match open_token(&state, Kind::Confirm, &token).await {
        Ok((claims, _)) => {
            let t = language(
                &state,
                q.lang.as_deref().or(claims.locale.as_deref()),
                &headers,
            );
            token_page(
                &state,
                t,
                t.confirm_title,
                t.confirm_text,
                ActionForm {
                    action: "/preferences/confirm".to_owned(),
                    token: token.clone(),
                    button: t.confirm_button,
                    one_click: false,
                },
            )
        }
        Err(Ok(_)) => {
            let t = language(&state, q.lang.as_deref(), &headers);
            refused(&state, t, StatusCode::FORBIDDEN, t.link_invalid)
        }
        Err(Err(e)) => e.into_response(),
    }
}

/// `POST /preferences/confirm`: the double opt-in's second step, once per link.
pub async fn confirm(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let form = form_or_empty(form);
    let t0 = language(&state, field(&form, "lang"), &headers);
    if cross_site(state.prefcenter.base_url(), &headers) {
        return refused(&state, t0, StatusCode::FORBIDDEN, t0.cross_site);
    }
    let token = field(&form, "token").unwrap_or_default();
    let (claims, _) = match open_token(&state, Kind::Confirm, token).await {
        Ok(c) => c,
        Err(Ok(_)) => return refused(&state, t0, StatusCode::FORBIDDEN, t0.link_invalid),
        Err(Err(e)) => return e.into_response(),
    };
    let t = language(&state, claims.locale.as_deref(), &headers);
    let Some(topic) = claims.topic.clone() else {
        return refused(&state, t, StatusCode::FORBIDDEN, t.link_invalid);
    };
    match state
        .store
        .spend_token(&claims.id, claims.expires, state.now())
        .await
    {
        Ok(true) => {}
        Ok(false) => return refused(&state, t, StatusCode::FORBIDDEN, t.link_invalid),
        Err(e) => return ApiError::from(e).into_response(),
    }
    let result = async {
        let standing = load_standing(&state, claims.subject())
            .await?
            .ok_or_else(|| ApiError::NotFound("subject not found".into()))?;
        let mut ctx = context(&state, &headers, ip, t, None).await?;
        ctx.method = CollectionMethod::DoubleOptIn;
        state
            .changes()
            .confirm(&standing, &topic, &ctx)
            .await
            .map_err(ChangeError::into_api)
    }
    .await;
    match result {
        Ok(_) => done_page(&state, t, t.confirm_title, t.done_confirmed),
        Err(e) => e.into_response(),
    }
}

/// `GET /preferences/unsubscribe?token=…`: a one-button page for people; mail clients post
/// to the same URL (RFC 8058).
pub async fn unsubscribe_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let token = q.token.unwrap_or_default();
    let t = language(&state, q.lang.as_deref(), &headers);
    match open_token(&state, Kind::Unsubscribe, &token).await {
        Ok(_) => token_page(
            &state,
            t,
            t.unsubscribe_title,
            t.unsubscribe_text,
            ActionForm {
                action: format!("/preferences/unsubscribe?token={token}"),
                token: token.clone(),
                button: t.unsubscribe_button,
                one_click: true,
            },
        ),
        Err(Ok(_)) => refused(&state, t, StatusCode::FORBIDDEN, t.link_invalid),
        Err(Err(e)) => e.into_response(),
    }
}

/// `POST /preferences/unsubscribe?token=…` with `List-Unsubscribe=One-Click`: takes effect at
/// once. No session and no CSRF token: mail providers post it from elsewhere, and the signed
/// token is the authority.
pub async fn unsubscribe(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let form = form_or_empty(form);
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let token = q
        .token
        .or_else(|| field(&form, "token").map(str::to_owned))
        .unwrap_or_default();
    let t = language(&state, q.lang.as_deref(), &headers);
    let (claims, _) = match open_token(&state, Kind::Unsubscribe, &token).await {
        Ok(c) => c,
        Err(Ok(_)) => return refused(&state, t, StatusCode::FORBIDDEN, t.link_invalid),
        Err(Err(e)) => return e.into_response(),
    };
    let t = language(
        &state,
        q.lang.as_deref().or(claims.locale.as_deref()),
        &headers,
    );
    let Some(topic) = claims.topic.clone() else {
        return refused(&state, t, StatusCode::FORBIDDEN, t.link_invalid);
    };
    let result = async {
        let standing = load_standing(&state, claims.subject())
            .await?
            .ok_or_else(|| ApiError::NotFound("subject not found".into()))?;
        let keys = state.identity.keys(state.store.as_ref()).await?;
        let ctx = ChangeContext {
            method: CollectionMethod::Reply,
            evidence: evidence(
                &headers,
                ip,
                Some(if field(&form, "List-Unsubscribe") == Some("One-Click") {
                    "List-Unsubscribe=One-Click".to_owned()
                } else {
                    "unsubscribe page".to_owned()
                }),
                Some(keys),
            ),
            texts: t,
            now: state.now(),
        };
        // Withdrawn already: a second post changes nothing and answers the same.
        let latest = standing
            .records
            .iter()
            .filter(|r| {
                r.record.purpose == topic.purpose
                    && r.record.channel.as_deref() == Some(topic.channel.as_str())
                    && r.record.topic == topic.topic
            })
            .max_by_key(|r| r.seq);
        if latest.is_some_and(|r| r.record.action == ConsentAction::Withdrawn) {
            return Ok(());
        }
        state
            .changes()
            .withdraw(&standing, &topic, &ctx)
            .await
            .map(|_| ())
            .map_err(ChangeError::into_api)
    }
    .await;
    match result {
        Ok(()) => done_page(&state, t, t.unsubscribe_title, t.done_unsubscribed),
        Err(e) => e.into_response(),
    }
}
