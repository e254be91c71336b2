//! The in-memory index: every subject under a dense id, with roaring bitmaps per consent state,
//! place, signal and provenance for audiences, and a few compact per-subject entries (the latest
//! record of each consent scope, preferences, recent contacts) for single decisions.
//!
//! One writer (`Index`) applies changes and publishes immutable `Snapshot`s through an
//! `ArcSwap`; readers (`IndexReader`) load the current snapshot without ever blocking the
//! writer. `Snapshot::decide` answers exactly as the pure `decision::decide` would for the same
//! data (a property test holds it to that).
//!
//! Two differences from the store, by design: a trait collected again at another collection
//! point adds a provenance rather than replacing it (the earlier promise still holds for the
//! data), and contacts older than 30 days before a subject's newest contact on a channel are
//! dropped (no frequency period is longer), so answers are exact for `now` at or after the
//! newest contact.

mod store;
mod tally;

use crate::decision::walk::{self, Fact as ViewFact, Implied, Origin, Pref, Status, SubjectView};
use crate::decision::{
    ChannelId, Compiled, Decision, DecisionRequest, EMAIL_CATEGORY, PlaceId, Query, Scope,
    SequencedRecord,
};
use crate::ledger::{CollectionMethod, ConsentAction};
use crate::rulebook::PurposeClass;
use crate::subject::{ChannelPreference, Contact, Frequency, Period, QuietHours, Subject, Trait};
use crate::{SubjectId, UnixMillis};
use arc_swap::ArcSwap;
use chrono_tz::Tz;
use std::sync::Arc;
pub(crate) use store::{Chunk, Page, Registry, Row, SetKey, StateKind, Watch};
use store::{
    ContactEntry, ERASURE, ERASURE_SUPPRESSED, Fact, GATED, GPC, GPC_SCOPE, HAS_IMPLIED, HAS_PREFS,
    ImpliedEntry, KNOWN, OriginInfo, PendingEntry, PrefEntry, SUPPRESSED, implied_kind, locate,
    pack_scope, unpack_scope,
};
pub use tally::{ConsentTally, DayCount, SERIES_DAYS, ScopeTally, StateCounts};

/// One write the index must reflect. The store's write path sends one per committed write;
/// a start-up build sends the whole store (subjects, then traits, then the ledger in `seq`
/// order, then preferences and contacts).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A subject created or updated (location, time zone, erasure request, suppression).
    Subject(Subject),
    /// A trait stored, with its provenance.
    Trait(Trait),
    /// A consent record appended to the ledger.
    Consent(SequencedRecord),
    /// A channel preference set.
    Preference(ChannelPreference),
    /// A message sent.
    Contact(Contact),
    /// A subject erased: everything about it is dropped.
    Forget(SubjectId),
    /// The subject interacted with the company at this time (an event collected, a
    /// preference-center visit); consent records and preference changes count by themselves.
    Interaction { subject: SubjectId, at: UnixMillis },
    /// Every trait of a subject dropped (their provenance and what they imply), its consents,
    /// preferences and contacts kept: after retention deleted some of its traits, the writer
    /// sends this and then the traits the store still holds, in one publish, so no promise
    /// outlives the data it was made for.
    ForgetTraits(SubjectId),
    /// Every gate a subject's data subject requests put on its data, replacing the ones it
    /// had (empty: none left, after a restriction was lifted).
    Gates {
        subject: SubjectId,
        gates: Vec<crate::decision::SubjectGate>,
    },
}

/// Fixed bitmap positions; provenance bitmaps are numbered after them as they appear.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    places: usize,
    preferences: usize,
    states: usize,
    topics: usize,
    pub(crate) end: usize,
}

impl Layout {
    pub(crate) const KNOWN: usize = 0;
    pub(crate) const ERASURE: usize = 1;
    pub(crate) const SUPPRESSED: usize = 2;
    pub(crate) const GPC: usize = 3;
    pub(crate) const IMPLIED: usize = 4;
    /// Subjects with a gate from a data subject request.
    pub(crate) const GATED: usize = 5;
    /// Subjects whose identifier was collected again after their erasure.
    pub(crate) const ERASURE_SUPPRESSED: usize = 6;

    fn new(ctx: &Compiled) -> Layout {
        let places = 7;
        let preferences = places + ctx.places().len();
        let states = preferences + ctx.channels.len();
        let topics = states + ctx.scope_count() * StateKind::ALL.len();
        let end = topics + ctx.scope_count();
        Layout {
            places,
            preferences,
            states,
            topics,
            end,
        }
    }

    pub(crate) fn place(&self, p: PlaceId) -> usize {
        self.places + p.index()
    }
    pub(crate) fn preference(&self, c: ChannelId) -> usize {
        self.preferences + c.index()
    }
    pub(crate) fn state(&self, scope: crate::decision::ScopeId, kind: StateKind) -> usize {
        let k = StateKind::ALL.iter().position(|x| *x == kind).unwrap_or(0);
        self.states + scope.index() * StateKind::ALL.len() + k
    }
    pub(crate) fn topic(&self, scope: crate::decision::ScopeId) -> usize {
        self.topics + scope.index()
    }
}

/// An immutable view of the index at one moment. Cheap to clone (shared pages and bitmaps).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) ctx: Arc<Compiled>,
    pub(crate) chunks: Vec<Arc<Chunk>>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) layout: Layout,
    /// One past the highest subject id seen.
    len: u32,
    /// Consent records per day, shared by every snapshot of one build (`tally`).
    series: Arc<tally::Series>,
}

