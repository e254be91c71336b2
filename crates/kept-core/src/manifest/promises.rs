//! What a notice promises, asked in one place: which notice covers a purpose on a channel (the
//! one rule the banner, collection and the preference center share, so the notice a customer is
//! shown is the notice the ledger names), what a consent record may name when a client names a
//! notice itself, and whether data collected under a notice may serve a use (the rule the
//! decisions and `kept lint` share).

use super::keys::is_within;
use super::model::{Manifest, Notice};
use crate::ledger::{ConsentAction, ConsentRecord, NoticeRef};

/// How closely `notice` promises `purpose` on `channel` (when given): `None` when it does not,
/// else the length of the purpose key it lists (the purpose itself beats a parent branch).
/// Only the purpose itself counts, never a purpose it is `compatible_with`: consent is given to
/// what the notice says.
fn closeness(notice: &Notice, purpose: &str, channel: Option<&str>) -> Option<usize> {
    if !on_channel(notice, channel) {
        return None;
    }
    notice
        .purposes
        .iter()
        .filter(|p| is_within(purpose, p))
        .map(String::len)
        .max()
}

/// Whether `notice` names `channel` (when given).
fn on_channel(notice: &Notice, channel: Option<&str>) -> bool {
    channel.is_none_or(|c| notice.channels.iter().any(|nc| nc == c))
}

/// Whether `notice` promises `purpose` (listed itself, or a parent purpose is) on `channel`
/// (when given).
pub fn promises(notice: &Notice, purpose: &str, channel: Option<&str>) -> bool {
    closeness(notice, purpose, channel).is_some()
}

/// The notice shown for `purpose` on `channel` (none: any channel), for `topic` when given.
///
/// The rule, in order:
/// 1. a topic that names its notice (`notice = "…"` under `[topics.x]`) is shown with that
///    notice, and only if it promises the purpose (and channel); otherwise with none;
/// 2. else the notice that lists the purpose itself;
/// 3. else the notice that lists its nearest parent purpose;
///
/// ties going to the first notice id in order. `kept lint` warns where a tie leaves the choice
/// to the order of ids.
pub fn notice_for<'m>(
    manifest: &'m Manifest,
    purpose: &str,
    channel: Option<&str>,
    topic: Option<&str>,
) -> Option<(&'m String, &'m Notice)> {
    if let Some(named) = topic
        .and_then(|t| manifest.topics.get(t))
        .and_then(|t| t.notice.as_ref())
    {
        return manifest
            .notices
            .get_key_value(named)
            .filter(|(_, n)| promises(n, purpose, channel));
    }
    let mut best: Option<(usize, (&'m String, &'m Notice))> = None;
    for (id, n) in &manifest.notices {
        if let Some(c) = closeness(n, purpose, channel)
            && best.is_none_or(|(b, _)| c > b)
        {
            best = Some((c, (id, n)));
        }
    }
    best.map(|(_, found)| found)
}

/// The notices tied for `purpose` on `channel` under rule 2 or 3 of [`notice_for`] (no topic
/// naming one): more than one means the choice falls to the order of ids.
pub fn tied_notices<'m>(manifest: &'m Manifest, purpose: &str, channel: &str) -> Vec<&'m String> {
    let scored: Vec<(usize, &String)> = manifest
        .notices
        .iter()
        .filter_map(|(id, n)| closeness(n, purpose, Some(channel)).map(|c| (c, id)))
        .collect();
    let Some(top) = scored.iter().map(|(c, _)| *c).max() else {
        return Vec::new();
    };
    scored
        .into_iter()
        .filter(|(c, _)| *c == top)
        .map(|(_, id)| id)
        .collect()
}

/// Whether `notice` promised that data of `category` may be used for `purpose` (and, when
/// given, through `channel`): a use of data collected under it. A notice listing a branch
/// (`user.contact`, `essential.service`) promises everything inside it; unlike a consent
/// ([`promises`]), a purpose may also use data promised for the purposes it declares itself
/// `compatible_with`.
pub fn promises_use(
    manifest: &Manifest,
    notice: &Notice,
    category: &str,
    purpose: &str,
    channel: Option<&str>,
) -> bool {
    let covers_category = notice.categories.iter().any(|c| is_within(category, c));
    let compatible = manifest
        .purposes
        .get(purpose)
        .map(|p| p.compatible_with.as_slice())
        .unwrap_or_default();
    let covers_purpose = notice.purposes.iter().any(|promised| {
        is_within(purpose, promised) || compatible.iter().any(|c| is_within(c, promised))
    });
    covers_category && covers_purpose && on_channel(notice, channel)
}

/// What a consent record may name as its notice, given the notice the client named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// The client named a notice that promises the purpose, at the manifest's version.
    Promising(NoticeRef),
    /// The client named a notice that does not promise the purpose (or is unknown, or at
    /// another version than the manifest's): the record names none and carries
    /// [`UNPROMISED_MARK`].
    Unpromised,
    /// The client named none (a server library): the record names none.
    Nothing,
}

/// The mark a record's `evidence.reference` starts with when the client named a notice that
/// does not promise the record's purpose. Such a record is kept (it is what was said) but a
/// "yes" in it counts for nothing ([`counts`]).
pub const UNPROMISED_MARK: &str = "notice-not-promising ";

/// Judges the notice a client named for a choice about `purpose` (`version` when it said
/// which one it showed). Only the named notice is ever considered: Kept never supplies one the
/// client did not name.
pub fn named_notice(
    manifest: &Manifest,
    purpose: &str,
    named: Option<&str>,
    version: Option<u32>,
) -> Named {
    let Some(id) = named else {
        return Named::Nothing;
    };
    match manifest.notices.get(id) {
        Some(n) if promises(n, purpose, None) && version.is_none_or(|v| v == n.version) => {
            Named::Promising(NoticeRef {
                id: id.to_owned(),
                version: n.version,
                hash: n.hash.clone(),
            })
        }
        _ => Named::Unpromised,
    }
}

/// The evidence reference of a record whose named notice did not promise its purpose: the mark,
/// the notice named (when the manifest has it), then the original reference.
pub fn mark_unpromised(manifest: &Manifest, named: &str, reference: Option<&str>) -> String {
    let shown = if manifest.notices.contains_key(named) {
        named
    } else {
        "(unknown)"
    };
    match reference {
        Some(r) => format!("{UNPROMISED_MARK}{shown}; {r}"),
        None => format!("{UNPROMISED_MARK}{shown}"),
    }
}

/// Whether a record counts toward where the subject stands: every record does, except a yes
/// given under a notice that did not promise it (fail closed: such consent allows nothing).
/// The mark is looked for anywhere in the reference, so a record carried to another subject
/// (whose reference wraps the original) stays marked; a client that puts the mark in its own
/// message id only takes its own yes away.
pub fn counts(record: &ConsentRecord) -> bool {
    !(record.action == ConsentAction::Given
        && record
            .evidence
            .reference
            .as_deref()
            .is_some_and(|r| r.contains(UNPROMISED_MARK)))
}
