use std::sync::Arc;

use super::*;
use crate::model::{self, Clocks, Destination, Endpoint, Load, PickOutcome, PickRequest};
use crate::model::{LegacyName, LegacyReport};
use loadwise_protocol::IpField;

const NOW_UNIX: u64 = 1_700_000_000;

/// A legacy heartbeat, as the legacy session translates one.
fn heartbeat(ip: &str, port: u16, mem: u8) -> LegacyReport {
    LegacyReport { name: LegacyName::from_text(ip, port).unwrap(), load: Load::from_percent(f64::from(mem)) }
}

/// Backend `n` reports `mem` at `at`, from 10.0.0.n, port 1000 + n.
fn beat(d: &Dispatcher, n: u64, mem: u8, at: Instant) {
    let ip = format!("10.0.0.{n}");
    d.heartbeat(ConnectionId(n), &heartbeat(&ip, 1000 + n as u16, mem), at).unwrap();
}

fn dispatcher() -> Dispatcher {
    Dispatcher::new(DispatchSettings::default())
}

fn login(d: &Dispatcher, now: Instant, timestamp: u64) -> PickOutcome {
    d.pick(&login_request(timestamp), now)
}

fn login_request(timestamp: u64) -> PickRequest<'static> {
    PickRequest::login(Clocks { client: timestamp, dispatcher: NOW_UNIX })
}

/// What a legacy reply carries: the backend picked, the bytes and the port sent.
#[derive(Debug, PartialEq)]
struct Sent {
    id: BackendId,
    ip: IpField,
    port: u16,
}

/// The legacy answer of a pick, if it picked a backend.
fn sent(outcome: PickOutcome) -> Option<Sent> {
    match outcome {
        PickOutcome::Picked(model::Picked { id, to: Destination::Legacy(name) }) => {
            Some(Sent { id, ip: IpField::from_bytes(name.bytes), port: name.port })
        }
        _ => None,
    }
}

/// A pick of the default pool in the legacy form, with no clock to check.
fn pick(d: &Dispatcher, now: Instant) -> Option<Sent> {
    let request = PickRequest::UNCLOCKED_LOGIN;
    sent(d.pick(&request, now))
}

/// What a v2 or HTTP reply carries.
#[derive(Debug, PartialEq)]
struct ServicePick {
    id: BackendId,
    /// The id a v2 backend chose, the dispatcher's for a legacy one.
    backend_id: u64,
    endpoint: Endpoint,
}

/// A pick of `service` in the endpoint form, with no clock to check: the backend, or
/// the refusal.
fn pick_service(d: &Dispatcher, service: &ServiceName, now: Instant) -> Result<ServicePick, PickOutcome> {
    match d.pick(&PickRequest::http(service), now) {
        PickOutcome::Picked(model::Picked { id, to: Destination::Chosen { backend, endpoint } }) => {
            Ok(ServicePick { id, backend_id: backend, endpoint })
        }
        PickOutcome::Picked(model::Picked { id, to: Destination::LegacyEndpoint { endpoint } }) => {
            Ok(ServicePick { id, backend_id: id.0, endpoint })
        }
        refused => Err(refused),
    }
}

#[test]
fn no_backend_gets_the_error_reply() {
    let d = dispatcher();
    let outcome = login(&d, Instant::now(), NOW_UNIX);
    assert_eq!(outcome, PickOutcome::NoBackend);
    assert_eq!(d.stats().snapshot().logins_no_backend, 1);
}

#[test]
fn picks_the_least_loaded_and_replies_with_its_bytes() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 50, t0);
    beat(&d, 2, 20, t0);
    let outcome = login(&d, t0, NOW_UNIX);
    let sent = sent(outcome).unwrap();
    assert_eq!((sent.ip, sent.port), (IpField::from_text("10.0.0.2").unwrap(), 1002));
}

/// Logins at `now` until `n` have been answered, by the port each was sent to.
fn login_ports(d: &Dispatcher, n: usize, now: Instant) -> Vec<u16> {
    (0..n).map(|_| sent(login(d, now, NOW_UNIX)).unwrap().port).collect()
}

#[test]
fn on_defaults_the_logins_after_a_heartbeat_go_to_the_least_loaded() {
    // Registered together at 50, 20 and 70 %, with the default slow start: the
    // backend at 20 % takes every one of the first ten logins after a heartbeat
    // (each counts three times over at 1 s of age: 20 % + 10 × 0.3 % stays below 50).
    let d = dispatcher();
    assert_eq!(d.policy(), Policy::LeastLoaded);
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    for at in [t0, t1] {
        beat(&d, 1, 50, at);
        beat(&d, 2, 20, at);
        beat(&d, 3, 70, at);
    }
    assert_eq!(login_ports(&d, 10, t1), [1002; 10]);
    // A v2 pick of the same pool follows the same rule.
    let default = DispatchSettings::default().default_service;
    assert_eq!(pick_service(&d, &default, t1).unwrap().id, BackendId(2));
}

#[test]
fn p2c_stays_available_and_sends_some_logins_to_a_busier_backend() {
    let d = Dispatcher::with_seed(DispatchSettings { policy: Policy::P2c, ..DispatchSettings::default() }, 5);
    let t0 = Instant::now();
    beat(&d, 1, 50, t0);
    beat(&d, 2, 20, t0);
    beat(&d, 3, 70, t0);
    let ports = login_ports(&d, 30, t0 + Duration::from_secs(1));
    // The pair {50 %, 70 %} is drawn about one time in three, and 50 % wins it.
    let to_50 = ports.iter().filter(|&&port| port == 1001).count();
    assert!((3..=20).contains(&to_50), "{ports:?}");
    assert!(!ports.contains(&1003), "the busiest backend never wins a pair");
}

