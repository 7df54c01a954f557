//! What `loadwise serve` runs with: [`Settings`] and its parts, and the settings a
//! process loaded ([`Loaded`]).

use std::path::PathBuf;

use super::descriptors::Shrunk;
use super::text::{AdminListen, HostList, TlsListenAddr};
use loadwise_protocol::config::ConfigError;
use loadwise_server::admin::AdminLimits;
use loadwise_server::{ServerConfig, TlsListen};

/// Everything `loadwise serve` runs with: the dispatcher's server and its admin side.
/// Its default is every setting's default.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub server: ServerConfig,
    pub admin: AdminSettings,
    /// The file the v2 shared secret is read from, at start and at each reload, into
    /// `server.connection.secret`: the secret itself stays out of argv and the file.
    pub auth_secret_file: Option<PathBuf>,
    /// The TLS listener as given. Its three settings may come from different sources,
    /// so they are kept apart until all are laid over each other; when complete they
    /// are `server.tls`.
    pub tls: TlsSettings,
}

/// The TLS listener's settings as given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    pub listen: TlsListenAddr,
    /// The certificate chain, PEM.
    pub cert: Option<PathBuf>,
    /// The private key, PEM.
    pub key: Option<PathBuf>,
}

impl TlsSettings {
    /// The listener, if the settings make a whole one.
    pub fn listener(&self) -> Option<TlsListen> {
        Some(TlsListen { listen: self.listen.addr()?, cert: self.cert.clone()?, key: self.key.clone()? })
    }

    /// Fails, naming the setting, unless the three are all given or none is: half a
    /// listener is a mistake, not a wish for none.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (setting, reason) = match (self.listen.addr(), &self.cert, &self.key) {
            (Some(_), Some(_), Some(_)) | (None, None, None) => return Ok(()),
            (Some(_), None, Some(_)) => {
                ("tls-listen", "a TLS listener needs tls_cert (a PEM certificate chain)")
            }
            (Some(_), Some(_), None) => ("tls-listen", "a TLS listener needs tls_key (a PEM private key)"),
            (Some(_), None, None) => ("tls-listen", "a TLS listener needs tls_cert and tls_key (PEM files)"),
            (None, Some(_), _) => {
                ("tls-cert", "no TLS listener uses it: set tls_listen too, or remove tls_cert")
            }
            (None, None, Some(_)) => {
                ("tls-key", "no TLS listener uses it: set tls_listen too, or remove tls_key")
            }
        };
        Err(ConfigError::new(setting, reason))
    }
}

/// The admin HTTP API's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminSettings {
    /// Where the admin API listens, or off.
    pub listen: AdminListen,
    /// Where the bearer token for operator actions comes from; none refuses actions.
    pub token: Option<TokenSource>,
    /// Connections, timeouts and sizes; its connections count against the
    /// descriptor budget with the main port's.
    pub limits: AdminLimits,
    /// Names the Host header may carry beyond the listen address and loopback.
    pub allowed_hosts: Option<HostList>,
}

impl AdminSettings {
    /// Fails on an empty inline token: every request would match it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let empty = matches!(&self.token, Some(TokenSource::Inline(token)) if token.trim().is_empty());
        let reason = "must not be empty (leave it unset to refuse operator actions)";
        loadwise_protocol::config::ensure(!empty, "admin-token", reason)
    }
}

/// Where the admin token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Given as is (flag, variable or file key `admin.token`).
    Inline(String),
    /// Read from this file at start and at each reload, so secrets stay out of argv
    /// and the configuration file.
    File(PathBuf),
}

impl Settings {
    /// The runtime's own defaults, which the settings' defaults are laid over (they
    /// also hold what no setting names).
    pub(super) fn base() -> Settings {
        Settings {
            server: ServerConfig::default(),
            admin: AdminSettings::default(),
            auth_secret_file: None,
            tls: TlsSettings::default(),
        }
    }

    /// Puts together what several settings make: the TLS listener, once its three
    /// settings are laid (it is validated with the rest).
    pub(super) fn finish(&mut self) {
        self.server.tls = self.tls.listener();
    }

    /// Keeps the settings that cannot change while running (listen addresses, the TLS
    /// listener, the default service) as they are in `running`.
    pub fn keep_restart_only(&mut self, running: &Settings) {
        self.server.listen = running.server.listen;
        self.admin.listen = running.admin.listen;
        self.admin.limits = running.admin.limits.clone();
        self.admin.allowed_hosts = running.admin.allowed_hosts.clone();
        self.tls = running.tls.clone();
        self.server.tls = running.server.tls.clone();
        // Backends already registered stay in the running service's pool: renaming it
        // live would part legacy logins from them.
        self.server.dispatch.default_service = running.server.dispatch.default_service.clone();
    }
}

/// The settings a process loads, with its admin token read.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub settings: Settings,
    /// The admin token's text, read from its source; `None` refuses actions.
    pub admin_token: Option<String>,
    /// The budgets left at their default that were lowered to fit the open-file
    /// limit, for the caller to warn about.
    pub shrunk: Vec<Shrunk>,
}
