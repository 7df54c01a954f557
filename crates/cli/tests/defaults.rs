//! The real `loadwise serve` with no setting but `--listen 127.0.0.1:0` and
//! `--admin-listen off`, through the legacy behaviours existing clients and backends
//! rely on: the defaults are the product.
//!
//! The peers are written byte by byte here (loadwise-testkit's frame helpers), with
//! blocking sockets bounded by timeouts, and every wait has a deadline.

mod process;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loadwise_testkit::{ERROR_REPLY, REPLY_LEN, heartbeat, ip_field, login_now, reply_for};
use process::{DEADLINE, Proc, serve_defaults};

/// The tests with thousands of connections take this, so that their descriptors
/// and their load on the machine do not add up.
static CROWD: Mutex<()> = Mutex::new(());

/// How long a connection must stay quiet to show that nothing was sent on it.
const QUIET: Duration = Duration::from_millis(200);

/// Commands that are neither legacy nor v2: another version in the high byte.
const UNKNOWN_COMMANDS: [u16; 3] = [0xffff, 0x0300, 0x7f02];

#[test]
fn a_login_without_backends_gets_the_exact_error_reply() {
    let (_server, addr) = serve_defaults();
    assert_eq!(login(addr), ERROR_REPLY);
}

#[test]
fn the_first_ten_logins_after_a_heartbeat_go_to_the_least_loaded_backend() {
    let (server, addr) = serve_defaults();
    let _backends = register_three(&server, addr);
    for n in 1..=10 {
        assert_names(login(addr), "10.0.0.2", 7002, &format!("login {n}"));
    }
}

#[test]
fn a_heartbeat_that_changes_the_order_moves_the_next_login() {
    let (server, addr) = serve_defaults();
    let [_b50, mut b20, mut b70] = register_three(&server, addr);
    assert_names(login(addr), "10.0.0.2", 7002, "the first login");

    // A login on the backend's own connection is answered after its heartbeat is
    // read: from that reply on, every login sees the new report.
    b20.write_all(&[heartbeat(80, "10.0.0.2", 7002), login_now()].concat()).unwrap();
    assert_names(read_reply(&mut b20), "10.0.0.1", 7001, "20 % became 80 %: 50 % is the least");
    assert_names(login(addr), "10.0.0.1", 7001, "the next login of another client");

    b70.write_all(&[heartbeat(5, "10.0.0.3", 7003), login_now()].concat()).unwrap();
    assert_names(read_reply(&mut b70), "10.0.0.3", 7003, "70 % became 5 %: it is the least");
    assert_names(login(addr), "10.0.0.3", 7003, "the next login of another client");
}

#[test]
fn a_newcomer_at_1_among_2000_backends_is_named_by_the_next_logins() {
    const BACKENDS: usize = 2_000;
    let _crowd = CROWD.lock().unwrap_or_else(PoisonError::into_inner);
    if !enough_descriptors("a_newcomer_at_1_among_2000_backends_is_named_by_the_next_logins", BACKENDS) {
        return;
    }
    let (server, addr) = serve_defaults();
    let started = Instant::now();
    let crowd = Crowd::connect(&server, addr, BACKENDS);
    eprintln!("{BACKENDS} backends registered in {:?}", started.elapsed());

    let _newcomer = register(addr, 1, "10.9.9.9", 9999);
    server.wait_for_line("backend=10.9.9.9:9999 mem=1");
    for n in 1..=5 {
        assert_names(login(addr), "10.9.9.9", 9999, &format!("login {n} after the newcomer"));
    }
    crowd.stop();
}

#[test]
fn unknown_commands_are_skipped_without_a_reply() {
    let (server, addr) = serve_defaults();
    let _backend = register(addr, 20, "10.0.0.2", 7002);
    server.wait_for_line("backend=10.0.0.2:7002 mem=20");
    for cmd in UNKNOWN_COMMANDS {
        let unknown = frame(cmd, &[0xa5; 6]);
        let both = [unknown.clone(), login_now()].concat();

        let what = format!("cmd {cmd:#06x} then a login, in one write");
        let mut client = connect(addr);
        client.write_all(&both).unwrap();
        assert_names(read_reply(&mut client), "10.0.0.2", 7002, &what);
        assert_quiet(&mut client, &what);

        // Partial frames wait for the rest.
        let what = format!("cmd {cmd:#06x} then a login, one byte per write");
        let mut client = connect(addr);
        for byte in &both {
            client.write_all(std::slice::from_ref(byte)).unwrap();
        }
        assert_names(read_reply(&mut client), "10.0.0.2", 7002, &what);
        assert_quiet(&mut client, &what);

        let what = format!("cmd {cmd:#06x} alone, then a login on the same connection");
        let mut client = connect(addr);
        client.write_all(&unknown).unwrap();
        assert_quiet(&mut client, &what);
        client.write_all(&login_now()).unwrap();
        assert_names(read_reply(&mut client), "10.0.0.2", 7002, &what);
    }
}

