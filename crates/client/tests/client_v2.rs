//! Clients asking with protocol v2 (`client::pick_service`, `Failover::pick_service`)
//! against scripted dispatchers on loopback.

use std::time::Duration;

use bytes::BytesMut;
use loadwise_client::{self as client, Failover, FailoverConfig, PickError};
use loadwise_protocol::unix_time_now;
use loadwise_protocol::v2::{self, Decoded, ErrorCode, Message, ServiceName};
use loadwise_testkit::{Scripted, picked_v6, unknown_service, within};
use tokio::io::AsyncReadExt;

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
async fn the_dispatcher_declines_a_service_without_backends_and_skipped_frames_cost_one_error_per_read() {
    let server = loadwise_testkit::TestServer::start().await;
    let addr = server.addr.to_string();
    let error = within(client::pick_service(&addr, &game(), Duration::from_secs(5))).await.unwrap_err();
    assert!(matches!(error, PickError::Declined(ErrorCode::UNKNOWN_SERVICE)), "{error:?}");
    // Three frames of an unknown v2 type in one read get one Error: no amplification.
    let mut v2_peer = server.connect().await;
    let unknown_type = [4u8, 0, 0x42, 0x02];
    loadwise_testkit::send(&mut v2_peer, &[unknown_type; 3].concat()).await;
    let mut buf = BytesMut::new();
    let first = loop {
        if let Some((Decoded::Message(Message::Error(error)), consumed)) = v2::decode(&buf, 4096).unwrap() {
            assert_eq!(buf.len(), consumed, "more than one reply to three skipped frames");
            break error;
        }
        assert!(within(v2_peer.read_buf(&mut buf)).await.unwrap() > 0);
    };
    assert_eq!(first.code, ErrorCode::UNKNOWN_TYPE);
    loadwise_testkit::assert_quiet_for(&mut v2_peer, Duration::from_millis(200)).await;
    // Legacy logins on the same port are unaffected.
    let mut client = server.connect().await;
    assert_eq!(loadwise_testkit::login(&mut client).await, loadwise_testkit::ERROR_REPLY);
    server.stop().await;
}
