//! Everything known about one subject, as plain data, and the naive view the gates read it
//! through. This is the reference the index is tested against: it scans, it never caches.

use super::compiled::{ChannelId, Compiled, PlaceId, PointId, Query, RecordScope};
use super::walk::{Fact, Implied, Origin, Pref, Status, SubjectView};
use crate::UnixMillis;
use crate::ledger::{CollectionMethod, ConsentAction, ConsentRecord};
use crate::manifest::CollectionKind;
use crate::rulebook::PurposeClass;
use crate::subject::{ChannelPreference, Contact, Subject, Trait};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A consent record with its ledger position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequencedRecord {
    pub seq: u64,
    pub record: ConsentRecord,
}

impl SequencedRecord {
    /// The record a stored ledger entry holds.
    pub fn from_entry(
        entry: &crate::ledger::LedgerEntry,
    ) -> Result<SequencedRecord, crate::ledger::DecodeError> {
        Ok(SequencedRecord {
            seq: entry.seq,
            record: crate::ledger::decode(&entry.bytes)?,
        })
    }
}

/// One subject, with its traits (each with provenance; a trait collected again at another point
/// adds a provenance, it does not erase the earlier promise), its consent records, its channel
/// preferences and the messages sent to it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectState {
    pub subject: Subject,
    pub traits: Vec<Trait>,
    pub consents: Vec<SequencedRecord>,
    pub preferences: Vec<ChannelPreference>,
    pub contacts: Vec<Contact>,
    /// The latest interaction the store records for the subject besides its consent records
    /// and preferences: its own collected events (any Segment call about it) and its
    /// preference-center visits. Messages the company sent are not interactions: a company
    /// cannot keep a consent alive by writing to someone.
    pub last_interaction: Option<UnixMillis>,
    /// The gates its data subject requests put on its data, lifted ones left out.
    pub gates: Vec<super::SubjectGate>,
}

impl SubjectState {
    pub fn new(subject: Subject) -> SubjectState {
        SubjectState {
            subject,
            traits: Vec::new(),
            consents: Vec::new(),
            preferences: Vec::new(),
            contacts: Vec::new(),
            last_interaction: None,
            gates: Vec::new(),
        }
    }
}

pub(crate) struct StateView<'a> {
    state: &'a SubjectState,
    ctx: &'a Compiled,
    /// The latest record of each scope (pending and GPC records left out).
    latest: Vec<(RecordScope, &'a SequencedRecord)>,
    gates: Vec<super::GateRule>,
}

impl<'a> StateView<'a> {
    pub(crate) fn new(state: &'a SubjectState, ctx: &'a Compiled) -> StateView<'a> {
        let mut latest: HashMap<RecordScope, &SequencedRecord> = HashMap::new();
        for r in &state.consents {
            if r.record.action == ConsentAction::Pending
                || r.record.method == CollectionMethod::Gpc
                || !crate::manifest::promises::counts(&r.record)
            {
                continue;
            }
            let Some(scope) = ctx.record_scope(
                &r.record.purpose,
                r.record.channel.as_deref(),
                r.record.topic.as_deref(),
            ) else {
                continue;
            };
            let entry = latest.entry(scope).or_insert(r);
            if r.seq > entry.seq {
                *entry = r;
            }
        }
        StateView {
            state,
            ctx,
            latest: latest.into_iter().collect(),
            gates: state.gates.iter().map(|g| ctx.compile_gate(g)).collect(),
        }
    }

    fn fact(scope: RecordScope, r: &SequencedRecord) -> Fact {
        Fact {
            seq: r.seq,
            at: r.record.at,
            action: r.record.action,
            method: r.record.method,
            topic_level: scope.topic.is_some(),
        }
    }

    fn point_kind(&self, key: &str) -> Option<(PointId, CollectionKind)> {
        let id = self.ctx.point_id(key)?;
        Some((id, self.ctx.point(id)?.kind))
    }
}

