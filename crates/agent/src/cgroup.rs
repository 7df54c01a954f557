//! Memory use in percent of a cgroup v2 memory limit, for backends in containers.
//!
//! Inside a container `/proc/meminfo` describes the whole host, so a backend capped at
//! 2 GiB on a 64 GiB host would look empty until the kernel kills it. When the
//! process's cgroup (v2, the unified hierarchy) has a memory limit, the load is the
//! cgroup's working set against that limit instead: `memory.current` minus the
//! `inactive_file` page cache the kernel reclaims first (the figure container runtimes
//! and the kubelet use), × 100 / `memory.max`, truncated. Parsing takes text; only
//! [`CgroupMemory::read_percent`] touches files.

use std::path::{Path, PathBuf};

/// Where the unified cgroup hierarchy is usually mounted.
pub const CGROUP_MOUNT: &str = "/sys/fs/cgroup";
/// The file naming the cgroups of this process.
pub const PROC_SELF_CGROUP: &str = "/proc/self/cgroup";

/// Why a cgroup's memory figures could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{file} has an unreadable value {value:?}")]
    BadValue { file: &'static str, value: String },
    #[error("memory.max is 0")]
    ZeroLimit,
}

/// The cgroup v2 path of this process from `/proc/self/cgroup` text: the `0::PATH`
/// line. `None` on a host with only cgroup v1 controllers.
pub fn unified_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup.lines().find_map(|line| line.strip_prefix("0::"))
}

/// `memory.max` text: `Some(bytes)`, or `None` for `max` (no limit).
pub fn parse_limit(text: &str) -> Result<Option<u64>, CgroupError> {
    match text.trim() {
        "max" => Ok(None),
        "0" => Err(CgroupError::ZeroLimit),
        value => value.parse().map(Some).map_err(|_| bad("memory.max", value)),
    }
}

/// `memory.current` text: bytes in use by the cgroup, page cache included.
pub fn parse_current(text: &str) -> Result<u64, CgroupError> {
    text.trim().parse().map_err(|_| bad("memory.current", text.trim()))
}

/// The `inactive_file` line of `memory.stat` text, in bytes; 0 when absent.
pub fn parse_inactive_file(memory_stat: &str) -> Result<u64, CgroupError> {
    let Some(value) = memory_stat.lines().find_map(|line| line.strip_prefix("inactive_file ")) else {
        return Ok(0);
    };
    value.trim().parse().map_err(|_| bad("memory.stat", value.trim()))
}

fn bad(file: &'static str, value: &str) -> CgroupError {
    CgroupError::BadValue { file, value: value.to_owned() }
}

/// The working set (`current − inactive_file`) in percent of `limit`, truncated;
/// always 0..=100 (a cgroup briefly above its limit counts as full).
pub fn used_percent(current: u64, inactive_file: u64, limit: u64) -> u8 {
    let working_set = current.saturating_sub(inactive_file);
    let percent = u128::from(working_set) * 100 / u128::from(limit.max(1));
    percent.min(100) as u8
}

/// A cgroup v2 directory whose memory figures can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMemory {
    dir: PathBuf,
}

impl CgroupMemory {
    /// The cgroup directory `dir` (for tests and unusual mounts).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        CgroupMemory { dir: dir.into() }
    }

    /// This process's cgroup, if the unified hierarchy is mounted at `mount` and the
    /// cgroup has the memory controller's files. `None` otherwise (cgroup v1 hosts,
    /// or no access), and the caller falls back to `/proc/meminfo`.
    pub fn of_this_process(mount: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(PROC_SELF_CGROUP).ok()?;
        let relative = unified_path(&text)?.trim_start_matches('/');
        let dir = mount.join(relative);
        dir.join("memory.max").is_file().then_some(CgroupMemory { dir })
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Memory used in percent of the limit, read afresh; `None` when the cgroup has
    /// no limit (`memory.max` is `max`), so the host's figure applies.
    pub fn read_percent(&self) -> Result<Option<u8>, CgroupError> {
        let Some(limit) = parse_limit(&self.read("memory.max")?)? else { return Ok(None) };
        let current = parse_current(&self.read("memory.current")?)?;
        let inactive_file = parse_inactive_file(&self.read("memory.stat")?)?;
        Ok(Some(used_percent(current, inactive_file, limit)))
    }

    fn read(&self, file: &str) -> Result<String, CgroupError> {
        let path = self.dir.join(file);
        std::fs::read_to_string(&path)
            .map_err(|source| CgroupError::Read { path: path.display().to_string(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_path_and_ignores_v1_lines() {
        let hybrid = "4:memory:/docker/abc\n1:cpu:/\n0::/system.slice/app.service\n";
        assert_eq!(unified_path(hybrid), Some("/system.slice/app.service"));
        assert_eq!(unified_path("4:memory:/docker/abc\n1:cpu:/\n"), None);
    }

    #[test]
    fn parses_limits_current_and_inactive_file() {
        assert_eq!(parse_limit("max\n").unwrap(), None);
        assert_eq!(parse_limit("2147483648\n").unwrap(), Some(2 << 30));
        assert!(matches!(parse_limit("0"), Err(CgroupError::ZeroLimit)));
        assert!(matches!(parse_limit("lots"), Err(CgroupError::BadValue { file: "memory.max", .. })));
        assert_eq!(parse_current("1048576\n").unwrap(), 1 << 20);
        let stat = "anon 100\nfile 300\ninactive_file 200\nactive_file 100\n";
        assert_eq!(parse_inactive_file(stat).unwrap(), 200);
        assert_eq!(parse_inactive_file("anon 100\n").unwrap(), 0);
        assert!(parse_inactive_file("inactive_file x\n").is_err());
    }

    #[test]
    fn percent_is_the_working_set_against_the_limit_truncated_and_capped() {
        assert_eq!(used_percent(1000, 0, 1000), 100);
        assert_eq!(used_percent(800, 300, 1000), 50);
        assert_eq!(used_percent(999, 0, 1000), 99);
        assert_eq!(used_percent(100, 200, 1000), 0);
        assert_eq!(used_percent(3000, 0, 1000), 100);
        assert_eq!(used_percent(u64::MAX, 0, 1), 100);
    }

    #[test]
    fn reads_a_cgroup_directory() {
        let dir = std::env::temp_dir().join(format!("loadwise-cgroup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.max"), "1000\n").unwrap();
        std::fs::write(dir.join("memory.current"), "700\n").unwrap();
        std::fs::write(dir.join("memory.stat"), "anon 500\ninactive_file 100\n").unwrap();
        let cgroup = CgroupMemory::at(&dir);
        assert_eq!(cgroup.read_percent().unwrap(), Some(60));
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup.read_percent().unwrap(), None);
        std::fs::remove_file(dir.join("memory.current")).unwrap();
        std::fs::write(dir.join("memory.max"), "1000\n").unwrap();
        assert!(matches!(cgroup.read_percent(), Err(CgroupError::Read { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
