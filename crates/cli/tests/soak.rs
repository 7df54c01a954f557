//! Soak: the real `loadwise serve` for a bounded time while backends join and leave
//! (clean close, reset, or falling silent) and clients keep picking.
//!
//! At the end it checks that no pick named a backend gone for longer than the TTL
//! (or one that never existed), that no unexpected error happened, that the
//! dispatcher's RSS stayed within 10 % after warm-up, and that its file descriptors
//! returned to the baseline. `LOADWISE_SOAK_SECS` sets the length (40 s by default,
//! what CI runs); `scripts/soak.sh` runs a long one in release mode.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loadwise_client::{self as client, PickError};
use loadwise_protocol::{Heartbeat, IpField, LoginRequest, unix_time_now};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::BufRead as _;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const TTL: Duration = Duration::from_secs(1);
const HEARTBEAT_EVERY: Duration = Duration::from_millis(200);
/// A pick sent this long after a backend's removal was due still counts as on
/// time: the dispatcher's sweep and this machine's scheduler are not instant.
const TOLERANCE: Duration = Duration::from_millis(500);
const JOIN_EVERY: Duration = Duration::from_millis(100);
const LIFETIME_MS: std::ops::Range<u64> = 1_000..6_000;
const CLIENTS: usize = 8;
const PAUSE_BETWEEN_PICKS: Duration = Duration::from_millis(4);
const PICK_TIMEOUT: Duration = Duration::from_secs(2);

/// How a backend leaves the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Leave {
    /// Closes its connection: the dispatcher removes it at once.
    Close,
    /// Resets its connection (`SO_LINGER` 0), as a crashed process's kernel would.
    Reset,
    /// Stops sending but keeps the connection open: only the TTL removes it.
    Silent,
}

/// When each backend (by `IP:PORT`) joined and stopped being alive.
#[derive(Debug, Default)]
struct Ledger {
    gone_at: Mutex<HashMap<String, Option<Instant>>>,
}

impl Ledger {
    fn joined(&self, name: &str) {
        self.gone_at.lock().unwrap().insert(name.to_owned(), None);
    }

    fn left(&self, name: &str, at: Instant) {
        self.gone_at.lock().unwrap().insert(name.to_owned(), Some(at));
    }

    /// How long `name` had been gone when a pick sent at `sent` named it (zero if
    /// alive), or why naming it is wrong.
    fn judge(&self, name: &str, sent: Instant) -> Result<Duration, String> {
        match self.gone_at.lock().unwrap().get(name) {
            None => Err(format!("{name} never registered")),
            Some(Some(gone)) if sent > *gone + TTL + TOLERANCE => {
                Err(format!("{name} named {:?} after it was gone", sent - *gone))
            }
            Some(gone) => Ok(gone.map_or(Duration::ZERO, |gone| sent.saturating_duration_since(gone))),
        }
    }
}

/// What the run saw, summed over every task.
#[derive(Debug, Default)]
struct Tally {
    picks: u64,
    errors: BTreeMap<String, u64>,
    violations: Vec<String>,
    /// The longest a backend had been gone when a pick still named it.
    latest_after_gone: Duration,
    joined: u64,
    left: BTreeMap<String, u64>,
}

type Shared<T> = Arc<Mutex<T>>;

/// The dispatcher process, killed if the test fails.
struct Dispatcher {
    child: Child,
    addr: String,
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_dispatcher() -> Dispatcher {
    let ttl = format!("{}ms", TTL.as_millis());
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadwise"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off", "--ttl", &ttl])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().unwrap();
    let (found, addr) = std::sync::mpsc::channel();
    // Reads every log line, so the dispatcher never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.contains("listening").then(|| line.rsplit("addr=").next()).flatten() {
                let _ = found.send(addr.trim().to_owned());
            }
        }
    });
    let addr = addr.recv_timeout(Duration::from_secs(10)).expect("serve listens");
    Dispatcher { child, addr }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the dispatcher is running");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the dispatcher is running").count()
}

