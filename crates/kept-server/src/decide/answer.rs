//! A decision written out as the decision API answers it: its reason, its evidence and its
//! obligations, byte for byte. The decision API answers with it and the record of uses keeps its
//! evidence, so both say the same thing the same way.

use crate::http::json::{push_field, push_int_field, push_str};
use kept_core::decision::{Compiled, Decision, Evidence, Query};
use std::ops::Range;

fn clock(out: &mut Vec<u8>, name: &str, minute: u16) {
    let text = [
        b'0' + (minute / 600 % 10) as u8,
        b'0' + (minute / 60 % 10) as u8,
        b':',
        b'0' + (minute % 60 / 10) as u8,
        b'0' + (minute % 10) as u8,
    ];
    push_field(out, name, std::str::from_utf8(&text).unwrap_or("00:00"));
}

/// Writes one decision as the API answers it (the shape of `DecisionView`, the same as
/// `Decision::explain` serialised); returns where its evidence and obligations arrays are.
pub(crate) fn write_decision(
    out: &mut Vec<u8>,
    ctx: &Compiled,
    query: &Query,
    d: &Decision,
) -> (Range<usize>, Range<usize>) {
    out.extend_from_slice(if d.allowed {
        b"{\"allowed\":true,\"reason\":"
    } else {
        b"{\"allowed\":false,\"reason\":"
    });
    push_str(out, d.reason.as_str());
    out.extend_from_slice(b",\"evidence\":");
    let evidence_start = out.len();
    out.push(b'[');
    for (i, e) in d.evidence.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_evidence(out, ctx, query, e);
    }
    out.push(b']');
    let evidence = evidence_start..out.len();
    out.extend_from_slice(b",\"obligations\":");
    let obligations_start = out.len();
    out.push(b'[');
    for (i, o) in d.obligations.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, o.as_str());
    }
    out.push(b']');
    let obligations = obligations_start..out.len();
    out.push(b'}');
    (evidence, obligations)
}

