//! One measured run against one server: setup, load, collection of the figures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::backends::FakeBackends;
use super::config::{BenchConfig, Mode, Stop};
use super::conn::{connect_many, connect_once};
use super::control::Control;
use super::error::BenchError;
use super::latency::LatencySink;
use super::outcome::{ErrorKind, Tally};
use super::plan::LoadPlan;
use super::progress::Progress;
use super::report::{CpuReport, MemoryReport, RunReport};
use super::wire::Wire;
use super::{churn, closed, cpu, open, register};

/// Connection attempts in progress at once while opening the client connections.
const PARALLEL_CONNECTS: usize = 256;

/// In idle mode the server may still be accepting the last connections when the
/// client side sees them open. Measuring starts once its CPU time grew by less than
/// `SETTLED_CPU` over `SETTLE_STEP`, or after `SETTLE_MAX` (a fixed `SETTLE_STEP`
/// twice when its CPU time cannot be read).
const SETTLE_STEP: Duration = Duration::from_millis(500);
const SETTLED_CPU: Duration = Duration::from_millis(10);
const SETTLE_MAX: Duration = Duration::from_secs(10);

/// Where the server's CPU time and memory can be read.
#[derive(Debug, Clone)]
pub enum ServerProbe {
    /// In this process, on runtime threads with this name prefix.
    Threads(&'static str),
    /// Another local process.
    Pid(u32),
    /// Not readable (remote, or another user's process).
    Unknown,
}

impl ServerProbe {
    fn cpu(&self) -> Option<Duration> {
        match self {
            ServerProbe::Threads(prefix) => cpu::threads_cpu(prefix),
            ServerProbe::Pid(pid) => cpu::process_cpu(Some(*pid)),
            ServerProbe::Unknown => None,
        }
    }

    fn rss_kib(&self) -> Option<u64> {
        match self {
            ServerProbe::Threads(_) => cpu::process_rss_kib(None),
            ServerProbe::Pid(pid) => cpu::process_rss_kib(Some(*pid)),
            ServerProbe::Unknown => None,
        }
    }

    fn cpu_source(&self) -> String {
        match self {
            ServerProbe::Threads(prefix) => format!("in-process threads {prefix}*"),
            ServerProbe::Pid(pid) => format!("pid {pid}"),
            ServerProbe::Unknown => "unknown".to_owned(),
        }
    }

    fn memory_source(&self) -> String {
        match self {
            ServerProbe::Threads(_) => "in-process: the whole bench process".to_owned(),
            other => other.cpu_source(),
        }
    }
}

/// The server one run measures.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub label: String,
    pub addr: SocketAddr,
    pub probe: ServerProbe,
}

/// CPU readings at one moment.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    process: Option<Duration>,
    server: Option<Duration>,
}

impl CpuMark {
    fn take(probe: &ServerProbe) -> Self {
        CpuMark { process: cpu::process_cpu(None), server: probe.cpu() }
    }
}

/// Runs the configured load against `endpoint` and reports what it measured.
pub async fn measure(config: &BenchConfig, endpoint: &Endpoint) -> Result<RunReport, BenchError> {
    let addr = endpoint.addr;
    connect_once(addr, config.timeout).await.map_err(|kind| BenchError::Unreachable { addr, kind })?;
    let rss_before = endpoint.probe.rss_kib();
    let wire = Wire::of(config);
    let backends = FakeBackends::start(addr, &wire, config.backends, config.backend_interval, config.timeout)
        .await
        .map_err(|source| BenchError::Backends { addr, source })?;
    let (streams, setup_tally) = open_connections(config, addr, &wire).await;
    if config.mode == Mode::Idle && config.conns > 0 {
        settle(&endpoint.probe).await;
    }
    let rss_after_setup = endpoint.probe.rss_kib();

    let before = CpuMark::take(&endpoint.probe);
    let plan = Arc::new(plan(config, addr, wire));
    let progress = Progress::start(config.progress, &endpoint.label, config.stop, &plan);
    let (mut tally, held) = drive(config, &plan, streams).await;
    let elapsed = plan.start.elapsed();
    let after = CpuMark::take(&endpoint.probe);
    let rss_end = endpoint.probe.rss_kib();
    // Closing idle connections makes the server work: only after the readings.
    drop(held);
    progress.finish().await;

    tally.merge(&setup_tally);
    let backends = backends.stop().await;
    let ops = match config.mode {
        Mode::Heartbeat => tally.heartbeats_confirmed,
        _ => tally.logins_ok,
    };
    let memory = MemoryReport {
        source: endpoint.probe.memory_source(),
        rss_before_kib: rss_before,
        rss_after_setup_kib: rss_after_setup,
        rss_end_kib: rss_end,
        setup_connections: backends.registered + setup_connections(config) as u64,
    };
    Ok(RunReport {
        server: endpoint.label.clone(),
        addr: addr.to_string(),
        elapsed_secs: elapsed.as_secs_f64(),
        op: config.mode.op_name(),
        ops,
        ops_per_sec: ops as f64 / elapsed.as_secs_f64(),
        requests: tally,
        latency: plan.latency.summary(),
        backends,
        cpu: cpu_report(&endpoint.probe, before, after, ops),
        memory,
        server_stats: None,
    })
}

