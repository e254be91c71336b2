//! The conformance suite on SQLite, each case in its own temporary directory.
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
use kept_store_sqlite::SqliteStore;
use std::sync::Arc;

struct Sqlite {
    store: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl Harness for Sqlite {
    async fn start() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        // A folder that does not exist yet: open must create it.
        let store = SqliteStore::open(&dir.path().join("data").join("kept.db"))
            .await
            .unwrap();
        Some(Sqlite {
            store: Arc::new(store),
            _dir: dir,
        })
    }

    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn finish(self) {}
}

kept_store::conformance_tests!(Sqlite);

#[tokio::test]
async fn an_acknowledged_append_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kept.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let entry = store
        .append_consent(kept_store::conformance::record(3, 3))
        .await
        .unwrap();
    // Dropped without close, as a crash would leave it.
    drop(store);
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.ledger_tip().await.unwrap(), Some((1, entry.hash)));
    // Migrations ran once; a second open found them applied.
    let next = store
        .append_consent(kept_store::conformance::record(4, 4))
        .await
        .unwrap();
    assert_eq!(next.seq, 2);
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_ledger_refuses_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kept.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .append_consent(kept_store::conformance::record(1, 1))
        .await
        .unwrap();
    store.close().await.unwrap();
    let url = format!("sqlite://{}", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let update = sqlx::query("UPDATE ledger SET at = 0 WHERE seq = 1")
        .execute(&pool)
        .await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM ledger").execute(&pool).await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    pool.close().await;
}

/// The database holds sealed identifiers and, by default, the master key: a new one, with its
/// write-ahead log, is readable by its owner only.
#[cfg(unix)]
#[tokio::test]
async fn a_new_database_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kept.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.put_setting("probe", b"1").await.unwrap();
    for name in ["kept.db", "kept.db-wal"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} has mode {mode:o}");
    }
}

/// Two stores on one file, as two processes: records the other appended without signing are
/// covered by the next checkpoint round, and both chains go on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_round_covers_what_another_writer_appended() {
    use kept_store::conformance::{TestSigner, record, verify_stored_checkpoints};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kept.db");
    let signing = SqliteStore::open(&path).await.unwrap();
    let signer = TestSigner::new(9);
    signing.set_checkpoint_signer(Some(signer.clone()));
    signing
        .append_consents((0..3).map(|i| record(1, i)).collect())
        .await
        .unwrap();
    let other = SqliteStore::open(&path).await.unwrap();
    other
        .append_consents((3..5).map(|i| record(2, i)).collect())
        .await
        .unwrap();
    let cp = signing.checkpoint_tip().await.unwrap().unwrap();
    assert_eq!(cp.seq, 5);
    assert_eq!(signing.append_consent(record(1, 5)).await.unwrap().seq, 6);
    let keys = [signer.key.verifying_key()];
    let stored = verify_stored_checkpoints(&other, &keys).await;
    assert_eq!(
        stored.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![3, 5, 6]
    );
    other.close().await.unwrap();
    signing.close().await.unwrap();
}
