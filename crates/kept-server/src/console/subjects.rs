//! The subjects pages for the privacy team: finding a subject by email, phone or user id (the
//! API's keyed-hash lookup, `identity::resolve`), and one subject's page: identifiers and
//! standing, traits with their provenance and the purposes that may use each now, the
//! decisions per purpose and channel, the consent ledger, preferences, uses, merges and
//! requests. From the page an operator mints a preference-center link, starts a data subject
//! request or undoes a merge. Looking is a dry evaluation: nothing here records a use.

use crate::console::Page;
use crate::console::audit;
use crate::console::visit::{Act, Frame, Visit, refused};
use crate::http::error::ApiError;
use crate::identity::Identities;
use crate::identity::resolve::{Lookup, SubjectName, resolve_subjects};
use crate::index::IndexHandle;
use crate::state::AppState;
use crate::web::frame::{datetime, html, redirect};
use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kept_core::decision::DecisionRequest;
use kept_core::identity::{IdentifierKind, normalize};
use kept_core::manifest::Manifest;
use kept_core::requests::{Channel, Intake, RequestKind, Scope, Transition, Verification};
use kept_core::{SubjectId, UnixMillis};
use kept_store::Store;
use kept_store::requests::RequestFilter;
use kept_store::uses::UseQuery;
use serde::Deserialize;
use std::borrow::Cow;

// --- words -----------------------------------------------------------------------------------

/// Every string the subjects pages show.
#[derive(Debug)]
pub struct SubjectTexts {
    pub intro: &'static str,
    pub search: &'static str,
    pub query: &'static str,
    pub query_hint: &'static str,
    pub kind: &'static str,
    pub kind_auto: &'static str,
    pub kind_email: &'static str,
    pub kind_phone: &'static str,
    pub kind_user_id: &'static str,
    pub not_found: &'static str,
    pub bad_email: &'static str,
    pub bad_phone: &'static str,
    pub bad_user_id: &'static str,
    pub bad_kind: &'static str,
    pub bad_request_kind: &'static str,
    pub request_kind: &'static str,
    pub unknown_subject: &'static str,
    pub subject: &'static str,
    pub identifiers: &'static str,
    pub value: &'static str,
    pub key_shredded: &'static str,
    pub sealed: &'static str,
    pub standing: &'static str,
    pub place: &'static str,
    pub regime: &'static str,
    pub erased: &'static str,
    pub erasure_requested: &'static str,
    pub suppressed: &'static str,
    pub gate: &'static str,
    pub in_good_standing: &'static str,
    pub traits: &'static str,
    pub trait_key: &'static str,
    pub category: &'static str,
    pub collection_point: &'static str,
    pub notice: &'static str,
    pub collected: &'static str,
    pub source: &'static str,
    pub usable_for: &'static str,
    pub no_purpose: &'static str,
    pub decisions: &'static str,
    pub decisions_intro: &'static str,
    pub purpose: &'static str,
    pub no_channel: &'static str,
    pub timeline: &'static str,
    pub seq: &'static str,
    pub when: &'static str,
    pub channel_topic: &'static str,
    pub action: &'static str,
    pub older: &'static str,
    pub preferences: &'static str,
    pub channel: &'static str,
    pub topic: &'static str,
    pub subscribed: &'static str,
    pub pending: &'static str,
    pub not_subscribed: &'static str,
    pub frequency: &'static str,
    pub quiet_hours: &'static str,
    pub as_it_happens: &'static str,
    pub uses: &'static str,
    pub use_kind: &'static str,
    pub reason: &'static str,
    pub actor: &'static str,
    pub merges: &'static str,
    pub merged_from: &'static str,
    pub merged_into: &'static str,
    pub cause: &'static str,
    pub undone: &'static str,
    pub undo: &'static str,
    pub merge_undone: &'static str,
    pub requests: &'static str,
    pub state: &'static str,
    pub due: &'static str,
    pub link: &'static str,
    pub link_intro: &'static str,
    pub mint_link: &'static str,
    pub link_shown_once: &'static str,
    pub link_expires: &'static str,
    pub start_request: &'static str,
    pub note: &'static str,
    pub start: &'static str,
    pub none: &'static str,
}

static EN: SubjectTexts = SubjectTexts {
    intro: "Find a person by email address, phone number or user id, and see everything Kept holds about them and what may be done with it. Searches and views are written to the audit log.",
    search: "Search",
    query: "Email, phone or user id",
    query_hint: "An email address, a phone number in international form (+49…), or the company's user id.",
    kind: "Search by",
    kind_auto: "Work it out",
    kind_email: "Email address",
    kind_phone: "Phone number",
    kind_user_id: "User id",
    not_found: "No subject is known by this identifier.",
    bad_email: "Email, phone or user id: this is not an email address.",
    bad_phone: "Email, phone or user id: this is not a phone number.",
    bad_user_id: "Email, phone or user id: this user id is empty or too long.",
    bad_kind: "Search by: choose email address, phone number or user id.",
    bad_request_kind: "choose one of the kinds listed",
    request_kind: "Kind",
    unknown_subject: "No subject has this id.",
    subject: "Subject",
    identifiers: "Identifiers",
    value: "Value",
    key_shredded: "(key shredded)",
    sealed: "(an identifier: see above)",
    standing: "Standing",
    place: "Place",
    regime: "Regime",
    erased: "Erased",
    erasure_requested: "Erasure requested",
    suppressed: "On the suppression list",
    gate: "Gated by request",
    in_good_standing: "No erasure, suppression or restriction.",
    traits: "Traits",
    trait_key: "Trait",
    category: "Category",
    collection_point: "Collection point",
    notice: "Notice",
    collected: "Collected",
    source: "Source",
    usable_for: "May be used now for",
    no_purpose: "no purpose",
    decisions: "Decisions",
    decisions_intro: "What a decision would answer now for each purpose and channel. Worked out for this page only: no use is recorded.",
    purpose: "Purpose",
    no_channel: "no channel",
    timeline: "Consent ledger",
    seq: "Record",
    when: "When",
    channel_topic: "Channel / topic",
    action: "Action",
    older: "Older records",
    preferences: "Preferences",
    channel: "Channel",
    topic: "Topic",
    subscribed: "subscribed",
    pending: "waiting for confirmation",
    not_subscribed: "not subscribed",
    frequency: "How often",
    quiet_hours: "Quiet hours",
    as_it_happens: "as it happens",
    uses: "Contacts and uses",
    use_kind: "Use",
    reason: "Reason",
    actor: "By",
    merges: "Merges",
    merged_from: "Merged away",
    merged_into: "Into",
    cause: "Cause",
    undone: "Undone",
    undo: "Undo",
    merge_undone: "The merge is undone.",
    requests: "Data subject requests",
    state: "State",
    due: "Due",
    link: "Preference-center link",
    link_intro: "A signed, single-use link that opens this person's preference center, to hand to them. It is shown once and never stored.",
    mint_link: "Make a link",
    link_shown_once: "The link, shown once",
    link_expires: "Works until",
    start_request: "Start a request",
    note: "Note (optional)",
    start: "Start the request",
    none: "None.",
};

