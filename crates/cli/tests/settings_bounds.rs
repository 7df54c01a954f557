//! No value of any setting, from a flag, a variable or the file, can panic the
//! process: at start (`config show` loads exactly as `serve` does), in `config show`'s
//! output read back as a file, or at a reload of that file by a running `serve`. Each
//! value gives either the settings or an error naming the setting. Every setting is
//! driven through its type's range and beyond (u64::MAX, i64::MAX + 1, negatives, huge
//! durations, empty and odd text), by a sweep of edge values and by proptest.

mod process;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use loadwise_cli::settings::{CATALOG, SettingInfo};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use process::{Proc, Spawn, run_to_end};

/// How a value reaches the process.
#[derive(Debug, Clone, Copy)]
enum Via {
    Flag,
    Env,
    File,
}

/// What kind of text a setting takes, from its definition's value name.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Integer,
    Float,
    Duration,
    Text,
}

fn kind(info: &SettingInfo) -> Kind {
    match info.value_name.trim_start_matches("NAME=") {
        "N" | "BYTES" => Kind::Integer,
        "PERCENT" | "FACTOR" | "POINTS" => Kind::Float,
        "DURATION" => Kind::Duration,
        _ => Kind::Text,
    }
}

/// Values at and beyond the edges of each kind.
fn edges(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Integer => &[
            "",
            "-1",
            "0",
            "1",
            "65536",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "1.5",
        ],
        Kind::Float => {
            &["", "-1", "0", "1e-300", "100.000001", "1e400", "NaN", "inf", "-inf", "9223372036854775808"]
        }
        Kind::Duration => &[
            "",
            "-1s",
            "0s",
            "1ns",
            "999us",
            "1s 1ns",
            "18446744073709551615s",
            "18446744073709551615ns",
            "600000000000d",
            "3 parsecs",
        ],
        Kind::Text => {
            &["", " ", "off", "none", "=", "a=b", "127.0.0.1:0", "[::1]:65535", "max(", "\u{00e9}\u{1f600}"]
        }
    }
}

/// Any text of `kind`: its whole range, and beyond.
fn texts(kind: Kind) -> BoxedStrategy<String> {
    let beyond = prop_oneof![Just(String::new()), "[^\\x00]{0,24}"];
    match kind {
        Kind::Integer => prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            (0u64..20_000_000).prop_map(|n| n.to_string()),
            any::<u128>().prop_map(|n| n.to_string()),
            beyond,
        ]
        .boxed(),
        Kind::Float => prop_oneof![
            any::<f64>().prop_map(|x| format!("{x:?}")),
            (0.0..200.0f64).prop_map(|x| x.to_string()),
            beyond,
        ]
        .boxed(),
        Kind::Duration => {
            let unit =
                prop_oneof![Just("ns"), Just("ms"), Just("s"), Just("m"), Just("h"), Just("d"), Just("y")];
            prop_oneof![
                (any::<u64>(), unit.clone()).prop_map(|(n, unit)| format!("{n}{unit}")),
                (0u64..200_000, unit).prop_map(|(n, unit)| format!("{n}{unit}")),
                any::<i64>().prop_map(|n| format!("{n}s")),
                beyond,
            ]
            .boxed()
        }
        Kind::Text => prop_oneof![
            beyond,
            "[a-z0-9.:/=,()*+ _-]{0,24}",
            Just("127.0.0.1:8443".to_owned()),
            Just("10.0.0.0/8,::1/128".to_owned()),
        ]
        .boxed(),
    }
}

