//! The dispatcher speaking protocol v2 on loopback: services, draining, authenticated
//! registration, tickets, IPv6, refusals, weights and scoring, against the real
//! in-process server.
//!
//! Backends are raw v2 frames where the bytes matter and the library agent where the
//! behaviour of a real backend does. Every wait is bounded (`loadwise_testkit::within`,
//! `loadwise_testkit::wait_until`); nothing sleeps for a guessed time. Each server has a TTL of a
//! minute and no slow start, so a backend heard once stays put for the whole test and
//! every pick weighs the same.

use std::collections::HashMap;
use std::num::NonZeroU16;
use std::time::Duration;

use bytes::BytesMut;
use loadwise_agent::{AgentConfig, ProbeError, Secret};
use loadwise_client::{self as client, PickError};
use loadwise_core::dispatcher::{BackendSnapshot, DispatchSettings};
use loadwise_core::registry::BackendId;
use loadwise_core::selection::{BackendState, Policy};
use loadwise_protocol::config::ConfigError;
use loadwise_protocol::ticket;
use loadwise_protocol::v2::{
    self, Challenge, Decoded, Endpoint, ErrorCode, ErrorMessage, Heartbeat, Message, Percent, PickKey,
    PickOutcome, PickReply, PickRequest, Picked, Register, Registered, ServiceName, State,
};
use loadwise_server::ServerConfig;
use loadwise_testkit::*;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SECRET: &[u8] = b"the dispatcher's secret, 32 byte";
const OTHER_SECRET: &[u8] = b"not the dispatcher's secret, 32b";

/// The frame limit the replies are decoded with: the dispatcher's default.
const V2_LIMIT: u16 = 4096;

/// How long a client pick may take before it fails.
const PICK_TIMEOUT: Duration = Duration::from_secs(5);

fn service(name: &str) -> ServiceName {
    ServiceName::new(name).expect("a valid service name")
}

fn endpoint(addr: &str) -> Endpoint {
    Endpoint::from_socket_addr(addr.parse().expect("a socket address")).expect("a port above 0")
}

/// Defaults, except a TTL of a minute (a backend heard once stays for the whole test)
/// and no slow start (every pick adds the same to a backend's load).
fn config() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.dispatch.ttl = Duration::from_secs(60);
    config.dispatch.load.slow_start = Duration::ZERO;
    config
}

/// [`config`] with a secret, so backends must register and picks carry tickets.
fn config_with_secret() -> ServerConfig {
    let mut config = config();
    config.connection.secret = Some(Secret::new(SECRET).unwrap());
    config
}

/// A ready v2 heartbeat of weight 100 reporting `memory` percent and nothing else.
fn heartbeat(service_name: &str, backend_id: u64, addr: &str, memory: u16) -> Heartbeat {
    loadwise_testkit::v2_heartbeat(service(service_name), backend_id, endpoint(addr), memory)
}

/// A raw v2 connection to the dispatcher: frames out, messages in.
struct Peer {
    stream: TcpStream,
    buf: BytesMut,
    next_request_id: u32,
}

impl Peer {
    async fn connect(server: &TestServer) -> Peer {
        Peer { stream: server.connect().await, buf: BytesMut::new(), next_request_id: 1 }
    }

    async fn send(&mut self, message: Message) {
        self.send_raw(&message.encode().expect("a valid message")).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        send(&mut self.stream, bytes).await;
    }

    async fn heartbeat(&mut self, heartbeat: Heartbeat) {
        self.send(Message::Heartbeat(heartbeat)).await;
    }

    /// The next message the dispatcher sent; fails if it closes first.
    async fn next(&mut self) -> Message {
        loop {
            if let Some((decoded, consumed)) = v2::decode(&self.buf, V2_LIMIT).expect("a valid v2 frame") {
                let _ = self.buf.split_to(consumed);
                match decoded {
                    Decoded::Message(message) => return message,
                    other => panic!("the dispatcher sent {other:?}"),
                }
            }
            let read = within(self.stream.read_buf(&mut self.buf)).await.expect("read");
            assert!(read > 0, "the dispatcher closed the connection; {} bytes left over", self.buf.len());
        }
    }

    /// The next message, which must be an Error with `code`.
    async fn expect_error(&mut self, code: ErrorCode) -> ErrorMessage {
        match self.next().await {
            Message::Error(error) if error.code == code => error,
            other => panic!("expected Error {}, got {other:?}", code.get()),
        }
    }

    /// The dispatcher closes the connection with nothing more to say.
    async fn expect_closed(&mut self) {
        assert!(self.buf.is_empty(), "unread bytes before the close: {:02x?}", &self.buf[..]);
        expect_closed(&mut self.stream).await;
    }

    /// Hello, then the Challenge's nonce.
    async fn hello(&mut self) -> v2::auth::Nonce {
        self.send(Message::Hello(v2::Hello)).await;
        match self.next().await {
            Message::Challenge(Challenge { nonce, .. }) => nonce,
            other => panic!("expected a Challenge, got {other:?}"),
        }
    }

    /// Hello, Challenge, Register signed with `secret`, Registered.
    async fn register(&mut self, secret: &[u8], service_name: &str, backend_id: u64) {
        let nonce = self.hello().await;
        self.send(Message::Register(Register::signed(secret, &nonce, service(service_name), backend_id)))
            .await;
        assert_eq!(self.next().await, Message::Registered(Registered { backend_id }));
    }

    /// Sends a PickRequest stamped now and returns its reply's outcome.
    async fn pick(&mut self, service_name: &str) -> PickOutcome {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let request = PickRequest {
            request_id,
            timestamp: unix_now(),
            service: service(service_name),
            key: PickKey::NONE,
        };
        self.send(Message::PickRequest(request)).await;
        match self.next().await {
            Message::PickReply(PickReply { request_id: answered, outcome }) => {
                assert_eq!(answered, request_id, "the reply answers another request");
                outcome
            }
            other => panic!("expected a PickReply, got {other:?}"),
        }
    }

    /// A pick that must name a backend.
    async fn pick_backend(&mut self, service_name: &str) -> Picked {
        match self.pick(service_name).await {
            PickOutcome::Picked(picked) => picked,
            PickOutcome::Refused(code) => panic!("a pick of {service_name} was refused with {}", code.get()),
        }
    }

    /// `n` picks of `service_name`, counted by the backend id each names.
    async fn pick_counts(&mut self, service_name: &str, n: usize) -> HashMap<u64, usize> {
        let mut counts = HashMap::new();
        for _ in 0..n {
            *counts.entry(self.pick_backend(service_name).await.backend_id).or_default() += 1;
        }
        counts
    }
}

