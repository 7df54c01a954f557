//! `client::connect` on loopback: against a fake dispatcher that answers picks from a
//! script and records what it reads (PickRequests and FailureReports), and against
//! the real dispatcher with in-process agents; the backends are real listeners, a
//! bound port nobody listens on, and a listener whose backlog is full.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use loadwise_agent::AgentConfig;
use loadwise_client::{self as client, BackendError, ConnectError, ConnectOptions};
use loadwise_protocol::codec::v2::PeerCodec;
use loadwise_protocol::v2::{
    Endpoint, ErrorCode, ErrorMessage, FailureReason, FailureReport, Message, PickOutcome, PickReply, Picked,
    ServiceName,
};
use loadwise_testkit::{TestServer, wait_until, within};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

fn game() -> ServiceName {
    ServiceName::new("game").unwrap()
}

/// A port that refuses connections: bound, never listening, held until dropped (so
/// no other test can take it meanwhile).
struct ClosedPort {
    addr: SocketAddr,
    _reserved: TcpSocket,
}

fn closed_port() -> ClosedPort {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    ClosedPort { addr: socket.local_addr().unwrap(), _reserved: socket }
}

/// A listener whose accept queue is full: further connections get no answer at all
/// (Linux drops their SYNs), as a backend does that is up but stuck.
struct Saturated {
    addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

async fn saturated() -> Saturated {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(error)) => panic!("filling the backlog: {error}"),
            Err(_) => return Saturated { addr, _listener: listener, _queued: queued },
        }
    }
    panic!("the backlog never filled after {} connections", queued.len());
}

fn picked(backend_id: u64, addr: SocketAddr, ticket: &[u8]) -> Picked {
    Picked { backend_id, endpoint: Endpoint::from_socket_addr(addr).unwrap(), ticket: ticket.to_vec() }
}

/// What the fake dispatcher read: the connection it came on, and the message.
type Log = Arc<Mutex<Vec<(usize, Message)>>>;

/// A v2 dispatcher that answers the n-th PickRequest (counted over all connections,
/// from 0) with `script(n)`, and records every message it reads.
struct Fake {
    addr: String,
    log: Log,
    task: JoinHandle<()>,
}

impl Fake {
    async fn start(script: impl Fn(usize) -> PickOutcome + Send + Sync + 'static) -> Fake {
        Fake::start_answering_reports(script, false).await
    }

