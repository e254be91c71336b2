//! The index's storage: subjects in chunks of 65,536 (one roaring container each), each chunk in
//! pages of 256 subjects. Everything sits behind `Arc`s and is copied on write, so publishing a
//! snapshot is a shallow copy and a write copies only the page and bitmaps it touches.

use crate::decision::{ChannelId, GateRule, PointId, RecordScope, TopicId};
use crate::ledger::{CollectionMethod, ConsentAction};
use crate::manifest::CollectionKind;
use crate::subject::{Frequency, QuietHours};
use crate::{SubjectId, UnixMillis};
use chrono_tz::Tz;
use roaring::RoaringBitmap;
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

pub(crate) const CHUNK_BITS: u32 = 16;
pub(crate) const PAGE_BITS: u32 = 8;
pub(crate) const PAGES_PER_CHUNK: usize = 1 << (CHUNK_BITS - PAGE_BITS);
pub(crate) const PAGE_SIZE: usize = 1 << PAGE_BITS;

pub(crate) const KNOWN: u8 = 1;
pub(crate) const ERASURE: u8 = 2;
pub(crate) const SUPPRESSED: u8 = 4;
pub(crate) const GPC: u8 = 8;
pub(crate) const HAS_PREFS: u8 = 16;
pub(crate) const HAS_IMPLIED: u8 = 32;
/// The subject has gates from its data subject requests (`Page::gates`).
pub(crate) const GATED: u8 = 64;
/// The subject was suppressed after an erasure (`Page::suppressed`).
pub(crate) const ERASURE_SUPPRESSED: u8 = 128;

/// Sixteen bytes per subject: flags, place, time zone, where the subject's facts end in its
/// page (they start where the previous subject's end), so one read finds them, and the
/// subject's last interaction (0: none known).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Row {
    pub flags: u8,
    pub place: u8,
    pub tz: Option<Tz>,
    pub fact_end: u32,
    pub last_interaction: UnixMillis,
}

/// The packed scope of a fact that is the subject's latest GPC signal, not a consent.
pub(crate) const GPC_SCOPE: u32 = u32::MAX;

pub(crate) fn pack_scope(s: RecordScope) -> u32 {
    (u32::from(s.purpose.0) << 16)
        | (s.channel.map_or(0, |c| u32::from(c.0) + 1) << 8)
        | s.topic.map_or(0, |t| u32::from(t.0) + 1)
}

pub(crate) fn unpack_scope(packed: u32) -> RecordScope {
    let byte = |shift: u32| ((packed >> shift) & 0xff) as u8;
    RecordScope {
        purpose: crate::decision::PurposeId((packed >> 16) as u16),
        channel: byte(8).checked_sub(1).map(ChannelId),
        topic: byte(0).checked_sub(1).map(TopicId),
    }
}

/// The latest record of one scope for one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fact {
    pub seq: u64,
    pub at: UnixMillis,
    pub scope: u32,
    pub action: ConsentAction,
    pub method: CollectionMethod,
    pub local: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PrefEntry {
    pub local: u8,
    pub channel: ChannelId,
    pub updated_at: UnixMillis,
    pub frequency: Option<Frequency>,
    pub quiet: Option<QuietHours>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ContactEntry {
    pub local: u8,
    pub channel: ChannelId,
    pub at: UnixMillis,
}

/// An exact topic scope (purpose, channel and topic) of one subject whose latest record, of any
/// kind, is a pending double opt-in: what the preference page shows as waiting for its
/// confirmation. The facts leave pending records out, since decisions never count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingEntry {
    pub local: u8,
    pub scope: u32,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ImpliedEntry {
    pub local: u8,
    /// 0 = purchase, 1 = inquiry.
    pub kind: u8,
    pub at: UnixMillis,
    pub point: PointId,
}

pub(crate) fn implied_kind(kind: CollectionKind) -> Option<u8> {
    match kind {
        CollectionKind::Purchase => Some(0),
        CollectionKind::Inquiry => Some(1),
        _ => None,
    }
}

/// 256 subjects. The lists are sorted by `local` so a subject's entries are one slice; the
/// facts, read by every decision, are found through the rows without a search.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    /// INVARIANT: subject `l`'s facts are `facts[rows[l - 1].fact_end..rows[l].fact_end]` (from
    /// 0 for `l == 0`), sorted by scope. `insert_fact` and `remove_facts`, the only writers of
    /// `fact_end`, assert it in debug builds (`debug_check_facts`).
    /// Inline, so reaching a row from the page pointer is one hop.
    pub rows: [Row; PAGE_SIZE],
    pub facts: Vec<Fact>,
    pub prefs: Vec<PrefEntry>,
    pub contacts: Vec<ContactEntry>,
    pub implied: Vec<ImpliedEntry>,
    /// Sorted by (`local`, `scope`).
    pub pending: Vec<PendingEntry>,
    /// The gates of the page's subjects with `GATED` set, sorted by `local`, one entry each.
    pub gates: Vec<(u8, Arc<[GateRule]>)>,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            rows: [Row::default(); PAGE_SIZE],
            facts: Vec::new(),
            prefs: Vec::new(),
            contacts: Vec::new(),
            implied: Vec::new(),
            pending: Vec::new(),
            gates: Vec::new(),
        }
    }
}

