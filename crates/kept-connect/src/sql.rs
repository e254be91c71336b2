//! The SQL the connectors send, built without I/O: identifiers quoted per dialect (and refused
//! unless they are plain identifiers, whatever built the dataset), every value a parameter, and
//! the predicate that says which rows of a table belong to the subject.
//!
//! A table's rows are the subject's when one of its identity columns holds one of the subject's
//! identifiers, or when one of its references points at a row of the parent that is the
//! subject's: `"customer_id" IN (SELECT "id" FROM "customers" WHERE …)`. The predicate is one
//! expression, so each table is read, updated or deleted by one statement whatever the number
//! of rows.

use crate::ConnectError;
use kept_core::identity::IdentifierKind;
use kept_core::manifest::dataset::{DatabaseKind, Table, is_plain_identifier};
use std::collections::BTreeMap;
use std::fmt::Write;

/// A value bound to a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Text(String),
    /// PostgreSQL only: one `text[]` parameter.
    TextArray(Vec<String>),
}

/// A statement and its parameters, in the order of their placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub kind: DatabaseKind,
    pub text: String,
    pub params: Vec<Param>,
}

impl Statement {
    pub fn new(kind: DatabaseKind) -> Statement {
        Statement {
            kind,
            text: String::new(),
            params: Vec::new(),
        }
    }

    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.text.push_str(sql);
        self
    }

    /// Appends a placeholder for `param`.
    pub fn bind(&mut self, param: Param) -> &mut Self {
        self.params.push(param);
        match self.kind {
            DatabaseKind::Postgres => {
                let _ = write!(self.text, "${}", self.params.len());
            }
            DatabaseKind::Mysql => self.text.push('?'),
        }
        self
    }

    /// `(?, ?, ?)` with one text parameter each.
    pub fn bind_list(&mut self, values: &[String]) -> &mut Self {
        self.text.push('(');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(Param::Text(value.clone()));
        }
        self.text.push(')');
        self
    }

    /// Appends a quoted table or column name.
    pub fn ident(&mut self, name: &str) -> Result<&mut Self, ConnectError> {
        let quoted = quote(self.kind, name)?;
        self.text.push_str(&quoted);
        Ok(self)
    }
}

/// A plain identifier quoted for `kind`; anything else is refused, never escaped, so that a
/// name reaches SQL only as the manifest's loader accepted it.
pub fn quote(kind: DatabaseKind, name: &str) -> Result<String, ConnectError> {
    if !is_plain_identifier(name) {
        return Err(ConnectError::Identifier(name.to_owned()));
    }
    Ok(match kind {
        DatabaseKind::Postgres => format!("\"{name}\""),
        DatabaseKind::Mysql => format!("`{name}`"),
    })
}

/// A column's value as text, so that every type reads back the same way.
pub fn as_text(kind: DatabaseKind, column: &str) -> Result<String, ConnectError> {
    let quoted = quote(kind, column)?;
    Ok(match kind {
        DatabaseKind::Postgres => format!("CAST({quoted} AS text)"),
        DatabaseKind::Mysql => format!("CAST({quoted} AS CHAR)"),
    })
}

/// What a predicate needs beside the dataset: the subject's identifiers and, for PostgreSQL,
/// the type of each identity column (so the identifiers compare in the column's own type and
/// its index is used).
#[derive(Debug)]
pub struct Subjects<'a> {
    pub identifiers: &'a BTreeMap<IdentifierKind, Vec<String>>,
    /// `(table, column)` → the type as PostgreSQL names it (`bigint`, `character varying`).
    pub column_types: &'a BTreeMap<(String, String), String>,
}

