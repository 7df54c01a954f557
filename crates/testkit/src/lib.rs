//! loadwise-testkit: helpers for the workspace's loopback tests. A dispatcher on
//! `127.0.0.1:0`, a scripted v2 dispatcher, legacy frames as raw bytes, and bounded waits.
//!
//! Every wait in here has a deadline, so a test that goes wrong fails instead of
//! hanging. Frames are written out byte by byte where the legacy format matters, so
//! the tests do not trust the crate's own encoder.
//!
//! # Layout
//!
//! | item | its one job |
//! |---|---|
//! | [`TestServer`] | a dispatcher on an ephemeral loopback port, stopped on demand |
//! | [`Scripted`] | a v2 dispatcher that answers each pick as the test says |
//! | [`heartbeat`], [`login`], [`ERROR_REPLY`], ... | legacy frames written out byte by byte |
//! | [`within`], [`wait_until`], [`DEADLINE`] | bounded waits |
//! | [`shared_access`], [`exclusive_access`] | keeps socket-counting tests apart from the others |
//! | [`TempDir`] | a directory removed when the test ends |
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use loadwise_core::dispatcher::{Dispatcher, StatsSnapshot};
use loadwise_protocol::v2::{
    self, Decoded, Endpoint, ErrorCode, Message, PickOutcome, PickReply, PickRequest, Picked,
};
use loadwise_server::stats::{WireSnapshot, WireStats};
use loadwise_server::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The longest any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The most a flooding client writes before giving up.
const FLOOD_LIMIT: usize = 64 << 20;

/// How often a condition is polled while waiting for the server to notice something.
const POLL_EVERY: Duration = Duration::from_millis(5);

/// Size of a login reply, success or error.
pub const REPLY_LEN: usize = 22;

/// The legacy error reply, exactly: `16 00 01 00 ff ff` and 16 zero bytes.
pub const ERROR_REPLY: [u8; REPLY_LEN] = {
    let mut reply = [0u8; REPLY_LEN];
    reply[0] = 0x16;
    reply[2] = 0x01;
    reply[4] = 0xff;
    reply[5] = 0xff;
    reply
};

/// Tests that count the process's open sockets take this exclusively; every other
/// test holds it shared for its whole body, so their sockets cannot disturb the count.
static SOCKET_COUNT: RwLock<()> = RwLock::const_new(());

/// Shared access for an ordinary test. Bind it first (`let _serial = ...`) so that it
/// is dropped after every socket of the test.
pub async fn shared_access() -> RwLockReadGuard<'static, ()> {
    SOCKET_COUNT.read().await
}

/// Exclusive access, for a test that compares socket counts.
pub async fn exclusive_access() -> RwLockWriteGuard<'static, ()> {
    SOCKET_COUNT.write().await
}

/// A dispatcher serving on an ephemeral loopback port until [`stop`](Self::stop).
pub struct TestServer {
    pub addr: SocketAddr,
    pub dispatcher: Arc<Dispatcher>,
    /// The server's wire counters: connections, protocol errors, v2 refusals.
    pub wire: Arc<WireStats>,
    token: CancellationToken,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server with the default configuration.
    pub async fn start() -> TestServer {
        TestServer::start_with(ServerConfig::default()).await
    }

