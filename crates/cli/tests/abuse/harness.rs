//! The stage every attack plays on: the real binary with its defaults on loopback
//! (its open-file limit lowered as an attack needs), a legitimate backend
//! heartbeating and a legitimate client picking throughout, and the dispatcher's
//! descriptors and memory read from `/proc`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loadwise_testkit::{ERROR_REPLY, REPLY_LEN, heartbeat, login_now};

/// The binary attacked: this build's, or another (main's, to compare) named by
/// `LOADWISE_ABUSE_BIN`.
fn binary() -> String {
    std::env::var("LOADWISE_ABUSE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_loadwise").to_owned())
}

/// The longest a legitimate pick may take while an attack runs.
pub const PICK_BOUND: Duration = Duration::from_secs(2);
/// The longest any wait of the harness takes before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// How far the descriptor count may stay above its baseline: the legitimate
/// client's connection of the moment, and one being refused.
pub const FD_SLACK: usize = 4;
/// How much a second round of an attack may grow the resident memory beyond the
/// first: allocators keep what was freed, so rounds are compared, not baselines.
pub const RSS_MARGIN_KB: u64 = 8 * 1024;

/// Whether to print each attack's figures (`LOADWISE_ABUSE_REPORT=1`).
pub fn reporting() -> bool {
    std::env::var_os("LOADWISE_ABUSE_REPORT").is_some()
}

