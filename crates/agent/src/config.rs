//! The agent's settings: the address it advertises, the protocol its links speak,
//! the dispatchers it reports to, and the checks that refuse settings that cannot work.

use std::net::IpAddr;
use std::num::NonZeroU16;
use std::str::FromStr;
use std::time::Duration;

use crate::places::Places;
use loadwise_client::discover::DiscoveryConfig;
use loadwise_client::tls::ClientTls;
use loadwise_protocol::config::{ConfigError, ensure};
use loadwise_protocol::v2::auth::Secret;
use loadwise_protocol::v2::{DEFAULT_WEIGHT, Endpoint, Host, HostName, NameError, ServiceName};
use loadwise_protocol::{AddressError, IpField};

use crate::check_spec::HealthCheck;

/// The address clients should be sent to, as it will appear in heartbeats: an IPv4
/// or IPv6 address, or (protocol v2 only) a host name, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertise {
    host: String,
    port: NonZeroU16,
}

/// Why an `--advertise` value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvertiseError {
    #[error("expected HOST:PORT, for example 10.0.0.2:7000 or [2001:db8::2]:7000")]
    MissingPort,
    #[error("the port {0:?} is not a number from 1 to 65535")]
    BadPort(String),
    #[error("the host is neither an IP address nor a host name: {0}")]
    Host(#[from] NameError),
    /// 0.0.0.0 or `::` means "every local address" to a listener; a client cannot
    /// connect to it.
    #[error(
        "{0} is not an address clients can connect to (it means any address); advertise this backend's own address, for example 10.0.0.2:7000"
    )]
    Unspecified(String),
    /// A client cannot connect to port 0 (it asks a listener for any free port).
    #[error("port 0 is not a port clients can connect to; advertise the port the backend listens on")]
    PortZero,
}

impl Advertise {
    /// The address as given, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port.get()
    }

    /// The legacy heartbeat's 16-byte ip field: at most 15 characters.
    pub fn legacy_ip(&self) -> Result<IpField, AddressError> {
        IpField::from_text(&self.host)
    }

    /// The v2 endpoint: an IP address if the host is one, else a host name.
    pub fn endpoint(&self) -> Endpoint {
        let host = match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => Host::V4(ip),
            Ok(IpAddr::V6(ip)) => Host::V6(ip),
            // Checked when parsed.
            Err(_) => Host::Name(HostName::new(&self.host).expect("a checked host name")),
        };
        Endpoint { host, port: self.port }
    }
}

impl FromStr for Advertise {
    type Err = AdvertiseError;

    /// Parses `HOST:PORT`; an IPv6 literal is bracketed (`[::1]:7000`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (host, port) = text.rsplit_once(':').ok_or(AdvertiseError::MissingPort)?;
        let host = host.strip_prefix('[').and_then(|host| host.strip_suffix(']')).unwrap_or(host);
        let port = match port.parse::<u16>() {
            Ok(0) => return Err(AdvertiseError::PortZero),
            Ok(port) => NonZeroU16::new(port).expect("not zero"),
            Err(_) => return Err(AdvertiseError::BadPort(port.to_owned())),
        };
        match host.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => return Err(AdvertiseError::Unspecified(host.to_owned())),
            Ok(_) => {}
            Err(_) => {
                HostName::new(host)?;
            }
        }
        Ok(Advertise { host: host.to_owned(), port })
    }
}

impl std::fmt::Display for Advertise {
    /// `HOST:PORT`, with IPv6 literals in brackets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// The protocol the agent's links speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// The original 23-byte heartbeat: memory only, no service, no authentication.
    /// What the C++ dispatcher understands.
    Legacy,
    /// Protocol v2, the default: service, stable id, all metrics, weight, drain state
    /// and, with a secret, authenticated registration.
    #[default]
    V2,
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "legacy" => Ok(Protocol::Legacy),
            "v2" => Ok(Protocol::V2),
            other => Err(format!("unknown protocol {other:?}; expected legacy or v2")),
        }
    }
}

