//! The open-loop worker: batches leave on a fixed schedule whether or not replies are
//! in, and latency counts from each batch's intended send time (no coordinated omission).

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::deadline::LazyDeadline;
use super::latency::LatencyRecorder;
use super::outcome::Tally;
use super::plan::{LoadPlan, WorkerState};
use super::replies::{Owed, ReplyBuf, read_replies};

/// A batch written and not yet answered.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    intended: Instant,
    sent: Instant,
    logins: usize,
    /// v2: the request id of the batch's first pick.
    first_id: u32,
    heartbeats: usize,
    ops: usize,
}

/// Sends batches on schedule over one connection (reconnecting after a failure,
/// and catching up on the schedule then) until the run stops.
pub async fn run(plan: Arc<LoadPlan>, index: usize, mut stream: Option<TcpStream>, tally: Tally) -> Tally {
    let mut worker = WorkerState::new(&plan, index, tally);
    let mut received = Tally::default();
    let mut next = 0;
    while !plan.control.is_stopped() {
        let conn = match stream.take() {
            Some(conn) => conn,
            None => match plan.reconnect(worker.index, &mut worker.tally).await {
                Some(conn) => conn,
                None => break,
            },
        };
        session(&plan, &mut worker, &mut received, conn, &mut next).await;
    }
    worker.tally.merge(&received);
    worker.tally
}

/// Runs one connection until the run stops or the connection fails.
async fn session(
    plan: &LoadPlan,
    worker: &mut WorkerState,
    received: &mut Tally,
    conn: TcpStream,
    next: &mut u64,
) {
    let (mut read, mut write) = conn.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let broken = CancellationToken::new();
    // The receiver has buffers of its own; the sender owns the worker state.
    let (mut replies, mut latency) = (ReplyBuf::new(plan.wire.replies()), plan.latency.recorder());
    let receive = receive(plan, &mut read, rx, &mut replies, received, &mut latency, &broken);
    let sender = Sender { plan, worker, tx, broken: &broken, next };
    tokio::join!(sender.send_all(&mut write), receive);
}

struct Sender<'a> {
    plan: &'a LoadPlan,
    worker: &'a mut WorkerState,
    tx: mpsc::UnboundedSender<InFlight>,
    broken: &'a CancellationToken,
    next: &'a mut u64,
}

impl Sender<'_> {
    /// Writes batches at their intended times until sending stops or the
    /// connection breaks. The sender is consumed: dropping its end of the queue is
    /// what tells the receiver that no more batches come.
    async fn send_all(self, write: &mut OwnedWriteHalf) {
        let (plan, index) = (self.plan, self.worker.index);
        while let Some(intended) = plan.intended(index, *self.next) {
            tokio::select! {
                () = tokio::time::sleep_until(intended) => {}
                () = plan.control.stopped() => return,
                () = self.broken.cancelled() => return,
            }
            if self.broken.is_cancelled() {
                return;
            }
            let ops = plan.control.claim(plan.pipeline);
            if ops == 0 {
                return;
            }
            *self.next += 1;
            self.worker.fill(plan.mode, ops);
            let batch = &self.worker.batch;
            let sent = Instant::now();
            let flight = InFlight {
                intended,
                sent,
                logins: batch.logins,
                first_id: batch.first_id,
                heartbeats: batch.heartbeats,
                ops,
            };
            // The receiver is still running: it closes the queue only after
            // cancelling `broken`, which was checked above with no await since.
            let _ = self.tx.send(flight);
            let written = tokio::time::timeout(plan.timeout, write.write_all(&batch.bytes)).await;
            if !matches!(written, Ok(Ok(()))) {
                // The receiver times out on the replies and counts the loss.
                return;
            }
        }
    }
}

/// Reads the replies of each batch in order; after a failure, stops the sender and
/// counts every batch still queued as lost to the same kind.
async fn receive(
    plan: &LoadPlan,
    read: &mut OwnedReadHalf,
    mut rx: mpsc::UnboundedReceiver<InFlight>,
    buf: &mut ReplyBuf,
    tally: &mut Tally,
    latency: &mut LatencyRecorder,
    broken: &CancellationToken,
) {
    let mut deadline = LazyDeadline::default();
    while let Some(flight) = rx.recv().await {
        deadline.set(flight.sent + plan.timeout);
        let owed = Owed { logins: flight.logins, first_id: flight.first_id };
        let (answered, cut) =
            read_replies(read, buf, owed, flight.intended, &mut deadline, tally, latency).await;
        tally.settle_heartbeats(flight.heartbeats, answered, cut.map(|c| c.kind));
        plan.control.finished(flight.ops);
        let Some(cut) = cut else { continue };
        broken.cancel();
        rx.close();
        while let Some(lost) = rx.recv().await {
            tally.errors.add(cut.kind, (lost.logins + lost.heartbeats) as u64);
            plan.control.finished(lost.ops);
        }
        return;
    }
}
