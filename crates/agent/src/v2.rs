//! A link's protocol v2 session: registers (with a proof of the secret, when there is
//! one), then sends a v2 heartbeat for every report until the connection ends, and, for
//! a backend with capacity slots, a top-up heartbeat when a place comes free.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::places::{Places, TOP_UP_FRACTION};
use crate::sample::Report;
use crate::session_end::SessionEnd;
use crate::slots::DispatcherKey;
use loadwise_client::dial::Stream;
use loadwise_protocol::codec::v2::PeerCodec;
use loadwise_protocol::v2::auth::Secret;
use loadwise_protocol::v2::{self, Challenge, Hello, LeaseReport, Message, Percent, Register, Registered};

type Connection = Framed<Stream, PeerCodec>;

/// Registers if a secret is configured (without one, a dispatcher takes heartbeats
/// directly), then heart-beats until the connection fails or the agent stops.
pub(super) async fn session(
    stream: Stream,
    config: &AgentConfig,
    reports: &mut watch::Receiver<Report>,
    stop: &CancellationToken,
) -> SessionEnd {
    let mut conn = Framed::new(stream, PeerCodec);
    if let Some(secret) = &config.secret {
        let registered = tokio::time::timeout(config.connect_timeout, register(&mut conn, config, secret));
        let outcome = tokio::select! {
            outcome = registered => outcome.unwrap_or(Err(SessionEnd::RegisterTimeout(config.connect_timeout))),
            () = stop.cancelled() => Err(SessionEnd::Stopped),
        };
        if let Err(end) = outcome {
            return end;
        }
        tracing::debug!(backend_id = config.backend_id, service = %config.service, "registered");
    }
    let mut books = Books::new(config);
    let end = heartbeat_loop(&mut conn, config, reports, &mut books, stop).await;
    books.close();
    end
}

/// This connection's side of the backend's capacity slots, if it has them: its key in
/// the book, and whether the dispatcher has answered a slot heartbeat yet.
struct Books {
    places: Option<(Places, DispatcherKey)>,
    answered: bool,
}

impl Books {
    fn new(config: &AgentConfig) -> Books {
        let places = config.slots.clone().map(|places| {
            let key = places.new_key();
            (places, key)
        });
        Books { places, answered: false }
    }

    /// The slots of the next heartbeat: a grant once the dispatcher keeps the books.
    fn next(&self) -> Option<v2::Slots> {
        let (places, key) = self.places.as_ref()?;
        Some(places.heartbeat(*key, self.answered))
    }

    /// Applies a LeaseReport; true when it is the first, so that a real grant goes
    /// out at once instead of an interval later.
    fn report(&mut self, report: LeaseReport) -> bool {
        let Some((places, key)) = &self.places else { return false };
        places.report(*key, report);
        !std::mem::replace(&mut self.answered, true)
    }

    /// A watch of the places that come free between samples, for a slot backend.
    fn watch_freed(&self) -> Option<watch::Receiver<u64>> {
        self.places.as_ref().map(|(places, _)| places.watch_freed())
    }

    /// The connection ended: what the dispatcher held becomes promises.
    fn close(self) {
        if let Some((places, key)) = self.places {
            places.forget(key);
        }
    }
}

/// Top-up heartbeats: when a place comes free between two samples (a client left), the
/// dispatcher is granted it by a heartbeat sent then rather than up to an interval
/// later, so that replicas do not refuse clients with a place free. Each waits at
/// least the interval / [`TOP_UP_FRACTION`] after the previous heartbeat, so a
/// backend whose clients come and go sends at most that many more per interval.
struct TopUp {
    /// `None` for a backend without slots: no top-ups.
    freed: Option<watch::Receiver<u64>>,
    min_gap: Duration,
    last_sent: Instant,
    due: Option<Instant>,
}

impl TopUp {
    fn new(config: &AgentConfig, books: &Books) -> TopUp {
        TopUp {
            freed: books.watch_freed(),
            min_gap: config.interval / TOP_UP_FRACTION,
            last_sent: Instant::now(),
            due: None,
        }
    }

    /// A place came free: a top-up is due once the gap since the last heartbeat has passed.
    fn place_freed(&mut self) {
        let earliest = self.last_sent + self.min_gap;
        self.due.get_or_insert(earliest.max(Instant::now()));
    }

    /// A heartbeat went out, with a grant of every place free by then.
    fn sent(&mut self) {
        self.last_sent = Instant::now();
        self.due = None;
    }
}

