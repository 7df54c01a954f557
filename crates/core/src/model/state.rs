//! Whether a backend takes new clients, and why not: one documented precedence of
//! the causes that keep it out.
//!
//! Precedence, highest first (later work adds to the end of this list):
//!
//! 1. [`Cause::Operator`]: an operator's hold (drain or maintenance, admin API);
//!    remembered across the backend's reconnects.
//! 2. [`Cause::Agent`]: the backend's own drain or maintenance (v2 heartbeats).
//! 3. (later) unhealthy; (later) ejection; (later) no free place.
//!
//! The state in force is the furthest any cause holds it in (maintenance keeps
//! clients further away than draining); the cause named is the first in that list
//! that keeps the backend from ready. So an operator who drains a backend that reports
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

/// Who keeps a backend from taking clients, in precedence order (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// An operator's drain or maintenance.
    Operator,
    /// The backend's own drain or maintenance.
    Agent,
}

impl Cause {
    pub fn name(self) -> &'static str {
        match self {
            Cause::Operator => "operator",
            Cause::Agent => "agent",
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
}

/// A backend's state in force and the cause that puts it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub state: State,
    /// `None` when the backend is ready.
    pub cause: Option<Cause>,
}

impl Hold {
    /// The state in force and its cause, by the precedence of the module doc.
    pub fn standing(self) -> Standing {
        let state = self.operator.max(self.agent);
        let cause = if self.operator != State::Ready {
            Some(Cause::Operator)
        } else if self.agent != State::Ready {
            Some(Cause::Agent)
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
    fn an_operator_hold_comes_before_the_agents_own_drain() {
        let standing = |operator, agent| Hold { operator, agent }.standing();
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
        assert!(Cause::Operator < Cause::Agent);
    }
}
