//! The scenario file: its TOML model, defaults, and the checks that bound a run.
//!
//! Parsing is pure (`&str` in, [`Scenario`] out). Unknown keys are refused, and every
//! value that cannot work is refused with the key that holds it, so that a typo
//! neither runs a different experiment nor hangs the simulator.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _, SeqAccess, Visitor};

use loadwise_core::selection::MAX_TIE_BAND;

/// The most backends a scenario may describe (initial pool and joiners together).
pub const MAX_BACKENDS: usize = 100_000;
/// The most clients a scenario may send: expected steady arrivals plus bursts.
/// The engine also stops generating arrivals once this many have arrived.
pub const MAX_CLIENTS: u64 = 10_000_000;
/// The most heartbeats a run may need (all backends over the whole run).
pub const MAX_HEARTBEATS: u64 = 10_000_000;
/// The most bursts in one scenario.
pub const MAX_BURSTS: usize = 10_000;
/// The longest run.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The shortest heartbeat interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);
/// The longest heartbeat interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The highest starting load, in percent.
pub const MAX_START_LOAD: f64 = 1000.0;
/// The largest capacity, relative to a capacity-1 backend.
pub const MAX_CAPACITY: f64 = 1_000_000.0;
/// The highest steady arrival rate, clients per second.
pub const MAX_RATE: f64 = 10_000_000.0;
/// The most dispatcher replicas: each heartbeat reaches every one, so a run's
/// heartbeats count once per replica against [`MAX_HEARTBEATS`].
pub const MAX_REPLICAS: usize = 64;
/// The most places a slot backend may have.
pub const MAX_SLOTS: u32 = 1_000_000;
/// The longest connect or report delay of a slot scenario.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Why a scenario was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// Not TOML, an unknown key, or a value of the wrong type (the message shows
    /// the offending line and key).
    #[error("{0}")]
    Parse(String),
    /// A value that parses but cannot work.
    #[error("`{key}`: {reason}")]
    Invalid {
        /// Where the value sits, e.g. `backends[1].capacity`.
        key: String,
        reason: String,
    },
}

impl ScenarioError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ScenarioError::Invalid { key: key.into(), reason: reason.into() }
    }
}

/// A described experiment: a pool of backends, the clients that arrive, and how
/// long to watch.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A short name for reports; the CLI uses the file name when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// One or two sentences on what the scenario shows.
    #[serde(default)]
    pub description: Option<String>,
    /// Simulated time the run covers.
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
    /// The seed of every random draw (the CLI's `--seed` overrides it).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Dispatcher settings that do not depend on the policy.
    #[serde(default)]
    pub dispatcher: DispatcherOverrides,
    /// Groups of backends (`[[backends]]`), in id order.
    pub backends: Vec<BackendGroup>,
    /// The steady stream of clients and what a session costs.
    #[serde(default)]
    pub clients: Clients,
    /// Crowds of clients arriving at once (`[[bursts]]`).
    #[serde(default)]
    pub bursts: Vec<Burst>,
    /// The delays of a slot scenario (`[slots]`).
    #[serde(default)]
    pub slots: SlotDelays,
}

/// The `[slots]` table: the delays that make leases and counters lag the clients.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotDelays {
    /// From a pick to the client reaching its backend (and taking its place there).
    #[serde(default = "default_connect_delay", deserialize_with = "duration")]
    pub connect_delay: Duration,
    /// From a dispatcher's answer to a heartbeat (its LeaseReport) to the backend.
    #[serde(default = "default_report_delay", deserialize_with = "duration")]
    pub report_delay: Duration,
}

fn default_connect_delay() -> Duration {
    Duration::from_millis(20)
}

fn default_report_delay() -> Duration {
    Duration::from_millis(1)
}

impl Default for SlotDelays {
    fn default() -> Self {
        SlotDelays { connect_delay: default_connect_delay(), report_delay: default_report_delay() }
    }
}

fn default_seed() -> u64 {
    1
}

