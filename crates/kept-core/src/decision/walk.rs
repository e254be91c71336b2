//! The gates, in order, over any view of one subject. The pure state and the index implement
//! `SubjectView` independently; the walk is the one place the order and the reasons live.

use super::compiled::{ChannelId, Compiled, NoticeId, PlaceId, PointId, Query, Requirement};
use super::{Decision, Evidence, EvidenceList, ReasonCode};
use crate::UnixMillis;
use crate::ledger::{CollectionMethod, ConsentAction};
use crate::rulebook::{Level, PurposeClass, add_months};
use crate::subject::{Frequency, QuietHours};
use chrono::Timelike;
use chrono_tz::Tz;
use smallvec::smallvec;

/// A subject's standing before any purpose is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub erasure: bool,
    /// Holds an identifier suppressed after an earlier erasure.
    pub erasure_suppressed: bool,
    pub suppressed: bool,
}

/// The latest record covering a request (see the precedence in `decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fact {
    pub seq: u64,
    pub at: UnixMillis,
    pub action: ConsentAction,
    pub method: CollectionMethod,
    /// The record names a topic.
    pub topic_level: bool,
}

/// Where promised data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    pub point: PointId,
    pub notice: NoticeId,
    pub version: u32,
}

/// The latest collection at a purchase or inquiry point (CASL implied consent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Implied {
    pub purchase: Option<(UnixMillis, PointId)>,
    pub inquiry: Option<(UnixMillis, PointId)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pref {
    pub frequency: Option<Frequency>,
    pub quiet: Option<QuietHours>,
}

/// What the gates need to know about one subject.
pub(crate) trait SubjectView {
    /// `None`: the subject is unknown.
    fn status(&self) -> Option<Status>;
    fn place(&self) -> PlaceId;
    /// The latest GPC signal was an opt-out.
    fn gpc(&self) -> bool;
    /// The first origin, in (collection point key, notice key, version) order, of data of the
    /// query's category `category` that promised the query's use.
    fn promise(&self, query: &Query, category: usize) -> Option<Origin>;
    /// The subject's email address came from a purchase under a notice promising the query's
    /// use (`Compiled::soft_opt_in_source`).
    fn soft_opt_in_source(&self, query: &Query) -> bool;
    fn implied(&self) -> Implied;
    /// The latest record covering the query, if any.
    fn consent(&self, query: &Query) -> Option<Fact>;
    /// The latest record of the query's topic, if the query names one.
    fn topic_state(&self, query: &Query) -> Option<Fact>;
    fn preference(&self, channel: ChannelId) -> Option<Pref>;
    /// The subject's last interaction with the company, if any is known: the latest of its
    /// collected events and preference-center visits (as the store records them), its consent
    /// records and its channel preference changes.
    fn last_interaction(&self) -> Option<UnixMillis>;
    /// Non-essential messages sent on `channel` at a time in `(after, until]`.
    fn contacts_between(&self, channel: ChannelId, after: UnixMillis, until: UnixMillis) -> u32;
    /// `None`: no time zone, or one Kept does not know.
    fn time_zone(&self) -> Option<Tz>;
    /// The gates data subject requests put on the subject (empty for nearly every subject,
    /// and a view answers that from a flag).
    fn gates(&self) -> &[super::GateRule];
    /// Minutes after local midnight at `now` in `tz` (a view may cache it).
    fn local_minute(&self, tz: Tz, now: UnixMillis) -> u16 {
        local_minute(tz, now)
    }
}

/// The view of a subject Kept does not know.
pub(crate) struct Unknown;

impl SubjectView for Unknown {
    fn status(&self) -> Option<Status> {
        None
    }
    fn place(&self) -> PlaceId {
        PlaceId(0)
    }
    fn gpc(&self) -> bool {
        false
    }
    fn promise(&self, _: &Query, _: usize) -> Option<Origin> {
        None
    }
    fn soft_opt_in_source(&self, _: &Query) -> bool {
        false
    }
    fn implied(&self) -> Implied {
        Implied::default()
    }
    fn consent(&self, _: &Query) -> Option<Fact> {
        None
    }
    fn topic_state(&self, _: &Query) -> Option<Fact> {
        None
    }
    fn preference(&self, _: ChannelId) -> Option<Pref> {
        None
    }
    fn last_interaction(&self) -> Option<UnixMillis> {
        None
    }
    fn contacts_between(&self, _: ChannelId, _: UnixMillis, _: UnixMillis) -> u32 {
        0
    }
    fn time_zone(&self) -> Option<Tz> {
        None
    }
    fn gates(&self) -> &[super::GateRule] {
        &[]
    }
}

