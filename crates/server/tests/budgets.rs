//! Connection budgets on loopback: backend, client and pending connections each have
//! their own, client and pending ones a cap per peer address, and a connection that
//! says nothing of what it is is closed after the first-frame timeout.
//!
//! Small budgets are set explicitly (the defaults are held to what they promise by
//! the binary's tests). Other peer addresses are 127.0.0.x sockets bound before
//! connecting. Every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadwise_core::dispatcher::Dispatcher;
use loadwise_protocol::v2::{
    self, Decoded, Endpoint, ErrorCode, Message, PickKey, PickOutcome, PickReply, PickRequest, ServiceName,
};
use loadwise_server::netlist::NetList;
use loadwise_server::stats::{ConnectionKind, ConnectionRefusal, WireStats};
use loadwise_server::{ReloadHandle, Server, ServerConfig};
use loadwise_testkit::*;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// A connection from `source` (a loopback address other than 127.0.0.1, say).
async fn connect_from(server: &TestServer, source: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((source, 0))).expect("bind the source address");
    within(socket.connect(server.addr)).await.expect("connect to the test server")
}

/// Everything the server sends until it closes the connection (a reset counts as a close).
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    match within(stream.read_to_end(&mut received)).await {
        Ok(_) => received,
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => received,
        Err(error) => panic!("reading until the close failed: {error}"),
    }
}

/// The open connections by kind: pending, client, backend.
fn open(server: &TestServer) -> [u64; 3] {
    open_in(&server.wire)
}

fn open_in(wire: &WireStats) -> [u64; 3] {
    let stats = wire.snapshot();
    ConnectionKind::ALL.map(|kind| stats.open(kind))
}

async fn wait_for_open(server: &TestServer, expected: [u64; 3]) {
    wait_for_open_in(&server.wire, expected).await;
}

async fn wait_for_open_in(wire: &WireStats, expected: [u64; 3]) {
    let what = format!("open connections (pending, client, backend) {expected:?}");
    wait_until(&what, || open_in(wire) == expected).await;
}

fn refused(server: &TestServer, reason: ConnectionRefusal) -> u64 {
    server.wire().refused(reason)
}

/// The first v2 message in `bytes`, which must be whole.
fn first_v2_message(bytes: &[u8]) -> Message {
    match v2::decode(bytes, 4096) {
        Ok(Some((Decoded::Message(message), _))) => message,
        other => panic!("not a v2 message: {other:?} from {bytes:02x?}"),
    }
}

fn default_service() -> ServiceName {
    ServiceName::new("default").unwrap()
}

fn v2_heartbeat(backend_id: u64) -> Message {
    let endpoint = Endpoint::from_socket_addr("10.0.9.1:9001".parse().unwrap()).unwrap();
    Message::Heartbeat(loadwise_testkit::v2_heartbeat(default_service(), backend_id, endpoint, 20))
}

