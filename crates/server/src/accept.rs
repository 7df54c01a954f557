//! Accepting connections: the listeners (plain and TLS), the accept loop under the
//! budgets, each connection's TLS handshake, and what a closed connection leaves
//! behind (its backends removed, its slot freed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::connection;
use crate::connection::budget::Slot;
use crate::limits::ConnectionLimits;
use crate::shared::{Shared, log_refusal};
use crate::stats::{CloseReason, bump};
use crate::tls;
use loadwise_core::model::ConnectionId;

/// The most a TLS handshake may take; a lower `frame_timeout` or
/// `first_frame_timeout` bounds it further. A handshake is a few round trips, so
/// this is generous, and a peer that does not finish in time holds a pending slot
/// for nothing.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The sockets the server accepts on.
#[derive(Debug)]
pub(crate) struct Listeners {
    pub(crate) plain: TcpListener,
    pub(crate) tls: Option<TlsListener>,
}

/// A listener whose connections begin with a TLS handshake.
#[derive(Debug)]
pub(crate) struct TlsListener {
    pub(crate) listener: TcpListener,
    pub(crate) config: Arc<tls::rustls::ServerConfig>,
}

/// What an accepted connection speaks over TCP.
pub(crate) enum Transport {
    Plain,
    Tls(TlsAcceptor),
}

impl Listeners {
    /// The next connection from either listener, and what it speaks. Cancel safe,
    /// as each listener's `accept` is.
    pub(crate) async fn accept(&self) -> (std::io::Result<(TcpStream, SocketAddr)>, Transport) {
        let Some(tls) = &self.tls else {
            return (self.plain.accept().await, Transport::Plain);
        };
        tokio::select! {
            accepted = self.plain.accept() => (accepted, Transport::Plain),
            accepted = tls.listener.accept() => {
                let acceptor = TlsAcceptor::from(Arc::clone(&tls.config));
                (accepted, Transport::Tls(acceptor))
            }
        }
    }

    /// Logs where the server listens, as it starts.
    pub(crate) fn log_addresses(&self) {
        // Under the crate's own target, as before this module existed: scripts and
        // tests wait for `loadwise_server: listening`.
        if let Ok(addr) = self.plain.local_addr() {
            tracing::info!(target: "loadwise_server", %addr, "listening");
        }
        if let Some(Ok(addr)) = self.tls.as_ref().map(|tls| tls.listener.local_addr()) {
            tracing::info!(target: "loadwise_server", %addr, "listening for TLS");
        }
    }
}

/// Connections the kernel may hold established but not yet accepted. The usual
/// default (128, the standard library's) overflows when many clients connect at
/// once, and every connection it drops waits a second for its SYN to be resent.
/// The kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` for listening as `TcpListener::bind` does (`SO_REUSEADDR`, so a
/// restart need not wait for old connections to time out; no `SO_REUSEPORT`), with
/// an accept queue of [`LISTEN_BACKLOG`]. Must be called within a tokio runtime.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts from every listener within one set of budgets, numbering connections in
/// one sequence.
pub(crate) async fn accept_loop(listeners: &Listeners, shared: &Arc<Shared>, tracker: &TaskTracker) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let (accepted, transport) = listeners.accept().await;
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(error) => {
                // Typically EMFILE/ENFILE: wait for descriptors to be released.
                let delay = backoff.next();
                tracing::error!(%error, ?delay, "accept failed; retrying");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        let accepted_at = tokio::time::Instant::now();
        let slot = match shared.budgets.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                log_refusal(shared, peer, refusal);
                drop(stream);
                continue;
            }
        };
        bump(&shared.wire.connections_accepted);
        let id = shared.next_connection();
        let shared = Arc::clone(shared);
        tracker.spawn(async move {
            let mut open = OpenConnection::new(id, peer, slot, &shared);
            let accepted = connection::Accepted { peer, id, at: accepted_at };
            serve_connection(stream, transport, accepted, &shared, open.slot()).await;
        });
    }
}

/// Accounts for one open connection. Dropping it (when the task ends, panics or
/// is stopped) removes the connection's backend, frees its slot in the budgets and
/// updates the count, so nothing outlives the connection.
struct OpenConnection<'a> {
    id: ConnectionId,
    peer: SocketAddr,
    slot: Option<Slot>,
    shared: &'a Shared,
}

impl<'a> OpenConnection<'a> {
    fn new(id: ConnectionId, peer: SocketAddr, slot: Slot, shared: &'a Shared) -> Self {
        shared.wire.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection { id, peer, slot: Some(slot), shared }
    }

