use super::*;

fn selector(ranks: &[(u64, Rank)]) -> LeastLoaded {
    let mut s = LeastLoaded::new();
    for &(id, rank) in ranks {
        s.insert(BackendId(id), rank);
    }
    s
}

fn picks(s: &mut LeastLoaded, n: usize) -> Vec<u64> {
    (0..n).map(|_| s.pick().unwrap().0).collect()
}

#[test]
fn empty_picks_nothing() {
    assert_eq!(LeastLoaded::new().pick(), None);
}

#[test]
fn picks_the_smallest_rank() {
    let mut s = selector(&[(1, Rank::Mem(50)), (2, Rank::Mem(20)), (3, Rank::Mem(70))]);
    assert_eq!(picks(&mut s, 3), [2, 2, 2]);
}

#[test]
fn ties_rotate_in_id_order() {
    let mut s = selector(&[(3, Rank::Mem(10)), (1, Rank::Mem(10)), (2, Rank::Mem(10)), (4, Rank::Mem(11))]);
    assert_eq!(picks(&mut s, 7), [1, 2, 3, 1, 2, 3, 1]);
}

#[test]
fn rotation_continues_across_membership_changes() {
    let mut s = selector(&[(1, Rank::Mem(10)), (2, Rank::Mem(10)), (3, Rank::Mem(10))]);
    assert_eq!(picks(&mut s, 2), [1, 2]);
    s.remove(BackendId(3), Rank::Mem(10));
    assert_eq!(picks(&mut s, 2), [1, 2]);
    s.insert(BackendId(5), Rank::Mem(10));
    assert_eq!(picks(&mut s, 3), [5, 1, 2]);
}

#[test]
fn a_new_lower_rank_wins_at_once() {
    let mut s = selector(&[(1, Rank::Mem(10)), (2, Rank::Mem(10))]);
    assert_eq!(picks(&mut s, 1), [1]);
    s.update(BackendId(2), Rank::Mem(10), Rank::Mem(5));
    assert_eq!(picks(&mut s, 2), [2, 2]);
    s.update(BackendId(2), Rank::Mem(5), Rank::Mem(90));
    assert_eq!(picks(&mut s, 2), [1, 1]);
}

#[test]
fn invalid_reports_rank_after_every_valid_one() {
    assert!(Rank::Mem(100) < Rank::Unusable);
    assert_eq!(Rank::from_mem(100), Rank::Mem(100));
    assert_eq!(Rank::from_mem(101), Rank::Unusable);
    assert_eq!(Rank::from_mem(182), Rank::from_mem(255));
    let mut s = selector(&[(1, Rank::from_mem(182)), (2, Rank::from_mem(100)), (3, Rank::from_mem(0))]);
    assert_eq!(picks(&mut s, 2), [3, 3]);
    s.remove(BackendId(3), Rank::Mem(0));
    assert_eq!(picks(&mut s, 2), [2, 2]);
}

#[test]
fn invalid_reports_tie_among_themselves() {
    // Old senders report 100 or garbage after their first heartbeat; whatever the
    // garbage, they must share the logins rather than one of them taking all.
    let mut s = selector(&[(1, Rank::from_mem(182)), (2, Rank::from_mem(101)), (3, Rank::from_mem(255))]);
    assert_eq!(picks(&mut s, 6), [1, 2, 3, 1, 2, 3]);
}

#[test]
fn remove_needs_the_current_rank() {
    let mut s = selector(&[(1, Rank::Mem(10))]);
    assert!(!s.remove(BackendId(1), Rank::Mem(11)));
    assert!(s.remove(BackendId(1), Rank::Mem(10)));
    assert!(s.is_empty());
}
