//! The data map, read from the manifest: the record of processing activities GDPR Art. 30(1)
//! asks a controller to keep (per purpose: who answers for it, the categories of data, the
//! legal basis per regime, how long the data is kept, to which systems it goes), as rows for
//! the page and as CSV; and the map itself as an SVG graph, collection points → notices →
//! purposes → systems, each box with its owning team; the live `kept lint` findings, each
//! pointing at the row of the element it is about; and what is known of a notice's versions.

use kept_core::lint::{self, RecordedNotice};
use kept_core::manifest::{Loaded, Manifest, Notice, RegimeKey};
use kept_store::{NoticeContent, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

/// The data map pages' own words.
#[derive(Debug)]
pub struct DataMapTexts {
    pub findings: &'static str,
    pub no_findings: &'static str,
    pub lint_unavailable: &'static str,
    pub severity: &'static str,
    pub error: &'static str,
    pub warning: &'static str,
    pub code: &'static str,
    pub message: &'static str,
    pub element: &'static str,
    pub line: &'static str,
    pub retention_days: &'static str,
    pub notice_title: &'static str,
    pub versions: &'static str,
    pub version: &'static str,
    pub hash: &'static str,
    pub first_recorded: &'static str,
    pub state: &'static str,
    pub current: &'static str,
    pub earlier: &'static str,
    pub later: &'static str,
    pub changed_without_bump: &'static str,
    pub none_recorded: &'static str,
    pub current_text: &'static str,
    pub channels: &'static str,
    pub locale: &'static str,
    pub compare: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    pub show_changes: &'static str,
    pub changes: &'static str,
    pub change: &'static str,
    pub line_text: &'static str,
    pub added: &'static str,
    pub removed: &'static str,
    pub unchanged: &'static str,
    pub title_and_text: &'static str,
    pub text_column: &'static str,
    pub text_kept: &'static str,
    pub text_not_kept: &'static str,
    pub no_text: &'static str,
    pub only_one_version: &'static str,
    pub not_a_version: &'static str,
    pub unknown_notice: &'static str,
    pub back: &'static str,
}

static EN: DataMapTexts = DataMapTexts {
    findings: "Lint findings",
    no_findings: "No findings: kept lint finds nothing to fix in the manifest this server runs.",
    lint_unavailable: "This server was started without the manifest's file, so it cannot lint it here; run kept lint.",
    severity: "Severity",
    error: "error",
    warning: "warning",
    code: "Code",
    message: "Message",
    element: "Element",
    line: "line",
    retention_days: "Retention (days)",
    notice_title: "Notice",
    versions: "Recorded versions",
    version: "Version",
    hash: "Content hash",
    first_recorded: "First recorded",
    state: "State",
    current: "the version the manifest declares",
    earlier: "earlier version",
    later: "later than the manifest's version",
    changed_without_bump: "the manifest's text differs from this recorded version without a new version number",
    none_recorded: "No version of this notice has been recorded in the database yet.",
    current_text: "Current text",
    channels: "Channels",
    locale: "Language",
    compare: "Compare two versions",
    from: "From",
    to: "To",
    show_changes: "Show changes",
    changes: "Changes",
    change: "Change",
    line_text: "Line",
    added: "added",
    removed: "removed",
    unchanged: "unchanged",
    title_and_text: "title and text",
    text_column: "Text",
    text_kept: "kept",
    text_not_kept: "not kept",
    no_text: "was recorded before Kept kept notice texts: only its hash is known, so its text cannot be shown or compared.",
    only_one_version: "Only one version of this notice has been recorded: there is nothing to compare yet.",
    not_a_version: "is not a version of this notice recorded in the database: give a version number or a content hash from the table.",
    unknown_notice: "The manifest declares no such notice, and none was recorded.",
    back: "Back to the data map",
};

static DE: DataMapTexts = DataMapTexts {
    findings: "Lint-Befunde",
    no_findings: "Keine Befunde: kept lint findet im Manifest dieses Servers nichts zu beheben.",
    lint_unavailable: "Dieser Server wurde ohne die Datei des Manifests gestartet und kann es hier nicht prüfen; führen Sie kept lint aus.",
    severity: "Schwere",
    error: "Fehler",
    warning: "Warnung",
    code: "Code",
    message: "Meldung",
    element: "Element",
    line: "Zeile",
    retention_days: "Aufbewahrung (Tage)",
    notice_title: "Hinweis",
    versions: "Erfasste Versionen",
    version: "Version",
    hash: "Inhalts-Hash",
    first_recorded: "Zuerst erfasst",
    state: "Stand",
    current: "die Version, die das Manifest angibt",
    earlier: "frühere Version",
    later: "neuer als die Version des Manifests",
    changed_without_bump: "der Text im Manifest weicht von dieser erfassten Version ab, ohne neue Versionsnummer",
    none_recorded: "Von diesem Hinweis wurde noch keine Version in der Datenbank erfasst.",
    current_text: "Aktueller Text",
    channels: "Kanäle",
    locale: "Sprache",
    compare: "Zwei Versionen vergleichen",
    from: "Von",
    to: "Bis",
    show_changes: "Änderungen zeigen",
    changes: "Änderungen",
    change: "Änderung",
    line_text: "Zeile",
    added: "hinzugefügt",
    removed: "entfernt",
    unchanged: "unverändert",
    title_and_text: "Titel und Text",
    text_column: "Text",
    text_kept: "gespeichert",
    text_not_kept: "nicht gespeichert",
    no_text: "wurde erfasst, bevor Kept die Texte von Hinweisen speicherte: nur ihr Hash ist bekannt, ihr Text lässt sich daher weder anzeigen noch vergleichen.",
    only_one_version: "Von diesem Hinweis wurde erst eine Version erfasst: noch gibt es nichts zu vergleichen.",
    not_a_version: "ist keine in der Datenbank erfasste Version dieses Hinweises: geben Sie eine Versionsnummer oder einen Inhalts-Hash aus der Tabelle an.",
    unknown_notice: "Das Manifest enthält keinen solchen Hinweis, und keiner wurde erfasst.",
    back: "Zurück zur Datenlandkarte",
};

static FR: DataMapTexts = DataMapTexts {
    findings: "Constats du linter",
    no_findings: "Aucun constat : kept lint ne trouve rien à corriger dans le manifeste de ce serveur.",
    lint_unavailable: "Ce serveur a été démarré sans le fichier du manifeste et ne peut pas le vérifier ici ; lancez kept lint.",
    severity: "Gravité",
    error: "erreur",
    warning: "avertissement",
    code: "Code",
    message: "Message",
    element: "Élément",
    line: "ligne",
    retention_days: "Conservation (jours)",
    notice_title: "Notice",
    versions: "Versions enregistrées",
    version: "Version",
    hash: "Empreinte du contenu",
    first_recorded: "Première fois enregistrée",
    state: "État",
    current: "la version que déclare le manifeste",
    earlier: "version antérieure",
    later: "plus récente que la version du manifeste",
    changed_without_bump: "le texte du manifeste diffère de cette version enregistrée sans nouveau numéro de version",
    none_recorded: "Aucune version de cette notice n'a encore été enregistrée dans la base.",
    current_text: "Texte actuel",
    channels: "Canaux",
    locale: "Langue",
    compare: "Comparer deux versions",
    from: "De",
    to: "À",
    show_changes: "Afficher les modifications",
    changes: "Modifications",
    change: "Modification",
    line_text: "Ligne",
    added: "ajoutée",
    removed: "supprimée",
    unchanged: "inchangée",
    title_and_text: "titre et texte",
    text_column: "Texte",
    text_kept: "conservé",
    text_not_kept: "non conservé",
    no_text: "a été enregistrée avant que Kept ne conserve le texte des notices : seule son empreinte est connue, son texte ne peut donc être ni affiché ni comparé.",
    only_one_version: "Une seule version de cette notice a été enregistrée : il n'y a encore rien à comparer.",
    not_a_version: "n'est pas une version de cette notice enregistrée dans la base : indiquez un numéro de version ou une empreinte du tableau.",
    unknown_notice: "Le manifeste ne déclare aucune notice de ce nom, et aucune n'a été enregistrée.",
    back: "Retour à la cartographie des données",
};

static ES: DataMapTexts = DataMapTexts {
    findings: "Hallazgos del linter",
    no_findings: "Sin hallazgos: kept lint no encuentra nada que corregir en el manifiesto de este servidor.",
    lint_unavailable: "Este servidor se inició sin el archivo del manifiesto y no puede revisarlo aquí; ejecute kept lint.",
    severity: "Gravedad",
    error: "error",
    warning: "aviso",
    code: "Código",
    message: "Mensaje",
    element: "Elemento",
    line: "línea",
    retention_days: "Conservación (días)",
    notice_title: "Aviso",
    versions: "Versiones registradas",
    version: "Versión",
    hash: "Hash del contenido",
    first_recorded: "Registrada por primera vez",
    state: "Estado",
    current: "la versión que declara el manifiesto",
    earlier: "versión anterior",
    later: "posterior a la versión del manifiesto",
    changed_without_bump: "el texto del manifiesto difiere de esta versión registrada sin un nuevo número de versión",
    none_recorded: "Aún no se ha registrado ninguna versión de este aviso en la base de datos.",
    current_text: "Texto actual",
    channels: "Canales",
    locale: "Idioma",
    compare: "Comparar dos versiones",
    from: "Desde",
    to: "Hasta",
    show_changes: "Mostrar cambios",
    changes: "Cambios",
    change: "Cambio",
    line_text: "Línea",
    added: "añadida",
    removed: "eliminada",
    unchanged: "sin cambios",
    title_and_text: "título y texto",
    text_column: "Texto",
    text_kept: "guardado",
    text_not_kept: "no guardado",
    no_text: "se registró antes de que Kept guardara los textos de los avisos: solo se conoce su hash, así que su texto no se puede mostrar ni comparar.",
    only_one_version: "Solo se ha registrado una versión de este aviso: todavía no hay nada que comparar.",
    not_a_version: "no es una versión de este aviso registrada en la base de datos: indique un número de versión o un hash de contenido de la tabla.",
    unknown_notice: "El manifiesto no declara ese aviso y no se ha registrado ninguno.",
    back: "Volver al mapa de datos",
};

/// The data map pages' words in the language `code` names (English otherwise).
pub fn texts(code: &str) -> &'static DataMapTexts {
    match code {
        "de" => &DE,
        "fr" => &FR,
        "es" => &ES,
        _ => &EN,
    }
}

