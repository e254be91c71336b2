//! Opens the store a database URL names: a `postgres://` URL or an SQLite path.

use kept_store::{Store, StoreError};
use kept_store_postgres::PostgresStore;
use kept_store_sqlite::SqliteStore;
use std::path::PathBuf;
use std::sync::Arc;

/// The default database: an SQLite file beside where Kept runs.
pub const DEFAULT_DATABASE_URL: &str = "./kept-data/kept.db";

/// Where a database URL points.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file: `sqlite://path`, `sqlite:path` or a plain path.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://` or `postgresql://`), kept whole for the driver.
    Postgres(String),
}

impl Database {
    pub fn parse(url: &str) -> Database {
        let lower = url.get(..13).unwrap_or(url).to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Database::Postgres(url.to_string());
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        // `sqlite://kept.db?mode=rwc` style options are not ours to interpret; drop them.
        let path = if url.starts_with("sqlite:") {
            path.split('?').next().unwrap_or(path)
        } else {
            path
        };
        Database::Sqlite(PathBuf::from(path))
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Database::Postgres(url) => f.debug_tuple("Postgres").field(&redact(url)).finish(),
        }
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// `url` with any password replaced by `***`, for logs and messages.
pub fn redact(url: &str) -> String {
    kept_store_postgres::redact_url(url)
}

/// Opens (creating and migrating as needed) the store `url` names.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_database(&Database::parse(url)).await
}

pub async fn open_database(location: &Database) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match location {
        Database::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        Database::Postgres(url) => Arc::new(PostgresStore::connect(url).await?),
    })
}

/// Why a command that only reads could not open its database.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "no database at `{0}`: run this where `kept serve` keeps its data, or point \
         `--database-url` (or `KEPT_DATABASE_URL`) at the database"
    )]
    Missing(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OpenError {
    pub fn code(&self) -> &'static str {
        match self {
            OpenError::Missing(_) => "store.no_database",
            OpenError::Store(e) => e.code(),
        }
    }
}

/// Opens the store `url` names only if it exists: commands that read (`kept audience`, `kept
/// keys list`, `kept ledger verify`, …) must not leave an empty database behind a mistyped
/// path, nor report on one as if it were the real one.
pub async fn open_existing(url: &str) -> Result<Arc<dyn Store>, OpenError> {
    let location = Database::parse(url);
    if let Database::Sqlite(path) = &location
        && !path.is_file()
    {
        return Err(OpenError::Missing(path.clone()));
    }
    Ok(open_database(&location).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_backend() {
        assert_eq!(
            Database::parse("postgres://u:p@db/kept"),
            Database::Postgres("postgres://u:p@db/kept".into())
        );
        assert_eq!(
            Database::parse("PostgreSQL://db/kept"),
            Database::Postgres("PostgreSQL://db/kept".into())
        );
        assert_eq!(
            Database::parse("sqlite://./data/kept.db"),
            Database::Sqlite("./data/kept.db".into())
        );
        assert_eq!(
            Database::parse("sqlite:///var/lib/kept.db?mode=rwc"),
            Database::Sqlite("/var/lib/kept.db".into())
        );
        assert_eq!(
            Database::parse(DEFAULT_DATABASE_URL),
            Database::Sqlite("./kept-data/kept.db".into())
        );
    }

    #[test]
    fn the_password_never_shows() {
        let location = Database::parse("postgres://kept:hunter2@db/kept");
        assert!(!format!("{location:?} {location}").contains("hunter2"));
    }

    #[tokio::test]
    async fn an_unreachable_database_is_named_without_its_password() {
        // Port 1 on loopback: nothing listens there, so the connection is refused at once.
        let err = open("postgres://kept:hunter2@127.0.0.1:1/kept")
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("kept:***@127.0.0.1:1"), "{message}");
        assert_eq!(err.code(), "store.unavailable");
    }
}
