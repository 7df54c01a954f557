//! Replicas in one process on loopback: an agent reporting to several dispatchers,
//! and `client::Failover` choosing among live, dead, silent and empty ones.

use std::time::{Duration, Instant};

use loadwise_agent::AgentConfig;
use loadwise_client::{Failover, FailoverConfig, PickError};
use loadwise_testkit::{DEADLINE, TestServer, wait_until, within};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A port with nothing listening: connecting is refused at once. The socket is
/// bound but never listens, so no other test can take the port meanwhile.
struct ClosedPort {
    addr: String,
    _reserved: tokio::net::TcpSocket,
}

fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    ClosedPort { addr: socket.local_addr().unwrap().to_string(), _reserved: socket }
}

/// A dispatcher that has hung: the kernel completes connections, nobody reads or
/// answers. Dropping it closes everything.
struct Silent {
    addr: String,
    task: JoinHandle<()>,
}

impl Silent {
    async fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Silent { addr, task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct RunningAgent {
    stop: CancellationToken,
    task: JoinHandle<Result<(), loadwise_protocol::config::ConfigError>>,
}

fn start_agent(servers: &[&str], advertise: &str, interval: Duration) -> RunningAgent {
    let config = AgentConfig {
        interval,
        ..AgentConfig::with_servers(servers.iter().copied(), advertise.parse().unwrap())
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

fn failover(servers: &[&str], config: FailoverConfig) -> Failover {
    let servers = servers.iter().map(|server| server.to_string()).collect();
    Failover::with_seed(servers, config, 7).unwrap()
}

fn quick(attempt_ms: u64, deadline_ms: u64) -> FailoverConfig {
    FailoverConfig {
        attempt_timeout: Duration::from_millis(attempt_ms),
        deadline: Duration::from_millis(deadline_ms),
        ..FailoverConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_registers_with_every_dispatcher() {
    let (a, b) = (TestServer::start().await, TestServer::start().await);
    let agent =
        start_agent(&[&a.addr.to_string(), &b.addr.to_string()], "10.0.0.5:7005", Duration::from_millis(50));
    a.wait_for_backend("10.0.0.5", 7005).await;
    b.wait_for_backend("10.0.0.5", 7005).await;
    agent.stop().await;
    // Stopping closes both connections, so both dispatchers drop the backend.
    wait_until("both dispatchers dropped the backend", || {
        a.dispatcher.backend_count() == 0 && b.dispatcher.backend_count() == 0
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_hung_dispatcher_does_not_delay_heartbeats_to_the_others() {
    let live = TestServer::start().await;
    let silent = Silent::start().await;
    let closed = closed_port();
    let dead = closed.addr.clone();
    let interval = Duration::from_millis(50);
    let servers = [dead.as_str(), &silent.addr, &live.addr.to_string()];
    let agent = start_agent(&servers, "10.0.0.6:7006", interval);
    live.wait_for_backend("10.0.0.6", 7006).await;
    // Over a second the live dispatcher should get about 20 heartbeats; a link
    // waiting on the others would cut that to a trickle.
    let before = live.stats().heartbeats;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = live.stats().heartbeats - before;
    eprintln!(
        "heartbeats received in 1 s at a 50 ms interval, beside a dead and a hung dispatcher: {received}"
    );
    assert!(received >= 10, "only {received} heartbeats in a second");
    agent.stop().await;
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_dispatcher_is_tried_once_then_held_down() {
    let live = TestServer::start().await;
    let _backend = live.register(20, "10.0.0.1", 7001).await;
    let closed = closed_port();
    let dead = closed.addr.clone();
    let live_addr = live.addr.to_string();
    let client = failover(&[&dead, &live_addr], quick(500, 2_000));
    let mut failed = 0;
    for _ in 0..20 {
        let answer = within(client.pick()).await.expect("the live dispatcher answers");
        assert_eq!(answer.dispatcher, live_addr);
        assert_eq!(answer.backend.to_string(), "10.0.0.1:7001");
        for attempt in &answer.failed {
            assert_eq!(attempt.dispatcher, dead);
            assert!(matches!(attempt.error, PickError::Unreachable(_)), "{:?}", attempt.error);
        }
        failed += answer.failed.len();
    }
    assert!(failed <= 1, "the dead dispatcher was tried {failed} times");

    // Without the hold-down the random order keeps trying it: the test can fail.
    let forgetful =
        failover(&[&dead, &live_addr], FailoverConfig { hold_down: Duration::ZERO, ..quick(500, 2_000) });
    let mut failed = 0;
    for _ in 0..20 {
        failed += within(forgetful.pick()).await.unwrap().failed.len();
    }
    assert!(failed > 1, "the order never started with the dead dispatcher");
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_dispatcher_costs_one_attempt_timeout() {
    let live = TestServer::start().await;
    let _backend = live.register(20, "10.0.0.1", 7001).await;
    let silent = Silent::start().await;
    let live_addr = live.addr.to_string();
    let client = failover(&[&silent.addr, &live_addr], quick(300, 3_000));
    let mut timed_out = 0;
    for _ in 0..10 {
        let started = Instant::now();
        let answer = within(client.pick()).await.expect("the live dispatcher answers");
        let took = started.elapsed();
        assert_eq!(answer.dispatcher, live_addr);
        for attempt in &answer.failed {
            assert!(matches!(attempt.error, PickError::Timeout { .. }), "{:?}", attempt.error);
            assert!(attempt.elapsed >= Duration::from_millis(300) && took >= Duration::from_millis(300));
            timed_out += 1;
        }
    }
    // Held down after its one timeout, so at most one pick waited on it.
    assert!(timed_out <= 1, "waited on the hung dispatcher {timed_out} times");
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_bounds_the_whole_pick() {
    let silent = [Silent::start().await, Silent::start().await, Silent::start().await, Silent::start().await];
    let servers: Vec<&str> = silent.iter().map(|s| s.addr.as_str()).collect();
    let client = failover(&servers, quick(400, 1_000));
    let started = Instant::now();
    let error = within(client.pick()).await.expect_err("nobody answers");
    let took = started.elapsed();
    eprintln!("four hung dispatchers, 400 ms per attempt, 1 s deadline: gave up after {took:?}");
    assert_eq!(error.attempts.len(), 3, "400 + 400 + the 200 ms left, and no time for the fourth");
    assert!(error.deadline_reached && !error.any_refusal());
    assert!(took >= Duration::from_millis(1_000) && took < DEADLINE);
    // The last attempt only had what was left of the deadline.
    assert!(error.attempts[2].elapsed < Duration::from_millis(400), "{:?}", error.attempts[2].elapsed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_dispatcher_is_passed_over_but_not_held_down() {
    let (empty, full) = (TestServer::start().await, TestServer::start().await);
    let _backend = full.register(20, "10.0.0.2", 7002).await;
    let (empty_addr, full_addr) = (empty.addr.to_string(), full.addr.to_string());
    let client = failover(&[&empty_addr, &full_addr], quick(500, 2_000));
    let mut refusals = 0;
    for _ in 0..10 {
        let answer = within(client.pick()).await.expect("the full dispatcher answers");
        assert_eq!(answer.dispatcher, full_addr);
        refusals += answer.failed.iter().filter(|attempt| attempt.error.is_refusal()).count();
    }
    assert!(refusals > 1, "a refusal must not hold the dispatcher down ({refusals} refusals)");

    // Once it has a backend it answers again.
    let _other = empty.register(20, "10.0.0.3", 7003).await;
    let mut answered_by_it = 0;
    for _ in 0..20 {
        answered_by_it += usize::from(within(client.pick()).await.unwrap().dispatcher == empty_addr);
    }
    assert!(answered_by_it > 0);

    let nobody = TestServer::start().await;
    let nobody_addr = nobody.addr.to_string();
    let error = within(failover(&[&nobody_addr], quick(500, 2_000)).pick()).await.unwrap_err();
    assert!(error.any_refusal() && !error.deadline_reached);
    empty.stop().await;
    full.stop().await;
    nobody.stop().await;
}
