//! The v2 heartbeat (type 0x05): identity, address, load metrics, weight and state.

use std::num::NonZeroU16;

use super::address::Endpoint;
use super::frame::{FieldError, Reader, Writer};
use super::lease::Slots;
use super::limits::MAX_METRICS;
use super::names::{MetricName, ServiceName};

/// The weight a backend that has no opinion reports.
pub const DEFAULT_WEIGHT: NonZeroU16 = match NonZeroU16::new(100) {
    Some(w) => w,
    None => panic!("100 is not zero"),
};

/// A `u16` percentage field's value for "not reported".
pub const NOT_REPORTED_U16: u16 = 0xffff;

/// A `u32` count field's value for "not reported".
pub const NOT_REPORTED_U32: u32 = 0xffff_ffff;

/// A percentage in hundredths of a percent: 0 to 10000 (100.00 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u16);

impl Percent {
    /// 100.00 %.
    pub const FULL: Percent = Percent(10_000);

    /// The percentage of `hundredths` hundredths, if at most 10000.
    pub const fn from_hundredths(hundredths: u16) -> Option<Percent> {
        if hundredths <= Percent::FULL.0 { Some(Percent(hundredths)) } else { None }
    }

    /// The value in hundredths of a percent.
    pub const fn hundredths(self) -> u16 {
        self.0
    }

    fn read(r: &mut Reader<'_>, field: &'static str) -> Result<Option<Percent>, FieldError> {
        match r.u16(field)? {
            NOT_REPORTED_U16 => Ok(None),
            value => Percent::from_hundredths(value).map(Some).ok_or(FieldError::Percent { field, value }),
        }
    }

    fn write(value: Option<Percent>, w: &mut Writer) {
        w.u16(value.map_or(NOT_REPORTED_U16, Percent::hundredths));
    }
}

/// What a backend is willing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum State {
    /// Takes new clients.
    #[default]
    Ready = 0,
    /// Serves its current clients, takes no new ones.
    Draining = 1,
    /// Out of service; takes no new clients.
    Maintenance = 2,
}