/// A request prepared against a snapshot: the compiled query and the bitmaps to probe.
/// Reusable on later snapshots (it is refreshed on the fly when new provenance appeared).
#[derive(Debug, Clone)]
pub struct IndexQuery {
    pub query: Query,
    generation: u64,
    /// Per category: provenance bitmaps whose data promised this use, in the order the pure
    /// decision picks its evidence (collection point key, notice key, version).
    probes: Vec<Vec<(usize, Origin)>>,
    /// Provenance bitmaps of email addresses soft opt-in may reach for this use
    /// (`Compiled::soft_opt_in_source`).
    pub(crate) email_purchase: Vec<usize>,
}

impl IndexQuery {
    pub(crate) fn probes(&self, category: usize) -> &[(usize, Origin)] {
        self.probes.get(category).map_or(&[], Vec::as_slice)
    }
}

/// What the index holds of one known subject besides its consents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectFlags {
    /// Where its rules come from, as `Compiled::place_of` finds it from its location.
    pub place: PlaceId,
    /// It asked for erasure.
    pub erasure: bool,
    /// It holds an identifier suppressed after an earlier erasure.
    pub erasure_suppressed: bool,
    pub suppressed: bool,
    /// Its latest GPC signal (of any record) is an opt-out.
    pub gpc_opted_out: bool,
}

/// How much memory the index takes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemoryReport {
    pub subjects: u64,
    /// Serialized size of every bitmap.
    pub bitmap_bytes: u64,
    /// Per-subject rows and entries, with container overheads.
    pub entry_bytes: u64,
    pub bytes_per_subject: f64,
}

use serde::Serialize;

const DAY: UnixMillis = 24 * 60 * 60 * 1000;

impl Snapshot {
    fn empty(ctx: Arc<Compiled>) -> Snapshot {
        let layout = Layout::new(&ctx);
        let registry = Registry {
            set_keys: vec![SetKey::Fixed; layout.end],
            ..Registry::default()
        };
        Snapshot {
            ctx,
            chunks: Vec::new(),
            registry: Arc::new(registry),
            layout,
            len: 0,
            series: Arc::default(),
        }
    }

    pub fn compiled(&self) -> &Arc<Compiled> {
        &self.ctx
    }

    /// One past the highest subject id the index has seen.
    pub fn id_space(&self) -> u32 {
        self.len
    }

    /// Number of known subjects.
    pub fn subject_count(&self) -> u64 {
        self.chunks
            .iter()
            .filter_map(|c| c.set(Layout::KNOWN))
            .map(|b| b.len())
            .sum()
    }

    /// Prepares a request for many decisions.
    pub fn prepare(&self, req: &DecisionRequest) -> IndexQuery {
        self.prepare_query(self.ctx.prepare(req))
    }

    pub fn prepare_query(&self, query: Query) -> IndexQuery {
        let reg = &self.registry;
        let mut probes = Vec::with_capacity(query.categories.len());
        for wanted in &query.categories {
            let mut list: Vec<(&OriginInfo, usize, Origin)> = Vec::new();
            for (category, sets) in ancestors(wanted)
                .filter_map(|c| Some((c, reg.provenance.get(reg.categories.get(c)?)?)))
            {
                for (origin, set) in sets {
                    let Some(info) = reg.origin_list.get(*origin as usize) else {
                        continue;
                    };
                    if !self
                        .ctx
                        .promises(&query, info.point, info.notice, info.version, category)
                    {
                        continue;
                    }
                    if let (Some(point), Some(notice)) = (info.point, info.notice) {
                        list.push((
                            info,
                            *set,
                            Origin {
                                point,
                                notice,
                                version: info.version,
                            },
                        ));
                    }
                }
            }
            list.sort_by(|a, b| {
                (&a.0.point_key, &a.0.notice_key, a.0.version).cmp(&(
                    &b.0.point_key,
                    &b.0.notice_key,
                    b.0.version,
                ))
            });
            probes.push(list.into_iter().map(|(_, set, o)| (set, o)).collect());
        }
        let mut email_purchase = Vec::new();
        for category in ancestors(EMAIL_CATEGORY) {
            let Some(sets) = reg
                .categories
                .get(category)
                .and_then(|c| reg.provenance.get(c))
            else {
                continue;
            };
            for (origin, set) in sets {
                let source = reg.origin_list.get(*origin as usize).is_some_and(|o| {
                    self.ctx
                        .soft_opt_in_source(&query, o.point, o.notice, o.version, category)
                });
                if source {
                    email_purchase.push(*set);
                }
            }
        }
        IndexQuery {
            query,
            generation: reg.generation,
            probes,
            email_purchase,
        }
    }

    /// The decision for `subject`, exactly as `decision::decide` would give it.
    pub fn decide(&self, subject: SubjectId, req: &DecisionRequest, now: UnixMillis) -> Decision {
        let q = self.prepare(req);
        self.decide_prepared(subject, &q, now)
    }

    /// The decision with a prepared request: the fast path.
    pub fn decide_prepared(&self, subject: SubjectId, q: &IndexQuery, now: UnixMillis) -> Decision {
        if q.generation != self.registry.generation {
            let fresh = self.prepare_query(q.query.clone());
            return self.decide_prepared(subject, &fresh, now);
        }
        match self.view(subject, q) {
            Some(view) => walk::walk(&self.ctx, &q.query, &view, now),
            None => walk::walk(&self.ctx, &q.query, &walk::Unknown, now),
        }
    }

