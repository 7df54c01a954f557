//! The dispatcher's TCP server on loopback, spoken to in raw legacy bytes.
//!
//! Each test starts its own server on `127.0.0.1:0`, bounds every wait, and stops the
//! server at the end. Waiting for the server to notice something is done by polling
//! a condition under a deadline, never by sleeping for a guessed time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use loadwise_core::dispatcher::DispatchSettings;
use loadwise_server::ConnectionLimits;
use loadwise_server::ServerConfig;
use loadwise_server::stats::{CloseReason, ConnectionKind, ConnectionRefusal};
use loadwise_testkit::*;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// A configuration with a short TTL, everything else default.
fn config_with_ttl(ttl: Duration) -> ServerConfig {
    ServerConfig {
        dispatch: DispatchSettings { ttl, ..DispatchSettings::default() },
        ..ServerConfig::default()
    }
}

/// The default configuration with its policy, least-loaded, written out, for the
/// tests that count on least-loaded's choices.
fn least_loaded() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.dispatch.policy = loadwise_core::selection::Policy::LeastLoaded;
    config
}

/// A configuration with its connection limits changed.
fn config_with_limits(limits: ConnectionLimits) -> ServerConfig {
    ServerConfig { connection: limits, ..ServerConfig::default() }
}

/// A dispatcher with these connection limits and every other setting at its default.
async fn start_with_limits(limits: ConnectionLimits) -> TestServer {
    TestServer::start_with(config_with_limits(limits)).await
}

