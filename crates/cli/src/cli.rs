//! Command-line arguments of the `loadwise` binary (clap derive; doc comments are the help).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};
use loadwise_agent::{Advertise, AgentConfig, Protocol, Secret};
use loadwise_cli::settings::{
    AdminLayer, AdminListen, CATALOG, Layer, ServiceLayer, ServiceScoring, Settings, Sources, TlsListenAddr,
};
use loadwise_client::FailoverConfig;
use loadwise_client::tls::ClientTls;
use loadwise_core::scoring::Scoring;
use loadwise_core::selection::Policy;
use loadwise_protocol::v2::ServiceName;
use loadwise_server::DEFAULT_LISTEN;
use loadwise_server::netlist::NetList;

pub mod bench;
pub mod demo;
pub mod serve;
pub mod simulate;

/// A load-aware dispatcher: sends each new client to the backend with the most room.
#[derive(Debug, Parser)]
#[command(name = "loadwise", version, about, propagate_version = true)]
pub struct Cli {
    /// How logs are written to stderr: text, or json (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LOADWISE_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The format of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once at start, so the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the dispatcher: accept heartbeats from backends and answer client logins.
    Serve(ServeArgs),
    /// Run beside a backend: report its address and load to one or more dispatchers.
    Agent(AgentArgs),
    /// Ask one or more dispatchers for a backend and print its address.
    Pick(PickArgs),
    /// Watch it work: a dispatcher, simulated backends and clients, and the dashboard,
    /// all in this process on loopback.
    Demo(demo::DemoArgs),
    /// Print an example configuration file, or the settings `serve` would run with.
    Config(ConfigArgs),
    /// Measure a dispatcher: throughput and latency of picks and heartbeats.
    Bench(bench::BenchArgs),
    /// Compare the selection policies on a simulated pool described by a scenario file.
    Simulate(simulate::SimulateArgs),
}

/// Parses the command line, exiting with a usage message on errors. Notes which
/// `serve` settings came from flags and which from the environment, for errors.
pub fn parse() -> Cli {
    let matches = command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if let (Some(args), Some(matches)) = (cli.command.serve_args_mut(), serve_matches(&matches)) {
        args.origins = origins(matches);
    }
    cli
}

/// The clap command, with each `serve` setting's default added to its help (the
/// flags themselves have no default, so that the file and environment can apply).
pub fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand("serve", with_defaults)
        .mut_subcommand("config", |config| config.mut_subcommand("show", with_defaults))
}

fn with_defaults(command: clap::Command) -> clap::Command {
    let defaults = Layer::from_settings(&Settings::default()).table();
    CATALOG.iter().fold(command, |command, info| {
        let value = match info.table_key() {
            (Some(table), key) => defaults.get(table).and_then(|inner| inner.get(key)),
            (None, key) => defaults.get(key),
        };
        let Some(value) = value else { return command };
        let shown = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
        command.mut_arg(info.key.replace('.', "_"), |arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.help(format!("{help} [default: {shown}]"))
        })
    })
}

fn serve_matches(matches: &ArgMatches) -> Option<&ArgMatches> {
    match matches.subcommand()? {
        ("serve", serve) => Some(serve),
        ("config", config) => match config.subcommand()? {
            ("show", show) => Some(show),
            _ => None,
        },
        _ => None,
    }
}

/// For each setting given on the command line or in the environment, which it was.
fn origins(matches: &ArgMatches) -> BTreeMap<String, String> {
    let mut origins = BTreeMap::new();
    for info in CATALOG {
        let how = match matches.value_source(&info.key.replace('.', "_")) {
            Some(ValueSource::CommandLine) => format!("--{}", info.flag()),
            Some(ValueSource::EnvVariable) => info.env(),
            _ => continue,
        };
        origins.insert(info.key.to_owned(), how);
    }
    origins
}

