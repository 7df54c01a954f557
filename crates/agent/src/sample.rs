//! What the agent measures (a [`Sample`]), why a measurement failed ([`ProbeError`]),
//! and what every link sends next (a report: the latest sample, the backend's state and
//! its health).

use crate::cpustat::CpuStatError;
use crate::meminfo::MeminfoError;
use loadwise_protocol::v2::{Health, Metric, NOT_REPORTED_U32, Percent, State, check_metrics};

/// One measurement of this backend's load.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// Memory in use, percent (0..=100): the one figure legacy heartbeats carry.
    pub memory: u8,
    /// CPU in use, if measured.
    pub cpu: Option<Percent>,
    /// Clients or connections the backend is serving, if it says.
    pub connections: Option<u32>,
    /// Backend-defined figures (queue depth, GPU use, ...), at most 32, distinct names.
    pub metrics: Vec<Metric>,
}

impl Sample {
    /// Memory only.
    pub fn memory(percent: u8) -> Sample {
        Sample { memory: percent.min(100), ..Sample::default() }
    }

    /// Refuses what a v2 heartbeat cannot carry (more than 32 metrics, a repeated
    /// name, a value that is not finite, a connection count of `u32::MAX`), so a
    /// backend's bad figure skips one heartbeat instead of breaking the connection.
    pub fn validate(&self) -> Result<(), ProbeError> {
        if self.connections == Some(NOT_REPORTED_U32) {
            return Err(ProbeError::Other(format!("connections must be below {NOT_REPORTED_U32}")));
        }
        check_metrics(&self.metrics).map_err(|error| ProbeError::Other(format!("metrics: {error}")))
    }
}

/// Why a load sample could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Meminfo(#[from] MeminfoError),
    #[error(transparent)]
    Cpu(#[from] CpuStatError),
    #[error("{0}")]
    Other(String),
}

/// What every link sends next: the latest sample (none while measuring fails) and
/// whether the backend takes new clients.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Report {
    pub sample: Option<Sample>,
    pub state: State,
    pub health: Health,
}

impl Report {
    /// Why a legacy link must stay out of the dispatcher's table, if it must: the
    /// legacy protocol can say neither "draining" nor "unhealthy" but by leaving.
    pub fn legacy_absence(&self) -> Option<Absence> {
        if self.state != State::Ready {
            Some(Absence::Draining)
        } else if self.health == Health::Unhealthy {
            Some(Absence::Unhealthy)
        } else {
            None
        }
    }
}

/// Why a legacy link leaves the dispatcher's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Absence {
    Draining,
    Unhealthy,
}
