//! The settings tables of the docs and the README, written from the definitions; a
//! test keeps the files' tables equal to them.

use super::catalog::CATALOG;
use super::info::SettingInfo;

/// The line before a generated table in a Markdown file.
pub const BEGIN: &str = "<!-- settings table: written from crates/cli/src/settings/catalog.rs; \
                         `LOADWISE_BLESS=1 cargo test -p loadwise-cli --test config` rewrites it -->";

/// The line after a generated table.
pub const END: &str = "<!-- end of the settings table -->";

/// docs/configuration.md's table: every setting with its file key, flag, variable,
/// default, bounds, whether a reload applies it, and what it does.
pub fn configuration_table() -> String {
    let mut table = String::from(
        "| file key | flag | environment variable | default | bounds | live | meaning |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for info in CATALOG {
        let live = if info.live { "yes" } else { "no" };
        let row = [
            code(&info.file_key()),
            code(&format!("--{}", info.long)),
            code(info.var),
            default(info),
            bounds(info),
            live.to_owned(),
            cell(info.summary),
        ];
        table.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    table
}

/// The README's table of `loadwise serve`: every setting's flag, default, bounds and
/// what it does, then the options that are not settings.
pub fn readme_table() -> String {
    let mut table = String::from("| flag | default | bounds | meaning |\n|---|---|---|---|\n");
    for info in CATALOG {
        let flag = code(&format!("--{} {}", info.long, info.value_name));
        let row = [flag, default(info), bounds(info), cell(info.summary)];
        table.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    table.push_str(
        "| `--config PATH` | none | | a TOML file with any of these settings (`LOADWISE_CONFIG`) |\n\
         | `--log-format text\\|json` | `text` | | JSON writes one object per line (`LOADWISE_LOG_FORMAT`) |\n",
    );
    table
}

/// `text` as Markdown code in a table cell.
fn code(text: &str) -> String {
    format!("`{}`", text.replace('|', "\\|"))
}

/// Text in a table cell: a `|` would end the cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn default(info: &SettingInfo) -> String {
    match (info.docs_default, (info.default)()) {
        (Some(text), _) => cell(text),
        (None, Some(value)) => code(&value),
        (None, None) => "none".to_owned(),
    }
}

fn bounds(info: &SettingInfo) -> String {
    (info.bounds)().map(|(min, max)| format!("{} to {}", code(&min), code(&max))).unwrap_or_default()
}

/// `text` with the part between [`BEGIN`] and [`END`] replaced by `table`; `None`
/// without both markers.
pub fn with_table(text: &str, table: &str) -> Option<String> {
    let start = text.find(BEGIN)? + BEGIN.len();
    let end = start + text[start..].find(END)?;
    Some(format!("{}\n{table}{}", &text[..start], &text[end..]))
}