/// Resolves when a place comes free; never without slots (or once the book is gone).
async fn freed(watch: &mut Option<watch::Receiver<u64>>) {
    if let Some(watch) = watch
        && watch.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// Resolves when a top-up is due; never while none is.
async fn top_up_due(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Hello → Challenge → Register → Registered.
async fn register(conn: &mut Connection, config: &AgentConfig, secret: &Secret) -> Result<(), SessionEnd> {
    conn.send(&Message::Hello(Hello)).await?;
    let Challenge { nonce, .. } = expect(conn, |message| match message {
        Message::Challenge(challenge) => Some(challenge),
        _ => None,
    })
    .await?;
    let register = Register::signed(secret.as_bytes(), &nonce, config.service.clone(), config.backend_id);
    conn.send(&Message::Register(register)).await?;
    let id = config.backend_id;
    expect(conn, |message| match message {
        Message::Registered(Registered { backend_id }) if backend_id == id => Some(()),
        _ => None,
    })
    .await
}

/// Reads until `wanted` accepts a message; an Error message or the end of the
/// connection ends the wait. Other messages are ignored.
async fn expect<T>(conn: &mut Connection, wanted: impl Fn(Message) -> Option<T>) -> Result<T, SessionEnd> {
    loop {
        match conn.next().await {
            Some(Ok(Message::Error(error))) => return Err(SessionEnd::Refused(error)),
            Some(Ok(message)) => {
                if let Some(found) = wanted(message) {
                    return Ok(found);
                }
            }
            Some(Err(error)) => return Err(error.into()),
            None => return Err(SessionEnd::ClosedByPeer),
        }
    }
}

/// Sends the latest report at once, then each new one; anything the dispatcher
/// sends but an Error is ignored.
async fn heartbeat_loop(
    conn: &mut Connection,
    config: &AgentConfig,
    reports: &mut watch::Receiver<Report>,
    books: &mut Books,
    stop: &CancellationToken,
) -> SessionEnd {
    let mut top_up = TopUp::new(config, books);
    if let Err(end) = send_report(conn, config, reports, books, stop).await {
        return end;
    }
    loop {
        // A new sample first: its heartbeat makes a due top-up needless.
        let send = tokio::select! {
            biased;
            changed = reports.changed() => {
                if changed.is_err() {
                    return SessionEnd::Stopped;
                }
                true
            }
            received = conn.next() => match received {
                // The dispatcher refused a heartbeat; the connection ends here and
                // the link tries again after its backoff.
                Some(Ok(Message::Error(error))) => return SessionEnd::Refused(error),
                // Its first answer: a real grant goes at once.
                Some(Ok(Message::LeaseReport(report))) => books.report(report),
                Some(Ok(_)) => false,
                Some(Err(error)) => return error.into(),
                None => return SessionEnd::ClosedByPeer,
            },
            () = freed(&mut top_up.freed) => {
                // Until its first answer the dispatcher is granted nothing anyway.
                if books.answered {
                    top_up.place_freed();
                }
                false
            }
            () = top_up_due(top_up.due) => true,
            () = stop.cancelled() => return SessionEnd::Stopped,
        };
        if send {
            if let Err(end) = send_report(conn, config, reports, books, stop).await {
                return end;
            }
            top_up.sent();
        }
    }
}

/// Sends the latest report, if it has a sample. Stopping the agent does not wait
/// for a write that a stalled dispatcher blocks.
async fn send_report(
    conn: &mut Connection,
    config: &AgentConfig,
    reports: &mut watch::Receiver<Report>,
    books: &Books,
    stop: &CancellationToken,
) -> Result<(), SessionEnd> {
    let report = reports.borrow_and_update().clone();
    let Some(heartbeat) = heartbeat(config, &report, books) else { return Ok(()) };
    tokio::select! {
        sent = conn.send(&heartbeat) => Ok(sent?),
        () = stop.cancelled() => Err(SessionEnd::Stopped),
    }
}

/// The v2 heartbeat for `report`, or none while there is no sample.
fn heartbeat(config: &AgentConfig, report: &Report, books: &Books) -> Option<Message> {
    let sample = report.sample.as_ref()?;
    Some(Message::Heartbeat(v2::Heartbeat {
        backend_id: config.backend_id,
        service: config.service.clone(),
        endpoint: config.advertise.endpoint(),
        memory: Percent::from_hundredths(u16::from(sample.memory.min(100)) * 100),
        cpu: sample.cpu,
        connections: sample.connections,
        weight: config.weight,
        state: report.state,
        metrics: sample.metrics.clone(),
        health: report.health,
        slots: books.next(),
    }))
}
