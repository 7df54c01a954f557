use super::*;

fn game() -> ServiceName {
    ServiceName::new("game").unwrap()
}

fn slots(capacity: u32, in_use: u32, grant_seq: u32, grant_total: u64) -> SlotReport {
    SlotReport { capacity, in_use, grant_seq, grant_total }
}

const A: BackendId = BackendId(1);
const B: BackendId = BackendId(2);
const CONN_A: ConnectionId = ConnectionId(10);
const CONN_B: ConnectionId = ConnectionId(20);

fn open(_: BackendId) -> bool {
    true
}

#[test]
fn picks_stop_at_the_grant_and_say_no_free_place() {
    let mut pools = SlotPools::default();
    assert!(!pools.is_slot_service(&game()));
    // The first grant on a connection is 0, as the agent sends it; then 3.
    let answer = pools.report(A, &game(), CONN_A, slots(50, 0, 0, 0));
    assert_eq!(answer, LeaseAnswer { grant_seq: 0, sent_total: 0 });
    assert_eq!(pools.pick_in(&game(), SlotPolicy::Spread, open), Err(NoSlot::NoFreePlace));
    pools.report(A, &game(), CONN_A, slots(50, 0, 0, 3));
    assert!(pools.is_slot_service(&game()));
    for _ in 0..3 {
        assert_eq!(pools.pick_in(&game(), SlotPolicy::Spread, open), Ok(A));
    }
    assert_eq!(pools.pick_in(&game(), SlotPolicy::Spread, open), Err(NoSlot::NoFreePlace));
    assert_eq!(pools.has_room(A), Some(false));
    // The next heartbeat raises the grant: its answer reports the 3 sent.
    let answer = pools.report(A, &game(), CONN_A, slots(50, 3, 1, 5));
    assert_eq!(answer, LeaseAnswer { grant_seq: 1, sent_total: 3 });
    assert_eq!(pools.pick_in(&game(), SlotPolicy::Spread, open), Ok(A));
    assert_eq!(pools.view(A).unwrap().free, 1);
}

/// A backend registered on `connection` whose grant went from 0 to `total`.
fn granted(
    pools: &mut SlotPools,
    id: BackendId,
    connection: ConnectionId,
    capacity: u32,
    in_use: u32,
    total: u64,
) {
    pools.report(id, &game(), connection, slots(capacity, in_use, 0, 0));
    pools.report(id, &game(), connection, slots(capacity, in_use, 1, total));
}

#[test]
fn the_places_the_backend_reports_bound_the_picks_too() {
    let mut pools = SlotPools::default();
    granted(&mut pools, A, CONN_A, 10, 9, 100);
    assert_eq!(pools.pick_in(&game(), SlotPolicy::Spread, open), Ok(A));
    assert_eq!(pools.pick_in(&game(), SlotPolicy::Spread, open), Err(NoSlot::NoFreePlace));
}

#[test]
fn spread_takes_the_most_free_places_and_pack_the_fewest() {
    let mut pools = SlotPools::default();
    granted(&mut pools, A, CONN_A, 20, 0, 20);
    granted(&mut pools, B, CONN_B, 20, 5, 20);
    let spread: Vec<_> = (0..4).map(|_| pools.pick_in(&game(), SlotPolicy::Spread, open).unwrap()).collect();
    assert_eq!(spread, [A, A, A, A], "A has 20 free, B 15");
    let mut pools = SlotPools::default();
    granted(&mut pools, A, CONN_A, 20, 0, 20);
    granted(&mut pools, B, CONN_B, 20, 0, 20);
    let packed: Vec<_> = (0..20).map(|_| pools.pick_in(&game(), SlotPolicy::Pack, open).unwrap()).collect();
    assert!(packed.iter().all(|&id| id == packed[0]), "the first 20 go to one: {packed:?}");
    let next = pools.pick_in(&game(), SlotPolicy::Pack, open).unwrap();
    assert_ne!(next, packed[0], "then the other");
}

#[test]
fn a_backend_kept_from_clients_is_passed_over_and_none_open_is_no_backend() {
    let mut pools = SlotPools::default();
    granted(&mut pools, A, CONN_A, 20, 0, 20);
    granted(&mut pools, B, CONN_B, 20, 0, 1);
    let only_b = |id| id == B;
    assert_eq!(pools.pick_in(&game(), SlotPolicy::Spread, only_b), Ok(B));
    assert_eq!(pools.pick_in(&game(), SlotPolicy::Spread, only_b), Err(NoSlot::NoFreePlace));
    assert_eq!(pools.pick_in(&game(), SlotPolicy::Spread, |_| false), Err(NoSlot::NoBackend));
}

#[test]
fn counts_are_per_connection_and_a_backend_back_on_its_connection_keeps_its_count() {
    let mut pools = SlotPools::default();
    granted(&mut pools, A, CONN_A, 10, 0, 2);
    pools.pick_in(&game(), SlotPolicy::Spread, open).unwrap();
    // It leaves the table (its TTL), its connection still open, and comes back on it:
    // the count goes on, so the agent's grant of 2 in all still allows just one more.
    pools.leave(A);
    assert!(!pools.is_slot_service(&game()));
    let back = pools.report(A, &game(), CONN_A, slots(10, 1, 2, 2));
    assert_eq!(back, LeaseAnswer { grant_seq: 2, sent_total: 1 });
    assert_eq!(pools.pick_in(&game(), SlotPolicy::Spread, open), Ok(A));
    assert_eq!(pools.pick_in(&game(), SlotPolicy::Spread, open), Err(NoSlot::NoFreePlace));
    // Heard on a second connection while the first carries it: that grant may have
    // been used already, and is taken as sent.
    let other = pools.report(A, &game(), ConnectionId(11), slots(10, 1, 5, 7));
    assert_eq!(other, LeaseAnswer { grant_seq: 5, sent_total: 7 });
    assert_eq!(pools.pick_in(&game(), SlotPolicy::Spread, open), Err(NoSlot::NoFreePlace));
    // A new connection after it left starts at 0, as the backend's books do.
    pools.leave(A);
    let new = pools.report(A, &game(), ConnectionId(12), slots(10, 1, 0, 1));
    assert_eq!(new, LeaseAnswer { grant_seq: 0, sent_total: 0 });
    assert_eq!(pools.pick_in(&game(), SlotPolicy::Spread, open), Ok(A));
    // A forgotten backend leaves its service.
    pools.forget(A);
    assert!(!pools.is_slot_service(&game()));
    assert_eq!(pools.pick_in(&game(), SlotPolicy::Spread, open), Err(NoSlot::NoBackend));
}
