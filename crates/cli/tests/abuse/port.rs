//! Attacks on the dispatcher's port: idle connections by the thousand, and a peer
//! that sends a few bytes now and then to look active.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{Dispatcher, Legitimate, two_rounds};

/// Connections the idle flood opens from one address.
const IDLE_FLOOD: usize = 1_000;

#[test]
fn an_idle_connection_flood_on_the_port_leaves_picks_answered() {
    let mut dispatcher = Dispatcher::start(None, &[]);
    let legitimate = Legitimate::start(&dispatcher);
    two_rounds("idle flood", &mut dispatcher, &legitimate, |dispatcher| {
        let held: Vec<TcpStream> = (0..IDLE_FLOOD)
            .filter_map(|_| TcpStream::connect_timeout(&dispatcher.addr, Duration::from_secs(1)).ok())
            .collect();
        let end = Instant::now() + Duration::from_millis(1_500);
        let mut peak = 0;
        while Instant::now() < end {
            peak = peak.max(dispatcher.fds());
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(held);
        peak
    });
}

#[test]
fn a_peer_sending_four_bytes_now_and_then_is_closed_by_the_idle_timeout() {
    let dispatcher = Dispatcher::start(None, &["--idle-timeout", "1s", "--frame-timeout", "30s"]);
    let mut stream = TcpStream::connect(dispatcher.addr).unwrap();
    // A whole 4-byte legacy frame of a command nobody handles (len 4, cmd 0x0300,
    // little-endian), skipped without a reply, before each idle timeout: bytes, but
    // no work.
    let skipped_frame = [4, 0, 0x00, 0x03];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if stream.write_all(&skipped_frame).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    panic!("a peer that did no work stayed connected past the idle timeout");
}
