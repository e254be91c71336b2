//! The build script of both backends (each names this file as its `build`): lists every file of
//! the backend's `migrations/` for its `src/migrations.rs` to embed (`OUT_DIR/migrations.rs`),
//! so a new migration is picked up by adding its file, as with sqlx's `migrate!` macro, without
//! the macro's second, host-side build of sqlx and its database drivers.

use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo::rerun-if-changed=migrations");
    let dir = Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("migrations");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".sql") {
            names.push(name);
        }
    }
    names.sort();
    let mut list = String::from("&[\n");
    for name in &names {
        let path = dir.join(name);
        let path = path.to_str().ok_or("a migration's path is not UTF-8")?;
        writeln!(list, "    ({name:?}, include_str!({path:?})),")?;
    }
    list.push_str("]\n");
    std::fs::write(
        Path::new(&std::env::var("OUT_DIR")?).join("migrations.rs"),
        list,
    )?;
    Ok(())
}
