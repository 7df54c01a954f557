//! The event loop: a virtual clock, a queue of timed events, and the real dispatchers.
//!
//! Time is nanoseconds since the start of the run; the dispatchers see it as
//! `origin + elapsed` for one `origin` taken at the start, and never read the clock
//! otherwise. Every heartbeat and disconnection reaches every replica; the clients
//! go to the replicas in turn, in the order they arrive. Events at the same instant run in a fixed order: sessions end, backends
//! leave, heartbeats (and joins) arrive, burst windows open, then clients arrive;
//! within a kind, by backend, burst or stream number. Nothing depends on wall time
//! or on hash order, so a run is a pure function of scenario, policy and seed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use loadwise_core::dispatcher::{DispatchSettings, Dispatcher};
use loadwise_core::model::ConnectionId;
use loadwise_core::model::{PickOutcome, PickRequest};
use loadwise_core::registry::BackendId;
use loadwise_core::selection::{LoadSettings, Policy};
use loadwise_protocol::{Heartbeat, IpField};
use loadwise_server::legacy_report;

use super::arrivals::{Arrival, Nanos, Stream, nanos};
use super::metrics::{BurstTally, Counts, Integrals, PolicyResult, Pool};
use super::scenario::{LeaveKind, Scenario};

/// Session loads in billionths of a percent: fixed point, so that sessions
/// starting and ending add up exactly, however many there are.
type Units = u64;
const UNITS_PER_PERCENT: f64 = 1e9;

/// A session load in [`Units`] (at most 100 % each, so sums cannot overflow
/// within the client budget).
fn units(percent: f64) -> Units {
    (percent * UNITS_PER_PERCENT).round() as Units
}

/// The port every simulated backend advertises.
const PORT: u16 = 7000;

/// A backend, burst or stream number. Scenarios bound every count far below
/// `u32::MAX`; the narrow type halves the size of a queue entry, and the queue
/// (mostly session ends) is where a large run spends its time.
type Index = u32;

fn narrow(number: usize) -> Index {
    Index::try_from(number).expect("scenarios bound every count below u32::MAX")
}

/// What happens at an instant. The derived order is the order within an instant:
/// the variants as listed, then by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A session of a client from `stream` ends (the stream fixes its load).
    SessionEnd {
        backend: Index,
        stream: Index,
    },
    Leave {
        backend: Index,
    },
    Heartbeat {
        backend: Index,
    },
    BurstOpens {
        burst: Index,
    },
    Arrival {
        stream: Index,
    },
}

/// The queue of future events, earliest first.
#[derive(Debug, Default)]
struct Queue {
    heap: BinaryHeap<Reverse<(Nanos, Event)>>,
}

impl Queue {
    fn push(&mut self, at: Nanos, event: Event) {
        self.heap.push(Reverse((at, event)));
    }

    fn pop(&mut self) -> Option<(Nanos, Event)> {
        self.heap.pop().map(|Reverse(entry)| entry)
    }
}

/// One simulated backend's true state.
#[derive(Debug)]
struct Backend {
    base: f64,
    capacity: f64,
    interval: Nanos,
    /// Delay from the first heartbeat to the second.
    first_gap: Nanos,
    legacy: bool,
    heartbeat: Heartbeat,
    join_at: Nanos,
    leave: Option<(Nanos, LeaveKind)>,
    heartbeats_sent: u64,
    alive: bool,
    left: bool,
    /// Sum of the session loads it carries, in percent of a capacity-1 backend.
    session_load: Units,
}

impl Backend {
    /// True load in percent; it may exceed 100.
    fn load(&self) -> f64 {
        self.base + self.session_load as f64 / UNITS_PER_PERCENT / self.capacity
    }

    /// What the next heartbeat reports: the load truncated, capped at 255, or 100
    /// after the first heartbeat for a legacy sender.
    fn report(&self) -> u8 {
        if self.legacy && self.heartbeats_sent > 0 {
            return 100;
        }
        self.load().clamp(0.0, 255.0) as u8
    }
}

