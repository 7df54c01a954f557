//! Unit tests of the simulation: scenario parsing, metric integration, exact runs.

use std::time::Duration;

use super::arrivals::{Nanos, Stream};
use super::metrics::{BurstTally, Counts, Integrals, PolicyResult, Pool};
use super::scenario::{LeaveKind, SessionLength, Spacing, StartLoad};
use super::*;

const SECOND: Nanos = 1_000_000_000;

fn parse(text: &str) -> Scenario {
    Scenario::from_toml(text).unwrap_or_else(|error| panic!("{error}\n{text}"))
}

/// The error for `text`, which must be refused.
fn refused(text: &str) -> String {
    match Scenario::from_toml(text) {
        Ok(scenario) => panic!("accepted: {scenario:?}"),
        Err(error) => error.to_string(),
    }
}

fn assert_close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
}

const MINIMAL: &str = "duration = \"5s\"\n[[backends]]\n";

#[test]
fn a_minimal_scenario_takes_the_documented_defaults() {
    let scenario = parse(MINIMAL);
    assert_eq!(scenario.duration, Duration::from_secs(5));
    assert_eq!(scenario.seed, 1);
    assert_eq!(scenario.name, None);
    let group = &scenario.backends[0];
    assert_eq!(group.count, 1);
    assert_eq!(group.load, StartLoad::All(0.0));
    assert_eq!(group.capacity, 1.0);
    assert_eq!(group.heartbeat_interval, Duration::from_secs(1));
    assert!(!group.legacy_reports_100);
    assert_eq!(group.join_at, Duration::ZERO);
    assert_eq!(group.leave_at, None);
    assert_eq!(group.leave_by, LeaveKind::Disconnect);
    assert_eq!(scenario.clients.rate, 0.0);
    assert_eq!(scenario.clients.session_load, 0.01);
    assert_eq!(scenario.clients.session, SessionLength::Endless);
    assert!(scenario.bursts.is_empty());
    assert_eq!(scenario.dispatcher.slow_start, None);
    assert_eq!(scenario.dispatcher.tie_band, None);
    assert_eq!(scenario.replicas(), 1);
    assert_eq!(scenario.ttl(), Duration::from_secs(3), "three heartbeat intervals");
}

#[test]
fn every_key_parses() {
    let scenario = parse(
        r#"
        name = "all"
        description = "every key"
        duration = "1m"
        seed = 7
        [dispatcher]
        ttl = "10s"
        slow_start = "0s"
        replicas = 2
        tie_band = 0.1
        [[backends]]
        name = "a"
        count = 3
        load = [1, 2.5, 3]
        capacity = 2
        heartbeat_interval = "500ms"
        legacy_reports_100 = true
        join_at = "1s"
        leave_at = "30s"
        leave_by = "silence"
        [clients]
        rate = 10.5
        session_load = 0.5
        session = { kind = "uniform", min = "1s", max = "2s" }
        [[bursts]]
        at = "5s"
        clients = 100
        window = "250ms"
        spacing = "poisson"
        session_load = 1
        session = { kind = "fixed", length = "3s" }
        "#,
    );
    assert_eq!(scenario.seed, 7);
    assert_eq!(scenario.ttl(), Duration::from_secs(10));
    assert_eq!(scenario.dispatcher.slow_start, Some(Duration::ZERO));
    assert_eq!((scenario.replicas(), scenario.dispatcher.tie_band), (2, Some(0.1)));
    assert_eq!(scenario.backends[0].load, StartLoad::Each(vec![1.0, 2.5, 3.0]));
    assert_eq!(scenario.backends[0].leave_by, LeaveKind::Silence);
    assert_eq!(scenario.bursts[0].spacing, Spacing::Poisson);
    assert_eq!(scenario.bursts[0].session, Some(SessionLength::Fixed { length: Duration::from_secs(3) }));
    assert_eq!(
        scenario.clients.session,
        SessionLength::Uniform { min: Duration::from_secs(1), max: Duration::from_secs(2) }
    );
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let cases = [
        ("duration = \"5s\"\ndurration = \"5s\"\n[[backends]]\n", "durration"),
        ("duration = \"5s\"\n[[backends]]\ncapacty = 2\n", "capacty"),
        ("duration = \"5s\"\n[[backends]]\n[dispatcher]\npolicy = \"p2c\"\n", "policy"),
        ("duration = \"5s\"\n[[backends]]\n[clients]\nrat = 1\n", "rat"),
        (
            "duration = \"5s\"\n[[backends]]\n[clients]\nsession = { kind = \"fixed\", mean = \"1s\" }\n",
            "mean",
        ),
        (
            "duration = \"5s\"\n[[backends]]\n[[bursts]]\nat = \"1s\"\nclients = 1\nwindow = \"1s\"\nsize = 1\n",
            "size",
        ),
    ];
    for (text, key) in cases {
        let error = refused(text);
        assert!(error.contains(&format!("unknown field `{key}`")), "{error}");
    }
}

