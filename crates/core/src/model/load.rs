//! How loaded a backend is, as the core ranks it: a number with the precision of the
//! figures it comes from, and an explicit "not yet scored".

use std::fmt;

/// The largest load that is a valid percentage.
pub const MAX_VALID_PERCENT: f64 = 100.0;

/// A backend's reported load.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Load {
    /// A valid load, 0 to 100 percent.
    Percent(f64),
    /// A figure above 100 (a legacy backend's bad `mem`): ranked after every valid
    /// load, and kept so that operators see what was sent.
    Invalid(f64),
    /// No score yet: the backend's service scores a figure its heartbeats lack.
    /// Ranked after every scored backend, as an invalid load is.
    #[default]
    Unscored,
}

impl Load {
    /// The load of a figure in percent: valid up to [`MAX_VALID_PERCENT`], invalid
    /// above (or when not a number).
    pub fn from_percent(percent: f64) -> Load {
        if (0.0..=MAX_VALID_PERCENT).contains(&percent) {
            Load::Percent(percent)
        } else {
            Load::Invalid(percent)
        }
    }

    /// The load a score makes, `None` meaning the scoring lacked a figure.
    pub fn from_score(score: Option<f64>) -> Load {
        score.map_or(Load::Unscored, Load::from_percent)
    }

    /// The valid percentage, if this is one.
    pub fn percent(self) -> Option<f64> {
        match self {
            Load::Percent(percent) => Some(percent),
            Load::Invalid(_) | Load::Unscored => None,
        }
    }

    /// Whether selection may rank the backend by this figure.
    pub fn is_valid(self) -> bool {
        matches!(self, Load::Percent(_))
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Load::Percent(percent) => write!(f, "{percent} %"),
            Load::Invalid(figure) => write!(f, "invalid ({figure})"),
            Load::Unscored => f.write_str("not yet scored"),
        }
    }
}

/// The figures a v2 backend reports, with the precision they were sent in (percent
/// to the hundredth, counts, custom values). A scoring combines them into a [`Load`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metrics {
    /// Memory in use, in percent.
    pub memory: Option<f64>,
    /// CPU in use, in percent.
    pub cpu: Option<f64>,
    /// Open client connections.
    pub connections: Option<f64>,
    /// Figures of the backend's own, by name.
    pub custom: Vec<(String, f64)>,
}

impl Metrics {
    /// A custom figure, by name.
    pub fn custom(&self, name: &str) -> Option<f64> {
        self.custom.iter().find(|(key, _)| key == name).map(|&(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_above_a_hundred_or_missing_is_not_a_valid_load() {
        assert_eq!(Load::from_percent(42.25), Load::Percent(42.25));
        assert_eq!(Load::from_percent(100.0).percent(), Some(100.0));
        assert_eq!(Load::from_percent(255.0), Load::Invalid(255.0));
        assert!(!Load::from_percent(f64::NAN).is_valid());
        assert_eq!(Load::from_score(None), Load::Unscored);
        assert_eq!(Load::default(), Load::Unscored);
        assert_eq!(Load::Unscored.to_string(), "not yet scored");
    }

    #[test]
    fn custom_figures_are_found_by_name() {
        let metrics = Metrics { custom: vec![("queue".into(), 12.5)], ..Metrics::default() };
        assert_eq!(metrics.custom("queue"), Some(12.5));
        assert_eq!(metrics.custom("other"), None);
    }
}
