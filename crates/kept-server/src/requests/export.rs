//! Answering access and portability requests with the export (`subjects::export`): which
//! requests an export answers, the signed, expiring download link (a token of the preference
//! center's signer, of its own kind, naming the request, the subject and the expiry), and
//! handing the export over, which the requests log records with the hash of what was handed
//! over. The API, the download link, the preference center and `kept dsr export` go through
//! here.

use crate::http::error::{ApiError, ExportRefusal};
use crate::index::IndexHandle;
use crate::prefcenter::token::{Claims, Kind, TokenError, TokenKeys, random_id};
use crate::subjects::export::{Export, Format, Rendered};
use crate::web::texts::Texts;
use kept_core::UnixMillis;
use kept_core::requests::{Request, RequestKind, State, Transition};
use kept_store::Store;
use serde::Serialize;
use utoipa::ToSchema;

/// How long a download link works: seven days.
pub const LINK_TTL: UnixMillis = 7 * 24 * 60 * 60 * 1000;

/// Where a download link points, before its token.
pub const LINK_PATH: &str = "/exports/";

/// Who hands an export over through a download link, in the requests log.
pub const VIA_LINK: &str = "export_link";

fn refused(refusal: ExportRefusal, message: impl Into<String>) -> ApiError {
    ApiError::Export {
        refusal,
        message: message.into(),
    }
}

/// Whether an export answers `request` now: an access or portability request whose identity
/// is verified (verified, in progress, completed, or extended from one of them). A rejected
/// one is gone.
pub fn exportable(request: &Request) -> Result<(), ApiError> {
    if !matches!(request.kind, RequestKind::Access | RequestKind::Portability) {
        return Err(refused(
            ExportRefusal::NotExportable,
            format!(
                "request `{}` is a `{}` request; an export answers `access` and `portability` requests",
                request.id,
                request.kind.as_str()
            ),
        ));
    }
    match request.working_state() {
        State::Rejected => Err(refused(
            ExportRefusal::Gone,
            format!(
                "request `{}` was rejected; its export is not handed over",
                request.id
            ),
        )),
        State::Received => Err(refused(
            ExportRefusal::NotReady,
            format!(
                "request `{}` is not verified yet; verify the subject's identity first",
                request.id
            ),
        )),
        _ => Ok(()),
    }
}

/// A request's download links, one per format, and when they stop working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Links {
    pub request: u64,
    /// Unix milliseconds after which the links are refused.
    pub expires_at: i64,
    pub json: String,
    pub csv: String,
    pub html: String,
}

/// Signed links to `request`'s export, working until `now` + [`LINK_TTL`], the page in
/// `locale` when given.
pub fn links(
    keys: &TokenKeys,
    base_url: &str,
    request: &Request,
    locale: Option<&str>,
    now: UnixMillis,
) -> Links {
    let expires_at = now.saturating_add(LINK_TTL);
    let mut claims = Claims::new(Kind::Export, request.subject, expires_at, random_id());
    claims.request = Some(request.id);
    claims.locale = locale.map(str::to_owned);
    let token = keys.sign(&claims);
    let base = base_url.trim_end_matches('/');
    let link = |format: Format| format!("{base}{LINK_PATH}{token}?format={}", format.as_str());
    Links {
        request: request.id,
        expires_at,
        json: link(Format::Json),
        csv: link(Format::Csv),
        html: link(Format::Html),
    }
}

/// Signed links to the export answering request `id` (see [`links`]), or the refusal: no such
/// request, not one an export answers now ([`exportable`]), or its subject erased (or asked
/// to be), when nothing is handed over.
pub async fn links_for(
    store: &dyn Store,
    keys: &TokenKeys,
    base_url: &str,
    id: u64,
    locale: Option<&str>,
    now: UnixMillis,
) -> Result<Links, ApiError> {
    let request = crate::requests::service::stored(store, id).await?;
    exportable(&request)?;
    let erased = store
        .subject(request.subject)
        .await?
        .is_none_or(|s| s.erasure_requested_at.is_some());
    if erased {
        return Err(refused(
            ExportRefusal::Gone,
            format!(
                "the subject of request `{id}` was erased, or asked to be; nothing is handed over"
            ),
        ));
    }
    Ok(links(keys, base_url, &request, locale, now))
}