/// The `[dispatcher]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatcherOverrides {
    /// Remove a backend silent for this long; default three times the longest
    /// heartbeat interval.
    #[serde(default, deserialize_with = "optional_duration")]
    pub ttl: Option<Duration>,
    /// The dispatcher's slow start for new backends; default the dispatcher's
    /// default. `"0s"` turns it off.
    #[serde(default, deserialize_with = "optional_duration")]
    pub slow_start: Option<Duration>,
    /// How many dispatchers share the pool: every heartbeat reaches each, and the
    /// clients are split among them in turn. Default 1.
    #[serde(default)]
    pub replicas: Option<usize>,
    /// The `least-loaded` tie band, in percent; default the dispatcher's.
    #[serde(default)]
    pub tie_band: Option<f64>,
}

/// A group of alike backends (`[[backends]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendGroup {
    /// A label for reports and errors.
    #[serde(default)]
    pub name: Option<String>,
    /// How many backends the group has.
    #[serde(default = "one")]
    pub count: usize,
    /// The starting (background) load in percent: one number for all, or one per
    /// backend. It stays for the whole run; sessions add to it.
    #[serde(default)]
    pub load: StartLoad,
    /// Relative size: a session adds `session_load / capacity` percent.
    #[serde(default = "one_f64")]
    pub capacity: f64,
    /// Time between heartbeats.
    #[serde(default = "one_second", deserialize_with = "duration")]
    pub heartbeat_interval: Duration,
    /// Old senders report 100 on every heartbeat after the first.
    #[serde(default)]
    pub legacy_reports_100: bool,
    /// When the group connects (its first heartbeat); 0 is the initial pool.
    #[serde(default, deserialize_with = "duration")]
    pub join_at: Duration,
    /// When the group leaves; its sessions vanish.
    #[serde(default, deserialize_with = "optional_duration")]
    pub leave_at: Option<Duration>,
    /// How it leaves: closing its connection, or falling silent until the TTL.
    #[serde(default)]
    pub leave_by: LeaveKind,
    /// Capacity slots: the places each backend has, one per session.
    #[serde(default)]
    pub slots: Option<u32>,
}

fn one() -> usize {
    1
}

fn one_f64() -> f64 {
    1.0
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

/// Starting load: the same for every backend of a group, or one value each.
#[derive(Debug, Clone, PartialEq)]
pub enum StartLoad {
    /// Every backend of the group starts here.
    All(f64),
    /// One value per backend, as many as `count`.
    Each(Vec<f64>),
}

impl Default for StartLoad {
    fn default() -> Self {
        StartLoad::All(0.0)
    }
}

impl<'de> Deserialize<'de> for StartLoad {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StartLoadVisitor)
    }
}

struct StartLoadVisitor;

impl<'de> Visitor<'de> for StartLoadVisitor {
    type Value = StartLoad;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a percentage, or a list of one percentage per backend")
    }

    fn visit_f64<E: serde::de::Error>(self, load: f64) -> Result<StartLoad, E> {
        Ok(StartLoad::All(load))
    }

    fn visit_i64<E: serde::de::Error>(self, load: i64) -> Result<StartLoad, E> {
        Ok(StartLoad::All(load as f64))
    }

    fn visit_u64<E: serde::de::Error>(self, load: u64) -> Result<StartLoad, E> {
        Ok(StartLoad::All(load as f64))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StartLoad, A::Error> {
        let mut loads = Vec::new();
        while let Some(load) = seq.next_element::<f64>()? {
            ensure_bounded_list::<A::Error>(loads.len())?;
            loads.push(load);
        }
        Ok(StartLoad::Each(loads))
    }
}

/// Refuses a list longer than any group can be, before it grows further.
fn ensure_bounded_list<E: serde::de::Error>(len: usize) -> Result<(), E> {
    if len < MAX_BACKENDS { Ok(()) } else { Err(E::custom(format!("more than {MAX_BACKENDS} values"))) }
}

impl StartLoad {
    /// The starting load of the group's `index`-th backend.
    pub fn of(&self, index: usize) -> f64 {
        match self {
            StartLoad::All(load) => *load,
            StartLoad::Each(loads) => loads[index],
        }
    }

