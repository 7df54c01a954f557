//! Outlier ejection: a backend its clients cannot use leaves rotation for a while, on
//! failure reports from enough distinct clients that were sent there.
//!
//! The rules, all pure (time comes in as `now`):
//!
//! - A report counts only from a client (known by its IP address) this dispatcher sent
//!   to that backend within the window, and within a rate per client: nobody can eject
//!   a backend they were not sent to, and one client cannot eject anything alone.
//! - A backend is ejected when reports from at least `min_clients` distinct clients
//!   fall within one window, while less than `max_percent` of its service is ejected
//!   (as Envoy's `max_ejection_percent`; so the only backend of a service can go).
//! - Its n-th ejection lasts n × `base_time`, at most `max_time`; once it has gone
//!   `max_time` without an ejection after its return, the count starts again at 1.
//! - It comes back on its own when the time ends. Reports of an ejected backend are
//!   ignored.
//!
//! Memory is bounded: picks are remembered for one window, at most
//! [`MAX_REMEMBERED_PICKS`] of them, and report budgets for at most
//! [`MAX_REPORTING_CLIENTS`] clients.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::model::BackendId;

/// The most (client, backend) pairs remembered: past it the least recently filed are
/// forgotten first (a client whose pick was forgotten cannot report it: no ejection,
/// never a wrong one). A pair picked again is one entry, whatever the pick rate.
pub const MAX_REMEMBERED_PICKS: usize = 65_536;

/// The most clients whose report budget is kept at once; a new client past it is
/// rate limited until old budgets expire.
pub const MAX_REPORTING_CLIENTS: usize = 16_384;

/// How ejection works; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EjectionSettings {
    /// Distinct clients whose reports within one window eject a backend.
    pub min_clients: u32,
    /// How long a pick makes its client's reports count, and how close together
    /// the reports of distinct clients must be.
    pub window: Duration,
    /// How long a first ejection lasts; the n-th lasts n times this.
    pub base_time: Duration,
    /// The longest ejection, and the quiet time after which the count restarts.
    pub max_time: Duration,
    /// Ejection is allowed while less than this percentage of a service is ejected;
    /// 0 turns ejection off.
    pub max_percent: u8,
    /// The most reports one client may make per window; more are ignored.
    pub reports_per_client: u32,
}

impl Default for EjectionSettings {
    fn default() -> Self {
        EjectionSettings {
            min_clients: 3,
            window: Duration::from_secs(10),
            base_time: Duration::from_secs(30),
            max_time: Duration::from_secs(300),
            max_percent: 50,
            reports_per_client: 10,
        }
    }
}

impl EjectionSettings {
    /// How long the `count`-th ejection lasts (`count` from 1).
    pub fn ejection_time(&self, count: u32) -> Duration {
        self.base_time.saturating_mul(count.max(1)).min(self.max_time.max(self.base_time))
    }
}

/// What a failure report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Counted: `clients` distinct clients reported the backend within the window.
    Counted { clients: usize },
    /// The report made the backend's `count`-th ejection, lasting `duration`.
    Ejected { count: u32, duration: Duration },
    /// Counted, and enough clients reported, but ejecting it would take the share of
    /// its service ejected to the cap (or ejection is off).
    CapReached { clients: usize },
    /// The client was not sent to that backend within the window: ignored.
    NotSentThere,
    /// The client made more reports this window than allowed: ignored.
    RateLimited,
    /// The backend is ejected already: ignored.
    AlreadyEjected,
}

impl ReportOutcome {
    /// The name metrics and logs use.
    pub fn name(self) -> &'static str {
        match self {
            ReportOutcome::Counted { .. } => "counted",
            ReportOutcome::Ejected { .. } => "ejected",
            ReportOutcome::CapReached { .. } => "cap_reached",
            ReportOutcome::NotSentThere => "not_sent_there",
            ReportOutcome::RateLimited => "rate_limited",
            ReportOutcome::AlreadyEjected => "already_ejected",
        }
    }
}