/// Connects, sends `heartbeat` without registering, and waits until it is listed.
async fn v2_backend(server: &TestServer, heartbeat: Heartbeat) -> Peer {
    let (service_name, backend_id) = (heartbeat.service.clone(), heartbeat.backend_id);
    let mut peer = Peer::connect(server).await;
    peer.heartbeat(heartbeat).await;
    wait_for_v2(server, service_name.as_str(), backend_id).await;
    peer
}

/// The listing of the v2 backend that chose `backend_id` in `service_name`.
fn find_v2(server: &TestServer, service_name: &str, backend_id: u64) -> Option<BackendSnapshot> {
    server.dispatcher.snapshot().into_iter().find(|b| {
        b.backend
            .v2
            .as_ref()
            .is_some_and(|detail| detail.backend_id == backend_id && detail.service.as_str() == service_name)
    })
}

/// The dispatcher's id of a listed v2 backend.
fn dispatcher_id(server: &TestServer, service_name: &str, backend_id: u64) -> BackendId {
    find_v2(server, service_name, backend_id).expect("the backend is listed").id
}

async fn wait_for_v2(server: &TestServer, service_name: &str, backend_id: u64) {
    wait_until(&format!("v2 backend {backend_id} of {service_name} listed"), || {
        find_v2(server, service_name, backend_id).is_some()
    })
    .await;
}

/// Waits until the v2 backend is listed in `state`.
async fn wait_for_state(server: &TestServer, service_name: &str, backend_id: u64, state: BackendState) {
    wait_until(&format!("backend {backend_id} {state:?}"), || {
        find_v2(server, service_name, backend_id).is_some_and(|b| b.state == state)
    })
    .await;
}

/// Waits until the dispatcher has noticed that one of its connections closed.
async fn wait_for_open_connections(server: &TestServer, open: u64) {
    server.wait_for_wire("open connections", |s| s.connections_open, |n| n == open).await;
}

/// A pick through the library client, as a v2 client makes it.
async fn client_pick(server: &TestServer, service_name: &str) -> Result<Picked, PickError> {
    within(client::pick_service(&server.addr.to_string(), &service(service_name), PICK_TIMEOUT)).await
}

fn assert_declined(result: Result<Picked, PickError>, code: ErrorCode) {
    match result {
        Err(PickError::Declined(declined)) if declined == code => {}
        other => panic!("expected a pick declined with status {}, got {other:?}", code.get()),
    }
}

/// A library agent running until [`stop`](Self::stop), its state following a watch.
struct Agent {
    backend_id: u64,
    state: watch::Sender<State>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), ConfigError>>,
}

impl Agent {
    /// An agent reporting `memory` percent, every hour: after its first heartbeat,
    /// only a change of state sends another.
    fn start(config: AgentConfig, memory: u8) -> Agent {
        let config = AgentConfig { interval: Duration::from_secs(3600), ..config };
        let backend_id = config.backend_id;
        let (state, watched) = watch::channel(State::Ready);
        let stop = CancellationToken::new();
        let probe = move || -> Result<u8, ProbeError> { Ok(memory) };
        let run = loadwise_agent::run_with_state(config, probe, watched, stop.clone().cancelled_owned());
        Agent { backend_id, state, stop, task: tokio::spawn(run) }
    }

    /// A v2 agent of `service_name` advertising `advertise`, reporting to `server`.
    fn v2(server: &str, advertise: &str, service_name: &str, memory: u8) -> Agent {
        let config = AgentConfig::new(server, advertise.parse().unwrap()).v2(service(service_name));
        Agent::start(config, memory)
    }

    async fn stop(self) {
        self.stop.cancel();
        within(self.task)
            .await
            .expect("the agent task finishes")
            .expect("the agent's configuration is valid");
    }
}

// 1. Legacy and v2 on one port.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_and_v2_backends_share_the_default_pool_and_other_services_stay_out_of_it() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let addr = server.addr.to_string();
    let _legacy_backend = server.register(20, "10.0.0.2", 1002).await;
    let agent = Agent::v2(&addr, "10.0.0.3:1003", "default", 20);
    wait_for_v2(&server, "default", agent.backend_id).await;
    // An idle backend of another service: in the default pool, it would take every pick.
    let game = Agent::v2(&addr, "10.0.0.9:1009", "game", 0);
    wait_for_v2(&server, "game", game.backend_id).await;

    // Equal loads: the picks alternate, and each legacy reply names one of the two,
    // byte for byte.
    let (legacy_reply, v2_reply) = (reply_for("10.0.0.2", 1002), reply_for("10.0.0.3", 1003));
    let mut client = server.connect().await;
    let mut seen = (0, 0);
    for _ in 0..40 {
        let reply = login(&mut client).await;
        if reply == legacy_reply {
            seen.0 += 1;
        } else if reply == v2_reply {
            seen.1 += 1;
        } else {
            panic!("a legacy login got {reply:02x?}");
        }
    }
    assert!(seen.0 > 0 && seen.1 > 0, "legacy logins named only one backend of the pool: {seen:?}");

    // v2 picks of the default service name both: the legacy backend by the
    // dispatcher's id, the v2 one by the id it chose.
    let legacy_id = server.dispatcher.snapshot().iter().find(|b| b.backend.v2.is_none()).unwrap().id.0;
    let mut picker = Peer::connect(&server).await;
    let mut named = HashMap::new();
    for _ in 0..20 {
        let picked = picker.pick_backend("default").await;
        *named.entry((picked.backend_id, picked.endpoint.to_string())).or_insert(0) += 1;
    }
    let expected = [(legacy_id, "10.0.0.2:1002".to_owned()), (agent.backend_id, "10.0.0.3:1003".to_owned())];
    assert!(named.keys().all(|key| expected.contains(key)), "{named:?}");
    assert_eq!(named.len(), 2, "v2 picks of the default service named only {named:?}");
    // The library client too.
    let picked = client_pick(&server, "default").await.unwrap();
    assert!(expected.contains(&(picked.backend_id, picked.endpoint.to_string())), "{picked:?}");
    assert!(picked.ticket.is_empty(), "no secret, no ticket");
    assert_eq!(client_pick(&server, "game").await.unwrap().endpoint.to_string(), "10.0.0.9:1009");

    game.stop().await;
    agent.stop().await;
    server.stop().await;
}