#[test]
fn a_newcomer_below_everyone_is_chosen_on_the_very_next_login() {
    // 2 000 backends at loads from 2 to 99 %, then one joins at 1 %. Slow start
    // tempers how many clients it takes, never whether it is chosen.
    const POOL: u64 = 2_000;
    let settings = DispatchSettings { max_backends: 4_000, ..DispatchSettings::default() };
    let d = Dispatcher::new(settings);
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(10);
    let mem = |n: u64| (2 + n * 37 % 98) as u8;
    for at in [t0, t1] {
        for n in 1..=POOL {
            let ip = format!("10.1.{}.{}", n / 256, n % 256);
            d.heartbeat(ConnectionId(n), &heartbeat(&ip, 2000, mem(n)), at).unwrap();
        }
    }
    d.heartbeat(ConnectionId(POOL + 1), &heartbeat("10.9.9.9", 9999, 1), t1).unwrap();
    assert_eq!(sent(login(&d, t1, NOW_UNIX)).unwrap().port, 9999);
    // Counted ten times over, the first client closes the 1-point gap to the
    // backends at 2 %; from then on it shares with the twenty or so of them, in the
    // order of the tie offsets this dispatcher drew (its own may come last).
    let ports = login_ports(&d, 20, t1);
    let newcomer = ports.iter().filter(|&&port| port == 9999).count();
    assert!(newcomer <= 5, "{ports:?}");
}

#[test]
fn a_burst_between_heartbeats_takes_equal_turns_over_equal_backends() {
    let d = dispatcher();
    let t0 = Instant::now();
    for n in 1..=10 {
        beat(&d, n, 50, t0);
    }
    let mut counts = std::collections::HashMap::<u16, usize>::new();
    for port in login_ports(&d, 10_000, t0 + Duration::from_millis(500)) {
        *counts.entry(port).or_default() += 1;
    }
    let busiest = *counts.values().max().unwrap();
    let max_over_mean = busiest as f64 / (10_000.0 / 10.0);
    assert_eq!(counts.len(), 10);
    assert!(max_over_mean <= 1.001, "max/mean {max_over_mean}: {counts:?}");
}

#[test]
fn replicas_seeded_apart_take_their_turns_in_different_orders() {
    let t0 = Instant::now();
    let orders: Vec<Vec<u16>> = (1..=4)
        .map(|seed| {
            let d = Dispatcher::with_seed(DispatchSettings::default(), seed);
            for n in 1..=10 {
                beat(&d, n, 40, t0);
            }
            let ports = login_ports(&d, 20, t0);
            assert_eq!(ports[..10], ports[10..], "seed {seed}: strict turns");
            let mut round = ports[..10].to_vec();
            round.sort();
            assert_eq!(round, (1001..=1010).collect::<Vec<_>>(), "seed {seed}");
            ports
        })
        .collect();
    let firsts: std::collections::HashSet<u16> = orders.iter().map(|ports| ports[0]).collect();
    assert!(firsts.len() > 1, "every replica starts with the same backend: {orders:?}");
}

#[test]
fn clock_skew_is_allowed_up_to_the_limit_in_both_directions() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 50, t0);
    assert!(login(&d, t0, NOW_UNIX - 60).picked().is_some());
    assert!(login(&d, t0, NOW_UNIX + 60).picked().is_some());
    assert!(matches!(login(&d, t0, NOW_UNIX - 61), PickOutcome::ClockSkew { skew_secs: 61, .. }));
    assert!(matches!(login(&d, t0, NOW_UNIX + 61), PickOutcome::ClockSkew { .. }));
    assert!(matches!(login(&d, t0, 0), PickOutcome::ClockSkew { .. }));
    assert!(matches!(login(&d, t0, u64::MAX), PickOutcome::ClockSkew { .. }));
    assert_eq!(d.stats().snapshot().logins_clock_skew, 4);
}

#[test]
fn a_pick_never_names_an_expired_backend_even_before_the_sweeper_runs() {
    let d = dispatcher();
    let t0 = Instant::now();
    let ttl = DispatchSettings::default().ttl;
    beat(&d, 1, 10, t0);
    d.heartbeat(ConnectionId(2), &heartbeat("10.0.0.2", 1002, 90), t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(pick(&d, t0 + ttl - Duration::from_nanos(1)).unwrap().id, BackendId(1));
    assert_eq!(pick(&d, t0 + ttl).unwrap().id, BackendId(2));
    assert_eq!(d.stats().snapshot().evicted_expired, 1);
    assert_eq!(pick(&d, t0 + ttl + Duration::from_secs(1)), None);
}

#[test]
fn disconnect_removes_from_both_indexes() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 10, t0);
    beat(&d, 2, 20, t0);
    assert_eq!(d.disconnect(ConnectionId(1)).len(), 1);
    assert!(d.disconnect(ConnectionId(1)).is_empty());
    assert_eq!(pick(&d, t0).unwrap().id, BackendId(2));
    assert_eq!(d.backend_count(), 1);
    assert_eq!(d.stats().snapshot().evicted_disconnected, 1);
}

#[test]
fn an_update_moves_the_backend_in_the_order() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 10, t0);
    beat(&d, 2, 20, t0);
    // Connection 1 names another address: that backend replaces the one it carried.
    let replacing = d.heartbeat(ConnectionId(1), &heartbeat("10.0.0.9", 1009, 30), t0).unwrap();
    assert!(replacing.registered);
    assert_eq!(d.backend_count(), 2);
    assert_eq!(pick(&d, t0).unwrap().id, BackendId(2));
    beat(&d, 2, 40, t0);
    let picked = pick(&d, t0).unwrap();
    assert_eq!((picked.id, picked.ip.text().unwrap(), picked.port), (replacing.id, "10.0.0.9", 1009));
}

