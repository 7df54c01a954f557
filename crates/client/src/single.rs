//! One dispatcher, one login, one reply: the legacy pick and the v2 pick of a named
//! service, each with a form that can speak TLS.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Framed;

use crate::dial::DialError;
use crate::tls::ClientTls;
use loadwise_protocol::codec::v2::{PeerCodec, PeerCodecError};
use loadwise_protocol::v2::{
    ErrorCode, ErrorMessage, Message, PickKey, PickOutcome, PickRequest, Picked, ServiceName,
};
use loadwise_protocol::{AddressError, IpField, LoginReply, LoginRequest, ReplyError, unix_time_now};

/// The backend a dispatcher named. Its ip field always holds a usable address
/// (checked when the reply is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    /// The ip bytes exactly as the backend reported them.
    pub ip: IpField,
    pub port: u16,
}

impl Assigned {
    /// The address text, up to the first NUL.
    pub fn ip_text(&self) -> &str {
        self.ip.text().unwrap_or_default()
    }
}

impl std::fmt::Display for Assigned {
    /// `IP:PORT`, with IPv6 literals in brackets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip_text() {
            ip if ip.contains(':') => write!(f, "[{ip}]:{}", self.port),
            ip => write!(f, "{ip}:{}", self.port),
        }
    }
}

/// Why no backend was obtained.
#[derive(Debug, thiserror::Error)]
pub enum PickError {
    /// The dispatcher answered with the error reply: no live backend, or this
    /// machine's clock is more than the allowed skew away from the dispatcher's.
    #[error("the dispatcher answered with an error (no live backend, or the clocks differ too much)")]
    Refused,
    #[error(transparent)]
    Unreachable(#[from] DialError),
    #[error("no answer from {server} within {after:?}")]
    Timeout { server: String, after: Duration },
    #[error("connection to the dispatcher failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the dispatcher closed the connection without answering")]
    Closed,
    #[error("the dispatcher sent a malformed reply: {0}")]
    Malformed(#[from] ReplyError),
    #[error("the dispatcher named an unusable backend address: {0}")]
    BadAddress(#[from] AddressError),
    /// v2: the dispatcher answered the pick with a status other than success.
    #[error("the dispatcher answered: {0}")]
    Declined(ErrorCode),
    /// v2: the dispatcher refused the request frame itself.
    #[error("the dispatcher refused the request: {} {}", .0.code, .0.text)]
    Rejected(ErrorMessage),
    /// v2: the dispatcher's reply broke the protocol.
    #[error("v2 exchange failed: {0}")]
    V2(#[from] PeerCodecError),
}

impl PickError {
    /// True when the dispatcher answered and said no (no live backend, clocks too far
    /// apart, an unknown service); false when it could not be reached or did not
    /// answer properly.
    pub fn is_refusal(&self) -> bool {
        matches!(self, PickError::Refused | PickError::Declined(_))
    }
}

/// Asks the dispatcher at `server` (`HOST:PORT`) for a backend, stamping the
/// request with this machine's clock. The whole exchange is bounded by `timeout`.
pub async fn pick(server: &str, timeout: Duration) -> Result<Assigned, PickError> {
    pick_with_timestamp(server, unix_time_now(), timeout).await
}

/// [`pick`] with an explicit unix timestamp in seconds.
pub async fn pick_with_timestamp(
    server: &str,
    timestamp: u64,
    timeout: Duration,
) -> Result<Assigned, PickError> {
    pick_over(server, None, timestamp, timeout).await
}

/// [`pick_with_timestamp`] over TLS when `tls` is given (to the dispatcher's TLS
/// listener), else over plain TCP. The handshake counts against `timeout`.
pub async fn pick_over(
    server: &str,
    tls: Option<&ClientTls>,
    timestamp: u64,
    timeout: Duration,
) -> Result<Assigned, PickError> {
    let exchange = async {
        let mut stream = crate::dial::open(server, tls).await?;
        stream.write_all(&LoginRequest { timestamp }.encode()).await?;
        // TLS holds written bytes until a flush; for TCP the flush does nothing.
        stream.flush().await?;
        read_reply(&mut stream).await
    };
    bounded(server, timeout, exchange).await
}

/// Asks the dispatcher at `server` for a backend of `service` with a v2
/// PickRequest, stamped with this machine's clock. The reply names the backend's
/// endpoint (IPv4, IPv6 or a host name), its id, and a ticket when the dispatcher
/// signs them. The whole exchange is bounded by `timeout`.
pub async fn pick_service(
    server: &str,
    service: &ServiceName,
    timeout: Duration,
) -> Result<Picked, PickError> {
    pick_service_over(server, None, service, timeout).await
}

/// [`pick_service`] over TLS when `tls` is given, else over plain TCP.
pub async fn pick_service_over(
    server: &str,
    tls: Option<&ClientTls>,
    service: &ServiceName,
    timeout: Duration,
) -> Result<Picked, PickError> {
    pick_keyed_over(server, tls, service, &PickKey::NONE, timeout).await
}

/// [`pick_service_over`] with an affinity key: the picks that carry the same `key`
/// go to the same backend of `service` while it is ready and within its load bound.
/// A dispatcher older than keys answers by load alone.
pub async fn pick_keyed_over(
    server: &str,
    tls: Option<&ClientTls>,
    service: &ServiceName,
    key: &PickKey,
    timeout: Duration,
) -> Result<Picked, PickError> {
    let exchange = async {
        let mut conn = Framed::new(crate::dial::open(server, tls).await?, PeerCodec);
        let request = pick_request(service, key);
        conn.send(&Message::PickRequest(request.clone())).await?;
        read_pick_reply(&mut conn, request.request_id).await
    };
    bounded(server, timeout, exchange).await
}

/// A PickRequest for `service` with `key`, stamped with this machine's clock.
pub(crate) fn pick_request(service: &ServiceName, key: &PickKey) -> PickRequest {
    // Matches the reply to the request; it need not be secret, so the clock stands
    // in where the system gives no randomness.
    let request_id = loadwise_protocol::entropy::u64_or_clock() as u32;
    PickRequest { request_id, timestamp: unix_time_now(), service: service.clone(), key: key.clone() }
}

/// Runs one exchange with `server`, failing with [`PickError::Timeout`] after `timeout`.
async fn bounded<T>(
    server: &str,
    timeout: Duration,
    exchange: impl Future<Output = Result<T, PickError>>,
) -> Result<T, PickError> {
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(PickError::Timeout { server: server.to_owned(), after: timeout }),
    }
}

/// Reads until the PickReply to `request_id`; other messages are skipped.
async fn read_pick_reply<S>(conn: &mut Framed<S, PeerCodec>, request_id: u32) -> Result<Picked, PickError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    read_pick_reply_skipping(conn, request_id, |_| false).await
}

/// [`read_pick_reply`], also skipping the Errors `skip` accepts: those that answer
/// an earlier message rather than the request.
pub(crate) async fn read_pick_reply_skipping<S>(
    conn: &mut Framed<S, PeerCodec>,
    request_id: u32,
    skip: impl Fn(&ErrorMessage) -> bool,
) -> Result<Picked, PickError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match conn.next().await {
            Some(Ok(Message::PickReply(reply))) if reply.request_id == request_id => {
                return match reply.outcome {
                    PickOutcome::Picked(picked) => Ok(picked),
                    PickOutcome::Refused(code) => Err(PickError::Declined(code)),
                };
            }
            Some(Ok(Message::Error(error))) if skip(&error) => {
                tracing::debug!(code = %error.code, text = %error.text, "skipped an Error that answers an earlier message");
            }
            Some(Ok(Message::Error(error))) => return Err(PickError::Rejected(error)),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
            None => return Err(PickError::Closed),
        }
    }
}

