//! Reading a collection request's body: JSON, gzip- or deflate-encoded or not, within the size
//! limits, whatever its `Content-Type` says (SDKs label it `text/plain` for
//! `navigator.sendBeacon`, and `@rudderstack/rudder-sdk-node`'s HTTP library labels its gzipped
//! JSON as a form); and splitting it into checked messages. What makes the whole request
//! unreadable (a body that is not JSON, too large, `batch` not an array, a bad shared `context`
//! or `sentAt`, too many messages) refuses the request; a message that cannot be read is
//! rejected alone, and its neighbours go on.

use super::quarantine::Rejected;
use super::{MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_EVENT_BYTES};
use crate::http::error::ApiError;
use axum::body::Body;
use axum::http::{HeaderMap, header};
use kept_core::collection::{
    Context, FieldError, Message, MessageError, MessageKind, parse_message_json,
};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::io::Read;

/// The messages of one request: those that could be read, and those that could not.
#[derive(Debug)]
pub struct Incoming {
    pub messages: Vec<Received>,
    pub rejected: Vec<Rejected>,
    /// What a batch gave all its messages (`context`, `sentAt`), for the rejected ones held.
    pub shared: Shared,
}

/// A batch's shared `context` and `sentAt`, as sent.
#[derive(Debug, Default)]
pub struct Shared {
    context: Option<serde_json::Map<String, Value>>,
    sent_at: Option<Value>,
}

impl Shared {
    /// A rejected message as it is held: with the shared `context` keys it has none of and
    /// the shared `sentAt` when it has none, as it would have been read, so that the
    /// quarantine holds everything the client sent for it. A message that is not an object,
    /// or whose own `context` is not one, is held as sent.
    pub fn held(&self, raw: &str) -> String {
        let context = self.context.as_ref().filter(|c| !c.is_empty());
        if context.is_none() && self.sent_at.is_none() {
            return raw.to_owned();
        }
        let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(raw) else {
            return raw.to_owned();
        };
        if let Some(shared) = context {
            let own = message.entry("context").or_insert(Value::Null);
            if own.is_null() {
                *own = Value::Object(Default::default());
            }
            let Value::Object(own) = own else {
                return raw.to_owned();
            };
            for (k, v) in shared {
                own.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if let Some(sent_at) = &self.sent_at {
            let own = message.entry("sentAt").or_insert(Value::Null);
            if own.is_null() {
                *own = sent_at.clone();
            }
        }
        Value::Object(message).to_string()
    }
}

/// One message as it was read, with its position and its text (kept for the quarantine, in
/// case a later check rejects it).
#[derive(Debug)]
pub struct Received {
    pub index: usize,
    pub raw: String,
    pub message: Message,
}

/// Reads the body: at most `limit` bytes on the wire and after decompression.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    what: &'static str,
) -> Result<Vec<u8>, ApiError> {
    let mut raw = Vec::new();
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
        let chunk = chunk
            .map_err(|e| ApiError::InvalidJson(format!("cannot read the request body: {e}")))?;
        if raw.len() + chunk.len() > limit {
            return Err(too_large(what, limit));
        }
        raw.extend_from_slice(&chunk);
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let decoded = match encoding.as_str() {
        "" | "identity" => return Ok(raw),
        "gzip" | "x-gzip" => inflate(flate2::read::GzDecoder::new(raw.as_slice()), limit),
        "deflate" => inflate(flate2::read::ZlibDecoder::new(raw.as_slice()), limit),
        other => return Err(ApiError::UnsupportedEncoding(other.to_owned())),
    }?;
    if decoded.len() > limit {
        return Err(too_large(what, limit));
    }
    Ok(decoded)
}

/// Decompresses, reading one byte past `limit` at most (a small body may inflate to gigabytes).
fn inflate(reader: impl Read, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    reader
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::InvalidJson(format!("the compressed body does not decompress: {e}"))
        })?;
    Ok(out)
}

pub fn too_large(what: &'static str, limit: usize) -> ApiError {
    let message = match what {
        "batch_bytes" => format!(
            "a batch may be at most {limit} bytes ({} KB) after decompression",
            limit / 1024
        ),
        _ => format!(
            "an event may be at most {limit} bytes ({} KB)",
            limit / 1024
        ),
    };
    ApiError::LimitExceeded {
        limit: what,
        message,
    }
}

fn invalid(error: FieldError, index: Option<usize>) -> ApiError {
    ApiError::InvalidEvent {
        field: error.path,
        index,
        message: error.message,
    }
}