#[test]
fn invalid_mem_is_counted_logged_once_and_ranked_last() {
    let d = dispatcher();
    let t0 = Instant::now();
    let first = d.heartbeat(ConnectionId(1), &heartbeat("10.0.0.1", 1001, 182), t0).unwrap();
    assert!(first.registered && first.first_invalid_report);
    let second = d.heartbeat(ConnectionId(1), &heartbeat("10.0.0.1", 1001, 182), t0).unwrap();
    assert!(!second.registered && !second.first_invalid_report);
    beat(&d, 2, 100, t0);
    assert_eq!(pick(&d, t0).unwrap().id, BackendId(2));
    assert_eq!(d.stats().snapshot().invalid_mem_reports, 2);
}

#[test]
fn concurrent_picks_and_removals_stay_consistent() {
    // Backends are removed while other threads pick; no pick may name a backend
    // whose removal had completed before that pick began.
    let d = Arc::new(dispatcher());
    let t0 = Instant::now();
    for i in 0..64u64 {
        d.heartbeat(ConnectionId(i), &heartbeat("10.0.0.1", 1000 + i as u16, (i % 7) as u8), t0).unwrap();
    }
    let removed: Arc<Vec<std::sync::atomic::AtomicBool>> =
        Arc::new((0..64).map(|_| Default::default()).collect());
    std::thread::scope(|scope| {
        for _ in 0..3 {
            let (d, removed) = (Arc::clone(&d), Arc::clone(&removed));
            scope.spawn(move || {
                for _ in 0..20_000 {
                    let before: Vec<bool> = removed.iter().map(|r| r.load(Ordering::SeqCst)).collect();
                    if let Some(picked) = pick(&d, t0) {
                        // Backends are numbered from 1 in the order they registered.
                        let index = picked.id.0 as usize - 1;
                        assert!(!before[index], "picked {} after its removal", picked.id);
                    }
                }
            });
        }
        for i in 0..64u64 {
            d.disconnect(ConnectionId(i));
            removed[i as usize].store(true, Ordering::SeqCst);
        }
    });
    assert_eq!(pick(&d, t0), None);
}

#[test]
fn an_operator_can_drain_and_restore_a_backend() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 10, t0);
    beat(&d, 2, 60, t0);
    d.set_state(BackendId(1), BackendState::Draining).unwrap();
    assert_eq!(pick(&d, t0).unwrap().id, BackendId(2));
    // A heartbeat does not undo the override; the backend stays listed.
    beat(&d, 1, 5, t0);
    assert_eq!(pick(&d, t0).unwrap().id, BackendId(2));
    let states: Vec<_> = d.snapshot().iter().map(|b| (b.id.0, b.state, b.load.reported)).collect();
    assert_eq!(
        states,
        [(1, BackendState::Draining, Load::Percent(5.0)), (2, BackendState::Ready, Load::Percent(60.0))]
    );
    d.set_state(BackendId(1), BackendState::Ready).unwrap();
    assert_eq!(pick(&d, t0).unwrap().id, BackendId(1));
    assert_eq!(d.set_state(BackendId(7), BackendState::Maintenance), Err(UnknownBackend(BackendId(7))));
}

#[test]
fn an_operators_hold_outlives_heartbeats_of_the_same_address_on_other_connections() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 10, t0);
    d.set_state(BackendId(1), BackendState::Draining).unwrap();
    // Any allowed peer reports its address while it is connected: 50 times. Each names
    // the same backend, which stays held.
    for connection in 100..150 {
        let accepted = d.heartbeat(ConnectionId(connection), &heartbeat("10.0.0.1", 1001, 0), t0).unwrap();
        assert_eq!((accepted.id, accepted.registered), (BackendId(1), false));
    }
    assert_eq!(d.backend_count(), 1);
    assert_eq!((0..50).filter(|_| pick(&d, t0).is_some()).count(), 0);
    // Every connection closes: the backend leaves with the last one, and comes back held.
    for connection in [1].into_iter().chain(100..149) {
        assert!(d.disconnect(ConnectionId(connection)).is_empty(), "still carried by another");
    }
    assert_eq!(d.disconnect(ConnectionId(149)).len(), 1);
    let back = d.heartbeat(ConnectionId(200), &heartbeat("10.0.0.1", 1001, 0), t0).unwrap();
    assert!(back.registered);
    assert_eq!(pick(&d, t0), None, "held again under its new id");
    // Released by the operator: the address is ready again.
    d.set_state(back.id, BackendState::Ready).unwrap();
    assert_eq!(pick(&d, t0).unwrap().id, back.id);
}

#[test]
fn the_snapshot_shows_the_picks_accounted_to_each_backend() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 10, t0);
    // The load shown is the real one: the tie-breaking offset stays in the order.
    assert_eq!(d.snapshot()[0].load.effective(), 10.0);
    for _ in 0..3 {
        pick(&d, t0).unwrap();
    }
    let load = &d.snapshot()[0].load;
    assert_eq!((load.picks_total, load.picks_since_report), (3, 3));
    assert!(load.effective() > 10.0);
    beat(&d, 1, 11, t0);
    let load = &d.snapshot()[0].load;
    assert_eq!((load.picks_total, load.picks_since_report, load.effective()), (3, 0, 11.0));
}

