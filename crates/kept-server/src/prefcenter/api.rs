//! The preference center's JSON API (role `privacy`), for companies that build their own page:
//! mint a sign-in link for a customer their app already knows, read a subject's choices, and
//! change them with the same rules the hosted page follows (double opt-in by email, written
//! consent for texts, ledger records for every change).

use super::model::{ChangeContext, ChangeError, Choices, SmsConsent, Standing, Wanted};
use super::token::{Kind, Topic};
use crate::http::auth::{Authorized, role};
use crate::http::error::{ApiError, ErrorBody, JsonBody, PathParams};
use crate::state::AppState;
use crate::web::texts;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kept_core::ledger::{CollectionMethod, Evidence};
use kept_core::rulebook::Level;
use kept_core::subject::{Frequency, Period, QuietHours};
use kept_core::{SubjectId, UnixMillis};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Debug, Deserialize)]
pub struct SubjectPath {
    id: u32,
}

/// A sign-in link to mint.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// How long the link works, in minutes (default 30, at most 10,080: a week).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10080)]
    pub ttl_minutes: Option<u32>,
    /// The page's language (`en`, `de`, `fr`, `es`); default: the customer's browser's.
    #[serde(default)]
    pub locale: Option<PageLocale>,
}

/// A language the preference page speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PageLocale {
    En,
    De,
    Fr,
    Es,
}

impl PageLocale {
    fn code(self) -> &'static str {
        match self {
            PageLocale::En => "en",
            PageLocale::De => "de",
            PageLocale::Fr => "fr",
            PageLocale::Es => "es",
        }
    }
}

/// A single-use sign-in link.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PreferenceLink {
    /// Open it once to start a session on the preference page.
    pub url: String,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
}

async fn subject_standing(state: &AppState, id: u32) -> Result<Standing, ApiError> {
    let (store, manifest) = (state.store.as_ref(), state.manifest.as_ref());
    crate::subjects::standing::standing(store, &state.index, manifest, SubjectId(id), state.now())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("subject `{id}` not found")))
}

async fn subject_choices(state: &AppState, id: u32) -> Result<Choices, ApiError> {
    let (store, manifest) = (state.store.as_ref(), state.manifest.as_ref());
    crate::subjects::standing::choices(store, &state.index, manifest, SubjectId(id), state.now())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("subject `{id}` not found")))
}

