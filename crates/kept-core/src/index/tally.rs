//! What the console's overview counts, read from the index: how many known subjects of each
//! regime stand in each consent state for each purpose and channel (bitmap cardinalities, no
//! subject visited), and how many consent records said yes and no on each recent day.
//!
//! The daily counts are counters the writer bumps as consent records arrive (a start-up build
//! replays the whole ledger, so they cover its history). They are shared by every snapshot
//! rather than copied into each: a chart of days does not need a snapshot's consistency, and
//! the write path must not copy them at every publish.

use super::store::StateKind;
use super::{Layout, Snapshot};
use crate::UnixMillis;
use crate::decision::ScopeId;
use crate::ledger::ConsentAction;
use crate::regime::Regime;
use roaring::RoaringBitmap;
use serde::Serialize;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// How many subjects stand in each state for one scope and regime. A subject is in exactly
/// one: its latest record for the scope (or one covering it) decides, `none` when it has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub given: u64,
    pub withdrawn: u64,
    pub refused: u64,
    pub opted_out: u64,
    pub objected: u64,
    pub none: u64,
}

impl StateCounts {
    pub fn total(&self) -> u64 {
        self.given + self.withdrawn + self.refused + self.opted_out + self.objected + self.none
    }

    fn add(&mut self, kind: StateKind, n: u64) {
        match kind {
            StateKind::GivenExpress | StateKind::GivenWritten | StateKind::GivenImplied => {
                self.given += n;
            }
            StateKind::Withdrawn => self.withdrawn += n,
            StateKind::Refused => self.refused += n,
            StateKind::OptedOut => self.opted_out += n,
            StateKind::Objected => self.objected += n,
            // Topic records speak for topics, which these scopes are not.
            StateKind::TopicNegative => {}
        }
    }
}

/// One purpose (on one channel, or on every channel) by regime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScopeTally {
    pub purpose: String,
    /// `None`: the purpose on every channel.
    pub channel: Option<String>,
    /// The regimes with known subjects, in `Regime::ALL`'s order.
    pub regimes: Vec<(Regime, StateCounts)>,
}

/// The consent state of every known subject, per purpose scope and regime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentTally {
    pub subjects: u64,
    /// Subjects per regime (in `Regime::ALL`'s order, those with any).
    pub by_regime: Vec<(Regime, u64)>,
    pub scopes: Vec<ScopeTally>,
}

impl Snapshot {
    /// The consent state of every known subject per purpose scope (a purpose, or a purpose on
    /// one channel; topics aside) and regime: per 65,536 subjects, one union of place bitmaps per
    /// regime and one intersection count per state bitmap.
    pub fn consent_tally(&self) -> ConsentTally {
        let ctx = &self.ctx;
        let scopes: Vec<ScopeId> = (0..ctx.scope_count())
            .filter_map(|i| {
                let id = ScopeId(u16::try_from(i).ok()?);
                ctx.scope(id)
                    .is_some_and(|s| s.topic.is_none())
                    .then_some(id)
            })
            .collect();
        let regimes: Vec<(Regime, Vec<usize>)> = Regime::ALL
            .into_iter()
            .map(|r| {
                let places = ctx
                    .places()
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.regime == r)
                    .filter_map(|(i, _)| {
                        let id = crate::decision::PlaceId(u8::try_from(i).ok()?);
                        Some(self.layout.place(id))
                    })
                    .collect();
                (r, places)
            })
            .collect();
        let mut people = vec![0u64; regimes.len()];
        let mut counts = vec![vec![StateCounts::default(); regimes.len()]; scopes.len()];
        for chunk in &self.chunks {
            let Some(known) = chunk.set(Layout::KNOWN) else {
                continue;
            };
            for (r, (_, places)) in regimes.iter().enumerate() {
                let mut here = RoaringBitmap::new();
                for set in places.iter().filter_map(|p| chunk.set(*p)) {
                    here |= set;
                }
                here &= known;
                let n = here.len();
                if n == 0 {
                    continue;
                }
                if let Some(p) = people.get_mut(r) {
                    *p += n;
                }
                for (s, scope) in scopes.iter().enumerate() {
                    let Some(c) = counts.get_mut(s).and_then(|row| row.get_mut(r)) else {
                        continue;
                    };
                    let mut stated = 0;
                    for kind in StateKind::ALL {
                        if let Some(set) = chunk.set(self.layout.state(*scope, kind)) {
                            let k = set.intersection_len(&here);
                            stated += k;
                            c.add(kind, k);
                        }
                    }
                    c.none += n.saturating_sub(stated);
                }
            }
        }
        let scopes = scopes
            .iter()
            .zip(counts)
            .filter_map(|(id, row)| {
                let scope = ctx.scope(*id)?;
                let purpose = ctx.purpose(scope.purpose)?.key.clone();
                let channel = scope.channel.map(|c| ctx.channel_key(c).to_owned());
                let regimes = regimes
                    .iter()
                    .zip(&people)
                    .zip(row)
                    .filter(|((_, n), _)| **n > 0)
                    .map(|(((r, _), _), c)| (*r, c))
                    .collect();
                Some(ScopeTally {
                    purpose,
                    channel,
                    regimes,
                })
            })
            .collect();
        let by_regime = regimes
            .iter()
            .zip(&people)
            .filter(|(_, n)| **n > 0)
            .map(|((r, _), n)| (*r, *n))
            .collect();
        ConsentTally {
            subjects: people.iter().sum(),
            by_regime,
            scopes,
        }
    }

    /// Consent records saying yes and no on each of the last `days` days up to `now`'s,
    /// oldest first (at most `SERIES_DAYS`).
    pub fn consent_days(&self, now: UnixMillis, days: usize) -> Vec<DayCount> {
        self.series.days(now, days)
    }
}

