//! What every client worker of one run shares, and the per-worker state they all use.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// Ops a worker finishes before adding them to the shared count, which every
/// worker would otherwise contend for on each batch.
const REPORT_EVERY: usize = 256;

use super::config::Mode;
use super::conn::reconnect;
use super::control::Control;
use super::deadline::LazyDeadline;
use super::latency::{LatencyRecorder, LatencySink};
use super::outcome::Tally;
use super::register;
use super::replies::ReplyBuf;
use super::wire::{Batch, ClientFrames, Wire};
use loadwise_protocol::unix_time_now;

/// The shared plan of a run's client workers.
#[derive(Debug)]
pub struct LoadPlan {
    pub addr: SocketAddr,
    pub wire: Wire,
    pub mode: Mode,
    pub pipeline: usize,
    pub timeout: Duration,
    /// Client connections (or concurrent clients when connecting per pick).
    pub conns: usize,
    /// Open loop: time between two batches of one worker. `None`: closed loop.
    pub batch_interval: Option<Duration>,
    /// Index of the first advertised address clients use in heartbeats (after the
    /// fake backends' addresses, so no two connections claim the same one).
    pub first_address: usize,
    pub control: Control,
    pub latency: LatencySink,
    /// When the measured load began: the origin of every open-loop schedule.
    pub start: Instant,
}

impl LoadPlan {
    /// When batch `k` of worker `index` is meant to leave, in an open loop. Workers
    /// are spread evenly over one interval so their batches do not leave together.
    pub fn intended(&self, index: usize, k: u64) -> Option<Instant> {
        let interval = self.batch_interval?;
        let phase = interval.mul_f64(index as f64 / self.conns.max(1) as f64);
        Some(self.start + phase + interval.mul_f64(k as f64))
    }

    /// The backend index whose address (v2: backend id) worker `index`'s heartbeats carry.
    pub fn backend_index(&self, index: usize) -> usize {
        self.first_address + index
    }

    /// A new connection for worker `index`, registered if its heartbeats need it
    /// (see [`reconnect`]; a failed registration is counted and ends the attempts).
    pub async fn reconnect(&self, index: usize, tally: &mut Tally) -> Option<TcpStream> {
        let mut stream = reconnect(self.addr, self.timeout, &self.control, tally).await?;
        let Some((secret, service)) = self.wire.client_registration(self.mode) else { return Some(stream) };
        let id = self.backend_index(index) as u64;
        match register::client(&mut stream, secret, service, id, self.timeout).await {
            Ok(()) => Some(stream),
            Err(kind) => {
                tally.errors.add(kind, 1);
                None
            }
        }
    }
}

/// One worker's own state: its counts, its latency buffer, and reused buffers.
#[derive(Debug)]
pub struct WorkerState {
    pub index: usize,
    pub tally: Tally,
    pub latency: LatencyRecorder,
    pub batch: Batch,
    /// Replies read and not yet judged, reused for every batch.
    pub replies: ReplyBuf,
    /// What this worker's batches are built from.
    pub frames: ClientFrames,
    /// Heartbeats sent so far, to vary the load they report.
    pub tick: u64,
    /// The reply deadline of the batch in flight.
    pub deadline: LazyDeadline,
    /// Ops finished and not yet added to the shared count.
    unreported: usize,
}

impl WorkerState {
    pub fn new(plan: &LoadPlan, index: usize, tally: Tally) -> Self {
        WorkerState {
            index,
            tally,
            latency: plan.latency.recorder(),
            batch: Batch::default(),
            replies: ReplyBuf::new(plan.wire.replies()),
            frames: plan.wire.client(plan.backend_index(index)),
            tick: 0,
            deadline: LazyDeadline::default(),
            unreported: 0,
        }
    }

    /// Notes `ops` more ops finished, passing them on to `control` now and then.
    pub fn finished(&mut self, control: &Control, ops: usize) {
        self.unreported += ops;
        if self.unreported >= REPORT_EVERY {
            control.finished(std::mem::take(&mut self.unreported));
        }
    }

    /// Passes on the ops not yet reported; the worker's counts are final.
    pub fn into_tally(mut self, control: &Control) -> Tally {
        control.finished(std::mem::take(&mut self.unreported));
        self.tally
    }

    /// Fills the batch with `ops` ops and counts its frames as sent.
    pub fn fill(&mut self, mode: Mode, ops: usize) {
        self.batch.fill(&mut self.frames, mode, ops, self.tick, unix_time_now());
        self.tick = self.tick.wrapping_add(self.batch.heartbeats as u64);
        self.tally.logins_sent += self.batch.logins as u64;
        self.tally.heartbeats_sent += self.batch.heartbeats as u64;
    }
}
