//! CPU use in percent from two readings of `/proc/stat`.
//!
//! The kernel counts, per state, the time all CPUs together have spent since boot.
//! Busy time is everything but `idle` and `iowait` (time waiting for disks is time the
//! CPU could have run something else). Between two readings, CPU % is Δbusy × 100 /
//! Δtotal. `guest` and `guest_nice` are left out of the total because `user` and
//! `nice` already include them. Parsing takes text; only [`CpuProbe::sample`] reads
//! the file.

use std::path::PathBuf;

/// The default location of the kernel's CPU counters.
pub const PROC_STAT: &str = "/proc/stat";

/// Busy and total time of all CPUs, in clock ticks since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Why `/proc/stat` could not give a figure.
#[derive(Debug, thiserror::Error)]
pub enum CpuStatError {
    #[error("the `cpu` line is missing from the CPU statistics")]
    Missing,
    #[error("the `cpu` line has an unreadable field {0:?}")]
    BadValue(String),
    #[error("the `cpu` line has {0} fields; at least 4 (user nice system idle) are needed")]
    TooFewFields(usize),
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
}

impl CpuTimes {
    /// Parses the aggregate `cpu` line of `/proc/stat` text.
    pub fn parse(text: &str) -> Result<CpuTimes, CpuStatError> {
        let line = text.lines().find_map(|line| line.strip_prefix("cpu ")).ok_or(CpuStatError::Missing)?;
        let fields = line
            .split_whitespace()
            .map(|field| field.parse::<u64>().map_err(|_| CpuStatError::BadValue(field.to_owned())))
            .collect::<Result<Vec<_>, _>>()?;
        if fields.len() < 4 {
            return Err(CpuStatError::TooFewFields(fields.len()));
        }
        // user nice system idle iowait irq softirq steal [guest guest_nice]
        // Saturating: counters near u64::MAX come only from a corrupt file, and a
        // wrong figure is better than a crash.
        let total = fields.iter().take(8).fold(0u64, |sum, field| sum.saturating_add(*field));
        let idle = fields[3].saturating_add(fields.get(4).copied().unwrap_or(0));
        Ok(CpuTimes { busy: total.saturating_sub(idle), total })
    }

    /// CPU use between `earlier` and `self` in hundredths of a percent (0..=10000),
    /// or `None` when no time passed (or the counters went back, as after a
    /// counter reset), so that no figure is made up.
    pub fn percent_since(&self, earlier: &CpuTimes) -> Option<u16> {
        let total = self.total.checked_sub(earlier.total).filter(|total| *total > 0)?;
        let busy = self.busy.checked_sub(earlier.busy)?.min(total);
        Some((u128::from(busy) * 10_000 / u128::from(total)) as u16)
    }
}

/// Reads `/proc/stat` on each sample and reports the CPU use since the previous one.
#[derive(Debug, Clone)]
pub struct CpuProbe {
    path: PathBuf,
    previous: Option<CpuTimes>,
}

impl CpuProbe {
    /// Reads `/proc/stat`.
    pub fn new() -> Self {
        Self::with_path(PROC_STAT)
    }

    /// Reads another file in the same format (for tests and unusual hosts).
    pub fn with_path(path: impl Into<PathBuf>) -> Self {
        CpuProbe { path: path.into(), previous: None }
    }

    /// The CPU use since the previous sample in hundredths of a percent; `None` on the
    /// first sample, which only sets the starting point.
    pub fn sample(&mut self) -> Result<Option<u16>, CpuStatError> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|source| CpuStatError::Read { path: self.path.display().to_string(), source })?;
        let now = CpuTimes::parse(&text)?;
        let percent = self.previous.and_then(|previous| now.percent_since(&previous));
        self.previous = Some(now);
        Ok(percent)
    }
}

impl Default for CpuProbe {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 20 30 800 50 0 0 0 0 0\ncpu0 50 10 15 400 25 0 0 0 0 0\nintr 1\n";

    #[test]
    fn parses_the_aggregate_line_only() {
        let times = CpuTimes::parse(STAT).unwrap();
        assert_eq!(times, CpuTimes { busy: 150, total: 1000 });
        // Old kernels have only four fields.
        assert_eq!(CpuTimes::parse("cpu 1 2 3 4\n").unwrap(), CpuTimes { busy: 6, total: 10 });
    }

    #[test]
    fn huge_counters_do_not_overflow() {
        let max = u64::MAX;
        let times = CpuTimes::parse(&format!("cpu {max} {max} 0 {max} {max} 0 0 0\n")).unwrap();
        assert_eq!(times.total, u64::MAX);
    }

    #[test]
    fn guest_time_is_not_counted_twice() {
        let with_guest = CpuTimes::parse("cpu 100 0 0 100 0 0 0 0 60 0\n").unwrap();
        assert_eq!(with_guest, CpuTimes { busy: 100, total: 200 });
    }

    #[test]
    fn refuses_what_is_not_a_cpu_line() {
        assert!(matches!(CpuTimes::parse("cpu0 1 2 3 4\n"), Err(CpuStatError::Missing)));
        assert!(matches!(CpuTimes::parse("cpu 1 2 x 4\n"), Err(CpuStatError::BadValue(v)) if v == "x"));
        assert!(matches!(CpuTimes::parse("cpu 1 2 3\n"), Err(CpuStatError::TooFewFields(3))));
    }

    #[test]
    fn percent_is_the_busy_share_of_the_elapsed_time() {
        let earlier = CpuTimes { busy: 150, total: 1000 };
        assert_eq!(CpuTimes { busy: 175, total: 1100 }.percent_since(&earlier), Some(2500));
        assert_eq!(CpuTimes { busy: 250, total: 1100 }.percent_since(&earlier), Some(10_000));
        assert_eq!(CpuTimes { busy: 150, total: 1100 }.percent_since(&earlier), Some(0));
        assert_eq!(CpuTimes { busy: 1, total: 3 }.percent_since(&CpuTimes { busy: 0, total: 0 }), Some(3333));
        // No time passed, or the counters went back: no figure.
        assert_eq!(earlier.percent_since(&earlier), None);
        assert_eq!(CpuTimes { busy: 100, total: 900 }.percent_since(&earlier), None);
    }

    #[test]
    fn the_probe_reports_from_the_second_sample_on() {
        let path = std::env::temp_dir().join(format!("loadwise-stat-{}", std::process::id()));
        std::fs::write(&path, "cpu 100 0 0 900 0 0 0 0\n").unwrap();
        let mut probe = CpuProbe::with_path(&path);
        assert_eq!(probe.sample().unwrap(), None);
        std::fs::write(&path, "cpu 150 0 0 950 0 0 0 0\n").unwrap();
        assert_eq!(probe.sample().unwrap(), Some(5000));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(probe.sample(), Err(CpuStatError::Read { .. })));
    }

    #[test]
    fn reads_this_machine() {
        let mut probe = CpuProbe::new();
        probe.sample().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        if let Some(percent) = probe.sample().unwrap() {
            assert!(percent <= 10_000);
        }
    }
}
