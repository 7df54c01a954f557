//! The health verdict from check results: it flips only after `rise` passes or `fall`
//! failures in a row (HAProxy's `rise`/`fall`), and starts unhealthy.

use loadwise_protocol::v2::Health;

/// Counts consecutive check results against the current verdict. Pure: the caller
/// runs the checks and feeds each result in, so tests need no clock or socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    health: Health,
    /// Consecutive results that disagree with `health`; one that agrees resets it, so
    /// a single flap never flips the verdict.
    against: u32,
}

impl RiseFall {
    /// Unhealthy until `rise` checks pass in a row: a backend that has not shown it
    /// serves gets no clients. `rise` and `fall` of 0 count as 1.
    pub fn new(rise: u32, fall: u32) -> RiseFall {
        RiseFall { rise: rise.max(1), fall: fall.max(1), health: Health::Unhealthy, against: 0 }
    }

    /// The current verdict.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Records one check result; returns the new verdict when this result flips it.
    pub fn observe(&mut self, passed: bool) -> Option<Health> {
        let agrees = passed == (self.health == Health::Healthy);
        if agrees {
            self.against = 0;
            return None;
        }
        self.against += 1;
        let needed = if passed { self.rise } else { self.fall };
        if self.against < needed {
            return None;
        }
        self.against = 0;
        self.health = if passed { Health::Healthy } else { Health::Unhealthy };
        Some(self.health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdict after each result of `results` (`+` pass, `-` failure).
    fn verdicts(mut machine: RiseFall, results: &str) -> String {
        results
            .chars()
            .map(|result| {
                machine.observe(result == '+');
                match machine.health() {
                    Health::Healthy => 'H',
                    Health::Unhealthy => 'U',
                }
            })
            .collect()
    }

    #[test]
    fn starts_unhealthy_until_rise_passes_in_a_row() {
        assert_eq!(RiseFall::new(2, 2).health(), Health::Unhealthy);
        assert_eq!(verdicts(RiseFall::new(2, 2), "++"), "UH");
        assert_eq!(verdicts(RiseFall::new(3, 2), "++-+++"), "UUUUUH", "a failure restarts the count");
        assert_eq!(verdicts(RiseFall::new(1, 1), "+-+"), "HUH");
    }

    #[test]
    fn falls_after_fall_failures_in_a_row_and_ignores_a_single_flap() {
        assert_eq!(verdicts(RiseFall::new(2, 2), "++-+-+--"), "UHHHHHHU");
        assert_eq!(verdicts(RiseFall::new(2, 3), "++---"), "UHHHU");
        assert_eq!(verdicts(RiseFall::new(2, 2), "++--++"), "UHHUUH");
    }

    #[test]
    fn observe_reports_only_flips() {
        let mut machine = RiseFall::new(2, 2);
        let flips: Vec<Option<Health>> = "++++--".chars().map(|r| machine.observe(r == '+')).collect();
        assert_eq!(flips, [None, Some(Health::Healthy), None, None, None, Some(Health::Unhealthy)]);
    }

    #[test]
    fn zero_counts_act_as_one() {
        assert_eq!(verdicts(RiseFall::new(0, 0), "+-"), "HU");
    }
}
