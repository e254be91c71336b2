//! Audiences: a campaign dry run over the index. The same gates as a decision, in the same
//! order, but over bitmaps: each candidate is counted once, under the first gate that excludes
//! it. Only what depends on time per person (an expiring consent, implied consent, frequency
//! caps, quiet hours) is checked subject by subject, and only for the candidates still left.

use crate::decision::walk::{self, SubjectView};
use crate::decision::{ChannelId, DecisionRequest, PlaceId, ReasonCode, Requirement};
use crate::index::{Chunk, IndexQuery, Layout, LocalMinutes, Snapshot, StateKind};
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

    /// Counts the members of `denied` in `rest` under `reason` and takes them out.
    fn exclude(&mut self, rest: &mut RoaringBitmap, denied: &RoaringBitmap, reason: ReasonCode) {
        self.add(reason, rest.intersection_len(denied));
        *rest -= denied;
    }

    /// `exclude` for the members of `denied` at the places `mask` selects.
    fn exclude_at(
        &mut self,
        chunk: &Chunk,
        rest: &mut RoaringBitmap,
        mask: &PlaceMask,
        denied: &RoaringBitmap,
        reason: ReasonCode,
    ) {
        match mask {
            PlaceMask::None => {}
            PlaceMask::All => self.exclude(rest, denied, reason),
            _ => {
                let taken = mask.select(chunk, &(&*rest & denied));
                self.exclude(rest, &taken, reason);
            }
        }
    }
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

/// Which places a condition holds at, as the cheaper of a list or its complement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PlaceMask {
    None,
    All,
    Only(Vec<usize>),
    Except(Vec<usize>),
}

impl PlaceMask {
    fn new(layout: Layout, holds: &[bool]) -> PlaceMask {
        let sets = |want: bool| -> Vec<usize> {
            holds
                .iter()
                .enumerate()
                .filter(|(_, h)| **h == want)
                .filter_map(|(i, _)| u8::try_from(i).ok())
                .map(|i| layout.place(PlaceId(i)))
                .collect()
        };
        let yes = sets(true);
        let no = sets(false);
        if no.is_empty() {
            PlaceMask::All
        } else if yes.is_empty() {
            PlaceMask::None
        } else if yes.len() <= no.len() {
            PlaceMask::Only(yes)
        } else {
            PlaceMask::Except(no)
        }
    }

    fn is_none(&self) -> bool {
        *self == PlaceMask::None
    }

    /// The subjects of `bits` at a place where the condition holds (`bits` are known subjects,
    /// each at exactly one place).
    fn select(&self, chunk: &Chunk, bits: &RoaringBitmap) -> RoaringBitmap {
        match self {
            PlaceMask::None => RoaringBitmap::new(),
            PlaceMask::All => bits.clone(),
            PlaceMask::Only(sets) => bits & &union(sets.iter().map(|s| chunk.set(*s))),
            PlaceMask::Except(sets) => bits - &union(sets.iter().map(|s| chunk.set(*s))),
        }
    }
}

/// Where each part of gate 3 applies, for one query at one time.
struct Masks {
    no_basis: PlaceMask,
    objectionable: PlaceMask,
    negative: PlaceMask,
    gpc: PlaceMask,
    opt_in: PlaceMask,
    written: PlaceMask,
    implied: PlaceMask,
    refresh: PlaceMask,
    soft: PlaceMask,
    obligations: Vec<(usize, Obligations)>,
}

