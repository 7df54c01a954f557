//! A progress bar on stderr while a run goes on (only when asked, i.e. on a terminal).

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::Stop;
use super::plan::LoadPlan;

/// How often the bar is redrawn.
const TICK: Duration = Duration::from_millis(100);

/// The bar and the task that updates it. [`finish`](Self::finish) removes both.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Shows a bar for the load of `plan` if `enabled`; otherwise a hidden one.
    pub fn start(enabled: bool, label: &str, stop: Stop, plan: &Arc<LoadPlan>) -> Progress {
        if !enabled {
            return Progress { bar: ProgressBar::hidden(), task: None };
        }
        let total = match stop {
            Stop::Duration(d) => d.as_millis() as u64,
            Stop::Requests(n) => n,
        };
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix} [{bar:40}] {msg}").expect("a valid template");
        bar.set_style(style.progress_chars("=> "));
        bar.set_prefix(label.to_owned());
        let task = tokio::spawn(update(bar.clone(), stop, Arc::clone(plan)));
        Progress { bar, task: Some(task) }
    }

    /// Stops updating and clears the bar.
    pub async fn finish(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn update(bar: ProgressBar, stop: Stop, plan: Arc<LoadPlan>) {
    let mut ticks = tokio::time::interval_at(Instant::now() + TICK, TICK);
    loop {
        ticks.tick().await;
        let elapsed = plan.start.elapsed();
        let done = plan.control.finished_count();
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
        bar.set_position(match stop {
            Stop::Duration(_) => elapsed.as_millis() as u64,
            Stop::Requests(_) => done,
        });
        bar.set_message(format!("{:.1} s, {done} ops, {rate:.0}/s", elapsed.as_secs_f64()));
    }
}
