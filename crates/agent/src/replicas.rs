//! The agent's links: one per dispatcher given, and one per replica found in DNS,
//! opened and closed as the replica set changes.
//!
//! The names are followed by tasks of `loadwise_client::discover::follow`, which
//! send additions and removals (after the grace period) as events; this module
//! only acts on them. A replica named twice (by two names, or by a name and a
//! `--server` address) gets one link, kept until no source names it.

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::link;
use crate::sample::Report;
use loadwise_client::discover::follow::{self, Tagged};
use loadwise_client::discover::{Resolver, Tally, Update};
use loadwise_protocol::config::ConfigError;

/// Room for the changes of a few answers; a follower waits while it is full.
const CHANGES_BUFFER: usize = 64;

/// Every link of the agent, and the tasks that follow its DNS names.
pub(crate) struct Links {
    config: AgentConfig,
    reports: watch::Receiver<Report>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    /// How many sources name each replica.
    tally: Tally,
    /// The links to replicas found in DNS, each with its own stop.
    discovered: HashMap<SocketAddr, CancellationToken>,
    /// Changed by a link that lost its replica: its name is looked up again soon.
    lost: watch::Sender<()>,
}

impl Links {
    /// Opens a link to every dispatcher given.
    pub(crate) fn new(
        config: &AgentConfig,
        reports: watch::Receiver<Report>,
        stop: CancellationToken,
    ) -> Self {
        let (lost, _) = watch::channel(());
        let mut links = Links {
            config: config.clone(),
            reports,
            stop,
            tasks: JoinSet::new(),
            tally: Tally::default(),
            discovered: HashMap::new(),
            lost,
        };
        for server in &config.servers {
            // A replica given by address counts as named for good, so that DNS
            // naming it too opens no second link.
            if let Ok(addr) = server.parse::<SocketAddr>() {
                links.tally.apply(Update::Add(addr));
            }
            let task =
                link::run(server.clone(), config.clone(), links.reports.clone(), links.stop.clone(), None);
            links.tasks.spawn(task);
        }
        links
    }

    /// Acts on the changes of the replica sets until every follower has stopped.
    pub(crate) async fn follow(&mut self, changes: Option<mpsc::Receiver<Tagged>>) {
        if let Some(mut changes) = changes {
            while let Some((tag, update)) = changes.recv().await {
                self.apply(tag, update);
            }
        }
        std::future::pending::<()>().await;
    }

    /// Opens or closes the link of one replica, when the change is the first
    /// source to name it or the last to stop.
    fn apply(&mut self, tag: usize, update: Update) {
        // Reap the links that ended, so a set that churns for days holds no garbage.
        while self.tasks.try_join_next().is_some() {}
        match self.tally.apply(update) {
            Some(Update::Add(replica)) => self.open(tag, replica),
            Some(Update::Remove(replica)) => {
                if let Some(stop) = self.discovered.remove(&replica) {
                    tracing::info!(%replica, "closing the link to a replica gone from DNS");
                    stop.cancel();
                }
            }
            None => {}
        }
    }

    fn open(&mut self, tag: usize, replica: SocketAddr) {
        let source = &self.config.discovery.sources[tag];
        let mut config = self.config.clone();
        config.tls = config.tls.map(|tls| tls.or_server_name(source.host_name()));
        let stop = self.stop.child_token();
        tracing::info!(%replica, %source, "opening a link to a replica found in DNS");
        let task = link::run(
            replica.to_string(),
            config,
            self.reports.clone(),
            stop.clone(),
            Some(self.lost.clone()),
        );
        self.tasks.spawn(task);
        self.discovered.insert(replica, stop);
    }

    /// Waits for every link and follower to end (after the stop was cancelled).
    pub(crate) async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts a follower per DNS name, if any; their changes arrive on the receiver.
/// Fails if the system's DNS configuration cannot be read.
pub(crate) fn follow_names(
    config: &AgentConfig,
    links: &mut Links,
) -> Result<Option<mpsc::Receiver<Tagged>>, ConfigError> {
    let discovery = &config.discovery;
    if discovery.sources.is_empty() {
        return Ok(None);
    }
    let resolver =
        Resolver::new(discovery.resolver).map_err(|error| ConfigError::new("resolver", error.to_string()))?;
    let (sender, changes) = mpsc::channel(CHANGES_BUFFER);
    for (tag, source) in discovery.sources.iter().enumerate() {
        let task = follow::follow(
            (tag, source.clone()),
            resolver.clone(),
            discovery.clone(),
            sender.clone(),
            links.lost.subscribe(),
            links.stop.clone(),
        );
        links.tasks.spawn(task);
    }
    Ok(Some(changes))
}
