//! An agent inside the backend process, from C: started on a thread and I/O runtime of
//! its own, fed the backend's figures, drain and health through setters, stopped
//! cleanly.

use std::ffi::{c_char, c_int};
use std::num::NonZeroU16;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use loadwise_agent::{
    Advertise, AgentConfig, DEFAULT_PROMISE_LIFETIME, HostProbe, MAX_CAPACITY, MAX_PROMISE_LIFETIME, Places,
    Sample, Secret,
};
use loadwise_protocol::v2::{MAX_METRICS, Metric, MetricName, NOT_REPORTED_U32, State};
use tokio::sync::{oneshot, watch};

use super::boundary::{self, Failure};
use super::client::parse_servers;
use super::codes::{
    LW_E_PANIC, LW_E_RUNTIME, LW_E_STOPPED, LW_E_TIMEOUT, LW_PROTOCOL_LEGACY, LW_PROTOCOL_V2,
};
use super::ticket::service_or_default;

/// The longest `lw_agent_stop` waits for the agent's thread: its links close at once
/// when told, so this only bounds a stuck name lookup.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the runtime waits for its blocking tasks (name lookups) when the agent stops.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

/// How an agent reports this backend. Zero is the default of every field but `size`,
/// `servers` and `advertise`; `lw_agent_options_init` sets `size` and zeroes the rest.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct lw_agent_options {
    /// `sizeof(lw_agent_options)` as the caller's header knows it.
    pub size: usize,
    /// The dispatchers, comma-separated `HOST:PORT` (at most 64); one connection each.
    pub servers: *const c_char,
    /// Where clients reach this backend, `HOST:PORT` (an IPv6 literal in brackets; a
    /// host name with protocol v2 only). Sent in every heartbeat.
    pub advertise: *const c_char,
    /// The service (pool) this backend serves; NULL for the default service.
    pub service: *const c_char,
    /// The secret shared with the dispatchers (`secret_len` bytes, at least 16): the
    /// agent proves it when it registers. NULL for none (a dispatcher without a secret).
    pub secret: *const u8,
    /// The length of `secret`.
    pub secret_len: usize,
    /// This backend's id, stable across restarts; 0 derives it from the service and the
    /// advertised address (what `loadwise agent` does).
    pub backend_id: u64,
    /// Time between heartbeats in milliseconds; 0 for 1000.
    pub interval_ms: u32,
    /// How long one connection attempt (and registration) may take, milliseconds; 0 for 3000.
    pub connect_timeout_ms: u32,
    /// Relative capacity, 1 to 65535 (200 gets twice the clients of 100 at equal
    /// load); 0 for 100.
    pub weight: u32,
    /// `LW_PROTOCOL_V2` (0, the default) or `LW_PROTOCOL_LEGACY`.
    pub protocol: u32,
    /// Since 0.2: the backend's places in total (1 to 10000000): a slot backend, whose
    /// free places are leased to the dispatchers so that they never send more clients
    /// than there are free places (protocol v2). Tell it of clients with
    /// `lw_agent_arrive`, `lw_agent_leave` or `lw_agent_set_in_use`. 0 for none.
    pub capacity: u32,
    /// Since 0.2: how long a place promised to a client stays taken if the client never
    /// arrives, milliseconds; 0 for 30000 (the dispatchers' ticket lifetime).
    pub promise_lifetime_ms: u32,
}

/// The size of the first `lw_agent_options`, before `capacity`: programs built with
/// that header still pass it.
const AGENT_OPTIONS_V1_LEN: usize = std::mem::offset_of!(lw_agent_options, capacity);

/// A running agent. Opaque; made by `lw_agent_start`, freed by `lw_agent_free`.
/// Its setters may be called from any thread, concurrently; `lw_agent_free` must not
/// race with other calls on the same agent.
#[allow(non_camel_case_types)]
pub struct lw_agent {
    backend_id: u64,
    figures: Arc<Mutex<Figures>>,
    /// The backend's places, when it has capacity slots.
    places: Option<Places>,
    condition: Mutex<Condition>,
    state: watch::Sender<State>,
    running: Mutex<Option<Running>>,
}

/// What the backend says of its load, added to every sample.
#[derive(Debug, Default)]
struct Figures {
    connections: Option<u32>,
    metrics: Vec<Metric>,
}