/// The plan of a load that starts now.
fn plan(config: &BenchConfig, addr: SocketAddr, wire: Wire) -> LoadPlan {
    // Each worker's share of the rate, in batches of `pipeline` ops.
    let batch_interval = config.rate.map(|rate| {
        let batches_per_sec = rate / config.pipeline as f64 / config.conns.max(1) as f64;
        Duration::from_secs_f64(1.0 / batches_per_sec)
    });
    LoadPlan {
        addr,
        wire,
        mode: config.mode,
        pipeline: config.pipeline,
        timeout: config.timeout,
        conns: config.conns,
        batch_interval,
        first_address: config.backends,
        control: Control::new(config.stop),
        latency: LatencySink::default(),
        start: Instant::now(),
    }
}

/// Client connections opened before the load starts (none when connecting per pick).
fn setup_connections(config: &BenchConfig) -> usize {
    if config.connect_per_pick { 0 } else { config.conns }
}

/// Opens the client connections, registered if their heartbeats need it (as backends
/// after the fake ones, like the workers' heartbeats); failures are counted and the
/// worker retries.
async fn open_connections(
    config: &BenchConfig,
    addr: SocketAddr,
    wire: &Wire,
) -> (Vec<Option<TcpStream>>, Tally) {
    let mut tally = Tally::default();
    let n = setup_connections(config);
    let mut streams: Vec<Option<TcpStream>> = connect_many(addr, n, config.timeout, PARALLEL_CONNECTS)
        .await
        .into_iter()
        .map(|result| result.map_err(|kind: ErrorKind| tally.errors.add(kind, 1)).ok())
        .collect();
    if let Some((secret, service)) = wire.client_registration(config.mode) {
        let mut registering = JoinSet::new();
        for (index, slot) in streams.iter_mut().enumerate() {
            let Some(mut stream) = slot.take() else { continue };
            let (secret, service, timeout) = (secret.clone(), service.clone(), config.timeout);
            let id = (config.backends + index) as u64;
            registering.spawn(async move {
                let registered = register::client(&mut stream, &secret, &service, id, timeout).await;
                (index, registered.map(|()| stream))
            });
        }
        while let Some(joined) = registering.join_next().await {
            match joined.expect("a registration task does not panic") {
                (index, Ok(stream)) => streams[index] = Some(stream),
                (_, Err(kind)) => tally.errors.add(kind, 1),
            }
        }
    }
    (streams, tally)
}

/// What a worker hands back: its counts, and the connection it still holds (idle
/// workers keep theirs open until the run's figures are read).
type Finished = (Tally, Option<TcpStream>);

/// Starts one worker per connection, stops sending at the deadline, and sums up
/// what every worker counted once all have finished.
async fn drive(
    config: &BenchConfig,
    plan: &Arc<LoadPlan>,
    streams: Vec<Option<TcpStream>>,
) -> (Tally, Vec<TcpStream>) {
    let mut workers: JoinSet<Finished> = JoinSet::new();
    if config.connect_per_pick {
        for index in 0..config.conns {
            let plan = Arc::clone(plan);
            workers.spawn(async move { (churn::run(plan, index).await, None) });
        }
    } else {
        for (index, stream) in streams.into_iter().enumerate() {
            let plan = Arc::clone(plan);
            match (config.mode, config.rate) {
                (Mode::Idle, _) => workers.spawn(idle(plan, stream)),
                (_, Some(_)) => workers
                    .spawn(async move { (open::run(plan, index, stream, Tally::default()).await, None) }),
                (_, None) => workers
                    .spawn(async move { (closed::run(plan, index, stream, Tally::default()).await, None) }),
            };
        }
    }
    let had_workers = !workers.is_empty();
    let collect = async {
        let (mut total, mut held) = (Tally::default(), Vec::new());
        while let Some(joined) = workers.join_next().await {
            let (tally, stream) = joined.expect("a bench worker does not panic");
            total.merge(&tally);
            held.extend(stream);
        }
        // Workers can all give up before the deadline (the target went away).
        // Without any (idle mode with no connections), the deadline alone ends the run.
        if had_workers {
            plan.control.stop();
        }
        (total, held)
    };
    let deadline = async {
        match config.stop {
            Stop::Duration(d) => plan.control.run_deadline(plan.start + d).await,
            Stop::Requests(_) => plan.control.stopped().await,
        }
    };
    tokio::join!(collect, deadline).0
}

/// Waits until the server has finished accepting the setup's connections.
async fn settle(probe: &ServerProbe) {
    let deadline = Instant::now() + SETTLE_MAX;
    let Some(mut before) = probe.cpu() else {
        tokio::time::sleep(SETTLE_STEP * 2).await;
        return;
    };
    while Instant::now() < deadline {
        tokio::time::sleep(SETTLE_STEP).await;
        let Some(now) = probe.cpu() else { return };
        if now.saturating_sub(before) < SETTLED_CPU {
            return;
        }
        before = now;
    }
}

/// An idle client: holds its connection open, silent, until the run ends, and
/// hands it back to be closed once the figures are read.
async fn idle(plan: Arc<LoadPlan>, stream: Option<TcpStream>) -> Finished {
    plan.control.stopped().await;
    (Tally::default(), stream)
}

fn cpu_report(probe: &ServerProbe, before: CpuMark, after: CpuMark, ops: u64) -> CpuReport {
    let delta = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?).as_secs_f64());
    let process = delta(before.process, after.process);
    let server = delta(before.server, after.server);
    let bench = match probe {
        ServerProbe::Threads(_) => process.zip(server).map(|(p, s)| (p - s).max(0.0)),
        _ => process,
    };
    let per_op = |secs: Option<f64>| secs.filter(|_| ops > 0).map(|s| s * 1e6 / ops as f64);
    CpuReport {
        process_secs: process,
        bench_secs: bench,
        bench_us_per_op: per_op(bench),
        server_source: probe.cpu_source(),
        server_secs: server,
        server_us_per_op: per_op(server),
    }
}
