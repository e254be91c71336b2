//! How a change of mind is written: ledger records through the ledger service, channel
//! preferences and trait provenance through the store, and every one of them into the index.
//! Where the subject stands before and after is read by `subjects::standing`. The page and the
//! JSON API share all of it, through `Changes`: the handles it writes through, not the whole
//! application state.

use super::token::{Kind, Topic};
use super::{PrefCenter, SOURCE};
use crate::consent::ledger::Ledger;
use crate::http::error::ApiError;
use crate::identity::Identities;
use crate::index::IndexHandle;
use crate::observe;
use crate::subjects::standing::shown_notice;
pub use crate::subjects::standing::{
    ChannelState, Choices, DoNotSell, PurposeState, Standing, TopicState, basis,
};
use crate::web::texts::Texts;
use kept_core::decision::{DecisionRequest, SequencedRecord};
use kept_core::identity::{
    DataKey, IdentifierKind, PlannedSubject, identifier_aad, normalize_phone,
};
use kept_core::index::Change;
use kept_core::ledger::{CollectionMethod, ConsentAction, ConsentRecord, Evidence, NoticeRef};
use kept_core::manifest::{Manifest, Notice};
use kept_core::regime::Regime;
use kept_core::rulebook::{Level, PurposeClass};
use kept_core::subject::{ChannelPreference, Frequency, Provenance, QuietHours, Trait};
use kept_core::{SubjectId, UnixMillis};
use kept_store::collection::{IdentityWrite, NewIdentity};
use kept_store::requests::ErasureRequest;
use kept_store::{Store, StoreError};
use rand::RngCore;

/// Why a change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("unknown purpose `{0}`")]
    UnknownPurpose(String),
    #[error(
        "purpose `{0}` cannot be switched: a contract or the law carries it, or it is managed per topic"
    )]
    NotSwitchable(String),
    #[error("no topic `{topic}` on channel `{channel}`")]
    UnknownTopic { channel: String, topic: String },
    #[error("unknown channel `{0}`")]
    UnknownChannel(String),
    #[error("text messages need a mobile number and the disclosure accepted")]
    SmsNeedsAgreement,
    #[error("`{0}` is not a valid mobile number")]
    PhoneInvalid(String),
    #[error("this mobile number belongs to another subject")]
    PhoneTaken,
    #[error("no email address is known for this subject, so a subscription cannot be confirmed")]
    NoEmail,
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<StoreError> for ChangeError {
    fn from(e: StoreError) -> ChangeError {
        ChangeError::Api(ApiError::Store(e))
    }
}

impl From<crate::index::IndexError> for ChangeError {
    fn from(e: crate::index::IndexError) -> ChangeError {
        ChangeError::Api(e.into())
    }
}

impl ChangeError {
    /// The field of the JSON API body to blame.
    pub fn field(&self) -> &'static str {
        match self {
            ChangeError::UnknownPurpose(_) | ChangeError::NotSwitchable(_) => "purposes",
            ChangeError::UnknownTopic { .. } | ChangeError::NoEmail => "topics",
            ChangeError::UnknownChannel(_) => "channels",
            ChangeError::SmsNeedsAgreement
            | ChangeError::PhoneInvalid(_)
            | ChangeError::PhoneTaken => "sms",
            ChangeError::Api(_) => "body",
        }
    }

    pub fn into_api(self) -> ApiError {
        match self {
            ChangeError::Api(e) => e,
            other => ApiError::invalid_field(other.field(), other.to_string()),
        }
    }

    /// What the page tells the customer.
    pub fn message(&self, t: &Texts) -> &'static str {
        match self {
            ChangeError::PhoneInvalid(_) => t.phone_invalid,
            ChangeError::PhoneTaken => t.phone_taken,
            _ => t.sms_needs_agreement,
        }
    }
}

