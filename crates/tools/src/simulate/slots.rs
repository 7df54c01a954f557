//! Capacity slots: one client stream admitted three ways (leases, load, one shared
//! counter), counting the clients sent beyond a backend's places and those refused
//! while a place was free.
//!
//! Every backend has `slots` places and each session takes one. The modes:
//!
//! - [`Mode::Leases`]: each backend keeps a real [`Ledger`]; each heartbeat to each
//!   replica carries its places, its sessions and the grant
//!   [`Ledger::grant`] gives that replica; the replica's LeaseReport reaches the
//!   backend `report_delay` later ([`Ledger::report`]); a client reaching the
//!   backend calls [`Ledger::arrive`], a session ending [`Ledger::leave`] and, as
//!   the agent does, a top-up heartbeat to the replicas that answered, no sooner
//!   than a quarter of the interval after the last.
//! - [`Mode::Load`]: today's picking: heartbeats carry no slots, only the share of
//!   places taken as `memory` (at most 100), and least-loaded picks; every pick is
//!   sent.
//! - [`Mode::SharedCounter`]: one idealised counter of free places for all replicas,
//!   as a central allocator would keep: a client is sent to the backend with the most
//!   places not taken nor promised to clients on their way, and refused when none has
//!   one. The reference: it never overshoots and never refuses with a place free.
//!
//! A picked client reaches its backend `connect_delay` later and takes a place then;
//! one that finds every place taken is an *overshoot*. The clients go to the replicas
//! in turn; heartbeats start at random phases, as in the `engine`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use loadwise_agent::slots::Ledger;
use loadwise_core::dispatcher::Dispatcher;
use loadwise_core::model::{
    BackendId, ConnectionId, DEFAULT_WEIGHT, Endpoint, Health, Metrics, PickOutcome, PickRequest, SlotReport,
    State, V2Report,
};
use loadwise_core::selection::Policy;

use super::arrivals::{Arrival, Nanos, Stream, nanos};
use super::engine::{PHASES, build_streams, derive_seed, dispatch_settings, random_phase, replica_seed};
use super::scenario::Scenario;

/// How long a promise waits for its client, as the agent's default ticket lifetime.
const PROMISE_LIFETIME: Duration = Duration::from_secs(30);

/// A top-up heartbeat goes no sooner than the interval divided by this after the last,
/// as the agent's.
const TOP_UP_FRACTION: u64 = loadwise_agent::TOP_UP_FRACTION as u64;

/// How clients are admitted to slot backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Each replica fills the places its leases grant it.
    Leases,
    /// Today's least-loaded picking on reported load, with no slots.
    Load,
    /// One counter of free places shared by every replica: the reference.
    SharedCounter,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Leases, Mode::Load, Mode::SharedCounter];
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Leases => "leases",
            Mode::Load => "load",
            Mode::SharedCounter => "shared-counter",
        })
    }
}

/// What one mode did with the client stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModeResult {
    pub mode: Mode,
    /// Clients sent to a backend.
    pub admitted: u64,
    /// Clients told "no free place" (or, without slots, "no backend").
    pub rejected: u64,
    /// Rejections while some backend had a place neither taken nor promised to a
    /// client on its way: places left unused.
    pub refused_with_room: u64,
    /// Clients that reached a backend whose places were all taken.
    pub overshoot: u64,
    /// The most clients beyond capacity at once, over all backends together.
    pub peak_overshoot: u64,
}

/// Runs `scenario` (which has slot backends) once in each mode, on the same clients.
pub fn compare_slots(scenario: &Scenario, seed: u64) -> Vec<ModeResult> {
    Mode::ALL.iter().map(|&mode| simulate_slots(scenario, mode, seed)).collect()
}

/// Runs `scenario` once in `mode`, every random draw seeded by `seed`.
pub fn simulate_slots(scenario: &Scenario, mode: Mode, seed: u64) -> ModeResult {
    SlotEngine::new(scenario, mode, seed).run()
}

