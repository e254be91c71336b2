//! How keys relate to each other: the fideslang hierarchy (`user.contact.email` is inside
//! `user.contact`) and rule patterns. What a notice promises is `promises`' question.

use super::model::Manifest;
use crate::fideslang;

/// Channels the rulebook knows. A manifest may declare others, but decisions on them fail
/// closed because no law is mapped to them.
pub const KNOWN_CHANNELS: &[&str] = &["email", "sms", "push", "phone", "postal", "in_app", "web"];

/// Whether `key` is `branch` itself or inside it: `user.contact.email` is within `user.contact`,
/// `user.contactless` is not.
pub fn is_within(key: &str, branch: &str) -> bool {
    key.strip_prefix(branch)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Whether a rule pattern covers a key. A pattern covers its own key and everything inside it
/// (a rule about `user.health_and_medical` is about genetic data too); `marketing.*` says the
/// same explicitly, and `*` covers every key.
pub fn covers(pattern: &str, key: &str) -> bool {
    let branch = pattern.strip_suffix(".*").unwrap_or(pattern);
    branch == "*" || is_within(key, branch)
}

impl Manifest {
    /// Whether a category key is known: a fideslang key or one the manifest declares.
    pub fn knows_category(&self, key: &str) -> bool {
        fideslang::data_category(key).is_some() || self.categories.contains_key(key)
    }

    /// Whether a category is sensitive: declared so by the manifest, or inside a sensitive
    /// fideslang branch.
    pub fn is_sensitive_category(&self, key: &str) -> bool {
        self.categories
            .iter()
            .any(|(declared, c)| c.sensitive && is_within(key, declared))
            || fideslang::is_sensitive_category(key)
    }
}

/// One segment of a key path, quoted as TOML would when it is not a bare key.
pub(crate) fn segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        let escaped = key.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    }
}

/// `section.key`, e.g. `purposes."marketing.communications"`.
pub(crate) fn entry_path(section: &str, key: &str) -> String {
    format!("{section}.{}", segment(key))
}

/// `base.name`.
pub(crate) fn child_path(base: &str, name: &str) -> String {
    format!("{base}.{}", segment(name))
}

/// `base[index]`.
pub(crate) fn item_path(base: &str, index: usize) -> String {
    format!("{base}[{index}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_respects_segment_boundaries() {
        assert!(is_within("user.contact.email", "user.contact"));
        assert!(is_within("user.contact", "user.contact"));
        assert!(!is_within("user.contactless", "user.contact"));
        assert!(!is_within("user", "user.contact"));
    }

    #[test]
    fn patterns_cover_branches() {
        assert!(covers("marketing.*", "marketing.communications"));
        assert!(covers("marketing.*", "marketing"));
        assert!(!covers("marketing.*", "marketingfoo"));
        assert!(covers(
            "user.health_and_medical",
            "user.health_and_medical.genetic"
        ));
        assert!(covers("*", "anything.at.all"));
        assert!(!covers("personalize.*", "marketing.communications"));
    }

    #[test]
    fn segments_are_quoted_only_when_needed() {
        assert_eq!(segment("sms_blaster"), "sms_blaster");
        assert_eq!(
            entry_path("purposes", "marketing.communications"),
            "purposes.\"marketing.communications\""
        );
        assert_eq!(segment("a\"b"), "\"a\\\"b\"");
    }
}
