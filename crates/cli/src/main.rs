//! The `loadwise` binary: parses the command line and runs one subcommand.

mod cli;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use cli::{AgentArgs, Command, LogFormat, PickArgs};
use loadwise_agent::cpustat::CpuProbe;
use loadwise_agent::{HostProbe, MemoryProbe, Protocol};
use loadwise_cli::exit::Exit;
use loadwise_client::connect::{self, BackendAttempt, ConnectError, Connected};
use loadwise_client::dial::DialError;
use loadwise_client::{Answer, Assigned, Attempt, Failover, FailoverError, PickError};
use loadwise_protocol::v2::{ErrorCode, Picked, State};
use tracing_subscriber::EnvFilter;

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
/// `warn` for `pick`, `config`, `completions` and `man`, whose stdout is their answer).
fn init_logging(format: LogFormat, command: &Command) {
    let quiet =
        matches!(command, Command::Pick(_) | Command::Config(_) | Command::Completions(_) | Command::Man(_));
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
    let outcome = runtime.block_on(async {
        match command {
            Command::Serve(args) => cli::serve::run(args, shutdown_signal()).await.map(|()| Exit::Success),
            Command::Config(args) => cli::serve::config(args).map(|()| Exit::Success),
            Command::Demo(args) => cli::demo::run(args, shutdown_signal()).await.map(|()| Exit::Success),
            Command::Agent(args) => agent(args).await,
            Command::Pick(args) => pick(args).await,
            Command::Bench(args) => cli::bench::run(args).await.map(|()| Exit::Success),
            Command::Simulate(args) => cli::simulate::run(args).map(|()| Exit::Success),
            Command::Completions(args) => {
                cli::generate::completions(args, cli::command()).map(|()| Exit::Success)
            }
            Command::Man(args) => cli::generate::man(args, cli::command()).map(|()| Exit::Success),
        }
    });
    // A name lookup runs on a blocking thread that a timeout cannot stop; do not let
    // a slow resolver hold the process past its deadline or its shutdown.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    outcome
}

async fn agent(args: AgentArgs) -> anyhow::Result<Exit> {
    let config = args.to_config()?;
    let memory = memory_probe(&args);
    let initial = if args.drain { State::Draining } else { State::Ready };
    let (state, watched) = tokio::sync::watch::channel(initial);
    let drain_signals = follow_drain_signals(state)?;
    let shutdown = shutdown_signal();
    if config.protocol == Protocol::V2 {
        let mut probe = HostProbe::with(memory, CpuProbe::new());
        if let Some(path) = &args.metrics_file {
            probe = probe.with_metrics_file(path);
        }
        loadwise_agent::run_with_state(config, probe, watched, shutdown).await?;
    } else {
        loadwise_agent::run_with_state(config, memory, watched, shutdown).await?;
    }
    drain_signals.abort();
    Ok(Exit::Success)
}

/// Memory of this process's cgroup limit if it has one, else of the host; a meminfo
/// file named on the command line (tests, unusual hosts) is used alone.
fn memory_probe(args: &AgentArgs) -> MemoryProbe {
    let probe = if args.meminfo.as_os_str() == loadwise_agent::meminfo::PROC_MEMINFO {
        MemoryProbe::new()
    } else {
        MemoryProbe::with_path(&args.meminfo)
    };
    match probe.cgroup() {
        Some(cgroup) => {
            tracing::info!(cgroup = %cgroup.dir().display(), "memory: of the cgroup's limit when it has one")
        }
        None => tracing::info!(meminfo = %args.meminfo.display(), "memory: of the host"),
    }
    probe
}

/// SIGUSR1 drains the backend, SIGUSR2 makes it ready again. The handlers are
/// installed at once, so a signal sent right after start is not lost (or fatal).
fn follow_drain_signals(
    state: tokio::sync::watch::Sender<State>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut drain = signal(SignalKind::user_defined1()).context("cannot listen for SIGUSR1")?;
    let mut ready = signal(SignalKind::user_defined2()).context("cannot listen for SIGUSR2")?;
    Ok(tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                Some(()) = drain.recv() => State::Draining,
                Some(()) = ready.recv() => State::Ready,
                else => return,
            };
            state.send_if_modified(|state| std::mem::replace(state, next) != next);
        }
    }))
}

