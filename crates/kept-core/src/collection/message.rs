//! The Segment tracking message (identify, track, page, screen, group, alias), checked field by
//! field so that a rejection names the JSON path of the bad field (`batch[3].event`).

use crate::UnixMillis;
use serde::Deserialize;
use serde_json::value::RawValue;
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
#[derive(Debug, Clone)]
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
    /// The `properties` object exactly as sent (`{}` when absent): stored as it came.
    pub properties: Box<RawValue>,
    pub context: Context,
    pub write_key: Option<String>,
    /// The top-level fields Kept does not read (a page's `category`, `channel`, `version`,
    /// `integrations`, ...), as sent, in order: stored with the event, never dropped.
    pub extra: Context,
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
    pub fn context_str(&self, path: &[&str]) -> Option<String> {
        self.context.text(path)
    }

    /// What the message says about the person: an identify call's `traits` over its
    /// `context.traits` (RudderStack's libraries send an identify's traits only there), and
    /// for the other calls `context.traits` alone, which Segment's spec allows on any call as
    /// hints of who the person is. A `group` call's own `traits` describe the group and an
    /// `alias` call names only the two ids it merges, so neither adds its own.
    pub fn person_traits(&self) -> Map<String, Value> {
        match self.kind {
            MessageKind::Alias => Map::new(),
            MessageKind::Identify => {
                let mut out = self.context.traits();
                out.extend(self.traits.iter().map(|(k, v)| (k.clone(), v.clone())));
                out
            }
            _ => self.context.traits(),
        }
    }
}

/// An event's `context`, parsed one level deep: each entry's value stays the client's JSON
/// text, read only where Kept needs it. Events are many and their contexts large, so storing
/// one costs no tree of values.
#[derive(Debug, Clone, Default)]
pub struct Context {
    entries: Vec<(String, Box<RawValue>)>,
}

impl PartialEq for Context {
    fn eq(&self, other: &Context) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((a, x), (b, y))| a == b && x.get() == y.get())
    }
}

impl Context {
    /// Reads a JSON object; `None` for anything else.
    pub fn parse(json: &str) -> Option<Context> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Vec<(String, Box<RawValue>)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, Box<RawValue>)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    // A repeated key: the last one wins, as in a parsed object.
                    out.retain(|(seen, _)| *seen != k);
                    out.push((k, v));
                }
                Ok(out)
            }
        }
        let mut de = serde_json::Deserializer::from_str(json);
        let entries = serde::Deserializer::deserialize_map(&mut de, Entries).ok()?;
        de.end().ok()?;
        Some(Context { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    /// One entry, parsed.
    pub fn value(&self, key: &str) -> Option<Value> {
        let (_, raw) = self.entries.iter().find(|(k, _)| k == key)?;
        serde_json::from_str(raw.get()).ok()
    }

    /// A non-blank string at `path` (`["kept", "collection_point"]`).
    pub fn text(&self, path: &[&str]) -> Option<String> {
        let (first, rest) = path.split_first()?;
        let (_, raw) = self.entries.iter().find(|(k, _)| k == first)?;
        let found = if rest.is_empty() {
            serde_json::from_str::<String>(raw.get()).ok()?
        } else {
            let mut v: Value = serde_json::from_str(raw.get()).ok()?;
            for p in rest {
                v = v.as_object_mut()?.remove(*p)?;
            }
            match v {
                Value::String(s) => s,
                _ => return None,
            }
        };
        (!found.trim().is_empty()).then_some(found)
    }

    /// `traits` inside the context; empty when absent or not an object, since a context is the
    /// client's free-form JSON and a stray value there is no reason to reject the event.
    pub fn traits(&self) -> Map<String, Value> {
        match self.value("traits") {
            Some(Value::Object(traits)) => traits,
            _ => Map::new(),
        }
    }

    /// The entries named in `keys`, parsed (for the checks that read a few of them).
    pub fn subset(&self, keys: &[&str]) -> Map<String, Value> {
        keys.iter()
            .filter_map(|k| self.value(k).map(|v| ((*k).to_owned(), v)))
            .collect()
    }

    /// Every entry, parsed.
    pub fn to_map(&self) -> Map<String, Value> {
        self.entries
            .iter()
            .filter_map(|(k, raw)| serde_json::from_str(raw.get()).ok().map(|v| (k.clone(), v)))
            .collect()
    }

    pub fn remove(&mut self, key: &str) {
        self.entries.retain(|(k, _)| k != key);
    }

    /// Keeps the entries whose key passes `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.entries.retain(|(k, _)| keep(k));
    }

    /// Sets `key` to the string `value`.
    pub fn set_text(&mut self, key: &str, value: &str) {
        self.remove(key);
        if let Ok(raw) = serde_json::value::to_raw_value(value) {
            self.entries.push((key.to_owned(), raw));
        }
    }

    /// Replaces the email and phone in `traits` with a marker naming the identifier: they are
    /// kept sealed with the subject's identifiers, never in plain text in a stored event.
    pub fn seal_identifier_traits(&mut self) {
        let mut traits = self.traits();
        let mut sealed = false;
        for (key, kind) in crate::collection::profile::IDENTIFIER_TRAITS {
            if let Some(v) = traits.get_mut(key) {
                *v = serde_json::json!({ "sealed_identifier": kind.as_str() });
                sealed = true;
            }
        }
        if !sealed {
            return;
        }
        if let Ok(raw) = serde_json::value::to_raw_value(&traits) {
            self.remove("traits");
            self.entries.push(("traits".to_owned(), raw));
        }
    }

    /// Adds the entries of `shared` this context does not have (a batch's shared context).
    pub fn fill_from(&mut self, shared: &Context) {
        for (k, v) in &shared.entries {
            if !self.contains(k) {
                self.entries.push((k.clone(), v.clone()));
            }
        }
    }

    /// The context as JSON text.
    pub fn to_json(&self) -> String {
        let size: usize = self
            .entries
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let mut out = String::with_capacity(size + 2);
        out.push('{');
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).unwrap_or_else(|_| "\"\"".to_owned()));
            out.push(':');
            out.push_str(v.get());
        }
        out.push('}');
        out
    }
}

