//! Whether a backend takes new clients, and why not: one documented precedence of
//! the causes that keep it out.
//!
//! Precedence, highest first (later work adds to the end of this list):
//!
//! 1. [`Cause::Operator`]: an operator's hold (drain or maintenance, admin API);
//!    remembered across the backend's reconnects.
//! 2. [`Cause::Agent`]: the backend's own drain or maintenance (v2 heartbeats).
//! 3. [`Cause::Unhealthy`]: the backend's own checks fail (v2 heartbeats' health).
//! 4. [`Cause::Ejected`]: clients sent there could not use it (their failure reports).
//! 5. [`Cause::NoFreePlace`]: a slot backend whose grant, or whose places, this
//!    dispatcher has used up (see [`crate::slots`]).
//!
//! The state in force is the furthest the operator and the agent hold it in
//! (maintenance keeps clients further away than draining); health and ejection keep a
//! backend from clients without changing that state. The cause named is the first in
//! that list that keeps the backend from clients. So an unhealthy backend that is
//! also ejected is named unhealthy; once healthy it stays out until its ejection ends. So an operator who drains a backend that reports
//! maintenance sees it in maintenance, held by the operator, and undraining it leaves
//! it in maintenance, held by the agent.

use std::fmt;

/// Whether a backend takes new clients. States are ordered by how far they keep
/// clients away.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Takes new clients.
    #[default]
    Ready,
    /// Takes no new clients but stays listed, so its current ones can finish.
    Draining,
    /// Out of service for maintenance: takes no new clients, stays listed.
    Maintenance,
}

impl State {
    pub const ALL: [State; 3] = [State::Ready, State::Draining, State::Maintenance];

    pub fn name(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Draining => "draining",
            State::Maintenance => "maintenance",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a backend's own checks find it usable. A backend without checks, and
/// every legacy backend, is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Healthy,
    /// Stays listed, gets no new clients.
    Unhealthy,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who keeps a backend from taking clients, in precedence order (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// An operator's drain or maintenance.
    Operator,
    /// The backend's own drain or maintenance.
    Agent,
    /// The backend's own checks fail.
    Unhealthy,
    /// Ejected after failure reports from its clients.
    Ejected,
    /// A slot backend with no place this dispatcher may fill.
    NoFreePlace,
}

impl Cause {
    pub fn name(self) -> &'static str {
        match self {
            Cause::Operator => "operator",
            Cause::Agent => "agent",
            Cause::Unhealthy => "unhealthy",
            Cause::Ejected => "ejected",
            Cause::NoFreePlace => "no_free_place",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What each cause holds a backend in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hold {
    /// What an operator set; `Ready` when they set nothing.
    pub operator: State,
    /// What the backend reports of itself; legacy backends are `Ready`.
    pub agent: State,
    /// What the backend's own checks say; legacy backends are healthy.
    pub health: Health,
    /// Whether its clients' failure reports have it ejected.
    pub ejected: bool,
    /// Whether it is a slot backend without a place this dispatcher may fill.
    pub no_place: bool,
}

/// A backend's state in force and the cause that keeps it from clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The furthest of the operator's and the agent's states.
    pub state: State,
    /// `None` when the backend takes new clients.
    pub cause: Option<Cause>,
}

impl Standing {
    /// Whether the backend takes new clients.
    pub fn takes_clients(self) -> bool {
        self.cause.is_none()
    }
}

impl Hold {
    /// The state in force and its cause, by the precedence of the module doc.
    pub fn standing(self) -> Standing {
        let state = self.operator.max(self.agent);
        let cause = if self.operator != State::Ready {
            Some(Cause::Operator)
        } else if self.agent != State::Ready {
            Some(Cause::Agent)
        } else if self.health == Health::Unhealthy {
            Some(Cause::Unhealthy)
        } else if self.ejected {
            Some(Cause::Ejected)
        } else if self.no_place {
            Some(Cause::NoFreePlace)
        } else {
            None
        };
        Standing { state, cause }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_ejection_keep_a_backend_from_clients_after_the_states() {
        let ready = Hold::default();
        assert!(ready.standing().takes_clients());
        let unhealthy = Hold { health: Health::Unhealthy, ..ready };
        assert_eq!(unhealthy.standing(), Standing { state: State::Ready, cause: Some(Cause::Unhealthy) });
        let ejected = Hold { ejected: true, ..ready };
        assert_eq!(ejected.standing(), Standing { state: State::Ready, cause: Some(Cause::Ejected) });
        // Unhealthy and ejected: named unhealthy; healthy again, still ejected.
        let both = Hold { ejected: true, ..unhealthy };
        assert_eq!(both.standing().cause, Some(Cause::Unhealthy));
        assert_eq!(Hold { health: Health::Healthy, ..both }.standing().cause, Some(Cause::Ejected));
        // The agent's drain comes before its health, the operator before both.
        let draining = Hold { agent: State::Draining, ..both };
        assert_eq!(draining.standing(), Standing { state: State::Draining, cause: Some(Cause::Agent) });
        let held = Hold { operator: State::Maintenance, ..draining };
        assert_eq!(held.standing(), Standing { state: State::Maintenance, cause: Some(Cause::Operator) });
    }

    #[test]
    fn an_operator_hold_comes_before_the_agents_own_drain() {
        let standing = |operator, agent| Hold { operator, agent, ..Hold::default() }.standing();
        assert_eq!(standing(State::Ready, State::Ready), Standing { state: State::Ready, cause: None });
        assert_eq!(
            standing(State::Ready, State::Draining),
            Standing { state: State::Draining, cause: Some(Cause::Agent) }
        );
        assert_eq!(
            standing(State::Draining, State::Ready),
            Standing { state: State::Draining, cause: Some(Cause::Operator) }
        );
        // The furthest state, named after the first cause in precedence.
        assert_eq!(
            standing(State::Draining, State::Maintenance),
            Standing { state: State::Maintenance, cause: Some(Cause::Operator) }
        );
    }

    #[test]
    fn states_are_ordered_by_how_far_they_keep_clients() {
        assert!(State::Ready < State::Draining && State::Draining < State::Maintenance);
        assert!(Cause::Operator < Cause::Agent && Cause::Agent < Cause::Unhealthy);
        assert!(Cause::Unhealthy < Cause::Ejected);
    }
}
