//! `loadwise demo`: a dispatcher, simulated backends whose load rises and falls, a
//! stream of clients, and the dashboard, all in one process on loopback.
//!
//! Nothing is faked on the dispatcher's side: each backend runs the real agent over
//! TCP with a load probe that follows a wave plus the clients it was sent, and each
//! client does a real login.

use std::f64::consts::TAU;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use loadwise_agent::{Advertise, AgentConfig, ProbeError};
use loadwise_cli::settings::DEFAULT_ADMIN_LISTEN;
use loadwise_core::dispatcher::DispatchSettings;
use loadwise_core::selection::Policy;
use loadwise_server::admin::{AdminConfig, AdminServer};
use loadwise_server::{Server, ServerConfig};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the dispatcher listens for the simulated backends and clients (port 0
    /// picks a free one).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Where the dashboard and admin API listen.
    #[arg(long, default_value = DEFAULT_ADMIN_LISTEN, value_name = "ADDR")]
    pub admin_listen: SocketAddr,
    /// How many simulated backends report to the dispatcher.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(1..=100), value_name = "N")]
    pub backends: u8,
    /// New clients per second; each logs in and is sent to a backend.
    #[arg(long, default_value_t = 5.0, value_parser = rate, value_name = "RATE")]
    pub clients_per_second: f64,
    /// How backends are chosen (least-loaded, p2c, round-robin, original).
    #[arg(long, default_value = "least-loaded")]
    pub policy: Policy,
    /// Stop after this long instead of waiting for Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
}

fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && (0.01..=1000.0).contains(&rate) => Ok(rate),
        _ => Err("expected a number of clients per second from 0.01 to 1000".to_owned()),
    }
}

/// How long a simulated client stays on its backend, on average.
const CLIENT_STAY: Duration = Duration::from_secs(10);
/// What one client adds to its backend's load, in percent.
const CLIENT_LOAD: f64 = 1.5;
/// The period of each backend's own load wave.
const WAVE_PERIOD: Duration = Duration::from_secs(40);
/// How long a simulated client waits for its answer.
const PICK_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the demo until `interrupt` completes or `--duration` has passed.
pub async fn run(args: DemoArgs, interrupt: impl Future<Output = ()>) -> anyhow::Result<()> {
    let dispatch = DispatchSettings { policy: args.policy, ..DispatchSettings::default() };
    let server =
        Server::bind(ServerConfig { listen: args.listen, dispatch, ..ServerConfig::default() }).await?;
    let dispatcher_addr = server.local_addr().context("cannot read the dispatcher's address")?;
    let admin = bind_dashboard(args.admin_listen, &server).await?;
    let pool = Pool::new(args.backends);
    announce(admin.local_addr(), dispatcher_addr, &pool, args.duration)?;

    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(admin.run(stop.clone().cancelled_owned()));
    for backend in &pool.backends {
        let count = pool.backends.len();
        tasks.spawn(run_backend(dispatcher_addr, Arc::clone(backend), count, stop.clone()));
    }
    tasks.spawn(run_clients(dispatcher_addr, pool, args.clients_per_second, stop.clone()));
    let until = async {
        match args.duration {
            Some(limit) => tokio::select! {
                () = tokio::time::sleep(limit) => tracing::info!(?limit, "demo time is up"),
                () = interrupt => {}
            },
            None => interrupt.await,
        }
        stop.cancel();
    };
    tokio::join!(server.run(stop.clone().cancelled_owned()), until);
    tasks.close();
    tasks.wait().await;
    Ok(())
}

async fn bind_dashboard(addr: SocketAddr, server: &Server) -> anyhow::Result<AdminServer> {
    AdminServer::bind(addr, AdminConfig::default(), server.dispatcher(), server.wire_stats()).await.map_err(
        |error| {
            anyhow::anyhow!(
                "{error}\nthe dashboard port is taken (another loadwise demo or serve?); \
             choose another with --admin-listen 127.0.0.1:0"
            )
        },
    )
}