    pub(crate) fn view<'a>(
        &'a self,
        subject: SubjectId,
        q: &'a IndexQuery,
    ) -> Option<IndexView<'a>> {
        let (c, p, local) = locate(subject);
        let chunk = self.chunks.get(c)?;
        let page = chunk.page(p)?;
        let row = *page.rows.get(usize::from(local))?;
        if row.flags & KNOWN == 0 {
            return None;
        }
        Some(IndexView {
            ctx: &self.ctx,
            q,
            id: subject.0,
            chunk,
            page,
            row,
            local,
        })
    }

    /// What the index holds of a known subject besides its consents; `None` for one it does
    /// not know (never seen, erased, or merged into another).
    pub fn subject(&self, id: SubjectId) -> Option<SubjectFlags> {
        let (c, p, local) = locate(id);
        let row = *self.chunks.get(c)?.page(p)?.rows.get(usize::from(local))?;
        (row.flags & KNOWN != 0).then_some(SubjectFlags {
            place: PlaceId(row.place),
            erasure: row.flags & ERASURE != 0,
            erasure_suppressed: row.flags & ERASURE_SUPPRESSED != 0,
            suppressed: row.flags & SUPPRESSED != 0,
            gpc_opted_out: row.flags & GPC != 0,
        })
    }

    /// Whether the latest record of `subject` for exactly `topic` of `purpose` on `channel`
    /// (of any kind, counted or not) is a pending double opt-in.
    pub fn pending(&self, subject: SubjectId, purpose: &str, channel: &str, topic: &str) -> bool {
        let Some(scope) = self.ctx.record_scope(purpose, Some(channel), Some(topic)) else {
            return false;
        };
        let (c, p, local) = locate(subject);
        self.chunks
            .get(c)
            .and_then(|chunk| chunk.page(p))
            .is_some_and(|page| page.is_pending(local, pack_scope(scope)))
    }

    /// The latest frequency and quiet hours `subject` chose on `channel`, if it chose any.
    pub fn channel_preference(
        &self,
        subject: SubjectId,
        channel: &str,
    ) -> Option<(Option<Frequency>, Option<QuietHours>)> {
        let channel = self.ctx.channel_id(channel)?;
        let (c, p, local) = locate(subject);
        let page = self.chunks.get(c)?.page(p)?;
        page.prefs_of(local)
            .iter()
            .find(|e| e.channel == channel)
            .map(|e| (e.frequency, e.quiet))
    }

    /// Memory taken by bitmaps and per-subject entries, and per known subject.
    pub fn memory(&self) -> MemoryReport {
        let mut bitmap_bytes = 0u64;
        let mut entry_bytes = 0u64;
        for chunk in &self.chunks {
            for set in chunk.sets.iter().flatten() {
                bitmap_bytes += set.serialized_size() as u64;
            }
            // The chunk's tables of pointers and its watch list.
            entry_bytes += (chunk.pages.len() * 8
                + chunk.sets.len() * 8
                + chunk.watch.len() * std::mem::size_of::<Watch>())
                as u64;
            for page in chunk.pages.iter().flatten() {
                // Seven list headers and the shared-pointer counts.
                entry_bytes += (page.bytes() + 7 * 24 + 16) as u64;
            }
        }
        let subjects = self.subject_count();
        MemoryReport {
            subjects,
            bitmap_bytes,
            entry_bytes,
            bytes_per_subject: (bitmap_bytes + entry_bytes) as f64 / subjects.max(1) as f64,
        }
    }

    // --- writing (only the `Index` calls these, on its private working copy) --------------

    fn chunk_mut(&mut self, c: usize) -> Option<&mut Chunk> {
        while self.chunks.len() <= c {
            self.chunks.push(Arc::new(Chunk::new()));
        }
        self.chunks.get_mut(c).map(Arc::make_mut)
    }

    fn registry_mut(&mut self) -> &mut Registry {
        let reg = Arc::make_mut(&mut self.registry);
        reg.generation += 1;
        reg
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Subject(s) => self.apply_subject(&s),
            Change::Trait(t) => self.apply_trait(&t),
            Change::Consent(r) => {
                self.interacted(r.record.subject, r.record.at);
                self.track_pending(&r);
                self.apply_consent(&r);
            }
            Change::Preference(p) => {
                self.interacted(p.subject, p.updated_at);
                self.apply_preference(&p);
            }
            Change::Interaction { subject, at } => self.interacted(subject, at),
            Change::Contact(c) => self.apply_contact(&c),
            Change::Forget(id) => self.forget(id),
            Change::ForgetTraits(id) => self.forget_traits(id),
            Change::Gates { subject, gates } => self.apply_gates(subject, &gates),
        }
    }

    /// Replaces a subject's gates, compiled against the manifest.
    fn apply_gates(&mut self, subject: SubjectId, gates: &[crate::decision::SubjectGate]) {
        let rules: Vec<crate::decision::GateRule> =
            gates.iter().map(|g| self.ctx.compile_gate(g)).collect();
        let gated = !rules.is_empty();
        let (c, p, local) = locate(subject);
        self.len = self.len.max(subject.0.saturating_add(1));
        let Some(chunk) = self.chunk_mut(c) else {
            return;
        };
        if let Some(page) = chunk.page_mut(p) {
            page.set_gates(local, rules);
            if let Some(row) = page.rows.get_mut(usize::from(local)) {
                if gated {
                    row.flags |= GATED;
                } else {
                    row.flags &= !GATED;
                }
            }
        }
        chunk.put(Layout::GATED, subject.0, gated);
    }

    /// Keeps the latest interaction of `subject`.
    fn interacted(&mut self, subject: SubjectId, at: UnixMillis) {
        let (c, p, local) = locate(subject);
        self.len = self.len.max(subject.0.saturating_add(1));
        let Some(row) = self
            .chunk_mut(c)
            .and_then(|chunk| chunk.page_mut(p))
            .and_then(|page| page.rows.get_mut(usize::from(local)))
        else {
            return;
        };
        row.last_interaction = row.last_interaction.max(at);
    }

    fn apply_subject(&mut self, s: &Subject) {
        if s.erased_at.is_some() {
            // A tombstone: the index knows the subject no more.
            self.len = self.len.max(s.id.0.saturating_add(1));
            self.forget(s.id);
            return;
        }
        let place = self.ctx.place_of(s.country.as_deref(), s.region.as_deref());
        let tz: Option<Tz> = s.time_zone.as_deref().and_then(|z| z.parse().ok());
        let layout = self.layout;
        let (c, p, local) = locate(s.id);
        self.len = self.len.max(s.id.0.saturating_add(1));
        let Some(chunk) = self.chunk_mut(c) else {
            return;
        };
        let Some(row) = chunk
            .page_mut(p)
            .and_then(|page| page.rows.get_mut(usize::from(local)))
        else {
            return;
        };
        let old_place = (row.flags & KNOWN != 0).then_some(row.place);
        let row_tz_changed = row.tz != tz;
        let erasure = s.erasure_requested_at.is_some();
        let mut flags = KNOWN | (row.flags & (GPC | HAS_PREFS | HAS_IMPLIED | GATED));
        if erasure {
            flags |= ERASURE;
        }
        if s.suppressed {
            flags |= SUPPRESSED;
        }
        let erasure_suppressed = s.erasure_suppressed_at.is_some();
        if erasure_suppressed {
            flags |= ERASURE_SUPPRESSED;
        }
        *row = Row {
            flags,
            place: place.0,
            tz,
            fact_end: row.fact_end,
            last_interaction: row.last_interaction,
        };
        let watched: Vec<ChannelId> = if row_tz_changed {
            chunk
                .page(p)
                .map(|page| page.prefs_of(local).iter().map(|e| e.channel).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        chunk.put(Layout::KNOWN, s.id.0, true);
        chunk.put(Layout::ERASURE, s.id.0, erasure);
        chunk.put(Layout::SUPPRESSED, s.id.0, s.suppressed);
        chunk.put(Layout::ERASURE_SUPPRESSED, s.id.0, erasure_suppressed);
        if old_place != Some(place.0) {
            if let Some(old) = old_place {
                chunk.put(layout.place(PlaceId(old)), s.id.0, false);
            }
            chunk.put(layout.place(place), s.id.0, true);
        }
        for channel in watched {
            self.refresh_watch(s.id, channel);
        }
    }

    fn apply_trait(&mut self, t: &Trait) {
        let p = &t.provenance;
        let point = self.ctx.point_id(&p.collection_point);
        let notice = self.ctx.notice_id(&p.notice_id);
        if point.is_none() && notice.is_none() {
            // Data from nowhere the manifest knows can promise nothing.
            return;
        }
        let set = self.provenance_set(t, point, notice);
        let kind = point
            .and_then(|id| self.ctx.point(id))
            .and_then(|info| implied_kind(info.kind));
        let ctx = Arc::clone(&self.ctx);
        let (c, pg, local) = locate(t.subject);
        self.len = self.len.max(t.subject.0.saturating_add(1));
        let Some(chunk) = self.chunk_mut(c) else {
            return;
        };
        chunk.put(set, t.subject.0, true);
        let (Some(kind), Some(point)) = (kind, point) else {
            return;
        };
        let Some(page) = chunk.page_mut(pg) else {
            return;
        };
        let key_of = |id| ctx.point(id).map_or("", |i| i.key.as_str());
        let range = page.implied_range(local);
        let at = p.collected_at;
        let existing = range
            .clone()
            .find(|i| page.implied.get(*i).is_some_and(|e| e.kind == kind));
        match existing {
            Some(i) => {
                if let Some(e) = page.implied.get_mut(i) {
                    let better = at > e.at || (at == e.at && key_of(point) < key_of(e.point));
                    if better {
                        e.at = at;
                        e.point = point;
                    }
                }
            }
            None => {
                let pos = range.start
                    + page
                        .implied
                        .get(range.clone())
                        .map_or(0, |r| r.partition_point(|e| e.kind < kind));
                page.implied.insert(
                    pos,
                    ImpliedEntry {
                        local,
                        kind,
                        at,
                        point,
                    },
                );
            }
        }
        if let Some(row) = page.rows.get_mut(usize::from(local)) {
            row.flags |= HAS_IMPLIED;
        }
        chunk.put(Layout::IMPLIED, t.subject.0, true);
    }

    fn provenance_set(
        &mut self,
        t: &Trait,
        point: Option<crate::decision::PointId>,
        notice: Option<crate::decision::NoticeId>,
    ) -> usize {
        let p = &t.provenance;
        let origin_key = (
            p.collection_point.clone(),
            p.notice_id.clone(),
            p.notice_version,
        );
        let reg = &self.registry;
        if let (Some(cat), Some(origin)) = (
            reg.categories.get(&t.category),
            reg.origins.get(&origin_key),
        ) && let Some(set) = reg.set(&SetKey::Provenance {
            category: *cat,
            origin: *origin,
        }) {
            return set;
        }
        let layout_end = self.layout.end;
        let reg = self.registry_mut();
        let next_cat = reg.category_keys.len() as u32;
        let cat = *reg.categories.entry(t.category.clone()).or_insert(next_cat);
        if cat == next_cat {
            reg.category_keys.push(t.category.clone());
        }
        let next_origin = reg.origin_list.len() as u32;
        let origin = *reg.origins.entry(origin_key).or_insert(next_origin);
        if origin == next_origin {
            reg.origin_list.push(OriginInfo {
                point_key: p.collection_point.clone(),
                notice_key: p.notice_id.clone(),
                version: p.notice_version,
                point,
                notice,
            });
        }
        let key = SetKey::Provenance {
            category: cat,
            origin,
        };
        if let Some(set) = reg.set(&key) {
            return set;
        }
        let set = reg.set_keys.len().max(layout_end);
        reg.set_keys.resize(set, SetKey::Fixed);
        reg.set_keys.push(key);
        reg.sets.insert(key, set);
        reg.provenance.entry(cat).or_default().push((origin, set));
        set
    }

    /// The latest covering record and the topic's negativity for one request scope.
    fn scope_state(ctx: &Compiled, facts: &[Fact], scope: Scope) -> (Option<StateKind>, bool) {
        let mut latest: Option<&Fact> = None;
        let mut topic: Option<&Fact> = None;
        for f in facts {
            if f.scope == GPC_SCOPE {
                continue;
            }
            let rs = unpack_scope(f.scope);
            if ctx.covers(rs, f.action == ConsentAction::Objected, scope)
                && latest.is_none_or(|l| f.seq > l.seq)
            {
                latest = Some(f);
            }
            if ctx.is_topic_record(rs, scope) && topic.is_none_or(|l| f.seq > l.seq) {
                topic = Some(f);
            }
        }
        let kind = latest
            .and_then(|f| StateKind::of(f.action, f.method, unpack_scope(f.scope).topic.is_some()));
        let topic_negative = topic.is_some_and(|f| f.action.is_negative());
        (kind, topic_negative)
    }

    /// Keeps, per exact topic scope, whether its latest record of any kind (counted or not) is
    /// a pending double opt-in. Records come in `seq` order (the build reads the ledger in
    /// order, and every write path applies what it appended, in order).
    fn track_pending(&mut self, r: &SequencedRecord) {
        let rec = &r.record;
        let (Some(channel), Some(topic)) = (rec.channel.as_deref(), rec.topic.as_deref()) else {
            return;
        };
        let Some(scope) = self
            .ctx
            .record_scope(&rec.purpose, Some(channel), Some(topic))
        else {
            return;
        };
        let scope = pack_scope(scope);
        let (c, p, local) = locate(rec.subject);
        let pending = rec.action == ConsentAction::Pending;
        let known = self
            .chunks
            .get(c)
            .and_then(|chunk| chunk.page(p))
            .is_some_and(|page| page.is_pending(local, scope));
        if !pending && !known {
            // Nothing to clear: leave the page unshared.
            return;
        }
        let Some(page) = self.chunk_mut(c).and_then(|chunk| chunk.page_mut(p)) else {
            return;
        };
        let at = page
            .pending
            .binary_search_by(|e| (e.local, e.scope).cmp(&(local, scope)));
        match (at, pending) {
            (Ok(i), true) => {
                if let Some(e) = page.pending.get_mut(i) {
                    e.seq = e.seq.max(r.seq);
                }
            }
            (Err(i), true) => page.pending.insert(
                i,
                PendingEntry {
                    local,
                    scope,
                    seq: r.seq,
                },
            ),
            (Ok(i), false) => {
                if page.pending.get(i).is_some_and(|e| e.seq < r.seq) {
                    page.pending.remove(i);
                }
            }
            (Err(_), false) => {}
        }
    }

    fn apply_consent(&mut self, r: &SequencedRecord) {
        let rec = &r.record;
        // A yes under a notice that did not promise it counts for nothing (as in `StateView`);
        // a GPC signal counts whatever it names, as `StateView::gpc` reads it.
        if rec.action == ConsentAction::Pending
            || (rec.method != CollectionMethod::Gpc && !crate::manifest::promises::counts(rec))
        {
            return;
        }
        let ctx = Arc::clone(&self.ctx);
        let layout = self.layout;
        let (c, p, local) = locate(rec.subject);
        let id = rec.subject.0;
        self.len = self.len.max(id.saturating_add(1));
        let gpc = rec.method == CollectionMethod::Gpc;
        let scope = if gpc {
            None
        } else {
            match ctx.record_scope(&rec.purpose, rec.channel.as_deref(), rec.topic.as_deref()) {
                Some(s) => Some(s),
                None => return,
            }
        };
        let packed = scope.map_or(GPC_SCOPE, pack_scope);
        let series = Arc::clone(&self.series);
        let Some(chunk) = self.chunk_mut(c) else {
            return;
        };
        let Some(page) = chunk.page_mut(p) else {
            return;
        };
        let range = page.facts_range(local);
        let existing = range
            .clone()
            .find(|i| page.facts.get(*i).is_some_and(|f| f.scope == packed));
        let fact = Fact {
            seq: r.seq,
            at: rec.at,
            scope: packed,
            action: rec.action,
            method: rec.method,
            local,
        };
        // Scopes whose state may change, and their state before.
        let affected: Vec<(Scope, crate::decision::ScopeId, (Option<StateKind>, bool))> =
            match scope {
                None => Vec::new(),
                Some(rs) => (0..ctx.scope_count())
                    .filter_map(|i| {
                        let sid = crate::decision::ScopeId(u16::try_from(i).ok()?);
                        let s = ctx.scope(sid)?;
                        (ctx.covers(rs, true, s) || ctx.is_topic_record(rs, s)).then(|| {
                            let facts = page.facts.get(range.clone()).unwrap_or_default();
                            (s, sid, Self::scope_state(&ctx, facts, s))
                        })
                    })
                    .collect(),
            };
        match existing {
            Some(i) => match page.facts.get_mut(i) {
                Some(f) if f.seq < r.seq => *f = fact,
                _ => return,
            },
            None => {
                let pos = range.start
                    + page
                        .facts
                        .get(range.clone())
                        .map_or(0, |fs| fs.partition_point(|f| f.scope < packed));
                page.insert_fact(pos, fact);
            }
        }
        // Counted once: a record heard again, or older than the one held, returned above.
        series.count(rec.action, rec.at);
        if gpc {
            let on = rec.action == ConsentAction::OptedOut;
            if let Some(row) = page.rows.get_mut(usize::from(local)) {
                if on {
                    row.flags |= GPC;
                } else {
                    row.flags &= !GPC;
                }
            }
            chunk.put(Layout::GPC, id, on);
            return;
        }
        let range = page.facts_range(local);
        let facts: Vec<Fact> = page.facts.get(range).unwrap_or_default().to_vec();
        for (s, sid, (old_kind, old_topic)) in affected {
            let (kind, topic) = Self::scope_state(&ctx, &facts, s);
            if kind != old_kind {
                if let Some(k) = old_kind {
                    chunk.put(layout.state(sid, k), id, false);
                }
                if let Some(k) = kind {
                    chunk.put(layout.state(sid, k), id, true);
                }
            }
            if topic != old_topic {
                chunk.put(layout.topic(sid), id, topic);
            }
        }
    }

    fn apply_preference(&mut self, pref: &ChannelPreference) {
        let Some(channel) = self.ctx.channel_id(&pref.channel) else {
            return;
        };
        let (c, p, local) = locate(pref.subject);
        self.len = self.len.max(pref.subject.0.saturating_add(1));
        let Some(chunk) = self.chunk_mut(c) else {
            return;
        };
        let Some(page) = chunk.page_mut(p) else {
            return;
        };
        let entry = PrefEntry {
            local,
            channel,
            updated_at: pref.updated_at,
            frequency: pref.frequency,
            quiet: pref.quiet_hours,
        };
        let range = page.prefs_range(local);
        let existing = range
            .clone()
            .find(|i| page.prefs.get(*i).is_some_and(|e| e.channel == channel));
        match existing {
            Some(i) => match page.prefs.get_mut(i) {
                Some(e) if e.updated_at <= pref.updated_at => *e = entry,
                _ => return,
            },
            None => {
                let pos = range.start
                    + page
                        .prefs
                        .get(range.clone())
                        .map_or(0, |r| r.partition_point(|e| e.channel < channel));
                page.prefs.insert(pos, entry);
            }
        }
        if let Some(row) = page.rows.get_mut(usize::from(local)) {
            row.flags |= HAS_PREFS;
        }
        self.refresh_watch(pref.subject, channel);
    }

    fn apply_contact(&mut self, contact: &Contact) {
        let Some(channel) = self.ctx.channel_id(&contact.channel) else {
            return;
        };
        if self.ctx.class_of_key(&contact.purpose) == PurposeClass::Essential {
            return;
        }
        let (c, p, local) = locate(contact.subject);
        self.len = self.len.max(contact.subject.0.saturating_add(1));
        let Some(page) = self.chunk_mut(c).and_then(|chunk| chunk.page_mut(p)) else {
            return;
        };
        let entry = ContactEntry {
            local,
            channel,
            at: contact.at,
        };
        let pos = page.contacts.partition_point(|e| *e < entry);
        page.contacts.insert(pos, entry);
        // Keep only what a frequency period can still reach.
        let range = page.contacts_range(local);
        let newest = page
            .contacts
            .get(range.clone())
            .unwrap_or_default()
            .iter()
            .filter(|e| e.channel == channel)
            .map(|e| e.at)
            .max()
            .unwrap_or(contact.at);
        let horizon = newest.saturating_sub(Period::Month.millis().max(30 * DAY));
        page.contacts
            .retain(|e| !(e.local == local && e.channel == channel && e.at <= horizon));
        self.refresh_watch(contact.subject, channel);
    }

    /// What gate 4 needs to know about (`local`, `channel`) to possibly deny it, or `None` if it
    /// never will for a `now` at or after the newest contact: quiet hours, or a frequency cap
    /// reached at the newest contact. For such `now` the messages in the period are a subset of
    /// those in the period ending at the newest contact, and the subject stays at the cap until
    /// the `max`-th newest message leaves the period.
    fn watch_entry(page: &Page, local: u8, id: u32, channel: ChannelId) -> Option<Watch> {
        let row = page.rows.get(usize::from(local))?;
        let pref = page.prefs_of(local).iter().find(|p| p.channel == channel)?;
        let capped_until = match pref.frequency {
            None => i64::MIN,
            Some(f) if f.max == 0 => i64::MAX,
            Some(f) => {
                let mut sent: Vec<UnixMillis> = page
                    .contacts_of(local)
                    .iter()
                    .filter(|c| c.channel == channel)
                    .map(|c| c.at)
                    .collect();
                sent.sort_unstable_by(|a, b| b.cmp(a));
                let newest = sent.first().copied().unwrap_or(i64::MIN);
                match sent.get(f.max as usize - 1) {
                    Some(kth) => {
                        let until = kth.saturating_add(f.period.millis());
                        if newest < until { until } else { i64::MIN }
                    }
                    None => i64::MIN,
                }
            }
        };
        (pref.quiet.is_some() || capped_until != i64::MIN).then_some(Watch {
            id,
            channel,
            capped_until,
            quiet: pref.quiet,
            tz: row.tz,
        })
    }

    /// Recomputes the watch entry and bitmap of (`subject`, `channel`).
    fn refresh_watch(&mut self, subject: SubjectId, channel: ChannelId) {
        let layout = self.layout;
        let (c, p, local) = locate(subject);
        let Some(chunk) = self.chunk_mut(c) else {
            return;
        };
        let entry = chunk
            .page(p)
            .and_then(|page| Self::watch_entry(page, local, subject.0, channel));
        chunk.put(layout.preference(channel), subject.0, entry.is_some());
        chunk.set_watch(subject.0, channel, entry);
    }

    /// Undoes every `apply_trait` of one subject.
    fn forget_traits(&mut self, id: SubjectId) {
        let provenance: Vec<usize> = self
            .registry
            .provenance
            .values()
            .flatten()
            .map(|(_, set)| *set)
            .collect();
        let (c, p, local) = locate(id);
        let Some(chunk) = self.chunk_mut(c) else {
            return;
        };
        if let Some(page) = chunk.page_mut(p) {
            page.implied.retain(|e| e.local != local);
            if let Some(row) = page.rows.get_mut(usize::from(local)) {
                row.flags &= !HAS_IMPLIED;
            }
        }
        chunk.put(Layout::IMPLIED, id.0, false);
        for set in provenance {
            chunk.put(set, id.0, false);
        }
    }

    fn forget(&mut self, id: SubjectId) {
        let (c, p, local) = locate(id);
        let Some(chunk) = self.chunk_mut(c) else {
            return;
        };
        if let Some(page) = chunk.page_mut(p) {
            page.remove_facts(local);
            if let Some(row) = page.rows.get_mut(usize::from(local)) {
                *row = Row {
                    fact_end: row.fact_end,
                    ..Row::default()
                };
            }
            page.prefs.retain(|e| e.local != local);
            page.contacts.retain(|e| e.local != local);
            page.implied.retain(|e| e.local != local);
            page.pending.retain(|e| e.local != local);
            page.set_gates(local, Vec::new());
        }
        for set in 0..chunk.sets.len() {
            chunk.put(set, id.0, false);
        }
        if chunk.watch.iter().any(|w| w.id == id.0) {
            Arc::make_mut(&mut chunk.watch).retain(|w| w.id != id.0);
        }
    }
}

/// `key` and every branch containing it, most specific first.
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(key);
    std::iter::from_fn(move || {
        let current = next?;
        next = current.rsplit_once('.').map(|(parent, _)| parent);
        Some(current)
    })
}