#[test]
fn reconfiguring_keeps_backends_and_applies_at_once() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 10, t0);
    beat(&d, 2, 10, t0);
    let new = DispatchSettings {
        policy: Policy::Original,
        ttl: Duration::from_secs(10),
        max_clock_skew: Duration::from_secs(5),
        ..DispatchSettings::default()
    };
    d.reconfigure(&new);
    assert_eq!(d.settings(), new);
    assert_eq!(d.ttl(), Duration::from_secs(10));
    assert_eq!(d.backend_count(), 2);
    // Original herds onto the lowest id; the new TTL and skew apply at once.
    assert_eq!([pick(&d, t0).unwrap().id, pick(&d, t0).unwrap().id], [BackendId(1); 2]);
    assert!(pick(&d, t0 + Duration::from_secs(5)).is_some());
    assert!(matches!(login(&d, t0, NOW_UNIX - 6), PickOutcome::ClockSkew { .. }));
}

#[test]
fn every_login_is_timed() {
    let d = dispatcher();
    let t0 = Instant::now();
    let _ = login(&d, t0, NOW_UNIX);
    beat(&d, 1, 10, t0);
    let _ = login(&d, t0, NOW_UNIX);
    let _ = login(&d, t0, 0);
    assert_eq!(d.stats().pick_latency.count(), 2, "a refused timestamp never reaches a pick");
    assert!(pick(&d, t0).is_some());
    let stats = d.stats().snapshot();
    assert_eq!((stats.logins_answered, stats.logins_no_backend, stats.logins_clock_skew), (2, 1, 1));
    assert_eq!(d.stats().pick_latency.count(), 3);
}

#[test]
fn a_batch_answers_in_order_and_counts_when_it_ends() {
    let d = dispatcher();
    let t0 = Instant::now();
    {
        let mut batch = d.batch(t0);
        // A heartbeat earlier in the batch is seen by the logins after it.
        batch.heartbeat(ConnectionId(1), &heartbeat("10.0.0.1", 1001, 10)).unwrap();
        let picked: Vec<_> =
            (0..16).map(|_| sent(batch.pick(&login_request(NOW_UNIX))).unwrap().port).collect();
        assert_eq!(picked, [1001; 16]);
        assert!(matches!(batch.pick(&login_request(0)), PickOutcome::ClockSkew { .. }));
        assert_eq!(d.stats().pick_latency.count(), 0, "picks are recorded when the batch ends");
    }
    let stats = d.stats().snapshot();
    assert_eq!((stats.heartbeats, stats.logins_answered, stats.logins_clock_skew), (1, 16, 1));
    assert_eq!(d.stats().pick_latency.count(), 16, "one observation per pick");
    assert!(d.stats().pick_latency.sum_seconds() > 0.0);
    assert_eq!(d.snapshot()[0].load.picks_total, 16);
}

#[test]
fn a_batch_holds_the_lock_from_its_first_request_until_it_ends_or_unlocks() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 10, t0);
    let mut batch = d.batch(t0);
    assert!(d.table.try_lock().is_ok(), "nothing is locked before a request needs it");
    assert!(batch.pick(&login_request(NOW_UNIX)).picked().is_some());
    assert!(d.table.try_lock().is_err());
    batch.unlock();
    assert!(d.table.try_lock().is_ok());
    assert!(batch.pick(&login_request(NOW_UNIX)).picked().is_some());
    assert!(d.table.try_lock().is_err(), "the next request locks again");
    drop(batch);
    assert!(d.table.try_lock().is_ok());
}

#[test]
fn a_batch_removes_expired_backends_before_its_first_request() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 10, t0);
    let mut batch = d.batch(t0 + DispatchSettings::default().ttl);
    assert_eq!(batch.pick(&login_request(NOW_UNIX)), PickOutcome::NoBackend);
    drop(batch);
    let stats = d.stats().snapshot();
    assert_eq!((stats.evicted_expired, stats.logins_no_backend), (1, 1));
}

mod services {
    use super::*;
    use crate::ejection::ReportOutcome;
    use crate::model::{Cause, DEFAULT_WEIGHT, Health, Metrics, V2Report};
    use crate::scoring::Scoring;
    use loadwise_protocol::v2::ServiceName;

    fn name(text: &str) -> ServiceName {
        ServiceName::new(text).unwrap()
    }

    fn v2_heartbeat(service: &str, backend_id: u64, memory: u16, cpu: u16) -> V2Report {
        V2Report {
            backend_id,
            service: name(service),
            endpoint: Endpoint::from_socket_addr(format!("10.0.0.{backend_id}:7000").parse().unwrap())
                .unwrap(),
            metrics: Metrics {
                memory: Some(f64::from(memory)),
                cpu: Some(f64::from(cpu)),
                ..Metrics::default()
            },
            weight: DEFAULT_WEIGHT,
            state: BackendState::Ready,
            health: crate::model::Health::Healthy,
            slots: None,
        }
    }

    fn least_loaded() -> Dispatcher {
        Dispatcher::with_seed(
            DispatchSettings { policy: Policy::LeastLoaded, ..DispatchSettings::default() },
            1,
        )
    }