/// How much of a service is ejected, for the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceShare {
    pub ejected: usize,
    pub backends: usize,
}

/// One backend's reports and ejections.
#[derive(Debug, Clone, Default)]
struct Outlier {
    /// The latest report of each distinct client, at most `min_clients` of them.
    reporters: Vec<(IpAddr, Instant)>,
    /// Ejections since the count last restarted.
    count: u32,
    /// Until when it is ejected.
    until: Option<Instant>,
    /// When its last ejection ended.
    returned: Option<Instant>,
}

/// The reports and ejections of every backend; see the module doc.
#[derive(Debug, Default)]
pub struct Ejections {
    /// Each remembered pair once, in the order it was filed, with the time it was
    /// filed at: a pair picked again since is filed anew when it comes to the front.
    picks: VecDeque<(Instant, (IpAddr, BackendId))>,
    /// The latest pick of each (client, backend) pair in `picks`.
    latest_pick: HashMap<(IpAddr, BackendId), Instant>,
    /// Each reporting client's window start and reports in it.
    budgets: HashMap<IpAddr, (Instant, u32)>,
    outliers: HashMap<BackendId, Outlier>,
    /// The ejected backends, by the end of their ejection.
    returns: BTreeSet<(Instant, BackendId)>,
}

impl Ejections {
    /// Remembers that `client` was sent to `backend` at `now`.
    pub fn record_pick(&mut self, client: IpAddr, backend: BackendId, now: Instant, window: Duration) {
        let pair = (client, backend);
        if self.latest_pick.insert(pair, now).is_none() {
            self.forget_picks(now, window, MAX_REMEMBERED_PICKS);
            self.picks.push_back((now, pair));
        }
    }

    /// Forgets pairs not picked within `window`, and the least recently filed while
    /// more than `keep` - 1 are kept (making room for one more). Each pair is filed
    /// once; one picked again since it was filed goes to the back instead.
    fn forget_picks(&mut self, now: Instant, window: Duration, keep: usize) {
        while let Some(&(filed, pair)) = self.picks.front() {
            let full = self.picks.len() >= keep;
            if !full && now.saturating_duration_since(filed) <= window {
                break;
            }
            self.picks.pop_front();
            let latest = self.latest_pick.get(&pair).copied().unwrap_or(filed);
            if !full && latest > filed && now.saturating_duration_since(latest) <= window {
                self.picks.push_back((latest, pair));
            } else {
                self.latest_pick.remove(&pair);
            }
        }
    }

    /// Whether `client` was sent to `backend` within `window` of `now`.
    fn was_sent(&self, client: IpAddr, backend: BackendId, now: Instant, window: Duration) -> bool {
        self.latest_pick
            .get(&(client, backend))
            .is_some_and(|&at| now.saturating_duration_since(at) <= window)
    }

    /// Applies `client`'s report that `backend` could not be used. `share` is how
    /// much of its service is ejected now.
    pub fn report(
        &mut self,
        client: IpAddr,
        backend: BackendId,
        share: ServiceShare,
        settings: &EjectionSettings,
        now: Instant,
    ) -> ReportOutcome {
        if !self.was_sent(client, backend, now, settings.window) {
            return ReportOutcome::NotSentThere;
        }
        if !self.spend_budget(client, settings, now) {
            return ReportOutcome::RateLimited;
        }
        let outlier = self.outliers.entry(backend).or_default();
        if outlier.until.is_some() {
            return ReportOutcome::AlreadyEjected;
        }
        let clients = outlier.note_reporter(client, now, settings);
        if clients < settings.min_clients.max(1) as usize {
            return ReportOutcome::Counted { clients };
        }
        if !ejection_allowed(share, settings.max_percent) {
            return ReportOutcome::CapReached { clients };
        }
        let (count, until, duration) = outlier.eject(settings, now);
        self.returns.insert((until, backend));
        ReportOutcome::Ejected { count, duration }
    }

