//! A notice's content hash: what a consent record cites to prove which exact text was shown.
//!
//! INVARIANT: the encoding never changes for a given tag; a new encoding gets a new tag, or
//! every recorded hash would stop matching its notice. Not checkable at run time (a changed
//! encoding is self-consistent): the test `notice_hashes_follow_the_content`
//! (`tests/it/manifest.rs`) pins one notice's hash.

use super::model::{Notice, NoticeText};
use std::collections::{BTreeMap, BTreeSet};

const TAG: &[u8] = b"kept.notice.v1";

impl Notice {
    /// Lowercase hex BLAKE3 of the notice's canonical encoding: id, version, every locale (in
    /// key order) with its title and text, and the categories, purposes and channels promised.
    ///
    /// The lists are hashed as sets (sorted, duplicates dropped) because their order in the
    /// file is presentation, not promise; line endings in texts are normalised to `\n` so a
    /// checkout on another platform does not look like a changed text.
    pub fn compute_hash(
        id: &str,
        version: u32,
        locales: &BTreeMap<String, NoticeText>,
        categories: &[String],
        purposes: &[String],
        channels: &[String],
    ) -> String {
        let mut hasher = blake3::Hasher::new();
        put_bytes(&mut hasher, TAG);
        put_bytes(&mut hasher, id.as_bytes());
        hasher.update(&version.to_le_bytes());
        put_len(&mut hasher, locales.len());
        for (locale, text) in locales {
            put_bytes(&mut hasher, locale.as_bytes());
            put_bytes(&mut hasher, normalise(&text.title).as_bytes());
            put_bytes(&mut hasher, normalise(&text.text).as_bytes());
        }
        for list in [categories, purposes, channels] {
            let set: BTreeSet<&str> = list.iter().map(String::as_str).collect();
            put_len(&mut hasher, set.len());
            for item in set {
                put_bytes(&mut hasher, item.as_bytes());
            }
        }
        hasher.finalize().to_hex().to_string()
    }

    /// The hash of this notice as it stands, under `id` (notices are keyed by id in the
    /// manifest, so the id is not a field).
    pub fn content_hash(&self, id: &str) -> String {
        Notice::compute_hash(
            id,
            self.version,
            &self.locales,
            &self.categories,
            &self.purposes,
            &self.channels,
        )
    }
}

fn normalise(text: &str) -> String {
    text.replace("\r\n", "\n")
}

fn put_len(hasher: &mut blake3::Hasher, len: usize) {
    hasher.update(&(len as u64).to_le_bytes());
}

/// Length-prefixed so that no two different field sequences encode to the same bytes.
fn put_bytes(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    put_len(hasher, bytes.len());
    hasher.update(bytes);
}
