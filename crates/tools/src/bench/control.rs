//! When sending stops: a deadline or a budget of ops, shared by every worker of a run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::Stop;

/// The stop condition of a run and the count of ops done, shared by its workers.
#[derive(Debug)]
pub struct Control {
    /// Ops not yet claimed by a worker, with `--requests`.
    remaining: Option<AtomicU64>,
    /// Cancelled when no more requests may be sent (deadline, budget spent, or the
    /// run is being stopped). Replies already owed are still read.
    stop: CancellationToken,
    /// The same as a flag: workers check it before every batch, and a token's check
    /// takes a lock that every worker would contend for.
    stopped: AtomicBool,
    /// Ops finished (well or not), for the progress bar.
    finished: AtomicU64,
}

impl Control {
    /// A control for `stop`; a deadline is enforced by [`run_deadline`](Self::run_deadline).
    pub fn new(stop: Stop) -> Self {
        let remaining = match stop {
            Stop::Requests(n) => Some(AtomicU64::new(n)),
            Stop::Duration(_) => None,
        };
        Control {
            remaining,
            stop: CancellationToken::new(),
            stopped: AtomicBool::new(false),
            finished: AtomicU64::new(0),
        }
    }

    /// Claims up to `want` ops to send; 0 means stop sending.
    pub fn claim(&self, want: usize) -> usize {
        if self.is_stopped() {
            return 0;
        }
        let Some(remaining) = &self.remaining else { return want };
        let want = want as u64;
        let before = remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| Some(left.saturating_sub(want)))
            .expect("the update always succeeds");
        let got = before.min(want);
        if before <= want {
            // This claim took the last ops: nobody else will get any.
            self.stop();
        }
        got as usize
    }

    /// Completes when sending must stop.
    pub async fn stopped(&self) {
        self.stop.cancelled().await
    }

    /// True once sending must stop.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Stops sending now.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.stop.cancel();
    }

    /// Stops sending at `deadline` (or earlier, if something else stops the run).
    pub async fn run_deadline(&self, deadline: Instant) {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => self.stop(),
            () = self.stop.cancelled() => {}
        }
    }

    /// Notes `n` more ops finished.
    pub fn finished(&self, n: usize) {
        self.finished.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Ops finished so far.
    pub fn finished_count(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_budget_is_shared_out_then_stops() {
        let control = Control::new(Stop::Requests(10));
        assert_eq!(control.claim(4), 4);
        assert_eq!(control.claim(4), 4);
        assert!(!control.is_stopped());
        assert_eq!(control.claim(4), 2);
        assert!(control.is_stopped());
        assert_eq!(control.claim(4), 0);
    }

    #[test]
    fn a_duration_never_runs_out_of_budget() {
        let control = Control::new(Stop::Duration(Duration::from_secs(1)));
        assert_eq!(control.claim(1000), 1000);
        control.stop();
        assert_eq!(control.claim(1), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_stops_sending() {
        let control = Control::new(Stop::Duration(Duration::from_secs(1)));
        control.run_deadline(Instant::now() + Duration::from_secs(1)).await;
        assert!(control.is_stopped());
    }
}