fn deny(reason: ReasonCode, evidence: EvidenceList) -> Decision {
    Decision::deny(reason, evidence)
}

fn rule(rule: Option<crate::rulebook::RuleId>) -> Option<Evidence> {
    rule.map(|rule| Evidence::Rule { rule })
}

fn list<const N: usize>(items: [Option<Evidence>; N]) -> EvidenceList {
    let mut out = EvidenceList::new();
    for e in items.into_iter().flatten() {
        out.push(e);
    }
    out
}

/// Gate 1: the subject. `Err` is the denial.
pub(crate) fn subject_gate<V: SubjectView>(query: &Query, view: &V) -> Result<(), ReasonCode> {
    let status = view.status().ok_or(ReasonCode::DeniedUnknownSubject)?;
    if status.erasure {
        return Err(ReasonCode::DeniedErasurePending);
    }
    if status.erasure_suppressed && query.class != PurposeClass::Essential {
        return Err(ReasonCode::DeniedSuppressedAfterErasure);
    }
    if status.suppressed && query.channel.is_some() {
        return Err(ReasonCode::DeniedSuppressed);
    }
    Ok(())
}

/// Gate 1, the requests part: a restriction, objection, opt-out of sale or limit on
/// sensitive data the subject asked for that stops this use. The requirement is looked up only
/// for a subject with a gate, so the common path is one empty-slice test.
pub(crate) fn request_gate<V: SubjectView>(
    ctx: &Compiled,
    query: &Query,
    view: &V,
) -> Option<(ReasonCode, Evidence)> {
    let gates = view.gates();
    if gates.is_empty() {
        return None;
    }
    super::gates::stopped_by(gates, query, ctx.requirement(view.place(), query))
}

/// The walk.
pub(crate) fn walk<V: SubjectView>(
    ctx: &Compiled,
    query: &Query,
    view: &V,
    now: UnixMillis,
) -> Decision {
    if let Some(reason) = query.invalid {
        return deny(reason, EvidenceList::new());
    }
    if let Err(reason) = subject_gate(query, view) {
        return deny(reason, EvidenceList::new());
    }
    if let Some((reason, evidence)) = request_gate(ctx, query, view) {
        return deny(reason, smallvec![evidence]);
    }

    // Gate 2: the promise.
    if let Some(rule) = query.forbidden {
        return deny(
            ReasonCode::DeniedForbiddenUse,
            smallvec![Evidence::ForbiddenUse { rule }],
        );
    }
    let mut evidence = EvidenceList::new();
    for i in 0..query.categories.len() {
        let category = u16::try_from(i).unwrap_or(u16::MAX);
        match view.promise(query, i) {
            Some(o) => evidence.push(Evidence::Provenance {
                category,
                point: o.point,
                notice: o.notice,
                version: o.version,
            }),
            None => {
                return deny(
                    ReasonCode::DeniedNotPromised,
                    smallvec![Evidence::NotPromised { category }],
                );
            }
        }
    }

    // Gate 3: the legal basis.
    let Some(req) = ctx.requirement(view.place(), query) else {
        return deny(ReasonCode::DeniedNoLegalBasis, EvidenceList::new());
    };
    let reason = match legal_gate(query, req, view, now, &mut evidence) {
        Ok(reason) => reason,
        Err(denied) => return denied,
    };

    // Gate 4: the person's preferences.
    if let Some(denied) = preference_gate(query, view, now, &mut evidence) {
        return denied;
    }
    Decision {
        allowed: true,
        reason,
        evidence,
        obligations: req.obligations,
    }
}

/// Whether a negative record stops this use: objections stop every use that is not carried by
/// a contract (and direct marketing and profiling always); withdrawals and opt-outs stop every
/// use that is not carried by a contract.
pub(crate) fn negative(query: &Query, req: &Requirement, fact: &Fact) -> Option<ReasonCode> {
    let objectionable = req.level >= Level::OptOut
        || query.class.is_direct_marketing()
        || query.class == PurposeClass::Personalize;
    match fact.action {
        ConsentAction::Objected if objectionable => Some(ReasonCode::DeniedObjected),
        ConsentAction::Withdrawn | ConsentAction::Refused | ConsentAction::OptedOut
            if req.level >= Level::OptOut =>
        {
            Some(if fact.topic_level {
                ReasonCode::DeniedUnsubscribed
            } else {
                match fact.action {
                    ConsentAction::Withdrawn => ReasonCode::DeniedWithdrawn,
                    ConsentAction::Refused => ReasonCode::DeniedRefused,
                    _ => ReasonCode::DeniedOptedOut,
                }
            })
        }
        _ => None,
    }
}

