//! What changed between two loads of the settings, and whether each change applies
//! live or needs a restart. The admin token's text and the auth secret are never shown.

use super::Loaded;
use super::catalog::{CATALOG, SettingInfo};
use super::layer::{Layer, SERVICES, service_table};

/// One setting whose value differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The file key, such as `ttl`, `admin.listen` or `services.search.scoring`.
    pub key: String,
    pub old: String,
    pub new: String,
    /// Whether a reload applies it; if not, it takes a restart.
    pub live: bool,
}

/// Every setting that differs from `old` to `new`, in catalogue order.
pub fn diff(old: &Loaded, new: &Loaded) -> Vec<Change> {
    let before = Layer::from_settings(&old.settings).table();
    let after = Layer::from_settings(&new.settings).table();
    let mut changes = Vec::new();
    for info in CATALOG {
        if let Some(inner) = info.per_service {
            changes.extend(service_changes(info, inner, &before, &after));
            continue;
        }
        let (old_text, new_text) = match info.key {
            "admin.token" => hidden_token(old.admin_token.as_deref(), new.admin_token.as_deref()),
            "auth_secret_file" => secret_file(old, new, &before, &after),
            _ => (lookup(&before, info.key), lookup(&after, info.key)),
        };
        if old_text != new_text {
            changes.push(Change { key: info.key.to_owned(), old: old_text, new: new_text, live: info.live });
        }
    }
    changes
}

/// A change for each service whose `inner` setting differs, by service name.
fn service_changes(
    info: &SettingInfo,
    inner: &str,
    before: &toml::Table,
    after: &toml::Table,
) -> Vec<Change> {
    let services = |table: &toml::Table| table.get(SERVICES).and_then(toml::Value::as_table).cloned();
    let (before, after) = (services(before).unwrap_or_default(), services(after).unwrap_or_default());
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let text = |table: &toml::Table, name: &str| show(table.get(name).and_then(|service| service.get(inner)));
    names
        .into_iter()
        .map(|name| Change {
            key: format!("{}.{inner}", service_table(name)),
            old: text(&before, name),
            new: text(&after, name),
            live: info.live,
        })
        .filter(|change| change.old != change.new)
        .collect()
}

/// A value as the log shows it: strings without quotes, `unset` when absent.
fn lookup(table: &toml::Table, key: &str) -> String {
    let value = match key.split_once('.') {
        Some((section, key)) => table.get(section).and_then(|inner| inner.get(key)),
        None => table.get(key),
    };
    show(value)
}

fn show(value: Option<&toml::Value>) -> String {
    match value {
        None => "unset".to_owned(),
        Some(toml::Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// The secret file's path; a new secret in the same file says so, without showing it.
fn secret_file(old: &Loaded, new: &Loaded, before: &toml::Table, after: &toml::Table) -> (String, String) {
    let (old_path, mut new_path) = (lookup(before, "auth_secret_file"), lookup(after, "auth_secret_file"));
    let secret = |loaded: &Loaded| loaded.settings.server.connection.secret.clone();
    if old_path == new_path && secret(old) != secret(new) {
        new_path.push_str(" (new secret)");
    }
    (old_path, new_path)
}

fn hidden_token(old: Option<&str>, new: Option<&str>) -> (String, String) {
    let describe = |token: Option<&str>| if token.is_some() { "set (hidden)" } else { "unset" };
    match (old, new) {
        (Some(a), Some(b)) if a != b => ("set (hidden)".to_owned(), "changed (hidden)".to_owned()),
        _ => (describe(old).to_owned(), describe(new).to_owned()),
    }
}