/// The `id` of an element's row on the data map page: `purpose-<key>`, `notice-<key>`,
/// `point-<key>`, `system-<key>`. Manifest keys are lowercase letters, digits, `_`, `-` and
/// `.` (the loader refuses others), so the id is a valid HTML id and its `#` link needs no
/// escaping.
pub fn element_id(kind: &str, key: &str) -> String {
    format!("{kind}-{key}")
}

/// One `kept lint` finding as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingRow {
    pub error: bool,
    pub code: &'static str,
    pub message: String,
    /// The key path the finding is about (`systems.sms_blaster.uses[0]`).
    pub path: String,
    pub line: Option<u32>,
    /// The row of the data map the finding is about, when the page has one.
    pub anchor: Option<String>,
}

/// The manifest's `kept lint` findings, with the notice hashes the store recorded (as
/// `kept lint --database-url` compares them), each with the data map row it is about. The
/// lint runs off the async workers: it compiles the manifest's promises, which may take
/// milliseconds.
pub async fn findings(
    store: &dyn Store,
    loaded: Arc<Loaded>,
) -> Result<Vec<FindingRow>, StoreError> {
    let recorded: Vec<RecordedNotice> = store
        .notice_hashes()
        .await?
        .into_iter()
        .map(|h| RecordedNotice {
            notice_id: h.notice_id,
            version: h.version,
            hash: h.hash,
        })
        .collect();
    let (loaded, found) = tokio::task::spawn_blocking(move || {
        let found = lint::lint(&loaded, &recorded);
        (loaded, found)
    })
    .await
    .map_err(|e| StoreError::Database(format!("the lint task stopped: {e}")))?;
    Ok(found
        .into_iter()
        .map(|f| FindingRow {
            error: f.severity == lint::Severity::Error,
            code: f.code,
            anchor: anchor(&loaded.manifest, &f.path),
            message: f.message,
            path: f.path,
            line: f.line,
        })
        .collect())
}

