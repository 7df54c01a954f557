//! Faults with the real binary: agents and dispatchers killed, stopped and
//! restarted, one of two dispatcher replicas lost under a client loop, a graceful
//! drain, and a network partition between namespaces.
//!
//! Every process is a child killed when its handle drops, every wait has a deadline,
//! and every address is loopback with an ephemeral port (or the port a dispatcher
//! logged), except in the partition test, whose addresses exist only inside its
//! own namespaces. Where the design promises a bound ("evicted within the TTL"),
//! the intervals are long enough (≥ 250 ms heartbeats, ≥ 1 s TTL, 1 s of margin)
//! that a loaded 2-core CI machine cannot break it by scheduling noise alone; each
//! test prints what it measured (`cargo test --test faults -- --nocapture`).

mod process;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use process::{DEADLINE, Finished, Proc, Spawn, run_wrapped_to_end};
use serde_json::Value;

/// The dispatchers' TTL in the tests that measure eviction.
const TTL: Duration = Duration::from_secs(1);
/// A heartbeat interval that fits four times into the TTL, so a live agent that
/// is delayed by a busy machine is not evicted by mistake.
const FAST_INTERVAL: Duration = Duration::from_millis(250);
/// Added to every promised bound for scheduler noise and process start-up.
const MARGIN: Duration = Duration::from_secs(1);

/// The backend every pick names while it is in the table (it reports 10 %).
const VICTIM: &str = "10.0.0.2:7002";
/// The backend that stays (it reports 80 %).
const SURVIVOR: &str = "10.0.0.1:7001";