static DE: SubjectTexts = SubjectTexts {
    intro: "Eine Person per E-Mail-Adresse, Telefonnummer oder Nutzer-ID finden und sehen, was Kept über sie hält und was damit geschehen darf. Suchen und Ansichten werden im Audit-Log festgehalten.",
    search: "Suchen",
    query: "E-Mail, Telefon oder Nutzer-ID",
    query_hint: "Eine E-Mail-Adresse, eine Telefonnummer in internationaler Form (+49…) oder die Nutzer-ID des Unternehmens.",
    kind: "Suchen nach",
    kind_auto: "Automatisch erkennen",
    kind_email: "E-Mail-Adresse",
    kind_phone: "Telefonnummer",
    kind_user_id: "Nutzer-ID",
    not_found: "Unter dieser Kennung ist keine Person bekannt.",
    bad_email: "E-Mail, Telefon oder Nutzer-ID: das ist keine E-Mail-Adresse.",
    bad_phone: "E-Mail, Telefon oder Nutzer-ID: das ist keine Telefonnummer.",
    bad_user_id: "E-Mail, Telefon oder Nutzer-ID: diese Nutzer-ID ist leer oder zu lang.",
    bad_kind: "Suchen nach: E-Mail-Adresse, Telefonnummer oder Nutzer-ID wählen.",
    bad_request_kind: "eine der aufgeführten Arten wählen",
    request_kind: "Art",
    unknown_subject: "Keine Person hat diese ID.",
    subject: "Person",
    identifiers: "Kennungen",
    value: "Wert",
    key_shredded: "(Schlüssel vernichtet)",
    sealed: "(eine Kennung: siehe oben)",
    standing: "Stand",
    place: "Ort",
    regime: "Rechtsrahmen",
    erased: "Gelöscht",
    erasure_requested: "Löschung beantragt",
    suppressed: "Auf der Sperrliste",
    gate: "Durch Antrag gesperrt",
    in_good_standing: "Keine Löschung, Sperre oder Einschränkung.",
    traits: "Merkmale",
    trait_key: "Merkmal",
    category: "Kategorie",
    collection_point: "Erhebungsstelle",
    notice: "Hinweis",
    collected: "Erhoben",
    source: "Quelle",
    usable_for: "Jetzt nutzbar für",
    no_purpose: "keinen Zweck",
    decisions: "Entscheidungen",
    decisions_intro: "Was eine Entscheidung jetzt für jeden Zweck und Kanal antworten würde. Nur für diese Seite berechnet: keine Nutzung wird erfasst.",
    purpose: "Zweck",
    no_channel: "kein Kanal",
    timeline: "Einwilligungsprotokoll",
    seq: "Eintrag",
    when: "Wann",
    channel_topic: "Kanal / Thema",
    action: "Aktion",
    older: "Ältere Einträge",
    preferences: "Präferenzen",
    channel: "Kanal",
    topic: "Thema",
    subscribed: "abonniert",
    pending: "wartet auf Bestätigung",
    not_subscribed: "nicht abonniert",
    frequency: "Wie oft",
    quiet_hours: "Ruhezeiten",
    as_it_happens: "sofort",
    uses: "Kontakte und Nutzungen",
    use_kind: "Nutzung",
    reason: "Grund",
    actor: "Durch",
    merges: "Zusammenführungen",
    merged_from: "Aufgelöst",
    merged_into: "In",
    cause: "Anlass",
    undone: "Rückgängig gemacht",
    undo: "Rückgängig machen",
    merge_undone: "Die Zusammenführung ist rückgängig gemacht.",
    requests: "Betroffenenanträge",
    state: "Status",
    due: "Fällig",
    link: "Link zum Präferenzcenter",
    link_intro: "Ein signierter Link zur einmaligen Nutzung, der das Präferenzcenter dieser Person öffnet, zum Weitergeben. Er wird einmal gezeigt und nie gespeichert.",
    mint_link: "Link erstellen",
    link_shown_once: "Der Link, einmal gezeigt",
    link_expires: "Gültig bis",
    start_request: "Antrag anlegen",
    note: "Notiz (optional)",
    start: "Antrag anlegen",
    none: "Keine.",
};

