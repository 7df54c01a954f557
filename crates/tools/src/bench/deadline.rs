//! A reusable reply deadline that costs no timer operation per request: the timer is
//! re-armed only when it fires before the current deadline.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A deadline that moves forward with every request. Registering a fresh timer for
/// each request would cost two timer-wheel operations per request; this keeps one
/// timer armed for an earlier deadline and only checks, when it fires, whether the
/// deadline of the moment has really passed.
#[derive(Debug)]
pub struct LazyDeadline {
    timer: Pin<Box<Sleep>>,
    deadline: Instant,
}

impl Default for LazyDeadline {
    fn default() -> Self {
        // About thirty years: never, in practice (tokio's own idiom).
        let never = Instant::now() + Duration::from_secs(86_400 * 365 * 30);
        LazyDeadline { timer: Box::pin(tokio::time::sleep_until(never)), deadline: never }
    }
}

impl LazyDeadline {
    /// Moves the deadline to `deadline`.
    pub fn set(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if deadline < self.timer.deadline() {
            self.timer.as_mut().reset(deadline);
        }
    }

    /// Completes once the deadline has passed.
    pub async fn passed(&mut self) {
        loop {
            (&mut self.timer).await;
            if Instant::now() >= self.deadline {
                return;
            }
            self.timer.as_mut().reset(self.deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_latest_deadline_not_the_armed_one() {
        let start = Instant::now();
        let mut deadline = LazyDeadline::default();
        deadline.set(start + Duration::from_secs(1));
        deadline.set(start + Duration::from_secs(3));
        deadline.passed().await;
        assert_eq!(Instant::now(), start + Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_re_arms_the_timer() {
        let start = Instant::now();
        let mut deadline = LazyDeadline::default();
        deadline.set(start + Duration::from_secs(5));
        deadline.set(start + Duration::from_secs(2));
        deadline.passed().await;
        assert_eq!(Instant::now(), start + Duration::from_secs(2));
    }
}