/// The top-level fields Kept reads (`writeKey` is a secret and is never stored); every other
/// one goes to [`Message::extra`].
pub const READ_FIELDS: [&str; 15] = [
    "type",
    "userId",
    "anonymousId",
    "messageId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "event",
    "name",
    "groupId",
    "previousId",
    "writeKey",
    "traits",
    "properties",
    "context",
];

/// A message as it arrives: the fields Kept reads, with `properties` and `context` kept as
/// text. The others are read one level deep into [`Message::extra`].
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type")]
    kind: Option<Value>,
    #[serde(rename = "userId")]
    user_id: Option<Value>,
    #[serde(rename = "anonymousId")]
    anonymous_id: Option<Value>,
    #[serde(rename = "messageId")]
    message_id: Option<Value>,
    timestamp: Option<Value>,
    #[serde(rename = "originalTimestamp")]
    original_timestamp: Option<Value>,
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
    event: Option<Value>,
    name: Option<Value>,
    #[serde(rename = "groupId")]
    group_id: Option<Value>,
    #[serde(rename = "previousId")]
    previous_id: Option<Value>,
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
    traits: Option<Value>,
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
    #[serde(borrow)]
    context: Option<&'a RawValue>,
    #[serde(borrow)]
    integrations: Option<&'a RawValue>,
}

/// Why a message's text could not be read as a message at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not JSON, or not an object.
    #[error("{0}")]
    NotJson(String),
    #[error(transparent)]
    Field(#[from] FieldError),
}

/// Checks one message given as JSON text (see [`parse_message`]).
pub fn parse_message_json(
    json: &str,
    kind: Option<MessageKind>,
    base: &str,
) -> Result<Message, MessageError> {
    let mut wire: Wire<'_> =
        serde_json::from_str(json).map_err(|e| MessageError::NotJson(e.to_string()))?;
    let is_object = |raw: &RawValue| raw.get().starts_with('{');
    let is_null = |raw: &RawValue| raw.get() == "null";
    let properties = match wire.properties {
        None => None,
        Some(raw) if is_null(raw) => None,
        Some(raw) if is_object(raw) => Some(raw.to_owned()),
        Some(_) => {
            return Err(FieldError::new(
                field_path(base, "properties"),
                "`properties` must be an object",
            )
            .into());
        }
    };
    let context = match wire.context {
        None => Context::default(),
        Some(raw) if is_null(raw) => Context::default(),
        Some(raw) => Context::parse(raw.get()).ok_or_else(|| {
            FieldError::new(field_path(base, "context"), "`context` must be an object")
        })?,
    };
    if let Some(raw) = wire.integrations
        && !is_null(raw)
        && !is_object(raw)
    {
        return Err(FieldError::new(
            field_path(base, "integrations"),
            "`integrations` must be an object",
        )
        .into());
    }
    let mut message = parse_fields(&mut wire, kind, base)?;
    if let Some(p) = properties {
        message.properties = p;
    }
    message.context = context;
    // Read again one level deep, values left as text: what Kept does not read is kept.
    let mut extra = Context::parse(json)
        .ok_or_else(|| MessageError::NotJson("a message must be a JSON object".to_owned()))?;
    extra.retain(|k| !READ_FIELDS.contains(&k));
    message.extra = extra;
    Ok(message)
}