    /// Starts a server with `config` (its listen address is ignored).
    pub async fn start_with(config: ServerConfig) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        TestServer::start_on(listener, config)
    }

    /// Starts a server on `listener` (an IPv6 one, say) with `config`.
    pub fn start_on(listener: TcpListener, config: ServerConfig) -> TestServer {
        config.validate().expect("the test configuration is valid");
        let addr = listener.local_addr().expect("local addr");
        let server = Server::with_listener(listener, config);
        let (dispatcher, wire) = (server.dispatcher(), server.wire_stats());
        let token = CancellationToken::new();
        let task = tokio::spawn(server.run(token.clone().cancelled_owned()));
        TestServer { addr, dispatcher, wire, token, task }
    }

    /// The dispatcher's counters: heartbeats, picks, evictions.
    pub fn stats(&self) -> StatsSnapshot {
        self.dispatcher.stats().snapshot()
    }

    /// The server's wire counters: connections, protocol errors, v2 refusals.
    pub fn wire(&self) -> WireSnapshot {
        self.wire.snapshot()
    }

    /// A new client connection (with `TCP_NODELAY`, so each write is its own segment).
    pub async fn connect(&self) -> TcpStream {
        let stream = within(TcpStream::connect(self.addr)).await.expect("connect to the test server");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }

    /// Connects and registers a backend with one heartbeat; returns its connection.
    pub async fn register(&self, mem: u8, ip: &str, port: u16) -> TcpStream {
        let mut stream = self.connect().await;
        send(&mut stream, &heartbeat(mem, ip, port)).await;
        self.wait_for_backend(ip, port).await;
        stream
    }

    /// Waits until a backend with this ip and port is in the table.
    pub async fn wait_for_backend(&self, ip: &str, port: u16) {
        let field = ip_field(ip);
        wait_until(&format!("backend {ip}:{port} registered"), || {
            self.dispatcher
                .backends()
                .iter()
                .any(|(_, b)| b.report.legacy.port == port && b.report.legacy.bytes == field)
        })
        .await;
    }

    /// Waits until a counter read from the stats satisfies `ok`.
    pub async fn wait_for_stat(
        &self,
        what: &str,
        read: impl Fn(&StatsSnapshot) -> u64,
        ok: impl Fn(u64) -> bool,
    ) {
        wait_until(what, || ok(read(&self.stats()))).await;
    }

    /// Waits until `read` of the wire counters satisfies `ok`.
    pub async fn wait_for_wire(
        &self,
        what: &str,
        read: impl Fn(&WireSnapshot) -> u64,
        ok: impl Fn(u64) -> bool,
    ) {
        wait_until(what, || ok(read(&self.wire()))).await;
    }

    /// Spawns a client that writes logins as fast as the server takes them and never
    /// reads a reply. Its small socket buffers make the server block on its replies
    /// early. It ends with the error that stopped its writes, or with the byte count
    /// once `FLOOD_LIMIT` (64 MiB) bytes are written.
    pub async fn spawn_flood(&self) -> JoinHandle<std::io::Result<usize>> {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket.set_send_buffer_size(4096).expect("SO_SNDBUF");
        let mut stream = within(socket.connect(self.addr)).await.expect("connect to the test server");
        let chunk = login_now().repeat(5_000);
        tokio::spawn(async move {
            let mut written = 0;
            while written < FLOOD_LIMIT {
                stream.write_all(&chunk).await?;
                written += chunk.len();
            }
            Ok(written)
        })
    }

    /// Waits until the server has answered logins and then no more for 200 ms while
    /// a client floods it: that connection is blocked writing its replies.
    pub async fn wait_until_stalled(&self) {
        let answered = |s: &StatsSnapshot| s.logins_answered + s.logins_no_backend + s.logins_clock_skew;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let before = answered(&self.stats());
            tokio::time::sleep(Duration::from_millis(200)).await;
            if before > 0 && answered(&self.stats()) == before {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for the server to stall");
        }
    }

    /// Shuts the server down and waits for it to finish.
    pub async fn stop(self) {
        self.token.cancel();
        within(self.task).await.expect("the server task finishes without panicking");
    }

    /// Begins shutdown without waiting, returning the server task.
    pub fn cancel(self) -> JoinHandle<()> {
        self.token.cancel();
        self.task
    }
}

/// Runs `future` under [`DEADLINE`], failing the test if it takes longer.
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future).await.expect("operation finished within the deadline")
}

/// Polls `condition` every few milliseconds until it holds; fails after [`DEADLINE`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The 16-byte, NUL-padded ip field for `ip`.
pub fn ip_field(ip: &str) -> [u8; 16] {
    let mut field = [0u8; 16];
    field[..ip.len()].copy_from_slice(ip.as_bytes());
    field
}

/// A heartbeat frame with a raw ip field: `17 00 00 00`, mem, 16 ip bytes, port LE.
pub fn heartbeat_raw(mem: u8, ip: [u8; 16], port: u16) -> Vec<u8> {
    let mut frame = vec![23, 0, 0, 0, mem];
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&port.to_le_bytes());
    frame
}

