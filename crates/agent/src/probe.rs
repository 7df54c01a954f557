//! Load probes: what the agent measures before each heartbeat.
//!
//! A [`LoadProbe`] gives memory use in percent, all a legacy heartbeat carries. A
//! [`MetricsProbe`] gives a whole [`Sample`] for v2 heartbeats: memory, CPU, active
//! connections and named metrics. Every `LoadProbe` is a `MetricsProbe` that reports
//! memory only; [`HostProbe`] measures the host and lets the backend add its own
//! figures through a callback or a metrics file.

use std::path::{Path, PathBuf};

use crate::cgroup::{self, CgroupMemory};
use crate::cpustat::CpuProbe;
use crate::meminfo;
use crate::metrics_file::{MetricsFile, merge_metrics_text};
use crate::sample::{ProbeError, Sample};
use loadwise_protocol::v2::Percent;

/// Something that can measure this backend's load on demand, for v2 heartbeats.
pub trait MetricsProbe: Send {
    /// The current load. An error skips this heartbeat.
    fn measure(&mut self) -> Result<Sample, ProbeError>;
}

impl<P: LoadProbe> MetricsProbe for P {
    fn measure(&mut self) -> Result<Sample, ProbeError> {
        self.sample().map(Sample::memory)
    }
}

/// The backend's own figures, added to each sample (connections, custom metrics).
pub type Extra = Box<dyn FnMut(&mut Sample) -> Result<(), ProbeError> + Send>;

/// Memory (of the cgroup's limit when there is one) and CPU of this host, plus
/// whatever the backend adds.
pub struct HostProbe {
    memory: MemoryProbe,
    cpu: CpuProbe,
    extra: Vec<Extra>,
}

impl HostProbe {
    /// Memory and CPU as the agent binary measures them.
    pub fn new() -> Self {
        Self::with(MemoryProbe::new(), CpuProbe::new())
    }

    /// Memory and CPU from the given probes.
    pub fn with(memory: MemoryProbe, cpu: CpuProbe) -> Self {
        HostProbe { memory, cpu, extra: Vec::new() }
    }

    /// Calls `extra` on every sample, after memory and CPU are measured: the hook for
    /// a backend's own figures. An error skips that heartbeat.
    pub fn with_extra(
        mut self,
        extra: impl FnMut(&mut Sample) -> Result<(), ProbeError> + Send + 'static,
    ) -> Self {
        self.extra.push(Box::new(extra));
        self
    }

    /// Reads `path` (at most 64 KiB) on every sample: one `NAME VALUE` per line;
    /// `connections` fills the connections field, any other name becomes a custom
    /// metric. A missing file or a bad line adds nothing and is warned about once;
    /// the good lines and the heartbeat still go out.
    pub fn with_metrics_file(self, path: impl Into<PathBuf>) -> Self {
        let mut file = MetricsFile::new(path);
        self.with_extra(move |sample| {
            file.merge_into(sample);
            Ok(())
        })
    }
}

impl Default for HostProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for HostProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let extra = self.extra.len();
        f.debug_struct("HostProbe")
            .field("memory", &self.memory)
            .field("cpu", &self.cpu)
            .field("extra", &extra)
            .finish()
    }
}

impl MetricsProbe for HostProbe {
    fn measure(&mut self) -> Result<Sample, ProbeError> {
        let mut sample = Sample::memory(self.memory.sample()?);
        // CPU is optional: a host that hides /proc/stat still reports memory.
        sample.cpu = match self.cpu.sample() {
            Ok(cpu) => cpu.and_then(Percent::from_hundredths),
            Err(error) => {
                tracing::debug!(%error, "cannot measure CPU; sending none");
                None
            }
        };
        for extra in &mut self.extra {
            extra(&mut sample)?;
        }
        sample.validate()?;
        Ok(sample)
    }
}

/// Parses `NAME VALUE` lines (blank lines and `#` comments skipped) into `sample`,
/// refusing the text at its first bad line (which [`HostProbe::with_metrics_file`]
/// instead leaves out, keeping the others).
pub fn apply_metrics_text(text: &str, sample: &mut Sample) -> Result<(), String> {
    match merge_metrics_text(text, sample).into_iter().next() {
        Some(problem) => Err(problem),
        None => Ok(()),
    }
}

/// Something that can report this backend's load, in percent, on demand.
pub trait LoadProbe: Send {
    /// The current load, 0..=100. An error skips this heartbeat.
    fn sample(&mut self) -> Result<u8, ProbeError>;
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
    use loadwise_protocol::v2::{MAX_METRICS, Metric, MetricName};

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

    #[test]
    fn a_metrics_file_gives_connections_and_custom_metrics() {
        let mut sample = Sample::memory(40);
        apply_metrics_text(
            "# from the game server\nconnections 120\n\nqueue_depth 7.5\ngpu 0.25\n",
            &mut sample,
        )
        .unwrap();
        assert_eq!(sample.connections, Some(120));
        let names: Vec<(&str, f64)> = sample.metrics.iter().map(|m| (m.name.as_str(), m.value)).collect();
        assert_eq!(names, [("queue_depth", 7.5), ("gpu", 0.25)]);
        for bad in ["queue_depth", "x notanumber", "x inf", "connections -1", "bad/name 1", "a 1\na 2"] {
            assert!(apply_metrics_text(bad, &mut Sample::default()).is_err(), "{bad:?} accepted");
        }
        let many: String = (0..=MAX_METRICS).map(|i| format!("m{i} 1\n")).collect();
        assert!(apply_metrics_text(&many, &mut Sample::default()).unwrap_err().contains("more than"));
    }

    #[test]
    fn a_host_probe_measures_memory_and_cpu_then_adds_the_backends_figures() {
        let dir = std::env::temp_dir().join(format!("loadwise-host-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("meminfo"), "MemTotal: 1000 kB\nMemAvailable: 700 kB\n").unwrap();
        std::fs::write(dir.join("stat"), "cpu 100 0 0 900 0 0 0 0\n").unwrap();
        let memory = MemoryProbe::with_path(dir.join("meminfo"));
        let mut probe = HostProbe::with(memory, CpuProbe::with_path(dir.join("stat")))
            .with_metrics_file(dir.join("absent"))
            .with_extra(|sample| {
                sample.connections = Some(3);
                Ok(())
            });
        let first = probe.measure().unwrap();
        assert_eq!((first.memory, first.cpu, first.connections), (30, None, Some(3)));
        std::fs::write(dir.join("stat"), "cpu 150 0 0 950 0 0 0 0\n").unwrap();
        assert_eq!(probe.measure().unwrap().cpu, Percent::from_hundredths(5000));
        // An unreadable /proc/stat leaves CPU out; a bad figure from the backend
        // fails the sample (one skipped heartbeat), not the connection.
        std::fs::remove_file(dir.join("stat")).unwrap();
        assert_eq!(probe.measure().unwrap().cpu, None);
        let mut twice = HostProbe::with(
            MemoryProbe::with_path(dir.join("meminfo")),
            CpuProbe::with_path(dir.join("stat")),
        )
        .with_extra(|sample| {
            let name = MetricName::new("queue").unwrap();
            sample.metrics.extend([Metric { name: name.clone(), value: 1.0 }, Metric { name, value: 2.0 }]);
            Ok(())
        });
        assert!(twice.measure().unwrap_err().to_string().contains("metrics"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
