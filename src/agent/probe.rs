//! Load probes: what the agent measures before each heartbeat.

use std::path::{Path, PathBuf};

use crate::cgroup::{self, CgroupMemory};
use crate::meminfo::{self, MeminfoError};

/// Something that can report this backend's load, in percent, on demand.
pub trait LoadProbe: Send {
    /// The current load, 0..=100. An error skips this heartbeat.
    fn sample(&mut self) -> Result<u8, ProbeError>;
}

/// Why a load sample could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Meminfo(#[from] MeminfoError),
    #[error("{0}")]
    Other(String),
}

impl<F> LoadProbe for F
where
    F: FnMut() -> Result<u8, ProbeError> + Send,
{
    fn sample(&mut self) -> Result<u8, ProbeError> {
        self()
    }
}

/// Memory use in percent: of the cgroup's limit when this process runs in a cgroup v2
/// with a memory limit (a container), otherwise of the host from a meminfo file. Read
/// afresh for every sample.
#[derive(Debug, Clone)]
pub struct MemoryProbe {
    path: PathBuf,
    cgroup: Option<CgroupMemory>,
}

impl MemoryProbe {
    /// This process's cgroup v2 limit if it has one, else `/proc/meminfo`.
    pub fn new() -> Self {
        let cgroup = CgroupMemory::of_this_process(Path::new(cgroup::CGROUP_MOUNT));
        MemoryProbe { path: meminfo::PROC_MEMINFO.into(), cgroup }
    }

    /// Only the meminfo file at `path`, never a cgroup (for tests and unusual hosts).
    pub fn with_path(path: impl Into<PathBuf>) -> Self {
        MemoryProbe { path: path.into(), cgroup: None }
    }

    /// The cgroup directory `cgroup` first, then the meminfo file at `path` when the
    /// cgroup has no limit or cannot be read.
    pub fn with_cgroup(path: impl Into<PathBuf>, cgroup: CgroupMemory) -> Self {
        MemoryProbe { path: path.into(), cgroup: Some(cgroup) }
    }

    /// The cgroup whose limit is tried first, if any.
    pub fn cgroup(&self) -> Option<&CgroupMemory> {
        self.cgroup.as_ref()
    }

    fn cgroup_percent(&self) -> Option<u8> {
        match self.cgroup.as_ref()?.read_percent() {
            Ok(percent) => percent,
            Err(error) => {
                // The cgroup can vanish or change under a running process; the host's
                // figure is still a figure.
                tracing::debug!(%error, "cannot read the cgroup's memory; using the host's");
                None
            }
        }
    }
}

impl Default for MemoryProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadProbe for MemoryProbe {
    fn sample(&mut self) -> Result<u8, ProbeError> {
        match self.cgroup_percent() {
            Some(percent) => Ok(percent),
            None => Ok(meminfo::read_memory_percent(&self.path)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limited_cgroup_wins_over_the_host_and_an_unlimited_one_falls_back() {
        let dir = std::env::temp_dir().join(format!("loadwise-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let meminfo = dir.join("meminfo");
        std::fs::write(&meminfo, "MemTotal: 1000 kB\nMemAvailable: 900 kB\n").unwrap();
        std::fs::write(dir.join("memory.max"), "1000\n").unwrap();
        std::fs::write(dir.join("memory.current"), "750\n").unwrap();
        std::fs::write(dir.join("memory.stat"), "inactive_file 0\n").unwrap();
        let mut probe = MemoryProbe::with_cgroup(&meminfo, CgroupMemory::at(&dir));
        assert_eq!(probe.sample().unwrap(), 75);
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        assert_eq!(probe.sample().unwrap(), 10);
        std::fs::remove_file(dir.join("memory.max")).unwrap();
        assert_eq!(probe.sample().unwrap(), 10, "an unreadable cgroup falls back to the host");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
