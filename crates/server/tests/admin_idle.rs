//! Admin connections that make no progress give their slot back; those that do keep it.
//!
//! A client that pipelines requests and never reads the answers, one that stays
//! connected after its answer without asking anything more, and one that never sends
//! the body it announced are each closed within a bound, and the next client is served
//! in their slot; a client that reads slowly but keeps reading, and a keep-alive client
//! that asks again and again, are served to the end.
//!
//! Every test runs a real admin server on `127.0.0.1:0` with a connection cap of one
//! and timeouts of a few hundred milliseconds, and bounds each wait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadwise_core::dispatcher::{DispatchSettings, Dispatcher};
use loadwise_core::model::ConnectionId;
use loadwise_protocol::{Heartbeat, IpField};
use loadwise_server::admin::{AdminConfig, AdminLimits, AdminServer};
use loadwise_server::legacy_report;
use loadwise_testkit::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Every timeout under test: short, so that each test takes a second or two.
const BOUND: Duration = Duration::from_millis(300);

/// Requests a staller sends at once, as the probe of issue 20 did.
const PIPELINED: usize = 1_000;

/// One slot, so that a client holding it locks every other one out.
fn one_slot() -> AdminLimits {
    AdminLimits {
        max_connections: 1,
        header_read_timeout: BOUND,
        request_timeout: BOUND,
        write_timeout: BOUND,
        ..AdminLimits::default()
    }
}

/// A running admin server and the means to stop it.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    async fn start(limits: AdminLimits, dispatcher: Arc<Dispatcher>) -> Running {
        let config = AdminConfig { limits, ..AdminConfig::default() };
        let server = AdminServer::bind("127.0.0.1:0".parse().unwrap(), config, dispatcher, Arc::default())
            .await
            .unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Running { addr, stop, task }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        within(self.task).await.expect("the server stops without panicking");
    }

    /// The value of one unlabelled metric, as `/metrics` shows it.
    async fn metric(&self, name: &str) -> f64 {
        let response = get(self.addr, "/metrics").await.expect("metrics are served");
        let line = response.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' '));
        line.and_then(|value| value.parse().ok()).unwrap_or_else(|| panic!("no {name}:\n{response}"))
    }
}

fn empty_dispatcher() -> Arc<Dispatcher> {
    Arc::new(Dispatcher::with_seed(DispatchSettings::default(), 7))
}

/// A dispatcher with `count` legacy backends, whose list is a large answer.
fn dispatcher_with(count: u64) -> Arc<Dispatcher> {
    let dispatcher = empty_dispatcher();
    let now = std::time::Instant::now();
    for id in 0..count {
        let ip = IpField::from_text(&format!("10.0.{}.{}", id / 250, id % 250 + 1)).unwrap();
        let report = legacy_report(&Heartbeat { mem: 40, ip, port: 7000 }).unwrap();
        dispatcher.heartbeat(ConnectionId(id), &report, now).unwrap();
    }
    dispatcher
}

/// A keep-alive request for `path`.
fn request(addr: SocketAddr, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")
}

/// One request on a connection of its own; `None` when the server closed the
/// connection unanswered (over its cap) or did not answer 200.
async fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = within(TcpStream::connect(addr)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    within(stream.write_all(request.as_bytes())).await.ok()?;
    let mut response = Vec::new();
    within(stream.read_to_end(&mut response)).await.ok()?;
    let response = String::from_utf8(response).expect("UTF-8");
    response.starts_with("HTTP/1.1 200 OK").then_some(response)
}