/// Appends the predicate of `table` (by index in `tables`) to `statement`; false when no row
/// can match (no identifier of a kind the table knows, and no parent with rows to match), in
/// which case nothing was appended.
pub fn predicate(
    statement: &mut Statement,
    tables: &[Table],
    table: usize,
    subjects: &Subjects<'_>,
) -> Result<bool, ConnectError> {
    let Some(t) = tables.get(table) else {
        return Ok(false);
    };
    if !can_match(tables, table, subjects) {
        return Ok(false);
    }
    let mut first = true;
    statement.push("(");
    for (kind, column) in &t.identity {
        let Some(values) = subjects.identifiers.get(kind).filter(|v| !v.is_empty()) else {
            continue;
        };
        // A value the column's type cannot hold names no row there (a user id `u42` in an
        // integer column): it is left out rather than failing the cast.
        let values: Vec<String> = match statement.kind {
            DatabaseKind::Postgres => {
                let ty = subjects
                    .column_types
                    .get(&(t.name.clone(), column.clone()))
                    .map_or("", String::as_str);
                values
                    .iter()
                    .filter(|v| !is_integer_type(ty) || is_integer(v))
                    .cloned()
                    .collect()
            }
            DatabaseKind::Mysql => values.clone(),
        };
        if values.is_empty() {
            continue;
        }
        let values = &values;
        if !first {
            statement.push(" OR ");
        }
        first = false;
        statement.ident(column)?;
        match statement.kind {
            DatabaseKind::Postgres => {
                let key = (t.name.clone(), column.clone());
                let ty = subjects.column_types.get(&key).ok_or_else(|| {
                    ConnectError::Schema(format!("no type known for `{}.{column}`", t.name))
                })?;
                if !is_type_name(ty) {
                    return Err(ConnectError::Schema(format!(
                        "identity column `{}.{column}` has type `{ty}`, which the connector cannot compare identifiers with",
                        t.name
                    )));
                }
                statement.push(" = ANY(CAST(");
                statement.bind(Param::TextArray(values.clone()));
                statement.push(&format!(" AS {ty}[]))"));
            }
            DatabaseKind::Mysql => {
                statement.push(" IN ");
                statement.bind_list(values);
            }
        }
    }
    for reference in &t.references {
        let Some(parent) = tables.iter().position(|p| p.name == reference.parent_table) else {
            continue;
        };
        if !can_match(tables, parent, subjects) {
            continue;
        }
        if !first {
            statement.push(" OR ");
        }
        first = false;
        statement.ident(&reference.column)?;
        statement.push(" IN (SELECT ");
        statement.ident(&reference.parent_column)?;
        statement.push(" FROM ");
        statement.ident(&reference.parent_table)?;
        statement.push(" WHERE ");
        predicate(statement, tables, parent, subjects)?;
        statement.push(")");
    }
    if first {
        // Every identifier was left out: no row can be the subject's.
        statement.push("FALSE");
    }
    statement.push(")");
    Ok(true)
}

/// Whether any row of `table` can be the subject's: an identifier of a kind it has an identity
/// column for, or a parent that can.
fn can_match(tables: &[Table], table: usize, subjects: &Subjects<'_>) -> bool {
    let Some(t) = tables.get(table) else {
        return false;
    };
    let by_identity = t.identity.keys().any(|kind| {
        subjects
            .identifiers
            .get(kind)
            .is_some_and(|values| !values.is_empty())
    });
    // References have no cycle (the manifest loader refuses one), so this recursion ends.
    by_identity
        || t.references.iter().any(|r| {
            tables
                .iter()
                .position(|p| p.name == r.parent_table)
                .is_some_and(|p| can_match(tables, p, subjects))
        })
}

/// PostgreSQL's integer types, as `format_type` writes them.
fn is_integer_type(ty: &str) -> bool {
    matches!(ty, "smallint" | "integer" | "bigint")
}

/// A decimal integer, as an integer column could hold it.
fn is_integer(value: &str) -> bool {
    let digits = value.strip_prefix('-').unwrap_or(value);
    !digits.is_empty() && digits.len() <= 19 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A type name as PostgreSQL's `format_type` writes it, safe to write after `CAST(… AS`:
/// words, digits, `_`, spaces, dots and double-quoted parts only.
fn is_type_name(ty: &str) -> bool {
    !ty.is_empty()
        && ty
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ' ' | '.' | '"'))
        && ty.matches('"').count().is_multiple_of(2)
}

