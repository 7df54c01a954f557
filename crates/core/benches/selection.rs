//! Cost of a pick and of a heartbeat as the pool grows, against the original's
//! sort-everything-per-login as a reference measured in the same run, and of a
//! `least-loaded` pick with and without its tie band.
//!
//! `cargo bench --bench selection`; the figures are quoted in docs/balancing.md and
//! docs/performance.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use loadwise_core::dispatcher::{DispatchSettings, Dispatcher};
use loadwise_core::model::{ConnectionId, LegacyName, LegacyReport, Load, PickRequest};
use loadwise_core::selection::Policy;

/// A pick of the default pool in the legacy form, as a login asks with its clock
/// already checked.
const LEGACY_PICK: PickRequest<'static> = PickRequest::UNCLOCKED_LOGIN;

const POOL_SIZES: [u64; 4] = [10, 1_000, 10_000, 100_000];

/// Backend `n`'s memory use, spread out.
fn mem(n: u64) -> u8 {
    (n * 7 % 90) as u8
}

/// A legacy heartbeat of backend `n` (an address of its own) reporting `mem`.
fn heartbeat_with(n: u64, mem: u8) -> LegacyReport {
    let ip = format!("10.{}.{}.{}", n >> 16 & 0xff, n >> 8 & 0xff, n & 0xff);
    let name = LegacyName::from_text(&ip, 1000 + (n % 50_000) as u16).unwrap();
    LegacyReport { name, load: Load::from_percent(f64::from(mem)) }
}

fn heartbeat(n: u64) -> LegacyReport {
    heartbeat_with(n, mem(n))
}

/// A dispatcher holding `size` backends with spread-out loads.
fn pool(policy: Policy, size: u64, now: Instant) -> Dispatcher {
    pool_with(DispatchSettings { policy, ..DispatchSettings::default() }, size, now)
}

/// [`pool`] under `settings`.
fn pool_with(settings: DispatchSettings, size: u64, now: Instant) -> Dispatcher {
    let settings =
        DispatchSettings { ttl: Duration::from_secs(3600), max_backends: size as usize, ..settings };
    let dispatcher = Dispatcher::with_seed(settings, 1);
    for n in 0..size {
        dispatcher.heartbeat(ConnectionId(n), &heartbeat(n), now).unwrap();
    }
    dispatcher
}

fn pick(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("pick");
    for policy in [Policy::LeastLoaded, Policy::P2c, Policy::RoundRobin, Policy::Original] {
        for size in POOL_SIZES {
            let dispatcher = pool(policy, size, now);
            group.bench_with_input(BenchmarkId::new(policy.name(), size), &size, |b, _| {
                b.iter(|| black_box(dispatcher.pick(&LEGACY_PICK, now)))
            });
        }
    }
    // The same without the tie band: ties go to the lowest id, and the picks walk
    // the slots in the order they were registered.
    for size in POOL_SIZES {
        let mut settings = DispatchSettings { policy: Policy::LeastLoaded, ..DispatchSettings::default() };
        settings.load.tie_band = 0.0;
        let dispatcher = pool_with(settings, size, now);
        group.bench_with_input(BenchmarkId::new("least-loaded-no-tie-band", size), &size, |b, _| {
            b.iter(|| black_box(dispatcher.pick(&LEGACY_PICK, now)))
        });
    }
    group.finish();
}

fn heartbeat_update(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("heartbeat");
    for policy in [Policy::LeastLoaded, Policy::P2c] {
        for size in POOL_SIZES {
            let dispatcher = pool(policy, size, now);
            // Each backend's own address (a backend is named by it) with another load.
            let beats: Vec<LegacyReport> = (0..size).map(|n| heartbeat_with(n, mem(n * 13))).collect();
            let mut next = 0u64;
            group.bench_with_input(BenchmarkId::new(policy.name(), size), &size, |b, &size| {
                b.iter(|| {
                    // A known backend with a changed load: the common case.
                    next = (next + 1) % size;
                    let beat = &beats[next as usize];
                    black_box(dispatcher.heartbeat(ConnectionId(next), beat, now).unwrap())
                })
            });
        }
    }
    group.finish();
}

