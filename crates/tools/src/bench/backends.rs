//! Fake backends: each on its own connection, registered before the load starts and
//! heart-beating with a changing load every interval until the run ends, in the run's
//! protocol.
//!
//! Their heartbeats share the machine with the clients being measured, so they are
//! sent as cheaply as a real backend's would be received: one task writes all of them
//! in turn, each backend at its own place in the interval, rather than one task and
//! one timer per backend. The task wakes once per timer tick (a millisecond) that has
//! a heartbeat due, and writes every heartbeat due by then, each patched into the
//! backend's pre-encoded frame.
//!
//! With capacity slots the dispatcher answers each heartbeat with a LeaseReport; each
//! backend reads what it was sent just before its next heartbeat (and once more when
//! the run ends), so the answers never fill its socket and are counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::frames_v2::LeaseReader;
use super::outcome::ErrorKind;
use super::register;
use super::wire::{BackendFrames, Wire};

/// Registrations in progress at once. A backend counts against its address's cap of
/// client and pending connections until its first heartbeat is read, and the fake
/// ones all come from one address: half the dispatcher's default cap (256).
const PARALLEL_REGISTRATIONS: usize = 128;

/// What the fake backends did during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BackendsReport {
    /// Backends registered (each confirmed by a login, v2 a pick, on its connection).
    pub registered: u64,
    /// Logins (v2: picks) sent to confirm registrations (one per backend; the server
    /// counts them).
    pub setup_logins: u64,
    /// Heartbeats written, the registering ones included.
    pub heartbeats_sent: u64,
    /// Backends whose connection failed during the run.
    pub lost: u64,
    /// LeaseReports read (slot backends), those answering the registering heartbeats
    /// excepted.
    pub lease_reports: u64,
}

/// A registration that failed, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("fake backend {index} could not register: {kind}")]
pub struct RegistrationFailed {
    pub index: usize,
    pub kind: ErrorKind,
}

#[derive(Debug, Default)]
struct Counters {
    heartbeats_sent: AtomicU64,
    lost: AtomicU64,
    lease_reports: AtomicU64,
}

/// The running fake backends. [`stop`](Self::stop) ends every one of their tasks.
#[derive(Debug)]
pub struct FakeBackends {
    registered: u64,
    counters: Arc<Counters>,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl FakeBackends {
    /// Registers `n` backends at `addr`, speaking `wire`, and keeps them
    /// heart-beating every `interval`.
    pub async fn start(
        addr: SocketAddr,
        wire: &Wire,
        n: usize,
        interval: Duration,
        timeout: Duration,
    ) -> Result<FakeBackends, RegistrationFailed> {
        let backends = FakeBackends {
            registered: 0,
            counters: Arc::default(),
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
        };
        let (arrivals, heartbeats) = mpsc::unbounded_channel();
        if n > 0 {
            let schedule = Schedule { epoch: Instant::now(), interval, n };
            let sender = Sender::new(schedule, heartbeats, Arc::clone(&backends.counters));
            backends.tracker.spawn(sender.run(backends.stop.clone()));
        }
        backends.register_all(addr, wire, n, timeout, arrivals).await
    }

    async fn register_all(
        mut self,
        addr: SocketAddr,
        wire: &Wire,
        n: usize,
        timeout: Duration,
        arrivals: mpsc::UnboundedSender<Member>,
    ) -> Result<FakeBackends, RegistrationFailed> {
        let mut pending = tokio::task::JoinSet::new();
        let mut next = 0;
        while next < n || !pending.is_empty() {
            while next < n && pending.len() < PARALLEL_REGISTRATIONS {
                let (index, wire) = (next, wire.clone());
                pending.spawn(async move { (index, register::backend(addr, index, &wire, timeout).await) });
                next += 1;
            }
            let Some(joined) = pending.join_next().await else { break };
            let (index, result) = joined.expect("a registration task does not panic");
            let (stream, frames) = result.map_err(|kind| RegistrationFailed { index, kind })?;
            self.registered += 1;
            self.counters.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
            // The sender ends only when stopped, and stopping ends this run too.
            let leases = wire.backends_are_answered().then(LeaseReader::default);
            let _ = arrivals.send(Member { index, stream, frames, tick: 0, unsent: Vec::new(), leases });
        }
        Ok(self)
    }

    /// What the backends did so far.
    pub fn report(&self) -> BackendsReport {
        BackendsReport {
            registered: self.registered,
            setup_logins: self.registered,
            heartbeats_sent: self.counters.heartbeats_sent.load(Ordering::Relaxed),
            lost: self.counters.lost.load(Ordering::Relaxed),
            lease_reports: self.counters.lease_reports.load(Ordering::Relaxed),
        }
    }

    /// Stops every backend and closes its connection.
    pub async fn stop(self) -> BackendsReport {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.report()
    }
}

impl Drop for FakeBackends {
    fn drop(&mut self) {
        // Tasks end at their next wake-up even if `stop` was never awaited.
        self.stop.cancel();
    }
}

/// When each fake backend's heartbeats are due: backend `index` at
/// `epoch + interval × (index + 1) / n`, then every interval, so that the `n` of them
/// are spread evenly over each interval and come due in the order of their indexes.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    epoch: Instant,
    interval: Duration,
    n: usize,
}

