//! `POST /v1/contacts`: messages actually sent, recorded so the frequency each person chose
//! applies from the next decision on. Each send is also a use: it is stored with the decision
//! for it (asked before the send counts against any cap) in the same commit, through the
//! store's group committer, then applied to the index before the answer.

use crate::decide::uses::{self, Use};
use crate::http::auth::{Authorized, role};
use crate::http::error::{ApiError, ErrorBody, JsonBody};
use crate::identity::resolve::SubjectInput;
use crate::identity::resolve::resolve_subjects;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kept_core::decision::DecisionRequest;
use kept_core::index::Change;
use kept_core::manifest::Manifest;
use kept_core::subject::Contact;
use kept_store::UseKind;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Sends one request may record at most.
pub const MAX_CONTACTS: usize = 10_000;

/// A message sent to a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    pub subject: SubjectInput,
    /// A channel the manifest declares.
    #[schema(example = "sms")]
    pub channel: String,
    /// The purpose the message served; essential messages do not count against a frequency cap.
    #[schema(example = "marketing.communications")]
    pub purpose: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// When it was sent, milliseconds since the Unix epoch (from 2000-01-01 to five minutes
    /// ahead of the server's clock); now when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 946_684_800_000.0)]
    pub at: Option<i64>,
}

/// One send, or `contacts`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a contact, or an object with `contacts`"
)]
pub struct ContactsBody {
    /// At most 10,000.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 10_000)]
    pub contacts: Option<Vec<ContactInput>>,
    #[serde(default)]
    pub subject: Option<SubjectInput>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub purpose: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    #[schema(minimum = 946_684_800_000.0)]
    pub at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContactsRecorded {
    /// Sends committed.
    pub recorded: usize,
}

impl ContactsBody {
    fn into_list(self) -> Result<(Vec<ContactInput>, bool), ApiError> {
        let single = self.subject.is_some()
            || self.channel.is_some()
            || self.purpose.is_some()
            || self.topic.is_some()
            || self.at.is_some();
        match (self.contacts, single) {
            (Some(_), true) => Err(ApiError::invalid_field(
                "contacts",
                "send either one contact or `contacts`, not both",
            )),
            (Some(list), false) if list.is_empty() => Err(ApiError::invalid_field(
                "contacts",
                "`contacts` must hold at least one contact",
            )),
            (Some(list), false) if list.len() > MAX_CONTACTS => Err(ApiError::invalid_field(
                "contacts",
                format!("`contacts` may hold at most {MAX_CONTACTS} contacts per request"),
            )),
            (Some(list), false) => Ok((list, false)),
            (None, _) => {
                let missing = |f: &str| ApiError::invalid_field(f, format!("missing field `{f}`"));
                Ok((
                    vec![ContactInput {
                        subject: self.subject.ok_or_else(|| missing("subject"))?,
                        channel: self.channel.ok_or_else(|| missing("channel"))?,
                        purpose: self.purpose.ok_or_else(|| missing("purpose"))?,
                        topic: self.topic,
                        at: self.at,
                    }],
                    true,
                ))
            }
        }
    }
}

/// Records messages sent, so that frequency caps count them from the next decision on.
#[utoipa::path(
    post,
    path = "/v1/contacts",
    tag = "decisions",
    request_body(content = ContactsBody, description = "one send (`subject`, `channel`, \
        `purpose`, `topic`, `at`), or `{ \"contacts\": [...] }` with at most 10,000"),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "committed with the decision each send was made under \
            (`GET /v1/uses`), and counted by the next decision", body = ContactsRecorded),
        (status = 400, description = "not JSON", body = ErrorBody),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `decide` or `admin`", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "not `application/json`", body = ErrorBody),
        (status = 422, description = "a field is missing, names nothing known, or `at` is before \
            2000 or in the future (`field` names it: `contacts[2].subject`)", body = ErrorBody),
    )
)]
pub async fn record(
    caller: Authorized<role::Decide>,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ContactsBody>,
) -> Result<(StatusCode, Json<ContactsRecorded>), ApiError> {
    let (list, single) = body.into_list()?;
    let field = |i: usize, name: &str| {
        if single {
            name.to_owned()
        } else {
            format!("contacts[{i}].{name}")
        }
    };
    let now = state.now();
    let refs = list
        .iter()
        .enumerate()
        .map(|(i, c)| c.subject.reference(&field(i, "subject")))
        .collect::<Result<Vec<_>, _>>()?;
    let subjects = resolve_subjects(state.lookup(), &refs).await?;
    let snapshot = state.index.snapshot()?;
    let mut contacts = Vec::with_capacity(list.len());
    let mut used = Vec::with_capacity(list.len());
    for (i, (input, subject)) in list.iter().zip(subjects).enumerate() {
        let Some(subject) = subject else {
            return Err(ApiError::invalid_field(
                field(i, "subject"),
                format!("`{}` names no subject Kept knows", field(i, "subject")),
            ));
        };
        check(&state.manifest, input)
            .map_err(|(name, message)| ApiError::invalid_field(field(i, name), message))?;
        let at = match input.at {
            Some(at) => crate::http::input::past_time(&field(i, "at"), at, now)?,
            None => now,
        };
        let request = DecisionRequest {
            purpose: input.purpose.clone(),
            channel: Some(input.channel.clone()),
            topic: input.topic.clone(),
            categories: Vec::new(),
        };
        let one = Use {
            kind: UseKind::Contact,
            at,
            request: &request,
            actor: &caller.key.id,
            reference: None,
        };
        used.push(one.of_one(subject, uses::decide(&snapshot, subject, &request, at)));
        contacts.push(Contact {
            subject,
            channel: input.channel.clone(),
            purpose: input.purpose.clone(),
            topic: input.topic.clone(),
            at,
        });
    }
    let changes = contacts.iter().cloned().map(Change::Contact).collect();
    let recorded = contacts.len();
    state.store.record_contacts(contacts, used).await?;
    state.index.apply(changes).await?;
    Ok((StatusCode::CREATED, Json(ContactsRecorded { recorded })))
}

/// The keys a send names, against the manifest: the offending field and why.
fn check(manifest: &Manifest, c: &ContactInput) -> Result<(), (&'static str, String)> {
    if !manifest.channels.contains_key(&c.channel) {
        return Err((
            "channel",
            format!(
                "unknown channel `{}`; the manifest does not declare it",
                c.channel
            ),
        ));
    }
    if !manifest.purposes.contains_key(&c.purpose) {
        return Err((
            "purpose",
            format!(
                "unknown purpose `{}`; the manifest does not declare it",
                c.purpose
            ),
        ));
    }
    if let Some(topic) = &c.topic
        && !manifest.topics.contains_key(topic)
    {
        return Err((
            "topic",
            format!("unknown topic `{topic}`; the manifest does not declare it"),
        ));
    }
    Ok(())
}
