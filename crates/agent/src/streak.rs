//! Keeps a lasting failure from flooding the log: one line on the 1st, 2nd, 4th, 8th...

/// Counts consecutive failures and says which deserve a log line: the 1st, 2nd,
/// 4th, 8th... so a condition that lasts a day produces a few dozen lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FailureStreak {
    count: u32,
}

impl FailureStreak {
    /// Records a failure; true when this one should be logged.
    pub fn fail(&mut self) -> bool {
        self.count = self.count.saturating_add(1);
        self.count.is_power_of_two()
    }

    /// Failures since the last success.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Ends the streak.
    pub fn succeed(&mut self) {
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_streak_logs_on_powers_of_two() {
        let mut streak = FailureStreak::default();
        let logged: Vec<u32> = (1..=20).filter(|_| streak.fail()).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16]);
        assert_eq!(streak.count(), 20);
        streak.succeed();
        assert!(streak.fail());
    }
}