#[test]
fn values_of_the_wrong_form_are_refused_showing_the_key() {
    let cases = [
        ("duration = \"5x\"\n[[backends]]\n", "duration = \"5x\""),
        ("duration = 5\n[[backends]]\n", "duration = 5"),
        ("duration = \"5s\"\n[[backends]]\nload = \"high\"\n", "load = \"high\""),
        ("duration = \"5s\"\n[[backends]]\nleave_by = \"vanish\"\n", "leave_by"),
        ("duration = \"5s\"\n[[backends]]\ncount = -1\n", "count = -1"),
        ("duration = \"5s\"\n[[backends]]\n[clients]\nsession = { kind = \"sometimes\" }\n", "sometimes"),
    ];
    for (text, shown) in cases {
        let error = refused(text);
        assert!(error.contains(shown), "{error}");
    }
}

#[test]
fn values_that_cannot_work_are_refused_naming_the_key() {
    let with = |extra: &str| format!("duration = \"10s\"\n{extra}");
    let cases = [
        (with("[[backends]]\ncapacity = 0\n"), "backends[0].capacity"),
        (with("[[backends]]\n[[backends]]\nload = 1e9\n"), "backends[1].load"),
        (with("[[backends]]\ncount = 2\nload = [1, 2, 3]\n"), "backends[0].load"),
        (with("[[backends]]\ncount = 0\n"), "backends[0].count"),
        (with("[[backends]]\nheartbeat_interval = \"0s\"\n"), "backends[0].heartbeat_interval"),
        (with("[[backends]]\njoin_at = \"10s\"\n"), "backends[0].join_at"),
        (with("[[backends]]\njoin_at = \"2s\"\nleave_at = \"1s\"\n"), "backends[0].leave_at"),
        (with("[[backends]]\n[dispatcher]\nttl = \"0s\"\n"), "dispatcher.ttl"),
        (with("[[backends]]\n[dispatcher]\nreplicas = 0\n"), "dispatcher.replicas"),
        (with("[[backends]]\n[dispatcher]\nreplicas = 65\n"), "dispatcher.replicas"),
        (with("[[backends]]\n[dispatcher]\ntie_band = -1\n"), "dispatcher.tie_band"),
        (with("[[backends]]\n[dispatcher]\ntie_band = 10.5\n"), "dispatcher.tie_band"),
        (with("[[backends]]\n[dispatcher]\ntie_band = nan\n"), "dispatcher.tie_band"),
        (with("[[backends]]\n[clients]\nrate = -1\n"), "clients.rate"),
        (with("[[backends]]\n[clients]\nrate = nan\n"), "clients.rate"),
        (with("[[backends]]\n[clients]\nsession_load = 101\n"), "clients.session_load"),
        (
            with("[[backends]]\n[clients]\nsession = { kind = \"exponential\", mean = \"0s\" }\n"),
            "clients.session.mean",
        ),
        (
            with("[[backends]]\n[clients]\nsession = { kind = \"uniform\", min = \"2s\", max = \"1s\" }\n"),
            "clients.session.max",
        ),
        (with("[[backends]]\n[[bursts]]\nat = \"11s\"\nclients = 1\nwindow = \"0s\"\n"), "bursts[0].at"),
        (with("[[backends]]\n[[bursts]]\nat = \"1s\"\nclients = 0\nwindow = \"0s\"\n"), "bursts[0].clients"),
        (
            with("[[backends]]\n[[bursts]]\nat = \"1s\"\nclients = 1\nwindow = \"0s\"\nsession_load = -1\n"),
            "bursts[0].session_load",
        ),
        ("duration = \"0s\"\n[[backends]]\n".to_owned(), "duration"),
        ("duration = \"5s\"\nbackends = []\n".to_owned(), "backends"),
    ];
    for (text, key) in cases {
        let error = refused(&text);
        assert!(error.starts_with(&format!("`{key}`")), "{error}");
    }
}

