use super::*;
use crate::model::{LegacyName, Load};
use loadwise_protocol::IpField;

const TTL: Duration = Duration::from_secs(3);

fn report(mem: u8) -> Report {
    let legacy = LegacyName { bytes: *IpField::from_text("10.0.0.2").unwrap().as_bytes(), port: 1002 };
    Report { legacy, load: Load::from_percent(f64::from(mem)) }
}

fn registry() -> Registry {
    Registry::new(TTL, 100)
}

#[test]
fn first_heartbeat_registers_and_later_ones_update() {
    let t0 = Instant::now();
    let mut reg = registry();
    let change = reg.heartbeat(BackendId(1), report(20), t0).unwrap();
    assert_eq!(change, Change { previous: None, first_invalid_report: false });
    let change = reg.heartbeat(BackendId(1), report(30), t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(change.previous, Some(report(20)));
    let backend = reg.get(BackendId(1)).unwrap();
    assert_eq!(backend.report, report(30));
    assert_eq!(backend.registered_at, t0);
    assert_eq!(backend.last_heartbeat, t0 + Duration::from_secs(1));
    assert_eq!(backend.heartbeats, 2);
    assert_eq!(reg.len(), 1);
}

#[test]
fn expiry_is_exact_at_the_boundary() {
    let t0 = Instant::now();
    let mut reg = registry();
    reg.heartbeat(BackendId(1), report(20), t0).unwrap();
    let just_before = t0 + TTL - Duration::from_nanos(1);
    assert!(reg.expire(just_before).is_empty());
    assert_eq!(reg.len(), 1);
    let expired = reg.expire(t0 + TTL);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].0, BackendId(1));
    assert!(reg.is_empty());
    assert_eq!(reg.next_expiry(), None);
}

#[test]
fn a_heartbeat_restarts_the_ttl() {
    let t0 = Instant::now();
    let mut reg = registry();
    reg.heartbeat(BackendId(1), report(20), t0).unwrap();
    reg.heartbeat(BackendId(1), report(20), t0 + Duration::from_secs(2)).unwrap();
    assert!(reg.expire(t0 + TTL).is_empty());
    assert_eq!(reg.next_expiry(), Some(t0 + Duration::from_secs(2) + TTL));
    assert_eq!(reg.expire(t0 + Duration::from_secs(2) + TTL).len(), 1);
}

#[test]
fn expire_removes_only_the_silent_ones_oldest_first() {
    let t0 = Instant::now();
    let mut reg = registry();
    for i in 0..5u64 {
        reg.heartbeat(BackendId(i), report(10), t0 + Duration::from_secs(i)).unwrap();
    }
    let expired: Vec<_> = reg.expire(t0 + Duration::from_secs(5)).into_iter().map(|(id, _)| id).collect();
    assert_eq!(expired, [BackendId(0), BackendId(1), BackendId(2)]);
    assert_eq!(reg.len(), 2);
    assert_eq!(reg.next_expiry(), Some(t0 + Duration::from_secs(3) + TTL));
}

#[test]
fn remove_forgets_the_backend_and_its_deadline() {
    let t0 = Instant::now();
    let mut reg = registry();
    reg.heartbeat(BackendId(1), report(20), t0).unwrap();
    assert!(reg.remove(BackendId(1)).is_some());
    assert!(reg.remove(BackendId(1)).is_none());
    assert_eq!(reg.next_expiry(), None);
    assert!(reg.expire(t0 + TTL * 10).is_empty());
}

#[test]
fn invalid_reports_are_counted_and_flagged_once() {
    let t0 = Instant::now();
    let mut reg = registry();
    assert!(!reg.heartbeat(BackendId(1), report(20), t0).unwrap().first_invalid_report);
    assert!(reg.heartbeat(BackendId(1), report(182), t0).unwrap().first_invalid_report);
    assert!(!reg.heartbeat(BackendId(1), report(101), t0).unwrap().first_invalid_report);
    assert!(!reg.heartbeat(BackendId(1), report(100), t0).unwrap().first_invalid_report);
    assert_eq!(reg.get(BackendId(1)).unwrap().invalid_reports, 2);
    // A backend whose very first report is invalid is flagged on registration.
    assert!(reg.heartbeat(BackendId(2), report(255), t0).unwrap().first_invalid_report);
}

#[test]
fn the_table_is_capped_but_known_backends_still_update() {
    let t0 = Instant::now();
    let mut reg = Registry::new(TTL, 2);
    reg.heartbeat(BackendId(1), report(1), t0).unwrap();
    reg.heartbeat(BackendId(2), report(2), t0).unwrap();
    assert_eq!(reg.heartbeat(BackendId(3), report(3), t0), Err(RegistryFull { max: 2 }));
    assert!(reg.heartbeat(BackendId(1), report(5), t0).is_ok());
    reg.remove(BackendId(2));
    assert!(reg.heartbeat(BackendId(3), report(3), t0).is_ok());
}

#[test]
fn reports_are_copies() {
    // The original kept pointers into connection buffers; here a report is a value
    // that later heartbeats of other backends cannot change.
    let t0 = Instant::now();
    let mut reg = registry();
    let mut field = report(0).legacy.bytes;
    reg.heartbeat(
        BackendId(1),
        Report { legacy: LegacyName { bytes: field, port: 1 }, load: Load::Percent(1.0) },
        t0,
    )
    .unwrap();
    field[0] = b'9';
    reg.heartbeat(
        BackendId(2),
        Report { legacy: LegacyName { bytes: field, port: 2 }, load: Load::Percent(2.0) },
        t0,
    )
    .unwrap();
    assert_eq!(reg.get(BackendId(1)).unwrap().report.legacy.text(), Some("10.0.0.2"));
}

