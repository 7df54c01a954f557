//! The agent's health: its own check (a TCP connect, or an HTTP GET with the
//! `http-check` feature) and the library user's say, seen in the v2 heartbeats a
//! scripted dispatcher reads and in a legacy dispatcher's table.

use std::time::{Duration, Instant};

use loadwise_agent::{AgentConfig, CheckTarget, Health, HealthCheck};
use loadwise_protocol::config::ConfigError;
use loadwise_protocol::v2::{ServiceName, State};
use loadwise_testkit::{DEADLINE, TestServer, wait_until, within};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod common;
use common::Peer;

/// Short, so that the timings below are quick; slack absorbs a loaded machine.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
const SLACK: Duration = Duration::from_millis(900);

struct RunningAgent {
    state: watch::Sender<State>,
    health: watch::Sender<Health>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), ConfigError>>,
}

impl RunningAgent {
    fn start(config: AgentConfig) -> RunningAgent {
        let (state, watched_state) = watch::channel(State::Ready);
        let (health, watched_health) = watch::channel(Health::Healthy);
        let stop = CancellationToken::new();
        let probe = || Ok(30);
        let run = loadwise_agent::run_with_health(
            config,
            probe,
            watched_state,
            watched_health,
            stop.clone().cancelled_owned(),
        );
        RunningAgent { state, health, stop, task: tokio::spawn(run) }
    }

    async fn stop(self) {
        self.stop.cancel();
        within(self.task).await.unwrap().unwrap();
    }
}

/// A loopback port with nothing listening on it (bound, then closed).
async fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

