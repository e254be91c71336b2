//! The record of uses, server side: the decision a use goes ahead under, asked once and turned
//! into the `UseRecord` the store keeps (`kept_store::uses`). Forwards, exports, contacts and
//! profile reads all build their records here, so they say the same thing the same way.

use crate::decide::answer::write_decision;
use kept_core::audience::AudienceResult;
use kept_core::decision::{Decision, DecisionRequest, ReasonCode};
use kept_core::index::{IndexQuery, Snapshot};
use kept_core::{SubjectId, UnixMillis};
use kept_store::{UseKind, UseRecord, UseSubjects};
use roaring::RoaringBitmap;
use std::collections::BTreeMap;

/// A decision asked for a use, with what the record keeps of it.
#[derive(Debug, Clone)]
pub struct Decided {
    pub decision: Decision,
    /// The categories the decision read (those the channel implies when none were asked).
    pub categories: Vec<String>,
    /// The evidence, as the decision API answers it (a JSON array).
    pub evidence: String,
}

/// Asks the decision for `subject` and keeps its evidence as the decision API writes it.
pub fn decide(
    snapshot: &Snapshot,
    subject: SubjectId,
    req: &DecisionRequest,
    now: UnixMillis,
) -> Decided {
    let q = snapshot.prepare(req);
    let decision = snapshot.decide_prepared(subject, &q, now);
    decided(snapshot, &q, decision)
}

/// What the record keeps of `decision`, answered for the prepared request `q`.
pub fn decided(snapshot: &Snapshot, q: &IndexQuery, decision: Decision) -> Decided {
    let mut out = Vec::with_capacity(256);
    let (evidence, _) = write_decision(&mut out, snapshot.compiled(), &q.query, &decision);
    let evidence = out
        .get(evidence)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_else(|| "[]".to_owned());
    Decided {
        decision,
        categories: q.query.categories.clone(),
        evidence,
    }
}

/// What a use is, apart from whom it concerns and the decision.
#[derive(Debug, Clone, Copy)]
pub struct Use<'a> {
    pub kind: UseKind,
    pub at: UnixMillis,
    pub request: &'a DecisionRequest,
    /// The system a forward went to, or the public id of the key that asked.
    pub actor: &'a str,
    pub reference: Option<&'a str>,
}

impl Use<'_> {
    /// The record of this use for one subject, under `decided`.
    pub fn of_one(&self, subject: SubjectId, decided: Decided) -> UseRecord {
        UseRecord {
            id: 0,
            at: self.at,
            kind: self.kind,
            subjects: UseSubjects::One(subject),
            purpose: self.request.purpose.clone(),
            channel: self.request.channel.clone(),
            topic: self.request.topic.clone(),
            categories: decided.categories,
            reason: decided.decision.reason.as_str().to_owned(),
            evidence: decided.evidence,
            actor: self.actor.to_owned(),
            reference: self.reference.map(str::to_owned),
        }
    }

    /// The records of this use for a set of subjects: one per reason the decisions gave, each
    /// with the subjects that reason covers. `summary` is the evidence every record carries.
    pub fn of_set(
        &self,
        categories: &[String],
        by_reason: BTreeMap<ReasonCode, RoaringBitmap>,
        summary: &str,
    ) -> Vec<UseRecord> {
        by_reason
            .into_iter()
            .map(|(reason, ids)| UseRecord {
                id: 0,
                at: self.at,
                kind: self.kind,
                subjects: UseSubjects::set(&ids),
                purpose: self.request.purpose.clone(),
                channel: self.request.channel.clone(),
                topic: self.request.topic.clone(),
                categories: categories.to_vec(),
                reason: reason.as_str().to_owned(),
                evidence: summary.to_owned(),
                actor: self.actor.to_owned(),
                reference: self.reference.map(str::to_owned),
            })
            .collect()
    }
}

/// The decisions over a set of subjects, grouped by reason (each subject asked once, on the
/// snapshot the set was chosen from), with the categories they read.
pub fn decide_set(
    snapshot: &Snapshot,
    subjects: &RoaringBitmap,
    req: &DecisionRequest,
    now: UnixMillis,
) -> (Vec<String>, BTreeMap<ReasonCode, RoaringBitmap>) {
    let q = snapshot.prepare(req);
    let mut by_reason: BTreeMap<ReasonCode, RoaringBitmap> = BTreeMap::new();
    // Subjects arrive in order, so each reason's bitmap grows by appends.
    let mut last: Option<(ReasonCode, Vec<u32>)> = None;
    for id in subjects {
        let reason = snapshot.decide_prepared(SubjectId(id), &q, now).reason;
        match &mut last {
            Some((r, ids)) if *r == reason => ids.push(id),
            _ => {
                if let Some(run) = last.take() {
                    flush(&mut by_reason, run);
                }
                last = Some((reason, vec![id]));
            }
        }
    }
    if let Some(run) = last {
        flush(&mut by_reason, run);
    }
    (q.query.categories.clone(), by_reason)
}

/// A fresh reference for one export (`exp_` and 24 hex digits).
pub fn export_id() -> String {
    format!("exp_{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// The uses an export makes: each eligible subject's decision asked again on the snapshot the
/// audience was chosen from, the subjects grouped by its reason, one record per reason. Every
/// record carries the export's summary (its id, eligible, `excluded` by reason, and
/// `by_reason`).
pub fn export_records(
    snapshot: &Snapshot,
    result: &AudienceResult,
    excluded: &BTreeMap<ReasonCode, u64>,
    request: &DecisionRequest,
    now: UnixMillis,
    actor: &str,
    reference: &str,
) -> Vec<UseRecord> {
    let (categories, by_reason) = decide_set(snapshot, &result.eligible, request, now);
    let count = |m: &mut dyn Iterator<Item = (ReasonCode, u64)>| {
        m.map(|(r, n)| (r.as_str().to_owned(), serde_json::Value::from(n)))
            .collect::<serde_json::Map<_, _>>()
    };
    let summary = serde_json::json!({
        "export": reference,
        "eligible": result.eligible_count,
        "excluded": count(&mut excluded.iter().map(|(r, n)| (*r, *n))),
        "by_reason": count(&mut by_reason.iter().map(|(r, ids)| (*r, ids.len()))),
    })
    .to_string();
    Use {
        kind: UseKind::Export,
        at: now,
        request,
        actor,
        reference: Some(reference),
    }
    .of_set(&categories, by_reason, &summary)
}

/// Adds a run of ascending ids, all above those already in the reason's set.
fn flush(
    by_reason: &mut BTreeMap<ReasonCode, RoaringBitmap>,
    (reason, ids): (ReasonCode, Vec<u32>),
) {
    let set = by_reason.entry(reason).or_default();
    if set.append(ids.iter().copied()).is_err() {
        set.extend(ids);
    }
}