async fn pick(args: PickArgs) -> anyhow::Result<Exit> {
    if args.connect {
        return pick_connect(&args).await;
    }
    let failover = Failover::new(args.servers(), args.failover_config()?)?;
    let outcome = match &args.service {
        None => failover.pick().await.map(|answer| shown(answer, Shown::legacy)),
        Some(service) => {
            let key = args.key.clone().unwrap_or_default();
            failover.pick_keyed(service, &key).await.map(|answer| shown(answer, Shown::v2))
        }
    };
    if args.json {
        println!("{}", pick_json(&outcome));
    }
    match outcome {
        Ok(answer) => {
            if !args.json {
                println!("{}", answer.backend.address);
                if let Some(ticket) = &answer.backend.ticket {
                    println!("{ticket}");
                }
                if !answer.failed.is_empty() {
                    let failed: Vec<String> = answer.failed.iter().map(describe).collect();
                    eprintln!("loadwise: assigned by {} after {}", answer.dispatcher, failed.join("; "));
                }
            }
            Ok(Exit::Success)
        }
        Err(error) => {
            if !args.json {
                eprintln!("loadwise: {error}");
            }
            Ok(pick_failure_exit(&error))
        }
    }
}

/// `pick --connect`: picks and connects, reporting the backends that fail.
async fn pick_connect(args: &PickArgs) -> anyhow::Result<Exit> {
    let options = args.connect_options()?;
    let service = args.service.as_ref().context("--connect needs --service")?;
    let outcome = connect::connect(&args.servers(), service, &options).await;
    if args.json {
        println!("{}", connect_json(&outcome));
    }
    match outcome {
        Ok(connected) => {
            if !args.json {
                print_connected(&connected);
            }
            Ok(Exit::Success)
        }
        Err(error) => {
            if !args.json {
                for attempt in error.failed() {
                    eprintln!("loadwise: {}", describe_backend(attempt));
                }
                match &error {
                    // Each attempt has its line already.
                    ConnectError::Exhausted { failed, .. } => {
                        eprintln!("loadwise: could not connect to any backend in {} attempt(s)", failed.len())
                    }
                    error => eprintln!("loadwise: {error}"),
                }
            }
            Ok(match error {
                ConnectError::Declined { error: PickError::Declined(ErrorCode::NO_FREE_PLACE), .. } => {
                    Exit::NoFreePlace
                }
                ConnectError::Declined { .. } => Exit::Refused,
                ConnectError::Unanswered { .. } => Exit::Unreachable,
                ConnectError::Exhausted { .. } => Exit::Unconnected,
                ConnectError::Config(_) => Exit::Usage,
            })
        }
    }
}

fn print_connected(connected: &Connected) {
    for attempt in &connected.failed {
        eprintln!("loadwise: {}", describe_backend(attempt));
    }
    for attempt in &connected.unanswered {
        eprintln!("loadwise: {}", describe(attempt));
    }
    let backend = &connected.backend;
    let attempts = connected.attempts();
    println!(
        "connected to {} (backend {}) after {attempts} attempt(s)",
        backend.endpoint, backend.backend_id
    );
    if let Some(ticket) = Shown::v2(backend.clone()).ticket {
        println!("{ticket}");
    }
}

/// One backend that was not used, and whether the dispatcher was told.
fn describe_backend(attempt: &BackendAttempt) -> String {
    let reported = if attempt.reported { "; reported to the dispatcher" } else { "" };
    format!("{attempt}{reported}")
}