impl Masks {
    fn new(snapshot: &Snapshot, q: &IndexQuery, now: UnixMillis) -> Masks {
        let layout = snapshot.layout;
        let query = &q.query;
        let reqs: Vec<Option<&Requirement>> = (0..snapshot.ctx.places().len())
            .map(|i| {
                u8::try_from(i)
                    .ok()
                    .and_then(|i| snapshot.ctx.requirement(PlaceId(i), query))
                    .filter(|r| r.basis.is_some())
            })
            .collect();
        let mask = |f: &dyn Fn(&Requirement) -> bool| {
            let holds: Vec<bool> = reqs.iter().map(|r| r.is_some_and(f)).collect();
            PlaceMask::new(layout, &holds)
        };
        let class = query.class;
        let no_basis: Vec<bool> = reqs.iter().map(Option::is_none).collect();
        Masks {
            no_basis: PlaceMask::new(layout, &no_basis),
            objectionable: mask(&|r| {
                r.level >= Level::OptOut
                    || class.is_direct_marketing()
                    || class == PurposeClass::Personalize
            }),
            negative: mask(&|r| r.level >= Level::OptOut),
            gpc: mask(&|r| crate::signals::gpc::in_force(r.gpc, now)),
            opt_in: mask(&|r| r.level >= Level::OptIn),
            written: mask(&|r| r.level == Level::OptInWritten),
            implied: mask(&|r| r.level >= Level::OptIn && r.implied.is_some()),
            refresh: mask(&|r| r.level >= Level::OptIn && r.refresh.is_some()),
            soft: mask(&|r| r.soft_opt_in.is_some() && query.soft_channel),
            obligations: reqs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let p = PlaceId(u8::try_from(i).ok()?);
                    Some((layout.place(p), (*r)?.obligations))
                })
                .filter(|(_, o)| !o.is_empty())
                .collect(),
        }
    }
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
        tally.add(
            q.query.invalid.unwrap_or(ReasonCode::DeniedUnknownSubject),
            beyond,
        );
    }
    let filter = match candidates {
        Candidates::Where(f) => {
            let holds: Vec<bool> = snapshot
                .ctx
                .places()
                .iter()
                .map(|place| {
                    (f.regimes.is_empty() || f.regimes.contains(&place.regime))
                        && (f.regions.is_empty()
                            || place.region.is_some_and(|r| {
                                f.regions.iter().any(|x| x.eq_ignore_ascii_case(r))
                            }))
                })
                .collect();
            PlaceMask::new(layout, &holds)
        }
        _ => PlaceMask::All,
    };
    let masks = Masks::new(snapshot, q, now);
    let minutes = LocalMinutes::new(now);
    let mut eligible = RoaringBitmap::new();
    let mut obligations = Obligations::NONE;
    for (c, chunk) in snapshot.chunks.iter().enumerate() {
        let cand = match candidates {
            Candidates::All => chunk.set(Layout::KNOWN).cloned().unwrap_or_default(),
            Candidates::Ids(_) => by_chunk.remove(&c).unwrap_or_default(),
            Candidates::Where(_) => filter.select(
                chunk,
                chunk.set(Layout::KNOWN).unwrap_or(&RoaringBitmap::new()),
            ),
        };
        if cand.is_empty() {
            continue;
        }
        if let Some(reason) = q.query.invalid {
            tally.add(reason, cand.len());
            continue;
        }
        let rest = chunk_audience(snapshot, chunk, q, &masks, cand, now, &minutes, &mut tally);
        for (set, o) in &masks.obligations {
            if chunk.set(*set).is_some_and(|s| !s.is_disjoint(&rest)) {
                obligations = obligations.union(*o);
            }
        }
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

/// The gates over one chunk's candidates; returns the eligible ones.
#[expect(
    clippy::too_many_arguments,
    reason = "the per-chunk half of `evaluate`'s loop: the query, its masks and the clock are \
              computed once outside it, and a struct would only carry them across one call"
)]
fn chunk_audience(
    snapshot: &Snapshot,
    chunk: &Chunk,
    q: &IndexQuery,
    masks: &Masks,
    cand: RoaringBitmap,
    now: UnixMillis,
    minutes: &LocalMinutes,
    tally: &mut Tally,
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
    if query.class != PurposeClass::Essential {
        tally.exclude(
            &mut rest,
            set(Layout::ERASURE_SUPPRESSED),
            ReasonCode::DeniedSuppressedAfterErasure,
        );
    }
    if query.channel.is_some() {
        tally.exclude(
            &mut rest,
            set(Layout::SUPPRESSED),
            ReasonCode::DeniedSuppressed,
        );
    }
    // Gate 1, the requests part: few subjects have a gate, each checked as a decision would.
    let gated = &rest & set(Layout::GATED);
    for id in &gated {
        let stopped = snapshot
            .view(SubjectId(id), q)
            .and_then(|view| walk::request_gate(&snapshot.ctx, query, &view));
        if let Some((reason, _)) = stopped {
            tally.add(reason, 1);
            rest.remove(id);
        }
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

    // Gate 3: the legal basis.
    let mut rest = legal(snapshot, chunk, q, masks, rest, now, tally);

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
        let watched = &rest & set(layout.preference(channel));
        for (id, reason) in contact_scan(chunk, channel, &watched, minutes, now) {
            tally.add(reason, 1);
            rest.remove(id);
        }
    }
    rest
}

