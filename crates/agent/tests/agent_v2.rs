//! The agent speaking protocol v2 to a scripted dispatcher on loopback: the
//! heartbeat's fields, the authenticated registration, and draining.

use std::time::Duration;

use loadwise_agent::cpustat::CpuProbe;
use loadwise_agent::{AgentConfig, HostProbe, MemoryProbe, Protocol, Sample, Secret};
use loadwise_protocol::config::ConfigError;
use loadwise_protocol::v2::{
    self, Challenge, ErrorCode, ErrorMessage, Host, Message, Registered, ServiceName, State, auth,
};
use loadwise_testkit::{TestServer, wait_until, within};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod common;
use common::Peer;

const SECRET: &[u8] = b"a secret of 32 bytes, for tests!";

struct RunningAgent {
    state: watch::Sender<State>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), ConfigError>>,
}

impl RunningAgent {
    fn start(config: AgentConfig, probe: HostProbe) -> RunningAgent {
        let (state, watched) = watch::channel(State::Ready);
        let stop = CancellationToken::new();
        let run = loadwise_agent::run_with_state(config, probe, watched, stop.clone().cancelled_owned());
        RunningAgent { state, stop, task: tokio::spawn(run) }
    }

    async fn stop(self) {
        self.stop.cancel();
        within(self.task).await.unwrap().unwrap();
    }
}