#[test]
fn ten_thousand_backends_and_64_simultaneous_clients_are_all_answered() {
    const BACKENDS: usize = 10_000;
    const CLIENTS: usize = 64;
    let _crowd = CROWD.lock().unwrap_or_else(PoisonError::into_inner);
    let name = "ten_thousand_backends_and_64_simultaneous_clients_are_all_answered";
    if !enough_descriptors(name, BACKENDS + CLIENTS) {
        return;
    }
    let (server, addr) = serve_defaults();
    let started = Instant::now();
    let crowd = Crowd::connect(&server, addr, BACKENDS);
    eprintln!("{BACKENDS} backends registered in {:?}", started.elapsed());

    // About 124 backends report 10 %, more than there are clients, and each pick
    // raises the load of the backend it names: every client lands on one of them.
    let replies = simultaneous_logins(&server, addr, CLIENTS);
    eprintln!("{CLIENTS} simultaneous logins answered {:?} after the start", started.elapsed());
    for reply in &replies {
        assert_eq!(reply[..4], [0x16, 0, 2, 0], "a success reply: {reply:02x?}");
        assert_eq!(reply[6..], ip_field("10.0.0.1"), "{reply:02x?}");
        let port = u16::from_le_bytes([reply[4], reply[5]]);
        let index = (0..BACKENDS).find(|&index| crowd_port(index) == port);
        let index = index.unwrap_or_else(|| panic!("port {port} is not one of the backends'"));
        assert_eq!(backend_mem(index), 10, "each client goes to one of the least loaded backends");
    }
    crowd.stop();
}

/// Raises the soft limit on open files to the hard one. False, after saying why
/// `test` is skipped, if it still leaves too few for `connections` sockets and room
/// for the harness. (The dispatcher, a child, inherits the raised limit.)
fn enough_descriptors(test: &str, connections: usize) -> bool {
    let needed = connections as u64 + 256;
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("read and raise RLIMIT_NOFILE");
    if limit < needed {
        // Written past the test harness's capture, so that the skip shows in `cargo test`.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {test} needs {needed} open files, and the hard limit allows only {limit} (ulimit -Hn)"
        );
        return false;
    }
    true
}

/// A connection with the timeouts that keep every read and write bounded.
fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, DEADLINE).expect("connect to the dispatcher");
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// A backend connection that has sent one heartbeat.
fn register(addr: SocketAddr, mem: u8, ip: &str, port: u16) -> TcpStream {
    let mut stream = connect(addr);
    stream.write_all(&heartbeat(mem, ip, port)).unwrap();
    stream
}

/// Backends at 50, 20 and 70 %, each on its own connection, registered.
fn register_three(server: &Proc, addr: SocketAddr) -> [TcpStream; 3] {
    let backends = [
        register(addr, 50, "10.0.0.1", 7001),
        register(addr, 20, "10.0.0.2", 7002),
        register(addr, 70, "10.0.0.3", 7003),
    ];
    check_registrations(server, 3);
    backends
}

/// A frame of `cmd` with `body`: `len` and `cmd` little-endian, then the body.
fn frame(cmd: u16, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(4 + body.len()).expect("a short body");
    [&len.to_le_bytes()[..], &cmd.to_le_bytes(), body].concat()
}

/// Fails unless `reply` is, byte for byte, the success reply naming `ip:port`.
fn assert_names(reply: [u8; REPLY_LEN], ip: &str, port: u16, what: &str) {
    assert!(
        reply == reply_for(ip, port),
        "{what}: expected the reply naming {ip}:{port}, got {}",
        describe(&reply)
    );
}

/// A reply as `IP:PORT` for a success, and its bytes.
fn describe(reply: &[u8; REPLY_LEN]) -> String {
    let ip = &reply[6..];
    let text = String::from_utf8_lossy(&ip[..ip.iter().position(|&b| b == 0).unwrap_or(ip.len())]);
    let port = u16::from_le_bytes([reply[4], reply[5]]);
    match reply[..4] {
        [0x16, 0, 2, 0] => format!("{text}:{port} ({reply:02x?})"),
        _ => format!("{reply:02x?}"),
    }
}

fn read_reply(stream: &mut TcpStream) -> [u8; REPLY_LEN] {
    let mut reply = [0u8; REPLY_LEN];
    stream.read_exact(&mut reply).expect("a whole 22-byte reply within the deadline");
    reply
}

/// One login on a new connection, as the original client does; returns the reply.
fn login(addr: SocketAddr) -> [u8; REPLY_LEN] {
    let mut client = connect(addr);
    client.write_all(&login_now()).unwrap();
    read_reply(&mut client)
}