/// An allowing reason, its evidence appended to `out`.
fn allow<const N: usize>(
    out: &mut EvidenceList,
    reason: ReasonCode,
    items: [Option<Evidence>; N],
) -> Result<ReasonCode, Decision> {
    for e in items.into_iter().flatten() {
        out.push(e);
    }
    Ok(reason)
}

/// Gate 3. `Ok`: the allowing reason (its evidence appended to `out`); `Err`: the denial.
pub(crate) fn legal_gate<V: SubjectView>(
    query: &Query,
    req: &Requirement,
    view: &V,
    now: UnixMillis,
    out: &mut EvidenceList,
) -> Result<ReasonCode, Decision> {
    if req.basis.is_none() {
        return Err(deny(
            ReasonCode::DeniedNoLegalBasis,
            list([rule(req.basis_rule)]),
        ));
    }
    let latest = view.consent(query);
    if let Some(fact) = &latest
        && let Some(reason) = negative(query, req, fact)
    {
        let cite = if reason == ReasonCode::DeniedObjected {
            rule(req.objection.or(req.level_rule))
        } else {
            None
        };
        return Err(deny(
            reason,
            list([Some(Evidence::Ledger { seq: fact.seq }), cite]),
        ));
    }
    if let Some((gpc_rule, _)) = req.gpc
        && crate::signals::gpc::in_force(req.gpc, now)
        && view.gpc()
    {
        return Err(deny(
            ReasonCode::DeniedGpc,
            smallvec![Evidence::Rule { rule: gpc_rule }],
        ));
    }
    match req.level {
        Level::None => allow(out, ReasonCode::AllowedContract, [rule(req.level_rule)]),
        Level::OptOut => match latest {
            Some(f) if f.action == ConsentAction::Given => allow(
                out,
                ReasonCode::AllowedConsent,
                [Some(Evidence::Ledger { seq: f.seq })],
            ),
            _ => allow(out, ReasonCode::AllowedOptOutRegime, [rule(req.level_rule)]),
        },
        Level::OptIn | Level::OptInWritten => match latest {
            Some(f) if f.action == ConsentAction::Given => {
                given(req, &f, view.last_interaction(), now, out)
            }
            _ => without_record(query, req, view, now, out),
        },
    }
}

/// A given consent under an opt-in requirement: the right kind, and not expired (a refresh
/// counted from the subject's `last_interaction` where the row says so).
pub(crate) fn given(
    req: &Requirement,
    fact: &Fact,
    last_interaction: Option<UnixMillis>,
    now: UnixMillis,
    out: &mut EvidenceList,
) -> Result<ReasonCode, Decision> {
    let ledger = Some(Evidence::Ledger { seq: fact.seq });
    if req.level == Level::OptInWritten && fact.method != CollectionMethod::Written {
        return Err(deny(
            ReasonCode::DeniedNoConsent,
            list([ledger, rule(req.level_rule)]),
        ));
    }
    let implied = matches!(
        fact.method,
        CollectionMethod::ImpliedPurchase | CollectionMethod::ImpliedInquiry
    );
    if implied {
        let Some((implied_rule, purchase, inquiry)) = req.implied else {
            return Err(deny(
                ReasonCode::DeniedNoConsent,
                list([ledger, rule(req.level_rule)]),
            ));
        };
        let months = if fact.method == CollectionMethod::ImpliedPurchase {
            purchase
        } else {
            inquiry
        };
        if add_months(fact.at, months) <= now {
            return Err(deny(
                ReasonCode::DeniedExpired,
                list([ledger, rule(Some(implied_rule))]),
            ));
        }
    }
    if let Some(refresh) = req.refresh
        && refresh.expires(fact.at, last_interaction) <= now
    {
        return Err(deny(
            ReasonCode::DeniedExpired,
            list([ledger, rule(Some(refresh.rule))]),
        ));
    }
    let reason = if implied {
        ReasonCode::AllowedImpliedConsent
    } else {
        ReasonCode::AllowedConsent
    };
    allow(out, reason, [ledger])
}

