//! A data subject request as a first-class record: what was asked (kind and scope), how it came
//! in (channel), how the subject's identity was verified, when the law wants the answer (from
//! `rights`, fixed at intake), and where it stands. Its state machine is pure functions that
//! say which step is allowed and, when not, why, with a stable code. Every step is one record
//! of the requests log: a canonical encoding chained with the ledger's BLAKE3 chain under a
//! domain of its own, and covered by the ledger's checkpoints.
//!
//! INVARIANT: `encode_record(decode_record(b)) == b` for every accepted `b`, as for the consent
//! ledger: one record has one encoding. `decode_record` checks it in debug builds.

use crate::ledger::{
    ChainHash, ChainVerifier, Columns, DecodeError, LedgerEntry, Reader, chain_hash_in,
    put_opt_str, put_str,
};
use crate::regime::Regime;
pub use crate::rights::RequestKind;
use crate::rights::Rights;
use crate::{SubjectId, UnixMillis};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The requests log's chain domain: its hashes can never stand for the consent ledger's.
pub const REQUESTS_CHAIN: &[u8] = b"kept-requests-v1";

/// The requests log's encoding version.
pub const RECORD_VERSION: u8 = 1;

/// The longest reason, reference, agent, note or scope entry a request keeps (bytes).
pub const MAX_TEXT: usize = 2_000;

/// The most entries one list of a scope holds.
pub const MAX_SCOPE: usize = 100;

impl RequestKind {
    /// A kind by its API name.
    pub fn parse(s: &str) -> Option<RequestKind> {
        RequestKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = RequestChannel))]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The company's systems, through `POST /v1/requests`.
    Api,
    /// The customer, signed in to the preference center.
    PreferenceCenter,
    /// A public web form, before the person is known to be who they say.
    PublicForm,
    /// An operator of the company (the CLI, later the admin console).
    Operator,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::Api,
        Channel::PreferenceCenter,
        Channel::PublicForm,
        Channel::Operator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Api => "api",
            Channel::PreferenceCenter => "preference_center",
            Channel::PublicForm => "public_form",
            Channel::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// How the requester's identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum VerificationMethod {
    /// A verified identifier of the subject (an identity token, the preference center's
    /// session from a signed link, a confirmed double opt-in).
    VerifiedIdentifier,
    /// The company verified the person itself and says so through the API, with a reference
    /// to its own record of it.
    CompanyStated,
    /// An authorised agent acts for the subject, with a reference to their proof of authority.
    Agent,
}

impl VerificationMethod {
    pub const ALL: [VerificationMethod; 3] = [
        VerificationMethod::VerifiedIdentifier,
        VerificationMethod::CompanyStated,
        VerificationMethod::Agent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VerificationMethod::VerifiedIdentifier => "verified_identifier",
            VerificationMethod::CompanyStated => "company_stated",
            VerificationMethod::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<VerificationMethod> {
        VerificationMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// How identity was verified, and by whom on whose behalf.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Verification {
    pub method: VerificationMethod,
    /// What shows it: the identifier kind verified (`email`), the company's case number, the
    /// agent's proof of authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The authorised agent's name, for `agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl Verification {
    /// Checks that the verification says what its method needs: a reference for
    /// `company_stated` and `agent`, and the agent's name for `agent`.
    pub fn check(&self) -> Result<(), RequestError> {
        let missing = |field: &'static str| RequestError::Verification {
            field,
            method: self.method,
        };
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
        if let Some(r) = &self.reference {
            plain("verification.reference", r)?;
        }
        if let Some(a) = &self.agent {
            plain("verification.agent", a)?;
        }
        match self.method {
            VerificationMethod::VerifiedIdentifier => Ok(()),
            VerificationMethod::CompanyStated if blank(&self.reference) => {
                Err(missing("reference"))
            }
            VerificationMethod::CompanyStated => Ok(()),
            VerificationMethod::Agent if blank(&self.agent) => Err(missing("agent")),
            VerificationMethod::Agent if blank(&self.reference) => Err(missing("reference")),
            VerificationMethod::Agent => Ok(()),
        }
    }
}

/// What a request covers. Empty lists mean everything Kept and the systems hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = RequestScope))]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Purpose keys (`marketing.communications`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purposes: Vec<String>,
    /// Data categories (`user.contact.email`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Systems of the manifest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub systems: Vec<String>,
}

impl Scope {
    /// Whether the request covers everything.
    pub fn is_all(&self) -> bool {
        self.purposes.is_empty() && self.categories.is_empty() && self.systems.is_empty()
    }

    /// Checks each list: at most [`MAX_SCOPE`] entries, each a plain, non-blank text.
    pub fn check(&self) -> Result<(), RequestError> {
        for (field, list) in [
            ("scope.purposes", &self.purposes),
            ("scope.categories", &self.categories),
            ("scope.systems", &self.systems),
        ] {
            if list.len() > MAX_SCOPE {
                return Err(RequestError::TooLong { field });
            }
            for entry in list {
                if entry.trim().is_empty() {
                    return Err(RequestError::ReasonRequired { field });
                }
                plain(field, entry)?;
            }
        }
        Ok(())
    }

    /// The scope with each list sorted and deduplicated: one scope, one stored form.
    pub fn normalized(mut self) -> Scope {
        for list in [&mut self.purposes, &mut self.categories, &mut self.systems] {
            list.sort();
            list.dedup();
        }
        self
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = RequestState))]
#[serde(rename_all = "snake_case")]
pub enum State {
    Received,
    Verified,
    InProgress,
    Completed,
    Rejected,
    /// The answer was put off, once, with a reason, to a later due date the law allows; work
    /// goes on from where it stood (`Request::resume`).
    Extended,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Received,
        State::Verified,
        State::InProgress,
        State::Completed,
        State::Rejected,
        State::Extended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Received => "received",
            State::Verified => "verified",
            State::InProgress => "in_progress",
            State::Completed => "completed",
            State::Rejected => "rejected",
            State::Extended => "extended",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Not yet answered: the deadline still runs.
    pub fn is_open(self) -> bool {
        !matches!(self, State::Completed | State::Rejected)
    }

