//! Attacks on the admin API: connection floods beyond the open-file limit, half
//! requests, slow and unpaginated readers of a large table, and requests a browser
//! on another site could be made to send.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{DEADLINE, Dispatcher, Legitimate, connect_from, http, reporting, two_rounds};
use loadwise_testkit::heartbeat;

/// The dispatcher's open-file limit for the flood: far below what the flood opens.
const FLOOD_LIMIT: u64 = 1_024;
/// Connections the flood opens: beyond the dispatcher's whole limit.
const FLOOD: usize = 1_500;

/// Opens `count` admin connections, each with half a request, and holds them
/// `hold`; returns the dispatcher's peak descriptor count meanwhile.
fn half_request_flood(dispatcher: &Dispatcher, count: usize, hold: Duration) -> usize {
    let mut held = Vec::with_capacity(count);
    // A server that stops accepting fills its backlog and each further connect
    // waits: the flood is bounded in time as well as in count.
    let flood_end = Instant::now() + Duration::from_secs(3);
    for _ in 0..count {
        if Instant::now() > flood_end {
            break;
        }
        let Ok(mut stream) = TcpStream::connect_timeout(&dispatcher.admin, Duration::from_millis(200)) else {
            continue;
        };
        let _ = stream.write_all(b"GET /v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        held.push(stream);
    }
    let end = Instant::now() + hold;
    let mut peak = 0;
    while Instant::now() < end {
        peak = peak.max(dispatcher.fds());
        std::thread::sleep(Duration::from_millis(50));
    }
    peak
}

#[test]
fn an_admin_connection_flood_beyond_the_descriptor_limit_leaves_picks_answered() {
    let mut dispatcher = Dispatcher::start(Some(FLOOD_LIMIT), &[]);
    let legitimate = Legitimate::start(&dispatcher);
    two_rounds("admin connection flood", &mut dispatcher, &legitimate, |dispatcher| {
        let peak = half_request_flood(dispatcher, FLOOD, Duration::from_millis(1_500));
        assert!(peak < FLOOD_LIMIT as usize, "the flood took the whole limit: {peak} descriptors");
        peak
    });
    // Connections of the flood may still wait in the listen queue, each closed as it
    // comes over the cap: the API answers again once the queue has drained.
    let answered = || http(dispatcher.admin, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1", b"").0 == 200;
    let flood_over = Instant::now();
    while !answered() {
        assert!(flood_over.elapsed() < DEADLINE, "the admin API does not answer again after the flood");
        std::thread::sleep(Duration::from_millis(100));
    }
    if reporting() {
        println!(
            "abuse admin connection flood: the admin API answers again {:?} after it",
            flood_over.elapsed()
        );
    }
}

#[test]
fn half_requests_on_the_admin_api_are_closed_by_the_header_read_timeout() {
    let dispatcher = Dispatcher::start(None, &[]);
    let baseline = dispatcher.fds();
    let mut held: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut stream = TcpStream::connect_timeout(&dispatcher.admin, DEADLINE).unwrap();
            stream.write_all(b"GET /v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").unwrap();
            stream.set_read_timeout(Some(DEADLINE)).unwrap();
            stream
        })
        .collect();
    // The default header-read timeout is 5 s: each is closed by then, while this
    // end still holds it open.
    let start = Instant::now();
    let end = start + Duration::from_secs(8);
    for stream in &mut held {
        let left = end.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left)).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    }
    assert!(start.elapsed() < Duration::from_secs(8), "closed after {:?}", start.elapsed());
    dispatcher.settle_fds(baseline, "half requests");
}