#[test]
fn runs_too_large_to_finish_are_refused() {
    let cases = [
        ("duration = \"5s\"\n[[backends]]\ncount = 100001\n", "`backends[0].count`"),
        ("duration = \"5s\"\n[[backends]]\ncount = 60000\n[[backends]]\ncount = 60000\n", "`backends`"),
        ("duration = \"1000s\"\n[[backends]]\n[clients]\nrate = 100000\n", "`clients`"),
        ("duration = \"100s\"\n[[backends]]\ncount = 100000\nheartbeat_interval = \"100ms\"\n", "heartbeats"),
        // 5.1 million heartbeats are allowed once, not at each of two replicas.
        (
            "duration = \"100s\"\n[dispatcher]\nreplicas = 2\n[[backends]]\ncount = 50000\n",
            "once per replica",
        ),
        ("duration = \"8days\"\n[[backends]]\n", "`duration`"),
    ];
    for (text, needle) in cases {
        let error = refused(text);
        assert!(error.contains(needle), "{error}");
    }
}

#[test]
fn the_pool_tracks_extremes_and_spread() {
    let mut pool = Pool::default();
    assert_eq!(pool.extremes(), None);
    pool.set(0, 10.0);
    pool.set(1, 20.0);
    pool.set(2, 30.0);
    assert_eq!(pool.extremes(), Some((10.0, 30.0)));
    assert_close(pool.std_dev(), (200.0f64 / 3.0).sqrt());
    pool.set(2, 5.0);
    assert_eq!(pool.extremes(), Some((5.0, 20.0)));
    pool.remove(0);
    pool.remove(7);
    assert_eq!(pool.len(), 2);
    assert_close(pool.std_dev(), 7.5);
}

#[test]
fn many_updates_do_not_drift() {
    let mut pool = Pool::default();
    for step in 0..100_000u32 {
        pool.set((step % 7) as usize, f64::from(step % 13) * 0.37 + 60.0);
    }
    for backend in 0..7 {
        pool.set(backend, 50.0);
    }
    assert!(pool.std_dev() < 1e-6, "{}", pool.std_dev());
}

#[test]
fn integration_is_exact_on_a_hand_computed_case() {
    // Two backends. [0 s, 2 s): 10 and 20. [2 s, 3 s): 10 and 95. [3 s, 3 s): a
    // state that lasts no time, 500, which must not count. [3 s, 5 s): 40 only.
    let mut pool = Pool::default();
    let mut integrals = Integrals::default();
    pool.set(0, 10.0);
    pool.set(1, 20.0);
    integrals.advance(&pool, 2 * SECOND);
    pool.set(1, 95.0);
    integrals.advance(&pool, 3 * SECOND);
    pool.set(1, 500.0);
    integrals.advance(&pool, 3 * SECOND);
    pool.remove(1);
    pool.set(0, 40.0);
    integrals.advance(&pool, 5 * SECOND);
    let result = PolicyResult::new(Policy::Original, &integrals, &[], Counts::default());
    assert_close(result.peak_hottest, 95.0);
    assert_close(result.mean_hottest, (20.0 * 2.0 + 95.0 + 40.0 * 2.0) / 5.0);
    assert_close(result.mean_spread, (10.0 * 2.0 + 85.0) / 5.0);
    assert_close(result.mean_std_dev, (5.0 * 2.0 + 42.5) / 5.0);
    assert_close(result.time_above_90, 0.2);
    assert_eq!(result.worst_burst, None);
}

