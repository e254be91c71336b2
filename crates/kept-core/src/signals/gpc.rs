//! Global Privacy Control: how a browser sends it (`Sec-GPC: 1`, or `gpc` in an event's
//! context), the purpose its opt-out is recorded under, and where it counts as an opt-out.
//! Under GDPR it is not consent and changes nothing by itself; under the US laws that name it,
//! it is an opt-out of sale, sharing and targeted advertising from the date their rulebook row
//! gives (`gpc_from`).

use crate::UnixMillis;
use crate::manifest::Manifest;
use crate::rulebook::{PurposeClass, RuleId};

/// The request header a browser sends GPC in (lower case, as HTTP/2 carries it).
pub const HEADER: &str = "sec-gpc";

/// The evidence a ledger record made from the header carries.
pub const EVIDENCE: &str = "Sec-GPC: 1";

/// Whether a `Sec-GPC` header value says the person opts out: exactly `1` (the specification's
/// only value), surrounding whitespace aside.
pub fn from_header(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim() == "1")
}

/// The purpose a GPC record is filed under: the manifest's first advertising purpose, else
/// fideslang's `third_party_sharing`.
pub fn purpose(manifest: &Manifest) -> String {
    manifest
        .purposes
        .keys()
        .find(|k| PurposeClass::of(k) == PurposeClass::Advertising)
        .cloned()
        .unwrap_or_else(|| "third_party_sharing".to_owned())
}

/// Whether the law makes a GPC signal an opt-out at `now`, given the row of a requirement that
/// names one (`gpc_from`) and its start.
pub fn in_force(rule: Option<(RuleId, UnixMillis)>, now: UnixMillis) -> bool {
    rule.is_some_and(|(_, from)| now >= from)
}

/// Whether a GPC signal stops a purpose of `class` that the person may opt out of: where the
/// law makes it an opt-out, and always for advertising, sale and sharing, which is what the
/// signal asks to stop.
pub fn stops(class: PurposeClass, rule: Option<(RuleId, UnixMillis)>, now: UnixMillis) -> bool {
    class == PurposeClass::Advertising || in_force(rule, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_one_opts_out() {
        assert!(from_header(Some("1")));
        assert!(from_header(Some(" 1 ")));
        for other in [Some("0"), Some("true"), Some(""), None] {
            assert!(!from_header(other), "{other:?}");
        }
    }

    #[test]
    fn an_opt_out_from_the_rows_date_and_always_for_advertising() {
        let row = Some((RuleId(3), 1_000));
        assert!(!in_force(row, 999));
        assert!(in_force(row, 1_000));
        assert!(!in_force(None, i64::MAX));
        assert!(stops(PurposeClass::Advertising, None, 0));
        assert!(!stops(PurposeClass::Marketing, row, 999));
        assert!(stops(PurposeClass::Marketing, row, 1_000));
    }
}