/// What the backend says of itself; together they make the state heartbeats carry.
#[derive(Debug, Clone, Copy)]
struct Condition {
    draining: bool,
    healthy: bool,
}

impl Condition {
    /// An unhealthy backend is out of service whatever else; a draining one keeps its
    /// clients but takes no new ones.
    fn state(self) -> State {
        match self {
            Condition { healthy: false, .. } => State::Maintenance,
            Condition { draining: true, .. } => State::Draining,
            _ => State::Ready,
        }
    }
}

/// The agent's thread, and how to stop it.
struct Running {
    stop: oneshot::Sender<()>,
    /// Says the thread is done, so a stop can wait with a bound.
    done: std::sync::mpsc::Receiver<()>,
    thread: JoinHandle<Result<(), String>>,
}

/// Starts an agent for this backend: it heartbeats every dispatcher of
/// `options->servers` from a thread of its own, reconnecting with backoff, until
/// `lw_agent_stop` or `lw_agent_free`. Each heartbeat carries this host's memory
/// (of the cgroup's limit in a container) and CPU use, and what the setters gave.
///
/// Returns `LW_OK` with `*out` a new agent, or `LW_E_INVALID` (the message names the
/// field), `LW_E_NULL` or `LW_E_RUNTIME`, with `*out` NULL. Nothing is connected yet
/// when it returns; an unreachable dispatcher is retried, not an error.
///
/// # Safety
/// `options` is NULL or points to an `lw_agent_options` of `options->size` readable
/// bytes whose strings are NULL or NUL-terminated and whose `secret` has `secret_len`
/// readable bytes; `out` is NULL or points to a writable `lw_agent *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_agent_start(options: *const lw_agent_options, out: *mut *mut lw_agent) -> c_int {
    boundary::call(|| {
        if out.is_null() || !out.is_aligned() {
            return Err(Failure::null("out"));
        }
        // SAFETY: non-NULL and aligned, writable per the caller's promise.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: the caller's promise.
        let config = unsafe { read_config(options) }?;
        let agent = start(config)?;
        // SAFETY: as above; ownership of the box passes to the caller.
        unsafe { out.write(Box::into_raw(Box::new(agent))) };
        Ok(())
    })
}

/// Sets the custom metric `name` (1 to 64 bytes of `[A-Za-z0-9._-]`) to `value` (any
/// finite number) in every heartbeat from now on; at most 32 metrics. Protocol v2
/// only; the legacy heartbeat carries memory alone, so there it is kept but not sent.
///
/// # Safety
/// `agent` is NULL or an agent from `lw_agent_start` not yet freed; `name` is NULL or
/// a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_agent_set_metric(
    agent: *const lw_agent,
    name: *const c_char,
    value: f64,
) -> c_int {
    boundary::call(|| {
        // SAFETY: the caller's promise.
        let agent = unsafe { running(agent) }?;
        // SAFETY: the caller's promise.
        let name = metric_name(&unsafe { boundary::string(name, "name") }?)?;
        if !value.is_finite() {
            return Err(Failure::invalid(format!("value of metric {name}: {value} is not a finite number")));
        }
        let metrics = &mut lock(&agent.figures).metrics;
        if let Some(metric) = metrics.iter_mut().find(|metric| metric.name == name) {
            metric.value = value;
            return Ok(());
        }
        if metrics.len() == MAX_METRICS {
            return Err(Failure::invalid(format!(
                "name: {name} would be a metric too many, at most {MAX_METRICS}"
            )));
        }
        metrics.push(Metric { name, value });
        Ok(())
    })
}

/// Stops sending the custom metric `name`; a name not set is not an error.
///
/// # Safety
/// As for `lw_agent_set_metric`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_agent_remove_metric(agent: *const lw_agent, name: *const c_char) -> c_int {
    boundary::call(|| {
        // SAFETY: the caller's promise.
        let agent = unsafe { running(agent) }?;
        // SAFETY: the caller's promise.
        let name = metric_name(&unsafe { boundary::string(name, "name") }?)?;
        lock(&agent.figures).metrics.retain(|metric| metric.name != name);
        Ok(())
    })
}

