//! Settings written out as a commented TOML file: the example with every default, and
//! the settings in force (`loadwise config show`), the admin token hidden.

use std::fmt::Write as _;

use super::catalog::{CATALOG, SettingInfo};
use super::layer::{Layer, SERVICES, service_table};
use super::{Settings, TokenSource};

const EXAMPLE_HEADER: &str = "\
# loadwise serve configuration: `loadwise serve --config /etc/loadwise/loadwise.toml`.
#
# Every setting is shown with its default; delete the ones you do not change.
# Environment variables (LOADWISE_TTL=5s) override this file, and flags (--ttl 5s)
# override both. SIGHUP reloads this file and applies every setting live except those
# marked \"needs a restart\". Durations are written like 500ms, 3s, 2m.
";

const SHOW_HEADER: &str = "\
# The settings loadwise serve would run with: built-in defaults, overridden by the
# configuration file, then the environment, then flags.
";

/// A configuration file that sets every setting to its default, each with its
/// documentation; it parses back to [`Settings::default`].
pub fn example() -> String {
    render_with_header(&Settings::default(), EXAMPLE_HEADER)
}

/// `settings` as a configuration file. An inline admin token is not printed.
pub fn render(settings: &Settings) -> String {
    render_with_header(settings, SHOW_HEADER)
}

fn render_with_header(settings: &Settings, header: &str) -> String {
    let table = Layer::from_settings(settings).table();
    let mut out = header.to_owned();
    let mut section = None;
    for info in CATALOG {
        let (table_name, key) = info.table_key();
        if let Some(inner) = info.per_service {
            // Each service's table is its own section: what follows needs a header.
            section = table_name;
            out.push('\n');
            write_doc(&mut out, info);
            write_services(&mut out, info, inner, table.get(SERVICES));
            continue;
        }
        if table_name != section {
            section = table_name;
            let _ = write!(out, "\n[{}]\n", table_name.unwrap_or_default());
        }
        let value = match table_name {
            Some(name) => table.get(name).and_then(|inner| inner.get(key)),
            None => table.get(key),
        };
        out.push('\n');
        write_doc(&mut out, info);
        write_value(&mut out, info, key, value, settings);
    }
    out
}

fn write_doc(out: &mut String, info: &SettingInfo) {
    for line in info.doc.lines() {
        let _ = writeln!(out, "# {}", line.trim());
    }
    let restart = if info.live { "" } else { "; needs a restart" };
    match info.per_service {
        None => {
            let _ = writeln!(out, "# (--{}, {}{restart})", info.flag(), info.env());
        }
        Some(_) => {
            let (flag, env) = (info.flag(), info.env());
            let _ =
                writeln!(out, "# (--{flag} NAME=VALUE, repeated; {env}=\"NAME=VALUE;NAME=VALUE\"{restart})");
        }
    }
}

/// The `[services.NAME]` tables that set `inner`, or a commented example. (Each
/// per-service setting writes its own tables: a second one would need them grouped by
/// service, as TOML allows a table once.)
fn write_services(out: &mut String, info: &SettingInfo, inner: &str, services: Option<&toml::Value>) {
    let mut any = false;
    for (name, service) in services.and_then(toml::Value::as_table).into_iter().flatten() {
        if let Some(value) = service.get(inner) {
            let blank = if any { "\n" } else { "" };
            let _ = writeln!(out, "{blank}[{}]\n{inner} = {value}", service_table(name));
            any = true;
        }
    }
    if !any {
        let example = info.example.unwrap_or("\"\"");
        let _ = writeln!(out, "# [{SERVICES}.{EXAMPLE_SERVICE}]\n# {inner} = {example}");
    }
}

/// The service the example file's commented table is for.
const EXAMPLE_SERVICE: &str = "search";

fn write_value(
    out: &mut String,
    info: &SettingInfo,
    key: &str,
    value: Option<&toml::Value>,
    settings: &Settings,
) {
    let inline_token = matches!(settings.admin.token, Some(TokenSource::Inline(_)));
    match value {
        Some(_) if info.key == "admin.token" && inline_token => {
            let _ = writeln!(out, "# {key} = (set; not shown)");
        }
        Some(value) => {
            let _ = writeln!(out, "{key} = {value}");
        }
        None => {
            let example = info.example.unwrap_or("\"\"");
            let _ = writeln!(out, "# {key} = {example}");
        }
    }
}