/// One subject, read from a snapshot.
pub(crate) struct IndexView<'a> {
    ctx: &'a Compiled,
    q: &'a IndexQuery,
    id: u32,
    chunk: &'a Chunk,
    page: &'a Page,
    row: Row,
    local: u8,
}

fn view_fact(f: &Fact) -> ViewFact {
    ViewFact {
        seq: f.seq,
        at: f.at,
        action: f.action,
        method: f.method,
        topic_level: unpack_scope(f.scope).topic.is_some(),
    }
}

impl SubjectView for IndexView<'_> {
    fn status(&self) -> Option<Status> {
        Some(Status {
            erasure: self.row.flags & ERASURE != 0,
            erasure_suppressed: self.row.flags & ERASURE_SUPPRESSED != 0,
            suppressed: self.row.flags & SUPPRESSED != 0,
        })
    }

    fn place(&self) -> PlaceId {
        PlaceId(self.row.place)
    }

    fn gpc(&self) -> bool {
        self.row.flags & GPC != 0
    }

    fn promise(&self, _: &Query, category: usize) -> Option<Origin> {
        self.q
            .probes(category)
            .iter()
            .find(|(set, _)| self.chunk.contains(Some(*set), self.id))
            .map(|(_, o)| *o)
    }

    fn soft_opt_in_source(&self, _: &Query) -> bool {
        self.q
            .email_purchase
            .iter()
            .any(|set| self.chunk.contains(Some(*set), self.id))
    }

    fn implied(&self) -> Implied {
        let mut implied = Implied::default();
        if self.row.flags & HAS_IMPLIED == 0 {
            return implied;
        }
        for e in self.page.implied_of(self.local) {
            match e.kind {
                0 => implied.purchase = Some((e.at, e.point)),
                _ => implied.inquiry = Some((e.at, e.point)),
            }
        }
        implied
    }

    fn consent(&self, query: &Query) -> Option<ViewFact> {
        let wanted = self.ctx.scope(query.scope)?;
        let mut latest: Option<&Fact> = None;
        for f in self.page.facts_of(self.local) {
            if f.scope == GPC_SCOPE {
                continue;
            }
            if latest.is_some_and(|l| l.seq > f.seq) {
                continue;
            }
            if self.ctx.covers(
                unpack_scope(f.scope),
                f.action == ConsentAction::Objected,
                wanted,
            ) {
                latest = Some(f);
            }
        }
        latest.map(view_fact)
    }

    fn topic_state(&self, query: &Query) -> Option<ViewFact> {
        let wanted = self.ctx.scope(query.scope)?;
        self.page
            .facts_of(self.local)
            .iter()
            .filter(|f| {
                f.scope != GPC_SCOPE && self.ctx.is_topic_record(unpack_scope(f.scope), wanted)
            })
            .max_by_key(|f| f.seq)
            .map(view_fact)
    }

    fn last_interaction(&self) -> Option<UnixMillis> {
        (self.row.last_interaction > 0).then_some(self.row.last_interaction)
    }

    fn preference(&self, channel: ChannelId) -> Option<Pref> {
        if self.row.flags & HAS_PREFS == 0 {
            return None;
        }
        self.page
            .prefs_of(self.local)
            .iter()
            .find(|p| p.channel == channel)
            .map(|p| Pref {
                frequency: p.frequency,
                quiet: p.quiet,
            })
    }

    fn contacts_between(&self, channel: ChannelId, after: UnixMillis, until: UnixMillis) -> u32 {
        let n = self
            .page
            .contacts_of(self.local)
            .iter()
            .filter(|c| c.channel == channel && c.at > after && c.at <= until)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn time_zone(&self) -> Option<Tz> {
        self.row.tz
    }

    fn gates(&self) -> &[crate::decision::GateRule] {
        if self.row.flags & GATED == 0 {
            return &[];
        }
        self.page.gates_of(self.local)
    }
}

