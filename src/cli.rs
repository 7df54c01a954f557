//! Command-line arguments of the `loadwise` binary (clap derive; doc comments are the help).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadwise::ConnectionLimits;
use loadwise::agent::{Advertise, AgentConfig};
use loadwise::dispatcher::DispatchSettings;
use loadwise::selection::{LoadSettings, Policy};
use loadwise::server::{DEFAULT_LISTEN, ServerConfig};

pub mod bench;
pub mod simulate;

/// A load-aware dispatcher: sends each new client to the backend with the most room.
#[derive(Debug, Parser)]
#[command(name = "loadwise", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the dispatcher: accept heartbeats from backends and answer client logins.
    Serve(ServeArgs),
    /// Run beside a backend: report its address and memory use to a dispatcher.
    Agent(AgentArgs),
    /// Ask a dispatcher for a backend and print its IP:PORT.
    Pick(PickArgs),
    /// Measure a dispatcher: throughput and latency of picks and heartbeats.
    Bench(bench::BenchArgs),
    /// Compare the selection policies on a simulated pool described by a scenario file.
    Simulate(simulate::SimulateArgs),
}

fn duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on for backends and clients.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Remove a backend that has sent no heartbeat for this long.
    #[arg(long, default_value = "3s", value_parser = duration)]
    pub ttl: Duration,
    /// Answer a login with the error reply when its timestamp is further than this
    /// from the dispatcher's clock.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub max_clock_skew: Duration,
    /// Close a connection that holds an incomplete frame for this long.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub frame_timeout: Duration,
    /// Close a connection that sends nothing for this long; 0 keeps idle
    /// connections open.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// Close a connection whose peer does not read its replies for this long.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub write_timeout: Duration,
    /// Most connections open at once; further ones are closed as they arrive.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Most backends registered at once; heartbeats of further ones are refused.
    #[arg(long, default_value_t = 10_000)]
    pub max_backends: usize,
    /// How to choose a backend: least-loaded (lowest report plus the clients sent
    /// since), p2c (better of two at random), round-robin (ignores load), or
    /// original (lowest report only, as the old server did; for comparison).
    #[arg(long, default_value = "least-loaded")]
    pub policy: Policy,
    /// For this long after a backend registers, the clients sent to it count extra
    /// (up to 10 times), so a fresh server is not flooded; 0 turns it off.
    #[arg(long, default_value = "3s", value_parser = duration)]
    pub slow_start: Duration,
    /// The cost of one client in percent of a backend's load, assumed until its
    /// heartbeats show the real figure.
    #[arg(long, default_value_t = LoadSettings::default().prior_cost)]
    pub prior_cost: f64,
    /// The smallest cost of one client (percent) that learning may settle on.
    #[arg(long, default_value_t = LoadSettings::default().min_cost)]
    pub min_cost: f64,
    /// The largest cost of one client (percent) that learning may settle on.
    #[arg(long, default_value_t = LoadSettings::default().max_cost)]
    pub max_cost: f64,
    /// Longest frame accepted, in bytes (23 to 65535); longer ones close the connection.
    #[arg(long, default_value_t = 65_535)]
    pub max_frame_len: u16,
    /// On SIGINT/SIGTERM, how long to let connections finish before closing them.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub shutdown_grace: Duration,
}

impl ServeArgs {
    pub fn into_config(self) -> ServerConfig {
        ServerConfig {
            listen: self.listen,
            dispatch: DispatchSettings {
                ttl: self.ttl,
                max_clock_skew: self.max_clock_skew,
                max_backends: self.max_backends,
                policy: self.policy,
                load: LoadSettings {
                    slow_start: self.slow_start,
                    prior_cost: self.prior_cost,
                    min_cost: self.min_cost,
                    max_cost: self.max_cost,
                    ..LoadSettings::default()
                },
            },
            connection: ConnectionLimits {
                frame_timeout: self.frame_timeout,
                idle_timeout: (!self.idle_timeout.is_zero()).then_some(self.idle_timeout),
                write_timeout: self.write_timeout,
                max_frame_len: self.max_frame_len,
            },
            max_connections: self.max_connections,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The dispatcher, as HOST:PORT.
    #[arg(long)]
    pub server: String,
    /// The address clients should connect to, as IP:PORT (the IP at most 15 characters).
    #[arg(long)]
    pub advertise: Advertise,
    /// Time between heartbeats.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub interval: Duration,
    /// How long one connection attempt may take.
    #[arg(long, default_value = "3s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Longest wait between reconnect attempts (they start at 100ms and double).
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub max_backoff: Duration,
    /// Read memory statistics from this file instead of /proc/meminfo.
    #[arg(long, default_value = loadwise::meminfo::PROC_MEMINFO, hide = true)]
    pub meminfo: PathBuf,
}

impl AgentArgs {
    pub fn to_config(&self) -> AgentConfig {
        AgentConfig {
            interval: self.interval,
            connect_timeout: self.connect_timeout,
            max_backoff: self.max_backoff,
            ..AgentConfig::new(self.server.clone(), self.advertise)
        }
    }
}

#[derive(Debug, Args)]
pub struct PickArgs {
    /// The dispatcher, as HOST:PORT.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub server: String,
    /// Give up if no answer arrives within this time.
    #[arg(long, default_value = "3s", value_parser = duration)]
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults_match_the_library_defaults() {
        let cli = Cli::try_parse_from(["loadwise", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert_eq!(args.into_config(), ServerConfig::default());
    }

    #[test]
    fn agent_defaults_match_the_library_defaults() {
        let cli =
            Cli::try_parse_from(["loadwise", "agent", "--server", "h:1", "--advertise", "10.0.0.2:7000"])
                .unwrap();
        let Command::Agent(args) = cli.command else { panic!("not agent") };
        assert_eq!(args.to_config(), AgentConfig::new("h:1", "10.0.0.2:7000".parse().unwrap()));
    }

    #[test]
    fn agent_refuses_a_long_ip() {
        let error = Cli::try_parse_from([
            "loadwise",
            "agent",
            "--server",
            "h:1",
            "--advertise",
            "1234567890.123456:1",
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("at most 15"), "{error}");
    }
}
