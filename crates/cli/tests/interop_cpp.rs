//! The real `loadwise serve`, with its defaults, against C++ peers written the way the
//! original LoadBanceServer's are (tests/cpp/): packed structs sent as raw memory.
//!
//! The first tests check the peers themselves against the documented bytes, so that
//! the interop tests cannot pass on a peer that speaks the protocol wrongly.

mod cpp;
mod process;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cpp::{First, Mem, Peers};
use process::{DEADLINE, Proc, serve_defaults};

/// The dispatcher's default TTL: a backend silent this long is removed.
const TTL: Duration = Duration::from_secs(3);

/// How late the dispatcher may read a heartbeat that was sent before a backend
/// stopped: the TTL counts from its arrival, not from its sending.
const ARRIVAL_SLACK: Duration = Duration::from_millis(500);

/// Between two logins of a test that watches for a change.
const LOGIN_PACE: Duration = Duration::from_millis(100);

/// The heartbeat of docs/protocol.md's example: mem 20, 10.0.0.2, port 1002.
const DOC_HEARTBEAT: [u8; 23] = [
    0x17, 0x00, 0x00, 0x00, 0x14, 0x31, 0x30, 0x2e, 0x30, 0x2e, 0x30, 0x2e, 0x32, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0xea, 0x03,
];

/// The success reply of docs/protocol.md's example, for 10.0.0.2:1002.
const DOC_REPLY: [u8; 22] = [
    0x16, 0x00, 0x02, 0x00, 0xea, 0x03, 0x31, 0x30, 0x2e, 0x30, 0x2e, 0x30, 0x2e, 0x32, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00,
];

#[test]
fn the_cpp_backend_sends_the_documented_heartbeat() {
    let Some(peers) = cpp::peers("the_cpp_backend_sends_the_documented_heartbeat") else { return };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = peers.backend(addr, "10.0.0.2", 1002, Mem::Fixed(20), First::Now);
    let mut balancer = accept_within(&listener);
    let mut frame = [0u8; 23];
    balancer.read_exact(&mut frame).expect("a whole heartbeat");
    assert_eq!(frame, DOC_HEARTBEAT);
    backend.wait_for_line("heartbeat 1 mem 20");
    backend.signal("TERM");
    backend.wait_for_line("stopped");
}

#[test]
fn the_cpp_backend_reports_a_closed_balancer_instead_of_dying_of_sigpipe() {
    let Some(peers) = cpp::peers("the_cpp_backend_reports_a_closed_balancer_instead_of_dying_of_sigpipe")
    else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut backend =
        peers.backend(listener.local_addr().unwrap(), "10.0.0.2", 1002, Mem::Fixed(20), First::Now);
    drop(accept_within(&listener));
    // The heartbeat after the close draws a reset, the one after it EPIPE.
    assert_eq!(backend.wait_exit(), Some(2), "exit 2, not death by SIGPIPE (no exit code)");
}

#[test]
fn the_cpp_client_sends_the_documented_login_and_reads_a_split_reply() {
    let Some(peers) = cpp::peers("the_cpp_client_sends_the_documented_login_and_reads_a_split_reply") else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn({
        let peers: &'static Peers = peers;
        move || peers.client(addr, &[])
    });
    let mut balancer = accept_within(&listener);
    balancer.set_nodelay(true).unwrap();
    let mut login = [0u8; 12];
    balancer.read_exact(&mut login).expect("a whole login");
    assert_eq!(login[..4], [0x0c, 0x00, 0x02, 0x00]);
    let stamp = u64::from_le_bytes(login[4..].try_into().unwrap());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(stamp.abs_diff(now) <= 5, "time(NULL) in seconds, little-endian: {stamp} against {now}");
    // In three pieces: the client must loop until it has all 22 bytes.
    for piece in [&DOC_REPLY[..3], &DOC_REPLY[3..10], &DOC_REPLY[10..]] {
        balancer.write_all(piece).unwrap();
        balancer.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = client.join().unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout, "10.0.0.2:1002\n");
}

