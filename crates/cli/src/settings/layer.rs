//! One source's settings, as the configuration file spells them ([`Layer`], made by
//! the definitions in `catalog.rs`): parsing the file, and laying a layer over settings.
//! Every setting is optional, and a key the model does not know is an error.

use super::catalog::Layer;
use super::model::Settings;
use loadwise_protocol::config::{ConfigError, ensure};

/// The name of the table of `[services.NAME]` tables.
pub(super) const SERVICES: &str = "services";

/// The dotted name of a service's table: `services.search`, `services."a.b"` (a
/// service name's dots would otherwise nest tables).
pub(super) fn service_table(name: &str) -> String {
    if name.contains('.') { format!("{SERVICES}.\"{name}\"") } else { format!("{SERVICES}.{name}") }
}

impl Layer {
    /// Parses a configuration file's text. The message, on one line, quotes the
    /// offending line, which names the key.
    pub fn parse(text: &str) -> Result<Layer, String> {
        toml::from_str(text).map_err(|error| describe(text, &error) + &retired_hint(text))
    }

    /// Sets in `settings` what this layer sets. Fails only when the layer gives the
    /// admin token twice (inline and from a file).
    pub fn apply(&self, settings: &mut Settings) -> Result<(), ConfigError> {
        self.check_one_token()?;
        self.apply_values(settings);
        settings.finish();
        Ok(())
    }

    /// Fails unless this layer gives the admin token at most one way.
    pub(super) fn check_one_token(&self) -> Result<(), ConfigError> {
        let both = self.admin.token.is_some() && self.admin.token_file.is_some();
        ensure(!both, "admin-token", "give the admin token or a file to read it from, not both")
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
    let start = floor_char_boundary(text, span.start);
    let number = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(number - 1).unwrap_or_default().trim();
    format!("line {number}, `{line}`: {message}")
}

/// The largest char boundary of `text` at or before `at`, so that slicing cannot panic.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

impl Default for Settings {
    fn default() -> Self {
        let mut settings = Settings::base();
        Layer::defaults().apply_values(&mut settings);
        settings.finish();
        settings
    }
}