    #[test]
    fn services_are_separate_pools_and_a_service_goes_with_its_last_backend() {
        let d = least_loaded();
        let t0 = Instant::now();
        let conn = |n: u64| ConnectionId(1000 + n);
        d.batch(t0).heartbeat_v2(conn(1), v2_heartbeat("game", 1, 10, 0)).unwrap();
        d.batch(t0).heartbeat_v2(conn(2), v2_heartbeat("chat", 2, 20, 0)).unwrap();
        let game = pick_service(&d, &name("game"), t0).unwrap();
        assert_eq!((game.backend_id, game.endpoint.to_string()), (1, "10.0.0.1:7000".to_owned()));
        assert_eq!(pick_service(&d, &name("chat"), t0).unwrap().backend_id, 2);
        assert_eq!(pick_service(&d, &name("none"), t0), Err(PickOutcome::UnknownService));
        // Neither is in the default service, which legacy logins use.
        assert_eq!(pick(&d, t0), None);
        d.disconnect(conn(2));
        assert_eq!(pick_service(&d, &name("chat"), t0), Err(PickOutcome::UnknownService));
        let names: Vec<_> = d.services().into_iter().map(|s| s.name.as_str().to_owned()).collect();
        assert_eq!(names, ["default", "game"]);
    }

    #[test]
    fn an_unhealthy_backend_stays_listed_and_gets_no_clients_until_healthy() {
        let d = least_loaded();
        let t0 = Instant::now();
        let mut sick = v2_heartbeat("game", 1, 0, 0);
        sick.health = Health::Unhealthy;
        d.batch(t0).heartbeat_v2(ConnectionId(1001), sick.clone()).unwrap();
        d.batch(t0).heartbeat_v2(ConnectionId(1002), v2_heartbeat("game", 2, 90, 0)).unwrap();
        for _ in 0..5 {
            assert_eq!(pick_service(&d, &name("game"), t0).unwrap().backend_id, 2, "not the unhealthy one");
        }
        let listed = d
            .snapshot()
            .into_iter()
            .find(|b| b.backend.v2.as_ref().map(|v2| v2.backend_id) == Some(1))
            .unwrap();
        assert_eq!(listed.hold.standing().cause, Some(Cause::Unhealthy));
        assert_eq!(listed.state, BackendState::Ready, "health is not a state");
        // Alone and unhealthy: the service exists, no backend takes clients.
        d.disconnect(ConnectionId(1002));
        assert_eq!(pick_service(&d, &name("game"), t0), Err(PickOutcome::NoBackend));
        d.batch(t0).heartbeat_v2(ConnectionId(1001), v2_heartbeat("game", 1, 0, 0)).unwrap();
        assert_eq!(pick_service(&d, &name("game"), t0).unwrap().backend_id, 1);
    }

    /// Client 127.0.0.`n`'s pick of `service`, remembered for its report.
    fn client_pick(d: &Dispatcher, service: &ServiceName, n: u8, now: Instant) -> u64 {
        let client = std::net::IpAddr::from([127, 0, 0, n]);
        match d.pick(&PickRequest::http(service).from_client(client), now) {
            PickOutcome::Picked(model::Picked { to: Destination::Chosen { backend, .. }, .. }) => backend,
            other => panic!("{other:?}"),
        }
    }

    fn report(d: &Dispatcher, service: &ServiceName, n: u8, backend: u64, now: Instant) -> FailureOutcome {
        d.report_failure(std::net::IpAddr::from([127, 0, 0, n]), service, backend, now)
    }

    /// Least-loaded, with backends that live an hour without a heartbeat.
    fn long_lived() -> Dispatcher {
        let ttl = Duration::from_secs(3600);
        Dispatcher::with_seed(
            DispatchSettings { policy: Policy::LeastLoaded, ttl, ..DispatchSettings::default() },
            1,
        )
    }

    #[test]
    fn failure_reports_of_three_clients_sent_there_eject_it_until_its_time_ends() {
        let d = long_lived();
        let (t0, game) = (Instant::now(), name("game"));
        d.batch(t0).heartbeat_v2(ConnectionId(1001), v2_heartbeat("game", 1, 0, 0)).unwrap();
        d.batch(t0).heartbeat_v2(ConnectionId(1002), v2_heartbeat("game", 2, 90, 0)).unwrap();
        // A client never sent there ejects nothing, however often it reports.
        for _ in 0..20 {
            let ignored = report(&d, &game, 9, 1, t0);
            assert!(matches!(ignored, FailureOutcome::Applied { outcome: ReportOutcome::NotSentThere, .. }));
        }
        assert_eq!(report(&d, &game, 9, 77, t0), FailureOutcome::UnknownBackend);
        for client in 1..=3 {
            assert_eq!(client_pick(&d, &game, client, t0), 1, "the least loaded");
        }
        for client in 1..=2 {
            report(&d, &game, client, 1, t0);
            assert_eq!(client_pick(&d, &game, 10, t0), 1, "two clients are not enough");
        }
        let FailureOutcome::Applied { outcome, .. } = report(&d, &game, 3, 1, t0) else { panic!() };
        assert_eq!(outcome, ReportOutcome::Ejected { count: 1, duration: Duration::from_secs(30) });
        assert_eq!(d.stats().snapshot().ejections, 1);
        for _ in 0..5 {
            assert_eq!(client_pick(&d, &game, 10, t0), 2, "ejected");
        }
        // A healthy heartbeat does not end the ejection; its end does, on its own.
        let t1 = t0 + Duration::from_secs(29);
        d.batch(t1).heartbeat_v2(ConnectionId(1001), v2_heartbeat("game", 1, 0, 0)).unwrap();
        d.batch(t1).heartbeat_v2(ConnectionId(1002), v2_heartbeat("game", 2, 90, 0)).unwrap();
        assert_eq!(client_pick(&d, &game, 10, t1), 2);
        let ejected = d
            .snapshot()
            .into_iter()
            .find(|b| b.backend.v2.as_ref().map(|v2| v2.backend_id) == Some(1))
            .unwrap();
        assert_eq!(ejected.ejected_until, Some(t0 + Duration::from_secs(30)));
        assert_eq!(ejected.hold.standing().cause, Some(Cause::Ejected));
        assert_eq!(d.next_expiry().map(|at| at <= t0 + Duration::from_secs(30)), Some(true));
        let t2 = t0 + Duration::from_secs(30);
        d.batch(t2).heartbeat_v2(ConnectionId(1002), v2_heartbeat("game", 2, 90, 0)).unwrap();
        assert_eq!(client_pick(&d, &game, 10, t2), 1, "back");
        assert_eq!(d.stats().snapshot().ejection_returns, 1);
    }

