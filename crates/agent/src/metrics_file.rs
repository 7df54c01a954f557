//! The backend's metrics file: read at most 64 KiB of it, keep its good lines, and warn
//! once about each distinct problem (a missing file, a bad line) rather than every heartbeat.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use loadwise_protocol::v2::{MAX_METRICS, Metric, MetricName};

use crate::sample::Sample;

/// The most of a metrics file that is read: a file that grows without bound (a
/// backend appending instead of rewriting) costs no more than this per heartbeat.
pub const MAX_METRICS_FILE_LEN: u64 = 64 * 1024;

/// Parses `NAME VALUE` lines (blank lines and `#` comments skipped) into `sample`.
/// A bad line is left out and named in the returned problems; the others still count.
pub fn merge_metrics_text(text: &str, sample: &mut Sample) -> Vec<String> {
    let mut problems = Vec::new();
    for (number, line) in text.lines().enumerate().map(|(i, line)| (i + 1, line.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Err(reason) = merge_line(line, sample) {
            problems.push(format!("line {number}: {reason}"));
        }
    }
    problems
}

/// One `NAME VALUE` line into `sample`, or why it cannot be.
fn merge_line(line: &str, sample: &mut Sample) -> Result<(), String> {
    let (name, value) = line.split_once(char::is_whitespace).ok_or("expected NAME VALUE")?;
    let value: f64 = value.trim().parse().map_err(|_| format!("{:?} is not a number", value.trim()))?;
    if !value.is_finite() {
        return Err(format!("{name} is not finite"));
    }
    if name == "connections" {
        let count = (value >= 0.0 && value < f64::from(u32::MAX)).then_some(value as u32);
        sample.connections = Some(count.ok_or(format!("connections must be from 0 to {}", u32::MAX - 1))?);
        return Ok(());
    }
    let name = MetricName::new(name).map_err(|error| error.to_string())?;
    if sample.metrics.iter().any(|metric| metric.name == name) {
        return Err(format!("{name} is given twice"));
    }
    if sample.metrics.len() == MAX_METRICS {
        return Err(format!("more than {MAX_METRICS} metrics; {name} left out"));
    }
    sample.metrics.push(Metric { name, value });
    Ok(())
}

/// What one read of the file gave: its text (up to the cap) and what was wrong.
#[derive(Debug, Default, PartialEq)]
struct Read {
    text: String,
    problems: Vec<String>,
}

/// Reads at most [`MAX_METRICS_FILE_LEN`] bytes of `path`. Past the cap, only whole
/// lines are kept, so a value cut in two is not taken for a smaller one.
fn read_capped(path: &Path) -> Read {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Read {
                problems: vec!["missing (no backend figures are sent)".to_owned()],
                ..Read::default()
            };
        }
        Err(error) => {
            return Read { problems: vec![format!("cannot be opened: {error}")], ..Read::default() };
        }
    };
    let mut bytes = Vec::new();
    if let Err(error) = file.take(MAX_METRICS_FILE_LEN + 1).read_to_end(&mut bytes) {
        return Read { problems: vec![format!("cannot be read: {error}")], ..Read::default() };
    }
    let mut problems = Vec::new();
    if bytes.len() as u64 > MAX_METRICS_FILE_LEN {
        bytes.truncate(MAX_METRICS_FILE_LEN as usize);
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |end| end + 1);
        bytes.truncate(whole);
        problems.push(format!("larger than {MAX_METRICS_FILE_LEN} bytes; only its first lines are read"));
    }
    Read { text: String::from_utf8_lossy(&bytes).into_owned(), problems }
}

/// A metrics file followed across heartbeats: what it adds to each sample, and which
/// problems were already warned about.
#[derive(Debug)]
pub struct MetricsFile {
    path: PathBuf,
    /// The problems of the previous read: warned about when they appeared, and again
    /// only if they go away and come back.
    known: BTreeSet<String>,
}