/// The tables in an order where every table comes after the tables it references (parents
/// first). References have no cycle, so every table is placed.
pub fn parents_first(tables: &[Table]) -> Vec<usize> {
    let mut order: Vec<usize> = Vec::with_capacity(tables.len());
    while order.len() < tables.len() {
        let before = order.len();
        for (i, table) in tables.iter().enumerate() {
            if order.contains(&i) {
                continue;
            }
            let ready = table.references.iter().all(|r| {
                match tables.iter().position(|p| p.name == r.parent_table) {
                    Some(p) => order.contains(&p),
                    None => true,
                }
            });
            if ready {
                order.push(i);
            }
        }
        if order.len() == before {
            // A cycle the loader should have refused: place the rest as declared rather
            // than loop.
            let rest: Vec<usize> = (0..tables.len()).filter(|i| !order.contains(i)).collect();
            order.extend(rest);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use kept_core::manifest::dataset::{Column, Erasure, Reference};

    fn table(
        name: &str,
        identity: &[(IdentifierKind, &str)],
        refs: &[(&str, &str, &str)],
    ) -> Table {
        let mut columns = BTreeMap::new();
        for (_, c) in identity {
            columns.insert(
                (*c).to_owned(),
                Column {
                    category: "user.contact.email".to_owned(),
                    erase: Erasure::Delete,
                },
            );
        }
        Table {
            name: name.to_owned(),
            identity: identity
                .iter()
                .map(|(k, c)| (*k, (*c).to_owned()))
                .collect(),
            references: refs
                .iter()
                .map(|(c, t, p)| Reference {
                    column: (*c).to_owned(),
                    parent_table: (*t).to_owned(),
                    parent_column: (*p).to_owned(),
                })
                .collect(),
            columns,
        }
    }

    fn shop() -> Vec<Table> {
        vec![
            table("order_lines", &[], &[("order_id", "orders", "id")]),
            table(
                "orders",
                &[(IdentifierKind::Email, "email")],
                &[("customer_id", "customers", "id")],
            ),
            table("customers", &[(IdentifierKind::Email, "email")], &[]),
        ]
    }

    #[test]
    fn predicates_nest_parents_and_bind_every_value() {
        let tables = shop();
        let identifiers =
            BTreeMap::from([(IdentifierKind::Email, vec!["ada@example.com".to_owned()])]);
        let types = BTreeMap::from([
            (("orders".to_owned(), "email".to_owned()), "text".to_owned()),
            (
                ("customers".to_owned(), "email".to_owned()),
                "character varying".to_owned(),
            ),
        ]);
        let subjects = Subjects {
            identifiers: &identifiers,
            column_types: &types,
        };
        let mut mysql = Statement::new(DatabaseKind::Mysql);
        assert!(predicate(&mut mysql, &tables, 0, &subjects).unwrap());
        assert_eq!(
            mysql.text,
            "(`order_id` IN (SELECT `id` FROM `orders` WHERE (`email` IN (?) OR `customer_id` IN (SELECT `id` FROM `customers` WHERE (`email` IN (?))))))"
        );
        assert_eq!(mysql.params.len(), 2);

        let mut pg = Statement::new(DatabaseKind::Postgres);
        assert!(predicate(&mut pg, &tables, 1, &subjects).unwrap());
        assert_eq!(
            pg.text,
            "(\"email\" = ANY(CAST($1 AS text[])) OR \"customer_id\" IN (SELECT \"id\" FROM \"customers\" WHERE (\"email\" = ANY(CAST($2 AS character varying[])))))"
        );
    }

    #[test]
    fn a_table_no_identifier_reaches_matches_nothing() {
        let tables = shop();
        let identifiers = BTreeMap::from([(IdentifierKind::Phone, vec!["+1555".to_owned()])]);
        let types = BTreeMap::new();
        let subjects = Subjects {
            identifiers: &identifiers,
            column_types: &types,
        };
        let mut s = Statement::new(DatabaseKind::Mysql);
        assert!(!predicate(&mut s, &tables, 0, &subjects).unwrap());
        assert!(s.text.is_empty());
    }

    #[test]
    fn only_plain_identifiers_are_quoted() {
        assert_eq!(
            quote(DatabaseKind::Postgres, "orders").unwrap(),
            "\"orders\""
        );
        assert_eq!(quote(DatabaseKind::Mysql, "orders").unwrap(), "`orders`");
        for bad in ["a\"b", "a`b", "x; drop table y", "", "public.orders"] {
            assert!(quote(DatabaseKind::Postgres, bad).is_err(), "{bad}");
            assert!(quote(DatabaseKind::Mysql, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parents_come_first() {
        let tables = shop();
        let order = parents_first(&tables);
        let names: Vec<&str> = order.iter().map(|&i| tables[i].name.as_str()).collect();
        assert_eq!(names, ["customers", "orders", "order_lines"]);
    }

    #[test]
    fn type_names_are_checked_before_they_reach_sql() {
        assert!(is_type_name("character varying"));
        assert!(is_type_name("public.\"Email\""));
        assert!(!is_type_name("text); drop table x; --"));
        assert!(!is_type_name("a\"b"));
    }

    #[test]
    fn a_value_an_integer_column_cannot_hold_is_left_out() {
        assert!(is_integer("42") && is_integer("-7"));
        assert!(!is_integer("u000011") && !is_integer("") && !is_integer("1e3"));
        assert!(is_integer_type("bigint") && !is_integer_type("text"));
    }
}
