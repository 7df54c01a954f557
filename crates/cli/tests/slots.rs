//! Capacity slots end to end, with the real binary as separate processes: agents with
//! `--capacity` leasing their places to `serve` replicas that never talk to each
//! other, and `pick` clients spread over the replicas. No more clients are admitted
//! than there are places, every other pick exits 5 (no free place), and places come
//! back as the backend's count of places in use falls. Each client "arrives" as soon as
//! it is assigned: the test writes the backend's metrics file (`in_use`, and `arrived`
//! in all, which ends the clients' promises), as a backend would.

mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loadwise_testkit::TempDir;
use process::{Finished, Proc, Spawn, run_to_end, serve_defaults, serve_with};

/// Short, so that the test sees several grants in a few seconds; the default is 1 s.
const INTERVAL: &str = "200ms";

/// An agent of service `game` at `advertise` with `capacity` places, reporting to every
/// replica, its places in use read from `metrics`.
fn agent(replicas: &[SocketAddr], advertise: &str, capacity: u32, metrics: &Path) -> Proc {
    let servers: Vec<String> = replicas.iter().map(SocketAddr::to_string).collect();
    let capacity = capacity.to_string();
    let metrics = metrics.to_str().unwrap();
    let mut args = vec!["agent", "--advertise", advertise, "--service", "game", "--interval", INTERVAL];
    args.extend_from_slice(&["--capacity", &capacity]);
    args.extend_from_slice(&["--metrics-file", metrics]);
    for server in &servers {
        args.extend_from_slice(&["--server", server]);
    }
    Spawn::new(&args).start()
}

fn pick(replica: SocketAddr) -> Finished {
    run_to_end(&["pick", "--server", &replica.to_string(), "--service", "game", "--timeout", "2s"], &[])
}

/// A slot backend's metrics file: its clients in use and arrived in all.
#[derive(Debug)]
struct Backend {
    metrics: PathBuf,
    in_use: u32,
    arrived: u32,
}

impl Backend {
    fn new(dir: &TempDir, name: &str) -> Backend {
        let backend = Backend { metrics: dir.path().join(name), in_use: 0, arrived: 0 };
        backend.write();
        backend
    }

    fn write(&self) {
        std::fs::write(&self.metrics, format!("in_use {}\narrived {}\n", self.in_use, self.arrived)).unwrap();
    }

    /// A client sent here arrived.
    fn arrive(&mut self) {
        self.in_use += 1;
        self.arrived += 1;
        self.write();
    }
}

/// What picks spread over the replicas got: the backends assigned, in order, and the
/// number refused with no free place. Any other outcome fails the test. Each client
/// assigned arrives at its backend at once.
#[derive(Debug, Default)]
struct Tally {
    assigned: Vec<String>,
    no_free_place: usize,
}

impl Tally {
    fn pick(&mut self, replica: SocketAddr, backends: &mut [Backend]) {
        let out = pick(replica);
        match out.code {
            Some(0) => self.assign(&out, backends),
            Some(5) => {
                assert!(out.stderr.contains("no free place"), "exit 5 says why: {out:?}");
                self.no_free_place += 1;
            }
            _ => panic!("a pick neither assigned nor refused for lack of a place: {out:?}"),
        }
    }

    fn assign(&mut self, out: &Finished, backends: &mut [Backend]) {
        let line = out.stdout.lines().next().unwrap_or_default().to_owned();
        let port: u16 = line.split(':').nth(1).and_then(|p| p.parse().ok()).expect("HOST:PORT");
        backends[usize::from(port - 7001)].arrive();
        self.assigned.push(line);
    }
}