/// Asks for `/healthz` until it is answered, and says how long that took; fails
/// after `limit`.
async fn served_within(addr: SocketAddr, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if get(addr, "/healthz").await.is_some() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "no client served within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that has sent [`PIPELINED`] requests for `path` at once, on one
/// keep-alive connection with a small receive buffer, and reads nothing.
struct Staller {
    reader: OwnedReadHalf,
    /// Ends with the write half, kept open: dropping it would half-close the connection.
    writer: JoinHandle<OwnedWriteHalf>,
}

impl Staller {
    async fn connect(addr: SocketAddr, path: &str) -> Staller {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = within(socket.connect(addr)).await.unwrap();
        let (reader, mut writer) = stream.into_split();
        let requests = request(addr, path).repeat(PIPELINED);
        // The server stops reading once its answers back up, so this write may only
        // end when the server closes the connection.
        let writer = tokio::spawn(async move {
            let _ = writer.write_all(requests.as_bytes()).await;
            writer
        });
        Staller { reader, writer }
    }

    /// Reads what the buffers held until the server's close, and says how much.
    async fn drain_until_closed(mut self) -> usize {
        let mut taken = 0;
        let mut buf = vec![0; 64 * 1024];
        loop {
            match within(self.reader.read(&mut buf)).await {
                Ok(0) | Err(_) => break,
                Ok(read) => taken += read,
            }
        }
        self.writer.abort();
        taken
    }
}

/// The slot must be held at first (the staller was accepted first) and given back
/// within a few bounds (ten, for a loaded machine).
fn assert_held_then_freed(waited: Duration) {
    assert!(waited >= BOUND / 2, "served after {waited:?}: the slot was not held");
    assert!(waited < 10 * BOUND, "served only after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelining_client_that_never_reads_large_answers_is_closed_and_its_slot_freed() {
    let server = Running::start(one_slot(), empty_dispatcher()).await;
    // The OpenAPI document is some 16 kB: a thousand of them back up at once.
    let staller = Staller::connect(server.addr, "/v1/openapi.json").await;

    assert_held_then_freed(served_within(server.addr, 20 * BOUND).await);
    let taken = staller.drain_until_closed().await;
    let asked = PIPELINED * get(server.addr, "/v1/openapi.json").await.unwrap().len();
    assert!(taken < asked, "all {asked} bytes reached the staller");
    assert_eq!(server.metric("loadwise_admin_write_timeouts_total").await, 1.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelining_client_that_never_reads_small_answers_is_closed_and_its_slot_freed() {
    let server = Running::start(one_slot(), empty_dispatcher()).await;
    // The probe's own requests: a path that does not exist, answered by a short 404,
    // so that every answer fits in the socket buffers and the connection goes idle.
    let staller = Staller::connect(server.addr, "/openapi.json").await;

    assert_held_then_freed(served_within(server.addr, 20 * BOUND).await);
    staller.drain_until_closed().await;
    assert_eq!(server.metric("loadwise_admin_write_timeouts_total").await, 0.0, "idle, not stalled");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_and_its_slot_freed() {
    let server = Running::start(one_slot(), empty_dispatcher()).await;
    let mut idle = within(TcpStream::connect(server.addr)).await.unwrap();
    within(idle.write_all(request(server.addr, "/healthz").as_bytes())).await.unwrap();
    let mut answer = vec![0; 1024];
    let read = within(idle.read(&mut answer)).await.unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200 OK"));

    // Answered, kept alive, then silent: the slot comes back after the header-read timeout.
    assert_held_then_freed(served_within(server.addr, 20 * BOUND).await);
    assert_eq!(within(idle.read(&mut answer)).await.unwrap(), 0, "the idle connection is closed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_comes_is_answered_408_and_its_slot_freed() {
    let server = Running::start(one_slot(), empty_dispatcher()).await;
    let mut silent = within(TcpStream::connect(server.addr)).await.unwrap();
    let addr = server.addr;
    let header = format!(
        "POST /v1/services/default/pick HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    within(silent.write_all(header.as_bytes())).await.unwrap();

    assert_held_then_freed(served_within(server.addr, 20 * BOUND).await);
    let mut answer = String::new();
    within(silent.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_that_keeps_reading_is_served_to_the_end() {
    // Four lists of 5 000 backends, asked for at once: some 6.5 MB, more than the
    // socket buffers of both ends hold on loopback (a send buffer grows to 4 MB at
    // most), so the server waits on the reader again and again.
    const LISTS: usize = 4;
    let write_timeout = 2 * BOUND;
    let limits = AdminLimits { write_timeout, ..one_slot() };
    let server = Running::start(limits, dispatcher_with(5_000)).await;
    let mut slow = within(TcpStream::connect(server.addr)).await.unwrap();
    let list = "/v1/services/default/backends?limit=5000";
    let mut asks = request(server.addr, list).repeat(LISTS - 1);
    asks.push_str(&format!("GET {list} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr));
    within(slow.write_all(asks.as_bytes())).await.unwrap();

    // A read, then a pause of a twelfth of the write timeout, until the server closes.
    let started = Instant::now();
    let mut answers = Vec::new();
    let mut buf = vec![0; 256 * 1024];
    loop {
        match within(slow.read(&mut buf)).await.expect("the server keeps the connection") {
            0 => break,
            read => answers.extend_from_slice(&buf[..read]),
        }
        tokio::time::sleep(write_timeout / 12).await;
    }
    let took = started.elapsed();
    let answers = String::from_utf8(answers).unwrap();
    assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), LISTS, "every list is answered");
    let last = answers.rsplit_once("\r\n\r\n").expect("a header and a body").1;
    let last: serde_json::Value = serde_json::from_str(last).expect("the last list whole");
    assert_eq!(last["backends"].as_array().unwrap().len(), 5_000);
    assert!(took > write_timeout, "read in {took:?}: never slow enough to matter");
    assert_eq!(server.metric("loadwise_admin_write_timeouts_total").await, 0.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_client_is_answered_request_after_request() {
    let server = Running::start(one_slot(), empty_dispatcher()).await;
    let mut client = within(TcpStream::connect(server.addr)).await.unwrap();
    let mut answer = vec![0; 64 * 1024];
    for _ in 0..5 {
        within(client.write_all(request(server.addr, "/readyz").as_bytes())).await.unwrap();
        let read = within(client.read(&mut answer)).await.unwrap();
        let text = std::str::from_utf8(&answer[..read]).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK") && text.ends_with(r#"{"status":"ready"}"#), "{text}");
        // Well within the header-read timeout: the connection stays open.
        tokio::time::sleep(BOUND / 3).await;
    }
    server.stop().await;
}
