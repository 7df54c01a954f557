//! Building and running the C++ legacy peers of this directory (`legacy_backend.cpp`,
//! `legacy_client.cpp`).
//!
//! They are compiled with `g++ -std=c++17 -Wall -Wextra -Werror -O2` once per test
//! binary, into `target/tmp/cpp/`. Where g++ is missing a test says "skipped: ..."
//! and passes, unless `LOADWISE_REQUIRE_CXX` is set (as CI does), where it fails. A
//! program that does not compile always fails the test.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::process::{Finished, Proc, Spawn, run_program_to_end};

const FLAGS: &[&str] = &["-std=c++17", "-Wall", "-Wextra", "-Werror", "-O2"];

/// The compiled peers.
pub struct Peers {
    backend: PathBuf,
    client: PathBuf,
}

/// How the C++ backend reports its memory figure.
pub enum Mem<'a> {
    /// The same figure in every heartbeat.
    Fixed(u8),
    /// A file holding the figure, read again before each heartbeat.
    File(&'a Path),
}

/// When the C++ backend sends its first heartbeat.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum First {
    /// One second after connecting, as the original does.
    AfterOneSecond,
    /// At once, to save a second.
    Now,
}

/// The compiled peers, or `None` after saying why the test named `test` is skipped.
pub fn peers(test: &str) -> Option<&'static Peers> {
    static BUILT: OnceLock<Result<Peers, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(peers) => Some(peers),
        Err(missing) => {
            assert!(
                std::env::var_os("LOADWISE_REQUIRE_CXX").is_none(),
                "LOADWISE_REQUIRE_CXX is set, but {test} needs {missing}"
            );
            // Written past the test harness's capture, so that the skip shows in `cargo test`.
            let _ = writeln!(std::io::stderr(), "skipped: {test} needs {missing}");
            None
        }
    }
}

/// Compiles both programs side by side; `Err` names what is missing.
fn build() -> Result<Peers, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cpp");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cpp");
    std::fs::create_dir_all(&out).expect("create target/tmp/cpp");
    let jobs = ["legacy_backend", "legacy_client"].map(|name| {
        // Built under a name of this process and renamed into place, so that test
        // binaries running at the same time never run a half-written program.
        let partial = out.join(format!("{name}.{}.partial", std::process::id()));
        let child = Command::new("g++")
            .args(FLAGS)
            .arg("-o")
            .arg(&partial)
            .arg(source.join(format!("{name}.cpp")))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        (name, partial, child)
    });
    let mut built = Vec::new();
    for (name, partial, child) in jobs {
        match child {
            Ok(child) => check_compiled(name, &child.wait_with_output().expect("wait for g++")),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err("g++ on PATH (apt-get install g++)".to_owned());
            }
            Err(error) => panic!("cannot run g++: {error}"),
        }
        let program = out.join(name);
        std::fs::rename(&partial, &program).expect("move the compiled program into place");
        built.push(program);
    }
    let client = built.pop().unwrap();
    let backend = built.pop().unwrap();
    Ok(Peers { backend, client })
}

fn check_compiled(name: &str, output: &Output) {
    assert!(
        output.status.success(),
        "g++ {} failed on tests/cpp/{name}.cpp:\n{}",
        FLAGS.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Peers {
    /// Starts a C++ backend that heartbeats `server` as `ip:port`, and waits until
    /// it has connected. Its stdout is followed: "connected", then
    /// "heartbeat N mem M" after each heartbeat.
    pub fn backend(&self, server: SocketAddr, ip: &str, port: u16, mem: Mem<'_>, first: First) -> Proc {
        let (server_ip, server_port) = (server.ip().to_string(), server.port().to_string());
        let port = port.to_string();
        let mem = match mem {
            Mem::Fixed(mem) => mem.to_string(),
            Mem::File(path) => format!("@{}", path.display()),
        };
        let mut args = vec![server_ip.as_str(), &server_port, ip, &port, &mem];
        if first == First::Now {
            args.insert(0, "--first-now");
        }
        let backend = Spawn::program(&self.backend, &args).follow_stdout().start();
        backend.wait_for_line("connected");
        backend
    }

    /// Runs the C++ client against `server` to its end: one login, after a frame of
    /// each command in `junk` (then it also checks that nothing else arrives).
    pub fn client(&self, server: SocketAddr, junk: &[u16]) -> Finished {
        let mut args: Vec<String> = Vec::new();
        for cmd in junk {
            args.push("--junk".into());
            args.push(format!("{cmd:#06x}"));
        }
        args.push(server.ip().to_string());
        args.push(server.port().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run_client(&args)
    }

    /// Runs the C++ client with `args` (see tests/cpp/legacy_client.cpp) to its end.
    pub fn run_client(&self, args: &[&str]) -> Finished {
        run_program_to_end(&self.client, args)
    }

    /// The C++ client's answer when it exits 0 (`IP:PORT` or `error`); fails otherwise.
    pub fn login(&self, server: SocketAddr) -> String {
        let out = self.client(server, &[]);
        assert!(out.success(), "the C++ client failed: {out:?}");
        out.stdout.trim().to_owned()
    }
}