/// Where the agent reports to and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The dispatchers, each as `HOST:PORT`. The agent keeps one connection to each;
    /// a name is resolved again on every reconnect, and its addresses are tried in
    /// turn (one dispatcher reachable several ways, such as IPv4 and IPv6).
    pub servers: Vec<String>,
    /// DNS names whose every address (or SRV record) is a dispatcher replica: the
    /// agent keeps one connection to each replica, and follows the set as it changes.
    pub discovery: DiscoveryConfig,
    pub advertise: Advertise,
    /// Time between heartbeats.
    pub interval: Duration,
    /// How long one connection attempt may take, and (v2) the registration after it.
    pub connect_timeout: Duration,
    /// First delay between reconnect attempts.
    pub initial_backoff: Duration,
    /// Longest delay between reconnect attempts. At most one interval (the
    /// default) re-registers the backend within two intervals of a dispatcher's
    /// restart.
    pub max_backoff: Duration,
    /// What the links speak.
    pub protocol: Protocol,
    /// v2: the pool this backend belongs to.
    pub service: ServiceName,
    /// v2: this backend's id, the same across reconnects and restarts. By default a
    /// hash of the service and the advertised address ([`default_backend_id`]).
    pub backend_id: u64,
    /// v2: registers with a proof of this secret before heart-beating.
    pub secret: Option<Secret>,
    /// v2: relative capacity; 200 should get twice the clients of 100 at equal load.
    pub weight: NonZeroU16,
    /// Speak TLS to every dispatcher (at its TLS listener), trusting this CA; `None`
    /// for plain TCP. It carries either protocol, but the C++ dispatcher cannot
    /// speak it.
    pub tls: Option<ClientTls>,
    /// Checks the backend itself (a TCP connect or an HTTP GET) and reports it
    /// unhealthy while the checks fail; `None` for no checks (the backend is healthy
    /// unless the library user says otherwise).
    pub health_check: Option<HealthCheck>,
    /// The backend's capacity slots (`--capacity`), leased to the dispatchers with
    /// every heartbeat (protocol v2); `None` for a backend without a fixed number of
    /// places. Keep a clone to tell it of clients arriving and leaving.
    pub slots: Option<Places>,
}

/// The most dispatchers one agent reports to.
pub const MAX_SERVERS: usize = 64;

/// The service of backends that do not name one (and of all legacy traffic).
pub const DEFAULT_SERVICE: &str = "default";

/// A stable id for a backend from its service and advertised address: the first 8
/// bytes of their SHA-256. Two backends share it only if they advertise the same
/// address for the same service, in which case they are the same backend to clients.
pub fn default_backend_id(service: &ServiceName, advertise: &Advertise) -> u64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(service.as_str())
        .chain_update([0])
        .chain_update(advertise.to_string())
        .finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