/// No covering record under an opt-in requirement: soft opt-in, implied consent, or nothing.
pub(crate) fn without_record<V: SubjectView>(
    query: &Query,
    req: &Requirement,
    view: &V,
    now: UnixMillis,
    out: &mut EvidenceList,
) -> Result<ReasonCode, Decision> {
    if let Some(soft_rule) = req.soft_opt_in
        && query.soft_channel
        && view.soft_opt_in_source(query)
    {
        return allow(
            out,
            ReasonCode::AllowedSoftOptIn,
            [Some(Evidence::Rule { rule: soft_rule })],
        );
    }
    if let Some((implied_rule, purchase_months, inquiry_months)) = req.implied {
        let implied = view.implied();
        let cite = |(at, point): (UnixMillis, PointId)| {
            [
                Some(Evidence::Implied { point, at }),
                rule(Some(implied_rule)),
            ]
        };
        let purchase = implied
            .purchase
            .filter(|(at, _)| add_months(*at, purchase_months) > now);
        let inquiry = implied
            .inquiry
            .filter(|(at, _)| add_months(*at, inquiry_months) > now);
        if let Some(source) = purchase.or(inquiry) {
            return allow(out, ReasonCode::AllowedImpliedConsent, cite(source));
        }
        if let Some(source) = implied.purchase.or(implied.inquiry) {
            return Err(deny(ReasonCode::DeniedExpired, list(cite(source))));
        }
    }
    Err(deny(
        ReasonCode::DeniedNoConsent,
        list([rule(req.level_rule)]),
    ))
}

/// Gate 4, the topic part: a topic whose own latest record is negative is unsubscribed.
pub(crate) fn topic_gate<V: SubjectView>(query: &Query, view: &V) -> Option<Decision> {
    query.topic?;
    let fact = view.topic_state(query)?;
    fact.action.is_negative().then(|| {
        deny(
            ReasonCode::DeniedUnsubscribed,
            smallvec![Evidence::Ledger { seq: fact.seq }],
        )
    })
}

/// Gate 4: topic subscription, then, for uses that are not essential, the frequency the person
/// chose and their quiet hours. Essential messages (a shipping update) are not held back.
pub(crate) fn preference_gate<V: SubjectView>(
    query: &Query,
    view: &V,
    now: UnixMillis,
    evidence: &mut EvidenceList,
) -> Option<Decision> {
    if let Some(denied) = topic_gate(query, view) {
        return Some(denied);
    }
    contact_gate(query, view, now, evidence)
}

/// Gate 4, the frequency and quiet-hours part.
pub(crate) fn contact_gate<V: SubjectView>(
    query: &Query,
    view: &V,
    now: UnixMillis,
    evidence: &mut EvidenceList,
) -> Option<Decision> {
    if query.class == PurposeClass::Essential {
        return None;
    }
    let channel = query.channel?;
    let pref = view.preference(channel)?;
    if let Some(f) = pref.frequency {
        let sent = view.contacts_between(channel, now.saturating_sub(f.period.millis()), now);
        if sent >= f.max {
            return Some(deny(
                ReasonCode::DeniedFrequencyCap,
                smallvec![Evidence::FrequencyCap {
                    channel,
                    max: f.max,
                    period: f.period,
                    sent,
                }],
            ));
        }
    }
    if let Some(q) = pref.quiet
        && q.start_minute != q.end_minute
    {
        let tz = view.time_zone();
        let local_minute = view.local_minute(tz.unwrap_or(Tz::UTC), now);
        let inside = if q.start_minute < q.end_minute {
            (q.start_minute..q.end_minute).contains(&local_minute)
        } else {
            local_minute >= q.start_minute || local_minute < q.end_minute
        };
        if inside {
            return Some(deny(
                ReasonCode::DeniedQuietHours,
                list([
                    Some(Evidence::QuietHours {
                        channel,
                        start_minute: q.start_minute,
                        end_minute: q.end_minute,
                        local_minute,
                    }),
                    tz.is_none().then_some(Evidence::TimeZoneFallback),
                ]),
            ));
        }
        if tz.is_none() {
            evidence.push(Evidence::TimeZoneFallback);
        }
    }
    None
}

/// Minutes after local midnight at `now` in `tz`.
pub(crate) fn local_minute(tz: Tz, now: UnixMillis) -> u16 {
    let Some(utc) = chrono::DateTime::from_timestamp_millis(now) else {
        return 0;
    };
    let local = utc.with_timezone(&tz);
    u16::try_from(local.hour() * 60 + local.minute()).unwrap_or(0)
}