/// What a "no" to `purpose` (on `channel`, for `topic`; none: all of them) is: an opt-out
/// where the purpose is opt-out; where it needs consent, a withdrawal when a consent it reaches
/// stands given (the latest record of a scope that overlaps this one is `given`), else a
/// refusal: a "no" to something never given withdraws nothing.
fn no_action(
    records: &[SequencedRecord],
    purpose: &str,
    channel: Option<&str>,
    topic: Option<&str>,
    level: Option<Level>,
) -> ConsentAction {
    if level == Some(Level::OptOut) {
        return ConsentAction::OptedOut;
    }
    let meets = |a: Option<&str>, b: Option<&str>| a.is_none() || b.is_none() || a == b;
    let mut latest: std::collections::HashMap<(Option<&str>, Option<&str>), &SequencedRecord> =
        std::collections::HashMap::new();
    for r in records {
        let rec = &r.record;
        if rec.purpose != purpose
            || rec.method == CollectionMethod::Gpc
            || rec.action == ConsentAction::Pending
            || !meets(rec.channel.as_deref(), channel)
            || !meets(rec.topic.as_deref(), topic)
        {
            continue;
        }
        let slot = latest
            .entry((rec.channel.as_deref(), rec.topic.as_deref()))
            .or_insert(r);
        if r.seq > slot.seq {
            *slot = r;
        }
    }
    if latest
        .values()
        .any(|r| r.record.action == ConsentAction::Given)
    {
        ConsentAction::Withdrawn
    } else {
        ConsentAction::Refused
    }
}

fn notice_ref(manifest: &Manifest, id: Option<&String>) -> Option<NoticeRef> {
    let id = id?;
    let n = manifest.notices.get(id)?;
    Some(NoticeRef {
        id: id.clone(),
        version: n.version,
        hash: n.hash.clone(),
    })
}

/// The SMS opt-in's written consent: the number and whether the disclosure was accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmsConsent {
    pub phone: Option<String>,
    pub accepted: bool,
}

/// What the customer wants, as far as they said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    pub purposes: Vec<(String, bool)>,
    /// (channel, topic, subscribed)
    pub topics: Vec<(String, String, bool)>,
    /// (channel, frequency, quiet hours)
    pub channels: Vec<(String, Option<Frequency>, Option<QuietHours>)>,
    pub do_not_sell: Option<bool>,
    pub sms: SmsConsent,
}

/// How and by whom a change is made.
#[derive(Debug, Clone)]
pub struct ChangeContext {
    pub method: CollectionMethod,
    pub evidence: Evidence,
    /// The language the customer read the notices in.
    pub texts: &'static Texts,
    pub now: UnixMillis,
}

/// What a change did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub records: usize,
    /// Double opt-ins started (a confirmation mail sent).
    pub confirmations: usize,
}

struct Writer<'a> {
    svc: Changes<'a>,
    standing: &'a Standing,
    ctx: &'a ChangeContext,
    records: Vec<ConsentRecord>,
    changes: Vec<Change>,
    traits: Vec<Trait>,
}

