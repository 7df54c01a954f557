//! The dashboard in a real headless Chromium: it loads without console errors, shows
//! the backends of every service (a v2 one with its protocol, CPU, weight and reported
//! state), follows a change of load, drives an operator action, fits a phone, and
//! warns when the dispatcher goes away. Screenshots go to `target/artifacts/`.
//!
//! Chromium is driven by `tests/browser/dashboard.mjs` through `playwright-core`
//! (`npm ci --prefix crates/server/tests/browser`). Where Chromium, node or playwright-core is
//! missing the test says "skipped: ..." and passes, unless `LOADWISE_REQUIRE_BROWSER`
//! is set (as CI does), where a missing piece fails it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use loadwise_core::dispatcher::DispatchSettings;
use loadwise_core::registry::BackendId;
use loadwise_core::selection::BackendState;
use loadwise_protocol::v2::{self, Message};
use loadwise_server::ServerConfig;
use loadwise_server::admin::{AdminConfig, AdminServer};
use loadwise_testkit::{TestServer, heartbeat, login, send, wait_until, within};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

/// The whole browser session must finish within this.
const SESSION_LIMIT: Duration = Duration::from_secs(45);

/// How long one step of the driver may take.
const STEP_LIMIT: Duration = Duration::from_secs(20);

const TOKEN: &str = "test-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_and_follows_the_backends_in_chromium() {
    let Some(tools) = find_tools() else { return };
    let _serial = loadwise_testkit::shared_access().await;
    // A TTL far longer than the test, so that single heartbeats keep the backends listed.
    let dispatch = DispatchSettings { ttl: Duration::from_secs(600), ..DispatchSettings::default() };
    let server = TestServer::start_with(ServerConfig { dispatch, ..ServerConfig::default() }).await;
    let admin = AdminServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        AdminConfig { token: Some(TOKEN.into()), ..AdminConfig::default() },
        server.dispatcher.clone(),
        server.wire.clone(),
    )
    .await
    .expect("bind the admin server");
    let url = format!("http://{}/", admin.local_addr());
    let (stop_admin, admin_stopped) = oneshot::channel::<()>();
    let admin_task = tokio::spawn(admin.run(async {
        let _ = admin_stopped.await;
    }));

    let mut first = server.register(40, "10.0.0.1", 7001).await;
    let _second = server.register(60, "10.0.0.2", 7002).await;
    let _v2 = register_v2(&server).await;

    let mut driver = Driver::start(&tools, &url);
    driver.expect("loaded").await;
    let clients = tokio::spawn(steady_logins(server.connect().await));
    send(&mut first, &heartbeat(85, "10.0.0.1", 7001)).await;
    driver.say("updated");
    driver.expect("shown").await;
    driver.expect("stop-admin").await;
    stop_admin.send(()).expect("the admin server is running");
    within(admin_task).await.expect("the admin server stops");
    driver.say("admin-stopped");
    driver.expect("done").await;
    driver.finish().await;
    within(clients).await.expect("the client finishes");

    let states: Vec<_> = server
        .dispatcher
        .snapshot()
        .iter()
        .filter(|b| b.service.as_str() == "default")
        .map(|b| (b.id, b.state))
        .collect();
    let expected = [(BackendId(1), BackendState::Ready), (BackendId(2), BackendState::Draining)];
    assert_eq!(states, expected, "the drain clicked in the page reached the dispatcher");
    for name in ["dashboard.png", "dashboard-phone.png", "dashboard-unreachable.png"] {
        let path = tools.artifacts.join(name);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "{} was written", path.display());
        println!("screenshot: {}", path.display());
    }
    server.stop().await;
}

