//! How a v2 backend's metrics combine into the one load figure selection ranks by.
//!
//! Each service has a [`Scoring`], written as text in the configuration:
//!
//! - `memory` (the default, as in the original): memory in percent;
//! - `max(memory, cpu)`: the largest of several figures, for a backend that is full
//!   when any one resource is;
//! - `0.7*memory + 0.3*cpu`: a weighted sum.
//!
//! A figure is `memory` or `cpu` (percent), `connections` (a count, so give it a
//! factor: `0.5*connections` makes 200 connections 100 %), or the name of a custom
//! metric the backends report. A backend whose heartbeat lacks a figure the scoring
//! needs gets no score: it is ranked after every backend that has one, as a legacy
//! report above 100 is. Pure: metrics in, a number out.

use std::fmt;
use std::str::FromStr;

use crate::model::Metrics;
use loadwise_protocol::v2::{MetricName, NameError};

/// One figure of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Figure {
    Memory,
    Cpu,
    Connections,
    Custom(MetricName),
}

/// How figures combine into a load in percent.
#[derive(Debug, Clone, PartialEq)]
pub enum Scoring {
    /// The largest figure.
    Max(Vec<Figure>),
    /// The sum of `factor × figure`.
    Sum(Vec<(f64, Figure)>),
}

impl Default for Scoring {
    /// `memory`, as the original.
    fn default() -> Self {
        Scoring::Sum(vec![(1.0, Figure::Memory)])
    }
}

/// Why a scoring text cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoringError {
    #[error("the scoring is empty; write for example `memory` or `max(memory, cpu)`")]
    Empty,
    #[error("{0:?} is not a figure: use memory, cpu, connections or a metric name ({1})")]
    BadFigure(String, NameError),
    #[error("{0:?} is a number where a figure belongs; write factors as 100*cpu, without exponents")]
    NotAFigure(String),
    #[error("the factor {0:?} is not a finite number")]
    BadFactor(String),
    #[error("`max(` needs a closing parenthesis and at least one figure")]
    BadMax,
    #[error("at most {MAX_TERMS} figures")]
    TooManyTerms,
}

/// The most figures one scoring may combine.
pub const MAX_TERMS: usize = 16;

impl Figure {
    /// The figure's value in `metrics`, if reported.
    fn value(&self, metrics: &Metrics) -> Option<f64> {
        match self {
            Figure::Memory => metrics.memory,
            Figure::Cpu => metrics.cpu,
            Figure::Connections => metrics.connections,
            Figure::Custom(name) => metrics.custom(name.as_str()),
        }
    }
}

impl Scoring {
    /// The backend's load in percent, or `None` when a figure it needs is missing.
    /// Negative results count as 0.
    pub fn score(&self, metrics: &Metrics) -> Option<f64> {
        let score = match self {
            Scoring::Max(figures) => {
                figures.iter().map(|f| f.value(metrics)).try_fold(f64::MIN, |max, v| Some(max.max(v?)))?
            }
            Scoring::Sum(terms) => terms
                .iter()
                .try_fold(0.0, |sum, (factor, figure)| Some(sum + factor * figure.value(metrics)?))?,
        };
        // Figures are finite, but a sum of huge ones may not be: no score, rather than
        // a NaN that would compare as the best.
        score.is_finite().then(|| score.max(0.0))
    }
}

impl FromStr for Figure {
    type Err = ScoringError;

    fn from_str(text: &str) -> Result<Figure, ScoringError> {
        Ok(match text {
            "memory" => Figure::Memory,
            "cpu" => Figure::Cpu,
            "connections" => Figure::Connections,
            // A number where a figure belongs is a mistyped factor (`1e+2*cpu` splits
            // at its `+`), not a metric called `1e`.
            number if number.trim_end_matches(['e', 'E']).parse::<f64>().is_ok() => {
                return Err(ScoringError::NotAFigure(number.to_owned()));
            }
            name => Figure::Custom(
                MetricName::new(name).map_err(|e| ScoringError::BadFigure(name.to_owned(), e))?,
            ),
        })
    }
}

impl FromStr for Scoring {
    type Err = ScoringError;

    fn from_str(text: &str) -> Result<Scoring, ScoringError> {
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if text.is_empty() {
            return Err(ScoringError::Empty);
        }
        let scoring = match text.strip_prefix("max(") {
            Some(inner) => {
                let inner = inner.strip_suffix(')').filter(|i| !i.is_empty()).ok_or(ScoringError::BadMax)?;
                Scoring::Max(inner.split(',').map(str::parse).collect::<Result<_, _>>()?)
            }
            None => Scoring::Sum(text.split('+').map(parse_term).collect::<Result<_, _>>()?),
        };
        let terms = match &scoring {
            Scoring::Max(figures) => figures.len(),
            Scoring::Sum(terms) => terms.len(),
        };
        if terms > MAX_TERMS {
            return Err(ScoringError::TooManyTerms);
        }
        Ok(scoring)
    }
}