/// Reports `count` clients or connections served by this backend in every heartbeat
/// from now on (protocol v2); `LW_NOT_REPORTED` stops reporting it.
///
/// # Safety
/// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_agent_set_connections(agent: *const lw_agent, count: u32) -> c_int {
    boundary::call(|| {
        // SAFETY: the caller's promise.
        let agent = unsafe { running(agent) }?;
        lock(&agent.figures).connections = (count != NOT_REPORTED_U32).then_some(count);
        Ok(())
    })
}

/// Drains this backend (`true`): the dispatchers send it no new clients but keep it
/// listed, so its current clients are undisturbed; `false` takes new clients again.
/// Sent at once, not at the next interval. A legacy link can only say it by
/// disconnecting, and reconnects when the drain ends.
///
/// # Safety
/// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_agent_set_draining(agent: *const lw_agent, draining: bool) -> c_int {
    // SAFETY: the caller's promise.
    boundary::call(|| unsafe { running(agent) }?.change(|condition| condition.draining = draining))
}

/// Says whether this backend can serve (`true`, the start) or not (`false`): an
/// unhealthy backend is reported in maintenance, so it gets no new clients until it
/// says it is healthy again, whatever its drain. Sent at once.
///
/// # Safety
/// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_agent_set_healthy(agent: *const lw_agent, healthy: bool) -> c_int {
    // SAFETY: the caller's promise.
    boundary::call(|| unsafe { running(agent) }?.change(|condition| condition.healthy = healthy))
}

/// A client sent by a dispatcher arrived at this slot backend: its place is taken and
/// its promise ends (check its ticket first with `lw_ticket_verify` when the dispatchers
/// sign them). `LW_E_INVALID` for an agent without `capacity`.
///
/// # Safety
/// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_agent_arrive(agent: *const lw_agent) -> c_int {
    boundary::call(|| {
        // SAFETY: the caller's promise.
        unsafe { slot_places(agent) }?.arrive();
        Ok(())
    })
}

/// A client of this slot backend left: its place is free again, and the dispatchers
/// are granted it by a top-up heartbeat rather than at their next regular one.
/// `LW_E_INVALID` for an agent without `capacity`.
///
/// # Safety
/// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_agent_leave(agent: *const lw_agent) -> c_int {
    boundary::call(|| {
        // SAFETY: the caller's promise.
        unsafe { slot_places(agent) }?.leave();
        Ok(())
    })
}

/// Sets the places of this slot backend in use now, as the backend counts them (for a
/// backend that counts rather than calling `lw_agent_arrive` and `lw_agent_leave`; its
/// clients' promises then end only with their lifetime). `LW_E_INVALID` for an agent
/// without `capacity`.
///
/// # Safety
/// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_agent_set_in_use(agent: *const lw_agent, in_use: u32) -> c_int {
    boundary::call(|| {
        // SAFETY: the caller's promise.
        unsafe { slot_places(agent) }?.set_in_use(in_use);
        Ok(())
    })
}

/// The places of a running slot agent.
///
/// # Safety
/// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
unsafe fn slot_places<'a>(agent: *const lw_agent) -> Result<&'a Places, Failure> {
    // SAFETY: the caller's promise.
    let agent = unsafe { running(agent) }?;
    agent
        .places
        .as_ref()
        .ok_or_else(|| Failure::invalid("the agent has no capacity slots: set options->capacity"))
}

/// The backend id the agent registers with: the one given, or the one derived from the
/// service and the advertised address. Tickets for this backend carry it (pass it to
/// `lw_ticket_verify`). 0 if `agent` is NULL.
///
/// # Safety
/// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_agent_backend_id(agent: *const lw_agent) -> u64 {
    // SAFETY: the caller's promise.
    boundary::access(0, || unsafe { boundary::handle(agent, "agent") }.ok().map(|agent| agent.backend_id))
}

/// Stops the agent: closes its connections (the dispatchers drop the backend at once)
/// and ends its thread, waiting at most 5 s. Returns `LW_OK` (also when already
/// stopped), `LW_E_TIMEOUT` (the thread is left to finish alone), `LW_E_PANIC` (the
/// agent had failed) or `LW_E_NULL`. The agent must still be freed.
///
/// # Safety
/// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_agent_stop(agent: *mut lw_agent) -> c_int {
    // SAFETY: the caller's promise.
    boundary::call(|| unsafe { boundary::handle(agent.cast_const(), "agent") }?.stop())
}