static FR: SubjectTexts = SubjectTexts {
    intro: "Trouver une personne par adresse e-mail, numéro de téléphone ou identifiant, et voir tout ce que Kept détient sur elle et ce qui peut en être fait. Recherches et consultations sont inscrites au journal d'audit.",
    search: "Rechercher",
    query: "E-mail, téléphone ou identifiant",
    query_hint: "Une adresse e-mail, un numéro de téléphone au format international (+33…) ou l'identifiant de l'entreprise.",
    kind: "Rechercher par",
    kind_auto: "Deviner",
    kind_email: "Adresse e-mail",
    kind_phone: "Numéro de téléphone",
    kind_user_id: "Identifiant",
    not_found: "Aucune personne n'est connue sous cet identifiant.",
    bad_email: "E-mail, téléphone ou identifiant : ce n'est pas une adresse e-mail.",
    bad_phone: "E-mail, téléphone ou identifiant : ce n'est pas un numéro de téléphone.",
    bad_user_id: "E-mail, téléphone ou identifiant : cet identifiant est vide ou trop long.",
    bad_kind: "Rechercher par : choisir adresse e-mail, numéro de téléphone ou identifiant.",
    bad_request_kind: "choisir l'un des types proposés",
    request_kind: "Type",
    unknown_subject: "Aucune personne n'a cet identifiant.",
    subject: "Personne",
    identifiers: "Identifiants",
    value: "Valeur",
    key_shredded: "(clé détruite)",
    sealed: "(un identifiant : voir plus haut)",
    standing: "Situation",
    place: "Lieu",
    regime: "Régime",
    erased: "Effacée",
    erasure_requested: "Effacement demandé",
    suppressed: "Sur la liste d'exclusion",
    gate: "Bloquée par une demande",
    in_good_standing: "Ni effacement, ni exclusion, ni limitation.",
    traits: "Attributs",
    trait_key: "Attribut",
    category: "Catégorie",
    collection_point: "Point de collecte",
    notice: "Information",
    collected: "Collecté",
    source: "Source",
    usable_for: "Utilisable maintenant pour",
    no_purpose: "aucune finalité",
    decisions: "Décisions",
    decisions_intro: "Ce qu'une décision répondrait maintenant pour chaque finalité et canal. Calculé pour cette page seulement : aucune utilisation n'est enregistrée.",
    purpose: "Finalité",
    no_channel: "aucun canal",
    timeline: "Registre des consentements",
    seq: "Entrée",
    when: "Quand",
    channel_topic: "Canal / sujet",
    action: "Action",
    older: "Entrées plus anciennes",
    preferences: "Préférences",
    channel: "Canal",
    topic: "Sujet",
    subscribed: "abonné",
    pending: "en attente de confirmation",
    not_subscribed: "non abonné",
    frequency: "Fréquence",
    quiet_hours: "Heures calmes",
    as_it_happens: "au fil de l'eau",
    uses: "Contacts et utilisations",
    use_kind: "Utilisation",
    reason: "Motif",
    actor: "Par",
    merges: "Fusions",
    merged_from: "Fusionnée",
    merged_into: "Dans",
    cause: "Cause",
    undone: "Annulée",
    undo: "Annuler",
    merge_undone: "La fusion est annulée.",
    requests: "Demandes des personnes",
    state: "État",
    due: "Échéance",
    link: "Lien vers le centre de préférences",
    link_intro: "Un lien signé à usage unique qui ouvre le centre de préférences de cette personne, à lui remettre. Il est montré une fois et jamais conservé.",
    mint_link: "Créer un lien",
    link_shown_once: "Le lien, montré une fois",
    link_expires: "Valable jusqu'au",
    start_request: "Ouvrir une demande",
    note: "Note (facultative)",
    start: "Ouvrir la demande",
    none: "Aucune.",
};

static ES: SubjectTexts = SubjectTexts {
    intro: "Encontrar a una persona por correo electrónico, teléfono o id de usuario, y ver todo lo que Kept guarda sobre ella y lo que se puede hacer con ello. Las búsquedas y consultas quedan en el registro de auditoría.",
    search: "Buscar",
    query: "Correo, teléfono o id de usuario",
    query_hint: "Una dirección de correo, un teléfono en formato internacional (+34…) o el id de usuario de la empresa.",
    kind: "Buscar por",
    kind_auto: "Deducirlo",
    kind_email: "Correo electrónico",
    kind_phone: "Teléfono",
    kind_user_id: "Id de usuario",
    not_found: "No se conoce a nadie con este identificador.",
    bad_email: "Correo, teléfono o id de usuario: no es una dirección de correo.",
    bad_phone: "Correo, teléfono o id de usuario: no es un número de teléfono.",
    bad_user_id: "Correo, teléfono o id de usuario: este id está vacío o es demasiado largo.",
    bad_kind: "Buscar por: elige correo electrónico, teléfono o id de usuario.",
    bad_request_kind: "elige uno de los tipos de la lista",
    request_kind: "Tipo",
    unknown_subject: "Nadie tiene este id.",
    subject: "Persona",
    identifiers: "Identificadores",
    value: "Valor",
    key_shredded: "(clave destruida)",
    sealed: "(un identificador: ver arriba)",
    standing: "Situación",
    place: "Lugar",
    regime: "Régimen",
    erased: "Borrada",
    erasure_requested: "Borrado solicitado",
    suppressed: "En la lista de exclusión",
    gate: "Bloqueada por una solicitud",
    in_good_standing: "Sin borrado, exclusión ni limitación.",
    traits: "Atributos",
    trait_key: "Atributo",
    category: "Categoría",
    collection_point: "Punto de recogida",
    notice: "Aviso",
    collected: "Recogido",
    source: "Fuente",
    usable_for: "Se puede usar ahora para",
    no_purpose: "ninguna finalidad",
    decisions: "Decisiones",
    decisions_intro: "Lo que respondería ahora una decisión para cada finalidad y canal. Calculado solo para esta página: no se registra ningún uso.",
    purpose: "Finalidad",
    no_channel: "sin canal",
    timeline: "Registro de consentimientos",
    seq: "Entrada",
    when: "Cuándo",
    channel_topic: "Canal / tema",
    action: "Acción",
    older: "Entradas anteriores",
    preferences: "Preferencias",
    channel: "Canal",
    topic: "Tema",
    subscribed: "suscrito",
    pending: "pendiente de confirmación",
    not_subscribed: "no suscrito",
    frequency: "Frecuencia",
    quiet_hours: "Horas de silencio",
    as_it_happens: "en el momento",
    uses: "Contactos y usos",
    use_kind: "Uso",
    reason: "Motivo",
    actor: "Por",
    merges: "Fusiones",
    merged_from: "Fusionada",
    merged_into: "En",
    cause: "Causa",
    undone: "Deshecha",
    undo: "Deshacer",
    merge_undone: "La fusión está deshecha.",
    requests: "Solicitudes de los interesados",
    state: "Estado",
    due: "Vence",
    link: "Enlace al centro de preferencias",
    link_intro: "Un enlace firmado de un solo uso que abre el centro de preferencias de esta persona, para dárselo. Se muestra una vez y nunca se guarda.",
    mint_link: "Crear un enlace",
    link_shown_once: "El enlace, mostrado una vez",
    link_expires: "Válido hasta",
    start_request: "Abrir una solicitud",
    note: "Nota (opcional)",
    start: "Abrir la solicitud",
    none: "Ninguna.",
};