/// The claims of a genuine, unexpired download link and the request it names, or the
/// refusal: a token that does not check, has expired, or names a request that is not the
/// subject's access request. The link is the only authority, so each is refused alike
/// whatever the caller sends besides.
pub async fn open_link(
    keys: &TokenKeys,
    store: &dyn Store,
    token: &str,
    now: UnixMillis,
) -> Result<(Claims, Request), ApiError> {
    let claims = keys.open(Kind::Export, token, now).map_err(|e| match e {
        TokenError::Expired => refused(
            ExportRefusal::LinkExpired,
            "this download link has expired; ask for a new one",
        ),
        _ => refused(
            ExportRefusal::LinkInvalid,
            "this download link is not valid",
        ),
    })?;
    let mismatch = || {
        refused(
            ExportRefusal::LinkMismatch,
            "this download link names no export of this subject",
        )
    };
    let id = claims.request.ok_or_else(mismatch)?;
    let request = match id {
        id if id > crate::http::error::MAX_ROW_ID => None,
        id => store.request(id).await?,
    };
    let request = request.ok_or_else(mismatch)?;
    if request.subject != claims.subject() {
        return Err(mismatch());
    }
    exportable(&request)?;
    Ok((claims, request))
}

/// What handing an export over reads and writes: the export's own handles, the index a
/// subject's standing is read against, and the requests service's handles (whose ledger key
/// signs the requests log).
#[derive(Debug, Clone)]
pub struct HandOver<'a> {
    pub export: Export<'a>,
    pub index: &'a IndexHandle,
    pub work: crate::requests::work::Work,
}

impl HandOver<'_> {
    fn store(&self) -> &dyn Store {
        self.export.store
    }

    /// The export answering `request` in `format` (HTML in `t`'s language), recorded in the
    /// requests log with its hash, size and format before it is returned. A subject erased
    /// (or with an erasure requested) since is gone: nothing is handed over.
    /// `link` is the id of the download link it went through, when it did.
    pub async fn hand_over(
        &self,
        request: &Request,
        format: Format,
        t: &'static Texts,
        actor: &str,
        link: Option<&str>,
        now: UnixMillis,
    ) -> Result<Rendered, ApiError> {
        exportable(request)?;
        let rendered = self.render(request, format, t, now).await?;
        let mut step = note(&rendered, "export handed over");
        if let (Transition::Note { detail, .. }, Some(link)) = (&mut step, link) {
            detail.push(("export.link".to_owned(), link.to_owned()));
        }
        crate::requests::service::step(&self.work, request.id, &step, actor, now).await?;
        self.settle_local_tasks(request, &rendered, now).await?;
        Ok(rendered)
    }

    /// An access or portability request in progress that an operator answered another way
    /// (the export sent by mail): its pending tasks for Kept's data and the databases are
    /// marked handled by `actor` with `note`. Returns the request as it is then (completed
    /// when nothing else is open).
    pub async fn settle_local_tasks_by_hand(
        &self,
        request: &Request,
        note: &str,
        actor: &str,
        now: UnixMillis,
    ) -> Result<Request, ApiError> {
        for target in self.open_local_tasks(request).await? {
            crate::requests::tasks::handled(&self.work, request.id, &target, note, actor, now)
                .await?;
        }
        crate::requests::service::stored(self.store(), request.id).await
    }

    /// The tasks for Kept's data and the company's databases of a request in progress that
    /// are neither done nor handled.
    async fn open_local_tasks(
        &self,
        request: &Request,
    ) -> Result<Vec<kept_core::requests::Target>, ApiError> {
        use kept_core::requests::{Target, TaskState};
        if request.working_state() != State::InProgress {
            return Ok(Vec::new());
        }
        let tasks = self.store().request_tasks(request.id).await?;
        Ok(tasks
            .into_iter()
            .filter(|t| matches!(t.state, TaskState::Pending | TaskState::Failed))
            .filter_map(|t| Target::parse(&t.target))
            .filter(|t| matches!(t, Target::Kept | Target::Dataset(_)))
            .collect())
    }

    /// An access or portability request in progress is answered once its export is handed
    /// over: its tasks for Kept's own data and the company's databases (the export holds both)
    /// are settled with the export's hash, and the request completes when nothing else is
    /// open. A download of a request already completed settles nothing.
    async fn settle_local_tasks(
        &self,
        request: &Request,
        rendered: &Rendered,
        now: UnixMillis,
    ) -> Result<(), ApiError> {
        for target in self.open_local_tasks(request).await? {
            crate::requests::tasks::finish(
                &self.work,
                request.id,
                &target,
                crate::requests::tasks::Outcome::Done {
                    detail: Some(format!(
                        "export handed over: {} blake3:{} ({} bytes)",
                        rendered.format.as_str(),
                        rendered.hash,
                        rendered.bytes.len()
                    )),
                },
                now,
            )
            .await?;
        }
        Ok(())
    }

    /// The export answering `request`, rendered, without recording anything.
    pub async fn render(
        &self,
        request: &Request,
        format: Format,
        t: &'static Texts,
        now: UnixMillis,
    ) -> Result<Rendered, ApiError> {
        let gone = || {
            refused(
                ExportRefusal::Gone,
                format!(
                    "the subject of request `{}` was erased, or asked to be; nothing is handed over",
                    request.id
                ),
            )
        };
        let export = self.export;
        let standing = crate::subjects::standing::standing(
            export.store,
            self.index,
            export.manifest,
            request.subject,
            now,
        )
        .await?
        .ok_or_else(gone)?;
        if standing.subject.erasure_requested_at.is_some() {
            return Err(gone());
        }
        let document = export.document(&standing, Some(request), now).await?;
        document.render(format, t, &export.manifest.organisation)
    }
}

