//! Identity resolution's pure parts: identifiers normalised (email, E.164 phone), looked up by
//! keyed hash and sealed under a per-subject data key; the plan that decides which subject a
//! message belongs to, with the guard rails that stop a silent merge of two people; and what a
//! write key's speaker (server key, public key with or without an identity token) may carry out.
//!
//! INVARIANT: an identifier's value never leaves this module unsealed except to the caller that
//! asked to open it; hashes and sealed bytes are all the store ever sees. A property of what
//! this module exports, not of one point to assert: an identifier reaches the store as
//! `kept_store::collection::NewIdentity`, which has a hash and sealed bytes and no field for the
//! value; `sealed_values_open_only_with_their_key_and_binding` checks the sealed bytes.

use crate::SubjectId;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// What kind of identifier a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierKind {
    /// The company's own user id (`userId`).
    UserId,
    Email,
    Phone,
    /// A device or browser id (`anonymousId`).
    AnonymousId,
}

impl IdentifierKind {
    pub const ALL: [IdentifierKind; 4] = [
        IdentifierKind::UserId,
        IdentifierKind::Email,
        IdentifierKind::Phone,
        IdentifierKind::AnonymousId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierKind::UserId => "user_id",
            IdentifierKind::Email => "email",
            IdentifierKind::Phone => "phone",
            IdentifierKind::AnonymousId => "anonymous_id",
        }
    }

    pub fn parse(s: &str) -> Option<IdentifierKind> {
        IdentifierKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    fn slot(self) -> usize {
        match self {
            IdentifierKind::UserId => 0,
            IdentifierKind::Email => 1,
            IdentifierKind::Phone => 2,
            IdentifierKind::AnonymousId => 3,
        }
    }
}

impl fmt::Display for IdentifierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An identifier that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("`{0}` is not an email address")]
    InvalidEmail(String),
    #[error("`{0}` is not a phone number")]
    InvalidPhone(String),
    #[error(
        "`{0}` has no country calling code and no default country is configured; send it as `+<country code><number>`"
    )]
    PhoneWithoutCountry(String),
    #[error("{0} must not be empty")]
    Empty(IdentifierKind),
    #[error("{0} is longer than {MAX_IDENTIFIER_LEN} characters")]
    TooLong(IdentifierKind),
    #[error("a sealed value does not open with its subject's key")]
    Unseal,
    #[error("a value could not be sealed")]
    Seal,
}

impl IdentityError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::InvalidEmail(_) => "identity.invalid_email",
            IdentityError::InvalidPhone(_) => "identity.invalid_phone",
            IdentityError::PhoneWithoutCountry(_) => "identity.phone_without_country",
            IdentityError::Empty(_) => "identity.empty",
            IdentityError::TooLong(_) => "identity.too_long",
            IdentityError::Unseal => "identity.unseal",
            IdentityError::Seal => "identity.seal",
        }
    }
}

/// Longest identifier accepted, in characters.
pub const MAX_IDENTIFIER_LEN: usize = 256;

/// The normalised form of an identifier: what is hashed and sealed.
pub fn normalize(
    kind: IdentifierKind,
    raw: &str,
    default_country: Option<&str>,
) -> Result<String, IdentityError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(IdentityError::Empty(kind));
    }
    if trimmed.chars().count() > MAX_IDENTIFIER_LEN {
        return Err(IdentityError::TooLong(kind));
    }
    match kind {
        IdentifierKind::Email => normalize_email(trimmed),
        IdentifierKind::Phone => normalize_phone(trimmed, default_country),
        // Ids are the client's own; only surrounding blanks are not part of them.
        IdentifierKind::UserId | IdentifierKind::AnonymousId => Ok(trimmed.to_owned()),
    }
}

/// Lowercase, trimmed, and shaped like `local@domain.tld`.
pub fn normalize_email(raw: &str) -> Result<String, IdentityError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.rsplit_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        });
    if valid {
        Ok(email)
    } else {
        Err(IdentityError::InvalidEmail(raw.to_owned()))
    }
}

