//! Outgoing connections for the agent and the client: resolve a name, try each
//! address, and speak TLS over the connection when asked to.

use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::tls::{ClientTls, TlsError};

/// Why no connection to a `HOST:PORT` could be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot resolve {server}: {source}")]
    Resolve { server: String, source: std::io::Error },
    #[error("{server} resolves to no address")]
    NoAddress { server: String },
    #[error("cannot connect to {server}: {source}")]
    Connect { server: String, source: std::io::Error },
    /// No TLS server name could be made of the address (or the override).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Connected, but the TLS handshake failed: the dispatcher's certificate is not
    /// signed by the trusted CA or does not name the server, or it does not speak TLS.
    #[error("TLS handshake with {server} failed: {source}")]
    Handshake { server: String, source: std::io::Error },
}

/// Sets `TCP_NODELAY` and refuses a connection to itself: connecting to a free
/// port in the ephemeral range can, rarely, pick that same port as the source and
/// "connect" by simultaneous open, leaving an agent heart-beating into itself.
fn checked(stream: TcpStream) -> std::io::Result<TcpStream> {
    if stream.local_addr()? == stream.peer_addr()? {
        return Err(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connected to itself"));
    }
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Resolves `server` afresh and connects to the first of its addresses that
/// accepts, with `TCP_NODELAY` set (every frame is small and latency-bound).
pub async fn connect(server: &str) -> Result<TcpStream, DialError> {
    connect_from(server, None).await
}

/// [`connect`] from the local address `bind` when given (port chosen by the
/// system): a dispatcher knows its clients by their source address, so a
/// multi-homed host, or a test, chooses which one it is known by. Addresses of
/// `server` of the other family than `bind` are passed over.
pub async fn connect_from(server: &str, bind: Option<IpAddr>) -> Result<TcpStream, DialError> {
    let addrs = tokio::net::lookup_host(server)
        .await
        .map_err(|source| DialError::Resolve { server: server.to_owned(), source })?;
    let mut last_error = DialError::NoAddress { server: server.to_owned() };
    for addr in addrs.filter(|addr| bind.is_none_or(|bind| bind.is_ipv4() == addr.is_ipv4())) {
        match connect_one(addr, bind).await.and_then(checked) {
            Ok(stream) => return Ok(stream),
            Err(source) => last_error = DialError::Connect { server: server.to_owned(), source },
        }
    }
    Err(last_error)
}

/// One connection attempt to `addr`, from `bind` when given.
async fn connect_one(addr: SocketAddr, bind: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(bind) = bind else { return TcpStream::connect(addr).await };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(bind, 0))?;
    socket.connect(addr).await
}

/// Connects as [`connect`] does and, with `tls`, completes a TLS handshake that
/// checks the dispatcher's certificate against the trusted CA and the expected
/// name. Neither step has a time limit of its own: callers bound the whole.
pub async fn open(server: &str, tls: Option<&ClientTls>) -> Result<Stream, DialError> {
    open_from(server, tls, None).await
}

/// [`open`] from the local address `bind` when given (see [`connect_from`]).
pub async fn open_from(
    server: &str,
    tls: Option<&ClientTls>,
    bind: Option<IpAddr>,
) -> Result<Stream, DialError> {
    let Some(tls) = tls else {
        return Ok(Stream::Plain(connect_from(server, bind).await?));
    };
    // Before connecting: a name that cannot work should not cost a connection.
    let name = tls.server_name_for(server)?;
    let tcp = connect_from(server, bind).await?;
    let connector = TlsConnector::from(std::sync::Arc::clone(tls.config()));
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|source| DialError::Handshake { server: server.to_owned(), source })?;
    Ok(Stream::Tls(Box::new(stream)))
}

/// A connection to a dispatcher: plain TCP, or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    /// Boxed: a TLS session's buffers are far larger than a socket.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP connection underneath, for socket options.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(stream) => stream,
            Stream::Tls(stream) => stream.get_ref().0,
        }
    }

    /// Whether the connection speaks TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

// Both variants are `Unpin`, so each call is passed straight on to the one in use.
impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(stream) => stream.is_write_vectored(),
            Stream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