    fn tag(self) -> u8 {
        match self {
            State::Received => 1,
            State::Verified => 2,
            State::InProgress => 3,
            State::Completed => 4,
            State::Rejected => 5,
            State::Extended => 6,
        }
    }

    fn from_tag(tag: u8) -> Option<State> {
        State::ALL.into_iter().find(|s| s.tag() == tag)
    }

    /// The step `advance` takes from a working state.
    fn next(self) -> Option<State> {
        match self {
            State::Received => Some(State::Verified),
            State::Verified => Some(State::InProgress),
            State::InProgress => Some(State::Completed),
            State::Completed | State::Rejected | State::Extended => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one task of a request's work stands. A request in progress completes once every one
/// of its tasks is settled: done, or handled by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Not done yet (a system not yet acknowledged, a worker not yet finished).
    Pending,
    /// Done: Kept's own work finished, or the system acknowledged.
    Done,
    /// The last try failed (its error in the task's detail); it may still be done or handled.
    Failed,
    /// Handled by hand by an operator, with a note.
    Handled,
}

impl TaskState {
    pub const ALL: [TaskState; 4] = [
        TaskState::Pending,
        TaskState::Done,
        TaskState::Failed,
        TaskState::Handled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
            TaskState::Handled => "handled",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Done or handled: nothing more to do, and never changed again.
    pub fn is_settled(self) -> bool {
        matches!(self, TaskState::Done | TaskState::Handled)
    }
}

/// What one task of a request works on: Kept's own data (`kept`), one of the company's
/// databases the manifest declares (`dataset:<name>`), or a system the manifest gives a
/// webhook (`system:<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Target {
    Kept,
    Dataset(String),
    System(String),
}

impl Target {
    /// A target as written (`kept`, `dataset:shop`, `system:crm`).
    pub fn parse(s: &str) -> Option<Target> {
        let named = |name: &str| {
            (!name.is_empty() && !name.chars().any(|c| c.is_control() || c.is_whitespace()))
                .then(|| name.to_owned())
        };
        match s.split_once(':') {
            None if s == "kept" => Some(Target::Kept),
            Some(("dataset", name)) => named(name).map(Target::Dataset),
            Some(("system", name)) => named(name).map(Target::System),
            _ => None,
        }
    }

    /// The system's key, for a system target.
    pub fn system(&self) -> Option<&str> {
        match self {
            Target::System(name) => Some(name),
            Target::Kept | Target::Dataset(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Kept => f.write_str("kept"),
            Target::Dataset(name) => write!(f, "dataset:{name}"),
            Target::System(name) => write!(f, "system:{name}"),
        }
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        t.to_string()
    }
}

impl TryFrom<String> for Target {
    type Error = String;
    fn try_from(s: String) -> Result<Target, String> {
        Target::parse(&s).ok_or_else(|| {
            format!("`{s}` is not a task target: `kept`, `dataset:<name>` or `system:<name>`")
        })
    }
}

/// The work a request of `kind` owes, given the datasets and the systems with a webhook the
/// manifest declares (each list in its order): Kept's own data always; the datasets where the
/// data itself is erased or given out (erasure, access, portability); the systems where they
/// must act (every kind but access and portability, which Kept answers from what it and the
/// datasets hold). A scope naming systems narrows the systems to those.
pub fn owed_targets<'a>(
    kind: RequestKind,
    scope: &Scope,
    datasets: impl IntoIterator<Item = &'a str>,
    systems: impl IntoIterator<Item = &'a str>,
) -> Vec<Target> {
    let (datasets_owed, systems_owed) = match kind {
        RequestKind::Erasure => (true, true),
        RequestKind::Access | RequestKind::Portability => (true, false),
        RequestKind::Rectification
        | RequestKind::Restriction
        | RequestKind::Objection
        | RequestKind::OptOut
        | RequestKind::LimitSensitive => (false, true),
    };
    let mut targets = vec![Target::Kept];
    if datasets_owed {
        targets.extend(datasets.into_iter().map(|d| Target::Dataset(d.to_owned())));
    }
    if systems_owed {
        targets.extend(
            systems
                .into_iter()
                .filter(|s| scope.systems.is_empty() || scope.systems.iter().any(|n| n == s))
                .map(|s| Target::System(s.to_owned())),
        );
    }
    targets
}

/// A request as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Assigned by the store; 0 before it is filed.
    pub id: u64,
    pub subject: SubjectId,
    pub kind: RequestKind,
    pub scope: Scope,
    pub channel: Channel,
    /// `None` until identity is verified.
    pub verification: Option<Verification>,
    /// The regime key that set the deadline (`gdpr`, …; `strictest` when unknown).
    pub regime: String,
    pub region: Option<String>,
    /// The `rights` row the deadline comes from.
    pub rule: String,
    pub state: State,
    /// While `Extended`: the working state the request was in, from which `advance` goes on.
    pub resume: Option<State>,
    pub received_at: UnixMillis,
    /// The answer is due by then (later once extended).
    pub due_at: UnixMillis,
    /// Receipt must be confirmed by then, where the law says so.
    pub acknowledge_by: Option<UnixMillis>,
    /// The latest the rule lets an extension put the answer off to; `None`: no extension.
    pub extension_until: Option<UnixMillis>,
    /// When the one extension was taken.
    pub extended_at: Option<UnixMillis>,
    /// Why it was extended or rejected (the last such reason).
    pub reason: Option<String>,
    pub updated_at: UnixMillis,
}

impl Request {
    /// Open and past its due date.
    pub fn is_overdue(&self, now: UnixMillis) -> bool {
        self.state.is_open() && now > self.due_at
    }

