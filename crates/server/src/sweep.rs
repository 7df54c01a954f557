//! The sweeper: removes backends whose TTL has passed and ends ejections whose time is
//! up, waking only when one may have (or when a new ejection begins).

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use loadwise_core::dispatcher::Dispatcher;

/// Removes expired backends in the background, sleeping until the next expiry so
/// an idle dispatcher does not wake up needlessly.
pub(crate) async fn sweep(dispatcher: Arc<Dispatcher>, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        let now = tokio::time::Instant::now();
        dispatcher.expire(now.into_std());
        // With no backend, nothing can expire sooner than one TTL from now. A TTL
        // too large to add to the clock means nothing ever expires.
        let deadline = match dispatcher.next_expiry() {
            Some(expiry) => Some(tokio::time::Instant::from_std(expiry)),
            None => now.checked_add(dispatcher.ttl()),
        };
        let Some(deadline) = deadline else {
            tokio::select! {
                () = wake.notified() => continue,
                () = shutdown.cancelled() => return,
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = wake.notified() => {}
            () = shutdown.cancelled() => return,
        }
    }
}
