//! A notice's content as the database keeps it beside its hash, so that two versions can be
//! compared long after the manifest moved on: one canonical JSON text with the titles and texts
//! per language (in key order) and the categories, purposes and channels, as the manifest
//! stated them.
//!
//! INVARIANT: fields are only ever added, with a default, so every content ever recorded still
//! reads back (`recorded_contents_read_back` pins one).

use super::model::{Notice, NoticeText};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The stored form (version 1). Field order is the serialisation order.
#[derive(Debug, Serialize, Deserialize)]
struct Content {
    locales: BTreeMap<String, NoticeText>,
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    purposes: Vec<String>,
    #[serde(default)]
    channels: Vec<String>,
}

impl Notice {
    /// The notice's content as canonical JSON (titles and texts per language, categories,
    /// purposes, channels); the id, version and hash are kept beside it.
    pub fn content_json(&self) -> String {
        let content = Content {
            locales: self.locales.clone(),
            categories: self.categories.clone(),
            purposes: self.purposes.clone(),
            channels: self.channels.clone(),
        };
        // Strings, lists and a map with string keys always serialise.
        serde_json::to_string(&content).unwrap_or_default()
    }

    /// The notice a recorded content describes, under the version and hash recorded with it;
    /// `None` when the text is not such a content.
    pub fn from_content_json(version: u32, hash: &str, json: &str) -> Option<Notice> {
        let content: Content = serde_json::from_str(json).ok()?;
        Some(Notice {
            version,
            locales: content.locales,
            categories: content.categories,
            purposes: content.purposes,
            channels: content.channels,
            hash: hash.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_contents_read_back() {
        let json = r#"{"locales":{"de":{"title":"Prämien","text":"Wir nutzen…\nZeile 2"},"en":{"title":"Rewards","text":"We use…"}},"categories":["user.contact.phone_number"],"purposes":["loyalty.rewards"],"channels":["sms"]}"#;
        let notice = Notice::from_content_json(3, "ab", json).unwrap();
        assert_eq!(notice.version, 3);
        assert_eq!(notice.hash, "ab");
        assert_eq!(notice.locales["de"].text, "Wir nutzen…\nZeile 2");
        assert_eq!(notice.purposes, ["loyalty.rewards"]);
        // Written back the same, byte for byte: the encoding is canonical.
        assert_eq!(notice.content_json(), json);
        assert!(Notice::from_content_json(1, "ab", "not json").is_none());
    }
}
