#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
use kept_store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = std::fs::remove_dir_all("/tmp/scan-bench/t");
    let store = Arc::new(kept_store_sqlite::SqliteStore::open(std::path::Path::new("/tmp/scan-bench/t/a.db")).await.unwrap());
    if std::env::var("NOIDX").is_ok() {
        let pool = sqlx::SqlitePool::connect("sqlite:///tmp/scan-bench/t/a.db").await.unwrap();
        sqlx::query("DROP INDEX ledger_subject").execute(&pool).await.unwrap();
        pool.close().await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let tasks: Vec<_> = (0..64u32).map(|w| { let (store, stop, count) = (store.clone(), stop.clone(), count.clone()); tokio::spawn(async move {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let n = w * 1000000 + i;
            let mut r = kept_store::conformance::record(n.wrapping_mul(7919) % 1_000_003, n);
            r.evidence.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0".into());
            store.append_consent(r).await.unwrap(); i += 1; count.fetch_add(1, Ordering::Relaxed);
        }
    })}).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks { t.await.unwrap(); }
    println!("64 writers: {:.0}/s", count.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64());
    store.close().await.unwrap();
}
