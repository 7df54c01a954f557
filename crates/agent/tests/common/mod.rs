//! A scripted v2 dispatcher's side of one agent connection, shared by the agent's tests.

// Each test file uses the part it needs.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use loadwise_agent::Health;
use loadwise_protocol::v2::{self, Decoded, Heartbeat, Message};
use loadwise_testkit::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One side of a scripted v2 dispatcher connection.
pub struct Peer {
    stream: TcpStream,
    buf: BytesMut,
}

impl Peer {
    pub async fn accept(listener: &TcpListener) -> Peer {
        let (stream, _) = within(listener.accept()).await.unwrap();
        Peer { stream, buf: BytesMut::new() }
    }

    /// The next v2 message the agent sent.
    pub async fn next(&mut self) -> Message {
        loop {
            if let Some((decoded, consumed)) =
                v2::decode(&self.buf, 4096).expect("the agent sends valid frames")
            {
                let _ = self.buf.split_to(consumed);
                match decoded {
                    Decoded::Message(message) => return message,
                    other => panic!("unexpected frame {other:?}"),
                }
            }
            let read = within(self.stream.read_buf(&mut self.buf)).await.unwrap();
            assert!(read > 0, "the agent closed the connection");
        }
    }

    pub async fn heartbeat(&mut self) -> Heartbeat {
        match self.next().await {
            Message::Heartbeat(heartbeat) => heartbeat,
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }

    /// Reads heartbeats until one has `health`, within the deadline; returns how
    /// long that took.
    pub async fn wait_for_health(&mut self, health: Health) -> Duration {
        let start = Instant::now();
        within(async { while self.heartbeat().await.health != health {} }).await;
        start.elapsed()
    }

    pub async fn send(&mut self, message: Message) {
        self.stream.write_all(&message.encode().unwrap()).await.unwrap();
    }

    /// Waits for the agent to close the connection, sending nothing more.
    pub async fn expect_closed(&mut self) {
        let mut rest = [0u8; 256];
        match within(self.stream.read(&mut rest)).await {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("the agent sent {n} more bytes: {:?}", &rest[..n]),
        }
    }
}