/// Lets this process open as many sockets as its hard limit allows: the attacks
/// open thousands.
pub fn raise_own_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// A running dispatcher, killed when dropped.
pub struct Dispatcher {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Dispatcher {
    /// `loadwise serve` on its defaults, on ephemeral loopback ports, with the
    /// open-file limit `nofile` (soft and hard) or the inherited one.
    pub fn start(nofile: Option<u64>, extra: &[&str]) -> Dispatcher {
        raise_own_limit();
        let mut command = Command::new(binary());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(extra)
            .env_clear()
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(limit) = nofile {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, limit, limit));
            }
        }
        let mut child = command.spawn().expect("the binary starts");
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut addr, mut admin) = (None, None);
        let end = Instant::now() + DEADLINE;
        while addr.is_none() || admin.is_none() {
            let line = lines
                .recv_timeout(end.saturating_duration_since(Instant::now()))
                .expect("serve logs where it listens");
            let parsed = || line.rsplit("addr=").next().unwrap().trim().parse::<SocketAddr>().ok();
            if line.contains("admin API listening") {
                admin = parsed();
            } else if line.contains("listening") {
                addr = parsed();
            }
        }
        // The rest of the log is read and dropped, so the child never blocks on it.
        std::thread::spawn(move || while lines.recv().is_ok() {});
        Dispatcher { child, addr: addr.unwrap(), admin: admin.unwrap() }
    }

    /// Descriptors the dispatcher holds open now.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, |dir| dir.count())
    }

    /// Its resident memory, in KiB.
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until the descriptor count is back within [`FD_SLACK`] of `baseline`;
    /// returns the count reached, or panics naming it.
    pub fn settle_fds(&self, baseline: usize, what: &str) -> usize {
        let end = Instant::now() + DEADLINE;
        loop {
            let fds = self.fds();
            if fds <= baseline + FD_SLACK {
                return fds;
            }
            assert!(
                Instant::now() < end,
                "{what}: {fds} descriptors open {DEADLINE:?} later, baseline {baseline}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection from `source` (any address of 127/8), so that a legitimate peer is
/// not counted with an attacker from 127.0.0.1.
pub fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&to.into(), DEADLINE)?;
    Ok(socket.into())
}

/// The legitimate peers: a backend that heartbeats every half second and a client
/// that picks every 20 ms, each from an address of its own.
pub struct Legitimate {
    stop: Arc<AtomicBool>,
    picks: Arc<Mutex<Vec<Option<Duration>>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Legitimate {
    pub fn start(dispatcher: &Dispatcher) -> Legitimate {
        let stop = Arc::new(AtomicBool::new(false));
        let picks = Arc::new(Mutex::new(Vec::new()));
        let addr = dispatcher.addr;
        let backend = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut stream =
                    connect_from(Ipv4Addr::new(127, 0, 0, 3), addr).expect("the backend connects");
                while !stop.load(Ordering::Relaxed) {
                    if stream.write_all(&heartbeat(20, "127.0.0.3", 9000)).is_err() {
                        stream =
                            connect_from(Ipv4Addr::new(127, 0, 0, 3), addr).expect("the backend reconnects");
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        };
        let client = {
            let (stop, picks) = (Arc::clone(&stop), Arc::clone(&picks));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let answered = pick_once(addr);
                    picks.lock().unwrap().push(answered);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let legitimate = Legitimate { stop, picks, threads: vec![backend, client] };
        // The backend's first heartbeat is in before anything is measured.
        let end = Instant::now() + DEADLINE;
        while !legitimate.take_picks().iter().any(Option::is_some) {
            assert!(Instant::now() < end, "no legitimate pick answered before the attack");
            std::thread::sleep(Duration::from_millis(50));
        }
        legitimate
    }

    /// The picks made since the last call: their time, or `None` for a failure.
    pub fn take_picks(&self) -> Vec<Option<Duration>> {
        std::mem::take(&mut *self.picks.lock().unwrap())
    }
}

impl Drop for Legitimate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One legacy login from 127.0.0.2; its time if a reply came within [`PICK_BOUND`].
fn pick_once(addr: SocketAddr) -> Option<Duration> {
    let start = Instant::now();
    let mut stream = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr).ok()?;
    stream.set_read_timeout(Some(PICK_BOUND)).ok()?;
    stream.write_all(&login_now()).ok()?;
    let mut reply = [0u8; REPLY_LEN];
    stream.read_exact(&mut reply).ok()?;
    // The error reply is no pick.
    (reply != ERROR_REPLY).then(|| start.elapsed())
}

/// What one round of an attack did to the legitimate peers and the dispatcher.
#[derive(Debug, Default)]
pub struct Round {
    pub answered: usize,
    pub failed: usize,
    pub p99: Duration,
    pub peak_fds: usize,
    pub fds_after: usize,
    pub rss_kb: u64,
}

impl Round {
    /// Summarises `picks` made while the attack ran.
    pub fn of(picks: &[Option<Duration>]) -> Round {
        let mut times: Vec<Duration> = picks.iter().flatten().copied().collect();
        times.sort_unstable();
        let p99 = times.get((times.len() * 99).div_ceil(100).saturating_sub(1)).copied().unwrap_or_default();
        Round { answered: times.len(), failed: picks.len() - times.len(), p99, ..Round::default() }
    }
}

/// Runs `attack` twice against `dispatcher` while `legitimate` picks, and checks
/// after each round that every legitimate pick was answered within the bound and
/// the descriptors came back; after the second, that memory did not grow beyond
/// the first round's plus a margin. Prints the figures when reporting.
pub fn two_rounds(
    name: &str,
    dispatcher: &mut Dispatcher,
    legitimate: &Legitimate,
    mut attack: impl FnMut(&Dispatcher) -> usize,
) {
    std::thread::sleep(Duration::from_millis(200));
    let baseline = dispatcher.fds();
    let mut rounds = Vec::new();
    for round in 1..=2 {
        legitimate.take_picks();
        let peak_fds = attack(dispatcher);
        assert!(dispatcher.alive(), "{name}: the dispatcher died in round {round}");
        let fds_after = dispatcher.settle_fds(baseline, name);
        let mut figures = Round::of(&legitimate.take_picks());
        (figures.peak_fds, figures.fds_after, figures.rss_kb) = (peak_fds, fds_after, dispatcher.rss_kb());
        if reporting() {
            eprintln!(
                "abuse {name} round {round}: picks answered {} failed {}, p99 {:.1} ms; fds baseline {baseline} \
                 peak {} after {}; RSS {} KiB",
                figures.answered,
                figures.failed,
                figures.p99.as_secs_f64() * 1e3,
                figures.peak_fds,
                figures.fds_after,
                figures.rss_kb
            );
        }
        assert!(figures.answered > 0, "{name} round {round}: no legitimate pick answered: {figures:?}");
        assert_eq!(figures.failed, 0, "{name} round {round}: legitimate picks failed: {figures:?}");
        assert!(figures.p99 < PICK_BOUND, "{name} round {round}: {figures:?}");
        rounds.push(figures);
    }
    assert!(
        rounds[1].rss_kb <= rounds[0].rss_kb + RSS_MARGIN_KB,
        "{name}: the second round grew RSS from {} to {} KiB",
        rounds[0].rss_kb,
        rounds[1].rss_kb
    );
}

/// One HTTP/1.1 request with `headers` and `body`; the status and the whole response.
pub fn http(admin: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&admin, DEADLINE).expect("the admin API accepts");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let request = format!("{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(request.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, response)
}