    fn values(&self) -> &[f64] {
        match self {
            StartLoad::All(load) => std::slice::from_ref(load),
            StartLoad::Each(loads) => loads,
        }
    }
}

/// How a backend leaves the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaveKind {
    /// Its connection closes: the dispatcher drops it at once.
    #[default]
    Disconnect,
    /// It stops sending heartbeats (a crash or partition): the dispatcher keeps
    /// picking it until the TTL passes, and those clients are lost.
    Silence,
}

/// The `[clients]` table: steady arrivals and the sessions every client opens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clients {
    /// Steady Poisson arrivals, clients per second; 0 for none.
    #[serde(default)]
    pub rate: f64,
    /// What one session adds to a capacity-1 backend, in percent.
    #[serde(default = "default_session_load")]
    pub session_load: f64,
    /// How long sessions last.
    #[serde(default)]
    pub session: SessionLength,
}

fn default_session_load() -> f64 {
    0.01
}

impl Default for Clients {
    fn default() -> Self {
        Clients { rate: 0.0, session_load: default_session_load(), session: SessionLength::default() }
    }
}

/// How long a session lasts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SessionLength {
    /// Past the end of the run.
    #[default]
    Endless,
    /// Always the same length.
    Fixed {
        #[serde(deserialize_with = "duration")]
        length: Duration,
    },
    /// Exponentially distributed with this mean.
    Exponential {
        #[serde(deserialize_with = "duration")]
        mean: Duration,
    },
    /// Uniform between `min` and `max`.
    Uniform {
        #[serde(deserialize_with = "duration")]
        min: Duration,
        #[serde(deserialize_with = "duration")]
        max: Duration,
    },
}

/// A crowd of clients arriving within a short window (`[[bursts]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// When the window opens.
    #[serde(deserialize_with = "duration")]
    pub at: Duration,
    /// How many clients arrive.
    pub clients: u64,
    /// How long the window lasts; `"0s"` sends them all at `at`.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// How arrival times spread over the window.
    #[serde(default)]
    pub spacing: Spacing,
    /// Overrides `clients.session_load` for this burst's sessions.
    #[serde(default)]
    pub session_load: Option<f64>,
    /// Overrides `clients.session` for this burst's sessions.
    #[serde(default)]
    pub session: Option<SessionLength>,
}

/// How a burst's arrivals spread over its window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Spacing {
    /// Equally spaced: client `i` of `n` at `at + i × window / n`.
    #[default]
    Even,
    /// Independent uniform times in the window (a Poisson process conditioned on
    /// exactly `clients` arrivals).
    Poisson,
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|error| {
        D::Error::custom(format!("invalid duration {text:?} ({error}); write e.g. \"500ms\" or \"2s\""))
    })
}

fn optional_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