    /// The state a request in `Extended` works from, else its own.
    pub fn working_state(&self) -> State {
        match self.state {
            State::Extended => self.resume.unwrap_or(State::Received),
            s => s,
        }
    }
}

/// What a new request says before it is filed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intake {
    pub subject: SubjectId,
    pub kind: RequestKind,
    pub scope: Scope,
    pub channel: Channel,
    /// Given at intake when identity is already established (the preference center's session).
    /// It is recorded; the request still starts `received` and `advance` verifies it.
    pub verification: Option<Verification>,
    /// The subject's regime as resolved from where they are; `strictest` when unknown.
    pub regime: Regime,
    pub region: Option<String>,
    pub at: UnixMillis,
}

/// A request filed now: its deadline from the rows of `rights` for the subject's regime, region
/// and the kind (a regime no row answers, `strictest`). Should no row apply at all (the shipped
/// rows always have one), the answer is due at once: failing closed.
pub fn intake(rights: &Rights, new: Intake) -> Result<Request, RequestError> {
    if let Some(v) = &new.verification {
        v.check()?;
    }
    new.scope.check()?;
    let deadline = rights.deadline(new.regime, new.region.as_deref(), new.kind, new.at);
    let (rule, due_at, acknowledge_by, extension_until) = match deadline {
        Some(d) => (
            d.rule.id.clone(),
            d.due_at,
            d.acknowledge_by,
            d.extended_due_at,
        ),
        None => ("none".to_owned(), new.at, None, None),
    };
    Ok(Request {
        id: 0,
        subject: new.subject,
        kind: new.kind,
        scope: new.scope.normalized(),
        channel: new.channel,
        verification: new.verification,
        regime: new.regime.as_str().to_owned(),
        region: new.region,
        rule,
        state: State::Received,
        resume: None,
        received_at: new.at,
        due_at,
        acknowledge_by,
        extension_until,
        extended_at: None,
        reason: None,
        updated_at: new.at,
    })
}

/// A step asked of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The next step: received → verified → in progress → completed (from `extended`, the
    /// next step from where it stood). `expect` guards against two operators racing: the step
    /// is refused unless it leads there. Verifying needs a verification, given here or at
    /// intake.
    Advance {
        expect: Option<State>,
        verification: Option<Verification>,
        note: Option<String>,
    },
    /// Puts the answer off, once, with a reason, while the first deadline still runs, to
    /// `until` (default: the latest the rule allows).
    Extend {
        reason: String,
        until: Option<UnixMillis>,
    },
    /// Refuses the request, with a reason.
    Reject { reason: String },
    /// Settles one task of a request in progress (its state does not change): `target`'s work
    /// done (by Kept's own worker, or acknowledged by the system), or handled by hand by an
    /// operator, which needs a `note`. The store writes the task and this record together.
    Settle {
        target: String,
        handled: bool,
        note: Option<String>,
        /// What the work did, as its task keeps it (counts, the acknowledgement's reference).
        detail: Option<String>,
    },
    /// Records something done for the request that does not move it (its export handed
    /// over): the state stays, the log proves when it happened and what it was. `detail`
    /// keys are plain names; refused on a rejected request.
    Note {
        note: String,
        detail: Vec<(String, String)>,
    },
    /// Lifts the restriction a restriction request put on the subject's data (GDPR Art.
    /// 18(3)), with a reason: once it was carried out (in progress or completed). The state
    /// stays; the log records the lifting.
    Lift { reason: String },
}

impl Transition {
    pub fn name(&self) -> &'static str {
        match self {
            Transition::Advance { .. } => "advance",
            Transition::Extend { .. } => "extend",
            Transition::Reject { .. } => "reject",
            Transition::Settle { .. } => "settle",
            Transition::Note { .. } => "note",
            Transition::Lift { .. } => "lift",
        }
    }
}

/// Why a request or a step of it is refused. Each has a stable code and names the field to
/// blame, if one is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("a `{state}` request cannot be {action}: it is closed")]
    Closed { state: State, action: &'static str },
    #[error("the request is verified already; `verification` belongs to its first step")]
    VerifiedAlready,
    #[error("the request's next step is `{next}`, not `{expected}`")]
    UnexpectedStep { expected: State, next: State },
    #[error("the request cannot be verified without a `verification`")]
    Unverified,
    #[error("a `{}` verification needs `verification.{field}`", method.as_str())]
    Verification {
        field: &'static str,
        method: VerificationMethod,
    },
    #[error("the request was already extended once")]
    ExtendedTwice,
    #[error("the `{rule}` deadline allows no extension")]
    NoExtension { rule: String },
    #[error("the extension must be asked for before the first deadline passes")]
    ExtensionLate,
    #[error(
        "`until` must be after the current due date and at most {limit} (the rule's extension)"
    )]
    ExtensionRange { limit: UnixMillis },
    #[error("`{field}` is required and may not be blank")]
    ReasonRequired { field: &'static str },
    #[error("`{field}` is longer than {MAX_TEXT} bytes, or holds more than {MAX_SCOPE} entries")]
    TooLong { field: &'static str },
    #[error("`{field}` holds a control character; it is not allowed")]
    ControlCharacter { field: &'static str },
    /// Only an erasure request is carried out by erasing.
    #[error("request {id} is a `{}` request, not an erasure", kind.as_str())]
    NotErasure { id: u64, kind: RequestKind },
    /// An erasure is carried out once its request is verified, and until it is completed.
    #[error("request {id} is `{}`: an erasure is carried out once verified and until completed", state.as_str())]
    NotExecutable { id: u64, state: State },
    #[error("only a `restriction` request can be lifted, not a `{kind}` request")]
    NotLiftable { kind: RequestKind },
    #[error("a `{state}` restriction has put no gate yet: it is lifted once in progress")]
    NotInForce { state: State },
    #[error("a `{state}` request is not carried out: it is once `in_progress`")]
    NotStarted { state: State },
    #[error(
        "another subject took the corrected `{kind}` since the request was filed; merge or erase first, then apply again"
    )]
    IdentifierTaken { kind: &'static str },
    #[error(
        "a `{state}` request has no work under way: only a request in progress has tasks to settle"
    )]
    NotInProgress { state: State },
    #[error(
        "the request cannot be completed while these tasks are not done: {}",
        quoted(targets)
    )]
    TasksPending { targets: Vec<String> },
    #[error("the request has no task `{target}`")]
    UnknownTask { target: String },
    #[error("the task `{target}` is settled already")]
    TaskSettled { target: String },
}