// 2. Services are isolated.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_is_served_only_by_its_own_backends() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let _game_1 = v2_backend(&server, heartbeat("game", 1, "10.1.0.1:7001", 30)).await;
    let _game_2 = v2_backend(&server, heartbeat("game", 2, "10.1.0.2:7002", 40)).await;
    // Below both game backends, so a leak from one pool to the other would show at once.
    let chat = v2_backend(&server, heartbeat("chat", 3, "10.2.0.3:7003", 5)).await;

    let mut picker = Peer::connect(&server).await;
    let game = picker.pick_counts("game", 200).await;
    assert!(game.keys().all(|id| [1, 2].contains(id)), "game picks: {game:?}");
    assert_eq!(game.len(), 2, "both game backends take picks: {game:?}");
    let chat_picks = picker.pick_counts("chat", 200).await;
    assert_eq!(chat_picks, HashMap::from([(3, 200)]));
    for _ in 0..3 {
        let picked = picker.pick_backend("chat").await;
        assert_eq!(picked.endpoint.to_string(), "10.2.0.3:7003");
    }

    assert_eq!(picker.pick("nothing").await, PickOutcome::Refused(ErrorCode::UNKNOWN_SERVICE));
    assert_declined(client_pick(&server, "nothing").await, ErrorCode::UNKNOWN_SERVICE);
    let names = |server: &TestServer| -> Vec<String> {
        server.dispatcher.services().iter().map(|s| s.name.as_str().to_owned()).collect()
    };
    assert_eq!(names(&server), ["chat", "default", "game"]);

    // The only chat backend goes: so does the service.
    drop(chat);
    wait_until("the chat backend removed", || find_v2(&server, "chat", 3).is_none()).await;
    assert_eq!(picker.pick("chat").await, PickOutcome::Refused(ErrorCode::UNKNOWN_SERVICE));
    assert_declined(client_pick(&server, "chat").await, ErrorCode::UNKNOWN_SERVICE);
    assert_eq!(names(&server), ["default", "game"]);
    assert!(matches!(picker.pick("game").await, PickOutcome::Picked(_)));
    // Unknown-service answers are counted as refusals with code 3.
    assert_eq!(server.wire().v2_refusals_with(ErrorCode::UNKNOWN_SERVICE), 4);
    server.stop().await;
}

// 3. Draining, maintenance, and operator holds.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_reports_draining_or_maintenance_gets_no_new_picks_but_stays_listed() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let addr = server.addr.to_string();
    let a = Agent::v2(&addr, "10.3.0.1:7001", "game", 30);
    let b = Agent::v2(&addr, "10.3.0.2:7002", "game", 30);
    wait_for_v2(&server, "game", a.backend_id).await;
    wait_for_v2(&server, "game", b.backend_id).await;
    let mut picker = Peer::connect(&server).await;
    assert_eq!(picker.pick_counts("game", 20).await.len(), 2, "both ready backends take picks");

    a.state.send_replace(State::Draining);
    wait_for_state(&server, "game", a.backend_id, BackendState::Draining).await;
    assert_eq!(picker.pick_counts("game", 50).await, HashMap::from([(b.backend_id, 50)]));
    let listed = find_v2(&server, "game", a.backend_id).expect("a draining backend stays listed");
    assert_eq!(listed.state, BackendState::Draining);
    assert_eq!(listed.backend.v2.as_ref().unwrap().state, BackendState::Draining);

    // Every backend draining: the service is known but has no backend to give.
    b.state.send_replace(State::Draining);
    wait_for_state(&server, "game", b.backend_id, BackendState::Draining).await;
    assert_eq!(picker.pick("game").await, PickOutcome::Refused(ErrorCode::NO_BACKEND));
    assert_declined(client_pick(&server, "game").await, ErrorCode::NO_BACKEND);
    assert_eq!(server.wire().v2_refusals_with(ErrorCode::NO_BACKEND), 2);

    // Maintenance keeps a backend out as draining does; ready brings it back.
    a.state.send_replace(State::Maintenance);
    b.state.send_replace(State::Ready);
    wait_for_state(&server, "game", a.backend_id, BackendState::Maintenance).await;
    wait_for_state(&server, "game", b.backend_id, BackendState::Ready).await;
    assert_eq!(picker.pick_counts("game", 50).await, HashMap::from([(b.backend_id, 50)]));
    assert_eq!(server.dispatcher.snapshot().len(), 2, "both stay listed");
    a.state.send_replace(State::Ready);
    wait_for_state(&server, "game", a.backend_id, BackendState::Ready).await;
    assert_eq!(picker.pick_counts("game", 50).await.len(), 2, "back to ready, it takes picks again");

    a.stop().await;
    b.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_hold_outlasts_a_ready_report_until_the_operator_lifts_it() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let mut held = v2_backend(&server, heartbeat("game", 1, "10.4.0.1:7001", 30)).await;
    let _other = v2_backend(&server, heartbeat("game", 2, "10.4.0.2:7002", 30)).await;
    let id = dispatcher_id(&server, "game", 1);
    server.dispatcher.set_state(id, BackendState::Draining).unwrap();
    let mut picker = Peer::connect(&server).await;
    assert_eq!(picker.pick_counts("game", 30).await, HashMap::from([(2, 30)]));

    // The backend says it is ready: the operator's hold still keeps it out.
    held.heartbeat(heartbeat("game", 1, "10.4.0.1:7001", 30)).await;
    wait_until("the second heartbeat applied", || {
        find_v2(&server, "game", 1).is_some_and(|b| b.backend.heartbeats == 2)
    })
    .await;
    assert_eq!(find_v2(&server, "game", 1).unwrap().state, BackendState::Draining);
    assert_eq!(picker.pick_counts("game", 30).await, HashMap::from([(2, 30)]));

    server.dispatcher.set_state(id, BackendState::Ready).unwrap();
    assert_eq!(find_v2(&server, "game", 1).unwrap().state, BackendState::Ready);
    assert!(picker.pick_counts("game", 30).await.contains_key(&1), "the hold is lifted");

    // And the other way round: the operator's ready does not override a report.
    held.heartbeat(Heartbeat { state: State::Maintenance, ..heartbeat("game", 1, "10.4.0.1:7001", 30) })
        .await;
    wait_for_state(&server, "game", 1, BackendState::Maintenance).await;
    server.dispatcher.set_state(id, BackendState::Ready).unwrap();
    assert_eq!(find_v2(&server, "game", 1).unwrap().state, BackendState::Maintenance);
    assert_eq!(picker.pick_counts("game", 30).await, HashMap::from([(2, 30)]));
    server.stop().await;
}

