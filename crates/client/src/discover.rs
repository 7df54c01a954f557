//! Replica sets published in DNS: the names to follow and how, and the parts that
//! follow them.
//!
//! A Kubernetes headless Service, Consul DNS or plain round-robin DNS publish the
//! replicas of a dispatcher as the addresses (or SRV records) of one name. Each
//! address is a replica: the agent keeps a link to each, a client asks them in turn.
//! The name is resolved again every interval; `membership` turns each answer into
//! additions and (after a grace period) removals, `follow` is the task that does so
//! for the agent, and [`Failover`](crate::Failover) refreshes its set when it picks.
//!
//! | module | its one job |
//! |---|---|
//! | [`source`] | `dns:NAME:PORT` and `dns+srv:NAME`, parsed and checked |
//! | [`membership`] | a name's answers as additions and removals, with the grace period (pure) |
//! | [`resolve`] | one lookup with hickory: the system's configuration or a named server |
//! | [`follow`] | the task that resolves a name every interval and sends the changes |

pub mod follow;
pub mod membership;
pub mod resolve;
pub mod source;

use std::net::SocketAddr;
use std::time::Duration;

use loadwise_protocol::config::{ConfigError, ensure};

pub use membership::{Applied, Membership, Tally, Update};
pub use resolve::{ResolveError, Resolver};
pub use source::{DnsSource, SourceError};

/// The most names one agent or client follows.
pub const MAX_SOURCES: usize = 8;

/// The most replicas taken from one name; further addresses are left out (and a
/// warning says so).
pub const MAX_REPLICAS: usize = 64;

/// The longest re-resolve interval and grace period accepted.
pub const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// After a failure (a lookup that failed or found no records, a link that lost its
/// replica) a name is resolved again this soon, but never sooner than this after the
/// previous lookup, so a replica that is down does not make every agent hammer DNS.
pub const MIN_RESOLVE_GAP: Duration = Duration::from_secs(1);

/// Which names publish the replicas, and how they are followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// The names; none means a static list of dispatchers only.
    pub sources: Vec<DnsSource>,
    /// The DNS server to ask, instead of those of `/etc/resolv.conf`.
    pub resolver: Option<SocketAddr>,
    /// Time between two lookups of a name. A new replica is found within one
    /// interval of its appearing in DNS.
    pub interval: Duration,
    /// How long a replica missing from the answers is kept before it is removed,
    /// so that an answer that flaps, or a replica failing a readiness check for a
    /// moment, does not cost a link.
    pub grace: Duration,
}

impl Default for DiscoveryConfig {
    /// No names; a lookup every 5 s; a missing replica removed after 10 s.
    fn default() -> Self {
        DiscoveryConfig {
            sources: Vec::new(),
            resolver: None,
            interval: Duration::from_secs(5),
            grace: Duration::from_secs(10),
        }
    }
}

impl DiscoveryConfig {
    /// Rejects settings that would spin, grow without bound, or follow a name twice.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let count = self.sources.len();
        ensure(count <= MAX_SOURCES, "servers-from", &format!("at most {MAX_SOURCES} names"))?;
        let unique: std::collections::HashSet<&DnsSource> = self.sources.iter().collect();
        ensure(unique.len() == count, "servers-from", "names a replica set twice")?;
        ensure(!self.interval.is_zero(), "resolve-interval", "must be greater than zero")?;
        ensure(self.interval <= MAX_PERIOD, "resolve-interval", "must be at most 1day")?;
        ensure(self.grace <= MAX_PERIOD, "removal-grace", "must be at most 1day")
    }

    /// The gap kept between a failure-triggered lookup and the previous one.
    pub fn min_gap(&self) -> Duration {
        MIN_RESOLVE_GAP.min(self.interval)
    }

    /// The delay before the next lookup after `failures` failures in a row: the
    /// shortest gap, doubling up to the interval.
    pub fn retry_delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.min_gap().saturating_mul(1 << doublings).min(self.interval)
    }
}

/// Logs what an answer changed, the same way for the agent and the client.
pub fn log_applied(source: &DnsSource, applied: &Applied, grace: Duration) {
    for update in &applied.updates {
        match update {
            Update::Add(replica) => tracing::info!(%source, %replica, "replica found in DNS"),
            Update::Remove(replica) => {
                tracing::info!(%source, %replica, ?grace, "replica removed: missing from DNS for the grace period")
            }
        }
    }
    for replica in &applied.missing {
        tracing::info!(%source, %replica, ?grace, "replica missing from the DNS answer: removed after the grace period unless it returns");
    }
    for replica in &applied.back {
        tracing::info!(%source, %replica, "replica back in the DNS answer");
    }
    if applied.over_limit > 0 {
        tracing::warn!(%source, left_out = applied.over_limit, limit = MAX_REPLICAS,
            "more replicas in DNS than one name may give: some are left out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unworkable_settings_are_refused_naming_the_setting() {
        let source: DnsSource = "dns:a.example:1".parse().unwrap();
        let ok = DiscoveryConfig { sources: vec![source.clone()], ..DiscoveryConfig::default() };
        assert_eq!(ok.validate(), Ok(()));
        let twice = DiscoveryConfig { sources: vec![source.clone(), source], ..ok.clone() };
        assert_eq!(twice.validate().unwrap_err().setting, "servers-from");
        let many = (0..=MAX_SOURCES).map(|i| format!("dns:n{i}.example:1").parse().unwrap()).collect();
        assert_eq!(
            DiscoveryConfig { sources: many, ..ok.clone() }.validate().unwrap_err().setting,
            "servers-from"
        );
        let zero = DiscoveryConfig { interval: Duration::ZERO, ..ok.clone() };
        assert_eq!(zero.validate().unwrap_err().setting, "resolve-interval");
        let long = DiscoveryConfig { grace: MAX_PERIOD * 2, ..ok.clone() };
        assert_eq!(long.validate().unwrap_err().setting, "removal-grace");
        let none = DiscoveryConfig { grace: Duration::ZERO, ..ok };
        assert_eq!(none.validate(), Ok(()), "a zero grace removes at once");
    }

    #[test]
    fn retries_start_at_the_shortest_gap_and_double_up_to_the_interval() {
        let config = DiscoveryConfig::default();
        let delays: Vec<u64> = (1..=5).map(|n| config.retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert_eq!(config.retry_delay(u32::MAX), config.interval);
        let fast = DiscoveryConfig { interval: Duration::from_millis(200), ..config };
        assert_eq!(fast.retry_delay(1), Duration::from_millis(200));
    }
}
