//! What keeps a v2 backend from clients, against the real in-process server: its own
//! health, its clients' failure reports, and its capacity slots.
//!
//! Clients are told apart by their source address, so each client here binds its own
//! loopback address (127.0.0.2, 127.0.0.3, ...). Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use loadwise_core::model::{Cause, Health};
use loadwise_protocol::ticket;
use loadwise_protocol::v2::auth::Secret;
use loadwise_protocol::v2::{
    self, Decoded, Endpoint, FailureReason, FailureReport, Heartbeat, LeaseReport, Message, PickKey,
    PickOutcome, PickReply, PickRequest, Picked, ServiceName, Slots, State,
};
use loadwise_server::ServerConfig;
use loadwise_testkit::*;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

const SECRET: &[u8] = b"the dispatcher's secret, 32 byte";

fn game() -> ServiceName {
    ServiceName::new("game").unwrap()
}

/// A TTL of a minute (a backend heard once stays for the test), no slow start.
fn config() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.dispatch.ttl = Duration::from_secs(60);
    config.dispatch.load.slow_start = Duration::ZERO;
    config
}

/// Backend `backend_id` of `game` at 10.9.0.`backend_id`:7000, at `memory` percent.
fn heartbeat(backend_id: u64, memory: u16, health: v2::Health) -> Heartbeat {
    let addr: SocketAddr = format!("10.9.0.{backend_id}:7000").parse().unwrap();
    Heartbeat {
        health,
        ..v2_heartbeat(game(), backend_id, Endpoint::from_socket_addr(addr).unwrap(), memory)
    }
}

/// A raw v2 connection from a chosen loopback address.
struct Peer {
    stream: TcpStream,
    buf: BytesMut,
}

impl Peer {
    async fn connect_from(server: &TestServer, ip: [u8; 4]) -> Peer {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((ip, 0))).unwrap();
        let stream = within(socket.connect(server.addr)).await.expect("connect");
        Peer { stream, buf: BytesMut::new() }
    }

    async fn send(&mut self, message: Message) {
        send(&mut self.stream, &message.encode().unwrap()).await;
    }

    async fn next(&mut self) -> Message {
        loop {
            if let Some((Decoded::Message(message), consumed)) = v2::decode(&self.buf, 4096).unwrap() {
                let _ = self.buf.split_to(consumed);
                return message;
            }
            let read = within(self.stream.read_buf(&mut self.buf)).await.expect("read");
            assert!(read > 0, "the dispatcher closed the connection");
        }
    }

    async fn pick(&mut self) -> PickOutcome {
        let request =
            PickRequest { request_id: 1, timestamp: unix_now(), service: game(), key: PickKey::NONE };
        self.send(Message::PickRequest(request)).await;
        match self.next().await {
            Message::PickReply(PickReply { outcome, .. }) => outcome,
            other => panic!("expected a PickReply, got {other:?}"),
        }
    }

    async fn picked(&mut self) -> Picked {
        match self.pick().await {
            PickOutcome::Picked(picked) => picked,
            refused => panic!("refused: {refused:?}"),
        }
    }

    async fn report(&mut self, backend_id: u64, ticket: Vec<u8>) {
        let report = FailureReport { backend_id, reason: FailureReason::Refused, service: game(), ticket };
        self.send(Message::FailureReport(report)).await;
    }
}

/// Listed backend `backend_id` of `game`, if it is.
fn listed(server: &TestServer, backend_id: u64) -> Option<loadwise_core::dispatcher::BackendSnapshot> {
    server
        .dispatcher
        .snapshot()
        .into_iter()
        .find(|b| b.backend.v2.as_ref().is_some_and(|d| d.backend_id == backend_id))
}

