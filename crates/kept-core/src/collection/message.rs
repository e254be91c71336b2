//! The Segment tracking message (identify, track, page, screen, group, alias), checked field by
//! field so that a rejection names the JSON path of the bad field (`batch[3].event`).

use crate::UnixMillis;
use serde_json::{Map, Value};
use std::fmt;

/// The six Segment calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl MessageKind {
    pub const ALL: [MessageKind; 6] = [
        MessageKind::Identify,
        MessageKind::Track,
        MessageKind::Page,
        MessageKind::Screen,
        MessageKind::Group,
        MessageKind::Alias,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Identify => "identify",
            MessageKind::Track => "track",
            MessageKind::Page => "page",
            MessageKind::Screen => "screen",
            MessageKind::Group => "group",
            MessageKind::Alias => "alias",
        }
    }

    pub fn parse(s: &str) -> Option<MessageKind> {
        MessageKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field that is missing or malformed, by its JSON path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    /// `userId`, `context.consent.categoryPreferences.Advertising`, `batch[3].event`.
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// `base.name`, or `name` at the top.
pub fn field_path(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{base}.{name}")
    }
}

/// Longest `messageId` accepted.
pub const MAX_MESSAGE_ID_LEN: usize = 200;
/// Longest event or page name accepted.
pub const MAX_NAME_LEN: usize = 1000;

/// One checked message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: MessageKind,
    pub message_id: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// `alias`: the id being merged into `user_id`.
    pub previous_id: Option<String>,
    /// `group`: the account or company id.
    pub group_id: Option<String>,
    /// `track`: the event name; `page`/`screen`: the page name.
    pub name: Option<String>,
    /// When the event happened by the client's clock (`originalTimestamp`, else `timestamp`).
    pub timestamp: Option<UnixMillis>,
    /// When the client sent it, by the same clock, to correct that clock's skew.
    pub sent_at: Option<UnixMillis>,
    pub traits: Map<String, Value>,
    pub properties: Map<String, Value>,
    pub context: Map<String, Value>,
    pub write_key: Option<String>,
}

impl Message {
    /// The event's time on the server's clock: the client's timestamp moved by the difference
    /// between its `sentAt` and our `received_at` (how Segment corrects a wrong device clock).
    pub fn event_time(&self, received_at: UnixMillis) -> UnixMillis {
        match (self.timestamp, self.sent_at) {
            (Some(ts), Some(sent)) => received_at.saturating_sub(sent.saturating_sub(ts)),
            (Some(ts), None) => ts,
            (None, _) => received_at,
        }
    }

    /// A string at a path inside `context` (`["kept", "collection_point"]`).
    pub fn context_str(&self, path: &[&str]) -> Option<&str> {
        let (last, parents) = path.split_last()?;
        let mut map = &self.context;
        for p in parents {
            map = map.get(*p)?.as_object()?;
        }
        map.get(*last)?.as_str().filter(|s| !s.trim().is_empty())
    }
}

/// Checks one message object. `kind` is the endpoint's call; `None` (a batch item) reads it
/// from `type`. `base` prefixes every path in errors (`batch[3]`).
pub fn parse_message(
    mut obj: Map<String, Value>,
    kind: Option<MessageKind>,
    base: &str,
) -> Result<Message, FieldError> {
    let at = |name: &str| field_path(base, name);
    let kind = match kind {
        Some(k) => k,
        None => match obj.get("type") {
            Some(Value::String(t)) => MessageKind::parse(t).ok_or_else(|| {
                FieldError::new(
                    at("type"),
                    format!(
                        "unknown message type `{t}`; expected `identify`, `track`, `page`, `screen`, `group` or `alias`"
                    ),
                )
            })?,
            Some(_) => return Err(FieldError::new(at("type"), "`type` must be a string")),
            None => return Err(FieldError::new(at("type"), "`type` is required")),
        },
    };
    let obj = &mut obj;
    let user_id = id_field(obj, "userId", base)?;
    let anonymous_id = id_field(obj, "anonymousId", base)?;
    let message_id = match obj.get("messageId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_MESSAGE_ID_LEN => {
            Some(s.trim().to_owned())
        }
        Some(Value::String(_)) => {
            return Err(FieldError::new(
                at("messageId"),
                format!("`messageId` is longer than {MAX_MESSAGE_ID_LEN} characters"),
            ));
        }
        Some(_) => {
            return Err(FieldError::new(
                at("messageId"),
                "`messageId` must be a string",
            ));
        }
    };
    let timestamp = match time_field(obj, "originalTimestamp", base)? {
        Some(t) => Some(t),
        None => time_field(obj, "timestamp", base)?,
    };
    let sent_at = time_field(obj, "sentAt", base)?;
    let traits = object_field(obj, "traits", base)?;
    let properties = object_field(obj, "properties", base)?;
    let context = object_field(obj, "context", base)?;
    // Checked for shape only: Kept decides where events go from consent, not from
    // `integrations`.
    object_field(obj, "integrations", base)?;
    let write_key = match obj.get("writeKey") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    };

    let mut message = Message {
        kind,
        message_id,
        user_id,
        anonymous_id,
        previous_id: None,
        group_id: None,
        name: None,
        timestamp,
        sent_at,
        traits,
        properties,
        context,
        write_key,
    };
    match kind {
        MessageKind::Track => {
            message.name = Some(name_field(obj, "event", base)?.ok_or_else(|| {
                FieldError::new(at("event"), "`event` is required for a track call")
            })?);
        }
        MessageKind::Page | MessageKind::Screen => message.name = name_field(obj, "name", base)?,
        MessageKind::Group => {
            message.group_id = Some(id_field(obj, "groupId", base)?.ok_or_else(|| {
                FieldError::new(at("groupId"), "`groupId` is required for a group call")
            })?);
        }
        MessageKind::Alias => {
            message.previous_id = Some(id_field(obj, "previousId", base)?.ok_or_else(|| {
                FieldError::new(
                    at("previousId"),
                    "`previousId` is required for an alias call",
                )
            })?);
            if message.user_id.is_none() {
                return Err(FieldError::new(
                    at("userId"),
                    "`userId` is required for an alias call",
                ));
            }
        }
        MessageKind::Identify => {}
    }
    if kind != MessageKind::Alias && message.user_id.is_none() && message.anonymous_id.is_none() {
        return Err(FieldError::new(
            at("userId"),
            format!("either `userId` or `anonymousId` is required for a {kind} call"),
        ));
    }
    Ok(message)
}