fn range_of<T>(items: &[T], local: u8, key: impl Fn(&T) -> u8) -> std::ops::Range<usize> {
    let start = items.partition_point(|x| key(x) < local);
    let end = start
        + items
            .get(start..)
            .map_or(0, |r| r.partition_point(|x| key(x) <= local));
    start..end
}

impl Page {
    pub fn facts_of(&self, local: u8) -> &[Fact] {
        self.facts.get(self.facts_range(local)).unwrap_or_default()
    }
    pub fn facts_range(&self, local: u8) -> std::ops::Range<usize> {
        let l = usize::from(local);
        let start = l
            .checked_sub(1)
            .and_then(|p| self.rows.get(p))
            .map_or(0, |r| r.fact_end) as usize;
        let end = self.rows.get(l).map_or(0, |r| r.fact_end) as usize;
        start..end.max(start)
    }
    /// Inserts a fact of subject `local` at `pos` (inside or at the end of its range).
    pub fn insert_fact(&mut self, pos: usize, fact: Fact) {
        self.facts.insert(pos, fact);
        for row in self.rows.iter_mut().skip(usize::from(fact.local)) {
            row.fact_end += 1;
        }
        self.debug_check_facts(fact.local);
    }
    /// Drops every fact of subject `local`.
    pub fn remove_facts(&mut self, local: u8) {
        let range = self.facts_range(local);
        let n = (range.end - range.start) as u32;
        self.facts.drain(range);
        for row in self.rows.iter_mut().skip(usize::from(local)) {
            row.fact_end -= n;
        }
        self.debug_check_facts(local);
    }
    /// The rows' invariant around subject `local`, in debug builds: the last row's facts end
    /// where `facts` does, and `local`'s slice holds its own facts only, one per scope, sorted.
    fn debug_check_facts(&self, local: u8) {
        debug_assert_eq!(
            self.rows.last().map_or(0, |r| r.fact_end as usize),
            self.facts.len(),
            "the last row's facts end where the page's do"
        );
        debug_assert!(
            self.facts_of(local).iter().all(|f| f.local == local),
            "subject {local}'s slice holds another subject's fact"
        );
        debug_assert!(
            self.facts_of(local).is_sorted_by(|a, b| a.scope < b.scope),
            "subject {local}'s facts are not one per scope in scope order"
        );
    }
    pub fn prefs_of(&self, local: u8) -> &[PrefEntry] {
        self.prefs
            .get(range_of(&self.prefs, local, |f| f.local))
            .unwrap_or_default()
    }
    pub fn prefs_range(&self, local: u8) -> std::ops::Range<usize> {
        range_of(&self.prefs, local, |f| f.local)
    }
    pub fn contacts_of(&self, local: u8) -> &[ContactEntry] {
        self.contacts
            .get(range_of(&self.contacts, local, |f| f.local))
            .unwrap_or_default()
    }
    pub fn contacts_range(&self, local: u8) -> std::ops::Range<usize> {
        range_of(&self.contacts, local, |f| f.local)
    }
    pub fn implied_of(&self, local: u8) -> &[ImpliedEntry] {
        self.implied
            .get(range_of(&self.implied, local, |f| f.local))
            .unwrap_or_default()
    }
    pub fn implied_range(&self, local: u8) -> std::ops::Range<usize> {
        range_of(&self.implied, local, |f| f.local)
    }