fn cause(server: &TestServer, backend_id: u64) -> Option<Cause> {
    listed(server, backend_id).and_then(|b| b.hold.standing().cause)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_backend_stays_listed_gets_no_picks_and_comes_back_when_healthy() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let mut backend = Peer::connect_from(&server, [127, 0, 0, 1]).await;
    backend.send(Message::Heartbeat(heartbeat(1, 10, v2::Health::Unhealthy))).await;
    wait_until("listed", || listed(&server, 1).is_some()).await;
    assert_eq!(listed(&server, 1).unwrap().hold.health, Health::Unhealthy);
    assert_eq!(cause(&server, 1), Some(Cause::Unhealthy));
    let mut client = Peer::connect_from(&server, [127, 0, 0, 2]).await;
    assert_eq!(client.pick().await, PickOutcome::Refused(v2::ErrorCode::NO_BACKEND));
    backend.send(Message::Heartbeat(heartbeat(1, 10, v2::Health::Healthy))).await;
    wait_until("healthy", || cause(&server, 1).is_none()).await;
    assert_eq!(client.picked().await.backend_id, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_of_three_clients_sent_there_eject_a_backend_and_strangers_eject_nothing() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let mut dead = Peer::connect_from(&server, [127, 0, 0, 1]).await;
    dead.send(Message::Heartbeat(heartbeat(1, 10, v2::Health::Healthy))).await;
    let mut alive = Peer::connect_from(&server, [127, 0, 0, 1]).await;
    alive.send(Message::Heartbeat(heartbeat(2, 80, v2::Health::Healthy))).await;
    wait_until("both listed", || listed(&server, 1).is_some() && listed(&server, 2).is_some()).await;

    // A client never sent to backend 1 reports it, many times: nothing happens.
    let mut stranger = Peer::connect_from(&server, [127, 0, 0, 9]).await;
    for _ in 0..20 {
        stranger.report(1, Vec::new()).await;
    }
    let not_sent = |s: &loadwise_server::stats::WireSnapshot| s.failures.reports[1][3];
    server.wait_for_wire("20 reports not counted", not_sent, |n| n == 20).await;
    assert_eq!(cause(&server, 1), None);

    // Three clients sent to backend 1 (the least loaded) report it: ejected.
    for n in 2..=4u8 {
        let mut client = Peer::connect_from(&server, [127, 0, 0, n]).await;
        let picked = client.picked().await;
        assert_eq!(picked.backend_id, 1, "the least loaded");
        client.report(picked.backend_id, picked.ticket).await;
        // The dispatcher answers no report: the next frame is the next pick's reply.
        if n < 4 {
            assert_eq!(client.picked().await.backend_id, 1, "not ejected before three clients");
        }
    }
    wait_until("ejected", || cause(&server, 1) == Some(Cause::Ejected)).await;
    let ejected = listed(&server, 1).unwrap();
    assert_eq!(ejected.ejections, 1);
    assert!(ejected.ejected_until.is_some());
    let mut later = Peer::connect_from(&server, [127, 0, 0, 5]).await;
    for _ in 0..10 {
        assert_eq!(later.picked().await.backend_id, 2, "the ejected backend gets no picks");
    }
    let wire = server.wire();
    assert_eq!(wire.failures.ejections[FailureReason::Refused as usize], 1);
    assert_eq!(server.stats().ejections, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejection_ends_on_its_own_and_a_report_with_a_forged_ticket_does_not_count() {
    let _serial = shared_access().await;
    let mut config = config();
    config.connection.secret = Some(Secret::new(SECRET).unwrap());
    config.dispatch.ejection.base_time = Duration::from_millis(300);
    let server = TestServer::start_with(config).await;
    // With a secret, backends register first; the raw peer here uses the server's
    // own path for that: Hello, Challenge, Register.
    let mut backend = Peer::connect_from(&server, [127, 0, 0, 1]).await;
    backend.send(Message::Hello(v2::Hello)).await;
    let Message::Challenge(challenge) = backend.next().await else { panic!("no challenge") };
    let register = v2::Register::signed(SECRET, &challenge.nonce, game(), 1);
    backend.send(Message::Register(register)).await;
    assert!(matches!(backend.next().await, Message::Registered(_)));
    backend.send(Message::Heartbeat(heartbeat(1, 10, v2::Health::Healthy))).await;
    wait_until("listed", || listed(&server, 1).is_some()).await;

    let mut clients = Vec::new();
    for n in 2..=4u8 {
        let mut client = Peer::connect_from(&server, [127, 0, 0, n]).await;
        let picked = client.picked().await;
        assert!(ticket::verify(SECRET, &picked.ticket, &game(), 1, unix_now()).is_ok());
        clients.push((client, picked));
    }
    // Forged tickets: not counted, however many clients send them.
    for (client, picked) in &mut clients {
        let mut forged = picked.ticket.clone();
        forged[20] ^= 1;
        client.report(1, forged).await;
    }
    let bad_ticket = |s: &loadwise_server::stats::WireSnapshot| s.failures.reports[1][7];
    server.wait_for_wire("3 forged tickets", bad_ticket, |n| n == 3).await;
    assert_eq!(cause(&server, 1), None);
    // Their real tickets: ejected, for 300 ms, then back on its own.
    for (client, picked) in &mut clients {
        client.report(1, picked.ticket.clone()).await;
    }
    wait_until("ejected", || cause(&server, 1) == Some(Cause::Ejected)).await;
    let mut later = Peer::connect_from(&server, [127, 0, 0, 5]).await;
    assert_eq!(
        later.pick().await,
        PickOutcome::Refused(v2::ErrorCode::NO_BACKEND),
        "its service's only backend"
    );
    // Its heartbeats do not end the ejection; the sweeper does, when its time is up.
    backend.send(Message::Heartbeat(heartbeat(1, 10, v2::Health::Healthy))).await;
    server.wait_for_stat("the return", |s| s.ejection_returns, |n| n == 1).await;
    assert_eq!(cause(&server, 1), None);
    assert_eq!(later.picked().await.backend_id, 1);
    server.stop().await;
}

/// `heartbeat` with slots: `capacity` places, `in_use` taken, grant `seq` of `total`.
fn slot_heartbeat(backend_id: u64, capacity: u32, in_use: u32, seq: u32, total: u64) -> Heartbeat {
    let slots = Slots { capacity, in_use, grant_seq: seq, grant_total: total };
    Heartbeat { slots: Some(slots), ..heartbeat(backend_id, 10, v2::Health::Healthy) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_backend_gets_no_more_clients_than_its_grant_and_each_heartbeat_is_answered_with_the_count() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let mut backend = Peer::connect_from(&server, [127, 0, 0, 1]).await;
    // A connection's first grant is 0, as the agent sends it until the dispatcher
    // answers; the next one grants 3.
    backend.send(Message::Heartbeat(slot_heartbeat(1, 50, 0, 0, 0))).await;
    assert_eq!(backend.next().await, Message::LeaseReport(LeaseReport { grant_seq: 0, sent_total: 0 }));
    backend.send(Message::Heartbeat(slot_heartbeat(1, 50, 0, 1, 3))).await;
    assert_eq!(backend.next().await, Message::LeaseReport(LeaseReport { grant_seq: 1, sent_total: 0 }));
    // A backend without slots in the slot service gets no clients there.
    let mut plain = Peer::connect_from(&server, [127, 0, 0, 1]).await;
    plain.send(Message::Heartbeat(heartbeat(2, 0, v2::Health::Healthy))).await;
    wait_until("both listed", || listed(&server, 2).is_some()).await;
    assert_eq!(cause(&server, 2), Some(Cause::NoFreePlace), "not eligible in a slot service");
    let mut client = Peer::connect_from(&server, [127, 0, 0, 2]).await;
    for _ in 0..3 {
        assert_eq!(client.picked().await.backend_id, 1);
    }
    assert_eq!(client.pick().await, PickOutcome::Refused(v2::ErrorCode::NO_FREE_PLACE));
    assert_eq!(cause(&server, 1), Some(Cause::NoFreePlace));
    assert_eq!(server.wire().v2_refusals_with(v2::ErrorCode::NO_FREE_PLACE), 1);
    // The next grant raises the total by 2: the answer counts the 3 sent, 2 more go.
    backend.send(Message::Heartbeat(slot_heartbeat(1, 50, 3, 2, 5))).await;
    assert_eq!(backend.next().await, Message::LeaseReport(LeaseReport { grant_seq: 2, sent_total: 3 }));
    wait_until("room again", || cause(&server, 1).is_none()).await;
    for _ in 0..2 {
        assert_eq!(client.picked().await.backend_id, 1);
    }
    assert_eq!(client.pick().await, PickOutcome::Refused(v2::ErrorCode::NO_FREE_PLACE));
    // Drained, it is no backend at all rather than a full one.
    let draining = Heartbeat { state: State::Draining, ..slot_heartbeat(1, 50, 5, 3, 9) };
    backend.send(Message::Heartbeat(draining)).await;
    assert_eq!(backend.next().await, Message::LeaseReport(LeaseReport { grant_seq: 3, sent_total: 5 }));
    wait_until("draining", || cause(&server, 1) == Some(Cause::Agent)).await;
    assert_eq!(client.pick().await, PickOutcome::Refused(v2::ErrorCode::NO_BACKEND));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_backend_on_a_new_connection_starts_a_new_count() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let mut first = Peer::connect_from(&server, [127, 0, 0, 1]).await;
    first.send(Message::Heartbeat(slot_heartbeat(1, 50, 0, 0, 0))).await;
    first.next().await;
    first.send(Message::Heartbeat(slot_heartbeat(1, 50, 0, 1, 10))).await;
    first.next().await;
    let mut client = Peer::connect_from(&server, [127, 0, 0, 2]).await;
    for _ in 0..4 {
        client.picked().await;
    }
    let mut second = Peer::connect_from(&server, [127, 0, 0, 1]).await;
    second.send(Message::Heartbeat(slot_heartbeat(1, 50, 4, 0, 0))).await;
    assert_eq!(second.next().await, Message::LeaseReport(LeaseReport { grant_seq: 0, sent_total: 0 }));
    second.send(Message::Heartbeat(slot_heartbeat(1, 50, 4, 1, 2))).await;
    assert_eq!(second.next().await, Message::LeaseReport(LeaseReport { grant_seq: 1, sent_total: 0 }));
    for _ in 0..2 {
        client.picked().await;
    }
    assert_eq!(client.pick().await, PickOutcome::Refused(v2::ErrorCode::NO_FREE_PLACE));
    server.stop().await;
}
