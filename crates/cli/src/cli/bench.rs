//! `loadwise bench`: arguments and the glue that runs the load generator.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgGroup, Args, ValueEnum};
use loadwise_protocol::v2::ServiceName;
use loadwise_protocol::v2::auth::Secret;
use loadwise_server::ServerConfig;
use loadwise_tools::bench::{BenchConfig, Mode, Protocol, Stop, Target};

fn duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

/// What the connections send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Logins: 12-byte frame out, 22-byte reply back (v2: PickRequest out, PickReply back).
    Pick,
    /// Heartbeats, each batch closed by one login (v2: pick) whose reply proves them read.
    Heartbeat,
    /// A heartbeat before every login (v2: pick), on the same connection.
    Mixed,
    /// Open connections that send nothing (memory and idle CPU).
    Idle,
}

/// The wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// The LoadBanceServer protocol (docs/protocol.md).
    Legacy,
    /// Protocol v2 (docs/protocol.md, "Protocol v2"): PickRequests for --service,
    /// replies matched by request id; fake backends send v2 heartbeats.
    V2,
}

/// Measure a dispatcher: throughput, latency percentiles, errors by kind, CPU.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["server", "spawn", "serve_ceiling"])))]
pub struct BenchArgs {
    /// The dispatcher to measure, as HOST:PORT.
    #[arg(long)]
    pub server: Option<String>,
    /// Process id of the --server dispatcher, to read its CPU time and memory
    /// (default: the local process listening on its port, if any).
    #[arg(long, requires = "server")]
    pub server_pid: Option<u32>,
    /// Start a dispatcher inside the bench process, on threads of its own.
    #[arg(long)]
    pub spawn: bool,
    /// What the connections send.
    #[arg(long, value_enum, default_value = "pick")]
    pub mode: ModeArg,
    /// The wire protocol. Every mode, loop and flag works with both.
    #[arg(long, value_enum, default_value = "legacy")]
    pub protocol: ProtocolArg,
    /// v2: the service picked from and served by the fake backends (with the dispatcher's
    /// default service, `default`, picks skip the service lookup).
    #[arg(long, default_value = loadwise_tools::bench::DEFAULT_SERVICE)]
    pub service: ServiceName,
    /// v2: the dispatcher's shared secret. Fake backends, and connections that send
    /// heartbeats, register with it (Hello, Challenge, Register) first; --spawn starts
    /// the dispatcher with it, so each PickReply carries a signed ticket. With
    /// --serve-ceiling or --ceiling, the ceiling's PickReplies carry a ticket of the
    /// same size (unsigned).
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// v2: capacity slots. Each fake backend reports N places, none in use, and a
    /// grant that never runs out, and reads the LeaseReport answering each heartbeat:
    /// the service becomes a slot service and every pick takes the slot path. A backend
    /// may be sent up to N clients between two of its heartbeats.
    #[arg(long, value_name = "N")]
    pub slots: Option<u32>,
    /// Client connections (concurrent clients with --connect-per-pick).
    #[arg(long, default_value_t = 8)]
    pub conns: usize,
    /// Requests written together on a connection before their replies are awaited.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// How long to send load (default 5s).
    #[arg(long, value_parser = duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Stop after this many ops instead (picks; heartbeats in heartbeat mode).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Fake backends to register, each on its own connection, heart-beating with a
    /// changing load for the whole run.
    #[arg(long, default_value_t = 10)]
    pub backends: usize,
    /// Time between two heartbeats of one fake backend.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub backend_interval: Duration,
    /// Each pick on a new connection: connect, one login (v2: pick), one reply, close.
    #[arg(long)]
    pub connect_per_pick: bool,
    /// Open loop: this many ops per second in total, latency measured from each op's
    /// intended send time. Without it, each connection sends when its replies are in.
    #[arg(long)]
    pub rate: Option<f64>,
    /// A reply or connection taking longer than this is a timeout error.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub timeout: Duration,
    /// Also run the same load against a built-in no-logic server, in this process,
    /// and print the ratio.
    #[arg(long, conflicts_with = "ceiling_server")]
    pub ceiling: bool,
    /// Like --ceiling, against a ceiling server already running (`loadwise bench
    /// --serve-ceiling ADDR`), as HOST:PORT.
    #[arg(long)]
    pub ceiling_server: Option<String>,
    /// Process id of the --ceiling-server (default: found by its port).
    #[arg(long, requires = "ceiling_server")]
    pub ceiling_pid: Option<u32>,
    /// Worker threads of in-process servers (default: one per CPU).
    #[arg(long)]
    pub server_threads: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Do not measure: serve the no-logic ceiling server on this address until
    /// SIGINT/SIGTERM, for --ceiling-server runs from another process.
    #[arg(long, value_name = "ADDR")]
    pub serve_ceiling: Option<SocketAddr>,
}