/// Local minutes at one `now`, per time zone, computed once each (audiences read many).
pub(crate) struct LocalMinutes {
    now: UnixMillis,
    by_zone: Vec<std::cell::Cell<u16>>,
}

impl LocalMinutes {
    pub(crate) fn new(now: UnixMillis) -> LocalMinutes {
        LocalMinutes {
            now,
            by_zone: vec![std::cell::Cell::new(u16::MAX); chrono_tz::TZ_VARIANTS.len()],
        }
    }

    pub(crate) fn get(&self, tz: Tz, now: UnixMillis) -> u16 {
        let Some(cell) = self.by_zone.get(tz as usize).filter(|_| now == self.now) else {
            return walk::local_minute(tz, now);
        };
        if cell.get() == u16::MAX {
            cell.set(walk::local_minute(tz, now));
        }
        cell.get()
    }
}

/// The single writer. Changes applied are invisible until `publish`.
#[derive(Debug)]
pub struct Index {
    working: Snapshot,
    published: Arc<ArcSwap<Snapshot>>,
}

/// A cheap, cloneable handle for readers on any thread.
#[derive(Debug, Clone)]
pub struct IndexReader {
    published: Arc<ArcSwap<Snapshot>>,
}

impl IndexReader {
    /// The latest published snapshot. Holding it never blocks the writer.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.published.load_full()
    }

    pub fn decide(&self, subject: SubjectId, req: &DecisionRequest, now: UnixMillis) -> Decision {
        self.published.load().decide(subject, req, now)
    }
}