impl State {
    /// The state's name, as the admin API and logs write it.
    pub fn name(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Draining => "draining",
            State::Maintenance => "maintenance",
        }
    }

    fn from_u8(value: u8) -> Result<State, FieldError> {
        match value {
            0 => Ok(State::Ready),
            1 => Ok(State::Draining),
            2 => Ok(State::Maintenance),
            other => Err(FieldError::State(other)),
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the backend's own checks find it usable (v2.2, appended): a backend can be
/// alive, heartbeating, and still unable to serve (its server hung, its port closed).
/// Kept apart from [`State`], whose values the v2 rules fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Health {
    /// Passes its checks, or has none: the value a heartbeat without the field means.
    #[default]
    Healthy = 0,
    /// Fails its checks: stays listed, gets no new clients.
    Unhealthy = 1,
}

impl Health {
    /// The health's name, as the admin API and logs write it.
    pub fn name(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }

    fn from_u8(value: u8) -> Result<Health, FieldError> {
        match value {
            0 => Ok(Health::Healthy),
            1 => Ok(Health::Unhealthy),
            other => Err(FieldError::Health(other)),
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A named, backend-defined load figure (queue depth, GPU use, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Distinct within one heartbeat.
    pub name: MetricName,
    /// Any finite number.
    pub value: f64,
}

/// Backend → dispatcher: "clients may connect to me here; this is my load".
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// The backend's stable id (the one it registered with, if it did).
    pub backend_id: u64,
    /// The service the backend serves.
    pub service: ServiceName,
    /// Where clients should connect.
    pub endpoint: Endpoint,
    /// Memory in use; `None` when the backend does not report it.
    pub memory: Option<Percent>,
    /// CPU in use; `None` when the backend does not report it.
    pub cpu: Option<Percent>,
    /// Connections the backend is serving; `None` when not reported. `Some(0xffffffff)`
    /// cannot be sent.
    pub connections: Option<u32>,
    /// Relative capacity: a backend of weight 200 should get twice the clients of one
    /// of weight 100 at equal load.
    pub weight: NonZeroU16,
    /// Whether the backend takes new clients.
    pub state: State,
    /// At most [`MAX_METRICS`], with distinct names.
    pub metrics: Vec<Metric>,
    /// What the backend's own checks say (v2.2, appended): on the wire only when
    /// unhealthy, so that a healthy heartbeat is the v2.0 frame; a v2.0 dispatcher,
    /// which skips trailing bytes, reads an unhealthy one as healthy.
    pub health: Health,
    /// A slot backend's places and this dispatcher's grant (v2.3, appended after
    /// `health`, which is then always sent); `None` for a backend without a capacity.
    pub slots: Option<Slots>,
}

impl Heartbeat {
    /// Header and the fixed fields before the service name.
    const FIXED_LEN: usize = 4 + 8 + 2 + 2 + 4 + 2 + 1;

    /// Size of the longest frame.
    pub const MAX_LEN: usize = Self::FIXED_LEN
        + 1
        + ServiceName::MAX_LEN
        + Endpoint::MAX_LEN
        + 1
        + MAX_METRICS * (1 + MetricName::MAX_LEN + 8)
        + 1
        + Slots::LEN;

    pub(crate) fn encode_body(&self, w: &mut Writer) -> Result<(), FieldError> {
        check_metrics(&self.metrics)?;
        w.u64(self.backend_id);
        Percent::write(self.memory, w);
        Percent::write(self.cpu, w);
        w.u32(connections_field(self.connections)?);
        w.u16(self.weight.get());
        w.u8(self.state as u8);
        self.service.write(w)?;
        self.endpoint.write(w)?;
        write_metrics(&self.metrics, w)?;
        // Each optional field is sent when it says something or a later one follows.
        if self.health != Health::Healthy || self.slots.is_some() {
            w.u8(self.health as u8);
        }
        if let Some(slots) = &self.slots {
            slots.encode(w);
        }
        Ok(())
    }

    pub(crate) fn decode_body(r: &mut Reader<'_>) -> Result<Heartbeat, FieldError> {
        let backend_id = r.u64("backend id")?;
        let memory = Percent::read(r, "memory")?;
        let cpu = Percent::read(r, "cpu")?;
        let connections = Some(r.u32("connections")?).filter(|&c| c != NOT_REPORTED_U32);
        let weight = NonZeroU16::new(r.u16("weight")?).ok_or(FieldError::ZeroWeight)?;
        let state = State::from_u8(r.u8("state")?)?;
        let service = ServiceName::read(r)?;
        let endpoint = Endpoint::read(r)?;
        let metrics = read_metrics(r)?;
        // A v2.0 or v2.1 heartbeat ends here: its backend is healthy.
        let health = if r.is_empty() { Health::Healthy } else { Health::from_u8(r.u8("health")?)? };
        // A heartbeat before v2.3, or of a backend without a capacity, ends here.
        let slots = if r.is_empty() { None } else { Some(Slots::decode(r)?) };
        Ok(Heartbeat {
            backend_id,
            service,
            endpoint,
            memory,
            cpu,
            connections,
            weight,
            state,
            metrics,
            health,
            slots,
        })
    }
}

fn connections_field(connections: Option<u32>) -> Result<u32, FieldError> {
    match connections {
        None => Ok(NOT_REPORTED_U32),
        Some(NOT_REPORTED_U32) => Err(FieldError::Reserved { field: "connections" }),
        Some(count) => Ok(count),
    }
}

/// At most [`MAX_METRICS`], finite, with distinct names: what a receiver accepts.
pub fn check_metrics(metrics: &[Metric]) -> Result<(), FieldError> {
    if metrics.len() > MAX_METRICS {
        return Err(FieldError::TooManyMetrics { count: metrics.len() });
    }
    for (i, metric) in metrics.iter().enumerate() {
        if !metric.value.is_finite() {
            return Err(FieldError::NotFinite(metric.name.to_string()));
        }
        if metrics[..i].iter().any(|m| m.name == metric.name) {
            return Err(FieldError::DuplicateMetric(metric.name.to_string()));
        }
    }
    Ok(())
}

fn write_metrics(metrics: &[Metric], w: &mut Writer) -> Result<(), FieldError> {
    // check_metrics has bounded the count by MAX_METRICS, which fits a u8.
    let count =
        u8::try_from(metrics.len()).map_err(|_| FieldError::TooManyMetrics { count: metrics.len() })?;
    w.u8(count);
    for metric in metrics {
        metric.name.write(w)?;
        w.f64(metric.value);
    }
    Ok(())
}

fn read_metrics(r: &mut Reader<'_>) -> Result<Vec<Metric>, FieldError> {
    let count = usize::from(r.u8("metric count")?);
    if count > MAX_METRICS {
        return Err(FieldError::TooManyMetrics { count });
    }
    let mut metrics = Vec::with_capacity(count);
    for _ in 0..count {
        let name = MetricName::read(r)?;
        let value = r.f64("metric value")?;
        metrics.push(Metric { name, value });
    }
    check_metrics(&metrics)?;
    Ok(metrics)
}