/// A scratch file, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(text: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name =
            format!("loadwise-bounds-{}-{}.toml", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).unwrap();
        Scratch(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `info` set to `text` as a line of the file: numbers bare (as TOML writes them, when
/// they are TOML numbers), anything else as a string; a per-service `NAME=VALUE` in
/// the service's table.
fn file_text(info: &SettingInfo, text: &str) -> String {
    let value = |text: &str| {
        let bare = matches!(kind(info), Kind::Integer | Kind::Float) && text.parse::<toml::Value>().is_ok();
        if bare { text.to_owned() } else { toml::Value::String(text.to_owned()).to_string() }
    };
    let (table, key) = info.table_key();
    match (info.per_service, table) {
        (Some(_), _) => {
            let (name, text) = text.split_once('=').unwrap_or(("search", text));
            format!("[services.{}]\n{key} = {}\n", toml::Value::String(name.to_owned()), value(text))
        }
        (None, Some(table)) => format!("[{table}]\n{key} = {}\n", value(text)),
        (None, None) => format!("{key} = {}\n", value(text)),
    }
}

/// A running `serve` whose configuration file each accepted case is reloaded from.
struct Reloading {
    serve: Proc,
    file: Scratch,
}

impl Reloading {
    fn start() -> Reloading {
        let file = Scratch::new("");
        let args = ["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off", "--config", file.path()];
        let serve = Spawn::new(&args).env("RUST_LOG", "info").start();
        serve.wait_for_line("listening");
        Reloading { serve, file }
    }

    /// Writes `text` as the file, sends SIGHUP, and waits for the reload's outcome;
    /// fails on a panic.
    fn reload(&self, text: &str) -> String {
        std::fs::write(&self.file.0, text).unwrap();
        self.serve.signal("HUP");
        self.serve.wait_for("the reload's outcome", |line| {
            assert!(!line.contains("panicked"), "serve panicked at a reload:\n{line}\nof:\n{text}");
            (line.contains("configuration reloaded") || line.contains("reload refused"))
                .then(|| line.to_owned())
        })
    }

    fn stop(mut self) {
        self.serve.signal("TERM");
        assert_eq!(self.serve.wait_exit(), Some(0), "serve did not stop cleanly after the reloads");
    }
}

/// Loads `info` = `text` given `via`, as `serve` would at start; asserts the settings
/// or an error naming the setting, never a panic. Accepted settings are read back from
/// `config show`'s output as a file, and reloaded by `reloading`.
fn check(info: &SettingInfo, text: &str, via: Via, reloading: &Reloading) {
    let scratch;
    let flag = format!("--{}={text}", info.long);
    let (args, env): (Vec<&str>, Vec<(&str, &str)>) = match via {
        Via::Flag => (vec!["config", "show", &flag], vec![]),
        Via::Env => (vec!["config", "show"], vec![(info.var, text)]),
        Via::File => {
            scratch = Scratch::new(&file_text(info, text));
            (vec!["config", "show", "--config", scratch.path()], vec![])
        }
    };
    let out = run_to_end(&args, &env);
    let case = format!("{} = {text:?} by {via:?}", info.key);
    assert!(!out.stderr.contains("panicked"), "{case} panicked:\n{}", out.stderr);
    match out.code {
        Some(0) => {}
        Some(1 | 2) => {
            let (_, key) = info.table_key();
            let named = [info.long, info.var, key].iter().any(|name| out.stderr.contains(name));
            // A per-service setting's table may be refused for its name alone, which the
            // error names (the file's `[services."..."]` line) before any setting in it.
            let named = named || (info.per_service.is_some() && out.stderr.contains("is not a service name"));
            assert!(named, "{case}: the error does not name the setting:\n{}", out.stderr);
            return;
        }
        code => panic!("{case}: exit {code:?}:\n{}", out.stderr),
    }
    // Accepted: `config show` reads its own output back the same, and so does a reload.
    let shown = Scratch::new(&out.stdout);
    let again = run_to_end(&["config", "show", "--config", shown.path()], &[]);
    assert_eq!(again.code, Some(0), "{case}: config show's output does not load:\n{}", again.stderr);
    if !info.secret {
        assert_eq!(again.stdout, out.stdout, "{case}: config show's output reads back otherwise");
    }
    let outcome = reloading.reload(&out.stdout);
    assert!(outcome.contains("configuration reloaded"), "{case}: the reload was refused: {outcome}");
}

#[test]
fn every_setting_at_and_beyond_its_edges_loads_or_is_named() {
    let reloading = Reloading::start();
    for info in CATALOG {
        for text in edges(kind(info)) {
            let text = if info.per_service.is_some() { format!("search={text}") } else { (*text).to_owned() };
            for via in [Via::Flag, Via::Env, Via::File] {
                check(info, &text, via, &reloading);
            }
        }
    }
    reloading.stop();
}

/// Proptest over every setting and any text of its kind, given `via`.
fn any_value_of_any_setting(via: Via) {
    let reloading = Reloading::start();
    let cases = (0..CATALOG.len()).prop_flat_map(|index| {
        let info = &CATALOG[index];
        let text = texts(kind(info));
        let service = prop_oneof![Just("search".to_owned()), "[a-z.]{1,8}", "[^\\x00=]{0,6}"];
        (Just(index), text, service)
    });
    let mut runner = TestRunner::new(Config { cases: 48, failure_persistence: None, ..Config::default() });
    runner
        .run(&cases, |(index, text, service)| {
            let info = &CATALOG[index];
            let text = if info.per_service.is_some() { format!("{service}={text}") } else { text };
            check(info, &text, via, &reloading);
            Ok(())
        })
        .unwrap();
    reloading.stop();
}

#[test]
fn any_value_of_any_setting_by_flag_loads_or_is_named() {
    any_value_of_any_setting(Via::Flag);
}

#[test]
fn any_value_of_any_setting_by_variable_loads_or_is_named() {
    any_value_of_any_setting(Via::Env);
}

#[test]
fn any_value_of_any_setting_in_the_file_loads_or_is_named() {
    any_value_of_any_setting(Via::File);
}

/// A file setting every bounded setting to one of its bounds (`highest` or not), but
/// for the connection budgets, whose highest values no open-file limit holds.
fn at_bounds(highest: bool) -> String {
    let budgets = ["max_backends", "max_client_connections", "max_pending_connections"];
    let mut top = String::from("listen = \"127.0.0.1:0\"\n");
    for info in CATALOG.iter().filter(|info| info.per_service.is_none() && !info.key.contains('.')) {
        let Some((min, max)) = (info.bounds)() else { continue };
        if highest && budgets.contains(&info.key) {
            continue;
        }
        top.push_str(&file_text(info, if highest { &max } else { &min }));
    }
    top + "[admin]\nlisten = \"off\"\n"
}

#[test]
fn every_setting_at_its_lowest_and_highest_bound_starts_and_reloads() {
    for highest in [false, true] {
        let file = Scratch::new(&at_bounds(highest));
        let serve = Spawn::new(&["serve", "--config", file.path()]).env("RUST_LOG", "info").start();
        serve.wait_for_line("listening");
        let reloading = Reloading { serve, file };
        let outcome = reloading.reload(&at_bounds(!highest));
        assert!(outcome.contains("configuration reloaded"), "{outcome}");
        let outcome = reloading.reload(&at_bounds(highest));
        assert!(outcome.contains("configuration reloaded"), "{outcome}");
        reloading.stop();
    }
}