/// E.164 (`+4915112345678`). A number without `+` or `00` is read as national in
/// `default_country` (ISO 3166-1 alpha-2): its trunk `0` dropped, the calling code put in front.
pub fn normalize_phone(raw: &str, default_country: Option<&str>) -> Result<String, IdentityError> {
    let invalid = || IdentityError::InvalidPhone(raw.to_owned());
    let mut digits = String::with_capacity(raw.len());
    let mut plus = false;
    for c in raw.trim().chars() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if digits.is_empty() && !plus => plus = true,
            ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            _ => return Err(invalid()),
        }
    }
    let international = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_owned()
    } else {
        let country = default_country
            .map(|c| c.trim().to_ascii_uppercase())
            .ok_or_else(|| IdentityError::PhoneWithoutCountry(raw.to_owned()))?;
        let code = calling_code(&country)
            .ok_or_else(|| IdentityError::PhoneWithoutCountry(raw.to_owned()))?;
        let national = if code == "1" {
            // North American numbers are often written with the country code but no `+`.
            match digits.strip_prefix('1') {
                Some(rest) if digits.len() == 11 => rest,
                _ => digits.as_str(),
            }
        } else if KEEPS_TRUNK_ZERO.contains(&country.as_str()) {
            digits.as_str()
        } else {
            digits.strip_prefix('0').unwrap_or(&digits)
        };
        format!("{code}{national}")
    };
    if !(8..=15).contains(&international.len()) || international.starts_with('0') {
        return Err(invalid());
    }
    Ok(format!("+{international}"))
}

/// Countries whose numbers keep their leading `0` after the calling code.
const KEEPS_TRUNK_ZERO: &[&str] = &["IT", "SM", "VA"];

/// The calling code of a country, for the countries Kept's regimes name and their neighbours.
fn calling_code(country: &str) -> Option<&'static str> {
    Some(match country {
        "US" | "CA" => "1",
        "GB" | "UK" => "44",
        "IE" => "353",
        "DE" => "49",
        "AT" => "43",
        "CH" => "41",
        "LI" => "423",
        "FR" => "33",
        "BE" => "32",
        "NL" => "31",
        "LU" => "352",
        "ES" => "34",
        "PT" => "351",
        "IT" => "39",
        "SM" => "378",
        "VA" => "379",
        "MT" => "356",
        "GR" => "30",
        "CY" => "357",
        "DK" => "45",
        "SE" => "46",
        "NO" => "47",
        "FI" => "358",
        "IS" => "354",
        "EE" => "372",
        "LV" => "371",
        "LT" => "370",
        "PL" => "48",
        "CZ" => "420",
        "SK" => "421",
        "HU" => "36",
        "SI" => "386",
        "HR" => "385",
        "RO" => "40",
        "BG" => "359",
        "BR" => "55",
        "MX" => "52",
        "AR" => "54",
        "AU" => "61",
        "NZ" => "64",
        "IN" => "91",
        "JP" => "81",
        "KR" => "82",
        "CN" => "86",
        "SG" => "65",
        "ZA" => "27",
        "IL" => "972",
        "TR" => "90",
        "UA" => "380",
        _ => return None,
    })
}

/// A keyed hash of one identifier: how the store finds a subject without holding the value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentifierHash(pub [u8; 32]);

impl IdentifierHash {
    pub fn from_slice(bytes: &[u8]) -> Option<IdentifierHash> {
        bytes.try_into().ok().map(IdentifierHash)
    }
}

impl fmt::Debug for IdentifierHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix: String = self.0.iter().take(6).map(|b| format!("{b:02x}")).collect();
        write!(f, "IdentifierHash({prefix}…)")
    }
}

/// The secrets collection derives from one master secret: the identifier hash key, the IP
/// address hash key, the key that wraps each subject's data key, and the quarantine's key.
/// `Debug` shows none of them.
#[derive(Clone)]
pub struct IdentityKeys {
    hash_key: [u8; 32],
    ip_key: [u8; 32],
    dataset_key: [u8; 32],
    wrap: XChaCha20Poly1305,
    quarantine: DataKey,
}

impl fmt::Debug for IdentityKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityKeys(***)")
    }
}

