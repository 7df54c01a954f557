//! The results of a run, as one serialisable value and as text for people.

use std::fmt;

use serde::Serialize;

use super::backends::BackendsReport;
use super::config::{BenchConfig, Mode, Protocol, Stop};
use super::latency::LatencySummary;
use super::outcome::Tally;
use loadwise_core::dispatcher::StatsSnapshot;
use loadwise_server::stats::WireSnapshot;

/// Everything a `loadwise bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The settings of the run.
    pub settings: Settings,
    /// The server under test.
    pub target: RunReport,
    /// The same load against the ceiling server, if asked for.
    pub ceiling: Option<RunReport>,
    /// Target over ceiling, when both ran.
    pub ratio: Option<Ratio>,
}

/// The settings a run used, echoed for the record: the [`BenchConfig`] fields of the
/// same names, durations in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub mode: Mode,
    pub protocol: Protocol,
    /// v2: the service picked from; `null` for legacy.
    pub service: Option<String>,
    /// v2: whether backends registered with a secret (and picks carry tickets).
    pub secret: bool,
    /// v2: each fake backend's capacity slots; `null` without slots.
    pub slots: Option<u32>,
    pub conns: usize,
    pub pipeline: usize,
    pub stop: Stop,
    pub backends: usize,
    pub backend_interval_secs: f64,
    pub connect_per_pick: bool,
    /// Open-loop ops per second; `null` for a closed loop.
    pub rate: Option<f64>,
    pub timeout_secs: f64,
}

impl Settings {
    /// The settings of `config`.
    pub fn of(config: &BenchConfig) -> Self {
        Settings {
            mode: config.mode,
            protocol: config.protocol,
            service: (config.protocol == Protocol::V2).then(|| config.service.to_string()),
            secret: config.secret.is_some(),
            slots: config.slots,
            conns: config.conns,
            pipeline: config.pipeline,
            stop: config.stop,
            backends: config.backends,
            backend_interval_secs: config.backend_interval.as_secs_f64(),
            connect_per_pick: config.connect_per_pick,
            rate: config.rate,
            timeout_secs: config.timeout.as_secs_f64(),
        }
    }
}

/// What one server did under the load.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// What was measured: `dispatcher (in-process)`, `ceiling (in-process)`, or
    /// `server at ADDR`.
    pub server: String,
    /// Where it listened.
    pub addr: String,
    /// From the start of the load until the last reply was in.
    pub elapsed_secs: f64,
    /// What one op is: `pick` (a login answered with a backend) or `heartbeat` (a
    /// heartbeat confirmed by the login after it).
    pub op: &'static str,
    /// Ops that succeeded.
    pub ops: u64,
    /// Ops that succeeded, per second of `elapsed_secs`.
    pub ops_per_sec: f64,
    /// Requests sent and their outcomes, errors by kind.
    pub requests: Tally,
    /// Latency of each login reply (heartbeat mode: of the login closing each batch).
    pub latency: LatencySummary,
    /// What the fake backends did.
    pub backends: BackendsReport,
    /// CPU time of the bench and the server during the load.
    pub cpu: CpuReport,
    /// The server's resident memory.
    pub memory: MemoryReport,
    /// The in-process dispatcher's own counters at the end of the run.
    pub server_stats: Option<ServerStats>,
}

/// CPU time spent during the load.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuReport {
    /// The whole bench process (with in-process servers, their threads included).
    pub process_secs: Option<f64>,
    /// The bench's own work: the process minus any in-process server threads.
    pub bench_secs: Option<f64>,
    /// `bench_secs` per successful op, in microseconds.
    pub bench_us_per_op: Option<f64>,
    /// Where the server's figure comes from: `in-process threads NAME*`, `pid N`,
    /// or `unknown`.
    pub server_source: String,
    /// The server's CPU time during the load.
    pub server_secs: Option<f64>,
    /// `server_secs` per successful op, in microseconds.
    pub server_us_per_op: Option<f64>,
}