/// The ports named by `n` logins on `stream`, as a count per port.
async fn pick_ports(stream: &mut TcpStream, n: usize) -> HashMap<u16, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts.entry(reply_port(&login(stream).await)).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_registers_a_backend_that_logins_name_byte_for_byte() {
    let _serial = shared_access().await;
    let server = TestServer::start().await;
    // The protocol document's example heartbeat: mem 20, 10.0.0.2, port 1002.
    let example = [
        0x17, 0x00, 0x00, 0x00, 0x14, 0x31, 0x30, 0x2e, 0x30, 0x2e, 0x30, 0x2e, 0x32, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xea, 0x03,
    ];
    let mut backend = server.connect().await;
    send(&mut backend, &example).await;
    server.wait_for_backend("10.0.0.2", 1002).await;

    let mut client = server.connect().await;
    let expected = [
        0x16, 0x00, 0x02, 0x00, 0xea, 0x03, 0x31, 0x30, 0x2e, 0x30, 0x2e, 0x30, 0x2e, 0x32, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    assert_eq!(login(&mut client).await, expected);
    // The example timestamp from the document is far off: error reply.
    send(&mut client, &[0x0c, 0x00, 0x02, 0x00, 0x00, 0xf1, 0x53, 0x65, 0, 0, 0, 0]).await;
    assert_eq!(read_reply(&mut client).await, ERROR_REPLY);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_returns_the_ip_bytes_exactly_as_sent_even_after_the_nul() {
    let _serial = shared_access().await;
    let server = TestServer::start().await;
    let mut ip = ip_field("10.1.2.3");
    ip[9..15].copy_from_slice(b"junk!!");
    let _backend = {
        let mut stream = server.connect().await;
        send(&mut stream, &heartbeat_raw(5, ip, 0x1234)).await;
        stream
    };
    wait_until("backend registered", || server.dispatcher.backend_count() == 1).await;
    let mut client = server.connect().await;
    assert_eq!(login(&mut client).await, success_reply(ip, 0x1234));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_heartbeat_on_the_same_connection_replaces_the_entry() {
    let _serial = shared_access().await;
    let server = TestServer::start().await;
    let mut backend = server.register(30, "10.0.0.1", 1001).await;
    let mut client = server.connect().await;
    assert_eq!(login(&mut client).await, reply_for("10.0.0.1", 1001));

    send(&mut backend, &heartbeat(60, "10.0.0.9", 2002)).await;
    server.wait_for_backend("10.0.0.9", 2002).await;
    assert_eq!(server.dispatcher.backend_count(), 1);
    let backends = server.dispatcher.backends();
    assert_eq!(backends[0].1.report.load, loadwise_core::model::Load::Percent(60.0));
    assert_eq!(login(&mut client).await, reply_for("10.0.0.9", 2002));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_loaded_backend_wins() {
    let _serial = shared_access().await;
    // With no setting changed: the contract of the original server.
    let server = TestServer::start().await;
    let _a = server.register(50, "10.0.0.1", 1001).await;
    let _b = server.register(20, "10.0.0.2", 1002).await;
    let _c = server.register(70, "10.0.0.3", 1003).await;
    let mut client = server.connect().await;
    for _ in 0..10 {
        assert_eq!(login(&mut client).await, reply_for("10.0.0.2", 1002));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ties_rotate_evenly() {
    let _serial = shared_access().await;
    let mut config = least_loaded();
    // Slow start would weigh each backend by its registration time.
    config.dispatch.load.slow_start = Duration::ZERO;
    let server = TestServer::start_with(config).await;
    let _a = server.register(40, "10.0.0.1", 1001).await;
    let _b = server.register(40, "10.0.0.2", 1002).await;
    let _c = server.register(40, "10.0.0.3", 1003).await;
    let mut client = server.connect().await;
    let counts = pick_ports(&mut client, 30).await;
    assert_eq!(counts, HashMap::from([(1001, 10), (1002, 10), (1003, 10)]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_above_100_ranks_last_is_counted_and_still_serves_alone() {
    let _serial = shared_access().await;
    let server = TestServer::start().await;
    let _broken = server.register(182, "10.0.0.1", 1001).await;
    let full = server.register(100, "10.0.0.2", 1002).await;
    let mut client = server.connect().await;
    for _ in 0..4 {
        assert_eq!(login(&mut client).await, reply_for("10.0.0.2", 1002));
    }
    assert_eq!(server.stats().invalid_mem_reports, 1);

    drop(full);
    wait_until("the valid backend is evicted", || server.dispatcher.backend_count() == 1).await;
    let _also_broken = server.register(250, "10.0.0.3", 1003).await;
    assert_eq!(server.stats().invalid_mem_reports, 2);
    let counts = pick_ports(&mut client, 10).await;
    assert_eq!(counts, HashMap::from([(1001, 5), (1003, 5)]));
    server.stop().await;
}

/// Registers one backend, ends its connection with `close`, and checks that it is
/// evicted and logins get the exact error reply.
async fn assert_close_evicts(close: impl FnOnce(TcpStream)) {
    let _serial = shared_access().await;
    let server = TestServer::start().await;
    let backend = server.register(10, "10.0.0.1", 1001).await;
    let mut client = server.connect().await;
    assert_eq!(login(&mut client).await, reply_for("10.0.0.1", 1001));
    close(backend);
    wait_until("backend evicted", || server.dispatcher.backend_count() == 0).await;
    assert_eq!(login(&mut client).await, ERROR_REPLY);
    assert_eq!(server.stats().evicted_disconnected, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_close_evicts_the_backend() {
    assert_close_evicts(drop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_evicts_the_backend() {
    assert_close_evicts(|stream| {
        stream.set_zero_linger().expect("SO_LINGER 0");
        drop(stream);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_backend_expires_after_the_ttl() {
    let _serial = shared_access().await;
    // Long enough that the presence check below always runs well inside it.
    let ttl = Duration::from_secs(1);
    let server = TestServer::start_with(config_with_ttl(ttl)).await;
    let start = Instant::now();
    let _silent = server.register(10, "10.0.0.1", 1001).await;
    let mut client = server.connect().await;
    assert_eq!(login(&mut client).await, reply_for("10.0.0.1", 1001), "present before the TTL");
    assert!(start.elapsed() < ttl, "the presence check took longer than the TTL");
    let deadline = Instant::now() + DEADLINE;
    while login(&mut client).await != ERROR_REPLY {
        assert!(Instant::now() < deadline, "the backend never expired");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    assert!(elapsed >= ttl, "evicted after {elapsed:?}, before the TTL");
    assert_eq!(server.dispatcher.backend_count(), 0);
    assert_eq!(server.stats().evicted_expired, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_removes_a_silent_backend_without_any_login() {
    let _serial = shared_access().await;
    let ttl = Duration::from_millis(300);
    let server = TestServer::start_with(config_with_ttl(ttl)).await;
    let start = Instant::now();
    let _silent = server.register(10, "10.0.0.1", 1001).await;
    wait_until("backend swept", || server.dispatcher.backend_count() == 0).await;
    let elapsed = start.elapsed();
    assert!(elapsed >= ttl, "swept after {elapsed:?}, before the TTL");
    assert_eq!(server.stats().evicted_expired, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_heard_from_again_after_its_ttl_registers_anew() {
    let _serial = shared_access().await;
    let ttl = Duration::from_millis(300);
    let server = TestServer::start_with(config_with_ttl(ttl)).await;
    let mut backend = server.register(10, "10.0.0.1", 1001).await;
    let mut client = server.connect().await;
    assert_eq!(login(&mut client).await, reply_for("10.0.0.1", 1001));
    // Silent for longer than the TTL, connection still open: expired.
    server.wait_for_stat("backend expired", |s| s.evicted_expired, |n| n == 1).await;
    assert_eq!(login(&mut client).await, ERROR_REPLY);
    let expired_at = std::time::Instant::now();

    send(&mut backend, &heartbeat(10, "10.0.0.1", 1001)).await;
    server.wait_for_backend("10.0.0.1", 1001).await;
    assert_eq!(login(&mut client).await, reply_for("10.0.0.1", 1001), "picked again");
    let backends = server.dispatcher.backends();
    assert_eq!(backends.len(), 1);
    let entry = &backends[0].1;
    assert_eq!(entry.heartbeats, 1, "a new entry, not the old one revived");
    assert!(entry.registered_at >= expired_at, "registered anew after the expiry");
    let stats = server.stats();
    assert_eq!((stats.evicted_expired, stats.evicted_disconnected, stats.heartbeats), (1, 0, 2));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_with_no_backend_gets_the_exact_error_reply() {
    let _serial = shared_access().await;
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    assert_eq!(login(&mut client).await, ERROR_REPLY);
    // The connection stays usable after an error reply.
    assert_eq!(login(&mut client).await, ERROR_REPLY);
    assert_eq!(server.stats().logins_no_backend, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_timestamps_are_accepted_within_60_seconds_either_way() {
    let _serial = shared_access().await;
    let server = TestServer::start().await;
    let _backend = server.register(10, "10.0.0.1", 1001).await;
    let mut client = server.connect().await;
    let ok = reply_for("10.0.0.1", 1001);
    assert_eq!(login_with_skew(&mut client, 61).await, ERROR_REPLY);
    assert_eq!(login_with_skew(&mut client, -61).await, ERROR_REPLY);
    assert_eq!(login_with_skew(&mut client, 60).await, ok);
    assert_eq!(login_with_skew(&mut client, -60).await, ok);
    assert_eq!(login_with_skew(&mut client, 0).await, ok);
    assert_eq!(login_at_extreme(&mut client, u64::MAX).await, ERROR_REPLY);
    assert_eq!(login_at_extreme(&mut client, 0).await, ERROR_REPLY);
    server.stop().await;
}

async fn login_at_extreme(stream: &mut TcpStream, timestamp: u64) -> [u8; REPLY_LEN] {
    send(stream, &login_at(timestamp)).await;
    read_reply(stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_frames_in_one_write_are_all_answered_in_order() {
    let _serial = shared_access().await;
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    let mut batch = heartbeat(10, "10.0.0.1", 1001);
    batch.extend(login_now());
    batch.extend(login_stale());
    batch.extend(login_now());
    send(&mut stream, &batch).await;
    let ok = reply_for("10.0.0.1", 1001);
    assert_eq!(read_reply(&mut stream).await, ok);
    assert_eq!(read_reply(&mut stream).await, ERROR_REPLY);
    assert_eq!(read_reply(&mut stream).await, ok);
    server.stop().await;
}

/// Writes `frame` a few bytes at a time with short pauses between the writes,
/// checking after each incomplete part that `not_yet` still holds.
async fn send_in_pieces(stream: &mut TcpStream, frame: &[u8], not_yet: impl Fn() -> bool) {
    let pieces: Vec<&[u8]> = frame.chunks(5).collect();
    let (last, first) = pieces.split_last().expect("a non-empty frame");
    for piece in first {
        send(stream, piece).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(not_yet(), "acted on an incomplete frame");
    }
    send(stream, last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_split_over_several_writes_is_processed_once_complete() {
    let _serial = shared_access().await;
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    send_in_pieces(&mut stream, &heartbeat(10, "10.0.0.1", 1001), || server.dispatcher.backend_count() == 0)
        .await;
    server.wait_for_backend("10.0.0.1", 1001).await;

    send_in_pieces(&mut stream, &login_now(), || server.stats().logins_answered == 0).await;
    assert_eq!(read_reply(&mut stream).await, reply_for("10.0.0.1", 1001));
    // Exactly one reply per login: the next one read answers the next login.
    send(&mut stream, &login_stale()).await;
    assert_eq!(read_reply(&mut stream).await, ERROR_REPLY);
    assert_eq!(server.stats().heartbeats, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commands_are_skipped_by_len_and_the_connection_stays_open() {
    let _serial = shared_access().await;
    let server = TestServer::start().await;
    let _backend = server.register(10, "10.0.0.1", 1001).await;
    let mut stream = server.connect().await;
    // cmd 3 whose body is a whole login frame: skipping by `len` must not answer it.
    let mut register = vec![16, 0, 3, 0];
    register.extend(login_now());
    send(&mut stream, &register).await;
    // cmd 1 and cmd 4 with short bodies, and a bare header.
    send(&mut stream, &[7, 0, 1, 0, 0xaa, 0xbb, 0xcc]).await;
    send(&mut stream, &[4, 0, 4, 0]).await;
    send(&mut stream, &login_stale()).await;
    assert_eq!(read_reply(&mut stream).await, ERROR_REPLY);
    assert_eq!(login(&mut stream).await, reply_for("10.0.0.1", 1001));
    assert_eq!(server.wire().skipped_frames, 3);
    assert_eq!(server.wire().protocol_errors, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_of_any_unknown_command_get_no_reply_on_a_legacy_connection() {
    let _serial = shared_access().await;
    let server = TestServer::start().await;
    let _backend = server.register(10, "10.0.0.1", 1001).await;
    let mut stream = server.connect().await;
    // Commands whose high byte is neither 0 nor 2: 0xffff, version 3, 0x7f02 (bytes
    // `02 7f`), each with a body, then a login. A legacy client reads exactly 22
    // bytes per login: anything sent for the other frames would come first.
    for cmd in [0xffff_u16, 0x0300, 0x7f02, 0x0100] {
        let [c0, c1] = cmd.to_le_bytes();
        send(&mut stream, &[8, 0, c0, c1, 1, 2, 3, 4]).await;
        assert_eq!(login(&mut stream).await, reply_for("10.0.0.1", 1001), "after cmd {cmd:#06x}");
    }
    assert_eq!(server.wire().skipped_frames, 4);
    assert_eq!(server.wire().protocol_errors, 0);
    server.stop().await;
}

/// A heartbeat whose body is valid but whose `len` says 4.
fn four_byte_heartbeat() -> Vec<u8> {
    let mut frame = heartbeat(0, "10.9.9.9", 999);
    frame[0] = 4;
    frame
}

/// A login whose `len` says 11.
fn short_login() -> Vec<u8> {
    let mut frame = login_now();
    frame[0] = 11;
    frame.pop();
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_only_its_own_connection() {
    let _serial = shared_access().await;
    let max_frame_len = 100;
    let server = start_with_limits(ConnectionLimits { max_frame_len, ..ConnectionLimits::default() }).await;
    let mut backend = server.register(10, "10.0.0.1", 1001).await;
    let ok = reply_for("10.0.0.1", 1001);
    let mut too_long_heartbeat = heartbeat(10, "10.9.9.9", 999);
    too_long_heartbeat[0] = max_frame_len as u8 + 1;
    let cases: [(&str, Vec<u8>); 6] = [
        ("len 0", vec![0, 0, 2, 0]),
        ("len 3", vec![3, 0, 2, 0]),
        ("4-byte heartbeat", four_byte_heartbeat()),
        ("login with len 11", short_login()),
        ("unknown command over max_frame_len", vec![101, 0, 3, 0, 1, 2]),
        ("heartbeat over max_frame_len", too_long_heartbeat),
    ];
    for (errors_before, (name, bad)) in cases.into_iter().enumerate() {
        let mut stream = server.connect().await;
        // Two logins first, in the same write: both are answered before the close.
        let mut batch = login_now();
        batch.extend(login_stale());
        batch.extend(&bad);
        send(&mut stream, &batch).await;
        assert_eq!(read_reply(&mut stream).await, ok, "{name}: first reply");
        assert_eq!(read_reply(&mut stream).await, ERROR_REPLY, "{name}: second");
        expect_closed(&mut stream).await;
        server
            .wait_for_wire(
                &format!("{name}: counted as a protocol error"),
                |s| s.protocol_errors,
                |n| n == errors_before as u64 + 1,
            )
            .await;
        // The other connection is unaffected, and nothing was registered.
        assert_eq!(login(&mut backend).await, ok, "{name}: other connection");
        assert_eq!(server.dispatcher.backend_count(), 1, "{name}");
        assert_eq!(server.stats().heartbeats, 1, "{name}: no heartbeat applied");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_frame_is_dropped_after_the_frame_timeout() {
    let _serial = shared_access().await;
    let frame_timeout = Duration::from_millis(300);
    let server = start_with_limits(ConnectionLimits { frame_timeout, ..ConnectionLimits::default() }).await;
    let mut stream = server.connect().await;
    let start = Instant::now();
    send(&mut stream, &heartbeat(10, "10.0.0.1", 1001)[..5]).await;
    expect_closed(&mut stream).await;
    let elapsed = start.elapsed();
    assert!(elapsed >= frame_timeout, "closed after {elapsed:?}");
    assert_eq!(server.dispatcher.backend_count(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frame_timeout_restarts_whenever_a_frame_completes() {
    let _serial = shared_access().await;
    let frame_timeout = Duration::from_millis(300);
    let server = start_with_limits(ConnectionLimits { frame_timeout, ..ConnectionLimits::default() }).await;
    let _backend = server.register(10, "10.0.0.1", 1001).await;
    let ok = reply_for("10.0.0.1", 1001);
    let mut stream = server.connect().await;
    // Every write completes one login and begins the next, so the connection is
    // never without an incomplete frame, yet no frame takes longer than 50 ms.
    let frame = login_now();
    let (head, tail) = frame.split_at(6);
    let overlapping = [tail, head].concat();
    send(&mut stream, head).await;
    let start = Instant::now();
    let mut replies = 0;
    while start.elapsed() < 3 * frame_timeout + Duration::from_millis(100) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(&mut stream, &overlapping).await;
        assert_eq!(read_reply(&mut stream).await, ok, "reply {replies} after {:?}", start.elapsed());
        replies += 1;
    }
    send(&mut stream, tail).await;
    assert_eq!(read_reply(&mut stream).await, ok);
    assert!(replies >= 10, "only {replies} replies");
    assert_eq!(server.stats().logins_answered, replies + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_read_its_replies_is_closed_after_the_write_timeout() {
    let _serial = shared_access().await;
    let write_timeout = Duration::from_millis(300);
    let server = start_with_limits(ConnectionLimits { write_timeout, ..ConnectionLimits::default() }).await;
    let _backend = server.register(10, "10.0.0.1", 1001).await;
    let mut other = server.connect().await;
    let start = Instant::now();
    let flood = server.spawn_flood().await;
    // The other client is served all the while the flooding one is stuck.
    let mut served = 0;
    while !flood.is_finished() {
        assert!(start.elapsed() < DEADLINE, "the flooding client was never closed");
        assert_eq!(login(&mut other).await, reply_for("10.0.0.1", 1001));
        served += 1;
        // Paced, so as not to compete with the server for the CPU.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let flooded = within(flood).await.expect("the flooding task does not panic");
    let elapsed = start.elapsed();
    assert!(flooded.is_err(), "the server took {flooded:?} bytes without closing");
    assert!(elapsed >= write_timeout, "closed after {elapsed:?}");
    assert!(served > 0);
    server.wait_for_wire("flooding connection released", |s| s.connections_open, |n| n == 2).await;
    assert_eq!(login(&mut other).await, reply_for("10.0.0.1", 1001));
    server.stop().await;
}

/// A configuration with this idle timeout.
fn config_with_idle(idle_timeout: Option<Duration>) -> ServerConfig {
    config_with_limits(ConnectionLimits { idle_timeout, ..ConnectionLimits::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_but_a_heartbeating_backend_is_not() {
    let _serial = shared_access().await;
    let idle_timeout = Duration::from_millis(300);
    let server = TestServer::start_with(config_with_idle(Some(idle_timeout))).await;
    let mut backend = server.register(10, "10.0.0.1", 1001).await;
    let mut idle = server.connect().await;
    let heartbeats = async {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            send(&mut backend, &heartbeat(10, "10.0.0.1", 1001)).await;
        }
    };
    let idle_closed = async {
        let start = Instant::now();
        expect_closed(&mut idle).await;
        start.elapsed()
    };
    let ((), idle_for) = tokio::join!(heartbeats, idle_closed);
    assert!(idle_for >= idle_timeout, "closed after {idle_for:?}");
    // The backend's connection survived: still registered and still answered.
    assert_eq!(login(&mut backend).await, reply_for("10.0.0.1", 1001));
    assert_eq!((server.stats().evicted_disconnected, server.wire().connections_open), (0, 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_idle_timeout_an_idle_connection_stays_open() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(config_with_idle(None)).await;
    let _backend = server.register(10, "10.0.0.1", 1001).await;
    let mut idle = server.connect().await;
    assert_quiet_for(&mut idle, Duration::from_secs(1)).await;
    assert_eq!(login(&mut idle).await, reply_for("10.0.0.1", 1001));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_close_releases_the_server_side_at_once() {
    let _serial = shared_access().await;
    let server = TestServer::start().await;
    let stream = server.connect().await;
    server.wait_for_wire("connection open", |s| s.connections_open, |n| n == 1).await;
    drop(stream);
    server.wait_for_wire("connection released", |s| s.connections_open, |n| n == 0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_clients_are_all_answered_and_spread_evenly() {
    const CLIENTS: usize = 64;
    const LOGINS: usize = 1_000;
    const BACKENDS: u16 = 10;
    let _serial = shared_access().await;
    // The backends send one heartbeat only: they must outlive the whole run. Slow
    // start would weigh each backend by its registration time; without it, equal
    // backends take exactly equal turns under least-loaded (p2c would draw at random).
    let mut config = config_with_ttl(Duration::from_secs(600));
    config.dispatch.load.slow_start = Duration::ZERO;
    config.dispatch.policy = loadwise_core::selection::Policy::LeastLoaded;
    let server = TestServer::start_with(config).await;
    let mut backends = Vec::new();
    for i in 0..BACKENDS {
        backends.push(server.register(30, &format!("10.0.1.{i}"), 2000 + i).await);
    }
    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        let mut stream = server.connect().await;
        clients.spawn(async move { pick_ports(&mut stream, LOGINS).await });
    }
    let mut total: HashMap<u16, usize> = HashMap::new();
    let all = async {
        while let Some(counts) = clients.join_next().await {
            for (port, n) in counts.expect("client task") {
                *total.entry(port).or_default() += n;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), all).await.expect("all logins answered in time");
    assert_eq!(total.values().sum::<usize>(), CLIENTS * LOGINS);
    let expected: HashMap<u16, usize> =
        (0..BACKENDS).map(|i| (2000 + i, CLIENTS * LOGINS / usize::from(BACKENDS))).collect();
    assert_eq!(total, expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_are_all_released() {
    const CONNECTIONS: u64 = 1_000;
    // Both ends of every connection, plus room for the harness and the runtimes.
    let needed = 2 * CONNECTIONS + 256;
    let limit = rlimit::increase_nofile_limit(4096).expect("read and raise RLIMIT_NOFILE");
    if limit < needed {
        eprintln!(
            "skipping a_thousand_idle_connections_are_all_released: needs {needed} open files, \
             the limit is {limit} and the hard limit does not allow more"
        );
        return;
    }
    // Counts this process's sockets, so no other test may open any meanwhile.
    let _exclusive = exclusive_access().await;
    // They stay pending and all come from 127.0.0.1: room for them all, for long enough.
    let mut config =
        ServerConfig { max_connections_per_peer: CONNECTIONS as usize, ..ServerConfig::default() };
    config.max_pending_connections = CONNECTIONS as usize;
    config.connection.first_frame_timeout = Duration::from_secs(600);
    let server = TestServer::start_with(config).await;
    let baseline = open_tcp_sockets();
    let mut streams = Vec::new();
    for _ in 0..CONNECTIONS {
        streams.push(server.connect().await);
    }
    server.wait_for_wire("all connections accepted", |s| s.connections_open, |n| n == CONNECTIONS).await;
    assert!(open_tcp_sockets() >= baseline + 2 * CONNECTIONS as usize);
    drop(streams);
    server.wait_for_wire("all connections released", |s| s.connections_open, |n| n == 0).await;
    wait_until("sockets back to the baseline", || open_tcp_sockets() == baseline).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_pending_headroom_are_closed_and_counted() {
    let _serial = shared_access().await;
    let server =
        TestServer::start_with(ServerConfig { max_pending_connections: 4, ..ServerConfig::default() }).await;
    let _backend = server.register(10, "10.0.0.1", 1001).await;
    let mut pending = Vec::new();
    for _ in 0..4 {
        pending.push(server.connect().await);
    }
    server.wait_for_wire("five connections open", |s| s.connections_open, |n| n == 5).await;
    let mut fifth = server.connect().await;
    expect_closed(&mut fifth).await;
    assert_eq!(server.wire().connections_refused, 1);
    // A login makes a pending connection a client's, which frees its pending slot.
    assert_eq!(login(&mut pending[0]).await, reply_for("10.0.0.1", 1001));
    server.wait_for_wire("one pending slot free", |s| s.open(ConnectionKind::Pending), |n| n == 3).await;
    let mut sixth = server.connect().await;
    assert_eq!(login(&mut sixth).await, reply_for("10.0.0.1", 1001));
    for stream in &mut pending {
        assert_eq!(login(stream).await, reply_for("10.0.0.1", 1001));
    }
    let stats = server.wire();
    let by_kind = ConnectionKind::ALL.map(|kind| stats.open(kind));
    assert_eq!(by_kind, [0, 5, 1], "pending, client, backend");
    assert_eq!(stats.refused(ConnectionRefusal::PendingLimit), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_beyond_max_backends_is_refused_and_its_connection_closed() {
    let _serial = shared_access().await;
    let server = TestServer::start_with(ServerConfig {
        dispatch: DispatchSettings { max_backends: 2, ..DispatchSettings::default() },
        ..ServerConfig::default()
    })
    .await;
    let _a = server.register(10, "10.0.0.1", 1001).await;
    let _b = server.register(90, "10.0.0.2", 1002).await;
    // max_backends is also the budget of backend connections: a third connection's
    // heartbeat finds it full, and the connection is closed with nothing sent.
    let mut third = server.connect().await;
    send(&mut third, &[heartbeat(0, "10.0.0.3", 1003), login_now()].concat()).await;
    expect_closed(&mut third).await;
    assert_eq!(server.wire().refused(ConnectionRefusal::BackendLimit), 1);
    assert_eq!(server.dispatcher.backend_count(), 2);
    let mut client = server.connect().await;
    assert_eq!(login(&mut client).await, reply_for("10.0.0.1", 1001));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_connections_and_the_listener() {
    let _serial = shared_access().await;
    let grace = Duration::from_secs(2);
    let server =
        TestServer::start_with(ServerConfig { shutdown_grace: grace, ..ServerConfig::default() }).await;
    let addr = server.addr;
    let mut backend = server.register(10, "10.0.0.1", 1001).await;
    let mut client = server.connect().await;
    assert_eq!(login(&mut client).await, reply_for("10.0.0.1", 1001));

    let start = Instant::now();
    let task = server.cancel();
    tokio::time::timeout(grace + Duration::from_secs(1), task)
        .await
        .expect("the server stops within the grace period")
        .expect("the server task does not panic");
    assert!(start.elapsed() < grace, "the idle connections held shutdown");
    expect_closed(&mut client).await;
    expect_closed(&mut backend).await;
    assert!(TcpStream::connect(addr).await.is_err(), "the listener still accepts after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_a_connection_blocked_writing_when_the_grace_runs_out() {
    let _serial = shared_access().await;
    let grace = Duration::from_millis(200);
    let server = TestServer::start_with(ServerConfig {
        shutdown_grace: grace,
        // Only the end of the grace period can stop the blocked write.
        connection: ConnectionLimits {
            write_timeout: Duration::from_secs(60),
            ..ConnectionLimits::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let flood = server.spawn_flood().await;
    server.wait_until_stalled().await;
    assert!(!flood.is_finished(), "the flooding client stopped: {:?}", within(flood).await);

    let start = Instant::now();
    let task = server.cancel();
    tokio::time::timeout(grace + Duration::from_secs(3), task)
        .await
        .expect("the server stops soon after the grace period")
        .expect("the server task does not panic");
    let elapsed = start.elapsed();
    assert!(elapsed >= grace, "stopped after {elapsed:?}: the blocked connection did not hold shutdown");
    let flooded = within(flood).await.expect("the flooding task does not panic");
    assert!(flooded.is_err(), "the server took {flooded:?} bytes without closing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_with_an_empty_ip_or_port_0_is_refused() {
    let _serial = shared_access().await;
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    send(&mut stream, &heartbeat(10, "", 1001)).await;
    send(&mut stream, &heartbeat(10, "10.0.0.1", 0)).await;
    server.wait_for_stat("both heartbeats refused", |s| s.refused_heartbeats, |n| n == 2).await;
    assert_eq!(server.dispatcher.backend_count(), 0);
    // The connection is still served: a login, then a valid heartbeat.
    assert_eq!(login(&mut stream).await, ERROR_REPLY);
    send(&mut stream, &heartbeat(10, "10.0.0.1", 1001)).await;
    server.wait_for_backend("10.0.0.1", 1001).await;
    assert_eq!(login(&mut stream).await, reply_for("10.0.0.1", 1001));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_heartbeat_from_outside_the_allowed_networks_is_refused_and_logins_still_answered() {
    let _serial = shared_access().await;
    let elsewhere = "10.0.0.0/8".parse().unwrap();
    let connection = ConnectionLimits { legacy_heartbeats: elsewhere, ..ConnectionLimits::default() };
    let server = TestServer::start_with(ServerConfig { connection, ..ServerConfig::default() }).await;
    let mut stranger = server.connect().await;
    send(&mut stranger, &heartbeat(0, "10.0.0.66", 6666)).await;
    server.wait_for_wire("heartbeat not allowed", |s| s.heartbeats_not_allowed, |n| n == 1).await;
    assert_eq!(server.stats().refused_heartbeats, 1);
    assert_eq!(server.dispatcher.backend_count(), 0, "the stranger did not register");
    // The same connection still gets logins answered: no backend, so the error reply.
    assert_eq!(login(&mut stranger).await, ERROR_REPLY);
    server.stop().await;

    // Loopback is among the default networks.
    let default = TestServer::start().await;
    let _backend = default.register(10, "10.0.0.1", 1001).await;
    assert_eq!(default.wire().heartbeats_not_allowed, 0);
    default.stop().await;
}

#[tokio::test]
async fn every_accepted_connection_ends_once_under_its_reason() {
    let _serial = shared_access().await;
    let server = TestServer::start().await;
    let clean = server.connect().await;
    drop(clean);
    server.wait_for_wire("a clean close", |s| s.closed(CloseReason::PeerClosed), |n| n == 1).await;
    let mut malformed = server.connect().await;
    send(&mut malformed, &[1, 0, 0, 0]).await;
    server.wait_for_wire("a protocol error", |s| s.closed(CloseReason::ProtocolError), |n| n == 1).await;
    let _open = server.connect().await;
    server.wait_for_wire("one open", |s| s.connections_open, |n| n == 1).await;
    let wire = server.wire.clone();
    server.stop().await;

    let wire = wire.snapshot();
    assert_eq!(wire.closed(CloseReason::Shutdown), 1);
    let closed: u64 = CloseReason::ALL.iter().map(|&reason| wire.closed(reason)).sum();
    assert_eq!((closed, wire.connections_open), (wire.connections_accepted, 0));
}
