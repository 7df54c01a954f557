//! Cost of a keyed (sticky) pick as the pool grows, beside an unkeyed `least-loaded`
//! pick of the same pool measured in the same run, and the cost of building a ring.
//!
//! `cargo bench -p loadwise-core --bench affinity`; the figures are quoted in
//! docs/balancing.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use loadwise_core::affinity::{Identity, Ring};
use loadwise_core::dispatcher::{DispatchSettings, Dispatcher};
use loadwise_core::model::ConnectionId;
use loadwise_core::model::{DEFAULT_WEIGHT, Endpoint, Metrics, PickRequest, State, V2Report};
use loadwise_core::registry::BackendId;
use loadwise_protocol::v2::ServiceName;

const POOL_SIZES: [u64; 3] = [10, 1_000, 100_000];

/// Distinct keys the picks cycle through: enough that no key comes back often enough
/// to fill its backend up to the bound within a run (no report empties them here), so
/// that the figures are those of a key's first backend, the common case.
const KEYS: usize = 1 << 20;

fn game() -> ServiceName {
    ServiceName::new("game").unwrap()
}

fn heartbeat(n: u64) -> V2Report {
    let addr = format!("10.{}.{}.{}:7000", n >> 16 & 0xff, n >> 8 & 0xff, n & 0xff);
    V2Report {
        backend_id: n,
        service: game(),
        endpoint: Endpoint::from_socket_addr(addr.parse().unwrap()).unwrap(),
        metrics: Metrics { memory: Some((20 + n % 40) as f64), cpu: Some(0.0), ..Metrics::default() },
        weight: DEFAULT_WEIGHT,
        state: State::Ready,
        health: loadwise_core::model::Health::Healthy,
        slots: None,
    }
}

/// A dispatcher holding `size` backends of `game` with spread-out loads.
fn pool(size: u64, now: Instant) -> Dispatcher {
    let settings = DispatchSettings {
        ttl: Duration::from_secs(3600),
        max_backends: size as usize,
        ..Default::default()
    };
    let dispatcher = Dispatcher::with_seed(settings, 1);
    for n in 0..size {
        dispatcher.batch(now).heartbeat_v2(ConnectionId(1_000_000 + n), heartbeat(n)).unwrap();
    }
    dispatcher
}

fn pick(c: &mut Criterion) {
    let registered = Instant::now();
    // Past the slow start, when a pick costs its backend the plain estimate.
    let now = registered + Duration::from_secs(60);
    let keys: Vec<String> = (0..KEYS).map(|n| format!("player-{n}")).collect();
    let service = game();
    let mut group = c.benchmark_group("pick");
    for size in POOL_SIZES {
        let dispatcher = pool(size, registered);
        // The first keyed pick builds the ring: not part of a pick's cost.
        assert!(dispatcher.pick(&PickRequest::http(&service).with_key(b"warm"), now).picked().is_some());
        let mut next = 0;
        group.bench_with_input(BenchmarkId::new("keyed", size), &size, |b, _| {
            b.iter(|| {
                next = (next + 1) % KEYS;
                black_box(dispatcher.pick(&PickRequest::http(&service).with_key(keys[next].as_bytes()), now))
            })
        });
        group.bench_with_input(BenchmarkId::new("unkeyed-least-loaded", size), &size, |b, _| {
            b.iter(|| black_box(dispatcher.pick(&PickRequest::http(&service), now)))
        });
    }
    group.finish();
}

fn ring_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring-build");
    group.sample_size(10);
    for size in POOL_SIZES {
        let members: Vec<(BackendId, Vec<u8>)> = (0..size)
            .map(|n| (BackendId(n), Identity::V2 { service: "game", backend_id: n }.to_bytes()))
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter_batched(
                || members.clone(),
                |members| black_box(Ring::build(1, members)),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, pick, ring_build);
criterion_main!(benches);
