//! A slot backend's agent against a scripted dispatcher: grants wait for the first
//! LeaseReport, and a place that comes free between samples is granted by a top-up
//! heartbeat, no sooner than a quarter of the interval after the last heartbeat.

use std::time::{Duration, Instant};

use loadwise_agent::{AgentConfig, Places, TOP_UP_FRACTION};
use loadwise_protocol::v2::{LeaseReport, Message, ServiceName, Slots};
use loadwise_testkit::within;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod common;
use common::Peer;

/// Long enough that a regular heartbeat cannot be mistaken for a top-up.
const INTERVAL: Duration = Duration::from_secs(8);
const MIN_GAP: Duration = INTERVAL.checked_div(TOP_UP_FRACTION).unwrap();

struct RunningAgent {
    stop: CancellationToken,
    task: JoinHandle<Result<(), loadwise_protocol::config::ConfigError>>,
}

impl RunningAgent {
    fn start(server: &str, places: &Places) -> RunningAgent {
        let config =
            AgentConfig::new(server, "10.0.0.7:7007".parse().unwrap()).v2(ServiceName::new("game").unwrap());
        let config = AgentConfig { interval: INTERVAL, slots: Some(places.clone()), ..config };
        let stop = CancellationToken::new();
        let task = tokio::spawn(loadwise_agent::run(config, || Ok(30), stop.clone().cancelled_owned()));
        RunningAgent { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        within(self.task).await.unwrap().unwrap();
    }
}

async fn slots(peer: &mut Peer) -> Slots {
    peer.heartbeat().await.slots.expect("a slot backend's heartbeats carry slots")
}

async fn report(peer: &mut Peer, slots: Slots, sent_total: u64) {
    peer.send(Message::LeaseReport(LeaseReport { grant_seq: slots.grant_seq, sent_total })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_place_freed_between_samples_is_granted_by_a_top_up_heartbeat() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let places = Places::new(2, Duration::from_secs(30));
    let agent = RunningAgent::start(&listener.local_addr().unwrap().to_string(), &places);
    let mut peer = Peer::accept(&listener).await;

    let first = slots(&mut peer).await;
    assert_eq!((first.capacity, first.grant_total), (2, 0), "nothing granted before a first LeaseReport");
    report(&mut peer, first, 0).await;
    let granted = slots(&mut peer).await;
    let granted_at = Instant::now();
    assert_eq!(granted.grant_total, 2, "the first answer brings a real grant at once");

    // Both places are sent and arrive; one client leaves.
    report(&mut peer, granted, 2).await;
    within(async {
        while places.promised() != 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    places.arrive();
    places.arrive();
    places.leave();

    let top_up = slots(&mut peer).await;
    let gap = granted_at.elapsed();
    assert_eq!((top_up.in_use, top_up.grant_total), (1, 3), "the freed place is granted: {top_up:?}");
    // Measured from when this side read the heartbeats: a few ms either way.
    assert!(gap >= MIN_GAP - Duration::from_millis(100), "a top-up {gap:?} after the last heartbeat");
    assert!(gap < INTERVAL - Duration::from_secs(1), "a top-up, not the next regular heartbeat: {gap:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_top_up_before_the_dispatcher_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let places = Places::new(2, Duration::from_secs(30));
    places.set_in_use(2);
    let agent = RunningAgent::start(&listener.local_addr().unwrap().to_string(), &places);
    let mut peer = Peer::accept(&listener).await;
    let first = slots(&mut peer).await;
    assert_eq!(first.grant_total, 0);
    places.leave();
    let quiet = tokio::time::timeout(MIN_GAP + Duration::from_millis(500), peer.heartbeat()).await;
    assert!(quiet.is_err(), "a heartbeat before the first LeaseReport: {quiet:?}");
    agent.stop().await;
}