/// Reads one login reply from `stream` and turns it into a result.
pub async fn read_reply(stream: &mut (impl AsyncReadExt + Unpin)) -> Result<Assigned, PickError> {
    let mut frame = [0u8; LoginReply::LEN];
    match stream.read_exact(&mut frame).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(PickError::Closed);
        }
        Err(error) => return Err(error.into()),
    }
    match LoginReply::decode(&frame)? {
        LoginReply::Backend { ip, port } => {
            ip.text()?;
            if port == 0 {
                return Err(AddressError::ZeroPort.into());
            }
            Ok(Assigned { ip, port })
        }
        LoginReply::Error => Err(PickError::Refused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn reply_from(bytes: &[u8]) -> Result<Assigned, PickError> {
        let mut reader = bytes;
        read_reply(&mut reader).await
    }

    #[tokio::test]
    async fn reads_success_error_and_malformed_replies() {
        let ip = IpField::from_text("10.0.0.2").unwrap();
        let success = LoginReply::Backend { ip, port: 1002 }.encode();
        let assigned = reply_from(&success).await.unwrap();
        assert_eq!(assigned.to_string(), "10.0.0.2:1002");
        assert!(reply_from(&LoginReply::Error.encode()).await.unwrap_err().is_refusal());
        let mut bad_len = success;
        bad_len[0] = 23;
        assert!(matches!(reply_from(&bad_len).await, Err(PickError::Malformed(ReplyError::BadLength(23)))));
        assert!(matches!(reply_from(&success[..10]).await, Err(PickError::Closed)));
    }

    #[test]
    fn ipv6_literals_are_bracketed() {
        let assigned = Assigned { ip: IpField::from_text("::1").unwrap(), port: 80 };
        assert_eq!(assigned.to_string(), "[::1]:80");
    }

    #[tokio::test]
    async fn reads_v2_replies_skipping_others_and_mapping_refusals() {
        use loadwise_protocol::v2::{Endpoint, PickReply};
        let endpoint = Endpoint::from_socket_addr("[::1]:7000".parse().unwrap()).unwrap();
        let picked = Picked { backend_id: 9, endpoint, ticket: vec![1, 2, 3] };
        let reply = |request_id, outcome| Message::PickReply(PickReply { request_id, outcome });
        let mut bytes = Vec::new();
        for message in [
            reply(1, PickOutcome::Refused(ErrorCode::NO_BACKEND)),
            reply(2, PickOutcome::Picked(picked.clone())),
        ] {
            bytes.extend(message.encode().unwrap());
        }
        let (mut client, mut server) = tokio::io::duplex(4096);
        server.write_all(&bytes).await.unwrap();
        let mut conn = Framed::new(&mut client, PeerCodec);
        // The reply to another request is skipped.
        assert_eq!(read_pick_reply(&mut conn, 2).await.unwrap(), picked);
        let refused = Message::PickReply(PickReply {
            request_id: 3,
            outcome: PickOutcome::Refused(ErrorCode::UNKNOWN_SERVICE),
        });
        server.write_all(&refused.encode().unwrap()).await.unwrap();
        let error = read_pick_reply(&mut conn, 3).await.unwrap_err();
        assert!(error.is_refusal() && error.to_string().contains("unknown service"), "{error}");
        drop(server);
        assert!(matches!(read_pick_reply(&mut conn, 4).await, Err(PickError::Closed)));
    }

    #[test]
    fn pick_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        assert_send(&pick("127.0.0.1:1", Duration::from_secs(1)));
        assert_send(&pick_over("127.0.0.1:1", None, 0, Duration::from_secs(1)));
    }
}
