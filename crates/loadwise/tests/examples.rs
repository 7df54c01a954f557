//! The C and C++ examples (`examples/`), built with their Makefile against this
//! crate's libloadwise and run against a dispatcher on loopback: the backend embeds
//! the agent and registers, each client picks it and is welcomed with its ticket, a
//! forged ticket is refused, and the backend stops cleanly on SIGTERM. Once linked
//! with the shared library (checking the SONAME the programs record), once with the
//! static one under AddressSanitizer (LeakSanitizer on) and UBSan, where any report
//! fails the test; a control program first shows that a leak and undefined behaviour
//! are reported there, so that a clean run means something. Nothing is suppressed.
//!
//! The library comes from this very build: cargo compiles the `loadwise` library
//! with all its crate types (lib, cdylib, staticlib) before this test, into the
//! `deps` directory beside the test's executable. Where gcc, g++ or make is missing
//! the tests say "skipped: ..." and pass, unless `LOADWISE_REQUIRE_CXX` is set (as CI
//! does), where they fail.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use loadwise::protocol::v2::auth::Secret;
use loadwise_server::{ConnectionLimits, ServerConfig};
use loadwise_testkit::{DEADLINE, TestServer};
use tokio::runtime::Runtime;

/// The secret file's text; the shared secret is this without the newline.
const SECRET_FILE_TEXT: &str = "an example secret, 32 bytes long\n";

const SERVICE: &str = "game";