fn v2_pick(request_id: u32) -> Vec<u8> {
    let request =
        PickRequest { request_id, timestamp: unix_now(), service: default_service(), key: PickKey::NONE };
    Message::PickRequest(request).encode().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backend_budget_does_not_stop_clients_and_a_full_client_budget_does_not_stop_backends() {
    let _serial = shared_access().await;
    let mut config = ServerConfig { max_client_connections: 2, ..ServerConfig::default() };
    config.dispatch.max_backends = 2;
    let server = TestServer::start_with(config).await;
    let mut first = server.register(10, "10.0.0.1", 1001).await;
    let _second = server.register(20, "10.0.0.2", 1002).await;

    // The backend budget is full: a third backend's heartbeat closes its connection,
    // with no reply (the legacy protocol has none for a heartbeat).
    let mut third = server.connect().await;
    send(&mut third, &heartbeat(0, "10.0.0.3", 1003)).await;
    assert_eq!(read_until_closed(&mut third).await, b"");
    assert_eq!(refused(&server, ConnectionRefusal::BackendLimit), 1);
    assert_eq!(server.dispatcher.backend_count(), 2);

    // Clients are served all the same, up to their own budget.
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut client = server.connect().await;
        assert_eq!(reply_port(&login(&mut client).await) / 1000, 1);
        clients.push(client);
    }
    wait_for_open(&server, [0, 2, 2]).await;
    let mut over = server.connect().await;
    send(&mut over, &login_now()).await;
    assert_eq!(read_until_closed(&mut over).await, ERROR_REPLY);
    assert_eq!(refused(&server, ConnectionRefusal::ClientLimit), 1);

    // With the client budget full, backends still heartbeat (and may log in).
    send(&mut first, &heartbeat(5, "10.0.0.1", 1001)).await;
    assert_eq!(reply_port(&login(&mut first).await) / 1000, 1);
    // A client leaving makes room for the next.
    drop(clients.pop());
    wait_for_open(&server, [0, 1, 2]).await;
    let mut next = server.connect().await;
    assert_eq!(reply_port(&login(&mut next).await) / 1000, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_flood_from_one_address_is_capped_while_another_address_is_served() {
    let _serial = shared_access().await;
    let mut config = ServerConfig { max_connections_per_peer: 4, ..ServerConfig::default() };
    config.connection.first_frame_timeout = Duration::from_secs(600);
    let server = TestServer::start_with(config).await;
    // A backend does not count against its address.
    let _backend = server.register(10, "10.0.0.1", 1001).await;
    let mut flood = Vec::new();
    for _ in 0..4 {
        flood.push(server.connect().await);
    }
    wait_for_open(&server, [4, 0, 1]).await;
    for _ in 0..3 {
        let mut refused_one = server.connect().await;
        expect_closed(&mut refused_one).await;
    }
    assert_eq!(refused(&server, ConnectionRefusal::PeerLimit), 3);
    assert_eq!(server.wire().connections_refused, 3, "refused as they arrived");

    let mut other = connect_from(&server, [127, 0, 0, 2]).await;
    assert_eq!(login(&mut other).await, reply_for("10.0.0.1", 1001));
    // A client counts against its address as well: 127.0.0.1 stays full when one of
    // its pending connections logs in.
    assert_eq!(login(&mut flood[0]).await, reply_for("10.0.0.1", 1001));
    let mut still_refused = server.connect().await;
    expect_closed(&mut still_refused).await;
    drop(flood.pop());
    wait_for_open(&server, [2, 2, 1]).await;
    let mut admitted = server.connect().await;
    assert_eq!(login(&mut admitted).await, reply_for("10.0.0.1", 1001));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_says_nothing_of_what_it_is_is_closed_after_the_first_frame_timeout() {
    let _serial = shared_access().await;
    let timeout = Duration::from_millis(300);
    let mut config = ServerConfig::default();
    config.connection.first_frame_timeout = timeout;
    let server = TestServer::start_with(config).await;
    let _backend = server.register(10, "10.0.0.1", 1001).await;

    let started = Instant::now();
    let mut silent = server.connect().await;
    // Frames that classify nothing (an unknown command, a v2 Hello) do not help.
    let mut chatty = server.connect().await;
    send(&mut chatty, &[8, 0, 9, 0, 0, 0, 0, 0]).await;
    send(&mut chatty, &Message::Hello(v2::Hello).encode().unwrap()).await;
    let mut client = server.connect().await;
    assert_eq!(login(&mut client).await, reply_for("10.0.0.1", 1001));
    expect_closed(&mut silent).await;
    let waited = started.elapsed();
    assert!(waited >= timeout, "closed after {waited:?}");
    let rest = read_until_closed(&mut chatty).await;
    assert!(matches!(first_v2_message(&rest), Message::Challenge(_)), "{rest:02x?}");
    server
        .wait_for_wire(
            "two closed unclassified",
            |s| s.refused(ConnectionRefusal::FirstFrameTimeout),
            |n| n == 2,
        )
        .await;
    // The client, classified at once, stays past the timeout.
    assert_quiet_for(&mut client, timeout).await;
    assert_eq!(login(&mut client).await, reply_for("10.0.0.1", 1001));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_refused_for_its_network_classifies_nothing() {
    let _serial = shared_access().await;
    let mut config = ServerConfig::default();
    config.connection.first_frame_timeout = Duration::from_millis(300);
    config.connection.legacy_heartbeats = NetList::none();
    let server = TestServer::start_with(config).await;
    let mut stranger = server.connect().await;
    send(&mut stranger, &heartbeat(0, "10.0.0.66", 6666)).await;
    server.wait_for_wire("heartbeat refused", |s| s.heartbeats_not_allowed, |n| n == 1).await;
    assert_eq!(open(&server), [1, 0, 0], "still pending");
    assert_eq!(read_until_closed(&mut stranger).await, b"");
    assert_eq!(refused(&server, ConnectionRefusal::FirstFrameTimeout), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_over_the_client_budget_gets_exactly_the_error_reply_then_eof() {
    let _serial = shared_access().await;
    let server =
        TestServer::start_with(ServerConfig { max_client_connections: 1, ..ServerConfig::default() }).await;
    let _backend = server.register(10, "10.0.0.1", 1001).await;
    let mut client = server.connect().await;
    assert_eq!(login(&mut client).await, reply_for("10.0.0.1", 1001));
    // Three logins in one write: one error reply, then the close.
    let mut over = server.connect().await;
    send(&mut over, &[login_now(), login_now(), login_now()].concat()).await;
    assert_eq!(read_until_closed(&mut over).await, ERROR_REPLY);
    assert_eq!(server.stats().logins_answered, 1, "a refused connection's logins are not picks");
    assert_eq!(refused(&server, ConnectionRefusal::ClientLimit), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_peers_over_a_budget_get_status_14_or_error_13_then_eof() {
    let _serial = shared_access().await;
    let mut config = ServerConfig { max_client_connections: 1, ..ServerConfig::default() };
    config.dispatch.max_backends = 1;
    let server = TestServer::start_with(config).await;
    let _backend = server.register(10, "10.0.0.1", 1001).await;
    let mut client = server.connect().await;
    send(&mut client, &v2_pick(1)).await;
    wait_for_open(&server, [0, 1, 1]).await;

    let mut over = server.connect().await;
    send(&mut over, &[v2_pick(7), v2_pick(8)].concat()).await;
    let reply = read_until_closed(&mut over).await;
    let expected = PickReply { request_id: 7, outcome: PickOutcome::Refused(ErrorCode::BUSY) };
    assert_eq!(reply, Message::PickReply(expected).encode().unwrap(), "one reply, then the close");
    assert_eq!(ErrorCode::BUSY.get(), 14);
    assert_eq!(server.wire().v2_refusals_with(ErrorCode::BUSY), 1);

    let mut backend = server.connect().await;
    send(&mut backend, &v2_heartbeat(42).encode().unwrap()).await;
    let reply = read_until_closed(&mut backend).await;
    match first_v2_message(&reply) {
        Message::Error(error) => assert_eq!(error.code, ErrorCode::BACKEND_LIMIT, "{error:?}"),
        other => panic!("expected Error 13, got {other:?}"),
    }
    assert_eq!(refused(&server, ConnectionRefusal::BackendLimit), 1);
    assert_eq!(refused(&server, ConnectionRefusal::ClientLimit), 1);
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connection_that_heartbeats_becomes_a_backend_connection() {
    let _serial = shared_access().await;
    let mut config = ServerConfig { max_connections_per_peer: 1, ..ServerConfig::default() };
    config.dispatch.max_backends = 1;
    let server = TestServer::start_with(config).await;
    let mut both = server.connect().await;
    // No backend yet: the error reply, and the connection is a client's.
    assert_eq!(login(&mut both).await, ERROR_REPLY);
    wait_for_open(&server, [0, 1, 0]).await;
    send(&mut both, &heartbeat(10, "10.0.0.1", 1001)).await;
    server.wait_for_backend("10.0.0.1", 1001).await;
    wait_for_open(&server, [0, 0, 1]).await;
    assert_eq!(login(&mut both).await, reply_for("10.0.0.1", 1001));
    // It no longer counts against its address, so another client from it is served.
    let mut client = server.connect().await;
    assert_eq!(login(&mut client).await, reply_for("10.0.0.1", 1001));
    // A client whose heartbeat finds the backend budget full is closed.
    let mut late = connect_from(&server, [127, 0, 0, 3]).await;
    assert_eq!(login(&mut late).await, reply_for("10.0.0.1", 1001));
    send(&mut late, &heartbeat(0, "10.0.0.2", 1002)).await;
    assert_eq!(read_until_closed(&mut late).await, b"");
    assert_eq!(refused(&server, ConnectionRefusal::BackendLimit), 1);
    assert_eq!(open(&server), [0, 1, 1]);
    server.stop().await;
}

/// A server with its reload handle, on an ephemeral loopback port.
struct Reloadable {
    addr: SocketAddr,
    dispatcher: Arc<Dispatcher>,
    wire: Arc<WireStats>,
    reload: ReloadHandle,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Reloadable {
    async fn start(config: ServerConfig) -> Reloadable {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::with_listener(listener, config);
        let (reload, dispatcher, wire) = (server.reload_handle(), server.dispatcher(), server.wire_stats());
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.run(stop.clone().cancelled_owned()));
        Reloadable { addr, dispatcher, wire, reload, stop, task }
    }

    async fn connect(&self) -> TcpStream {
        within(TcpStream::connect(self.addr)).await.expect("connect to the test server")
    }

    async fn stop(self) {
        self.stop.cancel();
        within(self.task).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_resizes_the_budgets_without_closing_anything() {
    let _serial = shared_access().await;
    let mut config =
        ServerConfig { max_client_connections: 2, max_pending_connections: 2, ..ServerConfig::default() };
    config.connection.first_frame_timeout = Duration::from_secs(600);
    let server = Reloadable::start(config.clone()).await;
    let mut backend = server.connect().await;
    send(&mut backend, &heartbeat(10, "10.0.0.1", 1001)).await;
    wait_until("the backend registered", || server.dispatcher.backend_count() == 1).await;
    let ok = reply_for("10.0.0.1", 1001);
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut client = server.connect().await;
        assert_eq!(login(&mut client).await, ok);
        clients.push(client);
    }
    let mut pending = [server.connect().await, server.connect().await];
    wait_for_open_in(&server.wire, [2, 2, 1]).await;

    // Lowered below what is open: nothing closes, and new ones are refused.
    let lower = ServerConfig { max_client_connections: 1, max_pending_connections: 1, ..config.clone() };
    assert_eq!(server.reload.apply(&lower), Ok(()));
    for client in &mut clients {
        assert_eq!(login(client).await, ok);
    }
    let mut refused_on_accept = server.connect().await;
    expect_closed(&mut refused_on_accept).await;
    send(&mut pending[0], &login_now()).await;
    assert_eq!(read_until_closed(&mut pending[0]).await, ERROR_REPLY);
    wait_for_open_in(&server.wire, [1, 2, 1]).await;
    assert_eq!(server.wire.snapshot().connections_open, 4);

    // Raised: room again, and still nothing closed.
    let higher = ServerConfig { max_client_connections: 4, max_pending_connections: 4, ..config };
    assert_eq!(server.reload.apply(&higher), Ok(()));
    assert_eq!(login(&mut pending[1]).await, ok);
    let mut more = server.connect().await;
    assert_eq!(login(&mut more).await, ok);
    wait_for_open_in(&server.wire, [0, 4, 1]).await;
    // Invalid sizes are refused and change nothing.
    let zero = ServerConfig { max_connections_per_peer: 0, ..ServerConfig::default() };
    assert_eq!(server.reload.apply(&zero).unwrap_err().setting, "max-connections-per-peer");
    let mut fifth = server.connect().await;
    send(&mut fifth, &login_now()).await;
    assert_eq!(read_until_closed(&mut fifth).await, ERROR_REPLY, "still at most 4 clients");
    server.stop().await;
}