/// What happens at an instant; within one, in this order, then by the fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    SessionEnd {
        backend: usize,
    },
    /// A replica's LeaseReport reaches the backend.
    LeaseReport {
        backend: usize,
        replica: usize,
        seq: u32,
        sent_total: u64,
    },
    Heartbeat {
        backend: usize,
    },
    /// A top-up: a heartbeat sent early because a place came free.
    TopUp {
        backend: usize,
    },
    /// A picked client reaches its backend and stays `length` (`None`: to the end).
    Reaches {
        backend: usize,
        length: Option<Nanos>,
    },
    Arrival {
        stream: usize,
    },
}

/// One slot backend's true state.
#[derive(Debug)]
struct Backend {
    places: u32,
    /// Sessions it carries (may exceed `places` when clients overshoot).
    sessions: u32,
    /// Clients picked for it and not there yet.
    en_route: u32,
    ledger: Ledger,
    join_at: Nanos,
    first_gap: Nanos,
    interval: Nanos,
    heartbeats_sent: u64,
    joined: bool,
    /// When it last told the replicas its places.
    last_told: Nanos,
    /// Whether a top-up is scheduled.
    top_up_due: bool,
}

impl Backend {
    /// Places neither taken nor promised to a client on its way.
    fn room(&self) -> u32 {
        self.places.saturating_sub(self.sessions + self.en_route)
    }

    fn beyond(&self) -> u64 {
        u64::from(self.sessions.saturating_sub(self.places))
    }
}

struct SlotEngine {
    mode: Mode,
    dispatchers: Vec<Dispatcher>,
    /// Each replica's id of each backend, to the backend's index.
    indexes: Vec<HashMap<BackendId, usize>>,
    next_replica: usize,
    origin: Instant,
    end: Nanos,
    connect_delay: Nanos,
    report_delay: Nanos,
    queue: BinaryHeap<Reverse<(Nanos, Event)>>,
    backends: Vec<Backend>,
    streams: Vec<Stream>,
    pending: Vec<Option<Arrival>>,
    /// The joined backends by room, most room and then lowest index last: the shared
    /// counter's choice and the test for a free place are a look at the end.
    rooms: BTreeSet<(u32, Reverse<usize>)>,
    /// Clients beyond capacity now, over all backends.
    beyond: u64,
    result: ModeResult,
    /// The (backend, replica) pairs whose replica has answered a slot heartbeat: until
    /// then the backend grants it nothing, as the agent does.
    answered: HashSet<(usize, usize)>,
}

impl SlotEngine {
    fn new(scenario: &Scenario, mode: Mode, seed: u64) -> SlotEngine {
        let settings = dispatch_settings(scenario, Policy::LeastLoaded);
        let replicas = if mode == Mode::SharedCounter { 0 } else { scenario.replicas() };
        let streams = build_streams(scenario, seed);
        let mut engine = SlotEngine {
            mode,
            dispatchers: (0..replicas)
                .map(|index| Dispatcher::with_seed(settings.clone(), replica_seed(seed, index)))
                .collect(),
            indexes: vec![HashMap::new(); replicas],
            next_replica: 0,
            origin: Instant::now(),
            end: nanos(scenario.duration),
            connect_delay: nanos(scenario.slots.connect_delay),
            report_delay: nanos(scenario.slots.report_delay),
            queue: BinaryHeap::new(),
            backends: build_backends(scenario, derive_seed(seed, PHASES)),
            pending: vec![None; streams.len()],
            streams,
            rooms: BTreeSet::new(),
            beyond: 0,
            result: ModeResult {
                mode,
                admitted: 0,
                rejected: 0,
                refused_with_room: 0,
                overshoot: 0,
                peak_overshoot: 0,
            },
            answered: HashSet::new(),
        };
        for backend in 0..engine.backends.len() {
            engine.push(engine.backends[backend].join_at, Event::Heartbeat { backend });
        }
        for stream in 0..engine.streams.len() {
            engine.schedule_arrival(stream);
        }
        engine
    }

    fn run(mut self) -> ModeResult {
        while let Some(Reverse((at, event))) = self.queue.pop() {
            if at >= self.end {
                break;
            }
            self.handle(at, event);
        }
        self.result
    }

    fn push(&mut self, at: Nanos, event: Event) {
        if at < self.end {
            self.queue.push(Reverse((at, event)));
        }
    }

    fn now(&self, at: Nanos) -> Instant {
        self.origin + Duration::from_nanos(at)
    }