/// Stops the agent if it runs (as `lw_agent_stop`) and frees it; NULL is ignored.
///
/// # Safety
/// `agent` is NULL or an agent from `lw_agent_start` not yet freed; it must not be
/// used afterwards, nor by another thread meanwhile.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_agent_free(agent: *mut lw_agent) {
    boundary::access((), || {
        if agent.is_null() || !agent.is_aligned() {
            return Some(());
        }
        // SAFETY: a box this library leaked in lw_agent_start, freed once per the
        // caller's promise.
        let agent = unsafe { Box::from_raw(agent) };
        // A stop that fails here has nobody to tell: the thread finishes alone.
        let _ = agent.stop();
        Some(())
    })
}

/// The agent behind `agent`, refused once stopped.
///
/// # Safety
/// `agent` is NULL or a live handle.
unsafe fn running<'a>(agent: *const lw_agent) -> Result<&'a lw_agent, Failure> {
    // SAFETY: the caller's promise.
    let agent = unsafe { boundary::handle(agent, "agent") }?;
    match lock(&agent.running).is_some() {
        true => Ok(agent),
        false => Err(Failure::new(LW_E_STOPPED, "the agent is stopped")),
    }
}

impl lw_agent {
    /// Applies `change` to the backend's condition and publishes the state it makes.
    fn change(&self, change: impl FnOnce(&mut Condition)) -> Result<(), Failure> {
        let mut condition = lock(&self.condition);
        change(&mut condition);
        // The agent's run loop sends a changed state at once, and ignores a repeat.
        self.state.send_replace(condition.state());
        Ok(())
    }

    fn stop(&self) -> Result<(), Failure> {
        let Some(Running { stop, done, thread }) = lock(&self.running).take() else {
            return Ok(());
        };
        // The thread may have ended already, dropping its receiver: nothing to tell.
        let _ = stop.send(());
        match done.recv_timeout(STOP_TIMEOUT) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {}
            Err(RecvTimeoutError::Timeout) => {
                let message =
                    format!("the agent did not stop within {STOP_TIMEOUT:?}; it finishes on its own");
                return Err(Failure::new(LW_E_TIMEOUT, message));
            }
        }
        match thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(Failure::new(LW_E_PANIC, message)),
            Err(_) => Err(Failure::new(LW_E_PANIC, "the agent's thread panicked")),
        }
    }
}

/// Locks `mutex`, ignoring poisoning: the data are plain figures, whole after any panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn metric_name(name: &str) -> Result<MetricName, Failure> {
    MetricName::new(name).map_err(|error| Failure::invalid(format!("name: {error}")))
}

/// The agent's configuration from the caller's options, every field checked.
///
/// # Safety
/// As for `lw_agent_start`'s `options`.
unsafe fn read_config(options: *const lw_agent_options) -> Result<AgentConfig, Failure> {
    // SAFETY: the caller's promise; every field is valid as zero bytes.
    let options = unsafe { boundary::read_versioned(options, "options", AGENT_OPTIONS_V1_LEN) }?;
    // SAFETY: the caller's promise for the strings (and below for the secret).
    let servers = parse_servers(&unsafe { boundary::string(options.servers, "options->servers") }?)?;
    // SAFETY: as above.
    let advertise_text = unsafe { boundary::string(options.advertise, "options->advertise") }?;
    let advertise: Advertise = advertise_text
        .parse()
        .map_err(|error| Failure::invalid(format!("options->advertise: {advertise_text:?}: {error}")))?;
    let mut config = AgentConfig::with_servers(servers, advertise);
    if !options.service.is_null() {
        // SAFETY: as above.
        config = config.v2(unsafe { service_or_default(options.service) }?);
    }
    if options.backend_id != 0 {
        config.backend_id = options.backend_id;
    }
    if !options.secret.is_null() {
        // SAFETY: as above.
        let bytes = unsafe { boundary::bytes(options.secret, options.secret_len, "options->secret") }?;
        config.secret = Some(
            Secret::new(bytes)
                .map_err(|error| Failure::invalid(format!("options->secret: {}", error.reason)))?,
        );
    }
    apply_numbers(&mut config, &options)?;
    config.slots = places(&options)?;
    config.validate().map_err(|error| Failure::invalid(format!("options: {error}")))?;
    Ok(config)
}

