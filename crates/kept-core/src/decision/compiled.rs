//! The manifest and the effective rulebook precompiled for decisions: every key becomes a small
//! integer id, and the requirement of every (place, purpose, channel, sensitivity) is worked out
//! once, so a decision is a few array reads.

use super::{DecisionRequest, ReasonCode};
use crate::UnixMillis;
use crate::manifest::{CollectionKind, KNOWN_CHANNELS, LegalBasis, Manifest, covers, is_within};
use crate::regime::Regime;
use crate::rulebook::{
    EffectiveRulebook, Level, Obligations, Place, PurposeClass, RefreshFrom, RuleId,
    RuleRequirement, Rulebook, add_months,
};
use rustc_hash::FxHashMap as HashMap;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $int:ty) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        pub struct $name(pub $int);
        impl $name {
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

id_type!(
    /// A purpose of the manifest, in key order.
    PurposeId, u16);
id_type!(
    /// A channel of the manifest, in key order.
    ChannelId, u8);
id_type!(
    /// A topic of the manifest, in key order.
    TopicId, u8);
id_type!(
    /// A notice of the manifest, in key order.
    NoticeId, u16);
id_type!(
    /// A collection point of the manifest, in key order.
    PointId, u16);
id_type!(
    /// A place (`Place::all()` order).
    PlaceId, u8);
id_type!(
    /// A request scope: what one decision asks about (purpose, channel?, topic?).
    ScopeId, u16);

/// What a decision asks about, as ids. A consent record covers a scope when its purpose is the
/// scope's and its channel and topic are the scope's or absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub purpose: PurposeId,
    pub channel: Option<ChannelId>,
    pub topic: Option<TopicId>,
}

/// The scope a consent record was made for, as ids (its purpose, channel and topic are known).
pub type RecordScope = Scope;

#[derive(Debug, Clone)]
pub struct PurposeInfo {
    pub key: String,
    pub class: PurposeClass,
    pub soft_opt_in: bool,
    /// Per `Regime::ALL` position.
    basis: [Option<LegalBasis>; 8],
}

#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub key: String,
    pub purpose: PurposeId,
    pub channels: Vec<ChannelId>,
}

#[derive(Debug, Clone)]
pub struct NoticeInfo {
    pub key: String,
    pub version: u32,
}

#[derive(Debug, Clone)]
pub struct PointInfo {
    pub key: String,
    pub kind: CollectionKind,
}

/// What the law and the manifest ask of one kind of use at one place. Each part names the row
/// it comes from, so a decision can cite it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The basis the manifest declares for the purpose here; `None`: it declares none.
    pub basis: Option<LegalBasis>,
    /// The row that reads the declared basis.
    pub basis_rule: Option<RuleId>,
    pub level: Level,
    /// The row that sets `level` (a law row before the declared basis when both do).
    pub level_rule: Option<RuleId>,
    /// Soft opt-in allowed, by this row.
    pub soft_opt_in: Option<RuleId>,
    /// Implied consent allowed (purchase months, inquiry months), by this row.
    pub implied: Option<(RuleId, u32, u32)>,
    /// Consent expires this many months after it was given (or after the last interaction),
    /// by this row.
    pub refresh: Option<Refresh>,
    /// A GPC signal is an opt-out from this time, by this row.
    pub gpc: Option<(RuleId, UnixMillis)>,
    /// The row that makes an objection absolute here, if one does.
    pub objection: Option<RuleId>,
    pub obligations: Obligations,
}

/// A consent that must be refreshed: `months` after what `from` says, by `rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refresh {
    pub rule: RuleId,
    pub months: u32,
    pub from: RefreshFrom,
}

impl Refresh {
    /// When a consent given at `given` expires for a subject whose last interaction was
    /// `last_interaction`.
    pub fn expires(&self, given: UnixMillis, last_interaction: Option<UnixMillis>) -> UnixMillis {
        let start = match self.from {
            RefreshFrom::Consent => given,
            RefreshFrom::LastInteraction => last_interaction.map_or(given, |l| l.max(given)),
        };
        add_months(start, self.months)
    }
}