impl AgentConfig {
    /// Rejects settings that would make the agent spin or never connect.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = "must be greater than zero";
        let none = self.servers.is_empty() && self.discovery.sources.is_empty();
        ensure(!none, "server", "name at least one dispatcher (or a DNS name with servers-from)")?;
        ensure(self.servers.len() <= MAX_SERVERS, "server", &format!("at most {MAX_SERVERS} dispatchers"))?;
        ensure(
            !has_duplicates(&self.servers),
            "server",
            "names a dispatcher twice (it would count the backend twice)",
        )?;
        self.discovery.validate()?;
        ensure(!self.interval.is_zero(), "interval", positive)?;
        ensure(!self.connect_timeout.is_zero(), "connect-timeout", positive)?;
        ensure(!self.initial_backoff.is_zero(), "initial-backoff", positive)?;
        let ordered = self.max_backoff >= self.initial_backoff;
        ensure(ordered, "max-backoff", "must be at least the initial backoff (100ms by default)")?;
        if let Some(check) = &self.health_check {
            check.validate()?;
        }
        let v2 = self.protocol == Protocol::V2;
        ensure(self.slots.is_none() || v2, "capacity", "capacity slots need --protocol v2")?;
        self.validate_protocol()
    }

    fn validate_protocol(&self) -> Result<(), ConfigError> {
        if self.protocol == Protocol::V2 {
            return Ok(());
        }
        if let Err(error) = self.advertise.legacy_ip() {
            let reason = format!("{error}; the legacy protocol cannot carry it (use --protocol v2)");
            return Err(ConfigError::new("advertise", reason));
        }
        let v2_only = self.secret.is_some()
            || self.service.as_str() != DEFAULT_SERVICE
            || self.weight != DEFAULT_WEIGHT;
        ensure(!v2_only, "protocol", "--service, --secret-file and --weight need --protocol v2")
    }

    /// A configuration for one dispatcher with the documented defaults: protocol v2
    /// in the default service, 1 s interval, 3 s connect timeout, reconnect backoff from 100 ms up
    /// to 1 s.
    pub fn new(server: impl Into<String>, advertise: Advertise) -> Self {
        Self::with_servers([server], advertise)
    }

    /// The defaults of [`new`](Self::new), reporting to every one of `servers`.
    pub fn with_servers(servers: impl IntoIterator<Item = impl Into<String>>, advertise: Advertise) -> Self {
        let service = ServiceName::new(DEFAULT_SERVICE).expect("the default service name is valid");
        AgentConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            discovery: DiscoveryConfig::default(),
            backend_id: default_backend_id(&service, &advertise),
            advertise,
            interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            protocol: Protocol::V2,
            service,
            secret: None,
            weight: DEFAULT_WEIGHT,
            tls: None,
            health_check: None,
            slots: None,
        }
    }

    /// Speaks the legacy protocol, for a dispatcher that knows no other (the C++ one).
    pub fn legacy(mut self) -> Self {
        self.protocol = Protocol::Legacy;
        self
    }

    /// Speaks v2 for `service`, with the id derived from it and the address.
    pub fn v2(mut self, service: ServiceName) -> Self {
        self.backend_id = default_backend_id(&service, &self.advertise);
        self.service = service;
        self.protocol = Protocol::V2;
        self
    }
}

