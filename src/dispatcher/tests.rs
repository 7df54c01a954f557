use std::sync::Arc;

use super::*;
use crate::protocol::IpField;

const NOW_UNIX: u64 = 1_700_000_000;

fn heartbeat(ip: &str, port: u16, mem: u8) -> Heartbeat {
    Heartbeat { mem, ip: IpField::from_text(ip).unwrap(), port }
}

/// Backend `n` reports `mem` at `at`, from 10.0.0.n, port 1000 + n.
fn beat(d: &Dispatcher, n: u64, mem: u8, at: Instant) {
    let ip = format!("10.0.0.{n}");
    d.heartbeat(BackendId(n), &heartbeat(&ip, 1000 + n as u16, mem), at).unwrap();
}

fn dispatcher() -> Dispatcher {
    Dispatcher::new(DispatchSettings::default())
}

fn login(d: &Dispatcher, now: Instant, timestamp: u64) -> Result<Picked, LoginRefused> {
    d.login(LoginRequest { timestamp }, now, NOW_UNIX)
}

#[test]
fn no_backend_gets_the_error_reply() {
    let d = dispatcher();
    let outcome = login(&d, Instant::now(), NOW_UNIX);
    assert_eq!(outcome, Err(LoginRefused::NoBackend));
    assert_eq!(Dispatcher::reply(&outcome), LoginReply::Error);
    assert_eq!(d.stats().snapshot().logins_no_backend, 1);
}

#[test]
fn picks_the_least_loaded_and_replies_with_its_bytes() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 50, t0);
    beat(&d, 2, 20, t0);
    let outcome = login(&d, t0, NOW_UNIX);
    let expected = LoginReply::Backend { ip: IpField::from_text("10.0.0.2").unwrap(), port: 1002 };
    assert_eq!(Dispatcher::reply(&outcome), expected);
}

#[test]
fn clock_skew_is_allowed_up_to_the_limit_in_both_directions() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 50, t0);
    assert!(login(&d, t0, NOW_UNIX - 60).is_ok());
    assert!(login(&d, t0, NOW_UNIX + 60).is_ok());
    assert!(matches!(login(&d, t0, NOW_UNIX - 61), Err(LoginRefused::ClockSkew { skew_secs: 61, .. })));
    assert!(matches!(login(&d, t0, NOW_UNIX + 61), Err(LoginRefused::ClockSkew { .. })));
    assert!(matches!(login(&d, t0, 0), Err(LoginRefused::ClockSkew { .. })));
    assert!(matches!(login(&d, t0, u64::MAX), Err(LoginRefused::ClockSkew { .. })));
    assert_eq!(d.stats().snapshot().logins_clock_skew, 4);
}

#[test]
fn a_pick_never_names_an_expired_backend_even_before_the_sweeper_runs() {
    let d = dispatcher();
    let t0 = Instant::now();
    let ttl = DispatchSettings::default().ttl;
    beat(&d, 1, 10, t0);
    d.heartbeat(BackendId(2), &heartbeat("10.0.0.2", 1002, 90), t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(d.pick(t0 + ttl - Duration::from_nanos(1)).unwrap().id, BackendId(1));
    assert_eq!(d.pick(t0 + ttl).unwrap().id, BackendId(2));
    assert_eq!(d.stats().snapshot().evicted_expired, 1);
    assert_eq!(d.pick(t0 + ttl + Duration::from_secs(1)), None);
}

#[test]
fn disconnect_removes_from_both_indexes() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 10, t0);
    beat(&d, 2, 20, t0);
    assert!(d.disconnect(BackendId(1)).is_some());
    assert!(d.disconnect(BackendId(1)).is_none());
    assert_eq!(d.pick(t0).unwrap().id, BackendId(2));
    assert_eq!(d.backend_count(), 1);
    assert_eq!(d.stats().snapshot().evicted_disconnected, 1);
}

#[test]
fn an_update_moves_the_backend_in_the_order() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 10, t0);
    beat(&d, 2, 20, t0);
    d.heartbeat(BackendId(1), &heartbeat("10.0.0.9", 1009, 30), t0).unwrap();
    assert_eq!(d.pick(t0).unwrap().id, BackendId(2));
    beat(&d, 2, 40, t0);
    let picked = d.pick(t0).unwrap();
    assert_eq!((picked.id, picked.ip.text().unwrap(), picked.port), (BackendId(1), "10.0.0.9", 1009));
}

#[test]
fn invalid_mem_is_counted_logged_once_and_ranked_last() {
    let d = dispatcher();
    let t0 = Instant::now();
    let first = d.heartbeat(BackendId(1), &heartbeat("10.0.0.1", 1001, 182), t0).unwrap();
    assert!(first.registered && first.first_invalid_report);
    let second = d.heartbeat(BackendId(1), &heartbeat("10.0.0.1", 1001, 182), t0).unwrap();
    assert!(!second.registered && !second.first_invalid_report);
    beat(&d, 2, 100, t0);
    assert_eq!(d.pick(t0).unwrap().id, BackendId(2));
    assert_eq!(d.stats().snapshot().invalid_mem_reports, 2);
}