/// Runs `loadwise bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(addr) = args.serve_ceiling {
        let secret = args.secret_file.as_deref().map(read_secret).transpose()?;
        return serve_ceiling(addr, secret.is_some()).await;
    }
    let config = args.to_config().await?;
    raise_descriptor_limit(&config);
    let report = loadwise_tools::bench::run(&config).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

impl BenchArgs {
    async fn to_config(&self) -> anyhow::Result<BenchConfig> {
        let secret = self.secret_file.as_deref().map(read_secret).transpose()?;
        let target = match &self.server {
            Some(server) => remote(server, self.server_pid).await?,
            None => Target::Spawn(Box::new(self.spawn_config(secret.clone()))),
        };
        let ceiling = match (&self.ceiling_server, self.ceiling) {
            (Some(server), _) => Some(remote(server, self.ceiling_pid).await?),
            (None, true) => Some(Target::Ceiling),
            (None, false) => None,
        };
        let stop = match (self.requests, self.duration) {
            (Some(n), _) => Stop::Requests(n),
            (None, duration) => Stop::Duration(duration.unwrap_or(Duration::from_secs(5))),
        };
        let config = BenchConfig {
            ceiling,
            mode: self.mode.into(),
            protocol: self.protocol.into(),
            service: self.service.clone(),
            secret,
            slots: self.slots,
            conns: self.conns,
            pipeline: self.pipeline,
            stop,
            backends: self.backends,
            backend_interval: self.backend_interval,
            connect_per_pick: self.connect_per_pick,
            rate: self.rate,
            timeout: self.timeout,
            server_threads: self.server_threads,
            progress: std::io::stderr().is_terminal(),
            ..BenchConfig::new(target)
        };
        config.validate()?;
        Ok(config)
    }

    /// The in-process dispatcher: default settings, with room for every connection
    /// and backend of the run, and the run's secret. Idle connections send nothing,
    /// so they stay pending: the headroom and first-frame timeout make room for them.
    fn spawn_config(&self, secret: Option<Secret>) -> ServerConfig {
        let defaults = ServerConfig::default();
        let connections = self.conns + 64;
        let mut config = ServerConfig {
            max_client_connections: defaults.max_client_connections.max(connections),
            shutdown_grace: Duration::from_secs(1),
            ..defaults
        };
        // Bench clients may heartbeat too (--mode heartbeat, mixed).
        config.dispatch.max_backends = config.dispatch.max_backends.max(self.backends + connections);
        if self.mode == ModeArg::Idle {
            config.max_pending_connections = config.max_pending_connections.max(connections);
            let run = self.duration.unwrap_or(Duration::from_secs(5)) + self.timeout;
            config.connection.first_frame_timeout = config.connection.first_frame_timeout.max(run);
        }
        config.connection.secret = secret;
        config
    }
}

/// The secret in `path`, read as the dispatcher and the agent read theirs.
fn read_secret(path: &Path) -> anyhow::Result<Secret> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Secret::from_file_text(&text).with_context(|| format!("bad secret in {}", path.display()))
}

async fn remote(server: &str, pid: Option<u32>) -> anyhow::Result<Target> {
    let addr =
        loadwise_tools::bench::resolve(server).await.with_context(|| format!("cannot resolve {server}"))?;
    Ok(Target::Remote { addr, pid })
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Pick => Mode::Pick,
            ModeArg::Heartbeat => Mode::Heartbeat,
            ModeArg::Mixed => Mode::Mixed,
            ModeArg::Idle => Mode::Idle,
        }
    }
}

