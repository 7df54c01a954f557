//! The `loadwise` binary: parses the command line and runs one subcommand.

mod cli;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use cli::{AgentArgs, Command, LogFormat, PickArgs};
use loadwise::agent::MemoryProbe;
use loadwise::client::PickError;
use loadwise::dial::DialError;
use tracing_subscriber::EnvFilter;

/// The process exit statuses, distinct per outcome so scripts can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Exit {
    Success = 0,
    /// Anything else went wrong (bad settings, port taken, ...).
    Failure = 1,
    /// Wrong command-line usage (also clap's status for it).
    Usage = 2,
    /// `pick`: the dispatcher answered with the error reply.
    Refused = 3,
    /// `pick`: the dispatcher could not be reached or did not answer in time.
    Unreachable = 4,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

fn main() -> ExitCode {
    let cli = cli::parse();
    init_logging(cli.log_format, &cli.command);
    match run(cli.command) {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("loadwise: {error:#}");
            Exit::Failure.into()
        }
    }
}

/// Logs go to stderr as text or JSON lines, filtered by `RUST_LOG` (default `info`;
/// `warn` for `pick` and `config`, whose stdout is their answer).
fn init_logging(format: LogFormat, command: &Command) {
    let quiet = matches!(command, Command::Pick(_) | Command::Config(_));
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(if quiet { "warn" } else { "info" }));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

fn run(command: Command) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        match command {
            Command::Serve(args) => cli::serve::run(args, shutdown_signal()).await.map(|()| Exit::Success),
            Command::Config(args) => cli::serve::config(args).map(|()| Exit::Success),
            Command::Demo(args) => cli::demo::run(args, shutdown_signal()).await.map(|()| Exit::Success),
            Command::Agent(args) => agent(args).await,
            Command::Pick(args) => Ok(pick(args).await),
            Command::Bench(args) => cli::bench::run(args).await.map(|()| Exit::Success),
            Command::Simulate(args) => cli::simulate::run(args).map(|()| Exit::Success),
        }
    })
}

async fn agent(args: AgentArgs) -> anyhow::Result<Exit> {
    let probe = MemoryProbe::with_path(&args.meminfo);
    loadwise::agent::run(args.to_config(), probe, shutdown_signal()).await?;
    Ok(Exit::Success)
}

async fn pick(args: PickArgs) -> Exit {
    match loadwise::client::pick(&args.server, args.timeout).await {
        Ok(backend) => {
            println!("{backend}");
            Exit::Success
        }
        Err(error) => {
            eprintln!("loadwise: {error}");
            match error {
                PickError::Refused => Exit::Refused,
                PickError::Malformed(_) | PickError::BadAddress(_) => Exit::Failure,
                PickError::Unreachable(DialError::Resolve { source, .. })
                    if source.kind() == std::io::ErrorKind::InvalidInput =>
                {
                    // Not HOST:PORT at all: a usage error, not an outage.
                    Exit::Usage
                }
                _ => Exit::Unreachable,
            }
        }
    }
}

/// Completes on the first SIGINT or SIGTERM. The handlers are installed at once,
/// not when the future is first polled, so that a signal arriving while the command
/// starts up stops it gracefully instead of killing it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let (mut interrupt, mut terminate) = match (interrupt, terminate) {
            (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "cannot listen for SIGINT or SIGTERM; only Ctrl-C stops the process");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_stable() {
        let codes =
            [Exit::Success, Exit::Failure, Exit::Usage, Exit::Refused, Exit::Unreachable].map(|e| e as u8);
        assert_eq!(codes, [0, 1, 2, 3, 4]);
    }
}
