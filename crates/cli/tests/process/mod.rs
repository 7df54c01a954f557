//! Running the real `loadwise` binary in tests and talking HTTP to it.
//!
//! Every wait in here has a deadline and every child process is killed when its
//! handle is dropped, so a test that goes wrong fails instead of hanging or leaving
//! a process behind. Children start with a clean environment: no `LOADWISE_…` or
//! `RUST_LOG` from outside the test.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test, built by cargo for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_loadwise");

/// The longest any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// What a command that ran to its end printed, and how it exited.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs the binary with `args` and the extra `env` to its end, failing the test
/// (and killing the process) if it is still running after the deadline: a command
/// expected to exit at once that instead starts serving must not hang the suite.
pub fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> Finished {
    run_wrapped_to_end(&[], args, env)
}

/// Reads `pipe` to its end on a thread, so the child never blocks on a full pipe.
fn collect(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// How to start a long-running `loadwise`: its arguments, its environment and
/// which output to follow line by line (stderr, where the logs go, unless told).
pub struct Spawn {
    command: Command,
    name: String,
    follow_stdout: bool,
}

impl Spawn {
    pub fn new(args: &[&str]) -> Spawn {
        Spawn::wrapped(&[], args)
    }

    /// Sets an environment variable; a later setting of the same name wins.
    pub fn env(mut self, key: &str, value: &str) -> Spawn {
        self.command.env(key, value);
        self
    }

    pub fn envs(mut self, env: &[(&str, &str)]) -> Spawn {
        self.command.envs(env.iter().copied());
        self
    }

    /// Follows stdout instead of stderr; the other one is discarded.
    pub fn follow_stdout(mut self) -> Spawn {
        self.follow_stdout = true;
        self
    }

    /// Starts the process without waiting for anything.
    pub fn start(mut self) -> Proc {
        let (stdout, stderr) = if self.follow_stdout {
            (Stdio::piped(), Stdio::null())
        } else {
            (Stdio::null(), Stdio::piped())
        };
        let mut child = self.command.stdout(stdout).stderr(stderr).spawn().expect("the binary starts");
        let pipe: Box<dyn Read + Send> = if self.follow_stdout {
            Box::new(child.stdout.take().unwrap())
        } else {
            Box::new(child.stderr.take().unwrap())
        };
        let (tx, lines) = std::sync::mpsc::channel();
        // Reads every line, wanted or not, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines, name: self.name }
    }
}

/// A running `loadwise`, killed when the test ends, whatever happens.
pub struct Proc {
    child: Child,
    lines: Receiver<String>,
    name: String,
}

impl Proc {
    /// The next line of the followed output, unless none comes before `end`.
    pub fn next_line(&self, end: Instant) -> Result<String, RecvTimeoutError> {
        self.lines.recv_timeout(end.saturating_duration_since(Instant::now()))
    }

    /// Waits for the first line `pick` finds something in, `what`, and returns that.
    pub fn wait_for<T>(&self, what: &str, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let end = Instant::now() + DEADLINE;
        loop {
            match self.next_line(end) {
                Ok(line) => {
                    if let Some(found) = pick(&line) {
                        return found;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("`{}`: no {what} within {DEADLINE:?}", self.name),
                Err(RecvTimeoutError::Disconnected) => panic!("`{}` ended before printing {what}", self.name),
            }
        }
    }

    /// Waits for a line containing `needle` and returns it.
    pub fn wait_for_line(&self, needle: &str) -> String {
        self.wait_for(&format!("line with {needle:?}"), |line| line.contains(needle).then(|| line.to_owned()))
    }

    /// Every line until one contains `needle`, that one included.
    pub fn lines_until(&self, needle: &str) -> Vec<String> {
        let mut lines = Vec::new();
        let end = Instant::now() + DEADLINE;
        while let Ok(line) = self.next_line(end) {
            let done = line.contains(needle);
            lines.push(line);
            if done {
                return lines;
            }
        }
        panic!("`{}`: no line with {needle:?} within {DEADLINE:?}; got {lines:#?}", self.name);
    }

    /// Sends the signal `name` (`TERM`, `HUP`, …) with `kill -s`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-s", name, &pid]).status().unwrap().success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("`{}` did not exit within {DEADLINE:?}", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with an optional bearer token; returns the status and the body.
pub fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, DEADLINE).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let auth = token.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// One HTTP/1.1 GET without a token; returns the status and the body.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, None)
}

/// The binary run through `wrapper` (for example `ip netns exec NS`, so that it
/// runs inside a network namespace; nothing when empty), with a clean environment
/// plus `env`.
fn wrapped_command(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut command = Command::new(program);
            command.args(wrapper_args).arg(BIN);
            command
        }
        None => Command::new(BIN),
    };
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("LOADWISE_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command
}

/// [`run_to_end`] for the binary run through `wrapper` (see [`Spawn::wrapped`]).
/// A command expected to exit at once that instead starts serving must not hang
/// the suite: after the deadline the process is killed and the test fails.
pub fn run_wrapped_to_end(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Finished {
    let name = format!("{} loadwise {}", wrapper.join(" "), args.join(" "));
    let name = name.trim_start();
    let mut child = wrapped_command(wrapper, args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{name}` still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Finished { code: status.code(), stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

impl Spawn {
    /// Like [`Spawn::new`], but runs the binary through `wrapper`, such as
    /// `["ip", "netns", "exec", "ns1"]`. The wrapper must exec the binary in its own
    /// process (as `ip netns exec` does), so that killing the child kills the binary.
    pub fn wrapped(wrapper: &[&str], args: &[&str]) -> Spawn {
        let name = format!("{} loadwise {}", wrapper.join(" "), args.join(" "));
        Spawn {
            command: wrapped_command(wrapper, args, &[]),
            name: name.trim_start().to_owned(),
            follow_stdout: false,
        }
    }
}

impl Proc {
    /// The process id, for tools that need it (`ps`, `/proc`).
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Spawn {
    /// Starts another program than `loadwise` (a test peer, say) with `args`, its
    /// environment inherited, named `name` in failures.
    pub fn program(program: &std::path::Path, args: &[&str]) -> Spawn {
        let mut command = Command::new(program);
        command.args(args);
        let name = format!("{} {}", program.display(), args.join(" "));
        Spawn { command, name, follow_stdout: false }
    }
}

/// Runs `program` with `args` to its end, like [`run_to_end`] for the binary: after
/// the deadline it is killed and the test fails.
pub fn run_program_to_end(program: &std::path::Path, args: &[&str]) -> Finished {
    let name = format!("{} {}", program.display(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("`{name}` starts: {error}"));
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{name}` still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Finished { code: status.code(), stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// Starts `loadwise serve` with its defaults on an ephemeral loopback port, the admin
/// API off (its default port is fixed and tests run in parallel), and returns it
/// with the address it listens on, read from its log.
pub fn serve_defaults() -> (Proc, SocketAddr) {
    serve_with(&[])
}

/// [`serve_defaults`] with `extra` flags.
pub fn serve_with(extra: &[&str]) -> (Proc, SocketAddr) {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off"];
    args.extend_from_slice(extra);
    let server = Spawn::new(&args).start();
    let line = server.wait_for_line("listening");
    let addr = line.rsplit("addr=").next().unwrap().trim().parse().expect("the log names the address");
    (server, addr)
}

/// The backends of `service` as the admin API at `admin` lists them; none until the
/// first one registers (the service does not exist before).
pub fn service_backends(admin: SocketAddr, service: &str) -> Vec<serde_json::Value> {
    let (status, body) = get(admin, &format!("/v1/services/{service}/backends"));
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    list["backends"].as_array().cloned().unwrap_or_default()
}

/// The address a log line names after `addr=`.
pub fn address_in(line: &str) -> SocketAddr {
    let after = line.rsplit("addr=").next().unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap_or_else(|_| panic!("no address in {line:?}"))
}

impl Proc {
    /// Reads `serve`'s log until it has said where it listens for clients and where
    /// its admin API listens: `(clients, admin)`.
    pub fn listening_with_admin(&self) -> (SocketAddr, SocketAddr) {
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || admin.is_none() {
            let line = self.wait_for_line("listening");
            if line.contains("admin API listening") {
                admin = Some(address_in(&line));
            } else if line.contains("loadwise_server: listening") {
                addr = Some(address_in(&line));
            }
        }
        (addr.unwrap(), admin.unwrap())
    }
}

impl Proc {
    /// Waits until `count` lines containing `needle` have gone by, within `limit`,
    /// and returns every line read meanwhile (those without `needle` too).
    pub fn wait_for_count(&self, needle: &str, count: usize, limit: Duration) -> Vec<String> {
        let end = Instant::now() + limit;
        let mut lines = Vec::new();
        let mut seen = 0;
        while seen < count {
            match self.next_line(end) {
                Ok(line) => {
                    seen += usize::from(line.contains(needle));
                    lines.push(line);
                }
                Err(error) => panic!("`{}`: {seen} of {count} lines with {needle:?} ({error:?})", self.name),
            }
        }
        lines
    }

    /// The lines already printed and not yet read, without waiting.
    pub fn pending_lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}
