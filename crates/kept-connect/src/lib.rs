//! Connectors to the company's own databases, declared in the manifest as `[[dataset]]`s
//! (PostgreSQL, and MySQL or MariaDB). From a subject's identifiers (email, phone, user id,
//! given in clear) a connector walks each dataset from its identity columns along the declared
//! references, in one transaction per database, and can:
//!
//! - [`Connector::find`] every row and declared column that is the subject's (an access export);
//! - [`Connector::plan_erase`] list every row and column erasure would touch, and how (a dry
//!   run, rolled back);
//! - [`Connector::erase`] apply each column's strategy (`delete` the row, `null`, `hash` with a
//!   keyed hash, `keep` with the purpose that requires it), children before parents, all or
//!   nothing: a failure rolls the database back and returns the error. Erasing twice changes
//!   nothing the second time.
//!
//! Each table costs one query to read and one statement to change, whatever the number of
//! rows: a table's rows are chosen by one predicate that nests its parents' (see `sql`).
//! Table and column names come from the manifest, were checked there as plain identifiers, are
//! checked again here and quoted per dialect; every value is a parameter.

mod db;
pub mod sql;
mod walk;

pub use db::{Db, url_of};
pub use walk::{
    Change, Connector, Erased, Found, FoundColumn, FoundTable, Plan, RowAction, RowPlan, TablePlan,
};

use kept_core::identity::{IdentifierKind, MAX_IDENTIFIER_LEN, normalize};
use std::collections::BTreeMap;
use std::fmt;

/// Why a connector could not do what it was asked. Every failure after the transaction began
/// rolled it back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// A table or column name that is not a plain identifier (the manifest's loader refuses
    /// them; a dataset built in code could still carry one).
    #[error(
        "`{0}` is not a plain identifier (an ASCII letter or `_`, then letters, digits or `_`)"
    )]
    Identifier(String),
    /// The environment variable the dataset names is not set.
    #[error(
        "dataset `{dataset}`: the environment variable `{env}` that should hold its URL is not set"
    )]
    MissingUrl { dataset: String, env: String },
    /// The URL is not one for the dataset's kind of database.
    #[error("dataset `{dataset}`: `{env}` holds no usable URL: {message}")]
    BadUrl {
        dataset: String,
        env: String,
        message: String,
    },
    /// The database could not be reached or refused the connection.
    #[error("dataset `{dataset}`: cannot connect to `{url}`: {message}")]
    Connect {
        dataset: String,
        url: String,
        message: String,
    },
    /// The database does not have what the manifest declares.
    #[error("{0}")]
    Schema(String),
    /// An identifier of the subject that cannot be searched for.
    #[error("{0}")]
    Identity(String),
    /// A statement failed; the transaction was rolled back.
    #[error(
        "dataset `{dataset}`, table `{table}`: {message}; nothing was changed in this database"
    )]
    Query {
        dataset: String,
        table: String,
        message: String,
    },
    /// A statement changed another number of rows than were found a moment before in the same
    /// transaction (someone else wrote meanwhile); rolled back.
    #[error(
        "dataset `{dataset}`, table `{table}`: {actual} rows changed where {expected} were found; the data changed meanwhile and nothing was changed in this database, try again"
    )]
    Changed {
        dataset: String,
        table: String,
        expected: u64,
        actual: u64,
    },
}

impl ConnectError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectError::Identifier(_) => "connect.identifier",
            ConnectError::MissingUrl { .. } => "connect.missing_url",
            ConnectError::BadUrl { .. } => "connect.bad_url",
            ConnectError::Connect { .. } => "connect.unreachable",
            ConnectError::Schema(_) => "connect.schema",
            ConnectError::Identity(_) => "connect.identity",
            ConnectError::Query { .. } => "connect.query_failed",
            ConnectError::Changed { .. } => "connect.changed_meanwhile",
        }
    }
}

/// The subject to find: identifiers in clear, each searched for as given and in its
/// normalised form (a lowercase email, an E.164 phone number) when that differs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Subject {
    identifiers: BTreeMap<IdentifierKind, Vec<String>>,
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Identifiers are personal data: only their kinds and counts.
        let counts: BTreeMap<&str, usize> = self
            .identifiers
            .iter()
            .map(|(k, v)| (k.as_str(), v.len()))
            .collect();
        f.debug_struct("Subject")
            .field("identifiers", &counts)
            .finish()
    }
}

impl Subject {
    pub fn new() -> Subject {
        Subject::default()
    }

    /// Adds an identifier of `kind`.
    pub fn with(mut self, kind: IdentifierKind, value: &str) -> Result<Subject, ConnectError> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(ConnectError::Identity(format!(
                "the {} is empty",
                kind.as_str()
            )));
        }
        if trimmed.chars().count() > MAX_IDENTIFIER_LEN {
            return Err(ConnectError::Identity(format!(
                "the {} is longer than {MAX_IDENTIFIER_LEN} characters",
                kind.as_str()
            )));
        }
        let values = self.identifiers.entry(kind).or_default();
        for candidate in [
            Some(trimmed.to_owned()),
            normalize(kind, trimmed, None).ok(),
        ]
        .into_iter()
        .flatten()
        {
            if !values.contains(&candidate) {
                values.push(candidate);
            }
        }
        Ok(self)
    }

    pub fn is_empty(&self) -> bool {
        self.identifiers.is_empty()
    }

    pub(crate) fn identifiers(&self) -> &BTreeMap<IdentifierKind, Vec<String>> {
        &self.identifiers
    }
}

/// The key of the `hash` strategy. `Debug` does not show it.
#[derive(Clone)]
pub struct HashKey(pub [u8; 32]);

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(***)")
    }
}

/// What every hashed value starts with, so a second erasure knows it and leaves it.
pub const HASH_PREFIX: &str = "kept:";

/// The keyed hash that replaces a value under the `hash` strategy: `kept:` and 32 hex digits
/// (128 bits of keyed BLAKE3 of the value), 37 characters. The same value hashes the same in
/// every table, so pseudonymised rows can still be joined.
pub fn hash_value(key: &HashKey, value: &str) -> String {
    let digest = blake3::keyed_hash(&key.0, value.as_bytes());
    let hex = hex::encode(digest.as_bytes());
    format!("{HASH_PREFIX}{}", hex.get(..32).unwrap_or(&hex))
}

/// Whether `value` is already a keyed hash [`hash_value`] wrote.
pub fn is_hashed(value: &str) -> bool {
    value.strip_prefix(HASH_PREFIX).is_some_and(|rest| {
        rest.len() == 32
            && rest
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_recognised_and_stable() {
        let key = HashKey([7; 32]);
        let h = hash_value(&key, "ada@example.com");
        assert_eq!(h.len(), 37);
        assert!(is_hashed(&h));
        assert_eq!(h, hash_value(&key, "ada@example.com"));
        assert_ne!(h, hash_value(&HashKey([8; 32]), "ada@example.com"));
        assert!(!is_hashed("ada@example.com"));
        assert!(!is_hashed("kept:XYZ"));
    }

    #[test]
    fn identifiers_are_searched_as_given_and_normalised() {
        let s = Subject::new()
            .with(IdentifierKind::Email, " Ada@Example.com ")
            .unwrap();
        assert_eq!(
            s.identifiers()[&IdentifierKind::Email],
            ["Ada@Example.com", "ada@example.com"]
        );
        assert!(Subject::new().with(IdentifierKind::Email, "  ").is_err());
        assert!(!format!("{s:?}").contains("xample"), "{s:?}");
    }
}
