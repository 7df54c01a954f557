//! The settings of `loadwise serve` from a TOML file, the environment and flags: each
//! setting defined once, merging by precedence, validation, and what a reload changes.
//!
//! Every setting is defined once, in `catalog.rs`; its flag, variable, file key, doc,
//! default, bounds and place in [`Settings`] follow from that definition. Each source
//! is a [`Layer`] that sets some settings and leaves the rest alone. [`Sources::load`]
//! lays them over the defaults in order of precedence, lowest first (figment keeps
//! where each value came from): defaults, the file, then the environment and flags
//! (which clap has already merged, flags winning). Each value is checked against its
//! bounds, then the whole, and an error names the setting and where its value came
//! from. Per-service settings (`[services.NAME]` tables) merge service by service.
//! Files named by settings (the admin token, the auth secret) are read after the
//! merge, at each load.
//!
//! | file | its one job |
//! |---|---|
//! | `mod.rs` | [`Settings`], [`Sources`], the errors |
//! | `catalog.rs` | every setting's definition, once: [`CATALOG`] and [`Layer`] follow from it |
//! | `define.rs` | what a definition makes: the `settings!` macro, [`SettingInfo`], lenses |
//! | `value.rs` | how each type of setting is parsed, written, shown and bounded |
//! | `names.rs` | a setting's flag and variable, spelled from its key |
//! | `flags.rs` | the settings as clap flags and variables ([`SettingFlags`]) |
//! | `layer.rs` | [`Layer`]: parsing the file, laying one source over settings |
//! | `merge.rs` | the sources laid over each other (figment), and which gave each value |
//! | `text.rs` | settings written as text: durations, `off`-able addresses, service tables |
//! | `render.rs` | settings as a commented TOML file ([`example`], [`render`]) |
//! | `docs.rs` | the settings tables of the docs and the README |
//! | `diff.rs` | what changed between two loads, and whether it applies live |
//! | `descriptors.rs` | the connection budgets fitted to the open-file limit |

mod catalog;
mod define;
mod descriptors;
mod diff;
pub mod docs;
mod doors;
mod flags;
mod layer;
mod merge;
mod names;
mod render;
mod text;
mod value;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

pub use catalog::{AdminLayer, CATALOG, Layer, SERVICE_TABLE, ServiceLayer};
pub use define::SettingInfo;
pub use descriptors::{Budget, RESERVED_DESCRIPTORS, Shrunk, TooManyDescriptors, fit};
pub use diff::{Change, diff};
pub use doors::open_doors;
pub use flags::SettingFlags;
pub use layer::{MAX_CONNECTIONS_RETIRED, RETIRED_VARIABLES};
pub use render::{example, render};
pub use text::{
    AdminListen, BadHostList, BadListen, DEFAULT_ADMIN_LISTEN, HostList, TlsListenAddr, format_duration,
};
pub use value::{BadServiceScoring, BadServiceValue, ServiceScoring, ServiceValue, SettingValue};

use loadwise_protocol::config::ConfigError;
use loadwise_protocol::v2::auth::{Secret, SecretFileError};
use loadwise_server::admin::AdminLimits;
use loadwise_server::{ServerConfig, TlsListen};
use merge::{Merged, Rank};

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

impl Default for Settings {
    fn default() -> Self {
        let mut settings = Settings::base();
        Layer::defaults().apply_values(&mut settings);
        settings.finish();
        settings
    }
}

impl Settings {
    /// The runtime's own defaults, which the settings' defaults are laid over (they
    /// also hold what no setting names).
    fn base() -> Settings {
        Settings {
            server: ServerConfig::default(),
            admin: AdminSettings::default(),
            auth_secret_file: None,
            tls: TlsSettings::default(),
        }
    }