/// Derives an independent seed for one use of the run's seed (splitmix64).
pub(super) fn derive_seed(seed: u64, purpose: u64) -> u64 {
    let mut z = seed ^ purpose.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seed purposes; streams use `STREAMS + index`, replicas after the first
/// `REPLICAS + index` (far above any stream's), so that the first replica's seed is
/// that of a run with one dispatcher.
pub(super) const PHASES: u64 = 1;
const DISPATCHER: u64 = 2;
pub(super) const STREAMS: u64 = 16;
const REPLICAS: u64 = 1 << 32;

/// The seed of replica `index`.
pub(super) fn replica_seed(seed: u64, index: usize) -> u64 {
    match index {
        0 => derive_seed(seed, DISPATCHER),
        _ => derive_seed(seed, REPLICAS + index as u64),
    }
}

/// One run of one scenario under one policy.
pub struct Engine {
    /// The replicas, each with its own seed and its own share of the clients.
    dispatchers: Vec<Dispatcher>,
    /// Each replica's number for each backend it registered, to the backend's index.
    indexes: Vec<HashMap<BackendId, usize>>,
    /// The replica the next client goes to.
    next_replica: usize,
    origin: Instant,
    end: Nanos,
    queue: Queue,
    backends: Vec<Backend>,
    streams: Vec<Stream>,
    /// Each stream's next client, already drawn and scheduled.
    pending: Vec<Option<Arrival>>,
    /// Each stream's session load.
    stream_loads: Vec<Units>,
    bursts: Vec<BurstTally>,
    /// Bursts whose window may still count picks, by index into `bursts`.
    open_bursts: Vec<usize>,
    pool: Pool,
    integrals: Integrals,
    counts: Counts,
    arrivals: u64,
    policy: Policy,
}

impl Engine {
    /// Sets up the pool, the client streams and the first events.
    pub fn new(scenario: &Scenario, policy: Policy, seed: u64) -> Engine {
        let settings = dispatch_settings(scenario, policy);
        let streams = build_streams(scenario, seed);
        let dispatchers = (0..scenario.replicas())
            .map(|index| Dispatcher::with_seed(settings.clone(), replica_seed(seed, index)))
            .collect();
        let mut engine = Engine {
            indexes: vec![HashMap::new(); scenario.replicas()],
            dispatchers,
            next_replica: 0,
            origin: Instant::now(),
            end: nanos(scenario.duration),
            queue: Queue::default(),
            backends: build_backends(scenario, derive_seed(seed, PHASES)),
            pending: vec![None; streams.len()],
            stream_loads: streams.iter().map(|stream| units(stream.session_load())).collect(),
            streams,
            bursts: scenario
                .bursts
                .iter()
                .map(|burst| BurstTally::new(nanos(burst.at), nanos(burst.at) + nanos(burst.window)))
                .collect(),
            open_bursts: Vec::new(),
            pool: Pool::default(),
            integrals: Integrals::default(),
            counts: Counts::default(),
            arrivals: 0,
            policy,
        };
        engine.schedule_start();
        engine
    }

    fn schedule_start(&mut self) {
        for (number, backend) in self.backends.iter().enumerate() {
            let backend_number = narrow(number);
            self.queue.push(backend.join_at, Event::Heartbeat { backend: backend_number });
            if let Some((at, _)) = backend.leave {
                self.queue.push(at, Event::Leave { backend: backend_number });
            }
        }
        for (burst, tally) in self.bursts.iter().enumerate() {
            self.queue.push(tally.start(), Event::BurstOpens { burst: narrow(burst) });
        }
        for stream in 0..self.streams.len() {
            self.schedule_arrival(stream);
        }
    }

    /// Runs every event before the end of the run and returns what it measured.
    pub fn run(mut self) -> PolicyResult {
        while let Some((at, event)) = self.queue.pop() {
            if at >= self.end {
                break;
            }
            self.integrals.advance(&self.pool, at);
            self.handle(at, event);
        }
        self.integrals.advance(&self.pool, self.end);
        PolicyResult::new(self.policy, &self.integrals, &self.bursts, self.counts)
    }

    fn handle(&mut self, at: Nanos, event: Event) {
        match event {
            Event::SessionEnd { backend, stream } => self.end_session(backend as usize, stream as usize),
            Event::Leave { backend } => self.leave(backend as usize),
            Event::Heartbeat { backend } => self.heartbeat(backend as usize, at),
            Event::BurstOpens { burst } => {
                let burst = burst as usize;
                self.bursts[burst].open(self.pool.len());
                self.open_bursts.push(burst);
            }
            Event::Arrival { stream } => self.arrive(stream as usize, at),
        }
    }

    fn now(&self, at: Nanos) -> Instant {
        self.origin + Duration::from_nanos(at)
    }

    fn heartbeat(&mut self, index: usize, at: Nanos) {
        let backend = &mut self.backends[index];
        if backend.left {
            return;
        }
        let first = backend.heartbeats_sent == 0;
        let heartbeat = Heartbeat { mem: backend.report(), ..backend.heartbeat };
        backend.heartbeats_sent += 1;
        let next = at + if first { backend.first_gap } else { backend.interval };
        if first {
            backend.alive = true;
            self.pool.set(index, backend.load());
        }
        let now = self.now(at);
        for (dispatcher, indexes) in self.dispatchers.iter().zip(&mut self.indexes) {
            // Translated as the legacy session does: the simulated senders' addresses are
            // all usable, so only a full table refuses them.
            let report = legacy_report(&heartbeat).expect("a usable simulated address");
            match dispatcher.heartbeat(ConnectionId(index as u64), &report, now) {
                Ok(accepted) if accepted.registered => {
                    indexes.insert(accepted.id, index);
                }
                Ok(_) => {}
                Err(_) => self.counts.refused_heartbeats += 1,
            }
        }
        if next < self.end {
            self.queue.push(next, Event::Heartbeat { backend: narrow(index) });
        }
    }

    fn leave(&mut self, index: usize) {
        let backend = &mut self.backends[index];
        backend.left = true;
        backend.alive = false;
        backend.session_load = 0;
        self.pool.remove(index);
        if let Some((_, LeaveKind::Disconnect)) = backend.leave {
            for dispatcher in &self.dispatchers {
                dispatcher.disconnect(ConnectionId(index as u64));
            }
        }
    }

    fn arrive(&mut self, stream: usize, at: Nanos) {
        let arrival = self.pending[stream].take().expect("an arrival event has its client drawn");
        debug_assert_eq!(arrival.at, at);
        self.schedule_arrival(stream);
        let replica = self.next_replica;
        self.next_replica = (replica + 1) % self.dispatchers.len();
        let request = PickRequest::UNCLOCKED_LOGIN;
        let PickOutcome::Picked(picked) = self.dispatchers[replica].pick(&request, self.now(at)) else {
            self.counts.no_backend += 1;
            return;
        };
        let index = self.indexes[replica][&picked.id];
        self.counts.picks += 1;
        self.tally_burst_pick(index, at);
        if self.backends.get(index).is_some_and(|backend| backend.alive) {
            self.start_session(index, stream, arrival);
        } else {
            self.counts.lost += 1;
        }
    }

    /// Draws the stream's next client and schedules it, unless the run or the
    /// client budget is over.
    fn schedule_arrival(&mut self, stream: usize) {
        if self.arrivals >= super::scenario::MAX_CLIENTS {
            return;
        }
        let Some(arrival) = self.streams[stream].next_arrival() else { return };
        if arrival.at < self.end {
            self.arrivals += 1;
            self.pending[stream] = Some(arrival);
            self.queue.push(arrival.at, Event::Arrival { stream: narrow(stream) });
        }
    }

    fn tally_burst_pick(&mut self, backend: usize, at: Nanos) {
        let bursts = &mut self.bursts;
        self.open_bursts.retain(|&burst| bursts[burst].is_open_at(at));
        for &burst in &self.open_bursts {
            bursts[burst].record(backend, at);
        }
    }

    fn start_session(&mut self, index: usize, stream: usize, arrival: Arrival) {
        let backend = &mut self.backends[index];
        backend.session_load += self.stream_loads[stream];
        self.pool.set(index, backend.load());
        let Some(length) = arrival.length else { return };
        let ends = arrival.at.saturating_add(length);
        if ends < self.end {
            let event = Event::SessionEnd { backend: narrow(index), stream: narrow(stream) };
            self.queue.push(ends, event);
        }
    }

    fn end_session(&mut self, index: usize, stream: usize) {
        let backend = &mut self.backends[index];
        if !backend.alive {
            return;
        }
        backend.session_load -= self.stream_loads[stream];
        self.pool.set(index, backend.load());
    }
}

/// The dispatcher settings for a scenario under a policy.
pub(super) fn dispatch_settings(scenario: &Scenario, policy: Policy) -> DispatchSettings {
    let defaults = DispatchSettings::default();
    DispatchSettings {
        ttl: scenario.ttl(),
        max_backends: scenario.backend_count(),
        policy,
        load: LoadSettings {
            slow_start: scenario.dispatcher.slow_start.unwrap_or(defaults.load.slow_start),
            tie_band: scenario.dispatcher.tie_band.unwrap_or(defaults.load.tie_band),
            ..defaults.load.clone()
        },
        ..defaults
    }
}

/// Every backend of every group, in id order, each with a random heartbeat phase.
fn build_backends(scenario: &Scenario, seed: u64) -> Vec<Backend> {
    let mut phases = StdRng::seed_from_u64(seed);
    let mut backends = Vec::with_capacity(scenario.backend_count());
    for group in &scenario.backends {
        for member in 0..group.count {
            let index = backends.len();
            let interval = nanos(group.heartbeat_interval);
            let join_at = nanos(group.join_at);
            let first_gap = if join_at == 0 { random_phase(&mut phases, interval) } else { interval };
            backends.push(Backend {
                base: group.load.of(member),
                capacity: group.capacity,
                interval,
                first_gap,
                legacy: group.legacy_reports_100,
                heartbeat: Heartbeat { mem: 0, ip: backend_ip(index), port: PORT },
                join_at,
                leave: group.leave_at.map(|at| (nanos(at), group.leave_by)),
                heartbeats_sent: 0,
                alive: false,
                left: false,
                session_load: 0,
            });
        }
    }
    backends
}

/// A phase in `(0, interval]`: the initial pool connected at random times before
/// the run, so their heartbeats do not arrive in step.
pub(super) fn random_phase(rng: &mut StdRng, interval: Nanos) -> Nanos {
    rng.random_range(1..=interval)
}

/// A distinct address per backend: 10.x.y.z from its index.
pub(super) fn backend_ip(index: usize) -> IpField {
    let [_, a, b, c] = (index as u32).to_be_bytes();
    IpField::from_text(&format!("10.{a}.{b}.{c}")).expect("a dotted quad fits the ip field")
}

/// The steady stream (if any) and then one stream per burst, each with its own seed.
pub(super) fn build_streams(scenario: &Scenario, seed: u64) -> Vec<Stream> {
    let steady = Stream::steady(&scenario.clients, derive_seed(seed, STREAMS));
    let bursts = scenario.bursts.iter().enumerate().map(|(index, burst)| {
        Stream::burst(burst, &scenario.clients, derive_seed(seed, STREAMS + 1 + index as u64))
    });
    steady.into_iter().chain(bursts).collect()
}