/// How many days of consent counts the index keeps.
pub const SERIES_DAYS: usize = 128;

const DAY: i64 = 24 * 60 * 60 * 1000;

/// Consent records on one day (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DayCount {
    /// Days since 1970-01-01.
    pub day: i64,
    /// Records giving consent.
    pub given: u64,
    /// Records withdrawing, refusing, opting out or objecting.
    pub refused: u64,
}

/// Consent records per day for the last `SERIES_DAYS` days, in slots reused as days pass.
#[derive(Debug)]
pub(crate) struct Series {
    day: [AtomicI64; SERIES_DAYS],
    given: [AtomicU64; SERIES_DAYS],
    refused: [AtomicU64; SERIES_DAYS],
}

impl Default for Series {
    fn default() -> Series {
        Series {
            day: std::array::from_fn(|_| AtomicI64::new(i64::MIN)),
            given: std::array::from_fn(|_| AtomicU64::new(0)),
            refused: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn slot(day: i64) -> usize {
    usize::try_from(day.rem_euclid(SERIES_DAYS as i64)).unwrap_or(0)
}

impl Series {
    /// Counts a record of `action` made at `at`. Only the writer calls this, so a slot's reuse
    /// for a newer day needs no lock; a record older than the slot's day is past keeping.
    pub(crate) fn count(&self, action: ConsentAction, at: UnixMillis) {
        let yes = match action {
            ConsentAction::Given => true,
            ConsentAction::Withdrawn
            | ConsentAction::Refused
            | ConsentAction::OptedOut
            | ConsentAction::Objected => false,
            ConsentAction::Pending => return,
        };
        let day = at.div_euclid(DAY);
        let i = slot(day);
        let (Some(d), Some(given), Some(refused)) =
            (self.day.get(i), self.given.get(i), self.refused.get(i))
        else {
            return;
        };
        let held = d.load(Ordering::Acquire);
        if held > day {
            return;
        }
        if held < day {
            given.store(0, Ordering::Relaxed);
            refused.store(0, Ordering::Relaxed);
            d.store(day, Ordering::Release);
        }
        let counter = if yes { given } else { refused };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn days(&self, now: UnixMillis, days: usize) -> Vec<DayCount> {
        let today = now.div_euclid(DAY);
        let days = i64::try_from(days.min(SERIES_DAYS)).unwrap_or(0);
        ((today - days + 1)..=today)
            .map(|day| {
                let i = slot(day);
                let held = self.day.get(i).map(|d| d.load(Ordering::Acquire));
                let (given, refused) = if held == Some(day) {
                    (
                        self.given.get(i).map_or(0, |c| c.load(Ordering::Relaxed)),
                        self.refused.get(i).map_or(0, |c| c.load(Ordering::Relaxed)),
                    )
                } else {
                    (0, 0)
                };
                DayCount {
                    day,
                    given,
                    refused,
                }
            })
            .collect()
    }
}
