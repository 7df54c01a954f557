//! `loadwise bench`: a load generator that measures a dispatcher's throughput, latency,
//! errors and CPU, in the legacy protocol or v2, optionally against a no-logic ceiling
//! server under the same load.
//!
//! # Layout
//!
//! | module | its one job |
//! |---|---|
//! | `config` | what a run is asked to do, validated |
//! | `error` | why a run could not be made |
//! | `frames` | the legacy bytes sent and how each reply is judged |
//! | `frames_v2` | the v2 bytes sent, encoded once and patched, and how each reply is judged |
//! | `wire` | the run's protocol: what a batch and a fake backend send, how replies are cut out |
//! | `outcome` | successes and errors by kind |
//! | `latency` | an HDR histogram of reply latencies |
//! | `control` | when sending stops: deadline or budget of ops |
//! | `plan` | what the workers of a run share |
//! | `conn` | opening client connections |
//! | `replies` | reading the replies a batch is owed |
//! | `deadline` | a reply deadline that costs no timer operation per request |
//! | `closed`, `open`, `churn` | the workers: closed loop, open loop (fixed rate), connect per pick |
//! | `register` | making a connection a backend before the load (v2: Register with a secret) |
//! | `backends` | fake backends heart-beating with changing loads |
//! | `ceiling` | the no-logic server |
//! | `local` | servers started in this process on their own threads |
//! | `cpu`, `procnet` | CPU time and memory from `/proc`; the pid listening on a port |
//! | `progress` | the progress bar |
//! | `runner` | one measured run against one server |
//! | `report` | the results, as JSON and as text |
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), loadwise_tools::bench::BenchError> {
//! use loadwise_tools::bench::{BenchConfig, Stop, Target};
//! use loadwise_server::ServerConfig;
//!
//! let mut config = BenchConfig::new(Target::Spawn(Box::new(ServerConfig::default())));
//! config.stop = Stop::Requests(10_000);
//! config.ceiling = Some(Target::Ceiling);
//! let report = loadwise_tools::bench::run(&config).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod backends;
pub mod ceiling;
mod churn;
mod closed;
mod config;
mod conn;
mod control;
mod cpu;
mod deadline;
mod error;
mod frames;
mod frames_v2;
mod latency;
mod local;
mod open;
mod outcome;
mod plan;
mod procnet;
mod progress;
mod register;
mod replies;
mod report;
mod runner;
mod wire;

pub use backends::{BackendsReport, RegistrationFailed};
pub use config::{BenchConfig, DEFAULT_SERVICE, InvalidSetting, Mode, Protocol, Stop, Target, resolve};
pub use error::BenchError;
pub use latency::LatencySummary;
pub use local::{CEILING_THREADS, DISPATCHER_THREADS};
pub use outcome::{ErrorCounts, ErrorKind, Tally};
pub use report::{BenchReport, CpuReport, MemoryReport, Ratio, RunReport, ServerStats, Settings};

use local::LocalServer;
use runner::{Endpoint, ServerProbe};

/// Runs the benchmark `config` describes: against its target, then, if asked,
/// against the ceiling, and reports both and their ratio.
pub async fn run(config: &BenchConfig) -> Result<BenchReport, BenchError> {
    config.validate()?;
    let target = measure_target(config, &config.target).await?;
    let ceiling = match &config.ceiling {
        Some(ceiling) => Some(measure_target(config, ceiling).await?),
        None => None,
    };
    let ratio = ceiling.as_ref().map(|ceiling| Ratio::of(&target, ceiling));
    Ok(BenchReport { settings: Settings::of(config), target, ceiling, ratio })
}

async fn measure_target(config: &BenchConfig, target: &Target) -> Result<RunReport, BenchError> {
    match target {
        Target::Remote { addr, pid } => {
            let probe = match pid.or_else(|| procnet::find_listener(*addr)) {
                Some(pid) => ServerProbe::Pid(pid),
                None => ServerProbe::Unknown,
            };
            let endpoint = Endpoint { label: format!("server at {addr}"), addr: *addr, probe };
            runner::measure(config, &endpoint).await
        }
        Target::Spawn(server_config) => {
            let server = LocalServer::dispatcher((**server_config).clone(), config.server_threads).await?;
            measure_local(config, server, "dispatcher (in-process)").await
        }
        Target::Ceiling => {
            // A dispatcher with a secret signs a ticket into every PickReply.
            let replies = ceiling::Replies::new(config.secret.is_some());
            let server = LocalServer::ceiling(config.server_threads, replies).await?;
            measure_local(config, server, "ceiling (in-process)").await
        }
    }
}

async fn measure_local(
    config: &BenchConfig,
    server: LocalServer,
    label: &str,
) -> Result<RunReport, BenchError> {
    let endpoint = Endpoint {
        label: label.to_owned(),
        addr: server.addr(),
        probe: ServerProbe::Threads(server.threads()),
    };
    let result = runner::measure(config, &endpoint).await;
    let stats = server.stats();
    server.stop().await;
    let mut report = result?;
    report.server_stats = stats.map(ServerStats::from);
    Ok(report)
}