/// The manifest could not be compiled for decisions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("the manifest declares {count} {what}; decisions support at most {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("topic `{topic}` names purpose `{purpose}`, which the manifest does not declare")]
    TopicPurpose { topic: String, purpose: String },
    #[error(transparent)]
    Rulebook(#[from] crate::rulebook::RulebookError),
}

impl CompileError {
    pub fn code(&self) -> &'static str {
        match self {
            CompileError::TooMany { .. } => "decision.too_many",
            CompileError::TopicPurpose { .. } => "decision.topic_purpose",
            CompileError::Rulebook(e) => e.code(),
        }
    }
}

/// The manifest and the effective rulebook, compiled. Immutable; share it in an `Arc`.
#[derive(Debug, Clone)]
pub struct Compiled {
    manifest: Manifest,
    rules: EffectiveRulebook,
    places: Vec<Place>,
    pub(crate) purposes: Vec<PurposeInfo>,
    purpose_ids: HashMap<String, PurposeId>,
    pub(crate) channels: Vec<String>,
    channel_ids: HashMap<String, ChannelId>,
    pub(crate) topics: Vec<TopicInfo>,
    topic_ids: HashMap<String, TopicId>,
    pub(crate) notices: Vec<NoticeInfo>,
    notice_ids: HashMap<String, NoticeId>,
    pub(crate) points: Vec<PointInfo>,
    point_ids: HashMap<String, PointId>,
    scopes: Vec<Scope>,
    scope_ids: HashMap<Scope, ScopeId>,
    /// `[place][purpose][channel slot][sensitive]`, channel slot 0 = no channel.
    requirements: Vec<Requirement>,
    /// Whether each category key the manifest or fideslang names is sensitive.
    sensitive: HashMap<String, bool>,
}

/// A decision request compiled against a `Compiled`: ids instead of keys, the categories to
/// check, and where its requirements sit. Prepare once, decide for many subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Set when the request itself cannot be allowed (unknown purpose, channel or topic).
    pub invalid: Option<ReasonCode>,
    pub purpose: PurposeId,
    pub class: PurposeClass,
    pub channel: Option<ChannelId>,
    pub topic: Option<TopicId>,
    pub scope: ScopeId,
    /// The requested categories, or those the channel implies when none were requested.
    pub categories: Vec<String>,
    pub sensitive: bool,
    /// Index of the first manifest `rules.forbid` entry that forbids this use.
    pub forbidden: Option<u16>,
    /// Soft opt-in could apply: the purpose enables it and the channel is email.
    pub soft_channel: bool,
    requirement_offset: usize,
}

/// Why soft opt-in can never apply to a purpose (`Compiled::soft_opt_in_never`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftOptInNever {
    /// The manifest has no `email` channel: soft opt-in is for email only.
    NoEmailChannel,
    /// No regime's rules allow soft opt-in for the purpose as its legal bases are declared.
    NoRegime,
    /// No purchase collection point collects an email address under a notice that promises
    /// the purpose by email.
    NoPurchasePromise,
}

/// The data category a channel reaches a person through, checked when a request names none.
pub fn channel_categories(channel: &str) -> &'static [&'static str] {
    match channel {
        "sms" | "phone" => &["user.contact.phone_number"],
        "email" => &["user.contact.email"],
        "postal" => &["user.contact.address"],
        _ => &[],
    }
}

/// The category whose provenance makes soft opt-in possible.
pub const EMAIL_CATEGORY: &str = "user.contact.email";

fn id_of<T: TryFrom<usize>>(i: usize, what: &'static str, max: usize) -> Result<T, CompileError> {
    T::try_from(i).map_err(|_| CompileError::TooMany {
        what,
        count: i + 1,
        max,
    })
}

impl Compiled {
    /// Compiles `manifest` against the built-in rulebook.
    pub fn new(manifest: Manifest) -> Result<Compiled, CompileError> {
        let rulebook = Rulebook::builtin()?;
        Compiled::with_rulebook(manifest, &rulebook)
    }

