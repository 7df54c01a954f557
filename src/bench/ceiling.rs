//! The ceiling: a server with no logic that answers every login with one fixed reply.
//!
//! It frames the stream by the header's `len` exactly as the dispatcher must (so a
//! 23-byte heartbeat is read and dropped, a 12-byte login is answered), but keeps
//! no table and makes no choice. Measured under the same load, it shows what the
//! machine and the runtime can do; the dispatcher's figure over its figure is how
//! close the dispatcher comes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::{HEADER_LEN, Header, IpField, LoginReply, cmd};

/// Bytes read from the socket at a time; frames up to this size are buffered whole.
const READ_CHUNK: usize = 4096;

/// The reply the ceiling gives every login: `127.0.0.1:1`.
pub fn fixed_reply() -> [u8; LoginReply::LEN] {
    let ip = IpField::from_text("127.0.0.1").expect("a valid ip");
    LoginReply::Backend { ip, port: 1 }.encode()
}

/// Frames a byte stream by header length and counts the logins in it (no I/O).
#[derive(Debug, Default)]
pub struct Framer {
    /// Bytes of a large frame still to be discarded as they arrive.
    skip: usize,
}

/// A frame whose `len` is shorter than its own header: the stream cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadFrame;

impl Framer {
    /// Consumes every complete frame at the start of `buf`; returns the bytes
    /// consumed and the logins among them. An incomplete frame is left in place
    /// unless it is longer than `READ_CHUNK`, whose bytes are skipped as they come.
    pub fn scan(&mut self, buf: &[u8]) -> Result<(usize, usize), BadFrame> {
        let mut at = self.skip.min(buf.len());
        self.skip -= at;
        let mut logins = 0;
        while let Some(header) = Header::parse(&buf[at..]) {
            let len = usize::from(header.len);
            if len < HEADER_LEN {
                return Err(BadFrame);
            }
            let available = buf.len() - at;
            if len > available && len <= READ_CHUNK {
                break;
            }
            logins += usize::from(header.cmd == cmd::LOGIN);
            let taken = len.min(available);
            self.skip = len - taken;
            at += taken;
        }
        Ok((at, logins))
    }
}

/// Serves the ceiling on `listener` until `shutdown` is cancelled; every
/// connection task is tracked and stopped before it returns.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tracker.spawn(connection(stream, shutdown.clone()));
                }
                // Out of descriptors, typically: let some close.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            () = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

async fn connection(mut stream: TcpStream, shutdown: CancellationToken) {
    tokio::select! {
        _ = answer(&mut stream) => {}
        () = shutdown.cancelled() => {}
    }
}

/// Reads frames and writes one fixed reply per login, one write per read.
async fn answer(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let reply = fixed_reply();
    let mut framer = Framer::default();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut filled = 0;
    let mut out = Vec::with_capacity(READ_CHUNK);
    loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let (consumed, logins) = framer.scan(&buf[..filled]).map_err(|BadFrame| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "frame shorter than its header")
        })?;
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        if logins > 0 {
            out.clear();
            for _ in 0..logins {
                out.extend_from_slice(&reply);
            }
            stream.write_all(&out).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::frames;

    #[test]
    fn logins_are_counted_and_heartbeats_dropped() {
        let (ip, port) = frames::backend_address(1);
        let mut bytes = frames::heartbeat(ip, port, 5).to_vec();
        bytes.extend_from_slice(&frames::login(1));
        bytes.extend_from_slice(&frames::login(1)[..5]);
        let mut framer = Framer::default();
        assert_eq!(framer.scan(&bytes), Ok((23 + 12, 1)));
        assert_eq!(framer.scan(&frames::login(1)), Ok((12, 1)));
    }

    #[test]
    fn large_frames_are_skipped_as_they_arrive() {
        let mut framer = Framer::default();
        let mut big = vec![0u8; 100];
        big[..4].copy_from_slice(&Header { len: 5000, cmd: 3 }.to_bytes());
        assert_eq!(framer.scan(&big), Ok((100, 0)));
        let mut rest = vec![0u8; 4900];
        rest.extend_from_slice(&frames::login(1));
        assert_eq!(framer.scan(&rest), Ok((4912, 1)));
    }

    #[test]
    fn a_frame_shorter_than_its_header_stops_the_stream() {
        assert_eq!(Framer::default().scan(&[2, 0, 2, 0]), Err(BadFrame));
    }

    #[test]
    fn the_fixed_reply_is_a_success() {
        assert_eq!(frames::classify(&fixed_reply()), Ok(()));
    }
}