/// The subjects pages' words in the language `code` names (English otherwise).
pub fn texts(code: &str) -> &'static SubjectTexts {
    match code {
        "de" => &DE,
        "fr" => &FR,
        "es" => &ES,
        _ => &EN,
    }
}

// --- the search ------------------------------------------------------------------------------

/// What the search form names a subject by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    Email,
    Phone,
    UserId,
}

impl SearchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchKind::Email => "email",
            SearchKind::Phone => "phone",
            SearchKind::UserId => "user_id",
        }
    }

    /// The kind the form asked for; `auto` (or nothing) works it out from `q`: an `@` is an
    /// email address, a leading `+` or only digits and separators a phone number, anything
    /// else a user id. `None`: a kind the form does not offer.
    pub fn of(kind: Option<&str>, q: &str) -> Option<SearchKind> {
        match kind.map(str::trim).unwrap_or_default() {
            "email" => Some(SearchKind::Email),
            "phone" => Some(SearchKind::Phone),
            "user_id" => Some(SearchKind::UserId),
            "" | "auto" => {
                let q = q.trim();
                let phone_like = q.chars().any(|c| c.is_ascii_digit())
                    && (q.starts_with('+')
                        || q.chars()
                            .all(|c| c.is_ascii_digit() || " -.()/".contains(c)));
                Some(if q.contains('@') {
                    SearchKind::Email
                } else if phone_like {
                    SearchKind::Phone
                } else {
                    SearchKind::UserId
                })
            }
            _ => None,
        }
    }

    fn identifier(self) -> IdentifierKind {
        match self {
            SearchKind::Email => IdentifierKind::Email,
            SearchKind::Phone => IdentifierKind::Phone,
            SearchKind::UserId => IdentifierKind::UserId,
        }
    }
}

/// What a search found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Subject(SubjectId),
    Nobody,
    /// `q` is not a `kind` (an email address without `@`, a phone number with letters).
    Malformed,
}

/// The subject `q` names as a `kind`, looked up as the API looks up a subject object's
/// `email`, `phone` or `user_id` (`identity::resolve`). Only a subject the store holds and
/// that is not erased is found.
pub async fn find(lookup: Lookup<'_>, kind: SearchKind, q: &str) -> Result<Found, ApiError> {
    let country = lookup.identities.config().default_country.as_deref();
    if normalize(kind.identifier(), q, country).is_err() {
        return Ok(Found::Malformed);
    }
    let name = match kind {
        SearchKind::Email => SubjectName::Email(Cow::Borrowed(q)),
        SearchKind::Phone => SubjectName::Phone(Cow::Borrowed(q)),
        SearchKind::UserId => SubjectName::UserId(Cow::Borrowed(q.trim())),
    };
    let found = resolve_subjects(lookup, std::slice::from_ref(&name))
        .await?
        .into_iter()
        .next()
        .flatten();
    let Some(id) = found else {
        return Ok(Found::Nobody);
    };
    Ok(match lookup.store.subject(id).await? {
        Some(s) if s.erased_at.is_none() => Found::Subject(id),
        _ => Found::Nobody,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
    kind: Option<String>,
}

#[derive(Template)]
#[template(path = "console/subjects.html")]
struct SearchPage<'a> {
    f: Frame,
    s: &'static SubjectTexts,
    q: &'a str,
    kind: &'a str,
    /// The field error, naming the field it is about.
    error: Option<(&'static str, &'static str)>,
    not_found: bool,
}

/// `GET /admin/subjects?q=&kind=`: the search form; once filled, the subject found (a 303 to
/// its page), "nobody" (200), or the field that is wrong (422). Every search is audited with
/// the kind of identifier searched by, never its value.
pub async fn search(v: Visit, q: Result<Query<SearchQuery>, QueryRejection>) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let f = v.frame();
    let s = texts(f.t.code);
    let text = q.q.as_deref().unwrap_or_default();
    let kind_field = q.kind.as_deref().unwrap_or("auto");
    let page = |f: Frame, status, error, not_found| {
        v.show(
            status,
            SearchPage {
                f,
                s,
                q: text,
                kind: kind_field,
                error,
                not_found,
            }
            .render(),
        )
    };
    if text.trim().is_empty() && q.kind.is_none() {
        return page(f, StatusCode::OK, None, false);
    }
    let Some(kind) = SearchKind::of(q.kind.as_deref(), text) else {
        return page(
            f,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(("kind", s.bad_kind)),
            false,
        );
    };
    let found = match find(v.state.lookup(), kind, text).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let (target, outcome) = match found {
        Found::Subject(id) => (Some(format!("subject:{}", id.0)), "found"),
        Found::Nobody => (None, "not found"),
        Found::Malformed => (None, "malformed"),
    };
    if let Err(e) = audit::record(
        v.state.store.as_ref(),
        &v.actor(),
        "subject.search",
        target,
        Some(format!("by {}, {outcome}", kind.as_str())),
        v.state.now(),
    )
    .await
    {
        return ApiError::from(e).into_response();
    }
    match found {
        Found::Subject(id) => redirect(&format!("{}/{}", Page::Subjects.path(), id.0), &[]),
        Found::Nobody => page(f, StatusCode::OK, None, true),
        Found::Malformed => {
            let message = match kind {
                SearchKind::Email => s.bad_email,
                SearchKind::Phone => s.bad_phone,
                SearchKind::UserId => s.bad_user_id,
            };
            page(
                f,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(("q", message)),
                false,
            )
        }
    }
}