/// The requests log's record of an export: its format, BLAKE3 hash and size.
pub fn note(rendered: &Rendered, what: &str) -> Transition {
    Transition::Note {
        note: what.to_owned(),
        detail: vec![
            (
                "export.format".to_owned(),
                rendered.format.as_str().to_owned(),
            ),
            ("export.blake3".to_owned(), rendered.hash.clone()),
            ("export.bytes".to_owned(), rendered.bytes.len().to_string()),
        ],
    }
}

impl HandOver<'_> {
    /// The preference center's download: an access request filed for the signed-in subject
    /// (the session, opened by a link to a verified address, is the verification), verified,
    /// answered at once with the export in `format`, and completed, every step in the
    /// requests log. Returns the request as completed and the export.
    pub async fn answer_at_once(
        &self,
        subject: &kept_core::subject::Subject,
        regime: kept_core::regime::Regime,
        format: Format,
        t: &'static Texts,
        now: UnixMillis,
    ) -> Result<(Request, Rendered), ApiError> {
        use crate::requests::service::{self, PREFERENCE_CENTER};
        let filed = service::file_from_preference_center(
            &self.work,
            subject,
            regime,
            RequestKind::Access,
            now,
        )
        .await?;
        let id = filed.request.id;
        let advance = |to: State, note: Option<&str>| Transition::Advance {
            expect: Some(to),
            verification: None,
            note: note.map(str::to_owned),
        };
        for to in [State::Verified, State::InProgress] {
            service::step(&self.work, id, &advance(to, None), PREFERENCE_CENTER, now).await?;
        }
        let in_progress = crate::requests::service::stored(self.store(), id).await?;
        // Handing the export over settles Kept's and the databases' tasks, which completes
        // the request (an access request owes no system).
        let rendered = self
            .hand_over(&in_progress, format, t, PREFERENCE_CENTER, None, now)
            .await?;
        let done = crate::requests::service::stored(self.store(), id).await?;
        Ok((done, rendered))
    }
}

impl HandOver<'_> {
    /// What completing `request` records of its export: for an access or portability request
    /// in progress (its next step completes it), the hash of the JSON export as it stands
    /// now, so the log names what the answer was. `None` for any other request, or when no
    /// export can be made (the subject erased since): completing is not held up by it.
    pub async fn completion_note(
        &self,
        request: &Request,
        now: UnixMillis,
    ) -> Result<Option<String>, ApiError> {
        let exportable = matches!(request.kind, RequestKind::Access | RequestKind::Portability);
        if !exportable || request.working_state() != State::InProgress {
            return Ok(None);
        }
        let t = crate::web::texts::choose(None, None, &self.export.manifest.organisation.locales);
        match self.render(request, Format::Json, t, now).await {
            Ok(rendered) => Ok(Some(format!(
                "export json blake3:{} ({} bytes)",
                rendered.hash,
                rendered.bytes.len()
            ))),
            Err(ApiError::Export { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
