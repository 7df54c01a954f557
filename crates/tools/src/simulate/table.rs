//! Output: one row per policy, as aligned text, a Markdown table, or JSON.

use std::fmt::Write as _;
use std::str::FromStr;

use serde::Serialize;

use super::metrics::PolicyResult;
use super::slots::ModeResult;

/// How results are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// Aligned plain text for a terminal.
    #[default]
    Table,
    /// A GitHub-flavoured Markdown table, for the docs.
    Markdown,
    /// Every number, machine-readable.
    Json,
}

/// A format name that is not `table`, `markdown` or `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?} (expected table, markdown or json)")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "table" => Ok(Format::Table),
            "markdown" => Ok(Format::Markdown),
            "json" => Ok(Format::Json),
            _ => Err(UnknownFormat(text.into())),
        }
    }
}

/// One scenario's comparison, as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    pub description: Option<String>,
    pub seed: u64,
    pub results: Vec<PolicyResult>,
    /// For a scenario with capacity slots: a row per admission mode, printed instead
    /// of the policies' table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<Vec<ModeResult>>,
}

const HEADERS: [&str; 10] = [
    "policy",
    "peak hottest %",
    "avg hottest %",
    "avg max-min %",
    "avg stddev %",
    "worst burst max/mean",
    "time >90 %",
    "picks",
    "no backend",
    "lost",
];

/// The cells of one row, formatted.
fn cells(result: &PolicyResult) -> [String; 10] {
    [
        result.policy.to_string(),
        format!("{:.1}", result.peak_hottest),
        format!("{:.1}", result.mean_hottest),
        format!("{:.1}", result.mean_spread),
        format!("{:.1}", result.mean_std_dev),
        result.worst_burst.map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}")),
        format!("{:.1}", result.time_above_90 * 100.0),
        result.picks.to_string(),
        result.no_backend.to_string(),
        result.lost.to_string(),
    ]
}

/// The comparison table of one scenario's results.
pub fn render_table(results: &[PolicyResult], format: Format) -> String {
    let rows: Vec<Vec<String>> = results.iter().map(|result| cells(result).to_vec()).collect();
    match format {
        Format::Table => aligned(&HEADERS, &rows),
        Format::Markdown => markdown(&HEADERS, &rows),
        Format::Json => json(results),
    }
}

const SLOT_HEADERS: [&str; 6] = [
    "mode",
    "admitted",
    "rejected (no free place)",
    "rejected with a place free",
    "overshoot (clients)",
    "peak overshoot",
];

fn slot_cells(result: &ModeResult) -> Vec<String> {
    vec![
        result.mode.to_string(),
        result.admitted.to_string(),
        result.rejected.to_string(),
        result.refused_with_room.to_string(),
        result.overshoot.to_string(),
        result.peak_overshoot.to_string(),
    ]
}

/// The comparison table of a slot scenario: a row per admission mode.
pub fn render_slot_table(results: &[ModeResult], format: Format) -> String {
    let rows: Vec<Vec<String>> = results.iter().map(slot_cells).collect();
    match format {
        Format::Table => aligned(&SLOT_HEADERS, &rows),
        Format::Markdown => markdown(&SLOT_HEADERS, &rows),
        Format::Json => json(results),
    }
}

/// Every scenario's comparison: a heading, its description and its table each, or
/// one JSON array.
pub fn render_reports(reports: &[Report], format: Format) -> String {
    if format == Format::Json {
        return json(reports);
    }
    let mut out = String::new();
    for (index, report) in reports.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        out.push_str(&heading(report, format));
        match &report.slots {
            Some(slots) => out.push_str(&render_slot_table(slots, format)),
            None => out.push_str(&render_table(&report.results, format)),
        }
    }
    out
}

fn heading(report: &Report, format: Format) -> String {
    let mut out = String::new();
    let description = report.description.as_deref().map(str::trim).filter(|text| !text.is_empty());
    match format {
        Format::Markdown => {
            let _ = writeln!(out, "### {}\n", report.scenario);
            if let Some(text) = description {
                let _ = writeln!(out, "{text}\n");
            }
            let _ = writeln!(out, "Seed {}.\n", report.seed);
        }
        _ => {
            let _ = writeln!(out, "{} (seed {})", report.scenario, report.seed);
            if let Some(text) = description {
                let _ = writeln!(out, "{text}");
            }
        }
    }
    out
}

fn aligned(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|&header| header.to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths.iter().copied())
            .enumerate()
            .map(
                |(column, (cell, width))| {
                    if column == 0 { format!("{cell:<width$}") } else { format!("{cell:>width$}") }
                },
            )
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

fn markdown(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", headers.join(" | "));
    let rule: Vec<&str> = (0..headers.len()).map(|column| if column == 0 { "---" } else { "---:" }).collect();
    let _ = writeln!(out, "|{}|", rule.join("|"));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("results serialize");
    text.push('\n');
    text
}