/// The row id a finding's key path points at: its section and first key
/// (`purposes."marketing.communications".owner` → `purpose-marketing.communications`), when
/// the page has a row for that section and the manifest declares that key.
fn anchor(manifest: &Manifest, path: &str) -> Option<String> {
    let (section, rest) = path.split_once('.')?;
    let key = match rest.strip_prefix('"') {
        // Keys never hold `"` or `\` (the loader refuses them), so the closing quote ends it.
        Some(quoted) => quoted.split_once('"')?.0,
        None => rest.split(['.', '[']).next()?,
    };
    let (kind, known) = match section {
        "purposes" => ("purpose", manifest.purposes.contains_key(key)),
        "notices" => ("notice", manifest.notices.contains_key(key)),
        "collection_points" => ("point", manifest.collection_points.contains_key(key)),
        "systems" => ("system", manifest.systems.contains_key(key)),
        _ => return None,
    };
    known.then(|| element_id(kind, key))
}

/// Where a recorded version stands against the manifest's notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    /// The version and content the manifest declares.
    Current,
    /// The manifest's version number, but other content: changed without a version bump.
    ChangedWithoutBump,
    Earlier,
    /// Later than the manifest's (or the manifest no longer declares the notice).
    Later,
}

/// One recorded version of a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeVersion {
    pub version: u32,
    pub hash: String,
    pub first_recorded: kept_core::UnixMillis,
    pub state: VersionState,
    /// What the version said: recorded with its hash, or the manifest's notice when the hash is
    /// the manifest's. `None` for a version recorded before Kept kept notice texts.
    pub content: Option<Notice>,
}