#[test]
fn time_without_live_backends_is_not_averaged_in() {
    let mut pool = Pool::default();
    let mut integrals = Integrals::default();
    integrals.advance(&pool, SECOND);
    pool.set(0, 30.0);
    integrals.advance(&pool, 3 * SECOND);
    let result = PolicyResult::new(Policy::Original, &integrals, &[], Counts::default());
    assert_close(result.mean_hottest, 30.0);
}

#[test]
fn a_burst_tally_counts_its_window_only() {
    let mut tally = BurstTally::new(SECOND, 2 * SECOND);
    tally.open(4);
    for (backend, at) in [(0, SECOND - 1), (0, SECOND), (0, 2 * SECOND), (1, 2 * SECOND), (2, 2 * SECOND + 1)]
    {
        tally.record(backend, at);
    }
    let result = PolicyResult::new(Policy::Original, &Integrals::default(), &[tally], Counts::default());
    let burst = &result.bursts[0];
    assert_eq!((burst.picks, burst.max, burst.live_backends), (3, 2, 4));
    assert_close(burst.mean, 0.75);
    assert_close(result.worst_burst.unwrap(), 2.0 / 0.75);
}

fn burst_times(spacing: Spacing, clients: u64) -> Vec<Nanos> {
    let scenario = parse(&format!(
        "duration = \"10s\"\n[[backends]]\n[[bursts]]\nat = \"1s\"\nclients = {clients}\nwindow = \"4s\"\nspacing = \"{}\"\n",
        if spacing == Spacing::Even { "even" } else { "poisson" }
    ));
    let mut stream = Stream::burst(&scenario.bursts[0], &scenario.clients, 3);
    std::iter::from_fn(|| stream.next_arrival().map(|arrival| arrival.at)).collect()
}

#[test]
fn even_bursts_are_evenly_spaced() {
    assert_eq!(burst_times(Spacing::Even, 4), [SECOND, 2 * SECOND, 3 * SECOND, 4 * SECOND]);
}

#[test]
fn poisson_bursts_are_sorted_and_inside_their_window() {
    let times = burst_times(Spacing::Poisson, 10_000);
    assert_eq!(times.len(), 10_000);
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]));
    assert!(times.iter().all(|at| (SECOND..=5 * SECOND).contains(at)));
    // Uniform over the window: about a quarter in each second.
    let first_second = times.iter().filter(|&&at| at < 2 * SECOND).count();
    assert!((2_300..2_700).contains(&first_second), "{first_second}");
}

#[test]
fn steady_arrivals_follow_their_rate_and_session_lengths_their_mean() {
    let scenario = parse(
        "duration = \"100s\"\n[[backends]]\n[clients]\nrate = 1000\nsession = { kind = \"exponential\", mean = \"2s\" }\n",
    );
    let mut stream = Stream::steady(&scenario.clients, 5).unwrap();
    let arrivals: Vec<_> = std::iter::from_fn(|| stream.next_arrival())
        .take_while(|arrival| arrival.at < 100 * SECOND)
        .collect();
    assert!((98_000..102_000).contains(&arrivals.len()), "{}", arrivals.len());
    let mean =
        arrivals.iter().map(|arrival| arrival.length.unwrap() as f64).sum::<f64>() / arrivals.len() as f64;
    assert!((mean / SECOND as f64 - 2.0).abs() < 0.05, "{mean}");
}

#[test]
fn no_rate_means_no_steady_stream() {
    assert!(Stream::steady(&parse(MINIMAL).clients, 1).is_none());
}

/// Two backends at 10 % and 20 % that never report again, and four clients at
/// 1, 2, 3 and 4 s, each adding 5 %, over 6 s.
const TINY: &str = r#"
    duration = "6s"
    [[backends]]
    count = 2
    load = [10, 20]
    heartbeat_interval = "24h"
    [clients]
    session_load = 5
    [[bursts]]
    at = "1s"
    clients = 4
    window = "4s"
"#;