    #[test]
    fn the_agents_drain_comes_before_an_ejection_and_the_cap_keeps_half_a_service() {
        let d = long_lived();
        let (t0, game) = (Instant::now(), name("game"));
        for id in 1..=2 {
            d.batch(t0)
                .heartbeat_v2(ConnectionId(1000 + id), v2_heartbeat("game", id, 10 * id as u16, 0))
                .unwrap();
        }
        let eject = |backend: u64, t: Instant| {
            (1..=3)
                .map(|client| {
                    let mut draw = 0;
                    // Each client is sent to `backend` (the least loaded while the other is out).
                    while draw != backend {
                        draw = client_pick(&d, &game, client, t);
                    }
                    report(&d, &game, client, backend, t)
                })
                .last()
                .unwrap()
        };
        assert!(matches!(
            eject(1, t0),
            FailureOutcome::Applied { outcome: ReportOutcome::Ejected { .. }, .. }
        ));
        // Half the service is out: the other one stays, whatever its clients say.
        let capped = eject(2, t0);
        assert!(matches!(capped, FailureOutcome::Applied { outcome: ReportOutcome::CapReached { .. }, .. }));
        assert_eq!(client_pick(&d, &game, 10, t0), 2);
        // Draining while ejected: named after the agent, and still out when the ejection ends.
        let mut draining = v2_heartbeat("game", 1, 10, 0);
        draining.state = BackendState::Draining;
        d.batch(t0).heartbeat_v2(ConnectionId(1001), draining.clone()).unwrap();
        let held = d
            .snapshot()
            .into_iter()
            .find(|b| b.backend.v2.as_ref().map(|v2| v2.backend_id) == Some(1))
            .unwrap();
        assert_eq!(held.hold.standing().cause, Some(Cause::Agent));
        let t1 = t0 + Duration::from_secs(31);
        d.batch(t1).heartbeat_v2(ConnectionId(1001), draining).unwrap();
        d.batch(t1).heartbeat_v2(ConnectionId(1002), v2_heartbeat("game", 2, 20, 0)).unwrap();
        assert_eq!(client_pick(&d, &game, 10, t1), 2);
    }

    #[test]
    fn a_reconnected_backend_keeps_its_entry_while_its_new_connection_is_open() {
        let d = least_loaded();
        let t0 = Instant::now();
        let first = d.batch(t0).heartbeat_v2(ConnectionId(1001), v2_heartbeat("game", 7, 10, 0)).unwrap();
        let second = d.batch(t0).heartbeat_v2(ConnectionId(1002), v2_heartbeat("game", 7, 12, 0)).unwrap();
        assert!(first.registered && !second.registered);
        assert_eq!(first.id, second.id);
        assert!(d.disconnect(ConnectionId(1001)).is_empty(), "the new connection still carries it");
        assert_eq!(d.backend_count(), 1);
        assert_eq!(d.disconnect(ConnectionId(1002)).len(), 1);
        assert_eq!(d.backend_count(), 0);
    }

    #[test]
    fn scoring_is_per_service_and_a_missing_figure_ranks_last() {
        let mut settings = DispatchSettings { policy: Policy::LeastLoaded, ..DispatchSettings::default() };
        settings.service_scoring.insert(name("game"), "max(memory, cpu)".parse::<Scoring>().unwrap());
        let d = Dispatcher::with_seed(settings, 1);
        let t0 = Instant::now();
        // memory 10 / cpu 90 against memory 50 / cpu 20, in both services.
        for (service, offset) in [("game", 0), ("chat", 10)] {
            d.batch(t0).heartbeat_v2(ConnectionId(100 + offset), v2_heartbeat(service, 1, 10, 90)).unwrap();
            d.batch(t0).heartbeat_v2(ConnectionId(101 + offset), v2_heartbeat(service, 2, 50, 20)).unwrap();
        }
        assert_eq!(pick_service(&d, &name("game"), t0).unwrap().backend_id, 2, "max(memory, cpu) = 50 < 90");
        assert_eq!(pick_service(&d, &name("chat"), t0).unwrap().backend_id, 1, "memory alone: 10 < 50");
        let mut no_cpu = v2_heartbeat("game", 3, 0, 0);
        no_cpu.metrics.cpu = None;
        let accepted = d.batch(t0).heartbeat_v2(ConnectionId(200), no_cpu).unwrap();
        assert_eq!(accepted.score, None);
        assert_ne!(pick_service(&d, &name("game"), t0).unwrap().backend_id, 3, "unscored ranks last");
    }

    #[test]
    fn v2_scores_rank_unrounded_and_an_unscored_backend_after_every_scored_one() {
        for policy in [Policy::LeastLoaded, Policy::Original] {
            let d = Dispatcher::with_seed(DispatchSettings { policy, ..DispatchSettings::default() }, 1);
            let t0 = Instant::now();
            // Registered in this order so that a tie would go to the lower id, 2.
            for (backend_id, memory) in [(1, None), (2, Some(42.5)), (3, Some(42.25))] {
                let mut heartbeat = v2_heartbeat("game", backend_id, 0, 0);
                heartbeat.metrics.memory = memory;
                d.batch(t0).heartbeat_v2(ConnectionId(100 + backend_id), heartbeat).unwrap();
            }
            let picked: Vec<_> =
                (0..20).map(|_| pick_service(&d, &name("game"), t0).unwrap().backend_id).collect();
            assert_eq!(picked[0], 3, "{policy}: 42.25 % before 42.5 %");
            assert!(!picked.contains(&1), "{policy}: unscored after every scored backend: {picked:?}");
        }
    }