impl Schedule {
    /// When backend `index` is due in `round`.
    fn due(&self, index: usize, round: u64) -> Instant {
        let interval = self.interval.as_nanos();
        let phase = interval * (index as u128 + 1) / self.n as u128;
        let at = phase + interval * u128::from(round);
        self.epoch + Duration::from_nanos(u64::try_from(at).unwrap_or(u64::MAX))
    }
}

/// One registered fake backend, as the sender keeps it.
struct Member {
    index: usize,
    stream: TcpStream,
    frames: BackendFrames,
    /// Heartbeats sent on the connection, the registering one included: the next
    /// one's load follows from it.
    tick: u64,
    /// What the dispatcher has not yet taken of the previous heartbeat.
    unsent: Vec<u8>,
    /// Slot backends: the LeaseReports the dispatcher answers with, cut out of what
    /// is read. `None`: the dispatcher sends nothing, nothing is read.
    leases: Option<LeaseReader>,
}

impl Member {
    /// Writes the next heartbeat without waiting, after reading the answers to the
    /// previous ones (their LeaseReports are added to `leases`); false when the
    /// connection is lost: it failed, or the dispatcher did not take the previous
    /// heartbeat in a whole interval.
    fn beat(&mut self, leases: &mut u64) -> bool {
        if !self.read_answers(leases) {
            return false;
        }
        if !self.unsent.is_empty() && !self.flush_unsent() {
            return false;
        }
        self.tick += 1;
        let frame = self.frames.heartbeat(self.tick);
        match self.stream.try_write(frame) {
            Ok(written) if written == frame.len() => true,
            Ok(written) => {
                self.unsent.extend_from_slice(&frame[written..]);
                true
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                self.unsent.extend_from_slice(frame);
                true
            }
            Err(_) => false,
        }
    }

    /// Reads, without waiting, what the dispatcher sent, and counts its LeaseReports
    /// into `leases`; false when the connection failed or closed, or its bytes cannot
    /// be cut into frames.
    fn read_answers(&mut self, leases: &mut u64) -> bool {
        let Some(reader) = &mut self.leases else { return true };
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.try_read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => match reader.feed(&chunk[..n]) {
                    Some(read) => *leases += read,
                    None => return false,
                },
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }

    /// Writes what is left of the previous heartbeat; true when all of it went.
    fn flush_unsent(&mut self) -> bool {
        match self.stream.try_write(&self.unsent) {
            Ok(written) => {
                self.unsent.drain(..written);
                self.unsent.is_empty()
            }
            Err(_) => false,
        }
    }
}

/// The task that writes every fake backend's heartbeats, in the order they come due.
struct Sender {
    schedule: Schedule,
    /// Registered backends by index; `None` until registered, and after being lost.
    members: Vec<Option<Member>>,
    arrivals: mpsc::UnboundedReceiver<Member>,
    counters: Arc<Counters>,
    /// The next backend to beat, and the round it is in.
    next: (usize, u64),
}

impl Sender {
    fn new(schedule: Schedule, arrivals: mpsc::UnboundedReceiver<Member>, counters: Arc<Counters>) -> Self {
        let members = std::iter::repeat_with(|| None).take(schedule.n).collect();
        Sender { schedule, members, arrivals, counters, next: (0, 0) }
    }

    async fn run(mut self, stop: CancellationToken) {
        loop {
            let (index, round) = self.next;
            tokio::select! {
                biased;
                () = stop.cancelled() => return self.read_last_answers(),
                () = tokio::time::sleep_until(self.schedule.due(index, round)) => {}
            }
            // Registered since the last wake: each beats from its next turn on, at
            // most an interval after the heartbeat it registered with.
            while let Ok(member) = self.arrivals.try_recv() {
                let index = member.index;
                self.members[index] = Some(member);
            }
            self.beat_due(Instant::now());
        }
    }

    /// Reads what the dispatcher answered to the last heartbeats, so that every
    /// answer already in is counted.
    fn read_last_answers(&mut self) {
        let mut leases = 0;
        for member in self.members.iter_mut().flatten() {
            member.read_answers(&mut leases);
        }
        add(&self.counters.lease_reports, leases);
    }

    /// Writes every heartbeat due by `now`, in turn.
    fn beat_due(&mut self, now: Instant) {
        let (mut sent, mut lost, mut leases) = (0, 0, 0);
        loop {
            let (index, round) = self.next;
            if self.schedule.due(index, round) > now {
                break;
            }
            if let Some(member) = &mut self.members[index] {
                if member.beat(&mut leases) {
                    sent += 1;
                } else {
                    lost += 1;
                    self.members[index] = None;
                }
            }
            self.next = if index + 1 < self.schedule.n { (index + 1, round) } else { (0, round + 1) };
        }
        add(&self.counters.heartbeats_sent, sent);
        add(&self.counters.lost, lost);
        add(&self.counters.lease_reports, leases);
    }
}

fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_spread_over_the_interval_in_index_order() {
        let epoch = Instant::now();
        let schedule = Schedule { epoch, interval: Duration::from_secs(1), n: 4 };
        let dues: Vec<_> = (0..4).map(|index| schedule.due(index, 0) - epoch).collect();
        assert_eq!(dues, [250, 500, 750, 1000].map(Duration::from_millis));
        assert_eq!(schedule.due(0, 3) - epoch, Duration::from_millis(3250));
    }
}