/// What Kept knows of a notice: the manifest's current version (its texts and promises) and
/// every version the store recorded (hash, first sighting, content where kept), oldest first.
/// A version number recorded under several hashes (a text changed without a new number) is
/// one entry per hash.
#[derive(Debug, Clone)]
pub struct NoticeHistory {
    pub key: String,
    pub current: Option<Notice>,
    pub versions: Vec<NoticeVersion>,
}

/// The manifest's notices as the server records them at start: each one's hash and content, in
/// one transaction (a hash already recorded for an id and version stays, a content is added
/// once per id, version and hash).
pub async fn record_notices(
    store: &dyn Store,
    manifest: &Manifest,
    now: kept_core::UnixMillis,
) -> Result<(), StoreError> {
    let notices: Vec<NoticeContent> = manifest
        .notices
        .iter()
        .map(|(id, n)| NoticeContent {
            notice_id: id.clone(),
            version: n.version,
            hash: n.hash.clone(),
            content: n.content_json(),
            recorded_at: now,
        })
        .collect();
    store.record_notices(&notices).await
}

/// The notice `key`'s history, or `None` when neither the manifest nor the store knows it.
pub async fn notice_history(
    store: &dyn Store,
    manifest: &Manifest,
    key: &str,
) -> Result<Option<NoticeHistory>, StoreError> {
    let current = manifest.notices.get(key).cloned();
    // (version, hash) → first recorded, content.
    let mut seen: BTreeMap<(u32, String), (kept_core::UnixMillis, Option<Notice>)> =
        BTreeMap::new();
    for h in store.notice_hashes().await? {
        if h.notice_id == key {
            seen.insert((h.version, h.hash), (h.recorded_at, None));
        }
    }
    for c in store.notice_contents(key).await? {
        let content = Notice::from_content_json(c.version, &c.hash, &c.content);
        let entry = seen
            .entry((c.version, c.hash))
            .or_insert((c.recorded_at, None));
        entry.0 = entry.0.min(c.recorded_at);
        entry.1 = content;
    }
    if current.is_none() && seen.is_empty() {
        return Ok(None);
    }
    let mut versions: Vec<NoticeVersion> = seen
        .into_iter()
        .map(|((version, hash), (first_recorded, content))| {
            let state = match &current {
                Some(n) if version == n.version && hash == n.hash => VersionState::Current,
                Some(n) if version == n.version => VersionState::ChangedWithoutBump,
                Some(n) if version < n.version => VersionState::Earlier,
                _ => VersionState::Later,
            };
            // The hash covers the whole content, so the manifest's notice is what a version
            // with its hash said, even one recorded before texts were kept.
            let content = content.or_else(|| {
                current
                    .as_ref()
                    .filter(|n| n.version == version && n.hash == hash)
                    .cloned()
            });
            NoticeVersion {
                version,
                hash,
                first_recorded,
                state,
                content,
            }
        })
        .collect();
    versions.sort_by_key(|v| (v.version, v.first_recorded));
    Ok(Some(NoticeHistory {
        key: key.to_owned(),
        current,
        versions,
    }))
}

