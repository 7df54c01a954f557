//! Settings written out as a commented TOML file: the example with every default, and
//! the settings in force (`loadwise config show`), secrets hidden.

use std::fmt::Write as _;

use super::catalog::{CATALOG, Layer};
use super::info::SettingInfo;
use super::layer::{SERVICES, service_table};
use super::model::Settings;

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

/// `settings` as a configuration file. A secret (an inline admin token) is not printed.
pub fn render(settings: &Settings) -> String {
    render_with_header(settings, SHOW_HEADER)
}

fn render_with_header(settings: &Settings, header: &str) -> String {
    let layer = Layer::from_settings(settings);
    let values = layer.values();
    let mut out = header.to_owned();
    let mut section = None;
    let mut services_written = false;
    for info in CATALOG {
        let (table, key) = info.table_key();
        if info.per_service.is_some() {
            if !services_written {
                // Each service's table is a section of its own: what follows needs a header.
                section = table;
                write_services(&mut out, &layer);
                services_written = true;
            }
            continue;
        }
        if table != section {
            section = table;
            let _ = write!(out, "\n[{}]\n", table.unwrap_or_default());
        }
        let value =
            values.iter().find(|(known, _)| known.key == info.key).and_then(|(_, value)| value.as_ref());
        out.push('\n');
        write_doc(&mut out, info);
        write_value(&mut out, info, key, value);
    }
    out
}

fn write_doc(out: &mut String, info: &SettingInfo) {
    for line in info.doc.lines() {
        let _ = writeln!(out, "# {}", line.trim());
    }
    let bounds = (info.bounds)().map(|(min, max)| format!("; from {min} to {max}")).unwrap_or_default();
    let restart = if info.live { "" } else { "; needs a restart" };
    let (flag, env) = (info.long, info.var);
    match info.per_service {
        None => {
            let _ = writeln!(out, "# (--{flag}, {env}{bounds}{restart})");
        }
        Some(_) => {
            let _ = writeln!(
                out,
                "# (--{flag} NAME=VALUE, repeated; {env}=\"NAME=VALUE;NAME=VALUE\"{bounds}{restart})"
            );
        }
    }
}

/// The doc of every per-service setting, then each service's table with what it sets,
/// or, with none, a commented example table.
fn write_services(out: &mut String, layer: &Layer) {
    let per_service: Vec<&SettingInfo> = CATALOG.iter().filter(|info| info.per_service.is_some()).collect();
    for info in &per_service {
        out.push('\n');
        write_doc(out, info);
    }
    let services = layer.service_values();
    for (index, (name, values)) in services.iter().enumerate() {
        let blank = if index > 0 { "\n" } else { "" };
        let _ = writeln!(out, "{blank}[{}]", service_table(name.as_str()));
        for (info, value) in values {
            let _ = writeln!(out, "{} = {value}", info.table_key().1);
        }
    }
    if services.is_empty() {
        let _ = writeln!(out, "# [{SERVICES}.{EXAMPLE_SERVICE}]");
        for info in per_service {
            let _ = writeln!(out, "# {} = {}", info.table_key().1, info.example.unwrap_or("\"\""));
        }
    }
}

/// The service the example file's commented table is for.
const EXAMPLE_SERVICE: &str = "search";

fn write_value(out: &mut String, info: &SettingInfo, key: &str, value: Option<&toml::Value>) {
    match value {
        Some(_) if info.secret => {
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