impl Index {
    /// An empty index for a compiled manifest. A new manifest means a new index.
    pub fn new(ctx: Arc<Compiled>) -> Index {
        let working = Snapshot::empty(ctx);
        let published = Arc::new(ArcSwap::from_pointee(working.clone()));
        Index { working, published }
    }

    /// An index built from everything in the store, published.
    pub fn build(ctx: Arc<Compiled>, changes: impl IntoIterator<Item = Change>) -> Index {
        let mut index = Index::new(ctx);
        for change in changes {
            index.working.apply(change);
        }
        index.publish();
        index
    }

    /// Builds from the store's lists, in the order the store keeps them (`consents` in ledger
    /// `seq` order).
    pub fn from_parts(
        ctx: Arc<Compiled>,
        subjects: impl IntoIterator<Item = Subject>,
        traits: impl IntoIterator<Item = Trait>,
        consents: impl IntoIterator<Item = SequencedRecord>,
        preferences: impl IntoIterator<Item = ChannelPreference>,
        contacts: impl IntoIterator<Item = Contact>,
    ) -> Index {
        let changes = subjects
            .into_iter()
            .map(Change::Subject)
            .chain(traits.into_iter().map(Change::Trait))
            .chain(consents.into_iter().map(Change::Consent))
            .chain(preferences.into_iter().map(Change::Preference))
            .chain(contacts.into_iter().map(Change::Contact));
        Index::build(ctx, changes)
    }

    /// Empties the writer's copy (readers keep the published snapshot until the next
    /// `publish`), to build it again from the store.
    pub fn reset(&mut self) {
        self.working = Snapshot::empty(Arc::clone(&self.working.ctx));
    }

    /// Applies one change to the writer's copy (not yet visible to readers).
    pub fn apply(&mut self, change: Change) {
        self.working.apply(change);
    }

    /// Makes every change applied so far visible to readers, atomically.
    pub fn publish(&mut self) {
        self.published.store(Arc::new(self.working.clone()));
    }

    /// Applies a batch and publishes it.
    pub fn apply_and_publish(&mut self, changes: impl IntoIterator<Item = Change>) {
        for change in changes {
            self.working.apply(change);
        }
        self.publish();
    }

    pub fn reader(&self) -> IndexReader {
        IndexReader {
            published: Arc::clone(&self.published),
        }
    }

    /// The latest published snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.published.load_full()
    }

    /// A decision on the latest published snapshot.
    pub fn decide(&self, subject: SubjectId, req: &DecisionRequest, now: UnixMillis) -> Decision {
        self.published.load().decide(subject, req, now)
    }
}