impl<'a> Writer<'a> {
    fn new(svc: Changes<'a>, standing: &'a Standing, ctx: &'a ChangeContext) -> Writer<'a> {
        Writer {
            svc,
            standing,
            ctx,
            records: Vec::new(),
            changes: Vec::new(),
            traits: Vec::new(),
        }
    }

    fn record(
        &mut self,
        (purpose, channel, topic): (&str, Option<&str>, Option<&str>),
        action: ConsentAction,
        method: CollectionMethod,
        notice: Option<&String>,
        text_hash: Option<String>,
    ) {
        let mut evidence = self.ctx.evidence.clone();
        if text_hash.is_some() {
            evidence.text_hash = text_hash;
        }
        self.records.push(ConsentRecord {
            subject: self.standing.subject.id,
            purpose: purpose.to_owned(),
            channel: channel.map(str::to_owned),
            topic: topic.map(str::to_owned),
            action,
            notice: notice_ref(self.svc.manifest, notice),
            regime: self.standing.regime.as_str().to_owned(),
            source: SOURCE.to_owned(),
            method,
            evidence,
            at: self.ctx.now,
        });
    }

    /// Commits what was gathered: traits, then the ledger records, then the index.
    async fn commit(self) -> Result<usize, ChangeError> {
        let Writer {
            svc,
            records,
            mut changes,
            traits,
            ..
        } = self;
        if !traits.is_empty() {
            svc.store.upsert_traits(traits.clone()).await?;
            let none = std::collections::HashSet::new();
            changes.extend(crate::index::trait_changes(svc.store, traits, &none, []).await?);
        }
        let n = records.len();
        if !records.is_empty() {
            let entries = svc.ledger.append_many(records).await?;
            observe::count_ledger_appends(entries.len());
            svc.index.consents_appended(&entries).await?;
        }
        svc.index.apply(changes).await?;
        Ok(n)
    }
}

/// What a change of mind reads and writes through: the store, the ledger service, the index,
/// the manifest, the identity keys (a contact address opened, a phone number sealed and read in
/// the default country) and the preference center (its keys and mailer, for double opt-in).
/// Built by the handlers from the application state (`AppState::changes`).
#[derive(Clone, Copy)]
pub struct Changes<'a> {
    pub store: &'a dyn Store,
    pub ledger: &'a Ledger,
    pub index: &'a IndexHandle,
    pub manifest: &'a Manifest,
    pub identities: &'a Identities,
    pub prefcenter: &'a PrefCenter,
}

