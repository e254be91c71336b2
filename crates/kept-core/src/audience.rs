//! Audiences: a campaign dry run over the index. The same gates as a decision, in the same
//! order, but over bitmaps: each candidate is counted once, under the first gate that excludes
//! it. Only what depends on time per person (an expiring consent, implied consent, frequency
//! caps, quiet hours) is checked subject by subject, and only for the candidates still left.

use crate::decision::walk::{self, SubjectView};
use crate::decision::{DecisionRequest, PlaceId, ReasonCode, Requirement};
use crate::index::{Chunk, IndexQuery, Layout, Snapshot, StateKind};
use crate::ledger::ConsentAction;
use crate::regime::Regime;
use crate::rulebook::{Level, Obligations, PurposeClass};
use crate::{SubjectId, UnixMillis};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Who the campaign would reach before any rule is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Candidates {
    /// Every known subject.
    All,
    /// These subjects.
    Ids(Vec<SubjectId>),
    /// Subjects whose location matches.
    Where(PlaceFilter),
}

/// A location filter: regimes (any when empty) and US states (any when empty; a non-empty list
/// keeps only subjects of those states).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceFilter {
    #[serde(default)]
    pub regimes: Vec<Regime>,
    #[serde(default)]
    pub regions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudienceRequest {
    pub purpose: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    pub candidates: Candidates,
    /// How many eligible ids to return as a sample (the lowest ids).
    #[serde(default)]
    pub sample_size: usize,
}