#[test]
fn the_cpp_client_fails_on_a_short_reply_on_silence_and_on_bytes_after_the_reply() {
    let Some(peers) =
        cpp::peers("the_cpp_client_fails_on_a_short_reply_on_silence_and_on_bytes_after_the_reply")
    else {
        return;
    };
    let cases: [(&[u8], bool, i32, &str); 3] = [
        (&DOC_REPLY[..10], true, 3, "closed after 10 of 22 bytes"),
        (&[], false, 4, "timed out"),
        (&[&DOC_REPLY[..], &[0x16]].concat(), false, 6, "unexpected byte 16"),
    ];
    for (sent, then_close, code, message) in cases {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
        let client = std::thread::spawn(move || {
            peers.run_client(&["--junk", "0xffff", "--timeout-ms", "300", &ip, &port])
        });
        let mut balancer = accept_within(&listener);
        let mut request = [0u8; 10 + 12];
        balancer.read_exact(&mut request).expect("the junk frame and the login");
        balancer.write_all(sent).unwrap();
        if then_close {
            drop(balancer);
        }
        let out = client.join().unwrap();
        assert_eq!(out.code, Some(code), "{message}: {out:?}");
        assert!(out.stderr.contains(message), "{message}: {out:?}");
    }
}

#[test]
fn a_cpp_client_gets_the_error_reply_when_there_is_no_backend() {
    let Some(peers) = cpp::peers("a_cpp_client_gets_the_error_reply_when_there_is_no_backend") else {
        return;
    };
    let (_server, addr) = serve_defaults();
    assert_eq!(peers.login(addr), "error");
}

#[test]
fn a_cpp_client_is_sent_to_the_least_loaded_cpp_backend_and_follows_its_load() {
    let Some(peers) = cpp::peers("a_cpp_client_is_sent_to_the_least_loaded_cpp_backend_and_follows_its_load")
    else {
        return;
    };
    let (server, addr) = serve_defaults();
    let mem_file = MemFile::new("least-loaded", 20);
    // The original's timing: the first heartbeat a second after connecting.
    let _b50 = peers.backend(addr, "10.0.0.1", 7001, Mem::Fixed(50), First::AfterOneSecond);
    let b20 = peers.backend(addr, "10.0.0.2", 7002, Mem::File(mem_file.path()), First::AfterOneSecond);
    let _b70 = peers.backend(addr, "10.0.0.3", 7003, Mem::Fixed(70), First::AfterOneSecond);
    wait_registered(&server, &[7001, 7002, 7003]);
    for _ in 0..5 {
        assert_eq!(peers.login(addr), "10.0.0.2:7002");
    }

    mem_file.set(90);
    b20.wait_for_line("mem 90");
    // The heartbeat is on its way; once it is read the 50 % backend has the most room.
    let end = Instant::now() + DEADLINE;
    while peers.login(addr) != "10.0.0.1:7001" {
        assert!(Instant::now() < end, "the 20 % backend's report of 90 % never took effect");
        std::thread::sleep(LOGIN_PACE);
    }
    assert_eq!(peers.login(addr), "10.0.0.1:7001");
}

#[test]
fn a_killed_cpp_backend_is_never_named_after_the_ttl() {
    let Some(peers) = cpp::peers("a_killed_cpp_backend_is_never_named_after_the_ttl") else { return };
    let (server, addr) = serve_defaults();
    let _b50 = peers.backend(addr, "10.0.0.1", 7001, Mem::Fixed(50), First::Now);
    let b20 = peers.backend(addr, "10.0.0.2", 7002, Mem::Fixed(20), First::Now);
    wait_registered(&server, &[7001, 7002]);
    assert_eq!(peers.login(addr), "10.0.0.2:7002");

    b20.signal("KILL");
    let killed = Instant::now();
    // The kernel closes a killed process's socket, and the dispatcher removes its
    // backend at once: from then on, not only after the TTL, it is never named.
    server.wait_for_line("backend removed: connection closed");
    let logins = logins_until(peers, addr, killed + TTL + ARRIVAL_SLACK + Duration::from_secs(1));
    let after_ttl = logins.iter().filter(|(sent, _)| *sent >= killed + TTL + ARRIVAL_SLACK).count();
    assert!(after_ttl >= 3, "too few logins after the TTL to tell: {logins:?}");
    assert_never_named(logins.into_iter(), "10.0.0.2:7002", "10.0.0.1:7001");
}