/// A ready, healthy v2 heartbeat of the default weight: backend `backend_id` of
/// `service` at `endpoint`, reporting `memory` percent and nothing else.
pub fn v2_heartbeat(
    service: v2::ServiceName,
    backend_id: u64,
    endpoint: Endpoint,
    memory: u16,
) -> v2::Heartbeat {
    v2::Heartbeat {
        backend_id,
        service,
        endpoint,
        memory: v2::Percent::from_hundredths(memory * 100),
        cpu: None,
        connections: None,
        weight: v2::DEFAULT_WEIGHT,
        state: v2::State::Ready,
        metrics: Vec::new(),
        health: v2::Health::Healthy,
        slots: None,
    }
}

/// A heartbeat frame for a textual ip.
pub fn heartbeat(mem: u8, ip: &str, port: u16) -> Vec<u8> {
    heartbeat_raw(mem, ip_field(ip), port)
}

/// This machine's clock in unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// A login frame: `0c 00 02 00` and the timestamp as u64 LE.
pub fn login_at(timestamp: u64) -> Vec<u8> {
    let mut frame = vec![12, 0, 2, 0];
    frame.extend_from_slice(&timestamp.to_le_bytes());
    frame
}

/// A login frame stamped with the current time.
pub fn login_now() -> Vec<u8> {
    login_at(unix_now())
}

/// A login stamped a day in the past: always answered with the error reply.
pub fn login_stale() -> Vec<u8> {
    login_at(unix_now() - 86_400)
}

/// The success reply naming a backend: `16 00 02 00`, port LE, the 16 ip bytes.
pub fn success_reply(ip: [u8; 16], port: u16) -> [u8; REPLY_LEN] {
    let mut reply = [0u8; REPLY_LEN];
    reply[..4].copy_from_slice(&[0x16, 0, 2, 0]);
    reply[4..6].copy_from_slice(&port.to_le_bytes());
    reply[6..].copy_from_slice(&ip);
    reply
}

/// The success reply for a textual ip.
pub fn reply_for(ip: &str, port: u16) -> [u8; REPLY_LEN] {
    success_reply(ip_field(ip), port)
}

/// The port named by a success reply; fails on anything else.
pub fn reply_port(reply: &[u8; REPLY_LEN]) -> u16 {
    assert_eq!(reply[..4], [0x16, 0, 2, 0], "a success reply: {reply:02x?}");
    u16::from_le_bytes([reply[4], reply[5]])
}

/// Writes `bytes` in full.
pub async fn send(stream: &mut TcpStream, bytes: &[u8]) {
    within(stream.write_all(bytes)).await.expect("write");
}

/// Reads one 22-byte reply.
pub async fn read_reply(stream: &mut TcpStream) -> [u8; REPLY_LEN] {
    let mut reply = [0u8; REPLY_LEN];
    within(stream.read_exact(&mut reply)).await.expect("read a reply");
    reply
}

/// Sends a login stamped now and reads its reply.
pub async fn login(stream: &mut TcpStream) -> [u8; REPLY_LEN] {
    send(stream, &login_now()).await;
    read_reply(stream).await
}

/// Sends a login stamped `offset` seconds from now and reads the reply. Retries
/// while the second changes during the exchange, so the server's clock read the
/// same second as the stamp and the skew is exactly `offset`.
pub async fn login_with_skew(stream: &mut TcpStream, offset: i64) -> [u8; REPLY_LEN] {
    for _ in 0..10 {
        let before = unix_now();
        let stamp = before.checked_add_signed(offset).expect("timestamp in range");
        send(stream, &login_at(stamp)).await;
        let reply = read_reply(stream).await;
        if unix_now() == before {
            return reply;
        }
    }
    panic!("the clock ticked during every one of 10 login exchanges");
}

/// Waits until the server closes `stream`: a read returns EOF or a reset, and no
/// further data arrives first.
pub async fn expect_closed(stream: &mut TcpStream) {
    let mut byte = [0u8; 1];
    match within(stream.read(&mut byte)).await {
        Ok(0) => {}
        Ok(_) => panic!("expected the server to close, got data {byte:02x?}"),
        Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
        Err(error) => panic!("expected EOF or reset, got {error}"),
    }
}

