//! Loading the settings: the sources laid over the defaults in order of precedence,
//! checked, with the files they name read ([`Sources`], [`SettingsError`]).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::catalog::Layer;
use super::descriptors::{Budget, Shrunk, TooManyDescriptors, fit};
use super::info::SettingInfo;
use super::merge::{Merged, Rank};
use super::model::{Loaded, Settings, TokenSource};
use loadwise_protocol::config::ConfigError;
use loadwise_protocol::v2::auth::{Secret, SecretFileError};

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
    pub(super) fn fit_budgets(
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