/// One message of a single-call endpoint (`/v1/track`, …).
pub fn single(bytes: &[u8], kind: MessageKind) -> Result<Incoming, ApiError> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(too_large("event_bytes", MAX_EVENT_BYTES));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::InvalidJson("the request body is not UTF-8".into()))?;
    let (messages, rejected) = match parse_message_json(text, Some(kind), "") {
        Ok(message) => (
            vec![Received {
                index: 0,
                raw: text.to_owned(),
                message,
            }],
            Vec::new(),
        ),
        // Not JSON at all: nothing to hold as a message.
        Err(MessageError::NotJson(m)) => return Err(ApiError::InvalidJson(m)),
        Err(MessageError::Field(f)) => (
            Vec::new(),
            vec![Rejected {
                index: 0,
                raw: text.to_owned(),
                error: invalid(f, None),
            }],
        ),
    };
    Ok(Incoming {
        messages,
        rejected,
        shared: Shared::default(),
    })
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    context: Option<&'a RawValue>,
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
}

/// The messages of a `/v1/batch` body, each checked on its own: a bad one is rejected alone.
pub fn batch(bytes: &[u8]) -> Result<Incoming, ApiError> {
    if bytes.len() > MAX_BATCH_BYTES {
        return Err(too_large("batch_bytes", MAX_BATCH_BYTES));
    }
    let field = |name: &str, message: &str| ApiError::InvalidEvent {
        field: name.to_owned(),
        index: None,
        message: message.to_owned(),
    };
    let body: BatchBody<'_> = serde_json::from_slice(bytes).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            field("batch", "`batch` must be an array of events")
        } else {
            ApiError::InvalidJson(e.to_string())
        }
    })?;
    let Some(items) = body.batch else {
        return Err(field("batch", "`batch` is required: an array of events"));
    };
    if items.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::LimitExceeded {
            limit: "batch_events",
            message: format!(
                "a batch may hold at most {MAX_BATCH_EVENTS} events; this one holds {}",
                items.len()
            ),
        });
    }
    let shared_context = match body.context {
        None => Context::default(),
        Some(raw) if raw.get() == "null" => Context::default(),
        Some(raw) => Context::parse(raw.get())
            .ok_or_else(|| field("context", "`context` must be an object"))?,
    };
    let shared_sent_at = match &body.sent_at {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(kept_core::collection::parse_time(s).ok_or_else(|| {
            field(
                "sentAt",
                &format!("`{s}` is not an ISO 8601 time such as `2026-05-28T20:26:40.000Z`"),
            )
        })?),
        Some(_) => return Err(field("sentAt", "`sentAt` must be an ISO 8601 string")),
    };
    let mut messages = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match batch_message(i, item.get()) {
            Ok(mut message) => {
                message.context.fill_from(&shared_context);
                if message.sent_at.is_none() {
                    message.sent_at = shared_sent_at;
                }
                messages.push(Received {
                    index: i,
                    raw: item.get().to_owned(),
                    message,
                });
            }
            Err(error) => rejected.push(Rejected {
                index: i,
                raw: item.get().to_owned(),
                error,
            }),
        }
    }
    Ok(Incoming {
        messages,
        rejected,
        shared: Shared {
            context: body
                .context
                .and_then(|c| serde_json::from_str(c.get()).ok()),
            sent_at: body.sent_at.filter(|v| !v.is_null()),
        },
    })
}

/// Message `i` of a batch, read and checked on its own.
fn batch_message(i: usize, text: &str) -> Result<Message, ApiError> {
    if text.len() > MAX_EVENT_BYTES {
        return Err(ApiError::LimitExceeded {
            limit: "event_bytes",
            message: format!(
                "event {i} of the batch is {} bytes; an event may be at most {MAX_EVENT_BYTES} bytes ({} KB)",
                text.len(),
                MAX_EVENT_BYTES / 1024
            ),
        });
    }
    parse_message_json(text, None, &format!("batch[{i}]")).map_err(|e| match e {
        MessageError::NotJson(_) if !text.starts_with('{') => ApiError::InvalidEvent {
            field: format!("batch[{i}]"),
            index: Some(i),
            message: format!("event {i} of the batch must be a JSON object"),
        },
        MessageError::NotJson(m) => ApiError::InvalidEvent {
            field: format!("batch[{i}]"),
            index: Some(i),
            message: format!("event {i} of the batch is not a message: {m}"),
        },
        MessageError::Field(f) => invalid(f, Some(i)),
    })
}
