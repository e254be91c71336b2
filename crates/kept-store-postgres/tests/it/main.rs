//! The conformance suite on PostgreSQL. Runs when `KEPT_TEST_DATABASE_URL` names a database;
//! each case gets a schema of its own (so cases run in parallel) that is dropped afterwards.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation is a failed test"
)]

use async_trait::async_trait;
use kept_store::Store;
use kept_store::conformance::Harness;
use kept_store_postgres::PostgresStore;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Once};

/// The database URL, or `None` after saying (once, past the test harness's capture) that the
/// PostgreSQL cases are skipped.
fn database_url() -> Option<String> {
    static SAID: Once = Once::new();
    match std::env::var("KEPT_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            SAID.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: PostgreSQL conformance (set KEPT_TEST_DATABASE_URL=postgres://…)"
                );
            });
            None
        }
    }
}

/// `url` with its `search_path` set to `schema`.
fn with_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options[search_path]={schema}")
}

fn fresh_schema_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "kept_conformance_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

struct Postgres {
    store: Arc<PostgresStore>,
    admin: sqlx::PgPool,
    schema: String,
}

#[async_trait]
impl Harness for Postgres {
    async fn start() -> Option<Self> {
        let url = database_url()?;
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("KEPT_TEST_DATABASE_URL is set but unreachable: {e}"));
        let schema = fresh_schema_name();
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        let store = PostgresStore::connect(&with_schema(&url, &schema))
            .await
            .unwrap();
        Some(Postgres {
            store: Arc::new(store),
            admin,
            schema,
        })
    }

    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn finish(self) {
        let _ = self.store.close().await;
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&self.admin)
            .await
            .unwrap();
        self.admin.close().await;
    }
}

kept_store::conformance_tests!(Postgres);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_extend_one_chain() {
    let Some(harness) = Postgres::start().await else {
        return;
    };
    let url = with_schema(&database_url().unwrap(), &harness.schema);
    let other = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let stores: [Arc<dyn Store>; 2] = [harness.store(), other.clone()];
    // Each server signs its batches with its own key; their checkpoints form one chain too.
    let signers = [
        kept_store::conformance::TestSigner::new(1),
        kept_store::conformance::TestSigner::new(2),
    ];
    for (store, signer) in stores.iter().zip(&signers) {
        store.set_checkpoint_signer(Some(signer.clone()));
    }
    let tasks: Vec<_> = (0..32u32)
        .map(|i| {
            let store = stores[(i % 2) as usize].clone();
            tokio::spawn(async move {
                for j in 0..20 {
                    store
                        .append_consent(kept_store::conformance::record(i, i * 20 + j))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        kept_store::conformance::verify_stored_chain(other.as_ref()).await,
        640
    );
    let keys: Vec<_> = signers.iter().map(|s| s.key.verifying_key()).collect();
    let checkpoints =
        kept_store::conformance::verify_stored_checkpoints(other.as_ref(), &keys).await;
    assert_eq!(checkpoints.last().map(|c| c.seq), Some(640));
    let heard = signers
        .iter()
        .map(|s| s.committed.lock().unwrap().len())
        .sum::<usize>();
    assert_eq!(heard, checkpoints.len());
    other.close().await.unwrap();
    harness.finish().await;
}

#[test]
fn debug_never_shows_the_password() {
    let redacted = kept_store_postgres::redact_url("postgres://kept:hunter2@db:5432/kept");
    assert!(!redacted.contains("hunter2"));
}
