//! Command-line arguments of the `loadwise` binary (clap derive; doc comments are the help).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use loadwise_agent::{
    Advertise, AgentConfig, CheckTarget, DiscoveryConfig, DnsSource, HealthCheck, Places, Protocol, Secret,
};
use loadwise_cli::settings::{SettingFlags, Sources};
use loadwise_client::FailoverConfig;
use loadwise_client::connect::{self, ConnectOptions};
use loadwise_client::tls::ClientTls;
use loadwise_protocol::v2::{KeyTooLong, PickKey, ServiceName};
use loadwise_server::DEFAULT_LISTEN;

pub mod bench;
pub mod demo;
pub mod generate;
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(generate::CompletionsArgs),
    /// Print the man page, or write one page per command with --out DIR.
    Man(generate::ManArgs),
}

/// Parses the command line, exiting with a usage message on errors.
pub fn parse() -> Cli {
    Cli::parse()
}

/// The clap command.
pub fn command() -> clap::Command {
    use clap::CommandFactory as _;
    Cli::command()
}

fn pick_key(text: &str) -> Result<PickKey, KeyTooLong> {
    PickKey::new(text)
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
    /// Every setting's flag and variable, made from its definition.
    #[command(flatten)]
    pub settings: SettingFlags,
    /// Retired (replaced by the connection budgets): accepted here only to be refused
    /// with what replaced it, rather than with a tip for a look-alike flag.
    #[arg(long = "max-connections", hide = true, value_name = "N")]
    pub retired_max_connections: Option<String>,
}

