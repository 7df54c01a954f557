//! The client stream: arrival times and session lengths, drawn lazily and independently
//! of any policy.
//!
//! Every stream (the steady arrivals, each burst) owns its own seeded RNG and draws a
//! session length with each arrival, so the clients are the same, in the same order,
//! whichever backend the dispatcher sends them to.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::scenario::{Burst, Clients, SessionLength, Spacing};

/// Nanoseconds of virtual time since the start of the run.
pub type Nanos = u64;

/// One client: when it arrives and how long it stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub at: Nanos,
    /// `None` when the session outlasts the run.
    pub length: Option<Nanos>,
}

/// Where arrival times come from.
#[derive(Debug)]
enum Timing {
    /// A Poisson process: exponential gaps with this rate per second.
    Steady { rate: f64, last: Nanos },
    /// `total` clients over `[start, start + window]`.
    Burst { start: Nanos, window: Nanos, total: u64, sent: u64, spacing: Spacing, last_fraction: f64 },
}

/// One source of clients.
#[derive(Debug)]
pub struct Stream {
    timing: Timing,
    session: SessionLength,
    load: f64,
    rng: StdRng,
}

impl Stream {
    /// The steady Poisson arrivals of `[clients]`, or `None` when its rate is 0.
    pub fn steady(clients: &Clients, seed: u64) -> Option<Stream> {
        (clients.rate > 0.0).then(|| Stream {
            timing: Timing::Steady { rate: clients.rate, last: 0 },
            session: clients.session,
            load: clients.session_load,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// The arrivals of one burst; its sessions default to those of `[clients]`.
    pub fn burst(burst: &Burst, clients: &Clients, seed: u64) -> Stream {
        let timing = Timing::Burst {
            start: nanos(burst.at),
            window: nanos(burst.window),
            total: burst.clients,
            sent: 0,
            spacing: burst.spacing,
            last_fraction: 0.0,
        };
        Stream {
            timing,
            session: burst.session.unwrap_or(clients.session),
            load: burst.session_load.unwrap_or(clients.session_load),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The next client of this stream, or `None` when it has sent them all.
    pub fn next_arrival(&mut self) -> Option<Arrival> {
        let at = self.next_time()?;
        let length = sample_length(self.session, &mut self.rng);
        Some(Arrival { at, length })
    }

    /// What one of this stream's sessions adds to a capacity-1 backend, in percent.
    pub fn session_load(&self) -> f64 {
        self.load
    }

    fn next_time(&mut self) -> Option<Nanos> {
        match &mut self.timing {
            Timing::Steady { rate, last } => {
                let gap = exponential(&mut self.rng, 1.0 / *rate);
                *last = last.saturating_add(seconds_to_nanos(gap));
                Some(*last)
            }
            Timing::Burst { start, window, total, sent, spacing, last_fraction } => {
                if sent == total {
                    return None;
                }
                let fraction = match spacing {
                    Spacing::Even => *sent as f64 / *total as f64,
                    Spacing::Poisson => next_order_statistic(&mut self.rng, *last_fraction, *total - *sent),
                };
                *sent += 1;
                *last_fraction = fraction;
                Some(*start + (fraction * *window as f64) as Nanos)
            }
        }
    }
}

/// The smallest of `remaining` uniform draws on `[previous, 1)`: drawing the sorted
/// uniforms one by one, without storing them.
fn next_order_statistic(rng: &mut StdRng, previous: f64, remaining: u64) -> f64 {
    let u: f64 = rng.random();
    let smallest = 1.0 - (1.0 - u).powf(1.0 / remaining as f64);
    (previous + (1.0 - previous) * smallest).min(1.0)
}

/// An exponential draw with the given mean, by inverse transform.
fn exponential(rng: &mut StdRng, mean: f64) -> f64 {
    let u: f64 = rng.random();
    -(1.0 - u).ln() * mean
}

/// A session length, or `None` for an endless session.
pub fn sample_length(session: SessionLength, rng: &mut StdRng) -> Option<Nanos> {
    match session {
        SessionLength::Endless => None,
        SessionLength::Fixed { length } => Some(nanos(length)),
        SessionLength::Exponential { mean } => Some(seconds_to_nanos(exponential(rng, mean.as_secs_f64()))),
        SessionLength::Uniform { min, max } => {
            let (min, max) = (nanos(min), nanos(max));
            Some(if min == max { min } else { rng.random_range(min..=max) })
        }
    }
}

/// A duration as nanoseconds (scenarios bound every duration far below `u64::MAX`).
pub fn nanos(duration: std::time::Duration) -> Nanos {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn seconds_to_nanos(seconds: f64) -> Nanos {
    // `as` saturates, and the draws are finite and non-negative.
    (seconds * 1e9) as Nanos
}
