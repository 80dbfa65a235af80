//! Command-line entry: parses arguments and dispatches to the subcommands.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "gemfleet-agent", version, about = "gemfleet's per-machine agent: a local Gemini API proxy that shares a fleet's keys without tripping quotas")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Classify a Gemini API error (body, SSE stream text or Gemini CLI output) the way the fleet reads it.
    Classify(crate::classify_cmd::ClassifyArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Classify(args) => crate::classify_cmd::run(args),
    }
}