    fn handle(&mut self, at: Nanos, event: Event) {
        match event {
            Event::SessionEnd { backend } => self.end_session(backend, at),
            Event::LeaseReport { backend, replica, seq, sent_total } => {
                let now = self.now(at);
                self.backends[backend].ledger.report(replica as u64, seq, sent_total, now);
                // Its first answer: a real grant goes at once, as the agent sends it.
                if self.answered.insert((backend, replica)) {
                    self.tell(backend, replica, at);
                }
            }
            Event::Heartbeat { backend } => self.heartbeat(backend, at),
            Event::TopUp { backend } => self.top_up(backend, at),
            Event::Reaches { backend, length } => self.reach(backend, at, length),
            Event::Arrival { stream } => self.arrive(stream, at),
        }
    }

    fn schedule_arrival(&mut self, stream: usize) {
        let Some(arrival) = self.streams[stream].next_arrival() else { return };
        if arrival.at < self.end {
            self.pending[stream] = Some(arrival);
            self.push(arrival.at, Event::Arrival { stream });
        }
    }

    fn heartbeat(&mut self, index: usize, at: Nanos) {
        let backend = &mut self.backends[index];
        let next = at + if backend.heartbeats_sent == 0 { backend.first_gap } else { backend.interval };
        backend.heartbeats_sent += 1;
        if !backend.joined {
            backend.joined = true;
            self.rooms.insert((backend.room(), Reverse(index)));
        }
        self.tell_all(index, at);
        self.push(next, Event::Heartbeat { backend: index });
    }

    /// Backend `index` tells every replica its places and their grants.
    fn tell_all(&mut self, index: usize, at: Nanos) {
        self.backends[index].last_told = at;
        for replica in 0..self.dispatchers.len() {
            self.tell(index, replica, at);
        }
    }

    /// A top-up heartbeat of backend `index`, unless a regular one went out since it
    /// was scheduled.
    fn top_up(&mut self, index: usize, at: Nanos) {
        let backend = &mut self.backends[index];
        backend.top_up_due = false;
        if !backend.joined || at < backend.last_told + backend.interval / TOP_UP_FRACTION {
            return;
        }
        backend.last_told = at;
        // As the agent: only a replica that keeps the books is topped up.
        for replica in 0..self.dispatchers.len() {
            if self.answered.contains(&(index, replica)) {
                self.tell(index, replica, at);
            }
        }
    }

    /// One heartbeat of backend `index` to `replica`, and its LeaseReport on its way back.
    fn tell(&mut self, index: usize, replica: usize, at: Nanos) {
        let now = self.now(at);
        let report = self.report(index, replica, now);
        let dispatcher = &self.dispatchers[replica];
        let Ok(accepted) = dispatcher.batch(now).heartbeat_v2(ConnectionId(index as u64), report) else {
            return;
        };
        self.indexes[replica].insert(accepted.id, index);
        if let Some(lease) = accepted.lease {
            let event = Event::LeaseReport {
                backend: index,
                replica,
                seq: lease.grant_seq,
                sent_total: lease.sent_total,
            };
            self.push(at + self.report_delay, event);
        }
    }

    /// What backend `index` tells `replica` now: with its places and a grant when
    /// leases are on, its share of places taken as `memory` in every mode.
    fn report(&mut self, index: usize, replica: usize, now: Instant) -> V2Report {
        let answered = self.answered.contains(&(index, replica));
        let dispatcher = &self.dispatchers[replica];
        let backend = &mut self.backends[index];
        let taken = f64::from(backend.sessions) / f64::from(backend.places) * 100.0;
        let slots = (self.mode == Mode::Leases).then(|| {
            let key = replica as u64;
            let grant =
                if answered { backend.ledger.grant(key, now) } else { backend.ledger.grant_nothing(key) };
            SlotReport {
                capacity: backend.places,
                in_use: backend.ledger.in_use(),
                grant_seq: grant.seq,
                grant_total: grant.total,
            }
        });
        V2Report {
            service: dispatcher.default_service().clone(),
            backend_id: index as u64,
            endpoint: endpoint(index),
            metrics: Metrics { memory: Some(taken.min(100.0)), ..Metrics::default() },
            weight: DEFAULT_WEIGHT,
            state: State::Ready,
            health: Health::Healthy,
            slots,
        }
    }