fn connect_json(outcome: &Result<Connected, ConnectError>) -> serde_json::Value {
    let failed = |failed: &[BackendAttempt]| -> Vec<serde_json::Value> {
        let one = |a: &BackendAttempt| serde_json::json!({"backend_id": a.backend_id.to_string(), "endpoint": a.endpoint.to_string(), "error": a.error.to_string(), "reason": a.error.reason().map(|r| r.name()), "reported": a.reported, "elapsed_ms": a.elapsed.as_secs_f64() * 1e3});
        failed.iter().map(one).collect()
    };
    match outcome {
        Ok(connected) => {
            let shown = Shown::v2(connected.backend.clone());
            serde_json::json!({
                "connected": shown.address,
                "backend_id": shown.backend_id.map(|id| id.to_string()),
                "ticket": shown.ticket,
                "dispatcher": connected.dispatcher,
                "attempts": connected.attempts(),
                "failed": failed(&connected.failed),
            })
        }
        Err(error) => serde_json::json!({
            "error": error.to_string(),
            "failed": failed(error.failed()),
        }),
    }
}

/// What `pick` prints of an assigned backend.
#[derive(Debug)]
struct Shown {
    address: String,
    backend_id: Option<u64>,
    /// Hex, when the dispatcher signed one.
    ticket: Option<String>,
}

impl Shown {
    fn legacy(backend: Assigned) -> Shown {
        Shown { address: backend.to_string(), backend_id: None, ticket: None }
    }

    fn v2(backend: Picked) -> Shown {
        let ticket =
            (!backend.ticket.is_empty()).then(|| backend.ticket.iter().map(|b| format!("{b:02x}")).collect());
        Shown { address: backend.endpoint.to_string(), backend_id: Some(backend.backend_id), ticket }
    }
}

fn shown<B>(answer: Answer<B>, show: impl Fn(B) -> Shown) -> Answer<Shown> {
    Answer { backend: show(answer.backend), dispatcher: answer.dispatcher, failed: answer.failed }
}

fn describe(attempt: &Attempt) -> String {
    format!("{} failed: {}", attempt.dispatcher, attempt.error)
}

/// The exit status of a failed pick: a refusal if any dispatcher answered and said
/// no, a usage error if no `--server` was even `HOST:PORT`, otherwise the outage.
fn pick_failure_exit(error: &FailoverError) -> Exit {
    let usage = |attempt: &Attempt| {
        matches!(&attempt.error, PickError::Unreachable(DialError::Resolve { source, .. })
            if source.kind() == std::io::ErrorKind::InvalidInput)
    };
    let malformed =
        |attempt: &Attempt| matches!(attempt.error, PickError::Malformed(_) | PickError::BadAddress(_));
    let attempts = &error.attempts;
    let no_free_place =
        |attempt: &Attempt| matches!(attempt.error, PickError::Declined(ErrorCode::NO_FREE_PLACE));
    let refusals = || attempts.iter().filter(|attempt| attempt.error.is_refusal());
    if error.any_refusal() && refusals().all(no_free_place) {
        Exit::NoFreePlace
    } else if error.any_refusal() {
        Exit::Refused
    } else if !attempts.is_empty() && attempts.iter().all(usage) {
        Exit::Usage
    } else if !attempts.is_empty() && attempts.iter().all(malformed) {
        Exit::Failure
    } else {
        Exit::Unreachable
    }
}

fn pick_json(outcome: &Result<Answer<Shown>, FailoverError>) -> serde_json::Value {
    let attempts = |attempts: &[Attempt]| -> Vec<serde_json::Value> {
        let one = |a: &Attempt| serde_json::json!({"dispatcher": a.dispatcher, "error": a.error.to_string(), "elapsed_ms": a.elapsed.as_secs_f64() * 1e3});
        attempts.iter().map(one).collect()
    };
    match outcome {
        Ok(answer) => serde_json::json!({
            "backend": answer.backend.address,
            // A string, as the admin API gives it: JavaScript rounds a 64-bit number.
            "backend_id": answer.backend.backend_id.map(|id| id.to_string()),
            "ticket": answer.backend.ticket,
            "dispatcher": answer.dispatcher,
            "failed": attempts(&answer.failed),
        }),
        Err(error) => serde_json::json!({
            "error": error.to_string(),
            "refused": error.any_refusal(),
            "deadline_reached": error.deadline_reached,
            "failed": attempts(&error.attempts),
        }),
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