impl IdentityKeys {
    /// Derives every key from `master` (32 secret bytes).
    pub fn derive(master: &[u8; 32]) -> IdentityKeys {
        let wrap_key = blake3::derive_key("kept 2026 subject data key wrapping v1", master);
        IdentityKeys {
            hash_key: blake3::derive_key("kept 2026 identifier hash v1", master),
            ip_key: blake3::derive_key("kept 2026 ip address hash v1", master),
            dataset_key: blake3::derive_key("kept 2026 dataset column hash v1", master),
            wrap: XChaCha20Poly1305::new(&wrap_key.into()),
            quarantine: DataKey(blake3::derive_key("kept 2026 quarantine v1", master)),
        }
    }

    /// The key rejected messages are sealed under in the quarantine. One key for the store, not
    /// a subject's: a rejected message may name no subject, or one that resolution refused to
    /// let it speak for, so no subject's key may be chosen from it. Erasure cannot shred what it
    /// cannot find; the quarantine's seven-day limit bounds how long such a message is held.
    pub fn quarantine_key(&self) -> &DataKey {
        &self.quarantine
    }

    /// The keyed hash of a normalised identifier; the kind is part of the input, so an email
    /// and a user id with the same text do not collide.
    pub fn identifier_hash(&self, kind: IdentifierKind, normalized: &str) -> IdentifierHash {
        let mut hasher = blake3::Hasher::new_keyed(&self.hash_key);
        hasher.update(kind.as_str().as_bytes());
        hasher.update(&[0]);
        hasher.update(normalized.as_bytes());
        IdentifierHash(*hasher.finalize().as_bytes())
    }

    /// The key the connectors' `hash` erasure replaces a column's value with a keyed hash of,
    /// in the company's own databases: its own key, so those hashes reveal nothing of the
    /// identifier hashes Kept looks people up by.
    pub fn dataset_hash_key(&self) -> [u8; 32] {
        self.dataset_key
    }

    /// The keyed hash (hex) of a client IP address, for consent evidence.
    pub fn ip_hash(&self, ip: &str) -> String {
        blake3::keyed_hash(&self.ip_key, ip.trim().as_bytes())
            .to_hex()
            .to_string()
    }

    /// A subject's data key, wrapped (nonce ‖ ciphertext) so that only this master opens it.
    /// Not bound to the subject id: ids are assigned inside the transaction that stores the key.
    pub fn seal_data_key(&self, key: &DataKey, nonce: [u8; 24]) -> Result<Vec<u8>, IdentityError> {
        seal_with(&self.wrap, WRAP_AAD, &key.0, nonce)
    }

    /// Opens a data key `seal_data_key` wrapped under this master.
    pub fn open_data_key(&self, wrapped: &[u8]) -> Result<DataKey, IdentityError> {
        let bytes = open_with(&self.wrap, WRAP_AAD, wrapped)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| IdentityError::Unseal)?;
        Ok(DataKey(key))
    }
}

const WRAP_AAD: &[u8] = b"kept subject data key";

/// A subject's own key: everything sealed under it becomes unreadable when it is deleted
/// (erasure by crypto-shredding).
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey(pub [u8; 32]);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(***)")
    }
}