fn quoted(targets: &[String]) -> String {
    targets
        .iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl RequestError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Closed { .. } => "request.closed",
            RequestError::VerifiedAlready => "request.already_verified",
            RequestError::UnexpectedStep { .. } => "request.unexpected_step",
            RequestError::Unverified => "request.unverified",
            RequestError::Verification { .. } => "request.verification",
            RequestError::ExtendedTwice => "request.extended_twice",
            RequestError::NoExtension { .. } => "request.no_extension",
            RequestError::ExtensionLate => "request.extension_late",
            RequestError::ExtensionRange { .. } => "request.extension_range",
            RequestError::ReasonRequired { .. } => "request.reason_required",
            RequestError::TooLong { .. } => "request.too_long",
            RequestError::ControlCharacter { .. } => "request.control_character",
            RequestError::NotInProgress { .. } => "request.not_in_progress",
            RequestError::TasksPending { .. } => "request.tasks_pending",
            RequestError::UnknownTask { .. } => "request.unknown_task",
            RequestError::TaskSettled { .. } => "request.task_settled",
            RequestError::NotLiftable { .. } => "request.not_liftable",
            RequestError::NotInForce { .. } => "request.not_in_force",
            RequestError::NotStarted { .. } => "request.not_started",
            RequestError::IdentifierTaken { .. } => "request.identifier_taken",
            RequestError::NotErasure { .. } => "request.not_erasure",
            RequestError::NotExecutable { .. } => "request.not_executable",
        }
    }

    /// The input field to blame, as the API names it.
    pub fn field(&self) -> &'static str {
        match self {
            RequestError::Closed { .. }
            | RequestError::ExtendedTwice
            | RequestError::NoExtension { .. }
            | RequestError::ExtensionLate
            | RequestError::NotInProgress { .. }
            | RequestError::TasksPending { .. }
            | RequestError::TaskSettled { .. } => "state",
            RequestError::UnknownTask { .. } => "target",
            RequestError::NotInForce { .. } | RequestError::NotStarted { .. } => "state",
            RequestError::NotLiftable { .. } => "kind",
            RequestError::IdentifierTaken { .. } => "corrections",
            RequestError::NotExecutable { .. } => "state",
            RequestError::NotErasure { .. } => "kind",
            RequestError::UnexpectedStep { .. } => "to",
            RequestError::Unverified | RequestError::VerifiedAlready => "verification",
            RequestError::Verification { field, .. } => match *field {
                "agent" => "verification.agent",
                _ => "verification.reference",
            },
            RequestError::ExtensionRange { .. } => "until",
            RequestError::ReasonRequired { field }
            | RequestError::TooLong { field }
            | RequestError::ControlCharacter { field } => field,
        }
    }

    /// Whether the request's state refused the step (a conflict), rather than the input.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            RequestError::Closed { .. }
                | RequestError::VerifiedAlready
                | RequestError::UnexpectedStep { .. }
                | RequestError::Unverified
                | RequestError::ExtendedTwice
                | RequestError::NoExtension { .. }
                | RequestError::ExtensionLate
                | RequestError::NotInProgress { .. }
                | RequestError::TasksPending { .. }
                | RequestError::TaskSettled { .. }
                | RequestError::NotLiftable { .. }
                | RequestError::NotInForce { .. }
                | RequestError::NotStarted { .. }
                | RequestError::IdentifierTaken { .. }
                | RequestError::NotErasure { .. }
                | RequestError::NotExecutable { .. }
        )
    }
}

/// Text a request keeps forever: at most [`MAX_TEXT`] bytes, no control characters (NUL,
/// newlines, escapes).
fn plain(field: &'static str, value: &str) -> Result<(), RequestError> {
    if value.len() > MAX_TEXT {
        return Err(RequestError::TooLong { field });
    }
    if value.chars().any(char::is_control) {
        return Err(RequestError::ControlCharacter { field });
    }
    Ok(())
}

fn text(field: &'static str, value: &str) -> Result<String, RequestError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(RequestError::ReasonRequired { field });
    }
    plain(field, trimmed)?;
    Ok(trimmed.to_owned())
}

/// A step applied: the request after it and the log record that proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub request: Request,
    pub record: LogRecord,
}