#[test]
fn the_original_policy_sends_every_client_to_the_lowest_report() {
    // A: 10, 15, 20, 25, 30 from 0, 1, 2, 3, 4 s; B stays at 20.
    let result = simulate(&parse(TINY), Policy::Original, 1);
    assert_eq!((result.picks, result.no_backend, result.lost), (4, 0, 0));
    assert_close(result.peak_hottest, 30.0);
    assert_close(result.mean_hottest, (20.0 + 20.0 + 20.0 + 25.0 + 30.0 * 2.0) / 6.0);
    assert_close(result.mean_spread, (10.0 + 5.0 + 0.0 + 5.0 + 10.0 * 2.0) / 6.0);
    assert_close(result.mean_std_dev, (5.0 + 2.5 + 0.0 + 2.5 + 5.0 * 2.0) / 6.0);
    assert_eq!(result.time_above_90, 0.0);
    assert_close(result.worst_burst.unwrap(), 2.0);
}

#[test]
fn round_robin_alternates_whatever_the_load() {
    // A, B, A, B: (15, 20), (15, 25), (20, 25), (20, 30) from 1, 2, 3, 4 s.
    let result = simulate(&parse(TINY), Policy::RoundRobin, 1);
    assert_eq!(result.picks, 4);
    assert_close(result.peak_hottest, 30.0);
    assert_close(result.mean_hottest, (20.0 + 20.0 + 25.0 + 25.0 + 30.0 * 2.0) / 6.0);
    assert_close(result.mean_spread, (10.0 + 5.0 + 10.0 + 5.0 + 10.0 * 2.0) / 6.0);
    assert_close(result.mean_std_dev, (5.0 + 2.5 + 5.0 + 2.5 + 5.0 * 2.0) / 6.0);
    assert_close(result.worst_burst.unwrap(), 1.0);
}

#[test]
fn the_clients_go_to_the_replicas_in_turn() {
    // Each replica keeps its own turn: clients 1 and 3 go to the first, which sends
    // them to A then B; clients 2 and 4 go to the second, which does the same. So A,
    // A, B, B: (15, 20), (20, 20), (20, 25), (20, 30) from 1, 2, 3, 4 s.
    let text = format!("{TINY}\n[dispatcher]\nreplicas = 2\n");
    let result = simulate(&parse(&text), Policy::RoundRobin, 1);
    assert_eq!(result.picks, 4);
    assert_close(result.mean_hottest, (20.0 + 20.0 + 20.0 + 25.0 + 30.0 * 2.0) / 6.0);
    assert_close(result.mean_spread, (10.0 + 5.0 + 0.0 + 5.0 + 10.0 * 2.0) / 6.0);
}

#[test]
fn one_replica_runs_as_a_single_dispatcher() {
    let replicated = format!("{TINY}\n[dispatcher]\nreplicas = 1\n");
    for policy in Policy::ALL {
        assert_eq!(simulate(&parse(&replicated), policy, 4), simulate(&parse(TINY), policy, 4), "{policy}");
    }
}

/// A at 10 % and B at 12 %, reporting once; 60 clients at 1 s, each adding 0.001 %,
/// under least-loaded with no slow start and no tie band.
fn gap(replicas: usize) -> Scenario {
    parse(&format!(
        r#"
        duration = "2s"
        [dispatcher]
        replicas = {replicas}
        slow_start = "0s"
        tie_band = 0
        [[backends]]
        load = 10
        heartbeat_interval = "24h"
        [[backends]]
        load = 12
        heartbeat_interval = "24h"
        [clients]
        session_load = 0.001
        [[bursts]]
        at = "1s"
        clients = 60
        window = "0s"
        "#
    ))
}

#[test]
fn each_replica_accounts_only_for_its_own_picks() {
    // At the prior 0.1 % a client, A takes the 21 clients that bring it level with B
    // (ties to the lower id), then they alternate: 40 of 60 for A from one
    // dispatcher. Two replicas each close the same gap with their own 30 clients:
    // A takes 21 + 4 from each, 50 in all.
    let one = simulate(&gap(1), Policy::LeastLoaded, 1);
    let two = simulate(&gap(2), Policy::LeastLoaded, 1);
    assert_eq!((one.bursts[0].picks, one.bursts[0].max), (60, 40));
    assert_eq!((two.bursts[0].picks, two.bursts[0].max), (60, 50));
}

