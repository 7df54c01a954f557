//! `loadwise serve` and `loadwise config`: load the settings, run the dispatcher and its
//! admin API, and reload on SIGHUP.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use loadwise::admin::{AdminConfig, AdminServer, AdminState};
use loadwise::dispatcher::Dispatcher;
use loadwise::server::{ReloadHandle, Server};
use loadwise::settings::{self, Change, Loaded, Sources};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::{ConfigAction, ConfigArgs, ServeArgs};

/// Runs the dispatcher until `shutdown` completes.
pub async fn run(args: ServeArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Before anything else: SIGHUP's default action would end the process.
    let hangups = listen_for_hangups();
    let sources = args.sources();
    let loaded = sources.load()?;
    raise_descriptor_limit(loaded.settings.server.max_connections);
    let server = Server::bind(loaded.settings.server.clone()).await?;
    let admin = bind_admin(&loaded, server.dispatcher()).await?;
    let stop_admin = CancellationToken::new();
    let admin_state = admin.as_ref().map(AdminServer::state);
    let admin_task = admin.map(|admin| tokio::spawn(admin.run(stop_admin.clone().cancelled_owned())));
    let reloader = Reloader { sources, current: loaded, server: server.reload_handle(), admin: admin_state };
    server.run(reloader.run_until(hangups, shutdown)).await;
    stop_admin.cancel();
    if let Some(task) = admin_task {
        task.await.context("the admin API task failed")?;
    }
    Ok(())
}

/// Prints the example file or the settings in force.
pub fn config(args: ConfigArgs) -> anyhow::Result<()> {
    match args.action {
        ConfigAction::Example => print!("{}", settings::example()),
        ConfigAction::Show(args) => print!("{}", settings::render(&args.sources().load()?.settings)),
    }
    Ok(())
}

/// Binds the admin API unless it is off. Its address is logged when it starts.
async fn bind_admin(loaded: &Loaded, dispatcher: Arc<Dispatcher>) -> anyhow::Result<Option<AdminServer>> {
    let Some(addr) = loaded.settings.admin.listen.addr() else {
        tracing::info!("admin API off");
        return Ok(None);
    };
    let config = AdminConfig { token: loaded.admin_token.clone() };
    let admin = AdminServer::bind(addr, config, dispatcher).await.map_err(|error| {
        anyhow::anyhow!(
            "{error} (is another loadwise running? set --admin-listen to another address, or off)"
        )
    })?;
    Ok(Some(admin))
}

fn listen_for_hangups() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; the configuration cannot be reloaded");
            None
        }
    }
}

/// Applies the settings again on each SIGHUP.
struct Reloader {
    sources: Sources,
    /// The settings in force.
    current: Loaded,
    server: ReloadHandle,
    admin: Option<AdminState>,
}

impl Reloader {
    /// Reloads on every SIGHUP until `shutdown` completes; then marks the admin API
    /// not ready while connections drain.
    async fn run_until(mut self, mut hangups: Option<Signal>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                hangup = next_hangup(&mut hangups) => match hangup {
                    Some(()) => self.reload(),
                    None => hangups = None,
                },
                () = &mut shutdown => break,
            }
        }
        if let Some(admin) = &self.admin {
            admin.set_ready(false);
        }
    }

    fn reload(&mut self) {
        tracing::info!("SIGHUP received: reloading the configuration");
        let mut next = match self.sources.load() {
            Ok(next) => next,
            Err(error) => {
                tracing::error!(error = %error, "configuration reload refused; the settings in force stay");
                return;
            }
        };
        let changes = settings::diff(&self.current, &next);
        next.settings.keep_restart_only(&self.current.settings);
        if let Err(error) = self.server.apply(&next.settings.server) {
            tracing::error!(%error, "configuration reload refused; the settings in force stay");
            return;
        }
        if let Some(admin) = &self.admin {
            admin.set_token(next.admin_token.clone());
        }
        log_changes(&changes);
        self.current = next;
    }
}

async fn next_hangup(hangups: &mut Option<Signal>) -> Option<()> {
    match hangups {
        Some(hangups) => hangups.recv().await,
        None => std::future::pending().await,
    }
}

fn log_changes(changes: &[Change]) {
    for change in changes {
        let (setting, old, new) = (&change.key, &change.old, &change.new);
        if change.live {
            tracing::info!(%setting, %old, %new, "setting changed");
        } else {
            tracing::warn!(%setting, %old, %new, "setting needs a restart to change; keeping the running value");
        }
    }
    let applied = changes.iter().filter(|change| change.live).count();
    tracing::info!(changed = applied, "configuration reloaded");
}

/// Each connection needs a file descriptor; raise the soft limit as far as the hard
/// limit allows and say so if it is still below the connection cap.
fn raise_descriptor_limit(max_connections: usize) {
    // Leave room for the listener, logging and the runtime.
    let wanted = max_connections as u64 + 64;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit < wanted => {
            tracing::warn!(
                limit,
                max_connections,
                "the open-file limit is below --max-connections; accepts may fail"
            )
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read or raise the open-file limit"),
    }
}