    pub fn gates_of(&self, local: u8) -> &[GateRule] {
        self.gates
            .binary_search_by_key(&local, |(l, _)| *l)
            .ok()
            .and_then(|i| self.gates.get(i))
            .map_or(&[], |(_, g)| g)
    }

    /// Sets subject `local`'s gates (none: removes its entry).
    pub fn set_gates(&mut self, local: u8, gates: Vec<GateRule>) {
        let pos = self.gates.binary_search_by_key(&local, |(l, _)| *l);
        match (pos, gates.is_empty()) {
            (Ok(i), true) => {
                self.gates.remove(i);
            }
            (Ok(i), false) => {
                if let Some(slot) = self.gates.get_mut(i) {
                    slot.1 = gates.into();
                }
            }
            (Err(i), false) => self.gates.insert(i, (local, gates.into())),
            (Err(_), true) => {}
        }
    }

    pub fn bytes(&self) -> usize {
        self.rows.len() * std::mem::size_of::<Row>()
            + self.facts.len() * std::mem::size_of::<Fact>()
            + self.prefs.len() * std::mem::size_of::<PrefEntry>()
            + self.contacts.len() * std::mem::size_of::<ContactEntry>()
            + self.implied.len() * std::mem::size_of::<ImpliedEntry>()
            + self.pending.len() * std::mem::size_of::<PendingEntry>()
            + self.gates.len() * std::mem::size_of::<(u8, Arc<[GateRule]>)>()
    }

    /// Whether the latest record of subject `local` on exact scope `scope` is pending.
    pub fn is_pending(&self, local: u8, scope: u32) -> bool {
        self.pending
            .binary_search_by(|e| (e.local, e.scope).cmp(&(local, scope)))
            .is_ok()
    }
}

/// What a subject's latest covering record says, as bitmaps keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum StateKind {
    GivenExpress,
    GivenWritten,
    GivenImplied,
    Withdrawn,
    Refused,
    OptedOut,
    Objected,
    /// A topic's own record, withdrawn, refused or opted out.
    TopicNegative,
}

impl StateKind {
    pub const ALL: [StateKind; 8] = [
        StateKind::GivenExpress,
        StateKind::GivenWritten,
        StateKind::GivenImplied,
        StateKind::Withdrawn,
        StateKind::Refused,
        StateKind::OptedOut,
        StateKind::Objected,
        StateKind::TopicNegative,
    ];

    pub fn of(action: ConsentAction, method: CollectionMethod, topic_level: bool) -> Option<Self> {
        Some(match action {
            ConsentAction::Given => match method {
                CollectionMethod::Written => StateKind::GivenWritten,
                CollectionMethod::ImpliedPurchase | CollectionMethod::ImpliedInquiry => {
                    StateKind::GivenImplied
                }
                _ => StateKind::GivenExpress,
            },
            ConsentAction::Objected => StateKind::Objected,
            ConsentAction::Withdrawn | ConsentAction::Refused | ConsentAction::OptedOut
                if topic_level =>
            {
                StateKind::TopicNegative
            }
            ConsentAction::Withdrawn => StateKind::Withdrawn,
            ConsentAction::Refused => StateKind::Refused,
            ConsentAction::OptedOut => StateKind::OptedOut,
            ConsentAction::Pending => return None,
        })
    }
}

/// What a bitmap holds, for the bitmaps numbered as they appear (the fixed ones are laid out
/// by `Layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SetKey {
    /// A position `Layout` owns.
    Fixed,
    /// Data of an interned category collected at an interned origin.
    Provenance { category: u32, origin: u32 },
}

/// Where data came from, as the index interns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OriginInfo {
    pub point_key: String,
    pub notice_key: String,
    pub version: u32,
    pub point: Option<PointId>,
    pub notice: Option<crate::decision::NoticeId>,
}