/// One backend: heartbeats until its lifetime ends, then leaves as `leave` says.
async fn backend(
    addr: String,
    name: String,
    ip: IpField,
    port: u16,
    leave: Leave,
    lifetime: Duration,
    ledger: Arc<Ledger>,
) {
    let Ok(mut stream) = TcpStream::connect(&addr).await else { return };
    let ends = Instant::now() + lifetime;
    let mut mem = 50u8;
    let mut last_sent = Instant::now();
    ledger.joined(&name);
    while Instant::now() < ends {
        mem = mem.wrapping_add(7) % 90 + 5;
        last_sent = Instant::now();
        if stream.write_all(&Heartbeat { mem, ip, port }.encode()).await.is_err() {
            break;
        }
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
    match leave {
        Leave::Close => ledger.left(&name, Instant::now()),
        Leave::Reset => {
            ledger.left(&name, Instant::now());
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
        Leave::Silent => {
            ledger.left(&name, last_sent);
            tokio::time::sleep(TTL * 2).await;
        }
    }
    drop(stream);
}

/// Starts a new backend every [`JOIN_EVERY`] until `stop`, each with a random
/// lifetime and way of leaving; `initial` of them at once.
async fn churn(
    addr: String,
    initial: usize,
    ledger: Arc<Ledger>,
    tally: Shared<Tally>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let mut rng = StdRng::seed_from_u64(1);
    let mut next = 0u32;
    let mut start_one = |rng: &mut StdRng, lifetime: Duration| {
        next += 1;
        let ip = format!("10.{}.{}.{}", next >> 16 & 0xff, next >> 8 & 0xff, next & 0xff);
        let port = 1000 + (next % 60_000) as u16;
        let leave = [Leave::Close, Leave::Reset, Leave::Silent][rng.random_range(0..3)];
        let mut tally = tally.lock().unwrap();
        tally.joined += 1;
        *tally.left.entry(format!("{leave:?}")).or_default() += 1;
        let task = backend(
            addr.clone(),
            format!("{ip}:{port}"),
            IpField::from_text(&ip).unwrap(),
            port,
            leave,
            lifetime,
            Arc::clone(&ledger),
        );
        tracker.spawn(task);
    };
    for _ in 0..initial {
        let lifetime = Duration::from_millis(rng.random_range(LIFETIME_MS));
        start_one(&mut rng, lifetime);
    }
    while !stop.is_cancelled() {
        tokio::select! {
            () = tokio::time::sleep(JOIN_EVERY) => {}
            () = stop.cancelled() => break,
        }
        let lifetime = Duration::from_millis(rng.random_range(LIFETIME_MS));
        start_one(&mut rng, lifetime);
    }
}

/// Picks until `stop`: a fresh connection per pick, like the original clients, or
/// one connection for many logins.
async fn clients(
    addr: String,
    persistent: bool,
    ledger: Arc<Ledger>,
    tally: Shared<Tally>,
    stop: CancellationToken,
) {
    let mut stream = None;
    while !stop.is_cancelled() {
        let sent = Instant::now();
        let outcome = if persistent {
            login_on(&mut stream, &addr).await
        } else {
            client::pick(&addr, PICK_TIMEOUT).await
        };
        record(&tally, &ledger, outcome, sent);
        tokio::time::sleep(PAUSE_BETWEEN_PICKS).await;
    }
}

fn record(
    tally: &Shared<Tally>,
    ledger: &Ledger,
    outcome: Result<client::Assigned, PickError>,
    sent: Instant,
) {
    let mut tally = tally.lock().unwrap();
    tally.picks += 1;
    match outcome {
        Ok(assigned) => match ledger.judge(&assigned.to_string(), sent) {
            Ok(gone_for) => tally.latest_after_gone = tally.latest_after_gone.max(gone_for),
            Err(violation) => tally.violations.push(violation),
        },
        Err(error) => *tally.errors.entry(error_kind(&error)).or_default() += 1,
    }
}

async fn login_on(stream: &mut Option<TcpStream>, addr: &str) -> Result<client::Assigned, PickError> {
    if stream.is_none() {
        *stream = Some(TcpStream::connect(addr).await?);
    }
    let conn = stream.as_mut().unwrap();
    let exchange = async {
        conn.write_all(&LoginRequest { timestamp: unix_time_now() }.encode()).await?;
        client::read_reply(conn).await
    };
    let outcome = tokio::time::timeout(PICK_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(PickError::Timeout { server: addr.to_owned(), after: PICK_TIMEOUT }));
    if outcome.as_ref().is_err_and(|error| !error.is_refusal()) {
        *stream = None;
    }
    outcome
}

fn error_kind(error: &PickError) -> String {
    let debug = format!("{error:?}");
    debug.split(['(', ' ', '{']).next().unwrap_or("?").to_owned()
}

/// RSS samples once a second until `stop`.
async fn sample_rss(pid: u32, samples: Shared<Vec<(Instant, u64)>>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        samples.lock().unwrap().push((Instant::now(), rss_kib(pid)));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => {}
        }
    }
}

