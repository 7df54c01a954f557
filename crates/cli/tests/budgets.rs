//! The connection budgets on their defaults, in the real binary: ten thousand backends
//! from one address and clients at once are all served. Every wait is bounded.

mod process;

use std::net::SocketAddr;
use std::time::Instant;

use loadwise_testkit::{REPLY_LEN, exclusive_access, heartbeat, login, login_now, reply_port, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Backends the default budgets promise room for, all from one address.
const BACKENDS: usize = 10_000;
/// Clients picking at once, next to them.
const CLIENTS: usize = 64;
/// Connections being set up at once: well under the default per-peer cap (256),
/// which a backend counts against until its heartbeat is read.
const PARALLEL: usize = 64;

/// A fake legacy backend: connects, heartbeats at once, and logs in; the reply
/// proves the heartbeat was read first (and the connection not refused).
async fn backend(addr: SocketAddr, index: usize) -> TcpStream {
    let mut stream = within(TcpStream::connect(addr)).await.expect("a backend connects");
    let ip = format!("10.{}.{}.{}", index >> 16, (index >> 8) & 0xff, index & 0xff);
    let bytes = [heartbeat(50, &ip, 1000 + (index % 60_000) as u16), login_now()].concat();
    within(stream.write_all(&bytes)).await.expect("a backend heartbeats");
    let mut reply = [0u8; REPLY_LEN];
    within(stream.read_exact(&mut reply))
        .await
        .unwrap_or_else(|e| panic!("backend {index} was refused: {e}"));
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_defaults_ten_thousand_backends_from_one_address_and_64_clients_are_all_served() {
    // Each connection takes a descriptor at both ends: the dispatcher runs as its own
    // process, the real binary on its defaults, and this one holds the peers' ends.
    let needed = (BACKENDS + CLIENTS + 256) as u64;
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("read and raise RLIMIT_NOFILE");
    if limit < needed {
        eprintln!(
            "skipping on_defaults_ten_thousand_backends_...: needs {needed} open files here (and as many \
             in the dispatcher); the hard limit is {limit}"
        );
        return;
    }
    // Counts nothing, but opens ten thousand sockets: alone, so that socket-counting
    // tests are not disturbed.
    let _exclusive = exclusive_access().await;
    let mut serve =
        process::Spawn::new(&["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn,loadwise_server=info,loadwise_server::connection=warn")
            .start();
    let (mut addr, mut admin) = (None, None);
    let end = Instant::now() + process::DEADLINE;
    while addr.is_none() || admin.is_none() {
        let line = serve.next_line(end).expect("serve logs where it listens");
        // The defaults fit the hard limit (20 000 on CI) without shrinking.
        assert!(!line.contains("lowered from its default"), "{line}");
        if line.contains("admin API listening") {
            admin = Some(address_after(&line));
        } else if line.contains("loadwise_server: listening") {
            addr = Some(address_after(&line));
        }
    }
    let (addr, admin) = (addr.unwrap(), admin.unwrap());

    let started = Instant::now();
    let mut backends = Vec::with_capacity(BACKENDS);
    let mut connecting = JoinSet::new();
    for index in 0..BACKENDS {
        if connecting.len() == PARALLEL {
            backends.push(connecting.join_next().await.unwrap().expect("a backend task"));
        }
        connecting.spawn(backend(addr, index));
    }
    while let Some(stream) = connecting.join_next().await {
        backends.push(stream.expect("a backend task"));
    }
    let registered_in = started.elapsed();
    // The earliest ones have outlived the TTL (3 s) meanwhile: each heartbeats again.
    for (index, stream) in backends.iter_mut().enumerate() {
        let ip = format!("10.{}.{}.{}", index >> 16, (index >> 8) & 0xff, index & 0xff);
        within(stream.write_all(&heartbeat(40, &ip, 1000 + (index % 60_000) as u16))).await.unwrap();
    }

    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        clients.spawn(async move {
            let mut stream = within(TcpStream::connect(addr)).await.expect("a client connects");
            let mut ports = Vec::new();
            for _ in 0..10 {
                ports.push(reply_port(&login(&mut stream).await));
            }
            (stream, ports)
        });
    }
    let mut held = Vec::new();
    while let Some(joined) = clients.join_next().await {
        let (stream, ports) = joined.expect("every client is answered with a backend");
        assert!(ports.iter().all(|&port| port >= 1000));
        held.push(stream);
    }

    let metrics = tokio::task::spawn_blocking(move || process::get(admin, "/metrics")).await.unwrap();
    assert_eq!(metrics.0, 200);
    for line in [
        "loadwise_connections_open_by_kind{kind=\"backend\"} 10000".to_owned(),
        format!("loadwise_connections_open_by_kind{{kind=\"client\"}} {CLIENTS}"),
        "loadwise_connections_open_by_kind{kind=\"pending\"} 0".to_owned(),
    ] {
        assert!(metrics.1.lines().any(|l| l == line), "no {line} in the metrics:\n{}", metrics.1);
    }
    let refusals = metrics.1.lines().filter(|l| l.starts_with("loadwise_connection_refusals_total{"));
    for line in refusals {
        assert!(line.ends_with(" 0"), "{line}");
    }
    eprintln!("{BACKENDS} backends registered in {registered_in:?}; {CLIENTS} clients served");
    drop((held, backends));
    serve.signal("TERM");
    assert_eq!(serve.wait_exit(), Some(0));
}

/// The address after `addr=` in a log line.
fn address_after(line: &str) -> SocketAddr {
    let after = line.rsplit("addr=").next().unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap_or_else(|_| panic!("no address in {line:?}"))
}