impl Scenario {
    /// Parses and checks a scenario file's text.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario =
            toml::from_str(text).map_err(|error| ScenarioError::Parse(error.to_string()))?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks every value and the bounds on the size of the run.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        self.check_duration()?;
        self.check_dispatcher()?;
        for (index, group) in self.backends.iter().enumerate() {
            group.check(&format!("backends[{index}]"), self.duration)?;
        }
        self.clients.check()?;
        for (index, burst) in self.bursts.iter().enumerate() {
            burst.check(&format!("bursts[{index}]"), self.duration)?;
        }
        self.check_slots()?;
        self.check_size()
    }

    /// Whether the backends have capacity slots (then all of them do).
    pub fn has_slots(&self) -> bool {
        self.backends.iter().any(|group| group.slots.is_some())
    }

    fn check_slots(&self) -> Result<(), ScenarioError> {
        let delays = [("connect_delay", self.slots.connect_delay), ("report_delay", self.slots.report_delay)];
        for (key, delay) in delays {
            ensure(
                delay <= MAX_DELAY,
                format!("slots.{key}"),
                format!("must be at most {}", human(MAX_DELAY)),
            )?;
        }
        if !self.has_slots() {
            return Ok(());
        }
        for (index, group) in self.backends.iter().enumerate() {
            let key = |name: &str| format!("backends[{index}].{name}");
            // One service: a pool that mixes slot and load backends is not modelled.
            let Some(places) = group.slots else {
                return Err(ScenarioError::invalid(
                    key("slots"),
                    "every group needs slots when one has them",
                ));
            };
            ensure(
                (1..=MAX_SLOTS).contains(&places),
                key("slots"),
                format!("must lie between 1 and {MAX_SLOTS}, got {places}"),
            )?;
            // Departures would need the ledger's `forget` and lost promises: not modelled yet.
            ensure(group.leave_at.is_none(), key("leave_at"), "slot backends cannot leave (not modelled)")?;
        }
        Ok(())
    }

    fn check_duration(&self) -> Result<(), ScenarioError> {
        ensure(!self.duration.is_zero(), "duration", "must be longer than 0")?;
        ensure(self.duration <= MAX_DURATION, "duration", format!("must be at most {}", human(MAX_DURATION)))
    }

    fn check_dispatcher(&self) -> Result<(), ScenarioError> {
        if let Some(ttl) = self.dispatcher.ttl {
            ensure(!ttl.is_zero(), "dispatcher.ttl", "must be longer than 0")?;
        }
        if let Some(replicas) = self.dispatcher.replicas {
            ensure(
                (1..=MAX_REPLICAS).contains(&replicas),
                "dispatcher.replicas",
                format!("must lie between 1 and {MAX_REPLICAS}, got {replicas}"),
            )?;
        }
        if let Some(band) = self.dispatcher.tie_band {
            ensure(
                (0.0..=MAX_TIE_BAND).contains(&band),
                "dispatcher.tie_band",
                format!("must lie between 0 and {MAX_TIE_BAND} percent, got {band}"),
            )?;
        }
        Ok(())
    }

    fn check_size(&self) -> Result<(), ScenarioError> {
        let backends = self.backend_count();
        ensure(backends >= 1, "backends", "the scenario needs at least one backend")?;
        ensure(backends <= MAX_BACKENDS, "backends", format!("{backends} backends; at most {MAX_BACKENDS}"))?;
        ensure(
            self.bursts.len() <= MAX_BURSTS,
            "bursts",
            format!("{} bursts; at most {MAX_BURSTS}", self.bursts.len()),
        )?;
        let clients = self.expected_clients();
        ensure(
            clients <= MAX_CLIENTS as f64,
            "clients",
            format!("about {clients:.0} clients (rate × duration + bursts); at most {MAX_CLIENTS}"),
        )?;
        let heartbeats = self.expected_heartbeats() * self.replicas() as f64;
        ensure(
            heartbeats <= MAX_HEARTBEATS as f64,
            "backends",
            format!(
                "about {heartbeats:.0} heartbeats over the run (once per replica); at most {MAX_HEARTBEATS}"
            ),
        )
    }

    /// How many dispatchers share the pool.
    pub fn replicas(&self) -> usize {
        self.dispatcher.replicas.unwrap_or(1)
    }

    /// The number of backends over the whole run.
    pub fn backend_count(&self) -> usize {
        self.backends.iter().map(|group| group.count).sum()
    }

    /// Steady arrivals expected over the run plus every burst's clients.
    pub fn expected_clients(&self) -> f64 {
        let bursts: u64 = self.bursts.iter().map(|burst| burst.clients).sum();
        self.clients.rate * self.duration.as_secs_f64() + bursts as f64
    }

    fn expected_heartbeats(&self) -> f64 {
        let run = self.duration.as_secs_f64();
        let per_group =
            |group: &BackendGroup| group.count as f64 * (run / group.heartbeat_interval.as_secs_f64() + 2.0);
        self.backends.iter().map(per_group).sum()
    }

    /// The dispatcher TTL to use: the scenario's, or three of its longest intervals.
    pub fn ttl(&self) -> Duration {
        let longest = self.backends.iter().map(|group| group.heartbeat_interval).max();
        self.dispatcher.ttl.unwrap_or_else(|| longest.unwrap_or_else(one_second) * 3)
    }
}

