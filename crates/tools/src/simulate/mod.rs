//! A deterministic discrete-event simulation of a pool, driving the real dispatcher to
//! compare its selection policies.
//!
//! # Layout
//!
//! | module | its one job |
//! |---|---|
//! | [`scenario`] | the scenario file: TOML model, defaults, validation and bounds |
//! | [`arrivals`] | the client stream: arrival times and session lengths |
//! | `engine` | the event queue and virtual clock that drive the [`Dispatcher`] |
//! | [`metrics`] | exact time integrals of the loads, burst fairness |
//! | [`table`] | the comparison as text, Markdown or JSON |
//! | [`sticky`] | keyed arrivals (Zipf keys) as sticky picks: affinity kept, peak/mean, keys moved |
//! | [`slots`] | capacity slots: leases, load and a shared counter on one client stream |
//!
//! # The model
//!
//! **Backends.** Each backend has a *true load* in percent: its starting (background)
//! load, which stays all run, plus `session_load / capacity` for every session it
//! carries. The true load may exceed 100. A backend connects at its group's
//! `join_at` (0 for the initial pool) with a first heartbeat, and then reports every
//! `heartbeat_interval`. The initial pool connected at random times before the run,
//! so its second heartbeat comes after a random phase in `(0, interval]`; a joiner's
//! comes one interval after it joined, as the agent sends them. A heartbeat reports
//! the true load at that instant, truncated to an integer and capped at 255; a
//! `legacy_reports_100` backend reports 100 on every heartbeat after its first, as
//! old senders did. A backend leaves at `leave_at` by `disconnect` (the dispatcher
//! drops it at once) or by `silence` (it stops reporting; the dispatcher keeps
//! picking it until its TTL passes, and those clients are counted as `lost`). Its
//! sessions vanish as it leaves.
//!
//! **Clients.** Steady clients arrive as a Poisson process (`clients.rate` per
//! second); a burst sends `clients` clients within `window` from `at`, evenly spaced
//! or at independent uniform times. Every arrival calls [`Dispatcher::pick`] at its
//! instant (which also does the dispatcher's own accounting) and opens a session on
//! the backend named, for a length that is endless, fixed, exponential with a mean,
//! or uniform between two bounds. When no backend is named it counts as
//! `no backend`. The arrivals and session lengths of every stream come from their
//! own seeded RNG, so every policy sees the identical client stream.
//!
//! **Dispatcher.** The real [`Dispatcher`], built with the policy under test, a seed
//! derived from the run's seed, a TTL of three heartbeat intervals unless the
//! scenario sets `[dispatcher] ttl`, and the scenario's `slow_start` and
//! `tie_band`. It sees virtual time only: `origin + elapsed` for one `origin`.
//!
//! **Replicas.** With `[dispatcher] replicas = N`, N such dispatchers share the pool,
//! each with a seed of its own, as separate processes each seed theirs from the
//! operating system. Every heartbeat reaches every replica at the same instant, and
//! so does a backend's disconnection; the clients go to the replicas in turn, in
//! the order they arrive (all streams together). Each replica accounts only for the
//! clients it sent, as in production. The first replica's seed is the one a run
//! with a single dispatcher uses.
//!
//! **Metrics.** Between events every true load is constant, so the metrics are
//! exact integrals of piecewise-constant functions over the time at least one
//! backend is live (normally the whole run): the peak and the time average of the
//! hottest live backend's load, the time averages of the spread (max − min) and of
//! the standard deviation across live backends, and the share of time some backend
//! is above 90 %. For each burst the picks made within its window (both ends
//! included, steady clients too) are counted per backend; `max / mean` compares the
//! busiest backend with an even share over the backends live when the window
//! opened, and the worst burst is reported.
//!
//! **Capacity slots.** When the backends have `slots`, the scenario compares three
//! ways of admitting the same clients instead of the policies: see [`slots`].
//!
//! # The scenario file
//!
//! TOML; durations are strings like `"500ms"`, `"2s"`, `"1m"`. Unknown keys are
//! refused, and so is every value that cannot work, naming its key. Every key, with
//! its default:
//!
//! ```toml
//! name = "my-scenario"          # default: the file name
//! description = "..."           # optional, printed above the table
//! duration = "30s"              # required; at most 7 days
//! seed = 1                      # default 1; --seed overrides it
//!
//! [dispatcher]                  # optional
//! ttl = "3s"                    # default: 3 × the longest heartbeat_interval
//! slow_start = "3s"             # default: the dispatcher's; "0s" turns it off
//! replicas = 1                  # default 1, at most 64: dispatchers sharing the pool
//! tie_band = 0.05               # least-loaded's tie band in %, default the
//!                               # dispatcher's; 0 to 10
//!
//! [[backends]]                  # one table per group; at least one backend
//! name = "pool"                 # optional label
//! count = 1                     # default 1
//! load = 0                      # starting load in %, default 0; or [a, b, ...], one per backend
//! capacity = 1                  # default 1; a session adds session_load / capacity %
//! heartbeat_interval = "1s"     # default 1s
//! legacy_reports_100 = false    # default false; true: reports 100 after the first heartbeat
//! join_at = "0s"                # default 0 (the initial pool)
//! leave_at = "20s"              # default: stays to the end
//! leave_by = "disconnect"       # default "disconnect"; or "silence"
//! slots = 50                    # capacity slots: places, one per session; when one
//!                               # group has them all must, and none may leave
//!
//! [clients]                     # optional
//! rate = 0                      # steady Poisson arrivals per second, default 0
//! session_load = 0.01           # % of a capacity-1 backend per session, default 0.01
//! session = { kind = "endless" }  # default; or { kind = "fixed", length = "30s" },
//!                               # { kind = "exponential", mean = "30s" },
//!                               # { kind = "uniform", min = "10s", max = "60s" }
//!
//! [slots]                       # optional; used when the backends have `slots`
//! connect_delay = "20ms"        # default 20ms: from a pick to the client taking its place
//! report_delay = "1ms"          # default 1ms: a LeaseReport's way to the backend
//!
//! [[bursts]]                    # any number (at most 10 000)
//! at = "5s"                     # required
//! clients = 1000                # required
//! window = "500ms"              # required; "0s" sends all at `at`
//! spacing = "even"              # default "even"; or "poisson"
//! session_load = 0.01           # default: clients.session_load
//! session = { kind = "endless" }  # default: clients.session
//! ```
//!
//! A scenario may describe at most 100 000 backends, about 10 million clients
//! (`rate × duration` plus the bursts) and about 10 million heartbeats (counted
//! once per replica), so that a typo cannot hang the simulator or exhaust memory.
//!
//! # Example
//!
//! ```
//! use loadwise_core::selection::Policy;
//! use loadwise_tools::simulate::{Scenario, simulate};
//!
//! let scenario = Scenario::from_toml(r#"
//!     duration = "2s"
//!     [[backends]]
//!     count = 2
//!     load = 10
//!     [[bursts]]
//!     at = "500ms"
//!     clients = 100
//!     window = "100ms"
//! "#).unwrap();
//! let result = simulate(&scenario, Policy::RoundRobin, 1);
//! assert_eq!(result.picks, 100);
//! ```
//!
//! [`Dispatcher`]: loadwise_core::dispatcher::Dispatcher
//! [`Dispatcher::pick`]: loadwise_core::dispatcher::Dispatcher::pick

pub mod arrivals;
mod engine;
pub mod metrics;
pub mod scenario;
pub mod slots;
pub mod sticky;
pub mod table;

use loadwise_core::selection::Policy;

pub use metrics::{BurstSummary, PolicyResult};
pub use scenario::{Scenario, ScenarioError};
pub use slots::{Mode, ModeResult, compare_slots, simulate_slots};
pub use table::{Format, Report, render_reports, render_slot_table, render_table};

/// Runs `scenario` once under `policy`, with every random draw seeded by `seed`.
pub fn simulate(scenario: &Scenario, policy: Policy, seed: u64) -> PolicyResult {
    engine::Engine::new(scenario, policy, seed).run()
}

/// Runs `scenario` under each policy on the same client stream.
pub fn compare(scenario: &Scenario, policies: &[Policy], seed: u64) -> Vec<PolicyResult> {
    policies.iter().map(|&policy| simulate(scenario, policy, seed)).collect()
}

#[cfg(test)]
mod tests;