    #[test]
    fn the_default_service_takes_only_addresses_a_legacy_reply_can_hold() {
        let d = least_loaded();
        let t0 = Instant::now();
        let mut long = v2_heartbeat("default", 1, 10, 0);
        long.endpoint = Endpoint::from_socket_addr("[2001:db8::1234:5678]:80".parse().unwrap()).unwrap();
        let refused = d.batch(t0).heartbeat_v2(ConnectionId(100), long.clone()).unwrap_err();
        assert!(matches!(refused, V2HeartbeatRefused::LegacyAddress { .. }), "{refused:?}");
        long.service = name("game");
        d.batch(t0).heartbeat_v2(ConnectionId(100), long).unwrap();
        // A v2 backend of the default service is served to legacy logins too.
        d.batch(t0).heartbeat_v2(ConnectionId(101), v2_heartbeat("default", 9, 10, 0)).unwrap();
        let picked = pick(&d, t0).unwrap();
        assert_eq!((picked.ip.text().unwrap(), picked.port), ("10.0.0.9", 7000));
    }

    #[test]
    fn a_reported_drain_and_an_operator_hold_each_keep_a_backend_out() {
        let d = least_loaded();
        let t0 = Instant::now();
        let id = d.batch(t0).heartbeat_v2(ConnectionId(100), v2_heartbeat("game", 1, 10, 0)).unwrap().id;
        let mut draining = v2_heartbeat("game", 1, 10, 0);
        draining.state = BackendState::Draining;
        d.batch(t0).heartbeat_v2(ConnectionId(100), draining).unwrap();
        assert_eq!(pick_service(&d, &name("game"), t0), Err(PickOutcome::NoBackend));
        d.set_state(id, BackendState::Maintenance).unwrap();
        d.batch(t0).heartbeat_v2(ConnectionId(100), v2_heartbeat("game", 1, 10, 0)).unwrap();
        assert_eq!(pick_service(&d, &name("game"), t0), Err(PickOutcome::NoBackend), "held by the operator");
        d.set_state(id, BackendState::Ready).unwrap();
        assert_eq!(pick_service(&d, &name("game"), t0).unwrap().id, id);
    }

    #[test]
    fn a_connection_with_both_kinds_of_backend_removes_both_when_it_closes() {
        let d = least_loaded();
        let t0 = Instant::now();
        let conn = ConnectionId(100);
        d.batch(t0).heartbeat_v2(conn, v2_heartbeat("game", 1, 10, 0)).unwrap();
        d.heartbeat(conn, &heartbeat("10.0.0.5", 7005, 10), t0).unwrap();
        assert_eq!(d.backend_count(), 2);
        d.disconnect(conn);
        assert_eq!(d.backend_count(), 0);
        assert_eq!(d.stats().snapshot().evicted_disconnected, 2);
    }

    #[test]
    fn picks_are_counted_per_service_other_than_the_default() {
        let d = dispatcher();
        let t0 = Instant::now();
        d.batch(t0).heartbeat_v2(ConnectionId(1), v2_heartbeat("game", 1, 10, 0)).unwrap();
        let (game, ghost) = (name("game"), name("ghost"));
        for _ in 0..3 {
            assert!(d.batch(t0).pick(&PickRequest::http(&game)).picked().is_some());
        }
        assert!(d.batch(t0).pick(&PickRequest::http(&ghost)).picked().is_none());
        let default = d.default_service().clone();
        assert!(d.batch(t0).pick(&PickRequest::http(&default)).picked().is_none());
        let counted = d.service_picks();
        assert_eq!(
            counted,
            [(game, ServicePicks { answered: 3, no_backend: 0 })],
            "no series for unknown services"
        );
        assert_eq!(d.stats().snapshot().logins_answered, 3);
        assert_eq!(d.stats().snapshot().logins_no_backend, 2);
    }
}

mod departed_holds {
    use super::*;

    use crate::model::{DEFAULT_WEIGHT, Metrics, V2Report};
    use loadwise_protocol::v2::ServiceName;

    fn held(d: &Dispatcher) -> Vec<(BackendId, BackendState)> {
        d.snapshot().into_iter().map(|snapshot| (snapshot.id, snapshot.held)).collect()
    }

    #[test]
    fn a_legacy_backend_drained_by_an_operator_stays_drained_when_it_reconnects() {
        let d = dispatcher();
        let t0 = Instant::now();
        beat(&d, 1, 10, t0);
        beat(&d, 2, 20, t0);
        d.set_state(BackendId(1), BackendState::Draining).unwrap();
        d.disconnect(ConnectionId(1));
        // The same backend (same address bytes and port) on a new connection.
        let back = d.heartbeat(ConnectionId(7), &heartbeat("10.0.0.1", 1001, 10), t0).unwrap();
        assert_eq!(held(&d), [(BackendId(2), BackendState::Ready), (back.id, BackendState::Draining)]);
        assert_eq!(pick(&d, t0).unwrap().id, BackendId(2), "still held out of the picks");
        // Another port is another backend.
        let other = d.heartbeat(ConnectionId(8), &heartbeat("10.0.0.1", 1009, 10), t0).unwrap();
        assert_eq!(held(&d)[2], (other.id, BackendState::Ready));
    }

