//! What one setting is, as the example file, `config show`, the docs and the errors
//! see it: [`SettingInfo`].

/// How the catalogue writes the table of a per-service setting.
pub const SERVICE_TABLE: &str = "services.NAME";

/// One setting, as the example file, `config show`, the docs and the errors see it.
#[derive(Debug, Clone, Copy)]
pub struct SettingInfo {
    /// The setting's name: its key in the file (`admin.` keys live in the `[admin]`
    /// table), and, through one rule, its flag and variable. A per-service setting's
    /// name is `service_` and its key in each `[services.NAME]` table.
    pub key: &'static str,
    /// The flag without its dashes in front (`max-clock-skew`), also the name a
    /// [`ConfigError`](loadwise_protocol::config::ConfigError) gives.
    pub long: &'static str,
    /// The environment variable: `LOADWISE_MAX_CLOCK_SKEW`.
    pub var: &'static str,
    /// Whether a reload (SIGHUP) applies it; if not, it needs a restart.
    pub live: bool,
    /// What it does, for the example file and `--help` (lines, each led by a space).
    pub doc: &'static str,
    /// What it does in a few words, for the tables of the docs.
    pub summary: &'static str,
    /// What its flag's value is called in `--help`: `DURATION`, `ADDR|off`.
    pub value_name: &'static str,
    /// A value to show, commented out, for a setting that is unset by default.
    pub example: Option<&'static str>,
    /// The default as the docs write it, when its value says less (`loopback and
    /// private ranges`).
    pub docs_default: Option<&'static str>,
    /// Whether its value is never printed (help, `config show`).
    pub secret: bool,
    /// For a setting given per service, its key in each `[services.NAME]` table. Its
    /// flag is repeated (`--service-scoring NAME=VALUE`), and its variable holds such
    /// entries separated by `;`.
    pub per_service: Option<&'static str>,
    /// The default as a flag would take it; `None` for a setting unset by default.
    pub default: fn() -> Option<String>,
    /// The bounds, lowest and highest, as the help and docs write them.
    pub bounds: fn() -> Option<(String, String)>,
}

impl SettingInfo {
    /// The flag's name without dashes in front, also the name a
    /// [`ConfigError`](loadwise_protocol::config::ConfigError) gives: `max-clock-skew`.
    pub fn flag(&self) -> String {
        self.long.to_owned()
    }

    /// The environment variable: `LOADWISE_MAX_CLOCK_SKEW`, `LOADWISE_ADMIN_LISTEN`.
    pub fn env(&self) -> String {
        self.var.to_owned()
    }

    /// The name in the `[admin]` table, in each `[services.NAME]` table (given as
    /// [`SERVICE_TABLE`](SERVICE_TABLE)), or at the top level.
    pub fn table_key(&self) -> (Option<&'static str>, &'static str) {
        if let Some(key) = self.per_service {
            return (Some(SERVICE_TABLE), key);
        }
        match self.key.split_once('.') {
            Some((table, key)) => (Some(table), key),
            None => (None, self.key),
        }
    }

    /// Where the setting is in the file, as a dotted key: `ttl`, `admin.listen`,
    /// `services.NAME.scoring`.
    pub fn file_key(&self) -> String {
        match self.table_key() {
            (Some(table), key) => format!("{table}.{key}"),
            (None, key) => key.to_owned(),
        }
    }
}
