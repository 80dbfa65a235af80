//! `gemfleet-recorder bench` (placeholder until the benchmark lands).

#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

pub async fn run(_args: BenchArgs, _settings: crate::settings::Settings) -> anyhow::Result<()> {
    anyhow::bail!("bench not implemented yet")
}