/// Which of a notice's recorded versions a `from` or `to` names: its content hash, or its
/// version number (the latest recorded under that number when several hashes share it).
/// `None` for anything else.
pub fn find_version(versions: &[NoticeVersion], wanted: &str) -> Option<usize> {
    let wanted = wanted.trim();
    versions
        .iter()
        .rposition(|v| v.hash == wanted || v.version.to_string() == wanted)
}

/// The versions compared when the page names none: the manifest's (else the latest recorded)
/// and the one recorded before it. `None` with fewer than two versions.
pub fn default_pair(versions: &[NoticeVersion]) -> Option<(usize, usize)> {
    let to = versions
        .iter()
        .position(|v| v.state == VersionState::Current)
        .unwrap_or(versions.len().checked_sub(1)?);
    match to.checked_sub(1) {
        Some(from) => Some((from, to)),
        None if versions.len() > 1 => Some((0, 1)),
        None => None,
    }
}

/// How a line fares from one version to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineChange {
    Added,
    Removed,
    Unchanged,
}

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    pub change: LineChange,
    pub text: String,
}

/// What a part of a notice is: a language's title and text, or one of its lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffPart {
    /// The language's code; its first line is the title.
    Locale(String),
    Purposes,
    Categories,
    Channels,
}

/// The changes of one part of a notice from one version to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartDiff {
    pub part: DiffPart,
    pub lines: Vec<DiffLine>,
}

impl PartDiff {
    pub fn changed(&self) -> bool {
        self.lines.iter().any(|l| l.change != LineChange::Unchanged)
    }
}

/// The line diff of `old` to `new`.
pub fn diff_lines(old: &[&str], new: &[&str]) -> Vec<DiffLine> {
    similar::TextDiff::from_slices(old, new)
        .iter_all_changes()
        .map(|c| DiffLine {
            change: match c.tag() {
                similar::ChangeTag::Insert => LineChange::Added,
                similar::ChangeTag::Delete => LineChange::Removed,
                similar::ChangeTag::Equal => LineChange::Unchanged,
            },
            text: c.value().to_owned(),
        })
        .collect()
}

