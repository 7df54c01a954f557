//! One source's settings, as the configuration file spells them: every setting is
//! optional, and a key the model does not know is an error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::catalog::SettingInfo;
use super::text::{AdminListen, TlsListenAddr, as_duration, as_text, service_tables};
use super::{Settings, TokenSource};
use loadwise_core::scoring::Scoring;
use loadwise_core::selection::Policy;
use loadwise_protocol::config::{ConfigError, ensure};
use loadwise_protocol::v2::ServiceName;
use loadwise_server::netlist::NetList;

/// The name of the table of `[services.NAME]` tables.
pub(super) const SERVICES: &str = "services";

/// The dotted name of a service's table: `services.search`, `services."a.b"` (a
/// service name's dots would otherwise nest tables).
pub(super) fn service_table(name: &str) -> String {
    if name.contains('.') { format!("{SERVICES}.\"{name}\"") } else { format!("{SERVICES}.{name}") }
}

/// The settings one source gives; `None` leaves a setting to the sources below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    #[serde(default, with = "as_text", skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    #[serde(default, with = "as_duration", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    #[serde(default, with = "as_duration", skip_serializing_if = "Option::is_none")]
    pub max_clock_skew: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backends: Option<usize>,
    #[serde(default, with = "as_duration", skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_cost: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cost: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_client_connections: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_connections: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_peer: Option<usize>,
    #[serde(default, with = "as_duration", skip_serializing_if = "Option::is_none")]
    pub first_frame_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_len: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_v2_frame_len: Option<u16>,
    #[serde(default, with = "as_duration", skip_serializing_if = "Option::is_none")]
    pub frame_timeout: Option<Duration>,
    /// Zero keeps idle connections open.
    #[serde(default, with = "as_duration", skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, with = "as_duration", skip_serializing_if = "Option::is_none")]
    pub write_timeout: Option<Duration>,
    #[serde(default, with = "as_duration", skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<Duration>,
    #[serde(default, with = "as_text", skip_serializing_if = "Option::is_none")]
    pub legacy_heartbeat_networks: Option<NetList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_file: Option<PathBuf>,
    #[serde(default, with = "as_duration", skip_serializing_if = "Option::is_none")]
    pub ticket_lifetime: Option<Duration>,
    #[serde(default, with = "as_text", skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<TlsListenAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    #[serde(default, with = "as_text", skip_serializing_if = "Option::is_none")]
    pub default_service: Option<ServiceName>,
    #[serde(default, with = "as_text", skip_serializing_if = "Option::is_none")]
    pub scoring: Option<Scoring>,
    #[serde(default, skip_serializing_if = "AdminLayer::is_empty")]
    pub admin: AdminLayer,
    /// The `[services.NAME]` tables. A higher source's table replaces a lower one's
    /// setting by setting, service by service.
    #[serde(default, with = "service_tables", skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<ServiceName, ServiceLayer>,
}

/// A `[services.NAME]` table: what one service does otherwise than the top level says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceLayer {
    #[serde(default, with = "as_text", skip_serializing_if = "Option::is_none")]
    pub scoring: Option<Scoring>,
}

/// The `[admin]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminLayer {
    #[serde(default, with = "as_text", skip_serializing_if = "Option::is_none")]
    pub listen: Option<AdminListen>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl AdminLayer {
    fn is_empty(&self) -> bool {
        *self == AdminLayer::default()
    }
}

impl Layer {
    /// Parses a configuration file's text. The message, on one line, quotes the
    /// offending line, which names the key.
    pub fn parse(text: &str) -> Result<Layer, String> {
        toml::from_str(text).map_err(|error| describe(text, &error) + &retired_hint(text))
    }