    pub fn with_rulebook(
        manifest: Manifest,
        rulebook: &Rulebook,
    ) -> Result<Compiled, CompileError> {
        let rules = EffectiveRulebook::new(rulebook, &manifest);
        if rules.rules().len() > usize::from(u16::MAX) {
            return Err(CompileError::TooMany {
                what: "rules",
                count: rules.rules().len(),
                max: usize::from(u16::MAX),
            });
        }
        let places = Place::all();

        let mut purposes = Vec::new();
        let mut purpose_ids = HashMap::default();
        for (i, (key, p)) in manifest.purposes.iter().enumerate() {
            let id = PurposeId(id_of(i, "purposes", usize::from(u16::MAX))?);
            let mut basis = [None; 8];
            for (slot, regime) in basis.iter_mut().zip(Regime::ALL) {
                *slot = p.basis_in(regime);
            }
            purposes.push(PurposeInfo {
                key: key.clone(),
                class: PurposeClass::of(key),
                soft_opt_in: p.soft_opt_in,
                basis,
            });
            purpose_ids.insert(key.clone(), id);
        }

        let mut channels = Vec::new();
        let mut channel_ids = HashMap::default();
        // Channel ids fit in a byte with room for "no channel" in packed keys.
        for (i, key) in manifest.channels.keys().enumerate() {
            let id = ChannelId(id_of(i, "channels", 254)?);
            if i >= 254 {
                return Err(CompileError::TooMany {
                    what: "channels",
                    count: manifest.channels.len(),
                    max: 254,
                });
            }
            channels.push(key.clone());
            channel_ids.insert(key.clone(), id);
        }

        let mut topics = Vec::new();
        let mut topic_ids = HashMap::default();
        if manifest.topics.len() > 254 {
            return Err(CompileError::TooMany {
                what: "topics",
                count: manifest.topics.len(),
                max: 254,
            });
        }
        for (i, (key, t)) in manifest.topics.iter().enumerate() {
            let id = TopicId(id_of(i, "topics", 254)?);
            let purpose =
                *purpose_ids
                    .get(&t.purpose)
                    .ok_or_else(|| CompileError::TopicPurpose {
                        topic: key.clone(),
                        purpose: t.purpose.clone(),
                    })?;
            topics.push(TopicInfo {
                key: key.clone(),
                purpose,
                channels: t
                    .channels
                    .iter()
                    .filter_map(|c| channel_ids.get(c).copied())
                    .collect(),
            });
            topic_ids.insert(key.clone(), id);
        }

        let mut notices = Vec::new();
        let mut notice_ids = HashMap::default();
        for (i, (key, n)) in manifest.notices.iter().enumerate() {
            notice_ids.insert(
                key.clone(),
                NoticeId(id_of(i, "notices", usize::from(u16::MAX))?),
            );
            notices.push(NoticeInfo {
                key: key.clone(),
                version: n.version,
            });
        }

        let mut points = Vec::new();
        let mut point_ids = HashMap::default();
        for (i, (key, cp)) in manifest.collection_points.iter().enumerate() {
            point_ids.insert(
                key.clone(),
                PointId(id_of(i, "collection points", usize::from(u16::MAX))?),
            );
            points.push(PointInfo {
                key: key.clone(),
                kind: cp.kind,
            });
        }

        let mut scopes = Vec::new();
        for p in 0..purposes.len() {
            let purpose = PurposeId(id_of(p, "purposes", usize::from(u16::MAX))?);
            scopes.push(Scope {
                purpose,
                channel: None,
                topic: None,
            });
            for c in 0..channels.len() {
                scopes.push(Scope {
                    purpose,
                    channel: Some(ChannelId(id_of(c, "channels", 254)?)),
                    topic: None,
                });
            }
        }
        for (t, info) in topics.iter().enumerate() {
            let topic = Some(TopicId(id_of(t, "topics", 254)?));
            scopes.push(Scope {
                purpose: info.purpose,
                channel: None,
                topic,
            });
            for c in &info.channels {
                scopes.push(Scope {
                    purpose: info.purpose,
                    channel: Some(*c),
                    topic,
                });
            }
        }
        let mut scope_ids = HashMap::default();
        for (i, s) in scopes.iter().enumerate() {
            scope_ids.insert(*s, ScopeId(id_of(i, "scopes", usize::from(u16::MAX))?));
        }

        let mut compiled = Compiled {
            manifest,
            rules,
            places,
            purposes,
            purpose_ids,
            channels,
            channel_ids,
            topics,
            topic_ids,
            notices,
            notice_ids,
            points,
            point_ids,
            scopes,
            scope_ids,
            requirements: Vec::new(),
            sensitive: HashMap::default(),
        };
        let known = crate::fideslang::DATA_CATEGORIES
            .iter()
            .map(|c| c.key.to_owned())
            .chain(compiled.manifest.categories.keys().cloned())
            .chain(
                compiled
                    .manifest
                    .notices
                    .values()
                    .flat_map(|n| n.categories.iter().cloned()),
            )
            .chain(
                compiled
                    .manifest
                    .collection_points
                    .values()
                    .flat_map(|cp| cp.fields.values().cloned()),
            )
            .collect::<Vec<_>>();
        for key in known {
            let sensitive = compiled.manifest.is_sensitive_category(&key);
            compiled.sensitive.insert(key, sensitive);
        }
        let mut requirements = Vec::new();
        for place in &compiled.places {
            for purpose in &compiled.purposes {
                for slot in 0..=compiled.channels.len() {
                    let channel = slot
                        .checked_sub(1)
                        .and_then(|c| compiled.channels.get(c))
                        .map(String::as_str);
                    for sensitive in [false, true] {
                        requirements.push(compiled.work_out(*place, purpose, channel, sensitive));
                    }
                }
            }
        }
        compiled.requirements = requirements;
        Ok(compiled)
    }