impl DataKey {
    /// Seals `plaintext` bound to `aad` (what it is, so a sealed value cannot be moved to
    /// another row). Returns nonce ‖ ciphertext ‖ tag.
    pub fn seal(
        &self,
        aad: &[u8],
        plaintext: &[u8],
        nonce: [u8; 24],
    ) -> Result<Vec<u8>, IdentityError> {
        seal_with(
            &XChaCha20Poly1305::new(&self.0.into()),
            aad,
            plaintext,
            nonce,
        )
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, IdentityError> {
        open_with(&XChaCha20Poly1305::new(&self.0.into()), aad, sealed)
    }
}

/// What a sealed identifier is bound to: its kind and hash.
pub fn identifier_aad(kind: IdentifierKind, hash: &IdentifierHash) -> Vec<u8> {
    let mut aad = Vec::with_capacity(48);
    aad.extend_from_slice(kind.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(&hash.0);
    aad
}

fn seal_with(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    plaintext: &[u8],
    nonce: [u8; 24],
) -> Result<Vec<u8>, IdentityError> {
    let payload = Payload {
        msg: plaintext,
        aad,
    };
    let ciphertext = cipher
        .encrypt(XNonce::from_slice(&nonce), payload)
        .map_err(|_| IdentityError::Seal)?;
    let mut out = Vec::with_capacity(24 + ciphertext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

fn open_with(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, IdentityError> {
    let (nonce, ciphertext) = sealed.split_at_checked(24).ok_or(IdentityError::Unseal)?;
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| IdentityError::Unseal)
}

// --- resolution ------------------------------------------------------------------------------

/// How many identifiers of each kind one subject may hold. A shared device or a scripted client
/// would otherwise pull thousands of ids, and so people, into one profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub user_id: u16,
    pub email: u16,
    pub phone: u16,
    pub anonymous_id: u16,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps {
            user_id: 1,
            email: 10,
            phone: 10,
            anonymous_id: 50,
        }
    }
}

impl Caps {
    pub fn of(&self, kind: IdentifierKind) -> u16 {
        match kind {
            IdentifierKind::UserId => self.user_id,
            IdentifierKind::Email => self.email,
            IdentifierKind::Phone => self.phone,
            IdentifierKind::AnonymousId => self.anonymous_id,
        }
    }
}

/// Identifiers a subject holds, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdentifierCounts([u16; 4]);

impl IdentifierCounts {
    pub fn get(&self, kind: IdentifierKind) -> u16 {
        self.0.get(kind.slot()).copied().unwrap_or(0)
    }

    pub fn add(&mut self, kind: IdentifierKind, n: u16) {
        if let Some(slot) = self.0.get_mut(kind.slot()) {
            *slot = slot.saturating_add(n);
        }
    }

    pub fn plus(&self, other: &IdentifierCounts) -> IdentifierCounts {
        let mut out = *self;
        for kind in IdentifierKind::ALL {
            out.add(kind, other.get(kind));
        }
        out
    }
}

/// A subject as a plan names it: one that exists, or the n-th one the plan's batch creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PlannedSubject {
    Existing(SubjectId),
    New(u32),
}

/// What resolution needs to know of a subject that holds an identifier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnerFacts {
    /// It has a user id: it is a known person, not an anonymous browser.
    pub identified: bool,
    /// It holds an email address or phone number that is verified (it arrived through a
    /// server key, an identity token, a confirmed double opt-in or a signed link).
    pub verified: bool,
    pub counts: IdentifierCounts,
}

impl OwnerFacts {
    /// A known customer: one with a user id or a verified identifier. A public write key speaks
    /// for such a subject only with an identity token, and never merges two of them.
    pub fn known(&self) -> bool {
        self.identified || self.verified
    }
}

/// Who a message speaks for, as its write key and identity token show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Speaker {
    /// The shop's own backend (a `server` key): full Segment semantics.
    Server,
    /// A browser (a `public` key) whose message carries a valid identity token for its user id.
    Token,
    /// A browser (a `public` key) with no valid identity token.
    Browser,
}

impl Speaker {
    /// Whether what this speaker says about identifiers is verified.
    pub fn verifies(self) -> bool {
        matches!(self, Speaker::Server | Speaker::Token)
    }
}

/// What a public key tried that only a server key, or an identity token, may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overreach {
    /// Attaching an identifier to a known customer without an identity token.
    AttachToKnown(IdentifierKind),
    /// Merging a subject into a known customer without an identity token.
    MergeIntoKnown,
    /// Merging a known customer into another subject: a public key never may.
    MergeKnown,
    /// Speaking as a known customer, by the user id they hold, without an identity token: an
    /// event a browser sends under someone else's user id would be stored and forwarded as
    /// theirs. A message that reaches them only through the browser's own anonymous id (merged
    /// in by the shop's backend) is that browser's.
    SpeakAsKnown,
}

impl Overreach {
    /// Stable machine code.
    pub fn code(self) -> &'static str {
        match self {
            Overreach::AttachToKnown(_) | Overreach::MergeIntoKnown | Overreach::SpeakAsKnown => {
                "collect.identity_token_required"
            }
            Overreach::MergeKnown => "collect.merge_refused",
        }
    }
}

