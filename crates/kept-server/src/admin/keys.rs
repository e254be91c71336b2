//! API key management (role `admin`): list, create (the secret is shown once), revoke.

use crate::http::auth::{self, Authorized, role};
use crate::http::error::{ApiError, ErrorBody, JsonBody, PathParams};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kept_store::{ApiKeyRecord, Role, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An API key's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    /// A write key safe to ship in a browser: anonymous profiles and that browser's banner
    /// choices; a known customer only with an identity token (`context.kept.userHash`).
    Public,
    /// A secret write key for the shop's servers: the Segment calls with their full semantics.
    Server,
    /// Decisions and audiences.
    Decide,
    /// Data subject requests, the ledger, subject data.
    Privacy,
    /// Everything, including key management.
    Admin,
}

impl From<RoleName> for Role {
    fn from(r: RoleName) -> Role {
        match r {
            RoleName::Public => Role::Public,
            RoleName::Server => Role::Server,
            RoleName::Decide => Role::Decide,
            RoleName::Privacy => Role::Privacy,
            RoleName::Admin => Role::Admin,
        }
    }
}

impl From<Role> for RoleName {
    fn from(r: Role) -> RoleName {
        match r {
            Role::Public => RoleName::Public,
            Role::Server => RoleName::Server,
            Role::Decide => RoleName::Decide,
            Role::Privacy => RoleName::Privacy,
            Role::Admin => RoleName::Admin,
        }
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// The key's public id (`kept_ab12cd34`), also the start of the key itself.
    #[schema(example = "kept_ab12cd34")]
    pub id: String,
    pub role: RoleName,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl From<ApiKeyRecord> for KeyView {
    fn from(r: ApiKeyRecord) -> KeyView {
        KeyView {
            id: r.id,
            role: r.role.into(),
            name: r.name,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, expecting = "an object with `role` and `name`")]
pub struct CreateKey {
    pub role: RoleName,
    /// What the key is for (`web shop collection`).
    #[serde(default)]
    pub name: String,
}

/// A new key. `key` is shown here once and cannot be recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    pub key: String,
    #[serde(flatten)]
    pub view: KeyView,
}

/// Every API key, revoked ones included; never their secrets.
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    security(("api_key" = [])),
    responses(
        (status = 200, body = KeyList),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    )
)]
pub async fn list(
    _caller: Authorized<role::Admin>,
    State(state): State<AppState>,
) -> Result<Json<KeyList>, ApiError> {
    let keys = state.store.list_api_keys().await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(KeyView::from).collect(),
    }))
}

/// Creates a key and shows its secret once.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    request_body = CreateKey,
    security(("api_key" = [])),
    responses(
        (status = 201, body = CreatedKey),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn create(
    caller: Authorized<role::Admin>,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let (secret, record) = auth::create_key(
        state.store.as_ref(),
        body.role.into(),
        &body.name,
        state.now(),
    )
    .await?;
    tracing::info!(id = %record.id, role = record.role.as_str(), by = %caller.key.id, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: secret.expose().to_owned(),
            view: record.into(),
        }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct KeyPath {
    id: String,
}

/// Revokes a key. It stops working on this server at once, and on other servers sharing the
/// database within a few seconds.
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "the key's public id (`kept_ab12cd34`)")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "revoked"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "no such key", body = ErrorBody),
    )
)]
pub async fn revoke(
    caller: Authorized<role::Admin>,
    State(state): State<AppState>,
    PathParams(KeyPath { id }): PathParams<KeyPath>,
) -> Result<StatusCode, ApiError> {
    revoke_key(state.store.as_ref(), &state.auth, &id, state.now()).await?;
    tracing::info!(%id, by = %caller.key.id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes key `id` in the store and forgets it at once on this server (the API's revoke and
/// the console's).
pub async fn revoke_key(
    store: &dyn kept_store::Store,
    auth: &auth::Authenticator,
    id: &str,
    now: kept_core::UnixMillis,
) -> Result<(), ApiError> {
    match store.revoke_api_key(id, now).await {
        Ok(()) => {}
        Err(StoreError::NotFound { .. }) => {
            return Err(ApiError::NotFound(format!("API key `{id}` not found")));
        }
        Err(e) => return Err(e.into()),
    }
    auth.forget(id);
    Ok(())
}
