//! `kept openapi`: prints the server's OpenAPI document, the same one `/openapi.json` serves.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
The workspace commits this document as `openapi.json`; a test fails when it drifts from the code.

Example:
  kept openapi > openapi.json")]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    print!("{}", kept_server::openapi::document_json());
    Ok(ExitCode::SUCCESS)
}