// --- one subject -----------------------------------------------------------------------------

/// One trait as the page shows it.
#[derive(Debug, Clone)]
pub struct TraitRow {
    pub key: String,
    /// `None` for an identifier, sealed and shown among the identifiers.
    pub value: Option<String>,
    pub category: String,
    pub point: String,
    pub notice: String,
    pub collected: String,
    pub source: String,
    /// The purposes that may use it now.
    pub purposes: Vec<String>,
}

/// One ledger record as the timeline shows it.
#[derive(Debug, Clone)]
pub struct RecordRow {
    pub seq: u64,
    pub at: String,
    pub purpose: String,
    pub channel_topic: String,
    pub action: &'static str,
    pub notice: String,
    pub source: String,
}

/// One cell of the decisions matrix.
#[derive(Debug, Clone)]
pub struct Cell {
    pub allowed: bool,
    pub reason: &'static str,
}

/// One topic on one channel, and the channel's limits.
#[derive(Debug, Clone)]
pub struct TopicRow {
    pub channel: String,
    pub topic: String,
    pub subscribed: bool,
    pub pending: bool,
}

/// One use from the record of uses.
#[derive(Debug, Clone)]
pub struct UseRow {
    pub at: String,
    pub kind: &'static str,
    pub purpose: String,
    pub channel: String,
    pub reason: String,
    pub actor: String,
}

/// One entry of the identity log that concerns the subject.
#[derive(Debug, Clone)]
pub struct MergeRow {
    pub id: i64,
    pub action: String,
    pub from: u32,
    pub into: u32,
    pub cause: String,
    pub at: String,
    pub undone: Option<String>,
    /// A merge not undone yet: the page offers its undo.
    pub undoable: bool,
}

/// One data subject request of the subject.
#[derive(Debug, Clone)]
pub struct RequestRow {
    pub id: u64,
    pub kind: &'static str,
    pub state: &'static str,
    pub received: String,
    pub due: String,
}