#[test]
fn unusable_addresses_are_refused_and_register_nothing() {
    let d = dispatcher();
    let t0 = Instant::now();
    let empty = Heartbeat { mem: 1, ip: IpField::from_bytes([0; 16]), port: 1 };
    let unterminated = Heartbeat { mem: 1, ip: IpField::from_bytes([b'1'; 16]), port: 1 };
    let zero_port = heartbeat("10.0.0.1", 0, 1);
    assert_eq!(d.heartbeat(BackendId(1), &empty, t0), Err(HeartbeatRefused::Address(AddressError::Empty)));
    assert_eq!(d.heartbeat(BackendId(1), &unterminated, t0), Err(AddressError::Unterminated.into()));
    assert_eq!(d.heartbeat(BackendId(1), &zero_port, t0), Err(AddressError::ZeroPort.into()));
    assert_eq!(d.backend_count(), 0);
    assert_eq!(d.stats().snapshot().refused_heartbeats, 3);
}

#[test]
fn concurrent_picks_and_removals_stay_consistent() {
    // Backends are removed while other threads pick; no pick may name a backend
    // whose removal had completed before that pick began.
    let d = Arc::new(dispatcher());
    let t0 = Instant::now();
    for i in 0..64u64 {
        d.heartbeat(BackendId(i), &heartbeat("10.0.0.1", 1000 + i as u16, (i % 7) as u8), t0).unwrap();
    }
    let removed: Arc<Vec<std::sync::atomic::AtomicBool>> =
        Arc::new((0..64).map(|_| Default::default()).collect());
    std::thread::scope(|scope| {
        for _ in 0..3 {
            let (d, removed) = (Arc::clone(&d), Arc::clone(&removed));
            scope.spawn(move || {
                for _ in 0..20_000 {
                    let before: Vec<bool> = removed.iter().map(|r| r.load(Ordering::SeqCst)).collect();
                    if let Some(picked) = d.pick(t0) {
                        assert!(!before[picked.id.0 as usize], "picked {} after its removal", picked.id);
                    }
                }
            });
        }
        for i in 0..64u64 {
            d.disconnect(BackendId(i));
            removed[i as usize].store(true, Ordering::SeqCst);
        }
    });
    assert_eq!(d.pick(t0), None);
}

#[test]
fn an_operator_can_drain_and_restore_a_backend() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 10, t0);
    beat(&d, 2, 60, t0);
    d.set_state(BackendId(1), BackendState::Draining).unwrap();
    assert_eq!(d.pick(t0).unwrap().id, BackendId(2));
    // A heartbeat does not undo the override; the backend stays listed.
    beat(&d, 1, 5, t0);
    assert_eq!(d.pick(t0).unwrap().id, BackendId(2));
    let states: Vec<_> = d.snapshot().iter().map(|b| (b.id.0, b.state, b.load.reported)).collect();
    assert_eq!(states, [(1, BackendState::Draining, 5), (2, BackendState::Ready, 60)]);
    d.set_state(BackendId(1), BackendState::Ready).unwrap();
    assert_eq!(d.pick(t0).unwrap().id, BackendId(1));
    assert_eq!(d.set_state(BackendId(7), BackendState::Maintenance), Err(UnknownBackend(BackendId(7))));
}

#[test]
fn the_snapshot_shows_the_picks_accounted_to_each_backend() {
    let d = dispatcher();
    let t0 = Instant::now();
    beat(&d, 1, 10, t0);
    for _ in 0..3 {
        d.pick(t0).unwrap();
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
    assert_eq!([d.pick(t0).unwrap().id, d.pick(t0).unwrap().id], [BackendId(1); 2]);
    assert!(d.pick(t0 + Duration::from_secs(5)).is_some());
    assert!(matches!(login(&d, t0, NOW_UNIX - 6), Err(LoginRefused::ClockSkew { .. })));
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
    assert!(d.pick_for_client(t0).is_ok());
    let stats = d.stats().snapshot();
    assert_eq!((stats.logins_answered, stats.logins_no_backend, stats.logins_clock_skew), (2, 1, 1));
    assert_eq!(d.stats().pick_latency.count(), 3);
}

#[test]
fn a_batch_answers_in_order_and_counts_when_it_ends() {
    let d = dispatcher();
    let t0 = Instant::now();
    let request = |timestamp| LoginRequest { timestamp };
    {
        let mut batch = d.batch(t0);
        // A heartbeat earlier in the batch is seen by the logins after it.
        batch.heartbeat(BackendId(1), &heartbeat("10.0.0.1", 1001, 10)).unwrap();
        let picked: Vec<_> =
            (0..16).map(|_| batch.login(request(NOW_UNIX), NOW_UNIX).unwrap().port).collect();
        assert_eq!(picked, [1001; 16]);
        assert!(matches!(batch.login(request(0), NOW_UNIX), Err(LoginRefused::ClockSkew { .. })));
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
    batch.pick().unwrap();
    assert!(d.table.try_lock().is_err());
    batch.unlock();
    assert!(d.table.try_lock().is_ok());
    batch.pick().unwrap();
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
    assert_eq!(batch.pick_for_client(), Err(LoginRefused::NoBackend));
    drop(batch);
    let stats = d.stats().snapshot();
    assert_eq!((stats.evicted_expired, stats.logins_no_backend), (1, 1));
}