impl Command {
    fn serve_args_mut(&mut self) -> Option<&mut ServeArgs> {
        match self {
            Command::Serve(args) => Some(args),
            Command::Config(ConfigArgs { action: ConfigAction::Show(args) }) => Some(args.as_mut()),
            _ => None,
        }
    }
}

fn duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

/// `serve`'s settings. Each may also come from the configuration file and from a
/// `LOADWISE_…` variable; flags win over variables, which win over the file.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// A TOML configuration file (`loadwise config example` prints one); SIGHUP
    /// reads it again and applies what can change live.
    #[arg(long, env = "LOADWISE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to listen on for backends and clients.
    #[arg(long, env = "LOADWISE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// How to choose a backend: least-loaded (lowest report plus the clients sent
    /// since), p2c (the better of two at random, by effective load), round-robin
    /// (ignores load), or original (lowest report only, as the old server did; for
    /// comparison).
    #[arg(long, env = "LOADWISE_POLICY")]
    pub policy: Option<Policy>,
    /// Remove a backend that has sent no heartbeat for this long.
    #[arg(long, env = "LOADWISE_TTL", value_parser = duration, value_name = "DURATION")]
    pub ttl: Option<Duration>,
    /// Answer a login with the error reply when its timestamp is further than this
    /// from the dispatcher's clock.
    #[arg(long, env = "LOADWISE_MAX_CLOCK_SKEW", value_parser = duration, value_name = "DURATION")]
    pub max_clock_skew: Option<Duration>,
    /// Most backends registered at once, and most backend connections open; heartbeats
    /// of further backends are refused, and a further connection's first heartbeat
    /// closes it.
    #[arg(long, env = "LOADWISE_MAX_BACKENDS", value_name = "N")]
    pub max_backends: Option<usize>,
    /// For this long after a backend registers, the clients sent to it count extra
    /// (up to 10 times), so a fresh server is not flooded; 0 turns it off.
    #[arg(long, env = "LOADWISE_SLOW_START", value_parser = duration, value_name = "DURATION")]
    pub slow_start: Option<Duration>,
    /// The cost of one client in percent of a backend's load, assumed until its
    /// heartbeats show the real figure.
    #[arg(long, env = "LOADWISE_PRIOR_COST", value_name = "PERCENT")]
    pub prior_cost: Option<f64>,
    /// The smallest cost of one client (percent) that learning may settle on.
    #[arg(long, env = "LOADWISE_MIN_COST", value_name = "PERCENT")]
    pub min_cost: Option<f64>,
    /// The largest cost of one client (percent) that learning may settle on.
    #[arg(long, env = "LOADWISE_MAX_COST", value_name = "PERCENT")]
    pub max_cost: Option<f64>,
    /// Most client connections open at once (those that have logged in or picked);
    /// a further one's login gets the error reply and is closed.
    #[arg(long, env = "LOADWISE_MAX_CLIENT_CONNECTIONS", value_name = "N")]
    pub max_client_connections: Option<usize>,
    /// Most connections open at once that have not yet sent a heartbeat, login or
    /// pick; further ones are closed as they arrive.
    #[arg(long, env = "LOADWISE_MAX_PENDING_CONNECTIONS", value_name = "N")]
    pub max_pending_connections: Option<usize>,
    /// Most client and pending connections open at once from one IP address; further
    /// ones are closed as they arrive.
    #[arg(long, env = "LOADWISE_MAX_CONNECTIONS_PER_PEER", value_name = "N")]
    pub max_connections_per_peer: Option<usize>,
    /// Retired (replaced by the connection budgets): accepted here only to be refused
    /// with what replaced it, rather than with a tip for a look-alike flag.
    #[arg(long = "max-connections", hide = true, value_name = "N")]
    pub retired_max_connections: Option<String>,
    /// Longest frame accepted, in bytes (23 to 65535); longer ones close the connection.
    #[arg(long, env = "LOADWISE_MAX_FRAME_LEN", value_name = "BYTES")]
    pub max_frame_len: Option<u16>,
    /// Longest protocol v2 frame accepted, in bytes (2682, the largest v2 message, to
    /// 65535); longer ones close the connection.
    #[arg(long, env = "LOADWISE_MAX_V2_FRAME_LEN", value_name = "BYTES")]
    pub max_v2_frame_len: Option<u16>,
    /// Close a connection that holds an incomplete frame for this long.
    #[arg(long, env = "LOADWISE_FRAME_TIMEOUT", value_parser = duration, value_name = "DURATION")]
    pub frame_timeout: Option<Duration>,
    /// Close a connection that sends no heartbeat, login or pick this long after
    /// it was accepted.
    #[arg(long, env = "LOADWISE_FIRST_FRAME_TIMEOUT", value_parser = duration, value_name = "DURATION")]
    pub first_frame_timeout: Option<Duration>,
    /// Close a connection that sends nothing for this long; 0 keeps idle
    /// connections open.
    #[arg(long, env = "LOADWISE_IDLE_TIMEOUT", value_parser = duration, value_name = "DURATION")]
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose peer does not read its replies for this long.
    #[arg(long, env = "LOADWISE_WRITE_TIMEOUT", value_parser = duration, value_name = "DURATION")]
    pub write_timeout: Option<Duration>,
    /// On SIGINT/SIGTERM, how long to let connections finish before closing them.
    #[arg(long, env = "LOADWISE_SHUTDOWN_GRACE", value_parser = duration, value_name = "DURATION")]
    pub shutdown_grace: Option<Duration>,
    /// Networks legacy heartbeats, and v2 ones without --auth-secret-file, are accepted
    /// from (comma-separated ADDRESS/PREFIX), or `none`: they carry no authentication.
    /// Logins are open to all.
    #[arg(long, env = "LOADWISE_LEGACY_HEARTBEAT_NETWORKS", value_name = "NETWORKS|none")]
    pub legacy_heartbeat_networks: Option<NetList>,
    /// A file holding the secret shared with v2 agents (their --secret-file, at least
    /// 16 bytes), read at start and at each reload. With it, v2 backends must prove
    /// they know it to register, and picks carry signed tickets; without it, v2
    /// heartbeats are accepted unauthenticated.
    #[arg(long, env = "LOADWISE_AUTH_SECRET_FILE", value_name = "PATH")]
    pub auth_secret_file: Option<PathBuf>,
    /// How long the admission ticket in a v2 pick reply stays valid; whole seconds,
    /// at least 1. Tickets are issued only with --auth-secret-file.
    #[arg(long, env = "LOADWISE_TICKET_LIFETIME", value_parser = duration, value_name = "DURATION")]
    pub ticket_lifetime: Option<Duration>,
    /// A second listener whose connections speak TLS (the same protocols as on
    /// --listen), or `off`; needs --tls-cert and --tls-key.
    #[arg(long, env = "LOADWISE_TLS_LISTEN", value_name = "ADDR|off")]
    pub tls_listen: Option<TlsListenAddr>,
    /// The TLS listener's certificate chain: a PEM file, the server's certificate
    /// first.
    #[arg(long, env = "LOADWISE_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS listener's private key: a PEM file (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "LOADWISE_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// The service legacy heartbeats and logins belong to; v2 backends and clients
    /// that name it share its pool.
    #[arg(long, env = "LOADWISE_DEFAULT_SERVICE", value_name = "NAME")]
    pub default_service: Option<ServiceName>,
    /// How a v2 backend's metrics make its load, in services without their own:
    /// `memory`, `max(memory, cpu)`, `0.7*memory + 0.3*cpu`, `0.5*connections`, or
    /// with a custom metric's name.
    #[arg(long, env = "LOADWISE_SCORING", value_name = "SCORING")]
    pub scoring: Option<Scoring>,
    /// How one service's load is scored instead, as NAME=SCORING (`search=max(memory,
    /// cpu)`). Repeat the flag for more services; the variable separates entries with
    /// `;`. Each replaces the same service's `[services.NAME]` table in the file.
    #[arg(long, env = "LOADWISE_SERVICE_SCORING", value_delimiter = ';', value_name = "NAME=SCORING")]
    pub service_scoring: Vec<ServiceScoring>,
    /// Where the admin HTTP API and dashboard listen, or `off`.
    #[arg(long, env = "LOADWISE_ADMIN_LISTEN", value_name = "ADDR|off")]
    pub admin_listen: Option<AdminListen>,
    /// The bearer token that admin actions (drain, maintenance) need; prefer
    /// --admin-token-file, which keeps it out of the process list.
    #[arg(long, env = "LOADWISE_ADMIN_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// A file holding the admin token, read at start and at each reload.
    #[arg(long, env = "LOADWISE_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
    /// How each setting above was given (flag or variable), filled in by [`parse`].
    #[arg(skip)]
    pub origins: BTreeMap<String, String>,
}