    #[test]
    fn a_hold_survives_the_ttl_but_not_its_memory_and_an_undrained_backend_comes_back_ready() {
        let d = dispatcher();
        let t0 = Instant::now();
        let ttl = DispatchSettings::default().ttl;
        beat(&d, 1, 10, t0);
        beat(&d, 2, 10, t0);
        d.set_state(BackendId(1), BackendState::Maintenance).unwrap();
        d.set_state(BackendId(2), BackendState::Draining).unwrap();
        d.set_state(BackendId(2), BackendState::Ready).unwrap();
        assert_eq!(d.expire(t0 + ttl).len(), 2);
        let t1 = t0 + ttl + Duration::from_secs(1);
        beat(&d, 3, 10, t1);
        d.heartbeat(ConnectionId(4), &heartbeat("10.0.0.1", 1001, 10), t1).unwrap();
        d.heartbeat(ConnectionId(5), &heartbeat("10.0.0.2", 1002, 10), t1).unwrap();
        let states: Vec<_> = held(&d).into_iter().map(|(_, state)| state).collect();
        assert_eq!(states, [BackendState::Ready, BackendState::Maintenance, BackendState::Ready]);
        d.disconnect(ConnectionId(4));
        let late = t1 + HOLD_MEMORY;
        d.heartbeat(ConnectionId(6), &heartbeat("10.0.0.1", 1001, 10), late).unwrap();
        assert_eq!(d.snapshot().last().unwrap().held, BackendState::Ready, "forgotten after {HOLD_MEMORY:?}");
    }

    #[test]
    fn a_v2_backend_held_by_an_operator_is_held_again_when_it_reconnects() {
        let d = Dispatcher::new(DispatchSettings::default());
        let t0 = Instant::now();
        let beat = |connection: u64| {
            let heartbeat = V2Report {
                backend_id: 42,
                service: ServiceName::new("game").unwrap(),
                endpoint: Endpoint::from_socket_addr("10.0.0.1:7000".parse().unwrap()).unwrap(),
                metrics: Metrics { memory: Some(10.0), ..Metrics::default() },
                weight: DEFAULT_WEIGHT,
                state: BackendState::Ready,
                health: crate::model::Health::Healthy,
                slots: None,
            };
            d.batch(t0).heartbeat_v2(ConnectionId(connection), heartbeat).unwrap().id
        };
        let id = beat(100);
        d.set_state(id, BackendState::Draining).unwrap();
        d.disconnect(ConnectionId(100));
        assert_eq!(d.backend_count(), 0);
        let again = beat(101);
        assert_ne!(again, id, "a new registration");
        assert_eq!(held(&d), [(again, BackendState::Draining)]);
    }
}

mod identity {
    use super::*;

    #[test]
    fn a_legacy_backend_is_named_by_its_address_not_by_the_connection_that_carries_it() {
        let d = dispatcher();
        let t0 = Instant::now();
        let first = d.heartbeat(ConnectionId(1), &heartbeat("10.0.0.1", 1001, 10), t0).unwrap();
        let again = d.heartbeat(ConnectionId(2), &heartbeat("10.0.0.1", 1001, 30), t0).unwrap();
        assert_eq!(
            (first.id, first.registered, again.id, again.registered),
            (BackendId(1), true, BackendId(1), false)
        );
        assert_eq!(d.backend_count(), 1);
        assert_eq!(
            d.snapshot()[0].load.reported,
            Load::Percent(30.0),
            "the latest report, whichever connection"
        );
        assert!(d.disconnect(ConnectionId(1)).is_empty(), "connection 2 still carries it");
        assert_eq!(pick(&d, t0).unwrap().id, BackendId(1));
        let gone = d.disconnect(ConnectionId(2));
        assert_eq!(gone.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [BackendId(1)]);
        assert_eq!(d.stats().snapshot().evicted_disconnected, 1);
    }

    #[test]
    fn a_full_table_still_takes_the_address_that_replaces_a_connections_backend() {
        let settings = DispatchSettings { max_backends: 1, ..DispatchSettings::default() };
        let d = Dispatcher::with_seed(settings, 1);
        let t0 = Instant::now();
        d.heartbeat(ConnectionId(1), &heartbeat("10.0.0.1", 1001, 10), t0).unwrap();
        let refused = d.heartbeat(ConnectionId(2), &heartbeat("10.0.0.2", 1002, 10), t0);
        assert!(matches!(refused, Err(HeartbeatRefused::Full(_))));
        assert!(d.disconnect(ConnectionId(2)).is_empty(), "the refused heartbeat left nothing behind");
        let moved = d.heartbeat(ConnectionId(1), &heartbeat("10.0.0.3", 1003, 10), t0).unwrap();
        assert!(moved.registered);
        let picked = pick(&d, t0).unwrap();
        assert_eq!((picked.id, picked.port), (moved.id, 1003));
    }

    #[test]
    fn a_backend_expired_while_its_connection_stays_open_registers_anew_on_it() {
        let d = dispatcher();
        let t0 = Instant::now();
        let first = d.heartbeat(ConnectionId(1), &heartbeat("10.0.0.1", 1001, 10), t0).unwrap();
        let later = t0 + d.ttl() + Duration::from_secs(1);
        assert_eq!(d.expire(later).len(), 1);
        let back = d.heartbeat(ConnectionId(1), &heartbeat("10.0.0.1", 1001, 10), later).unwrap();
        assert!(back.registered && back.id != first.id);
        assert_eq!(d.disconnect(ConnectionId(1)).len(), 1);
        assert_eq!(d.backend_count(), 0);
    }
}