// 4. Authentication with a secret.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_a_heartbeat_before_register_gets_error_4_and_the_connection_closes() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config_with_secret()).await;
    let mut peer = Peer::connect(&server).await;
    peer.heartbeat(heartbeat("game", 1, "10.5.0.1:7001", 30)).await;
    peer.expect_error(ErrorCode::AUTH_REQUIRED).await;
    peer.expect_closed().await;
    assert_eq!(server.dispatcher.backend_count(), 0, "nothing registered");
    let stats = server.wire();
    assert_eq!((stats.v2_refusals_with(ErrorCode::AUTH_REQUIRED), stats.v2_registrations), (1, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_v2_heartbeats_from_outside_the_allowed_networks_are_refused_as_legacy_ones_are() {
    let _serial = shared_access().await;
    let mut config = config();
    config.connection.legacy_heartbeats = "10.0.0.0/8".parse().unwrap();
    let server = TestServer::start_with(config).await;
    let mut stranger = Peer::connect(&server).await;
    stranger.heartbeat(heartbeat("default", 1, "10.5.0.1:7001", 0)).await;
    let error = stranger.expect_error(ErrorCode::AUTH_REQUIRED).await;
    assert!(error.text.contains("legacy_heartbeat_networks"), "{}", error.text);
    stranger.expect_closed().await;
    assert_eq!(server.dispatcher.backend_count(), 0, "the stranger did not register");
    assert_eq!(server.wire().heartbeats_not_allowed, 1);
    server.stop().await;

    // With a secret, authentication replaces the network check.
    let mut config = config_with_secret();
    config.connection.legacy_heartbeats = "10.0.0.0/8".parse().unwrap();
    let server = TestServer::start_with(config).await;
    let mut peer = Peer::connect(&server).await;
    peer.register(SECRET, "game", 1).await;
    peer.heartbeat(heartbeat("game", 1, "10.5.0.1:7001", 30)).await;
    wait_for_v2(&server, "game", 1).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_a_register_signed_with_another_secret_gets_error_5_and_the_connection_closes() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config_with_secret()).await;
    let mut peer = Peer::connect(&server).await;
    let nonce = peer.hello().await;
    peer.send(Message::Register(Register::signed(OTHER_SECRET, &nonce, service("game"), 1))).await;
    peer.expect_error(ErrorCode::AUTH_FAILED).await;
    peer.expect_closed().await;
    assert_eq!(server.dispatcher.backend_count(), 0);
    let stats = server.wire();
    assert_eq!((stats.v2_refusals_with(ErrorCode::AUTH_FAILED), stats.v2_registrations), (1, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_a_register_without_hello_gets_error_6_and_the_connection_closes() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config_with_secret()).await;
    let mut peer = Peer::connect(&server).await;
    // Signed with the right secret, over a nonce the dispatcher never sent.
    peer.send(Message::Register(Register::signed(SECRET, &[0; 16], service("game"), 1))).await;
    peer.expect_error(ErrorCode::NO_CHALLENGE).await;
    peer.expect_closed().await;
    let stats = server.wire();
    assert_eq!((stats.v2_refusals_with(ErrorCode::NO_CHALLENGE), stats.v2_registrations), (1, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_hello_challenge_register_registers_and_heartbeats_list_the_backend() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config_with_secret()).await;
    let mut peer = Peer::connect(&server).await;
    peer.send(Message::Hello(v2::Hello)).await;
    let Message::Challenge(challenge) = peer.next().await else { panic!("expected a Challenge") };
    assert!(challenge.server_time.abs_diff(unix_now()) <= 2, "the Challenge carries the dispatcher's clock");
    let register = Register::signed(SECRET, &challenge.nonce, service("game"), 0xfeed);
    peer.send(Message::Register(register)).await;
    assert_eq!(peer.next().await, Message::Registered(Registered { backend_id: 0xfeed }));
    assert_eq!(server.wire().v2_registrations, 1);
    assert_eq!(server.dispatcher.backend_count(), 0, "a Register alone lists nothing");

    peer.heartbeat(heartbeat("game", 0xfeed, "10.5.0.2:7002", 30)).await;
    wait_for_v2(&server, "game", 0xfeed).await;
    let picked = client_pick(&server, "game").await.unwrap();
    assert_eq!((picked.backend_id, picked.endpoint.to_string()), (0xfeed, "10.5.0.2:7002".to_owned()));
    // Heartbeats go on without replies.
    peer.heartbeat(heartbeat("game", 0xfeed, "10.5.0.2:7002", 35)).await;
    wait_until("the second heartbeat applied", || {
        find_v2(&server, "game", 0xfeed).is_some_and(|b| b.backend.heartbeats == 2)
    })
    .await;
    assert_quiet_for(&mut peer.stream, Duration::from_millis(100)).await;
    assert_eq!(server.wire().v2_refusals.iter().sum::<u64>(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_replayed_on_another_connection_gets_error_5() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config_with_secret()).await;
    let mut a = Peer::connect(&server).await;
    let nonce_a = a.hello().await;
    let recorded =
        Message::Register(Register::signed(SECRET, &nonce_a, service("game"), 7)).encode().unwrap();
    a.send_raw(&recorded).await;
    assert_eq!(a.next().await, Message::Registered(Registered { backend_id: 7 }));

    let mut b = Peer::connect(&server).await;
    let nonce_b = b.hello().await;
    assert_ne!(nonce_a, nonce_b, "every Challenge has a new nonce");
    b.send_raw(&recorded).await;
    b.expect_error(ErrorCode::AUTH_FAILED).await;
    b.expect_closed().await;
    let stats = server.wire();
    assert_eq!((stats.v2_registrations, stats.v2_refusals_with(ErrorCode::AUTH_FAILED)), (1, 1));

    // A Register uses up its Challenge: the same Register again on A has none.
    a.send_raw(&recorded).await;
    a.expect_error(ErrorCode::NO_CHALLENGE).await;
    a.expect_closed().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_for_another_identity_than_registered_gets_error_7_and_the_connection_closes() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config_with_secret()).await;
    let mut peer = Peer::connect(&server).await;
    peer.register(SECRET, "game", 1).await;
    peer.heartbeat(heartbeat("game", 2, "10.5.0.3:7003", 30)).await;
    peer.expect_error(ErrorCode::IDENTITY_MISMATCH).await;
    peer.expect_closed().await;
    assert_eq!(server.dispatcher.backend_count(), 0);

    // Another service with the registered id is another identity too.
    let mut peer = Peer::connect(&server).await;
    peer.register(SECRET, "game", 1).await;
    peer.heartbeat(heartbeat("chat", 1, "10.5.0.3:7003", 30)).await;
    peer.expect_error(ErrorCode::IDENTITY_MISMATCH).await;
    peer.expect_closed().await;
    assert_eq!(server.dispatcher.backend_count(), 0);
    let stats = server.wire();
    assert_eq!((stats.v2_registrations, stats.v2_refusals_with(ErrorCode::IDENTITY_MISMATCH)), (2, 2));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_registers_with_the_right_secret_and_not_with_a_wrong_one() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config_with_secret()).await;
    let addr = server.addr.to_string();
    let agent_with = |advertise: &str, secret: &[u8]| {
        let config = AgentConfig::new(addr.as_str(), advertise.parse().unwrap()).v2(service("game"));
        Agent::start(AgentConfig { secret: Some(Secret::new(secret).unwrap()), ..config }, 30)
    };
    let right = agent_with("10.6.0.1:7001", SECRET);
    let wrong = agent_with("10.6.0.2:7002", OTHER_SECRET);
    wait_for_v2(&server, "game", right.backend_id).await;
    // The wrong one is refused, and keeps trying after its backoff.
    server
        .wait_for_wire("two failed registrations", |s| s.v2_refusals_with(ErrorCode::AUTH_FAILED), |n| n >= 2)
        .await;
    assert!(find_v2(&server, "game", wrong.backend_id).is_none(), "a wrong secret registers nothing");
    assert_eq!(server.dispatcher.backend_count(), 1);
    assert_eq!(server.wire().v2_registrations, 1);
    assert_eq!(client_pick(&server, "game").await.unwrap().backend_id, right.backend_id);
    right.stop().await;
    wrong.stop().await;
    server.stop().await;
}

// 5. Without a secret.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_heartbeats_need_no_register_any_register_is_accepted_and_picks_carry_no_ticket() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let _plain = v2_backend(&server, heartbeat("game", 1, "10.7.0.1:7001", 30)).await;

    // A Register with a MAC nobody computed is accepted, and binds the connection.
    let mut registered = Peer::connect(&server).await;
    registered.hello().await;
    registered
        .send(Message::Register(Register { backend_id: 2, mac: [0x5a; 32], service: service("game") }))
        .await;
    assert_eq!(registered.next().await, Message::Registered(Registered { backend_id: 2 }));
    registered.heartbeat(heartbeat("game", 2, "10.7.0.2:7002", 30)).await;
    wait_for_v2(&server, "game", 2).await;
    registered.heartbeat(heartbeat("game", 3, "10.7.0.2:7002", 30)).await;
    registered.expect_error(ErrorCode::IDENTITY_MISMATCH).await;
    registered.expect_closed().await;
    assert_eq!(server.wire().v2_registrations, 1);

    let mut picker = Peer::connect(&server).await;
    for _ in 0..10 {
        let picked = picker.pick_backend("game").await;
        assert_eq!(picked.ticket, Vec::<u8>::new(), "no secret, no ticket");
    }
    assert!(client_pick(&server, "game").await.unwrap().ticket.is_empty());
    server.stop().await;
}

// 6. Tickets.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_from_a_real_pick_verifies_for_its_backend_only_unaltered_and_until_it_expires() {
    let _serial = shared_access().await;
    let mut config = config_with_secret();
    config.connection.ticket_lifetime = Duration::from_secs(30);
    let server = TestServer::start_with(config).await;
    let mut backend = Peer::connect(&server).await;
    backend.register(SECRET, "game", 0xabc).await;
    backend.heartbeat(heartbeat("game", 0xabc, "10.8.0.1:7001", 30)).await;
    wait_for_v2(&server, "game", 0xabc).await;

    let before = unix_now();
    let picked = client_pick(&server, "game").await.unwrap();
    let now = unix_now();
    assert_eq!(picked.backend_id, 0xabc);
    assert_eq!(picked.ticket.len(), ticket::LEN);
    let claims = ticket::verify(SECRET, &picked.ticket, &service("game"), picked.backend_id, now)
        .expect("a valid ticket");
    assert_eq!(claims.backend_id, 0xabc);
    assert!(claims.is_for(&service("game")) && !claims.is_for(&service("chat")));
    assert!((before..=now).contains(&claims.issued), "issued {} outside {before}..={now}", claims.issued);
    assert_eq!(claims.expires, claims.issued + 30);

    for position in 0..picked.ticket.len() {
        let mut altered = picked.ticket.clone();
        altered[position] ^= 0x01;
        let verdict = ticket::verify(SECRET, &altered, &service("game"), picked.backend_id, now);
        assert!(verdict.is_err(), "byte {position} altered and still valid: {verdict:?}");
    }
    assert!(matches!(
        ticket::verify(SECRET, &picked.ticket, &service("game"), 0xabd, now),
        Err(ticket::TicketError::WrongBackend { .. })
    ));
    assert!(matches!(
        ticket::verify(SECRET, &picked.ticket, &service("chat"), picked.backend_id, now),
        Err(ticket::TicketError::WrongService { .. })
    ));
    assert!(matches!(
        ticket::verify(SECRET, &picked.ticket, &service("game"), picked.backend_id, now + 31),
        Err(ticket::TicketError::Expired { .. })
    ));
    assert!(matches!(
        ticket::verify(OTHER_SECRET, &picked.ticket, &service("game"), picked.backend_id, now),
        Err(ticket::TicketError::BadSignature)
    ));
    // Every ticket is new, and the text form verifies as the bytes do.
    let again = client_pick(&server, "game").await.unwrap();
    assert_ne!(again.ticket, picked.ticket);
    let text = ticket::Ticket::from_bytes(&again.ticket).unwrap().to_text();
    assert!(ticket::verify(SECRET, text, &service("game"), 0xabc, unix_now()).is_ok());
    server.stop().await;
}