fn write_evidence(out: &mut Vec<u8>, ctx: &Compiled, query: &Query, e: &Evidence) {
    let category = |i: u16| {
        query
            .categories
            .get(usize::from(i))
            .map_or("", String::as_str)
    };
    let point = |p| ctx.point(p).map_or("", |p| p.key.as_str());
    out.extend_from_slice(b"{\"kind\":");
    match *e {
        Evidence::Ledger { seq } => {
            push_str(out, "ledger");
            push_int_field(out, "seq", i64::try_from(seq).unwrap_or(i64::MAX));
        }
        Evidence::Provenance {
            category: c,
            point: p,
            notice,
            version,
        } => {
            push_str(out, "provenance");
            push_field(out, "category", category(c));
            push_field(out, "collection_point", point(p));
            push_field(
                out,
                "notice",
                ctx.notice(notice).map_or("", |n| n.key.as_str()),
            );
            push_int_field(out, "notice_version", i64::from(version));
        }
        Evidence::NotPromised { category: c } => {
            push_str(out, "not_promised");
            push_field(out, "category", category(c));
        }
        Evidence::Rule { rule } => {
            let r = ctx.rulebook().rule(rule);
            push_str(out, "rule");
            push_field(out, "id", r.map_or("", |r| r.id.as_str()));
            push_field(out, "source", r.map_or("", |r| r.source.as_str()));
        }
        Evidence::ForbiddenUse { rule } => {
            let f = ctx.manifest().rules.forbid.get(usize::from(rule));
            push_str(out, "forbidden_use");
            push_field(out, "category", f.map_or("", |f| f.category.as_str()));
            push_field(out, "purpose", f.map_or("", |f| f.purpose.as_str()));
            push_field(out, "reason", f.map_or("", |f| f.reason.as_str()));
        }
        Evidence::Implied { point: p, at } => {
            push_str(out, "implied");
            push_field(out, "collection_point", point(p));
            push_int_field(out, "collected_at", at);
        }
        Evidence::FrequencyCap {
            channel,
            max,
            period,
            sent,
        } => {
            push_str(out, "frequency_cap");
            push_field(out, "channel", ctx.channel_key(channel));
            push_int_field(out, "max", i64::from(max));
            push_field(out, "period", period.as_str());
            push_int_field(out, "sent", i64::from(sent));
        }
        Evidence::QuietHours {
            channel,
            start_minute,
            end_minute,
            local_minute,
        } => {
            push_str(out, "quiet_hours");
            push_field(out, "channel", ctx.channel_key(channel));
            clock(out, "start", start_minute);
            clock(out, "end", end_minute);
            clock(out, "local_time", local_minute);
        }
        Evidence::Request { id } => {
            push_str(out, "request");
            push_int_field(out, "id", i64::try_from(id).unwrap_or(i64::MAX));
        }
        Evidence::TimeZoneFallback => {
            push_str(out, "time_zone_fallback");
            push_field(
                out,
                "note",
                "the subject's time zone is unknown: quiet hours were read in UTC",
            );
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::decisions::DecisionView;
    use kept_core::decision::ReasonCode;
    use kept_core::decision::{DecisionRequest, EvidenceList};
    use kept_core::rulebook::{Obligation, Obligations, RuleId};
    use kept_core::subject::Period;

    fn compiled() -> Compiled {
        let manifest = kept_core::manifest::load(&kept_core::manifest::demo_toml(), "kept.toml")
            .unwrap()
            .manifest;
        Compiled::new(manifest).unwrap()
    }

    #[test]
    fn written_decisions_read_as_their_explanation_and_their_schema() {
        let ctx = compiled();
        let query = ctx.prepare(
            &DecisionRequest::new("marketing.communications")
                .channel("sms")
                .category("user.contact.phone_number")
                .category("a \"quoted\"\ncategory"),
        );
        let point = ctx.point_id("sms_offers_optin").unwrap();
        let notice = ctx.notice_id("sms_offers").unwrap();
        let sms = ctx.channel_id("sms").unwrap();
        let every_kind: EvidenceList = [
            Evidence::Ledger { seq: 42 },
            Evidence::Provenance {
                category: 0,
                point,
                notice,
                version: 1,
            },
            Evidence::NotPromised { category: 1 },
            Evidence::Rule { rule: RuleId(0) },
            Evidence::ForbiddenUse { rule: 0 },
            Evidence::Implied { point, at: -5 },
            Evidence::FrequencyCap {
                channel: sms,
                max: 3,
                period: Period::Week,
                sent: 3,
            },
            Evidence::QuietHours {
                channel: sms,
                start_minute: 22 * 60,
                end_minute: 7 * 60 + 5,
                local_minute: 0,
            },
            Evidence::TimeZoneFallback,
        ]
        .into_iter()
        .collect();
        let decisions = [
            Decision {
                allowed: true,
                reason: ReasonCode::AllowedConsent,
                evidence: every_kind,
                obligations: [Obligation::HonourStopReply, Obligation::IdentifySender]
                    .into_iter()
                    .collect(),
            },
            Decision {
                allowed: false,
                reason: ReasonCode::DeniedUnknownSubject,
                evidence: EvidenceList::new(),
                obligations: Obligations::NONE,
            },
        ];
        for d in &decisions {
            let mut out = Vec::new();
            let (evidence, obligations) = write_decision(&mut out, &ctx, &query, d);
            let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let want = serde_json::to_value(d.explain(&ctx, &query)).unwrap();
            assert_eq!(got, want);
            let view: DecisionView = serde_json::from_slice(&out).unwrap();
            assert_eq!(view.reason, d.reason.as_str());
            let e: serde_json::Value = serde_json::from_slice(&out[evidence]).unwrap();
            assert_eq!(e, want["evidence"]);
            let o: serde_json::Value = serde_json::from_slice(&out[obligations]).unwrap();
            assert_eq!(o, want["obligations"]);
        }
    }
}
