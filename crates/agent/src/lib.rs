//! loadwise-agent: the backend side. Reports this backend's address and load to every
//! configured dispatcher, one connection each, and keeps each connection up on its own.
//!
//! One sampler measures the load every interval and hands the sample to every
//! dispatcher link (the `link` module); a link that is down or stalled never delays the
//! others. The first heartbeat on each connection goes out as soon as it is up, so a
//! restarted dispatcher learns about the backend at once.
//!
//! Links speak the legacy protocol (memory only) or v2 ([`Protocol`]): a service, a
//! stable id, every metric of a [`Sample`], a weight, the drain state, and with a
//! [`Secret`] an authenticated registration (the `v2` module). Either may travel
//! over TLS ([`AgentConfig::tls`]) to a dispatcher's TLS listener.
//!
//! The agent can check the backend itself ([`AgentConfig::health_check`]: a TCP
//! connect, or with the `http-check` feature an HTTP GET), and a library user can say
//! the backend is unhealthy ([`run_with_health`]). An unhealthy backend stays listed
//! in v2 but gets no clients; a legacy link disconnects until it is healthy again.
//!
//! # Layout
//!
//! | module | its one job |
//! |---|---|
//! | crate root | re-exports only |
//! | `config` | the agent's settings ([`AgentConfig`], [`Advertise`], [`Protocol`]) and their checks |
//! | `sampler` | the run loop ([`run`]): one sampler, a link per dispatcher, the health checks |
//! | `check_spec` | what the health check probes and how often ([`HealthCheck`], [`CheckTarget`]) |
//! | `check` | one health check: a TCP connect, or an HTTP GET (feature `http-check`) |
//! | `checker` | the health check loop: a check every interval, the verdict published |
//! | `rise_fall` | the verdict from results in a row ([`RiseFall`]): pure |
//! | `sample` | what a sample holds, why measuring failed, what every link sends next |
//! | `probe` | the probes that take a sample (memory, host, metrics file) |
//! | `link` | one dispatcher: connect, send heartbeats, reconnect with backoff |
//! | `replicas` | the links: one per `--server`, and one per replica found in DNS as the set changes |
//! | `v2` | a v2 session: hello, the authenticated registration, heartbeats |
//! | `places` | the backend's slots shared by its links and the backend itself ([`Places`]) |
//! | [`slots`] | capacity slots: free places, the leases each dispatcher gets with its heartbeats, promises and their redemption (pure) |
//! | `session_end` | why one connection to a dispatcher ended, in either protocol |
//! | [`meminfo`] | memory use in percent from `/proc/meminfo` text |
//! | [`metrics_file`] | the backend's metrics file: good lines kept, problems warned about once, 64 KiB read at most |
//! | [`cgroup`] | memory use in percent of a cgroup v2 limit, for backends in containers |
//! | [`cpustat`] | CPU use in percent from two readings of `/proc/stat` |
//! | [`backoff`] | reconnect delays with jitter from an injected RNG |
//! | `streak` | a lasting failure logged on the 1st, 2nd, 4th, 8th... occurrence |
//!
//! Dialing, client TLS and following DNS names ([`DiscoveryConfig`]) come from
//! `loadwise-client`.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod cgroup;
mod check;
mod check_spec;
mod checker;
mod config;
pub mod cpustat;
mod link;
pub mod meminfo;
pub mod metrics_file;
mod places;
mod probe;
mod replicas;
mod rise_fall;
mod sample;
mod sampler;
mod session_end;
pub mod slots;
mod streak;
mod v2;

pub use check_spec::{
    CheckAddr, CheckTarget, CheckTargetError, DEFAULT_CHECK_TIMEOUT, HealthCheck, MAX_CHECK_INTERVAL,
    MAX_RISE_FALL, MIN_CHECK_INTERVAL,
};
pub use config::{
    Advertise, AdvertiseError, AgentConfig, DEFAULT_SERVICE, MAX_SERVERS, Protocol, default_backend_id,
};
pub use loadwise_client::discover::{DiscoveryConfig, DnsSource};
pub use loadwise_protocol::v2::Health;
pub use loadwise_protocol::v2::auth::{MIN_SECRET_LEN, Secret};
pub use places::{DEFAULT_PROMISE_LIFETIME, MAX_CAPACITY, MAX_PROMISE_LIFETIME, Places, TOP_UP_FRACTION};
pub use probe::{Extra, HostProbe, LoadProbe, MemoryProbe, MetricsProbe, apply_metrics_text};
pub use rise_fall::RiseFall;
pub use sample::{ProbeError, Sample};
pub use sampler::{ARRIVED_METRIC, IN_USE_METRIC, run, run_with_health, run_with_state};