impl AudienceRequest {
    pub fn decision_request(&self) -> DecisionRequest {
        DecisionRequest {
            purpose: self.purpose.clone(),
            channel: self.channel.clone(),
            topic: self.topic.clone(),
            categories: self.categories.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AudienceResult {
    pub eligible: RoaringBitmap,
    pub eligible_count: u64,
    /// Candidates left out, by the reason of the first gate that excluded them.
    pub excluded: BTreeMap<ReasonCode, u64>,
    pub sample: Vec<SubjectId>,
    /// What sending to the eligible subjects must do (the union over their places).
    pub obligations: Obligations,
}

struct Tally {
    excluded: BTreeMap<ReasonCode, u64>,
}

impl Tally {
    fn add(&mut self, reason: ReasonCode, n: u64) {
        if n > 0 {
            *self.excluded.entry(reason).or_default() += n;
        }
    }

    /// Counts `denied` under `reason` and takes it out of `rest`.
    fn exclude(&mut self, rest: &mut RoaringBitmap, denied: &RoaringBitmap, reason: ReasonCode) {
        let taken = &*rest & denied;
        self.add(reason, taken.len());
        *rest -= &taken;
    }
}

/// Places grouped by the requirement the query meets there.
fn groups<'a>(snapshot: &'a Snapshot, q: &IndexQuery) -> Vec<(&'a Requirement, Vec<PlaceId>)> {
    let mut groups: Vec<(&Requirement, Vec<PlaceId>)> = Vec::new();
    for i in 0..snapshot.ctx.places().len() {
        let Ok(i) = u8::try_from(i) else { break };
        let place = PlaceId(i);
        let Some(req) = snapshot.ctx.requirement(place, &q.query) else {
            continue;
        };
        match groups.iter_mut().find(|(r, _)| *r == req) {
            Some((_, places)) => places.push(place),
            None => groups.push((req, vec![place])),
        }
    }
    groups
}

fn union<'a>(sets: impl IntoIterator<Item = Option<&'a RoaringBitmap>>) -> RoaringBitmap {
    let mut out = RoaringBitmap::new();
    for s in sets.into_iter().flatten() {
        out |= s;
    }
    out
}

/// Evaluates an audience on a snapshot at `now`.
pub fn evaluate(snapshot: &Snapshot, req: &AudienceRequest, now: UnixMillis) -> AudienceResult {
    let q = snapshot.prepare(&req.decision_request());
    evaluate_prepared(snapshot, &q, &req.candidates, req.sample_size, now)
}

/// `evaluate` with a prepared request.
pub fn evaluate_prepared(
    snapshot: &Snapshot,
    q: &IndexQuery,
    candidates: &Candidates,
    sample_size: usize,
    now: UnixMillis,
) -> AudienceResult {
    let mut tally = Tally {
        excluded: BTreeMap::new(),
    };
    let layout = snapshot.layout;
    let mut by_chunk: HashMap<usize, RoaringBitmap> = HashMap::new();
    if let Candidates::Ids(ids) = candidates {
        for id in ids {
            by_chunk
                .entry((id.0 >> 16) as usize)
                .or_default()
                .insert(id.0);
        }
        let beyond: u64 = by_chunk
            .iter()
            .filter(|(c, _)| **c >= snapshot.chunks.len())
            .map(|(_, b)| b.len())
            .sum();
        match q.query.invalid {
            Some(reason) => tally.add(reason, beyond),
            None => tally.add(ReasonCode::DeniedUnknownSubject, beyond),
        }
    }
    let filter_places: Vec<usize> = match candidates {
        Candidates::Where(f) => (0..snapshot.ctx.places().len())
            .filter(|i| {
                let Some(place) = u8::try_from(*i)
                    .ok()
                    .and_then(|i| snapshot.ctx.place(PlaceId(i)))
                else {
                    return false;
                };
                (f.regimes.is_empty() || f.regimes.contains(&place.regime))
                    && (f.regions.is_empty()
                        || place
                            .region
                            .is_some_and(|r| f.regions.iter().any(|x| x.eq_ignore_ascii_case(r))))
            })
            .filter_map(|i| u8::try_from(i).ok())
            .map(|i| layout.place(PlaceId(i)))
            .collect(),
        _ => Vec::new(),
    };
    let groups = if q.query.invalid.is_none() {
        groups(snapshot, q)
    } else {
        Vec::new()
    };
    let mut eligible = RoaringBitmap::new();
    let mut obligations = Obligations::NONE;
    for (c, chunk) in snapshot.chunks.iter().enumerate() {
        let cand = match candidates {
            Candidates::All => chunk.set(Layout::KNOWN).cloned().unwrap_or_default(),
            Candidates::Ids(_) => by_chunk.remove(&c).unwrap_or_default(),
            Candidates::Where(_) => union(filter_places.iter().map(|s| chunk.set(*s))),
        };
        if cand.is_empty() {
            continue;
        }
        if let Some(reason) = q.query.invalid {
            tally.add(reason, cand.len());
            continue;
        }
        let rest = chunk_audience(
            snapshot,
            chunk,
            q,
            &groups,
            cand,
            now,
            &mut tally,
            &mut obligations,
        );
        eligible |= rest;
    }
    let sample = eligible.iter().take(sample_size).map(SubjectId).collect();
    AudienceResult {
        eligible_count: eligible.len(),
        eligible,
        excluded: tally.excluded,
        sample,
        obligations,
    }
}

#[allow(clippy::too_many_arguments)]
fn chunk_audience(
    snapshot: &Snapshot,
    chunk: &Chunk,
    q: &IndexQuery,
    groups: &[(&Requirement, Vec<PlaceId>)],
    cand: RoaringBitmap,
    now: UnixMillis,
    tally: &mut Tally,
    obligations: &mut Obligations,
) -> RoaringBitmap {
    let layout = snapshot.layout;
    let query = &q.query;
    let empty = RoaringBitmap::new();
    let set = |id: usize| chunk.set(id).unwrap_or(&empty);

    // Gate 1: the subject.
    let mut rest = cand;
    let unknown = &rest - set(Layout::KNOWN);
    tally.exclude(&mut rest, &unknown, ReasonCode::DeniedUnknownSubject);
    tally.exclude(
        &mut rest,
        set(Layout::ERASURE),
        ReasonCode::DeniedErasurePending,
    );
    if query.channel.is_some() {
        tally.exclude(
            &mut rest,
            set(Layout::SUPPRESSED),
            ReasonCode::DeniedSuppressed,
        );
    }

    // Gate 2: the promise.
    if query.forbidden.is_some() {
        tally.add(ReasonCode::DeniedForbiddenUse, rest.len());
        return RoaringBitmap::new();
    }
    for i in 0..query.categories.len() {
        let promised = union(q.probes(i).iter().map(|(s, _)| chunk.set(*s)));
        let not_promised = &rest - &promised;
        tally.exclude(&mut rest, &not_promised, ReasonCode::DeniedNotPromised);
    }

    // Gate 3: the legal basis, place group by place group.
    let mut allowed = RoaringBitmap::new();
    for (req, places) in groups {
        let group = &rest & &union(places.iter().map(|p| chunk.set(layout.place(*p))));
        if group.is_empty() {
            continue;
        }
        let ok = legal(snapshot, chunk, q, req, group, now, tally);
        if !ok.is_empty() {
            *obligations = obligations.union(req.obligations);
        }
        allowed |= ok;
    }
    let mut rest = allowed;

    // Gate 4: preferences.
    if query.topic.is_some() {
        tally.exclude(
            &mut rest,
            set(layout.topic(query.scope)),
            ReasonCode::DeniedUnsubscribed,
        );
    }
    if query.class != PurposeClass::Essential
        && let Some(channel) = query.channel
    {
        let with_choices = &rest & set(layout.preference(channel));
        let mut scratch = crate::decision::EvidenceList::new();
        for id in &with_choices {
            let Some(view) = snapshot.view(SubjectId(id), q) else {
                continue;
            };
            if let Some(denied) = walk::contact_gate(query, &view, now, &mut scratch) {
                tally.add(denied.reason, 1);
                rest.remove(id);
            }
        }
    }
    rest
}

/// Gate 3 for the candidates of one place group; returns the ones it allows.
fn legal(
    snapshot: &Snapshot,
    chunk: &Chunk,
    q: &IndexQuery,
    req: &Requirement,
    group: RoaringBitmap,
    now: UnixMillis,
    tally: &mut Tally,
) -> RoaringBitmap {
    let layout = snapshot.layout;
    let query = &q.query;
    let empty = RoaringBitmap::new();
    let state = |k: StateKind| chunk.set(layout.state(query.scope, k)).unwrap_or(&empty);
    if req.basis.is_none() {
        tally.add(ReasonCode::DeniedNoLegalBasis, group.len());
        return RoaringBitmap::new();
    }
    let mut sub = group;
    let objectionable = req.level >= Level::OptOut
        || query.class.is_direct_marketing()
        || query.class == PurposeClass::Personalize;
    if objectionable {
        tally.exclude(
            &mut sub,
            state(StateKind::Objected),
            ReasonCode::DeniedObjected,
        );
    }
    if req.level >= Level::OptOut {
        tally.exclude(
            &mut sub,
            state(StateKind::Withdrawn),
            ReasonCode::DeniedWithdrawn,
        );
        tally.exclude(
            &mut sub,
            state(StateKind::OptedOut),
            ReasonCode::DeniedOptedOut,
        );
        tally.exclude(
            &mut sub,
            state(StateKind::TopicNegative),
            ReasonCode::DeniedUnsubscribed,
        );
    }
    if let Some((_, from)) = req.gpc
        && now >= from
    {
        tally.exclude(
            &mut sub,
            chunk.set(Layout::GPC).unwrap_or(&empty),
            ReasonCode::DeniedGpc,
        );
    }
    if req.level < Level::OptIn {
        return sub;
    }

    let express = &sub & state(StateKind::GivenExpress);
    let written = &sub & state(StateKind::GivenWritten);
    let implied = &sub & state(StateKind::GivenImplied);
    let mut no_record = sub;
    no_record -= &express;
    no_record -= &written;
    no_record -= &implied;

    let mut allowed = RoaringBitmap::new();
    let mut to_check = RoaringBitmap::new();
    let mut scratch = crate::decision::EvidenceList::new();
    let good = if req.level == Level::OptInWritten {
        tally.add(ReasonCode::DeniedNoConsent, express.len() + implied.len());
        written
    } else {
        if req.implied.is_some() {
            to_check |= &implied;
        } else {
            tally.add(ReasonCode::DeniedNoConsent, implied.len());
        }
        express | written
    };
    if req.refresh.is_some() {
        to_check |= good;
    } else {
        allowed |= good;
    }
    for id in &to_check {
        let Some(view) = snapshot.view(SubjectId(id), q) else {
            continue;
        };
        let Some(fact) = view
            .consent(query)
            .filter(|f| f.action == ConsentAction::Given)
        else {
            continue;
        };
        match walk::given(req, &fact, now, &mut scratch) {
            Ok(_) => {
                allowed.insert(id);
            }
            Err(d) => tally.add(d.reason, 1),
        }
    }

    if req.soft_opt_in.is_some() && query.soft_channel {
        let soft = &no_record & &union(q.email_purchase.iter().map(|s| chunk.set(*s)));
        no_record -= &soft;
        allowed |= soft;
    }
    if req.implied.is_some() {
        let maybe = &no_record & chunk.set(Layout::IMPLIED).unwrap_or(&empty);
        no_record -= &maybe;
        for id in &maybe {
            let Some(view) = snapshot.view(SubjectId(id), q) else {
                continue;
            };
            match walk::without_record(query, req, &view, now, &mut scratch) {
                Ok(_) => {
                    allowed.insert(id);
                }
                Err(d) => tally.add(d.reason, 1),
            }
        }
    }
    tally.add(ReasonCode::DeniedNoConsent, no_record.len());
    allowed
}