    /// With `older`, it answers a FailureReport with Error 9 (unknown type), as a
    /// dispatcher older than v2.2 does.
    async fn start_answering_reports(
        script: impl Fn(usize) -> PickOutcome + Send + Sync + 'static,
        older: bool,
    ) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let log: Log = Arc::default();
        let (script, task_log) = (Arc::new(script), Arc::clone(&log));
        let task = tokio::spawn(async move {
            let picks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            for connection in 0.. {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (script, log, picks) = (Arc::clone(&script), Arc::clone(&task_log), Arc::clone(&picks));
                tokio::spawn(async move {
                    let mut conn = Framed::new(stream, PeerCodec);
                    while let Some(Ok(message)) = conn.next().await {
                        log.lock().unwrap().push((connection, message.clone()));
                        let answer = match message {
                            Message::PickRequest(request) => {
                                let n = picks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                let reply = PickReply { request_id: request.request_id, outcome: script(n) };
                                Message::PickReply(reply)
                            }
                            Message::FailureReport(_) if older => Message::Error(ErrorMessage {
                                code: ErrorCode::UNKNOWN_TYPE,
                                text: "unknown v2 message type 0x12".to_owned(),
                            }),
                            _ => continue,
                        };
                        if conn.send(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Fake { addr, log, task }
    }

    fn log(&self) -> Vec<(usize, Message)> {
        self.log.lock().unwrap().clone()
    }

    fn reports(&self) -> Vec<FailureReport> {
        let report = |(_, message)| match message {
            Message::FailureReport(report) => Some(report),
            _ => None,
        };
        self.log().into_iter().filter_map(report).collect()
    }

    /// Waits until it has read `count` messages (a report is read after the client
    /// has moved on).
    async fn wait_for(&self, count: usize) {
        wait_until(&format!("{count} messages read"), || self.log.lock().unwrap().len() >= count).await;
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn quick() -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_millis(500),
        pick_timeout: Duration::from_secs(2),
        ..ConnectOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_backend_is_reported_on_the_same_connection_and_the_next_pick_connects() {
    let dead = closed_port();
    let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (dead_addr, live_addr) = (dead.addr, live.local_addr().unwrap());
    let dispatcher = Fake::start(move |n| match n {
        0 => PickOutcome::Picked(picked(1, dead_addr, &[0xde, 0xad])),
        _ => PickOutcome::Picked(picked(2, live_addr, &[0xbe, 0xef])),
    })
    .await;
    let connected = within(client::connect(std::slice::from_ref(&dispatcher.addr), &game(), &quick()))
        .await
        .expect("connected");
    assert_eq!(connected.stream.peer_addr().unwrap(), live_addr);
    assert_eq!((connected.backend.backend_id, connected.backend.ticket.as_slice()), (2, &[0xbe, 0xef][..]));
    assert_eq!(connected.attempts(), 2);
    let failed = &connected.failed[0];
    assert_eq!((failed.backend_id, failed.reported), (1, true));
    assert_eq!(failed.error.reason(), Some(FailureReason::Refused), "{}", failed.error);
    let (accepted, _) = within(live.accept()).await.unwrap();
    assert_eq!(accepted.peer_addr().unwrap(), connected.stream.local_addr().unwrap());

    let log = dispatcher.log();
    assert!(log.iter().all(|(connection, _)| *connection == 0), "one dispatcher connection: {log:?}");
    assert!(matches!(
        log.iter().map(|(_, message)| message).collect::<Vec<_>>()[..],
        [Message::PickRequest(_), Message::FailureReport(_), Message::PickRequest(_)]
    ));
    let expected = FailureReport {
        backend_id: 1,
        reason: FailureReason::Refused,
        service: game(),
        ticket: vec![0xde, 0xad],
    };
    assert_eq!(dispatcher.reports(), [expected]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_an_older_dispatcher_answers_a_report_with_is_skipped() {
    let dead = closed_port();
    let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (dead_addr, live_addr) = (dead.addr, live.local_addr().unwrap());
    let script = move |n| match n {
        0 => PickOutcome::Picked(picked(1, dead_addr, &[])),
        _ => PickOutcome::Picked(picked(2, live_addr, &[])),
    };
    let dispatcher = Fake::start_answering_reports(script, true).await;
    let connected =
        within(client::connect(std::slice::from_ref(&dispatcher.addr), &game(), &quick())).await.unwrap();
    assert_eq!((connected.backend.backend_id, connected.attempts()), (2, 2));
    assert!(connected.unanswered.is_empty(), "{:?}", connected.unanswered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_bounded_a_repeat_is_passed_over_once_and_the_last_failure_is_reported() {
    let dead = closed_port();
    let dead_addr = dead.addr;
    let dispatcher = Fake::start(move |_| PickOutcome::Picked(picked(7, dead_addr, &[]))).await;
    let options = ConnectOptions { attempts: 3, ..quick() };
    let error =
        within(client::connect(std::slice::from_ref(&dispatcher.addr), &game(), &options)).await.unwrap_err();
    let ConnectError::Exhausted { failed, .. } = &error else { panic!("not exhausted: {error:?}") };
    let errors: Vec<Option<FailureReason>> = failed.iter().map(|attempt| attempt.error.reason()).collect();
    assert_eq!(errors, [Some(FailureReason::Refused), None, Some(FailureReason::Refused)], "{error}");
    assert!(matches!(failed[1].error, BackendError::PassedOver));
    assert_eq!(failed.iter().map(|attempt| attempt.reported).collect::<Vec<_>>(), [true, false, true]);
    assert!(error.to_string().starts_with("could not connect to any backend in 3 attempt(s)"), "{error}");
    // Three picks, and a report after each failure, the last one too.
    dispatcher.wait_for(5).await;
    let picks = dispatcher.log().iter().filter(|(_, m)| matches!(m, Message::PickRequest(_))).count();
    assert_eq!((picks, dispatcher.reports().len()), (3, 2));
    assert!(dispatcher.log().iter().all(|(connection, _)| *connection == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_deadline_bounds_a_backend_that_never_answers() {
    let stuck = saturated().await;
    let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stuck_addr, live_addr) = (stuck.addr, live.local_addr().unwrap());
    let dispatcher = Fake::start(move |n| match n {
        0 => PickOutcome::Picked(picked(1, stuck_addr, &[])),
        _ => PickOutcome::Picked(picked(2, live_addr, &[])),
    })
    .await;
    let options = ConnectOptions { connect_timeout: Duration::from_millis(300), ..quick() };
    let started = Instant::now();
    let connected =
        within(client::connect(std::slice::from_ref(&dispatcher.addr), &game(), &options)).await.unwrap();
    let took = started.elapsed();
    assert_eq!(connected.stream.peer_addr().unwrap(), live_addr);
    let failed = &connected.failed[0];
    assert!(matches!(failed.error, BackendError::Timeout(_)), "{}", failed.error);
    assert!(failed.elapsed >= Duration::from_millis(300) && failed.elapsed < Duration::from_millis(600));
    eprintln!(
        "a backend that never answers cost {:?} (deadline 300ms); connected after {took:?}",
        failed.elapsed
    );
    assert_eq!(dispatcher.reports()[0].reason, FailureReason::Timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_ends_the_sequence_and_an_unreachable_dispatcher_is_passed_for_the_next() {
    let refusing = Fake::start(|_| PickOutcome::Refused(ErrorCode::NO_BACKEND)).await;
    let error =
        within(client::connect(std::slice::from_ref(&refusing.addr), &game(), &quick())).await.unwrap_err();
    assert!(matches!(error, ConnectError::Declined { .. }), "{error:?}");

    let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live_addr = live.local_addr().unwrap();
    let answering = Fake::start(move |_| PickOutcome::Picked(picked(3, live_addr, &[]))).await;
    let gone = closed_port();
    let dispatchers = [gone.addr.to_string(), answering.addr.clone()];
    // The sequence starts at either; whichever comes first, it ends connected.
    for _ in 0..4 {
        let connected = within(client::connect(&dispatchers, &game(), &quick())).await.unwrap();
        assert_eq!(connected.dispatcher, answering.addr);
        assert!(connected.unanswered.iter().all(|attempt| attempt.dispatcher == dispatchers[0]));
    }
    let error = within(client::connect(&dispatchers[..1], &game(), &quick())).await.unwrap_err();
    assert!(matches!(error, ConnectError::Unanswered { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_failure_sends_one_report_from_the_bound_address() {
    let dispatcher = Fake::start(|_| PickOutcome::Refused(ErrorCode::NO_BACKEND)).await;
    let dead = closed_port();
    let options = ConnectOptions { bind: Some("127.0.0.3".parse().unwrap()), ..quick() };
    let backend = picked(9, dead.addr, &[1, 2, 3]);
    within(client::report_failure(&dispatcher.addr, &game(), &backend, FailureReason::Closed, &options))
        .await
        .unwrap();
    dispatcher.wait_for(1).await;
    let expected = FailureReport {
        backend_id: 9,
        reason: FailureReason::Closed,
        service: game(),
        ticket: vec![1, 2, 3],
    };
    assert_eq!(dispatcher.reports(), [expected]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_connection_comes_from_the_bound_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let bind: IpAddr = "127.0.0.4".parse().unwrap();
    let options = ConnectOptions { pick_timeout: Duration::from_millis(200), bind: Some(bind), ..quick() };
    let connecting = tokio::spawn(async move { client::connect(&[addr], &game(), &options).await });
    let (_held, peer) = within(listener.accept()).await.unwrap();
    assert_eq!(peer.ip(), bind);
    // Nobody answers: the pick times out and, with no other dispatcher, the call ends.
    let error = within(connecting).await.unwrap().unwrap_err();
    assert!(matches!(error, ConnectError::Unanswered { .. }), "{error:?}");
}

struct RunningAgent {
    stop: CancellationToken,
    task: JoinHandle<Result<(), loadwise_protocol::config::ConfigError>>,
}

fn start_agent(server: &str, advertise: SocketAddr, backend_id: u64) -> RunningAgent {
    let config = AgentConfig {
        interval: Duration::from_millis(100),
        service: game(),
        backend_id,
        ..AgentConfig::with_servers([server], advertise.to_string().parse().unwrap())
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(loadwise_agent::run(config, || Ok(30), stop.clone().cancelled_owned()));
    RunningAgent { stop, task }
}

impl RunningAgent {
    async fn stop(self) {
        self.stop.cancel();
        within(self.task).await.unwrap().unwrap();
    }
}

/// With the real dispatcher and agents: one backend advertises a port nobody listens
/// on, the other a listener. Every client ends connected to the listener; a client
/// sent to the dead one first reports it and asks again on the same connection; once
/// three distinct clients have, the dispatcher sends no one there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_the_real_dispatcher_every_client_reaches_the_listening_backend() {
    let server = TestServer::start().await;
    let dead = closed_port();
    let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live_addr = live.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = live.accept().await {
            held.push(stream);
        }
    });
    let addr = server.addr.to_string();
    let agents = [start_agent(&addr, dead.addr, 101), start_agent(&addr, live_addr, 102)];
    wait_until("both backends registered", || server.dispatcher.backend_count() == 2).await;
    let mut reported = 0;
    for client_ip in 2..10 {
        let bind = Some(format!("127.0.0.{client_ip}").parse().unwrap());
        let options = ConnectOptions { bind, ..quick() };
        let connected =
            within(client::connect(std::slice::from_ref(&addr), &game(), &options)).await.unwrap();
        assert_eq!((connected.backend.backend_id, connected.stream.peer_addr().unwrap()), (102, live_addr));
        // Three distinct clients sent there and reporting it eject the dead backend:
        // the clients after them are not sent there.
        if reported >= 3 {
            assert_eq!(connected.attempts(), 1, "client 127.0.0.{client_ip}: {:?}", connected.failed);
        }
        for attempt in &connected.failed {
            assert_eq!(attempt.backend_id, 101);
            reported += usize::from(attempt.reported);
        }
    }
    assert!(reported >= 3, "only {reported} of 8 clients were sent to the dead backend");
    for agent in agents {
        agent.stop().await;
    }
    accepting.abort();
    server.stop().await;
}