impl MetricsFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        MetricsFile { path: path.into(), known: BTreeSet::new() }
    }

    /// Adds the file's good lines to `sample`; never fails, so that one bad line never
    /// stops the heartbeats. Returns the problems newly seen (each also logged once).
    pub fn merge_into(&mut self, sample: &mut Sample) -> Vec<String> {
        let read = read_capped(&self.path);
        let mut problems = read.problems;
        problems.extend(merge_metrics_text(&read.text, sample));
        let now: BTreeSet<String> = problems.into_iter().collect();
        let new: Vec<String> = now.difference(&self.known).cloned().collect();
        for problem in &new {
            tracing::warn!(path = %self.path.display(), "metrics file: {problem}");
        }
        self.known = now;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines_count_and_bad_ones_are_named() {
        let mut sample = Sample::memory(40);
        let problems = merge_metrics_text(
            "# from the game server\nconnections 120\nqueue_depth\n\nqueue_depth 7.5\nx inf\ngpu 0.25\ngpu 1\n",
            &mut sample,
        );
        assert_eq!(sample.connections, Some(120));
        let names: Vec<(&str, f64)> = sample.metrics.iter().map(|m| (m.name.as_str(), m.value)).collect();
        assert_eq!(names, [("queue_depth", 7.5), ("gpu", 0.25)]);
        assert_eq!(
            problems,
            ["line 3: expected NAME VALUE", "line 6: x is not finite", "line 8: gpu is given twice"]
        );
    }

    #[test]
    fn each_kind_of_bad_line_is_refused() {
        for bad in ["queue_depth", "x notanumber", "x inf", "connections -1", "bad/name 1", "x NaN"] {
            let mut sample = Sample::default();
            assert_eq!(merge_metrics_text(bad, &mut sample).len(), 1, "{bad:?} accepted");
            assert_eq!(sample, Sample::default(), "{bad:?} changed the sample");
        }
    }

    #[test]
    fn metrics_past_the_protocol_limit_are_left_out() {
        let many: String = (0..=MAX_METRICS).map(|i| format!("m{i} 1\n")).collect();
        let mut sample = Sample::default();
        let problems = merge_metrics_text(&many, &mut sample);
        assert_eq!(sample.metrics.len(), MAX_METRICS);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("more than"), "{problems:?}");
    }

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("loadwise-metrics-file-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_problem_is_reported_once_until_it_goes_away() {
        let path = temp("once");
        let mut file = MetricsFile::new(&path);
        assert_eq!(file.merge_into(&mut Sample::default()).len(), 1, "missing");
        assert!(file.merge_into(&mut Sample::default()).is_empty(), "missing again: already said");
        std::fs::write(&path, "connections 3\nbad\n").unwrap();
        let mut sample = Sample::default();
        assert_eq!(file.merge_into(&mut sample), ["line 2: expected NAME VALUE"]);
        assert_eq!(sample.connections, Some(3), "the good line still counts");
        assert!(file.merge_into(&mut Sample::default()).is_empty());
        std::fs::write(&path, "connections 3\n").unwrap();
        assert!(file.merge_into(&mut Sample::default()).is_empty());
        std::fs::write(&path, "connections 3\nbad\n").unwrap();
        assert_eq!(file.merge_into(&mut Sample::default()).len(), 1, "back again: said again");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_large_file_is_read_up_to_the_cap_in_whole_lines() {
        let path = temp("large");
        let mut text = String::from("connections 5\n");
        while (text.len() as u64) < MAX_METRICS_FILE_LEN + 100 {
            text.push_str("# padding padding padding padding padding\n");
        }
        text.push_str("late 1\n");
        std::fs::write(&path, &text).unwrap();
        let mut sample = Sample::default();
        let problems = MetricsFile::new(&path).merge_into(&mut sample);
        assert_eq!(sample.connections, Some(5));
        assert!(sample.metrics.is_empty(), "a line past the cap is not read");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("larger than 65536 bytes"), "{problems:?}");
        let read = read_capped(&path);
        assert!(read.text.len() as u64 <= MAX_METRICS_FILE_LEN && read.text.ends_with('\n'));
        std::fs::remove_file(&path).unwrap();
    }
}