/// Checks that `stream` receives nothing, not even EOF, for `period`.
pub async fn assert_quiet_for(stream: &mut TcpStream, period: Duration) {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(period, stream.read(&mut byte)).await;
    assert!(read.is_err(), "expected the connection to stay open and quiet, got {read:?} {byte:02x?}");
}

/// Entries of `/proc/self/fd` that are TCP sockets.
///
/// Only TCP sockets are counted: every test runtime the harness starts meanwhile adds
/// descriptors of its own (epoll, eventfd, a duplicate of tokio's signal socket),
/// which say nothing about connections.
pub fn open_tcp_sockets() -> usize {
    let tables: String = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .collect();
    // The tenth column of each row is the socket's inode.
    let tcp_inodes: HashSet<&str> = tables.lines().filter_map(|row| row.split_whitespace().nth(9)).collect();
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned();
            Some(inode)
        })
        .filter(|inode| tcp_inodes.contains(inode.as_str()))
        .count()
}

/// A directory of its own under the system's temporary one, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let unique = format!("loadwise-test-{name}-{}-{}", std::process::id(), rand::random::<u64>());
        let dir = std::env::temp_dir().join(unique);
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to the file `name` in the directory, and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A v2 heartbeat of backend `backend_id` in service `search`: `[2001:db8::7]:9000`,
/// memory 25 %, CPU 50.5 %, 3 connections, weight 200, reporting `state`.
pub fn search_heartbeat(backend_id: u64, state: v2::State, metrics: Vec<v2::Metric>) -> v2::Heartbeat {
    v2::Heartbeat {
        backend_id,
        service: v2::ServiceName::new("search").unwrap(),
        endpoint: v2::Endpoint {
            host: v2::Host::V6("2001:db8::7".parse().unwrap()),
            port: std::num::NonZeroU16::new(9000).unwrap(),
        },
        memory: v2::Percent::from_hundredths(2500),
        cpu: v2::Percent::from_hundredths(5050),
        connections: Some(3),
        weight: std::num::NonZeroU16::new(200).unwrap(),
        state,
        metrics,
        health: v2::Health::Healthy,
        slots: None,
    }
}

/// A v2 dispatcher that answers every PickRequest with `answer(request)`, and records
/// the requests: for testing clients against exact replies.
pub struct Scripted {
    pub addr: String,
    task: JoinHandle<Vec<PickRequest>>,
}

impl Scripted {
    /// Listens on `127.0.0.1:0` and answers `connections` clients, one pick each.
    pub async fn start(answer: fn(&PickRequest) -> PickOutcome, connections: usize) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..connections {
                let (stream, _) = listener.accept().await.unwrap();
                seen.push(answer_one(stream, answer).await);
            }
            seen
        });
        Scripted { addr, task }
    }

    /// The requests received, once every expected client has asked.
    pub async fn requests(self) -> Vec<PickRequest> {
        within(self.task).await.unwrap()
    }
}

async fn answer_one(mut stream: TcpStream, answer: fn(&PickRequest) -> PickOutcome) -> PickRequest {
    let mut buf = BytesMut::new();
    let request = loop {
        if let Some((Decoded::Message(Message::PickRequest(request)), _)) = v2::decode(&buf, 4096).unwrap() {
            break request;
        }
        assert!(stream.read_buf(&mut buf).await.unwrap() > 0, "the client closed before asking");
    };
    let reply = PickReply { request_id: request.request_id, outcome: answer(&request) };
    stream.write_all(&Message::PickReply(reply).encode().unwrap()).await.unwrap();
    request
}

/// A pick of backend 0x1234 at `[2001:db8::9]:7009`, with a two-byte ticket.
pub fn picked_v6(_: &PickRequest) -> PickOutcome {
    let endpoint = Endpoint::from_socket_addr("[2001:db8::9]:7009".parse().unwrap()).unwrap();
    PickOutcome::Picked(Picked { backend_id: 0x1234, endpoint, ticket: vec![0xab, 0xcd] })
}

/// A pick refused: the service is unknown.
pub fn unknown_service(_: &PickRequest) -> PickOutcome {
    PickOutcome::Refused(ErrorCode::UNKNOWN_SERVICE)
}
