//! `GET /v1/subjects/{id}/profile?purpose=P`: a subject's profile as one purpose may see it.
//! Each trait is shown only when a decision for the purpose and the trait's data category
//! allows it and the trait itself was collected under a notice that promised the purpose; the
//! others are withheld and listed with the reason.
//!
//! Reading a profile is a use: before the answer, one use per category shown is recorded with
//! the decision that allowed it (`GET /v1/uses`); a profile that cannot be recorded is not sent.
//!
//! Role `decide`: this is how a system that uses data (a personalisation engine, a sending
//! tool) reads a profile, and it can only ever get the purpose's view. The privacy team sees
//! whole profiles through data subject requests.

use crate::http::auth::{Authorized, role};
use crate::http::error::{ApiError, ErrorBody, PathParams};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use kept_core::decision::{DecisionRequest, ReasonCode};
use kept_core::index::IndexQuery;
use kept_core::index::Snapshot;
use kept_core::subject::Trait;
use kept_core::{SubjectId, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::ToSchema;

#[derive(Debug, Deserialize)]
pub struct ProfilePath {
    id: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileParams {
    purpose: Option<String>,
    channel: Option<String>,
}

/// A trait the purpose may use, with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VisibleTrait {
    pub key: String,
    /// As collected: a string, number, boolean, object or array.
    pub value: serde_json::Value,
    pub category: String,
    pub collection_point: String,
    pub notice: String,
    pub notice_version: u32,
    pub collected_at: i64,
}

/// A trait the purpose may not use, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WithheldTrait {
    pub key: String,
    pub category: String,
    #[schema(example = "denied.not_promised")]
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProfileView {
    pub subject: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub purpose: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    pub traits: Vec<VisibleTrait>,
    pub withheld: Vec<WithheldTrait>,
}

/// The subject's profile with only the traits `purpose` may use; the rest are withheld and
/// listed by reason.
#[utoipa::path(
    get,
    path = "/v1/subjects/{id}/profile",
    tag = "decisions",
    params(
        ("id" = u32, Path, description = "the subject's internal id"),
        ("purpose" = String, Query, description = "the purpose the profile is read for"),
        ("channel" = Option<String>, Query, description = "the channel it is used through, if any"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "the profile; each category shown is recorded as a use \
            (`GET /v1/uses`) before the answer", body = ProfileView),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `decide` or `admin`", body = ErrorBody),
        (status = 404, description = "no such subject", body = ErrorBody),
        (status = 422, description = "`purpose` is missing, or a parameter is malformed", body = ErrorBody),
    )
)]
pub async fn profile(
    caller: Authorized<role::Decide>,
    State(state): State<AppState>,
    PathParams(ProfilePath { id }): PathParams<ProfilePath>,
    params: Result<Query<ProfileParams>, QueryRejection>,
) -> Result<Json<ProfileView>, ApiError> {
    let Query(params) = params?;
    let purpose = params
        .purpose
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| ApiError::invalid_field("purpose", "missing query parameter `purpose`"))?;
    let subject = SubjectId(id);
    let Some(stored) = state.store.subject(subject).await? else {
        return Err(ApiError::NotFound(format!("subject `{id}` not found")));
    };
    let traits = state.store.traits(subject).await?;
    let snapshot = state.index.snapshot()?;
    let now = state.now();
    let sifted = sift(
        &snapshot,
        subject,
        traits,
        &purpose,
        params.channel.as_deref(),
        now,
    );
    let shown = sifted.shown;
    let mut visible = Vec::new();
    let mut withheld = Vec::new();
    for (t, reason) in sifted.traits {
        if reason.is_allowed() {
            visible.push(VisibleTrait {
                key: t.key,
                value: t.value,
                category: t.category,
                collection_point: t.provenance.collection_point,
                notice: t.provenance.notice_id,
                notice_version: t.provenance.notice_version,
                collected_at: t.provenance.collected_at,
            });
        } else {
            withheld.push(WithheldTrait {
                key: t.key,
                category: t.category,
                reason: reason.as_str().to_owned(),
            });
        }
    }
    let used: Vec<_> = shown
        .into_iter()
        .map(|(category, decided)| {
            let request = DecisionRequest {
                purpose: purpose.clone(),
                channel: params.channel.clone(),
                topic: None,
                categories: vec![category],
            };
            crate::decide::uses::Use {
                kind: kept_store::UseKind::Profile,
                at: now,
                request: &request,
                actor: &caller.key.id,
                reference: None,
            }
            .of_one(subject, decided)
        })
        .collect();
    state.store.record_uses(used).await?;
    Ok(Json(ProfileView {
        subject: id,
        user_id: stored.user_id,
        purpose,
        channel: params.channel,
        traits: visible,
        withheld,
    }))
}

/// A subject's traits sifted for one purpose: each with the reason it may or may not be used
/// for the purpose now, and per category that may, the decision that allowed it.
#[derive(Debug, Clone)]
pub struct Sifted {
    pub traits: Vec<(Trait, ReasonCode)>,
    /// Per category allowed, the decision, in the order first allowed.
    pub shown: Vec<(String, crate::decide::uses::Decided)>,
}

/// Sifts `traits` for `purpose` (through `channel`) at `now`, as the decision API decides: a
/// trait may be used when the decision for its category allows it and the trait itself was
/// collected under a notice that promised the purpose. Decides only; recording the use is
/// the caller's (a profile read records one, an operator looking does not).
pub fn sift(
    snapshot: &Snapshot,
    subject: SubjectId,
    traits: Vec<Trait>,
    purpose: &str,
    channel: Option<&str>,
    now: UnixMillis,
) -> Sifted {
    let ctx = snapshot.compiled().clone();
    let mut prepared: HashMap<String, IndexQuery> = HashMap::new();
    let mut out = Vec::with_capacity(traits.len());
    let mut shown: Vec<(String, crate::decide::uses::Decided)> = Vec::new();
    for t in traits {
        let q = prepared.entry(t.category.clone()).or_insert_with(|| {
            snapshot.prepare(&DecisionRequest {
                purpose: purpose.to_owned(),
                channel: channel.map(str::to_owned),
                topic: None,
                categories: vec![t.category.clone()],
            })
        });
        let decision = snapshot.decide_prepared(subject, q, now);
        let p = &t.provenance;
        // The index answers for the category (any collection of it); this trait's own
        // collection must have promised the use too.
        let promised_here = ctx.promises(
            &q.query,
            ctx.point_id(&p.collection_point),
            ctx.notice_id(&p.notice_id),
            p.notice_version,
            &t.category,
        );
        let reason = if decision.allowed && !promised_here {
            ReasonCode::DeniedNotPromised
        } else {
            decision.reason
        };
        if reason.is_allowed() && !shown.iter().any(|(c, _)| *c == t.category) {
            let decided = crate::decide::uses::decided(snapshot, q, decision);
            shown.push((t.category.clone(), decided));
        }
        out.push((t, reason));
    }
    Sifted { traits: out, shown }
}
