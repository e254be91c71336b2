//! Where a subject stands, as the decisions see it: each purpose, each topic on each channel,
//! "do not sell or share", the latest erasure request, with the ledger records and traits they
//! rest on. The preference center reads it today; data subject requests and the admin console
//! will read the same.

use crate::http::error::ApiError;
use crate::index::IndexHandle;
use kept_core::decision::{Compiled, DecisionRequest, PlaceId, ReasonCode, SequencedRecord};
use kept_core::index::Snapshot;
use kept_core::ledger::{CollectionMethod, ConsentAction};
use kept_core::manifest::promises::notice_for;
use kept_core::manifest::{LegalBasis, Manifest, RegimeKey};
use kept_core::regime::Regime;
use kept_core::rulebook::Level;
use kept_core::subject::{Frequency, QuietHours, Subject, Trait};
use kept_core::{SubjectId, UnixMillis};
use kept_store::requests::ErasureRequest;
use kept_store::{Store, StoreError};

/// One purpose as the customer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurposeState {
    pub key: String,
    pub basis: Option<LegalBasis>,
    pub level: Level,
    /// The customer may switch it (not carried by a contract or the law, not managed as
    /// message topics).
    pub switchable: bool,
    /// Where it is switched instead: `messages` (per channel and topic) or `do-not-sell`.
    pub elsewhere: Option<&'static str>,
    /// Decisions allow it now.
    pub allowed: bool,
    /// The notice that promises it.
    pub notice: Option<String>,
}

/// One topic on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    pub topic: String,
    pub purpose: String,
    /// Decisions allow messages on it now (frequency caps and quiet hours aside).
    pub subscribed: bool,
    /// A double opt-in waits for its confirmation.
    pub pending: bool,
    pub notice: Option<String>,
}

/// One channel with topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    pub channel: String,
    pub topics: Vec<TopicState>,
    pub frequency: Option<Frequency>,
    pub quiet: Option<QuietHours>,
}

/// "Do not sell or share", where the law makes sale and sharing opt-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoNotSell {
    pub purpose: String,
    /// Sale and sharing are off for this subject.
    pub on: bool,
    /// A GPC signal counts as an opt-out here, now.
    pub gpc_binding: bool,
    /// A GPC opt-out is recorded.
    pub gpc_recorded: bool,
}

/// Everything the page and the API show about a subject's choices.
#[derive(Debug, Clone)]
pub struct Standing {
    pub subject: Subject,
    pub regime: Regime,
    pub place: PlaceId,
    /// The subject's ledger, decoded, in order.
    pub records: Vec<SequencedRecord>,
    pub purposes: Vec<PurposeState>,
    pub channels: Vec<ChannelState>,
    pub do_not_sell: Option<DoNotSell>,
    /// The latest erasure request.
    pub erasure: Option<ErasureRequest>,
    pub traits: Vec<Trait>,
}

/// The legal basis the manifest declares for `purpose` in `regime`.
pub fn basis(manifest: &Manifest, purpose: &str, regime: Regime) -> Option<LegalBasis> {
    let p = manifest.purposes.get(purpose)?;
    p.legal_basis
        .get(&RegimeKey::Regime(regime))
        .or_else(|| p.legal_basis.get(&RegimeKey::Default))
        .copied()
}

/// The notice shown for `purpose` (on `channel`, for `topic`): the one rule in `kept-core`.
pub fn shown_notice(
    manifest: &Manifest,
    purpose: &str,
    channel: Option<&str>,
    topic: Option<&str>,
) -> Option<String> {
    notice_for(manifest, purpose, channel, topic).map(|(id, _)| id.clone())
}

/// Whether a decision's reason means the use goes ahead, the person's contact limits aside.
fn allows(reason: ReasonCode) -> bool {
    reason.is_allowed()
        || matches!(
            reason,
            ReasonCode::DeniedFrequencyCap | ReasonCode::DeniedQuietHours
        )
}

