//! One connection to one of the company's databases, PostgreSQL or MySQL/MariaDB, behind the
//! three things the walk asks of it: read rows as text, run a statement, and begin, commit or
//! roll back a transaction. The URL comes from the environment variable the dataset names.

use crate::ConnectError;
use crate::sql::{Param, Statement};
use kept_core::manifest::dataset::{DatabaseKind, Dataset};
use kept_core::redact::{redact_url, scrub};
use sqlx::{Connection, Row};
use std::future::Future;
use std::pin::Pin;

/// A boxed, `Send` future. The driver calls are boxed so that the walk's futures are `Send`
/// (a server spawns them): without it the compiler cannot prove `Executor` for every lifetime
/// of the borrowed connection (rust-lang/rust#102211).
type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'a>>;

/// An open connection of the dataset's kind.
#[derive(Debug)]
pub enum Db {
    Postgres(sqlx::PgConnection),
    Mysql(sqlx::MySqlConnection),
}

/// Reads the dataset's URL from `lookup` (the process environment, or a test's map).
pub fn url_of(
    dataset: &Dataset,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConnectError> {
    let url = lookup(&dataset.url_env)
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| ConnectError::MissingUrl {
            dataset: dataset.id.clone(),
            env: dataset.url_env.clone(),
        })?;
    let scheme_ok = match dataset.kind {
        DatabaseKind::Postgres => {
            url.starts_with("postgres://") || url.starts_with("postgresql://")
        }
        DatabaseKind::Mysql => url.starts_with("mysql://") || url.starts_with("mariadb://"),
    };
    if !scheme_ok {
        // Only the scheme is shown: the value may be anything, a password pasted by mistake too.
        let found = match url.find("://").and_then(|i| url.get(..i + 3)) {
            Some(scheme) => format!("a `{scheme}` URL"),
            None => "a value that is not a URL".to_owned(),
        };
        return Err(ConnectError::BadUrl {
            dataset: dataset.id.clone(),
            env: dataset.url_env.clone(),
            message: format!(
                "expected a `{}` URL, found {found}",
                match dataset.kind {
                    DatabaseKind::Postgres => "postgres://",
                    DatabaseKind::Mysql => "mysql://",
                }
            ),
        });
    }
    Ok(url)
}

impl Db {
    /// Connects to `url` as the dataset's kind says.
    pub async fn connect(dataset: &Dataset, url: &str) -> Result<Db, ConnectError> {
        let failed = |e: sqlx::Error| ConnectError::Connect {
            dataset: dataset.id.clone(),
            url: redact_url(url),
            message: scrub(&e.to_string(), url),
        };
        match dataset.kind {
            DatabaseKind::Postgres => {
                let options: sqlx::postgres::PgConnectOptions = url.parse().map_err(failed)?;
                Ok(Db::Postgres(
                    sqlx::PgConnection::connect_with(&options)
                        .await
                        .map_err(failed)?,
                ))
            }
            DatabaseKind::Mysql => {
                let url = url.replacen("mariadb://", "mysql://", 1);
                let options: sqlx::mysql::MySqlConnectOptions = url.parse().map_err(failed)?;
                let connection = sqlx::MySqlConnection::connect_with(&options)
                    .await
                    .map_err(failed)?;
                // Strict mode, whatever the server's default: without it an erasure would
                // store '' where NULL breaks NOT NULL, or a hash cut short to fit a column,
                // with a warning instead of an error that rolls back. Through `simple`, whose
                // boxed future keeps `connect`'s `Send`.
                let mut db = Db::Mysql(connection);
                db.simple(
                    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES')",
                )
                .await
                .map_err(failed)?;
                Ok(db)
            }
        }
    }

    pub fn kind(&self) -> DatabaseKind {
        match self {
            Db::Postgres(_) => DatabaseKind::Postgres,
            Db::Mysql(_) => DatabaseKind::Mysql,
        }
    }

    /// Runs a statement that takes no parameters (transaction control).
    pub fn simple<'a>(&'a mut self, sql: &'static str) -> Boxed<'a, ()> {
        Box::pin(async move {
            match self {
                // A query without arguments goes as text (simple protocol), unprepared.
                Db::Postgres(c) => sqlx::Executor::execute(c, sql).await.map(|_| ()),
                Db::Mysql(c) => sqlx::Executor::execute(c, sql).await.map(|_| ()),
            }
        })
    }

    /// The rows a query returns, every column read as optional text.
    pub fn rows<'a>(&'a mut self, statement: &'a Statement) -> Boxed<'a, Vec<Vec<Option<String>>>> {
        Box::pin(async move {
            match self {
                Db::Postgres(c) => {
                    let rows = postgres_query(statement).fetch_all(c).await?;
                    rows.iter().map(texts).collect()
                }
                Db::Mysql(c) => {
                    let rows = mysql_query(statement)?.fetch_all(c).await?;
                    rows.iter().map(texts).collect()
                }
            }
        })
    }

    /// Runs a statement; the number of rows it changed.
    pub fn execute<'a>(&'a mut self, statement: &'a Statement) -> Boxed<'a, u64> {
        Box::pin(async move {
            match self {
                Db::Postgres(c) => Ok(postgres_query(statement).execute(c).await?.rows_affected()),
                Db::Mysql(c) => Ok(mysql_query(statement)?.execute(c).await?.rows_affected()),
            }
        })
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;
type MySqlQuery<'q> = sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>;

/// The statement with its parameters bound, for PostgreSQL.
fn postgres_query(statement: &Statement) -> PgQuery<'_> {
    let mut query = sqlx::query(&statement.text);
    for param in &statement.params {
        query = match param {
            Param::Text(v) => query.bind(v.as_str()),
            Param::TextArray(v) => query.bind(v.as_slice()),
        };
    }
    query
}

/// The statement with its parameters bound, for MySQL, which has no array parameters.
fn mysql_query(statement: &Statement) -> Result<MySqlQuery<'_>, sqlx::Error> {
    let mut query = sqlx::query(&statement.text);
    for param in &statement.params {
        query = match param {
            Param::Text(v) => query.bind(v.as_str()),
            Param::TextArray(_) => return Err(array_on_mysql()),
        };
    }
    Ok(query)
}

/// Every column of a row, read as optional text (the walk casts each to text).
fn texts<R: Row>(row: &R) -> Result<Vec<Option<String>>, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    (0..row.len())
        .map(|i| row.try_get::<Option<String>, _>(i))
        .collect()
}

fn array_on_mysql() -> sqlx::Error {
    sqlx::Error::Protocol("an array parameter was built for MySQL, which has none".to_owned())
}