/// Everything the subject's page shows, read at one time.
#[derive(Debug, Clone)]
pub struct SubjectView {
    pub id: u32,
    pub user_id: Option<String>,
    pub place: String,
    pub regime: &'static str,
    /// Kind, value (`None` once its key is shredded), since.
    pub identifiers: Vec<(&'static str, Option<String>, String)>,
    /// Where it stands: erased, erasure requested, suppressed, gates; empty when none.
    pub standing: Vec<(&'static str, String)>,
    pub traits: Vec<TraitRow>,
    pub channels: Vec<String>,
    /// Per purpose, a cell for no channel, then one per channel of `channels`.
    pub matrix: Vec<(String, Vec<Cell>)>,
    pub timeline: Vec<RecordRow>,
    /// The `before` of the next, older, page of the timeline.
    pub older: Option<u64>,
    pub topics: Vec<TopicRow>,
    /// Channel, frequency, quiet hours.
    pub limits: Vec<(String, Option<String>, Option<String>)>,
    pub uses: Vec<UseRow>,
    pub merges: Vec<MergeRow>,
    pub requests: Vec<RequestRow>,
}

/// What reading a subject's page takes.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    pub store: &'a dyn Store,
    pub index: &'a IndexHandle,
    pub manifest: &'a Manifest,
    pub identities: &'a Identities,
}

/// How many ledger records the timeline shows at once.
pub const TIMELINE_PAGE: usize = 50;
/// How many uses the page lists.
const USES_SHOWN: u32 = 50;

fn minutes(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

impl Reader<'_> {
    /// The subject's page at `now`, with the timeline's records before `before` (newest
    /// first); `None` for a subject the store does not hold. Decisions are asked of the index
    /// as `POST /v1/decisions` asks them, but neither logged nor recorded as uses.
    pub async fn read(
        &self,
        id: SubjectId,
        before: Option<u64>,
        now: UnixMillis,
    ) -> Result<Option<SubjectView>, ApiError> {
        let (store, manifest) = (self.store, self.manifest);
        let Some(st) =
            crate::subjects::standing::standing(store, self.index, manifest, id, now).await?
        else {
            return Ok(None);
        };
        let subject = &st.subject;
        let identifiers = crate::subjects::identifiers::opened(store, self.identities, id)
            .await?
            .into_iter()
            .map(|(kind, value, since)| (kind.as_str(), value, datetime(since)))
            .collect();

        let mut standing = Vec::new();
        if let Some(at) = subject.erased_at {
            standing.push(("erased", datetime(at)));
        }
        if let Some(at) = subject.erasure_requested_at {
            standing.push(("erasure_requested", datetime(at)));
        }
        if subject.suppressed {
            standing.push(("suppressed", String::new()));
        }
        if let Some(at) = subject.erasure_suppressed_at {
            standing.push(("suppressed", datetime(at)));
        }
        for gate in store.gates_of(id).await? {
            let scope: Vec<&str> = gate
                .purposes
                .iter()
                .chain(gate.categories.iter())
                .map(String::as_str)
                .collect();
            standing.push((
                "gate",
                format!(
                    "{} (#{}) {} {}",
                    gate.kind.as_str(),
                    gate.request,
                    scope.join(", "),
                    datetime(gate.since)
                ),
            ));
        }

        let snapshot = self.index.snapshot()?;
        // Per trait, the purposes that may use it now: the profile's sifting, purpose by
        // purpose, without its recording.
        let mut usable: Vec<Vec<String>> = vec![Vec::new(); st.traits.len()];
        for purpose in manifest.purposes.keys() {
            let sifted =
                crate::decide::profile::sift(&snapshot, id, st.traits.clone(), purpose, None, now);
            for (i, (_, reason)) in sifted.traits.iter().enumerate() {
                if reason.is_allowed()
                    && let Some(list) = usable.get_mut(i)
                {
                    list.push(purpose.clone());
                }
            }
        }
        let traits = st
            .traits
            .iter()
            .zip(usable)
            .map(|(t, purposes)| TraitRow {
                key: t.key.clone(),
                value: match &t.value {
                    // Sealed with the identifiers: its value is shown there, opened.
                    v if v.get("sealed_identifier").is_some() => None,
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                },
                category: t.category.clone(),
                point: t.provenance.collection_point.clone(),
                notice: format!(
                    "{} v{}",
                    t.provenance.notice_id, t.provenance.notice_version
                ),
                collected: datetime(t.provenance.collected_at),
                source: t.provenance.source.clone(),
                purposes,
            })
            .collect();

        let channels: Vec<String> = manifest.channels.keys().cloned().collect();
        let matrix = manifest
            .purposes
            .keys()
            .map(|purpose| {
                let cells = std::iter::once(None)
                    .chain(channels.iter().map(Some))
                    .map(|channel| {
                        let mut req = DecisionRequest::new(purpose);
                        if let Some(c) = channel {
                            req = req.channel(c);
                        }
                        let q = snapshot.prepare(&req);
                        let d = snapshot.decide_prepared(id, &q, now);
                        Cell {
                            allowed: d.allowed,
                            reason: d.reason.as_str(),
                        }
                    })
                    .collect();
                (purpose.clone(), cells)
            })
            .collect();

        let newest_first: Vec<_> = st
            .records
            .iter()
            .rev()
            .filter(|r| before.is_none_or(|b| r.seq < b))
            .collect();
        let older = (newest_first.len() > TIMELINE_PAGE)
            .then(|| newest_first.get(TIMELINE_PAGE - 1).map(|r| r.seq))
            .flatten();
        let timeline = newest_first
            .into_iter()
            .take(TIMELINE_PAGE)
            .map(|r| {
                let rec = &r.record;
                RecordRow {
                    seq: r.seq,
                    at: datetime(rec.at),
                    purpose: rec.purpose.clone(),
                    channel_topic: match (&rec.channel, &rec.topic) {
                        (Some(c), Some(t)) => format!("{c} / {t}"),
                        (Some(c), None) => c.clone(),
                        (None, Some(t)) => t.clone(),
                        (None, None) => String::new(),
                    },
                    action: rec.action.as_str(),
                    notice: rec
                        .notice
                        .as_ref()
                        .map(|n| format!("{} v{}", n.id, n.version))
                        .unwrap_or_default(),
                    source: rec.source.clone(),
                }
            })
            .collect();

        let topics = st
            .channels
            .iter()
            .flat_map(|c| {
                c.topics.iter().map(|t| TopicRow {
                    channel: c.channel.clone(),
                    topic: t.topic.clone(),
                    subscribed: t.subscribed,
                    pending: t.pending,
                })
            })
            .collect();
        let limits = st
            .channels
            .iter()
            .map(|c| {
                (
                    c.channel.clone(),
                    c.frequency
                        .map(|f| format!("{} / {}", f.max, f.period.as_str())),
                    c.quiet
                        .map(|q| format!("{}–{}", minutes(q.start_minute), minutes(q.end_minute))),
                )
            })
            .collect();

        let uses = store
            .uses_of(&UseQuery {
                subject: id,
                before: None,
                limit: USES_SHOWN,
            })
            .await?
            .into_iter()
            .map(|u| UseRow {
                at: datetime(u.at),
                kind: u.kind.as_str(),
                purpose: u.purpose,
                channel: u.channel.unwrap_or_default(),
                reason: u.reason,
                actor: u.actor,
            })
            .collect();

        let merges = merges_of(store, id)
            .await?
            .into_iter()
            .rev()
            .map(|e| MergeRow {
                undoable: e.action == "merge" && e.undone_at.is_none(),
                id: e.id,
                action: e.action,
                from: e.from.0,
                into: e.into.0,
                cause: e.cause,
                at: datetime(e.at),
                undone: e.undone_at.map(datetime),
            })
            .collect();

        let requests = store
            .requests(&RequestFilter {
                subject: Some(id),
                limit: kept_store::requests::MAX_REQUEST_PAGE,
                ..RequestFilter::default()
            })
            .await?
            .into_iter()
            .map(|r| RequestRow {
                id: r.id,
                kind: r.kind.as_str(),
                state: r.state.as_str(),
                received: datetime(r.received_at),
                due: datetime(r.due_at),
            })
            .collect();

        Ok(Some(SubjectView {
            id: id.0,
            user_id: subject.user_id.clone(),
            place: [subject.country.as_deref(), subject.region.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("-"),
            regime: st.regime.as_str(),
            identifiers,
            standing,
            traits,
            channels,
            matrix,
            timeline,
            older,
            topics,
            limits,
            uses,
            merges,
            requests,
        }))
    }
}

/// The identity log's entries that concern `id`: those of the subjects merged into it, and
/// its own merge if it was merged away; oldest first.
async fn merges_of(
    store: &dyn Store,
    id: SubjectId,
) -> Result<Vec<kept_store::collection::MergeEntry>, ApiError> {
    let mut family = store.merged_into(id).await?;
    family.push(id);
    Ok(store.identity_log_of(&family).await?)
}

#[derive(Template)]
#[template(path = "console/subject.html")]
struct SubjectPage {
    f: Frame,
    s: &'static SubjectTexts,
    v: SubjectView,
    kinds: Vec<&'static str>,
    /// A link just minted, and until when it works: shown once.
    link: Option<(String, String)>,
    /// Something done (a merge undone).
    done: Option<&'static str>,
    /// What went wrong, and the field it is about, if one.
    error: Option<(Option<&'static str>, String)>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SubjectQuery {
    before: Option<u64>,
    done: Option<String>,
}

fn reader(state: &AppState) -> Reader<'_> {
    Reader {
        store: state.store.as_ref(),
        index: &state.index,
        manifest: &state.manifest,
        identities: &state.identity,
    }
}

/// The id in a subject's path, if it is one.
fn subject_id(raw: &str) -> Option<SubjectId> {
    raw.parse::<u32>().ok().map(SubjectId)
}

/// The subject's page as `f` frames it, with `status`; the 404 page for a subject the store
/// does not hold.
async fn subject_page(
    state: &AppState,
    f: Frame,
    status: StatusCode,
    id: Option<SubjectId>,
    before: Option<u64>,
    extra: (Option<(String, String)>, Option<&'static str>),
    error: Option<(Option<&'static str>, String)>,
) -> Response {
    let s = texts(f.t.code);
    let view = match id {
        Some(id) => match reader(state).read(id, before, state.now()).await {
            Ok(v) => v,
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    let Some(v) = view else {
        return refused(f, StatusCode::NOT_FOUND, s.unknown_subject);
    };
    let (link, done) = extra;
    html(
        status,
        SubjectPage {
            f,
            s,
            v,
            kinds: RequestKind::ALL.iter().map(|k| k.as_str()).collect(),
            link,
            done,
            error,
        }
        .render(),
    )
}

/// `GET /admin/subjects/{id}?before=`: the subject's page, audited as `subject.view`.
pub async fn view(
    Path(raw): Path<String>,
    v: Visit,
    q: Result<Query<SubjectQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let id = subject_id(&raw);
    let known = match id {
        Some(id) => match v.state.store.subject(id).await {
            Ok(s) => s.is_some(),
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => false,
    };
    let f = v.frame();
    if let (Some(id), true) = (id, known)
        && let Err(e) = audit::record(
            v.state.store.as_ref(),
            &v.actor(),
            "subject.view",
            Some(format!("subject:{}", id.0)),
            None,
            v.state.now(),
        )
        .await
    {
        return ApiError::from(e).into_response();
    }
    let done = (q.done.as_deref() == Some("undone")).then_some(texts(f.t.code).merge_undone);
    let page = subject_page(
        &v.state,
        f,
        StatusCode::OK,
        id.filter(|_| known),
        q.before,
        (None, done),
        None,
    )
    .await;
    crate::console::visit::with_lang(page, &v.state, v.lang.as_deref(), &v.headers)
}

/// The subject an action's path names, if the store holds it.
async fn held(state: &AppState, raw: &str) -> Result<Option<SubjectId>, ApiError> {
    let Some(id) = subject_id(raw) else {
        return Ok(None);
    };
    Ok(state.store.subject(id).await?.map(|s| s.id))
}

/// `POST /admin/subjects/{id}/link`: mints a preference-center sign-in link for the subject
/// and shows it once. The audit log says a link was made, never the link.
pub async fn mint_link(Path(raw): Path<String>, act: Act) -> Response {
    let state = &act.state;
    let f = act.frame();
    let s = texts(f.t.code);
    let id = match held(state, &raw).await {
        Ok(Some(id)) => id,
        Ok(None) => return refused(f, StatusCode::NOT_FOUND, s.unknown_subject),
        Err(e) => return e.into_response(),
    };
    let now = state.now();
    let ttl = state.prefcenter.config().link_ttl;
    let minted = state
        .prefcenter
        .sign_in_link(state.store.as_ref(), id, ttl, None, now)
        .await;
    let (url, expires) = match minted {
        Ok(m) => m,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Err(e) = audit::record(
        state.store.as_ref(),
        &act.actor(),
        "subject.preference_link",
        Some(format!("subject:{}", id.0)),
        Some(format!("expires {}", datetime(expires))),
        now,
    )
    .await
    {
        return ApiError::from(e).into_response();
    }
    subject_page(
        state,
        f,
        StatusCode::CREATED,
        Some(id),
        None,
        (Some((url, datetime(expires))), None),
        None,
    )
    .await
}

/// The longest note an operator may add to a request they start (the requests log's limit).
const MAX_NOTE: usize = 1_000;

/// `POST /admin/subjects/{id}/requests`: files a data subject request of the kind chosen for
/// the subject, as an operator (channel `operator`, verified `company_stated` by the operator
/// who filed it), with the note if one was written; then to the request's page.
pub async fn start_request(Path(raw): Path<String>, act: Act) -> Response {
    let state = &act.state;
    let f = act.frame();
    let s = texts(f.t.code);
    let id = match held(state, &raw).await {
        Ok(Some(id)) => id,
        Ok(None) => return refused(f, StatusCode::NOT_FOUND, s.unknown_subject),
        Err(e) => return e.into_response(),
    };
    let kind = act
        .field("kind")
        .and_then(|k| RequestKind::ALL.into_iter().find(|r| r.as_str() == k));
    let note = act
        .field("note")
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let invalid = |field: &'static str, message: String| {
        subject_page(
            state,
            f.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(id),
            None,
            (None, None),
            Some((Some(field), message)),
        )
    };
    let Some(kind) = kind else {
        return invalid(
            "kind",
            format!("{}: {}", s.request_kind, s.bad_request_kind),
        )
        .await;
    };
    if note.as_ref().is_some_and(|n| n.len() > MAX_NOTE) {
        return invalid("note", format!("{}: at most {MAX_NOTE} bytes", s.note)).await;
    }
    let operator = &act.signed.operator.email;
    let filed = start(state, id, kind, note, operator).await;
    match filed {
        Ok(request) => {
            if let Err(e) = audit::record(
                state.store.as_ref(),
                &act.actor(),
                "request.start",
                Some(format!("request:{request}")),
                Some(format!("{} for subject:{}", kind.as_str(), id.0)),
                state.now(),
            )
            .await
            {
                return ApiError::from(e).into_response();
            }
            redirect(&format!("{}/{request}", Page::Requests.path()), &[])
        }
        Err(ApiError::InvalidField { field, message }) => {
            let field = if field.starts_with("note") {
                "note"
            } else {
                "kind"
            };
            invalid(field, message).await
        }
        Err(ApiError::Request(e)) => invalid("kind", e.to_string()).await,
        Err(e) => e.into_response(),
    }
}

/// Files `kind` for `subject` as the operator `operator`, through the requests service the
/// API files with, and adds `note` to its log. Returns the request's id.
async fn start(
    state: &AppState,
    subject: SubjectId,
    kind: RequestKind,
    note: Option<String>,
    operator: &str,
) -> Result<u64, ApiError> {
    let Some(stored) = state.store.subject(subject).await? else {
        return Err(ApiError::NotFound(format!(
            "subject `{}` not found",
            subject.0
        )));
    };
    let now = state.now();
    let actor = format!("operator:{operator}");
    let intake = Intake {
        subject,
        kind,
        scope: Scope::default(),
        channel: Channel::Operator,
        verification: Some(Verification {
            method: kept_core::requests::VerificationMethod::CompanyStated,
            reference: Some(format!("console operator {operator}")),
            agent: None,
        }),
        regime: kept_core::regime::Regime::resolve(
            stored.country.as_deref(),
            stored.region.as_deref(),
        ),
        region: stored.region.clone(),
        at: now,
    };
    let work = state.work();
    let stepped = crate::requests::service::file(&work, intake, &actor).await?;
    let id = stepped.request.id;
    if let Some(note) = note {
        crate::requests::service::step(
            &work,
            id,
            &Transition::Note {
                note,
                detail: Vec::new(),
            },
            &actor,
            now,
        )
        .await?;
    }
    Ok(id)
}

/// `POST /admin/subjects/{id}/merges/{merge}/undo`: undoes a merge through the identity log's
/// undo (`admin::merges`), then back to the subject's page.
pub async fn undo_merge(Path((raw, merge)): Path<(String, String)>, act: Act) -> Response {
    let state = &act.state;
    let f = act.frame();
    let s = texts(f.t.code);
    let id = match held(state, &raw).await {
        Ok(Some(id)) => id,
        Ok(None) => return refused(f, StatusCode::NOT_FOUND, s.unknown_subject),
        Err(e) => return e.into_response(),
    };
    // Only a merge that made this subject what it is is undone from its page.
    let concerns = match merge.parse::<i64>() {
        Ok(merge) => match merges_of(state.store.as_ref(), id).await {
            Ok(entries) => entries.iter().any(|e| e.id == merge).then_some(merge),
            Err(e) => return e.into_response(),
        },
        Err(_) => None,
    };
    let Some(merge) = concerns else {
        return ApiError::NotFound(format!("no merge `{merge}` of subject `{}`", id.0))
            .into_response();
    };
    let undo = crate::admin::merges::Undo {
        store: state.store.as_ref(),
        ledger: &state.ledger,
        index: &state.index,
        identities: &state.identity,
    };
    let by = format!("operator:{}", act.signed.operator.email);
    let now = state.now();
    match undo.merge(merge, &by, now).await {
        Ok(_) => {}
        Err(e @ ApiError::Store(kept_store::StoreError::Conflict { .. })) => {
            return subject_page(
                state,
                f,
                StatusCode::CONFLICT,
                Some(id),
                None,
                (None, None),
                Some((None, e.to_string())),
            )
            .await;
        }
        Err(e) => return e.into_response(),
    }
    if let Err(e) = audit::record(
        state.store.as_ref(),
        &act.actor(),
        "merge.undo",
        Some(format!("merge:{merge}")),
        Some(format!("from subject:{}", id.0)),
        now,
    )
    .await
    {
        return ApiError::from(e).into_response();
    }
    redirect(
        &format!("{}/{}?done=undone", Page::Subjects.path(), id.0),
        &[],
    )
}