/// Reads where `id` stands, from the store (the records and traits a change of mind is worked
/// out from) and the index (the decisions).
pub async fn standing(
    store: &dyn Store,
    index: &IndexHandle,
    manifest: &Manifest,
    id: SubjectId,
    now: UnixMillis,
) -> Result<Option<Standing>, ApiError> {
    let Some(subject) = store.subject(id).await? else {
        return Ok(None);
    };
    let records = store
        .ledger_for_subject(id)
        .await?
        .iter()
        .map(|e| {
            SequencedRecord::from_entry(e).map_err(|err| {
                ApiError::Store(StoreError::Corrupt(format!(
                    "record {} does not decode: {err}",
                    e.seq
                )))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let preferences = store.channel_preferences(id).await?;
    let erasure = store.erasure_requests(id).await?.into_iter().last();
    let traits = store.traits(id).await?;
    let compiled = index.compiled().map_err(ApiError::from)?.clone();
    let snapshot = index.snapshot().map_err(ApiError::from)?;
    let regime = subject.regime();
    let place = compiled.place_of(subject.country.as_deref(), subject.region.as_deref());
    let gpc_recorded = records
        .iter()
        .filter(|r| {
            r.record.method == CollectionMethod::Gpc && r.record.action != ConsentAction::Pending
        })
        .max_by_key(|r| r.seq)
        .is_some_and(|r| r.record.action == ConsentAction::OptedOut);
    let known = Basis {
        id,
        regime,
        place,
        gpc_recorded,
        pending: &|purpose, channel, topic| {
            records
                .iter()
                .filter(|r| {
                    r.record.purpose == purpose
                        && r.record.channel.as_deref() == Some(channel)
                        && r.record.topic.as_deref() == Some(topic)
                })
                .max_by_key(|r| r.seq)
                .is_some_and(|r| r.record.action == ConsentAction::Pending)
        },
        preference: &|channel| {
            preferences
                .iter()
                .filter(|p| p.channel == channel)
                .max_by_key(|p| p.updated_at)
                .map_or((None, None), |p| (p.frequency, p.quiet_hours))
        },
    };
    let (purposes, channels, do_not_sell) = work_out(&compiled, &snapshot, manifest, &known, now);
    Ok(Some(Standing {
        regime,
        place,
        records,
        purposes,
        channels,
        do_not_sell,
        erasure,
        traits,
        subject,
    }))
}

/// A subject's choices as the page and the JSON API show them: what `Standing` holds besides
/// the records and traits a change of mind is worked out from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choices {
    pub subject: SubjectId,
    pub regime: Regime,
    pub place: PlaceId,
    pub purposes: Vec<PurposeState>,
    pub channels: Vec<ChannelState>,
    pub do_not_sell: Option<DoNotSell>,
    /// The latest erasure request.
    pub erasure: Option<ErasureRequest>,
}

impl From<Standing> for Choices {
    fn from(s: Standing) -> Choices {
        Choices {
            subject: s.subject.id,
            regime: s.regime,
            place: s.place,
            purposes: s.purposes,
            channels: s.channels,
            do_not_sell: s.do_not_sell,
            erasure: s.erasure,
        }
    }
}

/// Where `id` stands as the page and the JSON API show it. Read from the index alone when it
/// serves reads and can answer exactly as the store would (see `choices_in_index`), else from
/// the store.
pub async fn choices(
    store: &dyn Store,
    index: &IndexHandle,
    manifest: &Manifest,
    id: SubjectId,
    now: UnixMillis,
) -> Result<Option<Choices>, ApiError> {
    if index.serves_reads()
        && let Some(choices) = choices_in_index(index, manifest, id, now)?
    {
        return Ok(Some(choices));
    }
    Ok(standing(store, index, manifest, id, now)
        .await?
        .map(Choices::from))
}

/// Where `id` stands, read from the index snapshot without the store: the same answer as
/// `standing` gives (a test holds it to that), since the index keeps, per subject, its place
/// and location, its latest GPC signal, the pending double opt-ins among its latest records
/// and its latest channel preferences. `None` when the index cannot say it exactly: a subject
/// it does not know (the store decides whether that is a 404), or one that asked for erasure
/// (the request's state and deadline are only in the store).
pub fn choices_in_index(
    index: &IndexHandle,
    manifest: &Manifest,
    id: SubjectId,
    now: UnixMillis,
) -> Result<Option<Choices>, ApiError> {
    let snapshot = index.snapshot()?;
    let Some(flags) = snapshot.subject(id) else {
        return Ok(None);
    };
    if flags.erasure {
        return Ok(None);
    }
    let Some(regime) = index.regime(&snapshot, id) else {
        return Ok(None);
    };
    let known = Basis {
        id,
        regime,
        place: flags.place,
        gpc_recorded: flags.gpc_opted_out,
        pending: &|purpose, channel, topic| snapshot.pending(id, purpose, channel, topic),
        preference: &|channel| {
            snapshot
                .channel_preference(id, channel)
                .unwrap_or((None, None))
        },
    };
    let (purposes, channels, do_not_sell) =
        work_out(snapshot.compiled(), &snapshot, manifest, &known, now);
    Ok(Some(Choices {
        subject: id,
        regime,
        place: flags.place,
        purposes,
        channels,
        do_not_sell,
        erasure: None,
    }))
}

/// What a subject's choices are worked out from besides the decisions, read from the store
/// or from the index.
struct Basis<'a> {
    id: SubjectId,
    regime: Regime,
    place: PlaceId,
    /// The latest GPC signal recorded (pending ones aside) is an opt-out.
    gpc_recorded: bool,
    /// Whether the latest record of exactly (purpose, channel, topic) is pending.
    pending: &'a dyn Fn(&str, &str, &str) -> bool,
    /// The latest frequency and quiet hours chosen on a channel.
    preference: &'a dyn Fn(&str) -> ContactLimits,
}

/// How often, and when not, a subject may be contacted on a channel.
type ContactLimits = (Option<Frequency>, Option<QuietHours>);

/// Each purpose, each channel's topics, and "do not sell or share", as the decisions on
/// `snapshot` see them.
fn work_out(
    compiled: &Compiled,
    snapshot: &Snapshot,
    manifest: &Manifest,
    known: &Basis<'_>,
    now: UnixMillis,
) -> (Vec<PurposeState>, Vec<ChannelState>, Option<DoNotSell>) {
    let (id, regime, place) = (known.id, known.regime, known.place);
    let level_of = |req: &DecisionRequest| {
        let query = compiled.prepare(req);
        compiled
            .requirement(place, &query)
            .map_or(Level::OptIn, |r| r.level)
    };
    let decide = |req: &DecisionRequest| allows(snapshot.decide(id, req, now).reason);

    let gpc_purpose = kept_core::signals::gpc::purpose(manifest);
    let do_not_sell = manifest.purposes.get(&gpc_purpose).and_then(|_| {
        let req = DecisionRequest::new(&gpc_purpose);
        (level_of(&req) == Level::OptOut).then(|| {
            let query = compiled.prepare(&req);
            let gpc_binding = compiled
                .requirement(place, &query)
                .and_then(|r| r.gpc)
                .is_some_and(|(_, from)| now >= from);
            DoNotSell {
                on: !decide(&req),
                purpose: gpc_purpose.clone(),
                gpc_binding,
                gpc_recorded: known.gpc_recorded,
            }
        })
    });

    let with_topics: Vec<&String> = manifest.topics.values().map(|t| &t.purpose).collect();
    let purposes = manifest
        .purposes
        .keys()
        .map(|key| {
            let req = DecisionRequest::new(key);
            let level = level_of(&req);
            let elsewhere = if with_topics.contains(&key) {
                Some("messages")
            } else if do_not_sell.as_ref().is_some_and(|d| &d.purpose == key) {
                Some("do-not-sell")
            } else {
                None
            };
            PurposeState {
                key: key.clone(),
                basis: basis(manifest, key, regime),
                level,
                switchable: level != Level::None && elsewhere.is_none(),
                elsewhere: elsewhere.filter(|_| level != Level::None),
                allowed: decide(&req),
                notice: shown_notice(manifest, key, None, None),
            }
        })
        .collect();

    let mut channels: Vec<ChannelState> = Vec::new();
    for channel in manifest.channels.keys() {
        let topics: Vec<TopicState> = manifest
            .topics
            .iter()
            .filter(|(_, t)| t.channels.contains(channel))
            .map(|(key, t)| {
                let req = DecisionRequest::new(&t.purpose).channel(channel).topic(key);
                TopicState {
                    topic: key.clone(),
                    purpose: t.purpose.clone(),
                    subscribed: decide(&req),
                    pending: (known.pending)(&t.purpose, channel, key),
                    notice: shown_notice(manifest, &t.purpose, Some(channel), Some(key)),
                }
            })
            .collect();
        if topics.is_empty() {
            continue;
        }
        let (frequency, quiet) = (known.preference)(channel);
        channels.push(ChannelState {
            channel: channel.clone(),
            topics,
            frequency,
            quiet,
        });
    }
    (purposes, channels, do_not_sell)
}
