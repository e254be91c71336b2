//! The schema migrations, embedded in the binary (the build script lists `migrations/`), read by
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
    #[tokio::test]
    async fn the_embedded_migrations_are_the_folders_as_sqlx_reads_it() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        kept_store::migrate::same_as_folder(super::FILES, &folder)
            .await
            .unwrap();
    }
}
