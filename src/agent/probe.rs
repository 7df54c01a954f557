//! Load probes: what the agent measures before each heartbeat.

use std::path::PathBuf;

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

/// Memory use in percent from a meminfo file, read afresh for every sample.
#[derive(Debug, Clone)]
pub struct MemoryProbe {
    path: PathBuf,
}

impl MemoryProbe {
    /// Reads `/proc/meminfo`.
    pub fn new() -> Self {
        Self::with_path(meminfo::PROC_MEMINFO)
    }

    /// Reads another file in the same format (for tests and unusual hosts).
    pub fn with_path(path: impl Into<PathBuf>) -> Self {
        MemoryProbe { path: path.into() }
    }
}

impl Default for MemoryProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadProbe for MemoryProbe {
    fn sample(&mut self) -> Result<u8, ProbeError> {
        Ok(meminfo::read_memory_percent(&self.path)?)
    }
}
