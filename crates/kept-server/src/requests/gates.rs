//! Carrying out the requests that gate a subject's data: restriction, objection, opt-out of
//! sale or sharing and the limit on sensitive data (`kept_core::decision::gates`). When such a
//! request enters `in_progress`, `carry_out` writes its gate and puts the subject's gates in
//! force in the index at once; `lift` lifts a restriction, logged as a step of its request.
//! Both take the handles they use, never the whole `AppState`.

use crate::http::error::ApiError;
use crate::index::IndexHandle;
use crate::requests::service;
use kept_core::decision::{GateKind, SubjectGate};
use kept_core::index::Change;
use kept_core::manifest::{Manifest, is_within};
use kept_core::requests::{Request, RequestKind, Scope, State, Transition};
use kept_core::{SubjectId, UnixMillis};
use kept_store::requests::Stepped;
use kept_store::{Store, StoreError};

/// Checks a new request's scope against the manifest: every purpose a declared purpose or a
/// branch holding one, every category one the manifest knows. A gate over a key that names
/// nothing would quietly stop nothing.
pub fn check_scope(manifest: &Manifest, kind: RequestKind, scope: &Scope) -> Result<(), ApiError> {
    for (i, purpose) in scope.purposes.iter().enumerate() {
        if !manifest.purposes.keys().any(|k| is_within(k, purpose)) {
            return Err(ApiError::invalid_field(
                format!("scope.purposes[{i}]"),
                format!("`{purpose}` is not a purpose of the manifest, nor a branch holding one"),
            ));
        }
    }
    for (i, category) in scope.categories.iter().enumerate() {
        if !manifest.knows_category(category) {
            return Err(ApiError::invalid_field(
                format!("scope.categories[{i}]"),
                format!(
                    "`{category}` is not a data category: not a fideslang category and not declared under `[categories]`"
                ),
            ));
        }
    }
    if !scope.categories.is_empty()
        && matches!(
            GateKind::of(kind),
            Some(GateKind::Objection | GateKind::OptOutOfSale | GateKind::LimitSensitive)
        )
    {
        return Err(ApiError::invalid_field(
            "scope.categories",
            format!(
                "a `{kind}` request concerns purposes, not categories; only a restriction is scoped by category"
            ),
        ));
    }
    Ok(())
}

/// The gate `request` puts on its subject, if its kind puts one.
pub fn gate_of(request: &Request, since: UnixMillis) -> Option<SubjectGate> {
    let kind = GateKind::of(request.kind)?;
    Some(SubjectGate {
        request: request.id,
        subject: request.subject,
        kind,
        purposes: request.scope.purposes.clone(),
        categories: request.scope.categories.clone(),
        since,
    })
}

/// What carrying a request out did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedOut {
    /// The gate the request put, if its kind puts one.
    pub gate: Option<SubjectGate>,
    /// Whether this call wrote it (`false`: it was there already, or lifted).
    pub written: bool,
}

/// Whether a request was carried out: in progress (extended from there included) or
/// completed.
pub fn started(request: &Request) -> bool {
    request.working_state() == State::InProgress || request.state == State::Completed
}

/// THE entry point for a gating request entering `in_progress` (and safe to call again: the
/// gate is written once per request, the index is given the subject's gates in force as the
/// store holds them). Decisions deny the uses concerned as soon as it returns. A request of
/// another kind does nothing; one not yet in progress is refused (`request.not_started`).
pub async fn carry_out(
    store: &dyn Store,
    index: &IndexHandle,
    request: &Request,
    now: UnixMillis,
) -> Result<CarriedOut, ApiError> {
    if !started(request) {
        return Err(kept_core::requests::RequestError::NotStarted {
            state: request.state,
        }
        .into());
    }
    let Some(gate) = gate_of(request, now) else {
        return Ok(CarriedOut {
            gate: None,
            written: false,
        });
    };
    let written = store.put_gate(&gate).await?;
    index
        .apply(gate_changes(store, request.subject).await?)
        .await?;
    if written {
        tracing::info!(
            request = request.id,
            kind = gate.kind.as_str(),
            "data subject request gate in force"
        );
    }
    Ok(CarriedOut {
        gate: Some(gate),
        written,
    })
}

/// A subject's gates in force, as the index takes them: its own and those of the subjects
/// merged into it (a person's restriction follows them into the profile they were merged
/// into). The start-up build, another server's announcement, a merge and each change read
/// them here.
pub async fn gate_changes(
    store: &dyn Store,
    subject: SubjectId,
) -> Result<Vec<Change>, StoreError> {
    let mut gates = store.gates_of(subject).await?;
    for merged in store.merged_into(subject).await? {
        gates.extend(store.gates_of(merged).await?);
    }
    Ok(vec![Change::Gates { subject, gates }])
}

/// Lifts the restriction request `id` put (GDPR Art. 18(3)): the lifting is a step of the
/// request's log (refused unless it is a restriction carried out), then the gate is lifted in
/// the store and the index. A lifting whose log step committed but whose gate could not be
/// lifted leaves the gate in force (failing closed) and can be repeated.
pub async fn lift(
    work: &crate::requests::work::Work,
    index: &IndexHandle,
    id: u64,
    reason: String,
    actor: &str,
    now: UnixMillis,
) -> Result<Stepped, ApiError> {
    let step = Transition::Lift { reason };
    let stepped = service::step(work, id, &step, actor, now).await?;
    let store = work.store.as_ref();
    store.lift_gate(id, now).await?;
    index
        .apply(gate_changes(store, stepped.request.subject).await?)
        .await?;
    Ok(stepped)
}