/// Whether `speaker` may carry out `plan`, made from `claims`. A browser (no token) may
/// create and extend anonymous subjects only; a token speaks for the subject that holds the
/// message's user id (or, when nobody does yet, for the one that becomes that user), so it may
/// also attach identifiers to it and merge anonymous subjects into it. A public key never
/// merges a known customer away: two subjects that each have a user id or a verified
/// identifier are merged only on a server key's word.
pub fn check_speaker(
    claims: &[Claim],
    plan: &Resolution,
    facts: &HashMap<PlannedSubject, OwnerFacts>,
    speaker: Speaker,
) -> Result<(), Overreach> {
    if speaker == Speaker::Server {
        return Ok(());
    }
    let known = |s: &PlannedSubject| facts.get(s).is_some_and(OwnerFacts::known);
    if plan.merge.iter().any(known) {
        return Err(Overreach::MergeKnown);
    }
    let Some(subject) = plan.subject.filter(known) else {
        return Ok(());
    };
    if speaker == Speaker::Token && token_covers(claims, subject) {
        return Ok(());
    }
    if let Some((kind, _)) = plan.attach.first() {
        return Err(Overreach::AttachToKnown(*kind));
    }
    if !plan.merge.is_empty() {
        return Err(Overreach::MergeIntoKnown);
    }
    Ok(())
}

/// Whether an identity token for the message's user id speaks for `subject`: it holds that
/// user id.
pub fn token_covers(claims: &[Claim], subject: PlannedSubject) -> bool {
    claims
        .iter()
        .find(|c| c.kind == IdentifierKind::UserId)
        .is_some_and(|c| c.owner == Some(subject))
}

/// One identifier a message carries, and who holds it now (if anyone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub kind: IdentifierKind,
    pub hash: IdentifierHash,
    pub owner: Option<PlannedSubject>,
}

/// Why an identifier was not attached or its holder not merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Another known person holds it: merging would join two people on one identifier.
    ClaimedByAnotherUser,
    /// The subject already holds as many identifiers of this kind as it may.
    CapExceeded,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::ClaimedByAnotherUser => "claimed_by_another_user",
            RefusalReason::CapExceeded => "cap_exceeded",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub kind: IdentifierKind,
    pub reason: RefusalReason,
    /// The subject that holds the identifier, when one does.
    pub holder: Option<PlannedSubject>,
}

/// Where a message lands and what changes to get there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// The subject the message belongs to; `None`: a new one must be created.
    pub subject: Option<PlannedSubject>,
    /// Identifiers held by nobody, to attach to the subject.
    pub attach: Vec<(IdentifierKind, IdentifierHash)>,
    /// Subjects to merge into the subject, with everything they hold.
    pub merge: Vec<PlannedSubject>,
    pub refused: Vec<Refusal>,
}