/// Fails if anything, even EOF, arrives on `stream` within [`QUIET`].
fn assert_quiet(stream: &mut TcpStream, what: &str) {
    stream.set_read_timeout(Some(QUIET)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{what}: expected nothing, got {other:?} {byte:02x?}"),
    }
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
}

/// The memory figure of backend `index` of a crowd: 10 to 90 %.
fn backend_mem(index: usize) -> u8 {
    10 + (index % 81) as u8
}

/// Backends at 10.0.0.1, ports 10000 and up, at 10 to 90 %, each on its own
/// connection, heartbeating every second like real ones until stopped.
struct Crowd {
    streams: Arc<Vec<(usize, TcpStream)>>,
    stop: mpsc::Sender<()>,
    sender: JoinHandle<std::io::Result<()>>,
}

impl Crowd {
    /// Connects `count` backends in rounds, each sending its first heartbeat at once,
    /// and waits for a round to be registered before the next: all come from one
    /// address, and connections the dispatcher has not yet read a frame from count
    /// against its per-peer cap (`max_connections_per_peer`, 256), as they would if
    /// one host opened them all at once.
    fn connect(server: &Proc, addr: SocketAddr, count: usize) -> Crowd {
        const ROUND: usize = 128;
        let mut streams: Vec<(usize, TcpStream)> = Vec::with_capacity(count);
        let mut refreshed = Instant::now();
        for first in (0..count).step_by(ROUND) {
            // Those already registered keep heartbeating, so none expires meanwhile.
            if refreshed.elapsed() >= Duration::from_secs(1) {
                for (index, stream) in &mut streams {
                    stream
                        .write_all(&heartbeat(backend_mem(*index), "10.0.0.1", crowd_port(*index)))
                        .unwrap();
                }
                refreshed = Instant::now();
            }
            let round = first..(first + ROUND).min(count);
            let size = round.len();
            streams.extend(
                round.map(|index| (index, register(addr, backend_mem(index), "10.0.0.1", crowd_port(index)))),
            );
            check_registrations(server, size);
        }
        let streams = Arc::new(streams);
        let (stop, stopped) = mpsc::channel();
        let sender = std::thread::spawn({
            let streams = Arc::clone(&streams);
            move || heartbeat_every_second(&streams, &stopped)
        });
        Crowd { streams, stop, sender }
    }

    /// Stops the heartbeats and checks that every one of them was written.
    fn stop(self) {
        drop(self.stop);
        self.sender.join().expect("the heartbeat sender ends").expect("every heartbeat is written");
        drop(self.streams);
    }
}

/// Writes a heartbeat on every stream once a second, until `stopped` says so.
fn heartbeat_every_second(
    streams: &[(usize, TcpStream)],
    stopped: &mpsc::Receiver<()>,
) -> std::io::Result<()> {
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_secs(1)) {
        for (index, mut stream) in streams.iter().map(|(index, stream)| (*index, stream)) {
            stream.write_all(&heartbeat(backend_mem(index), "10.0.0.1", crowd_port(index)))?;
        }
    }
    Ok(())
}

/// The port backend `index` of a crowd serves clients on.
fn crowd_port(index: usize) -> u16 {
    u16::try_from(10_000 + index).expect("a port")
}

/// Waits until `count` backends are registered, and checks that no connection or
/// heartbeat was refused meanwhile.
fn check_registrations(server: &Proc, count: usize) {
    let lines = server.wait_for_count("backend registered", count, Duration::from_secs(60));
    let refused: Vec<&String> =
        lines.iter().filter(|line| line.contains("refused") || line.contains("limit reached")).collect();
    assert!(refused.is_empty(), "refusals: {refused:#?}");
}

/// `count` clients, each on its own connection, send their login at the same moment;
/// returns their replies. Fails, quoting the dispatcher's warnings, unless all are
/// answered.
fn simultaneous_logins(server: &Proc, addr: SocketAddr, count: usize) -> Vec<[u8; REPLY_LEN]> {
    let start = Arc::new(Barrier::new(count));
    let clients: Vec<_> = (0..count)
        .map(|_| {
            let mut client = connect(addr);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                client.write_all(&login_now())?;
                let mut reply = [0u8; REPLY_LEN];
                client.read_exact(&mut reply).map(|()| reply)
            })
        })
        .collect();
    let (replies, failures): (Vec<_>, Vec<_>) =
        clients.into_iter().map(|client| client.join().expect("a client thread")).partition(Result::is_ok);
    if !failures.is_empty() {
        let warnings: Vec<String> =
            server.pending_lines().into_iter().filter(|line| line.contains("WARN")).collect();
        panic!(
            "{} of {count} clients got no reply, the first: {:?}; the dispatcher's warnings: {warnings:#?}",
            failures.len(),
            failures[0]
        );
    }
    replies.into_iter().map(Result::unwrap).collect()
}