    fn arrive(&mut self, stream: usize, at: Nanos) {
        let arrival = self.pending[stream].take().expect("an arrival event has its client drawn");
        self.schedule_arrival(stream);
        match self.choose(at) {
            Some(backend) => {
                self.result.admitted += 1;
                self.change(backend, |backend| backend.en_route += 1);
                self.push(at + self.connect_delay, Event::Reaches { backend, length: arrival.length });
            }
            None => {
                self.result.rejected += 1;
                if self.rooms.last().is_some_and(|&(room, _)| room > 0) {
                    self.result.refused_with_room += 1;
                }
            }
        }
    }

    /// The backend the client is sent to, or `None` when it is refused.
    fn choose(&mut self, at: Nanos) -> Option<usize> {
        if self.mode == Mode::SharedCounter {
            // The most room first, the lowest index among equals: as slot policy spread.
            let &(room, Reverse(index)) = self.rooms.last()?;
            return (room > 0).then_some(index);
        }
        let replica = self.next_replica;
        self.next_replica = (replica + 1) % self.dispatchers.len();
        let request = PickRequest::UNCLOCKED_LOGIN;
        match self.dispatchers[replica].pick(&request, self.now(at)) {
            PickOutcome::Picked(picked) => self.indexes[replica].get(&picked.id).copied(),
            _ => None,
        }
    }

    fn reach(&mut self, index: usize, at: Nanos, length: Option<Nanos>) {
        let now = self.now(at);
        if self.backends[index].sessions >= self.backends[index].places {
            self.result.overshoot += 1;
        }
        let before = self.backends[index].beyond();
        self.change(index, |backend| {
            backend.en_route -= 1;
            backend.sessions += 1;
            backend.ledger.arrive(now);
        });
        self.beyond += self.backends[index].beyond() - before;
        self.result.peak_overshoot = self.result.peak_overshoot.max(self.beyond);
        if let Some(length) = length {
            self.push(at.saturating_add(length), Event::SessionEnd { backend: index });
        }
    }

    fn end_session(&mut self, index: usize, at: Nanos) {
        let before = self.backends[index].beyond();
        self.change(index, |backend| {
            backend.sessions -= 1;
            backend.ledger.leave();
        });
        self.beyond -= before - self.backends[index].beyond();
        let backend = &mut self.backends[index];
        if self.mode == Mode::Leases && !backend.top_up_due {
            backend.top_up_due = true;
            let due = at.max(backend.last_told + backend.interval / TOP_UP_FRACTION);
            self.push(due, Event::TopUp { backend: index });
        }
    }

    /// Applies `change` to backend `index`, keeping the index of rooms in step.
    fn change(&mut self, index: usize, change: impl FnOnce(&mut Backend)) {
        let backend = &mut self.backends[index];
        let filed = self.rooms.remove(&(backend.room(), Reverse(index)));
        change(backend);
        if filed {
            self.rooms.insert((backend.room(), Reverse(index)));
        }
    }
}

/// Every backend of every group, in order, each with a random heartbeat phase.
fn build_backends(scenario: &Scenario, seed: u64) -> Vec<Backend> {
    let mut phases = StdRng::seed_from_u64(seed);
    let mut backends = Vec::with_capacity(scenario.backend_count());
    for group in &scenario.backends {
        let places = group.slots.expect("a slot scenario's groups all have slots");
        for _ in 0..group.count {
            let interval = nanos(group.heartbeat_interval);
            let join_at = nanos(group.join_at);
            let first_gap = if join_at == 0 { random_phase(&mut phases, interval) } else { interval };
            backends.push(Backend {
                places,
                sessions: 0,
                en_route: 0,
                ledger: Ledger::new(places, 0, PROMISE_LIFETIME),
                join_at,
                first_gap,
                interval,
                heartbeats_sent: 0,
                joined: false,
                last_told: 0,
                top_up_due: false,
            });
        }
    }
    backends
}

/// A distinct address per backend: 10.x.y.z from its index.
fn endpoint(index: usize) -> Endpoint {
    let [_, a, b, c] = (index as u32).to_be_bytes();
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, a, b, c)), 7000);
    Endpoint::from_socket_addr(addr).expect("port 7000 is not 0")
}
