//! Making a connection a backend before the load starts: legacy, a heartbeat confirmed
//! by a login; v2, a Register first when there is a secret (Hello, Challenge,
//! Register, Registered), then a heartbeat confirmed by a pick.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conn::connect_once;
use super::frames::{self, REPLY_LEN};
use super::frames_v2::{MAX_REPLY_LEN, PickTemplate};
use super::outcome::ErrorKind;
use super::wire::{BackendFrames, Wire};
use loadwise_protocol::unix_time_now;
use loadwise_protocol::v2::auth::Secret;
use loadwise_protocol::v2::{self, Challenge, Decoded, Hello, Message, Register, Registered, ServiceName};

/// Connects fake backend `index`, sends its first heartbeat and a pick, and waits for
/// the pick's reply: once it is in, the dispatcher has read the heartbeat before it.
/// Any well-formed reply will do (a refusal too).
pub async fn backend(
    addr: SocketAddr,
    index: usize,
    wire: &Wire,
    timeout: Duration,
) -> Result<(TcpStream, BackendFrames), ErrorKind> {
    let mut stream = connect_once(addr, timeout).await?;
    let mut frames = wire.backend(index);
    let exchange = async {
        match wire {
            Wire::Legacy => {
                let mut bytes = frames.heartbeat(0).to_vec();
                bytes.extend_from_slice(&frames::login_now());
                stream.write_all(&bytes).await.map_err(|e| ErrorKind::of_io(&e))?;
                let mut reply = [0u8; REPLY_LEN];
                stream.read_exact(&mut reply).await.map_err(|e| ErrorKind::of_io(&e))?;
                match frames::classify(&reply) {
                    Ok(()) | Err(ErrorKind::ErrorReply) => Ok(()),
                    Err(kind) => Err(kind),
                }
            }
            Wire::V2 { service, secret, .. } => {
                let mut reader = Reader::default();
                if let Some(secret) = secret {
                    authenticate(&mut stream, &mut reader, secret, service, index as u64).await?;
                }
                let mut bytes = frames.heartbeat(0).to_vec();
                let mut pick = PickTemplate::new(service);
                pick.set_timestamp(unix_time_now());
                pick.push(0, &mut bytes);
                stream.write_all(&bytes).await.map_err(|e| ErrorKind::of_io(&e))?;
                reader
                    .expect(&mut stream, |message| matches!(message, Message::PickReply(_)).then_some(()))
                    .await
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(())) => Ok((stream, frames)),
        Ok(Err(kind)) => Err(kind),
        Err(_) => Err(ErrorKind::Timeout),
    }
}

/// Registers a client connection that will send v2 heartbeats as backend
/// `backend_id`, on a dispatcher with a secret.
pub async fn client(
    stream: &mut TcpStream,
    secret: &Secret,
    service: &ServiceName,
    backend_id: u64,
    timeout: Duration,
) -> Result<(), ErrorKind> {
    let mut reader = Reader::default();
    let registered = authenticate(stream, &mut reader, secret, service, backend_id);
    tokio::time::timeout(timeout, registered).await.unwrap_or(Err(ErrorKind::Timeout))
}

/// Hello → Challenge → Register (signed over the challenge's nonce) → Registered.
async fn authenticate(
    stream: &mut TcpStream,
    reader: &mut Reader,
    secret: &Secret,
    service: &ServiceName,
    backend_id: u64,
) -> Result<(), ErrorKind> {
    send(stream, &Message::Hello(Hello)).await?;
    let Challenge { nonce, .. } = reader
        .expect(stream, |message| match message {
            Message::Challenge(challenge) => Some(challenge),
            _ => None,
        })
        .await?;
    let register = Register::signed(secret.as_bytes(), &nonce, service.clone(), backend_id);
    send(stream, &Message::Register(register)).await?;
    reader
        .expect(stream, |message| {
            matches!(message, Message::Registered(Registered { backend_id: id }) if id == backend_id)
                .then_some(())
        })
        .await
}

async fn send(stream: &mut TcpStream, message: &Message) -> Result<(), ErrorKind> {
    let frame = message.encode().map_err(|_| ErrorKind::Malformed)?;
    stream.write_all(&frame).await.map_err(|e| ErrorKind::of_io(&e))
}

/// Reads whole v2 messages off a connection during setup.
#[derive(Debug, Default)]
struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    /// Reads until `wanted` accepts a message. An Error frame is an error of its code;
    /// other messages are skipped.
    async fn expect<T>(
        &mut self,
        stream: &mut TcpStream,
        wanted: impl Fn(Message) -> Option<T>,
    ) -> Result<T, ErrorKind> {
        loop {
            while let Some(message) = self.next()? {
                if let Message::Error(error) = message {
                    return Err(ErrorKind::ErrorFrame(error.code));
                }
                if let Some(found) = wanted(message) {
                    return Ok(found);
                }
            }
            let mut chunk = [0u8; 512];
            match stream.read(&mut chunk).await {
                Ok(0) => return Err(ErrorKind::ClosedEarly),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(error) => return Err(ErrorKind::of_io(&error)),
            }
        }
    }

    /// The next whole message in the buffer, if any; frames that are not messages of
    /// this version are skipped.
    fn next(&mut self) -> Result<Option<Message>, ErrorKind> {
        loop {
            let Some((decoded, len)) =
                v2::decode(&self.buf, MAX_REPLY_LEN).map_err(|_| ErrorKind::Malformed)?
            else {
                return Ok(None);
            };
            self.buf.drain(..len);
            if let Decoded::Message(message) = decoded {
                return Ok(Some(message));
            }
        }
    }
}
