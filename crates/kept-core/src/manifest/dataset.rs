//! The company's own databases, declared as `[[dataset]]`s: where a subject's rows are found
//! (identity columns), which foreign keys lead from them to the rest, what category each column
//! holds and what erasure does to it. Parsed here, with every table and column name checked as a
//! plain SQL identifier, so that a connector can quote it and nothing else reaches its SQL.
//!
//! ```toml
//! [[dataset]]
//! id = "shop"
//! kind = "postgres"                 # or "mysql" (MariaDB too)
//! url_env = "SHOP_DATABASE_URL"     # the variable holding the URL, never the URL itself
//!
//! [[dataset.table]]
//! name = "customers"
//! identity = { email = "email", user_id = "id" }
//! columns.id = { category = "user.unique_id", erase = "delete" }
//! columns.email = { category = "user.contact.email", erase = "delete" }
//!
//! [[dataset.table]]
//! name = "orders"
//! references = { customer_id = "customers.id" }
//! columns.customer_id = { category = "user.unique_id", erase = "null" }
//! columns.total = { category = "user.financial", erase = "keep", keep_for = "essential.legal" }
//! ```

use super::ManifestError;
use super::keys::{child_path, item_path};
use super::load::Converter;
use super::raw::Key;
use crate::identity::IdentifierKind;
use crate::redact::redact_url;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use toml::Spanned;

/// One of the company's databases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    pub id: String,
    pub name: Option<String>,
    pub kind: DatabaseKind,
    /// The environment variable that holds the connection URL (never the URL itself).
    pub url_env: String,
    /// In the order the manifest declares them.
    pub tables: Vec<Table>,
}

/// Which SQL dialect a dataset speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseKind {
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
}

impl DatabaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseKind::Postgres => "postgres",
            DatabaseKind::Mysql => "mysql",
        }
    }
}

impl fmt::Display for DatabaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A table of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// A plain identifier (see [`is_plain_identifier`]).
    pub name: String,
    /// The columns a subject is found by, per kind of identifier.
    pub identity: BTreeMap<IdentifierKind, String>,
    /// The foreign keys to follow into this table from the tables it references.
    pub references: Vec<Reference>,
    /// Every column the connectors read, with its category and erasure.
    pub columns: BTreeMap<String, Column>,
}

impl Table {
    /// The row is deleted on erasure: some column says `delete`.
    pub fn deletes_rows(&self) -> bool {
        self.columns.values().any(|c| c.erase == Erasure::Delete)
    }
}

/// `column` of this table holds values of `parent_column` of `parent_table`: a row of this
/// table belongs to the subject when the parent row it references does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    pub column: String,
    pub parent_table: String,
    pub parent_column: String,
}

/// A declared column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Data category key.
    pub category: String,
    pub erase: Erasure,
}

/// What erasing a subject does to a column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "strategy")]
pub enum Erasure {
    /// Delete the whole row.
    Delete,
    /// Set the column to NULL.
    Null,
    /// Replace the value with a keyed hash of it.
    Hash,
    /// Keep it: `purpose` (with a legal obligation or a contract) requires it.
    Keep { purpose: String },
}

impl Erasure {
    pub fn as_str(&self) -> &'static str {
        match self {
            Erasure::Delete => "delete",
            Erasure::Null => "null",
            Erasure::Hash => "hash",
            Erasure::Keep { .. } => "keep",
        }
    }
}

/// Whether `name` can stand in SQL as a table or column name once quoted, on every dialect the
/// connectors speak: an ASCII letter or `_`, then letters, digits or `_`, at most 63 characters
/// (PostgreSQL's limit; MySQL's is 64).
pub fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && name.len() <= 63 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `name` looks like an environment variable name (`SHOP_DATABASE_URL`).
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

