use super::*;

fn ip(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

const B: BackendId = BackendId(7);
const ALONE: ServiceShare = ServiceShare { ejected: 0, backends: 2 };

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Clients 1..=n sent to `B` at `t0`.
fn sent(ejections: &mut Ejections, n: u8, t0: Instant) {
    for client in 1..=n {
        ejections.record_pick(ip(client), B, t0, EjectionSettings::default().window);
    }
}

#[test]
fn three_distinct_clients_within_the_window_eject() {
    let settings = EjectionSettings::default();
    let (mut e, t0) = (Ejections::default(), Instant::now());
    sent(&mut e, 3, t0);
    assert_eq!(e.report(ip(1), B, ALONE, &settings, t0), ReportOutcome::Counted { clients: 1 });
    // The same client again is still one client.
    assert_eq!(e.report(ip(1), B, ALONE, &settings, t0 + secs(1)), ReportOutcome::Counted { clients: 1 });
    assert_eq!(e.report(ip(2), B, ALONE, &settings, t0 + secs(2)), ReportOutcome::Counted { clients: 2 });
    let third = e.report(ip(3), B, ALONE, &settings, t0 + secs(3));
    assert_eq!(third, ReportOutcome::Ejected { count: 1, duration: secs(30) });
    assert_eq!(e.ejected_until(B), Some(t0 + secs(33)));
    assert_eq!(e.report(ip(3), B, ALONE, &settings, t0 + secs(4)), ReportOutcome::AlreadyEjected);
}

#[test]
fn reports_further_apart_than_the_window_do_not_add_up() {
    let settings = EjectionSettings::default();
    let (mut e, t0) = (Ejections::default(), Instant::now());
    sent(&mut e, 2, t0);
    e.report(ip(1), B, ALONE, &settings, t0);
    e.record_pick(ip(3), B, t0 + secs(11), settings.window);
    e.record_pick(ip(2), B, t0 + secs(11), settings.window);
    // Client 1's report is 11 s old: two clients within the window, not three.
    assert_eq!(e.report(ip(2), B, ALONE, &settings, t0 + secs(11)), ReportOutcome::Counted { clients: 1 });
    assert_eq!(e.report(ip(3), B, ALONE, &settings, t0 + secs(12)), ReportOutcome::Counted { clients: 2 });
}

#[test]
fn a_client_never_sent_there_or_sent_too_long_ago_ejects_nothing() {
    let settings = EjectionSettings::default();
    let (mut e, t0) = (Ejections::default(), Instant::now());
    e.record_pick(ip(1), BackendId(8), t0, settings.window);
    assert_eq!(e.report(ip(1), B, ALONE, &settings, t0), ReportOutcome::NotSentThere);
    e.record_pick(ip(2), B, t0, settings.window);
    assert_eq!(e.report(ip(2), B, ALONE, &settings, t0 + secs(11)), ReportOutcome::NotSentThere);
    // Many reports of one client that was sent there: one client, then rate limited.
    e.record_pick(ip(3), B, t0 + secs(20), settings.window);
    let outcomes: Vec<_> = (0..12).map(|_| e.report(ip(3), B, ALONE, &settings, t0 + secs(20))).collect();
    assert!(outcomes[..10].iter().all(|o| *o == ReportOutcome::Counted { clients: 1 }), "{outcomes:?}");
    assert_eq!(outcomes[10..], [ReportOutcome::RateLimited, ReportOutcome::RateLimited]);
    assert_eq!(e.ejected_until(B), None);
}

#[test]
fn the_cap_keeps_part_of_a_service_in_rotation() {
    let settings = EjectionSettings::default();
    let (mut e, t0) = (Ejections::default(), Instant::now());
    sent(&mut e, 3, t0);
    let half_out = ServiceShare { ejected: 1, backends: 2 };
    for client in 1..=2 {
        e.report(ip(client), B, half_out, &settings, t0);
    }
    assert_eq!(e.report(ip(3), B, half_out, &settings, t0), ReportOutcome::CapReached { clients: 3 });
    // With 0 % allowed, ejection is off.
    let off = EjectionSettings { max_percent: 0, ..settings.clone() };
    assert_eq!(e.report(ip(1), B, ALONE, &off, t0), ReportOutcome::CapReached { clients: 3 });
    // The only backend of a service may go (0 % is below the cap), as in Envoy.
    let only = ServiceShare { ejected: 0, backends: 1 };
    assert!(matches!(e.report(ip(2), B, only, &settings, t0), ReportOutcome::Ejected { .. }));
}

#[test]
fn ejections_grow_return_on_their_own_and_the_count_restarts_after_a_quiet_time() {
    let settings = EjectionSettings::default();
    let (mut e, mut t) = (Ejections::default(), Instant::now());
    let eject = |e: &mut Ejections, t: Instant| {
        sent(e, 3, t);
        (1..=3).map(|c| e.report(ip(c), B, ALONE, &settings, t)).last().unwrap()
    };
    assert_eq!(eject(&mut e, t), ReportOutcome::Ejected { count: 1, duration: secs(30) });
    assert_eq!(e.next_return(), Some(t + secs(30)));
    assert!(e.due_returns(t + secs(29)).is_empty());
    assert_eq!(e.due_returns(t + secs(30)), vec![B]);
    assert_eq!(e.ejected_until(B), None);
    t += secs(31);
    assert_eq!(eject(&mut e, t), ReportOutcome::Ejected { count: 2, duration: secs(60) });
    t += secs(60);
    e.due_returns(t);
    // Long repeats reach the longest ejection and stay there.
    for count in 3u64..=12 {
        let ReportOutcome::Ejected { duration, .. } = eject(&mut e, t) else { panic!("not ejected") };
        assert_eq!(duration, secs(30 * count).min(secs(300)));
        t += duration;
        e.due_returns(t);
    }
    // Quiet for the longest ejection time after its return: back to the first.
    t += secs(300);
    assert_eq!(eject(&mut e, t), ReportOutcome::Ejected { count: 1, duration: secs(30) });
}

#[test]
fn a_forgotten_backend_leaves_no_return_behind() {
    let settings = EjectionSettings::default();
    let (mut e, t0) = (Ejections::default(), Instant::now());
    sent(&mut e, 3, t0);
    for c in 1..=3 {
        let _ = e.report(ip(c), B, ALONE, &settings, t0);
    }
    assert_eq!(e.ejected().collect::<Vec<_>>(), vec![B]);
    e.forget(B);
    assert_eq!(e.next_return(), None);
    assert_eq!(e.ejection_count(B), 0);
}

#[test]
fn remembered_picks_are_bounded_and_a_pair_picked_again_is_one_entry() {
    let window = EjectionSettings::default().window;
    let (mut e, t0) = (Ejections::default(), Instant::now());
    for n in 0..(MAX_REMEMBERED_PICKS as u32 + 100) {
        e.record_pick(IpAddr::from(n.to_be_bytes()), B, t0, window);
    }
    assert_eq!(e.picks.len(), MAX_REMEMBERED_PICKS);
    assert_eq!(e.latest_pick.len(), MAX_REMEMBERED_PICKS);
    // The least recently filed went first.
    assert!(!e.latest_pick.contains_key(&(IpAddr::from(0u32.to_be_bytes()), B)));
    // Pairs not picked within the window go when the next new pair is filed.
    e.record_pick(ip(1), B, t0 + secs(11), window);
    assert_eq!((e.picks.len(), e.latest_pick.len()), (1, 1));
    // One client picking the same backend a million times is one entry, and its
    // latest pick is the one that counts.
    let mut e = Ejections::default();
    for ms in 0..1_000_000u64 {
        e.record_pick(ip(2), B, t0 + Duration::from_micros(ms * 20), window);
    }
    assert_eq!((e.picks.len(), e.latest_pick.len()), (1, 1));
    let last = t0 + Duration::from_micros(999_999 * 20);
    // Filed at t0, refreshed at 20 s: a new pair filed at 25 s keeps it, at the back.
    e.record_pick(ip(3), B, last + secs(5), window);
    assert_eq!(e.picks.len(), 2);
    assert!(e.was_sent(ip(2), B, last + secs(10), window));
    assert!(!e.was_sent(ip(2), B, last + secs(11), window));
}