/// Picks from each replica until it knows the service (the agent's first heartbeat
/// reached it), counting what those picks got.
fn wait_until_registered(replicas: &[SocketAddr], tally: &mut Tally, backends: &mut [Backend]) {
    let start = Instant::now();
    for &replica in replicas {
        loop {
            let out = pick(replica);
            match out.code {
                Some(0) => tally.assign(&out, backends),
                Some(5) => tally.no_free_place += 1,
                _ => {
                    assert!(start.elapsed() < Duration::from_secs(30), "never registered: {out:?}");
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
            break;
        }
    }
}

/// Picks round the replicas until `refusals_in_a_row` in a row are refused for lack of
/// a place, spanning at least `min_span`; fails after `limit`.
fn pick_until_full(
    replicas: &[SocketAddr],
    tally: &mut Tally,
    backends: &mut [Backend],
    min_span: Duration,
    limit: Duration,
) {
    let (start, mut in_a_row, mut round) = (Instant::now(), 0, 0usize);
    let mut full_since = None;
    loop {
        let refused_before = tally.no_free_place;
        tally.pick(replicas[round % replicas.len()], backends);
        round += 1;
        if tally.no_free_place > refused_before {
            in_a_row += 1;
            full_since.get_or_insert_with(Instant::now);
        } else {
            (in_a_row, full_since) = (0, None);
        }
        let long_enough = full_since.is_some_and(|since| since.elapsed() >= min_span);
        if in_a_row >= 6 && long_enough {
            return;
        }
        assert!(start.elapsed() < limit, "never full: {tally:?}");
    }
}

#[test]
fn fifty_places_leased_to_three_replicas_admit_exactly_fifty_then_ten_more_as_places_free() {
    let dir = TempDir::new("slots-three");
    let mut backends = [Backend::new(&dir, "metrics")];
    let replicas: Vec<(Proc, SocketAddr)> = (0..3).map(|_| serve_defaults()).collect();
    let addrs: Vec<SocketAddr> = replicas.iter().map(|(_, addr)| *addr).collect();
    let _agent = agent(&addrs, "127.0.0.1:7001", 50, &backends[0].metrics);
    // Three heartbeat intervals at least of picks spread over the three, until full.
    let mut tally = Tally::default();
    wait_until_registered(&addrs, &mut tally, &mut backends);
    pick_until_full(&addrs, &mut tally, &mut backends, Duration::from_millis(600), Duration::from_secs(60));
    assert_eq!(tally.assigned.len(), 50, "exactly the 50 places: {tally:?}");
    // Ten of the 50 clients leave: exactly 10 places are free.
    backends[0].in_use -= 10;
    backends[0].write();
    let mut more = Tally::default();
    pick_until_full(&addrs, &mut more, &mut backends, Duration::from_millis(600), Duration::from_secs(60));
    assert_eq!(more.assigned.len(), 10, "exactly the 10 places freed: {more:?}");
}

#[test]
fn under_pack_the_first_twenty_picks_go_to_one_backend() {
    let dir = TempDir::new("slots-pack");
    let mut backends = [Backend::new(&dir, "a"), Backend::new(&dir, "b")];
    let (_server, addr) = serve_with(&["--slot-policy", "pack"]);
    let _a = agent(&[addr], "127.0.0.1:7001", 20, &backends[0].metrics);
    let _b = agent(&[addr], "127.0.0.1:7002", 20, &backends[1].metrics);
    // Both registered and leasing: the first pick that succeeds is the first of 20.
    let start = Instant::now();
    let mut tally = Tally::default();
    while tally.assigned.is_empty() {
        let out = pick(addr);
        if out.code == Some(0) {
            tally.assign(&out, &mut backends);
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no backend ever leased its places: {out:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the other agent's grant arrive too, so both compete.
    std::thread::sleep(Duration::from_millis(600));
    for _ in 0..19 {
        tally.pick(addr, &mut backends);
    }
    let first = tally.assigned[0].clone();
    assert!(tally.assigned.iter().all(|line| *line == first), "the first 20 to one: {tally:?}");
    tally.pick(addr, &mut backends);
    assert_ne!(tally.assigned.last(), Some(&first), "then the other: {tally:?}");
}

#[test]
fn a_replica_killed_mid_burst_never_lets_the_total_exceed_the_capacity() {
    let dir = TempDir::new("slots-kill");
    let mut backends = [Backend::new(&dir, "metrics")];
    let mut replicas: Vec<(Proc, SocketAddr)> = (0..3).map(|_| serve_defaults()).collect();
    let addrs: Vec<SocketAddr> = replicas.iter().map(|(_, addr)| *addr).collect();
    let _agent = agent(&addrs, "127.0.0.1:7001", 30, &backends[0].metrics);
    let mut tally = Tally::default();
    wait_until_registered(&addrs, &mut tally, &mut backends);
    let start = Instant::now();
    while tally.assigned.len() < 10 {
        tally.pick(addrs[tally.assigned.len() % 3], &mut backends);
        assert!(start.elapsed() < Duration::from_secs(30), "{tally:?}");
    }
    // Killed while it holds a lease and has sent clients on it.
    let (mut killed, _) = replicas.remove(0);
    killed.signal("KILL");
    killed.wait_exit();
    let survivors = &addrs[1..];
    pick_until_full(
        survivors,
        &mut tally,
        &mut backends,
        Duration::from_millis(600),
        Duration::from_secs(60),
    );
    assert!(tally.assigned.len() <= 30, "never more than the 30 places: {tally:?}");
    assert!(tally.assigned.len() >= 10, "{tally:?}");
}
