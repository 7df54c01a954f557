//! What one benchmark run is asked to do: a validated, clap-free settings struct.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use loadwise_protocol::v2::ServiceName;
use loadwise_protocol::v2::auth::Secret;
use loadwise_server::ServerConfig;

/// What the connections send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Logins only: one 12-byte frame out, one 22-byte reply back (v2: a PickRequest
    /// out, a PickReply back). One op is one login (pick).
    Pick,
    /// Heartbeat ingest: each batch is `pipeline` heartbeats followed by one login (v2:
    /// PickRequest), whose reply proves the heartbeats before it were processed. One
    /// op is one confirmed heartbeat.
    Heartbeat,
    /// Every login (pick) is preceded by a heartbeat on the same connection (1:1). One
    /// op is one login (with its heartbeat).
    Mixed,
    /// Connections open and send nothing; fake backends keep heart-beating. For
    /// memory and idle CPU: no ops.
    Idle,
}

impl Mode {
    /// What one op of this mode is, for reports.
    pub fn op_name(self) -> &'static str {
        match self {
            Mode::Pick | Mode::Mixed => "pick",
            Mode::Heartbeat => "heartbeat",
            Mode::Idle => "none",
        }
    }
}

/// The wire protocol spoken (module `bench::frames` for legacy, `bench::frames_v2` for v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The LoadBanceServer protocol of `docs/protocol.md`: logins and 22-byte replies.
    #[default]
    Legacy,
    /// Protocol v2 (`docs/protocol.md`, "Protocol v2"): PickRequests for one service,
    /// PickReplies matched by request id, v2 heartbeats.
    V2,
}

/// The service v2 picks ask for and v2 fake backends serve, unless told otherwise.
pub const DEFAULT_SERVICE: &str = "bench";

/// Which server is measured.
#[derive(Debug, Clone)]
pub enum Target {
    /// A server already running at this address. `pid`, if known, lets the bench
    /// read its CPU time and memory; `None` means "look it up by port".
    Remote { addr: SocketAddr, pid: Option<u32> },
    /// A dispatcher started in this process, on its own runtime threads (so its CPU
    /// time can be told apart from the bench's), with this configuration (its listen
    /// address is replaced by `127.0.0.1:0`).
    Spawn(Box<ServerConfig>),
    /// The built-in no-logic server, started in this process.
    Ceiling,
}

/// When the load stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// Stop sending after this long (replies already owed are still awaited).
    Duration(#[serde(with = "secs")] Duration),
    /// Stop after this many ops in total, over all connections.
    Requests(u64),
}

/// Everything one `loadwise bench` run is told.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The server measured.
    pub target: Target,
    /// Also run the same load against a ceiling server and report the ratio.
    pub ceiling: Option<Target>,
    /// What the client connections send.
    pub mode: Mode,
    /// The wire protocol spoken.
    pub protocol: Protocol,
    /// v2: the service picked from and served by the fake backends.
    pub service: ServiceName,
    /// v2: the dispatcher's shared secret. Fake backends (and clients that send
    /// heartbeats) register with it (Hello, Challenge, Register) before heart-beating;
    /// a dispatcher with a secret signs a ticket into every PickReply.
    pub secret: Option<Secret>,
    /// v2: capacity slots. The fake backends report this many places, none in use,
    /// and grant more clients than a run can pick, answering every heartbeat's
    /// LeaseReport: the service becomes a slot service and picks take the slot path
    /// (each backend may be sent up to this many clients between two of its heartbeats).
    pub slots: Option<u32>,
    /// Client connections (concurrent clients with `connect_per_pick`).
    pub conns: usize,
    /// Requests written together before their replies are awaited.
    pub pipeline: usize,
    /// When the load stops.
    pub stop: Stop,
    /// Fake backends registered on their own connections for the whole run.
    pub backends: usize,
    /// How often each fake backend sends a heartbeat with a new load.
    pub backend_interval: Duration,
    /// Each pick on a new connection: connect, one login, one reply, close.
    pub connect_per_pick: bool,
    /// Open loop: ops per second over all connections, latency measured from each
    /// op's intended send time. `None` is closed loop (send when the reply is in).
    pub rate: Option<f64>,
    /// A reply (or a connection) not complete after this long is a timeout.
    pub timeout: Duration,
    /// Worker threads of in-process servers; `None` is one per CPU.
    pub server_threads: Option<usize>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl BenchConfig {
    /// A closed-loop pick benchmark of `target` with small defaults: 8 connections,
    /// no pipelining, 10 backends, 5 seconds.
    pub fn new(target: Target) -> Self {
        BenchConfig {
            target,
            ceiling: None,
            mode: Mode::Pick,
            protocol: Protocol::Legacy,
            service: ServiceName::new(DEFAULT_SERVICE).expect("the default service name is valid"),
            secret: None,
            slots: None,
            conns: 8,
            pipeline: 1,
            stop: Stop::Duration(Duration::from_secs(5)),
            backends: 10,
            backend_interval: Duration::from_secs(1),
            connect_per_pick: false,
            rate: None,
            timeout: Duration::from_secs(5),
            server_threads: None,
            progress: false,
        }
    }

    /// Rejects settings that cannot produce a meaningful run.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let idle = self.mode == Mode::Idle;
        check(idle || self.conns > 0, "conns", "must be at least 1")?;
        check(self.pipeline > 0, "pipeline", "must be at least 1")?;
        check(!self.timeout.is_zero(), "timeout", "must be greater than zero")?;
        check(!self.backend_interval.is_zero(), "backend-interval", "must be greater than zero")?;
        check(self.server_threads != Some(0), "server-threads", "must be at least 1")?;
        match self.stop {
            Stop::Duration(d) => check(!d.is_zero(), "duration", "must be greater than zero")?,
            Stop::Requests(n) => {
                check(n > 0, "requests", "must be at least 1")?;
                check(!idle, "requests", "idle mode sends no requests; use --duration")?;
            }
        }
        if let Some(rate) = self.rate {
            check(rate.is_finite() && rate > 0.0, "rate", "must be a positive number of ops per second")?;
            check(!idle, "rate", "idle mode sends no requests")?;
        }
        if self.secret.is_some() {
            check(
                self.protocol == Protocol::V2,
                "secret-file",
                "only protocol v2 has a secret; add --protocol v2",
            )?;
        }
        if let Some(capacity) = self.slots {
            check(
                self.protocol == Protocol::V2,
                "slots",
                "only protocol v2 has capacity slots; add --protocol v2",
            )?;
            check(capacity > 0, "slots", "must be at least 1")?;
        }
        if self.connect_per_pick {
            check(self.mode == Mode::Pick, "connect-per-pick", "works with --mode pick only")?;
            check(
                self.pipeline == 1,
                "connect-per-pick",
                "sends one login per connection; use --pipeline 1",
            )?;
        }
        Ok(())
    }
}

