//! `kept init`: writes the commented example manifest, so a team starts from a working data map
//! rather than a blank file; with `--demo`, the demo's manifest (the example and what the demo
//! population adds), to extend and run with `kept serve --demo --manifest`.

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
  kept init --demo demo     write demo/kept.toml: the manifest `kept serve --demo` runs, to
                            extend and serve with `kept serve --demo --manifest demo/kept.toml`

The example is a retail company, Larkspur Goods. `kept lint` reports one problem in it on
purpose: its SMS marketing tool uses phone numbers that no notice promised for marketing.")]
pub struct Args {
    /// Directory to write `kept.toml` into
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Replace an existing `kept.toml`
    #[arg(long)]
    pub force: bool,
    /// Write the demo's manifest (the example with what the demo population was collected
    /// under) instead of the example
    #[arg(long)]
    pub demo: bool,
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
    let text = if args.demo {
        kept_core::manifest::demo_toml()
    } else {
        EXAMPLE_TOML.to_owned()
    };
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    println!("wrote {}", path.display());
    println!(
        "next: `kept lint {}` (it reports the SMS marketing tool on purpose)",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