impl ServeArgs {
    /// The settings the flags and the environment give.
    pub fn overrides(&self) -> Layer {
        Layer {
            listen: self.listen,
            policy: self.policy,
            ttl: self.ttl,
            max_clock_skew: self.max_clock_skew,
            max_backends: self.max_backends,
            slow_start: self.slow_start,
            prior_cost: self.prior_cost,
            min_cost: self.min_cost,
            max_cost: self.max_cost,
            max_client_connections: self.max_client_connections,
            max_pending_connections: self.max_pending_connections,
            max_connections_per_peer: self.max_connections_per_peer,
            first_frame_timeout: self.first_frame_timeout,
            max_frame_len: self.max_frame_len,
            max_v2_frame_len: self.max_v2_frame_len,
            frame_timeout: self.frame_timeout,
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
            shutdown_grace: self.shutdown_grace,
            legacy_heartbeat_networks: self.legacy_heartbeat_networks.clone(),
            auth_secret_file: self.auth_secret_file.clone(),
            ticket_lifetime: self.ticket_lifetime,
            tls_listen: self.tls_listen,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            default_service: self.default_service.clone(),
            scoring: self.scoring.clone(),
            admin: AdminLayer {
                listen: self.admin_listen,
                token: self.admin_token.clone(),
                token_file: self.admin_token_file.clone(),
            },
            services: self.service_layers(),
        }
    }