    /// What the rows and the declared basis ask of one kind of use at one place.
    fn work_out(
        &self,
        place: Place,
        purpose: &PurposeInfo,
        channel: Option<&str>,
        sensitive: bool,
    ) -> Requirement {
        struct Contribution {
            rule: RuleId,
            level: Level,
            soft: bool,
            implied: bool,
            declared: bool,
        }
        let regime_slot = Regime::ALL
            .iter()
            .position(|r| *r == place.regime)
            .unwrap_or(Regime::ALL.len() - 1);
        let basis = purpose.basis.get(regime_slot).copied().flatten();
        let mut req = Requirement {
            basis,
            basis_rule: None,
            level: Level::None,
            level_rule: None,
            soft_opt_in: None,
            implied: None,
            refresh: None,
            gpc: None,
            objection: None,
            obligations: Obligations::NONE,
        };
        let mut contributions = Vec::new();
        for (i, rule) in self.rules.rules().iter().enumerate() {
            let Ok(i) = u16::try_from(i) else { break };
            let id = RuleId(i);
            if !rule.applies(place, &purpose.key, purpose.class, channel, sensitive) {
                continue;
            }
            req.obligations = req.obligations.union(rule.obligations);
            // The row whose consent expires first: fewer months, and on a tie the one that
            // counts from the consent rather than from the last interaction.
            if let Some(months) = rule.refresh_months
                && req
                    .refresh
                    .is_none_or(|r| (months, rule.refresh_from) < (r.months, r.from))
            {
                req.refresh = Some(Refresh {
                    rule: id,
                    months,
                    from: rule.refresh_from,
                });
            }
            if let Some(from) = rule.gpc_from
                && req.gpc.is_none_or(|(_, f)| from < f)
            {
                req.gpc = Some((id, from));
            }
            if rule.objection_absolute && req.objection.is_none() {
                req.objection = Some(id);
            }
            let level = match rule.requirement {
                RuleRequirement::DeclaredBasis => {
                    if req.basis_rule.is_none() {
                        req.basis_rule = Some(id);
                    }
                    let Some(basis) = basis else { continue };
                    let level = Level::of_basis(basis);
                    contributions.push(Contribution {
                        rule: id,
                        level,
                        soft: purpose.soft_opt_in,
                        implied: true,
                        declared: true,
                    });
                    continue;
                }
                RuleRequirement::None => Level::None,
                RuleRequirement::OptOut => Level::OptOut,
                RuleRequirement::OptIn => Level::OptIn,
                RuleRequirement::OptInWritten => Level::OptInWritten,
            };
            if let Some(i) = rule.implied
                && req.implied.is_none()
            {
                req.implied = Some((id, i.purchase_months, i.inquiry_months));
            }
            contributions.push(Contribution {
                rule: id,
                level,
                soft: rule.soft_opt_in && purpose.soft_opt_in,
                implied: rule.implied.is_some(),
                declared: false,
            });
        }
        if req.basis_rule.is_none() {
            // No row reads a basis here: nothing can be allowed (fail closed).
            req.basis = None;
        }
        let level = contributions
            .iter()
            .map(|c| c.level)
            .max()
            .unwrap_or(Level::None);
        req.level = level;
        req.level_rule = contributions
            .iter()
            .find(|c| c.level == level && !c.declared)
            .or_else(|| contributions.iter().find(|c| c.level == level))
            .map(|c| c.rule)
            .or(req.basis_rule);
        let strict: Vec<&Contribution> = contributions
            .iter()
            .filter(|c| c.level >= Level::OptIn)
            .collect();
        if level == Level::OptIn && strict.iter().all(|c| c.soft) {
            req.soft_opt_in = strict
                .iter()
                .find(|c| !c.declared)
                .or_else(|| strict.first())
                .map(|c| c.rule);
        }
        if !(level == Level::OptIn && strict.iter().all(|c| c.implied)) {
            req.implied = None;
        }
        req
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn rulebook(&self) -> &EffectiveRulebook {
        &self.rules
    }

    pub fn places(&self) -> &[Place] {
        &self.places
    }

    pub fn place(&self, id: PlaceId) -> Option<Place> {
        self.places.get(id.index()).copied()
    }

    /// The place id of a subject located at `country`/`region`; unknown → `strictest`.
    pub fn place_of(&self, country: Option<&str>, region: Option<&str>) -> PlaceId {
        let place = Place::resolve(country, region);
        let i = self
            .places
            .iter()
            .position(|p| *p == place)
            .or_else(|| {
                self.places
                    .iter()
                    .position(|p| p.regime == Regime::Strictest)
            })
            .unwrap_or(0);
        PlaceId(u8::try_from(i).unwrap_or(0))
    }

    pub fn purpose_id(&self, key: &str) -> Option<PurposeId> {
        self.purpose_ids.get(key).copied()
    }

    pub fn purpose(&self, id: PurposeId) -> Option<&PurposeInfo> {
        self.purposes.get(id.index())
    }

    pub fn channel_id(&self, key: &str) -> Option<ChannelId> {
        self.channel_ids.get(key).copied()
    }

    pub fn channel_key(&self, id: ChannelId) -> &str {
        self.channels.get(id.index()).map_or("", String::as_str)
    }

    pub fn topic_id(&self, key: &str) -> Option<TopicId> {
        self.topic_ids.get(key).copied()
    }

    pub fn topic(&self, id: TopicId) -> Option<&TopicInfo> {
        self.topics.get(id.index())
    }

    pub fn notice_id(&self, key: &str) -> Option<NoticeId> {
        self.notice_ids.get(key).copied()
    }

    pub fn notice(&self, id: NoticeId) -> Option<&NoticeInfo> {
        self.notices.get(id.index())
    }

    pub fn point_id(&self, key: &str) -> Option<PointId> {
        self.point_ids.get(key).copied()
    }

    pub fn point(&self, id: PointId) -> Option<&PointInfo> {
        self.points.get(id.index())
    }

    pub fn scope_count(&self) -> usize {
        self.scopes.len()
    }

    pub fn scope(&self, id: ScopeId) -> Option<Scope> {
        self.scopes.get(id.index()).copied()
    }

    pub fn scope_id(&self, scope: &Scope) -> Option<ScopeId> {
        self.scope_ids.get(scope).copied()
    }

    /// The class of a purpose key; unknown keys count as `Other`.
    pub fn class_of_key(&self, purpose: &str) -> PurposeClass {
        self.purpose_id(purpose)
            .and_then(|p| self.purpose(p))
            .map_or(PurposeClass::Other, |p| p.class)
    }

    /// The scope a consent record speaks for, when its purpose, channel and topic are known
    /// (a record naming anything else can cover no request, so it is not kept).
    pub fn record_scope(
        &self,
        purpose: &str,
        channel: Option<&str>,
        topic: Option<&str>,
    ) -> Option<RecordScope> {
        let purpose = self.purpose_id(purpose)?;
        let channel = match channel {
            None => None,
            Some(c) => Some(self.channel_id(c)?),
        };
        let topic = match topic {
            None => None,
            Some(t) => Some(self.topic_id(t)?),
        };
        Some(Scope {
            purpose,
            channel,
            topic,
        })
    }

    /// Whether a consent record of `record` scope (and action) counts for decisions on `scope`,
    /// and whether it counts as the topic's own record. See `decision` for the precedence.
    pub fn covers(&self, record: RecordScope, objection: bool, scope: Scope) -> bool {
        let channel_ok = record.channel.is_none() || record.channel == scope.channel;
        if !channel_ok {
            return false;
        }
        if record.purpose == scope.purpose {
            return record.topic.is_none() || record.topic == scope.topic;
        }
        // An objection to one direct-marketing purpose is an objection to direct marketing.
        objection
            && record.topic.is_none()
            && self.class_of(record.purpose).is_direct_marketing()
            && self.class_of(scope.purpose).is_direct_marketing()
    }

    /// Whether a record of `record` scope is the topic's own record for `scope`.
    pub fn is_topic_record(&self, record: RecordScope, scope: Scope) -> bool {
        scope.topic.is_some()
            && record.topic == scope.topic
            && record.purpose == scope.purpose
            && (record.channel.is_none() || record.channel == scope.channel)
    }

    fn class_of(&self, p: PurposeId) -> PurposeClass {
        self.purpose(p).map_or(PurposeClass::Other, |p| p.class)
    }

    /// The requirement for `query` at `place`.
    pub fn requirement(&self, place: PlaceId, query: &Query) -> Option<&Requirement> {
        let stride = self.purposes.len() * (self.channels.len() + 1) * 2;
        self.requirements
            .get(place.index() * stride + query.requirement_offset)
    }

    /// Compiles a request. Never fails: a request that cannot be allowed carries its reason.
    pub fn prepare(&self, req: &DecisionRequest) -> Query {
        let mut q = Query {
            invalid: None,
            purpose: PurposeId(0),
            class: PurposeClass::Other,
            channel: None,
            topic: None,
            scope: ScopeId(0),
            categories: Vec::new(),
            sensitive: false,
            forbidden: None,
            soft_channel: false,
            requirement_offset: 0,
        };
        let Some(purpose) = self.purpose_id(&req.purpose) else {
            q.invalid = Some(ReasonCode::DeniedUnknownPurpose);
            return q;
        };
        q.purpose = purpose;
        q.class = self.class_of(purpose);
        if let Some(c) = &req.channel {
            match self.channel_id(c) {
                Some(id) if KNOWN_CHANNELS.contains(&c.as_str()) => q.channel = Some(id),
                _ => {
                    q.invalid = Some(ReasonCode::DeniedUnknownChannel);
                    return q;
                }
            }
        }
        if let Some(t) = &req.topic {
            let topic = self.topic_id(t).filter(|id| {
                self.topics
                    .get(id.index())
                    .is_some_and(|i| i.purpose == purpose)
            });
            match topic {
                Some(id) => q.topic = Some(id),
                None => {
                    q.invalid = Some(ReasonCode::DeniedUnknownTopic);
                    return q;
                }
            }
        }
        let scope = Scope {
            purpose,
            channel: q.channel,
            topic: q.topic,
        };
        match self.scope_id(&scope) {
            Some(id) => q.scope = id,
            // The topic is not sent on this channel.
            None => {
                q.invalid = Some(ReasonCode::DeniedUnknownTopic);
                return q;
            }
        }
        q.categories = if req.categories.is_empty() {
            req.channel
                .as_deref()
                .map(channel_categories)
                .unwrap_or_default()
                .iter()
                .map(|c| (*c).to_owned())
                .collect()
        } else {
            req.categories.clone()
        };
        q.sensitive = q.categories.iter().any(|c| {
            self.sensitive
                .get(c)
                .copied()
                .unwrap_or_else(|| self.manifest.is_sensitive_category(c))
        });
        q.forbidden = self
            .manifest
            .rules
            .forbid
            .iter()
            .position(|f| {
                covers(&f.purpose, &req.purpose)
                    && q.categories.iter().any(|c| covers(&f.category, c))
            })
            .and_then(|i| u16::try_from(i).ok());
        q.soft_channel = req.channel.as_deref() == Some("email")
            && self
                .purposes
                .get(purpose.index())
                .is_some_and(|p| p.soft_opt_in);
        let slot = q.channel.map_or(0, |c| c.index() + 1);
        q.requirement_offset =
            ((purpose.index() * (self.channels.len() + 1)) + slot) * 2 + usize::from(q.sensitive);
        q
    }

    /// Whether data of `category` collected at `point` under `notice` (at `version`) was
    /// promised for `query`'s purpose and channel. Only the manifest's current notice version is
    /// known, so data collected under another version promises nothing (fail closed).
    pub fn promises(
        &self,
        query: &Query,
        point: Option<PointId>,
        notice: Option<NoticeId>,
        version: u32,
        category: &str,
    ) -> bool {
        let (Some(_), Some(notice)) = (point, notice) else {
            return false;
        };
        let Some(info) = self.notices.get(notice.index()) else {
            return false;
        };
        if info.version != version {
            return false;
        }
        let (Some(n), Some(p)) = (
            self.manifest.notices.get(&info.key),
            self.purposes.get(query.purpose.index()),
        ) else {
            return false;
        };
        let channel = query.channel.map(|c| self.channel_key(c));
        crate::manifest::promises::promises_use(&self.manifest, n, category, &p.key, channel)
    }

    /// Whether an email address of `category` collected at `point` under `notice` (at
    /// `version`) makes the customer one soft opt-in may reach for `query`: it came from a
    /// purchase, and the notice shown there promised this use, so the customer was told of it
    /// and could object when the address was collected (ePrivacy Art. 13(2)). The one rule the
    /// decisions, the index, audiences and `kept lint` share.
    pub fn soft_opt_in_source(
        &self,
        query: &Query,
        point: Option<PointId>,
        notice: Option<NoticeId>,
        version: u32,
        category: &str,
    ) -> bool {
        point
            .and_then(|p| self.point(p))
            .is_some_and(|p| p.kind == CollectionKind::Purchase)
            && Compiled::category_matches(category, EMAIL_CATEGORY)
            && self.promises(query, point, notice, version, category)
    }

    /// Why soft opt-in can never allow `purpose` for anyone under this manifest, or `None`
    /// when some customer could be reached by it. Asks the same questions a decision asks:
    /// the purpose enables it on email, some place's rows allow it, and some purchase point
    /// collects an email address under a notice that is a `soft_opt_in_source`.
    pub fn soft_opt_in_never(&self, purpose: &str) -> Option<SoftOptInNever> {
        let query = self.prepare(&DecisionRequest::new(purpose).channel("email"));
        if query.invalid.is_some() || !query.soft_channel {
            return Some(SoftOptInNever::NoEmailChannel);
        }
        let allowed_somewhere = (0..self.places.len()).any(|i| {
            let place = PlaceId(u8::try_from(i).unwrap_or(u8::MAX));
            self.requirement(place, &query)
                .is_some_and(|r| r.soft_opt_in.is_some())
        });
        if !allowed_somewhere {
            return Some(SoftOptInNever::NoRegime);
        }
        let source = self.manifest.collection_points.iter().any(|(key, cp)| {
            let point = self.point_id(key);
            let notice = self.notice_id(&cp.notice);
            let version = notice.and_then(|n| self.notice(n)).map_or(0, |n| n.version);
            cp.fields
                .values()
                .any(|category| self.soft_opt_in_source(&query, point, notice, version, category))
        });
        if !source {
            return Some(SoftOptInNever::NoPurchasePromise);
        }
        None
    }

    /// Whether a trait of `trait_category` is data of the requested `category` (it is the
    /// category or a branch containing it).
    pub fn category_matches(trait_category: &str, category: &str) -> bool {
        is_within(category, trait_category)
    }

    /// When implied consent from a collection at `at` of `kind` ends, if that kind implies any.
    pub fn implied_until(
        requirement: &Requirement,
        kind: CollectionKind,
        at: UnixMillis,
    ) -> Option<UnixMillis> {
        let (_, purchase, inquiry) = requirement.implied?;
        match kind {
            CollectionKind::Purchase => Some(add_months(at, purchase)),
            CollectionKind::Inquiry => Some(add_months(at, inquiry)),
            _ => None,
        }
    }
}