// --- the manifest as written --------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawDataset {
    pub id: Key,
    pub name: Option<String>,
    pub kind: Spanned<String>,
    pub url_env: Spanned<String>,
    #[serde(default)]
    pub table: Vec<RawTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawTable {
    pub name: Key,
    /// Identifier kind → column.
    #[serde(default)]
    pub identity: BTreeMap<Key, Key>,
    /// Column → `parent_table.parent_column`.
    #[serde(default)]
    pub references: BTreeMap<Key, Key>,
    #[serde(default)]
    pub columns: BTreeMap<Key, RawColumn>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawColumn {
    pub category: Key,
    pub erase: Spanned<String>,
    pub keep_for: Option<Key>,
}

// --- checking and converting ----------------------------------------------------------------

/// `dataset[i]`, the path every finding about dataset `i` starts from.
pub(crate) fn dataset_path(index: usize) -> String {
    item_path("dataset", index)
}

/// `dataset[i].table[j]`.
pub(crate) fn table_path(dataset: usize, table: usize) -> String {
    item_path(&child_path(&dataset_path(dataset), "table"), table)
}

/// `dataset[i].table[j].columns.name`.
pub(crate) fn column_path(dataset: usize, table: usize, column: &str) -> String {
    child_path(&child_path(&table_path(dataset, table), "columns"), column)
}

impl Converter<'_> {
    pub(super) fn datasets(&mut self, raw: Vec<RawDataset>) -> Result<Vec<Dataset>, ManifestError> {
        let mut seen = BTreeSet::new();
        let mut datasets = Vec::with_capacity(raw.len());
        for (i, dataset) in raw.into_iter().enumerate() {
            let id = dataset.id.get_ref().clone();
            if !seen.insert(id.clone()) {
                return Err(self.invalid(
                    dataset.id.span(),
                    format!("dataset `{id}` is declared twice"),
                ));
            }
            datasets.push(self.dataset(i, dataset)?);
        }
        Ok(datasets)
    }

    fn dataset(&mut self, i: usize, raw: RawDataset) -> Result<Dataset, ManifestError> {
        let base = dataset_path(i);
        let id = raw.id.get_ref();
        let valid_id = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !valid_id {
            return Err(self.invalid(
                raw.id.span(),
                format!(
                    "invalid dataset id `{id}`, expected lowercase letters, digits, `_` and `-`"
                ),
            ));
        }
        self.mark(base.clone(), raw.id.span());
        let kind = match raw.kind.get_ref().as_str() {
            "postgres" | "postgresql" => DatabaseKind::Postgres,
            "mysql" | "mariadb" => DatabaseKind::Mysql,
            other => {
                return Err(self.invalid(
                    raw.kind.span(),
                    format!("unknown database kind `{other}` for dataset `{id}`, expected `postgres` or `mysql`"),
                ));
            }
        };
        let url_env = raw.url_env.get_ref();
        if url_env.contains("://") || !is_env_name(url_env) {
            return Err(self.invalid(
                raw.url_env.span(),
                format!(
                    "invalid `url_env` `{}` for dataset `{id}`: name the environment variable that holds the URL (uppercase letters, digits and `_`, such as `SHOP_DATABASE_URL`), never the URL itself",
                    if url_env.contains("://") { redact_url(url_env) } else { url_env.clone() }
                ),
            ));
        }
        self.mark(child_path(&base, "url_env"), raw.url_env.span());

        let mut tables: Vec<Table> = Vec::with_capacity(raw.table.len());
        // Where each reference is, to point a cycle at one of them.
        let mut reference_spans = BTreeMap::new();
        for (t, table) in raw.table.into_iter().enumerate() {
            let name = self.identifier(&table.name, "table")?;
            if tables.iter().any(|other| other.name == name) {
                return Err(self.invalid(
                    table.name.span(),
                    format!("table `{name}` is declared twice in dataset `{id}`"),
                ));
            }
            let table_base = table_path(i, t);
            self.mark(table_base.clone(), table.name.span());
            let converted = self.table(i, t, &name, table, &mut reference_spans)?;
            tables.push(converted);
        }

        // References point at declared tables and columns, and never come back around.
        for (t, table) in tables.iter().enumerate() {
            for reference in &table.references {
                let span = reference_spans
                    .get(&(t, reference.column.clone()))
                    .cloned()
                    .unwrap_or(0..0);
                let Some(parent) = tables.iter().find(|p| p.name == reference.parent_table) else {
                    return Err(self.invalid(
                        span,
                        format!(
                            "table `{}` references `{}.{}`, but dataset `{id}` declares no table `{}`",
                            table.name,
                            reference.parent_table,
                            reference.parent_column,
                            reference.parent_table
                        ),
                    ));
                };
                if !parent.columns.contains_key(&reference.parent_column) {
                    return Err(self.invalid(
                        span,
                        format!(
                            "table `{}` references `{}.{}`, which is not declared under `columns` of `{}`",
                            table.name,
                            reference.parent_table,
                            reference.parent_column,
                            reference.parent_table
                        ),
                    ));
                }
            }
        }
        if let Some((t, column, cycle)) = find_cycle(&tables) {
            let span = reference_spans.get(&(t, column)).cloned().unwrap_or(0..0);
            return Err(self.invalid(
                span,
                format!(
                    "the references of dataset `{id}` go round in a circle ({}); a connector follows them from parent to child and would never stop",
                    cycle.join(" → ")
                ),
            ));
        }

        Ok(Dataset {
            id: id.clone(),
            name: raw.name,
            kind,
            url_env: url_env.clone(),
            tables,
        })
    }

    fn table(
        &mut self,
        d: usize,
        t: usize,
        name: &str,
        raw: RawTable,
        reference_spans: &mut BTreeMap<(usize, String), std::ops::Range<usize>>,
    ) -> Result<Table, ManifestError> {
        let base = table_path(d, t);
        let mut columns = BTreeMap::new();
        let mut delete_at = None;
        let mut keep_at = None;
        for (column_key, column) in raw.columns {
            let column_name = self.identifier(&column_key, "column")?;
            let path = column_path(d, t, &column_name);
            self.mark(path.clone(), column_key.span());
            let category = self.reference(child_path(&path, "category"), &column.category);
            let erase = match (column.erase.get_ref().as_str(), column.keep_for) {
                ("keep", Some(purpose)) => {
                    keep_at = Some(column.erase.span());
                    Erasure::Keep {
                        purpose: self.reference(child_path(&path, "keep_for"), &purpose),
                    }
                }
                ("keep", None) => {
                    return Err(self.invalid(
                        column.erase.span(),
                        format!(
                            "column `{name}.{column_name}` is kept on erasure but names no purpose; add `keep_for = \"<purpose>\"`, a purpose whose legal obligation or contract requires it"
                        ),
                    ));
                }
                (other, Some(purpose)) => {
                    return Err(self.invalid(
                        purpose.span(),
                        format!(
                            "`keep_for` goes with `erase = \"keep\"`, but column `{name}.{column_name}` says `erase = \"{other}\"`"
                        ),
                    ));
                }
                ("delete", None) => {
                    delete_at = Some(column.erase.span());
                    Erasure::Delete
                }
                ("null", None) => Erasure::Null,
                ("hash", None) => Erasure::Hash,
                (other, None) => {
                    return Err(self.invalid(
                        column.erase.span(),
                        format!(
                            "unknown erasure `{other}` for column `{name}.{column_name}`, expected `delete`, `null`, `hash` or `keep`"
                        ),
                    ));
                }
            };
            columns.insert(column_name, Column { category, erase });
        }
        if let (Some(_), Some(keep)) = (delete_at, keep_at) {
            return Err(self.invalid(
                keep,
                format!(
                    "table `{name}` keeps a column on erasure but deletes its rows (another column says `erase = \"delete\"`); a deleted row keeps nothing, so say `delete` for none of them or keep none"
                ),
            ));
        }

        let mut identity = BTreeMap::new();
        for (kind_key, column) in &raw.identity {
            let Some(kind) = IdentifierKind::parse(kind_key.get_ref()) else {
                return Err(self.invalid(
                    kind_key.span(),
                    format!(
                        "unknown identifier `{}` in `identity` of table `{name}`, expected {}",
                        kind_key.get_ref(),
                        IdentifierKind::ALL
                            .iter()
                            .map(|k| format!("`{}`", k.as_str()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            let column_name = self.identifier(column, "column")?;
            if !columns.contains_key(&column_name) {
                return Err(self.invalid(
                    column.span(),
                    format!(
                        "identity column `{name}.{column_name}` is not declared under `columns`; declare its category and erasure"
                    ),
                ));
            }
            self.mark(
                child_path(&child_path(&base, "identity"), kind.as_str()),
                kind_key.span(),
            );
            identity.insert(kind, column_name);
        }

        let mut references = Vec::new();
        for (column_key, target) in &raw.references {
            let column_name = self.identifier(column_key, "column")?;
            if !columns.contains_key(&column_name) {
                return Err(self.invalid(
                    column_key.span(),
                    format!(
                        "reference column `{name}.{column_name}` is not declared under `columns`; declare its category and erasure"
                    ),
                ));
            }
            let Some((parent_table, parent_column)) = target.get_ref().split_once('.') else {
                return Err(self.invalid(
                    target.span(),
                    format!(
                        "invalid reference `{}` for `{name}.{column_name}`, expected `table.column`",
                        target.get_ref()
                    ),
                ));
            };
            for part in [parent_table, parent_column] {
                if !is_plain_identifier(part) {
                    return Err(self.invalid(
                        target.span(),
                        format!(
                            "invalid reference `{}` for `{name}.{column_name}`: `{part}` is not a plain identifier (a letter or `_`, then letters, digits or `_`)",
                            target.get_ref()
                        ),
                    ));
                }
            }
            self.mark(
                child_path(&child_path(&base, "references"), &column_name),
                column_key.span(),
            );
            reference_spans.insert((t, column_name.clone()), column_key.span());
            references.push(Reference {
                column: column_name,
                parent_table: parent_table.to_owned(),
                parent_column: parent_column.to_owned(),
            });
        }

        Ok(Table {
            name: name.to_owned(),
            identity,
            references,
            columns,
        })
    }

    /// A table or column name, refused unless it is a plain identifier.
    fn identifier(&self, key: &Key, what: &str) -> Result<String, ManifestError> {
        let name = key.get_ref();
        if is_plain_identifier(name) {
            Ok(name.clone())
        } else {
            Err(self.invalid(
                key.span(),
                format!(
                    "invalid {what} name `{}`, expected a plain identifier: an ASCII letter or `_`, then letters, digits or `_`, at most 63 characters",
                    name.escape_debug()
                ),
            ))
        }
    }
}

/// A circle among the references (a table reaching itself from parent to child), as the table
/// index and reference column where it closes and the table names along it.
fn find_cycle(tables: &[Table]) -> Option<(usize, String, Vec<String>)> {
    // Depth-first from every table over child → parent edges; a table on the current path
    // reached again closes a circle.
    fn visit(
        tables: &[Table],
        t: usize,
        path: &mut Vec<usize>,
        done: &mut BTreeSet<usize>,
    ) -> Option<(usize, String, Vec<String>)> {
        if done.contains(&t) {
            return None;
        }
        path.push(t);
        let table = tables.get(t)?;
        for reference in &table.references {
            let Some(p) = tables.iter().position(|x| x.name == reference.parent_table) else {
                continue;
            };
            if let Some(start) = path.iter().position(|&x| x == p) {
                let mut names: Vec<String> = path
                    .iter()
                    .skip(start)
                    .filter_map(|&x| tables.get(x).map(|t| t.name.clone()))
                    .collect();
                names.push(reference.parent_table.clone());
                return Some((t, reference.column.clone(), names));
            }
            if let Some(found) = visit(tables, p, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(t);
        None
    }
    let mut done = BTreeSet::new();
    (0..tables.len()).find_map(|t| visit(tables, t, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_identifiers_only() {
        for ok in ["customers", "_x", "order_lines", "T1", &"a".repeat(63)] {
            assert!(is_plain_identifier(ok), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "order-lines",
            "a b",
            "x\"y",
            "x`y",
            "public.customers",
            "é",
            "a;drop table x",
            &"a".repeat(64),
        ] {
            assert!(!is_plain_identifier(bad), "{bad}");
        }
    }
}