/// Decides which subject a message with `claims` belongs to.
///
/// - A `user_id` claim decides when someone holds it. When nobody does, the first anonymous
///   holder of the message's other identifiers becomes that user (no merge needed).
/// - Without a user id, a holder that is a known person wins over anonymous ones.
/// - Anonymous holders are merged in ("identify after anonymous browsing"); a holder that is
///   another known person is never merged silently (`explicit` — an `alias` call — allows it).
/// - Caps per kind hold for attachments and merges alike, except that an explicit merge may
///   join two user ids.
pub fn resolve(
    claims: &[Claim],
    facts: &HashMap<PlannedSubject, OwnerFacts>,
    explicit: bool,
    caps: &Caps,
) -> Resolution {
    let facts_of = |s: PlannedSubject| facts.get(&s).copied().unwrap_or_default();
    let user_claim = claims.iter().find(|c| c.kind == IdentifierKind::UserId);
    let mut holders: Vec<PlannedSubject> = Vec::new();
    for c in claims.iter().filter(|c| c.kind != IdentifierKind::UserId) {
        if let Some(o) = c.owner
            && !holders.contains(&o)
        {
            holders.push(o);
        }
    }
    let subject = match user_claim {
        Some(uc) => uc
            .owner
            .or_else(|| holders.iter().copied().find(|h| !facts_of(*h).identified)),
        None => holders
            .iter()
            .copied()
            .find(|h| facts_of(*h).identified)
            .or_else(|| holders.first().copied()),
    };
    let mut out = Resolution {
        subject,
        ..Resolution::default()
    };
    let mut counts = subject.map(|s| facts_of(s).counts).unwrap_or_default();
    for claim in claims {
        match claim.owner {
            Some(o) if Some(o) == subject || out.merge.contains(&o) => {}
            None => {
                if counts.get(claim.kind) < caps.of(claim.kind) {
                    counts.add(claim.kind, 1);
                    out.attach.push((claim.kind, claim.hash));
                } else {
                    out.refused.push(Refusal {
                        kind: claim.kind,
                        reason: RefusalReason::CapExceeded,
                        holder: None,
                    });
                }
            }
            Some(o) => {
                let theirs = facts_of(o);
                if theirs.identified && !explicit {
                    out.refused.push(Refusal {
                        kind: claim.kind,
                        reason: RefusalReason::ClaimedByAnotherUser,
                        holder: Some(o),
                    });
                    continue;
                }
                let joined = counts.plus(&theirs.counts);
                let within = IdentifierKind::ALL.into_iter().all(|k| {
                    (explicit && k == IdentifierKind::UserId) || joined.get(k) <= caps.of(k)
                });
                if within {
                    counts = joined;
                    out.merge.push(o);
                } else {
                    out.refused.push(Refusal {
                        kind: claim.kind,
                        reason: RefusalReason::CapExceeded,
                        holder: Some(o),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> IdentityKeys {
        IdentityKeys::derive(&[9; 32])
    }

    #[test]
    fn emails_and_phones_normalise() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        assert!(normalize_email("ada@example").is_err());
        assert!(normalize_email("@example.com").is_err());
        assert!(normalize_email("a da@example.com").is_err());
        assert_eq!(
            normalize_phone("+49 151 1234-5678", None).unwrap(),
            "+4915112345678"
        );
        assert_eq!(
            normalize_phone("0151 12345678", Some("de")).unwrap(),
            "+4915112345678"
        );
        assert_eq!(
            normalize_phone("0049 151 12345678", None).unwrap(),
            "+4915112345678"
        );
        assert_eq!(
            normalize_phone("(415) 555-0100", Some("US")).unwrap(),
            "+14155550100"
        );
        assert_eq!(
            normalize_phone("1 415 555 0100", Some("US")).unwrap(),
            "+14155550100"
        );
        assert_eq!(
            normalize_phone("06 1234 5678", Some("IT")).unwrap(),
            "+390612345678"
        );
        assert!(matches!(
            normalize_phone("0151 12345678", None),
            Err(IdentityError::PhoneWithoutCountry(_))
        ));
        assert!(normalize_phone("+49 call me", None).is_err());
        assert!(normalize_phone("+12", None).is_err());
    }

    #[test]
    fn hashes_depend_on_kind_value_and_key() {
        let k = keys();
        let a = k.identifier_hash(IdentifierKind::Email, "ada@example.com");
        assert_eq!(
            a,
            k.identifier_hash(IdentifierKind::Email, "ada@example.com")
        );
        assert_ne!(
            a,
            k.identifier_hash(IdentifierKind::UserId, "ada@example.com")
        );
        assert_ne!(
            a,
            k.identifier_hash(IdentifierKind::Email, "bob@example.com")
        );
        let other = IdentityKeys::derive(&[8; 32]);
        assert_ne!(
            a,
            other.identifier_hash(IdentifierKind::Email, "ada@example.com")
        );
        assert!(!format!("{k:?}").contains('9'));
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_binding() {
        let k = keys();
        let data = DataKey([3; 32]);
        let wrapped = k.seal_data_key(&data, [1; 24]).unwrap();
        assert_eq!(k.open_data_key(&wrapped).unwrap(), data);
        let other = IdentityKeys::derive(&[8; 32]);
        assert_eq!(other.open_data_key(&wrapped), Err(IdentityError::Unseal));
        let hash = k.identifier_hash(IdentifierKind::Email, "ada@example.com");
        let aad = identifier_aad(IdentifierKind::Email, &hash);
        let sealed = data.seal(&aad, b"ada@example.com", [2; 24]).unwrap();
        assert!(!sealed.windows(3).any(|w| w == b"ada"));
        assert_eq!(data.open(&aad, &sealed).unwrap(), b"ada@example.com");
        assert!(DataKey([4; 32]).open(&aad, &sealed).is_err());
        let other = identifier_aad(IdentifierKind::Phone, &hash);
        assert!(data.open(&other, &sealed).is_err());
        assert!(data.open(&aad, &sealed[..10]).is_err());
    }

    fn claim(kind: IdentifierKind, n: u8, owner: Option<PlannedSubject>) -> Claim {
        Claim {
            kind,
            hash: IdentifierHash([n; 32]),
            owner,
        }
    }

    const A: PlannedSubject = PlannedSubject::Existing(SubjectId(1));
    const B: PlannedSubject = PlannedSubject::Existing(SubjectId(2));

    fn facts(list: &[(PlannedSubject, bool, u16)]) -> HashMap<PlannedSubject, OwnerFacts> {
        list.iter()
            .map(|&(s, identified, anon)| {
                let mut counts = IdentifierCounts::default();
                counts.add(IdentifierKind::AnonymousId, anon);
                if identified {
                    counts.add(IdentifierKind::UserId, 1);
                }
                (
                    s,
                    OwnerFacts {
                        identified,
                        verified: false,
                        counts,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn identify_after_browsing_merges_the_anonymous_profile() {
        use IdentifierKind::*;
        // The user is known (B) and the browser's anonymous profile is A.
        let r = resolve(
            &[claim(UserId, 1, Some(B)), claim(AnonymousId, 2, Some(A))],
            &facts(&[(A, false, 1), (B, true, 1)]),
            false,
            &Caps::default(),
        );
        assert_eq!(r.subject, Some(B));
        assert_eq!(r.merge, vec![A]);
        // The user is new: the anonymous profile becomes the user.
        let r = resolve(
            &[claim(UserId, 1, None), claim(AnonymousId, 2, Some(A))],
            &facts(&[(A, false, 1)]),
            false,
            &Caps::default(),
        );
        assert_eq!(r.subject, Some(A));
        assert_eq!(r.attach, vec![(UserId, IdentifierHash([1; 32]))]);
        assert!(r.merge.is_empty());
        // Nobody known: a new subject with both.
        let r = resolve(
            &[claim(UserId, 1, None), claim(AnonymousId, 2, None)],
            &HashMap::new(),
            false,
            &Caps::default(),
        );
        assert_eq!(r.subject, None);
        assert_eq!(r.attach.len(), 2);
    }

    #[test]
    fn an_identifier_of_another_user_is_not_merged_silently() {
        use IdentifierKind::*;
        let r = resolve(
            &[claim(UserId, 1, Some(B)), claim(Email, 3, Some(A))],
            &facts(&[(A, true, 0), (B, true, 0)]),
            false,
            &Caps::default(),
        );
        assert_eq!(r.subject, Some(B));
        assert!(r.merge.is_empty());
        assert_eq!(r.refused[0].reason, RefusalReason::ClaimedByAnotherUser);
        assert_eq!(r.refused[0].holder, Some(A));
        // An alias says so explicitly.
        let r = resolve(
            &[claim(UserId, 1, Some(B)), claim(UserId, 3, Some(A))],
            &facts(&[(A, true, 0), (B, true, 0)]),
            true,
            &Caps::default(),
        );
        assert_eq!(r.merge, vec![A]);
    }

    #[test]
    fn caps_hold_for_attachments_and_merges() {
        use IdentifierKind::*;
        let caps = Caps {
            anonymous_id: 2,
            ..Caps::default()
        };
        let r = resolve(
            &[claim(UserId, 1, Some(B)), claim(AnonymousId, 2, None)],
            &facts(&[(B, true, 2)]),
            false,
            &caps,
        );
        assert!(r.attach.is_empty());
        assert_eq!(r.refused[0].reason, RefusalReason::CapExceeded);
        let r = resolve(
            &[claim(UserId, 1, Some(B)), claim(AnonymousId, 2, Some(A))],
            &facts(&[(A, false, 2), (B, true, 1)]),
            false,
            &caps,
        );
        assert!(r.merge.is_empty());
        assert_eq!(r.refused[0].holder, Some(A));
    }

    #[test]
    fn without_a_user_id_a_known_holder_wins() {
        use IdentifierKind::*;
        let r = resolve(
            &[claim(AnonymousId, 2, Some(A)), claim(Email, 3, Some(B))],
            &facts(&[(A, false, 1), (B, true, 0)]),
            false,
            &Caps::default(),
        );
        assert_eq!(r.subject, Some(B));
        assert_eq!(r.merge, vec![A]);
    }

    #[test]
    fn a_browser_without_a_token_speaks_only_for_anonymous_subjects() {
        use IdentifierKind::*;
        let known = facts(&[(A, false, 1), (B, true, 1)]);
        let caps = Caps::default();
        // Identify after browsing, on a known user: the anonymous profile would be merged in.
        let c = [claim(UserId, 1, Some(B)), claim(AnonymousId, 2, Some(A))];
        let r = resolve(&c, &known, false, &caps);
        assert_eq!(
            check_speaker(&c, &r, &known, Speaker::Browser),
            Err(Overreach::MergeIntoKnown)
        );
        assert_eq!(check_speaker(&c, &r, &known, Speaker::Token), Ok(()));
        assert_eq!(check_speaker(&c, &r, &known, Speaker::Server), Ok(()));
        // A new email for a known user.
        let c = [claim(UserId, 1, Some(B)), claim(Email, 3, None)];
        let r = resolve(&c, &known, false, &caps);
        assert_eq!(
            check_speaker(&c, &r, &known, Speaker::Browser),
            Err(Overreach::AttachToKnown(Email))
        );
        assert_eq!(check_speaker(&c, &r, &known, Speaker::Token), Ok(()));
        // An anonymous browser gets a new user id: allowed.
        let c = [claim(UserId, 4, None), claim(AnonymousId, 2, Some(A))];
        let r = resolve(&c, &known, false, &caps);
        assert_eq!(check_speaker(&c, &r, &known, Speaker::Browser), Ok(()));
        // A subject known only by a verified email counts as known.
        let mut verified = facts(&[(A, false, 1)]);
        if let Some(f) = verified.get_mut(&A) {
            f.verified = true;
        }
        let c = [claim(AnonymousId, 2, Some(A)), claim(Phone, 5, None)];
        let r = resolve(&c, &verified, false, &caps);
        assert_eq!(
            check_speaker(&c, &r, &verified, Speaker::Browser),
            Err(Overreach::AttachToKnown(Phone))
        );
        // A token for another, new user id does not speak for that verified customer.
        let c = [claim(UserId, 6, None), claim(Email, 7, Some(A))];
        let r = resolve(&c, &verified, false, &caps);
        assert_eq!(r.subject, Some(A));
        assert_eq!(
            check_speaker(&c, &r, &verified, Speaker::Token),
            Err(Overreach::AttachToKnown(UserId))
        );
    }

    #[test]
    fn a_public_key_never_merges_a_known_customer_away() {
        use IdentifierKind::*;
        let both = facts(&[(A, true, 0), (B, true, 0)]);
        let caps = Caps::default();
        // `alias` joining two users, even with a token for the survivor.
        let c = [claim(UserId, 1, Some(B)), claim(UserId, 3, Some(A))];
        let r = resolve(&c, &both, true, &caps);
        assert_eq!(r.merge, vec![A]);
        for speaker in [Speaker::Token, Speaker::Browser] {
            assert_eq!(
                check_speaker(&c, &r, &both, speaker),
                Err(Overreach::MergeKnown)
            );
        }
        assert_eq!(check_speaker(&c, &r, &both, Speaker::Server), Ok(()));
        // `alias` of a known user into a brand-new user id.
        let c = [claim(UserId, 9, None), claim(UserId, 3, Some(A))];
        let r = resolve(&c, &both, true, &caps);
        assert_eq!(r.merge, vec![A]);
        assert_eq!(
            check_speaker(&c, &r, &both, Speaker::Token),
            Err(Overreach::MergeKnown)
        );
    }
}
