//! The `loadwise` binary: parses the command line and runs one subcommand.

mod cli;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use cli::{AgentArgs, Cli, Command, PickArgs, ServeArgs};
use loadwise::agent::MemoryProbe;
use loadwise::client::PickError;
use loadwise::dial::DialError;
use loadwise::server::Server;
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
    let cli = Cli::parse();
    init_logging(&cli.command);
    match run(cli.command) {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("loadwise: {error:#}");
            Exit::Failure.into()
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`; `warn` for `pick`,
/// whose stdout is its answer).
fn init_logging(command: &Command) {
    let default = if matches!(command, Command::Pick(_)) { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn run(command: Command) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        match command {
            Command::Serve(args) => serve(args).await,
            Command::Agent(args) => agent(args).await,
            Command::Pick(args) => Ok(pick(args).await),
            Command::Bench(args) => cli::bench::run(args).await.map(|()| Exit::Success),
            Command::Simulate(args) => cli::simulate::run(args).map(|()| Exit::Success),
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<Exit> {
    let config = args.into_config();
    raise_descriptor_limit(config.max_connections);
    let server = Server::bind(config).await?;
    server.run(shutdown_signal()).await;
    Ok(Exit::Success)
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

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
}

/// Each connection needs a file descriptor; raise the soft limit as far as the hard
/// limit allows and say so if it is still below the connection cap.
fn raise_descriptor_limit(max_connections: usize) {
    // Leave room for the listener, logging and the runtime.
    let wanted = max_connections as u64 + 64;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit < wanted => {
            tracing::warn!(
                limit,
                max_connections,
                "the open-file limit is below --max-connections; accepts may fail"
            )
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read or raise the open-file limit"),
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
