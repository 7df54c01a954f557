//! What changed between two loads of the settings, and whether each change applies
//! live or needs a restart. The admin token's text is never shown.

use super::Loaded;
use super::catalog::CATALOG;
use super::layer::Layer;

/// One setting whose value differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The file key, such as `ttl` or `admin.listen`.
    pub key: &'static str,
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
        let (old_text, new_text) = if info.key == "admin.token" {
            hidden_token(old.admin_token.as_deref(), new.admin_token.as_deref())
        } else {
            (lookup(&before, info.key), lookup(&after, info.key))
        };
        if old_text != new_text {
            changes.push(Change { key: info.key, old: old_text, new: new_text, live: info.live });
        }
    }
    changes
}

/// A value as the log shows it: strings without quotes, `unset` when absent.
fn lookup(table: &toml::Table, key: &str) -> String {
    let value = match key.split_once('.') {
        Some((section, key)) => table.get(section).and_then(|inner| inner.get(key)),
        None => table.get(key),
    };
    match value {
        None => "unset".to_owned(),
        Some(toml::Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

fn hidden_token(old: Option<&str>, new: Option<&str>) -> (String, String) {
    let describe = |token: Option<&str>| if token.is_some() { "set (hidden)" } else { "unset" };
    match (old, new) {
        (Some(a), Some(b)) if a != b => ("set (hidden)".to_owned(), "changed (hidden)".to_owned()),
        _ => (describe(old).to_owned(), describe(new).to_owned()),
    }
}