impl BackendGroup {
    fn check(&self, key: &str, run: Duration) -> Result<(), ScenarioError> {
        let field = |name: &str| format!("{key}.{name}");
        ensure(self.count >= 1, field("count"), "must be at least 1")?;
        ensure(self.count <= MAX_BACKENDS, field("count"), format!("must be at most {MAX_BACKENDS}"))?;
        self.check_load(&field("load"))?;
        ensure(
            self.capacity.is_finite() && self.capacity > 0.0 && self.capacity <= MAX_CAPACITY,
            field("capacity"),
            format!("must be above 0 and at most {MAX_CAPACITY}, got {}", self.capacity),
        )?;
        ensure(
            (MIN_INTERVAL..=MAX_INTERVAL).contains(&self.heartbeat_interval),
            field("heartbeat_interval"),
            format!("must lie between {} and {}", human(MIN_INTERVAL), human(MAX_INTERVAL)),
        )?;
        ensure(self.join_at < run, field("join_at"), "must be before the end of the run")?;
        if let Some(leave_at) = self.leave_at {
            ensure(leave_at > self.join_at, field("leave_at"), "must be after join_at")?;
            ensure(leave_at < run, field("leave_at"), "must be before the end of the run")?;
        }
        Ok(())
    }

    fn check_load(&self, key: &str) -> Result<(), ScenarioError> {
        if let StartLoad::Each(loads) = &self.load {
            ensure(
                loads.len() == self.count,
                key,
                format!("has {} values for {} backends (count)", loads.len(), self.count),
            )?;
        }
        for &load in self.load.values() {
            ensure(
                load.is_finite() && (0.0..=MAX_START_LOAD).contains(&load),
                key,
                format!("must lie between 0 and {MAX_START_LOAD} percent, got {load}"),
            )?;
        }
        Ok(())
    }
}

impl Clients {
    fn check(&self) -> Result<(), ScenarioError> {
        ensure(
            self.rate.is_finite() && (0.0..=MAX_RATE).contains(&self.rate),
            "clients.rate",
            format!("must lie between 0 and {MAX_RATE} clients per second, got {}", self.rate),
        )?;
        check_session_load(self.session_load, "clients.session_load")?;
        self.session.check("clients.session")
    }
}

fn check_session_load(load: f64, key: &str) -> Result<(), ScenarioError> {
    ensure(
        load.is_finite() && (0.0..=100.0).contains(&load),
        key,
        format!("must lie between 0 and 100 percent, got {load}"),
    )
}

impl SessionLength {
    fn check(&self, key: &str) -> Result<(), ScenarioError> {
        let longest = MAX_DURATION;
        match *self {
            SessionLength::Endless => Ok(()),
            SessionLength::Fixed { length } => ensure(
                length <= longest,
                format!("{key}.length"),
                format!("must be at most {}", human(longest)),
            ),
            SessionLength::Exponential { mean } => {
                ensure(!mean.is_zero(), format!("{key}.mean"), "must be longer than 0")?;
                ensure(mean <= longest, format!("{key}.mean"), format!("must be at most {}", human(longest)))
            }
            SessionLength::Uniform { min, max } => {
                ensure(min <= max, format!("{key}.max"), "must not be shorter than min")?;
                ensure(max <= longest, format!("{key}.max"), format!("must be at most {}", human(longest)))
            }
        }
    }
}

impl Burst {
    fn check(&self, key: &str, run: Duration) -> Result<(), ScenarioError> {
        let field = |name: &str| format!("{key}.{name}");
        ensure(self.at < run, field("at"), "must be before the end of the run")?;
        ensure(self.clients >= 1, field("clients"), "must be at least 1")?;
        ensure(self.clients <= MAX_CLIENTS, field("clients"), format!("must be at most {MAX_CLIENTS}"))?;
        ensure(self.window <= run, field("window"), "must not be longer than the run")?;
        if let Some(load) = self.session_load {
            check_session_load(load, &field("session_load"))?;
        }
        if let Some(session) = &self.session {
            session.check(&field("session"))?;
        }
        Ok(())
    }
}

fn ensure(ok: bool, key: impl Into<String>, reason: impl Into<String>) -> Result<(), ScenarioError> {
    if ok { Ok(()) } else { Err(ScenarioError::invalid(key, reason)) }
}

fn human(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}