    /// Takes one report from `client`'s budget; false when it has none left.
    fn spend_budget(&mut self, client: IpAddr, settings: &EjectionSettings, now: Instant) -> bool {
        let window = settings.window;
        if !self.budgets.contains_key(&client) && self.budgets.len() >= MAX_REPORTING_CLIENTS {
            self.budgets.retain(|_, (start, _)| now.saturating_duration_since(*start) <= window);
            if self.budgets.len() >= MAX_REPORTING_CLIENTS {
                return false;
            }
        }
        let (start, spent) = self.budgets.entry(client).or_insert((now, 0));
        if now.saturating_duration_since(*start) > window {
            (*start, *spent) = (now, 0);
        }
        if *spent >= settings.reports_per_client {
            return false;
        }
        *spent += 1;
        true
    }

    /// The backends whose ejection has ended by `now`, taken out of the ejected set.
    pub fn due_returns(&mut self, now: Instant) -> Vec<BackendId> {
        let mut returned = Vec::new();
        while let Some(&(until, backend)) = self.returns.first() {
            if until > now {
                break;
            }
            self.returns.pop_first();
            if let Some(outlier) = self.outliers.get_mut(&backend) {
                outlier.until = None;
                outlier.returned = Some(until);
                outlier.reporters.clear();
            }
            returned.push(backend);
        }
        returned
    }

    /// When the next ejection ends.
    pub fn next_return(&self) -> Option<Instant> {
        self.returns.first().map(|&(until, _)| until)
    }

    /// Until when `backend` is ejected, if it is.
    pub fn ejected_until(&self, backend: BackendId) -> Option<Instant> {
        self.outliers.get(&backend)?.until
    }

    /// How many times `backend` was ejected since its count last restarted.
    pub fn ejection_count(&self, backend: BackendId) -> u32 {
        self.outliers.get(&backend).map_or(0, |outlier| outlier.count)
    }

    /// Every ejected backend.
    pub fn ejected(&self) -> impl Iterator<Item = BackendId> + '_ {
        self.returns.iter().map(|&(_, backend)| backend)
    }

    /// Forgets a backend that left the table (its remembered picks age out).
    pub fn forget(&mut self, backend: BackendId) {
        if let Some(until) = self.outliers.remove(&backend).and_then(|outlier| outlier.until) {
            self.returns.remove(&(until, backend));
        }
    }
}

impl Outlier {
    /// Records `client`'s report at `now`; returns the distinct clients that reported
    /// within the window.
    fn note_reporter(&mut self, client: IpAddr, now: Instant, settings: &EjectionSettings) -> usize {
        self.reporters
            .retain(|&(who, at)| who != client && now.saturating_duration_since(at) <= settings.window);
        // Keeping the latest `min_clients` is enough to know whether that many fall
        // within the window, and bounds the list.
        let keep = settings.min_clients.max(1) as usize;
        if self.reporters.len() >= keep {
            self.reporters.remove(0);
        }
        self.reporters.push((client, now));
        self.reporters.len()
    }

    /// Ejects the backend at `now`: its count, the end of the ejection, its length.
    fn eject(&mut self, settings: &EjectionSettings, now: Instant) -> (u32, Instant, Duration) {
        let quiet = self.returned.is_some_and(|at| now.saturating_duration_since(at) >= settings.max_time);
        if quiet {
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        let duration = settings.ejection_time(self.count);
        let until = now.checked_add(duration).unwrap_or(now);
        self.until = Some(until);
        self.reporters.clear();
        (self.count, until, duration)
    }
}

/// Whether one more ejection keeps the ejected share of a service below the cap, as
/// Envoy and gRPC count it: allowed while the share ejected now is below it.
fn ejection_allowed(share: ServiceShare, max_percent: u8) -> bool {
    share.backends > 0 && share.ejected * 100 < usize::from(max_percent) * share.backends
}

#[cfg(test)]
mod tests;