    /// Every setting of `settings`, as a layer that sets them all (the admin token
    /// included: callers that print it must hide it).
    pub fn from_settings(settings: &Settings) -> Layer {
        let server = &settings.server;
        let (dispatch, load, connection) = (&server.dispatch, &server.dispatch.load, &server.connection);
        let (token, token_file) = match &settings.admin.token {
            None => (None, None),
            Some(TokenSource::Inline(token)) => (Some(token.clone()), None),
            Some(TokenSource::File(path)) => (None, Some(path.clone())),
        };
        Layer {
            listen: Some(server.listen),
            policy: Some(dispatch.policy),
            ttl: Some(dispatch.ttl),
            max_clock_skew: Some(dispatch.max_clock_skew),
            max_backends: Some(dispatch.max_backends),
            slow_start: Some(load.slow_start),
            prior_cost: Some(load.prior_cost),
            min_cost: Some(load.min_cost),
            max_cost: Some(load.max_cost),
            max_client_connections: Some(server.max_client_connections),
            max_pending_connections: Some(server.max_pending_connections),
            max_connections_per_peer: Some(server.max_connections_per_peer),
            first_frame_timeout: Some(connection.first_frame_timeout),
            max_frame_len: Some(connection.max_frame_len),
            max_v2_frame_len: Some(connection.max_v2_frame_len),
            frame_timeout: Some(connection.frame_timeout),
            idle_timeout: Some(connection.idle_timeout.unwrap_or(Duration::ZERO)),
            write_timeout: Some(connection.write_timeout),
            shutdown_grace: Some(server.shutdown_grace),
            legacy_heartbeat_networks: Some(connection.legacy_heartbeats.clone()),
            auth_secret_file: settings.auth_secret_file.clone(),
            ticket_lifetime: Some(connection.ticket_lifetime),
            tls_listen: Some(settings.tls.listen),
            tls_cert: settings.tls.cert.clone(),
            tls_key: settings.tls.key.clone(),
            default_service: Some(dispatch.default_service.clone()),
            scoring: Some(dispatch.scoring.clone()),
            admin: AdminLayer { listen: Some(settings.admin.listen), token, token_file },
            services: dispatch
                .service_scoring
                .iter()
                .map(|(name, scoring)| (name.clone(), ServiceLayer { scoring: Some(scoring.clone()) }))
                .collect(),
        }
    }

    /// Sets in `settings` what this layer sets. Fails only when the layer gives the
    /// admin token twice (inline and from a file).
    pub fn apply(&self, settings: &mut Settings) -> Result<(), ConfigError> {
        let server = &mut settings.server;
        let dispatch = &mut server.dispatch;
        set(&mut server.listen, self.listen);
        set(&mut dispatch.policy, self.policy);
        set(&mut dispatch.ttl, self.ttl);
        set(&mut dispatch.max_clock_skew, self.max_clock_skew);
        set(&mut dispatch.max_backends, self.max_backends);
        set(&mut dispatch.load.slow_start, self.slow_start);
        set(&mut dispatch.load.prior_cost, self.prior_cost);
        set(&mut dispatch.load.min_cost, self.min_cost);
        set(&mut dispatch.load.max_cost, self.max_cost);
        set(&mut dispatch.default_service, self.default_service.clone());
        set(&mut dispatch.scoring, self.scoring.clone());
        for (name, service) in &self.services {
            if let Some(scoring) = &service.scoring {
                dispatch.service_scoring.insert(name.clone(), scoring.clone());
            }
        }
        set(&mut server.max_client_connections, self.max_client_connections);
        set(&mut server.max_pending_connections, self.max_pending_connections);
        set(&mut server.max_connections_per_peer, self.max_connections_per_peer);
        let connection = &mut server.connection;
        set(&mut connection.first_frame_timeout, self.first_frame_timeout);
        set(&mut connection.max_frame_len, self.max_frame_len);
        set(&mut connection.max_v2_frame_len, self.max_v2_frame_len);
        set(&mut connection.frame_timeout, self.frame_timeout);
        set(&mut connection.idle_timeout, self.idle_timeout.map(|idle| (!idle.is_zero()).then_some(idle)));
        set(&mut connection.write_timeout, self.write_timeout);
        set(&mut connection.legacy_heartbeats, self.legacy_heartbeat_networks.clone());
        set(&mut connection.ticket_lifetime, self.ticket_lifetime);
        set(&mut server.shutdown_grace, self.shutdown_grace);
        if let Some(path) = &self.auth_secret_file {
            settings.auth_secret_file = Some(path.clone());
        }
        self.apply_tls(settings);
        self.admin.apply(&mut settings.admin)
    }

