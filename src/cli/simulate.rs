//! `loadwise simulate`: arguments and the glue that runs a scenario.

use clap::Args;

#[derive(Debug, Args)]
pub struct SimulateArgs {}

pub fn run(_args: SimulateArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
