//! The schema migrations, embedded in the binary (`build.rs` lists `migrations/`), read by
//! `kept_store::migrate` as sqlx's `migrate!` macro reads them.

use sqlx::migrate::{MigrateError, Migrator};

/// Every file of `migrations/` as `(file name, SQL)`, in name order.
const FILES: kept_store::migrate::Files = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// The migrator over the embedded files.
pub async fn migrator() -> Result<Migrator, MigrateError> {
    kept_store::migrate::migrator(FILES).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::migrate::Migration;

    /// What identifies a migration to a database that already ran it.
    fn identity(m: &Migration) -> (i64, String, String, Vec<u8>, bool) {
        (
            m.version,
            m.description.to_string(),
            format!("{:?}", m.migration_type),
            m.checksum.to_vec(),
            m.no_tx,
        )
    }

    #[tokio::test]
    async fn the_embedded_migrations_are_the_folders_as_sqlx_reads_it() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let from_folder = Migrator::new(folder).await.unwrap();
        let embedded = migrator().await.unwrap();
        assert!(embedded.iter().count() > 0);
        assert_eq!(
            embedded.iter().map(identity).collect::<Vec<_>>(),
            from_folder.iter().map(identity).collect::<Vec<_>>()
        );
    }
}