impl From<ProtocolArg> for Protocol {
    fn from(protocol: ProtocolArg) -> Self {
        match protocol {
            ProtocolArg::Legacy => Protocol::Legacy,
            ProtocolArg::V2 => Protocol::V2,
        }
    }
}

/// Every connection is a descriptor, twice over when the server is in-process.
fn raise_descriptor_limit(config: &BenchConfig) {
    let local =
        !matches!(config.target, Target::Remote { .. }) || matches!(config.ceiling, Some(Target::Ceiling));
    let per_side = (config.conns + config.backends) as u64;
    let wanted = per_side * if local { 2 } else { 1 } + 64;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit < wanted => {
            eprintln!("loadwise: warning: the open-file limit {limit} is below the {wanted} this run needs")
        }
        Ok(_) => {}
        Err(error) => eprintln!("loadwise: warning: cannot raise the open-file limit: {error}"),
    }
}

/// Serves the ceiling; with `ticket`, its v2 PickReplies carry a ticket-sized ticket.
async fn serve_ceiling(addr: SocketAddr, ticket: bool) -> anyhow::Result<()> {
    // The dispatcher's accept queue, for a fair comparison.
    let listener = loadwise_server::listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("loadwise: ceiling server listening on {}", listener.local_addr()?);
    let stop = tokio_util::sync::CancellationToken::new();
    let replies = loadwise_tools::bench::ceiling::Replies::new(ticket);
    let server = tokio::spawn(loadwise_tools::bench::ceiling::serve(listener, replies, stop.clone()));
    shutdown_signal().await;
    stop.cancel();
    server.await.context("the ceiling server failed")?;
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|cli| cli.bench)
    }

    #[test]
    fn a_target_is_required() {
        let error = parse(&["--conns", "4"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(parse(&["--server", "h:1", "--spawn"]).is_err());
    }

    #[test]
    fn duration_and_requests_exclude_each_other() {
        assert!(parse(&["--spawn", "--duration", "1s", "--requests", "5"]).is_err());
    }

    #[tokio::test]
    async fn bad_combinations_are_refused_before_running() {
        let args = parse(&["--spawn", "--connect-per-pick", "--pipeline", "4"]).unwrap();
        let error = args.to_config().await.unwrap_err().to_string();
        assert!(error.contains("connect-per-pick"), "{error}");
    }

    #[tokio::test]
    async fn a_secret_needs_v2_and_reaches_the_spawned_dispatcher() {
        let dir = std::env::temp_dir().join(format!("loadwise-bench-secret-{}", std::process::id()));
        std::fs::write(&dir, "0123456789abcdef0123456789abcdef\n").unwrap();
        let path = dir.to_str().unwrap();
        let error = parse(&["--spawn", "--secret-file", path]).unwrap().to_config().await.unwrap_err();
        assert!(error.to_string().contains("--protocol v2"), "{error}");
        let args =
            parse(&["--spawn", "--protocol", "v2", "--service", "search", "--secret-file", path]).unwrap();
        let config = args.to_config().await.unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!((config.protocol, config.service.as_str()), (Protocol::V2, "search"));
        let Target::Spawn(server) = &config.target else { panic!("a spawned target") };
        assert_eq!(server.connection.secret, config.secret);
        assert!(config.secret.is_some());
        assert!(parse(&["--spawn", "--protocol", "v2", "--service", "bad name"]).is_err());
    }

    #[tokio::test]
    async fn slots_need_v2_and_reach_the_config() {
        let error = parse(&["--spawn", "--slots", "10"]).unwrap().to_config().await.unwrap_err();
        assert!(error.to_string().contains("--protocol v2"), "{error}");
        let config =
            parse(&["--spawn", "--protocol", "v2", "--slots", "10"]).unwrap().to_config().await.unwrap();
        assert_eq!(config.slots, Some(10));
    }

    #[tokio::test]
    async fn defaults_make_a_valid_spawned_run() {
        let config = parse(&["--spawn"]).unwrap().to_config().await.unwrap();
        assert_eq!(config.stop, Stop::Duration(Duration::from_secs(5)));
        assert!(matches!(config.target, Target::Spawn(_)));
    }
}
