//! Keyed picks through the dispatcher: the ring over a service's backends, the
//! bound from the selector's loads, states, and the counts.

use std::time::{Duration, Instant};

use super::PassReason;
use crate::dispatcher::{DispatchSettings, Dispatcher};
use crate::model::ConnectionId;
use crate::model::{DEFAULT_WEIGHT, Endpoint, Metrics, PickRequest, State, V2Report};
use crate::selection::BackendState;
use loadwise_protocol::v2::ServiceName;

fn game() -> ServiceName {
    ServiceName::new("game").unwrap()
}

fn heartbeat(backend_id: u64, memory: u16) -> V2Report {
    V2Report {
        backend_id,
        service: game(),
        endpoint: Endpoint::from_socket_addr(format!("10.0.0.{backend_id}:7000").parse().unwrap()).unwrap(),
        metrics: Metrics { memory: Some(f64::from(memory)), cpu: Some(0.0), ..Metrics::default() },
        weight: DEFAULT_WEIGHT,
        state: State::Ready,
        health: crate::model::Health::Healthy,
        slots: None,
    }
}

/// A dispatcher seeded with `seed` that heard backends `ids` (in that order) on
/// connections numbered from `first_connection`, each at `memory` %.
fn dispatcher(seed: u64, ids: &[u64], first_connection: u64, memory: u16, now: Instant) -> Dispatcher {
    let settings = DispatchSettings { ttl: Duration::from_secs(3600), ..DispatchSettings::default() };
    let d = Dispatcher::with_seed(settings, seed);
    for (n, &id) in ids.iter().enumerate() {
        d.batch(now).heartbeat_v2(ConnectionId(first_connection + n as u64), heartbeat(id, memory)).unwrap();
    }
    d
}

fn pick(d: &Dispatcher, key: &str, now: Instant) -> u64 {
    d.pick(&PickRequest::http(&game()).with_key(key.as_bytes()), now).chosen_backend().unwrap()
}

#[test]
fn two_replicas_send_a_key_to_the_same_backend_and_keep_it_there() {
    let now = Instant::now();
    let one = dispatcher(1, &[1, 2, 3, 4, 5], 100, 20, now);
    let other = dispatcher(99, &[5, 3, 1, 4, 2], 7000, 20, now);
    for n in 0..50 {
        let key = format!("player-{n}");
        let first = pick(&one, &key, now);
        assert_eq!(pick(&one, &key, now), first, "{key}");
        assert_eq!(pick(&other, &key, now), first, "{key}");
    }
}

#[test]
fn a_drained_backend_loses_its_keys_until_it_is_ready_again() {
    let now = Instant::now();
    let d = dispatcher(1, &[1, 2, 3, 4], 100, 20, now);
    let home = pick(&d, "player-42", now);
    let snapshot = d.snapshot();
    let id = snapshot.iter().find(|b| b.backend.v2.as_ref().unwrap().backend_id == home).unwrap().id;
    d.set_state(id, BackendState::Draining).unwrap();
    let moved = pick(&d, "player-42", now);
    assert_ne!(moved, home);
    assert_eq!(pick(&d, "player-42", now), moved, "it stays on its next backend meanwhile");
    d.set_state(id, BackendState::Ready).unwrap();
    assert_eq!(pick(&d, "player-42", now), home);
    let counts = d.affinity_counts();
    assert_eq!(counts.len(), 1);
    let (service, counts) = &counts[0];
    assert_eq!((service, counts.keyed, counts.fallbacks), (&game(), 4, 0));
    let draining = PassReason::ALL.iter().position(|&r| r == PassReason::Draining).unwrap();
    assert_eq!(counts.first_passed[draining], 2);
}

#[test]
fn a_hot_key_spills_when_its_backend_reaches_the_bound_and_returns_after_a_report() {
    let now = Instant::now();
    let d = dispatcher(1, &[1, 2, 3], 100, 20, now);
    let home = pick(&d, "hot", now);
    // Past the slow start, each pick costs the prior 0.1 %: at 20 % everywhere, the
    // bound max(1.25 m, m + 5) is about 25 %, some fifty picks away.
    let later = now + Duration::from_secs(10);
    let spilled = (0..200).map(|_| pick(&d, "hot", later)).position(|backend| backend != home);
    let spilled = spilled.expect("the hot key spilled");
    assert!((20..=120).contains(&spilled), "spilled after {spilled} picks");
    // A report brings its home back to 20 %: the key returns.
    let connection = ConnectionId(100 + home - 1);
    d.batch(later).heartbeat_v2(connection, heartbeat(home, 20)).unwrap();
    assert_eq!(pick(&d, "hot", later), home);
}

#[test]
fn unkeyed_picks_are_unchanged_and_a_new_backend_takes_keys_only_for_itself() {
    let now = Instant::now();
    let d = dispatcher(1, &[1, 2, 3], 100, 20, now);
    let before: Vec<u64> = (0..30).map(|n| pick(&d, &format!("k{n}"), now)).collect();
    d.batch(now).heartbeat_v2(ConnectionId(200), heartbeat(4, 20)).unwrap();
    for (n, &was) in before.iter().enumerate() {
        let is = pick(&d, &format!("k{n}"), now);
        assert!(is == was || is == 4, "k{n} moved from {was} to {is}");
    }
    // The newcomer has had no picks: an unkeyed pick, by load, goes there.
    assert_eq!(d.pick(&PickRequest::http(&game()), now).chosen_backend().unwrap(), 4);
}

#[test]
fn a_service_that_loses_its_last_backend_loses_its_ring_and_counts() {
    let now = Instant::now();
    let d = dispatcher(1, &[1], 100, 20, now);
    pick(&d, "k", now);
    assert_eq!(d.affinity_counts().len(), 1);
    d.disconnect(ConnectionId(100));
    assert!(d.affinity_counts().is_empty());
}
