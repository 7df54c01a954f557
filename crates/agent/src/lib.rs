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
//! # Layout
//!
//! | module | its one job |
//! |---|---|
//! | crate root | re-exports only |
//! | `config` | the agent's settings ([`AgentConfig`], [`Advertise`], [`Protocol`]) and their checks |
//! | `sampler` | the run loop ([`run`]): one sampler, a link per dispatcher |
//! | `sample` | what a sample holds, why measuring failed, what every link sends next |
//! | `probe` | the probes that take a sample (memory, host, metrics file) |
//! | `link` | one dispatcher: connect, send heartbeats, reconnect with backoff |
//! | `replicas` | the links: one per `--server`, and one per replica found in DNS as the set changes |
//! | `v2` | a v2 session: hello, the authenticated registration, heartbeats |
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
mod config;
pub mod cpustat;
mod link;
pub mod meminfo;
pub mod metrics_file;
mod probe;
mod replicas;
mod sample;
mod sampler;
mod session_end;
mod streak;
mod v2;

pub use config::{
    Advertise, AdvertiseError, AgentConfig, DEFAULT_SERVICE, MAX_SERVERS, Protocol, default_backend_id,
};
pub use loadwise_client::discover::{DiscoveryConfig, DnsSource};
pub use loadwise_protocol::v2::auth::{MIN_SECRET_LEN, Secret};
pub use probe::{Extra, HostProbe, LoadProbe, MemoryProbe, MetricsProbe, apply_metrics_text};
pub use sample::{ProbeError, Sample};
pub use sampler::{run, run_with_state};
