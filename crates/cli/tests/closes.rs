//! Routine closes are counted by reason, in the real binary: a connection closed for
//! its idle timeout and one reset by its peer each show in
//! `loadwise_connections_closed_total`. Every wait is bounded.

mod process;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use loadwise_testkit::{login_now, read_reply, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client that logs in once (and is answered: no backend) and then says nothing.
async fn logged_in(addr: SocketAddr) -> TcpStream {
    let mut stream = within(TcpStream::connect(addr)).await.expect("a client connects");
    within(stream.write_all(&login_now())).await.expect("a login is sent");
    read_reply(&mut stream).await;
    stream
}

#[tokio::test]
async fn an_idle_timeout_and_a_reset_each_count_under_their_reason() {
    let _serial = loadwise_testkit::shared_access().await;
    let serve = process::Spawn::new(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--idle-timeout",
        "1s",
    ])
    .start();
    let (mut addr, mut admin) = (None, None);
    let end = Instant::now() + process::DEADLINE;
    while addr.is_none() || admin.is_none() {
        let line = serve.next_line(end).expect("serve logs where it listens");
        if line.contains("admin API listening") {
            admin = Some(address_after(&line));
        } else if line.contains("loadwise_server: listening") {
            addr = Some(address_after(&line));
        }
    }
    let (addr, admin) = (addr.unwrap(), admin.unwrap());

    let mut idle = logged_in(addr).await;
    let mut rest = [0u8; 1];
    let read = tokio::time::timeout(process::DEADLINE, idle.read(&mut rest)).await;
    assert_eq!(read.expect("closed within the deadline").expect("a clean close"), 0, "closed for idling");
    let reset = logged_in(addr).await;
    reset.set_zero_linger().expect("SO_LINGER 0");
    drop(reset);

    let counted = [
        r#"loadwise_connections_closed_total{reason="idle_timeout"} 1"#,
        r#"loadwise_connections_closed_total{reason="peer_reset"} 1"#,
    ];
    let end = Instant::now() + process::DEADLINE;
    loop {
        let (status, metrics) =
            tokio::task::spawn_blocking(move || process::get(admin, "/metrics")).await.unwrap();
        assert_eq!(status, 200);
        if counted.iter().all(|line| metrics.lines().any(|l| l == *line)) {
            break;
        }
        assert!(Instant::now() < end, "not both of {counted:?} in:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut serve = serve;
    serve.signal("TERM");
    assert_eq!(serve.wait_exit(), Some(0));
}

/// The address after `addr=` in a log line.
fn address_after(line: &str) -> SocketAddr {
    let after = line.rsplit("addr=").next().unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap_or_else(|_| panic!("no address in {line:?}"))
}