/// An id: a non-empty string, or a number (some clients send numeric user ids).
fn id_field(
    obj: &Map<String, Value>,
    name: &str,
    base: &str,
) -> Result<Option<String>, FieldError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else if s.chars().count() > crate::identity::MAX_IDENTIFIER_LEN {
                Err(FieldError::new(
                    field_path(base, name),
                    format!(
                        "`{name}` is longer than {} characters",
                        crate::identity::MAX_IDENTIFIER_LEN
                    ),
                ))
            } else {
                Ok(Some(s.to_owned()))
            }
        }
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(FieldError::new(
            field_path(base, name),
            format!("`{name}` must be a string"),
        )),
    }
}

fn name_field(
    obj: &Map<String, Value>,
    name: &str,
    base: &str,
) -> Result<Option<String>, FieldError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= MAX_NAME_LEN => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(FieldError::new(
            field_path(base, name),
            format!("`{name}` is longer than {MAX_NAME_LEN} characters"),
        )),
        Some(_) => Err(FieldError::new(
            field_path(base, name),
            format!("`{name}` must be a string"),
        )),
    }
}

/// Takes an object field out of the message (no copy: messages are large, and many).
fn object_field(
    obj: &mut Map<String, Value>,
    name: &str,
    base: &str,
) -> Result<Map<String, Value>, FieldError> {
    match obj.remove(name) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(FieldError::new(
            field_path(base, name),
            format!("`{name}` must be an object"),
        )),
    }
}

fn time_field(
    obj: &Map<String, Value>,
    name: &str,
    base: &str,
) -> Result<Option<UnixMillis>, FieldError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_time(s).map(Some).ok_or_else(|| {
            FieldError::new(
                field_path(base, name),
                format!("`{s}` is not an ISO 8601 time such as `2026-05-28T20:26:40.000Z`"),
            )
        }),
        Some(_) => Err(FieldError::new(
            field_path(base, name),
            format!("`{name}` must be an ISO 8601 string"),
        )),
    }
}

/// An RFC 3339 / ISO 8601 time with an offset; a time without one is read as UTC.
pub fn parse_time(s: &str) -> Option<UnixMillis> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_track_call_needs_an_event_and_an_id() {
        let err =
            parse_message(obj(json!({"userId": "u1"})), Some(MessageKind::Track), "").unwrap_err();
        assert_eq!(err.path, "event");
        let err = parse_message(
            obj(json!({"event": "Bought"})),
            Some(MessageKind::Track),
            "",
        )
        .unwrap_err();
        assert_eq!(err.path, "userId");
        let m = parse_message(
            obj(json!({"event": "Bought", "anonymousId": 42, "properties": {"total": 3}})),
            Some(MessageKind::Track),
            "",
        )
        .unwrap();
        assert_eq!(m.anonymous_id.as_deref(), Some("42"));
        assert_eq!(m.name.as_deref(), Some("Bought"));
    }

    #[test]
    fn batch_items_name_their_path_and_type() {
        let err = parse_message(obj(json!({"userId": "u"})), None, "batch[3]").unwrap_err();
        assert_eq!(err.path, "batch[3].type");
        let err = parse_message(
            obj(json!({"type": "track", "userId": "u", "event": "x", "context": 5})),
            None,
            "batch[1]",
        )
        .unwrap_err();
        assert_eq!(err.path, "batch[1].context");
        let err = parse_message(
            obj(json!({"type": "alias", "userId": "u"})),
            None,
            "batch[0]",
        )
        .unwrap_err();
        assert_eq!(err.path, "batch[0].previousId");
        let err = parse_message(
            obj(json!({"type": "identify", "userId": "u", "timestamp": "yesterday"})),
            None,
            "",
        )
        .unwrap_err();
        assert_eq!(err.path, "timestamp");
    }

    #[test]
    fn the_client_clock_is_corrected_by_sent_at() {
        let m = parse_message(
            obj(json!({
                "userId": "u",
                "timestamp": "2026-05-28T10:00:00Z",
                "sentAt": "2026-05-28T10:00:05Z"
            })),
            Some(MessageKind::Identify),
            "",
        )
        .unwrap();
        let received = parse_time("2026-05-28T12:00:05Z").unwrap();
        assert_eq!(
            m.event_time(received),
            parse_time("2026-05-28T12:00:00Z").unwrap()
        );
        assert_eq!(
            parse_time("2026-05-28T10:00:00.250+02:00"),
            parse_time("2026-05-28T08:00:00.250Z")
        );
    }
}