#[test]
fn the_id_hasher_spreads_sequential_ids() {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let build = BuildHasherDefault::<IdHasher>::default();
    let hashes: std::collections::HashSet<u64> = (0..10_000).map(|n| build.hash_one(BackendId(n))).collect();
    assert_eq!(hashes.len(), 10_000);
    // The table takes its probe tags from the top 7 bits: sequential ids must not
    // all share them.
    let tags: std::collections::HashSet<u64> = hashes.iter().map(|hash| hash >> 57).collect();
    assert_eq!(tags.len(), 128);
}

#[test]
fn a_heartbeat_at_a_later_instant_leaves_the_expiry_queue_alone() {
    let t0 = Instant::now();
    let mut reg = registry();
    reg.heartbeat(BackendId(1), report(20), t0).unwrap();
    for second in 1..10 {
        reg.heartbeat(BackendId(1), report(20), t0 + Duration::from_millis(second * 200)).unwrap();
    }
    assert_eq!(reg.queue.len(), 1);
    // Come due, the entry is queued again at the last heartbeat rather than expired.
    assert!(reg.expire(t0 + TTL).is_empty());
    assert_eq!(reg.queue.len(), 1);
    assert_eq!(reg.next_expiry(), Some(t0 + Duration::from_millis(1800) + TTL));
}

#[test]
fn an_earlier_instant_than_the_last_heartbeat_is_what_counts() {
    // Reads are applied in any order: the latest applied heartbeat sets the TTL,
    // even when its instant is earlier than the one before.
    let t0 = Instant::now();
    let mut reg = registry();
    reg.heartbeat(BackendId(1), report(20), t0 + Duration::from_secs(1)).unwrap();
    reg.heartbeat(BackendId(1), report(20), t0).unwrap();
    assert_eq!(reg.next_expiry(), Some(t0 + TTL));
    assert_eq!(reg.expire(t0 + TTL).len(), 1);
}

#[test]
fn stale_queue_entries_are_bounded_under_churn() {
    let t0 = Instant::now();
    let mut reg = Registry::new(TTL, 1000);
    for id in 0..10 {
        reg.heartbeat(BackendId(id), report(1), t0).unwrap();
    }
    for id in 10..5000 {
        reg.heartbeat(BackendId(id), report(1), t0).unwrap();
        reg.remove(BackendId(id));
        assert!(reg.queue.len() <= 2 * reg.len() + QUEUE_SLACK, "{} entries", reg.queue.len());
    }
    assert_eq!(reg.next_expiry(), Some(t0 + TTL));
    assert_eq!(reg.expire(t0 + TTL).len(), 10);
    assert!(reg.queue.is_empty());
}

#[test]
fn the_expiry_bound_is_never_late_and_reaches_the_exact_instant_in_steps() {
    let t0 = Instant::now();
    let mut reg = Registry::new(TTL, 1000);
    for id in 0..100 {
        reg.heartbeat(BackendId(id), report(1), t0 + Duration::from_millis(id)).unwrap();
    }
    for id in 0..100 {
        reg.heartbeat(BackendId(id), report(1), t0 + Duration::from_millis(1000 + id)).unwrap();
    }
    let exact = t0 + Duration::from_millis(1000) + TTL;
    let mut steps = 0;
    loop {
        let bound = reg.expiry_bound(16).unwrap();
        assert!(bound <= exact);
        steps += 1;
        if bound == exact {
            break;
        }
    }
    assert_eq!(steps, 100 / 16 + 1);
    assert_eq!(reg.next_expiry(), Some(exact));
}

proptest::proptest! {
    /// Whatever the order of heartbeats (their instants need not rise: connections
    /// apply their reads in any order), removals and expiries, the registry expires
    /// exactly the backends silent for a TTL and knows when the next one expires.
    #[test]
    fn expiry_follows_the_last_heartbeats(ops in proptest::collection::vec((0..3u8, 0..8u64, 0..12u64), 1..100)) {
        let t0 = Instant::now();
        let mut reg = registry();
        let mut last_heard: std::collections::HashMap<u64, Instant> = Default::default();
        for (kind, id, half_secs) in ops {
            let at = t0 + Duration::from_millis(half_secs * 500);
            match kind {
                0 => {
                    reg.heartbeat(BackendId(id), report(1), at).unwrap();
                    last_heard.insert(id, at);
                }
                1 => proptest::prop_assert_eq!(reg.remove(BackendId(id)).is_some(), last_heard.remove(&id).is_some()),
                _ => {
                    let mut expired: Vec<u64> = reg.expire(at).into_iter().map(|(id, _)| id.0).collect();
                    let mut silent: Vec<u64> =
                        last_heard.iter().filter(|(_, last)| reg.is_expired(**last, at)).map(|(id, _)| *id).collect();
                    last_heard.retain(|id, _| !silent.contains(id));
                    expired.sort_unstable();
                    silent.sort_unstable();
                    proptest::prop_assert_eq!(expired, silent);
                }
            }
            proptest::prop_assert_eq!(reg.next_expiry(), last_heard.values().min().map(|last| *last + TTL));
            proptest::prop_assert_eq!(reg.len(), last_heard.len());
        }
    }
}