impl ServeArgs {
    /// Where the settings come from, to load now and again on reload.
    pub fn sources(&self) -> Sources {
        Sources {
            file: self.config.clone(),
            overrides: self.settings.layer.clone(),
            origins: self.settings.origins.clone(),
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
    #[arg(
        long,
        env = "LOADWISE_AGENT_SERVER",
        required_unless_present = "servers_from",
        value_delimiter = ','
    )]
    pub server: Vec<String>,
    /// Dispatcher replicas published in DNS: dns:NAME:PORT (every address of NAME
    /// is a replica on PORT, as a Kubernetes headless Service publishes them) or
    /// dns+srv:_SERVICE._PROTO.NAME (every SRV record). The agent reports to each
    /// replica, follows the set as it changes, and may be given --server too.
    #[arg(
        long,
        env = "LOADWISE_AGENT_SERVERS_FROM",
        value_delimiter = ',',
        value_name = "dns:NAME:PORT|dns+srv:NAME"
    )]
    pub servers_from: Vec<DnsSource>,
    /// The DNS server to ask for --servers-from, as IP:PORT, instead of those of
    /// /etc/resolv.conf.
    #[arg(long, env = "LOADWISE_AGENT_RESOLVER", value_name = "IP:PORT", requires = "servers_from")]
    pub resolver: Option<SocketAddr>,
    /// Time between two lookups of each --servers-from name (sooner after a
    /// failure): a new replica gets a link within this time.
    #[arg(long, env = "LOADWISE_AGENT_RESOLVE_INTERVAL", default_value = "5s", value_parser = duration)]
    pub resolve_interval: Duration,
    /// How long a replica missing from DNS keeps its link, so that an answer that
    /// flaps costs no reconnect.
    #[arg(long, env = "LOADWISE_AGENT_REMOVAL_GRACE", default_value = "10s", value_parser = duration)]
    pub removal_grace: Duration,
    /// The address clients should connect to, as HOST:PORT: an IPv4 address, a
    /// bracketed IPv6 one, or (v2 only) a host name. Legacy carries at most 15
    /// characters of it. 0.0.0.0, [::] and port 0 are refused: no client can connect
    /// to them.
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
    /// Check the backend itself: tcp (connect to --advertise), tcp:HOST:PORT, or
    /// http://HOST:PORT/PATH (a 2xx status passes). While the checks fail the backend
    /// is unhealthy: v2 heartbeats say so (it stays listed and gets no clients) and
    /// legacy disconnects. It starts unhealthy until --check-rise checks pass.
    #[arg(long, env = "LOADWISE_AGENT_CHECK", value_name = "tcp|tcp:HOST:PORT|http://HOST:PORT/PATH")]
    pub check: Option<CheckTarget>,
    /// Time from one health check to the next (10ms to 1h).
    #[arg(long, env = "LOADWISE_AGENT_CHECK_INTERVAL", default_value = "1s", value_parser = duration, requires = "check")]
    pub check_interval: Duration,
    /// How long one health check may take before it fails; at most --check-interval.
    /// [default: 1s, or --check-interval if shorter]
    #[arg(long, env = "LOADWISE_AGENT_CHECK_TIMEOUT", value_parser = duration, requires = "check")]
    pub check_timeout: Option<Duration>,
    /// Passing checks in a row that make an unhealthy backend healthy (1 to 100).
    #[arg(
        long,
        env = "LOADWISE_AGENT_CHECK_RISE",
        default_value = "2",
        value_name = "N",
        requires = "check"
    )]
    pub check_rise: u32,
    /// Failing checks in a row that make a healthy backend unhealthy (1 to 100).
    #[arg(
        long,
        env = "LOADWISE_AGENT_CHECK_FALL",
        default_value = "2",
        value_name = "N",
        requires = "check"
    )]
    pub check_fall: u32,
    /// The backend's places in total (1 to 10000000): players, rooms, seats. With it
    /// each heartbeat leases a share of the free places to the dispatcher it goes to,
    /// so that the dispatchers together never send more clients than there are free
    /// places. The places in use come from an `in_use N` line of --metrics-file.
    /// Protocol v2 only.
    #[arg(long, env = "LOADWISE_AGENT_CAPACITY", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(loadwise_agent::MAX_CAPACITY)))]
    pub capacity: Option<u32>,
    /// How long a place promised to a client stays taken if the client never arrives
    /// (1ms to 1h): the dispatchers' ticket lifetime.
    #[arg(long, env = "LOADWISE_AGENT_PROMISE_LIFETIME", default_value = "30s", value_parser = duration, requires = "capacity")]
    pub promise_lifetime: Duration,
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
        config.discovery = DiscoveryConfig {
            sources: self.servers_from.clone(),
            resolver: self.resolver,
            interval: self.resolve_interval,
            grace: self.removal_grace,
        };
        Ok(AgentConfig {
            interval: self.interval,
            connect_timeout: self.connect_timeout,
            max_backoff: self.max_backoff,
            weight: self.weight,
            health_check: self.health_check(),
            slots: self.places()?,
            ..config
        })
    }

    /// The backend's places, if `--capacity` gives them.
    fn places(&self) -> anyhow::Result<Option<Places>> {
        let Some(capacity) = self.capacity else { return Ok(None) };
        let lifetime = self.promise_lifetime;
        if lifetime.is_zero() || lifetime > loadwise_agent::MAX_PROMISE_LIFETIME {
            anyhow::bail!("invalid setting `promise-lifetime`: must be from 1ms to 1h, not {lifetime:?}");
        }
        Ok(Some(Places::new(capacity, lifetime)))
    }

    /// The health check, if `--check` names one; its ranges are checked with the rest
    /// of the configuration.
    fn health_check(&self) -> Option<HealthCheck> {
        let check = HealthCheck::new(self.check.clone()?).every(self.check_interval);
        Some(HealthCheck {
            timeout: self.check_timeout.unwrap_or(check.timeout),
            rise: self.check_rise,
            fall: self.check_fall,
            ..check
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
#[command(after_help = loadwise_cli::exit::help_section())]
pub struct PickArgs {
    /// A dispatcher, as HOST:PORT. Repeat the flag (or separate with commas) to
    /// name replicas: they are asked in a random order until one assigns a backend.
    /// [default: 127.0.0.1:8523, unless --servers-from is given]
    #[arg(long, value_delimiter = ',')]
    pub server: Vec<String>,
    /// Dispatcher replicas published in DNS: dns:NAME:PORT (every address of NAME
    /// is a replica on PORT) or dns+srv:_SERVICE._PROTO.NAME (every SRV record);
    /// asked in turn like --server, which may be given too.
    #[arg(long, value_delimiter = ',', value_name = "dns:NAME:PORT|dns+srv:NAME")]
    pub servers_from: Vec<DnsSource>,
    /// The DNS server to ask for --servers-from, as IP:PORT, instead of those of
    /// /etc/resolv.conf.
    #[arg(long, value_name = "IP:PORT", requires = "servers_from")]
    pub resolver: Option<SocketAddr>,
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
    /// An affinity key (up to 64 bytes, such as a player or session id): the picks
    /// with the same key go to the same backend of --service while it is ready and
    /// not loaded above its bound, by any dispatcher replica that sees the same backends.
    #[arg(long, value_name = "KEY", requires = "service", value_parser = pick_key)]
    pub key: Option<PickKey>,
    /// Speak TLS to the dispatchers (name their TLS listeners in --server), trusting
    /// the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The name every dispatcher's certificate must carry, when it is not the host
    /// given in --server.
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
    /// Also connect to the backend (needs --service): if no connection is made
    /// within --connect-timeout, report the backend to the dispatcher, on the same
    /// connection, and ask again, up to --attempts picks. Prints `connected to
    /// HOST:PORT (backend ID) after N attempt(s)`, then the ticket if there is one.
    /// Asks the --server dispatchers, starting at one of them and moving on only if
    /// one cannot be reached; each exchange with a dispatcher is bounded by
    /// --attempt-timeout (--timeout does not apply).
    #[arg(long, requires = "service", conflicts_with = "servers_from")]
    pub connect: bool,
    /// With --connect: the local address the dispatcher connection comes from (the
    /// dispatcher knows clients by their source address), such as 127.0.0.2.
    #[arg(long, value_name = "ADDR", requires = "connect")]
    pub bind: Option<IpAddr>,
    /// With --connect: the longest wait for one backend's connection, from 1ms to 60s.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = connect_timeout)]
    pub connect_timeout: Duration,
    /// With --connect: the most picks, from 1 to 16. A backend named again after it
    /// failed is passed over without connecting (and counts as an attempt), unless
    /// the pick before was passed over too.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(connect::MAX_ATTEMPTS)))]
    pub attempts: u32,
}

/// A backend connect deadline: a duration from 1ms to 60s.
fn connect_timeout(text: &str) -> Result<Duration, String> {
    let timeout = duration(text).map_err(|error| error.to_string())?;
    if timeout < Duration::from_millis(1) || timeout > connect::MAX_TIMEOUT {
        return Err(format!("{text} is out of range: from 1ms to 60s"));
    }
    Ok(timeout)
}

impl PickArgs {
    /// The library configuration; reads the CA file if one is named.
    pub fn failover_config(&self) -> anyhow::Result<FailoverConfig> {
        Ok(FailoverConfig {
            attempt_timeout: self.attempt_timeout,
            deadline: self.timeout,
            tls: client_tls(self.tls_ca.as_deref(), self.tls_server_name.as_deref())?,
            discovery: DiscoveryConfig {
                sources: self.servers_from.clone(),
                resolver: self.resolver,
                ..DiscoveryConfig::default()
            },
            ..FailoverConfig::default()
        })
    }

    /// The options of `--connect`; reads the CA file if one is named.
    pub fn connect_options(&self) -> anyhow::Result<ConnectOptions> {
        let options = ConnectOptions {
            connect_timeout: self.connect_timeout,
            attempts: self.attempts,
            pick_timeout: self.attempt_timeout,
            key: self.key.clone().unwrap_or_default(),
            tls: client_tls(self.tls_ca.as_deref(), self.tls_server_name.as_deref())?,
            bind: self.bind,
        };
        options.validate()?;
        Ok(options)
    }

    /// The dispatchers given; the default one when neither they nor DNS names are.
    pub fn servers(&self) -> Vec<String> {
        if self.server.is_empty() && self.servers_from.is_empty() {
            return vec![DEFAULT_LISTEN.to_owned()];
        }
        self.server.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches as _;
    use loadwise_cli::settings::{CATALOG, Settings};
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
            let arg = serve.get_arguments().find(|arg| arg.get_long() == Some(info.flag().as_str()));
            let arg = arg.unwrap_or_else(|| panic!("no flag for {}", info.key));
            assert_eq!(arg.get_env().and_then(|env| env.to_str()), Some(info.env().as_str()));
        }
    }

    #[test]
    fn pick_help_lists_the_exit_statuses() {
        let help = command().find_subcommand_mut("pick").unwrap().render_long_help().to_string();
        assert!(help.contains("Exit status:"), "{help}");
        for (exit, _) in loadwise_cli::exit::TABLE {
            assert!(help.contains(&format!("\n  {}  ", exit.code())), "{exit:?} missing from\n{help}");
        }
    }

    #[test]
    fn serve_help_shows_each_default() {
        let help = command().find_subcommand_mut("serve").unwrap().render_help().to_string();
        for shown in ["[default: 3s]", "[default: least-loaded]", "[default: 127.0.0.1:8524]"] {
            assert!(help.contains(shown), "{shown} missing from\n{help}");
        }
    }

    /// The flags of `loadwise serve ARGS`.
    fn serve_flags(args: &[&str]) -> SettingFlags {
        let Command::Serve(args) = parse_from(&[&["loadwise", "serve"], args].concat()).command else {
            panic!("not serve")
        };
        args.settings
    }

    #[test]
    fn flags_give_their_origin() {
        let origins = serve_flags(&["--ttl", "5s"]).origins;
        assert_eq!(origins.get("ttl").map(String::as_str), Some("--ttl"));
        assert_eq!(origins.len(), 1);
    }

    #[test]
    fn service_scoring_is_repeated_or_separated_by_semicolons() {
        let flags =
            serve_flags(&["--service-scoring", "a=cpu;b=memory", "--service-scoring", "a=connections"]);
        let overrides = flags.layer;
        let scoring = |name: &str| overrides.services[&ServiceName::new(name).unwrap()].scoring.clone();
        assert_eq!(scoring("a").unwrap().to_string(), "connections", "the later entry wins");
        assert_eq!(scoring("b").unwrap().to_string(), "memory");
        assert_eq!(overrides.services.len(), 2);
        assert_eq!(flags.origins.get("service_scoring").map(String::as_str), Some("--service-scoring"));
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
    fn agent_check_flags_become_the_health_check() {
        let base = ["loadwise", "agent", "--server", "h:1", "--advertise", "10.0.0.2:7000"];
        let config = |extra: &[&str]| {
            let Command::Agent(args) = parse_from(&[&base[..], extra].concat()).command else {
                panic!("not agent")
            };
            args.to_config().unwrap()
        };
        let check = config(&["--check", "tcp"]).health_check.unwrap();
        assert_eq!(check, HealthCheck::new(CheckTarget::Tcp(None)));
        let check =
            config(&["--check", "tcp:127.0.0.1:7000", "--check-interval", "100ms"]).health_check.unwrap();
        assert_eq!(check.timeout, Duration::from_millis(100), "the default timeout is cut to the interval");
        let flags = ["--check", "http://127.0.0.1:8080/healthz", "--check-timeout", "300ms"];
        let check =
            config(&[&flags[..], &["--check-rise", "3", "--check-fall", "1"]].concat()).health_check.unwrap();
        assert_eq!((check.timeout, check.rise, check.fall), (Duration::from_millis(300), 3, 1));
        assert_eq!(check.target.to_string(), "http://127.0.0.1:8080/healthz");
        let error = config(&["--check", "tcp", "--check-rise", "0"]).validate().unwrap_err();
        assert_eq!(error.setting, "check-rise");
        let error = config(&["--check", "tcp", "--check-timeout", "2s"]).validate().unwrap_err();
        assert_eq!(error.setting, "check-timeout");
    }

    #[test]
    fn agent_check_settings_need_a_check_and_a_bad_one_names_the_flag() {
        let base = ["loadwise", "agent", "--server", "h:1", "--advertise", "10.0.0.2:7000"];
        let alone = [&base[..], &["--check-interval", "100ms"]].concat();
        let error = command().try_get_matches_from(alone).unwrap_err().to_string();
        assert!(error.contains("--check"), "{error}");
        let bad = [&base[..], &["--check", "udp:1.2.3.4:5"]].concat();
        let error = command().try_get_matches_from(bad).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(
            error.to_string().contains("--check") && error.to_string().contains("tcp:HOST:PORT"),
            "{error}"
        );
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

    #[test]
    fn agent_refuses_to_advertise_any_address_or_port_zero() {
        for (advertise, says) in [
            ("0.0.0.0:7000", "not an address clients can connect to"),
            ("[::]:7000", "not an address clients can connect to"),
            ("10.0.0.2:0", "port 0"),
        ] {
            let args = ["loadwise", "agent", "--server", "h:1", "--advertise", advertise];
            let error = command().try_get_matches_from(args).unwrap_err();
            assert_eq!(error.exit_code(), 2);
            assert!(error.to_string().contains(says) && error.to_string().contains("--advertise"), "{error}");
        }
    }

    #[test]
    fn a_dns_name_stands_in_for_or_joins_the_servers() {
        let agent = ["loadwise", "agent", "--advertise", "10.0.0.2:7000"];
        let error = command().try_get_matches_from(agent).unwrap_err().to_string();
        assert!(error.contains("--server"), "{error}");
        let named =
            [&agent[..], &["--servers-from", "dns:lb.example:8523", "--resolver", "127.0.0.1:53"]].concat();
        let Command::Agent(args) = parse_from(&named).command else { panic!("not agent") };
        let config = args.to_config().unwrap();
        assert!(config.servers.is_empty());
        assert_eq!(config.discovery.sources, ["dns:lb.example:8523".parse().unwrap()]);
        assert_eq!(config.discovery.resolver, Some("127.0.0.1:53".parse().unwrap()));
        assert_eq!(config.validate(), Ok(()));
        let bad = [&agent[..], &["--servers-from", "lb.example:8523"]].concat();
        let error = command().try_get_matches_from(bad).unwrap_err().to_string();
        assert!(error.contains("--servers-from") && error.contains("dns:NAME:PORT"), "{error}");

        let Command::Pick(pick) = parse_from(&["loadwise", "pick"]).command else { panic!("not pick") };
        assert_eq!(pick.servers(), [DEFAULT_LISTEN]);
        let named = ["loadwise", "pick", "--servers-from", "dns+srv:_lb._tcp.example"];
        let Command::Pick(pick) = parse_from(&named).command else { panic!("not pick") };
        assert!(pick.servers().is_empty(), "no default server beside a DNS name");
        assert_eq!(pick.failover_config().unwrap().discovery.sources.len(), 1);
    }
}