/// Applies `step` to `request` at `now` by `actor`, or says why it may not be taken. Pure:
/// the store calls it on the row it read under its write lock, and writes the request and the
/// record in one transaction.
pub fn apply(
    request: &Request,
    step: &Transition,
    actor: &str,
    now: UnixMillis,
) -> Result<Applied, RequestError> {
    let mut next = request.clone();
    let mut detail = Vec::new();
    let mut reason = None;
    let closed = |action| RequestError::Closed {
        state: request.state,
        action,
    };
    match step {
        Transition::Advance {
            expect,
            verification,
            note,
        } => {
            let from = request.working_state();
            let to = from.next().ok_or_else(|| closed("advanced"))?;
            if let Some(expected) = expect
                && *expected != to
            {
                return Err(RequestError::UnexpectedStep {
                    expected: *expected,
                    next: to,
                });
            }
            if to == State::Verified {
                let v = verification
                    .clone()
                    .or_else(|| request.verification.clone())
                    .ok_or(RequestError::Unverified)?;
                v.check()?;
                detail.extend(verification_detail(&v));
                next.verification = Some(v);
            } else if verification.is_some() {
                // Verification is the first step's; a later one would rewrite history.
                return Err(RequestError::VerifiedAlready);
            }
            if let Some(note) = note {
                detail.push(("note".to_owned(), text("note", note)?));
            }
            next.state = to;
            next.resume = None;
        }
        Transition::Extend { reason: why, until } => {
            if !request.state.is_open() {
                return Err(closed("extended"));
            }
            if request.state == State::Extended || request.extended_at.is_some() {
                return Err(RequestError::ExtendedTwice);
            }
            let limit = request
                .extension_until
                .ok_or_else(|| RequestError::NoExtension {
                    rule: request.rule.clone(),
                })?;
            if now > request.due_at {
                return Err(RequestError::ExtensionLate);
            }
            let new_due = until.unwrap_or(limit);
            if new_due <= request.due_at || new_due > limit {
                return Err(RequestError::ExtensionRange { limit });
            }
            let why = text("reason", why)?;
            reason = Some(why.clone());
            next.reason = Some(why);
            next.resume = Some(request.state);
            next.state = State::Extended;
            next.due_at = new_due;
            next.extended_at = Some(now);
        }
        Transition::Lift { reason: why } => {
            if request.kind != RequestKind::Restriction {
                return Err(RequestError::NotLiftable { kind: request.kind });
            }
            let carried_out = matches!(request.working_state(), State::InProgress)
                || request.state == State::Completed;
            if !carried_out {
                return Err(RequestError::NotInForce {
                    state: request.state,
                });
            }
            let why = text("reason", why)?;
            reason = Some(why);
            detail.push(("gate".to_owned(), "lifted".to_owned()));
        }
        Transition::Reject { reason: why } => {
            if !request.state.is_open() {
                return Err(closed("rejected"));
            }
            let why = text("reason", why)?;
            reason = Some(why.clone());
            next.reason = Some(why);
            next.resume = None;
            next.state = State::Rejected;
        }
        Transition::Settle {
            target,
            handled,
            note,
            detail: work,
        } => {
            if request.working_state() != State::InProgress {
                return Err(RequestError::NotInProgress {
                    state: request.state,
                });
            }
            let target = text("target", target)?;
            detail.push(("task".to_owned(), target));
            let settled = if *handled {
                TaskState::Handled
            } else {
                TaskState::Done
            };
            detail.push(("task.state".to_owned(), settled.as_str().to_owned()));
            match note {
                Some(note) => detail.push(("note".to_owned(), text("note", note)?)),
                None if *handled => return Err(RequestError::ReasonRequired { field: "note" }),
                None => {}
            }
            if let Some(work) = work.as_deref().map(str::trim).filter(|w| !w.is_empty()) {
                plain("detail", work)?;
                detail.push(("task.detail".to_owned(), work.to_owned()));
            }
        }
        Transition::Note { note, detail: more } => {
            if request.state == State::Rejected {
                return Err(closed("noted"));
            }
            detail.push(("note".to_owned(), text("note", note)?));
            for (key, value) in more {
                plain("detail", key)?;
                plain("detail", value)?;
                if key.is_empty() || key == "note" {
                    return Err(RequestError::ReasonRequired { field: "detail" });
                }
                if detail.iter().all(|(k, _)| k != key) {
                    detail.push((key.clone(), value.clone()));
                }
            }
            // A note leaves the request as it stood, `updated_at` included.
            next.updated_at = request.updated_at;
            detail.sort();
            let record = LogRecord {
                request: request.id,
                subject: request.subject,
                kind: request.kind,
                from: Some(request.state),
                to: request.state,
                due_at: request.due_at,
                actor: actor.to_owned(),
                reason: None,
                detail,
                at: now,
            };
            return Ok(Applied {
                request: next,
                record,
            });
        }
    }
    next.updated_at = now;
    detail.sort();
    let record = LogRecord {
        request: request.id,
        subject: request.subject,
        kind: request.kind,
        from: Some(request.state),
        to: next.state,
        due_at: next.due_at,
        actor: actor.to_owned(),
        reason,
        detail,
        at: now,
    };
    Ok(Applied {
        request: next,
        record,
    })
}

fn verification_detail(v: &Verification) -> Vec<(String, String)> {
    let mut out = vec![(
        "verification.method".to_owned(),
        v.method.as_str().to_owned(),
    )];
    if let Some(r) = &v.reference {
        out.push(("verification.reference".to_owned(), r.clone()));
    }
    if let Some(a) = &v.agent {
        out.push(("verification.agent".to_owned(), a.clone()));
    }
    out
}

/// The record of a request's intake: everything the deadline and the scope came from.
pub fn intake_record(request: &Request, actor: &str) -> LogRecord {
    let mut detail = vec![
        ("channel".to_owned(), request.channel.as_str().to_owned()),
        ("regime".to_owned(), request.regime.clone()),
        ("rule".to_owned(), request.rule.clone()),
    ];
    if let Some(region) = &request.region {
        detail.push(("region".to_owned(), region.clone()));
    }
    let list = |l: &Vec<String>| serde_json::to_string(l).unwrap_or_default();
    for (key, values) in [
        ("scope.categories", &request.scope.categories),
        ("scope.purposes", &request.scope.purposes),
        ("scope.systems", &request.scope.systems),
    ] {
        if !values.is_empty() {
            detail.push((key.to_owned(), list(values)));
        }
    }
    if let Some(v) = &request.verification {
        detail.extend(verification_detail(v));
    }
    detail.sort();
    LogRecord {
        request: request.id,
        subject: request.subject,
        kind: request.kind,
        from: None,
        to: request.state,
        due_at: request.due_at,
        actor: actor.to_owned(),
        reason: None,
        detail,
        at: request.received_at,
    }
}

/// One record of the requests log: a request entering a state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogRecord {
    pub request: u64,
    pub subject: SubjectId,
    pub kind: RequestKind,
    /// `None` for the intake.
    pub from: Option<State>,
    pub to: State,
    /// The due date after this step.
    pub due_at: UnixMillis,
    /// Who took the step: `key:<key id>`, `preference_center`, `operator:<name>`.
    pub actor: String,
    pub reason: Option<String>,
    /// Whatever else the step says, by key, keys in ascending order and each once.
    pub detail: Vec<(String, String)>,
    pub at: UnixMillis,
}