fn has_duplicates(servers: &[String]) -> bool {
    let unique: std::collections::HashSet<&str> = servers.iter().map(String::as_str).collect();
    unique.len() != servers.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_would_spin_or_never_connect_are_refused() {
        let ok = AgentConfig::new("h:1", "10.0.0.1:1".parse().unwrap());
        assert_eq!(ok.validate(), Ok(()));
        let zero_interval = AgentConfig { interval: Duration::ZERO, ..ok.clone() };
        assert_eq!(zero_interval.validate().unwrap_err().setting, "interval");
        let zero_connect = AgentConfig { connect_timeout: Duration::ZERO, ..ok.clone() };
        assert_eq!(zero_connect.validate().unwrap_err().setting, "connect-timeout");
        let backoff_below_start = AgentConfig { max_backoff: Duration::from_millis(10), ..ok.clone() };
        assert_eq!(backoff_below_start.validate().unwrap_err().setting, "max-backoff");
    }

    #[test]
    fn the_dispatcher_list_must_be_non_empty_bounded_and_without_repeats() {
        let advertise: Advertise = "10.0.0.1:1".parse().unwrap();
        let two = AgentConfig::with_servers(["a:1", "b:1"], advertise.clone());
        assert_eq!(two.validate(), Ok(()));
        let none = AgentConfig::with_servers(Vec::<String>::new(), advertise.clone());
        assert_eq!(none.validate().unwrap_err().setting, "server");
        let twice = AgentConfig::with_servers(["a:1", "b:1", "a:1"], advertise.clone());
        assert!(twice.validate().unwrap_err().to_string().contains("twice"));
        let many = AgentConfig::with_servers((0..=MAX_SERVERS).map(|i| format!("h{i}:1")), advertise.clone());
        assert_eq!(many.validate().unwrap_err().setting, "server");
        let mut named = none.clone();
        named.discovery.sources = vec!["dns:lb.example:8523".parse().unwrap()];
        assert_eq!(named.validate(), Ok(()), "a DNS name is enough");
        named.discovery.interval = Duration::ZERO;
        assert_eq!(named.validate().unwrap_err().setting, "resolve-interval");
    }

    #[test]
    fn parses_advertise_ipv4_ipv6_and_host_names() {
        let a: Advertise = "10.0.0.2:1002".parse().unwrap();
        assert_eq!((a.host(), a.port()), ("10.0.0.2", 1002));
        assert_eq!(a.to_string(), "10.0.0.2:1002");
        assert_eq!(a.legacy_ip().unwrap().text().unwrap(), "10.0.0.2");
        assert_eq!(a.endpoint().to_string(), "10.0.0.2:1002");
        let v6: Advertise = "[2001:db8::2]:80".parse().unwrap();
        assert_eq!(v6.host(), "2001:db8::2");
        assert_eq!(v6.to_string(), "[2001:db8::2]:80");
        assert!(matches!(v6.endpoint().host, Host::V6(_)));
        let name: Advertise = "game-7.eu.example.net:7000".parse().unwrap();
        assert!(matches!(name.endpoint().host, Host::Name(_)));
    }

    #[test]
    fn the_legacy_protocol_refuses_what_it_cannot_carry() {
        let long: Advertise = "game-7.eu.example.net:7000".parse().unwrap();
        let error = AgentConfig::new("h:1", long.clone()).legacy().validate().unwrap_err();
        assert_eq!(error.setting, "advertise");
        assert!(error.reason.contains("at most 15") && error.reason.contains("--protocol v2"), "{error}");
        let v2 = AgentConfig::new("h:1", long).v2(ServiceName::new("game").unwrap());
        assert_eq!(v2.validate(), Ok(()));
        // Exactly 15 characters fit.
        assert_eq!(
            AgentConfig::new("h:1", "255.255.255.255:80".parse().unwrap()).legacy().validate(),
            Ok(())
        );
        let ok = AgentConfig::new("h:1", "10.0.0.1:1".parse().unwrap()).legacy();
        let secret = Some(Secret::new(*b"0123456789abcdef").unwrap());
        assert_eq!(AgentConfig { secret, ..ok.clone() }.validate().unwrap_err().setting, "protocol");
        let service = ServiceName::new("game").unwrap();
        assert_eq!(AgentConfig { service, ..ok }.validate().unwrap_err().setting, "protocol");
    }

    #[test]
    fn refuses_bad_ports_and_shapes() {
        assert_eq!("10.0.0.1".parse::<Advertise>(), Err(AdvertiseError::MissingPort));
        assert_eq!("10.0.0.1:0".parse::<Advertise>(), Err(AdvertiseError::PortZero));
        for any in ["0.0.0.0:7000", "[::]:7000", "[0:0:0:0:0:0:0:0]:7000"] {
            let error = any.parse::<Advertise>().unwrap_err();
            assert!(matches!(error, AdvertiseError::Unspecified(_)), "{any}: {error:?}");
            assert!(error.to_string().contains("not an address clients can connect to"), "{error}");
        }
        assert!(matches!("10.0.0.1:70000".parse::<Advertise>(), Err(AdvertiseError::BadPort(_))));
        assert!(matches!(":80".parse::<Advertise>(), Err(AdvertiseError::Host(NameError::Empty))));
        assert!(matches!(
            "a b:80".parse::<Advertise>(),
            Err(AdvertiseError::Host(NameError::BadByte { .. }))
        ));
    }

    #[test]
    fn the_default_backend_id_is_stable_and_tells_services_and_addresses_apart() {
        let game = ServiceName::new("game").unwrap();
        let chat = ServiceName::new("chat").unwrap();
        let a: Advertise = "10.0.0.1:7000".parse().unwrap();
        let b: Advertise = "10.0.0.2:7000".parse().unwrap();
        assert_eq!(default_backend_id(&game, &a), default_backend_id(&game, &a.to_string().parse().unwrap()));
        assert_ne!(default_backend_id(&game, &a), default_backend_id(&chat, &a));
        assert_ne!(default_backend_id(&game, &a), default_backend_id(&game, &b));
    }

    #[test]
    fn secrets_are_long_enough_and_never_printed() {
        assert_eq!(Secret::new(*b"short").unwrap_err().setting, "secret-file");
        let secret = Secret::from_file_text("0123456789abcdef\n").unwrap();
        assert_eq!(secret.as_bytes(), b"0123456789abcdef");
        assert_eq!(format!("{secret:?}"), "Secret(16 bytes)");
    }
}
