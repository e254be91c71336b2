//! The evidence a consent record carries, and the checks it passes before it goes into the
//! ledger for good. The consents API and the preference center's JSON API both take it, so
//! both check it here, the same way.

use crate::http::error::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Evidence that the record is genuine. Never raw personal data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, expecting = "an evidence object")]
pub struct EvidenceBody {
    /// Keyed hash (hex) of the subject's IP address, computed by the caller.
    #[serde(default)]
    #[schema(max_length = 128)]
    pub ip_hash: Option<String>,
    #[serde(default)]
    #[schema(max_length = 512)]
    pub user_agent: Option<String>,
    /// Hash (hex) of the exact disclosure text shown.
    #[serde(default)]
    #[schema(max_length = 128)]
    pub text_hash: Option<String>,
    /// A request, form submission or message id.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub reference: Option<String>,
}

/// Evidence text goes into the ledger for good: each field within its limit, no control
/// characters. `field` names a field of the evidence object in the request.
pub(crate) fn check_evidence(
    field: &dyn Fn(&str) -> String,
    evidence: &EvidenceBody,
) -> Result<(), ApiError> {
    use crate::http::input::{HASH_MAX, REFERENCE_MAX, USER_AGENT_MAX, ledger_text_opt};
    ledger_text_opt(&field("ip_hash"), evidence.ip_hash.as_deref(), HASH_MAX)?;
    ledger_text_opt(
        &field("user_agent"),
        evidence.user_agent.as_deref(),
        USER_AGENT_MAX,
    )?;
    ledger_text_opt(&field("text_hash"), evidence.text_hash.as_deref(), HASH_MAX)?;
    ledger_text_opt(
        &field("reference"),
        evidence.reference.as_deref(),
        REFERENCE_MAX,
    )
}
