//! The agent library against an in-process dispatcher on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use loadwise_agent::{AgentConfig, ProbeError};
use loadwise_core::dispatcher::Dispatcher;
use loadwise_core::model::Load;
use loadwise_protocol::config::ConfigError;
use loadwise_server::{Server, ServerConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(10);

/// A dispatcher on a loopback port, stopped by dropping its token.
struct Dispatch {
    addr: String,
    dispatcher: Arc<Dispatcher>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

async fn start_dispatcher(addr: &str) -> Dispatch {
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = Server::with_listener(listener, ServerConfig::default());
    let addr = server.local_addr().unwrap().to_string();
    let dispatcher = server.dispatcher();
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone().cancelled_owned()));
    Dispatch { addr, dispatcher, stop, task }
}

/// The legacy `mem` a backend's load was read from.
fn mem_of(load: Load) -> Option<u8> {
    match load {
        Load::Percent(figure) | Load::Invalid(figure) => Some(figure as u8),
        Load::Unscored => None,
    }
}

impl Dispatch {
    async fn shut_down(self) {
        self.stop.cancel();
        tokio::time::timeout(DEADLINE, self.task).await.unwrap().unwrap();
    }

    /// The reported mem of the only backend, once one is registered.
    async fn wait_for_mem(&self, wanted: impl Fn(u8) -> bool) -> u8 {
        let poll = async {
            loop {
                if let Some((_, backend)) = self.dispatcher.backends().first()
                    && let Some(mem) = mem_of(backend.report.load)
                    && wanted(mem)
                {
                    return mem;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(DEADLINE, poll).await.expect("the backend reported in time")
    }

    async fn wait_for_no_backend(&self) {
        let poll = async {
            while self.dispatcher.backend_count() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(DEADLINE, poll).await.expect("the backend was removed in time");
    }
}

/// Starts an agent reporting to `server` with the given probe; stops with the token.
fn start_agent(
    server: &str,
    interval: Duration,
    probe: impl FnMut() -> Result<u8, ProbeError> + Send + 'static,
) -> RunningAgent {
    let config = AgentConfig { interval, ..AgentConfig::new(server, "10.0.0.7:7007".parse().unwrap()) };
    let stop = CancellationToken::new();
    let task = tokio::spawn(loadwise_agent::run(config, probe, stop.clone().cancelled_owned()));
    RunningAgent { stop, task }
}

struct RunningAgent {
    stop: CancellationToken,
    task: JoinHandle<Result<(), ConfigError>>,
}

impl RunningAgent {
    /// Stops the agent and checks that it ends promptly and without error.
    async fn stop(self) {
        self.stop.cancel();
        let ended = tokio::time::timeout(DEADLINE, self.task).await.expect("the agent stops in time");
        ended.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_heartbeat_is_sent_on_connect() {
    let dispatch = start_dispatcher("127.0.0.1:0").await;
    // With an hour between heartbeats, only the one sent on connect can register.
    let agent = start_agent(&dispatch.addr, Duration::from_secs(3600), || Ok(42));
    assert_eq!(dispatch.wait_for_mem(|_| true).await, 42);
    let backend = dispatch.dispatcher.backends()[0].1.clone();
    assert_eq!(backend.report.legacy.to_string(), "10.0.0.7:7007");
    agent.stop().await;
    dispatch.wait_for_no_backend().await;
    dispatch.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_heartbeat_takes_a_fresh_sample() {
    let dispatch = start_dispatcher("127.0.0.1:0").await;
    let samples = AtomicU8::new(0);
    let probe = move || Ok(samples.fetch_add(1, Ordering::Relaxed) % 100);
    let agent = start_agent(&dispatch.addr, Duration::from_millis(20), probe);
    dispatch.wait_for_mem(|mem| mem >= 3).await;
    agent.stop().await;
    dispatch.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sample_skips_the_heartbeat_but_not_the_next() {
    let dispatch = start_dispatcher("127.0.0.1:0").await;
    let mut calls = 0u32;
    let probe = move || {
        calls += 1;
        if calls <= 3 { Err(ProbeError::Other("not yet".into())) } else { Ok(calls as u8) }
    };
    let agent = start_agent(&dispatch.addr, Duration::from_millis(20), probe);
    // Failed samples send nothing, so the first report is the fourth sample.
    assert_eq!(dispatch.wait_for_mem(|_| true).await, 4);
    agent.stop().await;
    dispatch.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reconnects_to_a_restarted_dispatcher() {
    let first = start_dispatcher("127.0.0.1:0").await;
    let addr = first.addr.clone();
    let agent = start_agent(&addr, Duration::from_millis(50), || Ok(10));
    first.wait_for_mem(|_| true).await;
    first.shut_down().await;

    let second = start_dispatcher(&addr).await;
    assert_eq!(second.wait_for_mem(|_| true).await, 10);
    agent.stop().await;
    second.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_waits_for_a_dispatcher_that_is_not_up_yet() {
    // Reserve a port, free it, start the agent, then the dispatcher on that port.
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
    let agent = start_agent(&addr, Duration::from_millis(50), || Ok(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dispatch = start_dispatcher(&addr).await;
    assert_eq!(dispatch.wait_for_mem(|_| true).await, 5);
    agent.stop().await;
    dispatch.shut_down().await;
}

#[tokio::test]
async fn an_unworkable_configuration_fails_before_connecting() {
    let config = AgentConfig {
        interval: Duration::ZERO,
        ..AgentConfig::new("127.0.0.1:1", "10.0.0.7:7007".parse().unwrap())
    };
    let error = loadwise_agent::run(config, || Ok(1), std::future::pending()).await.unwrap_err();
    assert_eq!(error.setting, "interval");
}
