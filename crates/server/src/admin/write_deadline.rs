//! A stream whose writes fail once its peer has taken nothing for a bound, so that an
//! admin client that stops reading a large response cannot hold its connection forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Wraps a stream: a write (or flush) that can make no progress for `timeout` fails
/// with [`io::ErrorKind::TimedOut`], and is counted. Any progress restarts the bound,
/// so a slow reader that keeps reading is served to the end.
#[derive(Debug)]
pub(crate) struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write finds the peer's window full; dropped by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
    timeouts: Counter,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, timeout: Duration, timeouts: Counter) -> Self {
        WriteDeadline { inner, timeout, stalled: None, timeouts }
    }

    /// Passes on a write's outcome, unless it has waited for the peer past the bound.
    fn bound<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timeouts.inc();
                let message = format!("the admin client took no response bytes for {timeout:?}");
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, message)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.bound(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.bound(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.bound(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_takes_fails_after_the_bound_and_is_counted() {
        let (near, mut far) = tokio::io::duplex(64);
        let counter = Counter::default();
        let mut stream = WriteDeadline::new(near, Duration::from_secs(3), counter.clone());
        stream.write_all(&[7; 64]).await.expect("the pipe takes its capacity");
        let started = tokio::time::Instant::now();
        let error = stream.write_all(&[7; 64]).await.expect_err("nobody reads");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(counter.get(), 1);
        let mut taken = [0; 64];
        far.read_exact(&mut taken).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn progress_restarts_the_bound() {
        let (near, mut far) = tokio::io::duplex(16);
        let counter = Counter::default();
        let mut stream = WriteDeadline::new(near, Duration::from_secs(3), counter.clone());
        let reader = tokio::spawn(async move {
            let mut buf = [0; 16];
            let mut total = 0;
            while total < 160 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                total += far.read(&mut buf).await.unwrap();
            }
            total
        });
        stream.write_all(&[1; 160]).await.expect("a slow reader that keeps reading is served");
        assert_eq!(reader.await.unwrap(), 160);
        assert_eq!(counter.get(), 0);
    }
}
