//! A request's next step as every caller takes it (`POST /v1/requests/{id}/advance`, the
//! console's buttons): completing an access or portability request notes its export's hash and
//! settles its tasks for Kept's data and the databases with it; entering `in_progress` carries
//! a rectification or a gate out at once (`carry`) and settles Kept's own task. One function,
//! so that a step taken in the console is the API's step.

use crate::http::error::{ApiError, MAX_ROW_ID};
use crate::requests::carry::CarryOut;
use crate::requests::export::HandOver;
use crate::requests::service::not_found;
use crate::requests::{service, tasks};
use kept_core::UnixMillis;
use kept_core::requests::{Request, RequestError, State, Target, Transition, Verification};

/// What taking a step uses: handing an export over (whose `work` is the requests service's
/// handles) and carrying a request out.
#[derive(Clone)]
#[expect(
    missing_debug_implementations,
    reason = "a borrow of the handles for one call; `CarryOut` prints nothing"
)]
pub struct Steps<'a> {
    pub hand_over: HandOver<'a>,
    pub carry: CarryOut<'a>,
}

/// The next step asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advance {
    /// The state the caller means to reach (`request.unexpected_step` when another is next).
    pub to: Option<State>,
    pub verification: Option<Verification>,
    pub note: Option<String>,
}

impl Steps<'_> {
    /// Takes request `id`'s next step by `actor` at `now` and returns the request as stored
    /// after it (and after the work it started).
    pub async fn advance(
        &self,
        id: u64,
        advance: Advance,
        actor: &str,
        now: UnixMillis,
    ) -> Result<Request, ApiError> {
        if id > MAX_ROW_ID {
            return Err(not_found(id));
        }
        let store = self.hand_over.export.store;
        let work = &self.hand_over.work;
        // Completing an access or portability request records the hash of its export: the
        // operator answering it (by mail, say) settles Kept's and the databases' tasks with that
        // note and the hash, which completes it.
        let note = advance.note;
        if let Some(request) = store.request(id).await?
            && let Some(mark) = self.hand_over.completion_note(&request, now).await?
        {
            let note = match &note {
                Some(n) => format!("{}; {mark}", n.trim()),
                None => mark,
            };
            let settled = self
                .hand_over
                .settle_local_tasks_by_hand(&request, &note, actor, now)
                .await?;
            if !settled.state.is_open() {
                return Ok(settled);
            }
        }
        let step = Transition::Advance {
            expect: advance.to,
            verification: advance.verification,
            note,
        };
        let stepped = service::step(work, id, &step, actor, now).await?;
        if stepped.request.state == State::InProgress {
            self.carry_out_and_settle(&stepped.request, now).await?;
        }
        Ok(store.request(id).await?.unwrap_or(stepped.request))
    }

    /// Carries out a rectification or a gate (`requests::carry`) on `request` in progress,
    /// then settles its task for Kept's own data (which completes it once its systems
    /// acknowledged).
    pub async fn carry_out_and_settle(
        &self,
        request: &Request,
        now: UnixMillis,
    ) -> Result<(), ApiError> {
        if let Some(detail) = self.carry.request(request, now).await?.detail() {
            match tasks::finish(
                &self.hand_over.work,
                request.id,
                &Target::Kept,
                tasks::Outcome::Done {
                    detail: Some(detail),
                },
                now,
            )
            .await
            {
                // Carried out again (`apply`) after its task was settled: nothing more to say.
                Ok(_) | Err(ApiError::Request(RequestError::TaskSettled { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
