//! Everything Kept holds about a subject, in one document: identifiers opened, traits with their
//! provenance, events, consents with their ledger records, channel choices, contacts made,
//! decisions logged, uses, merges, webhook deliveries, the subject's requests, and the rows the
//! connectors find in the company's own databases, with the plain-language sections an access
//! request answers (what we hold, why, since when, who it went to). One model, three formats:
//! JSON (schema `docs/schema/export-v1.json`, served at [`SCHEMA_PATH`]), a zip of CSV files,
//! and an HTML page in the person's language. The preference page's downloads, access and
//! portability requests' links and `kept dsr export` all read it here.

use crate::http::error::ApiError;
use crate::identity::Identities;
use crate::subjects::standing::{Standing, basis};
use crate::web::texts::Texts;
use kept_connect::{Connector, FoundTable};
use kept_core::identity::IdentifierKind;
use kept_core::manifest::Manifest;
use kept_core::requests::Request;
use kept_core::subject::Frequency;
use kept_core::{SubjectId, UnixMillis};
use kept_store::Store;
use kept_store::decision_log::DecisionLogQuery;
use kept_store::requests::RequestFilter;
use kept_store::uses::UseQuery;
use serde::Serialize;
use serde_json::value::RawValue;
use std::fmt;
use std::io::Write as _;

/// The document's format, named in every export.
pub const FORMAT: &str = "kept-export-v1";
/// Where the server publishes the export's JSON Schema.
pub const SCHEMA_PATH: &str = "/schema/export-v1.json";
/// The JSON Schema of [`FORMAT`], as checked in.
pub const SCHEMA: &str = include_str!("../../../../docs/schema/export-v1.json");

/// Rows one store read returns while paging through a large section.
const PAGE: u32 = 1_000;

/// Reads the URL a dataset's environment variable names (the environment itself in the
/// product; tests and benchmarks point it at a database of their own).
pub type DatasetUrls = dyn Fn(&str) -> Option<String> + Send + Sync;

/// What the export reads: the store, the identity keys that open identifiers, the manifest
/// (the controller, purposes, notices, systems and datasets) and where the datasets' URLs are.
#[derive(Clone, Copy)]
pub struct Export<'a> {
    pub store: &'a dyn Store,
    pub identities: &'a Identities,
    pub manifest: &'a Manifest,
    pub dataset_urls: &'a DatasetUrls,
}

impl fmt::Debug for Export<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Export")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The three formats an export is handed over in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Json,
    Csv,
    Html,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Json, Format::Csv, Format::Html];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Html => "html",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == s)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "application/zip",
            Format::Html => "text/html; charset=utf-8",
        }
    }

    /// The file name a download is saved under.
    pub fn file_name(self, subject: SubjectId) -> String {
        let ext = match self {
            Format::Json => "json",
            Format::Csv => "zip",
            Format::Html => "html",
        };
        format!("my-data-{}.{ext}", subject.0)
    }
}

/// An export rendered in one format: its bytes and their BLAKE3 hash, which the requests log
/// keeps to prove what was handed over.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub format: Format,
    pub bytes: Vec<u8>,
    pub hash: String,
}

impl Rendered {
    fn new(format: Format, bytes: Vec<u8>) -> Rendered {
        let hash = blake3::hash(&bytes).to_hex().to_string();
        Rendered {
            format,
            bytes,
            hash,
        }
    }
}

// --- the document ----------------------------------------------------------------------------