/// The server's resident memory (for an in-process server, the whole bench
/// process's), around the setup of backends and connections.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryReport {
    /// Whose memory: `pid N`, or the bench process for an in-process server.
    pub source: String,
    /// Before the fake backends and client connections were set up.
    pub rss_before_kib: Option<u64>,
    /// After every backend registered and every client connection opened.
    pub rss_after_setup_kib: Option<u64>,
    /// After the load.
    pub rss_end_kib: Option<u64>,
    /// Connections opened during setup (backends plus client connections).
    pub setup_connections: u64,
}

impl MemoryReport {
    /// Growth over setup per connection opened, in bytes.
    pub fn setup_bytes_per_connection(&self) -> Option<f64> {
        let grown = self.rss_after_setup_kib?.checked_sub(self.rss_before_kib?)?;
        (self.setup_connections > 0).then(|| grown as f64 * 1024.0 / self.setup_connections as f64)
    }
}

/// Target over ceiling.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratio {
    /// Ops per second of the target over the ceiling's (1.0: as fast as no logic).
    pub throughput: f64,
    /// Server CPU per op of the target over the ceiling's (1.0: no extra cost).
    pub server_cpu_per_op: Option<f64>,
    /// The throughput ratio to expect when bench and server have the CPU to
    /// themselves and use all of it: the ceiling's CPU per op (bench plus server)
    /// over the target's. Unlike `throughput`, it does not move with other load on
    /// a shared machine.
    pub cpu_bound_throughput: Option<f64>,
}

impl Ratio {
    /// `target` over `ceiling`.
    pub fn of(target: &RunReport, ceiling: &RunReport) -> Self {
        let cpu = target.cpu.server_us_per_op.zip(ceiling.cpu.server_us_per_op);
        let total = |cpu: &CpuReport| Some(cpu.server_us_per_op? + cpu.bench_us_per_op?);
        Ratio {
            throughput: target.ops_per_sec / ceiling.ops_per_sec,
            server_cpu_per_op: cpu.map(|(t, c)| t / c),
            cpu_bound_throughput: total(&ceiling.cpu).zip(total(&target.cpu)).map(|(c, t)| c / t),
        }
    }
}

/// A serialisable copy of the dispatcher's and the server's counters (see
/// [`StatsSnapshot`] and [`WireSnapshot`] for their meaning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ServerStats {
    pub heartbeats: u64,
    pub refused_heartbeats: u64,
    pub logins_answered: u64,
    pub logins_no_backend: u64,
    pub logins_clock_skew: u64,
    pub protocol_errors: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub v2_registrations: u64,
    /// v2 refusals sent, every code together (Error frames and failed PickReplies).
    pub v2_refusals: u64,
}

