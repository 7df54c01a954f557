//! Clients asking with protocol v2 (`client::pick_service`, `Failover::pick_service`,
//! `loadwise pick --service`) against scripted dispatchers on loopback.

mod common;
mod process;

use std::time::Duration;

use bytes::BytesMut;
use common::within;
use loadwise::client::{self, Failover, FailoverConfig, PickError};
use loadwise::protocol::unix_time_now;
use loadwise::protocol::v2::{
    self, Decoded, Endpoint, ErrorCode, Message, PickOutcome, PickReply, PickRequest, Picked, ServiceName,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A dispatcher that answers every PickRequest with `answer(request)`, and records
/// the requests.
struct Scripted {
    addr: String,
    task: JoinHandle<Vec<PickRequest>>,
}

impl Scripted {
    async fn start(answer: fn(&PickRequest) -> PickOutcome, connections: usize) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..connections {
                let (stream, _) = listener.accept().await.unwrap();
                seen.push(answer_one(stream, answer).await);
            }
            seen
        });
        Scripted { addr, task }
    }

    async fn requests(self) -> Vec<PickRequest> {
        within(self.task).await.unwrap()
    }
}

async fn answer_one(mut stream: TcpStream, answer: fn(&PickRequest) -> PickOutcome) -> PickRequest {
    let mut buf = BytesMut::new();
    let request = loop {
        if let Some((Decoded::Message(Message::PickRequest(request)), _)) = v2::decode(&buf, 4096).unwrap() {
            break request;
        }
        assert!(stream.read_buf(&mut buf).await.unwrap() > 0, "the client closed before asking");
    };
    let reply = PickReply { request_id: request.request_id, outcome: answer(&request) };
    stream.write_all(&Message::PickReply(reply).encode().unwrap()).await.unwrap();
    request
}

fn picked_v6(_: &PickRequest) -> PickOutcome {
    let endpoint = Endpoint::from_socket_addr("[2001:db8::9]:7009".parse().unwrap()).unwrap();
    PickOutcome::Picked(Picked { backend_id: 0x1234, endpoint, ticket: vec![0xab, 0xcd] })
}

fn unknown_service(_: &PickRequest) -> PickOutcome {
    PickOutcome::Refused(ErrorCode::UNKNOWN_SERVICE)
}

fn game() -> ServiceName {
    ServiceName::new("game").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_pick_names_the_service_and_gets_the_endpoint_id_and_ticket() {
    let dispatcher = Scripted::start(picked_v6, 1).await;
    let picked =
        within(client::pick_service(&dispatcher.addr, &game(), Duration::from_secs(2))).await.unwrap();
    assert_eq!(picked.endpoint.to_string(), "[2001:db8::9]:7009");
    assert_eq!((picked.backend_id, picked.ticket.as_slice()), (0x1234, &[0xab, 0xcd][..]));
    let requests = dispatcher.requests().await;
    assert_eq!(requests[0].service, game());
    assert!(requests[0].timestamp.abs_diff(unix_time_now()) <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_passes_over_a_dispatcher_that_does_not_know_the_service() {
    let (unknowing, knowing) =
        (Scripted::start(unknown_service, 30).await, Scripted::start(picked_v6, 30).await);
    let client =
        Failover::new(vec![unknowing.addr.clone(), knowing.addr.clone()], FailoverConfig::default()).unwrap();
    // The order is random, and a refusal does not hold a dispatcher down: within a
    // few picks one asks the unknowing dispatcher first.
    let mut declined = 0;
    for _ in 0..20 {
        let answer = within(client.pick_service(&game())).await.unwrap();
        assert_eq!(answer.dispatcher, knowing.addr);
        for attempt in &answer.failed {
            assert_eq!(attempt.dispatcher, unknowing.addr);
            assert!(matches!(attempt.error, PickError::Declined(code) if code == ErrorCode::UNKNOWN_SERVICE));
            declined += 1;
        }
    }
    assert!(declined > 0, "the unknowing dispatcher was never asked first in 20 picks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_service_prints_the_address_and_the_ticket() {
    let text = Scripted::start(picked_v6, 1).await;
    let server = text.addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        process::run_to_end(&["pick", "--server", &server, "--service", "game"], &[])
    })
    .await
    .unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout, "[2001:db8::9]:7009\nabcd\n");

    let json = Scripted::start(picked_v6, 1).await;
    let server = json.addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        process::run_to_end(&["pick", "--server", &server, "--service", "game", "--json"], &[])
    })
    .await
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(value["backend"], "[2001:db8::9]:7009");
    assert_eq!((value["backend_id"].as_u64(), value["ticket"].as_str()), (Some(0x1234), Some("abcd")));

    let refusing = Scripted::start(unknown_service, 1).await;
    let server = refusing.addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        process::run_to_end(&["pick", "--server", &server, "--service", "game"], &[])
    })
    .await
    .unwrap();
    assert_eq!(out.code, Some(3), "a declined pick is a refusal: {out:?}");
    assert!(out.stderr.contains("unknown service"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_declines_a_service_without_backends_and_skipped_frames_cost_one_error_per_read() {
    let server = common::TestServer::start().await;
    let addr = server.addr.to_string();
    let error = within(client::pick_service(&addr, &game(), Duration::from_secs(5))).await.unwrap_err();
    assert!(matches!(error, PickError::Declined(ErrorCode::UNKNOWN_SERVICE)), "{error:?}");
    // Three frames of an unknown v2 type in one read get one Error: no amplification.
    let mut v2_peer = server.connect().await;
    let unknown_type = [4u8, 0, 0x42, 0x02];
    common::send(&mut v2_peer, &[unknown_type; 3].concat()).await;
    let mut buf = BytesMut::new();
    let first = loop {
        if let Some((Decoded::Message(Message::Error(error)), consumed)) = v2::decode(&buf, 4096).unwrap() {
            assert_eq!(buf.len(), consumed, "more than one reply to three skipped frames");
            break error;
        }
        assert!(within(v2_peer.read_buf(&mut buf)).await.unwrap() > 0);
    };
    assert_eq!(first.code, ErrorCode::UNKNOWN_TYPE);
    common::assert_quiet_for(&mut v2_peer, Duration::from_millis(200)).await;
    // Legacy logins on the same port are unaffected.
    let mut client = server.connect().await;
    assert_eq!(common::login(&mut client).await, common::ERROR_REPLY);
    server.stop().await;
}