// 7. IPv6.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_ipv6_an_agent_registers_and_a_pick_returns_its_ipv6_endpoint() {
    let _serial = shared_access().await;
    let listener = match TcpListener::bind("[::1]:0").await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("skipped: cannot bind [::1]:0 ({error}); this machine has no IPv6 loopback");
            return;
        }
    };
    let server = TestServer::start_on(listener, config());
    let addr = server.addr.to_string();
    assert!(addr.starts_with("[::1]:"), "{addr}");
    let agent = Agent::v2(&addr, "[2001:db8::5]:7000", "game", 30);
    wait_for_v2(&server, "game", agent.backend_id).await;
    let picked = within(client::pick_service(&addr, &service("game"), PICK_TIMEOUT)).await.unwrap();
    assert_eq!(picked.endpoint.to_string(), "[2001:db8::5]:7000");
    assert_eq!(picked.backend_id, agent.backend_id);
    agent.stop().await;
    server.stop().await;
}

// 8. Robustness.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_frame_longer_than_the_v2_limit_gets_error_11_and_the_connection_closes() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let mut peer = Peer::connect(&server).await;
    let limit = server_v2_limit();
    // Only the header is sent: the length alone is refused.
    let mut header = (limit + 1).to_le_bytes().to_vec();
    header.extend_from_slice(&v2::MessageType::Heartbeat.cmd().to_le_bytes());
    peer.send_raw(&header).await;
    let error = peer.expect_error(ErrorCode::FRAME_LENGTH).await;
    assert!(error.text.contains(&(limit + 1).to_string()), "{error:?}");
    peer.expect_closed().await;
    assert_eq!(server.wire().v2_refusals_with(ErrorCode::FRAME_LENGTH), 1);

    // At the limit the frame is awaited, not refused: a heartbeat padded with
    // trailing bytes to exactly the limit registers.
    let mut peer = Peer::connect(&server).await;
    let mut frame = Message::Heartbeat(heartbeat("game", 1, "10.9.0.1:7001", 30)).encode().unwrap();
    frame.resize(usize::from(limit), 0);
    frame[..2].copy_from_slice(&limit.to_le_bytes());
    peer.send_raw(&frame).await;
    wait_for_v2(&server, "game", 1).await;
    server.stop().await;
}