impl From<(StatsSnapshot, WireSnapshot)> for ServerStats {
    fn from((s, wire): (StatsSnapshot, WireSnapshot)) -> Self {
        ServerStats {
            heartbeats: s.heartbeats,
            refused_heartbeats: s.refused_heartbeats,
            logins_answered: s.logins_answered,
            logins_no_backend: s.logins_no_backend,
            logins_clock_skew: s.logins_clock_skew,
            protocol_errors: wire.protocol_errors,
            connections_accepted: wire.connections_accepted,
            connections_refused: wire.connections_refused,
            v2_registrations: wire.v2_registrations,
            v2_refusals: wire.v2_refusals.iter().sum(),
        }
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.settings)?;
        write!(f, "{}", self.target)?;
        if let Some(ceiling) = &self.ceiling {
            write!(f, "{ceiling}")?;
        }
        if let Some(ratio) = &self.ratio {
            let known = |v: Option<f64>| v.map_or_else(|| "unknown".to_owned(), |v| format!("{v:.3}"));
            writeln!(
                f,
                "target / ceiling: throughput {:.3}, server CPU per op {}, CPU-bound throughput {}",
                ratio.throughput,
                known(ratio.server_cpu_per_op),
                known(ratio.cpu_bound_throughput)
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = format!("{:?}", self.mode).to_lowercase();
        write!(
            f,
            "mode {mode}, {} conns, pipeline {}, {} backends",
            self.conns, self.pipeline, self.backends
        )?;
        if let Some(service) = &self.service {
            let secret = if self.secret { " with a secret" } else { "" };
            write!(f, ", protocol v2 (service {service}){secret}")?;
        }
        if let Some(capacity) = self.slots {
            write!(f, ", slot backends of {capacity} places")?;
        }
        if self.connect_per_pick {
            write!(f, ", connect per pick")?;
        }
        match self.rate {
            Some(rate) => write!(f, ", open loop at {rate} ops/s")?,
            None => write!(f, ", closed loop")?,
        }
        match self.stop {
            Stop::Duration(d) => write!(f, ", for {:.1} s", d.as_secs_f64()),
            Stop::Requests(n) => write!(f, ", {n} ops"),
        }
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} at {}", self.server, self.addr)?;
        let rate = format!("{:.0}/s", self.ops_per_sec);
        writeln!(
            f,
            "  {:<10} {} {}s in {:.3} s = {rate}",
            "throughput", self.ops, self.op, self.elapsed_secs
        )?;
        let r = &self.requests;
        writeln!(
            f,
            "  {:<10} logins {} sent, {} ok; heartbeats {} sent, {} confirmed",
            "requests", r.logins_sent, r.logins_ok, r.heartbeats_sent, r.heartbeats_confirmed
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "  {:<10} p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs ({} samples)",
            "latency", l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.samples
        )?;
        writeln!(f, "  {:<10} {}", "errors", errors_text(r))?;
        let b = &self.backends;
        write!(
            f,
            "  {:<10} {} registered, {} heartbeats, {} lost",
            "backends", b.registered, b.heartbeats_sent, b.lost
        )?;
        if b.lease_reports > 0 {
            write!(f, ", {} lease reports read", b.lease_reports)?;
        }
        writeln!(f)?;
        writeln!(f, "  {:<10} {}", "cpu", self.cpu.text(self.op))?;
        writeln!(f, "  {:<10} {}", "memory", self.memory.text())
    }
}

fn errors_text(tally: &Tally) -> String {
    let kinds: Vec<String> =
        tally.errors.kinds().iter().filter(|(_, n)| *n > 0).map(|(name, n)| format!("{name} {n}")).collect();
    if kinds.is_empty() { "none".to_owned() } else { kinds.join(", ") }
}

fn secs(value: Option<f64>) -> String {
    value.map_or_else(|| "unknown".to_owned(), |s| format!("{s:.2} s"))
}

fn per_op(value: Option<f64>, op: &str) -> String {
    value.map_or_else(String::new, |us| format!(" ({us:.2} µs/{op})"))
}

impl CpuReport {
    fn text(&self, op: &str) -> String {
        format!(
            "bench {}{}; server {}{} [{}]",
            secs(self.bench_secs),
            per_op(self.bench_us_per_op, op),
            secs(self.server_secs),
            per_op(self.server_us_per_op, op),
            self.server_source
        )
    }
}

impl MemoryReport {
    fn text(&self) -> String {
        let kib = |v: Option<u64>| v.map_or_else(|| "unknown".to_owned(), |k| format!("{k} KiB"));
        let mut text = format!(
            "rss {} before setup, {} after ({} connections), {} at the end [{}]",
            kib(self.rss_before_kib),
            kib(self.rss_after_setup_kib),
            self.setup_connections,
            kib(self.rss_end_kib),
            self.source
        );
        if let Some(per) = self.setup_bytes_per_connection() {
            text.push_str(&format!("; {per:.0} bytes per setup connection"));
        }
        text
    }
}