/// Everything held about a subject. Field order is the JSON's.
#[derive(Debug, Serialize)]
pub struct Document {
    pub format: &'static str,
    pub generated_at: UnixMillis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestRef>,
    pub controller: Controller,
    pub subject: SubjectView,
    /// What we hold and since when: each section's count and its earliest and latest time.
    pub summary: Vec<SummaryRow>,
    /// Why: the purposes with their legal basis for the subject, and the notices shown.
    pub purposes: Vec<PurposeView>,
    pub notices: Vec<NoticeView>,
    /// Who it may go to: the manifest's systems and what they use.
    pub recipients: Vec<RecipientView>,
    pub identifiers: Vec<IdentifierView>,
    pub traits: Vec<TraitView>,
    pub events: Vec<EventView>,
    pub consents: Vec<ConsentView>,
    pub channel_preferences: Vec<PreferenceView>,
    pub contacts: Vec<ContactView>,
    pub decisions: Vec<DecisionView>,
    pub uses: Vec<UseView>,
    pub merges: Vec<MergeView>,
    pub deliveries: Vec<DeliveryView>,
    pub requests: Vec<RequestRef>,
    pub erasure_requests: Vec<ErasureView>,
    pub company_databases: Vec<DatabaseView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestRef {
    pub id: u64,
    pub kind: &'static str,
    pub state: &'static str,
    pub channel: &'static str,
    pub received_at: UnixMillis,
    pub due_at: UnixMillis,
}

impl RequestRef {
    fn of(r: &Request) -> RequestRef {
        RequestRef {
            id: r.id,
            kind: r.kind.as_str(),
            state: r.state.as_str(),
            channel: r.channel.as_str(),
            received_at: r.received_at,
            due_at: r.due_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Controller {
    pub name: String,
    pub contact: String,
    pub postal_address: Option<String>,
    pub dpo: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SubjectView {
    pub id: u32,
    pub user_id: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub time_zone: Option<String>,
    pub regime: &'static str,
    pub created_at: UnixMillis,
}

#[derive(Debug, Serialize)]
pub struct SummaryRow {
    pub section: &'static str,
    pub count: u64,
    pub since: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
}

#[derive(Debug, Serialize)]
pub struct PurposeView {
    pub key: String,
    pub name: String,
    pub description: String,
    pub legal_basis: Option<&'static str>,
    pub retention_days: u32,
}

#[derive(Debug, Serialize)]
pub struct NoticeView {
    pub id: String,
    pub version: u32,
    pub hash: String,
    pub title: String,
    pub purposes: Vec<String>,
    pub categories: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RecipientView {
    pub key: String,
    pub name: String,
    pub purposes: Vec<String>,
    pub categories: Vec<String>,
    /// Whether Kept forwards data to it itself (a webhook).
    pub webhook: bool,
}

#[derive(Debug, Serialize)]
pub struct IdentifierView {
    pub kind: &'static str,
    /// `null` once the key it was sealed under is destroyed.
    pub value: Option<String>,
    pub since: UnixMillis,
}

#[derive(Debug, Serialize)]
pub struct TraitView {
    pub key: String,
    pub value: serde_json::Value,
    pub category: String,
    pub collection_point: String,
    pub notice: String,
    pub notice_version: u32,
    pub collected_at: UnixMillis,
    pub source: String,
    /// The request whose rectification set the value ("corrected by request N").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrected_by_request: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct EventView {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub timestamp: UnixMillis,
    pub received_at: UnixMillis,
    pub properties: Box<RawValue>,
    pub context: Box<RawValue>,
}

#[derive(Debug, Serialize)]
pub struct ConsentView {
    pub seq: u64,
    /// The ledger record's chain hash (hex).
    pub hash: String,
    pub purpose: String,
    pub channel: Option<String>,
    pub topic: Option<String>,
    pub action: &'static str,
    pub notice: Option<NoticeRef>,
    pub regime: String,
    pub source: String,
    pub method: &'static str,
    pub at: UnixMillis,
}

#[derive(Debug, Serialize)]
pub struct NoticeRef {
    pub id: String,
    pub version: u32,
    pub hash: String,
}

#[derive(Debug, Serialize)]
pub struct PreferenceView {
    pub channel: String,
    pub frequency: &'static str,
    pub quiet_hours: Option<String>,
    pub updated_at: UnixMillis,
}

#[derive(Debug, Serialize)]
pub struct ContactView {
    pub channel: String,
    pub purpose: String,
    pub topic: Option<String>,
    pub at: UnixMillis,
}

#[derive(Debug, Serialize)]
pub struct DecisionView {
    pub at: UnixMillis,
    pub asked_at: UnixMillis,
    pub purpose: String,
    pub channel: Option<String>,
    pub topic: Option<String>,
    pub categories: Vec<String>,
    pub allowed: bool,
    pub reason: String,
    pub caller: String,
}

#[derive(Debug, Serialize)]
pub struct UseView {
    pub at: UnixMillis,
    pub kind: &'static str,
    pub purpose: String,
    pub channel: Option<String>,
    pub topic: Option<String>,
    pub categories: Vec<String>,
    pub reason: String,
    pub actor: String,
}

#[derive(Debug, Serialize)]
pub struct MergeView {
    pub id: i64,
    pub action: String,
    pub from: u32,
    pub into: u32,
    pub cause: String,
    pub at: UnixMillis,
    pub undone_at: Option<UnixMillis>,
}

#[derive(Debug, Serialize)]
pub struct DeliveryView {
    pub kind: &'static str,
    pub system: String,
    pub state: &'static str,
    pub attempts: u32,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

#[derive(Debug, Serialize)]
pub struct ErasureView {
    pub state: &'static str,
    pub requested_at: UnixMillis,
    pub due_at: UnixMillis,
    pub regime: String,
}

/// What one dataset's connector found, or why it could not look.
#[derive(Debug, Serialize)]
pub struct DatabaseView {
    pub dataset: String,
    pub name: String,
    pub tables: Vec<FoundTable>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<DatabaseError>,
}

#[derive(Debug, Serialize)]
pub struct DatabaseError {
    pub code: &'static str,
    pub message: String,
}

impl Export<'_> {
    /// Everything held about the subject `standing` describes, at `now`, answering `request`
    /// when there is one. Large sections are read page by page; the company's databases are
    /// searched at the same time as Kept's own store is read.
    pub async fn document(
        &self,
        standing: &Standing,
        request: Option<&Request>,
        now: UnixMillis,
    ) -> Result<Document, ApiError> {
        let id = standing.subject.id;
        let opened = crate::subjects::identifiers::opened(self.store, self.identities, id).await?;
        let identifiers: Vec<IdentifierView> = opened
            .iter()
            .map(|(kind, value, since)| IdentifierView {
                kind: kind.as_str(),
                value: value.clone(),
                since: *since,
            })
            .collect();
        let databases = self.company_databases(standing, &opened);
        let held = self.held(standing, id);
        let (databases, held) = futures::join!(databases, held);
        let mut document = held?;
        document.generated_at = now;
        document.request = request.map(RequestRef::of);
        document.identifiers = identifiers;
        document.company_databases = databases;
        document.summary = summary(&document);
        Ok(document)
    }

    /// Everything Kept's own store holds (identifiers and the company's databases apart).
    async fn held(&self, standing: &Standing, id: SubjectId) -> Result<Document, ApiError> {
        let store = self.store;
        let manifest = self.manifest;
        let mut events = Vec::new();
        let mut after = None;
        loop {
            let page = store.events_of(id, after, PAGE).await?;
            let full = page.len() == PAGE as usize;
            after = page.last().map(|e| e.id);
            for e in page {
                events.push(EventView {
                    id: e.id,
                    kind: e.event.kind,
                    name: e.event.name,
                    timestamp: e.event.at,
                    received_at: e.event.received_at,
                    properties: raw(e.event.properties),
                    context: raw(e.event.context),
                });
            }
            if !full {
                break;
            }
        }
        let hashes: std::collections::HashMap<u64, String> = store
            .ledger_for_subject(id)
            .await?
            .into_iter()
            .map(|e| (e.seq, e.hash.to_hex()))
            .collect();
        let consents = standing
            .records
            .iter()
            .map(|r| ConsentView {
                seq: r.seq,
                hash: hashes.get(&r.seq).cloned().unwrap_or_default(),
                purpose: r.record.purpose.clone(),
                channel: r.record.channel.clone(),
                topic: r.record.topic.clone(),
                action: r.record.action.as_str(),
                notice: r.record.notice.as_ref().map(|n| NoticeRef {
                    id: n.id.clone(),
                    version: n.version,
                    hash: n.hash.clone(),
                }),
                regime: r.record.regime.clone(),
                source: r.record.source.clone(),
                method: r.record.method.as_str(),
                at: r.record.at,
            })
            .collect();
        let channel_preferences = store
            .channel_preferences(id)
            .await?
            .into_iter()
            .map(|p| PreferenceView {
                channel: p.channel,
                frequency: frequency_text(p.frequency),
                quiet_hours: p
                    .quiet_hours
                    .map(|q| format!("{}-{}", hhmm(q.start_minute), hhmm(q.end_minute))),
                updated_at: p.updated_at,
            })
            .collect();
        let contacts = store
            .contacts_of(id, 0)
            .await?
            .into_iter()
            .map(|c| ContactView {
                channel: c.channel,
                purpose: c.purpose,
                topic: c.topic,
                at: c.at,
            })
            .collect();
        let mut decisions = Vec::new();
        let mut before = None;
        loop {
            let query = DecisionLogQuery {
                subject: Some(id),
                before,
                limit: PAGE,
                ..DecisionLogQuery::default()
            };
            let page = store.decision_log(&query).await?;
            let full = page.len() == query.page_size() as usize;
            before = page.last().map(|d| d.id);
            decisions.extend(page.into_iter().map(|d| DecisionView {
                at: d.at,
                asked_at: d.asked_at,
                purpose: d.purpose,
                channel: d.channel,
                topic: d.topic,
                categories: d.categories,
                allowed: d.allowed,
                reason: d.reason,
                caller: d.caller,
            }));
            if !full {
                break;
            }
        }
        let mut uses = Vec::new();
        let mut before = None;
        loop {
            let query = UseQuery {
                subject: id,
                before,
                limit: PAGE,
            };
            let page = store.uses_of(&query).await?;
            let full = page.len() == query.page_size() as usize;
            before = page.last().map(|u| u.id);
            uses.extend(page.into_iter().map(|u| UseView {
                at: u.at,
                kind: u.kind.as_str(),
                purpose: u.purpose,
                channel: u.channel,
                topic: u.topic,
                categories: u.categories,
                reason: u.reason,
                actor: u.actor,
            }));
            if !full {
                break;
            }
        }
        let mut merged = store.merged_into(id).await?;
        merged.push(id);
        let merges = store
            .identity_log_of(&merged)
            .await?
            .into_iter()
            .map(|m| MergeView {
                id: m.id,
                action: m.action,
                from: m.from.0,
                into: m.into.0,
                cause: m.cause,
                at: m.at,
                undone_at: m.undone_at,
            })
            .collect();
        let mut deliveries = Vec::new();
        let mut after = None;
        loop {
            let page = store.deliveries_of(id, after, PAGE).await?;
            let full = page.len() == PAGE as usize;
            after = page.last().map(|d| d.id);
            deliveries.extend(page.into_iter().map(|d| DeliveryView {
                kind: d.kind.as_str(),
                system: d.system,
                state: d.state.as_str(),
                attempts: d.attempts,
                created_at: d.created_at,
                updated_at: d.updated_at,
            }));
            if !full {
                break;
            }
        }
        let requests = store
            .requests(&RequestFilter {
                subject: Some(id),
                limit: kept_store::requests::MAX_REQUEST_PAGE,
                ..RequestFilter::default()
            })
            .await?
            .iter()
            .map(RequestRef::of)
            .collect();
        let erasure_requests = store
            .erasure_requests(id)
            .await?
            .into_iter()
            .map(|e| ErasureView {
                state: e.state.as_str(),
                requested_at: e.requested_at,
                due_at: e.due_at,
                regime: e.regime,
            })
            .collect();
        let org = &manifest.organisation;
        Ok(Document {
            format: FORMAT,
            generated_at: 0,
            request: None,
            controller: Controller {
                name: org.name.clone(),
                contact: org.contact_email.clone(),
                postal_address: org.postal_address.clone(),
                dpo: org
                    .dpo
                    .as_ref()
                    .map(|p| format!("{} <{}>", p.name, p.email)),
            },
            subject: SubjectView {
                id: id.0,
                user_id: standing.subject.user_id.clone(),
                country: standing.subject.country.clone(),
                region: standing.subject.region.clone(),
                time_zone: standing.subject.time_zone.clone(),
                regime: standing.regime.as_str(),
                created_at: standing.subject.created_at,
            },
            summary: Vec::new(),
            purposes: manifest
                .purposes
                .iter()
                .map(|(key, p)| PurposeView {
                    key: key.clone(),
                    name: p.name.clone(),
                    description: p.description.clone(),
                    legal_basis: basis(manifest, key, standing.regime).map(|b| b.as_str()),
                    retention_days: p.retention_days,
                })
                .collect(),
            notices: manifest
                .notices
                .iter()
                .map(|(nid, n)| NoticeView {
                    id: nid.clone(),
                    version: n.version,
                    hash: n.hash.clone(),
                    title: n
                        .locales
                        .get("en")
                        .or_else(|| n.locales.values().next())
                        .map(|t| t.title.clone())
                        .unwrap_or_default(),
                    purposes: n.purposes.clone(),
                    categories: n.categories.clone(),
                })
                .collect(),
            recipients: manifest
                .systems
                .iter()
                .map(|(key, s)| {
                    let mut categories: Vec<String> =
                        s.uses.iter().flat_map(|u| u.categories.clone()).collect();
                    categories.sort();
                    categories.dedup();
                    RecipientView {
                        key: key.clone(),
                        name: s.name.clone(),
                        purposes: s.uses.iter().map(|u| u.purpose.clone()).collect(),
                        categories,
                        webhook: s.webhook.is_some(),
                    }
                })
                .collect(),
            identifiers: Vec::new(),
            traits: standing
                .traits
                .iter()
                .map(|t| TraitView {
                    key: t.key.clone(),
                    value: t.value.clone(),
                    category: t.category.clone(),
                    collection_point: t.provenance.collection_point.clone(),
                    notice: t.provenance.notice_id.clone(),
                    notice_version: t.provenance.notice_version,
                    collected_at: t.provenance.collected_at,
                    source: t.provenance.source.clone(),
                    corrected_by_request: t.provenance.corrected_by_request(),
                })
                .collect(),
            events,
            consents,
            channel_preferences,
            contacts,
            decisions,
            uses,
            merges,
            deliveries,
            requests,
            erasure_requests,
            company_databases: Vec::new(),
        })
    }

    /// Every manifest dataset searched for the subject's email addresses, phone numbers and
    /// user ids, all at once. A dataset that cannot be searched says why instead of failing
    /// the export: the rest of it is still owed.
    async fn company_databases(
        &self,
        standing: &Standing,
        opened: &[(IdentifierKind, Option<String>, UnixMillis)],
    ) -> Vec<DatabaseView> {
        let mut known: Vec<(IdentifierKind, &str)> = opened
            .iter()
            .filter(|(kind, _, _)| {
                matches!(
                    kind,
                    IdentifierKind::Email | IdentifierKind::Phone | IdentifierKind::UserId
                )
            })
            .filter_map(|(kind, value, _)| Some((*kind, value.as_deref()?)))
            .collect();
        if let Some(user_id) = &standing.subject.user_id {
            known.push((IdentifierKind::UserId, user_id));
        }
        let subject = known
            .into_iter()
            .try_fold(kept_connect::Subject::new(), |s, (kind, value)| {
                s.with(kind, value)
            });
        let searches: Vec<_> = self
            .manifest
            .datasets
            .iter()
            .map(|dataset| search(dataset, subject.clone(), self.dataset_urls))
            .collect();
        futures::future::join_all(searches).await
    }
}

/// One dataset searched for `subject`, or why it could not be.
async fn search(
    dataset: &kept_core::manifest::dataset::Dataset,
    subject: Result<kept_connect::Subject, kept_connect::ConnectError>,
    urls: &DatasetUrls,
) -> DatabaseView {
    let found = async {
        let subject = subject?;
        if subject.is_empty() {
            return Ok::<_, kept_connect::ConnectError>(Vec::new());
        }
        let mut connector = Connector::open(dataset, urls).await?;
        Ok(connector.find(&subject).await?.tables)
    }
    .await;
    let (tables, error) = match found {
        Ok(tables) => (tables, None),
        Err(e) => {
            tracing::warn!(
                dataset = %dataset.id,
                code = e.code(),
                error = %e,
                "access export: a dataset could not be searched"
            );
            (
                Vec::new(),
                Some(DatabaseError {
                    code: e.code(),
                    message: e.to_string(),
                }),
            )
        }
    };
    DatabaseView {
        dataset: dataset.id.clone(),
        name: dataset.name.clone().unwrap_or_else(|| dataset.id.clone()),
        tables,
        error,
    }
}

/// Stored JSON as it is, without parsing it into a tree; `null` should it not be JSON.
fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).unwrap_or_default()
}

/// What we hold and since when: each section's count, earliest and latest time.
fn summary(d: &Document) -> Vec<SummaryRow> {
    fn row(
        section: &'static str,
        times: impl Iterator<Item = UnixMillis> + Clone,
        count: usize,
    ) -> SummaryRow {
        SummaryRow {
            section,
            count: count as u64,
            since: times.clone().min(),
            until: times.max(),
        }
    }
    let rows: usize = d
        .company_databases
        .iter()
        .flat_map(|db| db.tables.iter().map(|t| t.rows.len()))
        .sum();
    vec![
        row(
            "identifiers",
            d.identifiers.iter().map(|i| i.since),
            d.identifiers.len(),
        ),
        row(
            "traits",
            d.traits.iter().map(|t| t.collected_at),
            d.traits.len(),
        ),
        row(
            "events",
            d.events.iter().map(|e| e.timestamp),
            d.events.len(),
        ),
        row(
            "consents",
            d.consents.iter().map(|c| c.at),
            d.consents.len(),
        ),
        row(
            "channel_preferences",
            d.channel_preferences.iter().map(|p| p.updated_at),
            d.channel_preferences.len(),
        ),
        row(
            "contacts",
            d.contacts.iter().map(|c| c.at),
            d.contacts.len(),
        ),
        row(
            "decisions",
            d.decisions.iter().map(|x| x.at),
            d.decisions.len(),
        ),
        row("uses", d.uses.iter().map(|u| u.at), d.uses.len()),
        row("merges", d.merges.iter().map(|m| m.at), d.merges.len()),
        row(
            "deliveries",
            d.deliveries.iter().map(|x| x.created_at),
            d.deliveries.len(),
        ),
        row(
            "requests",
            d.requests.iter().map(|r| r.received_at),
            d.requests.len(),
        ),
        row(
            "erasure_requests",
            d.erasure_requests.iter().map(|e| e.requested_at),
            d.erasure_requests.len(),
        ),
        row("company_databases", std::iter::empty(), rows),
    ]
}

// --- formats ---------------------------------------------------------------------------------

impl Document {
    /// The export in `format`; HTML in the language of `t`.
    pub fn render(
        &self,
        format: Format,
        t: &'static Texts,
        org: &kept_core::manifest::Organisation,
    ) -> Result<Rendered, ApiError> {
        let bytes = match format {
            Format::Json => self.json()?,
            Format::Csv => self.csv_zip()?,
            Format::Html => self.html(t, org)?.into_bytes(),
        };
        Ok(Rendered::new(format, bytes))
    }

    /// The JSON document (`docs/schema/export-v1.json`), compact: machine-readable, the page
    /// is the one to read.
    pub fn json(&self) -> Result<Vec<u8>, ApiError> {
        serde_json::to_vec(self).map_err(|e| ApiError::Internal(format!("export as JSON: {e}")))
    }

    /// The CSV bundle: a zip with one CSV file per section and one per table found in each
    /// of the company's databases (`company_databases/<dataset>/<table>.csv`). Cells are
    /// written by `kept_core::csv`, quoted and defused against spreadsheet formulas.
    pub fn csv_zip(&self) -> Result<Vec<u8>, ApiError> {
        let zipped = |e: zip::result::ZipError| ApiError::Internal(format!("export as zip: {e}"));
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let mut file = |name: &str, text: String| -> Result<(), ApiError> {
            zip.start_file(name, options).map_err(zipped)?;
            zip.write_all(text.as_bytes())
                .map_err(|e| ApiError::Internal(format!("export as zip: {e}")))
        };
        file(
            "summary.csv",
            table(&self.summary, &["section", "count", "since", "until"])?,
        )?;
        file(
            "subject.csv",
            table(
                std::slice::from_ref(&self.subject),
                &[
                    "id",
                    "user_id",
                    "country",
                    "region",
                    "time_zone",
                    "regime",
                    "created_at",
                ],
            )?,
        )?;
        file(
            "purposes.csv",
            table(
                &self.purposes,
                &[
                    "key",
                    "name",
                    "description",
                    "legal_basis",
                    "retention_days",
                ],
            )?,
        )?;
        file(
            "notices.csv",
            table(
                &self.notices,
                &["id", "version", "hash", "title", "purposes", "categories"],
            )?,
        )?;
        file(
            "recipients.csv",
            table(
                &self.recipients,
                &["key", "name", "purposes", "categories", "webhook"],
            )?,
        )?;
        file(
            "identifiers.csv",
            table(&self.identifiers, &["kind", "value", "since"])?,
        )?;
        file(
            "traits.csv",
            table(
                &self.traits,
                &[
                    "key",
                    "value",
                    "category",
                    "collection_point",
                    "notice",
                    "notice_version",
                    "collected_at",
                    "source",
                ],
            )?,
        )?;
        file(
            "events.csv",
            table(
                &self.events,
                &[
                    "id",
                    "type",
                    "name",
                    "timestamp",
                    "received_at",
                    "properties",
                    "context",
                ],
            )?,
        )?;
        file(
            "consents.csv",
            table(
                &self.consents,
                &[
                    "seq", "hash", "purpose", "channel", "topic", "action", "notice", "regime",
                    "source", "method", "at",
                ],
            )?,
        )?;
        file(
            "channel_preferences.csv",
            table(
                &self.channel_preferences,
                &["channel", "frequency", "quiet_hours", "updated_at"],
            )?,
        )?;
        file(
            "contacts.csv",
            table(&self.contacts, &["channel", "purpose", "topic", "at"])?,
        )?;
        file(
            "decisions.csv",
            table(
                &self.decisions,
                &[
                    "at",
                    "asked_at",
                    "purpose",
                    "channel",
                    "topic",
                    "categories",
                    "allowed",
                    "reason",
                    "caller",
                ],
            )?,
        )?;
        file(
            "uses.csv",
            table(
                &self.uses,
                &[
                    "at",
                    "kind",
                    "purpose",
                    "channel",
                    "topic",
                    "categories",
                    "reason",
                    "actor",
                ],
            )?,
        )?;
        file(
            "merges.csv",
            table(
                &self.merges,
                &["id", "action", "from", "into", "cause", "at", "undone_at"],
            )?,
        )?;
        file(
            "deliveries.csv",
            table(
                &self.deliveries,
                &[
                    "kind",
                    "system",
                    "state",
                    "attempts",
                    "created_at",
                    "updated_at",
                ],
            )?,
        )?;
        file(
            "requests.csv",
            table(
                &self.requests,
                &["id", "kind", "state", "channel", "received_at", "due_at"],
            )?,
        )?;
        file(
            "erasure_requests.csv",
            table(
                &self.erasure_requests,
                &["state", "requested_at", "due_at", "regime"],
            )?,
        )?;
        for db in &self.company_databases {
            for t in &db.tables {
                let columns: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
                let mut out = csv_line(columns.iter().copied());
                for row in &t.rows {
                    out.push_str(&csv_line(
                        columns
                            .iter()
                            .map(|c| row.get(*c).and_then(|v| v.as_deref()).unwrap_or("")),
                    ));
                }
                file(
                    &format!("company_databases/{}/{}.csv", db.dataset, t.table),
                    out,
                )?;
            }
        }
        let cursor = zip.finish().map_err(zipped)?;
        Ok(cursor.into_inner())
    }

    /// The export as a page in the language of `t`, every value escaped by the template.
    pub fn html(
        &self,
        t: &'static Texts,
        org: &kept_core::manifest::Organisation,
    ) -> Result<String, ApiError> {
        use askama::Template as _;
        page(self, t, org)
            .render()
            .map_err(|e| ApiError::Internal(format!("export page template: {e}")))
    }
}

/// One CSV line of `cells`, each written by `kept_core::csv::field`.
fn csv_line<'a>(cells: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, c) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&kept_core::csv::field(c));
    }
    out.push('\n');
    out
}

/// A section as CSV: a header of `columns`, then each row's value of each column (text as
/// it is, `null` empty, anything else as compact JSON).
fn table<T: Serialize>(rows: &[T], columns: &[&str]) -> Result<String, ApiError> {
    let mut out = csv_line(columns.iter().copied());
    for row in rows {
        let value = serde_json::to_value(row)
            .map_err(|e| ApiError::Internal(format!("export as CSV: {e}")))?;
        let cells: Vec<String> = columns
            .iter()
            .map(|c| cell_text(value.get(*c).unwrap_or(&serde_json::Value::Null)))
            .collect();
        out.push_str(&csv_line(cells.iter().map(String::as_str)));
    }
    Ok(out)
}

/// A JSON value as one cell's text.
pub fn cell_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A channel's frequency cap as the export writes it: `any`, or the period of one message.
fn frequency_text(f: Option<Frequency>) -> &'static str {
    f.map_or("any", |f| f.period.as_str())
}

/// Minutes after midnight as `HH:MM`.
fn hhmm(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

// --- the page --------------------------------------------------------------------------------

/// The export as a page: the frame's chrome, then sections of tables whose cells are text the
/// template escapes.
#[derive(Debug, askama::Template)]
#[template(path = "export/page.html")]
pub struct Page {
    c: crate::web::frame::Chrome,
    title: &'static str,
    intro: String,
    made: String,
    sections: Vec<PageSection>,
}

#[derive(Debug)]
struct PageSection {
    id: &'static str,
    title: &'static str,
    paragraphs: Vec<String>,
    intro: Option<&'static str>,
    tables: Vec<PageTable>,
}

#[derive(Debug)]
struct PageTable {
    caption: Option<String>,
    label: String,
    alert: Option<String>,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl PageTable {
    fn new(label: &str, headers: &[&str], rows: Vec<Vec<String>>) -> PageTable {
        PageTable {
            caption: None,
            label: label.to_owned(),
            alert: None,
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows,
        }
    }

    fn titled(mut self, caption: &str) -> PageTable {
        self.caption = Some(caption.to_owned());
        self
    }
}

/// A time as every page writes it.
fn when(ms: UnixMillis) -> String {
    crate::web::frame::datetime(ms)
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

/// A section's name in the page's language.
fn section_name(x: &crate::web::texts::ExportTexts, section: &str) -> &'static str {
    match section {
        "identifiers" => x.s_identifiers,
        "traits" => x.s_traits,
        "events" => x.s_events,
        "consents" => x.s_consents,
        "channel_preferences" => x.s_channel_preferences,
        "contacts" => x.s_contacts,
        "decisions" => x.s_decisions,
        "uses" => x.s_uses,
        "merges" => x.s_merges,
        "deliveries" => x.s_deliveries,
        "requests" => x.s_requests,
        "erasure_requests" => x.s_erasure_requests,
        _ => x.s_company_databases,
    }
}

/// The page of `d` in the language of `t`, framed for `org`.
pub fn page(d: &Document, t: &'static Texts, org: &kept_core::manifest::Organisation) -> Page {
    let x = t.export;
    let basis_text = |b: Option<&str>| match b {
        Some("consent") => t.basis_consent,
        Some("contract") => t.basis_contract,
        Some("legal_obligation") => t.basis_legal_obligation,
        Some("legitimate_interests") => t.basis_legitimate_interests,
        _ => t.basis_other,
    };
    let yes_no = |b: bool| if b { x.yes } else { x.no }.to_owned();
    let hold = PageTable::new(
        x.what_we_hold,
        &[x.col_section, x.col_count],
        d.summary
            .iter()
            .map(|r| vec![section_name(x, r.section).to_owned(), r.count.to_string()])
            .collect(),
    );
    let since = PageTable::new(
        x.since_when,
        &[x.col_section, x.col_since, x.col_until],
        d.summary
            .iter()
            .filter(|r| r.count > 0 && r.since.is_some())
            .map(|r| {
                vec![
                    section_name(x, r.section).to_owned(),
                    r.since.map(when).unwrap_or_default(),
                    r.until.map(when).unwrap_or_default(),
                ]
            })
            .collect(),
    );
    let why = PageTable::new(
        x.why,
        &[
            x.col_purpose,
            x.col_description,
            x.col_basis,
            x.col_retention_days,
        ],
        d.purposes
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.description.clone(),
                    basis_text(p.legal_basis).to_owned(),
                    p.retention_days.to_string(),
                ]
            })
            .collect(),
    );
    let notices = PageTable::new(
        x.notices,
        &[t.notice, t.version, x.col_purpose, x.col_categories],
        d.notices
            .iter()
            .map(|n| {
                vec![
                    format!("{} ({})", n.title, n.id),
                    n.version.to_string(),
                    n.purposes.join(", "),
                    n.categories.join(", "),
                ]
            })
            .collect(),
    )
    .titled(x.notices);
    let recipients = PageTable::new(
        x.who,
        &[x.col_system, x.col_purpose, x.col_categories],
        d.recipients
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.purposes.join(", "),
                    r.categories.join(", "),
                ]
            })
            .collect(),
    );
    let deliveries = PageTable::new(
        x.deliveries,
        &[x.col_system, x.col_kind, x.col_state, x.col_since],
        d.deliveries
            .iter()
            .map(|v| {
                vec![
                    v.system.clone(),
                    v.kind.to_owned(),
                    v.state.to_owned(),
                    when(v.created_at),
                ]
            })
            .collect(),
    )
    .titled(x.deliveries);
    let uses = PageTable::new(
        x.uses,
        &[
            x.col_actor,
            x.col_kind,
            x.col_purpose,
            x.col_reason,
            t.col_when,
        ],
        d.uses
            .iter()
            .map(|u| {
                vec![
                    u.actor.clone(),
                    u.kind.to_owned(),
                    u.purpose.clone(),
                    u.reason.clone(),
                    when(u.at),
                ]
            })
            .collect(),
    )
    .titled(x.uses);
    let details = vec![
        PageTable::new(
            x.s_identifiers,
            &[x.col_kind, x.col_value, x.col_since],
            d.identifiers
                .iter()
                .map(|i| vec![i.kind.to_owned(), opt(&i.value), when(i.since)])
                .collect(),
        )
        .titled(x.s_identifiers),
        PageTable::new(
            x.s_traits,
            &[
                t.col_field,
                x.col_value,
                t.col_category,
                t.col_where,
                t.notice,
                t.col_collected,
            ],
            d.traits
                .iter()
                .map(|v| {
                    vec![
                        v.key.clone(),
                        cell_text(&v.value),
                        v.category.clone(),
                        format!("{} ({})", v.collection_point, v.source),
                        format!("{} v{}", v.notice, v.notice_version),
                        when(v.collected_at),
                    ]
                })
                .collect(),
        )
        .titled(x.s_traits),
        PageTable::new(
            x.s_consents,
            &[
                t.col_date,
                x.col_purpose,
                x.col_channel,
                t.col_choice,
                t.col_how,
                t.notice,
                x.col_hash,
            ],
            d.consents
                .iter()
                .map(|c| {
                    vec![
                        when(c.at),
                        c.purpose.clone(),
                        [c.channel.clone(), c.topic.clone()]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join(" / "),
                        c.action.to_owned(),
                        format!("{} ({})", c.method, c.source),
                        c.notice
                            .as_ref()
                            .map(|n| format!("{} v{}", n.id, n.version))
                            .unwrap_or_default(),
                        format!("#{} {}", c.seq, c.hash),
                    ]
                })
                .collect(),
        )
        .titled(x.s_consents),
        PageTable::new(
            x.s_channel_preferences,
            &[x.col_channel, t.frequency, t.quiet_hours, x.col_since],
            d.channel_preferences
                .iter()
                .map(|p| {
                    vec![
                        p.channel.clone(),
                        p.frequency.to_owned(),
                        opt(&p.quiet_hours),
                        when(p.updated_at),
                    ]
                })
                .collect(),
        )
        .titled(x.s_channel_preferences),
        PageTable::new(
            x.s_contacts,
            &[x.col_channel, x.col_purpose, t.col_when],
            d.contacts
                .iter()
                .map(|c| vec![c.channel.clone(), c.purpose.clone(), when(c.at)])
                .collect(),
        )
        .titled(x.s_contacts),
        PageTable::new(
            x.s_decisions,
            &[
                t.col_when,
                x.col_purpose,
                x.col_channel,
                x.col_allowed,
                x.col_reason,
            ],
            d.decisions
                .iter()
                .map(|v| {
                    vec![
                        when(v.at),
                        v.purpose.clone(),
                        opt(&v.channel),
                        yes_no(v.allowed),
                        v.reason.clone(),
                    ]
                })
                .collect(),
        )
        .titled(x.s_decisions),
        PageTable::new(
            x.s_merges,
            &[t.col_when, x.col_kind, x.col_source],
            d.merges
                .iter()
                .map(|m| vec![when(m.at), m.action.clone(), m.cause.clone()])
                .collect(),
        )
        .titled(x.s_merges),
        PageTable::new(
            x.s_requests,
            &[x.col_kind, x.col_state, x.col_since],
            d.requests
                .iter()
                .map(|r| vec![r.kind.to_owned(), r.state.to_owned(), when(r.received_at)])
                .collect(),
        )
        .titled(x.s_requests),
        PageTable::new(
            x.s_events,
            &[t.col_event, x.col_kind, t.col_when],
            d.events
                .iter()
                .map(|e| vec![opt(&e.name), e.kind.clone(), when(e.timestamp)])
                .collect(),
        )
        .titled(x.s_events),
    ];
    let mut databases = Vec::new();
    for db in &d.company_databases {
        if let Some(e) = &db.error {
            let mut failed = PageTable::new(&db.name, &[], Vec::new()).titled(&db.name);
            failed.alert = Some(format!("{}: {}", x.database_failed, e.message));
            databases.push(failed);
        }
        for table in db.tables.iter().filter(|t| !t.rows.is_empty()) {
            let headers: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
            let rows = table
                .rows
                .iter()
                .map(|r| {
                    headers
                        .iter()
                        .map(|h| r.get(*h).cloned().flatten().unwrap_or_default())
                        .collect()
                })
                .collect();
            let caption = format!("{} · {}", db.name, table.table);
            databases.push(PageTable::new(&caption, &headers, rows).titled(&caption));
        }
    }
    let mut c = crate::web::frame::chrome(org, t, "/preferences");
    c.signed_in = false;
    Page {
        c,
        title: x.title,
        intro: x.intro.replace("{org}", &d.controller.name),
        made: match &d.request {
            Some(r) => format!(
                "{} {} · {} #{}",
                x.made_on,
                when(d.generated_at),
                x.request,
                r.id
            ),
            None => format!("{} {}", x.made_on, when(d.generated_at)),
        },
        sections: vec![
            PageSection {
                id: "hold",
                title: x.what_we_hold,
                paragraphs: Vec::new(),
                intro: Some(x.what_we_hold_intro),
                tables: vec![hold],
            },
            PageSection {
                id: "why",
                title: x.why,
                paragraphs: Vec::new(),
                intro: Some(x.why_intro),
                tables: vec![why, notices],
            },
            PageSection {
                id: "since",
                title: x.since_when,
                paragraphs: vec![format!(
                    "{} {}.",
                    x.first_recorded,
                    when(d.subject.created_at)
                )],
                intro: Some(x.since_when_intro),
                tables: vec![since],
            },
            PageSection {
                id: "who",
                title: x.who,
                paragraphs: Vec::new(),
                intro: Some(x.who_intro),
                tables: vec![recipients, deliveries, uses],
            },
            PageSection {
                id: "details",
                title: x.details,
                paragraphs: Vec::new(),
                intro: None,
                tables: details,
            },
            PageSection {
                id: "databases",
                title: x.s_company_databases,
                paragraphs: Vec::new(),
                intro: Some(x.databases_intro),
                tables: databases,
            },
        ],
    }
}