/// How `new` differs from `old`, part by part: each language's title and text (a language
/// only one of them has is all added or all removed), then the purposes, categories and
/// channels, compared as sorted sets as the hash compares them.
pub fn notice_diff(old: &Notice, new: &Notice) -> Vec<PartDiff> {
    let locales: BTreeSet<&String> = old.locales.keys().chain(new.locales.keys()).collect();
    let text_lines = |n: &Notice, locale: &str| -> Vec<String> {
        n.locales.get(locale).map_or_else(Vec::new, |t| {
            std::iter::once(t.title.clone())
                .chain(t.text.lines().map(str::to_owned))
                .collect()
        })
    };
    let mut parts: Vec<PartDiff> = locales
        .into_iter()
        .map(|locale| {
            let (a, b) = (text_lines(old, locale), text_lines(new, locale));
            PartDiff {
                part: DiffPart::Locale(locale.clone()),
                lines: diff_lines(&as_strs(&a), &as_strs(&b)),
            }
        })
        .collect();
    let set = |list: &[String]| -> Vec<String> {
        let set: BTreeSet<&String> = list.iter().collect();
        set.into_iter().cloned().collect()
    };
    for (part, a, b) in [
        (DiffPart::Purposes, &old.purposes, &new.purposes),
        (DiffPart::Categories, &old.categories, &new.categories),
        (DiffPart::Channels, &old.channels, &new.channels),
    ] {
        let (a, b) = (set(a), set(b));
        parts.push(PartDiff {
            part,
            lines: diff_lines(&as_strs(&a), &as_strs(&b)),
        });
    }
    parts
}

fn as_strs(lines: &[String]) -> Vec<&str> {
    lines.iter().map(String::as_str).collect()
}

/// One purpose's row of the record of processing activities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RopaRow {
    pub purpose: String,
    pub name: String,
    pub description: String,
    /// The owning team's name, and the people who answer for it.
    pub owner: String,
    pub owner_contacts: Vec<String>,
    /// The data categories collected under a notice for the purpose, or used for it by a
    /// system.
    pub categories: Vec<String>,
    /// `(regime, basis)`, `default` first.
    pub legal_basis: Vec<(String, &'static str)>,
    pub retention_days: u32,
    /// The systems (by name) the data goes to for the purpose.
    pub recipients: Vec<String>,
}

