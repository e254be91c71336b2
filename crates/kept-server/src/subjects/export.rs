//! Everything Kept holds about a subject, for "download my data": identifiers, traits with their
//! provenance, events, the consent ledger, channel choices and erasure requests, as JSON or as
//! CSV. The preference page's downloads read it; access and portability requests and the admin
//! console will read the same.

use crate::http::error::ApiError;
use crate::identity::Identities;
use crate::subjects::standing::Standing;
use kept_core::manifest::Manifest;
use kept_core::subject::Frequency;
use kept_store::Store;
use serde_json::{Value, json};
use std::fmt;

/// What the export reads: the store, the identity keys that open identifiers, and the
/// manifest that names the controller.
#[derive(Clone, Copy)]
pub struct Export<'a> {
    pub store: &'a dyn Store,
    pub identities: &'a Identities,
    pub manifest: &'a Manifest,
}

impl fmt::Debug for Export<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Export")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Export<'_> {
    /// Everything held about a subject, as JSON.
    pub async fn json(&self, standing: &Standing) -> Result<Value, ApiError> {
        let store = self.store;
        let id = standing.subject.id;
        let identifiers: Vec<Value> = crate::subjects::identifiers::opened(
            store,
            self.identities,
            id,
        )
        .await?
        .into_iter()
        .map(|(kind, value, since)| json!({"kind": kind.as_str(), "value": value, "since": since}))
        .collect();
        let mut events = Vec::new();
        let mut after = None;
        loop {
            let page = store.events_of(id, after, 1_000).await?;
            let full = page.len() == 1_000;
            after = page.last().map(|e| e.id);
            for e in page {
                let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
                events.push(json!({
                    "type": e.event.kind,
                    "name": e.event.name,
                    "timestamp": e.event.at,
                    "properties": parse(&e.event.properties),
                    "context": parse(&e.event.context),
                }));
            }
            if !full {
                break;
            }
        }
        let consents: Vec<Value> = standing
        .records
        .iter()
        .map(|r| {
            json!({
                "seq": r.seq,
                "purpose": r.record.purpose,
                "channel": r.record.channel,
                "topic": r.record.topic,
                "action": r.record.action.as_str(),
                "notice": r.record.notice.as_ref().map(|n| json!({"id": n.id, "version": n.version, "hash": n.hash})),
                "regime": r.record.regime,
                "source": r.record.source,
                "method": r.record.method.as_str(),
                "at": r.record.at,
            })
        })
        .collect();
        let preferences: Vec<Value> = store
        .channel_preferences(id)
        .await?
        .into_iter()
        .map(|p| {
            json!({
                "channel": p.channel,
                "frequency": frequency_text(p.frequency),
                "quiet_hours": p.quiet_hours.map(|q| json!({"start": hhmm(q.start_minute), "end": hhmm(q.end_minute)})),
                "updated_at": p.updated_at,
            })
        })
        .collect();
        let erasure: Vec<Value> = store
        .erasure_requests(id)
        .await?
        .into_iter()
        .map(|e| json!({"state": e.state.as_str(), "requested_at": e.requested_at, "due_at": e.due_at, "regime": e.regime}))
        .collect();
        Ok(json!({
            "controller": {
                "name": self.manifest.organisation.name,
                "contact": self.manifest.organisation.contact_email,
            },
            "subject": {
                "id": id.0,
                "user_id": standing.subject.user_id,
                "country": standing.subject.country,
                "region": standing.subject.region,
                "time_zone": standing.subject.time_zone,
                "regime": standing.regime.as_str(),
                "created_at": standing.subject.created_at,
            },
            "identifiers": identifiers,
            "traits": standing.traits.iter().map(|t| json!({
                "key": t.key,
                "value": t.value,
                "category": t.category,
                "collection_point": t.provenance.collection_point,
                "notice": t.provenance.notice_id,
                "notice_version": t.provenance.notice_version,
                "collected_at": t.provenance.collected_at,
                "source": t.provenance.source,
                "corrected_by_request": t.provenance.corrected_by_request(),
            })).collect::<Vec<_>>(),
            "events": events,
            "consents": consents,
            "channel_preferences": preferences,
            "erasure_requests": erasure,
        }))
    }

    /// The export as CSV: one row per piece of data (`section,key,value,category,source,notice,at`).
    pub async fn csv(&self, standing: &Standing) -> Result<String, ApiError> {
        let data = self.json(standing).await?;
        let mut out = String::from("section,key,value,category,source,notice,at\n");
        let mut row = |cells: [String; 7]| {
            let line: Vec<_> = cells.iter().map(|c| kept_core::csv::field(c)).collect();
            out.push_str(&line.join(","));
            out.push('\n');
        };
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        for i in at(&data, "identifiers").as_array().into_iter().flatten() {
            row([
                "identifier".into(),
                text(at(i, "kind")),
                text(at(i, "value")),
                String::new(),
                String::new(),
                String::new(),
                text(at(i, "since")),
            ]);
        }
        for t in at(&data, "traits").as_array().into_iter().flatten() {
            row([
                "trait".into(),
                text(at(t, "key")),
                text(at(t, "value")),
                text(at(t, "category")),
                text(at(t, "collection_point")),
                format!(
                    "{} v{}",
                    text(at(t, "notice")),
                    text(at(t, "notice_version"))
                ),
                text(at(t, "collected_at")),
            ]);
        }
        for e in at(&data, "events").as_array().into_iter().flatten() {
            row([
                "event".into(),
                text(at(e, "type")),
                text(at(e, "name")),
                String::new(),
                String::new(),
                String::new(),
                text(at(e, "timestamp")),
            ]);
        }
        for c in at(&data, "consents").as_array().into_iter().flatten() {
            row([
                "consent".into(),
                format!(
                    "{} {} {}",
                    text(at(c, "purpose")),
                    text(at(c, "channel")),
                    text(at(c, "topic"))
                )
                .trim()
                .to_owned(),
                text(at(c, "action")),
                text(at(c, "method")),
                text(at(c, "source")),
                at(at(c, "notice"), "id")
                    .as_str()
                    .map_or_else(String::new, |id| {
                        format!("{id} v{}", text(at(at(c, "notice"), "version")))
                    }),
                text(at(c, "at")),
            ]);
        }
        for e in at(&data, "erasure_requests")
            .as_array()
            .into_iter()
            .flatten()
        {
            row([
                "erasure_request".into(),
                text(at(e, "state")),
                format!("due {}", text(at(e, "due_at"))),
                String::new(),
                String::new(),
                String::new(),
                text(at(e, "requested_at")),
            ]);
        }
        Ok(out)
    }
}

/// A member of a JSON object, `null` when absent.
fn at<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

/// A channel's frequency cap as the export writes it: `any`, or the period of one message.
fn frequency_text(f: Option<Frequency>) -> &'static str {
    f.map_or("any", |f| f.period.as_str())
}

/// Minutes after midnight as `HH:MM`.
fn hhmm(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}