/// Heartbeats as a pool of live backends sends them: each backend once a second, in
/// turn, each at its own instant and with a load that changes from one second to the
/// next, under the default TTL, so that the expiry index and the pick order move on
/// every heartbeat (the group above applies every heartbeat at one instant).
fn heartbeat_each_second(c: &mut Criterion) {
    let start = Instant::now();
    let mut group = c.benchmark_group("heartbeat-each-second");
    for policy in [Policy::LeastLoaded, Policy::P2c] {
        for size in POOL_SIZES {
            let settings =
                DispatchSettings { policy, max_backends: size as usize, ..DispatchSettings::default() };
            let dispatcher = Dispatcher::with_seed(settings, 1);
            let step_nanos = 1_000_000_000 / size;
            let beats: Vec<LegacyReport> = (0..size).map(heartbeat).collect();
            let mut sent = 0u64;
            let beat = |sent: u64| {
                let (index, second) = (sent % size, sent / size);
                let mut heartbeat = beats[index as usize];
                heartbeat.load = Load::from_percent(((index * 37 + second * 11) % 101) as f64);
                let now = start + Duration::from_nanos(step_nanos * sent);
                dispatcher.heartbeat(ConnectionId(index), &heartbeat, now).unwrap()
            };
            while sent < size {
                beat(sent);
                sent += 1;
            }
            group.bench_with_input(BenchmarkId::new(policy.name(), size), &size, |b, _| {
                b.iter(|| {
                    sent += 1;
                    black_box(beat(sent))
                })
            });
        }
    }
    group.finish();
}

/// What a dispatcher does with 10 000 backends and busy clients: every heartbeat of
/// [`heartbeat_each_second`] followed by four picks, as `loadwise bench` with 64
/// clients makes them (40 000 picks a second or more). Each iteration is one
/// heartbeat and its four picks.
fn picks_among_heartbeats(c: &mut Criterion) {
    const PICKS_PER_HEARTBEAT: u64 = 4;
    let start = Instant::now();
    let mut group = c.benchmark_group("picks-among-heartbeats");
    for policy in [Policy::LeastLoaded, Policy::P2c] {
        for size in [10, 10_000] {
            let settings =
                DispatchSettings { policy, max_backends: size as usize, ..DispatchSettings::default() };
            let dispatcher = Dispatcher::with_seed(settings, 1);
            let step_nanos = 1_000_000_000 / 10_000;
            let beats: Vec<LegacyReport> = (0..size).map(heartbeat).collect();
            let mut sent = 0u64;
            let beat = |sent: u64| {
                let (index, round) = (sent % size, sent / size);
                let mut heartbeat = beats[index as usize];
                heartbeat.load = Load::from_percent(((index * 37 + round * 11) % 101) as f64);
                let now = start + Duration::from_nanos(step_nanos * sent);
                dispatcher.heartbeat(ConnectionId(index), &heartbeat, now).unwrap();
                for _ in 0..PICKS_PER_HEARTBEAT {
                    black_box(dispatcher.pick(&LEGACY_PICK, now));
                }
            };
            // Registered, and past the slow start.
            while sent < size.max(40_000) {
                beat(sent);
                sent += 1;
            }
            group.bench_with_input(BenchmarkId::new(policy.name(), size), &size, |b, _| {
                b.iter(|| {
                    sent += 1;
                    beat(sent)
                })
            });
        }
    }
    group.finish();
}

/// The original server's login: copy the table, sort it by memory, take the first.
fn sort_every_login(c: &mut Criterion) {
    let mut group = c.benchmark_group("reference-sort-per-login");
    for size in POOL_SIZES {
        let table: Vec<(u8, u64)> = (0..size).map(|n| (mem(n), n)).collect();
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                let mut sorted = table.clone();
                sorted.sort();
                black_box(sorted[0])
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = pick, heartbeat_update, heartbeat_each_second, picks_among_heartbeats, sort_every_login
}
criterion_main!(benches);
