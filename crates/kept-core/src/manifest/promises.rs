//! Which notice covers a purpose on a channel: the one rule the banner, collection and the
//! preference center share, so the notice a customer is shown is the notice the ledger names.

use super::keys::is_within;
use super::model::{Manifest, Notice};

/// How closely `notice` promises `purpose` on `channel` (when given): `None` when it does not,
/// else the length of the purpose key it lists (the purpose itself beats a parent branch).
/// Only the purpose itself counts, never a purpose it is `compatible_with`: consent is given to
/// what the notice says.
fn closeness(notice: &Notice, purpose: &str, channel: Option<&str>) -> Option<usize> {
    if !channel.is_none_or(|c| notice.channels.iter().any(|nc| nc == c)) {
        return None;
    }
    notice
        .purposes
        .iter()
        .filter(|p| is_within(purpose, p))
        .map(String::len)
        .max()
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