/// Gate 3 over one chunk; returns the candidates it allows.
fn legal(
    snapshot: &Snapshot,
    chunk: &Chunk,
    q: &IndexQuery,
    masks: &Masks,
    rest: RoaringBitmap,
    now: UnixMillis,
    tally: &mut Tally,
) -> RoaringBitmap {
    let layout = snapshot.layout;
    let query = &q.query;
    let empty = RoaringBitmap::new();
    let state = |k: StateKind| chunk.set(layout.state(query.scope, k)).unwrap_or(&empty);
    let mut rest = rest;

    if !masks.no_basis.is_none() {
        let no_basis = masks.no_basis.select(chunk, &rest);
        tally.exclude(&mut rest, &no_basis, ReasonCode::DeniedNoLegalBasis);
    }
    tally.exclude_at(
        chunk,
        &mut rest,
        &masks.objectionable,
        state(StateKind::Objected),
        ReasonCode::DeniedObjected,
    );
    for (kind, reason) in [
        (StateKind::Withdrawn, ReasonCode::DeniedWithdrawn),
        (StateKind::Refused, ReasonCode::DeniedRefused),
        (StateKind::OptedOut, ReasonCode::DeniedOptedOut),
        (StateKind::TopicNegative, ReasonCode::DeniedUnsubscribed),
    ] {
        tally.exclude_at(chunk, &mut rest, &masks.negative, state(kind), reason);
    }
    tally.exclude_at(
        chunk,
        &mut rest,
        &masks.gpc,
        chunk.set(Layout::GPC).unwrap_or(&empty),
        ReasonCode::DeniedGpc,
    );
    // Outside opt-in places, what is left is allowed (by contract or opt-out rules).
    let (opt_in, mut allowed) = match &masks.opt_in {
        PlaceMask::None => return rest,
        PlaceMask::All => (rest, RoaringBitmap::new()),
        mask => {
            let opt_in = mask.select(chunk, &rest);
            let allowed = rest - &opt_in;
            (opt_in, allowed)
        }
    };
    if opt_in.is_empty() {
        return allowed;
    }

    let express = &opt_in & state(StateKind::GivenExpress);
    let written = &opt_in & state(StateKind::GivenWritten);
    let implied = &opt_in & state(StateKind::GivenImplied);
    let mut no_record = opt_in;
    no_record -= &express;
    no_record -= &written;
    no_record -= &implied;

    // Where written consent is required, other consents are not enough.
    let needs_written_express = masks.written.select(chunk, &express);
    let needs_written_implied = masks.written.select(chunk, &implied);
    tally.add(
        ReasonCode::DeniedNoConsent,
        needs_written_express.len() + needs_written_implied.len(),
    );
    let good = written | (express - needs_written_express);
    let implied = implied - needs_written_implied;
    let implied_ok = masks.implied.select(chunk, &implied);
    tally.add(
        ReasonCode::DeniedNoConsent,
        implied.len() - implied_ok.len(),
    );
    let refresh = masks.refresh.select(chunk, &good);
    allowed |= &good - &refresh;
    let to_check = refresh | implied_ok;

    let mut scratch = crate::decision::EvidenceList::new();
    for id in &to_check {
        scratch.clear();
        let Some(view) = snapshot.view(SubjectId(id), q) else {
            continue;
        };
        let Some(req) = snapshot.ctx.requirement(view.place(), query) else {
            continue;
        };
        let Some(fact) = view
            .consent(query)
            .filter(|f| f.action == ConsentAction::Given)
        else {
            continue;
        };
        match walk::given(req, &fact, view.last_interaction(), now, &mut scratch) {
            Ok(_) => {
                allowed.insert(id);
            }
            Err(d) => tally.add(d.reason, 1),
        }
    }

    if !masks.soft.is_none() {
        let purchased = &no_record & &union(q.email_purchase.iter().map(|s| chunk.set(*s)));
        let soft = masks.soft.select(chunk, &purchased);
        no_record -= &soft;
        allowed |= soft;
    }
    if !masks.implied.is_none() {
        let collected = &no_record & chunk.set(Layout::IMPLIED).unwrap_or(&empty);
        let maybe = masks.implied.select(chunk, &collected);
        no_record -= &maybe;
        for id in &maybe {
            scratch.clear();
            let Some(view) = snapshot.view(SubjectId(id), q) else {
                continue;
            };
            let Some(req) = snapshot.ctx.requirement(view.place(), query) else {
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

/// Gate 4's frequency and quiet-hours part for the candidates the index watches on the channel,
/// merging them with the chunk's sorted watch list instead of visiting their pages. The same
/// tests as `walk::contact_gate`, in the same order. Returns the denied candidates.
fn contact_scan(
    chunk: &Chunk,
    channel: ChannelId,
    candidates: &RoaringBitmap,
    minutes: &LocalMinutes,
    now: UnixMillis,
) -> Vec<(u32, ReasonCode)> {
    let mut denied = Vec::new();
    let watch = chunk.watch.as_slice();
    let mut i = 0;
    for id in candidates {
        while watch
            .get(i)
            .is_some_and(|w| (w.id, w.channel) < (id, channel))
        {
            i += 1;
        }
        let Some(w) = watch.get(i).filter(|w| w.id == id && w.channel == channel) else {
            continue;
        };
        if now < w.capped_until {
            denied.push((id, ReasonCode::DeniedFrequencyCap));
            continue;
        }
        if let Some(q) = w.quiet
            && q.start_minute != q.end_minute
        {
            let m = minutes.get(w.tz.unwrap_or(chrono_tz::Tz::UTC), now);
            let inside = if q.start_minute < q.end_minute {
                (q.start_minute..q.end_minute).contains(&m)
            } else {
                m >= q.start_minute || m < q.end_minute
            };
            if inside {
                denied.push((id, ReasonCode::DeniedQuietHours));
            }
        }
    }
    denied
}
