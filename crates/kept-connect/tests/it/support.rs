//! A fixture shop database of a test's own, on the server the environment names, and plain
//! SQL to check what the connectors did.

use kept_core::manifest::dataset::{DatabaseKind, Dataset};
use kept_core::manifest::{demo_toml, load};
use sqlx::Connection;

pub const SHOP_TOML: &str = include_str!("../../../../tests/fixtures/shop/kept.toml");
const POSTGRES_SQL: &str = include_str!("../../../../tests/fixtures/shop/postgres.sql");
const MYSQL_SQL: &str = include_str!("../../../../tests/fixtures/shop/mysql.sql");

/// The variable that names the server of `kind`.
pub fn env_of(kind: DatabaseKind) -> &'static str {
    match kind {
        DatabaseKind::Postgres => "SHOP_POSTGRES_URL",
        DatabaseKind::Mysql => "SHOP_MYSQL_URL",
    }
}

/// The shop dataset of `kind`, as the fixture manifest declares it.
pub fn dataset(kind: DatabaseKind) -> Dataset {
    let source = format!("{}\n{SHOP_TOML}", demo_toml());
    let loaded = load(&source, "kept.toml").unwrap();
    loaded
        .manifest
        .datasets
        .into_iter()
        .find(|d| d.kind == kind)
        .unwrap()
}

/// A fresh fixture database of its own for the test `name`, dropped when this is.
pub struct Shop {
    pub kind: DatabaseKind,
    /// The URL of the test's own database.
    pub url: String,
    server_url: String,
    name: String,
}

impl Shop {
    /// `None` (having said why) when the environment names no server of this kind.
    pub async fn new(kind: DatabaseKind, test: &str) -> Option<Shop> {
        let Some(server_url) = std::env::var(env_of(kind)).ok().filter(|u| !u.is_empty()) else {
            eprintln!(
                "skipped: {} is not set, so there is no {kind} server to test against (.ci/run sets it)",
                env_of(kind)
            );
            return None;
        };
        let name = format!("kept_shop_{test}_{}", std::process::id());
        let url = with_database(&server_url, &name);
        match kind {
            DatabaseKind::Postgres => {
                let mut admin = sqlx::PgConnection::connect(&server_url).await.unwrap();
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(&format!(
                    "SET client_min_messages = warning; {POSTGRES_SQL}"
                ))
                .execute(&mut db)
                .await
                .unwrap();
            }
            DatabaseKind::Mysql => {
                let mut admin = sqlx::MySqlConnection::connect(&server_url).await.unwrap();
                sqlx::raw_sql(&format!(
                    "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"
                ))
                .execute(&mut admin)
                .await
                .unwrap();
                let mut db = sqlx::MySqlConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(MYSQL_SQL).execute(&mut db).await.unwrap();
            }
        }
        Some(Shop {
            kind,
            url,
            server_url,
            name,
        })
    }

    /// The lookup a connector reads its URL through: this database under the dataset's
    /// variable.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + use<> {
        let env = env_of(self.kind);
        let url = self.url.clone();
        move |name: &str| (name == env).then(|| url.clone())
    }

    /// One column of a query's rows, as text.
    pub async fn strings(&self, sql: &str) -> Vec<Option<String>> {
        match self.kind {
            DatabaseKind::Postgres => {
                let mut db = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut db).await.unwrap()
            }
            DatabaseKind::Mysql => {
                let mut db = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut db).await.unwrap()
            }
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        match self.kind {
            DatabaseKind::Postgres => {
                let mut db = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut db).await.unwrap()
            }
            DatabaseKind::Mysql => {
                let mut db = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut db).await.unwrap()
            }
        }
    }

    pub async fn run(&self, sql: &str) {
        match self.kind {
            DatabaseKind::Postgres => {
                let mut db = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut db).await.unwrap();
            }
            DatabaseKind::Mysql => {
                let mut db = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut db).await.unwrap();
            }
        }
    }

    /// Every row of every table, as text, to tell whether anything changed.
    pub async fn dump(&self) -> Vec<Option<String>> {
        let cast = match self.kind {
            DatabaseKind::Postgres => "text",
            DatabaseKind::Mysql => "char",
        };
        let mut all = Vec::new();
        for (table, columns) in [
            ("customers", "id, email, phone, full_name"),
            ("addresses", "id, customer_id, street, city"),
            ("orders", "id, customer_id, email, total_cents"),
            ("order_lines", "id, order_id, sku, price_cents"),
            ("support_tickets", "id, customer_id, email, subject, body"),
        ] {
            let concat = columns
                .split(", ")
                .map(|c| format!("COALESCE(CAST({c} AS {cast}), '~')"))
                .collect::<Vec<_>>()
                .join(", '|', ");
            all.extend(
                self.strings(&format!(
                    "SELECT CONCAT('{table}|', {concat}) FROM {table} ORDER BY id"
                ))
                .await,
            );
        }
        all
    }

    pub async fn drop_database(self) {
        match self.kind {
            DatabaseKind::Postgres => {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&self.server_url).await {
                    let _ = sqlx::raw_sql(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        self.name
                    ))
                    .execute(&mut admin)
                    .await;
                }
            }
            DatabaseKind::Mysql => {
                if let Ok(mut admin) = sqlx::MySqlConnection::connect(&self.server_url).await {
                    let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {}", self.name))
                        .execute(&mut admin)
                        .await;
                }
            }
        }
    }
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}
