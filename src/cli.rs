//! Command-line arguments of the `loadwise` binary (clap derive; doc comments are the help).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadwise::ConnectionLimits;
use loadwise::agent::{Advertise, AgentConfig};
use loadwise::dispatcher::DispatchSettings;
use loadwise::server::{DEFAULT_LISTEN, ServerConfig};

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