#[test]
fn a_stopped_cpp_backend_is_never_named_after_the_ttl() {
    let Some(peers) = cpp::peers("a_stopped_cpp_backend_is_never_named_after_the_ttl") else { return };
    let (server, addr) = serve_defaults();
    let _b50 = peers.backend(addr, "10.0.0.1", 7001, Mem::Fixed(50), First::Now);
    let b20 = peers.backend(addr, "10.0.0.2", 7002, Mem::Fixed(20), First::Now);
    wait_registered(&server, &[7001, 7002]);
    assert_eq!(peers.login(addr), "10.0.0.2:7002");

    // Silent, but its connection stays open: only the TTL can remove it.
    b20.signal("STOP");
    let stopped = Instant::now();
    let logins = logins_until(peers, addr, stopped + TTL + ARRIVAL_SLACK + Duration::from_secs(1));
    server.wait_for_line("backend expired: no heartbeat within the TTL");
    let after_ttl = logins.into_iter().filter(|(sent, _)| *sent >= stopped + TTL + ARRIVAL_SLACK);
    assert_never_named(after_ttl, "10.0.0.2:7002", "10.0.0.1:7001");
}

#[test]
fn unknown_commands_from_a_cpp_client_are_skipped_without_a_reply() {
    let Some(peers) = cpp::peers("unknown_commands_from_a_cpp_client_are_skipped_without_a_reply") else {
        return;
    };
    let (server, addr) = serve_defaults();
    let _backend = peers.backend(addr, "10.0.0.2", 7002, Mem::Fixed(20), First::Now);
    wait_registered(&server, &[7002]);
    // Versions 0xff, 3 and 0x7f, and the legacy commands with no meaning to a balancer.
    let unknown: [u16; 6] = [0xffff, 0x0300, 0x7f02, 1, 3, 4];
    for cmd in unknown {
        // The client checks that its first 22 bytes are the login's reply, and that
        // nothing else arrives and the connection stays open for 200 ms after it.
        let out = peers.client(addr, &[cmd]);
        assert!(out.success(), "cmd {cmd:#06x}: {out:?}");
        assert_eq!(out.stdout, "10.0.0.2:7002\n", "cmd {cmd:#06x}");
    }
    let out = peers.client(addr, &unknown);
    assert!(out.success(), "all of them before one login: {out:?}");
    assert_eq!(out.stdout, "10.0.0.2:7002\n");
}

/// Accepts one connection, failing the test if none comes within the deadline.
fn accept_within(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let end = Instant::now() + DEADLINE;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(DEADLINE)).unwrap();
                return stream;
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < end, "no connection within {DEADLINE:?}");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(error) => panic!("accept: {error}"),
        }
    }
}

/// Waits until the dispatcher has logged the registration of a backend on each port.
/// The lines may come in any order.
fn wait_registered(server: &Proc, ports: &[u16]) {
    let mut waiting: Vec<String> = ports.iter().map(|port| format!(":{port} mem=")).collect();
    while !waiting.is_empty() {
        let what = format!("registration of {waiting:?}");
        let found = server.wait_for(&what, |line| {
            let registered = line.contains("backend registered");
            waiting.iter().position(|needle| registered && line.contains(needle.as_str()))
        });
        waiting.swap_remove(found);
    }
}

/// Logs in with the C++ client every [`LOGIN_PACE`] until `end`; returns when each
/// login was sent and what it was answered.
fn logins_until(peers: &Peers, addr: SocketAddr, end: Instant) -> Vec<(Instant, String)> {
    let mut logins = Vec::new();
    while Instant::now() < end {
        let sent = Instant::now();
        logins.push((sent, peers.login(addr)));
        std::thread::sleep(LOGIN_PACE);
    }
    logins
}

/// Every login in `logins` named `other`, not `gone`, and there were some.
fn assert_never_named(logins: impl Iterator<Item = (Instant, String)>, gone: &str, other: &str) {
    let answers: Vec<String> = logins.map(|(_, answer)| answer).collect();
    assert!(answers.len() >= 3, "too few logins to tell: {answers:?}");
    assert!(answers.iter().all(|answer| answer == other), "{gone} named when it should be gone: {answers:?}");
}

/// A file the C++ backend reads its memory figure from before each heartbeat.
struct MemFile(std::path::PathBuf);

impl MemFile {
    fn new(name: &str, mem: u8) -> MemFile {
        let path = std::env::temp_dir().join(format!("loadwise-cpp-{name}-{}", std::process::id()));
        let file = MemFile(path);
        file.set(mem);
        file
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Replaces the figure by a rename, so that no heartbeat reads a half-written file.
    fn set(&self, mem: u8) {
        let partial = self.0.with_extension("partial");
        std::fs::write(&partial, format!("{mem}\n")).unwrap();
        std::fs::rename(&partial, &self.0).unwrap();
    }
}

impl Drop for MemFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