    /// Sets the TLS settings this layer gives, and the listener they make with those
    /// of the layers below (validated once all are laid).
    fn apply_tls(&self, settings: &mut Settings) {
        let tls = &mut settings.tls;
        set(&mut tls.listen, self.tls_listen);
        if let Some(cert) = &self.tls_cert {
            tls.cert = Some(cert.clone());
        }
        if let Some(key) = &self.tls_key {
            tls.key = Some(key.clone());
        }
        settings.server.tls = tls.listener();
    }

    /// Whether this layer sets `key` (a catalogue key such as `ttl` or `admin.listen`);
    /// a per-service setting, for any service.
    pub fn sets(&self, key: &str) -> bool {
        let table = self.table();
        if let Some(inner) = SettingInfo::find(key).and_then(|info| info.per_service) {
            let services = table.get(SERVICES).and_then(toml::Value::as_table);
            return services
                .into_iter()
                .flat_map(|all| all.values())
                .any(|service| service.get(inner).is_some());
        }
        match key.split_once('.') {
            Some((section, key)) => table.get(section).and_then(|section| section.get(key)).is_some(),
            None => table.contains_key(key),
        }
    }

    /// The layer as a TOML table (only the settings it sets).
    pub fn table(&self) -> toml::Table {
        match toml::Value::try_from(self) {
            Ok(toml::Value::Table(table)) => table,
            _ => unreachable!("a layer serializes to a table"),
        }
    }
}

impl AdminLayer {
    fn apply(&self, admin: &mut super::AdminSettings) -> Result<(), ConfigError> {
        set(&mut admin.listen, self.listen);
        let both = self.token.is_some() && self.token_file.is_some();
        ensure(!both, "admin-token", "give the admin token or a file to read it from, not both")?;
        if let Some(token) = &self.token {
            admin.token = Some(TokenSource::Inline(token.clone()));
        }
        if let Some(path) = &self.token_file {
            admin.token = Some(TokenSource::File(path.clone()));
        }
        Ok(())
    }
}

/// Settings that no longer exist, and what took their place.
pub(crate) const RETIRED: &[(&str, &str)] = &[("max_connections", MAX_CONNECTIONS_RETIRED)];

/// The variables of settings that no longer exist, and what took their place.
pub const RETIRED_VARIABLES: &[(&str, &str)] = &[("LOADWISE_MAX_CONNECTIONS", MAX_CONNECTIONS_RETIRED)];

/// What replaced `max_connections`.
pub const MAX_CONNECTIONS_RETIRED: &str = "max_connections was replaced by max_client_connections, \
    max_pending_connections and max_connections_per_peer; backend connections count against max_backends";

/// ` (what replaced it)` when the file sets a retired setting, else nothing.
fn retired_hint(text: &str) -> String {
    let sets = |key: &str| {
        text.lines().any(|line| {
            let rest = line.trim_start().strip_prefix(key);
            rest.is_some_and(|rest| rest.trim_start().starts_with('='))
        })
    };
    RETIRED.iter().find(|(key, _)| sets(key)).map(|(_, hint)| format!(" ({hint})")).unwrap_or_default()
}

/// `line 3, `ttl = 3`: invalid type: ...`.
fn describe(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else { return message.to_owned() };
    let start = span.start.min(text.len());
    let number = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(number - 1).unwrap_or_default().trim();
    format!("line {number}, `{line}`: {message}")
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}
