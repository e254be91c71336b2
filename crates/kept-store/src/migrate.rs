//! The schema migrations a backend embeds (its build script lists its `migrations/` folder), read
//! the way sqlx's `migrate!` macro reads them: the same versions, descriptions and checksums, so
//! a database migrated by an older build is recognised as up to date. Both backends read theirs
//! here; only the files differ.

use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

/// Migration files as `(file name, SQL)`, as the backends' build script lists them.
pub type Files = &'static [(&'static str, &'static str)];

/// The migrator over `files`.
pub async fn migrator(files: Files) -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded(files)).await
}

#[derive(Debug)]
struct Embedded(Files);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async move {
            let mut migrations = self
                .0
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

/// Whether `files` embed the same migrations as sqlx reads from `folder` (versions,
/// descriptions, types, checksums); the differences otherwise. Each backend's test that its
/// embedded list is its folder.
#[cfg(feature = "conformance")]
pub async fn same_as_folder(files: Files, folder: &std::path::Path) -> Result<(), String> {
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
    let from_folder = Migrator::new(folder.to_path_buf())
        .await
        .map_err(|e| format!("cannot read {}: {e}", folder.display()))?;
    let embedded = migrator(files)
        .await
        .map_err(|e| format!("cannot read the embedded migrations: {e}"))?;
    let embedded: Vec<_> = embedded.iter().map(identity).collect();
    let from_folder: Vec<_> = from_folder.iter().map(identity).collect();
    if embedded.is_empty() {
        return Err("no migration is embedded".to_owned());
    }
    if embedded != from_folder {
        return Err(format!(
            "embedded {embedded:?}\nbut the folder holds {from_folder:?}"
        ));
    }
    Ok(())
}