/// Mints a signed, expiring, single-use link to the preference page for one subject, for the
/// company's app to hand to a customer it has signed in.
#[utoipa::path(
    post,
    path = "/v1/subjects/{id}/preference-link",
    tag = "preferences",
    params(("id" = u32, Path, description = "the subject's internal id")),
    request_body(content = Option<LinkRequest>, description = "optional"),
    security(("api_key" = [])),
    responses(
        (status = 201, body = PreferenceLink),
        (status = 401, body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 400, description = "a body that is not JSON", body = ErrorBody),
        (status = 404, description = "no such subject", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 422, description = "a field is out of range", body = ErrorBody),
    )
)]
pub async fn preference_link(
    _caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(SubjectPath { id }): PathParams<SubjectPath>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<PreferenceLink>), ApiError> {
    // The body is optional: no body, `null` or `{}` mints a link with the defaults.
    let body: LinkRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LinkRequest::default()
    } else {
        crate::http::error::parse_json::<Option<LinkRequest>>(&body)?.unwrap_or_default()
    };
    if state.store.subject(SubjectId(id)).await?.is_none() {
        return Err(ApiError::NotFound(format!("subject `{id}` not found")));
    }
    let config = state.prefcenter.config();
    let ttl = match body.ttl_minutes {
        None => config.link_ttl,
        Some(0) => {
            return Err(ApiError::invalid_field(
                "ttl_minutes",
                "`ttl_minutes` must be at least 1",
            ));
        }
        Some(m) => {
            let ttl = UnixMillis::from(m) * super::MINUTE;
            if ttl > config.api_link_max_ttl {
                return Err(ApiError::invalid_field(
                    "ttl_minutes",
                    format!(
                        "`ttl_minutes` may be at most {}",
                        config.api_link_max_ttl / super::MINUTE
                    ),
                ));
            }
            ttl
        }
    };
    let locale = body.locale.map(|l| l.code().to_owned());
    let (url, expires_at) = state
        .prefcenter
        .sign_in_link(
            state.store.as_ref(),
            SubjectId(id),
            ttl,
            locale,
            state.now(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(PreferenceLink { url, expires_at }),
    ))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NoticeRefView {
    pub id: String,
    pub version: u32,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PurposeView {
    pub purpose: String,
    pub name: String,
    /// `consent`, `contract`, `legal_obligation`, `legitimate_interests`, …
    pub legal_basis: Option<String>,
    /// `none` (carried by a contract or the law), `opt_out`, `opt_in`, `opt_in_written`.
    pub requirement: String,
    /// The customer may switch it here (otherwise: not at all, or per topic).
    pub switchable: bool,
    /// Decisions allow it now.
    pub allowed: bool,
    pub notice: Option<NoticeRefView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopicView {
    pub topic: String,
    pub purpose: String,
    pub subscribed: bool,
    /// A double opt-in waits for the customer's confirmation.
    pub pending: bool,
    /// The notice shown for the topic, which a change of it records.
    pub notice: Option<NoticeRefView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursView {
    /// Local time `HH:MM`.
    #[schema(example = "22:00")]
    pub start: String,
    #[schema(example = "07:00")]
    pub end: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChannelView {
    pub channel: String,
    pub topics: Vec<TopicView>,
    /// `any` (as it happens), `day`, `week` or `month` (at most one message per period).
    pub frequency: String,
    pub quiet_hours: Option<QuietHoursView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DoNotSellView {
    /// Sale and sharing are off.
    pub on: bool,
    /// The purpose it stands for.
    pub purpose: String,
    /// A GPC signal counts as this opt-out here.
    pub gpc_binding: bool,
    /// A GPC opt-out is recorded.
    pub gpc_recorded: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErasureView {
    pub state: String,
    pub requested_at: i64,
    /// The legal deadline.
    pub due_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ListUnsubscribe {
    /// The signed one-click unsubscribe URL for marketing email.
    pub url: String,
    /// The value of the `List-Unsubscribe` header.
    pub header: String,
    /// The value of the `List-Unsubscribe-Post` header (RFC 8058).
    pub post: String,
}

/// A subject's choices, as decisions see them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Preferences {
    pub subject: u32,
    pub regime: String,
    pub purposes: Vec<PurposeView>,
    pub channels: Vec<ChannelView>,
    /// Present where the law makes sale and sharing opt-out.
    pub do_not_sell: Option<DoNotSellView>,
    pub erasure: Option<ErasureView>,
    /// For the company's marketing email: where one click unsubscribes this subject.
    pub list_unsubscribe: Option<ListUnsubscribe>,
}

fn frequency_text(f: Option<Frequency>) -> &'static str {
    match f.map(|f| f.period) {
        None => "any",
        Some(Period::Day) => "day",
        Some(Period::Week) => "week",
        Some(Period::Month) => "month",
    }
}

fn level_text(level: Level) -> &'static str {
    level.as_str()
}

fn hhmm(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

async fn view(state: &AppState, standing: &Choices) -> Result<Preferences, ApiError> {
    let manifest = state.manifest.as_ref();
    let notice = |id: Option<&String>| {
        let id = id?;
        manifest.notices.get(id).map(|n| NoticeRefView {
            id: id.clone(),
            version: n.version,
            hash: n.hash.clone(),
        })
    };
    let list_unsubscribe = match standing.channels.iter().find(|c| c.channel == "email") {
        Some(email) => match email.topics.first() {
            Some(topic) => {
                let keys = state.prefcenter.keys(state.store.as_ref()).await?;
                let mut claims = super::token::fresh(
                    Kind::Unsubscribe,
                    standing.subject,
                    state.now() + state.prefcenter.config().unsubscribe_ttl,
                );
                claims.topic = Some(Topic {
                    purpose: topic.purpose.clone(),
                    channel: "email".to_owned(),
                    topic: None,
                });
                let url = format!(
                    "{}/preferences/unsubscribe?token={}",
                    state.prefcenter.base_url(),
                    keys.sign(&claims)
                );
                Some(ListUnsubscribe {
                    header: format!("<{url}>"),
                    url,
                    post: "List-Unsubscribe=One-Click".to_owned(),
                })
            }
            None => None,
        },
        None => None,
    };
    Ok(Preferences {
        subject: standing.subject.0,
        regime: standing.regime.as_str().to_owned(),
        purposes: standing
            .purposes
            .iter()
            .map(|p| PurposeView {
                purpose: p.key.clone(),
                name: manifest
                    .purposes
                    .get(&p.key)
                    .map_or_else(|| p.key.clone(), |m| m.name.clone()),
                legal_basis: p.basis.and_then(|b| {
                    serde_json::to_value(b)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                }),
                requirement: level_text(p.level).to_owned(),
                switchable: p.switchable,
                allowed: p.allowed,
                notice: notice(p.notice.as_ref()),
            })
            .collect(),
        channels: standing
            .channels
            .iter()
            .map(|c| ChannelView {
                channel: c.channel.clone(),
                topics: c
                    .topics
                    .iter()
                    .map(|t| TopicView {
                        topic: t.topic.clone(),
                        purpose: t.purpose.clone(),
                        subscribed: t.subscribed,
                        pending: t.pending,
                        notice: notice(t.notice.as_ref()),
                    })
                    .collect(),
                frequency: frequency_text(c.frequency).to_owned(),
                quiet_hours: c.quiet.map(|q| QuietHoursView {
                    start: hhmm(q.start_minute),
                    end: hhmm(q.end_minute),
                }),
            })
            .collect(),
        do_not_sell: standing.do_not_sell.as_ref().map(|d| DoNotSellView {
            on: d.on,
            purpose: d.purpose.clone(),
            gpc_binding: d.gpc_binding,
            gpc_recorded: d.gpc_recorded,
        }),
        erasure: standing.erasure.as_ref().map(|e| ErasureView {
            state: e.state.as_str().to_owned(),
            requested_at: e.requested_at,
            due_at: e.due_at,
        }),
        list_unsubscribe,
    })
}

/// A subject's choices: purposes with their legal basis, topics per channel, frequency and
/// quiet hours, "do not sell or share", a pending erasure, and its one-click unsubscribe URL.
#[utoipa::path(
    get,
    path = "/v1/subjects/{id}/preferences",
    tag = "preferences",
    params(("id" = u32, Path, description = "the subject's internal id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = Preferences),
        (status = 401, body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 404, description = "no such subject", body = ErrorBody),
    )
)]
pub async fn get_preferences(
    _caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(SubjectPath { id }): PathParams<SubjectPath>,
) -> Result<Json<Preferences>, ApiError> {
    let choices = subject_choices(&state, id).await?;
    Ok(Json(view(&state, &choices).await?))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicChange {
    pub channel: String,
    pub topic: String,
    /// `true` by email starts a double opt-in (Kept mails the confirmation link); by text
    /// message it needs `sms`.
    pub subscribed: bool,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelChange {
    pub channel: String,
    /// `any`, `day`, `week` or `month`.
    #[serde(default)]
    pub frequency: Option<String>,
    #[serde(default)]
    pub quiet_hours: Option<QuietHoursView>,
}

/// The written consent marketing texts need: the number, and the customer's acceptance of
/// the manifest's SMS disclosure, shown in `locale`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsChange {
    #[serde(default)]
    pub phone: Option<String>,
    pub disclosure_accepted: bool,
    #[serde(default)]
    pub locale: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceInput {
    #[serde(default)]
    #[schema(max_length = 128)]
    pub ip_hash: Option<String>,
    #[serde(default)]
    #[schema(max_length = 512)]
    pub user_agent: Option<String>,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub reference: Option<String>,
}

/// Changes to make; anything left out stays as it is.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesUpdate {
    /// Purpose key → allowed.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub purposes: serde_json::Map<String, Value>,
    #[serde(default)]
    pub topics: Vec<TopicChange>,
    #[serde(default)]
    pub channels: Vec<ChannelChange>,
    #[serde(default)]
    pub do_not_sell: Option<bool>,
    #[serde(default)]
    pub sms: Option<SmsChange>,
    #[serde(default)]
    pub evidence: Option<EvidenceInput>,
}

fn parse_hhmm(field: &str, s: &str) -> Result<u16, ApiError> {
    let bad = || ApiError::invalid_field(field, format!("`{s}` is not a time such as `22:00`"));
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h < 24 && m < 60 {
        Ok(h * 60 + m)
    } else {
        Err(bad())
    }
}

/// Changes a subject's choices. Every change is a ledger record (source
/// `preference_center`, method `api`, the notice it was given under); decisions see it when
/// this answers.
#[utoipa::path(
    put,
    path = "/v1/subjects/{id}/preferences",
    tag = "preferences",
    params(("id" = u32, Path, description = "the subject's internal id")),
    request_body = PreferencesUpdate,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "the choices after the change", body = Preferences),
        (status = 401, body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 400, description = "not JSON", body = ErrorBody),
        (status = 404, description = "no such subject", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "not `application/json`", body = ErrorBody),
        (status = 422, description = "a body that is not an object, an unknown or unswitchable \
            purpose, topic or channel, texts without written consent, or evidence text over its \
            limit or with control characters", body = ErrorBody),
    )
)]
pub async fn put_preferences(
    _caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(SubjectPath { id }): PathParams<SubjectPath>,
    JsonBody(body): JsonBody<PreferencesUpdate>,
) -> Result<Json<Preferences>, ApiError> {
    let standing = subject_standing(&state, id).await?;
    let mut wanted = Wanted::default();
    for (key, value) in &body.purposes {
        let on = value.as_bool().ok_or_else(|| {
            ApiError::invalid_field(
                format!("purposes.{key}"),
                format!("`purposes.{key}` must be `true` or `false`"),
            )
        })?;
        wanted.purposes.push((key.clone(), on));
    }
    for t in &body.topics {
        wanted
            .topics
            .push((t.channel.clone(), t.topic.clone(), t.subscribed));
    }
    for (i, c) in body.channels.iter().enumerate() {
        let current = standing.channels.iter().find(|s| s.channel == c.channel);
        let frequency = match c.frequency.as_deref() {
            None => current.and_then(|s| s.frequency),
            Some("any") => None,
            Some(other) => Some(Frequency {
                max: 1,
                period: Period::parse(other).ok_or_else(|| {
                    ApiError::invalid_field(
                        format!("channels[{i}].frequency"),
                        format!("`{other}` is not `any`, `day`, `week` or `month`"),
                    )
                })?,
            }),
        };
        let quiet = match &c.quiet_hours {
            None => current.and_then(|s| s.quiet),
            Some(q) => {
                let field = format!("channels[{i}].quiet_hours");
                Some(QuietHours {
                    start_minute: parse_hhmm(&field, &q.start)?,
                    end_minute: parse_hhmm(&field, &q.end)?,
                })
            }
        };
        wanted.channels.push((c.channel.clone(), frequency, quiet));
    }
    wanted.do_not_sell = body.do_not_sell;
    let mut texts = texts::choose(None, None, &state.manifest.organisation.locales);
    if let Some(sms) = &body.sms {
        if let Some(code) = sms.locale.as_deref() {
            texts = texts::by_code(code).ok_or_else(|| {
                ApiError::invalid_field("sms.locale", format!("`{code}` is not en, de, fr or es"))
            })?;
        }
        wanted.sms = SmsConsent {
            phone: sms.phone.clone(),
            accepted: sms.disclosure_accepted,
        };
    }
    if let Some(e) = &body.evidence {
        crate::consent::evidence::check_evidence(
            &|name| format!("evidence.{name}"),
            &crate::consent::evidence::EvidenceBody {
                ip_hash: e.ip_hash.clone(),
                user_agent: e.user_agent.clone(),
                text_hash: None,
                reference: e.reference.clone(),
            },
        )?;
    }
    let evidence = body
        .evidence
        .clone()
        .map_or_else(Evidence::default, |e| Evidence {
            ip_hash: e.ip_hash,
            user_agent: e.user_agent,
            text_hash: None,
            reference: e.reference,
        });
    let ctx = ChangeContext {
        method: CollectionMethod::Api,
        evidence,
        texts,
        now: state.now(),
    };
    state
        .changes()
        .apply(&standing, &wanted, &ctx)
        .await
        .map_err(ChangeError::into_api)?;
    let after = subject_choices(&state, id).await?;
    Ok(Json(view(&state, &after).await?))
}