/// A duration as a command-line argument.
fn arg(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// Starts `loadwise serve` through `wrapper` (none, or `ip netns exec NS`) on
/// `listen` and returns it with the address it logged. The admin API is off: its
/// default port is fixed and tests run in parallel. The policy is `original`
/// (lowest report wins, picks are not accounted), so which backend a pick names
/// depends only on the loads the agents report, however many picks a test makes.
fn serve_on(wrapper: &[&str], listen: &str, ttl: Duration) -> (Proc, SocketAddr) {
    let ttl = arg(ttl);
    let args = ["serve", "--listen", listen, "--admin-listen", "off", "--ttl", &ttl, "--policy", "original"];
    let server = Spawn::wrapped(wrapper, &args).env("RUST_LOG", "info").start();
    let line = server.wait_for_line("listening");
    let addr = line.rsplit("addr=").next().unwrap().trim().parse().expect("the log names the address");
    (server, addr)
}

fn serve(ttl: Duration) -> (Proc, SocketAddr) {
    serve_on(&[], "127.0.0.1:0", ttl)
}

/// A fake `/proc/meminfo` reporting a fixed memory use, removed on drop.
struct Meminfo(PathBuf);

impl Meminfo {
    fn new(name: &str, used_percent: u64) -> Meminfo {
        let path = std::env::temp_dir().join(format!("loadwise-faults-{}-{name}", std::process::id()));
        let available = 1000 - used_percent * 10;
        std::fs::write(&path, format!("MemTotal: 1000 kB\nMemAvailable: {available} kB\n")).unwrap();
        Meminfo(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Meminfo {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Starts `loadwise agent` through `wrapper`, reporting `advertise` to every one
/// of `servers` every `interval`, with info logs to follow.
fn agent_on(
    wrapper: &[&str],
    servers: &[SocketAddr],
    advertise: &str,
    meminfo: &Meminfo,
    interval: Duration,
    extra: &[&str],
) -> Proc {
    let servers: Vec<String> = servers.iter().map(SocketAddr::to_string).collect();
    let interval = arg(interval);
    let mut args =
        vec!["agent", "--advertise", advertise, "--interval", &interval, "--meminfo", meminfo.path()];
    for server in &servers {
        args.extend(["--server", server.as_str()]);
    }
    args.extend_from_slice(extra);
    Spawn::wrapped(wrapper, &args).env("RUST_LOG", "info").start()
}

/// One `loadwise pick --json`: how it exited, when it started, how long the whole
/// process took, and the object it printed.
#[derive(Debug)]
struct Pick {
    code: Option<i32>,
    started: Instant,
    wall: Duration,
    json: Value,
    // Read only through `Debug`, in failure messages.
    #[allow(dead_code)]
    stderr: String,
}

impl Pick {
    fn success(&self) -> bool {
        self.code == Some(0)
    }

    fn backend(&self) -> Option<&str> {
        self.json["backend"].as_str()
    }

    fn dispatcher(&self) -> Option<&str> {
        self.json["dispatcher"].as_str()
    }

    /// The attempts that failed before the answer (or, on failure, all of them).
    fn failed(&self) -> &[Value] {
        self.json["failed"].as_array().map_or(&[], Vec::as_slice)
    }
}

/// Runs `loadwise pick --json` through `wrapper` against `servers`, in the order
/// given (the binary shuffles them).
fn pick_via(wrapper: &[&str], servers: &[SocketAddr], timeout: Duration, attempt_timeout: Duration) -> Pick {
    let servers: Vec<String> = servers.iter().map(SocketAddr::to_string).collect();
    let (timeout, attempt_timeout) = (arg(timeout), arg(attempt_timeout));
    let mut args = vec!["pick", "--json", "--timeout", &timeout, "--attempt-timeout", &attempt_timeout];
    for server in &servers {
        args.extend(["--server", server.as_str()]);
    }
    let started = Instant::now();
    let Finished { code, stdout, stderr } = run_wrapped_to_end(wrapper, &args, &[]);
    let wall = started.elapsed();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    Pick { code, started, wall, json, stderr }
}

/// A pick from one dispatcher on loopback, with a 2 s limit.
fn pick(server: SocketAddr) -> Pick {
    pick_via(&[], &[server], Duration::from_secs(2), Duration::from_secs(2))
}

/// Picks until one names `backend` (agents register asynchronously); returns how
/// long that took.
fn pick_until_via(wrapper: &[&str], server: SocketAddr, backend: &str) -> Duration {
    let start = Instant::now();
    loop {
        let pick = pick_via(wrapper, &[server], Duration::from_secs(2), Duration::from_secs(2));
        if pick.backend() == Some(backend) {
            return start.elapsed();
        }
        assert!(start.elapsed() < DEADLINE, "{server} never named {backend}; last pick: {pick:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pick_until(server: SocketAddr, backend: &str) -> Duration {
    pick_until_via(&[], server, backend)
}

/// Two agents on the same dispatchers: the survivor at 80 %, then the victim at
/// 10 %. Under policy `original` every pick names the victim while it is in the
/// table, so a test can show that the victim WAS picked before its fault, and any
/// later pick that names it is caught.
struct Pair {
    survivor: Proc,
    victim: Proc,
    // Declared last: the agents read these files until they are killed.
    _files: [Meminfo; 2],
}

impl Pair {
    fn start(server: SocketAddr, interval: Duration, tag: &str) -> Pair {
        let survivor_file = Meminfo::new(&format!("{tag}-survivor"), 80);
        let victim_file = Meminfo::new(&format!("{tag}-victim"), 10);
        let survivor = agent_on(&[], &[server], SURVIVOR, &survivor_file, interval, &[]);
        // The survivor first, so its registration is seen before the victim hides it.
        pick_until(server, SURVIVOR);
        let victim = agent_on(&[], &[server], VICTIM, &victim_file, interval, &[]);
        pick_until(server, VICTIM);
        Pair { survivor, victim, _files: [survivor_file, victim_file] }
    }
}

/// Waits for the process `pid` to be in the stopped state (`T` in
/// `/proc/PID/stat`): `kill -STOP` returns before the signal has taken effect.
fn wait_stopped(pid: u32) {
    let end = Instant::now() + DEADLINE;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        if state == Some('T') {
            return;
        }
        assert!(Instant::now() < end, "process {pid} not stopped within {DEADLINE:?}: {stat:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_agent_killed_with_sigkill_is_never_picked_after_the_ttl() {
    let (_server, addr) = serve(TTL);
    let mut pair = Pair::start(addr, FAST_INTERVAL, "sigkill");

    pair.victim.signal("KILL");
    let killed = Instant::now();
    assert_eq!(pair.victim.wait_exit(), None, "the agent died of the signal");

    // The survivor is in the table throughout: every pick succeeds, and it names the
    // victim only while the victim is still there, never once a TTL has passed.
    let unnamed_after = loop {
        let pick = pick(addr);
        assert!(pick.success(), "{pick:?}");
        match pick.backend() {
            Some(SURVIVOR) => break killed.elapsed(),
            Some(VICTIM) => {
                let since = pick.started - killed;
                assert!(
                    since < TTL,
                    "a pick started {since:?} after the kill, past the TTL, named it: {pick:?}"
                );
            }
            _ => panic!("unexpected answer: {pick:?}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!(
        "sigkill: the killed agent's backend was last named less than {unnamed_after:?} after the kill"
    );

    // From one TTL after the kill on, whatever happened to the socket.
    std::thread::sleep((killed + TTL).saturating_duration_since(Instant::now()));
    for i in 0..20 {
        let pick = pick(addr);
        assert_eq!(
            pick.backend(),
            Some(SURVIVOR),
            "pick {i}, {:?} after the kill: {pick:?}",
            killed.elapsed()
        );
    }
}

#[test]
fn a_stopped_agent_is_evicted_by_the_ttl_and_comes_back_when_continued() {
    let (server, addr) = serve(TTL);
    let pair = Pair::start(addr, FAST_INTERVAL, "sigstop");

    // SIGSTOP keeps the connection open: only the TTL can evict the backend.
    pair.victim.signal("STOP");
    let stopped = Instant::now();
    wait_stopped(pair.victim.id());
    let evicted = loop {
        let pick = pick(addr);
        assert!(pick.success(), "{pick:?}");
        match pick.backend() {
            Some(SURVIVOR) => break stopped.elapsed(),
            Some(VICTIM) => assert!(stopped.elapsed() < DEADLINE, "never evicted"),
            _ => panic!("unexpected answer: {pick:?}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Its last heartbeat was at most one interval before the stop.
    let bound = TTL + FAST_INTERVAL + MARGIN;
    eprintln!(
        "sigstop: evicted {evicted:?} after the stop (TTL {TTL:?}, interval {FAST_INTERVAL:?}, bound {bound:?})"
    );
    assert!(evicted <= bound, "evicted {evicted:?} after the stop, bound {bound:?}");
    // By the TTL, not because its connection closed.
    let expired = server.wait_for_line("backend expired");
    assert!(expired.contains(&format!("backend={VICTIM}")), "{expired}");

    pair.victim.signal("CONT");
    let returned = pick_until(addr, VICTIM);
    // On waking, its sampler fires the missed tick at once and the heartbeat goes out
    // on the connection that stayed open.
    eprintln!("sigstop: named again {returned:?} after SIGCONT");
    assert!(returned <= FAST_INTERVAL + MARGIN, "back only {returned:?} after SIGCONT");
}

#[test]
fn a_dispatcher_restarted_on_its_port_after_sigkill_is_refilled_within_two_intervals() {
    // A real agent's defaults: 1 s heartbeats, reconnect backoff capped at 1 s.
    let interval = Duration::from_secs(1);
    let ttl = 3 * interval;
    let (mut server, addr) = serve(ttl);
    let mut pair = Pair::start(addr, interval, "restart");

    server.signal("KILL");
    assert_eq!(server.wait_exit(), None, "the dispatcher died of the signal");
    // While it is down, one backend dies: the new dispatcher must never hear of it.
    pair.victim.signal("KILL");
    assert_eq!(pair.victim.wait_exit(), None);
    pair.survivor.wait_for_line("not connected");
    // Down long enough (0.1 + 0.2 + 0.4 + 0.8 s of attempts) for the survivor's
    // backoff to reach its 1 s cap: the slowest case for coming back.
    std::thread::sleep(Duration::from_millis(1500));

    // Same address: SO_REUSEADDR lets it bind despite the old connections. (Another
    // test could in theory take the freed ephemeral port meanwhile; then this
    // start fails loudly rather than passing wrongly.)
    let (_restarted, again) = serve_on(&[], &addr.to_string(), ttl);
    let restarted = Instant::now();
    assert_eq!(again, addr);
    let recovered = loop {
        let pick = pick(addr);
        assert_ne!(pick.backend(), Some(VICTIM), "named the backend that died while the dispatcher was down");
        if pick.success() {
            break restarted.elapsed();
        }
        assert_eq!(pick.code, Some(3), "up but empty: the error reply; {pick:?}");
        assert!(restarted.elapsed() < DEADLINE, "never recovered: {pick:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let bound = 2 * interval;
    eprintln!(
        "restart: picks succeed again {recovered:?} after the restart (interval {interval:?}, bound {bound:?})"
    );
    assert!(recovered <= bound, "recovered {recovered:?} after the restart, bound {bound:?}");

    // For one more interval, only the survivor.
    let until = Instant::now() + interval;
    while Instant::now() < until {
        let pick = pick(addr);
        assert_eq!(pick.backend(), Some(SURVIVOR), "{pick:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The backend that reports to both replicas.
const SHARED: &str = "10.0.0.5:7005";

/// Two dispatcher replicas and one agent reporting to both.
struct Replicas {
    a: Proc,
    a_addr: SocketAddr,
    _b: Proc,
    b_addr: SocketAddr,
    _agent: Proc,
    // After the agent, which reads it until it is killed.
    _meminfo: Meminfo,
}

impl Replicas {
    fn start(tag: &str) -> Replicas {
        let (a, a_addr) = serve(TTL);
        let (b, b_addr) = serve(TTL);
        let meminfo = Meminfo::new(tag, 30);
        let agent = agent_on(&[], &[a_addr, b_addr], SHARED, &meminfo, FAST_INTERVAL, &[]);
        pick_until(a_addr, SHARED);
        pick_until(b_addr, SHARED);
        Replicas { a, a_addr, _b: b, b_addr, _agent: agent, _meminfo: meminfo }
    }
}

/// The client loop's limits: the pick's overall deadline and the time one
/// dispatcher gets.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
const CLIENT_ATTEMPT: Duration = Duration::from_millis(500);

/// `loadwise pick` against both replicas, over and over on a thread, each result
/// sent back as it finishes. Stopped and joined on drop.
struct ClientLoop {
    picks: Receiver<Pick>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ClientLoop {
    fn start(servers: Vec<SocketAddr>) -> ClientLoop {
        let (tx, picks) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            // Bounded on its own too, should the receiving side never stop it.
            let end = Instant::now() + 3 * DEADLINE;
            while !stopping.load(Ordering::Relaxed) && Instant::now() < end {
                if tx.send(pick_via(&[], &servers, CLIENT_TIMEOUT, CLIENT_ATTEMPT)).is_err() {
                    return;
                }
            }
        });
        ClientLoop { picks, stop, thread: Some(thread) }
    }

    fn next(&self) -> Pick {
        self.picks.recv_timeout(DEADLINE).expect("the client loop reports a pick")
    }
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs the client loop, applies `fault` to replica A once A has answered at least
/// once, and keeps picking until at least eight picks started after the fault, two
/// of which tried A first. Checks what holds for any fault: every pick succeeds
/// within its deadline, and those started after the fault are answered by B, after
/// at most one failed attempt at A. Returns the picks started after the fault.
fn client_loop_through(replicas: &mut Replicas, fault: impl FnOnce(&mut Proc)) -> Vec<Pick> {
    let (a, b) = (replicas.a_addr.to_string(), replicas.b_addr.to_string());
    let client = ClientLoop::start(vec![replicas.a_addr, replicas.b_addr]);
    let mut before = Vec::new();
    // Until A has answered: "only B after the fault" must be a change.
    while before.len() < 3 || !before.iter().any(|pick: &Pick| pick.dispatcher() == Some(a.as_str())) {
        before.push(client.next());
        assert!(before.len() < 40, "A never answered: {before:#?}");
    }
    fault(&mut replicas.a);
    let faulted = Instant::now();
    let mut after = Vec::new();
    let tried_a_first = |picks: &[Pick]| picks.iter().filter(|pick| !pick.failed().is_empty()).count();
    while after.len() < 8 || tried_a_first(&after) < 2 {
        let pick = client.next();
        if pick.started >= faulted {
            after.push(pick)
        } else {
            before.push(pick)
        }
        // The order is random: 40 picks without A first has odds of 2^-40.
        assert!(after.len() < 40, "A was never tried first after the fault");
    }
    drop(client);

    let limit = CLIENT_TIMEOUT + MARGIN;
    for pick in before.iter().chain(&after) {
        assert!(pick.success() && pick.backend() == Some(SHARED), "{pick:?}");
        assert!(pick.wall <= limit, "a pick took {:?}, over its deadline plus start-up: {pick:?}", pick.wall);
    }
    for pick in &after {
        assert_eq!(pick.dispatcher(), Some(b.as_str()), "{pick:?}");
        let failed: Vec<&str> =
            pick.failed().iter().map(|attempt| attempt["dispatcher"].as_str().unwrap()).collect();
        assert!(failed.is_empty() || failed == [a.as_str()], "{pick:?}");
    }
    let max_wall = before.iter().chain(&after).map(|pick| pick.wall).max().unwrap();
    eprintln!(
        "client loop: {} picks before the fault, {} after ({} tried A first), longest pick {max_wall:?}",
        before.len(),
        after.len(),
        tried_a_first(&after)
    );
    after
}

/// The failed attempts at A among `picks`: their error text and elapsed time.
fn failed_attempts(picks: &[Pick]) -> Vec<(String, f64)> {
    let attempts = picks.iter().flat_map(Pick::failed);
    attempts.map(|a| (a["error"].as_str().unwrap().to_owned(), a["elapsed_ms"].as_f64().unwrap())).collect()
}

#[test]
fn picks_fail_over_at_once_when_one_of_two_dispatchers_is_killed() {
    let mut replicas = Replicas::start("replica-kill");
    let after = client_loop_through(&mut replicas, |a| {
        a.signal("KILL");
        // Reaped, so its sockets are closed: a pick started later meets no half-dead A.
        assert_eq!(a.wait_exit(), None);
    });
    let failed = failed_attempts(&after);
    eprintln!(
        "replica killed: attempts at A after the kill (ms): {:?}",
        failed.iter().map(|f| f.1).collect::<Vec<_>>()
    );
    for (error, elapsed_ms) in failed {
        // Its port is closed: refused at once, no attempt timeout waited.
        assert!(error.contains("refused"), "{error}");
        assert!(elapsed_ms < CLIENT_ATTEMPT.as_secs_f64() * 1e3, "{elapsed_ms} ms: {error}");
    }
}

#[test]
fn picks_fail_over_within_the_deadline_when_one_of_two_dispatchers_hangs() {
    let mut replicas = Replicas::start("replica-stop");
    // A stopped process still has its listening socket: the kernel completes the
    // handshake and queues the request, and nobody answers.
    let after = client_loop_through(&mut replicas, |a| {
        a.signal("STOP");
        wait_stopped(a.id());
    });
    let failed = failed_attempts(&after);
    eprintln!(
        "replica hung: attempts at A after the stop (ms): {:?}",
        failed.iter().map(|f| f.1).collect::<Vec<_>>()
    );
    let attempt_ms = CLIENT_ATTEMPT.as_secs_f64() * 1e3;
    for (error, elapsed_ms) in failed {
        assert!(error.contains("no answer"), "a timeout, not {error}");
        assert!(
            elapsed_ms >= attempt_ms * 0.98 && elapsed_ms < attempt_ms + 1000.0,
            "{elapsed_ms} ms: {error}"
        );
    }

    // Continued, A answers again: it was hung, not broken.
    replicas.a.signal("CONT");
    let back = pick_until(replicas.a_addr, SHARED);
    eprintln!("replica hung: A answers again {back:?} after SIGCONT");
}

/// Connects to `addr` until the connection is refused; returns how long that took.
fn wait_until_refused(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Err(error) if error.kind() == ErrorKind::ConnectionRefused => return start.elapsed(),
            _ => {}
        }
        assert!(start.elapsed() < DEADLINE, "{addr} still accepts connections");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_draining_dispatcher_refuses_at_once_and_picks_go_to_the_other() {
    let mut replicas = Replicas::start("drain");
    let (a, b) = (replicas.a_addr, replicas.b_addr);
    replicas.a.signal("TERM");
    let termed = Instant::now();
    replicas.a.wait_for_line("no longer accepting");
    // The listener is dropped right after that line; make sure of it rather than race.
    let closed = wait_until_refused(a);
    eprintln!("drain: connections refused {closed:?} after the log line");

    let attempt = Duration::from_secs(1);
    let mut picks = Vec::new();
    while picks.iter().filter(|pick: &&Pick| !pick.failed().is_empty()).count() < 2 {
        picks.push(pick_via(&[], &[a, b], 3 * attempt, attempt));
        assert!(picks.len() < 40, "A was never tried first");
    }
    for pick in &picks {
        assert!(pick.success() && pick.backend() == Some(SHARED), "{pick:?}");
        assert_eq!(pick.dispatcher(), Some(b.to_string().as_str()), "{pick:?}");
        // Fast: no attempt timeout was waited anywhere.
        assert!(pick.wall < attempt, "{pick:?}");
    }
    let failed = failed_attempts(&picks);
    for (error, elapsed_ms) in &failed {
        assert!(error.contains("refused") && !error.contains("no answer"), "{error}");
        assert!(*elapsed_ms < 250.0, "{elapsed_ms} ms: {error}");
    }
    let walls: Vec<Duration> = picks.iter().map(|pick| pick.wall).collect();
    eprintln!(
        "drain: {} picks, attempts at A refused after (ms) {:?}, pick wall times {walls:?}",
        picks.len(),
        failed.iter().map(|f| f.1).collect::<Vec<_>>()
    );

    assert_eq!(replicas.a.wait_exit(), Some(0), "a drained dispatcher exits 0");
    eprintln!("drain: A exited within {:?} of SIGTERM", termed.elapsed());
}

// ---------------------------------------------------------------------------------
// Network partition between two network namespaces.

/// Runs `program args`, returning its stderr if it fails (or cannot start).
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program).args(args).output().map_err(|error| format!("{program}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}`: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find_map(|line| line.strip_prefix("Uid:"));
    uid.and_then(|ids| ids.split_whitespace().next()) == Some("0")
}

/// Network namespaces deleted on drop, also when the test panics. Deleting one
/// also deletes the veth end inside it, and with it its peer.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: &str) -> Result<(), String> {
        run("ip", &["netns", "add", name])?;
        self.0.push(name.to_owned());
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            if let Err(error) = run("ip", &["netns", "del", name]) {
                eprintln!("cannot delete network namespace {name}: {error}");
            }
        }
    }
}

/// How the link between the namespaces is cut.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// `netem loss 100%` on both ends: every packet is dropped on the wire while
    /// links, addresses and routes stay up, like a real partition between hosts
    /// that are both still running.
    Netem,
    /// A `pfifo` queue of length zero on both ends drops every packet just the same.
    /// It needs only the FIFO qdisc, built into any kernel with traffic control,
    /// where `netem` is a module that is often missing (as on our CI runners).
    /// (iptables/nft DROP would do too, but they are separate packages, often not
    /// installed, while `tc` comes with the `ip` this test needs anyway.)
    EmptyQueue,
    /// Last resort: both ends down. Not quite a partition (the routes go and sends
    /// fail locally), but still nothing crosses.
    LinkDown,
}

/// One end of the link: a namespace and its veth device.
type End<'a> = (&'a str, &'a str);

fn in_ns(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Cuts the link with the first method the kernel supports, on both ends so that
/// both directions are dropped.
fn partition(ends: [End; 2]) -> Cut {
    let qdisc = |spec: &[&str]| {
        ends.iter().all(|(ns, dev)| {
            let mut args = vec!["tc", "qdisc", "add", "dev", dev, "root"];
            args.extend_from_slice(spec);
            in_ns(ns, &args).is_ok()
        })
    };
    let clear = || {
        for (ns, dev) in ends {
            let _ = in_ns(ns, &["tc", "qdisc", "del", "dev", dev, "root"]);
        }
    };
    if qdisc(&["netem", "loss", "100%"]) {
        return Cut::Netem;
    }
    clear();
    if qdisc(&["pfifo", "limit", "0"]) {
        return Cut::EmptyQueue;
    }
    clear();
    for (ns, dev) in ends {
        run("ip", &["-n", ns, "link", "set", dev, "down"]).expect("can set a link down");
    }
    Cut::LinkDown
}

fn heal(cut: Cut, ends: [End; 2]) {
    for (ns, dev) in ends {
        match cut {
            Cut::Netem | Cut::EmptyQueue => in_ns(ns, &["tc", "qdisc", "del", "dev", dev, "root"]),
            Cut::LinkDown => run("ip", &["-n", ns, "link", "set", dev, "up"]),
        }
        .expect("can heal the link");
    }
}

#[test]
fn a_partitioned_backend_is_evicted_by_the_ttl_and_returns_after_healing() {
    if !is_root() {
        eprintln!("skipped: the partition test needs root to create network namespaces");
        return;
    }
    let pid = std::process::id();
    let (dispatcher_ns, agent_ns) = (format!("loadwise-faults-d-{pid}"), format!("loadwise-faults-a-{pid}"));
    // Declared before every process, so dropped after them all, panic or not.
    let mut namespaces = Namespaces(Vec::new());
    if let Err(error) = namespaces.add(&dispatcher_ns).and_then(|()| namespaces.add(&agent_ns)) {
        eprintln!("skipped: cannot create network namespaces: {error}");
        return;
    }
    // Interface names have at most 15 characters.
    let (dispatcher_dev, agent_dev) = (format!("lwfd{pid}"), format!("lwfa{pid}"));
    let veth = [
        "link",
        "add",
        &dispatcher_dev,
        "netns",
        &dispatcher_ns,
        "type",
        "veth",
        "peer",
        "name",
        &agent_dev,
        "netns",
        &agent_ns,
    ];
    if let Err(error) = run("ip", &veth) {
        eprintln!("skipped: cannot create a veth pair: {error}");
        return;
    }
    // A /30 that exists only on this veth pair, inside these two namespaces: neither
    // namespace has any other interface or route, so nothing is routed to the host
    // or beyond, and it cannot clash with any network the host uses.
    let (dispatcher_ip, agent_ip) = ("10.213.47.1", "10.213.47.2");
    for (ns, dev, ip) in [(&dispatcher_ns, &dispatcher_dev, dispatcher_ip), (&agent_ns, &agent_dev, agent_ip)]
    {
        run("ip", &["-n", ns, "addr", "add", &format!("{ip}/30"), "dev", dev]).unwrap();
        run("ip", &["-n", ns, "link", "set", "lo", "up"]).unwrap();
        run("ip", &["-n", ns, "link", "set", dev, "up"]).unwrap();
    }
    let in_dispatcher_ns = ["ip", "netns", "exec", dispatcher_ns.as_str()];
    let in_agent_ns = ["ip", "netns", "exec", agent_ns.as_str()];

    let (server, addr) = serve_on(&in_dispatcher_ns, &format!("{dispatcher_ip}:0"), TTL);
    // The agent's loss detection is TCP_USER_TIMEOUT: 3 intervals, at least 1 s.
    // A short connect timeout keeps attempts made during the partition from holding
    // up the return after it heals; the backoff is capped at 1 s (the default).
    let interval = Duration::from_millis(300);
    let (connect_timeout, max_backoff) = (Duration::from_secs(1), Duration::from_secs(1));
    let meminfo = Meminfo::new("partition", 40);
    let backend = "10.0.0.9:7009";
    let (connect_arg, backoff_arg) = (arg(connect_timeout), arg(max_backoff));
    let extra = ["--connect-timeout", &connect_arg, "--max-backoff", &backoff_arg];
    let agent = agent_on(&in_agent_ns, &[addr], backend, &meminfo, interval, &extra);
    agent.wait_for_line("connected to dispatcher");
    // Picks are made inside the dispatcher's namespace, on its side of the cut.
    let registered = pick_until_via(&in_dispatcher_ns, addr, backend);
    eprintln!("partition: registered (picked across namespaces) after {registered:?}");

    let ends = [(dispatcher_ns.as_str(), dispatcher_dev.as_str()), (agent_ns.as_str(), agent_dev.as_str())];
    let cut = partition(ends);
    let cut_at = Instant::now();
    let evicted = loop {
        let pick = pick_via(&in_dispatcher_ns, &[addr], Duration::from_secs(2), Duration::from_secs(2));
        if pick.code == Some(3) {
            break cut_at.elapsed();
        }
        assert_eq!(pick.backend(), Some(backend), "{pick:?}");
        assert!(cut_at.elapsed() < DEADLINE, "never evicted");
        std::thread::sleep(Duration::from_millis(20));
    };
    let bound = TTL + interval + MARGIN;
    eprintln!("partition ({cut:?}): evicted {evicted:?} after the cut (TTL {TTL:?}, bound {bound:?})");
    assert!(evicted <= bound, "evicted {evicted:?} after the cut, bound {bound:?}");
    let expired = server.wait_for_line("backend expired");
    assert!(expired.contains(&format!("backend={backend}")), "by the TTL: {expired}");
    // Heal only once the agent has given up on the old connection, so the test
    // covers detection and reconnection, not a stalled connection resuming.
    agent.wait_for_line("not connected");
    eprintln!("partition: the agent dropped its connection {:?} after the cut", cut_at.elapsed());

    heal(cut, ends);
    let returned = pick_until_via(&in_dispatcher_ns, addr, backend);
    // At worst a connect attempt whose SYN was lost runs out, then one backoff.
    let bound = connect_timeout + max_backoff + MARGIN;
    eprintln!("partition: named again {returned:?} after healing (bound {bound:?})");
    assert!(returned <= bound, "returned {returned:?} after healing, bound {bound:?}");
}