/// `figure` or `factor*figure`.
fn parse_term(term: &str) -> Result<(f64, Figure), ScoringError> {
    match term.split_once('*') {
        Some((factor, figure)) => {
            let value = factor.parse::<f64>().ok().filter(|f| f.is_finite());
            Ok((value.ok_or_else(|| ScoringError::BadFactor(factor.to_owned()))?, figure.parse()?))
        }
        None => Ok((1.0, term.parse()?)),
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Figure::Memory => f.write_str("memory"),
            Figure::Cpu => f.write_str("cpu"),
            Figure::Connections => f.write_str("connections"),
            Figure::Custom(name) => write!(f, "{name}"),
        }
    }
}

impl fmt::Display for Scoring {
    /// The text form, which parses back to the same scoring.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scoring::Max(figures) => {
                let figures: Vec<String> = figures.iter().map(Figure::to_string).collect();
                write!(f, "max({})", figures.join(", "))
            }
            Scoring::Sum(terms) => {
                let terms: Vec<String> = terms
                    .iter()
                    .map(|(factor, figure)| match *factor == 1.0 {
                        true => figure.to_string(),
                        false => format!("{factor}*{figure}"),
                    })
                    .collect();
                f.write_str(&terms.join(" + "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(
        memory: Option<u16>,
        cpu: Option<u16>,
        connections: Option<u32>,
        metrics: &[(&str, f64)],
    ) -> Metrics {
        Metrics {
            memory: memory.map(f64::from),
            cpu: cpu.map(f64::from),
            connections: connections.map(f64::from),
            custom: metrics.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        }
    }

    fn score(text: &str, heartbeat: &Metrics) -> Option<f64> {
        text.parse::<Scoring>().unwrap().score(heartbeat)
    }

    #[test]
    fn memory_alone_is_the_default() {
        let hb = heartbeat(Some(40), Some(90), None, &[]);
        assert_eq!(Scoring::default().score(&hb), Some(40.0));
        assert_eq!("memory".parse::<Scoring>().unwrap(), Scoring::default());
        assert_eq!(Scoring::default().to_string(), "memory");
    }

    #[test]
    fn max_and_weighted_sums_combine_figures() {
        let hb = heartbeat(Some(40), Some(90), Some(120), &[("queue_depth", 12.5)]);
        assert_eq!(score("max(memory, cpu)", &hb), Some(90.0));
        assert_eq!(score("0.5*memory + 0.5*cpu", &hb), Some(65.0));
        assert_eq!(score("0.5 * connections", &hb), Some(60.0));
        assert_eq!(score("max(memory, queue_depth)", &hb), Some(40.0));
        assert_eq!(score("memory + -100*cpu", &hb), Some(0.0), "negative counts as 0");
        let huge = heartbeat(Some(40), None, None, &[("a", f64::MAX), ("b", -f64::MAX)]);
        assert_eq!(score("2*a + 2*b", &huge), None, "inf - inf has no score");
    }

    #[test]
    fn a_missing_figure_leaves_the_backend_without_a_score() {
        let hb = heartbeat(Some(40), None, None, &[]);
        assert_eq!(score("max(memory, cpu)", &hb), None);
        assert_eq!(score("memory + connections", &hb), None);
        assert_eq!(score("gpu", &hb), None);
    }

    #[test]
    fn bad_texts_are_refused_with_a_reason() {
        assert_eq!("  ".parse::<Scoring>(), Err(ScoringError::Empty));
        assert_eq!("max(memory".parse::<Scoring>(), Err(ScoringError::BadMax));
        assert_eq!("max()".parse::<Scoring>(), Err(ScoringError::BadMax));
        assert!(matches!("x*memory".parse::<Scoring>(), Err(ScoringError::BadFactor(_))));
        assert!(matches!("inf*memory".parse::<Scoring>(), Err(ScoringError::BadFactor(_))));
        assert!(matches!("mem/ory".parse::<Scoring>(), Err(ScoringError::BadFigure(..))));
        assert!(matches!("1e+2*cpu".parse::<Scoring>(), Err(ScoringError::NotAFigure(_))));
        assert!(matches!("memory + 3".parse::<Scoring>(), Err(ScoringError::NotAFigure(_))));
        assert!("max(queue, e, byte)".parse::<Scoring>().is_ok(), "names ending in e are names");
        let many = vec!["memory"; MAX_TERMS + 1].join("+");
        assert_eq!(many.parse::<Scoring>(), Err(ScoringError::TooManyTerms));
    }

    #[test]
    fn the_text_form_parses_back() {
        for text in ["memory", "max(memory, cpu, queue_depth)", "0.7*memory + 0.3*cpu", "0.5*connections"] {
            let scoring: Scoring = text.parse().unwrap();
            assert_eq!(scoring.to_string(), text);
            assert_eq!(scoring.to_string().parse::<Scoring>().unwrap(), scoring);
        }
    }
}
