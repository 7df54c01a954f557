//! What every client worker of one run shares, and the per-worker state they all use.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

/// Ops a worker finishes before adding them to the shared count, which every
/// worker would otherwise contend for on each batch.
const REPORT_EVERY: usize = 256;

use super::Mode;
use super::control::Control;
use super::deadline::LazyDeadline;
use super::frames::{self, Batch};
use super::latency::{LatencyRecorder, LatencySink};
use super::outcome::Tally;
use crate::protocol::{IpField, unix_time_now};

/// The shared plan of a run's client workers.
#[derive(Debug)]
pub struct LoadPlan {
    pub addr: SocketAddr,
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
}

/// One worker's own state: its counts, its latency buffer, and reused buffers.
#[derive(Debug)]
pub struct WorkerState {
    pub index: usize,
    pub tally: Tally,
    pub latency: LatencyRecorder,
    pub batch: Batch,
    /// Reply buffer, reused for every batch.
    pub replies: Vec<u8>,
    /// The address this worker's connection advertises in heartbeats.
    pub me: (IpField, u16),
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
            replies: Vec::new(),
            me: frames::backend_address(plan.first_address + index),
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
        self.batch.fill(mode, ops, self.me, self.tick, unix_time_now());
        self.tick = self.tick.wrapping_add(self.batch.heartbeats as u64);
        self.tally.logins_sent += self.batch.logins as u64;
        self.tally.heartbeats_sent += self.batch.heartbeats as u64;
    }
}