/// `count` legacy backends over connections of their own, from 127.0.1.x a hundred
/// at a time (each address within the per-peer cap while its connections are
/// pending), heartbeating every second (the TTL is 3 s) until `stop` is set.
fn keep_backends(addr: SocketAddr, count: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let frame = |index: usize| heartbeat(50, &format!("10.0.{}.{}", index / 250, index % 250 + 1), 7000);
        let mut streams = Vec::with_capacity(count);
        for index in 0..count {
            let source = Ipv4Addr::new(127, 0, 1, (index / 100 + 1) as u8);
            let mut stream = connect_from(source, addr).expect("a backend connects");
            stream.write_all(&frame(index)).unwrap();
            streams.push(stream);
            if index % 100 == 99 {
                // Heartbeats read: the connections are backends, no longer pending.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        while !stop.load(Ordering::Relaxed) {
            for (index, stream) in streams.iter_mut().enumerate() {
                let _ = stream.write_all(&frame(index));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

/// Readers of the whole backend list: `fast` that read every answer, and `slow`
/// that ask and never read; for `time`. Returns the statuses the fast ones got.
fn list_readers(admin: SocketAddr, fast: usize, slow: usize, time: Duration) -> Vec<u16> {
    let path = "/v1/services/default/backends?limit=5000";
    let slow_ones: Vec<TcpStream> = (0..slow)
        .filter_map(|_| {
            let mut stream = TcpStream::connect_timeout(&admin, DEADLINE).ok()?;
            let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            stream.write_all(request.as_bytes()).ok()?;
            Some(stream)
        })
        .collect();
    let readers: Vec<_> = (0..fast)
        .map(|_| {
            std::thread::spawn(move || {
                let end = Instant::now() + time;
                let mut statuses = Vec::new();
                while Instant::now() < end {
                    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1");
                    statuses.push(http(admin, &head, b"").0);
                }
                statuses
            })
        })
        .collect();
    let statuses = readers.into_iter().flat_map(|reader| reader.join().unwrap()).collect();
    drop(slow_ones);
    statuses
}

#[test]
fn slow_and_unpaginated_readers_of_3000_backends_leave_picks_answered() {
    let mut dispatcher = Dispatcher::start(Some(8_192), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let backends = keep_backends(dispatcher.addr, 3_000, Arc::clone(&stop));
    let legitimate = Legitimate::start(&dispatcher);
    let end = Instant::now() + DEADLINE;
    let page = loop {
        let (_, response) = http(dispatcher.admin, "GET /v1/services HTTP/1.1\r\nHost: 127.0.0.1", b"");
        if response.contains("\"backends\":3001") || Instant::now() > end {
            break response;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(page.contains("\"backends\":3001"), "3000 backends and the legitimate one: {page}");
    two_rounds("list readers", &mut dispatcher, &legitimate, |dispatcher| {
        let statuses = list_readers(dispatcher.admin, 8, 4, Duration::from_millis(1_500));
        assert!(statuses.iter().all(|status| [200, 503].contains(status)), "{statuses:?}");
        assert!(statuses.contains(&200), "some readers are served");
        dispatcher.fds()
    });
    stop.store(true, Ordering::Relaxed);
    backends.join().unwrap();
}

#[test]
fn requests_a_foreign_page_could_send_are_refused() {
    let dispatcher = Dispatcher::start(None, &[]);
    let admin = dispatcher.admin;
    let host = format!("Host: {admin}");
    let pick = |extra: &str, body: &[u8]| {
        http(admin, &format!("POST /v1/services/default/pick HTTP/1.1\r\n{host}{extra}"), body)
    };
    // No backend: a pick that gets through is a 503.
    assert_eq!(pick("", b"").0, 503);
    assert_eq!(pick("\r\nContent-Type: application/json", b"{}").0, 503);
    assert_eq!(pick("\r\nContent-Type: text/plain", b"x=1").0, 415, "a form's body");
    assert_eq!(pick(&format!("\r\nOrigin: http://{admin}"), b"").0, 503, "its own page");
    assert_eq!(pick("\r\nOrigin: https://evil.example", b"").0, 403);
    assert_eq!(pick("\r\nContent-Type: application/json", &vec![b' '; 100 * 1024]).0, 413, "oversized body");
    let (status, response) = http(admin, &format!("GET /v1/services/default/pick HTTP/1.1\r\n{host}"), b"");
    assert_eq!(status, 405);
    assert!(response.to_ascii_lowercase().contains("allow: post"), "{response}");
    let evil = "Host: evil.example";
    assert_eq!(http(admin, &format!("GET /v1/services HTTP/1.1\r\n{evil}"), b"").0, 421, "DNS rebinding");
    assert_eq!(http(admin, &format!("GET /healthz HTTP/1.1\r\n{evil}"), b"").0, 200, "probes are exempt");
    assert_eq!(http(admin, "GET /v1/services HTTP/1.1\r\nHost: localhost:1", b"").0, 200);
}