/// The canonical bytes of a log record (version 1):
///
/// `1 ‖ request u64 ‖ subject u32 ‖ kind str ‖ from (0 | state tag) ‖ to tag ‖ due i64 ‖
/// actor str ‖ reason opt str ‖ detail count u32 ‖ (key str ‖ value str)* ‖ at i64`
///
/// integers big-endian, `str` a u32 length then UTF-8, `opt str` a 0 or a 1 then the string.
pub fn encode_record(record: &LogRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(RECORD_VERSION);
    out.extend_from_slice(&record.request.to_be_bytes());
    out.extend_from_slice(&record.subject.0.to_be_bytes());
    put_str(&mut out, record.kind.as_str());
    out.push(record.from.map_or(0, State::tag));
    out.push(record.to.tag());
    out.extend_from_slice(&record.due_at.to_be_bytes());
    put_str(&mut out, &record.actor);
    put_opt_str(&mut out, record.reason.as_deref());
    let count = u32::try_from(record.detail.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for (key, value) in record.detail.iter().take(count as usize) {
        put_str(&mut out, key);
        put_str(&mut out, value);
    }
    out.extend_from_slice(&record.at.to_be_bytes());
    out
}

/// Decodes canonical bytes; rejects anything `encode_record` would not write.
pub fn decode_record(bytes: &[u8]) -> Result<LogRecord, DecodeError> {
    let mut r = Reader { rest: bytes };
    let version = r.u8("version")?;
    if version != RECORD_VERSION {
        return Err(DecodeError::Version(version));
    }
    let request = u64::from_be_bytes(
        r.take(8, "request")?
            .try_into()
            .map_err(|_| DecodeError::Truncated("request"))?,
    );
    let subject = SubjectId(r.u32("subject")?);
    let kind = RequestKind::parse(r.str("kind")?).ok_or(DecodeError::Invalid("kind"))?;
    let from = match r.u8("from")? {
        0 => None,
        tag => Some(State::from_tag(tag).ok_or(DecodeError::Invalid("from"))?),
    };
    let to = State::from_tag(r.u8("to")?).ok_or(DecodeError::Invalid("to"))?;
    let due_at = r.i64("due")?;
    let actor = r.str("actor")?.to_owned();
    let reason = r.opt_str("reason")?.map(str::to_owned);
    let count = r.u32("detail count")?;
    let mut detail: Vec<(String, String)> = Vec::new();
    for _ in 0..count {
        let key = r.str("detail key")?;
        let value = r.str("detail value")?;
        // Keys strictly ascending: one order, so one encoding.
        if detail.last().is_some_and(|(k, _)| k.as_str() >= key) {
            return Err(DecodeError::Invalid("detail order"));
        }
        detail.push((key.to_owned(), value.to_owned()));
    }
    let at = r.i64("time")?;
    if !r.rest.is_empty() {
        return Err(DecodeError::Trailing(r.rest.len()));
    }
    let record = LogRecord {
        request,
        subject,
        kind,
        from,
        to,
        due_at,
        actor,
        reason,
        detail,
        at,
    };
    debug_assert!(
        encode_record(&record) == bytes,
        "accepted requests log bytes that `encode_record` would not write"
    );
    Ok(record)
}

/// The columns a log row stores beside its bytes, read from the bytes.
pub fn record_columns(bytes: &[u8]) -> Result<Columns, DecodeError> {
    decode_record(bytes).map(|r| Columns {
        subject: r.subject,
        at: r.at,
    })
}

/// A record chained after `prev` at position `seq` of the requests log.
pub fn chain(prev: &ChainHash, seq: u64, record: &LogRecord) -> LedgerEntry {
    let bytes = encode_record(record);
    let hash = chain_hash_in(REQUESTS_CHAIN, prev, seq, &bytes);
    LedgerEntry { seq, bytes, hash }
}

/// A streaming verifier of the requests log, checked against checkpoints at `checkpoint_seqs`.
pub fn verifier(checkpoint_seqs: impl IntoIterator<Item = u64>) -> ChainVerifier {
    ChainVerifier::for_chain(REQUESTS_CHAIN, record_columns, checkpoint_seqs)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "test code: a failed expectation is a failed test"
    )]
    use super::*;
    use proptest::prelude::*;

    const T0: UnixMillis = 1_772_445_600_000;
    const DAY: UnixMillis = 24 * 60 * 60 * 1000;

    fn filed(regime: Regime, kind: RequestKind) -> Request {
        let mut r = intake(
            &Rights::builtin().unwrap(),
            Intake {
                subject: SubjectId(7),
                kind,
                scope: Scope::default(),
                channel: Channel::Api,
                verification: None,
                regime,
                region: None,
                at: T0,
            },
        )
        .unwrap();
        r.id = 1;
        r
    }

    fn advance() -> Transition {
        Transition::Advance {
            expect: None,
            verification: None,
            note: None,
        }
    }

    fn stated() -> Verification {
        Verification {
            method: VerificationMethod::CompanyStated,
            reference: Some("case-1".into()),
            agent: None,
        }
    }

    #[test]
    fn intake_takes_the_deadline_of_the_subjects_regime_and_strictest_when_unknown() {
        let ccpa = filed(Regime::Ccpa, RequestKind::Erasure);
        assert_eq!(ccpa.rule, "ccpa.requests");
        assert_eq!(ccpa.due_at, T0 + 45 * DAY);
        assert_eq!(ccpa.extension_until, Some(T0 + 90 * DAY));
        let unknown = filed(Regime::Strictest, RequestKind::Access);
        assert_eq!(unknown.rule, "strictest.requests");
        assert_eq!(unknown.due_at, T0 + 15 * DAY);
        assert_eq!(unknown.state, State::Received);
    }

    #[test]
    fn a_note_keeps_the_state_and_is_refused_once_rejected() {
        let r = filed(Regime::Gdpr, RequestKind::Access);
        let note = Transition::Note {
            note: "export downloaded".into(),
            detail: vec![("export.format".into(), "json".into())],
        };
        let noted = apply(&r, &note, "export", T0 + DAY).unwrap();
        assert_eq!(noted.request, r, "nothing of the request moves");
        assert_eq!(noted.record.from, Some(State::Received));
        assert_eq!(noted.record.to, State::Received);
        assert_eq!(noted.record.at, T0 + DAY);
        assert_eq!(
            noted.record.detail,
            vec![
                ("export.format".to_owned(), "json".to_owned()),
                ("note".to_owned(), "export downloaded".to_owned())
            ]
        );
        let bytes = encode_record(&noted.record);
        assert_eq!(decode_record(&bytes).unwrap(), noted.record);
        let rejected = apply(
            &r,
            &Transition::Reject {
                reason: "not the subject".into(),
            },
            "k",
            T0,
        )
        .unwrap()
        .request;
        assert_eq!(
            apply(&rejected, &note, "export", T0).unwrap_err().code(),
            "request.closed"
        );
    }

    #[test]
    fn the_happy_path_and_its_records() {
        let r = filed(Regime::Gdpr, RequestKind::Access);
        let err = apply(&r, &advance(), "key:k", T0 + 1).unwrap_err();
        assert_eq!(err.code(), "request.unverified");
        let v = apply(
            &r,
            &Transition::Advance {
                expect: Some(State::Verified),
                verification: Some(stated()),
                note: None,
            },
            "key:k",
            T0 + 1,
        )
        .unwrap();
        assert_eq!(v.request.state, State::Verified);
        assert_eq!(v.record.from, Some(State::Received));
        assert!(
            v.record
                .detail
                .contains(&("verification.reference".into(), "case-1".into()))
        );
        let again = Transition::Advance {
            expect: None,
            verification: Some(stated()),
            note: None,
        };
        let late = apply(&v.request, &again, "key:k", T0 + 2).unwrap_err();
        assert_eq!(late.code(), "request.already_verified");
        let p = apply(&v.request, &advance(), "key:k", T0 + 2).unwrap();
        assert_eq!(p.request.state, State::InProgress);
        let c = apply(&p.request, &advance(), "key:k", T0 + 3).unwrap();
        assert_eq!(c.request.state, State::Completed);
        for step in [
            advance(),
            Transition::Reject { reason: "x".into() },
            Transition::Extend {
                reason: "x".into(),
                until: None,
            },
        ] {
            assert_eq!(
                apply(&c.request, &step, "k", T0 + 4).unwrap_err().code(),
                "request.closed"
            );
        }
    }

    #[test]
    fn a_step_the_caller_did_not_expect_is_refused() {
        let r = filed(Regime::Gdpr, RequestKind::Access);
        let err = apply(
            &r,
            &Transition::Advance {
                expect: Some(State::Completed),
                verification: Some(stated()),
                note: None,
            },
            "k",
            T0,
        )
        .unwrap_err();
        assert_eq!(err.code(), "request.unexpected_step");
        assert_eq!(err.field(), "to");
    }

    #[test]
    fn verification_needs_what_its_method_names() {
        let agent = Verification {
            method: VerificationMethod::Agent,
            reference: Some("poa.pdf".into()),
            agent: None,
        };
        assert_eq!(agent.check().unwrap_err().field(), "verification.agent");
        let stated = Verification {
            reference: Some("  ".into()),
            ..stated()
        };
        assert_eq!(stated.check().unwrap_err().code(), "request.verification");
    }

    #[test]
    fn extension_once_within_the_rule_and_before_the_deadline() {
        let r = filed(Regime::Gdpr, RequestKind::Erasure);
        let limit = r.extension_until.unwrap();
        let late = apply(
            &r,
            &Transition::Extend {
                reason: "complex".into(),
                until: None,
            },
            "k",
            r.due_at + 1,
        );
        assert_eq!(late.unwrap_err().code(), "request.extension_late");
        let too_far = apply(
            &r,
            &Transition::Extend {
                reason: "complex".into(),
                until: Some(limit + 1),
            },
            "k",
            T0 + DAY,
        );
        assert_eq!(too_far.unwrap_err().code(), "request.extension_range");
        let blank = apply(
            &r,
            &Transition::Extend {
                reason: " ".into(),
                until: None,
            },
            "k",
            T0 + DAY,
        );
        assert_eq!(blank.unwrap_err().field(), "reason");
        let e = apply(
            &r,
            &Transition::Extend {
                reason: "complex".into(),
                until: None,
            },
            "k",
            T0 + DAY,
        )
        .unwrap();
        assert_eq!(e.request.state, State::Extended);
        assert_eq!(e.request.due_at, limit);
        assert_eq!(e.record.due_at, limit);
        let again = apply(
            &e.request,
            &Transition::Extend {
                reason: "again".into(),
                until: None,
            },
            "k",
            T0 + 2 * DAY,
        );
        assert_eq!(again.unwrap_err().code(), "request.extended_twice");
        // Work goes on from where it stood, and the extension stays used.
        let v = apply(
            &e.request,
            &Transition::Advance {
                expect: None,
                verification: Some(stated()),
                note: None,
            },
            "k",
            T0 + 2 * DAY,
        )
        .unwrap();
        assert_eq!(v.request.state, State::Verified);
        let again = apply(
            &v.request,
            &Transition::Extend {
                reason: "again".into(),
                until: None,
            },
            "k",
            T0 + 3 * DAY,
        );
        assert_eq!(again.unwrap_err().code(), "request.extended_twice");
        let lgpd = filed(Regime::Lgpd, RequestKind::Access);
        let none = apply(
            &lgpd,
            &Transition::Extend {
                reason: "x".into(),
                until: None,
            },
            "k",
            T0,
        );
        assert_eq!(none.unwrap_err().code(), "request.no_extension");
    }

    #[test]
    fn text_kept_forever_is_plain() {
        let r = filed(Regime::Gdpr, RequestKind::Access);
        let nul = apply(
            &r,
            &Transition::Reject {
                reason: "a\0b".into(),
            },
            "k",
            T0,
        );
        assert_eq!(nul.unwrap_err().code(), "request.control_character");
        let agent = Verification {
            method: VerificationMethod::Agent,
            reference: Some("proof\n".into()),
            agent: Some("Ada".into()),
        };
        assert_eq!(agent.check().unwrap_err().field(), "verification.reference");
        let scope = Scope {
            purposes: vec![String::new()],
            ..Scope::default()
        };
        assert_eq!(scope.check().unwrap_err().field(), "scope.purposes");
    }

    #[test]
    fn only_a_restriction_carried_out_is_lifted_and_the_log_says_so() {
        let lift = || Transition::Lift {
            reason: "accuracy checked".into(),
        };
        let objection = filed(Regime::Gdpr, RequestKind::Objection);
        let err = apply(&objection, &lift(), "k", T0).unwrap_err();
        assert_eq!((err.code(), err.field()), ("request.not_liftable", "kind"));
        let r = filed(Regime::Gdpr, RequestKind::Restriction);
        let early = apply(&r, &lift(), "k", T0).unwrap_err();
        assert_eq!(early.code(), "request.not_in_force");
        let mut started = r.clone();
        started.state = State::InProgress;
        let blank = Transition::Lift { reason: " ".into() };
        assert_eq!(
            apply(&started, &blank, "k", T0).unwrap_err().field(),
            "reason"
        );
        let lifted = apply(&started, &lift(), "k", T0 + 1).unwrap();
        assert_eq!(lifted.request.state, State::InProgress);
        assert_eq!(lifted.record.from, Some(State::InProgress));
        assert_eq!(lifted.record.to, State::InProgress);
        assert_eq!(lifted.record.reason.as_deref(), Some("accuracy checked"));
        assert_eq!(
            lifted.record.detail,
            vec![("gate".to_owned(), "lifted".to_owned())]
        );
    }

    #[test]
    fn overdue_only_while_open() {
        let r = filed(Regime::Lgpd, RequestKind::Access);
        assert!(!r.is_overdue(r.due_at));
        assert!(r.is_overdue(r.due_at + 1));
        let done = apply(
            &r,
            &Transition::Reject {
                reason: "no".into(),
            },
            "k",
            T0,
        )
        .unwrap();
        assert!(!done.request.is_overdue(r.due_at + 1));
    }

    #[test]
    fn each_kind_owes_its_targets_and_a_task_settles_only_in_progress() {
        let owed = |kind, scope: &Scope| {
            owed_targets(kind, scope, ["shop"], ["crm", "ads"])
                .into_iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
        };
        let all = Scope::default();
        assert_eq!(
            owed(RequestKind::Erasure, &all),
            ["kept", "dataset:shop", "system:crm", "system:ads"]
        );
        assert_eq!(owed(RequestKind::Access, &all), ["kept", "dataset:shop"]);
        assert_eq!(
            owed(RequestKind::OptOut, &all),
            ["kept", "system:crm", "system:ads"]
        );
        let crm_only = Scope {
            systems: vec!["crm".into()],
            ..Scope::default()
        };
        assert_eq!(
            owed(RequestKind::Restriction, &crm_only),
            ["kept", "system:crm"]
        );
        for t in ["kept", "dataset:shop", "system:crm"] {
            assert_eq!(Target::parse(t).unwrap().to_string(), t);
        }
        for bad in ["", "kept:x", "system:", "system:a b", "table:x"] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }

        let settle = |handled, note: Option<&str>| Transition::Settle {
            target: "system:crm".into(),
            handled,
            note: note.map(str::to_owned),
            detail: None,
        };
        let received = filed(Regime::Gdpr, RequestKind::Erasure);
        assert_eq!(
            apply(&received, &settle(false, None), "kept", T0)
                .unwrap_err()
                .code(),
            "request.not_in_progress"
        );
        let mut working = received.clone();
        working.state = State::InProgress;
        let done = apply(&working, &settle(false, None), "kept", T0 + 1).unwrap();
        assert_eq!(done.request.state, State::InProgress);
        assert_eq!(done.record.from, Some(State::InProgress));
        assert_eq!(done.record.to, State::InProgress);
        assert_eq!(
            done.record.detail,
            [
                ("task".to_owned(), "system:crm".to_owned()),
                ("task.state".to_owned(), "done".to_owned())
            ]
        );
        assert_eq!(
            decode_record(&encode_record(&done.record)).unwrap(),
            done.record
        );
        assert_eq!(
            apply(&working, &settle(true, None), "kept", T0)
                .unwrap_err()
                .code(),
            "request.reason_required"
        );
        let handled = apply(&working, &settle(true, Some("called them")), "x", T0).unwrap();
        assert!(
            handled
                .record
                .detail
                .contains(&("note".into(), "called them".into()))
        );
    }

    fn sample() -> LogRecord {
        let mut r = filed(Regime::Gdpr, RequestKind::Erasure);
        r.verification = Some(stated());
        intake_record(&r, "key:kept_ab12cd34")
    }

    #[test]
    fn records_round_trip_and_chain_in_their_own_domain() {
        let record = sample();
        let bytes = encode_record(&record);
        assert_eq!(decode_record(&bytes), Ok(record.clone()));
        let entry = chain(&ChainHash::GENESIS, 1, &record);
        assert_ne!(
            entry.hash,
            crate::ledger::chain_hash(&ChainHash::GENESIS, 1, &bytes)
        );
        let mut v = verifier([]);
        assert_eq!(v.push(1, &entry.bytes, &entry.hash, None), Ok(()));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode_record(&trailing), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn detail_keys_out_of_order_do_not_decode() {
        let mut record = sample();
        record.detail.reverse();
        assert_eq!(
            decode_record(&encode_record(&record)),
            Err(DecodeError::Invalid("detail order"))
        );
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(record) = decode_record(&bytes) {
                prop_assert_eq!(encode_record(&record), bytes);
            }
        }
    }
}
