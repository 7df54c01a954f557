//! Settings at the edges of their types: `serve` and `config show` refuse them with
//! an error naming the setting, and never panic.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary with `args` to its end (killed after a deadline); exit code and stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadwise"))
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("`loadwise {}` still running: a value out of bounds was accepted", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn huge_values_at_start_and_in_config_show_are_errors_never_panics() {
    let cases: [(&str, &str); 8] = [
        ("--max-backends", "9223372036854775808"),
        ("--max-client-connections", "18446744073709551615"),
        ("--max-pending-connections", "2305843009213693952"),
        ("--admin-max-connections", "100001"),
        ("--ticket-lifetime", "2days"),
        ("--admin-request-timeout", "100000000000000s"),
        ("--ttl", "18446744073709551615s"),
        ("--max-frame-len", "65536"),
    ];
    for (flag, value) in cases {
        for command in
            [&["config", "show"][..], &["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off"]]
        {
            let args: Vec<&str> = command.iter().copied().chain([flag, value]).collect();
            let (code, stderr) = run(&args);
            assert!(!stderr.contains("panicked"), "`{}` panicked: {stderr}", args.join(" "));
            assert!(code.is_some_and(|code| code != 0), "`{}` exited {code:?}: {stderr}", args.join(" "));
            let name = flag.trim_start_matches("--");
            assert!(stderr.contains(name), "`{}` does not name {name}: {stderr}", args.join(" "));
        }
    }
}