    /// Puts together what several settings make: the TLS listener, once its three
    /// settings are laid (it is validated with the rest).
    fn finish(&mut self) {
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

/// Where a process's settings come from, kept so that a reload reads them again.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The configuration file, if any; read again at each reload.
    pub file: Option<PathBuf>,
    /// The environment and the flags, merged: fixed for the life of the process.
    pub overrides: Layer,
    /// For each key the overrides set, how: the flag (`--ttl`) or the variable
    /// (`LOADWISE_TTL`). Errors name it.
    pub origins: BTreeMap<String, String>,
    /// The most file descriptors the process may open, which the connection budgets
    /// must fit under (see [`fit`]); `None` fits nothing.
    pub descriptor_limit: Option<u64>,
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    // The I/O error is part of the message rather than a `source`, so that error
    // chains do not print it twice.
    #[error("cannot read the configuration file {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("invalid configuration file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{error} (set by {origin})")]
    Invalid { error: ConfigError, origin: String },
    #[error("cannot read the admin token file {} (set by {origin}): {error}", path.display())]
    TokenFile { path: PathBuf, origin: String, error: std::io::Error },
    #[error("cannot read the auth secret file {} (set by {origin}): {error}", path.display())]
    SecretFile { path: PathBuf, origin: String, error: std::io::Error },
    #[error(transparent)]
    Descriptors(#[from] TooManyDescriptors),
    /// The sources could not be laid over each other (a value that reads back as
    /// another type than it was written: not expected of valid layers).
    #[error("cannot merge the settings: {0}")]
    Merge(String),
}

impl Sources {
    /// Reads the file (if any), merges it under the overrides, validates the result,
    /// fits the connection budgets to the descriptor limit, and reads the admin token
    /// and the auth secret.
    pub fn load(&self) -> Result<Loaded, SettingsError> {
        let file = match &self.file {
            Some(path) => read_file(path)?,
            None => Layer::default(),
        };
        let mut settings = self.merge(&file)?;
        let shrunk = match self.descriptor_limit {
            Some(limit) => self.fit_budgets(&mut settings, &file, limit)?,
            None => Vec::new(),
        };
        let admin_token = self.read_token(&settings, &file)?;
        settings.server.connection.secret = self.read_secret(&settings, &file)?;
        self.close_legacy_door(&mut settings, &file);
        Ok(Loaded { settings, admin_token, shrunk })
    }

    /// With a shared secret, legacy heartbeats (which carry no proof) are accepted only
    /// from networks the operator lists: the private-range default would let any host
    /// there take the default service's picks from authenticated backends.
    fn close_legacy_door(&self, settings: &mut Settings, file: &Layer) {
        let secret = settings.server.connection.secret.is_some();
        if secret && self.set_by(file, LEGACY_HEARTBEAT_NETWORKS).is_none() {
            settings.server.connection.legacy_heartbeats = loadwise_server::netlist::NetList::none();
        }
    }

    /// Fits the backend, client, pending and admin budgets under `limit`
    /// descriptors: explicit ones must fit, defaulted ones shrink (and are returned).
    /// The admin cap counts only when the admin API listens.
    fn fit_budgets(
        &self,
        settings: &mut Settings,
        file: &Layer,
        limit: u64,
    ) -> Result<Vec<Shrunk>, SettingsError> {
        let admin_on = settings.admin.listen.addr().is_some();
        let server = &mut settings.server;
        let mut values = vec![
            ("max-backends", &mut server.dispatch.max_backends),
            ("max-client-connections", &mut server.max_client_connections),
            ("max-pending-connections", &mut server.max_pending_connections),
        ];
        if admin_on {
            values.push(("admin-max-connections", &mut settings.admin.limits.max_connections));
        }
        let budgets: Vec<Budget> = values
            .iter()
            .map(|(setting, value)| Budget { setting, value: **value, origin: self.set_by(file, setting) })
            .collect();
        let (fitted, shrunk) = fit(limit, &budgets)?;
        for ((_, value), fitted) in values.iter_mut().zip(fitted) {
            **value = fitted;
        }
        Ok(shrunk)
    }

    /// Lays the file and then the overrides over the defaults, and validates: each
    /// value within its bounds, then the settings together.
    pub fn merge(&self, file: &Layer) -> Result<Settings, SettingsError> {
        let invalid =
            |error: ConfigError| SettingsError::Invalid { origin: self.origin(file, error.setting), error };
        file.check_one_token().map_err(invalid)?;
        self.overrides.check_one_token().map_err(invalid)?;
        let merged = self.merged(file);
        let mut layer = merged.layer().map_err(SettingsError::Merge)?;
        keep_one_token(&merged, &mut layer);
        layer.check_bounds().map_err(invalid)?;
        let mut settings = Settings::base();
        layer.apply_values(&mut settings);
        settings.finish();
        settings.tls.validate().map_err(invalid)?;
        settings.admin.validate().map_err(invalid)?;
        settings.server.validate().map_err(invalid)?;
        Ok(settings)
    }

    fn merged(&self, file: &Layer) -> Merged {
        Merged::new(self.file.as_deref(), file, &self.overrides)
    }

    fn read_token(&self, settings: &Settings, file: &Layer) -> Result<Option<String>, SettingsError> {
        match &settings.admin.token {
            None => Ok(None),
            Some(TokenSource::Inline(token)) => Ok(Some(token.clone())),
            Some(TokenSource::File(path)) => {
                read_token_file(path).map_err(|error| SettingsError::TokenFile {
                    path: path.clone(),
                    origin: self.origin(file, "admin-token-file"),
                    error,
                })
            }
        }
    }

    /// The secret in `auth_secret_file`, if one is named; too short a secret is an
    /// error naming the setting.
    fn read_secret(&self, settings: &Settings, file: &Layer) -> Result<Option<Secret>, SettingsError> {
        let Some(path) = &settings.auth_secret_file else { return Ok(None) };
        let origin = || self.origin(file, AUTH_SECRET_FILE);
        // Read as the agent reads its --secret-file: both ends must hold the same bytes.
        let secret = Secret::read_file(path).map_err(|error| match error {
            SecretFileError::Read { path, error } => {
                SettingsError::SecretFile { path, origin: origin(), error }
            }
            SecretFileError::Invalid(error) => SettingsError::Invalid {
                error: ConfigError::new(AUTH_SECRET_FILE, format!("{}: {}", path.display(), error.reason)),
                origin: origin(),
            },
        })?;
        Ok(Some(secret))
    }

    /// Where the value of `setting` (named as on the command line) came from: the
    /// highest-precedence source that sets it.
    pub fn origin(&self, file: &Layer, setting: &str) -> String {
        self.set_by(file, setting).unwrap_or_else(|| "the default".to_owned())
    }

    /// Which source sets `setting`, if any does; `None` for the default.
    fn set_by(&self, file: &Layer, setting: &str) -> Option<String> {
        let info = SettingInfo::find(setting)?;
        match self.merged(file).rank_of(info)? {
            Rank::Default => None,
            Rank::File => {
                let path = self
                    .file
                    .as_deref()
                    .map_or_else(|| "the configuration file".into(), |path| path.display().to_string());
                Some(format!("`{}` in {path}", info.file_key()))
            }
            Rank::Overrides => Some(match self.origins.get(info.key) {
                Some(how) => how.clone(),
                None => format!("--{} or {}", info.long, info.var),
            }),
        }
    }
}

/// Of an admin token given inline by one source and as a file by another, keeps the
/// higher source's: each source gives it one way, and a higher one replaces a lower
/// one whichever way each uses.
fn keep_one_token(merged: &Merged, layer: &mut Layer) {
    let admin = &mut layer.admin;
    if admin.token.is_none() || admin.token_file.is_none() {
        return;
    }
    let rank = |key| SettingInfo::find(key).and_then(|info| merged.rank_of(info));
    if rank("admin.token") > rank("admin.token_file") {
        admin.token_file = None;
    } else {
        admin.token = None;
    }
}

/// The longest configuration file read: far more than every setting takes.
const MAX_FILE_LEN: u64 = 1 << 20;

/// The longest admin token file read.
const MAX_TOKEN_FILE_LEN: u64 = 64 << 10;

/// The text of `path`, refused beyond `max` bytes before it is all read.
fn read_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        let message = format!("longer than {max} bytes");
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, message));
    }
    Ok(text)
}

/// Reads and parses a configuration file; unknown keys are errors.
pub fn read_file(path: &Path) -> Result<Layer, SettingsError> {
    let text = read_bounded(path, MAX_FILE_LEN)
        .map_err(|error| SettingsError::Read { path: path.to_owned(), error })?;
    Layer::parse(&text).map_err(|message| SettingsError::Parse { path: path.to_owned(), message })
}

/// The dispatcher's name for the secret file (the agent calls its own `secret-file`).
const AUTH_SECRET_FILE: &str = "auth-secret-file";
const LEGACY_HEARTBEAT_NETWORKS: &str = "legacy-heartbeat-networks";

/// The token is the file's text without surrounding whitespace (a trailing newline
/// is usual); an empty file means no token.
fn read_token_file(path: &Path) -> std::io::Result<Option<String>> {
    let text = read_bounded(path, MAX_TOKEN_FILE_LEN)?;
    let token = text.trim();
    Ok((!token.is_empty()).then(|| token.to_owned()))
}
