//! Cost of a pick in a slot service against a plain pick of the same pool, measured in
//! the same run: the slot pools' choice and count on top of the selector's accounting.
//!
//! `cargo bench -p loadwise-core --bench slots`; the figures are quoted in
//! docs/performance.md ("Capacity slots").

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use loadwise_core::dispatcher::{DispatchSettings, Dispatcher};
use loadwise_core::model::{
    ConnectionId, DEFAULT_WEIGHT, Endpoint, Health, Metrics, PickRequest, SlotReport, State, V2Report,
};
use loadwise_protocol::v2::ServiceName;

const POOL_SIZES: [u64; 3] = [10, 1_000, 10_000];

/// More places than any run can pick, granted at once: the pick never runs out.
const PLACES: u32 = u32::MAX;

/// Backend `n` of `service` at its own address, `n × 7 mod 90` % of memory, with
/// `slots` when given.
fn report(service: &ServiceName, n: u64, slots: Option<SlotReport>) -> V2Report {
    let addr: SocketAddr =
        format!("10.{}.{}.{}:7000", n >> 16 & 0xff, n >> 8 & 0xff, n & 0xff).parse().unwrap();
    V2Report {
        service: service.clone(),
        backend_id: n,
        endpoint: Endpoint::from_socket_addr(addr).unwrap(),
        metrics: Metrics { memory: Some((n * 7 % 90) as f64), ..Metrics::default() },
        weight: DEFAULT_WEIGHT,
        state: State::Ready,
        health: Health::Healthy,
        slots,
    }
}

/// A dispatcher whose service `service` has `size` backends, slot backends when `slots`.
fn pool(service: &ServiceName, size: u64, slots: bool, now: Instant) -> Dispatcher {
    let settings = DispatchSettings {
        ttl: Duration::from_secs(3600),
        max_backends: size as usize,
        ..DispatchSettings::default()
    };
    let dispatcher = Dispatcher::with_seed(settings, 1);
    let grant = SlotReport { capacity: PLACES, in_use: 0, grant_seq: 0, grant_total: u64::from(PLACES) };
    for n in 0..size {
        let report = report(service, n, slots.then_some(grant));
        dispatcher.batch(now).heartbeat_v2(ConnectionId(n), report).unwrap();
    }
    dispatcher
}

fn pick(c: &mut Criterion) {
    let now = Instant::now();
    let service = ServiceName::new("game").unwrap();
    let request = PickRequest::http(&service);
    let mut group = c.benchmark_group("slot_pick");
    for size in POOL_SIZES {
        for (name, slots) in [("plain", false), ("spread", true)] {
            let dispatcher = pool(&service, size, slots, now);
            group.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter(|| black_box(dispatcher.pick(&request, now)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
