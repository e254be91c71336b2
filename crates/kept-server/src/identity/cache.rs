//! What identity resolution remembers between requests: who holds each identifier, merges,
//! subjects' facts, data keys and verified identifiers, so that a known visitor's events need
//! no identity query at all.

use kept_core::SubjectId;
use kept_core::identity::{DataKey, IdentifierCounts, IdentifierHash, OwnerFacts};
use rustc_hash::FxHashMap;

/// Entries the cache holds before it starts over.
const CACHE_MAX: usize = 1_000_000;
/// What resolution knows of a subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub identified: bool,
    /// It holds a verified email address or phone number.
    pub verified: bool,
    pub counts: IdentifierCounts,
    pub country: Option<String>,
    pub region: Option<String>,
    pub time_zone: Option<String>,
}

impl Facts {
    pub fn owner(&self) -> OwnerFacts {
        OwnerFacts {
            identified: self.identified,
            verified: self.verified,
            counts: self.counts,
        }
    }

    /// A known customer (see `OwnerFacts::known`).
    pub fn known(&self) -> bool {
        self.owner().known()
    }
}

/// Identifiers, subjects and data keys seen recently, so that a known visitor's events need
/// no identity query at all.
#[derive(Debug, Default)]
pub struct IdentityCache {
    pub(crate) holders: FxHashMap<IdentifierHash, SubjectId>,
    /// Subjects merged into another: lookups go on to the survivor.
    pub(crate) merged: FxHashMap<SubjectId, SubjectId>,
    pub(crate) facts: FxHashMap<SubjectId, Facts>,
    pub(crate) keys: FxHashMap<SubjectId, DataKey>,
    /// Identifiers known to be verified: a server key's or a token's message naming only
    /// these needs no round to verify them.
    pub(crate) verified: rustc_hash::FxHashSet<IdentifierHash>,
    /// Subjects another server erased or merged away: identifiers held by them are looked up
    /// in the store again.
    pub(crate) gone: rustc_hash::FxHashSet<SubjectId>,
}

impl IdentityCache {
    pub(crate) fn holder(&self, hash: &IdentifierHash) -> Option<SubjectId> {
        let mut at = *self.holders.get(hash)?;
        // Merges never form a cycle; the bound only guards against a corrupt cache.
        for _ in 0..32 {
            match self.merged.get(&at) {
                Some(next) => at = *next,
                None => return (!self.gone.contains(&at)).then_some(at),
            }
        }
        None
    }

    /// After another server changed `subjects` (or, with `gone`, erased or merged them away):
    /// what this cache knew of them is read from the store again on next use.
    pub fn invalidate(&mut self, subjects: &[SubjectId], gone: bool) {
        for s in subjects {
            self.facts.remove(s);
            if gone {
                self.gone.insert(*s);
            }
        }
    }

    pub(crate) fn make_room(&mut self) {
        if self.holders.len() + self.facts.len() + self.keys.len() + self.verified.len() > CACHE_MAX
        {
            *self = IdentityCache::default();
        }
    }

    pub(crate) fn forget(&mut self, hashes: &[IdentifierHash]) {
        for h in hashes {
            self.holders.remove(h);
        }
    }
}