    /// The connection's slot, which its frames classify.
    fn slot(&mut self) -> &mut Slot {
        self.slot.as_mut().expect("the slot is taken only on drop")
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        let (id, peer) = (self.id, self.peer);
        for (backend_number, backend) in self.shared.dispatcher.disconnect(id) {
            let service = self.shared.dispatcher.service_of(&backend);
            let address = backend.address();
            match &backend.v2 {
                Some(detail) => {
                    let backend_id = detail.backend_id;
                    tracing::info!(%service, backend = %address, id = %backend_number, backend_id, %peer, "backend removed: connection closed");
                }
                None => {
                    tracing::info!(%service, backend = %address, id = %backend_number, %peer, "backend removed: connection closed")
                }
            }
        }
        // The backend is gone before its slot is free, so that a backend taking the
        // slot does not find the table still full. The slot is released before the
        // count drops, so that a connection accepted once the count shows room is
        // never refused.
        drop(self.slot.take());
        self.shared.wire.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn serve_connection(
    stream: TcpStream,
    transport: Transport,
    accepted: connection::Accepted,
    shared: &Shared,
    slot: &mut Slot,
) {
    let peer = accepted.peer;
    // Replies are tiny and latency matters more than coalescing.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "could not set TCP_NODELAY");
    }
    let span = tracing::debug_span!("connection", id = %accepted.id, %peer, tls = matches!(transport, Transport::Tls(_)));
    let serve = async {
        match transport {
            Transport::Plain => connection::serve(stream, accepted, shared, slot).await,
            Transport::Tls(acceptor) => match handshake(&acceptor, stream, shared).await {
                Ok(stream) => connection::serve(stream, accepted, shared, slot).await,
                Err(reason) => shared.wire.count_close(reason),
            },
        }
    };
    // A disabled span (the default, at info level) would still be entered and left
    // on every poll.
    if span.is_disabled() { serve.await } else { serve.instrument(span).await }
}

/// Completes the TLS handshake within [`handshake_timeout`]. A handshake that fails
/// or runs out of time (a peer speaking plain TCP to the TLS port, one trusting
/// another CA, one that stalls) closes this connection only, and is logged at
/// debug: any peer can cause it. Shutdown abandons a handshake at once, as nothing
/// is owed to the peer yet. A connection that ends here ends for the reason returned.
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    shared: &Shared,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, CloseReason> {
    let timeout = handshake_timeout(&shared.limits.borrow().connection);
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(timeout, acceptor.accept(stream)) => outcome,
        () = shared.shutdown.cancelled() => {
            tracing::debug!("TLS handshake abandoned: shutting down");
            return Err(CloseReason::Shutdown);
        }
    };
    match outcome {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            Err(CloseReason::TlsHandshake)
        }
        Err(_) => {
            tracing::debug!(?timeout, "TLS handshake timed out");
            Err(CloseReason::TlsHandshake)
        }
    }
}

/// [`TLS_HANDSHAKE_TIMEOUT`], or the frame or first-frame timeout if shorter: a
/// handshake is bytes owed like an incomplete frame, and it comes before the first
/// frame, while the connection holds a pending slot.
pub(crate) fn handshake_timeout(limits: &ConnectionLimits) -> Duration {
    limits.frame_timeout.min(limits.first_frame_timeout).min(TLS_HANDSHAKE_TIMEOUT)
}

/// Exponential delay between failed accepts: 10 ms doubling to 1 s.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    fn next(&mut self) -> Duration {
        let delay = Duration::from_millis(10) * 2u32.saturating_pow(self.failures.min(7));
        self.failures += 1;
        delay.min(Duration::from_secs(1))
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_cap_and_resets() {
        let mut backoff = AcceptBackoff::default();
        let delays: Vec<_> = (0..9).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_millis(10));
    }

    #[test]
    fn a_handshake_is_bounded_by_the_first_frame_timeout() {
        let mut limits = ConnectionLimits::default();
        assert_eq!(handshake_timeout(&limits), Duration::from_secs(5));
        limits.first_frame_timeout = Duration::from_secs(60);
        assert_eq!(handshake_timeout(&limits), TLS_HANDSHAKE_TIMEOUT);
        limits.frame_timeout = Duration::from_secs(2);
        assert_eq!(handshake_timeout(&limits), Duration::from_secs(2));
    }
}