#[test]
fn a_disconnection_reaches_every_replica() {
    let text = format!("{}\n[dispatcher]\nreplicas = 3\n", two_backends("leave_at = \"1s\""));
    let result = simulate(&parse(&text), Policy::Original, 1);
    assert_eq!((result.picks, result.lost), (10, 0));
    assert_eq!(result.bursts[0].max, 10, "all to the backend left");
}

#[test]
fn sessions_end_after_their_length() {
    // One backend; a client at 1 s for 2 s adds 10 % during [1 s, 3 s).
    let scenario = parse(
        r#"
        duration = "4s"
        [[backends]]
        load = 50
        [clients]
        session_load = 10
        session = { kind = "fixed", length = "2s" }
        [[bursts]]
        at = "1s"
        clients = 1
        window = "0s"
        "#,
    );
    let result = simulate(&scenario, Policy::LeastLoaded, 1);
    assert_close(result.peak_hottest, 60.0);
    assert_close(result.mean_hottest, (50.0 * 2.0 + 60.0 * 2.0) / 4.0);
}

/// A at 10 % and B at 50 %; ten clients at 2 s, each adding 1 %.
fn two_backends(a_extra: &str) -> String {
    format!(
        r#"
        duration = "3s"
        [[backends]]
        load = 10
        {a_extra}
        [[backends]]
        load = 50
        [clients]
        session_load = 1
        [[bursts]]
        at = "2s"
        clients = 10
        window = "0s"
        "#
    )
}

#[test]
fn legacy_backends_report_100_after_their_first_heartbeat() {
    // By 2 s A has reported 100, so the original policy prefers B at 50.
    let result = simulate(&parse(&two_backends("legacy_reports_100 = true")), Policy::Original, 1);
    assert_close(result.peak_hottest, 60.0);
    let result = simulate(&parse(&two_backends("")), Policy::Original, 1);
    assert_close(result.peak_hottest, 50.0);
}

#[test]
fn reports_are_capped_at_255() {
    // A at 300 % reports 255, not a valid percentage: ranked after B.
    let result =
        simulate(&parse(&two_backends("load = 300").replacen("load = 10\n", "", 1)), Policy::Original, 1);
    let burst = &result.bursts[0];
    assert_eq!((burst.picks, burst.max), (10, 10));
    assert_close(result.peak_hottest, 300.0);
    assert_close(result.mean_spread, 250.0 * 2.0 / 3.0 + 240.0 / 3.0);
}

#[test]
fn a_disconnected_backend_is_gone_at_once() {
    let result = simulate(&parse(&two_backends("leave_at = \"1s\"")), Policy::Original, 1);
    assert_eq!((result.picks, result.lost), (10, 0));
    assert_close(result.peak_hottest, 60.0);
    assert_eq!(result.bursts[0].live_backends, 1);
}

#[test]
fn a_silent_backend_keeps_being_picked_until_its_ttl() {
    let scenario = parse(&two_backends("leave_at = \"1s\"\nleave_by = \"silence\""));
    let result = simulate(&scenario, Policy::Original, 1);
    assert_eq!((result.picks, result.lost), (10, 10));
    assert_close(result.peak_hottest, 50.0);
}

#[test]
fn clients_before_any_backend_joins_find_none() {
    let text =
        two_backends("join_at = \"2500ms\"").replace("load = 50\n", "load = 50\njoin_at = \"2500ms\"\n");
    let result = simulate(&parse(&text), Policy::LeastLoaded, 1);
    assert_eq!((result.picks, result.no_backend), (0, 10));
    assert_eq!(result.bursts[0].max_over_mean, None);
}