fn soak_length() -> Duration {
    let secs = std::env::var("LOADWISE_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() {
    let length = soak_length();
    let dispatcher = start_dispatcher().await;
    let pid = dispatcher.child.id();
    let baseline_fds = open_fds(pid);
    let (ledger, tally) = (Arc::new(Ledger::default()), Shared::default());
    let (stop_load, stop_backends) = (CancellationToken::new(), TaskTracker::new());
    let tasks = TaskTracker::new();
    let initial = (LIFETIME_MS.start + LIFETIME_MS.end) as usize / 2 / JOIN_EVERY.as_millis() as usize;
    let churn_task = churn(
        dispatcher.addr.clone(),
        initial,
        Arc::clone(&ledger),
        Arc::clone(&tally),
        stop_load.clone(),
        stop_backends.clone(),
    );
    tasks.spawn(churn_task);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..CLIENTS {
        tasks.spawn(clients(
            dispatcher.addr.clone(),
            i % 2 == 1,
            Arc::clone(&ledger),
            Arc::clone(&tally),
            stop_load.clone(),
        ));
    }
    let rss = Shared::default();
    tasks.spawn(sample_rss(pid, Arc::clone(&rss), stop_load.clone()));
    let started = Instant::now();
    tokio::time::sleep(length).await;

    stop_load.cancel();
    tasks.close();
    tokio::time::timeout(PICK_TIMEOUT * 2, tasks.wait()).await.expect("clients stop");
    stop_backends.close();
    tokio::time::timeout(TTL * 4 + LIFETIME_MS_END, stop_backends.wait()).await.expect("backends leave");
    let fds = wait_for_fds(pid, baseline_fds).await;

    let tally = tally.lock().unwrap();
    let rss = rss.lock().unwrap();
    let (warm, after) = rss_after_warm_up(&rss, started, length);
    let peak = after.iter().copied().max().unwrap_or(warm);
    let last = after.last().copied().unwrap_or(warm);
    eprintln!(
        "soak {length:?}: {} picks, errors {:?}, {} violations, a gone backend named at most {:?} after it left; {} backends joined, left by {:?}; \
         RSS after warm-up {warm} KiB, peak {peak} KiB, end {last} KiB; fds baseline {baseline_fds}, end {fds}",
        tally.picks,
        tally.errors,
        tally.violations.len(),
        tally.latest_after_gone,
        tally.joined,
        tally.left
    );
    assert!(
        tally.violations.is_empty(),
        "picks named gone backends: {:#?}",
        &tally.violations[..tally.violations.len().min(20)]
    );
    assert!(tally.errors.is_empty(), "unexpected errors: {:?}", tally.errors);
    assert!(tally.picks > length.as_secs() * 100, "too few picks to mean anything: {}", tally.picks);
    assert!(peak * 10 <= warm * 11, "RSS grew from {warm} KiB to {peak} KiB after warm-up");
    assert_eq!(fds, baseline_fds, "file descriptors did not return to the baseline");
}

const LIFETIME_MS_END: Duration = Duration::from_millis(LIFETIME_MS.end);

/// The RSS at the end of warm-up (a quarter of the run, at least 5 s) and every
/// sample after it.
fn rss_after_warm_up(samples: &[(Instant, u64)], started: Instant, length: Duration) -> (u64, Vec<u64>) {
    let warm_up = (length / 4).max(Duration::from_secs(5));
    let mut after = samples.iter().filter(|(at, _)| *at >= started + warm_up).map(|(_, kib)| *kib);
    let warm = after.next().unwrap_or_else(|| samples.last().map_or(0, |(_, kib)| *kib));
    (warm, after.collect())
}

/// Waits (up to 5 s) for the dispatcher's descriptors to fall back to `baseline`.
async fn wait_for_fds(pid: u32, baseline: usize) -> usize {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let fds = open_fds(pid);
        if fds <= baseline || Instant::now() >= end {
            return fds;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
