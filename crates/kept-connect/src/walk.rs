//! The walk over one dataset: check the database has what the manifest declares, read the
//! subject's rows table by table (parents first, one query each), and for an erasure change
//! them table by table (children first, one statement each), all in one transaction.

use crate::db::{Db, url_of};
use crate::sql::{Param, Statement, Subjects, as_text, parents_first, predicate};
use crate::{ConnectError, HashKey, Subject, hash_value, is_hashed};
use kept_core::manifest::dataset::{DatabaseKind, Dataset, Erasure, Table};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A row: declared column → its value as text.
pub type Values = BTreeMap<String, Option<String>>;

/// `(table, column)` → the column's type as the database's catalog names it.
type ColumnTypes = BTreeMap<(String, String), String>;

/// Everything found of a subject in one dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    pub dataset: String,
    pub kind: DatabaseKind,
    /// Every declared table, parents first, with the rows found (maybe none).
    pub tables: Vec<FoundTable>,
}

impl Found {
    pub fn rows(&self) -> usize {
        self.tables.iter().map(|t| t.rows.len()).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundTable {
    pub table: String,
    pub columns: Vec<FoundColumn>,
    pub rows: Vec<Values>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundColumn {
    pub name: String,
    pub category: String,
}

/// What erasing a subject does to one dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub dataset: String,
    pub kind: DatabaseKind,
    /// Children first: the order the statements run in.
    pub tables: Vec<TablePlan>,
}

impl Plan {
    /// Rows deleted and rows updated.
    pub fn counts(&self) -> (u64, u64) {
        self.tables.iter().fold((0, 0), |(d, u), t| {
            let (td, tu) = t.counts();
            (d + td, u + tu)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TablePlan {
    pub table: String,
    pub rows: Vec<RowPlan>,
}

impl TablePlan {
    /// Rows deleted and rows updated.
    pub fn counts(&self) -> (u64, u64) {
        let count = |action: RowAction| {
            u64::try_from(self.rows.iter().filter(|r| r.action == action).count())
                .unwrap_or(u64::MAX)
        };
        (count(RowAction::Delete), count(RowAction::Update))
    }
}

/// One row found, and what erasure does to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowPlan {
    pub action: RowAction,
    /// The row as it is now.
    pub values: Values,
    /// Per column: what changes (`null`, `hash`) and what is kept with its reason (`keep`).
    /// Empty for a deleted row.
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowAction {
    /// The row is deleted.
    Delete,
    /// Some columns are nulled or hashed.
    Update,
    /// Nothing changes: what it holds is kept, or was erased before.
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub column: String,
    /// `null`, `hash` or `keep`.
    pub strategy: &'static str,
    /// The new value (`null`: none; `hash`: the keyed hash).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// For `keep`: the purpose that requires it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

/// What an erasure did to one dataset: its plan, carried out and committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Erased {
    pub plan: Plan,
    pub rows_deleted: u64,
    pub rows_updated: u64,
}

/// Most distinct values one `hash` statement maps, within every dialect's parameter limit.
const MAX_HASHED_VALUES: usize = 16_000;

/// A dataset and an open connection to its database.
#[derive(Debug)]
pub struct Connector {
    dataset: Dataset,
    db: Db,
}

/// How a transaction is opened and what the reads take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A consistent snapshot, read only.
    Read,
    /// Rows locked as they are read, so the statements change exactly those.
    Write,
}

impl Connector {
    /// Connects to the dataset's database, its URL read from the variable it names through
    /// `lookup` (`|name| std::env::var(name).ok()` in the product).
    pub async fn open(
        dataset: &Dataset,
        lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Connector, ConnectError> {
        let url = url_of(dataset, lookup)?;
        Connector::connect(dataset, &url).await
    }

    /// Connects to the dataset's database at `url`, read before with [`url_of`].
    pub async fn connect(dataset: &Dataset, url: &str) -> Result<Connector, ConnectError> {
        let db = Db::connect(dataset, url).await?;
        Ok(Connector {
            dataset: dataset.clone(),
            db,
        })
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// Every row and declared column of the subject, in one read-only transaction.
    pub async fn find(&mut self, subject: &Subject) -> Result<Found, ConnectError> {
        self.begin(Mode::Read).await?;
        let result = self.read(subject, Mode::Read).await;
        // The read's own error, if any, is the one to report.
        let ended = self.end(false).await;
        let (_, found) = result?;
        ended?;
        Ok(found)
    }

    /// What [`Connector::erase`] would do, changing nothing.
    pub async fn plan_erase(
        &mut self,
        subject: &Subject,
        key: &HashKey,
    ) -> Result<Plan, ConnectError> {
        let found = self.find(subject).await?;
        Ok(self.plan(&found, key))
    }

    /// Erases the subject from this database in one transaction: the plan's statements,
    /// children first; any failure rolls everything back and is returned.
    pub async fn erase(
        &mut self,
        subject: &Subject,
        key: &HashKey,
    ) -> Result<Erased, ConnectError> {
        self.begin(Mode::Write).await?;
        let result = self.erase_in_transaction(subject, key).await;
        match result {
            Ok(erased) => {
                self.end(true).await?;
                Ok(erased)
            }
            Err(e) => {
                // The error is what the caller needs; a failed rollback also ends the
                // transaction, since the connection is dropped with the connector.
                let _ = self.end(false).await;
                Err(e)
            }
        }
    }

    async fn erase_in_transaction(
        &mut self,
        subject: &Subject,
        key: &HashKey,
    ) -> Result<Erased, ConnectError> {
        let (types, found) = self.read(subject, Mode::Write).await?;
        let plan = self.plan(&found, key);
        let subjects = Subjects {
            identifiers: subject.identifiers(),
            column_types: &types,
        };
        for table_plan in &plan.tables {
            let Some(index) = self
                .dataset
                .tables
                .iter()
                .position(|t| t.name == table_plan.table)
            else {
                continue;
            };
            let (deleted, updated) = table_plan.counts();
            let Some(statement) = self.change_statement(index, table_plan, &subjects)? else {
                continue;
            };
            let expected = deleted + updated;
            let actual = self
                .db
                .execute(&statement)
                .await
                .map_err(|e| self.query_error(&table_plan.table, &e))?;
            if actual != expected {
                return Err(ConnectError::Changed {
                    dataset: self.dataset.id.clone(),
                    table: table_plan.table.clone(),
                    expected,
                    actual,
                });
            }
        }
        // Every statement changed exactly its table's planned rows (checked above),
        // so the plan's counts are what was done.
        let (rows_deleted, rows_updated) = plan.counts();
        Ok(Erased {
            plan,
            rows_deleted,
            rows_updated,
        })
    }

    async fn begin(&mut self, mode: Mode) -> Result<(), ConnectError> {
        let sql = match (self.db.kind(), mode) {
            (DatabaseKind::Postgres, Mode::Read) => {
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
            }
            (DatabaseKind::Postgres, Mode::Write) => "BEGIN ISOLATION LEVEL READ COMMITTED",
            (DatabaseKind::Mysql, Mode::Read) => {
                "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"
            }
            (DatabaseKind::Mysql, Mode::Write) => "START TRANSACTION READ WRITE",
        };
        self.db
            .simple(sql)
            .await
            .map_err(|e| self.query_error("(transaction)", &e))
    }

    async fn end(&mut self, commit: bool) -> Result<(), ConnectError> {
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        self.db
            .simple(sql)
            .await
            .map_err(|e| self.query_error("(transaction)", &e))
    }

    fn query_error(&self, table: &str, e: &sqlx::Error) -> ConnectError {
        let message = match e {
            sqlx::Error::Database(db) => db.message().to_owned(),
            other => other.to_string(),
        };
        ConnectError::Query {
            dataset: self.dataset.id.clone(),
            table: table.to_owned(),
            message,
        }
    }

    /// The declared tables and columns, checked against the database's catalog; the type of
    /// every declared column, by `(table, column)`.
    async fn column_types(&mut self) -> Result<ColumnTypes, ConnectError> {
        let kind = self.db.kind();
        let names: Vec<String> = self.dataset.tables.iter().map(|t| t.name.clone()).collect();
        let mut statement = Statement::new(kind);
        match kind {
            DatabaseKind::Postgres => {
                statement.push(
                    "SELECT CAST(c.relname AS text), CAST(a.attname AS text), format_type(a.atttypid, NULL) \
                     FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                     WHERE a.attnum > 0 AND NOT a.attisdropped AND c.oid IN \
                     (SELECT CAST(to_regclass(quote_ident(n)) AS oid) FROM unnest(CAST(",
                );
                statement.bind(Param::TextArray(names));
                statement.push(" AS text[])) AS n)");
            }
            DatabaseKind::Mysql => {
                statement.push(
                    "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR), CAST(data_type AS CHAR) \
                     FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name IN ",
                );
                statement.bind_list(&names);
            }
        }
        let rows = self
            .db
            .rows(&statement)
            .await
            .map_err(|e| self.query_error("(catalog)", &e))?;
        let mut types = BTreeMap::new();
        for row in rows {
            if let [Some(table), Some(column), Some(ty)] = row.as_slice() {
                types.insert((table.clone(), column.clone()), ty.clone());
            }
        }
        let known_tables: BTreeSet<&str> = types.keys().map(|(t, _)| t.as_str()).collect();
        for table in &self.dataset.tables {
            if !known_tables.contains(table.name.as_str()) {
                return Err(ConnectError::Schema(format!(
                    "dataset `{}`: the database has no table `{}`",
                    self.dataset.id, table.name
                )));
            }
            for (column, declared) in &table.columns {
                let key = (table.name.clone(), column.clone());
                let Some(ty) = types.get(&key) else {
                    return Err(ConnectError::Schema(format!(
                        "dataset `{}`: table `{}` has no column `{column}`",
                        self.dataset.id, table.name
                    )));
                };
                if declared.erase == Erasure::Hash && !is_text_type(ty) {
                    return Err(ConnectError::Schema(format!(
                        "dataset `{}`: column `{}.{column}` is of type `{ty}`, and `hash` replaces a value with text; hash a text column, or choose `null` or `delete`",
                        self.dataset.id, table.name
                    )));
                }
            }
        }
        Ok(types)
    }

    /// Checks the catalog, then reads every table parents first, one query each.
    async fn read(
        &mut self,
        subject: &Subject,
        mode: Mode,
    ) -> Result<(ColumnTypes, Found), ConnectError> {
        if subject.is_empty() {
            return Err(ConnectError::Identity(
                "no identifier to find the subject by".to_owned(),
            ));
        }
        let types = self.column_types().await?;
        let subjects = Subjects {
            identifiers: subject.identifiers(),
            column_types: &types,
        };
        let kind = self.db.kind();
        let mut tables = Vec::with_capacity(self.dataset.tables.len());
        for index in parents_first(&self.dataset.tables) {
            let Some(table) = self.dataset.tables.get(index) else {
                continue;
            };
            let columns: Vec<FoundColumn> = table
                .columns
                .iter()
                .map(|(name, c)| FoundColumn {
                    name: name.clone(),
                    category: c.category.clone(),
                })
                .collect();
            let mut statement = Statement::new(kind);
            statement.push("SELECT ");
            for (i, column) in columns.iter().enumerate() {
                if i > 0 {
                    statement.push(", ");
                }
                statement.push(&as_text(kind, &column.name)?);
            }
            statement.push(" FROM ");
            statement.ident(&table.name)?;
            statement.push(" WHERE ");
            let rows = if predicate(&mut statement, &self.dataset.tables, index, &subjects)? {
                if mode == Mode::Write {
                    statement.push(" FOR UPDATE");
                }
                self.db
                    .rows(&statement)
                    .await
                    .map_err(|e| self.query_error(&table.name, &e))?
            } else {
                Vec::new()
            };
            let rows = rows
                .into_iter()
                .map(|values| {
                    columns
                        .iter()
                        .map(|c| c.name.clone())
                        .zip(values)
                        .collect::<Values>()
                })
                .collect();
            tables.push(FoundTable {
                table: table.name.clone(),
                columns,
                rows,
            });
        }
        let found = Found {
            dataset: self.dataset.id.clone(),
            kind,
            tables,
        };
        Ok((types, found))
    }

    /// What each row found becomes, children first.
    fn plan(&self, found: &Found, key: &HashKey) -> Plan {
        let mut tables: Vec<TablePlan> = found
            .tables
            .iter()
            .filter_map(|ft| {
                let table = self.dataset.tables.iter().find(|t| t.name == ft.table)?;
                Some(TablePlan {
                    table: ft.table.clone(),
                    rows: ft
                        .rows
                        .iter()
                        .map(|row| plan_row(table, row, key))
                        .collect(),
                })
            })
            .collect();
        tables.reverse();
        Plan {
            dataset: found.dataset.clone(),
            kind: found.kind,
            tables,
        }
    }

    /// The one statement that erases a table's planned rows: a `DELETE`, or an `UPDATE` of
    /// every nulled and hashed column at once (so no column changed first hides a row from the
    /// next statement); `None` when no row changes.
    fn change_statement(
        &self,
        index: usize,
        plan: &TablePlan,
        subjects: &Subjects<'_>,
    ) -> Result<Option<Statement>, ConnectError> {
        let Some(table) = self.dataset.tables.get(index) else {
            return Ok(None);
        };
        let (deleted, updated) = plan.counts();
        if deleted + updated == 0 {
            return Ok(None);
        }
        let kind = self.db.kind();
        let mut statement = Statement::new(kind);
        if table.deletes_rows() {
            statement.push("DELETE FROM ");
            statement.ident(&table.name)?;
            statement.push(" WHERE ");
            predicate(&mut statement, &self.dataset.tables, index, subjects)?;
            return Ok(Some(statement));
        }
        // Old value → keyed hash, per hashed column, from the rows that change.
        let mut hashed: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
        let mut nulled: BTreeSet<&str> = BTreeSet::new();
        for row in &plan.rows {
            for change in &row.changes {
                match change.strategy {
                    "null" => {
                        nulled.insert(change.column.as_str());
                    }
                    "hash" => {
                        if let (Some(Some(old)), Some(new)) =
                            (row.values.get(&change.column), change.to.as_deref())
                        {
                            hashed
                                .entry(change.column.as_str())
                                .or_default()
                                .insert(old.as_str(), new);
                        }
                    }
                    _ => {}
                }
            }
        }
        for (column, mapping) in &hashed {
            if mapping.len() > MAX_HASHED_VALUES {
                return Err(ConnectError::Query {
                    dataset: self.dataset.id.clone(),
                    table: table.name.clone(),
                    message: format!(
                        "column `{column}` has {} distinct values to hash for this subject, more than the {MAX_HASHED_VALUES} one statement takes",
                        mapping.len()
                    ),
                });
            }
        }
        statement.push("UPDATE ");
        statement.ident(&table.name)?;
        statement.push(" SET ");
        let mut first = true;
        for column in &nulled {
            if !first {
                statement.push(", ");
            }
            first = false;
            statement.ident(column)?;
            statement.push(" = NULL");
        }
        for (column, mapping) in &hashed {
            if !first {
                statement.push(", ");
            }
            first = false;
            statement.ident(column)?;
            statement.push(" = CASE ");
            statement.ident(column)?;
            for (old, new) in mapping {
                statement.push(" WHEN ");
                statement.bind(Param::Text((*old).to_owned()));
                statement.push(" THEN ");
                statement.bind(Param::Text((*new).to_owned()));
            }
            statement.push(" ELSE ");
            statement.ident(column)?;
            statement.push(" END");
        }
        statement.push(" WHERE ");
        predicate(&mut statement, &self.dataset.tables, index, subjects)?;
        // Only the rows the plan changes, so the count can be checked against it.
        statement.push(" AND (");
        let mut first = true;
        for column in &nulled {
            if !first {
                statement.push(" OR ");
            }
            first = false;
            statement.ident(column)?;
            statement.push(" IS NOT NULL");
        }
        for (column, mapping) in &hashed {
            if !first {
                statement.push(" OR ");
            }
            first = false;
            statement.ident(column)?;
            statement.push(" IN ");
            let olds: Vec<String> = mapping.keys().map(|o| (*o).to_owned()).collect();
            statement.bind_list(&olds);
        }
        statement.push(")");
        Ok(Some(statement))
    }
}

/// What erasure does to one row of `table`.
fn plan_row(table: &Table, row: &Values, key: &HashKey) -> RowPlan {
    if table.deletes_rows() {
        return RowPlan {
            action: RowAction::Delete,
            values: row.clone(),
            changes: Vec::new(),
        };
    }
    let mut changes = Vec::new();
    let mut changed = false;
    for (name, column) in &table.columns {
        let value = row.get(name).cloned().flatten();
        match (&column.erase, value) {
            (Erasure::Null, Some(_)) => {
                changed = true;
                changes.push(Change {
                    column: name.clone(),
                    strategy: "null",
                    to: None,
                    purpose: None,
                });
            }
            (Erasure::Hash, Some(v)) if !is_hashed(&v) => {
                changed = true;
                changes.push(Change {
                    column: name.clone(),
                    strategy: "hash",
                    to: Some(hash_value(key, &v)),
                    purpose: None,
                });
            }
            (Erasure::Keep { purpose }, Some(_)) => changes.push(Change {
                column: name.clone(),
                strategy: "keep",
                to: None,
                purpose: Some(purpose.clone()),
            }),
            // Null already, or hashed by an earlier erasure: nothing to do.
            _ => {}
        }
    }
    RowPlan {
        action: if changed {
            RowAction::Update
        } else {
            RowAction::Unchanged
        },
        values: row.clone(),
        changes,
    }
}

/// Whether a column of this type holds text (as the catalogs name types).
fn is_text_type(ty: &str) -> bool {
    let ty = ty.to_ascii_lowercase();
    matches!(
        ty.as_str(),
        "text"
            | "character varying"
            | "character"
            | "bpchar"
            | "citext"
            | "varchar"
            | "char"
            | "tinytext"
            | "mediumtext"
            | "longtext"
    )
}