/// The v2 frame limit of [`config`].
fn server_v2_limit() -> u16 {
    config().connection.max_v2_frame_len
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_heartbeat_gets_error_8_and_the_connection_goes_on() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let mut peer = Peer::connect(&server).await;
    let valid = Message::Heartbeat(heartbeat("game", 1, "10.9.0.2:7002", 30)).encode().unwrap();
    // The weight, after len, cmd, id, memory, cpu and connections: 0 is malformed.
    let mut zero_weight = valid.clone();
    assert_eq!(zero_weight[20..22], [100, 0]);
    zero_weight[20..22].copy_from_slice(&[0, 0]);
    peer.send_raw(&zero_weight).await;
    let error = peer.expect_error(ErrorCode::MALFORMED).await;
    assert!(error.text.contains("weight"), "{error:?}");
    assert_eq!(server.dispatcher.backend_count(), 0);
    peer.send_raw(&valid).await;
    wait_for_v2(&server, "game", 1).await;
    assert_quiet_for(&mut peer.stream, Duration::from_millis(100)).await;
    assert_eq!(server.wire().v2_refusals_with(ErrorCode::MALFORMED), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_unknown_type_frames_in_one_write_get_exactly_one_error_9() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let mut peer = Peer::connect(&server).await;
    let unknown_type = [4u8, 0, 0x42, 0x02];
    peer.send_raw(&[unknown_type; 3].concat()).await;
    peer.expect_error(ErrorCode::UNKNOWN_TYPE).await;
    // The next thing on the connection is the answer to the next request: no
    // second Error came in between.
    assert_eq!(peer.pick("game").await, PickOutcome::Refused(ErrorCode::UNKNOWN_SERVICE));
    // All three were counted, though one was answered.
    assert_eq!(server.wire().v2_refusals_with(ErrorCode::UNKNOWN_TYPE), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pick_reply_sent_to_the_dispatcher_gets_error_12_and_the_connection_goes_on() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let mut peer = Peer::connect(&server).await;
    peer.send(Message::PickReply(PickReply {
        request_id: 1,
        outcome: PickOutcome::Refused(ErrorCode::NO_BACKEND),
    }))
    .await;
    peer.expect_error(ErrorCode::UNEXPECTED).await;
    assert_eq!(peer.pick("game").await, PickOutcome::Refused(ErrorCode::UNKNOWN_SERVICE));
    assert_eq!(server.wire().v2_refusals_with(ErrorCode::UNEXPECTED), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_over_the_limit_gets_error_13_and_registers_once_there_is_room() {
    let _serial = shared_access().await;
    let mut config = config();
    config.dispatch.max_backends = 1;
    let server = TestServer::start_with(config).await;
    let first = v2_backend(&server, heartbeat("game", 1, "10.9.0.3:7003", 30)).await;
    let mut second = Peer::connect(&server).await;
    second.heartbeat(heartbeat("chat", 2, "10.9.0.4:7004", 30)).await;
    second.expect_error(ErrorCode::BACKEND_LIMIT).await;
    // Over the backend connection budget (max_backends): closed after the Error.
    second.expect_closed().await;
    assert_eq!(server.dispatcher.backend_count(), 1);
    assert_eq!(server.wire().v2_refusals_with(ErrorCode::BACKEND_LIMIT), 1);
    assert_declined(client_pick(&server, "chat").await, ErrorCode::UNKNOWN_SERVICE);

    // Once the first backend has gone, a new connection's heartbeat registers it.
    drop(first);
    wait_until("the first backend removed", || server.dispatcher.backend_count() == 0).await;
    let _second = v2_backend(&server, heartbeat("chat", 2, "10.9.0.4:7004", 30)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnected_backend_keeps_one_entry_that_stays_while_either_connection_is_open() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let old = v2_backend(&server, heartbeat("game", 5, "10.9.0.5:7005", 30)).await;
    let entry = find_v2(&server, "game", 5).unwrap();

    let mut new = Peer::connect(&server).await;
    new.heartbeat(heartbeat("game", 5, "10.9.0.5:7005", 40)).await;
    wait_until("the new connection's heartbeat applied", || {
        find_v2(&server, "game", 5).is_some_and(|b| b.backend.heartbeats == 2)
    })
    .await;
    let moved = find_v2(&server, "game", 5).unwrap();
    assert_eq!(moved.id, entry.id, "the same entry, under the same dispatcher id");
    assert_eq!(moved.backend.heartbeats, 2);
    assert_eq!(server.dispatcher.backend_count(), 1);

    // The old connection closing does not take the backend with it...
    drop(old);
    wait_for_open_connections(&server, 1).await;
    assert_eq!(find_v2(&server, "game", 5).map(|b| b.id), Some(entry.id));
    assert_eq!(server.stats().evicted_disconnected, 0);
    assert_eq!(client_pick(&server, "game").await.unwrap().backend_id, 5);

    // ...the new one does.
    drop(new);
    wait_until("the backend removed with its connection", || server.dispatcher.backend_count() == 0).await;
    assert_declined(client_pick(&server, "game").await, ErrorCode::UNKNOWN_SERVICE);
    server.stop().await;
}

// 9. Weight and scoring.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_equal_load_a_backend_of_weight_300_takes_about_three_times_the_picks_of_weight_100() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let weighted = |id, addr, weight: u16| Heartbeat {
        weight: NonZeroU16::new(weight).unwrap(),
        ..heartbeat("game", id, addr, 50)
    };
    // One heartbeat each: the picks alone move their loads.
    let _light = v2_backend(&server, weighted(100, "10.10.0.1:7001", 100)).await;
    let _heavy = v2_backend(&server, weighted(300, "10.10.0.2:7002", 300)).await;
    assert_eq!(server.dispatcher.policy(), Policy::LeastLoaded);
    let mut picker = Peer::connect(&server).await;
    let counts = picker.pick_counts("game", 400).await;
    let (light, heavy) = (counts.get(&100).copied().unwrap_or(0), counts.get(&300).copied().unwrap_or(0));
    assert_eq!(light + heavy, 400);
    assert!(heavy > 2 * light, "weight 300 got {heavy} picks, weight 100 got {light}");
    assert!(light > 0, "weight 100 got no pick at all");
    server.stop().await;
}

/// Backend 1 reports memory 10 % and CPU 90 %, backend 2 memory 50 % and CPU 20 %:
/// by memory alone 1 is the less loaded, by the larger of the two 2 is.
async fn memory_light_cpu_heavy_pair(server: &TestServer, service_name: &str) -> (Peer, Peer) {
    let with_cpu = |id, addr, memory, cpu: u16| Heartbeat {
        cpu: Percent::from_hundredths(cpu * 100),
        ..heartbeat(service_name, id, addr, memory)
    };
    let one = v2_backend(server, with_cpu(1, "10.11.0.1:7001", 10, 90)).await;
    let two = v2_backend(server, with_cpu(2, "10.11.0.2:7002", 50, 20)).await;
    (one, two)
}

fn least_loaded(mut config: ServerConfig) -> ServerConfig {
    config.dispatch.policy = Policy::LeastLoaded;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scoring_decides_which_figure_makes_a_backend_busy() {
    let _serial = shared_access().await;
    let mut config = least_loaded(config());
    config.dispatch.scoring = "max(memory, cpu)".parse().unwrap();
    let server = TestServer::start_with(config).await;
    let _pair = memory_light_cpu_heavy_pair(&server, "game").await;
    let mut picker = Peer::connect(&server).await;
    assert_eq!(picker.pick_counts("game", 20).await, HashMap::from([(2, 20)]));
    server.stop().await;

    // The default scoring, memory, ranks them the other way.
    let server = TestServer::start_with(least_loaded(self::config())).await;
    let _pair = memory_light_cpu_heavy_pair(&server, "game").await;
    let mut picker = Peer::connect(&server).await;
    assert_eq!(picker.pick_counts("game", 20).await, HashMap::from([(1, 20)]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_its_own_scoring_uses_it_and_the_others_keep_the_default() {
    let _serial = shared_access().await;
    let mut config = least_loaded(config());
    let game_scoring: loadwise_core::scoring::Scoring = "max(memory, cpu)".parse().unwrap();
    config.dispatch = DispatchSettings {
        service_scoring: [(service("game"), game_scoring.clone())].into(),
        ..config.dispatch
    };
    let server = TestServer::start_with(config).await;
    let _game = memory_light_cpu_heavy_pair(&server, "game").await;
    let _chat = memory_light_cpu_heavy_pair(&server, "chat").await;
    let mut picker = Peer::connect(&server).await;
    assert_eq!(picker.pick_counts("game", 20).await, HashMap::from([(2, 20)]));
    assert_eq!(picker.pick_counts("chat", 20).await, HashMap::from([(1, 20)]));
    let scoring_of = |name: &str| {
        server.dispatcher.services().into_iter().find(|s| s.name.as_str() == name).map(|s| s.scoring)
    };
    assert_eq!(scoring_of("game"), Some(game_scoring));
    assert_eq!(scoring_of("chat"), Some(loadwise_core::scoring::Scoring::default()));
    server.stop().await;
}

// More rules of docs/protocol.md, "What loadwise does with v2 frames".

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_backend_of_the_default_service_needs_an_address_that_fits_a_legacy_reply() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let mut peer = Peer::connect(&server).await;
    // 22 characters: no legacy reply can carry it.
    peer.heartbeat(heartbeat("default", 1, "[2001:db8:1:2:3:4:5:6]:7000", 30)).await;
    peer.expect_error(ErrorCode::MALFORMED).await;
    assert_eq!(server.dispatcher.backend_count(), 0);
    // The same address is fine in another service; and the connection is still open.
    let _game = v2_backend(&server, heartbeat("game", 2, "[2001:db8:1:2:3:4:5:6]:7000", 30)).await;
    // 11 characters fit: a legacy login gets the text, byte for byte.
    peer.heartbeat(heartbeat("default", 1, "[2001:db8::5]:7000", 30)).await;
    wait_for_v2(&server, "default", 1).await;
    let mut client = server.connect().await;
    assert_eq!(login(&mut client).await, reply_for("2001:db8::5", 7000));
    assert_eq!(server.wire().v2_refusals_with(ErrorCode::MALFORMED), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_refused_for_their_address_get_one_error_8_per_read() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let mut peer = Peer::connect(&server).await;
    // Four 51-byte frames, in one write that the dispatcher's first read (256 bytes)
    // takes whole, would otherwise buy four 169-byte Errors.
    let too_long = Message::Heartbeat(heartbeat("default", 1, "[2001:db8:1:2:3:4:5:6]:7000", 30));
    peer.send_raw(&too_long.encode().unwrap().repeat(4)).await;
    peer.expect_error(ErrorCode::MALFORMED).await;
    // The next thing on the connection answers the next request.
    assert_eq!(peer.pick("game").await, PickOutcome::Refused(ErrorCode::UNKNOWN_SERVICE));
    assert_eq!(server.wire().v2_refusals_with(ErrorCode::MALFORMED), 4);
    assert_eq!(server.dispatcher.backend_count(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_of_another_version_get_error_10_only_once_the_peer_has_spoken_v2() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let mut peer = Peer::connect(&server).await;
    // Before any v2 message: skipped with no reply, as a legacy peer needs. The
    // PickReply is then the first thing the peer reads.
    peer.send_raw(&[4u8, 0, 0x01, 0x03]).await;
    assert_eq!(peer.pick("game").await, PickOutcome::Refused(ErrorCode::UNKNOWN_SERVICE));
    // Once it has spoken v2: version 3, then version 1 (reserved), in one write: one Error.
    peer.send_raw(&[[4u8, 0, 0x01, 0x03], [6, 0, 0x05, 0x01]].concat()).await;
    peer.send_raw(&[0, 0]).await;
    let error = peer.expect_error(ErrorCode::UNSUPPORTED_VERSION).await;
    assert_eq!(error.text, "supported versions: 0 2");
    assert_eq!(peer.pick("game").await, PickOutcome::Refused(ErrorCode::UNKNOWN_SERVICE));
    // The two frames after the Hello are counted; the one skipped silently is not.
    assert_eq!(server.wire().v2_refusals_with(ErrorCode::UNSUPPORTED_VERSION), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_version_peer_that_opens_with_hello_is_told_the_versions_spoken() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let mut peer = Peer::connect(&server).await;
    peer.hello().await;
    peer.send_raw(&[6u8, 0, 0x01, 0x03, 0, 0]).await;
    let error = peer.expect_error(ErrorCode::UNSUPPORTED_VERSION).await;
    assert_eq!(error.text, "supported versions: 0 2");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_pick_request_is_answered_while_other_skipped_frames_get_one_error_per_read() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let mut peer = Peer::connect(&server).await;
    let request =
        PickRequest { request_id: 9, timestamp: unix_now(), service: service("game"), key: PickKey::NONE };
    let mut malformed = Message::PickRequest(request).encode().unwrap();
    *malformed.last_mut().unwrap() = b' ';
    let unknown_type = [4u8, 0, 0x42, 0x02];
    peer.send_raw(&[&malformed[..], &unknown_type, &malformed, &unknown_type].concat()).await;
    let first = peer.expect_error(ErrorCode::MALFORMED).await;
    assert!(first.text.contains("PickRequest"), "{first:?}");
    peer.expect_error(ErrorCode::UNKNOWN_TYPE).await;
    peer.expect_error(ErrorCode::MALFORMED).await;
    assert_eq!(peer.pick("game").await, PickOutcome::Refused(ErrorCode::UNKNOWN_SERVICE));
    let stats = server.wire();
    assert_eq!(
        (stats.v2_refusals_with(ErrorCode::MALFORMED), stats.v2_refusals_with(ErrorCode::UNKNOWN_TYPE)),
        (2, 2)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pick_stamped_far_from_the_dispatchers_clock_gets_status_2() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let _game = v2_backend(&server, heartbeat("game", 1, "10.12.0.1:7001", 30)).await;
    let mut peer = Peer::connect(&server).await;
    for timestamp in [unix_now() - 3600, unix_now() + 3600, 0] {
        let request = PickRequest { request_id: 5, timestamp, service: service("game"), key: PickKey::NONE };
        peer.send(Message::PickRequest(request)).await;
        let expected = PickReply { request_id: 5, outcome: PickOutcome::Refused(ErrorCode::CLOCK_SKEW) };
        assert_eq!(peer.next().await, Message::PickReply(expected));
    }
    assert!(matches!(peer.pick("game").await, PickOutcome::Picked(_)));
    let stats = server.stats();
    assert_eq!((server.wire().v2_refusals_with(ErrorCode::CLOCK_SKEW), stats.logins_clock_skew), (3, 3));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_v2_backend_expires_with_its_service_and_its_next_heartbeat_registers_it_again() {
    let _serial = shared_access().await;
    let mut config = config();
    config.dispatch.ttl = Duration::from_millis(300);
    let server = TestServer::start_with(config).await;
    let mut peer = Peer::connect(&server).await;
    // Counted rather than watched: a loaded machine may not look within the TTL.
    peer.heartbeat(heartbeat("chat", 1, "10.13.0.1:7001", 30)).await;
    server
        .wait_for_stat("the silent backend registered and expired", |s| s.evicted_expired, |n| n == 1)
        .await;
    assert_eq!(server.dispatcher.backend_count(), 0);
    assert!(server.dispatcher.services().iter().all(|s| s.name.as_str() != "chat"));
    assert_declined(client_pick(&server, "chat").await, ErrorCode::UNKNOWN_SERVICE);
    // The connection is still open, and a heartbeat on it registers the backend again.
    peer.heartbeat(heartbeat("chat", 1, "10.13.0.1:7001", 30)).await;
    server.wait_for_stat("registered and expired again", |s| s.evicted_expired, |n| n == 2).await;
    let stats = server.stats();
    assert_eq!((stats.heartbeats, stats.evicted_disconnected, server.wire().connections_open), (2, 0, 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_carried_both_kinds_of_heartbeat_takes_both_backends_when_it_closes() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config()).await;
    let mut peer = Peer::connect(&server).await;
    peer.send_raw(&loadwise_testkit::heartbeat(20, "10.14.0.1", 7001)).await;
    server.wait_for_backend("10.14.0.1", 7001).await;
    peer.heartbeat(heartbeat("game", 1, "10.14.0.2:7002", 30)).await;
    wait_for_v2(&server, "game", 1).await;
    assert_eq!(server.dispatcher.backend_count(), 2);
    drop(peer);
    wait_until("both backends removed", || server.dispatcher.backend_count() == 0).await;
    assert_eq!(server.stats().evicted_disconnected, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_backend_picked_for_a_v2_client_comes_without_a_ticket() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config_with_secret()).await;
    let _legacy_backend = server.register(20, "10.0.0.2", 1002).await;
    let mut client = Peer::connect(&server).await;
    let picked = client.pick_backend("default").await;
    assert_eq!(picked.endpoint.to_string(), "10.0.0.2:1002");
    // Its id is the dispatcher's number, not one it chose: a ticket could name a v2
    // backend that chose the same number, and a legacy backend cannot check one.
    assert!(picked.ticket.is_empty(), "a ticket for a legacy backend");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hellos_in_one_read_get_one_challenge_and_its_nonce_is_the_one_to_sign() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config_with_secret()).await;
    let mut peer = Peer::connect(&server).await;
    let hello = Message::Hello(v2::Hello).encode().unwrap();
    peer.send_raw(&[hello.as_slice(); 10].concat()).await;
    let Message::Challenge(challenge) = peer.next().await else { panic!("expected a Challenge") };
    // The next thing on the connection answers the next request: no second Challenge.
    assert_eq!(peer.pick("game").await, PickOutcome::Refused(ErrorCode::UNKNOWN_SERVICE));
    peer.send(Message::Register(Register::signed(SECRET, &challenge.nonce, service("game"), 5))).await;
    assert!(matches!(peer.next().await, Message::Registered(_)), "the Challenge sent is the one in force");
    server.stop().await;
}
