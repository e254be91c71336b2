//! The decision engine: may this purpose use this subject's data through this channel now?
//! One walk over the gates of DESIGN.md ("How a decision is made"), stopping at the first that
//! denies, over any view of a subject: the pure `SubjectState` here, or the index's snapshot.
//!
//! Consent precedence. A subject's consent for a request (purpose P, channel C, topic T) is the
//! latest record, by ledger `seq`, among the records that cover it: records for P whose channel
//! is C or absent and whose topic is T or absent, plus objections to any direct-marketing
//! purpose (an objection to direct marketing reaches all of it, GDPR Art. 21(2)-(3)) while they
//! are the latest record of their own scope. So a broader withdrawal wins over an older narrower
//! grant, and a newer narrower grant wins over an older broader withdrawal. `pending` records
//! (an unconfirmed double opt-in) change nothing; records made by a GPC signal only set the
//! signal. A topic's own latest record also acts as a subscription: withdrawn or opted out, the
//! topic is unsubscribed whatever the purpose-level records say.

mod compiled;
pub mod gates;
mod state;
pub(crate) mod walk;

pub use compiled::{
    ChannelId, CompileError, Compiled, EMAIL_CATEGORY, NoticeId, NoticeInfo, PlaceId, PointId,
    PointInfo, PurposeId, PurposeInfo, Query, RecordScope, Refresh, Requirement, Scope, ScopeId,
    SoftOptInNever, TopicId, TopicInfo, channel_categories,
};
pub use gates::{GateKind, GateRule, SubjectGate};
pub use state::{SequencedRecord, SubjectState};

use crate::UnixMillis;
use crate::rulebook::{Obligations, RuleId};
use crate::subject::Period;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::fmt;

/// What a caller asks: may `purpose` use the subject's data (of `categories`, or the ones the
/// channel reaches the person through) via `channel`, for `topic`?
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DecisionRequest {
    pub purpose: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub categories: Vec<String>,
}

impl DecisionRequest {
    pub fn new(purpose: &str) -> DecisionRequest {
        DecisionRequest {
            purpose: purpose.to_owned(),
            ..DecisionRequest::default()
        }
    }

    pub fn channel(mut self, channel: &str) -> DecisionRequest {
        self.channel = Some(channel.to_owned());
        self
    }

    pub fn topic(mut self, topic: &str) -> DecisionRequest {
        self.topic = Some(topic.to_owned());
        self
    }

    pub fn category(mut self, category: &str) -> DecisionRequest {
        self.categories.push(category.to_owned());
        self
    }
}

