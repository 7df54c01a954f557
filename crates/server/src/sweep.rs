//! The sweeper: removes backends whose TTL has passed, waking only when one may have.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use loadwise_core::dispatcher::Dispatcher;

/// Removes expired backends in the background, sleeping until the next expiry so
/// an idle dispatcher does not wake up needlessly.
pub(crate) async fn sweep(dispatcher: Arc<Dispatcher>, shutdown: CancellationToken) {
    loop {
        let now = tokio::time::Instant::now();
        dispatcher.expire(now.into_std());
        // With no backend, nothing can expire sooner than one TTL from now. A TTL
        // too large to add to the clock means nothing ever expires.
        let wake = match dispatcher.next_expiry() {
            Some(expiry) => Some(tokio::time::Instant::from_std(expiry)),
            None => now.checked_add(dispatcher.ttl()),
        };
        let Some(wake) = wake else {
            shutdown.cancelled().await;
            return;
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
