//! `loadwise bench` on loopback: its counts agree with what the dispatcher saw, and a
//! misbehaving server's faults are counted by kind.
//!
//! Every server listens on `127.0.0.1:0`; every run is bounded by a small request
//! count or a duration of at most a second, and by [`DEADLINE`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use loadwise_core::dispatcher::{Dispatcher, StatsSnapshot};
use loadwise_protocol::v2::ErrorCode;
use loadwise_protocol::v2::auth::Secret;
use loadwise_server::stats::{WireSnapshot, WireStats};
use loadwise_server::{Server, ServerConfig};
use loadwise_testkit::wait_until;
use loadwise_tools::bench::{BenchConfig, BenchError, BenchReport, ErrorKind, Mode, Protocol, Stop, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The longest any run may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// A dispatcher on an ephemeral loopback port in this process.
struct Dispatch {
    addr: SocketAddr,
    dispatcher: Arc<Dispatcher>,
    wire: Arc<WireStats>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Dispatch {
    async fn start() -> Dispatch {
        Dispatch::with_config(ServerConfig::default()).await
    }

    async fn with_config(config: ServerConfig) -> Dispatch {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::with_listener(listener, config);
        let (dispatcher, wire) = (server.dispatcher(), server.wire_stats());
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.run(stop.clone().cancelled_owned()));
        Dispatch { addr, dispatcher, wire, stop, task }
    }

    fn stats(&self) -> StatsSnapshot {
        self.dispatcher.stats().snapshot()
    }

    fn wire(&self) -> WireSnapshot {
        self.wire.snapshot()
    }

    async fn stop(self) {
        self.stop.cancel();
        within(self.task).await.unwrap();
    }
}

/// A small run against `addr`: `backends` fake backends that send only their
/// registering heartbeat during the test, so the server's counts are exact.
fn config(addr: SocketAddr, mode: Mode, requests: u64, backends: usize) -> BenchConfig {
    BenchConfig {
        mode,
        conns: 3,
        pipeline: 4,
        stop: Stop::Requests(requests),
        backends,
        backend_interval: Duration::from_secs(60),
        timeout: Duration::from_secs(2),
        ..BenchConfig::new(Target::Remote { addr, pid: None })
    }
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future).await.expect("finished within the deadline")
}