#[test]
fn a_run_is_a_function_of_its_seed() {
    let scenario = parse(
        r#"
        duration = "20s"
        [[backends]]
        count = 5
        load = [10, 20, 30, 40, 50]
        [clients]
        rate = 200
        session = { kind = "exponential", mean = "3s" }
        [[bursts]]
        at = "5s"
        clients = 500
        window = "300ms"
        spacing = "poisson"
        "#,
    );
    for policy in Policy::ALL {
        assert_eq!(simulate(&scenario, policy, 9), simulate(&scenario, policy, 9), "{policy}");
        assert_ne!(simulate(&scenario, policy, 9), simulate(&scenario, policy, 10), "{policy}");
    }
    let results = compare(&scenario, &Policy::ALL, 9);
    let picks: Vec<u64> = results.iter().map(|result| result.picks + result.no_backend).collect();
    assert!(picks.windows(2).all(|pair| pair[0] == pair[1]), "every policy sees the same clients: {picks:?}");
}

#[test]
fn formats_render_one_row_per_policy() {
    let results = compare(&parse(TINY), &Policy::ALL, 1);
    let text = render_table(&results, Format::Table);
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.lines().nth(4).unwrap().starts_with("original "), "{text}");
    let markdown = render_table(&results, Format::Markdown);
    assert_eq!(markdown.lines().count(), 6, "{markdown}");
    assert!(markdown.contains("| round-robin | 30.0 | 25.0 |"), "{markdown}");
    let json: serde_json::Value = serde_json::from_str(&render_table(&results, Format::Json)).unwrap();
    assert_eq!(json[1]["policy"], "p2c");
    assert_eq!(json[3]["worst_burst"], 2.0);
}

#[test]
fn format_names_parse() {
    assert_eq!("markdown".parse(), Ok(Format::Markdown));
    assert_eq!("json".parse(), Ok(Format::Json));
    assert_eq!("table".parse(), Ok(Format::Table));
    assert!("html".parse::<Format>().is_err());
}

mod slots {
    use crate::simulate::scenario::ScenarioError;
    use crate::simulate::{Mode, Scenario, simulate_slots};

    const POOL: &str = r#"
        duration = "4s"
        [dispatcher]
        replicas = 2
        [[backends]]
        count = 2
        slots = 5
        [[bursts]]
        at = "1500ms"
        clients = 40
        window = "1s"
    "#;

    fn refused_key(text: &str) -> String {
        match Scenario::from_toml(text) {
            Err(ScenarioError::Invalid { key, .. }) => key,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn slot_backends_need_every_group_to_have_places_and_to_stay() {
        let mixed = format!("{POOL}\n[[backends]]\ncount = 1\n");
        assert_eq!(refused_key(&mixed), "backends[1].slots");
        assert_eq!(refused_key(&POOL.replace("slots = 5", "slots = 0")), "backends[0].slots");
        let leaving = POOL.replace("slots = 5", "slots = 5\nleave_at = \"2s\"");
        assert_eq!(refused_key(&leaving), "backends[0].leave_at");
        let slow = format!("{POOL}\n[slots]\nconnect_delay = \"2m\"\n");
        assert_eq!(refused_key(&slow), "slots.connect_delay");
    }

    #[test]
    fn every_mode_sees_every_client_and_only_load_overshoots() {
        let scenario = Scenario::from_toml(POOL).unwrap();
        assert!(scenario.has_slots());
        for mode in Mode::ALL {
            let result = simulate_slots(&scenario, mode, 1);
            assert_eq!(result.admitted + result.rejected, 40, "{result:?}");
            assert_eq!(result.overshoot > 0, mode == Mode::Load, "{result:?}");
        }
        let counter = simulate_slots(&scenario, Mode::SharedCounter, 1);
        assert_eq!((counter.admitted, counter.refused_with_room), (10, 0));
    }

    #[test]
    fn a_client_takes_its_place_only_when_it_arrives() {
        // Every client is picked before any arrives: the shared counter still counts
        // those on their way, so it admits no more than the places.
        let late = POOL.replace("window = \"1s\"", "window = \"0s\"");
        let scenario = Scenario::from_toml(&format!("{late}\n[slots]\nconnect_delay = \"500ms\"\n")).unwrap();
        let counter = simulate_slots(&scenario, Mode::SharedCounter, 1);
        assert_eq!((counter.admitted, counter.overshoot), (10, 0));
    }
}
