//! `gemfleet-agent classify`: exposes the classifier to people.

use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// HTTP status of the response (inferred from the body when omitted).
    #[arg(long)]
    pub status: Option<u16>,
    /// The model the request was for.
    #[arg(long)]
    pub model: Option<String>,
    /// The time to classify at (RFC 3339), default now.
    #[arg(long)]
    pub now: Option<String>,
    /// File with the body, stream text or CLI output; `-` or nothing reads stdin.
    pub file: Option<std::path::PathBuf>,
}

pub fn run(_args: ClassifyArgs) -> ExitCode {
    eprintln!("classify: not implemented yet");
    ExitCode::from(2)
}
