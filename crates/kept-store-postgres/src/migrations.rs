//! The schema migrations, embedded in the binary (`build.rs` lists `migrations/`) and read the
//! way sqlx's `migrate!` macro reads them: the same versions, descriptions and checksums, so a
//! database migrated by an older build is recognised as up to date.

use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

/// Every file of `migrations/` as `(file name, SQL)`, in name order.
const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// The migrator over the embedded files.
pub async fn migrator() -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded).await
}

#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async {
            let mut migrations = FILES
                .iter()
                .map(|(name, sql)| migration(name, sql))
                .collect::<Result<Vec<_>, _>>()?;
            migrations.sort_by_key(|m| m.version);
            Ok(migrations)
        })
    }
}

/// `<version>_<description>.sql`, as sqlx names a migration.
fn migration(name: &str, sql: &'static str) -> Result<Migration, BoxDynError> {
    let (version, rest) = name
        .split_once('_')
        .ok_or_else(|| format!("migration `{name}` is not named `<version>_<description>.sql`"))?;
    let version: i64 = version
        .parse()
        .map_err(|_| format!("migration `{name}` does not start with a version number"))?;
    let migration_type = MigrationType::from_filename(rest);
    let description = rest
        .trim_end_matches(migration_type.suffix())
        .replace('_', " ");
    Ok(Migration::new(
        version,
        Cow::Owned(description),
        migration_type,
        Cow::Borrowed(sql),
        sql.starts_with("-- no-transaction"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