fn announce(
    dashboard: SocketAddr,
    dispatcher: SocketAddr,
    pool: &Pool,
    limit: Option<Duration>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "loadwise demo: dashboard at http://{dashboard}/")?;
    let (first, last) = (&pool.backends[0].advertise, &pool.backends[pool.backends.len() - 1].advertise);
    writeln!(out, "dispatcher on {dispatcher}; {} simulated backends {first} … {last}", pool.backends.len())?;
    writeln!(out, "(nothing listens on the backends' addresses: they only report load)")?;
    match limit {
        Some(limit) => writeln!(out, "stopping after {}", humantime::format_duration(limit))?,
        None => writeln!(out, "Ctrl-C stops")?,
    }
    out.flush()?;
    Ok(())
}

/// One simulated backend: where it says it is and the clients sent to it.
#[derive(Debug)]
struct SimBackend {
    index: usize,
    advertise: Advertise,
    /// Clients the demo's clients were sent to here, ever.
    clients: AtomicU64,
}

/// Every simulated backend.
#[derive(Debug, Clone)]
struct Pool {
    backends: Vec<Arc<SimBackend>>,
}

impl Pool {
    fn new(count: u8) -> Self {
        let backends = (0..count)
            .map(|index| {
                let advertise = format!("10.0.0.{}:7000", index + 1).parse().expect("a valid demo address");
                Arc::new(SimBackend { index: usize::from(index), advertise, clients: AtomicU64::new(0) })
            })
            .collect();
        Pool { backends }
    }

    fn find(&self, answer: &str) -> Option<&SimBackend> {
        self.backends.iter().map(Arc::as_ref).find(|backend| backend.advertise.to_string() == answer)
    }
}

/// A backend's load: its own wave (each backend at another phase and level) plus
/// the clients it holds, who leave at random after [`CLIENT_STAY`] on average.
#[derive(Debug)]
struct LoadModel {
    backend: Arc<SimBackend>,
    phase: f64,
    base: f64,
    started: Instant,
    /// Clients seen so far, and those still there (a decaying count).
    counted: u64,
    staying: f64,
    last_sample: Instant,
}

impl LoadModel {
    fn new(backend: Arc<SimBackend>, count: usize) -> Self {
        let phase = TAU * backend.index as f64 / count.max(1) as f64;
        let base = 30.0 + 10.0 * (backend.index % 3) as f64;
        let now = Instant::now();
        LoadModel { backend, phase, base, started: now, counted: 0, staying: 0.0, last_sample: now }
    }

    fn sample(&mut self) -> u8 {
        let now = Instant::now();
        let since_last = now.duration_since(self.last_sample).as_secs_f64();
        self.last_sample = now;
        let arrived = self.backend.clients.load(Ordering::Relaxed);
        let new = arrived - self.counted;
        self.counted = arrived;
        self.staying = self.staying * (-since_last / CLIENT_STAY.as_secs_f64()).exp() + new as f64;
        let angle = TAU * now.duration_since(self.started).as_secs_f64() / WAVE_PERIOD.as_secs_f64();
        let wave = self.base + 20.0 * (angle + self.phase).sin();
        (wave + self.staying * CLIENT_LOAD).clamp(0.0, 100.0) as u8
    }
}

async fn run_backend(
    dispatcher: SocketAddr,
    backend: Arc<SimBackend>,
    count: usize,
    stop: CancellationToken,
) {
    let config = AgentConfig::new(dispatcher.to_string(), backend.advertise.clone());
    let mut model = LoadModel::new(Arc::clone(&backend), count);
    let probe = move || -> Result<u8, ProbeError> { Ok(model.sample()) };
    if let Err(error) = loadwise_agent::run(config, probe, stop.cancelled_owned()).await {
        tracing::error!(%error, backend = %backend.advertise, "simulated backend could not start");
    }
}

/// Sends clients at `per_second`, each with a real login, until `stop`.
async fn run_clients(dispatcher: SocketAddr, pool: Pool, per_second: f64, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    let clients = TaskTracker::new();
    let server = dispatcher.to_string();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => break,
        }
        let (server, pool) = (server.clone(), pool.clone());
        clients.spawn(async move {
            match loadwise_client::pick(&server, PICK_TIMEOUT).await {
                Ok(assigned) => {
                    if let Some(backend) = pool.find(&assigned.to_string()) {
                        backend.clients.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(error) => tracing::debug!(%error, "simulated client got no backend"),
            }
        });
    }
    clients.close();
    clients.wait().await;
}