/// Checks one message object. `kind` is the endpoint's call; `None` (a batch item) reads it
/// from `type`. `base` prefixes every path in errors (`batch[3]`).
pub fn parse_message(
    mut obj: Map<String, Value>,
    kind: Option<MessageKind>,
    base: &str,
) -> Result<Message, FieldError> {
    let mut message = parse_fields(&mut obj, kind, base)?;
    obj.retain(|k, _| !READ_FIELDS.contains(&k.as_str()));
    if !obj.is_empty() {
        message.extra = Context::parse(&Value::Object(obj).to_string()).unwrap_or_default();
    }
    Ok(message)
}

/// Where a message's fields come from: a parsed object, or the fields read off its text.
trait Fields {
    fn field(&self, name: &str) -> Option<&Value>;
    fn take(&mut self, name: &str) -> Option<Value>;
}

impl Fields for Map<String, Value> {
    fn field(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
    fn take(&mut self, name: &str) -> Option<Value> {
        self.remove(name)
    }
}

impl Wire<'_> {
    fn slot(&mut self, name: &str) -> Option<&mut Option<Value>> {
        Some(match name {
            "type" => &mut self.kind,
            "userId" => &mut self.user_id,
            "anonymousId" => &mut self.anonymous_id,
            "messageId" => &mut self.message_id,
            "timestamp" => &mut self.timestamp,
            "originalTimestamp" => &mut self.original_timestamp,
            "sentAt" => &mut self.sent_at,
            "event" => &mut self.event,
            "name" => &mut self.name,
            "groupId" => &mut self.group_id,
            "previousId" => &mut self.previous_id,
            "writeKey" => &mut self.write_key,
            "traits" => &mut self.traits,
            _ => return None,
        })
    }
}

impl Fields for Wire<'_> {
    fn field(&self, name: &str) -> Option<&Value> {
        match name {
            "type" => self.kind.as_ref(),
            "userId" => self.user_id.as_ref(),
            "anonymousId" => self.anonymous_id.as_ref(),
            "messageId" => self.message_id.as_ref(),
            "timestamp" => self.timestamp.as_ref(),
            "originalTimestamp" => self.original_timestamp.as_ref(),
            "sentAt" => self.sent_at.as_ref(),
            "event" => self.event.as_ref(),
            "name" => self.name.as_ref(),
            "groupId" => self.group_id.as_ref(),
            "previousId" => self.previous_id.as_ref(),
            "writeKey" => self.write_key.as_ref(),
            "traits" => self.traits.as_ref(),
            _ => None,
        }
    }
    fn take(&mut self, name: &str) -> Option<Value> {
        self.slot(name)?.take()
    }
}

