//! `loadwise serve` and `loadwise config`: load the settings, run the dispatcher and its
//! admin API, and reload on SIGHUP.

use std::future::Future;

use anyhow::Context as _;
use loadwise_cli::settings::{self, Change, Loaded, Sources};
use loadwise_server::admin::{AdminConfig, AdminServer, AdminState};
use loadwise_server::{ReloadHandle, Server};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::{ConfigAction, ConfigArgs, ServeArgs};

/// Runs the dispatcher until `shutdown` completes.
pub async fn run(args: ServeArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Before anything else: SIGHUP's default action would end the process.
    let hangups = listen_for_hangups();
    refuse_retired(&args)?;
    let mut sources = args.sources();
    // Every connection holds a descriptor: the budgets are fitted to the limit
    // raised as far as it goes, at start and at each reload.
    sources.descriptor_limit = raise_descriptor_limit();
    let loaded = sources.load()?;
    warn_shrunk(&loaded);
    for door in settings::open_doors(&loaded) {
        tracing::info!("open door: {door}");
    }
    let server = Server::bind(loaded.settings.server.clone()).await?;
    let admin = bind_admin(&loaded, &server).await?;
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
        ConfigAction::Show(args) => {
            refuse_retired(&args)?;
            // What serve would fit the budgets to: the hard limit it raises to.
            let mut sources = args.sources();
            sources.descriptor_limit = hard_descriptor_limit();
            let loaded = sources.load()?;
            for shrunk in &loaded.shrunk {
                eprintln!("loadwise: warning: {shrunk}");
            }
            print!("{}", settings::render(&loaded.settings));
        }
    }
    Ok(())
}

/// Fails naming a flag or variable of a setting that no longer exists, with what
/// replaced it: a variable would otherwise be ignored in silence, and the flag be
/// met with a tip for a look-alike. (A file key is refused as unknown, with the same
/// hint.)
fn refuse_retired(args: &ServeArgs) -> anyhow::Result<()> {
    if args.retired_max_connections.is_some() {
        anyhow::bail!("--max-connections is no longer accepted: {}", settings::MAX_CONNECTIONS_RETIRED);
    }
    for (variable, hint) in settings::RETIRED_VARIABLES {
        if std::env::var_os(variable).is_some() {
            anyhow::bail!("{variable} is no longer read: {hint}; unset it");
        }
    }
    Ok(())
}

/// Warns about each budget left at its default that was lowered to fit.
fn warn_shrunk(loaded: &Loaded) {
    for shrunk in &loaded.shrunk {
        tracing::warn!(
            setting = shrunk.setting,
            default = shrunk.default,
            fitted = shrunk.fitted,
            limit = shrunk.limit,
            "{shrunk}"
        );
    }
}

/// Binds the admin API unless it is off. Its address is logged when it starts.
async fn bind_admin(loaded: &Loaded, server: &Server) -> anyhow::Result<Option<AdminServer>> {
    let Some(addr) = loaded.settings.admin.listen.addr() else {
        tracing::info!("admin API off");
        return Ok(None);
    };
    let admin = &loaded.settings.admin;
    let config = AdminConfig {
        token: loaded.admin_token.clone(),
        limits: admin.limits.clone(),
        allowed_hosts: admin.allowed_hosts.as_ref().map(|hosts| hosts.0.clone()).unwrap_or_default(),
    };
    let admin =
        AdminServer::bind(addr, config, server.dispatcher(), server.wire_stats()).await.map_err(|error| {
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
        warn_shrunk(&next);
        let changes = settings::diff(&self.current, &next);
        next.settings.keep_restart_only(&self.current.settings);
        if let Err(error) = self.server.apply(&next.settings.server) {
            tracing::error!(%error, "configuration reload refused; the settings in force stay");
            return;
        }
        if let Some(admin) = &self.admin {
            admin.set_token(next.admin_token.clone());
            admin.set_timeouts(&next.settings.admin.limits);
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

/// Raises the soft open-file limit to the hard one, and returns it: the most
/// descriptors the process may open. `None` (with a warning) if it cannot be read.
fn raise_descriptor_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open-file limit; the connection budgets are not checked against it");
            None
        }
    }
}

/// The hard open-file limit, which `serve` would raise the soft one to.
fn hard_descriptor_limit() -> Option<u64> {
    rlimit::Resource::NOFILE.get().ok().map(|(_, hard)| hard)
}
