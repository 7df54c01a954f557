//! The closed-loop worker: one connection, a batch out, its replies in, the next batch.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::outcome::{ErrorKind, Tally};
use super::plan::{LoadPlan, WorkerState};
use super::replies::{Owed, read_replies};

/// Sends batches on one connection (reconnecting after a failure) until the run
/// stops; returns what happened to every request.
pub async fn run(plan: Arc<LoadPlan>, index: usize, mut stream: Option<TcpStream>, tally: Tally) -> Tally {
    let mut worker = WorkerState::new(&plan, index, tally);
    loop {
        let mut conn = match stream.take() {
            Some(conn) => conn,
            None => match plan.reconnect(index, &mut worker.tally).await {
                Some(conn) => conn,
                None => break,
            },
        };
        let ops = plan.control.claim(plan.pipeline);
        if ops == 0 {
            break;
        }
        if exchange(&plan, &mut worker, &mut conn, ops).await {
            stream = Some(conn);
        }
    }
    worker.into_tally(&plan.control)
}

/// Writes one batch and reads its replies; false if the connection must be dropped.
async fn exchange(plan: &LoadPlan, worker: &mut WorkerState, conn: &mut TcpStream, ops: usize) -> bool {
    worker.fill(plan.mode, ops);
    let (logins, heartbeats) = (worker.batch.logins, worker.batch.heartbeats);
    let owed = Owed { logins, first_id: worker.batch.first_id };
    let sent = Instant::now();
    let deadline = sent + plan.timeout;
    let written = tokio::time::timeout_at(deadline, conn.write_all(&worker.batch.bytes)).await;
    let healthy = match written {
        Ok(Ok(())) => {
            let WorkerState { tally, latency, replies, deadline: timer, .. } = worker;
            timer.set(deadline);
            let (answered, cut) = read_replies(conn, replies, owed, sent, timer, tally, latency).await;
            tally.settle_heartbeats(heartbeats, answered, cut.map(|c| c.kind));
            cut.is_none()
        }
        Ok(Err(error)) => lose(worker, ErrorKind::of_io(&error), logins + heartbeats),
        Err(_) => lose(worker, ErrorKind::Timeout, logins + heartbeats),
    };
    worker.finished(&plan.control, ops);
    healthy
}

/// Counts `n` requests lost to `kind`; the connection is unusable.
fn lose(worker: &mut WorkerState, kind: ErrorKind, n: usize) -> bool {
    worker.tally.errors.add(kind, n as u64);
    worker.replies.clear();
    false
}