/// Memory 30 %, CPU 50 % from the second sample on, and the backend's own figures.
fn probe(dir_name: &str) -> HostProbe {
    let dir = std::env::temp_dir().join(format!("loadwise-agent-v2-{}-{dir_name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("meminfo"), "MemTotal: 1000 kB\nMemAvailable: 700 kB\n").unwrap();
    std::fs::write(dir.join("stat"), "cpu 100 0 0 900 0 0 0 0\n").unwrap();
    std::fs::write(dir.join("metrics"), "connections 12\nqueue_depth 3.5\n").unwrap();
    HostProbe::with(MemoryProbe::with_path(dir.join("meminfo")), CpuProbe::with_path(dir.join("stat")))
        .with_metrics_file(dir.join("metrics"))
        .with_extra(|sample: &mut Sample| {
            sample.metrics.push(v2::Metric { name: v2::MetricName::new("matches").unwrap(), value: 2.0 });
            Ok(())
        })
}

fn config(server: &str, advertise: &str, interval: Duration) -> AgentConfig {
    let service = ServiceName::new("game").unwrap();
    let config = AgentConfig::new(server, advertise.parse().unwrap()).v2(service);
    AgentConfig { interval, weight: 200.try_into().unwrap(), ..config }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_the_heartbeat_carries_every_field_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap().to_string();
    let config = config(&server, "[2001:db8::7]:7007", Duration::from_secs(3600));
    let expected_id = config.backend_id;
    let agent = RunningAgent::start(config, probe("fields"));
    let mut peer = Peer::accept(&listener).await;
    let heartbeat = peer.heartbeat().await;
    assert_eq!(heartbeat.backend_id, expected_id);
    assert_eq!(heartbeat.service.as_str(), "game");
    assert!(matches!(heartbeat.endpoint.host, Host::V6(ip) if ip.to_string() == "2001:db8::7"));
    assert_eq!(heartbeat.endpoint.port.get(), 7007);
    assert_eq!(heartbeat.memory.map(v2::Percent::hundredths), Some(3000));
    assert_eq!(heartbeat.cpu, None, "the first CPU sample only sets the starting point");
    assert_eq!(heartbeat.connections, Some(12));
    let metrics: Vec<(&str, f64)> = heartbeat.metrics.iter().map(|m| (m.name.as_str(), m.value)).collect();
    assert_eq!(metrics, [("queue_depth", 3.5), ("matches", 2.0)]);
    assert_eq!((heartbeat.weight.get(), heartbeat.state), (200, State::Ready));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_in_the_metrics_file_leaves_the_good_ones_and_the_heartbeats() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap().to_string();
    let dir = std::env::temp_dir().join(format!("loadwise-agent-v2-{}-badline", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("meminfo"), "MemTotal: 1000 kB\nMemAvailable: 700 kB\n").unwrap();
    std::fs::write(dir.join("metrics"), "connections 12\nqueue_depth three\ngpu 0.5\n").unwrap();
    let probe =
        HostProbe::with(MemoryProbe::with_path(dir.join("meminfo")), CpuProbe::with_path(dir.join("stat")))
            .with_metrics_file(dir.join("metrics"));
    let agent = RunningAgent::start(config(&server, "10.0.0.7:7007", Duration::from_millis(50)), probe);
    let mut peer = Peer::accept(&listener).await;
    for _ in 0..3 {
        let heartbeat = peer.heartbeat().await;
        assert_eq!(heartbeat.connections, Some(12));
        let metrics: Vec<(&str, f64)> =
            heartbeat.metrics.iter().map(|m| (m.name.as_str(), m.value)).collect();
        assert_eq!(metrics, [("gpu", 0.5)]);
    }
    std::fs::remove_file(dir.join("metrics")).unwrap();
    let heartbeat = peer.heartbeat().await;
    assert_eq!(heartbeat.memory.map(v2::Percent::hundredths), Some(3000), "a missing file stops nothing");
    agent.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_the_agent_registers_before_any_heartbeat() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap().to_string();
    let config = AgentConfig {
        secret: Some(Secret::new(SECRET).unwrap()),
        ..config(&server, "game-7.example.net:7000", Duration::from_millis(50))
    };
    let agent = RunningAgent::start(config, probe("auth"));

    // A dispatcher with another secret refuses; the agent sends no heartbeat and
    // comes back on a new connection.
    let mut refused = Peer::accept(&listener).await;
    assert_eq!(refused.next().await, Message::Hello(v2::Hello));
    let nonce = auth::new_nonce(&mut rand::rng());
    refused.send(Message::Challenge(Challenge { nonce, server_time: 0 })).await;
    let Message::Register(register) = refused.next().await else { panic!("expected Register") };
    assert!(auth::verify_register(b"another secret, not the agent's", &nonce, &register).is_err());
    refused.send(Message::Error(ErrorMessage::new(ErrorCode::AUTH_FAILED, "wrong secret"))).await;
    refused.expect_closed().await;

    let mut accepted = Peer::accept(&listener).await;
    assert_eq!(accepted.next().await, Message::Hello(v2::Hello));
    let nonce = auth::new_nonce(&mut rand::rng());
    accepted.send(Message::Challenge(Challenge { nonce, server_time: 0 })).await;
    let Message::Register(register) = accepted.next().await else { panic!("expected Register") };
    auth::verify_register(SECRET, &nonce, &register).expect("the agent proves the secret");
    assert_eq!(register.service.as_str(), "game");
    accepted.send(Message::Registered(Registered { backend_id: register.backend_id })).await;
    let heartbeat = accepted.heartbeat().await;
    assert_eq!(heartbeat.backend_id, register.backend_id);
    assert!(matches!(heartbeat.endpoint.host, Host::Name(ref name) if name.as_str() == "game-7.example.net"));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_is_sent_at_once_and_undone_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap().to_string();
    // With an hour between samples, only a state change can send the next heartbeats.
    let agent =
        RunningAgent::start(config(&server, "10.0.0.7:7007", Duration::from_secs(3600)), probe("drain"));
    let mut peer = Peer::accept(&listener).await;
    assert_eq!(peer.heartbeat().await.state, State::Ready);
    agent.state.send_replace(State::Draining);
    assert_eq!(peer.heartbeat().await.state, State::Draining);
    agent.state.send_replace(State::Ready);
    assert_eq!(peer.heartbeat().await.state, State::Ready);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_legacy_agent_leaves_the_table_and_returns_when_ready() {
    let dispatcher = TestServer::start().await;
    let config = AgentConfig {
        interval: Duration::from_millis(50),
        ..AgentConfig::new(dispatcher.addr.to_string(), "10.0.0.8:7008".parse().unwrap()).legacy()
    };
    assert_eq!(config.protocol, Protocol::Legacy);
    let (state, watched) = watch::channel(State::Ready);
    let stop = CancellationToken::new();
    let task = tokio::spawn(loadwise_agent::run_with_state(
        config,
        || Ok(40),
        watched,
        stop.clone().cancelled_owned(),
    ));
    dispatcher.wait_for_backend("10.0.0.8", 7008).await;
    state.send_replace(State::Draining);
    wait_until("the draining backend left the table", || dispatcher.dispatcher.backend_count() == 0).await;
    // It stays out while draining, heartbeat interval after interval.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(dispatcher.dispatcher.backend_count(), 0);
    state.send_replace(State::Ready);
    dispatcher.wait_for_backend("10.0.0.8", 7008).await;
    stop.cancel();
    within(task).await.unwrap().unwrap();
    dispatcher.stop().await;
}