/// The record of processing activities: one row per purpose, in the manifest's order.
pub fn record_of_processing(manifest: &Manifest) -> Vec<RopaRow> {
    manifest
        .purposes
        .iter()
        .map(|(key, purpose)| {
            let mut categories: BTreeSet<&str> = manifest
                .notices
                .values()
                .filter(|n| n.purposes.iter().any(|p| p == key))
                .flat_map(|n| n.categories.iter().map(String::as_str))
                .collect();
            let mut recipients = Vec::new();
            for system in manifest.systems.values() {
                let uses: Vec<_> = system.uses.iter().filter(|u| &u.purpose == key).collect();
                if uses.is_empty() {
                    continue;
                }
                categories.extend(
                    uses.iter()
                        .flat_map(|u| u.categories.iter().map(String::as_str)),
                );
                recipients.push(system.name.clone());
            }
            let mut legal_basis: Vec<(String, &'static str)> = purpose
                .legal_basis
                .iter()
                .map(|(regime, basis)| {
                    let regime = match regime {
                        RegimeKey::Default => "default".to_owned(),
                        RegimeKey::Regime(r) => r.as_str().to_owned(),
                    };
                    (regime, basis.as_str())
                })
                .collect();
            legal_basis.sort_by_key(|(r, _)| (r != "default", r.clone()));
            let team = manifest.teams.get(&purpose.owner);
            RopaRow {
                purpose: key.clone(),
                name: purpose.name.clone(),
                description: purpose.description.clone(),
                owner: team.map_or_else(|| purpose.owner.clone(), |t| t.name.clone()),
                owner_contacts: team.map(|t| t.owners.clone()).unwrap_or_default(),
                categories: categories.into_iter().map(str::to_owned).collect(),
                legal_basis,
                retention_days: purpose.retention_days,
                recipients,
            }
        })
        .collect()
}

/// The record as CSV (a header, then one line per purpose; lists joined with `; `), every cell
/// through the one CSV cell writer.
pub fn record_csv(rows: &[RopaRow]) -> String {
    let mut out = String::from(
        "purpose,name,description,owner,owner_contacts,categories,legal_basis,retention_days,recipients\r\n",
    );
    for r in rows {
        let basis = r
            .legal_basis
            .iter()
            .map(|(regime, basis)| format!("{regime}: {basis}"))
            .collect::<Vec<_>>()
            .join("; ");
        let cells = [
            r.purpose.clone(),
            r.name.clone(),
            r.description.clone(),
            r.owner.clone(),
            r.owner_contacts.join("; "),
            r.categories.join("; "),
            basis,
            r.retention_days.to_string(),
            r.recipients.join("; "),
        ];
        let line: Vec<String> = cells
            .iter()
            .map(|c| kept_core::csv::field(c).into_owned())
            .collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// Text for SVG: `&`, `<`, `>` and quotes escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A box of the graph.
struct Node {
    id: String,
    label: String,
    owner: Option<String>,
}

const COLUMN_WIDTH: usize = 250;
const BOX_WIDTH: usize = 200;
const ROW_HEIGHT: usize = 56;
const BOX_HEIGHT: usize = 42;

/// The data map as an SVG graph in four columns (collection points, notices, purposes,
/// systems), with an edge for each link the manifest declares: a collection point's notice, a
/// notice's purposes, a system's uses. `titles` names the columns. The page shows the same in
/// tables beside it.
pub fn graph_svg(manifest: &Manifest, titles: [&str; 4]) -> String {
    let team = |key: &str| {
        manifest
            .teams
            .get(key)
            .map_or_else(|| key.to_owned(), |t| t.name.clone())
    };
    let columns: [Vec<Node>; 4] = [
        manifest
            .collection_points
            .iter()
            .map(|(k, c)| Node {
                id: format!("cp:{k}"),
                label: c.name.clone(),
                owner: None,
            })
            .collect(),
        manifest
            .notices
            .iter()
            .map(|(k, n)| Node {
                id: format!("notice:{k}"),
                label: format!("{k} v{}", n.version),
                owner: None,
            })
            .collect(),
        manifest
            .purposes
            .iter()
            .map(|(k, p)| Node {
                id: format!("purpose:{k}"),
                label: p.name.clone(),
                owner: Some(team(&p.owner)),
            })
            .collect(),
        manifest
            .systems
            .iter()
            .map(|(k, s)| Node {
                id: format!("system:{k}"),
                label: s.name.clone(),
                owner: Some(team(&s.owner)),
            })
            .collect(),
    ];
    let mut edges: Vec<(String, String)> = Vec::new();
    for (k, c) in &manifest.collection_points {
        edges.push((format!("cp:{k}"), format!("notice:{}", c.notice)));
    }
    for (k, n) in &manifest.notices {
        for p in &n.purposes {
            edges.push((format!("notice:{k}"), format!("purpose:{p}")));
        }
    }
    for (k, s) in &manifest.systems {
        let purposes: BTreeSet<&str> = s.uses.iter().map(|u| u.purpose.as_str()).collect();
        for p in purposes {
            edges.push((format!("purpose:{p}"), format!("system:{k}")));
        }
    }
    let position = |id: &str| {
        columns.iter().enumerate().find_map(|(c, nodes)| {
            nodes
                .iter()
                .position(|n| n.id == id)
                .map(|r| (c * COLUMN_WIDTH + 10, 40 + r * ROW_HEIGHT))
        })
    };
    let rows = columns.iter().map(Vec::len).max().unwrap_or(0);
    let width = 4 * COLUMN_WIDTH;
    let height = 50 + rows * ROW_HEIGHT;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"100%\" role=\"img\" aria-labelledby=\"map-title\"><title id=\"map-title\">{}</title>",
        escape(&titles.join(" → "))
    );
    for (c, title) in titles.iter().enumerate() {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"22\" font-weight=\"700\" font-size=\"14\" fill=\"#1f2328\">{}</text>",
            c * COLUMN_WIDTH + 10,
            escape(title)
        );
    }
    for (from, to) in &edges {
        if let (Some((x1, y1)), Some((x2, y2))) = (position(from), position(to)) {
            let _ = write!(
                svg,
                "<path d=\"M{} {} C{} {} {} {} {} {}\" fill=\"none\" stroke=\"#8c959f\" stroke-width=\"1.2\"/>",
                x1 + BOX_WIDTH,
                y1 + BOX_HEIGHT / 2,
                x1 + BOX_WIDTH + 25,
                y1 + BOX_HEIGHT / 2,
                x2 - 25,
                y2 + BOX_HEIGHT / 2,
                x2,
                y2 + BOX_HEIGHT / 2
            );
        }
    }
    for nodes in &columns {
        for node in nodes {
            let Some((x, y)) = position(&node.id) else {
                continue;
            };
            let _ = write!(
                svg,
                "<g><rect x=\"{x}\" y=\"{y}\" width=\"{BOX_WIDTH}\" height=\"{BOX_HEIGHT}\" rx=\"6\" fill=\"#ffffff\" stroke=\"#57606a\"/><text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#1f2328\">{}</text>",
                x + 8,
                y + 17,
                escape(&shorten(&node.label, 30))
            );
            if let Some(owner) = &node.owner {
                let _ = write!(
                    svg,
                    "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#57606a\">{}</text>",
                    x + 8,
                    y + 33,
                    escape(&shorten(owner, 32))
                );
            }
            svg.push_str("</g>");
        }
    }
    svg.push_str("</svg>");
    svg
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Manifest {
        kept_core::manifest::load(&kept_core::manifest::demo_toml(), "kept.toml")
            .unwrap()
            .manifest
    }

    #[test]
    fn the_record_names_each_purposes_data_basis_retention_and_recipients() {
        let manifest = demo();
        let rows = record_of_processing(&manifest);
        assert_eq!(rows.len(), manifest.purposes.len());
        let marketing = rows
            .iter()
            .find(|r| r.purpose == "marketing.communications")
            .unwrap();
        assert!(
            marketing
                .categories
                .iter()
                .any(|c| c == "user.contact.email")
        );
        assert!(marketing.recipients.iter().any(|s| s == "Email platform"));
        assert_eq!(marketing.legal_basis[0].0, "default");
        let csv = record_csv(&rows);
        assert_eq!(csv.lines().count(), rows.len() + 1);
        assert!(csv.starts_with("purpose,name,"));
    }

    #[test]
    fn a_finding_points_at_the_row_of_its_section_and_key() {
        let manifest = demo();
        for (path, want) in [
            (
                "purposes.\"marketing.communications\".owner",
                Some("purpose-marketing.communications"),
            ),
            ("systems.sms_blaster.uses[0]", Some("system-sms_blaster")),
            ("notices.rewards", Some("notice-rewards")),
            (
                "collection_points.checkout.fields.email",
                Some("point-checkout"),
            ),
            ("purposes.\"not.declared\"", None),
            ("channels.fax", None),
            ("organisation", None),
        ] {
            assert_eq!(anchor(&manifest, path).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn the_graph_escapes_what_the_manifest_says() {
        let mut manifest = demo();
        if let Some(p) = manifest.purposes.values_mut().next() {
            p.name = "<script>alert(1)</script>".to_owned();
        }
        let svg = graph_svg(&manifest, ["a", "b", "c", "d"]);
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.matches("<path").count() >= manifest.collection_points.len());
    }
}
