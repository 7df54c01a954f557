//! Keeps repeated warnings from flooding the log: one per period, shared by all connections.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one event through per period and counts the ones held back. Shared by all
/// connections, so that many peers misbehaving at once still log once a second.
#[derive(Debug)]
pub struct RateLimitedLog {
    period: Duration,
    state: Mutex<RateState>,
}

#[derive(Debug, Default)]
struct RateState {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    pub fn new(period: Duration) -> Self {
        RateLimitedLog { period, state: Mutex::default() }
    }

    /// `Some(number held back since the last one)` when an event at `now` should be
    /// logged; `None` when it should only be counted.
    pub fn should_log(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.last.is_some_and(|last| now.saturating_duration_since(last) < self.period) {
            state.suppressed += 1;
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_log_lets_one_through_per_period_and_counts_the_rest() {
        let t0 = Instant::now();
        let log = RateLimitedLog::new(Duration::from_secs(1));
        assert_eq!(log.should_log(t0), Some(0));
        assert_eq!(log.should_log(t0 + Duration::from_millis(10)), None);
        assert_eq!(log.should_log(t0 + Duration::from_millis(999)), None);
        assert_eq!(log.should_log(t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(log.should_log(t0 + Duration::from_millis(1500)), None);
    }
}