    /// The services the flags or the variable score otherwise; a later entry for the
    /// same service wins.
    fn service_layers(&self) -> BTreeMap<ServiceName, ServiceLayer> {
        let layer = |entry: &ServiceScoring| ServiceLayer { scoring: Some(entry.scoring.clone()) };
        self.service_scoring.iter().map(|entry| (entry.service.clone(), layer(entry))).collect()
    }

    /// Where the settings come from, to load now and again on reload.
    pub fn sources(&self) -> Sources {
        Sources {
            file: self.config.clone(),
            overrides: self.overrides(),
            origins: self.origins.clone(),
            descriptor_limit: None,
        }
    }
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print a configuration file that sets every setting to its default, with
    /// comments: `loadwise config example > /etc/loadwise/loadwise.toml`.
    Example,
    /// Print the settings `serve` would run with, given the same options, file and
    /// environment; exits 1 naming the setting if one is invalid.
    Show(Box<ServeArgs>),
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// A dispatcher, as HOST:PORT. Repeat the flag (or separate with commas) to
    /// report to several replicas; each gets its own connection.
    #[arg(long, env = "LOADWISE_AGENT_SERVER", required = true, value_delimiter = ',')]
    pub server: Vec<String>,
    /// The address clients should connect to, as HOST:PORT: an IPv4 address, a
    /// bracketed IPv6 one, or (v2 only) a host name. Legacy carries at most 15
    /// characters of it.
    #[arg(long, env = "LOADWISE_AGENT_ADVERTISE")]
    pub advertise: Advertise,
    /// Time between heartbeats.
    #[arg(long, env = "LOADWISE_AGENT_INTERVAL", default_value = "1s", value_parser = duration)]
    pub interval: Duration,
    /// How long one connection attempt may take.
    #[arg(long, env = "LOADWISE_AGENT_CONNECT_TIMEOUT", default_value = "3s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Longest wait between reconnect attempts (they start at 100ms and double). Keep
    /// it at most the interval, so a restarted dispatcher hears from every backend
    /// within two intervals.
    #[arg(long, env = "LOADWISE_AGENT_MAX_BACKOFF", default_value = "1s", value_parser = duration)]
    pub max_backoff: Duration,
    /// Read memory statistics from this file instead of /proc/meminfo.
    #[arg(long, default_value = loadwise_agent::meminfo::PROC_MEMINFO, hide = true)]
    pub meminfo: PathBuf,
    /// What to speak: v2 (service, id, memory, CPU and custom metrics, weight, drain
    /// state, and authentication with --secret-file), or legacy for a dispatcher that
    /// knows no other (memory only, what the C++ dispatcher understands).
    #[arg(long, env = "LOADWISE_AGENT_PROTOCOL", default_value = "v2", value_name = "v2|legacy")]
    pub protocol: Protocol,
    /// v2: the pool this backend belongs to.
    #[arg(long, env = "LOADWISE_AGENT_SERVICE", default_value = loadwise_agent::DEFAULT_SERVICE)]
    pub service: ServiceName,
    /// v2: this backend's id, kept across restarts; by default derived from the
    /// service and --advertise.
    #[arg(long, env = "LOADWISE_AGENT_ID", value_name = "N")]
    pub id: Option<u64>,
    /// v2: a file holding the secret shared with the dispatchers (at least 16 bytes);
    /// the agent proves it knows it before it registers.
    #[arg(long, env = "LOADWISE_AGENT_SECRET_FILE", value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
    /// v2: relative capacity (1 to 65535); a backend of 200 should get twice the
    /// clients of one of 100 at equal load.
    #[arg(long, env = "LOADWISE_AGENT_WEIGHT", default_value = "100", value_name = "N")]
    pub weight: NonZeroU16,
    /// v2: a file the backend writes its own figures to, one `NAME VALUE` per line,
    /// read before every heartbeat; `connections` is the active connection count,
    /// any other name a custom metric.
    #[arg(long, env = "LOADWISE_AGENT_METRICS_FILE", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Start draining: no new clients (v2 says so in heartbeats; legacy stays
    /// disconnected). SIGUSR1 drains and SIGUSR2 makes the backend ready at any time.
    #[arg(long, env = "LOADWISE_AGENT_DRAIN")]
    pub drain: bool,
    /// Speak TLS to every dispatcher (name their TLS listeners in --server), trusting
    /// the CA certificates in this PEM file. Carries either protocol, but the C++
    /// dispatcher cannot speak it.
    #[arg(long, env = "LOADWISE_AGENT_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The name every dispatcher's certificate must carry, when it is not the host
    /// given in --server.
    #[arg(long, env = "LOADWISE_AGENT_TLS_SERVER_NAME", value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

impl AgentArgs {
    /// The library configuration; reads the secret file if one is named.
    pub fn to_config(&self) -> anyhow::Result<AgentConfig> {
        let mut config = AgentConfig::with_servers(self.server.clone(), self.advertise.clone());
        if self.protocol == Protocol::V2 {
            config = config.v2(self.service.clone());
        } else {
            config = config.legacy();
            // Kept so that validation can refuse a --service the protocol cannot carry.
            config.service = self.service.clone();
        }
        config.backend_id = self.id.unwrap_or(config.backend_id);
        config.secret = self.secret_file.as_deref().map(read_secret).transpose()?;
        config.tls = client_tls(self.tls_ca.as_deref(), self.tls_server_name.as_deref())?;
        Ok(AgentConfig {
            interval: self.interval,
            connect_timeout: self.connect_timeout,
            max_backoff: self.max_backoff,
            weight: self.weight,
            ..config
        })
    }
}

/// TLS trusting the CA in `ca`, if one is named.
fn client_tls(ca: Option<&std::path::Path>, server_name: Option<&str>) -> anyhow::Result<Option<ClientTls>> {
    let Some(ca) = ca else { return Ok(None) };
    let tls = ClientTls::from_ca_file(ca)?;
    Ok(Some(match server_name {
        Some(name) => tls.with_server_name(name)?,
        None => tls,
    }))
}

fn read_secret(path: &std::path::Path) -> anyhow::Result<Secret> {
    Ok(Secret::read_file(path)?)
}

#[derive(Debug, Args)]
pub struct PickArgs {
    /// A dispatcher, as HOST:PORT. Repeat the flag (or separate with commas) to
    /// name replicas: they are asked in a random order until one assigns a backend.
    #[arg(long, default_value = DEFAULT_LISTEN, value_delimiter = ',')]
    pub server: Vec<String>,
    /// Give up if no backend is assigned within this time, all attempts together.
    #[arg(long, default_value = "3s", value_parser = duration)]
    pub timeout: Duration,
    /// Move on to the next dispatcher if one gives no answer within this time.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub attempt_timeout: Duration,
    /// Print one JSON object: the backend, the dispatcher that assigned it, and
    /// the attempts that failed first (or, on failure, every attempt).
    #[arg(long)]
    pub json: bool,
    /// Ask with protocol v2 for a backend of this service. The answer may be an IPv6
    /// address or a host name, and carries the backend's id and, when the
    /// dispatcher signs them, an admission ticket (printed on a second line).
    #[arg(long, value_name = "NAME")]
    pub service: Option<ServiceName>,
    /// Speak TLS to the dispatchers (name their TLS listeners in --server), trusting
    /// the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The name every dispatcher's certificate must carry, when it is not the host
    /// given in --server.
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

impl PickArgs {
    /// The library configuration; reads the CA file if one is named.
    pub fn failover_config(&self) -> anyhow::Result<FailoverConfig> {
        Ok(FailoverConfig {
            attempt_timeout: self.attempt_timeout,
            deadline: self.timeout,
            tls: client_tls(self.tls_ca.as_deref(), self.tls_server_name.as_deref())?,
            ..FailoverConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadwise_server::ServerConfig;

    fn parse_from(args: &[&str]) -> Cli {
        Cli::from_arg_matches(&command().try_get_matches_from(args).unwrap()).unwrap()
    }

    #[test]
    fn cli_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn serve_defaults_match_the_library_defaults() {
        let Command::Serve(args) = parse_from(&["loadwise", "serve"]).command else { panic!("not serve") };
        let loaded = args.sources().load().unwrap();
        assert_eq!(loaded.settings.server, ServerConfig::default());
        assert_eq!(loaded.settings, Settings::default());
    }

    #[test]
    fn every_setting_has_its_flag_and_variable() {
        let command = command();
        let serve = command.find_subcommand("serve").unwrap();
        for info in CATALOG {
            let id = info.key.replace('.', "_");
            let arg = serve.get_arguments().find(|arg| arg.get_id() == id.as_str());
            let arg = arg.unwrap_or_else(|| panic!("no flag for {}", info.key));
            assert_eq!(arg.get_long(), Some(info.flag().as_str()));
            assert_eq!(arg.get_env().and_then(|env| env.to_str()), Some(info.env().as_str()));
        }
    }

    #[test]
    fn serve_help_shows_each_default() {
        let help = command().find_subcommand_mut("serve").unwrap().render_help().to_string();
        for shown in ["[default: 3s]", "[default: least-loaded]", "[default: 127.0.0.1:8524]"] {
            assert!(help.contains(shown), "{shown} missing from\n{help}");
        }
    }

    #[test]
    fn flags_give_their_origin() {
        let matches = command().try_get_matches_from(["loadwise", "serve", "--ttl", "5s"]).unwrap();
        let origins = origins(serve_matches(&matches).unwrap());
        assert_eq!(origins.get("ttl").map(String::as_str), Some("--ttl"));
        assert_eq!(origins.len(), 1);
    }

    #[test]
    fn service_scoring_is_repeated_or_separated_by_semicolons() {
        let args = [
            "loadwise",
            "serve",
            "--service-scoring",
            "a=cpu;b=memory",
            "--service-scoring",
            "a=connections",
        ];
        let Command::Serve(args) = parse_from(&args).command else { panic!("not serve") };
        let shown: Vec<_> = args.service_scoring.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["a=cpu", "b=memory", "a=connections"]);
        let overrides = args.overrides();
        let scoring = |name: &str| overrides.services[&ServiceName::new(name).unwrap()].scoring.clone();
        assert_eq!(scoring("a").unwrap().to_string(), "connections", "the later entry wins");
        assert_eq!(scoring("b").unwrap().to_string(), "memory");

        let matches =
            command().try_get_matches_from(["loadwise", "serve", "--service-scoring", "a=cpu"]).unwrap();
        let origins = origins(serve_matches(&matches).unwrap());
        assert_eq!(origins.get("service_scoring").map(String::as_str), Some("--service-scoring"));
        let bad = command().try_get_matches_from(["loadwise", "serve", "--service-scoring", "a b=cpu"]);
        assert!(bad.unwrap_err().to_string().contains("--service-scoring"));
    }

    #[test]
    fn agent_defaults_match_the_library_defaults() {
        let cli = parse_from(&["loadwise", "agent", "--server", "h:1", "--advertise", "10.0.0.2:7000"]);
        let Command::Agent(args) = cli.command else { panic!("not agent") };
        assert_eq!(args.to_config().unwrap(), AgentConfig::new("h:1", "10.0.0.2:7000".parse().unwrap()));
    }

    #[test]
    fn tls_flags_need_a_readable_ca_and_the_name_needs_the_ca() {
        let base = ["loadwise", "agent", "--server", "h:1", "--advertise", "10.0.0.2:7000"];
        let name_alone = [&base[..], &["--tls-server-name", "lb"]].concat();
        assert!(command().try_get_matches_from(name_alone).is_err());
        let missing = [&base[..], &["--tls-ca", "/nonexistent/ca.pem"]].concat();
        let Command::Agent(args) = parse_from(&missing).command else { panic!("not agent") };
        let error = format!("{:#}", args.to_config().unwrap_err());
        assert!(error.contains("TLS CA file /nonexistent/ca.pem"), "{error}");
        let pick = ["loadwise", "pick", "--tls-ca", "/nonexistent/ca.pem"];
        let Command::Pick(args) = parse_from(&pick).command else { panic!("not pick") };
        let error = format!("{:#}", args.failover_config().unwrap_err());
        assert!(error.contains("TLS CA file /nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn agent_refuses_a_long_address_for_legacy_and_a_bad_one_at_once() {
        let long = [
            "loadwise",
            "agent",
            "--server",
            "h:1",
            "--advertise",
            "1234567890.123456:1",
            "--protocol",
            "legacy",
        ];
        let Command::Agent(args) = parse_from(&long).command else { panic!("not agent") };
        let error = args.to_config().unwrap().validate().unwrap_err().to_string();
        assert!(error.contains("at most 15") && error.contains("--protocol v2"), "{error}");
        let bad = ["loadwise", "agent", "--server", "h:1", "--advertise", "a b:1"];
        let error = command().try_get_matches_from(bad).unwrap_err().to_string();
        assert!(error.contains("neither an IP address nor a host name"), "{error}");
    }
}
