//! Memory use in percent, computed from the text of `/proc/meminfo`.
//!
//! used% = (total − MemAvailable) × 100 / total, in integer arithmetic, truncated —
//! the figure the original backends meant to send. Parsing takes a `&str`; only
//! [`read_memory_percent`] touches the file, and it re-reads it on every call (the
//! original sender read it once and sent garbage afterwards).

use std::path::Path;

/// The default location of the kernel's memory statistics.
pub const PROC_MEMINFO: &str = "/proc/meminfo";

/// The two figures used% is computed from, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`: the same figure as `sysinfo().totalram` (both are the kernel's
    /// total RAM pages), read here so that both numbers come from one snapshot.
    pub total_kib: u64,
    /// `MemAvailable`: what can be allocated without swapping.
    pub available_kib: u64,
}

/// Why `/proc/meminfo` could not give a figure.
#[derive(Debug, thiserror::Error)]
pub enum MeminfoError {
    #[error("`{0}` is missing from the memory statistics")]
    Missing(&'static str),
    #[error("`{field}` has an unreadable value {value:?}")]
    BadValue { field: &'static str, value: String },
    #[error("MemTotal is 0")]
    ZeroTotal,
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
}

impl MemInfo {
    /// Parses the `MemTotal` and `MemAvailable` lines of `/proc/meminfo` text.
    pub fn parse(text: &str) -> Result<MemInfo, MeminfoError> {
        let info =
            MemInfo { total_kib: field(text, "MemTotal")?, available_kib: field(text, "MemAvailable")? };
        if info.total_kib == 0 {
            return Err(MeminfoError::ZeroTotal);
        }
        Ok(info)
    }

    /// Memory used in percent, truncated; always 0..=100.
    pub fn used_percent(&self) -> u8 {
        let used = self.total_kib.saturating_sub(self.available_kib);
        let percent = u128::from(used) * 100 / u128::from(self.total_kib);
        // used <= total, so percent <= 100.
        percent as u8
    }
}

/// The value in KiB of the line `name:  <value> kB`.
fn field(text: &str, name: &'static str) -> Result<u64, MeminfoError> {
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .ok_or(MeminfoError::Missing(name))?;
    let number = value.trim().trim_end_matches("kB").trim();
    number.parse().map_err(|_| MeminfoError::BadValue { field: name, value: value.trim().to_owned() })
}

/// Reads `path` (normally [`PROC_MEMINFO`]) afresh and returns memory used in percent.
pub fn read_memory_percent(path: &Path) -> Result<u8, MeminfoError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| MeminfoError::Read { path: path.display().to_string(), source })?;
    Ok(MemInfo::parse(&text)?.used_percent())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   18432000 kB\nBuffers:          100 kB\n";

    #[test]
    fn parses_total_and_available() {
        let info = MemInfo::parse(SAMPLE).unwrap();
        assert_eq!(info, MemInfo { total_kib: 24_576_000, available_kib: 18_432_000 });
        assert_eq!(info.used_percent(), 25);
    }

    #[test]
    fn truncates_rather_than_rounds() {
        // 2/3 used = 66.67% -> 66.
        let info = MemInfo { total_kib: 3, available_kib: 1 };
        assert_eq!(info.used_percent(), 66);
        let info = MemInfo { total_kib: 1000, available_kib: 1 };
        assert_eq!(info.used_percent(), 99);
    }

    #[test]
    fn bounds() {
        assert_eq!(MemInfo { total_kib: 10, available_kib: 10 }.used_percent(), 0);
        assert_eq!(MemInfo { total_kib: 10, available_kib: 0 }.used_percent(), 100);
        // Available above total cannot happen, but must not underflow.
        assert_eq!(MemInfo { total_kib: 10, available_kib: 11 }.used_percent(), 0);
        assert_eq!(MemInfo { total_kib: u64::MAX, available_kib: 0 }.used_percent(), 100);
    }

    #[test]
    fn does_not_confuse_prefixes() {
        let text = "MemTotalX: 5 kB\nMemTotal: 100 kB\nMemAvailable: 40 kB\n";
        assert_eq!(MemInfo::parse(text).unwrap().used_percent(), 60);
    }

    #[test]
    fn reports_missing_and_bad_fields() {
        assert!(matches!(MemInfo::parse("MemTotal: 100 kB\n"), Err(MeminfoError::Missing("MemAvailable"))));
        assert!(matches!(
            MemInfo::parse("MemTotal: x kB\nMemAvailable: 1 kB\n"),
            Err(MeminfoError::BadValue { field: "MemTotal", .. })
        ));
        assert!(matches!(
            MemInfo::parse("MemTotal: 0 kB\nMemAvailable: 0 kB\n"),
            Err(MeminfoError::ZeroTotal)
        ));
    }

    #[test]
    fn reads_this_machine() {
        let percent = read_memory_percent(Path::new(PROC_MEMINFO)).unwrap();
        assert!(percent <= 100);
    }

    #[test]
    fn rereads_the_file_every_time() {
        let dir = std::env::temp_dir().join(format!("loadwise-meminfo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meminfo");
        std::fs::write(&path, "MemTotal: 100 kB\nMemAvailable: 80 kB\n").unwrap();
        assert_eq!(read_memory_percent(&path).unwrap(), 20);
        std::fs::write(&path, "MemTotal: 100 kB\nMemAvailable: 30 kB\n").unwrap();
        assert_eq!(read_memory_percent(&path).unwrap(), 70);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