/// Why a decision came out as it did. Stable: clients match on `as_str()`. `Ord` is the order
/// of the gates, which is also the order audience exclusions are listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonCode {
    AllowedConsent,
    AllowedContract,
    AllowedOptOutRegime,
    AllowedSoftOptIn,
    AllowedImpliedConsent,
    DeniedUnknownPurpose,
    DeniedUnknownChannel,
    DeniedUnknownTopic,
    DeniedUnknownSubject,
    DeniedErasurePending,
    /// Holds an identifier suppressed after an earlier erasure: no use but an essential one.
    DeniedSuppressedAfterErasure,
    DeniedSuppressed,
    /// A restriction of processing the person asked for (GDPR Art. 18).
    DeniedRestrictedByRequest,
    /// An objection the person made through a data subject request (Art. 21).
    DeniedObjectedByRequest,
    /// An opt-out of sale or sharing through a request (Cal. Civ. Code 1798.120).
    DeniedOptedOutOfSale,
    /// A limit on the use of sensitive data through a request (1798.121).
    DeniedSensitiveUseLimited,
    DeniedForbiddenUse,
    DeniedNotPromised,
    DeniedNoLegalBasis,
    DeniedObjected,
    DeniedWithdrawn,
    DeniedOptedOut,
    DeniedUnsubscribed,
    DeniedGpc,
    DeniedNoConsent,
    /// Asked and declined (`refused`): the no-consent family, with the record as evidence.
    DeniedRefused,
    DeniedExpired,
    DeniedFrequencyCap,
    DeniedQuietHours,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 29] = [
        ReasonCode::AllowedConsent,
        ReasonCode::AllowedContract,
        ReasonCode::AllowedOptOutRegime,
        ReasonCode::AllowedSoftOptIn,
        ReasonCode::AllowedImpliedConsent,
        ReasonCode::DeniedUnknownPurpose,
        ReasonCode::DeniedUnknownChannel,
        ReasonCode::DeniedUnknownTopic,
        ReasonCode::DeniedUnknownSubject,
        ReasonCode::DeniedErasurePending,
        ReasonCode::DeniedSuppressedAfterErasure,
        ReasonCode::DeniedSuppressed,
        ReasonCode::DeniedRestrictedByRequest,
        ReasonCode::DeniedObjectedByRequest,
        ReasonCode::DeniedOptedOutOfSale,
        ReasonCode::DeniedSensitiveUseLimited,
        ReasonCode::DeniedForbiddenUse,
        ReasonCode::DeniedNotPromised,
        ReasonCode::DeniedNoLegalBasis,
        ReasonCode::DeniedObjected,
        ReasonCode::DeniedWithdrawn,
        ReasonCode::DeniedOptedOut,
        ReasonCode::DeniedUnsubscribed,
        ReasonCode::DeniedGpc,
        ReasonCode::DeniedNoConsent,
        ReasonCode::DeniedRefused,
        ReasonCode::DeniedExpired,
        ReasonCode::DeniedFrequencyCap,
        ReasonCode::DeniedQuietHours,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::AllowedConsent => "allowed.consent",
            ReasonCode::AllowedContract => "allowed.contract",
            ReasonCode::AllowedOptOutRegime => "allowed.opt_out_regime",
            ReasonCode::AllowedSoftOptIn => "allowed.soft_opt_in",
            ReasonCode::AllowedImpliedConsent => "allowed.implied_consent",
            ReasonCode::DeniedUnknownPurpose => "denied.unknown_purpose",
            ReasonCode::DeniedUnknownChannel => "denied.unknown_channel",
            ReasonCode::DeniedUnknownTopic => "denied.unknown_topic",
            ReasonCode::DeniedUnknownSubject => "denied.unknown_subject",
            ReasonCode::DeniedErasurePending => "denied.erasure_pending",
            ReasonCode::DeniedSuppressedAfterErasure => "denied.suppressed_after_erasure",
            ReasonCode::DeniedSuppressed => "denied.suppressed",
            ReasonCode::DeniedRestrictedByRequest => "denied.restricted_by_request",
            ReasonCode::DeniedObjectedByRequest => "denied.objected_by_request",
            ReasonCode::DeniedOptedOutOfSale => "denied.opted_out_of_sale",
            ReasonCode::DeniedSensitiveUseLimited => "denied.sensitive_use_limited",
            ReasonCode::DeniedForbiddenUse => "denied.forbidden_use",
            ReasonCode::DeniedNotPromised => "denied.not_promised",
            ReasonCode::DeniedNoLegalBasis => "denied.no_legal_basis",
            ReasonCode::DeniedObjected => "denied.objected",
            ReasonCode::DeniedWithdrawn => "denied.withdrawn",
            ReasonCode::DeniedOptedOut => "denied.opted_out",
            ReasonCode::DeniedUnsubscribed => "denied.unsubscribed",
            ReasonCode::DeniedGpc => "denied.gpc",
            ReasonCode::DeniedNoConsent => "denied.no_consent",
            ReasonCode::DeniedRefused => "denied.refused",
            ReasonCode::DeniedExpired => "denied.expired",
            ReasonCode::DeniedFrequencyCap => "denied.frequency_cap",
            ReasonCode::DeniedQuietHours => "denied.quiet_hours",
        }
    }

    pub fn parse(s: &str) -> Option<ReasonCode> {
        ReasonCode::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn is_allowed(self) -> bool {
        self <= ReasonCode::AllowedImpliedConsent
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ReasonCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One piece of evidence, in ids of the `Compiled` and `Query` the decision was made with
/// (`Decision::explain` turns them into keys). Small and `Copy`, so deciding never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Evidence {
    /// A consent ledger record.
    Ledger { seq: u64 },
    /// The query's category (position) was collected at `point` under `notice` at `version`,
    /// which promised this use.
    Provenance {
        category: u16,
        point: PointId,
        notice: NoticeId,
        version: u32,
    },
    /// The query's category (position) was never collected under a notice promising this use.
    NotPromised { category: u16 },
    /// A rulebook row.
    Rule { rule: RuleId },
    /// A manifest `rules.forbid` entry (position).
    ForbiddenUse { rule: u16 },
    /// Implied consent from data collected at `point` at `at` (a purchase or an inquiry).
    Implied { point: PointId, at: UnixMillis },
    /// The person's frequency choice, and how many messages were sent in the period.
    FrequencyCap {
        channel: ChannelId,
        max: u32,
        period: Period,
        sent: u32,
    },
    /// The person's quiet hours, and the local time of the decision.
    QuietHours {
        channel: ChannelId,
        start_minute: u16,
        end_minute: u16,
        local_minute: u16,
    },
    /// The subject's time zone is unknown: quiet hours were read in UTC.
    TimeZoneFallback,
    /// A data subject request whose gate stops the use.
    Request { id: u64 },
}

pub type EvidenceList = SmallVec<[Evidence; 4]>;

/// The answer to one use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: ReasonCode,
    pub evidence: EvidenceList,
    /// What the use must do; empty when denied.
    pub obligations: Obligations,
}