/// Registers a v2 backend of service `search` with one raw heartbeat: CPU 50.5 %,
/// weight 200, reporting itself draining.
async fn register_v2(server: &TestServer) -> TcpStream {
    let heartbeat = loadwise_testkit::search_heartbeat(77, v2::State::Draining, Vec::new());
    let mut stream = server.connect().await;
    send(&mut stream, &Message::Heartbeat(heartbeat).encode().unwrap()).await;
    let registered = || server.dispatcher.snapshot().iter().any(|b| b.service.as_str() == "search");
    wait_until("the v2 backend registered", registered).await;
    stream
}

/// Logs in every 50 ms for two seconds, so that the pick rate chart has something to draw.
async fn steady_logins(mut client: TcpStream) {
    for _ in 0..40 {
        login(&mut client).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the browser test needs from the machine.
struct Tools {
    chromium: PathBuf,
    node: PathBuf,
    script: PathBuf,
    artifacts: PathBuf,
}

/// Finds Chromium, node and playwright-core, or says why the test is skipped.
fn find_tools() -> Option<Tools> {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = match std::env::var_os("LOADWISE_CHROMIUM") {
        Some(path) => Some(PathBuf::from(path)).filter(|path| path.is_file()),
        None => ["chromium", "chromium-browser", "google-chrome"].into_iter().find_map(on_path),
    };
    let node = on_path("node");
    let playwright = browser_dir.join("node_modules/playwright-core/package.json");
    let missing = match (&chromium, &node) {
        (None, _) => {
            Some("Chromium (apt-get install chromium, or LOADWISE_CHROMIUM=/path/to/chromium)".to_owned())
        }
        (_, None) => Some("node on PATH".to_owned()),
        _ if !playwright.exists() => {
            Some("playwright-core (npm ci --prefix crates/server/tests/browser)".into())
        }
        _ => None,
    };
    if let Some(missing) = missing {
        assert!(
            std::env::var_os("LOADWISE_REQUIRE_BROWSER").is_none(),
            "LOADWISE_REQUIRE_BROWSER is set, but the browser test needs {missing}"
        );
        // Written past the test harness's capture, so that the skip shows in `cargo test`.
        let _ = writeln!(std::io::stderr(), "skipped: the dashboard browser test needs {missing}");
        return None;
    }
    Some(Tools {
        chromium: chromium?,
        node: node?,
        script: browser_dir.join("dashboard.mjs"),
        artifacts: artifacts_dir(),
    })
}

/// `target/artifacts` (or `$CARGO_TARGET_DIR/artifacts`), unless `LOADWISE_ARTIFACTS` says otherwise.
fn artifacts_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOADWISE_ARTIFACTS") {
        return PathBuf::from(dir);
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("artifacts")
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// The node process driving Chromium, spoken to one line at a time.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    started: tokio::time::Instant,
}

impl Driver {
    fn start(tools: &Tools, url: &str) -> Driver {
        let mut child = Command::new(&tools.node)
            .arg(&tools.script)
            .arg(&tools.chromium)
            .arg(url)
            .arg(&tools.artifacts)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::unbounded_channel();
        // A plain thread: it ends when node closes its stdout, at the latest when killed.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Driver { child, stdin, lines, started: tokio::time::Instant::now() }
    }

    /// Waits for the driver to report `expected`, failing on an error or a timeout.
    async fn expect(&mut self, expected: &str) {
        let left = SESSION_LIMIT.saturating_sub(self.started.elapsed()).min(STEP_LIMIT);
        let line = tokio::time::timeout(left, self.lines.recv()).await;
        let line = line.unwrap_or_else(|_| panic!("the browser did not report {expected:?} in time"));
        let line = line.unwrap_or_else(|| panic!("the browser driver exited before {expected:?}"));
        assert_eq!(line, expected, "the browser driver reported a failure");
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").and_then(|()| self.stdin.flush()).expect("write to the driver");
    }

    /// Waits for node to exit successfully.
    async fn finish(mut self) {
        let deadline = tokio::time::Instant::now() + STEP_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for node") {
                assert!(status.success(), "the browser driver exited with {status}");
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the browser driver did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // On a failed assertion, leave no browser behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