/// The backend's places, if `options->capacity` gives them.
fn places(options: &lw_agent_options) -> Result<Option<Places>, Failure> {
    if options.capacity == 0 {
        return Ok(None);
    }
    if options.capacity > MAX_CAPACITY {
        return Err(Failure::invalid(format!(
            "options->capacity is {}, at most {MAX_CAPACITY}",
            options.capacity
        )));
    }
    let lifetime = match options.promise_lifetime_ms {
        0 => DEFAULT_PROMISE_LIFETIME,
        ms => Duration::from_millis(u64::from(ms)),
    };
    if lifetime > MAX_PROMISE_LIFETIME {
        return Err(Failure::invalid(format!(
            "options->promise_lifetime_ms is {}, at most 3600000",
            options.promise_lifetime_ms
        )));
    }
    Ok(Some(Places::new(options.capacity, lifetime)))
}

/// The numeric options: timing, weight and protocol, 0 keeping each default.
fn apply_numbers(config: &mut AgentConfig, options: &lw_agent_options) -> Result<(), Failure> {
    if options.interval_ms != 0 {
        config.interval = Duration::from_millis(u64::from(options.interval_ms));
    }
    if options.connect_timeout_ms != 0 {
        config.connect_timeout = Duration::from_millis(u64::from(options.connect_timeout_ms));
    }
    if options.weight != 0 {
        let weight = u16::try_from(options.weight).ok().and_then(NonZeroU16::new);
        config.weight = weight.ok_or_else(|| {
            Failure::invalid(format!("options->weight is {}, at most 65535", options.weight))
        })?;
    }
    match options.protocol {
        LW_PROTOCOL_V2 => {}
        LW_PROTOCOL_LEGACY => *config = config.clone().legacy(),
        other => {
            let message =
                format!("options->protocol is {other}: LW_PROTOCOL_V2 (0) or LW_PROTOCOL_LEGACY (1)");
            return Err(Failure::invalid(message));
        }
    }
    Ok(())
}

/// Starts the agent's thread and runtime.
fn start(config: AgentConfig) -> Result<lw_agent, Failure> {
    let runtime_error =
        |error: std::io::Error| Failure::new(LW_E_RUNTIME, format!("cannot start the agent: {error}"));
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(runtime_error)?;
    let figures = Arc::new(Mutex::new(Figures::default()));
    let probe = host_probe(Arc::clone(&figures));
    let (state, state_rx) = watch::channel(State::Ready);
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel();
    let backend_id = config.backend_id;
    let places = config.slots.clone();
    let thread = std::thread::Builder::new()
        .name("loadwise-agent".to_owned())
        .spawn(move || {
            let outcome = run(&runtime, config, probe, state_rx, stop_rx);
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
            // The receiver may be gone (a stop that timed out): nobody waits any more.
            let _ = done_tx.send(());
            outcome
        })
        .map_err(runtime_error)?;
    Ok(lw_agent {
        backend_id,
        figures,
        places,
        condition: Mutex::new(Condition { draining: false, healthy: true }),
        state,
        running: Mutex::new(Some(Running { stop, done, thread })),
    })
}

/// This host's memory and CPU, plus the figures the backend set.
fn host_probe(figures: Arc<Mutex<Figures>>) -> HostProbe {
    HostProbe::new().with_extra(move |sample: &mut Sample| {
        let figures = lock(&figures);
        sample.connections = figures.connections;
        sample.metrics.extend(figures.metrics.iter().cloned());
        Ok(())
    })
}

/// The agent's thread: runs the agent until told to stop, a panic caught and reported
/// to `lw_agent_stop` as text.
fn run(
    runtime: &tokio::runtime::Runtime,
    config: AgentConfig,
    probe: HostProbe,
    state: watch::Receiver<State>,
    stop: oneshot::Receiver<()>,
) -> Result<(), String> {
    // A dropped sender (the agent freed without a stop) stops it too.
    let shutdown = async {
        let _ = stop.await;
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(loadwise_agent::run_with_state(config, probe, state, shutdown))
    }));
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("the agent stopped: {error}")),
        Err(_) => Err("the agent's thread panicked".to_owned()),
    }
}