impl Decision {
    pub(crate) fn deny(reason: ReasonCode, evidence: EvidenceList) -> Decision {
        Decision {
            allowed: false,
            reason,
            evidence,
            obligations: Obligations::NONE,
        }
    }

    /// The decision with keys instead of ids, for the API and the CLI.
    pub fn explain(&self, ctx: &Compiled, query: &Query) -> Explained {
        let category = |i: u16| {
            query
                .categories
                .get(usize::from(i))
                .cloned()
                .unwrap_or_default()
        };
        let point = |p: PointId| ctx.point(p).map(|p| p.key.clone()).unwrap_or_default();
        let evidence = self
            .evidence
            .iter()
            .map(|e| match *e {
                Evidence::Ledger { seq } => ExplainedEvidence::Ledger { seq },
                Evidence::Provenance {
                    category: c,
                    point: p,
                    notice,
                    version,
                } => ExplainedEvidence::Provenance {
                    category: category(c),
                    collection_point: point(p),
                    notice: ctx
                        .notice(notice)
                        .map(|n| n.key.clone())
                        .unwrap_or_default(),
                    notice_version: version,
                },
                Evidence::NotPromised { category: c } => ExplainedEvidence::NotPromised {
                    category: category(c),
                },
                Evidence::Rule { rule } => {
                    let r = ctx.rulebook().rule(rule);
                    ExplainedEvidence::Rule {
                        id: r.map(|r| r.id.clone()).unwrap_or_default(),
                        source: r.map(|r| r.source.clone()).unwrap_or_default(),
                    }
                }
                Evidence::ForbiddenUse { rule } => {
                    let f = ctx.manifest().rules.forbid.get(usize::from(rule));
                    ExplainedEvidence::ForbiddenUse {
                        category: f.map(|f| f.category.clone()).unwrap_or_default(),
                        purpose: f.map(|f| f.purpose.clone()).unwrap_or_default(),
                        reason: f.map(|f| f.reason.clone()).unwrap_or_default(),
                    }
                }
                Evidence::Implied { point: p, at } => ExplainedEvidence::Implied {
                    collection_point: point(p),
                    collected_at: at,
                },
                Evidence::FrequencyCap {
                    channel,
                    max,
                    period,
                    sent,
                } => ExplainedEvidence::FrequencyCap {
                    channel: ctx.channel_key(channel).to_owned(),
                    max,
                    period: period.as_str(),
                    sent,
                },
                Evidence::QuietHours {
                    channel,
                    start_minute,
                    end_minute,
                    local_minute,
                } => ExplainedEvidence::QuietHours {
                    channel: ctx.channel_key(channel).to_owned(),
                    start: clock(start_minute),
                    end: clock(end_minute),
                    local_time: clock(local_minute),
                },
                Evidence::TimeZoneFallback => ExplainedEvidence::TimeZoneFallback {
                    note: "the subject's time zone is unknown: quiet hours were read in UTC",
                },
                Evidence::Request { id } => ExplainedEvidence::Request { id },
            })
            .collect();
        Explained {
            allowed: self.allowed,
            reason: self.reason,
            evidence,
            obligations: self.obligations,
        }
    }
}

fn clock(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// A decision in keys, ready to serialise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explained {
    pub allowed: bool,
    pub reason: ReasonCode,
    pub evidence: Vec<ExplainedEvidence>,
    pub obligations: Obligations,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExplainedEvidence {
    Ledger {
        seq: u64,
    },
    Provenance {
        category: String,
        collection_point: String,
        notice: String,
        notice_version: u32,
    },
    NotPromised {
        category: String,
    },
    Rule {
        id: String,
        source: String,
    },
    ForbiddenUse {
        category: String,
        purpose: String,
        reason: String,
    },
    Implied {
        collection_point: String,
        collected_at: UnixMillis,
    },
    FrequencyCap {
        channel: String,
        max: u32,
        period: &'static str,
        sent: u32,
    },
    QuietHours {
        channel: String,
        start: String,
        end: String,
        local_time: String,
    },
    TimeZoneFallback {
        note: &'static str,
    },
    /// The data subject request (`/v1/requests/{id}`) whose gate stops the use.
    Request {
        id: u64,
    },
}

/// The pure decision: `state` is everything known about one subject (or `None` for a subject
/// Kept does not know).
pub fn decide(
    state: Option<&SubjectState>,
    ctx: &Compiled,
    req: &DecisionRequest,
    now: UnixMillis,
) -> Decision {
    let query = ctx.prepare(req);
    decide_query(state, ctx, &query, now)
}

/// `decide` with a request prepared once (`Compiled::prepare`).
pub fn decide_query(
    state: Option<&SubjectState>,
    ctx: &Compiled,
    query: &Query,
    now: UnixMillis,
) -> Decision {
    match state {
        Some(s) => walk::walk(ctx, query, &state::StateView::new(s, ctx), now),
        None => walk::walk(ctx, query, &walk::Unknown, now),
    }
}