impl SubjectView for StateView<'_> {
    fn status(&self) -> Option<Status> {
        let subject = &self.state.subject;
        // An erased subject is a tombstone: Kept knows it no more.
        if subject.erased_at.is_some() {
            return None;
        }
        Some(Status {
            erasure: subject.erasure_requested_at.is_some(),
            erasure_suppressed: subject.erasure_suppressed_at.is_some(),
            suppressed: subject.suppressed,
        })
    }

    fn place(&self) -> PlaceId {
        self.ctx.place_of(
            self.state.subject.country.as_deref(),
            self.state.subject.region.as_deref(),
        )
    }

    fn gpc(&self) -> bool {
        self.state
            .consents
            .iter()
            .filter(|r| {
                r.record.method == CollectionMethod::Gpc
                    && r.record.action != ConsentAction::Pending
            })
            .max_by_key(|r| r.seq)
            .is_some_and(|r| r.record.action == ConsentAction::OptedOut)
    }

    fn promise(&self, query: &Query, category: usize) -> Option<Origin> {
        let wanted = query.categories.get(category)?;
        self.state
            .traits
            .iter()
            .filter(|t| Compiled::category_matches(&t.category, wanted))
            .filter_map(|t| {
                let p = &t.provenance;
                let point = self.ctx.point_id(&p.collection_point);
                let notice = self.ctx.notice_id(&p.notice_id);
                self.ctx
                    .promises(query, point, notice, p.notice_version, &t.category)
                    .then_some((
                        (&p.collection_point, &p.notice_id, p.notice_version),
                        (point, notice, p.notice_version),
                    ))
            })
            .min_by(|a, b| a.0.cmp(&b.0))
            .and_then(|(_, (point, notice, version))| {
                Some(Origin {
                    point: point?,
                    notice: notice?,
                    version,
                })
            })
    }

    fn soft_opt_in_source(&self, query: &Query) -> bool {
        self.state.traits.iter().any(|t| {
            let p = &t.provenance;
            self.ctx.soft_opt_in_source(
                query,
                self.ctx.point_id(&p.collection_point),
                self.ctx.notice_id(&p.notice_id),
                p.notice_version,
                &t.category,
            )
        })
    }

    fn implied(&self) -> Implied {
        let mut implied = Implied::default();
        // The latest collection of each kind; on a tie the point whose key sorts first.
        let mut best: [Option<(UnixMillis, &str, PointId)>; 2] = [None, None];
        for t in &self.state.traits {
            let key = t.provenance.collection_point.as_str();
            let Some((point, kind)) = self.point_kind(key) else {
                continue;
            };
            let slot = match kind {
                CollectionKind::Purchase => 0,
                CollectionKind::Inquiry => 1,
                _ => continue,
            };
            let at = t.provenance.collected_at;
            if let Some(b) = best.get_mut(slot) {
                let better = match b {
                    None => true,
                    Some((bat, bkey, _)) => at > *bat || (at == *bat && key < *bkey),
                };
                if better {
                    *b = Some((at, key, point));
                }
            }
        }
        implied.purchase = best[0].map(|(at, _, p)| (at, p));
        implied.inquiry = best[1].map(|(at, _, p)| (at, p));
        implied
    }

    fn consent(&self, query: &Query) -> Option<Fact> {
        let wanted = self.ctx.scope(query.scope)?;
        self.latest
            .iter()
            .filter(|(scope, r)| {
                self.ctx
                    .covers(*scope, r.record.action == ConsentAction::Objected, wanted)
            })
            .max_by_key(|(_, r)| r.seq)
            .map(|(scope, r)| Self::fact(*scope, r))
    }

    fn topic_state(&self, query: &Query) -> Option<Fact> {
        let wanted = self.ctx.scope(query.scope)?;
        self.latest
            .iter()
            .filter(|(scope, _)| self.ctx.is_topic_record(*scope, wanted))
            .max_by_key(|(_, r)| r.seq)
            .map(|(scope, r)| Self::fact(*scope, r))
    }

    fn last_interaction(&self) -> Option<UnixMillis> {
        let records = self.state.consents.iter().map(|r| r.record.at);
        let preferences = self.state.preferences.iter().map(|p| p.updated_at);
        self.state
            .last_interaction
            .into_iter()
            .chain(records)
            .chain(preferences)
            .max()
    }

    fn preference(&self, channel: ChannelId) -> Option<Pref> {
        let key = self.ctx.channel_key(channel);
        // The latest choice; on a tie the one listed last.
        self.state
            .preferences
            .iter()
            .filter(|p| p.channel == key)
            .fold(None::<&ChannelPreference>, |best, p| match best {
                Some(b) if b.updated_at > p.updated_at => Some(b),
                _ => Some(p),
            })
            .map(|p| Pref {
                frequency: p.frequency,
                quiet: p.quiet_hours,
            })
    }

    fn contacts_between(&self, channel: ChannelId, after: UnixMillis, until: UnixMillis) -> u32 {
        let key = self.ctx.channel_key(channel);
        let n = self
            .state
            .contacts
            .iter()
            .filter(|c| {
                c.channel == key
                    && c.at > after
                    && c.at <= until
                    && self.ctx.class_of_key(&c.purpose) != PurposeClass::Essential
            })
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn time_zone(&self) -> Option<Tz> {
        self.state.subject.time_zone.as_deref()?.parse().ok()
    }

    fn gates(&self) -> &[super::GateRule] {
        &self.gates
    }
}
