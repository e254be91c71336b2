//! Signals read from requests: what a browser or a consent manager said about a person's choices,
//! as it said them, before Kept judges what they mean for a purpose. Global Privacy Control
//! (`gpc`: the header, what it means and where the law makes it an opt-out) today; the IAB TCF
//! and GPP strings are carried as received, and their decoders come here later.

pub mod gpc;

use crate::collection::{FieldError, field_path};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Longest IAB string kept (a TC string with many vendors runs to a few kilobytes).
pub const MAX_SIGNAL_LEN: usize = 8192;

/// The consent signals one event carried, as it carried them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentSignals {
    /// `context.consent.categoryPreferences`: consent-manager category → yes or no.
    pub categories: BTreeMap<String, bool>,
    /// Global Privacy Control: the `Sec-GPC: 1` header or `context.consent.gpc`.
    pub gpc: bool,
    /// IAB TCF consent string (`context.consent.tcString`), recorded as carried.
    pub tcf: Option<String>,
    /// IAB GPP string (`context.consent.gppString`), recorded as carried.
    pub gpp: Option<String>,
    /// The GPP sections that apply (`context.consent.gppSid`).
    pub gpp_sections: Option<String>,
    /// The deprecated four-character US Privacy string (`context.consent.usPrivacy`).
    pub us_privacy: Option<String>,
}

impl ConsentSignals {
    /// Whether the event carried any choice about purposes.
    pub fn carried(&self) -> bool {
        !self.categories.is_empty()
    }
}

/// Reads the consent signals of an event's `context` (at `base`, for error paths).
pub fn read(
    context: &Map<String, Value>,
    gpc_header: bool,
    base: &str,
) -> Result<ConsentSignals, FieldError> {
    let base = field_path(base, "context.consent");
    let mut out = ConsentSignals {
        gpc: gpc_header || context.get("gpc").is_some_and(truthy),
        ..ConsentSignals::default()
    };
    let consent = match context.get("consent") {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(c)) => c,
        Some(_) => return Err(FieldError::new(base, "`consent` must be an object")),
    };
    match consent.get("categoryPreferences") {
        None | Some(Value::Null) => {}
        Some(Value::Object(prefs)) => {
            for (category, value) in prefs {
                let choice = choice(value).ok_or_else(|| {
                    FieldError::new(
                        format!("{base}.categoryPreferences.{category}"),
                        format!("the choice for `{category}` must be `true` or `false`"),
                    )
                })?;
                out.categories.insert(category.clone(), choice);
            }
        }
        Some(_) => {
            return Err(FieldError::new(
                format!("{base}.categoryPreferences"),
                "`categoryPreferences` must be an object of `true`/`false` choices",
            ));
        }
    }
    out.gpc |= consent.get("gpc").is_some_and(truthy);
    let text = |names: &[&str]| -> Result<Option<String>, FieldError> {
        for name in names {
            match consent.get(*name) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) if s.len() <= MAX_SIGNAL_LEN => {
                    return Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty()));
                }
                Some(Value::String(_)) => {
                    return Err(FieldError::new(
                        format!("{base}.{name}"),
                        format!("`{name}` is longer than {MAX_SIGNAL_LEN} characters"),
                    ));
                }
                Some(Value::Array(items)) => {
                    let joined: Vec<String> = items
                        .iter()
                        .map(|i| match i {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect();
                    return Ok(Some(joined.join(",")));
                }
                Some(Value::Number(n)) => return Ok(Some(n.to_string())),
                Some(_) => {
                    return Err(FieldError::new(
                        format!("{base}.{name}"),
                        format!("`{name}` must be a string"),
                    ));
                }
            }
        }
        Ok(None)
    };
    out.tcf = text(&["tcString", "tcfString", "tcf"])?;
    out.gpp = text(&["gppString", "gpp"])?;
    out.gpp_sections = text(&["gppSid", "applicableSections"])?;
    out.us_privacy = text(&["usPrivacy", "uspString", "us_privacy"])?;
    Ok(out)
}

fn truthy(v: &Value) -> bool {
    choice(v) == Some(true)
}

fn choice(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "granted" | "yes" | "1" => Some(true),
            "false" | "denied" | "no" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "test code: a failed expectation is a failed test"
    )]
    use super::*;
    use serde_json::json;

    #[test]
    fn signals_are_read_with_paths_for_bad_values() {
        let ctx = json!({"consent": {
            "categoryPreferences": {"Advertising": true, "personalize.content.profiled": "denied"},
            "tcString": "CP1234", "gppString": "DBABMA~CP1234", "gppSid": [7, 8]
        }});
        let s = read(ctx.as_object().unwrap(), true, "").unwrap();
        assert!(s.gpc && s.carried());
        assert!(!s.categories["personalize.content.profiled"]);
        assert_eq!(s.tcf.as_deref(), Some("CP1234"));
        assert_eq!(s.gpp_sections.as_deref(), Some("7,8"));
        let bad = json!({"consent": {"categoryPreferences": {"Ads": "maybe"}}});
        let err = read(bad.as_object().unwrap(), false, "batch[2]").unwrap_err();
        assert_eq!(err.path, "batch[2].context.consent.categoryPreferences.Ads");
    }
}