fn parse_fields<F: Fields>(
    obj: &mut F,
    kind: Option<MessageKind>,
    base: &str,
) -> Result<Message, FieldError> {
    let at = |name: &str| field_path(base, name);
    let kind = match kind {
        Some(k) => k,
        None => match obj.field("type") {
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
    let user_id = id_field(obj, "userId", base)?;
    let anonymous_id = id_field(obj, "anonymousId", base)?;
    let message_id = match obj.field("messageId") {
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
    let properties = match object_field(obj, "properties", base)? {
        p if p.is_empty() => empty_object(),
        p => serde_json::value::to_raw_value(&p).unwrap_or_else(|_| empty_object()),
    };
    let context = match object_field(obj, "context", base)? {
        c if c.is_empty() => Context::default(),
        c => Context::parse(&Value::Object(c).to_string()).unwrap_or_default(),
    };
    // Checked for shape only (and kept with the other fields Kept does not read): Kept
    // decides where events go from consent, not from `integrations`.
    match obj.field("integrations") {
        None | Some(Value::Null | Value::Object(_)) => {}
        Some(_) => {
            return Err(FieldError::new(
                at("integrations"),
                "`integrations` must be an object",
            ));
        }
    }
    let write_key = match obj.field("writeKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_owned()).filter(|k| !k.is_empty()),
        Some(_) => {
            return Err(FieldError::new(
                at("writeKey"),
                "`writeKey` must be a string",
            ));
        }
    };
    // A field has one type whichever call reads it: the message schema is one for every call,
    // and a track call's `name` or an identify call's `groupId` is checked like the call's own.
    let event = name_field(obj, "event", base)?;
    let page_name = name_field(obj, "name", base)?;
    let group_id = id_field(obj, "groupId", base)?;
    let previous_id = id_field(obj, "previousId", base)?;

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
        extra: Context::default(),
    };
    match kind {
        MessageKind::Track => {
            message.name = Some(event.ok_or_else(|| {
                FieldError::new(at("event"), "`event` is required for a track call")
            })?);
        }
        MessageKind::Page | MessageKind::Screen => message.name = page_name,
        MessageKind::Group => {
            message.group_id = Some(group_id.ok_or_else(|| {
                FieldError::new(at("groupId"), "`groupId` is required for a group call")
            })?);
        }
        MessageKind::Alias => {
            message.previous_id = Some(previous_id.ok_or_else(|| {
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

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| Box::<RawValue>::default())
}

/// An id: a non-empty string, or a number (some clients send numeric user ids).
fn id_field<F: Fields>(obj: &F, name: &str, base: &str) -> Result<Option<String>, FieldError> {
    match obj.field(name) {
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

fn name_field<F: Fields>(obj: &F, name: &str, base: &str) -> Result<Option<String>, FieldError> {
    match obj.field(name) {
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
fn object_field<F: Fields>(
    obj: &mut F,
    name: &str,
    base: &str,
) -> Result<Map<String, Value>, FieldError> {
    match obj.take(name) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(FieldError::new(
            field_path(base, name),
            format!("`{name}` must be an object"),
        )),
    }
}

fn time_field<F: Fields>(
    obj: &F,
    name: &str,
    base: &str,
) -> Result<Option<UnixMillis>, FieldError> {
    match obj.field(name) {
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

    #[test]
    fn fields_kept_does_not_read_are_kept_and_the_write_key_is_not() {
        let text = r#"{"type":"page","anonymousId":"a","name":"Shoes","category":"Shop",
            "writeKey":"secret","integrations":{"All":false},"channel":"web"}"#;
        let from_text = parse_message_json(text, None, "").unwrap();
        assert_eq!(
            from_text.extra.to_json(),
            r#"{"category":"Shop","integrations":{"All":false},"channel":"web"}"#
        );
        assert_eq!(from_text.name.as_deref(), Some("Shoes"));
        assert_eq!(from_text.write_key.as_deref(), Some("secret"));
        let from_map = parse_message(serde_json::from_str(text).unwrap(), None, "").unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&from_map.extra.to_json()).unwrap(),
            json!({"category": "Shop", "integrations": {"All": false}, "channel": "web"})
        );
        let bare = parse_message_json(r#"{"type":"track","userId":"u","event":"e"}"#, None, "");
        assert!(bare.unwrap().extra.is_empty());
        let err = parse_message(
            obj(json!({"type": "track", "userId": "u", "event": "e", "integrations": 3})),
            None,
            "batch[1]",
        )
        .unwrap_err();
        assert_eq!(err.path, "batch[1].integrations");
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn identifiers_in_context_traits_are_sealed_and_the_rest_kept() {
        let mut c = Context::parse(
            r#"{"ip":"203.0.113.9","traits":{"email":"a@b.example","phone":"+15551234567","plan":"gold"}}"#,
        )
        .unwrap();
        c.seal_identifier_traits();
        let json = c.to_json();
        assert!(
            !json.contains("a@b.example") && !json.contains("5551234567"),
            "{json}"
        );
        let traits = c.traits();
        assert_eq!(traits["email"], json!({"sealed_identifier": "email"}));
        assert_eq!(traits["phone"], json!({"sealed_identifier": "phone"}));
        assert_eq!(traits["plan"], "gold");
        assert_eq!(c.text(&["ip"]).as_deref(), Some("203.0.113.9"));

        let mut plain = Context::parse(r#"{"traits":{"plan":"gold"}}"#).unwrap();
        let before = plain.to_json();
        plain.seal_identifier_traits();
        assert_eq!(plain.to_json(), before);
    }

    /// The message schema is one for every call: a field has its type whichever call reads it,
    /// so an identify call's `event` object or a numeric `writeKey` is refused, not ignored.
    #[test]
    fn every_call_checks_every_field_the_schema_types() {
        for (field, value) in [
            ("event", json!({})),
            ("name", json!([])),
            ("groupId", json!(true)),
            ("previousId", json!({})),
            ("writeKey", json!(7)),
        ] {
            let mut message = obj(json!({"userId": "u1"}));
            message.insert(field.to_owned(), value);
            let err = parse_message(message, Some(MessageKind::Identify), "").unwrap_err();
            assert_eq!(err.path, field);
        }
        let fine = obj(json!({"userId": "u1", "event": "ignored", "groupId": 3, "writeKey": null}));
        assert!(parse_message(fine, Some(MessageKind::Identify), "").is_ok());
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

    #[test]
    fn context_traits_stand_in_for_missing_traits_and_top_level_wins() {
        let m = parse_message_json(
            r#"{"type":"identify","userId":"u","traits":{"plan":"gold"},
                "context":{"traits":{"email":"a@example.com","plan":"bronze"}}}"#,
            None,
            "",
        )
        .unwrap();
        let person = m.person_traits();
        assert_eq!(person.get("plan"), Some(&json!("gold")));
        assert_eq!(person.get("email"), Some(&json!("a@example.com")));

        let m = parse_message_json(
            r#"{"type":"track","userId":"u","event":"E","traits":{"plan":"gold"},
                "context":{"traits":{"email":"a@example.com"}}}"#,
            None,
            "",
        )
        .unwrap();
        let person = m.person_traits();
        assert_eq!(person.get("email"), Some(&json!("a@example.com")));
        assert!(!person.contains_key("plan"));

        let m = parse_message_json(
            r#"{"type":"group","userId":"u","groupId":"g","traits":{"name":"Acme"},
                "context":{"traits":"not an object"}}"#,
            None,
            "",
        )
        .unwrap();
        assert!(m.person_traits().is_empty());
        let m = parse_message_json(
            r#"{"type":"alias","userId":"u","previousId":"p",
                "context":{"traits":{"email":"a@example.com"}}}"#,
            None,
            "",
        )
        .unwrap();
        assert!(m.person_traits().is_empty());
    }

    #[test]
    fn json_messages_keep_properties_and_context_as_sent() {
        let text = r#"{"type":"track","anonymousId":"a","event":"E","properties":{"b":1,"a":[1,2]},
            "context":{"ip":"203.0.113.9","kept":{"collection_point":"checkout"},"ip":"10.0.0.1"},
            "unknown":{"ignored":true}}"#;
        let mut m = parse_message_json(text, None, "batch[0]").unwrap();
        assert_eq!(m.properties.get(), r#"{"b":1,"a":[1,2]}"#);
        assert_eq!(
            m.context_str(&["kept", "collection_point"]).as_deref(),
            Some("checkout")
        );
        // A repeated key: the last wins.
        assert_eq!(m.context_str(&["ip"]).as_deref(), Some("10.0.0.1"));
        m.context.remove("ip");
        m.context.set_text("ip_hash", "ab\"c");
        assert_eq!(
            m.context.to_json(),
            r#"{"kept":{"collection_point":"checkout"},"ip_hash":"ab\"c"}"#
        );
        let mut shared = Context::parse(r#"{"library":{"name":"x"},"kept":{}}"#).unwrap();
        m.context.fill_from(&shared);
        assert!(m.context.contains("library"));
        assert_eq!(
            m.context_str(&["kept", "collection_point"]).as_deref(),
            Some("checkout")
        );
        shared.remove("library");
        assert!(!shared.contains("library"));

        let err = parse_message_json(
            r#"{"type":"track","anonymousId":"a","event":"E","properties":[1]}"#,
            None,
            "batch[2]",
        )
        .unwrap_err();
        assert_eq!(
            err,
            MessageError::Field(FieldError::new(
                "batch[2].properties",
                "`properties` must be an object"
            ))
        );
        let err = parse_message_json(
            r#"{"type":"page","anonymousId":"a","context":"x"}"#,
            None,
            "",
        )
        .unwrap_err();
        assert!(matches!(err, MessageError::Field(f) if f.path == "context"));
        assert!(matches!(
            parse_message_json("[1]", None, ""),
            Err(MessageError::NotJson(_))
        ));
        let m = parse_message_json(
            r#"{"anonymousId":"a","name":"Home"}"#,
            Some(MessageKind::Page),
            "",
        )
        .unwrap();
        assert_eq!(m.properties.get(), "{}");
        assert!(m.context.is_empty());
    }
}
