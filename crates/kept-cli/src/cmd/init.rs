//! `kept init`: writes the commented example manifest, so a team starts from a working data map
//! rather than a blank file.

use anyhow::Context;
use kept_core::manifest::EXAMPLE_TOML;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  kept init                 write ./kept.toml
  kept init privacy         write privacy/kept.toml (the directory is created if needed)
  kept init --force         replace an existing kept.toml

The example is a retail company, Larkspur Goods. `kept lint` reports one problem in it on
purpose: its SMS marketing tool uses phone numbers that no notice promised for marketing.")]
pub struct Args {
    /// Directory to write `kept.toml` into
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Replace an existing `kept.toml`
    #[arg(long)]
    pub force: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create `{}`", args.dir.display()))?;
    let path = args.dir.join("kept.toml");
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        // Checked and created in one step, so a file appearing meanwhile is never overwritten.
        options.create_new(true);
    }
    let mut file = match options.open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            anyhow::bail!(
                "`{}` already exists; use `--force` to replace it",
                path.display()
            )
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot write `{}`", path.display()));
        }
    };
    file.write_all(EXAMPLE_TOML.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    println!("wrote {}", path.display());
    println!(
        "next: `kept lint {}` (it reports the SMS marketing tool on purpose)",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