/// A v2 agent for `server`, advertising 127.0.0.1:`port`, heart-beating every 50 ms.
fn v2_config(server: &str, port: u16, check: Option<CheckTarget>) -> AgentConfig {
    let advertise = format!("127.0.0.1:{port}").parse().unwrap();
    let config = AgentConfig::new(server, advertise).v2(ServiceName::new("game").unwrap());
    AgentConfig {
        interval: Duration::from_millis(50),
        health_check: check.map(|target| HealthCheck::new(target).every(CHECK_INTERVAL)),
        ..config
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_check_reports_unhealthy_until_the_backend_listens_and_again_when_it_stops() {
    let dispatcher = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed_port().await;
    let config = v2_config(&dispatcher.local_addr().unwrap().to_string(), port, Some(CheckTarget::Tcp(None)));
    let check = config.health_check.clone().unwrap();
    let agent = RunningAgent::start(config);
    let mut peer = Peer::accept(&dispatcher).await;

    // It starts unhealthy, and stays so while nothing listens on the advertised port.
    for _ in 0..5 {
        assert_eq!(peer.heartbeat().await.health, Health::Unhealthy);
    }
    let backend = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let up = peer.wait_for_health(Health::Healthy).await;
    let rise = check.interval * check.rise;
    eprintln!("healthy {up:?} after the backend listened (rise × interval = {rise:?})");
    assert!(up <= rise + SLACK, "healthy after {up:?}");

    drop(backend);
    let down = peer.wait_for_health(Health::Unhealthy).await;
    let fall = check.interval * check.fall;
    eprintln!("unhealthy {down:?} after the backend closed (fall × interval = {fall:?})");
    assert!(down <= fall + SLACK, "unhealthy after {down:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_of_another_address_and_the_library_say_combine() {
    let dispatcher = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("tcp:{}", backend.local_addr().unwrap()).parse().unwrap();
    // The advertised port is closed: only the named address is checked.
    let config = v2_config(&dispatcher.local_addr().unwrap().to_string(), closed_port().await, Some(target));
    let agent = RunningAgent::start(config);
    let mut peer = Peer::accept(&dispatcher).await;
    peer.wait_for_health(Health::Healthy).await;
    // The library user's "unhealthy" wins over a passing check, at once.
    agent.health.send_replace(Health::Unhealthy);
    assert!(peer.wait_for_health(Health::Unhealthy).await < SLACK);
    agent.health.send_replace(Health::Healthy);
    assert!(peer.wait_for_health(Health::Healthy).await < SLACK);
    // Health and drain are separate: a draining healthy backend says both.
    agent.state.send_replace(State::Draining);
    let heartbeat = peer.heartbeat().await;
    assert_eq!((heartbeat.state, heartbeat.health), (State::Draining, Health::Healthy));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_check_the_library_user_sets_the_health() {
    let dispatcher = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = v2_config(&dispatcher.local_addr().unwrap().to_string(), 7000, None);
    // With an hour between samples, only a change of health can send the next heartbeats.
    config.interval = Duration::from_secs(3600);
    let agent = RunningAgent::start(config);
    let mut peer = Peer::accept(&dispatcher).await;
    assert_eq!(peer.heartbeat().await.health, Health::Healthy, "no check: healthy unless told");
    agent.health.send_replace(Health::Unhealthy);
    assert_eq!(peer.heartbeat().await.health, Health::Unhealthy);
    agent.health.send_replace(Health::Healthy);
    assert_eq!(peer.heartbeat().await.health, Health::Healthy);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_legacy_agent_stays_out_of_the_table_until_its_check_passes() {
    let dispatcher = TestServer::start().await;
    let port = closed_port().await;
    let advertise = format!("127.0.0.1:{port}").parse().unwrap();
    let config = AgentConfig {
        interval: Duration::from_millis(50),
        health_check: Some(HealthCheck::new(CheckTarget::Tcp(None)).every(CHECK_INTERVAL)),
        ..AgentConfig::new(dispatcher.addr.to_string(), advertise).legacy()
    };
    let stop = CancellationToken::new();
    let (_state, watched) = watch::channel(State::Ready);
    let task = tokio::spawn(loadwise_agent::run_with_state(
        config,
        || Ok(40),
        watched,
        stop.clone().cancelled_owned(),
    ));

    // Several check intervals pass with nothing listening: the backend never registers.
    tokio::time::sleep(CHECK_INTERVAL * 5).await;
    assert_eq!(dispatcher.dispatcher.backend_count(), 0);
    assert_eq!(dispatcher.stats().heartbeats, 0, "an unhealthy legacy agent sends nothing");

    let backend = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let start = Instant::now();
    dispatcher.wait_for_backend("127.0.0.1", port).await;
    eprintln!("legacy: in the table {:?} after the backend listened", start.elapsed());
    drop(backend);
    let start = Instant::now();
    wait_until("the unhealthy backend left the table", || dispatcher.dispatcher.backend_count() == 0).await;
    eprintln!("legacy: out of the table {:?} after the backend closed", start.elapsed());
    assert!(start.elapsed() < DEADLINE);
    stop.cancel();
    within(task).await.unwrap().unwrap();
    dispatcher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impossible_check_is_refused_before_connecting() {
    let config = AgentConfig {
        health_check: Some(HealthCheck { rise: 0, ..HealthCheck::new(CheckTarget::Tcp(None)) }),
        ..AgentConfig::new("127.0.0.1:1", "10.0.0.1:7000".parse().unwrap())
    };
    let (_state, watched) = watch::channel(State::Ready);
    let error = loadwise_agent::run_with_state(config, || Ok(40), watched, std::future::pending()).await;
    assert_eq!(error.unwrap_err().setting, "check-rise");
}

/// An HTTP/1.1 responder on loopback answering every request with the status held in
/// `status` (and closing), or with nothing while it is 0, until dropped.
#[cfg(feature = "http-check")]
mod http {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    pub struct Responder {
        pub addr: std::net::SocketAddr,
        pub status: Arc<AtomicU16>,
        task: JoinHandle<()>,
    }

    impl Drop for Responder {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl Responder {
        pub async fn start(status: u16) -> Responder {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let status = Arc::new(AtomicU16::new(status));
            let answer = Arc::clone(&status);
            let task = tokio::spawn(async move {
                // Connections held open without an answer (status 0).
                let mut held = Vec::new();
                while let Ok((mut stream, _)) = listener.accept().await {
                    let status = answer.load(Ordering::Relaxed);
                    if status == 0 {
                        held.push(stream);
                        continue;
                    }
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    assert!(request.starts_with(b"GET /healthz HTTP/1.1\r\n"), "{request:?}");
                    let reply =
                        format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    let _ = stream.write_all(reply.as_bytes()).await;
                }
            });
            Responder { addr, status, task }
        }
    }
}

#[cfg(feature = "http-check")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_check_passes_on_2xx_only() {
    use std::sync::atomic::Ordering;

    let responder = http::Responder::start(503).await;
    let dispatcher = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/healthz", responder.addr).parse().unwrap();
    let config = v2_config(&dispatcher.local_addr().unwrap().to_string(), 7000, Some(target));
    let agent = RunningAgent::start(config);
    let mut peer = Peer::accept(&dispatcher).await;
    for _ in 0..5 {
        assert_eq!(peer.heartbeat().await.health, Health::Unhealthy, "503 fails");
    }
    responder.status.store(204, Ordering::Relaxed);
    peer.wait_for_health(Health::Healthy).await;
    responder.status.store(500, Ordering::Relaxed);
    peer.wait_for_health(Health::Unhealthy).await;
    responder.status.store(200, Ordering::Relaxed);
    peer.wait_for_health(Health::Healthy).await;
    drop(responder);
    peer.wait_for_health(Health::Unhealthy).await;
    agent.stop().await;
}

#[cfg(feature = "http-check")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_say_is_sent_at_once_even_while_a_check_hangs() {
    use std::sync::atomic::Ordering;

    let responder = http::Responder::start(200).await;
    let dispatcher = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/healthz", responder.addr).parse().unwrap();
    let mut config = v2_config(&dispatcher.local_addr().unwrap().to_string(), 7000, Some(target));
    // Checks take the whole interval once the backend hangs, so one is nearly always under way.
    let check = HealthCheck::new(config.health_check.take().unwrap().target).every(Duration::from_secs(1));
    config.health_check = Some(HealthCheck { rise: 1, fall: 100, ..check });
    let agent = RunningAgent::start(config);
    let mut peer = Peer::accept(&dispatcher).await;
    peer.wait_for_health(Health::Healthy).await;
    responder.status.store(0, Ordering::Relaxed);
    // Let a check start and hang.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    agent.health.send_replace(Health::Unhealthy);
    let took = peer.wait_for_health(Health::Unhealthy).await;
    assert!(took < Duration::from_millis(500), "the set health waited for the check: {took:?}");
    agent.stop().await;
}