/// Interned names shared by every chunk. Grows only; copied on write.
#[derive(Debug, Clone, Default)]
pub(crate) struct Registry {
    pub sets: HashMap<SetKey, usize>,
    pub set_keys: Vec<SetKey>,
    pub categories: HashMap<String, u32>,
    pub category_keys: Vec<String>,
    pub origins: HashMap<(String, String, u32), u32>,
    pub origin_list: Vec<OriginInfo>,
    /// Provenance sets by category.
    pub provenance: HashMap<u32, Vec<(u32, usize)>>,
    /// Bumped whenever something is interned, so prepared queries know to refresh.
    pub generation: u64,
}

impl Registry {
    pub fn set(&self, key: &SetKey) -> Option<usize> {
        self.sets.get(key).copied()
    }
}

/// 65,536 subjects.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chunk {
    pub pages: Vec<Option<Arc<Page>>>,
    pub sets: Vec<Option<Arc<RoaringBitmap>>>,
    /// Subjects gate 4 may hold back on a channel, sorted by (id, channel): what an audience
    /// reads instead of visiting their pages.
    pub watch: Arc<Vec<Watch>>,
}

/// A subject with quiet hours or a frequency cap on a channel, as audiences read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Watch {
    pub id: u32,
    pub channel: ChannelId,
    /// At the cap for every `now` before this (`i64::MIN`: not at the cap; exact for `now` at or
    /// after the newest contact).
    pub capped_until: UnixMillis,
    pub quiet: Option<QuietHours>,
    pub tz: Option<Tz>,
}

impl Chunk {
    pub fn new() -> Chunk {
        Chunk {
            pages: vec![None; PAGES_PER_CHUNK],
            sets: Vec::new(),
            watch: Arc::new(Vec::new()),
        }
    }

    /// Sets or clears the watch entry of (`id`, `channel`).
    pub fn set_watch(&mut self, id: u32, channel: ChannelId, entry: Option<Watch>) {
        let key = (id, channel);
        let pos = self.watch.binary_search_by(|w| (w.id, w.channel).cmp(&key));
        match (pos, entry) {
            (Ok(i), Some(e)) => {
                if self.watch.get(i) != Some(&e)
                    && let Some(slot) = Arc::make_mut(&mut self.watch).get_mut(i)
                {
                    *slot = e;
                }
            }
            (Ok(i), None) => {
                Arc::make_mut(&mut self.watch).remove(i);
            }
            (Err(i), Some(e)) => Arc::make_mut(&mut self.watch).insert(i, e),
            (Err(_), None) => {}
        }
    }

    pub fn set(&self, id: usize) -> Option<&RoaringBitmap> {
        self.sets.get(id)?.as_deref()
    }

    pub fn contains(&self, id: Option<usize>, subject: u32) -> bool {
        id.and_then(|id| self.set(id))
            .is_some_and(|b| b.contains(subject))
    }

    /// Adds or removes `subject`, copying the bitmap only when it changes.
    pub fn put(&mut self, id: usize, subject: u32, present: bool) {
        if self.contains(Some(id), subject) == present {
            return;
        }
        if self.sets.len() <= id {
            self.sets.resize(id + 1, None);
        }
        if let Some(slot) = self.sets.get_mut(id) {
            let bitmap = Arc::make_mut(slot.get_or_insert_with(Default::default));
            if present {
                bitmap.insert(subject);
            } else {
                bitmap.remove(subject);
            }
        }
    }

    pub fn page(&self, p: usize) -> Option<&Page> {
        self.pages.get(p)?.as_deref()
    }

    pub fn page_mut(&mut self, p: usize) -> Option<&mut Page> {
        let slot = self.pages.get_mut(p)?;
        Some(Arc::make_mut(slot.get_or_insert_with(Default::default)))
    }
}

/// Splits a subject id into (chunk, page within chunk, row within page).
pub(crate) fn locate(id: SubjectId) -> (usize, usize, u8) {
    let chunk = (id.0 >> CHUNK_BITS) as usize;
    let page = ((id.0 >> PAGE_BITS) as usize) & (PAGES_PER_CHUNK - 1);
    let local = (id.0 & ((1 << PAGE_BITS) - 1)) as u8;
    (chunk, page, local)
}
