//! The task that follows one name: resolves it every interval (sooner after a
//! failure), and sends the additions and removals of its replica set.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    DiscoveryConfig, DnsSource, MAX_REPLICAS, Membership, ResolveError, Resolver, Update, log_applied,
};

/// The longest one lookup may take (two queries of 2 s, and some room).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What one lookup found.
enum Outcome {
    Found(Vec<std::net::SocketAddr>),
    NoRecords,
    Failed(ResolveError),
}

/// One change of the replica set of the source numbered `source`.
pub type Tagged = (usize, Update);

/// Follows `source` until `stop` is cancelled or `updates` is closed: resolves it
/// now and then every interval, and sends each change of its replica set, tagged
/// with `tag`. A lookup that fails or finds no records changes nothing (a warning
/// says so, on the 1st, 2nd, 4th... time in a row) and is retried sooner; a
/// change on `wake` (a link lost its replica) brings the next lookup forward, to
/// no sooner than the shortest gap after the previous one.
pub async fn follow(
    (tag, source): (usize, DnsSource),
    resolver: Resolver,
    config: DiscoveryConfig,
    updates: mpsc::Sender<Tagged>,
    mut wake: watch::Receiver<()>,
    stop: CancellationToken,
) {
    let mut wake_open = true;
    let mut membership = Membership::new(config.grace, MAX_REPLICAS);
    let mut failures = 0u32;
    let mut next_lookup = Instant::now();
    let mut last_lookup = None;
    loop {
        if Instant::now() >= next_lookup {
            last_lookup = Some(Instant::now());
            let outcome = tokio::select! {
                outcome = lookup(&resolver, &source) => outcome,
                () = stop.cancelled() => return,
            };
            let now = Instant::now();
            let changes = match outcome {
                Outcome::Found(answer) => {
                    if failures > 0 {
                        tracing::info!(%source, replicas = answer.len(), "DNS answers again");
                    }
                    failures = 0;
                    let applied = membership.apply(&answer, now.into_std());
                    log_applied(&source, &applied, config.grace);
                    applied.updates
                }
                not_found => {
                    failures = failures.saturating_add(1);
                    warn_sparsely(
                        &source,
                        &not_found,
                        failures,
                        membership.len(),
                        config.retry_delay(failures),
                    );
                    Vec::new()
                }
            };
            next_lookup = now + if failures == 0 { config.interval } else { config.retry_delay(failures) };
            if !send(&updates, tag, changes).await {
                return;
            }
        }
        let removed = membership.expire(Instant::now().into_std());
        log_applied(
            &source,
            &super::Applied { updates: removed.clone(), ..Default::default() },
            config.grace,
        );
        if !send(&updates, tag, removed).await {
            return;
        }
        let expiry = membership.next_expiry().map(Instant::from_std).unwrap_or(next_lookup);
        tokio::select! {
            () = tokio::time::sleep_until(next_lookup.min(expiry)) => {}
            changed = wake.changed(), if wake_open => match changed {
                Ok(()) => if let Some(last) = last_lookup {
                    next_lookup = next_lookup.min(last + config.min_gap());
                },
                Err(_) => wake_open = false,
            },
            () = stop.cancelled() => return,
        }
    }
}

async fn lookup(resolver: &Resolver, source: &DnsSource) -> Outcome {
    match resolver.lookup(source, LOOKUP_TIMEOUT).await {
        Ok(answer) if answer.is_empty() => Outcome::NoRecords,
        Ok(answer) => Outcome::Found(answer),
        Err(error) => Outcome::Failed(error),
    }
}

/// Sends every update; false once nobody listens.
async fn send(updates: &mpsc::Sender<Tagged>, tag: usize, changes: Vec<Update>) -> bool {
    for update in changes {
        if updates.send((tag, update)).await.is_err() {
            return false;
        }
    }
    true
}

/// Warns on the 1st, 2nd, 4th, 8th... failure in a row, so that a DNS server that
/// stays down for a day does not fill the log.
fn warn_sparsely(source: &DnsSource, outcome: &Outcome, failures: u32, kept: usize, retry_in: Duration) {
    let log = failures.is_power_of_two();
    match outcome {
        Outcome::NoRecords if log => tracing::warn!(%source, kept, failures, ?retry_in,
            "the DNS answer has no records: keeping the replicas known so far"),
        Outcome::Failed(error) if log => tracing::warn!(%source, %error, kept, failures, ?retry_in,
            "DNS lookup failed: keeping the replicas known so far"),
        _ => tracing::debug!(%source, failures, "DNS lookup found nothing again"),
    }
}