/// A setting that cannot work, named as on the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `--{setting}`: {reason}")]
pub struct InvalidSetting {
    /// The flag, without its dashes.
    pub setting: &'static str,
    /// Why it cannot work.
    pub reason: &'static str,
}

fn check(ok: bool, setting: &'static str, reason: &'static str) -> Result<(), InvalidSetting> {
    if ok { Ok(()) } else { Err(InvalidSetting { setting, reason }) }
}

/// Serialises a duration as fractional seconds.
mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// The target's address, resolved from `HOST:PORT` once before the run.
pub async fn resolve(server: &str) -> std::io::Result<SocketAddr> {
    tokio::net::lookup_host(server).await?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("{server} resolves to no address"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BenchConfig {
        BenchConfig::new(Target::Ceiling)
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn bad_settings_are_named() {
        let named = |c: BenchConfig| c.validate().unwrap_err().setting;
        assert_eq!(named(BenchConfig { conns: 0, ..config() }), "conns");
        assert_eq!(named(BenchConfig { pipeline: 0, ..config() }), "pipeline");
        assert_eq!(named(BenchConfig { rate: Some(0.0), ..config() }), "rate");
        assert_eq!(named(BenchConfig { stop: Stop::Requests(0), ..config() }), "requests");
        let cpp = BenchConfig { connect_per_pick: true, mode: Mode::Heartbeat, ..config() };
        assert_eq!(named(cpp), "connect-per-pick");
        let cpp = BenchConfig { connect_per_pick: true, pipeline: 4, ..config() };
        assert_eq!(named(cpp), "connect-per-pick");
        let idle = BenchConfig { mode: Mode::Idle, stop: Stop::Requests(5), ..config() };
        assert_eq!(named(idle), "requests");
        let secret = Some(Secret::new(*b"0123456789abcdef").unwrap());
        assert_eq!(named(BenchConfig { secret: secret.clone(), ..config() }), "secret-file");
        assert_eq!(BenchConfig { secret, protocol: Protocol::V2, ..config() }.validate(), Ok(()));
        assert_eq!(named(BenchConfig { slots: Some(100), ..config() }), "slots");
        assert_eq!(named(BenchConfig { slots: Some(0), protocol: Protocol::V2, ..config() }), "slots");
        assert_eq!(BenchConfig { slots: Some(1), protocol: Protocol::V2, ..config() }.validate(), Ok(()));
    }

    #[test]
    fn v2_takes_every_mode_and_loop() {
        for mode in [Mode::Pick, Mode::Heartbeat, Mode::Mixed] {
            for pipeline in [1, 16] {
                let v2 =
                    BenchConfig { protocol: Protocol::V2, mode, pipeline, rate: Some(100.0), ..config() };
                assert_eq!(v2.validate(), Ok(()));
            }
        }
        let idle = BenchConfig { protocol: Protocol::V2, mode: Mode::Idle, ..config() };
        assert_eq!(idle.validate(), Ok(()));
        let cpp = BenchConfig { protocol: Protocol::V2, connect_per_pick: true, ..config() };
        assert_eq!(cpp.validate(), Ok(()));
    }

    #[test]
    fn idle_mode_may_have_no_connections() {
        assert_eq!(BenchConfig { mode: Mode::Idle, conns: 0, ..config() }.validate(), Ok(()));
    }
}
