use super::*;

use std::collections::HashMap;

use proptest::prelude::*;

const LIFETIME: Duration = Duration::from_secs(30);

fn ledger(capacity: u32) -> Ledger {
    Ledger::new(capacity, 0, LIFETIME)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_lone_dispatcher_may_use_every_free_place_and_keeps_what_it_did_not_use() {
    let (mut l, t0) = (ledger(50), Instant::now());
    assert_eq!(l.grant(1, t0), Grant { seq: 0, total: 50 });
    assert_eq!(l.free(t0), 0);
    // It reports 10 sent while holding grant 0; the next grant leaves it the 40 it
    // did not use: nothing is taken back, and nothing has to be waited for.
    assert_eq!(l.report(1, 0, 10, t0 + secs(1)), Reported::Applied { promised: 10 });
    assert_eq!(l.grant(1, t0 + secs(1)), Grant { seq: 1, total: 50 });
    // The 10 clients arrive: their places are in use, and nothing more is free.
    for _ in 0..10 {
        assert!(l.arrive(t0 + secs(2)));
    }
    assert_eq!((l.in_use(), l.promised(t0 + secs(2)), l.held(), l.free(t0 + secs(2))), (10, 0, 40, 0));
    // Two leave: their places go to the dispatcher at its next heartbeat.
    l.leave();
    l.leave();
    assert_eq!(l.grant(1, t0 + secs(3)).total, 52);
}

#[test]
fn replicas_that_pick_more_get_more_and_an_idle_one_keeps_its_floor() {
    let (mut l, t0) = (ledger(1000), Instant::now());
    let (mut busy_count, mut grants) = (0u64, HashMap::new());
    for round in 0..20u64 {
        let t = t0 + secs(round);
        for d in [1, 2] {
            let grant = l.grant(d, t);
            grants.insert(d, grant);
        }
        // The busy one sends 50 a round (within its grant), the idle one none; clients
        // come and go, so the places cycle.
        busy_count = (busy_count + 50).min(grants[&1].total);
        l.report(1, grants[&1].seq, busy_count, t);
        l.report(2, grants[&2].seq, 0, t);
        while l.redeem(t) {}
    }
    let (busy, idle) = (l.dispatchers[&1].held(), l.dispatchers[&2].held());
    assert!(busy > 10 * idle, "busy holds {busy}, idle {idle}");
    assert!(idle >= 1);
}

#[test]
fn a_lower_grant_takes_places_back_once_the_dispatcher_holds_it() {
    let (mut l, t0) = (ledger(10), Instant::now());
    assert_eq!(l.grant(1, t0).total, 10);
    // A second dispatcher appears: the first's next grant shrinks to its share, but
    // until it reports holding it, it may still be sending to its old grant.
    assert_eq!(l.grant(2, t0).total, 0, "nothing is free yet");
    let smaller = l.grant(1, t0 + secs(1));
    assert_eq!(smaller.total, 5);
    assert_eq!(l.held(), 10);
    l.report(1, smaller.seq, 3, t0 + secs(1));
    assert_eq!((l.held(), l.promised(t0 + secs(1))), (2, 3));
    assert_eq!(l.grant(2, t0 + secs(2)).total, 2, "half of the 5 free, its floor against the other's 3");
}

#[test]
fn the_last_places_go_one_at_a_time() {
    let (mut l, t0) = (ledger(3), Instant::now());
    l.grant(1, t0);
    l.report(1, 0, 3, t0);
    for _ in 0..3 {
        l.arrive(t0);
    }
    l.leave();
    // One place free, three dispatchers: the first to heartbeat gets it.
    let got: Vec<u64> = [2, 3, 1].iter().map(|&d| l.dispatchers.get(&d).map_or(0, |e| e.reported)).collect();
    assert_eq!(got, vec![0, 0, 3]);
    assert_eq!(l.grant(2, t0).total, 1);
    assert_eq!(l.grant(3, t0).total, 0);
    assert_eq!(l.free(t0), 0);
}

#[test]
fn a_promise_ends_when_its_client_arrives_or_its_lifetime_passes() {
    let (mut l, t0) = (ledger(10), Instant::now());
    let grant = l.grant(1, t0);
    l.report(1, grant.seq, 4, t0 + secs(1));
    assert_eq!(l.promised(t0 + secs(1)), 4);
    assert!(l.arrive(t0 + secs(2)));
    assert!(l.arrive(t0 + secs(2)));
    assert_eq!((l.promised(t0 + secs(2)), l.in_use()), (2, 2));
    // The other two never come: their places are free again a lifetime later.
    assert_eq!(l.promised(t0 + secs(1) + LIFETIME), 0);
    assert!(!l.redeem(t0 + secs(31)), "nothing left to redeem");
}

#[test]
fn a_client_arriving_before_or_after_its_dispatchers_report_is_counted_once() {
    // Before the report: its place is held, and in use once it arrives; the report
    // then promises it, and that promise is the one it already redeemed.
    let (mut l, t0) = (ledger(10), Instant::now());
    let grant = l.grant(1, t0);
    assert!(!l.arrive(t0), "no promise yet: the place is still held");
    assert_eq!((l.in_use(), l.held(), l.free(t0)), (1, 10, 0));
    l.report(1, grant.seq, 1, t0 + secs(1));
    assert_eq!((l.held(), l.promised(t0 + secs(1))), (9, 0), "in use, not promised too");
    // After the report: the arrival redeems the promise.
    let (mut l, t0) = (ledger(10), Instant::now());
    let grant = l.grant(1, t0);
    l.report(1, grant.seq, 1, t0 + secs(1));
    assert!(l.arrive(t0 + secs(2)));
    assert_eq!((l.promised(t0 + secs(2)), l.in_use(), l.held()), (0, 1, 9));
}

#[test]
fn a_lost_report_keeps_the_places_held_until_a_later_one_says_it_all() {
    let (mut l, t0) = (ledger(10), Instant::now());
    let first = l.grant(1, t0);
    // The report of 4 is lost; the places stay held, as if used.
    let second = l.grant(1, t0 + secs(1));
    assert_eq!((first.total, second.total), (10, 10));
    assert_eq!(l.free(t0 + secs(1)), 0);
    // The next report, a total, says what the lost one would have, and more.
    assert_eq!(l.report(1, second.seq, 6, t0 + secs(2)), Reported::Applied { promised: 6 });
    assert_eq!((l.held(), l.promised(t0 + secs(2))), (4, 6));
    // A stale or backwards report is ignored.
    assert_eq!(l.report(1, first.seq, 9, t0 + secs(2)), Reported::Ignored);
    assert_eq!(l.report(1, second.seq, 5, t0 + secs(2)), Reported::Ignored);
}

#[test]
fn a_dispatcher_that_never_reports_keeps_a_bounded_book() {
    let (mut l, t0) = (ledger(10), Instant::now());
    for n in 0..10_000u64 {
        l.grant_nothing(1);
        l.grant(2, t0 + Duration::from_millis(n));
    }
    assert_eq!(l.dispatchers[&1].grants.len(), 1);
    assert!(l.dispatchers[&2].grants.len() <= MAX_OPEN_GRANTS);
    assert_eq!(l.free(t0) + l.held(), 10, "nothing promised: what is not free is held");
}

#[test]
fn a_closed_connection_leaves_what_it_held_promised() {
    let (mut l, t0) = (ledger(10), Instant::now());
    l.grant(1, t0);
    l.forget(1, t0);
    assert_eq!((l.held(), l.promised(t0)), (0, 10));
    assert_eq!(l.report(1, 0, 0, t0), Reported::Ignored);
    assert_eq!(l.free(t0 + LIFETIME), 10);
}

/// What the dispatchers and clients really did, to check the ledger against.
#[derive(Debug, Default)]
struct World {
    /// Per dispatcher: the grants on their way to it, the one it holds, its count.
    dispatchers: HashMap<DispatcherKey, Seen>,
    /// Reports on their way to the agent.
    in_flight: Vec<(DispatcherKey, u32, u64)>,
    /// Clients on their way to the backend, by when their ticket expires.
    en_route: Vec<Instant>,
    in_use: u32,
}

#[derive(Debug, Default)]
struct Seen {
    incoming: Vec<Grant>,
    holding: Option<Grant>,
    count: u64,
}

#[derive(Debug, Clone)]
enum Step {
    Heartbeat(u64),
    Receive(u64),
    Pick(u64),
    Deliver,
    Lose,
    Arrive,
    Leave,
    Tick(u64),
    Close(u64),
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0..3u64).prop_map(Step::Heartbeat),
        2 => (0..3u64).prop_map(Step::Receive),
        6 => (0..3u64).prop_map(Step::Pick),
        2 => Just(Step::Deliver),
        1 => Just(Step::Lose),
        3 => Just(Step::Arrive),
        1 => Just(Step::Leave),
        2 => (0..5_000u64).prop_map(Step::Tick),
        1 => (0..3u64).prop_map(Step::Close),
    ]
}

