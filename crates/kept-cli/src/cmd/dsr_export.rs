//! `kept dsr export`: the export that answers an access or portability request, offline
//! against the database, through the server's own hand-over (`requests::export`): JSON, a zip
//! of CSV files, or an HTML page in the person's language, each recorded in the request's log
//! with its hash; or, with `--link`, the signed download links the API would answer.

use crate::cmd::dsr::open;
use crate::cmd::source::{Source, setup};
use anyhow::Context;
use kept_server::http::error::ApiError;
use kept_server::index::IndexHandle;
use kept_server::requests::export::{HandOver, exportable, links};
use kept_server::subjects::export::{Export, Format};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Json,
    Csv,
    Html,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Json => Format::Json,
            FormatArg::Csv => Format::Csv,
            FormatArg::Html => Format::Html,
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  kept dsr export 7 --format json --out ada.json
  kept dsr export 7 --format csv --out ada.zip
  kept dsr export 7 --format html --lang de --out ada.html
  kept dsr export 7 --link

The request must be an access or portability request whose identity is verified. Each export
is recorded in the request's log with its BLAKE3 hash, so what was handed over can be proven.
`--link` needs `public_url` in [server] (KEPT_PUBLIC_URL).")]
pub struct ExportArgs {
    /// The request's id
    id: u64,
    #[arg(long, value_enum, default_value_t = FormatArg::Json)]
    format: FormatArg,
    /// Write the export to this file instead of standard output
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The HTML page's language (en, de, fr, es) [default: the organisation's first]
    #[arg(long, value_name = "CODE")]
    lang: Option<String>,
    /// Print the signed download links (one per format) instead of the export
    #[arg(long)]
    link: bool,
    /// Who hands it over, for the log
    #[arg(long, value_name = "NAME", default_value = "cli")]
    operator: String,
    #[command(flatten)]
    source: Source,
}

pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let setup = setup(&args.source).map_err(anyhow::Error::msg)?;
    let store = open(&args.source).await?;
    let refused = |e: &ApiError| {
        let body = e.body();
        eprintln!("refused ({}): {}", body.code, body.message);
        ExitCode::from(1)
    };
    let Some(request) = store.request(args.id).await? else {
        return Ok(refused(&ApiError::NotFound(format!(
            "no data subject request has id `{}`",
            args.id
        ))));
    };
    let t = match args.lang.as_deref() {
        Some(code) => kept_server::web::texts::by_code(code).with_context(|| {
            format!("`{code}` is not a language the pages speak (en, de, fr, es)")
        })?,
        None => kept_server::web::texts::choose(None, None, &setup.manifest.organisation.locales),
    };
    let now = kept_server::state::system_now();
    if args.link {
        if let Err(e) = exportable(&request) {
            return Ok(refused(&e));
        }
        let Some(base) = setup.config.public_url.clone() else {
            anyhow::bail!(
                "a link needs the server's public URL: set `public_url` in [server] or KEPT_PUBLIC_URL"
            );
        };
        let prefcenter = kept_server::prefcenter::PrefCenter::new(
            kept_server::prefcenter::PrefCenterConfig::from_config(&setup.config),
            kept_server::prefcenter::mail::Mailer::Disabled,
        );
        let keys = prefcenter.keys(store.as_ref()).await?;
        let links = links(
            keys,
            &base,
            &request,
            args.lang.is_some().then_some(t.code),
            now,
        );
        println!("{}", serde_json::to_string_pretty(&links)?);
        return Ok(ExitCode::SUCCESS);
    }
    let work = crate::cmd::dsr::work(&args.source, &store).await?;
    let identities = crate::cmd::source::identities(&setup.config).map_err(anyhow::Error::msg)?;
    let index = IndexHandle::new(&setup.manifest);
    let env = |name: &str| std::env::var(name).ok();
    let hand_over = HandOver {
        export: Export {
            store: store.as_ref(),
            identities: &identities,
            manifest: &setup.manifest,
            dataset_urls: &env,
        },
        index: &index,
        work,
    };
    let format = Format::from(args.format);
    let actor = format!("operator:{}", args.operator);
    let rendered = match hand_over
        .hand_over(&request, format, t, &actor, None, now)
        .await
    {
        Ok(r) => r,
        Err(e) => return Ok(refused(&e)),
    };
    match &args.out {
        Some(path) => std::fs::write(path, &rendered.bytes)
            .with_context(|| format!("cannot write `{}`", path.display()))?,
        None => std::io::stdout().write_all(&rendered.bytes)?,
    }
    eprintln!(
        "request {}: {} export, {} bytes, blake3 {} (recorded in the requests log)",
        request.id,
        format.as_str(),
        rendered.bytes.len(),
        rendered.hash
    );
    Ok(ExitCode::SUCCESS)
}
