//! `loadwise simulate`: arguments and the glue that runs scenario files.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use loadwise_core::selection::Policy;
use loadwise_tools::simulate::{Format, Report, Scenario, compare, compare_slots, render_reports};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Scenario files (TOML); see scenarios/ for examples.
    #[arg(value_name = "SCENARIO.toml", required = true)]
    pub scenarios: Vec<PathBuf>,
    /// Seed for every random draw; overrides each scenario's `seed`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run only this policy (least-loaded, p2c, round-robin, original); repeat for
    /// several. Default: all.
    #[arg(long = "policy", value_name = "NAME")]
    pub policies: Vec<Policy>,
    /// Output: table, markdown or json.
    #[arg(long, default_value = "table")]
    pub format: Format,
}

/// Runs every scenario under the chosen policies and prints the comparison.
///
/// The simulated dispatchers' own log lines (a backend expired, ...) concern
/// virtual backends and carry wall-clock times, so they are not printed; the
/// results count what they would report.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || run_quietly(args))
}

fn run_quietly(args: SimulateArgs) -> anyhow::Result<()> {
    let policies = chosen_policies(&args.policies);
    let mut reports = Vec::with_capacity(args.scenarios.len());
    for path in &args.scenarios {
        let scenario = load(path)?;
        let seed = args.seed.unwrap_or(scenario.seed);
        // A slot scenario compares admission modes, not policies.
        let (results, slots) = if scenario.has_slots() {
            (Vec::new(), Some(compare_slots(&scenario, seed)))
        } else {
            (compare(&scenario, &policies, seed), None)
        };
        reports.push(Report {
            scenario: scenario.name.clone().unwrap_or_else(|| file_stem(path)),
            description: scenario.description.clone(),
            seed,
            results,
            slots,
        });
    }
    print!("{}", render_reports(&reports, args.format));
    Ok(())
}

/// The policies asked for, each once, in the order given; all when none was.
fn chosen_policies(asked: &[Policy]) -> Vec<Policy> {
    if asked.is_empty() {
        return Policy::ALL.to_vec();
    }
    let mut policies = Vec::new();
    for &policy in asked {
        if !policies.contains(&policy) {
            policies.push(policy);
        }
    }
    policies
}

fn load(path: &Path) -> anyhow::Result<Scenario> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Scenario::from_toml(&text).with_context(|| format!("invalid scenario {}", path.display()))
}

fn file_stem(path: &Path) -> String {
    path.file_stem().map_or_else(|| path.display().to_string(), |stem| stem.to_string_lossy().into_owned())
}