proptest! {
    /// Whatever dispatchers, clients and the network do (grants and reports delayed or
    /// lost, clients late or never arriving, connections closing), the clients in use,
    /// those on their way with a valid ticket and what dispatchers may still send never
    /// outnumber the places.
    #[test]
    fn no_interleaving_overshoots_the_capacity(capacity in 0..40u32, steps in prop::collection::vec(any_step(), 0..300)) {
        let mut now = Instant::now();
        let mut l = Ledger::new(capacity, 0, LIFETIME);
        let mut w = World::default();
        for step in steps {
            match step {
                Step::Heartbeat(d) => {
                    let grant = l.grant(d, now);
                    w.dispatchers.entry(d).or_default().incoming.push(grant);
                }
                Step::Receive(d) => {
                    // A grant arrives; the dispatcher holds it and reports at once.
                    if let Some(seen) = w.dispatchers.get_mut(&d) && !seen.incoming.is_empty() {
                        let grant = seen.incoming.remove(0);
                        seen.holding = Some(grant);
                        w.in_flight.push((d, grant.seq, seen.count));
                    }
                }
                Step::Pick(d) => {
                    if let Some(seen) = w.dispatchers.get_mut(&d)
                        && let Some(grant) = seen.holding
                        && seen.count < grant.total
                    {
                        seen.count += 1;
                        w.en_route.push(now + LIFETIME);
                    }
                }
                Step::Deliver => {
                    if !w.in_flight.is_empty() {
                        let (d, seq, count) = w.in_flight.remove(0);
                        l.report(d, seq, count, now);
                    }
                }
                Step::Lose => {
                    if !w.in_flight.is_empty() {
                        w.in_flight.remove(0);
                    }
                }
                Step::Arrive => {
                    if let Some(position) = w.en_route.iter().position(|&expires| expires > now) {
                        w.en_route.remove(position);
                        w.in_use += 1;
                        l.arrive(now);
                    }
                }
                Step::Leave => {
                    if w.in_use > 0 {
                        w.in_use -= 1;
                        l.leave();
                    }
                }
                Step::Tick(ms) => now += Duration::from_millis(ms),
                Step::Close(d) => {
                    // The dispatcher drops the backend with the connection: it sends no more.
                    w.dispatchers.remove(&d);
                    w.in_flight.retain(|(from, _, _)| *from != d);
                    l.forget(d, now);
                }
            }
            w.en_route.retain(|&expires| expires > now);
            // What each dispatcher may still send: to the largest grant it holds or will.
            let may_send: u64 = w.dispatchers.values().map(|seen| {
                let largest = seen.incoming.iter().chain(seen.holding.iter()).map(|g| g.total).max().unwrap_or(0);
                largest.saturating_sub(seen.count)
            }).sum();
            let taken = u64::from(w.in_use) + w.en_route.len() as u64 + may_send;
            prop_assert!(taken <= u64::from(capacity), "{} in use + {} en route + {} may be sent > {}", w.in_use, w.en_route.len(), may_send, capacity);
            prop_assert!(l.free(now) + u64::from(w.in_use) <= u64::from(capacity));
        }
    }
}
