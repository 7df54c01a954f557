//! The connect-per-pick worker: connect, one login (v2: PickRequest), one reply, close; again.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::conn::connect_client;
use super::outcome::{ErrorKind, Tally};
use super::plan::{LoadPlan, WorkerState};
use super::replies::{Owed, read_replies};

/// Pause after a failed connection, so a dead target does not spin a core.
const FAILED_CONNECT_PAUSE: Duration = Duration::from_millis(20);

/// Makes one pick per connection until the run stops. In an open loop each pick
/// starts at its intended time and its latency counts from then.
pub async fn run(plan: Arc<LoadPlan>, index: usize) -> Tally {
    let mut worker = WorkerState::new(&plan, index, Tally::default());
    let mut k = 0;
    loop {
        let intended = match plan.intended(index, k) {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => at,
                    () = plan.control.stopped() => break,
                }
            }
            None => Instant::now(),
        };
        if plan.control.claim(1) == 0 {
            break;
        }
        k += 1;
        if let Err(kind) = pick(&plan, &mut worker, intended).await {
            worker.tally.errors.add(kind, 1);
            tokio::select! {
                () = tokio::time::sleep(FAILED_CONNECT_PAUSE) => {}
                () = plan.control.stopped() => {}
            }
        }
        worker.finished(&plan.control, 1);
    }
    worker.into_tally(&plan.control)
}

/// One pick on a fresh connection. A failed connection is returned as an error (it
/// counts as an attempt); everything after it is counted in the tally.
async fn pick(plan: &LoadPlan, worker: &mut WorkerState, intended: Instant) -> Result<(), ErrorKind> {
    let started = Instant::now();
    let mut stream = connect_client(plan.addr, plan.timeout).await?;
    let deadline = started + plan.timeout;
    worker.fill(plan.mode, 1);
    let owed = Owed { logins: 1, first_id: worker.batch.first_id };
    let failed = match tokio::time::timeout_at(deadline, stream.write_all(&worker.batch.bytes)).await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(ErrorKind::of_io(&error)),
        Err(_) => Some(ErrorKind::Timeout),
    };
    if let Some(kind) = failed {
        worker.tally.errors.add(kind, 1);
        return Ok(());
    }
    let WorkerState { tally, latency, replies, deadline: timer, .. } = worker;
    timer.set(deadline);
    replies.clear();
    read_replies(&mut stream, replies, owed, intended, timer, tally, latency).await;
    Ok(())
}