async fn bench(config: &BenchConfig) -> BenchReport {
    within(loadwise_tools::bench::run(config)).await.expect("the run completes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_counts_agree_with_the_dispatcher() {
    let server = Dispatch::start().await;
    let report = bench(&config(server.addr, Mode::Pick, 120, 3)).await;
    let run = &report.target;
    assert_eq!((run.requests.logins_sent, run.requests.logins_ok, run.ops), (120, 120, 120));
    assert_eq!(run.requests.errors.total(), 0, "{:?}", run.requests.errors);
    assert_eq!(run.latency.samples, 120);
    assert_eq!(run.backends.registered, 3);
    let stats = server.stats();
    assert_eq!(stats.logins_answered, 120 + run.backends.setup_logins);
    assert_eq!(stats.heartbeats, 3);
    // The dispatcher is this process, found by its port.
    assert_eq!(run.cpu.server_source, format!("pid {}", std::process::id()));
    server.stop().await;
}

/// Every mode, closed and open loop, with and without pipelining, and connect per
/// pick, in both protocols: the bench's counts agree with the dispatcher's, request
/// for request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_combination_agrees_with_the_dispatcher() {
    let mut cases = Vec::new();
    for protocol in [Protocol::Legacy, Protocol::V2] {
        for mode in [Mode::Pick, Mode::Heartbeat, Mode::Mixed] {
            for rate in [None, Some(5000.0)] {
                for pipeline in [1, 3] {
                    cases.push(BenchConfig {
                        protocol,
                        rate,
                        pipeline,
                        ..config(SocketAddr::from(([0; 4], 0)), mode, 31, 2)
                    });
                }
            }
        }
        for rate in [None, Some(2000.0)] {
            let any = SocketAddr::from(([0; 4], 0));
            cases.push(BenchConfig {
                protocol,
                rate,
                pipeline: 1,
                connect_per_pick: true,
                ..config(any, Mode::Pick, 31, 2)
            });
        }
    }
    for case in cases {
        let server = Dispatch::start().await;
        let case = BenchConfig { target: Target::Remote { addr: server.addr, pid: None }, ..case };
        let label = format!(
            "{:?} {:?} rate {:?} pipeline {} cpp {}",
            case.protocol, case.mode, case.rate, case.pipeline, case.connect_per_pick
        );
        let run = bench(&case).await.target;
        let (requests, stats) = (run.requests, server.stats());
        assert_eq!(run.ops, 31, "{label}");
        assert_eq!(requests.errors.total(), 0, "{label}: {:?}", requests.errors);
        assert_eq!(requests.logins_sent, requests.logins_ok, "{label}");
        assert_eq!(requests.heartbeats_sent, requests.heartbeats_confirmed, "{label}");
        assert_eq!(stats.logins_answered, requests.logins_ok + 2, "{label}");
        assert_eq!(stats.heartbeats, requests.heartbeats_confirmed + 2, "{label}");
        assert_eq!(run.latency.samples, requests.logins_ok, "{label}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_batches_are_confirmed_by_their_login() {
    let server = Dispatch::start().await;
    let report = bench(&BenchConfig { pipeline: 8, ..config(server.addr, Mode::Heartbeat, 96, 2) }).await;
    let requests = &report.target.requests;
    assert_eq!((requests.heartbeats_sent, requests.heartbeats_confirmed), (96, 96));
    assert_eq!(requests.logins_sent, 96 / 8, "one login closes each batch of 8");
    assert_eq!(report.target.ops, 96);
    let stats = server.stats();
    assert_eq!(stats.heartbeats, 96 + 2);
    assert_eq!(stats.refused_heartbeats, 0);
    assert_eq!(stats.logins_answered, requests.logins_ok + 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_mode_sends_a_heartbeat_with_every_login() {
    let server = Dispatch::start().await;
    let report = bench(&config(server.addr, Mode::Mixed, 60, 1)).await;
    let requests = &report.target.requests;
    assert_eq!((requests.logins_ok, requests.heartbeats_confirmed), (60, 60));
    let stats = server.stats();
    assert_eq!((stats.logins_answered, stats.heartbeats), (61, 61));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_per_pick_opens_a_connection_for_each_login() {
    let server = Dispatch::start().await;
    let config =
        BenchConfig { connect_per_pick: true, pipeline: 1, ..config(server.addr, Mode::Pick, 40, 2) };
    let report = bench(&config).await;
    assert_eq!(report.target.requests.logins_ok, 40);
    let stats = server.stats();
    assert_eq!(stats.logins_answered, 40 + 2);
    // The probe, two backends, and one connection per pick.
    assert_eq!(server.wire().connections_accepted, 1 + 2 + 40);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_sends_at_the_rate_and_counts_every_request() {
    let server = Dispatch::start().await;
    // 200 picks at 1000/s: about 0.2 s.
    let config = BenchConfig { rate: Some(1000.0), pipeline: 2, ..config(server.addr, Mode::Pick, 200, 1) };
    let report = bench(&config).await;
    let run = &report.target;
    assert_eq!(run.requests.logins_ok, 200);
    assert!(run.elapsed_secs >= 0.15, "the schedule spaces the batches: {}", run.elapsed_secs);
    assert_eq!(server.stats().logins_answered, 201);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_run_against_a_spawned_dispatcher_and_the_ceiling() {
    let target = Target::Spawn(Box::default());
    let config = BenchConfig {
        stop: Stop::Duration(Duration::from_millis(500)),
        ceiling: Some(Target::Ceiling),
        mode: Mode::Mixed,
        conns: 2,
        backends: 2,
        ..BenchConfig::new(target)
    };
    let report = bench(&config).await;
    let (run, ceiling) = (&report.target, report.ceiling.as_ref().unwrap());
    assert!(run.ops > 0 && ceiling.ops > 0);
    assert_eq!(run.requests.errors.total() + ceiling.requests.errors.total(), 0);
    let stats = run.server_stats.expect("a spawned dispatcher reports its counters");
    assert_eq!(stats.logins_answered, run.requests.logins_ok + 2);
    assert!(run.cpu.server_source.contains(loadwise_tools::bench::DISPATCHER_THREADS));
    assert!(run.cpu.server_secs.is_some());
    let ratio = report.ratio.expect("a ratio when the ceiling ran");
    assert!(ratio.throughput > 0.0);
}

/// A v2 run of about a second against a dispatcher started by the bench.
fn v2_spawned(backends: usize) -> BenchConfig {
    BenchConfig {
        protocol: Protocol::V2,
        stop: Stop::Duration(Duration::from_millis(800)),
        conns: 4,
        pipeline: 4,
        backends,
        backend_interval: Duration::from_millis(200),
        ..BenchConfig::new(Target::Spawn(Box::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_run_against_a_spawned_dispatcher_has_no_errors() {
    let report = bench(&v2_spawned(3)).await;
    let run = &report.target;
    assert!(run.ops > 0);
    assert_eq!(run.requests.errors.total(), 0, "{:?}", run.requests.errors);
    assert_eq!(run.requests.logins_sent, run.requests.logins_ok);
    assert_eq!(run.backends.registered, 3);
    let stats = run.server_stats.expect("a spawned dispatcher reports its counters");
    assert_eq!(stats.logins_answered, run.requests.logins_ok + 3, "the setup picks are counted too");
    // The registering heartbeats, then one every 200 ms.
    assert!(run.backends.heartbeats_sent >= 3 * 3, "{:?}", run.backends);
    assert_eq!(run.backends.lost, 0);
    assert_eq!((stats.refused_heartbeats, stats.v2_registrations, stats.v2_refusals), (0, 0, 0));
    assert_eq!((report.settings.protocol, report.settings.service.as_deref()), (Protocol::V2, Some("bench")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_picks_of_a_service_without_backends_are_unknown_service_errors() {
    let server = Dispatch::start().await;
    let config = BenchConfig { protocol: Protocol::V2, ..config(server.addr, Mode::Pick, 40, 0) };
    let run = bench(&config).await.target;
    let errors = run.requests.errors;
    assert_eq!((run.ops, errors.unknown_service, errors.total()), (0, 40, 40), "{errors:?}");
    assert_eq!(server.wire().v2_refusals_with(ErrorCode::UNKNOWN_SERVICE), 40);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_run_against_the_ceiling_has_a_ratio() {
    let config = BenchConfig {
        stop: Stop::Duration(Duration::from_millis(500)),
        ceiling: Some(Target::Ceiling),
        mode: Mode::Mixed,
        ..v2_spawned(2)
    };
    let report = bench(&config).await;
    let (run, ceiling) = (&report.target, report.ceiling.as_ref().unwrap());
    assert!(run.ops > 0 && ceiling.ops > 0);
    assert_eq!(run.requests.errors.total() + ceiling.requests.errors.total(), 0);
    assert_eq!(ceiling.backends.registered, 2);
    assert!(report.ratio.expect("a ratio when the ceiling ran").throughput > 0.0);
}

/// With slots, the fake backends report capacity slots and read the LeaseReport that
/// answers each heartbeat; the service is a slot service and every pick is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_backends_are_picked_and_read_their_lease_reports() {
    let server = Dispatch::start().await;
    let config = BenchConfig {
        protocol: Protocol::V2,
        slots: Some(1_000_000),
        stop: Stop::Duration(Duration::from_millis(600)),
        backend_interval: Duration::from_millis(50),
        ..config(server.addr, Mode::Pick, 1, 3)
    };
    let run = bench(&config).await.target;
    assert!(run.ops > 0);
    assert_eq!(run.requests.errors.total(), 0, "{:?}", run.requests.errors);
    assert_eq!(run.requests.logins_sent, run.requests.logins_ok);
    let b = run.backends;
    assert_eq!((b.registered, b.lost), (3, 0));
    // A report answers every heartbeat after the registering ones; each backend's
    // last may still be on its way when the run ends.
    let answerable = b.heartbeats_sent - b.registered;
    assert!(b.lease_reports + b.registered >= answerable && b.lease_reports <= answerable, "{b:?}");
    assert!(b.lease_reports >= 3, "{b:?}");
    server.stop().await;
}

/// Picks of a slot service stop at the backends' free places: two backends of three
/// places that never heart-beat again hold six clients, two of them the setup picks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_picks_stop_at_the_free_places() {
    let server = Dispatch::start().await;
    let config =
        BenchConfig { protocol: Protocol::V2, slots: Some(3), ..config(server.addr, Mode::Pick, 20, 2) };
    let run = bench(&config).await.target;
    let errors = run.requests.errors;
    assert_eq!((run.requests.logins_ok, errors.no_free_place, errors.total()), (4, 16, 16), "{errors:?}");
    assert_eq!(server.wire().v2_refusals_with(ErrorCode::NO_FREE_PLACE), 16);
    server.stop().await;
}

/// With a secret, fake backends and heart-beating clients register first, and every
/// pick is answered with a ticket (by the dispatcher; the ceiling pads one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_with_a_secret_registers_every_heartbeat_sender() {
    let secret = Secret::new(*b"a bench secret of 32 bytes......").unwrap();
    let mut server_config = ServerConfig::default();
    server_config.connection.secret = Some(secret.clone());
    let server = Dispatch::with_config(server_config).await;
    for mode in [Mode::Pick, Mode::Mixed] {
        let config = BenchConfig {
            protocol: Protocol::V2,
            secret: Some(secret.clone()),
            ceiling: Some(Target::Ceiling),
            ..config(server.addr, mode, 40, 2)
        };
        let report = bench(&config).await;
        for run in [&report.target, report.ceiling.as_ref().unwrap()] {
            assert_eq!(run.requests.logins_ok, 40, "{mode:?} {}", run.server);
            assert_eq!(run.requests.errors.total(), 0, "{mode:?} {}: {:?}", run.server, run.requests.errors);
        }
    }
    // Two backends twice, then the three clients of the mixed run.
    assert_eq!(server.wire().v2_registrations, 2 + 2 + 3);

    let wrong = BenchConfig {
        protocol: Protocol::V2,
        secret: Some(Secret::new(*b"not the secret of the dispatcher").unwrap()),
        ..config(server.addr, Mode::Pick, 1, 1)
    };
    let error = within(loadwise_tools::bench::run(&wrong)).await.unwrap_err();
    let chain = format!("{:#}", anyhow::Error::from(error));
    assert!(chain.contains("authentication failed"), "{chain}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_send_nothing() {
    let server = Dispatch::start().await;
    let config = BenchConfig {
        mode: Mode::Idle,
        conns: 20,
        stop: Stop::Duration(Duration::from_millis(200)),
        ..config(server.addr, Mode::Idle, 1, 5)
    };
    let report = bench(&config).await;
    assert_eq!(report.target.requests.logins_sent, 0);
    assert_eq!(report.target.memory.setup_connections, 25);
    // The bench is done once its sockets are connected and its setup answered; the
    // server may count the last accepts and heartbeats a moment later.
    wait_until("every connection accepted", || server.wire().connections_accepted >= 1 + 5 + 20).await;
    wait_until("every setup heartbeat and login counted", || {
        let stats = server.stats();
        stats.heartbeats >= 5 && stats.logins_answered >= 5
    })
    .await;
    let stats = server.stats();
    assert_eq!((stats.logins_answered, stats.heartbeats), (5, 5));
    assert_eq!(server.wire().connections_accepted, 1 + 5 + 20);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_run_with_backends_only_lasts_its_duration() {
    let server = Dispatch::start().await;
    let config = BenchConfig {
        conns: 0,
        stop: Stop::Duration(Duration::from_millis(300)),
        backend_interval: Duration::from_millis(100),
        ..config(server.addr, Mode::Idle, 1, 3)
    };
    let report = bench(&config).await;
    assert!(report.target.elapsed_secs >= 0.3, "{}", report.target.elapsed_secs);
    // Three backends heart-beating every 100 ms for at least 300 ms.
    assert!(report.target.backends.heartbeats_sent >= 3 + 6, "{:?}", report.target.backends);
    server.stop().await;
}

/// A server that answers every 12 bytes it reads with `reply` (if any) and closes
/// each connection after `close_after` reads (if set).
async fn misbehaving(reply: Option<Vec<u8>>, close_after: Option<usize>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(answer(stream, reply.clone(), close_after));
        }
    });
    (addr, task)
}

async fn answer(mut stream: TcpStream, reply: Option<Vec<u8>>, close_after: Option<usize>) {
    let mut login = [0u8; 12];
    for reads in 1.. {
        if stream.read_exact(&mut login).await.is_err() || close_after.is_some_and(|n| reads > n) {
            return;
        }
        if let Some(reply) = &reply
            && stream.write_all(reply).await.is_err()
        {
            return;
        }
    }
}

fn against(addr: SocketAddr, requests: u64) -> BenchConfig {
    BenchConfig {
        conns: 1,
        pipeline: 1,
        backends: 0,
        timeout: Duration::from_millis(200),
        ..config(addr, Mode::Pick, requests, 0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_replies_are_counted_as_malformed() {
    let (addr, task) = misbehaving(Some(vec![0xab; 22]), None).await;
    let report = bench(&against(addr, 10)).await;
    let errors = report.target.requests.errors;
    assert_eq!((errors.malformed, errors.total()), (10, 10));
    assert_eq!(report.target.ops, 0);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_are_counted_as_such() {
    let error_reply = loadwise_protocol::LoginReply::Error.encode().to_vec();
    let (addr, task) = misbehaving(Some(error_reply), None).await;
    let report = bench(&BenchConfig { pipeline: 5, ..against(addr, 10) }).await;
    assert_eq!(report.target.requests.errors.error_reply, 10);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_closing_early_is_counted_and_reconnected_to() {
    // Answers the first login of each connection, then closes it.
    let (addr, task) =
        misbehaving(Some(loadwise_tools::bench::ceiling::fixed_reply().to_vec()), Some(1)).await;
    let report = bench(&BenchConfig { pipeline: 2, ..against(addr, 8) }).await;
    let requests = &report.target.requests;
    assert_eq!(requests.logins_ok, 4, "one reply per connection");
    assert_eq!(requests.errors.closed_early, 4, "{:?}", requests.errors);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out() {
    let (addr, task) = misbehaving(None, None).await;
    let report = bench(&against(addr, 3)).await;
    assert_eq!(report.target.requests.errors.timeout, 3);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_counted() {
    // Accepts the bench's first connection (its reachability probe), then stops
    // listening: every later connection is refused.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let accepted = listener.accept().await;
        drop(listener);
        drop(accepted);
    });
    let config = BenchConfig { connect_per_pick: true, ..against(addr, 5) };
    let report = bench(&config).await;
    let errors = report.target.requests.errors;
    assert_eq!(errors.total(), 5, "{errors:?}");
    assert!(errors.connect_refused >= 4, "{errors:?}");
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_is_an_error() {
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let error = within(loadwise_tools::bench::run(&against(free, 1))).await.unwrap_err();
    assert!(matches!(error, BenchError::Unreachable { kind: ErrorKind::ConnectRefused, .. }), "{error}");
}
