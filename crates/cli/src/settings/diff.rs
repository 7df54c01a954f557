//! What changed between two loads of the settings, and whether each change applies
//! live or needs a restart. The admin token's text and the auth secret are never shown.

use std::collections::BTreeMap;

use super::catalog::{CATALOG, Layer};
use super::info::SettingInfo;
use super::layer::service_table;
use super::model::Loaded;

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
    let (before, after) = (Layer::from_settings(&old.settings), Layer::from_settings(&new.settings));
    let (old_values, new_values) = (before.values(), after.values());
    let mut changes = Vec::new();
    for info in CATALOG {
        if info.per_service.is_some() {
            changes.extend(service_changes(info, &before, &after));
            continue;
        }
        let text = |values: &[(&SettingInfo, Option<toml::Value>)]| {
            show(values.iter().find(|(known, _)| known.key == info.key).and_then(|(_, value)| value.as_ref()))
        };
        let (old_text, new_text) = match info.key {
            "admin.token" => hidden_token(old.admin_token.as_deref(), new.admin_token.as_deref()),
            "auth_secret_file" => secret_file(old, new, text(&old_values), text(&new_values)),
            _ => (text(&old_values), text(&new_values)),
        };
        if old_text != new_text {
            changes.push(Change { key: info.key.to_owned(), old: old_text, new: new_text, live: info.live });
        }
    }
    changes
}

/// A change for each service whose value of the per-service setting `info` differs,
/// by service name.
fn service_changes(info: &SettingInfo, before: &Layer, after: &Layer) -> Vec<Change> {
    let by_service = |layer: &Layer| -> BTreeMap<String, String> {
        let services = layer.service_values().into_iter();
        services
            .filter_map(|(name, values)| {
                let value = values.into_iter().find(|(known, _)| known.key == info.key)?.1;
                Some((name.as_str().to_owned(), show(Some(&value))))
            })
            .collect()
    };
    let (before, after) = (by_service(before), by_service(after));
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let text = |values: &BTreeMap<String, String>, name: &str| {
        values.get(name).cloned().unwrap_or_else(|| "unset".into())
    };
    names
        .into_iter()
        .map(|name| Change {
            key: format!("{}.{}", service_table(name), info.table_key().1),
            old: text(&before, name),
            new: text(&after, name),
            live: info.live,
        })
        .filter(|change| change.old != change.new)
        .collect()
}

/// A value as the log shows it: strings without quotes, `unset` when absent.
fn show(value: Option<&toml::Value>) -> String {
    match value {
        None => "unset".to_owned(),
        Some(toml::Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// The secret file's path; a new secret in the same file says so, without showing it.
fn secret_file(old: &Loaded, new: &Loaded, old_path: String, mut new_path: String) -> (String, String) {
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