/// What the sanitizers print when they find something.
const REPORTS: [&str; 4] = ["ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "SUMMARY:"];

#[test]
fn the_c_and_cpp_examples_register_pick_and_check_tickets() {
    let Some(built) = build("the_c_and_cpp_examples_register_pick_and_check_tickets", Variant::Shared) else {
        return;
    };
    for program in ["c-backend", "c-client", "cpp-backend", "cpp-client"] {
        let dynamic = run_to_end(Command::new("readelf").arg("-d").arg(built.join(program)));
        let needed = String::from_utf8_lossy(&dynamic.stdout).into_owned();
        assert!(
            needed.contains("Shared library: [libloadwise.so.1]"),
            "{program} records the SONAME:\n{needed}"
        );
    }
    run_examples(&built, &[]);
}

#[test]
fn the_examples_are_clean_under_address_leak_and_undefined_behaviour_sanitizers() {
    let test = "the_examples_are_clean_under_address_leak_and_undefined_behaviour_sanitizers";
    let Some(built) = build(test, Variant::Sanitized) else {
        return;
    };
    // Leak checking is on by default with AddressSanitizer on Linux; said here so that
    // it cannot be turned off from outside. Nothing is suppressed.
    let env = [
        ("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=66"),
        ("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"),
        ("LSAN_OPTIONS", ""),
    ];
    sanitizers_report(&built, &env);
    run_examples(&built, &env);
}

/// A control: on this machine, with these options, a leak and undefined behaviour do
/// get reported and fail the program, so a clean run of the examples means something.
fn sanitizers_report(built: &Path, env: &[(&str, &str)]) {
    let source = built.join("control.c");
    std::fs::write(
        &source,
        "#include <limits.h>\n#include <stdlib.h>\n#include <string.h>\n\
         int main(int argc, char **argv) {\n\
           (void)argv;\n\
           if (argc > 1 && strcmp(argv[1], \"ub\") == 0) { int big = INT_MAX; return big + argc; }\n\
           void *volatile lost = malloc(77);\n\
           lost = NULL;\n\
           return 0;\n\
         }\n",
    )
    .unwrap();
    let program = built.join("control");
    let flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-o"];
    let compiled = run_to_end(Command::new("gcc").args(flags).arg(&program).arg(&source));
    assert!(compiled.status.success(), "{}", String::from_utf8_lossy(&compiled.stderr));
    for (arg, report) in [("leak", "ERROR: LeakSanitizer"), ("ub", "runtime error:")] {
        let out = run_to_end(Command::new(&program).arg(arg).envs(env.iter().copied()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(report),
            "no {report:?} for the {arg} control:\n{stderr}"
        );
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// Linked with libloadwise.so, installed beside the programs with its SONAME.
    Shared,
    /// Linked with libloadwise.a, built with `-fsanitize=address,undefined`.
    Sanitized,
}

/// Builds the examples into a directory of their own; `None` after saying why the
/// test is skipped.
fn build(test: &str, variant: Variant) -> Option<PathBuf> {
    if let Some(missing) = ["gcc", "g++", "make", "readelf"].into_iter().find(|tool| !on_path(tool)) {
        assert!(
            std::env::var_os("LOADWISE_REQUIRE_CXX").is_none(),
            "LOADWISE_REQUIRE_CXX is set, but {test} needs {missing} (apt-get install g++ make binutils)"
        );
        // Written past the test harness's capture, so that the skip shows in `cargo test`.
        let _ = writeln!(std::io::stderr(), "skipped: {test} needs {missing} on PATH");
        return None;
    }
    let libdir = library_dir();
    let name = match variant {
        Variant::Shared => "shared",
        Variant::Sanitized => "sanitized",
    };
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples").join(name);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(&examples)
        .arg(format!("OUT={}", out.display()))
        .arg(format!("LIBDIR={}", libdir.display()));
    // Always rebuilt: make compares times, and the library is rebuilt in place.
    make.arg("-B");
    if variant == Variant::Sanitized {
        make.args(["SANITIZE=1", "LINK=static"]);
    }
    let output = run_to_end(&mut make);
    assert!(
        output.status.success(),
        "make failed on examples/:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(out)
}

/// Where cargo put this build's libloadwise.so and libloadwise.a: `target/<profile>/deps`,
/// the directory of this test's executable.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let deps = exe.parent().expect("the test's directory").to_owned();
    for file in ["libloadwise.so", "libloadwise.a"] {
        assert!(
            deps.join(file).is_file(),
            "{file} is not in {}: cargo builds it with the loadwise library (crate-type cdylib, staticlib)",
            deps.display()
        );
    }
    deps
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Runs every backend with every client against a dispatcher with a secret.
fn run_examples(built: &Path, env: &[(&str, &str)]) {
    let runtime = Runtime::new().unwrap();
    let connection = ConnectionLimits {
        secret: Some(Secret::from_file_text(SECRET_FILE_TEXT).unwrap()),
        ..ConnectionLimits::default()
    };
    let server =
        runtime.block_on(TestServer::start_with(ServerConfig { connection, ..ServerConfig::default() }));
    let secret_file = built.join("secret");
    std::fs::write(&secret_file, SECRET_FILE_TEXT).unwrap();
    let servers = server.addr.to_string();
    for lang in ["c", "cpp"] {
        let backend = Backend::start(&built.join(format!("{lang}-backend")), &servers, &secret_file, env);
        wait_until_registered(&server, backend.port);
        for client in ["c-client", "cpp-client"] {
            let out = run_to_end(
                Command::new(built.join(client)).args([servers.as_str(), SERVICE]).envs(env.iter().copied()),
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{client} against {lang}-backend:\n{stdout}{stderr}");
            assert!(stdout.contains(&format!("picked 127.0.0.1:{}", backend.port)), "{stdout}");
            assert!(stdout.contains("welcome"), "{stdout}");
            assert_clean(client, &stderr);
        }
        let forged = "01".repeat(65);
        let answer = backend.send_ticket(&forged);
        assert!(
            answer.starts_with("refused: ticket refused"),
            "{lang}-backend let a forged ticket in: {answer:?}"
        );
        backend.stop_and_check(lang);
    }
    runtime.block_on(server.stop());
}

/// Waits until the dispatcher lists a backend at this port.
fn wait_until_registered(server: &TestServer, port: u16) {
    let end = Instant::now() + DEADLINE;
    while !server
        .dispatcher
        .backends()
        .iter()
        .any(|(_, backend)| backend.address().to_string().ends_with(&format!(":{port}")))
    {
        assert!(Instant::now() < end, "the backend on port {port} did not register within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An example backend, killed when dropped whatever happens.
struct Backend {
    child: Child,
    lines: Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    port: u16,
}

impl Backend {
    fn start(program: &Path, servers: &str, secret_file: &Path, env: &[(&str, &str)]) -> Backend {
        let mut child = Command::new(program)
            .args([servers, SERVICE])
            .arg(secret_file)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the backend starts");
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut backend = Backend { child, lines, stderr: Some(stderr), port: 0 };
        let listening = backend.wait_for_line("listening 127.0.0.1:");
        let port = listening.split(['.', ':', ' ']).nth(5).and_then(|port| port.parse().ok());
        backend.port = port.unwrap_or_else(|| panic!("no port in {listening:?}"));
        backend
    }

    fn wait_for_line(&mut self, needle: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            match self.lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the backend printed no {needle:?} within {DEADLINE:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let stderr = self.stderr.take().map(|t| t.join().unwrap()).unwrap_or_default();
                    panic!("the backend ended before printing {needle:?}:\n{stderr}");
                }
            }
        }
    }

    /// Sends one ticket line as a client would, and returns the answer line.
    fn send_ticket(&self, ticket: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.write_all(format!("{ticket}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        answer
    }

    /// SIGTERM, then the exit: 0, with "stopped" printed and nothing from a sanitizer.
    fn stop_and_check(mut self, lang: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-s", "TERM", &pid]).status().unwrap().success());
        self.wait_for_line("stopped");
        let end = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < end, "{lang}-backend did not exit within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = self.stderr.take().unwrap().join().unwrap();
        assert_eq!(status.code(), Some(0), "{lang}-backend:\n{stderr}");
        assert_clean(&format!("{lang}-backend"), &stderr);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_clean(program: &str, stderr: &str) {
    for report in REPORTS {
        assert!(!stderr.contains(report), "{program} has a sanitizer report:\n{stderr}");
    }
}

/// Runs `command` to its end, killing it and failing after the deadline (a compile
/// takes a few seconds; the whole build is given six deadlines).
fn run_to_end(command: &mut Command) -> Output {
    let mut child =
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("the command starts");
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = collect(Box::new(child.stdout.take().unwrap()));
    let stderr = collect(Box::new(child.stderr.take().unwrap()));
    let end = Instant::now() + DEADLINE * 6;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {:?}", DEADLINE * 6);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}