impl std::fmt::Debug for Changes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Changes<'_> {
    /// The opt-in level of `purpose` (on `channel`) where the subject is.
    fn level_at(&self, standing: &Standing, purpose: &str, channel: Option<&str>) -> Option<Level> {
        let compiled = self.index.compiled().ok()?;
        let mut req = DecisionRequest::new(purpose);
        if let Some(c) = channel {
            req = req.channel(c);
        }
        let query = compiled.prepare(&req);
        compiled
            .requirement(standing.place, &query)
            .map(|r| r.level)
    }

    /// Applies what the customer wants and answers once it is committed and in the index.
    pub async fn apply(
        &self,
        standing: &Standing,
        wanted: &Wanted,
        ctx: &ChangeContext,
    ) -> Result<Applied, ChangeError> {
        let manifest = self.manifest;
        let mut w = Writer::new(*self, standing, ctx);
        let mut confirmations: Vec<Topic> = Vec::new();
        // A phone number typed in for texts is attached only once the whole request has passed its
        // checks: a later unknown topic or channel must leave nothing written.
        let mut phone_to_attach: Option<String> = None;

        for (key, on) in &wanted.purposes {
            let Some(p) = standing.purposes.iter().find(|p| &p.key == key) else {
                return Err(ChangeError::UnknownPurpose(key.clone()));
            };
            if !p.switchable {
                if *on == p.allowed {
                    continue;
                }
                return Err(ChangeError::NotSwitchable(key.clone()));
            }
            if *on == p.allowed {
                continue;
            }
            let action = if *on {
                ConsentAction::Given
            } else {
                no_action(&standing.records, key, None, None, Some(p.level))
            };
            w.record(
                (key, None, None),
                action,
                ctx.method,
                p.notice.as_ref(),
                None,
            );
        }

        if let (Some(want), Some(dns)) = (wanted.do_not_sell, &standing.do_not_sell)
            && want != dns.on
        {
            let notice = shown_notice(manifest, &dns.purpose, None, None);
            let action = if want {
                ConsentAction::OptedOut
            } else {
                ConsentAction::Given
            };
            w.record(
                (&dns.purpose, None, None),
                action,
                ctx.method,
                notice.as_ref(),
                None,
            );
        }

        for (channel, topic, on) in &wanted.topics {
            let Some(c) = standing.channels.iter().find(|c| &c.channel == channel) else {
                return Err(ChangeError::UnknownTopic {
                    channel: channel.clone(),
                    topic: topic.clone(),
                });
            };
            let Some(t) = c.topics.iter().find(|t| &t.topic == topic) else {
                return Err(ChangeError::UnknownTopic {
                    channel: channel.clone(),
                    topic: topic.clone(),
                });
            };
            if *on == t.subscribed || (*on && t.pending && channel == "email") {
                continue;
            }
            if !*on {
                // Per topic, a "no" is an unsubscription whatever the purpose's level.
                w.record(
                    (&t.purpose, Some(channel), Some(topic)),
                    no_action(
                        &standing.records,
                        &t.purpose,
                        Some(channel),
                        Some(topic),
                        None,
                    ),
                    ctx.method,
                    t.notice.as_ref(),
                    None,
                );
                continue;
            }
            match channel.as_str() {
                // Email marketing is confirmed by a link first (double opt-in): until then the
                // ledger holds a pending record, which counts for nothing.
                "email" => {
                    w.record(
                        (&t.purpose, Some(channel), Some(topic)),
                        ConsentAction::Pending,
                        CollectionMethod::DoubleOptIn,
                        t.notice.as_ref(),
                        None,
                    );
                    confirmations.push(Topic {
                        purpose: t.purpose.clone(),
                        channel: channel.clone(),
                        topic: Some(topic.clone()),
                    });
                }
                // Marketing texts need prior express written consent to the disclosure (TCPA).
                "sms" => {
                    if !wanted.sms.accepted {
                        return Err(ChangeError::SmsNeedsAgreement);
                    }
                    let disclosure = t
                        .notice
                        .as_ref()
                        .and_then(|id| manifest.notices.get(id))
                        .map(|n| disclosure_text(n, ctx.texts.code));
                    let text_hash = disclosure.map(|text| blake3::hash(text.as_bytes()).to_hex());
                    if let Some(phone) =
                        phone_provenance(&mut w, wanted.sms.phone.as_deref(), t).await?
                    {
                        phone_to_attach = Some(phone);
                    }
                    w.record(
                        (&t.purpose, Some(channel), Some(topic)),
                        ConsentAction::Given,
                        CollectionMethod::Written,
                        t.notice.as_ref(),
                        text_hash.map(|h| h.to_string()),
                    );
                }
                _ => w.record(
                    (&t.purpose, Some(channel), Some(topic)),
                    ConsentAction::Given,
                    ctx.method,
                    t.notice.as_ref(),
                    None,
                ),
            }
        }

        // Every channel is checked before any is written: a request naming one unknown channel
        // changes nothing.
        let mut prefs = Vec::new();
        for (channel, frequency, quiet) in &wanted.channels {
            let Some(c) = standing.channels.iter().find(|c| &c.channel == channel) else {
                return Err(ChangeError::UnknownChannel(channel.clone()));
            };
            if c.frequency == *frequency && c.quiet == *quiet {
                continue;
            }
            prefs.push(ChannelPreference {
                subject: standing.subject.id,
                channel: channel.clone(),
                frequency: *frequency,
                quiet_hours: *quiet,
                updated_at: ctx.now,
            });
        }

        let email = if confirmations.is_empty() {
            None
        } else {
            Some(
                self.contact_address(standing, IdentifierKind::Email)
                    .await?
                    .ok_or(ChangeError::NoEmail)?,
            )
        };
        if let Some(phone) = &phone_to_attach {
            self.attach_phone(standing.subject.id, phone, ctx.now)
                .await?;
        }
        for pref in prefs {
            self.store.put_channel_preference(&pref).await?;
            w.changes.push(Change::Preference(pref));
        }
        let records = w.commit().await?;
        if let Some(email) = email {
            for topic in &confirmations {
                self.send_confirmation(standing.subject.id, topic, &email, ctx)
                    .await?;
            }
        }
        Ok(Applied {
            records,
            confirmations: confirmations.len(),
        })
    }

    /// Mails the double opt-in link for `topic`. Sending happens off the request.
    async fn send_confirmation(
        &self,
        subject: SubjectId,
        topic: &Topic,
        email: &str,
        ctx: &ChangeContext,
    ) -> Result<(), ChangeError> {
        let keys = self.prefcenter.keys(self.store).await?;
        let mut claims = super::token::fresh(
            Kind::Confirm,
            subject,
            ctx.now + self.prefcenter.config().confirm_ttl,
        );
        claims.topic = Some(topic.clone());
        claims.locale = Some(ctx.texts.code.to_owned());
        let link = format!(
            "{}/preferences/confirm?token={}",
            self.prefcenter.base_url(),
            keys.sign(&claims)
        );
        let t = ctx.texts;
        let mail = super::mail::Mail {
            to: email.to_owned(),
            subject: format!(
                "{} · {}",
                t.mail_confirm_subject, self.manifest.organisation.name
            ),
            text: format!("{}\n\n{link}\n\n{}\n", t.mail_confirm_body, t.mail_ignore),
        };
        let mailer = self.prefcenter.mailer().clone();
        tokio::spawn(async move {
            if let Err(e) = mailer.send(mail, &link).await {
                tracing::warn!(code = e.code(), error = %e, "confirmation mail not sent");
            }
        });
        Ok(())
    }

    /// Confirms a double opt-in: the `given` record that makes it count, and the email's
    /// provenance under the notice that promised it. `false` when there was nothing pending.
    pub async fn confirm(
        &self,
        standing: &Standing,
        topic: &Topic,
        ctx: &ChangeContext,
    ) -> Result<bool, ChangeError> {
        let pending = standing
            .records
            .iter()
            .filter(|r| {
                r.record.purpose == topic.purpose
                    && r.record.channel.as_deref() == Some(topic.channel.as_str())
                    && r.record.topic == topic.topic
            })
            .max_by_key(|r| r.seq)
            .filter(|r| r.record.action == ConsentAction::Pending);
        let Some(pending) = pending else {
            return Ok(false);
        };
        let notice = pending.record.notice.as_ref().map(|n| n.id.clone());
        let mut w = Writer::new(*self, standing, ctx);
        if let Some(id) = &notice {
            provenance_trait(&mut w, id, kept_core::decision::EMAIL_CATEGORY, None);
        }
        let mut evidence = ctx.evidence.clone();
        evidence.reference = Some(format!("confirms ledger record {}", pending.seq));
        w.records.push(ConsentRecord {
            subject: standing.subject.id,
            purpose: topic.purpose.clone(),
            channel: Some(topic.channel.clone()),
            topic: topic.topic.clone(),
            action: ConsentAction::Given,
            notice: pending.record.notice.clone(),
            regime: standing.regime.as_str().to_owned(),
            source: SOURCE.to_owned(),
            method: CollectionMethod::DoubleOptIn,
            evidence,
            at: ctx.now,
        });
        w.commit().await?;
        self.verify_confirmed_email(standing, ctx.now).await?;
        Ok(true)
    }

    /// A confirmed double opt-in proves the address the confirmation was mailed to (the subject's
    /// contact address): it becomes a verified identifier, one a sign-in link may be sent to.
    async fn verify_confirmed_email(
        &self,
        standing: &Standing,
        now: UnixMillis,
    ) -> Result<(), ApiError> {
        let Some(address) = self
            .contact_address(standing, IdentifierKind::Email)
            .await?
        else {
            return Ok(());
        };
        let Ok(normalized) = kept_core::identity::normalize_email(&address) else {
            return Ok(());
        };
        let store = self.store;
        let keys = self.identities.keys(store).await?;
        let hash = keys.identifier_hash(IdentifierKind::Email, &normalized);
        let held = store.find_identities(&[hash]).await?;
        if held.first().is_some_and(|(_, s)| *s == standing.subject.id) {
            store
                .write_identities(IdentityWrite {
                    verify: vec![hash],
                    at: now,
                    ..IdentityWrite::default()
                })
                .await?;
        }
        Ok(())
    }

    /// Withdraws `purpose` (on `channel`, for `topic`) at once: one-click unsubscribe.
    pub async fn withdraw(
        &self,
        standing: &Standing,
        topic: &Topic,
        ctx: &ChangeContext,
    ) -> Result<usize, ChangeError> {
        let notice = shown_notice(
            self.manifest,
            &topic.purpose,
            Some(&topic.channel),
            topic.topic.as_deref(),
        );
        let action = no_action(
            &standing.records,
            &topic.purpose,
            Some(&topic.channel),
            topic.topic.as_deref(),
            None,
        );
        let mut w = Writer::new(*self, standing, ctx);
        w.record(
            (&topic.purpose, Some(&topic.channel), topic.topic.as_deref()),
            action,
            CollectionMethod::Reply,
            notice.as_ref(),
            None,
        );
        w.commit().await
    }

    /// Withdraws every marketing purpose, on every channel.
    pub async fn unsubscribe_all(
        &self,
        standing: &Standing,
        ctx: &ChangeContext,
    ) -> Result<usize, ChangeError> {
        let manifest = self.manifest;
        let mut w = Writer::new(*self, standing, ctx);
        for key in manifest.purposes.keys() {
            if PurposeClass::of(key) != PurposeClass::Marketing {
                continue;
            }
            let notice = shown_notice(manifest, key, None, None);
            let level = self.level_at(standing, key, None);
            w.record(
                (key, None, None),
                no_action(&standing.records, key, None, None, level),
                ctx.method,
                notice.as_ref(),
                None,
            );
        }
        w.commit().await
    }

    /// Records a GPC signal as an opt-out of sale and sharing where the law makes it one and none
    /// is recorded yet. `true` when it wrote one.
    pub async fn honour_gpc(
        &self,
        standing: &Standing,
        ctx: &ChangeContext,
    ) -> Result<bool, ChangeError> {
        let Some(dns) = &standing.do_not_sell else {
            return Ok(false);
        };
        if !dns.gpc_binding || dns.gpc_recorded {
            return Ok(false);
        }
        let mut w = Writer::new(*self, standing, ctx);
        w.record(
            (&dns.purpose, None, None),
            ConsentAction::OptedOut,
            CollectionMethod::Gpc,
            None,
            None,
        );
        w.commit().await?;
        Ok(true)
    }

    /// Files an erasure request with its legal deadline and stops every use at once.
    pub async fn request_erasure(
        &self,
        standing: &Standing,
        now: UnixMillis,
    ) -> Result<ErasureRequest, ChangeError> {
        let due_at = erasure_deadline(standing.regime, standing.subject.region.as_deref(), now);
        let filed = self
            .store
            .file_erasure_request(kept_store::requests::NewErasureRequest {
                subject: standing.subject.id,
                regime: standing.regime.as_str().to_owned(),
                source: SOURCE.to_owned(),
                requested_at: now,
                due_at,
            })
            .await?;
        if standing.subject.erasure_requested_at.is_none() {
            self.store
                .set_erasure_requested(standing.subject.id, Some(filed.requested_at))
                .await?;
            let mut subject = standing.subject.clone();
            subject.erasure_requested_at = Some(filed.requested_at);
            self.index.apply(vec![Change::Subject(subject)]).await?;
        }
        Ok(filed)
    }

    /// Whether a normalised phone number is the subject's already or nobody's (else `PhoneTaken`),
    /// read before anything is written; the write checks again.
    async fn phone_is_free(&self, subject: SubjectId, normalized: &str) -> Result<(), ChangeError> {
        let store = self.store;
        let keys = self.identities.keys(store).await?;
        let hash = keys.identifier_hash(IdentifierKind::Phone, normalized);
        match store.find_identities(&[hash]).await?.first() {
            Some((_, holder)) if *holder != subject => Err(ChangeError::PhoneTaken),
            _ => Ok(()),
        }
    }

    async fn attach_phone(
        &self,
        subject: SubjectId,
        normalized: &str,
        now: UnixMillis,
    ) -> Result<(), ChangeError> {
        let store = self.store;
        let keys = self.identities.keys(store).await?;
        let hash = keys.identifier_hash(IdentifierKind::Phone, normalized);
        match store.find_identities(&[hash]).await?.first() {
            Some((_, holder)) if *holder == subject => return Ok(()),
            Some(_) => return Err(ChangeError::PhoneTaken),
            None => {}
        }
        let mut write = IdentityWrite {
            at: now,
            ..IdentityWrite::default()
        };
        let data_key = match store.subject_keys(&[subject]).await?.first() {
            Some((_, wrapped)) => keys
                .open_data_key(wrapped)
                .map_err(|e| StoreError::Corrupt(format!("subject data key: {e}")))?,
            None => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                let key = DataKey(key);
                let wrapped = keys
                    .seal_data_key(&key, nonce())
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                write
                    .keys
                    .push((PlannedSubject::Existing(subject), wrapped));
                key
            }
        };
        let sealed = data_key
            .seal(
                &identifier_aad(IdentifierKind::Phone, &hash),
                normalized.as_bytes(),
                nonce(),
            )
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        write.attach.push(NewIdentity {
            subject: PlannedSubject::Existing(subject),
            key_subject: PlannedSubject::Existing(subject),
            kind: IdentifierKind::Phone,
            hash,
            sealed,
            // Typed in by the customer, not proven theirs: not verified.
            verified: false,
        });
        match store.write_identities(write).await {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(ChangeError::PhoneTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// A subject's email address or phone number in clear: its identifier opened with its data
    /// key, else a trait holding it in clear (the demo's).
    pub async fn contact_address(
        &self,
        standing: &Standing,
        kind: IdentifierKind,
    ) -> Result<Option<String>, ApiError> {
        let opened =
            crate::subjects::identifiers::opened(self.store, self.identities, standing.subject.id)
                .await?;
        if let Some((_, value, _)) = opened
            .into_iter()
            .find(|(k, v, _)| *k == kind && v.is_some())
        {
            return Ok(value);
        }
        let category = match kind {
            IdentifierKind::Email => kept_core::decision::EMAIL_CATEGORY,
            IdentifierKind::Phone => PHONE_CATEGORY,
            _ => return Ok(None),
        };
        Ok(standing
            .traits
            .iter()
            .filter(|t| t.category == category)
            .find_map(|t| t.value.as_str().map(str::to_owned)))
    }
}

/// The disclosure text of a notice in a language, else its first.
pub fn disclosure_text(notice: &Notice, code: &str) -> String {
    notice
        .locales
        .get(code)
        .or_else(|| notice.locales.values().next())
        .map(|t| t.text.clone())
        .unwrap_or_default()
}

/// When an erasure request made at `at` by a subject under `regime` in `region` must be
/// answered: the earliest deadline of the law's rows that apply (`kept_core::rights`). Should
/// the rows shipped with the binary be unreadable, the answer is due at once (fail closed).
pub fn erasure_deadline(regime: Regime, region: Option<&str>, at: UnixMillis) -> UnixMillis {
    kept_core::rights::Rights::shipped()
        .ok()
        .and_then(|rights| {
            rights.deadline(regime, region, kept_core::rights::RequestKind::Erasure, at)
        })
        .map_or(at, |d| d.due_at)
}

/// The trait that records `category` as collected at the preference center's own form for
/// `notice`: a collection point of kind `preference` showing that notice. Never another kind
/// of point (a purchase or a sign-up form the customer did not use would make the data look
/// collected there: a soft opt-in "customer", an implied consent). With no such point, no
/// provenance is recorded. Kept apart from a trait of the same field collected elsewhere, so
/// the earlier promise is not overwritten.
fn provenance_trait(
    w: &mut Writer<'_>,
    notice: &str,
    category: &str,
    value: Option<serde_json::Value>,
) {
    let manifest = w.svc.manifest;
    let Some((point_key, point, field)) = manifest.collection_points.iter().find_map(|(key, p)| {
        (p.notice == notice && p.kind == kept_core::manifest::CollectionKind::Preference)
            .then(|| p.fields.iter().find(|(_, c)| c.as_str() == category))
            .flatten()
            .map(|(field, _)| (key, p, field))
    }) else {
        return;
    };
    let existing = |k: &str| w.standing.traits.iter().find(|t| t.key == k);
    let key = match existing(field) {
        Some(t) if &t.provenance.collection_point != point_key => format!("{field}@{point_key}"),
        _ => field.clone(),
    };
    let value = value
        .or_else(|| {
            w.standing
                .traits
                .iter()
                .find(|t| t.category == category && t.value.is_string())
                .map(|t| t.value.clone())
        })
        .unwrap_or_else(|| {
            let kind = if category == kept_core::decision::EMAIL_CATEGORY {
                "email"
            } else {
                "phone"
            };
            serde_json::json!({ "sealed_identifier": kind })
        });
    let version = manifest.notices.get(&point.notice).map_or(0, |n| n.version);
    w.traits.push(Trait {
        subject: w.standing.subject.id,
        key,
        value,
        category: category.to_owned(),
        provenance: Provenance {
            collection_point: point_key.clone(),
            notice_id: point.notice.clone(),
            notice_version: version,
            collected_at: w.ctx.now,
            source: SOURCE.to_owned(),
        },
    });
}

const PHONE_CATEGORY: &str = "user.contact.phone_number";

/// The phone number's provenance under the SMS notice. Returns the number given, normalised
/// and checked to be free for this subject, for the caller to attach (sealed under the
/// subject's data key) once the whole request has passed its checks.
async fn phone_provenance(
    w: &mut Writer<'_>,
    phone: Option<&str>,
    topic: &TopicState,
) -> Result<Option<String>, ChangeError> {
    let svc = w.svc;
    let subject = w.standing.subject.id;
    let phone = phone.map(str::trim).filter(|p| !p.is_empty());
    let known = svc
        .contact_address(w.standing, IdentifierKind::Phone)
        .await?;
    let (value, given) = match (phone, known) {
        (None, None) => return Err(ChangeError::SmsNeedsAgreement),
        (None, Some(_)) => (None, None),
        (Some(raw), _) => {
            let default_country = svc.identities.config().default_country.clone();
            let normalized = normalize_phone(raw, default_country.as_deref())
                .map_err(|_| ChangeError::PhoneInvalid(raw.to_owned()))?;
            svc.phone_is_free(subject, &normalized).await?;
            (
                Some(serde_json::json!({ "sealed_identifier": "phone" })),
                Some(normalized),
            )
        }
    };
    if let Some(notice) = &topic.notice {
        provenance_trait(w, notice, PHONE_CATEGORY, value);
    }
    Ok(given)
}

fn nonce() -> [u8; 24] {
    let mut n = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// Finds the subject an email address belongs to, for a sign-in link: by its keyed hash when
/// the address is verified, and in demo mode among the demo's email traits too.
pub async fn subject_by_email(
    store: &dyn Store,
    identities: &Identities,
    prefcenter: &PrefCenter,
    normalized: &str,
) -> Result<Option<SubjectId>, ApiError> {
    let keys = identities.keys(store).await?;
    let hash = keys.identifier_hash(IdentifierKind::Email, normalized);
    // A sign-in link goes only to a verified address of the subject it opens: one anybody
    // could have attached through a public key proves nothing.
    if let Some((_, s)) = store.find_identities(&[hash]).await?.first()
        && store.verified_identities(&[hash]).await?.contains(&hash)
    {
        return Ok(Some(*s));
    }
    if prefcenter.config().demo {
        return Ok(prefcenter
            .demo_emails(store)
            .await?
            .get(normalized)
            .copied());
    }
    Ok(None)
}
